/* AttentionReadout, neuralpredictors 0.3.0 as intended (spec §2.10): the conv
 * padding is int(k > 1) (0.3.0 passes a bool, which torch 1.13 rejects).
 *
 *   a[b,o,:]  = softmax over h*w of (conv(x)[b,o] + cbias[o])   conv: c -> n, k x k
 *   T[b,o,c]  = sum_hw a[b,o,hw] x[b,c,hw]
 *   y[b,o]    = sum_c T[b,o,c] features[o,c] + bias[o]
 * Only attention_layers = 1 (a single conv, named attention.conv1) is
 * implemented; kernel 1 or 3 (with padding int(k > 1) any other size changes
 * the map and the 0.3.0 einsum fails).
 *
 * Per image: im2col (k = 3), conv as a GEMM, softmax, T as a GEMM; the
 * backward mirrors it (softmax Jacobian, two GEMMs into dx, col2im).
 * Workspace: A (max_batch*n*hw), T (max_batch*n*c), cols/dcols (c*k*k*hw),
 * dA (n*hw), dT (n*c). Threads: OpenBLAS inside the GEMMs; elementwise loops
 * OpenMP over neurons. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "readouts/readout.h"

#define A16(n) (((size_t)(n) + 15) / 16 * 16)

typedef struct {
    float *A, *T, *cols, *dcols, *dA, *dT;
} at_ws;

static at_ws views(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n, kk = (size_t)c->attention_kernel * c->attention_kernel;
    at_ws v;
    v.A = r->ws;
    v.T = v.A + A16(max_batch * n * hw);
    v.cols = v.T + A16(max_batch * n * c->c);
    v.dcols = v.cols + A16(c->c * kk * hw);
    v.dA = v.dcols + A16(c->c * kk * hw);
    v.dT = v.dA + A16(n * hw);
    return v;
}

size_t npred_attention_workspace(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n, kk = (size_t)c->attention_kernel * c->attention_kernel;
    return A16(max_batch * n * hw) + A16(max_batch * n * c->c) + 2 * A16(c->c * kk * hw) + A16(n * hw) +
           A16(n * c->c);
}

npred_status npred_attention_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    int k = c->attention_kernel;
    if (k != 1 && k != 3)
        return npred_errorf(NPRED_ERR_CONFIG, "attention_kernel %d: with padding int(k > 1) only 1 and 3 keep the map",
                            k);
    if (c->attention_layers != 1)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "attention_layers %d: only 1 is implemented", c->attention_layers);
    if (c->shared_features || c->shared_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "AttentionReadout has no shared features/grid");
    char name[NPRED_PARAM_NAMELEN];
    int64_t fs[2] = {c->n, c->c}, ws[4] = {c->n, c->c, k, k}, bs[1] = {c->n};
    snprintf(name, sizeof name, "%sfeatures", r->prefix);
    if ((r->p_features = npred_ptable_add(t, name, 0, NPRED_PT_F32, 2, fs)) < 0) return NPRED_ERR_ARG;
    snprintf(name, sizeof name, "%sattention.conv%d.weight", r->prefix, c->attention_layers);
    if ((r->p_att_w = npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, ws)) < 0) return NPRED_ERR_ARG;
    snprintf(name, sizeof name, "%sattention.conv%d.bias", r->prefix, c->attention_layers);
    if ((r->p_att_b = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
    if (c->bias) {
        snprintf(name, sizeof name, "%sbias", r->prefix);
        if ((r->p_bias = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
    }
    return NPRED_OK;
}

void npred_attention_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    float *f = npred_ptable_ptr(t, r->p_features), *w = npred_ptable_ptr(t, r->p_att_w);
    float *cb = npred_ptable_ptr(t, r->p_att_b);
    for (size_t i = 0; i < (size_t)c->n * c->c; i++) f[i] = (float)(c->init_noise * npred_rng_normal(rng));
    int kk = c->attention_kernel * c->attention_kernel;
    double std = sqrt(2.0 / ((double)c->c * kk + (double)c->n * kk)); /* xavier_normal_ */
    for (size_t i = 0; i < (size_t)c->n * c->c * kk; i++) w[i] = (float)(std * npred_rng_normal(rng));
    for (int i = 0; i < c->n; i++) cb[i] = 0.0f;
}

/* cols (c*9, hw) of x (c, h, w), 3x3, padding 1 */
static void im2col3(float *cols, const float *x, int C, int H, int W)
{
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < C; ch++)
        for (int di = 0; di < 3; di++)
            for (int dj = 0; dj < 3; dj++) {
                float *o = cols + ((size_t)(ch * 3 + di) * 3 + dj) * H * W;
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++) {
                        int si = i + di - 1, sj = j + dj - 1;
                        o[i * W + j] = si >= 0 && si < H && sj >= 0 && sj < W ? x[((size_t)ch * H + si) * W + sj] : 0;
                    }
            }
}

static void col2im3_add(float *dx, const float *cols, int C, int H, int W)
{
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < C; ch++)
        for (int di = 0; di < 3; di++)
            for (int dj = 0; dj < 3; dj++) {
                const float *g = cols + ((size_t)(ch * 3 + di) * 3 + dj) * H * W;
                for (int i = 0; i < H; i++)
                    for (int j = 0; j < W; j++) {
                        int si = i + di - 1, sj = j + dj - 1;
                        if (si >= 0 && si < H && sj >= 0 && sj < W) dx[((size_t)ch * H + si) * W + sj] += g[i * W + j];
                    }
            }
}

npred_status npred_attention_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, int B)
{
    const npred_readout_config *c = &r->cfg;
    at_ws v = views(r, r->max_batch);
    int n = c->n, C = c->c, hw = c->h * c->w, k = c->attention_kernel, ck = C * k * k;
    const float *W = npred_ptable_ptr(t, r->p_att_w), *cb = npred_ptable_ptr(t, r->p_att_b);
    const float *F = npred_ptable_ptr(t, r->p_features);
    const float *bias = r->p_bias >= 0 ? npred_ptable_ptr(t, r->p_bias) : NULL;
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * C * hw;
        float *A = v.A + (size_t)b * n * hw, *T = v.T + (size_t)b * n * C;
        const float *cols = xb;
        if (k == 3) {
            im2col3(v.cols, xb, C, c->h, c->w);
            cols = v.cols;
        }
        for (int o = 0; o < n; o++)
            for (int i = 0; i < hw; i++) A[(size_t)o * hw + i] = cb[o];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hw, ck, 1.0f, W, ck, cols, hw, 1.0f, A, hw);
#pragma omp parallel for schedule(static)
        for (int o = 0; o < n; o++) {
            float *a = A + (size_t)o * hw, mx = a[0];
            for (int i = 1; i < hw; i++) mx = a[i] > mx ? a[i] : mx;
            double s = 0;
            for (int i = 0; i < hw; i++) s += (a[i] = expf(a[i] - mx));
            float inv = (float)(1.0 / s);
            for (int i = 0; i < hw; i++) a[i] *= inv;
        }
        /* T (n, C) = A (n, hw) . x_b^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, hw, 1.0f, A, hw, xb, hw, 0.0f, T, C);
        for (int o = 0; o < n; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int ch = 0; ch < C; ch++) s += (double)T[(size_t)o * C + ch] * F[(size_t)o * C + ch];
            y[(size_t)b * n + o] = (float)s;
        }
    }
    return NPRED_OK;
}

void npred_attention_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx)
{
    const npred_readout_config *c = &r->cfg;
    at_ws v = views(r, r->max_batch);
    int n = c->n, C = c->c, hw = c->h * c->w, k = c->attention_kernel, ck = C * k * k, B = r->B;
    const float *W = npred_ptable_ptr(t, r->p_att_w), *F = npred_ptable_ptr(t, r->p_features);
    float *gW = npred_ptable_gradptr(t, r->p_att_w), *gcb = npred_ptable_gradptr(t, r->p_att_b);
    float *gF = npred_ptable_gradptr(t, r->p_features);
    if (r->p_bias >= 0) {
        float *gb = npred_ptable_gradptr(t, r->p_bias);
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n; o++) gb[o] += dy[(size_t)b * n + o];
    }
    for (int b = 0; b < B; b++) {
        const float *xb = r->x + (size_t)b * C * hw, *A = v.A + (size_t)b * n * hw, *T = v.T + (size_t)b * n * C;
        float *dxb = dx ? dx + (size_t)b * C * hw : NULL;
        for (int o = 0; o < n; o++) {
            float g = dy[(size_t)b * n + o];
            for (int ch = 0; ch < C; ch++) {
                gF[(size_t)o * C + ch] += g * T[(size_t)o * C + ch];
                v.dT[(size_t)o * C + ch] = g * F[(size_t)o * C + ch];
            }
        }
        /* dA (n, hw) = dT (n, C) . x_b (C, hw); dx_b += dT^T . A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hw, C, 1.0f, v.dT, C, xb, hw, 0.0f, v.dA, hw);
        if (dxb) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, hw, n, 1.0f, v.dT, C, A, hw, 1.0f, dxb, hw);
#pragma omp parallel for schedule(static)
        for (int o = 0; o < n; o++) { /* softmax backward, in place */
            float *d = v.dA + (size_t)o * hw;
            const float *a = A + (size_t)o * hw;
            double s = 0;
            for (int i = 0; i < hw; i++) s += (double)a[i] * d[i];
            double sb = 0;
            for (int i = 0; i < hw; i++) {
                d[i] = a[i] * (d[i] - (float)s);
                sb += d[i];
            }
            gcb[o] += (float)sb;
        }
        const float *cols = xb;
        if (k == 3) {
            im2col3(v.cols, xb, C, c->h, c->w);
            cols = v.cols;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ck, hw, 1.0f, v.dA, hw, cols, hw, 1.0f, gW, ck);
        if (!dxb) continue;
        if (k == 1) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, hw, n, 1.0f, W, ck, v.dA, hw, 1.0f, dxb, hw);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ck, hw, n, 1.0f, W, ck, v.dA, hw, 0.0f, v.dcols, hw);
            col2im3_add(dxb, v.dcols, C, c->h, c->w);
        }
    }
}

double npred_attention_regularizer(npred_readout *r, npred_ptable *t, double gscale)
{
    const float *f = npred_ptable_ptr(t, r->p_features);
    float *gf = npred_ptable_gradptr(t, r->p_features);
    size_t nf = (size_t)r->cfg.n * r->cfg.c;
    double s = 0, w = r->cfg.feature_reg_weight;
    float g = (float)(gscale * w);
    for (size_t i = 0; i < nf; i++) {
        s += fabs(f[i]);
        if (gscale != 0) gf[i] += f[i] > 0 ? g : f[i] < 0 ? -g : 0.0f;
    }
    return w * s;
}

void npred_attention_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    snprintf(buf, n, "AttentionReadout (%d x %d x %d -> %d)", c->c, c->h, c->w, c->n);
}
