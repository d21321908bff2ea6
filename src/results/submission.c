/* SENSORIUM submission / ground-truth CSV files and the kit's metrics from them
 * (include/npred/results.h). */
#include "npred/results.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"
#include "base/pyfmt.h"
#include "npred/metrics.h"

/* ------------------------------------------------------------------ writing */

/* a field as pandas' QUOTE_MINIMAL writes it */
static void put_field(npred_text *t, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        npred_text_put(t, s, strlen(s));
        return;
    }
    npred_text_put(t, "\"", 1);
    for (const char *p = s; *p; p++) npred_text_put(t, p, *p == '"' ? 2 : 1) /* "" */;
    npred_text_put(t, "\"", 1);
}

/* trial_idx of row i as pandas writes the value */
static npred_status trial_token(const npred_array *a, int64_t i, char *buf, size_t n)
{
    if (a->dtype == NPRED_DT_STR_U || a->dtype == NPRED_DT_STR_S) return npred_array_get_str(a, (size_t)i, buf, n);
    npred_array one = *a; /* convert just the one element */
    one.count = 1;
    one.data = (char *)a->data + (size_t)i * a->itemsize;
    one.ndim = 1;
    one.shape[0] = 1;
    if (a->dtype == NPRED_DT_F16 || a->dtype == NPRED_DT_F32 || a->dtype == NPRED_DT_F64) {
        double *v = NULL;
        npred_status st = npred_array_to_f64(&one, &v);
        if (st) return st;
        npred_pyfloat(buf, n, v[0]);
        free(v);
        return NPRED_OK;
    }
    int64_t *iv = NULL;
    npred_status st = npred_array_to_i64(&one, &iv);
    if (st) return st;
    snprintf(buf, n, "%lld", (long long)iv[0]);
    free(iv);
    return NPRED_OK;
}

npred_status npred_submission_csv(char **csv, npred_model *m, const npred_loaders *L, size_t s, npred_tier tier)
{
    *csv = NULL;
    if (s >= npred_loaders_count(L)) return npred_errorf(NPRED_ERR_ARG, "submission: session %zu out of range", s);
    npred_session_info si;
    npred_loaders_session(L, s, &si);
    if ((int)tier < 0 || tier >= NPRED_TIER_COUNT || !si.tier_enabled[tier] || si.tier_n[tier] < 1)
        return npred_errorf(NPRED_ERR_VALUE, "%s: tier %s holds no trials (or is not loaded)", si.data_key,
                            (int)tier >= 0 && tier < NPRED_TIER_COUNT ? npred_tier_name(tier) : "?");
    const npred_array *tid = npred_dataset_trial_info(si.dataset, "trial_idx");
    if (!tid)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: meta/trials/trial_idx.npy is missing (the files' trial_indices)",
                            si.data_key);
    const int64_t *image_ids = npred_dataset_image_ids(si.dataset);
    int64_t n = si.n_neurons;
    int has_shifter = 0, bc = 0;
    if (m) {
        int mi = npred_model_session_index(m, si.data_key);
        if (mi < 0) return npred_errorf(NPRED_ERR_ARG, "the model has no readout for session %s", si.data_key);
        if (npred_model_session_neurons(m, mi) != n)
            return npred_errorf(NPRED_ERR_SHAPE, "session %s: the loader gives %lld neurons, the model's readout has %d",
                                si.data_key, (long long)n, npred_model_session_neurons(m, mi));
        int c, h, w;
        npred_model_input_shape(m, &c, &h, &w);
        if (c != si.img_c || h != si.img_h || w != si.img_w)
            return npred_errorf(NPRED_ERR_SHAPE,
                                "session %s: the loader gives images (B, %d, %d, %d), the model expects (B, %d, %d, %d)",
                                si.data_key, si.img_c, si.img_h, si.img_w, c, h, w);
        has_shifter = npred_model_has_shifter(m);
        bc = npred_model_behavior_channels(m);
        if (has_shifter && si.pupil_dim != 2)
            return npred_errorf(NPRED_ERR_CONFIG, "session %s: the model has a shifter and needs pupil_center "
                                "(include_eye_position)", si.data_key);
        if (bc > 0 && si.behavior_dim != bc)
            return npred_errorf(NPRED_ERR_CONFIG, "session %s: the model has a modulator and needs behavior (B, %d)",
                                si.data_key, bc);
    }
    npred_text ids;
    npred_text_init(&ids);
    npred_text_put(&ids, "[", 1);
    for (int64_t j = 0; j < n; j++) npred_text_printf(&ids, "%s%lld", j ? ", " : "", (long long)si.unit_ids[j]);
    npred_text_put(&ids, "]", 1);
    char *idlist = npred_text_take(&ids, "submission neuron ids");
    if (!idlist) return NPRED_ERR_NOMEM;

    npred_text t;
    npred_text_init(&t);
    npred_text_printf(&t, "trial_indices,image_ids,%s,neuron_ids\n", m ? "prediction" : "responses");
    npred_batch b;
    npred_status st = npred_batch_init(&b, L, 0);
    if (st) {
        free(idlist);
        return st;
    }
    float *pred = m ? malloc(sizeof(float) * (size_t)b.capacity * (size_t)(n ? n : 1)) : NULL;
    if (m && !pred) st = npred_errorf(NPRED_ERR_NOMEM, "submission: out of memory");
    npred_loader_iter it;
    memset(&it, 0, sizeof it);
    if (!st) st = npred_loader_iter_begin(&it, L, s, tier, NULL);
    int has = 1;
    char tok[256];
    npred_text row;
    npred_text_init(&row);
    while (!st) {
        if ((st = npred_loader_iter_next(&it, &b, &has)) || !has) break;
        const float *v = b.responses;
        if (m) {
            st = npred_model_predict(m, si.data_key, b.images, (int)b.n, has_shifter ? b.pupil_center : NULL,
                                     bc > 0 ? b.behavior : NULL, pred);
            if (st) break;
            v = pred;
        }
        for (int64_t j = 0; j < b.n && !st; j++) {
            int64_t trial = b.trials[j];
            if ((st = trial_token(tid, trial, tok, sizeof tok))) break;
            put_field(&t, tok);
            npred_text_printf(&t, ",%lld,", (long long)image_ids[trial]);
            row.len = 0;
            npred_text_put(&row, "[", 1);
            for (int64_t k = 0; k < n; k++) {
                if (k) npred_text_put(&row, ", ", 2);
                npred_text_pyfloat(&row, (double)v[j * n + k]);
            }
            npred_text_put(&row, "]", 1);
            if (row.failed) {
                st = npred_errorf(NPRED_ERR_NOMEM, "submission: out of memory");
                break;
            }
            put_field(&t, row.buf);
            npred_text_put(&t, ",", 1);
            put_field(&t, idlist);
            npred_text_put(&t, "\n", 1);
        }
    }
    npred_loader_iter_free(&it);
    npred_batch_free(&b);
    npred_text_free(&row);
    free(pred);
    free(idlist);
    if (st) {
        npred_text_free(&t);
        return npred_error_prefix(st, "session %s", si.data_key);
    }
    *csv = npred_text_take(&t, "submission file");
    return *csv ? NPRED_OK : NPRED_ERR_NOMEM;
}

/* ------------------------------------------------------------------ reading */

/* One parsed file: the four columns of every row. */
typedef struct {
    const char *path;
    int64_t rows;
    char **trial;        /* (rows,) trial_indices tokens */
    int all_int;         /* every trial token is an integer */
    int64_t *trial_i;    /* (rows,) when all_int */
    int64_t *image;      /* (rows,) */
    int64_t *line;       /* (rows,) 1-based line of the row */
    int64_t n;           /* values per row */
    float *vals;         /* (rows, n) */
    int64_t *neuron;     /* (n,) neuron ids of the first row */
} table;

static void table_free(table *t)
{
    for (int64_t r = 0; t->trial && r < t->rows; r++) free(t->trial[r]);
    free(t->trial);
    free(t->trial_i);
    free(t->image);
    free(t->line);
    free(t->vals);
    free(t->neuron);
    memset(t, 0, sizeof *t);
}

/* Split the next CSV record starting at *p into at most max fields (NUL-terminated
 * in place, quotes removed); advances *p past the record and *line past its lines.
 * Returns the number of fields, or -1 with an error for an unterminated quote. */
static int next_record(char **p, char **fields, int max, int64_t *line, const char *path)
{
    char *s = *p, *w = s;
    int nf = 0;
    int64_t start = *line;
    for (;;) {
        char *field = w;
        if (*s == '"') {
            s++;
            for (;;) {
                if (!*s) {
                    npred_errorf(NPRED_ERR_FORMAT, "%s: line %lld: a quoted field is not closed", path, (long long)start);
                    return -1;
                }
                if (*s == '"' && s[1] == '"') *w++ = '"', s += 2;
                else if (*s == '"') {
                    s++;
                    break;
                } else {
                    if (*s == '\n') (*line)++;
                    *w++ = *s++;
                }
            }
        }
        while (*s && *s != ',' && *s != '\n' && *s != '\r') *w++ = *s++;
        char end = *s; /* read the terminator before the NUL may overwrite it */
        if (end == ',') s++;
        else {
            if (end == '\r') s++;
            if (*s == '\n') s++;
        }
        *w++ = 0;
        if (nf < max) fields[nf] = field;
        nf++;
        if (end == ',') continue;
        (*line)++;
        break;
    }
    *p = s;
    return nf;
}

static int parse_i64(const char *s, int64_t *v)
{
    char *e;
    errno = 0;
    long long x = strtoll(s, &e, 10);
    if (errno || e == s || *e) return 0;
    *v = x;
    return 1;
}

/* "[a, b, ...]" -> count values; vals may be NULL (count only) */
static npred_status parse_list(const char *s, double *vals, int64_t cap, int64_t *count, const char *where,
                               const char *col)
{
    while (isspace((unsigned char)*s)) s++;
    if (*s != '[') return npred_errorf(NPRED_ERR_FORMAT, "%s: %s is not a list '[...]'", where, col);
    s++;
    int64_t k = 0;
    while (isspace((unsigned char)*s)) s++;
    if (*s == ']') s++;
    else
        for (;;) {
            char *e;
            double v = strtod(s, &e);
            if (e == s) return npred_errorf(NPRED_ERR_FORMAT, "%s: %s: value %lld is not a number", where, col, (long long)k);
            if (!isfinite(v))
                return npred_errorf(NPRED_ERR_VALUE, "%s: %s: value %lld is not finite (%.*s)", where, col, (long long)k,
                                    (int)(e - s), s);
            if (vals && k < cap) vals[k] = v;
            k++;
            s = e;
            while (isspace((unsigned char)*s)) s++;
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s == ']') {
                s++;
                break;
            }
            return npred_errorf(NPRED_ERR_FORMAT, "%s: %s: expected ',' or ']' after value %lld", where, col, (long long)k - 1);
        }
    while (isspace((unsigned char)*s)) s++;
    if (*s) return npred_errorf(NPRED_ERR_FORMAT, "%s: %s: text after the list", where, col);
    *count = k;
    return NPRED_OK;
}

/* The table in text (len bytes, named path in messages). */
static npred_status read_table(table *t, const char *text, size_t len, const char *path, const char *value_col)
{
    memset(t, 0, sizeof *t);
    t->path = path;
    int64_t lines = 1; /* records at most: a record ends at \n, \r\n or a lone \r (next_record) */
    for (size_t i = 0; i < len; i++) {
        if (!text[i]) /* C strings end there: the rest would be dropped unseen */
            return npred_errorf(NPRED_ERR_FORMAT, "%s: line %lld: a NUL byte (not a CSV text file)", path,
                                (long long)lines);
        lines += text[i] == '\n' || (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n'));
    }
    char *buf = malloc(len + 1);
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    if (len) memcpy(buf, text, len);
    buf[len] = 0;
    npred_status st = NPRED_OK;
    char *p = buf, *f[8];
    int64_t line = 1;
    int nf = next_record(&p, f, 8, &line, path);
    const char *names[4] = {"trial_indices", "image_ids", value_col, "neuron_ids"};
    int col[4] = {-1, -1, -1, -1};
    if (nf < 0) st = NPRED_ERR_FORMAT;
    for (int i = 0; !st && i < nf && i < 8; i++) {
        int k = 0;
        while (k < 4 && strcmp(f[i], names[k])) k++;
        if (k == 4 || col[k] >= 0)
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: line 1: header column %d '%s' is %s; expected the columns %s,%s,%s,%s",
                              path, i + 1, f[i], k == 4 ? "not one of the file's columns" : "repeated", names[0],
                              names[1], names[2], names[3]);
        else col[k] = i;
    }
    for (int k = 0; !st && k < 4; k++)
        if (col[k] < 0)
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: line 1: the header has no column '%s' (expected %s,%s,%s,%s)", path,
                              names[k], names[0], names[1], names[2], names[3]);
    t->trial = calloc((size_t)lines, sizeof *t->trial);
    t->trial_i = calloc((size_t)lines, sizeof *t->trial_i);
    t->image = calloc((size_t)lines, sizeof *t->image);
    t->line = calloc((size_t)lines, sizeof *t->line);
    if (!st && (!t->trial || !t->trial_i || !t->image || !t->line)) st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    t->all_int = 1;
    double *row = NULL;
    int64_t *ids = NULL;
    while (!st && *p) {
        int64_t at = line;
        if (*p == '\n' || (*p == '\r' && p[1] == '\n')) { /* blank line */
            p += *p == '\r' ? 2 : 1;
            line++;
            continue;
        }
        nf = next_record(&p, f, 8, &line, path);
        if (nf < 0) {
            st = NPRED_ERR_FORMAT;
            break;
        }
        char where[600];
        snprintf(where, sizeof where, "%s: line %lld", path, (long long)at);
        if (nf != 4) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: %d fields, expected 4 (%s,%s,%s,%s)", where, nf, names[0], names[1],
                              names[2], names[3]);
            break;
        }
        int64_t r = t->rows;
        t->line[r] = at;
        if (!*f[col[0]]) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: trial_indices is empty", where);
            break;
        }
        if (!(t->trial[r] = strdup(f[col[0]]))) {
            st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        t->rows++;
        if (!parse_i64(t->trial[r], &t->trial_i[r])) t->all_int = 0;
        if (!parse_i64(f[col[1]], &t->image[r])) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: image_ids '%s' is not an integer", where, f[col[1]]);
            break;
        }
        int64_t cnt = 0;
        if (r == 0) { /* sizes from the first row */
            if ((st = parse_list(f[col[3]], NULL, 0, &cnt, where, "neuron_ids"))) break;
            t->n = cnt;
            if (cnt < 1) {
                st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron_ids is an empty list", where);
                break;
            }
            row = malloc(sizeof(double) * (size_t)cnt);
            ids = malloc(sizeof(int64_t) * (size_t)cnt);
            t->neuron = malloc(sizeof(int64_t) * (size_t)cnt);
            t->vals = malloc(sizeof(float) * (size_t)cnt * (size_t)lines);
            if (!row || !ids || !t->neuron || !t->vals) {
                st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory for %lld rows of %lld values", path,
                                  (long long)lines, (long long)cnt);
                break;
            }
        }
        if ((st = parse_list(f[col[3]], row, t->n, &cnt, where, "neuron_ids"))) break;
        if (cnt != t->n) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron_ids lists %lld neurons, line %lld lists %lld", where,
                              (long long)cnt, (long long)t->line[0], (long long)t->n);
            break;
        }
        for (int64_t k = 0; k < cnt && !st; k++) {
            if (row[k] != floor(row[k]) || fabs(row[k]) > 9e15)
                st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron_ids: value %lld is not an integer", where, (long long)k);
            else ids[k] = (int64_t)row[k];
        }
        if (st) break;
        if (r == 0) memcpy(t->neuron, ids, sizeof(int64_t) * (size_t)cnt);
        else if (memcmp(ids, t->neuron, sizeof(int64_t) * (size_t)cnt)) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron_ids differ from those of line %lld (every row must list the "
                              "same neurons in the same order)", where, (long long)t->line[0]);
            break;
        }
        if ((st = parse_list(f[col[2]], row, t->n, &cnt, where, value_col))) break;
        if (cnt != t->n) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: %s holds %lld values for %lld neurons", where, value_col,
                              (long long)cnt, (long long)t->n);
            break;
        }
        for (int64_t k = 0; k < cnt && !st; k++) {
            if (fabs(row[k]) > FLT_MAX) /* values are held as float32 */
                st = npred_errorf(NPRED_ERR_VALUE, "%s: %s: value %lld (%g) is beyond the float32 range", where,
                                  value_col, (long long)k, row[k]);
            else t->vals[r * t->n + k] = (float)row[k];
        }
    }
    if (!st && t->rows == 0) st = npred_errorf(NPRED_ERR_FORMAT, "%s: no rows after the header", path);
    free(row);
    free(ids);
    free(buf);
    if (st) table_free(t);
    return st;
}

/* ordering of rows by trial, of neurons by id */
static const table *sort_tab;
static int sort_numeric;
static int cmp_trial(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (sort_numeric) return (sort_tab->trial_i[x] > sort_tab->trial_i[y]) - (sort_tab->trial_i[x] < sort_tab->trial_i[y]);
    return strcmp(sort_tab->trial[x], sort_tab->trial[y]);
}
static const int64_t *sort_ids;
static int cmp_neuron(const void *a, const void *b)
{
    int64_t x = sort_ids[*(const int64_t *)a], y = sort_ids[*(const int64_t *)b];
    return (x > y) - (x < y);
}

static int64_t *iota(int64_t n)
{
    int64_t *v = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; v && i < n; i++) v[i] = i;
    return v;
}

static int trial_cmp(const table *a, int64_t i, const table *b, int64_t j, int numeric)
{
    if (numeric) return (a->trial_i[i] > b->trial_i[j]) - (a->trial_i[i] < b->trial_i[j]);
    return strcmp(a->trial[i], b->trial[j]);
}

/* sort rows; duplicates are errors */
static npred_status order_rows(const table *t, int numeric, int64_t **out)
{
    int64_t *o = iota(t->rows);
    if (!o) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", t->path);
    sort_tab = t;
    sort_numeric = numeric;
    qsort(o, (size_t)t->rows, sizeof *o, cmp_trial);
    for (int64_t i = 1; i < t->rows; i++)
        if (!trial_cmp(t, o[i - 1], t, o[i], numeric)) {
            npred_status st = npred_errorf(NPRED_ERR_FORMAT, "%s: trial %s appears twice (lines %lld and %lld)", t->path,
                                           t->trial[o[i]], (long long)t->line[o[i - 1]], (long long)t->line[o[i]]);
            free(o);
            return st;
        }
    *out = o;
    return NPRED_OK;
}

npred_status npred_submission_score(const char *submission_path, const char *truth_path, npred_score *out)
{
    memset(out, 0, sizeof *out);
    void *sub = NULL, *truth = NULL;
    size_t sub_len = 0, truth_len = 0;
    npred_status st = npred_file_read_all(truth_path, &truth, &truth_len);
    if (!st && !(st = npred_file_read_all(submission_path, &sub, &sub_len)))
        st = npred_submission_score_text(sub, sub_len, submission_path, truth, truth_len, truth_path, out);
    free(sub);
    free(truth);
    return st;
}

npred_status npred_submission_score_text(const char *submission, size_t submission_len, const char *submission_path,
                                         const char *truth, size_t truth_len, const char *truth_path, npred_score *out)
{
    memset(out, 0, sizeof *out);
    table S, G;
    npred_status st = read_table(&G, truth, truth_len, truth_path, "responses");
    if (st) return st;
    if ((st = read_table(&S, submission, submission_len, submission_path, "prediction"))) {
        table_free(&G);
        return st;
    }
    int numeric = S.all_int && G.all_int;
    int64_t *os = NULL, *og = NULL, *ns = NULL, *ng = NULL;
    float *R = NULL, *P = NULL;
    int64_t *img = NULL;
    npred_metrics_repeats g;
    memset(&g, 0, sizeof g);
    double *corr = NULL, *cavg = NULL, *fev = NULL, *feve = NULL;
    if ((st = order_rows(&G, numeric, &og)) || (st = order_rows(&S, numeric, &os))) goto done;
    /* trials: the same set */
    for (int64_t i = 0, j = 0; i < G.rows || j < S.rows;) {
        int c = i == G.rows ? 1 : j == S.rows ? -1 : trial_cmp(&G, og[i], &S, os[j], numeric);
        if (c < 0) {
            st = npred_errorf(NPRED_ERR_VALUE, "%s: trial %s (ground truth %s line %lld) is missing", submission_path,
                              G.trial[og[i]], truth_path, (long long)G.line[og[i]]);
            goto done;
        }
        if (c > 0) {
            st = npred_errorf(NPRED_ERR_VALUE, "%s: line %lld: trial %s is not in the ground truth %s", submission_path,
                              (long long)S.line[os[j]], S.trial[os[j]], truth_path);
            goto done;
        }
        if (G.image[og[i]] != S.image[os[j]]) {
            st = npred_errorf(NPRED_ERR_VALUE, "%s: line %lld: trial %s has image id %lld, the ground truth %lld",
                              submission_path, (long long)S.line[os[j]], S.trial[os[j]], (long long)S.image[os[j]],
                              (long long)G.image[og[i]]);
            goto done;
        }
        i++, j++;
    }
    /* neurons: the same set of ids */
    ns = iota(S.n);
    ng = iota(G.n);
    if (!ns || !ng) {
        st = npred_errorf(NPRED_ERR_NOMEM, "score: out of memory");
        goto done;
    }
    sort_ids = S.neuron;
    qsort(ns, (size_t)S.n, sizeof *ns, cmp_neuron);
    sort_ids = G.neuron;
    qsort(ng, (size_t)G.n, sizeof *ng, cmp_neuron);
    for (int64_t k = 1; k < G.n; k++)
        if (G.neuron[ng[k]] == G.neuron[ng[k - 1]]) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron id %lld is listed twice", truth_path, (long long)G.neuron[ng[k]]);
            goto done;
        }
    for (int64_t k = 1; k < S.n; k++)
        if (S.neuron[ns[k]] == S.neuron[ns[k - 1]]) {
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: neuron id %lld is listed twice", submission_path,
                              (long long)S.neuron[ns[k]]);
            goto done;
        }
    for (int64_t i = 0, j = 0; i < G.n || j < S.n; i++, j++) {
        int64_t a = i < G.n ? G.neuron[ng[i]] : INT64_MAX, b = j < S.n ? S.neuron[ns[j]] : INT64_MAX;
        if (a < b) {
            st = npred_errorf(NPRED_ERR_VALUE, "%s: neuron %lld of the ground truth is missing from neuron_ids",
                              submission_path, (long long)a);
            goto done;
        }
        if (b < a) {
            st = npred_errorf(NPRED_ERR_VALUE, "%s: neuron %lld of neuron_ids is not in the ground truth %s",
                              submission_path, (long long)b, truth_path);
            goto done;
        }
    }
    int64_t T = G.rows, N = G.n;
    R = malloc(sizeof(float) * (size_t)(T * N));
    P = malloc(sizeof(float) * (size_t)(T * N));
    img = malloc(sizeof(int64_t) * (size_t)T);
    corr = malloc(sizeof(double) * (size_t)N);
    cavg = malloc(sizeof(double) * (size_t)N);
    fev = malloc(sizeof(double) * (size_t)N);
    feve = malloc(sizeof(double) * (size_t)N);
    if (!R || !P || !img || !corr || !cavg || !fev || !feve) {
        st = npred_errorf(NPRED_ERR_NOMEM, "score: out of memory for %lld trials x %lld neurons", (long long)T, (long long)N);
        goto done;
    }
    for (int64_t t = 0; t < T; t++) {
        img[t] = G.image[og[t]];
        for (int64_t k = 0; k < N; k++) {
            R[t * N + k] = G.vals[og[t] * N + ng[k]];
            P[t * N + k] = S.vals[os[t] * N + ns[k]];
        }
    }
    if (T < 2) {
        st = npred_errorf(NPRED_ERR_VALUE, "%s: %lld trial; the metrics need at least 2", truth_path, (long long)T);
        goto done;
    }
    if ((st = npred_metrics_repeats_init(&g, img, T))) goto done;
    if ((st = npred_metrics_corr(corr, P, R, T, N, NPRED_METRICS_CORR_EPS, 0))) goto done;
    if ((st = npred_metrics_corr_to_average(cavg, R, P, &g, N, NPRED_METRICS_CORR_EPS))) goto done;
    if ((st = npred_metrics_fev(fev, feve, R, P, &g, N))) goto done;
    out->n_trials = T;
    out->n_neurons = N;
    out->n_images = g.n_images;
    out->single_trial_corr = npred_metrics_mean(corr, N);
    out->corr_to_average = npred_metrics_mean(cavg, N);
    out->feve = npred_metrics_feve_thresholded(fev, feve, N, NPRED_METRICS_FEV_THRESHOLD, &out->n_fev_kept, NULL);
done:
    npred_metrics_repeats_free(&g);
    free(os), free(og), free(ns), free(ng), free(R), free(P), free(img);
    free(corr), free(cavg), free(fev), free(feve);
    table_free(&S);
    table_free(&G);
    return st;
}
