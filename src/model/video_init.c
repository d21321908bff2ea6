/* make_video_model's parameter initialisation (see video_model.h, docs/video.md).
 * Distributions and scales are neuralpredictors 43faede's; the random stream is
 * npred's own (npred_rng), so the values differ from torch's for the same seed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/video_model.h"

/* torch.nn.init.xavier_normal_ (gain 1) of a conv weight (out, in, k...):
 * N(0, 2 / (fan_in + fan_out)), fan_in = in * prod(k), fan_out = out * prod(k). */
static void xavier_normal(npred_ptable *t, int idx, npred_rng *rng)
{
    const npred_param *p = &t->items[idx];
    double field = 1;
    for (int d = 2; d < p->ndim; d++) field *= (double)p->shape[d];
    double std = sqrt(2.0 / ((double)p->shape[1] * field + (double)p->shape[0] * field));
    float *w = npred_ptable_ptr(t, idx);
    for (size_t i = 0; i < p->count; i++) w[i] = (float)(std * npred_rng_normal(rng));
}

static void fill(npred_ptable *t, int idx, float v)
{
    if (idx < 0) return;
    float *x = npred_ptable_ptr(t, idx);
    for (size_t i = 0; i < t->items[idx].count; i++) x[i] = v;
}

/* Core3d.initialize: every Conv3d xavier_normal_ with its bias 0; BatchNorm3d at
 * torch's defaults (weight 1, bias 0, running mean 0 and var 1, no batches tracked). */
static void init_core3d(npred_core3d *core, npred_ptable *t, npred_rng *rng)
{
    npred_core3d_init_buffers(core, t);
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < L->nconv; k++) {
            xavier_normal(t, L->conv[k].p_w, rng);
            fill(t, L->conv[k].p_b, 0);
        }
        if (L->has_bn) {
            fill(t, L->p_gamma, 1), fill(t, L->p_beta, 0);
            fill(t, L->p_rmean, 0), fill(t, L->p_rvar, 1), fill(t, L->p_nbt, 0);
        }
    }
}

/* ConvGRUCell: self.apply(init_conv): every Conv2d xavier_normal, bias 0, in the
 * cell's module order (reset, update, out gate; input then hidden conv). */
static void init_convgru(npred_convgru *g, npred_ptable *t, npred_rng *rng)
{
    static const int order[3] = {NPRED_GRU_RESET, NPRED_GRU_UPDATE, NPRED_GRU_OUT};
    for (int i = 0; i < 3; i++) {
        int q = order[i];
        xavier_normal(t, g->p_wi[q], rng);
        fill(t, g->p_bi[q], 0);
        xavier_normal(t, g->p_wh[q], rng);
        fill(t, g->p_bh[q], 0);
    }
}

npred_status npred_video_encoder_init_params(npred_video_encoder *e, const npred_video_model_session *sessions,
                                             npred_rng *rng)
{
    const npred_video_encoder_config *c = &e->cfg;
    /* make_video_model's order: core, readouts, GRU, shifters */
    if (c->core2d) npred_core_init_params(&e->core2d, &e->t, rng);
    else init_core3d(&e->core, &e->t, rng);
    for (int i = 0; i < e->n_sessions; i++) {
        npred_video_session *s = &e->s[i];
        const npred_video_model_session *in = &sessions[i];
        npred_readout_init_params(&s->ro, &e->t, rng, in->mean_activity);
        if (!c->predicted_grid) continue;
        int d = c->gmp_input_dimensions;
        if (!in->coords || in->coord_dims < d)
            return npred_errorf(NPRED_ERR_ARG, "session %s: the cortex grid_mean_predictor needs %d-d "
                                "cell_motor_coordinates of every neuron (given %d-d)", s->key, d,
                                in->coords ? in->coord_dims : 0);
        double *g = malloc(sizeof(double) * (size_t)s->n * d);
        if (!g) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int k = 0; k < s->n; k++)
            for (int j = 0; j < d; j++) g[(size_t)k * d + j] = in->coords[(size_t)k * in->coord_dims + j];
        npred_status st = npred_readout_set_source_grid(&s->ro, &e->t, g);
        free(g);
        if (st) return npred_error_prefix(st, "session %s", s->key);
    }
    if (c->use_gru) init_convgru(&e->gru, &e->t, rng);
    for (int i = 0; i < e->n_sessions; i++)
        if (e->s[i].has_shifter) npred_mlp_init_default(&e->s[i].shifter, &e->t, rng);
    return NPRED_OK;
}
