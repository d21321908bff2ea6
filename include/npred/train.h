/* The SENSORIUM training loop: sensorium.training.standard_trainer (starter kit,
 * neuralpredictors 0.3.0) over an npred model and npred loaders.
 *
 * Per epoch (LongCycler over the train tier, round robin over sessions):
 *   zero the gradient; for every batch b of session s:
 *     loss = k * L(model(x_b, s), y_b) + core.regularizer() * (not detach_core)
 *            + readout[s].regularizer()
 *     with k = sqrt(N_s / B) (scale_loss; N_s = trials of the scan, all tiers;
 *     B = this batch's size), L = loss_function(avg = avg_loss);
 *     backward (accumulates into the model's flat gradient);
 *     every loss_accum_batch_n batches (default: the number of sessions):
 *       sum the gradient over the ranks (npred_trainer_set_dist) and call the hook,
 *       Adam step (lr from the scheduler), zero the gradient.
 *   Gradients left over at the end of an epoch are dropped (the reference zeroes
 *   them at the start of the next epoch).
 * Around the epochs: neuralpredictors early_stopping (train/early_stopping.h) with
 * the objective stop_function on the validation tier in eval mode, and
 * ReduceLROnPlateau(mode max|min, factor lr_decay_factor, patience, threshold
 * tolerance abs, min_lr) stepped with it; the best state (parameters and buffers)
 * is a memcpy snapshot.
 *
 * Determinism: one npred_rng (seeded with `seed`) drives the train shuffles and
 * the Gaussian readout sampling; everything else is deterministic, so the same
 * seed and thread count give bit-identical parameters.
 *
 * Run folder (optional, npred_trainer_set_run_dir): model.safetensors (best model),
 * log.csv (one row per evaluated epoch), state.safetensors (everything needed to
 * resume, written before each epoch), each written atomically (temporary file,
 * fsync, rename). An interrupt or a crash loses at most the epoch in progress, and
 * npred_trainer_resume + npred_trainer_run then give the same final parameters as
 * an uninterrupted run.
 *
 * The library never prints: progress goes to the callbacks. */
#ifndef NPRED_TRAIN_H
#define NPRED_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/data.h"
#include "npred/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NPRED_TRAIN_LOSS_POISSON,      /* "PoissonLoss" (eps 1e-12) */
    NPRED_TRAIN_LOSS_EXPONENTIAL,  /* "ExponentialLoss" */
    NPRED_TRAIN_LOSS_ANSCOMBE_MSE, /* "AnscombeMSE" */
    NPRED_TRAIN_LOSS_CORR,         /* "Corr": -(sum over neurons of the batch correlation), -(mean) with avg_loss */
    NPRED_TRAIN_LOSS_AVG_CORR,     /* "AvgCorr": -(mean over neurons); avg_loss must be false (it already averages) */
    /* negative log-likelihoods of the distribution encoders (HEAD; the model's encoder must match) */
    NPRED_TRAIN_LOSS_ZIG,          /* "ZIGLoss" (ZIGEncoder) */
    NPRED_TRAIN_LOSS_ZIL,          /* "ZILLoss" (ZILEncoder) */
    NPRED_TRAIN_LOSS_GAMMA,        /* "GammaLoss" (GammaEncoder; eps_shift_targets 1e-10) */
    NPRED_TRAIN_LOSS_GAUSSIAN      /* "GaussianLoss" (GaussianEncoder) */
} npred_train_loss;

typedef enum {
    NPRED_TRAIN_STOP_CORRELATIONS, /* "get_correlations": mean single-trial r over all neurons (NaN -> 0) */
    NPRED_TRAIN_STOP_POISSON_LOSS  /* "get_poisson_loss": mean over neurons of the per-trial mean loss */
} npred_train_stop;

/* standard_trainer arguments by their sensorium names and defaults. */
typedef struct {
    int avg_loss;                 /* false */
    int scale_loss;               /* true */
    npred_train_loss loss_function;   /* "PoissonLoss" */
    npred_train_stop stop_function;   /* "get_correlations" */
    int64_t loss_accum_batch_n;   /* null (0 here): the number of sessions */
    int64_t interval;             /* 1 */
    int64_t patience;             /* 5 */
    int64_t epoch;                /* 0: starting epoch */
    double lr_init;               /* 0.005 */
    int64_t max_iter;             /* 200 */
    int maximize;                 /* true */
    double tolerance;             /* 1e-6 */
    int restore_best;             /* true */
    int64_t lr_decay_steps;       /* 3 */
    double lr_decay_factor;       /* 0.3 */
    double min_lr;                /* 0.0001 */
    int detach_core;              /* false */
    int seed_set;                 /* "seed" given (else the caller's seed is used) */
    int64_t seed;
    int verbose;                  /* true; accepted, without effect (progress goes to the callbacks) */
    int track_training;           /* false; true: log.csv gets the validation correlation and
                                     Poisson loss of every evaluation (sensorium's tracker) */
    char device[32];              /* "cuda"; accepted, without effect (CPU) */
} npred_trainer_config;

NPRED_API void npred_trainer_config_init(npred_trainer_config *c);
/* Set options from JSON text holding one object (keys = standard_trainer argument
 * names; null keeps the default where the reference's default is None). Unknown
 * keys, wrong types and invalid values give NPRED_ERR_CONFIG naming the key and
 * `where` (e.g. the file name; may be NULL). */
NPRED_API npred_status npred_trainer_config_parse(npred_trainer_config *c, const char *json, const char *where);
/* Every setting, resolved, as JSON text (malloc'ed; caller frees with free()). */
NPRED_API char *npred_trainer_config_json(const npred_trainer_config *c);
NPRED_API const char *npred_train_loss_name(npred_train_loss l);
NPRED_API const char *npred_train_stop_name(npred_train_stop s);

/* ---- progress ---- */
typedef struct {
    int64_t epoch;        /* epoch being trained (1-based) */
    int64_t batch;        /* batches done in this epoch (1..n_batches) */
    int64_t n_batches;    /* batches per epoch */
    const char *data_key; /* session of this batch */
    int64_t size;         /* B */
    double loss;          /* full loss of this batch (scaled loss + regularizers) */
    double lr;
} npred_trainer_batch_info;

typedef struct {
    int64_t epoch;        /* 0 for the initial evaluation */
    double lr;            /* learning rate used in this epoch */
    double train_loss;    /* mean full loss per batch (NaN for epoch 0) */
    double objective;     /* validation objective after the epoch */
    double seconds;       /* training + evaluation time */
    int improved;         /* the objective became the new best */
    int64_t adam_steps;   /* optimizer steps so far */
} npred_trainer_epoch_info;

typedef struct {
    void (*on_batch)(void *user, const npred_trainer_batch_info *b);
    void (*on_epoch)(void *user, const npred_trainer_epoch_info *e);
    /* notable events ("restoring best model (0.2312 -> 0.2312)", "learning rate 0.0027") */
    void (*on_message)(void *user, const char *msg);
    void *user;
    /* checked between batches (e.g. set from a SIGINT handler): nonzero stops the
     * run with NPRED_ERR_INTERRUPTED; the run folder keeps the last epoch start. */
    volatile sig_atomic_t *interrupt;
} npred_trainer_callbacks;

/* The data-parallel hook: called once per optimizer step, after every backward of
 * the accumulation group and before the Adam step, with the model's flat gradient
 * (n_params floats). Under npred_trainer_set_dist the gradient is already summed
 * over the ranks when the hook sees it. NULL: identity. */
typedef npred_status (*npred_trainer_grad_reduce_fn)(void *user, float *grad, size_t n);

typedef struct npred_trainer npred_trainer;

/* Why training ended. */
typedef enum {
    NPRED_ES_STOP_NONE,      /* still running */
    NPRED_ES_STOP_PATIENCE,  /* all lr_decay_steps repeats ran out of patience */
    NPRED_ES_STOP_MAX_ITER,  /* epoch reached max_iter */
    NPRED_ES_STOP_NONFINITE  /* the objective was NaN or infinite */
} npred_es_stop;

typedef struct {
    double score;         /* validation objective of the final (best-restored) model */
    int64_t epochs;       /* epochs trained */
    double best;          /* best objective seen */
    npred_es_stop stop;   /* why training ended */
} npred_trainer_result;

/* A trainer for model m (whose max_batch must hold the loaders' batch_size) on
 * loaders L (train and validation tiers needed; one model session per loader
 * session, matched by data_key). seed seeds the trainer's rng unless c->seed_set.
 * m and L must outlive the trainer. */
NPRED_API npred_status npred_trainer_create(npred_trainer **out, npred_model *m, const npred_loaders *L,
                                  const npred_trainer_config *c, uint64_t seed);
NPRED_API void npred_trainer_free(npred_trainer *t);
NPRED_API void npred_trainer_set_callbacks(npred_trainer *t, const npred_trainer_callbacks *cb);
NPRED_API void npred_trainer_set_grad_reduce(npred_trainer *t, npred_trainer_grad_reduce_fn fn, void *user);
/* Data-parallel training over the ranks of src/dist (mpirun; docs/distributed.md).
 * With more than one rank: rank 0's parameters and buffers are broadcast; every
 * global batch (the single-process batch: same shuffles, from an rng seeded alike
 * on all ranks) is split into contiguous parts, rank r taking trials
 * [B*r/K, B*(r+1)/K); the loss scale k = sqrt(N_s / B) uses the global B (and
 * avg_loss the global mean), Gaussian readout samples are drawn for the whole
 * global batch on every rank and sliced, the regularizer gradients are added on
 * rank 0 only, and the flat gradient is summed with one allreduce before each Adam
 * step (before the grad-reduce hook, which then sees the global gradient), so the
 * step equals the single-process step up to float summation order, except for
 * BatchNorm batch statistics: per rank (as PyTorch DDP) unless sync_bn, which
 * installs synchronised BatchNorm (kernels/batchnorm_sync.h; then every part must
 * be non-empty, else NPRED_ERR_ARG). Validation is split across ranks and reduced
 * (with rank 0's running statistics), so early stopping decides alike everywhere;
 * only rank 0 writes the run folder. The interrupt flag is honoured between
 * epochs, by all ranks together. One rank (or no MPI): no effect, the trainer is
 * the single-process one bit for bit. Call after create, before resume/run. */
NPRED_API npred_status npred_trainer_set_dist(npred_trainer *t, int sync_bn);
/* This trainer's rank and rank count (0 and 1 unless set_dist found more). */
NPRED_API int npred_trainer_rank(const npred_trainer *t);
NPRED_API int npred_trainer_ranks(const npred_trainer *t);
/* Use `dir` (created if missing) as run folder; config_json (may be NULL) is
 * written to dir/config.json atomically. */
NPRED_API npred_status npred_trainer_set_run_dir(npred_trainer *t, const char *dir, const char *config_json);
/* Continue from dir/state.safetensors (model parameters and buffers, Adam moments
 * and step, scheduler, early stopping, rng, best snapshot, log). The model and
 * loaders must match the saved run (NPRED_ERR_FORMAT naming the mismatch). */
NPRED_API npred_status npred_trainer_resume(npred_trainer *t, const char *state_path);
/* Train until early stopping ends (the model then holds the best state when
 * restore_best). NPRED_ERR_INTERRUPTED when the interrupt flag was set. After each
 * epoch's steps (and so at the end) the memory of the model's backward-only scratch
 * is given back to the system (the next backward takes it again). */
NPRED_API npred_status npred_trainer_run(npred_trainer *t, npred_trainer_result *res);

/* Pieces, for tests and custom loops. */
/* One batch: forward (train mode), loss, backward and regularizer gradients,
 * accumulated (+=) into the model's gradient; *loss = the full loss. */
NPRED_API npred_status npred_trainer_batch(npred_trainer *t, const npred_batch *b, double *loss);
/* Validation objective (eval mode). */
NPRED_API npred_status npred_trainer_evaluate(npred_trainer *t, double *objective);
/* k for a batch of B trials of session s (1 without scale_loss). */
NPRED_API double npred_trainer_loss_scale(const npred_trainer *t, int session, int64_t B);
NPRED_API int64_t npred_trainer_adam_steps(const npred_trainer *t);
NPRED_API double npred_trainer_lr(const npred_trainer *t);
/* The rng that drives shuffles and readout sampling (tests replay it). */
NPRED_API npred_rng *npred_trainer_rng(npred_trainer *t);

/* npred_model_create for the sessions of L: data_key, neuron count and
 * cell_motor_coordinates of each, the image shape after the transforms (one for
 * all sessions), max_batch = the loaders' batch_size. */
NPRED_API npred_status npred_trainer_model_create(npred_model **out, const npred_loaders *L, const char *config_json,
                                        const char *config_name, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
