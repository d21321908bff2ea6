/* The convolution GEMMs (kernels/gemm.h) on one thread, AVX-512 micro-kernels
 * against the OpenBLAS fallback, at the SENSORIUM baseline shapes: per image of
 * a batch of 128 at 28x56 (1,568 pixels), the 1x1 64->64 convolution's forward
 * (nn), input gradient (nn with A transposed) and weight gradient (nt), and the
 * 9x9 first layer's im2col GEMMs (k = 81); and the bf16 kernels (inputs rounded
 * to bf16, fp32 accumulation: the model's bf16 precision) where the CPU has
 * AVX-512 BF16. The kernels run alternately and each figure is the minimum over
 * the repetitions (least disturbed by other jobs on a shared machine). */
#include "kernels/gemm.h"
#include "bench_check.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define B 128
#define P 1568
#define REPS 7

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

enum { NN, NN_T, NT };

/* one pass over the batch: C_n = op(A, X_n) for every image */
static double pass(int kind, int bf16, int m, int k, const float *a, const float *x, float *y, float *dw)
{
    double t0 = now();
    for (int n = 0; n < B; n++) {
        const float *xn = x + (size_t)n * k * P;
        float *yn = y + (size_t)n * m * P;
        if (bf16) {
            if (kind == NN) npred_gemm_nn_bf16(m, P, k, a, k, 1, xn, P, yn, P, 0);
            else if (kind == NN_T) npred_gemm_nn_bf16(m, P, k, a, 1, m, xn, P, yn, P, 1);
            else npred_gemm_nt_bf16(m, k, P, yn, P, xn, P, dw, k);
        } else if (kind == NN) npred_gemm_nn(m, P, k, a, k, 1, xn, P, yn, P, 0);
        else if (kind == NN_T) npred_gemm_nn(m, P, k, a, 1, m, xn, P, yn, P, 1);
        else npred_gemm_nt(m, k, P, yn, P, xn, P, dw, k);
    }
    return now() - t0;
}

static void row(const char *name, int kind, int m, int k)
{
    float *a = bench_rnd((size_t)m * k, 1), *x = bench_rnd((size_t)B * k * P, 2), *y = bench_rnd((size_t)B * m * P, 3);
    float *dw = calloc((size_t)m * k, sizeof *dw);
    double best[3] = {1e30, 1e30, 1e30};
    int have = npred_gemm_use_avx512(1), bf = npred_gemm_bf16_available();
    for (int r = 0; r < REPS; r++)
        for (int v = bf ? 2 : have ? 1 : 0; v >= 0; v--) {
            npred_gemm_use_avx512(v == 2 ? -1 : v);
            double t = pass(kind, v == 2, m, k, a, x, y, dw);
            if (t < best[v]) best[v] = t;
        }
    npred_gemm_use_avx512(-1);
    double flop = 2.0 * B * m * k * (double)P;
    printf("  %-28s OpenBLAS %7.2f ms %6.1f GFLOP/s", name, 1e3 * best[0], flop / best[0] / 1e9);
    if (have) printf(" | AVX-512 %7.2f ms %6.1f GFLOP/s", 1e3 * best[1], flop / best[1] / 1e9);
    if (bf) printf(" | bf16 %7.2f ms %6.1f GFLOP/s (%.2fx)", 1e3 * best[2], flop / best[2] / 1e9, best[1] / best[2]);
    printf("\n");
    free(a), free(x), free(y), free(dw);
}

int main(void)
{
    omp_set_num_threads(1);
    printf("conv GEMMs, 1 thread, batch %d x %d pixels, min of %d (AVX-512 on this CPU: %s, AVX-512 BF16: %s)\n", B,
           P, REPS, npred_gemm_use_avx512(-1) ? "yes" : "no", npred_gemm_bf16_available() ? "yes" : "no");
    row("1x1 forward   (nn, k 64)", NN, 64, 64);
    row("1x1 dX        (nn^T, k 64)", NN_T, 64, 64);
    row("1x1 dW        (nt, n 1568)", NT, 64, 64);
    row("9x9 forward   (nn, k 81)", NN, 64, 81);
    row("9x9 dW        (nt, l 81)", NT, 64, 81);
    return 0;
}
