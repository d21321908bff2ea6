/* MEI speed on the SENSORIUM baseline (configs/sensorium_sota.json: 4 layers,
 * 64 channels, depth-separable 7x7, FullGaussian2d with the cortex grid
 * predictor) at 1x36x64 with 7,776 neurons, random parameters (the speed does not
 * depend on the values):
 *   - one MEI at a time (as sinzlab/mei does): ms per iteration;
 *   - batched MEIs (one image per neuron, one forward + input backward per step)
 *     at several batch sizes: ms per image-iteration;
 * and the extrapolation to 1,000 neurons x 1,000 iterations, next to PyTorch's
 * figure on this machine kind (one neuron at a time, 10.7 ms per iteration,
 * forward + input backward, 2 threads => about 3 hours). The runs are short (a
 * few steps each), so the totals are extrapolated, and the machine is shared:
 * the load average is printed with the figures. Public API only. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "npred/insilico.h"
#include "npred/model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_insilico: %s: %s\n", what, npred_last_error());
    exit(1);
}

/* seconds per step of npred_mei_optimize with N images, best of `reps` runs of `steps` steps */
static double time_mei(npred_model *m, int N, int n, int steps, int reps)
{
    npred_mei_config cfg;
    npred_mei_config_default(&cfg);
    cfg.num_iterations = steps - 1;
    float *w = calloc((size_t)N * n, sizeof *w), *meis = malloc(sizeof(float) * 36 * 64 * N);
    if (!w || !meis) die("out of memory");
    for (int i = 0; i < N; i++) w[(size_t)i * n + (i * 7) % n] = 1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (npred_mei_optimize(m, "bench", &cfg, w, N, NULL, NULL, NULL, meis, NULL, NULL, NULL, NULL, NULL))
            die("mei");
        double dt = (now() - t0) / steps;
        if (dt < best) best = dt;
    }
    free(w);
    free(meis);
    return best;
}

int main(void)
{
    const int n = 7776;
    void *buf;
    size_t len;
    if (npred_file_read_all("configs/sensorium_sota.json", &buf, &len)) die("config");
    char *cfg = realloc(buf, len + 1);
    if (!cfg) die("out of memory");
    cfg[len] = 0;
    double *coords = malloc(sizeof(double) * 2 * n);
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    for (int i = 0; i < 2 * n; i++) coords[i] = 800.0 * npred_rng_uniform(&rng) - 400.0;
    npred_model_session s = {"bench", n, coords, 2, NULL, NULL};
    npred_model *m = NULL;
    if (npred_model_create(&m, cfg, "configs/sensorium_sota.json", 1, 36, 64, &s, 1, 64, 1)) die("model");
    double load[3] = {0, 0, 0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        fclose(f);
    }
    printf("MEIs on the SENSORIUM baseline, 1x36x64, %d neurons, %d threads (load average %.1f %.1f %.1f)\n", n,
           omp_get_max_threads(), load[0], load[1], load[2]);
    double one = time_mei(m, 1, n, 5, 3);
    printf("  one MEI at a time:   %7.2f ms per iteration  -> 1,000 neurons x 1,000 iterations: %6.1f min "
           "(extrapolated)\n",
           1e3 * one, one * 1e6 / 60);
    int sizes[] = {16, 32, 64};
    double best = 1e30;
    int bestB = 0;
    for (int k = 0; k < 3; k++) {
        int B = sizes[k];
        double t = time_mei(m, B, n, 4, 2) / B;
        printf("  batched, %2d images: %7.2f ms per image-iteration -> 1,000 x 1,000: %6.1f min (extrapolated)\n", B,
               1e3 * t, t * 1e6 / 60);
        if (t < best) best = t, bestB = B;
    }
    printf("  PyTorch 1.13 (sinzlab/mei, one neuron at a time, 2 threads): 10.7 ms per iteration -> about 3 hours\n");
    printf("  best npred: batch %d, %.1f min for 1,000 x 1,000 (%.1fx PyTorch; goal <= 10 min)\n", bestB,
           best * 1e6 / 60, 10.7e-3 / best);
    npred_model_free(m);
    free(coords);
    free(cfg);
    return 0;
}
