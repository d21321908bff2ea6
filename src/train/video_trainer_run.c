/* The video trainer's configuration (the kit's standard_trainer arguments), run folder,
 * training state and resume (see video_trainer.h). */
#include "train/video_trainer_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json.h"
#include "io/safetensors.h"
#include "npred/dist.h"
#include "train/trainer.h"

void npred_video_trainer_config_init(npred_video_trainer_config *c)
{
    memset(c, 0, sizeof *c);
    npred_trainer_config_init(&c->base);
    c->save_checkpoints = 1;
    snprintf(c->checkpoint_save_path, sizeof c->checkpoint_save_path, "local/");
    c->chpt_save_step = 15;
    c->print_step = 1000;
    c->weight_decay = 0.01;
}

#define ANY NPRED_JSON_ANY

/* a key accepted only at one value: the one this build runs */
static void only(npred_json_reader *r, const cJSON *v, int ok, const char *what)
{
    if (!ok) npred_json_fail(r, v, "%s", what);
}

/* a key of the static standard_trainer: its reader */
static npred_status shared_key(npred_video_trainer_config *c, const cJSON *v, const char *where)
{
    cJSON *one = cJSON_CreateObject(), *dup = cJSON_Duplicate(v, 1);
    if (!one || !dup) {
        cJSON_Delete(one), cJSON_Delete(dup);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", where);
    }
    cJSON_AddItemToObject(one, v->string, dup);
    npred_status st = npred_trainer_config_set_json(&c->base, one, where);
    cJSON_Delete(one);
    return st;
}

static npred_status set_json(npred_video_trainer_config *c, const cJSON *obj, npred_json_reader *r)
{
    if (!cJSON_IsObject(obj)) return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r->where);
    if (!npred_json_unique_keys(r, obj)) return r->st;
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *k = v->string, *s = NULL;
        int b = 0;
        if (!strcmp(k, "use_wandb")) {
            if (npred_json_bool(r, v, &b))
                only(r, v, !b, "false (Weights & Biases logging is not available; log.csv holds the epoch figures)");
        } else if (!strncmp(k, "wandb_", 6) && (!strcmp(k + 6, "project") || !strcmp(k + 6, "entity") ||
                                                  !strcmp(k + 6, "name") || !strcmp(k + 6, "model_config") ||
                                                  !strcmp(k + 6, "dataset_config"))) {
            (void)v; /* read by the kit only with use_wandb, which must be false here */
        } else if (!strcmp(k, "print_step")) npred_json_i64(r, v, 1, ANY, &c->print_step);
        else if (!strcmp(k, "save_checkpoints")) npred_json_bool(r, v, &c->save_checkpoints);
        else if (!strcmp(k, "checkpoint_save_path")) {
            if (npred_json_str(r, v, &s)) {
                if (!*s || strlen(s) >= sizeof c->checkpoint_save_path || strstr(s, "..") || *s == '/')
                    npred_json_fail(r, v, "a folder name inside the run folder (relative, no '..')");
                else snprintf(c->checkpoint_save_path, sizeof c->checkpoint_save_path, "%s", s);
            }
        } else if (!strcmp(k, "chpt_save_step")) npred_json_i64(r, v, 1, ANY, &c->chpt_save_step);
        else if (!strcmp(k, "deeplake_ds")) {
            if (npred_json_bool(r, v, &b)) only(r, v, !b, "false (deeplake data sets are not read; use the scan folders)");
        } else if (!strcmp(k, "track_training")) {
            npred_json_unknown(r, v, "not an argument of the kit's video standard_trainer");
        } else {
            npred_status st = shared_key(c, v, r->where);
            if (st) return st;
            npred_trainer_config *bc = &c->base;
            if (!strcmp(k, "loss_function"))
                only(r, v, bc->loss_function == NPRED_TRAIN_LOSS_POISSON,
                     "\"PoissonLoss\" (the only criterion built for video)");
            else if (!strcmp(k, "stop_function"))
                only(r, v, bc->stop_function == NPRED_TRAIN_STOP_CORRELATIONS,
                     "\"get_correlations\" (the kit's get_poisson_loss does not take the deeplake_ds argument its "
                     "trainer passes)");
        }
        if (r->st) return r->st;
    }
    return NPRED_OK;
}

npred_status npred_video_trainer_config_parse(npred_video_trainer_config *c, const char *json, const char *where)
{
    if (!where) where = "trainer config";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return npred_errorf(NPRED_ERR_CONFIG, "%s: invalid JSON near '%.20s'", where, end ? end : "");
    npred_json_reader r = {where, "", NPRED_OK};
    npred_status s = set_json(c, root, &r);
    cJSON_Delete(root);
    return s;
}

char *npred_video_trainer_config_json(const npred_video_trainer_config *c)
{
    cJSON *o = npred_trainer_config_to_json(&c->base);
    if (!o) return NULL;
    cJSON_DeleteItemFromObject(o, "track_training");
    cJSON_AddBoolToObject(o, "use_wandb", 0);
    cJSON_AddNumberToObject(o, "print_step", (double)c->print_step);
    cJSON_AddBoolToObject(o, "save_checkpoints", c->save_checkpoints);
    cJSON_AddStringToObject(o, "checkpoint_save_path", c->checkpoint_save_path);
    cJSON_AddNumberToObject(o, "chpt_save_step", (double)c->chpt_save_step);
    cJSON_AddBoolToObject(o, "deeplake_ds", 0);
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    if (!txt) npred_errorf(NPRED_ERR_NOMEM, "trainer config: out of memory");
    return txt;
}

/* ---------------------------------------------------------------- run folder */

npred_status npred_video_trainer_set_run_dir(npred_video_trainer *t, const char *dir, const char *config_json)
{
    return npred_es_loop_run_dir(&t->run_dir, dir, config_json);
}

npred_status vt_log_add(npred_video_trainer *t, const npred_log_row *r)
{
    if (t->n_log == t->cap_log) {
        size_t cap = t->cap_log ? 2 * t->cap_log : 64;
        npred_log_row *nl = realloc(t->log, cap * sizeof *nl);
        if (!nl) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        t->log = nl;
        t->cap_log = cap;
    }
    t->log[t->n_log++] = *r;
    return NPRED_OK;
}

npred_status vt_write_log(const npred_video_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK;
    size_t cap = 96 + t->n_log * 128;
    char *buf = malloc(cap);
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    size_t k = (size_t)snprintf(buf, cap, "epoch,lr,train_loss,validation_correlation,seconds\n");
    for (size_t i = 0; i < t->n_log; i++) {
        const npred_log_row *r = &t->log[i];
        k += (size_t)snprintf(buf + k, cap - k, "%lld,%.9g,%.9g,%.9g,%.3f\n", (long long)r->epoch, r->lr, r->train_loss,
                              r->objective, r->seconds);
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/log.csv", t->run_dir);
    npred_status st = npred_write_atomic(p, buf, k);
    free(buf);
    return st;
}

/* the parameter table as safetensors (state_dict names), when no saver is set */
static npred_status save_table(const npred_video_trainer *t, const char *path)
{
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    npred_status st = NPRED_OK;
    const npred_ptable *pt = t->t;
    for (int i = 0; !st && i < pt->n; i++) {
        const npred_param *p = &pt->items[i];
        const float *src = npred_ptable_ptr(pt, i);
        if (p->dtype == NPRED_PT_I64) {
            int64_t *v = malloc((p->count ? p->count : 1) * sizeof *v);
            if (!v) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (size_t k = 0; v && k < p->count; k++) v[k] = (int64_t)llround(src[k]);
            if (v) st = npred_tensor_list_add(&l, p->name, NPRED_TENSOR_I64, p->ndim, p->shape, v, NULL);
            free(v);
        } else {
            st = npred_tensor_list_add(&l, p->name, NPRED_TENSOR_F32, p->ndim, p->shape, src, NULL);
        }
    }
    if (!st) st = npred_tensor_list_set_meta(&l, "format", "pt");
    if (!st && t->model_meta) st = npred_tensor_list_set_meta(&l, "npred_video_config", t->model_meta);
    if (!st) st = npred_safetensors_write(path, &l);
    npred_tensor_list_free(&l);
    return st;
}

static npred_status save_model_to(const npred_video_trainer *t, const char *path)
{
    return t->saver ? t->saver(t->saver_user, path) : save_table(t, path);
}

npred_status vt_save_model(const npred_video_trainer *t, const char *name)
{
    if (!t->run_dir || t->rank) return NPRED_OK;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", t->run_dir, name);
    return save_model_to(t, p);
}

/* the kit's checkpoints: epoch_<E> every chpt_save_step epochs, final at the end, when
 * the epoch files are removed */
npred_status vt_checkpoint(const npred_video_trainer *t, int64_t epoch, int final)
{
    if (!t->c.save_checkpoints || !t->run_dir || t->rank) return NPRED_OK;
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/%s", t->run_dir, t->c.checkpoint_save_path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    if (!final) {
        if (epoch % t->c.chpt_save_step) return NPRED_OK;
        snprintf(p, sizeof p, "%s/epoch_%lld.safetensors", dir, (long long)epoch);
        return save_model_to(t, p);
    }
    snprintf(p, sizeof p, "%s/final.safetensors", dir);
    npred_status st = save_model_to(t, p);
    for (int64_t e = t->c.chpt_save_step; !st && e <= epoch; e += t->c.chpt_save_step) {
        snprintf(p, sizeof p, "%s/epoch_%lld.safetensors", dir, (long long)e);
        if (unlink(p) != 0 && errno != ENOENT)
            st = npred_errorf(NPRED_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    return st;
}

/* ---------------------------------------------------------------- state */

npred_status vt_save_state(const npred_video_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK;
    int64_t sizes[4] = {(int64_t)t->t->n_params, (int64_t)t->t->n_buffers, t->adam.step, (int64_t)t->fingerprint};
    npred_es_loop lp = vt_loop((npred_video_trainer *)t);
    char p[4096];
    snprintf(p, sizeof p, "%s/state.safetensors", t->run_dir);
    return npred_es_loop_state_save(p, &lp, &t->rng, t->done, sizes, 4, t->log, t->n_log, NULL,
                                    "video trainer; sizes = [n_params, n_buffers, adam step, loader fingerprint]; "
                                    "the rest as the static trainer's state; log = rows of [epoch, lr, train_loss, "
                                    "validation correlation, seconds]");
}

npred_status npred_video_trainer_resume(npred_video_trainer *t, const char *path)
{
    npred_tensor_list l;
    int64_t sizes[4];
    npred_status st = npred_es_loop_state_open(&l, path, t->t, sizes, 4);
    if (!st && (uint64_t)sizes[3] != t->fingerprint)
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: the saved run was trained on other data or loader settings "
                          "(fingerprint %016llx, these loaders %016llx)", path, (unsigned long long)sizes[3],
                          (unsigned long long)t->fingerprint);
    npred_es_loop lp = vt_loop(t);
    if (!st) st = npred_es_loop_state_resume(&l, path, &lp, &t->rng, sizes, &t->done);
    const npred_tensor *lg = st ? NULL : npred_tensor_list_find(&l, "log");
    if (!st && (!lg || lg->dtype != NPRED_TENSOR_F64 || lg->nbytes % sizeof(npred_log_row)))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: tensor 'log' missing or malformed", path);
    if (!st) {
        t->n_log = 0;
        for (size_t i = 0; i < lg->nbytes / sizeof(npred_log_row) && !st; i++) {
            npred_log_row r;
            memcpy(&r, (const char *)lg->data + i * sizeof r, sizeof r);
            st = vt_log_add(t, &r);
        }
    }
    npred_tensor_list_free(&l);
    return st;
}
