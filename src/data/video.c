/* video: SENSORIUM 2023 movie scans and the kit's mouse_video_loader (npred/video.h).
 *
 * Per sample, in the kit's order (43faede transforms): NeuroNormalizer (per element
 * and per frame statistics) -> Subsample (all neurons) -> CutVideos -> Subsequence
 * (to_cut) -> ExpandChannels -> AddBehaviorAsChannels -> AddPupilCenterAsChannels
 * -> ScaleInputs(channel_axis=-1) -> float32. Trials are read when a batch needs
 * them (serially: one zip handle), then transformed in parallel over samples. */
#include "npred/video.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "data/filetree.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "data/zipfs.h"

static const char *const vfield_names[NPRED_VFIELD_COUNT] = {"videos", "responses", "behavior", "pupil_center"};
static const char *const stat_names[5] = {"mean", "std", "min", "max", "median"};

const char *npred_video_field_name(npred_video_field f)
{
    return (unsigned)f < NPRED_VFIELD_COUNT ? vfield_names[f] : "?";
}

/* ------------------------------------------------------------------ dataset */

typedef struct {
    char *name;
    npred_array a;
} named_array;

struct npred_video_dataset {
    char *path;
    char data_key[512];
    npred_zipfs *fs;
    int is_zip;
    int64_t n, n_neurons;
    int H, W, T;
    int has[NPRED_VFIELD_COUNT], rows[NPRED_VFIELD_COUNT], has_stats[NPRED_VFIELD_COUNT];
    float *stats[NPRED_VFIELD_COUNT][5];
    named_array *neurons;
    size_t n_neuron_arrays;
    const char **neuron_names;
    char **tier_names;
    size_t n_tiers;
    int64_t *tier_count;
    int *tiers;
};

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Read rel as a numeric array of exactly the expected shape, converted to float32. */
static npred_status read_f32_shaped(npred_zipfs *fs, const char *rel, int ndim, const int64_t *shape, float **out,
                                    float *dst)
{
    npred_array a;
    char disp[4096], got[128], want[128];
    npred_status s = npred_filetree_read_npy(fs, rel, &a);
    if (s) return s;
    int ok = a.ndim == ndim && a.dtype != NPRED_DT_STR_U && a.dtype != NPRED_DT_STR_S;
    for (int i = 0; ok && i < ndim; i++) ok = a.shape[i] == shape[i];
    if (!ok) {
        npred_array w = {.ndim = ndim};
        for (int i = 0; i < ndim; i++) w.shape[i] = shape[i];
        npred_filetree_shape_str(&a, got, sizeof got);
        npred_filetree_shape_str(&w, want, sizeof want);
        npred_array_free(&a);
        return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected a numeric array of shape %s",
                            npred_zipfs_display(fs, rel, disp, sizeof disp), got, want);
    }
    float *f;
    s = npred_array_to_f32(&a, &f);
    npred_array_free(&a);
    if (s) return npred_error_prefix(s, "%s", npred_zipfs_display(fs, rel, disp, sizeof disp));
    if (dst) {
        memcpy(dst, f, a.count * sizeof *f);
        free(f);
    } else {
        *out = f;
    }
    return NPRED_OK;
}

/* number of <i>.npy files of a data folder, checked to be 0..N-1 */
static npred_status count_trials(npred_zipfs *fs, const char *dir, int64_t *n_out)
{
    char **names, disp[4096];
    size_t n;
    npred_status s = npred_zipfs_list(fs, dir, &names, &n);
    if (s) return s;
    int64_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (npred_filetree_has_suffix(names[i], ".npy")) count++;
    for (size_t i = 0; i < n && !s; i++) {
        if (!npred_filetree_has_suffix(names[i], ".npy")) continue;
        char *end;
        long long v = strtoll(names[i], &end, 10);
        if (end == names[i] || strcmp(end, ".npy") || v < 0 || v >= count)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: unexpected file '%s' (expected <i>.npy for trials 0..%lld)",
                             npred_zipfs_display(fs, dir, disp, sizeof disp), names[i], (long long)count - 1);
    }
    npred_zipfs_names_free(names, n);
    *n_out = count;
    return s;
}

static void field_shape(const npred_video_dataset *d, int f, int64_t *shape, int *ndim)
{
    if (f == NPRED_VFIELD_VIDEOS) {
        shape[0] = d->H, shape[1] = d->W, shape[2] = d->T, *ndim = 3;
    } else {
        shape[0] = d->rows[f], shape[1] = d->T, *ndim = 2;
    }
}

static npred_status open_fields(npred_video_dataset *d)
{
    char rel[512], disp[4096];
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        snprintf(rel, sizeof rel, "data/%s", vfield_names[f]);
        if (npred_zipfs_kind(d->fs, rel) != 2) {
            if (f <= NPRED_VFIELD_RESPONSES)
                return npred_errorf(NPRED_ERR_IO, "%s: folder not found (a SENSORIUM 2023 scan has data/videos and "
                                    "data/responses)", npred_zipfs_display(d->fs, rel, disp, sizeof disp));
            continue;
        }
        int64_t n;
        npred_status s = count_trials(d->fs, rel, &n);
        if (s) return s;
        if (f == NPRED_VFIELD_VIDEOS) {
            if (n == 0)
                return npred_errorf(NPRED_ERR_FORMAT, "%s: no trials (no <i>.npy files)",
                                    npred_zipfs_display(d->fs, rel, disp, sizeof disp));
            d->n = n;
        } else if (n != d->n) {
            return npred_errorf(NPRED_ERR_SHAPE, "%s: %lld trials, expected %lld as in data/videos",
                                npred_zipfs_display(d->fs, rel, disp, sizeof disp), (long long)n, (long long)d->n);
        }
        /* the shape of trial 0 fixes the field's shape */
        snprintf(rel, sizeof rel, "data/%s/0.npy", vfield_names[f]);
        npred_array a;
        if ((s = npred_filetree_read_npy(d->fs, rel, &a))) return s;
        int want = f == NPRED_VFIELD_VIDEOS ? 3 : 2;
        int ok = a.ndim == want && a.dtype != NPRED_DT_STR_U && a.dtype != NPRED_DT_STR_S;
        for (int i = 0; ok && i < a.ndim; i++) ok = a.shape[i] > 0 && a.shape[i] <= (1 << 24);
        if (ok && f == NPRED_VFIELD_VIDEOS) d->H = (int)a.shape[0], d->W = (int)a.shape[1], d->T = (int)a.shape[2];
        if (ok && f != NPRED_VFIELD_VIDEOS && a.shape[1] != d->T) ok = 0;
        if (ok) d->rows[f] = f == NPRED_VFIELD_VIDEOS ? d->H * d->W : (int)a.shape[0];
        char got[128];
        npred_filetree_shape_str(&a, got, sizeof got);
        npred_array_free(&a);
        if (!ok)
            return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected a numeric array %s",
                                npred_zipfs_display(d->fs, rel, disp, sizeof disp), got,
                                f == NPRED_VFIELD_VIDEOS ? "(height, width, frames)"
                                                         : "(values, frames) with the frames of data/videos");
        d->has[f] = 1;
    }
    d->n_neurons = d->rows[NPRED_VFIELD_RESPONSES];
    return NPRED_OK;
}

static npred_status open_stats(npred_video_dataset *d)
{
    char rel[512];
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        if (!d->has[f]) continue;
        int64_t shape[3];
        int ndim;
        field_shape(d, f, shape, &ndim);
        for (int k = 0; k < 5; k++) {
            snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", vfield_names[f], stat_names[k]);
            if (npred_zipfs_kind(d->fs, rel) != 1) continue;
            npred_status s = read_f32_shaped(d->fs, rel, ndim, shape, &d->stats[f][k], NULL);
            if (s) return s;
        }
        d->has_stats[f] = d->stats[f][0] && d->stats[f][1];
    }
    return NPRED_OK;
}

static npred_status open_meta(npred_video_dataset *d)
{
    char disp[4096], buf[256];
    const char *rel = "meta/trials/tiers.npy";
    npred_array a;
    npred_status s = npred_filetree_read_npy(d->fs, rel, &a);
    if (s) return s;
    npred_zipfs_display(d->fs, rel, disp, sizeof disp);
    if ((a.dtype != NPRED_DT_STR_U && a.dtype != NPRED_DT_STR_S) || a.ndim != 1 || a.shape[0] != d->n) {
        char got[128];
        npred_filetree_shape_str(&a, got, sizeof got);
        npred_array_free(&a);
        return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected %lld strings (one tier per trial)", disp, got,
                            (long long)d->n);
    }
    d->tiers = npred_calloc((size_t)d->n, sizeof *d->tiers);
    d->tier_names = npred_calloc((size_t)d->n, sizeof *d->tier_names);
    d->tier_count = npred_calloc((size_t)d->n, sizeof *d->tier_count);
    if (!d->tiers || !d->tier_names || !d->tier_count) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    /* distinct names, sorted (insertion into a sorted list), then each trial's index */
    for (int64_t i = 0; i < d->n && !s; i++) {
        if ((s = npred_array_get_str(&a, (size_t)i, buf, sizeof buf))) break;
        size_t j = 0;
        while (j < d->n_tiers && strcmp(d->tier_names[j], buf) < 0) j++;
        if (j < d->n_tiers && !strcmp(d->tier_names[j], buf)) continue;
        char *name = dupstr(buf);
        if (!name) {
            s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        memmove(d->tier_names + j + 1, d->tier_names + j, (d->n_tiers - j) * sizeof *d->tier_names);
        d->tier_names[j] = name;
        d->n_tiers++;
    }
    for (int64_t i = 0; i < d->n && !s; i++) {
        if ((s = npred_array_get_str(&a, (size_t)i, buf, sizeof buf))) break;
        for (size_t j = 0; j < d->n_tiers; j++)
            if (!strcmp(d->tier_names[j], buf)) {
                d->tiers[i] = (int)j;
                d->tier_count[j]++;
            }
    }
    npred_array_free(&a);
    if (s) return npred_error_prefix(s, "%s", disp);

    char **names;
    size_t n;
    if ((s = npred_zipfs_list(d->fs, "meta/neurons", &names, &n))) return s;
    d->neurons = npred_calloc(n ? n : 1, sizeof *d->neurons);
    d->neuron_names = npred_calloc(n ? n : 1, sizeof *d->neuron_names);
    if (!d->neurons || !d->neuron_names) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n && !s; i++) {
        if (!npred_filetree_has_suffix(names[i], ".npy")) continue;
        char r2[1024];
        snprintf(r2, sizeof r2, "meta/neurons/%s", names[i]);
        named_array *na = &d->neurons[d->n_neuron_arrays];
        if ((s = npred_filetree_read_npy(d->fs, r2, &na->a))) break;
        size_t bl = strlen(names[i]) - 4;
        if (!(na->name = malloc(bl + 1))) {
            npred_array_free(&na->a);
            s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(na->name, names[i], bl);
        na->name[bl] = '\0';
        d->neuron_names[d->n_neuron_arrays++] = na->name;
        if (na->a.ndim < 1 || na->a.shape[0] != d->n_neurons) {
            char got[128];
            npred_filetree_shape_str(&na->a, got, sizeof got);
            s = npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected %lld rows (one per neuron of data/responses)",
                             npred_zipfs_display(d->fs, r2, disp, sizeof disp), got, (long long)d->n_neurons);
        }
    }
    npred_zipfs_names_free(names, n);
    if (s) return s;
    const npred_array *c = npred_video_dataset_neuron_info(d, "cell_motor_coordinates");
    if (!c || c->ndim != 2 || c->shape[1] != 3 || c->dtype == NPRED_DT_STR_U || c->dtype == NPRED_DT_STR_S)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: %s (the kit's loader counts the neurons with it)",
                            npred_zipfs_display(d->fs, "meta/neurons/cell_motor_coordinates.npy", disp, sizeof disp),
                            c ? "expected a numeric (n, 3) array" : "missing");
    return NPRED_OK;
}

static void key_from_path(npred_video_dataset *d)
{
    char tmp[4096];
    size_t len = strlen(d->path), n = len;
    if (n >= sizeof tmp) n = sizeof tmp - 1; /* keep the tail: only the last component matters */
    memcpy(tmp, d->path + (len - n), n);
    tmp[n] = '\0';
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = '\0';
    if (d->is_zip && n > 4 && !strcmp(tmp + n - 4, ".zip")) tmp[n -= 4] = '\0';
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    size_t blen = strlen(base);
    if (blen >= sizeof d->data_key) blen = sizeof d->data_key - 1;
    memcpy(d->data_key, base, blen);
    d->data_key[blen] = '\0';
}

npred_status npred_video_dataset_open(npred_video_dataset **out, const char *path, const char *data_key)
{
    *out = NULL;
    npred_video_dataset *d = npred_calloc(1, sizeof *d);
    if (!d) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    npred_status s = npred_zipfs_open(&d->fs, path);
    if (!s && !(d->path = dupstr(path))) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (!s) {
        d->is_zip = npred_zipfs_is_zip(d->fs);
        if (npred_zipfs_is_hdf5(d->fs))
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: an HDF5 file; movie scans are folders or zips", path);
    }
    if (!s) s = open_fields(d);
    if (!s) s = open_stats(d);
    if (!s) s = open_meta(d);
    if (s) {
        npred_video_dataset_free(d);
        return s;
    }
    if (data_key) snprintf(d->data_key, sizeof d->data_key, "%s", data_key);
    else key_from_path(d);
    *out = d;
    return NPRED_OK;
}

void npred_video_dataset_free(npred_video_dataset *d)
{
    if (!d) return;
    npred_zipfs_free(d->fs);
    free(d->path);
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
        for (int k = 0; k < 5; k++) free(d->stats[f][k]);
    for (size_t i = 0; i < d->n_neuron_arrays; i++) {
        free(d->neurons[i].name);
        npred_array_free(&d->neurons[i].a);
    }
    free(d->neurons);
    free(d->neuron_names);
    for (size_t i = 0; i < d->n_tiers; i++) free(d->tier_names[i]);
    free(d->tier_names);
    free(d->tier_count);
    free(d->tiers);
    free(d);
}

void npred_video_dataset_get_info(const npred_video_dataset *d, npred_video_dataset_info *o)
{
    memset(o, 0, sizeof *o);
    o->path = d->path;
    o->data_key = d->data_key;
    o->is_zip = d->is_zip;
    o->n_trials = d->n;
    o->n_neurons = d->n_neurons;
    o->height = d->H;
    o->width = d->W;
    o->t_max = d->T;
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        o->has_field[f] = d->has[f];
        o->rows[f] = d->rows[f];
        o->has_stats[f] = d->has_stats[f];
    }
    o->n_tiers = d->n_tiers;
    o->tier_names = (const char *const *)d->tier_names;
    o->tier_count = d->tier_count;
}

const int *npred_video_dataset_tiers(const npred_video_dataset *d) { return d->tiers; }

const npred_array *npred_video_dataset_neuron_info(const npred_video_dataset *d, const char *name)
{
    for (size_t i = 0; i < d->n_neuron_arrays; i++)
        if (!strcmp(d->neurons[i].name, name)) return &d->neurons[i].a;
    return NULL;
}

size_t npred_video_dataset_neuron_info_names(const npred_video_dataset *d, const char *const **names)
{
    *names = d->neuron_names;
    return d->n_neuron_arrays;
}

int npred_video_is_scan(const char *path)
{
    npred_zipfs *fs;
    if (npred_zipfs_open(&fs, path)) return 0;
    int yes = !npred_zipfs_is_hdf5(fs) && npred_zipfs_kind(fs, "data/videos") == 2;
    npred_zipfs_free(fs);
    return yes;
}

const float *npred_video_dataset_stat(const npred_video_dataset *d, npred_video_field f, const char *stat)
{
    if ((unsigned)f >= NPRED_VFIELD_COUNT) return NULL;
    for (int k = 0; k < 5; k++)
        if (!strcmp(stat, stat_names[k])) return d->stats[f][k];
    return NULL;
}

npred_status npred_video_dataset_read(npred_video_dataset *d, npred_video_field f, int64_t i, float *out)
{
    if ((unsigned)f >= NPRED_VFIELD_COUNT || !d->has[f])
        return npred_errorf(NPRED_ERR_ARG, "%s: no data/%s folder", d->path, npred_video_field_name(f));
    if (i < 0 || i >= d->n)
        return npred_errorf(NPRED_ERR_ARG, "%s: trial %lld out of range (%lld trials)", d->path, (long long)i,
                            (long long)d->n);
    char rel[512];
    snprintf(rel, sizeof rel, "data/%s/%lld.npy", vfield_names[f], (long long)i);
    int64_t shape[3];
    int ndim;
    field_shape(d, f, shape, &ndim);
    return read_f32_shaped(d->fs, rel, ndim, shape, NULL, out);
}

/* ------------------------------------------------------------------ config */

void npred_video_loader_config_init(npred_video_loader_config *c)
{
    memset(c, 0, sizeof *c);
    c->normalize = 1;
    c->frames = 50;
    c->offset = -1;
    c->include_behavior = 1;
    c->include_pupil_centers = 1;
    c->scale = 1;
    c->to_cut = 1;
}

void npred_video_loader_config_free(npred_video_loader_config *c)
{
    npred_loader_strlist_free(&c->exclude);
    npred_video_loader_config_init(c);
}

#define ANY NPRED_JSON_ANY

npred_status npred_video_loader_config_parse(npred_video_loader_config *c, const char *json, char ***paths,
                                             size_t *n_paths)
{
    const char *at = NULL;
    cJSON *obj = cJSON_ParseWithOpts(json, &at, 1);
    if (!obj) return npred_errorf(NPRED_ERR_CONFIG, "video loader config: invalid JSON near '%.20s'", at ? at : "");
    npred_json_reader r = {"video loader config", "", NPRED_OK};
    if (!cJSON_IsObject(obj)) r.st = npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r.where);
    npred_json_unique_keys(&r, obj);
    for (const cJSON *v = cJSON_IsObject(obj) ? obj->child : NULL; v && !r.st; v = v->next) {
        const char *k = v->string;
        if (!strcmp(k, "batch_size")) npred_json_i64(&r, v, 1, ANY, &c->batch_size);
        else if (!strcmp(k, "normalize")) npred_loader_read_flag(&r, v, &c->normalize);
        else if (!strcmp(k, "exclude")) npred_loader_read_strlist(&r, v, &c->exclude, &c->exclude_is_string);
        else if (!strcmp(k, "cuda")) npred_loader_read_flag(&r, v, &c->cuda);
        else if (!strcmp(k, "max_frame")) {
            if (npred_loader_read_opt_i64(&r, v, &c->max_frame) == 1 && c->max_frame.v < 1)
                npred_json_fail(&r, v, "an integer >= 1 or null");
        } else if (!strcmp(k, "frames")) npred_json_i64(&r, v, 1, ANY, &c->frames);
        else if (!strcmp(k, "offset")) npred_json_i64(&r, v, -ANY, ANY, &c->offset);
        else if (!strcmp(k, "inputs_mean")) npred_loader_read_opt_num(&r, v, -ANY, &c->inputs_mean);
        else if (!strcmp(k, "inputs_std")) npred_loader_read_opt_num(&r, v, -ANY, &c->inputs_std);
        else if (!strcmp(k, "include_behavior")) npred_loader_read_flag(&r, v, &c->include_behavior);
        else if (!strcmp(k, "include_pupil_centers")) npred_loader_read_flag(&r, v, &c->include_pupil_centers);
        else if (!strcmp(k, "include_pupil_centers_as_channels"))
            npred_loader_read_flag(&r, v, &c->include_pupil_centers_as_channels);
        else if (!strcmp(k, "scale")) {
            if (npred_json_num(&r, v, 0, ANY, &c->scale) && !(c->scale > 0)) npred_json_fail(&r, v, "a number > 0");
        } else if (!strcmp(k, "to_cut")) npred_loader_read_flag(&r, v, &c->to_cut);
        else if (!strcmp(k, "paths") && paths) {
            npred_strlist l = {0};
            if (!cJSON_IsArray(v)) npred_json_fail(&r, v, "a list of strings");
            else if (npred_loader_read_strlist(&r, v, &l, NULL)) {
                npred_loader_paths_free(*paths, *n_paths);
                *paths = l.v;
                *n_paths = l.n;
            } else npred_loader_strlist_free(&l);
        } else {
            npred_json_unknown(&r, v, "not a mouse_video_loader argument");
        }
    }
    cJSON_Delete(obj);
    return r.st;
}

/* ------------------------------------------------------------------ loaders */

typedef struct {
    npred_video_dataset *ds;
    int in[NPRED_VFIELD_COUNT];      /* field in the sample (the kit's data_keys) */
    int norm[NPRED_VFIELD_COUNT];    /* field normalized */
    int inputs_given;                /* inputs_mean given: scalar normalisation */
    float in_mean, in_std;
    const float *vid_mean, *vid_std; /* (H*W, T) */
    float *resp_prec;                /* (n, T) */
    float *beh_prec;                 /* (k, T) */
    const float *eye_mean, *eye_std; /* (2, T) */
    int beh_planes, eye_planes, C0;  /* channels before ScaleInputs */
    int C, Ho;                       /* after ScaleInputs (W is never rescaled) */
    size_t n_tiers;
    const char **tier_names;
    int64_t *tier_n;
    int64_t **tier_idx;
} vsession;

struct npred_video_loaders {
    npred_video_loader_config cfg;
    size_t n;
    vsession *s;
};

static npred_status need_stat(const vsession *v, int f, int k)
{
    if (v->ds->stats[f][k]) return NPRED_OK;
    return npred_errorf(NPRED_ERR_IO, "%s: meta/statistics/%s/all/%s.npy missing (NeuroNormalizer needs it; set "
                        "normalize false or exclude '%s')", v->ds->path, vfield_names[f], stat_names[k], vfield_names[f]);
}

static npred_status session_init(vsession *v, const npred_video_loader_config *c)
{
    npred_video_dataset *d = v->ds;
    v->in[NPRED_VFIELD_VIDEOS] = v->in[NPRED_VFIELD_RESPONSES] = 1;
    v->in[NPRED_VFIELD_BEHAVIOR] = c->include_behavior;
    v->in[NPRED_VFIELD_PUPIL_CENTER] = c->include_pupil_centers;
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
        if (v->in[f] && !d->has[f])
            return npred_errorf(NPRED_ERR_IO, "%s: data/%s missing (the loader includes %s; set include_%s false)",
                                d->path, vfield_names[f], vfield_names[f],
                                f == NPRED_VFIELD_BEHAVIOR ? "behavior" : "pupil_centers");
    size_t T = (size_t)d->T;
    npred_status s;
    if (c->normalize) {
        /* the normalizer reads these whatever `exclude` says (as the kit) */
        if (c->inputs_mean.set) {
            v->inputs_given = 1;
            v->in_mean = (float)c->inputs_mean.v;
            v->in_std = (float)c->inputs_std.v;
        } else {
            if ((s = need_stat(v, NPRED_VFIELD_VIDEOS, 0)) || (s = need_stat(v, NPRED_VFIELD_VIDEOS, 1))) return s;
            v->vid_mean = d->stats[NPRED_VFIELD_VIDEOS][0];
            v->vid_std = d->stats[NPRED_VFIELD_VIDEOS][1];
        }
        if ((s = need_stat(v, NPRED_VFIELD_RESPONSES, 1))) return s;
        size_t nr = (size_t)d->n_neurons * T;
        const float *sd = d->stats[NPRED_VFIELD_RESPONSES][1];
        if (!(v->resp_prec = malloc(nr * sizeof *v->resp_prec))) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        /* threshold = 0.01 * nanmean(std) in double (NumPy: float32 mean times a Python float);
         * compared and divided in float32 */
        double sum = 0;
        size_t cnt = 0;
        for (size_t i = 0; i < nr; i++)
            if (!isnan(sd[i])) sum += sd[i], cnt++;
        float thr = (float)(0.01 * (double)(float)(cnt ? sum / (double)cnt : NAN));
        for (size_t i = 0; i < nr; i++) v->resp_prec[i] = sd[i] > thr ? 1.0f / sd[i] : 1.0f / thr;
        if (v->in[NPRED_VFIELD_PUPIL_CENTER]) {
            if ((s = need_stat(v, NPRED_VFIELD_PUPIL_CENTER, 0)) || (s = need_stat(v, NPRED_VFIELD_PUPIL_CENTER, 1)))
                return s;
            v->eye_mean = d->stats[NPRED_VFIELD_PUPIL_CENTER][0];
            v->eye_std = d->stats[NPRED_VFIELD_PUPIL_CENTER][1];
        }
        if (v->in[NPRED_VFIELD_BEHAVIOR]) {
            if ((s = need_stat(v, NPRED_VFIELD_BEHAVIOR, 1))) return s;
            size_t nb = (size_t)d->rows[NPRED_VFIELD_BEHAVIOR] * T;
            const float *bs = d->stats[NPRED_VFIELD_BEHAVIOR][1];
            if (!(v->beh_prec = malloc(nb * sizeof *v->beh_prec))) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (size_t i = 0; i < nb; i++) v->beh_prec[i] = 1.0f / bs[i];
        }
        for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
            v->norm[f] = v->in[f] && !npred_loader_excluded(&c->exclude, c->exclude_is_string, vfield_names[f]);
    }
    v->beh_planes = c->include_behavior ? d->rows[NPRED_VFIELD_BEHAVIOR] : 0;
    v->eye_planes = c->include_pupil_centers && c->include_pupil_centers_as_channels ? d->rows[NPRED_VFIELD_PUPIL_CENTER] : 0;
    v->C0 = 1 + v->beh_planes + v->eye_planes;
    v->C = npred_rescale_size(v->C0, c->scale);
    v->Ho = npred_rescale_size(d->H, c->scale);
    /* tiers: every tier but 'none' */
    v->tier_names = npred_calloc(d->n_tiers ? d->n_tiers : 1, sizeof *v->tier_names);
    v->tier_n = npred_calloc(d->n_tiers ? d->n_tiers : 1, sizeof *v->tier_n);
    v->tier_idx = npred_calloc(d->n_tiers ? d->n_tiers : 1, sizeof *v->tier_idx);
    if (!v->tier_names || !v->tier_n || !v->tier_idx) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t j = 0; j < d->n_tiers; j++) {
        if (!strcmp(d->tier_names[j], "none")) continue;
        size_t t = v->n_tiers++;
        v->tier_names[t] = d->tier_names[j];
        if (!(v->tier_idx[t] = malloc((size_t)d->tier_count[j] * sizeof **v->tier_idx)))
            return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < d->n; i++)
            if (d->tiers[i] == (int)j) v->tier_idx[t][v->tier_n[t]++] = i;
    }
    return NPRED_OK;
}

static void session_free(vsession *v)
{
    npred_video_dataset_free(v->ds);
    free(v->resp_prec);
    free(v->beh_prec);
    if (v->tier_idx)
        for (size_t t = 0; t < v->n_tiers; t++) free(v->tier_idx[t]);
    free(v->tier_idx);
    free(v->tier_n);
    free(v->tier_names);
}

npred_status npred_video_loaders_open(npred_video_loaders **out, const char *const *paths, size_t n_paths,
                                      const npred_video_loader_config *cfg)
{
    *out = NULL;
    if (cfg->batch_size <= 0)
        return npred_errorf(NPRED_ERR_CONFIG, "video loader config: 'batch_size' must be set (> 0)");
    if (cfg->frames < 1) return npred_errorf(NPRED_ERR_CONFIG, "video loader config: 'frames' must be >= 1");
    if (!(cfg->scale > 0)) return npred_errorf(NPRED_ERR_CONFIG, "video loader config: 'scale' must be > 0");
    if (cfg->max_frame.set && cfg->max_frame.v < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "video loader config: 'max_frame' must be >= 1 or null");
    if (cfg->normalize && cfg->inputs_mean.set && !cfg->inputs_std.set)
        return npred_errorf(NPRED_ERR_CONFIG, "video loader config: 'inputs_mean' needs 'inputs_std' (the kit divides "
                            "by it)");
    if (n_paths == 0) return npred_errorf(NPRED_ERR_CONFIG, "video loader: no paths");
    npred_video_loaders *L = npred_calloc(1, sizeof *L);
    if (!L) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    L->cfg = *cfg;
    L->cfg.exclude.v = NULL;
    L->cfg.exclude.n = 0;
    npred_status s = NPRED_OK;
    /* own copy of the exclude list */
    if (cfg->exclude.set) {
        L->cfg.exclude.v = npred_calloc(cfg->exclude.n ? cfg->exclude.n : 1, sizeof *L->cfg.exclude.v);
        if (!L->cfg.exclude.v) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < cfg->exclude.n && !s; i++) {
            if (!(L->cfg.exclude.v[i] = dupstr(cfg->exclude.v[i]))) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            else L->cfg.exclude.n++;
        }
    }
    if (!s && !(L->s = npred_calloc(n_paths, sizeof *L->s))) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t p = 0; p < n_paths && !s; p++) {
        L->n++;
        s = npred_video_dataset_open(&L->s[p].ds, paths[p], NULL);
        if (!s) s = session_init(&L->s[p], &L->cfg);
        for (size_t q = 0; q < p && !s; q++)
            if (!strcmp(L->s[q].ds->data_key, L->s[p].ds->data_key))
                s = npred_errorf(NPRED_ERR_CONFIG, "%s: data key '%s' already used by %s", paths[p],
                                 L->s[p].ds->data_key, paths[q]);
    }
    if (s) {
        npred_video_loaders_free(L);
        return s;
    }
    *out = L;
    return NPRED_OK;
}

void npred_video_loaders_free(npred_video_loaders *L)
{
    if (!L) return;
    for (size_t i = 0; i < L->n; i++) session_free(&L->s[i]);
    free(L->s);
    npred_loader_strlist_free(&L->cfg.exclude);
    free(L);
}

size_t npred_video_loaders_count(const npred_video_loaders *L) { return L->n; }

/* frames of the batch videos for a sample of F frames */
static int out_frames(const npred_video_loaders *L, int F) { return npred_rescale_size(F, L->cfg.scale); }

void npred_video_loaders_session(const npred_video_loaders *L, size_t s, npred_video_session_info *o)
{
    const vsession *v = &L->s[s];
    memset(o, 0, sizeof *o);
    o->data_key = v->ds->data_key;
    o->dataset = v->ds;
    o->n_neurons = v->ds->n_neurons;
    o->channels = v->C;
    o->resp_frames = L->cfg.to_cut ? (int)L->cfg.frames : 0;
    o->frames = L->cfg.to_cut ? out_frames(L, (int)L->cfg.frames) : 0;
    o->height = v->Ho;
    o->width = v->ds->W;
    o->behavior_dim = v->in[NPRED_VFIELD_BEHAVIOR] ? v->ds->rows[NPRED_VFIELD_BEHAVIOR] : 0;
    o->pupil_dim = v->in[NPRED_VFIELD_PUPIL_CENTER] ? v->ds->rows[NPRED_VFIELD_PUPIL_CENTER] : 0;
    o->n_tiers = v->n_tiers;
    o->tier_names = v->tier_names;
    o->tier_n = v->tier_n;
    o->tier_idx = (const int64_t *const *)v->tier_idx;
    o->response_precision = v->resp_prec;
    o->behavior_precision = v->beh_prec;
    o->eye_mean = v->eye_mean;
    o->eye_std = v->eye_std;
}

int npred_video_loaders_tier(const npred_video_loaders *L, size_t s, const char *name)
{
    const vsession *v = &L->s[s];
    for (size_t t = 0; t < v->n_tiers; t++)
        if (!strcmp(v->tier_names[t], name)) return (int)t;
    return -1;
}

/* ------------------------------------------------------------------ batches */

npred_status npred_video_batch_init(npred_video_batch *b, const npred_video_loaders *L, int64_t capacity)
{
    memset(b, 0, sizeof *b);
    if (capacity <= 0) capacity = L->cfg.batch_size;
    size_t vmax = 0, rmax = 0, bmax = 0, pmax = 0;
    for (size_t i = 0; i < L->n; i++) {
        const vsession *v = &L->s[i];
        const npred_video_dataset *d = v->ds;
        size_t F = L->cfg.to_cut ? (size_t)L->cfg.frames : (size_t)d->T;
        size_t Fo = (size_t)out_frames(L, (int)F) + 1;
        size_t vs = (size_t)v->C * Fo * (size_t)v->Ho * (size_t)d->W;
        size_t rs = (size_t)d->n_neurons * F;
        size_t bs = v->in[NPRED_VFIELD_BEHAVIOR] ? (size_t)d->rows[NPRED_VFIELD_BEHAVIOR] * F : 0;
        size_t ps = v->in[NPRED_VFIELD_PUPIL_CENTER] ? (size_t)d->rows[NPRED_VFIELD_PUPIL_CENTER] * F : 0;
        if (vs > vmax) vmax = vs;
        if (rs > rmax) rmax = rs;
        if (bs > bmax) bmax = bs;
        if (ps > pmax) pmax = ps;
    }
    size_t B = (size_t)capacity;
    b->capacity = capacity;
    b->video_cap = vmax * B, b->resp_cap = rmax * B, b->beh_cap = bmax * B, b->pupil_cap = pmax * B;
    b->videos = malloc(b->video_cap * sizeof(float));
    b->responses = malloc(b->resp_cap * sizeof(float));
    b->behavior = bmax ? malloc(b->beh_cap * sizeof(float)) : NULL;
    b->pupil_center = pmax ? malloc(b->pupil_cap * sizeof(float)) : NULL;
    b->trials = malloc(B * sizeof *b->trials);
    b->offsets = malloc(B * sizeof *b->offsets);
    if (!b->videos || !b->responses || (bmax && !b->behavior) || (pmax && !b->pupil_center) || !b->trials ||
        !b->offsets) {
        npred_video_batch_free(b);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory for a video batch of %lld trials", (long long)capacity);
    }
    return NPRED_OK;
}

void npred_video_batch_free(npred_video_batch *b)
{
    free(b->videos);
    free(b->responses);
    free(b->behavior);
    free(b->pupil_center);
    free(b->trials);
    free(b->offsets);
    memset(b, 0, sizeof *b);
}

/* One trial's raw fields (file layout, (rows, T)), normalized in place. */
typedef struct {
    float *f[NPRED_VFIELD_COUNT];
} raw_trial;

static void normalize_trial(const vsession *v, raw_trial *r)
{
    const npred_video_dataset *d = v->ds;
    size_t T = (size_t)d->T;
    if (v->norm[NPRED_VFIELD_VIDEOS]) {
        size_t n = (size_t)d->rows[NPRED_VFIELD_VIDEOS] * T;
        float *x = r->f[NPRED_VFIELD_VIDEOS];
        if (v->inputs_given)
            for (size_t i = 0; i < n; i++) x[i] = (x[i] - v->in_mean) / v->in_std;
        else
            for (size_t i = 0; i < n; i++) x[i] = (x[i] - v->vid_mean[i]) / v->vid_std[i];
    }
    if (v->norm[NPRED_VFIELD_RESPONSES]) npred_tf_scale_vec(r->f[NPRED_VFIELD_RESPONSES], v->resp_prec, (size_t)d->n_neurons * T);
    if (v->norm[NPRED_VFIELD_BEHAVIOR])
        npred_tf_scale_vec(r->f[NPRED_VFIELD_BEHAVIOR], v->beh_prec, (size_t)d->rows[NPRED_VFIELD_BEHAVIOR] * T);
    if (v->norm[NPRED_VFIELD_PUPIL_CENTER])
        npred_tf_zscore_vec(r->f[NPRED_VFIELD_PUPIL_CENTER], v->eye_mean, v->eye_std,
                            (size_t)d->rows[NPRED_VFIELD_PUPIL_CENTER] * T);
}

/* CutVideos: the frames kept (0..len-1). max_frame: that many; else the first frame
 * holding a NaN in any field of the sample (T_max when none has one). */
static int cut_length(const npred_video_loaders *L, const vsession *v, const raw_trial *r)
{
    const npred_video_dataset *d = v->ds;
    if (L->cfg.max_frame.set) return (int)L->cfg.max_frame.v;
    int len = d->T;
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        if (!v->in[f]) continue;
        for (int row = 0; row < d->rows[f]; row++) {
            const float *x = r->f[f] + (size_t)row * (size_t)d->T;
            for (int t = 0; t < len; t++)
                if (isnan(x[t])) {
                    len = t;
                    break;
                }
        }
    }
    return len;
}

/* The sample before ScaleInputs, (C0, F, H, W): the video frames, then one constant
 * plane per behaviour and (as channels) pupil value of each frame. */
static void build_sample(const vsession *v, const raw_trial *r, int off, int F, float *x)
{
    const npred_video_dataset *d = v->ds;
    size_t HW = (size_t)d->H * (size_t)d->W, T = (size_t)d->T;
    const float *vid = r->f[NPRED_VFIELD_VIDEOS];
    for (int t = 0; t < F; t++) {
        float *o = x + (size_t)t * HW;
        for (size_t p = 0; p < HW; p++) o[p] = vid[p * T + (size_t)(off + t)];
    }
    int c = 1;
    for (int k = 0; k < v->beh_planes + v->eye_planes; k++, c++) {
        const float *src = k < v->beh_planes ? r->f[NPRED_VFIELD_BEHAVIOR] + (size_t)k * T
                                             : r->f[NPRED_VFIELD_PUPIL_CENTER] + (size_t)(k - v->beh_planes) * T;
        for (int t = 0; t < F; t++) {
            float *o = x + ((size_t)c * (size_t)F + (size_t)t) * HW;
            float val = src[off + t];
            for (size_t p = 0; p < HW; p++) o[p] = val;
        }
    }
}

/* ScaleInputs(channel_axis=-1) on (C, F, H, W): skimage rescale treats W as the channel
 * axis, so C, F and H are resampled (trilinear, scipy zoom grid mode, mirrored edges,
 * in double) and W is not. */
static void rescale_cfh(float *out, const float *in, int F, int W, const npred_resample_plan *pc,
                        const npred_resample_plan *pf, const npred_resample_plan *ph)
{
    int H = ph->n_in;
    for (int c = 0; c < pc->n_out; c++)
        for (int t = 0; t < pf->n_out; t++)
            for (int h = 0; h < ph->n_out; h++) {
                float *o = out + (((size_t)c * (size_t)pf->n_out + (size_t)t) * (size_t)ph->n_out + (size_t)h) * (size_t)W;
                int ci[2] = {pc->i0[c], pc->i1[c]}, ti[2] = {pf->i0[t], pf->i1[t]}, hi[2] = {ph->i0[h], ph->i1[h]};
                double cw[2] = {1 - pc->w[c], pc->w[c]}, tw[2] = {1 - pf->w[t], pf->w[t]}, hw[2] = {1 - ph->w[h], ph->w[h]};
                for (int w = 0; w < W; w++) {
                    double acc = 0;
                    for (int a = 0; a < 2; a++)
                        for (int bb = 0; bb < 2; bb++)
                            for (int e = 0; e < 2; e++) {
                                double wt = cw[a] * tw[bb] * hw[e];
                                if (wt == 0) continue;
                                acc += wt * in[(((size_t)ci[a] * (size_t)F + (size_t)ti[bb]) * (size_t)H + (size_t)hi[e]) *
                                                   (size_t)W + (size_t)w];
                            }
                    o[w] = (float)acc;
                }
            }
}

/* (rows, T) -> (rows, F) from frame off */
static void take_frames(float *out, const float *x, int rows, int T, int off, int F)
{
    for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * (size_t)F, x + (size_t)r * (size_t)T + off, (size_t)F * sizeof *out);
}

npred_status npred_video_loaders_get(const npred_video_loaders *L, size_t s, const int64_t *trials,
                                     const int64_t *offsets, int64_t n, npred_rng *rng, npred_video_batch *b)
{
    if (s >= L->n) return npred_errorf(NPRED_ERR_ARG, "video loader: session %zu out of range (%zu)", s, L->n);
    if (n < 1 || n > b->capacity)
        return npred_errorf(NPRED_ERR_ARG, "video loader: %lld trials for a batch of capacity %lld", (long long)n,
                            (long long)b->capacity);
    const npred_video_loader_config *c = &L->cfg;
    if (offsets && !c->to_cut) return npred_errorf(NPRED_ERR_ARG, "video loader: offsets given but to_cut is false");
    const vsession *v = &L->s[s];
    npred_video_dataset *d = v->ds;
    size_t T = (size_t)d->T;
    size_t per[NPRED_VFIELD_COUNT];
    size_t total = 0;
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        per[f] = v->in[f] ? (size_t)d->rows[f] * T : 0;
        total += per[f];
    }
    size_t sample = (size_t)v->C0 * T * (size_t)d->H * (size_t)d->W;
    float *raw = malloc(((size_t)n * total + sample) * sizeof *raw);
    if (!raw) return npred_errorf(NPRED_ERR_NOMEM, "out of memory reading %lld trials", (long long)n);
    float *scratch = raw + (size_t)n * total;
    npred_status st = NPRED_OK;
    int F = 0, Fo = 0;
    npred_resample_plan pc = {0}, pf = {0}, ph = {0};
    for (int64_t i = 0; i < n && !st; i++) {
        int64_t tr = trials[i];
        if (tr < 0 || tr >= d->n) {
            st = npred_errorf(NPRED_ERR_ARG, "%s: trial %lld out of range (%lld trials)", d->path, (long long)tr,
                              (long long)d->n);
            break;
        }
        raw_trial r;
        float *p = raw + (size_t)i * total;
        for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
            r.f[f] = v->in[f] ? p : NULL;
            if (v->in[f] && !st) st = npred_video_dataset_read(d, (npred_video_field)f, tr, p);
            p += per[f];
        }
        if (st) break;
        normalize_trial(v, &r);
        int len = cut_length(L, v, &r);
        if (c->max_frame.set && len > d->T) {
            st = npred_errorf(NPRED_ERR_CONFIG, "%s: max_frame %d exceeds the %d frames of the files", d->path, len, d->T);
            break;
        }
        int off = 0, Fi = len;
        if (c->to_cut) {
            Fi = (int)c->frames;
            if (offsets) off = (int)offsets[i];
            else if (c->offset >= 0) off = (int)c->offset;
            else {
                if (len <= Fi) {
                    st = npred_errorf(NPRED_ERR_SHAPE, "%s: trial %lld has %d frames; a random subsequence of %d needs "
                                      "more", d->path, (long long)tr, len, Fi);
                    break;
                }
                if (!rng) {
                    st = npred_errorf(NPRED_ERR_ARG, "video loader: random offsets need an rng");
                    break;
                }
                off = (int)npred_rng_below(rng, (uint64_t)(len - Fi));
            }
            if (off < 0 || off + Fi > len) {
                st = npred_errorf(NPRED_ERR_SHAPE, "%s: trial %lld: frames %d..%d requested, the trial has %d after "
                                  "CutVideos", d->path, (long long)tr, off, off + Fi - 1, len);
                break;
            }
        } else if (len < 1) {
            st = npred_errorf(NPRED_ERR_SHAPE, "%s: trial %lld has no frame before its first NaN", d->path, (long long)tr);
            break;
        }
        if (i == 0) {
            F = Fi;
            Fo = out_frames(L, F);
            if ((st = npred_resample_plan_init(&pc, v->C0, v->C)) || (st = npred_resample_plan_init(&pf, F, Fo)) ||
                (st = npred_resample_plan_init(&ph, d->H, v->Ho)))
                break;
            size_t need = (size_t)v->C * (size_t)Fo * (size_t)v->Ho * (size_t)d->W * (size_t)n;
            if (need > b->video_cap || (size_t)d->n_neurons * (size_t)F * (size_t)n > b->resp_cap) {
                st = npred_errorf(NPRED_ERR_ARG, "video loader: the batch buffers are too small (initialise the batch "
                                  "with these loaders)");
                break;
            }
            b->session = (int)s;
            b->data_key = d->data_key;
            b->n = n;
            b->c = v->C, b->f = Fo, b->h = v->Ho, b->w = d->W, b->resp_f = F;
            b->n_neurons = d->n_neurons;
            b->behavior_dim = v->in[NPRED_VFIELD_BEHAVIOR] ? d->rows[NPRED_VFIELD_BEHAVIOR] : 0;
            b->pupil_dim = v->in[NPRED_VFIELD_PUPIL_CENTER] ? d->rows[NPRED_VFIELD_PUPIL_CENTER] : 0;
        } else if (Fi != F) {
            st = npred_errorf(NPRED_ERR_SHAPE, "%s: trial %lld has %d frames, trial %lld of the same batch %d (whole "
                              "trials of different lengths need batch_size 1)", d->path, (long long)tr, Fi,
                              (long long)trials[0], F);
            break;
        }
        b->trials[i] = tr;
        b->offsets[i] = off;
        /* assemble sample i */
        size_t vs = (size_t)v->C * (size_t)Fo * (size_t)v->Ho * (size_t)d->W;
        float *vo = b->videos + (size_t)i * vs;
        int identity = v->C == v->C0 && Fo == F && v->Ho == d->H;
        build_sample(v, &r, off, F, identity ? vo : scratch);
        if (!identity) rescale_cfh(vo, scratch, F, d->W, &pc, &pf, &ph);
        take_frames(b->responses + (size_t)i * (size_t)d->n_neurons * (size_t)F, r.f[NPRED_VFIELD_RESPONSES],
                    (int)d->n_neurons, d->T, off, F);
        if (b->behavior_dim)
            take_frames(b->behavior + (size_t)i * (size_t)b->behavior_dim * (size_t)F, r.f[NPRED_VFIELD_BEHAVIOR],
                        b->behavior_dim, d->T, off, F);
        if (b->pupil_dim)
            take_frames(b->pupil_center + (size_t)i * (size_t)b->pupil_dim * (size_t)F, r.f[NPRED_VFIELD_PUPIL_CENTER],
                        b->pupil_dim, d->T, off, F);
    }
    npred_resample_plan_free(&pc);
    npred_resample_plan_free(&pf);
    npred_resample_plan_free(&ph);
    free(raw);
    if (st) b->n = 0;
    return st;
}

/* ------------------------------------------------------------------ iteration */

npred_status npred_video_iter_begin(npred_video_iter *it, const npred_video_loaders *L, size_t s, const char *tier,
                                    npred_rng *rng)
{
    memset(it, 0, sizeof *it);
    if (s >= L->n) return npred_errorf(NPRED_ERR_ARG, "video loader: session %zu out of range (%zu)", s, L->n);
    int t = npred_video_loaders_tier(L, s, tier);
    if (t < 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: no loader for tier '%s' (tiers with trials, 'none' excluded)",
                            L->s[s].ds->path, tier);
    const vsession *v = &L->s[s];
    int64_t n = v->tier_n[t];
    it->order = malloc((size_t)(n ? n : 1) * sizeof *it->order);
    if (!it->order) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    memcpy(it->order, v->tier_idx[t], (size_t)n * sizeof *it->order);
    if (!strcmp(tier, "train")) {
        if (!rng) {
            npred_video_iter_free(it);
            return npred_errorf(NPRED_ERR_ARG, "video loader: the train tier is shuffled and needs an rng");
        }
        npred_rng_shuffle(rng, it->order, (size_t)n);
    }
    it->L = L;
    it->session = s;
    it->tier = t;
    it->n = n;
    it->rng = rng;
    return NPRED_OK;
}

npred_status npred_video_iter_next(npred_video_iter *it, npred_video_batch *b, int *has)
{
    *has = 0;
    if (it->pos >= it->n) return NPRED_OK;
    int64_t k = it->n - it->pos;
    if (k > it->L->cfg.batch_size) k = it->L->cfg.batch_size;
    npred_status s = npred_video_loaders_get(it->L, it->session, it->order + it->pos, NULL, k, it->rng, b);
    if (s) return s;
    it->pos += k;
    *has = 1;
    return NPRED_OK;
}

void npred_video_iter_free(npred_video_iter *it)
{
    free(it->order);
    memset(it, 0, sizeof *it);
}
