/* Factorized3dCore and Basic3dCore (neuralpredictors 43faede) against the fixtures
 * factorized3d_core and basic3d_core: train forward, per-layer outputs, running stats,
 * the regularizer tuple, every gradient and the eval output after the step; the
 * backward also against central finite differences of an independent double-precision
 * forward written here. The nonlinearities without a fixture (relu, softplus,
 * adaptive_elu) against that double forward and its finite differences only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cores/core3d.h"
#include "gradcheck_table.h"
#include "harness.h"

static int arg_int(th_case *c, const char *key, int idx)
{
    cJSON *v = th_get(c->json, "args", key, NULL);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, idx);
    return v ? (int)v->valuedouble : -1;
}

static void config_from_case(th_case *c, npred_core3d_config *cc, int factorized)
{
    npred_core3d_config_default(cc, factorized);
    cc->input_channels = arg_int(c, "input_channels", 0);
    cc->hidden_channels = arg_int(c, "hidden_channels", 0);
    cc->layers = arg_int(c, "layers", 0);
    cc->stride = arg_int(c, "stride", 0);
    if (factorized) {
        cc->in_kt = arg_int(c, "temporal_input_kernel", 0);
        cc->in_kh = cc->in_kw = arg_int(c, "spatial_input_kernel", 0);
        cc->hid_kt = arg_int(c, "temporal_hidden_kernel", 0);
        cc->hid_kh = cc->hid_kw = arg_int(c, "spatial_hidden_kernel", 0);
    } else {
        cc->in_kt = arg_int(c, "input_kernel", 0), cc->in_kh = arg_int(c, "input_kernel", 1);
        cc->in_kw = arg_int(c, "input_kernel", 2);
        cc->hid_kt = arg_int(c, "hidden_kernel", 0), cc->hid_kh = arg_int(c, "hidden_kernel", 1);
        cc->hid_kw = arg_int(c, "hidden_kernel", 2);
    }
    cc->gamma_input_spatial = th_num(c->json, NAN, "args", "gamma_input_spatial", NULL);
    cc->gamma_input_temporal = th_num(c->json, NAN, "args", "gamma_input_temporal", NULL);
    cc->bias = cJSON_IsTrue(th_get(c->json, "args", "bias", NULL));
    cc->batch_norm = cJSON_IsTrue(th_get(c->json, "args", "batch_norm", NULL));
    cc->padding = cJSON_IsTrue(th_get(c->json, "args", "padding", NULL));
    cc->momentum = th_num(c->json, NAN, "args", "momentum", NULL);
    cc->final_nonlin = cJSON_IsTrue(th_get(c->json, "args", "final_nonlin", NULL));
}

/* ------------------------------------------------------------------ double reference */

typedef struct {
    const npred_core3d *core; /* geometry only */
    const npred_ptable *t;
    double **p;               /* per table entry: its values in double (NULL for unused) */
    double *x;                /* input */
    const float *up;          /* upstream */
    int B;
    double *buf[3];
    const double *last;       /* the core's output of the last ref_loss */
} ref_ctx;

/* the config's nonlinearity in double */
static double act_d(const npred_core3d_config *c, double v)
{
    switch (c->act) {
    case NPRED_ACT_RELU: return v > 0 ? v : 0;
    case NPRED_ACT_SOFTPLUS: return v > 20 ? v : log1p(exp(v));
    case NPRED_ACT_ADAPTIVE_ELU: {
        double u = v - c->x_shift;
        return (u > 0 ? u : expm1(u)) + c->y_shift;
    }
    default: return v > 0 ? v : expm1(v);
    }
}

/* y (B, O, To, Ho, Wo) = conv3d(x (B, C, T, H, W), w (O, C, kt, kh, kw)) + b */
static void conv3d_d(double *y, const double *x, const double *w, const double *b, int B, const npred_conv3d *cv)
{
    for (int n = 0; n < B; n++)
        for (int o = 0; o < cv->cout; o++)
            for (int t = 0; t < cv->tout; t++)
                for (int i = 0; i < cv->hout; i++)
                    for (int j = 0; j < cv->wout; j++) {
                        double acc = b ? b[o] : 0;
                        for (int c = 0; c < cv->cin; c++)
                            for (int a = 0; a < cv->kt; a++)
                                for (int u = 0; u < cv->kh; u++)
                                    for (int v = 0; v < cv->kw; v++) {
                                        int ti = t + a * cv->dil_t, hi = i * cv->stride + u * cv->dil_h - cv->pad_h,
                                            wi = j * cv->stride + v * cv->dil_w - cv->pad_w;
                                        if (hi < 0 || hi >= cv->hin || wi < 0 || wi >= cv->win) continue;
                                        acc += w[(((size_t)o * cv->cin + c) * cv->kt + a) * cv->kh * cv->kw +
                                                 (size_t)u * cv->kw + v] *
                                               x[(((size_t)n * cv->cin + c) * cv->tin + ti) * cv->hin * cv->win +
                                                 (size_t)hi * cv->win + wi];
                                    }
                        y[(((size_t)n * cv->cout + o) * cv->tout + t) * cv->hout * cv->wout + (size_t)i * cv->wout + j] =
                            acc;
                    }
}

static double ref_loss(void *vctx)
{
    ref_ctx *r = vctx;
    const npred_core3d *core = r->core;
    const double *cur = r->x;
    int which = 0;
    for (int l = 0; l < core->cfg.layers; l++) {
        const npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < L->nconv; k++) {
            const npred_conv3d *cv = &L->conv[k];
            double *y = r->buf[which];
            conv3d_d(y, cur, r->p[cv->p_w], cv->p_b >= 0 ? r->p[cv->p_b] : NULL, r->B, cv);
            cur = y;
            which = (which + 1) % 3;
        }
        size_t per = (size_t)L->t * L->h * L->w;
        double *y = r->buf[which];
        for (int c = 0; c < L->c; c++) {
            double mean = 0, var = 0, cnt = (double)r->B * per;
            for (int n = 0; n < r->B; n++)
                for (size_t i = 0; i < per; i++) mean += cur[((size_t)n * L->c + c) * per + i];
            mean /= cnt;
            for (int n = 0; n < r->B; n++)
                for (size_t i = 0; i < per; i++) {
                    double d = cur[((size_t)n * L->c + c) * per + i] - mean;
                    var += d * d;
                }
            var /= cnt;
            double g = L->has_bn ? r->p[L->p_gamma][c] : 1, b = L->has_bn ? r->p[L->p_beta][c] : 0;
            for (int n = 0; n < r->B; n++)
                for (size_t i = 0; i < per; i++) {
                    size_t e = ((size_t)n * L->c + c) * per + i;
                    double v = L->has_bn ? g * (cur[e] - mean) / sqrt(var + 1e-5) + b : cur[e];
                    y[e] = L->has_act ? act_d(&core->cfg, v) : v;
                }
        }
        cur = y;
        which = (which + 1) % 3;
    }
    r->last = cur;
    size_t nout = (size_t)r->B * core->out_c * core->out_t * core->out_h * core->out_w;
    double loss = 0;
    for (size_t i = 0; i < nout; i++) loss += cur[i] * r->up[i];
    /* regularizers: LaplaceL2norm (3x3 filter, padding 1, sums) and DepthLaplaceL21d */
    const npred_conv3d *cs = &core->L[0].conv[0], *ct = &core->L[0].conv[core->cfg.factorized];
    const double *lap = r->p[core->p_lap2d], *l1 = r->p[core->p_lap1d];
    const double *ws = r->p[cs->p_w], *wt = r->p[ct->p_w];
    int kh = cs->kh, kw = cs->kw, kt = ct->kt;
    double sp = 0;
    for (int a = 0; a < cs->kt; a++) {
        double num = 0, den = 0;
        for (int oc = 0; oc < cs->cout * cs->cin; oc++) {
            const double *s = ws + ((size_t)oc * cs->kt + a) * kh * kw;
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    double acc = 0;
                    for (int u = 0; u < 3; u++)
                        for (int v = 0; v < 3; v++) {
                            int hi = i + u - 1, wi = j + v - 1;
                            if (hi >= 0 && hi < kh && wi >= 0 && wi < kw) acc += lap[u * 3 + v] * s[hi * kw + wi];
                        }
                    num += acc * acc;
                    den += s[i * kw + j] * s[i * kw + j];
                }
        }
        sp += num / den;
    }
    double tp = 0;
    int tkh = ct->kh, tkw = ct->kw;
    for (int pos = 0; pos < tkh * tkw; pos++) {
        double num = 0, den = 0;
        for (int oc = 0; oc < ct->cout * ct->cin; oc++) {
            const double *s = wt + (size_t)oc * kt * tkh * tkw + pos;
            for (int i = 0; i < kt; i++) {
                double acc = 0;
                for (int u = 0; u < 3; u++)
                    if (i + u - 1 >= 0 && i + u - 1 < kt) acc += l1[u] * s[(size_t)(i + u - 1) * tkh * tkw];
                num += acc * acc;
                den += s[(size_t)i * tkh * tkw] * s[(size_t)i * tkh * tkw];
            }
        }
        tp += num / den;
    }
    return loss + core->cfg.gamma_input_spatial * sp + core->cfg.gamma_input_temporal * tp;
}

/* central differences on up to 24 evenly spread elements of every parameter and the input */
static void check_fd(const npred_core3d *core, const npred_ptable *t, double **p0, const float *x, size_t nx,
                     const float *up, int B, const float *dx, const float *y)
{
    ref_ctx r = {core, t, p0, gc_to_f64(x, nx), up, B, {0}, NULL};
    size_t big = 0;
    for (int l = 0; l < core->cfg.layers; l++)
        for (int k = 0; k < core->L[l].nconv; k++) {
            const npred_conv3d *cv = &core->L[l].conv[k];
            size_t a = (size_t)B * cv->cin * cv->tin * cv->hin * cv->win,
                   b = (size_t)B * cv->cout * cv->tout * cv->hout * cv->wout;
            if (a > big) big = a;
            if (b > big) big = b;
        }
    for (int i = 0; i < 3; i++) r.buf[i] = malloc(big * sizeof(double));
    if (y) { /* the forward itself against the double one, element by element */
        ref_loss(&r);
        size_t nout = (size_t)B * core->out_c * core->out_t * core->out_h * core->out_w;
        double worst = 0;
        for (size_t i = 0; i < nout; i++) worst = th_worst(worst, fabs(y[i] - r.last[i]) / (1 + fabs(r.last[i])));
        CHECK(worst <= 1e-5, "forward against the double reference: worst error %g", worst);
    }
    gc_check_table(t, p0, r.x, nx, dx, 24, ref_loss, &r);
    for (int i = 0; i < 3; i++) free(r.buf[i]);
    free(r.x);
}

static void run_case(const char *name, int factorized)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_core3d_config cc;
    config_from_case(&c, &cc, factorized);
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs), *up = th_load_f32(&c, "upstream.npy", NULL), *dx = NULL;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core3d core;
    memset(&core, 0, sizeof core);
    double **p0 = NULL;
    if (!x || !up || !CHECK(xs.ndim == 5, "input is 5-D")) goto out;
    int B = (int)xs.shape[0];
    if (!CHECK_OK(npred_core3d_declare(&core, &cc, "", (int)xs.shape[2], (int)xs.shape[3], (int)xs.shape[4], &t)) ||
        !CHECK_OK(npred_ptable_alloc(&t)) || !CHECK_OK(npred_core3d_setup(&core, &t, B)))
        goto out;
    CHECK(core.out_c == (int)th_num(c.json, -1, "out_channels", NULL), "out_channels %d", core.out_c);
    /* the constant buffers equal the reference's before the parameters are loaded over them */
    npred_core3d_init_buffers(&core, &t);
    th_compare_table(&c, &t, "buffers_after", "forward", "", (const char *const[]){
        "features.layer0.norm.running_mean", "features.layer0.norm.running_var", "features.layer0.norm.num_batches_tracked",
        "features.layer1.norm.running_mean", "features.layer1.norm.running_var", "features.layer1.norm.num_batches_tracked",
        NULL});
    th_load_table(&c, &t, "params", "", NULL);
    p0 = calloc((size_t)t.n, sizeof *p0);
    for (int e = 0; p0 && e < t.n; e++) p0[e] = gc_to_f64(npred_ptable_ptr(&t, e), t.items[e].count);
    const float *y;
    if (!CHECK_OK(npred_core3d_forward(&core, &t, x, B, 1, &y))) goto out;
    th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, core.out_c, core.out_t, core.out_h, core.out_w));
    for (int l = 0; l < cc.layers; l++) {
        char rel[64];
        snprintf(rel, sizeof rel, "intermediates/features.layer%d.npy", l);
        const npred_core3d_layer *L = &core.L[l];
        th_compare_dims(&c, "forward", rel, L->out, TH_DIMS(B, L->c, L->t, L->h, L->w));
    }
    th_compare_table(&c, &t, "buffers_after", "forward", "", NULL);
    npred_ptable_zero_grad(&t);
    double sp, tp;
    if (!CHECK_OK(npred_core3d_regularizer(&core, &t, 1.0, &sp, &tp))) goto out;
    float spf = (float)sp, tpf = (float)tp;
    th_compare_dims(&c, "forward", "regularizer_spatial.npy", &spf, 0, NULL);
    th_compare_dims(&c, "forward", "regularizer_temporal.npy", &tpf, 0, NULL);
    size_t nout = (size_t)B * core.out_c * core.out_t * core.out_h * core.out_w;
    double loss = sp + tp;
    for (size_t i = 0; i < nout; i++) loss += (double)y[i] * up[i];
    double want = th_num(c.json, NAN, "scalars", "loss", NULL);
    CHECK(fabs(loss - want) <= 1e-4 * fabs(want) + 1e-4, "loss %.9g want %.9g", loss, want);
    dx = calloc(xs.count, sizeof *dx);
    if (!dx || !CHECK_OK(npred_core3d_backward(&core, &t, up, dx))) goto out;
    th_compare_table(&c, &t, "grads", "grads", "", (const char *const[]){"input", NULL});
    th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
    check_fd(&core, &t, p0, x, xs.count, up, B, dx, NULL);
    /* a backward without the input gradient gives the same parameter gradients */
    float *g1 = malloc(t.n_params * sizeof *g1);
    if (g1) {
        memcpy(g1, t.grad, t.n_params * sizeof *g1);
        npred_ptable_zero_grad(&t);
        CHECK_OK(npred_core3d_forward(&core, &t, x, B, 1, &y));
        CHECK_OK(npred_core3d_regularizer(&core, &t, 1.0, &sp, &tp));
        CHECK_OK(npred_core3d_backward(&core, &t, up, NULL));
        CHECK(!memcmp(g1, t.grad, t.n_params * sizeof *g1), "parameter gradients without dx differ");
        free(g1);
    }
    /* eval: reload the parameters and the running stats after one train forward */
    th_load_table(&c, &t, "params", "", NULL);
    if (CHECK_OK(npred_core3d_forward(&core, &t, x, B, 1, &y)) && CHECK_OK(npred_core3d_forward(&core, &t, x, B, 0, &y)))
        th_compare_dims(&c, "forward", "output_eval.npy", y, TH_DIMS(B, core.out_c, core.out_t, core.out_h, core.out_w));
out:
    if (p0)
        for (int e = 0; e < t.n; e++) free(p0[e]);
    free(p0);
    free(x);
    free(up);
    free(dx);
    npred_core3d_free(&core);
    npred_ptable_free(&t);
    th_case_close(&c);
}

/* A core with the nonlinearity `act` and random parameters, inputs and upstream (no
 * fixture exists for relu, softplus, adaptive_elu): the train forward against the
 * double-precision forward above, every gradient (regularizer included) against its
 * central finite differences. */
static void nonlin_case(int factorized, npred_act_kind act, int layers, double xs, double ys)
{
    npred_core3d_config cc;
    npred_core3d_config_default(&cc, factorized);
    cc.input_channels = 2, cc.hidden_channels = 3, cc.layers = layers, cc.padding = 1;
    cc.in_kt = 3, cc.in_kh = cc.in_kw = 3, cc.hid_kt = 2, cc.hid_kh = cc.hid_kw = 3;
    cc.gamma_input_spatial = 0.5, cc.gamma_input_temporal = 0.25;
    cc.act = act, cc.x_shift = xs, cc.y_shift = ys;
    const int B = 2, T = 6, H = 6, W = 5;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core3d core;
    memset(&core, 0, sizeof core);
    double **p0 = NULL;
    size_t nx = (size_t)B * 2 * T * H * W, nout = 0;
    float *x = malloc(nx * sizeof *x), *dx = calloc(nx, sizeof *dx), *up = NULL;
    if (!CHECK(x && dx, "out of memory") || !CHECK_OK(npred_core3d_declare(&core, &cc, "", T, H, W, &t)) ||
        !CHECK_OK(npred_ptable_alloc(&t)) || !CHECK_OK(npred_core3d_setup(&core, &t, B)))
        goto out;
    npred_core3d_init_buffers(&core, &t);
    uint64_t rs = 17 + (uint64_t)act * 5 + (uint64_t)factorized;
    for (int e = 0; e < t.n; e++) {
        const npred_param *p = &t.items[e];
        if (p->is_buffer) continue;
        float *v = npred_ptable_ptr(&t, e);
        int gamma = strstr(p->name, "norm.weight") != NULL;
        for (size_t i = 0; i < p->count; i++) v[i] = (float)(gamma ? 0.7 + 0.6 * th_rand(&rs) : th_rand(&rs) - 0.5);
    }
    for (size_t i = 0; i < nx; i++) x[i] = (float)(3 * th_rand(&rs) - 1.5);
    nout = (size_t)B * core.out_c * core.out_t * core.out_h * core.out_w;
    if (!CHECK((up = malloc(nout * sizeof *up)) != NULL, "out of memory")) goto out;
    for (size_t i = 0; i < nout; i++) up[i] = (float)(2 * th_rand(&rs) - 1);
    p0 = calloc((size_t)t.n, sizeof *p0);
    for (int e = 0; p0 && e < t.n; e++) p0[e] = gc_to_f64(npred_ptable_ptr(&t, e), t.items[e].count);
    const float *y;
    npred_ptable_zero_grad(&t);
    double sp, tp;
    if (!CHECK(p0 != NULL, "out of memory") || !CHECK_OK(npred_core3d_forward(&core, &t, x, B, 1, &y)) ||
        !CHECK_OK(npred_core3d_regularizer(&core, &t, 1.0, &sp, &tp)) ||
        !CHECK_OK(npred_core3d_backward(&core, &t, up, dx)))
        goto out;
    /* the nonlinearity really acts: outputs in its bent part (relu: 0; softplus: < 0.3, inputs below
       about -0.4; adaptive_elu: more than 0.3 under y_shift), and not all of them */
    int below = 0;
    for (size_t i = 0; i < nout; i++)
        below += act == NPRED_ACT_RELU ? y[i] == 0 : y[i] < (act == NPRED_ACT_ADAPTIVE_ELU ? ys - 0.3 : 0.3);
    CHECK(below > 0 && below < (int)nout, "%s: %d of %zu outputs in the nonlinearity's lower part",
          npred_act_name(act), below, nout);
    check_fd(&core, &t, p0, x, nx, up, B, dx, y);
out:
    if (p0)
        for (int e = 0; e < t.n; e++) free(p0[e]);
    free(p0), free(x), free(dx), free(up);
    npred_core3d_free(&core);
    npred_ptable_free(&t);
}

static void test_relu(void)
{
    nonlin_case(1, NPRED_ACT_RELU, 2, 0, 0);
    nonlin_case(0, NPRED_ACT_RELU, 2, 0, 0);
}
static void test_softplus(void)
{
    nonlin_case(1, NPRED_ACT_SOFTPLUS, 2, 0, 0);
    nonlin_case(0, NPRED_ACT_SOFTPLUS, 2, 0, 0);
}
static void test_adaptive_elu(void)
{
    nonlin_case(1, NPRED_ACT_ADAPTIVE_ELU, 1, 0.3, -0.2);
    nonlin_case(0, NPRED_ACT_ADAPTIVE_ELU, 1, -0.4, 0.5);
}

static void test_factorized3d(void) { run_case("factorized3d_core", 1); }
static void test_basic3d(void) { run_case("basic3d_core", 0); }

/* bad geometry is an error naming the module */
static void test_errors(void)
{
    npred_core3d_config cc;
    npred_core3d_config_default(&cc, 0);
    cc.input_channels = 1, cc.hidden_channels = 2, cc.layers = 2;
    cc.in_kt = 5, cc.in_kh = cc.in_kw = 3, cc.hid_kt = 2, cc.hid_kh = cc.hid_kw = 3;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_core3d core;
    npred_status s = npred_core3d_declare(&core, &cc, "core.", 5, 8, 8, &t);
    CHECK(s == NPRED_ERR_SHAPE && strstr(npred_last_error(), "features.layer1.conv_1"), "T 5 -> 1 -> 0: %s",
          npred_last_error());
    npred_ptable_free(&t);
    npred_ptable_init(&t);
    cc.layers = 0;
    CHECK(npred_core3d_declare(&core, &cc, "", 8, 8, 8, &t) == NPRED_ERR_CONFIG, "layers 0");
    npred_ptable_free(&t);
    /* nonlinearities 43faede's 3D cores do not build */
    cc.layers = 2;
    const struct {
        npred_act_kind act;
        double xs;
        npred_status want;
        const char *needle;
    } bad[] = {{NPRED_ACT_TANH, 0, NPRED_ERR_UNSUPPORTED, "tanh"},
               {NPRED_ACT_ADAPTIVE_ELU, 0.1, NPRED_ERR_UNSUPPORTED, "adaptive_elu with 2 layers"},
               {NPRED_ACT_ELU, 0.1, NPRED_ERR_ARG, "x_shift"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        npred_ptable_init(&t);
        cc.act = bad[i].act, cc.x_shift = bad[i].xs;
        s = npred_core3d_declare(&core, &cc, "", 8, 8, 8, &t);
        CHECK(s == bad[i].want && strstr(npred_last_error(), bad[i].needle), "%s: got %d '%s'", bad[i].needle, s,
              npred_last_error());
        npred_ptable_free(&t);
    }
}

int main(void)
{
    RUN(test_factorized3d);
    RUN(test_basic3d);
    RUN(test_errors);
    RUN(test_relu);
    RUN(test_softplus);
    RUN(test_adaptive_elu);
    return th_summary();
}
