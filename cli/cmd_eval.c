/* npred eval: SENSORIUM metrics of a model on a tier of one or more scans. */
#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "cli_video_eval.h"
#include "npred/data.h"
#include "npred/eval.h"
#include "npred/metrics.h"
#include "npred/video_model.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred eval --model MODEL --data SCAN [SCAN ...] [options]\n\n"
            "Predict every trial of a tier (eval mode) and report, per session and over all\n"
            "neurons: single-trial correlation (mean over neurons), correlation to the average\n"
            "over repeats, FEVE (mean over neurons with FEV >= %.2f, as sensorium), the jackknife\n"
            "oracle correlation and the fraction of oracle, both as mean correlation / mean oracle\n"
            "and as the slope of correlation on oracle through the origin (docs/results.md).\n"
            "The ground truth is the normalized response, as in sensorium.\n\n"
            "Data are loaded as sensorium's static_loaders does (normalize true). Options the\n"
            "model implies are set unless --dataset sets them: scale so that the images match\n"
            "the model's input size (e.g. 0.25 for 144x256 scans and a 36x64 model),\n"
            "include_eye_position for a model with a shifter, include_behavior for a model with\n"
            "4 input channels (image + 3 behavior planes) or a modulator.\n\n"
            "options:\n"
            "  --model MODEL     run directory, .safetensors, or .pth (imported on the fly)\n"
            "  --data SCAN...    SENSORIUM scans (folders or .zip); more may follow as arguments\n"
            "  --dataset FILE    static_loaders arguments as JSON (\"paths\", \"batch_size\",\n"
            "                    \"scale\", ...); its paths are used when --data is not given\n"
            "  --tier TIER       train | validation | test | final_test [test]\n"
            "  --batch N         batch size when the dataset config sets none [64]\n"
            "  --json            one JSON object instead of the table (with per-neuron arrays)\n"
            "  --per-neuron FILE one CSV row per neuron (session, unit_id, readout position,\n"
            "                    correlations, FEV, FEVE, oracle, fraction of oracle, response\n"
            "                    mean and variance); '-' for standard output\n"
            "  -h, --help        this help\n\n"
            "A video model (SENSORIUM 2023, npred/video_model.h) is scored as the 2023 kit's\n"
            "get_correlations: every trial of the tier whole, the responses from frame 50 on\n"
            "against the model's last frames, concatenated over the trials, correlated per\n"
            "neuron; the overall number is the mean over all neurons of all sessions. --data\n"
            "takes movie scans, --dataset the mouse_video_loader arguments (JSON; else those\n"
            "the model records), --tier a tier of the scans (oracle | live_test_main | ...)\n"
            "[oracle]; --per-neuron writes session,unit_id,neuron,single_trial_correlation,\n"
            "response_mean,response_variance,prediction_mean,scored_frames (docs/video.md).\n",
            NPRED_METRICS_FEV_THRESHOLD);
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static cJSON *metrics_json(const npred_eval_metrics *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_neurons", (double)m->n_neurons);
    cJSON_AddNumberToObject(o, "n_trials", (double)m->n_trials);
    cJSON_AddNumberToObject(o, "n_images", (double)m->n_images);
    cJSON_AddItemToObject(o, "single_trial_correlation", num_or_null(m->single_trial_corr));
    cJSON_AddItemToObject(o, "correlation_to_average", num_or_null(m->corr_to_average));
    cJSON_AddItemToObject(o, "feve", num_or_null(m->feve));
    cJSON_AddNumberToObject(o, "feve_neurons", (double)m->n_fev_kept);
    cJSON_AddItemToObject(o, "oracle", num_or_null(m->oracle));
    cJSON_AddItemToObject(o, "fraction_oracle", num_or_null(m->fraction_oracle));
    cJSON_AddItemToObject(o, "fraction_oracle_slope", num_or_null(m->fraction_oracle_slope));
    return o;
}

static cJSON *column(const double *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t j = 0; j < n; j++) cJSON_AddItemToArray(a, num_or_null(v[j]));
    return a;
}

/* per-neuron columns of one session */
static cJSON *per_neuron_json(const npred_eval_session *e)
{
    int64_t n = e->m.n_neurons;
    cJSON *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "unit_id");
    for (int64_t j = 0; j < n; j++) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)e->unit_ids[j]));
    cJSON *x = cJSON_AddArrayToObject(o, "readout_x"), *y = cJSON_AddArrayToObject(o, "readout_y");
    for (int64_t j = 0; j < n; j++) {
        cJSON_AddItemToArray(x, e->readout_xy ? cJSON_CreateNumber(e->readout_xy[2 * j]) : cJSON_CreateNull());
        cJSON_AddItemToArray(y, e->readout_xy ? cJSON_CreateNumber(e->readout_xy[2 * j + 1]) : cJSON_CreateNull());
    }
    cJSON_AddItemToObject(o, "single_trial_correlation", column(e->corr, n));
    cJSON_AddItemToObject(o, "correlation_to_average", column(e->corr_avg, n));
    cJSON_AddItemToObject(o, "fev", column(e->fev, n));
    cJSON_AddItemToObject(o, "feve", column(e->feve, n));
    cJSON_AddItemToObject(o, "oracle", column(e->oracle, n));
    cJSON *f = cJSON_AddArrayToObject(o, "fraction_oracle");
    for (int64_t j = 0; j < n; j++) cJSON_AddItemToArray(f, num_or_null(e->corr[j] / e->oracle[j]));
    cJSON_AddItemToObject(o, "response_mean", column(e->resp_mean, n));
    cJSON_AddItemToObject(o, "response_variance", column(e->resp_var, n));
    return o;
}

static void metrics_row(const char *name, const npred_eval_metrics *m)
{
    printf("%-24s %8lld %7lld %7lld %12.4f %12.4f %8.4f (%lld) %8.4f %9.4f %9.4f\n", name, (long long)m->n_neurons,
           (long long)m->n_trials, (long long)m->n_images, m->single_trial_corr, m->corr_to_average, m->feve,
           (long long)m->n_fev_kept, m->oracle, m->fraction_oracle, m->fraction_oracle_slope);
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *dataset = NULL, *tier_name = NULL, *per_neuron = NULL;
    int json = 0, batch = 0;
    cli_list scans = {0};
    const cli_opt opts[] = {{"model", CLI_STR, &model, 0, 0},       {"data", CLI_LIST, &scans, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0},   {"tier", CLI_STR, &tier_name, 0, 0},
                            {"batch", CLI_INT, &batch, 1, INT_MAX}, {"json", CLI_FLAG, &json, 0, 0},
                            {"per-neuron", CLI_STR, &per_neuron, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"eval", help, opts, &scans}; /* more scans after --data */
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char **data = scans.v;
    size_t n_data = (size_t)scans.n;
    if (!model) return free(data), cli_usage_error("eval", "missing --model");
    if (per_neuron && !strcmp(per_neuron, "-") && json)
        return free(data), cli_usage_error("eval", "--per-neuron - and --json both write to standard output; choose one");
    if (npred_video_model_probe(model)) {
        if (batch) return free(data), cli_usage_error("eval", "--batch: a video model is evaluated one whole trial at a time");
        r = cli_video_eval(model, dataset, data, n_data, tier_name ? tier_name : "oracle", json, per_neuron);
        free(data);
        return r;
    }
    if (!batch) batch = 64;
    if (!tier_name) tier_name = "test";
    int quiet = json || (per_neuron && !strcmp(per_neuron, "-")); /* standard output carries data */
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier)) return free(data), cli_usage_error("eval", "--tier: %s", npred_last_error());

    int rc = 1;
    npred_status st;
    npred_loader_config cfg;
    npred_loader_config_init(&cfg);
    npred_model *m = NULL;
    npred_loaders *L = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    if ((st = npred_model_open(&m, model, 0, 0, batch))) {
        cli_fail(st, "eval");
        goto done;
    }
    npred_loader_config_free(&cfg);
    if ((rc = cli_open_loaders("eval", m, dataset, data, n_data, batch, quiet, &cfg, &L))) goto done;
    rc = 1;
    if ((st = npred_evaluate(m, L, tier, &res))) {
        cli_fail(st, "eval");
        goto done;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddStringToObject(o, "tier", npred_tier_name(tier));
        cJSON_AddItemToObject(o, "scale", cfg.scale.set ? cJSON_CreateNumber(cfg.scale.v) : cJSON_CreateNull());
        cJSON_AddNumberToObject(o, "fev_threshold", NPRED_METRICS_FEV_THRESHOLD);
        cJSON *a = cJSON_AddArrayToObject(o, "sessions");
        for (int i = 0; i < res.n_sessions; i++) {
            cJSON *e = metrics_json(&res.sessions[i].m);
            cJSON_AddItemToObject(e, "data_key", cJSON_CreateString(res.sessions[i].data_key));
            cJSON_AddItemToObject(e, "per_neuron", per_neuron_json(&res.sessions[i]));
            cJSON_AddItemToArray(a, e);
        }
        cJSON_AddItemToObject(o, "overall", metrics_json(&res.overall));
        char *s = cJSON_Print(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else if (!quiet) {
        printf("model %s, tier %s\n", model, npred_tier_name(tier));
        printf("%-24s %8s %7s %7s %12s %12s %13s %8s %9s %9s\n", "session", "neurons", "trials", "images", "single-trial",
               "corr-to-avg", "FEVE (n)", "oracle", "fraction", "slope");
        for (int i = 0; i < res.n_sessions; i++) metrics_row(res.sessions[i].data_key, &res.sessions[i].m);
        if (res.n_sessions > 1) metrics_row("overall", &res.overall);
        printf("FEVE: mean over neurons with FEV >= %.2f; fraction = mean single-trial correlation / mean oracle;\n"
               "slope = regression slope of correlation on oracle through the origin (Lurz et al. 2021)\n",
               NPRED_METRICS_FEV_THRESHOLD);
    }
    if (per_neuron && cli_write_per_neuron("eval --per-neuron", per_neuron, npred_eval_per_neuron_csv(&res), quiet)) goto done;
    rc = 0;
done:
    npred_eval_results_free(&res);
    npred_loaders_free(L);
    npred_model_free(m);
    npred_loader_config_free(&cfg);
    free(data);
    return rc;
}
