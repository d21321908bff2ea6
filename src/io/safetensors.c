/* safetensors reader/writer: see safetensors.h. */
#include "io/safetensors.h"
#include "base/fileio.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_MAX (100u << 20) /* the reference implementation's limit too */

/* ---- writer ---- */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* a JSON string literal; bytes >= 0x80 pass through (UTF-8) */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_u64(sbuf *b, uint64_t x)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)x);
    sb_str(b, num);
}

static npred_status check_list(const npred_tensor_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const npred_tensor *t = &l->items[i];
        size_t es = npred_tensor_dtype_size(t->dtype);
        int64_t numel = npred_tensor_numel(t->ndim, t->shape);
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return npred_errorf(NPRED_ERR_ARG, "tensor %zu: invalid name '%s'", i,
                                t->name ? t->name : "(null)");
        if (!es) return npred_errorf(NPRED_ERR_ARG, "tensor '%s': invalid dtype %d", t->name, t->dtype);
        if (numel < 0 || (uint64_t)numel > SIZE_MAX / es || (size_t)numel * es != t->nbytes)
            return npred_errorf(NPRED_ERR_ARG, "tensor '%s': %zu bytes do not match its shape and "
                                "dtype %s", t->name, t->nbytes, npred_tensor_dtype_name(t->dtype));
        if (t->nbytes && !t->data) return npred_errorf(NPRED_ERR_ARG, "tensor '%s': no data", t->name);
    }
    return npred_tensor_list_check_unique(l);
}

npred_status npred_safetensors_serialize(const npred_tensor_list *l, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    npred_status s = check_list(l);
    if (s) return s;
    sbuf h = {0};
    sb_str(&h, "{");
    if (l->n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < l->n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, l->meta_keys[i]);
            sb_str(&h, ":");
            sb_json_str(&h, l->meta_vals[i]);
        }
        sb_str(&h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        const npred_tensor *t = &l->items[i];
        if (i || l->n_meta) sb_str(&h, ",");
        sb_json_str(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, npred_tensor_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_str(&h, ",");
            sb_u64(&h, (uint64_t)t->shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_u64(&h, off);
        sb_str(&h, ",");
        off += t->nbytes;
        sb_u64(&h, off);
        sb_str(&h, "]}");
    }
    sb_str(&h, "}");
    while (h.n % 8) sb_str(&h, " "); /* keeps the byte buffer 8-byte aligned */
    if (h.oom || off > SIZE_MAX - 8 - h.n) {
        free(h.s);
        return npred_errorf(NPRED_ERR_NOMEM, "safetensors: out of memory");
    }
    size_t total = 8 + h.n + (size_t)off;
    unsigned char *out = malloc(total);
    if (!out) {
        free(h.s);
        return npred_errorf(NPRED_ERR_NOMEM, "safetensors: cannot allocate %zu bytes", total);
    }
    for (int k = 0; k < 8; k++) out[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    memcpy(out + 8, h.s, h.n);
    free(h.s);
    unsigned char *p = out + 8 + (total - 8 - (size_t)off);
    int swap = !npred_host_is_le();
    for (size_t i = 0; i < l->n; i++) {
        const npred_tensor *t = &l->items[i];
        if (!t->nbytes) continue;
        memcpy(p, t->data, t->nbytes);
        size_t es = npred_tensor_dtype_size(t->dtype);
        if (swap) npred_bswap_elems(p, t->nbytes / es, es);
        p += t->nbytes;
    }
    *buf = out;
    *len = total;
    return NPRED_OK;
}

npred_status npred_safetensors_write(const char *path, const npred_tensor_list *l)
{
    void *buf = NULL;
    size_t len = 0;
    npred_status s = npred_safetensors_serialize(l, &buf, &len); /* before buf and len are read */
    return npred_write_serialized(path, s, buf, len);
}

/* ---- reader ---- */

typedef struct {
    const char *name;
    uint64_t b, e;
} span;

static int cmp_span(const void *x, const void *y)
{
    const span *a = x, *b = y;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    if (a->e != b->e) return a->e < b->e ? -1 : 1;
    return 0;
}

/* a JSON number that is a non-negative integer below 2^53 */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static npred_status parse_entry(const char *name, const cJSON *e, uint64_t bufsize,
                                npred_tensor_dtype *dt, int *ndim, int64_t *shape, span *sp)
{
    const char *key = e->string;
    if (!cJSON_IsObject(e))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header entry '%s' is not an object", name, key);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"",
                            name, key);
    npred_status s = npred_tensor_dtype_parse(jd->valuestring, dt);
    if (s) return npred_error_prefix(s, "%s: tensor '%s'", name, key);
    if (!cJSON_IsArray(js))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"",
                            name, key);
    int nd = cJSON_GetArraySize(js);
    if (nd > NPRED_TENSOR_MAXDIM)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions (at most %d)",
                            name, key, nd, NPRED_TENSOR_MAXDIM);
    int d = 0;
    for (const cJSON *x = js->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v))
            return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a "
                                "non-negative integer", name, key, d);
        shape[d] = (int64_t)v;
    }
    *ndim = nd;
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &b) ||
        !json_uint(jo->child->next, &en))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be two "
                            "non-negative integers [begin, end]", name, key);
    if (b > en || en > bufsize)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] outside "
                            "the %llu-byte data buffer", name, key, (unsigned long long)b,
                            (unsigned long long)en, (unsigned long long)bufsize);
    int64_t numel = npred_tensor_numel(nd, shape);
    size_t es = npred_tensor_dtype_size(*dt);
    if (numel < 0 || (uint64_t)numel > UINT64_MAX / es || (uint64_t)numel * es != en - b)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s': %llu bytes in data_offsets, but "
                            "its shape and dtype %s need %s%llu", name, key,
                            (unsigned long long)(en - b), jd->valuestring,
                            numel < 0 ? "more than " : "",
                            numel < 0 ? (unsigned long long)UINT64_MAX
                                      : (unsigned long long)numel * es);
    sp->name = key;
    sp->b = b;
    sp->e = en;
    return NPRED_OK;
}

static npred_status parse_header(const unsigned char *data, uint64_t bufsize, const cJSON *root,
                                 const char *name, npred_tensor_list *out)
{
    if (!cJSON_IsObject(root))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header is not a JSON object", name);
    int n = cJSON_GetArraySize(root);
    span *sp = malloc(((size_t)n + 1) * sizeof *sp);
    if (!sp) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", name);
    npred_status s = NPRED_OK;
    size_t nt = 0;
    int seen_meta = 0;
    for (const cJSON *e = root->child; e && !s; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++) {
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: two \"__metadata__\" entries", name);
                break;
            }
            if (!cJSON_IsObject(e)) {
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: \"__metadata__\" is not an object", name);
                break;
            }
            for (const cJSON *m = e->child; m && !s; m = m->next) {
                if (!cJSON_IsString(m))
                    s = npred_errorf(NPRED_ERR_FORMAT, "%s: metadata '%s' is not a string", name,
                                     m->string);
                else if (npred_tensor_list_get_meta(out, m->string))
                    s = npred_errorf(NPRED_ERR_FORMAT, "%s: duplicate metadata key '%s'", name,
                                     m->string);
                else
                    s = npred_tensor_list_set_meta(out, m->string, m->valuestring);
            }
            continue;
        }
        if (!e->string[0]) { /* also what a name starting with \u0000 becomes */
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: a tensor has an empty name", name);
            break;
        }
        npred_tensor_dtype dt;
        int nd = 0;
        int64_t shape[NPRED_TENSOR_MAXDIM];
        s = parse_entry(name, e, bufsize, &dt, &nd, shape, &sp[nt]);
        if (s) break;
        npred_tensor *t;
        s = npred_tensor_list_add(out, e->string, dt, nd, shape, NULL, &t);
        if (s) {
            npred_error_prefix(s, "%s", name);
            break;
        }
        if (t->nbytes) {
            memcpy(t->data, data + sp[nt].b, t->nbytes);
            if (!npred_host_is_le()) {
                size_t es = npred_tensor_dtype_size(dt);
                npred_bswap_elems(t->data, t->nbytes / es, es);
            }
        }
        nt++;
    }
    if (!s) {
        s = npred_tensor_list_check_unique(out);
        if (s) npred_error_prefix(s, "%s", name);
    }
    if (!s) {
        /* the tensors must tile the buffer exactly */
        qsort(sp, nt, sizeof *sp, cmp_span);
        uint64_t cur = 0;
        const char *prev = NULL;
        for (size_t i = 0; i < nt && !s; i++) {
            if (sp[i].b < cur)
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data "
                                 "buffer (bytes %llu..%llu)", name, prev, sp[i].name,
                                 (unsigned long long)sp[i].b, (unsigned long long)cur);
            else if (sp[i].b > cur)
                s = npred_errorf(NPRED_ERR_FORMAT, "%s: bytes %llu..%llu of the data buffer belong "
                                 "to no tensor", name, (unsigned long long)cur,
                                 (unsigned long long)sp[i].b);
            if (sp[i].e > cur) {
                cur = sp[i].e;
                prev = sp[i].name;
            }
        }
        if (!s && cur != bufsize)
            s = npred_errorf(NPRED_ERR_FORMAT, "%s: the data buffer has %llu bytes, but the "
                             "tensors cover only %llu", name, (unsigned long long)bufsize,
                             (unsigned long long)cur);
    }
    free(sp);
    return s;
}

npred_status npred_safetensors_parse(const void *buf, size_t len, const char *name,
                                     npred_tensor_list *out)
{
    npred_tensor_list_init(out);
    const unsigned char *p = buf;
    if (len < 8)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file "
                            "(8-byte header length missing)", name, len);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | p[k];
    if (hlen > len - 8)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header length %llu exceeds the file size (%zu "
                            "bytes): truncated or not a safetensors file", name,
                            (unsigned long long)hlen, len);
    if (hlen > HEADER_MAX)
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header length %llu is larger than the %u-byte "
                            "limit", name, (unsigned long long)hlen, HEADER_MAX);
    if (hlen < 2 || p[8] != '{')
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header does not start with '{': not a "
                            "safetensors file", name);
    const char *hdr = (const char *)p + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        return npred_errorf(NPRED_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu "
                            "of %llu)", name, at, (unsigned long long)hlen);
    }
    for (const char *q = end; q && q < hdr + hlen; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            cJSON_Delete(root);
            return npred_errorf(NPRED_ERR_FORMAT, "%s: unexpected bytes after the JSON header "
                                "(at byte %zu)", name, (size_t)(q - hdr));
        }
    npred_status s = parse_header(p + 8 + hlen, len - 8 - hlen, root, name, out);
    cJSON_Delete(root);
    if (s) npred_tensor_list_free(out);
    return s;
}

npred_status npred_safetensors_read(const char *path, npred_tensor_list *out)
{
    return npred_tensor_list_read(path, npred_safetensors_parse, out);
}
