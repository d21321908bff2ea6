/* BatchNorm2d over NCHW tensors, as torch.nn.BatchNorm2d (track_running_stats=True).
 *
 * Legend: B = batch, C = channels, H, W = spatial size; n = B*H*W values per channel.
 *
 * Training mode normalises with the batch statistics of each channel:
 *     mean = sum(x)/n,  var = sum((x - mean)^2)/n   (biased),  invstd = 1/sqrt(var + eps)
 *     y = gamma * (x - mean) * invstd + beta
 * and, when running stats are given, updates them with PyTorch's momentum convention
 *     running_mean = (1 - m) * running_mean + m * mean
 *     running_var  = (1 - m) * running_var  + m * var * n/(n - 1)   (unbiased)
 *     num_batches_tracked += 1
 * (torch requires n > 1 in training; so do we). Eval mode normalises with the running
 * stats and changes nothing. Statistics and the backward's reductions are computed in
 * double, so a channel whose mean is far larger than its spread normalises accurately.
 * The elementwise arithmetic is in float, in training and eval alike:
 * y = fmaf((x - mh) - ml, a, beta), mh + ml the mean as two floats (ml = 0 in eval: the
 * running mean is a float), a = gamma * invstd rounded once from double: two
 * subtractions and an FMA per value, within a few float roundings of the double result
 * (x - mh is exact where x is near the mean). The fused kernels' training backward
 * (npred_batchnorm2d_elu_backward and its pieces) is elementwise in float the same way
 * (fmaf, coefficients rounded once from double); npred_batchnorm2d_backward in double.
 *
 * The forward writes the per-channel mean and invstd it normalised with (batch stats in
 * training, running stats in eval) into a caller-provided double cache for the backward.
 *
 * Threads: OpenMP over channels; each channel is reduced by one thread in a fixed order,
 * so results do not depend on the thread count. Derivation of the training backward:
 * docs/derivations-batchnorm.md. */
#ifndef NPRED_KERNELS_BATCHNORM_H
#define NPRED_KERNELS_BATCHNORM_H

#include <stdint.h>
#include "npred/base.h"

#define NPRED_BATCHNORM_EPS 1e-5
#define NPRED_BATCHNORM_MOMENTUM 0.1

/* Forward; y is overwritten (y may not alias x).
 * training != 0: batch statistics; running_mean/running_var are updated when both are
 *   non-NULL (both NULL: no running stats are tracked); *num_batches_tracked is
 *   incremented when non-NULL. Needs B*H*W > 1.
 * training == 0: running_mean and running_var are required and only read.
 * gamma, beta: NULL means 1 and 0 (affine=False). */
npred_status npred_batchnorm2d_forward(float *y,                     // (B, C, H, W) out
                                       double *save_mean,            // (C) out: cache
                                       double *save_invstd,          // (C) out: cache
                                       float *running_mean,          // (C) in/out or NULL
                                       float *running_var,           // (C) in/out or NULL
                                       int64_t *num_batches_tracked, // scalar in/out or NULL
                                       const float *x,               // (B, C, H, W)
                                       const float *gamma,           // (C) or NULL
                                       const float *beta,            // (C) or NULL
                                       int B, int C, int H, int W,
                                       int training, double momentum, double eps);

/* Backward of the forward above with the same `training` flag; ACCUMULATES into
 * dx, dgamma, dbeta (each may be NULL to skip it). save_mean/save_invstd are the cache
 * the forward wrote.
 * training != 0: dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)),
 *                xhat = (x - mean)*invstd, means over the n values of the channel.
 * training == 0: dx = gamma*invstd*dy (the statistics are constants).
 * Both: dgamma = sum(dy*xhat), dbeta = sum(dy). */
npred_status npred_batchnorm2d_backward(float *dx,                // (B, C, H, W) or NULL
                                        float *dgamma,            // (C) or NULL
                                        float *dbeta,             // (C) or NULL
                                        const float *dy,          // (B, C, H, W)
                                        const float *x,           // (B, C, H, W)
                                        const float *gamma,       // (C) or NULL (= 1)
                                        const double *save_mean,   // (C)
                                        const double *save_invstd, // (C)
                                        int B, int C, int H, int W, int training);

/* Fused BatchNorm2d + AdaptiveELU (the Stacked2dCore layer tail):
 *   y = elu(bn(x) - xshift) + yshift
 * with bn(x) rounded to float exactly as npred_batchnorm2d_forward writes it and the
 * ELU's exponential computed with fused multiply-adds (elu_exp_fma / elu_expm1_fma:
 * within an ulp of the unfused npred_adaptive_elu_forward's fast_expm1); the bn output
 * itself is never stored. Arguments as npred_batchnorm2d_forward (y overwritten, may not
 * alias x). */
npred_status npred_batchnorm2d_elu_forward(float *y,                     // (B, C, H, W) out
                                           double *save_mean,            // (C) out: cache
                                           double *save_invstd,          // (C) out: cache
                                           float *running_mean,          // (C) in/out or NULL
                                           float *running_var,           // (C) in/out or NULL
                                           int64_t *num_batches_tracked, // scalar in/out or NULL
                                           const float *x,               // (B, C, H, W)
                                           const float *gamma,           // (C) or NULL
                                           const float *beta,            // (C) or NULL
                                           int B, int C, int H, int W, int training, double momentum,
                                           double eps, float xshift, float yshift);

/* Backward of the fused forward, from its output y: the ELU slope is taken as
 * (y - yshift) + 1 where y - yshift <= 0 (= exp of the ELU input up to rounding;
 * 1 elsewhere). dy is the gradient of y. ACCUMULATES into dx, dgamma, dbeta (each
 * may be NULL). Equals npred_adaptive_elu_backward into a zeroed buffer followed
 * by npred_batchnorm2d_backward (to a float rounding of the slope), without that
 * buffer and its passes. */
npred_status npred_batchnorm2d_elu_backward(float *dx,                 // (B, C, H, W) or NULL
                                            float *dgamma,             // (C) or NULL
                                            float *dbeta,              // (C) or NULL
                                            const float *dy,           // (B, C, H, W)
                                            const float *x,            // (B, C, H, W) BN input
                                            const float *y,            // (B, C, H, W) fused output
                                            const float *gamma,        // (C) or NULL (= 1)
                                            const double *save_mean,   // (C)
                                            const double *save_invstd, // (C)
                                            int B, int C, int H, int W, int training, float yshift);

/* Pieces of the fused kernels for a caller that runs them where the data are
 * already in cache (the depth-separable block of the core, image by image). */

/* Per-plane statistics: for each of `planes` consecutive runs of HW values,
 * stats[2j] = their sum and stats[2j + 1] = the sum of squared deviations from
 * their own mean, in double. npred_batchnorm2d_forward and _elu_forward compute a
 * channel's training statistics from exactly these (plane (b, c) is run b*C + c),
 * combined in plane order b = 0..B-1 (Chan et al.'s pairwise update). */
void npred_batchnorm2d_plane_stats(double *stats, const float *x, size_t planes, size_t HW);

/* npred_batchnorm2d_elu_forward in training mode with the planes' statistics given
 * (pstats: (B, C, 2) from npred_batchnorm2d_plane_stats of x): bit-identical to it. */
npred_status npred_batchnorm2d_elu_forward_planes(float *y, double *save_mean, double *save_invstd,
                                                  float *running_mean, float *running_var,
                                                  int64_t *num_batches_tracked, const float *x, const double *pstats,
                                                  const float *gamma, const float *beta, int B, int C, int H, int W,
                                                  double momentum, double eps, float xshift, float yshift);

/* Eval mode one image at a time, for blocks that normalise each image while it is in
 * cache. npred_batchnorm2d_eval_stats writes the cache the backward reads (save_mean =
 * running_mean, save_invstd = 1 / sqrt(running_var + eps), as the eval forward does);
 * npred_batchnorm2d_eval_image normalises one image's C planes of HW values (y, x:
 * (C, H, W); y may not alias x), followed by AdaptiveELU(xshift, yshift) when act, with the
 * bits npred_batchnorm2d_forward (act 0) / npred_batchnorm2d_elu_forward (act 1) write for
 * that image in eval mode. Shapes are the caller's (already checked); no threads. */
void npred_batchnorm2d_eval_stats(double *save_mean, double *save_invstd, const float *running_mean,
                                  const float *running_var, int C, double eps);
void npred_batchnorm2d_eval_image(float *y, const float *x, const float *running_mean, const float *running_var,
                                  const float *gamma, const float *beta, int C, size_t HW, double eps, int act,
                                  float xshift, float yshift);

/* The reductions of npred_batchnorm2d_elu_backward: accumulates dgamma and dbeta
 * (each may be NULL) and writes coef (C, 4), which npred_batchnorm2d_elu_backward_image
 * turns into dx one image at a time. Not with synchronised statistics (an error). */
npred_status npred_batchnorm2d_elu_backward_coef(double *coef, float *dgamma, float *dbeta, const float *dy,
                                                 const float *x, const float *y, const float *gamma,
                                                 const double *save_mean, const double *save_invstd, int B, int C,
                                                 int H, int W, int training, float yshift);

/* dx of one image (C planes of HW values; dy, x, y that image's) WRITTEN, with the
 * bits npred_batchnorm2d_elu_backward accumulates onto a zeroed dx; y NULL: dy is e
 * (see npred_batchnorm2d_elu_backward_coef_e below). */
void npred_batchnorm2d_elu_backward_image(float *dx, const float *dy, const float *x, const float *y,
                                          const double *coef, int C, size_t HW, int training, float yshift);

/* Activation recomputation (the core's memory-saving training path): a fused layer's
 * output y recomputed from its BatchNorm input x, with the bits the fused forward
 * wrote, instead of being stored. The map holds what the forward normalised with. */
typedef struct {
    const double *mean, *invstd; /* (C) the forward's save_mean, save_invstd */
    const float *gamma, *beta;   /* (C) or NULL (= 1, 0) */
    float xshift, yshift; /* (training and eval alike: both forwards normalise by the same float map) */
} npred_bn_elu_map;

/* y of `images` consecutive images (C planes of HW values each) from x, bit-identical
 * to what npred_batchnorm2d_elu_forward[_planes] writes with the map's statistics.
 * Serial: for callers inside their own parallel region. */
void npred_batchnorm2d_elu_apply(float *y, const float *x, const npred_bn_elu_map *m, int images, int C, size_t HW);

/* The statistics of npred_batchnorm2d_elu_forward (pstats NULL) or _forward_planes
 * (pstats given, training only) alone: save_mean and save_invstd (training: the batch
 * statistics, and the running stats and count updated; eval: from the running stats),
 * with the same bits; no output is written. */
npred_status npred_batchnorm2d_stats(double *save_mean, double *save_invstd, float *running_mean, float *running_var,
                                     int64_t *num_batches_tracked, const float *x, const double *pstats, int B, int C,
                                     int H, int W, int training, double momentum, double eps);

/* The fused backward from e = the gradient of the ELU's input (elu_grad(dy, y), formed
 * by the caller where y is at hand): npred_batchnorm2d_elu_backward_coef from e
 * (same bits as from dy and y), and npred_batchnorm2d_elu_backward_image with y NULL
 * takes dy as e (dx may then be dy itself: each value is read before it is written). */
npred_status npred_batchnorm2d_elu_backward_coef_e(double *coef, float *dgamma, float *dbeta, const float *e,
                                                   const float *x, const float *gamma, const double *save_mean,
                                                   const double *save_invstd, int B, int C, int H, int W,
                                                   int training);
/* d = e of the fused layer from its output gradient d and output y, in place (n values) */
void npred_elu_grad_inplace(float *d, const float *y, size_t n, float yshift);
/* the same for one image (C planes of HW values) with y recomputed from x by the map, and
 * that image's backward sums (C, 2) as npred_batchnorm2d_elu_backward_plane_sums makes
 * them from the new d (the same bits), in the same pass */
void npred_batchnorm2d_elu_grad_sums_image_map(double *sums, float *d, const float *x, const npred_bn_elu_map *m,
                                               int C, size_t HW);

/* The fused backward's sums made image by image where the data are in cache (the
 * block that writes a layer's output gradient). A channel's sums, sum(e) and
 * sum(e * (x - mean)) with e = elu_grad(dy, y), are those of its planes, each summed
 * in 32 double lanes then added pairwise, added in image order b = 0..B-1: every
 * fused backward above forms them so, so the order does not depend on threads or on
 * where the planes' sums were made.
 * npred_batchnorm2d_elu_backward_plane_sums: one image's C planes (dy, x, y: (C, H, W);
 *   y NULL: dy is e) into sums (C, 2), mean the forward's save_mean.
 * npred_batchnorm2d_elu_grad_sums_image: the same sums while d (C, H, W), the gradient of
 *   the output y, is turned into e in place (npred_elu_grad_inplace's values).
 * npred_batchnorm2d_elu_backward_coef_sums: npred_batchnorm2d_elu_backward_coef from the
 *   images' sums psums (B, C, 2) (same bits). */
void npred_batchnorm2d_elu_backward_plane_sums(double *sums, const float *dy, const float *x, const float *y,
                                               const double *mean, int C, size_t HW, float yshift);
void npred_batchnorm2d_elu_grad_sums_image(double *sums, float *d, const float *y, const float *x,
                                           const double *mean, int C, size_t HW, float yshift);
npred_status npred_batchnorm2d_elu_backward_coef_sums(double *coef, float *dgamma, float *dbeta, const double *psums,
                                                      const float *gamma, const double *save_mean,
                                                      const double *save_invstd, int B, int C, int H, int W,
                                                      int training);

#endif
