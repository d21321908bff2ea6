/* The point readout's sampling in bf16 (readouts/sample_bf16.h) against a
 * double-precision reference written here: bilinear sampling by its definition
 * (PyTorch grid_sample, align_corners false, zero padding) of the features and the
 * feature rows rounded to bf16 by this file's own round-to-nearest-even (th_bf16):
 *   - every output within 10^-6 of its sum of |terms| (fp32 sums of exact bf16
 *     products; the tap weights in fp32; the position in pixels rounded to float
 *     once, as grid_sample does);
 *   - the unrounded double reference is farther away somewhere (bf16 really ran);
 *   - feat is x transposed with npred_rsample_to_nhwc's bits, featb and Fb are feat
 *     and F rounded;
 *   - the same bits with 1 and 2 threads, and twice whatever the scratch held;
 * for 16 channels (half a vector), 32, 48, 64 (the baseline's shapes), 160 (the
 * kernel's general width), neuron counts off the blocks of 16, and points near and
 * past the borders (taps outside the map). On a CPU without AVX-512 BF16 the kernel
 * must be refused. */
#include "harness.h"
#include "kernels/gemm.h"
#include "readouts/sample.h"
#include "readouts/sample_bf16.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float *rnd(size_t n, uint64_t *st, double scale, double shift)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)(shift + scale * th_rand(st));
    return a;
}

static double from_bf16(uint16_t v)
{
    union { uint32_t u; float f; } w = {(uint32_t)v << 16};
    return w.f;
}

/* the double reference of output (b, o): y0 + sum over the inside taps of weight x
 * sum_c F . feat (rounded: both to bf16); mag: the sum of |terms| */
static double reference(double *mag, const float *x, const float *F, float y0, const float *g, int C, int H, int W,
                        int o, int rounded)
{
    /* the position in pixels as grid_sample rounds it to float (x + 1) * W / 2 - 1/2,
     * one rounding; the distances to the cell's sides are then exact */
    const float px = fmaf(g[0] + 1.0f, (float)W / 2.0f, -0.5f), py = fmaf(g[1] + 1.0f, (float)H / 2.0f, -0.5f);
    const double x0 = floor(px), y0f = floor(py), wx = px - x0, wy = py - y0f;
    double s = y0, m = fabs(y0);
    for (int t = 0; t < 4; t++) {
        const int xx = (int)x0 + (t & 1), yy = (int)y0f + (t >> 1);
        if (xx < 0 || xx >= W || yy < 0 || yy >= H) continue;
        const double wt = ((t & 1) ? wx : 1.0 - wx) * ((t >> 1) ? wy : 1.0 - wy);
        for (int c = 0; c < C; c++) {
            const double f = rounded ? th_bf16(F[(size_t)o * C + c]) : F[(size_t)o * C + c];
            const double v = x[((size_t)c * H + yy) * W + xx];
            const double p = f * (rounded ? th_bf16((float)v) : v);
            s += wt * p;
            m += fabs(wt * p);
        }
    }
    *mag = m;
    return s;
}

static void check(int B, int C, int H, int W, int n, uint64_t seed)
{
    uint64_t st = seed;
    const size_t img = (size_t)H * W * C, np = (size_t)B * n;
    float *x = rnd(B * img, &st, 1.0, 0.0), *F = rnd((size_t)n * C, &st, 0.5, 0.0);
    float *y0 = rnd(np, &st, 0.2, 0.0), *grid = rnd(2 * np, &st, 1.1, 0.0); /* some past the borders */
    for (size_t i = 0; i < 2 * np && i < 8; i += 2) grid[i] = i < 4 ? -1.0f : 1.0f; /* on the borders */
    float *frac = malloc(2 * np * sizeof *frac), *feat = malloc(B * img * sizeof *feat);
    float *feat_ref = malloc(B * img * sizeof *feat_ref);
    uint32_t *key = malloc(np * sizeof *key);
    CHECK(npred_rsample_cells(key, frac, grid, np, H, W, 0), "cells of %dx%d refused", H, W);
    uint16_t *featb = malloc(npred_rsample_bf16_feat_words(B, H, W, C) * 4);
    uint16_t *Fb = malloc((size_t)n * C * sizeof *Fb);
    float *y[3];
    for (int r = 0; r < 3; r++) { /* 1, 2 threads, then 1 again on scratch full of NaN */
        y[r] = malloc(np * sizeof *y[r]);
        memcpy(y[r], y0, np * sizeof *y0);
        memset(feat, 0xFF, B * img * sizeof *feat);
        memset(featb, 0xFF, npred_rsample_bf16_feat_words(B, H, W, C) * 4);
        memset(Fb, 0xFF, (size_t)n * C * sizeof *Fb);
        omp_set_num_threads(r == 1 ? 2 : 1);
        npred_rsample_forward_cells_nchw_bf16(y[r], feat, featb, Fb, x, key, frac, F, B, H, W, C, n);
    }
    omp_set_num_threads(1);
    CHECK(!memcmp(y[0], y[1], np * sizeof *y[0]) && !memcmp(y[0], y[2], np * sizeof *y[0]),
          "B %d C %d %dx%d n %d: not the same bits with 1 and 2 threads / twice", B, C, H, W, n);
    npred_rsample_to_nhwc(feat_ref, x, B, C, H * W);
    CHECK(!memcmp(feat, feat_ref, B * img * sizeof *feat), "C %d: feat is not x transposed", C);
    int rounded_ok = 1;
    for (size_t i = 0; i < B * img; i++) rounded_ok &= from_bf16(featb[i]) == th_bf16(feat[i]);
    for (size_t i = 0; i < (size_t)n * C; i++) rounded_ok &= from_bf16(Fb[i]) == th_bf16(F[i]);
    CHECK(rounded_ok, "C %d: featb / Fb are not feat / F rounded to bf16", C);
    double worst = 0, far = 0;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++) {
            const size_t p = (size_t)b * n + o;
            double mag, mag_u;
            const double ref = reference(&mag, x + b * img, F, y0[p], grid + 2 * p, C, H, W, o, 1);
            const double unr = reference(&mag_u, x + b * img, F, y0[p], grid + 2 * p, C, H, W, o, 0);
            worst = th_worst(worst, fabs(y[0][p] - ref) / (mag + 1e-30));
            far = th_worst(far, fabs(y[0][p] - unr) / (mag_u + 1e-30));
        }
    CHECK(worst <= 1e-6, "B %d C %d %dx%d n %d: error %.3g of the sum of |terms| (bound 1e-6)", B, C, H, W, n, worst);
    CHECK(far >= 1e-4, "B %d C %d %dx%d n %d: the unrounded reference is only %.3g away (bf16 ran?)", B, C, H, W, n,
          far);
    printf("  B %d C %d %dx%d n %d: worst %.2e of the sum of |terms|, unrounded reference %.2e away\n", B, C, H, W, n,
           worst, far);
    for (int r = 0; r < 3; r++) free(y[r]);
    free(x), free(F), free(y0), free(grid), free(frac), free(feat), free(feat_ref), free(key), free(featb), free(Fb);
}

static void test_sampling(void)
{
    if (!npred_gemm_bf16_available()) {
        CHECK(!npred_rsample_bf16_supported(64), "bf16 sampling claimed without AVX-512 BF16");
        return;
    }
    CHECK(npred_rsample_bf16_supported(16) && npred_rsample_bf16_supported(64) && npred_rsample_bf16_supported(160),
          "16 / 64 / 160 channels refused");
    CHECK(!npred_rsample_bf16_supported(0) && !npred_rsample_bf16_supported(24) && !npred_rsample_bf16_supported(65),
          "0 / 24 / 65 channels accepted");
    check(3, 16, 5, 7, 37, 1);  /* half a vector; blocks of 16, 16, 5 */
    check(2, 32, 4, 9, 16, 2);
    check(2, 48, 6, 5, 21, 3);  /* a vector and a half */
    check(2, 160, 3, 4, 19, 4); /* five vectors: the general width */
    check(3, 64, 28, 56, 7776, 5); /* the baseline's readout (threads share the images) */
}

int main(void)
{
    RUN(test_sampling);
    return th_summary();
}
