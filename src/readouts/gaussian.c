/* FullGaussian2d and the legacy Gaussian2d, neuralpredictors 0.3.0 (spec §2.2, §2.3, §3).
 *
 * Each neuron o reads the core output at one position per image:
 *   mu[o]      the mean position: the parameter _mu (clamped to [-1, 1] IN PLACE
 *              before every forward), or _mu[match id] (shared grid), or
 *              mu_transform(_mu[match id]) (grid borrowed from another session),
 *              or mu_transform(source_grid[o]) (grid_mean_predictor "cortex")
 *   g[b,o]     = mu[o] + sigma[o] z[b,o] in training (z ~ N(0,1), one draw per
 *              image unless batch_sample=0), mu[o] in eval; full: sigma is a 2x2
 *              matrix (g_c = mu_c + sum_d sigma[o,c,d] z_d); uncorrelated: one
 *              scale per coordinate; isotropic: one scale
 *   grid[b,o]  = clamp(g, -1, 1) + shift[b]     (clamped entries pass no gradient)
 *   y[b,o]     = sum_c F[o,c] bilinear(x[b], grid[b,o])[c] + bias[o]
 * with F[o,c] = _features[0,c,0,o] (or scales[o] * _features[0,c,0,match id]).
 * GeneralizedFullGaussianReadout2d (HEAD; cfg.params_n = P >= 1): the same grid, P
 * feature sets _features[p,0,c,0,o] and biases bias[p,o]; y (P, B, n), one contraction
 * per p (P calls of the fused sampler).
 * Gaussian2d (legacy) also clamps sigma >= 0 in place and has parameters mu,
 * sigma (1,n,1,2), features (1,c,1,n).
 *
 * Speed: x (B, c, h, w) is transposed once into a channels-last workspace; the
 * sampling is fused with the contraction over channels (readouts/sample.h), so
 * the (B, n, c) sample tensor never exists. Backward scatters into a
 * channels-last gradient and transposes it back into dx (added, or written
 * when asked: npred_readout_backward_set).
 *
 * Workspace (floats, each block 16-aligned): xt, dxt (max_batch*h*w*c);
 * grid, gpre, z, dgrid (max_batch*n*2), cell (max_batch*n, uint32) -- these seven in the
 * model's block shared by its sessions when it gives one (r->nhwc); mu, dmu (n*2); F, dF (n*c); the grid
 * predictor's activations (2 per linear layer, n x width) and two gradient
 * rows (n x max width). Threads: OpenMP inside the sampling kernels and over
 * neurons in the parameter reductions. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "readouts/normals.h"
#include "readouts/readout.h"
#include "readouts/sample.h"
#include "readouts/sample_bf16.h"

#define A16(n) (((size_t)(n) + 15) / 16 * 16)
/* from this batch size on, the forward makes the feature rows (n, c) once
 * rather than reading the channel-major parameter once per image */
#define GS_ROWS_MIN_BATCH 4
/* neurons per chunk of the backward's per-neuron sums over the images (48 KB of
 * double accumulators) */
#define GS_RED 1024
/* below this many elements a pass over the parameters (feature rows, the grid
 * predictor's layers, the outputs' bias) runs on the calling thread; above, a fork
 * and join (~10 us) costs less than a tenth of the pass */
#define GS_PAR_MIN 1e5

typedef struct {
    float *xt, *dxt, *grid, *gpre, *z, *dgrid, *mu, *dmu, *F, *dF;
    uint32_t *cell; /* the cells of grid (npred_rsample_cells; grid then holds their (w, n)) */
    float *pre[4], *act[4]; /* grid predictor: pre-activation and output of each linear (n, width) */
    float *da, *db;         /* (n, max width) gradient scratch */
    float *key;             /* the grid predictor's inputs (source_grid, weights, biases) of act[] */
} gs_ws;

static int is_legacy(const npred_readout *r) { return r->cfg.type == NPRED_READOUT_GAUSSIAN2D; }
/* number of outputs per neuron (1, or P of the generalized readout) */
static int nparams(const npred_readout *r) { return r->cfg.params_n > 0 ? r->cfg.params_n : 1; }

static int mlp_maxw(const npred_readout *r)
{
    int m = 2;
    for (int i = 0; i <= r->n_mlp; i++)
        if (r->mlp_dim[i] > m) m = r->mlp_dim[i];
    return m;
}

/* floats of the grid predictor's inputs: source_grid (n, d) and every weight and bias */
static size_t mlp_key_floats(const npred_readout *r)
{
    if (!r->n_mlp) return 0;
    size_t k = (size_t)r->cfg.n * r->mlp_dim[0];
    for (int i = 0; i < r->n_mlp; i++) k += (size_t)r->mlp_dim[i + 1] * (r->mlp_dim[i] + 1);
    return k;
}

static gs_ws views(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t img = (size_t)c->c * c->h * c->w, pts = (size_t)max_batch * c->n * 2, n = (size_t)c->n;
    gs_ws v;
    memset(&v, 0, sizeof v);
    float *p = r->ws;
    /* the input copy, its gradient and the positions of the last forward: in the
     * model's shared block when it gives one */
    float *q = r->nhwc ? r->nhwc : p;
    v.xt = q, q += A16(max_batch * img);
    v.dxt = q, q += A16(max_batch * img);
    v.grid = q, q += A16(pts);
    v.gpre = q, q += A16(pts);
    v.z = q, q += A16(pts);
    v.dgrid = q, q += A16(pts);
    v.cell = (uint32_t *)(void *)q, q += A16(pts / 2);
    if (!r->nhwc) p = q;
    v.mu = p, p += A16(2 * n);
    v.dmu = p, p += A16(2 * n);
    v.F = p, p += A16((size_t)nparams(r) * n * c->c);
    v.dF = p, p += A16((size_t)nparams(r) * n * c->c);
    for (int i = 0; i < r->n_mlp; i++) {
        v.pre[i] = p, p += A16(n * r->mlp_dim[i + 1]);
        v.act[i] = p, p += A16(n * r->mlp_dim[i + 1]);
    }
    if (r->n_mlp) {
        v.da = p, p += A16(n * mlp_maxw(r));
        v.db = p, p += A16(n * mlp_maxw(r));
        v.key = p, p += A16(mlp_key_floats(r));
    }
    (void)p;
    return v;
}

size_t npred_gaussian_nhwc_floats(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    return 2 * A16((size_t)max_batch * c->c * c->h * c->w) + 4 * A16((size_t)max_batch * c->n * 2) +
           A16((size_t)max_batch * c->n);
}

size_t npred_gaussian_workspace(const npred_readout *r, int max_batch)
{
    const npred_readout_config *c = &r->cfg;
    size_t img = (size_t)c->c * c->h * c->w, pts = (size_t)max_batch * c->n * 2, n = (size_t)c->n;
    size_t s = (r->nhwc ? 0 : 2 * A16(max_batch * img) + 4 * A16(pts) + A16(pts / 2)) + 2 * A16(2 * n) +
               2 * A16((size_t)nparams(r) * n * c->c);
    for (int i = 0; i < r->n_mlp; i++) s += 2 * A16(n * r->mlp_dim[i + 1]);
    if (r->n_mlp) s += 2 * A16(n * mlp_maxw(r)) + A16(mlp_key_floats(r));
    return s;
}

/* ------------------------------------------------------------ declare --- */


static int alias(npred_ptable *t, const npred_readout *r, const char *key, int target)
{
    char name[NPRED_PARAM_NAMELEN];
    snprintf(name, sizeof name, "%s%s", r->prefix, key);
    return npred_ptable_alias(t, name, target);
}

static npred_status check(const npred_readout *r)
{
    const npred_readout_config *c = &r->cfg;
    if (!(c->init_mu_range > 0 && c->init_mu_range <= 1))
        return npred_errorf(NPRED_ERR_CONFIG, "init_mu_range %g must lie in (0, 1]", c->init_mu_range);
    if (is_legacy(r)) {
        if (!(c->init_sigma_range > 0))
            return npred_errorf(NPRED_ERR_CONFIG, "init_sigma_range %g must be positive", c->init_sigma_range);
        if (c->shared_features || c->shared_grid || c->predicted_grid)
            return npred_errorf(NPRED_ERR_CONFIG, "Gaussian2d has no shared features/grid or grid_mean_predictor");
        return NPRED_OK;
    }
    if (!(c->init_sigma > 0)) return npred_errorf(NPRED_ERR_CONFIG, "init_sigma %g must be positive", c->init_sigma);
    if (c->gauss_type != NPRED_GAUSS_FULL && c->gauss_type != NPRED_GAUSS_UNCORRELATED &&
        c->gauss_type != NPRED_GAUSS_ISOTROPIC)
        return npred_errorf(NPRED_ERR_CONFIG, "gauss_type %d not known (full, uncorrelated, isotropic)",
                            (int)c->gauss_type);
    if (c->predicted_grid && c->shared_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "grid_mean_predictor and shared_grid cannot both be set");
    if (c->predicted_grid) {
        if (c->gmp_input_dimensions < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "grid_mean_predictor input_dimensions %d", c->gmp_input_dimensions);
        if (c->gmp_hidden_layers < 0 || c->gmp_hidden_layers > 3)
            return npred_errorf(NPRED_ERR_CONFIG, "grid_mean_predictor hidden_layers %d (0..3 supported)",
                                c->gmp_hidden_layers);
        if (c->gmp_hidden_layers > 0 && c->gmp_hidden_features < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "grid_mean_predictor hidden_features %d", c->gmp_hidden_features);
    }
    return NPRED_OK;
}

static npred_status declare_full(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    int n = c->n, nu = c->n_unique;
    if (c->predicted_grid) {
        r->n_mlp = c->gmp_hidden_layers + 1;
        r->mlp_dim[0] = c->gmp_input_dimensions;
        for (int i = 1; i < r->n_mlp; i++) r->mlp_dim[i] = c->gmp_hidden_features;
        r->mlp_dim[r->n_mlp] = 2;
        for (int i = 0; i < r->n_mlp; i++) {
            char key[64];
            snprintf(key, sizeof key, "mu_transform.%d.weight", 2 * i);
            if ((r->p_mlp_w[i] =
                     npred_readout_param(t, r, key, 0, NPRED_PT_F32, 2, r->mlp_dim[i + 1], r->mlp_dim[i], 0, 0)) < 0)
                return NPRED_ERR_ARG;
            snprintf(key, sizeof key, "mu_transform.%d.bias", 2 * i);
            if ((r->p_mlp_b[i] = npred_readout_param(t, r, key, 0, NPRED_PT_F32, 1, r->mlp_dim[i + 1], 0, 0, 0)) < 0)
                return NPRED_ERR_ARG;
        }
        if ((r->p_source_grid =
                 npred_readout_param(t, r, "source_grid", 1, NPRED_PT_F32, 2, n, c->gmp_input_dimensions, 0, 0)) < 0)
            return NPRED_ERR_ARG;
    } else if (c->shared_grid) {
        if (c->grid_from) {
            const npred_readout *f = c->grid_from;
            if (f->cfg.type != NPRED_READOUT_FULL_GAUSSIAN2D || f->p_mu < 0 || !f->owns_grid ||
                t->items[f->p_mu].shape[1] != nu)
                return npred_errorf(NPRED_ERR_CONFIG, "shared grid needs to have shape (1, %d, 1, 2)", nu);
            if ((r->p_mu = alias(t, r, "_mu", f->p_mu)) < 0) return NPRED_ERR_ARG;
            if ((r->p_mt_w = npred_readout_param(t, r, "mu_transform.weight", 0, NPRED_PT_F32, 2, 2, 2, 0, 0)) < 0 ||
                (r->p_mt_b = npred_readout_param(t, r, "mu_transform.bias", 0, NPRED_PT_F32, 1, 2, 0, 0, 0)) < 0)
                return NPRED_ERR_ARG;
        } else if ((r->p_mu = npred_readout_param(t, r, "_mu", 0, NPRED_PT_F32, 4, 1, nu, 1, 2)) < 0) {
            return NPRED_ERR_ARG;
        }
        if ((r->p_gsi = npred_readout_param(t, r, "grid_sharing_index", 1, NPRED_PT_I64, 1, n, 0, 0, 0)) < 0)
            return NPRED_ERR_ARG;
    } else if ((r->p_mu = npred_readout_param(t, r, "_mu", 0, NPRED_PT_F32, 4, 1, n, 1, 2)) < 0) {
        return NPRED_ERR_ARG;
    }
    int s2 = c->gauss_type == NPRED_GAUSS_FULL ? 2 : 1, s3 = c->gauss_type == NPRED_GAUSS_ISOTROPIC ? 1 : 2;
    if ((r->p_sigma = npred_readout_param(t, r, "sigma", 0, NPRED_PT_F32, 4, 1, n, s2, s3)) < 0) return NPRED_ERR_ARG;
    if (c->shared_features) {
        if (c->features_from) {
            const npred_readout *f = c->features_from;
            if (f->cfg.type != NPRED_READOUT_FULL_GAUSSIAN2D || f->p_features < 0 || !f->owns_features ||
                t->items[f->p_features].shape[1] != c->c || t->items[f->p_features].shape[3] != nu)
                return npred_errorf(NPRED_ERR_CONFIG, "shared features need to have shape (1, %d, 1, %d)", c->c, nu);
            if ((r->p_features = alias(t, r, "_features", f->p_features)) < 0) return NPRED_ERR_ARG;
        } else if ((r->p_features = npred_readout_param(t, r, "_features", 0, NPRED_PT_F32, 4, 1, c->c, 1, nu)) < 0) {
            return NPRED_ERR_ARG;
        }
        if ((r->p_scales = npred_readout_param(t, r, "scales", 0, NPRED_PT_F32, 4, 1, 1, 1, n)) < 0)
            return NPRED_ERR_ARG;
        if ((r->p_fsi = npred_readout_param(t, r, "feature_sharing_index", 1, NPRED_PT_I64, 1, n, 0, 0, 0)) < 0)
            return NPRED_ERR_ARG;
    } else if (c->params_n) { /* GeneralizedFullGaussianReadout2d: (P, 1, c, 1, n), bias (P, n) */
        char name[NPRED_PARAM_NAMELEN];
        int64_t fs[5] = {c->params_n, 1, c->c, 1, n}, bs[2] = {c->params_n, n};
        snprintf(name, sizeof name, "%s_features", r->prefix);
        if ((r->p_features = npred_ptable_add(t, name, 0, NPRED_PT_F32, 5, fs)) < 0) return NPRED_ERR_ARG;
        snprintf(name, sizeof name, "%sbias", r->prefix);
        if (c->bias && (r->p_bias = npred_ptable_add(t, name, 0, NPRED_PT_F32, 2, bs)) < 0) return NPRED_ERR_ARG;
        return NPRED_OK;
    } else if ((r->p_features = npred_readout_param(t, r, "_features", 0, NPRED_PT_F32, 4, 1, c->c, 1, n)) < 0) {
        return NPRED_ERR_ARG;
    }
    if (c->bias && (r->p_bias = npred_readout_param(t, r, "bias", 0, NPRED_PT_F32, 1, n, 0, 0, 0)) < 0)
        return NPRED_ERR_ARG;
    return NPRED_OK;
}

npred_status npred_gaussian_declare(npred_readout *r, npred_ptable *t)
{
    const npred_readout_config *c = &r->cfg;
    npred_status s = check(r);
    if (s) return s;
    if (!is_legacy(r)) return declare_full(r, t);
    int n = c->n;
    if ((r->p_mu = npred_readout_param(t, r, "mu", 0, NPRED_PT_F32, 4, 1, n, 1, 2)) < 0 ||
        (r->p_sigma = npred_readout_param(t, r, "sigma", 0, NPRED_PT_F32, 4, 1, n, 1, 2)) < 0 ||
        (r->p_features = npred_readout_param(t, r, "features", 0, NPRED_PT_F32, 4, 1, c->c, 1, n)) < 0)
        return NPRED_ERR_ARG;
    if (c->bias && (r->p_bias = npred_readout_param(t, r, "bias", 0, NPRED_PT_F32, 1, n, 0, 0, 0)) < 0)
        return NPRED_ERR_ARG;
    return NPRED_OK;
}

npred_status npred_readout_set_source_grid(npred_readout *r, npred_ptable *t, const double *g)
{
    if (r->p_source_grid < 0)
        return npred_errorf(NPRED_ERR_ARG, "readout %s: no grid_mean_predictor (source_grid)", r->prefix);
    int n = r->cfg.n, d = r->cfg.gmp_input_dimensions;
    double mean[16] = {0}, mx = 0;
    if (d > 16)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout %s: source_grid with %d > 16 columns", r->prefix, d);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) mean[k] += g[(size_t)i * d + k];
    for (int k = 0; k < d; k++) mean[k] /= n;
    for (size_t i = 0; i < (size_t)n * d; i++) {
        double a = fabs(g[i] - mean[i % d]);
        if (a > mx || isnan(a)) mx = a;
    }
    if (!(mx > 0) || isinf(mx))
        return npred_errorf(NPRED_ERR_VALUE, "readout %s: source_grid: coordinates are all equal or not finite",
                            r->prefix);
    float *sg = npred_ptable_ptr(t, r->p_source_grid);
    for (size_t i = 0; i < (size_t)n * d; i++) sg[i] = (float)((g[i] - mean[i % d]) / mx);
    return NPRED_OK;
}

/* --------------------------------------------------------------- init --- */

static float uni(npred_rng *rng, double lo, double hi) { return (float)(lo + (hi - lo) * npred_rng_uniform(rng)); }

void npred_gaussian_init(npred_readout *r, npred_ptable *t, npred_rng *rng)
{
    const npred_readout_config *c = &r->cfg;
    const npred_param *ps = &t->items[r->p_sigma];
    float *sig = npred_ptable_ptr(t, r->p_sigma);
    if (is_legacy(r)) {
        float *mu = npred_ptable_ptr(t, r->p_mu);
        for (int i = 0; i < 2 * c->n; i++) mu[i] = uni(rng, -c->init_mu_range, c->init_mu_range);
        for (size_t i = 0; i < ps->count; i++)
            sig[i] = c->fixed_sigma ? (float)c->init_sigma_range : uni(rng, 0, c->init_sigma_range);
    } else {
        for (int i = 0; i < r->n_mlp; i++) { /* torch.nn.Linear default: U(+-1/sqrt(in)) */
            double a = 1.0 / sqrt((double)r->mlp_dim[i]);
            const npred_param *pw = &t->items[r->p_mlp_w[i]];
            float *w = npred_ptable_ptr(t, r->p_mlp_w[i]), *b = npred_ptable_ptr(t, r->p_mlp_b[i]);
            for (size_t k = 0; k < pw->count; k++) w[k] = uni(rng, -a, a);
            for (int k = 0; k < r->mlp_dim[i + 1]; k++) b[k] = uni(rng, -a, a);
        }
        if (r->p_mt_w >= 0) { /* borrowed grid: identity transform */
            float *w = npred_ptable_ptr(t, r->p_mt_w), *b = npred_ptable_ptr(t, r->p_mt_b);
            w[0] = w[3] = 1.0f;
            w[1] = w[2] = b[0] = b[1] = 0.0f;
        }
        if (r->p_mu >= 0) { /* 0.3.0: a borrowing readout re-randomises the shared _mu */
            const npred_param *pm = &t->items[r->p_mu];
            float *mu = npred_ptable_ptr(t, r->p_mu);
            for (size_t i = 0; i < pm->count; i++) mu[i] = uni(rng, -c->init_mu_range, c->init_mu_range);
        }
        for (size_t i = 0; i < ps->count; i++)
            sig[i] = c->gauss_type == NPRED_GAUSS_FULL ? uni(rng, -c->init_sigma, c->init_sigma) : (float)c->init_sigma;
        if (r->p_scales >= 0) {
            float *s = npred_ptable_ptr(t, r->p_scales);
            for (int i = 0; i < c->n; i++) s[i] = 1.0f;
        }
        int idxb[2] = {r->p_fsi, r->p_gsi};
        for (int k = 0; k < 2; k++)
            if (idxb[k] >= 0) {
                float *b = npred_ptable_ptr(t, idxb[k]);
                for (int i = 0; i < c->n; i++) b[i] = (float)r->match_idx[i];
            }
    }
    const npred_param *pf = &t->items[r->p_features];
    float *f = npred_ptable_ptr(t, r->p_features);
    for (size_t i = 0; i < pf->count; i++) f[i] = 1.0f / (float)c->c;
}

/* ------------------------------------------------------------ forward --- */

/* F (n, c) from the feature parameters */
static void make_features(const npred_readout *r, const npred_ptable *t, float *F)
{
    const npred_readout_config *c = &r->cfg;
    const float *f = npred_ptable_ptr(t, r->p_features);
    int n = c->n, C = c->c;
    if (!c->shared_features) { /* a transpose per output p (the readout kernels' register transposes) */
        for (int p = 0; p < nparams(r); p++)
            npred_rsample_to_nhwc(F + (size_t)p * n * C, f + (size_t)p * C * n, 1, C, n);
        return;
    }
    const float *sc = npred_ptable_ptr(t, r->p_scales);
    int nu = c->n_unique;
    for (int o = 0; o < n; o++)
        for (int k = 0; k < C; k++) F[(size_t)o * C + k] = sc[o] * f[(size_t)k * nu + r->match_idx[o]];
}

/* dF (n, c) into the feature parameters */
static void features_backward(const npred_readout *r, npred_ptable *t, const float *dF)
{
    const npred_readout_config *c = &r->cfg;
    float *gf = npred_ptable_gradptr(t, r->p_features);
    int n = c->n, C = c->c, P = nparams(r);
    if (!c->shared_features) { /* gf (C, n) += dF (n, C) transposed, per output */
        for (int p = 0; p < P; p++) npred_rsample_add_nchw(gf + (size_t)p * C * n, dF + (size_t)p * n * C, 1, C, n);
        return;
    }
    const float *f = npred_ptable_ptr(t, r->p_features), *sc = npred_ptable_ptr(t, r->p_scales);
    float *gs = npred_ptable_gradptr(t, r->p_scales);
    int nu = c->n_unique;
    for (int o = 0; o < n; o++) {
        size_t u = (size_t)r->match_idx[o];
        double ds = 0;
        for (int k = 0; k < C; k++) {
            gf[(size_t)k * nu + u] += sc[o] * dF[(size_t)o * C + k];
            ds += (double)f[(size_t)k * nu + u] * dF[(size_t)o * C + k];
        }
        gs[o] += (float)ds;
    }
}

static float clampf(float v) { return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; }

/* the gradient d of clampf(g) through the clamp: d inside [-1, 1], else +0 */
static inline float clamp_pass(float g, float d) { return g >= -1.0f && g <= 1.0f ? d : 0.0f; }

/* eight floats, their comparison masks, eight doubles (the sigma / mu sums) */
typedef float gs_f8 __attribute__((vector_size(8 * sizeof(float))));
typedef int gs_i8 __attribute__((vector_size(8 * sizeof(int))));
typedef double gs_d8 __attribute__((vector_size(8 * sizeof(double))));

/* grid-mean predictor forward: act[L-1] (n, 2) = mu_transform(source_grid) */
static void mlp_forward(const npred_readout *r, const npred_ptable *t, gs_ws *v)
{
    int n = r->cfg.n, L = r->n_mlp;
    const float *in = npred_ptable_ptr(t, r->p_source_grid);
    for (int i = 0; i < L; i++) {
        int di = r->mlp_dim[i], dout = r->mlp_dim[i + 1];
        const float *W = npred_ptable_ptr(t, r->p_mlp_w[i]), *b = npred_ptable_ptr(t, r->p_mlp_b[i]);
        int last = i == L - 1;
#pragma omp parallel for schedule(static) if ((double)n * dout * di >= GS_PAR_MIN)
        for (int o = 0; o < n; o++)
            for (int j = 0; j < dout; j++) {
                float s = b[j];
                for (int k = 0; k < di; k++) s += in[(size_t)o * di + k] * W[(size_t)j * di + k];
                v->pre[i][(size_t)o * dout + j] = s;
                float a = s;
                if (!last) a = s > 0 ? s : expm1f(s);
                else if (r->cfg.gmp_final_tanh) a = tanhf(s);
                v->act[i][(size_t)o * dout + j] = a;
            }
        in = v->act[i];
    }
}

/* Double accumulators of one tile of a grid-predictor layer's weight gradient, and
 * its inputs k at most */
#define GS_MLP_ACC 2048
#define GS_MLP_KW 48

/* gb[j] += sum over o of d[o][j], gW[j][k] += sum over o of d[o][j] * in[o][k]
 * (d (n, dout), in (n, di)), each sum in double over the neurons in order. The
 * neurons outside and a tile of outputs j and inputs k inside, so that the rows of
 * d and in are read once per tile (one strided pass over the neurons per sum took
 * 1 ms per step); every sum is the same. */
static void mlp_weight_grads(float *gW, float *gb, const float *d, const float *in, int n, int dout, int di)
{
    const int kw = di < GS_MLP_KW ? di : GS_MLP_KW, jw = GS_MLP_ACC / (kw + 1);
    const int nk = (di + kw - 1) / kw, nj = (dout + jw - 1) / jw;
#pragma omp parallel for schedule(static) if (nj * nk > 1 && (double)n * dout * di >= GS_PAR_MIN)
    for (int tile = 0; tile < nj * nk; tile++) {
        const int j0 = tile / nk * jw, j1 = j0 + jw < dout ? j0 + jw : dout, mj = j1 - j0;
        const int k0 = tile % nk * kw, k1 = k0 + kw < di ? k0 + kw : di, mk = k1 - k0;
        double acc[GS_MLP_ACC];
        /* sb[j - j0] (with k0 = 0); the sum of (j, k) at sw[(j - j0) * mk + k - k0], or
         * with more outputs than inputs at sw[(k - k0) * mj + j - j0] (the longer index
         * inside, in vectors) */
        double *sb = acc, *sw = acc + mj;
        const int kin = mk >= mj;
        const size_t sj = kin ? (size_t)mk : 1, sk = kin ? 1 : (size_t)mj;
        for (int i = 0; i < mj * (mk + 1); i++) acc[i] = 0;
        for (int o = 0; o < n; o++) {
            const float *dr = d + (size_t)o * dout + j0, *x = in + (size_t)o * di + k0;
            for (int j = 0; j < mj; j++) sb[j] += (double)dr[j];
            if (kin)
                for (int j = 0; j < mj; j++) {
                    const double dj = dr[j];
                    double *w = sw + (size_t)j * mk;
                    for (int k = 0; k < mk; k++) w[k] += dj * x[k];
                }
            else
                for (int k = 0; k < mk; k++) {
                    const float xk = x[k];
                    double *w = sw + (size_t)k * mj;
                    for (int j = 0; j < mj; j++) w[j] += (double)dr[j] * xk;
                }
        }
        for (int j = 0; j < mj; j++) {
            if (k0 == 0) gb[j0 + j] += (float)sb[j];
            for (int k = 0; k < mk; k++) gW[(size_t)(j0 + j) * di + k0 + k] += (float)sw[j * sj + k * sk];
        }
    }
}

static void mlp_backward(const npred_readout *r, npred_ptable *t, gs_ws *v, const float *dmu)
{
    int n = r->cfg.n, L = r->n_mlp;
    float *d = v->da, *dnext = v->db;
    for (size_t i = 0; i < (size_t)n * 2; i++) {
        float a = v->act[L - 1][i];
        d[i] = r->cfg.gmp_final_tanh ? dmu[i] * (1.0f - a * a) : dmu[i];
    }
    for (int i = L - 1; i >= 0; i--) { /* d = dL/dpre[i] */
        int di = r->mlp_dim[i], dout = r->mlp_dim[i + 1];
        const float *in = i ? v->act[i - 1] : npred_ptable_ptr(t, r->p_source_grid);
        const float *W = npred_ptable_ptr(t, r->p_mlp_w[i]);
        float *gW = npred_ptable_gradptr(t, r->p_mlp_w[i]), *gb = npred_ptable_gradptr(t, r->p_mlp_b[i]);
        mlp_weight_grads(gW, gb, d, in, n, dout, di);
        if (i == 0) break;
        /* the rows of d read once: s[k] sums j in order, as one sum per (o, k) did */
#pragma omp parallel for schedule(static) if ((double)n * dout * di >= GS_PAR_MIN)
        for (int o = 0; o < n; o++) {
            float *s = dnext + (size_t)o * di;
            const float *dr = d + (size_t)o * dout, *p = v->pre[i - 1] + (size_t)o * di;
            for (int k = 0; k < di; k++) s[k] = 0;
            for (int j = 0; j < dout; j++)
                for (int k = 0; k < di; k++) s[k] += dr[j] * W[(size_t)j * di + k];
            for (int k = 0; k < di; k++) /* ELU' */
                if (!(p[k] > 0)) s[k] *= expf(p[k]);
        }
        float *tmp = d;
        d = dnext;
        dnext = tmp;
    }
}

/* 1 when the grid predictor's activations in the workspace were computed from
 * the current source_grid, weights and biases (compared bit for bit with the
 * copy saved beside them); otherwise saves the current inputs and returns 0.
 * In eval mode the predictor's output is the same for every call of a trained
 * model, and recomputing it (7,776 x 30 ELUs) took half the time of predicting
 * one image. */
static int mlp_cached(npred_readout *r, const npred_ptable *t, gs_ws *v)
{
    const float *src[9];
    size_t cnt[9];
    int m = 0;
    src[m] = npred_ptable_ptr(t, r->p_source_grid), cnt[m++] = (size_t)r->cfg.n * r->mlp_dim[0];
    for (int i = 0; i < r->n_mlp; i++) {
        src[m] = npred_ptable_ptr(t, r->p_mlp_w[i]), cnt[m++] = (size_t)r->mlp_dim[i + 1] * r->mlp_dim[i];
        src[m] = npred_ptable_ptr(t, r->p_mlp_b[i]), cnt[m++] = (size_t)r->mlp_dim[i + 1];
    }
    int same = r->mu_cached;
    float *k = v->key;
    for (int i = 0; i < m; i++) {
        if (same && memcmp(k, src[i], cnt[i] * sizeof(float))) same = 0;
        if (!same) memcpy(k, src[i], cnt[i] * sizeof(float));
        k += cnt[i];
    }
    r->mu_cached = 1;
    return same;
}

/* v->mu (n, 2) from the parameters; plain _mu (and legacy mu, sigma) clamped in place */
static void make_mu(npred_readout *r, npred_ptable *t, gs_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    int n = c->n;
    if (r->n_mlp) {
        if (!mlp_cached(r, t, v)) mlp_forward(r, t, v);
        memcpy(v->mu, v->act[r->n_mlp - 1], (size_t)n * 2 * sizeof(float));
        return;
    }
    float *m = npred_ptable_ptr(t, r->p_mu);
    if (!c->shared_grid) {
        for (int i = 0; i < 2 * n; i++) v->mu[i] = m[i] = clampf(m[i]);
        if (is_legacy(r)) {
            float *s = npred_ptable_ptr(t, r->p_sigma);
            for (int i = 0; i < 2 * n; i++)
                if (s[i] < 0) s[i] = 0;
        }
        return;
    }
    /* shared grid: _mu[:, idx] is a copy (the 0.3.0 in-place clamp does not reach the parameter) */
    const float *W = r->p_mt_w >= 0 ? npred_ptable_ptr(t, r->p_mt_w) : NULL;
    const float *b = r->p_mt_b >= 0 ? npred_ptable_ptr(t, r->p_mt_b) : NULL;
    for (int o = 0; o < n; o++) {
        const float *mu = m + 2 * r->match_idx[o];
        for (int k = 0; k < 2; k++)
            v->mu[2 * o + k] = W ? b[k] + mu[0] * W[2 * k] + mu[1] * W[2 * k + 1] : mu[k];
    }
}

static void mu_backward(npred_readout *r, npred_ptable *t, gs_ws *v)
{
    const npred_readout_config *c = &r->cfg;
    int n = c->n;
    if (r->n_mlp) {
        mlp_backward(r, t, v, v->dmu);
        return;
    }
    float *gm = npred_ptable_gradptr(t, r->p_mu);
    if (!c->shared_grid) {
        for (int i = 0; i < 2 * n; i++) gm[i] += v->dmu[i];
        return;
    }
    if (r->p_mt_w < 0) {
        for (int o = 0; o < n; o++)
            for (int k = 0; k < 2; k++) gm[2 * r->match_idx[o] + k] += v->dmu[2 * o + k];
        return;
    }
    const float *m = npred_ptable_ptr(t, r->p_mu), *W = npred_ptable_ptr(t, r->p_mt_w);
    float *gW = npred_ptable_gradptr(t, r->p_mt_w), *gb = npred_ptable_gradptr(t, r->p_mt_b);
    double sW[4] = {0}, sb[2] = {0};
    for (int o = 0; o < n; o++) {
        const float *mu = m + 2 * r->match_idx[o], *d = v->dmu + 2 * o;
        float *g = gm + 2 * r->match_idx[o];
        for (int k = 0; k < 2; k++) {
            sb[k] += d[k];
            sW[2 * k] += (double)d[k] * mu[0];
            sW[2 * k + 1] += (double)d[k] * mu[1];
        }
        g[0] += d[0] * W[0] + d[1] * W[2];
        g[1] += d[0] * W[1] + d[1] * W[3];
    }
    for (int k = 0; k < 4; k++) gW[k] += (float)sW[k];
    for (int k = 0; k < 2; k++) gb[k] += (float)sb[k];
}

/* The positions of the neurons [0, n - n % 8) of one image for the full Gaussian,
 * eight at a time where AVX-512 is built (the same operations as the scalar loop of
 * npred_gaussian_forward: (s0 z0 + s1 z1) + mu0, (s2 z0 + s3 z1) + mu1, the clamp
 * that keeps NaN, + the shift or +0); returns the first neuron not done. gpre,
 * grid and z are the image's (n, 2), mu (n, 2), sig (n, 4). */
static int grid_full8(float *gpre, float *grid, const float *z, const float *mu, const float *sig, int n,
                      const float sh[2])
{
    int o = 0;
#if defined(__AVX512F__)
    const __m512i ia = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i ib = _mm512_add_epi32(ia, _mm512_set1_epi32(1));
    const __m512i i0 = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1));
    const __m512 lo = _mm512_set1_ps(-1.0f), hi = _mm512_set1_ps(1.0f);
    const __m512 vsh = _mm512_setr_ps(sh[0], sh[1], sh[0], sh[1], sh[0], sh[1], sh[0], sh[1], sh[0], sh[1], sh[0],
                                      sh[1], sh[0], sh[1], sh[0], sh[1]);
    for (; o + 8 <= n; o += 8) {
        /* per neuron: a = (s0, s2), b = (s1, s3), z0 and z1 on both lanes */
        const __m512 s0 = _mm512_loadu_ps(sig + 4 * (size_t)o), s1 = _mm512_loadu_ps(sig + 4 * (size_t)o + 16);
        const __m512 a = _mm512_permutex2var_ps(s0, ia, s1), b = _mm512_permutex2var_ps(s0, ib, s1);
        const __m512 zz = _mm512_loadu_ps(z + 2 * (size_t)o);
        const __m512 z0 = _mm512_permutexvar_ps(i0, zz), z1 = _mm512_permutexvar_ps(i1, zz);
        const __m512 g = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(a, z0), _mm512_mul_ps(b, z1)),
                                       _mm512_loadu_ps(mu + 2 * (size_t)o));
        _mm512_storeu_ps(gpre + 2 * (size_t)o, g);
        __m512 c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(g, lo, _CMP_LT_OQ), g, lo);
        c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(g, hi, _CMP_GT_OQ), c, hi);
        _mm512_storeu_ps(grid + 2 * (size_t)o, _mm512_add_ps(c, vsh));
    }
#else
    (void)gpre, (void)grid, (void)z, (void)mu, (void)sig, (void)n, (void)sh;
#endif
    return o;
}

npred_status npred_gaussian_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                    int B, int train, npred_rng *rng, const float *noise)
{
    const npred_readout_config *c = &r->cfg;
    if (train && !noise && !rng)
        return npred_errorf(NPRED_ERR_ARG, "readout %s: training forward needs an rng or noise", r->prefix);
    gs_ws v = views(r, r->max_batch);
    int n = c->n, hw = c->h * c->w;
    make_mu(r, t, &v);
    /* the features: rows (n, c) made once per call, or for a few images the
     * channel-major parameter read in place (no 2 MB transpose per image) */
    const float *F = v.F;
    size_t so = (size_t)c->c, sc = 1;
    /* bf16 (docs/precision.md): the sampling in bf16 where the kernel takes the shapes,
     * with F as rows; featb and Fb in the backward's scratch dxt and dF, unused until it */
    const int cells = npred_rsample_cells_fit(c->h, c->w);
    const int bf = r->bf16 && cells && nparams(r) == 1 && npred_rsample_bf16_supported(c->c);
    r->rows_made = c->shared_features || B >= GS_ROWS_MIN_BATCH || bf;
    if (r->rows_made) {
        make_features(r, t, v.F);
    } else {
        F = npred_ptable_ptr(t, r->p_features);
        so = 1, sc = (size_t)n;
    }
    const float *sig = npred_ptable_ptr(t, r->p_sigma);
    npred_gauss_type gt = is_legacy(r) ? NPRED_GAUSS_UNCORRELATED : c->gauss_type;
    int Bs = c->batch_sample ? B : 1;
    /* z in (b, o, coordinate) order: one draw per image and neuron, like normal_() on (B, n, 1, 2) */
    const size_t nz = (size_t)Bs * n * 2;
    const int draw = train && !noise;
    /* the draws' uniforms in the workspace of the backward's dgrid and of gpre (written below) */
    npred_normals d;
    d.u1 = (uint64_t *)(void *)v.dgrid, d.u2 = (uint64_t *)(void *)v.gpre;
    if (draw)
        npred_normals_draw(&d, nz, rng, v.z);
    else
        for (size_t i = 0; i < nz; i++) v.z[i] = train ? noise[i] : 0.0f;
#pragma omp parallel if ((double)B * n * 8 >= NPRED_RS_PAR_MIN)
    {
        if (draw) npred_normals_transform(&d, v.z); /* ends with a barrier: z is complete */
#pragma omp for schedule(static)
        for (int b = Bs; b < B; b++) memcpy(v.z + (size_t)b * n * 2, v.z, (size_t)n * 2 * sizeof(float));
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
        const float sh[2] = {shift ? shift[2 * b] : 0.0f, shift ? shift[2 * b + 1] : 0.0f};
        int o = 0;
        if (gt == NPRED_GAUSS_FULL)
            o = grid_full8(v.gpre + (size_t)b * n * 2, v.grid + (size_t)b * n * 2, v.z + (size_t)b * n * 2, v.mu, sig,
                           n, sh);
        for (; o < n; o++) {
            size_t p = ((size_t)b * n + o) * 2;
            const float *z = v.z + p, *mu = v.mu + 2 * o;
            float g[2];
            if (gt == NPRED_GAUSS_FULL) {
                const float *s = sig + 4 * (size_t)o;
                g[0] = (s[0] * z[0] + s[1] * z[1]) + mu[0];
                g[1] = (s[2] * z[0] + s[3] * z[1]) + mu[1];
            } else if (gt == NPRED_GAUSS_UNCORRELATED) {
                g[0] = z[0] * sig[2 * o] + mu[0];
                g[1] = z[1] * sig[2 * o + 1] + mu[1];
            } else {
                g[0] = z[0] * sig[o] + mu[0];
                g[1] = z[1] * sig[o] + mu[1];
            }
            for (int k = 0; k < 2; k++) {
                v.gpre[p + k] = g[k];
                v.grid[p + k] = clampf(g[k]) + sh[k];
            }
        }
        /* the image's cells once for the forward and both backward passes (grid
         * becomes their (w, n)) */
        if (cells)
            npred_rsample_cells(v.cell + (size_t)b * n, v.grid + 2 * (size_t)b * n, v.grid + 2 * (size_t)b * n,
                                (size_t)n, c->h, c->w, c->align_corners);
    }
    }
    if (draw) npred_normals_finish(&d, rng); /* the last pair's sin may be the generator's spare */
    if (!cells) npred_rsample_to_nhwc(v.xt, x, B, c->c, hw); /* otherwise fused into the first sampling */
    const float *bias = r->p_bias >= 0 ? npred_ptable_ptr(t, r->p_bias) : NULL;
    for (int p = 0; p < nparams(r); p++) { /* y[p] (B, n); bias[p] (n); feature set p */
        float *yp = y + (size_t)p * B * n;
#pragma omp parallel for schedule(static) if ((double)B * n >= GS_PAR_MIN)
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n; o++) yp[(size_t)b * n + o] = bias ? bias[(size_t)p * n + o] : 0.0f;
        if (bf)
            npred_rsample_forward_cells_nchw_bf16(yp, v.xt, (uint16_t *)(void *)v.dxt, (uint16_t *)(void *)v.dF, x,
                                                  v.cell, v.grid, F, B, c->h, c->w, c->c, n);
        else if (cells)
            npred_rsample_forward_cells_nchw(yp, v.xt, p ? NULL : x, v.cell, v.grid, F + (size_t)p * n * c->c, so, sc,
                                             B, c->h, c->w, c->c, n);
        else
            npred_rsample_forward(yp, v.xt, v.grid, F + (size_t)p * n * c->c, so, sc, B, c->h, c->w, c->c, n,
                                  c->align_corners);
    }
    return NPRED_OK;
}

/* ----------------------------------------------------------- backward --- */

void npred_gaussian_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift, int dx_set)
{
    const npred_readout_config *c = &r->cfg;
    gs_ws v = views(r, r->max_batch);
    int n = c->n, B = r->B, C = c->c, hw = c->h * c->w, P = nparams(r);
    /* rows (n, c): the forward's, or (a few images) the forward read the parameter in place */
    if (!r->rows_made) make_features(r, t, v.F);
    memset(v.dF, 0, (size_t)P * n * C * sizeof(float));
    /* one output with cells: the sampler zeroes dxt and adds (dx_set: writes) it into dx
     * image by image */
    const int cells = npred_rsample_cells_fit(c->h, c->w), fused = cells && P == 1;
#pragma omp parallel for schedule(static) if ((double)B * hw * C >= NPRED_RS_PAR_MIN)
    for (int b = 0; b < B; b++) { /* 51 MB at batch 128: not on one thread */
        memset(v.dgrid + (size_t)b * n * 2, 0, (size_t)n * 2 * sizeof(float));
        if (dx && !fused) memset(v.dxt + (size_t)b * hw * C, 0, (size_t)hw * C * sizeof(float));
    }
    for (int p = 0; p < P; p++) { /* dy (P, B, n): one pass per output, accumulating */
        const float *dyp = dy + (size_t)p * B * n;
        if (r->p_bias >= 0 && !t->grads_off) {
            float *gb = npred_ptable_gradptr(t, r->p_bias) + (size_t)p * n;
            /* each neuron's sum over the images in order; a chunk of neurons inside */
#pragma omp parallel for schedule(static) if ((double)B * n * 8 >= NPRED_RS_PAR_MIN)
            for (int o0 = 0; o0 < n; o0 += GS_RED) {
                const int m = n - o0 < GS_RED ? n - o0 : GS_RED;
                double sum[GS_RED];
                for (int i = 0; i < m; i++) sum[i] = 0;
                for (int b = 0; b < B; b++)
                    for (int i = 0; i < m; i++) sum[i] += dyp[(size_t)b * n + o0 + i];
                for (int i = 0; i < m; i++) gb[o0 + i] += (float)sum[i];
            }
        }
        if (fused)
            npred_rsample_backward_cells_nchw(dx, v.dxt, v.dgrid, v.dF, dyp, v.xt, v.cell, v.grid, v.F, C, B, c->h,
                                              c->w, C, n, c->align_corners, dx_set);
        else if (cells)
            npred_rsample_backward_cells(dx ? v.dxt : NULL, v.dgrid, v.dF + (size_t)p * n * C, dyp, v.xt, v.cell,
                                         v.grid, v.F + (size_t)p * n * C, C, B, c->h, c->w, C, n, c->align_corners);
        else
            npred_rsample_backward(dx ? v.dxt : NULL, v.dgrid, v.dF + (size_t)p * n * C, dyp, v.xt, v.grid,
                                   v.F + (size_t)p * n * C, C, B, c->h, c->w, C, n, c->align_corners);
    }
    if (dx && !fused) (dx_set ? npred_rsample_set_nchw : npred_rsample_add_nchw)(dx, v.dxt, B, C, hw);
    if (dshift)
        for (int b = 0; b < B; b++)
            for (int k = 0; k < 2; k++) {
                double s = 0;
                for (int o = 0; o < n; o++) s += v.dgrid[((size_t)b * n + o) * 2 + k];
                dshift[2 * b + k] += (float)s;
            }
    if (t->grads_off) return; /* input gradients only */
    npred_gauss_type gt = is_legacy(r) ? NPRED_GAUSS_UNCORRELATED : c->gauss_type;
    float *gsig = npred_ptable_gradptr(t, r->p_sigma);
    /* each neuron's sums over the images in order; images outside, a chunk of the
     * thread's neurons inside, so the rows of dgrid, z and gpre are read in order */
#pragma omp parallel if ((double)B * n * 8 >= NPRED_RS_PAR_MIN)
    {
        const int T = omp_get_num_threads(), id = omp_get_thread_num();
        const int lo = (int)((long)n * id / T), hi = (int)((long)n * (id + 1) / T);
        /* neuron i's pair (x, y) at 2i, 2i + 1: dm the sums of d, da those of d z and
         * (full) dc those of d times the other coordinate's z: the rows of dgrid, z
         * and gpre are read in order, pair after pair, in vectors */
        double dm[2 * GS_RED], da[2 * GS_RED], dc[2 * GS_RED];
        const int full = gt == NPRED_GAUSS_FULL;
        for (int a0 = lo; a0 < hi; a0 += GS_RED) {
            const int m2 = 2 * (hi - a0 < GS_RED ? hi - a0 : GS_RED);
            for (int e = 0; e < m2; e++) dm[e] = da[e] = dc[e] = 0;
            for (int b = 0; b < B; b++) {
                const size_t q = ((size_t)b * n + a0) * 2;
                const float *z = v.z + q, *gp = v.gpre + q, *dg = v.dgrid + q;
                int e = 0;
                for (; e + 8 <= m2; e += 8) { /* four pairs */
                    gs_f8 g8, d8, z8;
                    memcpy(&g8, gp + e, sizeof g8), memcpy(&d8, dg + e, sizeof d8), memcpy(&z8, z + e, sizeof z8);
                    /* through the clamp: entries outside [-1, 1] pass +0 */
                    d8 = (gs_f8)((gs_i8)d8 & ((g8 >= -1.0f) & (g8 <= 1.0f)));
                    const gs_d8 dd = __builtin_convertvector(d8, gs_d8);
                    gs_d8 m8, a8;
                    memcpy(&m8, dm + e, sizeof m8), memcpy(&a8, da + e, sizeof a8);
                    m8 += dd;
                    a8 += dd * __builtin_convertvector(z8, gs_d8);
                    memcpy(dm + e, &m8, sizeof m8), memcpy(da + e, &a8, sizeof a8);
                    if (full) {
                        const gs_f8 zs = {z8[1], z8[0], z8[3], z8[2], z8[5], z8[4], z8[7], z8[6]};
                        gs_d8 c8;
                        memcpy(&c8, dc + e, sizeof c8);
                        c8 += dd * __builtin_convertvector(zs, gs_d8);
                        memcpy(dc + e, &c8, sizeof c8);
                    }
                }
                for (; e < m2; e += 2) { /* the same for the last pairs */
                    const float d0 = clamp_pass(gp[e], dg[e]), d1 = clamp_pass(gp[e + 1], dg[e + 1]);
                    dm[e] += d0;
                    dm[e + 1] += d1;
                    da[e] += (double)d0 * z[e];
                    da[e + 1] += (double)d1 * z[e + 1];
                    dc[e] += (double)d0 * z[e + 1];
                    dc[e + 1] += (double)d1 * z[e];
                }
            }
            for (int i = 0; i < m2 / 2; i++) {
                const size_t o = (size_t)a0 + i;
                v.dmu[2 * o] = (float)dm[2 * i];
                v.dmu[2 * o + 1] = (float)dm[2 * i + 1];
                if (full) { /* d0 z0, d0 z1, d1 z0, d1 z1 */
                    gsig[4 * o] += (float)da[2 * i];
                    gsig[4 * o + 1] += (float)dc[2 * i];
                    gsig[4 * o + 2] += (float)dc[2 * i + 1];
                    gsig[4 * o + 3] += (float)da[2 * i + 1];
                } else if (gt == NPRED_GAUSS_UNCORRELATED) {
                    for (int k = 0; k < 2; k++) gsig[2 * o + k] += (float)da[2 * i + k];
                } else {
                    gsig[o] += (float)(da[2 * i] + da[2 * i + 1]);
                }
            }
        }
    }
    mu_backward(r, t, &v);
    features_backward(r, t, v.dF);
}

/* The regularizer of a readout's own features, on the parameter (P, c, n) in place:
 * the sum over the rows (n, c) the shared path builds, in their order (output,
 * neuron, channel: a strided read of the parameter), and the sign gradient added
 * element by element, which needs no order: the bits of the transposing path
 * without its two transposes of the features (4 MB each for 7,776 neurons). */
static double features_l1(npred_readout *r, npred_ptable *t, double gscale)
{
    const npred_readout_config *c = &r->cfg;
    const float *f = npred_ptable_ptr(t, r->p_features);
    const int n = c->n, C = c->c, P = nparams(r);
    double s = 0;
    for (int p = 0; p < P; p++)
        for (int o = 0; o < n; o++)
            for (int k = 0; k < C; k++) s += fabs(f[((size_t)p * C + k) * n + o]);
    if (gscale != 0) {
        float *gf = npred_ptable_gradptr(t, r->p_features);
        const float g = (float)(gscale * c->feature_reg_weight);
        const size_t nf = (size_t)P * C * n;
#pragma omp parallel for schedule(static) if ((double)nf >= GS_PAR_MIN)
        for (size_t i = 0; i < nf; i++) gf[i] += f[i] > 0 ? g : f[i] < 0 ? -g : 0.0f;
    }
    return c->feature_reg_weight * s;
}

/* feature_reg_weight * sum|features| (0 for borrowed features) */
double npred_gaussian_regularizer(npred_readout *r, npred_ptable *t, double gscale)
{
    const npred_readout_config *c = &r->cfg;
    if (!r->owns_features) return 0;
    if (!c->shared_features) return features_l1(r, t, gscale);
    gs_ws v = views(r, r->max_batch);
    size_t nc = (size_t)nparams(r) * c->n * c->c;
    make_features(r, t, v.F);
    double s = 0;
    for (size_t i = 0; i < nc; i++) s += fabs(v.F[i]);
    if (gscale != 0) {
        float g = (float)(gscale * c->feature_reg_weight);
        for (size_t i = 0; i < nc; i++) v.dF[i] = v.F[i] > 0 ? g : v.F[i] < 0 ? -g : 0.0f;
        features_backward(r, t, v.dF);
    }
    return c->feature_reg_weight * s;
}

/* --------------------------------------------------------------- repr --- */

static void cat(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *buf, size_t n, const char *fmt, ...)
{
    size_t l = strlen(buf);
    if (l + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + l, n - l, fmt, ap);
    va_end(ap);
}

void npred_gaussian_repr(const npred_readout *r, char *buf, size_t n)
{
    const npred_readout_config *c = &r->cfg;
    static const char *gname[] = {"full", "uncorrelated", "isotropic"};
    if (!n) return;
    buf[0] = 0;
    if (is_legacy(r)) {
        cat(buf, n, "Gaussian2d (%d x %d x %d -> %d)%s", c->c, c->h, c->w, c->n, c->bias ? " with bias" : "");
        return;
    }
    cat(buf, n, "%s %s (%d x %d x %d -> %d)%s", gname[c->gauss_type],
        c->params_n ? "GeneralizedFullGaussianReadout2d" : "FullGaussian2d", c->c, c->h, c->w, c->n,
        c->bias ? " with bias" : "");
    if (c->shared_features) cat(buf, n, ", with %s features", r->owns_features ? "original" : "shared");
    if (c->predicted_grid) cat(buf, n, ", with predicted grid");
    if (c->shared_grid) cat(buf, n, ", with %s grid", r->owns_grid ? "original" : "shared");
    if (r->n_mlp) {
        cat(buf, n, "  -> Sequential(\n");
        int k = 0;
        for (int i = 0; i < r->n_mlp; i++) {
            if (i) cat(buf, n, "  (%d): ELU(alpha=1.0)\n", k++);
            cat(buf, n, "  (%d): Linear(in_features=%d, out_features=%d, bias=True)\n", k++, r->mlp_dim[i],
                r->mlp_dim[i + 1]);
        }
        if (c->gmp_final_tanh) cat(buf, n, "  (%d): Tanh()\n", k++);
        cat(buf, n, ")\n");
    } else if (r->p_mt_w >= 0) {
        cat(buf, n, "  -> Linear(in_features=2, out_features=2, bias=True)\n");
    }
}

void npred_gaussian_sampled_grid(const npred_readout *r, float *out)
{
    gs_ws v = views(r, r->max_batch);
    for (size_t i = 0; i < (size_t)r->B * r->cfg.n * 2; i++) out[i] = clampf(v.gpre[i]);
}

void npred_gaussian_feature_row(const npred_readout *r, const npred_ptable *t, int o, float *out)
{
    const npred_readout_config *c = &r->cfg;
    const float *f = npred_ptable_ptr(t, r->p_features);
    if (!c->shared_features) {
        for (int k = 0; k < c->c; k++) out[k] = f[(size_t)k * c->n + o];
        return;
    }
    const float *sc = npred_ptable_ptr(t, r->p_scales); /* as make_features */
    for (int k = 0; k < c->c; k++) out[k] = sc[o] * f[(size_t)k * c->n_unique + r->match_idx[o]];
}
