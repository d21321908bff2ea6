/* The bf16 convolution GEMMs (kernels/gemm.h, npred_gemm_nn_bf16 / _nt_bf16, and
 * the packed-once npred_gemm_bf16_packed)
 * against double-precision references written here:
 *   - on the inputs rounded to bf16 by this file's own round-to-nearest-even:
 *     equal up to fp32 accumulation (a float computation on the unrounded
 *     inputs would miss this bound by far: each input's rounding is up to 2^-8);
 *   - on the fp32 inputs: within the bf16 bound 2^-7 + 2^-16 (two roundings of
 *     2^-8 per product, + accumulation) of the sum
 *     of |terms|;
 * for every tail of the register blocks, the packed blocks and chunks (rows past
 * 96, k past 256, odd k), both layouts of A, overwrite and accumulate; the sums'
 * order depends on the shapes alone (nt equals nn on the transposed operand, a
 * product equals its rows computed apart, bit for bit). On a CPU without AVX-512
 * BF16 the functions must refuse (-1) and leave C alone. */
#include "harness.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *rnd(size_t n, uint64_t *st)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)th_rand(st);
    return a;
}

typedef struct {
    double acc, bound; /* worst error / scale vs the rounded and the fp32 reference */
} errs;

static void worst(errs *e, float got, double ref_r, double ref_f, double scale)
{
    e->acc = th_worst(e->acc, fabs(got - ref_r) / (scale + 1e-30));
    e->bound = th_worst(e->bound, fabs(got - ref_f) / (scale + 1e-30));
}

static int acc_ok(double e, int k) { return e <= 1.2e-7 * (k + 2); }
static int bound_ok(double e, int k) { return e <= 0x1p-7 + 0x1p-16 + 1.2e-7 * (k + 2); }

static void check_nn(int m, int n, int k, int trans, int acc, uint64_t seed)
{
    uint64_t st = seed;
    float *a = rnd((size_t)m * k, &st), *b = rnd((size_t)k * n + 7, &st), *c0 = rnd((size_t)m * (n + 5), &st);
    float *c = malloc(sizeof *c * (size_t)m * (n + 5));
    const ptrdiff_t ldc = n + 5, ars = trans ? 1 : k, acs = trans ? m : 1;
    memcpy(c, c0, sizeof *c * (size_t)m * ldc);
    CHECK(npred_gemm_nn_bf16(m, n, k, a, ars, acs, b, n, c, ldc, acc) == 0, "nn bf16 refused");
    errs e = {0, 0};
    int untouched = 1;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n + 5; j++) {
            if (j >= n) { /* columns past n must be left alone */
                untouched &= memcmp(c + i * ldc + j, c0 + i * ldc + j, sizeof *c) == 0;
                continue;
            }
            double sr = acc ? c0[i * ldc + j] : 0, sf = sr, g = fabs(sr);
            for (int p = 0; p < k; p++) {
                float x = a[i * ars + p * acs], y = b[(size_t)p * n + j];
                sr += th_bf16(x) * th_bf16(y);
                sf += (double)x * y;
                g += fabs((double)x * y);
            }
            worst(&e, c[i * ldc + j], sr, sf, g);
        }
    CHECK(acc_ok(e.acc, k) && bound_ok(e.bound, k) && untouched,
          "nn bf16 m=%d n=%d k=%d trans=%d acc=%d: error %g vs rounded inputs, %g vs fp32 inputs, rest %s", m, n,
          k, trans, acc, e.acc, e.bound, untouched ? "untouched" : "WRITTEN");
    free(a), free(b), free(c0), free(c);
}

static void check_nt(int m, int l, int n, uint64_t seed)
{
    uint64_t st = seed;
    const ptrdiff_t lda = n + 3, ldb = n + 1, ldc = l + 2;
    float *a = rnd((size_t)m * lda, &st), *b = rnd((size_t)l * ldb, &st), *c0 = rnd((size_t)m * ldc, &st);
    float *c = malloc(sizeof *c * (size_t)m * ldc);
    memcpy(c, c0, sizeof *c * (size_t)m * ldc);
    CHECK(npred_gemm_nt_bf16(m, l, n, a, lda, b, ldb, c, ldc) == 0, "nt bf16 refused");
    errs e = {0, 0};
    int untouched = 1;
    for (int i = 0; i < m; i++)
        for (int q = 0; q < ldc; q++) {
            if (q >= l) {
                untouched &= memcmp(c + i * ldc + q, c0 + i * ldc + q, sizeof *c) == 0;
                continue;
            }
            double sr = c0[i * ldc + q], sf = sr, g = fabs(sr);
            for (int p = 0; p < n; p++) {
                float x = a[i * lda + p], y = b[q * ldb + p];
                sr += th_bf16(x) * th_bf16(y);
                sf += (double)x * y;
                g += fabs((double)x * y);
            }
            worst(&e, c[i * ldc + q], sr, sf, g);
        }
    CHECK(acc_ok(e.acc, n) && bound_ok(e.bound, n) && untouched,
          "nt bf16 m=%d l=%d n=%d: error %g vs rounded inputs, %g vs fp32 inputs, rest %s", m, l, n, e.acc, e.bound,
          untouched ? "untouched" : "WRITTEN");
    free(a), free(b), free(c0), free(c);
}

static void test_shapes(void)
{
    if (!npred_gemm_bf16_available()) {
        float a[4] = {1, 2, 3, 4}, c[4] = {5, 6, 7, 8};
        CHECK(npred_gemm_nn_bf16(2, 2, 2, a, 2, 1, a, 2, c, 2, 0) == -1 && c[0] == 5 && c[3] == 8,
              "nn bf16 ran on a CPU without AVX-512 BF16");
        CHECK(npred_gemm_nt_bf16(2, 2, 2, a, 2, a, 2, c, 2) == -1 && c[0] == 5 && c[3] == 8,
              "nt bf16 ran on a CPU without AVX-512 BF16");
        return;
    }
    /* rows: blocks of 6 / 8 and their tails, packed blocks of 96; columns: vector
     * tails, panels of 48 and 64; k: odd (a pair with zero), chunks of 256 */
    static const int M[] = {1, 3, 8, 13, 64, 97};
    static const int N[] = {1, 15, 17, 48, 64, 100, 257};
    static const int K[] = {1, 2, 7, 64, 81, 300, 513};
    uint64_t seed = 1;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 7; j++)
            for (int q = 0; q < 7; q++) {
                check_nn(M[i], N[j], K[q], 0, (i + j + q) % 2, seed++);
                check_nn(M[i], N[j], K[q], 1, (i + j + q + 1) % 2, seed++);
            }
    /* nt: l over 16-column tiles and panels, n over 16-pair tiles, odd n, chunks */
    static const int L[] = {1, 5, 16, 17, 64, 81, 130};
    static const int NN[] = {1, 2, 33, 200, 1568};
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) check_nt(1 + (i + j) % 9, L[i], NN[j], seed++);
    check_nt(64, 64, 1568, seed++);
    check_nt(100, 81, 515, seed++);
}

/* the order of each element's sum is fixed by the shapes: nt = nn on the
 * transposed B; a product = its rows computed apart (in the two layouts of A) */
static void test_order(void)
{
    if (!npred_gemm_bf16_available()) return;
    const int m = 101, l = 70, n = 1001;
    uint64_t st = 7;
    float *a = rnd((size_t)m * n, &st), *b = rnd((size_t)l * n, &st), *bt = malloc(sizeof *bt * (size_t)n * l);
    float *at = malloc(sizeof *at * (size_t)m * n);
    float *c1 = rnd((size_t)m * l, &st), *c2 = malloc(sizeof *c2 * (size_t)m * l), *c3 = malloc(sizeof *c3 * (size_t)m * l);
    memcpy(c2, c1, sizeof *c2 * (size_t)m * l);
    memcpy(c3, c1, sizeof *c3 * (size_t)m * l);
    for (int q = 0; q < l; q++)
        for (int p = 0; p < n; p++) bt[(size_t)p * l + q] = b[(size_t)q * n + p];
    for (int i = 0; i < m; i++)
        for (int p = 0; p < n; p++) at[(size_t)p * m + i] = a[(size_t)i * n + p];
    CHECK(npred_gemm_nt_bf16(m, l, n, a, n, b, n, c1, l) == 0, "nt refused");
    CHECK(npred_gemm_nn_bf16(m, l, n, a, n, 1, bt, l, c2, l, 1) == 0, "nn refused");
    CHECK(memcmp(c1, c2, sizeof *c1 * (size_t)m * l) == 0, "bf16 nt differs from nn on the transposed operand");
    for (int i = 0; i < m; i += 5) { /* rows apart, from A stored transposed */
        int r = m - i < 5 ? m - i : 5;
        CHECK(npred_gemm_nn_bf16(r, l, n, at + i, 1, m, bt, l, c3 + (size_t)i * l, l, 1) == 0, "nn refused");
    }
    CHECK(memcmp(c1, c3, sizeof *c1 * (size_t)m * l) == 0, "bf16 rows computed apart differ from the whole product");
    free(a), free(b), free(bt), free(at), free(c1), free(c2), free(c3);
}

/* operands packed once (npred_bf16_pack_a/_b, npred_gemm_bf16_packed): both layouts of
 * A and of B, packing and computing split into parts; C against the double reference
 * on bf16-rounded inputs and bit for bit against npred_gemm_nn_bf16 */
static void check_packed(int m, int n, int k, int at, int bt, int acc, int parts, uint64_t seed)
{
    uint64_t st = seed;
    float *a = rnd((size_t)m * k, &st), *b = rnd((size_t)k * n, &st), *c0 = rnd((size_t)m * n, &st);
    float *brow = malloc(sizeof *brow * (size_t)k * n), *c = malloc(sizeof *c * (size_t)m * n),
          *cr = malloc(sizeof *cr * (size_t)m * n);
    const ptrdiff_t ars = at ? 1 : k, acs = at ? m : 1, brs = bt ? 1 : n, bcs = bt ? k : 1;
    for (int p = 0; p < k; p++)
        for (int j = 0; j < n; j++) brow[(size_t)p * n + j] = b[p * brs + j * bcs];
    size_t aw = npred_bf16_packed_a_words(m, k, at), bw = npred_bf16_packed_b_words(k, n);
    uint32_t *ap = aligned_alloc(64, (aw * 4 + 63) / 64 * 64), *bp = aligned_alloc(64, (bw * 4 + 63) / 64 * 64);
    memcpy(c, c0, sizeof *c * (size_t)m * n);
    memcpy(cr, c0, sizeof *c * (size_t)m * n);
    int ok = 1;
    for (int q = 0; q < parts; q++) ok &= npred_bf16_pack_a(ap, m, k, a, at ? m : k, at, q, parts) == 0;
    for (int q = parts - 1; q >= 0; q--) ok &= npred_bf16_pack_b(bp, k, n, b, brs, bcs, q, parts) == 0;
    for (int q = 0; q < parts; q++) ok &= npred_gemm_bf16_packed(m, n, k, ap, at, bp, c, n, acc, q, parts) == 0;
    ok &= npred_gemm_nn_bf16(m, n, k, a, ars, acs, brow, n, cr, n, acc) == 0;
    errs e = {0, 0};
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double sr = acc ? c0[(size_t)i * n + j] : 0, sf = sr, g = fabs(sr);
            for (int p = 0; p < k; p++) {
                float x = a[i * ars + p * acs], y = brow[(size_t)p * n + j];
                sr += th_bf16(x) * th_bf16(y);
                sf += (double)x * y;
                g += fabs((double)x * y);
            }
            worst(&e, c[(size_t)i * n + j], sr, sf, g);
        }
    CHECK(ok && acc_ok(e.acc, k) && bound_ok(e.bound, k) && memcmp(c, cr, sizeof *c * (size_t)m * n) == 0,
          "packed bf16 m=%d n=%d k=%d at=%d bt=%d acc=%d parts=%d: error %g vs rounded inputs, %g vs fp32, %s "
          "npred_gemm_nn_bf16", m, n, k, at, bt, acc, parts, e.acc, e.bound,
          memcmp(c, cr, sizeof *c * (size_t)m * n) ? "differs from" : "equals");
    free(a), free(b), free(c0), free(brow), free(c), free(cr), free(ap), free(bp);
}

static void test_packed(void)
{
    if (!npred_gemm_bf16_available()) {
        float a[4] = {1, 2, 3, 4}, c[4] = {5, 6, 7, 8};
        uint32_t w[64] = {0};
        CHECK(npred_bf16_pack_a(w, 2, 2, a, 2, 0, 0, 1) == -1 && npred_bf16_pack_b(w, 2, 2, a, 2, 1, 0, 1) == -1 &&
                  npred_gemm_bf16_packed(2, 2, 2, w, 0, w, c, 2, 0, 0, 1) == -1 && c[0] == 5 && c[3] == 8,
              "packed bf16 ran on a CPU without AVX-512 BF16");
        return;
    }
    static const int M[] = {1, 7, 97, 200};
    static const int N[] = {1, 17, 64, 130};
    static const int K[] = {1, 8, 81, 515};
    uint64_t seed = 100;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int q = 0; q < 4; q++) {
                int v = i + j + q;
                check_packed(M[i], N[j], K[q], v % 2, (v / 2) % 2, (v / 4) % 2, 1 + v % 3, seed++);
                check_packed(M[i], N[j], K[q], (v + 1) % 2, (v / 2 + 1) % 2, (v / 4 + 1) % 2, 1 + (v + 1) % 3, seed++);
            }
}

int main(void)
{
    RUN(test_shapes);
    RUN(test_order);
    RUN(test_packed);
    return th_summary();
}
