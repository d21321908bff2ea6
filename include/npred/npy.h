/* NumPy .npy read/write.
 *
 * Reads format versions 1.0, 2.0 and 3.0; every numeric dtype (b1, i1..i8, u1..u8,
 * f2, f4, f8), fixed-width strings '<U' (UTF-32) and '|S' (bytes); both byte
 * orders (data is converted to native order on read); 0-d arrays. C order only:
 * Fortran order, object arrays (pickles), truncated data and malformed headers
 * return NPRED_ERR_FORMAT with a message naming the file. */
#ifndef NPRED_NPY_H
#define NPRED_NPY_H

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NPRED_NPY_MAXDIM 16

typedef enum {
    NPRED_DT_BOOL,
    NPRED_DT_I8, NPRED_DT_I16, NPRED_DT_I32, NPRED_DT_I64,
    NPRED_DT_U8, NPRED_DT_U16, NPRED_DT_U32, NPRED_DT_U64,
    NPRED_DT_F16, NPRED_DT_F32, NPRED_DT_F64,
    NPRED_DT_STR_U, /* fixed-width unicode, itemsize = 4 * chars, stored as UTF-32 native */
    NPRED_DT_STR_S  /* fixed-width bytes, itemsize = chars */
} npred_dtype;

typedef struct {
    npred_dtype dtype;
    int ndim;
    int64_t shape[NPRED_NPY_MAXDIM];
    size_t itemsize;  /* bytes per element */
    size_t count;     /* number of elements (1 for 0-d) */
    void *data;       /* count * itemsize bytes, native byte order, C order */
} npred_array;

/* Read a .npy file. On success `out` owns its data (free with npred_array_free). */
NPRED_API npred_status npred_npy_read(const char *path, npred_array *out);
/* Parse a .npy image held in memory; `name` is used in error messages. */
NPRED_API npred_status npred_npy_parse(const void *buf, size_t len, const char *name, npred_array *out);
/* Write atomically (temp file + rename). Little-endian, format 1.0 (2.0 if the
 * header needs it). */
NPRED_API npred_status npred_npy_write(const char *path, const npred_array *a);
/* Serialize into a malloc'ed buffer. */
NPRED_API npred_status npred_npy_serialize(const npred_array *a, void **buf, size_t *len);

NPRED_API void npred_array_free(npred_array *a);
/* Make an array owning zeroed storage. */
NPRED_API npred_status npred_array_alloc(npred_array *a, npred_dtype dt, size_t itemsize, int ndim,
                               const int64_t *shape);

/* Convert any numeric array to a newly malloc'ed float32 / float64 / int64 buffer
 * (count elements). Strings give NPRED_ERR_SHAPE. */
NPRED_API npred_status npred_array_to_f32(const npred_array *a, float **out);
NPRED_API npred_status npred_array_to_f64(const npred_array *a, double **out);
NPRED_API npred_status npred_array_to_i64(const npred_array *a, int64_t **out);

/* Element i of a string array as a NUL-terminated UTF-8 string in buf
 * (trailing NULs stripped as NumPy does). */
NPRED_API npred_status npred_array_get_str(const npred_array *a, size_t i, char *buf, size_t bufsize);

/* dtype name as NumPy writes it in a header ("<f4", "|b1", "<U12"). */
NPRED_API void npred_dtype_descr(npred_dtype dt, size_t itemsize, char *buf, size_t bufsize);
/* Size in bytes of one element of a numeric dtype (0 for strings). */
NPRED_API size_t npred_dtype_size(npred_dtype dt);

#ifdef __cplusplus
}
#endif
#endif
