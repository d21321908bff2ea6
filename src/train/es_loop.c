/* The trainers' shared early-stopping loop and resume state (see es_loop.h). */
#include "train/es_loop.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "io/safetensors.h"
#include "npred/dist.h"

double npred_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void npred_trainer_say(const npred_trainer_callbacks *cb, const char *fmt, ...)
{
    if (!cb || !cb->on_message) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cb->on_message(cb->user, buf);
}

npred_status npred_es_loop_diverged(double loss, int64_t epoch, int64_t batch, int64_t n_batches, const char *key,
                                    double lr, const char *run_dir)
{
    /* stopped before the update spreads it; model.safetensors keeps the best so far */
    return npred_errorf(NPRED_ERR_VALUE,
                        "training diverged: the loss is %s in epoch %lld, batch %lld of %lld (session %s) at "
                        "learning rate %g (lr_init too large?); stopped%s%s%s",
                        isnan(loss) ? "NaN" : "infinite", (long long)epoch, (long long)batch, (long long)n_batches,
                        key, lr, run_dir ? "; the best model so far (objective before this epoch) is in " : "",
                        run_dir ? run_dir : "", run_dir ? "/model.safetensors" : "");
}

/* the row of an evaluation: after a trained epoch its loss and lr, else (the initial
 * evaluation) the current lr and no loss */
static npred_log_row make_row(const npred_es_loop *l, double objective)
{
    npred_log_row r = {(double)l->es->epoch, *l->epoch_lr,
                       *l->epoch_loss / (double)(*l->epoch_batches ? *l->epoch_batches : 1), objective,
                       npred_now_s() - *l->epoch_t0};
    if (!*l->pending_row) {
        r.lr = l->sched->lr;
        r.train_loss = NAN;
    }
    return r;
}

static void emit(const npred_es_loop *l, const npred_log_row *r, int improved)
{
    if (!l->cb || !l->cb->on_epoch) return;
    npred_trainer_epoch_info ei = {(int64_t)r->epoch, r->lr, r->train_loss, r->objective, r->seconds, improved,
                                   l->adam->step};
    l->cb->on_epoch(l->cb->user, &ei);
}

npred_status npred_es_loop_run(const npred_es_loop *l)
{
    npred_status st = NPRED_OK;
    npred_es *es = l->es;
    npred_ptable *t = l->t;
    int row_open = 0; /* a log row waits for the improvement flag (SAVE_BEST follows the evaluation) */
    npred_log_row row = {0};
    while (!st) {
        npred_es_action a;
        if (*l->resumed) {
            a = NPRED_ES_TRAIN_EPOCH; /* the epoch the saved state was about to train */
            *l->resumed = 0;
        } else if ((st = npred_es_next(es, &a))) {
            break;
        }
        if (row_open && a != NPRED_ES_SAVE_BEST && a != NPRED_ES_STEP_SCHEDULER) {
            emit(l, &row, 0);
            row_open = 0;
        }
        switch (a) {
        case NPRED_ES_EVALUATE: {
            double v = 0;
            if ((st = l->evaluate(l->user, &v))) break;
            if ((st = npred_es_set_objective(es, v))) break;
            if (es->phase == NPRED_ES_PHASE_START || (es->phase == NPRED_ES_PHASE_TRAIN && *l->pending_row)) {
                row = make_row(l, v);
                *l->pending_row = 0;
                if ((st = l->log_add(l->user, &row))) break;
                row_open = 1;
            }
            break;
        }
        case NPRED_ES_SAVE_BEST:
            memcpy(l->best_data, t->data, t->n_params * sizeof(float));
            memcpy(l->best_buf, t->bufdata, t->n_buffers * sizeof(float));
            st = l->save_model(l->user);
            if (row_open) {
                emit(l, &row, 1);
                row_open = 0;
            }
            break;
        case NPRED_ES_RESTORE_BEST:
            memcpy(t->data, l->best_data, t->n_params * sizeof(float));
            memcpy(t->bufdata, l->best_buf, t->n_buffers * sizeof(float));
            npred_trainer_say(l->cb, "restoring best model (objective %.6f)", es->best);
            break;
        case NPRED_ES_STEP_SCHEDULER:
            if (npred_scheduler_step(l->sched, es->current)) {
                st = npred_adam_set_lr(l->adam, l->sched->lr);
                npred_trainer_say(l->cb, "learning rate reduced to %.6g", l->sched->lr);
            }
            break;
        case NPRED_ES_TRAIN_EPOCH: {
            /* the resume point: everything up to this epoch is on disk */
            if ((st = l->save_state(l->user))) break;
            int stop = 0;
            if ((st = l->interrupted(l->user, &stop))) break;
            if (stop) {
                st = npred_errorf(NPRED_ERR_INTERRUPTED, "training interrupted before epoch %lld", (long long)es->epoch);
                break;
            }
            *l->epoch_t0 = npred_now_s();
            st = l->train_epoch(l->user, es->epoch);
            *l->pending_row = 1;
            break;
        }
        case NPRED_ES_DONE:
            if (es->stop == NPRED_ES_STOP_NONFINITE) npred_trainer_say(l->cb, "stopped: the objective is not finite");
            return NPRED_OK;
        }
    }
    return st;
}

/* ---------------------------------------------------------------- state */
enum { ES_I_N = 10, ES_F_N = 3 };

npred_status npred_state_add_tensor(npred_tensor_list *l, const char *name, npred_tensor_dtype dt, const void *x,
                                    size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, dt, 1, sh, x, NULL);
}

npred_status npred_state_get_tensor(const npred_tensor_list *l, const char *path, const char *name,
                                    npred_tensor_dtype dt, size_t n, void *dst)
{
    const npred_tensor *x = npred_tensor_list_find(l, name);
    if (!x) return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' missing (not an npred training state)", path, name);
    if (x->dtype != dt || x->nbytes != n * npred_tensor_dtype_size(dt))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' has %zu bytes of %s, expected %zu of %s "
                            "(the model or configuration differs from the saved run)",
                            path, name, x->nbytes, npred_tensor_dtype_name(x->dtype),
                            n * npred_tensor_dtype_size(dt), npred_tensor_dtype_name(dt));
    if (n) memcpy(dst, x->data, x->nbytes);
    return NPRED_OK;
}

static const char *const arrays[6] = {"model.params", "model.buffers", "best.params",
                                      "best.buffers", "adam.m",        "adam.v"};

static void array_views(const npred_es_loop *lp, float *p[6], size_t n[6])
{
    const npred_ptable *t = lp->t;
    p[0] = t->data, p[1] = t->bufdata, p[2] = lp->best_data, p[3] = lp->best_buf, p[4] = lp->adam->m, p[5] = lp->adam->v;
    n[0] = n[2] = n[4] = n[5] = t->n_params;
    n[1] = n[3] = t->n_buffers;
}

npred_status npred_es_loop_state_add(npred_tensor_list *l, const npred_es_loop *lp, const npred_rng *rng, int done)
{
    const npred_es *e = lp->es;
    const npred_scheduler *s = lp->sched;
    int64_t es_i[ES_I_N] = {e->epoch, e->patience_counter, e->repeat, e->n_evaluations, e->scheduler_warmup,
                            (int64_t)e->phase, (int64_t)e->stop, e->state, e->k, e->awaiting};
    double es_f[ES_F_N] = {e->current, e->best, e->value};
    int64_t sc_i[3] = {s->num_bad_epochs, s->cooldown_counter, s->last_epoch};
    double sc_f[2] = {s->lr, s->best};
    int64_t rng_i[6] = {(int64_t)rng->s[0], (int64_t)rng->s[1], (int64_t)rng->s[2], (int64_t)rng->s[3],
                        rng->has_spare, done};
    double rng_f[2] = {rng->spare, lp->adam->p.lr};
    float *p[6];
    size_t n[6];
    array_views(lp, p, n);
    npred_status st = NPRED_OK;
    for (int i = 0; i < 6 && !st; i++) st = npred_state_add_tensor(l, arrays[i], NPRED_TENSOR_F32, p[i], n[i]);
    if (!st) st = npred_state_add_tensor(l, "early_stopping.i", NPRED_TENSOR_I64, es_i, ES_I_N);
    if (!st) st = npred_state_add_tensor(l, "early_stopping.f", NPRED_TENSOR_F64, es_f, ES_F_N);
    if (!st) st = npred_state_add_tensor(l, "scheduler.i", NPRED_TENSOR_I64, sc_i, 3);
    if (!st) st = npred_state_add_tensor(l, "scheduler.f", NPRED_TENSOR_F64, sc_f, 2);
    if (!st) st = npred_state_add_tensor(l, "rng.i", NPRED_TENSOR_I64, rng_i, 6);
    if (!st) st = npred_state_add_tensor(l, "rng.f", NPRED_TENSOR_F64, rng_f, 2);
    return st;
}

npred_status npred_es_loop_state_get(const npred_tensor_list *l, const char *path, const npred_es_loop *lp,
                                     npred_rng *rng, int *done)
{
    int64_t es_i[ES_I_N], sc_i[3], rng_i[6];
    double es_f[ES_F_N], sc_f[2], rng_f[2];
    float *p[6];
    size_t n[6];
    array_views(lp, p, n);
    npred_status st = NPRED_OK;
    for (int i = 0; i < 6 && !st; i++) st = npred_state_get_tensor(l, path, arrays[i], NPRED_TENSOR_F32, n[i], p[i]);
    if (!st) st = npred_state_get_tensor(l, path, "early_stopping.i", NPRED_TENSOR_I64, ES_I_N, es_i);
    if (!st) st = npred_state_get_tensor(l, path, "early_stopping.f", NPRED_TENSOR_F64, ES_F_N, es_f);
    if (!st) st = npred_state_get_tensor(l, path, "scheduler.i", NPRED_TENSOR_I64, 3, sc_i);
    if (!st) st = npred_state_get_tensor(l, path, "scheduler.f", NPRED_TENSOR_F64, 2, sc_f);
    if (!st) st = npred_state_get_tensor(l, path, "rng.i", NPRED_TENSOR_I64, 6, rng_i);
    if (!st) st = npred_state_get_tensor(l, path, "rng.f", NPRED_TENSOR_F64, 2, rng_f);
    if (st) return st;
    npred_es *e = lp->es;
    e->epoch = es_i[0], e->patience_counter = es_i[1], e->repeat = es_i[2], e->n_evaluations = es_i[3];
    e->scheduler_warmup = (int)es_i[4], e->phase = (npred_es_phase)es_i[5], e->stop = (npred_es_stop)es_i[6];
    e->state = (int)es_i[7], e->k = es_i[8], e->awaiting = (int)es_i[9];
    e->current = es_f[0], e->best = es_f[1], e->value = es_f[2];
    npred_scheduler *s = lp->sched;
    s->num_bad_epochs = (int)sc_i[0], s->cooldown_counter = (int)sc_i[1], s->last_epoch = sc_i[2];
    s->lr = sc_f[0], s->best = sc_f[1];
    for (int i = 0; i < 4; i++) rng->s[i] = (uint64_t)rng_i[i];
    rng->has_spare = (int)rng_i[4];
    rng->spare = rng_f[0];
    *done = (int)rng_i[5];
    return npred_adam_set_lr(lp->adam, rng_f[1]);
}

npred_status npred_es_loop_state_save(const char *path, const npred_es_loop *lp, const npred_rng *rng, int done,
                                      const int64_t *sizes, size_t n_sizes, const npred_log_row *log, size_t n_log,
                                      const double *trk, const char *meta)
{
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    npred_status st = npred_es_loop_state_add(&l, lp, rng, done);
    if (!st) st = npred_state_add_tensor(&l, "sizes", NPRED_TENSOR_I64, sizes, n_sizes);
    if (!st) st = npred_state_add_tensor(&l, "log", NPRED_TENSOR_F64, log, n_log * 5);
    if (!st && trk) st = npred_state_add_tensor(&l, "log_tracked", NPRED_TENSOR_F64, trk, n_log * 2);
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_state", meta);
    if (!st) st = npred_safetensors_write(path, &l);
    npred_tensor_list_free(&l);
    return st;
}

npred_status npred_es_loop_interrupted(const npred_trainer_callbacks *cb, int nranks, int *stop)
{
    *stop = cb->interrupt && *cb->interrupt;
    if (nranks == 1) return NPRED_OK;
    double f = *stop;
    npred_status st = npred_dist_allreduce_f64(&f, 1);
    *stop = f > 0;
    return st;
}

npred_status npred_es_loop_train(const npred_es_loop *l, int *done, npred_status (*finish)(void *user),
                                 npred_trainer_result *res)
{
    npred_status st;
    if (!*done) {
        *l->epoch_t0 = npred_now_s();
        if ((st = npred_es_loop_run(l))) return st;
        *done = 1;
        if ((st = l->save_model(l->user))) return st;
        if (finish && (st = finish(l->user))) return st;
        if ((st = l->save_state(l->user))) return st;
    }
    if (res) {
        res->score = l->es->value;
        res->epochs = l->es->epoch;
        res->best = l->es->best;
        res->stop = l->es->stop;
    }
    return NPRED_OK;
}

npred_status npred_es_loop_state_open(npred_tensor_list *l, const char *path, const npred_ptable *t, int64_t *sizes,
                                      size_t n_sizes)
{
    npred_status st = npred_safetensors_read(path, l);
    if (!st) st = npred_state_get_tensor(l, path, "sizes", NPRED_TENSOR_I64, n_sizes, sizes);
    if (!st && (sizes[0] != (int64_t)t->n_params || sizes[1] != (int64_t)t->n_buffers))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: saved run has %lld parameters and %lld buffer values, this model %zu "
                          "and %zu (different model config or data?)", path, (long long)sizes[0],
                          (long long)sizes[1], t->n_params, t->n_buffers);
    return st;
}

npred_status npred_es_loop_state_resume(const npred_tensor_list *l, const char *path, const npred_es_loop *lp,
                                        npred_rng *rng, const int64_t *sizes, int *done)
{
    npred_status st = npred_es_loop_state_get(l, path, lp, rng, done);
    if (st) return st;
    lp->adam->step = sizes[2];
    *lp->resumed = !*done;
    return NPRED_OK;
}

npred_status npred_es_loop_run_dir(char **run_dir, const char *dir, const char *config_json)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return npred_errorf(NPRED_ERR_IO, "%s: not a directory", dir);
    char *copy = strdup(dir);
    if (!copy) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    free(*run_dir);
    *run_dir = copy;
    if (!config_json || npred_dist_rank() != 0) return NPRED_OK;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    return npred_write_atomic(p, config_json, strlen(config_json));
}
