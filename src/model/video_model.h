/* The public video model handle (include/npred/video_model.h) around the internal
 * encoder (video_encoder.h). The encoder is built for one clip length T; the handle
 * rebuilds it (parameters copied) when a call needs another T or a larger batch.
 * Internal users (training, streaming) reach the encoder with
 * npred_video_model_reserve + m->e (rebuilt by reserve: do not
 * keep the pointer across it). */
#ifndef NPRED_MODEL_VIDEO_MODEL_H
#define NPRED_MODEL_VIDEO_MODEL_H

#include "model/video_encoder.h"
#include "npred/video_model.h"

struct npred_video_model {
    npred_video_encoder_config cfg;
    npred_video_encoder *e;     /* built for e->in_t frames and e->max_batch clips (never NULL) */
    char *config_json;          /* the make_video_model arguments as read (unformatted JSON) */
    char *loader_json;          /* mouse_video_loader record, or NULL */
    char core_type[32];
    int in_c, in_h, in_w;
    int cutoff;                 /* T - T' */
    int max_batch;              /* the capacity asked for at create/load */
    int n_sessions;
    char (*keys)[96];
    int *n_neurons;
};

/* Everything but the parameter values (config, sessions, shapes, an encoder for the
 * shortest clip; parameters zero). parsed (may be NULL) receives the parsed config. */
npred_status npred_video_model_build(npred_video_model **out, const char *config_json, const char *where, int in_c,
                                     int in_h, int in_w, const char *const *keys, const int *n_neurons, int n_sessions,
                                     int max_batch, cJSON **parsed);

/* Make m->e an encoder for clips of T frames and batches up to max_batch (0: the
 * model's own), keeping every parameter and buffer; a no-op when it already is. */
npred_status npred_video_model_reserve(npred_video_model *m, int T, int max_batch);

/* make_video_model's initialisation (docs/video.md): Conv3d / ConvGRU weights
 * xavier_normal, their biases 0; BatchNorm weight 1, bias 0, running stats 0 / 1; the
 * 2D cores as npred_core_init_params; FullGaussian2d as npred_readout_init_params with
 * the bias from mean_activity, its source grid from the coordinates; the MLP shifter at
 * nn.Linear's default (MLPShifter.initialize is a no-op in 43faede). */
npred_status npred_video_encoder_init_params(npred_video_encoder *e, const npred_video_model_session *sessions,
                                             npred_rng *rng);

#endif
