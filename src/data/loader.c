/* loader: static_loaders options, transform pipeline, batching (see loader.h). */
#include "data/loader.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/json.h"
#include "data/filetree.h"
#include "data/transforms.h"

/* ------------------------------------------------------------------ config */

static void strlist_free(npred_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void i64list_free(npred_i64list *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

void npred_loader_config_init(npred_loader_config *c)
{
    memset(c, 0, sizeof *c);
    c->cuda = 1;
    c->normalize = 1;
    c->add_behavior_as_channels = 1;
    c->file_tree = 1;
    c->overwrite_data_path = 1;
}

void npred_loader_config_free(npred_loader_config *c)
{
    strlist_free(&c->areas);
    strlist_free(&c->layers);
    free(c->tier);
    for (size_t i = 0; i < c->n_neuron_ids; i++) i64list_free(&c->neuron_ids[i]);
    free(c->neuron_ids);
    for (size_t i = 0; i < c->n_image_ids; i++) i64list_free(&c->image_ids[i]);
    free(c->image_ids);
    strlist_free(&c->exclude);
    i64list_free(&c->select_input_channel);
    strlist_free(&c->image_condition);
    strlist_free(&c->include_trial_info_keys);
    npred_loader_config_init(c);
}

void npred_loader_paths_free(char **paths, size_t n)
{
    if (!paths) return;
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

#define ANY NPRED_JSON_ANY

void npred_loader_strlist_free(npred_strlist *l) { strlist_free(l); }

static int nomem(npred_json_reader *r)
{
    if (!r->st) r->st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    return 0;
}

/* integer or null (unset) */
int npred_loader_read_opt_i64(npred_json_reader *r, const cJSON *v, npred_opt_i64 *out)
{
    int got = npred_json_i64_or_null(r, v, -ANY, ANY, &out->v);
    if (got) out->set = got == 1;
    return got;
}

/* number or null (unset) */
int npred_loader_read_opt_num(npred_json_reader *r, const cJSON *v, double lo, npred_opt_f64 *out)
{
    int got = npred_json_num_or_null(r, v, lo, ANY, &out->v);
    if (got) out->set = got == 1;
    return got;
}

/* true/false, or null as Python's falsy None */
int npred_loader_read_flag(npred_json_reader *r, const cJSON *v, int *out)
{
    int got = npred_json_bool_or_null(r, v, out);
    if (got == 2) *out = 0;
    return got;
}

/* null, a string (one element) or a list of strings */
int npred_loader_read_strlist(npred_json_reader *r, const cJSON *v, npred_strlist *out, int *was_string)
{
    strlist_free(out);
    if (was_string) *was_string = 0;
    if (cJSON_IsNull(v)) return 1;
    if (cJSON_IsString(v)) {
        out->v = malloc(sizeof *out->v);
        if (!out->v || !(out->v[0] = dupstr(v->valuestring))) return nomem(r);
        out->n = 1;
        out->set = 1;
        if (was_string) *was_string = 1;
        return 1;
    }
    if (!cJSON_IsArray(v)) return npred_json_fail(r, v, "a string, a list of strings or null");
    int n = cJSON_GetArraySize(v);
    out->set = 1;
    out->v = npred_calloc(n ? (size_t)n : 1, sizeof *out->v);
    if (!out->v) return nomem(r);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsString(e)) return npred_json_fail(r, v, "a list of strings (item %d is not a string)", i);
        if (!(out->v[out->n] = dupstr(e->valuestring))) return nomem(r);
        out->n++;
    }
    return 1;
}

/* null, an integer (one element) or a list of integers */
static int read_i64list(npred_json_reader *r, const cJSON *v, npred_i64list *out)
{
    i64list_free(out);
    if (cJSON_IsNull(v)) return 1;
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (!cJSON_IsArray(v) && !npred_json_is_integer(v))
        return npred_json_fail(r, v, "an integer, a list of integers or null");
    out->set = 1;
    out->v = npred_calloc(n ? (size_t)n : 1, sizeof *out->v);
    if (!out->v) return nomem(r);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : v;
        if (!npred_json_is_integer(e)) return npred_json_fail(r, v, "a list of integers (item %d is not an integer)", i);
        out->v[out->n++] = (int64_t)e->valuedouble;
    }
    return 1;
}

/* per-path lists: [[ids of path 0], null, ...] */
static int read_perpath(npred_json_reader *r, const cJSON *v, npred_i64list **out, size_t *n_out)
{
    for (size_t i = 0; i < *n_out; i++) i64list_free(&(*out)[i]);
    free(*out);
    *out = NULL;
    *n_out = 0;
    if (cJSON_IsNull(v)) return 1;
    if (!cJSON_IsArray(v)) return npred_json_fail(r, v, "a list with one list of ids (or null) per path, or null");
    int n = cJSON_GetArraySize(v);
    *out = npred_calloc(n ? (size_t)n : 1, sizeof **out);
    if (!*out) return nomem(r);
    *n_out = (size_t)n;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNull(e) && !cJSON_IsArray(e))
            return npred_json_fail(r, v, "a list with one list of ids (or null) per path (item %d is neither)", i);
        if (!read_i64list(r, e, &(*out)[i])) return 0;
    }
    return 1;
}

npred_status npred_loader_config_set_json(npred_loader_config *c, const cJSON *obj, const char *where, char ***paths,
                                          size_t *n_paths)
{
    npred_json_reader r = {where ? where : "loader config", "", NPRED_OK};
    if (!cJSON_IsObject(obj)) return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r.where);
    if (!npred_json_unique_keys(&r, obj)) return r.st;
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *k = v->string;
        if (!strcmp(k, "batch_size")) npred_json_i64(&r, v, 1, ANY, &c->batch_size);
        else if (!strcmp(k, "seed")) npred_loader_read_opt_i64(&r, v, &c->seed);
        else if (!strcmp(k, "areas")) npred_loader_read_strlist(&r, v, &c->areas, NULL);
        else if (!strcmp(k, "layers")) npred_loader_read_strlist(&r, v, &c->layers, NULL);
        else if (!strcmp(k, "tier")) {
            const char *name = NULL;
            free(c->tier);
            c->tier = NULL;
            npred_tier t;
            npred_status s;
            if (npred_json_str_or_null(&r, v, &name) == 1) {
                if ((s = npred_tier_parse(name, &t))) r.st = npred_error_prefix(s, "%s: key 'tier'", r.where);
                else if (!(c->tier = dupstr(name))) nomem(&r);
            }
        } else if (!strcmp(k, "neuron_ids")) read_perpath(&r, v, &c->neuron_ids, &c->n_neuron_ids);
        else if (!strcmp(k, "neuron_n")) npred_loader_read_opt_i64(&r, v, &c->neuron_n);
        else if (!strcmp(k, "exclude_neuron_n")) npred_json_i64(&r, v, -ANY, ANY, &c->exclude_neuron_n);
        else if (!strcmp(k, "neuron_base_seed")) npred_loader_read_opt_i64(&r, v, &c->neuron_base_seed);
        else if (!strcmp(k, "image_ids")) read_perpath(&r, v, &c->image_ids, &c->n_image_ids);
        else if (!strcmp(k, "image_n")) npred_loader_read_opt_i64(&r, v, &c->image_n);
        else if (!strcmp(k, "image_base_seed")) npred_loader_read_opt_i64(&r, v, &c->image_base_seed);
        else if (!strcmp(k, "cuda")) npred_loader_read_flag(&r, v, &c->cuda);
        else if (!strcmp(k, "normalize")) npred_loader_read_flag(&r, v, &c->normalize);
        else if (!strcmp(k, "exclude")) npred_loader_read_strlist(&r, v, &c->exclude, &c->exclude_is_string);
        else if (!strcmp(k, "include_behavior")) npred_loader_read_flag(&r, v, &c->include_behavior);
        else if (!strcmp(k, "add_behavior_as_channels")) npred_loader_read_flag(&r, v, &c->add_behavior_as_channels);
        else if (!strcmp(k, "select_input_channel")) {
            if (cJSON_IsBool(v)) npred_json_fail(&r, v, "a channel index (not a boolean), a list of them or null");
            else read_i64list(&r, v, &c->select_input_channel);
        } else if (!strcmp(k, "file_tree")) npred_loader_read_flag(&r, v, &c->file_tree);
        else if (!strcmp(k, "image_condition")) npred_loader_read_strlist(&r, v, &c->image_condition, NULL);
        else if (!strcmp(k, "inputs_mean")) npred_loader_read_opt_num(&r, v, -ANY, &c->inputs_mean);
        else if (!strcmp(k, "inputs_std")) npred_loader_read_opt_num(&r, v, -ANY, &c->inputs_std);
        else if (!strcmp(k, "scale")) {
            if (npred_loader_read_opt_num(&r, v, 0, &c->scale) == 1 && !(c->scale.v > 0)) npred_json_fail(&r, v, "a number > 0 or null");
        } else if (!strcmp(k, "include_eye_position")) npred_loader_read_flag(&r, v, &c->include_eye_position);
        else if (!strcmp(k, "add_eye_pos_as_channels")) npred_loader_read_flag(&r, v, &c->add_eye_pos_as_channels);
        else if (!strcmp(k, "include_trial_info_keys")) npred_loader_read_strlist(&r, v, &c->include_trial_info_keys, NULL);
        else if (!strcmp(k, "overwrite_data_path")) npred_loader_read_flag(&r, v, &c->overwrite_data_path);
        else if (!strcmp(k, "trial_idx_selection")) { /* accepted and unused, as in sensorium */ }
        else if (!strcmp(k, "include_px_position") || !strcmp(k, "image_reshape_list")) {
            if (!cJSON_IsNull(v) && !(cJSON_IsBool(v) && !cJSON_IsTrue(v) && !strcmp(k, "include_px_position")))
                npred_json_fail(&r, v, "null: the transform is not supported (sensorium never imports it)");
        } else if (!strcmp(k, "paths") && paths) {
            npred_strlist l = {0};
            if (!cJSON_IsArray(v)) npred_json_fail(&r, v, "a list of strings");
            else if (npred_loader_read_strlist(&r, v, &l, NULL)) {
                npred_loader_paths_free(*paths, *n_paths);
                *paths = l.v;
                *n_paths = l.n;
            } else strlist_free(&l);
        } else {
            npred_json_unknown(&r, v, "not a static_loaders argument");
        }
        if (r.st) return r.st;
    }
    return NPRED_OK;
}

/* ---- the resolved options as JSON (read back by npred_loader_config_set_json) */
static cJSON *strlist_to_json(const npred_strlist *l)
{
    if (!l->set) return cJSON_CreateNull();
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < l->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l->v[i]));
    return a;
}

static cJSON *i64list_to_json(const npred_i64list *l)
{
    if (!l->set) return cJSON_CreateNull();
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < l->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)l->v[i]));
    return a;
}

/* one list (or null) per path; null when the option is not given */
static cJSON *perpath_to_json(const npred_i64list *l, size_t n)
{
    if (!l) return cJSON_CreateNull();
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, i64list_to_json(&l[i]));
    return a;
}

static cJSON *opt_i64_to_json(npred_opt_i64 v) { return v.set ? cJSON_CreateNumber((double)v.v) : cJSON_CreateNull(); }
static cJSON *opt_f64_to_json(npred_opt_f64 v) { return v.set ? cJSON_CreateNumber(v.v) : cJSON_CreateNull(); }

char *npred_loader_config_json(const npred_loader_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        if (c->batch_size) cJSON_AddNumberToObject(o, "batch_size", (double)c->batch_size); /* 0: not set */
        cJSON_AddItemToObject(o, "seed", opt_i64_to_json(c->seed));
        cJSON_AddItemToObject(o, "areas", strlist_to_json(&c->areas));
        cJSON_AddItemToObject(o, "layers", strlist_to_json(&c->layers));
        if (c->tier) cJSON_AddStringToObject(o, "tier", c->tier);
        else cJSON_AddNullToObject(o, "tier");
        cJSON_AddItemToObject(o, "neuron_ids", perpath_to_json(c->neuron_ids, c->n_neuron_ids));
        cJSON_AddItemToObject(o, "neuron_n", opt_i64_to_json(c->neuron_n));
        cJSON_AddNumberToObject(o, "exclude_neuron_n", (double)c->exclude_neuron_n);
        cJSON_AddItemToObject(o, "neuron_base_seed", opt_i64_to_json(c->neuron_base_seed));
        cJSON_AddItemToObject(o, "image_ids", perpath_to_json(c->image_ids, c->n_image_ids));
        cJSON_AddItemToObject(o, "image_n", opt_i64_to_json(c->image_n));
        cJSON_AddItemToObject(o, "image_base_seed", opt_i64_to_json(c->image_base_seed));
        cJSON_AddBoolToObject(o, "cuda", c->cuda);
        cJSON_AddBoolToObject(o, "normalize", c->normalize);
        /* exclude keeps its spelling: a string is one key, as a one-element list */
        if (c->exclude_is_string && c->exclude.set && c->exclude.n == 1)
            cJSON_AddStringToObject(o, "exclude", c->exclude.v[0]);
        else cJSON_AddItemToObject(o, "exclude", strlist_to_json(&c->exclude));
        cJSON_AddBoolToObject(o, "include_behavior", c->include_behavior);
        cJSON_AddBoolToObject(o, "add_behavior_as_channels", c->add_behavior_as_channels);
        cJSON_AddItemToObject(o, "select_input_channel", i64list_to_json(&c->select_input_channel));
        cJSON_AddBoolToObject(o, "file_tree", c->file_tree);
        cJSON_AddItemToObject(o, "image_condition", strlist_to_json(&c->image_condition));
        cJSON_AddItemToObject(o, "inputs_mean", opt_f64_to_json(c->inputs_mean));
        cJSON_AddItemToObject(o, "inputs_std", opt_f64_to_json(c->inputs_std));
        cJSON_AddItemToObject(o, "scale", opt_f64_to_json(c->scale));
        cJSON_AddBoolToObject(o, "include_eye_position", c->include_eye_position);
        cJSON_AddBoolToObject(o, "add_eye_pos_as_channels", c->add_eye_pos_as_channels);
        cJSON_AddItemToObject(o, "include_trial_info_keys", strlist_to_json(&c->include_trial_info_keys));
        cJSON_AddBoolToObject(o, "overwrite_data_path", c->overwrite_data_path);
    }
    char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!txt) npred_errorf(NPRED_ERR_NOMEM, "loader config: out of memory");
    return txt;
}

npred_status npred_loader_config_parse(npred_loader_config *c, const char *json, char ***paths, size_t *n_paths)
{
    const char *at = NULL;
    cJSON *obj = cJSON_ParseWithOpts(json, &at, 1);
    if (!obj) return npred_errorf(NPRED_ERR_CONFIG, "loader config: invalid JSON near '%.20s'", at ? at : "");
    npred_status s = npred_loader_config_set_json(c, obj, NULL, paths, n_paths);
    cJSON_Delete(obj);
    return s;
}

/* ------------------------------------------------------------------ sessions */

typedef struct {
    npred_dataset *ds;
    npred_dataset_info di;
    int64_t n_sel;
    int64_t *sel;             /* (n_sel,) neuron rows */
    int64_t *unit_ids;        /* (n_sel,) */
    double *coords;           /* (n_sel, 3) or NULL */
    /* normalizer */
    int norm_img, norm_resp, norm_beh, norm_eye;
    float in_mean, in_std, resp_thr;
    float *resp_prec, *beh_prec, *eye_mean, *eye_std;
    /* pipeline */
    int C0, H, W;             /* raw image */
    int add_beh, add_eye;     /* planes appended */
    int C1;                   /* after the planes */
    int C2;                   /* after channel selection */
    int Ho, Wo;
    int scale;                /* ScaleInputs present */
    double scale_v;           /* its scale */
    npred_resample_plan ph, pw;
    int beh_dim, eye_dim;     /* in the batch (0 if not) */
    float **info;             /* per trial-info key: (N,) values, normalized where the rule says */
    /* the images, read once at open: (N, C2, Ho, Wo) as the batches carry them when
     * img_ready, else (N, C0, H, W) raw (when the transformed image would be larger,
     * or on request) and transformed per batch */
    float *img;
    size_t img_per;
    int img_ready;
    /* tiers */
    int enabled[NPRED_TIER_COUNT];
    int64_t *tier_idx[NPRED_TIER_COUNT];
    int64_t tier_n[NPRED_TIER_COUNT];
} session;

struct npred_loaders {
    int64_t batch_size;
    size_t n;
    session *s;
    size_t n_info;
    char **info_names;
    int64_t *sel_channels;
    int n_sel_channels;
    /* scratch: per thread two images of max (C1, H, W) */
    int n_threads;
    size_t scratch_len;
    float *scratch;
};

int npred_loader_excluded(const npred_strlist *exclude, int exclude_is_string, const char *field)
{
    if (!exclude->set) return 0;
    if (exclude_is_string) return strstr(exclude->v[0], field) != NULL; /* Python `k in "str"` */
    for (size_t i = 0; i < exclude->n; i++)
        if (!strcmp(exclude->v[i], field)) return 1;
    return 0;
}

static npred_status read_images(const npred_loaders *L, session *S, int keep_raw);

static int excluded(const npred_loader_config *c, const char *field)
{
    return npred_loader_excluded(&c->exclude, c->exclude_is_string, field);
}

static int strlist_has(const npred_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return 1;
    return 0;
}

static npred_status check_config(const npred_loader_config *c, size_t n_paths)
{
    if (c->batch_size <= 0) return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'batch_size' must be set (> 0)");
    if (c->n_neuron_ids > n_paths || c->n_image_ids > n_paths)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: more per-path %s lists than paths (%zu)",
                            c->n_neuron_ids > n_paths ? "'neuron_ids'" : "'image_ids'", n_paths);
    for (size_t p = 0; p < n_paths; p++) {
        int has_ids = p < c->n_image_ids && c->image_ids[p].set;
        if (has_ids && (c->image_n.set || c->image_base_seed.set))
            return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'image_ids' can not be set together with 'image_n' or 'image_base_seed'");
        if (has_ids && c->image_condition.set)
            return npred_errorf(NPRED_ERR_CONFIG, "loader config: either 'image_condition' or 'image_ids' can be given, not both");
        int has_nids = p < c->n_neuron_ids && c->neuron_ids[p].set;
        if (has_nids && (c->neuron_n.set || c->neuron_base_seed.set || c->areas.set || c->layers.set || c->exclude_neuron_n != 0))
            return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'neuron_ids' can not be set together with any other neuron selection "
                                "('neuron_n', 'neuron_base_seed', 'areas', 'layers', 'exclude_neuron_n')");
    }
    if (c->exclude_neuron_n != 0 && !c->neuron_base_seed.set)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'neuron_base_seed' must be set when 'exclude_neuron_n' is not 0");
    if (c->exclude_neuron_n < 0) return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'exclude_neuron_n' must be >= 0");
    if (c->neuron_n.set && c->neuron_n.v < 0) return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'neuron_n' must be >= 0");
    if (c->image_n.set && c->image_n.v < 0) return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'image_n' must be >= 0");
    if (c->neuron_n.set && !c->neuron_base_seed.set && !c->seed.set)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'neuron_n' needs 'neuron_base_seed' or 'seed' (NumPy's global RNG is not reproducible otherwise)");
    if (c->image_n.set && !c->image_base_seed.set && !c->seed.set && !c->image_condition.set)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'image_n' needs 'image_base_seed' or 'seed' (NumPy's global RNG is not reproducible otherwise)");
    if (c->normalize && c->inputs_mean.set && !c->inputs_std.set)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'inputs_mean' needs 'inputs_std' (the reference divides by inputs_std)");
    if (c->add_eye_pos_as_channels && !c->include_eye_position)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: 'add_eye_pos_as_channels' needs 'include_eye_position' (no pupil_center in the batch)");
    if (c->tier) {
        npred_tier t;
        if (npred_tier_parse(c->tier, &t)) return npred_error_prefix(NPRED_ERR_CONFIG, "loader config: 'tier'");
    }
    for (size_t i = 0; i < c->include_trial_info_keys.n; i++) {
        const char *k = c->include_trial_info_keys.v[i];
        if (c->normalize && strcmp(k, "trial_idx") && !excluded(c, k))
            return npred_errorf(NPRED_ERR_CONFIG,
                                "loader config: include_trial_info_keys '%s' has no NeuroNormalizer rule (only trial_idx has one); "
                                "add it to 'exclude' or set normalize false", k);
    }
    return NPRED_OK;
}

static npred_status seed_value(int64_t base, int64_t n, const char *what, uint32_t *out)
{
    int64_t s = base * n;
    if (s < 0 || s > 0xffffffffLL)
        return npred_errorf(NPRED_ERR_CONFIG, "loader config: %s seed %lld is outside 0..2**32-1 (NumPy rejects it)", what,
                            (long long)s);
    *out = (uint32_t)s;
    return NPRED_OK;
}

static npred_status first_match_i64(const int64_t *a, int64_t n, int64_t v, int64_t *idx)
{
    for (int64_t i = 0; i < n; i++)
        if (a[i] == v) {
            *idx = i;
            return NPRED_OK;
        }
    return NPRED_ERR_VALUE;
}

/* np.isin(strings, list) */
static npred_status isin_mask(const npred_array *a, const npred_strlist *l, const char *what, unsigned char *mask)
{
    for (size_t i = 0; i < a->count; i++) {
        char buf[256];
        if (a->dtype == NPRED_DT_STR_U || a->dtype == NPRED_DT_STR_S) {
            npred_status s = npred_array_get_str(a, i, buf, sizeof buf);
            if (s) return npred_error_prefix(s, "meta/neurons/%s.npy", what);
        } else {
            int64_t *v;
            npred_status s = npred_array_to_i64(a, &v);
            if (s) return s;
            snprintf(buf, sizeof buf, "%lld", (long long)v[i]);
            free(v);
        }
        if (!strlist_has(l, buf)) mask[i] = 0;
    }
    return NPRED_OK;
}

static npred_status select_neurons(session *S, const npred_loader_config *c, size_t p)
{
    const npred_dataset *d = S->ds;
    int64_t nn = S->di.n_neurons;
    int64_t *uid;
    npred_status s = npred_array_to_i64(npred_dataset_neuron_info(d, "unit_ids"), &uid);
    if (s) return s;
    const npred_i64list *ids = p < c->n_neuron_ids && c->neuron_ids[p].set ? &c->neuron_ids[p] : NULL;
    int64_t *drawn = NULL;
    int64_t n_ids = 0;
    if (c->neuron_n.set) {
        int64_t total = c->exclude_neuron_n + c->neuron_n.v;
        if (total > nn) {
            free(uid);
            return npred_errorf(NPRED_ERR_CONFIG, "%s: after excluding %lld neurons, there are not %lld neurons left (%lld in total)",
                                S->di.path, (long long)c->exclude_neuron_n, (long long)c->neuron_n.v, (long long)nn);
        }
        uint32_t seed = 0;
        if (c->neuron_base_seed.set) s = seed_value(c->neuron_base_seed.v, c->neuron_n.v, "neuron", &seed);
        else s = seed_value(c->seed.v, 1, "global", &seed);
        int64_t *perm = s ? NULL : malloc((size_t)(nn ? nn : 1) * sizeof *perm);
        drawn = s ? NULL : malloc((size_t)(c->neuron_n.v ? c->neuron_n.v : 1) * sizeof *drawn);
        if (!s && (!perm || !drawn)) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        if (!s) {
            npred_np_random r;
            npred_np_random_seed(&r, seed);
            npred_np_random_permutation(&r, perm, nn);
            for (int64_t i = 0; i < c->neuron_n.v; i++) drawn[i] = uid[perm[c->exclude_neuron_n + i]];
            n_ids = c->neuron_n.v;
        }
        free(perm);
        if (s) {
            free(uid);
            free(drawn);
            return s;
        }
    } else if (ids) {
        n_ids = (int64_t)ids->n;
    }
    if (drawn || ids) {
        const int64_t *want = drawn ? drawn : ids->v;
        S->sel = malloc((size_t)(n_ids ? n_ids : 1) * sizeof *S->sel);
        if (!S->sel) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < n_ids && !s; i++)
            if (first_match_i64(uid, nn, want[i], &S->sel[i]))
                s = npred_errorf(NPRED_ERR_CONFIG, "%s: neuron_ids: unit id %lld is not in meta/neurons/unit_ids.npy",
                                 S->di.path, (long long)want[i]);
        S->n_sel = n_ids;
    } else {
        unsigned char *mask = malloc((size_t)(nn ? nn : 1));
        if (!mask) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        else memset(mask, 1, (size_t)nn);
        if (!s && c->areas.set) s = isin_mask(npred_dataset_neuron_info(d, "area"), &c->areas, "area", mask);
        if (!s && c->layers.set) {
            const npred_array *layer = npred_dataset_neuron_info(d, "layer");
            if (!layer) s = npred_errorf(NPRED_ERR_IO, "%s: meta/neurons/layer.npy: missing (needed by 'layers')", S->di.path);
            else s = isin_mask(layer, &c->layers, "layer", mask);
        }
        if (!s) {
            S->sel = malloc((size_t)(nn ? nn : 1) * sizeof *S->sel);
            if (!S->sel) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (int64_t i = 0; i < nn && !s; i++)
                if (mask[i]) S->sel[S->n_sel++] = i;
        }
        free(mask);
    }
    free(drawn);
    if (!s) {
        S->unit_ids = malloc((size_t)(S->n_sel ? S->n_sel : 1) * sizeof *S->unit_ids);
        if (!S->unit_ids) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < S->n_sel && !s; i++) S->unit_ids[i] = uid[S->sel[i]];
    }
    free(uid);
    const npred_array *cm = npred_dataset_neuron_info(d, "cell_motor_coordinates");
    if (!s && cm && cm->dtype != NPRED_DT_STR_U && cm->dtype != NPRED_DT_STR_S && cm->ndim == 2 && cm->shape[1] == 3) {
        double *all;
        s = npred_array_to_f64(cm, &all);
        if (!s) {
            S->coords = malloc((size_t)(S->n_sel ? S->n_sel : 1) * 3 * sizeof *S->coords);
            if (!S->coords) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (int64_t i = 0; i < S->n_sel && !s; i++) memcpy(S->coords + 3 * i, all + 3 * S->sel[i], 3 * sizeof(double));
            free(all);
        }
    }
    return s;
}

static npred_status need_stat(const session *S, npred_field f, const float *v, const char *stat)
{
    if (v) return NPRED_OK;
    return npred_errorf(NPRED_ERR_IO, "%s: meta/statistics/%s/all/%s.npy: missing (needed by the NeuroNormalizer; "
                        "set normalize false or exclude '%s')", S->di.path, npred_field_name(f), stat, npred_field_name(f));
}

static npred_status setup_normalizer(session *S, const npred_loader_config *c)
{
    if (!c->normalize) return NPRED_OK;
    npred_dataset_stats st;
    npred_status s;
    /* the reference reads these whatever `exclude` says */
    npred_dataset_get_stats(S->ds, NPRED_FIELD_IMAGES, &st);
    if (c->inputs_mean.set) {
        S->in_mean = (float)c->inputs_mean.v;
        S->in_std = (float)c->inputs_std.v;
    } else {
        if ((s = need_stat(S, NPRED_FIELD_IMAGES, st.mean, "mean")) || (s = need_stat(S, NPRED_FIELD_IMAGES, st.std, "std")))
            return s;
        S->in_mean = st.mean[0];
        S->in_std = st.std[0];
    }
    npred_dataset_get_stats(S->ds, NPRED_FIELD_RESPONSES, &st);
    if ((s = need_stat(S, NPRED_FIELD_RESPONSES, st.std, "std"))) return s;
    S->resp_prec = malloc((size_t)S->di.n_neurons * sizeof(float));
    if (!S->resp_prec) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    S->resp_thr = npred_tf_response_precision(S->resp_prec, st.std, (size_t)S->di.n_neurons);
    S->norm_img = !excluded(c, "images");
    S->norm_resp = !excluded(c, "responses");
    if (c->include_behavior) {
        npred_dataset_get_stats(S->ds, NPRED_FIELD_BEHAVIOR, &st);
        if ((s = need_stat(S, NPRED_FIELD_BEHAVIOR, st.std, "std"))) return s;
        S->beh_prec = malloc(st.count * sizeof(float));
        if (!S->beh_prec) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < st.count; i++) S->beh_prec[i] = 1.0f / st.std[i];
        S->norm_beh = !excluded(c, "behavior");
    }
    if (c->include_eye_position) {
        npred_dataset_get_stats(S->ds, NPRED_FIELD_PUPIL_CENTER, &st);
        if ((s = need_stat(S, NPRED_FIELD_PUPIL_CENTER, st.mean, "mean")) ||
            (s = need_stat(S, NPRED_FIELD_PUPIL_CENTER, st.std, "std")))
            return s;
        S->eye_mean = malloc(st.count * sizeof(float));
        S->eye_std = malloc(st.count * sizeof(float));
        if (!S->eye_mean || !S->eye_std) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        memcpy(S->eye_mean, st.mean, st.count * sizeof(float));
        memcpy(S->eye_std, st.std, st.count * sizeof(float));
        S->norm_eye = !excluded(c, "pupil_center");
    }
    return NPRED_OK;
}

static npred_status setup_tiers(session *S, const npred_loader_config *c, size_t p)
{
    const npred_dataset *d = S->ds;
    int64_t N = S->di.n_trials;
    const npred_tier *tiers = npred_dataset_tiers(d);
    const int64_t *img_ids = npred_dataset_image_ids(d);
    npred_status s = NPRED_OK;
    unsigned char *cond = NULL;
    if (c->image_condition.set) {
        const npred_array *cls = npred_dataset_trial_info(d, "frame_image_class");
        cond = malloc((size_t)N);
        if (!cond) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        memset(cond, 1, (size_t)N);
        if ((s = isin_mask(cls, &c->image_condition, "frame_image_class", cond))) {
            free(cond);
            return npred_error_prefix(s, "%s", S->di.path);
        }
    }
    npred_tier only = NPRED_TIER_TRAIN;
    if (c->tier) npred_tier_parse(c->tier, &only);
    const npred_i64list *ids = p < c->n_image_ids && c->image_ids[p].set ? &c->image_ids[p] : NULL;
    for (int t = 0; t < NPRED_TIER_COUNT && !s; t++) {
        S->enabled[t] = !c->tier || (int)only == t;
        if (!S->enabled[t]) continue;
        int64_t *idx = malloc((size_t)N * sizeof *idx + (ids ? ids->n * sizeof *idx : 0) + sizeof *idx);
        if (!idx) {
            s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        S->tier_idx[t] = idx;
        int64_t n = 0;
        if (t == NPRED_TIER_TRAIN && ids && !cond) {
            for (size_t k = 0; k < ids->n && !s; k++) {
                if (first_match_i64(img_ids, N, ids->v[k], &idx[n]))
                    s = npred_errorf(NPRED_ERR_CONFIG, "%s: image_ids: frame_image_id %lld not found", S->di.path,
                                     (long long)ids->v[k]);
                else if (tiers[idx[n]] != NPRED_TIER_TRAIN)
                    s = npred_errorf(NPRED_ERR_CONFIG, "%s: image_ids contain validation or test images (id %lld is in tier %s)",
                                     S->di.path, (long long)ids->v[k], npred_tier_name(tiers[idx[n]]));
                else n++;
            }
        } else if (t == NPRED_TIER_TRAIN && c->image_n.set && !cond) {
            int64_t pool_n = 0;
            for (int64_t i = 0; i < N; i++)
                if (tiers[i] == NPRED_TIER_TRAIN) idx[pool_n++] = i;
            if (c->image_n.v > pool_n) {
                s = npred_errorf(NPRED_ERR_CONFIG, "%s: image_n %lld is larger than the %lld train trials", S->di.path,
                                 (long long)c->image_n.v, (long long)pool_n);
                break;
            }
            uint32_t seed = 0;
            if (c->image_base_seed.set) s = seed_value(c->image_base_seed.v, c->image_n.v, "image", &seed);
            else s = seed_value(c->seed.v, 1, "global", &seed);
            int64_t *perm = s ? NULL : malloc((size_t)(pool_n ? pool_n : 1) * sizeof *perm);
            if (!s && !perm) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            if (!s) {
                npred_np_random r;
                npred_np_random_seed(&r, seed);
                npred_np_random_permutation(&r, perm, pool_n);
                int64_t *pool = malloc((size_t)(pool_n ? pool_n : 1) * sizeof *pool);
                if (!pool) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
                else {
                    memcpy(pool, idx, (size_t)pool_n * sizeof *pool);
                    for (int64_t i = 0; i < c->image_n.v; i++) idx[i] = pool[perm[i]];
                    n = c->image_n.v;
                    free(pool);
                }
            }
            free(perm);
        } else {
            for (int64_t i = 0; i < N; i++)
                if ((int)tiers[i] == t && (!cond || cond[i])) idx[n++] = i;
        }
        S->tier_n[t] = n;
    }
    free(cond);
    return s;
}

static npred_status setup_pipeline(npred_loaders *L, session *S, const npred_loader_config *c)
{
    const npred_dataset_info *di = &S->di;
    S->C0 = di->img_c;
    S->H = di->img_h;
    S->W = di->img_w;
    if (c->include_behavior) {
        if (!di->has_field[NPRED_FIELD_BEHAVIOR])
            return npred_errorf(NPRED_ERR_IO, "%s: data/behavior: folder not found (include_behavior is set)", di->path);
        S->beh_dim = (int)di->field_size[NPRED_FIELD_BEHAVIOR];
        if (c->add_behavior_as_channels) S->add_beh = S->beh_dim;
    }
    if (c->include_eye_position) {
        if (!di->has_field[NPRED_FIELD_PUPIL_CENTER])
            return npred_errorf(NPRED_ERR_IO, "%s: data/pupil_center: folder not found (include_eye_position is set)", di->path);
        S->eye_dim = (int)di->field_size[NPRED_FIELD_PUPIL_CENTER];
        if (c->add_eye_pos_as_channels) S->add_eye = S->eye_dim;
    }
    S->C1 = S->C0 + S->add_beh + S->add_eye;
    S->C2 = S->C1;
    if (c->select_input_channel.set) {
        for (size_t i = 0; i < c->select_input_channel.n; i++) {
            int64_t ch = c->select_input_channel.v[i];
            if (ch < -S->C1 || ch >= S->C1)
                return npred_errorf(NPRED_ERR_CONFIG, "%s: select_input_channel %lld is out of range for %d image channels",
                                    di->path, (long long)ch, S->C1);
        }
        S->C2 = (int)c->select_input_channel.n;
    }
    S->Ho = S->H;
    S->Wo = S->W;
    if (c->scale.set) {
        S->scale = 1;
        S->scale_v = c->scale.v;
        S->Ho = npred_rescale_size(S->H, c->scale.v);
        S->Wo = npred_rescale_size(S->W, c->scale.v);
    }
    npred_status s = npred_resample_plan_init(&S->ph, S->H, S->Ho);
    if (!s) s = npred_resample_plan_init(&S->pw, S->W, S->Wo);
    if (s) return s;
    /* trial info keys: (N,) floats, trial_idx normalized when asked */
    if (L->n_info) {
        S->info = npred_calloc(L->n_info, sizeof *S->info);
        if (!S->info) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < L->n_info; k++) {
        const char *name = L->info_names[k];
        const npred_array *a = npred_dataset_trial_info(S->ds, name);
        if (!a) return npred_errorf(NPRED_ERR_IO, "%s: meta/trials/%s.npy: missing (named in include_trial_info_keys)", di->path, name);
        if (a->dtype == NPRED_DT_STR_U || a->dtype == NPRED_DT_STR_S || a->ndim != 1)
            return npred_errorf(NPRED_ERR_SHAPE, "%s: meta/trials/%s.npy: expected a 1-D numeric array (batches are float32)",
                                di->path, name);
        double *v;
        if ((s = npred_array_to_f64(a, &v))) return s;
        S->info[k] = malloc((size_t)di->n_trials * sizeof(float));
        if (!S->info[k]) {
            free(v);
            return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        }
        int norm = c->normalize && !strcmp(name, "trial_idx") && !excluded(c, name);
        double N = (double)di->n_trials;
        double mean = (N - 1.0) / 2.0, sd = sqrt((N * N - 1.0) / 12.0); /* mean/std of arange(N) */
        for (int64_t i = 0; i < di->n_trials; i++) S->info[k][i] = (float)(norm ? (v[i] - mean) / sd : v[i]);
        free(v);
    }
    size_t need = (size_t)S->C1 * S->H * S->W;
    if (need > L->scratch_len) L->scratch_len = need;
    return NPRED_OK;
}

static void session_free(session *S, size_t n_info)
{
    npred_dataset_free(S->ds);
    free(S->img);
    free(S->sel);
    free(S->unit_ids);
    free(S->coords);
    free(S->resp_prec);
    free(S->beh_prec);
    free(S->eye_mean);
    free(S->eye_std);
    npred_resample_plan_free(&S->ph);
    npred_resample_plan_free(&S->pw);
    if (S->info)
        for (size_t k = 0; k < n_info; k++) free(S->info[k]);
    free(S->info);
    for (int t = 0; t < NPRED_TIER_COUNT; t++) free(S->tier_idx[t]);
}

void npred_loaders_free(npred_loaders *L)
{
    if (!L) return;
    for (size_t i = 0; i < L->n; i++) session_free(&L->s[i], L->n_info);
    free(L->s);
    for (size_t k = 0; k < L->n_info; k++) free(L->info_names[k]);
    free(L->info_names);
    free(L->sel_channels);
    free(L->scratch);
    free(L);
}

npred_status npred_loaders_open(npred_loaders **out, const char *const *paths, size_t n_paths,
                                const npred_loader_config *c)
{
    return npred_loaders_open_mode(out, paths, n_paths, c, 0);
}

npred_status npred_loaders_open_mode(npred_loaders **out, const char *const *paths, size_t n_paths,
                                     const npred_loader_config *c, int keep_raw)
{
    *out = NULL;
    if (n_paths == 0) return npred_errorf(NPRED_ERR_ARG, "loaders: no dataset paths given");
    npred_status s = check_config(c, n_paths);
    if (s) return s;
    npred_loaders *L = npred_calloc(1, sizeof *L);
    if (!L) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    L->batch_size = c->batch_size;
    L->s = npred_calloc(n_paths, sizeof *L->s);
    L->n_info = c->include_trial_info_keys.n;
    L->info_names = npred_calloc(L->n_info ? L->n_info : 1, sizeof *L->info_names);
    if (!L->s || !L->info_names) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < L->n_info && !s; k++)
        if (!(L->info_names[k] = dupstr(c->include_trial_info_keys.v[k]))) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (!s && c->select_input_channel.set) {
        L->n_sel_channels = (int)c->select_input_channel.n;
        L->sel_channels = malloc((c->select_input_channel.n ? c->select_input_channel.n : 1) * sizeof *L->sel_channels);
        if (!L->sel_channels) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        else memcpy(L->sel_channels, c->select_input_channel.v, c->select_input_channel.n * sizeof *L->sel_channels);
    }
    for (size_t p = 0; p < n_paths && !s; p++) {
        session *S = &L->s[p];
        L->n = p + 1;
        if ((s = npred_dataset_open_deferred(&S->ds, paths[p], NULL))) break;
        npred_dataset_get_info(S->ds, &S->di);
        /* file_tree picks FileTreeDataset or StaticImageSet (HDF5) in the reference */
        if (!c->file_tree != !!S->di.is_hdf5)
            s = npred_errorf(NPRED_ERR_CONFIG, "%s: %s, but 'file_tree' is %s (true: a folder or .zip; false: an HDF5 file)",
                             paths[p], S->di.is_hdf5 ? "an HDF5 file" : "a file tree", c->file_tree ? "true" : "false");
        for (size_t q = 0; q < p && !s; q++)
            if (!strcmp(L->s[q].di.data_key, S->di.data_key))
                s = npred_errorf(NPRED_ERR_CONFIG, "%s: data_key '%s' is already used by %s", paths[p], S->di.data_key,
                                 L->s[q].di.path);
        if (!s) s = select_neurons(S, c, p);
        if (!s) s = setup_normalizer(S, c);
        if (!s) s = setup_pipeline(L, S, c);
        if (!s) s = setup_tiers(S, c, p);
        if (!s) s = read_images(L, S, keep_raw);
        if (!s) npred_dataset_get_info(S->ds, &S->di); /* the image range is known now */
    }
    if (!s) {
#ifdef _OPENMP
        L->n_threads = omp_get_max_threads();
#else
        L->n_threads = 1;
#endif
        if (L->n_threads < 1) L->n_threads = 1;
        L->scratch = malloc((size_t)L->n_threads * 2 * L->scratch_len * sizeof(float));
        if (!L->scratch) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory (transform scratch)");
    }
    if (s) {
        npred_loaders_free(L);
        return s;
    }
    *out = L;
    return NPRED_OK;
}

size_t npred_loaders_count(const npred_loaders *L) { return L->n; }

int npred_loaders_images_ready(const npred_loaders *L, size_t s) { return s < L->n && L->s[s].img_ready; }

/* FNV-1a over 64-bit words (bytes for the tail), enough to tell datasets apart */
static uint64_t fp_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t npred_loaders_fingerprint(const npred_loaders *L)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fp_bytes(h, &L->n, sizeof L->n);
    for (size_t i = 0; i < L->n; i++) {
        const session *S = &L->s[i];
        h = fp_bytes(h, S->di.data_key, strlen(S->di.data_key) + 1);
        h = fp_bytes(h, &S->di.n_trials, sizeof S->di.n_trials);
        h = fp_bytes(h, S->img, sizeof(float) * (size_t)S->di.n_trials * S->img_per);
        for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
            const float *x = npred_dataset_field(S->ds, (npred_field)f);
            if (x) h = fp_bytes(h, x, sizeof(float) * (size_t)(S->di.n_trials * S->di.field_size[f]));
            else if (f == NPRED_FIELD_RESPONSES) { /* coded: the same values, the same hash */
                float buf[4096]; /* an even count: every piece but the last is whole 8-byte words */
                size_t total = (size_t)(S->di.n_trials * S->di.field_size[f]);
                for (size_t i = 0; i < total; i += 4096) {
                    size_t k = total - i < 4096 ? total - i : 4096;
                    npred_dataset_read_responses(S->ds, i, k, buf);
                    h = fp_bytes(h, buf, k * sizeof(float));
                }
            }
        }
        h = fp_bytes(h, npred_dataset_tiers(S->ds), sizeof(npred_tier) * (size_t)S->di.n_trials);
        h = fp_bytes(h, S->sel, sizeof(int64_t) * (size_t)S->n_sel);
    }
    return h;
}

void npred_loaders_session(const npred_loaders *L, size_t i, npred_session_info *o)
{
    const session *S = &L->s[i];
    memset(o, 0, sizeof *o);
    o->data_key = S->di.data_key;
    o->dataset = S->ds;
    o->n_neurons = S->n_sel;
    o->neuron_idx = S->sel;
    o->unit_ids = S->unit_ids;
    o->cell_motor_coordinates = S->coords;
    o->img_c = S->C2;
    o->img_h = S->Ho;
    o->img_w = S->Wo;
    o->behavior_dim = S->beh_dim;
    o->pupil_dim = S->eye_dim;
    o->response_precision_threshold = S->resp_thr;
    for (int t = 0; t < NPRED_TIER_COUNT; t++) {
        o->tier_enabled[t] = S->enabled[t];
        o->tier_n[t] = S->tier_n[t];
        o->tier_idx[t] = S->tier_idx[t];
        o->tier_batches[t] = (S->tier_n[t] + L->batch_size - 1) / L->batch_size;
    }
}

int npred_loaders_find(const npred_loaders *L, const char *key)
{
    for (size_t i = 0; i < L->n; i++)
        if (!strcmp(L->s[i].di.data_key, key)) return (int)i;
    return -1;
}

void npred_loaders_normalizer(const npred_loaders *L, size_t i, npred_normalizer_info *o)
{
    const session *S = &L->s[i];
    memset(o, 0, sizeof *o);
    o->active = S->resp_prec != NULL;
    o->inputs_mean = S->in_mean;
    o->inputs_std = S->in_std;
    o->response_precision = S->resp_prec;
    o->behavior_precision = S->beh_prec;
    o->eye_mean = S->eye_mean;
    o->eye_std = S->eye_std;
    o->images = S->norm_img;
    o->responses = S->norm_resp;
    o->behavior = S->norm_beh;
    o->pupil_center = S->norm_eye;
}

void npred_loaders_pipeline(const npred_loaders *L, size_t i, npred_pipeline_info *o)
{
    const session *S = &L->s[i];
    memset(o, 0, sizeof *o);
    o->raw_c = S->C0;
    o->raw_h = S->H;
    o->raw_w = S->W;
    o->behavior_planes = S->add_beh;
    o->pupil_planes = S->add_eye;
    o->n_select = L->sel_channels ? L->n_sel_channels : 0;
    o->select = L->sel_channels;
    o->scaled = S->scale;
    o->scale = S->scale_v;
}

npred_status npred_loaders_inv(const npred_loaders *L, size_t si, npred_field f, const float *x, float *out, int64_t B,
                               int64_t per)
{
    if (!L || si >= L->n || !x || !out || B < 0 || per < 0)
        return npred_errorf(NPRED_ERR_ARG, "normalizer inverse: bad session or arguments");
    const session *S = &L->s[si];
    const int active = S->resp_prec != NULL; /* normalize was on */
    int64_t want = f == NPRED_FIELD_RESPONSES ? S->n_sel : f == NPRED_FIELD_BEHAVIOR ? S->beh_dim
                 : f == NPRED_FIELD_PUPIL_CENTER ? S->eye_dim : per;
    if (f < 0 || f >= NPRED_FIELD_COUNT) return npred_errorf(NPRED_ERR_ARG, "normalizer inverse: unknown field %d", (int)f);
    if (per != want)
        return npred_errorf(NPRED_ERR_SHAPE, "normalizer inverse of %s for session %s: expected %lld values per trial, got %lld",
                            npred_field_name(f), S->di.data_key, (long long)want, (long long)per);
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < per; k++) {
            size_t i = (size_t)(b * per + k);
            float v = x[i];
            switch (f) {
            case NPRED_FIELD_IMAGES: if (active && S->norm_img) v = v * S->in_std + S->in_mean; break;
            case NPRED_FIELD_RESPONSES: if (active && S->norm_resp) v = v / S->resp_prec[S->sel[k]]; break;
            case NPRED_FIELD_BEHAVIOR: if (S->beh_prec && S->norm_beh) v = v / S->beh_prec[k]; break;
            default: if (S->eye_mean && S->norm_eye) v = v * S->eye_std[k] + S->eye_mean[k]; break;
            }
            out[i] = v;
        }
    return NPRED_OK;
}

/* ------------------------------------------------------------------ batches */

npred_status npred_batch_init(npred_batch *b, const npred_loaders *L, int64_t capacity)
{
    memset(b, 0, sizeof *b);
    if (capacity <= 0) capacity = L->batch_size;
    size_t img = 0, resp = 1, beh = 0, eye = 0;
    for (size_t i = 0; i < L->n; i++) {
        const session *S = &L->s[i];
        size_t v = (size_t)S->C2 * S->Ho * S->Wo;
        if (v > img) img = v;
        if ((size_t)S->n_sel > resp) resp = (size_t)S->n_sel;
        if ((size_t)S->beh_dim > beh) beh = (size_t)S->beh_dim;
        if ((size_t)S->eye_dim > eye) eye = (size_t)S->eye_dim;
    }
    size_t B = (size_t)capacity;
    b->capacity = capacity;
    b->images = malloc(B * (img ? img : 1) * sizeof(float));
    b->responses = malloc(B * resp * sizeof(float));
    b->trials = malloc(B * sizeof *b->trials);
    if (beh) b->behavior = malloc(B * beh * sizeof(float));
    if (eye) b->pupil_center = malloc(B * eye * sizeof(float));
    b->n_info = L->n_info;
    b->info_names = (const char *const *)L->info_names;
    if (L->n_info) b->info = npred_calloc(L->n_info, sizeof *b->info);
    int bad = !b->images || !b->responses || !b->trials || (beh && !b->behavior) || (eye && !b->pupil_center) ||
              (L->n_info && !b->info);
    for (size_t k = 0; k < L->n_info && !bad; k++)
        if (!(b->info[k] = malloc(B * sizeof(float)))) bad = 1;
    if (bad) {
        npred_batch_free(b);
        return npred_errorf(NPRED_ERR_NOMEM, "batch: out of memory for %lld trials", (long long)capacity);
    }
    return NPRED_OK;
}

void npred_batch_free(npred_batch *b)
{
    free(b->images);
    free(b->responses);
    free(b->behavior);
    free(b->pupil_center);
    free(b->trials);
    if (b->info)
        for (size_t k = 0; k < b->n_info; k++) free(b->info[k]);
    free(b->info);
    memset(b, 0, sizeof *b);
}

/* The normalized behavior / pupil centre of trial t (beh_dim / eye_dim values). */
static void trial_behavior(const session *S, int64_t t, float *dst)
{
    const float *src = npred_dataset_field(S->ds, NPRED_FIELD_BEHAVIOR) + (size_t)t * S->beh_dim;
    memcpy(dst, src, (size_t)S->beh_dim * sizeof(float));
    if (S->norm_beh) npred_tf_scale_vec(dst, S->beh_prec, (size_t)S->beh_dim);
}

static void trial_eye(const session *S, int64_t t, float *dst)
{
    const float *src = npred_dataset_field(S->ds, NPRED_FIELD_PUPIL_CENTER) + (size_t)t * S->eye_dim;
    memcpy(dst, src, (size_t)S->eye_dim * sizeof(float));
    if (S->norm_eye) npred_tf_zscore_vec(dst, S->eye_mean, S->eye_std, (size_t)S->eye_dim);
}

/* The image pipeline of one trial: raw (C0, H, W) -> out (C2, Ho, Wo), with the
 * trial's normalized behavior / pupil centre for the appended planes; a and bb are
 * scratch of L->scratch_len floats. */
static void transform_image(const npred_loaders *L, const session *S, const float *raw, const float *beh,
                            const float *eye, float *out, float *a, float *bb)
{
    size_t hw = (size_t)S->H * S->W;
    memcpy(a, raw, (size_t)S->C0 * hw * sizeof(float));
    if (S->norm_img) npred_tf_zscore(a, (size_t)S->C0 * hw, S->in_mean, S->in_std);
    int C = S->C0;
    if (S->add_beh) {
        npred_tf_add_planes(a, a, C, S->H, S->W, beh, S->add_beh);
        C += S->add_beh;
    }
    if (S->add_eye) {
        npred_tf_add_planes(a, a, C, S->H, S->W, eye, S->add_eye);
        C += S->add_eye;
    }
    const float *pre = a;
    if (L->sel_channels) {
        npred_tf_select_channels(bb, a, C, (int)hw, L->sel_channels, L->n_sel_channels);
        pre = bb;
    }
    npred_rescale_bilinear(out, pre, L->sel_channels ? L->n_sel_channels : C, &S->ph, &S->pw);
}

/* One sample through the pipeline; a and bb are scratch of L->scratch_len floats. */
static void transform_one(const npred_loaders *L, const session *S, int64_t t, int64_t j, npred_batch *b, float *a, float *bb)
{
    const npred_dataset *d = S->ds;
    float *beh = S->beh_dim ? b->behavior + (size_t)j * S->beh_dim : NULL;
    float *eye = S->eye_dim ? b->pupil_center + (size_t)j * S->eye_dim : NULL;
    if (beh) trial_behavior(S, t, beh);
    if (eye) trial_eye(S, t, eye);
    float *out = b->images + (size_t)j * S->C2 * S->Ho * S->Wo;
    const float *img = S->img + (size_t)t * S->img_per;
    if (S->img_ready) memcpy(out, img, S->img_per * sizeof(float));
    else transform_image(L, S, img, beh, eye, out, a, bb);
    /* responses: normalize all neurons, then Subsample (the order of the reference) */
    float *r = b->responses + (size_t)j * S->n_sel;
    npred_dataset_take_responses(d, t, S->sel, S->n_sel, r);
    if (S->norm_resp)
        for (int64_t k = 0; k < S->n_sel; k++) r[k] *= S->resp_prec[S->sel[k]];
    for (size_t k = 0; k < L->n_info; k++) b->info[k][j] = S->info[k][t];
    b->trials[j] = t;
}

/* ------------------------------------------------------------------ images at open */

typedef struct {
    const npred_loaders *L;
    session *S;
    float *a, *bb;     /* transform scratch */
    float beh[64], eye[64];
    float *beh_big, *eye_big;
} image_sink_ctx;

static npred_status keep_image(void *user, int64_t t, const float *raw)
{
    image_sink_ctx *c = user;
    session *S = c->S;
    float *dst = S->img + (size_t)t * S->img_per;
    if (!S->img_ready) {
        memcpy(dst, raw, S->img_per * sizeof(float));
        return NPRED_OK;
    }
    float *beh = c->beh_big ? c->beh_big : c->beh, *eye = c->eye_big ? c->eye_big : c->eye;
    if (S->beh_dim) trial_behavior(S, t, beh);
    if (S->eye_dim) trial_eye(S, t, eye);
    transform_image(c->L, S, raw, beh, eye, dst, c->a, c->bb);
    return NPRED_OK;
}

/* Read a session's images once: kept as the batches carry them (the transform is
 * a function of the trial alone), or raw when that would take more memory than the
 * raw images or keep_raw asks for it. */
static npred_status read_images(const npred_loaders *L, session *S, int keep_raw)
{
    size_t raw = (size_t)S->C0 * S->H * S->W, ready = (size_t)S->C2 * S->Ho * S->Wo;
    S->img_ready = !keep_raw && ready <= raw;
    S->img_per = S->img_ready ? ready : raw;
    if ((size_t)S->di.n_trials > SIZE_MAX / sizeof(float) / S->img_per)
        return npred_errorf(NPRED_ERR_NOMEM, "%s: %lld images do not fit in memory", S->di.path, (long long)S->di.n_trials);
    S->img = malloc((size_t)S->di.n_trials * S->img_per * sizeof(float));
    image_sink_ctx c = {L, S, NULL, NULL, {0}, {0}, NULL, NULL};
    size_t scratch = (size_t)S->C1 * S->H * S->W;
    if (S->img_ready) c.a = malloc(2 * scratch * sizeof(float));
    if (S->beh_dim > 64) c.beh_big = malloc((size_t)S->beh_dim * sizeof(float));
    if (S->eye_dim > 64) c.eye_big = malloc((size_t)S->eye_dim * sizeof(float));
    npred_status s = NPRED_OK;
    if (!S->img || (S->img_ready && !c.a) || (S->beh_dim > 64 && !c.beh_big) || (S->eye_dim > 64 && !c.eye_big))
        s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory for %lld images of %zu values", S->di.path,
                         (long long)S->di.n_trials, S->img_per);
    if (!s) {
        c.bb = c.a ? c.a + scratch : NULL;
        s = npred_dataset_stream_images(S->ds, keep_image, &c);
    }
    free(c.a);
    free(c.beh_big);
    free(c.eye_big);
    return s;
}

npred_status npred_loaders_get(const npred_loaders *L, size_t si, const int64_t *trials, int64_t n, npred_batch *b)
{
    if (si >= L->n) return npred_errorf(NPRED_ERR_ARG, "loaders: session %zu out of range (%zu sessions)", si, L->n);
    if (n < 0 || n > b->capacity)
        return npred_errorf(NPRED_ERR_ARG, "loaders: %lld trials do not fit a batch of capacity %lld", (long long)n,
                            (long long)b->capacity);
    const session *S = &L->s[si];
    if ((S->beh_dim && !b->behavior) || (S->eye_dim && !b->pupil_center) || b->n_info != L->n_info)
        return npred_errorf(NPRED_ERR_ARG, "loaders: batch was not made by npred_batch_init for these loaders");
    for (int64_t j = 0; j < n; j++)
        if (trials[j] < 0 || trials[j] >= S->di.n_trials)
            return npred_errorf(NPRED_ERR_ARG, "loaders: trial %lld out of range (%s has %lld trials)", (long long)trials[j],
                                S->di.data_key, (long long)S->di.n_trials);
    b->session = (int)si;
    b->data_key = S->di.data_key;
    b->n = n;
    b->c = S->C2;
    b->h = S->Ho;
    b->w = S->Wo;
    b->n_neurons = S->n_sel;
    b->behavior_dim = S->beh_dim;
    b->pupil_dim = S->eye_dim;
    int nt = L->n_threads;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (n > 1)
    for (int64_t j = 0; j < n; j++) {
#ifdef _OPENMP
        int tid = omp_get_thread_num();
#else
        int tid = 0;
#endif
        float *a = L->scratch + (size_t)tid * 2 * L->scratch_len;
        transform_one(L, S, trials[j], j, b, a, a + L->scratch_len);
    }
    return NPRED_OK;
}

/* ------------------------------------------------------------------ iteration */

npred_status npred_loader_iter_begin(npred_loader_iter *it, const npred_loaders *L, size_t si, npred_tier tier,
                                     npred_rng *rng)
{
    memset(it, 0, sizeof *it);
    if (si >= L->n) return npred_errorf(NPRED_ERR_ARG, "loaders: session %zu out of range", si);
    if ((unsigned)tier >= NPRED_TIER_COUNT) return npred_errorf(NPRED_ERR_ARG, "loaders: invalid tier %d", (int)tier);
    const session *S = &L->s[si];
    if (!S->enabled[tier])
        return npred_errorf(NPRED_ERR_CONFIG, "loaders: tier '%s' was not loaded (config tier '%s')", npred_tier_name(tier),
                            npred_tier_name(tier == NPRED_TIER_TRAIN ? NPRED_TIER_VALIDATION : NPRED_TIER_TRAIN));
    if (tier == NPRED_TIER_TRAIN && !rng)
        return npred_errorf(NPRED_ERR_ARG, "loaders: the train tier is shuffled and needs an rng");
    it->L = L;
    it->session = si;
    it->tier = tier;
    it->n = S->tier_n[tier];
    it->order = malloc((size_t)(it->n ? it->n : 1) * sizeof *it->order);
    if (!it->order) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    memcpy(it->order, S->tier_idx[tier], (size_t)it->n * sizeof *it->order);
    if (tier == NPRED_TIER_TRAIN) npred_rng_shuffle(rng, it->order, (size_t)it->n);
    return NPRED_OK;
}

npred_status npred_loader_iter_next(npred_loader_iter *it, npred_batch *b, int *has)
{
    *has = 0;
    if (!it->L || it->pos >= it->n) return NPRED_OK;
    int64_t k = it->n - it->pos;
    if (k > it->L->batch_size) k = it->L->batch_size;
    npred_status s = npred_loaders_get(it->L, it->session, it->order + it->pos, k, b);
    if (s) return s;
    it->pos += k;
    *has = 1;
    return NPRED_OK;
}

void npred_loader_iter_free(npred_loader_iter *it)
{
    free(it->order);
    memset(it, 0, sizeof *it);
}

npred_status npred_cycler_begin(npred_cycler *c, const npred_loaders *L, npred_tier tier, npred_rng *rng)
{
    return npred_cycler_begin_kind(c, L, tier, rng, NPRED_CYCLER_LONG);
}

npred_status npred_cycler_begin_kind(npred_cycler *c, const npred_loaders *L, npred_tier tier, npred_rng *rng,
                                     npred_cycler_kind kind)
{
    memset(c, 0, sizeof *c);
    if (kind != NPRED_CYCLER_LONG && kind != NPRED_CYCLER_SHORT && kind != NPRED_CYCLER_EXHAUST)
        return npred_errorf(NPRED_ERR_ARG, "cycler: unknown kind %d", (int)kind);
    c->L = L;
    c->tier = tier;
    c->rng = rng;
    c->kind = kind;
    c->its = npred_calloc(L->n, sizeof *c->its);
    if (!c->its) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    int64_t sum = 0;
    for (size_t i = 0; i < L->n; i++) {
        npred_status s = npred_loader_iter_begin(&c->its[i], L, i, tier, rng);
        if (s) {
            npred_cycler_free(c);
            return s;
        }
        int64_t nb = (c->its[i].n + L->batch_size - 1) / L->batch_size;
        if (nb > c->max_batches) c->max_batches = nb;
        if (i == 0 || nb < c->min_batches) c->min_batches = nb;
        sum += nb;
    }
    if (kind == NPRED_CYCLER_LONG)
        for (size_t i = 0; i < L->n; i++)
            if (c->its[i].n == 0 && c->max_batches > 0) {
                const char *key = L->s[i].di.data_key;
                npred_cycler_free(c);
                return npred_errorf(NPRED_ERR_VALUE, "cycler: session %s has no %s trials (LongCycler would never end)",
                                    key, npred_tier_name(tier));
            }
    c->total = kind == NPRED_CYCLER_LONG ? (int64_t)L->n * c->max_batches
             : kind == NPRED_CYCLER_SHORT ? (int64_t)L->n * c->min_batches
                                          : sum;
    return NPRED_OK;
}

/* The session of the next step, its iterator positioned on a batch (a cycling
 * session that ran out starts a fresh pass); *si = L->n when nothing is left. */
static npred_status cycler_session(npred_cycler *c, size_t *si)
{
    *si = c->L->n;
    if (c->step >= c->total) return NPRED_OK;
    if (c->kind == NPRED_CYCLER_EXHAUST) {
        while (c->current < c->L->n && c->its[c->current].pos >= c->its[c->current].n) c->current++;
        *si = c->current;
        return NPRED_OK;
    }
    size_t s = (size_t)(c->step % (int64_t)c->L->n);
    npred_loader_iter *it = &c->its[s];
    if (it->pos >= it->n) { /* this session ran out: a fresh pass (new shuffle for train) */
        npred_loader_iter_free(it);
        npred_status st = npred_loader_iter_begin(it, c->L, s, c->tier, c->rng);
        if (st) return st;
        if (it->n == 0) return NPRED_OK;
    }
    *si = s;
    return NPRED_OK;
}

npred_status npred_cycler_next(npred_cycler *c, npred_batch *b, int *has)
{
    *has = 0;
    size_t si;
    npred_status s = cycler_session(c, &si);
    if (s || si >= c->L->n) return s;
    if ((s = npred_loader_iter_next(&c->its[si], b, has))) return s;
    if (*has) c->step++;
    return NPRED_OK;
}

int64_t npred_cycler_len(const npred_cycler *c) { return c->total; }

void npred_cycler_free(npred_cycler *c)
{
    if (c->its)
        for (size_t i = 0; i < c->L->n; i++) npred_loader_iter_free(&c->its[i]);
    free(c->its);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ repeats */

typedef struct { int64_t key, trial; } keyed_trial;

static int cmp_keyed(const void *x, const void *y)
{
    const keyed_trial *a = x, *b = y;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return a->trial < b->trial ? -1 : a->trial > b->trial;
}

npred_status npred_loaders_repeats(const npred_loaders *L, size_t si, npred_tier tier, int64_t **trials,
                                   int64_t **offsets, int64_t *n_groups)
{
    *trials = NULL;
    *offsets = NULL;
    *n_groups = 0;
    if (si >= L->n || (unsigned)tier >= NPRED_TIER_COUNT) return npred_errorf(NPRED_ERR_ARG, "repeats: bad session or tier");
    const session *S = &L->s[si];
    if (!S->enabled[tier]) return npred_errorf(NPRED_ERR_CONFIG, "repeats: tier '%s' was not loaded", npred_tier_name(tier));
    int64_t n = S->tier_n[tier];
    int64_t *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
    if (!t || !off) {
        free(t);
        free(off);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    keyed_trial *kt = malloc((size_t)(n ? n : 1) * sizeof *kt);
    if (!kt) {
        free(t);
        free(off);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    const int64_t *ids = npred_dataset_image_ids(S->ds);
    for (int64_t i = 0; i < n; i++) kt[i] = (keyed_trial){ids[S->tier_idx[tier][i]], S->tier_idx[tier][i]};
    /* sorted by (image id, trial): groups in the sorted-unique order of np.unique */
    qsort(kt, (size_t)n, sizeof *kt, cmp_keyed);
    int64_t g = 0;
    for (int64_t i = 0; i < n; i++) {
        t[i] = kt[i].trial;
        if (i == 0 || kt[i].key != kt[i - 1].key) off[g++] = i;
    }
    free(kt);
    off[g] = n;
    *trials = t;
    *offsets = off;
    *n_groups = g;
    return NPRED_OK;
}

/* ------------------------------------------------------------------ data-parallel part */

npred_status npred_cycler_next_part(npred_cycler *c, npred_batch *b, int *has, int part, int parts,
                                    int64_t *global_n, int64_t *offset)
{
    *has = 0;
    if (parts < 1 || part < 0 || part >= parts)
        return npred_errorf(NPRED_ERR_ARG, "cycler: part %d of %d", part, parts);
    size_t si;
    npred_status st = cycler_session(c, &si);
    if (st || si >= c->L->n) return st;
    npred_loader_iter *it = &c->its[si];
    int64_t k = it->n - it->pos;
    if (k > c->L->batch_size) k = c->L->batch_size;
    const int64_t lo = k * part / parts, hi = k * (part + 1) / parts;
    if (hi > lo) {
        npred_status s = npred_loaders_get(c->L, si, it->order + it->pos + lo, hi - lo, b);
        if (s) return s;
    } else {
        b->session = (int)si;
        b->data_key = c->L->s[si].di.data_key;
        b->n = 0;
        b->n_neurons = c->L->s[si].n_sel;
    }
    it->pos += k;
    c->step++;
    *global_n = k;
    *offset = lo;
    *has = 1;
    return NPRED_OK;
}
