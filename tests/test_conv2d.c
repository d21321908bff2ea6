/* conv2d kernels: PyTorch fixtures, finite differences on a double-precision
 * reference, fast implementations against the naive one, semantics (accumulate,
 * NULL grads, determinism, workspace) and bad arguments. */
#include "harness.h"
#include "kernels/conv2d.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef npred_conv2d_params P;

static const npred_conv2d_algo ALGOS[] = {NPRED_CONV2D_ALGO_NAIVE, NPRED_CONV2D_ALGO_GEMM,
                                          NPRED_CONV2D_ALGO_DEPTHWISE, NPRED_CONV2D_ALGO_AUTO};
static const char *ALGO_NAMES[] = {"auto", "naive", "gemm", "depthwise"};

static int applies(npred_conv2d_algo a, const P *p)
{
    return a != NPRED_CONV2D_ALGO_DEPTHWISE || npred_conv2d_is_depthwise(p);
}

static size_t nx_of(const P *p) { return (size_t)p->n * p->c * p->h * p->w; }
static size_t nw_of(const P *p) { return (size_t)p->o * (p->c / p->groups) * p->kh * p->kw; }
static size_t ny_of(const P *p)
{
    int oh = 0, ow = 0;
    npred_conv2d_output_size(p, &oh, &ow);
    return (size_t)p->n * p->o * oh * ow;
}

static float *rand_f32(size_t n, uint64_t *st)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)th_rand(st);
    return a;
}

/* ---------------------------------------------------------------- double reference */

/* y (N, O, OH, OW) = conv(x, w) + b, straight from the PyTorch formula */
static void ref_forward(double *y, const double *x, const double *w, const double *b, const P *p)
{
    int oh, ow;
    npred_conv2d_output_size(p, &oh, &ow);
    int cg = p->c / p->groups, og = p->o / p->groups;
    for (int n = 0; n < p->n; n++)
        for (int o = 0; o < p->o; o++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double s = b ? b[o] : 0;
                    for (int ci = 0; ci < cg; ci++) {
                        int c = (o / og) * cg + ci;
                        for (int ky = 0; ky < p->kh; ky++)
                            for (int kx = 0; kx < p->kw; kx++) {
                                int iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
                                int ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                                if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) continue;
                                s += w[((o * cg + ci) * p->kh + ky) * p->kw + kx] *
                                     x[((n * p->c + c) * p->h + iy) * p->w + ix];
                            }
                    }
                    y[((n * p->o + o) * oh + oy) * ow + ox] = s;
                }
}

static double ref_loss(const double *x, const double *w, const double *b, const double *u,
                       const P *p, double *ybuf)
{
    ref_forward(ybuf, x, w, b, p);
    double l = 0;
    size_t ny = ny_of(p);
    for (size_t i = 0; i < ny; i++) l += ybuf[i] * u[i];
    return l;
}

static double *to_f64(const float *a, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

/* central differences of loss = sum(conv(x, w, b) * u) w.r.t. every element of v */
static double *fd_grad(double *v, size_t nv, const double *x, const double *w, const double *b,
                       const double *u, const P *p)
{
    double *g = malloc(nv * sizeof *g), *yb = malloc(ny_of(p) * sizeof *yb);
    const double eps = 1e-3;
    for (size_t i = 0; i < nv; i++) {
        double keep = v[i];
        v[i] = keep + eps;
        double lp = ref_loss(x, w, b, u, p, yb);
        v[i] = keep - eps;
        double lm = ref_loss(x, w, b, u, p, yb);
        v[i] = keep;
        g[i] = (lp - lm) / (2 * eps);
    }
    free(yb);
    return g;
}

static int close_grad(const char *what, const float *got, const double *want, size_t n)
{
    double *g = to_f64(got, n);
    int ok = th_close_f64(what, g, want, n, 1e-4, 1e-4);
    free(g);
    return ok;
}

/* Every backward of every applicable algorithm against finite differences, and
 * every forward against the double reference. */
static void gradcheck(const char *name, P p, int with_bias, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    CHECK(ny > 0, "%s: bad test shape", name);
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *b = rand_f32((size_t)p.o, &st);
    float *u = rand_f32(ny, &st);
    double *xd = to_f64(x, nx), *wd = to_f64(w, nw), *bd = to_f64(b, (size_t)p.o), *ud = to_f64(u, ny);
    const double *bb = with_bias ? bd : NULL;
    double *gx = fd_grad(xd, nx, xd, wd, bb, ud, &p);
    double *gw = fd_grad(wd, nw, xd, wd, bb, ud, &p);
    double *gb = fd_grad(bd, (size_t)p.o, xd, wd, bb, ud, &p);
    double *yref = malloc(ny * sizeof *yref);
    ref_forward(yref, xd, wd, bb, &p);
    float *y = malloc(ny * sizeof *y), *dx = malloc(nx * sizeof *dx), *dw = malloc(nw * sizeof *dw);
    float *db = malloc((size_t)p.o * sizeof *db);
    char what[160];
    for (size_t a = 0; a < sizeof ALGOS / sizeof *ALGOS; a++) {
        if (!applies(ALGOS[a], &p)) continue;
        const char *an = ALGO_NAMES[ALGOS[a]];
        if (!CHECK_OK(npred_conv2d_forward_algo(ALGOS[a], y, x, w, with_bias ? b : NULL, &p, NULL, 0)))
            continue;
        double *yd = to_f64(y, ny);
        snprintf(what, sizeof what, "%s %s forward", name, an);
        th_close_f64(what, yd, yref, ny, 1e-5, 1e-5);
        free(yd);
        memset(dx, 0, nx * sizeof *dx);
        memset(dw, 0, nw * sizeof *dw);
        memset(db, 0, (size_t)p.o * sizeof *db);
        if (!CHECK_OK(npred_conv2d_backward_algo(ALGOS[a], dx, dw, with_bias ? db : NULL, u, x, w,
                                                 &p, NULL, 0)))
            continue;
        snprintf(what, sizeof what, "%s %s dx", name, an);
        close_grad(what, dx, gx, nx);
        snprintf(what, sizeof what, "%s %s dw", name, an);
        close_grad(what, dw, gw, nw);
        if (with_bias) {
            snprintf(what, sizeof what, "%s %s db", name, an);
            close_grad(what, db, gb, (size_t)p.o);
        }
    }
    free(x); free(w); free(b); free(u); free(xd); free(wd); free(bd); free(ud);
    free(gx); free(gw); free(gb); free(yref); free(y); free(dx); free(dw); free(db);
}

static P mk(int n, int c, int h, int w, int o, int kh, int kw, int sh, int sw, int ph, int pw,
            int dh, int dw, int g)
{
    P p = {.n = n, .c = c, .h = h, .w = w, .o = o, .kh = kh, .kw = kw, .stride_h = sh,
           .stride_w = sw, .pad_h = ph, .pad_w = pw, .dil_h = dh, .dil_w = dw, .groups = g};
    return p;
}

static void test_gradcheck_stride2_odd(void)
{
    gradcheck("k3 s2 p1 odd", npred_conv2d_params_square(2, 3, 7, 9, 4, 3, 2, 1, 1, 1), 1, 11);
}

static void test_gradcheck_rect_dilation(void)
{
    gradcheck("k3x2 s(1,2) p(2,0) d(2,1)", mk(1, 2, 8, 11, 3, 3, 2, 1, 2, 2, 0, 2, 1, 1), 1, 12);
}

static void test_gradcheck_groups2_bigpad(void)
{
    gradcheck("groups2 pad3 k3", npred_conv2d_params_square(2, 4, 6, 7, 6, 3, 1, 3, 1, 2), 1, 13);
}

static void test_gradcheck_stride_exceeds_kernel(void)
{
    gradcheck("k2 s3 d3 p2", npred_conv2d_params_square(2, 2, 10, 9, 3, 2, 3, 2, 3, 1), 0, 14);
}

static void test_gradcheck_pointwise(void)
{
    gradcheck("1x1", npred_conv2d_params_square(3, 5, 3, 5, 4, 1, 1, 0, 1, 1), 1, 15);
    gradcheck("1x1 s2 p1", npred_conv2d_params_square(2, 3, 5, 4, 2, 1, 2, 1, 1, 1), 1, 16);
}

static void test_gradcheck_depthwise_multiplier(void)
{
    gradcheck("dw k5 p2 m2", npred_conv2d_params_square(2, 3, 9, 10, 6, 5, 1, 2, 1, 3), 1, 17);
}

static void test_gradcheck_depthwise_stride_dilation(void)
{
    gradcheck("dw k3 s2 d2 p3", npred_conv2d_params_square(2, 4, 11, 13, 4, 3, 2, 3, 2, 4), 1, 18);
    gradcheck("dw k3 s(2,1) p1", mk(1, 2, 9, 7, 2, 3, 3, 2, 1, 1, 1, 1, 1, 2), 0, 19);
    gradcheck("dw k3x5 s(1,3) d(1,2) m3", mk(2, 2, 6, 17, 6, 3, 5, 1, 3, 0, 4, 1, 2, 2), 1, 20);
}

static void test_gradcheck_depthwise_wide(void)
{
    /* width 70: a 4-vector block plus a 1-vector tail; odd height: a 1-row block */
    gradcheck("dw k7 p3 wide", npred_conv2d_params_square(1, 2, 5, 70, 2, 7, 1, 3, 1, 2), 1, 21);
    /* kernel wider than 8: two kx blocks in the dw kernel */
    gradcheck("dw k3x11 p(1,6)", mk(1, 2, 4, 21, 2, 3, 11, 1, 1, 1, 6, 1, 1, 2), 1, 22);
    /* the dw row groups (AVX-512): 4 filter rows = a group of 3 and one of 1, over 2
     * output rows, so that every group reads the zero rows above and below dy */
    gradcheck("dw k4x8 p(1,3) 2 rows", mk(2, 2, 2, 19, 2, 4, 8, 1, 1, 1, 3, 1, 1, 2), 1, 24);
}

static void test_gradcheck_depthwise_padding(void)
{
    /* the padded scratch planes: a width of whole vectors (no tail), and a padding
     * wider than the filter reaches (the dx correlation then crops dy: top/left < 0) */
    gradcheck("dw k3 p1 w32", mk(1, 2, 4, 32, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2), 1, 25);
    gradcheck("dw k3 p(3,4) crop", mk(2, 2, 4, 6, 2, 3, 3, 1, 1, 3, 4, 1, 1, 2), 1, 26);
}

static void test_gradcheck_depthwise_channel_blocks(void)
{
    /* dw runs over blocks of 8 output channels: 21 = 8 + 8 + 5, and the block
     * boundary at oc = 8 splits input channel 2 (oc 6, 7, 8 with multiplier 3) */
    gradcheck("dw k3 p1 m3 21 ch", npred_conv2d_params_square(2, 7, 5, 6, 21, 3, 1, 1, 1, 7), 1, 23);
}

/* forward, dx and dw of one algorithm with 1 and with 2 (or more) threads: bit-identical */
static void threads_case(const char *name, npred_conv2d_algo algo, P p, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *u = rand_f32(ny, &st), *b = rand_f32((size_t)p.o, &st);
    float *y1 = malloc(ny * 4), *yn = malloc(ny * 4);
    float *dx1 = calloc(nx, 4), *dxn = calloc(nx, 4), *dw1 = calloc(nw, 4), *dwn = calloc(nw, 4);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK_OK(npred_conv2d_forward_algo(algo, y1, x, w, b, &p, NULL, 0));
    CHECK_OK(npred_conv2d_backward_algo(algo, dx1, dw1, NULL, u, x, w, &p, NULL, 0));
    omp_set_num_threads(nt > 1 ? nt : 2);
    CHECK_OK(npred_conv2d_forward_algo(algo, yn, x, w, b, &p, NULL, 0));
    CHECK_OK(npred_conv2d_backward_algo(algo, dxn, dwn, NULL, u, x, w, &p, NULL, 0));
    omp_set_num_threads(nt);
    int v = npred_gemm_avx512_active();
    CHECK(memcmp(y1, yn, ny * 4) == 0, "%s (avx512 %d): forward depends on the thread count", name, v);
    CHECK(memcmp(dx1, dxn, nx * 4) == 0, "%s (avx512 %d): dx depends on the thread count", name, v);
    CHECK(memcmp(dw1, dwn, nw * 4) == 0, "%s (avx512 %d): dw depends on the thread count", name, v);
    free(x); free(w); free(u); free(b); free(y1); free(yn); free(dx1); free(dxn); free(dw1); free(dwn);
}

/* The depthwise dw (channel blocks) and forward/dx (planes) */
static void test_depthwise_thread_independent(void)
{
    threads_case("depthwise", NPRED_CONV2D_ALGO_DEPTHWISE, npred_conv2d_params_square(3, 7, 13, 21, 21, 7, 1, 3, 1, 7),
                 61);
    /* one input channel per output channel: the dx inside the dw loop (channel blocks) */
    threads_case("depthwise 7x7 m1", NPRED_CONV2D_ALGO_DEPTHWISE,
                 npred_conv2d_params_square(3, 20, 13, 56, 20, 7, 1, 3, 1, 20), 62);
}

/* The AVX-512 row blocks of the depthwise forward and dx and the row groups of dw
 * (height stride and dilation 1) sum in the order of the generic blocks:
 * bit-identical results where the generic blocks use FMA too */
static void rows_case(const char *name, P p, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *u = rand_f32(ny, &st), *b = rand_f32((size_t)p.o, &st);
    float *y[2], *dx[2], *dw[2];
    for (int v = 0; v < 2; v++) {
        y[v] = malloc(ny * 4);
        dx[v] = rand_f32(nx, &(uint64_t){5}); /* dx and dw accumulate onto the same start */
        dw[v] = rand_f32(nw, &(uint64_t){6});
        npred_gemm_use_avx512(v);
        CHECK_OK(npred_conv2d_forward_depthwise(y[v], x, w, b, &p, NULL, 0));
        CHECK_OK(npred_conv2d_backward_depthwise(dx[v], NULL, NULL, u, x, w, &p, NULL, 0));
        CHECK_OK(npred_conv2d_backward_depthwise(NULL, dw[v], NULL, u, x, w, &p, NULL, 0));
    }
    /* dx and dw in one call (with one input channel per output channel, the dx of a
     * plane then runs inside the dw loop, on the same padded dy): the bits of the
     * separate calls */
    float *dx2 = rand_f32(nx, &(uint64_t){5}), *dw2 = rand_f32(nw, &(uint64_t){6});
    CHECK_OK(npred_conv2d_backward_depthwise(dx2, dw2, NULL, u, x, w, &p, NULL, 0));
    CHECK(memcmp(dx2, dx[1], nx * 4) == 0, "%s: depthwise dx with dw differs from dx alone", name);
    CHECK(memcmp(dw2, dw[1], nw * 4) == 0, "%s: depthwise dw with dx differs from dw alone", name);
    free(dx2);
    free(dw2);
    npred_gemm_use_avx512(-1);
#if defined(__FMA__) || defined(__AVX512F__)
    CHECK(memcmp(y[0], y[1], ny * 4) == 0, "%s: depthwise forward differs between the kernels", name);
    CHECK(memcmp(dx[0], dx[1], nx * 4) == 0, "%s: depthwise dx differs between the kernels", name);
    CHECK(memcmp(dw[0], dw[1], nw * 4) == 0, "%s: depthwise dw differs between the kernels", name);
#else
    /* a build without FMA (baseline x86-64, e.g. the sanitizer build) rounds the
     * generic blocks' multiply and add separately: close, not identical */
    th_close_f32(name, y[1], y[0], ny, 1e-5, 1e-5);
    th_close_f32(name, dx[1], dx[0], nx, 1e-5, 1e-5);
    th_close_f32(name, dw[1], dw[0], nw, 1e-5, 1e-5);
#endif
    free(x); free(w); free(u); free(b); free(y[0]); free(y[1]); free(dx[0]); free(dx[1]); free(dw[0]); free(dw[1]);
}

static void test_depthwise_rows_bit_identical(void)
{
    /* 28 rows: 4 blocks of 6 and one of 4; 56 columns: 3 vectors and a masked one */
    rows_case("7x7 p3", npred_conv2d_params_square(2, 3, 28, 56, 3, 7, 1, 3, 1, 3), 91);
    /* 13 rows (a block of 1), 70 columns (a 4-vector block and a 6-column one), multiplier 2 */
    rows_case("5x5 p2 m2", npred_conv2d_params_square(2, 3, 13, 70, 6, 5, 1, 2, 1, 3), 92);
    /* width dilation: P.dil_w = 2 (height 1), kernel 3x5 */
    rows_case("3x5 d(1,2)", mk(1, 2, 9, 23, 2, 3, 5, 1, 1, 1, 4, 1, 2, 2), 93);
    /* dw row groups: 4 filter rows (a group of 3 and one of 1) over 2 output rows, 8 wide */
    rows_case("4x8 2 rows", mk(2, 3, 2, 37, 3, 4, 8, 1, 1, 1, 3, 1, 1, 3), 94);
    /* 2 filter rows (one group of 2), one output row */
    rows_case("2x3 1 row", mk(1, 2, 2, 20, 2, 2, 3, 1, 1, 0, 1, 1, 1, 2), 95);
    /* 9x9: wider than 8, the generic dw kernel on both sides */
    rows_case("9x9 p4", npred_conv2d_params_square(1, 2, 12, 30, 2, 9, 1, 4, 1, 2), 96);
    /* the 7x7 blocks: 13 rows (blocks of 6, 6, 1), 70 columns (a 4-vector block and
     * a 6-column one of the generic rows kernel), multiplier 2 */
    rows_case("7x7 p3 13x70 m2", npred_conv2d_params_square(2, 3, 13, 70, 6, 7, 1, 3, 1, 3), 97);
    /* no padding (dx: a padding of 6, blocks that start and end in zero rows), 54 columns */
    rows_case("7x7 p0 9x60", npred_conv2d_params_square(1, 2, 9, 60, 2, 7, 1, 0, 1, 2), 98);
    /* unequal padding (5, 2): 15 x 50 outputs */
    rows_case("7x7 p(5,2)", mk(1, 2, 11, 52, 2, 7, 7, 1, 1, 5, 2, 1, 1, 2), 99);
    /* the rounds of 7 input rows of the 49-56-wide planes (plane_fwd_k7_rounds): 42 x 52
     * outputs (3 rounds of tails; its dx, 42 x 50, too), padding (3, 4) */
    rows_case("7x7 p(3,4) 42x52", mk(1, 2, 42, 50, 2, 7, 7, 1, 1, 3, 4, 1, 1, 2), 100);
    /* 56 x 55 outputs, padding (2, 6): top and bottom padding of 2 rows */
    rows_case("7x7 p(2,6) 56x55", mk(1, 2, 58, 49, 2, 7, 7, 1, 1, 2, 6, 1, 1, 2), 101);
    /* 28 x 56 outputs with 5 padding rows on top and bottom: tail vectors half padding at
     * both ends (the high half's by a masked FMA), multiplier 2 */
    rows_case("7x7 p(5,3) 28x56 m2", mk(2, 2, 24, 56, 4, 7, 7, 1, 1, 5, 3, 1, 1, 2), 102);
    /* no padding: 28 x 56 outputs of 34 x 62 inputs */
    rows_case("7x7 p0 28x56", npred_conv2d_params_square(1, 2, 34, 62, 2, 7, 1, 0, 1, 2), 103);
    /* 14 x 60 outputs of 20 x 66 inputs: the direct dw's vector after a row's last (read for
     * its shifted vectors) holds source columns 64 and 65 */
    rows_case("7x7 p0 14x60", npred_conv2d_params_square(1, 2, 20, 66, 2, 7, 1, 0, 1, 2), 104);
}

/* The 7x7 blocks skip the zero rows of the padding, except for a bias of -0: there a
 * product with a zero row turns an output of -0 into +0 or keeps it, by the sign of the
 * weight. With all-zero input every output is such a sum of zeros: the bits must
 * still be those of the generic kernel. Channel 0: every weight negative (every output
 * -0); channel 1: filter rows 0-3 negative, 4-6 positive (the bottom rows' skipped
 * products would keep a -0 that the generic kernel turns into +0). */
static void test_depthwise_negative_zero_bias(void)
{
    P p = npred_conv2d_params_square(1, 4, 10, 56, 4, 7, 1, 3, 1, 4);
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    float *x = calloc(nx, 4), *w = malloc(nw * 4), *y[2];
    for (size_t i = 0; i < nw; i++) {
        size_t c = i / 49, ky = i % 49 / 7;
        w[i] = c == 0 || ky <= 3 ? -0.5f : 0.25f;
    }
    const float b[4] = {-0.0f, -0.0f, 0.0f, 1.0f};
    for (int v = 0; v < 2; v++) {
        y[v] = malloc(ny * 4);
        npred_gemm_use_avx512(v);
        CHECK_OK(npred_conv2d_forward_depthwise(y[v], x, w, b, &p, NULL, 0));
    }
    npred_gemm_use_avx512(-1);
    CHECK(memcmp(y[0], y[1], ny * 4) == 0, "depthwise forward with a bias of -0: the kernels differ");
    int neg = 0;
    for (size_t i = 0; i < ny; i++) neg += signbit(y[1][i]) != 0;
    CHECK(neg > 0, "a bias of -0 over zeros: expected some outputs of -0");
    free(x); free(w); free(y[0]); free(y[1]);
}

/* The gemm algorithm (AVX-512 kernels and the OpenBLAS fallback): dw is summed
 * per fixed chunk of images, the chunks in order. */
static void test_gemm_thread_independent(void)
{
    for (int mode = 1; mode >= 0; mode--) {
        npred_gemm_use_avx512(mode); /* 1 is ignored without AVX-512: the fallback then runs twice */
        threads_case("gemm 1x1", NPRED_CONV2D_ALGO_GEMM, npred_conv2d_params_square(37, 16, 9, 11, 24, 1, 1, 0, 1, 1),
                     71);
        threads_case("gemm 9x9", NPRED_CONV2D_ALGO_GEMM, npred_conv2d_params_square(5, 2, 17, 20, 8, 9, 1, 0, 1, 1),
                     72);
        threads_case("gemm 3x3 g2", NPRED_CONV2D_ALGO_GEMM,
                     npred_conv2d_params_square(6, 4, 10, 7, 6, 3, 2, 1, 1, 2), 73);
    }
    npred_gemm_use_avx512(-1);
}

/* ---------------------------------------------------------------- fast vs naive */

static void compare_all(const char *name, P p, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *b = rand_f32((size_t)p.o, &st);
    float *u = rand_f32(ny, &st);
    float *yr = malloc(ny * sizeof *yr), *y = malloc(ny * sizeof *y);
    float *dxr = calloc(nx, sizeof *dxr), *dwr = calloc(nw, sizeof *dwr), *dbr = calloc((size_t)p.o, 4);
    float *dx = malloc(nx * sizeof *dx), *dw = malloc(nw * sizeof *dw), *db = malloc((size_t)p.o * 4);
    CHECK_OK(npred_conv2d_forward_naive(yr, x, w, b, &p));
    CHECK_OK(npred_conv2d_backward_naive(dxr, dwr, dbr, u, x, w, &p));
    /* sums of K terms of magnitude <= 1: float error grows like sqrt(K) */
    double kterms = (double)(p.c / p.groups) * p.kh * p.kw;
    double oterms = (double)(p.o / p.groups) * p.kh * p.kw, mterms = (double)ny / p.o;
    double atol_y = 2e-6 * sqrt(kterms > oterms ? kterms : oterms) + 1e-6;
    double atol_g = 3e-7 * mterms + 1e-5;
    char what[160];
    for (size_t a = 1; a < sizeof ALGOS / sizeof *ALGOS; a++) {
        if (!applies(ALGOS[a], &p)) continue;
        const char *an = ALGO_NAMES[ALGOS[a]];
        size_t wsb = npred_conv2d_workspace_size(&p, ALGOS[a]);
        void *ws = malloc(wsb ? wsb : 1);
        CHECK_OK(npred_conv2d_forward_algo(ALGOS[a], y, x, w, b, &p, ws, wsb));
        snprintf(what, sizeof what, "%s %s forward vs naive", name, an);
        th_close_f32(what, y, yr, ny, 1e-4, atol_y);
        memset(dx, 0, nx * sizeof *dx);
        memset(dw, 0, nw * sizeof *dw);
        memset(db, 0, (size_t)p.o * sizeof *db);
        CHECK_OK(npred_conv2d_backward_algo(ALGOS[a], dx, dw, db, u, x, w, &p, ws, wsb));
        snprintf(what, sizeof what, "%s %s dx vs naive", name, an);
        th_close_f32(what, dx, dxr, nx, 1e-4, atol_y);
        snprintf(what, sizeof what, "%s %s dw vs naive", name, an);
        th_close_f32(what, dw, dwr, nw, 1e-4, atol_g);
        snprintf(what, sizeof what, "%s %s db vs naive", name, an);
        th_close_f32(what, db, dbr, (size_t)p.o, 1e-4, atol_g);
        free(ws);
    }
    free(x); free(w); free(b); free(u); free(yr); free(y);
    free(dxr); free(dwr); free(dbr); free(dx); free(dw); free(db);
}

static void test_fast_vs_naive(void)
{
    compare_all("k5 p2 8->16", npred_conv2d_params_square(5, 8, 20, 37, 16, 5, 1, 2, 1, 1), 31);
    compare_all("k9 1->8 nopad", npred_conv2d_params_square(3, 1, 36, 64, 8, 9, 1, 0, 1, 1), 32);
    compare_all("1x1 16->24", npred_conv2d_params_square(4, 16, 28, 56, 24, 1, 1, 0, 1, 1), 33);
    compare_all("k3 s2 groups4", npred_conv2d_params_square(3, 8, 19, 23, 12, 3, 2, 1, 1, 4), 34);
    compare_all("dw k7 p3 28x56", npred_conv2d_params_square(4, 16, 28, 56, 16, 7, 1, 3, 1, 16), 35);
    compare_all("dw k5 s2 m2", npred_conv2d_params_square(3, 6, 21, 30, 12, 5, 2, 2, 1, 6), 36);
    compare_all("dw k7 p3 m3 21 ch", npred_conv2d_params_square(3, 7, 28, 56, 21, 7, 1, 3, 1, 7), 38);
    compare_all("batch 1 k3", npred_conv2d_params_square(1, 6, 17, 19, 10, 3, 1, 1, 1, 1), 37);
    /* the backward's im2col blocks of 96 rows: 245 rows per group (two blocks and a
     * part, a block ending inside a channel), groups, stride, dilation, padding */
    compare_all("k7 s2 d2 p3 groups2", npred_conv2d_params_square(2, 10, 23, 27, 6, 7, 2, 3, 2, 2), 39);
    /* the weight gradient from the (padded) input: row stride 2, column stride 1,
     * dilation, groups, rectangular padding; and the baseline's 9x9 1->64 */
    compare_all("k3x5 sy2 d2 p1x3 groups2", mk(3, 4, 15, 21, 6, 3, 5, 2, 1, 1, 3, 2, 2, 2), 40);
    compare_all("k9 1->64 36x64", npred_conv2d_params_square(2, 1, 36, 64, 64, 9, 1, 0, 1, 1), 41);
    compare_all("k9 p4 1->16", npred_conv2d_params_square(2, 1, 20, 30, 16, 9, 1, 4, 1, 1), 42);
    compare_all("k3 1->64 wide rows", npred_conv2d_params_square(2, 1, 6, 300, 64, 3, 1, 1, 1, 1), 43);
    /* im2col matrices over 1 MB: the forward in bands of output rows (a partial last
     * band; the 144 x 256 first layer; row stride 2, dilation and groups) */
    compare_all("k9 p4 1->64 144x256 bands", npred_conv2d_params_square(1, 1, 144, 256, 64, 9, 1, 4, 1, 1), 44);
    compare_all("k5 sy2 d2 groups2 bands", mk(2, 4, 80, 80, 6, 5, 5, 2, 1, 2, 2, 2, 1, 2), 45);
}

/* ---------------------------------------------------------------- semantics */

static void test_accumulate_and_null_grads(void)
{
    P ps[2] = {npred_conv2d_params_square(3, 4, 9, 8, 6, 3, 1, 1, 1, 2),
               npred_conv2d_params_square(3, 4, 9, 8, 8, 3, 1, 1, 1, 4)};
    for (int k = 0; k < 2; k++) {
        P p = ps[k];
        uint64_t st = 41 + k;
        size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p), no = (size_t)p.o;
        float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *u = rand_f32(ny, &st);
        float *dx0 = rand_f32(nx, &st), *dw0 = rand_f32(nw, &st), *db0 = rand_f32(no, &st);
        float *fx = calloc(nx, 4), *fw = calloc(nw, 4), *fb = calloc(no, 4);
        float *ax = malloc(nx * 4), *aw = malloc(nw * 4), *ab = malloc(no * 4);
        float *ow = calloc(nw, 4);
        npred_conv2d_algo algo = npred_conv2d_choose_algo(&p);
        CHECK_OK(npred_conv2d_backward(fx, fw, fb, u, x, w, &p, NULL, 0));
        /* dw alone (x only; w may be NULL) gives the same dw */
        CHECK_OK(npred_conv2d_backward(NULL, ow, NULL, u, x, NULL, &p, NULL, 0));
        CHECK(memcmp(ow, fw, nw * 4) == 0, "%s: dw alone differs from dw with dx", ALGO_NAMES[algo]);
        memcpy(ax, dx0, nx * 4);
        memcpy(aw, dw0, nw * 4);
        memcpy(ab, db0, no * 4);
        CHECK_OK(npred_conv2d_backward(ax, aw, ab, u, x, w, &p, NULL, 0));
        /* += : start + fresh gradient, up to float rounding of the order of adds */
        for (size_t i = 0; i < nx; i++) fx[i] += dx0[i];
        for (size_t i = 0; i < nw; i++) fw[i] += dw0[i];
        for (size_t i = 0; i < no; i++) fb[i] += db0[i];
        th_close_f32(ALGO_NAMES[algo], ax, fx, nx, 1e-5, 1e-5);
        th_close_f32(ALGO_NAMES[algo], aw, fw, nw, 1e-5, 1e-5);
        th_close_f32(ALGO_NAMES[algo], ab, fb, no, 1e-5, 1e-5);
        free(x); free(w); free(u); free(dx0); free(dw0); free(db0);
        free(fx); free(fw); free(fb); free(ax); free(aw); free(ab); free(ow);
    }
}

/* npred_conv2d_backward_set overwrites dx (whatever it held) with the bits of
 * npred_conv2d_backward into a zeroed dx; dw and db are added to as there */
static void set_case(const char *name, P p, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p), no = (size_t)p.o;
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *u = rand_f32(ny, &st);
    float *dx1 = rand_f32(nx, &st), *dw1 = rand_f32(nw, &st), *db1 = rand_f32(no, &st);
    float *dx2 = calloc(nx, 4), *dw2 = malloc(nw * 4), *db2 = malloc(no * 4), *dw3 = malloc(nw * 4);
    memcpy(dw2, dw1, nw * 4), memcpy(db2, db1, no * 4), memcpy(dw3, dw1, nw * 4);
    size_t wsb = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_AUTO);
    void *ws = malloc(wsb ? wsb : 1);
    CHECK_OK(npred_conv2d_backward_set(dx1, dw1, db1, u, x, w, &p, ws, wsb));
    CHECK_OK(npred_conv2d_backward(dx2, dw2, db2, u, x, w, &p, ws, wsb));
    CHECK(memcmp(dx1, dx2, nx * 4) == 0, "%s avx512=%d: backward_set dx differs from backward into zeros", name,
          npred_gemm_avx512_active());
    CHECK(memcmp(dw1, dw2, nw * 4) == 0 && memcmp(db1, db2, no * 4) == 0,
          "%s avx512=%d: backward_set dw/db differ from backward", name, npred_gemm_avx512_active());
    /* without dx: the weight gradient alone, the same bits */
    CHECK_OK(npred_conv2d_backward_set(NULL, dw3, NULL, u, x, w, &p, NULL, 0));
    CHECK(memcmp(dw3, dw2, nw * 4) == 0, "%s: backward_set without dx gives another dw", name);
    free(x), free(w), free(u), free(dx1), free(dw1), free(db1), free(dx2), free(dw2), free(db2), free(dw3), free(ws);
}

static void test_backward_set(void)
{
    for (int mode = 1; mode >= 0; mode--) {
        npred_gemm_use_avx512(mode);
        set_case("1x1 64->64 28x56", npred_conv2d_params_square(2, 64, 28, 56, 64, 1, 1, 0, 1, 1), 91);
        set_case("1x1 groups 2", npred_conv2d_params_square(3, 12, 9, 11, 10, 1, 1, 0, 1, 2), 92);
        set_case("9x9 1->8", npred_conv2d_params_square(2, 1, 20, 24, 8, 9, 1, 0, 1, 1), 93);
        set_case("3x3 s2 p1 g2", npred_conv2d_params_square(3, 4, 10, 7, 6, 3, 2, 1, 1, 2), 94);
        set_case("dw 7x7 p3", npred_conv2d_params_square(2, 8, 12, 14, 8, 7, 1, 3, 1, 8), 95);
        /* the depthwise dx written plane by plane: the 7x7 kernel straight from dy with
         * multiplier 2 (the first output channel writes, the second adds), and the
         * scalar strided dx (its planes zeroed first) */
        set_case("dw 7x7 p3 28x56 m2", npred_conv2d_params_square(2, 3, 28, 56, 6, 7, 1, 3, 1, 3), 96);
        set_case("dw 3x3 s2 p1 m2", npred_conv2d_params_square(2, 3, 9, 10, 6, 3, 2, 1, 1, 3), 97);
    }
    npred_gemm_use_avx512(-1);
    /* bad parameters are reported as by the backward */
    P bad = npred_conv2d_params_square(1, 3, 5, 5, 4, 1, 1, 0, 1, 2);
    float v[100] = {0};
    CHECK(npred_conv2d_backward_set(v, v, NULL, v, v, v, &bad, NULL, 0) == NPRED_ERR_ARG,
          "backward_set accepted groups that do not divide the channels");
}

/* the gemm algorithm with the OpenBLAS fallback kernels against the naive one */
static void test_gemm_fallback_vs_naive(void)
{
    npred_gemm_use_avx512(0);
    compare_all("gemm fallback 1x1", npred_conv2d_params_square(3, 5, 6, 7, 4, 1, 1, 0, 1, 1), 81);
    compare_all("gemm fallback 5x5 p2 g1", npred_conv2d_params_square(2, 3, 9, 8, 5, 5, 1, 2, 1, 1), 82);
    npred_gemm_use_avx512(-1);
}

static void test_deterministic(void)
{
    P p = npred_conv2d_params_square(7, 3, 15, 16, 5, 3, 1, 1, 1, 1);
    uint64_t st = 51;
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    float *x = rand_f32(nx, &st), *w = rand_f32(nw, &st), *u = rand_f32(ny, &st);
    size_t wsb = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_GEMM);
    CHECK(wsb > 0, "workspace size 0");
    void *ws = malloc(wsb);
    float *a = calloc(nw, 4), *b = calloc(nw, 4), *c = calloc(nw, 4);
    float *dx = calloc(nx, 4), *ya = malloc(ny * 4), *yb = malloc(ny * 4);
    CHECK_OK(npred_conv2d_backward_gemm(dx, a, NULL, u, x, w, &p, ws, wsb));
    CHECK_OK(npred_conv2d_backward_gemm(NULL, b, NULL, u, x, w, &p, ws, wsb));
    CHECK(memcmp(a, b, nw * 4) == 0, "gemm dw differs between two runs");
    /* a workspace for one thread only still works (fewer threads), close result */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    size_t one = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_GEMM);
    omp_set_num_threads(nt);
    CHECK(one < wsb || nt == 1, "one-thread workspace %zu not smaller than %zu", one, wsb);
    CHECK_OK(npred_conv2d_backward_gemm(NULL, c, NULL, u, x, w, &p, ws, one));
    th_close_f32("gemm dw on a one-thread workspace", c, a, nw, 1e-5, 1e-5);
    CHECK_OK(npred_conv2d_forward(ya, x, w, NULL, &p, ws, wsb));
    CHECK_OK(npred_conv2d_forward(yb, x, w, NULL, &p, (char *)ws + 3, wsb - 3));
    CHECK(memcmp(ya, yb, ny * 4) == 0, "forward depends on workspace alignment");
    free(ws); free(x); free(w); free(u); free(a); free(b); free(c); free(dx); free(ya); free(yb);
}

static void test_bad_arguments(void)
{
    float buf[4096] = {0};
    P good = npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 1, 1, 1, 1);
    int oh = -1, ow = -1;
    CHECK_OK(npred_conv2d_output_size(&good, &oh, &ow));
    CHECK(oh == 5 && ow == 5, "output size %dx%d, want 5x5", oh, ow);
    P bad[] = {
        npred_conv2d_params_square(0, 2, 5, 5, 2, 3, 1, 1, 1, 1),  /* N = 0 */
        npred_conv2d_params_square(1, 0, 5, 5, 2, 3, 1, 1, 1, 1),  /* C = 0 */
        npred_conv2d_params_square(1, 2, 0, 5, 2, 3, 1, 1, 1, 1),  /* H = 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 0, 3, 1, 1, 1, 1),  /* O = 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 0, 1, 1, 1, 1),  /* k = 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 0, 1, 1, 1),  /* stride 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 1, -1, 1, 1), /* pad < 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 1, 1, 0, 1),  /* dilation 0 */
        npred_conv2d_params_square(1, 3, 5, 5, 2, 3, 1, 1, 1, 2),  /* groups !| C */
        npred_conv2d_params_square(1, 4, 5, 5, 3, 3, 1, 1, 1, 2),  /* groups !| O */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 1, 1, 1, 0),  /* groups 0 */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 7, 1, 0, 1, 1),  /* kernel > input */
        npred_conv2d_params_square(1, 2, 5, 5, 2, 3, 1, 0, 3, 1),  /* dilated kernel > input */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(npred_conv2d_output_size(&bad[i], &oh, &ow) == NPRED_ERR_ARG, "case %zu accepted", i);
        CHECK(strlen(npred_last_error()) > 0, "case %zu: no message", i);
        CHECK(npred_conv2d_workspace_size(&bad[i], NPRED_CONV2D_ALGO_AUTO) == 0, "case %zu ws", i);
        for (int a = 0; a < 4; a++) {
            npred_status s = npred_conv2d_forward_algo(ALGOS[a], buf, buf, buf, NULL, &bad[i], NULL, 0);
            CHECK(s == NPRED_ERR_ARG, "case %zu %s forward: status %d", i, ALGO_NAMES[ALGOS[a]], s);
            s = npred_conv2d_backward_algo(ALGOS[a], buf, buf, buf, buf, buf, buf, &bad[i], NULL, 0);
            CHECK(s == NPRED_ERR_ARG, "case %zu %s backward: status %d", i, ALGO_NAMES[ALGOS[a]], s);
        }
    }
    CHECK(npred_conv2d_output_size(NULL, &oh, &ow) == NPRED_ERR_ARG, "NULL params accepted");
    CHECK(npred_conv2d_forward(buf, buf, buf, NULL, NULL, NULL, 0) == NPRED_ERR_ARG, "NULL params");
    /* depthwise kernel on a dense conv */
    CHECK(npred_conv2d_forward_depthwise(buf, buf, buf, NULL, &good, NULL, 0) == NPRED_ERR_ARG,
          "depthwise accepted groups=1");
    CHECK(strstr(npred_last_error(), "groups") != NULL, "message: %s", npred_last_error());
    /* missing tensors */
    for (int a = 0; a < 3; a++) {
        npred_conv2d_algo al = ALGOS[a];
        P q = good;
        if (al == NPRED_CONV2D_ALGO_DEPTHWISE) q.groups = 2;
        CHECK(npred_conv2d_forward_algo(al, NULL, buf, buf, NULL, &q, NULL, 0) == NPRED_ERR_ARG, "y NULL");
        CHECK(npred_conv2d_forward_algo(al, buf, NULL, buf, NULL, &q, NULL, 0) == NPRED_ERR_ARG, "x NULL");
        CHECK(npred_conv2d_backward_algo(al, buf, NULL, NULL, buf, buf, NULL, &q, NULL, 0) == NPRED_ERR_ARG,
              "dx without w");
        CHECK(npred_conv2d_backward_algo(al, NULL, buf, NULL, buf, NULL, buf, &q, NULL, 0) == NPRED_ERR_ARG,
              "dw without x");
        CHECK(npred_conv2d_backward_algo(al, buf, buf, NULL, NULL, buf, buf, &q, NULL, 0) == NPRED_ERR_ARG,
              "dy NULL");
        if (al != NPRED_CONV2D_ALGO_NAIVE)
            CHECK(npred_conv2d_forward_algo(al, buf, buf, buf, NULL, &q, buf, 8) == NPRED_ERR_ARG,
                  "%s: tiny workspace accepted", ALGO_NAMES[al]);
    }
    CHECK(npred_conv2d_forward_algo((npred_conv2d_algo)99, buf, buf, buf, NULL, &good, NULL, 0) ==
              NPRED_ERR_ARG, "unknown algorithm accepted");
}

/* ---------------------------------------------------------------- PyTorch fixtures */

static void fixture(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *args = th_get(c.json, "args", NULL);
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs);
    float *w = th_load_f32(&c, "params/weight.npy", NULL);
    int has_bias = cJSON_IsTrue(th_get(args, "bias", NULL));
    float *b = has_bias ? th_load_f32(&c, "params/bias.npy", NULL) : NULL;
    float *u = th_load_f32(&c, "upstream.npy", NULL);
    if (!x || !w || !u || (has_bias && !b) || !CHECK(xs.ndim == 4, "%s: input ndim %d", name, xs.ndim))
        goto out;
    int k = (int)th_num(args, 0, "kernel_size", NULL);
    P p = npred_conv2d_params_square((int)xs.shape[0], (int)xs.shape[1], (int)xs.shape[2],
                                     (int)xs.shape[3], (int)th_num(args, 0, "out_channels", NULL), k,
                                     (int)th_num(args, 1, "stride", NULL),
                                     (int)th_num(args, 0, "padding", NULL),
                                     (int)th_num(args, 1, "dilation", NULL),
                                     (int)th_num(args, 1, "groups", NULL));
    CHECK(p.c == (int)th_num(args, 0, "in_channels", NULL), "%s: in_channels", name);
    size_t nx = nx_of(&p), nw = nw_of(&p), ny = ny_of(&p);
    int oh = 0, ow = 0;
    npred_conv2d_output_size(&p, &oh, &ow);
    float *y = malloc(ny * 4), *dx = malloc(nx * 4), *dw = malloc(nw * 4), *db = malloc((size_t)p.o * 4);
    int tested = 0;
    for (size_t a = 0; a < sizeof ALGOS / sizeof *ALGOS; a++) {
        if (!applies(ALGOS[a], &p)) continue;
        tested++;
        size_t wsb = npred_conv2d_workspace_size(&p, ALGOS[a]);
        void *ws = malloc(wsb ? wsb : 1);
        if (CHECK_OK(npred_conv2d_forward_algo(ALGOS[a], y, x, w, b, &p, ws, wsb)))
            CHECK(th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(p.n, p.o, oh, ow)), "%s forward", ALGO_NAMES[ALGOS[a]]);
        memset(dx, 0, nx * 4);
        memset(dw, 0, nw * 4);
        memset(db, 0, (size_t)p.o * 4);
        if (CHECK_OK(npred_conv2d_backward_algo(ALGOS[a], dx, dw, has_bias ? db : NULL, u, x, w, &p, ws, wsb))) {
            CHECK(th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape), "%s dx", ALGO_NAMES[ALGOS[a]]);
            CHECK(th_compare_dims(&c, "grads", "grads/weight.npy", dw, TH_DIMS(p.o, p.c / p.groups, p.kh, p.kw)), "%s dw", ALGO_NAMES[ALGOS[a]]);
            if (has_bias)
                CHECK(th_compare_dims(&c, "grads", "grads/bias.npy", db, TH_DIMS(p.o)), "%s db",
                      ALGO_NAMES[ALGOS[a]]);
        }
        free(ws);
    }
    CHECK(tested >= 3, "%s: only %d implementations tested", name, tested);
    free(y); free(dx); free(dw); free(db);
out:
    free(x); free(w); free(b); free(u);
    th_case_close(&c);
}

static void test_fixture_depthwise_k7(void) { fixture("conv2d_depthwise_k7"); }
static void test_fixture_k3_s2_d2(void) { fixture("conv2d_k3_s2_d2"); }
static void test_fixture_k5_p2(void) { fixture("conv2d_k5_p2"); }
static void test_fixture_k9_nopad_nobias(void) { fixture("conv2d_k9_nopad_nobias"); }
static void test_fixture_pointwise(void) { fixture("conv2d_pointwise"); }

int main(void)
{
    RUN(test_fixture_depthwise_k7);
    RUN(test_fixture_k3_s2_d2);
    RUN(test_fixture_k5_p2);
    RUN(test_fixture_k9_nopad_nobias);
    RUN(test_fixture_pointwise);
    RUN(test_gradcheck_stride2_odd);
    RUN(test_gradcheck_rect_dilation);
    RUN(test_gradcheck_groups2_bigpad);
    RUN(test_gradcheck_stride_exceeds_kernel);
    RUN(test_gradcheck_pointwise);
    RUN(test_gradcheck_depthwise_multiplier);
    RUN(test_gradcheck_depthwise_stride_dilation);
    RUN(test_gradcheck_depthwise_wide);
    RUN(test_gradcheck_depthwise_padding);
    RUN(test_gradcheck_depthwise_channel_blocks);
    RUN(test_depthwise_thread_independent);
    RUN(test_fast_vs_naive);
    RUN(test_gemm_thread_independent);
    RUN(test_depthwise_rows_bit_identical);
    RUN(test_depthwise_negative_zero_bias);
    RUN(test_gemm_fallback_vs_naive);
    RUN(test_backward_set);
    RUN(test_accumulate_and_null_grads);
    RUN(test_deterministic);
    RUN(test_bad_arguments);
    return th_summary();
}
