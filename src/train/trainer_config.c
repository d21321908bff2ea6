/* Trainer configuration: standard_trainer arguments <-> JSON (see trainer.h). */
#include "train/trainer_internal.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

void npred_trainer_config_init(npred_trainer_config *c)
{
    memset(c, 0, sizeof *c);
    c->avg_loss = 0;
    c->scale_loss = 1;
    c->loss_function = NPRED_TRAIN_LOSS_POISSON;
    c->stop_function = NPRED_TRAIN_STOP_CORRELATIONS;
    c->loss_accum_batch_n = 0;
    c->interval = 1;
    c->patience = 5;
    c->epoch = 0;
    c->lr_init = 0.005;
    c->max_iter = 200;
    c->maximize = 1;
    c->tolerance = 1e-6;
    c->restore_best = 1;
    c->lr_decay_steps = 3;
    c->lr_decay_factor = 0.3;
    c->min_lr = 0.0001;
    c->detach_core = 0;
    c->verbose = 1;
    c->track_training = 0;
    snprintf(c->device, sizeof c->device, "cuda");
}

static const char *const loss_names[] = {"PoissonLoss", "ExponentialLoss", "AnscombeMSE", "Corr",     "AvgCorr",
                                         "ZIGLoss",     "ZILLoss",         "GammaLoss",   "GaussianLoss"};
#define N_LOSSES 9
static const char *const stop_names[] = {"get_correlations", "get_poisson_loss"};

const char *npred_train_loss_name(npred_train_loss l) { return (unsigned)l < N_LOSSES ? loss_names[l] : "?"; }
const char *npred_train_stop_name(npred_train_stop s) { return (unsigned)s < 2 ? stop_names[s] : "?"; }

#define ANY NPRED_JSON_ANY

npred_status npred_trainer_config_set_json(npred_trainer_config *c, const cJSON *obj, const char *where)
{
    npred_json_reader r = {where ? where : "trainer config", "", NPRED_OK};
    if (!cJSON_IsObject(obj)) return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r.where);
    if (!npred_json_unique_keys(&r, obj)) return r.st;
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *k = v->string, *device;
        int e;
        if (!strcmp(k, "avg_loss")) npred_json_bool(&r, v, &c->avg_loss);
        else if (!strcmp(k, "scale_loss")) npred_json_bool(&r, v, &c->scale_loss);
        else if (!strcmp(k, "loss_function")) {
            if (npred_json_choice(&r, v, loss_names, N_LOSSES, &e)) c->loss_function = (npred_train_loss)e;
        } else if (!strcmp(k, "stop_function")) {
            if (npred_json_choice(&r, v, stop_names, 2, &e)) c->stop_function = (npred_train_stop)e;
        } else if (!strcmp(k, "loss_accum_batch_n")) {
            if (npred_json_i64_or_null(&r, v, 1, ANY, &c->loss_accum_batch_n) == 2) c->loss_accum_batch_n = 0;
        } else if (!strcmp(k, "interval")) npred_json_i64(&r, v, 1, ANY, &c->interval);
        else if (!strcmp(k, "patience")) npred_json_i64(&r, v, 0, ANY, &c->patience);
        else if (!strcmp(k, "epoch")) npred_json_i64(&r, v, 0, ANY, &c->epoch);
        else if (!strcmp(k, "lr_init")) npred_json_num(&r, v, 0, ANY, &c->lr_init);
        else if (!strcmp(k, "max_iter")) npred_json_i64(&r, v, 0, ANY, &c->max_iter);
        else if (!strcmp(k, "maximize")) npred_json_bool(&r, v, &c->maximize);
        else if (!strcmp(k, "tolerance")) npred_json_num(&r, v, -ANY, ANY, &c->tolerance);
        else if (!strcmp(k, "restore_best")) npred_json_bool(&r, v, &c->restore_best);
        else if (!strcmp(k, "lr_decay_steps")) npred_json_i64(&r, v, 0, ANY, &c->lr_decay_steps);
        else if (!strcmp(k, "lr_decay_factor")) {
            if (npred_json_num(&r, v, -ANY, ANY, &c->lr_decay_factor) && !(c->lr_decay_factor < 1.0))
                npred_json_fail(&r, v, "a number < 1");
        } else if (!strcmp(k, "min_lr")) npred_json_num(&r, v, 0, ANY, &c->min_lr);
        else if (!strcmp(k, "detach_core")) npred_json_bool(&r, v, &c->detach_core);
        else if (!strcmp(k, "seed")) {
            int got = npred_json_i64_or_null(&r, v, 0, ANY, &c->seed);
            if (got) c->seed_set = got == 1;
        } else if (!strcmp(k, "verbose")) npred_json_bool(&r, v, &c->verbose);
        else if (!strcmp(k, "track_training")) npred_json_bool(&r, v, &c->track_training);
        else if (!strcmp(k, "device")) {
            /* kept as given (a saved run records it): a longer name would be cut short */
            if (npred_json_str(&r, v, &device) && strlen(device) >= sizeof c->device)
                npred_json_fail(&r, v, "a device name of at most %zu bytes", sizeof c->device - 1);
            else if (!r.st) snprintf(c->device, sizeof c->device, "%s", device);
        } else if (!strcmp(k, "cb")) {
            if (!cJSON_IsNull(v)) npred_json_fail(&r, v, "null (progress goes to the trainer callbacks)");
        } else {
            npred_json_unknown(&r, v, "not a standard_trainer argument");
        }
        if (r.st) return r.st;
    }
    if (c->loss_function == NPRED_TRAIN_LOSS_AVG_CORR && c->avg_loss)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: 'avg_loss' true with 'AvgCorr' (AvgCorr already averages over the "
                            "neurons; use \"Corr\" with avg_loss true for the same loss)", r.where);
    return NPRED_OK;
}

npred_status npred_trainer_config_parse(npred_trainer_config *c, const char *json, const char *where)
{
    if (!where) where = "trainer config";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return npred_errorf(NPRED_ERR_CONFIG, "%s: invalid JSON near '%.20s'", where, end ? end : "");
    npred_status s = npred_trainer_config_set_json(c, root, where);
    cJSON_Delete(root);
    return s;
}

cJSON *npred_trainer_config_to_json(const npred_trainer_config *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "avg_loss", c->avg_loss);
    cJSON_AddBoolToObject(o, "scale_loss", c->scale_loss);
    cJSON_AddStringToObject(o, "loss_function", npred_train_loss_name(c->loss_function));
    cJSON_AddStringToObject(o, "stop_function", npred_train_stop_name(c->stop_function));
    if (c->loss_accum_batch_n) cJSON_AddNumberToObject(o, "loss_accum_batch_n", (double)c->loss_accum_batch_n);
    else cJSON_AddNullToObject(o, "loss_accum_batch_n");
    cJSON_AddStringToObject(o, "device", c->device);
    cJSON_AddBoolToObject(o, "verbose", c->verbose);
    cJSON_AddNumberToObject(o, "interval", (double)c->interval);
    cJSON_AddNumberToObject(o, "patience", (double)c->patience);
    cJSON_AddNumberToObject(o, "epoch", (double)c->epoch);
    cJSON_AddNumberToObject(o, "lr_init", c->lr_init);
    cJSON_AddNumberToObject(o, "max_iter", (double)c->max_iter);
    cJSON_AddBoolToObject(o, "maximize", c->maximize);
    cJSON_AddNumberToObject(o, "tolerance", c->tolerance);
    cJSON_AddBoolToObject(o, "restore_best", c->restore_best);
    cJSON_AddNumberToObject(o, "lr_decay_steps", (double)c->lr_decay_steps);
    cJSON_AddNumberToObject(o, "lr_decay_factor", c->lr_decay_factor);
    cJSON_AddNumberToObject(o, "min_lr", c->min_lr);
    cJSON_AddNullToObject(o, "cb");
    cJSON_AddBoolToObject(o, "track_training", c->track_training);
    cJSON_AddBoolToObject(o, "detach_core", c->detach_core);
    if (c->seed_set) cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    else cJSON_AddNullToObject(o, "seed");
    return o;
}

char *npred_trainer_config_json(const npred_trainer_config *c)
{
    cJSON *o = npred_trainer_config_to_json(c);
    char *txt = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!txt) npred_errorf(NPRED_ERR_NOMEM, "trainer config: out of memory");
    return txt;
}
