/* Inline float exp/expm1 for the ELU kernels (activation.c, crop.c: fast_expm1,
 * fast_exp) and the fused BatchNorm + AdaptiveELU kernels (batchnorm.c: elu_exp_fma,
 * elu_expm1_fma), without libm calls so that their loops vectorise. Internal to
 * src/kernels. */
#ifndef NPRED_KERNELS_FAST_EXP_H
#define NPRED_KERNELS_FAST_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp and expm1 in float without libm calls, so that the loops vectorise. x is split as
 * k ln2 + r with |r| <= ln2/2 (Cody-Waite, two-part ln2); expm1(r) is a degree-7 Taylor
 * polynomial (truncation < 3e-9 |r|); then exp(x) = 2^k (1 + p) and
 * expm1(x) = 2^k p + (2^k - 1), exact for k = 0, so tiny |x| keeps full relative accuracy.
 * Inputs are clamped to [-87, 88] (2^k stays a normal float); below -87 expm1 is -1 and
 * exp is under 1.7e-38 (returned as 0); NaN gives NaN. Used where exp/expm1 of x <= 0 is
 * needed (the ELU family); error against the double result: a few ulp. */
static inline float exp_split(float x, float *scale)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f,
                ln2_lo = 1.42860682030941723212e-6f, shifter = 0x1.8p23f;
    x = x > -87.0f ? x : -87.0f; /* NaN too; the callers pass NaN through */
    x = x < 88.0f ? x : 88.0f;
    float kf = (x * log2e + shifter) - shifter; /* round to nearest */
    float r = (x - kf * ln2_hi) - kf * ln2_lo;
    int32_t bits = ((int32_t)kf + 127) << 23;
    memcpy(scale, &bits, sizeof bits);
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    return r + r * r * p; /* expm1(r) */
}

/* below -87 the clamped value already gives -1 (2^-126 (1 + p) - 1 rounds to -1), so no
 * select is needed for it: the vectorised loops are shorter */
static inline float fast_expm1(float x)
{
    float s, p = exp_split(x, &s);
    float v = s * p + (s - 1.0f);
    return x == x ? v : x;
}

/* The fused ELU's exponential (batchnorm.c: training, recomputation and eval alike),
 * for t <= 0 only: the caller takes t's own branch wherever !(t <= 0), NaN included,
 * and the value here is then a number it does not use (no clamp from above, no NaN
 * handling). c = max(t, -87) by the unsigned minimum of the bits (a negative float's
 * bits grow with its magnitude); c = k ln2 + r with |r| <= ln2/2 (two-part ln2),
 * s = 2^k, and the returned q = e^r - 1 is r + r^2 P(r), P of degree 4 fitted to
 * (e^r - 1 - r) / r^2 for the least maximal error relative to e^r (3.8e-9 with these
 * float coefficients, a thirtieth of an ulp; exp_split's degree-7 Taylor polynomial
 * takes a multiply-add more). 2^k comes from the bits of ks = kf + shifter: the
 * shifter's low bits hold 127, so those of ks hold k + 127, which the shift by 23 puts
 * in the exponent field (the higher bits shift out): no integer add, no conversion.
 * Every multiply-add is fused (fmaf: one rounding each; the loops vectorise into FMA
 * instructions, which the build's -std=c11 never forms by itself). The callers form
 * e^t = fmaf(s, q, s) (one rounding: the ELU plus 1, AdaptiveELU's default) or
 * e^t - 1 = fmaf(s, q, s - 1) (any other yshift: small outputs keep their relative
 * accuracy); over every float in [-87, 0] they are within 1.009 and 0.952 ulp of the
 * exact values. */
static inline float elu_split(float t, float *s)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f,
                ln2_lo = 1.42860682030941723212e-6f, shifter = 0x1.8p23f + 127.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = bits < 0xC2AE0000u ? bits : 0xC2AE0000u; /* 0xC2AE0000: -87.0f */
    float c;
    memcpy(&c, &bits, sizeof c);
    const float ks = fmaf(c, log2e, shifter), kf = ks - shifter;
    const float r = fmaf(-kf, ln2_lo, fmaf(-kf, ln2_hi, c));
    memcpy(&bits, &ks, sizeof bits);
    bits <<= 23;
    memcpy(s, &bits, sizeof bits);
    const float p = fmaf(fmaf(fmaf(fmaf(0x1.6a2436p-10f, r, 0x1.1239d4p-7f), r, 0x1.5558f2p-5f), r, 0x1.555492p-3f),
                         r, 0x1.fffffcp-2f);
    return fmaf(r * r, p, r);
}

/* The ELU's branch plus 1, e^t, and the ELU's branch, e^t - 1, for t <= 0 (not NaN;
 * elu_split) */
static inline float elu_exp_fma(float t)
{
    float s, q = elu_split(t, &s);
    return fmaf(s, q, s);
}

static inline float elu_expm1_fma(float t)
{
    float s, q = elu_split(t, &s);
    return fmaf(s, q, s - 1.0f);
}

static inline float fast_exp(float x)
{
    float s, p = exp_split(x, &s);
    float v = s * p + s;
    return x < -87.0f ? 0.0f : (x == x ? v : x);
}

#endif
