/* Early stopping as a state machine: neuralpredictors 0.3.0
 * training/early_stopping.py `early_stopping` (a Python generator) turned inside out.
 *
 * The reference drives the model itself (objective calls, state copies, scheduler
 * steps) and yields once per training epoch. Here the caller owns the model and asks
 * the state machine what to do next; the sequence of actions is exactly the order of
 * the reference's side effects:
 *
 *     npred_es es;
 *     npred_es_begin(&es, &params);
 *     for (;;) {
 *         npred_es_action a;
 *         npred_es_next(&es, &a);
 *         if (a == NPRED_ES_DONE) break;
 *         switch (a) {
 *         case NPRED_ES_EVALUATE:       npred_es_set_objective(&es, objective(model)); break;
 *         case NPRED_ES_SAVE_BEST:      memcpy(best, params, bytes); break;
 *         case NPRED_ES_RESTORE_BEST:   memcpy(params, best, bytes); break;
 *         case NPRED_ES_STEP_SCHEDULER: step the scheduler with es.current (or the warm-up
 *                                       scheduler when es.scheduler_warmup); apply its LR; break;
 *         case NPRED_ES_TRAIN_EPOCH:    train one epoch (es.epoch; es.current = objective
 *                                       measured before it); break;
 *         }
 *     }
 *
 * Reference order (0.3.0):
 *   start:  EVALUATE (best = current = value), SAVE_BEST.
 *   repeat lr_decay_steps times:
 *     patience_counter = 0
 *     while patience_counter < patience and epoch < max_iter:
 *       interval times: epoch += 1; if current is not finite -> finalize (stop);
 *                       TRAIN_EPOCH (the yield; current may be stale, see below)
 *       EVALUATE (current = value); STEP_SCHEDULER (if has_scheduler);
 *       if current improves on best by more than tolerance: SAVE_BEST, counter = 0
 *       else counter += 1
 *     if epoch < max_iter and lr_decay_steps > 1 (decay_lr; 0.3.0 also does this after
 *     the LAST repeat): EVALUATE (value unused), and if restore_best: RESTORE_BEST,
 *     EVALUATE (value unused). It does not change the LR and does NOT update `current`:
 *     the first epoch after a restore yields the stale pre-restore objective.
 *   finalize: EVALUATE, RESTORE_BEST (if restore_best), EVALUATE; DONE.
 * "Improves": current < best - tolerance when minimizing, current > best + tolerance
 * when maximizing (the reference compares current*sign < best*sign - tolerance).
 *
 * number_warmup_epochs (neuralpredictors HEAD; 0 = 0.3.0 behaviour): while
 * epoch < number_warmup_epochs the scheduler step is a warm-up step
 * (es.scheduler_warmup = 1: step the warm-up scheduler, without the objective).
 * switch_mode is only recorded: put the model in eval mode for EVALUATE if it is set. */
#ifndef NPRED_TRAIN_EARLY_STOPPING_H
#define NPRED_TRAIN_EARLY_STOPPING_H

#include <stdint.h>
#include "npred/base.h"
#include "npred/train.h"

typedef struct {
    int64_t interval;           /* 5: epochs between evaluations */
    int64_t patience;           /* 20: evaluations without improvement before a stop/decay */
    int64_t start;              /* 0: initial epoch count (checked against max_iter) */
    int64_t max_iter;           /* 1000: maximum epoch count */
    int maximize;               /* 1 */
    double tolerance;           /* 1e-5 */
    int switch_mode;            /* 1: recorded only (the caller switches train/eval) */
    int restore_best;           /* 1 */
    int has_scheduler;          /* 0: emit NPRED_ES_STEP_SCHEDULER after each evaluation */
    int64_t lr_decay_steps;     /* 1 */
    int64_t number_warmup_epochs; /* 0 */
} npred_es_params;

typedef enum {
    NPRED_ES_EVALUATE,       /* compute the objective, pass it to npred_es_set_objective */
    NPRED_ES_TRAIN_EPOCH,    /* train one epoch (the reference's yield) */
    NPRED_ES_SAVE_BEST,      /* copy the model state into the best-state snapshot */
    NPRED_ES_RESTORE_BEST,   /* load the best-state snapshot into the model */
    NPRED_ES_STEP_SCHEDULER, /* step the LR scheduler with es.current (see scheduler_warmup) */
    NPRED_ES_DONE            /* finished; further calls keep returning DONE */
} npred_es_action;

/* Why an EVALUATE / RESTORE_BEST is requested (for logging). */
typedef enum {
    NPRED_ES_PHASE_START,    /* initial objective */
    NPRED_ES_PHASE_TRAIN,    /* the epoch loop */
    NPRED_ES_PHASE_DECAY,    /* decay_lr: objective, restore, objective */
    NPRED_ES_PHASE_FINALIZE, /* finalize: objective, restore, objective */
    NPRED_ES_PHASE_DONE
} npred_es_phase;

/* npred_es_stop (why a run ended) is public: include/npred/train.h */

typedef struct {
    npred_es_params p;
    /* public read-only state */
    int64_t epoch;            /* epochs started so far (the value yielded with TRAIN_EPOCH) */
    double current;           /* objective of the latest loop evaluation (stale after a restore) */
    double best;              /* best objective */
    double value;             /* the latest value passed to npred_es_set_objective */
    int64_t patience_counter;
    int64_t repeat;           /* index of the lr-decay repeat */
    int64_t n_evaluations;    /* EVALUATE actions so far (= objective calls) */
    int scheduler_warmup;     /* with STEP_SCHEDULER: 1 = warm-up step, 0 = main step */
    npred_es_phase phase;
    npred_es_stop stop;
    /* internal */
    int state;
    int64_t k;                /* position inside the interval */
    int awaiting;             /* EVALUATE emitted, objective not yet set */
} npred_es;

/* neuralpredictors defaults (listed above). */
npred_es_params npred_es_default_params(void);
/* NPRED_ERR_ARG for interval < 1, patience < 0, lr_decay_steps < 0, number_warmup_epochs < 0. */
npred_status npred_es_begin(npred_es *es, const npred_es_params *p);
/* The next action. NPRED_ERR_ARG if the previous action was EVALUATE and no
 * objective was set. */
npred_status npred_es_next(npred_es *es, npred_es_action *action);
/* The objective requested by the last EVALUATE. NPRED_ERR_ARG if none was requested. */
npred_status npred_es_set_objective(npred_es *es, double value);
/* Name of an action ("evaluate", "train_epoch", ...). */
const char *npred_es_action_str(npred_es_action a);

#endif
