/* Shifters against the 0.3.0 reference cases (StaticAffine2dShifter,
 * MLPShifter: outputs, parameter and input gradients per session), and the
 * behaviour modulator of an encoder against an independent double-precision
 * reference written here (MLP -> ReLU, gain ELU(g) + 1, rate ELU(y * gain +
 * offset) + 1), forward and gradients (by central differences of that
 * reference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "model/model.h"
#include "nn/mlp.h"
#include "nn/params.h"

/* ---------------------------------------------------------------- shifters */

/* The shifters of an encoder built for the case's sessions; parameters loaded
 * from the case; output, gradients (with the model's shifter regularizer, as
 * the case's loss includes it) and the regularizer value compared. */
static void shifter_case(const char *name, int mlp)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_model *m = NULL;
    cJSON *keys = th_get(c.json, "args", "data_keys", NULL);
    int ns = cJSON_GetArraySize(keys);
    if (!CHECK(ns >= 1 && ns <= 4, "%s: %d data_keys", name, ns)) goto out;
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"layers\": 1, \"input_kern\": 3, \"hidden_channels\": 2, \"shifter\": true, \"shifter_type\": \"%s\","
             " \"input_channels_shifter\": %d, \"hidden_channels_shifter\": %d, \"shift_layers\": %d,"
             " \"gamma_shifter\": %.17g}",
             mlp ? "MLP" : "StaticAffine", (int)th_num(c.json, 2, "args", "input_channels", NULL),
             (int)th_num(c.json, 5, "args", "hidden_channels_shifter", NULL),
             (int)th_num(c.json, 1, "args", "shift_layers", NULL), th_num(c.json, 0, "args", "gamma_shifter", NULL));
    npred_model_session ses[4];
    memset(ses, 0, sizeof ses);
    for (int s = 0; s < ns; s++) ses[s] = (npred_model_session){cJSON_GetArrayItem(keys, s)->valuestring, 3, NULL, 0, NULL, NULL};
    if (!CHECK_OK(npred_model_create(&m, cfg, name, 1, 8, 8, ses, ns, 64, 1))) goto out;
    npred_ptable *t = npred_model_table(m);
    int n_shift = 0;
    for (int i = 0; i < (int)t->n; i++) n_shift += !strncmp(t->items[i].name, "shifter.", 8);
    CHECK(th_load_table(&c, t, "params", "shifter.", NULL) == n_shift, "%s: not every shifter parameter loaded", name);
    for (int s = 0; s < ns; s++) {
        const char *key = cJSON_GetArrayItem(keys, s)->valuestring;
        npred_mlp *sh = &m->s[s].shifter;
        char rel[256];
        snprintf(rel, sizeof rel, "%s/pupil_center.npy", key);
        npred_array ps;
        float *pc = th_load_f32(&c, rel, &ps);
        snprintf(rel, sizeof rel, "%s/upstream.npy", key);
        float *up = th_load_f32(&c, rel, NULL);
        if (!pc || !up || !CHECK(ps.ndim == 2 && ps.shape[1] == sh->dims[0] && ps.shape[0] <= 64, "%s: pupil shape", key)) {
            free(pc);
            free(up);
            continue;
        }
        int B = (int)ps.shape[0];
        float *y = calloc((size_t)B * 2, sizeof *y), *dx = calloc((size_t)B * (size_t)sh->dims[0], sizeof *dx);
        if (CHECK(y && dx, "out of memory") && CHECK_OK(npred_mlp_forward(sh, t, pc, B, y))) {
            snprintf(rel, sizeof rel, "%s/output.npy", key);
            th_compare_dims(&c, "forward", rel, y, TH_DIMS(B, 2));
            npred_ptable_zero_grad(t);
            npred_mlp_backward(sh, t, up, dx);
            double core_r, ro_r, total = npred_model_regularizer(m, s, 1.0, 0);
            npred_model_regularizer_parts(m, s, &core_r, &ro_r);
            snprintf(rel, sizeof rel, "%s/regularizer", key);
            double want = th_num(c.json, NAN, "scalars", rel, NULL), got = total - core_r - ro_r;
            CHECK(fabs(got - want) <= 1e-5 * fabs(want) + 1e-6, "%s: shifter regularizer %.9g, want %.9g", key, got,
                  want);
            /* every gradient of this session's loss, other sessions' (zero) included */
            cJSON *g = th_get(c.json, "files", "sessions", key, "grads", NULL), *it;
            int n_grads = 0;
            cJSON_ArrayForEach(it, g)
            {
                n_grads++;
                if (!strcmp(it->string, "pupil_center")) {
                    th_compare_dims(&c, "grads", it->valuestring, dx, TH_DIMS(B, sh->dims[0]));
                    continue;
                }
                char nm[256];
                snprintf(nm, sizeof nm, "shifter.%s", it->string);
                int idx = npred_ptable_find(t, nm);
                if (CHECK(idx >= 0, "%s: no parameter %s", name, nm))
                    th_compare_dims(&c, "grads", it->valuestring, npred_ptable_gradptr(t, idx), t->items[idx].ndim,
                                    t->items[idx].shape);
            }
            CHECK(n_grads == n_shift + 1, "%s: %d gradients in the case, want %d", key, n_grads, n_shift + 1);
        }
        free(y);
        free(dx);
        free(pc);
        free(up);
    }
out:
    npred_model_free(m);
    th_case_close(&c);
}

static void test_static_affine_shifter(void) { shifter_case("static_affine_shifter", 0); }
static void test_mlp_shifter(void) { shifter_case("mlp_shifter", 1); }

/* ---------------------------------------------------------------- modulator */

/* the modulator part in double: rates from the readout output y (B, n), the
 * behaviour (B, k) and the modulator MLP's weights (ReLU after every layer) */
typedef struct {
    int B, n, k, L, hid;
    double off;
    const double *y, *beh;
    double *w[4], *b[4]; /* layer l: (out, in), (out) */
    int din[4], dout[4];
    const double *up;    /* (B, n) */
} mod_ref;

static double elu1d(double x) { return x > 0 ? x + 1 : exp(x); }

static void mod_rates(const mod_ref *r, double *rates)
{
    double h[64], z[64];
    for (int i = 0; i < r->B; i++) {
        for (int j = 0; j < r->k; j++) h[j] = r->beh[i * r->k + j];
        for (int l = 0; l < r->L; l++) {
            for (int o = 0; o < r->dout[l]; o++) {
                double a = r->b[l] ? r->b[l][o] : 0;
                for (int j = 0; j < r->din[l]; j++) a += r->w[l][o * r->din[l] + j] * h[j];
                z[o] = a > 0 ? a : 0; /* ReLU */
            }
            memcpy(h, z, sizeof(double) * (size_t)r->dout[l]);
        }
        for (int j = 0; j < r->n; j++) rates[i * r->n + j] = elu1d(r->y[i * r->n + j] * elu1d(h[j]) + r->off);
    }
}

static double mod_loss(const mod_ref *r)
{
    double rates[512], l = 0;
    mod_rates(r, rates);
    for (int i = 0; i < r->B * r->n; i++) l += rates[i] * r->up[i];
    return l;
}

static void test_modulator_double_reference(void)
{
    const char *cfg =
        "{\"layers\": 1, \"input_kern\": 3, \"hidden_channels\": 3, \"gamma_input\": 0.1, \"gamma_readout\": 0.01,"
        " \"modulator\": true, \"input_channels_modulator\": 3, \"hidden_channels_modulator\": 5,"
        " \"modulator_layers\": 2, \"elu_offset\": -0.3}";
    const int B = 4, n = 6, k = 3, H = 9, W = 11;
    npred_model_session ses = {"m-1-1", n, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "modulator test", 1, H, W, &ses, 1, B, 21))) return;
    npred_ptable *t = npred_model_table(m);
    npred_session *s = &m->s[0];
    if (!CHECK(s->has_modulator && s->modulator.n_layers == 2, "the model has no 2-layer modulator")) goto out;
    uint64_t rs = 5;
    float img[4 * 9 * 11], beh[4 * 3], out[4 * 6], up[4 * 6];
    for (int i = 0; i < B * H * W; i++) img[i] = (float)th_rand(&rs);
    for (int i = 0; i < B * k; i++) beh[i] = (float)(1.5 * th_rand(&rs));
    for (int i = 0; i < B * n; i++) up[i] = (float)th_rand(&rs);
    /* spread the modulator's weights so both ReLU sides and both ELU branches occur */
    mod_ref r = {B, n, k, 2, 5, -0.3, NULL, NULL, {0}, {0}, {k, 5}, {5, n}, NULL};
    double yd[4 * 6], behd[4 * 3], upd[4 * 6];
    for (int l = 0; l < 2; l++) {
        char nm[128];
        snprintf(nm, sizeof nm, "modulator.m-1-1.modulator_networks.0.%d.weight", 2 * l);
        int iw = npred_ptable_find(t, nm);
        snprintf(nm, sizeof nm, "modulator.m-1-1.modulator_networks.0.%d.bias", 2 * l);
        int ib = npred_ptable_find(t, nm);
        if (!CHECK(iw >= 0 && ib >= 0, "modulator parameters of layer %d are missing", l)) goto out;
        float *w = npred_ptable_ptr(t, iw), *b = npred_ptable_ptr(t, ib);
        for (int i = 0; i < r.din[l] * r.dout[l]; i++) w[i] = (float)(1.2 * th_rand(&rs));
        for (int i = 0; i < r.dout[l]; i++) b[i] = (float)(0.5 * th_rand(&rs));
        r.w[l] = gc_to_f64(w, (size_t)(r.din[l] * r.dout[l]));
        r.b[l] = gc_to_f64(b, (size_t)r.dout[l]);
    }
    if (!CHECK_OK(npred_model_forward(m, 0, img, NULL, beh, B, 0, NULL, NULL, out))) goto free_w;
    for (int i = 0; i < B * n; i++) yd[i] = s->y[i]; /* the readout's output: the modulator's input */
    for (int i = 0; i < B * k; i++) behd[i] = beh[i];
    for (int i = 0; i < B * n; i++) upd[i] = up[i];
    r.y = yd;
    r.beh = behd;
    r.up = upd;
    double ref[4 * 6];
    mod_rates(&r, ref);
    double worst = 0;
    int bad = 0, below = 0;
    for (int i = 0; i < B * n; i++) {
        double e = fabs(out[i] - ref[i]);
        if (!(e <= 1e-5 * fabs(ref[i]) + 1e-6)) bad++;
        if (!(e <= worst)) worst = e;
        below += ref[i] < 1; /* rates in the exp branch of the output ELU */
    }
    CHECK(bad == 0, "%d of %d rates off the double reference (worst %.3g)", bad, B * n, worst);
    CHECK(below > 0 && below < B * n, "the test does not reach both branches of the output ELU (%d)", below);
    /* gradients of the modulator's weights against central differences of the reference */
    npred_ptable_zero_grad(t);
    if (!CHECK_OK(npred_model_backward(m, up, 0, NULL, NULL))) goto free_w;
    for (int l = 0; l < 2; l++) {
        double *p[2] = {r.w[l], r.b[l]};
        size_t cnt[2] = {(size_t)(r.din[l] * r.dout[l]), (size_t)r.dout[l]};
        for (int q = 0; q < 2; q++) {
            char nm[128];
            snprintf(nm, sizeof nm, "modulator.m-1-1.modulator_networks.0.%d.%s", 2 * l, q ? "bias" : "weight");
            const float *g = npred_ptable_gradptr(t, npred_ptable_find(t, nm));
            double *num = malloc(cnt[q] * sizeof *num);
            for (size_t i = 0; i < cnt[q]; i++) {
                double keep = p[q][i], h = 1e-6;
                p[q][i] = keep + h;
                double lp = mod_loss(&r);
                p[q][i] = keep - h;
                double lm = mod_loss(&r);
                p[q][i] = keep;
                num[i] = (lp - lm) / (2 * h);
            }
            gc_check(nm, g, num, cnt[q], 1e-3, 1e-4);
            free(num);
        }
    }
free_w:
    for (int l = 0; l < 2; l++) {
        free(r.w[l]);
        free(r.b[l]);
    }
out:
    npred_model_free(m);
}

/* The modulated rates and their gradients over B x n >= 65,536 values run on the
 * threads (model.c): the same bits with 1 and 2 threads, outputs, parameter and
 * image gradients. */
static void test_modulator_threads(void)
{
    const char *cfg =
        "{\"layers\": 1, \"input_kern\": 3, \"hidden_channels\": 3, \"gamma_input\": 0.1, \"gamma_readout\": 0.01,"
        " \"modulator\": true, \"input_channels_modulator\": 3, \"hidden_channels_modulator\": 5,"
        " \"modulator_layers\": 2, \"elu_offset\": -0.3}";
    enum { B = 4, n = 20000, k = 3, H = 9, W = 11 };
    npred_model_session ses = {"m-1-1", n, NULL, 0, NULL, NULL};
    const int threads = npred_threads();
    float *res[2] = {NULL, NULL};
    size_t np = 0;
    for (int v = 0; v < 2; v++) {
        npred_model *m = NULL;
        if (!CHECK_OK(npred_set_threads(v + 1)) ||
            !CHECK_OK(npred_model_create(&m, cfg, "modulator threads", 1, H, W, &ses, 1, B, 21)))
            break;
        npred_ptable *t = npred_model_table(m);
        np = t->n_params;
        uint64_t rs = 9;
        static float img[B * H * W], beh[B * k], out[B * n], up[B * n], dimg[B * H * W];
        for (int i = 0; i < B * H * W; i++) img[i] = (float)th_rand(&rs);
        for (int i = 0; i < B * k; i++) beh[i] = (float)(1.5 * th_rand(&rs));
        for (int i = 0; i < B * n; i++) up[i] = (float)th_rand(&rs);
        npred_rng rng;
        npred_rng_seed(&rng, 3);
        npred_ptable_zero_grad(t);
        memset(dimg, 0, sizeof dimg); /* the backward adds the image gradient into it */
        res[v] = malloc(sizeof(float) * ((size_t)B * n + np + (size_t)B * H * W));
        if (CHECK(res[v], "out of memory") &&
            CHECK_OK(npred_model_forward(m, 0, img, NULL, beh, B, 1, &rng, NULL, out)) &&
            CHECK_OK(npred_model_backward(m, up, 0, dimg, NULL))) {
            memcpy(res[v], out, sizeof out);
            memcpy(res[v] + B * n, t->grad, np * sizeof(float));
            memcpy(res[v] + B * n + np, dimg, sizeof dimg);
        }
        npred_model_free(m);
    }
    CHECK_OK(npred_set_threads(threads));
    if (CHECK(res[0] && res[1], "a run failed")) {
        CHECK(!memcmp(res[0], res[1], sizeof(float) * B * n), "rates differ between 1 and 2 threads");
        CHECK(!memcmp(res[0] + B * n, res[1] + B * n, sizeof(float) * np), "gradients differ between 1 and 2 threads");
        CHECK(!memcmp(res[0] + B * n + np, res[1] + B * n + np, sizeof(float) * B * H * W),
              "image gradients differ between 1 and 2 threads");
        double gn = 0;
        for (size_t i = 0; i < np; i++) gn += (double)res[1][B * n + i] * res[1][B * n + i];
        CHECK(gn > 0 && isfinite(gn), "gradient norm %g", gn);
    }
    free(res[0]);
    free(res[1]);
}

int main(void)
{
    RUN(test_static_affine_shifter);
    RUN(test_mlp_shifter);
    RUN(test_modulator_double_reference);
    RUN(test_modulator_threads);
    return th_summary();
}
