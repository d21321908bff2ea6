/* Training throughput of the SENSORIUM baseline model (configs/sensorium_sota.json:
 * 4 layers, 64 channels, 9x9 input kernel, depth-separable 7x7, FullGaussian2d with
 * the cortex grid predictor) at 36x64, batch 128, 7,776 neurons, on random data (no
 * dataset files): one training step = forward (train mode) + k-scaled Poisson loss
 * + backward + regularizers + Adam step, exactly what the trainer does per batch
 * with one session. The seconds per epoch of a SENSORIUM-sized session (4,490 train
 * trials = 36 steps of 128, 1,000 validation trials in eval mode) are computed from
 * the measured step and eval times. The machine is shared: expect noise. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cores/stacked2d.h"
#include "model/model.h"
#include "readouts/readout.h"
#include "train/adam.h"
#include "train/loss.h"
#include "bench_check.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static const char *cfg =
    "{\"layers\": 4, \"input_kern\": 9, \"hidden_kern\": 7, \"hidden_channels\": 64, \"depth_separable\": true,"
    " \"stack\": -1, \"pad_input\": false, \"core_bias\": false, \"gamma_input\": 6.3831, \"gamma_readout\": 0.0076,"
    " \"init_sigma\": 0.1, \"init_mu_range\": 0.3, \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\":"
    " \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}}";

int main(void)
{
    enum { B = 128, H = 36, W = 64, N = 7776, TRAIN = 4490, VAL = 1000, TOTAL = 6955 };
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    double *coords = malloc(sizeof(double) * N * 3);
    for (int i = 0; i < N * 3; i++) coords[i] = 1000 * npred_rng_uniform(&rng);
    npred_model_session ses = {"26872-17-20", N, coords, 3, NULL, NULL};
    npred_model *m = NULL;
    if (npred_model_create(&m, cfg, "sensorium_sota", 1, H, W, &ses, 1, B, 42)) {
        fprintf(stderr, "bench_trainer: %s\n", npred_last_error());
        return 1;
    }
    npred_ptable *t = npred_model_table(m);
    float *x = malloc(sizeof(float) * B * H * W), *y = malloc(sizeof(float) * B * N);
    float *yhat = malloc(sizeof(float) * B * N), *dy = malloc(sizeof(float) * B * N);
    for (int i = 0; i < B * H * W; i++) x[i] = (float)npred_rng_normal(&rng);
    for (int i = 0; i < B * N; i++) y[i] = (float)floor(3 * npred_rng_uniform(&rng) * npred_rng_uniform(&rng));
    npred_adam adam;
    npred_adam_params ap = npred_adam_default_params();
    ap.lr = 0.009;
    BENCH_OK(npred_adam_init(&adam, t->n_params, &ap));
    double k = sqrt((double)TOTAL / B);

    printf("SENSORIUM baseline (sota config), 36x64, batch %d, %d neurons, %zu parameters, %d threads\n", B, N,
           npred_ptable_count(t, NULL), omp_get_max_threads());
    int reps = 4;
    double best = 1e30, sum = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = now();
        npred_ptable_zero_grad(t);
        BENCH_OK(npred_model_forward(m, 0, x, NULL, NULL, B, 1, &rng, NULL, yhat));
        double loss;
        BENCH_OK(npred_loss_poisson_forward(&loss, yhat, y, B, N, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
        memset(dy, 0, sizeof(float) * B * N);
        BENCH_OK(npred_loss_poisson_backward(dy, &k, yhat, y, B, N, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
        BENCH_OK(npred_model_backward(m, dy, 0, NULL, NULL));
        npred_core_regularizer(&m->core, t, 1.0);
        npred_readout_regularizer(&m->s[0].ro, t, 1.0);
        BENCH_OK(npred_adam_step(&adam, t->data, t->grad));
        double dt = now() - t0;
        if (r == 0) continue; /* warm-up */
        sum += dt;
        if (dt < best) best = dt;
    }
    double step = sum / reps;
    /* eval forward (validation pass) */
    double ev = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        BENCH_OK(npred_model_forward(m, 0, x, NULL, NULL, B, 0, NULL, NULL, yhat));
        double dt = now() - t0;
        if (r > 0 && dt < ev) ev = dt;
    }
    int steps = (TRAIN + B - 1) / B, val_batches = (VAL + B - 1) / B;
    printf("%-44s %9.1f ms (mean of %d; best %.1f ms)\n", "training step (batch 128)", 1e3 * step, reps, 1e3 * best);
    printf("%-44s %9.1f images/s   (PyTorch 1.13, 2 threads: 33 images/s at batch 32)\n", "training throughput",
           B / step);
    printf("%-44s %9.1f ms -> %.1f images/s\n", "eval forward (batch 128)", 1e3 * ev, B / ev);
    printf("%-44s %9.1f s  (%d steps + %d eval batches; PyTorch at 33 img/s: %.0f s)\n",
           "epoch of a SENSORIUM session (estimated)", steps * step + val_batches * ev, steps, val_batches,
           TRAIN / 33.0 + VAL / 131.0);
    npred_adam_free(&adam);
    npred_model_free(m);
    free(coords);
    free(x);
    free(y);
    free(yhat);
    free(dy);
    return 0;
}
