/* The point readout's sampling + contraction (sample.h) in bf16 precision
 * (docs/precision.md): the features and the feature rows F rounded to bf16 (round to
 * nearest even), the products of each tap with F summed in fp32 by vdpbf16ps, the
 * taps then weighted in fp32:
 *
 *   y[b,o] += sum_k wt_k * (sum_c bf(F[o,c]) * bf(feat[b, tap_k, c]))
 *
 * over the taps k inside the map. Order of the sums: per tap, lane l of a vector adds
 * the channel pairs (32m + 2l, 32m + 2l + 1) for m = 0, 1, ... in order; the four taps
 * are weighted into one vector in the order nw, ne, sw, se (missing taps add +0); its
 * 16 lanes are added by a fixed tree (lanes l and l + 8, then l and l + 4, ...). The
 * result depends on the shapes alone, not on the thread count. AVX-512 BF16 only
 * (npred_gemm_bf16_available), C a multiple of 16, packed cells (npred_rsample_cells),
 * F as rows (n, C). */
#ifndef NPRED_READOUTS_SAMPLE_BF16_H
#define NPRED_READOUTS_SAMPLE_BF16_H

#include <stddef.h>
#include <stdint.h>

/* Whether the kernel takes C channels (on this CPU). */
int npred_rsample_bf16_supported(int C);
/* Words of scratch: featb holds B images of H * W * C / 2 words, Fb n * C / 2. */
static inline size_t npred_rsample_bf16_feat_words(int B, int H, int W, int C)
{
    return (size_t)B * H * W * C / 2;
}
/* As npred_rsample_forward_cells_nchw with rows (so = C, sc = 1): y (B, n) += the
 * contraction above; feat (B, H, W, C) = x (B, C, H, W) transposed (fp32, the bits of
 * npred_rsample_to_nhwc: the backward's input); featb (B, H, W, C) the same rounded to
 * bf16; Fb (n, C) = F rounded to bf16. */
void npred_rsample_forward_cells_nchw_bf16(float *y, float *feat, uint16_t *featb, uint16_t *Fb, const float *x,
                                           const uint32_t *key, const float *frac, const float *F, int B, int H,
                                           int W, int C, int n);

#endif
