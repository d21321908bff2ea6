/* h5fs: an HDF5 static dataset as a virtual SENSORIUM file tree (see h5fs.h). */
#include "data/h5fs.h"

#include <ctype.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npred/npy.h"

typedef struct {
    char *name;    /* virtual relative path */
    char *object;  /* HDF5 dataset path */
    int64_t row;   /* row of a data field, -1 for the whole dataset */
} h5ent;

struct npred_h5fs {
    char *path;
    hid_t file;
    h5ent *ents;
    size_t n, cap;
};

static const char *const DATA_FIELDS[4] = {"images", "responses", "behavior", "pupil_center"};

/* An HDF5 dataspace may claim any size without storing it (unallocated datasets read
 * as fill values), so a few bytes can declare 10^12 trials or a 1 TB array. npred
 * refuses more trials than this (each is a virtual file) ... */
#define MAX_TRIALS (1 << 20)
/* ... and a virtual file (one trial's row, or a whole meta array) above this size. */
#define MAX_FILE_BYTES ((size_t)1 << 28)

static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

int npred_h5fs_is_hdf5(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char sig[8];
    size_t got = fread(sig, 1, 8, f);
    fclose(f);
    /* the superblock at offset 0 (files with a user block are not SENSORIUM files) */
    return got == 8 && !memcmp(sig, "\x89HDF\r\n\x1a\n", 8);
}

static npred_status push(npred_h5fs *h, const char *name, const char *object, int64_t row)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? 2 * h->cap : 256;
        h5ent *e = realloc(h->ents, nc * sizeof *e);
        if (!e) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory listing the HDF5 file", h->path);
        h->ents = e;
        h->cap = nc;
    }
    h5ent *e = &h->ents[h->n];
    e->name = strdup(name);
    e->object = strdup(object);
    e->row = row;
    if (!e->name || !e->object) {
        free(e->name);
        free(e->object);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory listing the HDF5 file", h->path);
    }
    h->n++;
    return NPRED_OK;
}

/* 1 if loc/name is a dataset, 0 if it is something else or absent */
static int is_dataset(hid_t loc, const char *name)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return 0;
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return 0;
    int r = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    return r;
}

typedef struct {
    npred_h5fs *h;
    const char *group;   /* HDF5 group path, "/item_info" */
    const char *prefix;  /* virtual folder, "meta/trials" */
    int rename;          /* statistics: lower-case, '.' -> '_' */
    npred_status st;
} visit_ctx;

static herr_t visit_link(hid_t g, const char *name, const H5L_info_t *info, void *op)
{
    (void)info;
    visit_ctx *c = op;
    if (!is_dataset(g, name)) return 0;
    char vname[1024], object[1024];
    int k = snprintf(vname, sizeof vname, "%s/%s", c->prefix, name);
    if (k < 0 || (size_t)k + 4 >= sizeof vname) {
        c->st = npred_errorf(NPRED_ERR_FORMAT, "%s: object name %s/%s too long", c->h->path, c->group, name);
        return -1;
    }
    if (c->rename)
        for (char *p = vname + strlen(c->prefix); *p; p++) *p = *p == '.' ? '_' : (char)tolower((unsigned char)*p);
    strcat(vname, ".npy");
    snprintf(object, sizeof object, "%s/%s", c->group, name);
    if ((c->st = push(c->h, vname, object, -1))) return -1;
    return 0;
}

static npred_status add_group(npred_h5fs *h, const char *group, const char *prefix, int recursive, int rename)
{
    if (H5Lexists(h->file, group, H5P_DEFAULT) <= 0) return NPRED_OK;
    hid_t g = H5Gopen2(h->file, group, H5P_DEFAULT);
    if (g < 0) return npred_errorf(NPRED_ERR_FORMAT, "%s: %s is not a group", h->path, group);
    visit_ctx c = {h, group, prefix, rename, NPRED_OK};
    herr_t r = recursive ? H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, visit_link, &c)
                         : H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, visit_link, &c);
    H5Gclose(g);
    if (c.st) return c.st;
    if (r < 0) return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot list group %s", h->path, group);
    return NPRED_OK;
}

/* Open path with the file access properties fapl (a file on disk, or an image in memory). */
static npred_status open_with(npred_h5fs **out, const char *path, hid_t fapl)
{
    *out = NULL;
    quiet();
    npred_h5fs *h = calloc(1, sizeof *h);
    if (!h || !(h->path = strdup(path))) {
        free(h);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    }
    h->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (h->file < 0) {
        free(h->path);
        free(h);
        return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot open as an HDF5 file", path);
    }
    npred_status s = NPRED_OK;
    for (int f = 0; f < 4 && !s; f++) {
        if (!is_dataset(h->file, DATA_FIELDS[f])) continue;
        hid_t d = H5Dopen2(h->file, DATA_FIELDS[f], H5P_DEFAULT), sp = H5Dget_space(d);
        int nd = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[H5S_MAX_RANK];
        if (nd >= 1) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Sclose(sp);
        H5Dclose(d);
        if (nd < 1) {
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: /%s must have a trial axis (rank >= 1), got rank %d", path,
                             DATA_FIELDS[f], nd);
            break;
        }
        if (dims[0] > MAX_TRIALS) {
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: /%s claims %llu trials; npred reads at most %d", path,
                             DATA_FIELDS[f], (unsigned long long)dims[0], MAX_TRIALS);
            break;
        }
        char name[128], object[64];
        snprintf(object, sizeof object, "/%s", DATA_FIELDS[f]);
        for (hsize_t i = 0; i < dims[0] && !s; i++) {
            snprintf(name, sizeof name, "data/%s/%llu.npy", DATA_FIELDS[f], (unsigned long long)i);
            s = push(h, name, object, (int64_t)i);
        }
    }
    if (!s && is_dataset(h->file, "tiers")) s = push(h, "meta/trials/tiers.npy", "/tiers", -1);
    if (!s) s = add_group(h, "/item_info", "meta/trials", 0, 0);
    if (!s) s = add_group(h, "/neurons", "meta/neurons", 0, 0);
    if (!s) s = add_group(h, "/statistics", "meta/statistics", 1, 1);
    if (s) {
        npred_h5fs_free(h);
        return s;
    }
    *out = h;
    return NPRED_OK;
}

npred_status npred_h5fs_open(npred_h5fs **out, const char *path) { return open_with(out, path, H5P_DEFAULT); }

npred_status npred_h5fs_open_image(npred_h5fs **out, const void *data, size_t len, const char *name)
{
    *out = NULL;
    quiet();
    if (!len) return npred_errorf(NPRED_ERR_FORMAT, "%s: empty, not an HDF5 file", name);
    /* the core (memory) driver over a copy of the bytes; nothing is read from or written to disk */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 || H5Pset_file_image(fapl, (void *)data, len) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot set up an HDF5 file image", name);
    }
    npred_status s = open_with(out, name, fapl);
    H5Pclose(fapl);
    return s;
}

void npred_h5fs_free(npred_h5fs *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->ents[i].name);
        free(h->ents[i].object);
    }
    free(h->ents);
    if (h->file >= 0) H5Fclose(h->file);
    free(h->path);
    free(h);
}

size_t npred_h5fs_count(const npred_h5fs *h) { return h->n; }
const char *npred_h5fs_name(const npred_h5fs *h, size_t i) { return i < h->n ? h->ents[i].name : NULL; }

/* The npred dtype and the native memory type for a numeric file type; -1 if unsupported. */
static hid_t numeric_type(hid_t ft, npred_dtype *dt)
{
    H5T_class_t cl = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    if (cl == H5T_ENUM) { /* h5py bool: enum {FALSE = 0, TRUE = 1} over a 1-byte integer */
        if (sz == 1 && H5Tget_nmembers(ft) == 2) {
            *dt = NPRED_DT_BOOL;
            return H5T_NATIVE_UINT8;
        }
        return -1;
    }
    if (cl == H5T_FLOAT) {
        if (sz == 4) { *dt = NPRED_DT_F32; return H5T_NATIVE_FLOAT; }
        if (sz == 8) { *dt = NPRED_DT_F64; return H5T_NATIVE_DOUBLE; }
        return -1;
    }
    if (cl == H5T_INTEGER) {
        int sgn = H5Tget_sign(ft) == H5T_SGN_2;
        switch (sz) {
        case 1: *dt = sgn ? NPRED_DT_I8 : NPRED_DT_U8; return sgn ? H5T_NATIVE_INT8 : H5T_NATIVE_UINT8;
        case 2: *dt = sgn ? NPRED_DT_I16 : NPRED_DT_U16; return sgn ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT16;
        case 4: *dt = sgn ? NPRED_DT_I32 : NPRED_DT_U32; return sgn ? H5T_NATIVE_INT32 : H5T_NATIVE_UINT32;
        case 8: *dt = sgn ? NPRED_DT_I64 : NPRED_DT_U64; return sgn ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64;
        }
    }
    return -1;
}

/* bytes -> UTF-32 code points; only ASCII is accepted (NumPy's astype(str) decodes ASCII) */
static int widen(uint32_t *dst, const char *src, size_t n, size_t width)
{
    size_t k = 0;
    for (; k < n && src[k]; k++) {
        if ((unsigned char)src[k] >= 0x80) return -1;
        dst[k] = (unsigned char)src[k];
    }
    for (; k < width; k++) dst[k] = 0;
    return 0;
}

npred_status npred_h5fs_read(npred_h5fs *h, size_t i, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (i >= h->n) return npred_errorf(NPRED_ERR_ARG, "%s: no virtual file %zu", h->path, i);
    const h5ent *e = &h->ents[i];
    hid_t d = H5Dopen2(h->file, e->object, H5P_DEFAULT);
    if (d < 0) return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot open dataset %s", h->path, e->object);
    hid_t ft = H5Dget_type(d), fsp = H5Dget_space(d), msp = -1;
    npred_status s = NPRED_OK;
    npred_array a = {0};
    int nd = H5Sget_simple_extent_ndims(fsp);
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
    if (nd < 0 || nd > NPRED_NPY_MAXDIM) {
        s = npred_errorf(NPRED_ERR_FORMAT, "%s: dataset %s has an unsupported rank", h->path, e->object);
        goto done;
    }
    H5Sget_simple_extent_dims(fsp, dims, NULL);
    int64_t shape[NPRED_NPY_MAXDIM];
    int ond = 0;
    size_t n = 1, esize = H5Tget_size(ft); /* elements, and the bytes of one in the file */
    for (int k = 0; k < nd; k++) {
        count[k] = dims[k];
        if (e->row >= 0 && k == 0) {
            start[0] = (hsize_t)e->row;
            count[0] = 1;
            continue;
        }
        shape[ond++] = (int64_t)dims[k];
        if (dims[k] && n > MAX_FILE_BYTES / dims[k]) n = MAX_FILE_BYTES + 1; /* (no overflow) */
        else n *= (size_t)dims[k];
    }
    /* a string becomes 4 bytes per character (NumPy '<U'), other elements keep their size */
    size_t per = H5Tget_class(ft) == H5T_STRING ? (H5Tis_variable_str(ft) > 0 ? 4 : 4 * esize) : esize;
    if (esize == 0 || n > MAX_FILE_BYTES || (n && per > MAX_FILE_BYTES / n)) {
        s = npred_errorf(NPRED_ERR_FORMAT, esize ? "%s: dataset %s: more than the 256 MiB npred reads as one file"
                                                 : "%s: dataset %s: elements of no size",
                         h->path, e->object);
        goto done;
    }
    if (e->row >= 0) {
        H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL);
        msp = H5Screate_simple(nd, count, NULL);
    } else {
        msp = H5Scopy(fsp);
    }
    if (H5Tget_class(ft) == H5T_STRING) {
        int vlen = H5Tis_variable_str(ft) > 0;
        hid_t mt = H5Tcopy(H5T_C_S1);
        size_t width = 0;
        char **vs = NULL, *fixed = NULL;
        size_t fw = vlen ? 0 : H5Tget_size(ft);
        if (vlen) {
            H5Tset_size(mt, H5T_VARIABLE);
            vs = calloc(n ? n : 1, sizeof *vs);
        } else {
            H5Tset_size(mt, fw);
            H5Tset_strpad(mt, H5T_STR_NULLPAD);
            fixed = calloc(n ? n * fw : 1, 1);
        }
        if ((vlen && !vs) || (!vlen && !fixed)) s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", h->path);
        else if (H5Dread(d, mt, msp, fsp, H5P_DEFAULT, vlen ? (void *)vs : (void *)fixed) < 0)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: cannot read strings of %s", h->path, e->object);
        if (!s) {
            for (size_t k = 0; k < n; k++) {
                size_t l = vlen ? (vs[k] ? strlen(vs[k]) : 0) : strnlen(fixed + k * fw, fw);
                if (l > width) width = l;
            }
            if (width == 0) width = 1;
            s = npred_array_alloc(&a, NPRED_DT_STR_U, 4 * width, ond, shape);
        }
        for (size_t k = 0; !s && k < n; k++) {
            const char *src = vlen ? (vs[k] ? vs[k] : "") : fixed + k * fw;
            if (widen((uint32_t *)a.data + k * width, src, vlen ? strlen(src) : fw, width))
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: dataset %s element %zu is not ASCII text", h->path,
                                 e->object, k);
        }
        if (vlen && vs) H5Dvlen_reclaim(mt, msp, H5P_DEFAULT, vs);
        free(vs);
        free(fixed);
        H5Tclose(mt);
    } else {
        npred_dtype dt;
        hid_t mt = numeric_type(ft, &dt);
        if (mt < 0) {
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: dataset %s has an unsupported element type (numbers, byte strings "
                             "and h5py booleans are read)", h->path, e->object);
            goto done;
        }
        if ((s = npred_array_alloc(&a, dt, npred_dtype_size(dt), ond, shape))) goto done;
        if (n && H5Dread(d, mt, msp, fsp, H5P_DEFAULT, a.data) < 0)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: cannot read dataset %s", h->path, e->object);
    }
    if (!s) s = npred_npy_serialize(&a, buf, len);
done:
    npred_array_free(&a);
    if (msp >= 0) H5Sclose(msp);
    H5Sclose(fsp);
    H5Tclose(ft);
    H5Dclose(d);
    return s;
}
