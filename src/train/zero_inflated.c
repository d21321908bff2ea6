/* Zero-inflated losses (see zero_inflated.h). B = batch, n = neurons. Sums run in
 * double, per neuron in batch order, so results do not depend on the thread count. */
#include "train/zero_inflated.h"

#include <math.h>
#include <stdlib.h>

#define LOG_SQRT_2PI 0.91893853320467274178

static npred_status zi_check(const char *who, const void *out, const float *p1, const float *p2,
                             const float *loc_mask, const float *loc, const float *q, const float *y,
                             int64_t B, int64_t n, npred_loss_reduction red)
{
    if (!out || !p1 || !p2 || !loc_mask || !loc || !q || !y)
        return npred_errorf(NPRED_ERR_ARG, "%s: NULL array argument", who);
    return npred_loss_check_batch(who, B, n, red);
}

npred_status npred_loss_zi_clamp_loc(float *loc_mask, float *loc, const float *loc_in, const float *y,
                                     int64_t B, int64_t n)
{
    if (!loc_mask || !loc || !loc_in || !y)
        return npred_errorf(NPRED_ERR_ARG, "zero-inflated loc clamp: NULL array argument");
    if (B <= 0 || n <= 0)
        return npred_errorf(NPRED_ERR_SHAPE, "zero-inflated loc clamp: expected B, n > 0");
    /* first clamp: [0, max over the batch of y[:, j]] (torch clamp: min first, then max) */
    for (int64_t j = 0; j < n; j++) {
        float hi = y[j];
        for (int64_t b = 1; b < B; b++) hi = y[b * n + j] > hi ? y[b * n + j] : hi;
        for (int64_t b = 0; b < B; b++) {
            float v = loc_in[b * n + j];
            v = v < 0.0f ? 0.0f : v;
            loc_mask[b * n + j] = v > hi ? hi : v;
        }
    }
    /* find_nonzero_min(y * nonzero_mask): zeros take the global maximum of that product */
    float gmax = 0.0f;
    for (int64_t i = 0; i < B * n; i++) {
        float v = y[i] > loc_mask[i] ? y[i] : 0.0f;
        if (i == 0 || v > gmax) gmax = v;
    }
    for (int64_t j = 0; j < n; j++) {
        float m = 0.0f;
        for (int64_t b = 0; b < B; b++) {
            float v = y[b * n + j] > loc_mask[b * n + j] ? y[b * n + j] : 0.0f;
            if (v == 0.0f) v += gmax;
            if (b == 0 || v < m) m = v;
        }
        float hi = m * 0.999f;
        for (int64_t b = 0; b < B; b++) {
            float v = loc_mask[b * n + j];
            v = v < 0.0f ? 0.0f : v;
            loc[b * n + j] = v > hi ? hi : v;
        }
    }
    return NPRED_OK;
}

/* log-likelihood of the slab at one element with d = y - loc > 0; g (may be NULL)
 * receives d/dp1, d/dp2, d/dloc */
static double slab_logl(npred_zi_slab slab, double p1, double p2, double d, double *g)
{
    if (slab == NPRED_ZI_GAMMA) {
        double th = p1, k = p2;
        if (g) {
            g[0] = d / (th * th) - k / th;
            g[1] = log(d) - log(th) - npred_digamma(k);
            g[2] = -(k - 1.0) / d + 1.0 / th;
        }
        return (k - 1.0) * log(d) - d / th - k * log(th) - lgamma(k);
    }
    double mu = p1, var = p2, x = log(d), r = x - mu;
    if (g) {
        g[0] = r / var;
        g[1] = r * r / (2.0 * var * var) - 0.5 / var;
        g[2] = r / (var * d) + 1.0 / d;
    }
    return -r * r / (2.0 * var) - 0.5 * log(var) - LOG_SQRT_2PI - x;
}

/* Per-neuron spike and slab sums over the batch, their mask counts. */
static void neuron_terms(double *spike, double *slabv, int64_t *nz_count, npred_zi_slab slab, const float *p1,
                         const float *p2, const float *loc_mask, const float *loc, const float *q, const float *y,
                         int64_t B, int64_t n, int64_t j)
{
    double sp = 0.0, sl = 0.0;
    int64_t c = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t i = b * n + j;
        if (y[i] <= loc_mask[i]) {
            sp += log(1.0 - (double)q[i]) - log((double)loc_mask[i]);
        } else {
            sl += log((double)q[i]) + slab_logl(slab, p1[i], p2[i], (double)y[i] - (double)loc[i], NULL);
            c++;
        }
    }
    *spike = sp;
    *slabv = sl;
    *nz_count = c;
}

static int is_avg(npred_loss_reduction red) { return red == NPRED_LOSS_MEAN || red == NPRED_LOSS_PER_NEURON_MEAN; }
static int is_per_neuron(npred_loss_reduction red)
{
    return red == NPRED_LOSS_PER_NEURON_SUM || red == NPRED_LOSS_PER_NEURON_MEAN;
}

/* the reference's denominator: the count, or 1 where it is 0 or the term's sum is 0 */
static double denom(int64_t count, double sum) { return count != 0 && sum != 0.0 ? (double)count : 1.0; }

npred_status npred_loss_zi_forward(double *loss, npred_zi_slab slab, const float *p1, const float *p2,
                                   const float *loc_mask, const float *loc, const float *q, const float *y,
                                   int64_t B, int64_t n, npred_loss_reduction red)
{
    const char *who = slab == NPRED_ZI_GAMMA ? "ZIG loss" : "ZIL loss";
    npred_status st = zi_check(who, loss, p1, p2, loc_mask, loc, q, y, B, n, red);
    if (st) return st;
    double total = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double sp, sl;
        int64_t c;
        neuron_terms(&sp, &sl, &c, slab, p1, p2, loc_mask, loc, q, y, B, n, j);
        if (is_avg(red)) {
            sp /= denom(B - c, sp);
            sl /= denom(c, sl);
        }
        double v = -(sp + sl);
        if (is_per_neuron(red)) loss[j] = v;
        else total += v;
        if (!isfinite(v))
            return npred_errorf(NPRED_ERR_VALUE, "%s: the loss of neuron %lld is not finite (%g)", who, (long long)j, v);
    }
    if (!is_per_neuron(red)) loss[0] = red == NPRED_LOSS_MEAN ? total / (double)n : total;
    return NPRED_OK;
}

npred_status npred_loss_zi_backward(float *dp1, float *dp2, float *dloc, float *dq, const double *dloss,
                                    npred_zi_slab slab, const float *p1, const float *p2,
                                    const float *loc_mask, const float *loc, const float *q, const float *y,
                                    int64_t B, int64_t n, npred_loss_reduction red)
{
    const char *who = slab == NPRED_ZI_GAMMA ? "ZIG loss" : "ZIL loss";
    npred_status st = zi_check(who, q, p1, p2, loc_mask, loc, q, y, B, n, red);
    if (st) return st;
#pragma omp parallel for schedule(static) if (B * n > 65536)
    for (int64_t j = 0; j < n; j++) {
        double up = dloss ? dloss[is_per_neuron(red) ? j : 0] : 1.0;
        if (red == NPRED_LOSS_MEAN) up /= (double)n;
        double gsp = -up, gsl = -up; /* dL/d(spike sum), dL/d(slab sum) */
        if (is_avg(red)) {
            double sp, sl;
            int64_t c;
            neuron_terms(&sp, &sl, &c, slab, p1, p2, loc_mask, loc, q, y, B, n, j);
            gsp /= denom(B - c, sp);
            gsl /= denom(c, sl);
        }
        for (int64_t b = 0; b < B; b++) {
            int64_t i = b * n + j;
            if (y[i] <= loc_mask[i]) {
                /* autograd saved loc for log(loc); the later clamp changed it in place */
                if (dq) dq[i] += (float)(gsp * (-1.0 / (1.0 - (double)q[i])));
                if (dloc) dloc[i] += (float)(gsp * (-1.0 / (double)loc[i]));
            } else {
                double g[3];
                slab_logl(slab, p1[i], p2[i], (double)y[i] - (double)loc[i], g);
                if (dp1) dp1[i] += (float)(gsl * g[0]);
                if (dp2) dp2[i] += (float)(gsl * g[1]);
                if (dloc) dloc[i] += (float)(gsl * g[2]);
                if (dq) dq[i] += (float)(gsl / (double)q[i]);
            }
        }
    }
    return NPRED_OK;
}
