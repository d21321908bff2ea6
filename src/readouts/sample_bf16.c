/* The point readout's sampling + contraction in bf16 (sample_bf16.h). */
#include "readouts/sample_bf16.h"

#include <immintrin.h>
#include <omp.h>

#include "kernels/gemm.h"
#include "readouts/sample.h"

#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int npred_rsample_bf16_supported(int C) { return C > 0 && C % 16 == 0 && npred_gemm_bf16_available(); }

static inline __mmask16 lanes(long left)
{
    return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
}

/* dst[i] = bf16(src[i]), round to nearest even, for i < n */
static BF16 void round_bf16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(dst + i,
                            (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i)));
    for (; i < n; i += 16) {
        const __mmask16 m = lanes((long)(n - i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

/* The lane tree: at level v (groups of g = 8 >> v lanes), lane L of the result is the
 * sum of lanes q * 2g + pos and q * 2g + pos + g of a (pos < g) or of b (pos >= g, at
 * pos - g), q = L / 2g, pos = L % 2g; TREE_LO[v] holds the first of each pair (b's
 * lanes from 16), the second is g further. After the four levels lane j holds the sum
 * of acc[j]. */
static const int TREE_LO[4][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
};

/* lane j = the sum of the 16 lanes of acc[j] (the tree of sample_bf16.h) */
static BF16 __m512 lane_sums(__m512 acc[16])
{
    for (int v = 0, m = 8; v < 4; v++, m /= 2) {
        const __m512i il = _mm512_loadu_si512(TREE_LO[v]), ih = _mm512_add_epi32(il, _mm512_set1_epi32(m));
        for (int i = 0; i < m; i++)
            acc[i] = _mm512_add_ps(_mm512_permutex2var_ps(acc[i], il, acc[i + m]),
                                   _mm512_permutex2var_ps(acc[i], ih, acc[i + m]));
    }
    return acc[0];
}

#define INL static inline __attribute__((always_inline))

/* nb <= 16 neurons of one image img (bf16 channels-last), C channels in NC vectors of
 * 32 (the last one 16 when C is an odd multiple of 16); key, frac, y, Fb the block's */
INL BF16 void block_bf16(const int NC, float *y, const uint16_t *img, const uint32_t *key, const float *frac,
                         const uint16_t *Fb, int nb, int W, int C)
{
    const __mmask32 ml = C % 32 ? (__mmask32)0xFFFF : ~(__mmask32)0; /* the last vector's channels */
    __m512 acc[16];
    const long dn = (long)W * C;
    for (int j = nb; j < 16; j++) acc[j] = _mm512_setzero_ps();
    for (int j = 0; j < nb; j++) {
        const uint32_t k = key[j];
        const float w = frac[2 * j], nn = frac[2 * j + 1], e = 1.0f - w, s = 1.0f - nn;
        const float wt[4] = {s * e, s * w, nn * e, nn * w};
        const long o0 = ((long)(k >> 4) - W - 1) * C, d[4] = {0, C, dn, dn + C};
        __m512bh f[NC];
        for (int v = 0; v < NC; v++)
            f[v] = (__m512bh)_mm512_maskz_loadu_epi16(v == NC - 1 ? ml : ~(__mmask32)0, Fb + (size_t)j * C + 32 * v);
        __m512 t[4];
        for (int q = 0; q < 4; q++) {
            /* a tap outside the map reads nothing (and its address is never formed): +0 */
            const int in = k >> q & 1;
            const __mmask32 m = in ? ~(__mmask32)0 : 0;
            const uint16_t *tp = in ? img + (o0 + d[q]) : img;
            t[q] = _mm512_setzero_ps();
            for (int v = 0; v < NC; v++)
                t[q] = _mm512_dpbf16_ps(t[q], f[v],
                                        (__m512bh)_mm512_maskz_loadu_epi16(v == NC - 1 ? m & ml : m, tp + 32 * v));
        }
        __m512 a = _mm512_mul_ps(_mm512_set1_ps(wt[0]), t[0]);
        for (int q = 1; q < 4; q++) a = _mm512_fmadd_ps(_mm512_set1_ps(wt[q]), t[q], a);
        acc[j] = a;
    }
    const __m512 r = lane_sums(acc);
    const __mmask16 m = (__mmask16)((1u << nb) - 1);
    _mm512_mask_storeu_ps(y, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), r));
}

static BF16 void block_bf16_any(float *y, const uint16_t *img, const uint32_t *key, const float *frac,
                                const uint16_t *Fb, int nb, int W, int C)
{
    block_bf16((C + 31) / 32, y, img, key, frac, Fb, nb, W, C);
}

/* the blocks of image b */
static BF16 void image_bf16(float *y, const uint16_t *img, const uint32_t *key, const float *frac,
                            const uint16_t *Fb, int n, int W, int C)
{
    for (int o0 = 0; o0 < n; o0 += 16) {
        const int nb = n - o0 < 16 ? n - o0 : 16;
        const uint16_t *f = Fb + (size_t)o0 * C;
        switch ((C + 31) / 32) {
        case 1: block_bf16(1, y + o0, img, key + o0, frac + 2 * o0, f, nb, W, C); break;
        case 2: block_bf16(2, y + o0, img, key + o0, frac + 2 * o0, f, nb, W, C); break;
        case 3: block_bf16(3, y + o0, img, key + o0, frac + 2 * o0, f, nb, W, C); break;
        case 4: block_bf16(4, y + o0, img, key + o0, frac + 2 * o0, f, nb, W, C); break;
        default:
            block_bf16_any(y + o0, img, key + o0, frac + 2 * o0, f, nb, W, C);
        }
    }
}

BF16 void npred_rsample_forward_cells_nchw_bf16(float *y, float *feat, uint16_t *featb, uint16_t *Fb, const float *x,
                                                const uint32_t *key, const float *frac, const float *F, int B, int H,
                                                int W, int C, int n)
{
    const size_t img = (size_t)H * W * C;
    const int par = (double)B * n * C >= NPRED_RS_PAR_MIN;
#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (int o = 0; o < n; o++) round_bf16(Fb + (size_t)o * C, F + (size_t)o * C, (size_t)C);
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            npred_rsample_to_nhwc(feat + b * img, x + b * img, 1, C, H * W);
            round_bf16(featb + b * img, feat + b * img, img);
            const size_t p = (size_t)b * n;
            image_bf16(y + p, featb + b * img, key + p, frac + 2 * p, Fb, n, W, C);
        }
    }
}
