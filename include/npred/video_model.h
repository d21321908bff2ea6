/* npred video models: the SENSORIUM 2023 kit's VideoFiringRateEncoder as
 * make_video_model builds it (a 3D core, or a 2D core per frame followed by a
 * ConvGRU; a FullGaussian2d readout per frame with the cortex grid predictor; an MLP
 * shifter), built and initialised from the kit's arguments, saved, loaded and run.
 *
 *   npred_video_model *m;
 *   if (npred_video_model_load(&m, "run/", 4) != NPRED_OK) fprintf(stderr, "%s\n", npred_last_error());
 *   int T1 = npred_video_model_output_frames(m, T);          // frames out of a clip of T
 *   npred_video_model_predict(m, "dynamic29515-10-12", videos, B, C, T, H, W, pupil, rates);
 *   npred_video_model_free(m);                               // rates (B, T1, n)
 *
 * Shapes are C order, float32: videos (B, C, T, H, W) as the kit's loader gives them
 * (behaviour and pupil planes included when the loader adds them as channels),
 * pupil_center (B, 2, T), rates (B, T', n). Output frame j belongs to input frame
 * j + cutoff (the temporal cut-off; 0 for 2D cores): the kit's models are causal.
 * A model is used by one thread at a time. Semantics: docs/video.md. */
#ifndef NPRED_VIDEO_MODEL_H
#define NPRED_VIDEO_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct npred_video_model npred_video_model;

/* One recording session (a scan) as the model needs it. */
typedef struct {
    const char *key;            /* data key, e.g. "dynamic29515-10-12" */
    int n_neurons;
    const double *coords;       /* (n_neurons, coord_dims) cell_motor_coordinates; required with
                                   readout_dict.grid_mean_predictor (its first input_dimensions columns) */
    int coord_dims;
    const float *mean_activity; /* (n_neurons) initial readout bias, or NULL (bias 0). The kit uses the
                                   mean over batch and frames of the first training batch's responses */
} npred_video_model_session;

/* Build and initialise a model from the kit's make_video_model arguments (a JSON
 * object: seed, core_dict, core_type, readout_dict, readout_type, use_gru, gru_dict,
 * use_shifter, shifter_dict, shifter_type, ...; `where` names it in errors) for
 * videos of in_channels x in_h x in_w. `seed` of the config drives every random
 * initialisation (required, as make_video_model has no default). max_batch: the
 * largest batch a call processes at once (larger ones run in chunks). Sessions are
 * read during the call only. */
NPRED_API npred_status npred_video_model_create(npred_video_model **out, const char *config_json, const char *where,
                                                int in_channels, int in_h, int in_w,
                                                const npred_video_model_session *sessions, int n_sessions,
                                                int max_batch);
/* Write dir/model.safetensors atomically (dir created if needed): tensors named as the
 * PyTorch state_dict, the config, sessions, input shape and loader record as metadata. */
NPRED_API npred_status npred_video_model_save(const npred_video_model *m, const char *dir);
/* Write only the .safetensors file at path (atomically). */
NPRED_API npred_status npred_video_model_save_file(const npred_video_model *m, const char *path);
/* Load a model saved by npred_video_model_save: its directory or the .safetensors. */
NPRED_API npred_status npred_video_model_load(npred_video_model **out, const char *path, int max_batch);
/* Import the SENSORIUM 2023 kit's trained model saved as a PyTorch state_dict
 * (torch.save(model.state_dict(), path), the kit's epoch_<E>.pth / final.pth): the
 * file is read without executing anything (docs/checkpoints.md), the model built
 * from config_json (the make_video_model arguments it was trained with; a .pth does
 * not hold them; config_where names it in errors) and every tensor of the file
 * copied in. Strict: a tensor the model needs that the file lacks, a tensor of the
 * file the model does not have, a shape that differs and a non-finite value are
 * errors naming the tensor; a GRU or shifter the file has and the config has not
 * (or the reverse) is named as such. The input channels are core_dict's
 * input_channels (else the layer-0 weight's); in_h x in_w is the frame size the model
 * will take (both <= 0: 36 x 64, the 2023 frames; nothing in the file says it).
 * Sessions: n_sessions 0 takes every readout.<data_key> of the file, in file order,
 * with its neuron count; else keys / n_neurons (e.g. from the scans) must name
 * exactly the file's sessions with their neuron counts, and give the model's order.
 * The model records no loader (npred_video_model_set_loader_json). */
NPRED_API npred_status npred_video_model_import_pth(npred_video_model **out, const char *pth_path,
                                                    const char *config_json, const char *config_where, int in_h,
                                                    int in_w, const char *const *keys, const int *n_neurons,
                                                    int n_sessions, int max_batch);
/* 1 when path (a directory holding model.safetensors, or a .safetensors file) is an
 * npred video model, else 0 (no error set). */
NPRED_API int npred_video_model_probe(const char *path);
NPRED_API void npred_video_model_free(npred_video_model *m);

/* Eval-mode rates of session `key`: videos (B, C, T, H, W), pupil_center (B, 2, T)
 * (required when the model has a shifter, else ignored and may be NULL), rates_out
 * (B, T', n) with T' = npred_video_model_output_frames(m, T). C, H and W must be the
 * model's; T must exceed the temporal cut-off. Any B (chunks of max_batch). */
NPRED_API npred_status npred_video_model_predict(npred_video_model *m, const char *key, const float *videos, int B,
                                                 int C, int T, int H, int W, const float *pupil_center,
                                                 float *rates_out);

/* Introspection */
NPRED_API int npred_video_model_n_sessions(const npred_video_model *m);
NPRED_API const char *npred_video_model_session_key(const npred_video_model *m, int i); /* NULL for a bad index */
NPRED_API int npred_video_model_session_neurons(const npred_video_model *m, int i);    /* 0 for a bad index */
NPRED_API int npred_video_model_session_index(const npred_video_model *m, const char *key); /* -1 if absent */
NPRED_API void npred_video_model_input_shape(const npred_video_model *m, int *c, int *h, int *w);
/* Frames the core drops at the start of a clip (sum over its temporal convolutions of
 * (kt - 1) * dilation; 0 for a 2D core per frame). */
NPRED_API int npred_video_model_temporal_cutoff(const npred_video_model *m);
/* Output frames of a clip of T frames: T - cutoff, or 0 when T is too short. */
NPRED_API int npred_video_model_output_frames(const npred_video_model *m, int T);
/* 1 when predict needs pupil_center (the model has a shifter). */
NPRED_API int npred_video_model_has_shifter(const npred_video_model *m);
/* "3D_factorised", "3D", "2D" or "2D_equivariant" (the config's core_type). */
NPRED_API const char *npred_video_model_core_type(const npred_video_model *m);
NPRED_API int npred_video_model_uses_gru(const npred_video_model *m);
/* Trainable floats whose state_dict name starts with prefix (NULL or "": all). */
NPRED_API size_t npred_video_model_param_count(const npred_video_model *m, const char *prefix);
/* The make_video_model arguments as JSON text (malloc'ed; caller frees). */
NPRED_API char *npred_video_model_config_json(const npred_video_model *m);
/* The data pipeline the model was trained with: the mouse_video_loader arguments as
 * a JSON object (docs/video.md), or NULL when the file records none. set replaces it
 * (must be a JSON object; NULL removes it); it is saved with the model. */
NPRED_API const char *npred_video_model_loader_json(const npred_video_model *m);
NPRED_API npred_status npred_video_model_set_loader_json(npred_video_model *m, const char *json);
/* Human-readable description (parts, parameter counts, shapes); caller frees. */
NPRED_API char *npred_video_model_describe(const npred_video_model *m);

#ifdef __cplusplus
}
#endif
#endif
