/* Readout throughput: FullGaussian2d (sensorium size: 8,000 neurons, 64 channels,
 * 28 x 56 core output) at batch 128 and 32, and FullFactorized2d (8,000 neurons,
 * 64 x 36 x 64) at batch 32; forward (eval) and forward + backward (train) in
 * images/s. The machine is shared and small: numbers are noisy. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "readouts/readout.h"
#include "bench_check.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void bench(const char *name, npred_readout_type type, int C, int H, int W, int n, int B, double budget)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, type, C, H, W, n);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    if (npred_readout_declare(&r, &cfg, "readout.s.", &t) || npred_ptable_alloc(&t) ||
        npred_readout_setup(&r, &t, B)) {
        fprintf(stderr, "%s: %s\n", name, npred_last_error());
        exit(1);
    }
    npred_readout_init_params(&r, &t, &rng, NULL);
    size_t nx = (size_t)B * C * H * W;
    float *x = malloc(nx * sizeof *x), *dx = malloc(nx * sizeof *dx), *y = malloc((size_t)B * n * sizeof *y);
    float *dy = malloc((size_t)B * n * sizeof *dy);
    for (size_t i = 0; i < nx; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < (size_t)B * n; i++) dy[i] = (float)npred_rng_normal(&rng);
    for (int mode = 0; mode < 2; mode++) {
        int iters = 0;
        double t0 = now(), t1 = t0;
        while (iters < 2 || (t1 - t0 < budget && iters < 200)) {
            BENCH_OK(npred_readout_forward(&r, &t, y, x, NULL, B, mode, &rng, NULL));
            if (mode) {
                memset(dx, 0, nx * sizeof *dx);
                npred_readout_backward(&r, &t, dy, dx, NULL);
            }
            iters++;
            t1 = now();
        }
        printf("%-34s batch %3d  %-16s %9.1f images/s  (%d iterations)\n", name, B,
               mode ? "forward+backward" : "forward", iters * (double)B / (t1 - t0), iters);
    }
    free(x), free(dx), free(y), free(dy);
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

int main(void)
{
    printf("threads: %d\n", omp_get_max_threads());
    bench("FullGaussian2d 8000 x 64 @ 28x56", NPRED_READOUT_FULL_GAUSSIAN2D, 64, 28, 56, 8000, 128, 3.0);
    bench("FullGaussian2d 8000 x 64 @ 28x56", NPRED_READOUT_FULL_GAUSSIAN2D, 64, 28, 56, 8000, 32, 3.0);
    bench("FullFactorized2d 8000 x 64 @ 36x64", NPRED_READOUT_FACTORIZED, 64, 36, 64, 8000, 32, 4.0);
    return 0;
}
