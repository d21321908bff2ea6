/* Model evaluation: predictions over a tier, then the SENSORIUM metrics (evaluate.h). */
#include "npred/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"
#include "npred/metrics.h"

void npred_eval_results_free(npred_eval_results *res)
{
    if (!res) return;
    for (int i = 0; i < res->n_sessions; i++) {
        npred_eval_session *s = &res->sessions[i];
        free(s->corr);
        free(s->corr_avg);
        free(s->fev);
        free(s->feve);
        free(s->oracle);
        free(s->unit_ids);
        free(s->resp_mean);
        free(s->resp_var);
        free(s->readout_xy);
    }
    free(res->sessions);
    memset(res, 0, sizeof *res);
}

/* Means of the per-neuron arrays into m (n_neurons, trials, images set by the caller). */
static void summarize(npred_eval_metrics *m, const double *corr, const double *corr_avg, const double *fev,
                      const double *feve, const double *oracle, int64_t N)
{
    m->n_neurons = N;
    m->single_trial_corr = npred_metrics_mean(corr, N);
    m->corr_to_average = npred_metrics_mean(corr_avg, N);
    m->feve = npred_metrics_feve_thresholded(fev, feve, N, NPRED_METRICS_FEV_THRESHOLD, &m->n_fev_kept, NULL);
    m->oracle = npred_metrics_mean(oracle, N);
    m->fraction_oracle = m->single_trial_corr / m->oracle;
    double so = 0, sco = 0; /* least squares through the origin: corr ~ slope * oracle */
    for (int64_t j = 0; j < N; j++) {
        sco += corr[j] * oracle[j];
        so += oracle[j] * oracle[j];
    }
    m->fraction_oracle_slope = sco / so;
}

/* Predict every trial of one session's tier; responses / predictions (T, n), image ids (T,). */
static npred_status collect(npred_model *m, const npred_loaders *L, size_t s, npred_tier tier, float *resp,
                            float *pred, int64_t *ids, int64_t T)
{
    npred_session_info si;
    npred_loaders_session(L, s, &si);
    const int64_t *image_ids = npred_dataset_image_ids(si.dataset);
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    int has_shifter = npred_model_has_shifter(m), bc = npred_model_behavior_channels(m);
    int64_t n = si.n_neurons;
    npred_batch b;
    npred_status st = npred_batch_init(&b, L, 0);
    if (st) return st;
    npred_loader_iter it;
    npred_rng rng; /* only the train tier draws an order; any fixed one works for evaluation */
    npred_rng_seed(&rng, 0);
    memset(&it, 0, sizeof it);
    st = npred_loader_iter_begin(&it, L, s, tier, &rng);
    int64_t done = 0;
    int has = 1;
    while (!st) {
        st = npred_loader_iter_next(&it, &b, &has);
        if (st || !has) break;
        if (b.c != c || b.h != h || b.w != w) {
            st = npred_errorf(NPRED_ERR_SHAPE,
                              "session %s: the loader gives images (B, %d, %d, %d), the model expects (B, %d, %d, %d)%s",
                              si.data_key, b.c, b.h, b.w, c, h, w,
                              b.c != c ? " (input channels differ: include_behavior adds 3 behavior channels)"
                                       : " (set the loader's scale)");
            break;
        }
        if (has_shifter && (!b.pupil_center || b.pupil_dim != 2)) {
            st = npred_errorf(NPRED_ERR_CONFIG,
                              "session %s: the model has a shifter and needs pupil_center (include_eye_position)",
                              si.data_key);
            break;
        }
        if (bc > 0 && (!b.behavior || b.behavior_dim != bc)) {
            st = npred_errorf(NPRED_ERR_CONFIG, "session %s: the model has a modulator and needs behavior (B, %d) "
                              "(include_behavior)", si.data_key, bc);
            break;
        }
        if (done + b.n > T) {
            st = npred_errorf(NPRED_ERR_FORMAT, "session %s: the loader gave more than %lld trials", si.data_key,
                              (long long)T);
            break;
        }
        st = npred_model_predict(m, si.data_key, b.images, (int)b.n, has_shifter ? b.pupil_center : NULL,
                                 bc > 0 ? b.behavior : NULL, pred + done * n);
        if (st) {
            st = npred_error_prefix(st, "session %s", si.data_key);
            break;
        }
        memcpy(resp + done * n, b.responses, sizeof(float) * (size_t)(b.n * n));
        for (int64_t i = 0; i < b.n; i++) ids[done + i] = image_ids[b.trials[i]];
        done += b.n;
    }
    if (!st && done != T)
        st = npred_errorf(NPRED_ERR_FORMAT, "session %s: the loader gave %lld of %lld trials", si.data_key,
                          (long long)done, (long long)T);
    npred_loader_iter_free(&it);
    npred_batch_free(&b);
    return st;
}

/* Per-neuron mean and variance (ddof 0, two passes) of x (T, n). */
static void moments(double *mean, double *var, const float *x, int64_t T, int64_t n)
{
    for (int64_t j = 0; j < n; j++) mean[j] = var[j] = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) mean[j] += x[t * n + j];
    for (int64_t j = 0; j < n; j++) mean[j] /= (double)T;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < n; j++) {
            double d = x[t * n + j] - mean[j];
            var[j] += d * d;
        }
    for (int64_t j = 0; j < n; j++) var[j] /= (double)T;
}

static npred_status evaluate_session(npred_model *m, const npred_loaders *L, size_t s, npred_tier tier,
                                     npred_eval_session *out)
{
    npred_session_info si;
    npred_loaders_session(L, s, &si);
    snprintf(out->data_key, sizeof out->data_key, "%s", si.data_key);
    int mi = npred_model_session_index(m, si.data_key);
    if (mi < 0) return npred_errorf(NPRED_ERR_ARG, "the model has no readout for session %s", si.data_key);
    int64_t n = si.n_neurons, T = si.tier_n[tier];
    if (npred_model_session_neurons(m, mi) != n)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s: the loader gives %lld neurons, the model's readout has %d",
                            si.data_key, (long long)n, npred_model_session_neurons(m, mi));
    if (!si.tier_enabled[tier])
        return npred_errorf(NPRED_ERR_CONFIG, "session %s: tier %s is not loaded (loader config 'tier')", si.data_key,
                            npred_tier_name(tier));
    if (T < 2)
        return npred_errorf(NPRED_ERR_VALUE, "session %s: tier %s has %lld trials (need at least 2)", si.data_key,
                            npred_tier_name(tier), (long long)T);
    size_t tn = (size_t)T * (size_t)n;
    float *resp = malloc(sizeof(float) * tn), *pred = malloc(sizeof(float) * tn);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)T);
    out->corr = malloc(sizeof(double) * (size_t)n);
    out->corr_avg = malloc(sizeof(double) * (size_t)n);
    out->fev = malloc(sizeof(double) * (size_t)n);
    out->feve = malloc(sizeof(double) * (size_t)n);
    out->oracle = malloc(sizeof(double) * (size_t)n);
    out->unit_ids = malloc(sizeof(int64_t) * (size_t)n);
    out->resp_mean = malloc(sizeof(double) * (size_t)n);
    out->resp_var = malloc(sizeof(double) * (size_t)n);
    npred_metrics_repeats g;
    memset(&g, 0, sizeof g);
    npred_status st = resp && pred && ids && out->corr && out->corr_avg && out->fev && out->feve && out->oracle &&
                                  out->unit_ids && out->resp_mean && out->resp_var
                          ? NPRED_OK
                          : npred_errorf(NPRED_ERR_NOMEM, "session %s: out of memory", si.data_key);
    if (!st) st = collect(m, L, s, tier, resp, pred, ids, T);
    if (!st) st = npred_metrics_repeats_init(&g, ids, T);
    if (!st) st = npred_metrics_corr(out->corr, resp, pred, T, n, NPRED_METRICS_CORR_EPS, 1);
    if (!st) st = npred_metrics_corr_to_average(out->corr_avg, resp, pred, &g, n, NPRED_METRICS_CORR_EPS);
    if (!st) st = npred_metrics_fev(out->fev, out->feve, resp, pred, &g, n);
    if (!st) st = npred_metrics_oracle_jackknife(out->oracle, resp, &g, n);
    if (!st) {
        memcpy(out->unit_ids, si.unit_ids, sizeof(int64_t) * (size_t)n);
        moments(out->resp_mean, out->resp_var, resp, T, n);
        out->readout_xy = malloc(sizeof(float) * 2 * (size_t)n);
        if (!out->readout_xy) st = npred_errorf(NPRED_ERR_NOMEM, "session %s: out of memory", si.data_key);
        else if (npred_model_readout_positions(m, mi, out->readout_xy)) { /* a readout without positions */
            free(out->readout_xy);
            out->readout_xy = NULL;
            npred_clear_error();
        }
    }
    if (!st) {
        summarize(&out->m, out->corr, out->corr_avg, out->fev, out->feve, out->oracle, n);
        out->m.n_trials = T;
        out->m.n_images = g.n_images;
    }
    npred_metrics_repeats_free(&g);
    free(resp);
    free(pred);
    free(ids);
    return st;
}

npred_status npred_evaluate(npred_model *m, const npred_loaders *L, npred_tier tier, npred_eval_results *res)
{
    memset(res, 0, sizeof *res);
    res->tier = tier;
    if ((int)tier < 0 || tier >= NPRED_TIER_COUNT) return npred_errorf(NPRED_ERR_ARG, "evaluate: tier %d", (int)tier);
    size_t S = npred_loaders_count(L);
    if (S == 0) return npred_errorf(NPRED_ERR_ARG, "evaluate: no sessions");
    res->sessions = calloc(S, sizeof *res->sessions);
    if (!res->sessions) return npred_errorf(NPRED_ERR_NOMEM, "evaluate: out of memory");
    res->n_sessions = (int)S;
    int64_t total = 0;
    for (size_t s = 0; s < S; s++) {
        npred_status st = evaluate_session(m, L, s, tier, &res->sessions[s]);
        if (st) return st;
        total += res->sessions[s].m.n_neurons;
    }
    /* overall: every neuron of every session once */
    double *all = malloc(sizeof(double) * 5 * (size_t)total);
    if (!all) return npred_errorf(NPRED_ERR_NOMEM, "evaluate: out of memory");
    double *v[5] = {all, all + total, all + 2 * total, all + 3 * total, all + 4 * total};
    int64_t k = 0;
    for (size_t s = 0; s < S; s++) {
        const npred_eval_session *e = &res->sessions[s];
        size_t bytes = sizeof(double) * (size_t)e->m.n_neurons;
        memcpy(v[0] + k, e->corr, bytes);
        memcpy(v[1] + k, e->corr_avg, bytes);
        memcpy(v[2] + k, e->fev, bytes);
        memcpy(v[3] + k, e->feve, bytes);
        memcpy(v[4] + k, e->oracle, bytes);
        k += e->m.n_neurons;
        res->overall.n_trials += e->m.n_trials;
        res->overall.n_images += e->m.n_images;
    }
    summarize(&res->overall, v[0], v[1], v[2], v[3], v[4], total);
    free(all);
    return NPRED_OK;
}

char *npred_eval_per_neuron_csv(const npred_eval_results *res)
{
    npred_text t;
    npred_text_init(&t);
    npred_text_printf(&t, "session,unit_id,neuron,readout_x,readout_y,single_trial_correlation,correlation_to_average,"
                          "fev,feve,oracle,fraction_oracle,response_mean,response_variance\n");
    for (int s = 0; s < res->n_sessions; s++) {
        const npred_eval_session *e = &res->sessions[s];
        for (int64_t j = 0; j < e->m.n_neurons; j++) {
            npred_text_printf(&t, "%s,%lld,%lld,", e->data_key, (long long)e->unit_ids[j], (long long)j);
            const double v[] = {e->readout_xy ? e->readout_xy[2 * j] : NAN, e->readout_xy ? e->readout_xy[2 * j + 1] : NAN,
                                e->corr[j], e->corr_avg[j], e->fev[j], e->feve[j], e->oracle[j],
                                e->corr[j] / e->oracle[j], e->resp_mean[j], e->resp_var[j]};
            for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
                npred_text_pyfloat(&t, v[k]);
                npred_text_put(&t, k + 1 < sizeof v / sizeof v[0] ? "," : "\n", 1);
            }
        }
    }
    return npred_text_take(&t, "per-neuron table");
}
