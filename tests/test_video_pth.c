/* Importing the SENSORIUM 2023 kit's trained video models from PyTorch .pth state_dicts
 * (npred_video_model_import_pth, npred import --config): real torch.save files
 * (tests/fixtures/video_pth/, written by its make_pth.py from the three encoder
 * fixtures' parameters) import with every tensor equal to the fixture's, predict the
 * fixtures' eval outputs within their tolerance, keep their sessions in either order
 * and survive a save + load; a missing, extra, mis-shaped, non-finite or half tensor,
 * a config that disagrees with the file and sessions that are not the file's are errors
 * naming what is wrong; the command line does the same. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "io/checkpoint.h"
#include "io/pth.h"
#include "model/video_model.h"
#include "npred/model.h"
#include "npred/video_model.h"

#define PTH_DIR "tests/fixtures/video_pth/"
#define SCAN "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef"

static const char *CASES[] = {"video_gru_encoder", "video_gru_encoder_stacked2d", "video_factorized3d_encoder"};
static char tmpdir[256];

typedef struct {
    th_case c;
    char pth[256];
    char *config; /* the make_video_model arguments of the case */
    int ns, B, C, T, H, W;
    const char *keys[4];
    int nn[4];
} fx;

static int fx_open(fx *f, const char *name)
{
    memset(f, 0, sizeof *f);
    if (!th_case_open(&f->c, name)) return 0;
    snprintf(f->pth, sizeof f->pth, PTH_DIR "%s.pth", name);
    f->config = cJSON_PrintUnformatted(th_get(f->c.json, "args", "make_video_model", NULL));
    cJSON *keys = th_get(f->c.json, "data_keys", NULL);
    f->ns = cJSON_GetArraySize(keys);
    int ok = CHECK(f->config && f->ns >= 1 && f->ns <= 4, "%s: config and sessions", name);
    for (int i = 0; ok && i < f->ns; i++) {
        f->keys[i] = cJSON_GetArrayItem(keys, i)->valuestring;
        f->nn[i] = (int)th_num(f->c.json, -1, "args", "n_neurons", f->keys[i], NULL);
    }
    cJSON *shape = th_get(f->c.json, "args", "input_shape", f->keys[0], NULL);
    ok = ok && CHECK(cJSON_GetArraySize(shape) == 5, "%s: input_shape", name);
    if (ok) {
        f->B = cJSON_GetArrayItem(shape, 0)->valueint, f->C = cJSON_GetArrayItem(shape, 1)->valueint;
        f->T = cJSON_GetArrayItem(shape, 2)->valueint, f->H = cJSON_GetArrayItem(shape, 3)->valueint;
        f->W = cJSON_GetArrayItem(shape, 4)->valueint;
    }
    return ok;
}

static void fx_close(fx *f)
{
    free(f->config);
    th_case_close(&f->c);
}

static const char *sess_file(fx *f, const char *key, const char *a, const char *b)
{
    cJSON *j = b ? th_get(f->c.json, "files", "sessions", key, a, b, NULL) : th_get(f->c.json, "files", "sessions", key, a, NULL);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* predict every clip of session k (B, T', n); NULL after a failed CHECK */
static float *predict(fx *f, npred_video_model *m, int k)
{
    const char *vr = sess_file(f, f->keys[k], "inputs", "videos"), *pr = sess_file(f, f->keys[k], "inputs", "pupil_center");
    float *v = vr ? th_load_f32(&f->c, vr, NULL) : NULL, *p = pr ? th_load_f32(&f->c, pr, NULL) : NULL;
    int T1 = npred_video_model_output_frames(m, f->T);
    float *out = malloc((size_t)f->B * (T1 > 0 ? T1 : 1) * f->nn[k] * sizeof *out);
    int ok = CHECK(v && p && out && T1 > 0, "%s %s: inputs", f->c.name, f->keys[k]) &&
             CHECK_OK(npred_video_model_predict(m, f->keys[k], v, f->B, f->C, f->T, f->H, f->W, p, out));
    free(v), free(p);
    if (!ok) free(out);
    return ok ? out : NULL;
}

/* every tensor of the fixture's state_dict, bit for bit, and nothing else */
static void check_params(fx *f, npred_video_model *m)
{
    cJSON *params = th_get(f->c.json, "files", "params", NULL), *it;
    int n = 0, same = 1;
    cJSON_ArrayForEach(it, params)
    {
        n++;
        int idx = npred_ptable_find(&m->e->t, it->string);
        npred_array sh;
        float *v = th_load_f32(&f->c, it->valuestring, &sh);
        if (!CHECK(idx >= 0 && v, "%s: %s in the model", f->c.name, it->string)) {
            free(v);
            continue;
        }
        size_t cnt = m->e->t.items[idx].count, fcnt = 1;
        for (int d = 0; d < sh.ndim; d++) fcnt *= (size_t)sh.shape[d];
        same &= CHECK(fcnt == cnt &&
                          !memcmp(npred_ptable_ptr(&m->e->t, idx), v, cnt * sizeof(float)),
                      "%s: %s differs from the fixture", f->c.name, it->string);
        free(v);
    }
    CHECK(n == m->e->t.n && same, "%s: %d fixture tensors, %d in the model", f->c.name, n, m->e->t.n);
}

static void import_case(const char *name)
{
    fx f;
    npred_video_model *m = NULL, *r = NULL, *l = NULL;
    float *out[4] = {0};
    if (!fx_open(&f, name)) goto done;
    if (!CHECK_OK(npred_video_model_import_pth(&m, f.pth, f.config, name, f.H, f.W, NULL, NULL, 0, f.B))) goto done;
    /* sessions, shapes and the parameters */
    int c, h, w;
    npred_video_model_input_shape(m, &c, &h, &w);
    CHECK(c == f.C && h == f.H && w == f.W, "%s: input (%d, %d, %d)", name, c, h, w);
    CHECK(npred_video_model_n_sessions(m) == f.ns, "%s: %d sessions", name, npred_video_model_n_sessions(m));
    for (int k = 0; k < f.ns && k < npred_video_model_n_sessions(m); k++)
        CHECK(!strcmp(npred_video_model_session_key(m, k), f.keys[k]) && npred_video_model_session_neurons(m, k) == f.nn[k],
              "%s: session %d is %s with %d neurons", name, k, npred_video_model_session_key(m, k),
              npred_video_model_session_neurons(m, k));
    CHECK(npred_video_model_loader_json(m) == NULL, "no loader record");
    check_params(&f, m);
    /* the fixture's eval outputs */
    int T1 = npred_video_model_output_frames(m, f.T);
    CHECK(T1 == (int)th_num(f.c.json, -1, "args", "output_frames", f.keys[0], NULL), "%s: T' %d", name, T1);
    for (int k = 0; k < f.ns; k++) {
        if (!(out[k] = predict(&f, m, k))) continue;
        const char *rel = sess_file(&f, f.keys[k], "output_eval", NULL);
        CHECK(rel && th_compare_dims(&f.c, "forward", rel, out[k], TH_DIMS(f.B, T1, f.nn[k])),
              "%s %s: the imported model's eval output", name, f.keys[k]);
    }
    /* the sessions named in the other order: the model's order, the same rates */
    const char *rev[4];
    int rnn[4];
    for (int k = 0; k < f.ns; k++) rev[k] = f.keys[f.ns - 1 - k], rnn[k] = f.nn[f.ns - 1 - k];
    if (CHECK_OK(npred_video_model_import_pth(&r, f.pth, f.config, name, f.H, f.W, rev, rnn, f.ns, 1))) {
        CHECK(!strcmp(npred_video_model_session_key(r, 0), rev[0]), "%s: given order", name);
        for (int k = 0; k < f.ns; k++) {
            float *o = predict(&f, r, k);
            CHECK(o && out[k] && !memcmp(o, out[k], (size_t)f.B * T1 * f.nn[k] * sizeof *o),
                  "%s %s: sessions in another order give other rates", name, f.keys[k]);
            free(o);
        }
    }
    /* saved and loaded as an npred model: the same bits */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    if (CHECK_OK(npred_video_model_save(m, dir)) && CHECK_OK(npred_video_model_load(&l, dir, 1)))
        for (int k = 0; k < f.ns; k++) {
            float *o = predict(&f, l, k);
            CHECK(o && out[k] && !memcmp(o, out[k], (size_t)f.B * T1 * f.nn[k] * sizeof *o),
                  "%s %s: saved and loaded, other rates", name, f.keys[k]);
            free(o);
        }
done:
    for (int k = 0; k < 4; k++) free(out[k]);
    npred_video_model_free(m);
    npred_video_model_free(r);
    npred_video_model_free(l);
    fx_close(&f);
}

static void test_gru_equivariant(void) { import_case(CASES[0]); }
static void test_gru_stacked2d(void) { import_case(CASES[1]); }
static void test_factorized3d(void) { import_case(CASES[2]); }

/* ---- errors ---- */

/* the list without `drop` (NULL: all), plus `extra` (NULL: none) of shape dims */
static int copy_list(const npred_tensor_list *src, npred_tensor_list *dst, const char *drop)
{
    npred_tensor_list_init(dst);
    for (size_t i = 0; i < src->n; i++) {
        const npred_tensor *t = &src->items[i];
        if (drop && !strcmp(t->name, drop)) continue;
        if (npred_tensor_list_add(dst, t->name, t->dtype, t->ndim, t->shape, t->data, NULL)) return 0;
    }
    return 1;
}

/* import the list; 1 when it fails with status want and a message holding every
 * string of the NULL-terminated list */
static int fails(const npred_tensor_list *l, const char *config, const char *const *keys, const int *nn, int n,
                 npred_status want, ...)
{
    npred_video_model *m = NULL;
    npred_clear_error();
    npred_status st = npred_video_model_import_tensors(&m, l, "x.pth", config, "cfg.json", 12, 16, keys, nn, n, 1);
    const char *msg = npred_last_error();
    int ok = st == want && m == NULL;
    va_list ap;
    va_start(ap, want);
    for (const char *s; (s = va_arg(ap, const char *));) ok &= strstr(msg, s) != NULL;
    va_end(ap);
    if (!ok) fprintf(stderr, "  got status %d: %s\n", (int)st, msg);
    npred_video_model_free(m);
    return ok;
}

#define FAILS(l, cfg, keys, nn, n, want, ...) \
    CHECK(fails(l, cfg, keys, nn, n, want, __VA_ARGS__, NULL), "the import should fail with status %d, the message naming the strings", want)

/* the config with key set to the JSON value v (top level) */
static char *config_with(const char *config, const char *key, const char *v)
{
    cJSON *j = cJSON_Parse(config);
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    cJSON_AddItemToObject(j, key, cJSON_Parse(v));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static void test_bad_tensors(void)
{
    fx f;
    npred_tensor_list l, x;
    npred_tensor_list_init(&l);
    npred_tensor_list_init(&x);
    if (!fx_open(&f, CASES[0]) || !CHECK_OK(npred_pth_read(f.pth, &l))) goto done;
    /* the unmodified list imports */
    npred_video_model *m = NULL;
    CHECK_OK(npred_video_model_import_tensors(&m, &l, "x.pth", f.config, "cfg.json", 12, 16, NULL, NULL, 0, 1));
    npred_video_model_free(m);
    static const char *const missing[] = {"gru_module.gru.out_gate_hidden.bias",
                                          "core.features.layer1.norm.batch_norm.running_var",
                                          "core.features.layer0.norm.batch_norm.num_batches_tracked",
                                          "core.features.layer0.hermite_conv.rotate_hermite.Rs.2",
                                          "core._input_weights_regularizer.laplace.filter",
                                          "readout.dynamic29623-4-9.source_grid", "shifter.dynamic29515-10-12.mlp.4.bias"};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        npred_tensor_list_free(&x);
        char want[200];
        snprintf(want, sizeof want, "'%s' is missing", missing[i]);
        if (CHECK(copy_list(&l, &x, missing[i]), "copy")) FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_SHAPE, "x.pth", want);
    }
    /* extra tensors: another layer, a _mu the grid predictor replaces */
    int64_t s4[4] = {1, 5, 1, 2}, s1[1] = {2}, s2[2] = {30, 3};
    npred_tensor_list_free(&x);
    if (copy_list(&l, &x, NULL) && !npred_tensor_list_add(&x, "readout.dynamic29515-10-12._mu", NPRED_TENSOR_F32, 4, s4, NULL, NULL))
        FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_SHAPE, "'readout.dynamic29515-10-12._mu' does not belong");
    npred_tensor_list_free(&x);
    if (copy_list(&l, &x, NULL) && !npred_tensor_list_add(&x, "core.features.layer2.norm.batch_norm.bias", NPRED_TENSOR_F32, 1, s1, NULL, NULL))
        FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_SHAPE, "'core.features.layer2.norm.batch_norm.bias' does not belong");
    /* a mis-shaped tensor */
    npred_tensor_list_free(&x);
    if (copy_list(&l, &x, "readout.dynamic29623-4-9.mu_transform.0.weight") &&
        !npred_tensor_list_add(&x, "readout.dynamic29623-4-9.mu_transform.0.weight", NPRED_TENSOR_F32, 2, s2, NULL, NULL))
        FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_SHAPE, "'readout.dynamic29623-4-9.mu_transform.0.weight' has shape (30, 3), "
              "the model expects (30, 2)");
    /* a non-finite value; a half-precision tensor */
    npred_tensor_list_free(&x);
    npred_tensor *t;
    if (copy_list(&l, &x, NULL) && (t = npred_tensor_list_find(&x, "gru_module.gru.update_gate_hidden.weight")) &&
        t->dtype == NPRED_TENSOR_F32) {
        ((float *)t->data)[3] = NAN;
        FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_VALUE, "'gru_module.gru.update_gate_hidden.weight'", "non-finite");
        t->dtype = NPRED_TENSOR_F16;
        FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_UNSUPPORTED, "'gru_module.gru.update_gate_hidden.weight'", "F16");
    }
    /* no readouts; a readout name without a data key */
    npred_tensor_list_free(&x);
    npred_tensor_list_init(&x);
    for (size_t i = 0; i < l.n; i++)
        if (strncmp(l.items[i].name, "readout.", 8))
            npred_tensor_list_add(&x, l.items[i].name, l.items[i].dtype, l.items[i].ndim, l.items[i].shape, l.items[i].data, NULL);
    FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_FORMAT, "x.pth", "no readout.<data_key>.* tensors");
    npred_tensor_list_add(&x, "readout.bias", NPRED_TENSOR_F32, 1, s1, NULL, NULL);
    FAILS(&x, f.config, NULL, NULL, 0, NPRED_ERR_FORMAT, "'readout.bias'", "readout.<data_key>.<name>");
    /* no config */
    FAILS(&l, NULL, NULL, NULL, 0, NPRED_ERR_ARG, "x.pth", "make_video_model arguments");
done:
    npred_tensor_list_free(&l);
    npred_tensor_list_free(&x);
    fx_close(&f);
}

static void test_config_mismatch(void)
{
    fx g, s3;
    npred_tensor_list l, l3;
    npred_tensor_list_init(&l);
    npred_tensor_list_init(&l3);
    int ok = fx_open(&g, CASES[1]) & fx_open(&s3, CASES[2]);
    if (!ok || !CHECK_OK(npred_pth_read(g.pth, &l)) || !CHECK_OK(npred_pth_read(s3.pth, &l3))) goto done;
    /* a GRU in the file, not in the config, and the reverse */
    char *c1 = config_with(g.config, "use_gru", "false");
    FAILS(&l, c1, NULL, NULL, 0, NPRED_ERR_SHAPE, "x.pth: holds gru_module.* tensors", "cfg.json has use_gru false");
    char *c2 = config_with(g.config, "use_shifter", "false");
    FAILS(&l, c2, NULL, NULL, 0, NPRED_ERR_SHAPE, "holds shifter.* tensors", "use_shifter false");
    char *c3 = config_with(s3.config, "use_gru", "true");
    char *c4 = c3 ? config_with(c3, "gru_dict", "{\"input_channels\": 4, \"rec_channels\": 4, \"input_kern\": 3, "
                                "\"rec_kern\": 3, \"gamma_rec\": 0}") : NULL;
    FAILS(&l3, c4, NULL, NULL, 0, NPRED_ERR_SHAPE, "has no gru_module.* tensors", "use_gru true");
    /* another core: the first tensor the model lacks */
    FAILS(&l3, c1, NULL, NULL, 0, NPRED_ERR_SHAPE, "'core._input_weights_regularizer.laplace.filter' is missing");
    /* other hidden channels: a shape that differs */
    cJSON *j = cJSON_Parse(s3.config);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "core_dict"), "hidden_channels", cJSON_CreateNumber(5));
    char *c5 = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    FAILS(&l3, c5, NULL, NULL, 0, NPRED_ERR_SHAPE, "'core.features.layer0.conv_spatial.weight' has shape (4, 3, 1, 5, 5), "
          "the model expects (5, 3, 1, 5, 5)");
    /* a 3D core's input channels from its weights when core_dict does not say */
    j = cJSON_Parse(s3.config);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(j, "core_dict"), "input_channels");
    char *c6 = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    npred_video_model *m = NULL;
    if (CHECK_OK(npred_video_model_import_tensors(&m, &l3, "x.pth", c6, "cfg.json", 12, 16, NULL, NULL, 0, 1))) {
        int c, h, w;
        npred_video_model_input_shape(m, &c, &h, &w);
        CHECK(c == 3 && h == 12 && w == 16, "input (%d, %d, %d) from the weights", c, h, w);
    }
    npred_video_model_free(m);
    /* frame size: both <= 0 is the 2023 frame, one alone is an error */
    m = NULL;
    if (CHECK_OK(npred_video_model_import_tensors(&m, &l3, "x.pth", s3.config, "cfg.json", 0, 0, NULL, NULL, 0, 1))) {
        int c, h, w;
        npred_video_model_input_shape(m, &c, &h, &w);
        CHECK(h == 36 && w == 64, "default frame %d x %d", h, w);
    }
    npred_video_model_free(m);
    m = NULL;
    CHECK(npred_video_model_import_tensors(&m, &l3, "x.pth", s3.config, "cfg.json", 12, 0, NULL, NULL, 0, 1) == NPRED_ERR_ARG &&
              !m, "a frame size of 12 x 0");
    free(c1), free(c2), free(c3), free(c4), free(c5), free(c6);
done:
    npred_tensor_list_free(&l);
    npred_tensor_list_free(&l3);
    fx_close(&g);
    fx_close(&s3);
}

static void test_bad_sessions(void)
{
    fx f;
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    if (!fx_open(&f, CASES[2]) || !CHECK_OK(npred_pth_read(f.pth, &l))) goto done;
    const char *one[1] = {"dynamic29515-10-12"}, *other[2] = {"dynamic29515-10-12", "dynamic1-1-1"};
    int nn1[1] = {5}, nn6[2] = {5, 6}, nn5[2] = {5, 5};
    FAILS(&l, f.config, one, nn1, 1, NPRED_ERR_SHAPE, "the file holds session dynamic29623-4-9", "not among the 1 given");
    FAILS(&l, f.config, other, nn5, 2, NPRED_ERR_SHAPE, "session 'dynamic1-1-1' has no readout.dynamic1-1-1.* tensors",
          "the file holds dynamic29515-10-12, dynamic29623-4-9");
    const char *both[2] = {"dynamic29623-4-9", "dynamic29515-10-12"};
    FAILS(&l, f.config, both, nn6, 2, NPRED_ERR_SHAPE, "session dynamic29515-10-12: the file's readout has 5 neurons, "
          "the data 6");
done:
    npred_tensor_list_free(&l);
    fx_close(&f);
}

static void test_files(void)
{
    fx f;
    if (!fx_open(&f, CASES[0])) return;
    npred_video_model *m = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/absent.pth", tmpdir);
    CHECK(npred_video_model_import_pth(&m, path, f.config, "cfg", 12, 16, NULL, NULL, 0, 1) == NPRED_ERR_IO && !m &&
              strstr(npred_last_error(), "absent.pth"),
          "a missing file: %s", npred_last_error());
    /* not a zip: the .pth reader's error, naming the file */
    CHECK(npred_video_model_import_pth(&m, "tests/fixtures/video_pth/make_pth.py", f.config, "cfg", 12, 16, NULL, NULL,
                                       0, 1) != NPRED_OK && !m && strstr(npred_last_error(), "make_pth.py"),
          "not a .pth: %s", npred_last_error());
    /* the image-model import refuses a video state_dict and says what to do */
    npred_model *sm = NULL;
    CHECK(npred_model_import_pth(&sm, f.pth, NULL, 0, 0, 1) == NPRED_ERR_FORMAT && !sm &&
              strstr(npred_last_error(), "video model") && strstr(npred_last_error(), "make_video_model"),
          "the static import of a video .pth: %s", npred_last_error());
    npred_model_free(sm);
    fx_close(&f);
}

/* ---- the command line ---- */

static void expect_exit(int want, const char *what, const char *msg, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void expect_exit(int want, const char *what, const char *msg, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = th_npred(&out, "%s", args);
    CHECK(rc == want && out && strstr(out, msg), "%s: exit %d (wanted %d) and a message naming '%s'; got:\n%s", what, rc,
          want, msg, out ? out : "");
    free(out);
}

static int write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    int ok = fp && fputs(text, fp) >= 0;
    if (fp) ok &= fclose(fp) == 0;
    return CHECK(ok, "write %s", path);
}

static void test_cli(void)
{
    fx f;
    npred_video_model *a = NULL, *b = NULL;
    if (!fx_open(&f, CASES[0])) return;
    char cfg[400], bad[400], stat_cfg[400], ldr[400], badldr[400], paths[400], out[400], ptxt[600];
    snprintf(cfg, sizeof cfg, "%s/make_video_model.json", tmpdir);
    snprintf(bad, sizeof bad, "%s/no_gru.json", tmpdir);
    snprintf(stat_cfg, sizeof stat_cfg, "%s/static.json", tmpdir);
    snprintf(ldr, sizeof ldr, "%s/loader.json", tmpdir);
    snprintf(badldr, sizeof badldr, "%s/badloader.json", tmpdir);
    snprintf(paths, sizeof paths, "%s/paths.json", tmpdir);
    snprintf(ptxt, sizeof ptxt, "{\"paths\": [\"%s.zip\"]}", SCAN);
    snprintf(out, sizeof out, "%s/cli", tmpdir);
    char *nogru = config_with(f.config, "use_gru", "false");
    if (!write_text(cfg, f.config) || !nogru || !write_text(bad, nogru) ||
        !write_text(stat_cfg, "{\"hidden_channels\": 4, \"layers\": 2}") ||
        !write_text(ldr, "{\"batch_size\": 8, \"frames\": 80, \"include_behavior\": true}") ||
        !write_text(badldr, "{\"frame\": 80}") || !write_text(paths, ptxt))
        goto done;
    char *o = NULL;
    int rc = th_npred(&o, "import %s --config %s --out %s --height 12 --width 16 --dataset %s", f.pth, cfg, out, ldr);
    CHECK(rc == 0 && o && strstr(o, "dynamic29623-4-9: 5 neurons") && strstr(o, "12 x 16"), "npred import: exit %d\n%s",
          rc, o ? o : "");
    free(o);
    /* the folder holds the API's model, with the loader record */
    if (CHECK_OK(npred_video_model_load(&b, out, 2)) &&
        CHECK_OK(npred_video_model_import_pth(&a, f.pth, f.config, "cfg", 12, 16, NULL, NULL, 0, 2))) {
        CHECK(npred_video_model_loader_json(b) && strstr(npred_video_model_loader_json(b), "\"frames\""), "loader record");
        for (int k = 0; k < f.ns; k++) {
            float *pa = predict(&f, a, k), *pb = predict(&f, b, k);
            int T1 = npred_video_model_output_frames(a, f.T);
            CHECK(pa && pb && !memcmp(pa, pb, (size_t)f.B * T1 * f.nn[k] * sizeof *pa), "%s: the CLI's model differs",
                  f.keys[k]);
            free(pa), free(pb);
        }
    }
    rc = th_npred(&o, "info %s", out);
    CHECK(rc == 0 && o && strstr(o, "gru"), "npred info on the import: exit %d\n%s", rc, o ? o : "");
    free(o);
    expect_exit(1, "exists", "--force", "import %s --config %s --out %s --height 12 --width 16", f.pth, cfg, out);
    expect_exit(0, "--force", "imported", "import %s --config %s --out %s --height 12 --width 16 --force", f.pth, cfg, out);
    expect_exit(1, "no --config", "make_video_model arguments", "import %s --out %s/x", f.pth, tmpdir);
    expect_exit(1, "config without a GRU", "use_gru false", "import %s --config %s --out %s/x --height 12 --width 16",
                f.pth, bad, tmpdir);
    expect_exit(1, "an image-model config", "make_video_model arguments", "import %s --config %s --out %s/x", f.pth, stat_cfg, tmpdir);
    expect_exit(2, "--stats", "--stats is for image models", "import %s --config %s --out %s/x --stats %s", f.pth, cfg,
                tmpdir, SCAN);
    expect_exit(2, "--data on an image model", "--data and --dataset are for video models",
                "import %s --config %s --out %s/x --data %s", f.pth, stat_cfg, tmpdir, SCAN);
    expect_exit(2, "--data and --height", "not both", "import %s --config %s --out %s/x --data %s --height 12 --width 16",
                f.pth, cfg, tmpdir, SCAN);
    expect_exit(2, "--data and other paths", "name different scans",
                "import %s --config %s --out %s/x --data %s --dataset %s", f.pth, cfg, tmpdir, SCAN, paths);
    expect_exit(1, "a scan of another session in --dataset's paths", "has no readout.dynamic00000-1-1-Video",
                "import %s --config %s --out %s/x --dataset %s", f.pth, cfg, tmpdir, paths);
    expect_exit(2, "--loader (now --dataset)", "--loader", "import %s --config %s --out %s/x --loader %s", f.pth, cfg,
                tmpdir, ldr);
    expect_exit(1, "a scan of another session", "has no readout.dynamic00000-1-1-Video",
                "import %s --config %s --out %s/x --data %s", f.pth, cfg, tmpdir, SCAN);
    expect_exit(1, "a bad loader", "frame", "import %s --config %s --out %s/x --dataset %s --height 12 --width 16", f.pth,
                cfg, tmpdir, badldr);
    struct stat sb;
    char x[512];
    snprintf(x, sizeof x, "%s/x/model.safetensors", tmpdir);
    CHECK(stat(x, &sb) != 0, "a failed import wrote %s", x);
done:
    free(nogru);
    npred_video_model_free(a);
    npred_video_model_free(b);
    fx_close(&f);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/npred-test-video-pth-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FAIL: no temp folder\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_gru_equivariant);
    RUN(test_gru_stacked2d);
    RUN(test_factorized3d);
    RUN(test_bad_tensors);
    RUN(test_config_mismatch);
    RUN(test_bad_sessions);
    RUN(test_files);
    RUN(test_cli);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    th_shell(NULL, cmd);
    return th_summary();
}
