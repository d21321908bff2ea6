/* Internal to the trainer (src/train/trainer*.c): the trainer's state and the
 * run-folder functions the loop calls. Files: trainer.c (create, one batch, the
 * epoch loop), trainer_config.c (standard_trainer arguments <-> JSON),
 * trainer_validate.c (the validation objective, one rank or many),
 * trainer_run.c (run folder: log.csv, model, state.safetensors, resume). */
#ifndef NPRED_TRAIN_TRAINER_INTERNAL_H
#define NPRED_TRAIN_TRAINER_INTERNAL_H

#include "train/trainer.h"

#include "model/model.h"
#include "train/adam.h"
#include "train/scheduler.h"
#include "train/es_loop.h"

typedef npred_log_row log_row;

struct npred_trainer {
    npred_model *m;
    npred_ptable *t;
    const npred_loaders *L;
    npred_trainer_config c;
    size_t n_sessions;
    int *model_index;        /* (n_sessions,) model session of each loader session */
    double *n_trials;        /* (n_sessions,) trials of each scan (all tiers) */
    int64_t max_neurons, batch_size;
    int64_t accum;           /* batches per optimizer step */
    npred_batch batch;
    float *pred, *dpred;     /* (batch_size, max_neurons) */
    float *ddist, *loc_mask; /* distribution encoders: (K, batch_size, max_neurons), (batch_size, max_neurons) */
    float *val_pred, *val_resp; /* (max validation trials, max_neurons) */
    int64_t max_val;
    double *rbuf;            /* (max_neurons,) per-neuron results */
    npred_adam adam;
    npred_scheduler sched;
    npred_es es;
    npred_rng rng;
    float *best_data, *best_buf;
    npred_trainer_callbacks cb;
    npred_trainer_grad_reduce_fn reduce;
    void *reduce_user;
    char *run_dir;
    int resumed;             /* es has a pending TRAIN_EPOCH from the state file */
    int done;
    log_row *log;
    double *trk;             /* (n_log, 2): tracked validation correlation and Poisson loss (track_training) */
    size_t n_log, cap_log;
    double last_trk[2];      /* the tracked values of the last evaluation */
    /* epoch in progress */
    double epoch_loss, epoch_t0, epoch_lr;
    int64_t epoch_batches;
    int pending_row;         /* a trained epoch waits for its evaluation */
    /* data parallel (npred_trainer_set_dist): rank of nranks; 1 rank = the plain trainer */
    int rank, nranks;
    int owns_bn_sync;        /* this trainer installed the BatchNorm sync hook */
    float *noise;            /* (batch_size, max_neurons, 2) Gaussian readout draws of the global batch */
    double *dbuf;            /* (6 * max_neurons + 1,) validation sums */
};

/* trainer.c: the shared loop's view of the trainer (its hooks) */
npred_es_loop trainer_loop(npred_trainer *t);

/* ---- trainer_run.c ---- */

/* trainer_dist.c: the encoder / loss_function pairing, and one batch's likelihood loss
 * v of the last forward with its gradient (times kb) in t->ddist */
npred_status npred_trainer_dist_check(const npred_model *m, npred_train_loss l);
npred_status npred_trainer_dist_loss(npred_trainer *t, double *v, double kb, const float *y, int64_t B, int64_t n);
npred_status trainer_log_add(npred_trainer *t, const log_row *r, const double *trk);
npred_status trainer_write_log(const npred_trainer *t);
npred_status trainer_save_model(const npred_trainer *t);
npred_status trainer_save_state(const npred_trainer *t);

#endif
