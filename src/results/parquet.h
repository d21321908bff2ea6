/* A small Apache Parquet writer: the few column kinds the SENSORIUM 2023 submission
 * file needs (docs/results.md), PLAIN values, RLE levels, data pages v1, BROTLI pages,
 * written in row order to a temporary file put in place atomically on close.
 *
 * Every column is nullable as pandas/pyarrow write them (no value is ever null here),
 * a list column is the standard three-level LIST structure
 *
 *   optional group <name> (LIST) { repeated group list { optional <leaf> element; } }
 *
 * nested once more for a list of lists. A column chunk is split into pages at row
 * boundaries once a page holds page_bytes (uncompressed); a row group is written
 * once the buffered pages hold row_group_bytes (uncompressed), and at close: its pages
 * are then compressed in parallel (OpenMP; the bytes do not depend on the thread
 * count) and written column chunk by column chunk. */
#ifndef NPRED_RESULTS_PARQUET_H
#define NPRED_RESULTS_PARQUET_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

typedef enum {
    NPRED_PQ_STRING, /* BYTE_ARRAY, String (UTF8) */
    NPRED_PQ_INT64,  /* INT64 */
    NPRED_PQ_UINT32, /* INT32, Int(32, unsigned) (UINT_32) */
    NPRED_PQ_DOUBLE  /* DOUBLE */
} npred_pq_leaf;

typedef struct {
    const char *name;
    npred_pq_leaf leaf;
    int lists; /* 0: one value per row, 1: a list, 2: a list of lists */
} npred_pq_column;

typedef struct {
    int brotli_quality;     /* 0..11 */
    size_t page_bytes;      /* > 0 */
    size_t row_group_bytes; /* > 0 */
} npred_pq_options;

typedef struct npred_pq_writer npred_pq_writer;

/* cols (1..64 columns) and path must outlive the writer; the temporary file is
 * created now (an error naming path when it cannot be). */
npred_status npred_pq_open(npred_pq_writer **w, const char *path, const npred_pq_column *cols, int ncols,
                           const char *created_by, const npred_pq_options *opt);
/* One value of the current row for column c (of the matching kind); after one value
 * of every column, npred_pq_end_row. */
npred_status npred_pq_put_string(npred_pq_writer *w, int c, const char *s, size_t len);
npred_status npred_pq_put_int64(npred_pq_writer *w, int c, int64_t v);
npred_status npred_pq_put_list_u32(npred_pq_writer *w, int c, const uint32_t *v, size_t n);
/* a list of `outer` lists of `inner` doubles each, given as float32 (exact) */
npred_status npred_pq_put_list2_f32(npred_pq_writer *w, int c, const float *v, size_t outer, size_t inner);
npred_status npred_pq_end_row(npred_pq_writer *w);
/* Finish the file (footer), put it in place and free the writer; after an error the
 * file is not written. Every call frees w. */
npred_status npred_pq_close(npred_pq_writer *w);
/* Give up: remove the temporary file, free the writer (NULL is fine). */
void npred_pq_abort(npred_pq_writer *w);

#endif
