/* Readout dispatch: config defaults, declaration, workspaces, common bias init. */
#include "readouts/readout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
}

static npred_status check_config(const npred_readout_config *c)
{
    if (c->c <= 0 || c->h <= 0 || c->w <= 0 || c->n <= 0)
        return npred_errorf(NPRED_ERR_CONFIG, "readout: in_shape (%d, %d, %d) and outdims %d must be positive", c->c,
                            c->h, c->w, c->n);
    if (c->shared_features && (c->n_unique <= 0 || c->n_unique > c->n))
        return npred_errorf(NPRED_ERR_CONFIG, "readout: %d unique match ids for %d neurons", c->n_unique, c->n);
    return NPRED_OK;
}

npred_status npred_readout_declare(npred_readout *r, const npred_readout_config *cfg, const char *prefix,
                                   npred_ptable *t)
{
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    r->p_features = r->p_scales = r->p_spatial = r->p_bias = r->p_mu = r->p_sigma = r->p_grid = -1;
    r->p_source_grid = -1;
    for (int i = 0; i < 4; i++) r->p_mlp_w[i] = r->p_mlp_b[i] = -1;
    r->owns_features = r->owns_grid = 1;
    npred_status s = check_config(cfg);
    if (s) return s;
    switch (cfg->type) {
    case NPRED_READOUT_FACTORIZED: s = npred_factorized_declare(r, t); break;
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)cfg->type);
    }
    return s ? npred_error_prefix(s, "readout %s", prefix) : NPRED_OK;
}

npred_status npred_readout_setup(npred_readout *r, const npred_ptable *t, int max_batch)
{
    (void)t;
    size_t n = 0;
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: n = npred_factorized_workspace(r, max_batch); break;
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)r->cfg.type);
    }
    free(r->ws);
    r->ws = aligned_alloc(64, (n + 16) / 16 * 16 * sizeof(float));
    if (!r->ws) return npred_errorf(NPRED_ERR_NOMEM, "readout %s: cannot allocate %zu floats", r->prefix, n);
    memset(r->ws, 0, (n + 16) / 16 * 16 * sizeof(float));
    r->ws_size = n;
    r->max_batch = max_batch;
    return NPRED_OK;
}

void npred_readout_init_params(npred_readout *r, npred_ptable *t, npred_rng *rng, const float *mean_activity)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_init(r, t, rng); break;
    default: break;
    }
    if (r->p_bias >= 0) {
        float *b = npred_ptable_ptr(t, r->p_bias);
        for (int i = 0; i < r->cfg.n; i++) b[i] = mean_activity ? mean_activity[i] : 0.0f;
    }
}

npred_status npred_readout_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                   int B, int train, npred_rng *rng, const float *noise)
{
    (void)rng;
    (void)noise;
    if (B <= 0 || B > r->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "readout %s: batch of %d (capacity %d)", r->prefix, B, r->max_batch);
    r->x = x;
    r->B = B;
    r->train = train;
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED:
        if (shift) return npred_errorf(NPRED_ERR_ARG, "readout %s: FullFactorized2d takes no shift", r->prefix);
        return npred_factorized_forward(r, t, y, x, B);
    default: return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout type %d is not available", (int)r->cfg.type);
    }
}

void npred_readout_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift)
{
    (void)dshift;
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_backward(r, t, dy, dx); break;
    default: break;
    }
}

double npred_readout_regularizer(npred_readout *r, npred_ptable *t, double gscale)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: return npred_factorized_regularizer(r, t, gscale);
    default: return 0;
    }
}

void npred_readout_repr(const npred_readout *r, char *buf, size_t n)
{
    switch (r->cfg.type) {
    case NPRED_READOUT_FACTORIZED: npred_factorized_repr(r, buf, n); break;
    default: snprintf(buf, n, "readout type %d", (int)r->cfg.type); break;
    }
}

void npred_readout_free(npred_readout *r)
{
    free(r->ws);
    free(r->match_idx);
    free(r->impl);
    r->ws = NULL;
    r->match_idx = NULL;
    r->impl = NULL;
}
