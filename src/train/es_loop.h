/* The training loop shared by the static trainer (trainer.c) and the video trainer
 * (video_trainer.c): neuralpredictors' early_stopping state machine (early_stopping.h)
 * driving evaluation, best-state snapshots, the ReduceLROnPlateau scheduler and the
 * epochs, plus the part of the resume state (state.safetensors) both trainers share.
 *
 * Order of one run: [resumed: the pending epoch first] then the actions of
 * npred_es_next; an epoch's log row is written at its evaluation and reported (with the
 * improvement flag) once SAVE_BEST has or has not followed; the state is saved before
 * every epoch (the resume point) and at the end. */
#ifndef NPRED_TRAIN_ES_LOOP_H
#define NPRED_TRAIN_ES_LOOP_H

#include "io/tensorfile.h"
#include "nn/params.h"
#include "train/adam.h"
#include "train/early_stopping.h"
#include "train/scheduler.h"
#include "npred/train.h"

/* One log.csv row (the static trainer adds its tracked columns beside it). */
typedef struct {
    double epoch, lr, train_loss, objective, seconds;
} npred_log_row;

typedef struct {
    npred_es *es;
    npred_scheduler *sched;
    npred_adam *adam;
    npred_ptable *t;
    float *best_data, *best_buf;  /* (n_params), (n_buffers) snapshot */
    int *resumed;                 /* 1: the state file's pending epoch is trained first (cleared) */
    int *pending_row;             /* 1: a trained epoch waits for its evaluation (set after each epoch) */
    const npred_trainer_callbacks *cb; /* on_epoch (each logged row, with the improvement flag), on_message */
    double *epoch_t0;             /* set before each epoch (and by the caller before the run) */
    const double *epoch_loss, *epoch_lr; /* the last epoch's summed loss and its lr ... */
    const int64_t *epoch_batches; /* ... over this many batches */
    void *user;
    npred_status (*evaluate)(void *user, double *objective);
    npred_status (*log_add)(void *user, const npred_log_row *row); /* add and write the row of an evaluation */
    npred_status (*save_model)(void *user);                /* the best model (after SAVE_BEST and at the end) */
    npred_status (*save_state)(void *user);
    npred_status (*interrupted)(void *user, int *stop);    /* checked before each epoch */
    npred_status (*train_epoch)(void *user, int64_t epoch);
} npred_es_loop;

/* Run until early stopping is done (NPRED_OK; the caller then marks the run done and
 * saves the final model and state) or an error / interrupt. */
npred_status npred_es_loop_run(const npred_es_loop *l);

/* A whole run: unless *done, the loop, then *done = 1, save_model, finish (may be
 * NULL), save_state; res (may be NULL) gets the objective, epochs, best and the reason. */
npred_status npred_es_loop_train(const npred_es_loop *l, int *done, npred_status (*finish)(void *user),
                                 npred_trainer_result *res);

/* Make dir a run folder (created if missing): *run_dir = a copy of dir; config_json
 * (may be NULL) written to dir/config.json atomically by rank 0. */
npred_status npred_es_loop_run_dir(char **run_dir, const char *dir, const char *config_json);

/* Seconds on the monotonic clock. */
double npred_now_s(void);
/* The on_message callback with a formatted message (nothing without one). */
void npred_trainer_say(const npred_trainer_callbacks *cb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The error of a batch whose loss is not finite (NPRED_ERR_VALUE), naming the epoch,
 * batch, session, learning rate and where the best model so far is (run_dir may be NULL). */
npred_status npred_es_loop_diverged(double loss, int64_t epoch, int64_t batch, int64_t n_batches, const char *key,
                                    double lr, const char *run_dir);

/* State tensors: model.params, model.buffers, best.params, best.buffers, adam.m,
 * adam.v, early_stopping.i/.f, scheduler.i/.f, rng.i (with `done`), rng.f (with the
 * Adam lr). The Adam step and the log are the caller's. */
npred_status npred_es_loop_state_add(npred_tensor_list *l, const npred_es_loop *lp, const npred_rng *rng, int done);
npred_status npred_es_loop_state_get(const npred_tensor_list *l, const char *path, const npred_es_loop *lp,
                                     npred_rng *rng, int *done);
/* Read a state file into l (free it with npred_tensor_list_free, also after an error):
 * "sizes" (n_sizes int64; the first two are checked against t's parameter and buffer
 * counts). After the caller's own checks, npred_es_loop_state_resume restores the
 * shared state and marks the pending epoch (sizes[2] = the Adam step). */
npred_status npred_es_loop_state_open(npred_tensor_list *l, const char *path, const npred_ptable *t, int64_t *sizes,
                                      size_t n_sizes);
npred_status npred_es_loop_state_resume(const npred_tensor_list *l, const char *path, const npred_es_loop *lp,
                                        npred_rng *rng, const int64_t *sizes, int *done);
/* Write path (atomically): the shared state above, "sizes" (n_sizes int64), "log"
 * (n_log rows), "log_tracked" (n_log rows of 2) when trk is not NULL, and the meta text. */
npred_status npred_es_loop_state_save(const char *path, const npred_es_loop *lp, const npred_rng *rng, int done,
                                      const int64_t *sizes, size_t n_sizes, const npred_log_row *log, size_t n_log,
                                      const double *trk, const char *meta);
/* The interrupt flag of cb (set by a signal handler), or of any rank when nranks > 1
 * (one tiny allreduce: every rank stops together). */
npred_status npred_es_loop_interrupted(const npred_trainer_callbacks *cb, int nranks, int *stop);
/* One tensor of n values of type dt into dst; NPRED_ERR_FORMAT naming it when absent or
 * of another size. */
npred_status npred_state_get_tensor(const npred_tensor_list *l, const char *path, const char *name,
                                    npred_tensor_dtype dt, size_t n, void *dst);
/* Adds a 1-D tensor of n values. */
npred_status npred_state_add_tensor(npred_tensor_list *l, const char *name, npred_tensor_dtype dt, const void *x,
                                    size_t n);

#endif
