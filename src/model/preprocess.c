/* The preprocessing record of a model and predictions from raw stimuli
 * (include/npred/preprocess.h, docs/results.md). */
#include "npred/preprocess.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/transforms.h"
#include "model/model.h"

#define RESIZE_METHOD "bilinear: skimage.transform.rescale(order=1, mode='reflect', anti_aliasing=False, clip=True)"

/* ------------------------------------------------------------------ record */

static cJSON *f32_array(const float *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v ? v[i] : 1.0));
    return a;
}

static cJSON *shape3(int c, int h, int w)
{
    int v[3] = {c, h, w};
    return cJSON_CreateIntArray(v, 3);
}

npred_status npred_model_record_preprocessing(npred_model *m, const npred_loaders *L)
{
    cJSON *root = cJSON_CreateObject(), *ses = cJSON_AddArrayToObject(root, "sessions");
    cJSON_AddNumberToObject(root, "version", 1);
    npred_pipeline_info pi;
    npred_normalizer_info n0;
    npred_loaders_pipeline(L, 0, &pi);
    npred_loaders_normalizer(L, 0, &n0);
    cJSON_AddBoolToObject(root, "normalize", n0.active);
    cJSON_AddItemToObject(root, "scale", pi.scaled ? cJSON_CreateNumber(pi.scale) : cJSON_CreateNull());
    cJSON_AddStringToObject(root, "resize", RESIZE_METHOD);
    cJSON *sel = pi.n_select ? cJSON_AddArrayToObject(root, "select_input_channel") : NULL;
    for (int i = 0; i < pi.n_select; i++) cJSON_AddItemToArray(sel, cJSON_CreateNumber((double)pi.select[i]));
    if (!pi.n_select) cJSON_AddNullToObject(root, "select_input_channel");
    npred_status st = NPRED_OK;
    int matched = 0;
    for (size_t s = 0; s < npred_loaders_count(L) && !st; s++) {
        npred_session_info si;
        npred_normalizer_info ni;
        npred_dataset_info di;
        npred_loaders_session(L, s, &si);
        npred_loaders_normalizer(L, s, &ni);
        npred_loaders_pipeline(L, s, &pi);
        npred_dataset_get_info(si.dataset, &di);
        int mi = npred_model_session_index(m, si.data_key);
        if (mi < 0) continue;
        if (npred_model_session_neurons(m, mi) != si.n_neurons) {
            st = npred_errorf(NPRED_ERR_SHAPE, "session %s: the loader gives %lld neurons, the model's readout has %d",
                              si.data_key, (long long)si.n_neurons, npred_model_session_neurons(m, mi));
            break;
        }
        matched++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(ses, o);
        cJSON_AddStringToObject(o, "data_key", si.data_key);
        cJSON_AddItemToObject(o, "raw_image_shape", shape3(di.img_c, di.img_h, di.img_w));
        cJSON_AddItemToObject(o, "input_shape", shape3(si.img_c, si.img_h, si.img_w));
        cJSON_AddBoolToObject(o, "normalize_images", ni.images);
        cJSON_AddNumberToObject(o, "inputs_mean", ni.inputs_mean);
        cJSON_AddNumberToObject(o, "inputs_std", ni.inputs_std);
        cJSON *ids = cJSON_AddArrayToObject(o, "unit_ids");
        for (int64_t j = 0; j < si.n_neurons; j++) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)si.unit_ids[j]));
        cJSON_AddBoolToObject(o, "normalize_responses", ni.responses);
        float *prec = malloc(sizeof(float) * (size_t)(si.n_neurons ? si.n_neurons : 1));
        if (!prec) {
            st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        for (int64_t j = 0; j < si.n_neurons; j++)
            prec[j] = ni.responses ? ni.response_precision[si.neuron_idx[j]] : 1.0f;
        cJSON_AddItemToObject(o, "response_precision", f32_array(prec, si.n_neurons));
        free(prec);
        npred_dataset_stats bs, ps;
        npred_dataset_get_stats(si.dataset, NPRED_FIELD_BEHAVIOR, &bs);
        npred_dataset_get_stats(si.dataset, NPRED_FIELD_PUPIL_CENTER, &ps);
        cJSON_AddNumberToObject(o, "behavior_dim", si.behavior_dim);
        cJSON_AddBoolToObject(o, "behavior_as_channels", pi.behavior_planes > 0);
        cJSON_AddBoolToObject(o, "normalize_behavior", si.behavior_dim && ni.behavior);
        cJSON_AddItemToObject(o, "behavior_precision",
                              si.behavior_dim && ni.behavior ? f32_array(ni.behavior_precision, si.behavior_dim) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "behavior_mean", bs.mean && bs.count ? f32_array(bs.mean, (int64_t)bs.count) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "behavior_std", bs.std && bs.count ? f32_array(bs.std, (int64_t)bs.count) : cJSON_CreateNull());
        cJSON_AddNumberToObject(o, "pupil_dim", si.pupil_dim);
        cJSON_AddBoolToObject(o, "pupil_as_channels", pi.pupil_planes > 0);
        cJSON_AddBoolToObject(o, "normalize_pupil", si.pupil_dim && ni.pupil_center);
        cJSON_AddItemToObject(o, "pupil_mean", ps.mean && ps.count ? f32_array(ps.mean, (int64_t)ps.count) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "pupil_std", ps.std && ps.count ? f32_array(ps.std, (int64_t)ps.count) : cJSON_CreateNull());
        if (si.pupil_dim && ni.pupil_center) { /* the values the normalizer uses */
            cJSON_ReplaceItemInObject(o, "pupil_mean", f32_array(ni.eye_mean, si.pupil_dim));
            cJSON_ReplaceItemInObject(o, "pupil_std", f32_array(ni.eye_std, si.pupil_dim));
        }
    }
    if (!st && !matched) st = npred_errorf(NPRED_ERR_ARG, "the data hold no session of the model");
    char *text = st ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (st) return st;
    if (!text) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    st = npred_model_set_preprocessing_json(m, text);
    free(text);
    return st;
}

/* ------------------------------------------------------------------ parsed form */

typedef struct {
    char key[64];
    int c0, h0, w0, c, h, w;
    int norm_img;
    float in_mean, in_std;
    int n;
    int64_t *unit_ids;
    float *prec;
    int beh_dim, add_beh, norm_beh;
    float *beh_prec;
    int eye_dim, add_eye, norm_eye;
    float *eye_mean, *eye_std;
    npred_resample_plan ph, pw;
} pp_session;

typedef struct {
    int n;
    pp_session *s;
    int n_sel;
    int64_t *sel;
} pp;

static void pp_free(void *p)
{
    pp *x = p;
    if (!x) return;
    for (int i = 0; i < x->n; i++) {
        pp_session *s = &x->s[i];
        free(s->unit_ids), free(s->prec), free(s->beh_prec), free(s->eye_mean), free(s->eye_std);
        npred_resample_plan_free(&s->ph);
        npred_resample_plan_free(&s->pw);
    }
    free(x->s);
    free(x->sel);
    free(x);
}

static npred_status get_num(const cJSON *o, const char *k, double *v, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x))
        return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s: '%s' is missing or not a number", key, k);
    *v = x->valuedouble;
    return NPRED_OK;
}

static int get_bool(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

/* a numeric array of n entries as float (n == 0: may be null) */
static npred_status get_f32s(const cJSON *o, const char *k, int n, float **out, const char *key)
{
    *out = NULL;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, k);
    if (n == 0) return NPRED_OK;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
        return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s: '%s' is not a list of %d numbers", key, k, n);
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) {
            free(v);
            return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s: '%s'[%d] is not a finite number", key, k, i);
        }
        v[i++] = (float)e->valuedouble;
    }
    *out = v;
    return NPRED_OK;
}

static npred_status get_shape(const cJSON *o, const char *k, int *c, int *h, int *w, const char *key)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, k);
    int v[3] = {0, 0, 0};
    for (int i = 0; i < 3 && cJSON_GetArraySize(a) == 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        v[i] = cJSON_IsNumber(e) ? e->valueint : 0;
    }
    if (v[0] < 1 || v[1] < 1 || v[2] < 1)
        return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s: '%s' is not a shape [c, h, w]", key, k);
    *c = v[0], *h = v[1], *w = v[2];
    return NPRED_OK;
}

static npred_status parse(pp **out, npred_model *m, const char *text)
{
    *out = NULL;
    cJSON *root = cJSON_Parse(text);
    const cJSON *ses = cJSON_GetObjectItemCaseSensitive(root, "sessions");
    if (!cJSON_IsArray(ses)) {
        cJSON_Delete(root);
        return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: not a JSON object with a 'sessions' list");
    }
    pp *x = calloc(1, sizeof *x);
    int n = cJSON_GetArraySize(ses);
    npred_status st = NPRED_OK;
    if (!x || !(x->s = calloc((size_t)(n ? n : 1), sizeof *x->s))) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    const cJSON *sel = cJSON_GetObjectItemCaseSensitive(root, "select_input_channel");
    if (!st && cJSON_IsArray(sel)) {
        x->n_sel = cJSON_GetArraySize(sel);
        x->sel = malloc(sizeof(int64_t) * (size_t)(x->n_sel + 1));
        if (!x->sel) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int i = 0; !st && i < x->n_sel; i++) x->sel[i] = (int64_t)cJSON_GetArrayItem(sel, i)->valuedouble;
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, ses)
    {
        if (st) break;
        pp_session *s = &x->s[x->n++];
        const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "data_key"));
        if (!key || strlen(key) >= sizeof s->key) {
            st = npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %d has no data_key", x->n - 1);
            break;
        }
        snprintf(s->key, sizeof s->key, "%s", key);
        double mean = 0, sd = 1, bd = 0, pd = 0;
        if ((st = get_shape(o, "raw_image_shape", &s->c0, &s->h0, &s->w0, key)) ||
            (st = get_shape(o, "input_shape", &s->c, &s->h, &s->w, key)) || (st = get_num(o, "inputs_mean", &mean, key)) ||
            (st = get_num(o, "inputs_std", &sd, key)) || (st = get_num(o, "behavior_dim", &bd, key)) ||
            (st = get_num(o, "pupil_dim", &pd, key)))
            break;
        s->in_mean = (float)mean, s->in_std = (float)sd;
        s->norm_img = get_bool(o, "normalize_images");
        s->beh_dim = (int)bd, s->eye_dim = (int)pd;
        s->add_beh = get_bool(o, "behavior_as_channels") ? s->beh_dim : 0;
        s->add_eye = get_bool(o, "pupil_as_channels") ? s->eye_dim : 0;
        s->norm_beh = get_bool(o, "normalize_behavior");
        s->norm_eye = get_bool(o, "normalize_pupil");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "unit_ids");
        s->n = cJSON_GetArraySize(ids);
        int mi = npred_model_session_index(m, key);
        if (mi >= 0 && npred_model_session_neurons(m, mi) != s->n) {
            st = npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s: %d unit_ids for %d neurons", key, s->n,
                              npred_model_session_neurons(m, mi));
            break;
        }
        s->unit_ids = malloc(sizeof(int64_t) * (size_t)(s->n + 1));
        if (!s->unit_ids) {
            st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        int j = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ids) s->unit_ids[j++] = (int64_t)e->valuedouble;
        if ((st = get_f32s(o, "response_precision", s->n, &s->prec, key)) ||
            (st = get_f32s(o, "behavior_precision", s->norm_beh ? s->beh_dim : 0, &s->beh_prec, key)) ||
            (st = get_f32s(o, "pupil_mean", s->norm_eye ? s->eye_dim : 0, &s->eye_mean, key)) ||
            (st = get_f32s(o, "pupil_std", s->norm_eye ? s->eye_dim : 0, &s->eye_std, key)))
            break;
        if ((st = npred_resample_plan_init(&s->ph, s->h0, s->h)) || (st = npred_resample_plan_init(&s->pw, s->w0, s->w))) break;
    }
    cJSON_Delete(root);
    if (st) {
        pp_free(x);
        return st;
    }
    *out = x;
    return NPRED_OK;
}

/* the parsed record (cached on the model) and the entry of key */
static npred_status lookup(npred_model *m, const char *key, pp **px, pp_session **ps)
{
    const char *text = npred_model_preprocessing_json(m);
    if (!text)
        return npred_errorf(NPRED_ERR_CONFIG, "the model records no preprocessing (trained before it was recorded, or "
                            "imported): give the dataset's statistics (npred import --stats DATASET, or --stats)");
    if (!m->pre) {
        pp *x;
        npred_status st = parse(&x, m, text);
        if (st) return st;
        m->pre = x;
        m->pre_free = pp_free;
    }
    pp *x = m->pre;
    for (int i = 0; i < x->n; i++)
        if (!strcmp(x->s[i].key, key)) {
            *px = x;
            *ps = &x->s[i];
            return NPRED_OK;
        }
    return npred_errorf(NPRED_ERR_CONFIG, "the model records no preprocessing for session %s", key);
}

int npred_model_has_preprocessing(npred_model *m, const char *key)
{
    pp *x;
    pp_session *s;
    int ok = lookup(m, key, &x, &s) == NPRED_OK;
    if (!ok) npred_clear_error();
    return ok;
}

npred_status npred_model_raw_inputs(npred_model *m, const char *key, int *c, int *h, int *w, int *behavior_dim,
                                    int *pupil_dim)
{
    pp *x;
    pp_session *s;
    npred_status st = lookup(m, key, &x, &s);
    if (st) return st;
    if (c) *c = s->c0;
    if (h) *h = s->h0;
    if (w) *w = s->w0;
    if (behavior_dim) *behavior_dim = s->beh_dim;
    if (pupil_dim) *pupil_dim = s->eye_dim;
    return NPRED_OK;
}

npred_status npred_model_unit_ids(npred_model *m, const char *key, const int64_t **ids, int *n)
{
    pp *x;
    pp_session *s;
    npred_status st = lookup(m, key, &x, &s);
    if (st) return st;
    *ids = s->unit_ids;
    *n = s->n;
    return NPRED_OK;
}

npred_status npred_model_predict_raw(npred_model *m, const char *key, const float *images, int B, const float *behavior,
                                     const float *pupil_center, float *rates, float *normalized_out)
{
    pp *x;
    pp_session *s;
    npred_status st = lookup(m, key, &x, &s);
    if (st) return st;
    int mi = npred_model_session_index(m, key);
    if (mi < 0) return npred_errorf(NPRED_ERR_ARG, "the model has no session %s", key);
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    int c1 = s->c0 + s->add_beh + s->add_eye, c2 = x->sel ? x->n_sel : c1;
    if (c2 != c || s->h != h || s->w != w || s->c != c)
        return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: session %s gives inputs (%d, %d, %d), the model takes "
                            "(%d, %d, %d)", key, c2, s->h, s->w, c, h, w);
    if (B < 1) return npred_errorf(NPRED_ERR_ARG, "predict_raw: %d images", B);
    if (s->beh_dim && !behavior)
        return npred_errorf(NPRED_ERR_ARG, "session %s: the model needs behavior (B, %d)", key, s->beh_dim);
    if (s->eye_dim && !pupil_center)
        return npred_errorf(NPRED_ERR_ARG, "session %s: the model needs pupil_center (B, %d)", key, s->eye_dim);
    for (int i = 0; x->sel && i < x->n_sel; i++)
        if (x->sel[i] < -c1 || x->sel[i] >= c1)
            return npred_errorf(NPRED_ERR_FORMAT, "npred_preprocessing: select_input_channel %lld out of range", (long long)x->sel[i]);
    size_t hw = (size_t)s->h0 * s->w0, in = (size_t)c * h * w;
    int n = s->n;
    float *a = malloc(sizeof(float) * (size_t)c1 * hw), *bb = malloc(sizeof(float) * (size_t)(c2 > 0 ? c2 : 1) * hw);
    float *imgs = malloc(sizeof(float) * in * (size_t)B);
    float *beh = s->beh_dim ? malloc(sizeof(float) * (size_t)B * s->beh_dim) : NULL;
    float *eye = s->eye_dim ? malloc(sizeof(float) * (size_t)B * s->eye_dim) : NULL;
    float *out = normalized_out ? normalized_out : malloc(sizeof(float) * (size_t)B * n);
    if (!a || !bb || !imgs || (s->beh_dim && !beh) || (s->eye_dim && !eye) || !out) {
        st = npred_errorf(NPRED_ERR_NOMEM, "predict_raw: out of memory for %d images", B);
        goto done;
    }
    /* the loader's per-sample pipeline (src/data/loader.c transform_one) */
    for (int b = 0; b < B; b++) {
        memcpy(a, images + (size_t)b * s->c0 * hw, sizeof(float) * (size_t)s->c0 * hw);
        if (s->norm_img) npred_tf_zscore(a, (size_t)s->c0 * hw, s->in_mean, s->in_std);
        if (s->beh_dim) {
            float *d = beh + (size_t)b * s->beh_dim;
            memcpy(d, behavior + (size_t)b * s->beh_dim, sizeof(float) * (size_t)s->beh_dim);
            if (s->norm_beh) npred_tf_scale_vec(d, s->beh_prec, (size_t)s->beh_dim);
        }
        if (s->eye_dim) {
            float *d = eye + (size_t)b * s->eye_dim;
            memcpy(d, pupil_center + (size_t)b * s->eye_dim, sizeof(float) * (size_t)s->eye_dim);
            if (s->norm_eye) npred_tf_zscore_vec(d, s->eye_mean, s->eye_std, (size_t)s->eye_dim);
        }
        int C = s->c0;
        if (s->add_beh) {
            npred_tf_add_planes(a, a, C, s->h0, s->w0, beh + (size_t)b * s->beh_dim, s->add_beh);
            C += s->add_beh;
        }
        if (s->add_eye) {
            npred_tf_add_planes(a, a, C, s->h0, s->w0, eye + (size_t)b * s->eye_dim, s->add_eye);
            C += s->add_eye;
        }
        const float *pre = a;
        if (x->sel) {
            npred_tf_select_channels(bb, a, C, (int)hw, x->sel, x->n_sel);
            pre = bb;
            C = x->n_sel;
        }
        npred_rescale_bilinear(imgs + (size_t)b * in, pre, C, &s->ph, &s->pw);
    }
    int bc = npred_model_behavior_channels(m);
    st = npred_model_predict(m, key, imgs, B, npred_model_has_shifter(m) ? eye : NULL, bc > 0 ? beh : NULL, out);
    if (!st)
        for (size_t k = 0; k < (size_t)B * n; k++) rates[k] = out[k] / s->prec[k % (size_t)n];
done:
    free(a), free(bb), free(imgs), free(beh), free(eye);
    if (out != normalized_out) free(out);
    return st;
}
