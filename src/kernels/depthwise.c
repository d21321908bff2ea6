/* Depthwise convolution (groups == in_channels > 1, out = in * multiplier).
 *
 * Output channel oc reads input channel oc / M (M = O / C, the channel multiplier)
 * through its own KH x KW filter w[oc, 0]. Every (image, channel) plane is copied
 * once into a zero-padded scratch plane whose rows are long enough that the inner
 * loops run over whole 16-float vectors along the width with no bounds checks;
 * lanes past the output width are computed and dropped. The source rows land on
 * aligned columns and the zeros around them are written once per call and thread
 * (padded_*), so a plane costs one aligned copy of its rows. The 7x7 filters of
 * the SENSORIUM cores on planes up to 64 wide (with AVX-512) read the source planes
 * directly instead, the edge vectors under masks (k7_*): the same products.
 *
 *   forward: OpenMP over (n, c) planes; per block 1-2 output rows x 1-4 vectors
 *            of accumulators in registers, loops over ky, kx (AVX-512, height
 *            stride 1: up to 6 rows, each input vector feeding every row that
 *            reads it; 7x7: k7_block; 7x7 on planes 49-56 wide and 28, 42 or 56
 *            high: plane_fwd_k7_rounds, no lanes past the width).
 *   dx:      stride 1: the forward kernel with the flipped filter run over the
 *            zero-padded dy (a full correlation); otherwise a scalar scatter.
 *            OpenMP over (n, c) planes (with dw and one input channel per output
 *            channel: inside the dw loop). npred_conv2d_backward_set writes dx.
 *   dw:      OpenMP over blocks of 8 output channels, batch inside (so the result
 *            does not depend on the thread count), the block's channels inside the
 *            images; per (ky, row) one dy vector feeds up to 8 kx accumulators
 *            (AVX-512: one input vector feeds 3 filter rows' taps);
 *            each plane's lanes are added lane-wise in double, summed at the end.
 * Vectors are GCC vector extensions (16 floats); FMA intrinsics where the target
 * has them, a plain multiply-add otherwise. */
#include "kernels/conv2d.h"
#include "base/threads.h"
#include "kernels/conv2d_internal.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <immintrin.h>

/* The 64-byte vector helpers below are static inline and never cross an ABI boundary,
 * so GCC's note that their ABI differs without AVX-512 (make PORTABLE=1) does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define VL 16
/* dw: output channels per block (one block = one task; the images run inside) */
#define DW_OB 8
/* dw on AVX-512: filter rows per group of the row kernel (plane_dw_rows) */
#define DW_G 3
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

static inline vf vld(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vst(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* every lane = s; (vf){0} + s would cost a scalar add before the broadcast */
static inline vf vsplat(float s)
{
#if defined(__AVX512F__)
    return (vf)_mm512_set1_ps(s);
#else
    vf v;
    for (int i = 0; i < VL; i++) v[i] = s;
    return v;
#endif
}

/* a*b + c, fused where the target has FMA */
static inline vf vfma(vf a, vf b, vf c)
{
#if defined(__AVX512F__)
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
    union { vf v; __m256 h[2]; } ua = {a}, ub = {b}, uc = {c}, r;
    r.h[0] = _mm256_fmadd_ps(ua.h[0], ub.h[0], uc.h[0]);
    r.h[1] = _mm256_fmadd_ps(ua.h[1], ub.h[1], uc.h[1]);
    return r.v;
#else
    return a * b + c;
#endif
}

static inline size_t ceil_vl(int n) { return ((size_t)n + VL - 1) / VL * VL; }

/* A zero-padded scratch plane: the source plane (h, w) at row top and column sh,
 * zeros elsewhere; the kernels read it through padded_ptr, whose column 0 is
 * source column -left. With left >= 0 the source starts at an aligned column
 * (sh = left rounded up to whole vectors), so its rows are copied with aligned
 * vector stores; then (fast) the zeros are written once per call and thread
 * (padded_zero) and each plane only copies its rows (padded_fill). Otherwise
 * (cropping: top or left < 0) every plane is padded row by row (pad_plane). */
typedef struct {
    int rows, stride, top, left, sh, h, w, fast;
} padded;

/* cols: the columns the kernels read from padded_ptr */
static void padded_init(padded *q, int rows, int cols, int top, int left, int h, int w)
{
    q->rows = rows;
    q->top = top;
    q->left = left;
    q->h = h;
    q->w = w;
    q->sh = left >= 0 ? (int)ceil_vl(left) : left;
    q->stride = (int)ceil_vl(q->sh - left + cols);
    q->fast = top >= 0 && left >= 0 && top + h <= rows && q->sh + (int)ceil_vl(w) <= q->stride;
}

static size_t padded_floats(const padded *q) { return (size_t)q->rows * q->stride; }

static inline const float *padded_ptr(const padded *q, const float *buf) { return buf + (q->sh - q->left); }

/* Scratch geometry of one thread. */
typedef struct {
    int oh, ow;
    padded qx; /* the input plane (forward and dw) */
    padded qd; /* dy, padded for the stride-1 dx (a full correlation) */
    padded qc; /* dy for dw: DW_G - 1 zero rows above and below (the row kernel), width whole vectors */
    padded qc0; /* the same without the zero rows (the other dw kernels) */
    size_t off_xp, off_dp, off_dc, off_wf, off_acc, bytes;
} dw_geom;

static void geometry(const npred_conv2d_params *p, int oh, int ow, dw_geom *g)
{
    g->oh = oh;
    g->ow = ow;
    padded_init(&g->qx, (oh - 1) * p->stride_h + (p->kh - 1) * p->dil_h + 1,
                (int)ceil_vl(ow) * p->stride_w + (p->kw - 1) * p->dil_w, p->pad_h, p->pad_w, p->h, p->w);
    padded_init(&g->qd, p->h + (p->kh - 1) * p->dil_h, (int)ceil_vl(p->w) + (p->kw - 1) * p->dil_w,
                (p->kh - 1) * p->dil_h - p->pad_h, (p->kw - 1) * p->dil_w - p->pad_w, oh, ow);
    padded_init(&g->qc, oh + 2 * (DW_G - 1), (int)ceil_vl(ow), DW_G - 1, 0, oh, ow);
    padded_init(&g->qc0, oh, (int)ceil_vl(ow), 0, 0, oh, ow);
    size_t o = 0;
    g->off_xp = o; o += npred_conv2d_round_bytes(padded_floats(&g->qx));
    g->off_dp = o; o += npred_conv2d_round_bytes(padded_floats(&g->qd));
    g->off_dc = o; o += npred_conv2d_round_bytes(padded_floats(&g->qc));
    g->off_wf = o; o += npred_conv2d_round_bytes((size_t)p->kh * p->kw);
    g->off_acc = o; o += npred_conv2d_round_bytes((size_t)DW_OB * p->kh * p->kw * 2 * VL); /* VL doubles per tap and channel */
    g->bytes = o;
}

size_t npred_conv2d_depthwise_thread_bytes(const npred_conv2d_params *p)
{
    int oh, ow;
    if (npred_conv2d_output_size(p, &oh, &ow) != NPRED_OK) return 0;
    dw_geom g;
    geometry(p, oh, ow, &g);
    return g.bytes;
}

#define AVX512 __attribute__((target("avx512f")))

static inline AVX512 __mmask16 lanes_mask(int n) { return n >= VL ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* pad_plane on AVX-512: each row as masked vector stores (the rows are tens of floats,
 * where memset/memcpy calls cost more than the copy) */
static AVX512 void pad_plane_avx512(float *dst, int rows, int stride, const float *src, int h, int w, int top,
                                    int left)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < rows; r++) {
        float *d = dst + (size_t)r * stride;
        int sy = r - top, lo = 0, hi = 0;
        if (sy >= 0 && sy < h) {
            lo = left > 0 ? (left < stride ? left : stride) : 0;
            hi = left + w < stride ? left + w : stride;
            if (hi < lo) hi = lo;
        }
        for (int c = 0; c < lo; c += VL) _mm512_mask_storeu_ps(d + c, lanes_mask(lo - c), zero);
        for (int c = lo; c < hi; c += VL) { /* column c of the row is source column c - left >= 0 */
            __mmask16 m = lanes_mask(hi - c);
            _mm512_mask_storeu_ps(d + c, m, _mm512_maskz_loadu_ps(m, src + (size_t)sy * w + (c - left)));
        }
        for (int c = hi; c < stride; c += VL) _mm512_mask_storeu_ps(d + c, lanes_mask(stride - c), zero);
    }
}

/* dst (rows, stride) <- src (h, w) shifted down by top and right by left, zeros
 * elsewhere (top/left may be negative: then src is cropped). */
static void pad_plane(float *dst, int rows, int stride, const float *src, int h, int w, int top,
                      int left)
{
    if (npred_gemm_avx512_active()) {
        pad_plane_avx512(dst, rows, stride, src, h, w, top, left);
        return;
    }
    for (int r = 0; r < rows; r++) {
        float *d = dst + (size_t)r * stride;
        int sy = r - top;
        if (sy < 0 || sy >= h) {
            memset(d, 0, (size_t)stride * sizeof *d);
            continue;
        }
        const float *s = src + (size_t)sy * w;
        int lo = left > 0 ? (left < stride ? left : stride) : 0; /* first column with a source */
        int hi = left + w < stride ? left + w : stride; /* one past the last */
        if (hi < lo) hi = lo;
        memset(d, 0, (size_t)lo * sizeof *d);
        if (hi > lo) memcpy(d + lo, s + (lo - left), (size_t)(hi - lo) * sizeof *d);
        memset(d + hi, 0, (size_t)(stride - hi) * sizeof *d);
    }
}

/* the rows of the source into the data region of a fast padded plane (aligned stores;
 * the last vector of a row carries zeros past the source width) */
static AVX512 void padded_copy_avx512(const padded *q, float *buf, const float *src)
{
    const int full = q->w / VL * VL;
    const __mmask16 tail = lanes_mask(q->w - full);
    for (int r = 0; r < q->h; r++) {
        float *d = buf + (size_t)(q->top + r) * q->stride + q->sh;
        const float *s = src + (size_t)r * q->w;
        for (int c = 0; c < full; c += VL) _mm512_store_ps(d + c, _mm512_loadu_ps(s + c));
        if (full < q->w) _mm512_store_ps(d + full, _mm512_maskz_loadu_ps(tail, s + full));
    }
}

/* the zeros of a fast padded plane, once per call and thread */
static void padded_zero(const padded *q, float *buf)
{
    if (q->fast) memset(buf, 0, padded_floats(q) * sizeof *buf);
}

/* buf <- the padded plane of src (after padded_zero) */
static void padded_fill(const padded *q, float *buf, const float *src)
{
    if (!q->fast) {
        pad_plane(buf, q->rows, q->stride, src, q->h, q->w, q->top, q->sh);
    } else if (npred_gemm_avx512_active()) {
        padded_copy_avx512(q, buf, src);
    } else {
        for (int r = 0; r < q->h; r++)
            memcpy(buf + (size_t)(q->top + r) * q->stride + q->sh, src + (size_t)r * q->w, (size_t)q->w * sizeof *buf);
    }
}

/* One block: nr (1-2) output rows x nv (1-4) vectors starting at y, input rows
 * starting at xp (row step sh*xs between the two output rows); width-1 stride.
 * Writes min(width, nv*VL) columns; adds to y when accum. */
static inline __attribute__((always_inline)) void
fwd_block(float *y, int ys, int nr, int nv, int width, const float *xp, int xs, int sh,
          const float *w, int kh, int kw, int dh, int dw, float bias, int accum)
{
    vf a[2][4];
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nv; v++) a[r][v] = vsplat(bias);
    for (int ky = 0; ky < kh; ky++) {
        const float *x0 = xp + (size_t)ky * dh * xs;
        const float *x1 = x0 + (size_t)sh * xs;
        for (int kx = 0; kx < kw; kx++) {
            vf wv = vsplat(w[ky * kw + kx]);
            const float *p0 = x0 + kx * dw, *p1 = x1 + kx * dw;
            for (int v = 0; v < nv; v++) a[0][v] = vfma(wv, vld(p0 + v * VL), a[0][v]);
            if (nr == 2)
                for (int v = 0; v < nv; v++) a[1][v] = vfma(wv, vld(p1 + v * VL), a[1][v]);
        }
    }
    for (int r = 0; r < nr; r++) {
        float *yr = y + (size_t)r * ys;
        for (int v = 0; v < nv; v++) {
            int n = width - v * VL;
            if (n >= VL) {
                vf out = a[r][v];
                if (accum) out += vld(yr + v * VL);
                vst(yr + v * VL, out);
            } else {
                float tmp[VL];
                vst(tmp, a[r][v]);
                for (int i = 0; i < n; i++) yr[v * VL + i] = accum ? yr[v * VL + i] + tmp[i] : tmp[i];
            }
        }
    }
}

#define FWD_CASE(NR, NV) \
    case (NR) * 8 + (NV): fwd_block(y, ys, NR, NV, width, xp, xs, sh, w, kh, kw, dh, dw, bias, accum); break;

static void fwd_block_any(float *y, int ys, int nr, int nv, int width, const float *xp, int xs,
                          int sh, const float *w, int kh, int kw, int dh, int dw, float bias,
                          int accum)
{
    switch (nr * 8 + nv) {
        FWD_CASE(1, 1) FWD_CASE(1, 2) FWD_CASE(1, 3) FWD_CASE(1, 4)
        FWD_CASE(2, 1) FWD_CASE(2, 2) FWD_CASE(2, 3) FWD_CASE(2, 4)
    default: break;
    }
}

/* ---------------------------------------------------------------- AVX-512 row blocks */

/* Height stride and dilation 1 (the 7x7 convs of the models, and every dx):
 * blocks of up to DW_R output rows x 4 vectors (24 zmm accumulators). Each input
 * row segment is loaded once per kx and feeds every output row of the block that
 * reads it (fwd_block loads it once per output row), so a block needs about a
 * third of the loads per FMA. The sum of each output runs over ky, then kx, in
 * order, as in fwd_block: the results are bit-identical. */
#define DW_R 6

static inline __attribute__((always_inline)) AVX512 void
rows_block(float *y, int ys, const int R, const int NV, int width, const float *xp, int xs, const float *w,
           int kh, int kw, int dw, float bias, int accum)
{
    __m512 a[DW_R][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) a[r][v] = _mm512_set1_ps(bias);
    for (int iy = 0; iy < R + kh - 1; iy++) {
        const float *xr = xp + (size_t)iy * xs;
        for (int kx = 0; kx < kw; kx++) {
            __m512 xv[4];
            for (int v = 0; v < NV; v++) xv[v] = _mm512_loadu_ps(xr + kx * dw + v * VL);
            for (int r = 0; r < R; r++) {
                const int ky = iy - r;
                if (ky < 0 || ky >= kh) continue;
                __m512 wv = _mm512_set1_ps(w[ky * kw + kx]);
                for (int v = 0; v < NV; v++) a[r][v] = _mm512_fmadd_ps(wv, xv[v], a[r][v]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        float *yr = y + (size_t)r * ys;
        for (int v = 0; v < NV; v++) {
            int n = width - v * VL;
            __mmask16 m = n >= VL ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
            __m512 out = a[r][v];
            if (accum) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, yr + v * VL));
            _mm512_mask_storeu_ps(yr + v * VL, m, out);
        }
    }
}

#define ROWS_CASE(R, NV) \
    case (R) * 8 + (NV): rows_block(y, ys, R, NV, width, xp, xs, w, kh, kw, dw, bias, accum); break;

static AVX512 void rows_block_any(float *y, int ys, int r, int nv, int width, const float *xp, int xs,
                                  const float *w, int kh, int kw, int dw, float bias, int accum)
{
    switch (r * 8 + nv) {
        ROWS_CASE(1, 1) ROWS_CASE(2, 1) ROWS_CASE(3, 1) ROWS_CASE(4, 1) ROWS_CASE(5, 1) ROWS_CASE(6, 1)
        ROWS_CASE(1, 2) ROWS_CASE(2, 2) ROWS_CASE(3, 2) ROWS_CASE(4, 2) ROWS_CASE(5, 2) ROWS_CASE(6, 2)
        ROWS_CASE(1, 3) ROWS_CASE(2, 3) ROWS_CASE(3, 3) ROWS_CASE(4, 3) ROWS_CASE(5, 3) ROWS_CASE(6, 3)
        ROWS_CASE(1, 4) ROWS_CASE(2, 4) ROWS_CASE(3, 4) ROWS_CASE(4, 4) ROWS_CASE(5, 4) ROWS_CASE(6, 4)
    default: break;
    }
}

/* ------------------------------------------------ AVX-512 row blocks of the 7x7 filters */

/* 7x7 filters (the depth-separable layers of the SENSORIUM cores) on 4-vector column
 * blocks: rows_block with the filter size known, the 24 accumulators as named
 * variables and each input vector loaded once into a register (as a memory operand
 * of every FMA that uses it, the compiler made each FMA a load of its own: loads
 * split across cache lines bound the old kernel). Input row D of the block feeds
 * its output rows r with filter row D - r, the kx loop inside; the rows of a step
 * are fixed at compile time (case D of a switch entered at the first input row and
 * falling through to the next), so no row tests are left in the loop. Every output
 * still sums over ky, then kx, in order: the bits of rows_block. Input rows that are
 * zero padding are skipped (dlo..dhi): their products are zero, and adding a zero
 * leaves a sum unchanged (the caller does not skip for a bias of -0, which a zero
 * could turn into +0). */
#define K7_ROW(D, r)                                                                                        \
    if ((r) < R && (D) - (r) >= 0 && (D) - (r) < 7) {                                                       \
        const __m512 wv = _mm512_set1_ps(wk[((D) - (r)) * 7]);                                              \
        a##r##0 = _mm512_fmadd_ps(wv, x0, a##r##0);                                                         \
        a##r##1 = _mm512_fmadd_ps(wv, x1, a##r##1);                                                         \
        a##r##2 = _mm512_fmadd_ps(wv, x2, a##r##2);                                                         \
        a##r##3 = _mm512_fmadd_ps(wv, x3, a##r##3);                                                         \
    }
#define K7_STEP(D)                                                                                          \
    case D:                                                                                                 \
        if ((D) >= R + 6 || (D) > dhi) break;                                                               \
        {                                                                                                   \
            const float *xr = xp + (size_t)(D) * xs;                                                        \
            _Pragma("GCC unroll 1") for (int kx = 0; kx < 7; kx++) {                                        \
                const float *wk = w + kx;                                                                   \
                __m512 x0 = DIRECT ? _mm512_maskz_loadu_ps(mk[kx], xr + kx) : _mm512_loadu_ps(xr + kx);      \
                __m512 x1 = _mm512_loadu_ps(xr + kx + VL), x2 = _mm512_loadu_ps(xr + kx + 2 * VL);            \
                __m512 x3 = DIRECT ? _mm512_maskz_loadu_ps(mk[7 + kx], xr + kx + 3 * VL)                      \
                                   : _mm512_loadu_ps(xr + kx + 3 * VL);                                     \
                __asm__("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3));                                       \
                K7_ROW(D, 0) K7_ROW(D, 1) K7_ROW(D, 2) K7_ROW(D, 3) K7_ROW(D, 4) K7_ROW(D, 5)               \
            }                                                                                               \
        }                                                                                                   \
        __attribute__((fallthrough));
#define K7_STORE(r)                                                                                         \
    if ((r) < R) {                                                                                          \
        float *yr = y + (size_t)(r) * ys;                                                                   \
        k7_store(yr, a##r##0, 0xFFFF, accum);                                                               \
        k7_store(yr + VL, a##r##1, 0xFFFF, accum);                                                          \
        k7_store(yr + 2 * VL, a##r##2, 0xFFFF, accum);                                                      \
        k7_store(yr + 3 * VL, a##r##3, tail, accum);                                                        \
    }

static inline __attribute__((always_inline)) AVX512 void k7_store(float *p, __m512 v, __mmask16 m, int accum)
{
    if (accum) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, p));
    _mm512_mask_storeu_ps(p, m, v);
}

/* R (1-6) output rows x 4 vectors (the last one's lanes in tail); input rows dlo..dhi.
 * DIRECT: xp is the source plane itself (no padded copy; rows outside dlo..dhi must
 * not be read), the first and last vectors loaded under the masks mk[kx] and
 * mk[7 + kx] of the columns inside the plane (zeros elsewhere, as in the padded plane) */
static inline __attribute__((always_inline)) AVX512 void
k7_block(float *y, int ys, const int R, const int DIRECT, const __mmask16 *mk, __mmask16 tail, const float *xp,
         int xs, const float *w, float bias, int accum, int dlo, int dhi)
{
    const __m512 b = _mm512_set1_ps(bias);
    __m512 a00 = b, a01 = b, a02 = b, a03 = b, a10 = b, a11 = b, a12 = b, a13 = b;
    __m512 a20 = b, a21 = b, a22 = b, a23 = b, a30 = b, a31 = b, a32 = b, a33 = b;
    __m512 a40 = b, a41 = b, a42 = b, a43 = b, a50 = b, a51 = b, a52 = b, a53 = b;
    switch (dlo) {
        K7_STEP(0) K7_STEP(1) K7_STEP(2) K7_STEP(3) K7_STEP(4) K7_STEP(5)
        K7_STEP(6) K7_STEP(7) K7_STEP(8) K7_STEP(9) K7_STEP(10) K7_STEP(11)
    default: break;
    }
    K7_STORE(0) K7_STORE(1) K7_STORE(2) K7_STORE(3) K7_STORE(4) K7_STORE(5)
}

#define K7_CASE(R, D) \
    case (R) * 2 + (D): k7_block(y, ys, R, D, mk, tail, xp, xs, w, bias, accum, dlo, dhi); break;

static AVX512 void k7_block_any(float *y, int ys, int r, const __mmask16 *mk, __mmask16 tail, const float *xp,
                                int xs, const float *w, float bias, int accum, int dlo, int dhi)
{
    switch (r * 2 + (mk != NULL)) {
        K7_CASE(1, 0) K7_CASE(2, 0) K7_CASE(3, 0) K7_CASE(4, 0) K7_CASE(5, 0) K7_CASE(6, 0)
        K7_CASE(1, 1) K7_CASE(2, 1) K7_CASE(3, 1) K7_CASE(4, 1) K7_CASE(5, 1) K7_CASE(6, 1)
    default: break;
    }
}

/* The source plane of a 7x7 filter read without a padded copy: 1 if the output is one
 * 4-vector column block (ow) whose two middle vectors never leave a source row (w, pw) */
static int k7_direct_geometry(int ow, int w, int ph, int pw)
{
    return ow > 3 * VL && ow <= 4 * VL && ph >= 0 && pw >= 0 && pw <= VL && w >= 3 * VL + 6 - pw;
}

/* the lanes of 16 columns from c0 (the source column of lane 0) inside a row of w */
static __mmask16 k7_window(int c0, int w)
{
    const int lo = c0 < 0 ? -c0 : 0, hi = w - c0 < VL ? w - c0 : VL;
    return hi > lo ? (__mmask16)(((hi >= VL ? 0xFFFFu : (1u << hi) - 1)) & ~((1u << lo) - 1)) : 0;
}

/* mk[kx] and mk[7 + kx]: the lanes of the first and last vector of a row, at column
 * offset kx, that fall inside the source row (source column 16 v + kx - pw) */
static void k7_masks(__mmask16 *mk, int w, int pw)
{
    for (int kx = 0; kx < 7; kx++)
        for (int v = 0; v < 2; v++) mk[7 * v + kx] = k7_window((v ? 3 * VL : 0) + kx - pw, w);
}

/* ---------------------- the direct 7x7 forward of rows 49-56 wide, row by row (k7v_*) */

/* A row of 49-56 outputs is 3.5 vectors: k7_block computes 4, an eighth of its products
 * thrown away, and its blocks of 6 rows start and end with input rows that feed one or
 * two of them (then its FMAs wait on each other). Here the input rows i are walked once,
 * top to bottom, each feeding the 7 output rows that read it (ky = i - r): the
 * accumulators of output row r are set r % 7, started at input row r and stored after
 * input row r + 6; the loop runs in rounds of 7 input rows, so the sets are fixed
 * registers. A set holds the first 48 columns of its row (3 vectors) and a fourth vector
 * for the last 1-8 columns of two rows at once, t and t + hh (hh = oh / 2): its low 8
 * lanes are row t's, its high 8 lanes row t + hh's, both of filter row ky, so the weights
 * stay broadcasts. The rows t of the tails run 7 input rows behind the main rows (tail
 * input row j = i - 7, the same set and weight), inside the rounds where every set has a
 * main row; with oh a multiple of 14, every round knows at compile time which sets have
 * rows (K7V_ROUND), so no products are wasted. The tail vectors of the input rows are
 * gathered first (k7v_tails). Every output still sums over ky, then kx, in order, from the
 * same products (the same masked zeros at the columns outside the source row), and input
 * rows of the padding are skipped (where one half of a tail vector is padding, by a
 * masked FMA that leaves the other half's sums as they are): the results are
 * bit-identical to k7_block's. */
#define K7V_MAXH 56 /* the most output rows (the tail vectors on the stack) */

/* a += w * (the vector at p), the load a memory operand of the FMA (7 FMAs load it: one
 * register less, which 7 x 4 accumulators need); k7v_fma_m: only the lanes in m */
static inline __attribute__((always_inline)) AVX512 __m512 k7v_fma(__m512 a, __m512 w, const float *p)
{
    __asm__("vfmadd231ps %[m], %[w], %[a]" : [a] "+v"(a) : [w] "v"(w), [m] "m"(*(const __m512 *)p));
    return a;
}

static inline __attribute__((always_inline)) AVX512 __m512 k7v_fma_m(__m512 a, __m512 w, const float *p, __mmask16 m)
{
    __asm__("vfmadd231ps %[m], %[w], %[a]%{%[k]%}"
            : [a] "+v"(a)
            : [w] "v"(w), [m] "m"(*(const __m512 *)p), [k] "Yk"(m));
    return a;
}

/* round variants V: 0 the first (main rows ramp up: set J has a row when ky <= S), 1 the
 * tails ramp up, 2 all, 3 the tails ramp down (ky > S), 4 main rows only, 5 the main rows
 * ramp down (ky > S) */
#define K7V_KY(J, S) ((((S) - (J)) + 7) % 7)
#define K7V_MAIN_ON(J, S, V) ((V) == 0 ? K7V_KY(J, S) <= (S) : (V) == 5 ? K7V_KY(J, S) > (S) : 1)
#define K7V_TAIL_ON(J, S, V) ((V) == 1 ? K7V_KY(J, S) <= (S) : (V) == 2 ? 1 : (V) == 3 ? K7V_KY(J, S) > (S) : 0)
#define K7V_SET(J, S, V, M, T)                                                                              \
    if (((M) && K7V_MAIN_ON(J, S, V)) || ((T) && K7V_TAIL_ON(J, S, V))) {                                   \
        const __m512 wv = _mm512_set1_ps(wk[K7V_KY(J, S) * 7]);                                             \
        if ((M) && K7V_MAIN_ON(J, S, V)) {                                                                  \
            a##J##0 = _mm512_fmadd_ps(wv, x0, a##J##0);                                                     \
            a##J##1 = _mm512_fmadd_ps(wv, x1, a##J##1);                                                     \
            a##J##2 = _mm512_fmadd_ps(wv, x2, a##J##2);                                                     \
        }                                                                                                   \
        if ((T) == 1 && K7V_TAIL_ON(J, S, V)) a##J##3 = k7v_fma(a##J##3, wv, tk);                           \
        if ((T) == 2 && K7V_TAIL_ON(J, S, V)) a##J##3 = k7v_fma_m(a##J##3, wv, tk, tm);                     \
    }
/* M: the main vectors' input row is a source row; T: 1 both halves of the tail vector, 2
 * some (tm) */
#define K7V_KX(S, V, M, T)                                                                                  \
    _Pragma("GCC unroll 1") for (int kx = 0; kx < 7; kx++) {                                                \
        const float *wk = wt + kx, *tk = tv + (size_t)(7 * j + kx) * VL;                                    \
        __m512 x0 = _mm512_setzero_ps(), x1 = x0, x2 = x0;                                                  \
        if (M) {                                                                                            \
            x0 = _mm512_maskz_loadu_ps(mk[kx], xr + kx);                                                    \
            x1 = _mm512_loadu_ps(xr + kx + VL);                                                             \
            x2 = _mm512_loadu_ps(xr + kx + 2 * VL);                                                         \
        }                                                                                                   \
        __asm__("" : "+v"(x0), "+v"(x1), "+v"(x2));                                                         \
        (void)tk;                                                                                           \
        K7V_SET(0, S, V, M, T) K7V_SET(1, S, V, M, T) K7V_SET(2, S, V, M, T) K7V_SET(3, S, V, M, T)         \
        K7V_SET(4, S, V, M, T) K7V_SET(5, S, V, M, T) K7V_SET(6, S, V, M, T)                                \
    }
#define K7V_STEP(S, N, V)                                                                                   \
    {                                                                                                       \
        const int i = i0 + (S), j = i - 7;                                                                  \
        if ((V) <= 4) a##S##0 = a##S##1 = a##S##2 = b;                                                      \
        if ((V) == 1 || (V) == 2) a##S##3 = b;                                                              \
        const int m = i >= dlo && i <= dhi;                                                                 \
        /* (the last step of round 3 has no tail rows: its j is past the gathered ones) */                 \
        const __mmask16 tm = (V) >= 1 && (V) <= 3 && !((V) == 3 && (S) == 6) ? tmask[j] : 0;                \
        const float *xr = xp + (ptrdiff_t)i * xs;                                                           \
        if (next && i < h) { /* the next plane's row i, its columns that k7v_tails reads */                 \
            _mm_prefetch((const char *)(next + (ptrdiff_t)i * xs + 3 * VL - pw), _MM_HINT_T0);              \
            _mm_prefetch((const char *)(next + (ptrdiff_t)i * xs + 4 * VL - 1 - pw), _MM_HINT_T0);          \
        }                                                                                                   \
        if (tm == 0xFFFF) {                                                                                 \
            if (m) {                                                                                        \
                K7V_KX(S, V, 1, 1)                                                                          \
            } else {                                                                                        \
                K7V_KX(S, V, 0, 1)                                                                          \
            }                                                                                               \
        } else if (tm) {                                                                                    \
            if (m) {                                                                                        \
                K7V_KX(S, V, 1, 2)                                                                          \
            } else {                                                                                        \
                K7V_KX(S, V, 0, 2)                                                                          \
            }                                                                                               \
        } else if (m) {                                                                                     \
            K7V_KX(S, V, 1, 0)                                                                              \
        }                                                                                                   \
        if ((V) >= 1 || (S) == 6) {                                                                         \
            if ((V) < 5 || (S) < 6) { /* main row i - 6 */                                                  \
                float *yr = y + (size_t)(i - 6) * ys;                                                       \
                k7_store(yr, a##N##0, 0xFFFF, accum);                                                       \
                k7_store(yr + VL, a##N##1, 0xFFFF, accum);                                                  \
                k7_store(yr + 2 * VL, a##N##2, 0xFFFF, accum);                                              \
            }                                                                                               \
        }                                                                                                   \
        if (((V) == 1 && (S) == 6) || (V) == 2 || ((V) == 3 && (S) < 6)) { /* tail row j - 6 */            \
            float *yr = y + (size_t)(j - 6) * ys + 3 * VL;                                                  \
            k7_store(yr, a##N##3, tail, accum);                                                             \
            k7_store(yr + (size_t)hh * ys - VL / 2, a##N##3, (__mmask16)(tail << 8), accum);                \
        }                                                                                                   \
    }
#define K7V_ROUND(V)                                                                                        \
    K7V_STEP(0, 1, V) K7V_STEP(1, 2, V) K7V_STEP(2, 3, V) K7V_STEP(3, 4, V) K7V_STEP(4, 5, V)               \
    K7V_STEP(5, 6, V) K7V_STEP(6, 0, V)

/* tv[(7 j + kx) * 16 + l], tail input rows j < n: lanes l < 8 source row j - ph, lanes
 * l >= 8 source row j - ph + hh, columns c0 + kx + l % 8 (c0 = 48 - pw) where they are
 * inside the row (win = k7_window(c0, w)), zeros elsewhere and where the row is padding;
 * tmask[j]: the halves that are source rows. Each row's 16 columns from c0 are loaded
 * once, the 7 vectors of a tail row made from two of them by a permute. */
static AVX512 void k7v_tails(float *tv, __mmask16 *tmask, int n, const float *src, int h, int w, int ph, int hh,
                             int c0, __mmask16 win)
{
    __m512i idx[7];
    for (int kx = 0; kx < 7; kx++) /* lane l < 8: lane kx + l of the first; l >= 8: lane kx + l - 8 of the second */
        idx[kx] = _mm512_add_epi32(_mm512_set_epi32(23, 22, 21, 20, 19, 18, 17, 16, 7, 6, 5, 4, 3, 2, 1, 0),
                                   _mm512_set1_epi32(kx));
    for (int j = 0; j < n; j++) {
        const int sl = j - ph, su = sl + hh;
        const int vl = sl >= 0 && sl < h, vu = su >= 0 && su < h;
        tmask[j] = (__mmask16)((vl ? 0x00FF : 0) | (vu ? 0xFF00 : 0));
        const __m512 lo = vl ? _mm512_maskz_loadu_ps(win, src + (ptrdiff_t)sl * w + c0) : _mm512_setzero_ps();
        const __m512 up = vu ? _mm512_maskz_loadu_ps(win, src + (ptrdiff_t)su * w + c0) : _mm512_setzero_ps();
        for (int kx = 0; kx < 7; kx++)
            _mm512_store_ps(tv + (size_t)(7 * j + kx) * VL, _mm512_permutex2var_ps(lo, idx[kx], up));
    }
}

/* 1 if plane_fwd_k7_rounds takes these output rows: a multiple of 14, 28 .. K7V_MAXH */
static int k7v_rows_ok(int oh) { return oh % 14 == 0 && oh >= 28 && oh <= K7V_MAXH; }

/* plane_fwd_k7_direct for 49-56 output columns and k7v_rows_ok(oh) rows; next: the plane
 * read next (h x w) or NULL, whose columns that k7v_tails reads are prefetched (read at
 * once, a plane's rows came late from memory) */
static AVX512 void plane_fwd_k7_rounds(float *y, int oh, int ow, const float *src, int h, int w, int ph, int pw,
                                       const __mmask16 *mk, const float *wt, float bias, int accum, const float *next)
{
    float tv[(K7V_MAXH / 2 + 6) * 7 * VL] __attribute__((aligned(64)));
    __mmask16 tmask[K7V_MAXH / 2 + 6];
    const int hh = oh / 2, ys = ow, xs = w, dlo = ph, dhi = ph + h - 1;
    const __mmask16 tail = lanes_mask(ow - 3 * VL);
    const float *xp = src - (ptrdiff_t)ph * w - pw;
    k7v_tails(tv, tmask, hh + 6, src, h, w, ph, hh, 3 * VL - pw, k7_window(3 * VL - pw, w));
    const __m512 b = _mm512_set1_ps(bias);
    __m512 a00 = b, a01 = b, a02 = b, a03 = b, a10 = b, a11 = b, a12 = b, a13 = b;
    __m512 a20 = b, a21 = b, a22 = b, a23 = b, a30 = b, a31 = b, a32 = b, a33 = b;
    __m512 a40 = b, a41 = b, a42 = b, a43 = b, a50 = b, a51 = b, a52 = b, a53 = b;
    __m512 a60 = b, a61 = b, a62 = b, a63 = b;
    const int q1 = hh / 7 + 1, qn = oh / 7; /* the rounds where the tails end, where the main rows end */
    for (int q = 0; q <= qn; q++) {
        const int i0 = 7 * q;
        if (q == 0) {
            K7V_ROUND(0)
        } else if (q == 1) {
            K7V_ROUND(1)
        } else if (q < q1) {
            K7V_ROUND(2)
        } else if (q == q1) {
            K7V_ROUND(3)
        } else if (q < qn) {
            K7V_ROUND(4)
        } else {
            K7V_ROUND(5)
        }
    }
}

/* The 7x7 forward straight from the source plane (h, w), padded by (ph, pw), when the
 * output is one 4-vector column block whose two middle vectors never leave a source
 * row (the source is then read once, by the kernel, instead of copied into a padded
 * plane first): 1 if done. Not for a bias of -0 (every input row must be a source
 * row: zero rows are skipped, see k7_block). next: the plane read next, or NULL (for
 * prefetching). */
static AVX512 int plane_fwd_k7_direct(float *y, int oh, int ow, const float *src, int h, int w, int ph, int pw,
                                      const __mmask16 *mk, const float *wt, float bias, int accum, const float *next)
{
    if (!k7_direct_geometry(ow, w, ph, pw) || (bias == 0.0f && signbit(bias))) return 0;
    if (ow <= 3 * VL + VL / 2 && k7v_rows_ok(oh)) {
        plane_fwd_k7_rounds(y, oh, ow, src, h, w, ph, pw, mk, wt, bias, accum, next);
        return 1;
    }
    const __mmask16 tail = lanes_mask(ow - 3 * VL);
    for (int oy = 0; oy < oh; oy += DW_R) {
        const int r = oh - oy < DW_R ? oh - oy : DW_R;
        const int dlo = ph - oy > 0 ? ph - oy : 0, dhi = ph + h - 1 - oy;
        /* row d of the block is source row oy - ph + d (only rows dlo..dhi are read) */
        k7_block_any(y + (size_t)oy * ow, ow, r, mk, tail, src + ((ptrdiff_t)oy - ph) * w - pw, w, wt, bias, accum,
                     dlo, dhi);
    }
    return 1;
}

/* plane_fwd_s1 for sh = dh = 1 on AVX-512; rows top .. top + h - 1 of xp hold the
 * source plane, the others are zeros */
static AVX512 void plane_fwd_rows(float *y, int ys, int oh, int ow, const float *xp, int xs, const float *w,
                                  int kh, int kw, int dw, float bias, int accum, int top, int h)
{
    /* a zero added to -0 gives +0: no input rows skipped for a bias of -0 */
    const int skip = !(bias == 0.0f && signbit(bias));
    for (int oy = 0; oy < oh; oy += DW_R) {
        int r = oh - oy < DW_R ? oh - oy : DW_R;
        int dlo = skip && top - oy > 0 ? top - oy : 0, dhi = skip ? top + h - 1 - oy : DW_R + 5;
        for (int ox = 0; ox < ow; ox += 4 * VL) {
            int width = ow - ox;
            int nv = width >= 4 * VL ? 4 : (width + VL - 1) / VL;
            if (kh == 7 && kw == 7 && dw == 1 && nv == 4)
                k7_block_any(y + (size_t)oy * ys + ox, ys, r, NULL, lanes_mask(width - 3 * VL),
                             xp + (size_t)oy * xs + ox, xs, w, bias, accum, dlo, dhi);
            else
                rows_block_any(y + (size_t)oy * ys + ox, ys, r, nv, width, xp + (size_t)oy * xs + ox, xs, w, kh,
                               kw, dw, bias, accum);
        }
    }
}

/* y (oh, ow; row stride ys) (+)= bias + correlation of the padded plane xp (row
 * stride xs, >= ceil_vl(ow) + (kw-1)*dw readable columns) with w (kh, kw);
 * output column ox reads xp column ox + kx*dw (width stride 1), output row oy
 * reads xp row oy*sh + ky*dh. */
static void plane_fwd_s1(float *y, int ys, int oh, int ow, const float *xp, int xs, int sh,
                         const float *w, int kh, int kw, int dh, int dw, float bias, int accum, int top, int h)
{
    if (sh == 1 && dh == 1 && npred_gemm_avx512_active()) {
        plane_fwd_rows(y, ys, oh, ow, xp, xs, w, kh, kw, dw, bias, accum, top, h);
        return;
    }
    for (int oy = 0; oy < oh; oy += 2) {
        int nr = oh - oy >= 2 ? 2 : 1;
        for (int ox = 0; ox < ow; ox += 4 * VL) {
            int width = ow - ox;
            int nv = width >= 4 * VL ? 4 : (width + VL - 1) / VL;
            fwd_block_any(y + (size_t)oy * ys + ox, ys, nr, nv, width,
                          xp + (size_t)oy * sh * xs + ox, xs, sh, w, kh, kw, dh, dw, bias, accum);
        }
    }
}

/* Any width stride: scalar loops over the padded plane. */
static void plane_fwd_generic(float *y, int ys, int oh, int ow, const float *xp, int xs, int sh,
                              int sw, const float *w, int kh, int kw, int dh, int dw, float bias)
{
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            float acc = bias;
            for (int ky = 0; ky < kh; ky++) {
                const float *xr = xp + (size_t)(oy * sh + ky * dh) * xs + (size_t)ox * sw;
                for (int kx = 0; kx < kw; kx++) acc += w[ky * kw + kx] * xr[kx * dw];
            }
            y[(size_t)oy * ys + ox] = acc;
        }
}

/* acc[(ky*kw + kx0 + k)*VL + lane] += the lane's share of the sum over rows and the
 * (zero-padded) width of dyc * xp: lane-wise in double, so no serial reduction per
 * plane (the lanes are summed once per output channel, at the end). */
static inline __attribute__((always_inline)) void
dw_block(double *acc, int nk, int kx0, int ky, const float *dyc, int cs, int oh, int owr,
         const float *xp, int xs, int sh, int kw, int dh, int dw)
{
    vf a[8];
    for (int k = 0; k < nk; k++) a[k] = vsplat(0.0f);
    for (int oy = 0; oy < oh; oy++) {
        const float *d = dyc + (size_t)oy * cs;
        const float *xr = xp + (size_t)(oy * sh + ky * dh) * xs + (size_t)kx0 * dw;
        for (int ox = 0; ox < owr; ox += VL) {
            vf dv = vld(d + ox);
            for (int k = 0; k < nk; k++) a[k] = vfma(dv, vld(xr + ox + k * dw), a[k]);
        }
    }
    for (int k = 0; k < nk; k++) {
        float t[VL];
        vst(t, a[k]);
        double *ak = acc + (size_t)(ky * kw + kx0 + k) * VL;
        for (int i = 0; i < VL; i++) ak[i] += t[i];
    }
}

#define DW_CASE(NK) \
    case NK: dw_block(acc, NK, kx0, ky, dyc, cs, oh, owr, xp, xs, sh, kw, dh, dw); break;

static void plane_dw_s1(double *acc, const float *dyc, int cs, int oh, int owr, const float *xp,
                        int xs, int sh, int kh, int kw, int dh, int dw)
{
    for (int ky = 0; ky < kh; ky++)
        for (int kx0 = 0; kx0 < kw; kx0 += 8) {
            int nk = kw - kx0 < 8 ? kw - kx0 : 8;
            switch (nk) {
                DW_CASE(1) DW_CASE(2) DW_CASE(3) DW_CASE(4)
                DW_CASE(5) DW_CASE(6) DW_CASE(7) DW_CASE(8)
            default: break;
            }
        }
}

/* acc[(ky*kw + kx)*VL + lane] += the lane's float sum t, lane by lane in double (the
 * same additions as a loop over the lanes) */
static inline __attribute__((always_inline)) AVX512 void lanes_to_double(double *acc, __m512 t)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(t));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    _mm512_storeu_pd(acc, _mm512_add_pd(_mm512_loadu_pd(acc), lo));
    _mm512_storeu_pd(acc + 8, _mm512_add_pd(_mm512_loadu_pd(acc + 8), hi));
}

/* lanes_to_double onto zeros (the first image of a block): acc = the lanes. 0 + x is x
 * but for x = -0, and a -0 in acc gives the final sums (which start at +0) the bits
 * of a +0: the same results without zeroing the accumulators first. */
static inline __attribute__((always_inline)) AVX512 void lanes_to_double_set(double *acc, __m512 t)
{
    _mm512_storeu_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
    _mm512_storeu_pd(acc + 8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1))));
}

/* plane_dw_s1 for height stride and dilation 1 on AVX-512, in groups of G filter rows
 * (ky0 .. ky0 + G - 1): input row iy is loaded once per kx and feeds the G taps
 * (ky, kx) whose output row oy = iy - ky reads it, with the G dy rows in registers
 * (plane_dw_s1 loads an input vector for every tap and row). Every tap still sums
 * its products over oy, then the width vectors, in order, so the lanes get the same
 * float sums: dz holds the dy plane with DW_G - 1 zero rows above and below (row
 * oy of dy is dz row oy + DW_G - 1), whose zero products leave a sum unchanged. */
static inline __attribute__((always_inline)) AVX512 void
dw_rows_group(double *acc, const int G, const int KW, int ky0, const float *dz, int cs, int oh, int nv,
              const float *xp, int xs, int dwl, int xlo, int xhi)
{
    __m512 a[DW_G][8];
    for (int g = 0; g < G; g++)
        for (int kx = 0; kx < KW; kx++) a[g][kx] = _mm512_setzero_ps();
    /* rows of xp outside xlo .. xhi - 1 are zero padding: their products are zero, and
     * the sums start at +0, which adding a zero leaves unchanged */
    const int iy0 = ky0 > xlo ? ky0 : xlo, iy1 = ky0 + G - 1 + oh < xhi ? ky0 + G - 1 + oh : xhi;
    for (int iy = iy0; iy < iy1; iy++) {
        const float *xr = xp + (size_t)iy * xs;
        const float *d0 = dz + (size_t)(iy - ky0 + DW_G - 1) * cs; /* dy row oy = iy - ky0 (g = 0) */
        for (int j = 0; j < nv; j++) {
            __m512 dv[DW_G];
            for (int g = 0; g < G; g++) dv[g] = _mm512_loadu_ps(d0 - (size_t)g * cs + j * VL);
            for (int kx = 0; kx < KW; kx++) {
                __m512 xv = _mm512_loadu_ps(xr + j * VL + kx * dwl);
                __asm__("" : "+v"(xv)); /* one load into a register, not one memory operand per FMA */
                for (int g = 0; g < G; g++) a[g][kx] = _mm512_fmadd_ps(dv[g], xv, a[g][kx]);
            }
        }
    }
    for (int g = 0; g < G; g++)
        for (int kx = 0; kx < KW; kx++) lanes_to_double(acc + (size_t)((ky0 + g) * KW + kx) * VL, a[g][kx]);
}

#define DWR_CASE(G, KW) \
    case (G) * 16 + (KW): dw_rows_group(acc, G, KW, ky0, dz, cs, oh, nv, xp, xs, dwl, xlo, xhi); break;

/* every filter row of a plane (kw <= 8), in groups of up to DW_G rows; the source rows
 * of xp are xlo .. xhi - 1 */
static AVX512 void plane_dw_rows(double *acc, const float *dz, int cs, int oh, int nv, const float *xp, int xs,
                                 int kh, int kw, int dwl, int xlo, int xhi)
{
    for (int ky0 = 0; ky0 < kh; ky0 += DW_G) {
        const int G = kh - ky0 < DW_G ? kh - ky0 : DW_G;
        switch (G * 16 + kw) {
            DWR_CASE(1, 1) DWR_CASE(1, 2) DWR_CASE(1, 3) DWR_CASE(1, 4)
            DWR_CASE(1, 5) DWR_CASE(1, 6) DWR_CASE(1, 7) DWR_CASE(1, 8)
            DWR_CASE(2, 1) DWR_CASE(2, 2) DWR_CASE(2, 3) DWR_CASE(2, 4)
            DWR_CASE(2, 5) DWR_CASE(2, 6) DWR_CASE(2, 7) DWR_CASE(2, 8)
            DWR_CASE(3, 1) DWR_CASE(3, 2) DWR_CASE(3, 3) DWR_CASE(3, 4)
            DWR_CASE(3, 5) DWR_CASE(3, 6) DWR_CASE(3, 7) DWR_CASE(3, 8)
        default: break;
        }
    }
}

/* lanes kx .. 15 of lo, then lanes 0 .. kx - 1 of hi (kx a constant once unrolled) */
#define K7_ALIGN(hi, lo, kx)                                                                                           \
    ((kx) == 0   ? (lo)                                                                                                \
     : (kx) == 1 ? _mm512_alignr_epi32(hi, lo, 1)                                                                      \
     : (kx) == 2 ? _mm512_alignr_epi32(hi, lo, 2)                                                                      \
     : (kx) == 3 ? _mm512_alignr_epi32(hi, lo, 3)                                                                      \
     : (kx) == 4 ? _mm512_alignr_epi32(hi, lo, 4)                                                                      \
     : (kx) == 5 ? _mm512_alignr_epi32(hi, lo, 5)                                                                      \
                 : _mm512_alignr_epi32(hi, lo, 6))

/* dw_rows_group of a 7x7 filter straight from the source planes (no padded copies):
 * input row iy (of the padded geometry) is source row iy - ph of x (h, w), its
 * vector j at column offset kx read from source column 16 j + kx - pw, the first and
 * last under the masks of k7_masks (zeros outside the row, as in the padded plane);
 * a dy row outside the plane is zrow (zeros), the last dy vector read under dtail
 * (zeros past the width, as in the dy copy). The same products, in the same order. */
static inline __attribute__((always_inline)) AVX512 void
dw_k7_group(double *acc, const int G, int ky0, const float *dy, int oh, int ow, const float *x, int h, int w, int ph,
            int pw, const __mmask16 *mk, __mmask16 dtail, const float *zrow, int first, const float *nx,
            const float *ndy)
{
    __m512 a[DW_G][7];
    _Pragma("GCC unroll 3") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 7") for (int kx = 0; kx < 7; kx++) a[g][kx] = _mm512_setzero_ps();
    const int iy0 = ky0 > ph ? ky0 : ph, iy1 = ky0 + G - 1 + oh < ph + h ? ky0 + G - 1 + oh : ph + h;
    const __mmask16 m4 = k7_window(4 * VL - pw, w); /* the vector after the last */
    for (int iy = iy0; iy < iy1; iy++) {
        const float *xr = x + ((ptrdiff_t)iy - ph) * w - pw;
        if (nx) { /* the next planes, 256 bytes of each per input row */
            const ptrdiff_t o = ((ptrdiff_t)iy - iy0) * 64;
            if (o < (ptrdiff_t)h * w)
                for (int l = 0; l < 64; l += 16) _mm_prefetch((const char *)(nx + o + l), _MM_HINT_T0);
            if (o < (ptrdiff_t)oh * ow)
                for (int l = 0; l < 64; l += 16) _mm_prefetch((const char *)(ndy + o + l), _MM_HINT_T0);
        }
        const float *dr[DW_G];
        _Pragma("GCC unroll 3") for (int g = 0; g < G; g++) {
            const int oy = iy - ky0 - g;
            dr[g] = oy >= 0 && oy < oh ? dy + (size_t)oy * ow : zrow;
        }
        /* the vector at column offset kx of width vector j: lanes kx.. of the row's
         * vector j (xlo) and the next (xhi), by valignd from two loads (as masked loads
         * at each offset would give: zeros outside the source row) */
        __m512i xlo = _mm512_castps_si512(_mm512_maskz_loadu_ps(mk[0], xr)), xhi;
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            __m512 dv[DW_G];
            _Pragma("GCC unroll 3") for (int g = 0; g < G; g++)
                dv[g] = j == 3 ? _mm512_maskz_loadu_ps(dtail, dr[g] + 3 * VL) : _mm512_loadu_ps(dr[g] + j * VL);
            xhi = _mm512_castps_si512(j == 2   ? _mm512_maskz_loadu_ps(mk[7], xr + 3 * VL)
                                      : j == 3 ? _mm512_maskz_loadu_ps(m4, xr + 4 * VL)
                                               : _mm512_loadu_ps(xr + (j + 1) * VL));
            _Pragma("GCC unroll 7") for (int kx = 0; kx < 7; kx++) {
                __m512 xv = _mm512_castsi512_ps(K7_ALIGN(xhi, xlo, kx));
                _Pragma("GCC unroll 3") for (int g = 0; g < G; g++) a[g][kx] = _mm512_fmadd_ps(dv[g], xv, a[g][kx]);
            }
            xlo = xhi;
        }
    }
    _Pragma("GCC unroll 3") for (int g = 0; g < G; g++)
        _Pragma("GCC unroll 7") for (int kx = 0; kx < 7; kx++) {
            double *at = acc + (size_t)((ky0 + g) * 7 + kx) * VL;
            if (first) lanes_to_double_set(at, a[g][kx]);
            else lanes_to_double(at, a[g][kx]);
        }
}

/* plane_dw_rows of a 7x7 filter from the source planes dy (oh, ow) and x (h, w),
 * padded by (ph, pw), mk = k7_masks(w, pw); k7_direct_geometry(ow, w, ph, pw) must
 * hold. first: acc is not added to but set (lanes_to_double_set) */
static AVX512 void plane_dw_k7_direct(double *acc, const float *dy, int oh, int ow, const float *x, int h, int w,
                                      int ph, int pw, const __mmask16 *mk, int first, const float *nx, const float *ndy)
{
    static const float zrow[4 * VL] __attribute__((aligned(64)));
    const __mmask16 dtail = lanes_mask(ow - 3 * VL);
    /* the first group walks the source rows (ph .. ph + h - 1) in order: it prefetches those
     * of the next planes (nx, ndy: those the caller reads next, or NULL) */
    dw_k7_group(acc, 3, 0, dy, oh, ow, x, h, w, ph, pw, mk, dtail, zrow, first, nx, ndy);
    dw_k7_group(acc, 3, 3, dy, oh, ow, x, h, w, ph, pw, mk, dtail, zrow, first, NULL, NULL);
    dw_k7_group(acc, 1, 6, dy, oh, ow, x, h, w, ph, pw, mk, dtail, zrow, first, NULL, NULL);
}

static npred_status check_dw(const npred_conv2d_params *p, int *oh, int *ow, const char *what)
{
    npred_status s = npred_conv2d_output_size(p, oh, ow);
    if (s) return s;
    if (!npred_conv2d_is_depthwise(p))
        return npred_errorf(NPRED_ERR_ARG,
                            "conv2d %s (depthwise): needs groups == in_channels > 1 and "
                            "out_channels a multiple of it, got groups=%d C=%d O=%d",
                            what, p->groups, p->c, p->o);
    return NPRED_OK;
}

static char *setup_ws(const npred_conv2d_params *p, void *ws, size_t ws_bytes, void **owned,
                      int *nthreads, size_t per)
{
    *owned = NULL;
    if (!ws && !ws_bytes) {
        ws_bytes = npred_conv2d_workspace_size(p, NPRED_CONV2D_ALGO_DEPTHWISE);
        ws = *owned = malloc(ws_bytes);
        if (!ws) return NULL;
    }
    uintptr_t a = (uintptr_t)ws;
    uintptr_t b = (a + NPRED_CONV2D_ALIGN - 1) & ~(uintptr_t)(NPRED_CONV2D_ALIGN - 1);
    size_t usable = ws_bytes > b - a ? ws_bytes - (b - a) : 0;
    *nthreads = npred_conv2d_threads(per, usable, 1 << 30);
    return (char *)b;
}

/* 1 if a forward of these parameters, and the stride-1 dx of them (a forward with
 * the flipped filter and padding k - 1 - pad), may read its source planes directly
 * (plane_fwd_k7_direct decides per plane) */
static int k7_direct_shape(const npred_conv2d_params *p)
{
    return p->kh == 7 && p->kw == 7 && p->stride_h == 1 && p->stride_w == 1 && p->dil_h == 1 && p->dil_w == 1 &&
           npred_gemm_avx512_active();
}

npred_status npred_conv2d_forward_depthwise(float *y, const float *x, const float *w,
                                            const float *b, const npred_conv2d_params *p,
                                            void *ws, size_t ws_bytes)
{
    int oh, ow;
    npred_status s = check_dw(p, &oh, &ow, "forward");
    if (s) return s;
    if (!y || !x || !w) return npred_errorf(NPRED_ERR_ARG, "conv2d forward: y, x and w are required");
    dw_geom g;
    geometry(p, oh, ow, &g);
    void *owned;
    int T;
    char *base = setup_ws(p, ws, ws_bytes, &owned, &T, g.bytes);
    if (!base) return npred_errorf(NPRED_ERR_NOMEM, "conv2d forward (depthwise): out of memory");
    if (T < 1)
        return npred_errorf(NPRED_ERR_ARG, "conv2d forward (depthwise): workspace of %zu bytes too small (need %zu)",
                            ws_bytes, npred_conv2d_workspace_size(p, NPRED_CONV2D_ALGO_DEPTHWISE));
    const int C = p->c, M = p->o / p->c, kk = p->kh * p->kw;
    const size_t ipix = (size_t)p->h * p->w, opix = (size_t)oh * ow;
    const int direct = k7_direct_shape(p);
    __mmask16 mkx[14] = {0}; /* the masks of the source rows for the direct 7x7 kernels */
    if (direct) k7_masks(mkx, p->w, p->pad_w);

#pragma omp parallel num_threads(T)
    {
        float *xbuf = (float *)(base + (size_t)npred_thread_id() * g.bytes + g.off_xp);
        const float *xp = padded_ptr(&g.qx, xbuf);
        int zeroed = 0; /* the padded plane, when a plane is not read directly */
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < p->n; n++)
            for (int c = 0; c < C; c++) {
                const float *xc = x + ((size_t)n * C + c) * ipix;
                int filled = 0;
                for (int m = 0; m < M; m++) {
                    int oc = c * M + m;
                    float *yp = y + ((size_t)n * p->o + oc) * opix;
                    const float *wp = w + (size_t)oc * kk;
                    float bias = b ? b[oc] : 0.0f;
                    const int last = (size_t)n * C + c + 1 >= (size_t)p->n * C;
                    if (direct && plane_fwd_k7_direct(yp, oh, ow, xc, p->h, p->w, p->pad_h, p->pad_w, mkx, wp, bias, 0,
                                                      last ? NULL : xc + ipix))
                        continue;
                    if (!zeroed) padded_zero(&g.qx, xbuf);
                    if (!filled) padded_fill(&g.qx, xbuf, xc);
                    zeroed = filled = 1;
                    if (p->stride_w == 1)
                        plane_fwd_s1(yp, ow, oh, ow, xp, g.qx.stride, p->stride_h, wp, p->kh, p->kw,
                                     p->dil_h, p->dil_w, bias, 0, g.qx.top, g.qx.h);
                    else
                        plane_fwd_generic(yp, ow, oh, ow, xp, g.qx.stride, p->stride_h, p->stride_w, wp,
                                          p->kh, p->kw, p->dil_h, p->dil_w, bias);
                }
            }
    }
    free(owned);
    return NPRED_OK;
}

/* dxp (+)= the stride-1 dx of one plane: the forward kernel with the flipped filter
 * (into wf) over dy (the plane dyp), from dyp directly when direct (the masks of k7_masks
 * for dy's rows) is given and the geometry allows it, else from its padded plane in
 * dbuf (geometry q), which is filled here unless filled; next: the dy plane read next, or
 * NULL (for prefetching) */
static void dx_plane_s1(float *dxp, const npred_conv2d_params *p, const float *dyp, const __mmask16 *direct,
                        int filled, const padded *q, float *dbuf, const float *wp, float *wf, int accum,
                        const float *next)
{
    const int kk = p->kh * p->kw;
    for (int i = 0; i < kk; i++) wf[i] = wp[kk - 1 - i];
    if (!filled && direct &&
        plane_fwd_k7_direct(dxp, p->h, p->w, dyp, q->h, q->w, q->top, q->left, direct, wf, 0.0f, accum, next))
        return;
    if (!filled) padded_fill(q, dbuf, dyp);
    plane_fwd_s1(dxp, p->w, p->h, p->w, padded_ptr(q, dbuf), q->stride, 1, wf, p->kh, p->kw, p->dil_h, p->dil_w,
                 0.0f, accum, q->top, q->h);
}

/* set: dx is written (the first output channel of each input channel's plane stores
 * its sums instead of adding them to dx: the sums start at +0, so x + 0 and x are the
 * same bits), else added to */
static npred_status backward_depthwise(float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, const npred_conv2d_params *p, void *ws, size_t ws_bytes,
                                       int set)
{
    int oh, ow;
    npred_status s = check_dw(p, &oh, &ow, "backward");
    if (s) return s;
    if (!dy || (dw && !x) || (dx && !w))
        return npred_errorf(NPRED_ERR_ARG, "conv2d backward: dy, x (for dw) and w (for dx) are required");
    if (db) npred_conv2d_bias_grad(db, dy, p->n, p->o, (size_t)oh * ow);
    if (!dx && !dw) return NPRED_OK;
    dw_geom g;
    geometry(p, oh, ow, &g);
    void *owned;
    int T;
    char *base = setup_ws(p, ws, ws_bytes, &owned, &T, g.bytes);
    if (!base) return npred_errorf(NPRED_ERR_NOMEM, "conv2d backward (depthwise): out of memory");
    if (T < 1)
        return npred_errorf(NPRED_ERR_ARG, "conv2d backward (depthwise): workspace of %zu bytes too small (need %zu)",
                            ws_bytes, npred_conv2d_workspace_size(p, NPRED_CONV2D_ALGO_DEPTHWISE));
    const int C = p->c, M = p->o / p->c, kh = p->kh, kw = p->kw, kk = kh * kw;
    const int sh = p->stride_h, sw = p->stride_w, dh = p->dil_h, dwl = p->dil_w;
    const size_t ipix = (size_t)p->h * p->w, opix = (size_t)oh * ow;
    const int unit_stride = sh == 1 && sw == 1, direct = k7_direct_shape(p);
    /* the dw row kernel: unit stride, height dilation 1, filters up to 8 wide */
    const int rows_dw = unit_stride && dh == 1 && kw <= 8 && npred_gemm_avx512_active();
    /* dx inside the dw loop (one input channel per output channel, so the channel
     * blocks own their dx planes): the row kernel reads dy from the dx's padded plane
     * (enough zero rows above and below, zeros past the width), one copy less */
    const int fuse = dx && dw && rows_dw && M == 1 && g.qd.fast && g.qd.top >= DW_G - 1 &&
                     g.qd.top + oh + DW_G - 1 <= g.qd.rows;
    /* dw of a 7x7 filter straight from the planes of x and dy (with fuse, the dx too) */
    const int dw_direct = rows_dw && direct && k7_direct_geometry(ow, p->w, p->pad_h, p->pad_w);
    __mmask16 mkx[14] = {0}, mkd[14] = {0}; /* the masks of the rows of x and dy for the direct 7x7 kernels */
    if (direct) {
        k7_masks(mkx, p->w, p->pad_w);
        k7_masks(mkd, ow, kw - 1 - p->pad_w);
    }

#pragma omp parallel num_threads(T)
    {
        char *mine = base + (size_t)npred_thread_id() * g.bytes;
        float *xbuf = (float *)(mine + g.off_xp), *dbuf = (float *)(mine + g.off_dp);
        float *cbuf = (float *)(mine + g.off_dc), *wf = (float *)(mine + g.off_wf);
        double *acc0 = (double *)(mine + g.off_acc);
        const padded *qc = rows_dw ? &g.qc : &g.qc0;
        const float *xp = padded_ptr(&g.qx, xbuf), *dc = padded_ptr(qc, cbuf);
        if (dx && unit_stride) padded_zero(&g.qd, dbuf);
        if (dw && !dw_direct) {
            padded_zero(&g.qx, xbuf);
            if (!fuse) padded_zero(qc, cbuf);
        }
        /* the dw row kernel's dy: its own copy, or the dx's padded plane */
        const float *dz = fuse ? dbuf + (size_t)(g.qd.top - (DW_G - 1)) * g.qd.stride + g.qd.sh : dc;
        const int dzs = fuse ? g.qd.stride : qc->stride;

        if (dx && !fuse) {
#pragma omp for collapse(2) schedule(static)
            for (int n = 0; n < p->n; n++)
                for (int c = 0; c < C; c++) {
                    float *dxp = dx + ((size_t)n * C + c) * ipix;
                    if (set && !unit_stride) memset(dxp, 0, ipix * sizeof *dxp);
                    for (int m = 0; m < M; m++) {
                        int oc = c * M + m;
                        const float *dyp = dy + ((size_t)n * p->o + oc) * opix;
                        const float *wp = w + (size_t)oc * kk;
                        if (unit_stride) {
                            const int last = (size_t)n * p->o + oc + 1 >= (size_t)p->n * p->o;
                            dx_plane_s1(dxp, p, dyp, direct ? mkd : NULL, 0, &g.qd, dbuf, wp, wf, !set || m > 0,
                                        last ? NULL : dyp + opix);
                        } else {
                            for (int oy = 0; oy < oh; oy++)
                                for (int ox = 0; ox < ow; ox++) {
                                    float d = dyp[(size_t)oy * ow + ox];
                                    for (int ky = 0; ky < kh; ky++) {
                                        int iy = oy * sh + ky * dh - p->pad_h;
                                        if (iy < 0 || iy >= p->h) continue;
                                        for (int kx = 0; kx < kw; kx++) {
                                            int ix = ox * sw + kx * dwl - p->pad_w;
                                            if (ix < 0 || ix >= p->w) continue;
                                            dxp[(size_t)iy * p->w + ix] += d * wp[ky * kw + kx];
                                        }
                                    }
                                }
                        }
                    }
                }
        }
        if (dw) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < (p->o + DW_OB - 1) / DW_OB; blk++) {
                const int o0 = blk * DW_OB, o1 = o0 + DW_OB < p->o ? o0 + DW_OB : p->o;
                if (!dw_direct) /* (the direct kernel sets them for the first image) */
                    for (size_t i = 0; i < (size_t)(o1 - o0) * kk * VL; i++) acc0[i] = 0;
                /* images outside, the block's channels inside: its planes of x and dy
                 * are read as contiguous runs (one channel per task with the images
                 * inside jumped a whole image per plane: slow on the hardware prefetch) */
                for (int n = 0; n < p->n; n++) {
                    for (int oc = o0; oc < o1; oc++) {
                        const int c = oc / M;
                        double *acc = acc0 + (size_t)(oc - o0) * kk * VL;
                        const float *dyp = dy + ((size_t)n * p->o + oc) * opix;
                        const float *xc = x + ((size_t)n * C + c) * ipix;
                        if (dw_direct) {
                            if (fuse)
                                dx_plane_s1(dx + ((size_t)n * C + c) * ipix, p, dyp, direct ? mkd : NULL, 0, &g.qd, dbuf,
                                            w + (size_t)oc * kk, wf, !set, NULL); /* (dw prefetches dy) */
                            /* the planes read next: the block's next channel, else its first
                             * of the next image, else the next block's first (most often the
                             * same thread's next task) */
                            int nn = n, no = oc + 1;
                            if (no >= o1) nn = n + 1, no = o0;
                            if (nn >= p->n) nn = 0, no = o1;
                            const int more = no < p->o;
                            plane_dw_k7_direct(acc, dyp, oh, ow, xc, p->h, p->w, p->pad_h, p->pad_w, mkx, n == 0,
                                               more ? x + ((size_t)nn * C + no / M) * ipix : NULL,
                                               more ? dy + ((size_t)nn * p->o + no) * opix : NULL);
                            continue;
                        }
                        if (fuse) { /* (dw then reads the padded dy) */
                            padded_fill(&g.qd, dbuf, dyp);
                            dx_plane_s1(dx + ((size_t)n * C + c) * ipix, p, dyp, NULL, 1, &g.qd, dbuf,
                                        w + (size_t)oc * kk, wf, !set, NULL);
                        }
                        padded_fill(&g.qx, xbuf, xc);
                        if (rows_dw) {
                            if (!fuse) padded_fill(qc, cbuf, dyp);
                            plane_dw_rows(acc, dz, dzs, oh, (int)ceil_vl(ow) / VL, xp, g.qx.stride, kh, kw, dwl,
                                          g.qx.top, g.qx.top + g.qx.h);
                        } else if (sw == 1) {
                            padded_fill(qc, cbuf, dyp);
                            plane_dw_s1(acc, dc, qc->stride, oh, qc->stride, xp, g.qx.stride, sh, kh, kw, dh, dwl);
                        } else {
                            for (int ky = 0; ky < kh; ky++)
                                for (int kx = 0; kx < kw; kx++) {
                                    float t = 0;
                                    for (int oy = 0; oy < oh; oy++) {
                                        const float *xr = xp + (size_t)(oy * sh + ky * dh) * g.qx.stride + kx * dwl;
                                        const float *dr = dyp + (size_t)oy * ow;
                                        for (int ox = 0; ox < ow; ox++) t += dr[ox] * xr[(size_t)ox * sw];
                                    }
                                    acc[(size_t)(ky * kw + kx) * VL] += t;
                                }
                        }
                    }
                }
                for (int oc = o0; oc < o1; oc++) {
                    const double *acc = acc0 + (size_t)(oc - o0) * kk * VL;
                    float *dwp = dw + (size_t)oc * kk;
                    for (int i = 0; i < kk; i++) {
                        double s = 0;
                        for (int l = 0; l < VL; l++) s += acc[(size_t)i * VL + l];
                        dwp[i] += (float)s;
                    }
                }
            }
        }
    }
    free(owned);
    return NPRED_OK;
}

npred_status npred_conv2d_backward_depthwise(float *dx, float *dw, float *db, const float *dy, const float *x,
                                             const float *w, const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    return backward_depthwise(dx, dw, db, dy, x, w, p, ws, ws_bytes, 0);
}

npred_status npred_conv2d_backward_depthwise_set(float *dx, float *dw, float *db, const float *dy, const float *x,
                                                 const float *w, const npred_conv2d_params *p, void *ws,
                                                 size_t ws_bytes)
{
    return backward_depthwise(dx, dw, db, dy, x, w, p, ws, ws_bytes, 1);
}
