/* The fused sampling kernel of the point readouts (readouts/sample.h). Forward:
 *  - bit for bit equal to its scalar definition (lane l of 16 sums the channels
 *    l, l+16, ... of one neuron; each term is f * (sum over the inside taps of
 *    wt * tap, in tap order); the lanes are added in order), for both feature
 *    layouts, channel and neuron counts that are not multiples of 16, points
 *    outside or on the border of the map, with and without align_corners;
 *  - the same bits with 1 and 2 threads and whatever the batch around an image;
 *  - within float rounding of an independent double-precision bilinear
 *    reference.
 * Backward (accumulating into nonzero dfeat, dgrid, dF): bit for bit equal to
 * its scalar definition with 1 and 2 threads (its values are checked by finite
 * differences in the readout tests). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/grid_sample_cell.h"
#include "readouts/sample.h"

/* the definition, scalar float, in the documented order */
static float lane_order(const float *img, float gx, float gy, const float *f, size_t sc, int H, int W, int C, int ac)
{
    float sx = npred_gs_scale(W, ac), sy = npred_gs_scale(H, ac);
    npred_gs_cell g;
    npred_gs_cell_at(&g, npred_gs_unnormalize(gx, sx, ac), npred_gs_unnormalize(gy, sy, ac), H, W);
    float acc[16] = {0};
    for (int c = 0; c < C; c++) {
        float s = 0.0f;
        for (int k = 0; k < 4; k++)
            if (g.in[k]) {
                float prod = g.wt[k] * img[g.off[k] * C + c];
                s = s + prod;
            }
        float prod = f[(size_t)c * sc] * s;
        acc[c % 16] = acc[c % 16] + prod;
    }
    float r = 0.0f;
    for (int l = 0; l < 16; l++) r = r + acc[l];
    return r;
}

/* the same in double, from PyTorch's bilinear definition (zero padding) */
static double bilinear_ref(const float *img, double gx, double gy, const float *f, size_t sc, int H, int W, int C,
                           int ac)
{
    double px = ac ? (gx + 1) * (W - 1) / 2 : ((gx + 1) * W - 1) / 2;
    double py = ac ? (gy + 1) * (H - 1) / 2 : ((gy + 1) * H - 1) / 2;
    double x0 = floor(px), y0 = floor(py), r = 0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            double xx = x0 + dx, yy = y0 + dy;
            double wgt = (dx ? px - x0 : 1 - (px - x0)) * (dy ? py - y0 : 1 - (py - y0));
            if (xx < 0 || yy < 0 || xx > W - 1 || yy > H - 1) continue;
            const float *t = img + ((size_t)yy * W + (size_t)xx) * C;
            for (int c = 0; c < C; c++) r += wgt * t[c] * f[(size_t)c * sc];
        }
    return r;
}

typedef struct {
    int B, H, W, C, n, ac, rows;
} shape;

static void check_shape(shape s)
{
    uint64_t seed = 99 + (uint64_t)s.C * 31 + (uint64_t)s.n;
    size_t img = (size_t)s.H * s.W * s.C, nf = (size_t)s.n * s.C, np = (size_t)s.B * s.n;
    float *feat = malloc(sizeof(float) * s.B * img), *F = malloc(sizeof(float) * nf);
    float *grid = malloc(sizeof(float) * 2 * np), *y = malloc(sizeof(float) * np), *y2 = malloc(sizeof(float) * np);
    float *y1 = malloc(sizeof(float) * s.n);
    for (size_t i = 0; i < s.B * img; i++) feat[i] = (float)th_rand(&seed);
    for (size_t i = 0; i < nf; i++) F[i] = (float)th_rand(&seed);
    for (size_t i = 0; i < 2 * np; i++) {
        double u = th_rand(&seed);
        /* every 7th coordinate outside [-1, 1] (taps out of the map), every 11th on a border */
        grid[i] = (float)(i % 7 == 3 ? 1.3 * u + (u > 0 ? 0.2 : -0.2) : i % 11 == 5 ? (u > 0 ? 1.0 : -1.0) : u);
    }
    /* F element (o, c): rows (o * C + c) or channel-major (c * n + o) */
    size_t so = s.rows ? (size_t)s.C : 1, sc = s.rows ? 1 : (size_t)s.n;
    for (size_t i = 0; i < np; i++) y[i] = y2[i] = 0.25f * (float)(i % 5);
    omp_set_num_threads(1);
    npred_rsample_forward(y, feat, grid, F, so, sc, s.B, s.H, s.W, s.C, s.n, s.ac);
    omp_set_num_threads(2);
    npred_rsample_forward(y2, feat, grid, F, so, sc, s.B, s.H, s.W, s.C, s.n, s.ac);
    int bad_bits = 0, bad_ref = 0, bad_threads = 0, bad_batch = 0;
    double worst = 0;
    for (int b = 0; b < s.B; b++) {
        /* the last image alone: same bits as inside the batch */
        for (int o = 0; o < s.n; o++) y1[o] = 0.25f * (float)(((size_t)b * s.n + o) % 5);
        npred_rsample_forward(y1, feat + b * img, grid + 2 * (size_t)b * s.n, F, so, sc, 1, s.H, s.W, s.C, s.n, s.ac);
        for (int o = 0; o < s.n; o++) {
            size_t p = (size_t)b * s.n + o;
            float want = 0.25f * (float)(p % 5) +
                         lane_order(feat + b * img, grid[2 * p], grid[2 * p + 1], F + o * so, sc, s.H, s.W, s.C, s.ac);
            double ref = 0.25 * (double)(p % 5) + bilinear_ref(feat + b * img, grid[2 * p], grid[2 * p + 1], F + o * so,
                                                               sc, s.H, s.W, s.C, s.ac);
            double err = fabs(y[p] - ref);
            if (!(err <= 1e-5 * (1 + fabs(ref)) * s.C)) bad_ref++;
            if (err > worst) worst = err;
            if (memcmp(&y[p], &want, sizeof want)) bad_bits++;
            if (memcmp(&y[p], &y2[p], sizeof want)) bad_threads++;
            if (memcmp(&y[p], &y1[o], sizeof want)) bad_batch++;
        }
    }
    const char *lay = s.rows ? "rows" : "channel-major";
    CHECK(bad_bits == 0, "B %d C %d n %d %s ac %d: %d outputs differ from the lane-order definition", s.B, s.C, s.n,
          lay, s.ac, bad_bits);
    CHECK(bad_threads == 0, "C %d n %d %s: %d outputs differ between 1 and 2 threads", s.C, s.n, lay, bad_threads);
    CHECK(bad_batch == 0, "C %d n %d %s: %d outputs differ between batch and single image", s.C, s.n, lay, bad_batch);
    CHECK(bad_ref == 0, "C %d n %d %s: %d outputs off the double reference (worst %g)", s.C, s.n, lay, bad_ref, worst);
    free(feat), free(F), free(grid), free(y), free(y2), free(y1);
}

static void test_forward_shapes(void)
{
    const shape cases[] = {
        {3, 5, 7, 64, 40, 0, 0},  {3, 5, 7, 64, 40, 0, 1},  {2, 6, 9, 20, 37, 1, 0}, {2, 6, 9, 20, 37, 1, 1},
        {2, 4, 4, 3, 5, 0, 0},    {2, 4, 4, 3, 5, 0, 1},    {1, 28, 56, 64, 700, 0, 0},
        {4, 28, 56, 64, 300, 1, 1}, {2, 3, 3, 16, 16, 0, 0}, {2, 3, 3, 33, 17, 1, 1}, {2, 3, 3, 32, 21, 0, 1},
    };
    int threads = omp_get_max_threads();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_shape(cases[i]);
    omp_set_num_threads(threads);
}

/* a batch big enough to run threaded (NPRED_RS_PAR_MIN) */
static void test_forward_threaded(void)
{
    int threads = omp_get_max_threads();
    shape s = {3, 28, 56, 64, 6000, 0, 1};
    CHECK((double)s.B * s.n * s.C >= NPRED_RS_PAR_MIN, "the case must be large enough to run threaded");
    check_shape(s);
    s.rows = 0;
    check_shape(s);
    omp_set_num_threads(threads);
}

/* Backward, the scalar definition in its documented order: pass 1 walks each
 * image's neurons in order (dfeat rows sum them in that order; the grid gradient
 * takes the lane-ordered dot products of F with each tap), pass 2 sums each dF
 * row over the images in order. */
static void backward_definition(float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                                const float *grid, const float *F, int B, int H, int W, int C, int n, int ac)
{
    float sx = npred_gs_scale(W, ac), sy = npred_gs_scale(H, ac);
    size_t img = (size_t)H * W * C;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++) {
            size_t p = (size_t)b * n + o;
            npred_gs_cell g;
            npred_gs_cell_at(&g, npred_gs_unnormalize(grid[2 * p], sx, ac),
                             npred_gs_unnormalize(grid[2 * p + 1], sy, ac), H, W);
            const float *f = F + (size_t)o * C, *im = feat + b * img;
            float v[4];
            for (int k = 0; k < 4; k++) {
                float acc[16] = {0}, gw = dy[p] * g.wt[k];
                if (!g.in[k]) {
                    v[k] = 0.0f;
                    continue;
                }
                for (int c = 0; c < C; c++) {
                    float prod = f[c] * im[g.off[k] * C + c];
                    acc[c % 16] = acc[c % 16] + prod;
                    prod = gw * f[c];
                    dfeat[b * img + g.off[k] * C + c] = dfeat[b * img + g.off[k] * C + c] + prod;
                }
                float r = 0.0f;
                for (int l = 0; l < 16; l++) r = r + acc[l];
                v[k] = r;
            }
            float gx = (v[1] - v[0]) * g.s + (v[3] - v[2]) * g.n;
            float gy = (v[2] - v[0]) * g.e + (v[3] - v[1]) * g.w;
            float tx = dy[p] * gx, ty = dy[p] * gy;
            dgrid[2 * p] = dgrid[2 * p] + tx * sx;
            dgrid[2 * p + 1] = dgrid[2 * p + 1] + ty * sy;
        }
    for (int o = 0; o < n; o++)
        for (int b = 0; b < B; b++) {
            size_t p = (size_t)b * n + o;
            npred_gs_cell g;
            npred_gs_cell_at(&g, npred_gs_unnormalize(grid[2 * p], sx, ac),
                             npred_gs_unnormalize(grid[2 * p + 1], sy, ac), H, W);
            for (int c = 0; c < C; c++) {
                float sm = 0.0f;
                for (int k = 0; k < 4; k++)
                    if (g.in[k]) {
                        float prod = g.wt[k] * feat[b * img + g.off[k] * C + c];
                        sm = sm + prod;
                    }
                float prod = dy[p] * sm;
                dF[(size_t)o * C + c] = dF[(size_t)o * C + c] + prod;
            }
        }
}

static int count_diff(const float *a, const float *b, size_t n)
{
    int d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

/* random features, F, dy and a grid with every 7th coordinate outside [-1, 1]
 * (taps out of the map) and every 11th on a border */
static void fill_random(uint64_t *seed, float *feat, size_t nx, float *F, size_t nf, float *dy, float *grid, size_t np)
{
    for (size_t i = 0; i < nx; i++) feat[i] = (float)th_rand(seed);
    for (size_t i = 0; i < nf; i++) F[i] = (float)th_rand(seed);
    for (size_t i = 0; i < np; i++) dy[i] = (float)th_rand(seed);
    for (size_t i = 0; i < 2 * np; i++) {
        double u = th_rand(seed);
        grid[i] = (float)(i % 7 == 3 ? 1.3 * u + (u > 0 ? 0.2 : -0.2) : i % 11 == 5 ? (u > 0 ? 1.0 : -1.0) : u);
    }
}

static void test_backward_bits(void)
{
    const shape cases[] = {{3, 5, 7, 64, 40, 0, 1}, {2, 6, 9, 20, 37, 1, 1}, {2, 4, 4, 3, 5, 0, 1},
                           {3, 28, 56, 64, 6000, 0, 1}, {2, 3, 3, 33, 17, 1, 1}};
    int threads = omp_get_max_threads();
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        shape s = cases[ci];
        uint64_t seed = 5 + ci;
        size_t img = (size_t)s.H * s.W * s.C, nx = s.B * img, nf = (size_t)s.n * s.C, np = (size_t)s.B * s.n;
        float *feat = malloc(sizeof(float) * nx), *F = malloc(sizeof(float) * nf), *dy = malloc(sizeof(float) * np);
        float *grid = malloc(sizeof(float) * 2 * np), *want[3], *got[3][3];
        size_t len[3] = {nx, 2 * np, nf};
        for (int k = 0; k < 3; k++) {
            want[k] = malloc(sizeof(float) * len[k]);
            for (int t = 0; t < 3; t++) got[t][k] = malloc(sizeof(float) * len[k]);
        }
        fill_random(&seed, feat, nx, F, nf, dy, grid, np);
        for (int k = 0; k < 3; k++) /* accumulation onto nonzero contents */
            for (size_t i = 0; i < len[k]; i++) want[k][i] = 0.125f * (float)(i % 3);
        backward_definition(want[0], want[1], want[2], dy, feat, grid, F, s.B, s.H, s.W, s.C, s.n, s.ac);
        /* all three outputs (one fused pass), and each one left out (NULL): dF alone
         * takes the tiles of pass 2, dfeat and dgrid alone pass 1 */
        for (int skip = -1; skip < 3; skip++) {
            for (int t = 0; t < 3; t++) { /* 3 threads: ranges of the pipeline of unequal length */
                for (int k = 0; k < 3; k++)
                    for (size_t i = 0; i < len[k]; i++) got[t][k][i] = 0.125f * (float)(i % 3);
                omp_set_num_threads(t + 1);
                float *o[3] = {got[t][0], got[t][1], got[t][2]};
                if (skip >= 0) o[skip] = NULL;
                npred_rsample_backward(o[0], o[1], o[2], dy, feat, grid, F, s.C, s.B, s.H, s.W, s.C, s.n, s.ac);
            }
            const char *name[3] = {"dfeat", "dgrid", "dF"};
            for (int k = 0; k < 3; k++)
                for (int t = 0; t < 3; t++)
                    if (k != skip)
                        CHECK(count_diff(got[t][k], want[k], len[k]) == 0,
                              "C %d n %d B %d, %d thread(s), without %s: %d %s values differ from the definition", s.C,
                              s.n, s.B, t + 1, skip >= 0 ? name[skip] : "none", count_diff(got[t][k], want[k], len[k]),
                              name[k]);
        }
        free(feat), free(F), free(dy), free(grid);
        for (int k = 0; k < 3; k++) free(want[k]), free(got[0][k]), free(got[1][k]), free(got[2][k]);
    }
    omp_set_num_threads(threads);
}

/* Cells made once (npred_rsample_cells, in place over a copy of the grid as the
 * Gaussian readout makes them) give the grid kernels' bits: forward in both
 * feature layouts, backward accumulating into nonzero dfeat, dgrid, dF (each
 * also left out); 1 and 2 threads; positions outside and on the border, align_corners both */
static void test_cells(void)
{
    const shape cases[] = {{3, 5, 7, 64, 40, 0, 1}, {2, 6, 9, 20, 37, 1, 1}, {2, 4, 4, 3, 5, 0, 0},
                           {3, 28, 56, 64, 6000, 0, 1}, {2, 3, 3, 33, 17, 1, 0}, {2, 1, 2, 16, 9, 0, 1}};
    int threads = omp_get_max_threads();
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        shape s = cases[ci];
        uint64_t seed = 77 + ci;
        size_t img = (size_t)s.H * s.W * s.C, nx = s.B * img, nf = (size_t)s.n * s.C, np = (size_t)s.B * s.n;
        float *feat = malloc(sizeof(float) * nx), *F = malloc(sizeof(float) * nf), *dy = malloc(sizeof(float) * np);
        float *grid = malloc(sizeof(float) * 2 * np), *frac = malloc(sizeof(float) * 2 * np);
        uint32_t *key = malloc(sizeof(uint32_t) * np);
        float *want[4], *got[4];
        size_t len[4] = {np, nx, 2 * np, nf};
        for (int k = 0; k < 4; k++) want[k] = malloc(sizeof(float) * len[k]), got[k] = malloc(sizeof(float) * len[k]);
        fill_random(&seed, feat, nx, F, nf, dy, grid, np);
        memcpy(frac, grid, sizeof(float) * 2 * np);
        int made = 1;
        for (int b = 0; b < s.B; b++) /* image by image, in place */
            made &= npred_rsample_cells(key + (size_t)b * s.n, frac + 2 * (size_t)b * s.n,
                                        frac + 2 * (size_t)b * s.n, (size_t)s.n, s.H, s.W, s.ac);
        if (!CHECK(made, "cells of a %d x %d map", s.H, s.W)) continue;
        size_t so = s.rows ? (size_t)s.C : 1, sc = s.rows ? 1 : (size_t)s.n;
        for (int t = 1; t <= 2; t++) {
            omp_set_num_threads(t);
            for (int k = 0; k < 4; k++)
                for (size_t i = 0; i < len[k]; i++) want[k][i] = got[k][i] = 0.125f * (float)(i % 3);
            npred_rsample_forward(want[0], feat, grid, F, so, sc, s.B, s.H, s.W, s.C, s.n, s.ac);
            npred_rsample_forward_cells(got[0], feat, key, frac, F, so, sc, s.B, s.H, s.W, s.C, s.n);
            const char *name[4] = {"y", "dfeat", "dgrid", "dF"};
            CHECK(count_diff(got[0], want[0], len[0]) == 0,
                  "C %d n %d B %d %dx%d ac %d, %d thread(s): %d y values differ from the grid kernel's", s.C, s.n, s.B,
                  s.H, s.W, s.ac, t, count_diff(got[0], want[0], len[0]));
            for (int skip = -1; skip < 3; skip++) { /* each backward output also left out */
                for (int k = 1; k < 4; k++)
                    for (size_t i = 0; i < len[k]; i++) want[k][i] = got[k][i] = 0.125f * (float)(i % 3);
                float *w[3] = {want[1], want[2], want[3]}, *o[3] = {got[1], got[2], got[3]};
                if (skip >= 0) w[skip] = o[skip] = NULL;
                npred_rsample_backward(w[0], w[1], w[2], dy, feat, grid, F, s.C, s.B, s.H, s.W, s.C, s.n, s.ac);
                npred_rsample_backward_cells(o[0], o[1], o[2], dy, feat, key, frac, F, s.C, s.B, s.H, s.W, s.C, s.n,
                                             s.ac);
                for (int k = 1; k < 4; k++)
                    CHECK(count_diff(got[k], want[k], len[k]) == 0,
                          "C %d n %d B %d %dx%d ac %d, %d thread(s), without %s: %d %s values differ from the grid "
                          "kernels'",
                          s.C, s.n, s.B, s.H, s.W, s.ac, t, skip >= 0 ? name[skip + 1] : "none",
                          count_diff(got[k], want[k], len[k]), name[k]);
            }
        }
        free(feat), free(F), free(dy), free(grid), free(frac), free(key);
        for (int k = 0; k < 4; k++) free(want[k]), free(got[k]);
    }
    omp_set_num_threads(threads);
    uint32_t k1;
    float f2[2] = {0, 0}, g2[2] = {0, 0};
    CHECK(!npred_rsample_cells_fit(12000, 12000) && !npred_rsample_cells(&k1, f2, g2, 1, 12000, 12000, 0) &&
              npred_rsample_cells_fit(28, 56),
          "a map of 12000 x 12000 has no packed cells");
}

/* npred_rsample_cells (sixteen points at a time where AVX-512 is built, the rest one
 * by one) against the packed cell written out here from npred_gs_cell_at: key and
 * the distances bit for bit, for positions on every border and corner, just inside
 * and outside them, far outside, -0, +-inf, NaN and random ones; counts that leave
 * 0, 1 and 15 points after the last block of sixteen; both align_corners; in place
 * (frac over the grid) and not */
static void test_cells_values(void)
{
    const int maps[3][2] = {{28, 56}, {5, 7}, {1, 2}};
    const float special[] = {-1.0f, 1.0f, 0.0f, -0.0f, -1.0000001f, 1.0000001f, -0.99999994f, 0.99999994f, -1.5f,
                             1.5f, -3.0f, 3.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 0.5f, -0.5f, 1.0f / 3.0f};
    const int ns = (int)(sizeof special / sizeof *special);
    const size_t counts[3] = {16 * 30, 16 * 30 + 1, 16 * 30 + 15};
    uint64_t seed = 4242;
    for (int m = 0; m < 3; m++)
        for (int ac = 0; ac < 2; ac++)
            for (int ci = 0; ci < 3; ci++) {
                const int H = maps[m][0], W = maps[m][1];
                const size_t cnt = counts[ci];
                float *grid = malloc(sizeof(float) * 2 * cnt), *frac = malloc(sizeof(float) * 2 * cnt);
                uint32_t *key = malloc(sizeof(uint32_t) * cnt);
                for (size_t i = 0; i < 2 * cnt; i++) {
                    const size_t q = i / 2;
                    /* pairs of specials first, then specials beside random values, then random ones;
                     * the borders in pixels too: -1 + k / scale for a few k */
                    if (q < (size_t)ns * ns) grid[i] = special[i % 2 ? q % ns : q / ns];
                    else if (q < (size_t)ns * ns + 2 * (size_t)ns)
                        grid[i] = i % 2 == q % 2 ? special[q % ns] : (float)(2.5 * th_rand(&seed));
                    else if (i % 3 == 0)
                        grid[i] = -1.0f + (float)(q % 9) / npred_gs_scale(i % 2 ? H : W, ac);
                    else
                        grid[i] = (float)(1.3 * th_rand(&seed));
                }
                int bad = 0;
                for (int inplace = 0; inplace < 2; inplace++) {
                    float *src = grid;
                    if (inplace) {
                        memcpy(frac, grid, sizeof(float) * 2 * cnt);
                        src = frac;
                    }
                    if (!CHECK(npred_rsample_cells(key, frac, src, cnt, H, W, ac), "cells of %d x %d", H, W)) continue;
                    const float sx = npred_gs_scale(W, ac), sy = npred_gs_scale(H, ac);
                    for (size_t i = 0; i < cnt; i++) {
                        npred_gs_cell g;
                        npred_gs_cell_at(&g, npred_gs_unnormalize(grid[2 * i], sx, ac),
                                         npred_gs_unnormalize(grid[2 * i + 1], sy, ac), H, W);
                        int any = g.in[0] || g.in[1] || g.in[2] || g.in[3];
                        /* the nw corner's pixel + W + 1: from whichever corner is inside */
                        size_t at = g.in[0]   ? g.off[0] + (size_t)W + 1
                                    : g.in[1] ? g.off[1] + (size_t)W
                                    : g.in[2] ? g.off[2] + 1
                                    : g.in[3] ? g.off[3]
                                              : 0;
                        uint32_t want = (uint32_t)(any ? at : 0) << 4 |
                                        (uint32_t)(g.in[0] | g.in[1] << 1 | g.in[2] << 2 | g.in[3] << 3);
                        if (key[i] != want || memcmp(&frac[2 * i], &g.w, sizeof(float)) ||
                            memcmp(&frac[2 * i + 1], &g.n, sizeof(float)))
                            bad++;
                    }
                }
                CHECK(bad == 0, "%d x %d, align_corners %d, %zu points: %d cells differ from npred_gs_cell_at's", H, W,
                      ac, cnt, bad);
                free(grid), free(frac), free(key);
            }
}

/* The kernels on the (B, C, H, W) layout with the transposes fused
 * (npred_rsample_*_cells_nchw) give the bits of the transposes and the cells
 * kernels called one after the other (the Gaussian readout's old sequence):
 * forward (y and the channels-last copy) and backward (dx accumulated onto
 * nonzero contents or written over NaN, dgrid, dF; each output also left out); 1, 2
 * and 3 threads, so
 * that the batch splits evenly, unevenly and not at all between the threads */
static void test_cells_nchw(void)
{
    const shape cases[] = {{3, 5, 7, 64, 40, 0, 1}, {17, 5, 7, 32, 50, 0, 1}, {4, 6, 9, 20, 37, 1, 1},
                           {2, 3, 3, 33, 17, 1, 1}, {6, 28, 56, 64, 3000, 0, 1}};
    int threads = omp_get_max_threads();
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        shape s = cases[ci];
        uint64_t seed = 301 + ci;
        const int HW = s.H * s.W;
        size_t img = (size_t)HW * s.C, nx = s.B * img, nf = (size_t)s.n * s.C, np = (size_t)s.B * s.n;
        float *feat = malloc(sizeof(float) * nx), *x = malloc(sizeof(float) * nx), *F = malloc(sizeof(float) * nf);
        float *dy = malloc(sizeof(float) * np), *frac = malloc(sizeof(float) * 2 * np);
        float *scratch = malloc(sizeof(float) * nx), *zero = malloc(sizeof(float) * nx);
        uint32_t *key = malloc(sizeof(uint32_t) * np);
        float *want[4], *got[4];
        size_t len[4] = {np, nx, 2 * np, nf};
        for (int k = 0; k < 4; k++) want[k] = malloc(sizeof(float) * len[k]), got[k] = malloc(sizeof(float) * len[k]);
        fill_random(&seed, feat, nx, F, nf, dy, frac, np);
        for (int b = 0; b < s.B; b++)
            npred_rsample_cells(key + (size_t)b * s.n, frac + 2 * (size_t)b * s.n, frac + 2 * (size_t)b * s.n,
                                (size_t)s.n, s.H, s.W, s.ac);
        for (int b = 0; b < s.B; b++) /* x (B, C, H*W) whose channels-last copy is feat */
            for (int c = 0; c < s.C; c++)
                for (int i = 0; i < HW; i++) x[b * img + (size_t)c * HW + i] = feat[b * img + (size_t)i * s.C + c];
        for (int t = 1; t <= 3; t++) {
            omp_set_num_threads(t);
            for (size_t i = 0; i < np; i++) want[0][i] = got[0][i] = 0.125f * (float)(i % 3);
            for (size_t i = 0; i < nx; i++) scratch[i] = -7.0f;
            npred_rsample_forward_cells(want[0], feat, key, frac, F, (size_t)s.C, 1, s.B, s.H, s.W, s.C, s.n);
            npred_rsample_forward_cells_nchw(got[0], scratch, x, key, frac, F, (size_t)s.C, 1, s.B, s.H, s.W, s.C, s.n);
            CHECK(count_diff(got[0], want[0], np) == 0 && count_diff(scratch, feat, nx) == 0,
                  "forward C %d n %d B %d, %d thread(s): %d y, %d channels-last values differ", s.C, s.n, s.B, t,
                  count_diff(got[0], want[0], np), count_diff(scratch, feat, nx));
            for (int skip = -1; skip < 3; skip++)
                for (int set = 0; set < 2 - (skip == 0); set++) { /* dx added onto nonzero contents, or
                                                                     written over NaN */
                    for (int k = 1; k < 4; k++)
                        for (size_t i = 0; i < len[k]; i++) want[k][i] = got[k][i] = 0.125f * (float)(i % 3);
                    for (size_t i = 0; i < nx; i++) scratch[i] = -7.0f, zero[i] = 0.0f;
                    if (set)
                        for (size_t i = 0; i < nx; i++) want[1][i] = 0.0f, got[1][i] = NAN;
                    float *o[3] = {got[1], got[2], got[3]}, *w[3] = {zero, want[2], want[3]};
                    if (skip >= 0) o[skip] = w[skip] = NULL;
                    npred_rsample_backward_cells(w[0], w[1], w[2], dy, feat, key, frac, F, s.C, s.B, s.H, s.W, s.C,
                                                 s.n, s.ac);
                    if (w[0]) npred_rsample_add_nchw(want[1], zero, s.B, s.C, HW);
                    npred_rsample_backward_cells_nchw(o[0], scratch, o[1], o[2], dy, feat, key, frac, F, s.C, s.B,
                                                      s.H, s.W, s.C, s.n, s.ac, set);
                    const char *name[4] = {"y", "dx", "dgrid", "dF"};
                    for (int k = 1; k < 4; k++)
                        CHECK(count_diff(got[k], want[k], len[k]) == 0,
                              "backward C %d n %d B %d, %d thread(s), without %s, dx %s: %d %s values differ", s.C, s.n,
                              s.B, t, skip >= 0 ? name[skip + 1] : "none", set ? "written" : "added",
                              count_diff(got[k], want[k], len[k]), name[k]);
                }
        }
        free(feat), free(x), free(F), free(dy), free(frac), free(scratch), free(zero), free(key);
        for (int k = 0; k < 4; k++) free(want[k]), free(got[k]);
    }
    omp_set_num_threads(threads);
}

/* the layout changes against plain loops (exact: copies and one add per element) */
static void test_transposes(void)
{
    const int shapes[][2] = {{64, 1568}, {20, 37}, {3, 5}, {16, 16}, {33, 50}};
    int threads = omp_get_max_threads();
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int t = 1; t <= 2; t++) {
            omp_set_num_threads(t);
            int N = 3, C = shapes[si][0], HW = shapes[si][1];
            size_t len = (size_t)N * C * HW;
            uint64_t seed = 3 + si;
            float *in = malloc(sizeof(float) * len), *a = malloc(sizeof(float) * len), *b = malloc(sizeof(float) * len);
            float *acc = malloc(sizeof(float) * len);
            for (size_t i = 0; i < len; i++) in[i] = (float)th_rand(&seed), acc[i] = (float)th_rand(&seed);
            npred_rsample_to_nhwc(a, in, N, C, HW);
            for (int n = 0; n < N; n++)
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < HW; i++)
                        b[((size_t)n * HW + i) * C + c] = in[((size_t)n * C + c) * HW + i];
            CHECK(count_diff(a, b, len) == 0, "to_nhwc C %d HW %d, %d thread(s): %d values wrong", C, HW, t,
                  count_diff(a, b, len));
            memcpy(a, acc, sizeof(float) * len);
            npred_rsample_add_nchw(a, in, N, C, HW); /* in read as (N, HW, C) */
            for (int n = 0; n < N; n++)
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < HW; i++) {
                        size_t o = ((size_t)n * C + c) * HW + i;
                        b[o] = acc[o] + in[((size_t)n * HW + i) * C + c];
                    }
            CHECK(count_diff(a, b, len) == 0, "add_nchw C %d HW %d, %d thread(s): %d values wrong", C, HW, t,
                  count_diff(a, b, len));
            /* set_nchw over NaN: the bits of add_nchw onto zeros, a -0 stored as +0 */
            for (size_t i = 0; i < len; i += 7) in[i] = -0.0f;
            in[1] = INFINITY, in[2] = NAN;
            memset(b, 0, sizeof(float) * len);
            npred_rsample_add_nchw(b, in, N, C, HW);
            for (size_t i = 0; i < len; i++) a[i] = NAN;
            npred_rsample_set_nchw(a, in, N, C, HW);
            size_t negz = 0;
            for (size_t i = 0; i < len; i++) negz += a[i] == 0.0f && signbit(a[i]);
            CHECK(count_diff(a, b, len) == 0 && negz == 0,
                  "set_nchw C %d HW %d, %d thread(s): %d values (%zu -0) differ from add_nchw onto zeros", C, HW, t,
                  count_diff(a, b, len), negz);
            free(in), free(a), free(b), free(acc);
        }
    omp_set_num_threads(threads);
}

int main(void)
{
    RUN(test_forward_shapes);
    RUN(test_forward_threaded);
    RUN(test_backward_bits);
    RUN(test_cells);
    RUN(test_cells_values);
    RUN(test_cells_nchw);
    RUN(test_transposes);
    return th_summary();
}
