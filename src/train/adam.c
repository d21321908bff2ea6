/* Adam (see adam.h). P = number of parameters. */
#include "train/adam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

npred_adam_params npred_adam_default_params(void)
{
    npred_adam_params p = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0};
    return p;
}

static npred_status check_params(const npred_adam_params *p)
{
    if (!(p->lr >= 0.0)) return npred_errorf(NPRED_ERR_ARG, "adam: invalid learning rate %g (expected >= 0)", p->lr);
    if (!(p->eps >= 0.0)) return npred_errorf(NPRED_ERR_ARG, "adam: invalid eps %g (expected >= 0)", p->eps);
    if (!(p->beta1 >= 0.0 && p->beta1 < 1.0))
        return npred_errorf(NPRED_ERR_ARG, "adam: invalid beta1 %g (expected 0 <= beta1 < 1)", p->beta1);
    if (!(p->beta2 >= 0.0 && p->beta2 < 1.0))
        return npred_errorf(NPRED_ERR_ARG, "adam: invalid beta2 %g (expected 0 <= beta2 < 1)", p->beta2);
    if (!(p->weight_decay >= 0.0))
        return npred_errorf(NPRED_ERR_ARG, "adam: invalid weight_decay %g (expected >= 0)", p->weight_decay);
    return NPRED_OK;
}

npred_status npred_adam_init(npred_adam *opt, size_t n, const npred_adam_params *p)
{
    if (!opt) return npred_errorf(NPRED_ERR_ARG, "adam: NULL optimizer");
    memset(opt, 0, sizeof *opt);
    npred_adam_params def = npred_adam_default_params();
    if (!p) p = &def;
    npred_status st = check_params(p);
    if (st) return st;
    if (n == 0) return npred_errorf(NPRED_ERR_ARG, "adam: no parameters to optimize");
    opt->m = npred_calloc(n, sizeof(float));
    opt->v = npred_calloc(n, sizeof(float));
    if (!opt->m || !opt->v) {
        npred_adam_free(opt);
        return npred_errorf(NPRED_ERR_NOMEM, "adam: cannot allocate moments for %zu parameters", n);
    }
    opt->p = *p;
    opt->n = n;
    return NPRED_OK;
}

void npred_adam_free(npred_adam *opt)
{
    if (!opt) return;
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}

npred_status npred_adam_set_lr(npred_adam *opt, double lr)
{
    if (!(lr >= 0.0)) return npred_errorf(NPRED_ERR_ARG, "adam: invalid learning rate %g (expected >= 0)", lr);
    opt->p.lr = lr;
    return NPRED_OK;
}

void npred_adam_reset(npred_adam *opt)
{
    memset(opt->m, 0, opt->n * sizeof(float));
    memset(opt->v, 0, opt->n * sizeof(float));
    opt->step = 0;
}

npred_status npred_adam_step(npred_adam *opt, float *param, const float *grad)
{
    return npred_adam_step_masked(opt, param, grad, NULL);
}

npred_status npred_adam_step_masked(npred_adam *opt, float *param, const float *grad, const unsigned char *frozen)
{
    if (!opt || !opt->m || !param || !grad)
        return npred_errorf(NPRED_ERR_ARG, "adam: step needs an initialized optimizer, param and grad");
    opt->step++;
    const double t = (double)opt->step;
    const double bc1 = 1.0 - pow(opt->p.beta1, t);
    const double bc2 = 1.0 - pow(opt->p.beta2, t);
    const float b1 = (float)opt->p.beta1, c1 = (float)(1.0 - opt->p.beta1);
    const float b2 = (float)opt->p.beta2, c2 = (float)(1.0 - opt->p.beta2);
    const float neg_step = (float)(-(opt->p.lr / bc1));
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)opt->p.eps, wd = (float)opt->p.weight_decay;
    const int use_wd = opt->p.weight_decay != 0.0 && !opt->p.decoupled;
    const int use_dwd = opt->p.weight_decay != 0.0 && opt->p.decoupled;
    const float shrink = (float)(1.0 - opt->p.lr * opt->p.weight_decay);
    float *m = opt->m, *v = opt->v;
    const int64_t n = (int64_t)opt->n;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) {
        if (frozen && frozen[i]) continue;
        float g = grad[i];
        if (use_dwd) param[i] = param[i] * shrink;
        if (use_wd) g = g + wd * param[i];
        float mi = m[i] * b1;
        mi = mi + c1 * g;
        float vi = v[i] * b2;
        vi = vi + (c2 * g) * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = param[i] + (neg_step * mi) / denom;
    }
    return NPRED_OK;
}
