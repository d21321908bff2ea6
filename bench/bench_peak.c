/* The machine's FP32 FMA peak, measured: every thread runs 16 independent chains
 * of vector FMAs on registers (no memory traffic), with 1 thread and with the
 * default thread count; best of 7 runs of ~0.1 s, each thread timed by its own
 * CPU time (the machine is shared). AVX-512 where the CPU has it
 * (runtime check), AVX2 too for comparison. The summary (bench/summary.c) takes
 * the best of these as the peak that each figure's FMA-peak fraction divides by.
 * Records peak_gflops_1thread and peak_gflops_default_threads. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>

#include "bench_report.h"

#define CHAINS 16

/* n rounds of CHAINS FMAs of 16 floats; returns a value that depends on all of them */
__attribute__((target("avx512f"), noinline)) static float fma_avx512(long n, float seed)
{
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_set1_ps(seed + (float)k);
    for (long i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
    __m512 s = acc[0];
    for (int k = 1; k < CHAINS; k++) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

/* the same with 8-float AVX2 vectors */
__attribute__((target("avx2,fma"), noinline)) static float fma_avx2(long n, float seed)
{
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_set1_ps(seed + (float)k);
    for (long i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
    __m256 s = acc[0];
    for (int k = 1; k < CHAINS; k++) s = _mm256_add_ps(s, acc[k]);
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
}

static volatile float sink;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* GFLOP/s of `threads` threads each running n rounds at once: the sum over the
 * threads of each one's FLOPs over its own CPU time (so that time the shared
 * machine gives to other processes does not count); best of reps */
static double measure(int avx512, int threads, long n, int reps)
{
    double best = 0;
    int lanes = avx512 ? 16 : 8;
    for (int r = 0; r < reps; r++) {
        double g = 0;
        float tot = 0;
#pragma omp parallel num_threads(threads) reduction(+ : tot, g)
        {
            double t0 = thread_cpu();
            tot += avx512 ? fma_avx512(n, (float)omp_get_thread_num()) : fma_avx2(n, (float)omp_get_thread_num());
            g += 2.0 * lanes * CHAINS * (double)n / (thread_cpu() - t0) * 1e-9;
        }
        sink = tot;
        if (g > best) best = g;
    }
    return best;
}

int main(void)
{
    bench_report_init("peak");
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f"), has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int tmax = omp_get_max_threads();
    const long n = 2000000; /* ~0.1 s per run at ~100 GFLOP/s per thread */
    printf("FP32 FMA peak (16 register chains per thread, per-thread CPU time, best of 7):\n");
    double peak[2] = {0, 0};
    int tcount[2] = {1, tmax};
    for (int i = 0; i < 2; i++) {
        if (i == 1 && tmax == 1) {
            peak[1] = peak[0];
            break;
        }
        double g512 = has512 ? measure(1, tcount[i], n, 7) : 0, g2 = has2 ? measure(0, tcount[i], n, 7) : 0;
        peak[i] = g512 > g2 ? g512 : g2;
        printf("  %d thread%s: AVX-512 %7.1f GFLOP/s%s | AVX2 %7.1f GFLOP/s%s\n", tcount[i], tcount[i] == 1 ? " " : "s",
               g512, has512 ? "" : " (not on this CPU)", g2, has2 ? "" : " (not on this CPU)");
    }
    bench_record("peak_gflops_1thread", peak[0], 1);
    bench_record("peak_gflops_default_threads", peak[1], tmax);
    return 0;
}
