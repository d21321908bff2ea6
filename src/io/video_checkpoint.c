/* Video models on disk (npred/video_model.h): safetensors with the PyTorch state_dict
 * names and the config, sessions, input shape and loader record as metadata. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
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

