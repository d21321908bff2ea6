/* Readout dispatch: config defaults, declaration, match ids, workspaces, common bias init. */
#include "readouts/readout.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "readouts/sample.h"

void npred_readout_config_default(npred_readout_config *c, npred_readout_type type, int ch, int h, int w, int n)
{
    memset(c, 0, sizeof *c);
    c->type = type;
    c->c = ch;
    c->h = h;
    c->w = w;
    c->n = n;
    c->bias = 1;
    c->feature_reg_weight = 1.0;
    c->normalize = 1;
    c->init_noise = 1e-3;
    c->init_mu_range = type == NPRED_READOUT_GAUSSIAN2D ? 0.5 : 0.1;
    c->init_sigma = 1.0;
    c->init_sigma_range = 0.5;
    c->gauss_type = NPRED_GAUSS_FULL;
    c->batch_sample = 1;
    c->align_corners = 1;
    c->gmp_input_dimensions = 2;
    c->gmp_hidden_layers = 0;
    c->gmp_hidden_features = 20;
    c->pool_steps = 1;
    c->pool_kern = 2;
    c->init_range = 0.1;
    c->attention_kernel = 1;
    c->attention_layers = 1;
    c->scale_n = 4; /* Pyramid's defaults (PointPyramid2d itself has none) */
    c->pyramid_type = NPRED_PYRAMID_GAUSS5X5;
    c->downsample = 1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* r->match_idx = np.unique(match_ids, return_inverse=True)[1]; returns the number of unique ids */
static int match_index(npred_readout *r, const int64_t *ids, int n)
{
    int64_t *u = malloc((size_t)n * sizeof *u);
    r->match_idx = malloc((size_t)n * sizeof *r->match_idx);
    if (!u || !r->match_idx) {
        free(u);
        return -1;
    }
    memcpy(u, ids, (size_t)n * sizeof *u);
    qsort(u, (size_t)n, sizeof *u, cmp_i64);
    int nu = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || u[i] != u[nu - 1]) u[nu++] = u[i];
    for (int i = 0; i < n; i++) {
        int lo = 0, hi = nu - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (u[mid] < ids[i]) lo = mid + 1;
            else hi = mid;
        }
        r->match_idx[i] = lo;
    }
    free(u);
    return nu;
}

static npred_status check_config(npred_readout *r)
{
    npred_readout_config *c = &r->cfg;
    if (c->c <= 0 || c->h <= 0 || c->w <= 0 || c->n <= 0)
        return npred_errorf(NPRED_ERR_CONFIG, "readout: in_shape (%d, %d, %d) and outdims %d must be positive", c->c,
                            c->h, c->w, c->n);
    if (c->shared_features || c->shared_grid) {
        if (!c->match_ids)
            return npred_errorf(NPRED_ERR_CONFIG, "readout: shared_features/shared_grid need match_ids (%d)", c->n);
        int nu = match_index(r, c->match_ids, c->n);
        if (nu < 0) return npred_errorf(NPRED_ERR_NOMEM, "readout: cannot allocate the match index");
        if (c->n_unique && c->n_unique != nu)
            return npred_errorf(NPRED_ERR_CONFIG, "readout: n_unique %d but match_ids hold %d unique ids", c->n_unique,
                                nu);
        c->n_unique = nu;
        c->match_ids = NULL; /* copied */
    }
    if (c->shared_features && (c->n_unique <= 0 || c->n_unique > c->n))
        return npred_errorf(NPRED_ERR_CONFIG, "readout: %d unique match ids for %d neurons", c->n_unique, c->n);
    if (c->params_n < 0 || c->params_n > 8)
        return npred_errorf(NPRED_ERR_CONFIG, "readout: %d inferred parameters (1..8)", c->params_n);
    if (c->params_n && c->type != NPRED_READOUT_FULL_GAUSSIAN2D)
        return npred_errorf(NPRED_ERR_CONFIG, "readout: a distribution encoder needs FullGaussian2d "
                            "(GeneralizedFullGaussianReadout2d)");
    if (c->params_n && c->shared_features)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout: shared features with a distribution encoder "
                            "(GeneralizedFullGaussianReadout2d) are not supported");
    if ((c->features_from && !c->shared_features) || (c->grid_from && !c->shared_grid))
        return npred_errorf(NPRED_ERR_CONFIG, "readout: features_from/grid_from need shared_features/shared_grid");
    return NPRED_OK;
}

npred_status npred_readout_declare(npred_readout *r, const npred_readout_config *cfg, const char *prefix,
                                   npred_ptable *t)
{
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    r->p_features = r->p_scales = r->p_spatial = r->p_bias = r->p_mu = r->p_sigma = r->p_grid = -1;
    r->p_source_grid = r->p_fsi = r->p_gsi = r->p_mt_w = r->p_mt_b = r->p_att_w = r->p_att_b = -1;
    r->p_filter = -1;
    for (int i = 0; i < 4; i++) r->p_mlp_w[i] = r->p_mlp_b[i] = -1;
    r->owns_features = !cfg->features_from;
    r->owns_grid = !cfg->grid_from;
    npred_status s = check_config(r);
    if (s) return s;
    switch (cfg->type) {
    case NPRED_READOUT_FACTORIZED: s = npred_factorized_declare(r, t); break;
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: s = npred_gaussian_declare(r, t); break;
    case NPRED_READOUT_POINT_POOLED: s = npred_point_pooled_declare(r, t); break;
    case NPRED_READOUT_ATTENTION: s = npred_attention_declare(r, t); break;
    case NPRED_READOUT_POINT_PYRAMID: s = npred_pyramid_declare(r, t); break;
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)cfg->type);
    }
    return s ? npred_error_prefix(s, "readout %s", prefix) : NPRED_OK;
}

size_t npred_readout_nhwc_floats(const npred_readout *r, int max_batch)
{
    int g = r->cfg.type == NPRED_READOUT_FULL_GAUSSIAN2D || r->cfg.type == NPRED_READOUT_GAUSSIAN2D;
    return g ? npred_gaussian_nhwc_floats(r, max_batch) : 0;
}

npred_status npred_readout_setup(npred_readout *r, const npred_ptable *t, int max_batch)
{
    (void)t;
    if (max_batch <= 0) return npred_errorf(NPRED_ERR_ARG, "readout %s: max_batch %d", r->prefix, max_batch);
    if (r->nhwc && r->nhwc_floats < npred_readout_nhwc_floats(r, max_batch))
        return npred_errorf(NPRED_ERR_ARG, "readout %s: %zu floats of input copy space, needs %zu", r->prefix,
                            r->nhwc_floats, npred_readout_nhwc_floats(r, max_batch));
    size_t n = 0;
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: n = npred_factorized_workspace(r, max_batch); break;
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: n = npred_gaussian_workspace(r, max_batch); break;
    case NPRED_READOUT_POINT_POOLED: n = npred_point_pooled_workspace(r, max_batch); break;
    case NPRED_READOUT_ATTENTION: n = npred_attention_workspace(r, max_batch); break;
    case NPRED_READOUT_POINT_PYRAMID: n = npred_pyramid_workspace(r, max_batch); break;
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)r->cfg.type);
    }
    free(r->ws);
    size_t bytes = (n + 16) / 16 * 16 * sizeof(float);
    r->ws = calloc(1, bytes); /* zero pages are committed only when used */
    if (!r->ws) return npred_errorf(NPRED_ERR_NOMEM, "readout %s: cannot allocate %zu floats", r->prefix, n);
    r->ws_size = n;
    r->max_batch = max_batch;
    r->mu_cached = 0;
    r->rows_made = 0;
    return r->bf16 ? npred_readout_set_bf16(r, 1) : NPRED_OK; /* packing space for the new batch */
}

static void bf16_release(npred_readout *r)
{
    free(r->bf_a);
    free(r->bf_b);
    r->bf_a = r->bf_b = NULL;
    r->bf_words[0] = r->bf_words[1] = 0;
}

npred_status npred_readout_set_bf16(npred_readout *r, int on)
{
    if (on && !npred_gemm_bf16_available())
        return npred_errorf(NPRED_ERR_UNSUPPORTED,
                            "bf16 precision needs AVX-512 BF16 (vdpbf16ps), which this CPU lacks (use fp32)");
    if (!on || r->cfg.type != NPRED_READOUT_FACTORIZED || r->max_batch <= 0) {
        bf16_release(r);
        r->bf16 = !!on;
        return NPRED_OK;
    }
    size_t w[2];
    npred_factorized_bf16_words(r, r->max_batch, w);
    if (r->bf_a && r->bf_b && w[0] <= r->bf_words[0] && w[1] <= r->bf_words[1]) {
        r->bf16 = 1;
        return NPRED_OK;
    }
    bf16_release(r);
    r->bf_a = aligned_alloc(64, (w[0] * 4 + 63) / 64 * 64);
    r->bf_b = aligned_alloc(64, (w[1] * 4 + 63) / 64 * 64);
    if (!r->bf_a || !r->bf_b) {
        bf16_release(r);
        r->bf16 = 0;
        return npred_errorf(NPRED_ERR_NOMEM, "readout %s: cannot allocate %zu + %zu words for bf16 operands",
                            r->prefix, w[0], w[1]);
    }
    r->bf_words[0] = w[0], r->bf_words[1] = w[1];
    r->bf16 = 1;
    return NPRED_OK;
}

void npred_readout_init_params(npred_readout *r, npred_ptable *t, npred_rng *rng, const float *mean_activity)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_init(r, t, rng); break;
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: npred_gaussian_init(r, t, rng); break;
    case NPRED_READOUT_POINT_POOLED: npred_point_pooled_init(r, t, rng); break;
    case NPRED_READOUT_ATTENTION: npred_attention_init(r, t, rng); break;
    case NPRED_READOUT_POINT_PYRAMID: npred_pyramid_init(r, t, rng); break;
    default: break;
    }
    if (r->p_bias >= 0) {
        float *b = npred_ptable_ptr(t, r->p_bias); /* (n) or (P, n): HEAD repeats the mean activity */
        size_t nb = t->items[r->p_bias].count;
        for (size_t i = 0; i < nb; i++) b[i] = mean_activity ? mean_activity[i % (size_t)r->cfg.n] : 0.0f;
    }
}

npred_status npred_readout_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                   int B, int train, npred_rng *rng, const float *noise)
{
    if (!r->ws) return npred_errorf(NPRED_ERR_ARG, "readout %s: forward before npred_readout_setup", r->prefix);
    if (B <= 0 || B > r->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "readout %s: batch of %d (capacity %d)", r->prefix, B, r->max_batch);
    if (!y || !x) return npred_errorf(NPRED_ERR_ARG, "readout %s: NULL input or output", r->prefix);
    r->x = x;
    r->B = B;
    r->train = train;
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED:
        if (shift) return npred_errorf(NPRED_ERR_ARG, "readout %s: FullFactorized2d takes no shift", r->prefix);
        return npred_factorized_forward(r, t, y, x, B);
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: return npred_gaussian_forward(r, t, y, x, shift, B, train, rng, noise);
    case NPRED_READOUT_POINT_POOLED: return npred_point_pooled_forward(r, t, y, x, shift, B);
    case NPRED_READOUT_ATTENTION: /* 0.3.0 AttentionReadout ignores the shift */
        return npred_attention_forward(r, t, y, x, B);
    case NPRED_READOUT_POINT_PYRAMID: return npred_pyramid_forward(r, t, y, x, shift, B);
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)r->cfg.type);
    }
}

/* dx zeroed for a readout that only adds into it: on the threads from 1 M floats
 * (serial, 51 MB took ~1 % of a SENSORIUM training step on one thread) */
#define RO_ZERO_PAR_MIN ((size_t)1 << 20)

static void zero_floats(float *p, size_t n)
{
    const int T = n >= RO_ZERO_PAR_MIN ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        const int nt = omp_get_num_threads(), k = omp_get_thread_num();
        size_t a = n / (size_t)nt * (size_t)k, b = k == nt - 1 ? n : n / (size_t)nt * (size_t)(k + 1);
        memset(p + a, 0, (b - a) * sizeof *p);
    }
}

static void readout_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift, int set)
{
    const npred_readout_config *c = &r->cfg;
    switch (c->type) {
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: npred_gaussian_backward(r, t, dy, dx, dshift, set); return;
    case NPRED_READOUT_POINT_POOLED: npred_point_pooled_backward(r, t, dy, dx, dshift, set); return;
    case NPRED_READOUT_POINT_PYRAMID: npred_pyramid_backward(r, t, dy, dx, dshift, set); return;
    default: break;
    }
    if (set && dx) zero_floats(dx, (size_t)r->B * c->c * c->h * c->w);
    switch (c->type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_backward(r, t, dy, dx); break;
    case NPRED_READOUT_ATTENTION: npred_attention_backward(r, t, dy, dx); break;
    default: break;
    }
}

void npred_readout_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift)
{
    readout_backward(r, t, dy, dx, dshift, 0);
}

void npred_readout_backward_set(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift)
{
    readout_backward(r, t, dy, dx, dshift, 1);
}

double npred_readout_regularizer(npred_readout *r, npred_ptable *t, double gscale)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: return npred_factorized_regularizer(r, t, gscale);
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: return npred_gaussian_regularizer(r, t, gscale);
    case NPRED_READOUT_POINT_POOLED:
    case NPRED_READOUT_ATTENTION:
    case NPRED_READOUT_POINT_PYRAMID: return npred_readout_feature_l1(r, t, gscale); /* features' L1 only */
    default: return 0;
    }
}

void npred_readout_repr(const npred_readout *r, char *buf, size_t n)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_repr(r, buf, n); break;
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D: npred_gaussian_repr(r, buf, n); break;
    case NPRED_READOUT_POINT_POOLED: npred_point_pooled_repr(r, buf, n); break;
    case NPRED_READOUT_ATTENTION: npred_attention_repr(r, buf, n); break;
    case NPRED_READOUT_POINT_PYRAMID: npred_pyramid_repr(r, buf, n); break;
    default: snprintf(buf, n, "readout type %d", (int)r->cfg.type); break;
    }
}

double npred_readout_feature_l1(npred_readout *r, npred_ptable *t, double gscale)
{
    const float *f = npred_ptable_ptr(t, r->p_features);
    float *gf = npred_ptable_gradptr(t, r->p_features);
    size_t nf = t->items[r->p_features].count;
    double s = 0, w = r->cfg.feature_reg_weight;
    float g = (float)(gscale * w);
    for (size_t i = 0; i < nf; i++) {
        s += fabs(f[i]);
        if (gscale != 0) gf[i] += f[i] > 0 ? g : f[i] < 0 ? -g : 0.0f;
    }
    return w * s;
}

void npred_readout_bias_grad(npred_readout *r, npred_ptable *t, const float *dy, int B)
{
    if (r->p_bias < 0) return;
    int n = r->cfg.n;
    float *gb = npred_ptable_gradptr(t, r->p_bias);
    for (int o = 0; gb && o < n; o++) {
        double s = 0;
        for (int b = 0; b < B; b++) s += dy[(size_t)b * n + o];
        gb[o] += (float)s;
    }
}

void npred_readout_point_grid(npred_readout *r, npred_ptable *t, float *grid, const float *shift, int B)
{
    int n = r->cfg.n;
    float *g = npred_ptable_ptr(t, r->p_grid);
    for (int i = 0; i < 2 * n; i++) g[i] = g[i] < -1.0f ? -1.0f : g[i] > 1.0f ? 1.0f : g[i];
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++)
            for (int k = 0; k < 2; k++)
                grid[((size_t)b * n + o) * 2 + k] = g[2 * o + k] + (shift ? shift[2 * b + k] : 0.0f);
}

void npred_readout_point_grid_grad(npred_readout *r, npred_ptable *t, const float *dgrid, float *dshift, int B)
{
    int n = r->cfg.n;
    float *gg = npred_ptable_gradptr(t, r->p_grid);
    for (int o = 0; gg && o < n; o++)
        for (int k = 0; k < 2; k++) {
            double s = 0;
            for (int b = 0; b < B; b++) s += dgrid[((size_t)b * n + o) * 2 + k];
            gg[2 * o + k] += (float)s;
        }
    if (dshift)
        for (int b = 0; b < B; b++)
            for (int k = 0; k < 2; k++) {
                double s = 0;
                for (int o = 0; o < n; o++) s += dgrid[((size_t)b * n + o) * 2 + k];
                dshift[2 * b + k] += (float)s;
            }
}

void npred_readout_point_features(const npred_readout *r, const npred_ptable *t, float *F, int m)
{
    int n = r->cfg.n;
    const float *f = npred_ptable_ptr(t, r->p_features);
    for (int j = 0; j < m; j++)
        for (int o = 0; o < n; o++) F[(size_t)o * m + j] = f[(size_t)j * n + o];
}

void npred_readout_point_features_grad(npred_readout *r, npred_ptable *t, const float *dF, int m)
{
    int n = r->cfg.n;
    float *gf = npred_ptable_gradptr(t, r->p_features);
    for (int j = 0; gf && j < m; j++)
        for (int o = 0; o < n; o++) gf[(size_t)j * n + o] += dF[(size_t)o * m + j];
}

void npred_readout_free(npred_readout *r)
{
    free(r->ws);
    free(r->match_idx);
    free(r->impl);
    bf16_release(r);
    r->ws = NULL;
    r->match_idx = NULL;
    r->impl = NULL;
}

int npred_readout_param(npred_ptable *t, const npred_readout *r, const char *key, int is_buffer, npred_ptype dt,
                            int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    char name[NPRED_PARAM_NAMELEN];
    int64_t shape[4] = {d0, d1, d2, d3};
    snprintf(name, sizeof name, "%s%s", r->prefix, key);
    return npred_ptable_add(t, name, is_buffer, dt, ndim, shape);
}


void npred_readout_point_sample(const npred_readout *r, const npred_ptable *t, float *y, float *const *lev,
                                const int *h, const int *w, int L, const float *grid, const float *F, int B)
{
    int n = r->cfg.n, C = r->cfg.c, m = C * L;
    const float *bias = r->p_bias >= 0 ? npred_ptable_ptr(t, r->p_bias) : NULL;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++) y[(size_t)b * n + o] = bias ? bias[o] : 0.0f;
    for (int l = 0; l < L; l++)
        npred_rsample_forward(y, lev[l], grid, F + (size_t)l * C, (size_t)m, 1, B, h[l], w[l], C, n,
                              r->cfg.align_corners);
}
