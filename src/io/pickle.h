/* A restricted unpickler for PyTorch checkpoints (data.pkl inside a .pth zip).
 *
 * It never executes anything. It understands a whitelist of opcodes (those that
 * torch.save writes with pickle protocol 2, plus the protocol-4 framing ones) and
 * a whitelist of globals:
 *   collections.OrderedDict                       -> an (ordered) dict
 *   torch._utils._rebuild_tensor_v2               -> a tensor view of a storage
 *   torch._utils._rebuild_parameter               -> the tensor it wraps
 *   torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage
 *                                                  -> storage types for persistent ids
 * Anything else (an unknown opcode, any other global, a call with unexpected
 * arguments) is an NPRED_ERR_FORMAT / NPRED_ERR_UNSUPPORTED error whose message
 * names the file, the byte offset and the opcode or global.
 *
 * The result is a tree of npred_pk_obj values owned by one npred_pickle. Storages
 * are only described (dtype, key, element count); reading their bytes from the
 * zip is the caller's job (pth.c). */
#ifndef NPRED_IO_PICKLE_H
#define NPRED_IO_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "io/tensorfile.h"

typedef enum {
    NPRED_PK_NONE,
    NPRED_PK_BOOL,
    NPRED_PK_INT,
    NPRED_PK_FLOAT,
    NPRED_PK_STR,
    NPRED_PK_TUPLE,
    NPRED_PK_LIST,
    NPRED_PK_DICT,    /* dict or collections.OrderedDict; insertion order kept */
    NPRED_PK_GLOBAL,  /* a whitelisted global (callable or storage type) */
    NPRED_PK_STORAGE, /* a persistent id ('storage', type, key, location, numel) */
    NPRED_PK_TENSOR   /* _rebuild_tensor_v2(storage, offset, size, stride, ...) */
} npred_pk_kind;

typedef enum {
    NPRED_PK_G_ORDERED_DICT,
    NPRED_PK_G_REBUILD_TENSOR_V2,
    NPRED_PK_G_REBUILD_PARAMETER,
    NPRED_PK_G_STORAGE /* see npred_pk_obj.u.global.dtype */
} npred_pk_global;

typedef struct npred_pk_obj npred_pk_obj;
struct npred_pk_obj {
    npred_pk_kind kind;
    union {
        int64_t i;  /* BOOL, INT */
        double f;   /* FLOAT */
        struct {
            char *s; /* NUL-terminated (may also contain NULs: see len) */
            size_t len;
        } str;
        struct {
            npred_pk_obj **items;
            size_t n, cap;
        } seq; /* TUPLE, LIST */
        struct {
            npred_pk_obj **keys, **vals;
            size_t n, cap;
        } dict;
        struct {
            npred_pk_global which;
            npred_tensor_dtype dtype; /* storage types only */
            const char *qualname;     /* "torch.FloatStorage", ... (static) */
        } global;
        struct {
            npred_tensor_dtype dtype;
            const char *key; /* archive/data/<key> */
            int64_t numel;   /* elements in the storage */
        } storage;
        struct {
            const npred_pk_obj *storage;
            int64_t offset; /* in elements */
            int ndim;
            int64_t shape[NPRED_TENSOR_MAXDIM];
            int64_t stride[NPRED_TENSOR_MAXDIM]; /* in elements */
        } tensor;
    } u;
};

typedef struct npred_pickle npred_pickle;

/* Unpickle buf[0..len). `name` (e.g. "model.pth:archive/data.pkl") prefixes
 * every error message. On success *out owns the object tree; its root is
 * npred_pickle_root(*out). */
npred_status npred_pickle_load(const void *buf, size_t len, const char *name, npred_pickle **out);
const npred_pk_obj *npred_pickle_root(const npred_pickle *p);
void npred_pickle_free(npred_pickle *p);
/* "int", "dict", "tensor", ... for messages. */
const char *npred_pk_kind_name(npred_pk_kind k);

#endif
