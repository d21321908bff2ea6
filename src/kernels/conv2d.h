/* 2-D convolution kernels (PyTorch torch.nn.Conv2d semantics).
 *
 * Cross-correlation with zero padding, stride, dilation and groups, exactly as
 * https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html:
 *
 *   y[n, o, oy, ox] = b[o] + sum_{ci, ky, kx} w[o, ci, ky, kx]
 *                       * x[n, g*C/G + ci, oy*sh + ky*dh - ph, ox*sw + kx*dw - pw]
 *
 * with g = o / (O/G) the group of output channel o and out-of-range x reading 0.
 *
 * Legend: N batch, C input channels, H, W input height/width, O output channels,
 * KH, KW kernel size, OH, OW output height/width, G groups.
 * Layouts are PyTorch's: x (N, C, H, W), w (O, C/G, KH, KW), b (O), y (N, O, OH, OW).
 *
 * Three implementations share one API (see docs/kernels-conv2d.md):
 *   naive     - direct loops, double accumulation; the reference the tests trust.
 *   gemm      - im2col + OpenBLAS sgemm, OpenMP over the batch (1x1 stride-1
 *               unpadded convs use the input as the GEMM operand directly).
 *   depthwise - direct vectorised kernel for G == C > 1 and O a multiple of C
 *               (channel multiplier O/C); OpenMP over planes / channels.
 * npred_conv2d_forward / _backward pick the fast one (npred_conv2d_choose_algo).
 *
 * Forward OVERWRITES y. Backward ACCUMULATES (+=) into dx, dw and db; each may be
 * NULL to skip that work. Threads: one level of OpenMP per call; a cblas call
 * inside it runs single-threaded. For a given thread count results are
 * bit-identical run to run (the gemm dW is reduced over threads in fixed order;
 * the naive and depthwise kernels do not depend on the thread count at all).
 *
 * Scratch memory: the fast kernels take a caller-owned workspace of at least
 * npred_conv2d_workspace_size() bytes (sized for omp_get_max_threads()). A smaller
 * workspace runs on fewer threads; one too small for a single thread is an error.
 * ws == NULL with ws_bytes == 0 makes the call allocate (and free) its own
 * scratch: convenient outside the training loop, never needed inside it. */
#ifndef NPRED_KERNELS_CONV2D_H
#define NPRED_KERNELS_CONV2D_H

#include <stddef.h>
#include "npred/base.h"

typedef struct {
    int n, c, h, w;         /* input (N, C, H, W) */
    int o;                  /* output channels */
    int kh, kw;             /* kernel height, width */
    int stride_h, stride_w; /* >= 1 */
    int pad_h, pad_w;       /* zero padding on each side, >= 0 */
    int dil_h, dil_w;       /* dilation, >= 1 */
    int groups;             /* divides both C and O */
    int bf16;               /* 1: the GEMM algorithm multiplies in bf16 (inputs and weights
                               rounded to bf16, fp32 accumulation; AVX-512 BF16 only, else
                               NPRED_ERR_UNSUPPORTED); 0 (default): fp32. The naive and
                               depthwise algorithms ignore it (they stay fp32). */
} npred_conv2d_params;

typedef enum {
    NPRED_CONV2D_ALGO_AUTO = 0,
    NPRED_CONV2D_ALGO_NAIVE,
    NPRED_CONV2D_ALGO_GEMM,
    NPRED_CONV2D_ALGO_DEPTHWISE
} npred_conv2d_algo;

/* Params for a square kernel with the same stride/padding/dilation along H and W. */
npred_conv2d_params npred_conv2d_params_square(int n, int c, int h, int w, int o, int k,
                                               int stride, int pad, int dilation, int groups);
/* Validate p (NPRED_ERR_ARG with a message if invalid) and give the output size
 * OH = (H + 2ph - dh*(KH-1) - 1)/sh + 1 (likewise OW); either pointer may be NULL. */
npred_status npred_conv2d_output_size(const npred_conv2d_params *p, int *oh, int *ow);
/* 1 if the depthwise kernel applies: G == C > 1 and O a multiple of C. */
int npred_conv2d_is_depthwise(const npred_conv2d_params *p);
/* The algorithm the dispatcher uses for p (never AUTO). */
npred_conv2d_algo npred_conv2d_choose_algo(const npred_conv2d_params *p);
/* Bytes of workspace for forward and backward of p with `algo` (AUTO = the
 * dispatcher's choice) on omp_get_max_threads() threads; 0 for naive. Returns 0
 * also for invalid p (the kernels then report the error). */
size_t npred_conv2d_workspace_size(const npred_conv2d_params *p, npred_conv2d_algo algo);
/* The same for t threads (at least 1): e.g. t = 1 for a call made inside a parallel region. */
size_t npred_conv2d_workspace_size_threads(const npred_conv2d_params *p, npred_conv2d_algo algo, int t);

/* ---- dispatcher (fast path) ---- */
npred_status npred_conv2d_forward(float *y,       // (N, O, OH, OW) overwritten
                                  const float *x, // (N, C, H, W)
                                  const float *w, // (O, C/G, KH, KW)
                                  const float *b, // (O) or NULL
                                  const npred_conv2d_params *p, void *ws, size_t ws_bytes);
npred_status npred_conv2d_backward(float *dx,       // (N, C, H, W) += or NULL
                                   float *dw,       // (O, C/G, KH, KW) += or NULL
                                   float *db,       // (O) += or NULL
                                   const float *dy, // (N, O, OH, OW)
                                   const float *x,  // (N, C, H, W) (may be NULL if dw is)
                                   const float *w,  // (O, C/G, KH, KW) (may be NULL if dx is)
                                   const npred_conv2d_params *p, void *ws, size_t ws_bytes);
/* As npred_conv2d_backward, but dx (when not NULL) is OVERWRITTEN with the input
 * gradient instead of added to: the bits of npred_conv2d_backward into a zeroed dx,
 * without the pass that zeroes it (the GEMM algorithm writes it directly). */
npred_status npred_conv2d_backward_set(float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, const npred_conv2d_params *p, void *ws, size_t ws_bytes);
/* Same with an explicit algorithm (AUTO = dispatcher's choice). */
npred_status npred_conv2d_forward_algo(npred_conv2d_algo algo, float *y, const float *x,
                                       const float *w, const float *b,
                                       const npred_conv2d_params *p, void *ws, size_t ws_bytes);
npred_status npred_conv2d_backward_algo(npred_conv2d_algo algo, float *dx, float *dw, float *db,
                                        const float *dy, const float *x, const float *w,
                                        const npred_conv2d_params *p, void *ws, size_t ws_bytes);

/* ---- the individual implementations (same argument meanings) ---- */
/* Naive direct loops; allocates double accumulators internally (reference only). */
npred_status npred_conv2d_forward_naive(float *y, const float *x, const float *w, const float *b,
                                        const npred_conv2d_params *p);
npred_status npred_conv2d_backward_naive(float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w,
                                         const npred_conv2d_params *p);
/* im2col + sgemm, OpenMP over the batch. */
npred_status npred_conv2d_forward_gemm(float *y, const float *x, const float *w, const float *b,
                                       const npred_conv2d_params *p, void *ws, size_t ws_bytes);
npred_status npred_conv2d_backward_gemm(float *dx, float *dw, float *db, const float *dy,
                                        const float *x, const float *w,
                                        const npred_conv2d_params *p, void *ws, size_t ws_bytes);
/* Depthwise (G == C > 1, O = C * multiplier); NPRED_ERR_ARG otherwise. */
npred_status npred_conv2d_forward_depthwise(float *y, const float *x, const float *w,
                                            const float *b, const npred_conv2d_params *p,
                                            void *ws, size_t ws_bytes);
npred_status npred_conv2d_backward_depthwise(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w,
                                             const npred_conv2d_params *p, void *ws,
                                             size_t ws_bytes);

#endif
