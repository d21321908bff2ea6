/* Losses: PoissonLoss fixtures (0.3.0), hand values, and central finite differences
 * of double-precision reference forwards (written here, independent of the library)
 * for every loss and reduction. B = batch, n = neurons. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include "train/loss.h"

static const npred_loss_reduction REDS[4] = {NPRED_LOSS_SUM, NPRED_LOSS_MEAN,
                                             NPRED_LOSS_PER_NEURON_SUM, NPRED_LOSS_PER_NEURON_MEAN};

/* ---- PoissonLoss fixtures ---- */

static void poisson_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    int per_neuron = cJSON_IsTrue(th_get(c.json, "args", "per_neuron", NULL));
    cJSON *avg = th_get(c.json, "args", "avg", NULL);
    int is_avg = avg ? cJSON_IsTrue(avg) : 1; /* 0.3.0 default avg=True */
    double eps = th_num(c.json, NPRED_POISSON_EPS, "args", "bias", NULL);
    npred_loss_reduction red = per_neuron ? (is_avg ? NPRED_LOSS_PER_NEURON_MEAN : NPRED_LOSS_PER_NEURON_SUM)
                                          : (is_avg ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM);
    npred_array sh;
    float *x = th_load_f32(&c, "input.npy", &sh);
    float *y = th_load_f32(&c, "target.npy", NULL);
    float *up = th_load_f32(&c, "upstream.npy", NULL);
    float *ref_out = th_load_f32(&c, "output.npy", NULL);
    if (x && y && up && ref_out && CHECK(sh.ndim == 2, "%s: input is not 2-D", name)) {
        int64_t B = sh.shape[0], n = sh.shape[1], m = npred_loss_size(red, n);
        if (!CHECK(m >= 1 && m <= 64, "%s: %lld loss values (1 to 64 expected)", name, (long long)m)) goto out;
        double loss[64];
        float out[64];
        CHECK_OK(npred_loss_poisson_forward(loss, x, y, B, n, red, eps));
        double total = 0;
        for (int64_t j = 0; j < m; j++) {
            out[j] = (float)loss[j];
            total += loss[j] * up[j];
        }
        th_compare_dims(&c, "forward", "output.npy", out, TH_DIMS(m));
        double want = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(total - want) <= 1e-5 + 1e-4 * fabs(want), "%s: sum(loss*upstream) %.9g, want %.9g", name,
              total, want);
        double dl[64];
        for (int64_t j = 0; j < m; j++) dl[j] = up[j];
        float *dx = calloc((size_t)(B * n), sizeof(float));
        CHECK_OK(npred_loss_poisson_backward(dx, dl, x, y, B, n, red, eps));
        th_compare_dims(&c, "grads", "grads/input.npy", dx, TH_DIMS(B, n));
        free(dx);
    }
out:
    free(x);
    free(y);
    free(up);
    free(ref_out);
    th_case_close(&c);
}

static void test_poisson_avg(void) { poisson_case("poisson_loss_avg"); }
static void test_poisson_sum(void) { poisson_case("poisson_loss_sum"); }
static void test_poisson_per_neuron_avg(void) { poisson_case("poisson_loss_per_neuron_avg"); }
static void test_poisson_per_neuron_sum(void) { poisson_case("poisson_loss_per_neuron_sum"); }

/* neuralpredictors spec appendix A, T4 (torch 1.13 float32) */
static void test_poisson_hand_values(void)
{
    const float yh[6] = {.5f, 1, 2, .1f, 3, .7f}, y[6] = {0, 1, 3, 2, 0, .5f};
    double s, m;
    CHECK_OK(npred_loss_poisson_forward(&s, yh, y, 2, 3, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
    CHECK_OK(npred_loss_poisson_forward(&m, yh, y, 2, 3, NPRED_LOSS_MEAN, NPRED_POISSON_EPS));
    CHECK(fabs(s - 10.0040655) < 1e-6, "sum %.9g", s);
    CHECK(fabs(m - 1.6673442) < 1e-6, "mean %.9g", m);
}

/* ---- double reference forwards ---- */

typedef enum { K_POISSON, K_EXPONENTIAL, K_ANSCOMBE, K_MSE, K_GAMMA_CONC, K_GAMMA_RATE, K_CORR,
               K_AVGCORR } kind;

static double ref_elem(kind k, double yh, double y, double other)
{
    switch (k) {
    case K_POISSON: return yh - y * log(yh + 1e-12);
    case K_EXPONENTIAL: return (y + 1e-6) / (yh + 1e-12) + log(yh + 1e-12);
    case K_ANSCOMBE: {
        double A = 2 * sqrt(y + 3.0 / 8), o = 2 * sqrt(yh + 3.0 / 8) - 1 / (4 * sqrt(yh));
        return (A - o) * (A - o);
    }
    case K_MSE: return (yh - y) * (yh - y);
    case K_GAMMA_CONC: /* yh = concentration, other = rate */
    case K_GAMMA_RATE: {
        double a = k == K_GAMMA_CONC ? yh : other, b = k == K_GAMMA_CONC ? other : yh;
        double x = y + 1e-10;
        return -(a * log(b) + (a - 1) * log(x) - b * x - lgamma(a));
    }
    default: return NAN;
    }
}

/* sum_j loss_j * up_j with the loss reduced as `red` (corr kinds: red unused) */
static double ref_loss(kind k, const double *yh, const double *y, const double *other, int64_t B, int64_t n,
                       npred_loss_reduction red, const double *up)
{
    if (k == K_CORR || k == K_AVGCORR) {
        double tot = 0;
        for (int64_t j = 0; j < n; j++) {
            double mo = 0, mt = 0;
            for (int64_t b = 0; b < B; b++) { mo += yh[b * n + j] / B; mt += y[b * n + j] / B; }
            double vo = 0, vt = 0, cv = 0;
            for (int64_t b = 0; b < B; b++) {
                double p = yh[b * n + j] - mo, q = y[b * n + j] - mt;
                vo += p * p / B; vt += q * q / B; cv += p * q / B;
            }
            double c = cv / sqrt((vo + 1e-12) * (vt + 1e-12));
            tot += k == K_CORR ? c * up[j] : -c / n * up[0];
        }
        return tot;
    }
    double tot = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < n; j++) {
            int64_t i = b * n + j;
            double l = ref_elem(k, yh[i], y[i], other ? other[i] : 0);
            switch (red) {
            case NPRED_LOSS_SUM: tot += l * up[0]; break;
            case NPRED_LOSS_MEAN: tot += l * up[0] / (double)(B * n); break;
            case NPRED_LOSS_PER_NEURON_SUM: tot += l * up[j]; break;
            case NPRED_LOSS_PER_NEURON_MEAN: tot += l * up[j] / (double)B; break;
            }
        }
    return tot;
}

/* library forward + backward for kind k; returns the forward sum(loss*up) */
static double lib_loss(kind k, float *dyh, const float *yh, const float *y, const float *other, int64_t B,
                       int64_t n, npred_loss_reduction red, const double *up)
{
    double loss[32];
    int64_t m = (k == K_CORR) ? n : (k == K_AVGCORR ? 1 : npred_loss_size(red, n));
    switch (k) {
    case K_POISSON:
        CHECK_OK(npred_loss_poisson_forward(loss, yh, y, B, n, red, NPRED_POISSON_EPS));
        CHECK_OK(npred_loss_poisson_backward(dyh, up, yh, y, B, n, red, NPRED_POISSON_EPS));
        break;
    case K_EXPONENTIAL:
        CHECK_OK(npred_loss_exponential_forward(loss, yh, y, B, n, red, NPRED_EXPONENTIAL_BIAS,
                                                NPRED_EXPONENTIAL_TARGET_BIAS));
        CHECK_OK(npred_loss_exponential_backward(dyh, up, yh, y, B, n, red, NPRED_EXPONENTIAL_BIAS,
                                                 NPRED_EXPONENTIAL_TARGET_BIAS));
        break;
    case K_ANSCOMBE:
        CHECK_OK(npred_loss_anscombe_mse_forward(loss, yh, y, B, n, red));
        CHECK_OK(npred_loss_anscombe_mse_backward(dyh, up, yh, y, B, n, red));
        break;
    case K_MSE:
        CHECK_OK(npred_loss_mse_forward(loss, yh, y, B, n, red));
        CHECK_OK(npred_loss_mse_backward(dyh, up, yh, y, B, n, red));
        break;
    case K_GAMMA_CONC:
        CHECK_OK(npred_loss_gamma_forward(loss, yh, other, y, B, n, red, NPRED_GAMMA_EPS_SHIFT));
        CHECK_OK(npred_loss_gamma_backward(dyh, NULL, up, yh, other, y, B, n, red, NPRED_GAMMA_EPS_SHIFT));
        break;
    case K_GAMMA_RATE:
        CHECK_OK(npred_loss_gamma_forward(loss, other, yh, y, B, n, red, NPRED_GAMMA_EPS_SHIFT));
        CHECK_OK(npred_loss_gamma_backward(NULL, dyh, up, other, yh, y, B, n, red, NPRED_GAMMA_EPS_SHIFT));
        break;
    case K_CORR:
    case K_AVGCORR:
        CHECK_OK(npred_loss_corr_forward(loss, yh, y, B, n, k == K_AVGCORR, NPRED_CORR_EPS));
        CHECK_OK(npred_loss_corr_backward(dyh, up, yh, y, B, n, k == K_AVGCORR, NPRED_CORR_EPS));
        break;
    }
    double tot = 0;
    for (int64_t j = 0; j < m; j++) tot += loss[j] * up[j];
    return tot;
}

/* Forward against the double reference, backward against central differences of it.
 * Positive predictions in [0.2, 2.2), targets with zeros; B x n = 5 x 3. */
static void gradcheck(kind k, const char *name, npred_loss_reduction red, uint64_t seed)
{
    enum { B = 5, n = 3, N = B * n };
    float yh[N], y[N], other[N], dyh[N];
    double yd[N], yhd[N], od[N], up[n];
    for (int i = 0; i < N; i++) {
        yh[i] = (float)(1.2 + th_rand(&seed));
        y[i] = (i % 4 == 1) ? 0.0f : (float)(1.5 + 1.5 * th_rand(&seed));
        other[i] = (float)(1.3 + th_rand(&seed));
        yhd[i] = yh[i];
        yd[i] = y[i];
        od[i] = other[i];
        dyh[i] = 0.25f; /* backward must accumulate onto this */
    }
    for (int j = 0; j < n; j++) up[j] = 0.5 + th_rand(&seed);
    const double *oth = (k == K_GAMMA_CONC || k == K_GAMMA_RATE) ? od : NULL;
    double got = lib_loss(k, dyh, yh, y, oth ? other : NULL, B, n, red, up);
    double want = ref_loss(k, yhd, yd, oth, B, n, red, up);
    CHECK(fabs(got - want) <= 1e-12 + 1e-10 * fabs(want), "%s red %d: forward %.15g, reference %.15g", name,
          (int)red, got, want);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const double h = 1e-6;
        double save = yhd[i];
        yhd[i] = save + h;
        double fp = ref_loss(k, yhd, yd, oth, B, n, red, up);
        yhd[i] = save - h;
        double fm = ref_loss(k, yhd, yd, oth, B, n, red, up);
        yhd[i] = save;
        double fd = (fp - fm) / (2 * h);
        double an = dyh[i] - 0.25;
        double err = fabs(an - fd) / fmax(fabs(an) + fabs(fd), 1e-3);
        if (err > worst) worst = err;
        CHECK(err < 1e-5, "%s red %d: d/dyhat[%d] analytic %.9g, finite difference %.9g", name, (int)red, i, an,
              fd);
    }
    (void)worst;
}

static void test_gradcheck_elementwise(void)
{
    const struct { kind k; const char *name; } L[] = {
        {K_POISSON, "poisson"}, {K_EXPONENTIAL, "exponential"}, {K_ANSCOMBE, "anscombe_mse"},
        {K_MSE, "mse"}, {K_GAMMA_CONC, "gamma d/dconcentration"}, {K_GAMMA_RATE, "gamma d/drate"},
    };
    for (size_t l = 0; l < sizeof L / sizeof L[0]; l++)
        for (int r = 0; r < 4; r++) gradcheck(L[l].k, L[l].name, REDS[r], 100 + 7 * l + r);
}

static void test_gradcheck_corr(void)
{
    gradcheck(K_CORR, "corr", NPRED_LOSS_SUM, 11);
    gradcheck(K_AVGCORR, "avg_corr", NPRED_LOSS_SUM, 12);
}

/* The correlation loss of perfectly correlated columns is 1 (Corr) / -1 (AvgCorr). */
static void test_corr_values(void)
{
    float a[8] = {1, 5, 2, 4, 3, 3, 4, 2}, b[8];
    for (int i = 0; i < 8; i++) b[i] = (i % 2) ? -2 * a[i] + 1 : 3 * a[i] - 1; /* col 0: +, col 1: - */
    double c[2], avg;
    CHECK_OK(npred_loss_corr_forward(c, a, b, 4, 2, 0, NPRED_CORR_EPS));
    CHECK_OK(npred_loss_corr_forward(&avg, a, b, 4, 2, 1, NPRED_CORR_EPS));
    CHECK(fabs(c[0] - 1) < 1e-9 && fabs(c[1] + 1) < 1e-9, "corr %.12g %.12g", c[0], c[1]);
    CHECK(fabs(avg) < 1e-9, "avg corr %.12g", avg);
}

static void test_digamma(void)
{
    const double x[3] = {1.0, 0.5, 10.0}; /* -gamma, -gamma - 2 ln 2, H_9 - gamma */
    const double want[3] = {-0.57721566490153286, -1.9635100260214235, 2.2517525890667211};
    for (int i = 0; i < 3; i++) {
        double psi = npred_digamma(x[i]);
        CHECK(fabs(psi - want[i]) < 1e-12, "digamma(%g) = %.17g, want %.17g", x[i], psi, want[i]);
    }
    /* psi = d lgamma / dx: central differences of libm lgamma */
    for (double v = 0.3; v < 30; v *= 1.9) {
        double fd = (lgamma(v + 1e-5) - lgamma(v - 1e-5)) / 2e-5;
        CHECK(fabs(npred_digamma(v) - fd) < 1e-7 * fmax(1, fabs(fd)), "digamma(%g) %.12g vs lgamma slope %.12g", v,
              npred_digamma(v), fd);
    }
    CHECK(fabs(npred_digamma(4.7) - npred_digamma(3.7) - 1 / 3.7) < 1e-13, "digamma recurrence");
    CHECK(isnan(npred_digamma(0.0)) && isnan(npred_digamma(-1.0)), "digamma outside x > 0 is NaN");
}

static void test_bad_input(void)
{
    float a[6] = {1, 1, 1, 1, 1, 1}, d[6] = {0};
    double l[3];
    CHECK(npred_loss_poisson_forward(l, NULL, a, 2, 3, NPRED_LOSS_SUM, 1e-12) == NPRED_ERR_ARG, "NULL input");
    CHECK(npred_loss_poisson_forward(l, a, a, 0, 3, NPRED_LOSS_SUM, 1e-12) == NPRED_ERR_SHAPE, "empty batch");
    CHECK(strstr(npred_last_error(), "B, n > 0") != NULL, "message names the shape: %s", npred_last_error());
    CHECK(npred_loss_mse_backward(d, NULL, a, a, 2, 3, (npred_loss_reduction)9) == NPRED_ERR_ARG,
          "unknown reduction");
    float neg[6] = {1, -1, 1, 1, 1, 1};
    CHECK(npred_loss_gamma_forward(l, neg, a, a, 2, 3, NPRED_LOSS_SUM, 1e-10) == NPRED_ERR_VALUE,
          "negative concentration");
    CHECK(npred_loss_gamma_backward(d, d, NULL, a, neg, a, 2, 3, NPRED_LOSS_SUM, 1e-10) == NPRED_ERR_VALUE,
          "negative rate");
    float yneg[6] = {0, 0, -1, 0, 0, 0};
    CHECK(npred_loss_gamma_forward(l, a, a, yneg, 2, 3, NPRED_LOSS_SUM, 1e-10) == NPRED_ERR_VALUE,
          "target outside the support");
    CHECK(npred_loss_corr_forward(l, a, a, 2, -1, 0, 1e-12) == NPRED_ERR_SHAPE, "negative n");
    for (int i = 0; i < 6; i++) CHECK(d[i] == 0.0f, "failed calls leave gradients untouched");
}

/* A NULL upstream means ones; a second backward call adds the same gradient again. */
static void test_accumulates(void)
{
    float yh[6] = {.5f, 1, 2, .1f, 3, .7f}, y[6] = {0, 1, 3, 2, 0, .5f}, d1[6] = {0}, d2[6] = {0};
    double one = 1.0;
    CHECK_OK(npred_loss_poisson_backward(d1, NULL, yh, y, 2, 3, NPRED_LOSS_MEAN, 1e-12));
    CHECK_OK(npred_loss_poisson_backward(d2, &one, yh, y, 2, 3, NPRED_LOSS_MEAN, 1e-12));
    CHECK_OK(npred_loss_poisson_backward(d2, &one, yh, y, 2, 3, NPRED_LOSS_MEAN, 1e-12));
    for (int i = 0; i < 6; i++) {
        double want = (1 - y[i] / ((double)yh[i] + 1e-12)) / 6;
        CHECK(fabs(d1[i] - want) < 1e-6 * fabs(want) + 1e-7, "grad[%d] %g want %g", i, d1[i], want);
        CHECK(fabs(d2[i] - 2 * d1[i]) <= 1e-6f * fabsf(d1[i]), "grad[%d] accumulates: %g vs 2 x %g", i, d2[i],
              d1[i]);
    }
}

/* Same result for any thread count (a batch large enough to run in parallel). */
static void test_thread_count_independent(void)
{
#ifdef _OPENMP
    enum { B = 97, n = 1031 };
    float *yh = malloc(sizeof(float) * B * n), *y = malloc(sizeof(float) * B * n);
    uint64_t s = 5;
    for (int i = 0; i < B * n; i++) {
        yh[i] = (float)(1.1 + th_rand(&s));
        y[i] = (float)(1.0 + th_rand(&s));
    }
    double a[n], b[n], sa, sb;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK_OK(npred_loss_poisson_forward(&sa, yh, y, B, n, NPRED_LOSS_SUM, 1e-12));
    CHECK_OK(npred_loss_poisson_forward(a, yh, y, B, n, NPRED_LOSS_PER_NEURON_SUM, 1e-12));
    omp_set_num_threads(3);
    CHECK_OK(npred_loss_poisson_forward(&sb, yh, y, B, n, NPRED_LOSS_SUM, 1e-12));
    CHECK_OK(npred_loss_poisson_forward(b, yh, y, B, n, NPRED_LOSS_PER_NEURON_SUM, 1e-12));
    omp_set_num_threads(saved);
    CHECK(sa == sb, "sum differs across thread counts: %.17g vs %.17g", sa, sb);
    CHECK(!memcmp(a, b, sizeof a), "per-neuron sums differ across thread counts");
    free(yh);
    free(y);
#endif
}

/* ---- value and gradient in one pass ---- */

typedef npred_status (*fwd_fn)(double *, const float *, const float *, int64_t, int64_t, npred_loss_reduction);
typedef npred_status (*bwd_fn)(float *, const double *, const float *, const float *, int64_t, int64_t,
                               npred_loss_reduction);
typedef npred_status (*vg_fn)(double *, float *, double, const float *, const float *, int64_t, int64_t,
                              npred_loss_reduction);
static npred_status pf(double *l, const float *a, const float *b, int64_t B, int64_t n, npred_loss_reduction r)
{
    return npred_loss_poisson_forward(l, a, b, B, n, r, NPRED_POISSON_EPS);
}
static npred_status pb(float *d, const double *u, const float *a, const float *b, int64_t B, int64_t n,
                       npred_loss_reduction r)
{
    return npred_loss_poisson_backward(d, u, a, b, B, n, r, NPRED_POISSON_EPS);
}
static npred_status pv(double *l, float *d, double u, const float *a, const float *b, int64_t B, int64_t n,
                       npred_loss_reduction r)
{
    return npred_loss_poisson_value_grad(l, d, u, a, b, B, n, r, NPRED_POISSON_EPS);
}
static npred_status ef(double *l, const float *a, const float *b, int64_t B, int64_t n, npred_loss_reduction r)
{
    return npred_loss_exponential_forward(l, a, b, B, n, r, NPRED_EXPONENTIAL_BIAS, NPRED_EXPONENTIAL_TARGET_BIAS);
}
static npred_status eb(float *d, const double *u, const float *a, const float *b, int64_t B, int64_t n,
                       npred_loss_reduction r)
{
    return npred_loss_exponential_backward(d, u, a, b, B, n, r, NPRED_EXPONENTIAL_BIAS, NPRED_EXPONENTIAL_TARGET_BIAS);
}
static npred_status ev(double *l, float *d, double u, const float *a, const float *b, int64_t B, int64_t n,
                       npred_loss_reduction r)
{
    return npred_loss_exponential_value_grad(l, d, u, a, b, B, n, r, NPRED_EXPONENTIAL_BIAS,
                                             NPRED_EXPONENTIAL_TARGET_BIAS);
}

/* the double-precision Poisson loss and gradient of one element (the module's formula) */
static double poisson_ref(double yh, double y, double *d)
{
    *d = 1.0 - y / (yh + NPRED_POISSON_EPS);
    return yh - y * log(yh + NPRED_POISSON_EPS);
}

/* _value_grad against _forward + _backward into a zeroed gradient, bit for bit, for the
 * three elementwise losses the trainer uses, SUM and MEAN, 1 and 2 threads, on a batch
 * with 65 % zero responses (the Poisson value skips their logs), a batch that is not
 * split into equal chunks and a gradient buffer that held garbage; the Poisson values
 * also against double precision. */
static void test_value_grad_bits(void)
{
    enum { B = 131, n = 1003 };
    const size_t N = (size_t)B * n;
    float *yh = malloc(N * sizeof *yh), *y = malloc(N * sizeof *y), *d0 = malloc(N * sizeof *d0);
    float *d1 = malloc(N * sizeof *d1);
    if (!CHECK(yh && y && d0 && d1, "allocation")) goto out;
    uint64_t r = 11;
    for (size_t i = 0; i < N; i++) {
        yh[i] = (float)(0.02 + 1.5 * (th_rand(&r) + 1.0)); /* th_rand is uniform in [-1, 1) */
        double u = 0.5 * (th_rand(&r) + 1.0);
        y[i] = u < 0.65 ? (i % 2 ? 0.0f : -0.0f) : (float)floor(3.0 * (th_rand(&r) + 1.0));
    }
    yh[7] = 1e-30f, yh[8] = 1e-20f, y[8] = 2.0f; /* tiny predictions, one under a nonzero response */
    const fwd_fn F[3] = {pf, ef, npred_loss_anscombe_mse_forward};
    const bwd_fn G[3] = {pb, eb, npred_loss_anscombe_mse_backward};
    const vg_fn V[3] = {pv, ev, npred_loss_anscombe_mse_value_grad};
    const int saved = omp_get_max_threads();
    for (int k = 0; k < 3; k++)
        for (int ri = 0; ri < 2; ri++)
            for (int T = 1; T <= 2; T++) {
                omp_set_num_threads(T);
                const double up = 1.7;
                double l0 = 0, l1 = 0;
                memset(d0, 0, N * sizeof *d0);
                for (size_t i = 0; i < N; i++) d1[i] = NAN;
                CHECK_OK(F[k](&l0, yh, y, B, n, REDS[ri]));
                CHECK_OK(G[k](d0, &up, yh, y, B, n, REDS[ri]));
                CHECK_OK(V[k](&l1, d1, up, yh, y, B, n, REDS[ri]));
                CHECK(!memcmp(&l0, &l1, sizeof l0), "loss %d reduction %d threads %d: value %.17g, forward %.17g", k,
                      ri, T, l1, l0);
                CHECK(!memcmp(d0, d1, N * sizeof *d0), "loss %d reduction %d threads %d: gradient differs from the "
                      "backward's", k, ri, T);
            }
    omp_set_num_threads(saved);
    /* the Poisson sum against double precision */
    double want = 0, l = 0, worst = 0;
    for (size_t i = 0; i < N; i++) {
        double d;
        want += poisson_ref(yh[i], y[i], &d);
    }
    CHECK_OK(npred_loss_poisson_value_grad(&l, d1, 2.0, yh, y, B, n, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
    for (size_t i = 0; i < N; i++) {
        double d;
        poisson_ref(yh[i], y[i], &d);
        worst = th_worst(worst, fabs(d1[i] - 2.0 * d) / (1e-6 * fabs(2.0 * d) + 1e-30));
    }
    CHECK(fabs(l - want) <= 1e-12 * fabs(want), "Poisson sum %.17g, double precision %.17g", l, want);
    CHECK(worst <= 1.0, "Poisson gradient off by %.3g of its tolerance", worst);
out:
    free(yh), free(y), free(d0), free(d1);
}

/* Responses of zero under predictions whose log is not finite keep the forward's
 * NaN / infinity; the per-neuron reductions and NULL buffers are refused. */
static void test_value_grad_edges(void)
{
    const float special[4] = {INFINITY, 1.0f, -1e-12f, NAN};
    float yh[20], y[20], d[20];
    double l0, l1;
    for (int i = 0; i < 4; i++)
        for (int at = 3; at <= 18; at += 15) { /* in a vector of 16 and in the row's tail */
            for (int j = 0; j < 20; j++) yh[j] = 0.5f + 0.1f * (float)j, y[j] = (float)(j % 3 == 0);
            yh[at] = special[i], y[at] = 0.0f;
            CHECK_OK(npred_loss_poisson_forward(&l0, yh, y, 1, 20, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
            CHECK_OK(npred_loss_poisson_value_grad(&l1, d, 1.0, yh, y, 1, 20, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
            CHECK(isnan(l0) == isnan(l1) && (isnan(l0) || l0 == l1), "prediction %g at %d over a zero: value %g, "
                  "forward %g", special[i], at, l1, l0);
        }
    CHECK(npred_loss_poisson_value_grad(&l1, d, 1.0, yh, y, 2, 2, NPRED_LOSS_PER_NEURON_SUM, 1e-12) == NPRED_ERR_ARG,
          "a per-neuron reduction is refused");
    CHECK(npred_loss_poisson_value_grad(&l1, NULL, 1.0, yh, y, 2, 2, NPRED_LOSS_SUM, 1e-12) == NPRED_ERR_ARG,
          "a NULL gradient is refused");
}

int main(void)
{
    RUN(test_thread_count_independent);
    RUN(test_poisson_avg);
    RUN(test_poisson_sum);
    RUN(test_poisson_per_neuron_avg);
    RUN(test_poisson_per_neuron_sum);
    RUN(test_poisson_hand_values);
    RUN(test_gradcheck_elementwise);
    RUN(test_gradcheck_corr);
    RUN(test_corr_values);
    RUN(test_digamma);
    RUN(test_bad_input);
    RUN(test_accumulates);
    RUN(test_value_grad_bits);
    RUN(test_value_grad_edges);
    return th_summary();
}
