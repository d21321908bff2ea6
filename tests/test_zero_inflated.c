/* Zero-inflated losses (HEAD ZIGLoss / ZILLoss): the reference fixtures (fixed and
 * trainable thresholds), central finite differences of a double-precision reference
 * written here for both slabs and all four reductions, the fitted mean/variance
 * against a double formula, and bad input. B = batch, n = neurons. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "train/zero_inflated.h"

static npred_loss_reduction reduction_of(cJSON *args)
{
    int avg = cJSON_IsTrue(th_get(args, "avg", NULL)), pn = cJSON_IsTrue(th_get(args, "per_neuron", NULL));
    return pn ? (avg ? NPRED_LOSS_PER_NEURON_MEAN : NPRED_LOSS_PER_NEURON_SUM)
              : (avg ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM);
}

static void zi_case(const char *name, npred_zi_slab slab)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    const char *n1 = slab == NPRED_ZI_GAMMA ? "theta" : "mean";
    const char *n2 = slab == NPRED_ZI_GAMMA ? "k" : "variance";
    char f1[64], f2[64], g1[64], g2[64];
    snprintf(f1, sizeof f1, "%s.npy", n1);
    snprintf(f2, sizeof f2, "%s.npy", n2);
    snprintf(g1, sizeof g1, "grads/%s.npy", n1);
    snprintf(g2, sizeof g2, "grads/%s.npy", n2);
    npred_loss_reduction red = reduction_of(th_get(c.json, "args", NULL));
    int loc_trainable = th_get(c.json, "files", "grads", "loc", NULL) != NULL;
    npred_array sh;
    float *p1 = th_load_f32(&c, f1, &sh), *p2 = th_load_f32(&c, f2, NULL);
    float *loc = th_load_f32(&c, "loc.npy", NULL), *q = th_load_f32(&c, "q.npy", NULL);
    float *y = th_load_f32(&c, "target.npy", NULL), *up = th_load_f32(&c, "upstream.npy", NULL);
    if (p1 && p2 && loc && q && y && up && CHECK(sh.ndim == 2, "%s: 2-D inputs", name)) {
        int64_t B = sh.shape[0], n = sh.shape[1], N = B * n, m = npred_loss_size(red, n);
        float *loc_mask = malloc((size_t)N * sizeof(float)), *loc2 = malloc((size_t)N * sizeof(float));
        if (loc_trainable) {
            CHECK_OK(npred_loss_zi_clamp_loc(loc_mask, loc2, loc, y, B, n));
            th_compare_dims(&c, "forward", "loc_after_clamps.npy", loc2, TH_DIMS(B, n));
            /* the fixture's clamped entries really moved */
            CHECK(loc2[2 * n + 2] < loc[2 * n + 2] && loc2[4 * n + 3] < loc[4 * n + 3], "%s: clamps acted", name);
        } else {
            memcpy(loc_mask, loc, (size_t)N * sizeof(float));
            memcpy(loc2, loc, (size_t)N * sizeof(float));
        }
        double loss[64], dl[64], total = 0;
        float out[64];
        CHECK_OK(npred_loss_zi_forward(loss, slab, p1, p2, loc_mask, loc2, q, y, B, n, red));
        for (int64_t j = 0; j < m; j++) {
            out[j] = (float)loss[j];
            dl[j] = up[j];
            total += loss[j] * up[j];
        }
        th_compare_dims(&c, "forward", "output.npy", out, TH_DIMS(m));
        double want = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(total - want) <= 1e-5 + 1e-4 * fabs(want), "%s: loss %.9g, want %.9g", name, total, want);
        float *d1 = calloc((size_t)N, sizeof(float)), *d2 = calloc((size_t)N, sizeof(float));
        float *dq = calloc((size_t)N, sizeof(float)), *dloc = calloc((size_t)N, sizeof(float));
        CHECK_OK(npred_loss_zi_backward(d1, d2, dloc, dq, dl, slab, p1, p2, loc_mask, loc2, q, y, B, n, red));
        th_compare_dims(&c, "grads", g1, d1, TH_DIMS(B, n));
        th_compare_dims(&c, "grads", g2, d2, TH_DIMS(B, n));
        th_compare_dims(&c, "grads", "grads/q.npy", dq, TH_DIMS(B, n));
        if (loc_trainable) th_compare_dims(&c, "grads", "grads/loc.npy", dloc, TH_DIMS(B, n));
        free(d1);
        free(d2);
        free(dq);
        free(dloc);
        free(loc_mask);
        free(loc2);
    }
    free(p1);
    free(p2);
    free(loc);
    free(q);
    free(y);
    free(up);
    th_case_close(&c);
}

static void test_zig_loss(void) { zi_case("zig_loss", NPRED_ZI_GAMMA); }
static void test_zig_loss_avg_per_neuron(void) { zi_case("zig_loss_avg_per_neuron", NPRED_ZI_GAMMA); }
static void test_zil_loss(void) { zi_case("zil_loss", NPRED_ZI_LOGNORMAL); }
static void test_zil_loss_avg(void) { zi_case("zil_loss_avg", NPRED_ZI_LOGNORMAL); }

/* ---- double reference (fixed loc: the masks use the same loc) ---- */

enum { RB = 6, RN = 4, RNN = RB * RN };
typedef struct {
    npred_zi_slab slab;
    npred_loss_reduction red;
    double p1[RNN], p2[RNN], loc[RNN], q[RNN], y[RNN], up[RN];
} ref_ctx;

static double ref_loss(void *vctx)
{
    ref_ctx *r = vctx;
    double tot = 0;
    for (int j = 0; j < RN; j++) {
        double sp = 0, sl = 0;
        int cz = 0, cn = 0;
        for (int b = 0; b < RB; b++) {
            int i = b * RN + j;
            if (r->y[i] <= r->loc[i]) {
                sp += log(1 - r->q[i]) - log(r->loc[i]);
                cz++;
                continue;
            }
            double d = r->y[i] - r->loc[i], ll;
            if (r->slab == NPRED_ZI_GAMMA) {
                double th = r->p1[i], k = r->p2[i];
                ll = (k - 1) * log(d) - d / th - k * log(th) - lgamma(k);
            } else {
                double x = log(d), mu = r->p1[i], s = sqrt(r->p2[i]);
                ll = -0.5 * ((x - mu) / s) * ((x - mu) / s) - log(s) - 0.5 * log(2 * M_PI) - x;
            }
            sl += log(r->q[i]) + ll;
            cn++;
        }
        int avg = r->red == NPRED_LOSS_MEAN || r->red == NPRED_LOSS_PER_NEURON_MEAN;
        if (avg) {
            if (cz && sp != 0) sp /= cz;
            if (cn && sl != 0) sl /= cn;
        }
        double v = -(sp + sl);
        switch (r->red) {
        case NPRED_LOSS_SUM: tot += v * r->up[0]; break;
        case NPRED_LOSS_MEAN: tot += v * r->up[0] / RN; break;
        default: tot += v * r->up[j]; break;
        }
    }
    return tot;
}

static void gradcheck(npred_zi_slab slab, npred_loss_reduction red, uint64_t seed)
{
    ref_ctx r = {.slab = slab, .red = red};
    float p1[RNN], p2[RNN], loc[RNN], q[RNN], y[RNN];
    for (int i = 0; i < RNN; i++) {
        p1[i] = slab == NPRED_ZI_GAMMA ? (float)(1.0 + 0.5 * th_rand(&seed)) : (float)(0.4 * th_rand(&seed));
        p2[i] = (float)(1.6 + 0.5 * th_rand(&seed));
        loc[i] = (float)(0.2 + 0.05 * th_rand(&seed));
        q[i] = (float)(0.5 + 0.3 * th_rand(&seed));
        /* zeros, a value just under loc and responses well above it (masks stay put under FD) */
        y[i] = (i % 5 == 0) ? 0.0f : (i % 7 == 3) ? 0.1f : (float)(1.0 + 0.8 * th_rand(&seed));
    }
    for (int i = 0; i < RNN; i++) {
        r.p1[i] = p1[i]; r.p2[i] = p2[i]; r.loc[i] = loc[i]; r.q[i] = q[i]; r.y[i] = y[i];
    }
    int64_t m = npred_loss_size(red, RN);
    for (int j = 0; j < RN; j++) r.up[j] = 0.5 + th_rand(&seed);
    double loss[RN], got = 0;
    CHECK_OK(npred_loss_zi_forward(loss, slab, p1, p2, loc, loc, q, y, RB, RN, red));
    for (int64_t j = 0; j < m; j++) got += loss[j] * r.up[j];
    double want = ref_loss(&r);
    CHECK(fabs(got - want) <= 1e-9 * (1 + fabs(want)), "slab %d red %d: forward %.12g vs %.12g", (int)slab,
          (int)red, got, want);
    float d1[RNN], d2[RNN], dl[RNN], dq[RNN];
    for (int i = 0; i < RNN; i++) d1[i] = d2[i] = dl[i] = dq[i] = 0.5f; /* accumulates onto these */
    CHECK_OK(npred_loss_zi_backward(d1, d2, dl, dq, r.up, slab, p1, p2, loc, loc, q, y, RB, RN, red));
    double g[RNN];
    float *got_g[4] = {d1, d2, dl, dq};
    double *arr[4] = {r.p1, r.p2, r.loc, r.q};
    const char *names[4] = {"dp1", "dp2", "dloc", "dq"};
    for (int a = 0; a < 4; a++) {
        gc_fd(g, arr[a], RNN, 1e-6, ref_loss, &r);
        for (int i = 0; i < RNN; i++) g[i] += 0.5;
        char what[64];
        snprintf(what, sizeof what, "slab %d red %d %s", (int)slab, (int)red, names[a]);
        gc_check(what, got_g[a], g, RNN, 1e-4, 1e-5);
    }
}

static void test_gradcheck(void)
{
    const npred_loss_reduction reds[4] = {NPRED_LOSS_SUM, NPRED_LOSS_MEAN, NPRED_LOSS_PER_NEURON_SUM,
                                          NPRED_LOSS_PER_NEURON_MEAN};
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 4; k++) gradcheck((npred_zi_slab)s, reds[k], 17 + 5 * (uint64_t)k + 101 * (uint64_t)s);
}

/* find_nonzero_min: a column whose responses are all at or below loc takes the batch-wide
 * largest response above loc; clamps into [0, max target] first. */
static void test_clamp_hand_values(void)
{
    /* B = 2, n = 2 */
    const float y[4] = {0.0f, 2.0f, 0.5f, 4.0f};
    const float loc[4] = {1.0f, -0.3f, 0.7f, 3.0f};
    float lm[4], l2[4];
    CHECK_OK(npred_loss_zi_clamp_loc(lm, l2, loc, y, 2, 2));
    /* first clamp: column 0 max 0.5, column 1 max 4 */
    CHECK(lm[0] == 0.5f && lm[1] == 0.0f && lm[2] == 0.5f && lm[3] == 3.0f, "first clamp %g %g %g %g", lm[0],
          lm[1], lm[2], lm[3]);
    /* above-loc values: column 0 none (-> global max 4), column 1 {2, 4}: min 2 */
    CHECK(l2[0] == 0.5f && l2[2] == 0.5f, "column 0 %g %g", l2[0], l2[2]);
    CHECK(l2[1] == 0.0f && l2[3] == 2.0f * 0.999f, "column 1 %g %g", l2[1], l2[3]);
}

static void test_fitted(void)
{
    const float p1[3] = {0.5f, 1.5f, -0.2f}, p2[3] = {2.0f, 1.2f, 0.3f};
    const float loc[3] = {0.1f, 0.05f, 0.2f}, q[3] = {0.3f, 0.9f, 0.6f};
    float mean[3], var[3];
    for (int s = 0; s < 2; s++) {
        npred_zi_fitted(mean, var, (npred_zi_slab)s, p1, p2, loc, q, 3);
        for (int i = 0; i < 3; i++) {
            double th = p1[i], k = p2[i], l = loc[i], qq = q[i], m, v;
            if (s == NPRED_ZI_GAMMA) {
                m = (1 - qq) * 0.5 * l + qq * (k * th + l);
                v = qq * k * th * th + (1 - qq) * l * l / 12 + qq * (1 - qq) * pow(k * th + l / 2, 2);
            } else {
                double mu = p1[i], s2 = p2[i], e = exp(mu + s2 / 2);
                m = (1 - qq) * l / 2 + qq * (e + l);
                v = (1 - qq) * l * l / 12 + qq * (exp(s2) - 1) * exp(2 * mu + s2) + qq * (1 - qq) * pow(l / 2 - e - l, 2);
            }
            CHECK(fabs(mean[i] - m) <= 1e-6 * (1 + fabs(m)), "slab %d mean[%d] %g vs %g", s, i, mean[i], m);
            CHECK(fabs(var[i] - v) <= 1e-6 * (1 + fabs(v)), "slab %d var[%d] %g vs %g", s, i, var[i], v);
        }
    }
}

static void test_bad_input(void)
{
    const float a[4] = {1, 1, 1, 1}, zero_q[4] = {0, 0, 0, 0}, y[4] = {2, 2, 2, 2};
    double loss[2];
    CHECK(npred_loss_zi_forward(loss, NPRED_ZI_GAMMA, a, a, a, a, a, NULL, 2, 2, NPRED_LOSS_SUM) == NPRED_ERR_ARG,
          "NULL q");
    CHECK(npred_loss_zi_forward(loss, NPRED_ZI_GAMMA, a, a, a, a, a, y, 0, 2, NPRED_LOSS_SUM) == NPRED_ERR_SHAPE,
          "empty batch");
    /* q = 0 with responses above loc: log q = -inf, the reference asserts */
    const float loc[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    CHECK(npred_loss_zi_forward(loss, NPRED_ZI_GAMMA, a, a, loc, loc, zero_q, y, 2, 2, NPRED_LOSS_SUM) ==
              NPRED_ERR_VALUE,
          "non-finite loss is an error");
    CHECK(strstr(npred_last_error(), "not finite") != NULL, "message: %s", npred_last_error());
}

int main(void)
{
    RUN(test_zig_loss);
    RUN(test_zig_loss_avg_per_neuron);
    RUN(test_zil_loss);
    RUN(test_zil_loss_avg);
    RUN(test_gradcheck);
    RUN(test_clamp_hand_values);
    RUN(test_fitted);
    RUN(test_bad_input);
    return th_summary();
}
