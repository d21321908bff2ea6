/* Configuration rows that change a model without a reference fixture, each shown to
 * act (or be refused):
 *   input_regularizer "LaplaceL1": the core regularizer and its gradient against an
 *     independent double-precision LaplaceL1 (neuralpredictors regularizers.py) with
 *     finite differences, every padding and both reductions, flat and structured
 *     spellings, repr;
 *   fixed_sigma (Gaussian2d): the initial sigma, and so the training outputs;
 *   shifter_bias false: no bias in the state_dict, and the shift against a double
 *     reference of the bias-free tanh MLP (values and the pupil gradient);
 *   positive_weights true: refused (no effect in 0.3.0);
 *   shifter and modulator sizes: each bad one an error naming its key, at parse time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "model/model.h"

/* ------------------------------------------------------------ LaplaceL1 --- */

typedef struct {
    double *w; /* (S, k, k) */
    int S, k, pad, avg;
    double gamma;
} l1_ctx;

/* gamma * agg_{s, y, x} | sum_{dy, dx} L[dy][dx] w_s[y + dy - pad][x + dx - pad] |, zero outside,
 * L = [[0, -1, 0], [-1, 4, -1], [0, -1, 0]] (neuralpredictors' laplace()) */
static double l1_ref(void *ctx)
{
    const l1_ctx *c = ctx;
    static const double L[3][3] = {{0, -1, 0}, {-1, 4, -1}, {0, -1, 0}};
    int k = c->k, ho = k + 2 * c->pad - 2;
    double acc = 0;
    for (int s = 0; s < c->S; s++)
        for (int y = 0; y < ho; y++)
            for (int x = 0; x < ho; x++) {
                double v = 0;
                for (int dy = 0; dy < 3; dy++)
                    for (int dx = 0; dx < 3; dx++) {
                        int yy = y + dy - c->pad, xx = x + dx - c->pad;
                        if (yy >= 0 && yy < k && xx >= 0 && xx < k) v += L[dy][dx] * c->w[((size_t)s * k + yy) * k + xx];
                    }
                acc += fabs(v);
            }
    if (c->avg) acc /= (double)c->S * ho * ho;
    return c->gamma * acc;
}

static void laplace_l1_case(const char *cfg, int pad, int avg, double gamma)
{
    const int C = 2, k = 5;
    npred_model_session ses = {"a-1-1", 3, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "laplace_l1", C, 12, 12, &ses, 1, 2, 1))) return;
    npred_ptable *t = npred_model_table(m);
    int iw = npred_ptable_find(t, "core.features.layer0.conv.weight");
    if (!CHECK(iw >= 0 && t->items[iw].count == (size_t)4 * C * k * k, "layer0 weight (4, %d, 5, 5)", C)) goto out;
    uint64_t rs = 42;
    float *w = npred_ptable_ptr(t, iw);
    gc_fill(w, t->items[iw].count, -1, 1, &rs);
    npred_ptable_zero_grad(t);
    double got = npred_core_regularizer(&m->core, t, 1.0);
    l1_ctx c = {gc_to_f64(w, t->items[iw].count), 4 * C, k, pad, avg, gamma};
    double want = l1_ref(&c);
    CHECK(fabs(got - want) <= 1e-5 * fabs(want), "%s: LaplaceL1 %.10g, reference %.10g", cfg, got, want);
    double *g = malloc(t->items[iw].count * sizeof *g);
    gc_fd(g, c.w, t->items[iw].count, 1e-6, l1_ref, &c); /* the kinks are far from +-1e-6 */
    char what[64];
    snprintf(what, sizeof what, "d LaplaceL1 pad %d avg %d", pad, avg);
    gc_check(what, npred_ptable_gradptr(t, iw), g, t->items[iw].count, 1e-4, 1e-5);
    free(g);
    free(c.w);
    char *r = npred_model_describe(m);
    CHECK(r && strstr(r, "(_input_weights_regularizer): LaplaceL1("), "repr names LaplaceL1");
    free(r);
out:
    npred_model_free(m);
}

static void test_laplace_l1(void)
{
    laplace_l1_case("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 1,"
                    " \"gamma_input\": 2.5, \"input_regularizer\": \"LaplaceL1\"}, \"readout\": {}}",
                    0, 1, 2.5); /* Stacked2dCore defaults: laplace_padding 0, use_avg_reg true */
    laplace_l1_case("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 1,"
                    " \"gamma_input\": 0.7, \"input_regularizer\": \"LaplaceL1\", \"laplace_padding\": 2,"
                    " \"use_avg_reg\": false}, \"readout\": {}}",
                    2, 0, 0.7);
    /* the sensorium builder spelling: laplace_padding null (k // 2 of the 3x3 filter), sum */
    laplace_l1_case("{\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 2,"
                    " \"gamma_input\": 1.5, \"input_regularizer\": \"LaplaceL1\"}",
                    1, 0, 1.5);
    /* the saved config keeps it */
    npred_model_config mc;
    if (CHECK_OK(npred_model_config_parse(&mc, "{\"layers\": 2, \"input_regularizer\": \"LaplaceL1\"}", "c"))) {
        cJSON *j = npred_model_config_to_json(&mc);
        char *s = cJSON_PrintUnformatted(j);
        CHECK(s && strstr(s, "\"input_regularizer\":\"LaplaceL1\""), "saved: %s", s ? s : "");
        free(s);
        cJSON_Delete(j);
    }
    CHECK(npred_model_config_parse(&mc, "{\"input_regularizer\": \"LaplaceL3\"}", "c.json") == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "LaplaceL1"), "unknown regularizer lists the choices: %s", npred_last_error());
}

/* ---------------------------------------------------------- fixed_sigma --- */

static void test_fixed_sigma(void)
{
    const char *cfg[2] = {"{\"layers\": 1, \"hidden_channels\": 3, \"input_kern\": 3, \"readout_type\": \"Gaussian2d\","
                          " \"init_sigma_range\": 0.4, \"fixed_sigma\": true}",
                          "{\"layers\": 1, \"hidden_channels\": 3, \"input_kern\": 3, \"readout_type\": \"Gaussian2d\","
                          " \"init_sigma_range\": 0.4, \"fixed_sigma\": false}"};
    npred_model_session ses = {"a-1-1", 6, NULL, 0, NULL, NULL};
    float y[2][2 * 6], img[2 * 10 * 10], noise[2 * 6 * 2];
    uint64_t rs = 5;
    gc_fill(img, sizeof img / sizeof *img, -1, 1, &rs);
    gc_fill(noise, sizeof noise / sizeof *noise, -1, 1, &rs);
    for (int f = 0; f < 2; f++) {
        npred_model *m = NULL;
        if (!CHECK_OK(npred_model_create(&m, cfg[f], "fixed_sigma", 1, 10, 10, &ses, 1, 2, 9))) return;
        npred_ptable *t = npred_model_table(m);
        int is = npred_ptable_find(t, "readout.a-1-1.sigma");
        if (CHECK(is >= 0, "sigma")) {
            const float *s = npred_ptable_ptr(t, is);
            int all = 1, inrange = 1;
            for (size_t i = 0; i < t->items[is].count; i++) {
                all &= s[i] == 0.4f;
                inrange &= s[i] >= 0.0f && s[i] < 0.4f;
            }
            if (f == 0) CHECK(all, "fixed_sigma: every sigma is init_sigma_range");
            else CHECK(!all && inrange, "fixed_sigma false: sigma ~ U(0, init_sigma_range)");
        }
        /* the same mu for both, so the training outputs differ only through sigma */
        int im = npred_ptable_find(t, "readout.a-1-1.mu");
        if (im >= 0)
            for (size_t i = 0; i < t->items[im].count; i++) npred_ptable_ptr(t, im)[i] = 0.1f * (float)i - 0.5f;
        for (int i = 0; i < t->n; i++)
            if (strncmp(t->items[i].name, "readout.", 8) && !t->items[i].is_buffer)
                for (size_t q = 0; q < t->items[i].count; q++) npred_ptable_ptr(t, i)[q] = 0.05f * (float)(q % 7) - 0.1f;
        CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, 2, 1, NULL, noise, y[f]));
        npred_model_free(m);
    }
    int differ = 0;
    for (int i = 0; i < 12; i++) differ += y[0][i] != y[1][i];
    CHECK(differ > 0, "fixed_sigma changes the training outputs (%d of 12 differ)", differ);
}

/* --------------------------------------------------------- shifter_bias --- */

typedef struct {
    double *w[3], *p; /* weights (out, in) of the 3 linears; pupil (B, 2) */
    int B, dims[4];
    const double *up; /* (B, 2) */
} sh_ctx;

static void sh_forward(const sh_ctx *c, double *out /* (B, 2) */)
{
    for (int b = 0; b < c->B; b++) {
        double h[8] = {c->p[2 * b], c->p[2 * b + 1]}, z[8];
        for (int l = 0; l < 3; l++) {
            for (int o = 0; o < c->dims[l + 1]; o++) {
                double s = 0;
                for (int i = 0; i < c->dims[l]; i++) s += c->w[l][o * c->dims[l] + i] * h[i];
                z[o] = tanh(s);
            }
            memcpy(h, z, sizeof h);
        }
        out[2 * b] = h[0];
        out[2 * b + 1] = h[1];
    }
}

static double sh_loss(void *ctx)
{
    const sh_ctx *c = ctx;
    double o[16], L = 0;
    sh_forward(c, o);
    for (int i = 0; i < 2 * c->B; i++) L += c->up[i] * o[i];
    return L;
}

static void test_shifter_bias_false(void)
{
    const char *cfg = "{\"layers\": 1, \"hidden_channels\": 3, \"input_kern\": 3, \"shifter\": true,"
                      " \"shift_layers\": 3, \"hidden_channels_shifter\": 4, \"shifter_bias\": false}";
    npred_model_session ses = {"a-1-1", 5, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "shifter_bias", 1, 10, 10, &ses, 1, 4, 2))) return;
    npred_ptable *t = npred_model_table(m);
    int nb = 0, nw = 0;
    for (int i = 0; i < t->n; i++)
        if (!strncmp(t->items[i].name, "shifter.", 8)) {
            nb += strstr(t->items[i].name, ".bias") != NULL;
            nw += strstr(t->items[i].name, ".weight") != NULL;
        }
    CHECK(nb == 0 && nw == 3, "shifter_bias false: %d weights, %d biases in the state_dict", nw, nb);
    npred_session *s = &m->s[0];
    uint64_t rs = 11;
    enum { B = 4 };
    float img[B * 100], pupil[B * 2], up[B * 2], out[B * 5], dp[B * 2] = {0};
    gc_fill(img, B * 100, -1, 1, &rs);
    gc_fill(pupil, B * 2, -2, 2, &rs);
    gc_fill(up, B * 2, -1, 1, &rs);
    sh_ctx c = {.B = B, .dims = {2, 4, 4, 2}};
    for (int l = 0; l < 3; l++) {
        float *w = npred_ptable_ptr(t, s->shifter.p_w[l]);
        gc_fill(w, t->items[s->shifter.p_w[l]].count, -1, 1, &rs);
        c.w[l] = gc_to_f64(w, t->items[s->shifter.p_w[l]].count);
    }
    c.p = gc_to_f64(pupil, B * 2);
    double *upd = gc_to_f64(up, B * 2);
    c.up = upd;
    if (CHECK_OK(npred_model_forward(m, 0, img, pupil, NULL, B, 0, NULL, NULL, out))) {
        double ref[B * 2], g[B * 2];
        sh_forward(&c, ref);
        double *got = gc_to_f64(s->shift, B * 2);
        th_close_f64("shift without bias", got, ref, B * 2, 1e-5, 1e-6);
        free(got);
        /* the pupil gradient of sum(up * shift), through the shifter alone */
        npred_ptable_zero_grad(t);
        npred_mlp_backward(&s->shifter, t, up, dp);
        gc_fd(g, c.p, B * 2, 1e-6, sh_loss, &c);
        gc_check("d pupil", dp, g, B * 2, 1e-4, 1e-6);
        /* zero pupil -> zero shift exactly (a biased shifter would move the readout) */
        float zero[B * 2] = {0};
        CHECK_OK(npred_model_forward(m, 0, img, zero, NULL, B, 0, NULL, NULL, out));
        int nz = 0;
        for (int i = 0; i < B * 2; i++) nz += s->shift[i] != 0.0f;
        CHECK(nz == 0, "bias-free shifter: pupil 0 gives shift 0 (%d nonzero)", nz);
    }
    for (int l = 0; l < 3; l++) free(c.w[l]);
    free(c.p);
    free(upd);
    npred_model_free(m);
}

/* ------------------------------------------------------ positive_weights --- */

static void test_positive_weights_refused(void)
{
    npred_model_config mc;
    CHECK(npred_model_config_parse(&mc, "{\"readout_type\": \"FullFactorized2d\", \"positive_weights\": true}",
                                   "m.json") == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "positive_weights") && strstr(npred_last_error(), "m.json"),
          "positive_weights true is an error naming the key: %s", npred_last_error());
    CHECK_OK(npred_model_config_parse(&mc, "{\"readout_type\": \"FullFactorized2d\", \"positive_weights\": false}",
                                      "m.json"));
}

/* ------------------------------------------- shifter and modulator sizes --- */

/* each config is refused by the parser (not later by the model's build) with a message
 * naming the key and the file */
static void refused_naming(const char *cfg, const char *key)
{
    npred_model_config mc;
    npred_status st = npred_model_config_parse(&mc, cfg, "m.json");
    CHECK(st == NPRED_ERR_CONFIG && strstr(npred_last_error(), key) && strstr(npred_last_error(), "m.json"),
          "%s: refused naming '%s' (status %d): %s", cfg, key, (int)st, npred_last_error());
}

static void test_mlp_sizes_refused(void)
{
    refused_naming("{\"shifter\": true, \"shift_layers\": 2, \"hidden_channels_shifter\": 0}",
                   "'hidden_channels_shifter'");
    refused_naming("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"hidden_kern\": 3}, \"readout\": {},"
                   " \"shifter\": {\"type\": \"MLP\", \"shift_layers\": 3,"
                   " \"hidden_channels_shifter\": -4}}",
                   "'hidden_channels_shifter'");
    refused_naming("{\"shifter\": true, \"shift_layers\": 9}", "'shift_layers'");
    refused_naming("{\"shifter\": true, \"shift_layers\": 0}", "'shift_layers'");
    refused_naming("{\"shifter\": true, \"input_channels_shifter\": 0}", "'input_channels_shifter'");
    refused_naming("{\"modulator\": true, \"input_channels_modulator\": 0}", "'input_channels_modulator'");
    refused_naming("{\"modulator\": true, \"modulator_layers\": 0}", "'modulator_layers'");
    refused_naming("{\"core\": {\"hidden_channels\": 4, \"input_kern\": 3, \"hidden_kern\": 3}, \"readout\": {},"
                   " \"modulator\": {\"type\": \"MLP\", \"layers\": 12}}",
                   "'modulator_layers'");
    refused_naming("{\"modulator\": true, \"modulator_layers\": 3, \"hidden_channels_modulator\": 0}",
                   "'hidden_channels_modulator'");
    /* a one-layer MLP has no hidden width: any value is accepted, and the model builds */
    const char *ok[2] = {"{\"layers\": 1, \"hidden_channels\": 3, \"input_kern\": 3, \"shifter\": true,"
                         " \"shift_layers\": 1, \"hidden_channels_shifter\": 0}",
                         "{\"layers\": 1, \"hidden_channels\": 3, \"input_kern\": 3, \"modulator\": true,"
                         " \"modulator_layers\": 1, \"hidden_channels_modulator\": 0}"};
    for (int i = 0; i < 2; i++) {
        npred_model_session ses = {"a-1-1", 5, NULL, 0, NULL, NULL};
        npred_model *m = NULL;
        if (CHECK_OK(npred_model_create(&m, ok[i], "mlp_one_layer", 1, 10, 10, &ses, 1, 4, 1)))
            CHECK(npred_model_has_shifter(m) == (i == 0), "one-layer %s built", i ? "modulator" : "shifter");
        npred_model_free(m);
    }
}

int main(void)
{
    RUN(test_laplace_l1);
    RUN(test_fixed_sigma);
    RUN(test_shifter_bias_false);
    RUN(test_positive_weights_refused);
    RUN(test_mlp_sizes_refused);
    return th_summary();
}
