/* The SENSORIUM 2023 kit's video training loop (sensorium/training/video_training_loop.py
 * standard_trainer, on neuralpredictors 43faede) over the internal video encoder
 * (model/video_encoder.h) and the movie loaders (npred/video.h). docs/video.md, "Training".
 *
 * Per epoch (LongCycler over the "train" tier: round robin over the sessions, shorter
 * ones restarted with a new shuffle, n_sessions * max batches per epoch):
 *   zero the gradient; for every batch b of session s:
 *     loss = k * PoissonNLL(out, y[:, :, -T':]) + core.regularizer() + readout[s].regularizer()
 *     out (B, T', n) = the model's output frames, y (B, n, F) the responses; the Poisson
 *     term is PoissonNLLLoss(log_input=False, eps=1e-8) summed (mean with avg_loss) over
 *     (B, T', n), k = sqrt(trials of the scan, all tiers / B) (1 without scale_loss);
 *     backward (accumulated); every loss_accum_batch_n batches (default: the number of
 *     sessions): [sum over the ranks], AdamW step (lr from the scheduler, weight decay
 *     0.01: torch.optim.AdamW's default, which the kit keeps), zero the gradient.
 * Around the epochs: neuralpredictors' early_stopping (train/early_stopping.h; 43faede's
 * is 0.3.0's) on the kit's get_correlations over the "oracle" tier (eval mode, skip 50,
 * train/video_scores.h), ReduceLROnPlateau(mode max|min, lr_decay_factor, patience,
 * tolerance abs, min_lr) stepped by it, best state restored at the end.
 *
 * Randomness: one npred_rng (seed) draws the train shuffles, every random Subsequence
 * offset (train and oracle batches, offset -1 as the kit's loaders) and the readout's
 * Gaussian samples; same seed + same thread count => identical bits.
 *
 * Run folder (npred_video_trainer_set_run_dir): config.json, log.csv, model.safetensors
 * (the best model), state.safetensors (what a resume needs, written before each epoch),
 * every file written atomically; resume + run = an uninterrupted run, bit for bit.
 *
 * Data parallel (npred_video_trainer_set_dist): every rank loads the same global batch
 * (same rng) and runs its contiguous part [B*r/K, B*(r+1)/K); gradients summed by one
 * allreduce per step; validation on every rank with rank 0's buffers. */
#ifndef NPRED_TRAIN_VIDEO_TRAINER_H
#define NPRED_TRAIN_VIDEO_TRAINER_H

#include <stdint.h>

#include "model/video_encoder.h"
#include "npred/train.h"
#include "npred/video.h"

/* standard_trainer (video) arguments by the kit's names and defaults: those it shares
 * with the static standard_trainer in `base` (same names and defaults; here
 * loss_function is PoissonLoss, stop_function get_correlations, detach_core and
 * track_training false; verbose: on_batch progress reported or not), plus: */
typedef struct {
    npred_trainer_config base;
    int save_checkpoints;       /* true: checkpoint_save_path/epoch_<E>.safetensors every
                                   chpt_save_step epochs, final.safetensors at the end, the
                                   epoch files removed then (as the kit's .pth files) */
    char checkpoint_save_path[512]; /* "local/" (inside the run folder) */
    int64_t chpt_save_step;     /* 15 */
    int64_t print_step;         /* 1000: unused by the kit too */
    double weight_decay;        /* 0.01: AdamW's default (not a kit argument; fixed) */
} npred_video_trainer_config;

void npred_video_trainer_config_init(npred_video_trainer_config *c);
/* JSON object of standard_trainer arguments. Accepted only at the value this build
 * runs: loss_function "PoissonLoss", stop_function "get_correlations", detach_core
 * false, use_wandb false (the wandb_* keys then have no effect, as in the kit),
 * deeplake_ds false, cb null. Unknown keys: NPRED_ERR_CONFIG naming the key. */
npred_status npred_video_trainer_config_parse(npred_video_trainer_config *c, const char *json, const char *where);
char *npred_video_trainer_config_json(const npred_video_trainer_config *c);

/* The kit's Poisson term of one batch (PoissonNLLLoss(log_input=False, eps=1e-8), summed):
 * *v = sum over (B, T', n) of out - y log(out + 1e-8), y = responses[b, j, F - T' + t];
 * dout (B, T', n) (may be NULL) = gscale * d v / d out = gscale * (1 - y / (out + 1e-8)).
 * out (B, T', n), responses (B, n, F), T' <= F. */
npred_status npred_video_poisson_loss(double *v, float *dout, const float *out, const float *responses, int B,
                                      int T1, int n, int F, double gscale);

/* The loss terms of the kit's full_objective for one batch. */
typedef struct {
    double scale;                 /* k */
    double poisson;               /* the criterion (unscaled) */
    double core_spatial, core_temporal, readout; /* regularizers */
    double total;                 /* k * poisson + regularizers */
} npred_video_loss_terms;

/* Saves the model (the best or a checkpoint) to path; the public model layer plugs in
 * its writer. NULL: the parameter table as safetensors (state_dict names). */
typedef npred_status (*npred_video_model_saver)(void *user, const char *path);

typedef struct npred_video_trainer npred_video_trainer;

/* A trainer for encoder e on loaders L (train and oracle tiers; one encoder session per
 * loader session, by data_key; the loaders' clips must be the encoder's input shape).
 * seed seeds the rng unless c->seed_set. e and L must outlive the trainer. */
npred_status npred_video_trainer_create(npred_video_trainer **out, npred_video_encoder *e,
                                        const npred_video_loaders *L, const npred_video_trainer_config *c,
                                        uint64_t seed);
void npred_video_trainer_free(npred_video_trainer *t);
void npred_video_trainer_set_callbacks(npred_video_trainer *t, const npred_trainer_callbacks *cb);
void npred_video_trainer_set_saver(npred_video_trainer *t, npred_video_model_saver fn, void *user,
                                   const char *model_meta_json);
/* Data parallel over the ranks of src/dist (no effect with one rank). Errors before
 * anything is trained when the ranks' datasets or configurations differ. sync_bn:
 * synchronised BatchNorm (kernels/batchnorm_sync.h: the global batch's statistics;
 * every rank's part of every batch must then be non-empty), else per rank as DDP. */
npred_status npred_video_trainer_set_dist(npred_video_trainer *t, int sync_bn);
npred_status npred_video_trainer_set_run_dir(npred_video_trainer *t, const char *dir, const char *config_json);
npred_status npred_video_trainer_resume(npred_video_trainer *t, const char *state_path);
npred_status npred_video_trainer_run(npred_video_trainer *t, npred_trainer_result *res);

/* Pieces (tests, custom loops): one batch's full objective, forward + backward
 * accumulated into the encoder's gradient (noise (B*T', n, 2) or NULL: drawn); the
 * validation objective; the optimizer step; the rng. */
npred_status npred_video_trainer_batch(npred_video_trainer *t, const npred_video_batch *b, const float *noise,
                                       npred_video_loss_terms *terms);
npred_status npred_video_trainer_evaluate(npred_video_trainer *t, double *objective);
npred_status npred_video_trainer_step(npred_video_trainer *t);
npred_rng *npred_video_trainer_rng(npred_video_trainer *t);
double npred_video_trainer_lr(const npred_video_trainer *t);
int64_t npred_video_trainer_adam_steps(const npred_video_trainer *t);
/* A loader fingerprint: sessions, shapes, tiers, statistics, neuron coordinates, the
 * first and last trial of every field and the loader settings (equal on ranks that
 * read the same data). */
uint64_t npred_video_loaders_fingerprint(const npred_video_loaders *L);

#endif
