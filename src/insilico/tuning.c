/* Grating tuning: full-field sinusoidal gratings over orientation, spatial
 * frequency and phase; preferred orientation / SF, OSI and F1/F0 per neuron. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "insilico/insilico_internal.h"
#include "npred/insilico.h"

#define TUNING_CHUNK 64 /* gratings per prediction call (progress granularity) */

void npred_tuning_config_default(npred_tuning_config *c)
{
    c->n_ori = 12;
    c->n_sf = 8;
    c->n_phase = 8;
    c->sf_min = 1.0 / 64;
    c->sf_max = 0.25;
    c->contrast = 1.0f;
    c->gray = 0.0f;
}

double npred_tuning_sf(const npred_tuning_config *c, int f)
{
    if (c->n_sf == 1) return c->sf_min;
    return c->sf_min * pow(c->sf_max / c->sf_min, (double)f / (c->n_sf - 1));
}

static npred_status validate(const npred_tuning_config *c)
{
    if (c->n_ori < 2 || c->n_sf < 1 || c->n_phase < 3 || c->n_ori > 360 || c->n_sf > 100 || c->n_phase > 360)
        return npred_errorf(NPRED_ERR_ARG,
                            "tuning: %d orientations, %d spatial frequencies, %d phases (need 2-360, 1-100, 3-360)",
                            c->n_ori, c->n_sf, c->n_phase);
    if (!(c->sf_min > 0) || !(c->sf_max >= c->sf_min) || !(c->sf_max <= 0.5))
        return npred_errorf(NPRED_ERR_ARG, "tuning: spatial frequencies [%g, %g] must satisfy 0 < min <= max <= 0.5",
                            c->sf_min, c->sf_max);
    if (!isfinite(c->contrast) || !(c->contrast > 0) || !isfinite(c->gray))
        return npred_errorf(NPRED_ERR_ARG, "tuning: contrast %g must be > 0 and gray %g finite", c->contrast, c->gray);
    return NPRED_OK;
}

/* grating g = (t * n_sf + f) * n_phase + p in channel 0, gray elsewhere */
static void grating(float *img, const npred_tuning_config *c, int g, int C, int H, int W)
{
    int p = g % c->n_phase, f = (g / c->n_phase) % c->n_sf, t = g / (c->n_phase * c->n_sf);
    double th = M_PI * t / c->n_ori, sf = npred_tuning_sf(c, f), ph = 2 * M_PI * p / c->n_phase;
    double kx = 2 * M_PI * sf * cos(th), ky = 2 * M_PI * sf * sin(th);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) img[(size_t)y * W + x] = c->gray + c->contrast * (float)cos(kx * x + ky * y + ph);
    for (size_t k = (size_t)H * W; k < (size_t)C * H * W; k++) img[k] = c->gray;
}

npred_status npred_tuning_analyze(const npred_tuning_config *cfg, const float *R, int count, npred_tuning_result *out)
{
    npred_status st = validate(cfg);
    if (st) return st;
    if (!R || !out || count < 1) return npred_errorf(NPRED_ERR_ARG, "tuning: responses and output are required");
    double *f0 = malloc(sizeof(double) * (size_t)cfg->n_ori * cfg->n_sf);
    if (!f0) return npred_errorf(NPRED_ERR_NOMEM, "tuning: out of memory");
    int no = cfg->n_ori, ns = cfg->n_sf, np = cfg->n_phase;
    for (int i = 0; i < count; i++) {
        int bt = 0, bf = 0;
        double peak = -INFINITY;
        for (int t = 0; t < no; t++)
            for (int f = 0; f < ns; f++) {
                double s = 0;
                for (int p = 0; p < np; p++) {
                    double r = R[(size_t)((t * ns + f) * np + p) * count + i];
                    s += r;
                    if (r > peak) peak = r;
                }
                f0[t * ns + f] = s / np;
                if (f0[t * ns + f] > f0[bt * ns + bf]) bt = t, bf = f;
            }
        double re = 0, im = 0;
        for (int t = 0; t < no; t++) {
            double a = 2 * M_PI * t / no;
            re += f0[t * ns + bf] * cos(a);
            im += f0[t * ns + bf] * sin(a);
        }
        double ori = atan2(im, re) / 2;
        if (ori < 0) ori += M_PI;
        if (ori >= M_PI) ori -= M_PI;
        int orth = (bt + no / 2) % no;
        double rp = f0[bt * ns + bf], ro = f0[orth * ns + bf];
        double c1 = 0, s1 = 0;
        for (int p = 0; p < np; p++) {
            double r = R[(size_t)((bt * ns + bf) * np + p) * count + i], a = 2 * M_PI * p / np;
            c1 += r * cos(a);
            s1 += r * sin(a);
        }
        out[i].orientation = ori;
        out[i].spatial_frequency = npred_tuning_sf(cfg, bf);
        out[i].osi = rp + ro > 0 ? (rp - ro) / (rp + ro) : 0;
        out[i].f1_f0 = rp > 0 ? 2 * sqrt(c1 * c1 + s1 * s1) / np / rp : 0;
        out[i].peak_rate = peak;
    }
    free(f0);
    return NPRED_OK;
}

npred_status npred_tuning_run(npred_model *m, const char *key, const npred_tuning_config *cfg, const int *neurons,
                              int count, const float *pupil_center, const float *behavior,
                              npred_tuning_result *out, float *responses, npred_insilico_progress_fn progress,
                              void *user)
{
    if (!m || !cfg || !neurons || !out || count < 1)
        return npred_errorf(NPRED_ERR_ARG, "tuning: model, config, neurons (at least one) and output are required");
    npred_status st = validate(cfg);
    if (st) return st;
    int si = npred_model_session_index(m, key ? key : "");
    if (si < 0) return npred_model_input_gradient(m, key, NULL, 0, NULL, NULL, NULL, NULL, NULL); /* names the key */
    int n = npred_model_session_neurons(m, si), C, H, W;
    npred_model_input_shape(m, &C, &H, &W);
    for (int i = 0; i < count; i++)
        if (neurons[i] < 0 || neurons[i] >= n)
            return npred_errorf(NPRED_ERR_ARG, "tuning: neuron %d is out of range (session %s has %d neurons)",
                                neurons[i], npred_model_session_key(m, si), n);
    int G = cfg->n_ori * cfg->n_sf * cfg->n_phase, B = G < TUNING_CHUNK ? G : TUNING_CHUNK;
    size_t per = (size_t)C * H * W;
    float *pc = NULL, *beh = NULL;
    if ((st = npred_insilico_repeat(m, pupil_center, behavior, B, &pc, &beh))) return st;
    float *img = malloc(sizeof(float) * per * B), *rates = malloc(sizeof(float) * (size_t)B * n);
    float *R = malloc(sizeof(float) * (size_t)G * count); /* (G, count) */
    if (!img || !rates || !R) {
        st = npred_errorf(NPRED_ERR_NOMEM, "tuning: out of memory");
        goto done;
    }
    for (int g0 = 0; g0 < G; g0 += B) {
        int nb = G - g0 < B ? G - g0 : B;
        for (int b = 0; b < nb; b++) grating(img + per * b, cfg, g0 + b, C, H, W);
        if ((st = npred_model_predict(m, key, img, nb, pc, beh, rates))) goto done;
        for (int b = 0; b < nb; b++)
            for (int i = 0; i < count; i++) R[(size_t)(g0 + b) * count + i] = rates[(size_t)b * n + neurons[i]];
        if (progress && progress(user, g0 + nb, G)) {
            st = npred_errorf(NPRED_ERR_INTERRUPTED, "tuning: stopped after %d gratings", g0 + nb);
            goto done;
        }
    }
    if ((st = npred_tuning_analyze(cfg, R, count, out))) goto done;
    if (responses) memcpy(responses, R, sizeof(float) * (size_t)G * count);
done:
    free(pc);
    free(beh);
    free(img);
    free(rates);
    free(R);
    return st;
}
