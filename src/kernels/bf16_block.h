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
/* Backward of a 1x1 convolution (weights w, o x c) over one image of hw pixels in
 * bf16 products with fp32 sums: dw (o x c) += dy . x^T (dw NULL: none) and dx (c x hw)
 * = W^T . dy (acc: added to dx; dx NULL: none; with dxb, the fp32 dx rounded to bf16
 * planes into dxb instead), from dy (o x hw) fp32 and x (c x hw)
 * fp32 planes or, when x is NULL, xpairs (bf16 pairs of channels, the layout of
 * npred_bf16_block_pair_words). dy, x and w are rounded to bf16 (round to nearest
 * even). Each element of dw is one fp32 sum over the pixels in pairs, in order,
 * starting from dw; each of dx over the pairs of rows of w, in order. */
size_t npred_bf16_pw_backward_scratch_bytes(int o, int c);
void npred_bf16_pw_backward_image(float *dw, float *dx, uint16_t *dxb, int acc, const float *dy, const float *x,
                                  const uint32_t *xpairs, const float *w, int o, int c, size_t hw, void *scratch);
/* Backward of the block's depthwise k x k convolution (weights wd (c, k, k), same
 * geometry as the forward) over one image, from dy and its input x as bf16 planes
 * (c, h, w) each: dx (c, h, w) fp32 = the transposed convolution of dy (the forward's
 * kernel with each plane's kernel rotated by 180 degrees; dx NULL: none), dw (c, k, k)
 * += the correlation of dy with x, db (c) += the sums of dy (NULL: none). Products
 * of bf16 values, fp32 sums over 16 lanes (dw: pairs of pixels of rows of 32, the rows
 * in order; db: lane j the pixels j mod 16), the lanes then added up per element in
 * double in a fixed order. */
size_t npred_bf16_dw_backward_scratch_bytes(int h, int w, int k);
void npred_bf16_dw_backward_image(float *dx, float *dw, float *db, const uint16_t *dy, const uint16_t *x,
                                  const float *wd, int c, int h, int w, int k, void *scratch);

#endif
