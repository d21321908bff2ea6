/* Adam over one flat parameter buffer (torch.optim.Adam 1.13 semantics).
 *
 * Legend: P = number of parameters. The model keeps all parameters in one float32
 * buffer `param` (P,) with a parallel gradient buffer `grad` (P,) (design convention
 * 4); this optimizer owns the parallel moment buffers m and v (P,) and the step
 * counter. One step, per element, in float32 exactly as torch's single-tensor path
 * orders the operations:
 *     g  = grad + weight_decay * param            (only if weight_decay != 0)
 *     m  = m * beta1 + (1 - beta1) * g
 *     v  = v * beta2 + ((1 - beta2) * g) * g
 *     bias_correction1 = 1 - beta1^t,  bias_correction2 = 1 - beta2^t   (double, t = step)
 *     step_size = lr / bias_correction1                                 (double)
 *     denom = sqrt(v) / sqrt(bias_correction2) + eps
 *     param = param + (-step_size * m) / denom
 * With `decoupled` (torch.optim.AdamW 1.13) the weight decay is not added to the
 * gradient; instead, before the moments, param = param * (1 - lr * weight_decay)
 * (the factor rounded to float32).
 * Scalars are rounded to float32 where torch passes them to a float32 kernel. The
 * loop is OpenMP-parallel over pieces of elements and runs 16 elements per AVX-512
 * instruction where the CPU has it, each lane doing the scalar operations one for one
 * (element-wise: the result does not depend on the thread count or the vector width).
 * npred_adam_step and _masked read the gradient, never modify it (the caller zeroes
 * it); npred_adam_step_zero_grad zeroes it in the same pass. */
#ifndef NPRED_TRAIN_ADAM_H
#define NPRED_TRAIN_ADAM_H

#include <stddef.h>
#include <stdint.h>
#include "npred/base.h"

typedef struct {
    double lr;           /* 1e-3 (torch default; the sensorium trainer passes lr_init) */
    double beta1;        /* 0.9 */
    double beta2;        /* 0.999 */
    double eps;          /* 1e-8 */
    double weight_decay; /* 0 (L2 added to the gradient unless decoupled) */
    int decoupled;       /* 0: Adam; 1: AdamW (decoupled weight decay; torch's AdamW default
                            weight_decay is 0.01, set it explicitly) */
} npred_adam_params;

typedef struct {
    npred_adam_params p; /* p.lr may be changed between steps (npred_adam_set_lr) */
    size_t n;            /* P */
    float *m;            /* (P,) first moment  */
    float *v;            /* (P,) second moment */
    int64_t step;        /* completed steps */
} npred_adam;

npred_adam_params npred_adam_default_params(void);
/* Allocate zeroed moments for n parameters; NPRED_ERR_ARG on invalid hyper-parameters
 * (the checks torch.optim.Adam makes: lr >= 0, eps >= 0, 0 <= beta < 1, wd >= 0). */
npred_status npred_adam_init(npred_adam *opt, size_t n, const npred_adam_params *p);
void npred_adam_free(npred_adam *opt);
/* Change the learning rate for the following steps (what a scheduler does). */
npred_status npred_adam_set_lr(npred_adam *opt, double lr);
/* Zero the moments and the step counter. */
void npred_adam_reset(npred_adam *opt);
/* One update of param (P,) in place from grad (P,). */
npred_status npred_adam_step(npred_adam *opt, float *param, const float *grad);
/* The same, leaving every element i with frozen[i] != 0 and its moments untouched (as
 * torch skips a parameter whose .grad is None: no update, no weight decay, no moment
 * change); the step counter advances once. frozen (P,) may be NULL (= npred_adam_step). */
npred_status npred_adam_step_masked(npred_adam *opt, float *param, const float *grad, const unsigned char *frozen);
/* npred_adam_step's update, and grad (P,) set to zero behind it (one pass over the
 * parameters instead of the step and a separate zeroing). */
npred_status npred_adam_step_zero_grad(npred_adam *opt, float *param, float *grad);

#endif
