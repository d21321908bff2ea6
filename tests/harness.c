#include "harness.h"
#include "nn/params.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int n_pass, n_fail, n_skip;
static int cur_fail, cur_skip;
static const char *cur_name = "?";

int th_check(int ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) return 1;
    va_list ap;
    if (!cur_fail) printf("FAIL %s\n", cur_name);
    printf("  %s:%d: ", file, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    cur_fail++;
    return 0;
}

int th_check_ok(npred_status s, const char *expr, const char *file, int line)
{
    return th_check(s == NPRED_OK, file, line, "%s -> %s: %s", expr, npred_status_str(s),
                    npred_last_error());
}

void th_run(const char *name, void (*fn)(void))
{
    cur_name = name;
    cur_fail = 0;
    cur_skip = 0;
    fn();
    if (cur_fail) n_fail++;
    else if (cur_skip) n_skip++;
    else {
        n_pass++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

void th_skip(const char *reason)
{
    cur_skip = 1;
    printf("SKIP %s: %s\n", cur_name, reason);
}

int th_summary(void)
{
    if (n_skip) printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    else printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

static int close_generic(const char *what, size_t n, double rtol, double atol,
                         double (*get)(const void *, size_t), const void *g, const void *r)
{
    size_t bad = 0, worst = 0;
    double worst_ex = -1;
    for (size_t i = 0; i < n; i++) {
        double a = get(g, i), b = get(r, i);
        double lim = atol + rtol * fabs(b);
        double ex = fabs(a - b) - lim;
        if (!(fabs(a - b) <= lim)) { /* NaN anywhere fails, even against a NaN */
            bad++;
            if (ex > worst_ex || isnan(ex)) { worst_ex = isnan(ex) ? INFINITY : ex; worst = i; }
        }
    }
    if (bad)
        return th_check(0, __FILE__, __LINE__,
                        "%s: %zu of %zu elements off (worst at %zu: got %.9g, want %.9g, rtol %g atol %g)",
                        what, bad, n, worst, get(g, worst), get(r, worst), rtol, atol);
    return 1;
}
static double get_f32(const void *p, size_t i) { return ((const float *)p)[i]; }
static double get_f64(const void *p, size_t i) { return ((const double *)p)[i]; }

int th_close_f32(const char *what, const float *got, const float *ref, size_t n, double rtol, double atol)
{
    if (!got || !ref) return th_check(0, __FILE__, __LINE__, "%s: missing data", what);
    return close_generic(what, n, rtol, atol, get_f32, got, ref);
}

int th_close_f64(const char *what, const double *got, const double *ref, size_t n, double rtol, double atol)
{
    if (!got || !ref) return th_check(0, __FILE__, __LINE__, "%s: missing data", what);
    return close_generic(what, n, rtol, atol, get_f64, got, ref);
}

int th_case_open(th_case *c, const char *name)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->dir, sizeof c->dir, "tests/fixtures/%s", name);
    char path[640];
    snprintf(path, sizeof path, "%s/case.json", c->dir);
    FILE *f = fopen(path, "rb");
    if (!f) return th_check(0, __FILE__, __LINE__, "missing fixture %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = 0;
    c->json = cJSON_Parse(buf);
    free(buf);
    if (!c->json) return th_check(0, __FILE__, __LINE__, "%s: invalid JSON", path);
    return 1;
}

void th_case_close(th_case *c)
{
    cJSON_Delete(c->json);
    c->json = NULL;
}

static int load(const th_case *c, const char *rel, npred_array *a)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", c->dir, rel);
    npred_status s = npred_npy_read(path, a);
    if (s != NPRED_OK)
        return th_check(0, __FILE__, __LINE__, "fixture %s: %s", path, npred_last_error());
    return 1;
}

static void keep_shape(npred_array *a, npred_array *shape)
{
    if (shape) {
        *shape = *a;
        shape->data = NULL;
    }
    npred_array_free(a);
}

float *th_load_f32(const th_case *c, const char *rel, npred_array *shape)
{
    npred_array a;
    float *out = NULL;
    if (!load(c, rel, &a)) return NULL;
    if (npred_array_to_f32(&a, &out) != NPRED_OK) th_check(0, __FILE__, __LINE__, "%s", npred_last_error());
    keep_shape(&a, shape);
    return out;
}

double *th_load_f64(const th_case *c, const char *rel, npred_array *shape)
{
    npred_array a;
    double *out = NULL;
    if (!load(c, rel, &a)) return NULL;
    if (npred_array_to_f64(&a, &out) != NPRED_OK) th_check(0, __FILE__, __LINE__, "%s", npred_last_error());
    keep_shape(&a, shape);
    return out;
}

int64_t *th_load_i64(const th_case *c, const char *rel, npred_array *shape)
{
    npred_array a;
    int64_t *out = NULL;
    if (!load(c, rel, &a)) return NULL;
    if (npred_array_to_i64(&a, &out) != NPRED_OK) th_check(0, __FILE__, __LINE__, "%s", npred_last_error());
    keep_shape(&a, shape);
    return out;
}

cJSON *th_get(cJSON *root, ...)
{
    va_list ap;
    va_start(ap, root);
    const char *k;
    while (root && (k = va_arg(ap, const char *)) != NULL) root = cJSON_GetObjectItemCaseSensitive(root, k);
    va_end(ap);
    return root;
}

double th_num(cJSON *root, double dflt, ...)
{
    va_list ap;
    va_start(ap, dflt);
    const char *k;
    while (root && (k = va_arg(ap, const char *)) != NULL) root = cJSON_GetObjectItemCaseSensitive(root, k);
    va_end(ap);
    if (root && cJSON_IsNumber(root)) return root->valuedouble;
    if (root && cJSON_IsBool(root)) return cJSON_IsTrue(root);
    return dflt;
}

void th_tol(const th_case *c, const char *kind, const char *rel, double *rtol, double *atol)
{
    int grads = strcmp(kind, "grads") == 0;
    *rtol = grads ? 1e-3 : 1e-4;
    *atol = grads ? 1e-4 : 1e-5;
    cJSON *t = th_get(c->json, "tolerance", kind, NULL);
    if (t) {
        *rtol = th_num(t, *rtol, "rtol", NULL);
        *atol = th_num(t, *atol, "atol", NULL);
    }
    cJSON *pf = rel ? th_get(c->json, "tolerance", "per_file", rel, NULL) : NULL;
    if (!pf && rel) { /* per_file keys may omit the .npy suffix */
        char k[512];
        snprintf(k, sizeof k, "%s", rel);
        char *dot = strstr(k, ".npy");
        if (dot) *dot = 0;
        pf = th_get(c->json, "tolerance", "per_file", k, NULL);
    }
    if (pf) {
        *rtol = th_num(pf, *rtol, "rtol", NULL);
        *atol = th_num(pf, *atol, "atol", NULL);
    }
}

/* Values only: the caller has checked that the fixture holds n elements of the
 * expected shape. */
static int compare_values(const th_case *c, const char *kind, const char *rel, const float *got, size_t n)
{
    npred_array sh;
    float *ref = th_load_f32(c, rel, &sh);
    if (!ref) return 0;
    int ok = th_check(sh.count == n, __FILE__, __LINE__, "%s/%s: %zu elements, computed %zu", c->name,
                      rel, sh.count, n);
    if (ok) {
        double rtol, atol;
        th_tol(c, kind, rel, &rtol, &atol);
        char what[700];
        snprintf(what, sizeof what, "%s/%s", c->name, rel);
        ok = th_close_f32(what, got, ref, n, rtol, atol);
    }
    free(ref);
    return ok;
}

/* 1 if a fixture of shape sh has exactly the shape dims[0..ndim); else a failed
 * CHECK naming both shapes. The reference export writes 0-d buffers
 * (num_batches_tracked) as (1,), accepted as 0-d. */
static int same_shape(const th_case *c, const char *rel, const npred_array *sh, int ndim, const int64_t *dims)
{
    int same = sh->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = sh->shape[i] == dims[i];
    if (ndim == 0 && sh->ndim == 1 && sh->shape[0] == 1) same = 1;
    if (same) return 1;
    char a[160] = "", b[160] = "";
    for (int i = 0; i < sh->ndim; i++)
        snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", i ? ", " : "", (long long)sh->shape[i]);
    for (int i = 0; i < ndim; i++)
        snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", i ? ", " : "", (long long)dims[i]);
    return th_check(0, __FILE__, __LINE__, "%s/%s: fixture shape (%s), computed (%s)", c->name, rel, a, b);
}

int th_compare_dims(const th_case *c, const char *kind, const char *rel, const float *got, int ndim,
                    const int64_t *dims)
{
    npred_array sh;
    float *ref = th_load_f32(c, rel, &sh);
    if (!ref) return 0;
    free(ref);
    if (!same_shape(c, rel, &sh, ndim, dims)) return 0;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    return compare_values(c, kind, rel, got, n);
}

double th_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) * 0x1.0p-52 - 1.0;
}

static int skipped(const char *key, const char *const *skip)
{
    for (; skip && *skip; skip++)
        if (!strcmp(key, *skip)) return 1;
    return 0;
}

int th_load_table(const th_case *c, void *table, const char *group, const char *prefix, const char *const *skip)
{
    npred_ptable *t = table;
    cJSON *ps = th_get(c->json, "files", group, NULL);
    if (!th_check(ps != NULL, __FILE__, __LINE__, "%s: no files.%s", c->name, group)) return 0;
    cJSON *it;
    int n = 0;
    cJSON_ArrayForEach(it, ps)
    {
        if (skipped(it->string, skip)) continue;
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, it->string);
        int idx = npred_ptable_find(t, name);
        if (!th_check(idx >= 0, __FILE__, __LINE__, "%s: no table entry %s", c->name, name)) continue;
        npred_array sh;
        float *v = th_load_f32(c, it->valuestring, &sh);
        if (v && same_shape(c, it->valuestring, &sh, t->items[idx].ndim, t->items[idx].shape) &&
            th_check(sh.count == t->items[idx].count, __FILE__, __LINE__, "%s: %zu elements, table has %zu", name,
                     sh.count, t->items[idx].count)) {
            memcpy(npred_ptable_ptr(t, idx), v, sh.count * sizeof(float));
            n++;
        }
        free(v);
    }
    return n;
}

int th_compare_table(const th_case *c, void *table, const char *group, const char *kind, const char *prefix,
                     const char *const *skip)
{
    npred_ptable *t = table;
    cJSON *ps = th_get(c->json, "files", group, NULL);
    if (!th_check(ps != NULL, __FILE__, __LINE__, "%s: no files.%s", c->name, group)) return 0;
    int grads = !strcmp(group, "grads") || strstr(group, "grads") != NULL;
    cJSON *it;
    int ok = 1, compared = 0;
    cJSON_ArrayForEach(it, ps)
    {
        if (skipped(it->string, skip)) continue;
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, it->string);
        int idx = npred_ptable_find(t, name);
        if (!th_check(idx >= 0, __FILE__, __LINE__, "%s: no table entry %s", c->name, name)) {
            ok = 0;
            continue;
        }
        const float *v = grads ? npred_ptable_gradptr(t, idx) : npred_ptable_ptr(t, idx);
        if (!th_check(v != NULL, __FILE__, __LINE__, "%s: %s has no gradient", c->name, name)) {
            ok = 0;
            continue;
        }
        ok &= th_compare_dims(c, kind, it->valuestring, v, t->items[idx].ndim, t->items[idx].shape);
        compared++;
    }
    /* an empty group compares nothing: a test built on it would pass by accident */
    return th_check(compared > 0, __FILE__, __LINE__, "%s: files.%s lists nothing to compare", c->name, group) && ok;
}

char *th_read_stream(FILE *f)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf) buf[n] = 0;
    return buf;
}

int th_shell(char **out, const char *cmd)
{
    size_t cl = strlen(cmd) + 16;
    char *full = malloc(cl);
    if (!full) return -1;
    snprintf(full, cl, "( %s ) 2>&1", cmd);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    char *buf = th_read_stream(p);
    int status = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *th_npred_bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

int th_npred(char **out, const char *fmt, ...)
{
    char args[4096], cmd[4400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof args) return -1;
    snprintf(cmd, sizeof cmd, "%s %s", th_npred_bin(), args);
    return th_shell(out, cmd);
}
