/* Activation kernels: PyTorch fixtures (elu, elu1, adaptive_elu), every activation against
 * a double reference (incl. points near 0, near the softplus threshold, large |x|),
 * finite differences of every backward, conventions at kinks, dispatcher errors. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "kernels/activation.h"

static const npred_act_kind KINDS[] = {NPRED_ACT_IDENTITY, NPRED_ACT_ELU,     NPRED_ACT_ADAPTIVE_ELU,
                                       NPRED_ACT_ELU1,     NPRED_ACT_TANH,    NPRED_ACT_SIGMOID,
                                       NPRED_ACT_RELU,     NPRED_ACT_SOFTPLUS, NPRED_ACT_EXP};
#define NKINDS (sizeof KINDS / sizeof KINDS[0])

/* ---- double reference ---- */

static double ref_elu(double x) { return x > 0 ? x : expm1(x); }

static double ref_act(const npred_act *a, double x)
{
    switch (a->kind) {
    case NPRED_ACT_IDENTITY: return x;
    case NPRED_ACT_ELU: return ref_elu(x);
    case NPRED_ACT_ADAPTIVE_ELU: return ref_elu(x - a->xshift) + a->yshift;
    case NPRED_ACT_ELU1: return ref_elu(x) + 1;
    case NPRED_ACT_TANH: return tanh(x);
    case NPRED_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case NPRED_ACT_RELU: return x > 0 ? x : 0;
    case NPRED_ACT_SOFTPLUS: return x > 20 ? x : log1p(exp(x));
    case NPRED_ACT_EXP: return exp(x);
    }
    return NAN;
}

typedef struct {
    const npred_act *act;
    double *x, *u;
    size_t n;
} act_ctx;

static double act_loss(void *p)
{
    act_ctx *c = p;
    double l = 0;
    for (size_t i = 0; i < c->n; i++) l += ref_act(c->act, c->x[i]) * c->u[i];
    return l;
}

/* Points that hit the edge cases, then random ones. */
static const float POINTS[] = {0.0f,  1e-8f,   -1e-8f, 1e-6f,   -1e-6f, 1e-3f,   -1e-3f,  0.1f,  -0.1f,
                               0.5f,  -0.5f,   0.49f,  0.51f,   1.0f,   -1.0f,   2.5f,    -2.5f, 7.0f,
                               -7.0f, 15.0f,   -15.0f, 19.99f,  20.0f,  20.01f,  -20.0f,  25.0f, -25.0f,
                               60.0f, -60.0f,  88.0f,  -88.0f,  -103.0f};
#define NPOINTS (sizeof POINTS / sizeof POINTS[0])
#define NRAND 64

static float *make_points(size_t *n, npred_act_kind kind)
{
    uint64_t st = 99;
    float *x = malloc((NPOINTS + NRAND) * sizeof *x);
    size_t k = 0;
    for (size_t i = 0; i < NPOINTS; i++) {
        if (kind == NPRED_ACT_EXP && POINTS[i] > 80) continue; /* exp overflows float */
        x[k++] = POINTS[i];
    }
    for (int i = 0; i < NRAND; i++) x[k++] = (float)(4 * th_rand(&st));
    *n = k;
    return x;
}

static void test_forward_vs_reference(void)
{
    for (size_t k = 0; k < NKINDS; k++) {
        npred_act a = {KINDS[k], 0.5f, -0.2f};
        size_t n;
        float *x = make_points(&n, a.kind);
        float *y = malloc(n * sizeof *y);
        double *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
        CHECK_OK(npred_act_forward(y, x, n, &a));
        for (size_t i = 0; i < n; i++) {
            ref[i] = ref_act(&a, x[i]);
            got[i] = y[i];
        }
        char what[64];
        snprintf(what, sizeof what, "%s forward", npred_act_name(a.kind));
        /* a few ulp relative, also for tiny results (expm1 near 0); elu1 and adaptive_elu add
         * a constant after the ELU in float, as torch does, which costs up to 1 ulp of 1 */
        int shifted = a.kind == NPRED_ACT_ELU1 || a.kind == NPRED_ACT_ADAPTIVE_ELU;
        th_close_f64(what, got, ref, n, 4e-7, shifted ? 1.2e-7 : 1e-37);
        /* in place */
        CHECK_OK(npred_act_forward(x, x, n, &a));
        CHECK(!memcmp(x, y, n * sizeof *y), "%s: in-place forward differs", npred_act_name(a.kind));
        free(x), free(y), free(ref), free(got);
    }
}

static void test_backward_fd(void)
{
    for (size_t k = 0; k < NKINDS; k++) {
        npred_act a = {KINDS[k], 0.5f, -0.2f};
        size_t n0, n = 0;
        float *x0 = make_points(&n0, a.kind);
        float *x = malloc(n0 * sizeof *x);
        /* keep clear of the non-differentiable points (the ELU kink is C1: kept) */
        for (size_t i = 0; i < n0; i++) {
            if (a.kind == NPRED_ACT_RELU && fabsf(x0[i]) < 1e-5f) continue;
            if (a.kind == NPRED_ACT_SOFTPLUS && fabsf(x0[i] - 20.0f) < 1e-5f) continue;
            x[n++] = x0[i];
        }
        uint64_t st = 7 + k;
        float *u = malloc(n * sizeof *u), *y = malloc(n * sizeof *y), *dx = calloc(n, sizeof *dx);
        gc_fill(u, n, -1, 1, &st);
        CHECK_OK(npred_act_forward(y, x, n, &a));
        int nx = npred_act_backward_needs_x(a.kind);
        CHECK_OK(npred_act_backward(dx, u, nx ? x : NULL, nx ? NULL : y, n, &a));
        act_ctx c = {&a, gc_to_f64(x, n), gc_to_f64(u, n), n};
        double *num = malloc(n * sizeof *num);
        /* one element at a time: the loss is a sum of independent terms */
        for (size_t i = 0; i < n; i++) {
            act_ctx one = {&a, c.x + i, c.u + i, 1};
            gc_fd(num + i, one.x, 1, 1e-6 * fmax(1.0, fabs(c.x[i]) / 10), act_loss, &one);
        }
        char what[64];
        snprintf(what, sizeof what, "%s backward", npred_act_name(a.kind));
        gc_check(what, dx, num, n, 2e-5, 1e-6);
        free(c.x), free(c.u), free(num), free(x0), free(x), free(u), free(y), free(dx);
    }
}

/* The ELU family uses its own vectorisable exp/expm1: check it densely over the whole
 * negative range and over tiny magnitudes, against double expm1/exp. */
static void test_elu_dense_sweep(void)
{
    enum { N = 200001, M = 600 };
    float *x = malloc((N + M) * sizeof *x), *y = malloc((N + M) * sizeof *y), *d = calloc(N + M, sizeof *d);
    float *one = malloc((N + M) * sizeof *one);
    double *ry = malloc((N + M) * sizeof *ry), *rd = malloc((N + M) * sizeof *rd), *gy = malloc((N + M) * sizeof *gy);
    for (int i = 0; i < N; i++) x[i] = (float)(-90.0 * i / (N - 1));
    for (int i = 0; i < M; i++) x[N + i] = (float)-pow(10.0, -30.0 + 30.0 * i / M);
    for (int i = 0; i < N + M; i++) one[i] = 1.0f;
    npred_elu_forward(y, x, N + M);
    npred_elu_backward(d, one, x, N + M);
    for (int i = 0; i < N + M; i++) ry[i] = expm1((double)x[i]), gy[i] = y[i];
    th_close_f64("elu forward sweep", gy, ry, N + M, 3e-7, 1e-37);
    for (int i = 0; i < N + M; i++) rd[i] = exp((double)x[i]), gy[i] = d[i];
    th_close_f64("elu backward sweep", gy, rd, N + M, 3e-7, 1.7e-38); /* 0 below -87 */
    float nan = NAN, yn, dn = 0;
    npred_elu_forward(&yn, &nan, 1);
    npred_elu_backward(&dn, &one[0], &nan, 1);
    CHECK(isnan(yn) && isnan(dn), "elu(NaN) = %g, slope %g", yn, dn);
    free(x), free(y), free(d), free(one), free(ry), free(rd), free(gy);
}

/* Slopes where torch defines them by convention. */
static void test_kinks(void)
{
    float x[3] = {0.0f, -0.0f, NAN}, y[3], dx[3] = {0}, dy[3] = {1, 1, 1};
    npred_relu_forward(y, x, 3);
    CHECK(y[0] == 0 && y[1] == 0 && isnan(y[2]), "relu(0, -0, nan) = (%g, %g, %g)", y[0], y[1], y[2]);
    npred_relu_backward(dx, dy, y, 2);
    CHECK(dx[0] == 0 && dx[1] == 0, "relu slope at 0 is %g, torch uses 0", dx[0]);
    dx[0] = 0;
    npred_elu_backward(dx, dy, x, 1);
    CHECK(dx[0] == 1, "elu slope at 0 is %g, want 1", dx[0]);
    float t[2] = {20.0f, 20.5f}, st[2], ds[2] = {0, 0};
    npred_softplus_forward(st, t, 2);
    CHECK(st[0] == (float)log1p(exp(20.0)) && st[1] == 20.5f, "softplus at/above threshold: %.9g %.9g",
          st[0], st[1]);
    npred_softplus_backward(ds, dy, t, 2);
    CHECK(ds[0] == (float)(exp(20.0) / (exp(20.0) + 1)) && ds[1] == 1.0f, "softplus slope %.9g %.9g",
          ds[0], ds[1]);
    float z = -1e-8f, e;
    npred_elu_forward(&e, &z, 1);
    CHECK(e == z, "elu(-1e-8) = %g: expm1 not used", e);
}

/* Fixture: output and grads/input of one activation case. */
static void run_fixture(const char *name, npred_act_kind kind)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_act a = {kind, (float)th_num(c.json, 0, "args", "xshift", NULL),
                   (float)th_num(c.json, 0, "args", "yshift", NULL)};
    cJSON *comp = th_get(c.json, "component", NULL);
    CHECK(cJSON_IsString(comp) && strcmp(comp->valuestring, npred_act_name(kind)) == 0,
          "%s: component is not %s", name, npred_act_name(kind));
    if (kind == NPRED_ACT_ELU)
        CHECK(th_num(c.json, NAN, "args", "alpha", NULL) == 1.0, "%s: alpha is not 1", name);
    npred_array sh;
    float *x = th_load_f32(&c, "input.npy", &sh);
    float *u = th_load_f32(&c, "upstream.npy", NULL);
    if (x && u) {
        float *y = malloc(sh.count * sizeof *y), *dx = calloc(sh.count, sizeof *dx);
        CHECK_OK(npred_act_forward(y, x, sh.count, &a));
        th_compare_dims(&c, "forward", "output.npy", y, sh.ndim, sh.shape);
        double loss = 0, ref = th_num(c.json, NAN, "scalars", "loss", NULL);
        for (size_t i = 0; i < sh.count; i++) loss += (double)y[i] * u[i];
        CHECK(fabs(loss - ref) <= 1e-5 + 1e-4 * fabs(ref), "loss %.9g, want %.9g", loss, ref);
        CHECK_OK(npred_act_backward(dx, u, x, y, sh.count, &a));
        th_compare_dims(&c, "grads", "grads/input.npy", dx, sh.ndim, sh.shape);
        free(y), free(dx);
    }
    free(x), free(u);
    th_case_close(&c);
}

static void test_fixture_elu(void) { run_fixture("elu", NPRED_ACT_ELU); }
static void test_fixture_elu1(void) { run_fixture("elu1", NPRED_ACT_ELU1); }
static void test_fixture_adaptive_elu(void) { run_fixture("adaptive_elu", NPRED_ACT_ADAPTIVE_ELU); }

static void test_accumulate(void)
{
    for (size_t k = 0; k < NKINDS; k++) {
        npred_act a = {KINDS[k], 0.3f, 0.1f};
        float x[5] = {-2, -0.5f, 0.25f, 1, 3}, y[5], dy[5] = {1, -2, 3, -4, 5}, d1[5] = {0}, d2[5];
        for (int i = 0; i < 5; i++) d2[i] = 10.0f;
        npred_act_forward(y, x, 5, &a);
        CHECK_OK(npred_act_backward(d1, dy, x, y, 5, &a));
        CHECK_OK(npred_act_backward(d2, dy, x, y, 5, &a));
        int ok = 1;
        for (int i = 0; i < 5; i++) ok &= d2[i] == d1[i] + 10.0f;
        CHECK(ok, "%s backward does not accumulate", npred_act_name(a.kind));
    }
}

/* Arrays large enough for the threaded path: same bits on 1 and 2 threads. */
static void test_threads(void)
{
    enum { N = 100003 };
    float *x = malloc(N * sizeof *x), *y1 = malloc(N * sizeof *y1), *y2 = malloc(N * sizeof *y2);
    float *d1 = calloc(N, sizeof *d1), *d2 = calloc(N, sizeof *d2);
    uint64_t st = 5;
    gc_fill(x, N, -6, 6, &st);
    int nt = omp_get_max_threads();
    for (size_t k = 0; k < NKINDS; k++) {
        npred_act a = {KINDS[k], 0.5f, -0.2f};
        omp_set_num_threads(1);
        npred_act_forward(y1, x, N, &a);
        npred_act_backward(d1, x, x, y1, N, &a);
        omp_set_num_threads(nt > 1 ? nt : 2);
        npred_act_forward(y2, x, N, &a);
        npred_act_backward(d2, x, x, y2, N, &a);
        CHECK(!memcmp(y1, y2, N * sizeof *y1) && !memcmp(d1, d2, N * sizeof *d1),
              "%s differs between 1 and 2 threads", npred_act_name(a.kind));
    }
    omp_set_num_threads(nt);
    free(x), free(y1), free(y2), free(d1), free(d2);
}

static void test_bad_input(void)
{
    float x[2] = {1, 2}, y[2], dx[2] = {0};
    npred_act bad = {(npred_act_kind)99, 0, 0}, t = {NPRED_ACT_TANH, 0, 0}, e = {NPRED_ACT_ELU, 0, 0};
    CHECK(npred_act_forward(y, x, 2, &bad) == NPRED_ERR_ARG, "unknown kind accepted");
    CHECK(strstr(npred_last_error(), "99") != NULL, "message '%s'", npred_last_error());
    CHECK(npred_act_forward(y, x, 2, NULL) == NPRED_ERR_ARG, "NULL act accepted");
    CHECK(npred_act_forward(NULL, x, 2, &t) == NPRED_ERR_ARG, "NULL y accepted");
    CHECK(npred_act_backward(dx, x, x, NULL, 2, &t) == NPRED_ERR_ARG, "tanh backward without y accepted");
    CHECK(strstr(npred_last_error(), "output y") != NULL, "message '%s'", npred_last_error());
    CHECK(npred_act_backward(dx, x, NULL, y, 2, &e) == NPRED_ERR_ARG, "elu backward without x accepted");
    CHECK(npred_act_backward(NULL, x, x, y, 2, &e) == NPRED_ERR_ARG, "NULL dx accepted");
    CHECK(npred_act_name((npred_act_kind)99) == NULL, "name of unknown kind");
    CHECK(dx[0] == 0 && dx[1] == 0, "a failed call wrote dx");
    CHECK_OK(npred_act_forward(NULL, NULL, 0, &t)); /* empty is fine */
}

/* npred_elu1_offset_forward (the bf16 model output): z = x + off exactly as float adds
 * it, y = z + 1 for z > 0 and exp(z) within 4e-7 relative of the double exp for
 * -87 <= z <= 0 (a dense sweep, the tiny results too), 0 below -87, NaN kept; the same
 * bits on 1 and 2 threads (a length past the parallel threshold). */
static void test_elu1_offset(void)
{
    const size_t n = 200003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *z = malloc(n * sizeof *z);
    float *y2 = malloc(n * sizeof *y2), *z2 = malloc(n * sizeof *z2);
    const float off = 0.375f;
    for (size_t i = 0; i < n; i++) x[i] = -90.0f + 100.0f * (float)i / (float)(n - 1) - off;
    x[0] = NAN;
    x[1] = -0.0f - off;
    omp_set_num_threads(1);
    npred_elu1_offset_forward(y, z, x, off, n);
    omp_set_num_threads(2);
    npred_elu1_offset_forward(y2, z2, x, off, n);
    omp_set_num_threads(1);
    CHECK(!memcmp(y, y2, n * sizeof *y) && !memcmp(z, z2, n * sizeof *z), "1 and 2 threads differ");
    CHECK(isnan(y[0]) && isnan(z[0]), "NaN became %g, %g", y[0], z[0]);
    double worst = 0;
    int exact = 1;
    for (size_t i = 1; i < n; i++) {
        const float v = x[i] + off;
        exact &= z[i] == v;
        if (v > 0) exact &= y[i] == v + 1.0f;
        else if (v < -87.0f) exact &= y[i] == 0.0f;
        else worst = th_worst(worst, fabs(y[i] - exp((double)v)) / exp((double)v));
    }
    CHECK(exact, "z, or y for z > 0 or z < -87, not as defined");
    CHECK(worst <= 4e-7, "exp(z) off by %.3g relative (bound 4e-7)", worst);
    printf("  exp(z), -87 <= z <= 0: worst relative error %.2e\n", worst);
    free(x), free(y), free(z), free(y2), free(z2);
}

int main(void)
{
    RUN(test_fixture_elu);
    RUN(test_fixture_elu1);
    RUN(test_fixture_adaptive_elu);
    RUN(test_forward_vs_reference);
    RUN(test_backward_fd);
    RUN(test_elu_dense_sweep);
    RUN(test_kinks);
    RUN(test_accumulate);
    RUN(test_threads);
    RUN(test_bad_input);
    RUN(test_elu1_offset);
    return th_summary();
}
