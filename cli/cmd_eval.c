/* npred eval: SENSORIUM metrics of a model on a tier of one or more scans. */
#include <cJSON.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "npred/data.h"
#include "npred/eval.h"
#include "npred/metrics.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred eval --model MODEL --data SCAN [SCAN ...] [options]\n\n"
            "Predict every trial of a tier (eval mode) and report, per session and over all\n"
            "neurons: single-trial correlation (mean over neurons), correlation to the average\n"
            "over repeats, FEVE (mean over neurons with FEV >= %.2f, as sensorium), the jackknife\n"
            "oracle correlation and the fraction of oracle (single-trial correlation / oracle).\n"
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
            "  --json            one JSON object instead of the table\n"
            "  -h, --help        this help\n",
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
    return o;
}

static void metrics_row(const char *name, const npred_eval_metrics *m)
{
    printf("%-24s %8lld %7lld %7lld %12.4f %12.4f %8.4f (%lld) %8.4f %9.4f\n", name, (long long)m->n_neurons,
           (long long)m->n_trials, (long long)m->n_images, m->single_trial_corr, m->corr_to_average, m->feve,
           (long long)m->n_fev_kept, m->oracle, m->fraction_oracle);
}

/* Apply the options the model implies where the dataset config left them unset. */
static void model_defaults(npred_loader_config *cfg, const cJSON *given, const npred_model *m)
{
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    int bc = npred_model_behavior_channels(m);
    if (!cJSON_HasObjectItem(given, "include_eye_position") && npred_model_has_shifter(m)) cfg->include_eye_position = 1;
    if (!cJSON_HasObjectItem(given, "include_behavior") && (c == 4 || bc > 0)) cfg->include_behavior = 1;
    if (!cJSON_HasObjectItem(given, "add_behavior_as_channels") && bc > 0 && c != 4) cfg->add_behavior_as_channels = 0;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *dataset = NULL, *tier_name = "test";
    int json = 0, batch = 64;
    cli_list scans = {0};
    const cli_opt opts[] = {{"model", CLI_STR, &model, 0, 0},       {"data", CLI_LIST, &scans, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0},   {"tier", CLI_STR, &tier_name, 0, 0},
                            {"batch", CLI_INT, &batch, 1, INT_MAX}, {"json", CLI_FLAG, &json, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"eval", help, opts, &scans}; /* more scans after --data */
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char **data = scans.v;
    size_t n_data = (size_t)scans.n;
    if (!model) return free(data), cli_usage_error("eval", "missing --model");
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier)) return free(data), cli_usage_error("eval", "--tier: %s", npred_last_error());

    int rc = 1;
    npred_status st;
    npred_loader_config cfg;
    npred_loader_config_init(&cfg);
    cfg.batch_size = batch;
    char **jpaths = NULL, *text = NULL;
    size_t n_jpaths = 0;
    cJSON *given = NULL;
    npred_model *m = NULL;
    npred_loaders *L = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    if (dataset) {
        if (!(text = cli_read_text(dataset))) {
            cli_fail(NPRED_ERR_IO, "eval");
            goto done;
        }
        given = cJSON_Parse(text);
        if ((st = npred_loader_config_parse(&cfg, text, &jpaths, &n_jpaths))) {
            cli_fail(npred_error_prefix(st, "%s", dataset), "eval");
            goto done;
        }
    }
    const char *const *paths = n_data ? data : (const char *const *)jpaths;
    size_t n_paths = n_data ? n_data : n_jpaths;
    if (!n_paths) {
        rc = cli_usage_error("eval", "no scans: give --data SCAN or \"paths\" in --dataset");
        goto done;
    }
    if ((st = npred_model_open(&m, model, 0, 0, batch))) {
        cli_fail(st, "eval");
        goto done;
    }
    model_defaults(&cfg, given, m);
    if ((st = npred_loaders_open(&L, paths, n_paths, &cfg))) {
        cli_fail(st, "eval");
        goto done;
    }
    /* scale the images to the model's input size unless the config chose a scale */
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    if (!cfg.scale.set && (si.img_h != h || si.img_w != w)) {
        double scale = (double)h / si.img_h;
        for (size_t s = 0; s < npred_loaders_count(L); s++) {
            npred_loaders_session(L, s, &si);
            if (npred_rescale_size(si.img_h, scale) != h || npred_rescale_size(si.img_w, scale) != w) {
                fprintf(stderr,
                        "npred eval: %s: images are %d x %d; no scale maps them to the model's %d x %d "
                        "(set \"scale\" in --dataset)\n",
                        paths[s], si.img_h, si.img_w, h, w);
                goto done;
            }
        }
        cfg.scale.set = 1;
        cfg.scale.v = scale;
        npred_loaders_free(L);
        L = NULL;
        if ((st = npred_loaders_open(&L, paths, n_paths, &cfg))) {
            cli_fail(st, "eval");
            goto done;
        }
        if (!json) fprintf(stderr, "npred eval: images scaled by %g to the model's %d x %d\n", scale, h, w);
    }
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
            cJSON_AddItemToArray(a, e);
        }
        cJSON_AddItemToObject(o, "overall", metrics_json(&res.overall));
        char *s = cJSON_Print(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else {
        printf("model %s, tier %s\n", model, npred_tier_name(tier));
        printf("%-24s %8s %7s %7s %12s %12s %13s %8s %9s\n", "session", "neurons", "trials", "images", "single-trial",
               "corr-to-avg", "FEVE (n)", "oracle", "fraction");
        for (int i = 0; i < res.n_sessions; i++) metrics_row(res.sessions[i].data_key, &res.sessions[i].m);
        if (res.n_sessions > 1) metrics_row("overall", &res.overall);
        printf("FEVE: mean over neurons with FEV >= %.2f; fraction = single-trial correlation / oracle\n",
               NPRED_METRICS_FEV_THRESHOLD);
    }
    rc = 0;
done:
    npred_eval_results_free(&res);
    npred_loaders_free(L);
    npred_model_free(m);
    npred_loader_paths_free(jpaths, n_jpaths);
    cJSON_Delete(given);
    free(text);
    npred_loader_config_free(&cfg);
    free(data);
    return rc;
}
