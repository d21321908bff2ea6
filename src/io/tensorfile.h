/* Named tensor lists: what checkpoint readers produce and writers consume.
 *
 * A tensor is a name, a dtype, a shape (up to 8 dims; 0 dims = a scalar) and
 * its data, always contiguous in C order and in the host's byte order. The
 * list owns every name and data buffer. It also carries a small string map of
 * metadata (safetensors "__metadata__", e.g. "npred_config" -> model JSON).
 *
 * Lookups are linear: lists hold tens to hundreds of tensors. */
#ifndef NPRED_IO_TENSORFILE_H
#define NPRED_IO_TENSORFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/bytes.h"
#include "npred/base.h"

#define NPRED_TENSOR_MAXDIM 8

typedef enum {
    NPRED_TENSOR_F32,
    NPRED_TENSOR_F64,
    NPRED_TENSOR_F16,
    NPRED_TENSOR_BF16,
    NPRED_TENSOR_I64,
    NPRED_TENSOR_I32,
    NPRED_TENSOR_I16,
    NPRED_TENSOR_I8,
    NPRED_TENSOR_U8,
    NPRED_TENSOR_BOOL,
    NPRED_TENSOR_NDTYPE
} npred_tensor_dtype;

typedef struct {
    char *name;
    npred_tensor_dtype dtype;
    int ndim;
    int64_t shape[NPRED_TENSOR_MAXDIM];
    void *data;    /* nbytes bytes, C order, native byte order (NULL iff nbytes == 0) */
    size_t nbytes; /* numel * element size */
} npred_tensor;

typedef struct {
    npred_tensor *items;
    size_t n, cap;
    char **meta_keys, **meta_vals; /* n_meta pairs, unique keys */
    size_t n_meta;
} npred_tensor_list;

/* Bytes per element (0 for an invalid dtype). */
size_t npred_tensor_dtype_size(npred_tensor_dtype dt);
/* safetensors spelling: "F32", "BF16", "BOOL", ... ("?" for an invalid dtype). */
const char *npred_tensor_dtype_name(npred_tensor_dtype dt);
/* Parse a safetensors dtype name; NPRED_ERR_FORMAT (unknown name) or
 * NPRED_ERR_UNSUPPORTED (valid safetensors dtype we do not handle, e.g. U16). */
npred_status npred_tensor_dtype_parse(const char *s, npred_tensor_dtype *out);
/* Number of elements (1 for 0-d); -1 if the shape is invalid or overflows. */
int64_t npred_tensor_numel(int ndim, const int64_t *shape);

void npred_tensor_list_init(npred_tensor_list *l);
void npred_tensor_list_free(npred_tensor_list *l);
/* Append a tensor named `name` and copy `data` (numel * dtype size bytes) into it;
 * data NULL gives zeroed storage. Does not check for duplicate names (see
 * npred_tensor_list_check_unique). If out is given it receives the new tensor
 * (valid until the next add). */
npred_status npred_tensor_list_add(npred_tensor_list *l, const char *name, npred_tensor_dtype dt,
                                   int ndim, const int64_t *shape, const void *data,
                                   npred_tensor **out);
/* First tensor with that name, or NULL. */
npred_tensor *npred_tensor_list_find(const npred_tensor_list *l, const char *name);
/* NPRED_ERR_FORMAT naming the first duplicated tensor name, if any (O(n log n)). */
npred_status npred_tensor_list_check_unique(const npred_tensor_list *l);
/* Set (add or replace) a metadata string. */
npred_status npred_tensor_list_set_meta(npred_tensor_list *l, const char *key, const char *value);
/* A parser of a whole file in memory (npred_pth_parse, npred_safetensors_parse). */
typedef npred_status (*npred_tensor_parse_fn)(const void *buf, size_t len, const char *name, npred_tensor_list *out);
/* Read the file at path and parse it into out (initialised here; freed on error). */
npred_status npred_tensor_list_read(const char *path, npred_tensor_parse_fn parse, npred_tensor_list *out);

/* Metadata value or NULL. */
const char *npred_tensor_list_get_meta(const npred_tensor_list *l, const char *key);



#endif
