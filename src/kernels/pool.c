/* Average pooling with kernel == stride, and channel concatenation (see pool.h). */
#include "kernels/pool.h"

#include <stddef.h>
#include <string.h>

static npred_status check_pool(const char *fn, int B, int C, int H, int W, int k)
{
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, C, H, W) = (%d, %d, %d, %d) must be positive",
                            fn, B, C, H, W);
    if (k <= 0) return npred_errorf(NPRED_ERR_ARG, "%s: kernel size must be positive, got %d", fn, k);
    if (H < k || W < k)
        return npred_errorf(NPRED_ERR_ARG, "%s: input %dx%d is smaller than the %dx%d kernel", fn, H, W, k,
                            k);
    return NPRED_OK;
}

npred_status npred_avgpool2d_forward(float *y, const float *x, int B, int C, int H, int W, int k)
{
    const char *fn = "npred_avgpool2d_forward";
    npred_status s = check_pool(fn, B, C, H, W, k);
    if (s) return s;
    if (!y || !x) return npred_errorf(NPRED_ERR_ARG, "%s: y and x are required", fn);
    const int Ho = H / k, Wo = W / k;
    const float div = (float)(k * k);
    const long planes = (long)B * C;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * H * W;
        float *yp = y + (size_t)p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float sum = 0;
                for (int i = 0; i < k; i++) {
                    const float *row = xp + (size_t)(oh * k + i) * W + (size_t)ow * k;
                    for (int j = 0; j < k; j++) sum += row[j];
                }
                yp[(size_t)oh * Wo + ow] = sum / div;
            }
    }
    return NPRED_OK;
}

npred_status npred_avgpool2d_backward(float *dx, const float *dy, int B, int C, int H, int W, int k)
{
    const char *fn = "npred_avgpool2d_backward";
    npred_status s = check_pool(fn, B, C, H, W, k);
    if (s) return s;
    if (!dx || !dy) return npred_errorf(NPRED_ERR_ARG, "%s: dx and dy are required", fn);
    const int Ho = H / k, Wo = W / k;
    const float div = (float)(k * k);
    const long planes = (long)B * C;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < planes; p++) {
        float *xp = dx + (size_t)p * H * W;
        const float *yp = dy + (size_t)p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int i = 0; i < k; i++) {
                float *row = xp + (size_t)(oh * k + i) * W;
                for (int ow = 0; ow < Wo; ow++) {
                    const float g = yp[(size_t)oh * Wo + ow] / div;
                    for (int j = 0; j < k; j++) row[ow * k + j] += g;
                }
            }
    }
    return NPRED_OK;
}

/* Validate the pieces; on success *ctot = sum cs. */
static npred_status check_concat(const char *fn, const int *cs, int n, int B, int H, int W, int *ctot)
{
    if (n <= 0 || !cs) return npred_errorf(NPRED_ERR_ARG, "%s: need n > 0 pieces and their channel counts", fn);
    if (B <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, H, W) = (%d, %d, %d) must be positive", fn, B, H, W);
    long tot = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i] <= 0)
            return npred_errorf(NPRED_ERR_ARG, "%s: piece %d has %d channels, expected > 0", fn, i, cs[i]);
        tot += cs[i];
        if (tot > 0x7fffffffL) return npred_errorf(NPRED_ERR_ARG, "%s: too many channels", fn);
    }
    *ctot = (int)tot;
    return NPRED_OK;
}

npred_status npred_concat2d_forward(float *y, const float *const *xs, const int *cs, int n, int B, int H,
                                    int W)
{
    const char *fn = "npred_concat2d_forward";
    int ctot;
    npred_status s = check_concat(fn, cs, n, B, H, W, &ctot);
    if (s) return s;
    if (!y || !xs) return npred_errorf(NPRED_ERR_ARG, "%s: y and xs are required", fn);
    for (int i = 0; i < n; i++)
        if (!xs[i]) return npred_errorf(NPRED_ERR_ARG, "%s: piece %d is NULL", fn, i);
    const size_t HW = (size_t)H * W;
    long blocks = (long)B * n;
#pragma omp parallel for schedule(static)
    for (long q = 0; q < blocks; q++) {
        int b = (int)(q / n), i = (int)(q % n);
        size_t c0 = 0;
        for (int j = 0; j < i; j++) c0 += (size_t)cs[j];
        const size_t len = (size_t)cs[i] * HW;
        memcpy(y + ((size_t)b * ctot + c0) * HW, xs[i] + (size_t)b * len, len * sizeof(float));
    }
    return NPRED_OK;
}

npred_status npred_concat2d_backward(float *const *dxs, const float *dy, const int *cs, int n, int B,
                                     int H, int W)
{
    const char *fn = "npred_concat2d_backward";
    int ctot;
    npred_status s = check_concat(fn, cs, n, B, H, W, &ctot);
    if (s) return s;
    if (!dy || !dxs) return npred_errorf(NPRED_ERR_ARG, "%s: dy and dxs are required", fn);
    const size_t HW = (size_t)H * W;
    long blocks = (long)B * n;
#pragma omp parallel for schedule(static)
    for (long q = 0; q < blocks; q++) {
        int b = (int)(q / n), i = (int)(q % n);
        if (!dxs[i]) continue;
        size_t c0 = 0;
        for (int j = 0; j < i; j++) c0 += (size_t)cs[j];
        const size_t len = (size_t)cs[i] * HW;
        const float *src = dy + ((size_t)b * ctot + c0) * HW;
        float *dst = dxs[i] + (size_t)b * len;
        for (size_t e = 0; e < len; e++) dst[e] += src[e];
    }
    return NPRED_OK;
}
