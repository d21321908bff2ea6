/* The bilinear cell of one sampling position, as PyTorch's CPU grid_sample forms
 * it: unnormalisation, floor, corner weights, which corners lie inside the map
 * and their offsets. Shared by kernels/grid_sample.c and readouts/sample.c. The
 * float operations follow PyTorch's kernel operation by operation (see
 * grid_sample.h). */
#ifndef NPRED_KERNELS_GRID_SAMPLE_CELL_H
#define NPRED_KERNELS_GRID_SAMPLE_CELL_H

#include <math.h>
#include <stddef.h>

typedef struct {
    float n, s, w, e; /* distances to the north, south, west, east sides */
    float wt[4];      /* bilinear weights of the corners nw, ne, sw, se */
    int in[4];        /* corner inside the map */
    size_t off[4];    /* corner offset row * W + col (0 where outside) */
} npred_gs_cell;

/* pixels per grid unit: (size - 1) / 2 with align_corners, size / 2 without */
static inline float npred_gs_scale(int size, int align_corners)
{
    return align_corners ? (float)(size - 1) / 2.0f : (float)size / 2.0f;
}

/* grid coordinate -> source pixel coordinate */
static inline float npred_gs_unnormalize(float v, float scale, int align_corners)
{
    return align_corners ? (v + 1.0f) * scale : fmaf(v + 1.0f, scale, -0.5f);
}

static inline void npred_gs_cell_at(npred_gs_cell *c, float px, float py, int H, int W)
{
    float xw = floorf(px), yn = floorf(py);
    c->w = px - xw;
    c->e = 1.0f - c->w;
    c->n = py - yn;
    c->s = 1.0f - c->n;
    c->wt[0] = c->s * c->e;
    c->wt[1] = c->s * c->w;
    c->wt[2] = c->n * c->e;
    c->wt[3] = c->n * c->w;
    /* float comparisons: false for NaN, and no int conversion of huge values */
    int w_in = xw >= 0.0f && xw <= (float)(W - 1);
    int e_in = xw >= -1.0f && xw <= (float)(W - 2);
    int n_in = yn >= 0.0f && yn <= (float)(H - 1);
    int s_in = yn >= -1.0f && yn <= (float)(H - 2);
    long x0 = (w_in || e_in) ? (long)xw : 0;
    long y0 = (n_in || s_in) ? (long)yn : 0;
    c->in[0] = w_in && n_in;
    c->in[1] = e_in && n_in;
    c->in[2] = w_in && s_in;
    c->in[3] = e_in && s_in;
    c->off[0] = c->in[0] ? (size_t)(y0 * W + x0) : 0;
    c->off[1] = c->in[1] ? (size_t)(y0 * W + x0 + 1) : 0;
    c->off[2] = c->in[2] ? (size_t)((y0 + 1) * W + x0) : 0;
    c->off[3] = c->in[3] ? (size_t)((y0 + 1) * W + x0 + 1) : 0;
}

#endif
