/* Single-image latency through the public API: the SENSORIUM sota checkpoint
 * (../shared/checkpoints/sensorium_sota_model.pth, 7,776 neurons) is opened for
 * batch 1 and one 36x64 image is predicted repeatedly. Median, p99 and minimum
 * over 200 calls (after 20 warm-up calls), with 1 thread and with the default
 * thread count. Skipped, with a message, when the checkpoint is absent.
 *
 *   ./build/bench/bench_latency [checkpoint.pth] [calls]
 *
 * The last line is machine-readable: "latency_ms_1thread=... latency_ms_default_threads=...";
 * the two medians are recorded for the `make bench` summary (bench_report.h). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "npred/model.h"
#include "bench_check.h"
#include "bench_report.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* times (ms) of `calls` predictions with `threads` OpenMP threads, sorted */
static void run(npred_model *m, const char *key, const float *img, float *out, int threads, int calls, double *ms)
{
    BENCH_OK(npred_set_threads(threads));
    for (int i = 0; i < 20; i++) BENCH_OK(npred_model_predict(m, key, img, 1, NULL, NULL, out));
    for (int i = 0; i < calls; i++) {
        double t0 = now();
        BENCH_OK(npred_model_predict(m, key, img, 1, NULL, NULL, out));
        ms[i] = 1e3 * (now() - t0);
    }
    qsort(ms, (size_t)calls, sizeof *ms, cmp);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "../shared/checkpoints/sensorium_sota_model.pth";
    int calls = argc > 2 ? atoi(argv[2]) : 200;
    if (calls < 10 || calls > 100000) {
        fprintf(stderr, "bench_latency: calls %s: expected 10..100000\n", argv[2]);
        return 1;
    }
    bench_report_init("latency");
    if (access(path, R_OK) != 0) {
        printf("bench_latency: skipped: checkpoint %s not found\n", path);
        bench_note("latency_ms_1thread", "bench_latency: the sota checkpoint (../shared/checkpoints) is absent");
        bench_note("latency_ms_default_threads", "bench_latency: the sota checkpoint (../shared/checkpoints) is absent");
        return 0;
    }
    int dflt = npred_threads();
    npred_model *m;
    BENCH_OK(npred_model_open(&m, path, 36, 64, 1));
    const char *key = npred_model_session_key(m, 0);
    int c, h, w, n = npred_model_session_neurons(m, 0);
    npred_model_input_shape(m, &c, &h, &w);
    float *img = malloc(sizeof(float) * (size_t)c * h * w), *out = malloc(sizeof(float) * (size_t)n);
    double *ms = malloc(sizeof(double) * (size_t)calls);
    if (!img || !out || !ms) {
        fprintf(stderr, "bench_latency: out of memory\n");
        return 1;
    }
    unsigned s = 12345;
    for (int i = 0; i < c * h * w; i++) { /* a fixed pseudo-random image */
        s = s * 1103515245u + 12345u;
        img[i] = (float)((s >> 8) & 0xffff) / 65536.0f * 2.0f - 1.0f;
    }
    printf("bench_latency: %s, session %s, %d neurons, image %dx%dx%d, %d calls\n", path, key, n, c, h, w, calls);
    double med[2];
    int th[2] = {1, dflt};
    for (int k = 0; k < 2; k++) {
        run(m, key, img, out, th[k], calls, ms);
        med[k] = ms[calls / 2];
        printf("  %d thread%s: median %.3f ms  p99 %.3f ms  min %.3f ms\n", th[k], th[k] == 1 ? " " : "s", med[k],
               ms[(int)(0.99 * (calls - 1))], ms[0]);
    }
    printf("latency_ms_1thread=%.3f latency_ms_default_threads=%.3f\n", med[0], med[1]);
    bench_record("latency_ms_1thread", med[0], 1);
    bench_record("latency_ms_default_threads", med[1], dflt);
    BENCH_OK(npred_set_threads(dflt));
    free(img), free(out), free(ms);
    npred_model_free(m);
    return 0;
}
