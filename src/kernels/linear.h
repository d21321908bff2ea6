/* Fully connected layer, as torch.nn.Linear: y = x W^T + b.
 *
 * Legend: B = batch, I = n_in (in_features), O = n_out (out_features). PyTorch layouts: W (O, I).
 * The products run through OpenBLAS sgemm (threaded by OpenBLAS itself; inside an OpenMP
 * parallel region the OpenMP build of OpenBLAS runs single-threaded). */
#ifndef NPRED_KERNELS_LINEAR_H
#define NPRED_KERNELS_LINEAR_H

#include "npred/base.h"

/* y is OVERWRITTEN (it may not alias x or w). b == NULL means no bias. */
npred_status npred_linear_forward(float *y,       // (B, O) out
                                  const float *x, // (B, I)
                                  const float *w, // (O, I)
                                  const float *b, // (O) or NULL
                                  int B, int n_in, int n_out);

/* ACCUMULATES: dx += dy W, dw += dy^T x, db += sum over the batch of dy.
 * Each gradient may be NULL to skip it; x is read only for dw, w only for dx. */
npred_status npred_linear_backward(float *dx,       // (B, I) or NULL
                                   float *dw,       // (O, I) or NULL
                                   float *db,       // (O) or NULL
                                   const float *dy, // (B, O)
                                   const float *x,  // (B, I)
                                   const float *w,  // (O, I)
                                   int B, int n_in, int n_out);

#endif
