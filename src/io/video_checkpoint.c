/* Video models on disk (npred/video_model.h): safetensors with the PyTorch state_dict
 * names and the config, sessions, input shape and loader record as metadata; the
 * import of the SENSORIUM 2023 kit's PyTorch state_dicts (.pth). */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/tensorfile.h"
#include "model/video_model.h"

static char *sessions_json(const npred_video_model *m)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < m->n_sessions; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", m->keys[i]);
        cJSON_AddNumberToObject(o, "n_neurons", m->n_neurons[i]);
        cJSON_AddItemToArray(a, o);
    }
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

npred_status npred_video_model_save_file(const npred_video_model *m, const char *path)
{
    npred_tensor_list l;
    npred_status st = npred_ptable_to_list(&m->e->t, &l);
    char *ses = sessions_json(m), shape[64];
    snprintf(shape, sizeof shape, "[%d, %d, %d]", m->in_c, m->in_h, m->in_w);
    if (!st && !ses) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (!st) st = npred_tensor_list_set_meta(&l, "format", "pt");
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_video_config", m->config_json);
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_sessions", ses);
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_input_shape", shape);
    if (!st && m->loader_json) st = npred_tensor_list_set_meta(&l, "npred_video_loader", m->loader_json);
    if (!st) st = npred_safetensors_write(path, &l);
    free(ses);
    npred_tensor_list_free(&l);
    return st;
}

npred_status npred_video_model_save(const npred_video_model *m, const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    char path[4096];
    if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
        return npred_errorf(NPRED_ERR_ARG, "%s: path too long", dir);
    return npred_video_model_save_file(m, path);
}

static npred_status model_file(const char *path, char *file, size_t n)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return npred_errorf(NPRED_ERR_IO, "%s: %s", path, strerror(errno));
    int w = S_ISDIR(sb.st_mode) ? snprintf(file, n, "%s/model.safetensors", path) : snprintf(file, n, "%s", path);
    return w < (int)n ? NPRED_OK : npred_errorf(NPRED_ERR_ARG, "%s: path too long", path);
}

int npred_video_model_probe(const char *path)
{
    char file[4096];
    npred_tensor_list l;
    int yes = 0;
    if (!model_file(path, file, sizeof file) && !npred_safetensors_read(file, &l)) {
        yes = npred_tensor_list_get_meta(&l, "npred_video_config") != NULL;
        npred_tensor_list_free(&l);
    }
    npred_clear_error();
    return yes;
}

/* the sessions metadata: [{"key": ..., "n_neurons": ...}, ...] */
static npred_status read_sessions(const char *ses, const char *file, const char **keys, int *nn, int *n, cJSON **a)
{
    *a = cJSON_Parse(ses);
    *n = cJSON_IsArray(*a) ? cJSON_GetArraySize(*a) : 0;
    if (*n < 1 || *n > NPRED_VIDEO_MAX_SESSIONS)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: metadata npred_sessions: expected a list of 1..%d sessions", file,
                            NPRED_VIDEO_MAX_SESSIONS);
    for (int i = 0; i < *n; i++) {
        cJSON *o = cJSON_GetArrayItem(*a, i);
        cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key"), *c = cJSON_GetObjectItemCaseSensitive(o, "n_neurons");
        if (!cJSON_IsString(k) || !cJSON_IsNumber(c) || c->valuedouble < 1 || c->valuedouble > 1e8)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: metadata npred_sessions[%d]: expected {\"key\": text, "
                                "\"n_neurons\": a positive integer}", file, i);
        keys[i] = k->valuestring;
        nn[i] = (int)c->valuedouble;
    }
    return NPRED_OK;
}

npred_status npred_video_model_load(npred_video_model **out, const char *path, int max_batch)
{
    *out = NULL;
    char file[4096];
    npred_status st = model_file(path, file, sizeof file);
    if (st) return st;
    npred_tensor_list l;
    if ((st = npred_safetensors_read(file, &l))) return st;
    const char *cfg = npred_tensor_list_get_meta(&l, "npred_video_config");
    const char *ses = npred_tensor_list_get_meta(&l, "npred_sessions");
    const char *shp = npred_tensor_list_get_meta(&l, "npred_input_shape");
    const char *ldr = npred_tensor_list_get_meta(&l, "npred_video_loader");
    npred_video_model *m = NULL;
    cJSON *a = NULL;
    int c = 0, h = 0, w = 0, n = 0, nn[NPRED_VIDEO_MAX_SESSIONS];
    const char *keys[NPRED_VIDEO_MAX_SESSIONS];
    if (!cfg || !ses || !shp)
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: not an npred video model (metadata npred_video_config, "
                          "npred_sessions and npred_input_shape are required)%s", file,
                          npred_tensor_list_get_meta(&l, "npred_config") ? "; it is an image model (npred_model_load)" : "");
    else if (sscanf(shp, "[%d, %d, %d]", &c, &h, &w) != 3 || c < 1 || h < 1 || w < 1)
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: metadata npred_input_shape '%s': expected [C, H, W]", file, shp);
    if (!st) st = read_sessions(ses, file, keys, nn, &n, &a);
    if (!st) st = npred_video_model_build(&m, cfg, file, c, h, w, keys, nn, n, max_batch, NULL);
    if (!st) st = npred_list_to_ptable(&m->e->t, &l, file, 1);
    if (!st && ldr && (st = npred_video_model_set_loader_json(m, ldr))) st = npred_error_prefix(st, "%s", file);
    cJSON_Delete(a);
    npred_tensor_list_free(&l);
    if (st) {
        npred_video_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}


/* ---- PyTorch import (torch.save(model.state_dict(), path) of the kit's model) ---- */

static int has_prefix(const npred_tensor_list *l, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < l->n; i++)
        if (!strncmp(l->items[i].name, prefix, n)) return 1;
    return 0;
}

static const npred_tensor *find_ndim(const npred_tensor_list *l, const char *key, const char *what, int ndim)
{
    char name[160];
    if (snprintf(name, sizeof name, "readout.%.96s.%.32s", key, what) >= (int)sizeof name) return NULL;
    const npred_tensor *t = npred_tensor_list_find(l, name);
    return t && t->ndim == ndim ? t : NULL;
}

/* the neurons of readout.<key>: bias (n), _features (1, c, 1, n), sigma (1, n, ., .),
 * source_grid (n, d), _mu (1, n, 1, 2); 0 when none of them says (INT_MAX beyond it) */
static int file_neurons(const npred_tensor_list *l, const char *key)
{
    const npred_tensor *t;
    int64_t n = 0;
    if ((t = find_ndim(l, key, "bias", 1))) n = t->shape[0];
    else if ((t = find_ndim(l, key, "_features", 4))) n = t->shape[3];
    else if ((t = find_ndim(l, key, "sigma", 4))) n = t->shape[1];
    else if ((t = find_ndim(l, key, "source_grid", 2))) n = t->shape[0];
    else if ((t = find_ndim(l, key, "_mu", 4))) n = t->shape[1];
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* The sessions of a state_dict: the data keys of readout.<key>.*, in the order of
 * their first tensor (the kit's ModuleDict order), and their neuron counts. */
static npred_status file_sessions(const npred_tensor_list *l, const char *where, char (*keys)[96], int *nn, int *n)
{
    *n = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->items[i].name;
        if (strncmp(name, "readout.", 8)) continue;
        const char *k = name + 8, *dot = strchr(k, '.');
        if (!dot || dot == k)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': expected readout.<data_key>.<name>", where, name);
        size_t len = (size_t)(dot - k);
        if (len >= sizeof keys[0])
            return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': data key longer than %zu characters", where, name,
                                sizeof keys[0] - 1);
        int seen = 0;
        for (int j = 0; j < *n && !seen; j++) seen = strlen(keys[j]) == len && !strncmp(keys[j], k, len);
        if (seen) continue;
        if (*n == NPRED_VIDEO_MAX_SESSIONS)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: more than %d sessions (readout.<data_key>.*)", where,
                                NPRED_VIDEO_MAX_SESSIONS);
        memcpy(keys[*n], k, len);
        keys[*n][len] = 0;
        (*n)++;
    }
    if (!*n)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: no readout.<data_key>.* tensors: not a state_dict of the kit's "
                            "video model", where);
    for (int j = 0; j < *n; j++)
        if ((nn[j] = file_neurons(l, keys[j])) < 1 || nn[j] > 100000000)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot tell the neurons of session %s (no readout.%s.bias, "
                                "._features or .sigma of the expected rank, or more than 10^8)", where, keys[j], keys[j]);
    return NPRED_OK;
}

static void list_keys(char *buf, size_t n, char (*keys)[96], int nk)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < nk && k + 100 < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", keys[i]);
}

/* The caller's sessions (from the scans) against the file's: the same keys, the same
 * neuron counts; the model takes the caller's order. */
static npred_status match_sessions(const char *where, char (*fk)[96], const int *fnn, int fn, const char *const *keys,
                                   const int *n_neurons, int n)
{
    char all[1024];
    list_keys(all, sizeof all, fk, fn);
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < fn && (!keys[i] || strcmp(fk[j], keys[i]))) j++;
        if (j == fn)
            return npred_errorf(NPRED_ERR_SHAPE, "%s: session '%s' has no readout.%s.* tensors (the file holds %s)",
                                where, keys[i] ? keys[i] : "(null)", keys[i] ? keys[i] : "(null)", all);
        if (fnn[j] != n_neurons[i])
            return npred_errorf(NPRED_ERR_SHAPE, "%s: session %s: the file's readout has %d neurons, the data %d",
                                where, keys[i], fnn[j], n_neurons[i]);
    }
    for (int j = 0; j < fn; j++) {
        int i = 0;
        while (i < n && (!keys[i] || strcmp(fk[j], keys[i]))) i++;
        if (i == n)
            return npred_errorf(NPRED_ERR_SHAPE, "%s: the file holds session %s (readout.%s.*), which is not among "
                                "the %d given", where, fk[j], fk[j], n);
    }
    return NPRED_OK;
}

/* core_dict.input_channels of the config, else layer 0's weights; 0 when neither says */
static int input_channels(const char *config_json, const npred_tensor_list *l)
{
    cJSON *j = cJSON_Parse(config_json);
    const cJSON *ic = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "core_dict"), "input_channels");
    int c = cJSON_IsNumber(ic) && ic->valuedouble >= 1 && ic->valuedouble <= 1 << 20 ? (int)ic->valuedouble : 0;
    cJSON_Delete(j);
    if (c) return c;
    static const struct {
        const char *name;
        int min_ndim, max_ndim;
    } w0[] = {{"core.features.layer0.conv_spatial.weight", 5, 5},
              {"core.features.layer0.conv.weight", 4, 5},
              {"core.features.layer0.hermite_conv.coeffs", 3, 3}};
    for (size_t i = 0; i < sizeof w0 / sizeof w0[0]; i++) {
        const npred_tensor *t = npred_tensor_list_find(l, w0[i].name);
        if (t && t->ndim >= w0[i].min_ndim && t->ndim <= w0[i].max_ndim && t->shape[1] >= 1 && t->shape[1] <= 1 << 20)
            return (int)t->shape[1];
    }
    return 0;
}

npred_status npred_video_model_import_tensors(npred_video_model **out, const npred_tensor_list *l, const char *where,
                                              const char *config_json, const char *config_where, int in_h, int in_w,
                                              const char *const *keys, const int *n_neurons, int n_sessions,
                                              int max_batch)
{
    *out = NULL;
    if (!config_json)
        return npred_errorf(NPRED_ERR_ARG, "%s: a video model needs its make_video_model arguments (the config): the "
                            "state_dict does not hold them", where);
    if (!config_where) config_where = "video model config";
    if (n_sessions < 0 || n_sessions > NPRED_VIDEO_MAX_SESSIONS || (n_sessions && (!keys || !n_neurons)))
        return npred_errorf(NPRED_ERR_ARG, "%s: %d sessions given (0..%d, with their keys and neuron counts)", where,
                            n_sessions, NPRED_VIDEO_MAX_SESSIONS);
    if (in_h <= 0 && in_w <= 0) in_h = 36, in_w = 64; /* the SENSORIUM 2023 frames */
    if (in_h <= 0 || in_w <= 0) return npred_errorf(NPRED_ERR_ARG, "%s: frame size %d x %d", where, in_h, in_w);
    char fk[NPRED_VIDEO_MAX_SESSIONS][96];
    int fnn[NPRED_VIDEO_MAX_SESSIONS], fn = 0;
    npred_status st = file_sessions(l, where, fk, fnn, &fn);
    if (!st && n_sessions) st = match_sessions(where, fk, fnn, fn, keys, n_neurons, n_sessions);
    if (st) return st;
    const char *kp[NPRED_VIDEO_MAX_SESSIONS];
    for (int i = 0; i < fn; i++) kp[i] = fk[i];
    if (!n_sessions) keys = kp, n_neurons = fnn, n_sessions = fn;
    int in_c = input_channels(config_json, l);
    if (!in_c)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core_dict.input_channels' is missing and %s has no layer-0 "
                            "core weight that says it", config_where, where);
    npred_video_model *m = NULL;
    st = npred_video_model_build(&m, config_json, config_where, in_c, in_h, in_w, keys, n_neurons, n_sessions,
                                 max_batch, NULL);
    if (st) return st;
    /* the parts the config and the file disagree on, said as such before any tensor */
    int gru = has_prefix(l, "gru_module."), shifter = has_prefix(l, "shifter.");
    if (gru != m->cfg.use_gru)
        st = npred_errorf(NPRED_ERR_SHAPE, "%s: %s gru_module.* tensors but %s has use_gru %s", where,
                          gru ? "holds" : "has no", config_where, m->cfg.use_gru ? "true" : "false");
    else if (shifter != m->cfg.use_shifter)
        st = npred_errorf(NPRED_ERR_SHAPE, "%s: %s shifter.* tensors but %s has use_shifter %s", where,
                          shifter ? "holds" : "has no", config_where, m->cfg.use_shifter ? "true" : "false");
    if (!st) st = npred_list_to_ptable(&m->e->t, l, where, 1);
    if (st) {
        npred_video_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

npred_status npred_video_model_import_pth(npred_video_model **out, const char *pth_path, const char *config_json,
                                          const char *config_where, int in_h, int in_w, const char *const *keys,
                                          const int *n_neurons, int n_sessions, int max_batch)
{
    *out = NULL;
    npred_tensor_list l;
    npred_status st = npred_pth_read(pth_path, &l);
    if (!st)
        st = npred_video_model_import_tensors(out, &l, pth_path, config_json, config_where, in_h, in_w, keys,
                                              n_neurons, n_sessions, max_batch);
    npred_tensor_list_free(&l);
    return st;
}
