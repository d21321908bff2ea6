/* npred video training: the SENSORIUM 2023 kit's standard_trainer
 * (sensorium/training/video_training_loop.py, on neuralpredictors 43faede) for an
 * npred_video_model on movie loaders (docs/video.md, "Training").
 *
 *   npred_video_loaders *L;  npred_video_model *m;  npred_video_trainer *t;
 *   npred_video_loaders_open(&L, paths, n, &loader_config);
 *   npred_video_trainer_model_create(&m, L, model_json, "model.json");
 *   npred_video_trainer_create(&t, m, L, &trainer_config, seed);
 *   npred_video_trainer_set_run_dir(t, "run/", config_json);
 *   npred_video_trainer_run(t, &result);        // m holds the best model after it
 *
 * Per batch: loss_scale * PoissonNLLLoss(log_input=False, eps=1e-8, sum) of the
 * model's output frames against the LAST T' response frames, loss_scale =
 * sqrt(trials of the scan / batch size), plus the core's and the readout's
 * regularizers; sessions cycled as LongCycler; AdamW (the kit's optimizer, weight
 * decay 0.01); ReduceLROnPlateau and neuralpredictors' early stopping on the kit's
 * get_correlations of the "oracle" tier; the best state restored at the end.
 * Same seed + same thread count => identical bits; resume after an interrupt or a
 * crash gives the uninterrupted run's bits; data parallel over MPI ranks. */
#ifndef NPRED_VIDEO_TRAIN_H
#define NPRED_VIDEO_TRAIN_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/train.h"
#include "npred/video.h"
#include "npred/video_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kit's video standard_trainer arguments by their names and defaults: those it
 * shares with the static standard_trainer in `base` (npred/train.h; here loss_function
 * is "PoissonLoss", stop_function "get_correlations", detach_core and track_training
 * false; verbose: on_batch progress reported or not), plus: */
typedef struct {
    npred_trainer_config base;
    int save_checkpoints;       /* true: checkpoint_save_path/epoch_<E>.safetensors every
                                   chpt_save_step epochs, final.safetensors at the end, the
                                   epoch files removed then (as the kit's .pth files) */
    char checkpoint_save_path[512]; /* "local/" (inside the run folder) */
    int64_t chpt_save_step;     /* 15 */
    int64_t print_step;         /* 1000: unused by the kit too */
    double weight_decay;        /* 0.01: torch.optim.AdamW's default, which the kit keeps */
} npred_video_trainer_config;

NPRED_API void npred_video_trainer_config_init(npred_video_trainer_config *c);
/* JSON object of the kit's trainer arguments. Accepted only at the value this build
 * runs: loss_function "PoissonLoss", stop_function "get_correlations", use_wandb
 * false (the wandb_* keys then have no effect, as in the kit), deeplake_ds false, cb
 * null. detach_core true trains the readouts, shifters and ConvGRU on the core's
 * detached output, as the kit (docs/video.md, "detach_core"). Unknown keys:
 * NPRED_ERR_CONFIG naming the key. */
NPRED_API npred_status npred_video_trainer_config_parse(npred_video_trainer_config *c, const char *json,
                                                        const char *where);
/* Every setting, resolved, as JSON text (malloc'ed; caller frees). */
NPRED_API char *npred_video_trainer_config_json(const npred_video_trainer_config *c);

typedef struct npred_video_trainer npred_video_trainer;

/* make_video_model for the sessions of L (data keys, neuron counts,
 * cell_motor_coordinates, the clips' channels and frame size; the readout biases
 * from the mean over clips and frames of each session's first training batch, as the
 * kit; that batch is drawn from an rng seeded with the config's seed), max_batch =
 * the loaders' batch_size. */
NPRED_API npred_status npred_video_trainer_model_create(npred_video_model **out, const npred_video_loaders *L,
                                                        const char *config_json, const char *where);
/* A trainer for model m on loaders L (the "train" and "oracle" tiers of every session;
 * clips of the loaders' `frames`). seed seeds the rng unless c->base.seed_set. m and L
 * must outlive the trainer; m holds the trained (best) model after a run. */
NPRED_API npred_status npred_video_trainer_create(npred_video_trainer **out, npred_video_model *m,
                                                  const npred_video_loaders *L, const npred_video_trainer_config *c,
                                                  uint64_t seed);
NPRED_API void npred_video_trainer_free(npred_video_trainer *t);
NPRED_API void npred_video_trainer_set_callbacks(npred_video_trainer *t, const npred_trainer_callbacks *cb);
/* Data parallel over the ranks of npred/dist.h (no effect with one rank): every rank
 * loads the same global batch and runs its contiguous part; one allreduce of the
 * gradient per step; validation on every rank with rank 0's BatchNorm statistics.
 * sync_bn: synchronised BatchNorm (every rank's part of every batch must be
 * non-empty), else per rank as PyTorch DDP. Errors before anything is trained when the
 * ranks' data, loader settings or model sizes differ. */
NPRED_API npred_status npred_video_trainer_set_dist(npred_video_trainer *t, int sync_bn);
/* Use dir (created if missing) as run folder: config.json (config_json, may be NULL),
 * log.csv, model.safetensors (the best model), state.safetensors (for resume), the
 * kit's checkpoints; every file written atomically (only rank 0 writes). */
NPRED_API npred_status npred_video_trainer_set_run_dir(npred_video_trainer *t, const char *dir, const char *config_json);
/* Continue from a state.safetensors of the same model, data and loader settings. */
NPRED_API npred_status npred_video_trainer_resume(npred_video_trainer *t, const char *state_path);
/* Train until early stopping ends. NPRED_ERR_INTERRUPTED when the interrupt flag was set. */
NPRED_API npred_status npred_video_trainer_run(npred_video_trainer *t, npred_trainer_result *res);
NPRED_API double npred_video_trainer_lr(const npred_video_trainer *t);
NPRED_API int64_t npred_video_trainer_adam_steps(const npred_video_trainer *t);

#ifdef __cplusplus
}
#endif
#endif
