/* Standard normals in bulk with the bits of npred_rng_normal (normals.h). */
#include "readouts/normals.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/rng.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#include <immintrin.h>
#define NRM_VECTOR 1
#endif

void npred_normals_draw(npred_normals *d, size_t count, npred_rng *rng, float *z)
{
    d->count = count;
    d->first = 0;
    d->slow = 0;
    d->spare = 0.0;
    if (count && rng->has_spare) {
        rng->has_spare = 0;
        z[0] = (float)rng->spare;
        d->first = 1;
    }
    d->pairs = (count - d->first + 1) / 2;
    /* npred_rng_normal: u1 = uniform() again while it is 0, then u2 = uniform();
     * uniform() = (u64 >> 11) * 2^-53 */
    uint64_t s[4];
    memcpy(s, rng->s, sizeof s);
    for (size_t k = 0; k < d->pairs; k++) {
        uint64_t a;
        do a = npred_rng_next(s); while (!(a >> 11));
        d->u1[k] = a;
        d->u2[k] = npred_rng_next(s);
    }
    memcpy(rng->s, s, sizeof s);
}

/* pair k by the generator's own operations (npred_rng_normal) */
static void pair_exact(const npred_normals *d, size_t k, double *cs, double *sn)
{
    const double u1 = (double)(d->u1[k] >> 11) * 0x1.0p-53, u2 = (double)(d->u2[k] >> 11) * 0x1.0p-53;
    const double rad = sqrt(-2.0 * log(u1));
    const double th = 2.0 * M_PI * u2;
    *sn = rad * sin(th);
    *cs = rad * cos(th);
}

static void store_pair(const npred_normals *d, size_t k, float *z, float cs, float sn)
{
    const size_t i = d->first + 2 * k;
    z[i] = cs;
    if (i + 1 < d->count) z[i + 1] = sn;
}

#ifdef NRM_VECTOR
/* the half-width of the accepted interval, relative: far above the error of the
 * polynomials (< 2^-45) plus the C library's (< 2^-51) */
#define NRM_EPS 0x1p-36

/* (double)(x >> 11) * 2^-53, as uniform() */
static inline __m512d nrm_uniform(const uint64_t *p)
{
    __m512i x = _mm512_srli_epi64(_mm512_loadu_si512((const void *)p), 11);
    return _mm512_mul_pd(_mm512_cvtepu64_pd(x), _mm512_set1_pd(0x1.0p-53));
}

/* ln x for normal positive x: x = m 2^e with m in [sqrt(1/2), sqrt(2)],
 * ln m = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1) / (m + 1), |s| < 0.172
 * (the terms up to s^21: the rest is below 1e-17 relative) */
static inline __m512d nrm_log(__m512d x)
{
    __m512i bits = _mm512_castpd_si512(x);
    __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(1023));
    __m512d m = _mm512_castsi512_pd(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi64(0x000FFFFFFFFFFFFFLL)),
                                                    _mm512_set1_epi64(0x3FF0000000000000LL)));
    __mmask8 big = _mm512_cmp_pd_mask(m, _mm512_set1_pd(M_SQRT2), _CMP_GT_OQ);
    m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
    e = _mm512_mask_add_epi64(e, big, e, _mm512_set1_epi64(1));
    const __m512d one = _mm512_set1_pd(1.0);
    __m512d s = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    __m512d s2 = _mm512_mul_pd(s, s);
    __m512d p = _mm512_set1_pd(1.0 / 21.0);
    for (int k = 9; k >= 0; k--) p = _mm512_fmadd_pd(p, s2, _mm512_set1_pd(1.0 / (2 * k + 1)));
    __m512d lm = _mm512_mul_pd(_mm512_add_pd(s, s), p);
    return _mm512_fmadd_pd(_mm512_cvtepi64_pd(e), _mm512_set1_pd(M_LN2), lm);
}

/* Taylor coefficients (-1)^k / (2k+1)! and (-1)^k / (2k)!, k = 1..8: for |r| <= pi/4
 * the omitted terms are below 1e-17 relative */
static const double nrm_sin_c[8] = {-1.0 / 6,          1.0 / 120,          -1.0 / 5040,          1.0 / 362880,
                                    -1.0 / 39916800.0, 1.0 / 6227020800.0, -1.0 / 1307674368000.0,
                                    1.0 / 355687428096000.0};
static const double nrm_cos_c[8] = {-1.0 / 2,         1.0 / 24,          -1.0 / 720,          1.0 / 40320,
                                    -1.0 / 3628800.0, 1.0 / 479001600.0, -1.0 / 87178291200.0,
                                    1.0 / 20922789888000.0};

/* eight pairs from k: 1 in the mask for the lanes whose floats are sure */
static inline __mmask8 nrm_block(const npred_normals *d, size_t k, float cz[8], float sz[8])
{
    const __m512d u1 = nrm_uniform(d->u1 + k), u2 = nrm_uniform(d->u2 + k);
    const __m512d rad = _mm512_sqrt_pd(_mm512_mul_pd(_mm512_set1_pd(-2.0), nrm_log(u1)));
    const __m512d th = _mm512_mul_pd(_mm512_set1_pd(2.0 * M_PI), u2); /* the exact path's th */
    /* th = q pi/2 + r, |r| <= pi/4: pi/2 in two parts (the first has 33 bits, so q times it is exact) */
    const __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(th, _mm512_set1_pd(M_2_PI)), _MM_FROUND_TO_NEAREST_INT);
    __m512d r = _mm512_fnmadd_pd(q, _mm512_set1_pd(1.57079632673412561417e+00), th);
    r = _mm512_fnmadd_pd(q, _mm512_set1_pd(6.07710050650619224932e-11), r);
    /* near a multiple of pi/2 the reduction's absolute error would matter: exact path */
    __mmask8 ok = _mm512_cmp_pd_mask(_mm512_abs_pd(r), _mm512_set1_pd(1e-6), _CMP_GE_OQ);
    const __m512d r2 = _mm512_mul_pd(r, r);
    __m512d ps = _mm512_set1_pd(nrm_sin_c[7]), pc = _mm512_set1_pd(nrm_cos_c[7]);
    for (int i = 6; i >= 0; i--) {
        ps = _mm512_fmadd_pd(ps, r2, _mm512_set1_pd(nrm_sin_c[i]));
        pc = _mm512_fmadd_pd(pc, r2, _mm512_set1_pd(nrm_cos_c[i]));
    }
    const __m512d sr = _mm512_fmadd_pd(_mm512_mul_pd(r, r2), ps, r);
    const __m512d cr = _mm512_fmadd_pd(r2, pc, _mm512_set1_pd(1.0));
    /* quadrant n = q mod 4: sin th = (s, c, -s, -c)[n], cos th = (c, -s, -c, s)[n] */
    const __m512i n = _mm512_cvtpd_epi64(q);
    const __mmask8 swap = _mm512_test_epi64_mask(n, _mm512_set1_epi64(1));
    const __m512d sth0 = _mm512_mask_blend_pd(swap, sr, cr), cth0 = _mm512_mask_blend_pd(swap, cr, sr);
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ULL);
    const __mmask8 sneg = _mm512_test_epi64_mask(n, _mm512_set1_epi64(2));
    const __mmask8 cneg = _mm512_test_epi64_mask(_mm512_add_epi64(n, _mm512_set1_epi64(1)), _mm512_set1_epi64(2));
    const __m512d sth = _mm512_castsi512_pd(_mm512_mask_xor_epi64(_mm512_castpd_si512(sth0), sneg,
                                                                  _mm512_castpd_si512(sth0), sign));
    const __m512d cth = _mm512_castsi512_pd(_mm512_mask_xor_epi64(_mm512_castpd_si512(cth0), cneg,
                                                                  _mm512_castpd_si512(cth0), sign));
    const __m512d v[2] = {_mm512_mul_pd(rad, cth), _mm512_mul_pd(rad, sth)};
    float *out[2] = {cz, sz};
    for (int j = 0; j < 2; j++) {
        const __m512d w = _mm512_mul_pd(_mm512_abs_pd(v[j]), _mm512_set1_pd(NRM_EPS));
        const __m256 lo = _mm512_cvtpd_ps(_mm512_sub_pd(v[j], w)), hi = _mm512_cvtpd_ps(_mm512_add_pd(v[j], w));
        ok &= _mm256_cmpeq_epi32_mask(_mm256_castps_si256(lo), _mm256_castps_si256(hi));
        _mm256_storeu_ps(out[j], lo);
    }
    return ok;
}
#endif

void npred_normals_transform(npred_normals *d, float *z)
{
    /* the last pair's sin may be the generator's next spare (a double): exact path */
    const size_t last = d->first + 2 * d->pairs > d->count ? d->pairs - 1 : d->pairs;
    const size_t nb = (last + 7) / 8;
    size_t slow = 0;
#pragma omp for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        const size_t k0 = 8 * b, k1 = k0 + 8 < last ? k0 + 8 : last;
        unsigned ok = 0;
        float cz[8], sz[8];
#ifdef NRM_VECTOR
        if (k1 - k0 == 8) ok = nrm_block(d, k0, cz, sz);
#endif
        for (size_t k = k0; k < k1; k++) {
            if (ok >> (k - k0) & 1) {
                store_pair(d, k, z, cz[k - k0], sz[k - k0]);
                continue;
            }
            double cs, sn;
            pair_exact(d, k, &cs, &sn);
            store_pair(d, k, z, (float)cs, (float)sn);
            slow++;
        }
    }
#pragma omp single
    if (last < d->pairs) {
        double cs;
        pair_exact(d, last, &cs, &d->spare);
        store_pair(d, last, z, (float)cs, 0.0f);
    }
    if (slow) {
#pragma omp atomic
        d->slow += slow;
    }
#pragma omp barrier
}

void npred_normals_finish(const npred_normals *d, npred_rng *rng)
{
    if (d->first + 2 * d->pairs > d->count) {
        rng->spare = d->spare;
        rng->has_spare = 1;
    }
}
