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

/* ---- the generator jumped ahead: each thread draws its own pairs' uniforms ----
 *
 * The generator's state map M is linear over GF(2); its characteristic polynomial
 * p (degree 256, primitive: the period is 2^256 - 1) is found once by
 * Berlekamp-Massey on 512 bits of one state coordinate. M^k = r(M) with
 * r = x^k mod p, so the state k steps on is the sum of the states M^i s over the
 * coefficients r_i = 1 (256 steps; the generator's published jumps do the same
 * with fixed r). */
typedef struct {
    uint64_t w[4]; /* coefficients 0..255 (p: the x^256 term implied) */
} nrm_poly;

static nrm_poly nrm_p;
static int nrm_p_state; /* 0: not yet computed, 1: ready, -1: not of degree 256 */

static void nrm_charpoly(void)
{
    enum { N = 512, WN = N / 64 + 1 };
    unsigned char bit[N];
    uint64_t s[4] = {0x9E3779B97F4A7C15ull, 0xBF58476D1CE4E5B9ull, 0x94D049BB133111EBull, 1};
    for (int i = 0; i < N; i++) {
        bit[i] = (unsigned char)(s[0] & 1);
        npred_rng_next(s);
    }
    /* connection polynomial c: bit[n] = sum_{i=1..L} c_i bit[n - i] */
    uint64_t c[WN] = {1}, b[WN] = {1}, t[WN];
    int L = 0, m = 1;
    for (int n = 0; n < N; n++) {
        int dis = bit[n];
        for (int i = 1; i <= L; i++) dis ^= (int)(c[i / 64] >> (i % 64) & 1) & bit[n - i];
        if (!dis) {
            m++;
            continue;
        }
        memcpy(t, c, sizeof t);
        for (int i = 0; i + m < WN * 64; i++)
            if (b[i / 64] >> (i % 64) & 1) c[(i + m) / 64] ^= 1ull << ((i + m) % 64);
        if (2 * L <= n) {
            L = n + 1 - L;
            memcpy(b, t, sizeof b);
            m = 1;
        } else {
            m++;
        }
    }
    if (L != 256) {
        nrm_p_state = -1;
        return;
    }
    /* p(x) = x^256 c(1/x): the coefficient of x^j is c_{256 - j} */
    memset(&nrm_p, 0, sizeof nrm_p);
    for (int j = 0; j < 256; j++)
        if (c[(256 - j) / 64] >> ((256 - j) % 64) & 1) nrm_p.w[j / 64] |= 1ull << (j % 64);
    nrm_p_state = 1;
}

/* a b mod p */
static nrm_poly nrm_mulmod(nrm_poly a, nrm_poly b)
{
    nrm_poly r = {{0, 0, 0, 0}};
    for (int i = 255; i >= 0; i--) {
        const uint64_t top = r.w[3] >> 63; /* r = r x mod p */
        for (int w = 3; w > 0; w--) r.w[w] = r.w[w] << 1 | r.w[w - 1] >> 63;
        r.w[0] <<= 1;
        if (top)
            for (int w = 0; w < 4; w++) r.w[w] ^= nrm_p.w[w];
        if (b.w[i / 64] >> (i % 64) & 1)
            for (int w = 0; w < 4; w++) r.w[w] ^= a.w[w];
    }
    return r;
}

/* s = the state k steps on */
static void nrm_jump(uint64_t s[4], uint64_t k)
{
    nrm_poly r = {{1, 0, 0, 0}}, x = {{2, 0, 0, 0}};
    for (; k; k >>= 1) {
        if (k & 1) r = nrm_mulmod(r, x);
        x = nrm_mulmod(x, x);
    }
    uint64_t acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < 256; i++) {
        if (r.w[i / 64] >> (i % 64) & 1)
            for (int w = 0; w < 4; w++) acc[w] ^= s[w];
        npred_rng_next(s);
    }
    memcpy(s, acc, sizeof acc);
}

/* below this many pairs the uniforms are drawn on one thread */
#define NRM_PAR_PAIRS 16384

/* pairs [k0, k1) from state s (advanced); 1 when some u1 was 0, which
 * npred_rng_normal draws again (the pairs after it then start one step later) */
static int nrm_uniforms(const npred_normals *d, uint64_t s[4], size_t k0, size_t k1)
{
    /* the state in a local copy: held in registers (the stores to u1, u2 might
     * alias s, and would send every step through memory) */
    uint64_t t[4];
    memcpy(t, s, sizeof t);
    int redrawn = 0;
    for (size_t k = k0; k < k1; k++) {
        uint64_t a;
        while (!((a = npred_rng_next(t)) >> 11)) redrawn = 1;
        d->u1[k] = a;
        d->u2[k] = npred_rng_next(t);
    }
    memcpy(s, t, sizeof t);
    return redrawn;
}

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
    memcpy(d->s, rng->s, sizeof d->s);
    d->drawn = 0;
    d->redraw = 0;
    if (d->pairs >= NRM_PAR_PAIRS && omp_get_max_threads() > 1) {
#pragma omp critical(npred_normals_charpoly)
        if (!nrm_p_state) nrm_charpoly();
        if (nrm_p_state == 1) return; /* drawn by the threads of npred_normals_transform */
    }
    /* npred_rng_normal: u1 = uniform() again while it is 0, then u2 = uniform();
     * uniform() = (u64 >> 11) * 2^-53 */
    nrm_uniforms(d, d->s, 0, d->pairs);
    d->drawn = 1;
}

/* the uniforms on the threads of the enclosing parallel region: thread t draws
 * its share of the pairs from the state jumped 2 k0 steps ahead; if a u1 was
 * drawn again anywhere (one output in 2^53), all are drawn again on one thread */
static void nrm_uniforms_parallel(npred_normals *d)
{
    const int T = omp_get_num_threads(), id = omp_get_thread_num();
    const size_t k0 = d->pairs * (size_t)id / (size_t)T, k1 = d->pairs * (size_t)(id + 1) / (size_t)T;
    uint64_t s[4];
    memcpy(s, d->s, sizeof s);
    nrm_jump(s, 2 * (uint64_t)k0);
    if (nrm_uniforms(d, s, k0, k1)) __atomic_store_n(&d->redraw, 1, __ATOMIC_RELAXED);
    if (id == T - 1) memcpy(d->s_end, s, sizeof s);
#pragma omp barrier
#pragma omp single
    {
        if (__atomic_load_n(&d->redraw, __ATOMIC_RELAXED)) nrm_uniforms(d, d->s, 0, d->pairs);
        else memcpy(d->s, d->s_end, sizeof d->s);
        d->drawn = 1;
    }
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
    if (!d->drawn) nrm_uniforms_parallel(d); /* (every thread sees the same d->drawn: set before the region) */
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
    memcpy(rng->s, d->s, sizeof rng->s);
    if (d->first + 2 * d->pairs > d->count) {
        rng->spare = d->spare;
        rng->has_spare = 1;
    }
}
