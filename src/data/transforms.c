/* transforms: static_loader per-sample kernels (see transforms.h). */
#include "data/transforms.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int npred_rescale_size(int n, double scale)
{
    double r = nearbyint(scale * (double)n); /* round half to even, as np.round */
    return r < 1.0 ? 1 : (int)r;
}

/* scipy.ndimage "mirror" boundary: reflect about the edge samples */
static double mirror(double c, int n)
{
    if (n <= 1) return 0.0;
    double period = 2.0 * (n - 1);
    if (c < 0) c = -c;
    if (c > period) c = fmod(c, period);
    if (c > n - 1) c = period - c;
    return c;
}

npred_status npred_resample_plan_init(npred_resample_plan *p, int n_in, int n_out)
{
    memset(p, 0, sizeof *p);
    if (n_in <= 0 || n_out <= 0) return npred_errorf(NPRED_ERR_ARG, "resample: sizes %d -> %d", n_in, n_out);
    p->n_in = n_in;
    p->n_out = n_out;
    p->i0 = malloc((size_t)n_out * sizeof *p->i0);
    p->i1 = malloc((size_t)n_out * sizeof *p->i1);
    p->w = malloc((size_t)n_out * sizeof *p->w);
    if (!p->i0 || !p->i1 || !p->w) {
        npred_resample_plan_free(p);
        return npred_errorf(NPRED_ERR_NOMEM, "resample: out of memory");
    }
    double zoom = (double)n_in / (double)n_out;
    for (int o = 0; o < n_out; o++) {
        double c = n_in == n_out ? (double)o : mirror(((double)o + 0.5) * zoom - 0.5, n_in);
        double f = floor(c);
        int i0 = (int)f;
        double t = c - f;
        int i1 = i0 + 1 < n_in ? i0 + 1 : (n_in > 1 ? n_in - 2 : 0); /* mirrored neighbour, weight 0 at the edge */
        if (i0 >= n_in) i0 = n_in - 1;
        p->i0[o] = i0;
        p->i1[o] = i1;
        p->w[o] = t;
    }
    return NPRED_OK;
}

void npred_resample_plan_free(npred_resample_plan *p)
{
    free(p->i0);
    free(p->i1);
    free(p->w);
    memset(p, 0, sizeof *p);
}

void npred_rescale_bilinear(float *out, const float *in, int C, const npred_resample_plan *ph,
                            const npred_resample_plan *pw)
{
    int H = ph->n_in, W = pw->n_in, Ho = ph->n_out, Wo = pw->n_out;
    if (H == Ho && W == Wo) {
        memcpy(out, in, (size_t)C * H * W * sizeof *out);
        return;
    }
    for (int c = 0; c < C; c++) {
        const float *src = in + (size_t)c * H * W;
        float *dst = out + (size_t)c * Ho * Wo;
        for (int y = 0; y < Ho; y++) {
            const float *r0 = src + (size_t)ph->i0[y] * W;
            const float *r1 = src + (size_t)ph->i1[y] * W;
            double wy1 = ph->w[y], wy0 = 1.0 - wy1;
            float *d = dst + (size_t)y * Wo;
            for (int x = 0; x < Wo; x++) {
                int a = pw->i0[x], b = pw->i1[x];
                double wx1 = pw->w[x], wx0 = 1.0 - wx1;
                double v = wy0 * (wx0 * r0[a] + wx1 * r0[b]) + wy1 * (wx0 * r1[a] + wx1 * r1[b]);
                d[x] = (float)v;
            }
        }
    }
}

void npred_tf_zscore(float *x, size_t n, float mean, float std)
{
    for (size_t i = 0; i < n; i++) x[i] = (x[i] - mean) / std;
}

void npred_tf_zscore_vec(float *x, const float *mean, const float *std, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (x[i] - mean[i]) / std[i];
}

void npred_tf_scale_vec(float *x, const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] *= p[i];
}

void npred_tf_add_planes(float *out, const float *img, int C, int H, int W, const float *v, int k)
{
    size_t hw = (size_t)H * W;
    if (out != img) memcpy(out, img, (size_t)C * hw * sizeof *out);
    for (int j = 0; j < k; j++) {
        float *p = out + (size_t)(C + j) * hw;
        for (size_t i = 0; i < hw; i++) p[i] = v[j];
    }
}

void npred_tf_select_channels(float *out, const float *img, int C, int HW, const int64_t *sel, int n_sel)
{
    for (int j = 0; j < n_sel; j++) {
        int64_t ch = sel[j] < 0 ? sel[j] + C : sel[j]; /* Python negative index, of this image's C */
        memcpy(out + (size_t)j * HW, img + (size_t)ch * HW, (size_t)HW * sizeof *out);
    }
}

void npred_tf_take(float *out, const float *x, const int64_t *idx, int64_t n_sel)
{
    for (int64_t j = 0; j < n_sel; j++) out[j] = x[idx[j]];
}

float npred_tf_response_precision(float *p, const float *std, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += std[i];
    float t = (float)(0.01 * (float)(sum / (double)n));
    for (size_t i = 0; i < n; i++) p[i] = std[i] > t ? 1.0f / std[i] : 1.0f / t;
    return t;
}
