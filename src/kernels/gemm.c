/* Convolution GEMMs (see gemm.h): AVX-512 micro-kernels with an OpenBLAS fallback.
 *
 * nn: blocks of up to 8 rows of C x 3 vectors (48 columns) held in 24 zmm
 *     accumulators; per k one row of B is loaded (3 vectors) and 8 values of A
 *     are broadcast. The columns run outermost, so a 48-column panel of B (k rows)
 *     stays in L1 while every row block of C passes over it; the next panel is
 *     prefetched during the first row blocks.
 * nt: chunks of B transposed (16 x 16 tiles) and multiplied as nn, so every
 *     element of C is the sequential sum over n, like nn's over k.
 * Tails (columns past a multiple of 16) use masked loads and stores, so nothing
 * outside the operands is read or written. */
#include "kernels/gemm.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f")))
#define INL static inline __attribute__((always_inline))

static int g_mode = -1; /* -1: not decided yet */

static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

int npred_gemm_use_avx512(int want)
{
    int have = cpu_has_avx512();
    g_mode = want < 0 ? have : (want && have);
    return g_mode;
}

int npred_gemm_avx512_active(void)
{
    int m = __atomic_load_n(&g_mode, __ATOMIC_RELAXED);
    if (m < 0) {
        m = cpu_has_avx512();
        __atomic_store_n(&g_mode, m, __ATOMIC_RELAXED);
    }
    return m;
}

/* ---------------------------------------------------------------- nn */

#define NN_MR 8 /* at most; 8 rows x 3 vectors or 6 rows x 4 vectors */
#define NN_NV 4

INL AVX512 void nn_block(const int MR, const int NV, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, const float *bias,
                         const __mmask16 *mk, const float *pf, int npf)
{
    __m512 s[NN_MR][NN_NV];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++)
            s[r][v] = acc    ? _mm512_maskz_loadu_ps(mk[v], c + r * ldc + 16 * v)
                      : bias ? _mm512_set1_ps(bias[r])
                             : _mm512_setzero_ps();
    for (int p = 0; p < k; p++) {
        const float *br = b + p * ldb;
        __m512 bv[NN_NV];
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) bv[v] = _mm512_maskz_loadu_ps(mk[v], br + 16 * v);
        if (p < npf) _mm_prefetch((const char *)(pf + p * ldb), _MM_HINT_T0);
        const float *ar = a + p * acs;
        _Pragma("GCC unroll 8")
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(ar[r * ars]);
            _Pragma("GCC unroll 8")
            for (int v = 0; v < NV; v++) s[r][v] = _mm512_fmadd_ps(av, bv[v], s[r][v]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mk[v], s[r][v]);
}

#define NN_CASE(MR, NV) \
    case (MR) * 8 + (NV): nn_block(MR, NV, k, a, ars, acs, b, ldb, c, ldc, acc, bias, mk, pf, npf); break;

static AVX512 void nn_block_any(int mr, int nv, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                                const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, const float *bias,
                                const __mmask16 *mk, const float *pf, int npf)
{
    switch (mr * 8 + nv) {
        NN_CASE(1, 1) NN_CASE(2, 1) NN_CASE(3, 1) NN_CASE(4, 1) NN_CASE(5, 1) NN_CASE(6, 1) NN_CASE(7, 1) NN_CASE(8, 1)
        NN_CASE(1, 2) NN_CASE(2, 2) NN_CASE(3, 2) NN_CASE(4, 2) NN_CASE(5, 2) NN_CASE(6, 2) NN_CASE(7, 2) NN_CASE(8, 2)
        NN_CASE(1, 3) NN_CASE(2, 3) NN_CASE(3, 3) NN_CASE(4, 3) NN_CASE(5, 3) NN_CASE(6, 3) NN_CASE(7, 3) NN_CASE(8, 3)
        NN_CASE(1, 4) NN_CASE(2, 4) NN_CASE(3, 4) NN_CASE(4, 4) NN_CASE(5, 4) NN_CASE(6, 4)
    default: break;
    }
}

/* panels of 64 columns (6-row blocks) when n is a multiple of 64, else of 48
 * (8-row blocks): 24 accumulators either way. A long k is cut into blocks of
 * NN_KB (outermost), so that a block's slice of A and each panel of B stay in
 * L1/L2 while C (stored and reloaded exactly between blocks) takes the traffic:
 * every element of C is still the sum over k in order, the same bits as one
 * sweep. With bias (and acc 0), row i of C starts from bias[i] instead of zero:
 * the bits of C filled with the bias and accumulated into, without that pass. */
#define NN_KB 128

static AVX512 void nn_avx512(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                             ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, const float *bias)
{
    const int NVP = n % 64 == 0 ? 4 : 3, NR = 16 * NVP, MRP = NVP == 4 ? 6 : 8;
    for (int p0 = 0; p0 == 0 || p0 < k; p0 += NN_KB) {
        const int kb = k - p0 < NN_KB ? k - p0 : NN_KB, first = p0 == 0 ? acc : 1;
        const float *ak = a + p0 * acs, *bk = b + p0 * ldb;
        for (int j = 0; j < n; j += NR) {
            int w = n - j < NR ? n - j : NR;
            int nv = (w + 15) / 16;
            __mmask16 mk[NN_NV];
            for (int v = 0; v < NN_NV; v++) {
                int left = w - 16 * v;
                mk[v] = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            }
            /* the next panel's cache lines (one per row and 16 columns), spread over
             * the first row blocks: row block i fetches column group i of every row */
            int next = n - (j + NR);
            int groups = next <= 0 ? 0 : next >= NR ? NVP : (next + 15) / 16;
            for (int i = 0, blk = 0; i < m; i += MRP, blk++) {
                int mr = m - i < MRP ? m - i : MRP;
                const float *pf = bk + j + NR + 16 * blk;
                nn_block_any(mr, nv, kb < 0 ? 0 : kb, ak + i * ars, ars, acs, bk + j, ldb, c + i * ldc + j, ldc, first,
                             bias ? bias + i : NULL, mk, pf, blk < groups ? kb : 0);
            }
        }
    }
}

void npred_gemm_nn(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                   ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate)
{
    if (m <= 0 || n <= 0) return;
    if (npred_gemm_avx512_active()) {
        nn_avx512(m, n, k, a, ars, acs, b, ldb, c, ldc, accumulate, NULL);
        return;
    }
    /* A stored transposed (A(i, p) = a[p * acs + i]) or row-major; a stride that
     * is never used (one row, one column) still has to satisfy sgemm's checks */
    int trans = acs != 1;
    ptrdiff_t lda = trans ? acs : ars;
    if (trans && k == 1 && lda < m) lda = m;
    if (!trans && m == 1 && lda < k) lda = k;
    cblas_sgemm(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, (int)lda, b,
                (int)ldb, accumulate ? 1.0f : 0.0f, c, (int)ldc);
}

void npred_gemm_nn_bias(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                        ptrdiff_t ldb, const float *bias, float *c, ptrdiff_t ldc)
{
    if (m <= 0 || n <= 0) return;
    if (npred_gemm_avx512_active()) {
        nn_avx512(m, n, k, a, ars, acs, b, ldb, c, ldc, 0, bias);
        return;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i * ldc + j] = bias[i];
    npred_gemm_nn(m, n, k, a, ars, acs, b, ldb, c, ldc, 1);
}

/* ---------------------------------------------------------------- nt */

/* dst (16 x 16, row stride ds) = src (16 x 16, row stride ss)^T */
INL AVX512 void tr16(float *dst, ptrdiff_t ds, const float *src, ptrdiff_t ss)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ss);
    for (int i = 0; i < 8; i++) { /* pairs of rows interleaved within 128-bit lanes */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* r[4g + j], lane block L: column 4L + j of rows 4g..4g+3 */
        __m512d a0 = _mm512_castps_pd(t[4 * g]), a1 = _mm512_castps_pd(t[4 * g + 1]);
        __m512d b0 = _mm512_castps_pd(t[4 * g + 2]), b1 = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    for (int j = 0; j < 4; j++) { /* 4 x 4 transpose of the 128-bit blocks */
        __m512 v0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44), v1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
        _mm512_storeu_ps(dst + (0 + j) * ds, _mm512_shuffle_f32x4(v0, v2, 0x88));
        _mm512_storeu_ps(dst + (4 + j) * ds, _mm512_shuffle_f32x4(v0, v2, 0xDD));
        _mm512_storeu_ps(dst + (8 + j) * ds, _mm512_shuffle_f32x4(v1, v3, 0x88));
        _mm512_storeu_ps(dst + (12 + j) * ds, _mm512_shuffle_f32x4(v1, v3, 0xDD));
    }
}

/* bt (np x l, row stride l) = columns p0 .. p0+np-1 of b (l x ., row stride ldb), transposed */
static AVX512 void transpose_cols(float *bt, const float *b, ptrdiff_t ldb, int l, int p0, int np, const float *pf,
                                  int npf)
{
    int q = 0;
    for (; q + 16 <= l; q += 16) {
        int p = 0;
        /* the next chunk's lines of these rows (pf: its first column, npf columns):
         * B is read in short runs of many rows, which the hardware does not foresee */
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < npf; j += 16) _mm_prefetch((const char *)(pf + (q + i) * ldb + j), _MM_HINT_T0);
        for (; p + 16 <= np; p += 16) tr16(bt + (ptrdiff_t)p * l + q, l, b + q * ldb + p0 + p, ldb);
        for (; p < np; p++)
            for (int i = 0; i < 16; i++) bt[(ptrdiff_t)p * l + q + i] = b[(q + i) * ldb + p0 + p];
    }
    for (; q < l; q++)
        for (int p = 0; p < np; p++) bt[(ptrdiff_t)p * l + q] = b[q * ldb + p0 + p];
}

/* Floats of B per transposed chunk (the chunk, np x lb floats, stays in L1/L2). */
#define NT_CHUNK_FLOATS 8192
#define NT_LB 96 /* rows of B (columns of C) per block when l is larger than NT_MAX_L */
#define NT_MAX_L 512

/* nt as an nn product over chunks of n: C += A[:, chunk] . (B[:, chunk])^T with
 * the chunk of B transposed first, so the 24 accumulators run along l and each
 * element of C is the sequential sum over n (the chunking does not change it:
 * C is stored and reloaded exactly between chunks). A long l (the dW of a
 * convolution with many input channels x taps) is cut into blocks of NT_LB
 * columns of C, each swept over n alone: the same sums, chunks of n long enough
 * for the micro-kernel, and B read once (A, m x n, is reread per block from L2). */
static AVX512 void nt_avx512(int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                             float *c, ptrdiff_t ldc)
{
    float bt[NT_CHUNK_FLOATS] __attribute__((aligned(64)));
    const int lb = l > NT_MAX_L ? NT_LB : l;
    for (int q0 = 0; q0 < l; q0 += lb) {
        const int lq = l - q0 < lb ? l - q0 : lb;
        int chunk = NT_CHUNK_FLOATS / lq / 16 * 16;
        if (chunk < 16) chunk = 16;
        for (int p0 = 0; p0 < n; p0 += chunk) {
            int np = n - p0 < chunk ? n - p0 : chunk;
            /* prefetched: the next chunk of these rows, else the first of the next block */
            const float *pf = p0 + np < n ? b + (ptrdiff_t)q0 * ldb + p0 + np : b + (ptrdiff_t)(q0 + lq) * ldb;
            int npf = p0 + np < n ? (n - p0 - np < chunk ? n - p0 - np : chunk) : q0 + lq < l ? chunk : 0;
            transpose_cols(bt, b + (ptrdiff_t)q0 * ldb, ldb, lq, p0, np, pf, npf);
            nn_avx512(m, lq, np, a + p0, lda, 1, bt, lq, c + q0, ldc, 1, NULL);
        }
    }
}

void npred_gemm_nt(int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                   float *c, ptrdiff_t ldc)
{
    if (m <= 0 || l <= 0 || n <= 0) return;
    if (npred_gemm_avx512_active()) {
        nt_avx512(m, l, n, a, lda, b, ldb, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, l, n, 1.0f, a, (int)lda, b, (int)ldb, 1.0f, c,
                (int)ldc);
}

/* ---------------------------------------------------------------- pointwise backward */

/* Both GEMMs of a 1x1 convolution's backward in one pass over the pixels, chunk by
 * chunk of nt's size: the chunk of X is transposed and dW += dY[:, chunk] . X[:, chunk]^T
 * (nt's step), then dX[:, chunk] = [dX +] W^T . dY[:, chunk] while that chunk of dY
 * is still in L1/L2 (the separate calls read all of dY twice). Every element of dW
 * is the sum over n in order, of dX the sum over m in order: the bits of nt and nn. */
/* With db, each row's sum of dY is also formed in that pass: 16 float lanes (lane j
 * takes the pixels p = j mod 16, in order) added up in double and then to db, the
 * bits of npred_conv2d_bias_grad over this one image (m <= PW_BIAS_MAX). */
#define PW_BIAS_MAX 256

static AVX512 void pw_bwd_avx512(int m, int l, int n, const float *w, const float *dy, const float *x, float *dw,
                                 float *dx, int acc, float *db)
{
    float bt[NT_CHUNK_FLOATS] __attribute__((aligned(64)));
    __m512 lanes[PW_BIAS_MAX];
    if (db)
        for (int o = 0; o < m; o++) lanes[o] = _mm512_setzero_ps();
    int chunk = NT_CHUNK_FLOATS / l / 16 * 16;
    if (chunk < 16) chunk = 16;
    for (int p0 = 0; p0 < n; p0 += chunk) {
        const int np = n - p0 < chunk ? n - p0 : chunk;
        if (dw) {
            const int nxt = n - p0 - np < chunk ? n - p0 - np : chunk;
            transpose_cols(bt, x, n, l, p0, np, x + p0 + np, nxt);
            nn_avx512(m, l, np, dy + p0, n, 1, bt, l, dw, l, 1, NULL);
        }
        if (db) /* chunks start at multiples of 16: vector lane j holds the pixels j mod 16 */
            for (int o = 0; o < m; o++) {
                const float *d = dy + (ptrdiff_t)o * n + p0;
                __m512 a = lanes[o];
                int q = 0;
                for (; q + 16 <= np; q += 16) a = _mm512_add_ps(a, _mm512_loadu_ps(d + q));
                if (q < np) {
                    const __mmask16 t = (__mmask16)((1u << (np - q)) - 1);
                    a = _mm512_mask_add_ps(a, t, a, _mm512_maskz_loadu_ps(t, d + q));
                }
                lanes[o] = a;
            }
        if (dx) nn_avx512(l, np, m, w, 1, l, dy + p0, n, dx + p0, n, acc, NULL);
    }
    if (db)
        for (int o = 0; o < m; o++) {
            float v[16];
            _mm512_storeu_ps(v, lanes[o]);
            double sum = 0;
            for (int j = 0; j < 16; j++) sum += v[j];
            db[o] += (float)sum;
        }
}

void npred_gemm_pointwise_backward(int m, int l, int n, const float *w, const float *dy, const float *x, float *dw,
                                   float *dx, int accumulate)
{
    if (m <= 0 || l <= 0 || n <= 0) return;
    if (npred_gemm_avx512_active() && l <= NT_MAX_L) {
        pw_bwd_avx512(m, l, n, w, dy, x, dw, dx, accumulate, NULL);
        return;
    }
    if (dw) npred_gemm_nt(m, l, n, dy, n, x, n, dw, l);
    if (dx) npred_gemm_nn(l, n, m, w, 1, l, dy, n, dx, n, accumulate);
}

int npred_gemm_pointwise_backward_bias(int m, int l, int n, const float *w, const float *dy, const float *x,
                                       float *dw, float *db, float *dx, int accumulate)
{
    if (m <= 0 || l <= 0 || n <= 0 || !(npred_gemm_avx512_active() && l <= NT_MAX_L && m <= PW_BIAS_MAX)) return -1;
    pw_bwd_avx512(m, l, n, w, dy, x, dw, dx, accumulate, db);
    return 0;
}

/* ---------------------------------------------------------------- conv dW from the input */

/* C (MR x NV vectors, row stride ldc) += A . B over the k = nrow * ow pixels of a chunk
 * of output rows, A's rows given by pointers: A(r, j * ow + q) = ar[r][j * ars + q]
 * (the input row of filter tap r under output row j), B (k x 16 NV, row stride ldb). */
INL AVX512 void rows_dw_block(const int MR, const int NV, int nrow, int ow, const float *const *ar, ptrdiff_t ars,
                              const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, const __mmask16 *mk)
{
    __m512 s[NN_MR][NN_NV];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) s[r][v] = _mm512_maskz_loadu_ps(mk[v], c + r * ldc + 16 * v);
    for (int j = 0; j < nrow; j++) {
        const float *a[NN_MR];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < MR; r++) a[r] = ar[r] + j * ars;
        const float *bj = b + (ptrdiff_t)j * ow * ldb;
        for (int q = 0; q < ow; q++) {
            __m512 bv[NN_NV];
            _Pragma("GCC unroll 8")
            for (int v = 0; v < NV; v++) bv[v] = _mm512_maskz_loadu_ps(mk[v], bj + q * ldb + 16 * v);
            _Pragma("GCC unroll 8")
            for (int r = 0; r < MR; r++) {
                __m512 av = _mm512_set1_ps(a[r][q]);
                _Pragma("GCC unroll 8")
                for (int v = 0; v < NV; v++) s[r][v] = _mm512_fmadd_ps(av, bv[v], s[r][v]);
            }
        }
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mk[v], s[r][v]);
}

#define RD_CASE(MR, NV) \
    case (MR) * 8 + (NV): rows_dw_block(MR, NV, nrow, ow, ar, ars, b, ldb, c, ldc, mk); break;

static AVX512 void rows_dw_any(int mr, int nv, int nrow, int ow, const float *const *ar, ptrdiff_t ars,
                               const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, const __mmask16 *mk)
{
    switch (mr * 8 + nv) {
        RD_CASE(1, 1) RD_CASE(2, 1) RD_CASE(3, 1) RD_CASE(4, 1) RD_CASE(5, 1) RD_CASE(6, 1) RD_CASE(7, 1) RD_CASE(8, 1)
        RD_CASE(1, 2) RD_CASE(2, 2) RD_CASE(3, 2) RD_CASE(4, 2) RD_CASE(5, 2) RD_CASE(6, 2) RD_CASE(7, 2) RD_CASE(8, 2)
        RD_CASE(1, 3) RD_CASE(2, 3) RD_CASE(3, 3) RD_CASE(4, 3) RD_CASE(5, 3) RD_CASE(6, 3) RD_CASE(7, 3) RD_CASE(8, 3)
        RD_CASE(1, 4) RD_CASE(2, 4) RD_CASE(3, 4) RD_CASE(4, 4) RD_CASE(5, 4) RD_CASE(6, 4)
    default: break;
    }
}

/* The product is formed transposed, T (l x m) = A . dY^T, so that the vectors run
 * along the m output channels (all lanes used for m = 64, where dW's rows of l = 81
 * taps fill 48-column panels to 84 %) and the taps are broadcast straight from the
 * input; dY is transposed chunk by chunk of whole output rows. */
static AVX512 void conv_dw_avx512(int m, int l, int oh, int ow, const float *dy, const float *x,
                                  const ptrdiff_t *off, ptrdiff_t xrs, float *dw, ptrdiff_t ldw, float *t)
{
    float bt[NT_CHUNK_FLOATS] __attribute__((aligned(64)));
    const int n = oh * ow;
    /* chunks of whole output rows, or of one row's columns when a row of dY^T is
     * larger than the buffer (m <= NT_CHUNK_FLOATS / 16: the caller checks) */
    const int whole = ow * m <= NT_CHUNK_FLOATS, rows = whole ? NT_CHUNK_FLOATS / (ow * m) : 1;
    const int cw = whole ? ow : NT_CHUNK_FLOATS / m / 16 * 16;
    const int NVP = m % 64 == 0 ? 4 : 3, NR = 16 * NVP, MRP = NVP == 4 ? 6 : 8;
    for (int r = 0; r < l; r++)
        for (int o = 0; o < m; o++) t[(ptrdiff_t)r * m + o] = dw[o * ldw + r];
    for (int y0 = 0, q0 = 0; y0 < oh;) {
        const int nrow = oh - y0 < rows ? oh - y0 : rows, nq = ow - q0 < cw ? ow - q0 : cw;
        const int p0 = y0 * ow + q0, np = nrow * nq, nxt = n - p0 - np < np ? n - p0 - np : np;
        transpose_cols(bt, dy, n, m, p0, np, dy + p0 + np, nxt);
        for (int j = 0; j < m; j += NR) {
            const int w = m - j < NR ? m - j : NR, nv = (w + 15) / 16;
            __mmask16 mk[NN_NV];
            for (int v = 0; v < NN_NV; v++) {
                int left = w - 16 * v;
                mk[v] = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            }
            for (int i = 0; i < l; i += MRP) {
                const int mr = l - i < MRP ? l - i : MRP;
                const float *ar[NN_MR];
                for (int r = 0; r < mr; r++) ar[r] = x + off[i + r] + y0 * xrs + q0;
                rows_dw_any(mr, nv, nrow, nq, ar, xrs, bt + j, m, t + (ptrdiff_t)i * m + j, m, mk);
            }
        }
        q0 += nq;
        if (q0 == ow) q0 = 0, y0 += nrow;
    }
    for (int o = 0; o < m; o++)
        for (int r = 0; r < l; r++) dw[o * ldw + r] = t[(ptrdiff_t)r * m + o];
}

void npred_gemm_conv_dw(int m, int l, int oh, int ow, const float *dy, const float *x, const ptrdiff_t *off,
                        ptrdiff_t xrs, float *dw, ptrdiff_t ldw, float *t)
{
    if (m <= 0 || l <= 0 || oh <= 0 || ow <= 0) return;
    if (npred_gemm_avx512_active() && m <= NT_CHUNK_FLOATS / 16) {
        conv_dw_avx512(m, l, oh, ow, dy, x, off, xrs, dw, ldw, t);
        return;
    }
    /* each element the sum over the pixels in order, as the kernels' */
    for (int o = 0; o < m; o++)
        for (int r = 0; r < l; r++) {
            float s = dw[o * ldw + r];
            for (int y = 0; y < oh; y++)
                for (int q = 0; q < ow; q++) s = fmaf(dy[(ptrdiff_t)o * oh * ow + y * ow + q], x[off[r] + y * xrs + q], s);
            dw[o * ldw + r] = s;
        }
}

/* ---------------------------------------------------------------- bf16
 *
 * C = [C +] round_bf16(A) . round_bf16(B) with fp32 accumulation (vdpbf16ps: per
 * fp32 lane, the products of a pair of bf16 values along k are added to the
 * lane). The operands are packed per block into pairs (element 2t in the low
 * half of a 32-bit word, 2t + 1 in the high half; an odd last element pairs with
 * zero), rounded to nearest even by the conversion instructions (masked loads for
 * every tail, so every value goes through the same instruction):
 *   A block: BF_MC rows x BF_KP pairs, as 32-bit words, row-major when A is
 *            (pairs are adjacent floats) or pair-major when A is transposed
 *            (pairs come from two rows of the stored matrix);
 *   B panel: BF_KP pairs x up to 64 columns, 16-word vectors along the columns.
 * The micro-kernel is the fp32 one's: 8 rows x 3 vectors or 6 rows x 4 vectors of
 * accumulators, one broadcast pair of A per row and pair index. k is cut into
 * chunks of 2 BF_KP; C is stored in fp32 between chunks. The order of the sums
 * depends on the shapes alone (not on how callers split rows or images). */

#define BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define BF_KP 128 /* pairs of k per chunk */
#define BF_MC 96  /* rows of A per packed block */

static int g_bf16 = -1;

int npred_gemm_bf16_available(void)
{
    int m = __atomic_load_n(&g_bf16, __ATOMIC_RELAXED);
    if (m < 0) {
        __builtin_cpu_init();
        m = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512bf16");
        __atomic_store_n(&g_bf16, m, __ATOMIC_RELAXED);
    }
    return m;
}

static inline __mmask16 bf_mask(int left) { return left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0; }

/* 32 floats (f0: 16 elements 2t, f1: the 16 elements 2t + 1) -> 16 pairs */
INL BF16 __m512i bf_interleave(__m512 f0, __m512 f1)
{
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
}

/* up to 32 adjacent floats (cnt of them, the rest zero) -> 16 pairs in order */
INL BF16 __m512i bf_adjacent(const float *x, int cnt)
{
    __m512 lo = _mm512_maskz_loadu_ps(bf_mask(cnt), x), hi = _mm512_maskz_loadu_ps(bf_mask(cnt - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* pairs (row0[j], row1[j]) for j < cnt (row1 NULL: zeros), zero past cnt, into
 * dst[0 .. 16 * ceil(cnt / 16)) */
static BF16 void bf_pack_rows(uint32_t *dst, const float *row0, const float *row1, int cnt)
{
    for (int j = 0; j < cnt; j += 16) {
        __mmask16 mk = bf_mask(cnt - j);
        __m512 f0 = _mm512_maskz_loadu_ps(mk, row0 + j);
        __m512 f1 = row1 ? _mm512_maskz_loadu_ps(mk, row1 + j) : _mm512_setzero_ps();
        _mm512_storeu_si512(dst + j, bf_interleave(f0, f1));
    }
}

/* A(i, p) = a[i * ars + p * acs] for i < mc, p < kc -> packed words; returns the
 * strides (in words) of the packed block along rows and pairs */
static BF16 void bf_pack_a(uint32_t *ap, ptrdiff_t *prs, ptrdiff_t *pcs, const float *a, ptrdiff_t ars,
                           ptrdiff_t acs, int mc, int kc)
{
    const int kp = (kc + 1) / 2;
    if (acs == 1) { /* rows of adjacent pairs */
        *prs = BF_KP, *pcs = 1;
        for (int i = 0; i < mc; i++)
            for (int q = 0; q < kp; q += 16) {
                __m512i v = bf_adjacent(a + i * ars + 2 * q, kc - 2 * q);
                _mm512_mask_storeu_epi32(ap + (ptrdiff_t)i * BF_KP + q, bf_mask(kp - q), v);
            }
    } else { /* A transposed (ars == 1): pairs from rows 2q and 2q + 1 of the stored matrix */
        const ptrdiff_t ld = (mc + 15) / 16 * 16;
        *prs = 1, *pcs = ld;
        for (int q = 0; q < kp; q++)
            bf_pack_rows(ap + q * ld, a + 2 * q * acs, 2 * q + 1 < kc ? a + (2 * q + 1) * acs : NULL, mc);
    }
}

/* B(p, j) = b[p * brs + j * bcs] for p < kc, j < w -> bp[q * ldp + j] (pair q),
 * columns w .. 16 * ceil(w / 16) zero */
static BF16 void bf_pack_b(uint32_t *bp, ptrdiff_t ldp, const float *b, ptrdiff_t brs, ptrdiff_t bcs, int kc, int w)
{
    const int kp = (kc + 1) / 2;
    if (bcs == 1) {
        for (int q = 0; q < kp; q++)
            bf_pack_rows(bp + q * ldp, b + 2 * q * brs, 2 * q + 1 < kc ? b + (2 * q + 1) * brs : NULL, w);
        return;
    }
    /* B stored transposed (brs == 1): column j's pairs are adjacent; 16 columns x
     * 16 pairs at a time through a tile, transposed as 32-bit words */
    uint32_t tile[16 * 16] __attribute__((aligned(64)));
    for (int j = 0; j < w; j += 16)
        for (int q = 0; q < kp; q += 16) {
            for (int r = 0; r < 16; r++)
                _mm512_store_si512(tile + 16 * r, j + r < w ? bf_adjacent(b + (j + r) * bcs + 2 * q, kc - 2 * q)
                                                             : _mm512_setzero_si512());
            if (kp - q >= 16) {
                tr16((float *)(bp + q * ldp + j), ldp, (const float *)tile, 16);
            } else {
                float tt[16 * 16] __attribute__((aligned(64)));
                tr16(tt, 16, (const float *)tile, 16);
                for (int r = 0; q + r < kp; r++) memcpy(bp + (q + r) * ldp + j, tt + 16 * r, 64);
            }
        }
}

INL BF16 void bf_block(const int MR, const int NV, int kp, const uint32_t *ap, ptrdiff_t prs, ptrdiff_t pcs,
                       const uint32_t *bp, ptrdiff_t ldp, float *c, ptrdiff_t ldc, int acc, const __mmask16 *mk)
{
    __m512 s[NN_MR][NN_NV];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++)
            s[r][v] = acc ? _mm512_maskz_loadu_ps(mk[v], c + r * ldc + 16 * v) : _mm512_setzero_ps();
    for (int q = 0; q < kp; q++) {
        const uint32_t *br = bp + q * ldp;
        __m512bh bv[NN_NV];
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) bv[v] = (__m512bh)_mm512_load_si512(br + 16 * v);
        const uint32_t *ar = ap + q * pcs;
        _Pragma("GCC unroll 8")
        for (int r = 0; r < MR; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)ar[r * prs]);
            _Pragma("GCC unroll 8")
            for (int v = 0; v < NV; v++) s[r][v] = _mm512_dpbf16_ps(s[r][v], av, bv[v]);
        }
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < MR; r++)
        _Pragma("GCC unroll 8")
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mk[v], s[r][v]);
}

#define BF_CASE(MR, NV) \
    case (MR) * 8 + (NV): bf_block(MR, NV, kp, ap, prs, pcs, bp, ldp, c, ldc, acc, mk); break;

static BF16 void bf_block_any(int mr, int nv, int kp, const uint32_t *ap, ptrdiff_t prs, ptrdiff_t pcs,
                              const uint32_t *bp, ptrdiff_t ldp, float *c, ptrdiff_t ldc, int acc,
                              const __mmask16 *mk)
{
    switch (mr * 8 + nv) {
        BF_CASE(1, 1) BF_CASE(2, 1) BF_CASE(3, 1) BF_CASE(4, 1) BF_CASE(5, 1) BF_CASE(6, 1) BF_CASE(7, 1) BF_CASE(8, 1)
        BF_CASE(1, 2) BF_CASE(2, 2) BF_CASE(3, 2) BF_CASE(4, 2) BF_CASE(5, 2) BF_CASE(6, 2) BF_CASE(7, 2) BF_CASE(8, 2)
        BF_CASE(1, 3) BF_CASE(2, 3) BF_CASE(3, 3) BF_CASE(4, 3) BF_CASE(5, 3) BF_CASE(6, 3) BF_CASE(7, 3) BF_CASE(8, 3)
        BF_CASE(1, 4) BF_CASE(2, 4) BF_CASE(3, 4) BF_CASE(4, 4) BF_CASE(5, 4) BF_CASE(6, 4)
    default: break;
    }
}

/* C (m x n) = [C +] A . B, A(i, p) = a[i * ars + p * acs], B(p, j) = b[p * brs + j * bcs] */
static BF16 void bf_gemm(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                         ptrdiff_t brs, ptrdiff_t bcs, float *c, ptrdiff_t ldc, int acc)
{
    uint32_t apk[BF_MC * BF_KP] __attribute__((aligned(64)));
    uint32_t bpk[BF_KP * 64] __attribute__((aligned(64)));
    const int NVP = n % 64 == 0 ? 4 : 3, NR = 16 * NVP, MRP = NVP == 4 ? 6 : 8;
    if (k <= 0) { /* an empty sum: C = C or 0 */
        if (!acc)
            for (int i = 0; i < m; i++) memset(c + i * ldc, 0, sizeof *c * (size_t)n);
        return;
    }
    for (int p0 = 0; p0 < k; p0 += 2 * BF_KP) {
        const int kc = k - p0 < 2 * BF_KP ? k - p0 : 2 * BF_KP, kp = (kc + 1) / 2;
        const int first = p0 == 0 ? acc : 1;
        for (int i0 = 0; i0 < m; i0 += BF_MC) {
            const int mc = m - i0 < BF_MC ? m - i0 : BF_MC;
            ptrdiff_t prs, pcs;
            bf_pack_a(apk, &prs, &pcs, a + i0 * ars + p0 * acs, ars, acs, mc, kc);
            for (int j = 0; j < n; j += NR) {
                const int w = n - j < NR ? n - j : NR, nv = (w + 15) / 16;
                __mmask16 mk[NN_NV];
                for (int v = 0; v < NN_NV; v++) mk[v] = bf_mask(w - 16 * v);
                bf_pack_b(bpk, NR, b + p0 * brs + j * bcs, brs, bcs, kc, w);
                for (int i = 0; i < mc; i += MRP) {
                    const int mr = mc - i < MRP ? mc - i : MRP;
                    bf_block_any(mr, nv, kp, apk + i * prs, prs, pcs, bpk, NR, c + (i0 + i) * ldc + j, ldc, first,
                                 mk);
                }
            }
        }
    }
}

int npred_gemm_nn_bf16(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t acs, const float *b,
                       ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate)
{
    if (!npred_gemm_bf16_available()) return -1;
    if (m > 0 && n > 0) bf_gemm(m, n, k, a, ars, acs, b, ldb, 1, c, ldc, accumulate);
    return 0;
}

int npred_gemm_nt_bf16(int m, int l, int n, const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                       ptrdiff_t ldc)
{
    if (!npred_gemm_bf16_available()) return -1;
    if (m > 0 && l > 0 && n > 0) bf_gemm(m, l, n, a, lda, 1, b, 1, ldb, c, ldc, 1);
    return 0;
}

/* ---------------------------------------------------------------- bf16, packed once
 *
 * For products too large to repack per block (the FullFactorized2d readout's
 * three GEMMs: k and n in the thousands), both operands are packed once into
 * caller memory, in parallel, and the blocks then read them in place:
 *   A: row-major pairs (word A[i * kp + q]) or pair-major (word A[q * mp + i],
 *      mp = m rounded up to 16), whichever the stored layout gives cheaply;
 *   B: panels of NR columns (64 when n is a multiple of 64, else 48), each panel
 *      kp rows of NR words: word B[(j / NR) * kp * NR + q * NR + j % NR].
 * The k chunks (2 BF_KP), the micro-kernel and so the order of every sum are
 * those of bf_gemm: the result equals npred_gemm_nn_bf16's bit for bit. */

static int bfp_nr(int n) { return n % 64 == 0 ? 64 : 48; }

/* one row of k floats -> (k + 1) / 2 pairs */
static BF16 void bf_pack_a_row(uint32_t *dst, const float *a, int k)
{
    const int kp = (k + 1) / 2;
    for (int q = 0; q < kp; q += 16) _mm512_mask_storeu_epi32(dst + q, bf_mask(kp - q), bf_adjacent(a + 2 * q, k - 2 * q));
}

size_t npred_bf16_packed_a_words(int m, int k, int a_trans)
{
    size_t kp = (size_t)(k + 1) / 2, mp = ((size_t)m + 15) / 16 * 16;
    return a_trans ? kp * mp : (size_t)m * kp;
}

size_t npred_bf16_packed_b_words(int k, int n)
{
    const int nr = bfp_nr(n);
    return (size_t)(k + 1) / 2 * (size_t)((n + nr - 1) / nr) * nr;
}

int npred_bf16_pack_a(uint32_t *ap, int m, int k, const float *a, ptrdiff_t lda, int a_trans, int part, int parts)
{
    if (!npred_gemm_bf16_available()) return -1;
    const int kp = (k + 1) / 2;
    if (!a_trans) { /* rows part of parts */
        const int i0 = (int)((long long)m * part / parts), i1 = (int)((long long)m * (part + 1) / parts);
        for (int i = i0; i < i1; i++) bf_pack_a_row(ap + (size_t)i * kp, a + i * lda, k);
    } else { /* pairs part of parts */
        const ptrdiff_t mp = (m + 15) / 16 * 16;
        const int q0 = (int)((long long)kp * part / parts), q1 = (int)((long long)kp * (part + 1) / parts);
        for (int q = q0; q < q1; q++)
            bf_pack_rows(ap + q * mp, a + 2 * q * lda, 2 * q + 1 < k ? a + (2 * q + 1) * lda : NULL, m);
    }
    return 0;
}

int npred_bf16_pack_b(uint32_t *bp, int k, int n, const float *b, ptrdiff_t brs, ptrdiff_t bcs, int part, int parts)
{
    if (!npred_gemm_bf16_available()) return -1;
    const int nr = bfp_nr(n), np = (n + nr - 1) / nr, kp = (k + 1) / 2;
    const int j0 = (int)((long long)np * part / parts), j1 = (int)((long long)np * (part + 1) / parts);
    for (int jp = j0; jp < j1; jp++) {
        const int j = jp * nr, w = n - j < nr ? n - j : nr;
        bf_pack_b(bp + (size_t)jp * kp * nr, nr, b + j * bcs, brs, bcs, k, w);
    }
    return 0;
}

static BF16 void bfp_gemm(int i0, int i1, int n, int k, const uint32_t *ap, int a_trans, int m, const uint32_t *bp,
                          float *c, ptrdiff_t ldc, int acc)
{
    const int NR = bfp_nr(n), NVP = NR / 16, MRP = NVP == 4 ? 6 : 8, kpt = (k + 1) / 2;
    const ptrdiff_t prs = a_trans ? 1 : kpt, pcs = a_trans ? (m + 15) / 16 * 16 : 1;
    for (int ib = i0; ib < i1; ib += BF_MC) {
        const int mc = i1 - ib < BF_MC ? i1 - ib : BF_MC;
        for (int q0 = 0; q0 < kpt; q0 += BF_KP) {
            const int kp = kpt - q0 < BF_KP ? kpt - q0 : BF_KP, first = q0 == 0 ? acc : 1;
            for (int j = 0; j < n; j += NR) {
                const int w = n - j < NR ? n - j : NR, nv = (w + 15) / 16;
                __mmask16 mk[NN_NV];
                for (int v = 0; v < NN_NV; v++) mk[v] = bf_mask(w - 16 * v);
                const uint32_t *bpj = bp + (size_t)(j / NR) * kpt * NR + (size_t)q0 * NR;
                for (int i = 0; i < mc; i += MRP) {
                    const int mr = mc - i < MRP ? mc - i : MRP;
                    bf_block_any(mr, nv, kp, ap + (ib + i) * prs + q0 * pcs, prs, pcs, bpj, NR,
                                 c + (ptrdiff_t)(ib + i) * ldc + j, ldc, first, mk);
                }
            }
        }
    }
}

int npred_gemm_bf16_packed(int m, int n, int k, const uint32_t *ap, int a_trans, const uint32_t *bp, float *c,
                           ptrdiff_t ldc, int accumulate, int part, int parts)
{
    if (!npred_gemm_bf16_available()) return -1;
    if (m <= 0 || n <= 0) return 0;
    /* blocks of BF_MC rows, part of parts of them */
    const int nb = (m + BF_MC - 1) / BF_MC;
    const int b0 = (int)((long long)nb * part / parts), b1 = (int)((long long)nb * (part + 1) / parts);
    const int i0 = b0 * BF_MC, i1 = b1 * BF_MC < m ? b1 * BF_MC : m;
    if (i0 >= i1) return 0;
    if (k <= 0) {
        if (!accumulate)
            for (int i = i0; i < i1; i++) memset(c + i * ldc, 0, sizeof *c * (size_t)n);
        return 0;
    }
    bfp_gemm(i0, i1, n, k, ap, a_trans, m, bp, c, ldc, accumulate);
    return 0;
}
