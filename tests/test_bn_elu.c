/* Fused BatchNorm2d + AdaptiveELU kernels (kernels/batchnorm.h): against the
 * unfused pair (forward bit-identical in training, backward to rounding), against central
 * finite differences of a double reference, accumulation and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/fast_exp.h"

/* ---- double reference: loss = sum_i wl[i] * (elu(bn(x)_i - xs) + ys) ---- */
typedef struct {
    int B, C, H, W, training;
    double *x, *gamma, *beta, *rmean, *rvar, *wl;
    double xs, ys, eps;
} ref;

static double ref_loss(void *ctx)
{
    const ref *r = ctx;
    size_t HW = (size_t)r->H * r->W, n = (size_t)r->B * HW;
    double loss = 0;
    for (int c = 0; c < r->C; c++) {
        double mean = 0, var = 0;
        if (r->training) {
            for (int b = 0; b < r->B; b++)
                for (size_t i = 0; i < HW; i++) mean += r->x[((size_t)b * r->C + c) * HW + i];
            mean /= (double)n;
            for (int b = 0; b < r->B; b++)
                for (size_t i = 0; i < HW; i++) {
                    double d = r->x[((size_t)b * r->C + c) * HW + i] - mean;
                    var += d * d;
                }
            var /= (double)n;
        } else {
            mean = r->rmean[c];
            var = r->rvar[c];
        }
        double is = 1.0 / sqrt(var + r->eps);
        for (int b = 0; b < r->B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t k = ((size_t)b * r->C + c) * HW + i;
                double t = (r->x[k] - mean) * is * r->gamma[c] + r->beta[c] - r->xs;
                loss += r->wl[k] * ((t > 0 ? t : expm1(t)) + r->ys);
            }
    }
    return loss;
}

static void fd_case(int B, int C, int H, int W, int training, float xs, float ys)
{
    uint64_t st = 99 + (uint64_t)(B * 131 + C * 17 + H * 5 + W + training);
    size_t n = (size_t)B * C * H * W;
    float *x = malloc(n * sizeof *x), *wl = malloc(n * sizeof *wl), *y = malloc(n * sizeof *y);
    float *dx = calloc(n, sizeof *dx), gamma[8], beta[8], rm[8], rv[8], dg[8] = {0}, db[8] = {0};
    double mean[8], invstd[8];
    gc_fill(x, n, -2.0, 2.5, &st);
    gc_fill(wl, n, -1.0, 1.0, &st);
    gc_fill(gamma, (size_t)C, 0.5, 1.5, &st);
    gc_fill(beta, (size_t)C, -0.5, 0.5, &st);
    gc_fill(rm, (size_t)C, -0.3, 0.3, &st);
    gc_fill(rv, (size_t)C, 0.5, 2.0, &st);
    float rm0[8], rv0[8];
    memcpy(rm0, rm, sizeof rm);
    memcpy(rv0, rv, sizeof rv);
    CHECK_OK(npred_batchnorm2d_elu_forward(y, mean, invstd, training ? NULL : rm, training ? NULL : rv, NULL, x, gamma,
                                           beta, B, C, H, W, training, 0.1, 1e-5, xs, ys));
    CHECK_OK(npred_batchnorm2d_elu_backward(dx, dg, db, wl, x, y, gamma, mean, invstd, B, C, H, W, training, ys));
    /* the same gradients made as the core makes them: e and the sums image by image,
     * the coefficients from the sums, dx image by image from e */
    float *e = malloc(n * sizeof *e), *dx2 = malloc(n * sizeof *dx2), dg2[8] = {0}, db2[8] = {0};
    double *ps = malloc(2 * (size_t)B * C * sizeof *ps), coef[4 * 8];
    size_t HW = (size_t)H * W;
    memcpy(e, wl, n * sizeof *e);
    for (int b = 0; b < B; b++)
        npred_batchnorm2d_elu_grad_sums_image(ps + 2 * (size_t)b * C, e + (size_t)b * C * HW, y + (size_t)b * C * HW,
                                              x + (size_t)b * C * HW, mean, C, HW, ys);
    CHECK_OK(npred_batchnorm2d_elu_backward_coef_sums(coef, dg2, db2, ps, gamma, mean, invstd, B, C, H, W, training));
    for (int b = 0; b < B; b++)
        npred_batchnorm2d_elu_backward_image(dx2 + (size_t)b * C * HW, e + (size_t)b * C * HW, x + (size_t)b * C * HW,
                                             NULL, coef, C, HW, training, ys);
    ref r = {B, C, H, W, training, gc_to_f64(x, n), gc_to_f64(gamma, (size_t)C), gc_to_f64(beta, (size_t)C),
             gc_to_f64(rm0, (size_t)C), gc_to_f64(rv0, (size_t)C), gc_to_f64(wl, n), xs, ys, 1e-5};
    /* the forward itself against the reference: loss with one-hot weights */
    double lf = 0;
    for (size_t i = 0; i < n; i++) lf += (double)wl[i] * y[i];
    double lr = ref_loss(&r);
    CHECK(fabs(lf - lr) <= 1e-4 * (1 + fabs(lr)), "forward loss %.9g vs reference %.9g", lf, lr);
    double *g = malloc(n * sizeof *g);
    gc_fd(g, r.x, n, 1e-6, ref_loss, &r);
    gc_check("dx", dx, g, n, 2e-3, 2e-4);
    gc_fd(g, r.gamma, (size_t)C, 1e-6, ref_loss, &r);
    gc_check("dgamma", dg, g, (size_t)C, 2e-3, 2e-4);
    gc_fd(g, r.beta, (size_t)C, 1e-6, ref_loss, &r);
    gc_check("dbeta", db, g, (size_t)C, 2e-3, 2e-4);
    gc_fd(g, r.x, n, 1e-6, ref_loss, &r);
    gc_check("dx (image by image)", dx2, g, n, 2e-3, 2e-4);
    gc_fd(g, r.gamma, (size_t)C, 1e-6, ref_loss, &r);
    gc_check("dgamma (sums by image)", dg2, g, (size_t)C, 2e-3, 2e-4);
    gc_fd(g, r.beta, (size_t)C, 1e-6, ref_loss, &r);
    gc_check("dbeta (sums by image)", db2, g, (size_t)C, 2e-3, 2e-4);
    free(g), free(e), free(dx2), free(ps);
    free(r.x), free(r.gamma), free(r.beta), free(r.rmean), free(r.rvar), free(r.wl);
    free(x), free(wl), free(y), free(dx);
}

static void test_fd_train(void)
{
    fd_case(3, 2, 3, 5, 1, 0.0f, 0.0f);
    fd_case(2, 3, 1, 7, 1, 0.3f, -0.2f);
    fd_case(1, 1, 5, 3, 1, -0.4f, 1.0f);
}

static void test_fd_eval(void)
{
    fd_case(3, 2, 3, 5, 0, 0.0f, 0.0f);
    fd_case(2, 3, 4, 3, 0, 0.25f, 0.5f);
}

/* The fused kernels' AdaptiveELU of a float t = bn(x) - xshift (batchnorm.c): t + yshift
 * where t > 0 or NaN, else e^t in one rounding for yshift 1 and e^t - 1 + yshift for
 * any other */
static float fused_elu(float t, float ys)
{
    if (ys == 1.0f) return !(t <= 0) ? t + 1.0f : elu_exp_fma(t);
    return (!(t <= 0) ? t : elu_expm1_fma(t)) + ys;
}

/* fused == BN then AdaptiveELU (the BatchNorm bitwise, the ELU to an ulp or two, the
 * backward to rounding), sizes that exercise the 32-lane remainders */
static void unfused_case(int B, int C, int H, int W, int training, float xs, float ys)
{
    uint64_t st = 7 + (uint64_t)(B + C + H + W);
    size_t n = (size_t)B * C * H * W;
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy), *v = malloc(n * sizeof *v);
    float *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2), *g = calloc(n, sizeof *g);
    float *dx1 = malloc(n * sizeof *dx1), *dx2 = malloc(n * sizeof *dx2);
    float gamma[16], beta[16], rm1[16], rv1[16], rm2[16], rv2[16];
    float dg1[16] = {0}, db1[16] = {0}, dg2[16] = {0}, db2[16] = {0};
    double m1[16], s1[16], m2[16], s2[16];
    int64_t c1 = 3, c2 = 3;
    gc_fill(x, n, -3.0, 4.0, &st);
    gc_fill(dy, n, -1.0, 1.0, &st);
    gc_fill(dx1, n, -1.0, 1.0, &st); /* accumulation: both start from the same values */
    memcpy(dx2, dx1, n * sizeof *dx1);
    gc_fill(gamma, (size_t)C, 0.5, 1.5, &st);
    gc_fill(beta, (size_t)C, -0.5, 0.5, &st);
    gc_fill(rm1, (size_t)C, -0.3, 0.3, &st);
    gc_fill(rv1, (size_t)C, 0.5, 2.0, &st);
    memcpy(rm2, rm1, sizeof rm1);
    memcpy(rv2, rv1, sizeof rv1);
    float rm0[16], rv0[16];
    memcpy(rm0, rm1, sizeof rm1);
    memcpy(rv0, rv1, sizeof rv1);
    npred_act act = {NPRED_ACT_ADAPTIVE_ELU, xs, ys};
    CHECK_OK(npred_batchnorm2d_forward(v, m1, s1, rm1, rv1, &c1, x, gamma, beta, B, C, H, W, training, 0.1, 1e-5));
    CHECK_OK(npred_act_forward(y1, v, n, &act));
    CHECK_OK(npred_batchnorm2d_elu_forward(y2, m2, s2, rm2, rv2, &c2, x, gamma, beta, B, C, H, W, training, 0.1,
                                           1e-5, xs, ys));
    /* the fused ELU is fused_elu, the unfused one's fast_expm1: the fused output is
     * fused_elu of the unfused BatchNorm's output bit for bit, and within an ulp or two
     * of the unfused pair */
    int same = 1;
    for (size_t i = 0; i < n; i++) {
        float want = fused_elu(v[i] - xs, ys);
        same &= !memcmp(&want, &y2[i], sizeof want);
    }
    CHECK(same, "fused forward differs from BN + fused_elu (training %d, yshift %g)", training, ys);
    th_close_f32("fused forward vs BN + AdaptiveELU", y2, y1, n, 1e-6, 1e-7);
    CHECK(!memcmp(rm1, rm2, (size_t)C * sizeof *rm1) && !memcmp(rv1, rv2, (size_t)C * sizeof *rv1) && c1 == c2,
          "running statistics differ");
    CHECK_OK(npred_act_backward(g, dy, v, y1, n, &act));
    CHECK_OK(npred_batchnorm2d_backward(dx1, dg1, db1, g, x, gamma, m1, s1, B, C, H, W, training));
    CHECK_OK(npred_batchnorm2d_elu_backward(dx2, dg2, db2, dy, x, y2, gamma, m2, s2, B, C, H, W, training, ys));
    th_close_f32("dx", dx2, dx1, n, 1e-5, 1e-6);
    th_close_f32("dgamma", dg2, dg1, (size_t)C, 1e-5, 1e-6);
    th_close_f32("dbeta", db2, db1, (size_t)C, 1e-5, 1e-6);
    free(x), free(dy), free(v), free(y1), free(y2), free(g), free(dx1), free(dx2);
}

static void test_matches_unfused(void)
{
    for (int k = 0; k < 2; k++) { /* AdaptiveELU's default shifts (0, 1), then others */
        const float xs = k ? 0.2f : 0.0f, ys = k ? -0.1f : 1.0f;
        unfused_case(3, 5, 7, 9, 1, xs, ys);
        unfused_case(2, 16, 8, 8, 1, xs, ys);
        unfused_case(3, 5, 7, 9, 0, xs, ys);
        unfused_case(1, 4, 3, 3, 0, xs, ys);
        unfused_case(2, 3, 12, 13, 1, xs, ys); /* planes of 156: four steps of 32 lanes and a tail */
        unfused_case(2, 3, 12, 13, 0, xs, ys);
        unfused_case(2, 2, 8, 8, 1, xs, ys); /* planes of 64: no tail */
    }
}

/* The float arithmetic of the training forward and of the per-image backward against
 * an independent double-precision reference: statistics by two passes in double,
 * y = elu((x - mean) invstd gamma + beta - xs) + ys with libm's expm1, and
 * dx = gamma invstd (e - mean(e) - (x - mean) invstd^2 mean(e (x - mean))) from the
 * same float e. Means far from 0 (offset), channels of very different spread and
 * planes with and without a tail of the 32 lanes. */
static void double_ref_case(int B, int C, int H, int W, double offset, float xs, float ys)
{
    uint64_t st = 1234 + (uint64_t)(B * 3 + C * 7 + H * W);
    size_t HW = (size_t)H * W, n = (size_t)B * C * HW, cnt = (size_t)B * HW;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *dy = malloc(n * sizeof *dy);
    float *e = malloc(n * sizeof *e), *dx = malloc(n * sizeof *dx);
    double *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got), *ps = malloc(2 * (size_t)B * C * sizeof *ps);
    float gamma[16], beta[16], dg[16] = {0}, db[16] = {0};
    double mean[16], invstd[16], coef[4 * 16];
    gc_fill(x, n, -2.0, 2.0, &st);
    gc_fill(dy, n, -1.0, 1.0, &st);
    gc_fill(gamma, (size_t)C, 0.5, 1.5, &st);
    gc_fill(beta, (size_t)C, -0.5, 0.5, &st);
    for (size_t i = 0; i < n; i++) { /* channel c: spread 0.01 .. 100, mean offset + c */
        int c = (int)((i / HW) % C);
        x[i] = (float)(x[i] * pow(10.0, -2.0 + 4.0 * c / (C > 1 ? C - 1 : 1)) + offset + c);
    }
    CHECK_OK(npred_batchnorm2d_elu_forward(y, mean, invstd, NULL, NULL, NULL, x, gamma, beta, B, C, H, W, 1, 0.1, 1e-5,
                                           xs, ys));
    double rm[16], ri[16];
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) s += x[((size_t)b * C + c) * HW + i];
        rm[c] = s / (double)cnt;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                double d = x[((size_t)b * C + c) * HW + i] - rm[c];
                ss += d * d;
            }
        ri[c] = 1.0 / sqrt(ss / (double)cnt + 1e-5);
        CHECK(fabs(mean[c] - rm[c]) <= 1e-12 * (fabs(rm[c]) + 1) && fabs(invstd[c] - ri[c]) <= 1e-11 * ri[c],
              "channel %d statistics %.17g %.17g, reference %.17g %.17g", c, mean[c], invstd[c], rm[c], ri[c]);
    }
    for (size_t i = 0; i < n; i++) {
        int c = (int)((i / HW) % C);
        double t = (x[i] - rm[c]) * ri[c] * gamma[c] + beta[c] - xs;
        want[i] = (t > 0 ? t : expm1(t)) + ys;
        got[i] = y[i];
    }
    /* a few float roundings of values of order 1 (the normalised scale) */
    th_close_f64("training BatchNorm + ELU vs double", got, want, n, 1e-6, 1e-6);
    /* the backward: e, the sums and dx image by image */
    memcpy(e, dy, n * sizeof *e);
    for (int b = 0; b < B; b++)
        npred_batchnorm2d_elu_grad_sums_image(ps + 2 * (size_t)b * C, e + (size_t)b * C * HW, y + (size_t)b * C * HW,
                                              x + (size_t)b * C * HW, mean, C, HW, ys);
    CHECK_OK(npred_batchnorm2d_elu_backward_coef_sums(coef, dg, db, ps, gamma, mean, invstd, B, C, H, W, 1));
    for (int b = 0; b < B; b++)
        npred_batchnorm2d_elu_backward_image(dx + (size_t)b * C * HW, e + (size_t)b * C * HW, x + (size_t)b * C * HW,
                                             NULL, coef, C, HW, 1, ys);
    for (int c = 0; c < C; c++) {
        double se = 0, sex = 0, scale = 0;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t k = ((size_t)b * C + c) * HW + i;
                se += e[k];
                sex += (double)e[k] * (x[k] - rm[c]);
            }
        CHECK(fabs(db[c] - se) <= 1e-5 * (1 + fabs(se)) && fabs(dg[c] - sex * ri[c]) <= 1e-5 * (1 + fabs(sex * ri[c])),
              "channel %d dgamma %.9g dbeta %.9g, reference %.9g %.9g", c, dg[c], db[c], sex * ri[c], se);
        const double a = gamma[c] * ri[c], me = se / (double)cnt, k2 = ri[c] * ri[c] * sex / (double)cnt;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t k = ((size_t)b * C + c) * HW + i;
                want[k] = a * (e[k] - me - (x[k] - rm[c]) * k2);
                got[k] = dx[k];
                if (fabs(a) > scale) scale = fabs(a);
            }
        /* a few roundings relative to gamma invstd (the size of dx's terms) */
        char what[64];
        snprintf(what, sizeof what, "channel %d dx vs double", c);
        size_t o = (size_t)c * HW;
        for (int b = 0; b < B; b++) {
            size_t k = (size_t)b * C * HW + o;
            th_close_f64(what, got + k, want + k, HW, 1e-6, 2e-6 * scale);
        }
    }
    free(x), free(y), free(dy), free(e), free(dx), free(want), free(got), free(ps);
}

static void test_train_vs_double(void)
{
    for (int k = 0; k < 2; k++) { /* AdaptiveELU's default shifts (0, 1), then others */
        const float xs = k ? 0.1f : 0.0f, ys = k ? -0.3f : 1.0f;
        double_ref_case(3, 5, 7, 9, 0.0, xs, ys);     /* planes of 63: a tail */
        double_ref_case(2, 4, 8, 8, 0.0, xs, ys);     /* planes of 64: none */
        double_ref_case(4, 3, 6, 11, 1000.0, xs, ys); /* means far larger than the spread */
        double_ref_case(2, 2, 1, 1, -50.0, xs, ys);   /* one value per plane */
    }
}

/* distance of a float from the double v in units of the float spacing at v */
static double ulps(float got, double v)
{
    const float f = (float)v;
    const double sp = (double)nextafterf(fabsf(f), INFINITY) - fabsf(f);
    return fabs((double)got - v) / sp;
}

/* The fused ELU's exponential (fast_exp.h: elu_exp_fma, e^t, and elu_expm1_fma,
 * e^t - 1) against libm's double exp and expm1 for t <= 0: every 97th float of
 * [-87, 0] (11.6 M of them, both ends and the clamp included; an exhaustive run over
 * all 1.1e9 gave at most 1.009 ulp for e^t and 0.952 for e^t - 1) and a sweep of
 * [-100, 0]; below -87 e^t is e^-87 (a normal float under 1.7e-38) and e^t - 1 is -1.
 * Then through the kernel (a map that leaves t = x): the special values and the
 * select, NaN and infinities included, for yshift 1 and another. */
static void test_elu_exp(void)
{
    double worst_e = 0, worst_m = 0;
    int below = 0;
    for (uint32_t u = 0x80000000u;; u += 97) { /* -0 to -87 (0xC2AE0000) by their bits */
        if (u > 0xC2AE0000u) u = 0xC2AE0000u;
        float t;
        memcpy(&t, &u, sizeof t);
        double de = ulps(elu_exp_fma(t), exp((double)t)), dm = ulps(elu_expm1_fma(t), expm1((double)t));
        worst_e = de > worst_e || isnan(de) ? de : worst_e;
        worst_m = dm > worst_m || isnan(dm) ? dm : worst_m;
        if (u == 0xC2AE0000u) break;
    }
    for (int i = 0; i <= 200000; i++) {
        float t = -100.0f * (float)i / 200000.0f, e = elu_exp_fma(t), m = elu_expm1_fma(t);
        if (t >= -87.0f) {
            double de = ulps(e, exp((double)t)), dm = ulps(m, expm1((double)t));
            worst_e = de > worst_e || isnan(de) ? de : worst_e;
            worst_m = dm > worst_m || isnan(dm) ? dm : worst_m;
        } else {
            below += !(e > 0 && e < 1.7e-38f && isnormal(e)) || !(m == -1.0f);
        }
    }
    CHECK(worst_e <= 1.01, "e^t off by %.4f ulp", worst_e);
    CHECK(worst_m <= 1.0, "e^t - 1 off by %.4f ulp", worst_m);
    CHECK(below == 0, "%d values below -87 not e^-87 / -1", below);
    /* through the kernel: mean 0, invstd 1, no gamma or beta: t = fmaf(x, 1, 0) = x */
    const float xv[] = {0.0f, -0.0f, 1e-30f, -1e-40f, 2.5f, -0.5f, -87.0f, -87.5f, -1e30f, -INFINITY, INFINITY,
                        NAN, -NAN, 3e38f, -20.0f, 0x1p-30f};
    enum { NV = sizeof xv / sizeof *xv };
    double mean[1] = {0}, invstd[1] = {1};
    float y[NV];
    for (int k = 0; k < 2; k++) {
        const float ys = k ? 0.25f : 1.0f;
        npred_bn_elu_map mp = {mean, invstd, NULL, NULL, 0.0f, ys};
        npred_batchnorm2d_elu_apply(y, xv, &mp, 1, 1, NV);
        for (int i = 0; i < NV; i++) {
            const float t = xv[i];
            int ok;
            if (isnan(t)) ok = isnan(y[i]);
            else if (t > 0) ok = y[i] == t + ys;
            else if (t < -87.0f) ok = ys == 1.0f ? y[i] > 0 && y[i] < 1.7e-38f : y[i] == -1.0f + ys;
            else ok = ulps(y[i], (ys == 1.0f ? exp((double)t) : expm1((double)t) + ys)) <= (ys == 1.0f ? 1.01 : 1.5);
            CHECK(ok, "yshift %g: x = %g gives %g", ys, t, y[i]);
        }
    }
}

/* the pieces the core runs image by image (per-plane statistics, backward
 * coefficients, one image's dx) give the whole kernels' bits */
static void pieces_case(int B, int C, int H, int W, int training, double offset)
{
    uint64_t st = 31 + (uint64_t)(B * 7 + C + H + W);
    size_t HW = (size_t)H * W, n = (size_t)B * C * HW;
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy), *y1 = malloc(n * sizeof *y1);
    float *y2 = malloc(n * sizeof *y2), *dx1 = calloc(n, sizeof *dx1), *dx2 = malloc(n * sizeof *dx2);
    double *pst = malloc(2 * (size_t)B * C * sizeof *pst), coef[4 * 16];
    float gamma[16], beta[16], rm1[16], rv1[16], rm2[16], rv2[16];
    float dg1[16] = {0}, db1[16] = {0}, dg2[16] = {0}, db2[16] = {0};
    double m1[16], s1[16], m2[16], s2[16];
    int64_t c1 = 0, c2 = 0;
    gc_fill(x, n, -3.0, 4.0, &st);
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] + offset);
    gc_fill(dy, n, -1.0, 1.0, &st);
    gc_fill(dx2, n, 5.0, 6.0, &st); /* written, not accumulated */
    gc_fill(gamma, (size_t)C, 0.5, 1.5, &st);
    gc_fill(beta, (size_t)C, -0.5, 0.5, &st);
    gc_fill(rm1, (size_t)C, -0.3, 0.3, &st);
    gc_fill(rv1, (size_t)C, 0.5, 2.0, &st);
    memcpy(rm2, rm1, sizeof rm1);
    memcpy(rv2, rv1, sizeof rv1);
    float rm0[16], rv0[16];
    memcpy(rm0, rm1, sizeof rm1);
    memcpy(rv0, rv1, sizeof rv1);
    const float xs = 0.15f, ys = -0.05f;
    CHECK_OK(npred_batchnorm2d_elu_forward(y1, m1, s1, rm1, rv1, &c1, x, gamma, beta, B, C, H, W, training, 0.1,
                                           1e-5, xs, ys));
    if (training) {
        npred_batchnorm2d_plane_stats(pst, x, (size_t)B * C, HW);
        CHECK_OK(npred_batchnorm2d_elu_forward_planes(y2, m2, s2, rm2, rv2, &c2, x, pst, gamma, beta, B, C, H, W, 0.1,
                                                      1e-5, xs, ys));
        CHECK(!memcmp(y1, y2, n * sizeof *y1) && !memcmp(m1, m2, (size_t)C * sizeof *m1) &&
                  !memcmp(s1, s2, (size_t)C * sizeof *s1),
              "forward from the planes' statistics differs from the kernel's");
        CHECK(!memcmp(rm1, rm2, (size_t)C * sizeof *rm1) && !memcmp(rv1, rv2, (size_t)C * sizeof *rv1) && c1 == c2,
              "running statistics differ");
        /* the statistics against a two-pass double reference (a large offset must not cost accuracy) */
        for (int c = 0; c < C; c++) {
            double mean = 0, ssd = 0, cnt = (double)B * HW;
            for (int b = 0; b < B; b++)
                for (size_t i = 0; i < HW; i++) mean += x[((size_t)b * C + c) * HW + i];
            mean /= cnt;
            for (int b = 0; b < B; b++)
                for (size_t i = 0; i < HW; i++) {
                    double d = x[((size_t)b * C + c) * HW + i] - mean;
                    ssd += d * d;
                }
            double is = 1.0 / sqrt(ssd / cnt + 1e-5);
            CHECK(fabs(m1[c] - mean) <= 1e-12 * (fabs(mean) + 1), "channel %d mean %.17g, reference %.17g", c, m1[c],
                  mean);
            CHECK(fabs(s1[c] - is) <= 1e-11 * is, "channel %d invstd %.17g, reference %.17g", c, s1[c], is);
        }
    }
    CHECK_OK(npred_batchnorm2d_elu_backward(dx1, dg1, db1, dy, x, y1, gamma, m1, s1, B, C, H, W, training, ys));
    CHECK_OK(npred_batchnorm2d_elu_backward_coef(coef, dg2, db2, dy, x, y1, gamma, m1, s1, B, C, H, W, training, ys));
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * C * HW;
        npred_batchnorm2d_elu_backward_image(dx2 + o, dy + o, x + o, y1 + o, coef, C, HW, training, ys);
    }
    CHECK(!memcmp(dx1, dx2, n * sizeof *dx1), "dx image by image differs from the kernel's");
    CHECK(!memcmp(dg1, dg2, (size_t)C * sizeof *dg1) && !memcmp(db1, db2, (size_t)C * sizeof *db1),
          "dgamma/dbeta of the coefficients pass differ from the kernel's");
    /* activation recomputation: y, the statistics and the backward from x and the map
     * alone (y not stored) give the same bits */
    const npred_bn_elu_map map = {m1, s1, gamma, beta, xs, ys};
    gc_fill(y2, n, 5.0, 6.0, &st);
    npred_batchnorm2d_elu_apply(y2, x, &map, B, C, HW);
    CHECK(!memcmp(y1, y2, n * sizeof *y1), "recomputed y differs from the forward's");
    if (training) {
        double m3[16], s3[16];
        float rm3[16], rv3[16];
        int64_t c3 = 0;
        memcpy(rm3, rm0, sizeof rm0);
        memcpy(rv3, rv0, sizeof rv0);
        CHECK_OK(npred_batchnorm2d_stats(m3, s3, rm3, rv3, &c3, x, pst, B, C, H, W, 1, 0.1, 1e-5));
        CHECK(!memcmp(m1, m3, (size_t)C * sizeof *m1) && !memcmp(s1, s3, (size_t)C * sizeof *s1) && c3 == c1 &&
                  !memcmp(rm1, rm3, (size_t)C * sizeof *rm1) && !memcmp(rv1, rv3, (size_t)C * sizeof *rv1),
              "statistics alone differ from the forward's (count %lld)", (long long)c3);
        CHECK_OK(npred_batchnorm2d_stats(m3, s3, NULL, NULL, NULL, x, NULL, B, C, H, W, 1, 0.1, 1e-5));
        CHECK(!memcmp(m1, m3, (size_t)C * sizeof *m1) && !memcmp(s1, s3, (size_t)C * sizeof *s1),
              "statistics alone (without the planes) differ from the forward's");
    }
    else {
        double m3[16], s3[16];
        float rm3[16], rv3[16];
        memcpy(rm3, rm1, sizeof rm1);
        memcpy(rv3, rv1, sizeof rv1);
        CHECK_OK(npred_batchnorm2d_stats(m3, s3, rm3, rv3, NULL, x, NULL, B, C, H, W, 0, 0.1, 1e-5));
        CHECK(!memcmp(m1, m3, (size_t)C * sizeof *m1) && !memcmp(s1, s3, (size_t)C * sizeof *s1) &&
                  !memcmp(rm1, rm3, (size_t)C * sizeof *rm1) && !memcmp(rv1, rv3, (size_t)C * sizeof *rv1),
              "eval statistics alone differ from the forward's");
    }
    /* from e, the gradient of the ELU's input, formed once where y is at hand (in place,
     * or with y recomputed by the map): the coefficients and dx have the same bits */
    float *e1 = malloc(n * sizeof *e1), *e2 = malloc(n * sizeof *e2), *dx3 = malloc(n * sizeof *dx3);
    float dg4[16] = {0}, db4[16] = {0};
    double coef2[4 * 16];
    memcpy(e1, dy, n * sizeof *dy);
    memcpy(e2, dy, n * sizeof *dy);
    npred_elu_grad_inplace(e1, y1, n, ys);
    double *ps4 = malloc(2 * (size_t)B * C * sizeof *ps4);
    for (int b = 0; b < B; b++)
        npred_batchnorm2d_elu_grad_sums_image_map(ps4 + 2 * (size_t)b * C, e2 + (size_t)b * C * HW,
                                                  x + (size_t)b * C * HW, &map, C, HW);
    CHECK(!memcmp(e1, e2, n * sizeof *e1), "e with y recomputed differs from e with the stored y");
    CHECK_OK(npred_batchnorm2d_elu_backward_coef_e(coef2, dg4, db4, e1, x, gamma, m1, s1, B, C, H, W, training));
    CHECK(!memcmp(coef, coef2, 4 * (size_t)C * sizeof *coef) && !memcmp(dg1, dg4, (size_t)C * sizeof *dg1) &&
              !memcmp(db1, db4, (size_t)C * sizeof *db1),
          "coefficients from e differ from the kernel's");
    gc_fill(dx3, n, 5.0, 6.0, &st);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * C * HW;
        npred_batchnorm2d_elu_backward_image(dx3 + o, e1 + o, x + o, NULL, coef, C, HW, training, ys);
        npred_batchnorm2d_elu_backward_image(e2 + o, e2 + o, x + o, NULL, coef, C, HW, training, ys); /* in place */
    }
    CHECK(!memcmp(dx1, dx3, n * sizeof *dx1), "dx image by image from e differs from the kernel's");
    CHECK(!memcmp(dx1, e2, n * sizeof *dx1), "dx image by image from e, in place, differs from the kernel's");
    /* the sums made image by image (from dy and y, from e, and while dy is turned into e
     * in place), added in image order: the kernel's coefficients and dgamma/dbeta */
    double *ps1 = malloc(2 * (size_t)B * C * sizeof *ps1), *ps2 = malloc(2 * (size_t)B * C * sizeof *ps2);
    double *ps3 = malloc(2 * (size_t)B * C * sizeof *ps3), coef3[4 * 16];
    memcpy(e2, dy, n * sizeof *dy);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * C * HW, q = 2 * (size_t)b * C;
        npred_batchnorm2d_elu_backward_plane_sums(ps1 + q, dy + o, x + o, y1 + o, m1, C, HW, ys);
        npred_batchnorm2d_elu_backward_plane_sums(ps2 + q, e1 + o, x + o, NULL, m1, C, HW, 0.0f);
        npred_batchnorm2d_elu_grad_sums_image(ps3 + q, e2 + o, y1 + o, x + o, m1, C, HW, ys);
    }
    CHECK(!memcmp(e1, e2, n * sizeof *e1), "e formed with the sums differs from npred_elu_grad_inplace's");
    CHECK(!memcmp(ps1, ps2, 2 * (size_t)B * C * sizeof *ps1) && !memcmp(ps1, ps3, 2 * (size_t)B * C * sizeof *ps1),
          "the images' sums differ between dy and y, e, and e formed in place");
    CHECK(!memcmp(ps1, ps4, 2 * (size_t)B * C * sizeof *ps1),
          "the images' sums with y recomputed by the map differ from those with the stored y");
    for (int k = 0; k < 3; k++) {
        float dg5[16] = {0}, db5[16] = {0};
        CHECK_OK(npred_batchnorm2d_elu_backward_coef_sums(coef3, dg5, db5, k == 0 ? ps1 : k == 1 ? ps2 : ps3, gamma,
                                                          m1, s1, B, C, H, W, training));
        CHECK(!memcmp(coef, coef3, 4 * (size_t)C * sizeof *coef) && !memcmp(dg1, dg5, (size_t)C * sizeof *dg1) &&
                  !memcmp(db1, db5, (size_t)C * sizeof *db1),
              "coefficients from the images' sums (%d) differ from the kernel's", k);
    }
    /* and the sums against a double reference (the order changes only the last bits) */
    for (int c = 0; c < C; c++) {
        double r0 = 0, r1 = 0;
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t k = ((size_t)b * C + c) * HW + i;
                double ed = (double)e1[k];
                r0 += ed;
                r1 += ed * ((double)x[k] - m1[c]);
            }
        double a0 = 0, a1 = 0;
        for (int b = 0; b < B; b++) a0 += ps1[2 * ((size_t)b * C + c)], a1 += ps1[2 * ((size_t)b * C + c) + 1];
        CHECK(fabs(a0 - r0) <= 1e-12 * (1 + fabs(r0)) && fabs(a1 - r1) <= 1e-12 * (1 + fabs(r1)),
              "channel %d sums %.17g %.17g, reference %.17g %.17g", c, a0, a1, r0, r1);
    }
    free(ps1), free(ps2), free(ps3), free(ps4);
    free(e1), free(e2);
    free(dx3);
    free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(pst);
}

static void test_pieces(void)
{
    pieces_case(3, 5, 7, 9, 1, 0.0);
    pieces_case(4, 16, 8, 8, 1, 0.0);
    pieces_case(5, 3, 6, 11, 1, 1000.0);
    pieces_case(2, 2, 20, 29, 1, 0.0); /* planes of 580: two chunks of the recomputed map, a lane tail */
    pieces_case(3, 5, 7, 9, 0, 0.0);
    float y[8] = {0}, x[8] = {0};
    double m[2], s[2];
    CHECK(npred_batchnorm2d_elu_forward_planes(y, m, s, NULL, NULL, NULL, x, NULL, NULL, NULL, 1, 2, 2, 2, 0.1, 1e-5,
                                               0, 0) == NPRED_ERR_ARG,
          "missing plane statistics accepted");
    CHECK(npred_batchnorm2d_elu_backward_coef(NULL, NULL, NULL, x, x, y, NULL, m, s, 1, 2, 2, 2, 1, 0) ==
              NPRED_ERR_ARG,
          "missing coefficients accepted");
    CHECK(npred_batchnorm2d_elu_backward_coef_e(NULL, NULL, NULL, x, x, NULL, m, s, 1, 2, 2, 2, 1) == NPRED_ERR_ARG,
          "missing coefficients accepted (from e)");
    double cf[8];
    CHECK(npred_batchnorm2d_elu_backward_coef_e(cf, NULL, NULL, NULL, x, NULL, m, s, 1, 2, 2, 2, 1) == NPRED_ERR_ARG,
          "missing e accepted");
    CHECK(npred_batchnorm2d_elu_backward_coef_sums(cf, NULL, NULL, NULL, NULL, m, s, 1, 2, 2, 2, 1) == NPRED_ERR_ARG,
          "missing sums accepted");
    CHECK(npred_batchnorm2d_elu_backward_coef_sums(cf, NULL, NULL, m, NULL, m, s, 0, 2, 2, 2, 1) == NPRED_ERR_ARG,
          "a batch of 0 accepted by the coefficients from sums");
}

/* Eval mode image by image (npred_batchnorm2d_eval_image / _eval_stats) gives the
 * batched eval kernels' bits, with and without the ELU, and both are within a few
 * float roundings of a double reference (running mean far from 0 included) */
static void eval_image_case(int B, int C, int H, int W, double offset, float xs, float ys)
{
    uint64_t st = 77 + (uint64_t)(B * 5 + C + H * W);
    size_t HW = (size_t)H * W, n = (size_t)B * C * HW;
    float *x = malloc(n * sizeof *x), *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    double *want = malloc(n * sizeof *want);
    float gamma[16], beta[16], rm[16], rv[16];
    double m1[16], s1[16], m2[16], s2[16];
    gc_fill(x, n, -3.0, 3.0, &st);
    gc_fill(gamma, (size_t)C, 0.5, 1.5, &st);
    gc_fill(beta, (size_t)C, -0.5, 0.5, &st);
    gc_fill(rm, (size_t)C, -0.3, 0.3, &st);
    gc_fill(rv, (size_t)C, 0.05, 2.0, &st);
    for (int c = 0; c < C; c++) rm[c] = (float)(rm[c] + offset);
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] * sqrt(rv[(i / HW) % C]) + rm[(i / HW) % C]);
    for (int act = 0; act <= 1; act++) {
        if (act)
            CHECK_OK(npred_batchnorm2d_elu_forward(y1, m1, s1, rm, rv, NULL, x, gamma, beta, B, C, H, W, 0, 0.1, 1e-5,
                                                   xs, ys));
        else
            CHECK_OK(npred_batchnorm2d_forward(y1, m1, s1, rm, rv, NULL, x, gamma, beta, B, C, H, W, 0, 0.1, 1e-5));
        for (int b = 0; b < B; b++)
            npred_batchnorm2d_eval_image(y2 + (size_t)b * C * HW, x + (size_t)b * C * HW, rm, rv, gamma, beta, C, HW,
                                         1e-5, act, xs, ys);
        npred_batchnorm2d_eval_stats(m2, s2, rm, rv, C, 1e-5);
        CHECK(!memcmp(y1, y2, n * sizeof *y1), "eval image by image differs from the batched kernel (act %d)", act);
        CHECK(!memcmp(m1, m2, (size_t)C * sizeof *m1) && !memcmp(s1, s2, (size_t)C * sizeof *s1),
              "eval cache differs from the batched kernel's");
        for (size_t i = 0; i < n; i++) {
            int c = (int)((i / HW) % C);
            double t = ((double)x[i] - rm[c]) / sqrt((double)rv[c] + 1e-5) * gamma[c] + beta[c];
            want[i] = act ? (t - xs > 0 ? t - xs : expm1(t - xs)) + ys : t;
        }
        /* about 3 roundings of the float steps, relative to the normalised value's scale */
        double *got = gc_to_f64(y2, n);
        th_close_f64("eval BatchNorm (+ ELU) vs double", got, want, n, 1e-6, 1e-6);
        free(got);
    }
    free(x), free(y1), free(y2), free(want);
}

static void test_eval_image(void)
{
    for (int k = 0; k < 2; k++) { /* AdaptiveELU's default shifts (0, 1), then others */
        const float xs = k ? 0.15f : 0.0f, ys = k ? -0.05f : 1.0f;
        eval_image_case(3, 5, 4, 7, 0.0, xs, ys);
        eval_image_case(2, 16, 5, 19, 0.0, xs, ys);  /* planes not a multiple of the vector width */
        eval_image_case(2, 3, 6, 6, 1000.0, xs, ys); /* running mean far larger than the spread */
    }
}

static void test_bad_input(void)
{
    float x[8] = {0}, y[8];
    double m[2], s[2];
    CHECK(npred_batchnorm2d_elu_forward(y, m, s, NULL, NULL, NULL, x, NULL, NULL, 0, 2, 2, 2, 1, 0.1, 1e-5, 0, 0) ==
              NPRED_ERR_ARG,
          "zero batch accepted");
    CHECK(npred_batchnorm2d_elu_forward(y, m, s, NULL, NULL, NULL, x, NULL, NULL, 1, 2, 2, 2, 0, 0.1, 1e-5, 0, 0) ==
              NPRED_ERR_ARG,
          "eval without running stats accepted");
    CHECK(npred_batchnorm2d_elu_backward(y, NULL, NULL, NULL, x, x, NULL, m, s, 1, 2, 2, 2, 1, 0) == NPRED_ERR_ARG,
          "missing dy accepted");
    CHECK(npred_batchnorm2d_elu_backward(y, NULL, NULL, x, x, NULL, NULL, m, s, 1, 2, 2, 2, 1, 0) == NPRED_ERR_ARG,
          "missing y accepted");
    CHECK(npred_batchnorm2d_elu_backward(y, NULL, NULL, x, x, x, NULL, m, s, 1, -2, 2, 2, 1, 0) == NPRED_ERR_ARG,
          "negative channels accepted");
}

int main(void)
{
    RUN(test_fd_train);
    RUN(test_fd_eval);
    RUN(test_matches_unfused);
    RUN(test_train_vs_double);
    RUN(test_elu_exp);
    RUN(test_pieces);
    RUN(test_eval_image);
    RUN(test_bad_input);
    return th_summary();
}
