/* Tests of the SENSORIUM dataset reader, loader options, batching and errors.
 *
 * mini_tree: the batches static_loaders produced (PyTorch reference) for two
 * variants, read from the folder and from the zip. Every other option runs on
 * tiny scans this test writes into a temp folder; their values encode their
 * indices (image pixel = 1000*trial + pixel, response = 100*trial + neuron), so
 * expected outputs follow by arithmetic. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "harness.h"
#include "data/loader.h"
#include "npred/data.h"
#include "data/filetree.h"
#include "data/transforms.h"

static char g_tmp[512];

/* ------------------------------------------------------------------ writers */

static void mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static void write_f32(const char *dir, const char *rel, const float *v, int ndim, const int64_t *shape)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char d[1024];
    snprintf(d, sizeof d, "%s", p);
    *strrchr(d, '/') = '\0';
    mkdirs(d);
    npred_array a;
    npred_array_alloc(&a, NPRED_DT_F32, 4, ndim, shape);
    memcpy(a.data, v, a.count * 4);
    CHECK_OK(npred_npy_write(p, &a));
    npred_array_free(&a);
}

static void write_i64(const char *dir, const char *rel, const int64_t *v, int64_t n)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    npred_array a;
    npred_array_alloc(&a, NPRED_DT_I64, 8, 1, &n);
    memcpy(a.data, v, (size_t)n * 8);
    CHECK_OK(npred_npy_write(p, &a));
    npred_array_free(&a);
}

static void write_str(const char *dir, const char *rel, const char *const *v, int64_t n, int width)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    npred_array a;
    npred_array_alloc(&a, NPRED_DT_STR_U, (size_t)width * 4, 1, &n);
    for (int64_t i = 0; i < n; i++) {
        uint32_t *q = (uint32_t *)((char *)a.data + i * a.itemsize);
        for (int k = 0; k < width && v[i][k]; k++) q[k] = (unsigned char)v[i][k];
    }
    CHECK_OK(npred_npy_write(p, &a));
    npred_array_free(&a);
}

/* Tiny scan: N trials, images (1, H, W), NN neurons, behavior (3,), pupil (2,). */
enum { N = 12, H = 6, W = 8, NN = 5 };
static const char *const TIERS[N] = {"train", "validation", "train", "test", "train", "test",
                                     "train", "validation", "train", "test", "train", "test"};
static const int64_t IMG_IDS[N] = {10, 20, 11, 30, 12, 31, 13, 21, 14, 30, 15, 31};
static const char *const CLASSES[N] = {"a", "a", "b", "a", "a", "b", "b", "a", "a", "a", "b", "a"};
static const int64_t UNIT_IDS[NN] = {1, 2, 4, 5, 9};
static const char *const AREAS[NN] = {"V1", "LM", "V1", "V1", "LM"};
static const char *const LAYERS[NN] = {"L2/3", "L4", "L4", "L2/3", "L2/3"};
static const float RESP_STD[NN] = {2.0f, 4.0f, 0.001f, 1.0f, 0.5f};
static const float BEH_STD[3] = {2.0f, 0.5f, 4.0f};
static const float BEH_MEAN[3] = {100.0f, 100.0f, 100.0f};
static const float EYE_MEAN[2] = {3.0f, -1.0f}, EYE_STD[2] = {2.0f, 0.25f};
static const float IMG_MEAN = 5000.0f, IMG_STD = 2000.0f;

static float img_val(int t, int p) { return (float)(1000 * t + p); }
static float resp_val(int t, int j) { return (float)(100 * t + j); }
static float beh_val(int t, int k) { return (float)(10 * t + k + 1); }
static float eye_val(int t, int k) { return (float)(t - 3 * k); }

static void make_tree(const char *dir, int n_trials)
{
    int64_t ishape[3] = {1, H, W}, rshape[1] = {NN}, bshape[1] = {3}, eshape[1] = {2};
    char rel[256];
    for (int t = 0; t < n_trials; t++) {
        float img[H * W], r[NN], b[3], e[2];
        for (int p = 0; p < H * W; p++) img[p] = img_val(t, p);
        for (int j = 0; j < NN; j++) r[j] = resp_val(t, j);
        for (int k = 0; k < 3; k++) b[k] = beh_val(t, k);
        for (int k = 0; k < 2; k++) e[k] = eye_val(t, k);
        snprintf(rel, sizeof rel, "data/images/%d.npy", t);
        write_f32(dir, rel, img, 3, ishape);
        snprintf(rel, sizeof rel, "data/responses/%d.npy", t);
        write_f32(dir, rel, r, 1, rshape);
        snprintf(rel, sizeof rel, "data/behavior/%d.npy", t);
        write_f32(dir, rel, b, 1, bshape);
        snprintf(rel, sizeof rel, "data/pupil_center/%d.npy", t);
        write_f32(dir, rel, e, 1, eshape);
    }
    char d[1024];
    snprintf(d, sizeof d, "%s/meta/trials", dir);
    mkdirs(d);
    snprintf(d, sizeof d, "%s/meta/neurons", dir);
    mkdirs(d);
    write_str(dir, "meta/trials/tiers.npy", TIERS, n_trials, 10);
    write_i64(dir, "meta/trials/frame_image_id.npy", IMG_IDS, n_trials);
    write_str(dir, "meta/trials/frame_image_class.npy", CLASSES, n_trials, 2);
    int64_t tidx[N];
    for (int t = 0; t < N; t++) tidx[t] = 500 + t;
    write_i64(dir, "meta/trials/trial_idx.npy", tidx, n_trials);
    write_i64(dir, "meta/neurons/unit_ids.npy", UNIT_IDS, NN);
    write_str(dir, "meta/neurons/area.npy", AREAS, NN, 2);
    write_str(dir, "meta/neurons/layer.npy", LAYERS, NN, 4);
    int64_t an[NN] = {7, 7, 7, 7, 7}, se[NN] = {3, 3, 3, 3, 3}, sc[NN] = {9, 9, 9, 9, 9};
    write_i64(dir, "meta/neurons/animal_ids.npy", an, NN);
    write_i64(dir, "meta/neurons/sessions.npy", se, NN);
    write_i64(dir, "meta/neurons/scan_idx.npy", sc, NN);
    float cm[NN * 3];
    for (int i = 0; i < NN * 3; i++) cm[i] = (float)(i * 10);
    {
        char p[1024];
        snprintf(p, sizeof p, "%s/meta/neurons/cell_motor_coordinates.npy", dir);
        npred_array a;
        int64_t sh[2] = {NN, 3};
        npred_array_alloc(&a, NPRED_DT_F64, 8, 2, sh);
        for (int i = 0; i < NN * 3; i++) ((double *)a.data)[i] = cm[i];
        CHECK_OK(npred_npy_write(p, &a));
        npred_array_free(&a);
    }
    const char *st[5] = {"mean", "std", "min", "max", "median"};
    for (int k = 0; k < 5; k++) {
        float iv = k == 0 ? IMG_MEAN : k == 1 ? IMG_STD : (float)k;
        snprintf(rel, sizeof rel, "meta/statistics/images/all/%s.npy", st[k]);
        write_f32(dir, rel, &iv, 0, NULL);
        float rv[NN];
        for (int j = 0; j < NN; j++) rv[j] = k == 1 ? RESP_STD[j] : (float)(j + k);
        snprintf(rel, sizeof rel, "meta/statistics/responses/all/%s.npy", st[k]);
        write_f32(dir, rel, rv, 1, rshape);
        float bv[3];
        for (int j = 0; j < 3; j++) bv[j] = k == 1 ? BEH_STD[j] : k == 0 ? BEH_MEAN[j] : (float)k;
        snprintf(rel, sizeof rel, "meta/statistics/behavior/all/%s.npy", st[k]);
        write_f32(dir, rel, bv, 1, bshape);
        float ev[2];
        for (int j = 0; j < 2; j++) ev[j] = k == 1 ? EYE_STD[j] : k == 0 ? EYE_MEAN[j] : (float)k;
        snprintf(rel, sizeof rel, "meta/statistics/pupil_center/all/%s.npy", st[k]);
        write_f32(dir, rel, ev, 1, eshape);
    }
}

/* zip every file under dir (STORE), members prefixed with `top/` */
static void add_dir_to_zip(zip_t *z, const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!CHECK(d != NULL, "cannot list %s", dir)) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024], m[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(m, sizeof m, "%s/%s", prefix, e->d_name);
        struct stat st;
        stat(p, &st);
        if (S_ISDIR(st.st_mode)) {
            add_dir_to_zip(z, p, m);
        } else {
            zip_source_t *src = zip_source_file(z, p, 0, -1);
            zip_int64_t i = zip_file_add(z, m, src, ZIP_FL_OVERWRITE);
            zip_set_file_compression(z, (zip_uint64_t)i, ZIP_CM_STORE, 0);
        }
    }
    closedir(d);
}

static void make_zip(const char *zip_path, const char *dir, const char *top)
{
    int err;
    zip_t *z = zip_open(zip_path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    CHECK(z != NULL, "cannot create %s", zip_path);
    if (!z) return;
    add_dir_to_zip(z, dir, top);
    CHECK(zip_close(z) == 0, "zip_close %s", zip_path);
}

static char *tree_path(const char *name)
{
    static char p[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", g_tmp, name);
    return p[k];
}

static const char *g_tiny; /* the default tiny scan */

static npred_loaders *open1(const char *path, const char *json)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    npred_loaders *L = NULL;
    if (CHECK_OK(npred_loader_config_parse(&c, json, NULL, NULL))) CHECK_OK(npred_loaders_open(&L, &path, 1, &c));
    npred_loader_config_free(&c);
    return L;
}

/* Open and expect an error whose message contains `needle`. */
static void expect_open_error(const char *path, const char *json, const char *needle)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    npred_status s = npred_loader_config_parse(&c, json, NULL, NULL);
    npred_loaders *L = NULL;
    if (!s) s = npred_loaders_open(&L, &path, 1, &c);
    npred_loader_config_free(&c);
    CHECK(s != NPRED_OK, "expected an error containing '%s' for %s", needle, json);
    CHECK(strstr(npred_last_error(), needle) != NULL, "error '%s' does not name '%s'", npred_last_error(), needle);
    npred_loaders_free(L);
}

/* ------------------------------------------------------------------ mini_tree fixture */

/* Compare batch field f (images, responses, behavior, pupil_center) of the first
 * n rows of b with fixture file rel, shape included. */
static void compare_field(th_case *cs, const char *rel, const npred_batch *b, int f, int64_t n)
{
    const float *got = f == 0 ? b->images : f == 1 ? b->responses : f == 2 ? b->behavior : b->pupil_center;
    if (!CHECK(got != NULL, "%s: the batch has no %s", rel, f == 2 ? "behavior" : "pupil_center")) return;
    if (f == 0)
        th_compare_dims(cs, "forward", rel, got, TH_DIMS(n, b->c, b->h, b->w));
    else
        th_compare_dims(cs, "forward", rel, got, TH_DIMS(n, f == 1 ? b->n_neurons : f == 2 ? b->behavior_dim : b->pupil_dim));
}

static void check_variant(th_case *cs, const char *variant, const char *path)
{
    cJSON *v = th_get(cs->json, "variants", variant, NULL);
    CHECK(v != NULL, "variant %s", variant);
    if (!v) return;
    cJSON *kw = th_get(v, "static_loaders_kwargs", NULL);
    char json[512];
    snprintf(json, sizeof json,
             "{\"batch_size\": %d, \"normalize\": %s, \"scale\": %g, \"include_behavior\": %s, "
             "\"include_eye_position\": %s, \"cuda\": false, \"seed\": null}",
             (int)th_num(kw, 0, "batch_size", NULL), cJSON_IsTrue(th_get(kw, "normalize", NULL)) ? "true" : "false",
             th_num(kw, 1, "scale", NULL), cJSON_IsTrue(th_get(kw, "include_behavior", NULL)) ? "true" : "false",
             cJSON_IsTrue(th_get(kw, "include_eye_position", NULL)) ? "true" : "false");
    npred_loaders *L = open1(path, json);
    if (!L) return;
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    const char *key = th_get(v, "data_key", NULL)->valuestring;
    CHECK(!strcmp(si.data_key, key), "data_key %s, expected %s", si.data_key, key);
    CHECK(si.n_neurons == (int64_t)th_num(v, 0, "n_neurons", NULL), "n_neurons %lld", (long long)si.n_neurons);
    cJSON *shape = th_get(v, "img_shape", NULL);
    CHECK(si.img_c == cJSON_GetArrayItem(shape, 1)->valueint && si.img_h == cJSON_GetArrayItem(shape, 2)->valueint &&
              si.img_w == cJSON_GetArrayItem(shape, 3)->valueint,
          "img shape %d %d %d", si.img_c, si.img_h, si.img_w);
    /* normalizer constants */
    npred_normalizer_info ni;
    npred_loaders_normalizer(L, 0, &ni);
    CHECK(fabs(ni.inputs_mean - th_num(v, 0, "normalizer_scalars", "inputs_mean", NULL)) < 1e-4, "inputs_mean %g", ni.inputs_mean);
    CHECK(fabs(ni.inputs_std - th_num(v, 0, "normalizer_scalars", "inputs_std", NULL)) < 1e-4, "inputs_std %g", ni.inputs_std);
    cJSON *nf = th_get(v, "normalizer_files", NULL);
    for (cJSON *f = nf ? nf->child : NULL; f; f = f->next) {
        const float *got = !strcmp(f->string, "response_precision") ? ni.response_precision
                           : !strcmp(f->string, "behavior_precision") ? ni.behavior_precision
                           : !strcmp(f->string, "eye_mean") ? ni.eye_mean : ni.eye_std;
        int64_t n = !strcmp(f->string, "response_precision") ? si.n_neurons
                    : !strcmp(f->string, "behavior_precision") ? si.behavior_dim : si.pupil_dim;
        CHECK(got != NULL, "%s missing", f->string);
        if (got) th_compare_dims(cs, "forward", f->valuestring, got, TH_DIMS(n));
    }
    npred_batch b;
    if (!CHECK_OK(npred_batch_init(&b, L, 0))) {
        npred_loaders_free(L);
        return;
    }
    const char *fields[4] = {"images", "responses", "behavior", "pupil_center"};
    cJSON *tiers = th_get(v, "tiers", NULL);
    CHECK(cJSON_GetArraySize(tiers) == 4, "%s: the reference lists %d tiers, expected 4", variant,
          cJSON_GetArraySize(tiers));
    for (cJSON *tj = tiers ? tiers->child : NULL; tj; tj = tj->next) {
        npred_tier t;
        CHECK_OK(npred_tier_parse(tj->string, &t));
        CHECK(si.tier_n[t] == (int64_t)th_num(tj, -1, "n_trials", NULL), "%s: %s has %lld trials", variant, tj->string,
              (long long)si.tier_n[t]);
        CHECK(si.tier_batches[t] == (int64_t)th_num(tj, -1, "n_batches", NULL), "%s: %s batches", variant, tj->string);
        if (t == NPRED_TIER_TRAIN) {
            /* reference: per-trial samples stacked in ascending trial order */
            cJSON *ti = th_get(tj, "trial_indices", NULL);
            int64_t idx[64];
            int n = cJSON_GetArraySize(ti);
            if (!CHECK(n > 0 && n <= 64, "%s: %d train trial indices (1 to 64 expected)", variant, n)) continue;
            for (int i = 0; i < n; i++) idx[i] = (int64_t)cJSON_GetArrayItem(ti, i)->valuedouble;
            for (int i = 0; i < n; i++) CHECK(si.tier_idx[t][i] == idx[i], "train trial %d", i);
            if (!CHECK_OK(npred_loaders_get(L, 0, idx, n, &b))) continue;
            for (int f = 0; f < 4; f++) {
                cJSON *rel = th_get(tj, "files", fields[f], NULL);
                if (!rel) continue;
                compare_field(cs, rel->valuestring, &b, f, n);
            }
            continue;
        }
        npred_loader_iter it;
        if (!CHECK_OK(npred_loader_iter_begin(&it, L, 0, t, NULL))) continue;
        cJSON *batches = th_get(tj, "batches", NULL);
        int k = 0, has = 1;
        while (has) {
            if (!CHECK_OK(npred_loader_iter_next(&it, &b, &has)) || !has) break;
            cJSON *bj = cJSON_GetArrayItem(batches, k);
            CHECK(bj != NULL, "%s %s: more batches than the reference", variant, tj->string);
            if (!bj) break;
            cJSON *ti = th_get(bj, "trial_indices", NULL);
            CHECK(b.n == cJSON_GetArraySize(ti), "batch %d size %lld", k, (long long)b.n);
            for (int i = 0; i < b.n && i < cJSON_GetArraySize(ti); i++)
                CHECK(b.trials[i] == (int64_t)cJSON_GetArrayItem(ti, i)->valuedouble, "batch %d trial %d", k, i);
            for (int f = 0; f < 4; f++) {
                cJSON *rel = th_get(bj, fields[f], NULL);
                if (!rel) {
                    CHECK(f < 2 || (f == 2 ? si.behavior_dim == 0 : si.pupil_dim == 0), "%s present but not expected", fields[f]);
                    continue;
                }
                compare_field(cs, rel->valuestring, &b, f, b.n);
            }
            k++;
        }
        CHECK(k == cJSON_GetArraySize(batches), "%s %s: %d batches, expected %d", variant, tj->string, k,
              cJSON_GetArraySize(batches));
        npred_loader_iter_free(&it);
    }
    npred_batch_free(&b);
    npred_loaders_free(L);
}

static void test_mini_tree(void)
{
    th_case cs;
    if (!th_case_open(&cs, "mini_tree")) return;
    char tree[1024], zip[1024];  /* paths under the fixture dir */
    snprintf(tree, sizeof tree, "%s/%s", cs.dir, th_get(cs.json, "files", "tree", NULL)->valuestring);
    snprintf(zip, sizeof zip, "%s/%s", cs.dir, th_get(cs.json, "files", "zip", NULL)->valuestring);
    check_variant(&cs, "a", tree);
    check_variant(&cs, "b", tree);
    check_variant(&cs, "a", zip);
    check_variant(&cs, "b", zip);
    /* the dataset view: tiers, ids and trial info as in case.json */
    npred_dataset *d;
    if (CHECK_OK(npred_dataset_open(&d, zip, NULL))) {
        npred_dataset_info di;
        npred_dataset_get_info(d, &di);
        CHECK(di.is_zip && di.n_trials == 24 && di.n_neurons == 10, "zip info");
        CHECK(di.img_c == 1 && di.img_h == 16 && di.img_w == 32, "image shape");
        cJSON *tiers = th_get(cs.json, "trials", "tiers", NULL), *ids = th_get(cs.json, "trials", "frame_image_id", NULL);
        for (int i = 0; i < 24; i++) {
            CHECK(!strcmp(npred_tier_name(npred_dataset_tiers(d)[i]), cJSON_GetArrayItem(tiers, i)->valuestring), "tier %d", i);
            CHECK(npred_dataset_image_ids(d)[i] == (int64_t)cJSON_GetArrayItem(ids, i)->valuedouble, "image id %d", i);
        }
        npred_dataset_free(d);
    }
    /* the zip is read in place: nothing is extracted next to it */
    char extracted[1100];
    snprintf(extracted, sizeof extracted, "%s/config.json", tree);
    CHECK(access(extracted, F_OK) != 0, "config.json was written into the dataset");
    th_case_close(&cs);
}

/* ------------------------------------------------------------------ options */

static void test_dataset_open(void)
{
    npred_dataset *d;
    if (!CHECK_OK(npred_dataset_open(&d, g_tiny, NULL))) return;
    npred_dataset_info di;
    npred_dataset_get_info(d, &di);
    CHECK(di.n_trials == N && di.n_neurons == NN, "counts");
    CHECK(!strcmp(di.data_key, "7-3-9"), "fallback data_key %s", di.data_key);
    CHECK(di.tier_count[NPRED_TIER_TRAIN] == 6 && di.tier_count[NPRED_TIER_VALIDATION] == 2 &&
              di.tier_count[NPRED_TIER_TEST] == 4 && di.tier_count[NPRED_TIER_FINAL_TEST] == 0,
          "tier counts");
    CHECK(di.img_min == 0.0f && di.img_max == img_val(N - 1, H * W - 1), "image range %g %g", di.img_min, di.img_max);
    CHECK(npred_dataset_field(d, NPRED_FIELD_RESPONSES)[3 * NN + 2] == resp_val(3, 2), "cached response");
    npred_dataset_stats st;
    npred_dataset_get_stats(d, NPRED_FIELD_RESPONSES, &st);
    CHECK(st.present && st.count == NN && st.std[2] == RESP_STD[2] && st.median != NULL, "statistics");
    npred_dataset_free(d);
    /* explicit key */
    if (CHECK_OK(npred_dataset_open(&d, g_tiny, "mykey"))) {
        npred_dataset_get_info(d, &di);
        CHECK(!strcmp(di.data_key, "mykey"), "explicit key");
        npred_dataset_free(d);
    }
}

static void test_data_key_names(void)
{
    char k[256];
    CHECK(npred_filetree_key_from_path("/x/static21067-10-18-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip", k, sizeof k) &&
              !strcmp(k, "21067-10-18"), "gray: %s", k);
    CHECK(npred_filetree_key_from_path("/static/static1-2-3-ColorImageNet-ab", k, sizeof k) && !strcmp(k, "1-2-3"), "color: %s", k);
    CHECK(npred_filetree_key_from_path("data/static20457-5-9-preproc0.zip", k, sizeof k) && !strcmp(k, "20457-5-9-0"),
          "preproc: %s", k);
    CHECK(!npred_filetree_key_from_path("/x/myscan", k, sizeof k), "no key");
}

static void test_normalize(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 4, \"include_behavior\": true, \"include_eye_position\": true, "
                                     "\"add_behavior_as_channels\": false}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[2] = {3, 7};
    CHECK_OK(npred_loaders_get(L, 0, tr, 2, &b));
    /* threshold t = 0.01 * mean(std); neuron 2 (std 0.001) is below it */
    double mean = 0;
    for (int j = 0; j < NN; j++) mean += RESP_STD[j];
    float t = (float)(0.01 * (mean / NN));
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < NN; j++) {
            float p = RESP_STD[j] > t ? 1.0f / RESP_STD[j] : 1.0f / t;
            CHECK(b.responses[i * NN + j] == resp_val((int)tr[i], j) * p, "response %d %d: %g", i, j, b.responses[i * NN + j]);
        }
        for (int k = 0; k < 3; k++) /* behavior: no centring, x * (1/std) */
            CHECK(b.behavior[i * 3 + k] == beh_val((int)tr[i], k) * (1.0f / BEH_STD[k]), "behavior %d", k);
        for (int k = 0; k < 2; k++)
            CHECK(b.pupil_center[i * 2 + k] == (eye_val((int)tr[i], k) - EYE_MEAN[k]) / EYE_STD[k], "pupil %d", k);
        for (int p = 0; p < H * W; p++)
            CHECK(b.images[i * H * W + p] == (img_val((int)tr[i], p) - IMG_MEAN) / IMG_STD, "image pixel %d", p);
    }
    CHECK(b.c == 1, "behavior not added as channels: C=%d", b.c);
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    CHECK(si.response_precision_threshold == t, "threshold");
    npred_batch_free(&b);
    npred_loaders_free(L);

    /* normalize false: raw values */
    L = open1(g_tiny, "{\"batch_size\": 4, \"normalize\": false, \"include_behavior\": true, \"add_behavior_as_channels\": false}");
    if (!L) return;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loaders_get(L, 0, tr, 2, &b));
    CHECK(b.images[5] == img_val(3, 5) && b.responses[NN + 2] == resp_val(7, 2) && b.behavior[4] == beh_val(7, 1), "raw");
    npred_batch_free(&b);
    npred_loaders_free(L);
}

/* NeuroNormalizer.inv: every normalized field back to the raw values; identity where
 * excluded; shape errors */
static void test_normalizer_inv(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 4, \"include_behavior\": true, \"include_eye_position\": true, "
                                     "\"add_behavior_as_channels\": false}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[2] = {3, 7};
    CHECK_OK(npred_loaders_get(L, 0, tr, 2, &b));
    float r[2 * NN], be[2 * 3], e[2 * 2], im[2 * H * W];
    CHECK_OK(npred_loaders_inv(L, 0, NPRED_FIELD_RESPONSES, b.responses, r, 2, NN));
    CHECK_OK(npred_loaders_inv(L, 0, NPRED_FIELD_BEHAVIOR, b.behavior, be, 2, 3));
    CHECK_OK(npred_loaders_inv(L, 0, NPRED_FIELD_PUPIL_CENTER, b.pupil_center, e, 2, 2));
    CHECK_OK(npred_loaders_inv(L, 0, NPRED_FIELD_IMAGES, b.images, im, 2, H * W));
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < NN; j++) {
            float want = resp_val((int)tr[i], j);
            CHECK(fabsf(r[i * NN + j] - want) <= 1e-6f * (1 + fabsf(want)), "response %d %d: %g vs %g", i, j,
                  r[i * NN + j], want);
        }
        for (int k = 0; k < 3; k++)
            CHECK(fabsf(be[i * 3 + k] - beh_val((int)tr[i], k)) <= 1e-5f, "behavior %d: %g", k, be[i * 3 + k]);
        for (int k = 0; k < 2; k++)
            CHECK(fabsf(e[i * 2 + k] - eye_val((int)tr[i], k)) <= 1e-5f, "pupil %d: %g", k, e[i * 2 + k]);
        for (int p = 0; p < H * W; p++)
            CHECK(fabsf(im[i * H * W + p] - img_val((int)tr[i], p)) <= 1e-6f * img_val((int)tr[i], p) + 1e-3f,
                  "image %d: %g", p, im[i * H * W + p]);
    }
    CHECK(npred_loaders_inv(L, 0, NPRED_FIELD_RESPONSES, b.responses, r, 2, NN - 1) == NPRED_ERR_SHAPE &&
              strstr(npred_last_error(), "responses"),
          "wrong width: %s", npred_last_error());
    npred_batch_free(&b);
    npred_loaders_free(L);
    /* excluded responses: the identity */
    L = open1(g_tiny, "{\"batch_size\": 2, \"exclude\": [\"responses\"]}");
    if (!L) return;
    const float x[NN] = {1.5f, -2, 3, 4, 5};
    CHECK_OK(npred_loaders_inv(L, 0, NPRED_FIELD_RESPONSES, x, r, 1, NN));
    CHECK(!memcmp(r, x, sizeof x), "excluded: identity");
    npred_loaders_free(L);
}

static void test_exclude_and_inputs_stats(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 2, \"exclude\": [\"responses\"], \"inputs_mean\": 10, \"inputs_std\": 4}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[1] = {5};
    CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
    CHECK(b.responses[3] == resp_val(5, 3), "excluded responses stay raw");
    CHECK(b.images[7] == (img_val(5, 7) - 10.0f) / 4.0f, "inputs_mean/std override: %g", b.images[7]);
    npred_batch_free(&b);
    npred_loaders_free(L);
    /* exclude as one string: Python's `k in "images_behavior"` substring test */
    L = open1(g_tiny, "{\"batch_size\": 2, \"exclude\": \"images_behavior\", \"include_behavior\": true, "
                      "\"add_behavior_as_channels\": false, \"inputs_std\": 3}");
    if (!L) return;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
    CHECK(b.images[7] == img_val(5, 7) && b.behavior[1] == beh_val(5, 1), "string exclude keeps images and behavior raw");
    CHECK(b.responses[0] == resp_val(5, 0) / RESP_STD[0], "responses still normalized");
    npred_normalizer_info ni;
    npred_loaders_normalizer(L, 0, &ni);
    CHECK(ni.inputs_std == IMG_STD, "inputs_std without inputs_mean is ignored (reference bug)");
    npred_batch_free(&b);
    npred_loaders_free(L);
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"inputs_mean\": 3}", "inputs_std");
}

static void test_channels(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 2, \"include_behavior\": true, \"include_eye_position\": true, "
                                     "\"add_eye_pos_as_channels\": true}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[2] = {2, 9};
    CHECK_OK(npred_loaders_get(L, 0, tr, 2, &b));
    CHECK(b.c == 6 && b.h == H && b.w == W, "1 + 3 behavior + 2 pupil channels: %d", b.c);
    for (int i = 0; i < 2; i++) {
        const float *img = b.images + (size_t)i * 6 * H * W;
        for (int k = 0; k < 3; k++) CHECK(img[(1 + k) * H * W + 11] == b.behavior[i * 3 + k], "behavior plane %d", k);
        for (int k = 0; k < 2; k++) CHECK(img[(4 + k) * H * W + 40] == b.pupil_center[i * 2 + k], "pupil plane %d", k);
    }
    npred_batch_free(&b);
    npred_loaders_free(L);
    /* select_input_channel after the planes (a list keeps that order; -1 is the last) */
    L = open1(g_tiny, "{\"batch_size\": 2, \"include_behavior\": true, \"select_input_channel\": [2, -1]}");
    if (!L) return;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
    CHECK(b.c == 2 && b.images[0] == b.behavior[1] && b.images[H * W] == b.behavior[2], "selected channels");
    npred_batch_free(&b);
    npred_loaders_free(L);
    L = open1(g_tiny, "{\"batch_size\": 2, \"select_input_channel\": 0, \"normalize\": false}");
    if (!L) return;
    CHECK_OK(npred_batch_init(&b, L, 0));
    CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
    CHECK(b.c == 1 && b.images[3] == img_val(2, 3), "select channel 0");
    npred_batch_free(&b);
    npred_loaders_free(L);
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"select_input_channel\": 3}", "select_input_channel");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"add_eye_pos_as_channels\": true}", "include_eye_position");
}

/* A negative select_input_channel counts from the end of each session's own
 * channels (Python indexing): -1 is channel 0 of the 1-channel tree and
 * channel 1 of the 2-channel one, whichever session comes first; an index
 * beyond a session's channels is an error naming that session's path. */
static void test_select_channel_per_session(void)
{
    const char *two = tree_path("two_channels");
    const char *orders[2][2] = {{g_tiny, two}, {two, g_tiny}};
    for (int o = 0; o < 2; o++) {
        npred_loader_config c;
        npred_loader_config_init(&c);
        npred_loaders *L = NULL;
        if (!CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 2, \"normalize\": false, \"select_input_channel\": -1}",
                                                NULL, NULL)) ||
            !CHECK_OK(npred_loaders_open(&L, orders[o], 2, &c))) {
            npred_loader_config_free(&c);
            continue;
        }
        npred_loader_config_free(&c);
        for (size_t si = 0; si < 2; si++) {
            npred_session_info info;
            npred_loaders_session(L, si, &info);
            int is_two = !strcmp(info.data_key, "7-2-9");
            npred_batch b;
            int64_t tr[1] = {4};
            if (!CHECK_OK(npred_batch_init(&b, L, si))) continue;
            if (CHECK_OK(npred_loaders_get(L, si, tr, 1, &b)) && CHECK(b.c == 1, "one channel selected (%d)", b.c)) {
                int bad = 0;
                for (int p = 0; p < H * W; p++) bad += b.images[p] != (is_two ? -img_val(4, p) : img_val(4, p));
                CHECK(bad == 0, "order %d, session %s: %d pixels are not channel %d", o, info.data_key, bad, is_two ? 1 : 0);
            }
            npred_batch_free(&b);
        }
        npred_loaders_free(L);
    }
    expect_open_error(two, "{\"batch_size\": 2, \"select_input_channel\": -3}", "two_channels: select_input_channel -3");
    expect_open_error(two, "{\"batch_size\": 2, \"select_input_channel\": [0, 2]}", "two_channels: select_input_channel 2");
}

/* independent double reference of skimage rescale (order 1, reflect) */
static double ref_sample(const float *img, int h, int w, double y, double x)
{
    double c[2] = {y, x};
    int n[2] = {h, w};
    int i0[2], i1[2];
    double f[2];
    for (int k = 0; k < 2; k++) {
        double v = c[k];
        if (v < 0) v = -v;
        if (v > n[k] - 1) v = 2.0 * (n[k] - 1) - v;
        i0[k] = (int)floor(v);
        f[k] = v - i0[k];
        i1[k] = i0[k] + 1 < n[k] ? i0[k] + 1 : i0[k];
    }
    return (1 - f[0]) * ((1 - f[1]) * img[i0[0] * w + i0[1]] + f[1] * img[i0[0] * w + i1[1]]) +
           f[0] * ((1 - f[1]) * img[i1[0] * w + i0[1]] + f[1] * img[i1[0] * w + i1[1]]);
}

static void check_scale(double scale, int ho, int wo)
{
    char json[256];
    snprintf(json, sizeof json, "{\"batch_size\": 1, \"normalize\": false, \"scale\": %.17g}", scale);
    npred_loaders *L = open1(g_tiny, json);
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[1] = {4};
    CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
    CHECK(b.h == ho && b.w == wo, "scale %g: %dx%d, expected %dx%d", scale, b.h, b.w, ho, wo);
    float img[H * W];
    for (int p = 0; p < H * W; p++) img[p] = img_val(4, p);
    double err = 0;
    for (int y = 0; y < b.h && b.h == ho; y++)
        for (int x = 0; x < b.w && b.w == wo; x++) {
            double r = ref_sample(img, H, W, (y + 0.5) * H / ho - 0.5, (x + 0.5) * W / wo - 0.5);
            err = th_worst(err, fabs(b.images[y * wo + x] - r));
        }
    CHECK(err <= 1e-3, "scale %g: max error %g vs the reflect-bilinear formula", scale, err);
    npred_batch_free(&b);
    npred_loaders_free(L);
}

static void test_scale(void)
{
    check_scale(1.0, H, W);
    check_scale(0.5, 3, 4);
    check_scale(2.0, 12, 16);
    check_scale(0.3, 2, 2);   /* round(1.8) = 2, round(2.4) = 2 */
    check_scale(0.75, 4, 6);  /* round(4.5) = 4 (half to even), 6 */
    /* 0.25 is the mean of the central 2x2 of each 4x4 block */
    float in[16 * 8], out[4 * 2];
    for (int i = 0; i < 128; i++) in[i] = (float)((i * 37) % 101);
    npred_resample_plan ph, pw;
    CHECK_OK(npred_resample_plan_init(&ph, 16, 4));
    CHECK_OK(npred_resample_plan_init(&pw, 8, 2));
    npred_rescale_bilinear(out, in, 1, &ph, &pw);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 2; x++) {
            int r = 4 * y + 1, c = 4 * x + 1;
            float m = (in[r * 8 + c] + in[r * 8 + c + 1] + in[(r + 1) * 8 + c] + in[(r + 1) * 8 + c + 1]) / 4.0f;
            CHECK(fabsf(out[y * 2 + x] - m) < 1e-4f, "0.25 block mean at %d,%d", y, x);
        }
    npred_resample_plan_free(&ph);
    npred_resample_plan_free(&pw);
}

static void test_np_random(void)
{
    npred_np_random r;
    npred_np_random_seed(&r, 5489);
    CHECK(npred_np_random_u32(&r) == 3499211612u, "MT19937 reference output");
    int64_t p[10];
    const int64_t want0[10] = {2, 8, 4, 9, 1, 6, 7, 3, 0, 5}, want42[10] = {8, 1, 5, 0, 7, 2, 9, 4, 3, 6};
    npred_np_random_seed(&r, 0);
    npred_np_random_permutation(&r, p, 10);
    CHECK(!memcmp(p, want0, sizeof p), "np.random.seed(0); permutation(10)");
    npred_np_random_seed(&r, 42);
    npred_np_random_permutation(&r, p, 10);
    CHECK(!memcmp(p, want42, sizeof p), "np.random.seed(42); permutation(10)");
}

static void test_neuron_selection(void)
{
    npred_session_info si;
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 2, \"areas\": [\"V1\"]}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.n_neurons == 3 && si.unit_ids[0] == 1 && si.unit_ids[1] == 4 && si.unit_ids[2] == 5, "areas V1");
        npred_loaders_free(L);
    }
    L = open1(g_tiny, "{\"batch_size\": 2, \"areas\": \"V1\", \"layers\": [\"L2/3\"]}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.n_neurons == 2 && si.unit_ids[0] == 1 && si.unit_ids[1] == 5, "areas + layers");
        npred_loaders_free(L);
    }
    L = open1(g_tiny, "{\"batch_size\": 2, \"neuron_ids\": [[9, 2]], \"normalize\": false}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.n_neurons == 2 && si.neuron_idx[0] == 4 && si.neuron_idx[1] == 1, "neuron_ids order");
        CHECK(si.cell_motor_coordinates && si.cell_motor_coordinates[0] == 120.0 && si.cell_motor_coordinates[3] == 30.0,
              "coordinates follow the selection");
        npred_batch b;
        CHECK_OK(npred_batch_init(&b, L, 0));
        int64_t tr[1] = {6};
        CHECK_OK(npred_loaders_get(L, 0, tr, 1, &b));
        CHECK(b.n_neurons == 2 && b.responses[0] == resp_val(6, 4) && b.responses[1] == resp_val(6, 1), "subsampled responses");
        npred_batch_free(&b);
        npred_loaders_free(L);
    }
    /* neuron_n: np.random.seed(base*n); choice(unit_ids, excl+n, replace=False)[excl:] */
    L = open1(g_tiny, "{\"batch_size\": 2, \"neuron_n\": 2, \"exclude_neuron_n\": 1, \"neuron_base_seed\": 3}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        npred_np_random r;
        int64_t perm[NN];
        npred_np_random_seed(&r, 6);
        npred_np_random_permutation(&r, perm, NN);
        CHECK(si.n_neurons == 2 && si.unit_ids[0] == UNIT_IDS[perm[1]] && si.unit_ids[1] == UNIT_IDS[perm[2]], "neuron_n draw");
        npred_loaders_free(L);
    }
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"neuron_ids\": [[3]]}", "unit id 3");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"neuron_ids\": [[1]], \"areas\": [\"V1\"]}", "neuron_ids");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"neuron_n\": 5, \"exclude_neuron_n\": 1, \"neuron_base_seed\": 1}", "not 5 neurons");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"exclude_neuron_n\": 1}", "neuron_base_seed");
}

static void test_image_selection(void)
{
    npred_session_info si;
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 2, \"image_ids\": [[14, 10]]}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.tier_n[NPRED_TIER_TRAIN] == 2 && si.tier_idx[NPRED_TIER_TRAIN][0] == 8 && si.tier_idx[NPRED_TIER_TRAIN][1] == 0,
              "image_ids");
        CHECK(si.tier_n[NPRED_TIER_TEST] == 4, "image_ids affect train only");
        npred_loaders_free(L);
    }
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"image_ids\": [[20]]}", "validation or test");
    L = open1(g_tiny, "{\"batch_size\": 2, \"image_n\": 3, \"image_base_seed\": 2}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        const int64_t train[6] = {0, 2, 4, 6, 8, 10};
        npred_np_random r;
        int64_t perm[6];
        npred_np_random_seed(&r, 6);
        npred_np_random_permutation(&r, perm, 6);
        CHECK(si.tier_n[NPRED_TIER_TRAIN] == 3, "image_n");
        for (int i = 0; i < 3; i++) CHECK(si.tier_idx[NPRED_TIER_TRAIN][i] == train[perm[i]], "image_n draw %d", i);
        npred_loaders_free(L);
    }
    L = open1(g_tiny, "{\"batch_size\": 2, \"image_condition\": \"b\"}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.tier_n[NPRED_TIER_TRAIN] == 3 && si.tier_n[NPRED_TIER_TEST] == 1 && si.tier_n[NPRED_TIER_VALIDATION] == 0,
              "image_condition b");
        npred_loaders_free(L);
    }
    L = open1(g_tiny, "{\"batch_size\": 2, \"image_condition\": [\"a\", \"b\"], \"tier\": \"test\"}");
    if (L) {
        npred_loaders_session(L, 0, &si);
        CHECK(si.tier_n[NPRED_TIER_TEST] == 4 && !si.tier_enabled[NPRED_TIER_TRAIN], "tier test only");
        npred_loader_iter it;
        CHECK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TRAIN, NULL) != NPRED_OK, "train not loaded");
        npred_loaders_free(L);
    }
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"image_ids\": [[10]], \"image_condition\": \"a\"}", "image_condition");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"tier\": \"training\"}", "training");
}

static void test_trial_info(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 3, \"include_trial_info_keys\": [\"trial_idx\", \"frame_image_id\"], "
                                     "\"exclude\": [\"frame_image_id\"]}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t tr[2] = {1, 11};
    CHECK_OK(npred_loaders_get(L, 0, tr, 2, &b));
    CHECK(b.n_info == 2 && !strcmp(b.info_names[0], "trial_idx"), "info keys");
    double mean = (N - 1) / 2.0, sd = sqrt((N * N - 1) / 12.0);
    for (int i = 0; i < 2; i++) {
        CHECK(fabsf(b.info[0][i] - (float)((500 + tr[i] - mean) / sd)) < 1e-5f, "trial_idx normalized");
        CHECK(b.info[1][i] == (float)IMG_IDS[tr[i]], "frame_image_id raw");
    }
    npred_batch_free(&b);
    npred_loaders_free(L);
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"include_trial_info_keys\": [\"frame_image_id\"]}", "frame_image_id");
    expect_open_error(g_tiny, "{\"batch_size\": 2, \"normalize\": false, \"include_trial_info_keys\": [\"frame_image_class\"]}",
                      "frame_image_class");
}

static void test_batching(void)
{
    npred_loaders *L = open1(g_tiny, "{\"batch_size\": 4, \"normalize\": false}");
    if (!L) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t first[6] = {0}, again[6] = {0}, other[6] = {0};
    for (int run = 0; run < 3; run++) {
        npred_rng rng;
        npred_rng_seed(&rng, run == 2 ? 99 : 7);
        npred_loader_iter it;
        CHECK_OK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TRAIN, &rng));
        int64_t got[6], n = 0, sizes[2] = {0, 0}, nb = 0;
        int has = 1;
        while (CHECK_OK(npred_loader_iter_next(&it, &b, &has)) && has) {
            if (nb < 2) sizes[nb] = b.n;
            nb++;
            for (int i = 0; i < b.n; i++) {
                got[n++] = b.trials[i];
                CHECK(b.images[(size_t)i * H * W + 1] == img_val((int)b.trials[i], 1), "image matches trial");
            }
        }
        npred_loader_iter_free(&it);
        CHECK(nb == 2 && sizes[0] == 4 && sizes[1] == 2, "6 train trials in batches of 4 and 2 (no drop_last)");
        int seen[N] = {0};
        for (int i = 0; i < 6; i++) seen[got[i]]++;
        for (int t = 0; t < N; t++) CHECK(seen[t] == (strcmp(TIERS[t], "train") ? 0 : 1), "trial %d once per epoch", t);
        memcpy(run == 0 ? first : run == 1 ? again : other, got, sizeof got);
    }
    CHECK(!memcmp(first, again, sizeof first), "same seed, same order");
    CHECK(memcmp(first, other, sizeof first) != 0, "another seed, another order");
    /* repeats sampler: test trials grouped by image id */
    int64_t *tr, *off, ng;
    if (CHECK_OK(npred_loaders_repeats(L, 0, NPRED_TIER_TEST, &tr, &off, &ng))) {
        CHECK(ng == 2 && off[1] == 2 && tr[0] == 3 && tr[1] == 9 && tr[2] == 5 && tr[3] == 11, "repeats groups");
        free(tr);
        free(off);
    }
    npred_batch_free(&b);
    npred_loaders_free(L);
}

static void test_cycler(void)
{
    /* session 0: 6 train trials (2 batches of 4); session 1: 3 train trials (1 batch) */
    const char *paths[2] = {g_tiny, tree_path("small")};
    npred_loader_config c;
    npred_loader_config_init(&c);
    CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 4, \"normalize\": false}", NULL, NULL));
    npred_loaders *L = NULL;
    npred_status s = npred_loaders_open(&L, paths, 2, &c);
    CHECK_OK(s);
    npred_loader_config_free(&c);
    if (s) return;
    CHECK(npred_loaders_count(L) == 2 && npred_loaders_find(L, "7-1-9") == 1, "two sessions");
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    npred_cycler cy;
    if (CHECK_OK(npred_cycler_begin(&cy, L, NPRED_TIER_TRAIN, &rng))) {
        CHECK(npred_cycler_len(&cy) == 4, "2 sessions x 2 batches");
        int order[8], k = 0, has = 1;
        int64_t ns[8];
        while (CHECK_OK(npred_cycler_next(&cy, &b, &has)) && has && k < 8) {
            ns[k] = b.n;
            order[k++] = b.session;
        }
        CHECK(k == 4 && order[0] == 0 && order[1] == 1 && order[2] == 0 && order[3] == 1, "round robin");
        CHECK(ns[0] == 4 && ns[1] == 3 && ns[2] == 2 && ns[3] == 3, "shorter session restarts");
        npred_cycler_free(&cy);
    }
    npred_batch_free(&b);
    npred_loaders_free(L);
}

/* ShortCycler and Exhauster on the same two sessions (2 and 1 train batches) */
static void test_short_cycler_exhauster(void)
{
    const char *paths[2] = {g_tiny, tree_path("small")};
    npred_loader_config c;
    npred_loader_config_init(&c);
    CHECK_OK(npred_loader_config_parse(&c, "{\"batch_size\": 4, \"normalize\": false}", NULL, NULL));
    npred_loaders *L = NULL;
    npred_status s = npred_loaders_open(&L, paths, 2, &c);
    CHECK_OK(s);
    npred_loader_config_free(&c);
    if (s) return;
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    const npred_cycler_kind kinds[2] = {NPRED_CYCLER_SHORT, NPRED_CYCLER_EXHAUST};
    const int want_len[2] = {2, 3};
    const int want_session[2][3] = {{0, 1}, {0, 0, 1}};
    const int64_t want_n[2][3] = {{4, 3}, {4, 2, 3}};
    for (int k = 0; k < 2; k++) {
        npred_rng rng;
        npred_rng_seed(&rng, 1);
        npred_cycler cy;
        if (!CHECK_OK(npred_cycler_begin_kind(&cy, L, NPRED_TIER_TRAIN, &rng, kinds[k]))) continue;
        CHECK(npred_cycler_len(&cy) == want_len[k], "kind %d: length %lld", k, (long long)npred_cycler_len(&cy));
        int got = 0, has = 1, seen[N] = {0};
        while (CHECK_OK(npred_cycler_next(&cy, &b, &has)) && has && got < 6) {
            CHECK(got < want_len[k] && b.session == want_session[k][got] && b.n == want_n[k][got],
                  "kind %d step %d: session %d, %lld trials", k, got, b.session, (long long)b.n);
            if (b.session == 0)
                for (int i = 0; i < b.n; i++) seen[b.trials[i]]++;
            got++;
        }
        CHECK(got == want_len[k], "kind %d: %d steps", k, got);
        if (k == 1)
            for (int t = 0; t < N; t++)
                CHECK(seen[t] == (strcmp(TIERS[t], "train") ? 0 : 1), "Exhauster: trial %d once", t);
        npred_cycler_free(&cy);
    }
    npred_cycler cy;
    CHECK(npred_cycler_begin_kind(&cy, L, NPRED_TIER_TRAIN, NULL, (npred_cycler_kind)7) == NPRED_ERR_ARG,
          "unknown kind");
    npred_batch_free(&b);
    npred_loaders_free(L);
}

/* SampledSubsetRandomSampler / SampledSubsetSequentialSampler against numpy:
 * np.random.seed(s); np.random.choice(idx, size, replace=size > len(idx)) (then np.sort) */
static void test_sampled_subset_samplers(void)
{
    const int64_t idx[7] = {10, 11, 12, 13, 14, 15, 16};
    const int64_t no_repl[4] = {14, 16, 15, 13}, no_repl_next[4] = {16, 14, 11, 12};
    const int64_t repl[11] = {12, 10, 11, 13, 10, 10, 10, 15, 15, 13, 12};
    const int64_t repl_sorted[11] = {10, 10, 10, 10, 11, 12, 12, 13, 13, 15, 15};
    const int64_t all7[7] = {12, 15, 10, 16, 13, 11, 14};
    int64_t out[11];
    npred_np_random r;
    npred_np_random_seed(&r, 3);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 4, 0, &r));
    CHECK(!memcmp(out, no_repl, sizeof no_repl), "random sampler, 4 of 7: %lld %lld %lld %lld", (long long)out[0],
          (long long)out[1], (long long)out[2], (long long)out[3]);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 4, 0, &r));
    CHECK(!memcmp(out, no_repl_next, sizeof no_repl_next), "second pass continues the stream");
    npred_np_random_seed(&r, 3);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 11, 0, &r));
    CHECK(!memcmp(out, repl, sizeof repl), "random sampler, 11 of 7 (with replacement)");
    npred_np_random_seed(&r, 3);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 11, 1, &r));
    CHECK(!memcmp(out, repl_sorted, sizeof repl_sorted), "sequential sampler, 11 of 7");
    npred_np_random_seed(&r, 7);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 7, 0, &r));
    CHECK(!memcmp(out, all7, sizeof all7), "7 of 7 is a permutation");
    npred_np_random_seed(&r, 7);
    CHECK_OK(npred_sampled_subset(out, idx, 7, 7, 1, &r));
    CHECK(!memcmp(out, idx, sizeof idx), "sequential: every index once, sorted");
    CHECK(npred_sampled_subset(out, idx, 0, 3, 0, &r) == NPRED_ERR_VALUE, "no indices");
    CHECK(npred_sampled_subset(out, idx, 7, -1, 0, &r) == NPRED_ERR_ARG, "negative num_samples");
}

static void test_config_json(void)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    CHECK(c.normalize == 1 && c.add_behavior_as_channels == 1 && c.cuda == 1 && c.include_behavior == 0 && !c.scale.set &&
              c.exclude_neuron_n == 0 && c.file_tree == 1,
          "defaults");
    char **paths = NULL;
    size_t np = 0;
    CHECK_OK(npred_loader_config_parse(&c,
                                       "{\"paths\": [\"a.zip\", \"b\"], \"batch_size\": 128, \"seed\": 3, \"scale\": 0.25, "
                                       "\"cuda\": false, \"include_eye_position\": null, \"trial_idx_selection\": null, "
                                       "\"overwrite_data_path\": true, \"include_px_position\": null, \"image_reshape_list\": null}",
                                       &paths, &np));
    CHECK(np == 2 && !strcmp(paths[1], "b") && c.batch_size == 128 && c.seed.set && c.seed.v == 3 && c.scale.v == 0.25 &&
              !c.cuda,
          "parsed");
    npred_loader_paths_free(paths, np);
    CHECK(npred_loader_config_parse(&c, "{\"batch_sise\": 3}", NULL, NULL) == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "batch_sise"),
          "unknown key named: %s", npred_last_error());
    CHECK(npred_loader_config_parse(&c, "{\"scale\": \"big\"}", NULL, NULL) == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "scale"),
          "wrong type named");
    CHECK(npred_loader_config_parse(&c, "{\"include_px_position\": true}", NULL, NULL) == NPRED_ERR_CONFIG,
          "include_px_position unsupported");
    CHECK(npred_loader_config_parse(&c, "{\"paths\": []}", NULL, NULL) == NPRED_ERR_CONFIG, "paths without a receiver");
    CHECK(npred_loader_config_parse(&c, "{\"batch_size\": 1.5}", NULL, NULL) == NPRED_ERR_CONFIG, "integer");
    npred_loader_config_free(&c);
    npred_loader_config_init(&c);
    const char *p = g_tiny;
    npred_loaders *L = NULL;
    CHECK(npred_loaders_open(&L, &p, 1, &c) == NPRED_ERR_CONFIG, "batch_size required");
    c.batch_size = 2;
    c.file_tree = 0;
    CHECK(npred_loaders_open(&L, &p, 1, &c) == NPRED_ERR_CONFIG && strstr(npred_last_error(), "file_tree"),
          "file_tree false needs an HDF5 file: %s", npred_last_error());
    npred_loader_config_free(&c);
}

/* ------------------------------------------------------------------ malformed datasets */

static void copy_tree(const char *name)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", tree_path(name), g_tiny, tree_path(name));
    CHECK(system(cmd) == 0, "copy tree");
}

static void expect_dataset_error(const char *path, const char *needle, const char *what)
{
    npred_dataset *d = NULL;
    npred_status s = npred_dataset_open(&d, path, NULL);
    CHECK(s != NPRED_OK, "%s: expected an error", what);
    CHECK(strstr(npred_last_error(), needle) != NULL, "%s: error '%s' does not name '%s'", what, npred_last_error(), needle);
    npred_dataset_free(d);
}

static void test_malformed(void)
{
    char p[1024];
    expect_dataset_error(tree_path("does-not-exist"), "does-not-exist", "missing path");
    copy_tree("bad_missing");
    snprintf(p, sizeof p, "rm -rf '%s/data/responses'", tree_path("bad_missing"));
    CHECK(system(p) == 0, "rm");
    expect_dataset_error(tree_path("bad_missing"), "data/responses", "missing folder");

    copy_tree("bad_trunc");
    snprintf(p, sizeof p, "%s/data/images/5.npy", tree_path("bad_trunc"));
    CHECK(truncate(p, 100) == 0, "truncate");
    expect_dataset_error(tree_path("bad_trunc"), "data/images/5.npy", "truncated npy");

    copy_tree("bad_count");
    snprintf(p, sizeof p, "%s/data/behavior/11.npy", tree_path("bad_count"));
    CHECK(unlink(p) == 0, "unlink");
    expect_dataset_error(tree_path("bad_count"), "data/behavior", "mismatched trial counts");

    copy_tree("bad_tier");
    const char *tiers[N];
    for (int i = 0; i < N; i++) tiers[i] = TIERS[i];
    tiers[4] = "training";
    write_str(tree_path("bad_tier"), "meta/trials/tiers.npy", tiers, N, 10);
    expect_dataset_error(tree_path("bad_tier"), "training", "unknown tier");
    expect_dataset_error(tree_path("bad_tier"), "tiers.npy", "unknown tier file");

    copy_tree("bad_nan");
    float sv[NN] = {1, 2, NAN, 4, 5};
    int64_t sh[1] = {NN};
    write_f32(tree_path("bad_nan"), "meta/statistics/responses/all/std.npy", sv, 1, sh);
    expect_dataset_error(tree_path("bad_nan"), "responses/all/std.npy", "NaN in statistics");

    copy_tree("bad_stat_shape");
    write_f32(tree_path("bad_stat_shape"), "meta/statistics/responses/all/mean.npy", sv, 1, (int64_t[1]){4});
    expect_dataset_error(tree_path("bad_stat_shape"), "responses/all/mean.npy", "statistics shape");

    copy_tree("bad_shape");
    float img[H * W] = {0};
    write_f32(tree_path("bad_shape"), "data/images/3.npy", img, 3, (int64_t[3]){1, W, H});
    expect_dataset_error(tree_path("bad_shape"), "data/images/3.npy", "image shape");

    copy_tree("bad_object");
    {
        /* an object-dtype (pickled) npy */
        const char hdr[] = "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }";
        char buf[128];
        memset(buf, ' ', sizeof buf);
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = 118;
        buf[9] = 0;
        memcpy(buf + 10, hdr, sizeof hdr - 1);
        buf[127] = '\n';
        snprintf(p, sizeof p, "%s/meta/trials/frame_image_class.npy", tree_path("bad_object"));
        FILE *f = fopen(p, "wb");
        fwrite(buf, 1, sizeof buf, f);
        fwrite("\x80\x02]q\x00.", 1, 6, f);
        fclose(f);
    }
    expect_dataset_error(tree_path("bad_object"), "frame_image_class.npy", "object npy");

    copy_tree("bad_meta_rows");
    write_i64(tree_path("bad_meta_rows"), "meta/trials/frame_image_id.npy", IMG_IDS, N - 1);
    expect_dataset_error(tree_path("bad_meta_rows"), "frame_image_id.npy", "trial info rows");

    /* a zip whose member data is corrupted: CRC error naming the member */
    char zp[1024];
    snprintf(zp, sizeof zp, "%s/static5-5-5-GrayImageNet-x.zip", g_tmp);
    make_zip(zp, g_tiny, "static5-5-5-GrayImageNet-x");
    npred_dataset *d;
    if (CHECK_OK(npred_dataset_open(&d, zp, NULL))) {
        npred_dataset_info di;
        npred_dataset_get_info(d, &di);
        CHECK(!strcmp(di.data_key, "5-5-5") && di.n_trials == N, "zip of the tiny scan");
        npred_dataset_free(d);
    }
    {
        FILE *f = fopen(zp, "r+b");
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        char *buf = malloc((size_t)n);
        fseek(f, 0, SEEK_SET);
        CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n, "read zip");
        /* pupil_center/7.npy holds (7, 4): flip a byte of its float payload */
        float want[2] = {eye_val(7, 0), eye_val(7, 1)};
        long at = -1;
        for (long i = 0; i + 8 <= n; i++)
            if (!memcmp(buf + i, want, 8)) at = i;
        CHECK(at >= 0, "member payload found");
        if (at >= 0) {
            fseek(f, at, SEEK_SET);
            fputc(buf[at] ^ 0x55, f);
        }
        free(buf);
        fclose(f);
    }
    expect_dataset_error(zp, "pupil_center/7.npy", "broken zip member");
    /* not a dataset at all */
    snprintf(p, sizeof p, "%s/notes.txt", g_tmp);
    FILE *f = fopen(p, "w");
    fputs("hi", f);
    fclose(f);
    expect_dataset_error(p, "notes.txt", "not a folder or zip");
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "%s/npred_test_data_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "cannot create a temp folder\n");
        return 1;
    }
    g_tiny = tree_path("tiny");
    static char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s", g_tiny);
    g_tiny = tiny;
    make_tree(g_tiny, N);
    /* second session: trials 0..4 of the same design (3 train), data key from sessions */
    char small[1024];
    snprintf(small, sizeof small, "%s", tree_path("small"));
    make_tree(small, N);
    {
        /* keep only 3 train trials by relabelling tiers */
        const char *t2[N];
        for (int i = 0; i < N; i++) t2[i] = i < 6 && !strcmp(TIERS[i], "train") ? "train" : "test";
        write_str(small, "meta/trials/tiers.npy", t2, N, 10);
        int64_t se[NN] = {1, 1, 1, 1, 1}, an[NN];
        for (int i = 0; i < NN; i++) an[i] = 0;
        (void)an;
        write_i64(small, "meta/neurons/sessions.npy", se, NN);
        const char *tag = "small";
        (void)tag;
    }
    /* third session: the tiny design with 2-channel images (the second negated) */
    {
        char two[1024];
        snprintf(two, sizeof two, "%s", tree_path("two_channels"));
        make_tree(two, N);
        for (int t = 0; t < N; t++) {
            float img[2 * H * W];
            for (int p = 0; p < H * W; p++) img[p] = img_val(t, p), img[H * W + p] = -img_val(t, p);
            char rel[64];
            snprintf(rel, sizeof rel, "data/images/%d.npy", t);
            write_f32(two, rel, img, 3, (int64_t[3]){2, H, W});
        }
        int64_t se[NN] = {2, 2, 2, 2, 2};
        write_i64(two, "meta/neurons/sessions.npy", se, NN);
    }
    RUN(test_mini_tree);
    RUN(test_dataset_open);
    RUN(test_data_key_names);
    RUN(test_normalize);
    RUN(test_normalizer_inv);
    RUN(test_exclude_and_inputs_stats);
    RUN(test_channels);
    RUN(test_select_channel_per_session);
    RUN(test_scale);
    RUN(test_np_random);
    RUN(test_neuron_selection);
    RUN(test_image_selection);
    RUN(test_trial_info);
    RUN(test_batching);
    RUN(test_cycler);
    RUN(test_short_cycler_exhauster);
    RUN(test_sampled_subset_samplers);
    RUN(test_config_json);
    RUN(test_malformed);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return th_summary();
}
