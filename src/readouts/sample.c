/* Fused channels-last sampling + contraction for point readouts (sample.h).
 *
 * Channels are processed in blocks of LANES with one accumulator per lane, so
 * the compiler vectorises the dot products without reassociating them: the
 * summation order is fixed (lane l sums channels l, l+LANES, ...; the lanes are
 * then added in order) whatever the instruction set or thread count. */
#include "kernels/grid_sample_cell.h"
#include "readouts/sample.h"

#include <math.h>
#include <omp.h>
#include <sched.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define LANES 16

typedef struct {
    float n, s, w, e;     /* fractional distances (north/south/west/east) */
    float wt[4];          /* weights of the taps nw, ne, sw, se */
    const float *tap[4];  /* tap rows (C floats) or NULL when outside the map */
    size_t off[4];
} rs_cell;


/* Neurons per pass-2 tile at most: 1536 dF rows of 64 channels are 384 KB, which
 * stay in L2 while the tile walks through the images (measured best at 1-2 k). */
#define RS_TILE 1536

static inline void rs_cell_at(rs_cell *c, const float *feat, float gx, float gy, float sx, float sy, int H, int W,
                              int C, int align_corners)
{
    npred_gs_cell g;
    npred_gs_cell_at(&g, npred_gs_unnormalize(gx, sx, align_corners), npred_gs_unnormalize(gy, sy, align_corners), H,
                     W);
    c->n = g.n, c->s = g.s, c->w = g.w, c->e = g.e;
    for (int k = 0; k < 4; k++) {
        c->wt[k] = g.wt[k];
        c->off[k] = g.off[k] * (size_t)C;
        c->tap[k] = g.in[k] ? feat + c->off[k] : NULL;
    }
}

/* s[0..L) = sum over inside taps of wt * tap[c0 .. c0+L) */
static inline void rs_mix(float *s, const rs_cell *c, int c0, int L)
{
    for (int l = 0; l < L; l++) s[l] = 0.0f;
    for (int k = 0; k < 4; k++) {
        if (!c->tap[k]) continue;
        const float *t = c->tap[k] + c0;
        float wk = c->wt[k];
        for (int l = 0; l < L; l++) s[l] += wk * t[l];
    }
}

/* ---- forward: blocks of LANES neurons ----
 *
 * A block keeps one accumulator vector per neuron: lane l sums the channels
 * l, l+LANES, ... of that neuron (each term f * (sum over the inside taps of
 * wt * tap), all in the order of the scalar definition). At the end the
 * LANES x LANES accumulators are transposed, so that lane l of every neuron is
 * one vector, and the lanes are added in the order 0..LANES-1 for all the
 * block's neurons at once. Padding (C or the neuron count not a multiple of
 * LANES) is +0 in both factors and adds nothing. Each output's arithmetic is
 * the same whatever the block, the image order or the thread count. */
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
/* channel-major F is prefetched this many blocks ahead */
#define RS_PREFETCH 2

/* loads are macros, not functions returning vf: a 64-byte vector return value
 * would have another ABI where the target lacks AVX-512 (PORTABLE=1) */
typedef float vf_unaligned __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float)), may_alias));
#define rs_vld(p) ((vf)(*(const vf_unaligned *)(const void *)(p)))

/* *v = the first L floats at p, zeros after */
static inline void rs_load_to(vf *v, const float *p, int L)
{
    if (L == LANES) {
        *v = rs_vld(p);
        return;
    }
    *v = (vf){0};
    for (int l = 0; l < L; l++) (*v)[l] = p[l];
}

/* two-vector shuffle with a mask vector: GCC's __builtin_shuffle; clang (make
 * tsan and make fuzz build with it) has no such builtin for a variable mask, so
 * there lane by lane (the same values) */
#if defined(__clang__)
#define RS_SHUFFLE(a, b, mask)                                                                                         \
    ({                                                                                                                 \
        vf r_;                                                                                                         \
        for (int l_ = 0; l_ < LANES; l_++) r_[l_] = (mask)[l_] < LANES ? (a)[(mask)[l_]] : (b)[(mask)[l_] - LANES];   \
        r_;                                                                                                            \
    })
#else
#define RS_SHUFFLE(a, b, mask) __builtin_shuffle(a, b, mask)
#endif

/* m[i][j] <-> m[j][i] in four rounds: round S swaps the elements whose row and
 * column differ in bit S (each round is an involution; together they exchange
 * every differing bit, i.e. transpose) */
#define RS_ROUND(m, S)                                                                                                 \
    do {                                                                                                               \
        vi lo_, hi_;                                                                                                   \
        for (int j_ = 0; j_ < LANES; j_++) {                                                                           \
            lo_[j_] = (j_ & (S)) ? LANES + j_ - (S) : j_;                                                              \
            hi_[j_] = (j_ & (S)) ? LANES + j_ : j_ + (S);                                                              \
        }                                                                                                              \
        for (int i_ = 0; i_ < LANES; i_++)                                                                             \
            if (!(i_ & (S))) {                                                                                         \
                vf a_ = m[i_], b_ = m[i_ + (S)];                                                                       \
                m[i_] = RS_SHUFFLE(a_, b_, lo_);                                                                      \
                m[i_ + (S)] = RS_SHUFFLE(a_, b_, hi_);                                                                \
            }                                                                                                          \
    } while (0)

static inline void rs_transpose(vf m[LANES])
{
    typedef int vi __attribute__((vector_size(LANES * sizeof(int))));
    RS_ROUND(m, 1);
    RS_ROUND(m, 2);
    RS_ROUND(m, 4);
    RS_ROUND(m, 8);
}

/* Layout changes of one image in LANES x LANES tiles transposed in registers
 * (partial tiles at the edges element by element), one block of LANES channels
 * after the other: the channel-major side is then LANES streams, not C (the
 * hardware prefetchers follow a few dozen at most). */
static void rs_to_nhwc_image(float *dst, const float *src, int C, int HW, int c0)
{
    const int c1 = c0 + LANES < C ? c0 + LANES : C;
    for (int i0 = 0; i0 < HW; i0 += LANES) {
        const int i1 = i0 + LANES < HW ? i0 + LANES : HW;
        if (i1 - i0 == LANES && c1 - c0 == LANES) {
            vf m[LANES];
            for (int l = 0; l < LANES; l++) m[l] = rs_vld(src + (size_t)(c0 + l) * HW + i0);
            rs_transpose(m);
            for (int j = 0; j < LANES; j++) memcpy(dst + (size_t)(i0 + j) * C + c0, &m[j], sizeof m[j]);
            continue;
        }
        for (int i = i0; i < i1; i++)
            for (int c = c0; c < c1; c++) dst[(size_t)i * C + c] = src[(size_t)c * HW + i];
    }
}

/* dst (C, HW) += src (HW, C) transposed, the channels of block c0 / LANES; set: dst =
 * +0 + src transposed, dst not read (the bits of adding onto zeros: +0 + x is x, and
 * +0 + -0 is +0, as it was when the caller zeroed dst first) */
static inline void rs_add_nchw_image(float *dst, const float *src, int C, int HW, int c0, int set)
{
    const int c1 = c0 + LANES < C ? c0 + LANES : C;
    const vf zero = {0};
    for (int i0 = 0; i0 < HW; i0 += LANES) {
        const int i1 = i0 + LANES < HW ? i0 + LANES : HW;
        if (i1 - i0 == LANES && c1 - c0 == LANES) {
            vf m[LANES];
            for (int j = 0; j < LANES; j++) m[j] = rs_vld(src + (size_t)(i0 + j) * C + c0);
            rs_transpose(m);
            for (int l = 0; l < LANES; l++) {
                float *d = dst + (size_t)(c0 + l) * HW + i0;
                vf v = (set ? zero : rs_vld(d)) + m[l];
                memcpy(d, &v, sizeof v);
            }
            continue;
        }
        for (int c = c0; c < c1; c++)
            for (int i = i0; i < i1; i++) {
                float *d = dst + (size_t)c * HW + i;
                *d = (set ? 0.0f : *d) + src[(size_t)i * C + c];
            }
    }
}

/* y[j] += F[o0 + j] . sample(cell[j]) for the nb <= LANES neurons of one block;
 * F element (o, c) at F[o * so + c * sc] relative to neuron o0 (sc = 1: rows of
 * channels; otherwise so = 1, the channel-major parameter layout, read as
 * LANES x LANES blocks and transposed) */
static void rs_block_forward(float *y, const rs_cell *cell, const float *F, size_t so, size_t sc, int nb, int C)
{
    vf acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = (vf){0};
    if (sc == 1 && C % LANES == 0) { /* rows: neuron by neuron, its accumulator in a register */
        for (int j = 0; j < nb; j++) {
            const rs_cell *c = &cell[j];
            const float *f = F + j * so;
            vf a = {0};
            for (int c0 = 0; c0 < C; c0 += LANES) {
                vf s = {0};
                for (int k = 0; k < 4; k++)
                    if (c->tap[k]) s += c->wt[k] * rs_vld(c->tap[k] + c0);
                a += rs_vld(f + c0) * s;
            }
            acc[j] = a;
        }
        rs_transpose(acc);
        vf r = {0};
        for (int l = 0; l < LANES; l++) r += acc[l];
        for (int j = 0; j < nb; j++) y[j] += r[j];
        return;
    }
    for (int c0 = 0; c0 < C; c0 += LANES) {
        const int L = C - c0 < LANES ? C - c0 : LANES;
        vf f[LANES];
        if (sc == 1) {
            for (int j = 0; j < LANES; j++) {
                f[j] = (vf){0};
                if (j < nb) rs_load_to(&f[j], F + j * so + c0, L);
            }
        } else {
            /* L rows a whole parameter row apart: more streams than the hardware follows */
            for (int l = 0; l < L; l++) __builtin_prefetch(F + (size_t)(c0 + l) * sc + RS_PREFETCH * LANES);
            for (int l = 0; l < LANES; l++) {
                f[l] = (vf){0};
                if (l < L) rs_load_to(&f[l], F + (size_t)(c0 + l) * sc, nb);
            }
            rs_transpose(f);
        }
        if (L == LANES)
            for (int j = 0; j < nb; j++) {
                const rs_cell *c = &cell[j];
                vf s = {0};
                for (int k = 0; k < 4; k++)
                    if (c->tap[k]) s += c->wt[k] * rs_vld(c->tap[k] + c0);
                acc[j] += f[j] * s;
            }
        else
            for (int j = 0; j < nb; j++) {
                const rs_cell *c = &cell[j];
                vf s = {0};
                for (int k = 0; k < 4; k++)
                    if (c->tap[k]) {
                        vf t;
                        rs_load_to(&t, c->tap[k] + c0, L);
                        s += c->wt[k] * t;
                    }
                acc[j] += f[j] * s;
            }
    }
    rs_transpose(acc);
    vf r = {0};
    for (int l = 0; l < LANES; l++) r += acc[l];
    for (int j = 0; j < nb; j++) y[j] += r[j];
}

/* Where the cells of a kernel call come from: the grid (formed per block of
 * LANES), or cells made once by npred_rsample_cells (key, frac) */
typedef struct {
    const float *grid;
    const uint32_t *key;
    const float *frac;
} rs_src;

/* the cell of packed key and distances (w, n): npred_gs_cell_at's values */
static inline void rs_cell_packed(rs_cell *c, const float *feat, uint32_t key, float w, float n, int W, int C)
{
    const long base = (long)(key >> 4) - W - 1;
    const long d[4] = {0, 1, W, (long)W + 1};
    c->w = w, c->e = 1.0f - w;
    c->n = n, c->s = 1.0f - n;
    c->wt[0] = c->s * c->e;
    c->wt[1] = c->s * c->w;
    c->wt[2] = c->n * c->e;
    c->wt[3] = c->n * c->w;
    for (int k = 0; k < 4; k++) {
        const int in = key >> k & 1;
        c->off[k] = in ? (size_t)(base + d[k]) * (size_t)C : 0;
        c->tap[k] = in ? feat + c->off[k] : NULL;
    }
}

/* the cells of the nb consecutive points p0.. of one image and a prefetch of
 * their tap rows in img, and in dimg (to be written) when given */
static int rs_cells(rs_cell *cell, const float *img, const rs_src *src, size_t p0, int nb, const float *dimg, int H,
                    int W, int C, float sx, float sy, int align_corners)
{
    for (int j = 0; j < nb; j++) {
        const size_t p = p0 + (size_t)j;
        if (src->key)
            rs_cell_packed(&cell[j], img, src->key[p], src->frac[2 * p], src->frac[2 * p + 1], W, C);
        else
            rs_cell_at(&cell[j], img, src->grid[2 * p], src->grid[2 * p + 1], sx, sy, H, W, C, align_corners);
        for (int k = 0; k < 4; k++)
            if (cell[j].tap[k])
                for (int c = 0; c < C; c += 64 / (int)sizeof(float)) {
                    __builtin_prefetch(cell[j].tap[k] + c);
                    if (dimg) __builtin_prefetch(dimg + cell[j].off[k] + c, 1);
                }
    }
    return nb;
}

/* the cells of forward block q (image q / nblk) */
static int rs_block_cells(rs_cell *cell, long q, int nblk, const float *feat, const rs_src *src, int n, int H, int W,
                          int C, float sx, float sy, int align_corners)
{
    long b = q / nblk;
    int o0 = (int)(q % nblk) * LANES, nb = n - o0 < LANES ? n - o0 : LANES;
    return rs_cells(cell, feat + (size_t)b * H * W * C, src, (size_t)b * n + o0, nb, NULL, H, W, C, sx, sy,
                    align_corners);
}

#if defined(__AVX512F__)
/* npred_rsample_cells for the points [0, count - count % 16), sixteen at a time: the
 * same float operations (the unnormalising fma, floor by rounding toward -inf, the
 * distances, the ordered comparisons that are false for NaN), and the nw corner's
 * index written as (floor(py) + 1) W + floor(px) + 1, which is what the scalar code's
 * first inside corner gives (each corner's offset differs from it by what it adds
 * back); 0 when no corner lies inside */
static size_t rs_cells16(uint32_t *key, float *frac, const float *grid, size_t count, int H, int W,
                         int align_corners, float sx, float sy)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(-0.5f), zero = _mm512_setzero_ps();
    const __m512 m1 = _mm512_set1_ps(-1.0f), vsx = _mm512_set1_ps(sx), vsy = _mm512_set1_ps(sy);
    const __m512 wm1 = _mm512_set1_ps((float)(W - 1)), wm2 = _mm512_set1_ps((float)(W - 2));
    const __m512 hm1 = _mm512_set1_ps((float)(H - 1)), hm2 = _mm512_set1_ps((float)(H - 2));
    const __m512i vw = _mm512_set1_epi32(W), i1 = _mm512_set1_epi32(1);
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const __m512 a = _mm512_loadu_ps(grid + 2 * i), b = _mm512_loadu_ps(grid + 2 * i + 16);
        const __m512 gx = _mm512_permutex2var_ps(a, ev, b), gy = _mm512_permutex2var_ps(a, od, b);
        const __m512 px = align_corners ? _mm512_mul_ps(_mm512_add_ps(gx, one), vsx)
                                        : _mm512_fmadd_ps(_mm512_add_ps(gx, one), vsx, half);
        const __m512 py = align_corners ? _mm512_mul_ps(_mm512_add_ps(gy, one), vsy)
                                        : _mm512_fmadd_ps(_mm512_add_ps(gy, one), vsy, half);
        const __m512 xw = _mm512_roundscale_ps(px, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512 yn = _mm512_roundscale_ps(py, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        const __m512 w = _mm512_sub_ps(px, xw), n = _mm512_sub_ps(py, yn);
        const __mmask16 w_in = _mm512_cmp_ps_mask(xw, zero, _CMP_GE_OQ) & _mm512_cmp_ps_mask(xw, wm1, _CMP_LE_OQ);
        const __mmask16 e_in = _mm512_cmp_ps_mask(xw, m1, _CMP_GE_OQ) & _mm512_cmp_ps_mask(xw, wm2, _CMP_LE_OQ);
        const __mmask16 n_in = _mm512_cmp_ps_mask(yn, zero, _CMP_GE_OQ) & _mm512_cmp_ps_mask(yn, hm1, _CMP_LE_OQ);
        const __mmask16 s_in = _mm512_cmp_ps_mask(yn, m1, _CMP_GE_OQ) & _mm512_cmp_ps_mask(yn, hm2, _CMP_LE_OQ);
        const __mmask16 c0 = w_in & n_in, c1 = e_in & n_in, c2 = w_in & s_in, c3 = e_in & s_in;
        const __mmask16 any = c0 | c1 | c2 | c3;
        /* the floors lie in [-1, W - 1] and [-1, H - 1] wherever a corner is inside */
        const __m512i x0 = _mm512_maskz_cvttps_epi32(any, xw), y0 = _mm512_maskz_cvttps_epi32(any, yn);
        __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(y0, i1), vw), _mm512_add_epi32(x0, i1));
        at = _mm512_maskz_mov_epi32(any, at);
        __m512i bits = _mm512_maskz_mov_epi32(c0, i1);
        bits = _mm512_or_epi32(bits, _mm512_maskz_mov_epi32(c1, _mm512_set1_epi32(2)));
        bits = _mm512_or_epi32(bits, _mm512_maskz_mov_epi32(c2, _mm512_set1_epi32(4)));
        bits = _mm512_or_epi32(bits, _mm512_maskz_mov_epi32(c3, _mm512_set1_epi32(8)));
        _mm512_storeu_si512(key + i, _mm512_or_epi32(_mm512_slli_epi32(at, 4), bits));
        _mm512_storeu_ps(frac + 2 * i, _mm512_permutex2var_ps(w, lo, n));
        _mm512_storeu_ps(frac + 2 * i + 16, _mm512_permutex2var_ps(w, hi, n));
    }
    return i;
}
#endif

int npred_rsample_cells(uint32_t *key, float *frac, const float *grid, size_t count, int H, int W, int align_corners)
{
    if (!npred_rsample_cells_fit(H, W)) return 0;
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    size_t i = 0;
#if defined(__AVX512F__)
    i = rs_cells16(key, frac, grid, count, H, W, align_corners, sx, sy);
#endif
    for (; i < count; i++) {
        npred_gs_cell g;
        npred_gs_cell_at(&g, npred_gs_unnormalize(grid[2 * i], sx, align_corners),
                         npred_gs_unnormalize(grid[2 * i + 1], sy, align_corners), H, W);
        /* the nw corner: offset W + 1 from its pixel (>= 0: the corner lies at row, column >= -1) */
        size_t at = g.in[0] ? g.off[0] + (size_t)W + 1 : g.in[1] ? g.off[1] + (size_t)W
                  : g.in[2] ? g.off[2] + 1 : g.in[3] ? g.off[3] : 0;
        key[i] = (uint32_t)at << 4 | (uint32_t)(g.in[0] | g.in[1] << 1 | g.in[2] << 2 | g.in[3] << 3);
        frac[2 * i] = g.w;
        frac[2 * i + 1] = g.n;
    }
    return 1;
}

/* The weights of a packed cell (key, distances w, n): rs_cell_packed's */
#define RS_PACKED_WEIGHTS(w_, n_)                                                                                      \
    const float e_ = 1.0f - (w_), s_ = 1.0f - (n_);                                                                   \
    const float wt0 = s_ * e_, wt1 = s_ * (w_), wt2 = (n_) * e_, wt3 = (n_) * (w_)

/* rs_block_forward for rows (sc = 1), C a multiple of LANES and packed cells,
 * the cells read where they are used (the same operations and order): key, frac
 * are the block's, img its image */
static void rs_block_forward_packed(float *y, const float *img, const uint32_t *key, const float *frac, const float *F,
                                    size_t so, int nb, int W, int C)
{
    vf acc[LANES];
    for (int j = nb; j < LANES; j++) acc[j] = (vf){0};
    const long dn = (long)W * C;
    for (int j = 0; j < nb; j++) {
        const uint32_t k = key[j];
        RS_PACKED_WEIGHTS(frac[2 * j], frac[2 * j + 1]);
        /* the nw tap's offset (negative when it lies outside: the pointers are
         * formed only for the taps inside) */
        const long o0 = ((long)(k >> 4) - W - 1) * C;
        const float *f = F + j * so;
        vf a = {0};
        if ((k & 15) == 15) {
            const float *t0 = img + o0, *t1 = t0 + C, *t2 = t0 + dn, *t3 = t2 + C;
            for (int c0 = 0; c0 < C; c0 += LANES) {
                vf v = {0};
                v += wt0 * rs_vld(t0 + c0);
                v += wt1 * rs_vld(t1 + c0);
                v += wt2 * rs_vld(t2 + c0);
                v += wt3 * rs_vld(t3 + c0);
                a += rs_vld(f + c0) * v;
            }
        } else {
            for (int c0 = 0; c0 < C; c0 += LANES) {
                vf v = {0};
                if (k & 1) v += wt0 * rs_vld(img + o0 + c0);
                if (k & 2) v += wt1 * rs_vld(img + (o0 + C + c0));
                if (k & 4) v += wt2 * rs_vld(img + (o0 + dn + c0));
                if (k & 8) v += wt3 * rs_vld(img + (o0 + dn + C + c0));
                a += rs_vld(f + c0) * v;
            }
        }
        acc[j] = a;
    }
    rs_transpose(acc);
    vf r = {0};
    for (int l = 0; l < LANES; l++) r += acc[l];
    for (int j = 0; j < nb; j++) y[j] += r[j];
}

/* the forward blocks [q0, q1) (image-major): packed cells read in place (rows, C a
 * multiple of LANES); otherwise the next block's cells are formed, their taps
 * prefetched, before the current one is computed */
static void rs_forward_blocks(float *y, const float *feat, const rs_src *src, const float *F, size_t so, size_t sc,
                              long q0, long q1, int nblk, int H, int W, int C, int n, float sx, float sy,
                              int align_corners)
{
    if (src->key && sc == 1 && C % LANES == 0) {
        for (long q = q0; q < q1; q++) {
            const long b = q / nblk;
            const int o0 = (int)(q % nblk) * LANES, nb = n - o0 < LANES ? n - o0 : LANES;
            const size_t p = (size_t)b * n + o0;
            rs_block_forward_packed(y + p, feat + (size_t)b * H * W * C, src->key + p, src->frac + 2 * p,
                                    F + (size_t)o0 * so, so, nb, W, C);
        }
        return;
    }
    rs_cell cell[2][LANES];
    int nb = q0 < q1 ? rs_block_cells(cell[0], q0, nblk, feat, src, n, H, W, C, sx, sy, align_corners) : 0;
    for (long q = q0; q < q1; q++) {
        int cur = (int)((q - q0) & 1), nbn = 0;
        if (q + 1 < q1) nbn = rs_block_cells(cell[!cur], q + 1, nblk, feat, src, n, H, W, C, sx, sy, align_corners);
        long b = q / nblk;
        int o0 = (int)(q % nblk) * LANES;
        rs_block_forward(y + (size_t)b * n + o0, cell[cur], F + (size_t)o0 * so, so, sc, nb, C);
        nb = nbn;
    }
}

/* x (B, C, H*W) given: feat is written, image b = x[b] channels-last. Each
 * thread then transposes whole images and samples each one right after, while it
 * is in its cache (when the images split evenly enough between the threads;
 * otherwise all are transposed first) */
static void rs_forward(float *y, float *feat, const float *x, const rs_src *src, const float *F, size_t so, size_t sc,
                       int B, int H, int W, int C, int n, int align_corners)
{
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const int nblk = (n + LANES - 1) / LANES;
    const long total = (long)B * nblk;
    const int par = (double)B * n * C >= NPRED_RS_PAR_MIN, T = par ? omp_get_max_threads() : 1;
    const size_t img = (size_t)H * W * C;
    if (x && (B % T == 0 || B >= 8 * T)) {
#pragma omp parallel if (par)
        {
            const int Tn = omp_get_num_threads(), id = omp_get_thread_num();
            const int b0 = (int)((long)B * id / Tn), b1 = (int)((long)B * (id + 1) / Tn);
            for (int b = b0; b < b1; b++) {
                for (int c0 = 0; c0 < C; c0 += LANES)
                    rs_to_nhwc_image(feat + (size_t)b * img, x + (size_t)b * img, C, H * W, c0);
                rs_forward_blocks(y, feat, src, F, so, sc, (long)b * nblk, (long)(b + 1) * nblk, nblk, H, W, C, n,
                                  sx, sy, align_corners);
            }
        }
        return;
    }
    if (x) npred_rsample_to_nhwc(feat, x, B, C, H * W);
#pragma omp parallel if (par)
    {
        const int Tn = omp_get_num_threads(), id = omp_get_thread_num();
        rs_forward_blocks(y, feat, src, F, so, sc, total * id / Tn, total * (id + 1) / Tn, nblk, H, W, C, n, sx, sy,
                          align_corners);
    }
}

void npred_rsample_forward(float *y, const float *feat, const float *grid, const float *F, size_t so, size_t sc,
                           int B, int H, int W, int C, int n, int align_corners)
{
    const rs_src src = {grid, NULL, NULL};
    rs_forward(y, (float *)feat, NULL, &src, F, so, sc, B, H, W, C, n, align_corners);
}

void npred_rsample_forward_cells(float *y, const float *feat, const uint32_t *key, const float *frac, const float *F,
                                 size_t so, size_t sc, int B, int H, int W, int C, int n)
{
    const rs_src src = {NULL, key, frac};
    rs_forward(y, (float *)feat, NULL, &src, F, so, sc, B, H, W, C, n, 0);
}

void npred_rsample_forward_cells_nchw(float *y, float *feat, const float *x, const uint32_t *key, const float *frac,
                                      const float *F, size_t so, size_t sc, int B, int H, int W, int C, int n)
{
    const rs_src src = {NULL, key, frac};
    rs_forward(y, feat, x, &src, F, so, sc, B, H, W, C, n, 0);
}

/* acc[k] lane l = sum of F . tap[k] over the channels l, l+LANES, ... (zero for a
 * tap outside the map); when dtap is given, dtap[k] += (g * wt[k]) * F for the
 * inside taps; when df is given, df += g * sample (rs_sample_accumulate's
 * operations, on the tap rows loaded once for both) */
static inline void rs_taps_backward(vf acc[4], float *const dtap[4], float *df, const rs_cell *c, const float *f,
                                    float g, int C)
{
    float gw[4];
    for (int k = 0; k < 4; k++) {
        gw[k] = g * c->wt[k];
        acc[k] = (vf){0};
    }
    int c0 = 0;
    for (; c0 + LANES <= C; c0 += LANES) {
        vf fc = rs_vld(f + c0), s = {0};
        for (int k = 0; k < 4; k++) {
            if (!c->tap[k]) continue;
            vf t = rs_vld(c->tap[k] + c0);
            acc[k] += fc * t;
            s += c->wt[k] * t;
            if (dtap[k]) {
                vf d = rs_vld(dtap[k] + c0);
                d += gw[k] * fc;
                memcpy(dtap[k] + c0, &d, sizeof d);
            }
        }
        if (df) {
            vf d = rs_vld(df + c0);
            d += g * s;
            memcpy(df + c0, &d, sizeof d);
        }
    }
    if (c0 == C) return;
    /* the last C - c0 channels: zeros after them add +0 to the lanes */
    vf fc;
    rs_load_to(&fc, f + c0, C - c0);
    for (int k = 0; k < 4; k++) {
        if (!c->tap[k]) continue;
        vf t;
        rs_load_to(&t, c->tap[k] + c0, C - c0);
        acc[k] += fc * t;
        if (dtap[k])
            for (int l = 0; c0 + l < C; l++) dtap[k][c0 + l] += gw[k] * f[c0 + l];
    }
    if (df) {
        float sm[LANES];
        rs_mix(sm, c, c0, C - c0);
        for (int l = 0; c0 + l < C; l++) df[c0 + l] += g * sm[l];
    }
}

/* df += g * sample */
static inline void rs_sample_accumulate(float *df, const rs_cell *c, float g, int C)
{
    int c0 = 0;
    for (; c0 + LANES <= C; c0 += LANES) {
        vf s = {0};
        for (int k = 0; k < 4; k++)
            if (c->tap[k]) s += c->wt[k] * rs_vld(c->tap[k] + c0);
        vf d = rs_vld(df + c0);
        d += g * s;
        memcpy(df + c0, &d, sizeof d);
    }
    if (c0 < C) {
        float s[LANES];
        rs_mix(s, c, c0, C - c0);
        for (int l = 0; l < C - c0; l++) df[c0 + l] += g * s[l];
    }
}

/* the grid gradients of a block from the lanes of its four dot products per
 * neuron (acc[tap][neuron], the neurons past nb are set to zero here), the
 * distances (w, n) of each neuron's cell in wn: the LANES x LANES lanes of a tap
 * are transposed so that they are summed in order 0..LANES-1 for all the block's
 * neurons at once */
static void rs_block_dgrid(float *dgrid, vf acc[4][LANES], const float *wn, const float *dy, int nb, float sx,
                           float sy)
{
    for (int j = nb; j < LANES; j++)
        for (int k = 0; k < 4; k++) acc[k][j] = (vf){0};
    vf v[4];
    for (int k = 0; k < 4; k++) {
        rs_transpose(acc[k]);
        v[k] = (vf){0};
        for (int l = 0; l < LANES; l++) v[k] += acc[k][l];
    }
    for (int j = 0; j < nb; j++) {
        const float w = wn[2 * j], n = wn[2 * j + 1], e = 1.0f - w, s = 1.0f - n;
        float gx = (v[1][j] - v[0][j]) * s + (v[3][j] - v[2][j]) * n;
        float gy = (v[2][j] - v[0][j]) * e + (v[3][j] - v[1][j]) * w;
        dgrid[2 * j] += dy[j] * gx * sx;
        dgrid[2 * j + 1] += dy[j] * gy * sy;
    }
}

/* one block of nb <= LANES neurons of one image: the dfeat scatter (and the dF
 * rows' terms of the image, when dF is given) neuron after neuron, then the grid
 * gradients of the block; the four
 * dot products of each neuron keep their lanes, and the LANES x LANES lanes of a
 * tap are transposed so that they are summed in order 0..LANES-1 for all the
 * block's neurons at once */
static void rs_block_backward(float *dim, float *dgrid, float *dF, const rs_cell *cell, const float *dy,
                              const float *F, int ldf, int nb, int C, float sx, float sy)
{
    vf acc[4][LANES];
    for (int j = 0; j < nb; j++) {
        const rs_cell *c = &cell[j];
        float *dtap[4] = {NULL, NULL, NULL, NULL};
        if (dim)
            for (int k = 0; k < 4; k++)
                if (c->tap[k]) dtap[k] = dim + c->off[k];
        vf a[4];
        rs_taps_backward(a, dtap, dF ? dF + (size_t)j * ldf : NULL, c, F + (size_t)j * ldf, dy[j], C);
        for (int k = 0; k < 4; k++) acc[k][j] = a[k];
    }
    if (!dgrid) return;
    float wn[2 * LANES];
    for (int j = 0; j < nb; j++) wn[2 * j] = cell[j].w, wn[2 * j + 1] = cell[j].n;
    rs_block_dgrid(dgrid, acc, wn, dy, nb, sx, sy);
}

/* rs_block_backward for packed cells and C a multiple of LANES (the same
 * operations in the same order), the cells read where they are used: key, frac,
 * dy, dgrid are the block's, im / dim its image and gradient (dim may be NULL,
 * as may dgrid and dF) */
static void rs_block_backward_packed(float *dim, float *dgrid, float *dF, const float *im, const uint32_t *key,
                                     const float *frac, const float *dy, const float *F, int ldf, int nb, int W, int C,
                                     float sx, float sy)
{
    vf acc[4][LANES];
    const long dn = (long)W * C, d[4] = {0, C, dn, dn + C};
    for (int j = 0; j < nb; j++) {
        const uint32_t k = key[j];
        RS_PACKED_WEIGHTS(frac[2 * j], frac[2 * j + 1]);
        const long o0 = ((long)(k >> 4) - W - 1) * C;
        const float *f = F + (size_t)j * ldf;
        float *df = dF ? dF + (size_t)j * ldf : NULL;
        const float g = dy[j];
        vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        if ((k & 15) == 15 && dim && df) {
            const float g0 = g * wt0, g1 = g * wt1, g2 = g * wt2, g3 = g * wt3;
            const float *t0 = im + o0, *t1 = t0 + C, *t2 = t0 + dn, *t3 = t2 + C;
            float *d0 = dim + o0, *d1 = d0 + C, *d2 = d0 + dn, *d3 = d2 + C;
            for (int c0 = 0; c0 < C; c0 += LANES) {
                const vf fc = rs_vld(f + c0), x0 = rs_vld(t0 + c0), x1 = rs_vld(t1 + c0), x2 = rs_vld(t2 + c0),
                         x3 = rs_vld(t3 + c0);
                vf v = {0};
                a0 += fc * x0;
                v += wt0 * x0;
                a1 += fc * x1;
                v += wt1 * x1;
                a2 += fc * x2;
                v += wt2 * x2;
                a3 += fc * x3;
                v += wt3 * x3;
                vf e = rs_vld(d0 + c0);
                e += g0 * fc;
                memcpy(d0 + c0, &e, sizeof e);
                e = rs_vld(d1 + c0);
                e += g1 * fc;
                memcpy(d1 + c0, &e, sizeof e);
                e = rs_vld(d2 + c0);
                e += g2 * fc;
                memcpy(d2 + c0, &e, sizeof e);
                e = rs_vld(d3 + c0);
                e += g3 * fc;
                memcpy(d3 + c0, &e, sizeof e);
                e = rs_vld(df + c0);
                e += g * v;
                memcpy(df + c0, &e, sizeof e);
            }
        } else {
            const float wt[4] = {wt0, wt1, wt2, wt3};
            for (int c0 = 0; c0 < C; c0 += LANES) {
                const vf fc = rs_vld(f + c0);
                vf v = {0}, a[4] = {a0, a1, a2, a3};
                for (int q = 0; q < 4; q++) {
                    if (!(k >> q & 1)) continue;
                    const vf x = rs_vld(im + (o0 + d[q] + c0));
                    a[q] += fc * x;
                    v += wt[q] * x;
                    if (dim) {
                        vf e = rs_vld(dim + (o0 + d[q] + c0));
                        e += (g * wt[q]) * fc;
                        memcpy(dim + (o0 + d[q] + c0), &e, sizeof e);
                    }
                }
                a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
                if (df) {
                    vf e = rs_vld(df + c0);
                    e += g * v;
                    memcpy(df + c0, &e, sizeof e);
                }
            }
        }
        acc[0][j] = a0, acc[1][j] = a1, acc[2][j] = a2, acc[3][j] = a3;
    }
    if (dgrid) rs_block_dgrid(dgrid, acc, frac, dy, nb, sx, sy);
}

/* the blocks [q0, q1) of image b (points pb..): cells formed a block ahead */
static void rs_image_backward(float *dim, float *dgrid, float *dF, const float *dy, const float *im, const rs_src *src,
                              size_t pb, const float *F, int ldf, int q0, int q1, int H, int W, int C, int n, float sx,
                              float sy, int align_corners)
{
    if (src->key && C % LANES == 0) {
        for (int q = q0; q < q1; q++) {
            const int o0 = q * LANES, nb = n - o0 < LANES ? n - o0 : LANES;
            const size_t p = pb + (size_t)o0;
            rs_block_backward_packed(dim, dgrid ? dgrid + 2 * p : NULL, dF ? dF + (size_t)o0 * ldf : NULL, im,
                                     src->key + p, src->frac + 2 * p, dy + p, F + (size_t)o0 * ldf, ldf, nb, W, C, sx,
                                     sy);
        }
        return;
    }
    rs_cell cell[2][LANES];
#define RS_NB(q) (n - (q) * LANES < LANES ? n - (q) * LANES : LANES)
    int nb = q0 < q1 ? rs_cells(cell[0], im, src, pb + (size_t)q0 * LANES, RS_NB(q0), dim, H, W, C, sx, sy,
                                align_corners)
                     : 0;
    for (int q = q0; q < q1; q++) { /* the next block's cells (and taps) while this one runs */
        const int o0 = q * LANES, cur = (q - q0) & 1;
        int nbn = q + 1 < q1 ? rs_cells(cell[!cur], im, src, pb + o0 + LANES, RS_NB(q + 1), dim, H, W, C, sx, sy,
                                        align_corners)
                             : 0;
        rs_block_backward(dim, dgrid ? dgrid + 2 * (pb + o0) : NULL, dF ? dF + (size_t)o0 * ldf : NULL, cell[cur],
                          dy + pb + o0, F + (size_t)o0 * ldf, ldf, nb, C, sx, sy);
        nb = nbn;
    }
#undef RS_NB
}

/* the fused backward's pipeline: at most this many threads (more are not used),
 * each thread's count of finished images on its own cache line */
#define RS_MAX_PIPE 64
#define RS_PIPE_STRIDE 16

/* wait until *count >= want (spinning with pause, then yielding the core) */
static void rs_wait_count(const int *count, int want)
{
    for (long spin = 0; __atomic_load_n(count, __ATOMIC_ACQUIRE) < want; spin++) {
        if (spin < 4096) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* image a of dx (B, C, HW) (+)= image a of dfeat (B, HW, C) transposed, the channel
 * blocks [k0, k1) (set: written) */
static void rs_add_nchw_share(float *dx, const float *dfeat, int a, size_t img, int C, int HW, int k0, int k1,
                              int set)
{
    for (int k = k0; k < k1; k++)
        if (set) rs_add_nchw_image(dx + (size_t)a * img, dfeat + (size_t)a * img, C, HW, k * LANES, 1);
        else rs_add_nchw_image(dx + (size_t)a * img, dfeat + (size_t)a * img, C, HW, k * LANES, 0);
}

static void rs_nchw(float *out, const float *in, int N, int C, int HW, int set);

/* dx (B, C, H*W) given: dfeat is scratch (zeroed here) and dx += dfeat transposed
 * (dx_set: dx = +0 + dfeat transposed, dx not read) */
static void rs_backward(float *dx, float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                        const rs_src *src, const float *F, int ldf, int B, int H, int W, int C, int n,
                        int align_corners, int dx_set)
{
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const size_t img = (size_t)H * W * C;
    const int nblk = (n + LANES - 1) / LANES;
    if (dF && (dfeat || dgrid)) {
        /* one pass for all three, image after image, neurons in order inside an image:
         * the order of every sum of the two passes below. On T threads thread t owns
         * the t-th of T ranges of neuron blocks (its dF rows and grid gradients) and
         * takes image b at step b + t: an image's dfeat rows get the neurons of range
         * 0 first, then (one step and a barrier later) those of range 1, ..., and each
         * dF row sums its images in order, so every sum is the one-thread sum.
         * Only this order is enforced, thread to thread: thread t waits before image b
         * until thread t - 1 has finished it (its count of finished images, published
         * with release / read with acquire), and never for thread t + 1. There is no
         * barrier per image, so a thread that the system deschedules on a busy machine
         * holds up only the threads behind it, and only once they have caught up. */
        int done[RS_MAX_PIPE * RS_PIPE_STRIDE];
        memset(done, 0, sizeof done);
        const int T = omp_get_max_threads() < RS_MAX_PIPE ? omp_get_max_threads() : RS_MAX_PIPE;
#pragma omp parallel num_threads(T) if ((double)B * n * C >= NPRED_RS_PAR_MIN)
        {
            const int Tn = omp_get_num_threads(), id = omp_get_thread_num();
            const int q0 = (int)((long)nblk * id / Tn), q1 = (int)((long)nblk * (id + 1) / Tn);
            int *mine = &done[id * RS_PIPE_STRIDE];
            const int *before = id > 0 ? &done[(id - 1) * RS_PIPE_STRIDE] : NULL;
            const int *last = &done[(Tn - 1) * RS_PIPE_STRIDE];
            /* with dx: thread 0 zeroes image b's dfeat just before its scatter, and each
             * thread adds its share of the channel blocks of an image into dx once the
             * last thread has finished that image (every thread's scatter into it then
             * happened before: release / acquire, thread to thread). Between its images
             * a thread adds only the images already finished, without waiting: a thread
             * never waits for one behind it until its own images are done. */
            const int nc = (C + LANES - 1) / LANES, k0 = nc * id / Tn, k1 = nc * (id + 1) / Tn;
            int added = dx && k0 < k1 ? 0 : B; /* images whose share this thread has added */
            for (int b = 0; b < B; b++) {
                if (before) rs_wait_count(before, b + 1);
                if (dx && id == 0) memset(dfeat + (size_t)b * img, 0, img * sizeof(float));
                rs_image_backward(dfeat ? dfeat + (size_t)b * img : NULL, dgrid, dF, dy, feat + (size_t)b * img, src,
                                  (size_t)b * n, F, ldf, q0, q1, H, W, C, n, sx, sy, align_corners);
                __atomic_store_n(mine, b + 1, __ATOMIC_RELEASE);
                for (; added < B && __atomic_load_n(last, __ATOMIC_ACQUIRE) > added; added++)
                    rs_add_nchw_share(dx, dfeat, added, img, C, H * W, k0, k1, dx_set);
            }
            for (; added < B; added++) {
                rs_wait_count(last, added + 1);
                rs_add_nchw_share(dx, dfeat, added, img, C, H * W, k0, k1, dx_set);
            }
        }
        return;
    }
    if (dx) {
#pragma omp parallel for schedule(static) if ((double)B * img >= NPRED_RS_PAR_MIN)
        for (int b = 0; b < B; b++) memset(dfeat + (size_t)b * img, 0, img * sizeof(float));
    }
    if (dfeat || dgrid) { /* pass 1: one image per thread (its dfeat and dgrid rows are its own) */
#pragma omp parallel for schedule(static) if ((double)B * n * C >= NPRED_RS_PAR_MIN)
        for (int b = 0; b < B; b++)
            rs_image_backward(dfeat ? dfeat + (size_t)b * img : NULL, dgrid, NULL, dy, feat + (size_t)b * img, src,
                              (size_t)b * n, F, ldf, 0, nblk, H, W, C, n, sx, sy, align_corners);
    }
    if (!dF) {
        if (dx) rs_nchw(dx, dfeat, B, C, H * W, dx_set);
        return;
    }
    /* pass 2: tiles of consecutive neurons, one tile per thread at a time; images
     * inside a tile and the tile's neurons innermost, so an image is read once per
     * tile (not once per neuron) while the tile's dF rows stay in cache. Each dF row
     * is one thread's and sums its images in order 0..B-1 whatever the tiling or
     * the thread count. */
    int ntiles = (n + RS_TILE - 1) / RS_TILE, T = omp_get_max_threads();
    if (T > 1) ntiles = (ntiles + T - 1) / T * T; /* balanced */
    if (ntiles > n) ntiles = n;
    const int per = (n + ntiles - 1) / ntiles;
#pragma omp parallel for schedule(static) if ((double)B * n * C >= NPRED_RS_PAR_MIN)
    for (int tile = 0; tile < ntiles; tile++) {
        const int o0 = tile * per, o1 = o0 + per < n ? o0 + per : n;
        if (o0 >= o1) continue;
        /* blocks of LANES neurons of the tile, image after image; the next block's
         * cells (and taps) are formed while this one runs */
        const int tb = (o1 - o0 + LANES - 1) / LANES;
        const long nq = (long)B * tb;
        rs_cell cell[2][LANES];
#define RS_TILE_BLOCK(q, b_, os_, nb_)                                                                                 \
    const int b_ = (int)((q) / tb), os_ = o0 + (int)((q) % tb) * LANES;                                                \
    const int nb_ = o1 - os_ < LANES ? o1 - os_ : LANES
        int nb;
        {
            RS_TILE_BLOCK(0, b, os, nbq);
            nb = rs_cells(cell[0], feat + (size_t)b * img, src, (size_t)b * n + os, nbq, NULL, H, W, C, sx, sy,
                          align_corners);
        }
        for (long q = 0; q < nq; q++) {
            const int cur = (int)(q & 1);
            int nbn = 0;
            if (q + 1 < nq) {
                RS_TILE_BLOCK(q + 1, b, os, nbq);
                nbn = rs_cells(cell[!cur], feat + (size_t)b * img, src, (size_t)b * n + os, nbq, NULL, H, W, C, sx,
                               sy, align_corners);
            }
            RS_TILE_BLOCK(q, b, os, nbq);
            (void)nbq;
            for (int j = 0; j < nb; j++)
                rs_sample_accumulate(dF + (size_t)(os + j) * ldf, &cell[cur][j], dy[(size_t)b * n + os + j], C);
            nb = nbn;
        }
#undef RS_TILE_BLOCK
    }
    if (dx) rs_nchw(dx, dfeat, B, C, H * W, dx_set);
}

void npred_rsample_backward(float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                            const float *grid, const float *F, int ldf, int B, int H, int W, int C, int n,
                            int align_corners)
{
    const rs_src src = {grid, NULL, NULL};
    rs_backward(NULL, dfeat, dgrid, dF, dy, feat, &src, F, ldf, B, H, W, C, n, align_corners, 0);
}

void npred_rsample_backward_cells(float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                                  const uint32_t *key, const float *frac, const float *F, int ldf, int B, int H, int W,
                                  int C, int n, int align_corners)
{
    const rs_src src = {NULL, key, frac};
    rs_backward(NULL, dfeat, dgrid, dF, dy, feat, &src, F, ldf, B, H, W, C, n, align_corners, 0);
}

void npred_rsample_backward_cells_nchw(float *dx, float *dfeat, float *dgrid, float *dF, const float *dy,
                                       const float *feat, const uint32_t *key, const float *frac, const float *F,
                                       int ldf, int B, int H, int W, int C, int n, int align_corners, int dx_set)
{
    const rs_src src = {NULL, key, frac};
    rs_backward(dx, dx ? dfeat : NULL, dgrid, dF, dy, feat, &src, F, ldf, B, H, W, C, n, align_corners, dx_set);
}

void npred_rsample_to_nhwc(float *out, const float *in, int N, int C, int HW)
{
    const int nc = (C + LANES - 1) / LANES;
#pragma omp parallel for collapse(2) schedule(static) if ((double)N * C * HW >= NPRED_RS_PAR_MIN)
    for (int b = 0; b < N; b++)
        for (int q = 0; q < nc; q++)
            rs_to_nhwc_image(out + (size_t)b * C * HW, in + (size_t)b * C * HW, C, HW, q * LANES);
}

static void rs_nchw(float *out, const float *in, int N, int C, int HW, int set)
{
    const int nc = (C + LANES - 1) / LANES;
#pragma omp parallel for collapse(2) schedule(static) if ((double)N * C * HW >= NPRED_RS_PAR_MIN)
    for (int b = 0; b < N; b++)
        for (int q = 0; q < nc; q++)
            rs_add_nchw_share(out, in, b, (size_t)C * HW, C, HW, q, q + 1, set);
}

void npred_rsample_add_nchw(float *out, const float *in, int N, int C, int HW) { rs_nchw(out, in, N, C, HW, 0); }

void npred_rsample_set_nchw(float *out, const float *in, int N, int C, int HW) { rs_nchw(out, in, N, C, HW, 1); }
