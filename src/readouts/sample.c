/* Fused channels-last sampling + contraction for point readouts (sample.h).
 *
 * Channels are processed in blocks of LANES with one accumulator per lane, so
 * the compiler vectorises the dot products without reassociating them: the
 * summation order is fixed (lane l sums channels l, l+LANES, ...; the lanes are
 * then added in order) whatever the instruction set or thread count. */
#include "kernels/grid_sample_cell.h"
#include "readouts/sample.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define LANES 16

typedef struct {
    float n, s, w, e;     /* fractional distances (north/south/west/east) */
    float wt[4];          /* weights of the taps nw, ne, sw, se */
    const float *tap[4];  /* tap rows (C floats) or NULL when outside the map */
    size_t off[4];
} rs_cell;


/* Neurons per pass-2 tile at most: 1536 dF rows of 64 channels are 384 KB, which
 * stay in L2 while the tile walks through the images (measured best at 1-2 k). */
#define RS_TILE 1536

static inline void rs_cell_at(rs_cell *c, const float *feat, float gx, float gy, float sx, float sy, int H, int W,
                              int C, int align_corners)
{
    npred_gs_cell g;
    npred_gs_cell_at(&g, npred_gs_unnormalize(gx, sx, align_corners), npred_gs_unnormalize(gy, sy, align_corners), H,
                     W);
    c->n = g.n, c->s = g.s, c->w = g.w, c->e = g.e;
    for (int k = 0; k < 4; k++) {
        c->wt[k] = g.wt[k];
        c->off[k] = g.off[k] * (size_t)C;
        c->tap[k] = g.in[k] ? feat + c->off[k] : NULL;
    }
}

/* s[0..L) = sum over inside taps of wt * tap[c0 .. c0+L) */
static inline void rs_mix(float *s, const rs_cell *c, int c0, int L)
{
    for (int l = 0; l < L; l++) s[l] = 0.0f;
    for (int k = 0; k < 4; k++) {
        if (!c->tap[k]) continue;
        const float *t = c->tap[k] + c0;
        float wk = c->wt[k];
        for (int l = 0; l < L; l++) s[l] += wk * t[l];
    }
}

static inline float rs_sum(const float *acc)
{
    float r = 0.0f;
    for (int l = 0; l < LANES; l++) r += acc[l];
    return r;
}

/* F . sample at one point */
static inline float rs_point(const rs_cell *c, const float *f, int C)
{
    float acc[LANES] = {0}, s[LANES];
    int c0 = 0;
    for (; c0 + LANES <= C; c0 += LANES) {
        rs_mix(s, c, c0, LANES);
        for (int l = 0; l < LANES; l++) acc[l] += f[c0 + l] * s[l];
    }
    if (c0 < C) {
        rs_mix(s, c, c0, C - c0);
        for (int l = 0; l < C - c0; l++) acc[l] += f[c0 + l] * s[l];
    }
    return rs_sum(acc);
}

void npred_rsample_forward(float *y, const float *feat, const float *grid, const float *F, int ldf, int B, int H,
                           int W, int C, int n, int align_corners)
{
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const size_t img = (size_t)H * W * C;
    const long total = (long)B * n;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < total; p++) {
        long b = p / n, o = p % n;
        rs_cell c;
        rs_cell_at(&c, feat + (size_t)b * img, grid[2 * p], grid[2 * p + 1], sx, sy, H, W, C, align_corners);
        y[p] += rs_point(&c, F + (size_t)o * ldf, C);
    }
}

/* v[k] = F . tap[k] (the grid gradient needs each tap) and, when dtap is given,
 * dtap[k] += (g * wt[k]) * F for the inside taps */
static inline void rs_taps_backward(float v[4], float *const dtap[4], const rs_cell *c, const float *f, float g,
                                    int C)
{
    float acc[4][LANES] = {{0}};
    int c0 = 0;
    for (; c0 + LANES <= C; c0 += LANES)
        for (int k = 0; k < 4; k++) {
            if (!c->tap[k]) continue;
            const float *restrict t = c->tap[k] + c0, *restrict fc = f + c0;
            for (int l = 0; l < LANES; l++) acc[k][l] += fc[l] * t[l];
            if (dtap[k]) {
                float gw = g * c->wt[k], *restrict d = dtap[k] + c0;
                for (int l = 0; l < LANES; l++) d[l] += gw * fc[l];
            }
        }
    for (int k = 0; k < 4; k++) {
        if (!c->tap[k]) continue;
        float gw = g * c->wt[k];
        for (int l = 0; c0 + l < C; l++) {
            acc[k][l] += f[c0 + l] * c->tap[k][c0 + l];
            if (dtap[k]) dtap[k][c0 + l] += gw * f[c0 + l];
        }
        v[k] = rs_sum(acc[k]);
    }
    for (int k = 0; k < 4; k++)
        if (!c->tap[k]) v[k] = 0.0f;
}

/* df += g * sample */
static inline void rs_sample_accumulate(float *df, const rs_cell *c, float g, int C)
{
    float s[LANES];
    int c0 = 0;
    for (; c0 + LANES <= C; c0 += LANES) {
        rs_mix(s, c, c0, LANES);
        for (int l = 0; l < LANES; l++) df[c0 + l] += g * s[l];
    }
    if (c0 < C) {
        rs_mix(s, c, c0, C - c0);
        for (int l = 0; l < C - c0; l++) df[c0 + l] += g * s[l];
    }
}

void npred_rsample_backward(float *dfeat, float *dgrid, float *dF, const float *dy, const float *feat,
                            const float *grid, const float *F, int ldf, int B, int H, int W, int C, int n,
                            int align_corners)
{
    const float sx = npred_gs_scale(W, align_corners), sy = npred_gs_scale(H, align_corners);
    const size_t img = (size_t)H * W * C;
    if (dfeat || dgrid) { /* pass 1: one image per thread (its dfeat and dgrid rows are its own) */
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            for (int o = 0; o < n; o++) {
                size_t p = (size_t)b * n + o;
                float g = dy[p];
                rs_cell c;
                rs_cell_at(&c, feat + (size_t)b * img, grid[2 * p], grid[2 * p + 1], sx, sy, H, W, C, align_corners);
                float *dtap[4] = {NULL, NULL, NULL, NULL};
                if (dfeat)
                    for (int k = 0; k < 4; k++)
                        if (c.tap[k]) dtap[k] = dfeat + (size_t)b * img + c.off[k];
                float v[4];
                rs_taps_backward(v, dtap, &c, F + (size_t)o * ldf, g, C);
                if (dgrid) {
                    float gx = (v[1] - v[0]) * c.s + (v[3] - v[2]) * c.n;
                    float gy = (v[2] - v[0]) * c.e + (v[3] - v[1]) * c.w;
                    dgrid[2 * p] += g * gx * sx;
                    dgrid[2 * p + 1] += g * gy * sy;
                }
            }
        }
    }
    if (!dF) return;
    /* pass 2: tiles of consecutive neurons, one tile per thread at a time; images
     * inside a tile and the tile's neurons innermost, so an image is read once per
     * tile (not once per neuron) while the tile's dF rows stay in cache. Each dF row
     * is one thread's and sums its images in order 0..B-1 whatever the tiling or
     * the thread count. */
    int ntiles = (n + RS_TILE - 1) / RS_TILE, T = omp_get_max_threads();
    if (T > 1) ntiles = (ntiles + T - 1) / T * T; /* balanced */
    if (ntiles > n) ntiles = n;
    const int per = (n + ntiles - 1) / ntiles;
#pragma omp parallel for schedule(static)
    for (int tile = 0; tile < ntiles; tile++) {
        int o0 = tile * per, o1 = o0 + per < n ? o0 + per : n;
        for (int b = 0; b < B; b++)
            for (int o = o0; o < o1; o++) {
                size_t p = (size_t)b * n + o;
                rs_cell c;
                rs_cell_at(&c, feat + (size_t)b * img, grid[2 * p], grid[2 * p + 1], sx, sy, H, W, C, align_corners);
                rs_sample_accumulate(dF + (size_t)o * ldf, &c, dy[p], C);
            }
    }
}

#define TB 32

void npred_rsample_to_nhwc(float *out, const float *in, int N, int C, int HW)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < N; b++)
        for (int i0 = 0; i0 < HW; i0 += TB) {
            const float *src = in + (size_t)b * C * HW;
            float *dst = out + (size_t)b * C * HW;
            int i1 = i0 + TB < HW ? i0 + TB : HW;
            for (int c0 = 0; c0 < C; c0 += TB) {
                int c1 = c0 + TB < C ? c0 + TB : C;
                for (int i = i0; i < i1; i++)
                    for (int c = c0; c < c1; c++) dst[(size_t)i * C + c] = src[(size_t)c * HW + i];
            }
        }
}

void npred_rsample_add_nchw(float *out, const float *in, int N, int C, int HW)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < N; b++)
        for (int c0 = 0; c0 < C; c0 += TB) {
            const float *src = in + (size_t)b * C * HW;
            float *dst = out + (size_t)b * C * HW;
            int c1 = c0 + TB < C ? c0 + TB : C;
            for (int i0 = 0; i0 < HW; i0 += TB) {
                int i1 = i0 + TB < HW ? i0 + TB : HW;
                for (int c = c0; c < c1; c++)
                    for (int i = i0; i < i1; i++) dst[(size_t)c * HW + i] += src[(size_t)i * C + c];
            }
        }
}
