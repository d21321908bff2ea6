/* PointPooled2d, neuralpredictors 0.3.0 (spec §2.8).
 *
 *   grid.data = clamp(grid, -1, 1)            (in place; no clamp in the gradient)
 *   level 0 = x, level l = AvgPool2d(k, stride k, floor mode)(level l-1), l = 1..P
 *   y[b,o] = sum_l sum_c F[o, l*c + c'] bilinear(level l [b], grid[o] + shift[b]) + bias[o]
 * with F[o, j] = features[0, j, 0, o]: the channels of the levels concatenated.
 *
 * All levels are kept channels-last in the workspace (the pooling runs on the
 * NHWC maps); the sampling is fused with the contraction (readouts/sample.h).
 * Backward goes from the coarsest level down: its sampling gradient plus the
 * pooled-back gradient of the level above, then 1/k^2 times each window.
 * Workspace: levels and their gradients, grid and dgrid (max_batch*n*2), F, dF. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "readouts/readout.h"
#include "readouts/sample.h"

#define A16(n) (((size_t)(n) + 15) / 16 * 16)
#define MAXLEV 16

typedef struct {
    float *lev[MAXLEV], *dlev[MAXLEV];
    int h[MAXLEV], w[MAXLEV];
    float *grid, *dgrid, *F, *dF;
} pp_ws;

static void level_dims(const npred_readout *r, int *h, int *w)
{
    h[0] = r->cfg.h;
    w[0] = r->cfg.w;
    for (int l = 1; l <= r->cfg.pool_steps; l++) {
        h[l] = h[l - 1] / r->cfg.pool_kern;
        w[l] = w[l - 1] / r->cfg.pool_kern;
    }
}

static size_t layout(const npred_readout *r, int max_batch, pp_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    int h[MAXLEV], w[MAXLEV];
    level_dims(r, h, w);
    size_t off = 0, pts = (size_t)max_batch * c->n * 2, nf = (size_t)c->n * c->c * (c->pool_steps + 1);
    for (int l = 0; l <= c->pool_steps; l++) {
        size_t sz = A16((size_t)max_batch * h[l] * w[l] * c->c);
        if (v) {
            v->lev[l] = r->ws + off;
            v->dlev[l] = r->ws + off + sz;
            v->h[l] = h[l];
            v->w[l] = w[l];
        }
        off += 2 * sz;
    }
    if (v) {
        v->grid = r->ws + off;
        v->dgrid = v->grid + A16(pts);
        v->F = v->dgrid + A16(pts);
        v->dF = v->F + A16(nf);
    }
    return off + 2 * A16(pts) + 2 * A16(nf);
}

size_t npred_point_pooled_workspace(const npred_readout *r, int max_batch) { return layout(r, max_batch, NULL); }

npred_status npred_point_pooled_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    if (!(c->init_range > 0 && c->init_range <= 1))
        return npred_errorf(NPRED_ERR_CONFIG, "init_range %g must lie in (0, 1]", c->init_range);
    if (c->pool_steps < 0 || c->pool_steps >= MAXLEV)
        return npred_errorf(NPRED_ERR_CONFIG, "pool_steps %d (0..%d)", c->pool_steps, MAXLEV - 1);
    if (c->pool_kern < 1) return npred_errorf(NPRED_ERR_CONFIG, "pool_kern %d must be >= 1", c->pool_kern);
    if (c->shared_features || c->shared_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "PointPooled2d has no shared features/grid");
    int h[MAXLEV], w[MAXLEV];
    level_dims(r, h, w);
    if (h[c->pool_steps] < 1 || w[c->pool_steps] < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "pool_steps %d with pool_kern %d pool the %d x %d map to nothing",
                            c->pool_steps, c->pool_kern, c->h, c->w);
    char name[NPRED_PARAM_NAMELEN];
    int64_t gs[4] = {1, c->n, 1, 2}, fs[4] = {1, (int64_t)c->c * (c->pool_steps + 1), 1, c->n}, bs[1] = {c->n};
    snprintf(name, sizeof name, "%sgrid", r->prefix);
    if ((r->p_grid = npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, gs)) < 0) return NPRED_ERR_ARG;
    snprintf(name, sizeof name, "%sfeatures", r->prefix);
    if ((r->p_features = npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, fs)) < 0) return NPRED_ERR_ARG;
    if (c->bias) {
        snprintf(name, sizeof name, "%sbias", r->prefix);
        if ((r->p_bias = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
    }
    return NPRED_OK;
}

void npred_point_pooled_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    float *g = npred_ptable_ptr(t, r->p_grid), *f = npred_ptable_ptr(t, r->p_features);
    for (int i = 0; i < 2 * c->n; i++) g[i] = (float)(c->init_range * (2 * npred_rng_uniform(rng) - 1));
    size_t nf = t->items[r->p_features].count;
    for (size_t i = 0; i < nf; i++) f[i] = 1.0f / (float)c->c; /* 1/c, not 1/(c (P+1)) */
}

/* out (B, h/k, w/k, C) = mean of k x k windows of in (B, h, w, C) */
static void pool_forward(float *out, const float *in, int B, int h, int w, int C, int k)
{
    int ho = h / k, wo = w / k;
    float inv = 1.0f / (float)(k * k);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                float *o = out + (((size_t)b * ho + i) * wo + j) * C;
                for (int ch = 0; ch < C; ch++) o[ch] = 0.0f;
                for (int di = 0; di < k; di++)
                    for (int dj = 0; dj < k; dj++) {
                        const float *s = in + (((size_t)b * h + i * k + di) * w + j * k + dj) * C;
                        for (int ch = 0; ch < C; ch++) o[ch] += s[ch];
                    }
                for (int ch = 0; ch < C; ch++) o[ch] *= inv;
            }
}

/* din (B, h, w, C) += dout / k^2 spread over each window */
static void pool_backward(float *din, const float *dout, int B, int h, int w, int C, int k)
{
    int ho = h / k, wo = w / k;
    float inv = 1.0f / (float)(k * k);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                const float *g = dout + (((size_t)b * ho + i) * wo + j) * C;
                for (int di = 0; di < k; di++)
                    for (int dj = 0; dj < k; dj++) {
                        float *d = din + (((size_t)b * h + i * k + di) * w + j * k + dj) * C;
                        for (int ch = 0; ch < C; ch++) d[ch] += g[ch] * inv;
                    }
            }
}

npred_status npred_point_pooled_forward(npred_readout *r, npred_ptable *t, float *y, const float *x,
                                        const float *shift, int B)
{
    const npred_readout_config *c = &r->cfg;
    pp_ws v;
    layout(r, r->max_batch, &v);
    int C = c->c, m = C * (c->pool_steps + 1);
    npred_readout_point_grid(r, t, v.grid, shift, B);
    npred_readout_point_features(r, t, v.F, m);
    npred_rsample_to_nhwc(v.lev[0], x, B, C, c->h * c->w);
    for (int l = 1; l <= c->pool_steps; l++)
        pool_forward(v.lev[l], v.lev[l - 1], B, v.h[l - 1], v.w[l - 1], C, c->pool_kern);
    npred_readout_point_sample(r, t, y, v.lev, v.h, v.w, c->pool_steps + 1, v.grid, v.F, B);
    return NPRED_OK;
}

void npred_point_pooled_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift,
                                 int dx_set)
{
    const npred_readout_config *c = &r->cfg;
    pp_ws v;
    layout(r, r->max_batch, &v);
    int n = c->n, C = c->c, m = C * (c->pool_steps + 1), B = r->B;
    npred_readout_bias_grad(r, t, dy, B);
    memset(v.dgrid, 0, (size_t)B * n * 2 * sizeof(float));
    memset(v.dF, 0, (size_t)n * m * sizeof(float));
    for (int l = c->pool_steps; l >= 0; l--) {
        if (dx) memset(v.dlev[l], 0, (size_t)B * v.h[l] * v.w[l] * C * sizeof(float));
        if (dx && l < c->pool_steps) pool_backward(v.dlev[l], v.dlev[l + 1], B, v.h[l], v.w[l], C, c->pool_kern);
        npred_rsample_backward(dx ? v.dlev[l] : NULL, v.dgrid, v.dF + (size_t)l * C, dy, v.lev[l], v.grid,
                               v.F + (size_t)l * C, m, B, v.h[l], v.w[l], C, n, c->align_corners);
    }
    if (dx) (dx_set ? npred_rsample_set_nchw : npred_rsample_add_nchw)(dx, v.dlev[0], B, C, c->h * c->w);
    npred_readout_point_grid_grad(r, t, v.dgrid, dshift, B);
    npred_readout_point_features_grad(r, t, v.dF, m);
}

void npred_point_pooled_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    snprintf(buf, n,
             "PointPooled2d (%d x %d x %d -> %d)%s and pooling for %d steps\n"
             "  -> AvgPool2d(kernel_size=(%d, %d), stride=%d, padding=0)\n",
             c->c, c->h, c->w, c->n, c->bias ? " with bias" : "", c->pool_steps, c->pool_kern, c->pool_kern,
             c->pool_kern);
}
