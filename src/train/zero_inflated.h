/* Zero-inflated losses of neuralpredictors' git head (measures/zero_inflated_losses.py:
 * ZeroInflationLossBase, ZIGLoss, ZILLoss).
 *
 * Legend: B = batch (trials), n = neurons; every array is (B, n) row-major float32.
 * The model gives, per trial and neuron, two slab parameters, a threshold `loc` and a
 * probability `q` of a response above it:
 *   zero_mask = y <= loc_mask,  nonzero_mask = y > loc_mask,
 *   spike  (zero_mask):    log(1 - q) - log(loc_mask)
 *   slab   (nonzero_mask): log q + log p_slab(y - loc)
 *     ZIG (theta, k):   (k - 1) log(y - loc) - (y - loc) / theta - k log theta - lgamma(k)
 *     ZIL (mean, var):  log N(log(y - loc); mean, var) - log(y - loc)
 * The spike and slab terms are summed over the batch per neuron; the reductions:
 *   NPRED_LOSS_SUM             sum over neurons                      (avg=False)
 *   NPRED_LOSS_PER_NEURON_SUM  (n,)                                   (avg=False, per_neuron=True)
 *   NPRED_LOSS_PER_NEURON_MEAN (n,) each term divided by its mask count (avg=True, per_neuron=True)
 *   NPRED_LOSS_MEAN            mean over neurons of PER_NEURON_MEAN  (avg=True)
 * with the reference's guard: a term's count is replaced by 1 when it is 0 or the term's
 * sum is exactly 0. loss = -(spike + slab).
 *
 * A trainable threshold: the reference clamps loc in place twice (through .data, so
 * autograd does not see it): before the masks to [0, max_b y[:, j]] (loc_mask), and after
 * the spike term to [0, 0.999 * smallest y[:, j] above loc_mask] (loc). The masks and the
 * spike value use loc_mask; the slab term and every gradient use loc.
 * npred_loss_zi_clamp_loc computes both; with a fixed threshold pass the same array as
 * loc_mask and loc. */
#ifndef NPRED_TRAIN_ZERO_INFLATED_H
#define NPRED_TRAIN_ZERO_INFLATED_H

#include <stdint.h>
#include "npred/base.h"
#include "model/encoder.h" /* npred_zi_slab, npred_zi_fitted (the encoders' fitted mean) */
#include "train/loss.h"


/* The two in-place clamps of a trainable loc: loc_mask = clamp(loc_in, 0, max_b y[:, j]);
 * loc = clamp(loc_mask, 0, 0.999 * m_j) with m_j the smallest y[b, j] > loc_mask[b, j]
 * (the reference's find_nonzero_min: entries that are not above loc_mask count as the
 * largest such value over the whole batch). loc may alias loc_in. */
npred_status npred_loss_zi_clamp_loc(float *loc_mask, float *loc, const float *loc_in, const float *y,
                                     int64_t B, int64_t n);

/* loss: (1,) or (n,) (npred_loss_size). NPRED_ERR_VALUE when the loss is not finite
 * (the reference asserts). */
npred_status npred_loss_zi_forward(double *loss, npred_zi_slab slab, const float *p1, const float *p2,
                                   const float *loc_mask, const float *loc, const float *q, const float *y,
                                   int64_t B, int64_t n, npred_loss_reduction red);

/* Accumulates (+=) dL/dp1, dL/dp2, dL/dloc, dL/dq (any may be NULL) for the upstream
 * dloss (shape of the loss; NULL = ones). */
npred_status npred_loss_zi_backward(float *dp1, float *dp2, float *dloc, float *dq, const double *dloss,
                                    npred_zi_slab slab, const float *p1, const float *p2,
                                    const float *loc_mask, const float *loc, const float *q, const float *y,
                                    int64_t B, int64_t n, npred_loss_reduction red);

#endif
