/* Synchronised BatchNorm2d (torch.nn.SyncBatchNorm) for data-parallel training:
 * in training mode the batch statistics are those of the global batch, i.e. of
 * the union of every rank's local batch, as if one process had seen it.
 *
 * While a sync function is installed (process-wide, npred_batchnorm_set_sync),
 * npred_batchnorm2d_forward/_backward with training != 0 divert here; eval mode
 * is unchanged. The sync function sums a double buffer over the ranks in place
 * (an MPI allreduce); every rank must run the same layers in the same order.
 *
 * Forward:  N = sum_r n_r; mean = sum_r sum(x_r) / N;
 *           var = sum_r sum((x_r - mean)^2) / N (two reductions: accurate);
 *           running_var takes var * N / (N - 1).
 * Backward: dx = gamma*invstd * (dy - S1/N - xhat * S2/N) with
 *           S1 = sum_r sum(dy_r), S2 = sum_r sum(dy_r * xhat_r);
 *           dgamma, dbeta ACCUMULATE this rank's local sums (the gradient
 *           allreduce adds the ranks' parts). */
#ifndef NPRED_KERNELS_BATCHNORM_SYNC_H
#define NPRED_KERNELS_BATCHNORM_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include "npred/base.h"

/* In-place sum over ranks of x (n,). */
typedef npred_status (*npred_batchnorm_sync_fn)(void *user, double *x, size_t n);

/* Install (fn != NULL) or remove (NULL) the process-wide sync function. */
void npred_batchnorm_set_sync(npred_batchnorm_sync_fn fn, void *user);
int npred_batchnorm_sync_active(void);

/* Same arguments and checks as npred_batchnorm2d_forward/_backward (training mode). */
npred_status npred_batchnorm2d_forward_sync(float *y,                     // (B, C, H, W) out
                                            double *save_mean,            // (C) out
                                            double *save_invstd,          // (C) out
                                            float *running_mean,          // (C) in/out or NULL
                                            float *running_var,           // (C) in/out or NULL
                                            int64_t *num_batches_tracked, // in/out or NULL
                                            const float *x,               // (B, C, H, W)
                                            const float *gamma,           // (C) or NULL
                                            const float *beta,            // (C) or NULL
                                            int B, int C, int H, int W, double momentum, double eps);
npred_status npred_batchnorm2d_backward_sync(float *dx,                 // (B, C, H, W) or NULL
                                             float *dgamma,             // (C) or NULL
                                             float *dbeta,              // (C) or NULL
                                             const float *dy,           // (B, C, H, W)
                                             const float *x,            // (B, C, H, W)
                                             const float *gamma,        // (C) or NULL
                                             const double *save_mean,   // (C)
                                             const double *save_invstd, // (C)
                                             int B, int C, int H, int W);

#endif
