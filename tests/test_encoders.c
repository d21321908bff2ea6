/* Distribution encoders (neuralpredictors HEAD ZIG/ZIL/Gamma/Gaussian encoders):
 * the zig_encoder fixture (HEAD ZIGEncoder + GeneralizedFullGaussianReadout2d), the
 * encoder head against an independent double-precision reference and finite
 * differences for every encoder and option, the generalized readout against P plain
 * FullGaussian2d readouts, GaussianLoss, the config and trainer rules, and `npred
 * train` end to end on simulated data with each encoder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gradcheck.h"
#include "harness.h"
#include "model/model.h"
#include "npred/data.h"
#include "npred/simulate.h"
#include "npred/train.h"
#include "train/loss.h"
#include "train/trainer_internal.h"

/* ------------------------------------------------------------ fixture --- */

/* table entry of a fixture key "enc.<name>" */
static int entry(npred_ptable *t, const char *key)
{
    return npred_ptable_find(t, strncmp(key, "enc.", 4) ? key : key + 4);
}

static void load_group(th_case *c, npred_ptable *t, const char *group)
{
    cJSON *g = th_get(c->json, "files", group, NULL), *it;
    CHECK(g != NULL, "no files.%s", group);
    int n = 0;
    cJSON_ArrayForEach(it, g)
    {
        int idx = entry(t, it->string);
        if (!CHECK(idx >= 0, "no table entry for %s", it->string)) continue;
        npred_array sh;
        float *v = th_load_f32(c, it->valuestring, &sh);
        if (v && CHECK(sh.count == t->items[idx].count, "%s: %zu values, table %zu", it->string, sh.count,
                       t->items[idx].count)) {
            memcpy(npred_ptable_ptr(t, idx), v, sh.count * sizeof(float));
            n++;
        }
        free(v);
    }
    CHECK(n == t->n, "%s: %d fixture entries, the model has %d (same state_dict)", group, n, t->n);
}

static void compare_group(th_case *c, npred_ptable *t, const char *group, int grads)
{
    cJSON *g = th_get(c->json, "files", group, NULL), *it;
    CHECK(g != NULL, "no files.%s", group);
    cJSON_ArrayForEach(it, g)
    {
        if (!strcmp(it->string, "input")) continue;
        int idx = entry(t, it->string);
        if (!CHECK(idx >= 0, "no table entry for %s", it->string)) continue;
        const float *v = grads ? npred_ptable_gradptr(t, idx) : npred_ptable_ptr(t, idx);
        if (!CHECK(v != NULL, "%s: no values", it->string)) continue;
        th_compare_dims(c, grads ? "grads" : "forward", it->valuestring, v, t->items[idx].ndim, t->items[idx].shape);
    }
}

static const char *ZIG_CFG =
    "{\"core\": {\"type\": \"Stacked2dCore\", \"neuralpredictors\": \"head\", \"hidden_channels\": 4,"
    " \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 2, \"gamma_input\": 0.5, \"bias\": true, \"stack\": -1},"
    " \"readout\": {\"type\": \"FullGaussian2d\", \"bias\": true, \"init_mu_range\": 0.3, \"init_sigma\": 0.1,"
    " \"gauss_type\": \"full\", \"feature_reg_weight\": 0.1},"
    " \"encoder\": {\"type\": \"ZIGEncoder\", \"zero_thresholds\": null, \"init_ks\": null,"
    " \"theta_image_dependent\": true, \"k_image_dependent\": false, \"loc_image_dependent\": false,"
    " \"q_image_dependent\": true, \"offset\": 1e-06}}";

static void test_zig_encoder_fixture(void)
{
    th_case c;
    if (!th_case_open(&c, "zig_encoder")) return;
    const char *key = "21067-10-18";
    npred_array is;
    float *x = th_load_f32(&c, "input.npy", &is), *noise = th_load_f32(&c, "noise.npy", NULL);
    float *up = th_load_f32(&c, "upstream.npy", NULL);
    int B = x ? (int)is.shape[0] : 0, n = 5;
    npred_model_session ses = {key, n, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    float *mean = calloc((size_t)B * n + 1, sizeof(float)), *var = calloc((size_t)B * n + 1, sizeof(float));
    float *dx = calloc(is.count + 1, sizeof(float));
    if (!x || !noise || !up || !CHECK_OK(npred_model_create(&m, ZIG_CFG, "zig", 1, 10, 12, &ses, 1, B, 1))) goto out;
    npred_ptable *t = npred_model_table(m);
    load_group(&c, t, "params");
    char *repr = npred_model_readout_repr(m, 0);
    CHECK(repr && strstr(repr, "full GeneralizedFullGaussianReadout2d (4 x 10 x 12 -> 5) with bias"), "repr %s",
          repr ? repr : "");
    free(repr);
    /* train step: BN batch statistics and the captured noise */
    npred_ptable_zero_grad(t);
    if (!CHECK_OK(npred_model_forward(m, 0, x, NULL, NULL, B, 1, NULL, noise, mean))) goto out;
    int K;
    float *dist = npred_model_dist(m, &K);
    if (!CHECK(dist && K == 4, "dist outputs: K %d", K)) goto out;
    th_compare_dims(&c, "forward", "output.npy", dist, TH_DIMS(4, B, n));
    double loss = 0;
    for (int i = 0; i < 4 * B * n; i++) loss += (double)dist[i] * up[i];
    double want = th_num(c.json, NAN, "scalars", "loss", NULL);
    CHECK(fabs(loss - want) <= 1e-4 * fabs(want), "loss %.8g want %.8g", loss, want);
    if (!CHECK_OK(npred_model_backward_dist(m, up, 0, dx, NULL))) goto out;
    compare_group(&c, t, "grads", 1);
    th_compare_dims(&c, "grads", "grads/input.npy", dx, TH_DIMS(B, 1, 10, 12));
    compare_group(&c, t, "buffers_after", 0);
    /* eval after the step: outputs, fitted mean and variance */
    if (!CHECK_OK(npred_model_predict(m, key, x, B, NULL, NULL, mean))) goto out;
    dist = npred_model_dist(m, &K);
    th_compare_dims(&c, "forward", "output_eval.npy", dist, TH_DIMS(4, B, n));
    th_compare_dims(&c, "forward", "predict_mean_eval.npy", mean, TH_DIMS(B, n));
    npred_encoder_fitted(&m->cfg.encoder, dist, (int64_t)B * n, NULL, var);
    th_compare_dims(&c, "forward", "predict_variance_eval.npy", var, TH_DIMS(B, n));
out:
    npred_model_free(m);
    free(x), free(noise), free(up), free(mean), free(var), free(dx);
    th_case_close(&c);
}

/* the input gradient of the fitted mean: npred_neuron_grad (MEIs, RFs) equals
 * npred_model_input_gradient with one-hot weights, and that equals finite differences
 * of the mean (double sums over float32 forwards, a loose check of the direction) */
static void test_mean_input_gradient(void)
{
    const char *cfg = "{\"layers\": 2, \"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                      " \"init_sigma\": 0.2, \"grid_mean_predictor\": null, \"encoder\": {\"type\": \"ZILEncoder\"}}";
    npred_model_session ses = {"a-1-1", 4, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    enum { B = 2, HW = 12 * 14 };
    if (!CHECK_OK(npred_model_create(&m, cfg, "zil", 1, 12, 14, &ses, 1, B, 5))) return;
    uint64_t rs = 3;
    float img[B * HW], w[B * 4] = {0}, g1[B * HW], g2[B * HW], r1[B * 4], r2[B];
    gc_fill(img, B * HW, -1, 1, &rs);
    int neurons[B] = {1, 3};
    for (int b = 0; b < B; b++) w[b * 4 + neurons[b]] = 1.0f;
    npred_neuron_grad *g = NULL;
    if (CHECK_OK(npred_model_input_gradient(m, "a-1-1", img, B, NULL, NULL, w, g1, r1)) &&
        CHECK_OK(npred_neuron_grad_create(&g, m, "a-1-1", neurons, B, NULL, NULL)) &&
        CHECK_OK(npred_neuron_grad_run(g, img, g2, r2))) {
        CHECK(!npred_neuron_grad_is_local(g, NULL, NULL), "a distribution encoder takes the full path");
        th_close_f32("neuron_grad = input_gradient", g2, g1, B * HW, 1e-5, 1e-7);
        for (int b = 0; b < B; b++)
            CHECK(r2[b] == r1[b * 4 + neurons[b]], "rate %d: %g vs %g", b, r2[b], r1[b * 4 + neurons[b]]);
        /* finite differences of the predicted mean at a few pixels */
        float out[B * 4];
        int bad = 0;
        for (int i = 0; i < HW; i += 17) {
            float keep = img[i];
            double h = 1e-2;
            img[i] = keep + (float)h;
            npred_model_predict(m, "a-1-1", img, B, NULL, NULL, out);
            double up = out[neurons[0]];
            img[i] = keep - (float)h;
            npred_model_predict(m, "a-1-1", img, B, NULL, NULL, out);
            double dn = out[neurons[0]];
            img[i] = keep;
            double fd = (up - dn) / (2 * h);
            if (!(fabs(fd - g1[i]) <= 2e-3 + 0.05 * fabs(fd))) bad++;
        }
        CHECK(bad == 0, "%d pixels: d mean / d image differs from finite differences", bad);
    }
    npred_neuron_grad_free(g);
    npred_model_free(m);
}

/* ------------------------------------------------- head vs a reference --- */

typedef struct {
    npred_encoder_config e;
    int B, n, P, K;
    double *y;          /* (P, B, n) readout outputs */
    double *par[4];     /* (n) per-neuron parameter of slot s, or NULL */
    const double *W;    /* (K, B, n) weights of the scalar loss */
    const double *Wm;   /* (B, n) weight of the mean, or NULL */
} ref_ctx;

static double r_elu(double x) { return x > 0 ? x : expm1(x); }
static double r_sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* the encoder's outputs in double from the reference's formulas (zero_inflation_encoders.py,
 * distribution_encoders.py), written independently of src/model/encoder.c */
static void ref_forward(const ref_ctx *c, double *dist)
{
    int B = c->B, n = c->n;
    size_t bn = (size_t)B * n;
    double *raw = calloc(4 * bn, sizeof *raw);
    const npred_encoder_config *e = &c->e;
    int idx = 0;
    /* the readout's outputs in the reference's order */
    if (e->type == NPRED_ENC_ZIG || e->type == NPRED_ENC_ZIL) {
        int order[4] = {2, 3, e->type == NPRED_ENC_ZIG ? 0 : 1, e->type == NPRED_ENC_ZIG ? 1 : 0};
        for (int r = 0; r < 4; r++)
            if (e->dep[order[r]]) memcpy(raw + order[r] * bn, c->y + (idx++) * bn, bn * sizeof *raw);
    } else {
        memcpy(raw, c->y, 2 * bn * sizeof *raw);
    }
    for (int s = 0; s < 4; s++)
        if (c->par[s])
            for (int b = 0; b < B; b++)
                for (int j = 0; j < n; j++) raw[s * bn + (size_t)b * n + j] = c->par[s][j];
    double off = e->offset;
    for (size_t i = 0; i < bn; i++) {
        double *r = raw + i, *d = dist + i;
        if (e->type == NPRED_ENC_ZIG) {
            d[0] = r_elu(r[0]) + 1 + off;
            d[bn] = r_elu(r[bn]) + 1 + (e->has_zero_threshold ? 0 : 1.1) + off;
        } else if (e->type == NPRED_ENC_ZIL) {
            d[0] = r[0];
            d[bn] = r_elu(r[bn]) + 1 + off;
        } else if (e->type == NPRED_ENC_GAMMA) {
            d[0] = r_elu(r[0]) + 1 + off;
            d[bn] = r_elu(r[bn]) + 1 + off;
            if (e->has_min_rate) d[bn] = fmax(d[bn], e->min_rate);
            if (e->has_max_concentration) d[0] = fmin(d[0], e->max_concentration);
        } else {
            d[0] = r[0];
            d[bn] = r_elu(r[bn]) + 1 + off;
        }
        if (e->type == NPRED_ENC_ZIG || e->type == NPRED_ENC_ZIL) {
            d[2 * bn] = exp(r[2 * bn]);
            d[3 * bn] = r_sig(r[3 * bn]) * 0.99999 + off;
        }
    }
    free(raw);
}

/* fitted mean / variance, from mean_variance_functions.py (ZIL with q and loc in place) */
static void ref_fitted(const ref_ctx *c, const double *d, size_t i, double *mean, double *var)
{
    size_t bn = (size_t)c->B * c->n;
    double a = d[i], b = d[bn + i];
    switch (c->e.type) {
    case NPRED_ENC_ZIG: {
        double loc = d[2 * bn + i], q = d[3 * bn + i];
        *mean = (1 - q) * 0.5 * loc + q * (b * a + loc);
        *var = q * b * a * a + (1 - q) * loc * loc / 12 + q * (1 - q) * pow(b * a + loc / 2, 2);
        break;
    }
    case NPRED_ENC_ZIL: {
        double loc = d[2 * bn + i], q = d[3 * bn + i];
        *mean = (1 - q) * loc / 2 + q * (exp(a + b / 2) + loc);
        *var = (1 - q) * loc * loc / 12 + q * (exp(b) - 1) * exp(2 * a + b) +
               q * (1 - q) * pow(loc / 2 - exp(a + b / 2) - loc, 2);
        break;
    }
    case NPRED_ENC_GAMMA: *mean = a / b, *var = a / (b * b); break;
    default: *mean = a, *var = b; break;
    }
}

static double ref_loss(void *ctx)
{
    ref_ctx *c = ctx;
    size_t bn = (size_t)c->B * c->n;
    double *d = malloc(4 * bn * sizeof *d), L = 0;
    ref_forward(c, d);
    for (size_t i = 0; i < (size_t)c->K * bn; i++) L += c->W[i] * d[i];
    if (c->Wm)
        for (size_t i = 0; i < bn; i++) {
            double mu, v;
            ref_fitted(c, d, i, &mu, &v);
            L += c->Wm[i] * mu;
        }
    free(d);
    return L;
}

#define CORE "{\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3}"

static void head_case(const char *name, const char *json)
{
    npred_model_config mc;
    char full[1024];
    snprintf(full, sizeof full, "{\"core\": %s, \"readout\": {}, \"encoder\": %s}", CORE, json);
    if (!CHECK_OK(npred_model_config_parse(&mc, full, name))) return;
    ref_ctx c = {.e = mc.encoder, .B = 3, .n = 4};
    c.P = npred_encoder_readout_params(&c.e);
    c.K = npred_encoder_outputs(&c.e);
    int B = c.B, n = c.n;
    size_t bn = (size_t)B * n;
    uint64_t rs = 12345;
    npred_ptable t;
    npred_ptable_init(&t);
    int p[4];
    if (!CHECK_OK(npred_encoder_declare(&c.e, &t, "k1", n, p)) || !CHECK_OK(npred_ptable_alloc(&t))) {
        npred_ptable_free(&t);
        return;
    }
    float *y = calloc((size_t)c.P * bn, sizeof *y), *raw = calloc(4 * bn, sizeof *raw);
    float *dist = calloc(4 * bn, sizeof *dist), *mean = calloc(bn, sizeof *mean), *var = calloc(bn, sizeof *var);
    float *W = calloc(4 * bn, sizeof *W), *Wm = calloc(bn, sizeof *Wm), *dd = calloc(4 * bn, sizeof *dd);
    float *dy = calloc((size_t)c.P * bn, sizeof *dy);
    gc_fill(y, (size_t)c.P * bn, -1.5, 1.5, &rs);
    gc_fill(W, 4 * bn, -1, 1, &rs);
    gc_fill(Wm, bn, -1, 1, &rs);
    c.y = gc_to_f64(y, (size_t)c.P * bn);
    for (int s = 0; s < 4; s++) {
        c.par[s] = NULL;
        if (p[s] < 0) continue;
        float *v = npred_ptable_ptr(&t, p[s]);
        gc_fill(v, (size_t)n, -1.2, 1.2, &rs);
        c.par[s] = gc_to_f64(v, (size_t)n);
    }
    npred_encoder_forward(&c.e, &t, p, y, B, n, raw, dist, mean);
    double *rd = malloc(4 * bn * sizeof *rd), *rm = malloc(bn * sizeof *rm), *rv = malloc(bn * sizeof *rv);
    ref_forward(&c, rd);
    for (size_t i = 0; i < bn; i++) ref_fitted(&c, rd, i, &rm[i], &rv[i]);
    char what[256];
    double *df = gc_to_f64(dist, (size_t)c.K * bn), *mf = gc_to_f64(mean, bn);
    snprintf(what, sizeof what, "%s outputs", name);
    th_close_f64(what, df, rd, (size_t)c.K * bn, 1e-5, 1e-6);
    snprintf(what, sizeof what, "%s mean", name);
    th_close_f64(what, mf, rm, bn, 1e-5, 1e-6);
    npred_encoder_fitted(&c.e, dist, (int64_t)bn, NULL, var);
    double *vf = gc_to_f64(var, bn);
    snprintf(what, sizeof what, "%s variance", name);
    th_close_f64(what, vf, rv, bn, 1e-4, 1e-6);
    /* gradients of L = sum W dist + sum Wm mean, through both backward paths */
    double *Wd = gc_to_f64(W, 4 * bn), *Wmd = gc_to_f64(Wm, bn);
    c.W = Wd;
    c.Wm = Wmd;
    npred_encoder_mean_backward(&c.e, dist, Wm, (int64_t)bn, dd);
    for (size_t i = 0; i < (size_t)c.K * bn; i++) dd[i] += W[i];
    npred_ptable_zero_grad(&t);
    npred_encoder_backward(&c.e, &t, p, dd, B, n, raw, dist, dy);
    double *g = malloc((size_t)c.P * bn * sizeof *g);
    gc_fd(g, c.y, (size_t)c.P * bn, 1e-6, ref_loss, &c);
    snprintf(what, sizeof what, "%s d readout outputs", name);
    gc_check(what, dy, g, (size_t)c.P * bn, 1e-3, 1e-5);
    for (int s = 0; s < 4; s++) {
        if (!c.par[s]) continue;
        double gp[8];
        gc_fd(gp, c.par[s], (size_t)n, 1e-6, ref_loss, &c);
        const float *ga = npred_ptable_gradptr(&t, p[s]);
        snprintf(what, sizeof what, "%s d %s", name, t.items[p[s]].name);
        if (ga) gc_check(what, ga, gp, (size_t)n, 1e-3, 1e-5);
        else CHECK(s == 2 && c.e.has_zero_threshold, "%s: only a fixed logloc has no gradient", what);
    }
    free(g), free(Wd), free(Wmd), free(df), free(mf), free(vf), free(rd), free(rm), free(rv);
    for (int s = 0; s < 4; s++) free(c.par[s]);
    free(c.y), free(y), free(raw), free(dist), free(mean), free(var), free(W), free(Wm), free(dd), free(dy);
    npred_ptable_free(&t);
}

static void test_head_reference(void)
{
    head_case("ZIG default", "{\"type\": \"ZIGEncoder\"}");
    head_case("ZIG fixture flags", "{\"type\": \"ZIGEncoder\", \"k_image_dependent\": false}");
    head_case("ZIG params", "{\"type\": \"ZIGEncoder\", \"k_image_dependent\": false, \"theta_image_dependent\": "
                            "false, \"init_ks\": 0.5, \"zero_thresholds\": 0.2, \"offset\": 0.01}");
    head_case("ZIG loc+q from image", "{\"type\": \"ZIGEncoder\", \"loc_image_dependent\": true, "
                                      "\"theta_image_dependent\": false}");
    head_case("ZIG q parameter", "{\"type\": \"ZIGEncoder\", \"q_image_dependent\": false}");
    head_case("ZIL default", "{\"type\": \"ZILEncoder\"}");
    head_case("ZIL params", "{\"type\": \"ZILEncoder\", \"mu_image_dependent\": false, \"loc_image_dependent\": "
                            "true, \"q_image_dependent\": false}");
    head_case("ZIL sigma2 parameter", "{\"type\": \"ZILEncoder\", \"sigma2_image_dependent\": false, "
                                      "\"zero_thresholds\": 0.1}");
    head_case("Gamma default", "{\"type\": \"GammaEncoder\"}");
    head_case("Gamma clamps", "{\"type\": \"GammaEncoder\", \"max_concentration\": 1.6, \"min_rate\": 0.9}");
    head_case("Gamma params", "{\"type\": \"GammaEncoder\", \"concentration_image_dependent\": false, "
                              "\"rate_image_dependent\": false, \"eps\": 0.001}");
    head_case("Gaussian", "{\"type\": \"GaussianEncoder\", \"eps\": 0.01}");
}

/* ------------------------------- generalized readout = P plain readouts --- */

/* B 2 reads the feature parameter in place, B 5 makes feature rows first */
static void generalized_readout(int B)
{
    const int C = 3, H = 7, Wd = 9, n = 5, P = 3;
    npred_readout_config gc, pc;
    npred_readout_config_default(&gc, NPRED_READOUT_FULL_GAUSSIAN2D, C, H, Wd, n);
    gc.init_sigma = 0.4;
    pc = gc;
    gc.params_n = P;
    npred_ptable tg, tp;
    npred_ptable_init(&tg);
    npred_ptable_init(&tp);
    npred_readout rg, rp;
    if (!CHECK_OK(npred_readout_declare(&rg, &gc, "r.", &tg)) || !CHECK_OK(npred_readout_declare(&rp, &pc, "r.", &tp)))
        goto out0;
    if (!CHECK_OK(npred_ptable_alloc(&tg)) || !CHECK_OK(npred_ptable_alloc(&tp))) goto out;
    CHECK_OK(npred_readout_setup(&rg, &tg, B));
    CHECK_OK(npred_readout_setup(&rp, &tp, B));
    uint64_t rs = 77;
    npred_rng rng;
    npred_rng_seed(&rng, 5);
    float mact[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    npred_readout_init_params(&rg, &tg, &rng, mact);
    int ib = npred_ptable_find(&tg, "r.bias"), ifg = npred_ptable_find(&tg, "r._features");
    CHECK(ib >= 0 && tg.items[ib].ndim == 2 && tg.items[ib].shape[0] == P && tg.items[ib].shape[1] == n,
          "bias (P, n)");
    CHECK(ifg >= 0 && tg.items[ifg].ndim == 5 && tg.items[ifg].shape[0] == P && tg.items[ifg].shape[2] == C &&
              tg.items[ifg].shape[4] == n, "_features (P, 1, c, 1, n)");
    if (ib < 0 || ifg < 0) goto out;
    CHECK(npred_ptable_ptr(&tg, ib)[2 * n + 3] == mact[3], "bias initialised with the mean activity per output");
    for (int i = 0; i < tg.n; i++) gc_fill(npred_ptable_ptr(&tg, i), tg.items[i].count, -0.6, 0.6, &rs);
    enum { MB = 5 };
    float x[MB * 3 * 7 * 9], noise[MB * 5 * 2], dyg[3 * MB * 5], yg[3 * MB * 5], yp[MB * 5], dxg[MB * 3 * 7 * 9],
        dxp[MB * 3 * 7 * 9];
    size_t nx = (size_t)B * C * H * Wd;
    gc_fill(x, nx, -1, 1, &rs);
    gc_fill(noise, (size_t)B * n * 2, -1, 1, &rs);
    gc_fill(dyg, (size_t)P * B * n, -1, 1, &rs);
    memset(dxg, 0, sizeof dxg);
    npred_ptable_zero_grad(&tg);
    CHECK_OK(npred_readout_forward(&rg, &tg, yg, x, NULL, B, 1, NULL, noise));
    npred_readout_backward(&rg, &tg, dyg, dxg, NULL);
    double regg = npred_readout_regularizer(&rg, &tg, 0), regp = 0;
    /* the plain readout with output p's features and bias, the same grid and noise */
    memset(dxp, 0, sizeof dxp);
    float gmu[10] = {0}, gsig[20] = {0};
    const char *shared[2] = {"r._mu", "r.sigma"};
    for (int p = 0; p < P; p++) {
        for (int k = 0; k < 2; k++)
            memcpy(npred_ptable_ptr(&tp, npred_ptable_find(&tp, shared[k])),
                   npred_ptable_ptr(&tg, npred_ptable_find(&tg, shared[k])),
                   tp.items[npred_ptable_find(&tp, shared[k])].count * sizeof(float));
        memcpy(npred_ptable_ptr(&tp, npred_ptable_find(&tp, "r._features")), npred_ptable_ptr(&tg, ifg) + p * C * n,
               (size_t)C * n * sizeof(float));
        memcpy(npred_ptable_ptr(&tp, npred_ptable_find(&tp, "r.bias")), npred_ptable_ptr(&tg, ib) + p * n,
               (size_t)n * sizeof(float));
        npred_ptable_zero_grad(&tp);
        CHECK_OK(npred_readout_forward(&rp, &tp, yp, x, NULL, B, 1, NULL, noise));
        char what[64];
        snprintf(what, sizeof what, "output %d", p);
        th_close_f32(what, yg + p * B * n, yp, (size_t)B * n, 1e-6, 1e-7);
        npred_readout_backward(&rp, &tp, dyg + p * B * n, dxp, NULL);
        snprintf(what, sizeof what, "d features %d", p);
        th_close_f32(what, npred_ptable_gradptr(&tg, ifg) + p * C * n,
                     npred_ptable_gradptr(&tp, npred_ptable_find(&tp, "r._features")), (size_t)C * n, 1e-5, 1e-6);
        snprintf(what, sizeof what, "d bias %d", p);
        th_close_f32(what, npred_ptable_gradptr(&tg, ib) + p * n,
                     npred_ptable_gradptr(&tp, npred_ptable_find(&tp, "r.bias")), (size_t)n, 1e-5, 1e-6);
        for (int i = 0; i < 10; i++) gmu[i] += npred_ptable_gradptr(&tp, npred_ptable_find(&tp, "r._mu"))[i];
        for (int i = 0; i < 20; i++) gsig[i] += npred_ptable_gradptr(&tp, npred_ptable_find(&tp, "r.sigma"))[i];
        regp += npred_readout_regularizer(&rp, &tp, 0);
    }
    th_close_f32("d input (sum over outputs)", dxg, dxp, nx, 1e-4, 1e-6);
    th_close_f32("d mu (sum over outputs)", npred_ptable_gradptr(&tg, npred_ptable_find(&tg, "r._mu")), gmu, 10, 1e-4,
                 1e-6);
    th_close_f32("d sigma (sum over outputs)", npred_ptable_gradptr(&tg, npred_ptable_find(&tg, "r.sigma")), gsig, 20,
                 1e-4, 1e-6);
    CHECK(fabs(regg - regp) <= 1e-6 * fabs(regp), "regularizer %g = sum over outputs %g", regg, regp);
out:
    npred_readout_free(&rg);
    npred_readout_free(&rp);
out0:
    npred_ptable_free(&tg);
    npred_ptable_free(&tp);
}

static void test_generalized_readout(void)
{
    generalized_readout(2);
    generalized_readout(5);
}

/* ------------------------------------------------------- GaussianLoss --- */

typedef struct {
    double *m, *v, *y;
    int N;
} gl_ctx;

static double gl_ref(void *ctx)
{
    gl_ctx *c = ctx;
    double L = 0;
    for (int i = 0; i < c->N; i++) /* -log of the normal density, written out */
        L -= log(exp(-(c->y[i] - c->m[i]) * (c->y[i] - c->m[i]) / (2 * c->v[i])) / sqrt(2 * M_PI * c->v[i]));
    return L;
}

static void test_gaussian_loss(void)
{
    enum { B = 4, N = 3, BN = 12 };
    float m[BN], v[BN], y[BN], dm[BN] = {0}, dv[BN] = {0};
    uint64_t rs = 9;
    gc_fill(m, BN, -1, 1, &rs);
    gc_fill(v, BN, 0.3, 2, &rs);
    gc_fill(y, BN, -1, 2, &rs);
    gl_ctx c = {gc_to_f64(m, BN), gc_to_f64(v, BN), gc_to_f64(y, BN), BN};
    double L, want = gl_ref(&c);
    CHECK_OK(npred_loss_gaussian_forward(&L, m, v, y, B, N, NPRED_LOSS_SUM));
    CHECK(fabs(L - want) <= 1e-6 * fabs(want), "sum %.10g want %.10g", L, want);
    CHECK_OK(npred_loss_gaussian_forward(&L, m, v, y, B, N, NPRED_LOSS_MEAN));
    CHECK(fabs(L - want / BN) <= 1e-6 * fabs(want / BN), "mean %.10g want %.10g", L, want / BN);
    double per[N];
    CHECK_OK(npred_loss_gaussian_forward(per, m, v, y, B, N, NPRED_LOSS_PER_NEURON_SUM));
    double sum = per[0] + per[1] + per[2];
    CHECK(fabs(sum - want) <= 1e-6 * fabs(want), "per neuron sums add to %g (want %g)", sum, want);
    double up = 1.0, gm[BN], gv[BN];
    CHECK_OK(npred_loss_gaussian_backward(dm, dv, &up, m, v, y, B, N, NPRED_LOSS_SUM));
    gc_fd(gm, c.m, BN, 1e-6, gl_ref, &c);
    gc_fd(gv, c.v, BN, 1e-6, gl_ref, &c);
    gc_check("d mean", dm, gm, BN, 1e-4, 1e-6);
    gc_check("d variance", dv, gv, BN, 1e-4, 1e-6);
    v[5] = 0.0f;
    CHECK(npred_loss_gaussian_forward(&L, m, v, y, B, N, NPRED_LOSS_SUM) == NPRED_ERR_VALUE &&
              strstr(npred_last_error(), "element 5"), "variance 0 is an error naming the element: %s",
          npred_last_error());
    v[5] = NAN;
    CHECK(npred_loss_gaussian_forward(&L, m, v, y, B, N, NPRED_LOSS_SUM) == NPRED_ERR_VALUE, "NaN variance");
    free(c.m), free(c.v), free(c.y);
}

/* ------------------------------------------------------------- config --- */

static void expect_config_error(const char *json, const char *want)
{
    npred_model_config mc;
    npred_status s = npred_model_config_parse(&mc, json, "m.json");
    CHECK(s != NPRED_OK && strstr(npred_last_error(), want) && strstr(npred_last_error(), "m.json"),
          "%s: want an error naming '%s', got %d: %s", json, want, (int)s, npred_last_error());
}

static void test_config(void)
{
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"mu_image_dependent\": false}}",
                        "encoder.mu_image_dependent");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"PoissonEncoder\"}}", "encoder.type");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"elu_offset\": 1}}", "elu_offset");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"theta_image_dependent\": false, "
                        "\"k_image_dependent\": false, \"q_image_dependent\": false}}", "image-dependent");
    expect_config_error("{\"core\": " CORE ", \"readout\": {\"type\": \"FullFactorized2d\"}, \"encoder\": {\"type\": "
                        "\"GammaEncoder\"}}", "FullGaussian2d");
    expect_config_error("{\"core\": " CORE ", \"modulator\": {\"type\": \"MLP\"}, \"encoder\": {\"type\": "
                        "\"GaussianEncoder\"}}", "modulator");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"zero_thresholds\": {\"a\": 1}}}",
                        "encoder.zero_thresholds");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"loc_image_dependent\": true, "
                        "\"zero_thresholds\": 0.5}}", "zero_thresholds");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"ZIGEncoder\", \"init_ks\": 0.5}}", "init_ks");
    expect_config_error("{\"core\": " CORE ", \"encoder\": {\"type\": \"GaussianEncoder\", \"offset\": 0.1}}",
                        "encoder.offset");
    expect_config_error("{\"layers\": 2, \"encoder\": {\"type\": \"ZILEncoder\"}, \"share_features\": true}",
                        "share_features");
    /* the resolved form parses back to the same encoder (flat spelling too) */
    const char *cfgs[2] = {"{\"layers\": 2, \"encoder\": {\"type\": \"GammaEncoder\", \"max_concentration\": 5, "
                           "\"rate_image_dependent\": false}}",
                           ZIG_CFG};
    for (int i = 0; i < 2; i++) {
        npred_model_config a, b;
        if (!CHECK_OK(npred_model_config_parse(&a, cfgs[i], "a"))) continue;
        cJSON *j = npred_model_config_to_json(&a);
        char *s = cJSON_PrintUnformatted(j);
        if (CHECK_OK(npred_model_config_parse(&b, s, "b")))
            CHECK(!memcmp(&a.encoder, &b.encoder, sizeof a.encoder), "encoder config round trip: %s", s);
        CHECK(strstr(s, i ? "\"ZIGEncoder\"" : "\"GammaEncoder\""), "saved config names the encoder: %s", s);
        free(s);
        cJSON_Delete(j);
    }
}

/* ------------------------------------------- npred train, end to end --- */

static char tmp[256];

static int simulated(void)
{
    if (tmp[0]) return 1;
    snprintf(tmp, sizeof tmp, "/tmp/npred-test-encoders-XXXXXX");
    if (!CHECK(mkdtemp(tmp) != NULL, "mkdtemp")) return 0;
    char *out = NULL;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./build/npred simulate --out %s/data --sessions 1 --neurons 12 --trials 80 "
             "--test-images 4 --test-repeats 2 --height 36 --width 64 --noise gamma --quiet --seed 4 --zip-only", tmp);
    int rc = th_shell(&out, cmd);
    int ok = CHECK(rc == 0, "simulate: exit %d\n%s", rc, out ? out : "");
    free(out);
    char path[512];
    snprintf(path, sizeof path, "%s/dataset.json", tmp);
    FILE *f = fopen(path, "w");
    if (!CHECK(f != NULL, "write %s", path)) return 0;
    fputs("{\"batch_size\": 16, \"scale\": 0.5}", f);
    fclose(f);
    return ok;
}

static void train_case(const char *enc, const char *extra, const char *loss)
{
    if (!simulated()) return;
    char path[512], cmd[2048], *out = NULL;
    snprintf(path, sizeof path, "%s/%s.json", tmp, enc);
    FILE *f = fopen(path, "w");
    if (!CHECK(f != NULL, "write %s", path)) return;
    fprintf(f, "{\"layers\": 2, \"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"gamma_input\": 1,"
               " \"gamma_readout\": 0.1, \"init_sigma\": 0.2, \"grid_mean_predictor\": null,"
               " \"encoder\": {\"type\": \"%s\"%s}}", enc, extra);
    fclose(f);
    snprintf(path, sizeof path, "%s/trainer-%s.json", tmp, enc);
    f = fopen(path, "w");
    if (!CHECK(f != NULL, "write %s", path)) return;
    fprintf(f, "{\"loss_function\": \"%s\", \"max_iter\": 2, \"lr_init\": 0.005, \"verbose\": false}", loss);
    fclose(f);
    snprintf(cmd, sizeof cmd, "./build/npred train --data %s/data/*.zip --model %s/%s.json --trainer %s "
             "--dataset %s/dataset.json --out %s/run-%s --threads 1 --seed 3 && ./build/npred info %s/run-%s", tmp,
             tmp, enc, path, tmp, tmp, enc, tmp, enc);
    int rc = th_shell(&out, cmd);
    CHECK(rc == 0 && out && strstr(out, enc), "%s with %s: exit %d, wanted 0 and the encoder in npred info:\n%s", enc,
          loss, rc, out ? out : "");
    free(out);
    snprintf(path, sizeof path, "%s/run-%s/log.csv", tmp, enc);
    f = fopen(path, "r");
    int lines = 0, finite = 1;
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        if (lines++ < 2) continue; /* the header and epoch 0 (validation only, no training loss) */
        char *c1 = strchr(line, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL; /* epoch, lr, loss */
        if (c2 && !isfinite(strtod(c2 + 1, NULL))) finite = 0;
    }
    if (f) fclose(f);
    CHECK(lines >= 3 && finite, "%s: log.csv has %d lines, finite training losses %d", enc, lines, finite);
}

static void test_train_cli(void)
{
    train_case("ZIGEncoder", "", "ZIGLoss"); /* trainable thresholds (the loss clamps loc) */
    train_case("ZILEncoder", ", \"zero_thresholds\": 0.05, \"mu_image_dependent\": false", "ZILLoss");
    train_case("GammaEncoder", ", \"max_concentration\": 50", "GammaLoss");
    train_case("GaussianEncoder", "", "GaussianLoss");
    /* a mismatched loss is an error naming both */
    if (!simulated()) return;
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "./build/npred train --data %s/data/*.zip --model %s/ZIGEncoder.json --trainer "
             "%s/trainer-GammaEncoder.json --dataset %s/dataset.json --out %s/run-bad --threads 1", tmp, tmp, tmp, tmp,
             tmp);
    int rc = th_shell(&out, cmd);
    CHECK(rc != 0 && out && strstr(out, "ZIGLoss") && strstr(out, "GammaLoss"), "mismatch: exit %d\n%s", rc,
          out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    th_shell(NULL, cmd);
}

int main(void)
{
    RUN(test_zig_encoder_fixture);
    RUN(test_head_reference);
    RUN(test_mean_input_gradient);
    RUN(test_generalized_readout);
    RUN(test_gaussian_loss);
    RUN(test_config);
    RUN(test_train_cli);
    return th_summary();
}
