/* Whole encoders: the sensorium fixtures (two sessions, cortex grid predictor,
 * shifter), the pretrained checkpoint, Adam on a whole model, save/load. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "model/model.h"
#include "train/adam.h"
#include "train/loss.h"

static const char *const NO_SKIP[] = {NULL};

/* compare every file of files.sessions.<key>.<group> with the table (values or grads) */
static void compare_session_table(th_case *c, npred_ptable *t, const char *key, const char *group, int grads)
{
    cJSON *g = th_get(c->json, "files", "sessions", key, group, NULL), *it;
    int compared = 0;
    cJSON_ArrayForEach(it, g)
    {
        if (!strcmp(it->string, "images") || !strcmp(it->string, "pupil_center")) continue;
        compared++;
        int idx = npred_ptable_find(t, it->string);
        if (!CHECK(idx >= 0, "no table entry %s", it->string)) continue;
        const float *v = grads ? npred_ptable_gradptr(t, idx) : npred_ptable_ptr(t, idx);
        if (!CHECK(v != NULL, "%s has no gradient", it->string)) continue;
        th_compare_dims(c, grads ? "grads" : "forward", it->valuestring, v, t->items[idx].ndim, t->items[idx].shape);
    }
    CHECK(compared > 0, "%s: files.sessions.%s.%s lists no table entry", c->name, key, group);
}

static void run_encoder_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *args = th_get(c.json, "args", NULL);
    cJSON *bk = th_get(args, "builder_kwargs", NULL);
    char *cfg = cJSON_PrintUnformatted(bk);
    cJSON *keys = th_get(args, "data_keys", NULL);
    int ns = cJSON_GetArraySize(keys), maxb = 0, in_c = 0, in_h = 0, in_w = 0;
    npred_model_session ses[8];
    if (!CHECK(ns >= 1 && ns <= 8, "%s: %d data keys (1 to 8 expected)", name, ns)) ns = 0;
    for (int i = 0; i < ns; i++) {
        const char *k = cJSON_GetArrayItem(keys, i)->valuestring;
        ses[i] = (npred_model_session){k, (int)th_num(args, 0, "n_neurons", k, NULL), NULL, 0, NULL, NULL};
        cJSON *shape = th_get(args, "input_shape", k, NULL);
        int b = cJSON_GetArrayItem(shape, 0)->valueint;
        in_c = cJSON_GetArrayItem(shape, 1)->valueint;
        in_h = cJSON_GetArrayItem(shape, 2)->valueint;
        in_w = cJSON_GetArrayItem(shape, 3)->valueint;
        if (b > maxb) maxb = b;
    }
    /* source grids come with params/ (buffers); coordinates are still needed to create */
    double *coords[8] = {0};
    for (int i = 0; i < ns; i++) {
        char rel[256];
        npred_array sh;
        snprintf(rel, sizeof rel, "%s/cell_motor_coordinates.npy", ses[i].key);
        coords[i] = th_load_f64(&c, rel, &sh);
        ses[i].coords = coords[i];
        ses[i].coord_dims = sh.ndim == 2 ? (int)sh.shape[1] : 0;
    }
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, name, in_c, in_h, in_w, ses, ns, maxb, 1))) goto out;
    npred_ptable *t = npred_model_table(m);
    CHECK(th_load_table(&c, t, "params", "", NO_SKIP) == t->n, "%s: every table entry comes from the fixture (%d)",
          name, t->n);
    /* eval outputs on the initial state, every session */
    for (int i = 0; i < ns; i++) {
        const char *k = ses[i].key;
        char rel[256];
        npred_array is;
        snprintf(rel, sizeof rel, "%s/images.npy", k);
        float *img = th_load_f32(&c, rel, &is);
        snprintf(rel, sizeof rel, "%s/pupil_center.npy", k);
        float *pc = th_get(c.json, "files", "sessions", k, "pupil_center", NULL) ? th_load_f32(&c, rel, NULL) : NULL;
        int B = img ? (int)is.shape[0] : 0;
        float *out = calloc((size_t)B * ses[i].n_neurons + 1, sizeof *out);
        if (img && CHECK_OK(npred_model_predict(m, k, img, B, pc, NULL, out))) {
            snprintf(rel, sizeof rel, "%s/output_eval.npy", k);
            th_compare_dims(&c, "forward", rel, out, TH_DIMS(B, ses[i].n_neurons));
        }
        free(img), free(pc), free(out);
    }
    /* train step per session, from zeroed gradients */
    for (int i = 0; i < ns; i++) {
        const char *k = ses[i].key;
        int n = ses[i].n_neurons;
        char rel[256];
        npred_array is;
        snprintf(rel, sizeof rel, "%s/images.npy", k);
        float *img = th_load_f32(&c, rel, &is);
        snprintf(rel, sizeof rel, "%s/responses.npy", k);
        float *resp = th_load_f32(&c, rel, NULL);
        snprintf(rel, sizeof rel, "%s/noise.npy", k);
        float *noise = th_load_f32(&c, rel, NULL);
        int has_pc = th_get(c.json, "files", "sessions", k, "pupil_center", NULL) != NULL;
        snprintf(rel, sizeof rel, "%s/pupil_center.npy", k);
        float *pc = has_pc ? th_load_f32(&c, rel, NULL) : NULL;
        int B = img ? (int)is.shape[0] : 0;
        float *out = calloc((size_t)B * n + 1, sizeof *out), *dout = calloc((size_t)B * n + 1, sizeof *dout);
        float *dimg = calloc(is.count + 1, sizeof *dimg), *dpc = calloc((size_t)B * 2 + 1, sizeof *dpc);
        char sk[128];
        if (!img || !resp || !noise) goto next;
        npred_ptable_zero_grad(t);
        if (!CHECK_OK(npred_model_forward(m, i, img, pc, NULL, B, 1, NULL, noise, out))) goto next;
        snprintf(rel, sizeof rel, "%s/output_train.npy", k);
        th_compare_dims(&c, "forward", rel, out, TH_DIMS(B, n));
        snprintf(rel, sizeof rel, "%s/intermediates/core_output.npy", k);
        th_compare_dims(&c, "forward", rel, m->core.output, TH_DIMS(B, m->core.out_c, m->core.out_h, m->core.out_w));
        snprintf(rel, sizeof rel, "%s/intermediates/readout_output.npy", k);
        th_compare_dims(&c, "forward", rel, m->s[i].y, TH_DIMS(B, n));
        if (has_pc) {
            snprintf(rel, sizeof rel, "%s/intermediates/shift.npy", k);
            th_compare_dims(&c, "forward", rel, m->s[i].shift, TH_DIMS(B, 2));
        }
        snprintf(sk, sizeof sk, "%s/loss_scale", k);
        double scale = th_num(c.json, NAN, "scalars", sk, NULL);
        double pois = NAN;
        CHECK_OK(npred_loss_poisson_forward(&pois, out, resp, B, n, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
        double creg, rreg;
        npred_model_regularizer_parts(m, i, &creg, &rreg);
        snprintf(sk, sizeof sk, "%s/poisson", k);
        double want = th_num(c.json, NAN, "scalars", sk, NULL);
        CHECK(fabs(pois - want) <= 1e-4 * fabs(want), "%s poisson %.8g want %.8g", k, pois, want);
        snprintf(sk, sizeof sk, "%s/core_reg", k);
        want = th_num(c.json, NAN, "scalars", sk, NULL);
        CHECK(fabs(creg - want) <= 1e-4 * fabs(want), "%s core_reg %.8g want %.8g", k, creg, want);
        snprintf(sk, sizeof sk, "%s/readout_reg", k);
        want = th_num(c.json, NAN, "scalars", sk, NULL);
        CHECK(fabs(rreg - want) <= 1e-4 * fabs(want), "%s readout_reg %.8g want %.8g", k, rreg, want);
        double dl = scale;
        CHECK_OK(npred_loss_poisson_backward(dout, &dl, out, resp, B, n, NPRED_LOSS_SUM, NPRED_POISSON_EPS));
        CHECK_OK(npred_model_backward(m, dout, 0, dimg, has_pc ? dpc : NULL));
        npred_model_regularizer(m, i, 1.0, 0);
        compare_session_table(&c, t, k, "grads", 1);
        snprintf(rel, sizeof rel, "%s/grads/images.npy", k);
        th_compare_dims(&c, "grads", rel, dimg, is.ndim, is.shape);
        if (has_pc) {
            snprintf(rel, sizeof rel, "%s/grads/pupil_center.npy", k);
            th_compare_dims(&c, "grads", rel, dpc, TH_DIMS(B, 2));
        }
        compare_session_table(&c, t, k, "buffers_after", 0);
    next:
        free(img), free(resp), free(noise), free(pc), free(out), free(dout), free(dimg), free(dpc);
    }
out:
    for (int i = 0; i < ns; i++) free(coords[i]);
    npred_model_free(m);
    free(cfg);
    th_case_close(&c);
}

static void test_encoder_sensorium(void) { run_encoder_case("encoder_sensorium"); }
static void test_encoder_shifter(void) { run_encoder_case("encoder_shifter"); }

static int have_checkpoints(void)
{
    struct stat sb;
    return stat("../shared/checkpoints/sensorium_sota_model.pth", &sb) == 0;
}

static void test_checkpoint_sota_formula(void)
{
    th_case c;
    if (!th_case_open(&c, "checkpoint_sota_formula")) return;
    if (!have_checkpoints()) {
        th_skip("../shared/checkpoints absent");
        th_case_close(&c);
        return;
    }
    npred_model *m = NULL;
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs);
    if (x && CHECK_OK(npred_model_import_pth(&m, "../shared/checkpoints/sensorium_sota_model.pth", NULL,
                                             (int)xs.shape[2], (int)xs.shape[3], 2))) {
        int B = (int)xs.shape[0];
        const char *key = cJSON_GetStringValue(th_get(c.json, "data_key", NULL));
        int si = npred_model_session_index(m, key);
        CHECK(si == 0 && m->s[0].n == 7776, "session %s with 7776 neurons", key);
        float *out = calloc((size_t)B * 7776, sizeof *out);
        CHECK_OK(npred_model_predict(m, key, x, B, NULL, NULL, out));
        th_compare_dims(&c, "forward", "output.npy", out, TH_DIMS(B, 7776));
        th_compare_dims(&c, "forward", "core_output.npy", m->core.output,
                        TH_DIMS(B, m->core.out_c, m->core.out_h, m->core.out_w));
        float *mu = calloc(7776 * 2, sizeof *mu);
        CHECK_OK(npred_model_readout_positions(m, 0, mu));
        th_compare_dims(&c, "forward", "readout_mu.npy", mu, TH_DIMS(7776, 2));
        double creg, rreg;
        npred_model_regularizer_parts(m, 0, &creg, &rreg);
        double wc = th_num(c.json, NAN, "scalars", "core.regularizer()", NULL);
        double wr = th_num(c.json, NAN, "scalars", "readout.regularizer(data_key)", NULL);
        CHECK(fabs(creg - wc) <= 1e-4 * fabs(wc), "core regularizer %.8g want %.8g", creg, wc);
        CHECK(fabs(rreg - wr) <= 1e-4 * fabs(wr), "readout regularizer %.8g want %.8g", rreg, wr);
        free(out);
        free(mu);
    }
    free(x);
    npred_model_free(m);
    th_case_close(&c);
}

static void test_all_checkpoints_import(void)
{
    if (!have_checkpoints()) {
        th_skip("../shared/checkpoints absent");
        return;
    }
    const char *files[4] = {"sensorium_sota_model.pth", "sensorium_ln_model.pth", "sensorium_p_sota_model.pth",
                            "sensorium_p_ln_model.pth"};
    const int want_c[4] = {1, 1, 4, 4}, want_n[4] = {7776, 7776, 7538, 7538}, shifter[4] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, "../shared/checkpoints/%s", files[i]);
        npred_model *m = NULL;
        if (!CHECK_OK(npred_model_import_pth(&m, path, NULL, 36, 64, 4))) continue;
        int c, h, w;
        npred_model_input_shape(m, &c, &h, &w);
        CHECK(c == want_c[i] && npred_model_session_neurons(m, 0) == want_n[i] &&
                  npred_model_has_shifter(m) == shifter[i],
              "%s: %d channels, %d neurons, shifter %d", files[i], c, npred_model_session_neurons(m, 0),
              npred_model_has_shifter(m));
        /* predictions are finite and positive (ELU + 1) on a smooth test image */
        float *img = malloc(sizeof(float) * 2 * c * h * w), *pc = calloc(4, sizeof *pc);
        for (int k = 0; k < 2 * c * h * w; k++) img[k] = (float)sin(0.1 * k);
        float *out = malloc(sizeof(float) * 2 * want_n[i]);
        if (CHECK_OK(npred_model_predict(m, npred_model_session_key(m, 0), img, 2, pc, NULL, out))) {
            int bad = 0;
            for (int k = 0; k < 2 * want_n[i]; k++) bad += !(out[k] > 0 && isfinite(out[k]));
            CHECK(bad == 0, "%s: %d invalid rates", files[i], bad);
        }
        free(img), free(pc), free(out);
        npred_model_free(m);
    }
}

static void test_adam_trajectory(void)
{
    th_case c;
    if (!th_case_open(&c, "adam_trajectory")) return;
    cJSON *args = th_get(c.json, "args", NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "core", cJSON_Duplicate(th_get(args, "core", NULL), 1));
    cJSON *ro = cJSON_Duplicate(th_get(args, "readout", NULL), 1);
    cJSON_AddStringToObject(ro, "type", "FullFactorized2d");
    cJSON_AddBoolToObject(ro, "multi", 0);
    cJSON_AddItemToObject(root, "readout", ro);
    char *cfg = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    npred_array xs, ys;
    float *x = th_load_f32(&c, "input.npy", &xs), *y = th_load_f32(&c, "target.npy", &ys);
    npred_model *m = NULL;
    npred_model_session ses = {"", (int)ys.shape[1], NULL, 0, NULL, NULL};
    int B = (int)xs.shape[0];
    npred_adam opt;
    memset(&opt, 0, sizeof opt);
    if (x && y &&
        CHECK_OK(npred_model_create(&m, cfg, "adam_trajectory", (int)xs.shape[1], (int)xs.shape[2],
                                    (int)xs.shape[3], &ses, 1, B, 1))) {
        npred_ptable *t = npred_model_table(m);
        CHECK(th_load_table(&c, t, "params", "", NO_SKIP) == t->n, "every table entry comes from the fixture (%d)",
              t->n);
        npred_adam_params ap = npred_adam_default_params();
        ap.lr = th_num(args, 0.01, "adam", "lr", NULL);
        CHECK_OK(npred_adam_init(&opt, t->n_params, &ap));
        cJSON *losses = th_get(c.json, "losses", NULL);
        float *out = calloc((size_t)ys.count, sizeof *out), *dout = calloc((size_t)ys.count, sizeof *dout);
        for (int step = 0; step < 5; step++) {
            npred_ptable_zero_grad(t);
            CHECK_OK(npred_model_forward(m, 0, x, NULL, NULL, B, 1, NULL, NULL, out));
            double pois = NAN, one = 1;
            CHECK_OK(npred_loss_poisson_forward(&pois, out, y, B, (int)ys.shape[1], NPRED_LOSS_SUM, NPRED_POISSON_EPS));
            memset(dout, 0, ys.count * sizeof *dout);
            CHECK_OK(npred_loss_poisson_backward(dout, &one, out, y, B, (int)ys.shape[1], NPRED_LOSS_SUM, NPRED_POISSON_EPS));
            CHECK_OK(npred_model_backward(m, dout, 0, NULL, NULL));
            double loss = pois + npred_model_regularizer(m, 0, 1.0, 0);
            double want = cJSON_GetArrayItem(losses, step)->valuedouble;
            CHECK(fabs(loss - want) <= 1e-4 * fabs(want), "step %d loss %.8g want %.8g", step + 1, loss, want);
            if (step == 0) th_compare_table(&c, t, "grads_step1", "grads", "", NO_SKIP);
            CHECK_OK(npred_adam_step(&opt, t->data, t->grad));
        }
        /* params_final: trainable parameters with the grads tolerance, buffers as forward */
        cJSON *pf = th_get(c.json, "files", "params_final", NULL), *it;
        CHECK(cJSON_GetArraySize(pf) == t->n, "params_final has %d entries, the table %d", cJSON_GetArraySize(pf), t->n);
        cJSON_ArrayForEach(it, pf)
        {
            int idx = npred_ptable_find(t, it->string);
            if (!CHECK(idx >= 0, "no entry %s", it->string)) continue;
            th_compare_dims(&c, t->items[idx].is_buffer ? "forward" : "grads", it->valuestring,
                            npred_ptable_ptr(t, idx), t->items[idx].ndim, t->items[idx].shape);
        }
        free(out), free(dout);
    }
    npred_adam_free(&opt);
    free(x), free(y), free(cfg);
    npred_model_free(m);
    th_case_close(&c);
}

/* One image gives the same bits alone (run on the calling thread: a small batch)
 * as inside a batch (threaded), with 1 and 2 threads, and the caller's thread
 * count is left as it was. */
static void test_sota_single_image_threads(void)
{
    if (!have_checkpoints()) {
        th_skip("../shared/checkpoints absent");
        return;
    }
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_import_pth(&m, "../shared/checkpoints/sensorium_sota_model.pth", NULL, 36, 64, 3)))
        return;
    const char *key = npred_model_session_key(m, 0);
    enum { B = 3, N = 7776, PX = 36 * 64 };
    float *img = malloc(sizeof(float) * B * PX), *batch = malloc(sizeof(float) * B * N);
    float *one = malloc(sizeof(float) * N);
    for (int k = 0; k < B * PX; k++) img[k] = (float)sin(0.37 * k) * (float)cos(0.011 * k);
    int threads = npred_threads();
    CHECK_OK(npred_set_threads(2));
    if (CHECK_OK(npred_model_predict(m, key, img, B, NULL, NULL, batch)))
        for (int t = 1; t <= 2; t++) {
            CHECK_OK(npred_set_threads(t));
            for (int b = 0; b < B; b++) {
                if (!CHECK_OK(npred_model_predict(m, key, img + b * PX, 1, NULL, NULL, one))) break;
                CHECK(!memcmp(one, batch + (size_t)b * N, sizeof(float) * N),
                      "image %d alone with %d thread(s): other bits than in the batch", b, t);
                CHECK(npred_threads() == t, "threads %d after predict, want %d", npred_threads(), t);
            }
        }
    CHECK_OK(npred_set_threads(threads));
    free(img), free(batch), free(one);
    npred_model_free(m);
}

/* npred_model_predict keeps only the layer outputs (npred_core.lean): its rates equal
 * an eval npred_model_forward's bit for bit, a backward after it is refused with a
 * clear error, and one after a forward works again */
static void test_predict_then_backward(void)
{
    const char *cfg = "{\"layers\": 3, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6,"
                      " \"depth_separable\": true, \"pad_input\": false}";
    double coords[6 * 2];
    uint64_t seed = 9;
    for (int i = 0; i < 12; i++) coords[i] = th_rand(&seed) * 100;
    npred_model_session ses = {"s", 6, coords, 2, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "cfg", 1, 16, 20, &ses, 1, 3, 4))) return;
    enum { B = 3, PX = 16 * 20 };
    float img[B * PX], o1[B * 6], o2[B * 6], dout[B * 6], dimg[B * PX];
    for (int i = 0; i < B * PX; i++) img[i] = (float)th_rand(&seed);
    for (int i = 0; i < B * 6; i++) dout[i] = (float)th_rand(&seed);
    CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, B, 0, NULL, NULL, o1));
    CHECK_OK(npred_model_predict(m, "s", img, B, NULL, NULL, o2));
    CHECK(!memcmp(o1, o2, sizeof o1), "predict differs from an eval forward");
    CHECK(npred_model_backward(m, dout, 0, dimg, NULL) == NPRED_ERR_ARG &&
              strstr(npred_last_error(), "npred_model_predict") != NULL,
          "backward after predict refused: %s", npred_last_error());
    CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, B, 0, NULL, NULL, o1));
    CHECK_OK(npred_model_backward(m, dout, 0, dimg, NULL));
    npred_model_free(m);
}

static void test_save_load_roundtrip(void)
{
    const char *cfg = "{\"layers\": 3, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6,"
                      " \"depth_separable\": true, \"stack\": -1, \"shifter\": true,"
                      " \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
                      " \"hidden_layers\": 1, \"hidden_features\": 7, \"final_tanh\": true}}";
    double coords_a[5 * 3], coords_b[4 * 3];
    uint64_t seed = 5;
    for (int i = 0; i < 15; i++) coords_a[i] = th_rand(&seed) * 100;
    for (int i = 0; i < 12; i++) coords_b[i] = th_rand(&seed) * 100;
    npred_model_session ses[2] = {{"1-2-3", 5, coords_a, 3, NULL, NULL}, {"4-5-6", 4, coords_b, 3, NULL, NULL}};
    npred_model *m = NULL, *m2 = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "cfg", 1, 18, 22, ses, 2, 3, 11))) return;
    char dir[] = "/tmp/npred-test-model-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    char sub[300];
    snprintf(sub, sizeof sub, "%s/run", dir);
    CHECK_OK(npred_model_save(m, sub));
    if (CHECK_OK(npred_model_load(&m2, sub, 3))) {
        float img[3 * 18 * 22], pc[6] = {0.1f, -0.2f, 0.3f, 0.0f, -0.5f, 0.5f}, o1[3 * 5], o2[3 * 5];
        for (int i = 0; i < 3 * 18 * 22; i++) img[i] = (float)th_rand(&seed);
        CHECK_OK(npred_model_predict(m, "1-2-3", img, 3, pc, NULL, o1));
        CHECK_OK(npred_model_predict(m2, "1-2-3", img, 3, pc, NULL, o2));
        CHECK(!memcmp(o1, o2, sizeof o1), "loaded model predicts identically");
        CHECK(npred_model_predict(m2, "nope", img, 3, pc, NULL, o2) == NPRED_ERR_ARG &&
                  strstr(npred_last_error(), "1-2-3") != NULL,
              "unknown session lists the known ones: %s", npred_last_error());
        CHECK(npred_model_predict(m2, "1-2-3", img, 3, NULL, NULL, o2) == NPRED_ERR_ARG, "pupil_center required");
        char *d = npred_model_describe(m2);
        CHECK(d && strstr(d, "full FullGaussian2d (6 x 14 x 18 -> 5) with bias, with predicted grid"),
              "describe:\n%s", d ? d : "");
        free(d);
        npred_model_free(m2);
    }
    /* corrupt file: clear error, no crash */
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", sub);
    FILE *f = fopen(path, "r+b");
    if (f) {
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        if (ftruncate(fileno(f), len / 2) != 0) CHECK(0, "truncate");
        fclose(f);
    }
    CHECK(npred_model_load(&m2, sub, 3) != NPRED_OK && strstr(npred_last_error(), "model.safetensors"),
          "truncated model rejected: %s", npred_last_error());
    CHECK(npred_model_load(&m2, "/nonexistent/run", 3) == NPRED_ERR_IO, "missing model is an I/O error");
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK(0, "cleanup");
    npred_model_free(m);
}

/* ---- finite differences through whole encoders (shifter, modulator, sharing) ---- */
typedef struct {
    npred_model *m;
    int si, B, train;
    float *img, *pc, *beh, *noise, *up;
    double *bufs;
    size_t nimg, nout;
} fd_ctx;

static double model_loss(fd_ctx *k)
{
    npred_ptable *t = npred_model_table(k->m);
    for (size_t i = 0; i < t->n_buffers; i++) t->bufdata[i] = (float)k->bufs[i];
    float *out = malloc(k->nout * sizeof *out);
    /* a failed forward makes the loss NaN, which fails the comparison */
    if (!CHECK(out != NULL, "out of memory") ||
        !CHECK_OK(npred_model_forward(k->m, k->si, k->img, k->pc, k->beh, k->B, k->train, NULL, k->noise, out))) {
        free(out);
        return NAN;
    }
    double l = 0;
    for (size_t i = 0; i < k->nout; i++) l += (double)out[i] * k->up[i];
    free(out);
    return l + npred_model_regularizer(k->m, k->si, 0, 0);
}

static void fd_model(const char *cfg, int train, int share)
{
    uint64_t seed = 99;
    double ca[7 * 2], cb[6 * 2];
    for (int i = 0; i < 14; i++) ca[i] = th_rand(&seed) * 50;
    for (int i = 0; i < 12; i++) cb[i] = th_rand(&seed) * 50;
    int64_t ma[7] = {3, 1, 2, 3, 0, 1, 4}, mb[6] = {0, 1, 2, 3, 4, 4};
    npred_model_session ses[2] = {{"a-1-1", 7, ca, 2, NULL, share ? ma : NULL},
                                  {"b-2-2", 6, cb, 2, NULL, share ? mb : NULL}};
    npred_model *m = NULL;
    int B = 3, H = 13, W = 15;
    if (!CHECK_OK(npred_model_create(&m, cfg, "fd config", 2, H, W, ses, 2, B, 3))) return;
    npred_ptable *t = npred_model_table(m);
    if (npred_readout_nhwc_floats(&m->s[0].ro, B)) /* Gaussian readouts: one input copy for both sessions */
        CHECK(m->s[0].ro.nhwc && m->s[0].ro.nhwc == m->s[1].ro.nhwc, "the sessions' readouts do not share their input copy");
    if (share) {
        int ib = npred_ptable_find(t, "readout.b-2-2._features");
        CHECK(ib >= 0 && t->items[ib].alias_of == npred_ptable_find(t, "readout.a-1-1._features"),
              "session 2 borrows the first session's _features");
    }
    npred_rng rng;
    npred_rng_seed(&rng, 5);
    for (size_t i = 0; i < t->n_params; i++) t->data[i] += (float)(0.1 * npred_rng_normal(&rng));
    /* keep the modulator's ReLUs away from their kink (finite differences cannot
     * straddle it); the inactive side is covered by its zero gradient */
    for (int e = 0; e < t->n; e++)
        if (!strncmp(t->items[e].name, "modulator.", 10) && strstr(t->items[e].name, ".bias"))
            for (size_t i = 0; i < t->items[e].count; i++) npred_ptable_ptr(t, e)[i] += 1.0f;
    for (int si = 0; si < 2; si++) {
        fd_ctx k = {m, si, B, train, NULL, NULL, NULL, NULL, NULL, NULL, (size_t)B * 2 * H * W,
                    (size_t)B * ses[si].n_neurons};
        k.img = malloc(k.nimg * sizeof(float));
        k.pc = malloc(sizeof(float) * 2 * B);
        k.beh = malloc(sizeof(float) * 3 * B);
        k.noise = malloc(sizeof(float) * 2 * k.nout);
        k.up = malloc(sizeof(float) * k.nout);
        for (size_t i = 0; i < k.nimg; i++) k.img[i] = (float)npred_rng_normal(&rng);
        for (int i = 0; i < 2 * B; i++) k.pc[i] = (float)(0.5 * npred_rng_normal(&rng));
        for (int i = 0; i < 3 * B; i++) k.beh[i] = (float)npred_rng_normal(&rng);
        for (size_t i = 0; i < 2 * k.nout; i++) k.noise[i] = (float)(0.3 * npred_rng_normal(&rng));
        for (size_t i = 0; i < k.nout; i++) k.up[i] = (float)npred_rng_normal(&rng);
        k.bufs = malloc((t->n_buffers + 1) * sizeof(double));
        for (size_t i = 0; i < t->n_buffers; i++) k.bufs[i] = t->bufdata[i];
        /* analytic */
        model_loss(&k);
        npred_ptable_zero_grad(t);
        float *out = malloc(k.nout * sizeof *out), *dout = malloc(k.nout * sizeof *dout);
        float *dimg = calloc(k.nimg, sizeof *dimg), *dpc = calloc(2 * (size_t)B, sizeof *dpc);
        for (size_t i = 0; i < t->n_buffers; i++) t->bufdata[i] = (float)k.bufs[i];
        CHECK_OK(npred_model_forward(m, si, k.img, k.pc, k.beh, B, train, NULL, k.noise, out));
        memcpy(dout, k.up, k.nout * sizeof *dout);
        CHECK_OK(npred_model_backward(m, dout, 0, dimg, dpc));
        npred_model_regularizer(m, si, 1.0, 0);
        float *g = malloc(t->n_params * sizeof *g);
        memcpy(g, t->grad, t->n_params * sizeof *g);
        /* element by element: every parameter, every pupil coordinate, every 5th pixel.
         * The loss is only piecewise smooth (bilinear sampling between pixels, L1
         * regularizers, clamps): where the one-sided slopes differ (a kink within the
         * step) the analytic value must lie between them; elsewhere it must match the
         * central difference. */
        const double h = 1e-3;
        const double l0 = model_loss(&k);
        int bad = 0, kinks = 0, total = 0;
        double worst = 0;
        char worst_name[256] = "";
        for (int e = 0; e <= t->n + 1; e++) {
            float *v, *ga;
            size_t cnt, step = 1;
            const char *nm;
            if (e < t->n) {
                if (t->items[e].is_buffer || t->items[e].alias_of >= 0) continue;
                v = npred_ptable_ptr(t, e);
                ga = g + t->items[e].offset;
                cnt = t->items[e].count;
                nm = t->items[e].name;
            } else if (e == t->n) {
                v = k.img, ga = dimg, cnt = k.nimg, step = 5, nm = "images";
            } else {
                v = k.pc, ga = dpc, cnt = 2 * (size_t)B, nm = "pupil_center";
            }
            for (size_t i = 0; i < cnt; i += step) {
                float keep = v[i];
                v[i] = (float)(keep + h);
                double lp = model_loss(&k);
                v[i] = (float)(keep - h);
                double lm = model_loss(&k);
                v[i] = keep;
                double num = (lp - lm) / (2 * h), err = fabs(num - ga[i]) / (1e-2 * fabs(ga[i]) + 2e-3);
                double fw = (lp - l0) / h, bw = (l0 - lm) / h;
                total++;
                if (fabs(fw - bw) > 1e-2 * fabs(num) + 4e-3) { /* kink inside [x-h, x+h] */
                    kinks++;
                    double lo = fw < bw ? fw : bw, hi = fw < bw ? bw : fw, slack = 1e-2 * fabs(num) + 2e-3;
                    err = (ga[i] < lo - slack || ga[i] > hi + slack) ? 2 : 0;
                }
                if (!(err <= 1)) bad++; /* NaN counts as off */
                if (err > worst) {
                    worst = err;
                    snprintf(worst_name, sizeof worst_name, "%s[%zu]: numeric %.6g analytic %.6g", nm, i, num, ga[i]);
                }
            }
        }
        CHECK(bad == 0, "session %d train=%d: %d gradient entries off; worst %s", si, train, bad, worst_name);
        CHECK(kinks * 20 < total, "session %d train=%d: %d of %d points at kinks", si, train, kinks, total);
        free(k.img), free(k.pc), free(k.beh), free(k.noise), free(k.up), free(k.bufs);
        free(out), free(dout), free(dimg), free(dpc), free(g);
    }
    npred_model_free(m);
}

static const char *FD_SHIFT_MOD =
    "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 4, \"depth_separable\": true,"
    " \"gamma_input\": 0.3, \"gamma_readout\": 0.05, \"init_sigma\": 0.2, \"init_mu_range\": 0.5,"
    " \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1,"
    " \"hidden_features\": 6, \"final_tanh\": true}, \"shifter\": true, \"shift_layers\": 2,"
    " \"modulator\": true, \"gamma_modulator\": 0.1, \"elu_offset\": -0.3}";
static const char *FD_SHARED =
    "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
    " \"gamma_readout\": 0.1, \"gauss_type\": \"uncorrelated\", \"share_features\": true, \"share_grid\": true,"
    " \"shifter\": true, \"shifter_type\": \"StaticAffine\", \"gamma_shifter\": 0.5}";

static const char *FD_SHARED_FACTORIZED =
    "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 3, \"pad_input\": true,"
    " \"readout_type\": \"FullFactorized2d\", \"gamma_readout\": 0.02, \"share_features\": true}";

/* a model with shared features and grid saves and loads with its sharing */
static void test_save_load_shared(void)
{
    int64_t ma[7] = {3, 1, 2, 3, 0, 1, 4}, mb[6] = {0, 1, 2, 3, 4, 4};
    npred_model_session ses[2] = {{"a-1-1", 7, NULL, 0, NULL, ma}, {"b-2-2", 6, NULL, 0, NULL, mb}};
    npred_model *m = NULL, *m2 = NULL;
    if (!CHECK_OK(npred_model_create(&m, FD_SHARED, "shared", 2, 13, 15, ses, 2, 2, 3))) return;
    char dir[] = "/tmp/npred-test-shared-XXXXXX";
    if (CHECK(mkdtemp(dir) != NULL, "mkdtemp") && CHECK_OK(npred_model_save(m, dir)) &&
        CHECK_OK(npred_model_load(&m2, dir, 2))) {
        uint64_t seed = 3;
        float img[2 * 2 * 13 * 15], pc[4] = {0.1f, 0.2f, -0.3f, 0.0f}, o1[14], o2[14];
        for (int i = 0; i < 2 * 2 * 13 * 15; i++) img[i] = (float)th_rand(&seed);
        for (int si = 0; si < 2; si++) {
            CHECK_OK(npred_model_predict(m, ses[si].key, img, 2, pc, NULL, o1));
            CHECK_OK(npred_model_predict(m2, ses[si].key, img, 2, pc, NULL, o2));
            CHECK(!memcmp(o1, o2, sizeof(float) * 2 * ses[si].n_neurons), "session %s predicts identically",
                  ses[si].key);
        }
        npred_ptable *t = npred_model_table(m2);
        int ib = npred_ptable_find(t, "readout.b-2-2._features");
        CHECK(ib >= 0 && t->items[ib].alias_of >= 0, "the loaded model still shares its features");
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK(0, "cleanup");
    npred_model_free(m2);
    npred_model_free(m);
}

static void test_fd_encoder_shared_factorized_train(void) { fd_model(FD_SHARED_FACTORIZED, 1, 1); }
static void test_fd_encoder_shifter_modulator_eval(void) { fd_model(FD_SHIFT_MOD, 0, 0); }
static void test_fd_encoder_shifter_modulator_train(void) { fd_model(FD_SHIFT_MOD, 1, 0); }
static void test_fd_encoder_shared_readouts_train(void) { fd_model(FD_SHARED, 1, 1); }

/* The readout writes the core's output gradient (npred_readout_backward_set) instead
 * of the model zeroing it and the readout adding into it: whatever the buffer holds
 * before the backward (NaN here) must not reach a gradient. Every readout type, both
 * sessions, 1 and 2 threads: the parameter and image gradients are those of a backward
 * onto a clean buffer, bit for bit, and finite. */
static void test_backward_overwrites_core_gradient(void)
{
    /* the last: a distribution encoder's readout (two outputs: not the fused transpose) */
    static const char *types[] = {"FullGaussian2d", "Gaussian2d",       "FullFactorized2d",
                                  "PointPooled2d",  "AttentionReadout", "PointPyramid2d", "FullGaussian2d"};
    const int ntypes = (int)(sizeof types / sizeof *types), threads = omp_get_max_threads();
    for (int ti = 0; ti < ntypes; ti++) {
        char cfg[512];
        snprintf(cfg, sizeof cfg,
                 "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 16,"
                 " \"depth_separable\": true, \"pad_input\": true, \"readout_type\": \"%s\"%s}",
                 types[ti], ti == ntypes - 1 ? ", \"encoder\": {\"type\": \"ZILEncoder\"}" : "");
        npred_model_session ses[2] = {{"a-1-1", 7, NULL, 0, NULL, NULL}, {"b-2-2", 21, NULL, 0, NULL, NULL}};
        npred_model *m = NULL;
        enum { B = 3, H = 12, W = 14 };
        if (!CHECK_OK(npred_model_create(&m, cfg, types[ti], 1, H, W, ses, 2, B, 3))) continue;
        npred_ptable *t = npred_model_table(m);
        size_t nc = (size_t)B * m->core.out_c * m->core.out_h * m->core.out_w;
        uint64_t seed = 17 + (uint64_t)ti;
        float img[B * H * W], dimg[2][B * H * W], noise[2 * B * 21], dout[B * 21], out[B * 21];
        for (int i = 0; i < B * H * W; i++) img[i] = (float)th_rand(&seed);
        for (int i = 0; i < 2 * B * 21; i++) noise[i] = (float)th_rand(&seed);
        for (int i = 0; i < B * 21; i++) dout[i] = (float)th_rand(&seed);
        float *g[2] = {malloc(t->n_params * sizeof(float)), malloc(t->n_params * sizeof(float))};
        for (int nt = 1; g[0] && g[1] && nt <= 2; nt++) {
            omp_set_num_threads(nt);
            for (int si = 0; si < 2; si++) {
                for (int stale = 0; stale < 2; stale++) {
                    npred_ptable_zero_grad(t);
                    memset(dimg[stale], 0, sizeof dimg[stale]);
                    CHECK_OK(npred_model_forward(m, si, img, NULL, NULL, B, 1, NULL, noise, out));
                    if (stale)
                        for (size_t i = 0; i < nc; i++) m->dcore[i] = NAN;
                    CHECK_OK(npred_model_backward(m, dout, 0, dimg[stale], NULL));
                    memcpy(g[stale], t->grad, t->n_params * sizeof(float));
                }
                size_t finite = 0;
                for (size_t i = 0; i < t->n_params; i++) finite += isfinite(g[1][i]) != 0;
                for (int i = 0; i < B * H * W; i++) finite += isfinite(dimg[1][i]) != 0;
                CHECK(!memcmp(g[0], g[1], t->n_params * sizeof(float)) &&
                          !memcmp(dimg[0], dimg[1], sizeof dimg[0]) && finite == t->n_params + B * H * W,
                      "%s%s, session %d, %d thread(s): a stale core gradient changed the gradients (%zu of %zu "
                      "finite)",
                      types[ti], ti == ntypes - 1 ? " (ZILEncoder)" : "", si, nt, finite, t->n_params + B * H * W);
            }
        }
        omp_set_num_threads(threads);
        free(g[0]), free(g[1]);
        npred_model_free(m);
    }
}

/* npred_model_plan: the structure of npred_model_create without parameter memory.
 * Its counts, reprs and description equal the created model's; the counts are
 * checked against the layer shapes; a plan refuses what needs parameters. */
static void test_plan_and_introspection(void)
{
    const char *cfg = "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6,"
                      " \"stack\": -1, \"shifter\": true, \"grid_mean_predictor\": null}";
    npred_model_session ses[2] = {{"1-2-3", 5, NULL, 0, NULL, NULL}, {"4-5-6", 4, NULL, 0, NULL, NULL}};
    npred_model *m = NULL, *p = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "cfg", 1, 18, 22, ses, 2, 3, 11))) return;
    if (!CHECK_OK(npred_model_plan(&p, cfg, "cfg", 1, 18, 22, ses, 2))) {
        npred_model_free(m);
        return;
    }
    /* core: conv 5x5 1->6 (no bias before BN) + conv 3x3 6->6 + BN weight/bias per layer */
    size_t core = 6 * 25 + 6 * 6 * 9 + 2 * 2 * 6;
    CHECK(npred_model_param_count(m, "core.") == core && npred_model_param_count(p, "core.") == core,
          "core parameters %zu / %zu, expected %zu", npred_model_param_count(m, "core."),
          npred_model_param_count(p, "core."), core);
    /* FullGaussian2d on the core output (6, 14, 18): the 5x5 first layer is unpadded; mu 2 + sigma 4 (full) + features 6 + bias 1 per neuron */
    CHECK(npred_model_param_count(p, "readout.1-2-3.") == 5 * 13 && npred_model_param_count(p, "readout.4-5-6.") == 4 * 13,
          "readout parameters %zu, %zu", npred_model_param_count(p, "readout.1-2-3."),
          npred_model_param_count(p, "readout.4-5-6."));
    CHECK(npred_model_readout_param_count(m, 0) == 5 * 13 && npred_model_readout_param_count(p, 1) == 4 * 13 &&
              npred_model_readout_param_count(p, 2) == 0,
          "readout_param_count");
    /* sensorium's shifter MLP, one per session: 2 -> 5 -> 5 -> 2 with biases (shift_layers 3,
     * hidden_channels_shifter 5) */
    CHECK(npred_model_param_count(p, "shifter.1-2-3.") == (2 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2), "shifter %zu", npred_model_param_count(p, "shifter.1-2-3."));
    size_t total = core + 9 * 13 + 2 * 57;
    CHECK(npred_model_param_count(m, NULL) == total && npred_model_param_count(p, "") == total,
          "total %zu / %zu, expected %zu", npred_model_param_count(m, NULL), npred_model_param_count(p, ""), total);
    CHECK(npred_model_buffer_count(m) == npred_model_buffer_count(p) && npred_model_buffer_count(m) > 0,
          "buffers %zu / %zu", npred_model_buffer_count(m), npred_model_buffer_count(p));
    CHECK(npred_model_pupil_channels(m) == 2 && npred_model_pupil_channels(p) == 2, "pupil channels");
    char *r1 = npred_model_readout_repr(m, 1), *r2 = npred_model_readout_repr(p, 1);
    CHECK(r1 && r2 && !strcmp(r1, r2) && !strcmp(r1, "full FullGaussian2d (6 x 14 x 18 -> 4) with bias"),
          "readout repr '%s' / '%s'", r1 ? r1 : "(null)", r2 ? r2 : "(null)");
    free(r1);
    free(r2);
    CHECK(npred_model_readout_repr(p, 2) == NULL && strstr(npred_last_error(), "session index 2"), "bad index");
    char *d1 = npred_model_describe(m), *d2 = npred_model_describe(p);
    CHECK(d1 && d2 && !strcmp(d1, d2), "plan and model describe differently:\n%s\n---\n%s", d1 ? d1 : "",
          d2 ? d2 : "");
    free(d1);
    free(d2);
    /* a plan has no parameters to use */
    float img[18 * 22] = {0}, pc[2] = {0}, out[5], xy[10];
    CHECK(npred_model_predict(p, "1-2-3", img, 1, pc, NULL, out) == NPRED_ERR_ARG &&
              strstr(npred_last_error(), "plan"), "predict on a plan: %s", npred_last_error());
    CHECK(npred_model_save_file(p, "/tmp/npred-plan-never-written.safetensors") == NPRED_ERR_ARG, "save of a plan");
    CHECK(npred_model_readout_positions(p, 0, xy) == NPRED_ERR_ARG, "positions of a plan");
    CHECK(npred_model_copy_parameters(m, p, NULL, NULL) == NPRED_ERR_ARG, "copy from a plan");
    CHECK_OK(npred_model_predict(m, "1-2-3", img, 1, pc, NULL, out));
    /* configuration checks without a model */
    CHECK_OK(npred_model_config_check(cfg, "cfg"));
    CHECK(npred_model_config_check("{\"layers\": 2, \"hiden_channels\": 3}", "my.json") == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "hiden_channels") && strstr(npred_last_error(), "my.json"),
          "unknown key: %s", npred_last_error());
    npred_model *q = NULL;
    CHECK(npred_model_plan(&q, cfg, "cfg", 1, 0, 22, ses, 2) == NPRED_ERR_ARG && !q, "plan of a 0-high image");
    npred_model_free(p);
    npred_model_free(m);
}

int main(void)
{
    RUN(test_encoder_sensorium);
    RUN(test_encoder_shifter);
    RUN(test_checkpoint_sota_formula);
    RUN(test_all_checkpoints_import);
    RUN(test_adam_trajectory);
    RUN(test_sota_single_image_threads);
    RUN(test_predict_then_backward);
    RUN(test_save_load_roundtrip);
    RUN(test_backward_overwrites_core_gradient);
    RUN(test_fd_encoder_shifter_modulator_eval);
    RUN(test_fd_encoder_shifter_modulator_train);
    RUN(test_fd_encoder_shared_readouts_train);
    RUN(test_fd_encoder_shared_factorized_train);
    RUN(test_save_load_shared);
    RUN(test_plan_and_introspection);
    return th_summary();
}
