/* BatchNorm2d forward/backward (see batchnorm.h). B, C, H, W as in the header;
 * one channel's values are B runs of HW = H*W contiguous floats, C*HW apart. */
#include "kernels/batchnorm.h"
#include "kernels/batchnorm_sync.h"

#include <math.h>
#include <stddef.h>

static npred_status check_dims(const char *fn, int B, int C, int H, int W)
{
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, C, H, W) = (%d, %d, %d, %d) must be positive",
                            fn, B, C, H, W);
    return NPRED_OK;
}

/* Sum of one channel's values, in double (first pass; channel_sqdev is the second). */
static double channel_sum(const float *x, int B, size_t HW, size_t bstride)
{
    double s = 0;
    for (int b = 0; b < B; b++) {
        const float *p = x + (size_t)b * bstride;
        for (size_t i = 0; i < HW; i++) s += p[i];
    }
    return s;
}

/* Sum of squared deviations from `mean`, in double. */
static double channel_sqdev(const float *x, double mean, int B, size_t HW, size_t bstride)
{
    double s = 0;
    for (int b = 0; b < B; b++) {
        const float *p = x + (size_t)b * bstride;
        for (size_t i = 0; i < HW; i++) {
            double d = (double)p[i] - mean;
            s += d * d;
        }
    }
    return s;
}

npred_status npred_batchnorm2d_forward(float *y, double *save_mean, double *save_invstd,
                                       float *running_mean, float *running_var,
                                       int64_t *num_batches_tracked, const float *x,
                                       const float *gamma, const float *beta, int B, int C, int H,
                                       int W, int training, double momentum, double eps)
{
    if (training && npred_batchnorm_sync_active()) /* data-parallel: global batch statistics */
        return npred_batchnorm2d_forward_sync(y, save_mean, save_invstd, running_mean, running_var,
                                              num_batches_tracked, x, gamma, beta, B, C, H, W, momentum, eps);
    const char *fn = "npred_batchnorm2d_forward";
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if (!y || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: y, x, save_mean and save_invstd are required", fn);
    if ((running_mean == NULL) != (running_var == NULL))
        return npred_errorf(NPRED_ERR_ARG, "%s: give both running_mean and running_var or neither", fn);
    if (!training && !running_mean)
        return npred_errorf(NPRED_ERR_ARG, "%s: eval mode needs running_mean and running_var", fn);
    if (!(eps > 0) || !isfinite(eps))
        return npred_errorf(NPRED_ERR_ARG, "%s: eps must be a positive finite number, got %g", fn, eps);
    if (training && running_mean && !(momentum >= 0 && momentum <= 1))
        return npred_errorf(NPRED_ERR_ARG, "%s: momentum must be in [0, 1], got %g", fn, momentum);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    const size_t n = (size_t)B * HW;
    if (training && n < 2)
        return npred_errorf(NPRED_ERR_ARG,
                            "%s: training needs more than 1 value per channel, got input (%d, %d, %d, %d)",
                            fn, B, C, H, W);

#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
        double mean, invstd;
        if (training) {
            mean = channel_sum(xc, B, HW, bstride) / (double)n;
            double ssd = channel_sqdev(xc, mean, B, HW, bstride);
            invstd = 1.0 / sqrt(ssd / (double)n + eps);
            if (running_mean) {
                double unbiased = ssd / (double)(n - 1);
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
        } else {
            mean = running_mean[c];
            invstd = 1.0 / sqrt((double)running_var[c] + eps);
        }
        save_mean[c] = mean;
        save_invstd[c] = invstd;
        double g = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
        const double a = g * invstd;
        for (int b = 0; b < B; b++) {
            const float *p = xc + (size_t)b * bstride;
            float *q = y + (size_t)c * HW + (size_t)b * bstride;
            for (size_t i = 0; i < HW; i++) q[i] = (float)(((double)p[i] - mean) * a + bt);
        }
    }
    if (training && num_batches_tracked) (*num_batches_tracked)++;
    return NPRED_OK;
}

npred_status npred_batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                        const float *x, const float *gamma, const double *save_mean,
                                        const double *save_invstd, int B, int C, int H, int W,
                                        int training)
{
    if (training && npred_batchnorm_sync_active())
        return npred_batchnorm2d_backward_sync(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, B, C, H, W);
    const char *fn = "npred_batchnorm2d_backward";
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if (!dy || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: dy, x, save_mean and save_invstd are required", fn);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    const size_t n = (size_t)B * HW;

#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * HW;
        const double mean = save_mean[c], invstd = save_invstd[c];
        const double g = gamma ? gamma[c] : 1.0;
        /* sum(dy) and sum(dy * (x - mean)) over the channel */
        double sdy = 0, sdyx = 0;
        if (training || dgamma || dbeta) {
            for (int b = 0; b < B; b++) {
                const float *pd = dy + off + (size_t)b * bstride;
                const float *px = x + off + (size_t)b * bstride;
                for (size_t i = 0; i < HW; i++) {
                    sdy += pd[i];
                    sdyx += (double)pd[i] * ((double)px[i] - mean);
                }
            }
        }
        if (dgamma) dgamma[c] += (float)(sdyx * invstd);
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        const double a = g * invstd;
        if (training) {
            /* dx = a * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) */
            const double mdy = sdy / (double)n;
            const double k = invstd * invstd * sdyx / (double)n;
            for (int b = 0; b < B; b++) {
                const float *pd = dy + off + (size_t)b * bstride;
                const float *px = x + off + (size_t)b * bstride;
                float *q = dx + off + (size_t)b * bstride;
                for (size_t i = 0; i < HW; i++)
                    q[i] += (float)(a * ((double)pd[i] - mdy - ((double)px[i] - mean) * k));
            }
        } else {
            for (int b = 0; b < B; b++) {
                const float *pd = dy + off + (size_t)b * bstride;
                float *q = dx + off + (size_t)b * bstride;
                for (size_t i = 0; i < HW; i++) q[i] += (float)(a * pd[i]);
            }
        }
    }
    return NPRED_OK;
}
