/* grid_sample: bilinear, zero padding, both align_corners; NCHW and
 * channels-last paths. Semantics and conventions: grid_sample.h; derivation of
 * the backward pass: docs/derivations-grid-sample.md.
 *
 * Legend: N/B = batch, C = channels, H x W = input map, Ho x Wo = output map
 * (general path), n = points per image (channels-last path), P = points per
 * image (Ho * Wo). px/py are source coordinates in pixels.
 *
 * Every float operation below mirrors PyTorch's CPU kernel as it runs: the
 * AVX2/AVX-512 build of ATen's GridSamplerKernel.cpp, whose vector multiply-adds
 * the compiler fuses into FMAs. The fused operations are written out with
 * fmaf() (correctly rounded everywhere; a single instruction with -march=native);
 * everything else rounds once per operation (ISO C: no implicit contraction).
 * With this the forward output and both gradients are bitwise PyTorch's on the
 * reference fixtures. */
#include "kernels/grid_sample.h"
#include "kernels/grid_sample_cell.h"

#include <math.h>
#include <stddef.h>

/* channels handled together in the channels-last path; fixes the summation
 * order of the grid gradient independently of the instruction set */
#define GS_LANES 16

/* One sampling point: the cell chosen by floor(px), floor(py). */
typedef npred_gs_cell gs_cell;

/* pixels per unit of the normalised coordinate; also d(px)/d(x) */

/* align_corners=0 fuses the multiply with the -0.5 (as PyTorch's build does) */

/* interpolated value: ((v0 w0 + v1 w1) + v2 w2) + v3 w3, the last three fused */
static inline float gs_mix(float v0, float v1, float v2, float v3, float w0, float w1,
                           float w2, float w3)
{
    return fmaf(v3, w3, fmaf(v2, w2, fmaf(v1, w1, v0 * w0)));
}

/* d(value)/d(px) and d(value)/d(py) of the cell, times g, added to acc */
static inline float gs_dx(float acc, float v0, float v1, float v2, float v3, float s, float n,
                          float g)
{
    return fmaf(fmaf(v3 - v2, n, (v1 - v0) * s), g, acc);
}

static inline float gs_dy(float acc, float v0, float v1, float v2, float v3, float e, float w,
                          float g)
{
    return fmaf(fmaf(v3 - v1, w, (v2 - v0) * e), g, acc);
}


static npred_status gs_check(const char *fn, const void *out, const void *a, const void *b,
                             int N, int C, int H, int W, int P1, int P2)
{
    if (!out || !a || !b)
        return npred_errorf(NPRED_ERR_ARG, "%s: NULL data pointer", fn);
    if (N < 0 || C < 0 || P1 < 0 || P2 < 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: negative dimension (N %d, C %d, points %d x %d)",
                            fn, N, C, P1, P2);
    if (H < 1 || W < 1)
        return npred_errorf(NPRED_ERR_ARG, "%s: input map %d x %d, expected H >= 1 and W >= 1",
                            fn, H, W);
    return NPRED_OK;
}

/* ---------------------------------------------------------------- NCHW --- */

npred_status npred_grid_sample_forward(float *out, const float *input, const float *grid,
                                       int N, int C, int H, int W, int Ho, int Wo,
                                       int align_corners)
{
    npred_status st = gs_check("grid_sample_forward", out, input, grid, N, C, H, W, Ho, Wo);
    if (st) return st;
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const long P = (long)Ho * Wo, total = (long)N * P;
    const size_t HW = (size_t)H * W;

#pragma omp parallel for schedule(static)
    for (long p = 0; p < total; p++) {
        const long b = p / P, q = p % P;
        gs_cell cl;
        npred_gs_cell_at(&cl, npred_gs_unnormalize(grid[2 * p], sx, align_corners),
                   npred_gs_unnormalize(grid[2 * p + 1], sy, align_corners), H, W);
        for (int c = 0; c < C; c++) {
            const float *plane = input + ((size_t)b * C + c) * HW;
            float v0 = cl.in[0] ? plane[cl.off[0]] : 0.0f;
            float v1 = cl.in[1] ? plane[cl.off[1]] : 0.0f;
            float v2 = cl.in[2] ? plane[cl.off[2]] : 0.0f;
            float v3 = cl.in[3] ? plane[cl.off[3]] : 0.0f;
            out[((size_t)b * C + c) * P + q] =
                gs_mix(v0, v1, v2, v3, cl.wt[0], cl.wt[1], cl.wt[2], cl.wt[3]);
        }
    }
    return NPRED_OK;
}

npred_status npred_grid_sample_backward(float *dinput, float *dgrid, const float *dout,
                                        const float *input, const float *grid,
                                        int N, int C, int H, int W, int Ho, int Wo,
                                        int align_corners)
{
    npred_status st = gs_check("grid_sample_backward", dout, input, grid, N, C, H, W, Ho, Wo);
    if (st) return st;
    if (!dinput && !dgrid) return NPRED_OK;
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const long P = (long)Ho * Wo;
    const size_t HW = (size_t)H * W;

    /* over the batch: image b scatters only into its own dinput planes */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < N; b++) {
        for (long q = 0; q < P; q++) {
            const size_t pt = (size_t)b * P + q;
            gs_cell cl;
            npred_gs_cell_at(&cl, npred_gs_unnormalize(grid[2 * pt], sx, align_corners),
                       npred_gs_unnormalize(grid[2 * pt + 1], sy, align_corners), H, W);
            float gx = 0.0f, gy = 0.0f;
            for (int c = 0; c < C; c++) {
                const size_t plane = ((size_t)b * C + c) * HW;
                const float g = dout[((size_t)b * C + c) * P + q];
                if (dinput) {
                    for (int k = 0; k < 4; k++)
                        if (cl.in[k]) dinput[plane + cl.off[k]] += g * cl.wt[k];
                }
                if (dgrid) {
                    const float *in = input + plane;
                    float v0 = cl.in[0] ? in[cl.off[0]] : 0.0f;
                    float v1 = cl.in[1] ? in[cl.off[1]] : 0.0f;
                    float v2 = cl.in[2] ? in[cl.off[2]] : 0.0f;
                    float v3 = cl.in[3] ? in[cl.off[3]] : 0.0f;
                    gx = gs_dx(gx, v0, v1, v2, v3, cl.s, cl.n, g);
                    gy = gs_dy(gy, v0, v1, v2, v3, cl.e, cl.w, g);
                }
            }
            if (dgrid) {
                dgrid[2 * pt] += gx * sx;
                dgrid[2 * pt + 1] += gy * sy;
            }
        }
    }
    return NPRED_OK;
}

/* ------------------------------------------------------- channels-last --- */

/* Feature rows of the four corners for channels [c0, c0 + GS_LANES): corners
 * outside the image read from `zeros`. */
static inline void gs_rows(const float *rows[4], const gs_cell *cl, const float *fb, int C,
                           int c0, const float *zeros)
{
    for (int k = 0; k < 4; k++)
        rows[k] = cl->in[k] ? fb + cl->off[k] * (size_t)C + c0 : zeros;
}

npred_status npred_grid_sample_nhwc_forward(float *out, const float *feat, const float *grid,
                                            int B, int H, int W, int C, int n,
                                            int align_corners)
{
    npred_status st = gs_check("grid_sample_nhwc_forward", out, feat, grid, B, C, H, W, n, 1);
    if (st) return st;
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const long total = (long)B * n;
    const size_t HWC = (size_t)H * W * C;
    static const float zeros[GS_LANES];

#pragma omp parallel for schedule(static)
    for (long p = 0; p < total; p++) {
        const float *fb = feat + (size_t)(p / n) * HWC;
        float *o = out + (size_t)p * C;
        gs_cell cl;
        npred_gs_cell_at(&cl, npred_gs_unnormalize(grid[2 * p], sx, align_corners),
                   npred_gs_unnormalize(grid[2 * p + 1], sy, align_corners), H, W);
        const float w0 = cl.wt[0], w1 = cl.wt[1], w2 = cl.wt[2], w3 = cl.wt[3];
        for (int c0 = 0; c0 < C; c0 += GS_LANES) {
            const int m = C - c0 < GS_LANES ? C - c0 : GS_LANES;
            const float *r[4];
            gs_rows(r, &cl, fb, C, c0, zeros);
            const float *restrict r0 = r[0], *restrict r1 = r[1];
            const float *restrict r2 = r[2], *restrict r3 = r[3];
            float *restrict oc = o + c0;
            if (m == GS_LANES) {
                for (int l = 0; l < GS_LANES; l++)
                    oc[l] = gs_mix(r0[l], r1[l], r2[l], r3[l], w0, w1, w2, w3);
            } else {
                for (int l = 0; l < m; l++)
                    oc[l] = gs_mix(r0[l], r1[l], r2[l], r3[l], w0, w1, w2, w3);
            }
        }
    }
    return NPRED_OK;
}

/* fixed pairwise sum of the GS_LANES partial sums */
static inline float gs_lanes_sum(const float *a)
{
    float t[GS_LANES];
    for (int l = 0; l < GS_LANES; l++) t[l] = a[l];
    for (int h = GS_LANES / 2; h >= 1; h /= 2)
        for (int l = 0; l < h; l++) t[l] = t[l] + t[l + h];
    return t[0];
}

npred_status npred_grid_sample_nhwc_backward(float *dfeat, float *dgrid, const float *dout,
                                             const float *feat, const float *grid,
                                             int B, int H, int W, int C, int n,
                                             int align_corners)
{
    npred_status st = gs_check("grid_sample_nhwc_backward", dout, feat, grid, B, C, H, W, n, 1);
    if (st) return st;
    if (!dfeat && !dgrid) return NPRED_OK;
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const size_t HWC = (size_t)H * W * C;
    static const float zeros[GS_LANES];

    /* over the batch: image b scatters only into its own dfeat slice */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *fb = feat + (size_t)b * HWC;
        for (int i = 0; i < n; i++) {
            const size_t pt = (size_t)b * n + i;
            const float *restrict g = dout + pt * C;
            gs_cell cl;
            npred_gs_cell_at(&cl, npred_gs_unnormalize(grid[2 * pt], sx, align_corners),
                       npred_gs_unnormalize(grid[2 * pt + 1], sy, align_corners), H, W);
            if (dfeat) {
                float *db = dfeat + (size_t)b * HWC;
                for (int k = 0; k < 4; k++) {
                    if (!cl.in[k]) continue;
                    float *restrict d = db + cl.off[k] * (size_t)C;
                    const float wk = cl.wt[k];
                    for (int c = 0; c < C; c++) d[c] += g[c] * wk;
                }
            }
            if (!dgrid) continue;
            float ax[GS_LANES] = {0}, ay[GS_LANES] = {0};
            const float s = cl.s, nn = cl.n, e = cl.e, w = cl.w;
            for (int c0 = 0; c0 < C; c0 += GS_LANES) {
                const int m = C - c0 < GS_LANES ? C - c0 : GS_LANES;
                const float *r[4];
                gs_rows(r, &cl, fb, C, c0, zeros);
                const float *restrict r0 = r[0], *restrict r1 = r[1];
                const float *restrict r2 = r[2], *restrict r3 = r[3];
                const float *restrict gc = g + c0;
                if (m == GS_LANES) {
                    for (int l = 0; l < GS_LANES; l++) {
                        ax[l] = gs_dx(ax[l], r0[l], r1[l], r2[l], r3[l], s, nn, gc[l]);
                        ay[l] = gs_dy(ay[l], r0[l], r1[l], r2[l], r3[l], e, w, gc[l]);
                    }
                } else {
                    for (int l = 0; l < m; l++) {
                        ax[l] = gs_dx(ax[l], r0[l], r1[l], r2[l], r3[l], s, nn, gc[l]);
                        ay[l] = gs_dy(ay[l], r0[l], r1[l], r2[l], r3[l], e, w, gc[l]);
                    }
                }
            }
            dgrid[2 * pt] += gs_lanes_sum(ax) * sx;
            dgrid[2 * pt + 1] += gs_lanes_sum(ay) * sy;
        }
    }
    return NPRED_OK;
}

/* -------------------------------------------------------------- layout --- */

#define GS_TILE 16

static npred_status gs_check_layout(const char *fn, const float *out, const float *in,
                                    int N, int C, int H, int W)
{
    if (!out || !in) return npred_errorf(NPRED_ERR_ARG, "%s: NULL data pointer", fn);
    if (N < 0 || C < 0 || H < 0 || W < 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: negative dimension (%d, %d, %d, %d)", fn, N, C,
                            H, W);
    return NPRED_OK;
}

/* out[b][j][i] = in[b][i][j] for an (R, S) matrix per image, in tiles; full
 * tiles use fixed trip counts so the compiler can unroll them */
static void gs_transpose(float *restrict out, const float *restrict in, int N, long R, long S)
{
    const long tiles_r = (R + GS_TILE - 1) / GS_TILE, tiles_s = (S + GS_TILE - 1) / GS_TILE;
    const long total = (long)N * tiles_r * tiles_s;
#pragma omp parallel for schedule(static)
    for (long t = 0; t < total; t++) {
        const long b = t / (tiles_r * tiles_s), rs = t % (tiles_r * tiles_s);
        const long r0 = (rs / tiles_s) * GS_TILE, s0 = (rs % tiles_s) * GS_TILE;
        const long r1 = r0 + GS_TILE < R ? r0 + GS_TILE : R;
        const long s1 = s0 + GS_TILE < S ? s0 + GS_TILE : S;
        const float *src = in + (size_t)b * R * S;
        float *dst = out + (size_t)b * R * S;
        if (r1 - r0 == GS_TILE && s1 - s0 == GS_TILE) {
            for (int i = 0; i < GS_TILE; i++)
                for (int j = 0; j < GS_TILE; j++)
                    dst[(s0 + i) * R + r0 + j] = src[(r0 + j) * S + s0 + i];
        } else {
            for (long s = s0; s < s1; s++)
                for (long r = r0; r < r1; r++) dst[s * R + r] = src[r * S + s];
        }
    }
}

npred_status npred_grid_sample_nchw_to_nhwc(float *out, const float *in, int N, int C, int H,
                                            int W)
{
    npred_status st = gs_check_layout("grid_sample_nchw_to_nhwc", out, in, N, C, H, W);
    if (st) return st;
    gs_transpose(out, in, N, C, (long)H * W);
    return NPRED_OK;
}

npred_status npred_grid_sample_nhwc_to_nchw(float *out, const float *in, int N, int C, int H,
                                            int W)
{
    npred_status st = gs_check_layout("grid_sample_nhwc_to_nchw", out, in, N, C, H, W);
    if (st) return st;
    gs_transpose(out, in, N, (long)H * W, C);
    return NPRED_OK;
}
