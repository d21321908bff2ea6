/* The bf16 depth-separable block (kernels/bf16_block.h) against a double-precision
 * reference written here that rounds where the kernels round (x, the weights and both
 * intermediates to bf16, by this file's own round-to-nearest-even, th_bf16):
 *   - every output within 2^-6 of its chain of sums of |terms| (a rounding of an
 *     intermediate may land on the other bf16 neighbour when the kernel's fp32 sum
 *     and the double one straddle a tie: one bf16 ulp, 2^-7 relative, per
 *     intermediate), and almost all (>= 97 %) within 10^-5 of it (fp32 sums);
 *   - the unrounded double reference is farther away somewhere (bf16 really ran);
 *   - the same inputs give the same bits, whatever the scratch held before;
 *   - input and output as bf16 pairs of channels (the chained layers' layout): the
 *     output is the fp32 one rounded, from the input the fp32 one rounds to;
 * for every tail of the kernels' blocks (odd channel counts, rows and columns past
 * a block) and k = 1, 3, 5, 7, with and without biases and BatchNorm affine
 * parameters, and the baseline's geometry. On a CPU without AVX-512 BF16 the
 * geometry must be refused. */
#include "harness.h"
#include "kernels/bf16_block.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rnd(size_t n, uint64_t *st, double scale, double shift)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)(shift + scale * th_rand(st));
    return a;
}

/* double reference of one image; rounded: with the kernels' bf16 roundings; mag: the
 * chain of sums of |terms| of each output, scaled by |BatchNorm scale| */
static void reference(double *out, double *mag, const npred_bf16_block *b, const float *x, int rounded)
{
    const int C = b->cout, K = b->k, P = K / 2;
    const size_t hw = (size_t)b->h * b->w;
    double *t0 = calloc((size_t)C * hw, sizeof *t0), *m0 = calloc((size_t)C * hw, sizeof *m0);
    double *t1 = calloc((size_t)C * hw, sizeof *t1), *m1 = calloc((size_t)C * hw, sizeof *m1);
#define R(v) (rounded ? th_bf16(v) : (double)(v))
    for (int c = 0; c < C; c++)
        for (size_t p = 0; p < hw; p++) {
            double s = 0, m = 0;
            for (int i = 0; i < b->cin; i++) {
                s += R(b->w0[c * b->cin + i]) * R(x[i * hw + p]);
                m += fabs(R(b->w0[c * b->cin + i]) * R(x[i * hw + p]));
            }
            s += b->b0 ? b->b0[c] : 0.0;
            m += b->b0 ? fabs(b->b0[c]) : 0.0;
            t0[c * hw + p] = rounded ? th_bf16((float)s) : s;
            m0[c * hw + p] = m;
        }
    for (int c = 0; c < C; c++)
        for (int y = 0; y < b->h; y++)
            for (int xx = 0; xx < b->w; xx++) {
                double s = 0, m = 0;
                for (int ky = 0; ky < K; ky++)
                    for (int kx = 0; kx < K; kx++) {
                        const int iy = y + ky - P, ix = xx + kx - P;
                        if (iy < 0 || iy >= b->h || ix < 0 || ix >= b->w) continue;
                        const double wv = R(b->wd[(c * K + ky) * K + kx]);
                        s += wv * t0[c * hw + iy * b->w + ix];
                        m += fabs(wv) * m0[c * hw + iy * b->w + ix];
                    }
                s += b->bd ? b->bd[c] : 0.0;
                m += b->bd ? fabs(b->bd[c]) : 0.0;
                t1[c * hw + y * b->w + xx] = rounded ? th_bf16((float)s) : s;
                m1[c * hw + y * b->w + xx] = m;
            }
    for (int c = 0; c < C; c++) {
        const double sc = (b->gamma ? b->gamma[c] : 1.0) / sqrt(b->var[c] + b->eps);
        for (size_t p = 0; p < hw; p++) {
            double s = b->b2 ? b->b2[c] : 0.0, m = b->b2 ? fabs(b->b2[c]) : 0.0;
            for (int i = 0; i < C; i++) {
                s += R(b->w2[c * C + i]) * t1[i * hw + p];
                m += fabs(R(b->w2[c * C + i])) * m1[i * hw + p];
            }
            const double t = (s - b->mean[c]) * sc + (b->beta ? b->beta[c] : 0.0) - b->xshift;
            out[c * hw + p] = (t > 0 ? t : expm1(t)) + b->yshift;
            mag[c * hw + p] = fabs(sc) * (m + fabs(b->mean[c]));
        }
    }
#undef R
    free(t0), free(m0), free(t1), free(m1);
}

static void check_block(int cin, int cout, int h, int w, int k, int biases, int affine, uint64_t seed)
{
    uint64_t st = seed;
    const size_t hw = (size_t)h * w;
    float *x = rnd((size_t)cin * hw, &st, 1.0, 0.0), *w0 = rnd((size_t)cout * cin, &st, 0.4, 0.0);
    float *wd = rnd((size_t)cout * k * k, &st, 0.3, 0.0), *w2 = rnd((size_t)cout * cout, &st, 0.4, 0.0);
    float *b0 = rnd(cout, &st, 0.2, 0.0), *bd = rnd(cout, &st, 0.2, 0.0), *b2 = rnd(cout, &st, 0.2, 0.0);
    float *mean = rnd(cout, &st, 0.3, 0.0), *var = rnd(cout, &st, 0.2, 1.0);
    float *gamma = rnd(cout, &st, 0.3, 1.0), *beta = rnd(cout, &st, 0.3, 0.0);
    npred_bf16_block b = {cin, cout, h, w, k, w0, biases ? b0 : NULL, wd, biases ? bd : NULL, w2,
                          biases ? b2 : NULL, mean, var, affine ? gamma : NULL, affine ? beta : NULL, 1e-5,
                          0.25f, 1.0f};
    const size_t n = (size_t)cout * hw, sb = npred_bf16_block_scratch_bytes(&b);
    float *a = malloc(n * sizeof *a), *a2 = malloc(n * sizeof *a2);
    void *scr = aligned_alloc(64, (sb + 63) / 64 * 64);
    double *ref = malloc(n * sizeof *ref), *mag = malloc(n * sizeof *mag), *ref_f = malloc(n * sizeof *ref_f);
    memset(scr, 0, sb);
    npred_bf16_block_eval_image(&b, x, NULL, a, NULL, scr);
    memset(scr, 0xFF, sb); /* NaN patterns: nothing may be read before it is written */
    npred_bf16_block_eval_image(&b, x, NULL, a2, NULL, scr);
    CHECK(memcmp(a, a2, n * sizeof *a) == 0, "cin %d cout %d %dx%d k %d: not the same bits twice", cin, cout, h, w,
          k);
    /* as bf16 pairs of channels: the input given as pairs (the values the fp32 input
     * rounds to) and the output written as pairs (the fp32 output, rounded) */
    uint32_t *xpairs = malloc(npred_bf16_block_pair_words(cin, h, w) * 4);
    uint32_t *apairs = malloc(npred_bf16_block_pair_words(cout, h, w) * 4);
    int pairs_ok = 1;
    for (int ci = 0; ci < cin; ci += 2)
        for (size_t p = 0; p < hw; p++) {
            union { float f; uint32_t u; } lo = {(float)th_bf16(x[ci * hw + p])}, hi = {0.0f};
            if (ci + 1 < cin) hi.f = (float)th_bf16(x[(ci + 1) * hw + p]);
            xpairs[ci / 2 * hw + p] = (lo.u >> 16) | (hi.u & 0xFFFF0000u);
        }
    npred_bf16_block_eval_image(&b, NULL, xpairs, NULL, apairs, scr);
    for (int co = 0; co < cout; co++)
        for (size_t p = 0; p < hw; p++) {
            const uint32_t word = apairs[co / 2 * hw + p];
            union { float f; uint32_t u; } v = {(float)th_bf16(a[co * hw + p])};
            pairs_ok &= (co % 2 ? word & 0xFFFF0000u : word << 16) == v.u;
            if (co % 2 == 0 && co + 1 == cout) pairs_ok &= (word >> 16) == 0;
        }
    CHECK(pairs_ok, "cin %d cout %d %dx%d k %d: pairs in / out differ from the fp32 input / output rounded", cin,
          cout, h, w, k);
    free(xpairs), free(apairs);
    double wmag = 0;
    reference(ref_f, mag, &b, x, 0); /* the unrounded reference */
    double far_f = 0;
    for (size_t i = 0; i < n; i++) far_f = th_worst(far_f, fabs(a[i] - ref_f[i]) / (mag[i] + 1e-30));
    reference(ref, mag, &b, x, 1);
    double worst = 0;
    size_t tight = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs(a[i] - ref[i]) / (mag[i] + 1e-30);
        worst = th_worst(worst, e);
        tight += e <= 1e-5;
        wmag = mag[i] > wmag ? mag[i] : wmag;
    }
    CHECK(worst <= 0x1p-6, "cin %d cout %d %dx%d k %d: error %.3g of the sums of |terms| (bound 2^-6)", cin, cout, h,
          w, k, worst);
    CHECK(tight >= 0.97 * n, "cin %d cout %d %dx%d k %d: only %zu of %zu outputs within 1e-5", cin, cout, h, w, k,
          tight, n);
    CHECK(far_f >= 2e-5, "cin %d cout %d %dx%d k %d: the unrounded reference is only %.3g away (bf16 ran?)", cin,
          cout, h, w, k, far_f);
    CHECK(wmag > 0, "no outputs");
    printf("  cin %d cout %d %dx%d k %d: worst %.2e, %.1f %% within 1e-5, unrounded reference %.2e away\n", cin,
           cout, h, w, k, worst, 100.0 * tight / n, far_f);
    free(x), free(w0), free(wd), free(w2), free(b0), free(bd), free(b2), free(mean), free(var), free(gamma);
    free(beta), free(a), free(a2), free(scr), free(ref), free(mag), free(ref_f);
}

/* bf16 pairs of channels of x (c x hw) rounded, the forward's layout */
static uint32_t *to_pairs(const float *x, int c, size_t hw)
{
    uint32_t *xp = calloc((size_t)(c + 1) / 2 * hw + 16, sizeof *xp);
    for (int ci = 0; ci < c; ci++)
        for (size_t p = 0; p < hw; p++) {
            union { float f; uint32_t u; } v = {(float)th_bf16(x[ci * hw + p])};
            xp[ci / 2 * hw + p] |= ci % 2 ? v.u & 0xFFFF0000u : v.u >> 16;
        }
    return xp;
}

/* The 1x1 backward (npred_bf16_pw_backward_image) against double sums of the
 * bf16-rounded operands: every element within (terms + 2) * 2^-24 of its sum of
 * |terms| (bf16 products are exact in fp32; each term costs at most one rounding of
 * the fp32 sum), the unrounded reference farther away, the same bits twice whatever
 * the scratch held, and the same bits from x as bf16 pairs of channels. */
static void check_pw_backward(int o, int c, int h, int w, int acc, uint64_t seed)
{
    uint64_t st = seed;
    const size_t hw = (size_t)h * w;
    float *dy = rnd((size_t)o * hw, &st, 1.0, 0.0), *x = rnd((size_t)c * hw, &st, 1.0, 0.0);
    float *wt = rnd((size_t)o * c, &st, 0.4, 0.0), *dw0 = rnd((size_t)o * c, &st, 3.0, 0.0);
    float *dx0 = rnd((size_t)c * hw, &st, 1.0, 0.0);
    float *dw = malloc((size_t)o * c * sizeof *dw), *dx = malloc((size_t)c * hw * sizeof *dx);
    float *dw2 = malloc((size_t)o * c * sizeof *dw), *dx2 = malloc((size_t)c * hw * sizeof *dx);
    const size_t sb = npred_bf16_pw_backward_scratch_bytes(o, c);
    void *scr = aligned_alloc(64, (sb + 63) / 64 * 64);
    memset(scr, 0, sb);
    memcpy(dw, dw0, (size_t)o * c * sizeof *dw), memcpy(dx, dx0, (size_t)c * hw * sizeof *dx);
    npred_bf16_pw_backward_image(dw, dx, NULL, acc, dy, x, NULL, wt, o, c, hw, scr);
    /* again, the scratch full of NaN patterns, x as pairs of channels */
    uint32_t *xp = to_pairs(x, c, hw);
    memset(scr, 0xFF, sb);
    memcpy(dw2, dw0, (size_t)o * c * sizeof *dw), memcpy(dx2, dx0, (size_t)c * hw * sizeof *dx);
    npred_bf16_pw_backward_image(dw2, dx2, NULL, acc, dy, NULL, xp, wt, o, c, hw, scr);
    CHECK(!memcmp(dw, dw2, (size_t)o * c * sizeof *dw) && !memcmp(dx, dx2, (size_t)c * hw * sizeof *dx),
          "1x1 backward o %d c %d %dx%d: other bits from pairs / another scratch", o, c, h, w);
    if (!acc) { /* dx as bf16 planes: the fp32 dx rounded, and no dW */
        uint16_t *dxb = malloc((size_t)c * hw * sizeof *dxb);
        memcpy(dw2, dw0, (size_t)o * c * sizeof *dw);
        npred_bf16_pw_backward_image(NULL, dx2, dxb, 0, dy, x, NULL, wt, o, c, hw, scr);
        int same = 1;
        for (size_t i = 0; i < (size_t)c * hw; i++) {
            union { float f; uint32_t u; } v = {(float)th_bf16(dx[i])};
            same &= dxb[i] == v.u >> 16;
        }
        CHECK(same, "1x1 backward o %d c %d %dx%d: the bf16 dx is not the fp32 one rounded", o, c, h, w);
        free(dxb);
    }
    double worst = 0, far = 0;
    for (int i = 0; i < o; i++) /* dW */
        for (int k = 0; k < c; k++) {
            double s = dw0[i * c + k], m = fabs(dw0[i * c + k]), u = s;
            for (size_t p = 0; p < hw; p++) {
                const double t = th_bf16(dy[i * hw + p]) * th_bf16(x[k * hw + p]);
                s += t, m += fabs(t), u += (double)dy[i * hw + p] * x[k * hw + p];
            }
            worst = th_worst(worst, fabs(dw[i * c + k] - s) / (m * ((double)hw + 2) * 0x1p-24));
            far = th_worst(far, fabs(dw[i * c + k] - u) / m);
        }
    for (int k = 0; k < c; k++) /* dx */
        for (size_t p = 0; p < hw; p++) {
            double s = acc ? dx0[k * hw + p] : 0.0, m = fabs(s), u = s;
            for (int i = 0; i < o; i++) {
                const double t = th_bf16(wt[i * c + k]) * th_bf16(dy[i * hw + p]);
                s += t, m += fabs(t), u += (double)wt[i * c + k] * dy[i * hw + p];
            }
            worst = th_worst(worst, fabs(dx[k * hw + p] - s) / (m * ((double)o + 2) * 0x1p-24 + 1e-30));
            far = th_worst(far, fabs(dx[k * hw + p] - u) / (m + 1e-30));
        }
    CHECK(worst <= 1.0, "1x1 backward o %d c %d %dx%d acc %d: error %.3g of its bound", o, c, h, w, acc, worst);
    CHECK(far >= 1e-4, "1x1 backward o %d c %d %dx%d: the unrounded reference only %.3g away (bf16 ran?)", o, c, h,
          w, far);
    printf("  1x1 backward o %d c %d %dx%d acc %d: worst %.2f of the bound, unrounded reference %.2e away\n", o, c,
           h, w, acc, worst, far);
    free(dy), free(x), free(wt), free(dw0), free(dx0), free(dw), free(dx), free(dw2), free(dx2), free(scr), free(xp);
}

static void test_pw_backward(void)
{
    if (!npred_gemm_bf16_available()) return; /* refused above (test_shapes) */
    check_pw_backward(64, 64, 28, 56, 0, 11); /* the baseline's hidden layers */
    check_pw_backward(7, 5, 3, 33, 1, 12);    /* odd rows and channels, an odd pixel count */
    check_pw_backward(13, 70, 2, 97, 0, 13);  /* a partial 64-channel block, 2 chunks */
    check_pw_backward(1, 1, 1, 1, 1, 14);
    check_pw_backward(16, 17, 10, 10, 1, 15);
}

/* bf16 planes of x rounded (th_bf16) */
static uint16_t *to_planes(const float *x, size_t n)
{
    uint16_t *b = malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        union { float f; uint32_t u; } v = {(float)th_bf16(x[i])};
        b[i] = (uint16_t)(v.u >> 16);
    }
    return b;
}

static double from_bf16(uint16_t v)
{
    union { uint32_t u; float f; } w = {(uint32_t)v << 16};
    return w.f;
}

/* The depthwise backward (npred_bf16_dw_backward_image) against double sums of its bf16
 * operands (dy, x, w): dx, dw (added to) and db (added to) each within (terms + 2) *
 * 2^-24 of its sum of |terms| (fp32 lanes; their sum in double), the unrounded reference
 * (dy and w unrounded) farther away, the same bits twice whatever the scratch held. */
static void check_dw_backward(int c, int h, int w, int k, uint64_t seed)
{
    uint64_t st = seed;
    const size_t hw = (size_t)h * w, kk = (size_t)k * k;
    const int P = k / 2;
    float *dyf = rnd((size_t)c * hw, &st, 1.0, 0.0), *xf = rnd((size_t)c * hw, &st, 1.0, 0.0);
    float *wd = rnd((size_t)c * kk, &st, 0.3, 0.0), *dw0 = rnd((size_t)c * kk, &st, 5.0, 0.0);
    float *db0 = rnd(c, &st, 5.0, 0.0);
    uint16_t *dy = to_planes(dyf, (size_t)c * hw), *x = to_planes(xf, (size_t)c * hw);
    float *dx = malloc((size_t)c * hw * sizeof *dx), *dx2 = malloc((size_t)c * hw * sizeof *dx);
    float *dw = malloc((size_t)c * kk * sizeof *dw), *dw2 = malloc((size_t)c * kk * sizeof *dw);
    float *db = malloc((size_t)c * sizeof *db), *db2 = malloc((size_t)c * sizeof *db);
    const size_t sb = npred_bf16_dw_backward_scratch_bytes(h, w, k);
    void *scr = aligned_alloc(64, (sb + 63) / 64 * 64);
    for (int pass = 0; pass < 2; pass++) {
        memset(scr, pass ? 0xFF : 0, sb);
        memcpy(pass ? dw2 : dw, dw0, (size_t)c * kk * sizeof *dw), memcpy(pass ? db2 : db, db0, (size_t)c * sizeof *db);
        npred_bf16_dw_backward_image(pass ? dx2 : dx, pass ? dw2 : dw, pass ? db2 : db, dy, x, wd, c, h, w, k, scr);
    }
    CHECK(!memcmp(dx, dx2, (size_t)c * hw * sizeof *dx) && !memcmp(dw, dw2, (size_t)c * kk * sizeof *dw) &&
              !memcmp(db, db2, (size_t)c * sizeof *db),
          "depthwise backward c %d %dx%d k %d: other bits with another scratch", c, h, w, k);
    double worst = 0, far = 0;
    for (int ch = 0; ch < c; ch++) {
        const uint16_t *d = dy + (size_t)ch * hw, *xc = x + (size_t)ch * hw;
        double s = db0[ch], m = fabs(s);
        for (size_t p = 0; p < hw; p++) s += from_bf16(d[p]), m += fabs(from_bf16(d[p]));
        worst = th_worst(worst, fabs(db[ch] - s) / (m * ((double)hw + 2) * 0x1p-24));
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                double g = dw0[ch * kk + ky * k + kx], gm = fabs(g);
                for (int y = 0; y < h; y++)
                    for (int xx = 0; xx < w; xx++) {
                        const int iy = y + ky - P, ix = xx + kx - P;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        const double t = from_bf16(d[y * w + xx]) * from_bf16(xc[iy * w + ix]);
                        g += t, gm += fabs(t);
                    }
                worst = th_worst(worst, fabs(dw[ch * kk + ky * k + kx] - g) / (gm * ((double)hw + 2) * 0x1p-24));
            }
        for (int iy = 0; iy < h; iy++) /* dx[iy][ix] = sum over taps of w[ky][kx] dy[iy - ky + P][ix - kx + P] */
            for (int ix = 0; ix < w; ix++) {
                double v = 0, vm = 0, u = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const int y = iy - ky + P, xx = ix - kx + P;
                        if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
                        const float wv = wd[ch * kk + ky * k + kx];
                        const double t = th_bf16(wv) * from_bf16(d[y * w + xx]);
                        v += t, vm += fabs(t), u += (double)wv * dyf[ch * hw + y * w + xx];
                    }
                const double e = fabs(dx[ch * hw + iy * w + ix] - v);
                worst = th_worst(worst, e / (vm * ((double)kk + 2) * 0x1p-24 + 1e-30));
                far = th_worst(far, fabs(dx[ch * hw + iy * w + ix] - u) / (vm + 1e-30));
            }
    }
    CHECK(worst <= 1.0, "depthwise backward c %d %dx%d k %d: error %.3g of its bound", c, h, w, k, worst);
    CHECK(far >= 1e-4, "depthwise backward c %d %dx%d k %d: the unrounded dx only %.3g away (bf16 ran?)", c, h, w,
          k, far);
    printf("  depthwise backward c %d %dx%d k %d: worst %.2f of the bound, unrounded dx %.2e away\n", c, h, w, k,
           worst, far);
    free(dyf), free(xf), free(wd), free(dw0), free(db0), free(dy), free(x), free(dx), free(dx2), free(dw), free(dw2);
    free(db), free(db2), free(scr);
}

static void test_dw_backward(void)
{
    if (!npred_gemm_bf16_available()) return; /* refused above (test_shapes) */
    check_dw_backward(64, 28, 56, 7, 21); /* the baseline's hidden layers */
    check_dw_backward(3, 9, 70, 7, 22);   /* three 32-pixel blocks, the last partial */
    check_dw_backward(2, 5, 33, 5, 23);
    check_dw_backward(3, 4, 7, 3, 24);
    check_dw_backward(2, 3, 3, 1, 25);
    check_dw_backward(1, 1, 1, 7, 26); /* a kernel larger than the plane */
}

static void test_shapes(void)
{
    if (!npred_gemm_bf16_available()) {
        CHECK(!npred_bf16_block_supported(7, 3, 1, 1), "bf16 block claimed without AVX-512 BF16");
        return;
    }
    CHECK(npred_bf16_block_supported(7, 3, 1, 1) && npred_bf16_block_supported(3, 1, 1, 1), "k 7 / 3 refused");
    CHECK(!npred_bf16_block_supported(7, 2, 1, 1) && !npred_bf16_block_supported(7, 3, 2, 1) &&
              !npred_bf16_block_supported(7, 3, 1, 2) && !npred_bf16_block_supported(9, 4, 1, 1) &&
              !npred_bf16_block_supported(4, 2, 1, 1),
          "an unsupported geometry accepted");
    check_block(6, 10, 9, 21, 7, 1, 1, 1);
    check_block(5, 7, 6, 70, 3, 0, 0, 2);   /* odd channels, a second 64-pixel block, rows past 4 */
    check_block(4, 9, 5, 17, 5, 1, 0, 3);   /* rows 1 past a block of 8, 5 rows */
    check_block(3, 3, 3, 3, 1, 1, 1, 4);    /* k 1 */
    check_block(8, 16, 7, 130, 7, 1, 1, 5); /* three 64-pixel blocks */
    check_block(64, 64, 28, 56, 7, 1, 1, 6); /* the baseline's hidden layers */
}

int main(void)
{
    RUN(test_shapes);
    RUN(test_pw_backward);
    RUN(test_dw_backward);
    return th_summary();
}
