/* Gradient receptive fields: d rate_j / d image at a uniform gray image, and the
 * centre and size of a map. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "insilico/insilico_internal.h"
#include "npred/insilico.h"

#define RF_CHUNK 32 /* neurons per input-gradient call (progress granularity) */

npred_status npred_rf_gradient(npred_model *m, const char *key, const int *neurons, int count, float gray,
                               const float *pupil_center, const float *behavior, float *rf,
                               npred_insilico_progress_fn progress, void *user)
{
    if (!m || !neurons || !rf || count < 1)
        return npred_errorf(NPRED_ERR_ARG, "rf: model, neurons (at least one) and output are required");
    int si = npred_model_session_index(m, key ? key : "");
    if (si < 0) return npred_model_input_gradient(m, key, NULL, 0, NULL, NULL, NULL, NULL, NULL); /* names the key */
    if (!isfinite(gray)) return npred_errorf(NPRED_ERR_ARG, "rf: the gray level must be finite");
    int n = npred_model_session_neurons(m, si), C, H, W;
    npred_model_input_shape(m, &C, &H, &W);
    for (int i = 0; i < count; i++)
        if (neurons[i] < 0 || neurons[i] >= n)
            return npred_errorf(NPRED_ERR_ARG, "rf: neuron %d is out of range (session %s has %d neurons)", neurons[i],
                                npred_model_session_key(m, si), n);
    size_t per = (size_t)C * H * W;
    int B = count < RF_CHUNK ? count : RF_CHUNK;
    float *pc = NULL, *beh = NULL;
    npred_status st = npred_insilico_repeat(m, pupil_center, behavior, B, &pc, &beh);
    if (st) return st;
    float *img = malloc(sizeof(float) * per * B);
    if (!img) {
        st = npred_errorf(NPRED_ERR_NOMEM, "rf: out of memory");
        goto done;
    }
    for (size_t k = 0; k < per * B; k++) img[k] = gray;
    for (int i0 = 0; i0 < count; i0 += B) {
        int nb = count - i0 < B ? count - i0 : B;
        npred_neuron_grad *plan = NULL; /* one neuron per image: only the window it sees */
        if ((st = npred_neuron_grad_create(&plan, m, key, neurons + i0, nb, pc, beh))) goto done;
        st = npred_neuron_grad_run(plan, img, rf + per * i0, NULL);
        npred_neuron_grad_free(plan);
        if (st) goto done;
        if (progress && progress(user, i0 + nb, count)) {
            st = npred_errorf(NPRED_ERR_INTERRUPTED, "rf: stopped after %d neurons", i0 + nb);
            goto done;
        }
    }
done:
    free(pc);
    free(beh);
    free(img);
    return st;
}

/* Weights: the squared map summed over channels, keeping pixels at >= 20 % of the
 * peak (a broad low background would otherwise pull the centroid to the image
 * centre). Centre = weighted mean (x = column, y = row), size = sqrt of the
 * geometric mean of the weighted covariance's eigenvalues. NaN for an all-zero map. */
void npred_rf_stats(const float *maps, int count, int C, int H, int W, float *centre_xy, float *size)
{
    size_t plane = (size_t)H * W;
    double *e = malloc(sizeof(double) * plane);
    for (int i = 0; i < count; i++) {
        const float *mp = maps + (size_t)i * C * plane;
        double peak = 0;
        for (size_t k = 0; k < plane; k++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)mp[c * plane + k] * mp[c * plane + k];
            if (e) e[k] = s;
            if (s > peak) peak = s;
        }
        double sw = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
        for (size_t k = 0; e && k < plane; k++) {
            if (!(e[k] >= 0.2 * peak) || !(peak > 0)) continue;
            double x = (double)(k % W), y = (double)(k / W), wt = e[k];
            sw += wt;
            sx += wt * x;
            sy += wt * y;
            sxx += wt * x * x;
            syy += wt * y * y;
            sxy += wt * x * y;
        }
        double cx = NAN, cy = NAN, sz = NAN;
        if (sw > 0) {
            cx = sx / sw;
            cy = sy / sw;
            double vxx = sxx / sw - cx * cx, vyy = syy / sw - cy * cy, vxy = sxy / sw - cx * cy;
            double det = vxx * vyy - vxy * vxy;
            sz = det > 0 ? sqrt(sqrt(det)) : 0;
        }
        if (centre_xy) {
            centre_xy[2 * i] = (float)cx;
            centre_xy[2 * i + 1] = (float)cy;
        }
        if (size) size[i] = (float)sz;
    }
    free(e);
}
