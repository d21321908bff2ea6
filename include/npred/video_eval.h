/* Evaluation of video models as the SENSORIUM 2023 kit scores them
 * (sensorium/utility/scores.py: model_predictions + get_correlations, skip 50) and
 * the 2023 submission file of a model (sensorium/utility/submission.py:
 * generate_submission). Semantics: docs/video.md, docs/results.md.
 *
 * Per session, for each trial i: the responses (n, T_i) from frame `skip` on are
 * compared with the LAST T_i - skip frames of the model's output (P_i >= T_i - skip,
 * else an error, where the kit asserts); both are concatenated over the trials and
 * correlated per neuron with np_functions.corr (ddof 0, eps 1e-8), NaN set to 0. The
 * kit's overall number is the mean over all neurons of all sessions. */
#ifndef NPRED_VIDEO_EVAL_H
#define NPRED_VIDEO_EVAL_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/eval.h"
#include "npred/results.h"
#include "npred/video.h"
#include "npred/video_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NPRED_VIDEO_SCORE_SKIP and npred_video_correlations (the same from arrays) are in
 * npred/eval.h. */

typedef struct {
    char *data_key;
    int64_t n_neurons, n_trials;
    int64_t n_frames;            /* scored frames: sum over the trials of T_i - skip */
    int64_t *unit_ids;           /* (n) meta/neurons/unit_ids */
    double *correlation;         /* (n) single-trial correlation (get_correlations) */
    double *response_mean;       /* (n) over the scored frames */
    double *response_variance;   /* (n) ddof 0 */
    double *prediction_mean;     /* (n) */
    double mean_correlation;     /* over the session's neurons */
} npred_video_eval_session;

typedef struct {
    char *tier;
    int skip;
    int n_sessions;
    npred_video_eval_session *sessions; /* in the loaders' session order */
    int64_t n_neurons;
    double correlation; /* the kit's number: mean over all neurons of all sessions */
} npred_video_eval_results;

/* Predict every trial of `tier` of every session of L (one trial at a time, eval
 * mode) and score it. Each session's data key must be a session of m with the same
 * neurons. The loaders' configuration is used as it is: whole trials (to_cut false,
 * the kit's submission loader) or subsequences (random offsets drawn from rng, which
 * may be NULL only when none is drawn). res is overwritten; free it with
 * npred_video_eval_results_free (also after an error). */
NPRED_API npred_status npred_video_evaluate(npred_video_model *m, const npred_video_loaders *L, const char *tier,
                                            npred_rng *rng, npred_video_eval_results *res);
NPRED_API void npred_video_eval_results_free(npred_video_eval_results *res);
/* One CSV row per neuron of every session (caller frees; NULL when out of memory):
 * session,unit_id,neuron,single_trial_correlation,response_mean,response_variance,
 * prediction_mean,scored_frames (numbers as Python's repr). */
NPRED_API char *npred_video_eval_per_neuron_csv(const npred_video_eval_results *res);

/* The kit's generate_submission for one tier: for every session of L, every trial
 * of `tier` in ascending file order, the model's outputs for the trial's frames from
 * 50 on (the last T - 50 output frames), as a row (mouse = data key, trial_indices =
 * the file index, neuron_ids = unit_ids as uint32) of s. L must give whole trials
 * (to_cut false). Returns the rows added in *n_rows (may be NULL). */
NPRED_API npred_status npred_video_submission_add_tier(npred_video_submission *s, npred_video_model *m,
                                                       const npred_video_loaders *L, const char *tier,
                                                       int64_t *n_rows);

#ifdef __cplusplus
}
#endif
#endif
