/* Adam (see adam.h). P = number of parameters. */
#include "train/adam.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

/* The float32 constants of one step (torch's rounding of its scalars). */
typedef struct {
    float b1, c1, b2, c2, neg_step, bc2_sqrt, eps, wd, shrink;
    int use_wd, use_dwd;
} adam_consts;

static adam_consts step_consts(const npred_adam *opt)
{
    const double t = (double)opt->step;
    const double bc1 = 1.0 - pow(opt->p.beta1, t);
    const double bc2 = 1.0 - pow(opt->p.beta2, t);
    adam_consts k;
    k.b1 = (float)opt->p.beta1, k.c1 = (float)(1.0 - opt->p.beta1);
    k.b2 = (float)opt->p.beta2, k.c2 = (float)(1.0 - opt->p.beta2);
    k.neg_step = (float)(-(opt->p.lr / bc1));
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = (float)opt->p.eps, k.wd = (float)opt->p.weight_decay;
    k.use_wd = opt->p.weight_decay != 0.0 && !opt->p.decoupled;
    k.use_dwd = opt->p.weight_decay != 0.0 && opt->p.decoupled;
    k.shrink = (float)(1.0 - opt->p.lr * opt->p.weight_decay);
    return k;
}

/* One element, in float32, in the order of adam.h's formulas (no contraction into
 * FMAs: the project compiles with ISO C's default -ffp-contract=off). */
static inline void adam_one(const adam_consts *k, float *param, float *m, float *v, float g)
{
    float p = *param;
    if (k->use_dwd) p = p * k->shrink;
    if (k->use_wd) g = g + k->wd * p;
    float mi = *m * k->b1;
    mi = mi + k->c1 * g;
    float vi = *v * k->b2;
    vi = vi + (k->c2 * g) * g;
    *m = mi;
    *v = vi;
    float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
    *param = p + (k->neg_step * mi) / denom;
}

/* Elements [a, b) of an unmasked step; zero (the gradient, or NULL) zeroed behind it.
 * The vector lanes do the scalar operations one for one (IEEE multiply, add, square
 * root and divide, each correctly rounded): the same bits as adam_one. */
static void adam_range(const adam_consts *k, float *param, float *m, float *v, const float *grad, float *zero,
                       size_t a, size_t b)
{
    size_t i = a;
#ifdef __AVX512F__
    const __m512 b1 = _mm512_set1_ps(k->b1), c1 = _mm512_set1_ps(k->c1), b2 = _mm512_set1_ps(k->b2),
                 c2 = _mm512_set1_ps(k->c2), ns = _mm512_set1_ps(k->neg_step), bs = _mm512_set1_ps(k->bc2_sqrt),
                 eps = _mm512_set1_ps(k->eps), wd = _mm512_set1_ps(k->wd), shrink = _mm512_set1_ps(k->shrink);
    for (; i + 16 <= b; i += 16) {
        __m512 g = _mm512_loadu_ps(grad + i), p = _mm512_loadu_ps(param + i);
        if (k->use_dwd) p = _mm512_mul_ps(p, shrink);
        if (k->use_wd) g = _mm512_add_ps(g, _mm512_mul_ps(wd, p));
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), b1), _mm512_mul_ps(c1, g));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), b2), _mm512_mul_ps(_mm512_mul_ps(c2, g), g));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bs), eps);
        _mm512_storeu_ps(param + i, _mm512_add_ps(p, _mm512_div_ps(_mm512_mul_ps(ns, mi), denom)));
        if (zero) _mm512_storeu_ps(zero + i, _mm512_setzero_ps());
    }
#endif
    for (; i < b; i++) {
        adam_one(k, param + i, m + i, v + i, grad[i]);
        if (zero) zero[i] = 0.0f;
    }
}

/* elements per parallel piece: a multiple of 16 (the vector width), large enough that
 * a step of a small model stays on one thread */
#define ADAM_PIECE 16384

static void adam_all(const adam_consts *k, float *param, float *m, float *v, const float *grad, float *zero, size_t n)
{
    const size_t pieces = (n + ADAM_PIECE - 1) / ADAM_PIECE;
    const int T = pieces > 1 ? omp_get_max_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
    for (size_t q = 0; q < pieces; q++) {
        size_t a = q * ADAM_PIECE, b = a + ADAM_PIECE < n ? a + ADAM_PIECE : n;
        adam_range(k, param, m, v, grad, zero, a, b);
    }
}

npred_status npred_adam_step(npred_adam *opt, float *param, const float *grad)
{
    return npred_adam_step_masked(opt, param, grad, NULL);
}

npred_status npred_adam_step_zero_grad(npred_adam *opt, float *param, float *grad)
{
    if (!opt || !opt->m || !param || !grad)
        return npred_errorf(NPRED_ERR_ARG, "adam: step needs an initialized optimizer, param and grad");
    opt->step++;
    const adam_consts k = step_consts(opt);
    adam_all(&k, param, opt->m, opt->v, grad, grad, opt->n);
    return NPRED_OK;
}

npred_status npred_adam_step_masked(npred_adam *opt, float *param, const float *grad, const unsigned char *frozen)
{
    if (!opt || !opt->m || !param || !grad)
        return npred_errorf(NPRED_ERR_ARG, "adam: step needs an initialized optimizer, param and grad");
    opt->step++;
    const adam_consts k = step_consts(opt);
    float *m = opt->m, *v = opt->v;
    const int64_t n = (int64_t)opt->n;
    if (!frozen) {
        adam_all(&k, param, m, v, grad, NULL, opt->n);
        return NPRED_OK;
    }
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++)
        if (!frozen[i]) adam_one(&k, param + i, m + i, v + i, grad[i]);
    return NPRED_OK;
}
