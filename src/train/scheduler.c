/* ReduceLROnPlateau (see scheduler.h). */
#include "train/scheduler.h"

#include <math.h>
#include <string.h>

npred_scheduler_params npred_scheduler_default_params(void)
{
    npred_scheduler_params p = {NPRED_SCHEDULER_MODE_MIN, 0.1, 10, 1e-4,
                                NPRED_SCHEDULER_THRESHOLD_REL, 0, 0.0, 1e-8};
    return p;
}

npred_status npred_scheduler_init(npred_scheduler *s, const npred_scheduler_params *p,
                                  double initial_lr)
{
    if (!s || !p) return npred_errorf(NPRED_ERR_ARG, "scheduler: NULL argument");
    memset(s, 0, sizeof *s);
    if (!(p->factor < 1.0))
        return npred_errorf(NPRED_ERR_ARG, "scheduler: factor should be < 1.0, got %g", p->factor);
    if (p->mode != NPRED_SCHEDULER_MODE_MIN && p->mode != NPRED_SCHEDULER_MODE_MAX)
        return npred_errorf(NPRED_ERR_ARG, "scheduler: mode %d is unknown (expected min or max)", (int)p->mode);
    if (p->threshold_mode != NPRED_SCHEDULER_THRESHOLD_REL &&
        p->threshold_mode != NPRED_SCHEDULER_THRESHOLD_ABS)
        return npred_errorf(NPRED_ERR_ARG, "scheduler: threshold mode %d is unknown (expected rel or abs)",
                            (int)p->threshold_mode);
    if (p->patience < 0 || p->cooldown < 0 || !(p->min_lr >= 0.0) || !(p->eps >= 0.0))
        return npred_errorf(NPRED_ERR_ARG, "scheduler: patience, cooldown, min_lr and eps must be >= 0");
    if (!(initial_lr >= 0.0))
        return npred_errorf(NPRED_ERR_ARG, "scheduler: invalid initial learning rate %g", initial_lr);
    s->p = *p;
    s->lr = initial_lr;
    s->best = p->mode == NPRED_SCHEDULER_MODE_MAX ? -INFINITY : INFINITY;
    return NPRED_OK;
}

static int is_better(const npred_scheduler_params *p, double a, double best)
{
    if (p->mode == NPRED_SCHEDULER_MODE_MIN) {
        if (p->threshold_mode == NPRED_SCHEDULER_THRESHOLD_REL) return a < best * (1.0 - p->threshold);
        return a < best - p->threshold;
    }
    if (p->threshold_mode == NPRED_SCHEDULER_THRESHOLD_REL) return a > best * (p->threshold + 1.0);
    return a > best + p->threshold;
}

int npred_scheduler_step(npred_scheduler *s, double metric)
{
    int reduced = 0;
    s->last_epoch++;
    if (is_better(&s->p, metric, s->best)) {
        s->best = metric;
        s->num_bad_epochs = 0;
    } else {
        s->num_bad_epochs++;
    }
    if (s->cooldown_counter > 0) {
        s->cooldown_counter--;
        s->num_bad_epochs = 0;
    }
    if (s->num_bad_epochs > s->p.patience) {
        double new_lr = fmax(s->lr * s->p.factor, s->p.min_lr);
        if (s->lr - new_lr > s->p.eps) {
            s->lr = new_lr;
            reduced = 1;
        }
        s->cooldown_counter = s->p.cooldown;
        s->num_bad_epochs = 0;
    }
    return reduced;
}
