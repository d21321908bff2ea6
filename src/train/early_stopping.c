/* Early-stopping state machine (see early_stopping.h). Each state names the point
 * of the reference generator the machine is at; npred_es_next runs until the next
 * side effect and returns it as an action. */
#include "train/early_stopping.h"

#include <math.h>
#include <string.h>

enum {
    S_START,          /* emit the initial EVALUATE */
    S_START_GOT,      /* initial value known: best = current; SAVE_BEST */
    S_REPEAT,         /* top of `for repeat in range(lr_decay_steps)` */
    S_WHILE,          /* while patience_counter < patience and epoch < max_iter */
    S_INTERVAL,       /* inside `for _ in range(interval)` */
    S_EVAL_GOT,       /* loop objective known: STEP_SCHEDULER */
    S_IMPROVE,        /* improvement test (after the scheduler step) */
    S_AFTER_WHILE,    /* decay_lr condition */
    S_DECAY_GOT,      /* decay_lr's first objective known: RESTORE_BEST */
    S_DECAY_RESTORED, /* emit decay_lr's second EVALUATE */
    S_DECAY_GOT2,     /* next repeat */
    S_FINALIZE,       /* emit finalize's first EVALUATE */
    S_FIN_GOT,        /* RESTORE_BEST if restore_best */
    S_FIN_RESTORED,   /* emit finalize's second EVALUATE */
    S_FIN_GOT2,       /* DONE */
    S_DONE
};

npred_es_params npred_es_default_params(void)
{
    npred_es_params p = {
        .interval = 5, .patience = 20, .start = 0, .max_iter = 1000, .maximize = 1,
        .tolerance = 1e-5, .switch_mode = 1, .restore_best = 1, .has_scheduler = 0,
        .lr_decay_steps = 1, .number_warmup_epochs = 0,
    };
    return p;
}

npred_status npred_es_begin(npred_es *es, const npred_es_params *p)
{
    if (!es || !p) return npred_errorf(NPRED_ERR_ARG, "early stopping: NULL argument");
    memset(es, 0, sizeof *es);
    if (p->interval < 1)
        return npred_errorf(NPRED_ERR_ARG, "early stopping: interval must be >= 1, got %lld",
                            (long long)p->interval);
    if (p->patience < 0 || p->lr_decay_steps < 0 || p->number_warmup_epochs < 0)
        return npred_errorf(NPRED_ERR_ARG,
                            "early stopping: patience, lr_decay_steps and number_warmup_epochs must be >= 0");
    if (isnan(p->tolerance))
        return npred_errorf(NPRED_ERR_ARG, "early stopping: tolerance is NaN");
    es->p = *p;
    es->epoch = p->start;
    es->current = es->best = es->value = NAN;
    es->state = S_START;
    es->phase = NPRED_ES_PHASE_START;
    return NPRED_OK;
}

npred_status npred_es_set_objective(npred_es *es, double value)
{
    if (!es || !es->awaiting)
        return npred_errorf(NPRED_ERR_ARG, "early stopping: an objective was given but none was requested");
    es->value = value;
    es->awaiting = 0;
    return NPRED_OK;
}

static npred_es_action evaluate(npred_es *es, int next_state, npred_es_phase phase)
{
    es->state = next_state;
    es->phase = phase;
    es->awaiting = 1;
    es->n_evaluations++;
    return NPRED_ES_EVALUATE;
}

static int improves(const npred_es *es)
{
    const double sign = es->p.maximize ? -1.0 : 1.0;
    return es->current * sign < es->best * sign - es->p.tolerance;
}

npred_status npred_es_next(npred_es *es, npred_es_action *action)
{
    if (!es || !action) return npred_errorf(NPRED_ERR_ARG, "early stopping: NULL argument");
    if (es->awaiting)
        return npred_errorf(NPRED_ERR_ARG,
                            "early stopping: the requested objective was not set (call npred_es_set_objective)");
    for (;;) {
        switch (es->state) {
        case S_START:
            *action = evaluate(es, S_START_GOT, NPRED_ES_PHASE_START);
            return NPRED_OK;
        case S_START_GOT:
            es->best = es->current = es->value;
            es->state = S_REPEAT;
            *action = NPRED_ES_SAVE_BEST;
            return NPRED_OK;
        case S_REPEAT:
            if (es->repeat >= es->p.lr_decay_steps) {
                es->state = S_FINALIZE;
                break;
            }
            es->patience_counter = 0;
            es->state = S_WHILE;
            break;
        case S_WHILE:
            if (es->patience_counter < es->p.patience && es->epoch < es->p.max_iter) {
                es->k = 0;
                es->state = S_INTERVAL;
            } else {
                es->state = S_AFTER_WHILE;
            }
            break;
        case S_INTERVAL:
            if (es->k < es->p.interval) {
                es->k++;
                es->epoch++;
                if (!isfinite(es->current)) {
                    es->stop = NPRED_ES_STOP_NONFINITE;
                    es->state = S_FINALIZE;
                    break;
                }
                es->phase = NPRED_ES_PHASE_TRAIN;
                *action = NPRED_ES_TRAIN_EPOCH;
                return NPRED_OK;
            }
            *action = evaluate(es, S_EVAL_GOT, NPRED_ES_PHASE_TRAIN);
            return NPRED_OK;
        case S_EVAL_GOT:
            es->current = es->value;
            es->state = S_IMPROVE;
            if (es->p.has_scheduler) {
                es->scheduler_warmup = es->epoch < es->p.number_warmup_epochs;
                *action = NPRED_ES_STEP_SCHEDULER;
                return NPRED_OK;
            }
            break;
        case S_IMPROVE:
            es->state = S_WHILE;
            if (improves(es)) {
                es->best = es->current;
                es->patience_counter = 0;
                *action = NPRED_ES_SAVE_BEST;
                return NPRED_OK;
            }
            es->patience_counter++;
            break;
        case S_AFTER_WHILE:
            /* 0.3.0: `repeat < lr_decay_steps` is always true here */
            if (es->epoch < es->p.max_iter && es->p.lr_decay_steps > 1) {
                *action = evaluate(es, S_DECAY_GOT, NPRED_ES_PHASE_DECAY);
                return NPRED_OK;
            }
            es->repeat++;
            es->state = S_REPEAT;
            break;
        case S_DECAY_GOT:
            if (es->p.restore_best) {
                es->state = S_DECAY_RESTORED;
                *action = NPRED_ES_RESTORE_BEST;
                return NPRED_OK;
            }
            es->state = S_DECAY_GOT2;
            break;
        case S_DECAY_RESTORED:
            *action = evaluate(es, S_DECAY_GOT2, NPRED_ES_PHASE_DECAY);
            return NPRED_OK;
        case S_DECAY_GOT2:
            es->repeat++;
            es->state = S_REPEAT;
            break;
        case S_FINALIZE:
            if (es->stop == NPRED_ES_STOP_NONE)
                es->stop = es->epoch >= es->p.max_iter ? NPRED_ES_STOP_MAX_ITER : NPRED_ES_STOP_PATIENCE;
            *action = evaluate(es, S_FIN_GOT, NPRED_ES_PHASE_FINALIZE);
            return NPRED_OK;
        case S_FIN_GOT:
            es->state = S_FIN_RESTORED;
            if (es->p.restore_best) {
                *action = NPRED_ES_RESTORE_BEST;
                return NPRED_OK;
            }
            break;
        case S_FIN_RESTORED:
            *action = evaluate(es, S_FIN_GOT2, NPRED_ES_PHASE_FINALIZE);
            return NPRED_OK;
        case S_FIN_GOT2:
        case S_DONE:
        default:
            es->state = S_DONE;
            es->phase = NPRED_ES_PHASE_DONE;
            *action = NPRED_ES_DONE;
            return NPRED_OK;
        }
    }
}

const char *npred_es_action_str(npred_es_action a)
{
    switch (a) {
    case NPRED_ES_EVALUATE: return "evaluate";
    case NPRED_ES_TRAIN_EPOCH: return "train_epoch";
    case NPRED_ES_SAVE_BEST: return "save_best";
    case NPRED_ES_RESTORE_BEST: return "restore_best";
    case NPRED_ES_STEP_SCHEDULER: return "step_scheduler";
    case NPRED_ES_DONE: return "done";
    }
    return "unknown";
}
