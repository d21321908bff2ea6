/* A small fully connected chain: Linear -> act -> Linear -> act ... as a torch
 * nn.Sequential whose Linear i sits at index 2i (each followed by its activation,
 * possibly identity). Used by shifters (tanh), modulators (relu) and the Gaussian
 * readout's grid-mean predictor. Parameters "<prefix><2i>.weight" (out, in) and
 * "<prefix><2i>.bias" (out). Sizes are tiny, so loops are plain and in double. */
#ifndef NPRED_NN_MLP_H
#define NPRED_NN_MLP_H

#include "kernels/activation.h"
#include "nn/params.h"

#define NPRED_MLP_MAXLAYERS 8

typedef struct {
    int n_layers;
    int dims[NPRED_MLP_MAXLAYERS + 1]; /* dims[0] input ... dims[n] output */
    npred_act_kind act[NPRED_MLP_MAXLAYERS];
    int p_w[NPRED_MLP_MAXLAYERS], p_b[NPRED_MLP_MAXLAYERS];
    int max_batch;
    float *z[NPRED_MLP_MAXLAYERS];     /* pre-activations (B, dims[i+1]) */
    float *h[NPRED_MLP_MAXLAYERS + 1]; /* h[0] copy of the input, h[i+1] = act(z[i]) */
    float *g[2];                       /* backward scratch */
    int B;
} npred_mlp;

/* indexed != 0: names "<prefix><2i>.weight" (an nn.Sequential); indexed == 0 (one
 * layer only): "<prefix>weight" (a bare nn.Linear subclass, e.g. StaticAffine2d). */
npred_status npred_mlp_declare(npred_mlp *m, npred_ptable *t, const char *prefix, int n_layers, const int *dims,
                               const npred_act_kind *acts, int bias, int indexed);
npred_status npred_mlp_setup(npred_mlp *m, int max_batch);
/* PyTorch nn.Linear default init: U(+-1/sqrt(in)) for weight and bias. */
void npred_mlp_init_default(npred_mlp *m, npred_ptable *t, npred_rng *rng);
/* y (B, dims[n]) may be NULL (read m->h[n_layers]). */
npred_status npred_mlp_forward(npred_mlp *m, npred_ptable *t, const float *x, int B, float *y);
/* accumulates parameter grads and dx (B, dims[0]) when not NULL */
void npred_mlp_backward(npred_mlp *m, npred_ptable *t, const float *dy, float *dx);
void npred_mlp_free(npred_mlp *m);

#endif
