/* Basic3dCore and Factorized3dCore (neuralpredictors 43faede layers/cores/conv3d.py,
 * the SENSORIUM 2023 kit's '3D' and '3D_factorised' cores; docs/video.md).
 *
 * Activations are (B, C, T, H, W); Conv3d weights (out, in, kt, kh, kw).
 *   Basic3dCore      layer0: conv (kt,kh,kw) -> BN3d -> f; layer l: conv_l -> BN3d -> f
 *   Factorized3dCore layer0: conv_spatial (1,kh,kw) -> conv_temporal (kt,1,1) -> BN3d -> f
 *                    layer l: conv_spatial_l -> conv_temporal_l -> BN3d -> f
 * f is hidden_nonlinearities: ELU (default), ReLU, Softplus (beta 1, threshold 20) or
 * AdaptiveELU (ELU(x - x_shift) + y_shift; 43faede can build it in layer 0 only, so
 * only with one layer). Time is never padded (T shrinks by (kt - 1) * dilation per
 * conv); `padding` pads H and W by k // 2. Layer 0 has f when layers > 1 or
 * final_nonlin; hidden layers always do (43faede). BatchNorm3d is affine
 * (independent_bn_bias True).
 *
 * Regularizer (the core's tuple): spatial = gamma_input_spatial * LaplaceL2norm of the
 * layer-0 spatial kernels (Basic3dCore: summed over its kt slices); temporal =
 * gamma_input_temporal * DepthLaplaceL21d ([-1, 4, -1], padding 1, sum(lap^2)/sum(w^2))
 * of the layer-0 temporal kernels (Basic3dCore: summed over the kh*kw positions).
 *
 * A Conv3d is computed as one 2-D convolution (src/kernels/conv2d.h) over the
 * B*T_out output frames, the kt input frames of each stacked along channels.
 * Parameters live in the table under "<prefix>features.layerK.<module>.<name>". */
#ifndef NPRED_CORES_CORE3D_H
#define NPRED_CORES_CORE3D_H

#include <stddef.h>

#include "kernels/activation.h"
#include "kernels/conv2d.h"
#include "nn/params.h"
#include "npred/base.h"

#define NPRED_CORE3D_MAXLAYERS 8

typedef struct {
    int factorized;              /* 1: Factorized3dCore, 0: Basic3dCore */
    int input_channels, hidden_channels, layers;
    int in_kt, in_kh, in_kw;     /* layer-0 kernel (Factorized: temporal_input_kernel, spatial_input_kernel) */
    int hid_kt, hid_kh, hid_kw;  /* hidden kernels */
    int stride;                  /* spatial stride of every layer */
    int spatial_dilation, temporal_dilation; /* layer 0 (Basic3dCore hidden convs: spatial_dilation on all axes) */
    double gamma_input_spatial, gamma_input_temporal;
    int bias;                    /* conv biases (Basic3dCore hidden convs always have one) */
    int batch_norm;
    int padding;
    double momentum;
    int laplace_padding;         /* -1 = None (1) */
    int final_nonlin;
    npred_act_kind act;          /* hidden_nonlinearities: ELU, RELU, SOFTPLUS or ADAPTIVE_ELU (one layer only) */
    double x_shift, y_shift;     /* AdaptiveELU's shifts (0 otherwise) */
} npred_core3d_config;

typedef struct {
    int cin, cout, kt, kh, kw, pad_h, pad_w, dil_t, dil_h, dil_w, stride;
    int tin, hin, win, tout, hout, wout;
    npred_conv2d_params cp;      /* the stacked 2-D convolution: N = B*tout, C = kt*cin */
    int p_w, p_b;                /* table entries (p_b -1 without bias) */
    float *w2, *dw2;             /* (cout, kt*cin, kh, kw) rearranged weight and its gradient */
    float *xs;                   /* (B*tout, kt*cin, hin, win) stacked input frames */
    float *y2;                   /* (B*tout, cout, hout, wout) */
    float *out;                  /* (B, cout, tout, hout, wout) */
    const float *in;             /* (B, cin, tin, hin, win) input of the last forward */
    float *ring;                 /* streaming: the last span input frames, (span, B, cin, hin, win) */
    int span, seen;              /* span = (kt - 1) * dil_t + 1; frames received since the reset */
} npred_conv3d;

typedef struct {
    npred_conv3d conv[2];        /* Basic: [0]; Factorized: spatial, temporal */
    int nconv;
    int c, t, h, w;              /* output shape per sample */
    int p_gamma, p_beta, p_rmean, p_rvar, p_nbt;
    int has_bn, has_act;
    double *mean, *invstd;
    float *bn;                   /* BN output (the nonlinearity's input) */
    float *out;                  /* layer output */
} npred_core3d_layer;

typedef struct {
    npred_core3d_config cfg;
    char prefix[32];
    npred_core3d_layer L[NPRED_CORE3D_MAXLAYERS];
    int p_lap2d, p_lap1d;        /* regularizer filter buffers */
    int in_t, in_h, in_w;
    int out_c, out_t, out_h, out_w;
    int max_batch, B, train;
    float *g[2];                 /* backward scratch, each the largest tensor */
    float *dxs;                  /* backward scratch: a stacked input's gradient */
    void *ws;
    size_t ws_bytes;
    int stream_B, stream_cap;    /* streaming: the batch of this stream, the rings' capacity */
} npred_core3d;

/* 43faede defaults (stride 1, dilations 1, bias, batch_norm, no padding, momentum
 * 0.01, laplace_padding None, layers 3, final_nonlin True); the channels and kernels
 * must be set. */
void npred_core3d_config_default(npred_core3d_config *c, int factorized);
/* Declare the parameters for inputs of (in_t, in_h, in_w); computes the output shape
 * (NPRED_ERR_SHAPE when a dimension would vanish). */
npred_status npred_core3d_declare(npred_core3d *core, const npred_core3d_config *cfg, const char *prefix, int in_t,
                                  int in_h, int in_w, npred_ptable *t);
/* Allocate activations for max_batch samples. */
npred_status npred_core3d_setup(npred_core3d *core, const npred_ptable *t, int max_batch);
/* The constant buffers (the 3x3 Laplace filter, the [-1, 4, -1] filter). */
void npred_core3d_init_buffers(npred_core3d *core, npred_ptable *t);
/* Forward x (B, Cin, T, H, W); returns the output (B, out_c, out_t, out_h, out_w).
 * train: BatchNorm batch statistics, running stats updated. */
npred_status npred_core3d_forward(npred_core3d *core, npred_ptable *t, const float *x, int B, int train,
                                  const float **out);
/* Backward of the last forward; accumulates parameter gradients and, when dx is not
 * NULL, the input gradient (B, Cin, T, H, W). */
npred_status npred_core3d_backward(npred_core3d *core, npred_ptable *t, const float *dy, float *dx);
/* The core's regularizer tuple (spatial, temporal), with gamma applied; gradients of
 * their sum times gscale accumulated when gscale != 0. */
npred_status npred_core3d_regularizer(npred_core3d *core, npred_ptable *t, double gscale, double *spatial,
                                      double *temporal);
void npred_core3d_free(npred_core3d *core);

/* Streaming (eval mode, one frame at a time). Each conv keeps its last
 * (kt - 1) * dil_t + 1 input frames in a ring, so the output frame for input frame t
 * (t >= warm-up) is computed from exactly the frames the whole clip's eval forward uses
 * for its output frame t - warm-up, by the same kernels: bit for bit equal. */
/* Input frames before the first output: the sum of (kt - 1) * dil_t over the convs. */
int npred_core3d_stream_warmup(const npred_core3d *core);
/* Start a new stream (forget every frame); the next push fixes the batch. */
void npred_core3d_stream_reset(npred_core3d *core);
/* Push frame (B, Cin, H, W). *out = the core's output for it, (B, out_c, out_h, out_w)
 * (valid until the next forward or push), or NULL during the warm-up. The rings are
 * allocated by the first push of a stream (none afterwards); a batch other than the
 * stream's is NPRED_ERR_ARG until a reset. Overwrites the forward's activations. */
npred_status npred_core3d_stream_push(npred_core3d *core, npred_ptable *t, const float *frame, int B,
                                      const float **out);

#endif
