/* grid_sample for the Gaussian readout: 8,000 neurons x 64 channels, one point
 * per neuron and image, align_corners=True. Compares the general NCHW path
 * (PyTorch's layout: input (B, C, h, w), grid (B, n, 1, 2), output (B, C, n, 1))
 * with the channels-last path (features (B, h, w, C), output (B, n, C)).
 *
 * Multiply-adds counted per point: forward 4 C (4 taps per channel); backward
 * 10 C (4 for the input-gradient scatter, 3 for each of d/dx and d/dy).
 * Times are the median of a few calls after one warm-up, all threads
 * (OMP_NUM_THREADS). The machine is shared and small, so the numbers are noisy. */
#include "kernels/grid_sample.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#include "bench_check.h"
#endif

#define REPS 3

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int B, h, w, C, n;
    float *in, *feat, *grid, *out, *dout, *din;
} bench_case;

enum { NCHW_FWD, NCHW_BWD, NHWC_FWD, NHWC_BWD, TO_NHWC };

static npred_status run_op(bench_case *k, int op)
{
    float *dgrid = k->grid + (size_t)k->B * k->n * 2; /* second half of the grid buffer */
    switch (op) {
    case NCHW_FWD:
        return npred_grid_sample_forward(k->out, k->in, k->grid, k->B, k->C, k->h, k->w, k->n, 1, 1);
    case NCHW_BWD:
        return npred_grid_sample_backward(k->din, dgrid, k->dout, k->in, k->grid, k->B, k->C, k->h,
                                          k->w, k->n, 1, 1);
    case NHWC_FWD:
        return npred_grid_sample_nhwc_forward(k->out, k->feat, k->grid, k->B, k->h, k->w, k->C,
                                              k->n, 1);
    case NHWC_BWD:
        return npred_grid_sample_nhwc_backward(k->din, dgrid, k->dout, k->feat, k->grid, k->B,
                                               k->h, k->w, k->C, k->n, 1);
    default:
        return npred_grid_sample_nchw_to_nhwc(k->feat, k->in, k->B, k->C, k->h, k->w);
    }
}

static double time_op(bench_case *k, int op)
{
    double t[REPS];
    if (run_op(k, op) != NPRED_OK) {
        fprintf(stderr, "bench_grid_sample: %s\n", npred_last_error());
        exit(1);
    }
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        BENCH_OK(run_op(k, op));
        t[r] = now() - t0;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    return t[REPS / 2];
}

static void bench(int B, int h, int w)
{
    bench_case k = {.B = B, .h = h, .w = w, .C = 64, .n = 8000};
    const size_t nf = (size_t)B * k.C * h * w, no = (size_t)B * k.C * k.n;
    k.in = malloc(nf * 4);
    k.feat = malloc(nf * 4);
    k.din = calloc(nf, 4);
    k.grid = calloc((size_t)B * k.n * 4, 4);
    k.out = malloc(no * 4);
    k.dout = malloc(no * 4);
    if (!k.in || !k.feat || !k.din || !k.grid || !k.out || !k.dout) {
        fprintf(stderr, "bench_grid_sample: out of memory\n");
        exit(1);
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < nf; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        k.in[i] = (float)((s >> 40) * (1.0 / (1 << 24))) - 0.5f;
    }
    for (size_t i = 0; i < (size_t)B * k.n * 2; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        k.grid[i] = (float)((s >> 40) * (2.0 / (1 << 24))) - 1.0f; /* readout grid in [-1, 1] */
    }
    for (size_t i = 0; i < no; i++) k.dout[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    BENCH_OK(run_op(&k, TO_NHWC));

    const double pts = (double)B * k.n;
    const double mac_f = pts * 4 * k.C, mac_b = pts * 10 * k.C;
    double t_tr = time_op(&k, TO_NHWC);
    double t[4];
    for (int op = 0; op < 4; op++) t[op] = time_op(&k, op);
    printf("batch %3d, features %dx%d, %d neurons x %d channels (NCHW->NHWC transpose %.2f ms)\n",
           B, h, w, k.n, k.C, 1e3 * t_tr);
    printf("  %-14s forward %8.2f ms %7.2f GMAC/s   backward %8.2f ms %7.2f GMAC/s\n", "NCHW general",
           1e3 * t[NCHW_FWD], mac_f / t[NCHW_FWD] * 1e-9, 1e3 * t[NCHW_BWD],
           mac_b / t[NCHW_BWD] * 1e-9);
    printf("  %-14s forward %8.2f ms %7.2f GMAC/s   backward %8.2f ms %7.2f GMAC/s\n",
           "channels-last", 1e3 * t[NHWC_FWD], mac_f / t[NHWC_FWD] * 1e-9, 1e3 * t[NHWC_BWD],
           mac_b / t[NHWC_BWD] * 1e-9);
    printf("  speed-up       forward %8.1fx                  backward %8.1fx\n",
           t[NCHW_FWD] / t[NHWC_FWD], t[NCHW_BWD] / t[NHWC_BWD]);
    fflush(stdout);
    free(k.in); free(k.feat); free(k.din); free(k.grid); free(k.out); free(k.dout);
}

int main(void)
{
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double t0 = now();
    printf("grid_sample (bilinear, zeros, align_corners=True), %d thread(s), median of %d\n",
           threads, REPS);
    bench(32, 36, 64);
    bench(128, 36, 64);
    bench(32, 28, 56);
    bench(128, 28, 56);
    printf("total %.1f s\n", now() - t0);
    return 0;
}
