/* FullFactorized2d (SpatialXFeatureLinear), neuralpredictors 0.3.0.
 *
 *   m[o]   = spatial[o] / (||spatial[o]||_2 + 1e-6)          (normalize)
 *   y[b,o] = sum_c F[o,c] * sum_hw x[b,c,hw] * m[o,hw] + bias[o]
 *
 * PyTorch materialises the (n, c, h, w) weight; we never do. The forward is one
 * GEMM  T (B*c, n) = X (B*c, hw) . m^T  followed by a contraction with F; the
 * backward is two GEMMs (dm = dT^T X, dx += dT m). T is kept for the backward.
 *
 * Workspace (floats): m (n*hw), dm (n*hw), F (n*c), dF (n*c; F transposed while free),
 * T (max_batch*c*n).
 * Threads: OpenBLAS (OpenMP build) inside the GEMMs; the elementwise loops use
 * OpenMP over neurons.
 *
 * bf16 precision (r->bf16): the three GEMMs multiply bf16-rounded operands with
 * fp32 accumulation (kernels/gemm.h, packed once per product into r->bf_a / bf_b);
 * every thread packs and computes its own share, and the result does not depend on
 * the thread count. Everything else stays fp32. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "kernels/gemm.h"
#include "readouts/readout.h"

#define NORM_EPS 1e-6

typedef struct {
    float *m, *dm, *F, *dF, *T;
    double *norm; /* (n) ||spatial[o]|| */
} fz_ws;

static fz_ws views(const npred_readout *r)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n;
    fz_ws v;
    v.m = r->ws;
    v.dm = v.m + n * hw;
    v.F = v.dm + n * hw;
    v.dF = v.F + n * (size_t)c->c;
    v.norm = (double *)(v.dF + n * (size_t)c->c); /* 8-byte aligned: 2 n hw + 2 n c floats from ws */
    v.T = (float *)(v.norm + n);
    return v;
}

size_t npred_factorized_workspace(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n;
    return 2 * n * hw + 2 * n * (size_t)c->c + 1 + 2 * n + (size_t)max_batch * c->c * n;
}

void npred_factorized_bf16_words(const npred_readout *r, int max_batch, size_t words[2])
{
    const npred_readout_config *c = &r->cfg;
    int hw = c->h * c->w, n = c->n, bc = max_batch * c->c;
    size_t a0 = npred_bf16_packed_a_words(bc, hw, 0), a1 = npred_bf16_packed_a_words(n, bc, 1),
           a2 = npred_bf16_packed_a_words(bc, n, 0);
    size_t b0 = npred_bf16_packed_b_words(hw, n), b1 = npred_bf16_packed_b_words(bc, hw),
           b2 = npred_bf16_packed_b_words(n, hw);
    words[0] = a0 > a1 ? (a0 > a2 ? a0 : a2) : (a1 > a2 ? a1 : a2);
    words[1] = b0 > b1 ? (b0 > b2 ? b0 : b2) : (b1 > b2 ? b1 : b2);
}

/* C (m x n) = [C +] A . B in bf16 (A(i, p) = a[i * lda + p], or a[p * lda + i] when
 * a_trans; B(p, j) = b[p * brs + j * bcs]): both operands packed by all threads, then
 * the rows of C shared */
static void bf16_gemm(npred_readout *r, int m, int n, int k, const float *a, ptrdiff_t lda, int a_trans,
                      const float *b, ptrdiff_t brs, ptrdiff_t bcs, float *c, ptrdiff_t ldc, int acc)
{
    uint32_t *ap = r->bf_a, *bp = r->bf_b;
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        npred_bf16_pack_a(ap, m, k, a, lda, a_trans, t, nt);
        npred_bf16_pack_b(bp, k, n, b, brs, bcs, t, nt);
#pragma omp barrier
        npred_gemm_bf16_packed(m, n, k, ap, a_trans, bp, c, ldc, acc, t, nt);
    }
}

npred_status npred_factorized_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    char name[NPRED_PARAM_NAMELEN];
    int64_t sp[3] = {c->n, c->h, c->w};
    snprintf(name, sizeof name, "%sspatial", r->prefix);
    if ((r->p_spatial = npred_ptable_add(t, name, 0, NPRED_PT_F32, 3, sp)) < 0) return NPRED_ERR_ARG;
    int64_t fs[2] = {c->shared_features ? c->n_unique : c->n, c->c};
    snprintf(name, sizeof name, "%s_features", r->prefix);
    if (c->features_from) { /* borrowed from the first session: the same storage under this key */
        if ((r->p_features = npred_ptable_alias(t, name, c->features_from->p_features)) < 0) return NPRED_ERR_ARG;
    } else if ((r->p_features = npred_ptable_add(t, name, 0, NPRED_PT_F32, 2, fs)) < 0) {
        return NPRED_ERR_ARG;
    }
    if (c->shared_features) {
        int64_t ss[2] = {c->n, 1};
        snprintf(name, sizeof name, "%sscales", r->prefix);
        if ((r->p_scales = npred_ptable_add(t, name, 0, NPRED_PT_F32, 2, ss)) < 0) return NPRED_ERR_ARG;
    }
    if (c->bias) {
        int64_t bs[1] = {c->n};
        snprintf(name, sizeof name, "%sbias", r->prefix);
        if ((r->p_bias = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
    }
    return NPRED_OK;
}

void npred_factorized_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    float *sp = npred_ptable_ptr(t, r->p_spatial);
    for (size_t i = 0; i < (size_t)c->n * c->h * c->w; i++) sp[i] = (float)(c->init_noise * npred_rng_normal(rng));
    if (r->owns_features) {
        const npred_param *p = &t->items[r->p_features];
        float *f = npred_ptable_ptr(t, r->p_features);
        for (size_t i = 0; i < p->count; i++) f[i] = (float)(c->init_noise * npred_rng_normal(rng));
    }
    if (r->p_scales >= 0) {
        float *s = npred_ptable_ptr(t, r->p_scales);
        for (int i = 0; i < c->n; i++) s[i] = 1.0f;
    }
}

/* m = spatial / (||spatial|| + eps) (or spatial itself), clamped at 0 when constrain_pos */
static void make_mask(npred_readout *r, npred_ptable *t, fz_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w;
    float *sp = npred_ptable_ptr(t, r->p_spatial);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < c->n; o++) {
        const float *s = sp + (size_t)o * hw;
        float *m = v->m + (size_t)o * hw;
        double ss = 0;
        for (size_t i = 0; i < hw; i++) ss += (double)s[i] * s[i];
        double nr = sqrt(ss);
        v->norm[o] = nr;
        if (c->normalize) {
            float d = (float)(nr + NORM_EPS);
            for (size_t i = 0; i < hw; i++) m[i] = s[i] / d;
        } else {
            memcpy(m, s, hw * sizeof *m);
        }
        if (c->constrain_pos) {
            for (size_t i = 0; i < hw; i++)
                if (m[i] < 0) m[i] = 0;
            if (!c->normalize) /* m.data is the parameter itself */
                memcpy(sp + (size_t)o * hw, m, hw * sizeof *m);
        }
    }
}

/* F[o,c] = scales[o] * _features[idx[o], c] (or _features) ; constrain_pos clamps in place */
static void make_features(npred_readout *r, npred_ptable *t, fz_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    float *f = npred_ptable_ptr(t, r->p_features);
    if (c->constrain_pos && !c->shared_features) {
        const npred_param *p = &t->items[r->p_features];
        for (size_t i = 0; i < p->count; i++)
            if (f[i] < 0) f[i] = 0;
    }
    if (!c->shared_features) {
        memcpy(v->F, f, (size_t)c->n * c->c * sizeof *f);
        return;
    }
    const float *sc = npred_ptable_ptr(t, r->p_scales);
    for (int o = 0; o < c->n; o++)
        for (int k = 0; k < c->c; k++) {
            float val = sc[o] * f[(size_t)r->match_idx[o] * c->c + k];
            v->F[(size_t)o * c->c + k] = (c->constrain_pos && val < 0) ? 0 : val;
        }
}

/* Ft (c, n) = F (n, c) transposed, in blocks that stay in cache */
static void transpose_features(float *Ft, const float *F, int n, int C)
{
#pragma omp parallel for schedule(static)
    for (int o0 = 0; o0 < n; o0 += 64)
        for (int k = 0; k < C; k++)
            for (int o = o0; o < n && o < o0 + 64; o++) Ft[(size_t)k * n + o] = F[(size_t)o * C + k];
}

npred_status npred_factorized_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, int B)
{
    const npred_readout_config *c = &r->cfg;
    fz_ws v = views(r);
    int hw = c->h * c->w, n = c->n, C = c->c;
    make_mask(r, t, &v);
    make_features(r, t, &v);
    /* T (B*C, n) = X (B*C, hw) . m^T */
    if (r->bf16)
        bf16_gemm(r, B * C, n, hw, x, hw, 0, v.m, 1, hw, v.T, n, 0);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B * C, n, hw, 1.0f, x, hw, v.m, hw, 0.0f, v.T, n);
    const float *bias = r->p_bias >= 0 ? npred_ptable_ptr(t, r->p_bias) : NULL;
    float *Ft = v.dF; /* F transposed (c, n), in dF's space (free until the backward) */
    transpose_features(Ft, v.F, n, C);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *yb = y + (size_t)b * n;
        for (int o = 0; o < n; o++) yb[o] = bias ? bias[o] : 0.0f;
        for (int k = 0; k < C; k++) {
            const float *Tk = v.T + ((size_t)b * C + k) * n, *Fk = Ft + (size_t)k * n;
            for (int o = 0; o < n; o++) yb[o] += Fk[o] * Tk[o];
        }
    }
    return NPRED_OK;
}

/* dm (n, hw) -> d spatial, through m = s / (||s|| + eps) */
static void mask_backward(npred_readout *r, npred_ptable *t, fz_ws *v, const float *dm)
{
    const npred_readout_config *c = &r->cfg;
    size_t hw = (size_t)c->h * c->w;
    const float *sp = npred_ptable_ptr(t, r->p_spatial);
    float *gs = npred_ptable_gradptr(t, r->p_spatial);
    if (!gs) return;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < c->n; o++) {
        const float *s = sp + (size_t)o * hw, *g = dm + (size_t)o * hw;
        float *d = gs + (size_t)o * hw;
        if (!c->normalize) {
            for (size_t i = 0; i < hw; i++) d[i] += g[i];
            continue;
        }
        double nr = v->norm[o], den = nr + NORM_EPS, dot = 0;
        for (size_t i = 0; i < hw; i++) dot += (double)g[i] * s[i];
        double k = nr > 0 ? dot / (den * den * nr) : 0;
        for (size_t i = 0; i < hw; i++) d[i] += (float)(g[i] / den - s[i] * k);
    }
}

/* dF (n, c) -> d _features (and d scales when shared) */
static void features_backward(npred_readout *r, npred_ptable *t, const float *dF)
{
    const npred_readout_config *c = &r->cfg;
    float *gf = npred_ptable_gradptr(t, r->p_features);
    if (!gf) return;
    if (!c->shared_features) {
        for (size_t i = 0; i < (size_t)c->n * c->c; i++) gf[i] += dF[i];
        return;
    }
    const float *f = npred_ptable_ptr(t, r->p_features), *sc = npred_ptable_ptr(t, r->p_scales);
    float *gsc = npred_ptable_gradptr(t, r->p_scales);
    for (int o = 0; o < c->n; o++) {
        const float *fo = f + (size_t)r->match_idx[o] * c->c;
        float *go = gf + (size_t)r->match_idx[o] * c->c;
        double ds = 0;
        for (int k = 0; k < c->c; k++) {
            go[k] += sc[o] * dF[(size_t)o * c->c + k];
            ds += (double)fo[k] * dF[(size_t)o * c->c + k];
        }
        gsc[o] += (float)ds;
    }
}

void npred_factorized_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx)
{
    const npred_readout_config *c = &r->cfg;
    fz_ws v = views(r);
    int hw = c->h * c->w, n = c->n, C = c->c, B = r->B;
    if (r->p_bias >= 0 && !t->grads_off) {
        float *gb = npred_ptable_gradptr(t, r->p_bias);
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n; o++) gb[o] += dy[(size_t)b * n + o];
    }
    /* dF[o,k] = sum_b dy[b,o] T[b,k,o] (b in order, in double), in blocks of 512 neurons
     * so that the rows of T and dy are read contiguously; then T <- dT[b,k,o] = dy[b,o] F[o,k] */
    enum { OB = 512 };
    int nob = (n + OB - 1) / OB;
#pragma omp parallel for schedule(static) if (!t->grads_off)
    for (int q = 0; q < (t->grads_off ? 0 : C * nob); q++) {
        int k = q / nob, o0 = (q % nob) * OB, on = n - o0 < OB ? n - o0 : OB;
        double acc[OB];
        for (int o = 0; o < on; o++) acc[o] = 0;
        for (int b = 0; b < B; b++) {
            const float *d = dy + (size_t)b * n + o0, *Tk = v.T + ((size_t)b * C + k) * n + o0;
            for (int o = 0; o < on; o++) acc[o] += (double)d[o] * Tk[o];
        }
        for (int o = 0; o < on; o++) v.dF[(size_t)(o0 + o) * C + k] = (float)acc[o];
    }
    if (!t->grads_off) features_backward(r, t, v.dF);
    float *Ft = v.dF; /* dF is used: F transposed (c, n) in its space */
    transpose_features(Ft, v.F, n, C);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < C; k++) {
            float *Tk = v.T + ((size_t)b * C + k) * n;
            const float *dyb = dy + (size_t)b * n, *Fk = Ft + (size_t)k * n;
            for (int o = 0; o < n; o++) Tk[o] = dyb[o] * Fk[o];
        }
    if (!t->grads_off) {
        /* dm (n, hw) = dT^T (n, B*C) . X (B*C, hw) */
        if (r->bf16)
            bf16_gemm(r, n, hw, B * C, v.T, n, 1, r->x, hw, 1, v.dm, hw, 0);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hw, B * C, 1.0f, v.T, n, r->x, hw, 0.0f, v.dm,
                        hw);
        mask_backward(r, t, &v, v.dm);
    }
    /* dx (B*C, hw) += dT (B*C, n) . m (n, hw) */
    if (dx && r->bf16)
        bf16_gemm(r, B * C, hw, n, v.T, n, 0, v.m, hw, 1, dx, hw, 1);
    else if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B * C, hw, n, 1.0f, v.T, n, v.m, hw, 1.0f, dx, hw);
}

static float sgn(float a) { return (float)((a > 0) - (a < 0)); }

/* 0.3.0 regularizer with its outer-product broadcast:
 *   reg = w * (sum_o |m_o|_1) * (sum_o |F_o|_1)                                  */
double npred_factorized_regularizer(npred_readout *r, npred_ptable *t, double gscale)
{
    const npred_readout_config *c = &r->cfg;
    fz_ws v = views(r);
    size_t hw = (size_t)c->h * c->w, n = (size_t)c->n;
    make_mask(r, t, &v);
    make_features(r, t, &v);
    double sm = 0, sf = 0;
    for (size_t i = 0; i < n * hw; i++) sm += fabs(v.m[i]);
    for (size_t i = 0; i < n * (size_t)c->c; i++) sf += fabs(v.F[i]);
    double w = c->feature_reg_weight;
    if (gscale != 0) {
        float gm = (float)(gscale * w * sf), gf = (float)(gscale * w * sm);
        for (size_t i = 0; i < n * hw; i++) v.dm[i] = gm * sgn(v.m[i]);
        mask_backward(r, t, &v, v.dm);
        for (size_t i = 0; i < n * (size_t)c->c; i++) v.dF[i] = gf * sgn(v.F[i]);
        features_backward(r, t, v.dF);
    }
    return w * sm * sf;
}

void npred_factorized_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    snprintf(buf, n, "FullFactorized2d (%d x %d x %d -> %d)%s%s%s", c->c, c->h, c->w, c->n,
             c->bias ? " with bias" : "",
             c->shared_features ? (r->owns_features ? ", with original features" : ", with shared features") : "",
             c->normalize ? ", normalized" : ", unnormalized");
}
