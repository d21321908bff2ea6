/* Named tensor lists shared by the checkpoint readers and writers. */
#include "io/tensorfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[NPRED_TENSOR_NDTYPE] = {
    [NPRED_TENSOR_F32] = {"F32", 4},  [NPRED_TENSOR_F64] = {"F64", 8},
    [NPRED_TENSOR_F16] = {"F16", 2},  [NPRED_TENSOR_BF16] = {"BF16", 2},
    [NPRED_TENSOR_I64] = {"I64", 8},  [NPRED_TENSOR_I32] = {"I32", 4},
    [NPRED_TENSOR_I16] = {"I16", 2},  [NPRED_TENSOR_I8] = {"I8", 1},
    [NPRED_TENSOR_U8] = {"U8", 1},    [NPRED_TENSOR_BOOL] = {"BOOL", 1},
};

/* safetensors dtypes that are valid in the format but not handled here */
static const char *const unsupported_dtypes[] = {"U16", "U32", "U64", "F8_E5M2", "F8_E4M3",
                                                 "F8_E4M3FN", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                                 "F4", "C64"};

size_t npred_tensor_dtype_size(npred_tensor_dtype dt)
{
    return (unsigned)dt < NPRED_TENSOR_NDTYPE ? dtypes[dt].size : 0;
}

const char *npred_tensor_dtype_name(npred_tensor_dtype dt)
{
    return (unsigned)dt < NPRED_TENSOR_NDTYPE ? dtypes[dt].name : "?";
}

npred_status npred_tensor_dtype_parse(const char *s, npred_tensor_dtype *out)
{
    for (int i = 0; i < NPRED_TENSOR_NDTYPE; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (npred_tensor_dtype)i;
            return NPRED_OK;
        }
    for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof *unsupported_dtypes; i++)
        if (strcmp(s, unsupported_dtypes[i]) == 0)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "dtype '%s' is not supported", s);
    return npred_errorf(NPRED_ERR_FORMAT, "unknown dtype '%s'", s);
}

int64_t npred_tensor_numel(int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > NPRED_TENSOR_MAXDIM) return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

void npred_tensor_list_init(npred_tensor_list *l) { memset(l, 0, sizeof *l); }

void npred_tensor_list_free(npred_tensor_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].name);
        free(l->items[i].data);
    }
    for (size_t i = 0; i < l->n_meta; i++) {
        free(l->meta_keys[i]);
        free(l->meta_vals[i]);
    }
    free(l->items);
    free(l->meta_keys);
    free(l->meta_vals);
    memset(l, 0, sizeof *l);
}

npred_status npred_tensor_list_add(npred_tensor_list *l, const char *name, npred_tensor_dtype dt,
                                   int ndim, const int64_t *shape, const void *data,
                                   npred_tensor **out)
{
    size_t es = npred_tensor_dtype_size(dt);
    if (!name || !es) return npred_errorf(NPRED_ERR_ARG, "tensor list: bad name or dtype");
    int64_t numel = npred_tensor_numel(ndim, shape);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / es)
        return npred_errorf(NPRED_ERR_SHAPE, "tensor '%s': invalid shape", name);
    size_t nbytes = (size_t)numel * es;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        npred_tensor *it = realloc(l->items, cap * sizeof *it);
        if (!it) return npred_errorf(NPRED_ERR_NOMEM, "tensor list: out of memory");
        l->items = it;
        l->cap = cap;
    }
    npred_tensor *t = &l->items[l->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (nbytes) t->data = data ? malloc(nbytes) : calloc(1, nbytes);
    if (!t->name || (nbytes && !t->data)) {
        free(t->name);
        free(t->data);
        return npred_errorf(NPRED_ERR_NOMEM, "tensor '%s': cannot allocate %zu bytes", name, nbytes);
    }
    if (data && nbytes) memcpy(t->data, data, nbytes);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    l->n++;
    if (out) *out = t;
    return NPRED_OK;
}

npred_tensor *npred_tensor_list_find(const npred_tensor_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0) return &l->items[i];
    return NULL;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

npred_status npred_tensor_list_check_unique(const npred_tensor_list *l)
{
    if (l->n < 2) return NPRED_OK;
    char **names = malloc(l->n * sizeof *names);
    char ***refs = malloc(l->n * sizeof *refs);
    if (!names || !refs) {
        free(names);
        free(refs);
        return npred_errorf(NPRED_ERR_NOMEM, "tensor list: out of memory");
    }
    for (size_t i = 0; i < l->n; i++) {
        names[i] = l->items[i].name;
        refs[i] = &names[i];
    }
    qsort(refs, l->n, sizeof *refs, cmp_names);
    npred_status s = NPRED_OK;
    for (size_t i = 1; i < l->n; i++)
        if (strcmp(*refs[i - 1], *refs[i]) == 0) {
            s = npred_errorf(NPRED_ERR_FORMAT, "duplicate tensor name '%s'", *refs[i]);
            break;
        }
    free(names);
    free(refs);
    return s;
}

npred_status npred_tensor_list_set_meta(npred_tensor_list *l, const char *key, const char *value)
{
    char *v = strdup(value);
    if (!v) return npred_errorf(NPRED_ERR_NOMEM, "metadata: out of memory");
    for (size_t i = 0; i < l->n_meta; i++)
        if (strcmp(l->meta_keys[i], key) == 0) {
            free(l->meta_vals[i]);
            l->meta_vals[i] = v;
            return NPRED_OK;
        }
    char *k = strdup(key);
    char **ks = realloc(l->meta_keys, (l->n_meta + 1) * sizeof *ks);
    if (ks) l->meta_keys = ks;
    char **vs = realloc(l->meta_vals, (l->n_meta + 1) * sizeof *vs);
    if (vs) l->meta_vals = vs;
    if (!k || !ks || !vs) {
        free(k);
        free(v);
        return npred_errorf(NPRED_ERR_NOMEM, "metadata: out of memory");
    }
    l->meta_keys[l->n_meta] = k;
    l->meta_vals[l->n_meta] = v;
    l->n_meta++;
    return NPRED_OK;
}

const char *npred_tensor_list_get_meta(const npred_tensor_list *l, const char *key)
{
    for (size_t i = 0; i < l->n_meta; i++)
        if (strcmp(l->meta_keys[i], key) == 0) return l->meta_vals[i];
    return NULL;
}

npred_status npred_tensor_list_read(const char *path, npred_tensor_parse_fn parse, npred_tensor_list *out)
{
    npred_tensor_list_init(out);
    void *buf;
    size_t len;
    npred_status s = npred_file_read_all(path, &buf, &len);
    if (s) return s;
    s = parse(buf, len, path, out);
    free(buf);
    return s;
}
