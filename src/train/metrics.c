/* Evaluation metrics (see metrics.h). T = trials, N = neurons, I = images. */
#include "npred/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A (rows, N) matrix held as float32 or float64. */
typedef struct {
    const float *f;
    const double *d;
    int64_t N;
} mat;

static inline double at(mat m, int64_t row, int64_t j)
{
    return m.f ? (double)m.f[row * m.N + j] : m.d[row * m.N + j];
}

/* row index of the k-th element of a column: identity, or a gather through idx */
static inline int64_t row_of(const int64_t *idx, int64_t k) { return idx ? idx[k] : k; }

/* np corr along axis 0 over the rows idx[0..T) (all rows if idx is NULL), column j */
static double corr_col(mat a, mat b, const int64_t *idx, int64_t T, int64_t j, double eps)
{
    double sa = 0, sb = 0;
    for (int64_t k = 0; k < T; k++) {
        sa += at(a, row_of(idx, k), j);
        sb += at(b, row_of(idx, k), j);
    }
    const double ma = sa / (double)T, mb = sb / (double)T;
    double va = 0, vb = 0;
    for (int64_t k = 0; k < T; k++) {
        double p = at(a, row_of(idx, k), j) - ma, q = at(b, row_of(idx, k), j) - mb;
        va += p * p;
        vb += q * q;
    }
    const double da = sqrt(va / (double)T) + eps, db = sqrt(vb / (double)T) + eps;
    double s = 0;
    for (int64_t k = 0; k < T; k++)
        s += ((at(a, row_of(idx, k), j) - ma) / da) * ((at(b, row_of(idx, k), j) - mb) / db);
    return s / (double)T;
}

/* numpy var with ddof over rows idx[lo..hi) of column j */
static double var_col(mat a, const int64_t *idx, int64_t lo, int64_t hi, int64_t j, int ddof)
{
    const int64_t n = hi - lo;
    double s = 0;
    for (int64_t k = lo; k < hi; k++) s += at(a, row_of(idx, k), j);
    const double m = s / (double)n;
    double v = 0;
    for (int64_t k = lo; k < hi; k++) {
        double d = at(a, row_of(idx, k), j) - m;
        v += d * d;
    }
    return v / (double)(n - ddof); /* n - ddof <= 0 gives inf/NaN as numpy does */
}

static npred_status check(const char *who, const void *out, const void *a, int64_t T, int64_t N)
{
    if (!out || !a) return npred_errorf(NPRED_ERR_ARG, "%s: NULL array argument", who);
    if (T <= 0 || N <= 0)
        return npred_errorf(NPRED_ERR_SHAPE, "%s: expected (trials, neurons) with both > 0, got (%lld, %lld)",
                            who, (long long)T, (long long)N);
    return NPRED_OK;
}

static npred_status check_groups(const char *who, const npred_metrics_repeats *g)
{
    if (!g || !g->offsets || !g->trials || g->n_images <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: repeats not initialized (npred_metrics_repeats_init)", who);
    return NPRED_OK;
}

/* ---- grouping ---- */

static int cmp_pair(const void *x, const void *y)
{
    const int64_t *a = x, *b = y; /* (id, trial) */
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : a[1] > b[1];
}

npred_status npred_metrics_repeats_init(npred_metrics_repeats *g, const int64_t *image_ids, int64_t T)
{
    if (!g) return npred_errorf(NPRED_ERR_ARG, "metrics repeats: NULL argument");
    memset(g, 0, sizeof *g);
    if (!image_ids || T <= 0)
        return npred_errorf(NPRED_ERR_SHAPE, "metrics repeats: expected image_ids for T > 0 trials, got T = %lld",
                            (long long)T);
    int64_t *pairs = npred_calloc((size_t)T * 2, sizeof(int64_t));
    g->trials = npred_calloc((size_t)T, sizeof(int64_t));
    if (!pairs || !g->trials) {
        free(pairs);
        npred_metrics_repeats_free(g);
        return npred_errorf(NPRED_ERR_NOMEM, "metrics repeats: cannot allocate for %lld trials", (long long)T);
    }
    for (int64_t t = 0; t < T; t++) {
        pairs[2 * t] = image_ids[t];
        pairs[2 * t + 1] = t;
    }
    qsort(pairs, (size_t)T, 2 * sizeof(int64_t), cmp_pair); /* ties keep trial order */
    int64_t I = 0;
    for (int64_t t = 0; t < T; t++)
        if (t == 0 || pairs[2 * t] != pairs[2 * t - 2]) I++;
    g->ids = npred_calloc((size_t)I, sizeof(int64_t));
    g->offsets = npred_calloc((size_t)I + 1, sizeof(int64_t));
    if (!g->ids || !g->offsets) {
        free(pairs);
        npred_metrics_repeats_free(g);
        return npred_errorf(NPRED_ERR_NOMEM, "metrics repeats: cannot allocate for %lld images", (long long)I);
    }
    int64_t i = -1;
    for (int64_t t = 0; t < T; t++) {
        if (t == 0 || pairs[2 * t] != pairs[2 * t - 2]) {
            i++;
            g->ids[i] = pairs[2 * t];
            g->offsets[i] = t;
        }
        g->trials[t] = pairs[2 * t + 1];
    }
    g->offsets[I] = T;
    g->n_images = I;
    g->n_trials = T;
    free(pairs);
    return NPRED_OK;
}

void npred_metrics_repeats_free(npred_metrics_repeats *g)
{
    if (!g) return;
    free(g->ids);
    free(g->offsets);
    free(g->trials);
    memset(g, 0, sizeof *g);
}

int64_t npred_metrics_repeats_equal(const npred_metrics_repeats *g)
{
    if (!g || g->n_images <= 0) return 0;
    int64_t R = g->offsets[1] - g->offsets[0];
    for (int64_t i = 1; i < g->n_images; i++)
        if (g->offsets[i + 1] - g->offsets[i] != R) return 0;
    return R;
}

/* ---- metrics ---- */

npred_status npred_metrics_corr(double *r, const float *y1, const float *y2, int64_t T, int64_t N,
                                double eps, int nan_to_zero)
{
    npred_status st = check("corr", r, y1, T, N);
    if (st) return st;
    if (!y2) return npred_errorf(NPRED_ERR_ARG, "corr: NULL array argument");
    mat a = {y1, NULL, N}, b = {y2, NULL, N};
    for (int64_t j = 0; j < N; j++) {
        r[j] = corr_col(a, b, NULL, T, j, eps);
        if (nan_to_zero && isnan(r[j])) r[j] = 0.0;
    }
    return NPRED_OK;
}

npred_status npred_metrics_corr_to_average(double *r, const float *responses, const float *predictions,
                                           const npred_metrics_repeats *g, int64_t N, double eps)
{
    const char *who = "correlation to average";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, r, responses, g->n_trials, N))) return st;
    if (!predictions) return npred_errorf(NPRED_ERR_ARG, "%s: NULL predictions", who);
    const int64_t I = g->n_images;
    double *mr = npred_calloc((size_t)(I * N), sizeof(double));
    double *mp = npred_calloc((size_t)(I * N), sizeof(double));
    if (!mr || !mp) {
        free(mr);
        free(mp);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate (%lld, %lld) means", who, (long long)I,
                            (long long)N);
    }
    for (int64_t i = 0; i < I; i++) {
        const int64_t lo = g->offsets[i], hi = g->offsets[i + 1];
        for (int64_t k = lo; k < hi; k++) {
            const int64_t t = g->trials[k];
            for (int64_t j = 0; j < N; j++) {
                mr[i * N + j] += responses[t * N + j];
                mp[i * N + j] += predictions[t * N + j];
            }
        }
        for (int64_t j = 0; j < N; j++) {
            mr[i * N + j] /= (double)(hi - lo);
            mp[i * N + j] /= (double)(hi - lo);
        }
    }
    mat a = {NULL, mr, N}, b = {NULL, mp, N};
    for (int64_t j = 0; j < N; j++) r[j] = corr_col(a, b, NULL, I, j, eps);
    free(mr);
    free(mp);
    return NPRED_OK;
}

/* noise variance per neuron: mean over images of the ddof-`ddof` repeat variance */
static double noise_var(mat a, const npred_metrics_repeats *g, int64_t j, int ddof)
{
    double s = 0;
    for (int64_t i = 0; i < g->n_images; i++)
        s += var_col(a, g->trials, g->offsets[i], g->offsets[i + 1], j, ddof);
    return s / (double)g->n_images;
}

npred_status npred_metrics_fev(double *fev, double *feve, const float *responses,
                               const float *predictions, const npred_metrics_repeats *g, int64_t N)
{
    const char *who = "fev";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, responses, responses, g->n_trials, N))) return st;
    if (!fev && !feve) return NPRED_OK;
    if (feve && !predictions) return npred_errorf(NPRED_ERR_ARG, "%s: feve needs predictions", who);
    mat a = {responses, NULL, N};
    const int64_t T = g->n_trials;
    for (int64_t j = 0; j < N; j++) {
        const double total = var_col(a, g->trials, 0, T, j, 1);
        const double noise = noise_var(a, g, j, 1);
        if (fev) fev[j] = (total - noise) / total;
        if (feve) {
            double s = 0;
            for (int64_t k = 0; k < T; k++) {
                const int64_t t = g->trials[k];
                double d = (double)responses[t * N + j] - (double)predictions[t * N + j];
                s += d * d;
            }
            feve[j] = 1.0 - (s / (double)T - noise) / (total - noise);
        }
    }
    return NPRED_OK;
}

double npred_metrics_feve_thresholded(const double *fev, const double *feve, int64_t N,
                                      double threshold, int64_t *kept, double *feve_kept)
{
    double s = 0;
    int64_t c = 0;
    for (int64_t j = 0; j < N; j++)
        if (fev[j] >= threshold) {
            if (feve_kept) feve_kept[c] = feve[j];
            s += feve[j];
            c++;
        }
    if (kept) *kept = c;
    return c ? s / (double)c : NAN;
}

/* neurons per block of the jackknife's double copies (T x JK_BLOCK each, not T x N) */
#define JK_BLOCK 256

npred_status npred_metrics_oracle_jackknife(double *r, const float *responses,
                                            const npred_metrics_repeats *g, int64_t N)
{
    const char *who = "oracle jackknife";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, r, responses, g->n_trials, N))) return st;
    const int64_t T = g->n_trials, W = N < JK_BLOCK ? N : JK_BLOCK;
    /* per block of W neurons, rows in grouped order: y[k] = responses[trials[k]],
     * oracle[k] = leave-one-out mean; every neuron's column is computed alone, so the
     * blocks do not change its bits */
    double *y = npred_calloc((size_t)(T * W), sizeof(double));
    double *o = npred_calloc((size_t)(T * W), sizeof(double));
    double *sum = npred_calloc((size_t)W, sizeof(double));
    if (!y || !o || !sum) {
        free(y);
        free(o);
        free(sum);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate (%lld, %lld)", who, (long long)T, (long long)W);
    }
    for (int64_t j0 = 0; j0 < N; j0 += W) {
        const int64_t nb = N - j0 < W ? N - j0 : W;
        for (int64_t i = 0; i < g->n_images; i++) {
            const int64_t lo = g->offsets[i], hi = g->offsets[i + 1];
            for (int64_t j = 0; j < nb; j++) sum[j] = 0;
            for (int64_t k = lo; k < hi; k++)
                for (int64_t j = 0; j < nb; j++) {
                    y[k * nb + j] = responses[g->trials[k] * N + j0 + j];
                    sum[j] += y[k * nb + j];
                }
            for (int64_t k = lo; k < hi; k++)
                for (int64_t j = 0; j < nb; j++) {
                    double v = (sum[j] - y[k * nb + j]) / (double)(hi - lo - 1);
                    o[k * nb + j] = isnan(v) ? 0.0 : v;
                }
        }
        mat a = {NULL, y, nb}, b = {NULL, o, nb};
        for (int64_t j = 0; j < nb; j++) r[j0 + j] = corr_col(a, b, NULL, T, j, NPRED_METRICS_CORR_EPS);
    }
    free(y);
    free(o);
    free(sum);
    return NPRED_OK;
}

npred_status npred_metrics_oracle_conservative(double *r, const float *responses,
                                               const npred_metrics_repeats *g, int64_t N)
{
    const char *who = "oracle conservative";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, r, responses, g->n_trials, N))) return st;
    const int64_t I = g->n_images;
    double *means = npred_calloc((size_t)I, sizeof(double));
    if (!means) return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate %lld means", who, (long long)I);
    mat a = {responses, NULL, N};
    for (int64_t j = 0; j < N; j++) {
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t k = g->offsets[i]; k < g->offsets[i + 1]; k++)
                s += responses[g->trials[k] * N + j];
            means[i] = s / (double)(g->offsets[i + 1] - g->offsets[i]);
        }
        const double vnoise = noise_var(a, g, j, 0);
        mat m = {NULL, means, 1};
        const double vmean = var_col(m, NULL, 0, I, 0, 0);
        r[j] = vmean / sqrt(vmean * (vmean + vnoise));
    }
    free(means);
    return NPRED_OK;
}

npred_status npred_metrics_explainable_var(double *r, const float *responses,
                                           const npred_metrics_repeats *g, int64_t N, double eps)
{
    const char *who = "explainable variance";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, r, responses, g->n_trials, N))) return st;
    if (!npred_metrics_repeats_equal(g))
        return npred_errorf(NPRED_ERR_SHAPE,
                            "%s: needs the same number of repeats for every image (numpy stacks them)", who);
    mat a = {responses, NULL, N};
    for (int64_t j = 0; j < N; j++) {
        const double total = var_col(a, g->trials, 0, g->n_trials, j, 1);
        const double noise = noise_var(a, g, j, 1);
        r[j] = (total - noise) / (total + eps);
    }
    return NPRED_OK;
}

npred_status npred_metrics_snr(double *r, const float *responses, const npred_metrics_repeats *g, int64_t N)
{
    const char *who = "snr";
    npred_status st = check_groups(who, g);
    if (st || (st = check(who, r, responses, g->n_trials, N))) return st;
    const int64_t T = g->n_trials, I = g->n_images;
    double *ans = npred_calloc((size_t)(T * N), sizeof(double)), *means = npred_calloc((size_t)I, sizeof(double));
    if (!ans || !means) {
        free(ans);
        free(means);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate %lld x %lld values", who, (long long)T, (long long)N);
    }
    for (int64_t k = 0; k < T * N; k++) ans[k] = 2.0 * sqrt((double)responses[k] + 3.0 / 8.0);
    mat a = {NULL, ans, N};
    for (int64_t j = 0; j < N; j++) {
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t k = g->offsets[i]; k < g->offsets[i + 1]; k++) s += ans[g->trials[k] * N + j];
            means[i] = s / (double)(g->offsets[i + 1] - g->offsets[i]);
        }
        mat m = {NULL, means, 1};
        r[j] = var_col(m, NULL, 0, I, 0, 0) / noise_var(a, g, j, 1);
    }
    free(ans);
    free(means);
    return NPRED_OK;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

npred_status npred_metrics_gini(double *out, const double *x, int64_t n, int64_t stride)
{
    if (!out || !x) return npred_errorf(NPRED_ERR_ARG, "gini: NULL argument");
    if (n <= 0 || stride <= 0)
        return npred_errorf(NPRED_ERR_SHAPE, "gini: expected n > 0 values and stride > 0, got %lld, %lld",
                            (long long)n, (long long)stride);
    double *v = npred_calloc((size_t)n, sizeof(double));
    if (!v) return npred_errorf(NPRED_ERR_NOMEM, "gini: cannot allocate %lld values", (long long)n);
    int has_nan = 0;
    for (int64_t k = 0; k < n; k++) {
        v[k] = x[k * stride];
        has_nan |= isnan(v[k]);
    }
    if (has_nan) {
        free(v);
        *out = NAN;
        return NPRED_OK;
    }
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double c = 0, sc = 0;
    for (int64_t k = 0; k < n; k++) {
        c += v[k];
        sc += c;
    }
    free(v);
    *out = ((double)n + 1.0 - 2.0 * sc / c) / (double)n;
    return NPRED_OK;
}

double npred_metrics_mean(const double *x, int64_t N)
{
    if (N <= 0) return NAN;
    double s = 0;
    for (int64_t j = 0; j < N; j++) s += x[j];
    return s / (double)N;
}
