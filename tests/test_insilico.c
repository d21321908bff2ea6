/* In-silico experiments: the input-gradient API on every readout type (finite
 * differences, equality with the full backward, no parameter-gradient side effect),
 * sinzlab/mei's GaussianBlur / ChangeNorm (mei_ops) and a whole gradient ascent on
 * the real SENSORIUM baseline (mei_blur_norm), optimizer steps, jitter, config
 * parsing, neuron selections, RF statistics and the tuning analysis. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "insilico/insilico_internal.h"
#include "model/model.h"
#include "npred/insilico.h"

#define CKPT "../shared/checkpoints/sensorium_sota_model.pth"

/* ------------------------------------------------------ input gradient --- */

static const char *const CONFIGS[][2] = {
    {"FullGaussian2d + cortex grid + shifter + modulator",
     "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 4, \"depth_separable\": true,"
     " \"init_sigma\": 0.2, \"init_mu_range\": 0.5, \"grid_mean_predictor\": {\"type\": \"cortex\","
     " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 6, \"final_tanh\": true},"
     " \"shifter\": true, \"shift_layers\": 2, \"modulator\": true, \"elu_offset\": -0.3}"},
    {"Gaussian2d, SE2dCore",
     "{\"core_type\": \"SE2dCore\", \"layers\": 3, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4,"
     " \"pad_input\": true, \"n_se_blocks\": 2, \"se_reduction\": 2, \"readout_type\": \"Gaussian2d\"}"},
    {"FullFactorized2d",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"readout_type\": \"FullFactorized2d\"}"},
    {"PointPooled2d",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"readout_type\": \"PointPooled2d\", \"pool_steps\": 1, \"pool_kern\": 2}"},
    {"AttentionReadout (2 attention layers)",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"readout_type\": \"AttentionReadout\", \"attention_layers\": 2, \"attention_kernel\": 3}"},
    {"PointPyramid2d",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"readout_type\": \"PointPyramid2d\", \"scale_n\": 2, \"pyramid_type\": \"gauss5x5\", \"downsample\": true}"},
    {"RotationEquivariant2dCore (Hermite layers), FullFactorized2d",
     "{\"core_type\": \"RotationEquivariant2dCore\", \"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3,"
     " \"hidden_channels\": 2, \"num_rotations\": 4, \"pad_input\": true, \"readout_type\": \"FullFactorized2d\"}"},
    {"FullGaussian2d shared features and grid, static affine shifter",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"gauss_type\": \"uncorrelated\", \"share_features\": true, \"share_grid\": true,"
     " \"shifter\": true, \"shifter_type\": \"StaticAffine\"}"},
};

enum { GB = 3, GC = 2, GH = 13, GW = 15, GN0 = 7, GN1 = 6 };

/* a model with perturbed parameters and running statistics */
static npred_model *make_model(const char *cfg, npred_rng *rng)
{
    double ca[GN0 * 2], cb[GN1 * 2];
    for (int i = 0; i < GN0 * 2; i++) ca[i] = 50 * (2 * npred_rng_uniform(rng) - 1);
    for (int i = 0; i < GN1 * 2; i++) cb[i] = 50 * (2 * npred_rng_uniform(rng) - 1);
    int64_t ma[GN0] = {3, 1, 2, 3, 0, 1, 4}, mb[GN1] = {0, 1, 2, 3, 4, 4};
    npred_model_session ses[2] = {{"a-1-1", GN0, ca, 2, NULL, ma}, {"b-2-2", GN1, cb, 2, NULL, mb}};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "config", GC, GH, GW, ses, 2, GB, 7))) return NULL;
    npred_ptable *t = npred_model_table(m);
    for (size_t i = 0; i < t->n_params; i++) t->data[i] += (float)(0.1 * npred_rng_normal(rng));
    for (int e = 0; e < t->n; e++) {
        const char *nm = t->items[e].name;
        float *v = npred_ptable_ptr(t, e);
        if (t->items[e].is_buffer && strstr(nm, "running_var"))
            for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.5 + npred_rng_uniform(rng));
        if (t->items[e].is_buffer && strstr(nm, "running_mean"))
            for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.2 * npred_rng_normal(rng));
        if (!strncmp(nm, "modulator.", 10) && strstr(nm, ".bias")) /* ReLUs away from their kink */
            for (size_t i = 0; i < t->items[e].count; i++) v[i] += 1.0f;
    }
    return m;
}

/* sum_b sum_j w[b, j] rate[b, j] in double */
static double objective(npred_model *m, const char *key, const float *img, const float *pc, const float *beh,
                        const float *w, int n)
{
    float r[GB * GN0];
    if (npred_model_predict(m, key, img, GB, pc, beh, r)) return NAN;
    double s = 0;
    for (int i = 0; i < GB * n; i++) s += (double)w[i] * r[i];
    return s;
}

static void test_input_gradient_all_readouts(void)
{
    for (size_t c = 0; c < sizeof CONFIGS / sizeof CONFIGS[0]; c++) {
        npred_rng rng;
        npred_rng_seed(&rng, 11 + c);
        npred_model *m = make_model(CONFIGS[c][1], &rng);
        if (!m) continue;
        npred_ptable *t = npred_model_table(m);
        const size_t per = (size_t)GC * GH * GW, nimg = GB * per;
        float img[GB * GC * GH * GW], g[GB * GC * GH * GW], g2[GB * GC * GH * GW], pc[GB * 2], beh[GB * 3];
        for (size_t i = 0; i < nimg; i++) img[i] = (float)npred_rng_normal(&rng);
        for (int i = 0; i < GB * 2; i++) pc[i] = (float)(0.4 * npred_rng_normal(&rng));
        for (int i = 0; i < GB * 3; i++) beh[i] = (float)npred_rng_normal(&rng);
        const float *P = npred_model_has_shifter(m) ? pc : NULL, *Bh = npred_model_behavior_channels(m) ? beh : NULL;
        for (int si = 0; si < 2; si++) {
            const char *key = npred_model_session_key(m, si);
            int n = npred_model_session_neurons(m, si);
            float w[GB * GN0], rates[GB * GN0], r2[GB * GN0];
            for (int i = 0; i < GB * n; i++) w[i] = (float)npred_rng_normal(&rng);
            /* the parameter gradient buffer must not be touched */
            for (size_t i = 0; i < t->n_params; i++) t->grad[i] = 0.25f;
            if (!CHECK_OK(npred_model_input_gradient(m, key, img, GB, P, Bh, w, g, rates))) continue;
            size_t touched = 0;
            for (size_t i = 0; i < t->n_params; i++) touched += t->grad[i] != 0.25f;
            CHECK(touched == 0, "%s: %zu parameter gradients changed", CONFIGS[c][0], touched);
            CHECK_OK(npred_model_predict(m, key, img, GB, P, Bh, r2));
            CHECK(!memcmp(rates, r2, sizeof(float) * GB * n), "%s: rates_out equal predict", CONFIGS[c][0]);
            /* the same as the full (training) backward in eval mode */
            npred_ptable_zero_grad(t);
            memset(g2, 0, sizeof g2);
            CHECK_OK(npred_model_forward(m, si, img, P, Bh, GB, 0, NULL, NULL, r2));
            CHECK_OK(npred_model_backward(m, w, 0, g2, NULL));
            double md = 0, mg = 0;
            for (size_t i = 0; i < nimg; i++) {
                md = th_worst(md, fabs(g[i] - g2[i]));
                mg = th_worst(mg, fabs(g2[i]));
            }
            CHECK(md <= 1e-6 * mg && mg > 0, "%s session %d: input gradient vs full backward: max diff %g (max %g)",
                  CONFIGS[c][0], si, md, mg);
            /* central differences, every 4th pixel; the objective is a double sum of float32 rates */
            const double h = 1e-2;
            int bad = 0, total = 0;
            double worst = 0;
            char wn[200] = "";
            for (size_t i = 0; i < nimg; i += 4) {
                float keep = img[i];
                img[i] = keep + (float)h;
                double fp = objective(m, key, img, P, Bh, w, n);
                img[i] = keep - (float)h;
                double fm = objective(m, key, img, P, Bh, w, n);
                img[i] = keep;
                double num = (fp - fm) / (2 * h), err = fabs(num - g[i]) / (2e-2 * fabs(g[i]) + 2e-3 * (mg + 1e-3));
                total++;
                if (!(err <= 1)) bad++;
                if (!(err <= worst)) {
                    worst = err;
                    snprintf(wn, sizeof wn, "pixel %zu: numeric %.6g analytic %.6g", i, num, g[i]);
                }
            }
            CHECK(bad == 0, "%s session %d: %d of %d pixels off; worst %s", CONFIGS[c][0], si, bad, total, wn);
        }
        npred_model_free(m);
    }
}

static void test_input_gradient_errors(void)
{
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    npred_model *m = make_model(CONFIGS[2][1], &rng);
    if (!m) return;
    float img[GB * GC * GH * GW] = {0}, g[GB * GC * GH * GW], w[GB * GN0] = {0};
    CHECK(npred_model_input_gradient(m, "nope", img, 1, NULL, NULL, w, g, NULL) == NPRED_ERR_ARG &&
              strstr(npred_last_error(), "nope") && strstr(npred_last_error(), "a-1-1"),
          "unknown session named with the known ones: %s", npred_last_error());
    CHECK(npred_model_input_gradient(m, "a-1-1", img, 1, NULL, NULL, NULL, g, NULL) == NPRED_ERR_ARG,
          "missing weights rejected");
    /* B larger than max_batch works in chunks */
    float big[7 * GC * GH * GW], gb[7 * GC * GH * GW], wb[7 * GN0], ref[GC * GH * GW];
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) big[i] = (float)npred_rng_normal(&rng);
    for (int i = 0; i < 7 * GN0; i++) wb[i] = (float)npred_rng_normal(&rng);
    if (CHECK_OK(npred_model_input_gradient(m, "a-1-1", big, 7, NULL, NULL, wb, gb, NULL)) &&
        CHECK_OK(npred_model_input_gradient(m, "a-1-1", big + 6 * GC * GH * GW, 1, NULL, NULL, wb + 6 * GN0, ref, NULL)))
        CHECK(!memcmp(ref, gb + 6 * GC * GH * GW, sizeof ref), "chunked batch equals a single call");
    npred_model_free(m);
}

/* ------------------------------------------- double-precision reference --- */

/* A small baseline-shaped model (an unpadded conv layer, a depth-separable layer, eval
 * BatchNorm, AdaptiveELU, FullGaussian2d at its means, ELU(y + offset) + 1) written out
 * in double from the parameter table, the core output stacking both layers (stack None) or
 * the last (stack -1): its central differences are the reference for
 * the float32 input gradient (whole image, window core, cone). */
static const char *DREF_CFG[2] = {
    "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"depth_separable\": true,"
    " \"pad_input\": false, \"core_bias\": false, \"final_nonlinearity\": true, \"elu_shift\": [0.2, -0.1],"
    " \"align_corners\": true, \"gauss_type\": \"full\", \"elu_offset\": -0.4}",
    "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"depth_separable\": true,"
    " \"pad_input\": false, \"core_bias\": false, \"final_nonlinearity\": true, \"elu_shift\": [0.2, -0.1],"
    " \"align_corners\": true, \"gauss_type\": \"full\", \"elu_offset\": -0.4, \"stack\": -1}"};
static int dref_stack_all; /* 1: the core output stacks both layers (DREF_CFG[0]), 0: the last only */
enum { DC = 2, DH = 12, DW = 14, DK = 3, DN = 4 };

static const float *dref_p(npred_model *m, const char *name)
{
    int e = npred_ptable_find(npred_model_table(m), name);
    if (!CHECK(e >= 0, "parameter %s", name)) return NULL;
    return npred_ptable_ptr(npred_model_table(m), e);
}

/* y (co, h - k + 1 + 2 pad, ...) = conv of x (ci, h, w), groups 1 or depthwise (groups == ci == co) */
static void dref_conv(double *y, const double *x, const float *wt, int ci, int co, int h, int w, int k, int pad,
                      int depthwise, int *oh, int *ow)
{
    int H = h + 2 * pad - k + 1, W = w + 2 * pad - k + 1;
    for (int o = 0; o < co; o++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                double acc = 0;
                for (int c = depthwise ? o : 0; c < (depthwise ? o + 1 : ci); c++)
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++) {
                            int y0 = i - pad + a, x0 = j - pad + b;
                            if (y0 < 0 || y0 >= h || x0 < 0 || x0 >= w) continue;
                            acc += (double)wt[((size_t)o * (depthwise ? 1 : ci) + (depthwise ? 0 : c)) * k * k + a * k + b] *
                                   x[((size_t)c * h + y0) * w + x0];
                        }
                y[((size_t)o * H + i) * W + j] = acc;
            }
    *oh = H;
    *ow = W;
}

/* eval BatchNorm + AdaptiveELU in place */
static void dref_bn_act(double *x, int C, int hw, const float *g, const float *b, const float *rm, const float *rv)
{
    for (int c = 0; c < C; c++)
        for (int i = 0; i < hw; i++) {
            double v = (x[(size_t)c * hw + i] - rm[c]) / sqrt((double)rv[c] + 1e-5) * g[c] + b[c] - 0.2;
            x[(size_t)c * hw + i] = (v > 0 ? v : exp(v) - 1) - 0.1;
        }
}

/* the rate of neuron j for one image x (DC, DH, DW) */
static double dref_rate(npred_model *m, const double *x, int j)
{
    static double a[16 * DH * DW], t0[16 * DH * DW], t1[16 * DH * DW], z[16 * DH * DW];
    const char *L0 = "core.features.layer0.", *L1 = "core.features.layer1.";
    char nm[128];
#define P(pre, rest) (snprintf(nm, sizeof nm, "%s%s", pre, rest), dref_p(m, nm))
    int h, w;
    dref_conv(a, x, P(L0, "conv.weight"), DC, 3, DH, DW, DK, 0, 0, &h, &w);
    dref_bn_act(a, 3, h * w, P(L0, "norm.weight"), P(L0, "norm.bias"), P(L0, "norm.running_mean"),
                P(L0, "norm.running_var"));
    int h1, w1;
    dref_conv(t0, a, P(L1, "ds_conv.in_depth_conv.weight"), 3, 3, h, w, 1, 0, 0, &h1, &w1);
    dref_conv(t1, t0, P(L1, "ds_conv.spatial_conv.weight"), 3, 3, h, w, DK, DK / 2, 1, &h1, &w1);
    dref_conv(z, t1, P(L1, "ds_conv.out_depth_conv.weight"), 3, 3, h1, w1, 1, 0, 0, &h1, &w1);
    dref_bn_act(z, 3, h1 * w1, P(L1, "norm.weight"), P(L1, "norm.bias"), P(L1, "norm.running_mean"),
                P(L1, "norm.running_var"));
    const float *F = dref_p(m, "readout.d-1-1._features"), *mu = dref_p(m, "readout.d-1-1._mu"), *bias = dref_p(m, "readout.d-1-1.bias");
#undef P
    /* grid_sample, align_corners: px = (gx + 1) / 2 (w - 1); corners outside read 0 */
    double gx = fmin(fmax(mu[2 * j], -1), 1), gy = fmin(fmax(mu[2 * j + 1], -1), 1);
    double px = (gx + 1) / 2 * (w1 - 1), py = (gy + 1) / 2 * (h1 - 1), fx = floor(px), fy = floor(py);
    double y = bias[j];
    for (int c = 0; c < (dref_stack_all ? 6 : 3); c++) { /* stack None: a, then z; stack -1: z */
        const double *map = !dref_stack_all ? z + (size_t)c * h1 * w1
                            : c < 3         ? a + (size_t)c * h * w
                                            : z + (size_t)(c - 3) * h1 * w1;
        double s = 0;
        for (int k = 0; k < 4; k++) {
            int xx = (int)fx + (k & 1), yy = (int)fy + (k >> 1);
            double wk = ((k & 1) ? px - fx : 1 - (px - fx)) * ((k >> 1) ? py - fy : 1 - (py - fy));
            if (xx >= 0 && xx < w1 && yy >= 0 && yy < h1) s += wk * map[(size_t)yy * w1 + xx];
        }
        y += (double)F[(size_t)c * DN + j] * s; /* _features (1, c, 1, n) */
    }
    double u = y - 0.4;
    return (u > 0 ? u : exp(u) - 1) + 1;
}

static void dref_case(int stack_all)
{
    dref_stack_all = stack_all;
    npred_rng rng;
    npred_rng_seed(&rng, 77);
    double co[DN * 2];
    for (int i = 0; i < DN * 2; i++) co[i] = npred_rng_uniform(&rng);
    npred_model_session ses = {"d-1-1", DN, co, 2, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, DREF_CFG[stack_all ? 0 : 1], "config", DC, DH, DW, &ses, 1, 4, 5))) return;
    npred_ptable *t = npred_model_table(m);
    for (size_t i = 0; i < t->n_params; i++) t->data[i] += (float)(0.3 * npred_rng_normal(&rng));
    for (int e = 0; e < t->n; e++) {
        float *v = npred_ptable_ptr(t, e);
        if (t->items[e].is_buffer && strstr(t->items[e].name, "running_var"))
            for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.5 + npred_rng_uniform(&rng));
        if (t->items[e].is_buffer && strstr(t->items[e].name, "running_mean"))
            for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.2 * npred_rng_normal(&rng));
    }
    float *mu = (float *)dref_p(m, "readout.d-1-1._mu");
    if (!mu) {
        npred_model_free(m);
        return;
    }
    const float pos[DN][2] = {{-0.9f, -0.7f}, {0.13f, 0.41f}, {0.8f, -0.2f}, {1.2f, 0.55f}}; /* the last clamped */
    for (int j = 0; j < DN; j++) mu[2 * j] = pos[j][0], mu[2 * j + 1] = pos[j][1];
    enum { P = DC * DH * DW };
    float img[DN * P], g[DN * P], g2[DN * P], w[DN * DN] = {0}, r[DN * DN], r1[DN];
    int neuron[DN];
    for (int i = 0; i < DN * P; i++) img[i] = (float)npred_rng_normal(&rng);
    for (int b = 0; b < DN; b++) neuron[b] = b, w[b * DN + b] = 1;
    npred_neuron_grad *plan = NULL;
    if (CHECK_OK(npred_model_input_gradient(m, "d-1-1", img, DN, NULL, NULL, w, g, r)) &&
        CHECK_OK(npred_neuron_grad_create(&plan, m, "d-1-1", neuron, DN, NULL, NULL)) &&
        CHECK_OK(npred_neuron_grad_run(plan, img, g2, r1))) {
        CHECK(npred_neuron_grad_is_local(plan, NULL, NULL) == (stack_all ? 1 : 2), "the window core (stack None) or "
              "the cone (stack -1): %d", npred_neuron_grad_is_local(plan, NULL, NULL));
        static double x[P];
        for (int b = 0; b < DN; b++) {
            for (int i = 0; i < P; i++) x[i] = img[b * P + i];
            double f0 = dref_rate(m, x, b);
            CHECK(fabs(r[b * DN + b] - f0) <= 1e-5 * f0 && fabs(r1[b] - f0) <= 1e-5 * f0,
                  "neuron %d: rate %.8g / %.8g, double reference %.8g", b, r[b * DN + b], r1[b], f0);
            double ref[P], mg = 0, e1 = 0, e2 = 0;
            for (int i = 0; i < P; i++) {
                const double h = 1e-5;
                double keep = x[i];
                x[i] = keep + h;
                double fp = dref_rate(m, x, b);
                x[i] = keep - h;
                double fm = dref_rate(m, x, b);
                x[i] = keep;
                ref[i] = (fp - fm) / (2 * h);
                mg = th_worst(mg, fabs(ref[i]));
            }
            for (int i = 0; i < P; i++) {
                e1 = th_worst(e1, fabs(g[b * P + i] - ref[i]));
                e2 = th_worst(e2, fabs(g2[b * P + i] - ref[i]));
            }
            CHECK(mg > 0 && e1 <= 1e-5 * mg && e2 <= 1e-5 * mg,
                  "stack %s, neuron %d: input gradient vs double central differences: max error %g (whole image), %g "
                  "(window), "
                  "max |gradient| %g",
                  stack_all ? "None" : "-1", b, e1, e2, mg);
        }
    }
    npred_neuron_grad_free(plan);
    npred_model_free(m);
}

static void test_input_gradient_double_reference(void)
{
    dref_case(1);
    dref_case(0);
}

/* ------------------------------------------------ single-neuron plans --- */

/* cropped: what npred_neuron_grad_is_local must say (0 full path, 1 window core, 2 cone) */
static const struct {
    const char *name, *cfg;
    int cropped;
} LOCAL[] = {
    {"baseline-like: depth-separable, pad_input false, cortex grid, shifter, modulator", 
     "{\"layers\": 3, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 5, \"depth_separable\": true,"
     " \"pad_input\": false, \"init_sigma\": 0.2, \"grid_mean_predictor\": {\"type\": \"cortex\","
     " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 6, \"final_tanh\": true},"
     " \"shifter\": true, \"shift_layers\": 2, \"modulator\": true, \"elu_offset\": -0.3}", 1},
    {"the same with stack -1 (the cone: every layer on its own region)",
     "{\"layers\": 3, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 5, \"depth_separable\": true,"
     " \"pad_input\": false, \"stack\": -1, \"init_sigma\": 0.2, \"grid_mean_predictor\": {\"type\": \"cortex\","
     " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 6, \"final_tanh\": true},"
     " \"shifter\": true, \"shift_layers\": 2, \"modulator\": true, \"elu_offset\": -0.3}", 2},
    {"cone: Gaussian2d, plain biased convs without BatchNorm, pad_input, dilation 2, kernels 5 and 3, stack -1",
     "{\"layers\": 3, \"input_kern\": 3, \"hidden_kern\": [5, 3], \"hidden_channels\": 4, \"pad_input\": true,"
     " \"hidden_dilation\": 2, \"stack\": -1, \"elu_shift\": [0.3, -0.2], \"batch_norm\": false, \"core_bias\": true,"
     " \"readout_type\": \"Gaussian2d\"}", 2},
    {"Gaussian2d, plain convs, pad_input, dilation 2, skip 2, align_corners",
     "{\"layers\": 3, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4, \"pad_input\": true,"
     " \"hidden_dilation\": 2, \"skip\": 2, \"readout_type\": \"Gaussian2d\", \"align_corners\": true}", 1},
    {"FullGaussian2d, stack of layers 0 and 2, core bias without BatchNorm",
     "{\"layers\": 3, \"input_kern\": 3, \"hidden_kern\": 5, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"stack\": [0, 2], \"batch_norm\": false, \"core_bias\": true, \"gauss_type\": \"isotropic\"}", 1},
    {"SE2dCore (global pooling): full path",
     "{\"core_type\": \"SE2dCore\", \"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4,"
     " \"pad_input\": true, \"n_se_blocks\": 1, \"se_reduction\": 2}", 0},
    {"FullFactorized2d: full path",
     "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
     " \"readout_type\": \"FullFactorized2d\"}", 0},
};

enum { LC = 2, LH = 26, LW = 31, LN = 9 };

/* npred_neuron_grad on one neuron per image equals npred_model_input_gradient with
 * one-hot weights: windowed where the model allows it (the gradient zero outside the
 * window), the full path elsewhere; grid positions spread over the map and beyond
 * its clamp at +-1 */
static void test_neuron_grad(void)
{
    for (size_t c = 0; c < sizeof LOCAL / sizeof LOCAL[0]; c++) {
        npred_rng rng;
        npred_rng_seed(&rng, 40 + c);
        double co[LN * 2];
        for (int i = 0; i < LN * 2; i++) co[i] = 90 * (2 * npred_rng_uniform(&rng) - 1);
        npred_model_session ses = {"s-1-1", LN, co, 2, NULL, NULL};
        npred_model *m = NULL;
        if (!CHECK_OK(npred_model_create(&m, LOCAL[c].cfg, "config", LC, LH, LW, &ses, 1, 4, 9))) continue;
        npred_ptable *t = npred_model_table(m);
        for (size_t i = 0; i < t->n_params; i++) t->data[i] += (float)(0.1 * npred_rng_normal(&rng));
        for (int e = 0; e < t->n; e++) {
            const char *nm = t->items[e].name;
            size_t len = strlen(nm);
            float *v = npred_ptable_ptr(t, e);
            if (t->items[e].is_buffer && strstr(nm, "running_var"))
                for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.5 + npred_rng_uniform(&rng));
            if (t->items[e].is_buffer && strstr(nm, "running_mean"))
                for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(0.2 * npred_rng_normal(&rng));
            if ((len > 4 && !strcmp(nm + len - 4, "_mu")) || (len > 3 && !strcmp(nm + len - 3, ".mu")))
                for (size_t i = 0; i < t->items[e].count; i++) v[i] = (float)(2.6 * npred_rng_uniform(&rng) - 1.3);
            if (!strncmp(nm, "modulator.", 10) && strstr(nm, ".bias"))
                for (size_t i = 0; i < t->items[e].count; i++) v[i] += 1.0f;
        }
        enum { NB = 11, P = LC * LH * LW };
        static float img[NB * P], g[NB * P], g2[NB * P];
        float pc[NB * 2], beh[NB * 3], w[NB * LN] = {0}, r[NB], r2[NB * LN];
        int neuron[NB];
        for (int i = 0; i < NB * P; i++) img[i] = (float)npred_rng_normal(&rng);
        for (int i = 0; i < NB * 2; i++) pc[i] = (float)(0.5 * npred_rng_normal(&rng));
        for (int i = 0; i < NB * 3; i++) beh[i] = (float)npred_rng_normal(&rng);
        for (int b = 0; b < NB; b++) {
            neuron[b] = b % LN;
            w[b * LN + neuron[b]] = 1;
        }
        const float *Pc = npred_model_has_shifter(m) ? pc : NULL, *Bh = npred_model_behavior_channels(m) ? beh : NULL;
        npred_neuron_grad *plan = NULL;
        if (!CHECK_OK(npred_neuron_grad_create(&plan, m, "s-1-1", neuron, NB, Pc, Bh))) {
            npred_model_free(m);
            continue;
        }
        int wh = 0, ww = 0, local = npred_neuron_grad_is_local(plan, &wh, &ww);
        CHECK(local == LOCAL[c].cropped && (!local || (wh < LH && ww < LW)), "%s: local %d, window %dx%d",
              LOCAL[c].name, local, wh, ww);
        for (int i = 0; i < NB * P; i++) g[i] = NAN;
        if (CHECK_OK(npred_neuron_grad_run(plan, img, g, r)) &&
            CHECK_OK(npred_model_input_gradient(m, "s-1-1", img, NB, Pc, Bh, w, g2, r2))) {
            double md = 0, mg = 0, mr = 0;
            for (int i = 0; i < NB * P; i++) {
                md = th_worst(md, fabs(g[i] - g2[i]));
                mg = th_worst(mg, fabs(g2[i]));
            }
            for (int b = 0; b < NB; b++) mr = th_worst(mr, fabs(r[b] - r2[b * LN + neuron[b]]) / r2[b * LN + neuron[b]]);
            CHECK(md <= 2e-6 * mg && mg > 0, "%s: gradient vs the full input gradient: max diff %g (max %g)",
                  LOCAL[c].name, md, mg);
            CHECK(mr <= 1e-6, "%s: rates vs the full model: max relative diff %g", LOCAL[c].name, mr);
            /* windowed: every image's gradient is zero outside a wh x ww window */
            for (int b = 0; local && b < NB; b++) {
                int y0 = LH, y1 = -1, x0 = LW, x1 = -1;
                for (int ch = 0; ch < LC; ch++)
                    for (int y = 0; y < LH; y++)
                        for (int x = 0; x < LW; x++)
                            if (g[(size_t)b * P + ((size_t)ch * LH + y) * LW + x] != 0) {
                                y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
                                x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                            }
                CHECK(y1 - y0 < wh && x1 - x0 < ww, "%s image %d: support rows %d-%d, columns %d-%d (window %dx%d)",
                      LOCAL[c].name, b, y0, y1, x0, x1, wh, ww);
            }
        }
        npred_neuron_grad_free(plan);
        /* one worker (the kernels' own threads) gives the same bits as one image per thread */
        int threads = npred_threads();
        npred_set_threads(1);
        if (CHECK_OK(npred_neuron_grad_create(&plan, m, "s-1-1", neuron, NB, Pc, Bh)) &&
            CHECK_OK(npred_neuron_grad_run(plan, img, g2, r2)))
            CHECK(!memcmp(g, g2, sizeof(float) * NB * P) && !memcmp(r, r2, sizeof r), "%s: 1 thread equals %d",
                  LOCAL[c].name, threads);
        npred_neuron_grad_free(plan);
        npred_set_threads(threads);
        int bad[1] = {LN};
        CHECK(npred_neuron_grad_create(&plan, m, "s-1-1", bad, 1, Pc, Bh) == NPRED_ERR_ARG &&
                  strstr(npred_last_error(), "out of range"),
              "%s: a neuron out of range rejected: %s", LOCAL[c].name, npred_last_error());
        CHECK(npred_neuron_grad_create(&plan, m, "nope", neuron, 1, Pc, Bh) == NPRED_ERR_ARG, "unknown session");
        npred_model_free(m);
    }
}

/* ------------------------------------------------------------ mei_ops --- */

static void test_mei_ops_fixture(void)
{
    th_case c;
    if (!th_case_open(&c, "mei_ops")) return;
    cJSON *args = th_get(c.json, "args", NULL);
    CHECK(cJSON_GetArraySize(args) > 0, "mei_ops lists no cases");
    for (cJSON *a = args ? args->child : NULL; a; a = a->next) {
        char rel[256];
        snprintf(rel, sizeof rel, "%s/input.npy", a->string);
        npred_array sh;
        float *x = th_load_f32(&c, rel, &sh);
        if (!CHECK(!x || sh.ndim == 4, "%s: ndim %d, expected 4", rel, sh.ndim) || !x) {
            free(x);
            continue;
        }
        int N = (int)sh.shape[0], C = (int)sh.shape[1], H = (int)sh.shape[2], W = (int)sh.shape[3];
        const char *op = cJSON_GetStringValue(th_get(a, "op", NULL));
        cJSON *kw = th_get(a, "kwargs", NULL);
        if (op && !strcmp(op, "GaussianBlur")) {
            npred_mei_config cfg;
            npred_mei_config_default(&cfg);
            cJSON *s = th_get(kw, "sigma", NULL);
            cfg.sigma_y = cJSON_IsArray(s) ? cJSON_GetArrayItem(s, 0)->valuedouble : s->valuedouble;
            cfg.sigma_x = cJSON_IsArray(s) ? cJSON_GetArrayItem(s, 1)->valuedouble : s->valuedouble;
            cfg.blur_decay = th_get(kw, "decay_factor", NULL) != NULL;
            cfg.decay_factor = th_num(kw, 0, "decay_factor", NULL);
            cfg.truncate = th_num(kw, 4, "truncate", NULL);
            const char *pm = cJSON_GetStringValue(th_get(kw, "pad_mode", NULL));
            cfg.pad_mode = !pm || !strcmp(pm, "reflect") ? NPRED_PAD_REFLECT
                           : !strcmp(pm, "replicate")    ? NPRED_PAD_REPLICATE
                                                         : NPRED_PAD_CONSTANT;
            int it = (int)th_num(a, 0, "iteration", NULL);
            CHECK_OK(npred_mei_gaussian_blur(x, N, C, H, W, &cfg, it));
        } else if (op && !strcmp(op, "ChangeNorm")) {
            cJSON *nv = th_get(kw, "norm", NULL);
            if (cJSON_IsNumber(nv)) {
                CHECK_OK(npred_mei_change_norm(x, N, (size_t)C * H * W, nv->valuedouble, NULL));
            } else { /* "tensor([1.0, 5.0, 20.0])" */
                float norms[3] = {1, 5, 20};
                CHECK(N == 3 && nv && strstr(cJSON_GetStringValue(nv), "1.0, 5.0, 20.0"), "changenorm_tensor norms");
                CHECK_OK(npred_mei_change_norm(x, N, (size_t)C * H * W, 0, norms));
            }
        } else {
            CHECK(0, "unknown op in %s", a->string);
        }
        snprintf(rel, sizeof rel, "%s/output.npy", a->string);
        CHECK(th_compare_dims(&c, "forward", rel, x, TH_DIMS(N, C, H, W)), "%s", a->string);
        free(x);
    }
    th_case_close(&c);
}

/* ------------------------------------------------- mei_blur_norm (sota) --- */

static void test_mei_blur_norm_sota(void)
{
    th_case c;
    if (!th_case_open(&c, "mei_blur_norm")) return;
    if (access(CKPT, R_OK) != 0) {
        th_skip(CKPT " is absent (real checkpoints are not part of the repository)");
        th_case_close(&c);
        return;
    }
    npred_model *m = NULL;
    npred_array s0, sg, sp;
    float *x0 = th_load_f32(&c, "initial.npy", &s0), *grads = th_load_f32(&c, "grads.npy", &sg);
    float *pg = th_load_f32(&c, "preconditioned_grads.npy", &sp);
    const char *key = cJSON_GetStringValue(th_get(c.json, "args", "data_key", NULL));
    int unit = (int)th_num(c.json, -1, "args", "unit", NULL);
    char *cfgtxt = cJSON_PrintUnformatted(th_get(c.json, "args", "config", NULL));
    /* one (1, 36, 64) image; the gradients of 21 steps, of which the first is compared */
    if (!x0 || !grads || !pg || !key || !cfgtxt ||
        !CHECK(s0.count == 36 * 64 && s0.ndim == 4 && s0.shape[2] == 36 && s0.shape[3] == 64, "initial.npy shape") ||
        !CHECK(sg.ndim == 4 && sg.shape[0] == 21 && sg.shape[1] == 1 && sg.shape[2] == 36 && sg.shape[3] == 64,
               "grads.npy shape") ||
        !CHECK(sp.ndim == 4 && sp.shape[0] == 21 && sp.shape[1] == 1 && sp.shape[2] == 36 && sp.shape[3] == 64,
               "preconditioned_grads.npy shape") ||
        !CHECK_OK(npred_model_open(&m, CKPT, 36, 64, 1))) goto out;
    int si = npred_model_session_index(m, key), n = npred_model_session_neurons(m, si);
    if (!CHECK(si >= 0 && unit >= 0 && unit < n, "session %s unit %d", key, unit)) goto out;
    float *w = calloc((size_t)n, sizeof *w), g[36 * 64], mei[36 * 64], act, trace[21];
    w[unit] = 1;
    /* the input gradient at the initial image: grads[0] = d(-f)/dx */
    if (CHECK_OK(npred_model_input_gradient(m, key, x0, 1, NULL, NULL, w, g, NULL))) {
        for (int i = 0; i < 36 * 64; i++) g[i] = -g[i];
        double rt, at;
        th_tol(&c, "grads", "grads.npy", &rt, &at);
        CHECK(th_close_f32("grads[0]", g, grads, 36 * 64, rt, at), "input gradient of the real baseline");
    }
    npred_mei_config cfg;
    if (CHECK_OK(npred_mei_config_parse(&cfg, cfgtxt, "mei_blur_norm config"))) {
        memcpy(g, grads, sizeof g);
        CHECK_OK(npred_mei_gaussian_blur(g, 1, 1, 36, 64, &cfg, 0));
        double rt, at;
        th_tol(&c, "grads", "preconditioned_grads.npy", &rt, &at);
        CHECK(th_close_f32("preconditioned_grads[0]", g, pg, 36 * 64, rt, at), "blurred gradient");
        int steps = 0;
        if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 1, x0, NULL, NULL, mei, &act, trace, &steps, NULL, NULL))) {
            CHECK(steps == 21 && npred_mei_max_steps(&cfg) == 21, "NumIterations(20) makes 21 steps (%d)", steps);
            CHECK(th_compare_dims(&c, "forward", "trace.npy", trace, TH_DIMS(21)), "objective trace");
            CHECK(th_compare_dims(&c, "forward", "mei.npy", mei, TH_DIMS(1, 1, 36, 64)), "returned MEI");
            double want = th_num(c.json, NAN, "scalars", "activation_of_returned_mei", NULL);
            CHECK(fabs(act - want) <= 1e-5 + 1e-4 * fabs(want), "activation of the MEI %.7g vs %.7g", act, want);
        }
    }
    free(w);
out:
    free(cfgtxt);
    free(x0);
    free(grads);
    free(pg);
    npred_model_free(m);
    th_case_close(&c);
}

/* ------------------------------------------------- optimizer and loop --- */

static void test_mei_steps_and_batching(void)
{
    npred_rng rng;
    npred_rng_seed(&rng, 3);
    npred_model *m = make_model(CONFIGS[2][1], &rng);
    if (!m) return;
    const char *key = "a-1-1";
    enum { P = GC * GH * GW };
    float x0[2 * P], g[2 * P], mei[2 * P], w[2 * GN0] = {0}, act[2], trace[16];
    for (int i = 0; i < 2 * P; i++) x0[i] = (float)npred_rng_normal(&rng);
    w[1] = 1;
    w[GN0 + 4] = 0.5f, w[GN0 + 2] = -0.5f; /* image 1: a discriminative objective */
    CHECK_OK(npred_model_input_gradient(m, key, x0, 2, NULL, NULL, w, g, NULL));
    npred_mei_config cfg;
    npred_mei_config_default(&cfg);
    cfg.blur = 0, cfg.change_norm = 0, cfg.num_iterations = 0, cfg.lr = 0.3;
    /* one SGD step: x + lr * g */
    if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 2, x0, NULL, NULL, mei, act, trace, NULL, NULL, NULL))) {
        double md = 0;
        for (int i = 0; i < 2 * P; i++) md = th_worst(md, fabs(mei[i] - (x0[i] + 0.3f * g[i])));
        CHECK(md <= 1e-6, "SGD step: max diff %g", md);
    }
    /* one Adam step: x + lr * g / (|g| + eps) (bias-corrected moments of one gradient) */
    cfg.optimizer = NPRED_MEI_ADAM, cfg.lr = 0.01;
    if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 2, x0, NULL, NULL, mei, act, trace, NULL, NULL, NULL))) {
        double md = 0;
        for (int i = 0; i < 2 * P; i++) md = th_worst(md, fabs(mei[i] - (x0[i] + 0.01 * g[i] / (fabs(g[i]) + 1e-8))));
        CHECK(md <= 1e-6, "Adam step: max diff %g", md);
    }
    /* a run: the objective rises; batched images equal separate runs */
    npred_mei_config_default(&cfg);
    cfg.num_iterations = 7, cfg.lr = 0.2, cfg.norm = 20, cfg.seed = 5;
    float one[P], tr1[8];
    int steps = 0;
    if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 2, x0, NULL, NULL, mei, act, trace, &steps, NULL, NULL))) {
        CHECK(steps == 8, "8 steps (%d)", steps);
        CHECK(trace[7 * 2] > trace[2] && trace[7 * 2 + 1] > trace[3], "objectives rise: %g -> %g, %g -> %g", trace[2],
              trace[14], trace[3], trace[15]);
        if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w + GN0, 1, x0 + P, NULL, NULL, one, act, tr1, NULL, NULL, NULL))) {
            double md = 0;
            for (int i = 0; i < P; i++) md = th_worst(md, fabs(one[i] - mei[P + i]));
            CHECK(md <= 1e-6, "image 1 of a batch equals its own run (max diff %g)", md);
        }
    }
    /* jitter, ChangeNorm then ClipRange */
    cfg.jitter_x = 2, cfg.jitter_y = 1, cfg.clip = 1, cfg.x_min = -1, cfg.x_max = 1.5;
    if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 2, x0, NULL, NULL, mei, act, trace, &steps, NULL, NULL))) {
        double nrm = 0, lo = 0, hi = 0;
        for (int i = 0; i < P; i++) nrm += (double)mei[i] * mei[i], lo = fmin(lo, mei[i]), hi = fmax(hi, mei[i]);
        CHECK(lo >= -1 && hi <= 1.5 && sqrt(nrm) <= 20 + 1e-4 && hi == 1.5f, "norm %g, range [%g, %g]", sqrt(nrm), lo, hi);
        for (int i = 0; i < 16; i++) CHECK(isfinite(trace[i]), "trace finite");
    }
    /* plateau stopper */
    cfg.plateau_patience = 2, cfg.plateau_min_delta = 1e9, cfg.num_iterations = 50;
    if (CHECK_OK(npred_mei_optimize(m, key, &cfg, w, 1, x0, NULL, NULL, mei, act, NULL, &steps, NULL, NULL)))
        CHECK(steps == 3, "an impossible min_delta stops after patience + 1 steps (%d)", steps);
    /* bad input */
    cfg.plateau_patience = 0, cfg.jitter_x = GW;
    CHECK(npred_mei_optimize(m, key, &cfg, w, 1, x0, NULL, NULL, mei, act, NULL, NULL, NULL, NULL) == NPRED_ERR_CONFIG,
          "jitter larger than the image rejected");
    npred_mei_config_default(&cfg);
    cfg.blur_decay = 1, cfg.decay_factor = -0.1, cfg.num_iterations = 20;
    CHECK(npred_mei_optimize(m, key, &cfg, w, 1, x0, NULL, NULL, mei, act, NULL, NULL, NULL, NULL) == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "sigma"),
          "a sigma decaying below 0 rejected: %s", npred_last_error());
    npred_model_free(m);
}

static void test_jitter_adjoint(void)
{
    enum { C = 2, H = 5, W = 7, N = C * H * W };
    uint64_t s = 9;
    float x[N], y[N], jx[N], jty[N];
    for (int i = 0; i < N; i++) x[i] = (float)th_rand(&s), y[i] = (float)th_rand(&s);
    int shifts[][2] = {{0, 0}, {2, -3}, {-4, 6}, {1, 1}, {-1, 0}};
    for (size_t k = 0; k < 5; k++) {
        npred_mei_jitter_forward(jx, x, C, H, W, shifts[k][0], shifts[k][1]);
        npred_mei_jitter_backward(jty, y, C, H, W, shifts[k][0], shifts[k][1]);
        double a = 0, b = 0;
        for (int i = 0; i < N; i++) a += (double)jx[i] * y[i], b += (double)x[i] * jty[i];
        CHECK(fabs(a - b) <= 1e-5 * (fabs(a) + 1), "<Jx, y> = <x, J'y> for shift (%d, %d): %g vs %g", shifts[k][0],
              shifts[k][1], a, b);
    }
    /* reflect padding, as torch F.pad(mode="reflect") then the crop: shift (1, 0) of rows 0..4
     * reads rows 1, 0, 1, 2, 3 */
    npred_mei_jitter_forward(jx, x, 1, H, W, 1, 0);
    CHECK(jx[0] == x[W] && jx[W] == x[0] && jx[4 * W] == x[3 * W], "jitter down by one reflects row 1 into row 0");
    npred_mei_jitter_forward(jx, x, 1, H, W, 0, -2);
    CHECK(jx[W - 1] == x[W - 3] && jx[W - 2] == x[W - 2] && jx[0] == x[2], "jitter left by two reflects the right edge");
}

/* --------------------------------------------------------- config ---- */

static void test_mei_config_parse(void)
{
    npred_mei_config c;
    const char *ok =
        "{\"device\": \"cpu\", \"seed\": 3, \"initial\": {\"path\": \"mei.initial.RandomNormal\"},"
        " \"optimizer\": {\"path\": \"torch.optim.Adam\", \"kwargs\": {\"lr\": 0.05, \"betas\": [0.8, 0.99]}},"
        " \"precondition\": {\"path\": \"mei.legacy.ops.GaussianBlur\", \"kwargs\": {\"sigma\": [1.5, 0.6],"
        " \"decay_factor\": -0.001, \"truncate\": 3, \"pad_mode\": \"replicate\"}},"
        " \"transform\": {\"path\": \"mei.legacy.ops.Jitter\", \"kwargs\": {\"max_jitter\": [2, 3]}},"
        " \"postprocessing\": [{\"path\": \"mei.legacy.ops.ChangeNorm\", \"kwargs\": {\"norm\": 12}},"
        " {\"path\": \"mei.legacy.ops.ClipRange\", \"kwargs\": {\"x_min\": -1.5, \"x_max\": 2}}],"
        " \"stopper\": {\"path\": \"npred.stoppers.Plateau\", \"kwargs\": {\"patience\": 20, \"min_delta\": 0.001,"
        " \"max_iterations\": 400}}}";
    if (CHECK_OK(npred_mei_config_parse(&c, ok, "ok.json")))
        CHECK(c.seed == 3 && c.optimizer == NPRED_MEI_ADAM && c.lr == 0.05 && c.beta1 == 0.8 && c.beta2 == 0.99 &&
                  c.blur && c.sigma_y == 1.5 && c.sigma_x == 0.6 && c.blur_decay && c.decay_factor == -0.001 &&
                  c.truncate == 3 && c.pad_mode == NPRED_PAD_REPLICATE && c.jitter_y == 2 && c.jitter_x == 3 &&
                  c.change_norm && c.norm == 12 && c.clip && c.x_min == -1.5 && c.x_max == 2 &&
                  c.plateau_patience == 20 && c.plateau_min_delta == 0.001 && c.num_iterations == 400,
              "every value read");
    CHECK_OK(npred_mei_config_parse(&c, "{}", "empty.json"));
    CHECK(!c.blur && !c.change_norm && !c.clip && c.num_iterations == 1000 && c.optimizer == NPRED_MEI_SGD,
          "absent components are off, required ones default");
    const char *bad[][2] = {
        {"{\"n_meis\": 2}", "n_meis"},
        {"{\"optimizer\": {\"path\": \"torch.optim.SGD\", \"kwargs\": {\"lr\": 1, \"nesterov\": true}}}", "optimizer.kwargs.nesterov"},
        {"{\"optimizer\": {\"path\": \"torch.optim.LBFGS\", \"kwargs\": {\"lr\": 1}}}", "optimizer.path"},
        {"{\"optimizer\": {\"path\": \"torch.optim.SGD\"}}", "key 'optimizer.kwargs.lr' is missing"},
        {"{\"precondition\": {\"path\": \"mei.legacy.ops.GaussianBlur\", \"kwargs\": {\"sigma\": 1, \"pad_mode\": "
         "\"circular\"}}}",
         "precondition.kwargs.pad_mode"},
        {"{\"stopper\": {\"path\": \"mei.stoppers.NumIterations\", \"kwargs\": {\"num_iterations\": 2.5}}}",
         "stopper.kwargs.num_iterations"},
        {"{\"device\": \"cuda\"}", "key 'device': expected \"cpu\""},
        {"{\"postprocessing\": {\"path\": \"mei.legacy.ops.ClipRange\", \"kwargs\": {\"x_min\": 1, \"x_max\": 0}}}",
         "postprocessing.kwargs.x_min"},
        {"{\"postprocessing\": [{\"path\": \"mei.legacy.ops.ChangeNorm\", \"kwargs\": {\"norm\": 1}},"
         " {\"path\": \"mei.legacy.ops.ChangeNorm\", \"kwargs\": {\"norm\": 2}}]}",
         "postprocessing[1].path"},
        {"{\"transform\": {\"path\": \"mei.legacy.ops.Jitter\", \"kwargs\": {\"max_jitter\": [1, -1]}}}",
         "transform.kwargs.max_jitter"},
        {"{\"objectives\": [{\"path\": \"mei.objectives.EvaluationObjective\", \"kwargs\": {\"interval\": 5}}]}",
         "objectives[0].kwargs.interval"},
        {"{\"optimizer\": {\"path\": \"torch.optim.SGD\", \"kwargs\": {\"lr\": -1}}}", "optimizer.kwargs.lr': expected a number > 0"},
        {"[1, 2]", "object"},
        {"{\"seed\": 1", "JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        npred_status st = npred_mei_config_parse(&c, bad[i][0], "bad.json");
        CHECK(st != NPRED_OK && strstr(npred_last_error(), bad[i][1]) && strstr(npred_last_error(), "bad.json"),
              "%s rejected naming '%s': %s", bad[i][0], bad[i][1], npred_last_error());
    }
}

/* --------------------------------------------------------- neurons ---- */

static void test_parse_neurons(void)
{
    int *idx = NULL, n = 0;
    if (CHECK_OK(npred_parse_neurons("0-3,7,10-11", 20, &idx, &n)))
        CHECK(n == 7 && idx[0] == 0 && idx[3] == 3 && idx[4] == 7 && idx[5] == 10 && idx[6] == 11, "ranges and lists");
    free(idx);
    if (CHECK_OK(npred_parse_neurons("all", 5, &idx, &n))) CHECK(n == 5 && idx[4] == 4, "all");
    free(idx);
    const char *bad[] = {"", "20", "3-1", "1,,2", "a", "1-", "-1", "2,2", "0-5,3", "1;2", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        idx = NULL;
        CHECK(npred_parse_neurons(bad[i], 20, &idx, &n) == NPRED_ERR_ARG && !idx, "'%s' rejected: %s", bad[i],
              npred_last_error());
    }
    CHECK(npred_parse_neurons("25", 20, &idx, &n) == NPRED_ERR_ARG && strstr(npred_last_error(), "20 neurons"),
          "out of range names the session size: %s", npred_last_error());
}

/* ------------------------------------------------ RF statistics ------- */

static void test_rf_stats(void)
{
    enum { H = 30, W = 40 };
    static float maps[3 * 2 * H * W];
    double cx[3] = {12.3, 27.8, 20.5}, cy[3] = {9.6, 20.1, 14.5}, sg[3] = {1.5, 2.5, 2.5};
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 2; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    double r2 = (x - cx[i]) * (x - cx[i]) + (y - cy[i]) * (y - cy[i]);
                    /* an odd (sine-phase) Gabor in channel 1 of image 1: the envelope still centres it */
                    double v = exp(-r2 / (2 * sg[i] * sg[i])) * (i == 1 && c == 1 ? sin(0.9 * (x - cx[i])) : 1);
                    maps[((size_t)(i * 2 + c) * H + y) * W + x] = (float)((c == 1) == (i == 1) ? v : 0.1 * v);
                }
    float ctr[6], size[3];
    npred_rf_stats(maps, 3, 2, H, W, ctr, size);
    for (int i = 0; i < 3; i++)
        CHECK(fabs(ctr[2 * i] - cx[i]) < 0.35 && fabs(ctr[2 * i + 1] - cy[i]) < 0.35, "centre %d: (%.2f, %.2f) vs (%.2f, %.2f)",
              i, ctr[2 * i], ctr[2 * i + 1], cx[i], cy[i]);
    CHECK(size[0] > 0.3 && size[2] > size[0] * 1.4, "size grows with sigma: %g, %g", size[0], size[2]);
    memset(maps, 0, sizeof(float) * 2 * H * W);
    npred_rf_stats(maps, 1, 2, H, W, ctr, size);
    CHECK(isnan(ctr[0]) && isnan(size[0]), "an all-zero map has no centre");
}

/* --------------------------------------------------------- tuning ----- */

static void test_tuning_analyze(void)
{
    npred_tuning_config cfg;
    npred_tuning_config_default(&cfg);
    int no = cfg.n_ori, ns = cfg.n_sf, np = cfg.n_phase, G = no * ns * np;
    float *R = malloc(sizeof(float) * G * 2);
    /* neuron 0: complex, orientation 50 deg, SF index 5; neuron 1: simple (half-wave rectified), 100 deg, index 2 */
    double th0[2] = {50 * M_PI / 180, 100 * M_PI / 180};
    int f0i[2] = {5, 2};
    for (int t = 0; t < no; t++)
        for (int f = 0; f < ns; f++)
            for (int p = 0; p < np; p++)
                for (int i = 0; i < 2; i++) {
                    double th = M_PI * t / no, ph = 2 * M_PI * p / np;
                    double ori = exp(2 * (cos(2 * (th - th0[i])) - 1)), sf = exp(-0.5 * (f - f0i[i]) * (f - f0i[i]));
                    double mod = i == 0 ? 1 : fmax(0, cos(ph - 1.0)) * M_PI; /* same mean (1) over phase */
                    R[(size_t)((t * ns + f) * np + p) * 2 + i] = (float)(0.2 + ori * sf * mod);
                }
    npred_tuning_result r[2];
    if (CHECK_OK(npred_tuning_analyze(&cfg, R, 2, r))) {
        for (int i = 0; i < 2; i++) {
            double d = fabs(r[i].orientation - th0[i]);
            CHECK(d < 1e-6, "neuron %d orientation %.4f vs %.4f", i, r[i].orientation, th0[i]);
            CHECK(fabs(r[i].spatial_frequency - npred_tuning_sf(&cfg, f0i[i])) < 1e-12, "neuron %d SF %g", i,
                  r[i].spatial_frequency);
        }
        /* expected OSI and F1/F0 from the construction, in double */
        int bt0 = (int)lround(th0[0] / (M_PI / no)) % no, bt1 = (int)lround(th0[1] / (M_PI / no)) % no;
        double rp = 0.2 + exp(2 * (cos(2 * (M_PI * bt0 / no - th0[0])) - 1));
        double ro = 0.2 + exp(2 * (cos(2 * (M_PI * ((bt0 + no / 2) % no) / no - th0[0])) - 1));
        CHECK(fabs(r[0].osi - (rp - ro) / (rp + ro)) < 1e-5, "OSI %g vs %g", r[0].osi, (rp - ro) / (rp + ro));
        CHECK(r[0].f1_f0 < 1e-5, "complex cell: F1/F0 %g", r[0].f1_f0);
        double c1 = 0, s1 = 0, m0 = 0, a = exp(2 * (cos(2 * (M_PI * bt1 / no - th0[1])) - 1));
        for (int p = 0; p < np; p++) {
            double ph = 2 * M_PI * p / np, v = 0.2 + a * fmax(0, cos(ph - 1.0)) * M_PI;
            c1 += v * cos(ph), s1 += v * sin(ph), m0 += v / np;
        }
        double want = 2 * sqrt(c1 * c1 + s1 * s1) / np / m0;
        CHECK(fabs(r[1].f1_f0 - want) < 1e-5 && r[1].f1_f0 > 1, "simple cell: F1/F0 %g vs %g", r[1].f1_f0, want);
    }
    cfg.n_phase = 2;
    CHECK(npred_tuning_analyze(&cfg, R, 2, r) == NPRED_ERR_ARG, "2 phases rejected");
    free(R);
}

int main(void)
{
    RUN(test_input_gradient_all_readouts);
    RUN(test_input_gradient_errors);
    RUN(test_neuron_grad);
    RUN(test_input_gradient_double_reference);
    RUN(test_mei_ops_fixture);
    RUN(test_mei_blur_norm_sota);
    RUN(test_mei_steps_and_batching);
    RUN(test_jitter_adjoint);
    RUN(test_mei_config_parse);
    RUN(test_parse_neurons);
    RUN(test_rf_stats);
    RUN(test_tuning_analyze);
    return th_summary();
}
