/* 2-D convolution: parameter checks, naive reference, im2col + sgemm, dispatcher.
 * Depthwise kernels are in depthwise.c. Semantics and layouts: conv2d.h. */
#include "kernels/conv2d.h"
#include "base/threads.h"
#include "kernels/conv2d_internal.h"
#include "kernels/gemm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

npred_conv2d_params npred_conv2d_params_square(int n, int c, int h, int w, int o, int k,
                                               int stride, int pad, int dilation, int groups)
{
    npred_conv2d_params p = {
        .n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k,
        .stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad,
        .dil_h = dilation, .dil_w = dilation, .groups = groups,
    };
    return p;
}

npred_status npred_conv2d_output_size(const npred_conv2d_params *p, int *oh, int *ow)
{
    if (!p) return npred_errorf(NPRED_ERR_ARG, "conv2d: params is NULL");
    if (p->n <= 0 || p->c <= 0 || p->h <= 0 || p->w <= 0 || p->o <= 0)
        return npred_errorf(NPRED_ERR_ARG,
                            "conv2d: sizes must be positive, got N=%d C=%d H=%d W=%d O=%d",
                            p->n, p->c, p->h, p->w, p->o);
    if (p->kh <= 0 || p->kw <= 0)
        return npred_errorf(NPRED_ERR_ARG, "conv2d: kernel size must be positive, got %dx%d",
                            p->kh, p->kw);
    if (p->stride_h <= 0 || p->stride_w <= 0)
        return npred_errorf(NPRED_ERR_ARG, "conv2d: stride must be positive, got %dx%d",
                            p->stride_h, p->stride_w);
    if (p->dil_h <= 0 || p->dil_w <= 0)
        return npred_errorf(NPRED_ERR_ARG, "conv2d: dilation must be positive, got %dx%d",
                            p->dil_h, p->dil_w);
    if (p->pad_h < 0 || p->pad_w < 0)
        return npred_errorf(NPRED_ERR_ARG, "conv2d: padding must be >= 0, got %dx%d", p->pad_h,
                            p->pad_w);
    if (p->groups <= 0 || p->c % p->groups || p->o % p->groups)
        return npred_errorf(NPRED_ERR_ARG,
                            "conv2d: groups=%d must be positive and divide in_channels=%d and "
                            "out_channels=%d",
                            p->groups, p->c, p->o);
    /* keep every index product well inside int64 and size_t */
    int64_t lim = (int64_t)1 << 40;
    int64_t span_h = (int64_t)p->dil_h * (p->kh - 1) + 1, span_w = (int64_t)p->dil_w * (p->kw - 1) + 1;
    int64_t eh = (int64_t)p->h + 2 * (int64_t)p->pad_h - span_h;
    int64_t ew = (int64_t)p->w + 2 * (int64_t)p->pad_w - span_w;
    if (eh < 0 || ew < 0)
        return npred_errorf(NPRED_ERR_ARG,
                            "conv2d: kernel %dx%d (dilation %dx%d) larger than padded input "
                            "%dx%d (padding %dx%d)",
                            p->kh, p->kw, p->dil_h, p->dil_w, p->h, p->w, p->pad_h, p->pad_w);
    int64_t h_out = eh / p->stride_h + 1, w_out = ew / p->stride_w + 1;
    int64_t kk = (int64_t)p->kh * p->kw;
    if ((int64_t)p->n * p->c * p->h * p->w > lim || (int64_t)p->n * p->o * h_out * w_out > lim ||
        (int64_t)p->c * kk * h_out * w_out > lim || (int64_t)p->o * (p->c / p->groups) * kk > lim ||
        span_h > lim || span_w > lim)
        return npred_errorf(NPRED_ERR_ARG, "conv2d: sizes too large");
    if (oh) *oh = (int)h_out;
    if (ow) *ow = (int)w_out;
    return NPRED_OK;
}

int npred_conv2d_is_depthwise(const npred_conv2d_params *p)
{
    return p && p->groups > 1 && p->groups == p->c && p->o % p->c == 0;
}

npred_conv2d_algo npred_conv2d_choose_algo(const npred_conv2d_params *p)
{
    return npred_conv2d_is_depthwise(p) ? NPRED_CONV2D_ALGO_DEPTHWISE : NPRED_CONV2D_ALGO_GEMM;
}

int npred_conv2d_threads(size_t per_thread, size_t ws_bytes, int limit)
{
    int t = max_threads();
    if (limit < t) t = limit;
    if (t < 1) t = 1;
    if (per_thread == 0) return t;
    size_t fit = ws_bytes / per_thread;
    if (fit < (size_t)t) t = (int)fit;
    return t;
}

void npred_conv2d_bias_grad(float *db, const float *dy, int n, int o, size_t pixels)
{
#pragma omp parallel for schedule(static)
    for (int oc = 0; oc < o; oc++) {
        double s = 0;
        for (int b = 0; b < n; b++) {
            const float *d = dy + ((size_t)b * o + oc) * pixels;
            /* 16 independent lane sums (vectorisable without reassociation) */
            float lane[16] = {0};
            size_t i = 0;
            for (; i + 16 <= pixels; i += 16)
                for (int l = 0; l < 16; l++) lane[l] += d[i + l];
            for (; i < pixels; i++) lane[i % 16] += d[i];
            for (int l = 0; l < 16; l++) s += lane[l];
        }
        db[oc] += (float)s;
    }
}

/* ---------------------------------------------------------------- naive */

npred_status npred_conv2d_forward_naive(float *y, const float *x, const float *w, const float *b,
                                        const npred_conv2d_params *p)
{
    int oh, ow;
    npred_status s = npred_conv2d_output_size(p, &oh, &ow);
    if (s) return s;
    if (!y || !x || !w) return npred_errorf(NPRED_ERR_ARG, "conv2d forward: y, x and w are required");
    const int cg = p->c / p->groups, og = p->o / p->groups;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < p->n; n++)
        for (int o = 0; o < p->o; o++) {
            const int g = o / og;
            float *yp = y + ((size_t)n * p->o + o) * oh * ow;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double acc = b ? b[o] : 0.0;
                    for (int ci = 0; ci < cg; ci++) {
                        const float *xp = x + ((size_t)n * p->c + g * cg + ci) * p->h * p->w;
                        const float *wp = w + ((size_t)o * cg + ci) * p->kh * p->kw;
                        for (int ky = 0; ky < p->kh; ky++) {
                            int iy = oy * p->stride_h + ky * p->dil_h - p->pad_h;
                            if (iy < 0 || iy >= p->h) continue;
                            for (int kx = 0; kx < p->kw; kx++) {
                                int ix = ox * p->stride_w + kx * p->dil_w - p->pad_w;
                                if (ix < 0 || ix >= p->w) continue;
                                acc += (double)wp[ky * p->kw + kx] * xp[(size_t)iy * p->w + ix];
                            }
                        }
                    }
                    yp[(size_t)oy * ow + ox] = (float)acc;
                }
        }
    return NPRED_OK;
}

npred_status npred_conv2d_backward_naive(float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w,
                                         const npred_conv2d_params *p)
{
    int oh, ow;
    npred_status s = npred_conv2d_output_size(p, &oh, &ow);
    if (s) return s;
    if (!dy || (dw && !x) || (dx && !w))
        return npred_errorf(NPRED_ERR_ARG, "conv2d backward: dy, x (for dw) and w (for dx) are required");
    const int cg = p->c / p->groups, og = p->o / p->groups;
    const size_t nx = (size_t)p->n * p->c * p->h * p->w;
    const size_t nw = (size_t)p->o * cg * p->kh * p->kw;
    double *ax = dx ? calloc(nx, sizeof *ax) : NULL;
    double *aw = dw ? calloc(nw, sizeof *aw) : NULL;
    double *ab = db ? calloc((size_t)p->o, sizeof *ab) : NULL;
    if ((dx && !ax) || (dw && !aw) || (db && !ab)) {
        free(ax); free(aw); free(ab);
        return npred_errorf(NPRED_ERR_NOMEM, "conv2d backward (naive): out of memory");
    }
    for (int n = 0; n < p->n; n++)
        for (int o = 0; o < p->o; o++) {
            const int g = o / og;
            const float *dyp = dy + ((size_t)n * p->o + o) * oh * ow;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double d = dyp[(size_t)oy * ow + ox];
                    if (ab) ab[o] += d;
                    for (int ci = 0; ci < cg; ci++) {
                        size_t xoff = ((size_t)n * p->c + g * cg + ci) * p->h * p->w;
                        size_t woff = ((size_t)o * cg + ci) * p->kh * p->kw;
                        for (int ky = 0; ky < p->kh; ky++) {
                            int iy = oy * p->stride_h + ky * p->dil_h - p->pad_h;
                            if (iy < 0 || iy >= p->h) continue;
                            for (int kx = 0; kx < p->kw; kx++) {
                                int ix = ox * p->stride_w + kx * p->dil_w - p->pad_w;
                                if (ix < 0 || ix >= p->w) continue;
                                size_t xi = xoff + (size_t)iy * p->w + ix, wi = woff + ky * p->kw + kx;
                                if (aw) aw[wi] += d * x[xi];
                                if (ax) ax[xi] += d * w[wi];
                            }
                        }
                    }
                }
        }
    if (dx) for (size_t i = 0; i < nx; i++) dx[i] += (float)ax[i];
    if (dw) for (size_t i = 0; i < nw; i++) dw[i] += (float)aw[i];
    if (db) for (int i = 0; i < p->o; i++) db[i] += (float)ab[i];
    free(ax); free(aw); free(ab);
    return NPRED_OK;
}

/* ---------------------------------------------------------------- im2col + gemm */

/* Range [lo, hi) of output positions whose input coordinate o*stride + off lies
 * in [0, size). */
static void valid_range(int off, int stride, int size, int nout, int *lo, int *hi)
{
    int l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int h = off > size - 1 ? 0 : (size - 1 - off) / stride + 1;
    if (h > nout) h = nout;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* One output row r (ow columns) of an im2col row: xr[ox * stride] for ox in [xlo, xhi)
 * (xr already offset to the kernel tap), zeros outside. */
static inline void patch_row(float *r, const float *xr, int stride, int ow, int xlo, int xhi)
{
    for (int ox = 0; ox < xlo; ox++) r[ox] = 0;
    if (stride == 1)
        memcpy(r + xlo, xr + xlo, (size_t)(xhi - xlo) * sizeof *r);
    else
        for (int ox = xlo; ox < xhi; ox++) r[ox] = xr[(size_t)ox * stride];
    for (int ox = xhi; ox < ow; ox++) r[ox] = 0;
}

/* Rows r0 .. r1-1 of col (C*KH*KW, OH*OW), row r = (c*KH + ky)*KW + kx, <- patches
 * of x (C, H, W), zeros outside the input; col points to row r0. */
static void im2col_rows(float *col, const float *x, const npred_conv2d_params *p, int oh, int ow, int r0, int r1)
{
    const size_t opix = (size_t)oh * ow;
    const int kk = p->kh * p->kw;
    for (int rr = r0; rr < r1; rr++) {
        const int c = rr / kk, ky = rr % kk / p->kw, kx = rr % p->kw;
        float *row = col + (size_t)(rr - r0) * opix;
        const float *xc = x + (size_t)c * p->h * p->w;
        int offy = ky * p->dil_h - p->pad_h, offx = kx * p->dil_w - p->pad_w;
        int ylo, yhi, xlo, xhi;
        valid_range(offy, p->stride_h, p->h, oh, &ylo, &yhi);
        valid_range(offx, p->stride_w, p->w, ow, &xlo, &xhi);
        memset(row, 0, (size_t)ylo * ow * sizeof *row);
        for (int oy = ylo; oy < yhi; oy++) {
            float *r = row + (size_t)oy * ow;
            patch_row(r, xc + (size_t)(oy * p->stride_h + offy) * p->w + offx, p->stride_w, ow, xlo, xhi);
        }
        memset(row + (size_t)yhi * ow, 0, (size_t)(oh - yhi) * ow * sizeof *row);
    }
}

/* col (C*KH*KW, OH*OW) <- patches of x (C, H, W), zeros outside the input. */
static void im2col(float *col, const float *x, const npred_conv2d_params *p, int oh, int ow)
{
    im2col_rows(col, x, p, oh, ow, 0, p->c * p->kh * p->kw);
}

/* The columns of output rows oy0 .. oy1-1 only: col (C*KH*KW, (oy1-oy0)*OW), the same
 * values as those columns of im2col's matrix. */
static void im2col_band(float *col, const float *x, const npred_conv2d_params *p, int ow, int oy0, int oy1)
{
    const size_t bpix = (size_t)(oy1 - oy0) * ow;
    const int kk = p->kh * p->kw;
    for (int rr = 0; rr < p->c * kk; rr++) {
        const int c = rr / kk, ky = rr % kk / p->kw, kx = rr % p->kw;
        float *row = col + (size_t)rr * bpix;
        const float *xc = x + (size_t)c * p->h * p->w;
        const int offy = ky * p->dil_h - p->pad_h, offx = kx * p->dil_w - p->pad_w;
        int xlo, xhi;
        valid_range(offx, p->stride_w, p->w, ow, &xlo, &xhi);
        for (int oy = oy0; oy < oy1; oy++) {
            float *r = row + (size_t)(oy - oy0) * ow;
            const int iy = oy * p->stride_h + offy;
            if (iy < 0 || iy >= p->h) {
                memset(r, 0, sizeof *r * (size_t)ow);
                continue;
            }
            patch_row(r, xc + (size_t)iy * p->w + offx, p->stride_w, ow, xlo, xhi);
        }
    }
}

/* An image's im2col matrix larger than this is built and multiplied band by band of
 * output rows, each band's columns (about this many bytes) still in L2 when the GEMM
 * reads them; every output is the same sum over k, so the bits do not change. */
#define IM2COL_BAND_BYTES ((size_t)256 << 10)

/* dx (C, H, W) += rows r0 .. r1-1 of col (as im2col_rows) scattered back to the
 * input positions, in row order. */
static void col2im_add_rows(float *dx, const float *col, const npred_conv2d_params *p, int oh, int ow, int r0, int r1)
{
    const size_t opix = (size_t)oh * ow;
    const int kk = p->kh * p->kw;
    for (int rr = r0; rr < r1; rr++) {
        const int c = rr / kk, ky = rr % kk / p->kw, kx = rr % p->kw;
        const float *row = col + (size_t)(rr - r0) * opix;
        float *xc = dx + (size_t)c * p->h * p->w;
        int offy = ky * p->dil_h - p->pad_h, offx = kx * p->dil_w - p->pad_w;
        int ylo, yhi, xlo, xhi;
        valid_range(offy, p->stride_h, p->h, oh, &ylo, &yhi);
        valid_range(offx, p->stride_w, p->w, ow, &xlo, &xhi);
        for (int oy = ylo; oy < yhi; oy++) {
            const float *r = row + (size_t)oy * ow;
            float *xr = xc + (size_t)(oy * p->stride_h + offy) * p->w + offx;
            if (p->stride_w == 1)
                for (int ox = xlo; ox < xhi; ox++) xr[ox] += r[ox];
            else
                for (int ox = xlo; ox < xhi; ox++) xr[(size_t)ox * p->stride_w] += r[ox];
        }
    }
}

/* 1x1, stride 1, no padding: the input itself is the GEMM operand. */
static int is_pointwise(const npred_conv2d_params *p)
{
    return p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
           p->pad_w == 0;
}

/* The weight gradient of a convolution with stride 1 along the width straight from
 * its (zero-padded) input (npred_gemm_conv_dw), not through im2col rows, for up to
 * this many taps and output channels per group (its product is held transposed,
 * taps x output channels) */
#define DIRECT_DW_TAPS 512

static int direct_dw_shape(const npred_conv2d_params *p)
{
    return !is_pointwise(p) && p->stride_w == 1 && (p->c / p->groups) * p->kh * p->kw <= DIRECT_DW_TAPS &&
           p->o / p->groups <= DIRECT_DW_TAPS;
}

static int has_pad(const npred_conv2d_params *p) { return p->pad_h > 0 || p->pad_w > 0; }

/* floats of the padded input of one image (none without padding) and of the transposed product */
static size_t direct_pad_floats(const npred_conv2d_params *p)
{
    return has_pad(p) ? ((size_t)p->c * (p->h + 2 * p->pad_h) * (p->w + 2 * p->pad_w) + 15) / 16 * 16 : 0;
}

/* floats of a thread's scratch: the im2col matrix of one image, or for the direct
 * weight gradient the padded input and the transposed product, if larger */
static size_t gemm_col_floats(const npred_conv2d_params *p, int oh, int ow)
{
    if (is_pointwise(p)) return 0;
    size_t col = (size_t)p->c * p->kh * p->kw * oh * ow;
    if (direct_dw_shape(p)) {
        size_t d = direct_pad_floats(p) + (size_t)(p->c / p->groups) * p->kh * p->kw * (p->o / p->groups);
        if (d > col) col = d;
    }
    return col;
}

static size_t gemm_dw_floats(const npred_conv2d_params *p)
{
    return (size_t)p->o * (p->c / p->groups) * p->kh * p->kw;
}

/* dW is summed per chunk of images into its own partial, the partials then in
 * chunk order: the chunks depend on the batch size only, so the result does not
 * depend on the thread count (the partials live in the workspace, before the
 * per-thread im2col buffers). */
#define GEMM_DW_CHUNKS 32
/* rows of the im2col matrix per backward block (a multiple of the 48-column panels
 * of the nn kernel that runs the transposed dW chunks and of its 8-row blocks) */
#define GEMM_BWD_ROWS 96

static int gemm_chunks(const npred_conv2d_params *p) { return p->n < GEMM_DW_CHUNKS ? p->n : GEMM_DW_CHUNKS; }

static size_t gemm_partial_bytes(const npred_conv2d_params *p)
{
    return (size_t)gemm_chunks(p) * npred_conv2d_round_bytes(gemm_dw_floats(p));
}

static float *align_ws(void *ws, size_t *bytes)
{
    uintptr_t a = (uintptr_t)ws, b = (a + NPRED_CONV2D_ALIGN - 1) & ~(uintptr_t)(NPRED_CONV2D_ALIGN - 1);
    if (*bytes < b - a) *bytes = 0;
    else *bytes -= b - a;
    return (float *)b;
}

size_t npred_conv2d_workspace_size(const npred_conv2d_params *p, npred_conv2d_algo algo)
{
    return npred_conv2d_workspace_size_threads(p, algo, max_threads());
}

size_t npred_conv2d_workspace_size_threads(const npred_conv2d_params *p, npred_conv2d_algo algo, int t)
{
    int oh = 0, ow = 0;
    if (npred_conv2d_output_size(p, &oh, &ow) != NPRED_OK) {
        npred_clear_error();
        return 0;
    }
    if (algo == NPRED_CONV2D_ALGO_AUTO) algo = npred_conv2d_choose_algo(p);
    size_t per;
    if (t < 1) t = 1;
    switch (algo) {
    case NPRED_CONV2D_ALGO_GEMM:
        per = npred_conv2d_round_bytes(gemm_col_floats(p, oh, ow));
        if (t > p->n) t = p->n;
        return per * (size_t)t + gemm_partial_bytes(p) + NPRED_CONV2D_ALIGN;
    case NPRED_CONV2D_ALGO_DEPTHWISE:
        if (!npred_conv2d_is_depthwise(p)) return 0;
        per = npred_conv2d_depthwise_thread_bytes(p);
        break;
    default:
        return 0;
    }
    return per * (size_t)t + NPRED_CONV2D_ALIGN;
}

/* Calls with ws == NULL and ws_bytes == 0 get scratch allocated here. */
static npred_status own_ws(const npred_conv2d_params *p, npred_conv2d_algo algo, void **ws,
                           size_t *ws_bytes, void **owned)
{
    *owned = NULL;
    if (*ws || *ws_bytes) return NPRED_OK;
    size_t need = npred_conv2d_workspace_size(p, algo);
    if (!need) return NPRED_OK;
    *owned = malloc(need);
    if (!*owned) return npred_errorf(NPRED_ERR_NOMEM, "conv2d: cannot allocate %zu bytes of workspace", need);
    *ws = *owned;
    *ws_bytes = need;
    return NPRED_OK;
}

/* the fp32 or the bf16 kernels (gemm.h); bf16 availability is checked before
 * (bf16_check), so the bf16 calls cannot refuse here */
static void gemm_nn(int bf16, int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                    ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc)
{
    if (!bf16) npred_gemm_nn(m, n, k, a, ars, acs, b, ldb, c, ldc, acc);
    else (void)npred_gemm_nn_bf16(m, n, k, a, ars, acs, b, ldb, c, ldc, acc);
}

static void gemm_nt(int bf16, int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                    float *c, ptrdiff_t ldc)
{
    if (!bf16) npred_gemm_nt(m, l, n, a, lda, b, ldb, c, ldc);
    else (void)npred_gemm_nt_bf16(m, l, n, a, lda, b, ldb, c, ldc);
}

static npred_status bf16_check(const npred_conv2d_params *p, const char *what)
{
    if (p->bf16 && !npred_gemm_bf16_available())
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: bf16 needs AVX-512 BF16, which this CPU lacks", what);
    return NPRED_OK;
}

static npred_status gemm_forward(float *y, const float *x, const float *w, const float *b,
                                 const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    int oh, ow;
    npred_status s = npred_conv2d_output_size(p, &oh, &ow);
    if (s) return s;
    if (!y || !x || !w) return npred_errorf(NPRED_ERR_ARG, "conv2d forward: y, x and w are required");
    if ((s = bf16_check(p, "conv2d forward"))) return s;
    const int pw = is_pointwise(p);
    const size_t opix = (size_t)oh * ow, ipix = (size_t)p->h * p->w;
    const int G = p->groups, cg = p->c / G, og = p->o / G, K = cg * p->kh * p->kw;
    const size_t per = npred_conv2d_round_bytes(gemm_col_floats(p, oh, ow));
    float *base = align_ws(ws, &ws_bytes);
    int T = npred_conv2d_threads(per, ws_bytes, p->n);
    if (T < 1)
        return npred_errorf(NPRED_ERR_ARG, "conv2d forward: workspace of %zu bytes too small (need %zu)",
                            ws_bytes, npred_conv2d_workspace_size(p, NPRED_CONV2D_ALGO_GEMM));
    const int in_region = T > 1; /* one image at a time otherwise, with threaded BLAS */

#pragma omp parallel num_threads(T) if (in_region)
    {
        float *col = (float *)((char *)base + (size_t)npred_thread_id() * per);
#pragma omp for schedule(static)
        for (int n = 0; n < p->n; n++) {
            const float *xn = x + (size_t)n * p->c * ipix;
            float *yn = y + (size_t)n * p->o * opix;
            const float *src = xn;
            const size_t colbytes = sizeof(float) * (size_t)p->c * p->kh * p->kw * opix;
            if (!pw && !p->bf16 && colbytes > 4 * IM2COL_BAND_BYTES) {
                /* bands of output rows (the bf16 kernels' packing is left as it was) */
                const size_t rowbytes = colbytes / (size_t)oh;
                const int rows = rowbytes >= IM2COL_BAND_BYTES ? 1 : (int)(IM2COL_BAND_BYTES / rowbytes);
                for (int oy0 = 0; oy0 < oh; oy0 += rows) {
                    const int oy1 = oh - oy0 < rows ? oh : oy0 + rows;
                    const int bp = (oy1 - oy0) * ow;
                    im2col_band(col, xn, p, ow, oy0, oy1);
                    for (int g = 0; g < G; g++) {
                        const float *wg = w + (size_t)g * og * K, *cg_ = col + (size_t)g * K * bp;
                        float *yg = yn + (size_t)g * og * opix + (size_t)oy0 * ow;
                        if (b) npred_gemm_nn_bias(og, bp, K, wg, K, 1, cg_, bp, b + (size_t)g * og, yg, (ptrdiff_t)opix);
                        else npred_gemm_nn(og, bp, K, wg, K, 1, cg_, bp, yg, (ptrdiff_t)opix, 0);
                    }
                }
                continue;
            }
            if (!pw) {
                im2col(col, xn, p, oh, ow);
                src = col;
            }
            if (b && !p->bf16) { /* the bias as the sums' start: no pass over y to fill it */
                for (int g = 0; g < G; g++)
                    npred_gemm_nn_bias(og, (int)opix, K, w + (size_t)g * og * K, K, 1, src + (size_t)g * K * opix,
                                       (ptrdiff_t)opix, b + (size_t)g * og, yn + (size_t)g * og * opix,
                                       (ptrdiff_t)opix);
                continue;
            }
            if (b)
                for (int o = 0; o < p->o; o++) {
                    float *r = yn + (size_t)o * opix;
                    for (size_t i = 0; i < opix; i++) r[i] = b[o];
                }
            for (int g = 0; g < G; g++)
                gemm_nn(p->bf16, og, (int)opix, K, w + (size_t)g * og * K, K, 1, src + (size_t)g * K * opix,
                        (ptrdiff_t)opix, yn + (size_t)g * og * opix, (ptrdiff_t)opix, b != NULL);
        }
    }
    return NPRED_OK;
}

/* dx_set: dx is written (=), not added to */
static npred_status gemm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                                  const float *w, const npred_conv2d_params *p, void *ws,
                                  size_t ws_bytes, int dx_set)
{
    int oh, ow;
    npred_status s = npred_conv2d_output_size(p, &oh, &ow);
    if (s) return s;
    if (!dy || (dw && !x) || (dx && !w))
        return npred_errorf(NPRED_ERR_ARG, "conv2d backward: dy, x (for dw) and w (for dx) are required");
    if ((s = bf16_check(p, "conv2d backward"))) return s;
    const int pw = is_pointwise(p);
    /* one image of a 1x1 (the image-by-image block): its bias gradient is formed in
     * the pass of its other products (npred_gemm_pointwise_backward_bias), same bits */
    const int db_pass = db && pw && !p->bf16 && p->n == 1 && (dx || dw);
    if (db && !db_pass) npred_conv2d_bias_grad(db, dy, p->n, p->o, (size_t)oh * ow);
    if (!dx && !dw) return NPRED_OK;
    const size_t opix = (size_t)oh * ow, ipix = (size_t)p->h * p->w;
    const int G = p->groups, cg = p->c / G, og = p->o / G, K = cg * p->kh * p->kw;
    const size_t colb = npred_conv2d_round_bytes(gemm_col_floats(p, oh, ow));
    const size_t nwf = gemm_dw_floats(p), dwb = npred_conv2d_round_bytes(nwf);
    const size_t partb = gemm_partial_bytes(p);
    const int nch = gemm_chunks(p);
    float *base = align_ws(ws, &ws_bytes);
    int T = ws_bytes < partb ? 0 : npred_conv2d_threads(colb, ws_bytes - partb, p->n);
    if (T < 1)
        return npred_errorf(NPRED_ERR_ARG, "conv2d backward: workspace of %zu bytes too small (need %zu)",
                            ws_bytes, npred_conv2d_workspace_size(p, NPRED_CONV2D_ALGO_GEMM));
    const int in_region = T > 1;
    char *cols = (char *)base + partb;
    const int direct = dw && direct_dw_shape(p) && !p->bf16 && npred_gemm_avx512_active();

#pragma omp parallel num_threads(T) if (in_region)
    {
        float *col = (float *)(cols + (size_t)npred_thread_id() * colb);
        ptrdiff_t off[DIRECT_DW_TAPS];
#pragma omp for schedule(static)
        for (int ch = 0; ch < nch; ch++) {
            float *part = (float *)((char *)base + (size_t)ch * dwb); /* this chunk's dW sum */
            if (dw) memset(part, 0, nwf * sizeof *part);
            const int n0 = (int)((int64_t)ch * p->n / nch), n1 = (int)((int64_t)(ch + 1) * p->n / nch);
            for (int n = n0; n < n1; n++) {
                const float *dyn = dy + (size_t)n * p->o * opix;
                const float *xn = x ? x + (size_t)n * p->c * ipix : NULL;
                float *dxn = dx ? dx + (size_t)n * p->c * ipix : NULL;
                if (pw) {
                    for (int g = 0; g < G; g++) {
                        const float *dyg = dyn + (size_t)g * og * opix, *wg = w ? w + (size_t)g * og * K : NULL;
                        float *pg = dw ? part + (size_t)g * og * K : NULL, *dxg = dx ? dxn + (size_t)g * K * ipix : NULL;
                        if (!p->bf16) { /* dW_g += dy_g . x_g^T and dx_g (+)= W_g^T . dy_g in one pass */
                            const float *xg = dw ? xn + (size_t)g * K * ipix : NULL;
                            if (db_pass && !npred_gemm_pointwise_backward_bias(og, K, (int)opix, wg, dyg, xg, pg,
                                                                               db + (size_t)g * og, dxg, !dx_set))
                                continue;
                            npred_gemm_pointwise_backward(og, K, (int)opix, wg, dyg, xg, pg, dxg, !dx_set);
                            if (db_pass) npred_conv2d_bias_grad(db + (size_t)g * og, dyg, 1, og, opix);
                            continue;
                        }
                        if (dw)
                            gemm_nt(p->bf16, og, K, (int)opix, dyg, (ptrdiff_t)opix, xn + (size_t)g * K * ipix,
                                    (ptrdiff_t)opix, pg, K);
                        /* dx_g (+)= W_g^T . dy_g: A(i, o) = w[o * K + i] */
                        if (dx) gemm_nn(p->bf16, K, (int)opix, og, wg, 1, K, dyg, (ptrdiff_t)opix, dxg, (ptrdiff_t)opix, !dx_set);
                    }
                    continue;
                }
                if (dx && dx_set) memset(dxn, 0, sizeof *dxn * (size_t)p->c * ipix);
                if (direct) { /* dW from the input itself, then dx through im2col rows */
                    const int hp = p->h + 2 * p->pad_h, wp = p->w + 2 * p->pad_w;
                    const float *xs = xn;
                    float *tt = col;
                    if (has_pad(p)) {
                        float *xp = col;
                        tt = col + direct_pad_floats(p);
                        memset(xp, 0, sizeof *xp * (size_t)p->c * hp * wp);
                        for (int c = 0; c < p->c; c++)
                            for (int y = 0; y < p->h; y++)
                                memcpy(xp + ((size_t)c * hp + y + p->pad_h) * wp + p->pad_w,
                                       xn + ((size_t)c * p->h + y) * p->w, sizeof *xp * (size_t)p->w);
                        xs = xp;
                    }
                    for (int g = 0; g < G; g++) {
                        for (int r = 0; r < K; r++) {
                            const int c = g * cg + r / (p->kh * p->kw), ky = r / p->kw % p->kh, kx = r % p->kw;
                            off[r] = ((ptrdiff_t)c * hp + ky * p->dil_h) * wp + kx * p->dil_w;
                        }
                        npred_gemm_conv_dw(og, K, oh, ow, dyn + (size_t)g * og * opix, xs, off,
                                           (ptrdiff_t)p->stride_h * wp, part + (size_t)g * og * K, K, tt);
                    }
                    if (!dx) continue;
                }
                /* blocks of GEMM_BWD_ROWS rows of the image's im2col matrix, built
                 * and used while in L2: dW_g[:, rows] += dy_g . col[rows]^T, then
                 * col[rows] = W_g[:, rows]^T . dy_g scattered into dx (rows in order:
                 * the same sums as whole-matrix products, bit for bit) */
                for (int g = 0; g < G; g++)
                    for (int r0 = 0; r0 < K; r0 += GEMM_BWD_ROWS) {
                        const int nr = K - r0 < GEMM_BWD_ROWS ? K - r0 : GEMM_BWD_ROWS, gr = g * K + r0;
                        if (dw && !direct) {
                            im2col_rows(col, xn, p, oh, ow, gr, gr + nr);
                            gemm_nt(p->bf16, og, nr, (int)opix, dyn + (size_t)g * og * opix, (ptrdiff_t)opix, col,
                                    (ptrdiff_t)opix, part + (size_t)g * og * K + r0, K);
                        }
                        if (dx) {
                            gemm_nn(p->bf16, nr, (int)opix, og, w + (size_t)g * og * K + r0, 1, K,
                                    dyn + (size_t)g * og * opix, (ptrdiff_t)opix, col, (ptrdiff_t)opix, 0);
                            col2im_add_rows(dxn, col, p, oh, ow, gr, gr + nr);
                        }
                    }
            }
        }
        /* implicit barrier: all partials done; add them in chunk order */
        if (dw) {
#pragma omp for schedule(static)
            for (size_t i = 0; i < nwf; i++) {
                float acc = dw[i];
                for (int k = 0; k < nch; k++) acc += ((const float *)((const char *)base + (size_t)k * dwb))[i];
                dw[i] = acc;
            }
        }
    }
    return NPRED_OK;
}

npred_status npred_conv2d_forward_gemm(float *y, const float *x, const float *w, const float *b,
                                       const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    void *owned;
    npred_status s = npred_conv2d_output_size(p, NULL, NULL);
    if (!s) s = own_ws(p, NPRED_CONV2D_ALGO_GEMM, &ws, &ws_bytes, &owned);
    if (s) return s;
    s = gemm_forward(y, x, w, b, p, ws, ws_bytes);
    free(owned);
    return s;
}

npred_status npred_conv2d_backward_gemm(float *dx, float *dw, float *db, const float *dy,
                                        const float *x, const float *w,
                                        const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    void *owned;
    npred_status s = npred_conv2d_output_size(p, NULL, NULL);
    if (!s) s = own_ws(p, NPRED_CONV2D_ALGO_GEMM, &ws, &ws_bytes, &owned);
    if (s) return s;
    s = gemm_backward(dx, dw, db, dy, x, w, p, ws, ws_bytes, 0);
    free(owned);
    return s;
}

/* ---------------------------------------------------------------- dispatch */

npred_status npred_conv2d_forward_algo(npred_conv2d_algo algo, float *y, const float *x,
                                       const float *w, const float *b,
                                       const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    if (algo == NPRED_CONV2D_ALGO_AUTO) algo = npred_conv2d_choose_algo(p);
    switch (algo) {
    case NPRED_CONV2D_ALGO_NAIVE: return npred_conv2d_forward_naive(y, x, w, b, p);
    case NPRED_CONV2D_ALGO_GEMM: return npred_conv2d_forward_gemm(y, x, w, b, p, ws, ws_bytes);
    case NPRED_CONV2D_ALGO_DEPTHWISE:
        return npred_conv2d_forward_depthwise(y, x, w, b, p, ws, ws_bytes);
    default: return npred_errorf(NPRED_ERR_ARG, "conv2d: unknown algorithm %d", (int)algo);
    }
}

npred_status npred_conv2d_backward_algo(npred_conv2d_algo algo, float *dx, float *dw, float *db,
                                        const float *dy, const float *x, const float *w,
                                        const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    if (algo == NPRED_CONV2D_ALGO_AUTO) algo = npred_conv2d_choose_algo(p);
    switch (algo) {
    case NPRED_CONV2D_ALGO_NAIVE: return npred_conv2d_backward_naive(dx, dw, db, dy, x, w, p);
    case NPRED_CONV2D_ALGO_GEMM:
        return npred_conv2d_backward_gemm(dx, dw, db, dy, x, w, p, ws, ws_bytes);
    case NPRED_CONV2D_ALGO_DEPTHWISE:
        return npred_conv2d_backward_depthwise(dx, dw, db, dy, x, w, p, ws, ws_bytes);
    default: return npred_errorf(NPRED_ERR_ARG, "conv2d: unknown algorithm %d", (int)algo);
    }
}

npred_status npred_conv2d_backward_set(float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    npred_status s = npred_conv2d_output_size(p, NULL, NULL);
    if (s) return s;
    if (dx && npred_conv2d_choose_algo(p) == NPRED_CONV2D_ALGO_GEMM) {
        void *owned;
        if ((s = own_ws(p, NPRED_CONV2D_ALGO_GEMM, &ws, &ws_bytes, &owned))) return s;
        s = gemm_backward(dx, dw, db, dy, x, w, p, ws, ws_bytes, 1);
        free(owned);
        return s;
    }
    if (dx && npred_conv2d_choose_algo(p) == NPRED_CONV2D_ALGO_DEPTHWISE)
        return npred_conv2d_backward_depthwise_set(dx, dw, db, dy, x, w, p, ws, ws_bytes);
    if (dx) memset(dx, 0, sizeof *dx * (size_t)p->n * p->c * p->h * p->w);
    return npred_conv2d_backward(dx, dw, db, dy, x, w, p, ws, ws_bytes);
}

npred_status npred_conv2d_forward(float *y, const float *x, const float *w, const float *b,
                                  const npred_conv2d_params *p, void *ws, size_t ws_bytes)
{
    return npred_conv2d_forward_algo(NPRED_CONV2D_ALGO_AUTO, y, x, w, b, p, ws, ws_bytes);
}

npred_status npred_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                   const float *x, const float *w, const npred_conv2d_params *p,
                                   void *ws, size_t ws_bytes)
{
    return npred_conv2d_backward_algo(NPRED_CONV2D_ALGO_AUTO, dx, dw, db, dy, x, w, p, ws, ws_bytes);
}
