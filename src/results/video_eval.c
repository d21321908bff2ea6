/* Video models scored and submitted as the SENSORIUM 2023 kit does (npred/video_eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"
#include "npred/metrics.h"
#include "npred/npy.h"
#include "npred/video_eval.h"
#include "train/video_scores.h"

/* One session of the loaders checked against the model: its key, neurons, unit ids
 * (malloc'ed) and the model's session index. */
typedef struct {
    npred_video_session_info si;
    int64_t *unit_ids;
    int tier;
} session_ctx;

static npred_status session_open(session_ctx *c, npred_video_model *m, const npred_video_loaders *L, size_t s,
                                 const char *tier)
{
    memset(c, 0, sizeof *c);
    npred_video_loaders_session(L, s, &c->si);
    const char *key = c->si.data_key;
    npred_video_dataset_info di;
    npred_video_dataset_get_info(c->si.dataset, &di);
    const char *path = di.path;
    int ms = npred_video_model_session_index(m, key);
    if (ms < 0) return npred_errorf(NPRED_ERR_ARG, "%s: the model has no session '%s'", path, key);
    if (npred_video_model_session_neurons(m, ms) != c->si.n_neurons)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s: the model has %d neurons, the scan %lld", key,
                            npred_video_model_session_neurons(m, ms), (long long)c->si.n_neurons);
    int mc, mh, mw;
    npred_video_model_input_shape(m, &mc, &mh, &mw);
    if (mc != c->si.channels || mh != c->si.height || mw != c->si.width)
        return npred_errorf(NPRED_ERR_SHAPE,
                            "session %s: the loader gives videos of %d x %d x %d (channels x height x width), the model "
                            "takes %d x %d x %d",
                            key, c->si.channels, c->si.height, c->si.width, mc, mh, mw);
    if (npred_video_model_has_shifter(m) && !c->si.pupil_dim)
        return npred_errorf(NPRED_ERR_ARG, "session %s: the model has a shifter; the loader gives no pupil_center "
                            "(include_pupil_centers)", key);
    c->tier = npred_video_loaders_tier(L, s, tier);
    if (c->tier < 0) return npred_errorf(NPRED_ERR_ARG, "%s: no trials of tier '%s'", path, tier);
    const npred_array *u = npred_video_dataset_neuron_info(c->si.dataset, "unit_ids");
    if (!u) return npred_errorf(NPRED_ERR_FORMAT, "%s: no meta/neurons/unit_ids", path);
    npred_status st = npred_array_to_i64(u, &c->unit_ids);
    if (st) return npred_error_prefix(st, "%s: meta/neurons/unit_ids", path);
    return NPRED_OK;
}

/* The model's eval output for trial `trial` of session s: the sample in b, rates (T', n)
 * in *rates (grown as needed; *cap floats), *T1 = T'. */
static npred_status predict_trial(npred_video_model *m, const npred_video_loaders *L, size_t s, int64_t trial,
                                  npred_rng *rng, npred_video_batch *b, float **rates, size_t *cap, int *T1)
{
    npred_status st = npred_video_loaders_get(L, s, &trial, NULL, 1, rng, b);
    if (st) return st;
    if (npred_video_model_has_shifter(m) && b->resp_f != b->f)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s, trial %lld: %d video frames but %d pupil_center frames "
                            "(scale != 1 rescales the frames of the videos only)", b->data_key, (long long)trial,
                            b->f, b->resp_f);
    *T1 = npred_video_model_output_frames(m, b->f);
    if (*T1 < 1)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s, trial %lld: %d frames do not reach past the model's temporal "
                            "cut-off of %d", b->data_key, (long long)trial, b->f, npred_video_model_temporal_cutoff(m));
    size_t need = (size_t)*T1 * (size_t)b->n_neurons;
    if (need > *cap) {
        float *r = realloc(*rates, need * sizeof *r);
        if (!r) return npred_errorf(NPRED_ERR_NOMEM, "session %s: out of memory for the predictions", b->data_key);
        *rates = r;
        *cap = need;
    }
    return npred_video_model_predict(m, b->data_key, b->videos, 1, b->c, b->f, b->h, b->w, b->pupil_center, *rates);
}

static void session_free(npred_video_eval_session *e)
{
    free(e->data_key);
    free(e->unit_ids);
    free(e->correlation);
    free(e->response_mean);
    free(e->response_variance);
    free(e->prediction_mean);
}

void npred_video_eval_results_free(npred_video_eval_results *res)
{
    if (!res) return;
    for (int i = 0; i < res->n_sessions; i++) session_free(&res->sessions[i]);
    free(res->sessions);
    free(res->tier);
    memset(res, 0, sizeof *res);
}

/* score one session: the scored frames of every trial of the tier gathered into
 * target / output (rows, n) as the kit concatenates them */
static npred_status eval_session(npred_video_model *m, const npred_video_loaders *L, size_t s, const char *tier,
                                 npred_rng *rng, npred_video_eval_session *e)
{
    session_ctx c;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    float *rates = NULL, *target = NULL, *output = NULL;
    size_t cap = 0, rows_cap = 0;
    int64_t rows = 0;
    npred_status st = session_open(&c, m, L, s, tier);
    if (!st) st = npred_video_batch_init(&b, L, 1);
    const int64_t n = c.si.n_neurons;
    const int skip = NPRED_VIDEO_SCORE_SKIP;
    for (int64_t k = 0; !st && k < c.si.tier_n[c.tier]; k++) {
        int T1;
        int64_t trial = c.si.tier_idx[c.tier][k];
        st = predict_trial(m, L, s, trial, rng, &b, &rates, &cap, &T1);
        if (st) break;
        int frames = b.resp_f;
        int64_t keep;
        st = npred_video_score_rows(&keep, &frames, &T1, 1, skip);
        if (st) {
            st = npred_error_prefix(st, "session %s, trial %lld", c.si.data_key, (long long)trial);
            break;
        }
        if ((size_t)(rows + keep) > rows_cap) {
            size_t nc = rows_cap ? 2 * rows_cap : 1024;
            while (nc < (size_t)(rows + keep)) nc *= 2;
            float *t = realloc(target, nc * (size_t)n * sizeof *t);
            if (t) target = t;
            float *o = t ? realloc(output, nc * (size_t)n * sizeof *o) : NULL;
            if (o) output = o;
            if (!t || !o) {
                st = npred_errorf(NPRED_ERR_NOMEM, "session %s: out of memory for %zu scored frames", c.si.data_key, nc);
                break;
            }
            rows_cap = nc;
        }
        const float *resp = b.responses, *pred = rates;
        st = npred_video_score_matrices(target + rows * n, output + rows * n, &resp, &frames, &pred, &T1, 1, (int)n,
                                        skip);
        rows += keep;
        e->n_trials++;
    }
    if (!st && !e->n_trials) st = npred_errorf(NPRED_ERR_ARG, "scan %s: no trials of tier '%s'", c.si.data_key, tier);
    if (!st) {
        e->data_key = strdup(c.si.data_key);
        e->n_neurons = n;
        e->n_frames = rows;
        e->unit_ids = c.unit_ids;
        c.unit_ids = NULL;
        e->correlation = malloc((size_t)n * sizeof(double));
        e->response_mean = calloc((size_t)n, sizeof(double));
        e->response_variance = calloc((size_t)n, sizeof(double));
        e->prediction_mean = calloc((size_t)n, sizeof(double));
        if (!e->data_key || !e->correlation || !e->response_mean || !e->response_variance || !e->prediction_mean)
            st = npred_errorf(NPRED_ERR_NOMEM, "session %s: out of memory", c.si.data_key);
    }
    if (!st) st = npred_metrics_corr(e->correlation, target, output, rows, n, NPRED_METRICS_CORR_EPS, 1);
    if (!st) {
        double sum = 0;
        for (int64_t j = 0; j < n; j++) {
            double rm = 0, pm = 0, rv = 0;
            for (int64_t r = 0; r < rows; r++) rm += target[r * n + j], pm += output[r * n + j];
            rm /= (double)rows, pm /= (double)rows;
            for (int64_t r = 0; r < rows; r++) rv += (target[r * n + j] - rm) * (target[r * n + j] - rm);
            e->response_mean[j] = rm;
            e->prediction_mean[j] = pm;
            e->response_variance[j] = rv / (double)rows;
            sum += e->correlation[j];
        }
        e->mean_correlation = sum / (double)n;
    }
    free(c.unit_ids);
    npred_video_batch_free(&b);
    free(rates), free(target), free(output);
    return st;
}

npred_status npred_video_evaluate(npred_video_model *m, const npred_video_loaders *L, const char *tier, npred_rng *rng,
                                  npred_video_eval_results *res)
{
    memset(res, 0, sizeof *res);
    if (!m || !L || !tier) return npred_errorf(NPRED_ERR_ARG, "npred_video_evaluate: no model, loaders or tier");
    size_t ns = npred_video_loaders_count(L);
    res->skip = NPRED_VIDEO_SCORE_SKIP;
    res->tier = strdup(tier);
    res->sessions = calloc(ns ? ns : 1, sizeof *res->sessions);
    if (!res->tier || !res->sessions) return npred_errorf(NPRED_ERR_NOMEM, "npred_video_evaluate: out of memory");
    double sum = 0;
    for (size_t s = 0; s < ns; s++) {
        npred_video_eval_session *e = &res->sessions[res->n_sessions++];
        npred_status st = eval_session(m, L, s, tier, rng, e);
        if (st) return st;
        for (int64_t j = 0; j < e->n_neurons; j++) sum += e->correlation[j];
        res->n_neurons += e->n_neurons;
    }
    res->correlation = res->n_neurons ? sum / (double)res->n_neurons : NAN;
    return NPRED_OK;
}

char *npred_video_eval_per_neuron_csv(const npred_video_eval_results *res)
{
    npred_text t;
    npred_text_init(&t);
    npred_text_printf(&t, "session,unit_id,neuron,single_trial_correlation,response_mean,response_variance,"
                          "prediction_mean,scored_frames\n");
    for (int s = 0; s < res->n_sessions; s++) {
        const npred_video_eval_session *e = &res->sessions[s];
        for (int64_t j = 0; j < e->n_neurons; j++) {
            npred_text_printf(&t, "%s,%lld,%lld,", e->data_key, (long long)e->unit_ids[j], (long long)j);
            const double v[] = {e->correlation[j], e->response_mean[j], e->response_variance[j], e->prediction_mean[j]};
            for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
                npred_text_pyfloat(&t, v[k]);
                npred_text_put(&t, ",", 1);
            }
            npred_text_printf(&t, "%lld\n", (long long)e->n_frames);
        }
    }
    return npred_text_take(&t, "per-neuron table");
}

npred_status npred_video_submission_add_tier(npred_video_submission *sub, npred_video_model *m,
                                             const npred_video_loaders *L, const char *tier, int64_t *n_rows)
{
    if (n_rows) *n_rows = 0;
    if (!sub || !m || !L || !tier)
        return npred_errorf(NPRED_ERR_ARG, "npred_video_submission_add_tier: no file, model, loaders or tier");
    npred_status st = NPRED_OK;
    float *rates = NULL, *pred = NULL;
    uint32_t *ids = NULL;
    size_t cap = 0, pred_cap = 0;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    for (size_t s = 0; !st && s < npred_video_loaders_count(L); s++) {
        session_ctx c;
        st = session_open(&c, m, L, s, tier);
        const int64_t n = c.si.n_neurons;
        if (!st && c.si.frames)
            st = npred_errorf(NPRED_ERR_ARG, "scan %s: the submission needs whole trials (a loader with to_cut false)",
                              c.si.data_key);
        if (!st && !(ids = realloc(ids, (size_t)(n ? n : 1) * sizeof *ids)))
            st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int64_t j = 0; !st && j < n; j++) {
            if (c.unit_ids[j] < 0 || c.unit_ids[j] > (int64_t)UINT32_MAX)
                st = npred_errorf(NPRED_ERR_VALUE, "scan %s: meta/neurons/unit_ids[%lld] = %lld does not fit the "
                                  "submission's uint32 neuron_ids", c.si.data_key, (long long)j, (long long)c.unit_ids[j]);
            else ids[j] = (uint32_t)c.unit_ids[j];
        }
        npred_video_batch_free(&b);
        if (!st) st = npred_video_batch_init(&b, L, 1);
        for (int64_t k = 0; !st && k < c.si.tier_n[c.tier]; k++) {
            int T1;
            int64_t trial = c.si.tier_idx[c.tier][k];
            st = predict_trial(m, L, s, trial, NULL, &b, &rates, &cap, &T1);
            int keep = b.resp_f - NPRED_VIDEO_SCORE_SKIP;
            if (!st && (keep < 1 || T1 < keep))
                st = npred_errorf(NPRED_ERR_SHAPE, "session %s, trial %lld: %d frames, the model gives %d; the last "
                                  "%d (after the first %d) are submitted", c.si.data_key, (long long)trial, b.resp_f, T1,
                                  keep, NPRED_VIDEO_SCORE_SKIP);
            if (st) break;
            size_t need = (size_t)keep * (size_t)n;
            if (need > pred_cap) {
                float *p = realloc(pred, need * sizeof *p);
                if (!p) {
                    st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
                    break;
                }
                pred = p;
                pred_cap = need;
            }
            /* the kit: out[:, -length:, :].permute(0, 2, 1) -> (neurons, frames) */
            for (int t = 0; t < keep; t++)
                for (int64_t j = 0; j < n; j++) pred[(size_t)j * keep + t] = rates[(size_t)(T1 - keep + t) * n + j];
            st = npred_video_submission_add(sub, c.si.data_key, trial, pred, n, keep, ids);
            if (!st && n_rows) (*n_rows)++;
        }
        free(c.unit_ids);
    }
    npred_video_batch_free(&b);
    free(rates), free(pred), free(ids);
    return st;
}
