/* Single-threaded float GEMMs for the convolutions (row-major): the shapes of a
 * convolution per image, a small inner dimension against a long pixel dimension.
 *
 *   npred_gemm_nn: C (m x n) = [C +] A (m x k) . B (k x n)
 *   npred_gemm_nt: C (m x l) += A (m x n) . B (l x n)^T
 *
 * AVX-512 micro-kernels where the CPU has AVX-512F (chosen at run time, so a
 * build for any x86-64-v3 CPU still uses them), OpenBLAS sgemm otherwise. Each
 * element of C is summed in an order fixed by the shapes alone (nn: k = 0..k-1
 * into the running value; nt: n = 0..n-1 into the running value), so
 * the result does not depend on how callers split the work across threads.
 * Call them one per thread (inside a parallel region, or where a single thread
 * runs; outside a region the OpenBLAS fallback threads itself). */
#ifndef NPRED_KERNELS_GEMM_H
#define NPRED_KERNELS_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* C (m x n, row stride ldc) = [C +] A . B with A(i, p) = a[i * ars + p * acs]
 * (one of ars, acs must be 1: A row-major or transposed) and B (k x n, row
 * stride ldb). accumulate = 0 overwrites C. */
void npred_gemm_nn(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                   ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate);

/* C = bias + A . B, bias (m) added to every column of its row: the bits of C
 * filled with bias[i] and npred_gemm_nn(..., accumulate = 1), without that pass
 * over C (every element's sum starts from its bias). */
void npred_gemm_nn_bias(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                        ptrdiff_t ldb, const float *bias, float *c, ptrdiff_t ldc);

/* C (m x l, row stride ldc) += A (m x n, row stride lda) . B (l x n, row stride ldb)^T */
void npred_gemm_nt(int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                   float *c, ptrdiff_t ldc);

/* Both products of a 1x1 convolution's backward for one image, in one pass over
 * the pixels: with W (m x l, row stride l), dY (m x n) and X (l x n), rows n apart,
 *   dw (m x l, row stride l) += dY . X^T   (skipped when dw is NULL)
 *   dx (l x n)  = [dx +] W^T . dY          (skipped when dx is NULL; accumulate = 0 overwrites)
 * with the bits of npred_gemm_nt(m, l, n, dy, n, x, n, dw, l) and
 * npred_gemm_nn(l, n, m, w, 1, l, dy, n, dx, n, accumulate). */
void npred_gemm_pointwise_backward(int m, int l, int n, const float *w, const float *dy, const float *x, float *dw,
                                   float *dx, int accumulate);

/* The same with the bias gradient of this one image in the pass:
 *   db (m) += (float) sum over the pixels of each row of dY
 * with the bits of npred_conv2d_bias_grad(db, dy, 1, m, n) (16 float lanes over the
 * pixels in order, added up in double). Returns 0, or -1 (nothing computed) where
 * only the separate passes run (no AVX-512, l > 512 or m > 256). */
int npred_gemm_pointwise_backward_bias(int m, int l, int n, const float *w, const float *dy, const float *x,
                                       float *dw, float *db, float *dx, int accumulate);

/* The weight gradient of a convolution whose output rows are contiguous runs of its
 * (zero-padded) input, without an im2col matrix: with A(r, y * ow + q) =
 * x[off[r] + y * xrs + q] (r < l: the filter taps, off[r] their offsets; y < oh,
 * q < ow: the output pixel),
 *   dw (m x l, row stride ldw) += dY (m x oh * ow) . A^T
 * each element summed over the pixels in order: the bits of npred_gemm_nt on the
 * im2col matrix of A (AVX-512, m <= 512; otherwise a plain loop). t: scratch of
 * l * m floats. */
void npred_gemm_conv_dw(int m, int l, int oh, int ow, const float *dy, const float *x, const ptrdiff_t *off,
                        ptrdiff_t xrs, float *dw, ptrdiff_t ldw, float *t);

/* Which kernels run: 1 = AVX-512, 0 = OpenBLAS. npred_gemm_use_avx512(-1)
 * restores the CPU's choice; 0 forces OpenBLAS (tests compare both); 1 asks for
 * AVX-512 and is ignored on a CPU without it. Returns the setting now in force. */
int npred_gemm_use_avx512(int want);
int npred_gemm_avx512_active(void);

/* bf16 variants (the model's bf16 precision): the same products with every
 * element of A and B rounded to bfloat16 (round to nearest even; subnormal
 * inputs read as zero) and fp32 accumulation, on AVX-512 BF16 (vdpbf16ps) only.
 * The order of each element's sum depends on the shapes alone. Return 0, or -1
 * (nothing computed) where the CPU lacks AVX-512 BF16: there is no emulation. */
int npred_gemm_bf16_available(void);
int npred_gemm_nn_bf16(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                       ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate);
int npred_gemm_nt_bf16(int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                       ptrdiff_t ldc);

/* bf16 products with both operands packed once (large GEMMs shared by threads):
 * A (m x k, A(i, p) = a[i * lda + p], or a[p * lda + i] when a_trans) into npred_bf16_packed_a_words(m, k, a_trans) words, B (k x n, B(p, j) =
 * b[p * brs + j * bcs], brs or bcs 1) into npred_bf16_packed_b_words(k, n) words
 * (64-byte aligned); each call packs / computes part `part` of `parts` (rows of
 * A or pairs, column panels of B, blocks of rows of C), so threads share the
 * work. C (m x n) = [C +] A . B equals npred_gemm_nn_bf16's bit for bit, however
 * the parts are split. -1 where the CPU lacks AVX-512 BF16. */
size_t npred_bf16_packed_a_words(int m, int k, int a_trans);
size_t npred_bf16_packed_b_words(int k, int n);
int npred_bf16_pack_a(uint32_t *ap, int m, int k, const float *a, ptrdiff_t lda, int a_trans, int part, int parts);
int npred_bf16_pack_b(uint32_t *bp, int k, int n, const float *b, ptrdiff_t brs, ptrdiff_t bcs, int part,
                      int parts);
int npred_gemm_bf16_packed(int m, int n, int k, const uint32_t *ap, int a_trans, const uint32_t *bp, float *c,
                           ptrdiff_t ldc, int accumulate, int part, int parts);

#endif
