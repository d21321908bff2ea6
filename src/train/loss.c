/* Training losses (see loss.h). B = batch, n = neurons.
 *
 * Element-wise losses share one reduction skeleton: a per-element value l(yhat, y)
 * and derivative dl/dyhat, evaluated in double from the float32 inputs. Both passes run
 * OpenMP-parallel (over row chunks, column blocks or rows) in a partition that does
 * not depend on the thread count, so results are the same for any thread count. */
#include "train/loss.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef enum { EL_POISSON, EL_EXPONENTIAL, EL_ANSCOMBE, EL_MSE } elem_kind;

typedef struct {
    elem_kind kind;
    double a, b; /* per-kind constants: poisson eps; exponential bias, target_bias */
} elem_fn;

/* value of one element; *d receives dl/dyhat when d != NULL */
static inline double elem_eval(const elem_fn *f, double yh, double y, double *d)
{
    switch (f->kind) {
    case EL_POISSON: {
        double z = yh + f->a;
        if (d) *d = 1.0 - y / z;
        return yh - y * log(z);
    }
    case EL_EXPONENTIAL: {
        double o = yh + f->a, t = y + f->b;
        if (d) *d = 1.0 / o - t / (o * o);
        return t / o + log(o);
    }
    case EL_ANSCOMBE: {
        double s = sqrt(yh);
        double r = 2.0 * sqrt(y + 0.375) - (2.0 * sqrt(yh + 0.375) - 1.0 / (4.0 * s));
        /* d/dyhat of the transformed output: 1/sqrt(yhat + 3/8) + 1/(8 yhat^{3/2}) */
        if (d) *d = -2.0 * r * (1.0 / sqrt(yh + 0.375) + 1.0 / (8.0 * yh * s));
        return r * r;
    }
    case EL_MSE: {
        double r = yh - y;
        if (d) *d = 2.0 * r;
        return r * r;
    }
    }
    return NAN;
}

int64_t npred_loss_size(npred_loss_reduction red, int64_t n)
{
    return (red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN) ? n : 1;
}

static npred_status check_args(const char *who, const void *out, const void *a, const void *b,
                               int64_t B, int64_t n, npred_loss_reduction red)
{
    if (!out || !a || !b)
        return npred_errorf(NPRED_ERR_ARG, "%s: NULL array argument", who);
    return npred_loss_check_batch(who, B, n, red);
}

npred_status npred_loss_check_batch(const char *who, int64_t B, int64_t n, npred_loss_reduction red)
{
    if (B <= 0 || n <= 0)
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected a (B, n) batch with B, n > 0, got (%lld, %lld)",
                            who, (long long)B, (long long)n);
    if (red < NPRED_LOSS_SUM || red > NPRED_LOSS_PER_NEURON_MEAN)
        return npred_errorf(NPRED_ERR_ARG, "%s: unknown reduction %d", who, (int)red);
    return NPRED_OK;
}

/* divisor turning a sum into the reduction's mean (1 for sums) */
static double reduction_scale(npred_loss_reduction red, int64_t B, int64_t n)
{
    switch (red) {
    case NPRED_LOSS_MEAN: return 1.0 / ((double)B * (double)n);
    case NPRED_LOSS_PER_NEURON_MEAN: return 1.0 / (double)B;
    default: return 1.0;
    }
}

/* loss: (1,) or (n,); yhat, y: (B, n). Parallel but thread-count independent: per-neuron
 * sums run over column blocks (each column summed in row order); the full sum adds
 * NCHUNK fixed row chunks, each summed in order, then the chunk sums in order. */
#define NCHUNK 64
static void reduce_forward(double *loss, const elem_fn *f, const float *yhat, const float *y,
                           int64_t B, int64_t n, npred_loss_reduction red)
{
    const int per_neuron = red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN;
    const double s = reduction_scale(red, B, n);
    const int par = B * n > 65536;
    if (per_neuron) {
        const int64_t JB = 256, nblk = (n + JB - 1) / JB;
#pragma omp parallel for schedule(static) if (par)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t j0 = blk * JB, j1 = j0 + JB < n ? j0 + JB : n;
            for (int64_t j = j0; j < j1; j++) loss[j] = 0.0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t j = j0; j < j1; j++)
                    loss[j] += elem_eval(f, yhat[b * n + j], y[b * n + j], NULL);
            for (int64_t j = j0; j < j1; j++) loss[j] *= s;
        }
    } else {
        double part[NCHUNK];
        const int64_t nc = B < NCHUNK ? B : NCHUNK;
#pragma omp parallel for schedule(static) if (par)
        for (int64_t c = 0; c < nc; c++) {
            const int64_t lo = B * c / nc * n, hi = B * (c + 1) / nc * n;
            double acc = 0.0;
            for (int64_t i = lo; i < hi; i++) acc += elem_eval(f, yhat[i], y[i], NULL);
            part[c] = acc;
        }
        double acc = 0.0;
        for (int64_t c = 0; c < nc; c++) acc += part[c];
        loss[0] = acc * s;
    }
}

/* dyhat (+=), yhat, y: (B, n); dloss: (1,) or (n,) or NULL (ones) */
static void reduce_backward(float *dyhat, const double *dloss, const elem_fn *f, const float *yhat,
                            const float *y, int64_t B, int64_t n, npred_loss_reduction red)
{
    const int per_neuron = red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN;
    const double s = reduction_scale(red, B, n);
    const double g0 = (dloss ? dloss[0] : 1.0) * s;
#pragma omp parallel for schedule(static) if (B * n > 65536)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t j = 0; j < n; j++) {
            double d = 0.0;
            int64_t i = b * n + j;
            (void)elem_eval(f, yhat[i], y[i], &d);
            double g = per_neuron ? (dloss ? dloss[j] : 1.0) * s : g0;
            dyhat[i] += (float)(d * g);
        }
    }
}

/* ---- value and gradient in one pass (SUM / MEAN) ----
 *
 * The forward's row chunks, each summed in element order, and the backward's
 * gradient of every element, written (not accumulated): the bits of _forward, and of
 * _backward into a zeroed dyhat (0.0f + the same float; the addition keeps +0 where
 * the product is -0). Each row's gradient is one loop the compiler vectorises for
 * the Poisson loss (a double division per element); the row's value follows in order.
 *
 * The Poisson value of an element with y == 0 and a finite log(yhat + eps) is
 * yhat - 0: y log(...) is then a signed zero, and yhat - (+-0) differs from yhat at
 * most in the sign of a zero, which the chunk's sum (it starts at +0 and cannot
 * become -0) does not see. So the log is taken for the other elements only (about a
 * third of a batch of spike counts): their indices are listed without a branch, the
 * products y log(yhat + eps) go into a row of zeros, and the row is summed in order
 * as yhat - product (a branch per element cost more than the logs it saved, the
 * zeros being unpredictable). */
static void row_grad(const elem_fn *f, float *dy, const float *yhat, const float *y, int64_t n, double g)
{
    if (f->kind == EL_POISSON) {
        const double a = f->a;
        for (int64_t j = 0; j < n; j++) {
            double z = (double)yhat[j] + a;
            double d = 1.0 - (double)y[j] / z;
            dy[j] = 0.0f + (float)(d * g);
        }
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        double d = 0.0;
        (void)elem_eval(f, yhat[j], y[j], &d);
        dy[j] = 0.0f + (float)(d * g);
    }
}

/* acc + the row's values in order; ws: n doubles and n indices, or NULL (then the
 * Poisson row takes every log) */
static double row_value(const elem_fn *f, double acc, const float *yhat, const float *y, int64_t n, double *prod,
                        int32_t *idx)
{
    if (f->kind != EL_POISSON || !prod) {
        for (int64_t j = 0; j < n; j++) acc += elem_eval(f, yhat[j], y[j], NULL);
        return acc;
    }
    const double a = f->a;
    int64_t k = 0, j = 0;
    memset(prod, 0, (size_t)n * sizeof *prod);
#ifdef __AVX512F__
    const __m512d va = _mm512_set1_pd(a), inf = _mm512_set1_pd(INFINITY), zd = _mm512_setzero_pd();
    const __m512i step = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16, iota = _mm512_add_epi32(iota, step)) {
        const __m512 yv = _mm512_loadu_ps(y + j), hv = _mm512_loadu_ps(yhat + j);
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(hv), 1));
        const __m512d z0 = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(hv)), va);
        const __m512d z1 = _mm512_add_pd(_mm512_cvtps_pd(hi), va);
        const unsigned f0 = _mm512_cmp_pd_mask(z0, zd, _CMP_GT_OQ) & _mm512_cmp_pd_mask(z0, inf, _CMP_LT_OQ);
        const unsigned f1 = _mm512_cmp_pd_mask(z1, zd, _CMP_GT_OQ) & _mm512_cmp_pd_mask(z1, inf, _CMP_LT_OQ);
        const unsigned zero = _mm512_cmp_ps_mask(yv, _mm512_setzero_ps(), _CMP_EQ_OQ) & (f0 | f1 << 8);
        const __mmask16 need = (__mmask16)(~zero & 0xFFFFu);
        _mm512_mask_compressstoreu_epi32(idx + k, need, iota);
        k += __builtin_popcount(need);
    }
#endif
    for (; j < n; j++) {
        double z = (double)yhat[j] + a;
        const int zero = (y[j] == 0.0f) & (z > 0.0) & (z < INFINITY); /* no short circuit: no branch */
        idx[k] = (int32_t)j;
        k += 1 - zero;
    }
    for (int64_t q = 0; q < k; q++) {
        int64_t j = idx[q];
        prod[j] = (double)y[j] * log((double)yhat[j] + a);
    }
    for (int64_t j = 0; j < n; j++) acc += (double)yhat[j] - prod[j];
    return acc;
}

static npred_status elem_value_grad(const char *who, double *loss, float *dyhat, double dloss, const elem_fn *f,
                                    const float *yhat, const float *y, int64_t B, int64_t n, npred_loss_reduction red)
{
    npred_status st = check_args(who, loss, yhat, y, B, n, red);
    if (st) return st;
    if (!dyhat) return npred_errorf(NPRED_ERR_ARG, "%s: NULL gradient", who);
    if (red != NPRED_LOSS_SUM && red != NPRED_LOSS_MEAN)
        return npred_errorf(NPRED_ERR_ARG, "%s: value and gradient in one pass take the SUM or MEAN reduction", who);
    const double s = reduction_scale(red, B, n), g = dloss * s;
    const int ws = f->kind == EL_POISSON && n <= INT32_MAX;
    double part[NCHUNK];
    const int64_t nc = B < NCHUNK ? B : NCHUNK;
#pragma omp parallel if (B * n > 65536)
    {
        double *prod = ws ? malloc((size_t)n * (sizeof(double) + sizeof(int32_t))) : NULL;
        int32_t *idx = prod ? (int32_t *)(void *)(prod + n) : NULL;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nc; c++) {
            double acc = 0.0;
            for (int64_t b = B * c / nc; b < B * (c + 1) / nc; b++) {
                row_grad(f, dyhat + b * n, yhat + b * n, y + b * n, n, g);
                acc = row_value(f, acc, yhat + b * n, y + b * n, n, prod, idx);
            }
            part[c] = acc;
        }
        free(prod);
    }
    double acc = 0.0;
    for (int64_t c = 0; c < nc; c++) acc += part[c];
    loss[0] = acc * s;
    return NPRED_OK;
}

static npred_status elem_forward(const char *who, double *loss, const elem_fn *f, const float *yhat,
                                 const float *y, int64_t B, int64_t n, npred_loss_reduction red)
{
    npred_status st = check_args(who, loss, yhat, y, B, n, red);
    if (st) return st;
    reduce_forward(loss, f, yhat, y, B, n, red);
    return NPRED_OK;
}

static npred_status elem_backward(const char *who, float *dyhat, const double *dloss,
                                  const elem_fn *f, const float *yhat, const float *y, int64_t B,
                                  int64_t n, npred_loss_reduction red)
{
    npred_status st = check_args(who, dyhat, yhat, y, B, n, red);
    if (st) return st;
    reduce_backward(dyhat, dloss, f, yhat, y, B, n, red);
    return NPRED_OK;
}

npred_status npred_loss_poisson_forward(double *loss, const float *yhat, const float *y,
                                        int64_t B, int64_t n, npred_loss_reduction red, double eps)
{
    elem_fn f = {EL_POISSON, eps, 0};
    return elem_forward("poisson loss", loss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_poisson_backward(float *dyhat, const double *dloss, const float *yhat,
                                         const float *y, int64_t B, int64_t n,
                                         npred_loss_reduction red, double eps)
{
    elem_fn f = {EL_POISSON, eps, 0};
    return elem_backward("poisson loss", dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_poisson_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                          const float *y, int64_t B, int64_t n, npred_loss_reduction red, double eps)
{
    elem_fn f = {EL_POISSON, eps, 0};
    return elem_value_grad("poisson loss", loss, dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_exponential_forward(double *loss, const float *yhat, const float *y,
                                            int64_t B, int64_t n, npred_loss_reduction red,
                                            double bias, double target_bias)
{
    elem_fn f = {EL_EXPONENTIAL, bias, target_bias};
    return elem_forward("exponential loss", loss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_exponential_backward(float *dyhat, const double *dloss, const float *yhat,
                                             const float *y, int64_t B, int64_t n,
                                             npred_loss_reduction red, double bias,
                                             double target_bias)
{
    elem_fn f = {EL_EXPONENTIAL, bias, target_bias};
    return elem_backward("exponential loss", dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_exponential_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                              const float *y, int64_t B, int64_t n, npred_loss_reduction red,
                                              double bias, double target_bias)
{
    elem_fn f = {EL_EXPONENTIAL, bias, target_bias};
    return elem_value_grad("exponential loss", loss, dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_anscombe_mse_forward(double *loss, const float *yhat, const float *y,
                                             int64_t B, int64_t n, npred_loss_reduction red)
{
    elem_fn f = {EL_ANSCOMBE, 0, 0};
    return elem_forward("anscombe mse", loss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_anscombe_mse_backward(float *dyhat, const double *dloss, const float *yhat,
                                              const float *y, int64_t B, int64_t n,
                                              npred_loss_reduction red)
{
    elem_fn f = {EL_ANSCOMBE, 0, 0};
    return elem_backward("anscombe mse", dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_anscombe_mse_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                               const float *y, int64_t B, int64_t n, npred_loss_reduction red)
{
    elem_fn f = {EL_ANSCOMBE, 0, 0};
    return elem_value_grad("anscombe mse", loss, dyhat, dloss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_mse_forward(double *loss, const float *yhat, const float *y,
                                    int64_t B, int64_t n, npred_loss_reduction red)
{
    elem_fn f = {EL_MSE, 0, 0};
    return elem_forward("mse loss", loss, &f, yhat, y, B, n, red);
}

npred_status npred_loss_mse_backward(float *dyhat, const double *dloss, const float *yhat,
                                     const float *y, int64_t B, int64_t n,
                                     npred_loss_reduction red)
{
    elem_fn f = {EL_MSE, 0, 0};
    return elem_backward("mse loss", dyhat, dloss, &f, yhat, y, B, n, red);
}

/* ---- Gamma ---- */

double npred_digamma(double x)
{
    if (!(x > 0.0)) return NAN;
    double r = 0.0;
    /* recurrence psi(x) = psi(x + 1) - 1/x up to x >= 8, then the asymptotic series */
    while (x < 8.0) {
        r -= 1.0 / x;
        x += 1.0;
    }
    double f = 1.0 / (x * x);
    double t = f * (-1.0 / 12 + f * (1.0 / 120 + f * (-1.0 / 252 + f * (1.0 / 240 +
               f * (-1.0 / 132 + f * (691.0 / 32760 + f * (-1.0 / 12)))))));
    return r + log(x) - 0.5 / x + t;
}

/* The two-parameter likelihood losses (HEAD GammaLoss, GaussianLoss): per element
 * l(a, b, y) and its derivatives; the support checks name the element. */
typedef enum { NLL_GAMMA, NLL_GAUSSIAN } nll_kind;

static npred_status nll_check(nll_kind k, const char *who, const float *a, const float *b, const float *y,
                              int64_t B, int64_t n, double eps_shift)
{
    for (int64_t i = 0; i < B * n; i++) {
        if (k == NLL_GAUSSIAN) {
            if (!(b[i] > 0.0f) || !isfinite(b[i]) || !isfinite(a[i]))
                return npred_errorf(NPRED_ERR_VALUE, "%s: element %lld: mean %g must be finite and variance %g "
                                    "finite and > 0", who, (long long)i, a[i], b[i]);
            continue;
        }
        if (!(a[i] > 0.0f) || !(b[i] > 0.0f) || !isfinite(a[i]) || !isfinite(b[i]))
            return npred_errorf(NPRED_ERR_VALUE,
                                "%s: element %lld: concentration %g and rate %g must be finite and > 0",
                                who, (long long)i, a[i], b[i]);
        if (!((double)y[i] + eps_shift > 0.0))
            return npred_errorf(NPRED_ERR_VALUE,
                                "%s: element %lld: target + eps_shift = %g is outside the support (> 0)",
                                who, (long long)i, (double)y[i] + eps_shift);
    }
    return NPRED_OK;
}

#define LOG_SQRT_2PI_D 0.91893853320467274178

static double nll_elem(nll_kind k, double a, double b, double y, double eps_shift, double *da, double *db)
{
    if (k == NLL_GAUSSIAN) { /* -log N(y; a, sqrt(b)) */
        double r = y - a;
        if (da) *da = -r / b;
        if (db) *db = 0.5 / b - r * r / (2.0 * b * b);
        return r * r / (2.0 * b) + 0.5 * log(b) + LOG_SQRT_2PI_D;
    }
    double x = y + eps_shift; /* -log Gamma(x; concentration a, rate b) */
    if (da) *da = -(log(b) + log(x) - npred_digamma(a));
    if (db) *db = -(a / b - x);
    return -(a * log(b) + (a - 1.0) * log(x) - b * x - lgamma(a));
}

static npred_status nll_forward(nll_kind k, const char *who, double *loss, const float *pa, const float *pb,
                                const float *y, int64_t B, int64_t n, npred_loss_reduction red, double eps_shift)
{
    npred_status st = check_args(who, loss, pa, pb, B, n, red);
    if (st) return st;
    if (!y) return npred_errorf(NPRED_ERR_ARG, "%s: NULL target", who);
    if ((st = nll_check(k, who, pa, pb, y, B, n, eps_shift))) return st;
    const int per_neuron = red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN;
    const int64_t m = per_neuron ? n : 1;
    for (int64_t j = 0; j < m; j++) loss[j] = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < n; j++) {
            int64_t i = b * n + j;
            loss[per_neuron ? j : 0] += nll_elem(k, pa[i], pb[i], y[i], eps_shift, NULL, NULL);
        }
    const double s = reduction_scale(red, B, n);
    for (int64_t j = 0; j < m; j++) {
        loss[j] *= s;
        if (!isfinite(loss[j]))
            return npred_errorf(NPRED_ERR_VALUE, "%s: non-finite loss %g", who, loss[j]);
    }
    return NPRED_OK;
}

static npred_status nll_backward(nll_kind k, const char *who, float *da, float *db, const double *dloss,
                                 const float *pa, const float *pb, const float *y, int64_t B, int64_t n,
                                 npred_loss_reduction red, double eps_shift)
{
    npred_status st = check_args(who, pa, pb, y, B, n, red);
    if (st) return st;
    if ((st = nll_check(k, who, pa, pb, y, B, n, eps_shift))) return st;
    if (!da && !db) return NPRED_OK;
    const int per_neuron = red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN;
    const double s = reduction_scale(red, B, n);
#pragma omp parallel for schedule(static) if (B * n > 65536)
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < n; j++) {
            int64_t i = b * n + j;
            double ga, gb, g = (dloss ? dloss[per_neuron ? j : 0] : 1.0) * s;
            nll_elem(k, pa[i], pb[i], y[i], eps_shift, &ga, &gb);
            if (da) da[i] += (float)(ga * g);
            if (db) db[i] += (float)(gb * g);
        }
    return NPRED_OK;
}

npred_status npred_loss_gamma_forward(double *loss, const float *conc, const float *rate,
                                      const float *y, int64_t B, int64_t n,
                                      npred_loss_reduction red, double eps_shift)
{
    return nll_forward(NLL_GAMMA, "gamma loss", loss, conc, rate, y, B, n, red, eps_shift);
}

npred_status npred_loss_gamma_backward(float *dconc, float *drate, const double *dloss,
                                       const float *conc, const float *rate, const float *y,
                                       int64_t B, int64_t n, npred_loss_reduction red,
                                       double eps_shift)
{
    return nll_backward(NLL_GAMMA, "gamma loss", dconc, drate, dloss, conc, rate, y, B, n, red, eps_shift);
}

npred_status npred_loss_gaussian_forward(double *loss, const float *mean, const float *variance, const float *y,
                                         int64_t B, int64_t n, npred_loss_reduction red)
{
    return nll_forward(NLL_GAUSSIAN, "gaussian loss", loss, mean, variance, y, B, n, red, 0.0);
}

npred_status npred_loss_gaussian_backward(float *dmean, float *dvariance, const double *dloss, const float *mean,
                                          const float *variance, const float *y, int64_t B, int64_t n,
                                          npred_loss_reduction red)
{
    return nll_backward(NLL_GAUSSIAN, "gaussian loss", dmean, dvariance, dloss, mean, variance, y, B, n, red, 0.0);
}

/* ---- correlation ---- */

/* Per-neuron moments over the batch axis: means, centred variances and covariance. */
static void corr_moments(double *mo, double *mt, double *vo, double *vt, double *cov,
                         const float *yhat, const float *y, int64_t B, int64_t n, int64_t j)
{
    double so = 0, stt = 0;
    for (int64_t b = 0; b < B; b++) {
        so += yhat[b * n + j];
        stt += y[b * n + j];
    }
    *mo = so / (double)B;
    *mt = stt / (double)B;
    double a = 0, c = 0, d = 0;
    for (int64_t b = 0; b < B; b++) {
        double p = yhat[b * n + j] - *mo, q = y[b * n + j] - *mt;
        a += p * p;
        c += q * q;
        d += p * q;
    }
    *vo = a / (double)B;
    *vt = c / (double)B;
    *cov = d / (double)B;
}

npred_status npred_loss_corr_forward(double *loss, const float *yhat, const float *y,
                                     int64_t B, int64_t n, int avg, double eps)
{
    npred_status st = check_args("correlation loss", loss, yhat, y, B, n, NPRED_LOSS_SUM);
    if (st) return st;
    double total = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double mo, mt, vo, vt, cov;
        corr_moments(&mo, &mt, &vo, &vt, &cov, yhat, y, B, n, j);
        double c = cov / sqrt((vo + eps) * (vt + eps));
        if (avg) total += c;
        else loss[j] = c;
    }
    if (avg) loss[0] = -total / (double)n;
    return NPRED_OK;
}

npred_status npred_loss_corr_backward(float *dyhat, const double *dloss, const float *yhat,
                                      const float *y, int64_t B, int64_t n, int avg, double eps)
{
    npred_status st = check_args("correlation loss", dyhat, yhat, y, B, n, NPRED_LOSS_SUM);
    if (st) return st;
    /* dc/dyhat_b = (q_b / S - c p_b / (vo + eps)) / B with p, q the centred values and
     * S = sqrt((vo + eps)(vt + eps)); the mean subtraction drops out since sum p = sum q = 0. */
#pragma omp parallel for schedule(static) if (B * n > 65536)
    for (int64_t j = 0; j < n; j++) {
        double mo, mt, vo, vt, cov;
        corr_moments(&mo, &mt, &vo, &vt, &cov, yhat, y, B, n, j);
        double S = sqrt((vo + eps) * (vt + eps));
        double c = cov / S;
        double g = avg ? -(dloss ? dloss[0] : 1.0) / (double)n : (dloss ? dloss[j] : 1.0);
        for (int64_t b = 0; b < B; b++) {
            double p = yhat[b * n + j] - mo, q = y[b * n + j] - mt;
            dyhat[b * n + j] += (float)(g * (q / S - c * p / (vo + eps)) / (double)B);
        }
    }
    return NPRED_OK;
}
