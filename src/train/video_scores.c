/* The kit's video correlation (see video_scores.h). */
#include "train/video_scores.h"

#include <stdlib.h>
#include <string.h>

#include "npred/metrics.h"

npred_status npred_video_score_rows(int64_t *rows, const int *frames, const int *pred_frames, int n_trials, int skip)
{
    *rows = 0;
    if (n_trials < 1 || skip < 0) return npred_errorf(NPRED_ERR_ARG, "video scores: %d trials, skip %d", n_trials, skip);
    for (int i = 0; i < n_trials; i++) {
        int keep = frames[i] - skip;
        if (keep < 1)
            return npred_errorf(NPRED_ERR_SHAPE, "video scores: trial %d has %d frames, none after the first %d", i,
                                frames[i], skip);
        if (pred_frames[i] < keep)
            return npred_errorf(NPRED_ERR_SHAPE, "video scores: trial %d: the model gives %d frames, the last %d are "
                                "scored", i, pred_frames[i], keep);
        *rows += keep;
    }
    return NPRED_OK;
}

npred_status npred_video_score_matrices(float *target, float *output, const float *const *responses, const int *frames,
                                        const float *const *predictions, const int *pred_frames, int n_trials, int n,
                                        int skip)
{
    int64_t rows;
    npred_status st = npred_video_score_rows(&rows, frames, pred_frames, n_trials, skip);
    if (st) return st;
    int64_t r = 0;
    for (int i = 0; i < n_trials; i++) {
        int keep = frames[i] - skip, p0 = pred_frames[i] - keep;
        for (int t = 0; t < keep; t++, r++) {
            for (int j = 0; j < n; j++) target[r * n + j] = responses[i][(size_t)j * frames[i] + skip + t];
            memcpy(output + r * n, predictions[i] + (size_t)(p0 + t) * n, (size_t)n * sizeof *output);
        }
    }
    return NPRED_OK;
}

npred_status npred_video_correlations(double *corr, const float *const *responses, const int *frames,
                                      const float *const *predictions, const int *pred_frames, int n_trials, int n,
                                      int skip)
{
    int64_t rows;
    npred_status st = npred_video_score_rows(&rows, frames, pred_frames, n_trials, skip);
    if (st) return st;
    float *m = malloc((size_t)rows * (size_t)n * 2 * sizeof *m);
    if (!m) return npred_errorf(NPRED_ERR_NOMEM, "video scores: out of memory");
    st = npred_video_score_matrices(m, m + (size_t)rows * n, responses, frames, predictions, pred_frames, n_trials, n,
                                    skip);
    if (!st) st = npred_metrics_corr(corr, m, m + (size_t)rows * n, rows, n, NPRED_METRICS_CORR_EPS, 1);
    free(m);
    return st;
}
