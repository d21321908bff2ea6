/* Metrics against the float64 numpy fixtures `metrics` (5 images x 3 repeats) and
 * `metrics_unequal_repeats` (3/3/2/2/3 repeats), plus hand-made edge cases.
 * T = trials, N = neurons. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "npred/metrics.h"

static void compare_f64(th_case *c, const char *rel, const double *got, size_t n)
{
    double rtol, atol;
    th_tol(c, "forward", rel, &rtol, &atol);
    npred_array sh;
    double *want = th_load_f64(c, rel, &sh);
    if (!want) return;
    if (CHECK(sh.count == n, "%s: %zu values, fixture has %zu", rel, n, sh.count))
        th_close_f64(rel, got, want, n, rtol, atol);
    free(want);
}

static void compare_scalar(th_case *c, const char *key, double got)
{
    double rtol, atol;
    th_tol(c, "forward", key, &rtol, &atol);
    double want = th_num(c->json, NAN, "scalars", key, NULL);
    CHECK(fabs(got - want) <= atol + rtol * fabs(want), "%s: %.15g, want %.15g", key, got, want);
}

/* insertion argsort of n int64 keys (small n) */
static void argsort(int64_t *idx, const int64_t *key, int64_t n)
{
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    for (int64_t i = 1; i < n; i++)
        for (int64_t k = i; k > 0 && key[idx[k - 1]] > key[idx[k]]; k--) {
            int64_t t = idx[k];
            idx[k] = idx[k - 1];
            idx[k - 1] = t;
        }
}

static void metrics_case(const char *name, int has_explainable)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_array sh;
    float *resp = th_load_f32(&c, "responses.npy", &sh);
    float *pred = th_load_f32(&c, "predictions.npy", NULL);
    int64_t *img = th_load_i64(&c, "image_ids.npy", NULL);
    int64_t *tri = th_load_i64(&c, "trial_idx.npy", NULL);
    int64_t *nid = th_load_i64(&c, "neuron_ids.npy", NULL);
    if (!resp || !pred || !img || !tri || !nid || !CHECK(sh.ndim == 2, "responses not 2-D")) goto out;
    const int64_t T = sh.shape[0], N = sh.shape[1];
    double *r = calloc((size_t)N, sizeof(double)), *fev = calloc((size_t)N, sizeof(double)),
           *feve = calloc((size_t)N, sizeof(double)), *kept = calloc((size_t)N, sizeof(double));
    npred_metrics_repeats g;
    CHECK_OK(npred_metrics_repeats_init(&g, img, T));

    CHECK_OK(npred_metrics_corr(r, resp, pred, T, N, NPRED_METRICS_CORR_EPS, 1));
    compare_f64(&c, "results/corr_axis0.npy", r, (size_t)N);
    compare_scalar(&c, "corr_axis0_mean", npred_metrics_mean(r, N));

    CHECK_OK(npred_metrics_corr_to_average(r, resp, pred, &g, N, NPRED_METRICS_CORR_EPS));
    compare_f64(&c, "results/corr_to_average.npy", r, (size_t)N);

    CHECK_OK(npred_metrics_fev(fev, feve, resp, pred, &g, N));
    compare_f64(&c, "results/fev.npy", fev, (size_t)N);
    compare_f64(&c, "results/feve_all.npy", feve, (size_t)N);
    int64_t *mask = th_load_i64(&c, "results/feve_mask_fev_ge_0.15.npy", NULL);
    for (int64_t j = 0; mask && j < N; j++)
        CHECK((fev[j] >= NPRED_METRICS_FEV_THRESHOLD) == (mask[j] != 0), "fev mask of neuron %lld", (long long)j);
    free(mask);
    int64_t nk = 0;
    double fm = npred_metrics_feve_thresholded(fev, feve, N, NPRED_METRICS_FEV_THRESHOLD, &nk, kept);
    compare_scalar(&c, "feve_mean_thresholded", fm);
    CHECK(nk == N - 1, "%lld neurons kept, the case has one below the threshold", (long long)nk);

    CHECK_OK(npred_metrics_oracle_jackknife(r, resp, &g, N));
    compare_f64(&c, "results/oracle_corr_jackknife.npy", r, (size_t)N);
    CHECK_OK(npred_metrics_oracle_conservative(r, resp, &g, N));
    compare_f64(&c, "results/oracle_corr_conservative.npy", r, (size_t)N);
    if (has_explainable) {
        CHECK_OK(npred_metrics_explainable_var(r, resp, &g, N, NPRED_METRICS_EXPLAINABLE_EPS));
        compare_f64(&c, "results/explainable_var.npy", r, (size_t)N);
    } else {
        CHECK(npred_metrics_explainable_var(r, resp, &g, N, NPRED_METRICS_EXPLAINABLE_EPS) == NPRED_ERR_SHAPE,
              "explainable_var refuses unequal repeats");
    }

    /* sensorium Metrics: trials sorted by trial_idx, neurons by neuron_id */
    int64_t *to = malloc((size_t)T * sizeof(int64_t)), *no = malloc((size_t)N * sizeof(int64_t));
    argsort(to, tri, T);
    argsort(no, nid, N);
    float *sr = malloc((size_t)(T * N) * sizeof(float)), *sp = malloc((size_t)(T * N) * sizeof(float));
    int64_t *simg = malloc((size_t)T * sizeof(int64_t));
    for (int64_t t = 0; t < T; t++) {
        simg[t] = img[to[t]];
        for (int64_t j = 0; j < N; j++) {
            sr[t * N + j] = resp[to[t] * N + no[j]];
            sp[t * N + j] = pred[to[t] * N + no[j]];
        }
    }
    npred_metrics_repeats sg;
    CHECK_OK(npred_metrics_repeats_init(&sg, simg, T));
    CHECK_OK(npred_metrics_corr(r, sp, sr, T, N, NPRED_METRICS_CORR_EPS, 0));
    compare_f64(&c, "results/Metrics.correlation_to_single_trials.npy", r, (size_t)N);
    compare_scalar(&c, "Metrics.summary.single_trial_correlation", npred_metrics_mean(r, N));
    CHECK_OK(npred_metrics_corr_to_average(r, sr, sp, &sg, N, NPRED_METRICS_CORR_EPS));
    compare_f64(&c, "results/Metrics.correlation_to_mean_across_repeats.npy", r, (size_t)N);
    compare_scalar(&c, "Metrics.summary.correlation_to_average", npred_metrics_mean(r, N));
    CHECK_OK(npred_metrics_fev(fev, feve, sr, sp, &sg, N));
    fm = npred_metrics_feve_thresholded(fev, feve, N, NPRED_METRICS_FEV_THRESHOLD, &nk, kept);
    compare_f64(&c, "results/Metrics.feve_thresholded.npy", kept, (size_t)nk);
    compare_scalar(&c, "Metrics.summary.FEVE", fm);

    npred_metrics_repeats_free(&sg);
    npred_metrics_repeats_free(&g);
    free(to);
    free(no);
    free(sr);
    free(sp);
    free(simg);
    free(r);
    free(fev);
    free(feve);
    free(kept);
out:
    free(resp);
    free(pred);
    free(img);
    free(tri);
    free(nid);
    th_case_close(&c);
}

static void test_metrics_fixture(void) { metrics_case("metrics", 1); }
static void test_metrics_unequal_repeats_fixture(void) { metrics_case("metrics_unequal_repeats", 0); }

static void test_repeats_grouping(void)
{
    const int64_t ids[7] = {42, 7, 42, 8, 7, 42, 100};
    npred_metrics_repeats g;
    if (!CHECK_OK(npred_metrics_repeats_init(&g, ids, 7))) return;
    const int64_t want_ids[4] = {7, 8, 42, 100}, want_off[5] = {0, 2, 3, 6, 7},
                  want_trials[7] = {1, 4, 3, 0, 2, 5, 6};
    CHECK(g.n_images == 4 && g.n_trials == 7, "%lld images", (long long)g.n_images);
    for (int i = 0; i < 4; i++) CHECK(g.ids[i] == want_ids[i], "id %d = %lld", i, (long long)g.ids[i]);
    for (int i = 0; i < 5; i++) CHECK(g.offsets[i] == want_off[i], "offset %d", i);
    for (int i = 0; i < 7; i++) CHECK(g.trials[i] == want_trials[i], "trial %d = %lld", i, (long long)g.trials[i]);
    CHECK(npred_metrics_repeats_equal(&g) == 0, "unequal repeats");
    npred_metrics_repeats_free(&g);
    const int64_t eq[6] = {3, 1, 3, 1, 2, 2};
    CHECK_OK(npred_metrics_repeats_init(&g, eq, 6));
    CHECK(npred_metrics_repeats_equal(&g) == 2, "2 repeats each");
    npred_metrics_repeats_free(&g);
}

/* Pearson r by the textbook formula for a hand example, and the eps/NaN edge cases. */
static void test_corr_edges(void)
{
    /* column 0: r of (1,2,3,4) vs (2,1,4,3) = 0.6; column 1 constant; column 2 has a NaN */
    const float a[12] = {1, 5, 1, 2, 5, 2, 3, 5, NAN, 4, 5, 4};
    const float b[12] = {2, 1, 1, 1, 2, 2, 4, 3, 3, 3, 4, 4};
    double r[3];
    CHECK_OK(npred_metrics_corr(r, a, b, 4, 3, NPRED_METRICS_CORR_EPS, 0));
    double sd = sqrt(1.25);
    double want0 = 0.6 * (sd / (sd + 1e-8)) * (sd / (sd + 1e-8));
    CHECK(fabs(r[0] - want0) < 1e-15, "r = %.17g, want %.17g", r[0], want0);
    CHECK(r[1] == 0.0, "a constant column correlates 0 (eps keeps it finite): %g", r[1]);
    CHECK(isnan(r[2]), "NaN input stays NaN without nan_to_zero");
    CHECK_OK(npred_metrics_corr(r, a, b, 4, 3, NPRED_METRICS_CORR_EPS, 1));
    CHECK(r[2] == 0.0, "nan_to_zero");
}

/* The jackknife oracle of many neurons (computed in blocks of neurons) equals each
 * neuron's column computed alone, bit for bit, and a double reference */
static void test_jackknife_blocks(void)
{
    enum { T = 12, N = 600 };
    int64_t ids[T];
    float *y = malloc(sizeof(float) * T * N), col[T];
    double r[N], one, want;
    uint64_t st = 99;
    for (int t = 0; t < T; t++) ids[t] = t % 4;
    for (int i = 0; i < T * N; i++) y[i] = (float)(3.0 * th_rand(&st));
    npred_metrics_repeats g;
    if (!CHECK_OK(npred_metrics_repeats_init(&g, ids, T))) {
        free(y);
        return;
    }
    CHECK_OK(npred_metrics_oracle_jackknife(r, y, &g, N));
    int same = 1;
    double worst = 0;
    for (int j = 0; j < N; j++) {
        for (int t = 0; t < T; t++) col[t] = y[t * N + j];
        CHECK_OK(npred_metrics_oracle_jackknife(&one, col, &g, 1));
        same &= memcmp(&one, &r[j], sizeof one) == 0;
        /* reference: corr(y, leave-one-out mean of the other repeats of the same image) */
        double o[T], my = 0, mo = 0, vy = 0, vo = 0, c = 0;
        for (int t = 0; t < T; t++) {
            double s = 0;
            int n = 0;
            for (int u = 0; u < T; u++)
                if (u != t && ids[u] == ids[t]) s += col[u], n++;
            o[t] = s / n;
            my += col[t] / (double)T;
            mo += o[t] / (double)T;
        }
        for (int t = 0; t < T; t++) {
            vy += (col[t] - my) * (col[t] - my) / T;
            vo += (o[t] - mo) * (o[t] - mo) / T;
            c += (col[t] - my) * (o[t] - mo) / T;
        }
        want = c / ((sqrt(vy) + 1e-8) * (sqrt(vo) + 1e-8));
        worst = th_worst(worst, fabs(r[j] - want));
    }
    CHECK(same, "a neuron's jackknife oracle differs between the block and its column alone");
    CHECK(worst <= 1e-12, "jackknife against the double reference: worst error %g", worst);
    npred_metrics_repeats_free(&g);
    free(y);
}

/* Single-repeat images: jackknife oracle 0 for them (0/0 -> 0); fev noise NaN (numpy ddof 1). */
static void test_single_repeats(void)
{
    const int64_t ids[5] = {1, 1, 2, 3, 3};
    const float y[5] = {1, 3, 5, 2, 2.5f};
    npred_metrics_repeats g;
    if (!CHECK_OK(npred_metrics_repeats_init(&g, ids, 5))) return;
    double r, fev;
    CHECK_OK(npred_metrics_oracle_jackknife(&r, y, &g, 1));
    /* rows (1, 3, 5, 2, 2.5) against oracles (3, 1, 0, 2.5, 2) */
    const double x[5] = {1, 3, 5, 2, 2.5}, o[5] = {3, 1, 0, 2.5, 2};
    double mx = 0, mo = 0, vx = 0, vo = 0, c = 0;
    for (int i = 0; i < 5; i++) { mx += x[i] / 5; mo += o[i] / 5; }
    for (int i = 0; i < 5; i++) {
        vx += (x[i] - mx) * (x[i] - mx) / 5;
        vo += (o[i] - mo) * (o[i] - mo) / 5;
        c += (x[i] - mx) * (o[i] - mo) / 5;
    }
    double want = c / ((sqrt(vx) + 1e-8) * (sqrt(vo) + 1e-8));
    CHECK(fabs(r - want) < 1e-12, "jackknife %.15g, want %.15g", r, want);
    CHECK_OK(npred_metrics_fev(&fev, NULL, y, NULL, &g, 1));
    CHECK(isnan(fev), "fev with a single-repeat image is NaN as in numpy, got %g", fev);
    int64_t k = 7;
    double nanfev = NAN, fe = 1;
    CHECK(isnan(npred_metrics_feve_thresholded(&nanfev, &fe, 1, 0.15, &k, NULL)) && k == 0,
          "NaN fev is dropped; the mean of nothing is NaN");
    npred_metrics_repeats_free(&g);
}

static void test_conservative_oracle_hand(void)
{
    /* 2 images x 2 repeats, 1 neuron: means 2 and 6 -> var_mean 4; var_r = 1 and 4 -> var_noise 2.5 */
    const int64_t ids[4] = {0, 0, 1, 1};
    const float y[4] = {1, 3, 4, 8};
    npred_metrics_repeats g;
    if (!CHECK_OK(npred_metrics_repeats_init(&g, ids, 4))) return;
    double r, ev;
    CHECK_OK(npred_metrics_oracle_conservative(&r, y, &g, 1));
    CHECK(fabs(r - 4 / sqrt(4 * 6.5)) < 1e-15, "conservative oracle %.17g", r);
    /* total var ddof 1 of (1,3,4,8) = 26/3; noise ddof 1 = mean(2, 8) = 5 */
    CHECK_OK(npred_metrics_explainable_var(&ev, y, &g, 1, 1e-9));
    CHECK(fabs(ev - (26.0 / 3 - 5) / (26.0 / 3 + 1e-9)) < 1e-15, "explainable var %.17g", ev);
    npred_metrics_repeats_free(&g);
}

/* snr: an independent double reference (groups by id, Anscombe, ddof 0 / ddof 1) and
 * the values numpy's np_functions.snr gives for these responses (unequal repeats) */
static void test_snr(void)
{
    enum { T = 7, N = 2 };
    const float y[T * N] = {0.5f, 2.0f, 1.0f, 0.0f, 3.0f, 1.5f, 0.0f, 4.0f, 2.5f, 1.0f, 1.5f, 0.5f, 4.0f, 2.0f};
    const int64_t ids[T] = {7, 3, 7, 3, 9, 9, 9};
    const double numpy_snr[N] = {0.49799405, 0.02387238};
    npred_metrics_repeats g;
    if (!CHECK_OK(npred_metrics_repeats_init(&g, ids, T))) return;
    double r[N];
    CHECK_OK(npred_metrics_snr(r, y, &g, N));
    const int64_t uniq[3] = {3, 7, 9};
    for (int j = 0; j < N; j++) {
        double mu[3], mbar = 0, s2bar = 0;
        for (int i = 0; i < 3; i++) {
            double a[T], m = 0;
            int c = 0;
            for (int t = 0; t < T; t++)
                if (ids[t] == uniq[i]) a[c++] = 2 * sqrt(y[t * N + j] + 0.375);
            for (int k = 0; k < c; k++) m += a[k] / c;
            double v = 0;
            for (int k = 0; k < c; k++) v += (a[k] - m) * (a[k] - m) / (c - 1);
            mu[i] = m;
            mbar += m / 3;
            s2bar += v / 3;
        }
        double num = 0;
        for (int i = 0; i < 3; i++) num += (mu[i] - mbar) * (mu[i] - mbar) / 3;
        CHECK(fabs(r[j] - num / s2bar) <= 1e-12 * fabs(num / s2bar), "snr[%d] %.17g vs reference %.17g", j, r[j],
              num / s2bar);
        CHECK(fabs(r[j] - numpy_snr[j]) <= 1e-8, "snr[%d] %.10g vs numpy %.10g", j, r[j], numpy_snr[j]);
    }
    npred_metrics_repeats_free(&g);
}

/* gini: numpy values, one column of a matrix by stride, NaN */
static void test_gini(void)
{
    const double a[5] = {3.0, 0.5, -1.0, 2.0, 7.5}, b[4] = {0, 0, 0, 1}, eq[3] = {2, 2, 2};
    double v = -1;
    CHECK_OK(npred_metrics_gini(&v, a, 5, 1));
    CHECK(fabs(v - 0.65) < 1e-15, "gini %.17g, numpy 0.65", v);
    CHECK_OK(npred_metrics_gini(&v, b, 4, 1));
    CHECK(fabs(v - 0.75) < 1e-15, "gini %.17g, numpy 0.75", v);
    CHECK_OK(npred_metrics_gini(&v, eq, 3, 1));
    CHECK(fabs(v) < 1e-15, "equal values: gini %.17g, want 0", v);
    /* column 1 of a (3, 2) matrix: {0, 0, 1} -> (4 - 2 * 1 / 1) / 3 */
    const double m[6] = {5, 0, 1, 0, 2, 1};
    CHECK_OK(npred_metrics_gini(&v, m + 1, 3, 2));
    CHECK(fabs(v - 2.0 / 3.0) < 1e-15, "strided gini %.17g", v);
    const double n[2] = {1, NAN};
    CHECK_OK(npred_metrics_gini(&v, n, 2, 1));
    CHECK(isnan(v), "NaN input gives NaN, got %g", v);
    CHECK(npred_metrics_gini(&v, a, 0, 1) == NPRED_ERR_SHAPE, "no values");
}

static void test_bad_input(void)
{
    npred_metrics_repeats g;
    double r[2];
    const float y[4] = {0};
    CHECK(npred_metrics_repeats_init(&g, NULL, 3) == NPRED_ERR_SHAPE, "NULL ids");
    CHECK(npred_metrics_corr(r, y, y, 0, 2, 1e-8, 0) == NPRED_ERR_SHAPE, "no trials");
    CHECK(npred_metrics_corr(r, y, NULL, 2, 2, 1e-8, 0) == NPRED_ERR_ARG, "NULL predictions");
    memset(&g, 0, sizeof g);
    CHECK(npred_metrics_fev(r, r, y, y, &g, 2) == NPRED_ERR_ARG, "uninitialized repeats");
    CHECK(strstr(npred_last_error(), "npred_metrics_repeats_init") != NULL, "message: %s", npred_last_error());
}

int main(void)
{
    RUN(test_metrics_fixture);
    RUN(test_metrics_unequal_repeats_fixture);
    RUN(test_repeats_grouping);
    RUN(test_corr_edges);
    RUN(test_single_repeats);
    RUN(test_jackknife_blocks);
    RUN(test_conservative_oracle_hand);
    RUN(test_snr);
    RUN(test_gini);
    RUN(test_bad_input);
    return th_summary();
}
