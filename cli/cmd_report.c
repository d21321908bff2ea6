/* npred report RUN|MODEL [--data SCAN...] --out DIR: every picture of a run or of
 * any model, and an index.html that shows them with the headline numbers. */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "cli_report.h"
#include "npred/eval.h"
#include "npred/report.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred report RUN|MODEL [--data SCAN ...] --out DIR [options]\n\n"
            "(Re)draw every picture of a training run or of any model (run folder, .safetensors,\n"
            "or .pth) into DIR, with DIR/index.html showing them all with the headline numbers:\n"
            "  training curves (from the run's log.csv), first-layer filters; with data: the\n"
            "  per-neuron test correlation histogram (all and per session), correlation vs\n"
            "  oracle, readout positions (against the simulator's ground truth when the data\n"
            "  hold it) and over the retinotopic map coloured by cortical coordinates, the\n"
            "  per-neuron table (neurons.csv); MEIs / RFs / tuning of 'npred mei/rf/tuning'\n"
            "  output folders. Data default to the run's config.json \"data\" list.\n\n"
            "options:\n"
            "  --out DIR          output folder (created; files written atomically)\n"
            "  --data SCAN...     SENSORIUM scans to evaluate on\n"
            "  --dataset FILE     static_loaders arguments as JSON (as npred eval)\n"
            "  --tier TIER        the tier evaluated [test]\n"
            "  --no-data          do not evaluate, even when the run names its data\n"
            "  --mei DIR, --rf DIR, --tuning DIR   output folders of npred mei / rf / tuning\n"
            "                     (their .png pictures are shown; repeatable)\n"
            "  --batch N          batch size [64]\n"
            "  -h, --help         this help\n");
}

typedef struct {
    char file[256];
    char caption[512];
} picture;

typedef struct {
    picture *p;
    int n, cap;
} picture_list;

static void add_picture(picture_list *l, const char *dir, const char *file, const char *caption)
{
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (stat(path, &sb) != 0) return; /* not drawn (e.g. a readout without positions) */
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        picture *np = realloc(l->p, sizeof *np * (size_t)cap);
        if (!np) return;
        l->p = np;
        l->cap = cap;
    }
    snprintf(l->p[l->n].file, sizeof l->p[l->n].file, "%s", file);
    snprintf(l->p[l->n].caption, sizeof l->p[l->n].caption, "%s", caption);
    l->n++;
}

static npred_status copy_file(const char *src, const char *dst)
{
    void *buf;
    size_t len;
    npred_status st = npred_file_read_all(src, &buf, &len);
    if (st) return st;
    st = npred_write_atomic(dst, buf, len);
    free(buf);
    return st;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* the run's data list from RUN/config.json ("data": [...]), the paths that exist */
static char **run_data(const char *run, size_t *n)
{
    *n = 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", run);
    if (!exists(p)) return NULL;
    char *text = cli_read_text(p);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
    char **out = cJSON_IsArray(d) ? calloc((size_t)cJSON_GetArraySize(d) + 1, sizeof *out) : NULL;
    cJSON *e;
    if (out)
        cJSON_ArrayForEach(e, d) if (cJSON_IsString(e) && exists(e->valuestring)) out[(*n)++] = strdup(e->valuestring);
    cJSON_Delete(j);
    npred_clear_error();
    return out;
}

/* text with & < > " escaped for HTML */
static void html_put(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void num_cell(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "<td>%.4f</td>", v);
    else fputs("<td>&ndash;</td>", f);
}

static void metrics_row(FILE *f, const char *name, const npred_eval_metrics *m)
{
    fputs("<tr><td>", f);
    html_put(f, name);
    fprintf(f, "</td><td>%lld</td><td>%lld</td><td>%lld</td>", (long long)m->n_neurons, (long long)m->n_trials,
            (long long)m->n_images);
    num_cell(f, m->single_trial_corr);
    num_cell(f, m->corr_to_average);
    num_cell(f, m->feve);
    num_cell(f, m->oracle);
    num_cell(f, m->fraction_oracle);
    num_cell(f, m->fraction_oracle_slope);
    fputs("</tr>\n", f);
}

static npred_status write_index(const char *dir, const char *model, const char *const *data, size_t n_data,
                                const npred_eval_results *res, const cli_gt_summary *gt, const picture_list *pics)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return npred_errorf(NPRED_ERR_NOMEM, "index.html: out of memory");
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>npred report: ", f);
    html_put(f, model);
    fputs("</title>\n<style>\nbody{font-family:sans-serif;margin:2em;max-width:1300px}\n"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\n"
          "td:first-child,th:first-child{text-align:left}\nfigure{display:inline-block;margin:1em;vertical-align:top}\n"
          "figure img{max-width:600px}\nfigcaption{max-width:600px;font-size:90%}\n</style>\n</head>\n<body>\n", f);
    fputs("<h1>npred report</h1>\n<p>model: <code>", f);
    html_put(f, model);
    fputs("</code></p>\n", f);
    if (n_data) {
        fputs("<p>data:", f);
        for (size_t i = 0; i < n_data; i++) {
            fputs(" <code>", f);
            html_put(f, data[i]);
            fputs("</code>", f);
        }
        fputs("</p>\n", f);
    }
    if (res && res->n_sessions) {
        fprintf(f, "<h2>Metrics (tier %s)</h2>\n<table id=\"metrics\">\n<tr><th>session</th><th>neurons</th><th>trials</th>"
                   "<th>images</th><th>single-trial correlation</th><th>correlation to average</th><th>FEVE</th>"
                   "<th>oracle</th><th>fraction of oracle</th><th>fraction of oracle (slope)</th></tr>\n",
                npred_tier_name(res->tier));
        for (int i = 0; i < res->n_sessions; i++) metrics_row(f, res->sessions[i].data_key, &res->sessions[i].m);
        if (res->n_sessions > 1) metrics_row(f, "overall", &res->overall);
        fputs("</table>\n<p>FEVE: mean over neurons with FEV &ge; 0.15. Fraction of oracle: mean correlation / mean "
              "oracle; slope: least-squares slope of correlation on oracle through the origin. Per-neuron values: "
              "<a href=\"neurons.csv\">neurons.csv</a>.</p>\n", f);
    }
    if (gt && gt->have)
        fprintf(f, "<p>Ground truth (simulated data): readout positions correlate %.3f (x) and %.3f (y) with the true "
                   "receptive-field positions; median error %.2f pixels.</p>\n",
                gt->corr_x, gt->corr_y, gt->median_px);
    fputs("<h2>Pictures</h2>\n", f);
    for (int i = 0; i < pics->n; i++) {
        fputs("<figure><img src=\"", f);
        html_put(f, pics->p[i].file);
        fputs("\" alt=\"", f);
        html_put(f, pics->p[i].caption);
        fputs("\"><figcaption>", f);
        html_put(f, pics->p[i].caption);
        fputs("</figcaption></figure>\n", f);
    }
    fputs("</body>\n</html>\n", f);
    if (fclose(f) != 0) {
        free(buf);
        return npred_errorf(NPRED_ERR_NOMEM, "index.html: out of memory");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", dir);
    npred_status st = npred_write_atomic(path, buf, len);
    free(buf);
    return st;
}

#define MAX_EXTRA 32

int cmd_report(int argc, char **argv)
{
    const char *out = NULL, *dataset = NULL, *tier_name = "test";
    int no_data = 0, batch = 64, rc = 2;
    cli_list datas = {0}, meis = {0}, rfs = {0}, tunings = {0}, words = {0};
    const cli_opt opts[] = {{"out", CLI_STR, &out, 0, 0},         {"data", CLI_LIST, &datas, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0}, {"tier", CLI_STR, &tier_name, 0, 0},
                            {"no-data", CLI_FLAG, &no_data, 0, 0}, {"mei", CLI_LIST, &meis, 0, 0},
                            {"rf", CLI_LIST, &rfs, 0, 0},         {"tuning", CLI_LIST, &tunings, 0, 0},
                            {"batch", CLI_INT, &batch, 1, INT_MAX}, {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"report", help, opts, &words};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char **data = datas.v;
    size_t n_data = (size_t)datas.n;
    const char *model = NULL;
    const char *extra[MAX_EXTRA];
    char extra_kind[MAX_EXTRA];
    int n_extra = 0;
    if ((rc = cli_one_word("report", &words, "RUN or MODEL", &model))) goto out_args;
    const cli_list *lists[3] = {&meis, &rfs, &tunings};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < lists[k]->n; i++) {
            if (n_extra == MAX_EXTRA) {
                rc = cli_usage_error("report", "at most %d --mei/--rf/--tuning folders", MAX_EXTRA);
                goto out_args;
            }
            extra_kind[n_extra] = "MRU"[k];
            extra[n_extra++] = lists[k]->v[i];
        }
    rc = 2;
    if (!out) {
        rc = cli_usage_error("report", "missing --out DIR");
        goto out_args;
    }
    if (no_data && (n_data || dataset)) {
        rc = cli_usage_error("report", "--no-data goes with neither --data nor --dataset");
        goto out_args;
    }
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier)) {
        rc = cli_usage_error("report", "--tier: %s", npred_last_error());
        goto out_args;
    }
    for (int k = 0; k < n_extra; k++)
        if (!is_dir(extra[k])) {
            rc = cli_usage_error("report", "%s: not a folder (an output folder of npred mei / rf / tuning)", extra[k]);
            goto out_args;
        }

    rc = 1;
    npred_model *m = NULL;
    npred_loaders *L = NULL;
    npred_loader_config cfg;
    npred_loader_config_init(&cfg);
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    picture_list pics = {0};
    char **cfg_data = NULL;
    size_t n_cfg_data = 0;
    int evaluated = 0, fails = 0;
    cli_gt_summary gt;
    memset(&gt, 0, sizeof gt);
    char path[4096], src[4096];
    npred_status st;
    if ((st = npred_model_open(&m, model, 0, 0, batch))) {
        cli_fail(st, "report");
        goto done;
    }
    if ((st = cli_mkdirs(out))) {
        cli_fail(st, "report");
        goto done;
    }
    /* training curves from the run's log.csv (copied beside the pictures) */
    int run = is_dir(model);
    snprintf(src, sizeof src, "%s/log.csv", model);
    snprintf(path, sizeof path, "%s/log.csv", out);
    if (run && exists(src) && strcmp(src, path) && (st = copy_file(src, path))) {
        cli_fail(st, "report");
        goto done;
    }
    if (!n_data && !dataset && !no_data && run) cfg_data = run_data(model, &n_cfg_data);
    const char *const *paths = n_data ? data : (const char *const *)cfg_data;
    size_t n_paths = n_data ? n_data : n_cfg_data;
    if (n_paths || dataset) {
        npred_loader_config_free(&cfg);
        if ((rc = cli_open_loaders("report", m, dataset, paths, n_paths, batch, 0, &cfg, &L))) goto done;
        rc = 1;
        if ((st = npred_evaluate(m, L, tier, &res))) {
            cli_fail(st, "report: evaluation");
            goto done;
        }
        evaluated = 1;
        fails += cli_write_pictures(out, m, L, paths, &res, &gt);
        fails += cli_write_result_pictures(out, m, L, &res);
        char *csv = npred_eval_per_neuron_csv(&res);
        snprintf(path, sizeof path, "%s/neurons.csv", out);
        if (!csv || (st = npred_write_atomic(path, csv, strlen(csv)))) {
            cli_fail(csv ? st : NPRED_ERR_NOMEM, "report");
            fails++;
        }
        free(csv);
    } else {
        snprintf(path, sizeof path, "%s/log.csv", out);
        if (exists(path) && (st = npred_report_curves(out))) {
            fprintf(stderr, "npred: picture training curves: %s\n", npred_last_error());
            fails++;
        }
        if ((st = npred_report_filters(out, m))) {
            fprintf(stderr, "npred: picture filters.png: %s\n", npred_last_error());
            fails++;
        }
    }
    /* in-silico pictures */
    static const char *const kinds[3][2] = {{"meis.png", "Most exciting inputs (npred mei)"},
                                            {"rf.png", "Receptive fields (npred rf)"},
                                            {"tuning.png", "Orientation / spatial-frequency tuning (npred tuning)"}};
    for (int k = 0; k < n_extra; k++) {
        int kind = extra_kind[k] == 'M' ? 0 : extra_kind[k] == 'R' ? 1 : 2, found = 0;
        snprintf(src, sizeof src, "%s/%s", extra[k], kinds[kind][0]);
        if (exists(src)) {
            char name[64];
            snprintf(name, sizeof name, "insilico_%d_%s", k, kinds[kind][0]);
            snprintf(path, sizeof path, "%s/%s", out, name);
            if ((st = copy_file(src, path))) {
                cli_fail(st, "report");
                fails++;
            } else {
                found = 1;
            }
        }
        if (!found) {
            fprintf(stderr, "npred report: %s holds no %s (an output folder of npred %s)\n", extra[k], kinds[kind][0],
                    kind == 0 ? "mei" : kind == 1 ? "rf" : "tuning");
            fails++;
        }
    }
    /* the list, in reading order */
    add_picture(&pics, out, "training_loss.png", "Training loss per epoch (from log.csv)");
    add_picture(&pics, out, "validation_objective.png", "Validation objective per epoch (from log.csv)");
    add_picture(&pics, out, "learning_rate.png", "Learning rate per epoch (from log.csv)");
    if (evaluated) {
        add_picture(&pics, out, "test_correlations.png", "Per-neuron single-trial correlations, all sessions");
        add_picture(&pics, out, "correlation_vs_oracle.png",
                    "Per-neuron single-trial correlation against the jackknife oracle (grey: y = x)");
        for (int i = 0; i < res.n_sessions; i++) {
            const char *key = res.sessions[i].data_key;
            char file[256], cap[512];
            snprintf(file, sizeof file, "correlations_%s.png", key);
            snprintf(cap, sizeof cap, "Single-trial correlations of session %s", key);
            add_picture(&pics, out, file, cap);
            snprintf(file, sizeof file, "positions_%s.png", key);
            snprintf(cap, sizeof cap, "Readout positions of session %s (red: simulated ground truth, when known)", key);
            add_picture(&pics, out, file, cap);
            for (int d = 0; d < 2; d++) {
                snprintf(file, sizeof file, "retinotopy_%s_%c.png", key, "xy"[d]);
                snprintf(cap, sizeof cap, "Readout positions of session %s coloured by cortical %c (cell_motor_coordinates)",
                         key, "xy"[d]);
                add_picture(&pics, out, file, cap);
            }
        }
    }
    add_picture(&pics, out, "filters.png", "First-layer convolution filters");
    for (int k = 0; k < n_extra; k++) {
        int kind = extra_kind[k] == 'M' ? 0 : extra_kind[k] == 'R' ? 1 : 2;
        char file[64], cap[512];
        snprintf(file, sizeof file, "insilico_%d_%s", k, kinds[kind][0]);
        snprintf(cap, sizeof cap, "%s from %s", kinds[kind][1], extra[k]);
        add_picture(&pics, out, file, cap);
    }
    if ((st = write_index(out, model, paths, n_paths, evaluated ? &res : NULL, &gt, &pics))) {
        cli_fail(st, "report");
        goto done;
    }
    printf("report: %s/index.html (%d pictures)\n", out, pics.n);
    rc = fails ? 1 : 0;
done:
    free(pics.p);
    for (size_t i = 0; i < n_cfg_data; i++) free(cfg_data[i]);
    free(cfg_data);
    npred_eval_results_free(&res);
    npred_loaders_free(L);
    npred_loader_config_free(&cfg);
    npred_model_free(m);
out_args:
    free(datas.v);
    free(meis.v);
    free(rfs.v);
    free(tunings.v);
    return rc;
}
