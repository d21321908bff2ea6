/* Raw stimuli in, rates out: the preprocessing a model was trained with, recorded
 * in the model file, and predictions from images at the dataset's original
 * resolution (docs/results.md).
 *
 * The record (JSON, metadata "npred_preprocessing" of model.safetensors) holds, per
 * session: the raw image shape, the NeuroNormalizer's input mean/std, the scale and
 * resize method of ScaleInputs, the behaviour / pupil-centre statistics and whether
 * they become image channels, the response precision per neuron (the normalizer
 * multiplies responses by it) and the unit_ids of the readout's neurons.
 * Training records it (npred_trainer_model_create); npred import --stats records it for a PyTorch checkpoint
 * from a dataset. Models without it load and predict as before. */
#ifndef NPRED_PREPROCESS_H
#define NPRED_PREPROCESS_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/data.h"
#include "npred/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Record on m the preprocessing of loaders L: one entry per loader session whose
 * data_key the model has (neuron counts must agree). Replaces a previous record;
 * saved by npred_model_save. npred_trainer_model_create records it. */
NPRED_API npred_status npred_model_record_preprocessing(npred_model *m, const npred_loaders *L);
/* 1 if m records the preprocessing of session key. */
NPRED_API int npred_model_has_preprocessing(npred_model *m, const char *key);

/* What the raw inputs of session key must be: images (c, h, w) at the dataset's
 * resolution, behavior (k values, 0 if none is needed) and pupil_center (2 or 0).
 * Any pointer may be NULL. NPRED_ERR_CONFIG when nothing is recorded. */
NPRED_API npred_status npred_model_raw_inputs(npred_model *m, const char *key, int *c, int *h, int *w,
                                              int *behavior_dim, int *pupil_dim);
/* unit_ids of session key's neurons in readout order ((n,), owned by the model). */
NPRED_API npred_status npred_model_unit_ids(npred_model *m, const char *key, const int64_t **ids, int *n);

/* Firing rates in the data's response units (B, n) for raw images (B, c, h, w)
 * (uint8 values as floats, or floats, as the dataset's data/images hold them):
 * exactly the loader's transforms (images (x - mean) / std, behaviour and pupil
 * planes, channel selection, bilinear rescale), the model in eval mode, then the
 * inverse of the response normalisation (rates / precision). behavior (B, k) and
 * pupil_center (B, 2) are raw too and required when raw_inputs says so. With
 * normalized_out not NULL, the model's outputs before the inverse (B, n) are
 * written there as well (what the loader path predicts). */
NPRED_API npred_status npred_model_predict_raw(npred_model *m, const char *key, const float *images, int B,
                                               const float *behavior, const float *pupil_center, float *rates,
                                               float *normalized_out);

#ifdef __cplusplus
}
#endif
#endif
