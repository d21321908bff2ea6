/* HDF5 static datasets (neuralpredictors StaticImageSet layout) read as the file
 * tree, and `convert` to a folder and to a SENSORIUM zip.
 *
 * The test writes, with the HDF5 C API, the same tiny scan twice: as an HDF5 file in
 * the layout StaticImageSet / convert_static_h5_dataset_to_folder read (/images,
 * /responses, /behavior, /pupil_center with a trial axis; /tiers; /item_info/NAME;
 * /neurons/NAME; /statistics/FIELD/all/STAT), and as the file tree written directly with
 * the npy writer. Every field, statistic and meta array must come out identical. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "npred/data.h"

enum { N = 7, H = 3, W = 4, NN = 3 };
static const char *const TIERS[N] = {"train", "train", "validation", "test", "train", "test", "final_test"};
static const int64_t IMG_IDS[N] = {4, 5, 6, 9, 7, 9, 11};
static const char *const CLASSES[N] = {"imagenet", "imagenet", "imagenet", "oracle", "imagenet", "oracle", "x"};
static const int64_t UNIT_IDS[NN] = {3, 8, 12};
static const char *const AREAS[NN] = {"V1", "LM", "V1"};
static const char *const LAYERS[NN] = {"L2/3", "L4", "L2/3"};
static const char *const STATS[5] = {"mean", "std", "min", "max", "median"};

static char g_tmp[1024];

static float img_val(int t, int p) { return (float)(100 * t + p) * 0.5f; }
static float resp_val(int t, int j) { return (float)(t * 3 + j) * 0.25f; }
static float beh_val(int t, int k) { return (float)(t + 10 * k); }
static float eye_val(int t, int k) { return (float)t - 0.5f * (float)k; }

/* ---- HDF5 writers ---- */

static void h5_write(hid_t loc, const char *name, hid_t type, int nd, const hsize_t *dims, const void *data)
{
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0 && H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "h5 write %s", name);
    H5Dclose(d);
    H5Sclose(sp);
}

/* fixed-length byte strings (numpy 'S', as h5py writes np.array(..., dtype='S')) */
static void h5_fixed_str(hid_t loc, const char *name, const char *const *v, hsize_t n, size_t width)
{
    char *buf = calloc(n, width);
    for (hsize_t i = 0; i < n; i++) memcpy(buf + i * width, v[i], strnlen(v[i], width));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, width);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    h5_write(loc, name, t, 1, &n, buf);
    H5Tclose(t);
    free(buf);
}

/* variable-length strings (h5py's str dtype) */
static void h5_vlen_str(hid_t loc, const char *name, const char *const *v, hsize_t n)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    h5_write(loc, name, t, 1, &n, v);
    H5Tclose(t);
}

static void make_h5(const char *path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (!CHECK(f >= 0, "create %s", path)) return;
    float img[N * H * W], resp[N * NN], beh[N * 3], eye[N * 2];
    for (int t = 0; t < N; t++) {
        for (int p = 0; p < H * W; p++) img[t * H * W + p] = img_val(t, p);
        for (int j = 0; j < NN; j++) resp[t * NN + j] = resp_val(t, j);
        for (int k = 0; k < 3; k++) beh[t * 3 + k] = beh_val(t, k);
        for (int k = 0; k < 2; k++) eye[t * 2 + k] = eye_val(t, k);
    }
    hsize_t di[4] = {N, 1, H, W}, dr[2] = {N, NN}, db[2] = {N, 3}, de[2] = {N, 2}, dn = NN, dt = N, dc[2] = {NN, 3};
    h5_write(f, "images", H5T_NATIVE_FLOAT, 4, di, img);
    h5_write(f, "responses", H5T_NATIVE_FLOAT, 2, dr, resp);
    h5_write(f, "behavior", H5T_NATIVE_FLOAT, 2, db, beh);
    h5_write(f, "pupil_center", H5T_NATIVE_FLOAT, 2, de, eye);
    h5_fixed_str(f, "tiers", TIERS, N, 10);
    hid_t g = H5Gcreate2(f, "item_info", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t tidx[N];
    for (int t = 0; t < N; t++) tidx[t] = 40 + t;
    h5_write(g, "frame_image_id", H5T_NATIVE_INT64, 1, &dt, IMG_IDS);
    h5_vlen_str(g, "frame_image_class", CLASSES, N);
    h5_write(g, "trial_idx", H5T_NATIVE_INT64, 1, &dt, tidx);
    H5Gclose(g);
    g = H5Gcreate2(f, "neurons", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int64_t an[NN] = {21, 21, 21}, se[NN] = {4, 4, 4}, sc[NN] = {2, 2, 2};
    double cm[NN * 3];
    for (int i = 0; i < NN * 3; i++) cm[i] = 1.5 * i;
    h5_write(g, "unit_ids", H5T_NATIVE_INT64, 1, &dn, UNIT_IDS);
    h5_fixed_str(g, "area", AREAS, NN, 2);
    h5_vlen_str(g, "layer", LAYERS, NN);
    h5_write(g, "animal_ids", H5T_NATIVE_INT64, 1, &dn, an);
    h5_write(g, "sessions", H5T_NATIVE_INT64, 1, &dn, se);
    h5_write(g, "scan_idx", H5T_NATIVE_INT64, 1, &dn, sc);
    h5_write(g, "cell_motor_coordinates", H5T_NATIVE_DOUBLE, 2, dc, cm);
    H5Gclose(g);
    const char *fields[4] = {"images", "responses", "behavior", "pupil_center"};
    const hsize_t counts[4] = {0, NN, 3, 2};
    for (int fi = 0; fi < 4; fi++) {
        char gp[128];
        snprintf(gp, sizeof gp, "statistics/%s/all", fields[fi]);
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        g = H5Gcreate2(f, gp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Pclose(lcpl);
        for (int k = 0; k < 5; k++) {
            float v[NN];
            for (hsize_t j = 0; j < (counts[fi] ? counts[fi] : 1); j++) v[j] = (float)(fi * 10 + k + 1) + (float)j;
            h5_write(g, STATS[k], H5T_NATIVE_FLOAT, counts[fi] ? 1 : 0, &counts[fi], v);
        }
        if (fi == 1) { /* the converter's renaming: lower case, '.' -> '_' */
            float one = 1.0f;
            h5_write(g, "Extra.Stat", H5T_NATIVE_FLOAT, 0, NULL, &one);
        }
        H5Gclose(g);
    }
    H5Fclose(f);
}

/* ---- the same scan written directly as a file tree ---- */

static void put(const char *root, const char *rel, npred_dtype dt, size_t itemsize, int nd, const int64_t *shape,
                const void *data)
{
    char p[2048], d[2048];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    snprintf(d, sizeof d, "%s", p);
    for (char *s = d + strlen(root) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(d, 0755);
            *s = '/';
        }
    npred_array a;
    if (!CHECK_OK(npred_array_alloc(&a, dt, itemsize, nd, shape))) return;
    memcpy(a.data, data, a.count * itemsize);
    CHECK_OK(npred_npy_write(p, &a));
    npred_array_free(&a);
}

static void put_str(const char *root, const char *rel, const char *const *v, int64_t n, int width)
{
    uint32_t *u = calloc((size_t)(n * width), 4);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < width && v[i][k]; k++) u[i * width + k] = (unsigned char)v[i][k];
    put(root, rel, NPRED_DT_STR_U, (size_t)width * 4, 1, &n, u);
    free(u);
}

static void make_tree(const char *root)
{
    mkdir(root, 0755);
    char rel[256];
    for (int t = 0; t < N; t++) {
        float img[H * W], r[NN], b[3], e[2];
        for (int p = 0; p < H * W; p++) img[p] = img_val(t, p);
        for (int j = 0; j < NN; j++) r[j] = resp_val(t, j);
        for (int k = 0; k < 3; k++) b[k] = beh_val(t, k);
        for (int k = 0; k < 2; k++) e[k] = eye_val(t, k);
        int64_t si[3] = {1, H, W}, sr = NN, sb = 3, se = 2;
        snprintf(rel, sizeof rel, "data/images/%d.npy", t);
        put(root, rel, NPRED_DT_F32, 4, 3, si, img);
        snprintf(rel, sizeof rel, "data/responses/%d.npy", t);
        put(root, rel, NPRED_DT_F32, 4, 1, &sr, r);
        snprintf(rel, sizeof rel, "data/behavior/%d.npy", t);
        put(root, rel, NPRED_DT_F32, 4, 1, &sb, b);
        snprintf(rel, sizeof rel, "data/pupil_center/%d.npy", t);
        put(root, rel, NPRED_DT_F32, 4, 1, &se, e);
    }
    int64_t n = N, nn = NN, cshape[2] = {NN, 3}, tidx[N];
    for (int t = 0; t < N; t++) tidx[t] = 40 + t;
    put_str(root, "meta/trials/tiers.npy", TIERS, N, 10);
    put(root, "meta/trials/frame_image_id.npy", NPRED_DT_I64, 8, 1, &n, IMG_IDS);
    put_str(root, "meta/trials/frame_image_class.npy", CLASSES, N, 8);
    put(root, "meta/trials/trial_idx.npy", NPRED_DT_I64, 8, 1, &n, tidx);
    int64_t an[NN] = {21, 21, 21}, se[NN] = {4, 4, 4}, sc[NN] = {2, 2, 2};
    double cm[NN * 3];
    for (int i = 0; i < NN * 3; i++) cm[i] = 1.5 * i;
    put(root, "meta/neurons/unit_ids.npy", NPRED_DT_I64, 8, 1, &nn, UNIT_IDS);
    put_str(root, "meta/neurons/area.npy", AREAS, NN, 2);
    put_str(root, "meta/neurons/layer.npy", LAYERS, NN, 4);
    put(root, "meta/neurons/animal_ids.npy", NPRED_DT_I64, 8, 1, &nn, an);
    put(root, "meta/neurons/sessions.npy", NPRED_DT_I64, 8, 1, &nn, se);
    put(root, "meta/neurons/scan_idx.npy", NPRED_DT_I64, 8, 1, &nn, sc);
    put(root, "meta/neurons/cell_motor_coordinates.npy", NPRED_DT_F64, 8, 2, cshape, cm);
    const char *fields[4] = {"images", "responses", "behavior", "pupil_center"};
    const int64_t counts[4] = {0, NN, 3, 2};
    for (int fi = 0; fi < 4; fi++)
        for (int k = 0; k < 5; k++) {
            float v[NN];
            for (int64_t j = 0; j < (counts[fi] ? counts[fi] : 1); j++) v[j] = (float)(fi * 10 + k + 1) + (float)j;
            snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", fields[fi], STATS[k]);
            put(root, rel, NPRED_DT_F32, 4, counts[fi] ? 1 : 0, &counts[fi], v);
        }
}

/* ---- comparison ---- */

static int same_array(const npred_array *a, const npred_array *b)
{
    if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim || a->count != b->count) return 0;
    for (int k = 0; k < a->ndim; k++)
        if (a->shape[k] != b->shape[k]) return 0;
    if (a->dtype == NPRED_DT_STR_U) { /* widths may differ: compare the texts */
        for (size_t i = 0; i < a->count; i++) {
            char x[256], y[256];
            npred_array_get_str(a, i, x, sizeof x);
            npred_array_get_str(b, i, y, sizeof y);
            if (strcmp(x, y)) return 0;
        }
        return 1;
    }
    return a->itemsize == b->itemsize && !memcmp(a->data, b->data, a->count * a->itemsize);
}

/* dataset at path equals the reference tree's, field by field */
static void compare_with_tree(const char *path, const char *tree, int want_hdf5)
{
    npred_dataset *a = NULL, *b = NULL;
    if (!CHECK_OK(npred_dataset_open(&a, path, NULL)) || !CHECK_OK(npred_dataset_open(&b, tree, NULL))) {
        npred_dataset_free(a);
        npred_dataset_free(b);
        return;
    }
    npred_dataset_info ia, ib;
    npred_dataset_get_info(a, &ia);
    npred_dataset_get_info(b, &ib);
    CHECK(ia.is_hdf5 == want_hdf5, "%s: is_hdf5 %d", path, ia.is_hdf5);
    CHECK(!strcmp(ia.data_key, "21-4-2") && !strcmp(ia.data_key, ib.data_key), "%s: data_key %s", path, ia.data_key);
    CHECK(ia.n_trials == N && ia.n_neurons == NN && ia.img_c == 1 && ia.img_h == H && ia.img_w == W,
          "%s: shape %lld trials %lld neurons %dx%dx%d", path, (long long)ia.n_trials, (long long)ia.n_neurons,
          ia.img_c, ia.img_h, ia.img_w);
    for (int t = 0; t < NPRED_TIER_COUNT; t++)
        CHECK(ia.tier_count[t] == ib.tier_count[t] && ia.tier_count[t] > 0, "%s: tier %d count %lld", path, t,
              (long long)ia.tier_count[t]);
    for (int f = 0; f < NPRED_FIELD_COUNT; f++) {
        CHECK(ia.has_field[f] && ia.field_size[f] == ib.field_size[f], "%s: field %d", path, f);
        const float *fa = npred_dataset_field(a, (npred_field)f), *fb = npred_dataset_field(b, (npred_field)f);
        CHECK(fa && fb && !memcmp(fa, fb, (size_t)(ia.n_trials * ia.field_size[f]) * sizeof(float)),
              "%s: field %d values", path, f);
        npred_dataset_stats sa, sb;
        npred_dataset_get_stats(a, (npred_field)f, &sa);
        npred_dataset_get_stats(b, (npred_field)f, &sb);
        CHECK(sa.present && sa.count == sb.count && sa.mean && sa.median &&
                  !memcmp(sa.mean, sb.mean, sa.count * 4) && !memcmp(sa.std, sb.std, sa.count * 4) &&
                  !memcmp(sa.median, sb.median, sa.count * 4),
              "%s: statistics of field %d", path, f);
    }
    const char *const *names;
    size_t nt = npred_dataset_trial_info_names(b, &names);
    for (size_t i = 0; i < nt; i++)
        CHECK(same_array(npred_dataset_trial_info(a, names[i]), npred_dataset_trial_info(b, names[i])),
              "%s: meta/trials/%s", path, names[i]);
    size_t nn = npred_dataset_neuron_info_names(b, &names);
    for (size_t i = 0; i < nn; i++)
        CHECK(same_array(npred_dataset_neuron_info(a, names[i]), npred_dataset_neuron_info(b, names[i])),
              "%s: meta/neurons/%s", path, names[i]);
    CHECK(!memcmp(npred_dataset_image_ids(a), IMG_IDS, sizeof IMG_IDS), "%s: frame_image_id", path);
    npred_dataset_free(a);
    npred_dataset_free(b);
}

static char *tmp_path(const char *name)
{
    static char p[8][1200];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", g_tmp, name);
    return p[k];
}

static void test_read_hdf5(void)
{
    char h5[1200], tree[1200];
    snprintf(h5, sizeof h5, "%s", tmp_path("scan.h5"));
    snprintf(tree, sizeof tree, "%s", tmp_path("tree"));
    make_h5(h5);
    make_tree(tree);
    compare_with_tree(h5, tree, 1);
    /* loaders on the HDF5 file give the tree's batches */
    npred_loader_config c;
    npred_loader_config_init(&c);
    const char *opts = "\"batch_size\": 8, \"include_behavior\": true, \"include_eye_position\": true";
    char js[256];
    snprintf(js, sizeof js, "{%s, \"file_tree\": false}", opts);
    CHECK_OK(npred_loader_config_parse(&c, js, NULL, NULL));
    npred_loader_config ct;
    npred_loader_config_init(&ct);
    snprintf(js, sizeof js, "{%s}", opts);
    CHECK_OK(npred_loader_config_parse(&ct, js, NULL, NULL));
    const char *pa[1] = {h5}, *pb[1] = {tree};
    npred_loaders *La = NULL, *Lb = NULL, *Lx = NULL;
    /* file_tree must match the file, as FileTreeDataset / StaticImageSet would */
    CHECK(npred_loaders_open(&Lx, pa, 1, &ct) == NPRED_ERR_CONFIG && strstr(npred_last_error(), "file_tree"),
          "HDF5 with file_tree true: %s", npred_last_error());
    npred_loaders_free(Lx);
    Lx = NULL;
    CHECK(npred_loaders_open(&Lx, pb, 1, &c) == NPRED_ERR_CONFIG && strstr(npred_last_error(), "file_tree"),
          "tree with file_tree false: %s", npred_last_error());
    npred_loaders_free(Lx);
    if (CHECK_OK(npred_loaders_open(&La, pa, 1, &c)) && CHECK_OK(npred_loaders_open(&Lb, pb, 1, &ct))) {
        npred_batch ba, bb;
        CHECK_OK(npred_batch_init(&ba, La, 0));
        CHECK_OK(npred_batch_init(&bb, Lb, 0));
        const int64_t trials[3] = {0, 2, 6};
        CHECK_OK(npred_loaders_get(La, 0, trials, 3, &ba));
        CHECK_OK(npred_loaders_get(Lb, 0, trials, 3, &bb));
        size_t img = (size_t)(3 * ba.c * ba.h * ba.w);
        CHECK(ba.c == bb.c && !memcmp(ba.images, bb.images, img * 4) && !memcmp(ba.responses, bb.responses, 3 * NN * 4),
              "normalized batches agree");
        npred_batch_free(&ba);
        npred_batch_free(&bb);
    }
    npred_loaders_free(La);
    npred_loaders_free(Lb);
    npred_loader_config_free(&c);
    npred_loader_config_free(&ct);
}

static void test_convert(void)
{
    char h5[1200], tree[1200], folder[1200], zipp[1200], f2[1200];
    snprintf(h5, sizeof h5, "%s", tmp_path("scan.h5"));
    snprintf(tree, sizeof tree, "%s", tmp_path("tree"));
    snprintf(folder, sizeof folder, "%s", tmp_path("converted"));
    snprintf(zipp, sizeof zipp, "%s", tmp_path("static21-4-2-GrayImageNet-x.zip"));
    if (!CHECK_OK(npred_dataset_convert(h5, folder))) return;
    compare_with_tree(folder, tree, 0);
    /* the statistics name mapping of convert_static_h5_dataset_to_folder */
    char p[1400];
    struct stat st;
    snprintf(p, sizeof p, "%s/meta/statistics/responses/all/extra_stat.npy", folder);
    CHECK(stat(p, &st) == 0, "renamed statistic %s", p);
    snprintf(p, sizeof p, "%s/data/images/6.npy", folder);
    CHECK(stat(p, &st) == 0, "one file per trial: %s", p);
    if (CHECK_OK(npred_dataset_convert(h5, zipp))) {
        compare_with_tree(zipp, tree, 0);
        npred_dataset *d = NULL;
        if (CHECK_OK(npred_dataset_open(&d, zipp, NULL))) {
            npred_dataset_info di;
            npred_dataset_get_info(d, &di);
            CHECK(di.is_zip && !strcmp(di.data_key, "21-4-2"), "zip, key from its name: %s", di.data_key);
            npred_dataset_free(d);
        }
    }
    /* folder -> folder works too; existing destinations are refused, nothing is left behind */
    snprintf(f2, sizeof f2, "%s", tmp_path("copy"));
    CHECK_OK(npred_dataset_convert(folder, f2));
    compare_with_tree(f2, tree, 0);
    CHECK(npred_dataset_convert(h5, folder) == NPRED_ERR_IO && strstr(npred_last_error(), "already exists"),
          "existing destination: %s", npred_last_error());
    CHECK(npred_dataset_convert(tmp_path("missing.h5"), tmp_path("out")) != NPRED_OK, "missing source");
    CHECK(stat(tmp_path("out"), &st) != 0, "no output for a failed conversion");
}

/* an HDF5 file without responses, and one that is not HDF5 */
static void test_bad_files(void)
{
    char p[1200];
    snprintf(p, sizeof p, "%s", tmp_path("noresp.h5"));
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    float img[2 * 4] = {0};
    hsize_t d[3] = {2, 2, 2};
    h5_write(f, "images", H5T_NATIVE_FLOAT, 3, d, img);
    H5Fclose(f);
    npred_dataset *ds = NULL;
    CHECK(npred_dataset_open(&ds, p, NULL) != NPRED_OK && strstr(npred_last_error(), "responses"),
          "missing responses named: %s", npred_last_error());
    snprintf(p, sizeof p, "%s", tmp_path("fake.h5"));
    FILE *fp = fopen(p, "w");
    if (fp) {
        fputs("not hdf5", fp);
        fclose(fp);
    }
    CHECK(npred_dataset_open(&ds, p, NULL) == NPRED_ERR_ARG && strstr(npred_last_error(), "HDF5"),
          "not HDF5: %s", npred_last_error());
    /* sizes a few bytes can claim (datasets never written read as fill values) */
    snprintf(p, sizeof p, "%s", tmp_path("huge.h5"));
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t many[2] = {(hsize_t)1 << 21, 3}, big[3] = {2, 16384, 8192};
    hid_t sp = H5Screate_simple(2, many, NULL);
    H5Dclose(H5Dcreate2(f, "responses", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    H5Fclose(f);
    CHECK(npred_dataset_open(&ds, p, NULL) == NPRED_ERR_FORMAT &&
              strstr(npred_last_error(), "/responses claims 2097152 trials; npred reads at most 1048576"),
          "2^21 trials refused: %s", npred_last_error());
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    float resp[2 * 3] = {0};
    hsize_t dr[2] = {2, 3};
    h5_write(f, "responses", H5T_NATIVE_FLOAT, 2, dr, resp);
    sp = H5Screate_simple(3, big, NULL);
    H5Dclose(H5Dcreate2(f, "images", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
    H5Fclose(f);
    CHECK(npred_dataset_open(&ds, p, NULL) != NPRED_OK &&
              strstr(npred_last_error(), "dataset /images: more than the 256 MiB npred reads as one file"),
          "a 512 MiB image refused: %s", npred_last_error());
    npred_dataset_free(ds);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "%s/npred_test_hdf5_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "cannot create a temp folder\n");
        return 1;
    }
    RUN(test_read_hdf5);
    RUN(test_convert);
    RUN(test_bad_files);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return th_summary();
}
