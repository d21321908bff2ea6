/* The convolution GEMMs (kernels/gemm.h), AVX-512 micro-kernels and the OpenBLAS
 * fallback, against a double-precision reference written here: every tail of the
 * register blocks (rows, 16-column vectors, panels of 48 and 64, transposed
 * chunks), both layouts of A, overwrite and accumulate; and the fixed order of
 * the sums (nt through transposed chunks equals nn on the transposed matrix,
 * bit for bit; the 1x1 backward's one-pass kernel equals its nt and nn; the
 * weight gradient from the input equals nt on the im2col matrix; nn from a bias
 * equals nn accumulated onto C filled with it; the 1x1 backward's bias gradient in
 * its pass equals npred_conv2d_bias_grad). */
#include "harness.h"
#include "kernels/conv2d_internal.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rnd(size_t n, uint64_t *st)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)th_rand(st);
    return a;
}

/* max over C of |got - ref| / (sum of |terms| + 1e-30): float rounding of a sum
 * of k terms stays below k * 2^-24 of that scale */
static double rel_err(const float *got, const double *ref, const double *scale, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (scale[i] + 1e-30);
        if (!(e <= worst)) worst = e; /* NaN sticks */
    }
    return worst;
}

static void check_nn(int m, int n, int k, int trans, int acc, uint64_t seed)
{
    uint64_t st = seed;
    float *a = rnd((size_t)m * k, &st), *b = rnd((size_t)k * n + 7, &st), *c0 = rnd((size_t)m * (n + 5), &st);
    float *c = malloc(sizeof *c * (size_t)m * (n + 5));
    double *ref = malloc(sizeof *ref * (size_t)m * (n + 5)), *sc = malloc(sizeof *sc * (size_t)m * (n + 5));
    const ptrdiff_t ldc = n + 5, ars = trans ? 1 : k, acs = trans ? m : 1;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n + 5; j++) {
            double s = acc ? c0[i * ldc + j] : 0, g = fabs(s);
            for (int p = 0; p < k; p++) {
                double t = (double)a[i * ars + p * acs] * b[(size_t)p * n + j];
                s += t;
                g += fabs(t);
            }
            /* columns past n must be left alone */
            ref[i * ldc + j] = j < n ? s : c0[i * ldc + j];
            sc[i * ldc + j] = j < n ? g : 1;
        }
    memcpy(c, c0, sizeof *c * (size_t)m * ldc);
    npred_gemm_nn(m, n, k, a, ars, acs, b, n, c, ldc, acc);
    double e = rel_err(c, ref, sc, (size_t)m * ldc);
    CHECK(e <= 4e-7 * (k + 1), "nn m=%d n=%d k=%d trans=%d acc=%d avx512=%d: relative error %g", m, n, k, trans, acc,
          npred_gemm_avx512_active(), e);
    free(a), free(b), free(c0), free(c), free(ref), free(sc);
}

static void check_nt(int m, int l, int n, uint64_t seed)
{
    uint64_t st = seed;
    const ptrdiff_t lda = n + 3, ldb = n + 1, ldc = l + 2;
    float *a = rnd((size_t)m * lda, &st), *b = rnd((size_t)l * ldb, &st), *c0 = rnd((size_t)m * ldc, &st);
    float *c = malloc(sizeof *c * (size_t)m * ldc);
    double *ref = malloc(sizeof *ref * (size_t)m * ldc), *sc = malloc(sizeof *sc * (size_t)m * ldc);
    for (int i = 0; i < m; i++)
        for (int q = 0; q < ldc; q++) {
            double s = c0[i * ldc + q], g = fabs(s);
            for (int p = 0; q < l && p < n; p++) {
                double t = (double)a[i * lda + p] * b[q * ldb + p];
                s += t;
                g += fabs(t);
            }
            ref[i * ldc + q] = s;
            sc[i * ldc + q] = q < l ? g : 1;
        }
    memcpy(c, c0, sizeof *c * (size_t)m * ldc);
    npred_gemm_nt(m, l, n, a, lda, b, ldb, c, ldc);
    double e = rel_err(c, ref, sc, (size_t)m * ldc);
    CHECK(e <= 4e-7 * (n + 1), "nt m=%d l=%d n=%d avx512=%d: relative error %g", m, l, n, npred_gemm_avx512_active(),
          e);
    free(a), free(b), free(c0), free(c), free(ref), free(sc);
}

static void shapes(void)
{
    /* rows: 1, a partial and whole blocks of 6 and 8; columns: partial vectors,
     * 48- and 64-column panels (n % 64 == 0 picks 64), long rows */
    static const int M[] = {1, 3, 6, 8, 13, 64};
    static const int N[] = {1, 15, 17, 48, 64, 100, 128, 257};
    static const int K[] = {1, 7, 64, 81, 300}; /* 300: blocks of 128 along k and a partial one */
    uint64_t seed = 1;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 8; j++)
            for (int q = 0; q < 5; q++) {
                check_nn(M[i], N[j], K[q], 0, (i + j + q) % 2, seed++);
                check_nn(M[i], N[j], K[q], 1, (i + j + q + 1) % 2, seed++);
            }
    /* nt: l over the 16-row transposes and their tails, n over the chunks
     * (8192 / l columns) and the 16-column transposes; l > 512: blocks of 96 rows
     * of B (600 = 6 blocks and a partial one) */
    static const int L[] = {1, 5, 16, 17, 64, 81, 600};
    static const int NN[] = {1, 16, 33, 200, 1568};
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) check_nt(1 + (i + j) % 9, L[i], NN[j], seed++);
    check_nt(64, 64, 1568, seed++);
    check_nt(64, 5184, 1568, seed++); /* the GRU benchmark's 9 x 9 dW */
}

static void test_avx512_kernels(void)
{
    if (!npred_gemm_use_avx512(1)) {
        /* no AVX-512 on this CPU: the fallback test covers what runs here */
        npred_gemm_use_avx512(-1);
        CHECK(npred_gemm_avx512_active() == 0, "AVX-512 reported active on a CPU without it");
        return;
    }
    shapes();
    npred_gemm_use_avx512(-1);
}

static void test_openblas_fallback(void)
{
    CHECK(npred_gemm_use_avx512(0) == 0, "forcing the OpenBLAS kernels did not take");
    shapes();
    npred_gemm_use_avx512(-1);
}

/* nt sums each element over n in order (its chunks store and reload C exactly):
 * the same bits as nn on an explicitly transposed B, whatever the chunk size;
 * l = 70: chunks of 112 columns, 8 full and a partial; l = 600: blocks of 96 rows
 * of B (chunks of 80 columns) and a partial block of 24 (chunks of 336) */
static void nt_order(int m, int l, int n)
{
    uint64_t st = 99;
    float *a = rnd((size_t)m * n, &st), *b = rnd((size_t)l * n, &st), *bt = malloc(sizeof *bt * (size_t)n * l);
    float *c1 = rnd((size_t)m * l, &st), *c2 = malloc(sizeof *c2 * (size_t)m * l);
    memcpy(c2, c1, sizeof *c2 * (size_t)m * l);
    for (int q = 0; q < l; q++)
        for (int p = 0; p < n; p++) bt[(size_t)p * l + q] = b[(size_t)q * n + p];
    npred_gemm_nt(m, l, n, a, n, b, n, c1, l);
    npred_gemm_nn(m, l, n, a, n, 1, bt, l, c2, l, 1);
    CHECK(memcmp(c1, c2, sizeof *c1 * (size_t)m * l) == 0, "nt (l=%d) differs from nn on the transposed operand", l);
    free(a), free(b), free(bt), free(c1), free(c2);
}

/* nn with k in blocks of 128 sums each element over k in order: the same bits as
 * accumulating the k-slices one call at a time */
static void nn_order(int m, int n, int k)
{
    uint64_t st = 7;
    float *a = rnd((size_t)m * k, &st), *b = rnd((size_t)k * n, &st), *c1 = rnd((size_t)m * n, &st);
    float *c2 = malloc(sizeof *c2 * (size_t)m * n);
    npred_gemm_nn(m, n, k, a, k, 1, b, n, c1, n, 0);
    /* slices of 100 (not a multiple of the block): each call starts from the last */
    for (int p0 = 0; p0 < k; p0 += 100) {
        int kb = k - p0 < 100 ? k - p0 : 100;
        npred_gemm_nn(m, n, kb, a + p0, k, 1, b + (size_t)p0 * n, n, c2, n, p0 > 0);
    }
    CHECK(memcmp(c1, c2, sizeof *c1 * (size_t)m * n) == 0, "nn (k=%d) differs from its k-slices accumulated", k);
    free(a), free(b), free(c1), free(c2);
}

static void test_sum_order(void)
{
    if (!npred_gemm_use_avx512(1)) {
        npred_gemm_use_avx512(-1);
        return;
    }
    nt_order(9, 70, 1000);
    nt_order(9, 600, 1000);
    nn_order(13, 100, 1000);
    npred_gemm_use_avx512(-1);
}

/* npred_gemm_nn_bias: bit for bit C filled with the bias then nn accumulated into
 * it, and within float rounding of a double reference */
static void nn_bias_case(int m, int n, int k, int trans, uint64_t seed)
{
    uint64_t st = seed;
    const ptrdiff_t ldc = n + 3, ars = trans ? 1 : k, acs = trans ? m : 1;
    float *a = rnd((size_t)m * k, &st), *b = rnd((size_t)k * n, &st), *bias = rnd((size_t)m, &st);
    float *c1 = rnd((size_t)m * ldc, &st), *c2 = malloc(sizeof *c2 * (size_t)m * ldc);
    double *ref = malloc(sizeof *ref * (size_t)m * ldc), *sc = malloc(sizeof *sc * (size_t)m * ldc);
    memcpy(c2, c1, sizeof *c2 * (size_t)m * ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c2[i * ldc + j] = bias[i];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            double s = bias[i], g = fabs(s);
            for (int p = 0; j < n && p < k; p++) {
                double t = (double)a[i * ars + p * acs] * b[(size_t)p * n + j];
                s += t, g += fabs(t);
            }
            ref[i * ldc + j] = j < n ? s : c1[i * ldc + j]; /* columns past n are left alone */
            sc[i * ldc + j] = j < n ? g : 1;
        }
    npred_gemm_nn_bias(m, n, k, a, ars, acs, b, n, bias, c1, ldc);
    npred_gemm_nn(m, n, k, a, ars, acs, b, n, c2, ldc, 1);
    CHECK(memcmp(c1, c2, sizeof *c1 * (size_t)m * ldc) == 0,
          "nn_bias m=%d n=%d k=%d trans=%d avx512=%d: differs from nn onto the filled bias", m, n, k, trans,
          npred_gemm_avx512_active());
    double e = rel_err(c1, ref, sc, (size_t)m * ldc);
    CHECK(e <= 4e-7 * (k + 1), "nn_bias m=%d n=%d k=%d: relative error %g", m, n, k, e);
    free(a), free(b), free(bias), free(c1), free(c2), free(ref), free(sc);
}

static void test_nn_bias(void)
{
    static const int M[] = {1, 6, 13, 64};
    static const int N[] = {15, 64, 100, 257};
    static const int K[] = {1, 64, 81, 300}; /* 300: the bias starts the first of the k blocks only */
    uint64_t seed = 900;
    for (int mode = 1; mode >= 0; mode--) {
        npred_gemm_use_avx512(mode);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                for (int q = 0; q < 4; q++) nn_bias_case(M[i], N[j], K[q], (i + j + q) % 2, seed++);
    }
    npred_gemm_use_avx512(-1);
}

/* npred_gemm_pointwise_backward: dw += dY X^T and dx (+)= W^T dY against a double
 * reference, and bit for bit against the separate nt and nn calls */
static void pw_case(int m, int l, int n, int acc, int with_dw, int with_dx, uint64_t seed)
{
    uint64_t st = seed;
    float *w = rnd((size_t)m * l, &st), *dy = rnd((size_t)m * n, &st), *x = rnd((size_t)l * n, &st);
    float *dw0 = rnd((size_t)m * l, &st), *dx0 = rnd((size_t)l * n, &st);
    float *dw1 = malloc(sizeof *dw1 * (size_t)m * l), *dw2 = malloc(sizeof *dw2 * (size_t)m * l);
    float *dx1 = malloc(sizeof *dx1 * (size_t)l * n), *dx2 = malloc(sizeof *dx2 * (size_t)l * n);
    memcpy(dw1, dw0, sizeof *dw1 * (size_t)m * l), memcpy(dw2, dw0, sizeof *dw2 * (size_t)m * l);
    memcpy(dx1, dx0, sizeof *dx1 * (size_t)l * n), memcpy(dx2, dx0, sizeof *dx2 * (size_t)l * n);
    npred_gemm_pointwise_backward(m, l, n, with_dx ? w : NULL, dy, with_dw ? x : NULL, with_dw ? dw1 : NULL,
                                  with_dx ? dx1 : NULL, acc);
    if (with_dw) npred_gemm_nt(m, l, n, dy, n, x, n, dw2, l);
    if (with_dx) npred_gemm_nn(l, n, m, w, 1, l, dy, n, dx2, n, acc);
    CHECK(memcmp(dw1, dw2, sizeof *dw1 * (size_t)m * l) == 0 && memcmp(dx1, dx2, sizeof *dx1 * (size_t)l * n) == 0,
          "pointwise backward m=%d l=%d n=%d acc=%d dw=%d dx=%d avx512=%d: differs from nt and nn", m, l, n, acc,
          with_dw, with_dx, npred_gemm_avx512_active());
    /* the same with the bias gradient in the pass: dw and dx unchanged, db the bits
     * of npred_conv2d_bias_grad over the image */
    float *db0 = rnd((size_t)m, &st), *db1 = malloc(sizeof *db1 * (size_t)m), *db2 = malloc(sizeof *db2 * (size_t)m);
    float *dw3 = malloc(sizeof *dw3 * (size_t)m * l), *dx3 = malloc(sizeof *dx3 * (size_t)l * n);
    memcpy(db1, db0, sizeof *db1 * (size_t)m), memcpy(db2, db0, sizeof *db2 * (size_t)m);
    memcpy(dw3, dw0, sizeof *dw3 * (size_t)m * l), memcpy(dx3, dx0, sizeof *dx3 * (size_t)l * n);
    int r = npred_gemm_pointwise_backward_bias(m, l, n, with_dx ? w : NULL, dy, with_dw ? x : NULL,
                                               with_dw ? dw3 : NULL, db1, with_dx ? dx3 : NULL, acc);
    const int expect = npred_gemm_avx512_active() && l <= 512 && m <= 256;
    CHECK(r == (expect ? 0 : -1), "pointwise backward with bias m=%d l=%d: returned %d", m, l, r);
    if (r == 0) {
        npred_conv2d_bias_grad(db2, dy, 1, m, (size_t)n);
        CHECK(memcmp(dw3, dw1, sizeof *dw3 * (size_t)m * l) == 0 && memcmp(dx3, dx1, sizeof *dx3 * (size_t)l * n) == 0 &&
                  memcmp(db1, db2, sizeof *db1 * (size_t)m) == 0,
              "pointwise backward with bias m=%d l=%d n=%d acc=%d: differs from the separate passes", m, l, n, acc);
        double worst = 0;
        for (int i = 0; i < m; i++) {
            double s = db0[i], g = fabs(s);
            for (int p = 0; p < n; p++) s += dy[(size_t)i * n + p], g += fabs(dy[(size_t)i * n + p]);
            double e = fabs(db1[i] - s) / (g + 1e-30);
            if (!(e <= worst)) worst = e;
        }
        CHECK(worst <= 4e-7 * (n / 16 + 17), "pointwise db m=%d n=%d: relative error %g", m, n, worst);
    }
    free(db0), free(db1), free(db2), free(dw3), free(dx3);
    const size_t big = (size_t)l * (n > m ? n : m);
    double *ref = malloc(sizeof *ref * big), *sc = malloc(sizeof *sc * big);
    for (int i = 0; i < m; i++)
        for (int q = 0; q < l; q++) {
            double s = dw0[i * l + q], g = fabs(s);
            for (int p = 0; with_dw && p < n; p++) {
                double t = (double)dy[(size_t)i * n + p] * x[(size_t)q * n + p];
                s += t, g += fabs(t);
            }
            ref[i * l + q] = s, sc[i * l + q] = g;
        }
    double e = rel_err(dw1, ref, sc, (size_t)m * l);
    CHECK(e <= 4e-7 * (n + 1), "pointwise dw m=%d l=%d n=%d: relative error %g", m, l, n, e);
    for (int q = 0; q < l; q++)
        for (int p = 0; p < n; p++) {
            double s = acc || !with_dx ? dx0[(size_t)q * n + p] : 0, g = fabs(s);
            for (int i = 0; with_dx && i < m; i++) {
                double t = (double)w[i * l + q] * dy[(size_t)i * n + p];
                s += t, g += fabs(t);
            }
            ref[(size_t)q * n + p] = s, sc[(size_t)q * n + p] = g;
        }
    e = rel_err(dx1, ref, sc, (size_t)l * n);
    CHECK(e <= 4e-7 * (m + 1), "pointwise dx m=%d l=%d n=%d acc=%d: relative error %g", m, l, n, acc, e);
    free(w), free(dy), free(x), free(dw0), free(dx0), free(dw1), free(dw2), free(dx1), free(dx2), free(ref), free(sc);
}

static void test_pointwise_backward(void)
{
    /* l: tails of the 16-row transposes, 64 (the baseline), over 512 (the separate
     * calls); n: chunks (8192 / l columns) and their tails, the baseline's 1568 */
    static const int L[] = {1, 17, 64, 600};
    static const int N[] = {1, 33, 200, 1568};
    uint64_t seed = 500;
    for (int mode = 1; mode >= 0; mode--) {
        npred_gemm_use_avx512(mode);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) pw_case(1 + (3 * i + j) % 13, L[i], N[j], (i + j) % 2, 1, 1, seed++);
        pw_case(64, 64, 1568, 0, 1, 1, seed++);
        pw_case(64, 64, 1568, 1, 1, 1, seed++);
        pw_case(7, 24, 100, 0, 0, 1, seed++);
        pw_case(7, 24, 100, 1, 1, 0, seed++);
        pw_case(300, 8, 40, 0, 1, 1, seed++); /* more rows than the bias lanes held: refused */
        pw_case(64, 64, 36864 + 5, 1, 1, 1, seed++); /* 144 x 256 and a partial last vector */
    }
    npred_gemm_use_avx512(-1);
}

/* npred_gemm_conv_dw: taps of a (kh x kw, dilation d, row stride sy) filter over c
 * channels of a (hp x wp) input, straight from the input, against nt on the
 * explicit im2col matrix (bit for bit) and a double reference */
static void conv_dw_case(int m, int c, int kh, int kw, int d, int sy, int oh, int ow, uint64_t seed)
{
    uint64_t st = seed;
    const int hp = (oh - 1) * sy + (kh - 1) * d + 1, wp = ow - 1 + (kw - 1) * d + 1 + 3, l = c * kh * kw, n = oh * ow;
    float *x = rnd((size_t)c * hp * wp, &st), *dy = rnd((size_t)m * n, &st), *dw0 = rnd((size_t)m * l, &st);
    float *col = malloc(sizeof *col * (size_t)l * n), *t = malloc(sizeof *t * (size_t)l * m);
    float *dw1 = malloc(sizeof *dw1 * (size_t)m * l), *dw2 = malloc(sizeof *dw2 * (size_t)m * l);
    ptrdiff_t *off = malloc(sizeof *off * (size_t)l);
    double *ref = malloc(sizeof *ref * (size_t)m * l), *sc = malloc(sizeof *sc * (size_t)m * l);
    for (int r = 0; r < l; r++) {
        const int ci = r / (kh * kw), ky = r / kw % kh, kx = r % kw;
        off[r] = ((ptrdiff_t)ci * hp + ky * d) * wp + kx * d;
        for (int y = 0; y < oh; y++)
            for (int q = 0; q < ow; q++) col[(size_t)r * n + y * ow + q] = x[off[r] + (ptrdiff_t)y * sy * wp + q];
    }
    memcpy(dw1, dw0, sizeof *dw1 * (size_t)m * l), memcpy(dw2, dw0, sizeof *dw2 * (size_t)m * l);
    npred_gemm_conv_dw(m, l, oh, ow, dy, x, off, (ptrdiff_t)sy * wp, dw1, l, t);
    npred_gemm_nt(m, l, n, dy, n, col, n, dw2, l);
    if (npred_gemm_avx512_active())
        CHECK(memcmp(dw1, dw2, sizeof *dw1 * (size_t)m * l) == 0,
              "conv dw m=%d c=%d %dx%d d=%d sy=%d %dx%d: differs from nt on the im2col matrix", m, c, kh, kw, d, sy,
              oh, ow);
    for (int i = 0; i < m; i++)
        for (int r = 0; r < l; r++) {
            double s = dw0[i * l + r], g = fabs(s);
            for (int p = 0; p < n; p++) {
                double v = (double)dy[(size_t)i * n + p] * col[(size_t)r * n + p];
                s += v, g += fabs(v);
            }
            ref[i * l + r] = s, sc[i * l + r] = g;
        }
    double e = rel_err(dw1, ref, sc, (size_t)m * l);
    CHECK(e <= 4e-7 * (n + 1), "conv dw m=%d l=%d n=%d avx512=%d: relative error %g", m, l, n,
          npred_gemm_avx512_active(), e);
    free(x), free(dy), free(dw0), free(col), free(t), free(dw1), free(dw2), free(off), free(ref), free(sc);
}

static void test_conv_dw(void)
{
    for (int mode = 1; mode >= 0; mode--) {
        npred_gemm_use_avx512(mode);
        conv_dw_case(64, 1, 9, 9, 1, 1, 28, 56, 700); /* the baseline's first layer */
        conv_dw_case(8, 3, 3, 3, 2, 2, 7, 9, 701);    /* dilation, row stride, a partial panel */
        conv_dw_case(70, 2, 5, 4, 1, 1, 40, 3, 702); /* 48-column panels and a tail; many rows per chunk */
        conv_dw_case(5, 1, 1, 7, 1, 1, 1, 100, 703);
        /* a row of dY^T larger than the chunk buffer: rows cut into column pieces */
        conv_dw_case(64, 1, 3, 3, 1, 1, 3, 300, 704);
        conv_dw_case(40, 2, 2, 3, 1, 2, 2, 250, 705);
        conv_dw_case(600, 1, 1, 2, 1, 1, 2, 20, 706); /* more than 512 rows of dW: the plain loop */
    }
    npred_gemm_use_avx512(-1);
}

int main(void)
{
    RUN(test_avx512_kernels);
    RUN(test_openblas_fallback);
    RUN(test_sum_order);
    RUN(test_nn_bias);
    RUN(test_pointwise_backward);
    RUN(test_conv_dw);
    return th_summary();
}
