/* Model configuration from JSON, with neuralpredictors / sensorium argument names.
 *
 * Two spellings are accepted (docs/config.md):
 *  1. the flat arguments of sensorium's `stacked_core_full_gauss_readout` builder
 *     (hidden_channels, input_kern, ..., gamma_readout, grid_mean_predictor,
 *     shifter, core_bias, ...) with the builder's defaults, plus a few npred
 *     extensions (core_type, readout_type, modulator, ...);
 *  2. a structured object {"core": {Stacked2dCore args, "type"}, "readout":
 *     {"type", readout args}, "shifter": {...}, "modulator": {...},
 *     "encoder": {"elu_offset"}} with the neuralpredictors class defaults.
 * Unknown keys are errors that name the key. npred_model_config_to_json writes
 * the fully resolved structured form (what a saved model stores). */
#ifndef NPRED_MODEL_CONFIG_H
#define NPRED_MODEL_CONFIG_H

#include <cJSON.h>

#include "cores/stacked2d.h"
#include "model/encoder.h"
#include "readouts/readout.h"

typedef enum { NPRED_SHIFTER_NONE = 0, NPRED_SHIFTER_MLP, NPRED_SHIFTER_STATIC_AFFINE } npred_shifter_type;

typedef struct {
    npred_core_config core;
    int core_stack_is_none, core_stack_is_int, core_stack_int; /* as given, for the saved config */
    int core_ibb_given;      /* independent_bn_bias appeared in the config */
    npred_readout_config readout; /* c/h/w/n are filled per session */
    int multi_readout;            /* 1: "readout.<key>.*" per session; 0: one "readout.*" */
    int share_features, share_grid; /* MultiReadoutSharedParametersBase: borrow from the first session */
    npred_shifter_type shifter;
    int shifter_input_channels, shifter_hidden_channels, shift_layers, shifter_bias;
    double gamma_shifter;
    int modulator;
    int modulator_input_channels, modulator_hidden_channels, modulator_layers, modulator_bias;
    double gamma_modulator;
    double elu_offset;
    npred_encoder_config encoder; /* FiringRateEncoder or a distribution encoder (encoder.h) */
    long long seed;
} npred_model_config;

/* Parse a JSON text; `where` names the source (file) in error messages. */
npred_status npred_model_config_parse(npred_model_config *cfg, const char *json, const char *where);
npred_status npred_model_config_from_cjson(npred_model_config *cfg, const cJSON *root, const char *where);
/* Resolved structured form; caller frees with cJSON_Delete. */
cJSON *npred_model_config_to_json(const npred_model_config *cfg);

#endif
