/* Linear, avg_pool2d (kernel == stride) and channel concat: hand-written double
 * references, finite differences of every backward, accumulation, bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "kernels/linear.h"
#include "kernels/pool.h"

/* ---- linear ---- */

typedef struct {
    int B, I, O;
    double *x, *w, *b, *u; /* b may be NULL */
} lin_ctx;

static double lin_ref(const lin_ctx *c, int r, int o)
{
    double s = c->b ? c->b[o] : 0;
    for (int i = 0; i < c->I; i++) s += c->x[(size_t)r * c->I + i] * c->w[(size_t)o * c->I + i];
    return s;
}

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    double l = 0;
    for (int r = 0; r < c->B; r++)
        for (int o = 0; o < c->O; o++) l += lin_ref(c, r, o) * c->u[(size_t)r * c->O + o];
    return l;
}

static void linear_case(int B, int I, int O, int bias, uint64_t seed)
{
    uint64_t st = seed;
    size_t nx = (size_t)B * I, nw = (size_t)O * I, ny = (size_t)B * O;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *b = malloc(O * 4), *u = malloc(ny * 4), *y = malloc(ny * 4);
    gc_fill(x, nx, -1, 1, &st);
    gc_fill(w, nw, -1, 1, &st);
    gc_fill(b, O, -1, 1, &st);
    gc_fill(u, ny, -1, 1, &st);
    for (size_t i = 0; i < ny; i++) y[i] = NAN; /* must be overwritten */
    lin_ctx c = {B, I, O, gc_to_f64(x, nx), gc_to_f64(w, nw), bias ? gc_to_f64(b, O) : NULL, gc_to_f64(u, ny)};
    char what[96];
    CHECK_OK(npred_linear_forward(y, x, w, bias ? b : NULL, B, I, O));
    double *ref = malloc(ny * sizeof *ref), *got = gc_to_f64(y, ny);
    for (int r = 0; r < B; r++)
        for (int o = 0; o < O; o++) ref[(size_t)r * O + o] = lin_ref(&c, r, o);
    snprintf(what, sizeof what, "linear (%d,%d,%d)%s: y", B, I, O, bias ? " bias" : "");
    th_close_f64(what, got, ref, ny, 1e-5, 1e-6 * sqrt(I));

    /* backward into pre-filled buffers: checks accumulation too */
    float *dx = malloc(nx * 4), *dw = malloc(nw * 4), *db = malloc(O * 4);
    for (size_t i = 0; i < nx; i++) dx[i] = 0.5f;
    for (size_t i = 0; i < nw; i++) dw[i] = -0.25f;
    for (int i = 0; i < O; i++) db[i] = 2.0f;
    CHECK_OK(npred_linear_backward(dx, dw, bias ? db : NULL, u, x, w, B, I, O));
    for (size_t i = 0; i < nx; i++) dx[i] -= 0.5f;
    for (size_t i = 0; i < nw; i++) dw[i] += 0.25f;
    for (int i = 0; i < O; i++) db[i] -= 2.0f;
    double *num = malloc((nx > nw ? nx : nw) * sizeof *num);
    gc_fd(num, c.x, nx, 1e-3, lin_loss, &c); /* the loss is linear in each argument */
    snprintf(what, sizeof what, "linear (%d,%d,%d): dx", B, I, O);
    gc_check(what, dx, num, nx, 1e-5, 1e-6 * sqrt(O));
    gc_fd(num, c.w, nw, 1e-3, lin_loss, &c);
    snprintf(what, sizeof what, "linear (%d,%d,%d): dw", B, I, O);
    gc_check(what, dw, num, nw, 1e-5, 1e-6 * sqrt(B));
    if (bias) {
        gc_fd(num, c.b, O, 1e-3, lin_loss, &c);
        snprintf(what, sizeof what, "linear (%d,%d,%d): db", B, I, O);
        gc_check(what, db, num, O, 1e-5, 1e-6 * sqrt(B));
    } else {
        int untouched = 1;
        for (int i = 0; i < O; i++) untouched &= db[i] == 0.0f;
        CHECK(untouched, "NULL db was written");
    }
    free(num), free(dx), free(dw), free(db), free(ref), free(got);
    free(c.x), free(c.w), free(c.b), free(c.u), free(x), free(w), free(b), free(u), free(y);
}

static void test_linear(void)
{
    linear_case(3, 5, 7, 1, 1);
    linear_case(1, 1, 1, 1, 2);
    linear_case(4, 3, 2, 0, 3);
    linear_case(37, 129, 65, 1, 4); /* big enough for blocked/threaded sgemm */
}

static void test_linear_null_grads(void)
{
    float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0}, dy[4] = {1, -1, 2, 0.5f};
    float dx[6] = {0}, dw[6] = {0}, db[2] = {0}, dx2[6] = {0};
    CHECK_OK(npred_linear_backward(dx, dw, db, dy, x, w, 2, 3, 2));
    CHECK_OK(npred_linear_backward(dx2, NULL, NULL, dy, NULL, w, 2, 3, 2)); /* x only needed for dw */
    CHECK(!memcmp(dx, dx2, sizeof dx), "dx differs when dw/db are skipped");
    /* dx row 0 = 1*w[0] - 1*w[1] = (1,0,-1) - (2,1,0) */
    CHECK(dx[0] == -1 && dx[1] == -1 && dx[2] == -1, "dx row 0 = (%g, %g, %g)", dx[0], dx[1], dx[2]);
    CHECK(db[0] == 3 && db[1] == -0.5f, "db = (%g, %g)", db[0], db[1]);
}

static void test_linear_bad_input(void)
{
    float x[4] = {0}, w[4] = {0}, y[4];
    CHECK(npred_linear_forward(y, x, w, NULL, 0, 2, 2) == NPRED_ERR_ARG, "B = 0 accepted");
    CHECK(strstr(npred_last_error(), "npred_linear_forward") != NULL, "message '%s'", npred_last_error());
    CHECK(npred_linear_forward(y, NULL, w, NULL, 2, 2, 2) == NPRED_ERR_ARG, "NULL x accepted");
    CHECK(npred_linear_backward(y, NULL, NULL, x, x, NULL, 2, 2, 2) == NPRED_ERR_ARG, "dx without w accepted");
    CHECK(npred_linear_backward(NULL, y, NULL, x, NULL, w, 2, 2, 2) == NPRED_ERR_ARG, "dw without x accepted");
    CHECK(npred_linear_backward(NULL, NULL, NULL, NULL, x, w, 2, 2, 2) == NPRED_ERR_ARG, "NULL dy accepted");
}

/* ---- avg pool ---- */

typedef struct {
    int B, C, H, W, k;
    double *x, *u;
} pool_ctx;

static void pool_ref(const pool_ctx *c, double *y)
{
    int Ho = c->H / c->k, Wo = c->W / c->k;
    for (int p = 0; p < c->B * c->C; p++)
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                double s = 0;
                for (int i = 0; i < c->k; i++)
                    for (int j = 0; j < c->k; j++)
                        s += c->x[((size_t)p * c->H + oh * c->k + i) * c->W + ow * c->k + j];
                y[((size_t)p * Ho + oh) * Wo + ow] = s / (c->k * c->k);
            }
}

static double pool_loss(void *p)
{
    pool_ctx *c = p;
    size_t ny = (size_t)c->B * c->C * (c->H / c->k) * (c->W / c->k);
    double *y = malloc(ny * sizeof *y), l = 0;
    pool_ref(c, y);
    for (size_t i = 0; i < ny; i++) l += y[i] * c->u[i];
    free(y);
    return l;
}

static void pool_case(int B, int C, int H, int W, int k, uint64_t seed)
{
    uint64_t st = seed;
    int Ho = H / k, Wo = W / k;
    size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C * Ho * Wo;
    float *x = malloc(nx * 4), *u = malloc(ny * 4), *y = malloc(ny * 4), *dx = calloc(nx, 4);
    gc_fill(x, nx, -1, 1, &st);
    gc_fill(u, ny, -1, 1, &st);
    pool_ctx c = {B, C, H, W, k, gc_to_f64(x, nx), gc_to_f64(u, ny)};
    double *ref = malloc(ny * sizeof *ref), *num = malloc(nx * sizeof *num);
    char what[96];
    CHECK_OK(npred_avgpool2d_forward(y, x, B, C, H, W, k));
    pool_ref(&c, ref);
    double *got = gc_to_f64(y, ny);
    snprintf(what, sizeof what, "avgpool (%d,%d,%d,%d) k%d: y", B, C, H, W, k);
    th_close_f64(what, got, ref, ny, 1e-6, 1e-7);
    CHECK_OK(npred_avgpool2d_backward(dx, u, B, C, H, W, k));
    gc_fd(num, c.x, nx, 1e-3, pool_loss, &c);
    snprintf(what, sizeof what, "avgpool (%d,%d,%d,%d) k%d: dx", B, C, H, W, k);
    gc_check(what, dx, num, nx, 1e-6, 1e-7);
    /* the rows/columns the floor mode drops get exactly nothing */
    int dropped_zero = 1;
    for (size_t p = 0; p < (size_t)B * C; p++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                if (h >= Ho * k || w >= Wo * k) dropped_zero &= dx[(p * H + h) * W + w] == 0.0f;
    CHECK(dropped_zero, "avgpool k%d: a dropped element got a gradient", k);
    /* accumulation */
    float *dx2 = malloc(nx * 4);
    memcpy(dx2, dx, nx * 4);
    CHECK_OK(npred_avgpool2d_backward(dx2, u, B, C, H, W, k));
    int acc = 1;
    for (size_t i = 0; i < nx; i++) acc &= dx2[i] == 2 * dx[i];
    CHECK(acc, "avgpool backward does not accumulate");
    free(dx2), free(got), free(ref), free(num), free(c.x), free(c.u), free(x), free(u), free(y), free(dx);
}

static void test_avgpool(void)
{
    pool_case(2, 3, 7, 5, 2, 1); /* odd sizes: last row and column dropped */
    pool_case(1, 2, 6, 11, 3, 2);
    pool_case(1, 1, 4, 4, 4, 3); /* one window */
    pool_case(2, 2, 3, 5, 1, 4); /* identity */
    pool_case(3, 1, 5, 9, 5, 5); /* H == k */
}

static void test_avgpool_bad_input(void)
{
    float x[16] = {0}, y[16];
    CHECK(npred_avgpool2d_forward(y, x, 1, 1, 3, 4, 4) == NPRED_ERR_ARG, "H < k accepted");
    CHECK(strstr(npred_last_error(), "smaller than") != NULL, "message '%s'", npred_last_error());
    CHECK(npred_avgpool2d_forward(y, x, 1, 1, 4, 4, 0) == NPRED_ERR_ARG, "k = 0 accepted");
    CHECK(npred_avgpool2d_forward(y, x, 1, 0, 4, 4, 2) == NPRED_ERR_ARG, "C = 0 accepted");
    CHECK(npred_avgpool2d_backward(NULL, x, 1, 1, 4, 4, 2) == NPRED_ERR_ARG, "NULL dx accepted");
}

/* ---- concat ---- */

typedef struct {
    int n, B, HW;
    const int *cs;
    double **xs, *u;
} cat_ctx;

static double cat_loss(void *p)
{
    cat_ctx *c = p;
    int ct = 0;
    for (int i = 0; i < c->n; i++) ct += c->cs[i];
    double l = 0;
    for (int b = 0; b < c->B; b++) {
        int c0 = 0;
        for (int i = 0; i < c->n; i++) {
            for (int ch = 0; ch < c->cs[i]; ch++)
                for (int e = 0; e < c->HW; e++)
                    l += c->xs[i][((size_t)b * c->cs[i] + ch) * c->HW + e] *
                         c->u[((size_t)b * ct + c0 + ch) * c->HW + e];
            c0 += c->cs[i];
        }
    }
    return l;
}

static void test_concat(void)
{
    enum { B = 2, H = 3, W = 5, HW = H * W, NP = 3 };
    const int cs[NP] = {1, 3, 2};
    const int ct = 6;
    uint64_t st = 21;
    float *xs[NP], *dxs[NP], y[B * ct * HW], u[B * ct * HW];
    double *xd[NP];
    for (int i = 0; i < NP; i++) {
        size_t n = (size_t)B * cs[i] * HW;
        xs[i] = malloc(n * 4);
        dxs[i] = malloc(n * 4);
        gc_fill(xs[i], n, -1, 1, &st);
        for (size_t e = 0; e < n; e++) dxs[i][e] = 1.0f; /* accumulate onto 1 */
        xd[i] = gc_to_f64(xs[i], n);
    }
    gc_fill(u, B * ct * HW, -1, 1, &st);
    CHECK_OK(npred_concat2d_forward(y, (const float *const *)xs, cs, NP, B, H, W));
    /* y[b, c0 + ch] == xs[i][b, ch] exactly */
    int ok = 1;
    for (int b = 0; b < B; b++)
        for (int i = 0, c0 = 0; i < NP; c0 += cs[i], i++)
            for (int ch = 0; ch < cs[i]; ch++)
                for (int e = 0; e < HW; e++)
                    ok &= y[((size_t)b * ct + c0 + ch) * HW + e] == xs[i][((size_t)b * cs[i] + ch) * HW + e];
    CHECK(ok, "concat forward misplaces values");

    float *skip[NP] = {dxs[0], NULL, dxs[2]};
    CHECK_OK(npred_concat2d_backward(skip, u, cs, NP, B, H, W));
    CHECK_OK(npred_concat2d_backward((float *const *)dxs, u, cs, NP, B, H, W));
    cat_ctx c = {NP, B, HW, cs, xd, gc_to_f64(u, B * ct * HW)};
    for (int i = 0; i < NP; i++) {
        size_t n = (size_t)B * cs[i] * HW;
        double *num = malloc(n * sizeof *num);
        gc_fd(num, xd[i], n, 1e-3, cat_loss, &c);
        /* expected: 1 + (i skipped once ? 1 : 2) * dL/dx */
        float *got = malloc(n * 4);
        int times = i == 1 ? 1 : 2;
        for (size_t e = 0; e < n; e++) got[e] = (dxs[i][e] - 1.0f) / times;
        char what[48];
        snprintf(what, sizeof what, "concat: d piece %d", i);
        gc_check(what, got, num, n, 1e-6, 1e-7);
        free(num), free(got);
    }
    free(c.u);
    for (int i = 0; i < NP; i++) free(xs[i]), free(dxs[i]), free(xd[i]);
}

static void test_concat_bad_input(void)
{
    float a[4] = {0}, y[8];
    const float *xs[2] = {a, NULL};
    int cs[2] = {1, 1}, bad[2] = {1, 0};
    CHECK(npred_concat2d_forward(y, xs, cs, 2, 1, 2, 2) == NPRED_ERR_ARG, "NULL piece accepted");
    CHECK(strstr(npred_last_error(), "piece 1") != NULL, "message '%s'", npred_last_error());
    xs[1] = a;
    CHECK(npred_concat2d_forward(y, xs, bad, 2, 1, 2, 2) == NPRED_ERR_ARG, "0 channels accepted");
    CHECK(npred_concat2d_forward(y, xs, cs, 0, 1, 2, 2) == NPRED_ERR_ARG, "n = 0 accepted");
    CHECK(npred_concat2d_forward(y, xs, cs, 2, 1, 0, 2) == NPRED_ERR_ARG, "H = 0 accepted");
    CHECK(npred_concat2d_backward(NULL, y, cs, 2, 1, 2, 2) == NPRED_ERR_ARG, "NULL dxs accepted");
}

int main(void)
{
    RUN(test_linear);
    RUN(test_linear_null_grads);
    RUN(test_linear_bad_input);
    RUN(test_avgpool);
    RUN(test_avgpool_bad_input);
    RUN(test_concat);
    RUN(test_concat_bad_input);
    return th_summary();
}
