/* The SENSORIUM 2023 kit's VideoFiringRateEncoder (sensorium/models/video_encoder.py,
 * built by make_video_model) with a 3D core (docs/video.md):
 *
 *   videos (B, C, T, H, W) -> core3d, or a 2D core on each of the B*T frames
 *     (row b*T + t; Stacked2dCore / RotationEquivariant2dCore, the kit's twoD_core)
 *     -> [ConvGRU] -> (B, K, T', h, w)
 *     -> frames (B*T', K, h, w), row b*T' + t
 *     -> readout[key] (FullGaussian2d, cortex grid predictor), shift = shifter[key]
 *        (MLP on pupil_center[:, :, -T':], (B*T', 2))
 *     -> ELU(. + elu_offset) + 1 -> (B, T', n)
 *
 * T' = the frames the core keeps (T - sum of (kt - 1)); the kit's loss compares them
 * with the LAST T' response frames. Parameters under "core.", "gru_module." (when
 * present), "readout.<key>.", "shifter.<key>.mlp." as the PyTorch state_dict. */
#ifndef NPRED_MODEL_VIDEO_ENCODER_H
#define NPRED_MODEL_VIDEO_ENCODER_H

#include "cores/convgru.h"
#include "cores/core3d.h"
#include "cores/stacked2d.h"
#include "nn/mlp.h"
#include "nn/params.h"
#include "readouts/readout.h"

#define NPRED_VIDEO_MAX_SESSIONS 32

typedef struct {
    char key[96];
    int n;                      /* neurons */
    npred_readout ro;
    int has_shifter;
    npred_mlp shifter;
} npred_video_session;

typedef struct {
    int core2d;                 /* 1: core2d_cfg per frame (T' = T), 0: the 3D core */
    npred_core_config core2d_cfg;
    npred_core3d_config core;
    int use_gru;
    npred_convgru_config gru;   /* input_channels = the core's output channels */
    int use_shifter;
    int shift_layers, hidden_channels_shifter;   /* MLPShifter (43faede defaults 1, 2) */
    double init_mu_range, init_sigma, gamma_readout;
    int readout_bias;           /* 1 */
    npred_gauss_type gauss_type;
    int predicted_grid;         /* 1: cortex grid predictor (grid_mean_predictor) */
    int gmp_input_dimensions, gmp_hidden_layers, gmp_hidden_features, gmp_final_tanh;
    double elu_offset;
    int64_t seed;               /* make_video_model(seed=): stored for the caller */
} npred_video_encoder_config;

typedef struct cJSON cJSON;
/* The kit's make_video_model arguments (dataloaders aside) as a JSON object: seed,
 * core_dict, core_type ("3D_factorised", "3D", "2D", "2D_equivariant"), readout_dict,
 * readout_type ("gaussian"), use_gru, gru_dict, use_shifter, shifter_dict,
 * shifter_type ("MLP"), elu_offset, nonlinearity_type ("elu"), nonlinearity_config
 * (null), deeplake_ds (false). A 3D core's hidden_channels is an int (43faede) or a
 * list of equal ints (the kit's configs, later neuralpredictors): the same model.
 * Unknown keys and values this build cannot run are NPRED_ERR_CONFIG naming the key.
 * input_channels of the core come from the data (the kit's loaders). */
npred_status npred_video_encoder_config_from_cjson(npred_video_encoder_config *cfg, const cJSON *obj, const char *where);

typedef struct {
    npred_video_encoder_config cfg;
    npred_ptable t;
    npred_core3d core;
    npred_core core2d;
    float *vframes, *dvframes;  /* 2D core: (B*T, C, H, W) input frames and their gradient */
    float *dcore2d;             /* 2D core: (B*T, K, h, w) output gradient */
    float *feat2d;              /* 2D core: its output as (B, K, T, h, w) */
    npred_convgru gru;
    int n_sessions;
    npred_video_session s[NPRED_VIDEO_MAX_SESSIONS];
    int in_c, in_t, in_h, in_w;
    int feat_c, out_t, feat_h, feat_w;
    int max_batch;
    float *frames, *dframes;    /* (B*T', K, h, w) */
    float *dfeat;               /* (B, K, T', h, w) */
    float *pupil, *dpupil;      /* (B*T', 2) */
    float *shift, *dshift;      /* (B*T', 2) */
    float *y, *z, *out, *dy;    /* (B*T', n_max) */
    int last, B, train;
    int detach_core;            /* backward stops at the core's output (the kit's detach_core):
                                   readout, shifter and ConvGRU get gradients, the core none */
    float *state;               /* streaming: the GRU state (B, R, h, w) */
    int stream_in, stream_t;     /* streaming: frames pushed since the reset, output frames given */
    int stream_B, stream_s;     /* the stream's batch and session */
    const float *feat;          /* core (or GRU) output of the last forward, (B, K, T', h, w) */
    const float *core_out;      /* the core's output of the last forward, (B, Kc, T', hc, wc) */
} npred_video_encoder;

/* Build for inputs (C, T, H, W) and the given sessions (keys, neuron counts);
 * parameters are zero until loaded (or set by the caller); constant buffers filled.
 * On failure nothing stays allocated (no npred_video_encoder_free needed). */
npred_status npred_video_encoder_create(npred_video_encoder *e, const npred_video_encoder_config *cfg, int in_c,
                                        int in_t, int in_h, int in_w, int n_sessions, const char *const *keys,
                                        const int *n_neurons, int max_batch);
void npred_video_encoder_free(npred_video_encoder *e);
int npred_video_encoder_find(const npred_video_encoder *e, const char *key);
/* Forward session si: videos (B, C, T, H, W), pupil_center (B, 2, T) (required with a
 * shifter); noise (B*T', n, 2) replaces the readout's N(0, 1) draw in train mode (NULL:
 * drawn from rng). out (B, T', n) may be NULL (then read e->out). */
npred_status npred_video_encoder_forward(npred_video_encoder *e, int si, const float *videos, const float *pupil_center,
                                         int B, int train, npred_rng *rng, const float *noise, float *out);
/* Backward of the last forward from dout (B, T', n); accumulates parameter gradients
 * and dvideos (B, C, T, H, W) / dpupil (B, 2, T) when not NULL. With e->detach_core
 * nothing flows into the core (its parameters and dvideos receive nothing), as the
 * kit's forward(detach_core=True) detaches the core's output before the ConvGRU. */
npred_status npred_video_encoder_backward(npred_video_encoder *e, const float *dout, float *dvideos, float *dpupil);
/* The table entries of the core's parameters that its regularizer reads (the
 * kit's loss multiplies the core's regularizer by int(not detach_core), so with
 * detach_core exactly these receive a zero gradient and the core's other parameters
 * none): a 3D core's layer-0 kernels (Factorized3dCore: spatial and temporal conv;
 * Basic3dCore: its conv); a Stacked2dCore's layer-0 conv and, unless SE, depth
 * separable or attention, its hidden convs; a RotationEquivariant2dCore's Hermite
 * coefficients of every layer. Writes up to max indices into idx; returns the count. */
int npred_video_encoder_core_reg_params(const npred_video_encoder *e, int *idx, int max);
/* The kit's training regularizers: core (spatial + temporal; a 2D core's whole
 * regularizer is reported as spatial, temporal 0) + readout[si]; gradients
 * times gscale accumulated when gscale != 0. */
npred_status npred_video_encoder_regularizer(npred_video_encoder *e, int si, double gscale, double *core_spatial,
                                             double *core_temporal, double *readout);

/* Streaming (eval mode, one frame at a time, the state kept in e): the ConvGRU state,
 * and for a 3D core the last frames each of its convs needs (ring buffers).
 * push: frame (B, C, H, W), pupil_center (B, 2) of that frame (required with a
 * shifter, also during the warm-up), rates (B, n) out. A 3D core gives no output for
 * the first warmup() pushes of a stream (the sum of (kt - 1) * dil_t over its convs):
 * then *ready = 0 and rates is not touched; afterwards every push sets *ready = 1 and
 * rates to exactly (bit for bit) the whole clip's eval output for output frame
 * t - warmup (t = pushes since the reset - 1), whose pupil_center is this frame's.
 * 2D-core encoders have no warm-up. The first push after a reset fixes B and the
 * session. ready may be NULL. */
int npred_video_encoder_stream_warmup(const npred_video_encoder *e);
void npred_video_encoder_stream_reset(npred_video_encoder *e);
npred_status npred_video_encoder_stream_push(npred_video_encoder *e, int si, const float *frame,
                                             const float *pupil_center, int B, float *rates, int *ready);

#endif
