/* bf16 kernels of the depth-separable block (1x1 -> depthwise k x k -> 1x1 ->
 * BatchNorm + ELU) for the bf16 precision (docs/precision.md): one image, NCHW,
 * bf16 products (vdpbf16ps) with fp32 sums. The block's two intermediates stay in
 * bf16 between the convolutions (the first as planes, the second as pairs of
 * channels, the layout the second 1x1 multiplies without packing), and the second
 * 1x1's results get their bias, BatchNorm (eval: running statistics) and ELU in
 * fp32 before they are stored. Every sum's order depends on the shapes alone.
 * AVX-512 BF16 only (npred_gemm_bf16_available). */
#ifndef NPRED_KERNELS_BF16_BLOCK_H
#define NPRED_KERNELS_BF16_BLOCK_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int cin, cout, h, w, k;             /* stride 1, dilation 1, padding k / 2 (same size) */
    const float *w0, *b0;               /* 1x1 in: (cout, cin), bias or NULL */
    const float *wd, *bd;               /* depthwise: (cout, k, k), bias or NULL */
    const float *w2, *b2;               /* 1x1 out: (cout, cout), bias or NULL */
    const float *mean, *var;            /* BatchNorm eval: running statistics (per channel) */
    const float *gamma, *beta;          /* and affine parameters (NULL: 1, 0): y = (z - mean) * scale + beta, */
    double eps;                         /* scale = gamma / sqrt(var + eps) rounded to float, one fma */
    float xshift, yshift;               /* ELU: elu(y - xshift) + yshift */
} npred_bf16_block;

/* Whether the kernels take this geometry (odd k <= 7, padding k / 2, stride and
 * dilation 1) on this CPU. */
int npred_bf16_block_supported(int k, int pad, int stride, int dil);
/* Bytes of scratch one image needs (64-byte aligned by the caller). */
size_t npred_bf16_block_scratch_bytes(const npred_bf16_block *b);
/* Words of an activation of c channels as pairs of channels (the layout above). */
size_t npred_bf16_block_pair_words(int c, int h, int w);
/* One image through the block: ELU(BN(1x1_out(dw(1x1_in(x))))), with the roundings of
 * docs/precision.md (x, the weights and both intermediates to bf16). The input is x
 * (cin, h, w) fp32, or when x is NULL xpairs (a previous block's apairs: bf16 pairs of
 * channels, the values x would round to); the output is a (cout, h, w) fp32, or when
 * a is NULL apairs (pairs of channels, npred_bf16_block_pair_words). */
void npred_bf16_block_eval_image(const npred_bf16_block *b, const float *x, const uint32_t *xpairs, float *a,
                                 uint32_t *apairs, void *scratch);
/* Training: z (cout, h, w) = 1x1_out(dw(1x1_in(x))) + biases (fp32, no BatchNorm), and the
 * two intermediates as they were used: t0 (cout, h, w) bf16 planes (the 16 high bits of
 * each float), t1 (npred_bf16_block_pair_words(cout, h, w)) bf16 pairs of channels. */
void npred_bf16_block_train_image(const npred_bf16_block *b, const float *x, float *z, uint16_t *t0, uint32_t *t1,
                                  void *scratch);
/* Only the intermediates t0, t1 of npred_bf16_block_train_image (the same bits). */
void npred_bf16_block_front_image(const npred_bf16_block *b, const float *x, uint16_t *t0, uint32_t *t1,
                                  void *scratch);
/* The intermediates of npred_bf16_block_train_image as fp32 planes (exact): t0f, t1f
 * (c, hw) each. */
void npred_bf16_block_widen(float *t0f, float *t1f, const uint16_t *t0, const uint32_t *t1, int c, size_t hw);

#endif
