/* The loaders keep every image as the batches carry it (normalized, planes
 * appended, channels selected, rescaled: a function of the trial alone) instead
 * of the raw full-resolution image. These tests check that the batches are
 * bit-identical to the per-batch transform of the raw images (the loaders'
 * keep_raw mode, which is the code path of before), for every tier and for
 * configurations that take either mode, on simulated scans read from a folder
 * and from a zip; and that the loaders' datasets hold no raw image copy while
 * their information (shape, range) stays that of an eagerly opened dataset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/filetree.h"
#include "data/loader.h"
#include "harness.h"
#include "npred/simulate.h"

static char g_dir[512];
static char g_paths[2][1024];

static int make_data(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/npred_test_loader_cache_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!CHECK(mkdtemp(g_dir) != NULL, "temp folder")) return 0;
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 2;
    p.n_neurons = 37;
    p.n_trials = 50;
    p.n_test_images = 4;
    p.n_test_repeats = 3;
    p.height = 36;
    p.width = 52;
    p.modulate = 1;
    p.write_zip = 1;
    if (!CHECK_OK(npred_simulate(&p, g_dir, NULL, NULL))) return 0;
    char name[256];
    npred_sim_tree_name(&p, 0, name, sizeof name);
    snprintf(g_paths[0], sizeof g_paths[0], "%s/%s", g_dir, name); /* the folder */
    npred_sim_tree_name(&p, 1, name, sizeof name);
    snprintf(g_paths[1], sizeof g_paths[1], "%s/%s.zip", g_dir, name); /* the zip (its folder exists too) */
    return 1;
}

static int same_f32(const float *a, const float *b, size_t n) { return n == 0 || (a && b && !memcmp(a, b, n * sizeof(float))); }

/* Every batch of every tier of every session, from both loaders, compared bit for bit. */
static void compare_loaders(const char *json, int expect_ready)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    const char *paths[2] = {g_paths[0], g_paths[1]};
    npred_loaders *A = NULL, *R = NULL;
    int ok = CHECK_OK(npred_loader_config_parse(&c, json, NULL, NULL));
    if (ok) ok = CHECK_OK(npred_loaders_open_mode(&A, paths, 2, &c, 0));
    if (ok) ok = CHECK_OK(npred_loaders_open_mode(&R, paths, 2, &c, 1));
    npred_loader_config_free(&c);
    if (!ok) goto out;
    for (size_t s = 0; s < 2; s++) {
        CHECK(npred_loaders_images_ready(A, s) == expect_ready, "%s: session %zu keeps %s images", json, s,
              npred_loaders_images_ready(A, s) ? "transformed" : "raw");
        CHECK(!npred_loaders_images_ready(R, s), "%s: keep_raw keeps raw images", json);
    }
    CHECK(npred_loaders_fingerprint(A) != npred_loaders_fingerprint(R) || !expect_ready,
          "%s: the fingerprint covers the images as kept", json);
    npred_batch ba, br;
    if (!CHECK_OK(npred_batch_init(&ba, A, 0))) goto out;
    if (!CHECK_OK(npred_batch_init(&br, R, 0))) {
        npred_batch_free(&ba);
        goto out;
    }
    int batches = 0, bad = 0;
    for (size_t s = 0; s < 2; s++) {
        npred_session_info si;
        npred_loaders_session(A, s, &si);
        for (int tier = 0; tier < NPRED_TIER_COUNT; tier++) {
            if (!si.tier_enabled[tier] || si.tier_n[tier] == 0) continue;
            npred_rng ra, rr;
            npred_rng_seed(&ra, 5);
            npred_rng_seed(&rr, 5);
            npred_loader_iter ia, ir;
            if (!CHECK_OK(npred_loader_iter_begin(&ia, A, s, (npred_tier)tier, &ra))) continue;
            if (!CHECK_OK(npred_loader_iter_begin(&ir, R, s, (npred_tier)tier, &rr))) {
                npred_loader_iter_free(&ia);
                continue;
            }
            for (;;) {
                int ha = 0, hr = 0;
                if (!CHECK_OK(npred_loader_iter_next(&ia, &ba, &ha)) || !CHECK_OK(npred_loader_iter_next(&ir, &br, &hr)))
                    break;
                if (!CHECK(ha == hr, "%s: both iterators end together", json) || !ha) break;
                batches++;
                size_t B = (size_t)ba.n, img = (size_t)ba.c * ba.h * ba.w;
                int same = ba.n == br.n && ba.c == br.c && ba.h == br.h && ba.w == br.w &&
                           ba.n_neurons == br.n_neurons && !memcmp(ba.trials, br.trials, B * sizeof *ba.trials) &&
                           same_f32(ba.images, br.images, B * img) &&
                           same_f32(ba.responses, br.responses, B * (size_t)ba.n_neurons) &&
                           same_f32(ba.behavior, br.behavior, B * (size_t)ba.behavior_dim) &&
                           same_f32(ba.pupil_center, br.pupil_center, B * (size_t)ba.pupil_dim);
                if (!same) bad++;
            }
            npred_loader_iter_free(&ia);
            npred_loader_iter_free(&ir);
        }
    }
    CHECK(batches > 8 && bad == 0, "%s: %d of %d batches differ", json, bad, batches);
    npred_batch_free(&ba);
    npred_batch_free(&br);
out:
    npred_loaders_free(A);
    npred_loaders_free(R);
}

static void test_batches_identical(void)
{
    /* scale 0.25: the transformed images are smaller than the raw ones and are kept */
    compare_loaders("{\"batch_size\": 16, \"scale\": 0.25}", 1);
    compare_loaders("{\"batch_size\": 7, \"scale\": 0.25, \"normalize\": false}", 1);
    compare_loaders("{\"batch_size\": 16, \"scale\": 0.25, \"exclude\": [\"images\"]}", 1);
    compare_loaders("{\"batch_size\": 16, \"scale\": 0.5, \"include_behavior\": true, \"include_eye_position\": true,"
                    " \"add_eye_pos_as_channels\": true, \"select_input_channel\": [0, -1, 2]}", 1);
    compare_loaders("{\"batch_size\": 9, \"scale\": 0.3, \"include_behavior\": true, \"include_eye_position\": true,"
                    " \"add_eye_pos_as_channels\": true}", 1);
    /* larger than raw (planes at full size, or no rescale with planes): raw kept, transformed per batch */
    compare_loaders("{\"batch_size\": 16, \"scale\": 0.75, \"include_behavior\": true, \"include_eye_position\": true,"
                    " \"add_eye_pos_as_channels\": true}", 0);
    compare_loaders("{\"batch_size\": 16, \"include_behavior\": true}", 0);
    /* no transform at all: the same size, kept as the batches carry them */
    compare_loaders("{\"batch_size\": 16}", 1);
}

/* The loaders' dataset keeps no raw images; its information matches an eager open. */
static void test_dataset_info(void)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    const char *paths[2] = {g_paths[0], g_paths[1]};
    npred_loaders *L = NULL;
    int ok = CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 16, \"scale\": 0.25}", NULL, NULL)) &&
             CHECK_OK(npred_loaders_open(&L, paths, 2, &c));
    npred_loader_config_free(&c);
    if (!ok) return;
    for (size_t s = 0; s < 2; s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        npred_dataset *d = NULL;
        if (!CHECK_OK(npred_dataset_open(&d, paths[s], NULL))) continue;
        npred_dataset_info a, b;
        npred_dataset_get_info(si.dataset, &a);
        npred_dataset_get_info(d, &b);
        CHECK(npred_dataset_field(si.dataset, NPRED_FIELD_IMAGES) == NULL, "no raw image copy in the loaders");
        CHECK(npred_dataset_field(d, NPRED_FIELD_IMAGES) != NULL, "npred_dataset_open keeps the images");
        CHECK(a.has_field[NPRED_FIELD_IMAGES] && a.field_size[NPRED_FIELD_IMAGES] == b.field_size[NPRED_FIELD_IMAGES] &&
                  a.img_c == b.img_c && a.img_h == b.img_h && a.img_w == b.img_w && a.n_trials == b.n_trials,
              "image shape and count as opened eagerly");
        CHECK(a.img_min == b.img_min && a.img_max == b.img_max && b.img_max > b.img_min,
              "image range %g..%g as opened eagerly (%g..%g)", a.img_min, a.img_max, b.img_min, b.img_max);
        /* Poisson spike counts: kept as one-byte codes, the same values */
        size_t nr = (size_t)(b.n_trials * b.n_neurons);
        const float *rb = npred_dataset_field(d, NPRED_FIELD_RESPONSES);
        float *ra = malloc(nr * sizeof(float));
        CHECK(npred_dataset_field(si.dataset, NPRED_FIELD_RESPONSES) == NULL &&
                  npred_dataset_response_bytes(si.dataset) == 1 && npred_dataset_response_bytes(d) == 4,
              "the loaders keep the spike counts as one-byte codes (%zu bytes), an eager open as float32",
              npred_dataset_response_bytes(si.dataset));
        if (ra) npred_dataset_read_responses(si.dataset, 0, nr, ra);
        CHECK(ra && rb && !memcmp(ra, rb, sizeof(float) * nr), "responses kept");
        free(ra);
        npred_dataset_free(d);
    }
    npred_loaders_free(L);
}

/* A deferred dataset streams each image once, in trial order, as an eager open reads it. */
typedef struct {
    const float *ref;
    size_t per;
    int64_t next, stop_at;
    int bad;
} stream_ctx;

static npred_status check_image(void *user, int64_t t, const float *img)
{
    stream_ctx *c = user;
    if (t != c->next++ || memcmp(img, c->ref + (size_t)t * c->per, c->per * sizeof(float))) c->bad++;
    if (t == c->stop_at) return npred_errorf(NPRED_ERR_INTERRUPTED, "stopped at trial %lld", (long long)t);
    return NPRED_OK;
}

static void test_stream_images(void)
{
    npred_dataset *d = NULL, *e = NULL;
    if (!CHECK_OK(npred_dataset_open_deferred(&d, g_paths[1], NULL)) || !CHECK_OK(npred_dataset_open(&e, g_paths[1], NULL))) {
        npred_dataset_free(d);
        npred_dataset_free(e);
        return;
    }
    npred_dataset_info di, dd;
    npred_dataset_get_info(e, &di);
    CHECK(npred_dataset_field(d, NPRED_FIELD_IMAGES) == NULL, "deferred: no images cached");
    stream_ctx c = {npred_dataset_field(e, NPRED_FIELD_IMAGES), (size_t)di.field_size[NPRED_FIELD_IMAGES], 0, 3, 0};
    CHECK(npred_dataset_stream_images(d, check_image, &c) == NPRED_ERR_INTERRUPTED &&
              strstr(npred_last_error(), "stopped at trial 3"),
          "the sink's error stops the stream: %s", npred_last_error());
    CHECK(c.next == 4 && c.bad == 0, "trials 0..3 streamed in order, as read eagerly (%lld, %d bad)",
          (long long)c.next, c.bad);
    c.next = 0;
    c.stop_at = -1;
    CHECK_OK(npred_dataset_stream_images(d, check_image, &c));
    npred_dataset_get_info(d, &dd);
    CHECK(c.next == di.n_trials && c.bad == 0, "all %lld trials streamed as read eagerly (%lld, %d bad)",
          (long long)di.n_trials, (long long)c.next, c.bad);
    CHECK(dd.img_min == di.img_min && dd.img_max == di.img_max, "image range after the stream");
    CHECK(npred_dataset_stream_images(e, check_image, &c) == NPRED_ERR_ARG, "an eager dataset has nothing to stream");
    npred_dataset_free(d);
    npred_dataset_free(e);
}

/* Coded responses (1 or 2 bytes into a table of the distinct values) give back the
 * float bits read, -0 apart from +0, subnormals and the largest floats included; with
 * more than 65,536 distinct values float32 stays. Each batch's responses are the
 * eagerly read values times the precision, bit for bit. */
static void rewrite_responses(const char *tree, int64_t n_trials, int64_t nn, int kind)
{
    npred_array a;
    int64_t sh[1] = {nn};
    if (!CHECK_OK(npred_array_alloc(&a, NPRED_DT_F32, 4, 1, sh))) return;
    float *v = a.data;
    static const float odd[6] = {-0.0f, 0.0f, 1e-40f, -3.5f, 3.4028235e38f, 0.1f};
    for (int64_t t = 0; t < n_trials; t++) {
        for (int64_t j = 0; j < nn; j++) {
            int64_t i = t * nn + j;
            if (kind == 1) v[j] = i % 7 < 6 ? odd[i % 7] : (float)(i % 200) * 0.25f; /* <= 206 values */
            else if (kind == 2) v[j] = (float)(i % 3000) * 1.1f - 700.0f; /* 3,000 values */
            else v[j] = (float)i * 0.5f + 0.125f; /* every value distinct */
        }
        char p[4200];
        snprintf(p, sizeof p, "%s/data/responses/%lld.npy", tree, (long long)t);
        CHECK_OK(npred_npy_write(p, &a));
    }
    npred_array_free(&a);
}

static void check_coded(const char *tree, size_t want_bytes)
{
    npred_dataset *e = NULL;
    npred_loaders *L = NULL;
    npred_loader_config c;
    npred_loader_config_init(&c);
    int ok = CHECK_OK(npred_dataset_open(&e, tree, NULL)) &&
             CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 16}", NULL, NULL)) &&
             CHECK_OK(npred_loaders_open(&L, &tree, 1, &c));
    npred_loader_config_free(&c);
    npred_batch b;
    if (!ok || !CHECK_OK(npred_batch_init(&b, L, 0))) goto out;
    npred_session_info si;
    npred_normalizer_info ni;
    npred_dataset_info di;
    npred_loaders_session(L, 0, &si);
    npred_loaders_normalizer(L, 0, &ni);
    npred_dataset_get_info(e, &di);
    const float *x = npred_dataset_field(e, NPRED_FIELD_RESPONSES);
    size_t nr = (size_t)(di.n_trials * di.n_neurons);
    CHECK(npred_dataset_response_bytes(si.dataset) == want_bytes, "%s: %zu bytes per response, expected %zu", tree,
          npred_dataset_response_bytes(si.dataset), want_bytes);
    CHECK((npred_dataset_field(si.dataset, NPRED_FIELD_RESPONSES) == NULL) == (want_bytes < 4),
          "the float32 array is kept only when not coded");
    float *r = malloc(nr * sizeof(float));
    if (r) npred_dataset_read_responses(si.dataset, 0, nr, r);
    CHECK(r && !memcmp(r, x, nr * sizeof(float)), "%s: the values read, bit for bit", tree);
    if (r) npred_dataset_read_responses(si.dataset, nr - 5, 5, r);
    CHECK(r && !memcmp(r, x + nr - 5, 5 * sizeof(float)), "%s: a piece at the end", tree);
    free(r);
    CHECK(ni.active && ni.responses, "normalized responses");
    int bad = 0, seen = 0;
    for (int tier = 0; tier < NPRED_TIER_COUNT; tier++) {
        npred_rng rng;
        npred_rng_seed(&rng, 3);
        npred_loader_iter it;
        if (!si.tier_n[tier] || !CHECK_OK(npred_loader_iter_begin(&it, L, 0, tier, &rng))) continue;
        int has = 1;
        while (has && CHECK_OK(npred_loader_iter_next(&it, &b, &has)) && has)
            for (int64_t j = 0; j < b.n; j++)
                for (int64_t k = 0; k < si.n_neurons; k++) {
                    int64_t n = si.neuron_idx[k];
                    float want = x[b.trials[j] * di.n_neurons + n] * ni.response_precision[n];
                    bad += memcmp(&want, &b.responses[j * si.n_neurons + k], sizeof want) != 0;
                    seen++;
                }
        npred_loader_iter_free(&it);
    }
    CHECK(bad == 0 && seen == (int)nr, "%s: %d of %d batch responses differ from value x precision", tree, bad, seen);
    npred_batch_free(&b);
out:
    npred_loaders_free(L);
    npred_dataset_free(e);
}

static void test_coded_responses(void)
{
    char dir[1100], cmd[4096], tree[1400];
    snprintf(dir, sizeof dir, "%s/coded", g_dir);
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 1;
    p.n_neurons = 1100;
    p.n_trials = 56;
    p.n_test_images = 2;
    p.n_test_repeats = 2;
    p.height = 16;
    p.width = 16;
    if (!CHECK_OK(npred_simulate(&p, dir, NULL, NULL))) return;
    char name[256];
    npred_sim_tree_name(&p, 0, name, sizeof name);
    int64_t n_trials = p.n_trials + p.n_test_images * p.n_test_repeats; /* 60 x 1,100 = 66,000 values */
    snprintf(tree, sizeof tree, "%s/%s", dir, name);
    check_coded(tree, 1); /* the simulated spike counts */
    static const size_t bytes[4] = {0, 1, 2, 4};
    for (int kind = 1; kind <= 3; kind++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s/k%d' && cp -r '%s' '%s/k%d'", dir, kind, tree, dir, kind);
        if (!CHECK(system(cmd) == 0, "copy the tree")) return;
        snprintf(cmd, sizeof cmd, "%s/k%d", dir, kind);
        rewrite_responses(cmd, n_trials, p.n_neurons, kind);
        check_coded(cmd, bytes[kind]);
    }
}

/* A bad image is found when the loaders read the images, and named. */
static void expect_loader_error(const char *tree, const char *needle, const char *what)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    npred_loaders *L = NULL;
    if (CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 16, \"scale\": 0.25}", NULL, NULL))) {
        npred_status st = npred_loaders_open(&L, &tree, 1, &c);
        CHECK(st != NPRED_OK && L == NULL, "%s: expected an error", what);
        CHECK(strstr(npred_last_error(), needle) != NULL, "%s: error '%s' does not name '%s'", what, npred_last_error(),
              needle);
    }
    npred_loaders_free(L);
    npred_loader_config_free(&c);
}

static void test_bad_images(void)
{
    char tree[1100], cmd[4096], p[1200];
    snprintf(tree, sizeof tree, "%s/bad_images", g_dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", tree, g_paths[0], tree);
    if (!CHECK(system(cmd) == 0, "copy the tree")) return;
    npred_array a;
    int64_t sh[3] = {1, 36, 52};
    if (!CHECK_OK(npred_array_alloc(&a, NPRED_DT_F32, 4, 3, sh))) return;
    float *v = a.data;
    for (size_t i = 0; i < a.count; i++) v[i] = 1.0f;
    v[17] = NAN;
    snprintf(p, sizeof p, "%s/data/images/7.npy", tree);
    CHECK_OK(npred_npy_write(p, &a));
    expect_loader_error(tree, "data/images/7.npy: trial 7: element 17 is NaN", "NaN image");
    v[17] = 1.0f;
    CHECK_OK(npred_npy_write(p, &a));
    a.shape[1] = 35;
    a.count = 35 * 52;
    snprintf(p, sizeof p, "%s/data/images/11.npy", tree);
    CHECK_OK(npred_npy_write(p, &a));
    expect_loader_error(tree, "data/images/11.npy: shape (1, 35, 52), expected (1, 36, 52)", "image shape");
    npred_array_free(&a);
}

int main(void)
{
    if (make_data()) {
        RUN(test_batches_identical);
        RUN(test_dataset_info);
        RUN(test_stream_images);
        RUN(test_coded_responses);
        RUN(test_bad_images);
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (g_dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return th_summary();
}
