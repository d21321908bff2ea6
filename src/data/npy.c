/* NumPy .npy reader and writer (format versions 1.0, 2.0, 3.0). */
#include "npred/npy.h"
#include "base/bytes.h"
#include "base/fileio.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

size_t npred_dtype_size(npred_dtype dt)
{
    switch (dt) {
    case NPRED_DT_BOOL: case NPRED_DT_I8: case NPRED_DT_U8: return 1;
    case NPRED_DT_I16: case NPRED_DT_U16: case NPRED_DT_F16: return 2;
    case NPRED_DT_I32: case NPRED_DT_U32: case NPRED_DT_F32: return 4;
    case NPRED_DT_I64: case NPRED_DT_U64: case NPRED_DT_F64: return 8;
    case NPRED_DT_STR_U: case NPRED_DT_STR_S: return 0;
    }
    return 0;
}

void npred_dtype_descr(npred_dtype dt, size_t itemsize, char *buf, size_t n)
{
    switch (dt) {
    case NPRED_DT_BOOL: snprintf(buf, n, "|b1"); break;
    case NPRED_DT_I8: snprintf(buf, n, "|i1"); break;
    case NPRED_DT_U8: snprintf(buf, n, "|u1"); break;
    case NPRED_DT_I16: snprintf(buf, n, "<i2"); break;
    case NPRED_DT_I32: snprintf(buf, n, "<i4"); break;
    case NPRED_DT_I64: snprintf(buf, n, "<i8"); break;
    case NPRED_DT_U16: snprintf(buf, n, "<u2"); break;
    case NPRED_DT_U32: snprintf(buf, n, "<u4"); break;
    case NPRED_DT_U64: snprintf(buf, n, "<u8"); break;
    case NPRED_DT_F16: snprintf(buf, n, "<f2"); break;
    case NPRED_DT_F32: snprintf(buf, n, "<f4"); break;
    case NPRED_DT_F64: snprintf(buf, n, "<f8"); break;
    case NPRED_DT_STR_U: snprintf(buf, n, "<U%zu", itemsize / 4); break;
    case NPRED_DT_STR_S: snprintf(buf, n, "|S%zu", itemsize); break;
    }
}

void npred_array_free(npred_array *a)
{
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

static int count_elems(int ndim, const int64_t *shape, size_t *count)
{
    size_t c = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return 0;
        if (shape[i] && c > SIZE_MAX / (size_t)shape[i]) return 0;
        c *= (size_t)shape[i];
    }
    *count = c;
    return 1;
}

npred_status npred_array_alloc(npred_array *a, npred_dtype dt, size_t itemsize, int ndim, const int64_t *shape)
{
    memset(a, 0, sizeof *a);
    if (ndim < 0 || ndim > NPRED_NPY_MAXDIM)
        return npred_errorf(NPRED_ERR_ARG, "array with %d dimensions (at most %d supported)", ndim,
                            NPRED_NPY_MAXDIM);
    size_t fixed = npred_dtype_size(dt);
    if (fixed) itemsize = fixed;
    if (itemsize == 0 || (dt == NPRED_DT_STR_U && itemsize % 4))
        return npred_errorf(NPRED_ERR_ARG, "invalid item size %zu for a string array", itemsize);
    a->dtype = dt;
    a->ndim = ndim;
    for (int i = 0; i < ndim; i++) a->shape[i] = shape[i];
    a->itemsize = itemsize;
    if (!count_elems(ndim, shape, &a->count) || (a->count && a->count > SIZE_MAX / itemsize))
        return npred_errorf(NPRED_ERR_ARG, "array shape too large");
    a->data = npred_calloc(a->count, itemsize);
    if (!a->data) return npred_errorf(NPRED_ERR_NOMEM, "cannot allocate %zu x %zu bytes", a->count, itemsize);
    return NPRED_OK;
}

/* ---- header parsing: a Python dict literal with three known keys ---- */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static int accept(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* a quoted Python string (single or double quotes, no escapes needed here) */
static int parse_str(cursor *c, char *out, size_t n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (k + 1 >= n) return 0;
        out[k++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    out[k] = 0;
    return 1;
}

static int parse_descr(const char *d, npred_dtype *dt, size_t *itemsize, int *swap, const char **why)
{
    char order = d[0];
    if (order != '<' && order != '>' && order != '|' && order != '=') {
        *why = "byte-order character missing";
        return 0;
    }
    char kind = d[1];
    if (!kind) {
        *why = "empty type";
        return 0;
    }
    char *endp;
    errno = 0;
    unsigned long long sz = strtoull(d + 2, &endp, 10);
    if (kind == 'O') {
        *why = "object arrays (Python pickles) are not supported";
        return 0;
    }
    if (*endp || endp == d + 2 || errno || sz == 0 || sz > (1ull << 30)) {
        *why = "malformed type size";
        return 0;
    }
    int big = order == '>';
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    int native_big = 1;
#else
    int native_big = 0;
#endif
    if (order == '=') big = native_big;
    *swap = (order != '|') && (big != native_big);
    *itemsize = (size_t)sz;
    switch (kind) {
    case 'b':
        if (sz != 1) break;
        *dt = NPRED_DT_BOOL;
        return 1;
    case 'i':
        if (sz == 1) *dt = NPRED_DT_I8;
        else if (sz == 2) *dt = NPRED_DT_I16;
        else if (sz == 4) *dt = NPRED_DT_I32;
        else if (sz == 8) *dt = NPRED_DT_I64;
        else break;
        return 1;
    case 'u':
        if (sz == 1) *dt = NPRED_DT_U8;
        else if (sz == 2) *dt = NPRED_DT_U16;
        else if (sz == 4) *dt = NPRED_DT_U32;
        else if (sz == 8) *dt = NPRED_DT_U64;
        else break;
        return 1;
    case 'f':
        if (sz == 2) *dt = NPRED_DT_F16;
        else if (sz == 4) *dt = NPRED_DT_F32;
        else if (sz == 8) *dt = NPRED_DT_F64;
        else break;
        return 1;
    case 'U':
        *dt = NPRED_DT_STR_U;
        *itemsize = (size_t)sz * 4;
        return 1;
    case 'S':
    case 'a':
        *dt = NPRED_DT_STR_S;
        *swap = 0;
        return 1;
    case 'c':
        *why = "complex dtypes are not supported";
        return 0;
    default:
        break;
    }
    *why = "unsupported dtype";
    return 0;
}

static npred_status parse_header(const char *h, size_t len, const char *name, npred_array *a, int *swap)
{
    cursor c = {h, h + len};
    char key[64], descr[64] = "";
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    int64_t shape[NPRED_NPY_MAXDIM];
    int ndim = 0;
    if (!accept(&c, '{')) return npred_errorf(NPRED_ERR_FORMAT, "%s: npy header is not a dict", name);
    for (;;) {
        if (accept(&c, '}')) break;
        if (!parse_str(&c, key, sizeof key) || !accept(&c, ':'))
            return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed npy header", name);
        if (!strcmp(key, "descr")) {
            skip_ws(&c);
            if (c.p < c.end && *c.p == '[')
                return npred_errorf(NPRED_ERR_FORMAT, "%s: structured dtypes are not supported", name);
            if (!parse_str(&c, descr, sizeof descr))
                return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed 'descr' in npy header", name);
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            skip_ws(&c);
            if ((size_t)(c.end - c.p) >= 4 && !strncmp(c.p, "True", 4)) {
                fortran = 1;
                c.p += 4;
            } else if ((size_t)(c.end - c.p) >= 5 && !strncmp(c.p, "False", 5)) {
                c.p += 5;
            } else {
                return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed 'fortran_order' in npy header", name);
            }
            have_order = 1;
        } else if (!strcmp(key, "shape")) {
            if (!accept(&c, '('))
                return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed 'shape' in npy header", name);
            for (;;) {
                if (accept(&c, ')')) break;
                skip_ws(&c);
                if (ndim >= NPRED_NPY_MAXDIM)
                    return npred_errorf(NPRED_ERR_FORMAT, "%s: more than %d dimensions", name,
                                        NPRED_NPY_MAXDIM);
                if (c.p >= c.end || !isdigit((unsigned char)*c.p))
                    return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed 'shape' in npy header", name);
                int64_t v = 0;
                while (c.p < c.end && isdigit((unsigned char)*c.p)) {
                    if (v > (INT64_MAX - 9) / 10)
                        return npred_errorf(NPRED_ERR_FORMAT, "%s: dimension too large", name);
                    v = v * 10 + (*c.p++ - '0');
                }
                skip_ws(&c);
                if (c.p < c.end && *c.p == 'L') c.p++; /* Python 2 longs */
                shape[ndim++] = v;
                if (accept(&c, ',')) continue;
                if (accept(&c, ')')) break;
                return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed 'shape' in npy header", name);
            }
            have_shape = 1;
        } else {
            return npred_errorf(NPRED_ERR_FORMAT, "%s: unknown key '%s' in npy header", name, key);
        }
        if (accept(&c, ',')) continue;
        if (accept(&c, '}')) break;
        return npred_errorf(NPRED_ERR_FORMAT, "%s: malformed npy header", name);
    }
    if (!have_descr || !have_order || !have_shape)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: npy header lacks %s", name,
                            !have_descr ? "'descr'" : !have_order ? "'fortran_order'" : "'shape'");
    const char *why = "";
    npred_dtype dt;
    size_t itemsize;
    if (!parse_descr(descr, &dt, &itemsize, swap, &why))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: dtype '%s': %s", name, descr, why);
    if (fortran && ndim > 1) {
        int nontrivial = 0;
        for (int i = 0; i < ndim; i++) nontrivial += shape[i] > 1;
        if (nontrivial > 1)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: Fortran-order arrays are not supported (save with C order)",
                                name);
    }
    memset(a, 0, sizeof *a);
    a->dtype = dt;
    a->itemsize = itemsize;
    a->ndim = ndim;
    for (int i = 0; i < ndim; i++) a->shape[i] = shape[i];
    if (!count_elems(ndim, shape, &a->count) || (a->count && a->count > SIZE_MAX / itemsize))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: array shape too large", name);
    return NPRED_OK;
}

npred_status npred_npy_parse(const void *buf, size_t len, const char *name, npred_array *out)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(b, MAGIC, 6))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: not a .npy file (bad magic)", name);
    unsigned major = b[6];
    size_t hlen, off;
    if (major == 1) {
        hlen = (size_t)b[8] | ((size_t)b[9] << 8);
        off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return npred_errorf(NPRED_ERR_FORMAT, "%s: truncated .npy header", name);
        hlen = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        off = 12;
    } else {
        return npred_errorf(NPRED_ERR_FORMAT, "%s: unsupported .npy format version %u.%u", name, major, b[7]);
    }
    if (hlen > len - off) return npred_errorf(NPRED_ERR_FORMAT, "%s: truncated .npy header", name);
    int swap = 0;
    npred_array a;
    npred_status s = parse_header((const char *)b + off, hlen, name, &a, &swap);
    if (s) return s;
    off += hlen;
    size_t nbytes = a.count * a.itemsize;
    if (len - off < nbytes)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: truncated data: %zu bytes, expected %zu for %zu elements", name,
                            len - off, nbytes, a.count);
    a.data = malloc(nbytes ? nbytes : 1);
    if (!a.data) return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate %zu bytes", name, nbytes);
    memcpy(a.data, b + off, nbytes);
    if (swap) {
        if (a.dtype == NPRED_DT_STR_U) npred_bswap_elems(a.data, a.count * (a.itemsize / 4), 4);
        else if (a.itemsize > 1) npred_bswap_elems(a.data, a.count, a.itemsize);
    }
    if (a.dtype == NPRED_DT_BOOL) /* normalise to 0/1 */
        for (size_t i = 0; i < a.count; i++) ((unsigned char *)a.data)[i] = ((unsigned char *)a.data)[i] != 0;
    *out = a;
    return NPRED_OK;
}

npred_status npred_npy_read(const char *path, npred_array *out)
{
    memset(out, 0, sizeof *out);
    void *buf;
    size_t len;
    npred_status s = npred_file_read_all(path, &buf, &len);
    if (s) return s;
    s = npred_npy_parse(buf, len, path, out);
    free(buf);
    return s;
}

npred_status npred_npy_serialize(const npred_array *a, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (a->ndim < 0 || a->ndim > NPRED_NPY_MAXDIM) return npred_errorf(NPRED_ERR_ARG, "bad ndim %d", a->ndim);
    size_t count;
    if (!count_elems(a->ndim, a->shape, &count) || count != a->count)
        return npred_errorf(NPRED_ERR_ARG, "array count %zu does not match its shape", a->count);
    size_t fixed = npred_dtype_size(a->dtype);
    if (fixed && a->itemsize != fixed)
        return npred_errorf(NPRED_ERR_ARG, "itemsize %zu does not match dtype", a->itemsize);
    if (!fixed && (a->itemsize == 0 || (a->dtype == NPRED_DT_STR_U && a->itemsize % 4)))
        return npred_errorf(NPRED_ERR_ARG, "invalid string itemsize %zu", a->itemsize);
    char descr[32], shape[NPRED_NPY_MAXDIM * 24 + 8], dict[NPRED_NPY_MAXDIM * 24 + 128];
    npred_dtype_descr(a->dtype, a->itemsize, descr, sizeof descr);
    size_t k = 0;
    shape[k++] = '(';
    for (int i = 0; i < a->ndim; i++)
        k += (size_t)snprintf(shape + k, sizeof shape - k, "%lld,%s", (long long)a->shape[i],
                              i + 1 < a->ndim ? " " : "");
    if (a->ndim > 1) k--; /* NumPy writes (3, 4) but (3,) */
    shape[k++] = ')';
    shape[k] = 0;
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t pre = 10, hdr = (size_t)dl + 1; /* + '\n' */
    size_t total_hdr = (pre + hdr + 63) / 64 * 64;
    int version = 1;
    if (total_hdr - pre > 65535) {
        version = 2;
        pre = 12;
        total_hdr = (pre + hdr + 63) / 64 * 64;
    }
    size_t nbytes = a->count * a->itemsize;
    unsigned char *b = malloc(total_hdr + nbytes);
    if (!b) return npred_errorf(NPRED_ERR_NOMEM, "cannot allocate %zu bytes", total_hdr + nbytes);
    memcpy(b, MAGIC, 6);
    b[6] = (unsigned char)version;
    b[7] = 0;
    size_t hl = total_hdr - pre;
    b[8] = hl & 0xff;
    b[9] = (hl >> 8) & 0xff;
    if (version == 2) {
        b[10] = (hl >> 16) & 0xff;
        b[11] = (hl >> 24) & 0xff;
    }
    memcpy(b + pre, dict, (size_t)dl);
    memset(b + pre + dl, ' ', total_hdr - pre - (size_t)dl - 1);
    b[total_hdr - 1] = '\n';
    if (nbytes) memcpy(b + total_hdr, a->data, nbytes);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    if (a->dtype == NPRED_DT_STR_U) npred_bswap_elems(b + total_hdr, a->count * (a->itemsize / 4), 4);
    else if (a->dtype != NPRED_DT_STR_S && a->itemsize > 1) npred_bswap_elems(b + total_hdr, a->count, a->itemsize);
#endif
    *buf = b;
    *len = total_hdr + nbytes;
    return NPRED_OK;
}


npred_status npred_npy_write(const char *path, const npred_array *a)
{
    void *buf = NULL;
    size_t len = 0;
    npred_status s = npred_npy_serialize(a, &buf, &len); /* before buf and len are read */
    return npred_write_serialized(path, s, buf, len);
}

/* ---- conversions ---- */

static float half_to_float(uint16_t h)
{
    int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0) v = ldexpf((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 0x400), exp - 25);
    return sign ? -v : v;
}

static double elem_f64(const npred_array *a, size_t i)
{
    const void *d = a->data;
    switch (a->dtype) {
    case NPRED_DT_BOOL: return ((const unsigned char *)d)[i];
    case NPRED_DT_I8: return ((const int8_t *)d)[i];
    case NPRED_DT_I16: return ((const int16_t *)d)[i];
    case NPRED_DT_I32: return ((const int32_t *)d)[i];
    case NPRED_DT_I64: return (double)((const int64_t *)d)[i];
    case NPRED_DT_U8: return ((const uint8_t *)d)[i];
    case NPRED_DT_U16: return ((const uint16_t *)d)[i];
    case NPRED_DT_U32: return ((const uint32_t *)d)[i];
    case NPRED_DT_U64: return (double)((const uint64_t *)d)[i];
    case NPRED_DT_F16: return half_to_float(((const uint16_t *)d)[i]);
    case NPRED_DT_F32: return ((const float *)d)[i];
    case NPRED_DT_F64: return ((const double *)d)[i];
    default: return 0;
    }
}

static npred_status check_numeric(const npred_array *a)
{
    if (a->dtype == NPRED_DT_STR_U || a->dtype == NPRED_DT_STR_S)
        return npred_errorf(NPRED_ERR_SHAPE, "expected a numeric array, got a string array");
    return NPRED_OK;
}

npred_status npred_array_to_f32(const npred_array *a, float **out)
{
    *out = NULL;
    npred_status s = check_numeric(a);
    if (s) return s;
    float *o = malloc(a->count ? a->count * sizeof *o : 1);
    if (!o) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (a->dtype == NPRED_DT_F32) memcpy(o, a->data, a->count * sizeof *o);
    else
        for (size_t i = 0; i < a->count; i++) o[i] = (float)elem_f64(a, i);
    *out = o;
    return NPRED_OK;
}

npred_status npred_array_to_f64(const npred_array *a, double **out)
{
    *out = NULL;
    npred_status s = check_numeric(a);
    if (s) return s;
    double *o = malloc(a->count ? a->count * sizeof *o : 1);
    if (!o) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < a->count; i++) o[i] = elem_f64(a, i);
    *out = o;
    return NPRED_OK;
}

npred_status npred_array_to_i64(const npred_array *a, int64_t **out)
{
    *out = NULL;
    npred_status s = check_numeric(a);
    if (s) return s;
    int64_t *o = malloc(a->count ? a->count * sizeof *o : 1);
    if (!o) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < a->count; i++) {
        if (a->dtype == NPRED_DT_I64) o[i] = ((const int64_t *)a->data)[i];
        else if (a->dtype == NPRED_DT_U64) o[i] = (int64_t)((const uint64_t *)a->data)[i];
        else {
            double v = elem_f64(a, i);
            if (v != floor(v) || fabs(v) > 9.2e18) {
                free(o);
                return npred_errorf(NPRED_ERR_VALUE, "element %zu (%g) is not an integer", i, v);
            }
            o[i] = (int64_t)v;
        }
    }
    *out = o;
    return NPRED_OK;
}

static size_t put_utf8(char *buf, size_t k, size_t n, uint32_t cp)
{
    unsigned char tmp[4];
    size_t m;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) cp = 0xfffd;
    if (cp < 0x80) { tmp[0] = (unsigned char)cp; m = 1; }
    else if (cp < 0x800) { tmp[0] = 0xc0 | (cp >> 6); tmp[1] = 0x80 | (cp & 0x3f); m = 2; }
    else if (cp < 0x10000) {
        tmp[0] = 0xe0 | (cp >> 12); tmp[1] = 0x80 | ((cp >> 6) & 0x3f); tmp[2] = 0x80 | (cp & 0x3f); m = 3;
    } else {
        tmp[0] = 0xf0 | (cp >> 18); tmp[1] = 0x80 | ((cp >> 12) & 0x3f);
        tmp[2] = 0x80 | ((cp >> 6) & 0x3f); tmp[3] = 0x80 | (cp & 0x3f); m = 4;
    }
    if (k + m >= n) return SIZE_MAX;
    memcpy(buf + k, tmp, m);
    return k + m;
}

npred_status npred_array_get_str(const npred_array *a, size_t i, char *buf, size_t n)
{
    if (n == 0) return npred_errorf(NPRED_ERR_ARG, "empty buffer");
    buf[0] = 0;
    if (a->dtype != NPRED_DT_STR_U && a->dtype != NPRED_DT_STR_S)
        return npred_errorf(NPRED_ERR_SHAPE, "expected a string array");
    if (i >= a->count) return npred_errorf(NPRED_ERR_ARG, "index %zu out of range (%zu elements)", i, a->count);
    size_t k = 0;
    if (a->dtype == NPRED_DT_STR_S) {
        const char *p = (const char *)a->data + i * a->itemsize;
        size_t len = a->itemsize;
        while (len && p[len - 1] == 0) len--;
        if (len >= n) return npred_errorf(NPRED_ERR_ARG, "string of %zu bytes does not fit", len);
        memcpy(buf, p, len);
        buf[len] = 0;
        return NPRED_OK;
    }
    const uint32_t *p = (const uint32_t *)((const char *)a->data + i * a->itemsize);
    size_t len = a->itemsize / 4;
    while (len && p[len - 1] == 0) len--;
    for (size_t j = 0; j < len; j++) {
        k = put_utf8(buf, k, n, p[j]);
        if (k == SIZE_MAX) {
            buf[0] = 0;
            return npred_errorf(NPRED_ERR_ARG, "string does not fit in %zu bytes", n);
        }
    }
    buf[k] = 0;
    return NPRED_OK;
}
