/* Weight regularizers (Laplace family, Gaussian-masked Laplace, group sparsity)
 * and their gradients. See regularizers.h and docs/regularizers.md.
 *
 * The Laplace filter is applied to each (o, i) slice of W as a cross-correlation
 * with zero padding (every filter here is symmetric, so it equals PyTorch's
 * conv2d). The gradient is gathered per weight element: each element sees at
 * most f*f filtered outputs, which are recomputed on the fly from the sparse
 * filter taps. That keeps every sum in double and needs no scratch memory. */
#include "kernels/regularizers.h"

#include <math.h>
#include <stddef.h>

#define MAX_TAPS 49 /* 7 x 7 */

static const float laplace3[9] = {
    0, -1, 0,
    -1, 4, -1,
    0, -1, 0,
};

static const float laplace5[25] = {
    0, 0, 1, 0, 0,
    0, 1, 2, 1, 0,
    1, 2, -16, 2, 1,
    0, 1, 2, 1, 0,
    0, 0, 1, 0, 0,
};

static const float laplace7[49] = {
    0, 0, 1, 1, 1, 0, 0,
    0, 1, 3, 3, 3, 1, 0,
    1, 3, 0, -7, 0, 3, 1,
    1, 3, -7, -24, -7, 3, 1,
    1, 3, 0, -7, 0, 3, 1,
    0, 1, 3, 3, 3, 1, 0,
    0, 0, 1, 1, 1, 0, 0,
};

const float *npred_reg_laplace_filter(int filter_size)
{
    switch (filter_size) {
    case 3: return laplace3;
    case 5: return laplace5;
    case 7: return laplace7;
    default: return NULL;
    }
}

/* Geometry of one call: filter taps, padding, slice and output sizes, and the
 * Gaussian mask parameters when the output is masked. */
typedef struct {
    int kh, kw, pad, ho, wo;
    int ntap;
    int tu[MAX_TAPS], tv[MAX_TAPS]; /* tap offsets (row, column) in the filter */
    double tl[MAX_TAPS];            /* tap values (non-zero only) */
    int masked;
    double sigma, gmin, gspan;      /* raw Gaussian minimum and max - min */
} lap_plan;

static npred_status plan_init(lap_plan *pl, const char *who, const float *w, int out_ch,
                              int in_ch, int kh, int kw, int padding, int filter_size)
{
    const float *filt = npred_reg_laplace_filter(filter_size);
    if (!filt)
        return npred_errorf(NPRED_ERR_ARG, "%s: filter_size %d is not supported (expected 3, 5 or 7)",
                            who, filter_size);
    if (!w)
        return npred_errorf(NPRED_ERR_ARG, "%s: weight pointer is NULL", who);
    if (out_ch < 1 || in_ch < 1 || kh < 1 || kw < 1)
        return npred_errorf(NPRED_ERR_SHAPE, "%s: weight shape (%d, %d, %d, %d) must be positive",
                            who, out_ch, in_ch, kh, kw);
    if (padding < NPRED_REG_PAD_DEFAULT)
        return npred_errorf(NPRED_ERR_ARG, "%s: padding %d (expected >= 0, or %d for the default)",
                            who, padding, NPRED_REG_PAD_DEFAULT);
    pl->pad = padding == NPRED_REG_PAD_DEFAULT ? filter_size / 2 : padding;
    pl->kh = kh;
    pl->kw = kw;
    pl->ho = kh + 2 * pl->pad - filter_size + 1;
    pl->wo = kw + 2 * pl->pad - filter_size + 1;
    if (pl->ho < 1 || pl->wo < 1)
        return npred_errorf(NPRED_ERR_SHAPE,
                            "%s: a %dx%d kernel with padding %d is smaller than the %dx%d Laplace filter",
                            who, kh, kw, pl->pad, filter_size, filter_size);
    pl->ntap = 0;
    for (int u = 0; u < filter_size; u++)
        for (int v = 0; v < filter_size; v++) {
            float l = filt[u * filter_size + v];
            if (l == 0.0f)
                continue;
            pl->tu[pl->ntap] = u;
            pl->tv[pl->ntap] = v;
            pl->tl[pl->ntap] = l;
            pl->ntap++;
        }
    pl->masked = 0;
    return NPRED_OK;
}

/* Unnormalised Gaussian at grid cell (a, b) of an (h, w) grid centred on its
 * middle, written in the reference's order of operations. */
static double gauss_raw(int a, int b, int h, int w, double sigma)
{
    double x = a - (h - 1) / 2.0, y = b - (w - 1) / 2.0;
    double s2 = sigma * sigma;
    return exp(-0.5 * (x * x / s2 + y * y / s2));
}

/* Minimum and (maximum - minimum) of the raw Gaussian over the grid. */
static void gauss_range(double *gmin, double *gspan, int h, int w, double sigma)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++) {
            double g = gauss_raw(a, b, h, w, sigma);
            lo = g < lo ? g : lo;
            hi = g > hi ? g : hi;
        }
    *gmin = lo;
    *gspan = hi - lo;
}

static float gauss_norm(const lap_plan *pl, int a, int b)
{
    return (float)((gauss_raw(a, b, pl->kh, pl->kw, pl->sigma) - pl->gmin) / pl->gspan);
}

npred_status npred_reg_gaussian2d(float *mask, int h, int w, double sigma)
{
    if (!mask)
        return npred_errorf(NPRED_ERR_ARG, "gaussian2d: mask pointer is NULL");
    if (h < 1 || w < 1 || (h == 1 && w == 1))
        return npred_errorf(NPRED_ERR_SHAPE, "gaussian2d: size %dx%d (expected positive and not 1x1)",
                            h, w);
    if (!(sigma > 0) || !isfinite(sigma))
        return npred_errorf(NPRED_ERR_ARG, "gaussian2d: sigma %g (expected finite and > 0)", sigma);
    lap_plan pl = {.kh = h, .kw = w, .sigma = sigma};
    gauss_range(&pl.gmin, &pl.gspan, h, w, sigma);
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++)
            mask[a * w + b] = gauss_norm(&pl, a, b);
    return NPRED_OK;
}

/* Weight of output cell (p, q) in the numerator: 1 without a mask; with one,
 * the sum of (1 - G)^2 over the mask cells that broadcast onto (p, q) (one
 * cell when the output has the mask's size, a whole row/column when it is 1). */
static double cell_weight(const lap_plan *pl, int p, int q)
{
    if (!pl->masked)
        return 1.0;
    int a0 = pl->ho == pl->kh ? p : 0, a1 = pl->ho == pl->kh ? p + 1 : pl->kh;
    int b0 = pl->wo == pl->kw ? q : 0, b1 = pl->wo == pl->kw ? q + 1 : pl->kw;
    double c = 0.0;
    for (int a = a0; a < a1; a++)
        for (int b = b0; b < b1; b++) {
            float m = 1.0f - gauss_norm(pl, a, b);
            c += (double)m * m;
        }
    return c;
}

/* Filtered value at output cell (p, q) of one slice. */
static double filtered_at(const lap_plan *pl, const float *ws, // (kh, kw)
                          int p, int q)
{
    double acc = 0.0;
    for (int t = 0; t < pl->ntap; t++) {
        int y = p + pl->tu[t] - pl->pad, x = q + pl->tv[t] - pl->pad;
        if (y >= 0 && y < pl->kh && x >= 0 && x < pl->kw)
            acc += pl->tl[t] * ws[y * pl->kw + x];
    }
    return acc;
}

/* sum over slices and output cells of weight(p, q) * filtered^2 */
static double numerator_sum(const lap_plan *pl, const float *w, // (S, kh, kw)
                            size_t slices)
{
    size_t plane = (size_t)pl->kh * pl->kw;
    double acc = 0.0;
    for (int p = 0; p < pl->ho; p++)
        for (int q = 0; q < pl->wo; q++) {
            double c = cell_weight(pl, p, q);
            if (c == 0.0)
                continue;
            double part = 0.0;
            for (size_t s = 0; s < slices; s++) {
                double o = filtered_at(pl, w + s * plane, p, q);
                part += o * o;
            }
            acc += c * part;
        }
    return acc;
}

static double sum_squares(const float *w, size_t n)
{
    double acc = 0.0;
    for (size_t i = 0; i < n; i++)
        acc += (double)w[i] * w[i];
    return acc;
}

/* dw += gnum * d(numerator_sum)/dW + gden * d(sum W^2)/dW */
static void accumulate_grad(const lap_plan *pl, float *dw, // (S, kh, kw)
                            const float *w,                // (S, kh, kw)
                            size_t slices, double gnum, double gden)
{
    size_t plane = (size_t)pl->kh * pl->kw;
    int cp[MAX_TAPS], cq[MAX_TAPS];
    double coef[MAX_TAPS];
    for (int y = 0; y < pl->kh; y++)
        for (int x = 0; x < pl->kw; x++) {
            /* the output cells that W[y, x] feeds, with the chain-rule factor */
            int n = 0;
            for (int t = 0; t < pl->ntap; t++) {
                int p = y - pl->tu[t] + pl->pad, q = x - pl->tv[t] + pl->pad;
                if (p < 0 || p >= pl->ho || q < 0 || q >= pl->wo)
                    continue;
                double c = cell_weight(pl, p, q);
                if (c == 0.0)
                    continue;
                cp[n] = p;
                cq[n] = q;
                coef[n] = 2.0 * gnum * c * pl->tl[t];
                n++;
            }
            size_t e = (size_t)y * pl->kw + x;
            for (size_t s = 0; s < slices; s++) {
                const float *ws = w + s * plane;
                double g = 2.0 * gden * ws[e];
                for (int j = 0; j < n; j++)
                    g += coef[j] * filtered_at(pl, ws, cp[j], cq[j]);
                dw[s * plane + e] += (float)g;
            }
        }
}

npred_status npred_reg_laplace_l2(double *value, float *dw, const float *w, double scale,
                                  int out_ch, int in_ch, int kh, int kw, int padding,
                                  int filter_size, bool avg)
{
    lap_plan pl;
    npred_status st = plan_init(&pl, "LaplaceL2", w, out_ch, in_ch, kh, kw, padding, filter_size);
    if (st != NPRED_OK)
        return st;
    size_t slices = (size_t)out_ch * in_ch;
    double count = avg ? (double)slices * pl.ho * pl.wo : 1.0;
    if (value)
        *value = numerator_sum(&pl, w, slices) / count / 2.0;
    if (dw)
        accumulate_grad(&pl, dw, w, slices, scale / (2.0 * count), 0.0);
    return NPRED_OK;
}

/* agg(weighted filtered^2) / agg(W^2) and its gradient, for a ready plan */
static void normalised(const lap_plan *pl, double *value, float *dw, const float *w,
                       double scale, size_t slices, bool avg, double num_count)
{
    size_t n = slices * pl->kh * pl->kw;
    double cn = avg ? num_count : 1.0, cd = avg ? (double)n : 1.0;
    double num = numerator_sum(pl, w, slices) / cn;
    double den = sum_squares(w, n) / cd;
    double v = num / den;
    if (value)
        *value = v;
    if (dw)
        accumulate_grad(pl, dw, w, slices, scale / (cn * den), -scale * v / (den * cd));
}

npred_status npred_reg_laplace_l2norm(double *value, float *dw, const float *w, double scale,
                                      int out_ch, int in_ch, int kh, int kw, int padding, bool avg)
{
    lap_plan pl;
    npred_status st = plan_init(&pl, "LaplaceL2norm", w, out_ch, in_ch, kh, kw, padding, 3);
    if (st != NPRED_OK)
        return st;
    size_t slices = (size_t)out_ch * in_ch;
    normalised(&pl, value, dw, w, scale, slices, avg, (double)slices * pl.ho * pl.wo);
    return NPRED_OK;
}

npred_status npred_reg_gaussian_laplace_l2(double *value, float *dw, const float *w, double scale,
                                           int out_ch, int in_ch, int kh, int kw, int padding,
                                           double sigma, bool avg)
{
    lap_plan pl;
    npred_status st = plan_init(&pl, "GaussianLaplaceL2", w, out_ch, in_ch, kh, kw, padding, 3);
    if (st != NPRED_OK)
        return st;
    if (isnan(sigma) || isinf(sigma))
        return npred_errorf(NPRED_ERR_ARG, "GaussianLaplaceL2: sigma %g is not finite", sigma);
    if (kh == 1 && kw == 1)
        return npred_errorf(NPRED_ERR_SHAPE,
                            "GaussianLaplaceL2: a 1x1 kernel has an undefined Gaussian mask (0/0)");
    if ((pl.ho != kh && pl.ho != 1) || (pl.wo != kw && pl.wo != 1))
        return npred_errorf(NPRED_ERR_SHAPE,
                            "GaussianLaplaceL2: filtered size %dx%d (padding %d) does not broadcast "
                            "against the %dx%d mask (use padding 1)",
                            pl.ho, pl.wo, pl.pad, kh, kw);
    pl.masked = 1;
    pl.sigma = sigma > 0 ? sigma : (kh < kw ? kh : kw) / 4.0;
    gauss_range(&pl.gmin, &pl.gspan, kh, kw, pl.sigma);
    size_t slices = (size_t)out_ch * in_ch;
    normalised(&pl, value, dw, w, scale, slices, avg, (double)slices * kh * kw);
    return NPRED_OK;
}

npred_status npred_reg_group_sparsity(double *value, float *dw, const float *w, double scale,
                                      int out_ch, int in_ch, int kh, int kw)
{
    if (!w)
        return npred_errorf(NPRED_ERR_ARG, "group_sparsity: weight pointer is NULL");
    if (out_ch < 1 || in_ch < 1 || kh < 1 || kw < 1)
        return npred_errorf(NPRED_ERR_SHAPE,
                            "group_sparsity: weight shape (%d, %d, %d, %d) must be positive",
                            out_ch, in_ch, kh, kw);
    size_t slices = (size_t)out_ch * in_ch, plane = (size_t)kh * kw;
    double acc = 0.0;
    for (size_t s = 0; s < slices; s++) {
        const float *ws = w + s * plane;
        double norm = sqrt(sum_squares(ws, plane));
        acc += norm;
        if (dw && norm > 0.0) {
            double g = scale / ((double)slices * norm);
            for (size_t e = 0; e < plane; e++)
                dw[s * plane + e] += (float)(g * ws[e]);
        }
    }
    if (value)
        *value = acc / (double)slices;
    return NPRED_OK;
}
