/* bf16 kernels of the depth-separable block (see bf16_block.h).
 *
 * Layouts (one image): x and a are fp32 planes; the 1x1 convolutions multiply
 * pairs of channels: operand words (c 2q in the low half, 2q + 1 in the high half,
 * an odd last channel paired with zero), one row of hw words per pair, so that a
 * row of vdpbf16ps lanes is 16 pixels and each lane adds the products of two
 * channels. The block's input is packed into that layout once per image; the
 * depthwise convolution writes its output in it directly. The first 1x1 writes
 * bf16 planes, which the depthwise convolution turns, one plane at a time, into
 * pairs of horizontally adjacent pixels (word x: pixels x - p and x - p + 1 of a
 * zero-padded row), so that one vdpbf16ps lane adds two taps of a kernel row: a
 * row of k taps takes (k + 1) / 2 instructions per 16 outputs instead of k FMAs.
 *
 * Rounding to bf16 is round to nearest even (vcvtne2ps2bf16 / vcvtneps2bf16) for
 * every value: x, the weights, and the two intermediates after their fp32 sums and
 * bias. Sums run in a fixed order (pairs, then kernel rows) set by the shapes. */
#include "kernels/bf16_block.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/gemm.h"

#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define INL static inline __attribute__((always_inline))

#define PW_MR 8  /* rows (output channels) per 1x1 block */
#define PW_NV 3  /* vectors of 16 pixels per 1x1 block */
#define DW_R 4   /* output rows per depthwise block */
#define DW_NV 4  /* vectors of 16 pixels per depthwise block */
#define KMAX 7

static inline size_t up16(size_t n) { return (n + 15) / 16 * 16; }

int npred_bf16_block_supported(int k, int pad, int stride, int dil)
{
    return npred_gemm_bf16_available() && k >= 1 && k <= KMAX && k % 2 == 1 && pad == k / 2 && stride == 1 &&
           dil == 1;
}

/* The next 64-byte aligned piece of a scratch at base (NULL: only counted): TAKE
 * sets ptr to count elements of type and moves the offset at past them. */
static void *take(char *base, size_t *at, size_t bytes)
{
    void *p = base ? base + *at : NULL;
    *at += (bytes + 63) / 64 * 64;
    return p;
}
#define TAKE(ptr, type, count) ((ptr) = (type *)take(base, &at, (size_t)(count) * sizeof(type)))

/* scratch: x packed (pairs of cin), t0 (bf16 planes), t1 (pairs of cout), the
 * packed weights, one plane's padded pair rows, two fp32 planes, the BatchNorm coefficients */
typedef struct {
    uint32_t *xp, *t1, *w0p, *w2p, *wdp, *prow;
    uint16_t *t0;
    float *pl[2], *scale, *shift;
    int ps; /* words per pair row of the padded plane */
} bf_scr;

static size_t carve(bf_scr *s, const npred_bf16_block *b, char *base)
{
    const size_t hw = (size_t)b->h * b->w, cip = (size_t)(b->cin + 1) / 2, cop = (size_t)(b->cout + 1) / 2;
    const int t = (b->k + 1) / 2;
    /* the last 64-pixel block of a row reads up to k - 1 words past it */
    const int ps = (int)up16(((size_t)b->w + 63) / 64 * 64 + (size_t)b->k - 1);
    size_t at = 0;
    bf_scr z = {0};
    if (!s) s = &z;
    s->ps = ps;
    TAKE(s->xp, uint32_t, cip * hw + 16);
    TAKE(s->t0, uint16_t, (size_t)b->cout * hw + 32);
    TAKE(s->t1, uint32_t, cop * hw + 16);
    TAKE(s->w0p, uint32_t, (size_t)b->cout * cip);
    TAKE(s->w2p, uint32_t, (size_t)b->cout * cop);
    TAKE(s->wdp, uint32_t, (size_t)KMAX * t + 16);
    TAKE(s->prow, uint32_t, (size_t)(b->h + b->k - 1) * ps + 16);
    TAKE(s->pl[0], float, up16(hw) + 16);
    TAKE(s->pl[1], float, up16(hw) + 16);
    TAKE(s->scale, float, b->cout);
    TAKE(s->shift, float, b->cout);
    return at;
}

size_t npred_bf16_block_scratch_bytes(const npred_bf16_block *b) { return carve(NULL, b, NULL); }

static inline __mmask16 lanes(long left)
{
    return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
}

/* 16 pairs (f0[j] low, f1[j] high) */
INL BF16 __m512i pair16(__m512 f0, __m512 f1)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
}

/* dst[j] = pair(r0[j] + b0, r1[j] + b1) for j < n (r1 NULL: zero) */
static BF16 void pair_rows(uint32_t *dst, const float *r0, const float *r1, size_t n, float b0, float b1)
{
    const __m512 v0 = _mm512_set1_ps(b0), v1 = _mm512_set1_ps(b1);
    for (size_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes((long)(n - j));
        const __m512 f0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m, r0 + j), v0);
        const __m512 f1 = r1 ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, r1 + j), v1) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(dst + j, m, pair16(f0, f1));
    }
}

/* wp (o x ceil(c / 2) words) = pairs along the rows of w (o x c) */
static BF16 void pack_weights(uint32_t *wp, const float *w, int o, int c)
{
    const int cp = (c + 1) / 2;
    for (int i = 0; i < o; i++)
        for (int q = 0; q < cp; q += 16) {
            const __m512 lo = _mm512_maskz_loadu_ps(lanes(c - 2 * q), w + (size_t)i * c + 2 * q);
            const __m512 hi = _mm512_maskz_loadu_ps(lanes(c - 2 * q - 16), w + (size_t)i * c + 2 * q + 16);
            _mm512_mask_storeu_epi32(wp + (size_t)i * cp + q, lanes(cp - q), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
}

/* ---------------------------------------------------------------- 1x1 */

typedef struct {
    const float *bias, *mean, *scale, *shift;
    float xs, ys;
} pw_epi;

enum { PW_BF16 = 0, PW_BNELU = 1, PW_F32 = 2, PW_ACC = 3 };

/* rows i0 .. i0 + MR - 1, 48 pixels from column j (masks mk) of C = W . B over kp pairs,
 * + bias, into out (row r at out + r * ldo); PW_BF16: rounded to bf16; PW_BNELU: fp32
 * (a tile in L1, which bnelu_rows turns into the output); PW_ACC: fp32 added to out */
INL BF16 void pw_block(const int MR, const int MODE, int kp, const uint32_t *wp, const uint32_t *bp, size_t hw,
                       int i0, size_t j, const __mmask16 *mk, void *out, size_t ldo, const pw_epi *e)
{
    __m512 s[PW_MR][PW_NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++) s[r][v] = _mm512_setzero_ps();
    for (int q = 0; q < kp; q++) {
        __m512bh bv[PW_NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++)
            bv[v] = (__m512bh)_mm512_maskz_loadu_epi32(mk[v], bp + (size_t)q * hw + j + 16 * v);
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)wp[(size_t)(i0 + r) * kp + q]);
            _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++) s[r][v] = _mm512_dpbf16_ps(s[r][v], av, bv[v]);
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++) {
        const int o = i0 + r;
        const __m512 bias = _mm512_set1_ps(e->bias ? e->bias[o] : 0.0f);
        _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++) {
            __m512 z = _mm512_add_ps(s[r][v], bias);
            const size_t at = (size_t)r * ldo + 16 * v;
            if (MODE == PW_ACC) z = _mm512_add_ps(_mm512_maskz_loadu_ps(mk[v], (float *)out + at), z);
            if (MODE == PW_BF16) _mm256_mask_storeu_epi16((uint16_t *)out + at, mk[v], (__m256i)_mm512_cvtneps_pbh(z));
            else _mm512_mask_storeu_ps((float *)out + at, mk[v], z);
        }
    }
}

/* expm1(x) in fp32 with FMAs (x = k ln2 + r, |r| <= ln2 / 2, a degree-7 Taylor
 * polynomial of e^r - 1, times 2^k): within a few ulp; -1 below -87 */
INL BF16 __m512 expm1_fma(__m512 x)
{
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), xc);
    r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.42860682030941723212e-6f), r);
    __m512 q = _mm512_set1_ps(1.0f / 5040);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 720));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 120));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 24));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f / 6));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0.5f));
    const __m512 em = _mm512_fmadd_ps(_mm512_mul_ps(r, r), q, r); /* e^r - 1 */
    const __m512 sc = _mm512_scalef_ps(_mm512_set1_ps(1.0f), kf);  /* 2^k */
    const __m512 v = _mm512_fmadd_ps(sc, em, _mm512_sub_ps(sc, _mm512_set1_ps(1.0f)));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ), v, _mm512_set1_ps(-1.0f));
}

/* rows i0 .. i0 + mr - 1, 48 pixels from column j (masks mk) of out = BatchNorm + ELU
 * of the tile (mr x 48) that pw_block wrote (apart from the sums: their 24
 * accumulators leave no registers for the exp), the row's vectors side by side so that
 * their exp chains overlap */
static BF16 void bnelu_rows(float *out, uint32_t *outp, float *tile, size_t hw, int i0, int mr, size_t j,
                            const __mmask16 *mk, const pw_epi *e)
{
    const __m512 xs = _mm512_set1_ps(e->xs), ys = _mm512_set1_ps(e->ys);
    for (int o = i0; o < i0 + mr; o++) {
        const __m512 mean = _mm512_set1_ps(e->mean[o]), sc = _mm512_set1_ps(e->scale[o]);
        const __m512 sh = _mm512_set1_ps(e->shift[o]);
        float *tr = tile + (o - i0) * 16 * PW_NV, *row = out ? out + (size_t)o * hw + j : tr;
        _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++) {
            const __m512 z = _mm512_maskz_loadu_ps(mk[v], tr + 16 * v);
            const __m512 t = _mm512_sub_ps(_mm512_fmadd_ps(_mm512_sub_ps(z, mean), sc, sh), xs);
            const __mmask16 pos = _mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ);
            _mm512_mask_storeu_ps(row + 16 * v, mk[v], _mm512_add_ps(_mm512_mask_blend_ps(pos, expm1_fma(t), t), ys));
        }
    }
    if (!outp) return;
    /* pairs of rows (i0 even) -> pairs of channels, an odd last row with zero */
    for (int r = 0; r < mr; r += 2) {
        const float *t0 = tile + r * 16 * PW_NV, *t1 = t0 + 16 * PW_NV;
        uint32_t *dst = outp + (size_t)((i0 + r) / 2) * hw + j;
        _Pragma("GCC unroll 4") for (int v = 0; v < PW_NV; v++) {
            const __m512 f0 = _mm512_maskz_loadu_ps(mk[v], t0 + 16 * v);
            const __m512 f1 = r + 1 < mr ? _mm512_maskz_loadu_ps(mk[v], t1 + 16 * v) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(dst + 16 * v, mk[v], pair16(f0, f1));
        }
    }
}

#define PW_CASE(MR)                                                      \
    case MR:                                                             \
        if (mode == PW_BF16) pw_block(MR, PW_BF16, kp, wp, bp, hw, i0, j, mk, out, ldo, e);   \
        else pw_block(MR, PW_BNELU, kp, wp, bp, hw, i0, j, mk, out, ldo, e); \
        break;

static BF16 void pw_block_any(int mr, int mode, int kp, const uint32_t *wp, const uint32_t *bp, size_t hw, int i0,
                              size_t j, const __mmask16 *mk, void *out, size_t ldo, const pw_epi *e)
{
    switch (mr) {
        PW_CASE(1) PW_CASE(2) PW_CASE(3) PW_CASE(4) PW_CASE(5) PW_CASE(6) PW_CASE(7) PW_CASE(8)
    default: break;
    }
}

/* out (o rows of hw; PW_BNELU: fp32 planes out, or pairs of channels outp; PW_F32: fp32
 * planes without BatchNorm + ELU) from wp
 * (o x kp pairs) and bp (kp rows of hw pairs): panels of 48 pixels outermost (kp x 48
 * words of B stay in L1 while every row block passes) */
static BF16 void pw_conv(int mode, int o, int kp, const uint32_t *wp, const uint32_t *bp, size_t hw, void *out,
                         uint32_t *outp, const pw_epi *e)
{
    float tile[PW_MR * 16 * PW_NV] __attribute__((aligned(64)));
    for (size_t j = 0; j < hw; j += 16 * PW_NV) {
        __mmask16 mk[PW_NV];
        for (int v = 0; v < PW_NV; v++) mk[v] = lanes((long)hw - (long)(j + 16 * v));
        for (int i = 0; i < o; i += PW_MR) {
            const int mr = o - i < PW_MR ? o - i : PW_MR;
            if (mode == PW_BF16) {
                pw_block_any(mr, mode, kp, wp, bp, hw, i, j, mk, (uint16_t *)out + (size_t)i * hw + j, hw, e);
            } else if (mode == PW_F32) {
                pw_block_any(mr, PW_BNELU, kp, wp, bp, hw, i, j, mk, (float *)out + (size_t)i * hw + j, hw, e);
            } else {
                pw_block_any(mr, mode, kp, wp, bp, hw, i, j, mk, tile, 16 * PW_NV, e);
                bnelu_rows(out, outp, tile, hw, i, mr, j, mk, e);
            }
        }
    }
}

/* ---------------------------------------------------------------- depthwise */

/* lanes lo .. hi - 1 of 32 (clamped) */
static inline __mmask32 span32(int lo, int hi)
{
    lo = lo < 0 ? 0 : lo, hi = hi > 32 ? 32 : hi;
    return hi <= lo ? 0 : (__mmask32)((((uint64_t)1 << hi) - 1) & ~(((uint64_t)1 << lo) - 1));
}

/* prow: rows of ps words, row r = input row r - p (zero outside), word x = pixels
 * x - p (low) and x - p + 1 (high) of it, zero outside the plane: 32 pixels loaded
 * (masked: the lanes outside the row are neither read nor faulted on), 16 words made
 * of them by one permutation */
static BF16 void dw_pairs(uint32_t *prow, int ps, const uint16_t *in, int h, int w, int k)
{
    const int p = k / 2;
    const __m512i idx = _mm512_set_epi16(16, 15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7, 6, 6, 5,
                                         5, 4, 4, 3, 3, 2, 2, 1, 1, 0);
    for (int r = 0; r < h + k - 1; r++) {
        uint32_t *dst = prow + (size_t)r * ps;
        const int y = r - p;
        if (y < 0 || y >= h) {
            memset(dst, 0, (size_t)ps * sizeof *dst);
            continue;
        }
        const uint16_t *src = in + (size_t)y * w;
        for (int x = 0; x < ps; x += 16) {
            const __m512i v = _mm512_maskz_loadu_epi16(span32(p - x, w + p - x), src + x - p);
            _mm512_storeu_si512(dst + x, _mm512_permutexvar_epi16(idx, v));
        }
    }
}

/* the pairs of a channel's kernel rows: wdp[ky * t + i] = (w[ky][2i], w[ky][2i + 1]) */
static BF16 void dw_weights(uint32_t *wdp, const float *wc, int k)
{
    const int t = (k + 1) / 2;
    float f[KMAX * (KMAX + 1)];
    memset(f, 0, sizeof f);
    for (int ky = 0; ky < k; ky++) memcpy(f + ky * 2 * t, wc + ky * k, (size_t)k * sizeof *f);
    for (int q = 0; q < k * t; q += 16) {
        const __m512 lo = _mm512_maskz_loadu_ps(lanes(2 * (k * t - q)), f + 2 * q);
        const __m512 hi = _mm512_maskz_loadu_ps(lanes(2 * (k * t - q) - 16), f + 2 * q + 16);
        _mm512_mask_storeu_epi32(wdp + q, lanes(k * t - q), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* R output rows from y, 64 pixels from x (masks mk) of a plane: sums over the kernel
 * rows, then the pairs of each row, in order */
INL BF16 void dw_block(const int KS, const int R, float *o, int w, const uint32_t *prow, int ps, const uint32_t *wdp,
                       int y, int x, const __mmask16 *mk)
{
    const int T = (KS + 1) / 2;
    __m512 s[DW_R][DW_NV];
    _Pragma("GCC unroll 4") for (int i = 0; i < R; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; v++) s[i][v] = _mm512_setzero_ps();
    /* a loop over the input rows (not unrolled: unrolled, the compiler hoists every
     * row's loads and weights into more registers than there are) */
    _Pragma("GCC unroll 1") for (int r = 0; r < R + KS - 1; r++) {
        const uint32_t *wr = wdp;
        _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) {
            __m512bh bv[DW_NV];
            const uint32_t *src = prow + (size_t)(y + r) * ps + x + 2 * t;
            _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; v++)
                bv[v] = (__m512bh)_mm512_loadu_si512(src + 16 * v);
            _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {
                const int ky = r - i;
                if (ky < 0 || ky >= KS) continue;
                const __m512bh wv = (__m512bh)_mm512_set1_epi32((int)wr[ky * T + t]);
                _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; v++) s[i][v] = _mm512_dpbf16_ps(s[i][v], wv, bv[v]);
            }
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < R; i++)
        _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; v++)
            _mm512_mask_storeu_ps(o + (size_t)(y + i) * w + x + 16 * v, mk[v], s[i][v]);
}

#define DW_CASE(KS)                                                                           \
    case KS:                                                                                  \
        if (r == DW_R) dw_block(KS, DW_R, o, w, prow, ps, wdp, y, x, mk);                     \
        else if (r == 3) dw_block(KS, 3, o, w, prow, ps, wdp, y, x, mk);                      \
        else if (r == 2) dw_block(KS, 2, o, w, prow, ps, wdp, y, x, mk);                      \
        else dw_block(KS, 1, o, w, prow, ps, wdp, y, x, mk);                                  \
        break;

/* o (h x w) = the plane's depthwise convolution (no bias) from its pair rows */
static BF16 void dw_plane(float *o, int h, int w, int k, const uint32_t *prow, int ps, const uint32_t *wdp)
{
    for (int x = 0; x < w; x += 16 * DW_NV) {
        __mmask16 mk[DW_NV];
        for (int v = 0; v < DW_NV; v++) mk[v] = lanes((long)w - (x + 16 * v));
        for (int y = 0; y < h; y += DW_R) {
            const int r = h - y < DW_R ? h - y : DW_R;
            switch (k) {
                DW_CASE(1) DW_CASE(3) DW_CASE(5) DW_CASE(7)
            default: break;
            }
        }
    }
}

/* ---------------------------------------------------------------- the block */

size_t npred_bf16_block_pair_words(int c, int h, int w) { return ((size_t)c + 1) / 2 * h * w + 16; }

/* the two convolutions before the second 1x1: x (or xpairs) -> t0 (bf16 planes) ->
 * t1 (bf16 pairs); packs the second 1x1's weights into s->w2p */
static BF16 void block_front(const npred_bf16_block *b, const float *x, const uint32_t *xpairs, uint16_t *t0,
                             uint32_t *t1, bf_scr *s)
{
    const size_t hw = (size_t)b->h * b->w;
    const int cip = (b->cin + 1) / 2, cop = (b->cout + 1) / 2, k = b->k;
    const uint32_t *xp = xpairs;
    for (int q = 0; !xp && q < cip; q++)
        pair_rows(s->xp + (size_t)q * hw, x + (size_t)2 * q * hw, 2 * q + 1 < b->cin ? x + (size_t)(2 * q + 1) * hw : NULL,
                  hw, 0.0f, 0.0f);
    pack_weights(s->w0p, b->w0, b->cout, b->cin);
    pack_weights(s->w2p, b->w2, b->cout, b->cout);
    const pw_epi e0 = {b->b0, NULL, NULL, NULL, 0.0f, 0.0f};
    if (!xp) xp = s->xp;
    pw_conv(PW_BF16, b->cout, cip, s->w0p, xp, hw, t0, NULL, &e0);
    for (int q = 0; q < cop; q++) {
        const int c0 = 2 * q, n = c0 + 1 < b->cout ? 2 : 1;
        for (int u = 0; u < n; u++) {
            dw_weights(s->wdp, b->wd + (size_t)(c0 + u) * k * k, k);
            dw_pairs(s->prow, s->ps, t0 + (size_t)(c0 + u) * hw, b->h, b->w, k);
            dw_plane(s->pl[u], b->h, b->w, k, s->prow, s->ps, s->wdp);
        }
        pair_rows(t1 + (size_t)q * hw, s->pl[0], n > 1 ? s->pl[1] : NULL, hw, b->bd ? b->bd[c0] : 0.0f,
                  n > 1 && b->bd ? b->bd[c0 + 1] : 0.0f);
    }
}

BF16 void npred_bf16_block_eval_image(const npred_bf16_block *b, const float *x, const uint32_t *xpairs, float *a,
                                      uint32_t *apairs, void *scratch)
{
    bf_scr s = {0};
    carve(&s, b, scratch);
    block_front(b, x, xpairs, s.t0, s.t1, &s);
    for (int c = 0; c < b->cout; c++) { /* the coefficients of the fp32 eval kernel */
        s.scale[c] = (float)((b->gamma ? (double)b->gamma[c] : 1.0) * (1.0 / sqrt((double)b->var[c] + b->eps)));
        s.shift[c] = b->beta ? b->beta[c] : 0.0f;
    }
    const pw_epi e2 = {b->b2, b->mean, s.scale, s.shift, b->xshift, b->yshift};
    pw_conv(PW_BNELU, b->cout, (b->cout + 1) / 2, s.w2p, s.t1, (size_t)b->h * b->w, a, a ? NULL : apairs, &e2);
}

BF16 void npred_bf16_block_train_image(const npred_bf16_block *b, const float *x, float *z, uint16_t *t0,
                                       uint32_t *t1, void *scratch)
{
    bf_scr s = {0};
    carve(&s, b, scratch);
    block_front(b, x, NULL, t0, t1, &s);
    const pw_epi e2 = {b->b2, NULL, NULL, NULL, 0.0f, 0.0f};
    pw_conv(PW_F32, b->cout, (b->cout + 1) / 2, s.w2p, t1, (size_t)b->h * b->w, z, NULL, &e2);
}

void npred_bf16_block_front_image(const npred_bf16_block *b, const float *x, uint16_t *t0, uint32_t *t1,
                                  void *scratch)
{
    bf_scr s = {0};
    carve(&s, b, scratch);
    block_front(b, x, NULL, t0, t1, &s);
}

/* ---------------------------------------------------------------- 1x1 backward */

/* Pixels are taken in chunks of BW_P pairs (two of pw_block's 48-pixel panels). Per
 * chunk: dy as bf16 planes (dyw: row o, word p = pixels 2p, 2p + 1) and as pairs of
 * channels (dyq, pw_block's operand), x transposed to rows of pixel pairs (xt: row p,
 * word i = pixels 2p, 2p + 1 of channel i), so that dW's accumulators run along the
 * channels of x (a row of dW) and each of its elements is one sum over the pixel pairs
 * in order, continued across chunks through dw itself (exact: stored and reloaded). */
#define BW_P 48
#define BW_MR 6 /* rows of dW per block (x 4 vectors of 16 channels: 24 accumulators) */

typedef struct {
    uint32_t *wt, *xt, *dyw, *dyq;
    float *wtf;
    int cs; /* words per row of xt (channels rounded up to 64) */
} bw_scr;

static size_t bw_carve(bw_scr *s, int o, int c, char *base)
{
    const size_t op = (size_t)(o + 1) / 2, cs = ((size_t)c + 63) / 64 * 64;
    size_t at = 0;
    bw_scr z = {0};
    if (!s) s = &z;
    s->cs = (int)cs;
    TAKE(s->wt, uint32_t, (size_t)c * op + 16);
    TAKE(s->wtf, float, (size_t)c * 2 * op + 16);
    TAKE(s->xt, uint32_t, BW_P * cs);
    TAKE(s->dyw, uint32_t, (size_t)o * BW_P);
    TAKE(s->dyq, uint32_t, op * 2 * BW_P);
    return at;
}

size_t npred_bf16_pw_backward_scratch_bytes(int o, int c) { return bw_carve(NULL, o, c, NULL); }

/* prefetch bytes from base of each of rows rows, stride bytes apart (into L1) */
static inline void prefetch_rows(const void *base, size_t stride, int rows, size_t bytes)
{
    for (int r = 0; r < rows; r++)
        for (size_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)base + (size_t)r * stride + b, _MM_HINT_T0);
}

/* r[i] (16 words each) transposed in place: r[i] word j <- r[j] word i */
INL BF16 void tr16x16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    /* u[4k + j], 128-bit lane L: rows 4k .. 4k + 3, column j + 4L */
    for (int j = 0; j < 4; j++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
        const __m512i v3 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        r[j + 4] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[j + 12] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* 16 words of channel i: pixels j + 2m, j + 2m + 1 (m < 16) rounded to bf16, zero at
 * and past n pixels; from fp32 planes x or pairs of channels xp (x NULL) */
INL BF16 __m512i pix_pairs(const float *x, const uint32_t *xp, int i, size_t hw, size_t j, long n)
{
    if (x) {
        const float *r = x + (size_t)i * hw + j;
        return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(lanes(n - 16), r + 16),
                                            _mm512_maskz_loadu_ps(lanes(n), r));
    }
    const __m512i even = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26,
                                          24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const uint32_t *r = xp + (size_t)(i / 2) * hw + j;
    const __m512i a = _mm512_maskz_loadu_epi32(lanes(n), r), b = _mm512_maskz_loadu_epi32(lanes(n - 16), r + 16);
    return _mm512_permutex2var_epi16(a, i % 2 ? _mm512_add_epi16(even, _mm512_set1_epi16(1)) : even, b);
}

/* rows o0 .. o0 + MR - 1 of dW (o x c) += dyw rows . xt over np pairs, 64 channels from i0 */
INL BF16 void bw_dw_block(const int MR, float *dw, int c, int o0, int i0, const uint32_t *dyw, const uint32_t *xt,
                          int cs, int np)
{
    __m512 s[BW_MR][4];
    __mmask16 mk[4];
    for (int v = 0; v < 4; v++) mk[v] = lanes((long)c - (i0 + 16 * v));
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
            s[r][v] = _mm512_maskz_loadu_ps(mk[v], dw + (size_t)(o0 + r) * c + i0 + 16 * v);
    for (int p = 0; p < np; p++) {
        __m512bh b[4];
        _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
            b[v] = (__m512bh)_mm512_load_si512(xt + (size_t)p * cs + i0 + 16 * v);
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)dyw[(size_t)(o0 + r) * BW_P + p]);
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) s[r][v] = _mm512_dpbf16_ps(s[r][v], a, b[v]);
        }
    }
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(dw + (size_t)(o0 + r) * c + i0 + 16 * v, mk[v], s[r][v]);
}

#define BW_CASE(MR) \
    case MR: bw_dw_block(MR, dw, c, o0, i0, dyw, xt, cs, np); break;

static BF16 void bw_dw(float *dw, int o, int c, const uint32_t *dyw, const uint32_t *xt, int cs, int np)
{
    for (int o0 = 0; o0 < o; o0 += BW_MR)
        for (int i0 = 0; i0 < c; i0 += 64) {
            switch (o - o0 < BW_MR ? o - o0 : BW_MR) {
                BW_CASE(1) BW_CASE(2) BW_CASE(3) BW_CASE(4) BW_CASE(5) BW_CASE(6)
            default: break;
            }
        }
}

/* pw_block's fp32 rows (PW_F32), added to out (PW_ACC) or rounded to bf16 (PW_BF16) */
static BF16 void pw_block_out(int mr, int mode, int kp, const uint32_t *wp, const uint32_t *bp, size_t ld, int i0,
                              const __mmask16 *mk, void *out, size_t ldo)
{
    const pw_epi e = {NULL, NULL, NULL, NULL, 0.0f, 0.0f};
#define OUT_CASE(MR)                                                                     \
    case MR:                                                                             \
        if (mode == PW_ACC) pw_block(MR, PW_ACC, kp, wp, bp, ld, i0, 0, mk, out, ldo, &e);      \
        else if (mode == PW_BF16) pw_block(MR, PW_BF16, kp, wp, bp, ld, i0, 0, mk, out, ldo, &e); \
        else pw_block(MR, PW_F32, kp, wp, bp, ld, i0, 0, mk, out, ldo, &e);              \
        break;
    switch (mr) {
        OUT_CASE(1) OUT_CASE(2) OUT_CASE(3) OUT_CASE(4) OUT_CASE(5) OUT_CASE(6) OUT_CASE(7) OUT_CASE(8)
    default: break;
    }
#undef OUT_CASE
}

BF16 void npred_bf16_pw_backward_image(float *dw, float *dx, uint16_t *dxb, int acc, const float *dy, const float *x,
                                       const uint32_t *xpairs, const float *w, int o, int c, size_t hw,
                                       void *scratch)
{
    const int mode = dxb ? PW_BF16 : acc ? PW_ACC : PW_F32;
    if (dxb) dx = NULL;
    bw_scr s = {0};
    bw_carve(&s, o, c, scratch);
    const int op = (o + 1) / 2, cs = s.cs;
    if (dx || dxb) { /* W^T as pairs along its rows: wt[i][q] = (w[2q][i], w[2q + 1][i]) */
        for (int i = 0; i < c; i++)
            for (int r = 0; r < 2 * op; r++) s.wtf[(size_t)i * 2 * op + r] = r < o ? w[(size_t)r * c + i] : 0.0f;
        pack_weights(s.wt, s.wtf, c, 2 * op);
    }
    for (size_t j0 = 0; j0 < hw; j0 += 2 * BW_P) {
        const long n = (long)(hw - j0) < 2 * BW_P ? (long)(hw - j0) : 2 * BW_P;
        const int np = (int)(n + 1) / 2;
        /* dy's chunk as bf16 planes and as pairs of channels */
        for (int q = 0; q < op; q++) {
            const float *r0 = dy + (size_t)2 * q * hw + j0, *r1 = 2 * q + 1 < o ? r0 + hw : NULL;
            for (int v = 0; v < 2 * BW_P / 32; v++) {
                const __m512 a0 = _mm512_maskz_loadu_ps(lanes(n - 32 * v), r0 + 32 * v);
                const __m512 a1 = _mm512_maskz_loadu_ps(lanes(n - 32 * v - 16), r0 + 32 * v + 16);
                const __m512 b0 = r1 ? _mm512_maskz_loadu_ps(lanes(n - 32 * v), r1 + 32 * v) : _mm512_setzero_ps();
                const __m512 b1 = r1 ? _mm512_maskz_loadu_ps(lanes(n - 32 * v - 16), r1 + 32 * v + 16)
                                     : _mm512_setzero_ps();
                if (dw) {
                    _mm512_storeu_si512(s.dyw + (size_t)2 * q * BW_P + 16 * v, (__m512i)_mm512_cvtne2ps_pbh(a1, a0));
                    if (r1)
                        _mm512_storeu_si512(s.dyw + (size_t)(2 * q + 1) * BW_P + 16 * v,
                                            (__m512i)_mm512_cvtne2ps_pbh(b1, b0));
                }
                if (dx || dxb) {
                    _mm512_storeu_si512(s.dyq + (size_t)q * 2 * BW_P + 32 * v, pair16(a0, b0));
                    _mm512_storeu_si512(s.dyq + (size_t)q * 2 * BW_P + 32 * v + 16, pair16(a1, b1));
                }
            }
        }
        if (dw) { /* x's chunk transposed, 16 channels x 16 pairs at a time */
            for (int i0 = 0; i0 < cs; i0 += 16)
                for (int p0 = 0; p0 < np; p0 += 16) {
                    __m512i r[16];
                    for (int i = 0; i < 16; i++)
                        r[i] = i0 + i < c ? pix_pairs(x, xpairs, i0 + i, hw, j0 + 2 * (size_t)p0, n - 2 * p0)
                                          : _mm512_setzero_si512();
                    tr16x16(r);
                    for (int p = 0; p < 16 && p0 + p < np; p++)
                        _mm512_store_si512(s.xt + (size_t)(p0 + p) * cs + i0, r[p]);
                }
            if (j0 + 2 * BW_P < hw) { /* the next chunk's rows of x and dy, while dW's products run */
                const size_t jn = j0 + 2 * BW_P;
                if (x) prefetch_rows(x + jn, hw * sizeof *x, c, 2 * BW_P * sizeof *x);
                else prefetch_rows(xpairs + jn, hw * sizeof *xpairs, (c + 1) / 2, 2 * BW_P * sizeof *xpairs);
                prefetch_rows(dy + jn, hw * sizeof *dy, o, 2 * BW_P * sizeof *dy);
            }
            bw_dw(dw, o, c, s.dyw, s.xt, cs, np);
        }
        if (dx || dxb) /* dx's chunk = W^T . dy, panels of 48 pixels */
            for (long j = 0; j < n; j += 48) {
                __mmask16 mk[PW_NV];
                for (int v = 0; v < PW_NV; v++) mk[v] = lanes(n - (j + 16 * v));
                for (int i = 0; i < c; i += PW_MR) {
                    const size_t at = (size_t)i * hw + j0 + j;
                    pw_block_out(c - i < PW_MR ? c - i : PW_MR, mode, op, s.wt, s.dyq + j, 2 * BW_P, i, mk,
                                 dxb ? (void *)(dxb + at) : (void *)(dx + at), hw);
                }
            }
    }
}

/* ---------------------------------------------------------------- depthwise backward */

typedef struct {
    uint32_t *prow, *wdp;
    uint16_t *dyp, *xp; /* dwg_plane's padded planes */
    int ps;
} dwb_scr;

static size_t dwb_carve(dwb_scr *s, int h, int w, int k, char *base)
{
    const int t = (k + 1) / 2, ps = (int)up16(((size_t)w + 63) / 64 * 64 + (size_t)k - 1);
    size_t at = 0;
    dwb_scr z = {0};
    if (!s) s = &z;
    s->ps = ps;
    TAKE(s->prow, uint32_t, (size_t)(h + k - 1) * ps + 16);
    TAKE(s->wdp, uint32_t, (size_t)KMAX * t + 16);
    const size_t rd = ((size_t)w + 31) / 32 * 32;
    TAKE(s->dyp, uint16_t, (size_t)h * rd + 32);
    TAKE(s->xp, uint16_t, (size_t)(h + k - 1) * (rd + 2 * KMAX) + 32);
    return at;
}

size_t npred_bf16_dw_backward_scratch_bytes(int h, int w, int k) { return dwb_carve(NULL, h, w, k, NULL); }

/* 16 fp32 lanes added up in double: lanes j and j + 8, then a fixed tree of 8 */
INL BF16 double lane_sum(__m512 v)
{
    const __m512d a = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    const __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
    return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
}

/* g (K x K) += the correlation of a plane's dy with its input x: g[ky][kx] = sum over y,
 * x of dy[y][x] x[y + ky - P][x + kx - P] (zero outside), from zero-padded bf16 copies
 * (dyp: rows of rd, zero past w; xp: rows of rx, row r and column i holding x[r - P][i -
 * P]), as 16 fp32 lanes of pairs of pixels (rows of 32 pixels; per tap the rows of dy
 * in order) added up per tap in double (lane_sum). KX kernel columns from kx0 at a
 * time (K x KX accumulators): each row of xp is loaded once per column and multiplied
 * by the K rows of dy that meet it. */
INL BF16 void dwg_cols(const int K, const int KX, int kx0, float *g, const uint16_t *dyp, int rd,
                       const uint16_t *xp, int rx, int h, int w)
{
    __m512 s[KMAX][3];
    _Pragma("GCC unroll 7") for (int ky = 0; ky < K; ky++)
        _Pragma("GCC unroll 3") for (int j = 0; j < KX; j++) s[ky][j] = _mm512_setzero_ps();
    for (int x0 = 0; x0 < w; x0 += 32)
        for (int r = 0; r < h + K - 1; r++) {
            __m512bh xv[3];
            _Pragma("GCC unroll 3") for (int j = 0; j < KX; j++)
                xv[j] = (__m512bh)_mm512_loadu_si512(xp + (size_t)r * rx + x0 + kx0 + j);
            _Pragma("GCC unroll 7") for (int ky = 0; ky < K; ky++) {
                const int y = r - ky; /* the row of dy that meets row r of xp at tap ky */
                if (y < 0 || y >= h) continue;
                const __m512bh dv = (__m512bh)_mm512_loadu_si512(dyp + (size_t)y * rd + x0);
                _Pragma("GCC unroll 3") for (int j = 0; j < KX; j++) s[ky][j] = _mm512_dpbf16_ps(s[ky][j], dv, xv[j]);
            }
        }
    /* (unrolled too: an index known only at run time would keep s in memory) */
    _Pragma("GCC unroll 7") for (int ky = 0; ky < K; ky++)
        _Pragma("GCC unroll 3") for (int j = 0; j < KX; j++) g[ky * K + kx0 + j] += (float)lane_sum(s[ky][j]);
}

/* dwg_cols over the whole kernel, after the padded copies of the plane's dy and x */
static BF16 void dwg_plane(int k, float *g, const uint16_t *dy, const uint16_t *x, int h, int w, uint16_t *dyp,
                           uint16_t *xp)
{
    const int p = k / 2, rd = (int)((w + 31) / 32 * 32), rx = rd + 2 * KMAX;
    for (int y = 0; y < h; y++)
        for (int i = 0; i < rd; i += 32)
            _mm512_storeu_si512(dyp + (size_t)y * rd + i, _mm512_maskz_loadu_epi16(span32(0, w - i), dy + (size_t)y * w + i));
    for (int r = 0; r < h + 2 * p; r++) {
        uint16_t *o = xp + (size_t)r * rx;
        if (r < p || r >= h + p) {
            memset(o, 0, (size_t)rx * sizeof *o);
            continue;
        }
        for (int i = 0; i < rx; i += 32) /* o[i] = x[r - p][i - p] */
            _mm512_storeu_si512(o + i, _mm512_maskz_loadu_epi16(span32(p - i, w + p - i),
                                                                 x + (ptrdiff_t)(r - p) * w + i - p));
    }
    switch (k) {
    case 1: dwg_cols(1, 1, 0, g, dyp, rd, xp, rx, h, w); break;
    case 3: dwg_cols(3, 3, 0, g, dyp, rd, xp, rx, h, w); break;
    case 5: dwg_cols(5, 3, 0, g, dyp, rd, xp, rx, h, w), dwg_cols(5, 2, 3, g, dyp, rd, xp, rx, h, w); break;
    case 7:
        dwg_cols(7, 3, 0, g, dyp, rd, xp, rx, h, w), dwg_cols(7, 3, 3, g, dyp, rd, xp, rx, h, w);
        dwg_cols(7, 1, 6, g, dyp, rd, xp, rx, h, w);
        break;
    default: break;
    }
}

BF16 void npred_bf16_dw_backward_image(float *dx, float *dw, float *db, const uint16_t *dy, const uint16_t *x,
                                       const float *wd, int c, int h, int w, int k, void *scratch)
{
    dwb_scr s = {0};
    dwb_carve(&s, h, w, k, scratch);
    const size_t hw = (size_t)h * w;
    for (int ch = 0; ch < c; ch++) {
        const uint16_t *d = dy + (size_t)ch * hw;
        if (db) { /* 16 lanes of pixels (lane j: the pixels j mod 16), in order */
            __m512 a = _mm512_setzero_ps();
            for (size_t j = 0; j < hw; j += 16) {
                const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes((long)(hw - j)), d + j));
                a = _mm512_add_ps(a, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
            }
            db[ch] += (float)lane_sum(a);
        }
        if (dw) {
            float *g = dw + (size_t)ch * k * k;
            const uint16_t *xc = x + (size_t)ch * hw;
            dwg_plane(k, g, d, xc, h, w, s.dyp, s.xp);
        }
        if (dx) { /* the forward's kernel with the kernel rotated by 180 degrees */
            float f[KMAX * KMAX];
            const float *wc = wd + (size_t)ch * k * k;
            for (int i = 0; i < k * k; i++) f[i] = wc[k * k - 1 - i];
            dw_weights(s.wdp, f, k);
            dw_pairs(s.prow, s.ps, d, h, w, k);
            dw_plane(dx + (size_t)ch * hw, h, w, k, s.prow, s.ps, s.wdp);
        }
    }
}
