/* ReduceLROnPlateau (torch.optim.lr_scheduler, torch 1.13 semantics) for one
 * parameter group, as a small state struct.
 *
 * step(metric): if the metric is better than `best` (see below) it becomes `best` and
 * the bad-epoch count resets, else the count grows; during cooldown the count is
 * held at 0. When the count exceeds `patience`, lr = max(lr * factor, min_lr) (applied
 * only if that lowers it by more than eps), cooldown starts and the count resets.
 * "Better", with threshold t:
 *     max/rel: a > best * (1 + t)     max/abs: a > best + t
 *     min/rel: a < best * (1 - t)     min/abs: a < best - t
 * best starts at -inf (max) or +inf (min). A NaN metric is never better.
 * The scheduler only computes the LR; the caller applies it (npred_adam_set_lr). */
#ifndef NPRED_TRAIN_SCHEDULER_H
#define NPRED_TRAIN_SCHEDULER_H

#include <stdint.h>
#include "npred/base.h"

typedef enum { NPRED_SCHEDULER_MODE_MIN, NPRED_SCHEDULER_MODE_MAX } npred_scheduler_mode;
typedef enum { NPRED_SCHEDULER_THRESHOLD_REL, NPRED_SCHEDULER_THRESHOLD_ABS } npred_scheduler_threshold_mode;

typedef struct {
    npred_scheduler_mode mode;                     /* min */
    double factor;                                 /* 0.1, must be < 1 */
    int patience;                                  /* 10 */
    double threshold;                              /* 1e-4 */
    npred_scheduler_threshold_mode threshold_mode; /* rel */
    int cooldown;                                  /* 0 */
    double min_lr;                                 /* 0 */
    double eps;                                    /* 1e-8 */
} npred_scheduler_params;

typedef struct {
    npred_scheduler_params p;
    double lr;            /* current learning rate */
    double best;          /* best metric so far */
    int num_bad_epochs;
    int cooldown_counter;
    int64_t last_epoch;   /* number of steps taken */
} npred_scheduler;

/* torch defaults (listed above). sensorium's standard_trainer uses mode max, factor
 * lr_decay_factor (0.3), patience 5, threshold 1e-6 abs, min_lr 1e-4. */
npred_scheduler_params npred_scheduler_default_params(void);
/* NPRED_ERR_ARG for factor >= 1, an unknown mode, negative patience/cooldown/min_lr. */
npred_status npred_scheduler_init(npred_scheduler *s, const npred_scheduler_params *p,
                                  double initial_lr);
/* One step with the epoch's metric; returns 1 if the LR was reduced, else 0. */
int npred_scheduler_step(npred_scheduler *s, double metric);

#endif
