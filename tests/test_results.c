/* Results of a trained model, run as a user runs them: per-neuron evaluation
 * (npred eval --per-neuron / --json), SENSORIUM submission and ground-truth files
 * (npred predict --submission / --ground-truth) scored from the files alone
 * (npred score) against npred eval, on mini_tree and on a simulated scan; the bad
 * submissions the kit rejects. The binary is $NPRED_BIN, else ./build/npred. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "npred/data.h"
#include "npred/eval.h"
#include "npred/model.h"
#include "npred/npy.h"
#include "npred/preprocess.h"
#include "npred/results.h"

#include <png.h>

#define MINI_ZIP "tests/fixtures/mini_tree/static00000-1-1-GrayImageNet-test.zip"
#define MINI_KEY "00000-1-1"

static char tmpdir[256];

static const char *npred_bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

/* Run `npred <args>`; stdout into *out (may be NULL), stderr into *err (may be NULL). */
static int run2(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run2(char **out, char **err, const char *fmt, ...)
{
    char args[4096], cmd[5000], ef[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(ef, sizeof ef, "%s/stderr.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", npred_bin(), args, ef);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char *buf = th_read_stream(p);
    int status = pclose(p);
    if (out) *out = buf;
    else free(buf);
    if (err) {
        void *e = NULL;
        size_t len = 0;
        *err = NULL;
        if (npred_file_read_all(ef, &e, &len) == NPRED_OK) {
            *err = realloc(e, len + 1);
            if (*err) (*err)[len] = 0;
            else free(e);
        } else {
            npred_clear_error();
            *err = calloc(1, 1);
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* a bad input: exit 1 or 2 and stderr contains `want` */
static void expect_failure(const char *what, const char *want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect_failure(const char *what, const char *want, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *err = NULL;
    int rc = run2(NULL, &err, "%s", args);
    CHECK((rc == 1 || rc == 2) && err && strstr(err, want) && strstr(err, "npred"),
          "%s: exit %d, wanted 1 or 2 and a message naming '%s'; got:\n%s", what, rc, want, err ? err : "");
    free(err);
}

static char *read_text(const char *path)
{
    void *b = NULL;
    size_t n = 0;
    if (npred_file_read_all(path, &b, &n)) return NULL;
    char *s = realloc(b, n + 1);
    if (!s) {
        free(b);
        return NULL;
    }
    s[n] = 0;
    return s;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* a fresh model for mini_tree (input 8 x 16: scale 0.5), saved to tmpdir/mini */
static npred_model *mini_model(char *dir, size_t n)
{
    const char *cfg = "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4,"
                      " \"stack\": -1, \"grid_mean_predictor\": null, \"init_mu_range\": 0.5}";
    npred_model_session ses = {MINI_KEY, 10, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "mini model", 1, 8, 16, &ses, 1, 4, 21))) return NULL;
    snprintf(dir, n, "%s/mini", tmpdir);
    if (!CHECK_OK(npred_model_save(m, dir))) {
        npred_model_free(m);
        return NULL;
    }
    return m;
}

static npred_loaders *mini_loaders(double scale, int batch)
{
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    lc.batch_size = batch;
    lc.scale.set = 1;
    lc.scale.v = scale;
    const char *paths[1] = {MINI_ZIP};
    npred_loaders *L = NULL;
    CHECK_OK(npred_loaders_open(&L, paths, 1, &lc));
    npred_loader_config_free(&lc);
    return L;
}

/* ---------------------------------------------------------------- per neuron */

static void test_eval_per_neuron(void)
{
    char dir[512], csvp[600];
    npred_model *m = mini_model(dir, sizeof dir);
    npred_loaders *L = mini_loaders(0.5, 4);
    if (!m || !L) goto out;
    npred_eval_results res;
    if (!CHECK_OK(npred_evaluate(m, L, NPRED_TIER_TEST, &res))) goto out;
    const npred_eval_session *e = &res.sessions[0];
    /* the slope through the origin, computed here */
    double sco = 0, so = 0;
    for (int j = 0; j < 10; j++) sco += e->corr[j] * e->oracle[j], so += e->oracle[j] * e->oracle[j];
    CHECK(fabs(e->m.fraction_oracle_slope - sco / so) < 1e-12, "slope %.15g vs %.15g", e->m.fraction_oracle_slope, sco / so);
    CHECK(e->readout_xy != NULL, "a Gaussian readout has positions");
    /* response mean / variance of the test tier, from the loader */
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    npred_batch b;
    npred_loader_iter it;
    double sum[10] = {0}, sq[10] = {0};
    int64_t T = 0;
    int has = 1;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TEST, NULL));
    while (npred_loader_iter_next(&it, &b, &has) == NPRED_OK && has) {
        for (int64_t t = 0; t < b.n; t++)
            for (int j = 0; j < 10; j++) sum[j] += b.responses[t * 10 + j], sq[j] += (double)b.responses[t * 10 + j] * b.responses[t * 10 + j];
        T += b.n;
    }
    npred_loader_iter_free(&it);
    npred_batch_free(&b);
    for (int j = 0; j < 10; j++) {
        double mu = sum[j] / T, var = sq[j] / T - mu * mu;
        CHECK(fabs(mu - e->resp_mean[j]) < 1e-9 && fabs(var - e->resp_var[j]) < 1e-7 * (1 + var),
              "neuron %d mean %.9g var %.9g vs %.9g %.9g", j, mu, var, e->resp_mean[j], e->resp_var[j]);
        CHECK(e->unit_ids[j] == si.unit_ids[j], "unit id %d", j);
    }
    /* the binary: CSV file, JSON arrays, '-' */
    snprintf(csvp, sizeof csvp, "%s/per_neuron.csv", tmpdir);
    char *out = NULL, *err = NULL;
    int rc = run2(&out, &err, "eval --model %s --data " MINI_ZIP " --json --per-neuron %s", dir, csvp);
    cJSON *j = rc == 0 && out ? cJSON_Parse(out) : NULL;
    if (CHECK(j != NULL, "eval --json --per-neuron: exit %d\n%s%s", rc, out ? out : "", err ? err : "")) {
        cJSON *s0 = cJSON_GetArrayItem(th_get(j, "sessions", NULL), 0);
        cJSON *pn = th_get(s0, "per_neuron", NULL);
        CHECK(fabs(th_num(s0, NAN, "fraction_oracle_slope", NULL) - e->m.fraction_oracle_slope) < 1e-12, "slope in JSON");
        for (int k = 0; k < 10; k++) {
            CHECK(cJSON_GetArrayItem(th_get(pn, "unit_id", NULL), k)->valuedouble == (double)e->unit_ids[k], "json unit id");
            CHECK(fabs(cJSON_GetArrayItem(th_get(pn, "single_trial_correlation", NULL), k)->valuedouble - e->corr[k]) < 1e-12,
                  "json corr %d", k);
            CHECK(fabs(cJSON_GetArrayItem(th_get(pn, "readout_x", NULL), k)->valuedouble - e->readout_xy[2 * k]) < 1e-6,
                  "json readout x %d", k);
        }
    }
    cJSON_Delete(j);
    free(out);
    free(err);
    char *csv = read_text(csvp);
    char *want = npred_eval_per_neuron_csv(&res);
    if (CHECK(csv && want, "per-neuron CSV written")) {
        CHECK(!strcmp(csv, want), "file equals the library's table");
        CHECK(!strncmp(csv, "session,unit_id,neuron,readout_x,readout_y,single_trial_correlation,", 68), "header:\n%.200s", csv);
        /* row k: session, unit id, index, x, y, corr ... parsed back */
        const char *p = strchr(csv, '\n') + 1;
        for (int k = 0; k < 10 && p; k++) {
            char key[32];
            long long uid, idx;
            double x, y, c, ca, fev, feve, orc, frac, mu, var;
            int got = sscanf(p, "%31[^,],%lld,%lld,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", key, &uid, &idx, &x, &y, &c,
                             &ca, &fev, &feve, &orc, &frac, &mu, &var);
            CHECK(got == 13 && !strcmp(key, MINI_KEY) && uid == e->unit_ids[k] && idx == k && c == e->corr[k] &&
                      orc == e->oracle[k] && frac == e->corr[k] / e->oracle[k] && mu == e->resp_mean[k] &&
                      var == e->resp_var[k] && ca == e->corr_avg[k] && x == (double)e->readout_xy[2 * k],
                  "row %d parses back exactly (%d fields)", k, got);
            p = strchr(p, '\n');
            if (p) p++;
        }
        CHECK(p && !*p, "10 rows");
    }
    rc = run2(&out, NULL, "eval --model %s --data " MINI_ZIP " --per-neuron -", dir);
    CHECK(rc == 0 && out && want && !strcmp(out, want), "--per-neuron - writes only the table to stdout (exit %d)", rc);
    free(out);
    free(csv);
    free(want);
    expect_failure("two tables on stdout", "standard output", "eval --model %s --data " MINI_ZIP " --json --per-neuron -", dir);
    npred_eval_results_free(&res);
out:
    npred_loaders_free(L);
    npred_model_free(m);
}


/* ---------------------------------------------------------------- submissions */

/* The submission / ground truth of `data` (tier) through the binary, then npred score
 * against npred eval on the same tier: the same metrics from the files alone. */
static void roundtrip(const char *model, const char *data, const char *tier, const char *tag)
{
    char sub[600], gt[600];
    snprintf(sub, sizeof sub, "%s/%s_sub.csv", tmpdir, tag);
    snprintf(gt, sizeof gt, "%s/%s_gt.csv", tmpdir, tag);
    char *out = NULL, *err = NULL;
    int rc = run2(&out, &err, "predict --model %s --data %s --tier %s --submission %s --ground-truth %s", model, data,
                  tier, sub, gt);
    CHECK(rc == 0, "%s: predict --submission: exit %d\n%s%s", tag, rc, out ? out : "", err ? err : "");
    free(out), free(err);
    rc = run2(&out, &err, "score --submission %s --truth %s --json", sub, gt);
    cJSON *js = rc == 0 && out ? cJSON_Parse(out) : NULL;
    CHECK(js != NULL, "%s: score: exit %d\n%s%s", tag, rc, out ? out : "", err ? err : "");
    free(out), free(err);
    rc = run2(&out, &err, "eval --model %s --data %s --tier %s --json", model, data, tier);
    cJSON *je = rc == 0 && out ? cJSON_Parse(out) : NULL;
    CHECK(je != NULL, "%s: eval: exit %d\n%s%s", tag, rc, out ? out : "", err ? err : "");
    free(out), free(err);
    if (js && je) {
        const char *keys[3] = {"single_trial_correlation", "correlation_to_average", "feve"};
        for (int k = 0; k < 3; k++) {
            double a = th_num(js, NAN, keys[k], NULL), b = th_num(je, NAN, "overall", keys[k], NULL);
            CHECK(fabs(a - b) <= 1e-12 * (1 + fabs(b)), "%s: %s: score %.17g, eval %.17g", tag, keys[k], a, b);
        }
        CHECK(th_num(js, NAN, "n_trials", NULL) == th_num(je, NAN, "overall", "n_trials", NULL) &&
                  th_num(js, NAN, "n_images", NULL) == th_num(je, NAN, "overall", "n_images", NULL) &&
                  th_num(js, NAN, "feve_neurons", NULL) == th_num(je, NAN, "overall", "feve_neurons", NULL),
              "%s: counts agree", tag);
    }
    cJSON_Delete(js);
    cJSON_Delete(je);
    /* '-' writes the same file to stdout */
    char *file = read_text(sub);
    rc = run2(&out, NULL, "predict --model %s --data %s --tier %s --submission -", model, data, tier);
    CHECK(rc == 0 && out && file && !strcmp(out, file), "%s: --submission - prints exactly the file", tag);
    free(out), free(file);
}

/* The file's rows, parsed independently: trial token, image id, the values, the ids. */
static void test_submission_format(void)
{
    char dir[512], sub[600];
    npred_model *m = mini_model(dir, sizeof dir);
    npred_loaders *L = mini_loaders(0.5, 4);
    if (!m || !L) goto out;
    snprintf(sub, sizeof sub, "%s/format_sub.csv", tmpdir);
    char *err = NULL;
    int rc = run2(NULL, &err, "predict --model %s --data " MINI_ZIP " --tier test --submission %s", dir, sub);
    CHECK(rc == 0, "predict --submission: exit %d\n%s", rc, err ? err : "");
    free(err);
    char *csv = read_text(sub), *lib = NULL;
    if (!CHECK(csv != NULL, "submission written")) goto out;
    CHECK_OK(npred_submission_csv(&lib, m, L, 0, NPRED_TIER_TEST));
    CHECK(lib && !strcmp(lib, csv), "the binary writes what npred_submission_csv returns");
    free(lib);
    const char *hdr = "trial_indices,image_ids,prediction,neuron_ids\n";
    CHECK(!strncmp(csv, hdr, strlen(hdr)), "header");
    /* expected rows: the test trials in ascending file order */
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    const npred_array *tid = npred_dataset_trial_info(si.dataset, "trial_idx");
    const int64_t *img = npred_dataset_image_ids(si.dataset);
    int64_t *tidv = NULL;
    CHECK(tid && npred_array_to_i64(tid, &tidv) == NPRED_OK, "trial_idx");
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 16));
    const int64_t *rows = si.tier_idx[NPRED_TIER_TEST];
    int64_t T = si.tier_n[NPRED_TIER_TEST];
    float pred[16 * 10];
    if (tidv && CHECK(T == 10, "10 test trials") && CHECK_OK(npred_loaders_get(L, 0, rows, T, &b)) &&
        CHECK_OK(npred_model_predict(m, MINI_KEY, b.images, (int)T, NULL, NULL, pred))) {
        const char *p = csv + strlen(hdr);
        for (int64_t t = 0; t < T; t++) {
            CHECK(t == 0 || rows[t] > rows[t - 1], "ascending trial rows");
            char *e;
            long long tr = strtoll(p, &e, 10);
            CHECK(tr == tidv[rows[t]] && *e == ',', "row %lld: trial_indices %lld, want %lld", (long long)t, tr,
                  (long long)tidv[rows[t]]);
            long long im = strtoll(e + 1, &e, 10);
            CHECK(im == img[rows[t]] && !strncmp(e, ",\"[", 3), "row %lld: image id %lld", (long long)t, im);
            p = e + 3;
            for (int k = 0; k < 10; k++) {
                double v = strtod(p, &e);
                CHECK((float)v == pred[t * 10 + k] && v == (double)pred[t * 10 + k], "row %lld value %d: %.17g vs %.9g",
                      (long long)t, k, v, pred[t * 10 + k]);
                CHECK(!strncmp(e, k < 9 ? ", " : "]\",\"[1, 2, 3, 5, 6, 7, 8, 10, 11, 13]\"\n", k < 9 ? 2 : 39),
                      "row %lld: separators / neuron ids after value %d: %.40s", (long long)t, k, e);
                p = e + (k < 9 ? 2 : 39);
            }
        }
        CHECK(!*p, "nothing after the last row");
    }
    free(tidv);
    npred_batch_free(&b);
    free(csv);
out:
    npred_loaders_free(L);
    npred_model_free(m);
}

static void test_submission_roundtrip(void)
{
    char dir[512];
    npred_model *m = mini_model(dir, sizeof dir);
    npred_model_free(m);
    if (!m) return;
    roundtrip(dir, MINI_ZIP, "test", "mini");
    /* a simulated scan (test and final_test tiers) and a 9 x 16 model (scale 0.25) */
    char sim[600], zip[1200];
    snprintf(sim, sizeof sim, "%s/sim", tmpdir);
    char *err = NULL;
    int rc = run2(NULL, &err, "simulate --out %s --sessions 1 --neurons 40 --trials 60 --test-images 6 --test-repeats 4 "
                  "--final-test-images 5 --height 36 --width 64 --zip-only --quiet --seed 3", sim);
    if (!CHECK(rc == 0, "simulate: exit %d\n%s", rc, err ? err : "")) {
        free(err);
        return;
    }
    free(err);
    snprintf(zip, sizeof zip, "%s/static90000-1-1-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip", sim);
    const char *cfg = "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4,"
                      " \"stack\": -1, \"grid_mean_predictor\": null, \"init_mu_range\": 0.5}";
    npred_model_session ses = {"90000-1-1", 40, NULL, 0, NULL, NULL};
    char sdir[700];
    snprintf(sdir, sizeof sdir, "%s/sim_model", tmpdir);
    if (!CHECK_OK(npred_model_create(&m, cfg, "sim model", 1, 9, 16, &ses, 1, 8, 5)) || !CHECK_OK(npred_model_save(m, sdir))) {
        npred_model_free(m);
        return;
    }
    npred_model_free(m);
    roundtrip(sdir, zip, "test", "sim_test");
    roundtrip(sdir, zip, "final_test", "sim_final");
}

/* bad submissions: a clear error naming the line / trial / neuron */
static void test_score_bad_inputs(void)
{
    char gt[600], bad[600];
    snprintf(gt, sizeof gt, "%s/bad_gt.csv", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad_sub.csv", tmpdir);
    const char *truth = "trial_indices,image_ids,responses,neuron_ids\n"
                        "7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                        "3,100,\"[2.0, 1.5]\",\"[4, 9]\"\n"
                        "5,200,\"[0.5, 0.25]\",\"[4, 9]\"\n"
                        "9,200,\"[1.0, 0.75]\",\"[4, 9]\"\n";
    CHECK(write_text(gt, truth), "write truth");
    struct {
        const char *what, *text, *want;
    } cases[] = {
        {"wrong header", "trial_indices,image_ids,responses,neuron_ids\n3,100,\"[1.0, 2.0]\",\"[4, 9]\"\n", "line 1"},
        {"missing trial", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                          "3,100,\"[2.0, 1.5]\",\"[4, 9]\"\n5,200,\"[0.5, 0.2]\",\"[4, 9]\"\n", "trial 9"},
        {"extra trial", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                        "3,100,\"[2.0, 1.5]\",\"[4, 9]\"\n5,200,\"[0.5, 0.2]\",\"[4, 9]\"\n9,200,\"[1.0, 0.7]\",\"[4, 9]\"\n"
                        "11,200,\"[1.0, 0.7]\",\"[4, 9]\"\n", "line 6: trial 11"},
        {"NaN", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                "3,100,\"[nan, 1.5]\",\"[4, 9]\"\n5,200,\"[0.5, 0.2]\",\"[4, 9]\"\n9,200,\"[1.0, 0.7]\",\"[4, 9]\"\n",
         "line 3: prediction: value 0 is not finite"},
        {"missing neuron", "trial_indices,image_ids,prediction,neuron_ids\n7,100,[1.0],[4]\n3,100,[2.0],[4]\n"
                           "5,200,[0.5],[4]\n9,200,[1.0],[4]\n", "neuron 9"},
        {"extra neuron", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1, 2, 3]\",\"[4, 9, 10]\"\n"
                         "3,100,\"[2, 1, 3]\",\"[4, 9, 10]\"\n5,200,\"[0, 2, 3]\",\"[4, 9, 10]\"\n"
                         "9,200,\"[1, 0, 3]\",\"[4, 9, 10]\"\n", "neuron 10"},
        {"short row", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                      "3,100,\"[2.0]\",\"[4, 9]\"\n", "line 3: prediction holds 1 values for 2 neurons"},
        {"duplicate trial", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                            "7,100,\"[2.0, 1.0]\",\"[4, 9]\"\n", "trial 7 appears twice (lines 2 and 3)"},
        {"missing field", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\"\n", "line 2: 3 fields"},
        {"wrong image", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0]\",\"[4, 9]\"\n"
                        "3,100,\"[2.0, 1.5]\",\"[4, 9]\"\n5,300,\"[0.5, 0.2]\",\"[4, 9]\"\n9,200,\"[1.0, 0.7]\",\"[4, 9]\"\n",
         "line 4: trial 5 has image id 300"},
        {"unterminated quote", "trial_indices,image_ids,prediction,neuron_ids\n7,100,\"[1.0, 2.0],[4, 9]\n", "not closed"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CHECK(write_text(bad, cases[k].text), "write");
        expect_failure(cases[k].what, cases[k].want, "score --submission %s --truth %s", bad, gt);
    }
    /* neurons and trials in another order score the same as in order */
    const char *shuffled = "trial_indices,image_ids,prediction,neuron_ids\n9,200,\"[0.5, 1.0]\",\"[9, 4]\"\n"
                           "3,100,\"[1.0, 2.5]\",\"[9, 4]\"\n7,100,\"[1.5, 1.0]\",\"[9, 4]\"\n5,200,\"[0.25, 0.5]\",\"[9, 4]\"\n";
    const char *ordered = "trial_indices,image_ids,prediction,neuron_ids\n3,100,\"[2.5, 1.0]\",\"[4, 9]\"\n"
                          "5,200,\"[0.5, 0.25]\",\"[4, 9]\"\n7,100,\"[1.0, 1.5]\",\"[4, 9]\"\n9,200,\"[1.0, 0.5]\",\"[4, 9]\"\n";
    npred_score a, c;
    CHECK(write_text(bad, shuffled), "write");
    CHECK_OK(npred_submission_score(bad, gt, &a));
    CHECK(write_text(bad, ordered), "write");
    CHECK_OK(npred_submission_score(bad, gt, &c));
    CHECK(a.single_trial_corr == c.single_trial_corr && a.corr_to_average == c.corr_to_average &&
              a.n_trials == 4 && a.n_neurons == 2 && a.n_images == 2,
          "order does not matter: %.17g vs %.17g", a.single_trial_corr, c.single_trial_corr);
    /* single-trial correlation by hand: neuron 4 responses (3:2.0, 5:0.5, 7:1.0, 9:1.0), predictions (2.5, 0.5, 1.0, 1.0) */
    double r4[4] = {2.0, 0.5, 1.0, 1.0}, p4[4] = {2.5, 0.5, 1.0, 1.0}, r9[4] = {1.5, 0.25, 2.0, 0.75}, p9[4] = {1.0, 0.25, 1.5, 0.5};
    double tot = 0;
    for (int n = 0; n < 2; n++) {
        const double *r = n ? r9 : r4, *p = n ? p9 : p4;
        double mr = 0, mp = 0, vr = 0, vp = 0, s = 0;
        for (int t = 0; t < 4; t++) mr += r[t] / 4, mp += p[t] / 4;
        for (int t = 0; t < 4; t++) vr += (r[t] - mr) * (r[t] - mr) / 4, vp += (p[t] - mp) * (p[t] - mp) / 4;
        for (int t = 0; t < 4; t++) s += (r[t] - mr) * (p[t] - mp) / 4;
        tot += s / ((sqrt(vr) + 1e-8) * (sqrt(vp) + 1e-8)) / 2;
    }
    CHECK(fabs(c.single_trial_corr - tot) < 1e-12, "hand-computed correlation %.15g vs %.15g", tot, c.single_trial_corr);
    /* the same from the texts in memory; a NUL byte is an error naming its line, not the end of the file */
    npred_score m;
    if (CHECK_OK(npred_submission_score_text(ordered, strlen(ordered), "sub.csv", truth, strlen(truth), "gt.csv", &m)))
        CHECK(m.single_trial_corr == c.single_trial_corr && m.corr_to_average == c.corr_to_average &&
                  m.feve == c.feve && m.n_trials == c.n_trials,
              "texts score as the files");
    size_t cut = strlen(truth) - 5; /* inside the last row, line 5 */
    CHECK(npred_submission_score_text(ordered, strlen(ordered), "sub.csv", truth, strlen(truth) + 1, "gt.csv", &m) ==
                  NPRED_ERR_FORMAT &&
              strstr(npred_last_error(), "gt.csv: line 6: a NUL byte"),
          "a NUL byte after the last line: %s", npred_last_error());
    char *nul = strdup(truth);
    if (CHECK(nul != NULL, "copy")) {
        nul[cut] = 0;
        CHECK(npred_submission_score_text(ordered, strlen(ordered), "sub.csv", nul, strlen(truth), "gt.csv", &m) ==
                      NPRED_ERR_FORMAT &&
                  strstr(npred_last_error(), "gt.csv: line 5: a NUL byte"),
              "a NUL byte in the last row: %s", npred_last_error());
    }
    free(nul);
    /* the modes of predict do not mix; the tier must be a test tier */
    expect_failure("submission without tier", "--tier", "predict --model x --data " MINI_ZIP " --submission %s", bad);
    expect_failure("submission of the train tier", "test or final_test",
                   "predict --model x --data " MINI_ZIP " --tier train --submission %s", bad);
}

/* ---------------------------------------------------------------- raw stimuli */

static int write_npy(const char *path, npred_dtype dt, size_t item, const void *v, int ndim, const int64_t *shape)
{
    npred_array a;
    if (npred_array_alloc(&a, dt, item, ndim, shape)) return 0;
    memcpy(a.data, v, a.count * item);
    int ok = npred_npy_write(path, &a) == NPRED_OK;
    npred_array_free(&a);
    return ok;
}

/* an 8-bit PNG of (h, w, channels) bytes: 1 gray, 3 RGB */
static int write_png(const char *path, const unsigned char *px, int h, int w, int channels)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)w;
    pi.height = (png_uint_32)h;
    pi.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    return png_image_write_to_file(&pi, path, 0, px, 0, NULL);
}

static int write_png_gray(const char *path, const float *img, int h, int w)
{
    unsigned char *px = malloc((size_t)h * w);
    if (!px) return 0;
    for (int i = 0; i < h * w; i++) px[i] = (unsigned char)img[i];
    int ok = write_png(path, px, h, w, 1);
    free(px);
    return ok;
}

/* Predictions of the loader path for the test tier (model outputs, loader batches),
 * and the raw inputs of the same trials. */
typedef struct {
    int64_t T;
    int n;
    float *pred, *raw, *beh, *eye, *prec;
} loader_path;

static void loader_path_free(loader_path *p) { free(p->pred), free(p->raw), free(p->beh), free(p->eye), free(p->prec); }

static int run_loader_path(npred_model *m, const npred_loaders *L, loader_path *p)
{
    memset(p, 0, sizeof *p);
    npred_session_info si;
    npred_normalizer_info ni;
    npred_dataset_info di;
    npred_loaders_session(L, 0, &si);
    npred_loaders_normalizer(L, 0, &ni);
    npred_dataset_get_info(si.dataset, &di);
    int64_t T = si.tier_n[NPRED_TIER_TEST];
    int n = (int)si.n_neurons, hs = npred_model_has_shifter(m);
    size_t img = (size_t)di.img_c * di.img_h * di.img_w;
    p->T = T, p->n = n;
    p->pred = malloc(sizeof(float) * T * n);
    p->raw = malloc(sizeof(float) * T * img);
    p->beh = malloc(sizeof(float) * T * 3);
    p->eye = malloc(sizeof(float) * T * 2);
    p->prec = malloc(sizeof(float) * n);
    if (!CHECK(p->pred && p->raw && p->beh && p->eye && p->prec, "alloc")) return 0;
    for (int j = 0; j < n; j++) p->prec[j] = ni.responses ? ni.response_precision[si.neuron_idx[j]] : 1.0f;
    /* the loaders keep the images transformed only: the raw ones from the dataset itself */
    npred_dataset *rawd = NULL;
    if (!CHECK_OK(npred_dataset_open(&rawd, di.path, NULL))) return 0;
    npred_batch b;
    npred_loader_iter it;
    int has = 1;
    int64_t k = 0;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TEST, NULL));
    while (npred_loader_iter_next(&it, &b, &has) == NPRED_OK && has && k + b.n <= T) {
        CHECK_OK(npred_model_predict(m, MINI_KEY, b.images, (int)b.n, hs ? b.pupil_center : NULL, NULL, p->pred + k * n));
        for (int64_t i = 0; i < b.n; i++) {
            int64_t t = b.trials[i];
            memcpy(p->raw + (k + i) * img, npred_dataset_field(rawd, NPRED_FIELD_IMAGES) + t * img, sizeof(float) * img);
            memcpy(p->beh + (k + i) * 3, npred_dataset_field(si.dataset, NPRED_FIELD_BEHAVIOR) + t * 3, sizeof(float) * 3);
            memcpy(p->eye + (k + i) * 2, npred_dataset_field(si.dataset, NPRED_FIELD_PUPIL_CENTER) + t * 2, sizeof(float) * 2);
        }
        k += b.n;
    }
    npred_loader_iter_free(&it);
    npred_batch_free(&b);
    npred_dataset_free(rawd);
    return CHECK(k == T, "loader path: %lld of %lld trials", (long long)k, (long long)T);
}

/* raw-path predictions equal the loader path's bit for bit; rates are the
 * predictions / response precision */
static void check_bitwise(npred_model *m, const loader_path *p, const char *what)
{
    size_t tn = (size_t)p->T * p->n;
    float *norm = malloc(sizeof(float) * tn), *rates = malloc(sizeof(float) * tn);
    if (CHECK(norm && rates, "alloc") &&
        CHECK_OK(npred_model_predict_raw(m, MINI_KEY, p->raw, (int)p->T, p->beh, p->eye, rates, norm))) {
        CHECK(!memcmp(norm, p->pred, sizeof(float) * tn), "%s: raw path == loader path bit for bit", what);
        int same = 1;
        for (size_t k = 0; k < tn; k++) same &= rates[k] == p->pred[k] / p->prec[k % p->n];
        CHECK(same, "%s: rates = prediction / response precision", what);
    }
    free(norm), free(rates);
}

static void test_predict_raw(void)
{
    char dir[512];
    npred_model *m = mini_model(dir, sizeof dir); /* saved before any record: an "old" model file */
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    lc.batch_size = 4;
    lc.scale.set = 1;
    lc.scale.v = 0.5;
    const char *paths[1] = {MINI_ZIP};
    npred_loaders *L = NULL;
    loader_path p;
    memset(&p, 0, sizeof p);
    if (!m || !CHECK_OK(npred_loaders_open(&L, paths, 1, &lc))) goto out;
    CHECK(npred_model_preprocessing_json(m) == NULL && !npred_model_has_preprocessing(m, MINI_KEY), "nothing recorded yet");
    float one = 0;
    CHECK(npred_model_predict_raw(m, MINI_KEY, &one, 1, NULL, NULL, &one, NULL) == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "records no preprocessing"),
          "no record: a clear error (%s)", npred_last_error());
    if (!CHECK_OK(npred_model_record_preprocessing(m, L)) || !run_loader_path(m, L, &p)) goto out;
    check_bitwise(m, &p, "recorded in memory");
    /* saved and loaded back */
    char dir2[600];
    snprintf(dir2, sizeof dir2, "%s/mini_pre", tmpdir);
    npred_model *m2 = NULL;
    if (CHECK_OK(npred_model_save(m, dir2)) && CHECK_OK(npred_model_load(&m2, dir2, 4))) {
        CHECK(npred_model_preprocessing_json(m2) && !strcmp(npred_model_preprocessing_json(m2), npred_model_preprocessing_json(m)),
              "the record survives save / load");
        check_bitwise(m2, &p, "after save / load");
        int c, h, w, bd, pd;
        CHECK_OK(npred_model_raw_inputs(m2, MINI_KEY, &c, &h, &w, &bd, &pd));
        CHECK(c == 1 && h == 16 && w == 32 && bd == 0 && pd == 0, "raw inputs (%d, %d, %d), behaviour %d, pupil %d", c, h, w, bd, pd);
        const int64_t *ids;
        int n;
        int64_t want[10] = {1, 2, 3, 5, 6, 7, 8, 10, 11, 13};
        CHECK(npred_model_unit_ids(m2, MINI_KEY, &ids, &n) == NPRED_OK && n == 10 && !memcmp(ids, want, sizeof want), "unit ids");
    }
    npred_model_free(m2);
    /* the binary: .npy float32 and uint8, PNG files, a folder; CSV, NPY, '-' */
    char f32[600], u8[600], outn[600], outc[600], ids[700], pngdir[600];
    snprintf(f32, sizeof f32, "%s/raw_f32.npy", tmpdir);
    snprintf(u8, sizeof u8, "%s/raw_u8.npy", tmpdir);
    snprintf(outn, sizeof outn, "%s/rates.npy", tmpdir);
    snprintf(outc, sizeof outc, "%s/rates.csv", tmpdir);
    snprintf(ids, sizeof ids, "%s/rates.unit_ids.npy", tmpdir);
    snprintf(pngdir, sizeof pngdir, "%s/pngs", tmpdir);
    int64_t shp[4] = {p.T, 1, 16, 32};
    size_t img = 16 * 32, tn = (size_t)p.T * p.n;
    unsigned char *bytes = malloc(tn * img);
    float *want = malloc(sizeof(float) * tn);
    for (size_t k = 0; bytes && k < (size_t)p.T * img; k++) bytes[k] = (unsigned char)p.raw[k];
    for (size_t k = 0; want && k < tn; k++) want[k] = p.pred[k] / p.prec[k % p.n];
    CHECK(write_npy(f32, NPRED_DT_F32, 4, p.raw, 4, shp) && bytes && write_npy(u8, NPRED_DT_U8, 1, bytes, 4, shp),
          "write raw npy");
    mkdir(pngdir, 0755);
    for (int t = 0; t < 3; t++) {
        char f[700];
        snprintf(f, sizeof f, "%s/stim_%02d.png", pngdir, t);
        CHECK(write_png_gray(f, p.raw + t * img, 16, 32), "write png");
    }
    const char *srcs[2] = {f32, u8};
    for (int k = 0; k < 2 && want; k++) {
        char *err = NULL;
        int rc = run2(NULL, &err, "predict --model %s --raw %s --out %s", dir2, srcs[k], outn);
        npred_array a, u;
        if (CHECK(rc == 0, "predict --raw %s: exit %d\n%s", srcs[k], rc, err ? err : "") &&
            CHECK_OK(npred_npy_read(outn, &a))) {
            CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 2 && a.shape[0] == p.T && a.shape[1] == 10 &&
                      !memcmp(a.data, want, sizeof(float) * tn),
                  "%s: the binary's rates equal the loader path's / precision bit for bit", srcs[k]);
            npred_array_free(&a);
            if (CHECK_OK(npred_npy_read(ids, &u))) {
                CHECK(u.dtype == NPRED_DT_I64 && u.count == 10 && ((int64_t *)u.data)[9] == 13, "unit_ids beside the rates");
                npred_array_free(&u);
            }
        }
        free(err);
    }
    /* CSV keyed by unit_id, from the PNG folder (3 images); '-' prints the same */
    char *out = NULL, *err = NULL;
    int rc = run2(NULL, &err, "predict --model %s --raw %s --out %s", dir2, pngdir, outc);
    char *csv = read_text(outc);
    if (CHECK(rc == 0 && csv, "predict --raw folder: exit %d\n%s", rc, err ? err : "") && want) {
        CHECK(!strncmp(csv, "stimulus,unit_id,rate\n", 22), "CSV header");
        const char *q = csv + 22;
        int64_t uid[10] = {1, 2, 3, 5, 6, 7, 8, 10, 11, 13};
        for (int t = 0; t < 3; t++)
            for (int j = 0; j < 10; j++) {
                char name[64];
                long long u;
                float v;
                int nch = 0;
                char fmt_name[32];
                snprintf(fmt_name, sizeof fmt_name, "stim_%02d.png", t);
                int got = sscanf(q, "%63[^,],%lld,%g\n%n", name, &u, &v, &nch);
                CHECK(got == 3 && !strcmp(name, fmt_name) && u == uid[j] && v == want[t * 10 + j],
                      "CSV row %d/%d: %s %lld %.9g vs %.9g", t, j, name, u, v, want[t * 10 + j]);
                q += nch;
            }
        CHECK(!*q, "30 rows");
    }
    free(err);
    rc = run2(&out, NULL, "predict --model %s --raw %s/stim_00.png %s/stim_01.png %s/stim_02.png --out -", dir2, pngdir, pngdir,
              pngdir);
    CHECK(rc == 0 && out && csv && !strcmp(out, csv), "PNG files, CSV to standard output: the same rows");
    free(out), free(csv);
    /* a model without a record takes the statistics from a scan */
    rc = run2(&out, &err, "predict --model %s --raw %s --stats " MINI_ZIP " --out -", dir, f32);
    CHECK(rc == 0 && out && strstr(out, "stimulus,unit_id,rate\n0,1,"), "--stats: exit %d\n%s", rc, err ? err : "");
    free(out), free(err);
    /* bad inputs: the size, the channels, no record */
    char small[600], rgb[600];
    snprintf(small, sizeof small, "%s/small.npy", tmpdir);
    snprintf(rgb, sizeof rgb, "%s/rgb.npy", tmpdir);
    int64_t s8[4] = {p.T, 1, 8, 16}, s3[4] = {1, 3, 16, 32};
    CHECK(write_npy(small, NPRED_DT_F32, 4, p.raw, 4, s8) && write_npy(rgb, NPRED_DT_F32, 4, p.raw, 4, s3), "write");
    expect_failure("raw images of the model's input size", "expects raw images of 16 x 32 with 1 channel(s)",
                   "predict --model %s --raw %s --out %s", dir2, small, outc);
    expect_failure("three channels", "16 x 32 with 3 channel(s)", "predict --model %s --raw %s --out %s", dir2, rgb, outc);
    expect_failure("no preprocessing recorded", "records no preprocessing", "predict --model %s --raw %s --out %s", dir, f32, outc);
    expect_failure("an output of another kind", "--out", "predict --model %s --raw %s --out rates.txt", dir2, f32);
    expect_failure("no such file", "no such file", "predict --model %s --raw %s/none.png --out %s", dir2, tmpdir, outc);
    expect_failure("behaviour the session does not use", "--behavior", "predict --model %s --raw %s --behavior %s --out %s",
                   dir2, f32, f32, outc);
    free(bytes), free(want);
out:
    loader_path_free(&p);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    npred_model_free(m);
}

/* 4 input channels (image + 3 behaviour planes) and a shifter from the pupil centre:
 * the planes and the eye positions go through the recorded normalisation too. */
static void test_predict_raw_behavior(void)
{
    const char *cfg = "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4, \"stack\": -1,"
                      " \"grid_mean_predictor\": null, \"shifter\": true}";
    npred_model_session ses = {MINI_KEY, 10, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    lc.batch_size = 3;
    lc.scale.set = 1;
    lc.scale.v = 0.5;
    lc.include_behavior = 1;
    lc.include_eye_position = 1;
    const char *paths[1] = {MINI_ZIP};
    npred_loaders *L = NULL;
    loader_path p;
    memset(&p, 0, sizeof p);
    if (!CHECK_OK(npred_model_create(&m, cfg, "behaviour model", 4, 8, 16, &ses, 1, 3, 4)) ||
        !CHECK_OK(npred_loaders_open(&L, paths, 1, &lc)) || !CHECK_OK(npred_model_record_preprocessing(m, L)) ||
        !run_loader_path(m, L, &p))
        goto out;
    check_bitwise(m, &p, "behaviour planes and shifter");
    int c, h, w, bd, pd;
    CHECK_OK(npred_model_raw_inputs(m, MINI_KEY, &c, &h, &w, &bd, &pd));
    CHECK(c == 1 && bd == 3 && pd == 2, "raw inputs: 1 channel, behaviour 3, pupil 2 (%d %d %d)", c, bd, pd);
    float r[10];
    CHECK(npred_model_predict_raw(m, MINI_KEY, p.raw, 1, NULL, p.eye, r, NULL) == NPRED_ERR_ARG &&
              strstr(npred_last_error(), "behavior (B, 3)"),
          "missing behaviour named: %s", npred_last_error());
out:
    loader_path_free(&p);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    npred_model_free(m);
}

/* ---------------------------------------------------------------- report */

static int write_png_rgb(const char *path, int h, int w)
{
    unsigned char *px = malloc((size_t)h * w * 3);
    if (!px) return 0;
    for (int i = 0; i < h * w * 3; i++) px[i] = (unsigned char)(i * 7);
    int ok = write_png(path, px, h, w, 3);
    free(px);
    return ok;
}

/* Open the report in headless Chromium: a copy of index.html with a script that
 * records, after the page has loaded, every image's source and natural size into
 * the DOM, which --dump-dom prints. Returns the dump (caller frees) or NULL. */
static char *chromium_dump(const char *dir)
{
    char idx[700], chk[700], profile[700], cmd[3000];
    snprintf(idx, sizeof idx, "%s/index.html", dir);
    snprintf(chk, sizeof chk, "%s/check.html", dir);
    snprintf(profile, sizeof profile, "%s/chromium-profile", tmpdir);
    char *html = read_text(idx);
    if (!html) return NULL;
    char *end = strstr(html, "</body>");
    if (!end) {
        free(html);
        return NULL;
    }
    FILE *f = fopen(chk, "wb");
    if (!f) {
        free(html);
        return NULL;
    }
    fwrite(html, 1, (size_t)(end - html), f);
    fputs("<script>window.addEventListener('load', function () {\n"
          "  var out = document.createElement('pre'); out.id = 'imgcheck';\n"
          "  var imgs = document.getElementsByTagName('img'), s = 'images ' + imgs.length + '\\n';\n"
          "  for (var i = 0; i < imgs.length; i++)\n"
          "    s += 'IMG ' + imgs[i].getAttribute('src') + ' ' + (imgs[i].complete ? 1 : 0) + ' ' + imgs[i].naturalWidth +\n"
          "         'x' + imgs[i].naturalHeight + '\\n';\n"
          "  out.textContent = s + 'END'; document.body.appendChild(out);\n"
          "});</script>\n",
          f);
    fputs(end, f);
    fclose(f);
    free(html);
    snprintf(cmd, sizeof cmd,
             "timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
             "--disable-component-update --disable-sync --no-first-run --user-data-dir='%s' "
             "--virtual-time-budget=10000 --dump-dom 'file://%s' 2>/dev/null",
             profile, chk);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char *buf = th_read_stream(p);
    pclose(p);
    return buf;
}

static void test_report(void)
{
    char dir[512];
    npred_model *m = mini_model(dir, sizeof dir);
    if (!m) return;
    npred_model_free(m);
    /* make it look like a run: log.csv and config.json naming the data */
    char p[700], cwd[512], mei[600], out[600];
    snprintf(p, sizeof p, "%s/log.csv", dir);
    CHECK(write_text(p, "epoch,lr,train_loss,validation_correlation,seconds\n1,0.005,1.5,0.10,1.0\n"
                        "2,0.005,1.2,0.15,1.0\n3,0.0015,1.1,0.17,1.0\n"),
          "write log.csv");
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "cwd");
    snprintf(p, sizeof p, "%s/config.json", dir);
    char cfgtext[1200];
    snprintf(cfgtext, sizeof cfgtext, "{\"data\": [\"%s/" MINI_ZIP "\"]}", cwd);
    CHECK(write_text(p, cfgtext), "write config.json");
    snprintf(mei, sizeof mei, "%s/mei_out", tmpdir);
    mkdir(mei, 0755);
    snprintf(p, sizeof p, "%s/meis.png", mei);
    CHECK(write_png_rgb(p, 40, 60), "write meis.png");
    snprintf(out, sizeof out, "%s/report", tmpdir);
    char *so = NULL, *se = NULL;
    int rc = run2(&so, &se, "report %s --mei %s --out %s", dir, mei, out);
    CHECK(rc == 0 && so && strstr(so, "index.html"), "report: exit %d\n%s%s", rc, so ? so : "", se ? se : "");
    free(so), free(se);
    const char *want[] = {"training_loss.png", "validation_objective.png", "learning_rate.png", "test_correlations.png",
                          "correlation_vs_oracle.png", "correlations_" MINI_KEY ".png", "positions_" MINI_KEY ".png",
                          "retinotopy_" MINI_KEY "_x.png", "retinotopy_" MINI_KEY "_y.png", "filters.png",
                          "insilico_0_meis.png"};
    int n_want = (int)(sizeof want / sizeof want[0]);
    char *html = NULL;
    snprintf(p, sizeof p, "%s/index.html", out);
    html = read_text(p);
    if (CHECK(html != NULL, "index.html written")) {
        for (int k = 0; k < n_want; k++) {
            char tag[200];
            snprintf(tag, sizeof tag, "<img src=\"%s\"", want[k]);
            CHECK(strstr(html, tag) != NULL, "index.html shows %s", want[k]);
        }
        CHECK(strstr(html, "id=\"metrics\"") && strstr(html, "<td>" MINI_KEY "</td>") && strstr(html, "neurons.csv"),
              "headline numbers in index.html");
    }
    /* the numbers shown are npred eval's */
    rc = run2(&so, NULL, "eval --model %s --data " MINI_ZIP " --json", dir);
    cJSON *j = rc == 0 && so ? cJSON_Parse(so) : NULL;
    if (CHECK(j != NULL, "eval") && html) {
        char cell[64];
        snprintf(cell, sizeof cell, "<td>%.4f</td>", th_num(j, NAN, "overall", "single_trial_correlation", NULL));
        CHECK(strstr(html, cell) != NULL, "the table shows eval's single-trial correlation %s", cell);
    }
    cJSON_Delete(j);
    free(so);
    snprintf(p, sizeof p, "%s/neurons.csv", out);
    char *csv = read_text(p);
    CHECK(csv && !strncmp(csv, "session,unit_id,", 16), "neurons.csv written");
    free(csv);
    /* every image loads in a browser */
    char *dom = chromium_dump(out);
    if (CHECK(dom && strstr(dom, "imgcheck") && strstr(dom, "END"), "chromium ran the page:\n%.500s", dom ? dom : "(nothing)")) {
        char count[64];
        snprintf(count, sizeof count, "images %d\n", n_want);
        CHECK(strstr(dom, count) != NULL, "chromium sees %d images", n_want);
        for (int k = 0; k < n_want; k++) {
            char tag[200];
            snprintf(tag, sizeof tag, "IMG %s 1 ", want[k]);
            const char *q = strstr(dom, tag);
            int w = 0, h = 0;
            CHECK(q && sscanf(q + strlen(tag), "%dx%d", &w, &h) == 2 && w > 0 && h > 0,
                  "%s loaded in chromium (%d x %d)", want[k], w, h);
        }
    }
    free(dom);
    free(html);
    /* a model file alone (no run, no data): filters only; bad inputs */
    char out2[600];
    snprintf(out2, sizeof out2, "%s/report2", tmpdir);
    rc = run2(&so, &se, "report %s/model.safetensors --out %s", dir, out2);
    snprintf(p, sizeof p, "%s/index.html", out2);
    html = read_text(p);
    CHECK(rc == 0 && html && strstr(html, "<img src=\"filters.png\"") && !strstr(html, "training_loss"),
          "report of a model file: exit %d\n%s", rc, se ? se : "");
    free(html), free(so), free(se);
    expect_failure("report without --out", "--out", "report %s", dir);
    expect_failure("--mei of a file", "not a folder", "report %s --mei %s/log.csv --out %s", dir, dir, out2);
    expect_failure("--mei without meis.png", "meis.png", "report %s --no-data --mei %s --out %s", dir, out, out2);
}

/* A published SENSORIUM checkpoint (needs ../shared/checkpoints): npred import --stats
 * records the statistics of a scan named as the checkpoint's session (a simulated
 * 144 x 256 scan with its 7776 neurons), and npred predict --raw on the scan's raw
 * images equals the loader path (scale 0.25) / response precision bit for bit. The loader
 * runs the 6 test trials as one batch, as --raw does: this model's forward pass rounds
 * differently in the last bit for another batch size (GEMM blocking), the transforms never. */
static void test_import_stats_checkpoint(void)
{
    const char *pth = "../shared/checkpoints/sensorium_sota_model.pth";
    struct stat sb;
    if (stat(pth, &sb) != 0) {
        th_skip("../shared/checkpoints absent");
        return;
    }
    char sim[600], tree[900], model[600], imgs[600], rates[600];
    snprintf(sim, sizeof sim, "%s/sota_sim", tmpdir);
    char *err = NULL;
    int rc = run2(NULL, &err, "simulate --out %s --neurons 7776 --trials 12 --test-images 3 --test-repeats 2 "
                  "--height 144 --width 256 --quiet --seed 9", sim);
    if (!CHECK(rc == 0, "simulate: exit %d\n%s", rc, err ? err : "")) {
        free(err);
        return;
    }
    free(err);
    char from[900];
    snprintf(from, sizeof from, "%s/static90000-1-1-GrayImageNet-94c6ff995dac583098847cfecd43e7b6", sim);
    snprintf(tree, sizeof tree, "%s/static26872-17-20-GrayImageNet-94c6ff995dac583098847cfecd43e7b6", sim);
    if (!CHECK(rename(from, tree) == 0, "rename the scan to the checkpoint's session")) return;
    snprintf(model, sizeof model, "%s/sota_model", tmpdir);
    rc = run2(NULL, &err, "import %s --out %s --stats %s --quiet", pth, model, tree);
    CHECK(rc == 0, "import --stats: exit %d\n%s", rc, err ? err : "");
    free(err);
    npred_model *m = NULL;
    npred_loaders *L = NULL;
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    lc.batch_size = 8;
    lc.scale.set = 1;
    lc.scale.v = 0.25;
    const char *paths[1] = {tree};
    if (!CHECK_OK(npred_model_load(&m, model, 8)) || !CHECK_OK(npred_loaders_open(&L, paths, 1, &lc))) goto out;
    CHECK(npred_model_has_preprocessing(m, "26872-17-20"), "the imported model records the statistics");
    /* the loader path (the key differs from mini_tree's: predict through the helper's steps here) */
    npred_session_info si;
    npred_normalizer_info ni;
    npred_loaders_session(L, 0, &si);
    npred_loaders_normalizer(L, 0, &ni);
    int64_t T = si.tier_n[NPRED_TIER_TEST];
    int n = (int)si.n_neurons;
    size_t img = 144 * 256;
    float *pred = malloc(sizeof(float) * T * n), *raw = malloc(sizeof(float) * T * img), *want = malloc(sizeof(float) * T * n);
    npred_batch b;
    npred_loader_iter it;
    int has = 1;
    int64_t k = 0;
    npred_dataset *rawd = NULL; /* the raw images (the loaders keep them transformed only) */
    if (!CHECK(pred && raw && want && n == 7776 && T == 6, "7776 neurons, 6 test trials") ||
        !CHECK_OK(npred_dataset_open(&rawd, tree, NULL)))
        goto out2;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TEST, NULL));
    while (npred_loader_iter_next(&it, &b, &has) == NPRED_OK && has && k + b.n <= T) {
        CHECK_OK(npred_model_predict(m, "26872-17-20", b.images, (int)b.n, NULL, NULL, pred + k * n));
        for (int64_t i = 0; i < b.n; i++)
            memcpy(raw + (k + i) * img, npred_dataset_field(rawd, NPRED_FIELD_IMAGES) + b.trials[i] * img,
                   sizeof(float) * img);
        k += b.n;
    }
    npred_loader_iter_free(&it);
    npred_batch_free(&b);
    for (int64_t q = 0; q < T * n; q++) want[q] = pred[q] / ni.response_precision[si.neuron_idx[q % n]];
    snprintf(imgs, sizeof imgs, "%s/sota_raw.npy", tmpdir);
    snprintf(rates, sizeof rates, "%s/sota_rates.npy", tmpdir);
    int64_t shp[4] = {T, 1, 144, 256};
    CHECK(write_npy(imgs, NPRED_DT_F32, 4, raw, 4, shp), "write raw images");
    rc = run2(NULL, &err, "predict --model %s --raw %s --out %s", model, imgs, rates);
    npred_array a;
    if (CHECK(rc == 0, "predict --raw: exit %d\n%s", rc, err ? err : "") && CHECK_OK(npred_npy_read(rates, &a))) {
        CHECK(a.count == (size_t)(T * n) && !memcmp(a.data, want, sizeof(float) * T * n),
              "imported checkpoint: raw path == loader path / precision, bit for bit");
        npred_array_free(&a);
    }
    free(err);
out2:
    npred_dataset_free(rawd);
    free(pred), free(raw), free(want);
out:
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    npred_model_free(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npred-test-results-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    struct stat sb;
    if (stat(npred_bin(), &sb) != 0) {
        fprintf(stderr, "FAIL: %s not found (build it first, or set NPRED_BIN)\n", npred_bin());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_eval_per_neuron);
    RUN(test_submission_format);
    RUN(test_submission_roundtrip);
    RUN(test_score_bad_inputs);
    RUN(test_predict_raw);
    RUN(test_predict_raw_behavior);
    RUN(test_import_stats_checkpoint);
    RUN(test_report);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return th_summary();
}
