/* grid_sample: bilinear sampling of a feature map at continuous positions.
 *
 * Semantics are exactly PyTorch's F.grid_sample for 4-D input with
 * mode="bilinear", padding_mode="zeros" and either align_corners
 * (https://pytorch.org/docs/stable/generated/torch.nn.functional.grid_sample.html):
 *
 *   grid[..., 0] = x indexes the width (last axis), grid[..., 1] = y the height.
 *   align_corners=1: px = (x + 1) * ((W - 1) / 2)         (-1 -> 0, +1 -> W-1)
 *   align_corners=0: px = (x + 1) * (W / 2) - 0.5          (-1 -> -0.5, +1 -> W-0.5)
 *   x0 = floor(px), fx = px - x0; weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy
 *   for the corners nw (x0, y0), ne (x0+1, y0), sw (x0, y0+1), se (x0+1, y0+1);
 *   a corner outside the image reads 0 (so points far outside give 0).
 *
 * The float32 arithmetic follows PyTorch's (1.13, x86 AVX2/AVX-512) CPU kernel
 * operation by operation, including the multiply-adds that its compiler fuses
 * (written here as fmaf): same unnormalisation, weights and summation order, so
 * the output and both gradients are bitwise PyTorch's on the reference fixtures
 * (the input gradient wherever its scatter order matches). A grid coordinate
 * that is NaN or infinite gives NaN, as in PyTorch.
 *
 * Backward (derivation in docs/derivations-grid-sample.md) uses the cell chosen
 * by floor(px) also on cell borders, as PyTorch does: at an integer source
 * position the gradient w.r.t. the grid is the one-sided derivative of the
 * cell to the right/below, with out-of-image corners counting as value 0.
 *
 * Two layouts:
 *   - general NCHW (PyTorch's): input (N, C, H, W), grid (N, Ho, Wo, 2),
 *     output (N, C, Ho, Wo);
 *   - channels-last for the Gaussian readout: features (B, H, W, C), grid
 *     (B, n, 2), output (B, n, C). One point is 4 taps x C contiguous floats.
 *     The forward result equals the general path's (Ho = n, Wo = 1) bitwise up
 *     to the sign of zeros; the grid gradient differs only in the summation
 *     order over channels.
 *
 * All backward functions ACCUMULATE (+=) into dinput/dfeat and dgrid; the
 * caller zeroes them. A NULL gradient pointer skips that gradient.
 * Threads: one OpenMP level per call (forward: over points; backward: over the
 * batch, so the scatter into the input gradient has no races). Results do not
 * depend on the number of threads.
 * Errors: NPRED_ERR_ARG for NULL data pointers or negative / empty spatial
 * dimensions; nothing is written then. */
#ifndef NPRED_KERNELS_GRID_SAMPLE_H
#define NPRED_KERNELS_GRID_SAMPLE_H

#include "npred/base.h"

/* ---- general path, NCHW (PyTorch layout) ---- */

/* Overwrites out. */
npred_status npred_grid_sample_forward(float *out,         // (N, C, Ho, Wo)
                                       const float *input, // (N, C, H, W)
                                       const float *grid,  // (N, Ho, Wo, 2)
                                       int N, int C, int H, int W, int Ho, int Wo,
                                       int align_corners);

/* dinput += dL/dinput, dgrid += dL/dgrid; either may be NULL. */
npred_status npred_grid_sample_backward(float *dinput,      // (N, C, H, W) or NULL
                                        float *dgrid,       // (N, Ho, Wo, 2) or NULL
                                        const float *dout,  // (N, C, Ho, Wo)
                                        const float *input, // (N, C, H, W)
                                        const float *grid,  // (N, Ho, Wo, 2)
                                        int N, int C, int H, int W, int Ho, int Wo,
                                        int align_corners);

/* ---- channels-last path (readout: n points per image) ---- */

/* Overwrites out. */
npred_status npred_grid_sample_nhwc_forward(float *out,        // (B, n, C)
                                            const float *feat, // (B, H, W, C)
                                            const float *grid, // (B, n, 2)
                                            int B, int H, int W, int C, int n,
                                            int align_corners);

/* dfeat += dL/dfeat, dgrid += dL/dgrid; either may be NULL. */
npred_status npred_grid_sample_nhwc_backward(float *dfeat,       // (B, H, W, C) or NULL
                                             float *dgrid,       // (B, n, 2) or NULL
                                             const float *dout,  // (B, n, C)
                                             const float *feat,  // (B, H, W, C)
                                             const float *grid,  // (B, n, 2)
                                             int B, int H, int W, int C, int n,
                                             int align_corners);

/* ---- layout helpers (overwrite out; out and in must not overlap) ---- */

npred_status npred_grid_sample_nchw_to_nhwc(float *out,      // (N, H, W, C)
                                            const float *in, // (N, C, H, W)
                                            int N, int C, int H, int W);
npred_status npred_grid_sample_nhwc_to_nchw(float *out,      // (N, C, H, W)
                                            const float *in, // (N, H, W, C)
                                            int N, int C, int H, int W);

#endif
