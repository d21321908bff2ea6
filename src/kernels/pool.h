/* Pooling and channel concatenation over NCHW tensors.
 *
 * Legend: B = batch, C = channels, H, W = input size; Ho = floor(H/k), Wo = floor(W/k).
 *
 * avgpool2d: F.avg_pool2d(x, kernel_size=k, stride=k) (no padding, floor mode): each
 * output is the float sum of its k*k window divided by k*k; rows/columns past Ho*k, Wo*k
 * are dropped (and get no gradient). Used by PointPooled2d.
 *
 * concat2d: torch.cat(xs, dim=1) of n tensors (B, C_i, H, W) into (B, sum C_i, H, W), and
 * the backward that splits dy back into the pieces.
 *
 * Threads: OpenMP over the B*C planes (avgpool2d) or the B*n copied blocks (concat2d). */
#ifndef NPRED_KERNELS_POOL_H
#define NPRED_KERNELS_POOL_H

#include "npred/base.h"

/* y is OVERWRITTEN. Needs H >= k and W >= k (torch: "output size is too small"). */
npred_status npred_avgpool2d_forward(float *y,       // (B, C, Ho, Wo) out
                                     const float *x, // (B, C, H, W)
                                     int B, int C, int H, int W, int k);

/* ACCUMULATES dx += dy / (k*k) over each window. */
npred_status npred_avgpool2d_backward(float *dx,       // (B, C, H, W)
                                      const float *dy, // (B, C, Ho, Wo)
                                      int B, int C, int H, int W, int k);

/* y is OVERWRITTEN with [xs[0], xs[1], ...] along C. cs[i] = C_i > 0. */
npred_status npred_concat2d_forward(float *y,                 // (B, sum cs, H, W) out
                                    const float *const *xs,   // n pointers, xs[i] (B, cs[i], H, W)
                                    const int *cs,            // (n)
                                    int n, int B, int H, int W);

/* ACCUMULATES dxs[i] += the matching channel slice of dy; a NULL dxs[i] is skipped. */
npred_status npred_concat2d_backward(float *const *dxs,       // n pointers, (B, cs[i], H, W) or NULL
                                     const float *dy,         // (B, sum cs, H, W)
                                     const int *cs,           // (n)
                                     int n, int B, int H, int W);

#endif
