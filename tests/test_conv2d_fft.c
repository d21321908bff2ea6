/* The FFT convolution (kernels/conv2d_fft.h) against a direct double-precision
 * convolution written here, for many shapes (kernel sizes 1..17, non-square kernels,
 * padding, dilation, odd sizes, channel counts that are not multiples of 16, both FFT
 * sizes, tiles cut by the image border, with and without bias), on the AVX-512 and the
 * generic code; an image alone equals the same image in a batch bit for bit, and 1
 * thread equals 2; unsupported convolutions and small workspaces are refused.
 *
 * Error bound, per output plane (image, output channel o), with u = 2^-24:
 *
 *   ||y_fft - y||_2 <= eps * sqrt(kappa) * sum_c ||x_c||_2 ||w_oc||_1 + 2u ||y||_2
 *   eps = (4 log2(n) * 7 + 2C + 8) u,   kappa = ceil(n / v_h) * ceil(n / v_w)
 *
 * Why: per tile, a radix-2 FFT of N points has a relative 2-norm error of at most
 * log2(N) * eta with eta = mu + gamma_4 (sqrt 2 + mu) < 7u (Higham, Accuracy and
 * Stability of Numerical Algorithms, thm. 24.2; mu, the twiddles' error, < u); the 2-D
 * transform of n x n points has log2(N) = 2 log2(n), and a tile passes one forward and
 * one inverse transform (4 log2(n) * 7u; the symmetric splits of two real columns add
 * exact halvings and one rounded sum each, inside the 8u). The sum over C input channels
 * of complex products adds at most gamma_2C of the sum of magnitudes. By Parseval
 * (||F z||_2 = n ||z||_2 for n x n points) and |W(f)| <= ||w||_1, a tile's error is
 * below eps * sum_c ||x_c,tile||_2 ||w_oc||_1; the windows overlap, each input pixel
 * being in at most kappa of them, hence sqrt(kappa) for the plane; the bias adds one
 * rounding (2u ||y||_2 covers it with the final rounding to float). The bound is first
 * order (terms in u^2 dropped) and worst case: the measured errors are 10 to 100 times
 * smaller (printed). A wrong index or twiddle gives errors of the order of ||y||. */
#include "harness.h"
#include "kernels/conv2d_fft.h"
#include "kernels/gemm.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n, c, h, w, o, kh, kw, ph, pw, dh, dw, bias;
} shape;

static float *rnd(size_t n, uint64_t *st, double scale)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)(scale * th_rand(st));
    return a;
}

/* y (N, O, OH, OW) in double, direct sums */
static void direct(double *y, const float *x, const float *w, const float *b, const npred_conv2d_params *p, int oh,
                   int ow)
{
    for (int n = 0; n < p->n; n++)
        for (int o = 0; o < p->o; o++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double s = b ? b[o] : 0.0;
                    for (int c = 0; c < p->c; c++)
                        for (int ky = 0; ky < p->kh; ky++) {
                            int iy = oy + ky * p->dil_h - p->pad_h;
                            if (iy < 0 || iy >= p->h) continue;
                            for (int kx = 0; kx < p->kw; kx++) {
                                int ix = ox + kx * p->dil_w - p->pad_w;
                                if (ix < 0 || ix >= p->w) continue;
                                s += (double)w[(((size_t)o * p->c + c) * p->kh + ky) * p->kw + kx] *
                                     x[(((size_t)n * p->c + c) * p->h + iy) * p->w + ix];
                            }
                        }
                    y[(((size_t)n * p->o + o) * oh + oy) * ow + ox] = s;
                }
}

static int span(int k, int d) { return d * (k - 1) + 1; }

/* the worst ratio of a plane's error to its bound (NaN if any output is NaN) */
static double check_bound(const float *got, const double *ref, const float *x, const float *w,
                          const npred_conv2d_params *p, int oh, int ow)
{
    int sh = span(p->kh, p->dil_h), sw = span(p->kw, p->dil_w), n = sh <= 9 && sw <= 9 ? 16 : 32;
    int vh = n - sh + 1, vw = n - sw + 1;
    double kappa = (double)((n + vh - 1) / vh) * ((n + vw - 1) / vw), u = ldexp(1.0, -24);
    double eps = (4.0 * log2(n) * 7.0 + 2.0 * p->c + 8.0) * u, worst = 0;
    size_t plane = (size_t)oh * ow, hw = (size_t)p->h * p->w, kk = (size_t)p->kh * p->kw;
    for (int im = 0; im < p->n; im++)
        for (int o = 0; o < p->o; o++) {
            double s = 0;
            for (int c = 0; c < p->c; c++) {
                double xn = 0, w1 = 0;
                for (size_t i = 0; i < hw; i++) {
                    double v = x[((size_t)im * p->c + c) * hw + i];
                    xn += v * v;
                }
                for (size_t i = 0; i < kk; i++) w1 += fabs((double)w[((size_t)o * p->c + c) * kk + i]);
                s += sqrt(xn) * w1;
            }
            double e2 = 0, y2 = 0;
            for (size_t i = 0; i < plane; i++) {
                size_t j = ((size_t)im * p->o + o) * plane + i;
                double d = (double)got[j] - ref[j];
                e2 += d * d, y2 += ref[j] * ref[j];
            }
            double bound = eps * sqrt(kappa) * s + 2.0 * u * sqrt(y2) + 1e-30;
            worst = th_worst(worst, sqrt(e2) / bound);
        }
    return worst;
}

static npred_conv2d_params params_of(const shape *s)
{
    npred_conv2d_params p = {.n = s->n, .c = s->c, .h = s->h, .w = s->w, .o = s->o, .kh = s->kh, .kw = s->kw,
                             .stride_h = 1, .stride_w = 1, .pad_h = s->ph, .pad_w = s->pw, .dil_h = s->dh,
                             .dil_w = s->dw, .groups = 1};
    return p;
}

static const shape shapes[] = {
    /* n  c   h   w   o  kh kw ph pw dh dw bias */
    {1, 3, 36, 64, 16, 9, 9, 0, 0, 1, 1, 1},   /* the GRU benchmark's first core layer (fewer outputs) */
    {1, 64, 28, 56, 40, 7, 7, 3, 3, 1, 1, 1},  /* its hidden layers (fewer outputs) */
    {1, 64, 28, 56, 36, 9, 9, 4, 4, 1, 1, 1},  /* its ConvGRU (fewer outputs) */
    {2, 5, 13, 17, 7, 5, 5, 2, 2, 1, 1, 1},    /* odd sizes */
    {2, 17, 11, 9, 33, 3, 3, 1, 1, 2, 2, 0},   /* dilation 2, no bias */
    {1, 4, 40, 37, 20, 13, 13, 6, 6, 1, 1, 1}, /* FFT size 32 */
    {1, 3, 30, 30, 5, 5, 5, 8, 8, 4, 4, 1},    /* span 17, padding beyond the span's half */
    {1, 6, 19, 23, 18, 3, 7, 1, 3, 1, 1, 1},   /* non-square kernel */
    {1, 2, 9, 9, 3, 9, 9, 0, 0, 1, 1, 1},      /* one output pixel */
    {3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* 1 x 1 */
    {1, 16, 8, 8, 16, 1, 1, 0, 0, 1, 1, 0},    /* pointwise */
    {1, 9, 12, 50, 48, 3, 3, 1, 1, 1, 3, 1},   /* different dilations per axis */
    {2, 20, 7, 31, 17, 7, 5, 0, 2, 1, 1, 1},   /* kernel as high as the image */
};

static void test_against_direct(void)
{
    for (int pass = 0; pass < 2; pass++) { /* the AVX-512 code, then the generic one */
        npred_gemm_use_avx512(pass == 0 ? -1 : 0);
        double worst_all = 0;
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            const shape *s = &shapes[k];
            npred_conv2d_params p = params_of(s);
            int oh = s->h + 2 * s->ph - span(s->kh, s->dh) + 1, ow = s->w + 2 * s->pw - span(s->kw, s->dw) + 1;
            if (!CHECK(npred_conv2d_fft_supported(&p), "shape %zu: not supported", k)) continue;
            uint64_t st = 1000 + k;
            size_t nx = (size_t)s->n * s->c * s->h * s->w, nw = (size_t)s->o * s->c * s->kh * s->kw,
                   ny = (size_t)s->n * s->o * oh * ow;
            float *x = rnd(nx, &st, 1.0), *w = rnd(nw, &st, 1.0 / sqrt((double)s->c * s->kh * s->kw)),
                  *b = s->bias ? rnd((size_t)s->o, &st, 0.5) : NULL;
            float *wf = malloc(npred_conv2d_fft_weights_floats(&p) * sizeof *wf), *y = malloc(ny * sizeof *y);
            double *ref = malloc(ny * sizeof *ref);
            for (size_t i = 0; i < ny; i++) y[i] = NAN;
            direct(ref, x, w, b, &p, oh, ow);
            if (CHECK_OK(npred_conv2d_fft_weights(wf, w, &p)) &&
                CHECK_OK(npred_conv2d_fft_forward(y, x, wf, b, &p, NULL, 0))) {
                double r = check_bound(y, ref, x, w, &p, oh, ow);
                CHECK(r <= 1.0, "%s shape %zu (%dx%dx%dx%d -> %d, k %dx%d, pad %d/%d, dil %d/%d): error %.3g of the bound",
                      pass ? "generic" : "avx512", k, s->n, s->c, s->h, s->w, s->o, s->kh, s->kw, s->ph, s->pw,
                      s->dh, s->dw, r);
                worst_all = th_worst(worst_all, r);
            }
            free(x), free(w), free(b), free(wf), free(y), free(ref);
        }
        printf("  %s: worst plane error %.3g of the bound\n", pass ? "generic" : "avx512", worst_all);
    }
    npred_gemm_use_avx512(-1);
}

/* an image alone = the same image inside a batch; 1 thread = 2 threads; bit for bit */
static void test_invariance(void)
{
    shape s = {3, 24, 21, 30, 40, 9, 9, 4, 4, 1, 1, 1};
    npred_conv2d_params p = params_of(&s), p1 = p;
    p1.n = 1;
    uint64_t st = 77;
    size_t nx = (size_t)s.n * s.c * s.h * s.w, plane = (size_t)s.o * s.h * s.w, ny = s.n * plane;
    float *x = rnd(nx, &st, 1.0), *w = rnd((size_t)s.o * s.c * 81, &st, 0.05), *b = rnd((size_t)s.o, &st, 0.5);
    float *wf = malloc(npred_conv2d_fft_weights_floats(&p) * sizeof *wf), *y = malloc(ny * sizeof *y),
          *y2 = malloc(ny * sizeof *y2), *one = malloc(plane * sizeof *one);
    int dflt = omp_get_max_threads();
    if (CHECK_OK(npred_conv2d_fft_weights(wf, w, &p))) {
        omp_set_num_threads(2);
        CHECK_OK(npred_conv2d_fft_forward(y, x, wf, b, &p, NULL, 0));
        omp_set_num_threads(1);
        CHECK_OK(npred_conv2d_fft_forward(y2, x, wf, b, &p, NULL, 0));
        CHECK(!memcmp(y, y2, ny * sizeof *y), "1 thread differs from 2");
        CHECK_OK(npred_conv2d_fft_forward(one, x + (size_t)s.c * s.h * s.w, wf, b, &p1, NULL, 0));
        CHECK(!memcmp(one, y + plane, plane * sizeof *one), "an image alone differs from the same image in a batch");
        /* a workspace for 1 thread runs 2 threads' call on 1, with the same result */
        omp_set_num_threads(2);
        size_t wb = npred_conv2d_fft_workspace_size(&p, 1);
        void *ws = malloc(wb);
        memset(y2, 0, ny * sizeof *y2);
        CHECK_OK(npred_conv2d_fft_forward(y2, x, wf, b, &p, ws, wb));
        CHECK(!memcmp(y, y2, ny * sizeof *y), "a smaller workspace changed the result");
        CHECK(npred_conv2d_fft_forward(y2, x, wf, b, &p, ws, wb / 2) == NPRED_ERR_ARG, "half a workspace accepted");
        free(ws);
    }
    omp_set_num_threads(dflt);
    free(x), free(w), free(b), free(wf), free(y), free(y2), free(one);
}

static void test_refusals_and_policy(void)
{
    npred_conv2d_params ok = npred_conv2d_params_square(1, 16, 20, 20, 8, 7, 1, 3, 1, 1), q;
    CHECK(npred_conv2d_fft_supported(&ok), "7x7 stride 1 not supported");
    q = ok, q.groups = 2;
    CHECK(!npred_conv2d_fft_supported(&q), "groups 2 supported");
    q = ok, q.stride_h = 2;
    CHECK(!npred_conv2d_fft_supported(&q), "stride 2 supported");
    q = ok, q.kh = q.kw = 19, q.pad_h = q.pad_w = 9;
    CHECK(!npred_conv2d_fft_supported(&q), "span 19 supported");
    q = ok, q.kh = 9, q.dil_h = 3;
    CHECK(!npred_conv2d_fft_supported(&q), "span 25 supported");
    q = ok, q.kh = 23, q.pad_h = 0;
    CHECK(!npred_conv2d_fft_supported(&q), "a kernel larger than the padded image supported");
    CHECK(npred_conv2d_fft_weights_floats(&q) == 0 && npred_conv2d_fft_workspace_size(&q, 1) == 0, "sizes of an "
          "unsupported convolution");
    float v = 0;
    CHECK(npred_conv2d_fft_weights(&v, &v, &q) == NPRED_ERR_ARG, "weights of an unsupported convolution");
    CHECK(npred_conv2d_fft_forward(&v, &v, &v, NULL, &q, NULL, 0) == NPRED_ERR_ARG, "forward of an unsupported one");
    CHECK(npred_conv2d_fft_forward(NULL, &v, &v, NULL, &ok, NULL, 0) == NPRED_ERR_ARG, "y NULL accepted");
    /* the policy */
    npred_conv2d_params k3 = npred_conv2d_params_square(1, 16, 20, 20, 8, 3, 1, 1, 1, 1), c3 = ok;
    c3.c = 15;
    CHECK(npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_AUTO) == NPRED_CONV2D_FFT_AUTO, "auto");
    CHECK(npred_conv2d_fft_use(&ok) && !npred_conv2d_fft_use(&k3) && !npred_conv2d_fft_use(&c3),
          "auto: 7x7 on 16 channels by FFT, 3x3 and 7x7 on 15 channels direct");
    CHECK(npred_conv2d_fft_set_mode(-1) == NPRED_CONV2D_FFT_AUTO, "-1 changed the mode");
    CHECK(npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_ALWAYS) == NPRED_CONV2D_FFT_ALWAYS, "always");
    CHECK(npred_conv2d_fft_use(&ok) && npred_conv2d_fft_use(&k3) && npred_conv2d_fft_use(&c3) &&
          !npred_conv2d_fft_use(&q), "always: the supported ones");
    CHECK(npred_conv2d_fft_set_mode(7) == NPRED_CONV2D_FFT_ALWAYS, "an unknown mode changed it");
    CHECK(npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_NEVER) == NPRED_CONV2D_FFT_NEVER && !npred_conv2d_fft_use(&ok),
          "never");
    npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_AUTO);
}

/* a NaN input reaches the outputs whose window holds it (no silent zero) */
static void test_nan(void)
{
    npred_conv2d_params p = npred_conv2d_params_square(1, 2, 10, 10, 3, 5, 1, 2, 1, 1);
    uint64_t st = 5;
    float *x = rnd(200, &st, 1.0), *w = rnd(150, &st, 0.1), y[300];
    float *wf = malloc(npred_conv2d_fft_weights_floats(&p) * sizeof *wf);
    x[55] = NAN;
    if (CHECK_OK(npred_conv2d_fft_weights(wf, w, &p)) && CHECK_OK(npred_conv2d_fft_forward(y, x, wf, NULL, &p, NULL, 0)))
        CHECK(isnan(y[55]) && isnan(y[100 + 55]), "NaN lost");
    free(x), free(w), free(wf);
}

int main(void)
{
    RUN(test_against_direct);
    RUN(test_invariance);
    RUN(test_refusals_and_policy);
    RUN(test_nan);
    return th_summary();
}
