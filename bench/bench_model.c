/* Whole-model throughput: forward (eval) and train step (train-mode forward +
 * backward, no optimizer) in images/s, with a per-stage breakdown.
 *
 *   (a) the SENSORIUM baseline (4 layers, 9x9 input conv, depth-separable 7x7,
 *       64 channels, FullGaussian2d with the cortex grid-mean predictor) on
 *       1x36x64 images, 7,776 neurons, batch 128 and 32;
 *   (b) the readouts tutorial model (same core, padded input) with
 *       FullFactorized2d, 8,000 neurons, on 1x36x64 at batch 32;
 *   (c) the same model on 1x144x256, 8,372 neurons, legacy Gaussian2d at batch
 *       32, and FullFactorized2d when asked (NPRED_BENCH_FACTORIZED) and the
 *       machine has the memory.
 *
 *   (d) the baseline of (a) at batch 32 and the FullFactorized2d model of (b) in
 *       bf16 precision (npred_model_set_precision: the GEMM convolutions and
 *       FullFactorized2d's GEMMs in bfloat16, fp32 accumulation) where the CPU has
 *       AVX-512 BF16.
 *
 * Records (bench_report.h) the summary's train_img_s_36x64_b32/_b128,
 * forward_img_s_36x64_b32, train_img_s_144x256_b32, factorized_train_step_s and
 * the bf16 figures train_img_s_36x64_b32_bf16 / forward_img_s_36x64_b32_bf16 /
 * factorized_train_step_s_bf16.
 *
 * Every case runs with the model's activation recomputation in its default mode,
 * auto (npred_model_set_recompute; docs/performance.md), or the one that
 * NPRED_BENCH_RECOMPUTE (auto, on or off) names; each case prints whether its
 * forwards recomputed.
 *
 * Reported times are medians over a few repetitions; the stage breakdown times
 * the same kernels the core calls, one by one, on the model's own buffers. The
 * machine is small and shared: expect noise of 10-20 %. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/gemm.h"
#include "model/model.h"
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

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_model: %s: %s\n", what, npred_last_error());
    exit(1);
}

#define MAXREP 9

/* per-stage medians in ms */
typedef struct {
    double core_f, ro_f, ro_b, core_b;
    double conv_f[NPRED_CORE_MAXLAYERS][3], conv_b[NPRED_CORE_MAXLAYERS][3];
    double bn_f[NPRED_CORE_MAXLAYERS], bn_b[NPRED_CORE_MAXLAYERS];
    double act_f[NPRED_CORE_MAXLAYERS], act_b[NPRED_CORE_MAXLAYERS];
} stages;

static npred_conv2d_params conv_p(const npred_core_layer *L, int i, int B)
{
    npred_conv2d_params p = L->cp[i];
    p.n = B;
    return p;
}

/* Time every kernel of the core, layer by layer, on the buffers of the last
 * training forward (values are recomputed in place, so the state is unchanged
 * apart from BatchNorm's running statistics and the parameter gradients). */
static void core_kernels(npred_model *m, int B, int reps, stages *st)
{
    npred_core *core = &m->core;
    npred_ptable *t = &m->t;
    double tt[MAXREP];
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core_layer *L = &core->L[l];
        const float *in = l ? core->L[l - 1].out : core->x;
        const float *src[3] = {in, L->t[0], L->t[1]};
        float *dst[3] = {L->t[0], L->t[1], L->z};
        if (!L->ds) dst[0] = L->z;
        size_t n = (size_t)B * L->cout * L->hout * L->wout;
        for (int i = 0; i < L->nconv; i++) {
            npred_conv2d_params p = conv_p(L, i, B);
            const float *w = npred_ptable_ptr(t, L->p_w[i]);
            float *gw = npred_ptable_gradptr(t, L->p_w[i]);
            for (int r = 0; r < reps; r++) {
                double t0 = now();
                if (npred_conv2d_forward(dst[i], src[i], w, NULL, &p, core->ws, core->ws_bytes)) die("conv");
                tt[r] = now() - t0;
            }
            st->conv_f[l][i] = 1e3 * median(tt, reps);
            /* backward: dW always, dx except for the first layer (as the core does) */
            size_t nin = (size_t)B * p.c * p.h * p.w;
            for (int r = 0; r < reps; r++) {
                memset(core->g[1], 0, nin * sizeof(float));
                double t0 = now();
                if (npred_conv2d_backward(l || i ? core->g[1] : NULL, gw, NULL, core->g[0], src[i], w, &p, core->ws,
                                          core->ws_bytes))
                    die("conv backward");
                tt[r] = now() - t0;
            }
            st->conv_b[l][i] = 1e3 * median(tt, reps);
        }
        const float *gam = npred_ptable_ptr(t, L->p_gamma), *bet = npred_ptable_ptr(t, L->p_beta);
        float *dgam = npred_ptable_gradptr(t, L->p_gamma), *dbet = npred_ptable_gradptr(t, L->p_beta);
        float xs = core->act.xshift, ys = core->act.yshift;
        for (int r = 0; r < reps; r++) {
            int64_t cnt = 0;
            double t0 = now();
            if (L->fused)
                npred_batchnorm2d_elu_forward(L->a, L->mean, L->invstd, NULL, NULL, &cnt, L->z, gam, bet, B, L->cout,
                                              L->hout, L->wout, 1, 0.1, 1e-5, xs, ys);
            else
                npred_batchnorm2d_forward(L->v, L->mean, L->invstd, NULL, NULL, &cnt, L->z, gam, bet, B, L->cout,
                                          L->hout, L->wout, 1, 0.1, 1e-5);
            tt[r] = now() - t0;
        }
        st->bn_f[l] = 1e3 * median(tt, reps);
        for (int r = 0; r < reps; r++) {
            memset(core->g[2], 0, n * sizeof(float));
            double t0 = now();
            if (L->fused)
                npred_batchnorm2d_elu_backward(core->g[2], dgam, dbet, core->g[0], L->z, L->a, gam, L->mean,
                                               L->invstd, B, L->cout, L->hout, L->wout, 1, ys);
            else
                npred_batchnorm2d_backward(core->g[2], dgam, dbet, core->g[0], L->z, gam, L->mean, L->invstd, B,
                                           L->cout, L->hout, L->wout, 1);
            tt[r] = now() - t0;
        }
        st->bn_b[l] = 1e3 * median(tt, reps);
        if (L->fused) continue;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            BENCH_OK(npred_act_forward(L->a, L->u, n, &core->act));
            tt[r] = now() - t0;
        }
        st->act_f[l] = 1e3 * median(tt, reps);
        for (int r = 0; r < reps; r++) {
            memset(core->g[1], 0, n * sizeof(float));
            double t0 = now();
            BENCH_OK(npred_act_backward(core->g[1], core->g[0], L->u, L->a, n, &core->act));
            tt[r] = now() - t0;
        }
        st->act_b[l] = 1e3 * median(tt, reps);
    }
}

static const char *only;
static npred_recompute recompute = NPRED_RECOMPUTE_AUTO;

/* medians of a case: images/s forward and train step, seconds per train step */
typedef struct {
    double fwd_img_s, train_img_s, train_s;
} result;

static result run(const char *name, const char *config, int H, int W, int n, int B, int reps, int breakdown,
                  npred_precision prec)
{
    result res = {0, 0, 0};
    if (only && !strstr(name, only)) return res;
    npred_model_session s = {"bench", n, NULL, 2, NULL, NULL};
    double *coords = malloc(sizeof(double) * 2 * (size_t)n);
    npred_rng rng;
    npred_rng_seed(&rng, 7);
    for (int i = 0; i < 2 * n; i++) coords[i] = 800.0 * npred_rng_uniform(&rng) - 400.0; /* cortex, um */
    s.coords = coords;
    npred_model *m;
    double t0 = now();
    if (npred_model_create(&m, config, name, 1, H, W, &s, 1, B, 1)) die(name);
    if (npred_model_set_precision(m, prec)) die(name);
    if (npred_model_set_recompute(m, recompute)) die(name);
    double t_create = now() - t0;
    size_t nimg = (size_t)B * H * W;
    float *x = malloc(nimg * sizeof *x), *out = malloc((size_t)B * n * sizeof *out);
    float *dout = malloc((size_t)B * n * sizeof *dout);
    for (size_t i = 0; i < nimg; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < (size_t)B * n; i++) dout[i] = (float)(0.1 * npred_rng_normal(&rng));
    npred_session *se = &m->s[0];
    npred_ptable *t = &m->t;
    if (reps > MAXREP) reps = MAXREP;
    double tf[MAXREP], tt[MAXREP], cf[MAXREP], rf[MAXREP], rb[MAXREP], cb[MAXREP];
    /* warm-up (page faults, OpenMP pool) */
    if (npred_model_forward(m, 0, x, NULL, NULL, B, 1, &rng, NULL, out)) die("forward");
    if (npred_model_backward(m, dout, 0, NULL, NULL)) die("backward");
    for (int r = 0; r < reps; r++) {
        double a = now();
        if (npred_model_predict(m, "bench", x, B, NULL, NULL, out)) die("forward");
        tf[r] = now() - a;
    }
    for (int r = 0; r < reps; r++) {
        double a = now();
        npred_ptable_zero_grad(t);
        if (npred_model_forward(m, 0, x, NULL, NULL, B, 1, &rng, NULL, out)) die("forward");
        if (npred_model_backward(m, dout, 0, NULL, NULL)) die("backward");
        tt[r] = now() - a;
    }
    /* stages of a train step, timed separately */
    for (int r = 0; r < reps; r++) {
        double a = now();
        BENCH_OK(npred_core_forward(&m->core, t, x, B, 1));
        double b = now();
        BENCH_OK(npred_readout_forward(&se->ro, t, se->y, m->core.output, NULL, B, 1, &rng, NULL));
        double c = now();
        npred_readout_backward_set(&se->ro, t, dout, m->dcore, NULL); /* as the model: dcore written */
        double d = now();
        BENCH_OK(npred_core_backward(&m->core, t, m->dcore, NULL));
        double e = now();
        cf[r] = b - a, rf[r] = c - b, rb[r] = d - c, cb[r] = e - d;
    }
    stages st;
    memset(&st, 0, sizeof st);
    st.core_f = 1e3 * median(cf, reps);
    st.ro_f = 1e3 * median(rf, reps);
    st.ro_b = 1e3 * median(rb, reps);
    st.core_b = 1e3 * median(cb, reps);
    double mf = median(tf, reps), mt = median(tt, reps);
    res.fwd_img_s = B / mf;
    res.train_img_s = B / mt;
    res.train_s = mt;
    printf("%s, batch %d (%d neurons; %s; recompute %s; create %.2f s)\n", name, B, n, npred_precision_name(prec),
           npred_model_recomputes(m) ? (m->core.rc_keep_t0 ? "partial" : "on") : "off", t_create);
    printf("  forward (eval)     %8.1f images/s  %8.1f ms/batch\n", B / mf, 1e3 * mf);
    printf("  train step         %8.1f images/s  %8.1f ms/batch  (forward + backward, no optimizer)\n", B / mt,
           1e3 * mt);
    printf("  stages (train, ms): core forward %.1f | readout forward %.1f | readout backward %.1f | "
           "core backward %.1f\n",
           st.core_f, st.ro_f, st.ro_b, st.core_b);
    if (breakdown) {
        core_kernels(m, B, reps, &st);
        static const char *kind[2][3] = {{"conv", "", ""}, {"1x1 in", "depthwise", "1x1 out"}};
        for (int l = 0; l < m->core.cfg.layers; l++) {
            const npred_core_layer *L = &m->core.L[l];
            printf("    layer %d:", l);
            for (int i = 0; i < L->nconv; i++)
                printf(" %s %.1f/%.1f |", kind[L->ds][i], st.conv_f[l][i], st.conv_b[l][i]);
            if (L->fused)
                printf(" bn+elu %.1f/%.1f  (ms forward/backward)\n", st.bn_f[l], st.bn_b[l]);
            else
                printf(" bn %.1f/%.1f | elu %.1f/%.1f  (ms forward/backward)\n", st.bn_f[l], st.bn_b[l],
                       st.act_f[l], st.act_b[l]);
        }
    }
    fflush(stdout);
    npred_model_free(m);
    free(coords), free(x), free(out), free(dout);
    return res;
}

static double avail_gib(void)
{
    return (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0 * 1024.0);
}

int main(int argc, char **argv)
{
    bench_report_init("model");
    /* optional argument: only the cases whose name contains it (e.g. "baseline") */
    only = argc > 1 ? argv[1] : NULL;
    const char *rc = getenv("NPRED_BENCH_RECOMPUTE");
    if (rc && npred_recompute_parse(rc, &recompute)) {
        fprintf(stderr, "bench_model: NPRED_BENCH_RECOMPUTE=%s: expected auto, on, partial or off\n", rc);
        return 1;
    }
    printf("threads: %d (medians; shared machine, expect noise)\n", omp_get_max_threads());
    const char *baseline =
        "{\"layers\":4,\"input_kern\":9,\"hidden_kern\":7,\"hidden_channels\":64,\"depth_separable\":true,"
        "\"stack\":-1,\"pad_input\":false,\"gamma_input\":6.3831,\"gamma_readout\":0.0076,\"init_sigma\":0.1,"
        "\"init_mu_range\":0.3,\"gauss_type\":\"full\",\"grid_mean_predictor\":{\"type\":\"cortex\","
        "\"input_dimensions\":2,\"hidden_layers\":1,\"hidden_features\":30,\"final_tanh\":true}}";
    int thr = omp_get_max_threads();
    result r = run("baseline FullGaussian2d 36x64", baseline, 36, 64, 7776, 128, 5, 1, NPRED_PRECISION_FP32);
    if (r.train_s > 0) {
        bench_record("train_img_s_36x64_b128", r.train_img_s, thr);
        bench_record("forward_img_s_36x64_b128", r.fwd_img_s, thr);
    }
    r = run("baseline FullGaussian2d 36x64", baseline, 36, 64, 7776, 32, 7, 0, NPRED_PRECISION_FP32);
    if (r.train_s > 0) {
        bench_record("train_img_s_36x64_b32", r.train_img_s, thr);
        bench_record("forward_img_s_36x64_b32", r.fwd_img_s, thr);
    }
    if (!npred_gemm_bf16_available()) {
        bench_note("train_img_s_36x64_b32_bf16", "this CPU lacks AVX-512 BF16 (bf16 precision is refused)");
        bench_note("forward_img_s_36x64_b32_bf16", "this CPU lacks AVX-512 BF16 (bf16 precision is refused)");
    } else {
        r = run("baseline FullGaussian2d 36x64 bf16", baseline, 36, 64, 7776, 32, 7, 1, NPRED_PRECISION_BF16);
        if (r.train_s > 0) {
            bench_record("train_img_s_36x64_b32_bf16", r.train_img_s, thr);
            bench_record("forward_img_s_36x64_b32_bf16", r.fwd_img_s, thr);
        }
    }
    const char *tut =
        "{\"core\":{\"input_channels\":1,\"hidden_channels\":64,\"input_kern\":9,\"hidden_kern\":7,\"layers\":4,"
        "\"depth_separable\":true,\"stack\":-1,\"gamma_input\":6.3831},\"readout\":{\"type\":\"%s\"}}";
    char cfg[512];
    /* FullFactorized2d, 8,000 neurons on the padded core at 36x64 (bench-torch.md's row: 1.18 s per
     * train step in PyTorch): the readout is three GEMMs of 2*B*c*h*w*n = 7.5e10 FLOPs each */
    snprintf(cfg, sizeof cfg, tut, "FullFactorized2d");
    r = run("tutorial FullFactorized2d 36x64", cfg, 36, 64, 8000, 32, 3, 0, NPRED_PRECISION_FP32);
    if (r.train_s > 0) bench_record("factorized_train_step_s", r.train_s, thr);
    if (!npred_gemm_bf16_available()) {
        bench_note("factorized_train_step_s_bf16", "this CPU lacks AVX-512 BF16 (bf16 precision is refused)");
    } else {
        r = run("tutorial FullFactorized2d 36x64 bf16", cfg, 36, 64, 8000, 32, 3, 0, NPRED_PRECISION_BF16);
        if (r.train_s > 0) bench_record("factorized_train_step_s_bf16", r.train_s, thr);
    }
    snprintf(cfg, sizeof cfg, tut, "Gaussian2d");
    r = run("tutorial Gaussian2d 144x256", cfg, 144, 256, 8372, 32, 2, 0, NPRED_PRECISION_FP32);
    if (r.train_s > 0) bench_record("train_img_s_144x256_b32", r.train_img_s, thr);
    /* FullFactorized2d at 144x256: ~10 GB of activations plus 2 x 1.2 GB of spatial
     * weights and gradients, and minutes per run: only on request */
    if (getenv("NPRED_BENCH_FACTORIZED")) {
        if (avail_gib() > 16.0) {
            snprintf(cfg, sizeof cfg, tut, "FullFactorized2d");
            run("tutorial FullFactorized2d 144x256", cfg, 144, 256, 8372, 32, 2, 0, NPRED_PRECISION_FP32);
        } else {
            printf("tutorial FullFactorized2d 144x256: skipped (%.1f GiB available, needs ~16)\n", avail_gib());
        }
    }
    return 0;
}
