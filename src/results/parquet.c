/* The small Parquet writer (parquet.h). File layout (Apache Parquet format 2.x):
 *
 *   "PAR1" | row group 0: column chunk 0 .. column chunk k-1 | row group 1 ... |
 *   FileMetaData (Thrift compact protocol) | its length (u32 LE) | "PAR1"
 *
 * A column chunk is a run of pages, each a PageHeader (Thrift compact) followed by the
 * page body compressed with brotli; the body of a v1 data page is
 *   [repetition levels]  u32 LE length + RLE/bit-packed hybrid runs   (when max_rep > 0)
 *   [definition levels]  u32 LE length + RLE/bit-packed hybrid runs   (when max_def > 0)
 *   values               PLAIN (BYTE_ARRAY: u32 LE length + bytes; numbers little endian)
 * Levels are written as RLE runs only (a run: varint(count << 1), the value in one byte:
 * every bit width here is at most 3). */
#include "results/parquet.h"

#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"

/* ---- growable byte buffer (a failed allocation sets oom; checked by the callers) */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} pq_buf;

static void buf_reserve(pq_buf *b, size_t more)
{
    if (b->oom) return;
    if (more > SIZE_MAX / 2 - b->n) {
        b->oom = 1;
        return;
    }
    if (b->n + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(pq_buf *b, const void *src, size_t len)
{
    buf_reserve(b, len);
    if (b->oom || !len) return;
    memcpy(b->p + b->n, src, len);
    b->n += len;
}

static void buf_byte(pq_buf *b, uint8_t v) { buf_put(b, &v, 1); }

static void buf_u32le(pq_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_put(b, x, 4);
}

static void buf_u64le(pq_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, x, 8);
}

static void buf_varint(pq_buf *b, uint64_t v)
{
    uint8_t x[10];
    int n = 0;
    do {
        x[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) x[n] |= 0x80;
        n++;
    } while (v);
    buf_put(b, x, (size_t)n);
}

static void buf_free(pq_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- Thrift compact protocol (only what the Parquet footer and page headers use) */
enum { TC_TRUE = 1, TC_FALSE = 2, TC_BYTE = 3, TC_I32 = 5, TC_I64 = 6, TC_BINARY = 8, TC_LIST = 9, TC_STRUCT = 12 };

typedef struct {
    pq_buf *b;
    int last[8]; /* the last field id of each open struct */
    int depth;
} tc_writer;

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static void tc_field(tc_writer *t, int id, int type)
{
    int delta = id - t->last[t->depth];
    if (delta > 0 && delta <= 15) buf_byte(t->b, (uint8_t)(delta << 4 | type));
    else {
        buf_byte(t->b, (uint8_t)type);
        buf_varint(t->b, zigzag(id));
    }
    t->last[t->depth] = id;
}

static void tc_i32(tc_writer *t, int id, int32_t v)
{
    tc_field(t, id, TC_I32);
    buf_varint(t->b, zigzag(v));
}

static void tc_i64(tc_writer *t, int id, int64_t v)
{
    tc_field(t, id, TC_I64);
    buf_varint(t->b, zigzag(v));
}

static void tc_string(tc_writer *t, int id, const char *s)
{
    size_t n = strlen(s);
    tc_field(t, id, TC_BINARY);
    buf_varint(t->b, n);
    buf_put(t->b, s, n);
}

/* a struct as field `id` of the open struct, or (id 0) as a list element or the root */
static void tc_struct_begin(tc_writer *t, int id)
{
    if (id) tc_field(t, id, TC_STRUCT);
    t->last[++t->depth] = 0;
}

static void tc_struct_end(tc_writer *t)
{
    buf_byte(t->b, 0); /* stop */
    t->depth--;
}

static void tc_list(tc_writer *t, int id, int elem_type, size_t n)
{
    tc_field(t, id, TC_LIST);
    if (n < 15) buf_byte(t->b, (uint8_t)(n << 4 | (size_t)elem_type));
    else {
        buf_byte(t->b, (uint8_t)(0xf0 | elem_type));
        buf_varint(t->b, n);
    }
}

/* ---- Parquet enums (parquet.thrift) */
enum { PT_INT32 = 1, PT_INT64 = 2, PT_DOUBLE = 5, PT_BYTE_ARRAY = 6 };
enum { REP_OPTIONAL = 1, REP_REPEATED = 2 };
enum { CONV_UTF8 = 0, CONV_LIST = 3, CONV_UINT_32 = 13 };
enum { ENC_PLAIN = 0, ENC_RLE = 3 };
enum { CODEC_BROTLI = 4 };
enum { PAGE_DATA = 0 };

typedef struct {
    int64_t offset, num_values, uncompressed, compressed;
} pq_chunk_meta;

/* a finished page of the row group being filled: its body, compressed when the row
 * group is written (all pages of all columns at once, in parallel) */
typedef struct {
    uint8_t *body, *z;
    size_t n, zn;
    int64_t values; /* level entries */
    int ok;         /* compressed */
} pq_page;

typedef struct {
    npred_pq_column spec;
    int max_rep, max_def;
    pq_buf rep, def, val; /* the page being filled */
    int64_t page_values;  /* level entries in it */
    pq_page *pages;       /* finished pages of the row group being filled */
    int n_pages, cap_pages;
    size_t pages_bytes; /* their bodies */
    int given;          /* values given in the current row */
} pq_col;

struct npred_pq_writer {
    npred_atomic_file file;
    int open_file;
    const char *path;
    const char *created_by;
    npred_pq_options opt;
    int ncols;
    pq_col *cols;
    int64_t rows, rg_rows, pos;
    pq_chunk_meta *meta; /* ncols per written row group */
    int64_t *rg_num_rows;
    int n_rg, cap_rg;
    pq_buf scratch;
    npred_status failed; /* a writer that failed refuses everything after */
};

static npred_status oom(npred_pq_writer *w)
{
    w->failed = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory writing the Parquet file", w->path);
    return w->failed;
}

static const char *leaf_name(npred_pq_leaf l)
{
    static const char *n[] = {"string", "int64", "uint32", "double"};
    return n[l];
}

npred_status npred_pq_open(npred_pq_writer **out, const char *path, const npred_pq_column *cols, int ncols,
                           const char *created_by, const npred_pq_options *opt)
{
    *out = NULL;
    if (ncols < 1 || ncols > 64 || !cols)
        return npred_errorf(NPRED_ERR_ARG, "%s: a Parquet file needs 1 to 64 columns (got %d)", path, ncols);
    if (opt->brotli_quality < 0 || opt->brotli_quality > 11 || !opt->page_bytes || !opt->row_group_bytes)
        return npred_errorf(NPRED_ERR_ARG, "%s: brotli quality must be 0..11 and page / row group sizes > 0", path);
    for (int c = 0; c < ncols; c++)
        if (cols[c].lists < 0 || cols[c].lists > 2 || !cols[c].name || !cols[c].name[0] ||
            (unsigned)cols[c].leaf > NPRED_PQ_DOUBLE)
            return npred_errorf(NPRED_ERR_ARG, "%s: column %d is not a supported Parquet column", path, c);
    npred_pq_writer *w = calloc(1, sizeof *w);
    if (!w) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    w->cols = calloc((size_t)ncols, sizeof *w->cols);
    if (!w->cols) {
        free(w);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    }
    w->path = path;
    w->created_by = created_by;
    w->opt = *opt;
    w->ncols = ncols;
    for (int c = 0; c < ncols; c++) {
        w->cols[c].spec = cols[c];
        w->cols[c].max_rep = cols[c].lists;
        w->cols[c].max_def = 2 * cols[c].lists + 1;
    }
    npred_status s = npred_atomic_file_open(&w->file, path);
    if (s) {
        free(w->cols);
        free(w);
        return s;
    }
    w->open_file = 1;
    s = npred_atomic_file_write(&w->file, "PAR1", 4);
    if (s) {
        npred_pq_abort(w);
        return s;
    }
    w->pos = 4;
    *out = w;
    return NPRED_OK;
}

/* RLE runs of one level array into b, after a u32 LE length */
static void encode_levels(pq_buf *b, const pq_buf *lv)
{
    size_t at = b->n;
    buf_u32le(b, 0);
    for (size_t i = 0; i < lv->n;) {
        size_t j = i + 1;
        while (j < lv->n && lv->p[j] == lv->p[i]) j++;
        buf_varint(b, (uint64_t)(j - i) << 1);
        buf_byte(b, lv->p[i]);
        i = j;
    }
    if (b->oom) return;
    uint32_t len = (uint32_t)(b->n - at - 4);
    for (int k = 0; k < 4; k++) b->p[at + (size_t)k] = (uint8_t)(len >> (8 * k));
}

static npred_status flush_page(npred_pq_writer *w, pq_col *c)
{
    if (!c->page_values) return NPRED_OK;
    if (c->n_pages == c->cap_pages) {
        int cap = c->cap_pages ? 2 * c->cap_pages : 8;
        pq_page *p = realloc(c->pages, (size_t)cap * sizeof *p);
        if (!p) return oom(w);
        c->pages = p;
        c->cap_pages = cap;
    }
    pq_buf body = {0};
    if (c->max_rep) encode_levels(&body, &c->rep);
    encode_levels(&body, &c->def);
    buf_put(&body, c->val.p, c->val.n);
    if (body.oom) {
        buf_free(&body);
        return oom(w);
    }
    if (body.n > INT32_MAX) {
        buf_free(&body);
        return w->failed = npred_errorf(NPRED_ERR_ARG,
                                        "%s: a page of column '%s' would hold more than 2^31 - 1 bytes (Parquet's limit)",
                                        w->path, c->spec.name);
    }
    c->pages[c->n_pages++] = (pq_page){body.p, NULL, body.n, 0, c->page_values, 0};
    c->pages_bytes += body.n;
    c->page_values = 0;
    c->rep.n = c->def.n = c->val.n = 0;
    return NPRED_OK;
}

static void free_pages(pq_col *c)
{
    for (int i = 0; i < c->n_pages; i++) free(c->pages[i].body), free(c->pages[i].z);
    c->n_pages = 0;
    c->pages_bytes = 0;
}

static void compress_page(pq_page *pg, int quality)
{
    size_t cap = BrotliEncoderMaxCompressedSize(pg->n);
    if (cap < pg->n + 64) cap = pg->n + 64; /* 0 (overflow) or tiny inputs */
    pg->z = malloc(cap);
    pg->zn = cap;
    pg->ok = pg->z && BrotliEncoderCompress(quality, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, pg->n, pg->body,
                                            &pg->zn, pg->z) && pg->zn <= INT32_MAX;
}

/* the PageHeader of a compressed data page into b */
static void page_header(pq_buf *b, const pq_page *pg)
{
    tc_writer t = {.b = b};
    tc_struct_begin(&t, 0); /* PageHeader */
    tc_i32(&t, 1, PAGE_DATA);
    tc_i32(&t, 2, (int32_t)pg->n);
    tc_i32(&t, 3, (int32_t)pg->zn);
    tc_struct_begin(&t, 5); /* DataPageHeader */
    tc_i32(&t, 1, (int32_t)pg->values);
    tc_i32(&t, 2, ENC_PLAIN);
    tc_i32(&t, 3, ENC_RLE);
    tc_i32(&t, 4, ENC_RLE);
    tc_struct_end(&t);
    tc_struct_end(&t);
}

/* Compress every page of the row group (in parallel: pages are independent, so the
 * bytes do not depend on the thread count), then write the column chunks in order. */
static npred_status write_row_group(npred_pq_writer *w)
{
    if (!w->rg_rows) return NPRED_OK;
    for (int k = 0; k < w->ncols; k++) {
        npred_status s = flush_page(w, &w->cols[k]);
        if (s) return s;
    }
    if (w->n_rg == w->cap_rg) {
        int cap = w->cap_rg ? 2 * w->cap_rg : 4;
        pq_chunk_meta *m = realloc(w->meta, (size_t)cap * (size_t)w->ncols * sizeof *m);
        if (!m) return oom(w);
        w->meta = m;
        int64_t *r = realloc(w->rg_num_rows, (size_t)cap * sizeof *r);
        if (!r) return oom(w);
        w->rg_num_rows = r;
        w->cap_rg = cap;
    }
    int total = 0;
    for (int k = 0; k < w->ncols; k++) total += w->cols[k].n_pages;
    pq_page **all = malloc((size_t)total * sizeof *all);
    if (!all) return oom(w);
    for (int k = 0, i = 0; k < w->ncols; k++)
        for (int p = 0; p < w->cols[k].n_pages; p++) all[i++] = &w->cols[k].pages[p];
    const int quality = w->opt.brotli_quality;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < total; i++) compress_page(all[i], quality);
    free(all);
    npred_status s = NPRED_OK;
    for (int k = 0; k < w->ncols && !s; k++) {
        pq_col *c = &w->cols[k];
        pq_chunk_meta *m = &w->meta[(size_t)w->n_rg * (size_t)w->ncols + (size_t)k];
        *m = (pq_chunk_meta){w->pos, 0, 0, 0};
        for (int p = 0; p < c->n_pages && !s; p++) {
            const pq_page *pg = &c->pages[p];
            if (!pg->ok) {
                s = w->failed = npred_errorf(NPRED_ERR_NOMEM, "%s: brotli could not compress a page of column '%s' "
                                             "(out of memory)", w->path, c->spec.name);
                break;
            }
            pq_buf *h = &w->scratch;
            h->n = 0;
            page_header(h, pg);
            if (h->oom) {
                s = oom(w);
                break;
            }
            s = npred_atomic_file_write(&w->file, h->p, h->n);
            if (!s) s = npred_atomic_file_write(&w->file, pg->z, pg->zn);
            if (s) {
                w->failed = s;
                break;
            }
            w->pos += (int64_t)(h->n + pg->zn);
            m->num_values += pg->values;
            m->uncompressed += (int64_t)(h->n + pg->n);
            m->compressed += (int64_t)(h->n + pg->zn);
        }
    }
    for (int k = 0; k < w->ncols; k++) free_pages(&w->cols[k]);
    if (s) return s;
    w->rg_num_rows[w->n_rg++] = w->rg_rows;
    w->rg_rows = 0;
    return NPRED_OK;
}

/* the column c of the kind asked for, not given yet in this row */
static npred_status take(npred_pq_writer *w, int c, npred_pq_leaf leaf, int lists, pq_col **out)
{
    if (w->failed) return npred_errorf(w->failed, "%s: the Parquet writer failed before", w->path);
    if (c < 0 || c >= w->ncols) return npred_errorf(NPRED_ERR_ARG, "%s: no column %d", w->path, c);
    pq_col *col = &w->cols[c];
    if (col->spec.leaf != leaf || col->spec.lists != lists)
        return npred_errorf(NPRED_ERR_ARG, "%s: column '%s' holds %s%s, not %s%s", w->path, col->spec.name,
                            col->spec.lists == 2 ? "lists of lists of " : col->spec.lists ? "lists of " : "",
                            leaf_name(col->spec.leaf), lists == 2 ? "lists of lists of " : lists ? "lists of " : "",
                            leaf_name(leaf));
    if (col->given)
        return npred_errorf(NPRED_ERR_ARG, "%s: column '%s' was given twice in row %lld", w->path, col->spec.name,
                            (long long)w->rows);
    *out = col;
    return NPRED_OK;
}

static void level(pq_col *c, uint8_t r, uint8_t d)
{
    if (c->max_rep) buf_byte(&c->rep, r);
    buf_byte(&c->def, d);
    c->page_values++;
}

static npred_status given(npred_pq_writer *w, pq_col *c)
{
    if (c->rep.oom || c->def.oom || c->val.oom) return oom(w);
    c->given = 1;
    return NPRED_OK;
}

npred_status npred_pq_put_string(npred_pq_writer *w, int c, const char *s, size_t len)
{
    pq_col *col = NULL;
    npred_status st = take(w, c, NPRED_PQ_STRING, 0, &col);
    if (st) return st;
    if (len > INT32_MAX) return npred_errorf(NPRED_ERR_ARG, "%s: a string of column '%s' is too long", w->path, col->spec.name);
    level(col, 0, 1);
    buf_u32le(&col->val, (uint32_t)len);
    buf_put(&col->val, s, len);
    return given(w, col);
}

npred_status npred_pq_put_int64(npred_pq_writer *w, int c, int64_t v)
{
    pq_col *col = NULL;
    npred_status st = take(w, c, NPRED_PQ_INT64, 0, &col);
    if (st) return st;
    level(col, 0, 1);
    buf_u64le(&col->val, (uint64_t)v);
    return given(w, col);
}

npred_status npred_pq_put_list_u32(npred_pq_writer *w, int c, const uint32_t *v, size_t n)
{
    pq_col *col = NULL;
    npred_status st = take(w, c, NPRED_PQ_UINT32, 1, &col);
    if (st) return st;
    if (!n) level(col, 0, 1); /* an empty list */
    for (size_t i = 0; i < n; i++) {
        level(col, i ? 1 : 0, 3);
        buf_u32le(&col->val, v[i]);
    }
    return given(w, col);
}

npred_status npred_pq_put_list2_f32(npred_pq_writer *w, int c, const float *v, size_t outer, size_t inner)
{
    pq_col *col = NULL;
    npred_status st = take(w, c, NPRED_PQ_DOUBLE, 2, &col);
    if (st) return st;
    if (!outer) level(col, 0, 1); /* an empty outer list */
    for (size_t i = 0; i < outer; i++) {
        if (!inner) level(col, i ? 1 : 0, 3); /* an empty inner list */
        for (size_t j = 0; j < inner; j++) {
            level(col, (i == 0 && j == 0) ? 0 : j == 0 ? 1 : 2, 5);
            double d = v[i * inner + j];
            uint64_t bits;
            memcpy(&bits, &d, 8);
            buf_u64le(&col->val, bits);
        }
    }
    return given(w, col);
}

npred_status npred_pq_end_row(npred_pq_writer *w)
{
    if (w->failed) return npred_errorf(w->failed, "%s: the Parquet writer failed before", w->path);
    for (int k = 0; k < w->ncols; k++)
        if (!w->cols[k].given)
            return npred_errorf(NPRED_ERR_ARG, "%s: row %lld has no value for column '%s'", w->path,
                                (long long)w->rows, w->cols[k].spec.name);
    size_t pending = 0;
    for (int k = 0; k < w->ncols; k++) {
        pq_col *c = &w->cols[k];
        c->given = 0;
        if (c->rep.n + c->def.n + c->val.n >= w->opt.page_bytes) {
            npred_status s = flush_page(w, c);
            if (s) return s;
        }
        pending += c->rep.n + c->def.n + c->val.n + c->pages_bytes;
    }
    w->rows++;
    w->rg_rows++;
    if (pending >= w->opt.row_group_bytes) return write_row_group(w);
    return NPRED_OK;
}

static void schema_element(tc_writer *t, int type, int repetition, const char *name, int children, int converted,
                           int logical)
{
    tc_struct_begin(t, 0);
    if (type >= 0) tc_i32(t, 1, type);
    if (repetition >= 0) tc_i32(t, 3, repetition);
    tc_string(t, 4, name);
    if (children >= 0) tc_i32(t, 5, children);
    if (converted >= 0) tc_i32(t, 6, converted);
    if (logical) { /* LogicalType union: 1 STRING, 3 LIST, 10 INTEGER */
        tc_struct_begin(t, 10);
        tc_struct_begin(t, logical);
        if (logical == 10) { /* IntType(bitWidth 32, isSigned false) */
            tc_field(t, 1, TC_BYTE);
            buf_byte(t->b, 32);
            tc_field(t, 2, TC_FALSE);
        }
        tc_struct_end(t);
        tc_struct_end(t);
    }
    tc_struct_end(t);
}

static void write_schema(tc_writer *t, const pq_col *cols, int ncols)
{
    size_t n = 1;
    for (int k = 0; k < ncols; k++) n += 1 + 2 * (size_t)cols[k].spec.lists;
    tc_list(t, 2, TC_STRUCT, n);
    schema_element(t, -1, -1, "schema", ncols, -1, 0);
    for (int k = 0; k < ncols; k++) {
        const npred_pq_column *c = &cols[k].spec;
        const char *name = c->name;
        for (int l = 0; l < c->lists; l++) {
            schema_element(t, -1, REP_OPTIONAL, name, 1, CONV_LIST, 3);
            schema_element(t, -1, REP_REPEATED, "list", 1, -1, 0);
            name = "element";
        }
        switch (c->leaf) {
        case NPRED_PQ_STRING: schema_element(t, PT_BYTE_ARRAY, REP_OPTIONAL, name, -1, CONV_UTF8, 1); break;
        case NPRED_PQ_INT64: schema_element(t, PT_INT64, REP_OPTIONAL, name, -1, -1, 0); break;
        case NPRED_PQ_UINT32: schema_element(t, PT_INT32, REP_OPTIONAL, name, -1, CONV_UINT_32, 10); break;
        case NPRED_PQ_DOUBLE: schema_element(t, PT_DOUBLE, REP_OPTIONAL, name, -1, -1, 0); break;
        }
    }
}

static const int physical[] = {PT_BYTE_ARRAY, PT_INT64, PT_INT32, PT_DOUBLE};

static void write_row_groups(tc_writer *t, const npred_pq_writer *w)
{
    tc_list(t, 4, TC_STRUCT, (size_t)w->n_rg);
    for (int g = 0; g < w->n_rg; g++) {
        const pq_chunk_meta *m = &w->meta[(size_t)g * (size_t)w->ncols];
        int64_t total = 0, total_z = 0;
        for (int k = 0; k < w->ncols; k++) {
            total += m[k].uncompressed;
            total_z += m[k].compressed;
        }
        tc_struct_begin(t, 0); /* RowGroup */
        tc_list(t, 1, TC_STRUCT, (size_t)w->ncols);
        for (int k = 0; k < w->ncols; k++) {
            const npred_pq_column *c = &w->cols[k].spec;
            tc_struct_begin(t, 0); /* ColumnChunk */
            tc_i64(t, 2, m[k].offset);
            tc_struct_begin(t, 3); /* ColumnMetaData */
            tc_i32(t, 1, physical[c->leaf]);
            tc_list(t, 2, TC_I32, 2);
            buf_varint(t->b, zigzag(ENC_PLAIN));
            buf_varint(t->b, zigzag(ENC_RLE));
            tc_list(t, 3, TC_BINARY, 1 + 2 * (size_t)c->lists);
            const char *parts[5] = {c->name, "list", "element", "list", "element"};
            for (int p = 0; p < 1 + 2 * c->lists; p++) {
                buf_varint(t->b, strlen(parts[p]));
                buf_put(t->b, parts[p], strlen(parts[p]));
            }
            tc_i32(t, 4, CODEC_BROTLI);
            tc_i64(t, 5, m[k].num_values);
            tc_i64(t, 6, m[k].uncompressed);
            tc_i64(t, 7, m[k].compressed);
            tc_i64(t, 9, m[k].offset);
            tc_struct_end(t);
            tc_struct_end(t);
        }
        tc_i64(t, 2, total);
        tc_i64(t, 3, w->rg_num_rows[g]);
        tc_i64(t, 5, m[0].offset);
        tc_i64(t, 6, total_z);
        tc_struct_end(t);
    }
}

npred_status npred_pq_close(npred_pq_writer *w)
{
    npred_status s = w->failed;
    if (s) s = npred_errorf(s, "%s: the Parquet writer failed before; nothing written", w->path);
    for (int k = 0; k < w->ncols && !s; k++)
        if (w->cols[k].given)
            s = npred_errorf(NPRED_ERR_ARG, "%s: row %lld was not finished (npred_pq_end_row)", w->path,
                             (long long)w->rows);
    if (!s) s = write_row_group(w);
    if (!s) {
        pq_buf *b = &w->scratch;
        b->n = 0;
        tc_writer t = {.b = b};
        tc_struct_begin(&t, 0); /* FileMetaData */
        tc_i32(&t, 1, 2);
        write_schema(&t, w->cols, w->ncols);
        tc_i64(&t, 3, w->rows);
        write_row_groups(&t, w);
        tc_string(&t, 6, w->created_by);
        tc_struct_end(&t);
        size_t len = b->n;
        buf_u32le(b, (uint32_t)len);
        buf_put(b, "PAR1", 4);
        if (b->oom) s = oom(w);
        else if (len > UINT32_MAX) s = npred_errorf(NPRED_ERR_ARG, "%s: the Parquet footer is too large", w->path);
        if (!s) s = npred_atomic_file_write(&w->file, b->p, b->n);
    }
    if (!s) {
        w->open_file = 0;
        s = npred_atomic_file_commit(&w->file);
    }
    npred_pq_abort(w);
    return s;
}

void npred_pq_abort(npred_pq_writer *w)
{
    if (!w) return;
    if (w->open_file) npred_atomic_file_abort(&w->file);
    for (int k = 0; k < w->ncols; k++) {
        buf_free(&w->cols[k].rep);
        buf_free(&w->cols[k].def);
        buf_free(&w->cols[k].val);
        free_pages(&w->cols[k]);
        free(w->cols[k].pages);
    }
    buf_free(&w->scratch);
    free(w->cols);
    free(w->meta);
    free(w->rg_num_rows);
    free(w);
}
