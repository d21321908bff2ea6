/* Inline float exp/expm1 for the ELU kernels (activation.c: fast_expm1, fast_exp) and
 * the fused BatchNorm + AdaptiveELU kernels (batchnorm.c: fast_expm1_fma), without
 * libm calls so that their loops vectorise. Internal to src/kernels. */
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

/* expm1 with every multiply-add fused (fmaf: one rounding each; the loops vectorise into
 * FMA instructions, which the build's -std=c11 never forms by itself): the same split and
 * polynomial as fast_expm1, about a third faster in the vectorised ELU, other last bits
 * (< 0.9 ulp from the double expm1 over every float <= 0, checked exhaustively). Used by
 * the fused BatchNorm + ELU (training and eval, batchnorm.c); the unfused ELU kernels
 * (activation.c) keep fast_expm1's bits. */
static inline float expm1_fma_core(float c) /* c in [-87, 88], not NaN */
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f,
                ln2_lo = 1.42860682030941723212e-6f, shifter = 0x1.8p23f;
    float kf = fmaf(c, log2e, shifter) - shifter;
    float r = fmaf(-kf, ln2_lo, fmaf(-kf, ln2_hi, c)), s;
    int32_t bits = ((int32_t)kf + 127) << 23;
    memcpy(&s, &bits, sizeof bits);
    float p = fmaf(fmaf(fmaf(fmaf(fmaf(1.0f / 5040, r, 1.0f / 720), r, 1.0f / 120), r, 1.0f / 24), r, 1.0f / 6), r,
                   0.5f);
    return fmaf(s, fmaf(r * r, p, r), s - 1.0f);
}

static inline float fast_expm1_fma(float x)
{
    float c = x > -87.0f ? x : -87.0f; /* NaN too: passed through at the end */
    c = c < 88.0f ? c : 88.0f;
    float v = expm1_fma_core(c);
    return x == x ? v : x;
}

/* The ELU's branch for t <= 0: fast_expm1_fma(t) there (the same bits), and for t > 0
 * some finite value that the ELU does not use; NaN gives NaN. The polynomial is fed
 * -|t|, which needs no clamp from above, and the clamp from below lets NaN through
 * (max(-87, c) keeps a NaN c), so 2^k is made from the bits of kf + shifter (its low
 * bits hold k) instead of converting kf to an integer: no select for NaN, no
 * conversion, three operations fewer in the vectorised loops. */
static inline float elu_expm1_fma(float t)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f,
                ln2_lo = 1.42860682030941723212e-6f, shifter = 0x1.8p23f;
    float c = -fabsf(t);
    c = c < -87.0f ? -87.0f : c; /* NaN stays NaN */
    const float ks = fmaf(c, log2e, shifter), kf = ks - shifter;
    float r = fmaf(-kf, ln2_lo, fmaf(-kf, ln2_hi, c)), s;
    uint32_t bits;
    memcpy(&bits, &ks, sizeof bits);
    bits = (bits + 127u) << 23; /* (k + 127) << 23: the bits above 8 of ks's integer part shift out */
    memcpy(&s, &bits, sizeof bits);
    float p = fmaf(fmaf(fmaf(fmaf(fmaf(1.0f / 5040, r, 1.0f / 720), r, 1.0f / 120), r, 1.0f / 24), r, 1.0f / 6), r,
                   0.5f);
    return fmaf(s, fmaf(r * r, p, r), s - 1.0f);
}

static inline float fast_exp(float x)
{
    float s, p = exp_split(x, &s);
    float v = s * p + s;
    return x < -87.0f ? 0.0f : (x == x ? v : x);
}

#endif
