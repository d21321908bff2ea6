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
    return npred_es_loop_run_dir(&t->run_dir, dir, config_json);
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

/* state.safetensors: named flat tensors (the shared part: es_loop.h) */
npred_status trainer_save_state(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    int64_t sizes[3] = {(int64_t)t->t->n_params, (int64_t)t->t->n_buffers, t->adam.step};
    npred_es_loop lp = trainer_loop((npred_trainer *)t);
    char p[4096];
    run_path(t, "state.safetensors", p, sizeof p);
    return npred_es_loop_state_save(p, &lp, &t->rng, t->done, sizes, 3, t->log, t->n_log, t->trk,
                                    "sizes = [n_params, n_buffers, adam step]; early_stopping.i = [epoch, "
                                    "patience_counter, repeat, n_evaluations, scheduler_warmup, phase, stop, "
                                    "state, k, awaiting]; early_stopping.f = [current, best, value]; "
                                    "scheduler.i = [num_bad_epochs, cooldown_counter, last_epoch]; "
                                    "scheduler.f = [lr, best]; rng.i = [s0..s3, has_spare, done]; "
                                    "rng.f = [spare, adam lr]; log = rows of [epoch, lr, train_loss, "
                                    "objective, seconds]");
}

npred_status npred_trainer_resume(npred_trainer *t, const char *path)
{
    npred_tensor_list l;
    int64_t sizes[3];
    npred_status st = npred_es_loop_state_open(&l, path, t->t, sizes, 3);
    npred_es_loop lp = trainer_loop(t);
    if (!st) st = npred_es_loop_state_resume(&l, path, &lp, &t->rng, sizes, &t->done);
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
    npred_tensor_list_free(&l);
    return st;
}
