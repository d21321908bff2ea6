/* The encoder model (FiringRateEncoder) internals and its training interface.
 * Public embedding API: include/npred/model.h. */
#ifndef NPRED_MODEL_MODEL_H
#define NPRED_MODEL_MODEL_H

#include <math.h>

#include "cores/stacked2d.h"
#include "model/config.h"
#include "nn/mlp.h"
#include "nn/params.h"
#include "npred/model.h"
#include "readouts/readout.h"

typedef struct {
    char key[64];
    int n;                /* neurons */
    npred_readout ro;
    int has_shifter, has_modulator;
    npred_mlp shifter;
    npred_mlp modulator;
    float *y;             /* (B, n) readout output */
    float *z;             /* (B, n) input of the output ELU (after modulation, + elu_offset) */
    float *out;           /* (B, n) last rates (for the backward) */
    float *shift, *dshift;/* (B, 2) */
    float *dy;            /* (B, n) scratch ((P, B, n) with a distribution encoder) */
    /* distribution encoders (model/encoder.h): y and dy hold P readout outputs */
    int p_enc[NPRED_ENC_MAXK];    /* per-neuron parameter of each output slot, or -1 */
    float *raw, *dist, *ddist;    /* (K, B, n): before / after the output nonlinearities, scratch */
} npred_session;

struct npred_model {
    npred_model_config cfg;
    npred_ptable t;
    npred_core core;
    int n_sessions;
    npred_session *s;
    int in_c, in_h, in_w;
    int max_batch;
    float *dcore;         /* (B, out_c, out_h, out_w); the core's own output-gradient buffer when it offers one */
    int owns_dcore;
    float *ro_nhwc;       /* the Gaussian readouts' shared input copy and gradient, or NULL */
    /* state of the last forward */
    int last, B, train;
    /* the preprocessing record (JSON text, NULL if none) and its parsed form,
     * owned by src/results/preprocess.c (freed with pre_free) */
    char *preprocessing;
    void *pre;
    void (*pre_free)(void *);
};

/* Structure only (parameters declared, allocated and zero, buffers such as the
 * Laplace filter set, workspaces ready); used by create, load and import. */
npred_status npred_model_build(npred_model **out, const npred_model_config *cfg, int in_c, int in_h, int in_w,
                               const npred_model_session *sessions, int n_sessions, int max_batch);

/* The output nonlinearity ELU(z) + 1 */
static inline float npred_elu1(float z) { return z > 0 ? z + 1.0f : expf(z); }

/* Training interface. forward: rates out (B, n) of session si; train selects
 * BatchNorm batch statistics and Gaussian sampling (z from rng, or `noise`
 * (B, n, 2) when given). backward: gradients of the last forward with dout
 * (B, n); accumulates into the table's gradient buffer, and into dimages /
 * dpupil when not NULL; detach_core leaves the core untouched. */
npred_status npred_model_forward(npred_model *m, int si, const float *images, const float *pupil_center,
                                 const float *behavior, int B, int train, npred_rng *rng, const float *noise,
                                 float *out);
npred_status npred_model_backward(npred_model *m, const float *dout, int detach_core, float *dimages, float *dpupil);
/* core.regularizer() + readout[si].regularizer() + shifter/modulator terms; with
 * gscale != 0 their gradients (times gscale) are accumulated (the core's only
 * without detach_core). */
double npred_model_regularizer(npred_model *m, int si, double gscale, int detach_core);
/* Distribution encoders: after npred_model_forward (whose `out` is the fitted mean),
 * the K outputs (K, B, n) of the last forward (*K set; NULL for FiringRateEncoder);
 * npred_model_backward_dist takes their gradient ddist (K, B, n) instead of dout. A
 * loss may change the dist values in place before the backward (the ZI losses clamp
 * loc): the derivative of loc = exp(logloc) uses the value found there. */
float *npred_model_dist(npred_model *m, int *K);
npred_status npred_model_backward_dist(npred_model *m, const float *ddist, int detach_core, float *dimages,
                                       float *dpupil);
/* core.regularizer() and readout[si].regularizer() separately (no gradients) */
void npred_model_regularizer_parts(npred_model *m, int si, double *core, double *readout);
npred_ptable *npred_model_table(npred_model *m);
/* NPRED_ERR_ARG naming `what` when m is a plan (no parameter memory). */
npred_status npred_model_check_allocated(const npred_model *m, const char *what);
/* Give the pages of the backward-only scratch (the Gaussian readouts' shared
 * channels-last input gradient, the model's own core-gradient buffer) back to the
 * system, e.g. after training and before an evaluation: each is written before it is
 * read, so a later backward commits it again (as zeros). Linux (madvise); elsewhere
 * nothing. */
void npred_model_release_backward_scratch(npred_model *m);

#endif
