/* Timings of the batchnorm2d, ELU, linear and avg-pool kernels on core-sized activations
 * (batch 32, 64 channels, 36x64: the SENSORIUM core at pad_input=False is close to this).
 * Median of 7 samples (each a loop of calls lasting about 50 ms); numbers are noisy on a shared 2-core machine. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/linear.h"
#include "kernels/pool.h"
#include "bench_check.h"

enum { B = 32, C = 64, H = 36, W = 64, N = B * C * H * W, REPS = 7 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *x, *y, *dy, *dx, g[C], bt[C], rm[C], rv[C], dg[C], db[C];
static double sm[C], si[C];
static float *lw, *ly, *ldx, *ldw;

static void bn_fwd(void) { BENCH_OK(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, x, g, bt, B, C, H, W, 1, 0.1, 1e-5)); }
static void bn_bwd(void) { BENCH_OK(npred_batchnorm2d_backward(dx, dg, db, dy, x, g, sm, si, B, C, H, W, 1)); }
static void elu_fwd(void) { npred_elu_forward(y, x, N); }
static void elu_bwd(void) { npred_elu_backward(dx, dy, x, N); }
static void pool_fwd(void) { BENCH_OK(npred_avgpool2d_forward(y, x, B, C, H, W, 2)); }
static void pool_bwd(void) { BENCH_OK(npred_avgpool2d_backward(dx, dy, B, C, H, W, 2)); }
/* a shifter/grid-predictor sized linear: (B*H*W/16, 64) -> 128 */
enum { LB = B * H * W / 16, LI = 64, LO = 128 };
static void lin_fwd(void) { BENCH_OK(npred_linear_forward(ly, x, lw, bt, LB, LI, LO)); }
static void lin_bwd(void) { BENCH_OK(npred_linear_backward(ldx, ldw, NULL, dy, x, lw, LB, LI, LO)); }

static void bench(const char *name, void (*fn)(void), double bytes, double flops)
{
    double t[REPS];
    fn();
    int inner = 1; /* calls per sample: enough for 50 ms (the clock may be coarse) */
    for (double t0 = now(); now() - t0 < 0.05; inner++) fn();
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        for (int i = 0; i < inner; i++) fn();
        t[r] = (now() - t0) / inner;
    }
    qsort(t, REPS, sizeof *t, cmp);
    double m = t[REPS / 2];
    printf("%-28s %8.3f ms  %7.2f GB/s", name, 1e3 * m, bytes / m * 1e-9);
    if (flops > 0) printf("  %7.2f GFLOP/s", flops / m * 1e-9);
    printf("\n");
}

int main(void)
{
    x = malloc(sizeof(float) * N), y = malloc(sizeof(float) * N);
    dy = malloc(sizeof(float) * N), dx = calloc(N, sizeof(float));
    lw = malloc(sizeof(float) * LO * LI), ly = malloc(sizeof(float) * LB * LO);
    ldx = calloc((size_t)LB * LI, sizeof(float)), ldw = calloc((size_t)LO * LI, sizeof(float));
    unsigned s = 1;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
        dy[i] = x[(i * 7) % N] * 0.5f;
    }
    for (int c = 0; c < C; c++) g[c] = 1, bt[c] = 0, rm[c] = 0, rv[c] = 1;
    for (int i = 0; i < LO * LI; i++) lw[i] = x[i];
    printf("threads %d, x (%d, %d, %d, %d) = %.1f MB\n", omp_get_max_threads(), B, C, H, W, N * 4e-6);
    double nb = 4.0 * N;
    bench("batchnorm2d train forward", bn_fwd, 3 * nb, 0);
    bench("batchnorm2d train backward", bn_bwd, 5 * nb, 0);
    bench("elu forward", elu_fwd, 2 * nb, 0);
    bench("elu backward", elu_bwd, 3 * nb, 0);
    bench("avgpool2d k2 forward", pool_fwd, 1.25 * nb, 0);
    bench("avgpool2d k2 backward", pool_bwd, 2.25 * nb, 0);
    bench("linear (4608,64)->128 fwd", lin_fwd, 4.0 * (LB * LI + LB * LO), 2.0 * LB * LI * LO);
    bench("linear (4608,64)->128 bwd", lin_bwd, 4.0 * (2 * LB * LI + LB * LO), 4.0 * LB * LI * LO);
    free(x), free(y), free(dy), free(dx), free(lw), free(ly), free(ldx), free(ldw);
    return 0;
}
