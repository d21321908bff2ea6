/* The kit's single-trial video correlation (get_correlations, skip 50) against the
 * video_scores fixture: the concatenated target/output matrices, per-session and
 * per-neuron correlations (a silent neuron scores 0), their mean, and bad lengths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "train/video_scores.h"

static void test_video_scores(void)
{
    th_case c;
    if (!th_case_open(&c, "video_scores")) return;
    int skip = (int)th_num(c.json, -1, "args", "skip", NULL);
    cJSON *sess = th_get(c.json, "args", "sessions", NULL), *s;
    double all[64], sum = 0;
    int n_all = 0;
    cJSON_ArrayForEach(s, sess)
    {
        const char *key = s->string;
        int n = (int)th_num(s, -1, "n_neurons", NULL);
        cJSON *fr = th_get(s, "frames", NULL), *pf = th_get(s, "prediction_frames", NULL);
        int nt = cJSON_GetArraySize(fr);
        int frames[8], pframes[8];
        float *resp[8] = {0}, *pred[8] = {0};
        int ok = nt <= 8;
        for (int i = 0; ok && i < nt; i++) {
            frames[i] = cJSON_GetArrayItem(fr, i)->valueint;
            pframes[i] = cJSON_GetArrayItem(pf, i)->valueint;
            resp[i] = th_load_f32(&c, cJSON_GetArrayItem(th_get(c.json, "files", "sessions", key, "responses", NULL), i)->valuestring, NULL);
            pred[i] = th_load_f32(&c, cJSON_GetArrayItem(th_get(c.json, "files", "sessions", key, "predictions", NULL), i)->valuestring, NULL);
            ok = resp[i] && pred[i];
        }
        int64_t rows = 0;
        if (ok && CHECK_OK(npred_video_score_rows(&rows, frames, pframes, nt, skip))) {
            float *tm = malloc((size_t)rows * n * sizeof *tm), *om = malloc((size_t)rows * n * sizeof *om);
            double corr[16];
            char rel[160];
            if (tm && om &&
                CHECK_OK(npred_video_score_matrices(tm, om, (const float *const *)resp, frames, (const float *const *)pred,
                                                    pframes, nt, n, skip))) {
                snprintf(rel, sizeof rel, "%s/target_matrix.npy", key);
                th_compare_dims(&c, "forward", rel, tm, TH_DIMS(rows, n));
                snprintf(rel, sizeof rel, "%s/output_matrix.npy", key);
                th_compare_dims(&c, "forward", rel, om, TH_DIMS(rows, n));
            }
            if (n <= 16 && CHECK_OK(npred_video_correlations(corr, (const float *const *)resp, frames,
                                                            (const float *const *)pred, pframes, nt, n, skip))) {
                float cf[16];
                for (int j = 0; j < n; j++) {
                    cf[j] = (float)corr[j];
                    if (n_all < 64) all[n_all++] = corr[j];
                    sum += corr[j];
                }
                snprintf(rel, sizeof rel, "%s/correlations.npy", key);
                th_compare_dims(&c, "forward", rel, cf, TH_DIMS(n));
            }
            free(tm);
            free(om);
        }
        /* a prediction shorter than the scored frames, a trial without scored frames */
        int short_p[8], short_f[8];
        for (int i = 0; i < nt; i++) short_p[i] = pframes[i], short_f[i] = frames[i];
        short_p[0] = frames[0] - skip - 1;
        CHECK(npred_video_score_rows(&rows, frames, short_p, nt, skip) == NPRED_ERR_SHAPE &&
                  strstr(npred_last_error(), "trial 0"),
              "short prediction: %s", npred_last_error());
        short_f[0] = skip;
        CHECK(npred_video_score_rows(&rows, short_f, pframes, nt, skip) == NPRED_ERR_SHAPE, "no scored frame");
        for (int i = 0; i < nt; i++) free(resp[i]), free(pred[i]);
    }
    float allf[64];
    for (int j = 0; j < n_all; j++) allf[j] = (float)all[j];
    th_compare_dims(&c, "forward", "correlations_per_neuron.npy", allf, TH_DIMS(n_all));
    float mean = (float)(sum / n_all);
    th_compare_dims(&c, "forward", "correlation_mean.npy", &mean, 0, NULL);
    CHECK(all[5] == 0, "the silent neuron scores exactly 0 (%g)", all[5]);
    th_case_close(&c);
}

int main(void)
{
    RUN(test_video_scores);
    return th_summary();
}
