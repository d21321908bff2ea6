/* Synchronised BatchNorm2d: see batchnorm_sync.h. */
#include "kernels/batchnorm_sync.h"

#include <math.h>
#include <stdlib.h>

static npred_batchnorm_sync_fn sync_fn;
static void *sync_user;

void npred_batchnorm_set_sync(npred_batchnorm_sync_fn fn, void *user)
{
    sync_fn = fn;
    sync_user = user;
}

int npred_batchnorm_sync_active(void) { return sync_fn != NULL; }

static npred_status reduce(double *x, size_t n, const char *fn)
{
    if (!sync_fn) return NPRED_OK;
    npred_status s = sync_fn(sync_user, x, n);
    return s ? npred_error_prefix(s, "%s: statistics reduction", fn) : NPRED_OK;
}

npred_status npred_batchnorm2d_forward_sync(float *y, double *save_mean, double *save_invstd, float *running_mean,
                                            float *running_var, int64_t *num_batches_tracked, const float *x,
                                            const float *gamma, const float *beta, int B, int C, int H, int W,
                                            double momentum, double eps)
{
    const char *fn = "npred_batchnorm2d_forward_sync";
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, C, H, W) = (%d, %d, %d, %d) must be positive", fn, B, C, H, W);
    if (!y || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: y, x, save_mean and save_invstd are required", fn);
    if ((running_mean == NULL) != (running_var == NULL))
        return npred_errorf(NPRED_ERR_ARG, "%s: give both running_mean and running_var or neither", fn);
    if (!(eps > 0) || !isfinite(eps))
        return npred_errorf(NPRED_ERR_ARG, "%s: eps must be a positive finite number, got %g", fn, eps);
    if (running_mean && !(momentum >= 0 && momentum <= 1))
        return npred_errorf(NPRED_ERR_ARG, "%s: momentum must be in [0, 1], got %g", fn, momentum);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    double *buf = malloc(((size_t)C + 1) * sizeof(double)); // (C + 1): sums, then count
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fn);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int b = 0; b < B; b++) {
            const float *p = x + (size_t)c * HW + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) s += p[i];
        }
        buf[c] = s;
    }
    buf[C] = (double)B * (double)HW;
    npred_status st = reduce(buf, (size_t)C + 1, fn);
    const double N = buf[C];
    if (!st && N < 2)
        st = npred_errorf(NPRED_ERR_ARG, "%s: training needs more than 1 value per channel over all ranks", fn);
    if (st) {
        free(buf);
        return st;
    }
    for (int c = 0; c < C; c++) save_mean[c] = buf[c] / N;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double s = 0, m = save_mean[c];
        for (int b = 0; b < B; b++) {
            const float *p = x + (size_t)c * HW + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) {
                double d = (double)p[i] - m;
                s += d * d;
            }
        }
        buf[c] = s;
    }
    st = reduce(buf, (size_t)C, fn);
    if (st) {
        free(buf);
        return st;
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double mean = save_mean[c], ssd = buf[c];
        const double invstd = 1.0 / sqrt(ssd / N + eps);
        save_invstd[c] = invstd;
        if (running_mean) {
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * (ssd / (N - 1)));
        }
        const double a = (gamma ? gamma[c] : 1.0) * invstd, bt = beta ? beta[c] : 0.0;
        for (int b = 0; b < B; b++) {
            const float *p = x + (size_t)c * HW + (size_t)b * bstride;
            float *q = y + (size_t)c * HW + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) q[i] = (float)(((double)p[i] - mean) * a + bt);
        }
    }
    free(buf);
    if (num_batches_tracked) (*num_batches_tracked)++;
    return NPRED_OK;
}

npred_status npred_batchnorm2d_backward_sync(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                             const float *gamma, const double *save_mean, const double *save_invstd,
                                             int B, int C, int H, int W)
{
    const char *fn = "npred_batchnorm2d_backward_sync";
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, C, H, W) = (%d, %d, %d, %d) must be positive", fn, B, C, H, W);
    if (!dy || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: dy, x, save_mean and save_invstd are required", fn);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    double *buf = malloc((2 * (size_t)C + 1) * sizeof(double)); // (2C + 1): sum dy, sum dy*(x - mean), count
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fn);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * HW;
        const double mean = save_mean[c];
        double sdy = 0, sdyx = 0;
        for (int b = 0; b < B; b++) {
            const float *pd = dy + off + (size_t)b * bstride, *px = x + off + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) {
                sdy += pd[i];
                sdyx += (double)pd[i] * ((double)px[i] - mean);
            }
        }
        if (dgamma) dgamma[c] += (float)(sdyx * save_invstd[c]);
        if (dbeta) dbeta[c] += (float)sdy;
        buf[c] = sdy;
        buf[C + c] = sdyx;
    }
    buf[2 * C] = (double)B * (double)HW;
    npred_status st = dx ? reduce(buf, 2 * (size_t)C + 1, fn) : NPRED_OK;
    if (st || !dx) {
        free(buf);
        return st;
    }
    const double N = buf[2 * C];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * HW;
        const double mean = save_mean[c], invstd = save_invstd[c];
        const double a = (gamma ? gamma[c] : 1.0) * invstd;
        const double mdy = buf[c] / N, k = invstd * invstd * buf[C + c] / N;
        for (int b = 0; b < B; b++) {
            const float *pd = dy + off + (size_t)b * bstride, *px = x + off + (size_t)b * bstride;
            float *q = dx + off + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) q[i] += (float)(a * ((double)pd[i] - mdy - ((double)px[i] - mean) * k));
        }
    }
    free(buf);
    return NPRED_OK;
}
