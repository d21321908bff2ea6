/* The SENSORIUM 2023 submission file (npred/results.h) on the Parquet writer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npred/results.h"
#include "npred/version.h"
#include "results/parquet.h"

enum { COL_MOUSE, COL_TRIAL, COL_PREDICTION, COL_NEURONS };

/* the kit's DataFrame columns, in its order, with the types pyarrow gives them */
static const npred_pq_column kit_columns[] = {
    {"mouse", NPRED_PQ_STRING, 0},
    {"trial_indices", NPRED_PQ_INT64, 0},
    {"prediction", NPRED_PQ_DOUBLE, 2},
    {"neuron_ids", NPRED_PQ_UINT32, 1},
};

struct npred_video_submission {
    npred_pq_writer *w;
    char *path;
    char created_by[64];
};

void npred_video_submission_options_default(npred_video_submission_options *o)
{
    o->brotli_quality = 5;
    o->page_bytes = (size_t)1 << 20;
    o->row_group_bytes = (size_t)256 << 20;
}

npred_status npred_video_submission_open(npred_video_submission **out, const char *path,
                                         const npred_video_submission_options *opt)
{
    *out = NULL;
    if (!path || !path[0]) return npred_errorf(NPRED_ERR_ARG, "npred_video_submission_open: no path");
    npred_video_submission_options d;
    npred_video_submission_options_default(&d);
    if (!opt) opt = &d;
    npred_video_submission *s = calloc(1, sizeof *s);
    if (!s) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(s->created_by, sizeof s->created_by, "npred version %s", npred_version());
    npred_pq_options po = {opt->brotli_quality, opt->page_bytes, opt->row_group_bytes};
    npred_status st = npred_pq_open(&s->w, s->path, kit_columns, 4, s->created_by, &po);
    if (st) {
        free(s->path);
        free(s);
        return st;
    }
    *out = s;
    return NPRED_OK;
}

/* a well-formed UTF-8 string (no overlong forms, surrogates or code points past U+10FFFF) */
static int utf8_ok(const unsigned char *p)
{
    while (*p) {
        unsigned c = *p++;
        if (c < 0x80) continue;
        int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 ? 1 : -1;
        if (more < 0 || c > 0xf4) return 0;
        unsigned cp = c & (0x3fu >> more);
        for (int k = 0; k < more; k++) {
            if ((*p & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (*p++ & 0x3fu);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
    }
    return 1;
}

npred_status npred_video_submission_add(npred_video_submission *s, const char *mouse, int64_t trial_index,
                                        const float *prediction, int64_t n_neurons, int64_t n_frames,
                                        const uint32_t *neuron_ids)
{
    if (!s) return npred_errorf(NPRED_ERR_ARG, "npred_video_submission_add: no submission file");
    if (!mouse || !mouse[0] || !utf8_ok((const unsigned char *)mouse))
        return npred_errorf(NPRED_ERR_ARG, "%s: trial %lld: the mouse (session) must be a non-empty UTF-8 string",
                            s->path, (long long)trial_index);
    if (n_neurons < 0 || n_frames < 0 || (n_neurons && n_frames && (uint64_t)n_frames > SIZE_MAX / 8 / (uint64_t)n_neurons))
        return npred_errorf(NPRED_ERR_ARG, "%s: mouse %s, trial %lld: invalid prediction shape (%lld, %lld)", s->path,
                            mouse, (long long)trial_index, (long long)n_neurons, (long long)n_frames);
    if ((n_neurons && !neuron_ids) || (n_neurons && n_frames && !prediction))
        return npred_errorf(NPRED_ERR_ARG, "%s: mouse %s, trial %lld: no prediction or neuron ids given", s->path, mouse,
                            (long long)trial_index);
    npred_status st = npred_pq_put_string(s->w, COL_MOUSE, mouse, strlen(mouse));
    if (!st) st = npred_pq_put_int64(s->w, COL_TRIAL, trial_index);
    if (!st) st = npred_pq_put_list2_f32(s->w, COL_PREDICTION, prediction, (size_t)n_neurons, (size_t)n_frames);
    if (!st) st = npred_pq_put_list_u32(s->w, COL_NEURONS, neuron_ids, (size_t)n_neurons);
    if (!st) st = npred_pq_end_row(s->w);
    return st;
}

npred_status npred_video_submission_close(npred_video_submission *s)
{
    if (!s) return npred_errorf(NPRED_ERR_ARG, "npred_video_submission_close: no submission file");
    npred_status st = npred_pq_close(s->w);
    free(s->path);
    free(s);
    return st;
}

void npred_video_submission_abort(npred_video_submission *s)
{
    if (!s) return;
    npred_pq_abort(s->w);
    free(s->path);
    free(s);
}
