/* One way to read JSON configuration values (rules in json.h). */
#include "base/json.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INT53 9007199254740992.0

int npred_json_fail(npred_json_reader *r, const cJSON *it, const char *fmt, ...)
{
    if (r->st) return 0;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: key '%s%s': expected %s", r->where, r->section,
                         it && it->string ? it->string : "", what);
    return 0;
}

int npred_json_unknown(npred_json_reader *r, const cJSON *it, const char *hint)
{
    if (!r->st)
        r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: unknown key '%s%s'%s%s%s", r->where, r->section, it->string,
                             hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
    return 0;
}

int npred_json_missing(npred_json_reader *r, const char *key, const char *hint)
{
    if (!r->st)
        r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: key '%s%s' is missing%s%s%s", r->where, r->section, key,
                             hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
    return 0;
}

int npred_json_is_integer(const cJSON *it)
{
    return cJSON_IsNumber(it) && isfinite(it->valuedouble) && it->valuedouble == floor(it->valuedouble) &&
           fabs(it->valuedouble) <= INT53;
}

/* "an integer >= 0", "a number in [0, 1]", "... or null" */
static int fail_range(npred_json_reader *r, const cJSON *it, const char *kind, double lo, double hi, int null_ok)
{
    char range[96] = "";
    if (lo > -NPRED_JSON_ANY && hi < NPRED_JSON_ANY) snprintf(range, sizeof range, " in [%.16g, %.16g]", lo, hi);
    else if (lo > -NPRED_JSON_ANY) snprintf(range, sizeof range, " >= %.16g", lo);
    else if (hi < NPRED_JSON_ANY) snprintf(range, sizeof range, " <= %.16g", hi);
    return npred_json_fail(r, it, "%s%s%s", kind, range, null_ok ? " or null" : "");
}

/* the value of a number key, as a double; integral when integer is set */
static int read_number(npred_json_reader *r, const cJSON *it, int integer, double lo, double hi, int null_ok,
                       double *out)
{
    if (null_ok && cJSON_IsNull(it)) return 2;
    const char *kind = integer ? "an integer" : "a number";
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || (integer && !npred_json_is_integer(it)))
        return fail_range(r, it, kind, lo, hi, null_ok);
    double v = it->valuedouble;
    if (!(v >= lo && v <= hi)) return fail_range(r, it, kind, lo, hi, null_ok);
    *out = v;
    return 1;
}

int npred_json_num(npred_json_reader *r, const cJSON *it, double lo, double hi, double *out)
{
    return read_number(r, it, 0, lo, hi, 0, out);
}

int npred_json_num_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, double *out)
{
    return read_number(r, it, 0, lo, hi, 1, out);
}

static int read_int(npred_json_reader *r, const cJSON *it, double lo, double hi, int null_ok, int *out)
{
    double v = 0;
    int got = read_number(r, it, 1, lo, hi, null_ok, &v);
    if (got != 1) return got;
    if (v < INT_MIN || v > INT_MAX) /* an int key: never beyond int */
        return fail_range(r, it, "an integer", lo > INT_MIN ? lo : INT_MIN, hi < INT_MAX ? hi : INT_MAX, null_ok);
    *out = (int)v;
    return 1;
}

int npred_json_int(npred_json_reader *r, const cJSON *it, double lo, double hi, int *out)
{
    return read_int(r, it, lo, hi, 0, out);
}

int npred_json_int_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, int *out)
{
    return read_int(r, it, lo, hi, 1, out);
}

static int read_i64(npred_json_reader *r, const cJSON *it, double lo, double hi, int null_ok, int64_t *out)
{
    double v = 0;
    int got = read_number(r, it, 1, lo, hi, null_ok, &v);
    if (got == 1) *out = (int64_t)v;
    return got;
}

int npred_json_i64(npred_json_reader *r, const cJSON *it, double lo, double hi, int64_t *out)
{
    return read_i64(r, it, lo, hi, 0, out);
}

int npred_json_i64_or_null(npred_json_reader *r, const cJSON *it, double lo, double hi, int64_t *out)
{
    return read_i64(r, it, lo, hi, 1, out);
}

static int read_bool(npred_json_reader *r, const cJSON *it, int null_ok, int *out)
{
    if (null_ok && cJSON_IsNull(it)) return 2;
    if (!cJSON_IsBool(it)) return npred_json_fail(r, it, "true or false%s", null_ok ? " or null" : "");
    *out = cJSON_IsTrue(it);
    return 1;
}

int npred_json_bool(npred_json_reader *r, const cJSON *it, int *out) { return read_bool(r, it, 0, out); }
int npred_json_bool_or_null(npred_json_reader *r, const cJSON *it, int *out) { return read_bool(r, it, 1, out); }

static int read_str(npred_json_reader *r, const cJSON *it, int null_ok, const char **out)
{
    if (null_ok && cJSON_IsNull(it)) return 2;
    if (!cJSON_IsString(it)) return npred_json_fail(r, it, "a string%s", null_ok ? " or null" : "");
    *out = it->valuestring;
    return 1;
}

int npred_json_str(npred_json_reader *r, const cJSON *it, const char **out) { return read_str(r, it, 0, out); }
int npred_json_str_or_null(npred_json_reader *r, const cJSON *it, const char **out)
{
    return read_str(r, it, 1, out);
}

int npred_json_choice(npred_json_reader *r, const cJSON *it, const char *const *names, int n, int *out)
{
    if (cJSON_IsString(it))
        for (int i = 0; i < n; i++)
            if (!strcmp(it->valuestring, names[i])) {
                *out = i;
                return 1;
            }
    char list[512] = "";
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s\"%s\"", i == 0 ? "" : i + 1 < n ? ", " : " or ",
                              names[i]);
    return npred_json_fail(r, it, "%s", list);
}

int npred_json_pair(npred_json_reader *r, const cJSON *it, int integer, int scalar_ok, double lo, double hi,
                    double out[2])
{
    const char *kind = integer ? (scalar_ok ? "an integer or a pair of integers" : "a pair of integers")
                               : (scalar_ok ? "a number or a pair of numbers" : "a pair of numbers");
    int pair = cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2;
    if (!pair && !(scalar_ok && cJSON_IsNumber(it))) return fail_range(r, it, kind, lo, hi, 0);
    double v[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *e = pair ? cJSON_GetArrayItem(it, i) : it;
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || (integer && !npred_json_is_integer(e)) ||
            !(e->valuedouble >= lo && e->valuedouble <= hi))
            return fail_range(r, it, kind, lo, hi, 0);
        v[i] = e->valuedouble;
    }
    out[0] = v[0];
    out[1] = v[1];
    return 1;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* path: the keys from the root to it, "a.b[2].c" */
static int unique_keys(npred_json_reader *r, const cJSON *it, char *path, size_t len, size_t cap)
{
    int n = 0;
    for (const cJSON *e = it->child; e; e = e->next) n++;
    if (cJSON_IsObject(it) && n > 1) {
        const char **keys = malloc((size_t)n * sizeof *keys);
        if (!keys) {
            r->st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", r->where);
            return 0;
        }
        int k = 0;
        for (const cJSON *e = it->child; e; e = e->next) keys[k++] = e->string ? e->string : "";
        qsort(keys, (size_t)n, sizeof *keys, cmp_key);
        const char *dup = NULL;
        for (int i = 1; i < n && !dup; i++)
            if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
        if (dup) {
            snprintf(path + len, cap - len, "%s%s", len ? "." : "", dup);
            r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: key '%s%s' appears more than once (give each key once)",
                                 r->where, r->section, path);
        }
        free(keys);
        if (dup) return 0;
    }
    int i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++) {
        if (!cJSON_IsObject(e) && !cJSON_IsArray(e)) continue;
        if (cJSON_IsObject(it)) snprintf(path + len, cap - len, "%s%s", len ? "." : "", e->string ? e->string : "");
        else snprintf(path + len, cap - len, "[%d]", i);
        size_t l2 = strlen(path);
        if (!unique_keys(r, e, path, l2, cap)) return 0;
        path[len] = 0;
    }
    return 1;
}

int npred_json_unique_keys(npred_json_reader *r, const cJSON *it)
{
    if (r->st) return 0;
    if (!it || (!cJSON_IsObject(it) && !cJSON_IsArray(it))) return 1;
    char path[512] = "";
    return unique_keys(r, it, path, 0, sizeof path);
}
