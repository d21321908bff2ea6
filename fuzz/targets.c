/* Fuzz targets (see targets.h). */
#include "targets.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../cli/png_read.h"
#include "data/h5fs.h"
#include "io/pickle.h"
#include "io/checkpoint.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/video_encoder.h"
#include "model/video_model.h"
#include "npred/data.h"
#include "npred/insilico.h"
#include "npred/npy.h"
#include "npred/results.h"
#include "npred/video.h"
#include "npred/video_train.h"
#include "train/trainer.h"

/* A failed check returns its line number. */
#define ENSURE(cond)                                                                                                   \
    do {                                                                                                               \
        if (!(cond)) return __LINE__;                                                                                  \
    } while (0)

/* A rejected input must say why. */
static int rejected_with_message(npred_status s)
{
    return s != NPRED_OK && npred_last_error()[0] != 0;
}

/* The bytes as a NUL-terminated string (JSON parsers take text). */
static char *as_text(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, d, n);
    s[n] = 0;
    return s;
}

/* ---------------------------------------------------------------- npy */
static int same_array(const npred_array *a, const npred_array *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim || a->itemsize != b->itemsize || a->count != b->count) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    size_t nb = a->count * a->itemsize;
    return nb == 0 || memcmp(a->data, b->data, nb) == 0;
}

static int fuzz_npy(const uint8_t *d, size_t n)
{
    npred_array a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    npred_clear_error();
    npred_status s = npred_npy_parse(d, n, "fuzz.npy", &a);
    if (s != NPRED_OK) {
        npred_array_free(&a);
        ENSURE(rejected_with_message(s));
        return 0;
    }
    int bad = 0;
    void *buf = NULL;
    size_t len = 0;
    if (npred_npy_serialize(&a, &buf, &len) != NPRED_OK) bad = __LINE__;
    else if (npred_npy_parse(buf, len, "fuzz-roundtrip.npy", &b) != NPRED_OK) bad = __LINE__;
    else if (!same_array(&a, &b)) bad = __LINE__;
    free(buf);
    npred_array_free(&a);
    npred_array_free(&b);
    return bad;
}

/* ---------------------------------------------------------------- pickle */
static int fuzz_pickle(const uint8_t *d, size_t n)
{
    npred_pickle *p = NULL;
    npred_clear_error();
    npred_status s = npred_pickle_load(d, n, "fuzz.pkl", &p);
    int bad = 0;
    if (s != NPRED_OK) {
        if (!rejected_with_message(s)) bad = __LINE__;
    } else if (!npred_pickle_root(p)) {
        bad = __LINE__;
    }
    npred_pickle_free(p);
    return bad;
}

/* ---------------------------------------------------------------- tensor lists */
static int valid_list(const npred_tensor_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const npred_tensor *t = &l->items[i];
        int64_t numel = npred_tensor_numel(t->ndim, t->shape);
        if (!t->name || numel < 0) return 0;
        if ((size_t)numel * npred_tensor_dtype_size(t->dtype) != t->nbytes) return 0;
        if (t->nbytes && !t->data) return 0;
    }
    return 1;
}

static int same_list(const npred_tensor_list *a, const npred_tensor_list *b)
{
    if (a->n != b->n || a->n_meta != b->n_meta) return 0;
    for (size_t i = 0; i < a->n; i++) {
        const npred_tensor *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim || x->nbytes != y->nbytes) return 0;
        for (int k = 0; k < x->ndim; k++)
            if (x->shape[k] != y->shape[k]) return 0;
        if (x->nbytes && memcmp(x->data, y->data, x->nbytes)) return 0;
    }
    for (size_t i = 0; i < a->n_meta; i++)
        if (strcmp(a->meta_keys[i], b->meta_keys[i]) || strcmp(a->meta_vals[i], b->meta_vals[i])) return 0;
    return 1;
}

static int fuzz_pth(const uint8_t *d, size_t n)
{
    npred_tensor_list l;
    npred_clear_error();
    npred_status s = npred_pth_parse(d, n, "fuzz.pth", &l);
    int bad = 0;
    if (s != NPRED_OK) {
        if (!rejected_with_message(s)) bad = __LINE__;
    } else if (!valid_list(&l)) {
        bad = __LINE__;
    }
    npred_tensor_list_free(&l);
    return bad;
}

static int fuzz_safetensors(const uint8_t *d, size_t n)
{
    npred_tensor_list a, b;
    npred_clear_error();
    npred_status s = npred_safetensors_parse(d, n, "fuzz.safetensors", &a);
    if (s != NPRED_OK) {
        npred_tensor_list_free(&a);
        ENSURE(rejected_with_message(s));
        return 0;
    }
    int bad = 0;
    void *buf = NULL;
    size_t len = 0;
    npred_tensor_list_init(&b);
    if (!valid_list(&a)) bad = __LINE__;
    else if (npred_safetensors_serialize(&a, &buf, &len) != NPRED_OK) bad = __LINE__;
    else if (npred_safetensors_parse(buf, len, "fuzz-roundtrip.safetensors", &b) != NPRED_OK) bad = __LINE__;
    else if (!same_list(&a, &b)) bad = __LINE__;
    free(buf);
    npred_tensor_list_free(&a);
    npred_tensor_list_free(&b);
    return bad;
}

/* ---------------------------------------------------------------- dataset (.zip file tree) */
static char zip_dir[4096];

static void remove_zip_dir(void)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/static11111-2-3-GrayImageNet-fuzz.zip", zip_dir);
    unlink(p);
    rmdir(zip_dir);
}

/* The bytes as a SENSORIUM .zip, opened the way `npred dataset` does. */
static int fuzz_dataset_zip(const uint8_t *d, size_t n)
{
    if (!zip_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(zip_dir, sizeof zip_dir, "%s/npred-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        ENSURE(mkdtemp(zip_dir) != NULL);
        atexit(remove_zip_dir);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/static11111-2-3-GrayImageNet-fuzz.zip", zip_dir);
    FILE *f = fopen(path, "wb");
    ENSURE(f != NULL);
    size_t w = n ? fwrite(d, 1, n, f) : 0;
    ENSURE(fclose(f) == 0 && w == n);
    npred_dataset *ds = NULL;
    npred_clear_error();
    npred_status s = npred_dataset_open(&ds, path, NULL);
    int bad = 0;
    if (s != NPRED_OK) {
        if (!rejected_with_message(s) || ds) bad = __LINE__;
    } else {
        npred_dataset_info info;
        npred_dataset_get_info(ds, &info);
        if (info.n_trials <= 0 || info.n_neurons <= 0 || !npred_dataset_field(ds, NPRED_FIELD_IMAGES) ||
            !npred_dataset_field(ds, NPRED_FIELD_RESPONSES))
            bad = __LINE__;
    }
    npred_dataset_free(ds);
    return bad;
}

/* ---------------------------------------------------------------- JSON configs */
/* Parse text as one kind of config and print the resolved config back as JSON
 * (NULL with *s the status when it does not parse or print). */
typedef char *(*reprint_fn)(const char *text, const char *name, npred_status *s);

static char *reprint_model(const char *text, const char *name, npred_status *s)
{
    npred_model_config c;
    memset(&c, 0, sizeof c);
    if ((*s = npred_model_config_parse(&c, text, name))) return NULL;
    cJSON *j = npred_model_config_to_json(&c);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return t;
}

static char *reprint_trainer(const char *text, const char *name, npred_status *s)
{
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    if ((*s = npred_trainer_config_parse(&c, text, name))) return NULL;
    cJSON *j = npred_trainer_config_to_json(&c);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return t;
}

/* A rejected input must leave a message; what a saved model or run stores must load
 * back to the same resolved config. */
static int config_round_trip(reprint_fn reprint, const uint8_t *d, size_t n)
{
    char *text = as_text(d, n);
    ENSURE(text != NULL);
    npred_clear_error();
    npred_status s = NPRED_OK;
    char *t1 = reprint(text, "fuzz.json", &s);
    free(text);
    if (s != NPRED_OK) {
        ENSURE(rejected_with_message(s));
        return 0;
    }
    int bad = 0;
    if (!t1) bad = __LINE__;
    else {
        char *t2 = reprint(t1, "fuzz-roundtrip.json", &s);
        if (s != NPRED_OK) bad = __LINE__;
        else if (!t2 || strcmp(t1, t2)) bad = __LINE__;
        free(t2);
    }
    free(t1);
    return bad;
}

static int fuzz_model_config(const uint8_t *d, size_t n)
{
    return config_round_trip(reprint_model, d, n);
}

static char *reprint_video_trainer(const char *text, const char *name, npred_status *s)
{
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    if ((*s = npred_video_trainer_config_parse(&c, text, name))) return NULL;
    return npred_video_trainer_config_json(&c);
}

/* the same text as a static and as a video trainer config (the kit's two standard_trainers) */
static int fuzz_trainer_config(const uint8_t *d, size_t n)
{
    int bad = config_round_trip(reprint_trainer, d, n);
    return bad ? bad : config_round_trip(reprint_video_trainer, d, n);
}

static char *reprint_loader(const char *text, const char *name, npred_status *s)
{
    (void)name; /* the loader parser names its input "loader config" */
    npred_loader_config c;
    npred_loader_config_init(&c);
    char **paths = NULL;
    size_t n_paths = 0;
    char *t = NULL;
    if (!(*s = npred_loader_config_parse(&c, text, &paths, &n_paths))) {
        int ok = 1;
        for (size_t i = 0; i < n_paths; i++)
            if (!paths[i]) ok = 0;
        if (ok) t = npred_loader_config_json(&c);
    }
    npred_loader_paths_free(paths, n_paths);
    npred_loader_config_free(&c);
    return t;
}

/* what `npred train` keeps of the loader options (config.json, read on --resume) loads
 * back to the same options */
static int fuzz_dataset_config(const uint8_t *d, size_t n)
{
    return config_round_trip(reprint_loader, d, n);
}

/* ---------------------------------------------------------------- MEI config */
static int fuzz_mei_config(const uint8_t *d, size_t n)
{
    char *text = as_text(d, n);
    ENSURE(text != NULL);
    npred_mei_config c;
    npred_clear_error();
    npred_status s = npred_mei_config_parse(&c, text, "fuzz.json");
    free(text);
    if (s != NPRED_OK) {
        ENSURE(rejected_with_message(s) && strstr(npred_last_error(), "fuzz.json"));
        return 0;
    }
    /* what is accepted is a config the optimiser takes */
    ENSURE(npred_mei_config_validate(&c) == NPRED_OK);
    ENSURE(npred_mei_max_steps(&c) == c.num_iterations + 1 && c.num_iterations >= 0);
    ENSURE(c.jitter_y >= 0 && c.jitter_x >= 0 && (!c.blur || (isfinite(c.sigma_y) && isfinite(c.sigma_x))));
    return 0;
}

/* ---------------------------------------------------------------- submission CSV */
/* The bytes up to the first NUL are the submission, the rest the ground truth. */
static int fuzz_submission_csv(const uint8_t *d, size_t n)
{
    const uint8_t *nul = memchr(d, 0, n);
    size_t ns = nul ? (size_t)(nul - d) : n;
    const char *truth = nul ? (const char *)nul + 1 : "";
    size_t nt = nul ? n - ns - 1 : 0;
    npred_score sc;
    npred_clear_error();
    npred_status s = npred_submission_score_text((const char *)d, ns, "fuzz-sub.csv", truth, nt, "fuzz-gt.csv", &sc);
    if (s != NPRED_OK) {
        ENSURE(rejected_with_message(s) &&
               (strstr(npred_last_error(), "fuzz-sub.csv") || strstr(npred_last_error(), "fuzz-gt.csv")));
        return 0;
    }
    ENSURE(sc.n_trials >= 2 && sc.n_neurons >= 1 && sc.n_images >= 1 && sc.n_images <= sc.n_trials);
    ENSURE(sc.n_fev_kept >= 0 && sc.n_fev_kept <= sc.n_neurons);
    /* correlations are in [-1, 1] (NaN where a neuron's values are constant) */
    ENSURE(isnan(sc.single_trial_corr) || fabs(sc.single_trial_corr) <= 1 + 1e-6);
    ENSURE(isnan(sc.corr_to_average) || fabs(sc.corr_to_average) <= 1 + 1e-6);
    ENSURE(!isinf(sc.feve)); /* above 1 where predictions beat the noise ceiling's estimate */
    return 0;
}

/* ---------------------------------------------------------------- PNG (npred predict --raw) */
static int fuzz_png(const uint8_t *d, size_t n)
{
    float *img = NULL;
    int c = 0, h = 0, w = 0;
    npred_clear_error();
    npred_status s = cli_png_decode(d, n, "fuzz.png", &img, &c, &h, &w);
    if (s != NPRED_OK) {
        free(img);
        ENSURE(rejected_with_message(s) && strstr(npred_last_error(), "fuzz.png"));
        return 0;
    }
    int bad = 0;
    if (!img || (c != 1 && c != 3) || h < 1 || w < 1 || (long)h * w > CLI_PNG_MAX_PIXELS) bad = __LINE__;
    for (size_t i = 0; !bad && i < (size_t)c * h * w; i++)
        if (!(img[i] >= 0 && img[i] <= 255 && img[i] == floorf(img[i]))) bad = __LINE__;
    free(img);
    return bad;
}

/* ---------------------------------------------------------------- HDF5 dataset */
/* The bytes as an HDF5 file image seen as the SENSORIUM file tree (the .h5 path of
 * `npred dataset` / `npred convert`); every virtual file must read as a valid .npy
 * or be rejected with a message. Reads at most 64 files per input (a file with many
 * trials has as many per-row files, all read alike). */
static int fuzz_hdf5(const uint8_t *d, size_t n)
{
    npred_h5fs *h = NULL;
    npred_clear_error();
    npred_status s = npred_h5fs_open_image(&h, d, n, "fuzz.h5");
    if (s != NPRED_OK) {
        ENSURE(!h && rejected_with_message(s) && strstr(npred_last_error(), "fuzz.h5"));
        return 0;
    }
    int bad = 0;
    size_t count = npred_h5fs_count(h);
    for (size_t i = 0; i < count && i < 64 && !bad; i++) {
        const char *name = npred_h5fs_name(h, i);
        if (!name || !*name) {
            bad = __LINE__;
            break;
        }
        void *buf = NULL;
        size_t len = 0;
        npred_clear_error();
        s = npred_h5fs_read(h, i, &buf, &len);
        if (s != NPRED_OK) {
            if (!rejected_with_message(s) || !strstr(npred_last_error(), "fuzz.h5")) bad = __LINE__;
        } else {
            npred_array a;
            memset(&a, 0, sizeof a);
            if (npred_npy_parse(buf, len, name, &a) != NPRED_OK) bad = __LINE__;
            npred_array_free(&a);
        }
        free(buf);
    }
    npred_h5fs_free(h);
    return bad;
}

/* ---------------------------------------------------------------- video configs */
/* The same JSON text as a mouse_video_loader config and as make_video_model
 * arguments. What the loader parser accepts has the ranges the loader needs; a
 * model config it accepts and that is small enough builds an encoder for small
 * clips (1 session, 3 neurons), whose eval forward on zeros is finite. */
static int small_video_model(const npred_video_encoder_config *v)
{
    int hid = v->core2d ? v->core2d_cfg.hidden_channels * (v->core2d_cfg.rot_eq ? v->core2d_cfg.num_rotations : 1)
                        : v->core.hidden_channels;
    int layers = v->core2d ? v->core2d_cfg.layers : v->core.layers;
    int kern = v->core2d ? v->core2d_cfg.input_kern : (v->core.in_kh > v->core.in_kw ? v->core.in_kh : v->core.in_kw);
    for (int l = 0; v->core2d && l < layers - 1 && l < NPRED_CORE_MAXLAYERS; l++)
        if (v->core2d_cfg.hidden_kern[l] > kern) kern = v->core2d_cfg.hidden_kern[l];
    if (!v->core2d && v->core.hid_kh > kern) kern = v->core.hid_kh;
    if (!v->core2d && v->core.hid_kw > kern) kern = v->core.hid_kw;
    /* kernels up to 15 wide: a legal 350 x 350 kernel needs gigabytes of im2col; a legal
     * hidden_padding of 1203 grows 24 x 24 frames to 2428 x 2428 (1.1 GB of activations),
     * as would a large dilation (whose default padding grows with it) or upsampling */
    if (v->core2d) {
        const npred_core_config *c = &v->core2d_cfg;
        if (c->hidden_padding > 15 || c->hidden_dilation > 4 || (c->rot_eq && (c->upsampling > 4 || c->num_rotations > 8)))
            return 0;
    } else if (v->core.spatial_dilation > 4 || v->core.temporal_dilation > 4) {
        return 0;
    }
    return kern <= 15 && hid > 0 && hid <= 32 && layers > 0 && layers <= 4 &&
           (!v->use_gru || (v->gru.rec_channels <= 16 && v->gru.input_kern <= 9 && v->gru.rec_kern <= 9)) &&
           (!v->use_shifter || (v->shift_layers <= 4 && v->hidden_channels_shifter <= 32)) &&
           (!v->predicted_grid || (v->gmp_hidden_layers <= 3 && v->gmp_hidden_features <= 64));
}

static int fuzz_video_config(const uint8_t *d, size_t n)
{
    char *text = as_text(d, n);
    ENSURE(text != NULL);
    int bad = 0;

    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    char **paths = NULL;
    size_t n_paths = 0;
    npred_clear_error();
    npred_status s = npred_video_loader_config_parse(&lc, text, &paths, &n_paths);
    if (s != NPRED_OK) {
        if (!rejected_with_message(s)) bad = __LINE__;
    } else {
        /* any offset is valid: < 0 draws a random one (as the kit's Subsequence); batch_size
         * 0 is "not set", refused by npred_video_loaders_open */
        if (!(lc.batch_size >= 0 && lc.frames > 0 && isfinite(lc.scale) && lc.scale > 0))
            bad = __LINE__;
        for (size_t i = 0; i < n_paths; i++)
            if (!paths[i]) bad = __LINE__;
    }
    npred_loader_paths_free(paths, n_paths);
    npred_video_loader_config_free(&lc);

    cJSON *obj = cJSON_Parse(text);
    free(text);
    if (!obj || bad) {
        cJSON_Delete(obj);
        return bad;
    }
    npred_video_encoder_config vc;
    npred_clear_error();
    s = npred_video_encoder_config_from_cjson(&vc, obj, "fuzz.json");
    cJSON_Delete(obj);
    if (s != NPRED_OK) {
        ENSURE(rejected_with_message(s) && strstr(npred_last_error(), "fuzz.json"));
        return 0;
    }
    if (!small_video_model(&vc)) return 0;
    int C = vc.core2d ? vc.core2d_cfg.input_channels : vc.core.input_channels;
    if (C <= 0 || C > 4) return 0;
    const char *key = "fuzz-session";
    int nn = 3, T = 12, H = 24, W = 24;
    npred_video_encoder e;
    npred_clear_error();
    s = npred_video_encoder_create(&e, &vc, C, T, H, W, 1, &key, &nn, 1);
    if (s != NPRED_OK) {
        ENSURE(rejected_with_message(s));
        return 0;
    }
    size_t nv = (size_t)C * T * H * W;
    float *videos = calloc(nv, sizeof(float)), *pupil = calloc((size_t)2 * T, sizeof(float));
    float *out = malloc((size_t)T * nn * sizeof(float));
    if (!videos || !pupil || !out) bad = __LINE__;
    else {
        s = npred_video_encoder_forward(&e, 0, videos, pupil, 1, 0, NULL, NULL, out);
        if (s != NPRED_OK) {
            if (!rejected_with_message(s)) bad = __LINE__;
        } else if (e.out_t < 1 || e.out_t > T) bad = __LINE__;
        else
            for (int i = 0; i < e.out_t * nn; i++)
                if (!isfinite(out[i]) || out[i] < 0) bad = __LINE__;
    }
    free(videos), free(pupil), free(out);
    npred_video_encoder_free(&e);
    return bad;
}

/* ---------------------------------------------------------------- video_pth */
/* The import of the kit's trained video models: a make_video_model config, a NUL byte,
 * then a .pth (its state_dict). A small model (as video_config) is built and filled from
 * the file; a rejected file must say why, an accepted one leaves every value finite. */
static int fuzz_video_pth(const uint8_t *d, size_t n)
{
    const uint8_t *nul = memchr(d, 0, n);
    if (!nul) return 0;
    char *text = as_text(d, (size_t)(nul - d));
    ENSURE(text != NULL);
    cJSON *obj = cJSON_Parse(text);
    npred_video_encoder_config vc;
    int small = obj && npred_video_encoder_config_from_cjson(&vc, obj, "fuzz.json") == NPRED_OK && small_video_model(&vc);
    int C = small ? (vc.core2d ? vc.core2d_cfg.input_channels : vc.core.input_channels) : 0;
    cJSON_Delete(obj);
    npred_tensor_list l;
    npred_clear_error();
    npred_status s = npred_pth_parse(nul + 1, n - (size_t)(nul + 1 - d), "fuzz.pth", &l);
    int bad = 0;
    if (s != NPRED_OK) {
        if (!rejected_with_message(s)) bad = __LINE__;
    } else if (small && C >= 1 && C <= 4) {
        npred_video_model *m = NULL;
        npred_clear_error();
        s = npred_video_model_import_tensors(&m, &l, "fuzz.pth", text, "fuzz.json", 12, 16, NULL, NULL, 0, 1);
        if (s != NPRED_OK) {
            if (!rejected_with_message(s) || m) bad = __LINE__;
        } else if (npred_video_model_n_sessions(m) < 1) {
            bad = __LINE__;
        } else {
            const npred_ptable *t = &m->e->t;
            for (int i = 0; i < t->n && !bad; i++) {
                const float *v = npred_ptable_ptr(t, i);
                for (size_t k = 0; k < t->items[i].count; k++)
                    if (!isfinite(v[k])) bad = __LINE__;
            }
        }
        npred_video_model_free(m);
    }
    npred_tensor_list_free(&l);
    free(text);
    return bad;
}

const npred_fuzz_target npred_fuzz_targets[] = {
    {"npy", fuzz_npy},
    {"pickle", fuzz_pickle},
    {"pth", fuzz_pth},
    {"safetensors", fuzz_safetensors},
    {"dataset_zip", fuzz_dataset_zip},
    {"model_config", fuzz_model_config},
    {"trainer_config", fuzz_trainer_config},
    {"dataset_config", fuzz_dataset_config},
    {"mei_config", fuzz_mei_config},
    {"submission_csv", fuzz_submission_csv},
    {"png", fuzz_png},
    {"hdf5", fuzz_hdf5},
    {"video_config", fuzz_video_config},
    {"video_pth", fuzz_video_pth},
    {NULL, NULL},
};

const npred_fuzz_target *npred_fuzz_find(const char *name)
{
    for (const npred_fuzz_target *t = npred_fuzz_targets; t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}
