/* Evaluation metrics in double precision with numpy semantics
 * (neuralpredictors 0.3.0 measures/np_functions.py and sensorium.utility
 * scores.py / metrics.py).
 *
 * Legend: T = trials, N = neurons, I = distinct images. Responses and predictions are
 * (T, N) row-major float32 (as loaders and models produce them); every computation
 * runs in double on float64 copies of those values, like the reference's float64
 * numpy arrays. Per-neuron results are (N,) double, overwritten.
 *
 * Repeats are grouped as sensorium's split_images does: one group per value of
 * np.unique(image_ids) (ascending ids), trials in their original order. Variances are
 * numpy's two-pass ones (mean first, then the mean squared deviation, divided by
 * count - ddof). Metrics are deterministic and serial (they run once per epoch). */
#ifndef NPRED_METRICS_H
#define NPRED_METRICS_H

#include <stdint.h>
#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NPRED_METRICS_CORR_EPS 1e-8         /* np_functions.corr(eps) */
#define NPRED_METRICS_EXPLAINABLE_EPS 1e-9  /* explainable_var(eps) */
#define NPRED_METRICS_FEV_THRESHOLD 0.15    /* sensorium get_fev / Metrics.feve */

/* Trials grouped by image id. */
typedef struct {
    int64_t n_trials;   /* T */
    int64_t n_images;   /* I */
    int64_t *ids;       /* (I,) ascending unique image ids */
    int64_t *offsets;   /* (I + 1,) group i is trials[offsets[i] .. offsets[i + 1]) */
    int64_t *trials;    /* (T,) trial indices grouped by image, original order inside a group */
} npred_metrics_repeats;

/* Group T trials by image_ids (T,). */
NPRED_API npred_status npred_metrics_repeats_init(npred_metrics_repeats *g, const int64_t *image_ids, int64_t T);
NPRED_API void npred_metrics_repeats_free(npred_metrics_repeats *g);
/* Number of repeats if every image has the same number, else 0. */
NPRED_API int64_t npred_metrics_repeats_equal(const npred_metrics_repeats *g);

/* np_functions.corr(y1, y2, axis=0, eps) per neuron:
 *   mean_t [ (y1 - mean y1) / (std y1 + eps) * (y2 - mean y2) / (std y2 + eps) ]
 * with population std (ddof 0). nan_to_zero: NaN results become 0 (sensorium's
 * get_correlations; they only arise from NaN/inf inputs). y1, y2: (T, N). */
NPRED_API npred_status npred_metrics_corr(double *r, const float *y1, const float *y2, int64_t T, int64_t N,
                                double eps, int nan_to_zero);

/* Correlation to average: per image, mean responses and predictions over the repeats,
 * then corr (eps) across the I images per neuron (sensorium
 * get_signal_correlations / Metrics.correlation_to_mean_across_repeats; no NaN
 * replacement). responses, predictions: (T, N). */
NPRED_API npred_status npred_metrics_corr_to_average(double *r, const float *responses, const float *predictions,
                                           const npred_metrics_repeats *g, int64_t N, double eps);

/* np_functions.fev(split(responses), split(predictions), return_exp_var=True):
 *   total = var(all trials, ddof 1); noise = mean_i var(repeats of image i, ddof 1);
 *   fev = (total - noise) / total;
 *   feve = 1 - (mean_t (y - yhat)^2 - noise) / (total - noise).
 * fev or feve may be NULL (predictions may then be NULL too when feve is NULL). An
 * image with a single repeat makes noise NaN, as in numpy. */
NPRED_API npred_status npred_metrics_fev(double *fev, double *feve, const float *responses,
                               const float *predictions, const npred_metrics_repeats *g, int64_t N);

/* Mean of the feve values of neurons with fev >= threshold (sensorium drops the
 * others; NaN fev is dropped). kept (may be NULL) receives how many were kept; with
 * none kept the mean is NaN (numpy's mean of an empty array). If feve_kept is not
 * NULL, the kept values are written to it in neuron order (up to N). */
NPRED_API double npred_metrics_feve_thresholded(const double *fev, const double *feve, int64_t N,
                                      double threshold, int64_t *kept, double *feve_kept);

/* oracle_corr_jackknife: each trial against the mean of the other repeats of its image,
 * (sum_r - x) / (R - 1) (NaN -> 0, e.g. single repeats), then corr (eps 1e-8) over all
 * trials per neuron. */
NPRED_API npred_status npred_metrics_oracle_jackknife(double *r, const float *responses,
                                            const npred_metrics_repeats *g, int64_t N);

/* oracle_corr_conservative: var_noise = mean_i var_r(repeats of i) (ddof 0);
 * var_mean = var_i(mean_r repeats of i) (ddof 0);
 * r = var_mean / sqrt(var_mean * (var_mean + var_noise)) (NaN when var_mean = 0). */
NPRED_API npred_status npred_metrics_oracle_conservative(double *r, const float *responses,
                                               const npred_metrics_repeats *g, int64_t N);

/* explainable_var: (total - noise) / (total + eps), total and noise as in fev.
 * numpy needs a regular (I, R, N) array: NPRED_ERR_SHAPE if the repeat counts differ. */
NPRED_API npred_status npred_metrics_explainable_var(double *r, const float *responses,
                                           const npred_metrics_repeats *g, int64_t N, double eps);

/* np_functions.snr (0.3.0 and HEAD): on the Anscombe transform a = 2 sqrt(x + 3/8) of
 * the responses, per neuron: var over images of the per-image mean (ddof 0) divided by
 * the mean over images of the repeat variance (ddof 1). A single-repeat image makes the
 * denominator NaN, as in numpy. responses: (T, N); r: (N,). */
NPRED_API npred_status npred_metrics_snr(double *r, const float *responses, const npred_metrics_repeats *g,
                                        int64_t N);

/* np_functions.gini of n values x[0], x[stride], ... (axis=None on a flat array, or one
 * column of a matrix with stride = its row length): sort, cumulative sum c, then
 * (n + 1 - 2 sum(c) / c[n-1]) / n. Negative values are allowed (the reference only
 * warns); any NaN gives NaN. */
NPRED_API npred_status npred_metrics_gini(double *out, const double *x, int64_t n, int64_t stride);

/* Mean of x (N,) (numpy mean: NaN propagates; NaN for N = 0). */
NPRED_API double npred_metrics_mean(const double *x, int64_t N);

#ifdef __cplusplus
}
#endif
#endif
