/* MEI speed on the SENSORIUM baseline (configs/sensorium_sota.json: 4 layers,
 * 64 channels, depth-separable 7x7, FullGaussian2d with the cortex grid
 * predictor) at 1x36x64 with 7,776 neurons, random parameters (the speed does not
 * depend on the values), per image-iteration (one forward + input backward of one
 * neuron's objective):
 *   - the whole-image input gradient (npred_model_input_gradient), 1 and 64 images;
 *   - the single-neuron path (npred_neuron_grad_run: the cone of the neuron's
 *     taps), 1, 8 and 64 images;
 *   - whole npred_mei_optimize runs (64 neurons x 50 iterations);
 * each extrapolated to 1,000 neurons x 1,000 iterations, next to PyTorch's figure
 * on this machine kind (one neuron at a time, 10.7 ms per iteration, forward +
 * input backward, 2 threads => about 3 hours). The machine is shared: the load
 * average is printed, and the process CPU time next to the wall time. Public API
 * only. */
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

/* the best CPU time per image of the last time_full / time_plan (all threads together: on a
 * loaded machine closer to what an idle one would take than the wall time) */
static double last_cpu;

/* CPU seconds of the whole process (all threads) */
static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_insilico: %s: %s\n", what, npred_last_error());
    exit(1);
}

/* seconds per image-iteration of the full input gradient (one-hot weights), best of reps */
static double time_full(npred_model *m, int N, int n, const float *img, float *g, int reps)
{
    float *w = calloc((size_t)N * n, sizeof *w), *rates = malloc(sizeof(float) * (size_t)N * n);
    if (!w || !rates) die("out of memory");
    for (int i = 0; i < N; i++) w[(size_t)i * n + (i * 7) % n] = 1;
    double best = 1e30;
    last_cpu = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (npred_model_input_gradient(m, "bench", img, N, NULL, NULL, w, g, rates)) die("input gradient");
        double dt = (now() - t0) / N, dc = (cpu() - c0) / N;
        if (dc < last_cpu) last_cpu = dc;
        if (dt < best) best = dt;
    }
    free(w);
    free(rates);
    return best;
}

/* seconds per image-iteration of a single-neuron plan run (the windowed path), best of reps */
static double time_plan(npred_model *m, int N, int n, const float *img, float *g, int reps, int *wh, int *ww,
                        int *local)
{
    int *neuron = malloc(sizeof(int) * (size_t)N);
    float *rates = malloc(sizeof(float) * (size_t)N);
    if (!neuron || !rates) die("out of memory");
    for (int i = 0; i < N; i++) neuron[i] = (i * 7) % n;
    npred_neuron_grad *plan = NULL;
    if (npred_neuron_grad_create(&plan, m, "bench", neuron, N, NULL, NULL)) die("plan");
    if (!(*local = npred_neuron_grad_is_local(plan, wh, ww))) die("the baseline should take the window path");
    double best = 1e30;
    last_cpu = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        if (npred_neuron_grad_run(plan, img, g, rates)) die("plan run");
        double dt = (now() - t0) / N, dc = (cpu() - c0) / N;
        if (dc < last_cpu) last_cpu = dc;
        if (dt < best) best = dt;
    }
    npred_neuron_grad_free(plan);
    free(neuron);
    free(rates);
    return best;
}

/* seconds of a whole npred_mei_optimize run: N neurons, `iters` iterations */
static double time_mei(npred_model *m, int N, int n, int iters)
{
    npred_mei_config cfg;
    npred_mei_config_default(&cfg);
    cfg.num_iterations = iters - 1;
    float *w = calloc((size_t)N * n, sizeof *w), *meis = malloc(sizeof(float) * 36 * 64 * N);
    if (!w || !meis) die("out of memory");
    for (int i = 0; i < N; i++) w[(size_t)i * n + (i * 7) % n] = 1;
    double t0 = now(), c0 = cpu();
    if (npred_mei_optimize(m, "bench", &cfg, w, N, NULL, NULL, NULL, meis, NULL, NULL, NULL, NULL, NULL)) die("mei");
    double dt = now() - t0;
    last_cpu = cpu() - c0;
    free(w);
    free(meis);
    return dt;
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
    printf("  per image-iteration (forward + input backward); 1,000 neurons x 1,000 iterations extrapolated\n");
    float *img = malloc(sizeof(float) * 36 * 64 * 64), *g = malloc(sizeof(float) * 36 * 64 * 64);
    if (!img || !g) die("out of memory");
    npred_rng_seed(&rng, 2);
    for (int i = 0; i < 36 * 64 * 64; i++) img[i] = (float)npred_rng_normal(&rng);
    double full1 = time_full(m, 1, n, img, g, 5);
    double full64 = time_full(m, 64, n, img, g, 2);
    printf("  whole image (npred_model_input_gradient), 1 image:   %7.2f ms -> %7.1f min\n", 1e3 * full1,
           full1 * 1e6 / 60);
    printf("  whole image (npred_model_input_gradient), 64 images: %7.2f ms -> %7.1f min (CPU %.2f ms)\n",
           1e3 * full64, full64 * 1e6 / 60, 1e3 * last_cpu);
    int sizes[] = {1, 8, 64}, wh = 0, ww = 0, local = 0;
    double last64 = 0, cpu64 = 0;
    for (int k = 0; k < 3; k++) {
        double t = time_plan(m, sizes[k], n, img, g, sizes[k] == 1 ? 20 : 5, &wh, &ww, &local);
        printf("  neuron %s, window %dx%d (npred_neuron_grad_run), %2d images: %7.2f ms -> %7.1f min (CPU %.2f ms)\n",
               local == 2 ? "cone" : "window core", wh, ww, sizes[k], 1e3 * t, t * 1e6 / 60, 1e3 * last_cpu);
        if (sizes[k] == 64) last64 = t, cpu64 = last_cpu;
    }
    const int mei_n = 64, mei_it = 50;
    double t = time_mei(m, mei_n, n, mei_it);
    printf("  whole MEI runs (npred_mei_optimize, %d neurons x %d iterations, defaults): %.2f s = %.2f ms per "
           "image-iteration -> %.1f min (CPU %.2f ms)\n",
           mei_n, mei_it, t, 1e3 * t / (mei_n * mei_it), t / (mei_n * mei_it) * 1e6 / 60,
           1e3 * last_cpu / (mei_n * mei_it));
    printf("  PyTorch 1.13 (sinzlab/mei, one neuron at a time, 2 threads): 10.7 ms per iteration -> about 3 hours\n");
    printf("  goal (<= 10 min for 1,000 x 1,000 on 2 cores): window path with 64 images %.1f min by the wall clock, "
           "%.1f min of CPU over %d threads\n",
           last64 * 1e6 / 60, cpu64 * 1e6 / 60 / omp_get_max_threads(), omp_get_max_threads());
    free(img);
    free(g);
    npred_model_free(m);
    free(coords);
    free(cfg);
    return 0;
}
