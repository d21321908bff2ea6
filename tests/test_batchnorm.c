/* BatchNorm2d kernels: PyTorch fixtures, finite differences of a double reference,
 * running-stat updates, accuracy with a large mean, thread independence, bad input. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "kernels/batchnorm.h"

/* ---- double-precision reference ---- */

typedef struct {
    int B, C, H, W, training;
    double eps, momentum;
    double *x, *gamma, *beta; /* gamma/beta NULL: not affine */
    double *rm, *rv;          /* running stats (eval: used; train: updated by bn_ref_stats) */
    double *u;                /* upstream: loss = sum(y * u) */
    double *y;                /* scratch (B, C, H, W) */
} bn_ref;

static void bn_ref_forward(const bn_ref *r)
{
    size_t HW = (size_t)r->H * r->W, n = (size_t)r->B * HW;
    for (int c = 0; c < r->C; c++) {
        double mean, var;
        if (r->training) {
            double s = 0, ss = 0;
            for (int b = 0; b < r->B; b++)
                for (size_t i = 0; i < HW; i++) s += r->x[((size_t)b * r->C + c) * HW + i];
            mean = s / n;
            for (int b = 0; b < r->B; b++)
                for (size_t i = 0; i < HW; i++) {
                    double d = r->x[((size_t)b * r->C + c) * HW + i] - mean;
                    ss += d * d;
                }
            var = ss / n;
        } else {
            mean = r->rm[c];
            var = r->rv[c];
        }
        double g = r->gamma ? r->gamma[c] : 1, bt = r->beta ? r->beta[c] : 0;
        for (int b = 0; b < r->B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t k = ((size_t)b * r->C + c) * HW + i;
                r->y[k] = g * (r->x[k] - mean) / sqrt(var + r->eps) + bt;
            }
    }
}

/* Training: the running stats after one update. */
static void bn_ref_stats(const bn_ref *r, double *rm_new, double *rv_new)
{
    size_t HW = (size_t)r->H * r->W, n = (size_t)r->B * HW;
    for (int c = 0; c < r->C; c++) {
        double s = 0, ss = 0;
        for (int b = 0; b < r->B; b++)
            for (size_t i = 0; i < HW; i++) s += r->x[((size_t)b * r->C + c) * HW + i];
        double mean = s / n;
        for (int b = 0; b < r->B; b++)
            for (size_t i = 0; i < HW; i++) {
                double d = r->x[((size_t)b * r->C + c) * HW + i] - mean;
                ss += d * d;
            }
        rm_new[c] = (1 - r->momentum) * r->rm[c] + r->momentum * mean;
        rv_new[c] = (1 - r->momentum) * r->rv[c] + r->momentum * ss / (n - 1);
    }
}

static double bn_ref_loss(void *ctx)
{
    bn_ref *r = ctx;
    bn_ref_forward(r);
    size_t N = (size_t)r->B * r->C * r->H * r->W;
    double l = 0;
    for (size_t i = 0; i < N; i++) l += r->y[i] * r->u[i];
    return l;
}

/* ---- fixtures ---- */

static const char *fixture_file(const th_case *c, const char *group, const char *key)
{
    cJSON *j = group ? th_get(c->json, "files", group, key, NULL) : th_get(c->json, "files", key, NULL);
    CHECK(cJSON_IsString(j), "%s: case.json lacks files.%s%s%s", c->name, group ? group : "",
          group ? "." : "", key);
    return cJSON_IsString(j) ? j->valuestring : "missing";
}

static void run_fixture(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *mode = th_get(c.json, "mode", NULL);
    int training = cJSON_IsString(mode) && strcmp(mode->valuestring, "train") == 0;
    double momentum = th_num(c.json, NAN, "args", "momentum", NULL);
    double eps = th_num(c.json, NAN, "args", "eps", NULL);
    CHECK(isfinite(momentum) && isfinite(eps), "%s: args.momentum/eps missing", name);

    npred_array sh;
    float *x = th_load_f32(&c, fixture_file(&c, NULL, "input"), &sh);
    float *u = th_load_f32(&c, fixture_file(&c, NULL, "upstream"), NULL);
    float *w = th_load_f32(&c, fixture_file(&c, "params", "weight"), NULL);
    float *bias = th_load_f32(&c, fixture_file(&c, "params", "bias"), NULL);
    float *rm = th_load_f32(&c, fixture_file(&c, "params", "running_mean"), NULL);
    float *rv = th_load_f32(&c, fixture_file(&c, "params", "running_var"), NULL);
    int64_t *nbt = th_load_i64(&c, fixture_file(&c, "params", "num_batches_tracked"), NULL);
    if (!x || !u || !w || !bias || !rm || !rv || !nbt || !CHECK(sh.ndim == 4, "input ndim %d", sh.ndim))
        goto out;
    int B = (int)sh.shape[0], C = (int)sh.shape[1], H = (int)sh.shape[2], W = (int)sh.shape[3];
    size_t N = sh.count;
    float *y = calloc(N, sizeof *y), *dx = calloc(N, sizeof *dx);
    float *dg = calloc(C, sizeof *dg), *db = calloc(C, sizeof *db);
    double *sm = calloc(C, sizeof *sm), *si = calloc(C, sizeof *si);
    int64_t nbt0 = *nbt;

    CHECK_OK(npred_batchnorm2d_forward(y, sm, si, rm, rv, nbt, x, w, bias, B, C, H, W, training,
                                       momentum, eps));
    th_compare_dims(&c, "forward", fixture_file(&c, NULL, "output"), y, TH_DIMS(B, C, H, W));
    double loss = 0;
    for (size_t i = 0; i < N; i++) loss += (double)y[i] * u[i];
    double ref_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
    CHECK(fabs(loss - ref_loss) <= 1e-5 + 1e-4 * fabs(ref_loss), "loss %.9g, want %.9g", loss, ref_loss);
    if (training) {
        th_compare_dims(&c, "forward", fixture_file(&c, "buffers_after", "running_mean"), rm, TH_DIMS(C));
        th_compare_dims(&c, "forward", fixture_file(&c, "buffers_after", "running_var"), rv, TH_DIMS(C));
        int64_t *nbt_after = th_load_i64(&c, fixture_file(&c, "buffers_after", "num_batches_tracked"), NULL);
        if (nbt_after)
            CHECK(*nbt == *nbt_after && *nbt == nbt0 + 1, "num_batches_tracked %lld, want %lld (was %lld)",
                  (long long)*nbt, (long long)*nbt_after, (long long)nbt0);
        free(nbt_after);
    } else {
        CHECK(*nbt == nbt0, "eval changed num_batches_tracked to %lld", (long long)*nbt);
        th_compare_dims(&c, "forward", fixture_file(&c, "params", "running_mean"), rm, TH_DIMS(C));
        th_compare_dims(&c, "forward", fixture_file(&c, "params", "running_var"), rv, TH_DIMS(C));
    }

    CHECK_OK(npred_batchnorm2d_backward(dx, dg, db, u, x, w, sm, si, B, C, H, W, training));
    th_compare_dims(&c, "grads", fixture_file(&c, "grads", "input"), dx, TH_DIMS(B, C, H, W));
    th_compare_dims(&c, "grads", fixture_file(&c, "grads", "weight"), dg, TH_DIMS(C));
    th_compare_dims(&c, "grads", fixture_file(&c, "grads", "bias"), db, TH_DIMS(C));
    free(y), free(dx), free(dg), free(db), free(sm), free(si);
out:
    free(x), free(u), free(w), free(bias), free(rm), free(rv), free(nbt);
    th_case_close(&c);
}

static void test_fixture_eval(void) { run_fixture("batchnorm2d_eval"); }
static void test_fixture_train_m01(void) { run_fixture("batchnorm2d_train_m01"); }
static void test_fixture_train_m09(void) { run_fixture("batchnorm2d_train_m09"); }

/* ---- finite differences ---- */

/* One configuration: forward vs the double reference (output and running stats), then
 * every gradient vs central differences of the reference loss. */
static void fd_case(int B, int C, int H, int W, int training, int affine, double offset, double spread,
                    uint64_t seed)
{
    size_t N = (size_t)B * C * H * W;
    uint64_t st = seed;
    float *x = malloc(N * sizeof *x), *u = malloc(N * sizeof *u), *y = malloc(N * sizeof *y);
    float *g = malloc(C * sizeof *g), *bt = malloc(C * sizeof *bt);
    float *rm = malloc(C * sizeof *rm), *rv = malloc(C * sizeof *rv);
    for (int c = 0; c < C; c++) {
        g[c] = (float)(0.5 + 0.5 * (th_rand(&st) + 1)) * (c % 2 ? -1.f : 1.f);
        bt[c] = (float)th_rand(&st);
        rm[c] = (float)(offset + spread * th_rand(&st));
        rv[c] = (float)(spread * spread * (0.5 + 0.75 * (th_rand(&st) + 1)));
    }
    for (size_t i = 0; i < N; i++) {
        int c = (int)((i / ((size_t)H * W)) % C);
        x[i] = (float)(offset + 0.1 * c + spread * th_rand(&st));
    }
    gc_fill(u, N, -1, 1, &st);

    bn_ref r = {B, C, H, W, training, 1e-5, 0.3, gc_to_f64(x, N), affine ? gc_to_f64(g, C) : NULL,
                affine ? gc_to_f64(bt, C) : NULL, gc_to_f64(rm, C), gc_to_f64(rv, C), gc_to_f64(u, N),
                malloc(N * sizeof(double))};
    double *rm_new = malloc(C * sizeof *rm_new), *rv_new = malloc(C * sizeof *rv_new);
    if (training) bn_ref_stats(&r, rm_new, rv_new);

    double *sm = malloc(C * sizeof *sm), *si = malloc(C * sizeof *si);
    int64_t nbt = 7;
    char what[160];
    snprintf(what, sizeof what, "(%d,%d,%d,%d) %s %s offset %g", B, C, H, W, training ? "train" : "eval",
             affine ? "affine" : "plain", offset);
    CHECK_OK(npred_batchnorm2d_forward(y, sm, si, rm, rv, &nbt, x, affine ? g : NULL, affine ? bt : NULL, B,
                                       C, H, W, training, 0.3, 1e-5));
    bn_ref_forward(&r);
    double *yd = gc_to_f64(y, N);
    char w2[256];
    snprintf(w2, sizeof w2, "%s: y", what);
    th_close_f64(w2, yd, r.y, N, 1e-6, 1e-6);
    if (training) {
        double *a = gc_to_f64(rm, C), *b = gc_to_f64(rv, C);
        snprintf(w2, sizeof w2, "%s: running_mean", what);
        th_close_f64(w2, a, rm_new, C, 1e-6, 1e-7);
        snprintf(w2, sizeof w2, "%s: running_var", what);
        th_close_f64(w2, b, rv_new, C, 1e-6, 1e-7 * spread * spread);
        free(a), free(b);
        CHECK(nbt == 8, "num_batches_tracked %lld, want 8", (long long)nbt);
    } else {
        CHECK(nbt == 7, "eval changed num_batches_tracked to %lld", (long long)nbt);
        for (int c = 0; c < C; c++)
            CHECK(rm[c] == (float)r.rm[c] && rv[c] == (float)r.rv[c], "eval changed running stats");
    }

    float *dx = calloc(N, sizeof *dx), *dg = calloc(C, sizeof *dg), *db = calloc(C, sizeof *db);
    CHECK_OK(npred_batchnorm2d_backward(dx, affine ? dg : NULL, affine ? db : NULL, u, x, affine ? g : NULL,
                                        sm, si, B, C, H, W, training));
    double *num = malloc(N * sizeof *num);
    /* x varies on the scale `spread`; dx is about |gamma|/spread */
    gc_fd(num, r.x, N, 1e-5 * spread, bn_ref_loss, &r);
    snprintf(w2, sizeof w2, "%s: dx", what);
    gc_check(w2, dx, num, N, 1e-4, 1e-5 / spread);
    if (affine) {
        gc_fd(num, r.gamma, C, 1e-6, bn_ref_loss, &r);
        snprintf(w2, sizeof w2, "%s: dgamma", what);
        gc_check(w2, dg, num, C, 1e-4, 1e-5);
        gc_fd(num, r.beta, C, 1e-6, bn_ref_loss, &r);
        snprintf(w2, sizeof w2, "%s: dbeta", what);
        gc_check(w2, db, num, C, 1e-4, 1e-5);
    } else {
        for (int c = 0; c < C; c++) CHECK(dg[c] == 0 && db[c] == 0, "NULL dgamma/dbeta were written");
    }
    free(num), free(dx), free(dg), free(db), free(sm), free(si), free(yd), free(rm_new), free(rv_new);
    free(r.x), free(r.gamma), free(r.beta), free(r.rm), free(r.rv), free(r.u), free(r.y);
    free(x), free(u), free(y), free(g), free(bt), free(rm), free(rv);
}

static void test_fd_train(void)
{
    fd_case(3, 2, 3, 5, 1, 1, 0.0, 1.0, 1);
    fd_case(1, 3, 1, 2, 1, 1, 0.0, 1.0, 2); /* n = 2, the smallest allowed */
    fd_case(2, 1, 7, 1, 1, 0, 0.0, 1.0, 3); /* not affine */
    fd_case(5, 3, 1, 1, 1, 1, 0.0, 3.0, 4); /* BatchNorm1d-like: H = W = 1 */
}

static void test_fd_eval(void)
{
    fd_case(3, 2, 3, 5, 0, 1, 0.0, 1.0, 5);
    fd_case(2, 3, 1, 3, 0, 0, 0.0, 1.0, 6);
    fd_case(1, 1, 1, 1, 0, 1, 0.0, 1.0, 7); /* a single value is fine in eval */
}

/* A channel with mean 1000 and spread 0.01: float statistics would lose ~3 digits. */
static void test_large_mean(void)
{
    fd_case(2, 2, 3, 3, 1, 1, 1000.0, 0.01, 8);
    fd_case(2, 2, 3, 3, 0, 1, 1000.0, 0.01, 9);
}

static void test_accumulate(void)
{
    enum { B = 2, C = 3, H = 2, W = 3, N = B * C * H * W };
    uint64_t st = 11;
    float x[N], u[N], y[N], g[C], bt[C], dx1[N] = {0}, dx2[N], dg1[C] = {0}, dg2[C], db1[C] = {0}, db2[C];
    double sm[C], si[C];
    gc_fill(x, N, -2, 2, &st);
    gc_fill(u, N, -1, 1, &st);
    gc_fill(g, C, 0.5, 1.5, &st);
    gc_fill(bt, C, -1, 1, &st);
    CHECK_OK(npred_batchnorm2d_forward(y, sm, si, NULL, NULL, NULL, x, g, bt, B, C, H, W, 1, 0.1, 1e-5));
    CHECK_OK(npred_batchnorm2d_backward(dx1, dg1, db1, u, x, g, sm, si, B, C, H, W, 1));
    for (int i = 0; i < N; i++) dx2[i] = 1.0f;
    for (int i = 0; i < C; i++) dg2[i] = db2[i] = -2.0f;
    CHECK_OK(npred_batchnorm2d_backward(dx2, dg2, db2, u, x, g, sm, si, B, C, H, W, 1));
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= dx2[i] == dx1[i] + 1.0f;
    for (int i = 0; i < C; i++) ok &= dg2[i] == dg1[i] - 2.0f && db2[i] == db1[i] - 2.0f;
    CHECK(ok, "backward does not accumulate");
}

/* Same output, bit for bit, on 1 and 2 threads. */
static void test_threads(void)
{
    enum { B = 4, C = 7, H = 9, W = 11, N = B * C * H * W };
    uint64_t st = 12;
    static float x[N], u[N], y1[N], y2[N], dx1[N], dx2[N];
    float g[C], bt[C], rm1[C] = {0}, rv1[C], rm2[C] = {0}, rv2[C], dg1[C] = {0}, dg2[C] = {0};
    double sm[C], si[C];
    gc_fill(x, N, -2, 2, &st);
    gc_fill(u, N, -1, 1, &st);
    gc_fill(g, C, 0.5, 1.5, &st);
    gc_fill(bt, C, -1, 1, &st);
    for (int c = 0; c < C; c++) rv1[c] = rv2[c] = 1;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    npred_batchnorm2d_forward(y1, sm, si, rm1, rv1, NULL, x, g, bt, B, C, H, W, 1, 0.9, 1e-5);
    npred_batchnorm2d_backward(dx1, dg1, NULL, u, x, g, sm, si, B, C, H, W, 1);
    omp_set_num_threads(nt > 1 ? nt : 2);
    npred_batchnorm2d_forward(y2, sm, si, rm2, rv2, NULL, x, g, bt, B, C, H, W, 1, 0.9, 1e-5);
    npred_batchnorm2d_backward(dx2, dg2, NULL, u, x, g, sm, si, B, C, H, W, 1);
    omp_set_num_threads(nt);
    CHECK(!memcmp(y1, y2, sizeof y1) && !memcmp(dx1, dx2, sizeof dx1) && !memcmp(dg1, dg2, sizeof dg1) &&
              !memcmp(rm1, rm2, sizeof rm1) && !memcmp(rv1, rv2, sizeof rv1),
          "results differ between 1 and %d threads", nt > 1 ? nt : 2);
}

static void expect_arg_error(npred_status s, const char *what)
{
    CHECK(s == NPRED_ERR_ARG, "%s: got %s, want arg error", what, npred_status_str(s));
    CHECK(strstr(npred_last_error(), "batchnorm2d") != NULL, "%s: message '%s' does not name the op", what,
          npred_last_error());
}

static void test_bad_input(void)
{
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6], rm[3] = {0}, rv[3] = {1, 1, 1}, dx[6];
    double sm[3], si[3];
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, x, NULL, NULL, 1, 3, 1, 1, 1, 0.1, 1e-5),
                     "training with one value per channel");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, NULL, NULL, NULL, x, NULL, NULL, 1, 3, 1, 2, 0, 0.1, 1e-5),
                     "eval without running stats");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, NULL, NULL, x, NULL, NULL, 2, 3, 1, 1, 1, 0.1, 1e-5),
                     "running_mean without running_var");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, x, NULL, NULL, 2, 0, 1, 1, 1, 0.1, 1e-5),
                     "zero channels");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, x, NULL, NULL, 2, 3, 1, 1, 1, 0.1, 0.0),
                     "eps 0");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, x, NULL, NULL, 2, 3, 1, 1, 1, NAN, 1e-5),
                     "momentum NaN");
    expect_arg_error(npred_batchnorm2d_forward(y, sm, si, rm, rv, NULL, NULL, NULL, NULL, 2, 3, 1, 1, 1, 0.1, 1e-5),
                     "NULL x");
    expect_arg_error(npred_batchnorm2d_backward(dx, NULL, NULL, NULL, x, NULL, sm, si, 2, 3, 1, 1, 1), "NULL dy");
    expect_arg_error(npred_batchnorm2d_backward(dx, NULL, NULL, x, x, NULL, sm, si, 2, 3, -1, 1, 1), "H -1");
    CHECK(rm[0] == 0 && rv[0] == 1, "a failed call changed the running stats");
}

int main(void)
{
    RUN(test_fixture_eval);
    RUN(test_fixture_train_m01);
    RUN(test_fixture_train_m09);
    RUN(test_fd_train);
    RUN(test_fd_eval);
    RUN(test_large_mean);
    RUN(test_accumulate);
    RUN(test_threads);
    RUN(test_bad_input);
    return th_summary();
}
