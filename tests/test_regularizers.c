/* Regularizers: Laplace family, Gaussian-masked Laplace, group sparsity.
 * Gradients are checked against central differences of the double-precision
 * reference forwards below (dense filters, explicit broadcasting). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/regularizers.h"

enum { REF_L2, REF_L2NORM, REF_GAUSS, REF_L1 };

/* Laplace filters as the spec lists them; 7x7 is its first four rows mirrored. */
static void ref_filter(double *out, int f)
{
    static const double l3[9] = {0, -1, 0, -1, 4, -1, 0, -1, 0};
    static const double l5[25] = {0, 0, 1, 0, 0, 0, 1, 2, 1, 0, 1, 2, -16,
                                  2, 1, 0, 1, 2, 1, 0, 0, 0, 1, 0, 0};
    static const double l7top[28] = {0, 0, 1, 1, 1, 0, 0, 0, 1, 3, 3,  3, 1, 0,
                                     1, 3, 0, -7, 0, 3, 1, 1, 3, -7, -24, -7, 3, 1};
    if (f == 3)
        memcpy(out, l3, sizeof l3);
    else if (f == 5)
        memcpy(out, l5, sizeof l5);
    else
        for (int u = 0; u < 7; u++)
            memcpy(out + u * 7, l7top + (u < 4 ? u : 6 - u) * 7, 7 * sizeof(double));
}

/* normalised 2-D Gaussian on an (h, w) grid centred on its middle */
static void ref_gauss(double *g, int h, int w, double sigma)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++) {
            double x = a - 0.5 * (h - 1), y = b - 0.5 * (w - 1);
            double v = exp(-(x * x + y * y) / (2.0 * sigma * sigma));
            g[a * w + b] = v;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
    for (int i = 0; i < h * w; i++)
        g[i] = (g[i] - lo) / (hi - lo);
}

typedef struct {
    int kind, o, i, kh, kw, pad, f, avg;
    double sigma; /* REF_GAUSS; <= 0: min(kh, kw) / 4 */
} cfg;

static double ref_value(const double *w, const cfg *c)
{
    int f = c->kind == REF_L2 ? c->f : 3;
    int pad = c->pad < 0 ? f / 2 : c->pad;
    int ho = c->kh + 2 * pad - f + 1, wo = c->kw + 2 * pad - f + 1, plane = c->kh * c->kw;
    int slices = c->o * c->i;
    double filt[49], mask[1024], out[1024];
    ref_filter(filt, f);
    if (c->kind == REF_GAUSS) {
        double sigma = c->sigma > 0 ? c->sigma : fmin(c->kh, c->kw) / 4.0;
        ref_gauss(mask, c->kh, c->kw, sigma);
    }
    double num = 0.0, den = 0.0, nnum = 0.0;
    for (int s = 0; s < slices; s++) {
        const double *ws = w + s * plane;
        for (int p = 0; p < ho; p++)
            for (int q = 0; q < wo; q++) {
                double acc = 0.0;
                for (int u = 0; u < f; u++)
                    for (int v = 0; v < f; v++) {
                        int y = p + u - pad, x = q + v - pad;
                        if (y >= 0 && y < c->kh && x >= 0 && x < c->kw)
                            acc += filt[u * f + v] * ws[y * c->kw + x];
                    }
                out[p * wo + q] = acc;
            }
        if (c->kind == REF_GAUSS) {
            for (int a = 0; a < c->kh; a++)
                for (int b = 0; b < c->kw; b++) {
                    double o = out[(ho == 1 ? 0 : a) * wo + (wo == 1 ? 0 : b)];
                    double t = o * (1.0 - mask[a * c->kw + b]);
                    num += t * t;
                    nnum += 1;
                }
        } else {
            for (int k = 0; k < ho * wo; k++) {
                num += c->kind == REF_L1 ? fabs(out[k]) : out[k] * out[k];
                nnum += 1;
            }
        }
        for (int k = 0; k < plane; k++)
            den += ws[k] * ws[k];
    }
    double nden = (double)slices * plane;
    if (c->kind == REF_L2)
        return (c->avg ? num / nnum : num) / 2.0;
    if (c->kind == REF_L1)
        return c->avg ? num / nnum : num;
    return c->avg ? (num / nnum) / (den / nden) : num / den;
}

static double ref_group(const double *w, const cfg *c)
{
    int slices = c->o * c->i, plane = c->kh * c->kw;
    double acc = 0.0;
    for (int s = 0; s < slices; s++) {
        double ss = 0.0;
        for (int k = 0; k < plane; k++)
            ss += w[s * plane + k] * w[s * plane + k];
        acc += sqrt(ss);
    }
    return acc / slices;
}

static npred_status run_kernel(double *value, float *dw, const float *w, double scale, const cfg *c)
{
    switch (c->kind) {
    case REF_L2:
        return npred_reg_laplace_l2(value, dw, w, scale, c->o, c->i, c->kh, c->kw, c->pad, c->f,
                                    c->avg);
    case REF_L1:
        return npred_reg_laplace_l1(value, dw, w, scale, c->o, c->i, c->kh, c->kw, c->pad, c->avg);
    case REF_L2NORM:
        return npred_reg_laplace_l2norm(value, dw, w, scale, c->o, c->i, c->kh, c->kw, c->pad,
                                        c->avg);
    default:
        return npred_reg_gaussian_laplace_l2(value, dw, w, scale, c->o, c->i, c->kh, c->kw, c->pad,
                                             c->sigma, c->avg);
    }
}

/* Value against the double reference, and the accumulated gradient (on top of
 * random prior contents, times `scale`) against central differences. If
 * group is set, the kernel is group sparsity and groups listed as zero in
 * zero_group are left at exactly zero. */
static void check_case(const cfg *c, int group, int zero_group, uint64_t seed)
{
    int n = c->o * c->i * c->kh * c->kw, plane = c->kh * c->kw;
    float *w = malloc(n * sizeof *w), *dw = malloc(n * sizeof *dw), *dw0 = malloc(n * sizeof *dw0);
    double *wd = malloc(n * sizeof *wd), *fd = malloc(n * sizeof *fd), *got = malloc(n * sizeof *got);
    for (int k = 0; k < n; k++) {
        w[k] = (float)th_rand(&seed);
        dw0[k] = dw[k] = (float)(0.5 * th_rand(&seed));
    }
    if (zero_group >= 0)
        memset(w + zero_group * plane, 0, plane * sizeof *w);
    for (int k = 0; k < n; k++)
        wd[k] = w[k];
    const double scale = 0.7, eps = 1e-6;
    double value = NAN, ref = group ? ref_group(wd, c) : ref_value(wd, c);
    npred_status st = group ? npred_reg_group_sparsity(&value, dw, w, scale, c->o, c->i, c->kh, c->kw)
                            : run_kernel(&value, dw, w, scale, c);
    CHECK(st == NPRED_OK, "status %d: %s", st, npred_last_error());
    /* the kernel rounds the Gaussian mask to float, as the reference does */
    double vtol = c->kind == REF_GAUSS && !group ? 1e-6 : 1e-10;
    CHECK(fabs(value - ref) <= vtol * fabs(ref) + 1e-12, "kind %d (%d,%d,%d,%d) pad %d f %d: value %.12g vs ref %.12g",
          c->kind, c->o, c->i, c->kh, c->kw, c->pad, c->f, value, ref);
    for (int k = 0; k < n; k++) {
        double keep = wd[k];
        wd[k] = keep + eps;
        double fp = group ? ref_group(wd, c) : ref_value(wd, c);
        wd[k] = keep - eps;
        double fm = group ? ref_group(wd, c) : ref_value(wd, c);
        wd[k] = keep;
        fd[k] = scale * (fp - fm) / (2 * eps);
        got[k] = (double)dw[k] - dw0[k];
    }
    if (zero_group >= 0) { /* not differentiable there; defined as 0 */
        for (int k = zero_group * plane; k < (zero_group + 1) * plane; k++) {
            CHECK(dw[k] == dw0[k], "zero group: dw[%d] changed", k);
            fd[k] = got[k] = 0.0;
        }
    }
    CHECK(th_close_f64("dw vs finite differences", got, fd, n, 1e-4, 2e-6),
          "kind %d group %d (%d,%d,%d,%d) pad %d f %d avg %d", c->kind, group, c->o, c->i, c->kh,
          c->kw, c->pad, c->f, c->avg);
    /* value only (dw NULL) and gradient only (value NULL) agree with the full call */
    double v2 = NAN;
    st = group ? npred_reg_group_sparsity(&v2, NULL, w, scale, c->o, c->i, c->kh, c->kw)
               : run_kernel(&v2, NULL, w, scale, c);
    CHECK(st == NPRED_OK && v2 == value, "value-only call: %.17g vs %.17g", v2, value);
    memcpy(dw0, dw, n * sizeof *dw);
    st = group ? npred_reg_group_sparsity(NULL, dw, w, 0.0, c->o, c->i, c->kh, c->kw)
               : run_kernel(NULL, dw, w, 0.0, c);
    CHECK(st == NPRED_OK && memcmp(dw0, dw, n * sizeof *dw) == 0, "scale 0 must leave dw unchanged");
    free(w); free(dw); free(dw0); free(wd); free(fd); free(got);
}

static void test_filters(void)
{
    for (int f = 3; f <= 7; f += 2) {
        double ref[49];
        ref_filter(ref, f);
        const float *got = npred_reg_laplace_filter(f);
        CHECK(got != NULL, "filter %d missing", f);
        if (!got)
            continue;
        double sum = 0.0;
        for (int k = 0; k < f * f; k++) {
            CHECK(got[k] == ref[k], "filter %d [%d] = %g, expected %g", f, k, got[k], ref[k]);
            sum += got[k];
        }
        CHECK(sum == 0.0, "filter %d sums to %g", f, sum);
    }
    CHECK(npred_reg_laplace_filter(4) == NULL && npred_reg_laplace_filter(9) == NULL,
          "only 3, 5 and 7 exist");
}

static void test_laplace_l2_grad(void)
{
    static const cfg cases[] = {
        {REF_L2, 2, 3, 5, 4, 0, 3, 1, 0}, {REF_L2, 3, 1, 3, 3, 0, 3, 0, 0},
        {REF_L2, 1, 2, 4, 5, -1, 3, 1, 0}, {REF_L2, 2, 1, 6, 5, 2, 3, 0, 0},
        {REF_L2, 1, 1, 1, 1, 1, 3, 1, 0}, {REF_L2, 2, 2, 5, 7, 0, 5, 1, 0},
        {REF_L2, 1, 3, 3, 4, -1, 5, 0, 0}, {REF_L2, 1, 1, 5, 5, 1, 5, 1, 0},
        {REF_L2, 1, 2, 7, 9, 0, 7, 1, 0}, {REF_L2, 2, 1, 5, 3, -1, 7, 0, 0},
        {REF_L2, 1, 1, 2, 3, 3, 7, 1, 0}, {REF_L2, 1, 1, 9, 8, 1, 7, 0, 0},
        {REF_L2, 1, 2, 23, 21, 1, 3, 1, 0}, /* scratch beyond the stack buffer */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        check_case(&cases[k], 0, -1, 100 + k);
}

static void test_laplace_l2norm_grad(void)
{
    static const cfg cases[] = {
        {REF_L2NORM, 2, 3, 5, 4, -1, 3, 0, 0}, {REF_L2NORM, 2, 3, 5, 4, -1, 3, 1, 0},
        {REF_L2NORM, 3, 1, 3, 3, 0, 3, 0, 0},  {REF_L2NORM, 1, 2, 7, 5, 0, 3, 1, 0},
        {REF_L2NORM, 2, 1, 2, 1, 2, 3, 0, 0},  {REF_L2NORM, 1, 1, 1, 1, 1, 3, 1, 0},
        {REF_L2NORM, 1, 3, 9, 9, 1, 3, 1, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        check_case(&cases[k], 0, -1, 200 + k);
}

/* LaplaceL1 (module default padding 0, Stacked2dCore's laplace_padding, None -> 1);
 * random weights keep every filtered value away from the kink at 0 */
static void test_laplace_l1_grad(void)
{
    static const cfg cases[] = {
        {REF_L1, 2, 3, 5, 4, 0, 3, 1, 0},  {REF_L1, 3, 1, 3, 3, 0, 3, 0, 0},
        {REF_L1, 1, 2, 4, 5, -1, 3, 1, 0}, {REF_L1, 2, 1, 6, 5, 2, 3, 0, 0},
        {REF_L1, 1, 2, 23, 21, 1, 3, 1, 0}, /* scratch beyond the stack buffer */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        check_case(&cases[k], 0, -1, 500 + k);
}

/* |x| has gradient 0 at 0: an all-zero slice gets none */
static void test_laplace_l1_zero(void)
{
    float w[9] = {0}, dw[9] = {0};
    double v = -1;
    CHECK_OK(npred_reg_laplace_l1(&v, dw, w, 1.0, 1, 1, 3, 3, 1, true));
    int zero = 1;
    for (int k = 0; k < 9; k++) zero &= dw[k] == 0.0f;
    CHECK(v == 0.0 && zero, "value %g, gradient not zero", v);
}

static void test_gaussian_laplace_l2_grad(void)
{
    static const cfg cases[] = {
        {REF_GAUSS, 2, 3, 5, 5, -1, 3, 0, 0},   {REF_GAUSS, 2, 3, 5, 5, 1, 3, 1, 0},
        {REF_GAUSS, 1, 2, 7, 5, 1, 3, 1, 1.3},  {REF_GAUSS, 2, 1, 3, 3, 0, 3, 0, 0},
        {REF_GAUSS, 1, 2, 3, 3, 0, 3, 1, 0.6},  {REF_GAUSS, 3, 1, 1, 4, 1, 3, 0, 0},
        {REF_GAUSS, 1, 1, 9, 9, -1, 3, 0, 2.25}, {REF_GAUSS, 1, 2, 4, 6, 1, 3, 1, 0},
        {REF_GAUSS, 1, 1, 25, 23, 1, 3, 1, 0}, /* scratch beyond the stack buffer */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        check_case(&cases[k], 0, -1, 300 + k);
}

static void test_group_sparsity(void)
{
    static const cfg cases[] = {
        {0, 2, 3, 3, 3, 0, 0, 0, 0}, {0, 1, 1, 1, 1, 0, 0, 0, 0},
        {0, 3, 2, 5, 4, 0, 0, 0, 0}, {0, 1, 5, 7, 1, 0, 0, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        check_case(&cases[k], 1, -1, 400 + k);
    check_case(&cases[2], 1, 3, 410); /* one all-zero group */
    check_case(&cases[0], 1, 0, 411);
}

/* W = cos(0.3 i), (2, 1, 5, 5): values computed with PyTorch (spec, Appendix A, T2) */
static void test_torch_t2(void)
{
    float w[50];
    for (int k = 0; k < 50; k++)
        w[k] = (float)cos(0.3 * k);
    double v = 0;
    CHECK_OK(npred_reg_laplace_l2norm(&v, NULL, w, 1.0, 2, 1, 5, 5, NPRED_REG_PAD_DEFAULT, false));
    CHECK(fabs(v - 6.2482338) <= 1e-4 * 6.2482338, "LaplaceL2norm() = %.8g", v);
    CHECK_OK(npred_reg_laplace_l2(&v, NULL, w, 1.0, 2, 1, 5, 5, 0, 3, true));
    CHECK(fabs(v - 0.9991688) <= 1e-4 * 0.9991688, "LaplaceL2(padding=0)(avg=True) = %.8g", v);
    CHECK_OK(npred_reg_gaussian_laplace_l2(&v, NULL, w, 1.0, 2, 1, 5, 5, NPRED_REG_PAD_DEFAULT, 0.0,
                                           false));
    CHECK(fabs(v - 4.0734148) <= 1e-4 * 4.0734148, "GaussianLaplaceL2(kernel=5) = %.8g", v);
}

/* gaussian2d tables from the spec (4 decimals) and the double reference */
static void test_gaussian2d_tables(void)
{
    float m5[25], m9[81];
    CHECK_OK(npred_reg_gaussian2d(m5, 5, 5, 1.25));
    const double row0[5] = {0, .135, .2176, .135, 0}, row1[5] = {.135, .4877, .7032, .4877, .135},
                 row2[5] = {.2176, .7032, 1, .7032, .2176};
    for (int b = 0; b < 5; b++) {
        CHECK(fabs(m5[b] - row0[b]) < 1e-4 && fabs(m5[20 + b] - row0[b]) < 1e-4, "5x5 row 0/4 col %d", b);
        CHECK(fabs(m5[5 + b] - row1[b]) < 1e-4 && fabs(m5[15 + b] - row1[b]) < 1e-4, "5x5 row 1/3 col %d", b);
        CHECK(fabs(m5[10 + b] - row2[b]) < 1e-4, "5x5 row 2 col %d", b);
    }
    CHECK_OK(npred_reg_gaussian2d(m9, 9, 9, 2.25));
    const double r0[9] = {0, .0441, .1006, .1505, .1708, .1505, .1006, .0441, 0};
    const double r4[9] = {.1708, .385, .6592, .9018, 1, .9018, .6592, .385, .1708};
    for (int b = 0; b < 9; b++)
        CHECK(fabs(m9[b] - r0[b]) < 1e-4 && fabs(m9[36 + b] - r4[b]) < 1e-4, "9x9 col %d", b);
    /* non-square and even sizes against the double reference */
    const int sizes[][2] = {{4, 6}, {1, 5}, {7, 3}};
    for (int k = 0; k < 3; k++) {
        int h = sizes[k][0], w = sizes[k][1];
        float got[64];
        double ref[64];
        CHECK_OK(npred_reg_gaussian2d(got, h, w, 0.9 + k));
        ref_gauss(ref, h, w, 0.9 + k);
        for (int e = 0; e < h * w; e++)
            CHECK(fabs(got[e] - ref[e]) <= 1e-7, "gaussian2d %dx%d [%d]: %.9g vs %.9g", h, w, e, got[e],
                  ref[e]);
    }
}

static void expect_error(npred_status st, npred_status want, const char *what)
{
    CHECK(st == want, "%s: status %d, expected %d", what, st, want);
    CHECK(st == NPRED_OK || npred_last_error()[0] != 0, "%s: no error message", what);
    npred_clear_error();
}

static void test_bad_arguments(void)
{
    float w[2 * 3 * 5 * 5] = {0}, dw[2 * 3 * 5 * 5] = {0}, m[9];
    for (int k = 0; k < 150; k++)
        w[k] = (float)(k % 7) - 3.0f;
    double v = 0;
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 0, 4, true), NPRED_ERR_ARG,
                 "filter size 4");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 0, 9, true), NPRED_ERR_ARG,
                 "filter size 9");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, -1, 0, true), NPRED_ERR_ARG,
                 "filter size 0");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, -2, 3, true), NPRED_ERR_ARG,
                 "padding -2");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 1 << 20, 3, true), NPRED_ERR_ARG,
                 "padding 2^20");
    expect_error(npred_reg_laplace_l2(&v, dw, NULL, 1, 2, 3, 5, 5, 0, 3, true), NPRED_ERR_ARG,
                 "NULL weight");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 0, 7, true), NPRED_ERR_SHAPE,
                 "5x5 kernel, 7x7 filter, no padding");
    expect_error(npred_reg_laplace_l2(&v, dw, w, 1, 0, 3, 5, 5, 0, 3, true), NPRED_ERR_SHAPE,
                 "zero output channels");
    expect_error(npred_reg_laplace_l2norm(&v, dw, w, 1, 2, 3, 2, 5, 0, false), NPRED_ERR_SHAPE,
                 "2-row kernel, no padding");
    expect_error(npred_reg_gaussian_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 0, 0, false), NPRED_ERR_SHAPE,
                 "mask 5x5 vs filtered 3x3 (padding 0)");
    expect_error(npred_reg_gaussian_laplace_l2(&v, dw, w, 1, 2, 3, 3, 4, 0, 0, false), NPRED_ERR_SHAPE,
                 "mask 3x4 vs filtered 1x2");
    expect_error(npred_reg_gaussian_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 2, 0, false), NPRED_ERR_SHAPE,
                 "mask 5x5 vs filtered 7x7 (padding 2)");
    expect_error(npred_reg_gaussian_laplace_l2(&v, dw, w, 1, 2, 3, 1, 1, 1, 0, false), NPRED_ERR_SHAPE,
                 "1x1 mask");
    expect_error(npred_reg_gaussian_laplace_l2(&v, dw, w, 1, 2, 3, 5, 5, 1, NAN, false), NPRED_ERR_ARG,
                 "NaN sigma");
    expect_error(npred_reg_group_sparsity(&v, dw, w, 1, 2, 3, 0, 5), NPRED_ERR_SHAPE, "zero kh");
    expect_error(npred_reg_group_sparsity(&v, dw, NULL, 1, 2, 3, 5, 5), NPRED_ERR_ARG, "NULL weight");
    expect_error(npred_reg_gaussian2d(m, 1, 1, 1.0), NPRED_ERR_SHAPE, "gaussian2d 1x1");
    expect_error(npred_reg_gaussian2d(m, 3, 3, 0.0), NPRED_ERR_ARG, "gaussian2d sigma 0");
    for (int k = 0; k < 150; k++)
        CHECK(dw[k] == 0.0f, "a failed call wrote dw[%d]", k);
    /* all-zero W: 0/0 is NaN, as in the reference; LaplaceL2 and group sparsity are 0 */
    float z[9] = {0};
    CHECK_OK(npred_reg_laplace_l2norm(&v, NULL, z, 1, 1, 1, 3, 3, NPRED_REG_PAD_DEFAULT, false));
    CHECK(isnan(v), "LaplaceL2norm of zeros = %g, expected NaN", v);
    CHECK_OK(npred_reg_laplace_l2(&v, NULL, z, 1, 1, 1, 3, 3, NPRED_REG_PAD_DEFAULT, 3, true));
    CHECK(v == 0.0, "LaplaceL2 of zeros = %g", v);
    CHECK_OK(npred_reg_group_sparsity(&v, dw, z, 1, 1, 1, 3, 3));
    CHECK(v == 0.0 && dw[0] == 0.0f, "group sparsity of zeros = %g", v);
}

/* One PyTorch regularizer fixture: W = input.npy (O, I, k, k), value =
 * output.npy and scalars.output, d(value)/dW = grads/input.npy. The class and
 * its arguments come from case.json. */
static void fixture_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name))
        return;
    npred_array shape;
    float *w = th_load_f32(&c, "input.npy", &shape);
    const char *cls = cJSON_GetStringValue(th_get(c.json, "args", "class", NULL));
    if (!w || !cls || !CHECK(shape.ndim == 4, "%s: input has %d dims", name, shape.ndim)) {
        free(w);
        th_case_close(&c);
        return;
    }
    int o = (int)shape.shape[0], i = (int)shape.shape[1], kh = (int)shape.shape[2],
        kw = (int)shape.shape[3];
    int n = o * i * kh * kw;
    /* padding null in the reference means the default */
    int pad = (int)th_num(c.json, NPRED_REG_PAD_DEFAULT, "args", "padding", NULL);
    bool avg = th_num(c.json, -1, "args", "forward_avg", NULL) == 1;
    float *dw = calloc(n, sizeof *dw);
    double v = NAN;
    npred_status st;
    if (strcmp(cls, "LaplaceL2") == 0) {
        st = npred_reg_laplace_l2(&v, dw, w, 1.0, o, i, kh, kw, pad, 3, avg);
    } else if (strcmp(cls, "LaplaceL2norm") == 0) {
        st = npred_reg_laplace_l2norm(&v, dw, w, 1.0, o, i, kh, kw, pad, avg);
    } else {
        CHECK(strcmp(cls, "GaussianLaplaceL2") == 0, "%s: unknown class %s", name, cls);
        int kernel = (int)th_num(c.json, 0, "args", "kernel", NULL);
        CHECK(kernel == kh && kernel == kw, "%s: kernel %d vs W %dx%d", name, kernel, kh, kw);
        /* sigma 0 = the class default min(kernel)/4; case.json records it */
        st = npred_reg_gaussian_laplace_l2(&v, dw, w, 1.0, o, i, kh, kw, pad, 0.0, avg);
        double sigma = th_num(c.json, 0, "args", "sigma", NULL);
        CHECK(sigma == kh / 4.0, "%s: sigma %g, expected the default %g", name, sigma, kh / 4.0);
    }
    CHECK(st == NPRED_OK, "%s: %s", name, npred_last_error());
    int eff = (int)th_num(c.json, pad, "args", "effective_padding", NULL);
    CHECK(pad != NPRED_REG_PAD_DEFAULT || eff == 1, "%s: effective padding %d", name, eff);
    float vf = (float)v;
    th_compare_dims(&c, "forward", "output.npy", &vf, TH_DIMS(1)); /* the scalar, exported as (1,) */
    double rtol, atol, sref = th_num(c.json, NAN, "scalars", "output", NULL);
    th_tol(&c, "forward", NULL, &rtol, &atol);
    CHECK(fabs(v - sref) <= atol + rtol * fabs(sref), "%s: value %.9g vs scalars.output %.9g", name,
          v, sref);
    th_compare_dims(&c, "grads", "grads/input.npy", dw, TH_DIMS(o, i, kh, kw));
    th_compare_dims(&c, "forward", "params/laplace.filter.npy", npred_reg_laplace_filter(3), TH_DIMS(1, 1, 3, 3));
    free(w);
    free(dw);
    th_case_close(&c);
}

static void test_fixture_laplace_l2_pad0_avg(void) { fixture_case("laplace_l2_pad0_avg"); }
static void test_fixture_laplace_l2norm_avg(void) { fixture_case("laplace_l2norm_avg"); }
static void test_fixture_laplace_l2norm_pad1_sum(void) { fixture_case("laplace_l2norm_pad1_sum"); }
static void test_fixture_gaussian_laplace_l2(void) { fixture_case("gaussian_laplace_l2"); }

static void test_fixture_gaussian_laplace_l2_mask(void)
{
    th_case c;
    if (!th_case_open(&c, "gaussian_laplace_l2_mask"))
        return;
    int size = (int)th_num(c.json, 0, "args", "size", NULL);
    double sigma = th_num(c.json, 0, "args", "sigma", NULL);
    if (CHECK(size == 9, "size %d", size)) {
        float mask[81];
        CHECK_OK(npred_reg_gaussian2d(mask, size, size, sigma));
        th_compare_dims(&c, "forward", "output.npy", mask, TH_DIMS(9, 9));
    }
    th_compare_dims(&c, "forward", "laplace_filter.npy", npred_reg_laplace_filter(3), TH_DIMS(1, 1, 3, 3));
    th_case_close(&c);
}

int main(void)
{
    RUN(test_fixture_laplace_l2_pad0_avg);
    RUN(test_fixture_laplace_l2norm_avg);
    RUN(test_fixture_laplace_l2norm_pad1_sum);
    RUN(test_fixture_gaussian_laplace_l2);
    RUN(test_fixture_gaussian_laplace_l2_mask);
    RUN(test_filters);
    RUN(test_laplace_l2_grad);
    RUN(test_laplace_l2norm_grad);
    RUN(test_laplace_l1_grad);
    RUN(test_laplace_l1_zero);
    RUN(test_gaussian_laplace_l2_grad);
    RUN(test_group_sparsity);
    RUN(test_torch_t2);
    RUN(test_gaussian2d_tables);
    RUN(test_bad_arguments);
    return th_summary();
}
