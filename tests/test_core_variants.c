/* Cores of issue #15: RotationEquivariant2dCore (0.3.0, fixture rotation_equivariant_core),
 * the sensorium builder's core_bias=True core (fixture stacked2d_core_bias_sensorium),
 * the Hermite filters against an independent double-precision reference, and finite
 * differences through whole cores. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cores/stacked2d.h"
#include "harness.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "npred/model.h"

/* the fixture's args as a config: structured ("core": args + type) or, for the builder
 * cases, the flat builder_kwargs */
static int case_config(th_case *c, const char *core_type, npred_core_config *cc)
{
    cJSON *root;
    cJSON *bk = th_get(c->json, "args", "builder_kwargs", NULL);
    if (bk) {
        root = cJSON_Duplicate(bk, 1);
    } else {
        root = cJSON_CreateObject();
        cJSON *core = cJSON_Duplicate(th_get(c->json, "args", NULL), 1);
        if (core_type) cJSON_AddStringToObject(core, "type", core_type);
        cJSON_AddItemToObject(root, "core", core);
    }
    npred_model_config m;
    int ok = CHECK_OK(npred_model_config_from_cjson(&m, root, c->name));
    cJSON_Delete(root);
    *cc = m.core;
    cc->input_channels = (int)th_num(c->json, 1, "args", "input_channels", NULL);
    return ok;
}

static void run_case(const char *name, const char *core_type)
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
    float *up = NULL, *dx = NULL;
    if (!x || !case_config(&c, core_type, &cc)) goto out;
    cc.input_channels = (int)xs.shape[1];
    int B = (int)xs.shape[0];
    if (!CHECK_OK(npred_core_declare(&core, &cc, "", (int)xs.shape[2], (int)xs.shape[3], &t)) ||
        !CHECK_OK(npred_ptable_alloc(&t)) || !CHECK_OK(npred_core_setup(&core, &t, B)))
        goto out;
    CHECK(th_load_table(&c, &t, "params", "", NULL) == t.n, "every table entry comes from the fixture (%d)", t.n);
    char *repr = malloc(65536);
    npred_core_repr(&core, repr, 65536);
    cJSON *want = th_get(c.json, "repr", NULL);
    CHECK(want && !strcmp(repr, want->valuestring), "repr differs:\n%s\nwant:\n%s", repr,
          want ? want->valuestring : "");
    free(repr);
    CHECK(npred_core_outchannels_property(&core) == (int)th_num(c.json, -1, "outchannels_property", NULL),
          "outchannels %d", npred_core_outchannels_property(&core));
    CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
    size_t nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    npred_array os;
    float *o = th_load_f32(&c, "output.npy", &os);
    free(o);
    if (!CHECK(o && os.count == nout, "output has %zu elements, fixture %zu", nout, os.count)) goto out;
    th_compare_dims(&c, "forward", "output.npy", core.output, TH_DIMS(B, core.out_c, core.out_h, core.out_w));
    cJSON *inter = th_get(c.json, "files", "intermediates", NULL), *it;
    cJSON_ArrayForEach(it, inter)
    {
        int l = atoi(it->string + strlen("features.layer"));
        if (!CHECK(l >= 0 && l < cc.layers, "%s: intermediate %s names no layer", name, it->string)) continue;
        npred_core_layer *L = &core.L[l];
        th_compare_dims(&c, "forward", it->valuestring, L->out, TH_DIMS(B, L->cout, L->hout, L->wout));
    }
    for (int l = 0; l < cc.layers; l++) { /* the effective weights of the Hermite layers */
        char key[64];
        snprintf(key, sizeof key, "weights_all_rotations/layer%d", l);
        cJSON *f = th_get(c.json, "files", key, NULL);
        const npred_core_layer *L = &core.L[l];
        if (f && CHECK(L->weff != NULL, "layer %d has effective weights", l))
            th_compare_dims(&c, "forward", f->valuestring, L->weff, TH_DIMS(L->cout, L->cin, L->k, L->k));
    }
    th_compare_table(&c, &t, "buffers_after", "forward", "", NULL);
    npred_ptable_zero_grad(&t);
    double reg = npred_core_regularizer(&core, &t, 1.0);
    double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
    CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-6, "regularizer %.9g want %.9g", reg, want_reg);
    up = th_load_f32(&c, "upstream.npy", NULL);
    dx = calloc(xs.count, sizeof *dx);
    if (up) {
        double loss = reg;
        for (size_t i = 0; i < nout; i++) loss += (double)core.output[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-4, "loss %.9g want %.9g", loss, want_loss);
        CHECK_OK(npred_core_backward(&core, &t, up, dx));
        /* the fixed Hermite basis and rotations get no gradient (requires_grad=False) */
        const char *skip[64] = {"input"};
        int ns = 1;
        cJSON *pw = th_get(c.json, "params_without_grad", NULL), *e;
        cJSON_ArrayForEach(e, pw) if (ns < 63) skip[ns++] = e->valuestring;
        skip[ns] = NULL;
        th_compare_table(&c, &t, "grads", "grads", "", skip);
        th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
    }
    CHECK_OK(npred_core_forward(&core, &t, x, B, 0));
    th_compare_dims(&c, "forward", "output_eval.npy", core.output, TH_DIMS(B, core.out_c, core.out_h, core.out_w));
out:
    free(up);
    free(dx);
    free(x);
    npred_core_free(&core);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_rotation_equivariant_fixture(void) { run_case("rotation_equivariant_core", "RotationEquivariant2dCore"); }
static void test_core_bias_sensorium_fixture(void) { run_case("stacked2d_core_bias_sensorium", NULL); }

/* The Hermite basis and rotation matrices npred computes equal the fixture's buffers. */
static void test_hermite_constants(void)
{
    th_case c;
    if (!th_case_open(&c, "rotation_equivariant_core")) return;
    npred_core_config cc;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    memset(&core, 0, sizeof core);
    if (case_config(&c, "RotationEquivariant2dCore", &cc) &&
        CHECK_OK(npred_core_declare(&core, &cc, "", 12, 14, &t)) && CHECK_OK(npred_ptable_alloc(&t))) {
        npred_core_init_buffers(&core, &t);
        int n = 0;
        cJSON *params = th_get(c.json, "files", "params", NULL), *e;
        cJSON_ArrayForEach(e, params)
        {
            if (!strstr(e->string, "rotate_hermite") && !strstr(e->string, "laplace.filter")) continue;
            int idx = npred_ptable_find(&t, e->string);
            if (!CHECK(idx >= 0, "%s declared", e->string)) continue;
            float *ref = th_load_f32(&c, e->valuestring, NULL);
            if (ref) th_close_f32(e->string, npred_ptable_ptr(&t, idx), ref, t.items[idx].count, 0, 2e-6);
            free(ref);
            n++;
        }
        CHECK(n == 11, "%d constant tensors compared", n);
    }
    npred_core_free(&core);
    npred_ptable_free(&t);
    th_case_close(&c);
}

/* ---- an independent double-precision reference of HermiteConv2D's weights ----
 * written from the definition: w_r[p, q, i, o] = sum_n H[n, p, q] (R_r c)[n, i, o] on
 * the k*up grid, input channels of hidden layers rolled by r * cin / rot (the torch.cat
 * of the slices), rotations concatenated along outputs, the grid summed to k x k. */
static void ref_weights(double *w, const double *c, const double *H, const double *const *R, int ncoef, int cin,
                        int hid, int rot, int k, int up, int first)
{
    int hk = k * up;
    int per = cin / rot;
    for (int r = 0; r < rot; r++)
        for (int o = 0; o < hid; o++)
            for (int j = 0; j < cin; j++) {
                int shift = cin - r * per; /* w_new[:, :, j] = w[:, :, (j + shift) % cin] */
                int i = (first || r == 0) ? j : (j + shift) % cin;
                for (int p = 0; p < k; p++)
                    for (int q = 0; q < k; q++) {
                        double acc = 0;
                        for (int a = 0; a < up; a++)
                            for (int b = 0; b < up; b++)
                                for (int n = 0; n < ncoef; n++) {
                                    double rc = 0;
                                    for (int m = 0; m < ncoef; m++)
                                        rc += R[r][n * ncoef + m] * c[((size_t)m * cin + i) * hid + o];
                                    acc += H[((size_t)n * hk + p * up + a) * hk + q * up + b] * rc;
                                }
                        w[((((size_t)r * hid + o) * cin + j) * k + p) * k + q] = acc;
                    }
            }
}

static void hermite_map_case(int k, int up, int cin, int hid, int rot, int first)
{
    int ncoef = k * (k + 1) / 2, hk = k * up;
    size_t nc = (size_t)ncoef * cin * hid, nw = (size_t)hid * rot * cin * k * k;
    uint64_t st = 99 + (uint64_t)k * 7 + (uint64_t)first;
    double *H = malloc(sizeof(double) * (size_t)ncoef * hk * hk), *mu = malloc(sizeof(double) * ncoef);
    char *desc = malloc((size_t)ncoef);
    npred_hermite_basis(H, desc, mu, k, hk);
    double *Rd[8];
    float *Rf[8], *Hf = malloc(sizeof(float) * (size_t)ncoef * hk * hk);
    for (size_t i = 0; i < (size_t)ncoef * hk * hk; i++) Hf[i] = (float)H[i];
    double *Hq = malloc(sizeof(double) * (size_t)ncoef * hk * hk);
    for (size_t i = 0; i < (size_t)ncoef * hk * hk; i++) Hq[i] = Hf[i];
    for (int r = 0; r < rot; r++) {
        Rd[r] = malloc(sizeof(double) * (size_t)ncoef * ncoef);
        Rf[r] = malloc(sizeof(float) * (size_t)ncoef * ncoef);
        npred_hermite_rotation(Rd[r], desc, mu, ncoef, r * 2 * M_PI / rot);
        for (size_t i = 0; i < (size_t)ncoef * ncoef; i++) Rd[r][i] = Rf[r][i] = (float)Rd[r][i];
    }
    /* every rotation matrix is orthogonal */
    for (int r = 0; r < rot; r++) {
        double worst = 0;
        for (int a = 0; a < ncoef; a++)
            for (int b = 0; b < ncoef; b++) {
                double d = 0;
                for (int m = 0; m < ncoef; m++) d += Rd[r][a * ncoef + m] * Rd[r][b * ncoef + m];
                d -= a == b;
                worst = th_worst(worst, fabs(d));
            }
        CHECK(worst <= 1e-6, "R_%d orthogonal (%.3g)", r, worst);
    }
    double *cd = malloc(sizeof(double) * nc), *wref = malloc(sizeof(double) * nw), *g = malloc(sizeof(double) * nw);
    float *cf = malloc(sizeof(float) * nc), *wf = malloc(sizeof(float) * nw), *gf = malloc(sizeof(float) * nw),
          *dc = calloc(nc, sizeof(float));
    for (size_t i = 0; i < nc; i++) cd[i] = cf[i] = (float)th_rand(&st);
    for (size_t i = 0; i < nw; i++) g[i] = gf[i] = (float)th_rand(&st);
    double *basis = malloc(sizeof(double) * (size_t)rot * ncoef * k * k);
    npred_hermite_rotated_basis(basis, Hf, (const float *const *)Rf, ncoef, k, up, rot);
    npred_hermite_weights(wf, cf, basis, ncoef, cin, hid, rot, k, first);
    ref_weights(wref, cd, Hq, (const double *const *)Rd, ncoef, cin, hid, rot, k, up, first);
    float *wr32 = malloc(sizeof(float) * nw);
    double *wr = wref;
    for (size_t i = 0; i < nw; i++) wr32[i] = (float)wr[i];
    th_close_f32("hermite weights", wf, wr32, nw, 1e-5, 1e-6);
    /* backward: L = <g, w(c)> is linear in c, so dL/dc_m = L(e_m); central differences of
     * the double reference along random directions */
    npred_hermite_weights_backward(dc, gf, basis, ncoef, cin, hid, rot, k, first);
    for (int trial = 0; trial < 4; trial++) {
        double *dir = malloc(sizeof(double) * nc), *cp = malloc(sizeof(double) * nc), lp = 0, lm = 0, ana = 0,
               h = 1e-3;
        for (size_t i = 0; i < nc; i++) {
            dir[i] = th_rand(&st);
            ana += dir[i] * dc[i];
        }
        for (int sgn = -1; sgn <= 1; sgn += 2) {
            for (size_t i = 0; i < nc; i++) cp[i] = cd[i] + sgn * h * dir[i];
            ref_weights(wref, cp, Hq, (const double *const *)Rd, ncoef, cin, hid, rot, k, up, first);
            double l = 0;
            for (size_t i = 0; i < nw; i++) l += g[i] * wref[i];
            if (sgn < 0) lm = l;
            else lp = l;
        }
        double num = (lp - lm) / (2 * h);
        CHECK(fabs(num - ana) <= 1e-4 * fabs(num) + 1e-4, "k=%d first=%d dir %d: numeric %.9g analytic %.9g", k,
              first, trial, num, ana);
        free(dir);
        free(cp);
    }
    for (int r = 0; r < rot; r++) free(Rd[r]), free(Rf[r]);
    free(H), free(mu), free(desc), free(Hf), free(Hq), free(cd), free(wref), free(g), free(cf), free(wf), free(gf);
    free(dc), free(basis), free(wr32);
}

static void test_hermite_weights_reference(void)
{
    hermite_map_case(3, 2, 2, 3, 4, 1);
    hermite_map_case(3, 2, 8, 2, 4, 0); /* hidden layer: input channels rolled */
    hermite_map_case(4, 3, 6, 2, 3, 0); /* even kernel, upsampling 3, three rotations */
    hermite_map_case(5, 1, 1, 2, 8, 1);
}

/* ---- finite differences through whole cores (float, Richardson-extrapolated) ---- */
static double core_loss(npred_core *core, npred_ptable *t, const float *x, int B, int train, const float *up,
                        size_t nout, const double *saved)
{
    for (size_t i = 0; i < t->n_buffers; i++) t->bufdata[i] = (float)saved[i];
    npred_core_forward(core, t, x, B, train);
    double l = 0;
    for (size_t i = 0; i < nout; i++) l += (double)core->output[i] * up[i];
    return l + npred_core_regularizer(core, t, 0);
}

static void fd_case(const char *cfgjson, int cin, int train)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, cfgjson, "fd config"))) return;
    m.core.input_channels = cin;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    memset(&core, 0, sizeof core);
    int B = 2, H = 10, W = 9;
    if (!CHECK_OK(npred_core_declare(&core, &m.core, "core.", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_core_setup(&core, &t, B))) {
        npred_core_free(&core);
        npred_ptable_free(&t);
        return;
    }
    npred_rng rng;
    npred_rng_seed(&rng, 11);
    npred_core_init_params(&core, &t, &rng);
    for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.2 * npred_rng_normal(&rng));
    size_t nx = (size_t)B * cin * H * W, nout = (size_t)B * core.out_c * core.out_h * core.out_w;
    float *x = malloc(nx * sizeof *x), *up = malloc(nout * sizeof *up), *dx = calloc(nx, sizeof *dx);
    for (size_t i = 0; i < nx; i++) x[i] = (float)npred_rng_normal(&rng);
    for (size_t i = 0; i < nout; i++) up[i] = (float)npred_rng_normal(&rng);
    double *bufs = malloc((t.n_buffers + 1) * sizeof *bufs);
    for (size_t i = 0; i < t.n_buffers; i++) bufs[i] = t.bufdata[i];
    core_loss(&core, &t, x, B, train, up, nout, bufs);
    npred_ptable_zero_grad(&t);
    CHECK_OK(npred_core_backward(&core, &t, up, dx));
    npred_core_regularizer(&core, &t, 1.0);
    float *g = malloc(t.n_params * sizeof *g), *p0 = malloc(t.n_params * sizeof *p0), *x0 = malloc(nx * sizeof *x0);
    memcpy(g, t.grad, t.n_params * sizeof *g);
    memcpy(p0, t.data, t.n_params * sizeof *p0);
    memcpy(x0, x, nx * sizeof *x0);
    double h = 2e-2;
    for (int trial = 0; trial < 4; trial++) {
        float *dp = malloc(t.n_params * sizeof *dp), *dxd = malloc(nx * sizeof *dxd);
        double ana = 0, norm = 0;
        for (size_t i = 0; i < t.n_params; i++) dp[i] = (float)npred_rng_normal(&rng);
        for (size_t i = 0; i < nx; i++) dxd[i] = trial % 2 ? (float)npred_rng_normal(&rng) : 0.0f;
        for (size_t i = 0; i < t.n_params; i++) norm += (double)dp[i] * dp[i];
        for (size_t i = 0; i < nx; i++) norm += (double)dxd[i] * dxd[i];
        norm = sqrt(norm);
        for (size_t i = 0; i < t.n_params; i++) dp[i] = (float)(dp[i] / norm), ana += (double)dp[i] * g[i];
        for (size_t i = 0; i < nx; i++) dxd[i] = (float)(dxd[i] / norm), ana += (double)dxd[i] * dx[i];
        double dd[2];
        for (int k = 0; k < 2; k++) {
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
        free(dp), free(dxd);
    }
    free(x), free(up), free(dx), free(bufs), free(g), free(p0), free(x0);
    npred_core_free(&core);
    npred_ptable_free(&t);
}

/* stride 2 in every layer, Bias2D layers (independent_bn_bias false, no BN scale),
 * GaussianLaplaceL2, a partial stack */
static const char *CFG_ROT_BIAS = "{\"core\": {\"type\": \"RotationEquivariant2dCore\", \"hidden_channels\": 2,"
                                  " \"input_kern\": 3, \"hidden_kern\": [3, 3], \"layers\": 3, \"num_rotations\": 3,"
                                  " \"upsampling\": 2, \"independent_bn_bias\": false, \"batch_norm_scale\": false,"
                                  " \"gamma_input\": 0.4, \"gamma_hidden\": 0.3, \"stack\": [0, 2],"
                                  " \"input_regularizer\": \"GaussianLaplaceL2\", \"laplace_padding\": null,"
                                  " \"elu_shift\": [0.1, -0.1]}}";
/* Scale2D layers (bias false), no final nonlinearity, stride 2 */
static const char *CFG_ROT_SCALE = "{\"core\": {\"type\": \"RotationEquivariant2dCore\", \"hidden_channels\": 2,"
                                   " \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 2, \"num_rotations\": 4,"
                                   " \"bias\": false, \"independent_bn_bias\": false, \"stride\": 2,"
                                   " \"final_nonlinearity\": false, \"gamma_hidden\": 1.0, \"gamma_input\": 0.5,"
                                   " \"use_avg_reg\": false, \"pad_input\": false, \"stack\": -1}}";

/* HEAD structure: no affine BN + Scale2D, hidden conv biases in front of BN, padding per
 * hidden layer ([5, 3] keeps the map size; 0.3.0 would reuse padding 2) */
static const char *CFG_HEAD = "{\"core\": {\"neuralpredictors\": \"head\", \"hidden_channels\": 3,"
                              " \"input_kern\": 3, \"hidden_kern\": [5, 3], \"layers\": 3, \"bias\": false,"
                              " \"gamma_input\": 0.3, \"gamma_hidden\": 0.2}}";

static void test_fd_head_train(void) { fd_case(CFG_HEAD, 2, 1); }

static void test_fd_rotation_bias_train(void) { fd_case(CFG_ROT_BIAS, 2, 1); }
static void test_fd_rotation_bias_eval(void) { fd_case(CFG_ROT_BIAS, 2, 0); }
static void test_fd_rotation_scale_train(void) { fd_case(CFG_ROT_SCALE, 1, 1); }

/* argument errors name the key and why */
static void test_rotation_config_errors(void)
{
    npred_model_config m;
    CHECK(npred_model_config_parse(&m, "{\"core\": {\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                                       " \"num_rotations\": 4}}", "c.json") == NPRED_ERR_CONFIG,
          "num_rotations outside a RotationEquivariant2dCore rejected");
    CHECK(strstr(npred_last_error(), "num_rotations") != NULL, "%s", npred_last_error());
    if (!CHECK_OK(npred_model_config_parse(&m,
                                           "{\"core\": {\"type\": \"RotationEquivariant2dCore\", \"hidden_channels\": 4,"
                                           " \"input_kern\": 5, \"hidden_kern\": 3, \"rot_eq_batch_norm\": false}}",
                                           "c.json")))
        return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    CHECK(npred_core_declare(&core, &m.core, "", 12, 12, &t) == NPRED_ERR_CONFIG,
          "rot_eq_batch_norm=false with 8 rotations rejected (the reference fails at its first forward)");
    CHECK(strstr(npred_last_error(), "rot_eq_batch_norm") != NULL, "%s", npred_last_error());
    npred_ptable_free(&t);
    /* the flat builder spelling and the saved structured form */
    if (CHECK_OK(npred_model_config_parse(&m, "{\"core_type\": \"RotationEquivariant2dCore\", \"num_rotations\": 4,"
                                              " \"hidden_channels\": 4}", "flat.json"))) {
        CHECK(m.core.rot_eq && m.core.num_rotations == 4 && m.core.upsampling == 2, "flat spelling");
        cJSON *j = npred_model_config_to_json(&m);
        npred_model_config back;
        if (CHECK_OK(npred_model_config_from_cjson(&back, j, "saved")))
            CHECK(back.core.rot_eq && back.core.num_rotations == 4 && back.core.rot_eq_batch_norm &&
                      back.core.input_kern == m.core.input_kern,
                  "round trip");
        cJSON_Delete(j);
    }
}

/* A whole model from JSON: RotationEquivariant2dCore (Bias2D layers: 5-d tensors) +
 * PointPyramid2d readouts; saved, loaded back, identical predictions and description. */
static void test_model_save_load(void)
{
    const char *cfg = "{\"core\": {\"type\": \"RotationEquivariant2dCore\", \"hidden_channels\": 2,"
                      " \"input_kern\": 3, \"hidden_kern\": 3, \"layers\": 2, \"num_rotations\": 4,"
                      " \"independent_bn_bias\": false, \"batch_norm_scale\": false, \"stack\": -1},"
                      " \"readout\": {\"type\": \"PointPyramid2d\", \"scale_n\": 2, \"pyramid_type\": \"gauss3x3\","
                      " \"downsample\": true, \"positive\": true, \"init_range\": 0.3}, \"seed\": 5}";
    npred_model_session ses[2] = {{"a", 4, NULL, 0, NULL, NULL}, {"b", 3, NULL, 0, NULL, NULL}};
    npred_model *m = NULL, *back = NULL;
    char dir[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/npred-test-rot-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!CHECK(mkdtemp(dir) != NULL, "temp dir")) return;
    float img[2 * 1 * 12 * 10], out1[2 * 4], out2[2 * 4];
    uint64_t st = 3;
    for (size_t i = 0; i < sizeof img / sizeof *img; i++) img[i] = (float)th_rand(&st);
    if (CHECK_OK(npred_model_create(&m, cfg, "cfg", 1, 12, 10, ses, 2, 2, 5)) &&
        CHECK_OK(npred_model_predict(m, "a", img, 2, NULL, NULL, out1)) && CHECK_OK(npred_model_save(m, dir)) &&
        CHECK_OK(npred_model_load(&back, dir, 2)) &&
        CHECK_OK(npred_model_predict(back, "a", img, 2, NULL, NULL, out2))) {
        th_close_f32("loaded model predicts the same", out2, out1, 8, 0, 0);
        char *d1 = npred_model_describe(m), *d2 = npred_model_describe(back);
        CHECK(d1 && d2 && !strcmp(d1, d2) && strstr(d1, "RotationEquivariantBias2DLayer") &&
                  strstr(d1, "PointPyramid2d (8 x 12 x 10 -> 4) with bias  -> Pyramid(scale_n=2, padding=1, "
                             "downsample=True, type=gauss3x3)"),
              "description:\n%s", d1 ? d1 : "");
        free(d1), free(d2);
    }
    npred_model_free(m);
    npred_model_free(back);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    rmdir(dir);
}

/* `npred import` without a config infers the core from the keys present: a model of each
 * BatchNorm/bias convention (0.3.0's independent_bn_bias True/False, sensorium's
 * core_bias=True, neuralpredictors HEAD's without independent_bn_bias) and a
 * RotationEquivariant2dCore is written, its tensors imported back with no config, and
 * must load strictly (same names and shapes), predict the same and say which it is. */
static void import_case(const char *cfg, const char *want_convention, const char *want_type)
{
    npred_model_session ses[1] = {{"s1", 5, NULL, 0, NULL, NULL}};
    npred_model *m = NULL, *back = NULL;
    char dir[512], path[600];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/npred-test-imp-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!CHECK(mkdtemp(dir) != NULL, "temp dir")) return;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float img[2 * 20 * 36], o1[10], o2[10];
    uint64_t st = 17;
    for (size_t i = 0; i < sizeof img / sizeof *img; i++) img[i] = (float)th_rand(&st);
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    if (CHECK_OK(npred_model_create(&m, cfg, "cfg", 1, 20, 36, ses, 1, 2, 9)) && CHECK_OK(npred_model_save(m, dir)) &&
        CHECK_OK(npred_safetensors_read(path, &l)) &&
        CHECK_OK(npred_model_import_tensors(&back, &l, "state_dict", NULL, 20, 36, 2)) &&
        CHECK_OK(npred_model_predict(m, "s1", img, 2, NULL, NULL, o1)) &&
        CHECK_OK(npred_model_predict(back, "s1", img, 2, NULL, NULL, o2))) {
        th_close_f32("imported model predicts the same", o2, o1, 10, 0, 0);
        char *d = npred_model_describe(back);
        CHECK(d && strstr(d, want_convention) && strstr(d, want_type), "want '%s' and '%s' in:\n%s", want_convention,
              want_type, d ? d : "");
        free(d);
    }
    npred_tensor_list_free(&l);
    npred_model_free(m);
    npred_model_free(back);
    remove(path);
    rmdir(dir);
}

static void test_import_recognises_conventions(void)
{
    /* the published 2022 models: 0.3.0, core_bias False */
    import_case("{\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 2, \"stack\": -1,"
                " \"depth_separable\": true, \"core_bias\": false}",
                "independent_bn_bias=True, bias=False", "Stacked2dCore(");
    /* sensorium's newer default core_bias True (the same model in 0.3.0 and HEAD) */
    import_case("{\"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 4, \"stack\": -1,"
                " \"depth_separable\": true, \"core_bias\": true}",
                "built alike by neuralpredictors 0.3.0 and HEAD", "(in_depth_conv): Conv2d(4, 4, kernel_size=(1, 1), stride=(1, 1))");
    /* HEAD, core_bias False: BN without affine + Scale2DLayer, hidden conv biases */
    import_case("{\"neuralpredictors\": \"head\", \"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                " \"layers\": 2, \"stack\": -1, \"core_bias\": false}",
                "neuralpredictors HEAD (no independent_bn_bias): BatchNorm affine=False + Scale2DLayer",
                "(conv): Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
    /* HEAD with batch_norm_scale False and bias True: Bias2DLayer */
    import_case("{\"neuralpredictors\": \"head\", \"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                " \"layers\": 2, \"stack\": -1, \"core_bias\": true, \"batch_norm_scale\": false}",
                "affine=False + Bias2DLayer", "(bias): Bias2DLayer()");
    /* 0.3.0 with independent_bn_bias False, bias False: Scale2DLayer and no conv bias */
    import_case("{\"independent_bn_bias\": false, \"hidden_channels\": 4, \"input_kern\": 5, \"hidden_kern\": 3,"
                " \"layers\": 2, \"stack\": -1, \"core_bias\": false}",
                "independent_bn_bias=False, bias=False, batch_norm_scale=True", "(scale): Scale2DLayer()");
    import_case("{\"core_type\": \"RotationEquivariant2dCore\", \"num_rotations\": 4, \"upsampling\": 3,"
                " \"hidden_channels\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"layers\": 2, \"stack\": -1}",
                "core convention:", "RotationEquivariant2dCore(");
}

/* the mapping between the two spellings (docs/cores.md): HEAD's structure equals 0.3.0's
 * with independent_bn_bias=false except the hidden conv biases HEAD always adds */
static void test_head_spelling(void)
{
    npred_model_config m;
    CHECK(npred_model_config_parse(&m, "{\"neuralpredictors\": \"head\", \"independent_bn_bias\": false}", "h.json") ==
              NPRED_ERR_CONFIG && strstr(npred_last_error(), "independent_bn_bias"),
          "HEAD has no independent_bn_bias: %s", npred_last_error());
    CHECK(npred_model_config_parse(&m, "{\"neuralpredictors\": \"1.0\"}", "h.json") == NPRED_ERR_CONFIG, "value checked");
    if (CHECK_OK(npred_model_config_parse(&m, "{\"core\": {\"neuralpredictors\": \"head\", \"hidden_channels\": 2,"
                                              " \"input_kern\": 3, \"hidden_kern\": 3, \"bias\": false}}", "s.json"))) {
        CHECK(m.core.head && !m.core.independent_bn_bias, "structured spelling");
        cJSON *j = npred_model_config_to_json(&m);
        npred_model_config back;
        if (CHECK_OK(npred_model_config_from_cjson(&back, j, "saved"))) CHECK(back.core.head, "round trip");
        cJSON_Delete(j);
    }
}

/* attention_conv: the layer's output against a double-precision AttentionConv written
 * here from 0.3.0's definition (1x1 key/query/value convs on the zero-padded input, per
 * channel softmax over the window of q * (k + rel), weighted sum of v); then finite
 * differences through whole cores (train and eval, with conv biases and skip). */
static const char *CFG_ATT = "{\"core\": {\"attention_conv\": true, \"hidden_channels\": 4, \"input_kern\": 3,"
                             " \"hidden_kern\": 3, \"layers\": 3, \"bias\": true, \"gamma_input\": 0.2,"
                             " \"gamma_hidden\": 0.7, \"skip\": 2, \"stack\": [1, 2]}}";
static const char *CFG_ATT5 = "{\"core\": {\"attention_conv\": true, \"hidden_channels\": 2, \"input_kern\": 3,"
                              " \"hidden_kern\": 5, \"layers\": 2, \"bias\": false}}";

static void test_attention_conv_reference(void)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, CFG_ATT5, "att"))) return;
    m.core.input_channels = 1;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    memset(&core, 0, sizeof core);
    int B = 2, H = 7, W = 6;
    if (CHECK_OK(npred_core_declare(&core, &m.core, "", H, W, &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_core_setup(&core, &t, B))) {
        npred_rng rng;
        npred_rng_seed(&rng, 4);
        npred_core_init_params(&core, &t, &rng);
        float x[2 * 7 * 6];
        for (int i = 0; i < B * H * W; i++) x[i] = (float)npred_rng_normal(&rng);
        CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
        const npred_core_layer *L = &core.L[1];
        const float *in = core.L[0].out, *rh = npred_ptable_ptr(&t, L->p_rel_h), *rw = npred_ptable_ptr(&t, L->p_rel_w);
        const float *wk = npred_ptable_ptr(&t, L->p_w[0]), *wq = npred_ptable_ptr(&t, L->p_w[1]),
                    *wv = npred_ptable_ptr(&t, L->p_w[2]);
        int C = 2, K = 5, P = 2;
        float ref[2 * 2 * 7 * 6];
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                for (int y = 0; y < H; y++)
                    for (int xx = 0; xx < W; xx++) {
                        double q = 0, lg[25], vs[25], mx = -1e300, sum = 0, acc = 0;
                        for (int ci = 0; ci < C; ci++) q += wq[c * C + ci] * in[((b * C + ci) * H + y) * W + xx];
                        for (int i = 0; i < K; i++)
                            for (int j = 0; j < K; j++) {
                                int yy = y + i - P, xj = xx + j - P;
                                double kv = 0, vv = 0; /* padded input is 0, no conv bias */
                                if (yy >= 0 && yy < H && xj >= 0 && xj < W)
                                    for (int ci = 0; ci < C; ci++) {
                                        double xi = in[((b * C + ci) * H + yy) * W + xj];
                                        kv += wk[c * C + ci] * xi;
                                        vv += wv[c * C + ci] * xi;
                                    }
                                double rel = c < C / 2 ? rh[c * K + i] : rw[(c - C / 2) * K + j];
                                lg[i * K + j] = q * (kv + rel);
                                vs[i * K + j] = vv;
                                if (lg[i * K + j] > mx) mx = lg[i * K + j];
                            }
                        for (int u = 0; u < K * K; u++) {
                            double e = exp(lg[u] - mx);
                            sum += e;
                            acc += e * vs[u];
                        }
                        ref[((b * C + c) * H + y) * W + xx] = (float)(acc / sum);
                    }
        th_close_f32("attention_conv layer output", L->z, ref, (size_t)B * C * H * W, 1e-5, 1e-6);
        char repr[4096];
        npred_core_repr(&core, repr, sizeof repr);
        CHECK(strstr(repr, "(attention_conv): AttentionConvWrapper(\n        (key_conv): Conv2d(2, 2, kernel_size=(1, "
                           "1), stride=(1, 1), bias=False)\n        (query_conv)") != NULL, "repr:\n%s", repr);
        CHECK(npred_ptable_find(&t, "features.layer1.attention_conv.rel_h") >= 0 &&
                  t.items[npred_ptable_find(&t, "features.layer1.attention_conv.rel_w")].ndim == 5,
              "state_dict names");
    }
    npred_core_free(&core);
    npred_ptable_free(&t);
    /* shapes 0.3.0 cannot run are errors */
    if (CHECK_OK(npred_model_config_parse(&m, "{\"core\": {\"attention_conv\": true, \"hidden_channels\": 3,"
                                              " \"input_kern\": 3, \"hidden_kern\": 3, \"layers\": 2}}", "a"))) {
        m.core.input_channels = 1;
        npred_ptable_init(&t);
        CHECK(npred_core_declare(&core, &m.core, "", 8, 8, &t) == NPRED_ERR_CONFIG &&
                  strstr(npred_last_error(), "even hidden_channels"), "%s", npred_last_error());
        npred_ptable_free(&t);
    }
    CHECK(npred_model_config_parse(&m, "{\"core\": {\"attention_conv\": true, \"depth_separable\": true,"
                                       " \"hidden_channels\": 2, \"input_kern\": 3, \"hidden_kern\": 3}}", "a") ==
                  NPRED_OK,
          "parsed");
    m.core.input_channels = 1;
    npred_ptable_init(&t);
    CHECK(npred_core_declare(&core, &m.core, "", 8, 8, &t) == NPRED_ERR_CONFIG, "depth_separable + attention_conv");
    npred_ptable_free(&t);
}

static void test_fd_attention_conv_train(void) { fd_case(CFG_ATT, 2, 1); }
static void test_fd_attention_conv_eval(void) { fd_case(CFG_ATT, 2, 0); }
static void test_fd_attention_conv_k5(void) { fd_case(CFG_ATT5, 1, 1); }

/* batch_norm false and an explicit hidden_padding (docs/config.md rows without a fixture):
 * a 2-layer plain core against a double-precision conv + ELU written here. */
static const char *CFG_NOBN = "{\"core\": {\"hidden_channels\": 3, \"input_kern\": 3, \"hidden_kern\": 3,"
                              " \"layers\": 2, \"batch_norm\": false, \"bias\": true, \"hidden_padding\": 2,"
                              " \"stack\": -1, \"elu_shift\": [0.2, -0.1]}}";

static double ref_elu(double v, double xs, double ys) { v -= xs; return (v > 0 ? v : exp(v) - 1) + ys; }

/* y (co, ho, wo) = conv(x (ci, h, w), weight (co, ci, k, k), bias, zero padding p) */
static void ref_conv(double *y, const double *x, const float *wt, const float *bs, int ci, int h, int w, int co, int k,
                     int p, int ho, int wo)
{
    for (int o = 0; o < co; o++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                double acc = bs ? bs[o] : 0;
                for (int c = 0; c < ci; c++)
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++) {
                            int yy = i + a - p, xx = j + b - p;
                            if (yy >= 0 && yy < h && xx >= 0 && xx < w)
                                acc += wt[((o * ci + c) * k + a) * k + b] * x[(c * h + yy) * w + xx];
                        }
                y[(o * ho + i) * wo + j] = acc;
            }
}

static void test_no_batchnorm_reference(void)
{
    npred_model_config m;
    if (!CHECK_OK(npred_model_config_parse(&m, CFG_NOBN, "nobn"))) return;
    m.core.input_channels = 2;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core core;
    memset(&core, 0, sizeof core);
    int B = 2, H = 6, W = 5;
    if (CHECK_OK(npred_core_declare(&core, &m.core, "", H, W, &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_core_setup(&core, &t, B))) {
        CHECK(npred_ptable_find(&t, "features.layer0.conv.bias") >= 0 && npred_ptable_find(&t, "features.layer0.norm.running_mean") < 0,
              "layer 0 conv bias without BatchNorm, no norm");
        CHECK(core.out_h == H + 2 && core.out_w == W + 2, "hidden_padding 2 on a 3x3 kernel grows the map (%dx%d)",
              core.out_h, core.out_w);
        npred_rng rng;
        npred_rng_seed(&rng, 21);
        npred_core_init_params(&core, &t, &rng);
        for (size_t i = 0; i < t.n_params; i++) t.data[i] += (float)(0.3 * npred_rng_normal(&rng));
        float x[2 * 2 * 6 * 5];
        for (int i = 0; i < B * 2 * H * W; i++) x[i] = (float)npred_rng_normal(&rng);
        CHECK_OK(npred_core_forward(&core, &t, x, B, 1));
        int H2 = H + 2, W2 = W + 2;
        double xin[2 * 6 * 5], a0[3 * 6 * 5], a1[3 * 8 * 7];
        float *ref = malloc(sizeof(float) * (size_t)B * 3 * H2 * W2);
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < 2 * H * W; i++) xin[i] = x[b * 2 * H * W + i];
            ref_conv(a0, xin, npred_ptable_ptr(&t, npred_ptable_find(&t, "features.layer0.conv.weight")),
                     npred_ptable_ptr(&t, npred_ptable_find(&t, "features.layer0.conv.bias")), 2, H, W, 3, 3, 1, H, W);
            for (int i = 0; i < 3 * H * W; i++) a0[i] = ref_elu(a0[i], 0.2, -0.1);
            ref_conv(a1, a0, npred_ptable_ptr(&t, npred_ptable_find(&t, "features.layer1.conv.weight")),
                     npred_ptable_ptr(&t, npred_ptable_find(&t, "features.layer1.conv.bias")), 3, H, W, 3, 3, 2, H2, W2);
            for (int i = 0; i < 3 * H2 * W2; i++) ref[b * 3 * H2 * W2 + i] = (float)ref_elu(a1[i], 0.2, -0.1);
        }
        th_close_f32("no-BatchNorm core output", core.output, ref, (size_t)B * 3 * H2 * W2, 1e-5, 1e-6);
        free(ref);
    }
    npred_core_free(&core);
    npred_ptable_free(&t);
}

static void test_fd_no_batchnorm(void) { fd_case(CFG_NOBN, 2, 1); }

int main(void)
{
    RUN(test_no_batchnorm_reference);
    RUN(test_fd_no_batchnorm);
    RUN(test_attention_conv_reference);
    RUN(test_fd_attention_conv_train);
    RUN(test_fd_attention_conv_eval);
    RUN(test_fd_attention_conv_k5);
    RUN(test_import_recognises_conventions);
    RUN(test_head_spelling);
    RUN(test_model_save_load);
    RUN(test_rotation_equivariant_fixture);
    RUN(test_core_bias_sensorium_fixture);
    RUN(test_hermite_constants);
    RUN(test_hermite_weights_reference);
    RUN(test_fd_head_train);
    RUN(test_fd_rotation_bias_train);
    RUN(test_fd_rotation_bias_eval);
    RUN(test_fd_rotation_scale_train);
    RUN(test_rotation_config_errors);
    return th_summary();
}
