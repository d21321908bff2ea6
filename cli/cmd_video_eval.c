/* The video-model side of npred eval and npred predict (SENSORIUM 2023): the kit's
 * per-neuron correlation on a tier, and the Parquet submission file of a tier. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "cli_video_eval.h"
#include "npred/video_eval.h"

int cli_video_open_loaders(const char *cmd, npred_video_model *m, const char *dataset, const char *const *data,
                           size_t n_data, size_t max_scans, npred_video_loaders **L, char **first_scan)
{
    *L = NULL;
    if (first_scan) *first_scan = NULL;
    npred_video_loader_config cfg;
    npred_video_loader_config_init(&cfg);
    cfg.batch_size = 1;
    char **jpaths = NULL, **rpaths = NULL, *text = NULL;
    size_t n_jpaths = 0, n_rpaths = 0;
    int rc = 1;
    npred_status st;
    const char *rec = npred_video_model_loader_json(m);
    if (rec && (st = npred_video_loader_config_parse(&cfg, rec, &rpaths, &n_rpaths))) {
        cli_fail(npred_error_prefix(st, "the model's recorded loader arguments"), cmd);
        goto done;
    }
    if (dataset) {
        if (!(text = cli_read_text(dataset))) {
            cli_fail(NPRED_ERR_IO, cmd);
            goto done;
        }
        if ((st = npred_video_loader_config_parse(&cfg, text, &jpaths, &n_jpaths))) {
            cli_fail(npred_error_prefix(st, "%s", dataset), cmd);
            goto done;
        }
    }
    const char *const *paths = NULL;
    size_t n_paths = 0;
    if ((rc = cli_dataset_paths(cmd, dataset, (const char *const *)jpaths, n_jpaths, data, n_data, &paths, &n_paths)))
        goto done;
    if (max_scans && n_paths > max_scans) {
        rc = cli_usage_error(cmd, "this takes %zu scan(s); %s names %zu", max_scans,
                             n_data ? "--data" : dataset, n_paths);
        goto done;
    }
    rc = 1;
    cfg.to_cut = 0; /* the help and docs say so: scores and submissions take whole trials */
    cfg.batch_size = 1;
    if ((st = npred_video_loaders_open(L, paths, n_paths, &cfg))) {
        cli_fail(st, cmd);
        goto done;
    }
    if (first_scan && !(*first_scan = strdup(paths[0]))) {
        npred_video_loaders_free(*L);
        *L = NULL;
        cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), cmd);
        goto done;
    }
    rc = 0;
done:
    npred_loader_paths_free(jpaths, n_jpaths);
    npred_loader_paths_free(rpaths, n_rpaths);
    free(text);
    npred_video_loader_config_free(&cfg);
    return rc;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static cJSON *column(const double *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t j = 0; j < n; j++) cJSON_AddItemToArray(a, num_or_null(v[j]));
    return a;
}

static void print_json(const char *model, const npred_video_eval_results *res)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "tier", res->tier);
    cJSON_AddNumberToObject(o, "skip", res->skip);
    cJSON *a = cJSON_AddArrayToObject(o, "sessions");
    for (int i = 0; i < res->n_sessions; i++) {
        const npred_video_eval_session *e = &res->sessions[i];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "data_key", e->data_key);
        cJSON_AddNumberToObject(s, "n_neurons", (double)e->n_neurons);
        cJSON_AddNumberToObject(s, "n_trials", (double)e->n_trials);
        cJSON_AddNumberToObject(s, "scored_frames", (double)e->n_frames);
        cJSON_AddItemToObject(s, "single_trial_correlation", num_or_null(e->mean_correlation));
        cJSON *p = cJSON_AddObjectToObject(s, "per_neuron"), *ids = cJSON_AddArrayToObject(p, "unit_id");
        for (int64_t j = 0; j < e->n_neurons; j++) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)e->unit_ids[j]));
        cJSON_AddItemToObject(p, "single_trial_correlation", column(e->correlation, e->n_neurons));
        cJSON_AddItemToObject(p, "response_mean", column(e->response_mean, e->n_neurons));
        cJSON_AddItemToObject(p, "response_variance", column(e->response_variance, e->n_neurons));
        cJSON_AddItemToObject(p, "prediction_mean", column(e->prediction_mean, e->n_neurons));
        cJSON_AddItemToArray(a, s);
    }
    cJSON *all = cJSON_AddObjectToObject(o, "overall");
    cJSON_AddNumberToObject(all, "n_neurons", (double)res->n_neurons);
    cJSON_AddItemToObject(all, "single_trial_correlation", num_or_null(res->correlation));
    char *s = cJSON_Print(o);
    printf("%s\n", s ? s : "{}");
    free(s);
    cJSON_Delete(o);
}

int cli_video_eval(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                   int json, const char *per_neuron)
{
    int quiet = json || (per_neuron && !strcmp(per_neuron, "-"));
    int rc = 1;
    npred_status st;
    npred_video_model *m = NULL;
    npred_video_loaders *L = NULL;
    npred_video_eval_results res;
    memset(&res, 0, sizeof res);
    if ((st = npred_video_model_load(&m, model, 1))) {
        cli_fail(st, "eval");
        goto done;
    }
    if ((rc = cli_video_open_loaders("eval", m, dataset, data, n_data, 0, &L, NULL))) goto done;
    rc = 1;
    if ((st = npred_video_evaluate(m, L, tier, NULL, &res))) {
        cli_fail(st, "eval");
        goto done;
    }
    if (json) print_json(model, &res);
    else if (!quiet) {
        printf("model %s, tier %s: whole trials, frames from %d on (the kit's get_correlations)\n", model, res.tier,
               res.skip);
        printf("%-60s %8s %7s %8s %12s\n", "session", "neurons", "trials", "frames", "single-trial");
        for (int i = 0; i < res.n_sessions; i++) {
            const npred_video_eval_session *e = &res.sessions[i];
            printf("%-60s %8lld %7lld %8lld %12.4f\n", e->data_key, (long long)e->n_neurons, (long long)e->n_trials,
                   (long long)e->n_frames, e->mean_correlation);
        }
        printf("%-60s %8lld %7s %8s %12.4f\n", "overall (mean over all neurons)", (long long)res.n_neurons, "", "",
               res.correlation);
    }
    if (per_neuron && cli_write_per_neuron("eval --per-neuron", per_neuron, npred_video_eval_per_neuron_csv(&res), quiet)) goto done;
    rc = 0;
done:
    npred_video_eval_results_free(&res);
    npred_video_loaders_free(L);
    npred_video_model_free(m);
    return rc;
}

int cli_video_submit(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                     const char *out)
{
    if (!strcmp(out, "-"))
        return cli_usage_error("predict", "--submission -: the 2023 submission is a binary Parquet file; name a file");
    int rc = 1;
    npred_status st;
    npred_video_model *m = NULL;
    npred_video_loaders *L = NULL;
    npred_video_submission *sub = NULL;
    int64_t rows = 0;
    if ((st = npred_video_model_load(&m, model, 1))) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((rc = cli_video_open_loaders("predict", m, dataset, data, n_data, 0, &L, NULL))) goto done;
    rc = 1;
    if ((st = npred_video_submission_open(&sub, out, NULL)) || (st = npred_video_submission_add_tier(sub, m, L, tier, &rows))) {
        cli_fail(st, "predict --submission");
        goto done;
    }
    st = npred_video_submission_close(sub);
    sub = NULL;
    if (st) {
        cli_fail(st, "predict --submission");
        goto done;
    }
    printf("submission: %s, tier %s (%lld trials of %zu session%s)\n", out, tier, (long long)rows,
           npred_video_loaders_count(L), npred_video_loaders_count(L) == 1 ? "" : "s");
    rc = 0;
done:
    npred_video_submission_abort(sub);
    npred_video_loaders_free(L);
    npred_video_model_free(m);
    return rc;
}
