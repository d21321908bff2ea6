/* filetree: open a SENSORIUM scan (folder or .zip) and cache every trial in memory.
 *
 * Trial i of every data/<field> folder is file <i>.npy and row i of every
 * meta/trials array. All trials of all present fields are read at open and
 * converted to float32 (ToTensor casts every field to float32 anyway). */
#include "data/filetree.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/transforms.h"
#include "data/zipfs.h"
#include "npred/data.h"

static const char *const field_names[NPRED_FIELD_COUNT] = {"images", "responses", "behavior", "pupil_center"};
static const char *const tier_names[NPRED_TIER_COUNT] = {"train", "validation", "test", "final_test"};
static const char *const stat_names[5] = {"mean", "std", "min", "max", "median"};

typedef struct {
    char *name;
    npred_array a;
} named_array;

typedef struct {
    int present;
    size_t count;
    float *v[5];  /* mean, std, min, max, median; NULL if absent */
} field_stats;

struct npred_dataset {
    char *path;
    char data_key[256];
    int is_zip, is_hdf5;
    int64_t n;                                /* trials */
    int64_t n_neurons;
    float *field[NPRED_FIELD_COUNT];          /* (N, field_size); images NULL when deferred */
    int has[NPRED_FIELD_COUNT];               /* the data/<field> folder exists */
    int64_t field_size[NPRED_FIELD_COUNT];
    int defer_images;                         /* images are streamed, not cached */
    /* the responses of a deferred dataset with few distinct values, as codes into
     * resp_table (code_responses); field[RESPONSES] is then NULL */
    int resp_code_bytes;                      /* 0 (float32 in field[]), 1 or 2 */
    void *resp_codes;                         /* (N, n_neurons) uint8_t or uint16_t */
    float *resp_table;                        /* the distinct values, ascending by bit pattern */
    int img_ndim;                             /* of data/images/0.npy */
    char img_shape0[128];                     /* its shape, for the messages */
    int img_c, img_h, img_w;
    float img_min, img_max;
    named_array *trials, *neurons;
    size_t n_trials_info, n_neurons_info;
    const char **trial_names, **neuron_names;
    npred_tier *tiers;                        /* (N,) */
    int64_t *image_ids;                       /* (N,) */
    int64_t tier_count[NPRED_TIER_COUNT];
    field_stats stats[NPRED_FIELD_COUNT];
};

const char *npred_field_name(npred_field f) { return (unsigned)f < NPRED_FIELD_COUNT ? field_names[f] : "?"; }

const char *npred_tier_name(npred_tier t) { return (unsigned)t < NPRED_TIER_COUNT ? tier_names[t] : "?"; }

npred_status npred_tier_parse(const char *name, npred_tier *out)
{
    for (int t = 0; t < NPRED_TIER_COUNT; t++)
        if (name && !strcmp(name, tier_names[t])) {
            *out = (npred_tier)t;
            return NPRED_OK;
        }
    return npred_errorf(NPRED_ERR_CONFIG, "unknown tier '%s' (expected train, validation, test or final_test)",
                        name ? name : "(null)");
}

int npred_filetree_key_from_path(const char *path, char *buf, size_t bufsize)
{
    const char *last = NULL;
    for (const char *p = strstr(path, "static"); p; p = strstr(p + 1, "static")) last = p;
    if (strstr(path, "preproc")) {
        const char *s = last ? last + 6 : path;
        size_t len = strcspn(s, ".");
        char tmp[512];
        if (len >= sizeof tmp) len = sizeof tmp - 1;
        memcpy(tmp, s, len);
        tmp[len] = '\0';
        /* remove every "preproc" and "_nobehavior", as str.replace does */
        const char *pats[2] = {"preproc", "_nobehavior"};
        for (int k = 0; k < 2; k++) {
            char *m;
            size_t pl = strlen(pats[k]);
            while ((m = strstr(tmp, pats[k]))) memmove(m, m + pl, strlen(m + pl) + 1);
        }
        snprintf(buf, bufsize, "%s", tmp);
        return 1;
    }
    const char *marks[2] = {"ColorImageNet", "GrayImageNet"};
    for (int k = 0; k < 2; k++) {
        if (!strstr(path, marks[k])) continue;
        const char *s = last ? last + 6 : path;
        char pat[32];
        snprintf(pat, sizeof pat, "-%s", marks[k]);
        const char *e = strstr(s, pat);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len >= bufsize) len = bufsize - 1;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return 1;
    }
    return 0;
}

/* ---- helpers ---- */

static npred_status read_npy(npred_zipfs *fs, const char *rel, npred_array *a)
{
    void *buf;
    size_t len;
    npred_status s = npred_zipfs_read(fs, rel, &buf, &len);
    if (s) return s;
    char disp[4096];
    s = npred_npy_parse(buf, len, npred_zipfs_display(fs, rel, disp, sizeof disp), a);
    free(buf);
    return s;
}

static int is_numeric(npred_dtype t) { return t != NPRED_DT_STR_U && t != NPRED_DT_STR_S; }

static void shape_str(const npred_array *a, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < a->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
    if (k < n) snprintf(buf + k, n - k, a->ndim == 1 ? ",)" : ")");
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Read every .npy of <dir> into a sorted named_array list. */
static npred_status read_dir_arrays(npred_zipfs *fs, const char *dir, named_array **out, size_t *n_out,
                                    const char ***names_out)
{
    char **names;
    size_t n;
    npred_status s = npred_zipfs_list(fs, dir, &names, &n);
    if (s) return s;
    named_array *arr = npred_calloc(n ? n : 1, sizeof *arr);
    const char **nm = npred_calloc(n ? n : 1, sizeof *nm);
    if (!arr || !nm) {
        free(arr);
        free(nm);
        npred_zipfs_names_free(names, n);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory reading %s", dir);
    }
    size_t k = 0;
    for (size_t i = 0; i < n && !s; i++) {
        if (!has_suffix(names[i], ".npy")) continue;
        char rel[1024];
        snprintf(rel, sizeof rel, "%s/%s", dir, names[i]);
        s = read_npy(fs, rel, &arr[k].a);
        if (s) break;
        size_t bl = strlen(names[i]) - 4;
        arr[k].name = malloc(bl + 1);
        if (!arr[k].name) {
            npred_array_free(&arr[k].a);
            s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(arr[k].name, names[i], bl);
        arr[k].name[bl] = '\0';
        nm[k] = arr[k].name;
        k++;
    }
    npred_zipfs_names_free(names, n);
    *out = arr;
    *n_out = k;
    *names_out = nm;
    return s;
}

static const npred_array *find_named(const named_array *a, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(a[i].name, name)) return &a[i].a;
    return NULL;
}

/* Count the <i>.npy files of data/<field> and check they are exactly 0..N-1. */
static npred_status count_trials(npred_zipfs *fs, const char *dir, int64_t *n_out)
{
    char **names;
    size_t n;
    npred_status s = npred_zipfs_list(fs, dir, &names, &n);
    if (s) return s;
    int64_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (has_suffix(names[i], ".npy")) count++;
    npred_zipfs_names_free(names, n);
    *n_out = count;
    return NPRED_OK;
}

/* Trial i of data/<field> into dst (fsz floats): its shape must be ref's (the
 * trial 0 array, shape text sh0), numbers converted to float32; images and
 * responses must be finite. */
static npred_status read_trial(npred_zipfs *fs, npred_field f, int64_t i, int ref_ndim, const int64_t *ref_shape,
                               size_t fsz, const char *sh0, float *dst)
{
    char rel[512], disp[4096], sh[128];
    const char *fname = field_names[f];
    npred_array a;
    snprintf(rel, sizeof rel, "data/%s/%lld.npy", fname, (long long)i);
    npred_status s = read_npy(fs, rel, &a);
    if (s) return s;
    int same = a.ndim == ref_ndim && a.count == fsz && is_numeric(a.dtype);
    for (int k = 0; same && k < a.ndim; k++) same = a.shape[k] == ref_shape[k];
    if (!same) {
        shape_str(&a, sh, sizeof sh);
        s = npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s%s, expected %s like data/%s/0.npy",
                         npred_zipfs_display(fs, rel, disp, sizeof disp), sh, is_numeric(a.dtype) ? "" : " (string)",
                         sh0, fname);
    } else if (a.dtype == NPRED_DT_F32) {
        memcpy(dst, a.data, fsz * sizeof(float));
    } else {
        float *tmp;
        s = npred_array_to_f32(&a, &tmp);
        if (!s) {
            memcpy(dst, tmp, fsz * sizeof(float));
            free(tmp);
        }
    }
    npred_array_free(&a);
    /* images and responses must be finite (a NaN would poison the loss and every statistic) */
    if (!s && (f == NPRED_FIELD_IMAGES || f == NPRED_FIELD_RESPONSES)) {
        for (size_t k = 0; k < fsz; k++)
            if (!isfinite(dst[k]))
                return npred_errorf(NPRED_ERR_VALUE, "%s: trial %lld: element %zu is %s; %s must be finite",
                                    npred_zipfs_display(fs, rel, disp, sizeof disp), (long long)i, k,
                                    isnan(dst[k]) ? "NaN" : "infinite", fname);
    }
    return s;
}

static npred_status load_field(npred_dataset *d, npred_zipfs *fs, npred_field f)
{
    char rel[512], disp[4096], sh[128];
    const char *fname = field_names[f];
    int64_t n = d->n;
    npred_array first;
    snprintf(rel, sizeof rel, "data/%s/0.npy", fname);
    npred_status s = read_npy(fs, rel, &first);
    if (s) return s;
    npred_zipfs_display(fs, rel, disp, sizeof disp);
    if (!is_numeric(first.dtype)) {
        npred_array_free(&first);
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected a numeric array, got a string array", disp);
    }
    int want_ndim_ok = f == NPRED_FIELD_IMAGES ? (first.ndim == 3 || first.ndim == 2) : first.ndim == 1;
    if (!want_ndim_ok || first.count == 0) {
        shape_str(&first, sh, sizeof sh);
        npred_array_free(&first);
        return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected %s", disp, sh,
                            f == NPRED_FIELD_IMAGES ? "(C, H, W) or (H, W)" : "a non-empty 1-D array");
    }
    d->has[f] = 1;
    if (f == NPRED_FIELD_IMAGES) {
        d->img_c = first.ndim == 3 ? (int)first.shape[0] : 1;
        d->img_h = (int)first.shape[first.ndim - 2];
        d->img_w = (int)first.shape[first.ndim - 1];
        d->img_ndim = first.ndim;
        shape_str(&first, d->img_shape0, sizeof d->img_shape0);
    }
    size_t fsz = first.count;
    d->field_size[f] = (int64_t)fsz;
    int64_t shape0[8];
    int ndim0 = first.ndim;
    for (int k = 0; k < ndim0; k++) shape0[k] = first.shape[k];
    shape_str(&first, sh, sizeof sh);
    npred_array_free(&first);
    if (f == NPRED_FIELD_IMAGES && d->defer_images) return NPRED_OK; /* npred_dataset_stream_images reads them */
    if ((size_t)n > SIZE_MAX / sizeof(float) / fsz)
        return npred_errorf(NPRED_ERR_NOMEM, "data/%s: %lld trials of %zu values do not fit in memory", fname,
                            (long long)n, fsz);
    float *dst = malloc((size_t)n * fsz * sizeof(float));
    if (!dst)
        return npred_errorf(NPRED_ERR_NOMEM, "data/%s: out of memory for %lld trials of %zu values", fname,
                            (long long)n, fsz);
    d->field[f] = dst;
    for (int64_t i = 0; i < n && !s; i++) s = read_trial(fs, f, i, ndim0, shape0, fsz, sh, dst + (size_t)i * fsz);
    return s;
}

static npred_status load_stats(npred_dataset *d, npred_zipfs *fs)
{
    char rel[512], disp[4096], sh[128];
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        snprintf(rel, sizeof rel, "meta/statistics/%s/all", field_names[f]);
        if (npred_zipfs_kind(fs, rel) != 2) continue;
        field_stats *st = &d->stats[f];
        st->present = 1;
        size_t want = f == NPRED_FIELD_IMAGES ? 1 : (size_t)d->field_size[f];
        st->count = want;
        for (int k = 0; k < 5; k++) {
            snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", field_names[f], stat_names[k]);
            if (npred_zipfs_kind(fs, rel) != 1) continue;
            npred_array a;
            npred_status s = read_npy(fs, rel, &a);
            if (s) return s;
            npred_zipfs_display(fs, rel, disp, sizeof disp);
            if (!is_numeric(a.dtype)) {
                npred_array_free(&a);
                return npred_errorf(NPRED_ERR_SHAPE, "%s: expected numbers, got a string array", disp);
            }
            if (d->has[f] && a.count != want) {
                shape_str(&a, sh, sizeof sh);
                npred_array_free(&a);
                if (f == NPRED_FIELD_IMAGES)
                    return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected a scalar", disp, sh);
                return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected (%zu,) (one per %s value)", disp, sh,
                                    want, field_names[f]);
            }
            if (!d->has[f]) st->count = a.count;
            s = npred_array_to_f32(&a, &st->v[k]);
            npred_array_free(&a);
            if (s) return npred_error_prefix(s, "%s", disp);
            for (size_t j = 0; j < st->count; j++)
                if (isnan(st->v[k][j]))
                    return npred_errorf(NPRED_ERR_VALUE, "%s: NaN at element %zu (statistics must be finite numbers)",
                                        disp, j);
        }
    }
    return NPRED_OK;
}

static npred_status check_meta(npred_dataset *d, npred_zipfs *fs)
{
    char disp[4096], rel[512], sh[128];
    for (size_t i = 0; i < d->n_trials_info; i++) {
        const npred_array *a = &d->trials[i].a;
        if (a->ndim < 1 || a->shape[0] != d->n) {
            snprintf(rel, sizeof rel, "meta/trials/%s.npy", d->trials[i].name);
            shape_str(a, sh, sizeof sh);
            return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected (%lld,) (one row per trial)",
                                npred_zipfs_display(fs, rel, disp, sizeof disp), sh, (long long)d->n);
        }
    }
    for (size_t i = 0; i < d->n_neurons_info; i++) {
        const npred_array *a = &d->neurons[i].a;
        if (a->ndim < 1 || a->shape[0] != d->n_neurons) {
            snprintf(rel, sizeof rel, "meta/neurons/%s.npy", d->neurons[i].name);
            shape_str(a, sh, sizeof sh);
            return npred_errorf(NPRED_ERR_SHAPE, "%s: shape %s, expected %lld rows (one per neuron in responses)",
                                npred_zipfs_display(fs, rel, disp, sizeof disp), sh, (long long)d->n_neurons);
        }
    }
    const char *req_trials[3] = {"tiers", "frame_image_id", "frame_image_class"};
    for (int k = 0; k < 3; k++)
        if (!find_named(d->trials, d->n_trials_info, req_trials[k])) {
            snprintf(rel, sizeof rel, "meta/trials/%s.npy", req_trials[k]);
            return npred_errorf(NPRED_ERR_IO, "%s: missing (the loader needs tiers, frame_image_id and frame_image_class)",
                                npred_zipfs_display(fs, rel, disp, sizeof disp));
        }
    const char *req_neurons[2] = {"unit_ids", "area"};
    for (int k = 0; k < 2; k++)
        if (!find_named(d->neurons, d->n_neurons_info, req_neurons[k])) {
            snprintf(rel, sizeof rel, "meta/neurons/%s.npy", req_neurons[k]);
            return npred_errorf(NPRED_ERR_IO, "%s: missing (the loader needs unit_ids and area)",
                                npred_zipfs_display(fs, rel, disp, sizeof disp));
        }
    const npred_array *uid = find_named(d->neurons, d->n_neurons_info, "unit_ids");
    if (!is_numeric(uid->dtype))
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected integer unit ids, got strings",
                            npred_zipfs_display(fs, "meta/neurons/unit_ids.npy", disp, sizeof disp));
    const npred_array *tiers = find_named(d->trials, d->n_trials_info, "tiers");
    npred_zipfs_display(fs, "meta/trials/tiers.npy", disp, sizeof disp);
    if (is_numeric(tiers->dtype) || tiers->ndim != 1)
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected a 1-D string array", disp);
    d->tiers = malloc((size_t)(d->n ? d->n : 1) * sizeof *d->tiers);
    if (!d->tiers) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < d->n; i++) {
        char name[64];
        npred_status s = npred_array_get_str(tiers, (size_t)i, name, sizeof name);
        if (s) return npred_error_prefix(s, "%s", disp);
        int t;
        for (t = 0; t < NPRED_TIER_COUNT && strcmp(name, tier_names[t]); t++) {}
        if (t == NPRED_TIER_COUNT)
            return npred_errorf(NPRED_ERR_VALUE,
                                "%s: unknown tier '%s' at trial %lld (expected train, validation, test or final_test)",
                                disp, name, (long long)i);
        d->tiers[i] = (npred_tier)t;
        d->tier_count[t]++;
    }
    const npred_array *ids = find_named(d->trials, d->n_trials_info, "frame_image_id");
    npred_zipfs_display(fs, "meta/trials/frame_image_id.npy", disp, sizeof disp);
    if (!is_numeric(ids->dtype) || ids->ndim != 1)
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected a 1-D integer array", disp);
    npred_status s = npred_array_to_i64(ids, &d->image_ids);
    return s ? npred_error_prefix(s, "%s", disp) : NPRED_OK;
}

static void image_range(const float *img, size_t total, float *lo_out, float *hi_out)
{
    float lo = INFINITY, hi = -INFINITY;
#pragma omp parallel for reduction(min : lo) reduction(max : hi) schedule(static)
    for (size_t i = 0; i < total; i++) {
        if (img[i] < lo) lo = img[i];
        if (img[i] > hi) hi = img[i];
    }
    *lo_out = lo;
    *hi_out = hi;
}

/* ------------------------------------------------------------------ coded responses */

enum { RESP_MAX_CODES = 65536, RESP_SLOTS = 1 << 17 };
#define RESP_EMPTY 0xFFFFFFFFu /* a NaN's bits: never a (finite) response */

static uint32_t f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static size_t resp_slot(const uint32_t *keys, uint32_t u)
{
    size_t h = (size_t)((u * 2654435761u) >> 15) & (RESP_SLOTS - 1);
    while (keys[h] != RESP_EMPTY && keys[h] != u) h = (h + 1) & (RESP_SLOTS - 1);
    return h;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* A deferred dataset (the loaders') keeps its responses as 1- or 2-byte codes into a
 * table of their distinct values when there are at most 256 or 65,536 of them (spike
 * counts, quantised traces): the same float bits come back (a value's bit pattern is
 * its key, so -0 and +0 stay apart), in a quarter or half of the memory. Others stay
 * float32. Called after the responses were read and checked (finite). */
static npred_status code_responses(npred_dataset *d)
{
    float *x = d->field[NPRED_FIELD_RESPONSES];
    size_t total = (size_t)d->n * (size_t)d->field_size[NPRED_FIELD_RESPONSES];
    uint32_t *keys = malloc(RESP_SLOTS * sizeof *keys);
    uint16_t *code = malloc(RESP_SLOTS * sizeof *code);
    uint32_t *sorted = malloc(RESP_MAX_CODES * sizeof *sorted);
    npred_status s = NPRED_OK;
    if (!keys || !code || !sorted) {
        s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", d->path);
        goto out;
    }
    memset(keys, 0xFF, RESP_SLOTS * sizeof *keys);
    size_t n = 0;
    uint32_t prev = RESP_EMPTY;
    for (size_t i = 0; i < total; i++) {
        uint32_t u = f32_bits(x[i]);
        if (u == prev) continue;
        prev = u;
        size_t h = resp_slot(keys, u);
        if (keys[h] == u) continue;
        if (n == RESP_MAX_CODES) goto out; /* too many: float32 stays */
        keys[h] = u;
        sorted[n++] = u;
    }
    qsort(sorted, n, sizeof *sorted, cmp_u32);
    int bytes = n <= 256 ? 1 : 2;
    float *table = malloc((n ? n : 1) * sizeof *table);
    void *codes = malloc((total ? total : 1) * (size_t)bytes);
    if (!table || !codes) {
        free(table);
        free(codes);
        s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory for the responses' codes", d->path);
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        memcpy(&table[k], &sorted[k], sizeof(float));
        code[resp_slot(keys, sorted[k])] = (uint16_t)k;
    }
    uint8_t *c8 = codes;
    uint16_t *c16 = codes;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < total; i++) {
        uint16_t k = code[resp_slot(keys, f32_bits(x[i]))];
        if (bytes == 1) c8[i] = (uint8_t)k;
        else c16[i] = k;
    }
    free(x);
    d->field[NPRED_FIELD_RESPONSES] = NULL;
    d->resp_code_bytes = bytes;
    d->resp_codes = codes;
    d->resp_table = table;
out:
    free(keys);
    free(code);
    free(sorted);
    return s;
}

void npred_dataset_take_responses(const npred_dataset *d, int64_t t, const int64_t *idx, int64_t n, float *out)
{
    size_t row = (size_t)t * (size_t)d->n_neurons;
    const float *tab = d->resp_table;
    if (d->resp_code_bytes == 1) {
        const uint8_t *c = (const uint8_t *)d->resp_codes + row;
        for (int64_t j = 0; j < n; j++) out[j] = tab[c[idx[j]]];
    } else if (d->resp_code_bytes == 2) {
        const uint16_t *c = (const uint16_t *)d->resp_codes + row;
        for (int64_t j = 0; j < n; j++) out[j] = tab[c[idx[j]]];
    } else {
        npred_tf_take(out, d->field[NPRED_FIELD_RESPONSES] + row, idx, n);
    }
}

void npred_dataset_read_responses(const npred_dataset *d, size_t first, size_t count, float *out)
{
    const float *tab = d->resp_table;
    if (d->resp_code_bytes == 1) {
        const uint8_t *c = (const uint8_t *)d->resp_codes + first;
        for (size_t i = 0; i < count; i++) out[i] = tab[c[i]];
    } else if (d->resp_code_bytes == 2) {
        const uint16_t *c = (const uint16_t *)d->resp_codes + first;
        for (size_t i = 0; i < count; i++) out[i] = tab[c[i]];
    } else {
        memcpy(out, d->field[NPRED_FIELD_RESPONSES] + first, count * sizeof(float));
    }
}

size_t npred_dataset_response_bytes(const npred_dataset *d)
{
    return d->resp_code_bytes ? (size_t)d->resp_code_bytes : sizeof(float);
}

static npred_status open_impl(npred_dataset *d, npred_zipfs *fs, const char *data_key)
{
    char disp[4096], rel[512];
    d->is_zip = npred_zipfs_is_zip(fs);
    d->is_hdf5 = npred_zipfs_is_hdf5(fs);
    /* trial count from data/images; every other data folder must agree */
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        snprintf(rel, sizeof rel, "data/%s", field_names[f]);
        int kind = npred_zipfs_kind(fs, rel);
        if (kind != 2) {
            if (f <= NPRED_FIELD_RESPONSES)
                return npred_errorf(NPRED_ERR_IO, "%s: folder not found (a SENSORIUM scan has data/images and data/responses)",
                                    npred_zipfs_display(fs, rel, disp, sizeof disp));
            continue;
        }
        int64_t n;
        npred_status s = count_trials(fs, rel, &n);
        if (s) return s;
        if (f == NPRED_FIELD_IMAGES) {
            if (n == 0)
                return npred_errorf(NPRED_ERR_FORMAT, "%s: no trials (no <i>.npy files)",
                                    npred_zipfs_display(fs, rel, disp, sizeof disp));
            d->n = n;
        } else if (n != d->n) {
            return npred_errorf(NPRED_ERR_SHAPE, "%s: %lld trials, expected %lld as in data/images (inconsistent data)",
                                npred_zipfs_display(fs, rel, disp, sizeof disp), (long long)n, (long long)d->n);
        }
    }
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        snprintf(rel, sizeof rel, "data/%s", field_names[f]);
        if (npred_zipfs_kind(fs, rel) != 2) continue;
        npred_status s = load_field(d, fs, (npred_field)f);
        if (s) return s;
    }
    d->n_neurons = d->field_size[NPRED_FIELD_RESPONSES];
    if (d->defer_images) {
        npred_status cs = code_responses(d);
        if (cs) return cs;
    }
    if (d->field[NPRED_FIELD_IMAGES])
        image_range(d->field[NPRED_FIELD_IMAGES], (size_t)d->n * (size_t)d->field_size[NPRED_FIELD_IMAGES],
                    &d->img_min, &d->img_max);
    npred_status s;
    if ((s = read_dir_arrays(fs, "meta/trials", &d->trials, &d->n_trials_info, &d->trial_names))) return s;
    if ((s = read_dir_arrays(fs, "meta/neurons", &d->neurons, &d->n_neurons_info, &d->neuron_names))) return s;
    if ((s = check_meta(d, fs))) return s;
    if ((s = load_stats(d, fs))) return s;
    if (data_key) {
        snprintf(d->data_key, sizeof d->data_key, "%s", data_key);
    } else if (!npred_filetree_key_from_path(d->path, d->data_key, sizeof d->data_key)) {
        const char *parts[3] = {"animal_ids", "sessions", "scan_idx"};
        int64_t v[3];
        for (int k = 0; k < 3; k++) {
            const npred_array *a = find_named(d->neurons, d->n_neurons_info, parts[k]);
            snprintf(rel, sizeof rel, "meta/neurons/%s.npy", parts[k]);
            if (!a || !is_numeric(a->dtype) || a->count == 0)
                return npred_errorf(NPRED_ERR_IO,
                                    "%s: missing or not numeric; the name '%s' has no static<key>-GrayImageNet data key, so "
                                    "animal_ids, sessions and scan_idx are needed (or give the data key)",
                                    npred_zipfs_display(fs, rel, disp, sizeof disp), d->path);
            int64_t *t;
            if ((s = npred_array_to_i64(a, &t))) return s;
            v[k] = t[0];
            free(t);
        }
        snprintf(d->data_key, sizeof d->data_key, "%lld-%lld-%lld", (long long)v[0], (long long)v[1], (long long)v[2]);
    }
    return NPRED_OK;
}

static npred_status open_mode(npred_dataset **out, const char *path, const char *data_key, int defer_images)
{
    *out = NULL;
    npred_zipfs *fs;
    npred_status s = npred_zipfs_open(&fs, path);
    if (s) return s;
    npred_dataset *d = npred_calloc(1, sizeof *d);
    if (!d) {
        npred_zipfs_free(fs);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    size_t pl = strlen(path) + 1;
    d->path = malloc(pl);
    if (!d->path) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    else {
        memcpy(d->path, path, pl);
        d->defer_images = defer_images;
        s = open_impl(d, fs, data_key);
    }
    npred_zipfs_free(fs);
    if (s) {
        npred_dataset_free(d);
        return s;
    }
    *out = d;
    return NPRED_OK;
}

npred_status npred_dataset_open(npred_dataset **out, const char *path, const char *data_key)
{
    return open_mode(out, path, data_key, 0);
}

npred_status npred_dataset_open_deferred(npred_dataset **out, const char *path, const char *data_key)
{
    return open_mode(out, path, data_key, 1);
}

npred_status npred_dataset_stream_images(npred_dataset *d, npred_image_sink sink, void *user)
{
    if (!d->defer_images)
        return npred_errorf(NPRED_ERR_ARG, "%s: the images were read at open (not a deferred dataset)", d->path);
    npred_zipfs *fs;
    npred_status s = npred_zipfs_open(&fs, d->path);
    if (s) return s;
    size_t fsz = (size_t)d->field_size[NPRED_FIELD_IMAGES];
    float *img = malloc(fsz * sizeof(float));
    if (!img) s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory for one image", d->path);
    int64_t shape[3] = {d->img_c, d->img_h, d->img_w};
    const int64_t *ref = d->img_ndim == 3 ? shape : shape + 1;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < d->n && !s; i++) {
        s = read_trial(fs, NPRED_FIELD_IMAGES, i, d->img_ndim, ref, fsz, d->img_shape0, img);
        if (s) break;
        for (size_t k = 0; k < fsz; k++) {
            if (img[k] < lo) lo = img[k];
            if (img[k] > hi) hi = img[k];
        }
        s = sink(user, i, img);
    }
    if (!s) {
        d->img_min = lo;
        d->img_max = hi;
    }
    free(img);
    npred_zipfs_free(fs);
    return s;
}

static void free_named(named_array *a, size_t n, const char **names)
{
    if (a)
        for (size_t i = 0; i < n; i++) {
            free(a[i].name);
            npred_array_free(&a[i].a);
        }
    free(a);
    free((void *)names);
}

void npred_dataset_free(npred_dataset *d)
{
    if (!d) return;
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        free(d->field[f]);
        for (int k = 0; k < 5; k++) free(d->stats[f].v[k]);
    }
    free(d->resp_codes);
    free(d->resp_table);
    free_named(d->trials, d->n_trials_info, d->trial_names);
    free_named(d->neurons, d->n_neurons_info, d->neuron_names);
    free(d->tiers);
    free(d->image_ids);
    free(d->path);
    free(d);
}

void npred_dataset_get_info(const npred_dataset *d, npred_dataset_info *o)
{
    memset(o, 0, sizeof *o);
    o->path = d->path;
    o->data_key = d->data_key;
    o->is_zip = d->is_zip;
    o->is_hdf5 = d->is_hdf5;
    o->n_trials = d->n;
    o->n_neurons = d->n_neurons;
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        o->has_field[f] = d->has[f];
        o->field_size[f] = d->field_size[f];
    }
    o->img_c = d->img_c;
    o->img_h = d->img_h;
    o->img_w = d->img_w;
    o->img_min = d->img_min;
    o->img_max = d->img_max;
    for (int t = 0; t < NPRED_TIER_COUNT; t++) o->tier_count[t] = d->tier_count[t];
}

const float *npred_dataset_field(const npred_dataset *d, npred_field f)
{
    return (unsigned)f < NPRED_FIELD_COUNT ? d->field[f] : NULL;
}

void npred_dataset_get_stats(const npred_dataset *d, npred_field f, npred_dataset_stats *o)
{
    memset(o, 0, sizeof *o);
    if ((unsigned)f >= NPRED_FIELD_COUNT) return;
    const field_stats *s = &d->stats[f];
    o->present = s->present;
    o->count = s->count;
    o->mean = s->v[0];
    o->std = s->v[1];
    o->min = s->v[2];
    o->max = s->v[3];
    o->median = s->v[4];
}

const npred_array *npred_dataset_trial_info(const npred_dataset *d, const char *name)
{
    return find_named(d->trials, d->n_trials_info, name);
}

const npred_array *npred_dataset_neuron_info(const npred_dataset *d, const char *name)
{
    return find_named(d->neurons, d->n_neurons_info, name);
}

size_t npred_dataset_trial_info_names(const npred_dataset *d, const char *const **names)
{
    *names = d->trial_names;
    return d->n_trials_info;
}

size_t npred_dataset_neuron_info_names(const npred_dataset *d, const char *const **names)
{
    *names = d->neuron_names;
    return d->n_neurons_info;
}

const npred_tier *npred_dataset_tiers(const npred_dataset *d) { return d->tiers; }
const int64_t *npred_dataset_image_ids(const npred_dataset *d) { return d->image_ids; }

/* ---- helpers shared with the movie scans (data/filetree.h) ---- */

npred_status npred_filetree_read_npy(npred_zipfs *fs, const char *rel, npred_array *a) { return read_npy(fs, rel, a); }
void npred_filetree_shape_str(const npred_array *a, char *buf, size_t n) { shape_str(a, buf, n); }
int npred_filetree_has_suffix(const char *s, const char *suf) { return has_suffix(s, suf); }
