/* Models on disk: safetensors save/load, PyTorch .pth import (with architecture
 * inference), descriptions and readout positions. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/checkpoint.h"
#include "model/model.h"
#include "io/pth.h"
#include "base/pyfmt.h"
#include "io/safetensors.h"
#include "io/tensorfile.h"

/* ---- table <-> tensor list ---- */

npred_status npred_ptable_to_list(const npred_ptable *t, npred_tensor_list *l)
{
    npred_tensor_list_init(l);
    for (int i = 0; i < t->n; i++) {
        const npred_param *p = &t->items[i];
        const float *src = npred_ptable_ptr(t, i);
        npred_status st;
        if (p->dtype == NPRED_PT_I64) {
            int64_t *v = malloc((p->count ? p->count : 1) * sizeof *v);
            if (!v) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (size_t k = 0; k < p->count; k++) v[k] = (int64_t)llround(src[k]);
            st = npred_tensor_list_add(l, p->name, NPRED_TENSOR_I64, p->ndim, p->shape, v, NULL);
            free(v);
        } else {
            st = npred_tensor_list_add(l, p->name, NPRED_TENSOR_F32, p->ndim, p->shape, src, NULL);
        }
        if (st) return st;
    }
    return NPRED_OK;
}

npred_status npred_list_to_ptable(npred_ptable *t, const npred_tensor_list *l, const char *where, int strict)
{
    for (int i = 0; i < t->n; i++) {
        const npred_param *p = &t->items[i];
        const npred_tensor *x = npred_tensor_list_find(l, p->name);
        if (!x) return npred_errorf(NPRED_ERR_SHAPE, "%s: tensor '%s' is missing", where, p->name);
        int same = x->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = x->shape[d] == p->shape[d];
        if (!same) {
            char a[96] = "", b[96] = "";
            size_t ka = 0, kb = 0;
            for (int d = 0; d < x->ndim && ka < 80; d++)
                ka += (size_t)snprintf(a + ka, sizeof a - ka, "%s%lld", d ? ", " : "", (long long)x->shape[d]);
            for (int d = 0; d < p->ndim && kb < 80; d++)
                kb += (size_t)snprintf(b + kb, sizeof b - kb, "%s%lld", d ? ", " : "", (long long)p->shape[d]);
            return npred_errorf(NPRED_ERR_SHAPE, "%s: tensor '%s' has shape (%s), the model expects (%s)", where,
                                p->name, a, b);
        }
        float *dst = npred_ptable_ptr(t, i);
        for (size_t k = 0; k < p->count; k++) {
            double v;
            switch (x->dtype) {
            case NPRED_TENSOR_F32: v = ((const float *)x->data)[k]; break;
            case NPRED_TENSOR_F64: v = ((const double *)x->data)[k]; break;
            case NPRED_TENSOR_I64: v = (double)((const int64_t *)x->data)[k]; break;
            case NPRED_TENSOR_I32: v = ((const int32_t *)x->data)[k]; break;
            default:
                return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (expected F32 or I64)",
                                    where, p->name, npred_tensor_dtype_name(x->dtype));
            }
            if (!isfinite(v))
                return npred_errorf(NPRED_ERR_VALUE, "%s: tensor '%s' holds a non-finite value at element %zu", where,
                                    p->name, k);
            dst[k] = (float)v;
        }
    }
    if (strict)
        for (size_t i = 0; i < l->n; i++)
            if (npred_ptable_find(t, l->items[i].name) < 0)
                return npred_errorf(NPRED_ERR_SHAPE, "%s: tensor '%s' does not belong to this model", where,
                                    l->items[i].name);
    return NPRED_OK;
}

/* ---- save / load ---- */

static char *sessions_json(const npred_model *m)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < m->n_sessions; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", m->s[i].key);
        cJSON_AddNumberToObject(o, "n_neurons", m->s[i].n);
        if (m->s[i].ro.match_idx) { /* np.unique inverse: reproduces the same sharing when loaded */
            cJSON *ids = cJSON_AddArrayToObject(o, "match_ids");
            for (int j = 0; j < m->s[i].n; j++) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)m->s[i].ro.match_idx[j]));
        }
        cJSON_AddItemToArray(a, o);
    }
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

npred_status npred_model_save_file(const npred_model *m, const char *path)
{
    npred_status cs = npred_model_check_allocated(m, path);
    if (cs) return cs;
    npred_tensor_list l;
    npred_status st = npred_ptable_to_list(&m->t, &l);
    char *cfg = npred_model_config_json(m), *ses = sessions_json(m), shape[64];
    snprintf(shape, sizeof shape, "[%d, %d, %d]", m->in_c, m->in_h, m->in_w);
    if (!st) st = npred_tensor_list_set_meta(&l, "format", "pt");
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_config", cfg);
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_sessions", ses);
    if (!st) st = npred_tensor_list_set_meta(&l, "npred_input_shape", shape);
    if (!st && m->preprocessing) st = npred_tensor_list_set_meta(&l, "npred_preprocessing", m->preprocessing);
    if (!st) st = npred_safetensors_write(path, &l);
    free(cfg);
    free(ses);
    npred_tensor_list_free(&l);
    return st;
}

npred_status npred_model_save(const npred_model *m, const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return npred_model_save_file(m, path);
}

static npred_status build_from_meta(npred_model **out, const npred_tensor_list *l, const char *where, int max_batch)
{
    const char *cfg = npred_tensor_list_get_meta(l, "npred_config");
    const char *ses = npred_tensor_list_get_meta(l, "npred_sessions");
    const char *shp = npred_tensor_list_get_meta(l, "npred_input_shape");
    if (npred_tensor_list_get_meta(l, "npred_video_config"))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: a video model (open it with npred_video_model_load; npred predict "
                            "--video)", where);
    if (!cfg || !ses || !shp)
        return npred_errorf(NPRED_ERR_FORMAT,
                            "%s: not an npred model (metadata npred_config/npred_sessions/npred_input_shape missing; "
                            "use 'npred import' for PyTorch checkpoints)", where);
    npred_model_config mc;
    npred_status st = npred_model_config_parse(&mc, cfg, where);
    if (st) return st;
    int c, h, w;
    if (sscanf(shp, "[%d, %d, %d]", &c, &h, &w) != 3 || c < 1 || h < 1 || w < 1)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: bad npred_input_shape '%s'", where, shp);
    cJSON *a = cJSON_Parse(ses);
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    if (n < 1) {
        cJSON_Delete(a);
        return npred_errorf(NPRED_ERR_FORMAT, "%s: bad npred_sessions metadata", where);
    }
    npred_model_session *s = calloc((size_t)n, sizeof *s);
    int64_t **ids = calloc((size_t)n, sizeof *ids);
    if (!s || !ids) st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", where);
    for (int i = 0; !st && i < n; i++) {
        cJSON *o = cJSON_GetArrayItem(a, i);
        s[i].key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "key"));
        cJSON *nn = cJSON_GetObjectItemCaseSensitive(o, "n_neurons");
        s[i].n_neurons = cJSON_IsNumber(nn) ? nn->valueint : 0;
        cJSON *mi = cJSON_GetObjectItemCaseSensitive(o, "match_ids");
        if (cJSON_IsArray(mi)) {
            if (cJSON_GetArraySize(mi) != s[i].n_neurons) {
                st = npred_errorf(NPRED_ERR_FORMAT, "%s: session %d: %d match ids for %d neurons", where, i,
                                  cJSON_GetArraySize(mi), s[i].n_neurons);
                break;
            }
            ids[i] = malloc(sizeof(int64_t) * (size_t)(s[i].n_neurons + 1));
            if (!ids[i]) {
                st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", where);
                break;
            }
            int j = 0;
            cJSON *e;
            cJSON_ArrayForEach(e, mi) ids[i][j++] = cJSON_IsNumber(e) ? (int64_t)e->valuedouble : -1;
            s[i].match_ids = ids[i];
        }
    }
    if (!st) st = npred_model_build(out, &mc, c, h, w, s, n, max_batch);
    for (int i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(s);
    cJSON_Delete(a);
    return st;
}

npred_status npred_model_load(npred_model **out, const char *path, int max_batch)
{
    *out = NULL;
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) != 0) return npred_errorf(NPRED_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) snprintf(file, sizeof file, "%s/model.safetensors", path);
    else snprintf(file, sizeof file, "%s", path);
    npred_tensor_list l;
    npred_status st = npred_safetensors_read(file, &l);
    npred_model *m = NULL;
    if (!st) st = build_from_meta(&m, &l, file, max_batch);
    if (!st) st = npred_list_to_ptable(&m->t, &l, file, 1);
    const char *pre = st ? NULL : npred_tensor_list_get_meta(&l, "npred_preprocessing"); /* absent in older files */
    if (pre && (st = npred_model_set_preprocessing_json(m, pre))) st = npred_error_prefix(st, "%s", file);
    npred_tensor_list_free(&l);
    if (st) {
        npred_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

/* ---- PyTorch import ---- */

static const npred_tensor *find_fmt(const npred_tensor_list *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const npred_tensor *find_fmt(const npred_tensor_list *l, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return npred_tensor_list_find(l, name);
}

/* Infer a sensorium-style configuration (flat builder spelling) from the keys
 * and shapes; returns a cJSON object or NULL with an error set. Sessions are
 * returned in *keys (order of first appearance). */
/* RotationEquivariant2dCore keys: hermite_conv.coeffs (ncoef, in, hidden), H (ncoef, k*up, k*up), Rs.<r> */
static void infer_rotation_core(const npred_tensor_list *l, cJSON *c)
{
    const npred_tensor *c0 = find_fmt(l, "core.features.layer0.hermite_conv.coeffs");
    const npred_tensor *h0 = find_fmt(l, "core.features.layer0.hermite_conv.rotate_hermite.H");
    int layers = 0, rot = 0;
    while (find_fmt(l, "core.features.layer%d.hermite_conv.coeffs", layers)) layers++;
    while (find_fmt(l, "core.features.layer0.hermite_conv.rotate_hermite.Rs.%d", rot)) rot++;
    int k = 1;
    while (k * (k + 1) / 2 < c0->shape[0]) k++;
    cJSON_AddStringToObject(c, "core_type", "RotationEquivariant2dCore");
    cJSON_AddNumberToObject(c, "num_rotations", rot);
    cJSON_AddNumberToObject(c, "upsampling", h0 && h0->ndim == 3 ? (double)(h0->shape[1] / k) : 2);
    cJSON_AddNumberToObject(c, "hidden_channels", (double)c0->shape[2]);
    cJSON_AddNumberToObject(c, "input_kern", k);
    cJSON_AddNumberToObject(c, "layers", layers);
    cJSON *hk = layers > 1 ? cJSON_AddArrayToObject(c, "hidden_kern") : NULL;
    for (int i = 1; i < layers; i++) {
        const npred_tensor *ci = find_fmt(l, "core.features.layer%d.hermite_conv.coeffs", i);
        int ki = 1;
        while (ci && ki * (ki + 1) / 2 < ci->shape[0]) ki++;
        cJSON_AddItemToArray(hk, cJSON_CreateNumber(ki));
    }
    int bn = find_fmt(l, "core.features.layer0.norm.batch_norm.running_mean") != NULL;
    int affine = find_fmt(l, "core.features.layer0.norm.batch_norm.weight") != NULL;
    cJSON_AddBoolToObject(c, "batch_norm", bn);
    if (bn && !affine) {
        cJSON_AddBoolToObject(c, "independent_bn_bias", 0);
        cJSON_AddBoolToObject(c, "core_bias", find_fmt(l, "core.features.layer0.bias.bias") != NULL);
        cJSON_AddBoolToObject(c, "batch_norm_scale", find_fmt(l, "core.features.layer0.scale.scale") != NULL);
    } else {
        cJSON_AddBoolToObject(c, "core_bias", 1);
    }
}

/* The BatchNorm/bias structure of a Stacked2dCore, from the keys present:
 *   norm.weight present, no hidden conv bias  -> 0.3.0, independent_bn_bias True, bias False
 *                                               (the published SENSORIUM 2022 models)
 *   norm.weight present and hidden conv biases -> bias True: 0.3.0 and HEAD build this alike
 *                                               (sensorium's newer core_bias=True default)
 *   norm without weight, hidden conv biases    -> HEAD (no independent_bn_bias; its hidden convs
 *                                               always have a bias); Bias2D/Scale2D say bias/scale
 *   norm without weight, no hidden conv bias   -> 0.3.0 with independent_bn_bias False */
static void infer_bn_convention(const npred_tensor_list *l, int ds, int layers, cJSON *c)
{
    int bn = find_fmt(l, "core.features.layer0.norm.running_mean") != NULL;
    int affine = find_fmt(l, "core.features.layer0.norm.weight") != NULL;
    int hidden_bias = layers > 1 && (ds ? find_fmt(l, "core.features.layer1.ds_conv.in_depth_conv.bias") != NULL
                                        : find_fmt(l, "core.features.layer1.conv.bias") != NULL);
    int bias2d = find_fmt(l, "core.features.layer0.bias.bias") != NULL;
    int scale2d = find_fmt(l, "core.features.layer0.scale.scale") != NULL;
    cJSON_AddBoolToObject(c, "batch_norm", bn);
    if (!bn) {
        cJSON_AddBoolToObject(c, "core_bias", find_fmt(l, "core.features.layer0.conv.bias") != NULL || hidden_bias);
    } else if (affine) {
        cJSON_AddBoolToObject(c, "core_bias", hidden_bias);
    } else if (hidden_bias) {
        cJSON_AddStringToObject(c, "neuralpredictors", "head");
        cJSON_AddBoolToObject(c, "core_bias", bias2d);
        cJSON_AddBoolToObject(c, "batch_norm_scale", scale2d);
    } else {
        cJSON_AddBoolToObject(c, "independent_bn_bias", 0);
        cJSON_AddBoolToObject(c, "core_bias", bias2d);
        cJSON_AddBoolToObject(c, "batch_norm_scale", scale2d);
    }
}

static cJSON *infer_config(const npred_tensor_list *l, const char *where, char (*keys)[64], int *n_keys, int max_keys)
{
    const npred_tensor *w0 = npred_tensor_list_find(l, "core.features.layer0.conv.weight");
    const npred_tensor *c0 = npred_tensor_list_find(l, "core.features.layer0.hermite_conv.coeffs");
    if ((!w0 || w0->ndim != 4) && (!c0 || c0->ndim != 3)) {
        npred_errorf(NPRED_ERR_FORMAT,
                     "%s: no core.features.layer0.conv.weight (Stacked2dCore) or .hermite_conv.coeffs "
                     "(RotationEquivariant2dCore): not an encoder checkpoint npred knows", where);
        return NULL;
    }
    cJSON *c = cJSON_CreateObject();
    int layers = 0, ds = 0;
    if (c0 && c0->ndim == 3) {
        infer_rotation_core(l, c);
        goto core_done;
    }
    while (find_fmt(l, "core.features.layer%d.norm.running_mean", layers) ||
           find_fmt(l, "core.features.layer%d.conv.weight", layers) ||
           find_fmt(l, "core.features.layer%d.ds_conv.spatial_conv.weight", layers))
        layers++;
    ds = find_fmt(l, "core.features.layer1.ds_conv.spatial_conv.weight") != NULL;
    cJSON_AddNumberToObject(c, "hidden_channels", (double)w0->shape[0]);
    cJSON_AddNumberToObject(c, "input_kern", (double)w0->shape[2]);
    cJSON_AddNumberToObject(c, "layers", layers);
    cJSON *hk = layers > 1 ? cJSON_AddArrayToObject(c, "hidden_kern") : NULL;
    for (int k = 1; k < layers; k++) {
        const npred_tensor *w = ds ? find_fmt(l, "core.features.layer%d.ds_conv.spatial_conv.weight", k)
                                   : find_fmt(l, "core.features.layer%d.conv.weight", k);
        cJSON_AddItemToArray(hk, cJSON_CreateNumber(w && w->ndim == 4 ? (double)w->shape[2] : 0));
    }
    cJSON_AddBoolToObject(c, "depth_separable", ds);
    infer_bn_convention(l, ds, layers, c);
core_done:
    /* the published SENSORIUM baselines: 4-layer CNN, 3-layer LN (linear) model,
     * both with the notebook's training settings (not visible in the weights) */
    cJSON_AddBoolToObject(c, "linear", ds && layers == 3);
    cJSON_AddNumberToObject(c, "stack", -1);
    cJSON_AddBoolToObject(c, "pad_input", 0);
    cJSON_AddNumberToObject(c, "gamma_input", 6.3831);
    cJSON_AddNumberToObject(c, "gamma_readout", 0.0076);
    cJSON_AddNumberToObject(c, "init_sigma", 0.1);
    cJSON_AddNumberToObject(c, "init_mu_range", 0.3);
    /* sessions and readout */
    *n_keys = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *nm = l->items[i].name;
        if (strncmp(nm, "readout.", 8)) continue;
        const char *k = nm + 8, *dot = strchr(k, '.');
        if (!dot || dot - k >= 64) continue;
        int seen = 0;
        for (int j = 0; j < *n_keys; j++) seen |= (size_t)(dot - k) == strlen(keys[j]) && !strncmp(keys[j], k, (size_t)(dot - k));
        if (!seen && *n_keys < max_keys) {
            memcpy(keys[*n_keys], k, (size_t)(dot - k));
            keys[*n_keys][dot - k] = 0;
            (*n_keys)++;
        }
    }
    if (*n_keys == 0) {
        cJSON_Delete(c);
        npred_errorf(NPRED_ERR_FORMAT, "%s: no readout.<data_key>.* tensors", where);
        return NULL;
    }
    const npred_tensor *sig = find_fmt(l, "readout.%s.sigma", keys[0]);
    if (!sig) {
        cJSON_Delete(c);
        npred_errorf(NPRED_ERR_UNSUPPORTED,
                     "%s: readout.%s.sigma missing: only FullGaussian2d readouts can be inferred; pass a config",
                     where, keys[0]);
        return NULL;
    }
    cJSON_AddStringToObject(c, "gauss_type", sig->ndim == 4 && sig->shape[2] == 2 && sig->shape[3] == 2 ? "full"
                                             : sig->ndim == 4 && sig->shape[3] == 2                   ? "uncorrelated"
                                                                                                       : "isotropic");
    cJSON_AddBoolToObject(c, "readout_bias", find_fmt(l, "readout.%s.bias", keys[0]) != NULL);
    const npred_tensor *mt0 = find_fmt(l, "readout.%s.mu_transform.0.weight", keys[0]);
    if (mt0 && !find_fmt(l, "readout.%s._mu", keys[0])) {
        int nlin = 0;
        while (find_fmt(l, "readout.%s.mu_transform.%d.weight", keys[0], 2 * nlin)) nlin++;
        cJSON *g = cJSON_AddObjectToObject(c, "grid_mean_predictor");
        cJSON_AddStringToObject(g, "type", "cortex");
        cJSON_AddNumberToObject(g, "input_dimensions", (double)mt0->shape[1]);
        cJSON_AddNumberToObject(g, "hidden_layers", nlin - 1);
        cJSON_AddNumberToObject(g, "hidden_features", (double)mt0->shape[0]);
        cJSON_AddBoolToObject(g, "final_tanh", 1);
    }
    const npred_tensor *s0 = find_fmt(l, "shifter.%s.mlp.0.weight", keys[0]);
    if (s0) {
        int nlin = 0;
        while (find_fmt(l, "shifter.%s.mlp.%d.weight", keys[0], 2 * nlin)) nlin++;
        cJSON_AddBoolToObject(c, "shifter", 1);
        cJSON_AddStringToObject(c, "shifter_type", "MLP");
        cJSON_AddNumberToObject(c, "input_channels_shifter", (double)s0->shape[1]);
        cJSON_AddNumberToObject(c, "hidden_channels_shifter", (double)s0->shape[0]);
        cJSON_AddNumberToObject(c, "shift_layers", nlin);
    } else if (find_fmt(l, "shifter.%s.weight", keys[0])) {
        cJSON_AddBoolToObject(c, "shifter", 1);
        cJSON_AddStringToObject(c, "shifter_type", "StaticAffine");
        cJSON_AddBoolToObject(c, "shifter_bias", find_fmt(l, "shifter.%s.bias", keys[0]) != NULL);
    }
    return c;
}

/* A state_dict of the SENSORIUM 2023 kit's video model (a ConvGRU or a 3D core) is an
 * error that says how to import it. */
static npred_status not_video(const npred_tensor_list *l, const char *where)
{
    const npred_tensor *w0 = npred_tensor_list_find(l, "core.features.layer0.conv.weight");
    int gru = 0;
    for (size_t i = 0; i < l->n && !gru; i++) gru = !strncmp(l->items[i].name, "gru_module.", 11);
    if (gru || (w0 && w0->ndim == 5) || npred_tensor_list_find(l, "core.features.layer0.conv_spatial.weight"))
        return npred_errorf(NPRED_ERR_FORMAT,
                            "%s: a SENSORIUM 2023 video model (%s): import it with its make_video_model arguments "
                            "(npred import --config; npred_video_model_import_pth)", where,
                            gru ? "gru_module.* tensors" : "a 3D core");
    return NPRED_OK;
}

static int session_neurons(const npred_tensor_list *l, const char *key, int multi)
{
    char pre[96];
    snprintf(pre, sizeof pre, multi ? "readout.%s." : "readout.", key);
    const npred_tensor *t;
    if ((t = find_fmt(l, "%sbias", pre)) && t->ndim == 1) return (int)t->shape[0];
    if ((t = find_fmt(l, "%s_features", pre)) && t->ndim == 4) return (int)t->shape[3];
    if ((t = find_fmt(l, "%sfeatures", pre)) && t->ndim == 4) return (int)t->shape[3];
    if ((t = find_fmt(l, "%s_features", pre)) && t->ndim == 2) return (int)t->shape[0];
    if ((t = find_fmt(l, "%ssigma", pre)) && t->ndim == 4) return (int)t->shape[1];
    return 0;
}

npred_status npred_model_import_pth(npred_model **out, const char *pth_path, const char *config_json, int in_h,
                                    int in_w, int max_batch)
{
    *out = NULL;
    npred_tensor_list l;
    npred_status st = npred_pth_read(pth_path, &l);
    if (st) return st;
    st = npred_model_import_tensors(out, &l, pth_path, config_json, in_h, in_w, max_batch);
    npred_tensor_list_free(&l);
    return st;
}

npred_status npred_model_import_tensors(npred_model **out, const npred_tensor_list *list, const char *pth_path,
                                        const char *config_json, int in_h, int in_w, int max_batch)
{
    *out = NULL;
    const npred_tensor_list l = *list; /* read only: the caller owns and frees it */
    npred_status st = NPRED_OK;
    if (in_h <= 0 || in_w <= 0) {
        in_h = 36;
        in_w = 64;
    }
    char keys[64][64];
    int n_keys = 0;
    npred_model_config mc;
    cJSON *inferred = NULL;
    if ((st = not_video(&l, pth_path))) return st;
    if (config_json) {
        st = npred_model_config_parse(&mc, config_json, "import config");
    } else {
        inferred = infer_config(&l, pth_path, keys, &n_keys, 64);
        st = inferred ? npred_model_config_from_cjson(&mc, inferred, "inferred config") : NPRED_ERR_FORMAT;
        cJSON_Delete(inferred);
    }
    if (!st && config_json) { /* sessions from the keys */
        if (!mc.multi_readout) {
            n_keys = 1;
            keys[0][0] = 0;
        } else {
            cJSON *dummy = infer_config(&l, pth_path, keys, &n_keys, 64);
            cJSON_Delete(dummy);
            npred_clear_error();
            if (!n_keys) st = npred_errorf(NPRED_ERR_FORMAT, "%s: no readout.<data_key>.* tensors", pth_path);
        }
    }
    const npred_tensor *w0 = npred_tensor_list_find(&l, "core.features.layer0.conv.weight");
    const npred_tensor *c0 = npred_tensor_list_find(&l, "core.features.layer0.hermite_conv.coeffs");
    int in_c = w0 && w0->ndim == 4 ? (int)w0->shape[1] : c0 && c0->ndim == 3 ? (int)c0->shape[1] : 0;
    if (!st && !in_c)
        st = npred_errorf(NPRED_ERR_FORMAT,
                          "%s: no core.features.layer0.conv.weight (4-d) or .hermite_conv.coeffs (3-d)", pth_path);
    npred_model_session ses[64];
    for (int i = 0; !st && i < n_keys; i++) {
        ses[i] = (npred_model_session){keys[i], session_neurons(&l, keys[i], mc.multi_readout), NULL, 0, NULL, NULL};
        if (ses[i].n_neurons < 1) st = npred_errorf(NPRED_ERR_FORMAT, "%s: cannot tell the neurons of readout %s", pth_path, keys[i]);
    }
    npred_model *m = NULL;
    if (!st) st = npred_model_build(&m, &mc, in_c, in_h, in_w, ses, n_keys, max_batch);
    if (!st) st = npred_list_to_ptable(&m->t, &l, pth_path, 1);
    if (st) {
        npred_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

/* ---- description ---- */

typedef struct {
    char *buf;
    size_t n, k;
} sb;

static void put(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sb *s, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int w = vsnprintf(s->buf + s->k, s->n - s->k, fmt, ap);
        va_end(ap);
        if (w < 0) return;
        if ((size_t)w < s->n - s->k) {
            s->k += (size_t)w;
            return;
        }
        size_t nn = s->n * 2 + (size_t)w;
        char *b = realloc(s->buf, nn);
        if (!b) return;
        s->buf = b;
        s->n = nn;
    }
}

static void count_str(char *buf, size_t n, size_t c)
{
    snprintf(buf, n, "%.3fM", (double)c / 1e6);
}

char *npred_model_describe(const npred_model *m)
{
    sb s = {malloc(4096), 4096, 0};
    if (!s.buf) return NULL;
    s.buf[0] = 0;
    char *core = malloc(1 << 16);
    npred_core_repr(&m->core, core, 1 << 16);
    size_t core_n = npred_ptable_count(&m->t, "core."), tot = npred_ptable_count(&m->t, NULL);
    char a[32];
    put(&s, "%s", core);
    count_str(a, sizeof a, core_n);
    put(&s, "core: %zu parameters (%s); input (%d, %d, %d) -> output (%d, %d, %d)\n", core_n, a, m->in_c, m->in_h,
        m->in_w, m->core.out_c, m->core.out_h, m->core.out_w);
    char conv[256];
    npred_core_bn_convention(&m->core, conv, sizeof conv);
    put(&s, "core convention: %s\n", conv);
    for (int i = 0; i < m->n_sessions; i++) {
        const npred_session *se = &m->s[i];
        char repr[4096], pre[128];
        npred_readout_repr(&se->ro, repr, sizeof repr);
        size_t rn = npred_ptable_count(&m->t, se->ro.prefix);
        count_str(a, sizeof a, rn);
        put(&s, "readout %s: %s%s  %zu parameters (%s), %zu per neuron; output (B, %d)\n", se->key, repr,
            repr[0] && repr[strlen(repr) - 1] == '\n' ? "" : "\n", rn, a, rn / (size_t)se->n, se->n);
        if (se->has_shifter) {
            snprintf(pre, sizeof pre, "shifter.%s.", se->key);
            put(&s, "shifter %s: %s, %zu parameters; input pupil_center (B, %d)\n", se->key,
                m->cfg.shifter == NPRED_SHIFTER_MLP ? "MLP" : "StaticAffine2d", npred_ptable_count(&m->t, pre),
                m->cfg.shifter_input_channels);
        }
        if (se->has_modulator) {
            snprintf(pre, sizeof pre, "modulator.%s.", se->key);
            put(&s, "modulator %s: MLP, %zu parameters; input behavior (B, %d)\n", se->key,
                npred_ptable_count(&m->t, pre), m->cfg.modulator_input_channels);
        }
        put(&s, "session %s: images (B, %d, %d, %d)", se->key, m->in_c, m->in_h, m->in_w);
        if (se->has_shifter) put(&s, ", pupil_center (B, %d)", m->cfg.shifter_input_channels);
        if (se->has_modulator) put(&s, ", behavior (B, %d)", m->cfg.modulator_input_channels);
        put(&s, " -> rates (B, %d)\n", se->n);
    }
    char off[32];
    npred_pyfloat(off, sizeof off, m->cfg.elu_offset);
    count_str(a, sizeof a, tot);
    put(&s, "output: ELU(x + %s) + 1\ntotal: %zu parameters (%s)\n", off, tot, a);
    free(core);
    return s.buf;
}

npred_status npred_model_readout_positions(npred_model *m, int i, float *xy)
{
    if (i < 0 || i >= m->n_sessions) return npred_errorf(NPRED_ERR_ARG, "session index %d", i);
    npred_session *s = &m->s[i];
    if (s->ro.cfg.type != NPRED_READOUT_FULL_GAUSSIAN2D && s->ro.cfg.type != NPRED_READOUT_GAUSSIAN2D)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "readout %s has no positions", s->key);
    npred_status cs = npred_model_check_allocated(m, "readout positions");
    if (cs) return cs;
    size_t img = (size_t)m->in_c * m->in_h * m->in_w;
    float *zeros = calloc(img, sizeof(float)), *pupil = calloc(2, sizeof(float));
    float *beh = calloc((size_t)(m->cfg.modulator_input_channels + 1), sizeof(float));
    float *outv = malloc(sizeof(float) * (size_t)s->n);
    npred_status st = zeros && pupil && beh && outv ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (!st) st = npred_model_forward(m, i, zeros, pupil, beh, 1, 0, NULL, NULL, outv);
    if (!st) npred_gaussian_sampled_grid(&s->ro, xy);
    free(zeros);
    free(pupil);
    free(beh);
    free(outv);
    return st;
}

npred_status npred_model_copy_parameters(npred_model *dst, const npred_model *src, const char *prefix, int *n_copied)
{
    npred_status cs = npred_model_check_allocated(dst, "copy parameters");
    if (!cs) cs = npred_model_check_allocated(src, "copy parameters");
    if (cs) return cs;
    int n = 0;
    size_t pl = prefix ? strlen(prefix) : 0;
    for (int i = 0; i < dst->t.n; i++) {
        const npred_param *p = &dst->t.items[i];
        if (p->alias_of >= 0 || (prefix && strncmp(p->name, prefix, pl))) continue;
        int j = npred_ptable_find(&src->t, p->name);
        if (j < 0) continue;
        const npred_param *q = &src->t.items[j];
        int same = q->ndim == p->ndim && q->count == p->count;
        for (int d = 0; same && d < p->ndim; d++) same = q->shape[d] == p->shape[d];
        if (!same)
            return npred_errorf(NPRED_ERR_SHAPE, "'%s' has %zu elements in the source model and %zu here", p->name,
                                q->count, p->count);
        memcpy(npred_ptable_ptr(&dst->t, i), npred_ptable_ptr(&src->t, j), p->count * sizeof(float));
        n++;
    }
    if (n_copied) *n_copied = n;
    return NPRED_OK;
}

npred_status npred_model_open(npred_model **out, const char *path, int in_h, int in_w, int max_batch)
{
    size_t n = strlen(path);
    if ((n > 4 && !strcmp(path + n - 4, ".pth")) || (n > 3 && !strcmp(path + n - 3, ".pt")))
        return npred_model_import_pth(out, path, NULL, in_h, in_w, max_batch);
    return npred_model_load(out, path, max_batch);
}
