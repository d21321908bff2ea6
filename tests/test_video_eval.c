/* Video models scored as the 2023 kit scores them (npred_video_evaluate, npred/video_eval.h)
 * and `npred eval` / `npred predict --submission` on a video model, on the
 * mini_movie_tree scan (and a copy of it under another name: two sessions) with a
 * model built from the scan (tests/video_mini_model.h):
 * - the per-neuron correlation, response / prediction means and the overall mean
 *   against a double-precision get_correlations written here from the model's own
 *   whole-trial predictions (responses from frame 50 on, the last T - 50 output frames);
 * - the CLI's per-neuron CSV and JSON equal the API's values;
 * - errors name the scan, the tier, the option. The submission file's contents are
 *   checked by the independent Parquet reader (tests/python/test_python_video_submission.py). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "harness.h"
#include "npred/video_eval.h"
#include "video_mini_model.h"

static char tmpdir[256], scan2[320];

static npred_status open_loaders(npred_video_loaders **L, const char *const *paths, size_t n, const char *json)
{
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    npred_status st = npred_video_loader_config_parse(&c, json, NULL, NULL);
    if (!st) st = npred_video_loaders_open(L, paths, n, &c);
    npred_video_loader_config_free(&c);
    return st;
}

/* np_functions.corr(ddof 0, eps 1e-8) of two columns in double, NaN -> 0 */
static double corr_ref(const double *x, const double *y, int64_t T)
{
    double mx = 0, my = 0, sx = 0, sy = 0, c = 0;
    for (int64_t t = 0; t < T; t++) mx += x[t], my += y[t];
    mx /= (double)T, my /= (double)T;
    for (int64_t t = 0; t < T; t++) sx += (x[t] - mx) * (x[t] - mx), sy += (y[t] - my) * (y[t] - my);
    sx = sqrt(sx / (double)T), sy = sqrt(sy / (double)T);
    for (int64_t t = 0; t < T; t++) c += (x[t] - mx) / (sx + 1e-8) * ((y[t] - my) / (sy + 1e-8));
    c /= (double)T;
    return isnan(c) ? 0 : c;
}

/* The reference of one session: every trial of the tier predicted whole, the scored
 * frames gathered per neuron in double; compared with e. */
static void check_session(npred_video_model *m, const npred_video_loaders *L, size_t s, const char *tier,
                          const npred_video_eval_session *e, double *sum)
{
    npred_video_session_info si;
    npred_video_loaders_session(L, s, &si);
    int ti = npred_video_loaders_tier(L, s, tier);
    int64_t n = si.n_neurons;
    CHECK(ti >= 0 && !strcmp(e->data_key, si.data_key) && e->n_neurons == n && e->n_trials == si.tier_n[ti],
          "session %s: %lld neurons %lld trials", e->data_key, (long long)e->n_neurons, (long long)e->n_trials);
    if (ti < 0 || e->n_neurons != n) return;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    double *resp = malloc(sizeof(double) * 64 * 60 * (size_t)n), *pred = malloc(sizeof(double) * 64 * 60 * (size_t)n);
    float *rates = malloc(sizeof(float) * 60 * (size_t)n);
    int64_t rows = 0;
    if (!CHECK(resp && pred && rates && si.tier_n[ti] <= 64, "alloc") || !CHECK_OK(npred_video_batch_init(&b, L, 1)))
        goto out;
    for (int64_t k = 0; k < si.tier_n[ti]; k++) {
        int64_t trial = si.tier_idx[ti][k];
        if (!CHECK_OK(npred_video_loaders_get(L, s, &trial, NULL, 1, NULL, &b))) goto out;
        int T1 = npred_video_model_output_frames(m, b.f);
        if (!CHECK_OK(npred_video_model_predict(m, si.data_key, b.videos, 1, b.c, b.f, b.h, b.w, b.pupil_center, rates)))
            goto out;
        int keep = b.resp_f - 50;
        CHECK(T1 == b.f - 4 && keep > 0 && keep <= T1, "trial %lld: %d frames, %d out", (long long)trial, b.f, T1);
        for (int t = 0; t < keep; t++, rows++)
            for (int64_t j = 0; j < n; j++) {
                resp[j * 64 * 60 + rows] = b.responses[j * b.resp_f + 50 + t];
                pred[j * 64 * 60 + rows] = rates[(size_t)(T1 - keep + t) * n + j];
            }
    }
    CHECK(e->n_frames == rows, "scored frames %lld, reference %lld", (long long)e->n_frames, (long long)rows);
    const npred_array *u = npred_video_dataset_neuron_info(si.dataset, "unit_ids");
    int64_t *ids = NULL;
    if (CHECK(u && npred_array_to_i64(u, &ids) == NPRED_OK, "unit_ids"))
        CHECK(!memcmp(ids, e->unit_ids, sizeof(int64_t) * (size_t)n), "unit ids");
    free(ids);
    double worst = 0, msum = 0;
    for (int64_t j = 0; j < n; j++) {
        const double *x = resp + j * 64 * 60, *y = pred + j * 64 * 60;
        double c = corr_ref(x, y, rows), rm = 0, pm = 0, rv = 0;
        for (int64_t t = 0; t < rows; t++) rm += x[t], pm += y[t];
        rm /= (double)rows, pm /= (double)rows;
        for (int64_t t = 0; t < rows; t++) rv += (x[t] - rm) * (x[t] - rm);
        rv /= (double)rows;
        worst = th_worst(worst, fabs(e->correlation[j] - c));
        worst = th_worst(worst, fabs(e->response_mean[j] - rm) + fabs(e->prediction_mean[j] - pm) +
                                    fabs(e->response_variance[j] - rv));
        msum += c;
        *sum += c;
    }
    CHECK(!(worst > 1e-9), "session %s: per-neuron values off the reference by %g", e->data_key, worst);
    CHECK(!(fabs(e->mean_correlation - msum / (double)n) > 1e-12), "session mean %g, reference %g", e->mean_correlation,
          msum / (double)n);
    int nonzero = 0;
    for (int64_t j = 0; j < n; j++) nonzero += e->correlation[j] != 0;
    CHECK(nonzero >= n - 1, "the correlations are not trivially zero (%d of %lld)", nonzero, (long long)n);
out:
    npred_video_batch_free(&b);
    free(resp), free(pred), free(rates);
}

/* two sessions (the scan and a copy under another name), tier oracle */
static void test_evaluate_reference(void)
{
    const char *paths[2] = {MINI_MOVIE_SCAN, scan2};
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_eval_results res;
    memset(&res, 0, sizeof res);
    if (!CHECK_OK(open_loaders(&L, paths, 2, "{\"batch_size\": 1, \"to_cut\": false}")) ||
        !CHECK_OK(video_mini_model(&m, L)))
        goto out;
    if (!CHECK_OK(npred_video_evaluate(m, L, "oracle", NULL, &res))) goto out;
    CHECK(res.n_sessions == 2 && res.n_neurons == 20 && res.skip == 50 && !strcmp(res.tier, "oracle"),
          "%d sessions %lld neurons", res.n_sessions, (long long)res.n_neurons);
    double sum = 0;
    for (int s = 0; s < res.n_sessions && s < 2; s++) check_session(m, L, (size_t)s, "oracle", &res.sessions[s], &sum);
    CHECK(!(fabs(res.correlation - sum / 20) > 1e-12), "overall %g, reference (mean over all neurons) %g",
          res.correlation, sum / 20);
    char *csv = npred_video_eval_per_neuron_csv(&res);
    int lines = 0;
    for (const char *p = csv; p && *p; p++) lines += *p == '\n';
    CHECK(csv && !strncmp(csv, "session,unit_id,neuron,single_trial_correlation,response_mean,response_variance,"
                               "prediction_mean,scored_frames\n", 106) && lines == 21,
          "CSV: %d lines: %.200s", lines, csv ? csv : "(null)");
    free(csv);
out:
    npred_video_eval_results_free(&res);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
}

static void expect_error(npred_status st, const char *needle, const char *needle2)
{
    const char *e = npred_last_error();
    CHECK(st != NPRED_OK && strstr(e, needle) && (!needle2 || strstr(e, needle2)), "status %d, error '%s' should name "
          "'%s'%s%s", st, e, needle, needle2 ? " and " : "", needle2 ? needle2 : "");
}

static void test_api_errors(void)
{
    const char *one[1] = {MINI_MOVIE_SCAN}, *two[2] = {MINI_MOVIE_SCAN, scan2};
    npred_video_loaders *L1 = NULL, *L2 = NULL, *Lcut = NULL;
    npred_video_model *m = NULL;
    npred_video_submission *sub = NULL;
    npred_video_eval_results res;
    memset(&res, 0, sizeof res);
    if (!CHECK_OK(open_loaders(&L1, one, 1, "{\"batch_size\": 1, \"to_cut\": false}")) ||
        !CHECK_OK(open_loaders(&L2, two, 2, "{\"batch_size\": 1, \"to_cut\": false}")) ||
        !CHECK_OK(open_loaders(&Lcut, one, 1, "{\"batch_size\": 1, \"frames\": 52, \"offset\": 0}")) ||
        !CHECK_OK(video_mini_model(&m, L1)))
        goto out;
    expect_error(npred_video_evaluate(m, L2, "oracle", NULL, &res), scan2, "no session");
    npred_video_eval_results_free(&res);
    expect_error(npred_video_evaluate(m, L1, "validation", NULL, &res), MINI_MOVIE_SCAN, "'validation'");
    npred_video_eval_results_free(&res);
    char path[400];
    snprintf(path, sizeof path, "%s/api.parquet", tmpdir);
    if (!CHECK_OK(npred_video_submission_open(&sub, path, NULL))) goto out;
    int64_t rows = -1;
    expect_error(npred_video_submission_add_tier(sub, m, Lcut, "live_test_main", &rows), "whole trials", NULL);
    CHECK(rows == 0, "no rows after the error (%lld)", (long long)rows);
    if (CHECK_OK(npred_video_submission_add_tier(sub, m, L1, "oracle", &rows))) CHECK(rows == 3, "%lld rows", (long long)rows);
    CHECK_OK(npred_video_submission_close(sub));
    sub = NULL;
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 100, "the file is written");
    /* random subsequences score too (the kit's trainer validates on them) */
    npred_rng rng;
    npred_rng_seed(&rng, 3);
    if (CHECK_OK(npred_video_evaluate(m, Lcut, "oracle", &rng, &res)))
        CHECK(res.sessions[0].n_frames == 3 * 2, "2 scored frames per trial of 52: %lld", (long long)res.sessions[0].n_frames);
out:
    npred_video_submission_abort(sub);
    npred_video_eval_results_free(&res);
    npred_video_model_free(m);
    npred_video_loaders_free(L1), npred_video_loaders_free(L2), npred_video_loaders_free(Lcut);
}

/* a number of the CSV: field k of the line after `skip` lines */
static double csv_field(const char *csv, int line, int k)
{
    const char *p = csv;
    for (int i = 0; i < line && p; i++) p = strchr(p, '\n'), p = p ? p + 1 : NULL;
    for (int i = 0; i < k && p; i++) p = strchr(p, ','), p = p ? p + 1 : NULL;
    return p ? strtod(p, NULL) : NAN;
}

static void test_cli(void)
{
    const char *one[1] = {MINI_MOVIE_SCAN};
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_eval_results res;
    memset(&res, 0, sizeof res);
    char *out = NULL, dir[300], csv_path[320], pq[320];
    snprintf(dir, sizeof dir, "%s/model", tmpdir);
    snprintf(csv_path, sizeof csv_path, "%s/neurons.csv", tmpdir);
    snprintf(pq, sizeof pq, "%s/predictions_live_main.parquet.brotli", tmpdir);
    if (!CHECK_OK(open_loaders(&L, one, 1, "{\"batch_size\": 1, \"to_cut\": false}")) ||
        !CHECK_OK(video_mini_model(&m, L)) || !CHECK_OK(npred_video_model_save(m, dir)) ||
        !CHECK_OK(npred_video_evaluate(m, L, "oracle", NULL, &res)))
        goto out;
    int rc = th_npred(&out, "eval --model %s --data %s --per-neuron %s", dir, MINI_MOVIE_SCAN, csv_path);
    CHECK(rc == 0 && out && strstr(out, "tier oracle") && strstr(out, "dynamic00000-1-1"), "eval: %d %s", rc, out);
    free(out), out = NULL;
    void *buf = NULL;
    size_t len = 0;
    if (CHECK_OK(npred_file_read_all(csv_path, &buf, &len))) {
        char *csv = realloc(buf, len + 1);
        if (csv) {
            buf = csv;
            csv[len] = 0;
            double worst = 0;
            for (int j = 0; j < 10; j++)
                for (int k = 0; k < 4; k++) {
                    const double *col[] = {res.sessions[0].correlation, res.sessions[0].response_mean,
                                           res.sessions[0].response_variance, res.sessions[0].prediction_mean};
                    worst = th_worst(worst, fabs(csv_field(csv, 1 + j, 3 + k) - col[k][j]));
                }
            CHECK(worst == 0, "the CSV's numbers are the API's (round trip of repr): worst %g", worst);
            CHECK(csv_field(csv, 1, 1) == (double)res.sessions[0].unit_ids[0] && csv_field(csv, 10, 7) == 
                  (double)res.sessions[0].n_frames, "unit id / scored frames");
        }
        free(buf);
    }
    rc = th_npred(&out, "eval --model %s --data %s --json 2>/dev/null", dir, MINI_MOVIE_SCAN);
    cJSON *j = rc == 0 && out ? cJSON_Parse(out) : NULL;
    cJSON *ov = j ? cJSON_GetObjectItem(cJSON_GetObjectItem(j, "overall"), "single_trial_correlation") : NULL;
    CHECK(ov && cJSON_IsNumber(ov) && fabs(ov->valuedouble - res.correlation) <= 1e-14 * (1 + fabs(res.correlation)),
          "--json overall: %s", out ? out : "(none)");
    cJSON_Delete(j);
    free(out), out = NULL;
    rc = th_npred(&out, "predict --model %s --data %s --tier live_test_main --submission %s", dir, MINI_MOVIE_SCAN, pq);
    CHECK(rc == 0 && out && strstr(out, "1 trials"), "predict --submission: %d %s", rc, out);
    free(out), out = NULL;
    FILE *f = fopen(pq, "rb");
    char magic[4] = {0};
    CHECK(f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "PAR1", 4), "a Parquet file");
    if (f) fclose(f);
    /* errors: name the file, the tier, the option */
    struct {
        const char *args, *needle;
        int rc;
    } bad[] = {
        {"eval --model %s --data tests/fixtures/no_such_scan", "no_such_scan", 1},
        {"eval --model %s --data " MINI_MOVIE_SCAN " --tier nosuch", "'nosuch'", 1},
        {"eval --model %s --data " MINI_MOVIE_SCAN " --batch 4", "--batch", 2},
        {"predict --model %s --data " MINI_MOVIE_SCAN " --tier live_test_main --submission /nonexistent/dir/x.parquet",
         "/nonexistent/dir/x.parquet", 1},
        {"predict --model %s --data " MINI_MOVIE_SCAN " --tier live_test_main --submission x.parquet --ground-truth y",
         "--ground-truth", 2},
        {"predict --model %s --data " MINI_MOVIE_SCAN " --submission x.parquet", "--tier", 2},
        {"predict --model %s --data " MINI_MOVIE_SCAN " --tier live_test_main --submission -", "Parquet", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[1200];
        snprintf(args, sizeof args, bad[i].args, dir);
        rc = th_npred(&out, "%s", args);
        CHECK(rc == bad[i].rc && out && strstr(out, bad[i].needle), "`%s`: exit %d, output %s", args, rc, out);
        free(out), out = NULL;
    }
out:
    free(out);
    npred_video_eval_results_free(&res);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npred-test-video-eval-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    /* the scan under another name: a second session */
    snprintf(scan2, sizeof scan2, "%s/dynamic00000-2-2-Video-copy", tmpdir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", MINI_MOVIE_SCAN, scan2);
    if (th_shell(NULL, cmd) != 0) fprintf(stderr, "FAIL: %s\n", cmd);
    RUN(test_evaluate_reference);
    RUN(test_api_errors);
    RUN(test_cli);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return th_summary();
}
