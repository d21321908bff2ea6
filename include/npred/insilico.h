/* npred in-silico experiments on a trained (or imported) model: most exciting
 * inputs (MEIs), most discriminative stimuli, gradient receptive fields and
 * grating tuning. See docs/insilico.md.
 *
 *   npred_mei_config cfg;
 *   npred_mei_config_default(&cfg);              // or npred_mei_config_parse(&cfg, json, "mei.json")
 *   float *w = calloc(N * n, sizeof *w);         // objective of image i: sum_j w[i, j] rate_j
 *   for (int i = 0; i < N; i++) w[i * n + neuron[i]] = 1;
 *   npred_mei_optimize(m, key, &cfg, w, N, NULL, NULL, NULL, meis, act, trace, &steps, NULL, NULL);
 *
 * Everything works in the model's input space (the normalised images it was
 * trained on). Functions take the model from include/npred/model.h; they run one
 * batched forward + input-gradient pass per step (npred_model_input_gradient) and
 * share that function's threading rule: one call at a time per model. The library
 * never prints; progress goes through an optional callback. */
#ifndef NPRED_INSILICO_H
#define NPRED_INSILICO_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress of a long run: `done` of `total` units. A nonzero return stops the run
 * with NPRED_ERR_INTERRUPTED. */
typedef int (*npred_insilico_progress_fn)(void *user, int done, int total);

/* Neuron selection "0-19", "3,7,12", "0-4,10,20-22" or "all" (indices in the
 * session's neuron order, each < n_neurons, no duplicates) -> *idx (malloc'ed,
 * caller frees) and *count. NPRED_ERR_ARG naming the bad part otherwise. */
NPRED_API npred_status npred_parse_neurons(const char *spec, int n_neurons, int **idx, int *count);

/* ------------------------------------------------------------------ MEIs ---
 * Gradient ascent on the image as sinzlab/mei's gradient_ascent does (config names
 * from mei.methods / mei.legacy.ops). Step i (i = 0, 1, ...):
 *   x_t   = Jitter(x)                      (transform; random shift, reflect padding)
 *   f_i   = objective(model(x_t))          (trace[i], before the update)
 *   g     = d(-f_i)/dx                     (through the jitter)
 *   g'    = GaussianBlur(g, i)             (precondition)
 *   x     = optimizer step (SGD or Adam) with g'
 *   x     = ChangeNorm(x), then ClipRange(x) (postprocessing, per image)
 * NumIterations(k) stops after the step with i == k, i.e. k + 1 steps. */
typedef enum { NPRED_MEI_SGD = 0, NPRED_MEI_ADAM } npred_mei_optimizer;
typedef enum { NPRED_PAD_REFLECT = 0, NPRED_PAD_REPLICATE, NPRED_PAD_CONSTANT } npred_pad_mode;

typedef struct {
    uint64_t seed;                 /* initial image RandomNormal N(0, 1) and jitter draws */
    npred_mei_optimizer optimizer; /* torch.optim.SGD / torch.optim.Adam */
    double lr;
    double momentum;               /* SGD (0: plain) */
    double beta1, beta2, eps;      /* Adam */
    int blur;                      /* GaussianBlur precondition on/off */
    double sigma_y, sigma_x;       /* its sigma (pixels) */
    int blur_decay;                /* sigma_i = sigma + decay_factor * (i - 1) when set */
    double decay_factor;
    double truncate;               /* half size = max(round_half_even(sigma * truncate), 1) */
    npred_pad_mode pad_mode;
    int jitter_y, jitter_x;        /* Jitter(max_jitter): shifts in [-j, j]; 0 = off */
    int change_norm;               /* ChangeNorm: x * norm / ||x||_2 per image */
    double norm;
    int clip;                      /* ClipRange: clamp to [x_min, x_max] */
    double x_min, x_max;
    int num_iterations;            /* NumIterations (k + 1 steps), or the cap of the plateau stopper */
    int plateau_patience;          /* > 0: also stop an image once its objective has not risen by more
                                      than plateau_min_delta (relative to |best|) for this many steps */
    double plateau_min_delta;
} npred_mei_config;

/* npred's defaults: RandomNormal (seed 0), SGD lr 1, GaussianBlur(sigma 1, truncate 4,
 * reflect), ChangeNorm(10), NumIterations(1000), no jitter, no clipping. */
NPRED_API void npred_mei_config_default(npred_mei_config *c);
/* Parse a sinzlab/mei-style JSON config (see docs/insilico.md): components
 * {"path": ..., "kwargs": {...}} under "initial", "optimizer", "precondition",
 * "transform", "postprocessing" (one or a list), "stopper", plus "seed", "device"
 * ("cpu") and "objectives" (EvaluationObjective / PostProcessedInputObjective with
 * interval 1: the trace is always recorded). Components absent from the file are off
 * (precondition, transform, postprocessing) or take the defaults above (initial,
 * optimizer, stopper). An unknown key, path or kwarg is an error naming it. */
NPRED_API npred_status npred_mei_config_parse(npred_mei_config *c, const char *json, const char *name);
/* Check ranges (positive lr, sigma > 0 at every step, x_min < x_max, ...). */
NPRED_API npred_status npred_mei_config_validate(const npred_mei_config *c);
/* Rows of the trace: num_iterations + 1. */
NPRED_API int npred_mei_max_steps(const npred_mei_config *c);

/* Optimise N images at once, image i for the objective sum_j objective[i, j] * rate_j
 * (objective (N, n) for the session's n neurons: one-hot rows for single neurons, a
 * weight vector for a population, +1/|a| and -1/|b| entries for the most
 * discriminative stimulus a - b). initial (N, C, H, W) or NULL (RandomNormal from
 * cfg->seed). pupil_center (2) and behavior (k) are used for every image (required
 * when the model has a shifter / modulator). Outputs: meis (N, C, H, W);
 * activations (N) = objective of the returned image (no jitter) or NULL; trace
 * (npred_mei_max_steps(cfg), N) or NULL, rows after *n_steps untouched; *n_steps
 * (may be NULL) = steps made. progress counts steps. */
NPRED_API npred_status npred_mei_optimize(npred_model *m, const char *key, const npred_mei_config *cfg,
                                const float *objective, int N, const float *initial, const float *pupil_center,
                                const float *behavior, float *meis, float *activations, float *trace, int *n_steps,
                                npred_insilico_progress_fn progress, void *user);

/* The deterministic pieces, exposed for tests and other optimisers (in place on
 * x (N, C, H, W)): GaussianBlur of mei.legacy.ops at step `iteration` (uses the
 * decay when cfg->blur_decay), ChangeNorm with one norm per image (norms (N)) or
 * `norm` for all when norms is NULL. */
NPRED_API npred_status npred_mei_gaussian_blur(float *x, int N, int C, int H, int W, const npred_mei_config *cfg,
                                     int iteration);
NPRED_API npred_status npred_mei_change_norm(float *x, int N, size_t per_image, double norm, const float *norms);

/* ------------------------------------------------ receptive fields ---
 * Gradient RF of each listed neuron: d rate / d image at a uniform image of value
 * `gray` (0 = mean gray in normalised input space), rf (count, C, H, W). Centre
 * (x = column, y = row, pixels of the model input) and size: the centroid and
 * sqrt(sqrt(det(covariance))) of the squared gradient summed over channels
 * (npred_rf_stats, which also works on MEIs). */
NPRED_API npred_status npred_rf_gradient(npred_model *m, const char *key, const int *neurons, int count, float gray,
                               const float *pupil_center, const float *behavior, float *rf,
                               npred_insilico_progress_fn progress, void *user);
/* centre_xy (count, 2), size (count) or NULL; weights |img|^p summed over channels
 * (p = 2 for gradients; MEIs: use the deviation from gray, p = 2). */
NPRED_API void npred_rf_stats(const float *maps, int count, int C, int H, int W, float *centre_xy, float *size);

/* ----------------------------------------------------------- tuning ---
 * Full-field sinusoidal gratings gray + contrast * cos(2 pi f (x cos t + y sin t) + phase)
 * (x = column, y = row) over n_ori orientations t = k pi / n_ori, n_sf spatial
 * frequencies f log-spaced over [sf_min, sf_max] cycles per pixel and n_phase phases
 * 2 pi k / n_phase, in channel 0 (other channels stay gray); every neuron of the session sees every grating (one batched
 * prediction). Per listed neuron, from F0 = the phase-averaged response:
 *   spatial_frequency  argmax_f of F0 at the best orientation
 *   orientation        vector average angle(sum_t F0(t, f*) e^{2it}) / 2 in [0, pi)
 *   osi                (R_pref - R_orth) / (R_pref + R_orth) of F0(., f*) at the best grid
 *                      orientation and the one orthogonal to it
 *   f1_f0              first harmonic over phase / mean, at the best (t, f) */
typedef struct {
    int n_ori, n_sf, n_phase;      /* >= 12, >= 8, >= 8 by default 12, 8, 8 */
    double sf_min, sf_max;         /* cycles/pixel; defaults 1/64 and 1/4 */
    float contrast, gray;          /* amplitude and mean (normalised input units): 1, 0 */
} npred_tuning_config;

typedef struct {
    double orientation;            /* radians, [0, pi) */
    double spatial_frequency;      /* cycles per pixel of the model input */
    double osi;
    double f1_f0;
    double peak_rate;              /* max over the gratings */
} npred_tuning_result;

NPRED_API void npred_tuning_config_default(npred_tuning_config *c);
/* responses (n_ori * n_sf * n_phase, count) may be NULL; if given it receives the
 * responses of the listed neurons, grating index (t * n_sf + f) * n_phase + p. */
NPRED_API npred_status npred_tuning_run(npred_model *m, const char *key, const npred_tuning_config *cfg, const int *neurons,
                              int count, const float *pupil_center, const float *behavior,
                              npred_tuning_result *out, float *responses, npred_insilico_progress_fn progress,
                              void *user);
/* The analysis alone, on responses (n_ori * n_sf * n_phase, count) laid out as above. */
NPRED_API npred_status npred_tuning_analyze(const npred_tuning_config *cfg, const float *responses, int count,
                                  npred_tuning_result *out);
/* Spatial frequency of grid index f. */
NPRED_API double npred_tuning_sf(const npred_tuning_config *cfg, int f);

/* ---------------------------------------------------------- pictures ---
 * A grid of images (count, C, H, W) (first channel shown), each scaled to its own
 * max |v| around `center` with a diverging colour map, labelled with labels[i]
 * (may be NULL); marks (count, 2) x, y in image pixels or NULL. Written atomically. */
NPRED_API npred_status npred_insilico_png_grid(const char *path, const char *title, const float *images, int count, int C,
                                     int H, int W, float center, const char *const *labels, const float *marks);
/* Tuning curves: per neuron F0 over orientation at its preferred SF (and the
 * phase modulation), a small panel each. */
NPRED_API npred_status npred_tuning_png(const char *path, const npred_tuning_config *cfg, const float *responses, int count,
                              const npred_tuning_result *res, const char *const *labels);

#ifdef __cplusplus
}
#endif
#endif
