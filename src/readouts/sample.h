/* Point readout kernels: bilinear sampling (PyTorch grid_sample, zero padding)
 * fused with the per-neuron contraction over channels, on channels-last maps.
 *
 *   y[b,o] += sum_c F[o*ldf + c] * bilinear(feat[b], grid[b,o])[c]
 *
 * The sampled (B, n, C) tensor is never materialised: at 8,000 neurons x 64
 * channels it would be 2 MB per image. One point reads its 4 taps x C
 * contiguous floats. Tap selection, weights and unnormalisation follow
 * kernels/grid_sample.h (cell chosen by floor(px), out-of-image taps read 0).
 *
 * Backward ACCUMULATES into dfeat, dgrid and dF (each may be NULL):
 *   pass 1 (OpenMP over images): dfeat[b, tap] += dy * w_tap * F[o] and
 *                                dgrid[b,o] += dy * d(F.sample)/d(grid)
 *   pass 2 (OpenMP over tiles of neurons, images inside): dF[o] += dy * sample
 * so no two threads write the same float and results do not depend on the
 * thread count. */
#ifndef NPRED_READOUTS_SAMPLE_H
#define NPRED_READOUTS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* Below this many multiply-adds (B * n * C) a sampling kernel runs on the
 * calling thread: an OpenMP fork and join costs more than it saves (one image of
 * the SENSORIUM model, 7,776 neurons x 64 channels, is about 0.5 M). */
#define NPRED_RS_PAR_MIN 1e6

/* y (B, n) += contraction; grid (B, n, 2) in [-1, 1] units (x = width, y = height).
 * F element (o, c) at F[o * so + c * sc]: rows (so = ldf, sc = 1) or the
 * channel-major (c, n) parameter layout (so = 1, sc = n) read in place. */
void npred_rsample_forward(float *y,          // (B, n)
                           const float *feat, // (B, H, W, C)
                           const float *grid, // (B, n, 2)
                           const float *F,    // see so, sc
                           size_t so, size_t sc, int B, int H, int W, int C, int n, int align_corners);

void npred_rsample_backward(float *dfeat,       // (B, H, W, C) or NULL
                            float *dgrid,       // (B, n, 2) or NULL
                            float *dF,          // (n, ldf) or NULL
                            const float *dy,    // (B, n)
                            const float *feat,  // (B, H, W, C)
                            const float *grid,  // (B, n, 2)
                            const float *F,     // (n, ldf)
                            int ldf, int B, int H, int W, int C, int n, int align_corners);

/* The cells of count sampling positions made once for several kernel calls on
 * maps of H x W (the kernels above form them again for every block): key[i] holds
 * the nw corner's pixel index + W + 1 (shifted left by 4) and which of the corners
 * nw, ne, sw, se lie inside the map (bits 0..3); frac[2i], frac[2i+1] are the
 * distances to the west and north sides (w, n) of kernels/grid_sample_cell.h. frac
 * may be grid itself (each pair is read before it is written). Runs on the calling
 * thread. Returns 0, writing nothing, when (H + 2)(W + 2) >= 2^27 (the index would
 * not fit: npred_rsample_cells_fit). The *_cells kernels give the bits of the grid
 * kernels for the same positions. */
static inline int npred_rsample_cells_fit(int H, int W) { return (double)(H + 2) * (W + 2) < (double)(1u << 27); }
int npred_rsample_cells(uint32_t *key, float *frac, const float *grid, size_t count, int H, int W, int align_corners);
void npred_rsample_forward_cells(float *y, const float *feat, const uint32_t *key, const float *frac, const float *F,
                                 size_t so, size_t sc, int B, int H, int W, int C, int n);
/* align_corners: the scale of the grid gradient */
void npred_rsample_backward_cells(float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                                  const uint32_t *key, const float *frac, const float *F, int ldf, int B, int H, int W,
                                  int C, int n, int align_corners);

/* The *_cells kernels on the core's (B, C, H, W) layout, the transposes fused:
 * the forward writes feat (B, H, W, C) = x transposed (for the backward) and
 * samples each image while it is in cache (x NULL: feat is only read); the
 * backward accumulates the input gradient into dx (B, C, H, W) through the
 * scratch dfeat (B, H, W, C; overwritten), each image transposed into dx soon
 * after its scatter, or with dx_set writes it there (dx is not read: no zeroing
 * pass before). Every value is that of npred_rsample_to_nhwc, the *_cells kernel
 * and npred_rsample_add_nchw (dx_set: npred_rsample_set_nchw) called one after
 * the other. */
void npred_rsample_forward_cells_nchw(float *y, float *feat, const float *x, const uint32_t *key, const float *frac,
                                      const float *F, size_t so, size_t sc, int B, int H, int W, int C, int n);
void npred_rsample_backward_cells_nchw(float *dx, float *dfeat, float *dgrid, float *dF, const float *dy,
                                       const float *feat, const uint32_t *key, const float *frac, const float *F,
                                       int ldf, int B, int H, int W, int C, int n, int align_corners, int dx_set);

/* out (N, H*W, C) = in (N, C, H*W) transposed (overwrites). */
void npred_rsample_to_nhwc(float *out, const float *in, int N, int C, int HW);
/* out (N, C, H*W) += in (N, H*W, C) transposed (accumulates). */
void npred_rsample_add_nchw(float *out, const float *in, int N, int C, int HW);
/* out (N, C, H*W) = +0 + in (N, H*W, C) transposed: out is not read, and the bits are
 * those of npred_rsample_add_nchw onto zeros (a -0 becomes +0 as it did there). */
void npred_rsample_set_nchw(float *out, const float *in, int N, int C, int HW);

#endif
