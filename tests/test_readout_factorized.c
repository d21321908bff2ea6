/* FullFactorized2d against the 0.3.0 fixtures and finite differences; in bf16
 * precision against a double reference on the bf16-rounded GEMM operands. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "harness.h"
#include "kernels/gemm.h"
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

typedef struct {
    float *y, *dx, *gs, *gf, *gb;
} fz_out;

/* forward (training) + backward of r on x, dy; outputs and parameter gradients copied */
static void fz_run(npred_readout *r, npred_ptable *t, const float *x, const float *dy, int B, fz_out *o, int ip[3])
{
    size_t nx = (size_t)B * r->cfg.c * r->cfg.h * r->cfg.w, ny = (size_t)B * r->cfg.n;
    o->y = calloc(ny, sizeof(float));
    o->dx = calloc(nx, sizeof(float));
    CHECK_OK(npred_readout_forward(r, t, o->y, x, NULL, B, 1, NULL, NULL));
    npred_ptable_zero_grad(t);
    npred_readout_backward(r, t, dy, o->dx, NULL);
    float **g[3] = {&o->gs, &o->gf, &o->gb};
    for (int i = 0; i < 3; i++) {
        size_t n = t->items[ip[i]].count;
        *g[i] = malloc(n * sizeof(float));
        memcpy(*g[i], npred_ptable_gradptr(t, ip[i]), n * sizeof(float));
    }
}

static void fz_free(fz_out *o) { free(o->y), free(o->dx), free(o->gs), free(o->gf), free(o->gb); }

/* worst |got - ref| / scale */
static double rel_err(const float *got, const double *ref, const double *scale, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) w = th_worst(w, fabs(got[i] - ref[i]) / (scale[i] + 1e-30));
    return w;
}

/* bf16 precision: the three GEMMs (T = X m^T, dm = dT^T X, dx += dT m) multiply the
 * operands rounded to bf16, sums in fp32. Reference in double on the operands rounded
 * by this file's own rounding: equal up to fp32 accumulation (relative to each
 * element's sum of |terms|), and far from the unrounded reference (bf16 ran); 1 and 2
 * threads bit-identical; fp32 again after bf16 gives fp32's bits. */
static void test_bf16(void)
{
    const int B = 3, C = 5, H = 6, W = 7, N = 37, hw = H * W;
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FACTORIZED, C, H, W, N);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (!CHECK_OK(npred_readout_declare(&r, &cfg, "readout.s.", &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_readout_setup(&r, &t, B)))
        goto out;
    int ip[3] = {npred_ptable_find(&t, "readout.s.spatial"), npred_ptable_find(&t, "readout.s._features"),
                 npred_ptable_find(&t, "readout.s.bias")};
    if (!CHECK(ip[0] >= 0 && ip[1] >= 0 && ip[2] >= 0, "parameter names")) goto out;
    if (!npred_gemm_bf16_available()) {
        CHECK(npred_readout_set_bf16(&r, 1) == NPRED_ERR_UNSUPPORTED && !r.bf16, "bf16 readout without AVX-512 BF16");
        goto out;
    }
    uint64_t st = 9;
    float *sp = npred_ptable_ptr(&t, ip[0]), *F = npred_ptable_ptr(&t, ip[1]), *bias = npred_ptable_ptr(&t, ip[2]);
    for (int i = 0; i < N * hw; i++) sp[i] = (float)th_rand(&st);
    for (int i = 0; i < N * C; i++) F[i] = (float)th_rand(&st);
    for (int i = 0; i < N; i++) bias[i] = (float)th_rand(&st);
    size_t nx = (size_t)B * C * hw, ny = (size_t)B * N;
    float *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy);
    for (size_t i = 0; i < nx; i++) x[i] = (float)th_rand(&st);
    for (size_t i = 0; i < ny; i++) dy[i] = (float)th_rand(&st);
    fz_out f32a, f32b, b16, b16t;
    fz_run(&r, &t, x, dy, B, &f32a, ip);
    CHECK_OK(npred_readout_set_bf16(&r, 1));
    fz_run(&r, &t, x, dy, B, &b16, ip);
    int thr = omp_get_max_threads();
    omp_set_num_threads(thr > 1 ? 1 : 2);
    fz_run(&r, &t, x, dy, B, &b16t, ip);
    omp_set_num_threads(thr);
    CHECK_OK(npred_readout_set_bf16(&r, 0));
    fz_run(&r, &t, x, dy, B, &f32b, ip);
    CHECK(!memcmp(f32a.y, f32b.y, ny * 4) && !memcmp(f32a.dx, f32b.dx, nx * 4) &&
              !memcmp(f32a.gs, f32b.gs, (size_t)N * hw * 4),
          "fp32 changed after a bf16 round trip");
    CHECK(!memcmp(b16.y, b16t.y, ny * 4) && !memcmp(b16.dx, b16t.dx, nx * 4) &&
              !memcmp(b16.gs, b16t.gs, (size_t)N * hw * 4) && !memcmp(b16.gf, b16t.gf, (size_t)N * C * 4),
          "bf16 readout differs between 1 and 2 threads");
    /* the reference: m as the readout defines it, in float; then the rounded products */
    double *nr = malloc(sizeof(double) * N);
    float *mf = malloc(sizeof(float) * N * hw);
    for (int o = 0; o < N; o++) {
        double ss = 0;
        for (int i = 0; i < hw; i++) ss += (double)sp[o * hw + i] * sp[o * hw + i];
        nr[o] = sqrt(ss);
        for (int i = 0; i < hw; i++) mf[o * hw + i] = sp[o * hw + i] / (float)(nr[o] + 1e-6);
    }
    size_t nt = (size_t)B * C * N;
    double *T = malloc(nt * sizeof *T), *gT = malloc(nt * sizeof *gT), *Tu = malloc(nt * sizeof *Tu);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < C; k++)
            for (int o = 0; o < N; o++) {
                double s = 0, g = 0, u = 0;
                for (int i = 0; i < hw; i++) {
                    float xv = x[(b * C + k) * hw + i], mv = mf[o * hw + i];
                    s += th_bf16(xv) * th_bf16(mv), g += fabs(th_bf16(xv) * th_bf16(mv)), u += (double)xv * mv;
                }
                size_t q = ((size_t)b * C + k) * N + o;
                T[q] = s, gT[q] = g, Tu[q] = u;
            }
    double *y = malloc(ny * sizeof *y), *gy = malloc(ny * sizeof *gy), *yu = malloc(ny * sizeof *yu);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < N; o++) {
            double s = bias[o], g = fabs(bias[o]), u = bias[o];
            for (int k = 0; k < C; k++) {
                size_t q = ((size_t)b * C + k) * N + o;
                s += F[o * C + k] * T[q], g += fabs(F[o * C + k]) * gT[q], u += F[o * C + k] * Tu[q];
            }
            y[b * N + o] = s, gy[b * N + o] = g, yu[b * N + o] = u;
        }
    /* dT = dy * F (one float product, as the readout forms it), then the rounded GEMMs */
    double *dm = malloc(sizeof(double) * N * hw), *gdm = malloc(sizeof(double) * N * hw);
    double *dxr = malloc(nx * sizeof *dxr), *gdx = malloc(nx * sizeof *gdx);
    for (int o = 0; o < N; o++)
        for (int i = 0; i < hw; i++) {
            double s = 0, g = 0;
            for (int b = 0; b < B; b++)
                for (int k = 0; k < C; k++) {
                    float dt = dy[b * N + o] * F[o * C + k];
                    double v = th_bf16(dt) * th_bf16(x[(b * C + k) * hw + i]);
                    s += v, g += fabs(v);
                }
            dm[o * hw + i] = s, gdm[o * hw + i] = g;
        }
    for (int b = 0; b < B; b++)
        for (int k = 0; k < C; k++)
            for (int i = 0; i < hw; i++) {
                double s = 0, g = 0;
                for (int o = 0; o < N; o++) {
                    float dt = dy[b * N + o] * F[o * C + k];
                    double v = th_bf16(dt) * th_bf16(mf[o * hw + i]);
                    s += v, g += fabs(v);
                }
                dxr[(b * C + k) * hw + i] = s, gdx[(b * C + k) * hw + i] = g;
            }
    /* d spatial through m = s / (||s|| + eps); d features = sum_b dy T; d bias = sum_b dy */
    double *gs = malloc(sizeof(double) * N * hw), *ggs = malloc(sizeof(double) * N * hw);
    double *gf = malloc(sizeof(double) * N * C), *ggf = malloc(sizeof(double) * N * C);
    double *gb = malloc(sizeof(double) * N), *ggb = malloc(sizeof(double) * N);
    for (int o = 0; o < N; o++) {
        double den = nr[o] + 1e-6, dot = 0, gdot = 0;
        for (int i = 0; i < hw; i++) dot += dm[o * hw + i] * sp[o * hw + i], gdot += gdm[o * hw + i] * fabs(sp[o * hw + i]);
        for (int i = 0; i < hw; i++) {
            gs[o * hw + i] = dm[o * hw + i] / den - sp[o * hw + i] * dot / (den * den * nr[o]);
            ggs[o * hw + i] = gdm[o * hw + i] / den + fabs(sp[o * hw + i]) * gdot / (den * den * nr[o]);
        }
        for (int k = 0; k < C; k++) {
            double s = 0, g = 0;
            for (int b = 0; b < B; b++) {
                size_t q = ((size_t)b * C + k) * N + o;
                s += dy[b * N + o] * T[q], g += fabs(dy[b * N + o]) * gT[q];
            }
            gf[o * C + k] = s, ggf[o * C + k] = g;
        }
        gb[o] = ggb[o] = 0;
        for (int b = 0; b < B; b++) gb[o] += dy[b * N + o], ggb[o] += fabs(dy[b * N + o]);
    }
    const double tol = 2e-6; /* fp32 sums of at most 111 terms, chained twice */
    double e[5] = {rel_err(b16.y, y, gy, ny), rel_err(b16.dx, dxr, gdx, nx), rel_err(b16.gs, gs, ggs, (size_t)N * hw),
                   rel_err(b16.gf, gf, ggf, (size_t)N * C), rel_err(b16.gb, gb, ggb, N)};
    printf("  bf16 FullFactorized2d vs the rounded reference: y %.2g, dx %.2g, d spatial %.2g, d features %.2g, "
           "d bias %.2g; y vs the unrounded one %.2g\n",
           e[0], e[1], e[2], e[3], e[4], rel_err(b16.y, yu, gy, ny));
    for (int i = 0; i < 5; i++) CHECK(e[i] <= tol, "bf16 FullFactorized2d output %d: error %g > %g", i, e[i], tol);
    CHECK(rel_err(b16.y, yu, gy, ny) > 100 * tol, "bf16 output equals the unrounded reference: bf16 did not run");
    free(nr), free(mf), free(T), free(gT), free(Tu), free(y), free(gy), free(yu), free(dm), free(gdm);
    free(dxr), free(gdx), free(gs), free(ggs), free(gf), free(ggf), free(gb), free(ggb);
    fz_free(&f32a), fz_free(&f32b), fz_free(&b16), fz_free(&b16t);
    free(x), free(dy);
out:
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
    RUN(test_bf16);
    return th_summary();
}
