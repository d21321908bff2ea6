/* BatchNorm2d forward/backward (see batchnorm.h). B, C, H, W as in the header;
 * one channel's values are B runs of HW = H*W contiguous floats, C*HW apart. */
#include "kernels/batchnorm.h"
#include "kernels/activation.h"
#include "kernels/batchnorm_sync.h"
#include "kernels/fast_exp.h"

#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static npred_status check_dims(const char *fn, int B, int C, int H, int W)
{
    if (B <= 0 || C <= 0 || H <= 0 || W <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, C, H, W) = (%d, %d, %d, %d) must be positive",
                            fn, B, C, H, W);
    return NPRED_OK;
}

/* Reductions run in NL independent double lanes (lane l takes the elements
 * i = l mod NL of each run of HW values; the lanes are then added in order), so
 * they vectorise without reassociation: the order is fixed by the code, not by
 * the instruction set or the thread count. The NL lanes are NG vectors of VW
 * doubles, side by side, so that the additions of one step do not wait for each
 * other (one vector of lanes was bound by the latency of its additions). */
#define VW 8
#define NG 4
#define NL (VW * NG)

/* the NL lanes added pairwise (lane l + w onto lane l for w = NL/2, ..., 1): a fixed
 * order whose additions do not wait for each other */
static double lanes_total(const double *acc)
{
    double t[NL];
    memcpy(t, acc, sizeof t);
    for (int w = NL / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) t[l] += t[l + w];
    return t[0];
}

/* VW doubles / floats as one vector (GCC vector extensions: a zmm of doubles with
 * AVX-512, two ymm halves otherwise); element l of vector g is lane VW g + l. The
 * 64-byte vectors never cross a function boundary (static inline), so GCC's note that
 * their ABI differs without AVX-512 does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef double vdl __attribute__((vector_size(VW * sizeof(double))));
typedef float vfl __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t vil __attribute__((vector_size(VW * sizeof(int32_t))));

static inline vfl vfl_load(const float *p)
{
    vfl v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* VW floats as doubles (exact). With AVX-512 one conversion instruction: GCC 12 makes
 * __builtin_convertvector of 8 floats two 4-wide conversions and a shuffle. */
static inline vdl vdl_cvt(const vfl *v) /* (by address: no vector parameter, whose ABI GCC notes at -O0) */
{
#ifdef __AVX512F__
    return (vdl)_mm512_cvtps_pd((__m256)*v);
#else
    return __builtin_convertvector(*v, vdl);
#endif
}

static inline vdl vdl_loadf(const float *p)
{
    const vfl v = vfl_load(p);
    return vdl_cvt(&v);
}

static inline vdl vdl_splat(double s)
{
    vdl v;
    for (int l = 0; l < VW; l++) v[l] = s;
    return v;
}

/* the NL lanes of acc[] as NG vectors and back (local vector accumulators: the
 * compiler keeps them in registers, where += on acc[] through a pointer went through
 * memory for every element) */
static inline void lanes_get(vdl *v, const double *acc) { memcpy(v, acc, NG * sizeof *v); }
static inline void lanes_put(double *acc, const vdl *v) { memcpy(acc, v, NG * sizeof *v); }

/* Sum of the m values of p and their sum of squared deviations from their own mean,
 * in double, in one pass: with k = p[0], the sums of d = x - k (exact in double) and of
 * d^2 give m2 = sum(d^2) - sum(d)^2 / m, which loses only the digits of (mean - k)^2
 * relative to the variance (k is one of the values, so a few at most; the old second
 * pass over the plane waited for the mean). */
static void run_stats(double *sum, double *m2, const float *p, size_t m)
{
    double s1[NL] = {0}, s2[NL] = {0};
    const double k = m ? p[0] : 0.0;
    const vdl kv = vdl_splat(k);
    vdl a[NG], c[NG];
    lanes_get(a, s1);
    lanes_get(c, s2);
    size_t i = 0;
    for (; i + NL <= m; i += NL)
        for (int g = 0; g < NG; g++) {
            const vdl d = vdl_loadf(p + i + VW * g) - kv;
            a[g] += d;
            c[g] += d * d;
        }
    lanes_put(s1, a);
    lanes_put(s2, c);
    for (int l = 0; i + l < m; l++) {
        const double d = (double)p[i + l] - k;
        s1[l] += d;
        s2[l] += d * d;
    }
    const double sd = lanes_total(s1), sdd = lanes_total(s2);
    *sum = sd + (double)m * k;
    const double v = sdd - sd * (sd / (double)m);
    *m2 = v > 0 ? v : 0.0; /* rounding can leave a tiny negative for a constant plane */
}

void npred_batchnorm2d_plane_stats(double *stats, const float *x, size_t planes, size_t HW)
{
    for (size_t j = 0; j < planes; j++) run_stats(&stats[2 * j], &stats[2 * j + 1], x + j * HW, HW);
}

/* A channel's moments, combined plane by plane in plane order (Chan et al.'s
 * pairwise update: stable whatever the mean, and the same bits wherever the
 * planes' statistics were computed). */
typedef struct {
    double n, mean, m2;
} moments;

static void moments_add(moments *a, double sum, double m2, double m)
{
    const double mb = sum / m;
    if (a->n == 0) {
        *a = (moments){m, mb, m2};
        return;
    }
    const double n = a->n + m, d = mb - a->mean;
    a->mean += d * (m / n);
    a->m2 += m2 + d * d * (a->n * m / n);
    a->n = n;
}

/* l0[lane] += e, l1[lane] += e * (x - mean) over m values (lane = index mod NL,
 * the tail into lanes 0, 1, ...) */
static void lanes_dsums(double *l0, double *l1, const float *e, const float *x, double mean, size_t m)
{
    vdl a[NG], c[NG];
    lanes_get(a, l0);
    lanes_get(c, l1);
    const vdl mv = vdl_splat(mean);
    size_t i = 0;
    for (; i + NL <= m; i += NL)
        for (int g = 0; g < NG; g++) {
            const vdl ev = vdl_loadf(e + i + VW * g);
            a[g] += ev;
            c[g] += ev * (vdl_loadf(x + i + VW * g) - mv);
        }
    lanes_put(l0, a);
    lanes_put(l1, c);
    for (int l = 0; i + l < m; l++) {
        l0[l] += e[i + l];
        l1[l] += (double)e[i + l] * ((double)x[i + l] - mean);
    }
}

/* sum(dy) and sum(dy * (x - mean)) of one channel, in double */
static void channel_dsums(double *sdy, double *sdyx, const float *dy, const float *x, double mean, int B, size_t HW,
                          size_t bstride)
{
    double a[NL] = {0}, c[NL] = {0};
    for (int b = 0; b < B; b++) lanes_dsums(a, c, dy + (size_t)b * bstride, x + (size_t)b * bstride, mean, HW);
    *sdy = lanes_total(a);
    *sdyx = lanes_total(c);
}

/* A channel's BatchNorm map in float, training and eval alike:
 *     bn(x) = fmaf(x - mh, a, b)
 * with mh = (float)mean, a = gamma * invstd rounded once from double and
 * b = beta - (mean - mh) a rounded once from double (in eval mode, where the mean is
 * the float running mean, mean - mh is 0 and b is beta). x - mh is exact where x is
 * near the mean, so a mean far larger than the spread costs no accuracy (the part of
 * the mean that mh leaves goes into b); the result is within a few float roundings of
 * the double (x - mean) * gamma * invstd + beta. One subtraction and an FMA per value,
 * where the double form converted, subtracted, multiplied, added and converted back 16
 * values at a time in two halves. */
typedef struct {
    float mh, a, b;
} bn_fmap;

static inline bn_fmap fmap_make(double mean, double invstd, const float *gamma, const float *beta, int c)
{
    bn_fmap f;
    f.mh = (float)mean;
    f.a = (float)((gamma ? (double)gamma[c] : 1.0) * invstd);
    f.b = (float)((beta ? (double)beta[c] : 0.0) - (mean - (double)f.mh) * (double)f.a);
    return f;
}

/* AdaptiveELU of bn(x), t = bn(x) - xshift: t + yshift where t > 0, else
 * e^t - 1 + yshift (fast_exp.h, elu_split), formed for every value and then selected
 * (cheaper than masked vector code). With yshift 1 (the default, and SENSORIUM's) that
 * is e^t = fmaf(s, q, s) in one rounding; any other yshift takes e^t - 1 =
 * fmaf(s, q, s - 1), then + yshift. np consecutive planes of m values, plane j with
 * the map f[j]. The constant flags only choose instructions
 * (t - 0 = t): the bits depend on the values of xshift and yshift alone. One loop
 * over all planes: the constants stay in registers from plane to plane (a call per
 * plane of 1,568 values cost an eighth of the time). */
static inline __attribute__((always_inline)) void elu_planes_k(float *y, const float *x, size_t np, size_t m,
                                                               const bn_fmap *f, float xshift, float yshift,
                                                               const int shifted, const int yshift_one)
{
    for (size_t j = 0; j < np; j++) {
        const bn_fmap fj = f[j];
        const float *p = x + j * m;
        float *q = y + j * m;
#pragma GCC unroll 2 /* two vectors side by side: their long exp chains overlap */
        for (size_t i = 0; i < m; i++) {
            float t = fmaf(p[i] - fj.mh, fj.a, fj.b);
            if (shifted) t -= xshift;
            if (yshift_one) q[i] = !(t <= 0) ? t + 1.0f : elu_exp_fma(t); /* NaN: t + 1 */
            else q[i] = (!(t <= 0) ? t : elu_expm1_fma(t)) + yshift;
        }
    }
}

/* BatchNorm of np consecutive planes of m values, plane j with the map f[j]; with act,
 * AdaptiveELU of that float value (elu_planes_k; the unfused BatchNorm then
 * AdaptiveELU differ from it in the ELU's last bits: fast_expm1). Vectorises
 * (fast_exp.h). */
static void bn_planes(float *y, const float *x, size_t np, size_t m, const bn_fmap *f, int act, float xshift,
                      float yshift)
{
    const int shifted = xshift != 0.0f, one = yshift == 1.0f;
    if (!act) {
        for (size_t j = 0; j < np; j++) {
            const bn_fmap fj = f[j];
            const float *p = x + j * m;
            float *q = y + j * m;
            for (size_t i = 0; i < m; i++) q[i] = fmaf(p[i] - fj.mh, fj.a, fj.b);
        }
    } else if (!shifted && one) {
        elu_planes_k(y, x, np, m, f, 0.0f, 1.0f, 0, 1);
    } else if (one) {
        elu_planes_k(y, x, np, m, f, xshift, 1.0f, 1, 1);
    } else if (!shifted) {
        elu_planes_k(y, x, np, m, f, 0.0f, yshift, 0, 0);
    } else {
        elu_planes_k(y, x, np, m, f, xshift, yshift, 1, 0);
    }
}

/* the maps of up to MAPS channels at a time (on the stack); the batched forward's
 * parallel steps take FCH channels of an image */
#define MAPS 64
#define FCH 16

static inline double eval_invstd(const float *running_var, int c, double eps)
{
    return 1.0 / sqrt((double)running_var[c] + eps);
}

void npred_batchnorm2d_eval_stats(double *save_mean, double *save_invstd, const float *running_mean,
                                  const float *running_var, int C, double eps)
{
    for (int c = 0; c < C; c++) {
        save_mean[c] = running_mean[c];
        save_invstd[c] = eval_invstd(running_var, c, eps);
    }
}

void npred_batchnorm2d_eval_image(float *y, const float *x, const float *running_mean, const float *running_var,
                                  const float *gamma, const float *beta, int C, size_t HW, double eps, int act,
                                  float xshift, float yshift)
{
    bn_fmap f[MAPS];
    for (int c0 = 0; c0 < C; c0 += MAPS) {
        const int n = C - c0 < MAPS ? C - c0 : MAPS;
        for (int c = c0; c < c0 + n; c++)
            f[c - c0] = fmap_make(running_mean[c], eval_invstd(running_var, c, eps), gamma, beta, c);
        bn_planes(y + (size_t)c0 * HW, x + (size_t)c0 * HW, (size_t)n, HW, f, act, xshift, yshift);
    }
}

void npred_batchnorm2d_elu_apply(float *y, const float *x, const npred_bn_elu_map *m, int images, int C, size_t HW)
{
    bn_fmap f[MAPS];
    for (int c0 = 0; c0 < C; c0 += MAPS) {
        const int n = C - c0 < MAPS ? C - c0 : MAPS;
        for (int c = c0; c < c0 + n; c++) f[c - c0] = fmap_make(m->mean[c], m->invstd[c], m->gamma, m->beta, c);
        for (int b = 0; b < images; b++) {
            const size_t o = ((size_t)b * C + c0) * HW;
            bn_planes(y + o, x + o, (size_t)n, HW, f, 1, m->xshift, m->yshift);
        }
    }
}

/* BatchNorm forward; with act, y = AdaptiveELU(bn(x)) computed from the same float
 * bn(x) value the unfused kernel writes. Statistics in double (training), the
 * normalisation by the float map (bn_planes) in training and eval. act < 0: the
 * statistics alone (y not written, may be NULL). */
static npred_status bn_forward(const char *fn, float *y, double *save_mean, double *save_invstd,
                               float *running_mean, float *running_var, int64_t *num_batches_tracked,
                               const float *x, const float *gamma, const float *beta, int B, int C, int H, int W,
                               int training, double momentum, double eps, int act, float xshift, float yshift,
                               const double *pstats)
{
    if (training && npred_batchnorm_sync_active()) { /* data-parallel: global batch statistics */
        npred_status st = npred_batchnorm2d_forward_sync(y, save_mean, save_invstd, running_mean, running_var,
                                                         num_batches_tracked, x, gamma, beta, B, C, H, W, momentum,
                                                         eps);
        if (st || !act) return st;
        npred_act a = {NPRED_ACT_ADAPTIVE_ELU, xshift, yshift}; /* ELU of the float bn(x), as unfused */
        return npred_act_forward(y, y, (size_t)B * C * H * W, &a);
    }
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if ((!y && act >= 0) || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: y, x, save_mean and save_invstd are required", fn);
    if ((running_mean == NULL) != (running_var == NULL))
        return npred_errorf(NPRED_ERR_ARG, "%s: give both running_mean and running_var or neither", fn);
    if (!training && !running_mean)
        return npred_errorf(NPRED_ERR_ARG, "%s: eval mode needs running_mean and running_var", fn);
    if (!(eps > 0) || !isfinite(eps))
        return npred_errorf(NPRED_ERR_ARG, "%s: eps must be a positive finite number, got %g", fn, eps);
    if (training && running_mean && !(momentum >= 0 && momentum <= 1))
        return npred_errorf(NPRED_ERR_ARG, "%s: momentum must be in [0, 1], got %g", fn, momentum);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    const size_t n = (size_t)B * HW;
    if (training && n < 2)
        return npred_errorf(NPRED_ERR_ARG,
                            "%s: training needs more than 1 value per channel, got input (%d, %d, %d, %d)",
                            fn, B, C, H, W);

#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
        double mean, invstd;
        if (training) {
            moments mo = {0, 0, 0};
            for (int b = 0; b < B; b++) {
                double ps, pm2;
                if (pstats) {
                    const double *q = pstats + 2 * ((size_t)b * C + c);
                    ps = q[0], pm2 = q[1];
                } else {
                    run_stats(&ps, &pm2, xc + (size_t)b * bstride, HW);
                }
                moments_add(&mo, ps, pm2, (double)HW);
            }
            mean = mo.mean;
            const double ssd = mo.m2;
            invstd = 1.0 / sqrt(ssd / (double)n + eps);
            if (running_mean) {
                double unbiased = ssd / (double)(n - 1);
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
        } else {
            mean = running_mean[c];
            invstd = eval_invstd(running_var, c, eps);
        }
        save_mean[c] = mean;
        save_invstd[c] = invstd;
    }
    if (training && num_batches_tracked) (*num_batches_tracked)++;
    if (act < 0) return NPRED_OK;
    /* the float map (training and eval) image by image, FCH channels at a time: each
     * thread streams a contiguous run of the tensor (a channel's planes, C HW apart,
     * were read and written a plane at a time) */
    const int nck = (C + FCH - 1) / FCH;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < (int64_t)B * nck; j++) {
        const int b = (int)(j / nck), c0 = (int)(j % nck) * FCH, nc = C - c0 < FCH ? C - c0 : FCH;
        bn_fmap f[FCH];
        for (int c = c0; c < c0 + nc; c++) f[c - c0] = fmap_make(save_mean[c], save_invstd[c], gamma, beta, c);
        const size_t o = (size_t)b * bstride + (size_t)c0 * HW;
        bn_planes(y + o, x + o, (size_t)nc, HW, f, act, xshift, yshift);
    }
    return NPRED_OK;
}

npred_status npred_batchnorm2d_forward(float *y, double *save_mean, double *save_invstd, float *running_mean,
                                       float *running_var, int64_t *num_batches_tracked, const float *x,
                                       const float *gamma, const float *beta, int B, int C, int H, int W,
                                       int training, double momentum, double eps)
{
    return bn_forward("npred_batchnorm2d_forward", y, save_mean, save_invstd, running_mean, running_var,
                      num_batches_tracked, x, gamma, beta, B, C, H, W, training, momentum, eps, 0, 0.0f, 0.0f, NULL);
}

npred_status npred_batchnorm2d_elu_forward(float *y, double *save_mean, double *save_invstd, float *running_mean,
                                           float *running_var, int64_t *num_batches_tracked, const float *x,
                                           const float *gamma, const float *beta, int B, int C, int H, int W,
                                           int training, double momentum, double eps, float xshift, float yshift)
{
    return bn_forward("npred_batchnorm2d_elu_forward", y, save_mean, save_invstd, running_mean, running_var,
                      num_batches_tracked, x, gamma, beta, B, C, H, W, training, momentum, eps, 1, xshift, yshift, NULL);
}

npred_status npred_batchnorm2d_elu_forward_planes(float *y, double *save_mean, double *save_invstd,
                                                  float *running_mean, float *running_var,
                                                  int64_t *num_batches_tracked, const float *x, const double *pstats,
                                                  const float *gamma, const float *beta, int B, int C, int H, int W,
                                                  double momentum, double eps, float xshift, float yshift)
{
    const char *fn = "npred_batchnorm2d_elu_forward_planes";
    if (!pstats) return npred_errorf(NPRED_ERR_ARG, "%s: the planes' statistics are required", fn);
    return bn_forward(fn, y, save_mean, save_invstd, running_mean, running_var, num_batches_tracked, x, gamma, beta,
                      B, C, H, W, 1, momentum, eps, 1, xshift, yshift, pstats);
}

npred_status npred_batchnorm2d_stats(double *save_mean, double *save_invstd, float *running_mean, float *running_var,
                                     int64_t *num_batches_tracked, const float *x, const double *pstats, int B, int C,
                                     int H, int W, int training, double momentum, double eps)
{
    const char *fn = "npred_batchnorm2d_stats";
    if (training && npred_batchnorm_sync_active())
        return npred_errorf(NPRED_ERR_ARG, "%s: not with synchronised statistics", fn);
    return bn_forward(fn, NULL, save_mean, save_invstd, running_mean, running_var, num_batches_tracked, x, NULL, NULL,
                      B, C, H, W, training, momentum, eps, -1, 0.0f, 0.0f, training ? pstats : NULL);
}

npred_status npred_batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                        const float *x, const float *gamma, const double *save_mean,
                                        const double *save_invstd, int B, int C, int H, int W,
                                        int training)
{
    if (training && npred_batchnorm_sync_active())
        return npred_batchnorm2d_backward_sync(dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, B, C, H, W);
    const char *fn = "npred_batchnorm2d_backward";
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if (!dy || !x || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: dy, x, save_mean and save_invstd are required", fn);
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW;
    const size_t n = (size_t)B * HW;

#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * HW;
        const double mean = save_mean[c], invstd = save_invstd[c];
        const double g = gamma ? gamma[c] : 1.0;
        /* sum(dy) and sum(dy * (x - mean)) over the channel */
        double sdy = 0, sdyx = 0;
        if (training || dgamma || dbeta) channel_dsums(&sdy, &sdyx, dy + off, x + off, mean, B, HW, bstride);
        if (dgamma) dgamma[c] += (float)(sdyx * invstd);
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        const double a = g * invstd;
        if (training) {
            /* dx = a * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) */
            const double mdy = sdy / (double)n;
            const double k = invstd * invstd * sdyx / (double)n;
            for (int b = 0; b < B; b++) {
                const float *pd = dy + off + (size_t)b * bstride;
                const float *px = x + off + (size_t)b * bstride;
                float *q = dx + off + (size_t)b * bstride;
                for (size_t i = 0; i < HW; i++)
                    q[i] += (float)(a * ((double)pd[i] - mdy - ((double)px[i] - mean) * k));
            }
        } else {
            for (int b = 0; b < B; b++) {
                const float *pd = dy + off + (size_t)b * bstride;
                float *q = dx + off + (size_t)b * bstride;
                for (size_t i = 0; i < HW; i++) q[i] += (float)(a * pd[i]);
            }
        }
    }
    return NPRED_OK;
}


/* g = dL/d(bn output) from the gradient dy of the AdaptiveELU output y: the ELU's
 * slope is 1 where its input t > 0 (there y - yshift > 0) and exp(t) =
 * (y - yshift) + 1 elsewhere */
static inline float elu_grad(float dy, float y, float yshift)
{
    float e = y - yshift;
    return dy * (e > 0 ? 1.0f : e + 1.0f); /* a select, not a branch: the loops vectorise */
}

/* lanes_dsums of the ELU-backward gradients elu_grad(dy, y) of one run of m values,
 * formed in registers (the same values and order as elu_grad then lanes_dsums); with
 * out, the gradients are also written there (out may be dy) */
static void elu_lanes_dsums(double *l0, double *l1, const float *dy, const float *y, const float *x, double mean,
                            float yshift, size_t m, float *out)
{
    vdl a[NG], c[NG];
    lanes_get(a, l0);
    lanes_get(c, l1);
    const vdl mv = vdl_splat(mean);
    vfl ys, one;
    for (int l = 0; l < VW; l++) ys[l] = yshift, one[l] = 1.0f;
    size_t i = 0;
    for (; i + NL <= m; i += NL)
        for (int g = 0; g < NG; g++) {
            const size_t k = i + VW * g;
            const vfl e = vfl_load(y + k) - ys;
            const vil pos = e > 0;                                               /* all ones where e > 0 */
            const vfl slope = (vfl)((pos & (vil)one) | (~pos & (vil)(e + one))); /* select, as elu_grad */
            const vfl gr = vfl_load(dy + k) * slope;
            if (out) memcpy(out + k, &gr, sizeof gr);
            const vdl gv = vdl_cvt(&gr);
            a[g] += gv;
            c[g] += gv * (vdl_loadf(x + k) - mv);
        }
    lanes_put(l0, a);
    lanes_put(l1, c);
    for (int l = 0; i + l < m; l++) {
        const float g = elu_grad(dy[i + l], y[i + l], yshift);
        if (out) out[i + l] = g;
        l0[l] += g;
        l1[l] += (double)g * ((double)x[i + l] - mean);
    }
}

/* dx (one plane of m values) += a * (e - mdy - (x - mean) * k) in training, a * e in
 * eval, e the ELU-backward gradient elu_grad(dy, y); with store, dx is written (as if
 * it were zero). py NULL: pd is e itself (formed by the caller; dx may then be pd).
 * Training in float: dx = fmaf((x - mh) - ml, -a k, fmaf(e, a, -a mdy)), the
 * coefficients rounded once from double and x - mean formed from the mean split into
 * two floats (mh = (float)mean and ml the rest: x - mh is exact near the mean); within a
 * few float roundings of the double expression. Eval in double. */
static void elu_bwd_run(float *q, const float *pd, const float *px, const float *py, size_t m, const double *cf,
                        int training, float yshift, int store)
{
    const double a = cf[0];
    if (!training) {
        for (size_t i = 0; i < m; i++) {
            const float e = py ? elu_grad(pd[i], py[i], yshift) : pd[i];
            q[i] = (store ? 0.0f : q[i]) + (float)(a * e); /* 0 + as onto zeros */
        }
        return;
    }
    const float af = (float)a, df = (float)(-a * cf[1]), kf = (float)(-a * cf[2]), mh = (float)cf[3],
                ml = (float)(cf[3] - (double)mh);
    if (!py) {
        if (store)
            for (size_t i = 0; i < m; i++) q[i] = 0.0f + fmaf((px[i] - mh) - ml, kf, fmaf(pd[i], af, df));
        else
            for (size_t i = 0; i < m; i++) q[i] += fmaf((px[i] - mh) - ml, kf, fmaf(pd[i], af, df));
    } else if (store) {
        for (size_t i = 0; i < m; i++)
            q[i] = 0.0f + fmaf((px[i] - mh) - ml, kf, fmaf(elu_grad(pd[i], py[i], yshift), af, df));
    } else {
        for (size_t i = 0; i < m; i++)
            q[i] += fmaf((px[i] - mh) - ml, kf, fmaf(elu_grad(pd[i], py[i], yshift), af, df));
    }
}

/* The two sums of one plane (m values) of the fused backward, sum(e) and
 * sum(e * (x - mean)), e = elu_grad(dy, y) (y NULL: dy is e): NL double lanes,
 * then added in lane order. A channel's sums are its planes' sums added in image
 * order (sums_coef), wherever and by whichever thread the planes' sums were made. */
static void plane_dsums(double *s, const float *dy, const float *y, const float *x, double mean, float yshift,
                        size_t m)
{
    double l0[NL] = {0}, l1[NL] = {0};
    if (y) elu_lanes_dsums(l0, l1, dy, y, x, mean, yshift, m, NULL);
    else lanes_dsums(l0, l1, dy, x, mean, m);
    s[0] = lanes_total(l0);
    s[1] = lanes_total(l1);
}

/* d = elu_grad(d, y) in place over m values and the plane's two sums of e = the new d
 * (the values of npred_elu_grad_inplace and the sums of plane_dsums, in one pass) */
static void plane_grad_dsums(double *s, float *d, const float *y, const float *x, double mean, float yshift,
                             size_t m)
{
    double l0[NL] = {0}, l1[NL] = {0};
    elu_lanes_dsums(l0, l1, d, y, x, mean, yshift, m, d);
    s[0] = lanes_total(l0);
    s[1] = lanes_total(l1);
}

/* dgamma/dbeta and coef[4c..4c+3] of channel c from its sums */
static void sums_coef(double *cf, float *dgamma, float *dbeta, double sdy, double sdyx, const float *gamma,
                      double mean, double invstd, size_t n, int c, int training)
{
    if (dgamma) dgamma[c] += (float)(sdyx * invstd);
    if (dbeta) dbeta[c] += (float)sdy;
    cf[0] = (gamma ? gamma[c] : 1.0) * invstd;
    cf[1] = training ? sdy / (double)n : 0;
    cf[2] = training ? invstd * invstd * sdyx / (double)n : 0;
    cf[3] = mean;
}

/* the per-channel reductions of the fused backward: dgamma/dbeta and coef[4c..4c+3]
 * from the planes' sums in image order; y NULL: dy is the ELU-backward gradient e already */
static void elu_bwd_channel(double *cf, float *dgamma, float *dbeta, const float *dy, const float *x, const float *y,
                            const float *gamma, double mean, double invstd, int B, size_t HW, size_t bstride,
                            size_t n, int c, int training, float yshift)
{
    double sdy = 0, sdyx = 0;
    if (training || dgamma || dbeta)
        for (int b = 0; b < B; b++) {
            const size_t o = (size_t)b * bstride;
            double s[2];
            plane_dsums(s, dy + o, y ? y + o : NULL, x + o, mean, yshift, HW);
            sdy += s[0];
            sdyx += s[1];
        }
    sums_coef(cf, dgamma, dbeta, sdy, sdyx, gamma, mean, invstd, n, c, training);
}

static npred_status elu_bwd_check(const char *fn, const float *dy, const float *x, const float *y,
                                  const double *save_mean, const double *save_invstd, int B, int C, int H, int W,
                                  int need_y)
{
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if (!dy || !x || (!y && need_y) || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: dy, x, %ssave_mean and save_invstd are required", fn,
                            need_y ? "y, " : "");
    return NPRED_OK;
}

/* elu_bwd_channel for every channel (OpenMP over channels) */
static void elu_bwd_coefs(double *coef, float *dgamma, float *dbeta, const float *dy, const float *x, const float *y,
                          const float *gamma, const double *save_mean, const double *save_invstd, int B, int C, int H,
                          int W, int training, float yshift)
{
    const size_t HW = (size_t)H * W, bstride = (size_t)C * HW, n = (size_t)B * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * HW;
        elu_bwd_channel(coef + 4 * (size_t)c, dgamma, dbeta, dy + off, x + off, y ? y + off : NULL, gamma,
                        save_mean[c], save_invstd[c], B, HW, bstride, n, c, training, yshift);
    }
}

npred_status npred_batchnorm2d_elu_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                            const float *x, const float *y, const float *gamma,
                                            const double *save_mean, const double *save_invstd, int B, int C,
                                            int H, int W, int training, float yshift)
{
    const char *fn = "npred_batchnorm2d_elu_backward";
    npred_status s = elu_bwd_check(fn, dy, x, y, save_mean, save_invstd, B, C, H, W, 1);
    if (s) return s;
    if (training && npred_batchnorm_sync_active()) {
        /* data-parallel: ELU backward here, the global-statistics BN backward there
         * (a scratch buffer only on this path: the sync BN needs dL/dbn(x) as an array) */
        size_t total = (size_t)B * C * H * W;
        float *e = malloc(total * sizeof *e);
        if (!e) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fn);
        for (size_t i = 0; i < total; i++) e[i] = elu_grad(dy[i], y[i], yshift);
        s = npred_batchnorm2d_backward_sync(dx, dgamma, dbeta, e, x, gamma, save_mean, save_invstd, B, C, H, W);
        free(e);
        return s;
    }
    double *coef = malloc(4 * (size_t)C * sizeof *coef);
    if (!coef) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fn);
    elu_bwd_coefs(coef, dgamma, dbeta, dy, x, y, gamma, save_mean, save_invstd, B, C, H, W, training, yshift);
    if (dx) {
        const size_t HW = (size_t)H * W;
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < (size_t)B * C; j++) /* plane j = (b, c) */
            elu_bwd_run(dx + j * HW, dy + j * HW, x + j * HW, y + j * HW, HW, coef + 4 * (j % (size_t)C), training,
                        yshift, 0);
    }
    free(coef);
    return NPRED_OK;
}

static npred_status elu_coef(const char *fn, double *coef, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *y, const float *gamma, const double *save_mean,
                             const double *save_invstd, int B, int C, int H, int W, int training, float yshift)
{
    npred_status s = elu_bwd_check(fn, dy, x, y, save_mean, save_invstd, B, C, H, W, 0); /* y: the callers' */
    if (s) return s;
    if (!coef) return npred_errorf(NPRED_ERR_ARG, "%s: coef is required", fn);
    if (training && npred_batchnorm_sync_active())
        return npred_errorf(NPRED_ERR_ARG, "%s: not with synchronised statistics (use npred_batchnorm2d_elu_backward)",
                            fn);
    elu_bwd_coefs(coef, dgamma, dbeta, dy, x, y, gamma, save_mean, save_invstd, B, C, H, W, training, yshift);
    return NPRED_OK;
}

npred_status npred_batchnorm2d_elu_backward_coef(double *coef, float *dgamma, float *dbeta, const float *dy,
                                                 const float *x, const float *y, const float *gamma,
                                                 const double *save_mean, const double *save_invstd, int B, int C,
                                                 int H, int W, int training, float yshift)
{
    const char *fn = "npred_batchnorm2d_elu_backward_coef";
    if (!y) return npred_errorf(NPRED_ERR_ARG, "%s: dy, x, y, save_mean and save_invstd are required", fn);
    return elu_coef(fn, coef, dgamma, dbeta, dy, x, y, gamma, save_mean, save_invstd, B, C, H, W, training, yshift);
}

npred_status npred_batchnorm2d_elu_backward_coef_e(double *coef, float *dgamma, float *dbeta, const float *e,
                                                   const float *x, const float *gamma, const double *save_mean,
                                                   const double *save_invstd, int B, int C, int H, int W, int training)
{
    return elu_coef("npred_batchnorm2d_elu_backward_coef_e", coef, dgamma, dbeta, e, x, NULL, gamma, save_mean,
                    save_invstd, B, C, H, W, training, 0.0f);
}

void npred_batchnorm2d_elu_backward_image(float *dx, const float *dy, const float *x, const float *y,
                                          const double *coef, int C, size_t HW, int training, float yshift)
{
    for (int c = 0; c < C; c++) {
        const size_t o = (size_t)c * HW;
        elu_bwd_run(dx + o, dy + o, x + o, y ? y + o : NULL, HW, coef + 4 * (size_t)c, training, yshift, 1);
    }
}

void npred_elu_grad_inplace(float *d, const float *y, size_t n, float yshift)
{
    for (size_t i = 0; i < n; i++) d[i] = elu_grad(d[i], y[i], yshift);
}

/* the recomputed ELU output is formed in chunks of ECHUNK values (8 KiB: in L1; a
 * 28 x 56 plane in one) */
#define ECHUNK 2048

void npred_batchnorm2d_elu_grad_sums_image_map(double *sums, float *d, const float *x, const npred_bn_elu_map *m,
                                               int C, size_t HW)
{
    float yc[ECHUNK]; /* a multiple of NL: each chunk's values keep their lanes */
    for (int c = 0; c < C; c++) {
        double l0[NL] = {0}, l1[NL] = {0};
        const size_t o = (size_t)c * HW;
        const bn_fmap f = fmap_make(m->mean[c], m->invstd[c], m->gamma, m->beta, c);
        for (size_t i0 = 0; i0 < HW; i0 += ECHUNK) {
            size_t len = HW - i0 < ECHUNK ? HW - i0 : ECHUNK;
            bn_planes(yc, x + o + i0, 1, len, &f, 1, m->xshift, m->yshift);
            elu_lanes_dsums(l0, l1, d + o + i0, yc, x + o + i0, m->mean[c], m->yshift, len, d + o + i0);
        }
        sums[2 * (size_t)c] = lanes_total(l0);
        sums[2 * (size_t)c + 1] = lanes_total(l1);
    }
}

void npred_batchnorm2d_elu_backward_plane_sums(double *sums, const float *dy, const float *x, const float *y,
                                               const double *mean, int C, size_t HW, float yshift)
{
    for (int c = 0; c < C; c++) {
        const size_t o = (size_t)c * HW;
        plane_dsums(sums + 2 * (size_t)c, dy + o, y ? y + o : NULL, x + o, mean[c], yshift, HW);
    }
}

void npred_batchnorm2d_elu_grad_sums_image(double *sums, float *d, const float *y, const float *x,
                                           const double *mean, int C, size_t HW, float yshift)
{
    for (int c = 0; c < C; c++) {
        const size_t o = (size_t)c * HW;
        plane_grad_dsums(sums + 2 * (size_t)c, d + o, y + o, x + o, mean[c], yshift, HW);
    }
}

npred_status npred_batchnorm2d_elu_backward_coef_sums(double *coef, float *dgamma, float *dbeta, const double *psums,
                                                      const float *gamma, const double *save_mean,
                                                      const double *save_invstd, int B, int C, int H, int W,
                                                      int training)
{
    const char *fn = "npred_batchnorm2d_elu_backward_coef_sums";
    npred_status s = check_dims(fn, B, C, H, W);
    if (s) return s;
    if (!coef || !psums || !save_mean || !save_invstd)
        return npred_errorf(NPRED_ERR_ARG, "%s: coef, psums, save_mean and save_invstd are required", fn);
    if (training && npred_batchnorm_sync_active())
        return npred_errorf(NPRED_ERR_ARG, "%s: not with synchronised statistics", fn);
    const size_t n = (size_t)B * H * W;
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (int b = 0; b < B; b++) {
            const double *q = psums + 2 * ((size_t)b * C + c);
            sdy += q[0];
            sdyx += q[1];
        }
        sums_coef(coef + 4 * (size_t)c, dgamma, dbeta, sdy, sdyx, gamma, save_mean[c], save_invstd[c], n, c,
                  training);
    }
    return NPRED_OK;
}
