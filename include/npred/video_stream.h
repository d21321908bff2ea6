/* npred streaming: the digital twin of a video model, one frame at a time.
 *
 *   npred_stream *s;
 *   npred_stream_open(&s, model, "dynamic29515-10-12");
 *   for (each camera frame) {
 *       int got = npred_stream_push(s, frame, C, H, W, NULL, pupil, rates);   // rates (n)
 *       if (got < 0) { fprintf(stderr, "%s\n", npred_last_error()); break; }
 *       if (got) use(rates);               // 0 during a 3D core's warm-up
 *   }
 *   npred_stream_free(s);
 *
 * A stream holds its own copy of the model's parameters (taken at open: a model
 * changed afterwards needs a new stream) and its own state (the ConvGRU state; for a
 * 3D core the last frames each temporal convolution needs), so any number of streams
 * can run on one model, each used by one thread at a time. Pushing the frames of a clip
 * gives exactly (bit for bit) npred_video_model_predict of the whole clip, frame by
 * frame: push t (0-based since open or reset) returns output frame t - warm-up. A push
 * allocates nothing (the first push of a stream with a 3D core allocates its frame
 * rings). Semantics: docs/video.md (Streaming). */
#ifndef NPRED_VIDEO_STREAM_H
#define NPRED_VIDEO_STREAM_H

#include "npred/base.h"
#include "npred/video_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct npred_stream npred_stream;

/* A stream of session `key` of `model` (a snapshot of its parameters). */
NPRED_API npred_status npred_stream_open(npred_stream **out, const npred_video_model *model, const char *key);
NPRED_API void npred_stream_free(npred_stream *s);
/* Forget every frame pushed: the next push starts a new clip. */
NPRED_API void npred_stream_reset(npred_stream *s);
/* Push one frame: frame (C, H, W) = one time slice of predict's videos (every input
 * plane of the model, normalised as its loader does; C, H, W must be the model's). behavior (k values, k =
 * npred_stream_behavior_channels) or NULL: when given, written as the constant
 * behaviour planes of the frame (channels C - k - p .. C - p - 1, p = 2 when the loader
 * adds the pupil centre as channels, else 0); NPRED_ERR_ARG when k is 0. pupil_center
 * (2 values) of this frame: required with a shifter (also during the warm-up); when
 * given and the loader adds the pupil centre as channels, also written as the last two
 * planes. rates_out (n) receives the session's rates for this frame.
 * Returns 1 when rates_out was written, 0 during the warm-up (rates_out untouched),
 * -1 on an error (npred_last_error(); the stream must then be reset). */
NPRED_API int npred_stream_push(npred_stream *s, const float *frame, int C, int H, int W, const float *behavior,
                                const float *pupil_center, float *rates_out);
/* The session's neurons (the length of rates_out). */
NPRED_API int npred_stream_neurons(const npred_stream *s);
/* Pushes that give no rates after open/reset: the model's temporal cut-off (the sum of
 * (kt - 1) * dilation over a 3D core's convolutions; 0 for a 2D core per frame). */
NPRED_API int npred_stream_warmup_frames(const npred_stream *s);
/* Frames pushed since open/reset. */
NPRED_API int npred_stream_frames_pushed(const npred_stream *s);
/* The frame the stream takes: channels, height, width. */
NPRED_API void npred_stream_frame_shape(const npred_stream *s, int *c, int *h, int *w);
/* Behaviour values a push may carry (planes the loader adds as channels; 0: none). */
NPRED_API int npred_stream_behavior_channels(const npred_stream *s);
/* 1 when a push needs pupil_center (the model has a shifter). */
NPRED_API int npred_stream_needs_pupil(const npred_stream *s);

#ifdef __cplusplus
}
#endif
#endif
