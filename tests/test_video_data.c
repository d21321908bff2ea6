/* SENSORIUM 2023 movie scans and mouse_video_loader (npred/video.h) against the
 * mini_movie_tree fixture: every recorded batch of the five loader variants, from the
 * folder and from the zip; iteration, random offsets and bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "npred/video.h"

static const char *const FIELDS[4] = {"videos", "responses", "behavior", "pupil_center"};

/* the loader config from a variant's mouse_video_loader_kwargs (paths removed) */
static int open_variant(th_case *cs, cJSON *v, const char *path, npred_video_loaders **L)
{
    *L = NULL;
    cJSON *kw = cJSON_Duplicate(th_get(v, "mouse_video_loader_kwargs", NULL), 1);
    if (!CHECK(kw != NULL, "kwargs")) return 0;
    cJSON_DeleteItemFromObject(kw, "paths");
    char *json = cJSON_PrintUnformatted(kw);
    cJSON_Delete(kw);
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    int ok = CHECK_OK(npred_video_loader_config_parse(&c, json, NULL, NULL));
    free(json);
    if (ok) ok = CHECK_OK(npred_video_loaders_open(L, &path, 1, &c));
    npred_video_loader_config_free(&c);
    (void)cs;
    return ok;
}

static const float *field_of(const npred_video_batch *b, int f)
{
    return f == 0 ? b->videos : f == 1 ? b->responses : f == 2 ? b->behavior : b->pupil_center;
}

static void compare_batch(th_case *cs, cJSON *bj, const npred_video_batch *b, const char *what)
{
    cJSON *shapes = th_get(bj, "shapes", NULL);
    for (int f = 0; f < 4; f++) {
        cJSON *rel = th_get(bj, FIELDS[f], NULL);
        const float *got = field_of(b, f);
        if (!rel) {
            CHECK(f >= 2 && !got, "%s: %s in the batch but not in the reference", what, FIELDS[f]);
            continue;
        }
        if (!CHECK(got != NULL, "%s: %s missing", what, FIELDS[f])) continue;
        cJSON *sh = th_get(shapes, FIELDS[f], NULL);
        int64_t dims[5];
        int nd = cJSON_GetArraySize(sh);
        for (int i = 0; i < nd && i < 5; i++) dims[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
        int64_t mine[5];
        int mnd;
        if (f == 0) {
            mine[0] = b->n, mine[1] = b->c, mine[2] = b->f, mine[3] = b->h, mine[4] = b->w, mnd = 5;
        } else {
            mine[0] = b->n;
            mine[1] = f == 1 ? b->n_neurons : f == 2 ? b->behavior_dim : b->pupil_dim;
            mine[2] = b->resp_f, mnd = 3;
        }
        int same = nd == mnd;
        for (int i = 0; same && i < nd; i++) same = dims[i] == mine[i];
        if (!CHECK(same, "%s: %s shape differs from the reference", what, FIELDS[f])) continue;
        th_compare_dims(cs, "forward", rel->valuestring, got, mnd, mine);
    }
}

/* A (rows, 60) normalizer array: frame 59 has no data, so its statistics (and the
 * derived arrays) are NaN; the NaN must be at the same places, the rest close. */
static void compare_nan_frames(th_case *cs, const char *rel, const float *got, int rows)
{
    npred_array sh;
    float *ref = th_load_f32(cs, rel, &sh);
    if (!ref) return;
    size_t n = (size_t)rows * 60;
    CHECK(sh.count == n, "%s: %zu elements", rel, sh.count);
    float *g = malloc(n * sizeof *g), *r = malloc(n * sizeof *r);
    int nan_same = 1, n_nan = 0;
    for (size_t i = 0; g && r && i < n && i < sh.count; i++) {
        nan_same &= isnan(got[i]) == isnan(ref[i]);
        n_nan += isnan(ref[i]) != 0;
        g[i] = isnan(got[i]) ? 0.0f : got[i];
        r[i] = isnan(ref[i]) ? 0.0f : ref[i];
    }
    /* response precision: a NaN std is not above the threshold, so 1/threshold */
    int want_nan = strstr(rel, "response_precision") ? 0 : rows;
    CHECK(nan_same && n_nan == want_nan, "%s: NaN at other places (%d in the reference)", rel, n_nan);
    double rtol, atol;
    th_tol(cs, "forward", rel, &rtol, &atol);
    if (g && r && sh.count == n) th_close_f32(rel, g, r, n, rtol, atol);
    free(g);
    free(r);
    free(ref);
}

static void check_variant(th_case *cs, const char *variant, const char *path)
{
    cJSON *v = th_get(cs->json, "variants", variant, NULL);
    if (!CHECK(v != NULL, "variant %s", variant)) return;
    npred_video_loaders *L;
    if (!open_variant(cs, v, path, &L)) return;
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    const char *key = th_get(v, "data_key", NULL)->valuestring;
    CHECK(!strcmp(si.data_key, key), "%s: data_key %s, expected %s", variant, si.data_key, key);
    /* loader tiers and their sizes */
    cJSON *lt = th_get(v, "loader_tiers", NULL);
    CHECK((int)si.n_tiers == cJSON_GetArraySize(lt), "%s: %zu loader tiers", variant, si.n_tiers);
    for (size_t t = 0; t < si.n_tiers; t++) {
        cJSON *e = cJSON_GetArrayItem(lt, (int)t);
        CHECK(e && !strcmp(e->valuestring, si.tier_names[t]), "%s: tier %zu is %s", variant, t, si.tier_names[t]);
        CHECK(si.tier_n[t] == (int64_t)th_num(v, -1, "n_trials", si.tier_names[t], NULL), "%s: %s trials", variant,
              si.tier_names[t]);
    }
    CHECK(npred_video_loaders_tier(L, 0, "none") < 0, "tier 'none' has no loader");
    cJSON *nf = th_get(v, "normalizer_files", NULL);
    for (cJSON *f = nf ? nf->child : NULL; f; f = f->next) {
        const float *got = !strcmp(f->string, "response_precision") ? si.response_precision
                           : !strcmp(f->string, "behavior_precision") ? si.behavior_precision
                           : !strcmp(f->string, "eye_mean") ? si.eye_mean : si.eye_std;
        int rows = !strcmp(f->string, "response_precision") ? (int)si.n_neurons : 2;
        if (CHECK(got != NULL, "%s missing", f->string)) compare_nan_frames(cs, f->valuestring, got, rows);
    }
    npred_video_batch b;
    if (!CHECK_OK(npred_video_batch_init(&b, L, 0))) {
        npred_video_loaders_free(L);
        return;
    }
    cJSON *tiers = th_get(v, "tiers", NULL);
    for (cJSON *tj = tiers ? tiers->child : NULL; tj; tj = tj->next) {
        int t = npred_video_loaders_tier(L, 0, tj->string);
        if (!CHECK(t >= 0, "%s: no tier %s", variant, tj->string)) continue;
        cJSON *batches = th_get(tj, "batches", NULL);
        int k = 0;
        int64_t pos = 0;
        for (cJSON *bj = batches->child; bj; bj = bj->next, k++) {
            cJSON *ti = th_get(bj, "trial_indices", NULL), *oj = th_get(bj, "offsets", NULL);
            int n = cJSON_GetArraySize(ti);
            int64_t trials[8], offs[8];
            int have_offs = 1;
            for (int i = 0; i < n && i < 8; i++) {
                trials[i] = (int64_t)cJSON_GetArrayItem(ti, i)->valuedouble;
                cJSON *o = cJSON_GetArrayItem(oj, i);
                if (cJSON_IsNull(o)) have_offs = 0;
                else offs[i] = (int64_t)o->valuedouble;
            }
            /* sequential tiers: the reference order is ours */
            if (strcmp(tj->string, "train"))
                for (int i = 0; i < n; i++)
                    CHECK(si.tier_idx[t][pos + i] == trials[i], "%s %s batch %d: trial %d", variant, tj->string, k, i);
            pos += n;
            char what[128];
            snprintf(what, sizeof what, "%s/%s/batch%d", variant, tj->string, k);
            if (!CHECK_OK(npred_video_loaders_get(L, 0, trials, have_offs ? offs : NULL, n, NULL, &b))) continue;
            for (int i = 0; i < n; i++)
                CHECK(b.trials[i] == trials[i] && (!have_offs || b.offsets[i] == offs[i]), "%s: trial/offset %d", what, i);
            compare_batch(cs, bj, &b, what);
        }
    }
    npred_video_batch_free(&b);
    npred_video_loaders_free(L);
}

static char g_dir[1024];

static void tree_path(char *buf, size_t n, const th_case *cs, int zip)
{
    const char *rel = th_get(cs->json, "files", zip ? "zip" : "tree", NULL)->valuestring;
    snprintf(buf, n, "%s/%s%s", cs->dir, rel, zip ? "" : "/");
}

static void test_variants_folder(void)
{
    th_case cs;
    if (!th_case_open(&cs, "mini_movie_tree")) return;
    char path[1024];
    tree_path(path, sizeof path, &cs, 0);
    cJSON *vars = th_get(cs.json, "variants", NULL);
    int n = 0;
    for (cJSON *v = vars ? vars->child : NULL; v; v = v->next, n++) check_variant(&cs, v->string, path);
    CHECK(n == 5, "%d variants", n);
    th_case_close(&cs);
}

static void test_variants_zip(void)
{
    th_case cs;
    if (!th_case_open(&cs, "mini_movie_tree")) return;
    char path[1024];
    tree_path(path, sizeof path, &cs, 1);
    check_variant(&cs, "train", path);
    check_variant(&cs, "scale_half", path);
    th_case_close(&cs);
}

static void test_dataset_info(void)
{
    th_case cs;
    if (!th_case_open(&cs, "mini_movie_tree")) return;
    char path[1024];
    tree_path(path, sizeof path, &cs, 0);
    npred_video_dataset *d;
    if (!CHECK_OK(npred_video_dataset_open(&d, path, NULL))) goto out;
    npred_video_dataset_info di;
    npred_video_dataset_get_info(d, &di);
    CHECK(di.n_trials == 11 && di.n_neurons == 10 && di.height == 12 && di.width == 16 && di.t_max == 60,
          "info %lld %lld %d %d %d", (long long)di.n_trials, (long long)di.n_neurons, di.height, di.width, di.t_max);
    CHECK(!strcmp(di.data_key, th_get(cs.json, "files", "tree", NULL)->valuestring), "key %s", di.data_key);
    for (int f = 0; f < 4; f++) CHECK(di.has_field[f] && di.has_stats[f], "field %d", f);
    CHECK(di.rows[NPRED_VFIELD_VIDEOS] == 192 && di.rows[NPRED_VFIELD_BEHAVIOR] == 2, "rows");
    /* tiers as recorded in case.json */
    cJSON *tj = th_get(cs.json, "trials", "tiers", NULL);
    const int *tiers = npred_video_dataset_tiers(d);
    for (int i = 0; i < 11; i++)
        CHECK(!strcmp(di.tier_names[tiers[i]], cJSON_GetArrayItem(tj, i)->valuestring), "trial %d tier", i);
    CHECK(di.n_tiers == 5, "%zu tiers", di.n_tiers);
    /* a raw trial as stored: NaN after its length */
    float *x = malloc(10 * 60 * sizeof *x);
    if (x && CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_RESPONSES, 7, x))) {
        int len = (int)cJSON_GetArrayItem(th_get(cs.json, "trials", "lengths", NULL), 7)->valuedouble;
        CHECK(!isnan(x[len - 1]) && isnan(x[len]), "trial 7 NaN from frame %d", len);
    }
    free(x);
    CHECK(npred_video_dataset_neuron_info(d, "cell_motor_coordinates") != NULL, "coordinates");
    CHECK(npred_video_dataset_stat(d, NPRED_VFIELD_VIDEOS, "median") != NULL, "median");
    npred_video_dataset_free(d);
    /* the zip gives the same key (its name without .zip) */
    tree_path(path, sizeof path, &cs, 1);
    if (CHECK_OK(npred_video_dataset_open(&d, path, NULL))) {
        npred_video_dataset_get_info(d, &di);
        CHECK(di.is_zip && !strcmp(di.data_key, th_get(cs.json, "files", "tree", NULL)->valuestring), "zip key %s",
              di.data_key);
        npred_video_dataset_free(d);
    }
out:
    th_case_close(&cs);
}

/* Iteration: the train tier is shuffled (all 5 trials once), offsets are drawn in
 * [0, len - frames) and the batch equals the same trials fetched with those offsets. */
static void test_iteration(void)
{
    th_case cs;
    if (!th_case_open(&cs, "mini_movie_tree")) return;
    char path[1024];
    tree_path(path, sizeof path, &cs, 0);
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    CHECK_OK(npred_video_loader_config_parse(&c, "{\"batch_size\": 2, \"frames\": 51}", NULL, NULL));
    npred_video_loaders *L;
    if (!CHECK_OK(npred_video_loaders_open(&L, (const char *const[]){path}, 1, &c))) goto out;
    npred_video_batch b, b2;
    CHECK_OK(npred_video_batch_init(&b, L, 0));
    CHECK_OK(npred_video_batch_init(&b2, L, 0));
    npred_rng rng;
    npred_rng_seed(&rng, 7);
    npred_video_iter it;
    cJSON *lens = th_get(cs.json, "trials", "lengths", NULL);
    if (CHECK_OK(npred_video_iter_begin(&it, L, 0, "train", &rng))) {
        int seen[11] = {0}, has = 1, nb = 0, draws_differ = 0;
        while (has) {
            if (!CHECK_OK(npred_video_iter_next(&it, &b, &has)) || !has) break;
            nb++;
            for (int i = 0; i < b.n; i++) {
                int tr = (int)b.trials[i];
                seen[tr]++;
                int len = (int)cJSON_GetArrayItem(lens, tr)->valuedouble;
                CHECK(b.offsets[i] >= 0 && b.offsets[i] < len - 51, "offset %lld of trial %d", (long long)b.offsets[i], tr);
                if (b.offsets[i] != 0) draws_differ = 1;
            }
            if (CHECK_OK(npred_video_loaders_get(L, 0, b.trials, b.offsets, b.n, NULL, &b2))) {
                size_t nv = (size_t)b.n * b.c * b.f * b.h * b.w;
                CHECK(b2.n == b.n && !memcmp(b.videos, b2.videos, nv * sizeof(float)), "refetch equal");
            }
        }
        CHECK(nb == 3, "%d train batches", nb);
        for (int i = 0; i < 11; i++) {
            int train = !strcmp(cJSON_GetArrayItem(th_get(cs.json, "trials", "tiers", NULL), i)->valuestring, "train");
            CHECK(seen[i] == train, "trial %d seen %d times", i, seen[i]);
        }
        CHECK(draws_differ, "random offsets are not all 0");
        npred_video_iter_free(&it);
    }
    /* the train tier needs an rng; 'none' has no loader */
    CHECK(npred_video_iter_begin(&it, L, 0, "train", NULL) == NPRED_ERR_ARG, "train without rng");
    CHECK(npred_video_iter_begin(&it, L, 0, "none", &rng) == NPRED_ERR_ARG, "tier none");
    /* whole trials of different lengths do not batch */
    npred_video_batch_free(&b);
    npred_video_batch_free(&b2);
    npred_video_loaders_free(L);
out:
    npred_video_loader_config_free(&c);
    th_case_close(&cs);
}

static void expect_config_error(const char *json, const char *needle)
{
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    npred_status s = npred_video_loader_config_parse(&c, json, NULL, NULL);
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), needle), "%s: status %d, message '%s'", json, s,
          npred_last_error());
    npred_video_loader_config_free(&c);
}

static void expect_open_error(const char *path, const char *json, npred_status want, const char *needle)
{
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    CHECK_OK(npred_video_loader_config_parse(&c, json, NULL, NULL));
    npred_video_loaders *L = NULL;
    npred_status s = npred_video_loaders_open(&L, &path, 1, &c);
    CHECK(s == want && strstr(npred_last_error(), needle), "%s: status %d, message '%s'", json, s, npred_last_error());
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&c);
}

static void copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    char buf[65536];
    size_t k;
    while (in && out && (k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
    if (in) fclose(in);
    if (out) fclose(out);
}

static void test_errors(void)
{
    expect_config_error("{\"batch_size\": 2, \"frame\": 51}", "unknown key 'frame'");
    expect_config_error("{\"batch_size\": 0}", "batch_size");
    expect_config_error("{\"batch_size\": 1, \"scale\": 0}", "scale");
    expect_config_error("{\"batch_size\": 1, \"to_cut\": 1}", "to_cut");
    expect_config_error("{\"batch_size\": 1, \"max_frame\": 0}", "max_frame");
    expect_config_error("[1]", "expected a JSON object");

    th_case cs;
    if (!th_case_open(&cs, "mini_movie_tree")) return;
    char path[1024];
    tree_path(path, sizeof path, &cs, 0);
    /* whole trials of different lengths cannot share a batch */
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    CHECK_OK(npred_video_loader_config_parse(&c, "{\"batch_size\": 3, \"to_cut\": false}", NULL, NULL));
    npred_video_loaders *L;
    if (CHECK_OK(npred_video_loaders_open(&L, (const char *const[]){path}, 1, &c))) {
        npred_video_batch b;
        if (CHECK_OK(npred_video_batch_init(&b, L, 0))) {
            npred_video_iter it;
            int has;
            if (CHECK_OK(npred_video_iter_begin(&it, L, 0, "oracle", NULL))) {
                npred_status s = npred_video_iter_next(&it, &b, &has);
                CHECK(s == NPRED_ERR_SHAPE && strstr(npred_last_error(), "batch_size 1"), "unequal lengths: %s",
                      npred_last_error());
                npred_video_iter_free(&it);
            }
            /* offsets make no sense without to_cut */
            int64_t tr = 1, off = 0;
            CHECK(npred_video_loaders_get(L, 0, &tr, &off, 1, NULL, &b) == NPRED_ERR_ARG, "offsets without to_cut");
            npred_video_batch_free(&b);
        }
        npred_video_loaders_free(L);
    }
    npred_video_loader_config_free(&c);
    /* a subsequence longer than a trial, a fixed offset past its end */
    CHECK_OK(npred_video_loader_config_parse(&c, "{\"batch_size\": 1, \"frames\": 58}", NULL, NULL));
    if (CHECK_OK(npred_video_loaders_open(&L, (const char *const[]){path}, 1, &c))) {
        npred_video_batch b;
        npred_rng rng;
        npred_rng_seed(&rng, 1);
        if (CHECK_OK(npred_video_batch_init(&b, L, 0))) {
            int64_t tr = 7, off = 2; /* 54 frames */
            CHECK(npred_video_loaders_get(L, 0, &tr, NULL, 1, &rng, &b) == NPRED_ERR_SHAPE &&
                      strstr(npred_last_error(), "trial 7 has 54 frames"),
                  "short trial: %s", npred_last_error());
            CHECK(npred_video_loaders_get(L, 0, &tr, &off, 1, &rng, &b) == NPRED_ERR_SHAPE, "offset past the end");
            tr = 11;
            CHECK(npred_video_loaders_get(L, 0, &tr, NULL, 1, &rng, &b) == NPRED_ERR_ARG, "trial out of range");
            npred_video_batch_free(&b);
        }
        npred_video_loaders_free(L);
    }
    npred_video_loader_config_free(&c);
    expect_open_error(path, "{\"batch_size\": 1, \"inputs_mean\": 3}", NPRED_ERR_CONFIG, "inputs_std");

    /* broken copies of the scan: a missing statistic, a trial of another shape */
    char dir[1200], rel[1400], src[1400];
    snprintf(dir, sizeof dir, "%s/scan", g_dir);
    const char *sub[] = {"", "/data", "/data/videos", "/data/responses", "/meta", "/meta/trials", "/meta/neurons",
                         "/meta/statistics", "/meta/statistics/videos", "/meta/statistics/videos/all",
                         "/meta/statistics/responses", "/meta/statistics/responses/all"};
    for (size_t i = 0; i < sizeof sub / sizeof *sub; i++) {
        snprintf(rel, sizeof rel, "%s%s", dir, sub[i]);
        mkdir(rel, 0755);
    }
    const char *files[] = {"meta/trials/tiers.npy", "meta/neurons/cell_motor_coordinates.npy",
                           "meta/neurons/unit_ids.npy", "meta/statistics/videos/all/mean.npy",
                           "meta/statistics/responses/all/std.npy"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(src, sizeof src, "%s%s", path, files[i]);
        snprintf(rel, sizeof rel, "%s/%s", dir, files[i]);
        copy_file(src, rel);
    }
    for (int t = 0; t < 11; t++)
        for (int f = 0; f < 2; f++) {
            snprintf(src, sizeof src, "%sdata/%s/%d.npy", path, FIELDS[f], t);
            snprintf(rel, sizeof rel, "%s/data/%s/%d.npy", dir, FIELDS[f], t);
            copy_file(src, rel);
        }
    const char *raw = "{\"batch_size\": 1, \"frames\": 51, \"include_behavior\": false, \"include_pupil_centers\": false}";
    expect_open_error(dir, raw, NPRED_ERR_IO, "statistics/videos/all/std.npy missing");
    expect_open_error(dir, "{\"batch_size\": 1}", NPRED_ERR_IO, "data/behavior missing");
    /* normalize false needs no statistics; a trial of another shape fails when read */
    snprintf(src, sizeof src, "%sdata/responses/0.npy", path);
    snprintf(rel, sizeof rel, "%s/data/videos/3.npy", dir);
    copy_file(src, rel);
    npred_video_loader_config_init(&c);
    CHECK_OK(npred_video_loader_config_parse(&c, "{\"batch_size\": 1, \"normalize\": false, \"frames\": 51, "
                                                 "\"offset\": 0, \"include_behavior\": false, "
                                                 "\"include_pupil_centers\": false}", NULL, NULL));
    if (CHECK_OK(npred_video_loaders_open(&L, (const char *const[]){dir}, 1, &c))) {
        npred_video_batch b;
        if (CHECK_OK(npred_video_batch_init(&b, L, 0))) {
            int64_t tr = 2;
            CHECK_OK(npred_video_loaders_get(L, 0, &tr, NULL, 1, NULL, &b));
            tr = 3;
            CHECK(npred_video_loaders_get(L, 0, &tr, NULL, 1, NULL, &b) == NPRED_ERR_SHAPE &&
                      strstr(npred_last_error(), "data/videos/3.npy: shape (10, 60)"),
                  "bad trial: %s", npred_last_error());
            npred_video_batch_free(&b);
        }
        npred_video_loaders_free(L);
    }
    npred_video_loader_config_free(&c);
    /* a missing trial file: counts differ */
    snprintf(rel, sizeof rel, "%s/data/responses/10.npy", dir);
    unlink(rel);
    npred_video_dataset *d = NULL;
    CHECK(npred_video_dataset_open(&d, dir, NULL) == NPRED_ERR_SHAPE && strstr(npred_last_error(), "10 trials"),
          "missing trial: %s", npred_last_error());
    npred_video_dataset_free(d);
    th_case_close(&cs);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/npred_video_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot make a temporary folder\n");
        return 1;
    }
    RUN(test_dataset_info);
    RUN(test_variants_folder);
    RUN(test_variants_zip);
    RUN(test_iteration);
    RUN(test_errors);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return th_summary();
}
