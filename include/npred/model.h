/* npred models: a shared core, one readout (and optional shifter / modulator) per
 * recording session, and the firing-rate output ELU(x + elu_offset) + 1
 * (neuralpredictors 0.3.0 FiringRateEncoder).
 *
 * Embedding (closed-loop experiments, acquisition software):
 *
 *   npred_model *m;
 *   if (npred_model_load(&m, "run/", 32) != NPRED_OK) fprintf(stderr, "%s\n", npred_last_error());
 *   npred_model_predict(m, "21067-10-18", images, B, NULL, NULL, rates);   // rates (B, n)
 *   npred_model_free(m);
 *
 * The library never prints or exits; every call returns a status and
 * npred_last_error() explains a failure. A model is not thread-safe: use one per
 * thread (the kernels themselves use OpenMP). */
#ifndef NPRED_MODEL_H
#define NPRED_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct npred_model npred_model;

/* What the model needs to know about one recording session. */
typedef struct {
    const char *key;             /* data_key, e.g. "21067-10-18" */
    int n_neurons;
    const double *coords;        /* (n_neurons, coord_dims) cell_motor_coordinates, or NULL */
    int coord_dims;
    const float *mean_activity;  /* (n_neurons) initial readout bias, or NULL (bias 0) */
    const int64_t *match_ids;    /* (n_neurons) multi_match_id, needed by share_features / share_grid */
} npred_model_session;

/* Build and initialise a model from a JSON config (sensorium builder arguments or
 * the structured form, see docs/config.md) for images (in_channels, in_h, in_w).
 * max_batch is the largest batch any call will use (memory is sized for it).
 * seed drives every random initialisation. */
NPRED_API npred_status npred_model_create(npred_model **out, const char *config_json, const char *config_name,
                                int in_channels, int in_h, int in_w, const npred_model_session *sessions,
                                int n_sessions, int max_batch, uint64_t seed);
/* The structure of the model npred_model_create would build, without its
 * parameter memory: for describing and counting (npred_model_describe,
 * _param_count, _readout_repr, the shape getters) a model too large to allocate.
 * predict, save, readout positions and copy_parameters return NPRED_ERR_ARG on it.
 * Free with npred_model_free. */
NPRED_API npred_status npred_model_plan(npred_model **out, const char *config_json, const char *config_name,
                                        int in_channels, int in_h, int in_w, const npred_model_session *sessions,
                                        int n_sessions);
/* Parse and check a model configuration as npred_model_create does, without
 * building anything (NPRED_ERR_CONFIG naming the key and `where`). */
NPRED_API npred_status npred_model_config_check(const char *config_json, const char *where);
/* Load a model saved by npred_model_save: a directory holding model.safetensors
 * (or the .safetensors file itself). */
NPRED_API npred_status npred_model_load(npred_model **out, const char *path, int max_batch);
/* Import a PyTorch neuralpredictors/sensorium checkpoint (.pth). config_json may be
 * NULL: the architecture is then inferred from the keys and shapes. in_h/in_w are
 * the image size (0, 0: the SENSORIUM default 36x64). */
NPRED_API npred_status npred_model_import_pth(npred_model **out, const char *pth_path, const char *config_json, int in_h,
                                    int in_w, int max_batch);
/* Write dir/model.safetensors atomically (tensors named as the PyTorch state_dict,
 * config and sessions as metadata). Creates dir if needed. */
NPRED_API npred_status npred_model_save(const npred_model *m, const char *dir);
/* Write only the safetensors file at path (atomically). */
NPRED_API npred_status npred_model_save_file(const npred_model *m, const char *path);
NPRED_API void npred_model_free(npred_model *m);
/* Copy into dst every parameter and buffer of src whose name starts with prefix
 * (NULL: all) and that dst has too, e.g. prefix "core." to start from a pretrained
 * or imported core. A name present in both with a different shape is an error
 * naming it; *n_copied (may be NULL) counts the tensors copied. */
NPRED_API npred_status npred_model_copy_parameters(npred_model *dst, const npred_model *src, const char *prefix,
                                         int *n_copied);
/* Open a model from a run folder, a .safetensors file or a PyTorch .pth / .pt (imported,
 * architecture inferred; in_h/in_w as npred_model_import_pth). */
NPRED_API npred_status npred_model_open(npred_model **out, const char *path, int in_h, int in_w, int max_batch);

/* Eval-mode firing rates out (B, n) for images (B, C, H, W); pupil_center (B, 2)
 * is required when the model has a shifter, behavior (B, k) with a modulator.
 * Any B works; batches larger than max_batch are processed in chunks. */
NPRED_API npred_status npred_model_predict(npred_model *m, const char *key, const float *images, int B,
                                 const float *pupil_center, const float *behavior, float *out);

/* Input gradient (in-silico experiments: MEIs, gradient receptive fields).
 * For images (B, C, H, W), eval-mode rates r (B, n) of session `key` and
 *     grad_out[b] = d( sum_j weights[b, j] * r[b, j] ) / d images[b]      (B, C, H, W)
 * i.e. one objective per image: a one-hot row gives one neuron's gradient, a dense
 * row a population or a difference of neurons. rates_out (B, n) may be NULL.
 * pupil_center (B, 2) / behavior (B, k) as in npred_model_predict. Any B works
 * (chunks of max_batch). No parameter gradient is computed and the model's
 * gradient buffer is left untouched: only the input gradient is propagated
 * (BatchNorm in eval mode, Gaussian readouts at their means).
 * Threads: the kernels use OpenMP inside one call. A model keeps its activations,
 * so calls on the SAME model must not overlap; concurrent callers open one model
 * each (npred_model_open), which is safe. */
NPRED_API npred_status npred_model_input_gradient(npred_model *m, const char *key, const float *images, int B,
                                        const float *pupil_center, const float *behavior, const float *weights,
                                        float *grad_out, float *rates_out);

/* Input gradients of single neurons, the fast path of MEIs and gradient RFs. A plan for
 * B images, image b's objective being the rate of neuron neurons[b] of session `key`;
 * pupil_center (B, 2) / behavior (B, k) as in npred_model_predict, fixed for the plan.
 * npred_neuron_grad_run then gives
 *     grad_out[b]  = d r[b, neurons[b]] / d images[b]      (B, C, H, W)
 *     rates_out[b] = r[b, neurons[b]]                       (B), may be NULL
 * the values of npred_model_input_gradient with one-hot weights, within float rounding.
 * With a FullGaussian2d / Gaussian2d readout and a core whose layers are local maps
 * (stride-1 convs, BatchNorm, ELU: no squeeze-excitation, attention or Hermite layers),
 * a neuron reads the core at one point, which sees only a window of the image (its
 * receptive field, e.g. 28x28 of 36x64 for the SENSORIUM baseline): only that window is
 * computed, and the gradient is zero outside it. npred_neuron_grad_is_local gives the
 * window size and returns 2 when each layer is computed only on the region the taps need
 * (the cone: plain or depth-separable layers, no skip connections, the last layer alone
 * in `stack`), 1 when a core sized for the window runs on it, 0 when the plan runs
 * npred_model_input_gradient (other readouts; squeeze-excitation, attention or Hermite
 * layers; a distribution encoder, whose rate is its fitted mean, docs/encoders.md).
 * Images run in parallel, one per thread.
 * The plan records the readout positions, feature rows, biases, shifts and modulator gains
 * when it is made (one forward): make a new plan after the parameters change. A plan uses
 * its model: its runs must not overlap with each other or with other calls on that model;
 * free plans before the model. */
typedef struct npred_neuron_grad npred_neuron_grad;
NPRED_API npred_status npred_neuron_grad_create(npred_neuron_grad **out, npred_model *m, const char *key,
                                                const int *neurons, int B, const float *pupil_center,
                                                const float *behavior);
NPRED_API npred_status npred_neuron_grad_run(npred_neuron_grad *g, const float *images, float *grad_out,
                                             float *rates_out);
NPRED_API int npred_neuron_grad_is_local(const npred_neuron_grad *g, int *window_h, int *window_w);
NPRED_API void npred_neuron_grad_free(npred_neuron_grad *g);

/* Arithmetic precision of the core's convolutions (docs/precision.md).
 * FP32 (the default) is exact as documented everywhere. BF16 multiplies in the
 * GEMM convolutions (1x1 and full k x k ones, forward and backward) with inputs
 * and weights rounded to bfloat16 and fp32 accumulation (AVX-512 BF16); weights,
 * gradients, optimizer state, depthwise convolutions, BatchNorm, nonlinearities
 * and readouts stay fp32. Setting BF16 on a CPU without AVX-512 BF16 is
 * NPRED_ERR_UNSUPPORTED (nothing is emulated); an unknown value NPRED_ERR_ARG.
 * Set it before making npred_neuron_grad plans (a plan keeps the precision it
 * was made with). Not saved with the model. */
typedef enum { NPRED_PRECISION_FP32 = 0, NPRED_PRECISION_BF16 = 1 } npred_precision;
NPRED_API npred_status npred_model_set_precision(npred_model *m, npred_precision p);
NPRED_API npred_precision npred_model_precision(const npred_model *m);
/* "fp32" / "bf16" -> *out; NPRED_ERR_ARG naming the value otherwise */
NPRED_API npred_status npred_precision_parse(const char *name, npred_precision *out);
NPRED_API const char *npred_precision_name(npred_precision p);

/* Activation recomputation (gradient checkpointing) of the core
 * (docs/performance.md, "Activation recomputation"): a forward (training or eval)
 * stores only each core layer's BatchNorm input and the core's output, and the
 * backward recomputes the rest image by image with the forward's kernels, so every
 * result is bit-identical to storing them; the SENSORIUM core at batch 128 then keeps
 * 5 activation-sized buffers instead of 17, for about 6 % more CPU time per step
 * (round 6's kernels; round 5's measured nothing: the recomputed convolutions in
 * cache cost about what the forward saves in memory traffic).
 * AUTO (the default) uses it where it saves at least
 * 256 MiB at the model's max_batch (e.g. the SENSORIUM core set up for batch 128, not
 * for 32; then for every batch of at least one image per thread) and either one
 * image's activation of a core layer is at most 1 MiB (the recomputation runs in
 * cache, cheap: SENSORIUM's 36x64) or the saved activations would exceed a
 * quarter of the machine's physical memory (at 144x256 recomputing costs ~25 % of a
 * training step, so auto stores there unless memory requires it); ON wherever the
 * core allows it, OFF never. Cores that do not allow it (skip connections, several
 * stacked layers, SE blocks, attention, Hermite layers, layers without fused
 * BatchNorm + ELU, fewer images than threads) store everything whatever the mode.
 * PARTIAL recomputes less: a training forward also stores each depth-separable
 * layer's first 1x1 output (one more activation-sized buffer per hidden layer: the
 * SENSORIUM core at batch 128 keeps 8 instead of 5), and the backward recomputes only
 * the block's input and its depthwise output (the same bits again; it takes about
 * four fifths of ON's extra time away). AUTO picks PARTIAL where it recomputes in
 * cache, ON where memory requires it (round 9).
 * Not saved with the model. */
typedef enum {
    NPRED_RECOMPUTE_AUTO = -1,
    NPRED_RECOMPUTE_OFF = 0,
    NPRED_RECOMPUTE_ON = 1,
    NPRED_RECOMPUTE_PARTIAL = 2
} npred_recompute;
NPRED_API npred_status npred_model_set_recompute(npred_model *m, npred_recompute mode);
/* whether the model's last forward used it (1) or stored every activation (0) */
NPRED_API int npred_model_recomputes(const npred_model *m);
/* "auto" / "on" / "off" / "partial" -> *out; NPRED_ERR_ARG naming the value otherwise */
NPRED_API npred_status npred_recompute_parse(const char *name, npred_recompute *out);

/* Introspection */
NPRED_API int npred_model_n_sessions(const npred_model *m);
NPRED_API const char *npred_model_session_key(const npred_model *m, int i);
NPRED_API int npred_model_session_neurons(const npred_model *m, int i);
NPRED_API int npred_model_session_index(const npred_model *m, const char *key); /* -1 if absent */
NPRED_API void npred_model_input_shape(const npred_model *m, int *c, int *h, int *w);
NPRED_API void npred_model_core_output_shape(const npred_model *m, int *c, int *h, int *w);
NPRED_API int npred_model_has_shifter(const npred_model *m);
NPRED_API int npred_model_behavior_channels(const npred_model *m); /* 0 without a modulator */
/* Readout positions (eval mode, after the clamp) of session i: (n, 2) x, y in
 * [-1, 1]; NPRED_ERR_UNSUPPORTED for readouts without positions. */
NPRED_API npred_status npred_model_readout_positions(npred_model *m, int i, float *xy);
/* Trainable parameters (floats) whose state_dict name starts with prefix (NULL or
 * "": all), e.g. "core.", "readout.<key>.", "shifter.<key>.", "modulator.<key>.". */
NPRED_API size_t npred_model_param_count(const npred_model *m, const char *prefix);
/* Trainable parameters of session i's readout ("readout.<key>." or, for a single
 * non-multi readout, "readout."); 0 for a bad index. */
NPRED_API size_t npred_model_readout_param_count(const npred_model *m, int i);
/* Floats held in buffers (BatchNorm running statistics, grids, ...). */
NPRED_API size_t npred_model_buffer_count(const npred_model *m);
/* Pupil-center values per image the shifter takes (0 without a shifter). */
NPRED_API int npred_model_pupil_channels(const npred_model *m);
/* The readout of session i in the reference's repr words, e.g.
 * "FullFactorized2d (64 x 144 x 256 -> 8372) with bias, normalized" (malloc'ed,
 * caller frees; NULL with NPRED_ERR_ARG for a bad index). */
NPRED_API char *npred_model_readout_repr(const npred_model *m, int i);
/* Resolved configuration as JSON text (caller frees with free()). */
NPRED_API char *npred_model_config_json(const npred_model *m);
/* The preprocessing the model was trained with (JSON, see npred/preprocess.h and
 * docs/results.md), or NULL when the model file records none. */
NPRED_API const char *npred_model_preprocessing_json(const npred_model *m);
/* Replace the record (must be a JSON object; NULL removes it); saved with the model. */
NPRED_API npred_status npred_model_set_preprocessing_json(npred_model *m, const char *json);
/* Human-readable description in the reference's words (reprs, parameter counts
 * per part and per neuron, shapes); caller frees with free(). */
NPRED_API char *npred_model_describe(const npred_model *m);

#ifdef __cplusplus
}
#endif
#endif
