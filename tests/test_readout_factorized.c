/* FullFactorized2d against the 0.3.0 fixtures and finite differences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "readouts/readout.h"

static void run_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *a = th_get(c.json, "args", NULL);
    cJSON *shape = th_get(a, "in_shape", NULL);
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FACTORIZED, cJSON_GetArrayItem(shape, 0)->valueint,
                                 cJSON_GetArrayItem(shape, 1)->valueint, cJSON_GetArrayItem(shape, 2)->valueint,
                                 (int)th_num(a, 0, "outdims", NULL));
    cfg.bias = (int)th_num(a, 1, "bias", NULL);
    cfg.normalize = (int)th_num(a, 1, "normalize", NULL);
    cfg.constrain_pos = (int)th_num(a, 0, "constrain_pos", NULL);
    cfg.feature_reg_weight = th_num(a, 1, "gamma_readout", NULL);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs);
    int B = x ? (int)xs.shape[0] : 0;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B)) && CHECK(th_load_table(&c, &t, "params", "", NULL) == 3, "3 parameters from the fixture") && x) {
        char repr[256];
        npred_readout_repr(&r, repr, sizeof repr);
        cJSON *want = th_get(c.json, "repr", NULL);
        CHECK(want && !strcmp(repr, want->valuestring), "repr '%s' want '%s'", repr, want ? want->valuestring : "");
        float *y = calloc((size_t)B * cfg.n, sizeof *y);
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, B, 0, NULL, NULL));
        th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, cfg.n));
        npred_array us;
        float *up = th_load_f32(&c, "upstream.npy", &us);
        float *dx = calloc(xs.count, sizeof *dx);
        npred_ptable_zero_grad(&t);
        if (!up) goto next;
        npred_readout_backward(&r, &t, up, dx, NULL);
        double reg = npred_readout_regularizer(&r, &t, 1.0);
        double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
        CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-5, "regularizer %.8g want %.8g", reg, want_reg);
        double loss = reg;
        for (size_t i = 0; i < (size_t)B * cfg.n; i++) loss += (double)y[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-5, "loss %.8g want %.8g", loss, want_loss);
        th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
        const char *keys[] = {"_features", "spatial", "bias"};
        for (int k = 0; k < 3; k++) {
            char rel[64];
            snprintf(rel, sizeof rel, "grads/%s.npy", keys[k]);
            int idx = npred_ptable_find(&t, keys[k]);
            if (CHECK(idx >= 0, "no table entry %s", keys[k]))
                th_compare_dims(&c, "grads", rel, npred_ptable_gradptr(&t, idx), t.items[idx].ndim, t.items[idx].shape);
        }
        if (th_get(c.json, "files", "params_after", NULL)) {
            int idx = npred_ptable_find(&t, "_features");
            if (CHECK(idx >= 0, "no table entry _features"))
                th_compare_dims(&c, "forward", "params_after/_features.npy", npred_ptable_ptr(&t, idx), t.items[idx].ndim,
                                t.items[idx].shape);
        }
    next:
        free(y);
        free(up);
        free(dx);
    }
    free(x);
    npred_readout_free(&r);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_fixture_factorized(void) { run_case("factorized"); }
static void test_fixture_constrain_pos(void) { run_case("factorized_constrain_pos"); }

/* double reference: loss = sum(y * up) + reg for the readout parameters in p */
typedef struct {
    int B, C, H, W, N, normalize;
    double gamma;
    const double *x, *up;
} ref_ctx;

static double ref_loss(const ref_ctx *k, const double *sp, const double *F, const double *bias)
{
    int hw = k->H * k->W;
    double loss = 0, sm = 0, sf = 0;
    double *m = malloc(sizeof(double) * (size_t)k->N * hw);
    for (int o = 0; o < k->N; o++) {
        double ss = 0;
        for (int i = 0; i < hw; i++) ss += sp[o * hw + i] * sp[o * hw + i];
        double d = k->normalize ? sqrt(ss) + 1e-6 : 1;
        for (int i = 0; i < hw; i++) {
            m[o * hw + i] = sp[o * hw + i] / d;
            sm += fabs(m[o * hw + i]);
        }
        for (int c = 0; c < k->C; c++) sf += fabs(F[o * k->C + c]);
    }
    for (int b = 0; b < k->B; b++)
        for (int o = 0; o < k->N; o++) {
            double y = bias[o];
            for (int c = 0; c < k->C; c++) {
                double s = 0;
                for (int i = 0; i < hw; i++) s += k->x[(b * k->C + c) * hw + i] * m[o * hw + i];
                y += F[o * k->C + c] * s;
            }
            loss += y * k->up[b * k->N + o];
        }
    free(m);
    return loss + k->gamma * sm * sf;
}

static void fd_case(int normalize)
{
    ref_ctx k = {3, 2, 3, 5, 4, normalize, 0.7, NULL, NULL};
    int hw = k.H * k.W;
    uint64_t seed = 42 + (uint64_t)normalize;
    size_t nx = (size_t)k.B * k.C * hw;
    double *x = malloc(nx * sizeof *x), *up = malloc((size_t)k.B * k.N * sizeof *up);
    for (size_t i = 0; i < nx; i++) x[i] = th_rand(&seed);
    for (int i = 0; i < k.B * k.N; i++) up[i] = th_rand(&seed);
    k.x = x;
    k.up = up;
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FACTORIZED, k.C, k.H, k.W, k.N);
    cfg.normalize = normalize;
    cfg.feature_reg_weight = k.gamma;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (!CHECK_OK(npred_readout_declare(&r, &cfg, "readout.s.", &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_readout_setup(&r, &t, k.B)))
        return;
    int is = npred_ptable_find(&t, "readout.s.spatial"), iF = npred_ptable_find(&t, "readout.s._features"),
        ib = npred_ptable_find(&t, "readout.s.bias");
    CHECK(is >= 0 && iF >= 0 && ib >= 0, "parameter names");
    size_t ns = t.items[is].count, nF = t.items[iF].count, nb = t.items[ib].count;
    double *sp = malloc(ns * sizeof *sp), *F = malloc(nF * sizeof *F), *bias = malloc(nb * sizeof *bias);
    for (size_t i = 0; i < ns; i++) npred_ptable_ptr(&t, is)[i] = (float)(sp[i] = th_rand(&seed));
    for (size_t i = 0; i < nF; i++) npred_ptable_ptr(&t, iF)[i] = (float)(F[i] = th_rand(&seed));
    for (size_t i = 0; i < nb; i++) npred_ptable_ptr(&t, ib)[i] = (float)(bias[i] = th_rand(&seed));
    float *xf = malloc(nx * sizeof *xf), *upf = malloc((size_t)k.B * k.N * sizeof *upf);
    for (size_t i = 0; i < nx; i++) xf[i] = (float)x[i];
    for (int i = 0; i < k.B * k.N; i++) upf[i] = (float)up[i];
    /* re-round the double copies to the float values the C code sees */
    for (size_t i = 0; i < nx; i++) x[i] = xf[i];
    for (int i = 0; i < k.B * k.N; i++) up[i] = upf[i];
    for (size_t i = 0; i < ns; i++) sp[i] = npred_ptable_ptr(&t, is)[i];
    for (size_t i = 0; i < nF; i++) F[i] = npred_ptable_ptr(&t, iF)[i];
    for (size_t i = 0; i < nb; i++) bias[i] = npred_ptable_ptr(&t, ib)[i];
    float *y = calloc((size_t)k.B * k.N, sizeof *y), *dx = calloc(nx, sizeof *dx);
    CHECK_OK(npred_readout_forward(&r, &t, y, xf, NULL, k.B, 1, NULL, NULL));
    npred_ptable_zero_grad(&t);
    npred_readout_backward(&r, &t, upf, dx, NULL);
    npred_readout_regularizer(&r, &t, 1.0);
    const double h = 1e-5;
    struct { double *v; size_t n; const float *g; const char *name; } groups[] = {
        {sp, ns, npred_ptable_gradptr(&t, is), "spatial"},
        {F, nF, npred_ptable_gradptr(&t, iF), "_features"},
        {bias, nb, npred_ptable_gradptr(&t, ib), "bias"},
        {x, nx, dx, "input"},
    };
    for (int gi = 0; gi < 4; gi++) {
        double *num = malloc(groups[gi].n * sizeof *num), *ana = malloc(groups[gi].n * sizeof *ana);
        for (size_t i = 0; i < groups[gi].n; i++) {
            double keep = groups[gi].v[i];
            groups[gi].v[i] = keep + h;
            double lp = ref_loss(&k, sp, F, bias);
            groups[gi].v[i] = keep - h;
            double lm = ref_loss(&k, sp, F, bias);
            groups[gi].v[i] = keep;
            num[i] = (lp - lm) / (2 * h);
            ana[i] = groups[gi].g[i];
        }
        char what[64];
        snprintf(what, sizeof what, "fd %s (normalize=%d)", groups[gi].name, normalize);
        th_close_f64(what, ana, num, groups[gi].n, 2e-3, 2e-4);
        free(num);
        free(ana);
    }
    free(x), free(up), free(sp), free(F), free(bias), free(xf), free(upf), free(y), free(dx);
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_fd_normalized(void) { fd_case(1); }
static void test_fd_unnormalized(void) { fd_case(0); }

static void test_bad_config(void)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FACTORIZED, 0, 3, 3, 5);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    CHECK(npred_readout_declare(&r, &cfg, "readout.x.", &t) == NPRED_ERR_CONFIG, "zero channels rejected");
    CHECK(strstr(npred_last_error(), "in_shape") != NULL, "message: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

int main(void)
{
    RUN(test_fixture_factorized);
    RUN(test_fixture_constrain_pos);
    RUN(test_fd_normalized);
    RUN(test_fd_unnormalized);
    RUN(test_bad_config);
    return th_summary();
}
