/* npred info / npred predict --video on a video model made on the mini_movie_tree scan:
 * the command's per-trial rates equal the library's (the same loader pipeline, whole
 * trials, npred_video_model_predict), both output layouts, and bad inputs give a
 * non-zero exit and a message naming the file, key or trial. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "npred/model.h"
#include "npred/npy.h"
#include "npred/video.h"
#include "npred/video_model.h"

#define SCAN "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef"

static char tmpdir[256];
static char run_dir[512];

static void expect_failure(const char *what, const char *want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect_failure(const char *what, const char *want, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = th_npred(&out, "%s", args);
    CHECK((rc == 1 || rc == 2) && out && strstr(out, want) && strstr(out, "npred"),
          "%s: exit %d, wanted 1 or 2 and a message naming '%s'; got:\n%s", what, rc, want, out ? out : "");
    free(out);
}

static const char *LOADER = "{\"batch_size\": 2, \"frames\": 20}";

/* A factorised 3D model (cut-off 4) with a shifter for the scan's default loader
 * (frame + behaviour channels), saved to run_dir with the loader record. */
static int make_model(void)
{
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    double *xy = NULL;
    int ok = 0;
    const char *scan = SCAN;
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    if (!CHECK_OK(npred_video_loader_config_parse(&lc, LOADER, NULL, NULL)) ||
        !CHECK_OK(npred_video_loaders_open(&L, &scan, 1, &lc)))
        goto out;
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
    if (!CHECK(cm != NULL, "coordinates") || !CHECK_OK(npred_array_to_f64(cm, &xy))) goto out;
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"seed\": 3, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": %d,"
             " \"hidden_channels\": 4, \"spatial_input_kernel\": [5, 5], \"temporal_input_kernel\": 3,"
             " \"spatial_hidden_kernel\": [3, 3], \"temporal_hidden_kernel\": 3, \"layers\": 2, \"padding\": true},"
             " \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2,"
             " \"init_sigma\": 1.0, \"gamma_readout\": 0.1, \"gauss_type\": \"full\", \"grid_mean_predictor\":"
             " {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30,"
             " \"final_tanh\": true}}, \"use_gru\": false, \"use_shifter\": true, \"shifter_type\": \"MLP\","
             " \"shifter_dict\": {\"shift_layers\": 3, \"hidden_channels_shifter\": 5}}",
             si.channels);
    npred_video_model_session s = {si.data_key, (int)si.n_neurons, xy, (int)cm->shape[1], NULL};
    if (!CHECK_OK(npred_video_model_create(&m, cfg, "cli", si.channels, si.height, si.width, &s, 1, 2)) ||
        !CHECK_OK(npred_video_model_set_loader_json(m, LOADER)) || !CHECK_OK(npred_video_model_save(m, run_dir)))
        goto out;
    ok = 1;
out:
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&lc);
    free(xy);
    return ok;
}

/* the library's rates of one whole trial: the recorded loader, to_cut false */
static float *library_rates(npred_video_model *m, npred_video_loaders *L, npred_video_batch *b, int64_t trial, int *T1)
{
    if (!CHECK_OK(npred_video_loaders_get(L, 0, &trial, NULL, 1, NULL, b))) return NULL;
    *T1 = npred_video_model_output_frames(m, b->f);
    int n = npred_video_model_session_neurons(m, 0);
    float *r = malloc(sizeof(float) * (size_t)*T1 * n);
    if (r && !CHECK_OK(npred_video_model_predict(m, npred_video_model_session_key(m, 0), b->videos, 1, b->c, b->f, b->h,
                                                 b->w, b->pupil_center, r))) {
        free(r);
        return NULL;
    }
    return r;
}

static void compare_file(const char *path, const float *want, int T1, int n, int64_t lead)
{
    npred_array a;
    if (!CHECK_OK(npred_npy_read(path, &a))) return;
    int shape_ok = lead ? a.ndim == 3 && a.shape[0] == lead && a.shape[1] == T1 && a.shape[2] == n
                        : a.ndim == 2 && a.shape[0] == T1 && a.shape[1] == n;
    if (CHECK(shape_ok && a.dtype == NPRED_DT_F32, "%s: shape/dtype", path))
        CHECK(!memcmp(a.data, want, sizeof(float) * (size_t)T1 * n), "%s: the command's rates differ from the library's",
              path);
    npred_array_free(&a);
}

static int model_made;
static void test_make_model(void) { model_made = make_model(); }

static void test_info(void)
{
    char *out = NULL;
    int rc = th_npred(&out, "info %s", run_dir);
    CHECK(rc == 0 && out && strstr(out, "temporal cut-off: 4") && strstr(out, "3D_factorised") &&
              strstr(out, "dynamic00000-1-1-Video") && strstr(out, "pupil_center (B, 2, T)"),
          "info: exit %d\n%s", rc, out ? out : "");
    free(out);
    out = NULL;
    rc = th_npred(&out, "info --json %s", run_dir);
    CHECK(rc == 0 && out && strstr(out, "\"kind\":\t\"video\"") && strstr(out, "\"temporal_cutoff\":\t4") &&
              strstr(out, "\"frames\":\t20"),
          "info --json: exit %d\n%s", rc, out ? out : "");
    free(out);
    expect_failure("info --height on a video model", "not a video model", "info %s --height 36 --width 64", run_dir);
}

/* The library's side of a comparison: the saved model, and the scan's loader with the
 * recorded arguments (LOADER), then `extra` (a JSON object or NULL) on top, whole trials
 * one at a time, as the commands build it. */
static int library_side(npred_video_model **m, npred_video_loaders **L, npred_video_batch *b,
                        npred_video_loader_config *lc, const char *extra)
{
    const char *scan = SCAN;
    memset(b, 0, sizeof *b);
    npred_video_loader_config_init(lc);
    if (!CHECK_OK(npred_video_model_load(m, run_dir, 1)) ||
        !CHECK_OK(npred_video_loader_config_parse(lc, LOADER, NULL, NULL)) ||
        (extra && !CHECK_OK(npred_video_loader_config_parse(lc, extra, NULL, NULL))))
        return 0;
    lc->batch_size = 1, lc->to_cut = 0;
    return CHECK_OK(npred_video_loaders_open(L, &scan, 1, lc)) && CHECK_OK(npred_video_batch_init(b, *L, 1));
}

static void test_predict(void)
{
    npred_video_model *m = NULL;
    npred_video_loaders *L = NULL;
    npred_video_batch b;
    npred_video_loader_config lc;
    if (!library_side(&m, &L, &b, &lc, NULL)) goto out;
    int n = npred_video_model_session_neurons(m, 0);
    /* a tier into a directory: one file per trial, trials.npy */
    char dir[600], *out = NULL;
    snprintf(dir, sizeof dir, "%s/oracle", tmpdir);
    int rc = th_npred(&out, "predict --video --model %s --data %s --tier oracle --out %s/", run_dir, SCAN, dir);
    CHECK(rc == 0 && out && strstr(out, "3 trials"), "predict --video --tier oracle: exit %d\n%s", rc, out ? out : "");
    free(out);
    int t = npred_video_loaders_tier(L, 0, "oracle");
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    if (rc == 0 && CHECK(t >= 0 && si.tier_n[t] == 3, "oracle tier")) {
        char p[700];
        snprintf(p, sizeof p, "%s/trials.npy", dir);
        npred_array ta;
        if (CHECK_OK(npred_npy_read(p, &ta))) {
            CHECK(ta.ndim == 1 && ta.shape[0] == 3 && ta.dtype == NPRED_DT_I64 &&
                      !memcmp(ta.data, si.tier_idx[t], 3 * sizeof(int64_t)),
                  "trials.npy holds the oracle trials");
            npred_array_free(&ta);
        }
        for (int i = 0; i < 3; i++) {
            int T1 = 0;
            float *want = library_rates(m, L, &b, si.tier_idx[t][i], &T1);
            if (!want) continue;
            snprintf(p, sizeof p, "%s/%lld.npy", dir, (long long)si.tier_idx[t][i]);
            compare_file(p, want, T1, n, 0);
            free(want);
        }
    }
    /* one trial into one .npy (1, T', n) and its .trials.npy */
    char file[600];
    snprintf(file, sizeof file, "%s/one.npy", tmpdir);
    out = NULL;
    rc = th_npred(&out, "predict --video --model %s --data %s.zip --trials 6 --out %s", run_dir, SCAN, file);
    CHECK(rc == 0, "predict --video --trials 6 (zip): exit %d\n%s", rc, out ? out : "");
    free(out);
    int T1 = 0;
    float *want = library_rates(m, L, &b, 6, &T1);
    if (rc == 0 && want) {
        compare_file(file, want, T1, n, 1);
        char p[700];
        snprintf(p, sizeof p, "%s/one.trials.npy", tmpdir);
        npred_array ta;
        if (CHECK_OK(npred_npy_read(p, &ta))) {
            CHECK(ta.ndim == 1 && ta.shape[0] == 1 && ((int64_t *)ta.data)[0] == 6, "one.trials.npy = [6]");
            npred_array_free(&ta);
        }
    }
    free(want);
out:
    npred_video_batch_free(&b);
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&lc);
    npred_video_model_free(m);
}

static void test_bad_inputs(void)
{
    char f[600], bad[600];
    snprintf(f, sizeof f, "%s/x.npy", tmpdir);
    expect_failure("unknown session", "has no session 'nope'",
                   "predict --video --model %s --data %s --tier oracle --session nope --out %s", run_dir, SCAN, f);
    expect_failure("unknown tier", "no such tier", "predict --video --model %s --data %s --tier dev --out %s", run_dir,
                   SCAN, f);
    expect_failure("trial out of range", "'99' is not a trial", "predict --video --model %s --data %s --trials 99 --out %s",
                   run_dir, SCAN, f);
    expect_failure("no tier or trials", "--tier TIER or --trials", "predict --video --model %s --data %s --out %s",
                   run_dir, SCAN, f);
    expect_failure("unequal lengths in one .npy", "equal lengths",
                   "predict --video --model %s --data %s --tier oracle --out %s", run_dir, SCAN, f);
    snprintf(bad, sizeof bad, "%s/loader.json", tmpdir);
    FILE *fp = fopen(bad, "w");
    if (CHECK(fp != NULL, "write %s", bad)) {
        fputs("{\"include_behavior\": false}", fp);
        fclose(fp);
        expect_failure("a loader giving other channels", "channels",
                       "predict --video --model %s --data %s --tier oracle --dataset %s --out %s/", run_dir, SCAN, bad, f);
    }
    fp = fopen(bad, "w");
    if (CHECK(fp != NULL, "write %s", bad)) {
        fputs("{\"framez\": 3}", fp);
        fclose(fp);
        expect_failure("an unknown loader key", "framez",
                       "predict --video --model %s --data %s --tier oracle --dataset %s --out %s/", run_dir, SCAN, bad, f);
    }
    /* a truncated model file: the error names it */
    char src[700], trunc[700];
    snprintf(src, sizeof src, "%s/model.safetensors", run_dir);
    snprintf(trunc, sizeof trunc, "%s/trunc.safetensors", tmpdir);
    void *buf = NULL;
    size_t len = 0;
    if (CHECK_OK(npred_file_read_all(src, &buf, &len)) && CHECK_OK(npred_write_atomic(trunc, buf, len / 2)))
        expect_failure("truncated model", "trunc.safetensors",
                       "predict --video --model %s --data %s --tier oracle --out %s/", trunc, SCAN, f);
    free(buf);
    /* an image model is not a video model */
    npred_model *im = NULL;
    npred_model_session ses = {"a", 3, NULL, 0, NULL, NULL};
    char img[700];
    snprintf(img, sizeof img, "%s/image_run", tmpdir);
    if (CHECK_OK(npred_model_create(&im, "{\"layers\": 1, \"input_kern\": 3, \"hidden_channels\": 2,"
                                         " \"grid_mean_predictor\": null}", "img", 1, 8, 8, &ses, 1, 1, 1)) &&
        CHECK_OK(npred_model_save(im, img)))
        expect_failure("an image model", "image model", "predict --video --model %s --data %s --tier oracle --out %s/",
                       img, SCAN, f);
    npred_model_free(im);
}

static int write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (!CHECK(fp != NULL, "write %s", path)) return 0;
    fputs(text, fp);
    return CHECK(fclose(fp) == 0, "close %s", path);
}

/* --dataset: the loader arguments over the model's record (they act: scalar input
 * normalisation gives the library's rates with the same layered arguments); its
 * "paths" serve without --data, must agree with --data when both are given (in
 * predict --video, eval and predict --submission alike); --loader is an error
 * pointing to --dataset. */
static void test_dataset_option(void)
{
    char ds[600], two[600], other[600], text[2048], file[600], *out = NULL;
    snprintf(ds, sizeof ds, "%s/ds.json", tmpdir);
    snprintf(two, sizeof two, "%s/two.json", tmpdir);
    snprintf(other, sizeof other, "%s/other.json", tmpdir);
    snprintf(file, sizeof file, "%s/ds.npy", tmpdir);
    const char *over = "\"inputs_mean\": 100.0, \"inputs_std\": 50.0";
    snprintf(text, sizeof text, "{\"paths\": [\"%s\"], %s}", SCAN, over);
    if (!write_text(ds, text)) return;
    snprintf(text, sizeof text, "{\"paths\": [\"%s\", \"%s.zip\"]}", SCAN, SCAN);
    if (!write_text(two, text)) return;
    snprintf(text, sizeof text, "{\"paths\": [\"%s.zip\"]}", SCAN);
    if (!write_text(other, text)) return;
    npred_video_model *m = NULL;
    npred_video_loaders *L = NULL;
    npred_video_batch b;
    npred_video_loader_config lc;
    snprintf(text, sizeof text, "{%s}", over);
    if (!library_side(&m, &L, &b, &lc, text)) goto out;
    int T1 = 0, n = npred_video_model_session_neurons(m, 0);
    float *want = library_rates(m, L, &b, 6, &T1);
    /* the scan from "paths" alone, then the same scan given twice (folder path alike) */
    for (int with_data = 0; want && with_data < 2; with_data++) {
        remove(file);
        int rc = with_data ? th_npred(&out, "predict --video --model %s --data %s --dataset %s --trials 6 --out %s",
                                       run_dir, SCAN, ds, file)
                           : th_npred(&out, "predict --video --model %s --dataset %s --trials 6 --out %s", run_dir, ds,
                                       file);
        CHECK(rc == 0, "predict --video --dataset (with --data: %d): exit %d\n%s", with_data, rc, out ? out : "");
        free(out);
        out = NULL;
        if (rc == 0) compare_file(file, want, T1, n, 1);
    }
    free(want);
    expect_failure("--data and \"paths\" naming different scans", "name different scans",
                   "predict --video --model %s --data %s --dataset %s --trials 6 --out %s", run_dir, SCAN, other, file);
    expect_failure("two scans for predict --video", "takes 1 scan(s)",
                   "predict --video --model %s --dataset %s --trials 6 --out %s", run_dir, two, file);
    expect_failure("--loader", "--dataset", "predict --video --model %s --data %s --loader %s --trials 6 --out %s",
                   run_dir, SCAN, ds, file);
    expect_failure("eval: --data and \"paths\" naming different scans", "name different scans",
                   "eval --model %s --data %s --dataset %s", run_dir, SCAN, other);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub.parquet", tmpdir);
    expect_failure("predict --submission: --data and \"paths\" naming different scans", "name different scans",
                   "predict --model %s --data %s --dataset %s --tier oracle --submission %s", run_dir, SCAN, other, sub);
    int rc = th_npred(&out, "eval --model %s --dataset %s", run_dir, other);
    CHECK(rc == 0 && out && strstr(out, "oracle"), "eval with the scan from --dataset's \"paths\": exit %d\n%s", rc,
          out ? out : "");
    free(out);
out:
    npred_video_batch_free(&b);
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&lc);
    npred_video_model_free(m);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/npred-test-cli-video-XXXXXX", t && *t ? t : "/tmp");
    struct stat sb;
    if (!mkdtemp(tmpdir) || stat(th_npred_bin(), &sb) != 0) {
        fprintf(stderr, "FAIL: no temp folder or no %s (build it first, or set NPRED_BIN)\n", th_npred_bin());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    snprintf(run_dir, sizeof run_dir, "%s/run", tmpdir);
    RUN(test_make_model);
    if (model_made) {
        RUN(test_info);
        RUN(test_predict);
        RUN(test_bad_inputs);
        RUN(test_dataset_option);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    th_shell(NULL, cmd);
    return th_summary();
}
