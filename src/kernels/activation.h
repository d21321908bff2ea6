/* Elementwise activations, forward and backward, matching PyTorch / neuralpredictors 0.3.0.
 *
 *   elu(x)           = x > 0 ? x : expm1(x)                  (F.elu, alpha 1)
 *   adaptive_elu(x)  = elu(x - xshift) + yshift               (activations.AdaptiveELU)
 *   elu1(x)          = elu(x) + 1                             (activations.Elu1, eps 0)
 *   tanh(x), sigmoid(x) = 1/(1 + exp(-x)), relu(x) = max(x, 0), exp(x)
 *   softplus(x)      = x > 20 ? x : log1p(exp(x))             (F.softplus, beta 1, threshold 20)
 *
 * Forward kernels OVERWRITE y and may run in place (y == x). Backward kernels ACCUMULATE
 * into dx (dx += dy * f'(.)) and take what PyTorch's own backward reads:
 *   from x: elu, adaptive_elu, elu1, softplus   (at the ELU kink x == 0 the slope is 1)
 *   from y: tanh (1 - y^2), sigmoid (y (1 - y)), exp (y), relu (y > 0; slope 0 at x == 0)
 * All take n elements (size_t); OpenMP splits large arrays (n >= 32768) across threads,
 * which does not change any result. The ELU family uses an inline, vectorisable
 * exp/expm1 (within 3e-7 relative of the exact value; exp(x) below x = -87 is given as
 * 0); the others use libm. */
#ifndef NPRED_KERNELS_ACTIVATION_H
#define NPRED_KERNELS_ACTIVATION_H

#include <stddef.h>
#include "npred/base.h"

#define NPRED_SOFTPLUS_THRESHOLD 20.0f

typedef enum {
    NPRED_ACT_IDENTITY,
    NPRED_ACT_ELU,
    NPRED_ACT_ADAPTIVE_ELU, /* uses xshift, yshift */
    NPRED_ACT_ELU1,
    NPRED_ACT_TANH,
    NPRED_ACT_SIGMOID,
    NPRED_ACT_RELU,
    NPRED_ACT_SOFTPLUS,
    NPRED_ACT_EXP
} npred_act_kind;

/* An activation and its arguments (xshift/yshift are read by ADAPTIVE_ELU only). */
typedef struct {
    npred_act_kind kind;
    float xshift, yshift;
} npred_act;

/* Name as used in configs ("elu", "adaptive_elu", "elu1", "tanh", "sigmoid", "relu",
 * "softplus", "exp", "identity"); NULL for an unknown kind. */
const char *npred_act_name(npred_act_kind kind);
/* Does the backward of `kind` read x (1) or y (0)? */
int npred_act_backward_needs_x(npred_act_kind kind);

/* Dispatch on act->kind. Forward overwrites y (y == x allowed). Backward accumulates into
 * dx; pass x and/or y as npred_act_backward_needs_x says (the other may be NULL). */
npred_status npred_act_forward(float *y,        // (n) out
                               const float *x,  // (n)
                               size_t n, const npred_act *act);
npred_status npred_act_backward(float *dx,       // (n) accumulated
                                const float *dy, // (n)
                                const float *x,  // (n) or NULL if unused
                                const float *y,  // (n) or NULL if unused
                                size_t n, const npred_act *act);

/* The individual kernels (no argument checks: all pointers valid, n elements). */
void npred_elu_forward(float *y, const float *x, size_t n);
void npred_elu_backward(float *dx, const float *dy, const float *x, size_t n);
void npred_adaptive_elu_forward(float *y, const float *x, size_t n, float xshift, float yshift);
void npred_adaptive_elu_backward(float *dx, const float *dy, const float *x, size_t n, float xshift);
void npred_elu1_forward(float *y, const float *x, size_t n);
void npred_elu1_backward(float *dx, const float *dy, const float *x, size_t n);
/* z = x + off and y = ELU(z) + 1, exp(z) for z <= 0 by the inline polynomial (a few ulp
 * relative; 0 below -87) instead of libm's expf: the bf16 precision's model output
 * (docs/precision.md), in vectors */
void npred_elu1_offset_forward(float *y, float *z, const float *x, float off, size_t n);
void npred_tanh_forward(float *y, const float *x, size_t n);
void npred_tanh_backward(float *dx, const float *dy, const float *y, size_t n);
void npred_sigmoid_forward(float *y, const float *x, size_t n);
void npred_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n);
void npred_relu_forward(float *y, const float *x, size_t n);
void npred_relu_backward(float *dx, const float *dy, const float *y, size_t n);
void npred_softplus_forward(float *y, const float *x, size_t n);
void npred_softplus_backward(float *dx, const float *dy, const float *x, size_t n);
void npred_exp_forward(float *y, const float *x, size_t n);
void npred_exp_backward(float *dx, const float *dy, const float *y, size_t n);

#endif
