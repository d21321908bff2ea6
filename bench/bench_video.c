/* Video models at the SENSORIUM 2023 sizes (36 x 64 frames, docs/video.md):
 *   - streaming: one push (frame in, rates out) of the kit's GRU benchmark encoder
 *     (RotationEquivariant2dCore hidden 8 x 8 rotations, kernels 9/7, 4 layers, no input
 *     padding; ConvGRU 64 -> 64, kernels 9/9; FullGaussian2d with the cortex grid
 *     predictor; MLP shifter) for 8,000 neurons: frames/s and the latency of one push
 *     (median, 99th percentile) on 1 thread (recorded for the make bench summary:
 *     stream_frames_s_1thread, stream_push_ms, stream_push_ms_p99) and on all threads;
 *     the large convolutions run by FFT as in any eval forward (kernels/conv2d_fft.h);
 *     NPRED_BENCH_VIDEO_FFT=0 runs them direct instead (for comparison; then nothing is
 *     recorded);
 *   - the Factorized3dCore of the kit's factorised benchmark with hidden_channels 32 in
 *     every layer (43faede takes one value; the kit writes [32, 64, 128]), kernels 11x11/11
 *     and 5x5/5, 3 layers, on clips of 2 x 3 x 40 frames: forward (train) and
 *     forward + backward in clips/s;
 *   - one training step of the GRU benchmark as the kit trains it (batch 8 clips of 80
 *     frames, 3 channels, 36 x 64, 8,000 neurons): train forward, the kit's loss
 *     (npred_video_poisson_loss against the last T' response frames, loss scale), backward,
 *     the regularizers, one AdamW step; seconds per step (summary key
 *     video_gru_train_step_s; about 7.6 GB of memory). NPRED_BENCH_VIDEO_BATCH / _FRAMES
 *     shrink it (then nothing is recorded); NPRED_BENCH_VIDEO_ONLY=train runs it alone.
 * Parameters are random (values do not change the work). The machine is shared and
 * small: quote the load average with any number. */
#include <cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_check.h"
#include "bench_report.h"
#include "kernels/conv2d_fft.h"
#include "model/video_encoder.h"
#include "train/adam.h"
#include "train/video_trainer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fill(npred_ptable *t, npred_rng *rng)
{
    for (size_t i = 0; i < t->n_params; i++) t->data[i] = (float)(0.05 * npred_rng_normal(rng));
}

static const char *gru_model =
    "{\"seed\": 1, \"core_type\": \"2D_equivariant\", \"core_dict\": {\"input_channels\": 3, \"hidden_channels\": 8,"
    " \"input_kern\": 9, \"hidden_kern\": 7, \"layers\": 4, \"num_rotations\": 8, \"gamma_input\": 500, \"skip\": 0,"
    " \"pad_input\": false, \"final_nonlinearity\": false, \"bias\": true, \"momentum\": 0.9, \"batch_norm\": true,"
    " \"hidden_dilation\": 1, \"laplace_padding\": null, \"input_regularizer\": \"LaplaceL2norm\", \"stack\": -1,"
    " \"depth_separable\": false, \"linear\": false, \"attention_conv\": false, \"hidden_padding\": null,"
    " \"use_avg_reg\": false, \"final_batchnorm_scale\": true, \"gamma_hidden\": 500000},"
    " \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2, \"init_sigma\": 1.0,"
    " \"gamma_readout\": 0.0, \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\","
    " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}},"
    " \"use_gru\": true, \"gru_dict\": {\"input_channels\": 64, \"rec_channels\": 64, \"input_kern\": 9, \"rec_kern\": 9,"
    " \"gamma_rec\": 0}, \"use_shifter\": true, \"shifter_type\": \"MLP\", \"shifter_dict\": {\"gamma_shifter\": 0,"
    " \"shift_layers\": 3, \"input_channels_shifter\": 2, \"hidden_channels_shifter\": 5}, \"elu_offset\": 0.0}";

static const char *factorized_model =
    "{\"seed\": 1, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": 3, \"hidden_channels\": 32,"
    " \"spatial_input_kernel\": [11, 11], \"temporal_input_kernel\": 11, \"spatial_hidden_kernel\": [5, 5],"
    " \"temporal_hidden_kernel\": 5, \"stride\": 1, \"layers\": 3, \"gamma_input_spatial\": 10,"
    " \"gamma_input_temporal\": 0.01, \"bias\": true, \"hidden_nonlinearities\": \"elu\", \"x_shift\": 0, \"y_shift\": 0,"
    " \"batch_norm\": true, \"laplace_padding\": null, \"input_regularizer\": \"LaplaceL2norm\", \"padding\": false,"
    " \"final_nonlin\": true, \"momentum\": 0.7}, \"readout_type\": \"gaussian\", \"readout_dict\": {}, \"use_gru\": false,"
    " \"use_shifter\": false}";

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* CPU time of the whole process (all threads): what a step costs in core-seconds */
static double process_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Pushes of one frame on `threads` threads (a new stream, its first push not timed):
 * frames/s over them all, the median and 99th percentile push. */
static void stream_run(npred_video_encoder *e, const float *frame, const float *pc, float *rates, int threads,
                       double *fps, double *med, double *p99)
{
    enum { MAXP = 400 };
    static double ms[MAXP], cpu[MAXP];
    omp_set_num_threads(threads);
    npred_video_encoder_stream_reset(e);
    BENCH_OK(npred_video_encoder_stream_push(e, 0, frame, pc, 1, rates, NULL));
    int pushes = 0;
    double t0 = now();
    while (pushes < MAXP && (pushes < 20 || now() - t0 < 8.0)) {
        double a = now(), c = cpu_now();
        BENCH_OK(npred_video_encoder_stream_push(e, 0, frame, pc, 1, rates, NULL));
        cpu[pushes] = 1e3 * (cpu_now() - c);
        ms[pushes++] = 1e3 * (now() - a);
    }
    *fps = pushes / (now() - t0);
    qsort(ms, (size_t)pushes, sizeof *ms, cmp_double);
    *med = ms[pushes / 2];
    *p99 = ms[(int)(0.99 * (pushes - 1))];
    qsort(cpu, (size_t)pushes, sizeof *cpu, cmp_double);
    printf("GRU benchmark stream, 8000 neurons @ 36x64, %d thread%s: %6.2f frames/s (%d pushes), push median %.1f ms, "
           "p99 %.1f ms, min %.1f ms", threads, threads == 1 ? " " : "s", *fps, pushes, *med, *p99, ms[0]);
    /* on one thread, its CPU time is what a push costs whatever else the machine runs */
    if (threads == 1) printf("; CPU time per push median %.1f ms (%.1f frames/s)", cpu[pushes / 2], 1e3 / cpu[pushes / 2]);
    printf("\n");
}

static void bench_stream(void)
{
    cJSON *j = cJSON_Parse(gru_model);
    npred_video_encoder_config cfg;
    BENCH_OK(npred_video_encoder_config_from_cjson(&cfg, j, "bench"));
    cJSON_Delete(j);
    const char *key = "s";
    int n = 8000;
    npred_video_encoder e;
    BENCH_OK(npred_video_encoder_create(&e, &cfg, 3, 1, 36, 64, 1, &key, &n, 1));
    npred_rng rng;
    npred_rng_seed(&rng, 3);
    fill(&e.t, &rng);
    float *frame = malloc(3 * 36 * 64 * sizeof *frame), *rates = malloc((size_t)n * sizeof *rates), pc[2] = {0.1f, -0.2f};
    for (int i = 0; i < 3 * 36 * 64; i++) frame[i] = (float)npred_rng_normal(&rng);
    int dflt = omp_get_max_threads();
    const char *fft = getenv("NPRED_BENCH_VIDEO_FFT");
    int direct = fft && !strcmp(fft, "0");
    if (fft && !direct && strcmp(fft, "1")) {
        fprintf(stderr, "bench_video: NPRED_BENCH_VIDEO_FFT must be 0 or 1, not '%s'\n", fft);
        exit(1);
    }
    if (direct) npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_NEVER);
    printf("convolutions: %s\n", direct ? "direct (NPRED_BENCH_VIDEO_FFT=0)" : "the large ones by FFT");
    double fps, med, p99;
    stream_run(&e, frame, pc, rates, 1, &fps, &med, &p99);
    if (!direct) {
        bench_record("stream_frames_s_1thread", fps, 1);
        bench_record("stream_push_ms", med, 1);
        bench_record("stream_push_ms_p99", p99, 1);
    }
    if (dflt > 1) stream_run(&e, frame, pc, rates, dflt, &fps, &med, &p99);
    omp_set_num_threads(dflt);
    free(frame), free(rates);
    npred_video_encoder_free(&e);
}

static void bench_factorized(void)
{
    cJSON *j = cJSON_Parse(factorized_model);
    npred_video_encoder_config cfg;
    BENCH_OK(npred_video_encoder_config_from_cjson(&cfg, j, "bench"));
    cJSON_Delete(j);
    npred_core3d_config cc = cfg.core;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core3d core;
    int B = 2, T = 40;
    BENCH_OK(npred_core3d_declare(&core, &cc, "core.", T, 36, 64, &t));
    BENCH_OK(npred_ptable_alloc(&t));
    BENCH_OK(npred_core3d_setup(&core, &t, B));
    npred_core3d_init_buffers(&core, &t);
    npred_rng rng;
    npred_rng_seed(&rng, 5);
    fill(&t, &rng);
    size_t nx = (size_t)B * 3 * T * 36 * 64, ny = (size_t)B * core.out_c * core.out_t * core.out_h * core.out_w;
    float *x = malloc(nx * sizeof *x), *dx = malloc(nx * sizeof *dx), *dy = malloc(ny * sizeof *dy);
    for (size_t i = 0; i < nx; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < ny; i++) dy[i] = (float)npred_rng_normal(&rng);
    for (int mode = 0; mode < 2; mode++) {
        int iters = 0;
        double t0 = now();
        while (iters < 2 || (now() - t0 < 6.0 && iters < 50)) {
            const float *y;
            BENCH_OK(npred_core3d_forward(&core, &t, x, B, 1, &y));
            if (mode) {
                memset(dx, 0, nx * sizeof *dx);
                BENCH_OK(npred_core3d_backward(&core, &t, dy, dx));
            }
            iters++;
        }
        printf("Factorized3dCore 3x32, 11/5 @ %dx3x%dx36x64 -> %d frames: %-16s %7.2f clips/s (%d iterations)\n", B, T,
               core.out_t, mode ? "forward+backward" : "forward", iters * (double)B / (now() - t0), iters);
    }
    free(x), free(dx), free(dy);
    npred_core3d_free(&core);
    npred_ptable_free(&t);
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static void bench_train_step(void)
{
    cJSON *j = cJSON_Parse(gru_model);
    npred_video_encoder_config cfg;
    BENCH_OK(npred_video_encoder_config_from_cjson(&cfg, j, "bench"));
    cJSON_Delete(j);
    const char *key = "s";
    int n = 8000, B = env_int("NPRED_BENCH_VIDEO_BATCH", 8), T = env_int("NPRED_BENCH_VIDEO_FRAMES", 80);
    npred_video_encoder e;
    BENCH_OK(npred_video_encoder_create(&e, &cfg, 3, T, 36, 64, 1, &key, &n, B));
    npred_rng rng;
    npred_rng_seed(&rng, 7);
    fill(&e.t, &rng);
    int T1 = e.out_t;
    size_t nv = (size_t)B * 3 * T * 36 * 64, nr = (size_t)B * n * T, no = (size_t)B * T1 * n;
    float *videos = malloc(nv * sizeof *videos), *resp = malloc(nr * sizeof *resp), *dout = malloc(no * sizeof *dout);
    float *pupil = malloc((size_t)B * 2 * T * sizeof *pupil);
    if (!videos || !resp || !dout || !pupil) {
        fprintf(stderr, "bench_video: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < nv; i++) videos[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < nr; i++) resp[i] = (float)npred_rng_uniform(&rng) * 2.0f;
    for (int i = 0; i < B * 2 * T; i++) pupil[i] = (float)(0.1 * npred_rng_normal(&rng));
    npred_adam adam;
    npred_adam_params ap = npred_adam_default_params();
    ap.lr = 0.005, ap.weight_decay = 0.01, ap.decoupled = 1;
    BENCH_OK(npred_adam_init(&adam, e.t.n_params, &ap));
    /* the first step (page faults, caches) is measured too when no second one fits in 20 s */
    double scale = sqrt(700.0 / B), first = 0, best = 1e30, first_cpu = 0, best_cpu = 1e30, t0 = now();
    int steps = 0;
    while (steps < 1 || (now() - t0 < 20.0 && steps < 5)) {
        double a = now(), ac = process_cpu(), v = 0, cs, ct, cr;
        npred_ptable_zero_grad(&e.t);
        BENCH_OK(npred_video_encoder_forward(&e, 0, videos, pupil, B, 1, &rng, NULL, NULL));
        BENCH_OK(npred_video_poisson_loss(&v, dout, e.out, resp, B, T1, n, T, scale));
        BENCH_OK(npred_video_encoder_backward(&e, dout, NULL, NULL));
        BENCH_OK(npred_video_encoder_regularizer(&e, 0, 1.0, &cs, &ct, &cr));
        BENCH_OK(npred_adam_step(&adam, e.t.data, e.t.grad));
        double d = now() - a, dc = process_cpu() - ac;
        if (!steps) first = d, first_cpu = dc;
        else {
            if (d < best) best = d;
            if (dc < best_cpu) best_cpu = dc;
        }
        steps++;
    }
    if (steps == 1) best = first, best_cpu = first_cpu;
    printf("GRU benchmark train step, %d x %d frames x 36x64, 8000 neurons: %.2f s (%s; %.2f clips/s); CPU time of "
           "all threads %.2f s\n", B, T, best, steps > 1 ? "best after a warm-up step" : "one step", B / best, best_cpu);
    if (B == 8 && T == 80) bench_record("video_gru_train_step_s", best, omp_get_max_threads());
    npred_adam_free(&adam);
    free(videos), free(resp), free(dout), free(pupil);
    npred_video_encoder_free(&e);
}

int main(void)
{
    bench_report_init("video");
    printf("threads: %d\n", omp_get_max_threads());
    const char *only = getenv("NPRED_BENCH_VIDEO_ONLY"); /* "stream", "factorized" or "train": that part alone */
    if (!only || !strcmp(only, "stream")) bench_stream();
    if (!only || !strcmp(only, "factorized")) bench_factorized();
    if (!only || !strcmp(only, "train")) bench_train_step();
    return 0;
}
