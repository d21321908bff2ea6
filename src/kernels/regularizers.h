/* Weight regularizers of neuralpredictors 0.3.0 (regularizers.py and
 * Stacked2dCore.group_sparsity), with their gradients.
 *
 * Legend: O = output channels, I = input channels (per group), kh/kw = kernel
 * height/width of the regularized conv weight W (O, I, kh, kw). The Laplace
 * family treats W as O*I independent 2-D slices ("S" below) and convolves each
 * with a fixed f x f Laplace filter, zero padding `padding` on every side, so
 * the filtered slice is (Ho, Wo) = (kh + 2p - f + 1, kw + 2p - f + 1).
 *
 * Every function writes the scalar regularizer value to *value (overwrite; may
 * be NULL) and, when dw is not NULL, ACCUMULATES scale * d(value)/dW into dw
 * (the caller zeroes). All sums are accumulated in double. The functions are
 * serial (the tensors are small); the Laplace ones allocate scratch only when
 * 2*Ho*Wo + kh*kw exceeds 1024 doubles (kernels above about 18x18), and then
 * return NPRED_ERR_NOMEM if that fails. Kernel sides and padding are limited
 * to 4096.
 *
 * Exact formulas, defaults and edge cases: docs/regularizers.md. */
#ifndef NPRED_KERNELS_REGULARIZERS_H
#define NPRED_KERNELS_REGULARIZERS_H

#include <stdbool.h>

#include "npred/base.h"

/* `padding` value that selects the reference default, filter_size / 2. */
#define NPRED_REG_PAD_DEFAULT (-1)

/* The f x f Laplace filter (f = 3, 5 or 7), row-major (f, f); NULL for any
 * other size. Same constants as laplace(), laplace5x5(), laplace7x7(). */
const float *npred_reg_laplace_filter(int filter_size);

/* gaussian2d(size=(h, w), sigma) with gamma 1, theta 0, centre 0 and
 * normalize=True: exp(-(x^2 + y^2) / (2 sigma^2)) on the grid centred on the
 * middle of the array, minus its minimum, divided by the new maximum, rounded
 * to float. Overwrites mask. Error for h = w = 1 (0/0) or sigma <= 0. */
npred_status npred_reg_gaussian2d(float *mask, // (h, w)
                                  int h, int w, double sigma);

/* LaplaceL2(padding, filter_size)(W, avg):
 *   agg(laplace(W)^2) / 2, agg = mean (avg) or sum over (S, Ho, Wo).
 * The Stacked2dCore default is padding 0, filter 3, avg. */
npred_status npred_reg_laplace_l2(double *value, float *dw, // (O, I, kh, kw)
                                  const float *w,           // (O, I, kh, kw)
                                  double scale, int out_ch, int in_ch, int kh, int kw,
                                  int padding, int filter_size, bool avg);

/* LaplaceL1(padding)(W, avg), the 3x3 filter: agg(|laplace(W)|), agg = mean (avg) or
 * sum over (S, Ho, Wo); the gradient of |f| at f = 0 is 0 (torch's abs). The module's
 * own default padding is 0; NPRED_REG_PAD_DEFAULT gives padding=None (1). */
npred_status npred_reg_laplace_l1(double *value, float *dw, // (O, I, kh, kw)
                                  const float *w,           // (O, I, kh, kw)
                                  double scale, int out_ch, int in_ch, int kh, int kw,
                                  int padding, bool avg);

/* LaplaceL2norm(padding)(W, avg), always the 3x3 filter:
 *   agg(laplace(W)^2) / agg(W^2); with avg the two means have different counts
 *   (S*Ho*Wo and S*kh*kw). 0/0 (all-zero W) gives NaN, as in the reference. */
npred_status npred_reg_laplace_l2norm(double *value, float *dw, // (O, I, kh, kw)
                                      const float *w,           // (O, I, kh, kw)
                                      double scale, int out_ch, int in_ch, int kh, int kw,
                                      int padding, bool avg);

/* GaussianLaplaceL2(kernel=(kh, kw), padding)(W, avg), 3x3 filter:
 *   agg((laplace(W) * (1 - G))^2) / agg(W^2), G = npred_reg_gaussian2d(kh, kw,
 *   sigma); sigma <= 0 selects the reference default min(kh, kw) / 4.
 * The mask is broadcast against the filtered slices as PyTorch does, so Ho must
 * be kh or 1 and Wo kw or 1 (padding 1, or a 3x3 W with padding 0); anything
 * else is NPRED_ERR_SHAPE, where PyTorch raises. Both means count S*kh*kw. */
npred_status npred_reg_gaussian_laplace_l2(double *value, float *dw, // (O, I, kh, kw)
                                           const float *w,           // (O, I, kh, kw)
                                           double scale, int out_ch, int in_ch, int kh,
                                           int kw, int padding, double sigma, bool avg);

/* One layer's group-sparsity term: mean over (o, i) of sqrt(sum_{kh,kw} W^2).
 * Stacked2dCore sums it over the hidden layers and divides by max(L - 1, 1)
 * (pass that factor in scale). The gradient at an all-zero group is taken as 0. */
npred_status npred_reg_group_sparsity(double *value, float *dw, // (O, I, kh, kw)
                                      const float *w,           // (O, I, kh, kw)
                                      double scale, int out_ch, int in_ch, int kh, int kw);

#endif
