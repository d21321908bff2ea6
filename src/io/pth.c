/* PyTorch .pth reader: zip (libzip, in memory) + restricted pickle + storages. */
#include "io/pth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "io/pickle.h"

#define PICKLE_MAX (1u << 30)

typedef struct {
    const char *key;
    npred_tensor_dtype dtype;
    unsigned char *data;
    int64_t numel;
} loaded_storage;

typedef struct {
    const char *name; /* file name for messages */
    zip_t *zip;
    char *prefix;     /* "<archive>/" */
    int swap;         /* storages are in the other byte order */
    loaded_storage *st;
    size_t nst, capst;
} reader;

/* Read member `member` (must be exactly `expect` bytes unless expect is
 * SIZE_MAX) into a malloc'ed buffer. *missing is set when it does not exist. */
static npred_status read_member(reader *r, const char *member, size_t expect, unsigned char **out,
                                size_t *outlen, int *missing)
{
    *out = NULL;
    *missing = 0;
    zip_stat_t zs;
    zip_int64_t idx = zip_name_locate(r->zip, member, 0);
    if (idx < 0) {
        *missing = 1;
        return npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' is missing", r->name, member);
    }
    if (zip_stat_index(r->zip, (zip_uint64_t)idx, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot stat member '%s': %s", r->name, member,
                            zip_strerror(r->zip));
    if (expect != SIZE_MAX && zs.size != expect)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' holds %llu bytes, expected %zu",
                            r->name, member, (unsigned long long)zs.size, expect);
    if (zs.size > SIZE_MAX / 2)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' is too large", r->name, member);
    size_t n = (size_t)zs.size;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate %zu bytes for '%s'", r->name,
                                n, member);
    zip_file_t *f = zip_fopen_index(r->zip, (zip_uint64_t)idx, 0);
    if (!f) {
        free(b);
        return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot open member '%s': %s", r->name, member,
                            zip_strerror(r->zip));
    }
    size_t got = 0;
    while (got < n) {
        zip_int64_t k = zip_fread(f, b + got, n - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    /* a read past the end also lets libzip verify the CRC */
    char extra;
    zip_int64_t k = got == n ? zip_fread(f, &extra, 1) : 0;
    const char *zerr = zip_file_strerror(f);
    char zmsg[200];
    snprintf(zmsg, sizeof zmsg, "%s", zerr ? zerr : "?");
    zip_fclose(f);
    if (got != n || k != 0) {
        free(b);
        return npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' is corrupt (read %zu of %zu bytes: %s)",
                            r->name, member, got, n, zmsg);
    }
    *out = b;
    *outlen = n;
    return NPRED_OK;
}

static npred_status get_storage(reader *r, const npred_pk_obj *so, const char *tname,
                                loaded_storage **out)
{
    const char *key = so->u.storage.key;
    for (size_t i = 0; i < r->nst; i++)
        if (strcmp(r->st[i].key, key) == 0) {
            if (r->st[i].dtype != so->u.storage.dtype || r->st[i].numel != so->u.storage.numel)
                return npred_errorf(NPRED_ERR_FORMAT, "%s: storage '%s' is used as both %lld x %s "
                                    "and %lld x %s (tensor '%s')", r->name, key,
                                    (long long)r->st[i].numel,
                                    npred_tensor_dtype_name(r->st[i].dtype),
                                    (long long)so->u.storage.numel,
                                    npred_tensor_dtype_name(so->u.storage.dtype), tname);
            *out = &r->st[i];
            return NPRED_OK;
        }
    size_t es = npred_tensor_dtype_size(so->u.storage.dtype);
    if ((uint64_t)so->u.storage.numel > (SIZE_MAX / 2) / es)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: storage '%s' claims %lld elements", r->name, key,
                            (long long)so->u.storage.numel);
    size_t nbytes = (size_t)so->u.storage.numel * es;
    size_t mlen = strlen(r->prefix) + strlen(key) + 8;
    char *member = malloc(mlen);
    if (!member) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", r->name);
    snprintf(member, mlen, "%sdata/%s", r->prefix, key);
    unsigned char *data;
    size_t got;
    int missing;
    npred_status s = read_member(r, member, nbytes, &data, &got, &missing);
    if (s) {
        if (missing)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: storage member '%s' of tensor '%s' is missing",
                             r->name, member, tname);
        else {
            char msg[768];
            snprintf(msg, sizeof msg, "%s", npred_last_error());
            s = npred_errorf(s, "%s (storage of tensor '%s': %lld x %s)", msg, tname,
                             (long long)so->u.storage.numel,
                             npred_tensor_dtype_name(so->u.storage.dtype));
        }
        free(member);
        return s;
    }
    free(member);
    if (r->nst == r->capst) {
        size_t cap = r->capst ? 2 * r->capst : 16;
        loaded_storage *ls = realloc(r->st, cap * sizeof *ls);
        if (!ls) {
            free(data);
            return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", r->name);
        }
        r->st = ls;
        r->capst = cap;
    }
    if (r->swap) npred_bswap_elems(data, (size_t)so->u.storage.numel, es);
    loaded_storage *ls = &r->st[r->nst++];
    ls->key = key;
    ls->dtype = so->u.storage.dtype;
    ls->data = data;
    ls->numel = so->u.storage.numel;
    *out = ls;
    return NPRED_OK;
}

static void fmt_dims(char *buf, size_t size, int nd, const int64_t *d)
{
    size_t o = 0;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, size - o, "(");
    for (int i = 0; i < nd && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, i ? ", %lld" : "%lld", (long long)d[i]);
    if (o < size) snprintf(buf + o, size - o, ")");
}

/* Check the view of one tensor and copy it out contiguously. */
static npred_status add_tensor(reader *r, npred_tensor_list *out, const char *tname,
                               const npred_pk_obj *t)
{
    loaded_storage *st = NULL;
    npred_status s = get_storage(r, t->u.tensor.storage, tname, &st);
    if (s) return s;
    int nd = t->u.tensor.ndim;
    const int64_t *shape = t->u.tensor.shape, *stride = t->u.tensor.stride;
    int64_t off = t->u.tensor.offset;
    size_t es = npred_tensor_dtype_size(st->dtype);
    int64_t numel = npred_tensor_numel(nd, shape);
    char sh[200], sd[200];
    fmt_dims(sh, sizeof sh, nd, shape);
    fmt_dims(sd, sizeof sd, nd, stride);
    if (numel < 0)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': invalid shape %s", r->name, tname, sh);
    if (numel > 0) {
        /* last element reached by the view */
        int64_t last = off;
        for (int i = 0; i < nd; i++) {
            if (stride[i] && shape[i] - 1 > (INT64_MAX - last) / stride[i]) {
                last = INT64_MAX;
                break;
            }
            last += (shape[i] - 1) * stride[i];
        }
        if (last >= st->numel)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' (offset %lld, shape %s, stride %s) "
                                "reaches past the end of its storage '%s' of %lld elements",
                                r->name, tname, (long long)off, sh, sd, st->key,
                                (long long)st->numel);
        /* no two indices may reach the same element: sorted by stride, each
         * stride must exceed the span of the dimensions before it */
        int order[NPRED_TENSOR_MAXDIM], m = 0;
        for (int i = 0; i < nd; i++)
            if (shape[i] > 1) {
                int j = m++;
                while (j > 0 && stride[order[j - 1]] > stride[i]) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = i;
            }
        int64_t span = 0;
        for (int k = 0; k < m; k++) {
            int i = order[k];
            if (stride[i] <= span)
                return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' (shape %s, stride %s) "
                                    "has overlapping elements", r->name, tname, sh, sd);
            span += (shape[i] - 1) * stride[i];
        }
    }
    npred_tensor *dst;
    s = npred_tensor_list_add(out, tname, st->dtype, nd, shape, NULL, &dst);
    if (s) return npred_error_prefix(s, "%s", r->name);
    if (numel == 0) return NPRED_OK;
    int contiguous = 1;
    int64_t want = 1;
    for (int i = nd - 1; i >= 0; i--) {
        if (shape[i] != 1 && stride[i] != want) contiguous = 0;
        want *= shape[i];
    }
    const unsigned char *src = st->data + (size_t)off * es;
    unsigned char *d = dst->data;
    if (contiguous) {
        memcpy(d, src, dst->nbytes);
        return NPRED_OK;
    }
    int64_t idx[NPRED_TENSOR_MAXDIM] = {0};
    for (int64_t e = 0; e < numel; e++) {
        int64_t o = 0;
        for (int i = 0; i < nd; i++) o += idx[i] * stride[i];
        memcpy(d + (size_t)e * es, src + (size_t)o * es, es);
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < shape[i]) break;
            idx[i] = 0;
        }
    }
    return NPRED_OK;
}

/* 0 if d is a dict of str -> tensor; otherwise the index of the first bad
 * entry + 1 (or SIZE_MAX when d is not a dict). */
static size_t state_dict_bad(const npred_pk_obj *d)
{
    if (d->kind != NPRED_PK_DICT) return SIZE_MAX;
    for (size_t i = 0; i < d->u.dict.n; i++)
        if (d->u.dict.keys[i]->kind != NPRED_PK_STR || d->u.dict.vals[i]->kind != NPRED_PK_TENSOR)
            return i + 1;
    return 0;
}

static npred_status find_state_dict(reader *r, const npred_pk_obj *root, const npred_pk_obj **sd)
{
    if (root->kind != NPRED_PK_DICT)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: the checkpoint holds a %s, expected a "
                            "state_dict (a dict of tensors)", r->name,
                            npred_pk_kind_name(root->kind));
    size_t bad = state_dict_bad(root);
    if (!bad) {
        *sd = root;
        return NPRED_OK;
    }
    static const char *const preferred[] = {"state_dict", "model_state_dict", "model", "net"};
    const npred_pk_obj *only = NULL;
    int count = 0;
    for (size_t p = 0; p < sizeof preferred / sizeof *preferred; p++)
        for (size_t i = 0; i < root->u.dict.n; i++) {
            const npred_pk_obj *k = root->u.dict.keys[i], *v = root->u.dict.vals[i];
            if (k->kind == NPRED_PK_STR && strcmp(k->u.str.s, preferred[p]) == 0 &&
                v->kind == NPRED_PK_DICT && v->u.dict.n > 0 && !state_dict_bad(v)) {
                *sd = v;
                return NPRED_OK;
            }
        }
    for (size_t i = 0; i < root->u.dict.n; i++) {
        const npred_pk_obj *v = root->u.dict.vals[i];
        if (v->kind == NPRED_PK_DICT && v->u.dict.n > 0 && !state_dict_bad(v)) {
            only = v;
            count++;
        }
    }
    if (count == 1) {
        *sd = only;
        return NPRED_OK;
    }
    const npred_pk_obj *k = root->u.dict.keys[bad - 1], *v = root->u.dict.vals[bad - 1];
    if (k->kind != NPRED_PK_STR)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: not a state_dict: entry %zu has a %s key",
                            r->name, bad - 1, npred_pk_kind_name(k->kind));
    return npred_errorf(NPRED_ERR_FORMAT, "%s: not a state_dict: key '%.100s' holds a %s, not a "
                        "tensor%s", r->name, k->u.str.s, npred_pk_kind_name(v->kind),
                        count > 1 ? " (and several nested dicts of tensors: ambiguous)"
                                  : " (and no nested state_dict was found)");
}

/* Locate "<archive>/data.pkl" (archive = any single top-level folder). */
static npred_status find_prefix(reader *r)
{
    zip_int64_t n = zip_get_num_entries(r->zip, 0);
    const char *found = NULL;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *nm = zip_get_name(r->zip, (zip_uint64_t)i, 0);
        if (!nm) continue;
        const char *slash = strchr(nm, '/');
        if (!slash || slash == nm || strcmp(slash, "/data.pkl") != 0) continue;
        if (found)
            return npred_errorf(NPRED_ERR_FORMAT, "%s: several data.pkl members ('%s', '%s')",
                                r->name, found, nm);
        found = nm;
    }
    if (!found)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: no '<archive>/data.pkl' member: not a PyTorch "
                            "checkpoint", r->name);
    size_t plen = strlen(found) - strlen("data.pkl");
    r->prefix = malloc(plen + 1);
    if (!r->prefix) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", r->name);
    memcpy(r->prefix, found, plen);
    r->prefix[plen] = 0;
    return NPRED_OK;
}

static npred_status read_byteorder(reader *r)
{
    size_t mlen = strlen(r->prefix) + 16;
    char member[4096];
    if (mlen > sizeof member) return npred_errorf(NPRED_ERR_FORMAT, "%s: archive name too long", r->name);
    snprintf(member, sizeof member, "%sbyteorder", r->prefix);
    if (zip_name_locate(r->zip, member, 0) < 0) {
        r->swap = !npred_host_is_le(); /* files without it are little-endian */
        return NPRED_OK;
    }
    unsigned char *b;
    size_t n;
    int missing;
    npred_status s = read_member(r, member, SIZE_MAX, &b, &n, &missing);
    if (s) return s;
    int little = n == 6 && memcmp(b, "little", 6) == 0;
    int big = n == 3 && memcmp(b, "big", 3) == 0;
    free(b);
    if (!little && !big)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' is neither 'little' nor 'big'",
                            r->name, member);
    r->swap = little != npred_host_is_le();
    return NPRED_OK;
}

npred_status npred_pth_parse(const void *buf, size_t len, const char *name, npred_tensor_list *out)
{
    npred_tensor_list_init(out);
    const unsigned char *b = buf;
    if (len >= 2 && b[0] == 0x80 && b[1] <= 5)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: legacy PyTorch checkpoint (a bare pickle, "
                            "torch < 1.6) is not supported; re-save it with a newer torch", name);
    reader r = {.name = name};
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(len ? buf : "", len, 0, &ze);
    if (src) {
        r.zip = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
        if (!r.zip) zip_source_free(src);
    }
    if (!r.zip) {
        npred_status s = npred_errorf(NPRED_ERR_FORMAT, "%s: not a zip archive (PyTorch "
                                      "checkpoint): %s", name, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return s;
    }
    zip_error_fini(&ze);

    npred_pickle *pk = NULL;
    unsigned char *pkl = NULL;
    size_t pkl_len = 0;
    int missing;
    char *pname = NULL;
    npred_status s = find_prefix(&r);
    if (!s) s = read_byteorder(&r);
    if (!s) {
        size_t n = strlen(r.prefix) + 16;
        char *member = malloc(n);
        pname = malloc(strlen(name) + n + 2);
        if (!member || !pname) s = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", name);
        else {
            snprintf(member, n, "%sdata.pkl", r.prefix);
            sprintf(pname, "%s:%s", name, member);
            zip_stat_t zs;
            /* pickles hold no tensor data: a huge one is a zip bomb */
            if (zip_stat(r.zip, member, 0, &zs) == 0 && (zs.valid & ZIP_STAT_SIZE) &&
                zs.size > PICKLE_MAX)
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: member '%s' claims %llu bytes (limit %u)",
                                 name, member, (unsigned long long)zs.size, PICKLE_MAX);
            else
                s = read_member(&r, member, SIZE_MAX, &pkl, &pkl_len, &missing);
        }
        free(member);
    }
    if (!s) s = npred_pickle_load(pkl, pkl_len, pname, &pk);
    const npred_pk_obj *sd = NULL;
    if (!s) s = find_state_dict(&r, npred_pickle_root(pk), &sd);
    for (size_t i = 0; !s && i < sd->u.dict.n; i++) {
        const npred_pk_obj *k = sd->u.dict.keys[i];
        if (strlen(k->u.str.s) != k->u.str.len)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: a tensor name contains a NUL byte", name);
        else
            s = add_tensor(&r, out, k->u.str.s, sd->u.dict.vals[i]);
    }
    if (!s) {
        s = npred_tensor_list_check_unique(out);
        if (s) npred_error_prefix(s, "%s", name);
    }
    npred_pickle_free(pk);
    free(pkl);
    free(pname);
    for (size_t i = 0; i < r.nst; i++) free(r.st[i].data);
    free(r.st);
    free(r.prefix);
    zip_discard(r.zip);
    if (s) npred_tensor_list_free(out);
    return s;
}

npred_status npred_pth_read(const char *path, npred_tensor_list *out)
{
    return npred_tensor_list_read(path, npred_pth_parse, out);
}
