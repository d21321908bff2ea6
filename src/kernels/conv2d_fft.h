/* 2-D convolution by tiled FFT (the forward only; docs/kernels-conv2d.md#fft).
 *
 * The same sums as npred_conv2d_forward (conv2d.h: PyTorch's cross-correlation with
 * zero padding and dilation) for groups 1 and stride 1, computed per tile of the
 * output in the frequency domain (overlap-save):
 *   - the output plane is cut into tiles of v_h x v_w pixels, v = n - span + 1, where
 *     n x n is the FFT size (16 when the dilated kernel span is at most 9, 32 up to 17)
 *     and span = dil * (k - 1) + 1; each tile's input window is n x n;
 *   - every input window is transformed once (2-D real FFT, n/2 + 1 rows of n complex
 *     frequencies kept: Hermitian symmetry), the weights once per weight set
 *     (npred_conv2d_fft_weights: the conjugated transform of each kernel embedded in an
 *     n x n tile, scaled by 1/n^2);
 *   - per frequency, Y[tile, o] = sum_c X[tile, c] * W[c, o]: a complex GEMM (AVX-512
 *     where the CPU has it, chosen at run time as npred_gemm does; the same code for
 *     the plain vector unit otherwise);
 *   - one inverse transform per tile and output channel gives the circular
 *     correlation, of which the first v_h x v_w pixels are the exact-arithmetic
 *     result; then the bias.
 * The FFTs run on 16 channels at once (one vector lane per channel). Each output value
 * is computed by the same operations in the same order whatever N, the thread count or
 * the other images of the call: results are bit-identical for an image alone and in a
 * batch, on any thread count.
 *
 * Accuracy: not the direct sums' rounding; the error of an output plane is bounded by
 * a small multiple of u (2^-24) times log2(n^2) and the norms of its inputs and
 * kernels (tests/test_conv2d_fft.c states and checks the bound). */
#ifndef NPRED_KERNELS_CONV2D_FFT_H
#define NPRED_KERNELS_CONV2D_FFT_H

#include <stddef.h>

#include "kernels/conv2d.h"
#include "npred/base.h"

/* 1 if the FFT path computes p: valid p, groups 1, stride 1, dilated kernel span at
 * most 17 along each axis. */
int npred_conv2d_fft_supported(const npred_conv2d_params *p);

/* Which convolutions the callers that offer it (the ConvGRU's and the 2-D cores'
 * eval forwards of video encoders) send through the FFT:
 *   NPRED_CONV2D_FFT_AUTO (the default): supported ones whose kernel has at least 25
 *     taps (5 x 5 and larger) on at least 16 input channels, where it is faster than
 *     im2col + GEMM (a 9 x 9 kernel on 3 channels is not);
 *   NPRED_CONV2D_FFT_ALWAYS: every supported one (the tests run the small fixture
 *     models through it);
 *   NPRED_CONV2D_FFT_NEVER: none (direct convolutions everywhere).
 * Process-wide; set it before the forwards, not while one runs (nor during a stream:
 * reset it after a change). Returns the mode in force after the call; a value other
 * than the three is ignored (so -1 asks for the mode). */
enum { NPRED_CONV2D_FFT_NEVER = 0, NPRED_CONV2D_FFT_AUTO = 1, NPRED_CONV2D_FFT_ALWAYS = 2 };
int npred_conv2d_fft_set_mode(int mode);
/* 1 if the mode sends p through the FFT. */
int npred_conv2d_fft_use(const npred_conv2d_params *p);

/* Floats of the transformed weights of p (0 if not supported). */
size_t npred_conv2d_fft_weights_floats(const npred_conv2d_params *p);
/* wf (npred_conv2d_fft_weights_floats) = the transform of w (O, C, KH, KW). */
npred_status npred_conv2d_fft_weights(float *wf, const float *w, const npred_conv2d_params *p);

/* Bytes of workspace for a forward of p on `threads` threads (at least 1); it does not
 * depend on p->n (the images run one after the other, each on all threads). */
size_t npred_conv2d_fft_workspace_size(const npred_conv2d_params *p, int threads);

/* Grow *ws (malloc'ed, *ws_bytes long; NULL and 0 at first) to the workspace of p on
 * omp_get_max_threads() threads; never shrinks it. NPRED_ERR_NOMEM (ws freed, 0) or OK. */
npred_status npred_conv2d_fft_reserve(void **ws, size_t *ws_bytes, const npred_conv2d_params *p);

/* y (N, O, OH, OW) = conv(x (N, C, H, W)) + b (O, or NULL) with the transformed weights
 * wf. A workspace too small for all threads runs on fewer (same results); one too small
 * for a single thread is an error; ws NULL with ws_bytes 0 allocates one. */
npred_status npred_conv2d_fft_forward(float *y, const float *x, const float *wf, const float *b,
                                      const npred_conv2d_params *p, void *ws, size_t ws_bytes);

#endif
