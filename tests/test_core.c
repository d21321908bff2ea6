/* Stacked2dCore / SE2dCore against the 0.3.0 fixtures and finite differences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "cores/crop.h"
#include "cores/stacked2d.h"
#include "harness.h"
#include "kernels/conv2d.h"
#include "kernels/gemm.h"
#include "model/config.h"

/* build the core config from the fixture's Stacked2dCore args */
static int core_config(th_case *c, npred_core_config *cc)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *args = cJSON_Duplicate(th_get(c->json, "args", NULL), 1);
    cJSON *ref = th_get(c->json, "reference", NULL);
    if (args && cJSON_IsString(ref) && strstr(ref->valuestring, "SE2dCore") && !cJSON_GetObjectItem(args, "type"))
        cJSON_AddStringToObject(args, "type", "SE2dCore"); /* the case names its class in "reference" */
    cJSON_AddItemToObject(root, "core", args);
    npred_model_config m;
    int ok = CHECK_OK(npred_model_config_from_cjson(&m, root, c->name));
    cJSON_Delete(root);
    *cc = m.core;
    return ok;
}

static void run_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_core_config cc;
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    memset(&core, 0, sizeof core);
    if (!x || !core_config(&c, &cc)) goto out;
    int B = (int)xs.shape[0];
    if (!CHECK_OK(npred_core_declare(&core, &cc, "", (int)xs.shape[2], (int)xs.shape[3], &t)) ||
        !CHECK_OK(npred_ptable_alloc(&t)) || !CHECK_OK(npred_core_setup(&core, &t, B)))
        goto out;
    th_load_table(&c, &t, "params", "", NULL);
    char *repr = malloc(65536);
    npred_core_repr(&core, repr, 65536);
    cJSON *want = th_get(c.json, "repr", NULL);
    CHECK(want && !strcmp(repr, want->valuestring), "repr differs:\n%s\nwant:\n%s", repr,
          want ? want->valuestring : "");
    free(repr);
    CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
    size_t nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    npred_array os;
    float *o = th_load_f32(&c, "output.npy", &os);
    CHECK(o && os.count == nout, "output has %zu elements, fixture %zu", nout, os.count);
    free(o);
    if (os.count == nout)
        th_compare_dims(&c, "forward", "output.npy", core.output, TH_DIMS(B, core.out_c, core.out_h, core.out_w));
    cJSON *inter = th_get(c.json, "files", "intermediates", NULL), *it;
    cJSON_ArrayForEach(it, inter)
    {
        int l = atoi(it->string + strlen("features.layer"));
        npred_core_layer *L = &core.L[l];
        if (strstr(it->string, ".seg_ex_block.se")) { /* the squeeze-excitation scales (B, C) */
            if (CHECK(L->has_se, "%s: layer %d has no SE block", it->string, l))
                th_compare_dims(&c, "forward", it->valuestring, L->se_s, TH_DIMS(B, L->cout));
        } else {
            th_compare_dims(&c, "forward", it->valuestring, L->out, TH_DIMS(B, L->cout, L->hout, L->wout));
        }
    }
    th_compare_table(&c, &t, "buffers_after", "forward", "", NULL);
    npred_ptable_zero_grad(&t);
    double reg = npred_core_regularizer(&core, &t, 1.0);
    double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
    CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-6, "regularizer %.9g want %.9g", reg, want_reg);
    float *up = th_load_f32(&c, "upstream.npy", NULL);
    float *dx = calloc(xs.count, sizeof *dx);
    if (up) {
        double loss = reg;
        for (size_t i = 0; i < nout; i++) loss += (double)core.output[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-4, "loss %.9g want %.9g", loss, want_loss);
        CHECK_OK(npred_core_backward(&core, &t, up, dx));
        const char *skip[] = {"input", NULL};
        th_compare_table(&c, &t, "grads", "grads", "", skip);
        if (th_get(c.json, "files", "grads", "input", NULL))
            th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
    }
    /* eval after the train step: running stats as updated */
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    th_compare_dims(&c, "forward", "output_eval.npy", core.output, TH_DIMS(B, core.out_c, core.out_h, core.out_w));
    free(up);
    free(dx);
out:
    free(x);
    npred_core_free(&core);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_sensorium(void) { run_case("stacked2d_sensorium"); }
static void test_tutorial(void) { run_case("stacked2d_tutorial"); }
static void test_plain_skip(void) { run_case("stacked2d_plain_skip"); }
static void test_kernlist_padquirk(void) { run_case("stacked2d_kernlist_padquirk"); }
static void test_linear(void) { run_case("stacked2d_linear"); }
static void test_se2d_core(void) { run_case("se2d_core"); }
static void test_independent_bn_bias_false(void) { run_case("stacked2d_independent_bn_bias_false"); }
static void test_independent_bn_bias_false_nobias(void) { run_case("stacked2d_independent_bn_bias_false_nobias"); }
static void test_independent_bn_bias_false_noscale(void) { run_case("stacked2d_independent_bn_bias_false_noscale"); }

/* ---- finite differences through a whole core in eval mode and train mode ----
 * Every kernel is checked against a double-precision reference in its own test;
 * here the analytic gradient of a whole core (parameters and input) is compared
 * with Richardson-extrapolated central differences of the loss along random
 * directions, in eval and in train mode (batch statistics). */
static double core_loss(npred_core *core, npred_ptable *t, const float *x, int B, int train, const float *up,
                        size_t nout, double *saved_bufs)
{
    /* restore the buffers so repeated train-mode forwards see the same running stats */
    for (size_t i = 0; i < t->n_buffers; i++) t->bufdata[i] = (float)saved_bufs[i];
    npred_core_forward(core, t, x, B, train);
    double l = 0;
    for (size_t i = 0; i < nout; i++) l += (double)core->output[i] * up[i];
    return l + npred_core_regularizer(core, t, 0);
}

static void fd_case(const char *cfgjson, int train)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfgjson, "fd config"))) return;
    m.core.input_channels = 2;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    int B = 3, H = 11, W = 9;
    if (!CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_core_setup(&core, &t, B)))
        return;
    npred_rng rng;
    npred_rng_seed(&rng, 7);
    npred_core_init_params(&core, &t, &rng);
    /* make every parameter matter: random BN affine and biases */
    for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.2 * npred_rng_normal(&rng));
    size_t nx = (size_t)B * 2 * H * W, nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    float *x = malloc(nx * sizeof *x), *up = malloc(nout * sizeof *up), *dx = calloc(nx, sizeof *dx);
    for (size_t i = 0; i < nx; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < nout; i++) up[i] = (float)npred_rng_normal(&rng);
    double *bufs = malloc((t.n_buffers + 1) * sizeof *bufs);
    for (size_t i = 0; i < t.n_buffers; i++) bufs[i] = t.bufdata[i];
    core_loss(&core, &t, x, B, train, up, nout, bufs);
    npred_ptable_zero_grad(&t);
    npred_core_backward(&core, &t, up, dx);
    npred_core_regularizer(&core, &t, 1.0);
    float *g = malloc(t.n_params * sizeof *g);
    memcpy(g, t.grad, t.n_params * sizeof *g);
    /* directional derivatives along random directions, parameters and input */
    double h = 2e-2;
    for (int trial = 0; trial < 6; trial++) {
        float *dp = malloc(t.n_params * sizeof *dp), *dxd = malloc(nx * sizeof *dxd);
        double ana = 0;
        for (size_t i = 0; i < t.n_params; i++) {
            dp[i] = (float)npred_rng_normal(&rng);
            ana += (double)dp[i] * g[i];
        }
        for (size_t i = 0; i < nx; i++) {
            dxd[i] = trial % 2 ? (float)npred_rng_normal(&rng) : 0.0f;
            ana += (double)dxd[i] * dx[i];
        }
        /* unit direction: the step is then h in parameter space whatever the size of the model */
        double norm = 0;
        for (size_t i = 0; i < t.n_params; i++) norm += (double)dp[i] * dp[i];
        for (size_t i = 0; i < nx; i++) norm += (double)dxd[i] * dxd[i];
        norm = sqrt(norm);
        for (size_t i = 0; i < t.n_params; i++) dp[i] = (float)(dp[i] / norm);
        for (size_t i = 0; i < nx; i++) dxd[i] = (float)(dxd[i] / norm);
        ana /= norm;
        float *p0 = malloc(t.n_params * sizeof *p0), *x0 = malloc(nx * sizeof *x0);
        memcpy(p0, t.data, t.n_params * sizeof *p0);
        memcpy(x0, x, nx * sizeof *x0);
        double dd[2];
        for (int k = 0; k < 2; k++) { /* Richardson: cancel the h^2 term of the central difference */
            double hk = k ? h / 2 : h;
            for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)(p0[i] + hk * dp[i]);
            for (size_t i = 0; i < nx; i++) x[i] = (float)(x0[i] + hk * dxd[i]);
            double lp = core_loss(&core, &t, x, B, train, up, nout, bufs);
            for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)(p0[i] - hk * dp[i]);
            for (size_t i = 0; i < nx; i++) x[i] = (float)(x0[i] - hk * dxd[i]);
            double lm = core_loss(&core, &t, x, B, train, up, nout, bufs);
            dd[k] = (lp - lm) / (2 * hk);
        }
        memcpy(t.data, p0, t.n_params * sizeof *p0);
        memcpy(x, x0, nx * sizeof *x0);
        double num = (4 * dd[1] - dd[0]) / 3;
        CHECK(fabs(num - ana) <= 2e-3 * fabs(ana) + 1e-3, "train=%d direction %d: numeric %.7g analytic %.7g", train,
              trial, num, ana);
        free(dp), free(dxd), free(p0), free(x0);
    }
    free(x), free(up), free(dx), free(bufs), free(g);
    npred_core_free(&core);
    npred_ptable_free(&t);
}

static const char *CFG_DS = "{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 3,"
                            " \"depth_separable\": true, \"bias\": true, \"gamma_input\": 0.7, \"pad_input\": false,"
                            " \"stack\": -2, \"elu_shift\": [0.1, -0.2]}}";
static const char *CFG_SKIP = "{\"core\": {\"hidden_channels\": 3, \"input_kern\": 3, \"hidden_kern\": [5, 3],"
                              " \"layers\": 3, \"skip\": 2, \"gamma_hidden\": 0.3, \"gamma_input\": 0.5,"
                              " \"stride\": 1, \"hidden_dilation\": 2, \"laplace_padding\": null,"
                              " \"input_regularizer\": \"LaplaceL2norm\", \"stack\": [0, 1]}}";
static const char *CFG_SE = "{\"core\": {\"type\": \"SE2dCore\", \"hidden_channels\": 8, \"input_kern\": 3,"
                            " \"hidden_kern\": 3, \"layers\": 3, \"n_se_blocks\": 2, \"se_reduction\": 4,"
                            " \"gamma_input\": 0.2, \"independent_bn_bias\": false, \"batch_norm_scale\": true}}";
static const char *CFG_BIAS2D = "{\"core\": {\"hidden_channels\": 3, \"input_kern\": 3, \"hidden_kern\": 3,"
                                " \"layers\": 2, \"independent_bn_bias\": false, \"batch_norm_scale\": false,"
                                " \"bias\": true, \"input_regularizer\": \"GaussianLaplaceL2\","
                                " \"laplace_padding\": 1, \"use_avg_reg\": false}}";

/* one stacked layer (the last), no skip: the output gradients of layers l and l + 2
 * share a buffer and layer 0's BatchNorm gradient borrows layer 1's */
static const char *CFG_SHARED = "{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                                " \"layers\": 4, \"depth_separable\": true, \"gamma_input\": 0.4,"
                                " \"pad_input\": false, \"stack\": -1, \"elu_shift\": [0.1, -0.2]}}";

static void test_fd_shared_gradient_buffers(void)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, CFG_SHARED, "shared config"))) return;
    m.core.input_channels = 2;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    if (CHECK_OK(npred_core_declare(&core, &m.core, "core.", 11, 9, &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_core_setup(&core, &t, 3))) {
        CHECK(core.L[0].dout == core.L[2].dout && core.L[1].dout == core.L[3].dout && core.L[0].dout != core.L[1].dout,
              "output gradient buffers are not shared between layers l and l + 2");
        npred_core_free(&core);
    }
    npred_ptable_free(&t);
    fd_case(CFG_SHARED, 1);
    fd_case(CFG_SHARED, 0);
}

static void test_fd_depth_separable_eval(void) { fd_case(CFG_DS, 0); }
static void test_fd_depth_separable_train(void) { fd_case(CFG_DS, 1); }
static void test_fd_skip_dilation_train(void) { fd_case(CFG_SKIP, 1); }
static void test_fd_se_core_train(void) { fd_case(CFG_SE, 1); }
static void test_fd_bias2d_train(void) { fd_case(CFG_BIAS2D, 1); }

/* The depth-separable block runs image by image in one parallel region: its
 * intermediates and output are bit-identical to the three batched convolutions,
 * and the whole core output is the same for 1 and 2 threads. */
static void test_ds_block_image_by_image(void)
{
    static const char *cfg = "{\"core\": {\"hidden_channels\": 24, \"input_kern\": 5, \"hidden_kern\": 7,"
                             " \"layers\": 3, \"depth_separable\": true, \"bias\": true, \"pad_input\": false}}";
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfg, "ds config"))) return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    int B = 5, H = 17, W = 44;
    /* set up on 1 thread, run on 2: the workspace must not depend on the setup's thread count */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    int ok = CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
             CHECK_OK(npred_core_setup(&core, &t, B));
    omp_set_num_threads(nt);
    if (!ok) return;
    npred_rng rng;
    npred_rng_seed(&rng, 11);
    npred_core_init_params(&core, &t, &rng);
    for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.2 * npred_rng_normal(&rng));
    size_t nx = (size_t)B * H * W, nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    float *x = malloc(nx * sizeof *x), *o2 = malloc(nout * sizeof *o2);
    for (size_t i = 0; i < nx; i++) x[i] = (float)npred_rng_normal(&rng);
    omp_set_num_threads(nt > 1 ? nt : 2);
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    memcpy(o2, core.output, nout * sizeof *o2);
    int checked = 0;
    for (int l = 0; l < m.core.layers; l++) {
        npred_core_layer *L = &core.L[l];
        if (!L->ds) continue;
        const float *src[3] = {core.L[l - 1].out, L->t[0], L->t[1]};
        const float *got[3] = {L->t[0], L->t[1], L->z};
        for (int i = 0; i < 3; i++) {
            npred_conv2d_params p = L->cp[i];
            p.n = B;
            int oh, ow;
            npred_conv2d_output_size(&p, &oh, &ow);
            size_t ny = (size_t)B * p.o * oh * ow;
            float *y = malloc(ny * sizeof *y);
            CHECK_OK(npred_conv2d_forward(y, src[i], npred_ptable_ptr(&t, L->p_w[i]),
                                          L->p_b[i] >= 0 ? npred_ptable_ptr(&t, L->p_b[i]) : NULL, &p, NULL, 0));
            CHECK(memcmp(y, got[i], ny * sizeof *y) == 0, "layer %d conv %d: image by image differs from batched", l,
                  i);
            free(y);
            checked++;
        }
    }
    CHECK(checked == 6, "%d depth-separable convolutions checked, want 6", checked);
    omp_set_num_threads(1);
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    omp_set_num_threads(nt);
    CHECK(memcmp(o2, core.output, nout * sizeof *o2) == 0, "core output differs between 1 and 2 threads");
    /* backward image by image: bit-identical for 1 and 2 threads, and close to the
     * batched calls (which run when there are more threads than images) */
    float *up = malloc(nout * sizeof *up), *g[3], *dx[3], *tout[3], *bufs[3], *acts[3];
    size_t nact = 0; /* every layer's ELU output (made by the next layer's block image by image) */
    for (int l = 0; l < m.core.layers; l++) nact += (size_t)B * core.L[l].cout * core.L[l].hout * core.L[l].wout;
    float *buf0 = malloc((t.n_buffers + 1) * sizeof *buf0);
    memcpy(buf0, t.bufdata, t.n_buffers * sizeof *buf0);
    for (size_t i = 0; i < nout; i++) up[i] = (float)npred_rng_normal(&rng);
    static const int threads[3] = {2, 1, 8};
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(threads[r]);
        memcpy(t.bufdata, buf0, t.n_buffers * sizeof *buf0);
        CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
        tout[r] = malloc(nout * sizeof *tout[r]);
        memcpy(tout[r], core.output, nout * sizeof *tout[r]);
        bufs[r] = malloc((t.n_buffers + 1) * sizeof *bufs[r]);
        memcpy(bufs[r], t.bufdata, t.n_buffers * sizeof *bufs[r]);
        acts[r] = malloc(nact * sizeof *acts[r]);
        for (int l = 0, o = 0; l < m.core.layers; l++) {
            size_t nl = (size_t)B * core.L[l].cout * core.L[l].hout * core.L[l].wout;
            memcpy(acts[r] + o, core.L[l].a, nl * sizeof *acts[r]);
            o += (int)nl;
        }
        npred_ptable_zero_grad(&t);
        dx[r] = calloc(nx, sizeof *dx[r]);
        CHECK_OK(npred_core_backward(&core, &t, up, dx[r]));
        g[r] = malloc(t.n_params * sizeof *g[r]);
        memcpy(g[r], t.grad, t.n_params * sizeof *g[r]);
    }
    omp_set_num_threads(nt);
    CHECK(memcmp(g[0], g[1], t.n_params * sizeof *g[0]) == 0, "parameter gradients differ between 1 and 2 threads");
    CHECK(memcmp(dx[0], dx[1], nx * sizeof *dx[0]) == 0, "input gradient differs between 1 and 2 threads");
    /* training forward: the BN statistics made by the block image by image (threads 1, 2;
     * the first layer's too) and the ELU outputs made by the next block image by image
     * equal the batched kernels' own (8 threads, more than images): same bits */
    for (int r = 1; r < 3; r++) {
        CHECK(memcmp(acts[0], acts[r], nact * sizeof *acts[0]) == 0, "layer outputs differ (%d threads)",
              threads[r]);
        CHECK(memcmp(tout[0], tout[r], nout * sizeof *tout[0]) == 0, "training output differs (%d threads)",
              threads[r]);
        CHECK(memcmp(bufs[0], bufs[r], t.n_buffers * sizeof *bufs[0]) == 0, "running statistics differ (%d threads)",
              threads[r]);
    }
    th_close_f32("gradients, image by image vs batched", g[0], g[2], t.n_params, 1e-4, 1e-5);
    th_close_f32("input gradient, image by image vs batched", dx[0], dx[2], nx, 1e-4, 1e-6);
    for (int r = 0; r < 3; r++) free(g[r]), free(dx[r]), free(tout[r]), free(bufs[r]), free(acts[r]);
    free(up), free(buf0);
    free(x), free(o2);
    npred_core_free(&core);
    npred_ptable_free(&t);
}

/* Eval mode image by image (BatchNorm + ELU applied to each image in the loop, the
 * 5x5 first layer too) gives the bits of the batched kernels (more threads than
 * images), with 1 and 2 threads, every layer's output; a lean forward (a prediction:
 * the intermediates in per-thread scratch) gives them too, and refuses a backward. */
static void test_eval_image_by_image(void)
{
    static const char *cfg = "{\"core\": {\"hidden_channels\": 16, \"input_kern\": 5, \"hidden_kern\": 7,"
                             " \"layers\": 3, \"depth_separable\": true, \"pad_input\": false}}";
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfg, "eval config"))) return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    enum { B = 4, H = 15, W = 38, LAYERS = 3 };
    int nt = omp_get_max_threads();
    if (!CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_core_setup(&core, &t, B)))
        return;
    npred_rng rng;
    npred_rng_seed(&rng, 5);
    npred_core_init_params(&core, &t, &rng);
    for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.2 * npred_rng_normal(&rng));
    for (int l = 0; l < LAYERS; l++) { /* running statistics away from 0 and 1 */
        float *rm = npred_ptable_ptr(&t, core.L[l].p_rmean), *rv = npred_ptable_ptr(&t, core.L[l].p_rvar);
        for (int c = 0; c < core.L[l].cout; c++)
            rm[c] = (float)(0.3 * npred_rng_normal(&rng)), rv[c] = (float)(0.5 + npred_rng_uniform(&rng));
    }
    float *x = malloc(sizeof(float) * B * H * W), *ref[LAYERS];
    size_t n[LAYERS];
    for (int i = 0; i < B * H * W; i++) x[i] = (float)npred_rng_normal(&rng);
    omp_set_num_threads(8); /* more threads than images: the batched kernels */
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    for (int l = 0; l < LAYERS; l++) {
        n[l] = (size_t)B * core.L[l].cout * core.L[l].hout * core.L[l].wout;
        ref[l] = malloc(n[l] * sizeof(float));
        memcpy(ref[l], core.L[l].out, n[l] * sizeof(float));
    }
    for (int lean = 0; lean <= 1; lean++)
        for (int th = 1; th <= 2; th++) {
            omp_set_num_threads(th);
            core.lean = lean;
            for (int l = 0; l < LAYERS; l++) memset(core.L[l].out, 0xff, n[l] * sizeof(float)); /* NaNs */
            CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
            for (int l = 0; l < LAYERS; l++)
                CHECK(!memcmp(ref[l], core.L[l].out, n[l] * sizeof(float)),
                      "layer %d: eval image by image (lean %d, %d threads) differs from the batched kernels", l, lean,
                      th);
        }
    float *up = calloc((size_t)B * core.out_c * core.out_h * core.out_w, sizeof(float));
    float *dx = calloc((size_t)B * H * W, sizeof(float));
    CHECK(npred_core_backward(&core, &t, up, dx) == NPRED_ERR_ARG && strstr(npred_last_error(), "prediction"),
          "backward after a lean forward refused: %s", npred_last_error());
    core.lean = 0;
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    CHECK_OK(npred_core_backward(&core, &t, up, dx));
    omp_set_num_threads(nt);
    for (int l = 0; l < LAYERS; l++) free(ref[l]);
    free(x), free(up), free(dx);
    npred_core_free(&core);
    npred_ptable_free(&t);
}


/* Activation recomputation: a core that stores only its BatchNorm inputs (the
 * SENSORIUM structure: a plain first layer, depth-separable hidden layers, the last
 * layer stacked) gives the same bits as the one that stores every activation:
 * outputs, running statistics, parameter and input gradients, over several training
 * steps (SGD in between), then in eval mode (output and input gradient), for 1 and 2
 * threads and in bf16 (where 1 and 2 threads give the same bits too); and it never writes the activations it does not store, nor the
 * second output-gradient buffer. The same for the partial mode, which stores the first
 * 1x1 outputs too (fp32) and whose backward reads them (NaN written there between a
 * forward and its backward reaches the gradients). (The default, auto, would not
 * recompute at this size.) */
static int rc_bf16; /* recompute_run: bf16 GEMM convolutions */
static int rc_band; /* recompute_run: npred_core_set_band_rows (0: auto) */
static int rc_t0_touched; /* recompute_run's result: the first 1x1 outputs (t[0]) were written */
static int rc_poison_t0;  /* recompute_run: NaN into the stored t[0] between a training forward and its backward */

static void recompute_run(const char *cfgjson, int mode, int threads, int steps, float **out, float **grads, float **dx,
                          float **params, float **bufs, size_t *nout, size_t *np, size_t *nx, size_t *nb, int *used,
                          int *untouched)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfgjson, "recompute config"))) return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    int B = 6, H = 19, W = 23;
    if (!CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_core_setup(&core, &t, B)) || !CHECK_OK(npred_core_set_recompute(&core, mode)) ||
        !CHECK_OK(npred_core_set_bf16(&core, rc_bf16))) {
        npred_ptable_free(&t);
        return;
    }
    npred_core_set_band_rows(&core, rc_band);
    npred_rng rng;
    npred_rng_seed(&rng, 5);
    npred_core_init_params(&core, &t, &rng);
    for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.2 * npred_rng_normal(&rng));
    *nx = (size_t)B * H * W;
    *nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    *np = t.n_params;
    *nb = t.n_buffers;
    float *x = malloc(*nx * sizeof *x), *up = malloc(*nout * sizeof *up);
    *dx = calloc(*nx, sizeof **dx);
    for (size_t i = 0; i < *nx; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < *nout; i++) up[i] = (float)npred_rng_normal(&rng);
    /* the activations recomputation does not store: a NaN pattern that must survive */
    const uint32_t pat = 0x7fc0beefu;
    int nl = m.core.layers;
    for (int l = 0; l < nl; l++) {
        npred_core_layer *L = &core.L[l];
        size_t n = (size_t)B * L->cout * L->hout * L->wout, nm = (size_t)B * L->cout * L->hin * L->win;
        /* and the output gradient buffer of the other parity (every gradient in place in one) */
        float *bb[4] = {l < nl - 1 ? L->a : NULL, L->ds ? L->t[0] : NULL, L->ds ? L->t[1] : NULL,
                        l == nl - 2 ? L->dout : NULL};
        size_t len[4] = {n, nm, n, n};
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; bb[k] && i < len[k]; i++) memcpy(&bb[k][i], &pat, sizeof pat);
    }
    int nt = omp_get_max_threads();
    omp_set_num_threads(threads);
    *used = 1;
    for (int step = 0; step < steps; step++) {
        CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
        *used &= core.rc;
        for (int l = 0; rc_poison_t0 && l < nl; l++)
            for (size_t i = 0; core.L[l].ds && i < (size_t)B * core.L[l].cout * core.L[l].hin * core.L[l].win; i++)
                core.L[l].t[0][i] = NAN;
        npred_ptable_zero_grad(&t);
        memset(*dx, 0, *nx * sizeof **dx);
        CHECK_OK(npred_core_backward(&core, &t, up, *dx));
        if (step + 1 < steps)
            for (size_t i = 0; i < t.n_params; i++) t.data[i] -= 0.05f * t.grad[i];
    }
    /* then an eval forward and its backward (input gradient), as MEIs and evaluations run */
    *out = malloc(2 * *nout * sizeof **out);
    memcpy(*out, core.output, *nout * sizeof **out);
    float *dxe = calloc(*nx, sizeof *dxe);
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    *used &= core.rc;
    memcpy(*out + *nout, core.output, *nout * sizeof **out);
    CHECK_OK(npred_core_backward(&core, &t, up, dxe));
    *dx = realloc(*dx, 2 * *nx * sizeof **dx);
    memcpy(*dx + *nx, dxe, *nx * sizeof *dxe);
    free(dxe);
    omp_set_num_threads(nt);
    *untouched = 1; /* (t[0] apart: rc_t0_touched) */
    rc_t0_touched = 0;
    for (int l = 0; l < nl; l++) {
        npred_core_layer *L = &core.L[l];
        size_t n = (size_t)B * L->cout * L->hout * L->wout, nm = (size_t)B * L->cout * L->hin * L->win;
        float *bb[4] = {l < nl - 1 ? L->a : NULL, L->ds ? L->t[0] : NULL, L->ds ? L->t[1] : NULL,
                        l == nl - 2 ? L->dout : NULL};
        size_t len[4] = {n, nm, n, n};
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; bb[k] && i < len[k]; i++) {
                int same = memcmp(&bb[k][i], &pat, sizeof pat) == 0;
                if (k == 1) rc_t0_touched |= !same;
                else *untouched &= same;
            }
    }
    *grads = malloc(*np * sizeof **grads);
    memcpy(*grads, t.grad, *np * sizeof **grads);
    *params = malloc(*np * sizeof **params);
    memcpy(*params, t.data, *np * sizeof **params);
    *bufs = malloc((*nb + 1) * sizeof **bufs);
    memcpy(*bufs, t.bufdata, *nb * sizeof **bufs);
    free(x), free(up);
    npred_core_free(&core);
    npred_ptable_free(&t);
}

/* The depth-separable block's input and first 1x1 convolution made band by band of
 * rows (npred_core_set_band_rows; automatic at large images) against whole images:
 * bands of 1 and 3 rows (19 rows: a partial last band), 1 and 2 threads, bit for bit
 * (outputs, gradients, parameters after the steps, running statistics) */
static void test_ds_bands_bit_identical(void)
{
    static const char *cfg = "{\"core\": {\"hidden_channels\": 16, \"input_kern\": 7, \"hidden_kern\": 5,"
                             " \"layers\": 4, \"depth_separable\": true, \"pad_input\": false, \"stack\": -1,"
                             " \"elu_shift\": [0.1, -0.2], \"gamma_input\": 0.5}}";
    static const int rows[3] = {-1, 3, 1};
    for (int threads = 1; threads <= 2; threads++) {
        float *o[3] = {0}, *g[3] = {0}, *dx[3] = {0}, *p[3] = {0}, *b[3] = {0};
        size_t nout = 0, np = 0, nx = 0, nb = 0;
        int used = 0, untouched = 0;
        for (int k = 0; k < 3; k++) {
            rc_band = rows[k];
            recompute_run(cfg, NPRED_CORE_RECOMPUTE_OFF, threads, 3, &o[k], &g[k], &dx[k], &p[k], &b[k], &nout, &np,
                          &nx, &nb, &used, &untouched);
        }
        rc_band = 0;
        for (int k = 1; k < 3; k++) {
            if (!CHECK(o[0] && o[k], "a run failed")) continue;
            CHECK(memcmp(o[0], o[k], 2 * nout * sizeof *o[0]) == 0 && memcmp(dx[0], dx[k], 2 * nx * sizeof *dx[0]) == 0 &&
                      memcmp(g[0], g[k], np * sizeof *g[0]) == 0 && memcmp(p[0], p[k], np * sizeof *p[0]) == 0 &&
                      memcmp(b[0], b[k], nb * sizeof *b[0]) == 0,
                  "%d thread(s): bands of %d rows differ from whole images", threads, rows[k]);
        }
        double gn = 0;
        for (size_t i = 0; g[1] && i < np; i++) gn += (double)g[1][i] * g[1][i];
        CHECK(gn > 0 && isfinite(gn), "gradient norm %g", gn);
        for (int k = 0; k < 3; k++) free(o[k]), free(g[k]), free(dx[k]), free(p[k]), free(b[k]);
    }
}

static void test_recompute_bit_identical(void)
{
    static const char *cfg = "{\"core\": {\"hidden_channels\": 16, \"input_kern\": 7, \"hidden_kern\": 5,"
                             " \"layers\": 4, \"depth_separable\": true, \"pad_input\": false, \"stack\": -1,"
                             " \"elu_shift\": [0.1, -0.2], \"gamma_input\": 0.5}}";
    float *bf_o = NULL, *bf_g = NULL, *bf_dx = NULL; /* the 2-thread bf16 run's results */
    /* 1 thread, 2 threads, 2 threads and 1 thread in bf16 (where the CPU has it) */
    for (int v = 0; v < 4; v++) {
        int threads = v == 1 || v == 2 ? 2 : 1;
        rc_bf16 = v >= 2;
        if (rc_bf16 && !npred_gemm_bf16_available()) continue;
        /* off, on, partial (the first 1x1 outputs stored: fp32 only; bf16 recomputes them as on) */
        static const int modes[3] = {NPRED_CORE_RECOMPUTE_OFF, NPRED_CORE_RECOMPUTE_ON, NPRED_CORE_RECOMPUTE_PARTIAL};
        static const char *const mname[3] = {"off", "on", "partial"};
        float *o[3] = {0}, *g[3] = {0}, *dx[3] = {0}, *p[3] = {0}, *b[3] = {0};
        size_t nout = 0, np = 0, nx = 0, nb = 0;
        int used[3] = {0}, untouched[3] = {0}, t0w[3] = {0};
        for (int k = 0; k < 3; k++) {
            recompute_run(cfg, modes[k], threads, 3, &o[k], &g[k], &dx[k], &p[k], &b[k], &nout, &np, &nx, &nb,
                          &used[k], &untouched[k]);
            t0w[k] = rc_t0_touched;
        }
        if (!CHECK(o[0] && o[1] && o[2], "a run failed")) continue;
        const char *what = rc_bf16 ? (threads == 1 ? "1 thread, bf16" : "2 threads, bf16")
                                   : threads == 1 ? "1 thread" : "2 threads";
        CHECK(!used[0] && used[1] && used[2], "recomputation used: off %d, on %d, partial %d (want 0, 1, 1)", used[0],
              used[1], used[2]);
        CHECK(!untouched[0] && untouched[1] && untouched[2],
              "unstored activations untouched: off %d, on %d, partial %d (want 0, 1, 1)", untouched[0], untouched[1],
              untouched[2]);
        CHECK(t0w[0] && !t0w[1] && t0w[2] == !rc_bf16, "%s: first 1x1 outputs written: off %d, on %d, partial %d",
              what, t0w[0], t0w[1], t0w[2]);
        for (int k = 1; k < 3; k++) {
            CHECK(memcmp(o[0], o[k], nout * sizeof *o[0]) == 0, "%s, %s: outputs differ", what, mname[k]);
            CHECK(memcmp(o[0] + nout, o[k] + nout, nout * sizeof *o[0]) == 0, "%s, %s: eval outputs differ", what,
                  mname[k]);
            CHECK(memcmp(dx[0] + nx, dx[k] + nx, nx * sizeof *dx[0]) == 0, "%s, %s: eval input gradients differ", what,
                  mname[k]);
            CHECK(memcmp(g[0], g[k], np * sizeof *g[0]) == 0, "%s, %s: parameter gradients differ", what, mname[k]);
            CHECK(memcmp(dx[0], dx[k], nx * sizeof *dx[0]) == 0, "%s, %s: input gradients differ", what, mname[k]);
            CHECK(memcmp(p[0], p[k], np * sizeof *p[0]) == 0, "%s, %s: parameters after the steps differ", what,
                  mname[k]);
            CHECK(memcmp(b[0], b[k], nb * sizeof *b[0]) == 0, "%s, %s: running statistics differ", what, mname[k]);
        }
        double gn = 0;
        for (size_t i = 0; i < np; i++) gn += (double)g[1][i] * g[1][i];
        CHECK(gn > 0 && isfinite(gn), "gradient norm %g", gn);
        if (!rc_bf16) { /* partial's backward reads the stored t[0]: NaN there reaches the gradients */
            float *o2 = NULL, *g2 = NULL, *dx2 = NULL, *p2 = NULL, *b2 = NULL;
            int u2 = 0, un2 = 0;
            rc_poison_t0 = 1;
            recompute_run(cfg, NPRED_CORE_RECOMPUTE_PARTIAL, threads, 1, &o2, &g2, &dx2, &p2, &b2, &nout, &np, &nx,
                          &nb, &u2, &un2);
            rc_poison_t0 = 0;
            int nan = 0;
            for (size_t i = 0; g2 && i < np; i++) nan += isnan(g2[i]);
            CHECK(g2 && nan > 0, "%s: partial's backward does not read the stored first 1x1 outputs", what);
            free(o2), free(g2), free(dx2), free(p2), free(b2);
        }
        if (v == 2) { /* kept for the 1-thread bf16 run: bf16 training does not depend on the thread count */
            bf_o = o[0], bf_g = g[0], bf_dx = dx[0];
            o[0] = g[0] = dx[0] = NULL;
        } else if (v == 3 && bf_o) {
            CHECK(memcmp(o[0], bf_o, 2 * nout * sizeof *o[0]) == 0, "bf16: outputs differ with 1 and 2 threads");
            CHECK(memcmp(g[0], bf_g, np * sizeof *g[0]) == 0, "bf16: gradients differ with 1 and 2 threads");
            CHECK(memcmp(dx[0], bf_dx, 2 * nx * sizeof *dx[0]) == 0,
                  "bf16: input gradients differ with 1 and 2 threads");
        }
        for (int k = 0; k < 3; k++) free(o[k]), free(g[k]), free(dx[k]), free(p[k]), free(b[k]);
    }
    free(bf_o), free(bf_g), free(bf_dx);
    rc_bf16 = 0;
    npred_core c;
    CHECK(npred_core_set_recompute(&c, 3) != NPRED_OK, "recompute mode 3 accepted");
}

/* A resized copy of a bf16 core (npred_core_resized, as npred_neuron_grad's windows
 * make) owns no bf16 block scratch: both free without a double free, and the source
 * core predicts the same bits afterwards */
static void test_bf16_resized(void)
{
    if (!npred_gemm_bf16_available()) return;
    static const char *cfg = "{\"core\": {\"hidden_channels\": 8, \"input_kern\": 5, \"hidden_kern\": 3,"
                             " \"layers\": 3, \"depth_separable\": true, \"pad_input\": false, \"stack\": -1}}";
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfg, "resized config"))) return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core, small;
    const int B = 3, H = 16, W = 18;
    if (!CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_core_setup(&core, &t, B)) || !CHECK_OK(npred_core_set_bf16(&core, 1))) {
        npred_ptable_free(&t);
        return;
    }
    npred_rng rng;
    npred_rng_seed(&rng, 3);
    npred_core_init_params(&core, &t, &rng);
    float *x = malloc(sizeof *x * B * H * W);
    for (int i = 0; i < B * H * W; i++) x[i] = (float)npred_rng_normal(&rng);
    const size_t n = (size_t)B * core.out_c * core.out_h * core.out_w;
    float *y = malloc(n * sizeof *y);
    core.lean = 1;
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    memcpy(y, core.output, n * sizeof *y);
    if (CHECK_OK(npred_core_resized(&small, &core, &t, 12, 13, 1))) {
        CHECK(small.bf_ws == NULL && core.bf_ws != NULL, "the resized core shares the bf16 scratch");
        npred_core_free(&small);
    }
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    CHECK(memcmp(y, core.output, n * sizeof *y) == 0, "bf16 predictions changed after a resized copy was freed");
    free(x), free(y);
    npred_core_free(&core);
    npred_ptable_free(&t);
}

/* AUTO recomputes where it saves >= 256 MiB and either runs in cache (one image's
 * activation of a layer <= 1 MiB) or memory requires it (the saved activations over a
 * quarter of the physical memory): the layer sizes of a declared core decide; in
 * cache it recomputes partially (the first 1x1 outputs stored) unless memory requires on */
static void test_recompute_auto_policy(void)
{
    static const char *sota =
        "{\"core\": {\"input_channels\": 1, \"hidden_channels\": 64, \"input_kern\": 9, \"hidden_kern\": 7,"
        " \"layers\": 4, \"depth_separable\": true, \"pad_input\": false, \"stack\": -1}}";
    static const char *tut =
        "{\"core\": {\"input_channels\": 1, \"hidden_channels\": 64, \"input_kern\": 9, \"hidden_kern\": 7,"
        " \"layers\": 4, \"depth_separable\": true, \"pad_input\": true, \"stack\": -1}}";
    const size_t gib = (size_t)1 << 30;
    static const struct {
        int tut, h, w, batch;
        size_t phys_gib;
        int want;
    } cases[] = {
        {0, 36, 64, 128, 23, 2}, /* SENSORIUM at 36x64: 0.4 MB per image and layer, 462 MB saved: partial */
        {0, 36, 64, 128, 1, 1},  /* ... in cache, but of 1 GiB memory requires it: on */
        {0, 36, 64, 32, 23, 0},  /* 115 MB saved: not worth it */
        {1, 144, 256, 32, 23, 0}, /* 9.4 MB per image and layer, 2.7 GB saved of 23 GiB: store */
        {1, 144, 256, 32, 8, 1},  /* ... of 8 GiB: memory requires it: on */
        {1, 144, 256, 32, 0, 0},  /* the machine's memory unknown: store */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        npred_model_config m;
        if (!CHECK_OK(npred_model_config_parse(&m, cases[i].tut ? tut : sota, "cfg"))) continue;
        npred_ptable t;
        npred_ptable_init(&t);
        npred_core core;
        memset(&core, 0, sizeof core);
        if (CHECK_OK(npred_core_declare(&core, &m.core, "core.", cases[i].h, cases[i].w, &t))) {
            int got = npred_core_recompute_auto(&core, cases[i].batch, cases[i].phys_gib * gib);
            CHECK(got == cases[i].want, "%dx%d, batch %d, %zu GiB: auto %d, want %d", cases[i].h, cases[i].w,
                  cases[i].batch, cases[i].phys_gib, got, cases[i].want);
        }
        npred_core_free(&core);
        npred_ptable_free(&t);
    }
}

static void test_bad_config(void)
{
    npred_model_config m;
    CHECK(npred_model_config_parse(&m, "{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                                       " \"laers\": 3}}", "cfg.json") == NPRED_ERR_CONFIG, "typo rejected");
    CHECK(strstr(npred_last_error(), "laers") && strstr(npred_last_error(), "cfg.json"), "names key and file: %s",
          npred_last_error());
    CHECK(npred_model_config_parse(&m, "{\"core\": {\"hidden_channels\": \"x\", \"input_kern\": 5}}", "c") ==
              NPRED_ERR_CONFIG, "type checked");
    CHECK(strstr(npred_last_error(), "hidden_channels") != NULL, "%s", npred_last_error());
    /* shapes that cannot work */
    npred_core_config cc;
    npred_core_config_default(&cc);
    cc.input_channels = 1;
    cc.hidden_channels = 4;
    cc.input_kern = 9;
    cc.layers = 2;
    cc.hidden_kern[0] = 3;
    cc.pad_input = 0;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    CHECK(npred_core_declare(&core, &cc, "", 5, 5, &t) == NPRED_ERR_SHAPE, "9x9 kernel on 5x5 input rejected");
    npred_ptable_free(&t);
}

int main(void)
{
    RUN(test_sensorium);
    RUN(test_tutorial);
    RUN(test_plain_skip);
    RUN(test_kernlist_padquirk);
    RUN(test_linear);
    RUN(test_se2d_core);
    RUN(test_independent_bn_bias_false);
    RUN(test_independent_bn_bias_false_nobias);
    RUN(test_independent_bn_bias_false_noscale);
    RUN(test_fd_depth_separable_eval);
    RUN(test_fd_depth_separable_train);
    RUN(test_fd_skip_dilation_train);
    RUN(test_fd_se_core_train);
    RUN(test_fd_bias2d_train);
    RUN(test_ds_block_image_by_image);
    RUN(test_fd_shared_gradient_buffers);
    RUN(test_eval_image_by_image);
    RUN(test_recompute_bit_identical);
    RUN(test_ds_bands_bit_identical);
    RUN(test_recompute_auto_policy);
    RUN(test_bf16_resized);
    RUN(test_bad_config);
    return th_summary();
}
