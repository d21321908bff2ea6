/* PointPyramid2d, neuralpredictors 0.3.0 (layers/readouts/pyramid.py).
 *
 *   features.data.clamp_min_(0)                   (positive=True; in place)
 *   grid.data = clamp(grid, -1, 1)                (in place; no clamp in the gradient)
 *   Laplacian pyramid of x with a fixed k x k filter f (depthwise, zero padding k//2):
 *     smooth = f * img;  lo = smooth[::2, ::2];  lo2 = 4 convT(lo, f, stride 2)   (downsample)
 *     lo = lo2 = smooth                                                          (no downsample)
 *     hi = img - lo2;  the next step works on lo
 *   levels = [hi_0, ..., hi_{S-1}, lo_{S-1}]  (S = scale_n)
 *   y[b,o] = sum_l sum_c F[o, l*c + c'] bilinear(level l [b], grid[o] + shift[b]) + bias[o]
 * with F[o, j] = features[0, j, 0, o]. No sampling noise, no batch norm: train and eval
 * compute the same thing.
 *
 * The pyramid is built on NCHW planes (every channel alike); the levels are then copied
 * channels-last and read by the fused sampling/contraction of readouts/sample.h.
 * Backward runs from the coarsest level down (the adjoints of the smoothing, the
 * subsampling and the transposed convolution). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "readouts/readout.h"
#include "readouts/sample.h"

#define A16(n) (((size_t)(n) + 15) / 16 * 16)
#define MAXLEV 16

typedef struct {
    float *img[MAXLEV + 1];  /* NCHW: img[0] unused (x), img[l] = lo_{l-1} */
    float *smooth[MAXLEV];   /* NCHW */
    float *hi[MAXLEV];       /* NCHW */
    float *lev[MAXLEV + 1];  /* NHWC copies of the sampled levels */
    float *dlev[MAXLEV + 1]; /* NHWC gradients of the sampled levels */
    float *dimg[MAXLEV + 1]; /* NCHW gradients of img */
    float *tmp;              /* NCHW scratch, the size of level 0 */
    int h[MAXLEV + 1], w[MAXLEV + 1];
    float *grid, *dgrid, *F, *dF;
} pyr_ws;

static const float GAUSS5[25] = {0.003765f, 0.015019f, 0.023792f, 0.015019f, 0.003765f,
                                 0.015019f, 0.059912f, 0.094907f, 0.059912f, 0.015019f,
                                 0.023792f, 0.094907f, 0.150342f, 0.094907f, 0.023792f,
                                 0.015019f, 0.059912f, 0.094907f, 0.059912f, 0.015019f,
                                 0.003765f, 0.015019f, 0.023792f, 0.015019f, 0.003765f};

static const char *type_name(npred_pyramid_type t)
{
    return t == NPRED_PYRAMID_GAUSS3X3 ? "gauss3x3" : t == NPRED_PYRAMID_LAPLACE5X5 ? "laplace5x5" : "gauss5x5";
}

static int kern_size(const npred_readout *r) { return r->cfg.pyramid_type == NPRED_PYRAMID_GAUSS3X3 ? 3 : 5; }

static void level_dims(const npred_readout *r, int *h, int *w)
{
    h[0] = r->cfg.h;
    w[0] = r->cfg.w;
    for (int l = 1; l <= r->cfg.scale_n; l++) {
        h[l] = r->cfg.downsample ? (h[l - 1] + 1) / 2 : h[l - 1];
        w[l] = r->cfg.downsample ? (w[l - 1] + 1) / 2 : w[l - 1];
    }
}

static size_t layout(const npred_readout *r, int max_batch, pyr_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    int h[MAXLEV + 1], w[MAXLEV + 1], S = c->scale_n;
    level_dims(r, h, w);
    size_t off = 0, pts = (size_t)max_batch * c->n * 2, nf = (size_t)c->n * c->c * (S + 1);
#define TAKE(ptr, count)                          \
    do {                                          \
        size_t sz_ = A16(count);                  \
        if (v) (ptr) = r->ws + off;               \
        off += sz_;                               \
    } while (0)
    for (int l = 0; l <= S; l++) {
        size_t sz = (size_t)max_batch * c->c * h[l] * w[l];
        if (v) {
            v->h[l] = h[l];
            v->w[l] = w[l];
            v->img[l] = NULL;
        }
        if (l > 0) TAKE(v->img[l], sz);
        if (l < S) {
            TAKE(v->smooth[l], sz);
            TAKE(v->hi[l], sz);
        }
        TAKE(v->lev[l], sz);
        TAKE(v->dlev[l], sz);
        TAKE(v->dimg[l], sz);
    }
    TAKE(v->tmp, (size_t)max_batch * c->c * h[0] * w[0]);
    TAKE(v->grid, pts);
    TAKE(v->dgrid, pts);
    TAKE(v->F, nf);
    TAKE(v->dF, nf);
#undef TAKE
    return off;
}

size_t npred_pyramid_workspace(const npred_readout *r, int max_batch) { return layout(r, max_batch, NULL); }

npred_status npred_pyramid_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    if (c->scale_n < 0 || c->scale_n >= MAXLEV)
        return npred_errorf(NPRED_ERR_CONFIG, "scale_n %d (0..%d)", c->scale_n, MAXLEV - 1);
    if (!(c->init_range >= 0)) return npred_errorf(NPRED_ERR_CONFIG, "init_range %g must be >= 0", c->init_range);
    if (c->shared_features || c->shared_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "PointPyramid2d has no shared features/grid");
    char name[NPRED_PARAM_NAMELEN];
    int k = kern_size(r);
    int64_t gs[4] = {1, c->n, 1, 2}, fs[4] = {1, (int64_t)c->c * (c->scale_n + 1), 1, c->n}, bs[1] = {c->n},
            ks[2] = {k, k};
    snprintf(name, sizeof name, "%sgrid", r->prefix);
    if ((r->p_grid = npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, gs)) < 0) return NPRED_ERR_ARG;
    snprintf(name, sizeof name, "%sfeatures", r->prefix);
    if ((r->p_features = npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, fs)) < 0) return NPRED_ERR_ARG;
    if (c->bias) {
        snprintf(name, sizeof name, "%sbias", r->prefix);
        if ((r->p_bias = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
    }
    snprintf(name, sizeof name, "%sgauss_pyramid.filter", r->prefix);
    if ((r->p_filter = npred_ptable_add(t, name, 1, NPRED_PT_F32, 2, ks)) < 0) return NPRED_ERR_ARG;
    return NPRED_OK;
}

void npred_pyramid_init_buffers(npred_readout *r, npred_ptable *t)
{
    float *f = npred_ptable_ptr(t, r->p_filter);
    static const float b5[5] = {1, 4, 6, 4, 1};
    switch (r->cfg.pyramid_type) {
    case NPRED_PYRAMID_GAUSS3X3:
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) f[3 * i + j] = (float)((i == 1 ? 2 : 1) * (j == 1 ? 2 : 1)) / 16.0f;
        break;
    case NPRED_PYRAMID_LAPLACE5X5:
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++) f[5 * i + j] = b5[i] * b5[j] / 256.0f;
        break;
    default: memcpy(f, GAUSS5, sizeof GAUSS5); break;
    }
}

void npred_pyramid_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    npred_pyramid_init_buffers(r, t);
    float *g = npred_ptable_ptr(t, r->p_grid), *f = npred_ptable_ptr(t, r->p_features);
    for (int i = 0; i < 2 * c->n; i++) g[i] = (float)(c->init_range * (2 * npred_rng_uniform(rng) - 1));
    size_t nf = t->items[r->p_features].count;
    for (size_t i = 0; i < nf; i++) f[i] = 1.0f / (float)c->c;
}

/* out (P, h, w) = f * in, zero padding k/2 ("same") */
static void smooth_forward(float *out, const float *in, size_t P, int h, int w, const float *f, int k)
{
    int p = k / 2;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < P; q++) {
        const float *src = in + q * h * w;
        float *dst = out + q * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int a = 0; a < k; a++) {
                    int yy = y + a - p;
                    if (yy < 0 || yy >= h) continue;
                    for (int b = 0; b < k; b++) {
                        int xx = x + b - p;
                        if (xx >= 0 && xx < w) acc += (double)f[a * k + b] * src[yy * w + xx];
                    }
                }
                dst[y * w + x] = (float)acc;
            }
    }
}

/* din (P, h, w) += f^T dout (the adjoint of smooth_forward) */
static void smooth_backward(float *din, const float *dout, size_t P, int h, int w, const float *f, int k)
{
    int p = k / 2;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < P; q++) {
        const float *g = dout + q * h * w;
        float *d = din + q * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0;
                for (int a = 0; a < k; a++) {
                    int yy = y - a + p;
                    if (yy < 0 || yy >= h) continue;
                    for (int b = 0; b < k; b++) {
                        int xx = x - b + p;
                        if (xx >= 0 && xx < w) acc += (double)f[a * k + b] * g[yy * w + xx];
                    }
                }
                d[y * w + x] += (float)acc;
            }
    }
}

/* out (P, h, w) = 4 conv_transpose2d(lo (P, hl, wl), f, stride 2, padding k/2) with the
 * output padding that gives h x w: out[2i - p + a, 2j - p + b] += 4 f[a, b] lo[i, j] */
static void expand_forward(float *out, const float *lo, size_t P, int h, int w, int hl, int wl, const float *f, int k)
{
    int p = k / 2;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < P; q++) {
        const float *s = lo + q * hl * wl;
        float *d = out + q * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double acc = 0; /* gather form: the taps (i, a) with 2i - p + a = y */
                for (int a = 0; a < k; a++) {
                    int t = y + p - a;
                    if (t < 0 || (t & 1) || t / 2 >= hl) continue;
                    for (int b = 0; b < k; b++) {
                        int u = x + p - b;
                        if (u < 0 || (u & 1) || u / 2 >= wl) continue;
                        acc += (double)f[a * k + b] * s[(t / 2) * wl + u / 2];
                    }
                }
                d[y * w + x] = (float)(4.0 * acc);
            }
    }
}

/* dlo (P, hl, wl) += the adjoint of expand_forward applied to dout (P, h, w) */
static void expand_backward(float *dlo, const float *dout, size_t P, int h, int w, int hl, int wl, const float *f,
                            int k)
{
    int p = k / 2;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < P; q++) {
        const float *g = dout + q * h * w;
        float *d = dlo + q * hl * wl;
        for (int i = 0; i < hl; i++)
            for (int j = 0; j < wl; j++) {
                double acc = 0;
                for (int a = 0; a < k; a++) {
                    int y = 2 * i - p + a;
                    if (y < 0 || y >= h) continue;
                    for (int b = 0; b < k; b++) {
                        int x = 2 * j - p + b;
                        if (x >= 0 && x < w) acc += (double)f[a * k + b] * g[y * w + x];
                    }
                }
                d[i * wl + j] += (float)(4.0 * acc);
            }
    }
}

npred_status npred_pyramid_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                   int B)
{
    const npred_readout_config *c = &r->cfg;
    pyr_ws v;
    layout(r, r->max_batch, &v);
    int C = c->c, S = c->scale_n, m = C * (S + 1), k = kern_size(r);
    size_t P = (size_t)B * C;
    if (c->positive) {
        float *f = npred_ptable_ptr(t, r->p_features);
        for (size_t i = 0; i < t->items[r->p_features].count; i++)
            if (f[i] < 0) f[i] = 0;
    }
    npred_readout_point_grid(r, t, v.grid, shift, B);
    npred_readout_point_features(r, t, v.F, m);
    const float *filt = npred_ptable_ptr(t, r->p_filter);
    const float *img = x;
    for (int l = 0; l < S; l++) {
        int h = v.h[l], w = v.w[l];
        size_t cnt = P * h * w;
        smooth_forward(v.smooth[l], img, P, h, w, filt, k);
        if (c->downsample) {
            int hl = v.h[l + 1], wl = v.w[l + 1];
            for (size_t q = 0; q < P; q++)
                for (int i = 0; i < hl; i++)
                    for (int j = 0; j < wl; j++)
                        v.img[l + 1][(q * hl + i) * wl + j] = v.smooth[l][(q * h + 2 * i) * w + 2 * j];
            expand_forward(v.hi[l], v.img[l + 1], P, h, w, hl, wl, filt, k);
        } else {
            memcpy(v.img[l + 1], v.smooth[l], cnt * sizeof(float));
            memcpy(v.hi[l], v.smooth[l], cnt * sizeof(float));
        }
        for (size_t i = 0; i < cnt; i++) v.hi[l][i] = img[i] - v.hi[l][i];
        npred_rsample_to_nhwc(v.lev[l], v.hi[l], B, C, h * w);
        img = v.img[l + 1];
    }
    npred_rsample_to_nhwc(v.lev[S], img, B, C, v.h[S] * v.w[S]);
    npred_readout_point_sample(r, t, y, v.lev, v.h, v.w, S + 1, v.grid, v.F, B);
    return NPRED_OK;
}

void npred_pyramid_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift, int dx_set)
{
    const npred_readout_config *c = &r->cfg;
    pyr_ws v;
    layout(r, r->max_batch, &v);
    int n = c->n, C = c->c, S = c->scale_n, m = C * (S + 1), B = r->B, k = kern_size(r);
    size_t P = (size_t)B * C;
    const float *filt = npred_ptable_ptr(t, r->p_filter);
    npred_readout_bias_grad(r, t, dy, B);
    memset(v.dgrid, 0, (size_t)B * n * 2 * sizeof(float));
    memset(v.dF, 0, (size_t)n * m * sizeof(float));
    for (int l = 0; l <= S; l++) {
        size_t cnt = P * v.h[l] * v.w[l];
        if (dx) memset(v.dlev[l], 0, cnt * sizeof(float));
        npred_rsample_backward(dx ? v.dlev[l] : NULL, v.dgrid, v.dF + (size_t)l * C, dy, v.lev[l], v.grid,
                               v.F + (size_t)l * C, m, B, v.h[l], v.w[l], C, n, c->align_corners);
        if (dx) {
            memset(v.dimg[l], 0, cnt * sizeof(float));
            npred_rsample_add_nchw(v.dimg[l], v.dlev[l], B, C, v.h[l] * v.w[l]); /* d(hi_l), or d(img_S) */
        }
    }
    /* the pyramid, coarsest step first: dimg[l] holds d(hi_l) on entry and d(img_l) on exit */
    for (int l = S - 1; dx && l >= 0; l--) {
        int h = v.h[l], w = v.w[l];
        size_t cnt = P * h * w;
        float *dsm = v.tmp;
        if (c->downsample) {
            int hl = v.h[l + 1], wl = v.w[l + 1];
            /* d(lo) = d(img_{l+1}) - expand^T d(hi) */
            float *dlo = v.dimg[l + 1];
            for (size_t i = 0; i < cnt; i++) dsm[i] = -v.dimg[l][i];
            expand_backward(dlo, dsm, P, h, w, hl, wl, filt, k);
            memset(dsm, 0, cnt * sizeof(float));
            for (size_t q = 0; q < P; q++)
                for (int i = 0; i < hl; i++)
                    for (int j = 0; j < wl; j++) dsm[(q * h + 2 * i) * w + 2 * j] = dlo[(q * hl + i) * wl + j];
        } else {
            for (size_t i = 0; i < cnt; i++) dsm[i] = v.dimg[l + 1][i] - v.dimg[l][i];
        }
        smooth_backward(v.dimg[l], dsm, P, h, w, filt, k);
    }
    if (dx) {
        size_t cnt = P * v.h[0] * v.w[0];
        /* dx_set: +0 + x, the bits of adding onto zeros */
        for (size_t i = 0; i < cnt; i++) dx[i] = (dx_set ? 0.0f : dx[i]) + v.dimg[0][i];
    }
    npred_readout_point_grid_grad(r, t, v.dgrid, dshift, B);
    npred_readout_point_features_grad(r, t, v.dF, m);
}

void npred_pyramid_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    snprintf(buf, n, "PointPyramid2d (%d x %d x %d -> %d)%s  -> Pyramid(scale_n=%d, padding=%d, downsample=%s, type=%s)\n",
             c->c, c->h, c->w, c->n, c->bias ? " with bias" : "", c->scale_n, kern_size(r) / 2,
             c->downsample ? "True" : "False", type_name(c->pyramid_type));
}
