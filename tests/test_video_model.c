/* The public video model (npred/video_model.h): built from the kit's make_video_model
 * arguments of the three encoder fixtures, their weights loaded, predict through the
 * public handle equals the fixtures' eval outputs; save -> load gives bit-identical
 * predictions; a shorter clip gives the first frames (causality through the rebuilt
 * encoder); the initialisation's distributions and constants against the formulas of
 * neuralpredictors 43faede (every core type); a model built on
 * the mini_movie_tree scan and run on a loader batch; errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "model/video_model.h"
#include "npred/video.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    if (!tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/npred-test-vmodel-XXXXXX", t && *t ? t : "/tmp");
        if (!CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp %s failed", tmpdir)) tmpdir[0] = 0;
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

typedef struct {
    th_case c;
    char *config;
    int ns, B, C, T, H, W, T1;
    const char *keys[4];
    int nn[4];
    double *coords[4];
    npred_video_model_session s[4];
} vcase;

static int vcase_open(vcase *v, const char *name)
{
    memset(v, 0, sizeof *v);
    if (!th_case_open(&v->c, name)) return 0;
    v->config = cJSON_PrintUnformatted(th_get(v->c.json, "args", "make_video_model", NULL));
    cJSON *keys = th_get(v->c.json, "data_keys", NULL);
    v->ns = cJSON_GetArraySize(keys);
    if (!CHECK(v->config && v->ns >= 1 && v->ns <= 4, "%s: config and 1..4 sessions", name)) return 0;
    for (int i = 0; i < v->ns; i++) {
        v->keys[i] = cJSON_GetArrayItem(keys, i)->valuestring;
        v->nn[i] = (int)th_num(v->c.json, -1, "args", "n_neurons", v->keys[i], NULL);
        cJSON *f = th_get(v->c.json, "files", "sessions", v->keys[i], "cell_motor_coordinates", NULL);
        npred_array sh;
        v->coords[i] = cJSON_IsString(f) ? th_load_f64(&v->c, f->valuestring, &sh) : NULL;
        if (!CHECK(v->coords[i] && sh.ndim == 2 && sh.shape[0] == v->nn[i], "%s: coordinates of %s", name, v->keys[i]))
            return 0;
        v->s[i] = (npred_video_model_session){v->keys[i], v->nn[i], v->coords[i], (int)sh.shape[1], NULL};
    }
    cJSON *shape = th_get(v->c.json, "args", "input_shape", v->keys[0], NULL);
    v->B = cJSON_GetArrayItem(shape, 0)->valueint, v->C = cJSON_GetArrayItem(shape, 1)->valueint;
    v->T = cJSON_GetArrayItem(shape, 2)->valueint, v->H = cJSON_GetArrayItem(shape, 3)->valueint;
    v->W = cJSON_GetArrayItem(shape, 4)->valueint;
    v->T1 = (int)th_num(v->c.json, -1, "args", "output_frames", v->keys[0], NULL);
    return 1;
}

static void vcase_close(vcase *v)
{
    free(v->config);
    for (int i = 0; i < 4; i++) free(v->coords[i]);
    th_case_close(&v->c);
}

static float *load_input(vcase *v, const char *key, const char *what)
{
    cJSON *f = th_get(v->c.json, "files", "sessions", key, "inputs", what, NULL);
    return CHECK(cJSON_IsString(f), "%s: no input %s", v->c.name, what) ? th_load_f32(&v->c, f->valuestring, NULL) : NULL;
}

/* worst |a - b| / (atol + rtol |b|) */
static double worst_ratio(const float *a, const float *b, size_t n, double rtol, double atol)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) w = th_worst(w, fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i])));
    return w;
}

/* The fixture's weights in a model made through the public API: predict = output_eval;
 * save/load round trip bit-identical; chunks of one clip and a shorter clip agree. */
static void run_fixture(const char *name)
{
    vcase v;
    npred_video_model *m = NULL, *m2 = NULL, *m3 = NULL;
    float *out = NULL, *out2 = NULL, *vid[4] = {0}, *pup[4] = {0};
    if (!vcase_open(&v, name)) goto out;
    if (!CHECK_OK(npred_video_model_create(&m, v.config, name, v.C, v.H, v.W, v.s, v.ns, v.B))) goto out;
    CHECK(npred_video_model_output_frames(m, v.T) == v.T1, "%s: T' %d, fixture %d", name,
          npred_video_model_output_frames(m, v.T), v.T1);
    CHECK(npred_video_model_temporal_cutoff(m) == v.T - v.T1, "cut-off %d", npred_video_model_temporal_cutoff(m));
    CHECK(th_load_table(&v.c, &m->e->t, "params", "", NULL) == m->e->t.n, "every table entry loaded");
    int nmax = 0;
    for (int k = 0; k < v.ns; k++) nmax = v.nn[k] > nmax ? v.nn[k] : nmax;
    size_t nout = (size_t)v.B * v.T1 * nmax;
    out = malloc(nout * sizeof *out), out2 = malloc(nout * sizeof *out2);
    const char *dir = tmp_path(name);
    if (!CHECK(out && out2, "alloc") || !CHECK_OK(npred_video_model_save(m, dir))) goto out;
    if (!CHECK_OK(npred_video_model_load(&m2, dir, v.B)) || !CHECK_OK(npred_video_model_load(&m3, dir, 1))) goto out;
    CHECK(npred_video_model_probe(dir) == 1, "probe");
    CHECK(npred_video_model_n_sessions(m2) == v.ns && npred_video_model_has_shifter(m2) == 1, "getters after load");
    for (int k = 0; k < v.ns; k++) {
        CHECK(!strcmp(npred_video_model_session_key(m2, k), v.keys[k]) && npred_video_model_session_neurons(m2, k) == v.nn[k],
              "session %d after load", k);
        vid[k] = load_input(&v, v.keys[k], "videos"), pup[k] = load_input(&v, v.keys[k], "pupil_center");
        if (!vid[k] || !pup[k]) continue;
        size_t n = (size_t)v.B * v.T1 * v.nn[k];
        char rel[256];
        snprintf(rel, sizeof rel, "%s/output_eval.npy", v.keys[k]);
        if (CHECK_OK(npred_video_model_predict(m, v.keys[k], vid[k], v.B, v.C, v.T, v.H, v.W, pup[k], out)))
            th_compare_dims(&v.c, "forward", rel, out, TH_DIMS(v.B, v.T1, v.nn[k]));
        /* the loaded model: bit for bit */
        if (CHECK_OK(npred_video_model_predict(m2, v.keys[k], vid[k], v.B, v.C, v.T, v.H, v.W, pup[k], out2)))
            CHECK(!memcmp(out, out2, n * sizeof *out), "%s %s: save -> load changed the predictions", name, v.keys[k]);
        /* max_batch 1: the clips one at a time */
        if (CHECK_OK(npred_video_model_predict(m3, v.keys[k], vid[k], v.B, v.C, v.T, v.H, v.W, pup[k], out2))) {
            double w = worst_ratio(out2, out, n, 1e-5, 1e-6);
            CHECK(w <= 1, "%s %s: chunked predictions differ (%g of the tolerance)", name, v.keys[k], w);
        }
        /* the first T - 2 frames: the first T' - 2 outputs (causal), through a rebuilt encoder */
        int Ts = v.T - 2, T1s = v.T1 - 2;
        float *vs = malloc((size_t)v.B * v.C * Ts * v.H * v.W * sizeof *vs), *ps = malloc((size_t)v.B * 2 * Ts * sizeof *ps);
        if (vs && ps && T1s > 0) {
            size_t HW = (size_t)v.H * v.W;
            for (int b = 0; b < v.B; b++) {
                for (int c = 0; c < v.C; c++)
                    memcpy(vs + ((size_t)b * v.C + c) * Ts * HW, vid[k] + ((size_t)b * v.C + c) * v.T * HW,
                           Ts * HW * sizeof *vs);
                for (int j = 0; j < 2; j++)
                    memcpy(ps + ((size_t)b * 2 + j) * Ts, pup[k] + ((size_t)b * 2 + j) * v.T, Ts * sizeof *ps);
            }
            if (CHECK_OK(npred_video_model_predict(m2, v.keys[k], vs, v.B, v.C, Ts, v.H, v.W, ps, out2))) {
                double w = 0;
                for (int b = 0; b < v.B; b++)
                    w = th_worst(w, worst_ratio(out2 + (size_t)b * T1s * v.nn[k], out + (size_t)b * v.T1 * v.nn[k],
                                                (size_t)T1s * v.nn[k], 1e-5, 1e-6));
                CHECK(w <= 1, "%s %s: a shorter clip's outputs differ from the first frames (%g)", name, v.keys[k], w);
            }
        }
        free(vs), free(ps);
    }
out:
    for (int k = 0; k < 4; k++) free(vid[k]), free(pup[k]);
    free(out), free(out2);
    npred_video_model_free(m), npred_video_model_free(m2), npred_video_model_free(m3);
    vcase_close(&v);
}

static void test_fixture_factorized3d(void) { run_fixture("video_factorized3d_encoder"); }
static void test_fixture_gru(void) { run_fixture("video_gru_encoder"); }
static void test_fixture_gru_stacked2d(void) { run_fixture("video_gru_encoder_stacked2d"); }

/* The constants of make_video_model's init in a table: Conv3d / Conv2d / ConvGRU biases
 * 0, BatchNorm weight 1, bias 0, running mean 0, var 1, nothing tracked; FullGaussian2d
 * features 1/c. */
static void check_constants(const char *what, const npred_ptable *t, int c)
{
    int zero = 1, bnok = 1, fok = 1, nf = 0;
    for (int i = 0; i < t->n; i++) {
        const npred_param *p = &t->items[i];
        const float *x = npred_ptable_ptr(t, i);
        int conv_bias = (!strncmp(p->name, "core.", 5) || !strncmp(p->name, "gru_module.", 11)) &&
                        strstr(p->name, ".bias") && !strstr(p->name, "norm.");
        int features = !strncmp(p->name, "readout.", 8) && strstr(p->name, "._features");
        nf += features;
        for (size_t k = 0; k < p->count; k++) {
            if (conv_bias) zero &= x[k] == 0;
            if (strstr(p->name, "norm.weight") || strstr(p->name, "norm.running_var")) bnok &= x[k] == 1;
            if (strstr(p->name, "norm.bias") || strstr(p->name, "norm.running_mean") ||
                strstr(p->name, "num_batches_tracked"))
                bnok &= x[k] == 0;
            if (features) fok &= x[k] == 1.0f / c;
        }
    }
    CHECK(zero, "%s: every conv / ConvGRU bias is 0", what);
    CHECK(bnok, "%s: BatchNorm weight 1, bias 0, running mean 0, running var 1, no batches tracked", what);
    CHECK(nf > 0 && fok, "%s: readout features 1/%d", what, c);
}

/* the fixtures' configurations (every core type): the constants of the init */
static void test_init_constants(void)
{
    static const char *names[3] = {"video_factorized3d_encoder", "video_gru_encoder", "video_gru_encoder_stacked2d"};
    for (int i = 0; i < 3; i++) {
        vcase v;
        npred_video_model *m = NULL;
        if (vcase_open(&v, names[i]) &&
            CHECK_OK(npred_video_model_create(&m, v.config, names[i], v.C, v.H, v.W, v.s, v.ns, 1)))
            check_constants(names[i], &m->e->t, m->e->feat_c);
        npred_video_model_free(m);
        vcase_close(&v);
    }
}

/* mean and std of an entry against N(0, std) with n samples: the mean within 5 sigma
 * of its standard error, the std within 5 standard errors (sqrt(1 / 2n)) */
static void check_normal(const npred_ptable *t, const char *name, double std)
{
    int i = npred_ptable_find(t, name);
    if (!CHECK(i >= 0, "no entry %s", name)) return;
    const float *w = npred_ptable_ptr(t, i);
    size_t n = t->items[i].count;
    double s = 0, ss = 0;
    for (size_t k = 0; k < n; k++) s += w[k], ss += (double)w[k] * w[k];
    double mean = s / n, sd = sqrt(ss / n - mean * mean);
    CHECK(n >= 400, "%s: %zu samples", name, n);
    CHECK(fabs(mean) <= 5 * std / sqrt((double)n), "%s: mean %g (std %g, n %zu)", name, mean, std, n);
    CHECK(fabs(sd / std - 1) <= 5 * sqrt(0.5 / n), "%s: std %g, xavier_normal gives %g (n %zu)", name, sd, std, n);
}

static void check_uniform(const npred_ptable *t, const char *name, double a)
{
    int i = npred_ptable_find(t, name);
    if (!CHECK(i >= 0, "no entry %s", name)) return;
    const float *w = npred_ptable_ptr(t, i);
    size_t n = t->items[i].count;
    double lo = INFINITY, hi = -INFINITY, ss = 0;
    for (size_t k = 0; k < n; k++) lo = fmin(lo, w[k]), hi = fmax(hi, w[k]), ss += (double)w[k] * w[k];
    double sd = sqrt(ss / n), want = a / sqrt(3.0);
    CHECK(lo >= -a && hi <= a, "%s: values in [%g, %g], expected within +-%g", name, lo, hi, a);
    CHECK(fabs(sd / want - 1) <= 6 * sqrt(0.8 / n), "%s: rms %g, U(-%g, %g) gives %g (n %zu)", name, sd, a, a, want, n);
}

static const char *big_factorized =
    "{\"seed\": 7, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": 2, \"hidden_channels\": [12, 12],"
    " \"spatial_input_kernel\": [7, 7], \"temporal_input_kernel\": 5, \"spatial_hidden_kernel\": [5, 5],"
    " \"temporal_hidden_kernel\": 3, \"layers\": 2, \"stride\": 1, \"padding\": true, \"bias\": true,"
    " \"batch_norm\": true, \"final_nonlin\": true, \"momentum\": 0.7, \"gamma_input_spatial\": 10,"
    " \"gamma_input_temporal\": 0.01},"
    " \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2, \"init_sigma\": 0.5,"
    " \"gamma_readout\": 0.1, \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\","
    " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}},"
    " \"use_gru\": true, \"gru_dict\": {\"input_channels\": 12, \"rec_channels\": 16, \"input_kern\": 5,"
    " \"rec_kern\": 5, \"gamma_rec\": 0}, \"use_shifter\": true, \"shifter_type\": \"MLP\","
    " \"shifter_dict\": {\"shift_layers\": 3, \"hidden_channels_shifter\": 25}}";

/* Distributions and scales of a larger model's initialisation against the formulas */
static void test_init_distributions(void)
{
    enum { N = 300 };
    double *xy = malloc(sizeof(double) * N * 3);
    float *mean = malloc(sizeof(float) * N);
    npred_video_model *m = NULL, *m2 = NULL, *m3 = NULL;
    if (!CHECK(xy && mean, "alloc")) goto out;
    uint64_t r = 11;
    for (int i = 0; i < N * 3; i++) xy[i] = 200 * th_rand(&r);
    for (int i = 0; i < N; i++) mean[i] = 0.1f + 0.001f * i;
    npred_video_model_session s = {"scan-a", N, xy, 3, mean};
    if (!CHECK_OK(npred_video_model_create(&m, big_factorized, "big", 2, 36, 64, &s, 1, 1))) goto out;
    const npred_ptable *t = &m->e->t;
    /* Conv3d xavier_normal: std = sqrt(2 / ((in + out) * kt * kh * kw)) */
    check_normal(t, "core.features.layer0.conv_spatial.weight", sqrt(2.0 / ((2 + 12) * 49.0)));
    check_normal(t, "core.features.layer0.conv_temporal.weight", sqrt(2.0 / ((12 + 12) * 5.0)));
    check_normal(t, "core.features.layer1.conv_spatial_1.weight", sqrt(2.0 / ((12 + 12) * 25.0)));
    check_normal(t, "core.features.layer1.conv_temporal_1.weight", sqrt(2.0 / ((12 + 12) * 3.0)));
    /* ConvGRU gates: xavier_normal with (in, out) = (12, 16) and (16, 16), kernel 5x5 */
    static const char *gates[3] = {"reset", "update", "out"};
    for (int q = 0; q < 3; q++) {
        char nm[128];
        snprintf(nm, sizeof nm, "gru_module.gru.%s_gate_input.weight", gates[q]);
        check_normal(t, nm, sqrt(2.0 / ((12 + 16) * 25.0)));
        snprintf(nm, sizeof nm, "gru_module.gru.%s_gate_hidden.weight", gates[q]);
        check_normal(t, nm, sqrt(2.0 / ((16 + 16) * 25.0)));
    }
    /* FullGaussian2d: sigma U(-init_sigma, init_sigma) (full), features 1/c, bias = mean
     * activity, mu_transform nn.Linear's U(+-1/sqrt(in)) */
    check_uniform(t, "readout.scan-a.sigma", 0.5);
    check_uniform(t, "readout.scan-a.mu_transform.0.weight", 1 / sqrt(2.0));
    /* MLP shifter: nn.Linear's default U(+-1/sqrt(in)) (MLPShifter.initialize changes nothing) */
    check_uniform(t, "shifter.scan-a.mlp.2.weight", 1 / sqrt(25.0));
    check_constants("big", t, 16);
    int fi = npred_ptable_find(t, "readout.scan-a._features"), bi = npred_ptable_find(t, "readout.scan-a.bias");
    int gi = npred_ptable_find(t, "readout.scan-a.source_grid");
    if (CHECK(fi >= 0 && bi >= 0 && gi >= 0, "readout entries")) {
        int fok = 1, bok = 1;
        for (size_t k = 0; k < t->items[fi].count; k++) fok &= npred_ptable_ptr(t, fi)[k] == 1.0f / 16;
        for (int k = 0; k < N; k++) bok &= npred_ptable_ptr(t, bi)[k] == mean[k];
        CHECK(fok, "features 1/c (c = 16, the GRU's channels)");
        CHECK(bok, "readout bias = the mean activity given");
        /* source grid: the first 2 coordinates centred, divided by the largest |.| */
        double mx = 0, m0 = 0;
        const float *g = npred_ptable_ptr(t, gi);
        for (int k = 0; k < N; k++) mx = fmax(mx, fmax(fabs(g[2 * k]), fabs(g[2 * k + 1]))), m0 += g[2 * k];
        CHECK(fabs(mx - 1) < 1e-6 && fabs(m0 / N) < 1e-5, "source grid normalised (max %g, mean %g)", mx, m0 / N);
    }
    /* the seed: the same seed gives the same parameters, another seed others */
    if (CHECK_OK(npred_video_model_create(&m2, big_factorized, "big", 2, 36, 64, &s, 1, 1)))
        CHECK(!memcmp(m2->e->t.data, t->data, t->n_params * sizeof(float)), "same seed, same parameters");
    char *cfg2 = strdup(big_factorized);
    if (cfg2) {
        cfg2[9] = '8'; /* "seed": 8 */
        if (CHECK_OK(npred_video_model_create(&m3, cfg2, "big", 2, 36, 64, &s, 1, 1)))
            CHECK(memcmp(m3->e->t.data, t->data, t->n_params * sizeof(float)), "another seed, other parameters");
        free(cfg2);
    }
    CHECK(npred_video_model_temporal_cutoff(m) == 4 + 2, "cut-off (5 - 1) + (3 - 1) = %d",
          npred_video_model_temporal_cutoff(m));
out:
    free(xy), free(mean);
    npred_video_model_free(m), npred_video_model_free(m2), npred_video_model_free(m3);
}

/* A model built from the scan's own shapes and neurons, run on a loader batch */
static void test_mini_movie_tree(void)
{
    const char *scan = "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef";
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    float *rates = NULL, *mean = NULL;
    double *xy = NULL;
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    if (!CHECK_OK(npred_video_loader_config_parse(&lc, "{\"batch_size\": 2, \"frames\": 20, \"offset\": 3}", NULL, NULL)))
        goto out;
    if (!CHECK_OK(npred_video_loaders_open(&L, &scan, 1, &lc))) goto out;
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
    if (!CHECK(cm && cm->ndim == 2, "cell_motor_coordinates") || !CHECK_OK(npred_array_to_f64(cm, &xy))) goto out;
    int64_t trials[2] = {0, 1};
    if (!CHECK_OK(npred_video_batch_init(&b, L, 2)) || !CHECK_OK(npred_video_loaders_get(L, 0, trials, NULL, 2, NULL, &b)))
        goto out;
    int n = (int)si.n_neurons;
    mean = calloc((size_t)n, sizeof *mean);
    rates = malloc(sizeof(float) * 2 * 20 * (size_t)n);
    if (!CHECK(mean && rates, "alloc")) goto out;
    for (int k = 0; k < n; k++) { /* the kit: the batch's responses averaged over clips and frames */
        double s = 0;
        for (int i = 0; i < 2; i++)
            for (int f = 0; f < b.resp_f; f++) s += b.responses[((size_t)i * n + k) * b.resp_f + f];
        mean[k] = (float)(s / (2.0 * b.resp_f));
    }
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"seed\": 42, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": %d,"
             " \"hidden_channels\": 4, \"spatial_input_kernel\": [5, 5], \"temporal_input_kernel\": 3,"
             " \"spatial_hidden_kernel\": [3, 3], \"temporal_hidden_kernel\": 3, \"layers\": 2, \"padding\": true},"
             " \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2,"
             " \"init_sigma\": 1.0, \"gamma_readout\": 0.1, \"gauss_type\": \"full\", \"grid_mean_predictor\":"
             " {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30,"
             " \"final_tanh\": true}}, \"use_gru\": false, \"use_shifter\": true, \"shifter_type\": \"MLP\","
             " \"shifter_dict\": {\"shift_layers\": 3, \"hidden_channels_shifter\": 5}}",
             b.c);
    npred_video_model_session s = {si.data_key, n, xy, (int)cm->shape[1], mean};
    if (!CHECK_OK(npred_video_model_create(&m, cfg, "mini", b.c, b.h, b.w, &s, 1, 2))) goto out;
    int T1 = npred_video_model_output_frames(m, b.f);
    CHECK(T1 == b.f - 4, "T' %d of %d frames", T1, b.f);
    if (!CHECK_OK(npred_video_model_predict(m, si.data_key, b.videos, 2, b.c, b.f, b.h, b.w, b.pupil_center, rates)))
        goto out;
    int ok = 1;
    for (size_t i = 0; i < (size_t)2 * T1 * n; i++) ok &= rates[i] > 0 && isfinite(rates[i]);
    CHECK(ok, "rates positive and finite");
    char *d = npred_video_model_describe(m);
    CHECK(d && strstr(d, si.data_key) && strstr(d, "temporal cut-off: 4"), "describe: %s", d ? d : "(null)");
    free(d);
out:
    npred_video_batch_free(&b);
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&lc);
    npred_video_model_free(m);
    free(rates), free(mean), free(xy);
}

static void expect_error(npred_status st, npred_status want, const char *needle)
{
    CHECK(st == want, "status %d, expected %d (%s)", st, want, npred_last_error());
    CHECK(strstr(npred_last_error(), needle) != NULL, "error '%s' should mention '%s'", npred_last_error(), needle);
}

static void test_errors(void)
{
    vcase v;
    npred_video_model *m = NULL, *m2 = NULL;
    float *vid = NULL, *out = NULL;
    if (!vcase_open(&v, "video_gru_encoder")) goto out;
    if (!CHECK_OK(npred_video_model_create(&m, v.config, "gru", v.C, v.H, v.W, v.s, v.ns, v.B))) goto out;
    size_t nv = (size_t)v.B * v.C * v.T * v.H * v.W;
    vid = calloc(nv, sizeof *vid), out = calloc((size_t)v.B * v.T * 64, sizeof *out);
    float pup[2 * 2 * 64] = {0};
    if (!CHECK(vid && out && v.B <= 2 && v.T <= 64, "alloc")) goto out;
    expect_error(npred_video_model_predict(m, "nope", vid, v.B, v.C, v.T, v.H, v.W, pup, out), NPRED_ERR_ARG,
                 "unknown session 'nope'");
    expect_error(npred_video_model_predict(m, v.keys[0], vid, v.B, v.C, v.T, v.H + 1, v.W, pup, out), NPRED_ERR_SHAPE,
                 "frames; the model takes");
    expect_error(npred_video_model_predict(m, v.keys[0], vid, v.B, v.C + 1, v.T, v.H, v.W, pup, out), NPRED_ERR_SHAPE,
                 "channels");
    expect_error(npred_video_model_predict(m, v.keys[0], vid, v.B, v.C, v.T, v.H, v.W, NULL, out), NPRED_ERR_ARG,
                 "pupil_center");
    /* missing seed, missing coordinates */
    cJSON *j = cJSON_Parse(v.config);
    cJSON_DeleteItemFromObject(j, "seed");
    char *noseed = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    expect_error(npred_video_model_create(&m2, noseed, "cfg.json", v.C, v.H, v.W, v.s, v.ns, 1), NPRED_ERR_CONFIG,
                 "cfg.json: key 'seed'");
    free(noseed);
    npred_video_model_session s0 = v.s[0];
    s0.coords = NULL;
    expect_error(npred_video_model_create(&m2, v.config, "cfg", v.C, v.H, v.W, &s0, 1, 1), NPRED_ERR_ARG,
                 "cell_motor_coordinates");
    expect_error(npred_video_model_create(&m2, "{\"seed\": 1}", "cfg.json", v.C, v.H, v.W, v.s, v.ns, 1),
                 NPRED_ERR_CONFIG, "cfg.json");
    CHECK(m2 == NULL, "no model on errors");
    /* files: truncated, not a video model, missing */
    const char *dir = tmp_path("errors");
    if (!CHECK_OK(npred_video_model_save(m, dir))) goto out;
    char file[600], trunc[600];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(trunc, sizeof trunc, "%s", tmp_path("truncated.safetensors"));
    void *buf = NULL;
    size_t len = 0;
    if (CHECK_OK(npred_file_read_all(file, &buf, &len)) && CHECK_OK(npred_write_atomic(trunc, buf, len - 7))) {
        npred_status st = npred_video_model_load(&m2, trunc, 1);
        CHECK(st != NPRED_OK && strstr(npred_last_error(), "truncated.safetensors"), "truncated: %s", npred_last_error());
        CHECK(npred_video_model_probe(trunc) == 0, "a truncated file is no video model");
    }
    free(buf);
    expect_error(npred_video_model_load(&m2, tmp_path("absent"), 1), NPRED_ERR_IO, "absent");
    CHECK(npred_video_model_probe(tmp_path("absent")) == 0, "probe of a missing path");
    CHECK(npred_video_model_session_index(m, "nope") == -1 && npred_video_model_session_key(m, 9) == NULL &&
          npred_video_model_session_neurons(m, -1) == 0, "getters on bad indices");
    expect_error(npred_video_model_set_loader_json(m, "[1]"), NPRED_ERR_FORMAT, "not a JSON object");
    if (CHECK_OK(npred_video_model_set_loader_json(m, "{\"batch_size\": 1, \"frames\": 20}")) &&
        CHECK_OK(npred_video_model_save(m, dir)) && CHECK_OK(npred_video_model_load(&m2, dir, 1))) {
        const char *lj = npred_video_model_loader_json(m2);
        CHECK(lj && strstr(lj, "\"frames\":20"), "loader record saved: %s", lj ? lj : "(null)");
        char *cj = npred_video_model_config_json(m2);
        CHECK(cj && strstr(cj, "\"seed\":1201"), "config saved");
        free(cj);
    }
out:
    free(vid), free(out);
    npred_video_model_free(m), npred_video_model_free(m2);
    vcase_close(&v);
}

int main(void)
{
    RUN(test_fixture_factorized3d);
    RUN(test_fixture_gru);
    RUN(test_fixture_gru_stacked2d);
    RUN(test_init_constants);
    RUN(test_init_distributions);
    RUN(test_mini_movie_tree);
    RUN(test_errors);
    if (tmpdir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        th_shell(NULL, cmd);
    }
    return th_summary();
}
