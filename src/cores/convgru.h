/* ConvGRU: neuralpredictors 43faede GRU_Module / ConvGRUCell (rnn_modules/gru_module.py),
 * the recurrent stage of the SENSORIUM 2023 GRU benchmark (docs/video.md).
 *
 * Input x (B, Cin, T, H, W); per frame t, from h_0 = 0:
 *   u = sigmoid(update_gate_input(x_t) + update_gate_hidden(h))
 *   r = sigmoid(reset_gate_input(x_t)  + reset_gate_hidden(h))
 *   c = tanh(out_gate_input(x_t) + out_gate_hidden(h * r))
 *   h = h * (1 - u) + c * u
 * Output: the states h_1..h_T, (B, R, T, H', W'). Every gate conv has a bias; the
 * input convs pad input_kern // 2 when pad_input (else H' = H - input_kern + 1), the
 * hidden convs rec_kern // 2 (rec_kern odd). Regularizer (the kit's trainer never adds
 * it): gamma_rec * (mean|reset_gate_hidden.bias| + mean|update_gate_hidden.weight| +
 * mean|out_gate_hidden.bias|) / 3.
 *
 * Parameters: "<prefix>gru.<gate>_gate_<input|hidden>.<weight|bias>". The input convs
 * run on chunks of frames, the three gates as one conv (3R outputs); the hidden convs
 * frame by frame, the update and reset gates as one (2R outputs on h), in the forward
 * and in the backward (one im2col and one dX product per fused conv; conv2d kernels).
 * Memory is allocated once for (max_batch, max_frames). */
#ifndef NPRED_CORES_CONVGRU_H
#define NPRED_CORES_CONVGRU_H

#include <stddef.h>

#include "kernels/conv2d.h"
#include "nn/params.h"
#include "npred/base.h"

typedef struct {
    int input_channels, rec_channels, input_kern, rec_kern;
    int pad_input;          /* 1 */
    double gamma_rec;       /* 0 */
} npred_convgru_config;

enum { NPRED_GRU_UPDATE = 0, NPRED_GRU_RESET = 1, NPRED_GRU_OUT = 2 };

typedef struct {
    npred_convgru_config cfg;
    char prefix[32];
    int p_wi[3], p_bi[3], p_wh[3], p_bh[3]; /* update, reset, out */
    int h, w, ho, wo;                       /* input and state size */
    npred_conv2d_params cpi, cph;           /* input convs (n = B*T), hidden convs (n = B) */
    int max_batch, max_frames, B, T;
    float *xs;        /* (T, B, Cin, H, W) frames */
    float *a[3];      /* (T, B, R, H', W') input conv outputs, then the gate pre-activation gradients */
    float *hs;        /* (T + 1, B, R, H', W') states, hs[0] = 0 */
    float *u, *r, *c, *hr; /* (T, B, R, H', W') */
    float *tmp;       /* (B, R, H', W') */
    float *dh, *dh2, *dhr; /* (B, R, H', W') */
    float *dxs;       /* (T, B, Cin, H, W) */
    float *out;       /* (B, R, T, H', W') */
    void *ws;
    size_t ws_bytes;
    /* the forward runs the three input convs as one (3R outputs: one im2col of the frames)
     * and the update and reset hidden convs as one (2R outputs, on h): the same sums */
    float *wi3, *bi3; /* (3R, Cin, ki, ki), (3R): update, reset, out */
    float *wh2, *bh2; /* (2R, R, kr, kr), (2R): update, reset */
    float *gi;        /* (chunk, 3R, H', W') fused input conv output */
    float *gh;        /* (B, 2R, H', W') fused hidden conv output */
    int chunk;        /* frames per fused input conv call */
    float *dwi3, *dbi3, *dwh2, *dbh2; /* the backward's gradients of the fused weights */
    int keep_weights; /* 1: reuse wi3/wh2 of the previous forward (streaming, parameters unchanged) */
    /* 1: an eval forward (set by the caller; never for training): the gate convs that
     * npred_conv2d_fft_use picks run by FFT (kernels/conv2d_fft.h), on these transformed
     * weights (built by the forward, reused with keep_weights) */
    int fft;
    float *wf[3];     /* fused input, fused update/reset hidden, out gate hidden */
    int wf_ok;        /* bit q: wf[q] holds the transform of the current weights */
    void *fws;
    size_t fws_bytes;
} npred_convgru;

/* Declare the parameters for frames of (h, w). */
npred_status npred_convgru_declare(npred_convgru *g, const npred_convgru_config *cfg, const char *prefix, int h, int w,
                                   npred_ptable *t);
npred_status npred_convgru_setup(npred_convgru *g, int max_batch, int max_frames);
/* Forward x (B, Cin, T, H, W) -> *out (B, R, T, H', W'). */
npred_status npred_convgru_forward(npred_convgru *g, const npred_ptable *t, const float *x, int B, int T,
                                   const float **out);
/* The same from the state h0 (B, R, H', W') instead of zeros (NULL: zeros): streaming
 * runs it with T = 1 and the previous output as h0 (identical to one long forward). */
npred_status npred_convgru_forward_from(npred_convgru *g, const npred_ptable *t, const float *x, const float *h0, int B,
                                        int T, const float **out);
/* Backward through time of the last forward: dy (B, R, T, H', W'); accumulates the
 * parameter gradients and, when dx is not NULL, the input gradient. */
npred_status npred_convgru_backward(npred_convgru *g, const npred_ptable *t, const float *dy, float *dx);
/* The regularizer; its gradient times gscale accumulated when gscale != 0. */
double npred_convgru_regularizer(const npred_convgru *g, const npred_ptable *t, double gscale);
void npred_convgru_free(npred_convgru *g);

#endif
