/* grid_sample kernels: PyTorch fixtures, finite differences against a
 * double-precision forward, the floor-cell convention on integer positions,
 * channels-last vs NCHW, thread-count independence, bad arguments.
 *
 * Legend: N = batch, C = channels, H x W = input map, Ho x Wo = output map. */
#include "harness.h"
#include "kernels/grid_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------ double reference --- */

/* PyTorch's documented unnormalisation, written as in its scalar code */
static double ref_unnorm(double v, int size, int align)
{
    return align ? (v + 1.0) / 2.0 * (size - 1) : ((v + 1.0) * size - 1.0) / 2.0;
}

static double ref_pix(const double *plane, int H, int W, long y, long x)
{
    return (y >= 0 && y < H && x >= 0 && x < W) ? plane[y * W + x] : 0.0;
}

static void ref_forward(double *out,         // (N, C, Ho, Wo)
                        const double *in,    // (N, C, H, W)
                        const double *grid,  // (N, Ho, Wo, 2)
                        int N, int C, int H, int W, int Ho, int Wo, int align)
{
    long P = (long)Ho * Wo;
    for (int b = 0; b < N; b++)
        for (long q = 0; q < P; q++) {
            double px = ref_unnorm(grid[2 * (b * P + q)], W, align);
            double py = ref_unnorm(grid[2 * (b * P + q) + 1], H, align);
            double fx0 = floor(px), fy0 = floor(py);
            if (fabs(fx0) > 1e6 || fabs(fy0) > 1e6) {
                for (int c = 0; c < C; c++) out[(b * C + c) * P + q] = 0.0;
                continue;
            }
            long x0 = (long)fx0, y0 = (long)fy0;
            double fx = px - fx0, fy = py - fy0;
            for (int c = 0; c < C; c++) {
                const double *pl = in + ((size_t)b * C + c) * H * W;
                out[(b * C + c) * P + q] = (1 - fx) * (1 - fy) * ref_pix(pl, H, W, y0, x0) +
                                           fx * (1 - fy) * ref_pix(pl, H, W, y0, x0 + 1) +
                                           (1 - fx) * fy * ref_pix(pl, H, W, y0 + 1, x0) +
                                           fx * fy * ref_pix(pl, H, W, y0 + 1, x0 + 1);
            }
        }
}

/* Analytic gradients of the cell chosen by floor (PyTorch's convention, also
 * on integer positions); overwrites dgrid and dinput. */
static void ref_backward(double *dinput, double *dgrid, const double *dout, const double *in,
                         const double *grid, int N, int C, int H, int W, int Ho, int Wo,
                         int align)
{
    long P = (long)Ho * Wo;
    double mx = align ? (W - 1) / 2.0 : W / 2.0, my = align ? (H - 1) / 2.0 : H / 2.0;
    memset(dinput, 0, sizeof(double) * N * C * H * W);
    for (int b = 0; b < N; b++)
        for (long q = 0; q < P; q++) {
            double px = ref_unnorm(grid[2 * (b * P + q)], W, align);
            double py = ref_unnorm(grid[2 * (b * P + q) + 1], H, align);
            double fx0 = floor(px), fy0 = floor(py);
            dgrid[2 * (b * P + q)] = dgrid[2 * (b * P + q) + 1] = 0.0;
            if (fabs(fx0) > 1e6 || fabs(fy0) > 1e6) continue;
            long x0 = (long)fx0, y0 = (long)fy0;
            double fx = px - fx0, fy = py - fy0;
            double dpx = 0, dpy = 0;
            for (int c = 0; c < C; c++) {
                const double *pl = in + ((size_t)b * C + c) * H * W;
                double *dpl = dinput + ((size_t)b * C + c) * H * W;
                double g = dout[(b * C + c) * P + q];
                double a = ref_pix(pl, H, W, y0, x0), bb = ref_pix(pl, H, W, y0, x0 + 1);
                double cc = ref_pix(pl, H, W, y0 + 1, x0), d = ref_pix(pl, H, W, y0 + 1, x0 + 1);
                dpx += g * ((1 - fy) * (bb - a) + fy * (d - cc));
                dpy += g * ((1 - fx) * (cc - a) + fx * (d - bb));
                long ys[4] = {y0, y0, y0 + 1, y0 + 1}, xs[4] = {x0, x0 + 1, x0, x0 + 1};
                double ws[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
                for (int k = 0; k < 4; k++)
                    if (ys[k] >= 0 && ys[k] < H && xs[k] >= 0 && xs[k] < W)
                        dpl[ys[k] * W + xs[k]] += g * ws[k];
            }
            dgrid[2 * (b * P + q)] = dpx * mx;
            dgrid[2 * (b * P + q) + 1] = dpy * my;
        }
}

static double ref_loss(const double *in, const double *grid, const double *up, double *tmp,
                       int N, int C, int H, int W, int Ho, int Wo, int align)
{
    ref_forward(tmp, in, grid, N, C, H, W, Ho, Wo, align);
    double s = 0;
    for (long i = 0; i < (long)N * C * Ho * Wo; i++) s += tmp[i] * up[i];
    return s;
}

/* ------------------------------------------------------------ helpers --- */

static double *to_f64(const float *a, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = a[i];
    return d;
}

static void fill_rand(float *a, size_t n, uint64_t *st)
{
    for (size_t i = 0; i < n; i++) a[i] = (float)th_rand(st);
}

static int same_bits(const float *a, const float *b, size_t n, size_t *where)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float))) { *where = i; return 0; }
    return 1;
}

/* normalised coordinate of source pixel position p on an axis of `size` */
static float to_norm(double p, int size, int align)
{
    return align ? (float)(p / ((size - 1) / 2.0) - 1.0) : (float)((p + 0.5) / (size / 2.0) - 1.0);
}

/* Pixel positions covering every case: inside, one side out (each side),
 * one corner in only, far outside, beyond the border band. Fractional parts
 * stay in [0.1, 0.9] so finite differences never cross a cell border. */
static const double fd_points[12][2] = {
    {2.3, 1.6},   {0.2, 3.7},   {5.85, 0.45}, {-0.4, 2.3}, {6.3, 1.2},   {3.4, -0.7},
    {1.1, 4.25},  {-0.6, -0.3}, {6.5, 4.6},   {-3.2, 2.0}, {2.5, 9.7},   {-1.5, 2.5},
};

static void check_fd(int align)
{
    enum { N = 2, C = 3, H = 5, W = 7, Ho = 3, Wo = 4 };
    const size_t nin = (size_t)N * C * H * W, ngrid = (size_t)N * Ho * Wo * 2,
                 nout = (size_t)N * C * Ho * Wo;
    uint64_t st = 12345 + align;
    float *in = malloc(nin * 4), *grid = malloc(ngrid * 4), *up = malloc(nout * 4);
    float *out = malloc(nout * 4), *din = calloc(nin, 4), *dgrid = calloc(ngrid, 4);
    fill_rand(in, nin, &st);
    fill_rand(up, nout, &st);
    for (int b = 0; b < N; b++)
        for (int q = 0; q < Ho * Wo; q++) {
            double jx = b ? 0.05 * th_rand(&st) : 0, jy = b ? 0.05 * th_rand(&st) : 0;
            grid[2 * (b * Ho * Wo + q)] = to_norm(fd_points[q][0] + jx, W, align);
            grid[2 * (b * Ho * Wo + q) + 1] = to_norm(fd_points[q][1] + jy, H, align);
        }
    CHECK_OK(npred_grid_sample_forward(out, in, grid, N, C, H, W, Ho, Wo, align));
    CHECK_OK(npred_grid_sample_backward(din, dgrid, up, in, grid, N, C, H, W, Ho, Wo, align));

    double *din_d = to_f64(in, nin), *grid_d = to_f64(grid, ngrid), *up_d = to_f64(up, nout);
    double *tmp = malloc(nout * sizeof(double));
    double *out_ref = malloc(nout * sizeof(double));
    ref_forward(out_ref, din_d, grid_d, N, C, H, W, Ho, Wo, align);
    double *out_d = to_f64(out, nout);
    th_close_f64("forward vs double", out_d, out_ref, nout, 1e-6, 1e-6);

    double *fd_in = malloc(nin * sizeof(double)), *fd_grid = malloc(ngrid * sizeof(double));
    const double h_in = 1e-3, h_grid = 1e-4;
    for (size_t i = 0; i < nin; i++) {
        double v = din_d[i];
        din_d[i] = v + h_in;
        double lp = ref_loss(din_d, grid_d, up_d, tmp, N, C, H, W, Ho, Wo, align);
        din_d[i] = v - h_in;
        double lm = ref_loss(din_d, grid_d, up_d, tmp, N, C, H, W, Ho, Wo, align);
        din_d[i] = v;
        fd_in[i] = (lp - lm) / (2 * h_in);
    }
    for (size_t i = 0; i < ngrid; i++) {
        double v = grid_d[i];
        grid_d[i] = v + h_grid;
        double lp = ref_loss(din_d, grid_d, up_d, tmp, N, C, H, W, Ho, Wo, align);
        grid_d[i] = v - h_grid;
        double lm = ref_loss(din_d, grid_d, up_d, tmp, N, C, H, W, Ho, Wo, align);
        grid_d[i] = v;
        fd_grid[i] = (lp - lm) / (2 * h_grid);
    }
    double *din_k = to_f64(din, nin), *dgrid_k = to_f64(dgrid, ngrid);
    th_close_f64("dinput vs finite differences", din_k, fd_in, nin, 1e-4, 1e-5);
    th_close_f64("dgrid vs finite differences", dgrid_k, fd_grid, ngrid, 1e-4, 1e-5);
    /* far-outside points (9, 10, 11) get exactly zero grid gradient */
    for (int b = 0; b < N; b++)
        for (int q = 9; q < 12; q++)
            CHECK(dgrid[2 * (b * Ho * Wo + q)] == 0.0f && dgrid[2 * (b * Ho * Wo + q) + 1] == 0.0f,
                  "point %d of image %d: far outside but dgrid = (%g, %g)", q, b,
                  dgrid[2 * (b * Ho * Wo + q)], dgrid[2 * (b * Ho * Wo + q) + 1]);
    /* the partially-outside points really have a non-zero gradient */
    for (int q = 3; q < 9; q++)
        CHECK(fabs(fd_grid[2 * q]) + fabs(fd_grid[2 * q + 1]) > 1e-3,
              "point %d: expected a non-zero grid gradient", q);

    free(in); free(grid); free(up); free(out); free(din); free(dgrid);
    free(din_d); free(grid_d); free(up_d); free(tmp); free(out_ref); free(out_d);
    free(fd_in); free(fd_grid); free(din_k); free(dgrid_k);
}

static void test_fd_align_true(void) { check_fd(1); }
static void test_fd_align_false(void) { check_fd(0); }

/* Points exactly on integer source positions (including the image border and
 * one pixel beyond it): finite differences do not apply (kink); the gradient
 * must be the derivative of the cell chosen by floor, as in PyTorch. */
static void check_integer_positions(int align)
{
    /* align: W = 5, H = 9 -> px = 2(x+1), py = 4(y+1); not: W = 4, H = 8 ->
     * px = 2(x+1) - 0.5, py = 4(y+1) - 0.5; all values below are exact */
    const int C = 3, W = align ? 5 : 4, H = align ? 9 : 8, N = 2;
    const int Wo = W + 2, Ho = H + 2; /* px = -1 .. W, py = -1 .. H */
    const size_t nin = (size_t)N * C * H * W, ngrid = (size_t)N * Ho * Wo * 2,
                 nout = (size_t)N * C * Ho * Wo;
    uint64_t st = 777 + align;
    float *in = malloc(nin * 4), *grid = malloc(ngrid * 4), *up = malloc(nout * 4);
    float *out = malloc(nout * 4), *din = calloc(nin, 4), *dgrid = calloc(ngrid, 4);
    fill_rand(in, nin, &st);
    fill_rand(up, nout, &st);
    for (int b = 0; b < N; b++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                float *g = grid + 2 * ((size_t)(b * Ho + i) * Wo + j);
                g[0] = align ? (float)(j - 1) / 2.0f - 1.0f : ((float)(j - 1) + 0.5f) / 2.0f - 1.0f;
                g[1] = align ? (float)(i - 1) / 4.0f - 1.0f : ((float)(i - 1) + 0.5f) / 4.0f - 1.0f;
            }
    /* the source positions really are integers in float32 */
    CHECK((grid[2] + 1.0f) * 2.0f - (align ? 0.0f : 0.5f) == 0.0f, "setup: px of column 1");
    CHECK_OK(npred_grid_sample_forward(out, in, grid, N, C, H, W, Ho, Wo, align));
    CHECK_OK(npred_grid_sample_backward(din, dgrid, up, in, grid, N, C, H, W, Ho, Wo, align));

    double *in_d = to_f64(in, nin), *grid_d = to_f64(grid, ngrid), *up_d = to_f64(up, nout);
    double *out_ref = malloc(nout * 8), *din_ref = malloc(nin * 8), *dgrid_ref = malloc(ngrid * 8);
    ref_forward(out_ref, in_d, grid_d, N, C, H, W, Ho, Wo, align);
    ref_backward(din_ref, dgrid_ref, up_d, in_d, grid_d, N, C, H, W, Ho, Wo, align);
    double *out_k = to_f64(out, nout), *din_k = to_f64(din, nin), *dgrid_k = to_f64(dgrid, ngrid);
    th_close_f64("forward on integer positions", out_k, out_ref, nout, 1e-6, 1e-7);
    th_close_f64("dinput on integer positions", din_k, din_ref, nin, 1e-6, 1e-7);
    th_close_f64("dgrid on integer positions (floor cell)", dgrid_k, dgrid_ref, ngrid, 1e-5, 1e-6);
    /* on an interior integer position, the output is exactly the pixel value */
    {
        int i = 3, j = 2; /* py = 2, px = 1 */
        CHECK(out[(size_t)i * Wo + j] == in[2 * W + 1], "exact pixel: got %g want %g",
              out[(size_t)i * Wo + j], in[2 * W + 1]);
    }
    /* one pixel beyond the last column: both columns out, zero everywhere */
    for (int i = 0; i < Ho; i++) {
        size_t q = (size_t)i * Wo + (Wo - 1);
        CHECK(dgrid[2 * q] == 0.0f && dgrid[2 * q + 1] == 0.0f && out[q] == 0.0f,
              "row %d at px = W: expected zeros", i);
    }
    free(in); free(grid); free(up); free(out); free(din); free(dgrid);
    free(in_d); free(grid_d); free(up_d); free(out_ref); free(din_ref); free(dgrid_ref);
    free(out_k); free(din_k); free(dgrid_k);
}

static void test_integer_positions_align_true(void) { check_integer_positions(1); }
static void test_integer_positions_align_false(void) { check_integer_positions(0); }

/* Random points (some on integer positions) against the double analytic
 * reference, odd sizes, wide coordinate range. */
static void test_random_vs_double(void)
{
    for (int align = 0; align < 2; align++) {
        const int N = 3, C = 5, H = 7, W = 4, Ho = 5, Wo = 3;
        const size_t nin = (size_t)N * C * H * W, ngrid = (size_t)N * Ho * Wo * 2,
                     nout = (size_t)N * C * Ho * Wo;
        uint64_t st = 99 + align;
        float *in = malloc(nin * 4), *grid = malloc(ngrid * 4), *up = malloc(nout * 4);
        float *out = malloc(nout * 4), *din = calloc(nin, 4), *dgrid = calloc(ngrid, 4);
        fill_rand(in, nin, &st);
        fill_rand(up, nout, &st);
        for (size_t i = 0; i < ngrid; i++) grid[i] = (float)(1.4 * th_rand(&st));
        grid[0] = -1.0f; grid[1] = 1.0f; grid[2] = 1.0f; grid[3] = -1.0f; grid[4] = 0.0f;
        CHECK_OK(npred_grid_sample_forward(out, in, grid, N, C, H, W, Ho, Wo, align));
        CHECK_OK(npred_grid_sample_backward(din, dgrid, up, in, grid, N, C, H, W, Ho, Wo, align));
        double *in_d = to_f64(in, nin), *grid_d = to_f64(grid, ngrid), *up_d = to_f64(up, nout);
        double *out_ref = malloc(nout * 8), *din_ref = malloc(nin * 8),
               *dgrid_ref = malloc(ngrid * 8);
        ref_forward(out_ref, in_d, grid_d, N, C, H, W, Ho, Wo, align);
        ref_backward(din_ref, dgrid_ref, up_d, in_d, grid_d, N, C, H, W, Ho, Wo, align);
        double *out_k = to_f64(out, nout), *din_k = to_f64(din, nin),
               *dgrid_k = to_f64(dgrid, ngrid);
        th_close_f64("forward", out_k, out_ref, nout, 1e-5, 1e-6);
        th_close_f64("dinput", din_k, din_ref, nin, 1e-5, 1e-6);
        th_close_f64("dgrid", dgrid_k, dgrid_ref, ngrid, 1e-4, 1e-5);
        free(in); free(grid); free(up); free(out); free(din); free(dgrid);
        free(in_d); free(grid_d); free(up_d); free(out_ref); free(din_ref); free(dgrid_ref);
        free(out_k); free(din_k); free(dgrid_k);
    }
}

/* spec/neuralpredictors.md appendix A, T1 (torch 1.13.1) */
static void test_spec_t1(void)
{
    float in[40], grid[12] = {-1, -1, 1, 1, 0, 0, 0.3f, -0.7f, 0.95f, 0.9f, 1.2f, 0.0f}, out[12];
    for (int i = 0; i < 40; i++) in[i] = (float)sin(0.1 * i);
    const float want[12] = {0,         0.9463001f, 0.7881284f, 0.4508743f, 0.9541857f, 0.5306329f,
                            0.9092974f, -0.6877663f, 0.1845028f, 0.5913271f, -0.6150133f,
                            -0.0048876f};
    CHECK_OK(npred_grid_sample_forward(out, in, grid, 1, 2, 4, 5, 6, 1, 1));
    th_close_f32("T1 output (1, 2, 6, 1)", out, want, 12, 0, 1e-6);
}

/* ------------------------------------------------------------ fixtures --- */

static void check_fixture(const char *name, int align)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    CHECK(cJSON_IsTrue(th_get(c.json, "args", "align_corners", NULL)) == align,
          "%s: args.align_corners is not %d", name, align);
    npred_array si, sg;
    float *in = th_load_f32(&c, "input.npy", &si);
    float *grid = th_load_f32(&c, "grid.npy", &sg);
    float *up = th_load_f32(&c, "upstream.npy", NULL);
    if (in && grid && up && CHECK(si.ndim == 4 && sg.ndim == 4 && sg.shape[3] == 2 &&
                                      sg.shape[0] == si.shape[0],
                                  "%s: unexpected shapes", name)) {
        const int N = (int)si.shape[0], C = (int)si.shape[1], H = (int)si.shape[2],
                  W = (int)si.shape[3], Ho = (int)sg.shape[1], Wo = (int)sg.shape[2];
        const size_t nin = (size_t)N * C * H * W, ngrid = (size_t)N * Ho * Wo * 2,
                     nout = (size_t)N * C * Ho * Wo;
        float *out = malloc(nout * 4), *din = calloc(nin, 4), *dgrid = calloc(ngrid, 4);
        CHECK_OK(npred_grid_sample_forward(out, in, grid, N, C, H, W, Ho, Wo, align));
        th_compare_dims(&c, "forward", "output.npy", out, TH_DIMS(N, C, Ho, Wo));
        CHECK_OK(npred_grid_sample_backward(din, dgrid, up, in, grid, N, C, H, W, Ho, Wo, align));
        th_compare_dims(&c, "grads", "grads/input.npy", din, TH_DIMS(N, C, H, W));
        th_compare_dims(&c, "grads", "grads/grid.npy", dgrid, TH_DIMS(N, Ho, Wo, 2));
        /* stronger than the tolerance: the float operations are PyTorch's, so
         * all three results are bitwise the reference's */
        float *r_out = th_load_f32(&c, "output.npy", NULL);
        float *r_din = th_load_f32(&c, "grads/input.npy", NULL);
        float *r_dgrid = th_load_f32(&c, "grads/grid.npy", NULL);
        size_t at = 0;
        if (r_out && r_din && r_dgrid) {
            CHECK(same_bits(out, r_out, nout, &at), "%s: output not bitwise PyTorch's at %zu: "
                  "%.9g vs %.9g", name, at, out[at], r_out[at]);
            CHECK(same_bits(din, r_din, nin, &at), "%s: dinput not bitwise PyTorch's at %zu: "
                  "%.9g vs %.9g", name, at, din[at], r_din[at]);
            CHECK(same_bits(dgrid, r_dgrid, ngrid, &at), "%s: dgrid not bitwise PyTorch's at "
                  "%zu: %.9g vs %.9g", name, at, dgrid[at], r_dgrid[at]);
        }

        /* the same through the channels-last path (n = Ho * Wo points) */
        const int n = Ho * Wo;
        float *feat = malloc(nin * 4), *o2 = malloc(nout * 4), *o2t = malloc(nout * 4);
        float *up2 = malloc(nout * 4), *df = calloc(nin, 4), *df_t = malloc(nin * 4);
        float *dg2 = calloc(ngrid, 4);
        CHECK_OK(npred_grid_sample_nchw_to_nhwc(feat, in, N, C, H, W));
        CHECK_OK(npred_grid_sample_nhwc_forward(o2, feat, grid, N, H, W, C, n, align));
        CHECK_OK(npred_grid_sample_nhwc_to_nchw(o2t, o2, N, C, n, 1));
        th_compare_dims(&c, "forward", "output.npy", o2t, TH_DIMS(N, C, Ho, Wo));
        if (r_out)
            CHECK(same_bits(o2t, r_out, nout, &at), "%s: channels-last output not bitwise "
                  "PyTorch's at %zu", name, at);
        CHECK_OK(npred_grid_sample_nchw_to_nhwc(up2, up, N, C, n, 1));
        CHECK_OK(npred_grid_sample_nhwc_backward(df, dg2, up2, feat, grid, N, H, W, C, n, align));
        CHECK_OK(npred_grid_sample_nhwc_to_nchw(df_t, df, N, C, H, W));
        th_compare_dims(&c, "grads", "grads/input.npy", df_t, TH_DIMS(N, C, H, W));
        th_compare_dims(&c, "grads", "grads/grid.npy", dg2, TH_DIMS(N, Ho, Wo, 2));
        free(feat); free(o2); free(o2t); free(up2); free(df); free(df_t); free(dg2);
        free(r_out); free(r_din); free(r_dgrid);
        free(out); free(din); free(dgrid);
    }
    free(in); free(grid); free(up);
    th_case_close(&c);
}

static void test_fixture_align_true(void) { check_fixture("grid_sample_align_true", 1); }
static void test_fixture_align_false(void) { check_fixture("grid_sample_align_false", 0); }

/* ------------------------------------------------------ channels-last --- */

/* C = 37: two full 16-channel blocks plus a tail. Points: random in
 * [-1.3, 1.3], some exact corners, one NaN. */
static void check_nhwc_vs_nchw(int align)
{
    const int B = 3, C = 37, H = 6, W = 9, n = 50;
    const size_t nf = (size_t)B * H * W * C, ng = (size_t)B * n * 2, no = (size_t)B * n * C;
    uint64_t st = 4242 + align;
    float *in = malloc(nf * 4), *feat = malloc(nf * 4), *grid = malloc(ng * 4);
    float *up = malloc(no * 4), *up2 = malloc(no * 4);
    fill_rand(in, nf, &st);
    fill_rand(up, no, &st);
    for (size_t i = 0; i < ng; i++) grid[i] = (float)(1.3 * th_rand(&st));
    grid[0] = -1; grid[1] = -1; grid[2] = 1; grid[3] = 1; grid[4] = 1; grid[5] = 0.25f;
    grid[7] = NAN;
    CHECK_OK(npred_grid_sample_nchw_to_nhwc(feat, in, B, C, H, W));
    CHECK_OK(npred_grid_sample_nchw_to_nhwc(up2, up, B, C, n, 1)); /* (B, C, n) -> (B, n, C) */

    float *o1 = malloc(no * 4), *o2 = malloc(no * 4), *o2t = malloc(no * 4);
    CHECK_OK(npred_grid_sample_forward(o1, in, grid, B, C, H, W, n, 1, align));
    CHECK_OK(npred_grid_sample_nhwc_forward(o2, feat, grid, B, H, W, C, n, align));
    CHECK_OK(npred_grid_sample_nhwc_to_nchw(o2t, o2, B, C, n, 1));
    size_t at = 0;
    CHECK(same_bits(o1, o2t, no, &at), "forward differs at %zu: %.9g vs %.9g", at, o1[at], o2t[at]);
    CHECK(isnan(o2[3 * C]), "NaN grid point: output %g, expected NaN", o2[3 * C]);

    float *d1 = calloc(nf, 4), *g1 = calloc(ng, 4), *d2 = calloc(nf, 4), *g2 = calloc(ng, 4);
    float *d2t = malloc(nf * 4);
    CHECK_OK(npred_grid_sample_backward(d1, g1, up, in, grid, B, C, H, W, n, 1, align));
    CHECK_OK(npred_grid_sample_nhwc_backward(d2, g2, up2, feat, grid, B, H, W, C, n, align));
    CHECK_OK(npred_grid_sample_nhwc_to_nchw(d2t, d2, B, C, H, W));
    /* same per-pixel accumulation order (points in order) -> bitwise equal */
    CHECK(same_bits(d1, d2t, nf, &at), "dinput differs at %zu: %.9g vs %.9g", at, d1[at], d2t[at]);
    /* y = NaN: dx is NaN, dy is 0 (the x-distances are finite, all taps read 0),
     * as in PyTorch */
    CHECK(isnan(g1[6]) && isnan(g2[6]) && g1[7] == 0.0f && g2[7] == 0.0f,
          "NaN grid point: dgrid (%g, %g) and (%g, %g), expected (nan, 0)", g1[6], g1[7], g2[6],
          g2[7]);
    g1[6] = g2[6] = 0; /* compare the rest */
    th_close_f32("dgrid nhwc vs nchw", g2, g1, ng, 1e-5, 1e-6);
    free(in); free(feat); free(grid); free(up); free(up2); free(o1); free(o2); free(o2t);
    free(d1); free(g1); free(d2); free(g2); free(d2t);
}

static void test_nhwc_vs_nchw_align_true(void) { check_nhwc_vs_nchw(1); }
static void test_nhwc_vs_nchw_align_false(void) { check_nhwc_vs_nchw(0); }

/* Backward accumulates; NULL gradients are skipped and do not change the other. */
static void test_accumulate_and_null(void)
{
    const int B = 2, C = 20, H = 5, W = 6, n = 7;
    const size_t nf = (size_t)B * H * W * C, ng = (size_t)B * n * 2, no = (size_t)B * n * C;
    uint64_t st = 5;
    float *feat = malloc(nf * 4), *grid = malloc(ng * 4), *up = malloc(no * 4);
    fill_rand(feat, nf, &st);
    fill_rand(up, no, &st);
    for (size_t i = 0; i < ng; i++) grid[i] = (float)(1.1 * th_rand(&st));
    float *d0 = calloc(nf, 4), *g0 = calloc(ng, 4), *d1 = malloc(nf * 4), *g1 = malloc(ng * 4);
    float *donly = calloc(nf, 4), *gonly = calloc(ng, 4);
    for (size_t i = 0; i < nf; i++) d1[i] = 0.5f;
    for (size_t i = 0; i < ng; i++) g1[i] = -0.25f;
    CHECK_OK(npred_grid_sample_nhwc_backward(d0, g0, up, feat, grid, B, H, W, C, n, 1));
    CHECK_OK(npred_grid_sample_nhwc_backward(d1, g1, up, feat, grid, B, H, W, C, n, 1));
    CHECK_OK(npred_grid_sample_nhwc_backward(donly, NULL, up, feat, grid, B, H, W, C, n, 1));
    CHECK_OK(npred_grid_sample_nhwc_backward(NULL, gonly, up, feat, grid, B, H, W, C, n, 1));
    CHECK_OK(npred_grid_sample_nhwc_backward(NULL, NULL, up, feat, grid, B, H, W, C, n, 1));
    /* dfeat sums several terms per element, so 0.5 + (a + b) vs (0.5 + a) + b
     * may round differently; dgrid gets one term per call */
    int bad = 0;
    for (size_t i = 0; i < nf; i++) bad += fabsf(d1[i] - (0.5f + d0[i])) > 1e-6f || donly[i] != d0[i];
    for (size_t i = 0; i < ng; i++) bad += g1[i] != -0.25f + g0[i] || gonly[i] != g0[i];
    CHECK(bad == 0, "channels-last: %d elements not accumulated / not independent", bad);

    /* the same for the NCHW path (treat feat as (B, C, H, W)) */
    float *e0 = calloc(nf, 4), *h0 = calloc(ng, 4), *e1 = malloc(nf * 4), *h1 = malloc(ng * 4);
    float *eonly = calloc(nf, 4), *honly = calloc(ng, 4);
    for (size_t i = 0; i < nf; i++) e1[i] = 0.5f;
    for (size_t i = 0; i < ng; i++) h1[i] = -0.25f;
    CHECK_OK(npred_grid_sample_backward(e0, h0, up, feat, grid, B, C, H, W, n, 1, 0));
    CHECK_OK(npred_grid_sample_backward(e1, h1, up, feat, grid, B, C, H, W, n, 1, 0));
    CHECK_OK(npred_grid_sample_backward(eonly, NULL, up, feat, grid, B, C, H, W, n, 1, 0));
    CHECK_OK(npred_grid_sample_backward(NULL, honly, up, feat, grid, B, C, H, W, n, 1, 0));
    bad = 0;
    for (size_t i = 0; i < nf; i++) bad += fabsf(e1[i] - (0.5f + e0[i])) > 1e-6f || eonly[i] != e0[i];
    for (size_t i = 0; i < ng; i++) bad += h1[i] != -0.25f + h0[i] || honly[i] != h0[i];
    CHECK(bad == 0, "NCHW: %d elements not accumulated / not independent", bad);
    free(feat); free(grid); free(up); free(d0); free(g0); free(d1); free(g1); free(donly);
    free(gonly); free(e0); free(h0); free(e1); free(h1); free(eonly); free(honly);
}

/* Same result with 1 and 3 threads, bit for bit. */
static void test_thread_count_independent(void)
{
#ifdef _OPENMP
    const int B = 5, C = 24, H = 7, W = 8, n = 33;
    const size_t nf = (size_t)B * H * W * C, ng = (size_t)B * n * 2, no = (size_t)B * n * C;
    uint64_t st = 31;
    float *feat = malloc(nf * 4), *grid = malloc(ng * 4), *up = malloc(no * 4);
    fill_rand(feat, nf, &st);
    fill_rand(up, no, &st);
    for (size_t i = 0; i < ng; i++) grid[i] = (float)(1.2 * th_rand(&st));
    float *res[2][6];
    int saved = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r ? 3 : 1);
        float **x = res[r];
        x[0] = malloc(no * 4); x[1] = calloc(nf, 4); x[2] = calloc(ng, 4);
        x[3] = malloc(no * 4); x[4] = calloc(nf, 4); x[5] = calloc(ng, 4);
        CHECK_OK(npred_grid_sample_nhwc_forward(x[0], feat, grid, B, H, W, C, n, 1));
        CHECK_OK(npred_grid_sample_nhwc_backward(x[1], x[2], up, feat, grid, B, H, W, C, n, 1));
        CHECK_OK(npred_grid_sample_forward(x[3], feat, grid, B, C, H, W, n, 1, 0));
        CHECK_OK(npred_grid_sample_backward(x[4], x[5], up, feat, grid, B, C, H, W, n, 1, 0));
    }
    omp_set_num_threads(saved);
    const size_t sz[6] = {no, nf, ng, no, nf, ng};
    for (int k = 0; k < 6; k++) {
        size_t at = 0;
        CHECK(same_bits(res[0][k], res[1][k], sz[k], &at), "output %d differs at %zu", k, at);
        free(res[0][k]);
        free(res[1][k]);
    }
    free(feat); free(grid); free(up);
#endif
}

static void test_layout_roundtrip(void)
{
    const int N = 2, C = 35, H = 3, W = 13; /* HW = 39, not a tile multiple */
    const size_t nel = (size_t)N * C * H * W;
    float *a = malloc(nel * 4), *b = malloc(nel * 4), *c = malloc(nel * 4);
    for (size_t i = 0; i < nel; i++) a[i] = (float)i;
    CHECK_OK(npred_grid_sample_nchw_to_nhwc(b, a, N, C, H, W));
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int ch = 0; ch < C; ch++)
            for (int hw = 0; hw < H * W; hw++)
                bad += b[((size_t)n * H * W + hw) * C + ch] != a[((size_t)n * C + ch) * H * W + hw];
    CHECK(bad == 0, "nchw_to_nhwc: %d misplaced elements", bad);
    CHECK_OK(npred_grid_sample_nhwc_to_nchw(c, b, N, C, H, W));
    CHECK(memcmp(a, c, nel * 4) == 0, "nhwc_to_nchw does not invert nchw_to_nhwc");
    free(a); free(b); free(c);
}

static void test_bad_arguments(void)
{
    float x[64] = {0}, g[8] = {0}, o[64];
    CHECK(npred_grid_sample_forward(NULL, x, g, 1, 1, 2, 2, 1, 1, 1) == NPRED_ERR_ARG, "NULL out");
    CHECK(strstr(npred_last_error(), "NULL") != NULL, "message: %s", npred_last_error());
    CHECK(npred_grid_sample_forward(o, NULL, g, 1, 1, 2, 2, 1, 1, 1) == NPRED_ERR_ARG, "NULL input");
    CHECK(npred_grid_sample_forward(o, x, g, 1, 1, 0, 2, 1, 1, 1) == NPRED_ERR_ARG, "H = 0");
    CHECK(strstr(npred_last_error(), "0 x 2") != NULL, "message: %s", npred_last_error());
    CHECK(npred_grid_sample_forward(o, x, g, -1, 1, 2, 2, 1, 1, 1) == NPRED_ERR_ARG, "N < 0");
    CHECK(npred_grid_sample_backward(x, g, NULL, x, g, 1, 1, 2, 2, 1, 1, 1) == NPRED_ERR_ARG,
          "NULL dout");
    CHECK(npred_grid_sample_backward(x, g, o, x, g, 1, 1, 2, -2, 1, 1, 1) == NPRED_ERR_ARG,
          "W < 0");
    CHECK(npred_grid_sample_nhwc_forward(o, x, NULL, 1, 2, 2, 1, 1, 1) == NPRED_ERR_ARG,
          "NULL grid");
    CHECK(npred_grid_sample_nhwc_forward(o, x, g, 1, 2, 2, 1, -3, 1) == NPRED_ERR_ARG, "n < 0");
    CHECK(npred_grid_sample_nhwc_backward(x, g, o, x, g, 1, 0, 2, 1, 1, 1) == NPRED_ERR_ARG,
          "H = 0");
    CHECK(npred_grid_sample_nchw_to_nhwc(NULL, x, 1, 1, 1, 1) == NPRED_ERR_ARG, "NULL out");
    CHECK(npred_grid_sample_nhwc_to_nchw(o, x, 1, -1, 1, 1) == NPRED_ERR_ARG, "C < 0");
    /* empty batch / no points / no channels are valid and touch nothing */
    o[0] = 7.0f;
    CHECK_OK(npred_grid_sample_forward(o, x, g, 0, 1, 2, 2, 1, 1, 1));
    CHECK_OK(npred_grid_sample_nhwc_forward(o, x, g, 1, 2, 2, 1, 0, 1));
    CHECK_OK(npred_grid_sample_nhwc_forward(o, x, g, 1, 2, 2, 0, 3, 1));
    CHECK(o[0] == 7.0f, "empty call wrote to out");
    float gd[2] = {1.0f, 0.0f}, pts[2] = {0.3f, 0.1f};
    CHECK_OK(npred_grid_sample_nhwc_backward(NULL, gd, o, x, pts, 1, 2, 2, 0, 1, 1));
    CHECK(gd[0] == 1.0f && gd[1] == 0.0f, "C = 0: dgrid must stay (gradient 0)");
    /* a 1 x 1 map with align_corners=True maps every x to pixel 0 */
    float one = 3.0f, pt[2] = {0.7f, -0.4f}, r;
    CHECK_OK(npred_grid_sample_forward(&r, &one, pt, 1, 1, 1, 1, 1, 1, 1));
    CHECK(r == 3.0f, "1 x 1 map: got %g want 3", r);
}

int main(void)
{
    RUN(test_fd_align_true);
    RUN(test_fd_align_false);
    RUN(test_integer_positions_align_true);
    RUN(test_integer_positions_align_false);
    RUN(test_random_vs_double);
    RUN(test_spec_t1);
    RUN(test_fixture_align_true);
    RUN(test_fixture_align_false);
    RUN(test_nhwc_vs_nchw_align_true);
    RUN(test_nhwc_vs_nchw_align_false);
    RUN(test_accumulate_and_null);
    RUN(test_thread_count_independent);
    RUN(test_layout_roundtrip);
    RUN(test_bad_arguments);
    return th_summary();
}
