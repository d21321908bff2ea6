/* Training utilities at SENSORIUM sizes: Poisson loss forward + backward on a
 * (128, 8000) batch, one Adam step over 1.5 M parameters, single-trial correlation
 * and FEVE over (1000, 8000) responses. Times are medians of a few runs; the
 * machine is shared, so expect noise. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "train/adam.h"
#include "train/loss.h"
#include "npred/metrics.h"
#include "bench_check.h"

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

#define REPS 7
#define TIME(label, stmt)                                                              \
    do {                                                                               \
        double t_[REPS];                                                               \
        for (int r_ = 0; r_ < REPS; r_++) {                                            \
            double t0_ = now();                                                        \
            BENCH_OK(stmt);                                                            \
            t_[r_] = now() - t0_;                                                      \
        }                                                                              \
        qsort(t_, REPS, sizeof(double), cmp);                                          \
        printf("%-44s %9.3f ms (median of %d)\n", label, 1e3 * t_[REPS / 2], REPS);     \
    } while (0)

int main(void)
{
    const int64_t B = 128, n = 8000, P = 1500000, T = 1000;
    float *yh = malloc(sizeof(float) * B * n), *y = malloc(sizeof(float) * B * n);
    float *d = calloc((size_t)(B * n), sizeof(float));
    uint64_t s = 1;
    for (int64_t i = 0; i < B * n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        yh[i] = 0.1f + (float)(s >> 40) / (float)(1 << 24);
        y[i] = (float)((s >> 20) & 7) * 0.5f;
    }
    double loss;
    TIME("poisson forward (128 x 8000, sum)", npred_loss_poisson_forward(&loss, yh, y, B, n, NPRED_LOSS_SUM, 1e-12));
    TIME("poisson backward (128 x 8000, sum)",
         npred_loss_poisson_backward(d, NULL, yh, y, B, n, NPRED_LOSS_SUM, 1e-12));

    float *p = calloc((size_t)P, sizeof(float)), *g = malloc(sizeof(float) * P);
    for (int64_t i = 0; i < P; i++) g[i] = (float)((i % 17) - 8) * 1e-3f;
    npred_adam opt;
    BENCH_OK(npred_adam_init(&opt, (size_t)P, NULL));
    TIME("adam step (1.5 M parameters)", npred_adam_step(&opt, p, g));
    npred_adam_free(&opt);

    float *r = malloc(sizeof(float) * T * n), *q = malloc(sizeof(float) * T * n);
    int64_t *ids = malloc(sizeof(int64_t) * T);
    for (int64_t i = 0; i < T * n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        r[i] = (float)(s >> 40) / (float)(1 << 24);
        q[i] = 0.5f * r[i] + 0.5f * (float)((s >> 8) & 0xffff) / 65536.0f;
    }
    for (int64_t t = 0; t < T; t++) ids[t] = t % 100;
    double *c = malloc(sizeof(double) * n), *fev = malloc(sizeof(double) * n), *feve = malloc(sizeof(double) * n);
    npred_metrics_repeats rep;
    BENCH_OK(npred_metrics_repeats_init(&rep, ids, T));
    TIME("single-trial corr (1000 x 8000)", npred_metrics_corr(c, r, q, T, n, 1e-8, 1));
    TIME("fev + feve (1000 x 8000, 100 images x 10)", npred_metrics_fev(fev, feve, r, q, &rep, n));
    npred_metrics_repeats_free(&rep);
    free(yh); free(y); free(d); free(p); free(g); free(r); free(q); free(ids); free(c); free(fev); free(feve);
    return 0;
}
