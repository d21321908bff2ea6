/* Model evaluation on a tier of the loaders: predictions of every trial (eval
 * mode), then the SENSORIUM metrics per session and over all neurons.
 *
 *   single-trial correlation   corr over the tier's trials, mean over neurons
 *   correlation to average     corr of the per-image means over repeats, mean over neurons
 *   FEVE                       mean over the neurons with FEV >= 0.15 (sensorium)
 *   oracle                     jackknife oracle correlation, mean over neurons
 *   fraction of oracle         what the model reaches of the correlation a repeat of
 *                              the same image reaches (1 = as good as the noise allows),
 *                              in two conventions (docs/results.md):
 *     fraction_oracle          mean single-trial correlation / mean oracle
 *     fraction_oracle_slope    slope of the per-neuron single-trial correlation on the
 *                              per-neuron oracle, a line through the origin
 *                              (sum corr*oracle / sum oracle^2; Lurz et al. 2021)
 *
 * Metrics come from npred/metrics.h (double precision, numpy semantics); the
 * ground truth is the loader's (normalized) response, as in sensorium. Trials are
 * grouped by frame_image_id. "overall" pools the neurons of every session (each
 * neuron counts once; FEVE over the kept neurons of all sessions). A value that is
 * undefined (e.g. FEVE without repeats, or with no neuron passing the FEV
 * threshold) is NaN. */
#ifndef NPRED_EVAL_H
#define NPRED_EVAL_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/data.h"
#include "npred/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t n_neurons;         /* neurons pooled here */
    int64_t n_trials;          /* trials (summed over sessions for overall) */
    int64_t n_images;          /* distinct image ids (summed for overall) */
    int64_t n_fev_kept;        /* neurons with FEV >= NPRED_METRICS_FEV_THRESHOLD */
    double single_trial_corr;
    double corr_to_average;
    double feve;
    double oracle;
    double fraction_oracle;       /* mean correlation / mean oracle */
    double fraction_oracle_slope; /* regression slope through the origin of correlation on oracle */
} npred_eval_metrics;

typedef struct {
    char data_key[64];
    npred_eval_metrics m;
    /* per-neuron values (n_neurons,) in the loader's neuron order */
    double *corr, *corr_avg, *fev, *feve, *oracle;
    int64_t *unit_ids;            /* meta/neurons/unit_ids of the neurons */
    double *resp_mean, *resp_var; /* mean and variance (ddof 0) of the tier's responses (normalized units) */
    float *readout_xy;            /* (n_neurons, 2) readout positions x, y in [-1, 1]; NULL for readouts without */
} npred_eval_session;

typedef struct {
    npred_tier tier;
    int n_sessions;
    npred_eval_session *sessions; /* in the loaders' session order */
    npred_eval_metrics overall;
} npred_eval_results;

/* Evaluate model m on `tier` of every session of L. Each loader session must have
 * a readout of the same data_key and neuron count, images of the model's input
 * shape, and pupil_center / behavior batches when the model's shifter / modulator
 * needs them (errors name the session and what is missing). The tier runs in
 * ascending trial order; m's last-forward state is overwritten. res is
 * overwritten; free it with npred_eval_results_free (also after an error). */
NPRED_API npred_status npred_evaluate(npred_model *m, const npred_loaders *L, npred_tier tier, npred_eval_results *res);
NPRED_API void npred_eval_results_free(npred_eval_results *res);

/* The per-neuron table as CSV text (malloc'ed, caller frees; NULL with an error
 * set): a header, then one row per neuron of every session in order, keyed by
 * session and unit_id (columns in docs/results.md). */
NPRED_API char *npred_eval_per_neuron_csv(const npred_eval_results *res);

/* ---- SENSORIUM 2023 (movies): the kit's single-trial correlation
 * (sensorium/utility/scores.py get_correlations with model_predictions' skip of 50
 * frames; models: npred/video_eval.h). For one session: responses[i]
 * (n_neurons, frames[i]) from frame `skip` on against the LAST frames[i] - skip rows
 * of predictions[i] (pred_frames[i], n_neurons) (the model's frame-major output),
 * concatenated over the trials, correlated per neuron (np_functions.corr: ddof 0,
 * eps 1e-8), NaN set to 0; corr (n_neurons,). NPRED_ERR_SHAPE naming the trial when
 * a trial has no frame after skip or its prediction is too short (the kit asserts). */
#define NPRED_VIDEO_SCORE_SKIP 50
NPRED_API npred_status npred_video_correlations(double *corr, const float *const *responses, const int *frames,
                                                const float *const *predictions, const int *pred_frames,
                                                int n_trials, int n_neurons, int skip);

#ifdef __cplusplus
}
#endif
#endif
