/* The trainer's losses for the distribution encoders (docs/encoders.md): the encoder's
 * negative log-likelihood from its K outputs, its gradient into t->ddist. */
#include "train/trainer_internal.h"

#include <string.h>

#include "train/loss.h"
#include "train/zero_inflated.h"

static const npred_train_loss loss_of[] = {NPRED_TRAIN_LOSS_POISSON, NPRED_TRAIN_LOSS_ZIG, NPRED_TRAIN_LOSS_ZIL,
                                           NPRED_TRAIN_LOSS_GAMMA, NPRED_TRAIN_LOSS_GAUSSIAN};

static int is_dist_loss(npred_train_loss l)
{
    return l == NPRED_TRAIN_LOSS_ZIG || l == NPRED_TRAIN_LOSS_ZIL || l == NPRED_TRAIN_LOSS_GAMMA ||
           l == NPRED_TRAIN_LOSS_GAUSSIAN;
}

npred_status npred_trainer_dist_check(const npred_model *m, npred_train_loss l)
{
    const npred_encoder_config *e = &m->cfg.encoder;
    if (e->type == NPRED_ENC_FIRING_RATE) {
        if (is_dist_loss(l))
            return npred_errorf(NPRED_ERR_CONFIG, "trainer: loss_function %s needs the model's encoder to be %s "
                                "(the model config's encoder.type); this model is a FiringRateEncoder",
                                npred_train_loss_name(l),
                                l == NPRED_TRAIN_LOSS_ZIG ? "ZIGEncoder" : l == NPRED_TRAIN_LOSS_ZIL ? "ZILEncoder"
                                : l == NPRED_TRAIN_LOSS_GAMMA ? "GammaEncoder" : "GaussianEncoder");
        return NPRED_OK;
    }
    if (l != loss_of[e->type])
        return npred_errorf(NPRED_ERR_CONFIG, "trainer: the model's %s is trained with loss_function \"%s\" (got \"%s\")",
                            npred_encoder_name(e->type), npred_train_loss_name(loss_of[e->type]),
                            npred_train_loss_name(l));
    return NPRED_OK;
}

npred_status npred_trainer_dist_loss(npred_trainer *t, double *v, double kb, const float *y, int64_t B, int64_t n)
{
    int K;
    float *d = npred_model_dist(t->m, &K);
    if (!d) return npred_errorf(NPRED_ERR_ARG, "trainer: the model has no distribution outputs");
    const npred_encoder_config *e = &t->m->cfg.encoder;
    size_t bn = (size_t)(B * n);
    float *g = t->ddist;
    memset(g, 0, (size_t)K * bn * sizeof(float));
    npred_loss_reduction red = t->c.avg_loss ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM;
    npred_status st;
    switch (e->type) {
    case NPRED_ENC_ZIG:
    case NPRED_ENC_ZIL: {
        npred_zi_slab slab = e->type == NPRED_ENC_ZIG ? NPRED_ZI_GAMMA : NPRED_ZI_LOGNORMAL;
        float *loc = d + 2 * bn, *lm = loc;
        /* the reference clamps a loc that requires grad (trainable or image dependent), in place */
        if (e->dep[2] || !e->has_zero_threshold) {
            lm = t->loc_mask;
            if ((st = npred_loss_zi_clamp_loc(lm, loc, loc, y, B, n))) return st;
        }
        if ((st = npred_loss_zi_forward(v, slab, d, d + bn, lm, loc, d + 3 * bn, y, B, n, red))) return st;
        return npred_loss_zi_backward(g, g + bn, g + 2 * bn, g + 3 * bn, &kb, slab, d, d + bn, lm, loc, d + 3 * bn, y,
                                      B, n, red);
    }
    case NPRED_ENC_GAMMA:
        if ((st = npred_loss_gamma_forward(v, d, d + bn, y, B, n, red, NPRED_GAMMA_EPS_SHIFT))) return st;
        return npred_loss_gamma_backward(g, g + bn, &kb, d, d + bn, y, B, n, red, NPRED_GAMMA_EPS_SHIFT);
    case NPRED_ENC_GAUSSIAN:
        if ((st = npred_loss_gaussian_forward(v, d, d + bn, y, B, n, red))) return st;
        return npred_loss_gaussian_backward(g, g + bn, &kb, d, d + bn, y, B, n, red);
    default: return npred_errorf(NPRED_ERR_ARG, "trainer: not a distribution encoder");
    }
}
