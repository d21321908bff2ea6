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
#include "npred/video_train.h"

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

/* A trainer for encoder e on loaders L (train and oracle tiers; one encoder session per
 * loader session, by data_key; the loaders' clips must be the encoder's input shape).
 * seed seeds the rng unless c->seed_set. e and L must outlive the trainer. */
npred_status npred_video_trainer_create_encoder(npred_video_trainer **out, npred_video_encoder *e,
                                                const npred_video_loaders *L, const npred_video_trainer_config *c,
                                                uint64_t seed);
void npred_video_trainer_set_saver(npred_video_trainer *t, npred_video_model_saver fn, void *user,
                                   const char *model_meta_json);

/* Pieces (tests, custom loops): one batch's full objective, forward + backward
 * accumulated into the encoder's gradient (noise (B*T', n, 2) or NULL: drawn); the
 * validation objective; the optimizer step; the rng. */
npred_status npred_video_trainer_batch(npred_video_trainer *t, const npred_video_batch *b, const float *noise,
                                       npred_video_loss_terms *terms);
npred_status npred_video_trainer_evaluate(npred_video_trainer *t, double *objective);
npred_status npred_video_trainer_step(npred_video_trainer *t);
npred_rng *npred_video_trainer_rng(npred_video_trainer *t);
/* A loader fingerprint: sessions, shapes of the data and of the clips, tiers, the
 * statistics, neuron coordinates and the normaliser's precisions (equal on ranks that
 * read the same data with the same settings). */
uint64_t npred_video_loaders_fingerprint(const npred_video_loaders *L);

#endif
