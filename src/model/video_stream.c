/* Streaming a video model one frame at a time (include/npred/video_stream.h): a stream
 * owns an encoder for one clip of batch 1 with a copy of the model's parameters, and
 * runs npred_video_encoder_stream_push on it (docs/video.md, Streaming). */
#include <stdlib.h>
#include <string.h>

#include "model/video_model.h"
#include "npred/video.h"
#include "npred/video_stream.h"

struct npred_stream {
    npred_video_encoder e;
    int si, n;                  /* session index, neurons */
    int c, h, w;                /* the frame */
    int k_beh, pupil_planes;    /* behaviour planes and pupil planes (0 or 2) the loader adds as channels */
    int warmup, pushed, failed;
    float *frame;               /* (c, h, w): the pushed frame with the behaviour / pupil planes written */
    float *rates;               /* (n) */
};

/* The behaviour and pupil planes the model's loader record adds as channels (after
 * the one video channel of a SENSORIUM 2023 scan). */
static npred_status channel_layout(npred_stream *s, const npred_video_model *m)
{
    const char *rec = npred_video_model_loader_json(m);
    s->k_beh = s->pupil_planes = 0;
    if (!rec) return NPRED_OK;
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    char **paths = NULL;
    size_t np = 0;
    npred_status st = npred_video_loader_config_parse(&lc, rec, &paths, &np);
    npred_loader_paths_free(paths, np);
    if (st) {
        npred_video_loader_config_free(&lc);
        return npred_error_prefix(st, "stream: the model's loader record");
    }
    s->pupil_planes = lc.include_pupil_centers_as_channels ? 2 : 0;
    if (lc.include_behavior) s->k_beh = s->c - 1 - s->pupil_planes;
    npred_video_loader_config_free(&lc);
    if (s->k_beh < 0 || s->c - s->k_beh - s->pupil_planes < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "stream: the model takes %d channels, too few for its loader record "
                            "(behaviour and %d pupil planes as channels after the video)", s->c, s->pupil_planes);
    return NPRED_OK;
}

npred_status npred_stream_open(npred_stream **out, const npred_video_model *model, const char *key)
{
    if (!out || !model) return npred_errorf(NPRED_ERR_ARG, "npred_stream_open: out and model are required");
    *out = NULL;
    int si = key ? npred_video_model_session_index(model, key) : -1;
    if (si < 0) return npred_errorf(NPRED_ERR_ARG, "stream: the model has no session '%s'", key ? key : "(null)");
    npred_stream *s = calloc(1, sizeof *s);
    if (!s) return npred_errorf(NPRED_ERR_NOMEM, "stream: out of memory");
    const npred_video_model *m = model;
    s->si = si, s->n = m->n_neurons[si], s->c = m->in_c, s->h = m->in_h, s->w = m->in_w;
    const char **keys = calloc((size_t)m->n_sessions, sizeof *keys);
    npred_status st = keys ? channel_layout(s, m) : npred_errorf(NPRED_ERR_NOMEM, "stream: out of memory");
    for (int i = 0; !st && i < m->n_sessions; i++) keys[i] = m->keys[i];
    /* an encoder for one clip of the shortest length that gives an output */
    if (!st)
        st = npred_video_encoder_create(&s->e, &m->cfg, m->in_c, m->cutoff + 1, m->in_h, m->in_w, m->n_sessions, keys,
                                        m->n_neurons, 1);
    free(keys);
    if (!st) {
        const npred_ptable *a = &m->e->t;
        npred_ptable *b = &s->e.t;
        if (a->n != b->n || a->n_params != b->n_params || a->n_buffers != b->n_buffers)
            st = npred_errorf(NPRED_ERR_UNSUPPORTED, "stream: the parameter table differs from the model's");
        else {
            memcpy(b->data, a->data, a->n_params * sizeof(float));
            memcpy(b->bufdata, a->bufdata, a->n_buffers * sizeof(float));
        }
    }
    if (!st) {
        s->frame = malloc((size_t)s->c * s->h * s->w * sizeof(float));
        s->rates = malloc((size_t)s->n * sizeof(float));
        if (!s->frame || !s->rates) st = npred_errorf(NPRED_ERR_NOMEM, "stream: out of memory");
    }
    if (st) {
        npred_stream_free(s);
        return st;
    }
    s->warmup = npred_video_encoder_stream_warmup(&s->e);
    npred_video_encoder_stream_reset(&s->e);
    *out = s;
    return NPRED_OK;
}

void npred_stream_free(npred_stream *s)
{
    if (!s) return;
    if (s->e.t.items) npred_video_encoder_free(&s->e);
    free(s->frame);
    free(s->rates);
    free(s);
}

void npred_stream_reset(npred_stream *s)
{
    if (!s) return;
    npred_video_encoder_stream_reset(&s->e);
    s->pushed = 0;
    s->failed = 0;
}

int npred_stream_push(npred_stream *s, const float *frame, int C, int H, int W, const float *behavior,
                      const float *pupil_center, float *rates_out)
{
    if (!s || !frame || !rates_out) {
        npred_errorf(NPRED_ERR_ARG, "npred_stream_push: the stream, frame and rates_out are required");
        return -1;
    }
    const char *key = s->e.s[s->si].key;
    if (s->failed) {
        npred_errorf(NPRED_ERR_ARG, "stream of session %s: a push failed; reset the stream first", key);
        return -1;
    }
    if (C != s->c || H != s->h || W != s->w) {
        npred_errorf(NPRED_ERR_SHAPE, "stream of session %s: a frame of %d channels, %dx%d; the model takes %d "
                     "channels, %dx%d", key, C, H, W, s->c, s->h, s->w);
        return -1;
    }
    if (behavior && !s->k_beh) {
        npred_errorf(NPRED_ERR_ARG, "stream of session %s: behaviour given, but the model takes no behaviour planes "
                     "(its loader record adds none as channels)", key);
        return -1;
    }
    if (!pupil_center && s->e.s[s->si].has_shifter) {
        npred_errorf(NPRED_ERR_ARG, "stream of session %s: this model has a shifter: pupil_center (2 values) is "
                     "required with every frame", key);
        return -1;
    }
    const float *x = frame;
    size_t hw = (size_t)s->h * s->w;
    if (behavior || (pupil_center && s->pupil_planes)) {
        memcpy(s->frame, frame, (size_t)s->c * hw * sizeof(float));
        int c0 = s->c - s->k_beh - s->pupil_planes;
        for (int k = 0; behavior && k < s->k_beh; k++)
            for (size_t i = 0; i < hw; i++) s->frame[(size_t)(c0 + k) * hw + i] = behavior[k];
        for (int k = 0; pupil_center && k < s->pupil_planes; k++)
            for (size_t i = 0; i < hw; i++) s->frame[(size_t)(s->c - 2 + k) * hw + i] = pupil_center[k];
        x = s->frame;
    }
    int ready = 0;
    npred_status st = npred_video_encoder_stream_push(&s->e, s->si, x, pupil_center, 1, s->rates, &ready);
    if (st) {
        s->failed = 1;
        return -1;
    }
    s->pushed++;
    if (!ready) return 0;
    memcpy(rates_out, s->rates, (size_t)s->n * sizeof(float));
    return 1;
}

int npred_stream_neurons(const npred_stream *s) { return s ? s->n : 0; }
int npred_stream_warmup_frames(const npred_stream *s) { return s ? s->warmup : 0; }
int npred_stream_frames_pushed(const npred_stream *s) { return s ? s->pushed : 0; }
int npred_stream_behavior_channels(const npred_stream *s) { return s ? s->k_beh : 0; }
int npred_stream_needs_pupil(const npred_stream *s) { return s && s->e.s[s->si].has_shifter; }

void npred_stream_frame_shape(const npred_stream *s, int *c, int *h, int *w)
{
    if (c) *c = s ? s->c : 0;
    if (h) *h = s ? s->h : 0;
    if (w) *w = s ? s->w : 0;
}
