/* Weight regularizers (Laplace family, Gaussian-masked Laplace, group sparsity)
 * and their gradients. See regularizers.h and docs/regularizers.md.
 *
 * The Laplace filter is applied to each (o, i) slice of W as a cross-correlation
 * with zero padding (every filter here is symmetric, so it equals PyTorch's
 * conv2d), from the filter's non-zero taps. Every sum is in double. The
 * value takes one pass over the slices; the gradient needs the final value
 * (normalised forms), so it filters each slice again, weights it and applies
 * the transposed filter. Scratch (two filtered slices and one gradient slice)
 * lives on the stack up to STACK_DOUBLES and is allocated above that. Serial:
 * the regularized weights are small. */
#include "kernels/regularizers.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define MAX_TAPS 49        /* 7 x 7 */
#define MAX_SIDE 4096      /* kernel side and padding limit (keeps int indices safe) */
#define STACK_DOUBLES 1024 /* scratch held on the stack (8 KiB) */

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

/* Geometry of one call: slice size, padding, filtered size and the non-zero
 * filter taps. */
typedef struct {
    int kh, kw, pad, ho, wo;
    int ntap;
    int tu[MAX_TAPS], tv[MAX_TAPS]; /* tap offsets (row, column) in the filter */
    double tl[MAX_TAPS];            /* tap values */
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
    if (out_ch < 1 || in_ch < 1 || kh < 1 || kw < 1 || kh > MAX_SIDE || kw > MAX_SIDE)
        return npred_errorf(NPRED_ERR_SHAPE,
                            "%s: weight shape (%d, %d, %d, %d) (expected positive, kernel sides <= %d)",
                            who, out_ch, in_ch, kh, kw, MAX_SIDE);
    if (padding < NPRED_REG_PAD_DEFAULT || padding > MAX_SIDE)
        return npred_errorf(NPRED_ERR_ARG, "%s: padding %d (expected 0..%d, or %d for the default)",
                            who, padding, MAX_SIDE, NPRED_REG_PAD_DEFAULT);
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
    return NPRED_OK;
}

/* Unnormalised Gaussian at grid cell (a, b) of an (h, w) grid centred on its
 * middle, in the reference's order of operations (gamma 1, theta 0). */
static double gauss_raw(int a, int b, int h, int w, double sigma)
{
    double x = a - (h - 1) / 2.0, y = b - (w - 1) / 2.0;
    double s2 = sigma * sigma;
    return exp(-0.5 * (x * x / s2 + y * y / s2));
}

/* Minimum and maximum of the raw Gaussian over the grid. */
static void gauss_bounds(double *lo, double *hi, int h, int w, double sigma)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++) {
            double r = gauss_raw(a, b, h, w, sigma);
            *lo = r < *lo ? r : *lo;
            *hi = r > *hi ? r : *hi;
        }
}

/* Normalised value at (a, b), rounded to float: "subtract the min, then divide
 * by the new max" is (raw - min) / (max - min). */
static float gauss_norm(int a, int b, int h, int w, double sigma, double lo, double hi)
{
    return (float)((gauss_raw(a, b, h, w, sigma) - lo) / (hi - lo));
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
    double lo, hi;
    gauss_bounds(&lo, &hi, h, w, sigma);
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++)
            mask[a * w + b] = gauss_norm(a, b, h, w, sigma, lo, hi);
    return NPRED_OK;
}

/* One slice filtered: out[p, q] = sum_taps L[u, v] * W[p + u - pad, q + v - pad]
 * (zero outside W). */
static void filter_slice(double *out,     // (ho, wo)
                         const float *ws, // (kh, kw)
                         const lap_plan *pl)
{
    for (int p = 0; p < pl->ho; p++)
        for (int q = 0; q < pl->wo; q++) {
            double acc = 0.0;
            for (int t = 0; t < pl->ntap; t++) {
                int y = p + pl->tu[t] - pl->pad, x = q + pl->tv[t] - pl->pad;
                if (y >= 0 && y < pl->kh && x >= 0 && x < pl->kw)
                    acc += pl->tl[t] * ws[y * pl->kw + x];
            }
            out[p * pl->wo + q] = acc;
        }
}

/* The transpose of filter_slice, overwriting g: g[y, x] = sum over the cells
 * (p, q) that W[y, x] feeds of L[u, v] * d[p, q]. */
static void filter_slice_t(double *g,       // (kh, kw)
                           const double *d, // (ho, wo)
                           const lap_plan *pl)
{
    for (int e = 0; e < pl->kh * pl->kw; e++)
        g[e] = 0.0;
    for (int p = 0; p < pl->ho; p++)
        for (int q = 0; q < pl->wo; q++) {
            double dv = d[p * pl->wo + q];
            if (dv == 0.0)
                continue;
            for (int t = 0; t < pl->ntap; t++) {
                int y = p + pl->tu[t] - pl->pad, x = q + pl->tv[t] - pl->pad;
                if (y >= 0 && y < pl->kh && x >= 0 && x < pl->kw)
                    g[y * pl->kw + x] += pl->tl[t] * dv;
            }
        }
}

typedef enum { K_L2, K_L2NORM, K_GAUSS, K_L1 } lap_kind;

/* The Laplace family on a ready plan. Numerator: sum over slices and filtered
 * cells of c[p, q] * filtered^2, where c = 1, or for K_GAUSS the sum of
 * (1 - G)^2 over the mask cells that broadcast onto (p, q). Denominator: sum W^2.
 *   K_L2:          value = num / cn / 2
 *   K_L1:          value = num / cn with |filtered| in place of filtered^2
 *   K_L2NORM/GAUSS value = (num / cn) / (den / cd)
 * with cn, cd the element counts under avg, else 1. The gradient is two more
 * passes: filter each slice again, weight it, and apply the transpose. */
static npred_status laplace_run(double *value, float *dw, const float *w, double scale,
                                const lap_plan *pl, size_t slices, lap_kind kind, bool avg,
                                double sigma)
{
    size_t cells = (size_t)pl->ho * pl->wo, plane = (size_t)pl->kh * pl->kw;
    size_t need = 2 * cells + plane;
    double stackbuf[STACK_DOUBLES];
    double *buf = need <= STACK_DOUBLES ? stackbuf : malloc(need * sizeof *buf);
    if (!buf)
        return npred_errorf(NPRED_ERR_NOMEM, "Laplace regularizer: %zu doubles of scratch", need);
    double *c = buf, *fs = buf + cells, *g = buf + 2 * cells;

    if (kind == K_GAUSS) {
        int rows = pl->ho == pl->kh, cols = pl->wo == pl->kw; /* else broadcast (size 1) */
        for (size_t k = 0; k < cells; k++)
            c[k] = 0.0;
        double lo, hi;
        gauss_bounds(&lo, &hi, pl->kh, pl->kw, sigma);
        for (int a = 0; a < pl->kh; a++)
            for (int b = 0; b < pl->kw; b++) {
                float m = 1.0f - gauss_norm(a, b, pl->kh, pl->kw, sigma, lo, hi);
                c[(rows ? a : 0) * pl->wo + (cols ? b : 0)] += (double)m * m;
            }
    } else {
        for (size_t k = 0; k < cells; k++)
            c[k] = 1.0;
    }

    double num = 0.0, den = 0.0;
    for (size_t s = 0; s < slices; s++) {
        filter_slice(fs, w + s * plane, pl);
        for (size_t k = 0; k < cells; k++)
            num += kind == K_L1 ? fabs(fs[k]) : c[k] * fs[k] * fs[k];
    }
    size_t n = slices * plane;
    if (kind == K_L2NORM || kind == K_GAUSS)
        for (size_t k = 0; k < n; k++)
            den += (double)w[k] * w[k];
    /* GaussianLaplaceL2's mean runs over the broadcast (slices, kh, kw) */
    double cn = avg ? (double)slices * (kind == K_GAUSS ? plane : cells) : 1.0;
    double cd = avg ? (double)n : 1.0;

    double v, gnum, gden;
    if (kind == K_L2) {
        v = num / cn / 2.0;
        gnum = scale / (2.0 * cn);
        gden = 0.0;
    } else if (kind == K_L1) {
        v = num / cn;
        gnum = scale / cn;
        gden = 0.0;
    } else {
        double dn = den / cd;
        v = (num / cn) / dn;
        gnum = scale / (cn * dn);
        gden = -scale * v / (dn * cd);
    }
    if (value)
        *value = v;
    if (dw) {
        for (size_t s = 0; s < slices; s++) {
            const float *ws = w + s * plane;
            filter_slice(fs, ws, pl);
            /* d|f|/df = sign(f) (0 at 0, as torch's abs) */
            for (size_t k = 0; k < cells; k++)
                fs[k] = kind == K_L1 ? 0.5 * ((fs[k] > 0.0) - (fs[k] < 0.0)) : fs[k] * c[k];
            filter_slice_t(g, fs, pl);
            for (size_t e = 0; e < plane; e++)
                dw[s * plane + e] += (float)(2.0 * gnum * g[e] + 2.0 * gden * ws[e]);
        }
    }
    if (buf != stackbuf)
        free(buf);
    return NPRED_OK;
}

/* A Laplace penalty of one kind over (out_ch * in_ch) kh x kw slices (no Gaussian mask). */
static npred_status laplace_plain(const char *name, lap_kind kind, double *value, float *dw, const float *w,
                                  double scale, int out_ch, int in_ch, int kh, int kw, int padding, int filter_size,
                                  bool avg)
{
    lap_plan pl;
    npred_status st = plan_init(&pl, name, w, out_ch, in_ch, kh, kw, padding, filter_size);
    if (st != NPRED_OK)
        return st;
    return laplace_run(value, dw, w, scale, &pl, (size_t)out_ch * in_ch, kind, avg, 0.0);
}

npred_status npred_reg_laplace_l2(double *value, float *dw, const float *w, double scale,
                                  int out_ch, int in_ch, int kh, int kw, int padding,
                                  int filter_size, bool avg)
{
    return laplace_plain("LaplaceL2", K_L2, value, dw, w, scale, out_ch, in_ch, kh, kw, padding, filter_size, avg);
}

npred_status npred_reg_laplace_l1(double *value, float *dw, const float *w, double scale,
                                  int out_ch, int in_ch, int kh, int kw, int padding, bool avg)
{
    return laplace_plain("LaplaceL1", K_L1, value, dw, w, scale, out_ch, in_ch, kh, kw, padding, 3, avg);
}

npred_status npred_reg_laplace_l2norm(double *value, float *dw, const float *w, double scale,
                                      int out_ch, int in_ch, int kh, int kw, int padding, bool avg)
{
    return laplace_plain("LaplaceL2norm", K_L2NORM, value, dw, w, scale, out_ch, in_ch, kh, kw, padding, 3, avg);
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
    if (!(sigma > 0))
        sigma = (kh < kw ? kh : kw) / 4.0;
    return laplace_run(value, dw, w, scale, &pl, (size_t)out_ch * in_ch, K_GAUSS, avg, sigma);
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
        double ss = 0.0;
        for (size_t e = 0; e < plane; e++)
            ss += (double)ws[e] * ws[e];
        double norm = sqrt(ss);
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
