/* In-silico experiments against the ground truth of `npred simulate`: train a
 * small model on a small simulated session, then run `npred mei`, `npred rf` and
 * `npred tuning` (the CLI, end to end) and compare, for the neurons the model
 * predicts reliably, the MEI and gradient-RF centres with the true RF positions
 * (median error <= 2 pixels) and the preferred orientation with the orientation
 * of each neuron's Gabor (median error <= 15 degrees). Bad CLI input is checked on
 * the same model. The larger run of docs/insilico.md is scripts/insilico_truth.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "harness.h"
#include "npred/npred.h"

static const char *bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

static const char *MODEL =
    "{\"hidden_channels\": 16, \"input_kern\": 9, \"hidden_kern\": 7, \"layers\": 3, \"depth_separable\": true,"
    " \"pad_input\": true, \"stack\": -1, \"gamma_input\": 1.0, \"gamma_readout\": 0.0076, \"init_sigma\": 0.1,"
    " \"init_mu_range\": 0.3, \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\","
    " \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 16, \"final_tanh\": true}}";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int run_cmd(const char *cmd)
{
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static double *load_f64(const char *path, size_t *count)
{
    npred_array a = {0};
    double *v = NULL;
    if (npred_npy_read(path, &a) == NPRED_OK) {
        v = malloc(sizeof(double) * (a.count ? a.count : 1));
        for (size_t i = 0; v && i < a.count; i++)
            v[i] = a.dtype == NPRED_DT_F64 ? ((double *)a.data)[i] : a.dtype == NPRED_DT_F32 ? ((float *)a.data)[i] : NAN;
        if (count) *count = a.count;
    }
    npred_array_free(&a);
    return v;
}

static cJSON *load_json(const char *path)
{
    void *buf;
    size_t len;
    if (npred_file_read_all(path, &buf, &len)) return NULL;
    char *t = realloc(buf, len + 1);
    if (!t) {
        free(buf);
        return NULL;
    }
    t[len] = 0;
    cJSON *j = cJSON_Parse(t);
    free(t);
    return j;
}

static void test_truth(void)
{
    char dir[] = "/tmp/npred-test-insilico-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    char data[600], tree[1200], run[600], cmd[16384], p[1600];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/model", dir);
    /* 1. simulate: 72x128 images, feature map = model input 18x32 */
    /* NPRED_INSILICO_TRUTH=full: the documented larger run (SENSORIUM baseline at 36x64,
     * 300 neurons, 4000 trials, 20 epochs; docs/insilico.md) */
    const char *scale = getenv("NPRED_INSILICO_TRUTH");
    int full = scale && !strcmp(scale, "full");
    npred_sim_params sp = npred_sim_default_params();
    sp.n_neurons = full ? 300 : 40;
    sp.n_trials = full ? 4000 : 1200;
    sp.n_test_images = full ? 100 : 40;
    sp.n_test_repeats = full ? 10 : 4;
    sp.height = full ? 144 : 72;
    sp.width = full ? 256 : 128;
    sp.rate_scale = full ? 4 : 8;
    sp.seed = 3;
    char *model_cfg = NULL;
    if (full) {
        void *buf;
        size_t len;
        if (!CHECK_OK(npred_file_read_all("configs/sensorium_sota.json", &buf, &len))) return;
        model_cfg = realloc(buf, len + 1);
        model_cfg[len] = 0;
    }
    npred_loaders *L = NULL;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    npred_trainer_config tc;
    npred_trainer_config_init(&tc);
    double *grid = NULL, *W = NULL, *fstd = NULL;
    int *rel = NULL, nrel = 0;
    cJSON *params = NULL, *tj = NULL;
    if (!CHECK_OK(npred_simulate(&sp, data, NULL, NULL))) goto out;
    char name[512];
    npred_sim_tree_name(&sp, 0, name, sizeof name);
    snprintf(tree, sizeof tree, "%s/%s", data, name);
    const char *paths[1] = {tree};
    /* 2. train a small model */
    if (!CHECK_OK(npred_loader_config_parse(&lc, "{\"batch_size\": 32, \"scale\": 0.25, \"normalize\": true}", NULL,
                                            NULL)) ||
        !CHECK_OK(npred_loaders_open(&L, paths, 1, &lc)) ||
        !CHECK_OK(npred_trainer_config_parse(&tc,
                                             full ? "{\"max_iter\": 20, \"lr_init\": 0.009, \"lr_decay_steps\": 4, "
                                                    "\"avg_loss\": false, \"verbose\": false}"
                                                  : "{\"max_iter\": 10, \"lr_init\": 0.009, \"lr_decay_steps\": 2, "
                                                    "\"avg_loss\": false, \"verbose\": false}",
                                             "trainer")) ||
        !CHECK_OK(npred_trainer_model_create(&m, L, full ? model_cfg : MODEL, "model", 3)) ||
        !CHECK_OK(npred_trainer_create(&t, m, L, &tc, 3)))
        goto out;
    npred_trainer_result tr;
    if (!CHECK_OK(npred_trainer_run(t, &tr)) || !CHECK_OK(npred_evaluate(m, L, NPRED_TIER_TEST, &res)) ||
        !CHECK_OK(npred_model_save(m, run)))
        goto out;
    int C, H, Wd;
    npred_model_input_shape(m, &C, &H, &Wd);
    CHECK(C == 1 && H == sp.height / 4 && Wd == sp.width / 4, "model input 1x%dx%d (%dx%dx%d)", sp.height / 4,
          sp.width / 4, C, H, Wd);
    const char *key = res.sessions[0].data_key;
    int n = (int)res.sessions[0].m.n_neurons;
    /* 3. the reliably predicted neurons: single-trial test correlation >= 70 % of the jackknife oracle */
    rel = malloc(sizeof(int) * n);
    char list[4096] = ""; /* (the full run lists up to 300 indices) */
    size_t ll = 0;
    for (int j = 0; j < n; j++) {
        double c = res.sessions[0].corr[j], o = res.sessions[0].oracle[j];
        if (c > 0.2 && c >= 0.7 * o) {
            rel[nrel++] = j;
            ll += (size_t)snprintf(list + ll, sizeof list - ll, "%s%d", ll ? "," : "", j);
        }
    }
    printf("    model: test correlation %.3f (oracle %.3f); %d of %d neurons reliably predicted\n",
           res.overall.single_trial_corr, res.overall.oracle, nrel, n);
    if (!CHECK(nrel >= 10, "at least 10 reliably predicted neurons (%d)", nrel)) goto out;
    /* ground truth */
    size_t cnt = 0;
    snprintf(p, sizeof p, "%s/meta/ground_truth/rf_grid.npy", tree);
    grid = load_f64(p, &cnt);
    snprintf(p, sizeof p, "%s/meta/ground_truth/readout_weights.npy", tree);
    W = load_f64(p, NULL);
    snprintf(p, sizeof p, "%s/meta/ground_truth/params.json", tree);
    params = load_json(p);
    cJSON *fs = cJSON_GetObjectItemCaseSensitive(params, "feature_std");
    if (!CHECK(grid && cnt == 2 * (size_t)n && W && cJSON_GetArraySize(fs) == 32, "ground truth read")) goto out;
    fstd = malloc(sizeof(double) * 32);
    for (int k = 0; k < 32; k++) fstd[k] = cJSON_GetArrayItem(fs, k)->valuedouble;
    /* 4. the CLI on the saved model */
    int cmd_len = snprintf(cmd, sizeof cmd,
             "%s mei --model %s --session %s --neurons %s --iterations %d --out %s/mei --data %s --quiet "
             "--threads 2 && %s rf --model %s --session %s --neurons %s --out %s/rf --data %s --quiet && "
             "%s tuning --model %s --session %s --neurons %s --out %s/tuning --data %s --quiet",
             bin(), run, key, list, full ? 500 : 100, dir, tree, bin(), run, key, list, dir, tree, bin(), run, key, list,
             dir, tree);
    if (!CHECK(cmd_len > 0 && (size_t)cmd_len < sizeof cmd, "the mei/rf/tuning command fits")) goto out;
    if (!CHECK(run_cmd(cmd) == 0, "mei / rf / tuning ran: %s", cmd)) goto out;
    const char *files[] = {"mei/meis.npy", "mei/activations.npy", "mei/trace.npy", "mei/meis.png", "rf/rf.npy",
                           "rf/rf.json", "rf/rf.png", "tuning/tuning.json", "tuning/tuning.png",
                           "tuning/tuning_responses.npy"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        CHECK(stat(p, &sb) == 0 && sb.st_size > 0, "%s written", files[i]);
    }
    /* centres: MEIs (deviation from gray) and gradient RFs */
    npred_array ma = {0};
    snprintf(p, sizeof p, "%s/mei/meis.npy", dir);
    if (CHECK_OK(npred_npy_read(p, &ma)) &&
        CHECK(ma.ndim == 4 && ma.shape[0] == nrel && ma.shape[2] == H && ma.shape[3] == Wd, "meis.npy shape")) {
        float *ctr = malloc(sizeof(float) * 2 * nrel);
        npred_rf_stats((const float *)ma.data, nrel, C, H, Wd, ctr, NULL);
        double *e = malloc(sizeof(double) * nrel);
        for (int i = 0; i < nrel; i++) {
            int j = rel[i];
            double tx = (grid[2 * j] + 1) / 2 * (Wd - 1), ty = (grid[2 * j + 1] + 1) / 2 * (H - 1);
            e[i] = hypot(ctr[2 * i] - tx, ctr[2 * i + 1] - ty);
            if (!isfinite(e[i])) e[i] = INFINITY;
        }
        double med = median(e, nrel);
        printf("    MEI centres: median error %.2f pixels (%d neurons)\n", med, nrel);
        CHECK(med <= 2.0, "MEI centres: median error %.2f px", med);
        free(ctr);
        free(e);
    }
    npred_array_free(&ma);
    snprintf(p, sizeof p, "%s/rf/rf.json", dir);
    cJSON *rj = load_json(p), *arr = cJSON_GetObjectItemCaseSensitive(rj, "neurons");
    snprintf(p, sizeof p, "%s/meta/neurons/unit_ids.npy", tree);
    npred_array ua = {0};
    int64_t *units = NULL;
    if (npred_npy_read(p, &ua) == NPRED_OK && ua.dtype == NPRED_DT_I64) units = (int64_t *)ua.data;
    if (CHECK(cJSON_GetArraySize(arr) == nrel, "rf.json lists every neuron")) {
        double *e = malloc(sizeof(double) * nrel);
        int ids_ok = 1;
        for (int i = 0; i < nrel; i++) {
            cJSON *o = cJSON_GetArrayItem(arr, i);
            int j = rel[i];
            double tx = (grid[2 * j] + 1) / 2 * (Wd - 1), ty = (grid[2 * j + 1] + 1) / 2 * (H - 1);
            double x = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "x")), y = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "y"));
            e[i] = isfinite(x) && isfinite(y) ? hypot(x - tx, y - ty) : INFINITY;
            cJSON *u = cJSON_GetObjectItem(o, "unit_id");
            ids_ok &= units && cJSON_IsNumber(u) && (int64_t)u->valuedouble == units[j] &&
                      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "neuron")) == j;
        }
        double med = median(e, nrel);
        printf("    gradient RF centres: median error %.2f pixels\n", med);
        CHECK(med <= 2.0, "gradient RF centres: median error %.2f px", med);
        CHECK(ids_ok, "unit ids from --data");
        free(e);
    }
    npred_array_free(&ua);
    cJSON_Delete(rj);
    /* orientation: the Gabor pair (scale, orientation) with the most weight on the standardised features */
    snprintf(p, sizeof p, "%s/tuning/tuning.json", dir);
    tj = load_json(p);
    arr = cJSON_GetObjectItemCaseSensitive(tj, "neurons");
    if (CHECK(cJSON_GetArraySize(arr) == nrel, "tuning.json lists every neuron")) {
        double *e = malloc(sizeof(double) * nrel);
        for (int i = 0; i < nrel; i++) {
            int j = rel[i], best = 0;
            double bw = -1;
            for (int pair = 0; pair < 8; pair++) {
                double s = 0;
                for (int q = 0; q < 4; q++) s += fabs(W[(size_t)j * 32 + pair * 4 + q] * fstd[pair * 4 + q]);
                if (s > bw) bw = s, best = pair;
            }
            double truth = M_PI * (best % 4) / 4;
            cJSON *o = cJSON_GetArrayItem(arr, i);
            double ori = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "orientation"));
            double d = fabs(ori - truth);
            d = fmin(d, M_PI - d);
            e[i] = isfinite(ori) && ori >= 0 && ori < M_PI ? d * 180 / M_PI : INFINITY;
        }
        double med = median(e, nrel);
        printf("    preferred orientation: median error %.1f degrees\n", med);
        CHECK(med <= 15, "orientation: median error %.1f degrees", med);
        free(e);
    }
    /* bad input: a clear error and a non-zero exit, never a crash */
    const char *bad[][2] = {
        {"mei --model %s --session %s --neurons 0-99 --out %s/bad", "out of range"},
        {"mei --model %s --session nope --neurons 0 --out %s/bad", "unknown session"},
        {"rf --model %s --session %s --neurons 1,1 --out %s/bad", "twice"},
        {"tuning --model %s --session %s --orientations 2 --phases 2 --out %s/bad", "phases"},
        {"mei --model %s --session %s --neurons 0 --config /nonexistent.json --out %s/bad", "nonexistent"},
        {"rf --model %s --session %s --iterations 5 --out %s/bad", "iterations"},
        {"mei --model %s --session %s --neurons 0 --pupil-center 1,2 --out %s/bad", "no shifter"},
    };
    char cfgp[700];
    snprintf(cfgp, sizeof cfgp, "%s/unknown.json", dir);
    FILE *f = fopen(cfgp, "w");
    if (f) {
        fputs("{\"stopper\": {\"path\": \"mei.stoppers.NumIterations\", \"kwargs\": {\"num_iteration\": 3}}}", f);
        fclose(f);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0] + 1; i++) {
        char args[2048], log[700];
        if (i < sizeof bad / sizeof bad[0]) {
            if (strstr(bad[i][0], "nope")) snprintf(args, sizeof args, bad[i][0], run, dir);
            else snprintf(args, sizeof args, bad[i][0], run, key, dir);
        } else {
            snprintf(args, sizeof args, "mei --model %s --session %s --neurons 0 --config %s --out %s/bad", run, key,
                     cfgp, dir);
        }
        const char *want = i < sizeof bad / sizeof bad[0] ? bad[i][1] : "num_iteration";
        snprintf(log, sizeof log, "%s/err.txt", dir);
        snprintf(cmd, sizeof cmd, "%s %s > %s 2>&1", bin(), args, log);
        int rc = run_cmd(cmd);
        void *buf = NULL;
        size_t len = 0;
        char *txt = NULL;
        if (npred_file_read_all(log, &buf, &len) == NPRED_OK && (txt = realloc(buf, len + 1))) txt[len] = 0;
        else free(buf);
        CHECK(rc != 0 && rc < 128 && txt && strstr(txt, want), "'%s': exit %d, message names '%s': %s", args, rc, want,
              txt ? txt : "");
        free(txt);
    }
out:
    free(model_cfg);
    cJSON_Delete(tj);
    cJSON_Delete(params);
    free(grid);
    free(W);
    free(fstd);
    free(rel);
    npred_eval_results_free(&res);
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK(0, "cleanup");
}

int main(void)
{
    RUN(test_truth);
    return th_summary();
}
