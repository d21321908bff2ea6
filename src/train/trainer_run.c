/* The trainer's run folder (see trainer.h): log.csv, the best model, the state
 * for --resume (state.safetensors), and resuming from it. */
#include "train/trainer_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "npred/dist.h"

static void run_path(const npred_trainer *t, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", t->run_dir, name);
}

npred_status npred_trainer_set_run_dir(npred_trainer *t, const char *dir, const char *config_json)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return npred_errorf(NPRED_ERR_IO, "%s: not a directory", dir);
    free(t->run_dir);
    t->run_dir = strdup(dir);
    if (!t->run_dir) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (config_json && npred_dist_rank() == 0) {
        char p[4096];
        run_path(t, "config.json", p, sizeof p);
        return npred_write_atomic(p, config_json, strlen(config_json));
    }
    return NPRED_OK;
}

npred_status trainer_log_add(npred_trainer *t, const log_row *r, const double *trk)
{
    if (t->n_log == t->cap_log) {
        size_t cap = t->cap_log ? 2 * t->cap_log : 64;
        log_row *nl = realloc(t->log, cap * sizeof *nl);
        if (!nl) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        t->log = nl;
        double *nt = realloc(t->trk, cap * 2 * sizeof *nt);
        if (!nt) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        t->trk = nt;
        t->cap_log = cap;
    }
    t->trk[2 * t->n_log] = trk ? trk[0] : NAN;
    t->trk[2 * t->n_log + 1] = trk ? trk[1] : NAN;
    t->log[t->n_log++] = *r;
    return NPRED_OK;
}

npred_status trainer_write_log(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    size_t cap = 160 + t->n_log * 192;
    char *buf = malloc(cap);
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    const char *obj = t->c.stop_function == NPRED_TRAIN_STOP_CORRELATIONS ? "validation_correlation"
                                                                          : "validation_poisson_loss";
    const int trk = t->c.track_training;
    size_t k = (size_t)snprintf(buf, cap, "epoch,lr,train_loss,%s,seconds%s\n", obj,
                                trk ? ",correlation,poisson_loss" : "");
    for (size_t i = 0; i < t->n_log; i++) {
        const log_row *r = &t->log[i];
        k += (size_t)snprintf(buf + k, cap - k, "%lld,%.9g,%.9g,%.9g,%.3f", (long long)r->epoch, r->lr,
                              r->train_loss, r->objective, r->seconds);
        if (trk) k += (size_t)snprintf(buf + k, cap - k, ",%.9g,%.9g", t->trk[2 * i], t->trk[2 * i + 1]);
        k += (size_t)snprintf(buf + k, cap - k, "\n");
    }
    char p[4096];
    run_path(t, "log.csv", p, sizeof p);
    npred_status st = npred_write_atomic(p, buf, k);
    free(buf);
    return st;
}

npred_status trainer_save_model(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    char p[4096];
    run_path(t, "model.safetensors", p, sizeof p);
    return npred_model_save_file(t->m, p);
}

/* state.safetensors: named flat tensors (see save_state) */
enum { ES_I_N = 10, ES_F_N = 3 };

static npred_status add_f32(npred_tensor_list *l, const char *name, const float *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_F32, 1, sh, x, NULL);
}
static npred_status add_f64(npred_tensor_list *l, const char *name, const double *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_F64, 1, sh, x, NULL);
}
static npred_status add_i64(npred_tensor_list *l, const char *name, const int64_t *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_I64, 1, sh, x, NULL);
}

npred_status trainer_save_state(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    const npred_es *e = &t->es;
    int64_t es_i[ES_I_N] = {e->epoch, e->patience_counter, e->repeat, e->n_evaluations, e->scheduler_warmup,
                            (int64_t)e->phase, (int64_t)e->stop, e->state, e->k, e->awaiting};
    double es_f[ES_F_N] = {e->current, e->best, e->value};
    int64_t sc_i[3] = {t->sched.num_bad_epochs, t->sched.cooldown_counter, t->sched.last_epoch};
    double sc_f[2] = {t->sched.lr, t->sched.best};
    int64_t rng_i[6] = {(int64_t)t->rng.s[0], (int64_t)t->rng.s[1], (int64_t)t->rng.s[2], (int64_t)t->rng.s[3],
                        t->rng.has_spare, t->done};
    double rng_f[2] = {t->rng.spare, t->adam.p.lr};
    int64_t sizes[3] = {(int64_t)t->t->n_params, (int64_t)t->t->n_buffers, t->adam.step};
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    npred_status st = add_f32(&l, "model.params", t->t->data, t->t->n_params);
    if (!st) st = add_f32(&l, "model.buffers", t->t->bufdata, t->t->n_buffers);
    if (!st) st = add_f32(&l, "best.params", t->best_data, t->t->n_params);
    if (!st) st = add_f32(&l, "best.buffers", t->best_buf, t->t->n_buffers);
    if (!st) st = add_f32(&l, "adam.m", t->adam.m, t->t->n_params);
    if (!st) st = add_f32(&l, "adam.v", t->adam.v, t->t->n_params);
    if (!st) st = add_i64(&l, "sizes", sizes, 3);
    if (!st) st = add_i64(&l, "early_stopping.i", es_i, ES_I_N);
    if (!st) st = add_f64(&l, "early_stopping.f", es_f, ES_F_N);
    if (!st) st = add_i64(&l, "scheduler.i", sc_i, 3);
    if (!st) st = add_f64(&l, "scheduler.f", sc_f, 2);
    if (!st) st = add_i64(&l, "rng.i", rng_i, 6);
    if (!st) st = add_f64(&l, "rng.f", rng_f, 2);
    if (!st) st = add_f64(&l, "log", (const double *)t->log, t->n_log * 5);
    if (!st) st = add_f64(&l, "log_tracked", t->trk, t->n_log * 2);
    if (!st)
        st = npred_tensor_list_set_meta(&l, "npred_state",
                                        "sizes = [n_params, n_buffers, adam step]; early_stopping.i = [epoch, "
                                        "patience_counter, repeat, n_evaluations, scheduler_warmup, phase, stop, "
                                        "state, k, awaiting]; early_stopping.f = [current, best, value]; "
                                        "scheduler.i = [num_bad_epochs, cooldown_counter, last_epoch]; "
                                        "scheduler.f = [lr, best]; rng.i = [s0..s3, has_spare, done]; "
                                        "rng.f = [spare, adam lr]; log = rows of [epoch, lr, train_loss, "
                                        "objective, seconds]");
    if (!st) {
        char p[4096];
        run_path(t, "state.safetensors", p, sizeof p);
        st = npred_safetensors_write(p, &l);
    }
    npred_tensor_list_free(&l);
    return st;
}

static npred_status get_tensor(const npred_tensor_list *l, const char *path, const char *name,
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

npred_status npred_trainer_resume(npred_trainer *t, const char *path)
{
    npred_tensor_list l;
    npred_status st = npred_safetensors_read(path, &l);
    if (st) {
        npred_tensor_list_free(&l);
        return st;
    }
    int64_t sizes[3], es_i[ES_I_N], sc_i[3], rng_i[6];
    double es_f[ES_F_N], sc_f[2], rng_f[2];
    st = get_tensor(&l, path, "sizes", NPRED_TENSOR_I64, 3, sizes);
    if (!st && (sizes[0] != (int64_t)t->t->n_params || sizes[1] != (int64_t)t->t->n_buffers))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: saved run has %lld parameters and %lld buffer values, this model %zu "
                          "and %zu (different model config or data?)", path, (long long)sizes[0],
                          (long long)sizes[1], t->t->n_params, t->t->n_buffers);
    if (!st) st = get_tensor(&l, path, "model.params", NPRED_TENSOR_F32, t->t->n_params, t->t->data);
    if (!st) st = get_tensor(&l, path, "model.buffers", NPRED_TENSOR_F32, t->t->n_buffers, t->t->bufdata);
    if (!st) st = get_tensor(&l, path, "best.params", NPRED_TENSOR_F32, t->t->n_params, t->best_data);
    if (!st) st = get_tensor(&l, path, "best.buffers", NPRED_TENSOR_F32, t->t->n_buffers, t->best_buf);
    if (!st) st = get_tensor(&l, path, "adam.m", NPRED_TENSOR_F32, t->t->n_params, t->adam.m);
    if (!st) st = get_tensor(&l, path, "adam.v", NPRED_TENSOR_F32, t->t->n_params, t->adam.v);
    if (!st) st = get_tensor(&l, path, "early_stopping.i", NPRED_TENSOR_I64, ES_I_N, es_i);
    if (!st) st = get_tensor(&l, path, "early_stopping.f", NPRED_TENSOR_F64, ES_F_N, es_f);
    if (!st) st = get_tensor(&l, path, "scheduler.i", NPRED_TENSOR_I64, 3, sc_i);
    if (!st) st = get_tensor(&l, path, "scheduler.f", NPRED_TENSOR_F64, 2, sc_f);
    if (!st) st = get_tensor(&l, path, "rng.i", NPRED_TENSOR_I64, 6, rng_i);
    if (!st) st = get_tensor(&l, path, "rng.f", NPRED_TENSOR_F64, 2, rng_f);
    const npred_tensor *lg = st ? NULL : npred_tensor_list_find(&l, "log");
    if (!st && (!lg || lg->dtype != NPRED_TENSOR_F64 || lg->nbytes % (5 * sizeof(double))))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: tensor 'log' missing or malformed", path);
    if (!st) {
        size_t rows = lg->nbytes / (5 * sizeof(double));
        t->n_log = 0;
        /* log_tracked (rows of 2) is absent in states written before track_training acted */
        const npred_tensor *tk = npred_tensor_list_find(&l, "log_tracked");
        if (tk && (tk->dtype != NPRED_TENSOR_F64 || tk->nbytes != rows * 2 * sizeof(double)))
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: tensor 'log_tracked' malformed", path);
        for (size_t i = 0; i < rows && !st; i++) {
            log_row r;
            double tr[2];
            memcpy(&r, (const char *)lg->data + i * sizeof r, sizeof r);
            if (tk) memcpy(tr, (const char *)tk->data + i * sizeof tr, sizeof tr);
            st = trainer_log_add(t, &r, tk ? tr : NULL);
        }
    }
    if (!st) {
        npred_es *e = &t->es;
        e->epoch = es_i[0];
        e->patience_counter = es_i[1];
        e->repeat = es_i[2];
        e->n_evaluations = es_i[3];
        e->scheduler_warmup = (int)es_i[4];
        e->phase = (npred_es_phase)es_i[5];
        e->stop = (npred_es_stop)es_i[6];
        e->state = (int)es_i[7];
        e->k = es_i[8];
        e->awaiting = (int)es_i[9];
        e->current = es_f[0];
        e->best = es_f[1];
        e->value = es_f[2];
        t->sched.num_bad_epochs = (int)sc_i[0];
        t->sched.cooldown_counter = (int)sc_i[1];
        t->sched.last_epoch = sc_i[2];
        t->sched.lr = sc_f[0];
        t->sched.best = sc_f[1];
        for (int i = 0; i < 4; i++) t->rng.s[i] = (uint64_t)rng_i[i];
        t->rng.has_spare = (int)rng_i[4];
        t->done = (int)rng_i[5];
        t->rng.spare = rng_f[0];
        t->adam.step = sizes[2];
        st = npred_adam_set_lr(&t->adam, rng_f[1]);
        t->resumed = !t->done;
    }
    npred_tensor_list_free(&l);
    return st;
}
