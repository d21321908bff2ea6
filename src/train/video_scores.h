/* The SENSORIUM 2023 kit's single-trial correlation (sensorium/utility/scores.py:
 * model_predictions + get_correlations with skip = 50), the video trainer's validation
 * objective and the competition metric (docs/video.md).
 *
 * Per session: for each trial i, the responses (n, T_i) from frame `skip` on are
 * compared with the LAST T_i - skip frames of the model's output (P_i, n) (P_i >= T_i -
 * skip, else an error, where the kit's assertion fails); both are concatenated over the
 * trials into (sum_i (T_i - skip), n) matrices and correlated per neuron with
 * np_functions.corr (ddof 0, eps 1e-8), NaN set to 0. */
#ifndef NPRED_TRAIN_VIDEO_SCORES_H
#define NPRED_TRAIN_VIDEO_SCORES_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/eval.h"

/* Rows of the matrices: sum_i (frames[i] - skip); NPRED_ERR_SHAPE naming the trial when
 * a trial has no frame after skip or its prediction is too short. */
npred_status npred_video_score_rows(int64_t *rows, const int *frames, const int *pred_frames, int n_trials, int skip);
/* target, output: (rows, n) as above. */
npred_status npred_video_score_matrices(float *target, float *output, const float *const *responses, const int *frames,
                                        const float *const *predictions, const int *pred_frames, int n_trials, int n,
                                        int skip);
/* npred_video_correlations (the per-neuron correlation of one session) is public:
 * npred/eval.h. */

#endif
