/* conv2d speed at the SENSORIUM baseline core shapes (batch 128, 36x64 input,
 * pad_input=False): layer 0 9x9 1->64 (output 28x56), then the 1x1 64->64 and the
 * 7x7 depthwise (pad 3) convs of a depth-separable layer on 28x56.
 * GFLOP/s count 2 * multiply-adds. Reference points printed alongside: a measured
 * FMA peak of this build's vector loop and plain sgemm at 2048^3 (OpenBLAS as
 * installed, the practical ceiling for the GEMM path). Numbers are noisy: the
 * machine is small and shared. */
#include "kernels/conv2d.h"
#include "bench_check.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FMA throughput of 12 independent vector chains per thread. */
static double fma_peak(void)
{
    const long iters = 20000000;
    double t0 = now();
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
#if defined(__AVX512F__)
        __m512 a[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
        for (int k = 0; k < 12; k++) a[k] = _mm512_set1_ps((float)k);
        for (long i = 0; i < iters; i++)
            for (int k = 0; k < 12; k++) a[k] = _mm512_fmadd_ps(a[k], m, c);
        float t[16];
        for (int k = 0; k < 12; k++) {
            _mm512_storeu_ps(t, a[k]);
            sink += t[0];
        }
#else
        float a[12][8];
        for (int k = 0; k < 12; k++)
            for (int l = 0; l < 8; l++) a[k][l] = (float)k;
        for (long i = 0; i < iters; i++)
            for (int k = 0; k < 12; k++)
                for (int l = 0; l < 8; l++) a[k][l] = a[k][l] * 0.999999f + 1e-7f;
        sink += a[0][0];
#endif
    }
    double dt = now() - t0;
#if defined(__AVX512F__)
    double lanes = 16;
#else
    double lanes = 8;
#endif
    if (sink == 12345.0f) printf(" ");
    return omp_get_max_threads() * (double)iters * 12 * lanes * 2 / dt / 1e9;
}

static double sgemm_gflops(int n)
{
    float *a = bench_rnd((size_t)n * n, 1), *b = bench_rnd((size_t)n * n, 2), *c = calloc((size_t)n * n, 4);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

enum { FWD, BWD_W, BWD_XW };
static const char *WHAT[] = {"forward", "backward dW(+db)", "backward dX+dW"};

/* median seconds of reps calls */
static double time_op(int what, npred_conv2d_algo algo, const npred_conv2d_params *p, float *y,
                      const float *x, const float *w, float *dx, float *dw, float *db, void *ws,
                      size_t wsb, int reps)
{
    double t[16];
    for (int r = -1; r < reps; r++) {
        double t0 = now();
        npred_status s;
        if (what == FWD) s = npred_conv2d_forward_algo(algo, y, x, w, NULL, p, ws, wsb);
        else s = npred_conv2d_backward_algo(algo, what == BWD_XW ? dx : NULL, dw, db, y, x, w, p, ws, wsb);
        if (s) {
            printf("error: %s\n", npred_last_error());
            exit(1);
        }
        if (r >= 0) t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    return t[reps / 2];
}

static void bench(const char *name, npred_conv2d_params p, const npred_conv2d_algo *algos, int nalgo,
                  int with_dx)
{
    int oh, ow;
    if (npred_conv2d_output_size(&p, &oh, &ow)) {
        printf("%s: %s\n", name, npred_last_error());
        exit(1);
    }
    size_t nx = (size_t)p.n * p.c * p.h * p.w, ny = (size_t)p.n * p.o * oh * ow;
    size_t nw = (size_t)p.o * (p.c / p.groups) * p.kh * p.kw;
    double flop = 2.0 * ny * (p.c / p.groups) * p.kh * p.kw;
    float *x = bench_rnd(nx, 3), *w = bench_rnd(nw, 4), *y = bench_rnd(ny, 5), *dx = calloc(nx, 4);
    float *dw = calloc(nw, 4), *db = calloc((size_t)p.o, 4);
    printf("%s: N=%d C=%d %dx%d -> O=%d %dx%d, k %dx%d, groups %d (%.2f GFLOP per pass)\n", name,
           p.n, p.c, p.h, p.w, p.o, oh, ow, p.kh, p.kw, p.groups, flop / 1e9);
    for (int a = 0; a < nalgo; a++) {
        size_t wsb = npred_conv2d_workspace_size(&p, algos[a]);
        void *ws = malloc(wsb ? wsb : 1);
        const char *an = algos[a] == NPRED_CONV2D_ALGO_GEMM ? "gemm" :
                         algos[a] == NPRED_CONV2D_ALGO_DEPTHWISE ? "depthwise" : "naive";
        int reps = algos[a] == NPRED_CONV2D_ALGO_NAIVE ? 1 : 5;
        for (int what = FWD; what <= BWD_XW; what++) {
            if (what == BWD_XW && !with_dx) continue;
            double dt = time_op(what, algos[a], &p, y, x, w, dx, dw, db, ws, wsb, reps);
            double f = what == FWD ? flop : what == BWD_W ? flop : 2 * flop;
            printf("  %-10s %-18s %8.2f ms  %7.1f GFLOP/s  (ws %.1f MiB)\n", an, WHAT[what],
                   dt * 1e3, f / dt / 1e9, wsb / 1048576.0);
        }
        free(ws);
    }
    free(x); free(w); free(y); free(dx); free(dw); free(db);
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The depthwise 7x7 as the depth-separable block runs it (ds_forward / ds_backward):
 * one image per call on one thread, its planes in cache (the same image repeated);
 * the backward writes dx (npred_conv2d_backward_set) and adds to dw. CPU time of the
 * thread, minimum of 30 calls. */
static void bench_dw_image(void)
{
    npred_conv2d_params p = npred_conv2d_params_square(1, 64, 28, 56, 64, 7, 1, 3, 1, 64);
    size_t n = (size_t)64 * 28 * 56;
    float *x = bench_rnd(n, 11), *w = bench_rnd((size_t)64 * 49, 12), *dy = bench_rnd(n, 13), *y = calloc(n, 4), *dx = calloc(n, 4);
    float *dw = calloc((size_t)64 * 49, 4);
    size_t wsb = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_DEPTHWISE);
    void *ws = malloc(wsb);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < 31; r++)
        for (int k = 0; k < 2; k++) {
            double t0 = cpu_now();
            npred_status s = k ? npred_conv2d_backward_set(dx, dw, NULL, dy, x, w, &p, ws, wsb)
                               : npred_conv2d_forward(y, x, w, NULL, &p, ws, wsb);
            double dt = cpu_now() - t0;
            if (s) {
                printf("error: %s\n", npred_last_error());
                exit(1);
            }
            if (r > 0 && dt < best[k]) best[k] = dt;
        }
    omp_set_num_threads(nt);
    double flop = 2.0 * n * 49;
    printf("depthwise 7x7, one image per call (as in the depth-separable block), 1 thread, CPU time:\n"
           "  forward %.1f us (%.0f GFLOP/s) | dx + dw %.1f us (%.0f GFLOP/s) | per image %.1f us\n",
           best[0] * 1e6, flop / best[0] / 1e9, best[1] * 1e6, 2 * flop / best[1] / 1e9, (best[0] + best[1]) * 1e6);
    free(x), free(w), free(dy), free(y), free(dx), free(dw), free(ws);
}

int main(void)
{
    double t0 = now();
    printf("threads %d; FP32 FMA peak (spec: ~540 GFLOP/s on 2 AVX-512 cores)\n", omp_get_max_threads());
    printf("measured vector FMA loop: %.0f GFLOP/s\n", fma_peak());
    printf("OpenBLAS sgemm 2048^3 (practical GEMM ceiling): %.0f GFLOP/s\n", sgemm_gflops(2048));
    printf("PyTorch 1.13 reference: ~49 GFLOP/s for the whole baseline core forward\n\n");

    const npred_conv2d_algo gemm[] = {NPRED_CONV2D_ALGO_GEMM};
    const npred_conv2d_algo dws[] = {NPRED_CONV2D_ALGO_DEPTHWISE, NPRED_CONV2D_ALGO_GEMM};
    const npred_conv2d_algo naive[] = {NPRED_CONV2D_ALGO_NAIVE};
    bench("layer0 9x9", npred_conv2d_params_square(128, 1, 36, 64, 64, 9, 1, 0, 1, 1), gemm, 1, 1);
    bench("pointwise 1x1", npred_conv2d_params_square(128, 64, 28, 56, 64, 1, 1, 0, 1, 1), gemm, 1, 1);
    bench("depthwise 7x7", npred_conv2d_params_square(128, 64, 28, 56, 64, 7, 1, 3, 1, 64), dws, 2, 1);
    bench_dw_image();
    bench("naive reference, depthwise 7x7 batch 8",
          npred_conv2d_params_square(8, 64, 28, 56, 64, 7, 1, 3, 1, 64), naive, 1, 1);
    printf("\ntotal bench time %.1f s (2 shared cores: expect noise)\n", now() - t0);
    return 0;
}
