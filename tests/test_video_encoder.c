/* The kit's factorised 3D benchmark (VideoFiringRateEncoder: Factorized3dCore +
 * FullGaussian2d per frame with the cortex grid predictor + MLP shifter) against the
 * video_factorized3d_encoder fixture: eval outputs, the train forward with the captured
 * readout noise, its intermediates, the training-loop loss of the kit and every
 * gradient (parameters, videos, pupil_center) per session. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/conv2d_fft.h"
#include "model/video_encoder.h"
#include "train/video_trainer.h"

static int config_from_case(th_case *c, npred_video_encoder_config *vc)
{
    return CHECK_OK(npred_video_encoder_config_from_cjson(vc, th_get(c->json, "args", "make_video_model", NULL), c->name));
}

static float *load_sess(th_case *c, const char *key, const char *a, const char *b, npred_array *sh)
{
    cJSON *f = th_get(c->json, "files", "sessions", key, a, b, NULL);
    if (!CHECK(cJSON_IsString(f), "%s: no files.sessions.%s.%s%s%s", c->name, key, a, b ? "." : "", b ? b : ""))
        return NULL;
    return th_load_f32(c, f->valuestring, sh);
}

static void compare_sess(th_case *c, const char *key, const char *a, const char *b, const char *kind, const float *got,
                         int ndim, const int64_t *dims)
{
    cJSON *f = th_get(c->json, "files", "sessions", key, a, b, NULL);
    if (CHECK(cJSON_IsString(f), "%s: no files.sessions.%s.%s", c->name, key, a))
        th_compare_dims(c, kind, f->valuestring, got, ndim, dims);
}

/* Streaming: the frames of a clip pushed one at a time give the whole clip's eval output
 * `full` (B, T', n) bit for bit: no output (ready 0, rates untouched) for the first
 * warm-up frames (3D cores: the sum of (kt - 1) * dilation), then output frame
 * t - warm-up for frame t. Returns 1 when every frame matched. */
static int stream_clip(npred_video_encoder *e, int k, const float *videos, const float *pupil, int B, int C, int T,
                       int HW, int n, const float *full)
{
    int W = npred_video_encoder_stream_warmup(e), same = 1;
    float *frame = malloc((size_t)B * C * HW * sizeof *frame), *rates = malloc((size_t)B * n * sizeof *rates), pc[64];
    if (!CHECK(frame && rates && B <= 32 && W == T - e->out_t, "stream setup (warm-up %d, T %d, T' %d)", W, T, e->out_t))
        same = 0;
    npred_video_encoder_stream_reset(e);
    for (int t = 0; same && t < T; t++) {
        for (int b = 0; b < B; b++) {
            for (int c = 0; c < C; c++)
                memcpy(frame + ((size_t)b * C + c) * HW, videos + (((size_t)b * C + c) * T + t) * HW, HW * sizeof *frame);
            for (int j = 0; j < 2; j++) pc[b * 2 + j] = pupil ? pupil[((size_t)b * 2 + j) * T + t] : 0;
        }
        for (size_t i = 0; i < (size_t)B * n; i++) rates[i] = -1.0f;
        int ready = -1;
        if (!CHECK_OK(npred_video_encoder_stream_push(e, k, frame, pupil ? pc : NULL, B, rates, &ready))) {
            same = 0;
            break;
        }
        if (t < W) { /* warm-up: nothing written */
            int untouched = ready == 0;
            for (size_t i = 0; i < (size_t)B * n; i++) untouched &= rates[i] == -1.0f;
            same &= CHECK(untouched, "frame %d of the warm-up (%d): ready %d, rates written", t, W, ready);
            continue;
        }
        same &= ready == 1;
        for (int b = 0; b < B; b++)
            same &= !memcmp(rates + (size_t)b * n, full + ((size_t)b * e->out_t + t - W) * n, n * sizeof(float));
    }
    free(frame), free(rates);
    return same;
}

/* Several clips with resets in between (sessions in turn, then in reverse order, one
 * clip broken off half way), each equal to its whole clip; a change of batch size or
 * session without a reset is refused. fulls[k] (B, T', n) per session. */
static void check_stream(npred_video_encoder *e, int ns, float *const (*in)[2], float *const *fulls, int B, int C,
                         int T, int HW, const int *nn)
{
    for (int k = 0; k < ns; k++)
        CHECK(stream_clip(e, k, in[k][0], in[k][1], B, C, T, HW, nn[k], fulls[k]), "session %d: the streamed rates "
              "differ from the whole clip's", k);
    /* half a clip of session 0, then (after a reset) every session in reverse order */
    int W = npred_video_encoder_stream_warmup(e);
    float *frame = calloc((size_t)B * C * HW, sizeof *frame), *rates = malloc((size_t)B * nn[0] * sizeof *rates),
          pc[64] = {0};
    npred_video_encoder_stream_reset(e);
    for (int t = 0; frame && rates && t < W + 1; t++)
        CHECK_OK(npred_video_encoder_stream_push(e, 0, frame, pc, B, rates, NULL));
    for (int k = ns - 1; k >= 0; k--)
        CHECK(stream_clip(e, k, in[k][0], in[k][1], B, C, T, HW, nn[k], fulls[k]), "session %d after a reset", k);
    /* without a reset, another batch size or session is refused */
    if (frame && rates) {
        CHECK(B < 2 || npred_video_encoder_stream_push(e, 0, frame, pc, B - 1, rates, NULL) == NPRED_ERR_ARG,
              "batch change without a reset");
        CHECK(ns < 2 || npred_video_encoder_stream_push(e, 1, frame, pc, B, rates, NULL) == NPRED_ERR_ARG,
              "session change without a reset");
        CHECK(!e->s[0].has_shifter || npred_video_encoder_stream_push(e, 0, frame, NULL, B, rates, NULL) == NPRED_ERR_ARG,
              "no pupil_center with a shifter");
    }
    free(frame), free(rates);
}

/* The kit's forward(detach_core=True) (the trainer's detach_core): the same train forward
 * and output gradient, backward with e->detach_core: every core gradient zero, every other
 * (ConvGRU, readout, shifter) bit-identical to the full backward's. */
static void check_detach_core(npred_video_encoder *e, int k, const float *videos, const float *pupil, int B,
                              const float *noise, const float *dout)
{
    npred_ptable *t = &e->t;
    float *full = malloc((t->n_params + 1) * sizeof *full), *buf = malloc((t->n_buffers + 1) * sizeof *buf);
    if (!CHECK(full && buf, "out of memory")) {
        free(full), free(buf);
        return;
    }
    memcpy(buf, t->bufdata, t->n_buffers * sizeof *buf); /* the forwards below move the running statistics */
    npred_ptable_zero_grad(t);
    int ok = CHECK_OK(npred_video_encoder_forward(e, k, videos, pupil, B, 1, NULL, noise, NULL)) &&
             CHECK_OK(npred_video_encoder_backward(e, dout, NULL, NULL));
    memcpy(full, t->grad, t->n_params * sizeof *full);
    npred_ptable_zero_grad(t);
    ok = ok && CHECK_OK(npred_video_encoder_forward(e, k, videos, pupil, B, 1, NULL, noise, NULL));
    e->detach_core = 1;
    ok = ok && CHECK_OK(npred_video_encoder_backward(e, dout, NULL, NULL));
    e->detach_core = 0;
    int core = 0, other = 0, gru = 0;
    for (int i = 0; ok && i < t->n; i++) {
        const npred_param *p = &t->items[i];
        if (p->is_buffer) continue;
        const float *g = t->grad + p->offset, *f = full + p->offset;
        if (!strncmp(p->name, "core.", 5)) {
            int zero = 1;
            for (size_t q = 0; q < p->count; q++) zero &= g[q] == 0;
            CHECK(zero, "detach_core: %s has a gradient", p->name);
            core++;
        } else {
            CHECK(!memcmp(g, f, p->count * sizeof(float)), "detach_core: the gradient of %s differs", p->name);
            other++;
            gru += !strncmp(p->name, "gru_module.", 11);
        }
    }
    CHECK(!ok || (core > 0 && other > 0 && (!e->cfg.use_gru || gru >= 6)), "detach_core: %d core, %d other (%d GRU) tensors",
          core, other, gru);
    memcpy(t->bufdata, buf, t->n_buffers * sizeof *buf);
    free(full), free(buf);
}

static void run_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_video_encoder_config vc;
    if (!config_from_case(&c, &vc)) {
        th_case_close(&c);
        return;
    }
    cJSON *keys_j = th_get(c.json, "data_keys", NULL);
    int ns = cJSON_GetArraySize(keys_j);
    const char *keys[4];
    int nn[4];
    for (int i = 0; i < ns && i < 4; i++) {
        keys[i] = cJSON_GetArrayItem(keys_j, i)->valuestring;
        nn[i] = (int)th_num(c.json, -1, "args", "n_neurons", keys[i], NULL);
    }
    cJSON *shape = th_get(c.json, "args", "input_shape", keys[0], NULL);
    int B = cJSON_GetArrayItem(shape, 0)->valueint;
    int C = cJSON_GetArrayItem(shape, 1)->valueint, T = cJSON_GetArrayItem(shape, 2)->valueint,
        H = cJSON_GetArrayItem(shape, 3)->valueint, W = cJSON_GetArrayItem(shape, 4)->valueint;
    npred_video_encoder e;
    if (!CHECK_OK(npred_video_encoder_create(&e, &vc, C, T, H, W, ns, keys, nn, B))) goto out;
    int T1 = e.out_t;
    CHECK(T1 == (int)th_num(c.json, -1, "args", "output_frames", keys[0], NULL), "T' %d", T1);
    CHECK(th_load_table(&c, &e.t, "params", "", NULL) == e.t.n, "every table entry loaded (%d)", e.t.n);
    float *in[4][2] = {{0}};
    for (int k = 0; k < ns; k++) {
        in[k][0] = load_sess(&c, keys[k], "inputs", "videos", NULL);
        in[k][1] = load_sess(&c, keys[k], "inputs", "pupil_center", NULL);
    }
    /* eval on the initial state, both sessions first; then the same clips streamed */
    float *fulls[4] = {0};
    int have = 1;
    for (int k = 0; k < ns; k++) {
        have &= in[k][0] && in[k][1];
        if (!in[k][0] || !in[k][1]) continue;
        if (CHECK_OK(npred_video_encoder_forward(&e, k, in[k][0], in[k][1], B, 0, NULL, NULL, NULL))) {
            compare_sess(&c, keys[k], "output_eval", NULL, "forward", e.out, TH_DIMS(B, T1, nn[k]));
            size_t no = (size_t)B * T1 * nn[k];
            if ((fulls[k] = malloc(no * sizeof(float)))) memcpy(fulls[k], e.out, no * sizeof(float));
        }
        have &= fulls[k] != NULL;
    }
    if (npred_conv2d_fft_set_mode(-1) == NPRED_CONV2D_FFT_ALWAYS) { /* the eval forward took the FFT path */
        int any = 0;
        for (int l = 0; vc.core2d && l < e.core2d.cfg.layers; l++) any |= e.core2d.L[l].wfft_ok;
        CHECK(!vc.core2d || any, "%s: no core conv ran by FFT", name);
        CHECK(!vc.use_gru || e.gru.wf_ok == 7, "%s: the GRU's convs by FFT: %d", name, e.gru.wf_ok);
    }
    if (CHECK(have, "%s: the eval outputs to stream against", name)) check_stream(&e, ns, in, fulls, B, C, T, H * W, nn);
    for (int k = 0; k < ns; k++) free(fulls[k]);
    for (int k = 0; k < ns; k++) {
        if (!in[k][0] || !in[k][1]) continue;
        npred_array ysh;
        float *noise = load_sess(&c, keys[k], "noise", NULL, NULL), *resp = load_sess(&c, keys[k], "inputs", "responses", &ysh);
        if (!noise || !resp) {
            free(noise), free(resp);
            continue;
        }
        npred_ptable_zero_grad(&e.t);
        double rs, rt, rr;
        CHECK_OK(npred_video_encoder_regularizer(&e, k, 1.0, &rs, &rt, &rr));
        if (!CHECK_OK(npred_video_encoder_forward(&e, k, in[k][0], in[k][1], B, 1, NULL, noise, NULL))) goto next;
        CHECK(e.gru.wf_ok == 0 && (!vc.core2d || !e.core2d.L[0].wfft_ok), "the train forward ran a conv by FFT");
        compare_sess(&c, keys[k], "output_train", NULL, "forward", e.out, TH_DIMS(B, T1, nn[k]));
        if (vc.core2d) /* the 2D core's own output, frame-major (B*T, K, h, w) */
            compare_sess(&c, keys[k], "intermediates", "core_output", "forward", e.core2d.output,
                         TH_DIMS(B * T1, e.core2d.out_c, e.core2d.out_h, e.core2d.out_w));
        else
            compare_sess(&c, keys[k], "intermediates", "core_output", "forward", e.core_out,
                         TH_DIMS(B, e.core.out_c, T1, e.core.out_h, e.core.out_w));
        if (vc.use_gru)
            compare_sess(&c, keys[k], "intermediates", "gru_output", "forward", e.feat,
                         TH_DIMS(B, e.feat_c, T1, e.feat_h, e.feat_w));
        compare_sess(&c, keys[k], "intermediates", "shift", "forward", e.shift, TH_DIMS(B * T1, 2));
        compare_sess(&c, keys[k], "intermediates", "readout_output", "forward", e.y, TH_DIMS(B * T1, nn[k]));
        /* the kit's full_objective: loss_scale * PoissonNLLLoss(log_input=False, eps 1e-8, sum) + regularizers,
         * target = the last T' response frames (B, T', n): the library's npred_video_poisson_loss */
        char sk[160];
        snprintf(sk, sizeof sk, "%s/loss_scale", keys[k]);
        double scale = sqrt(th_num(c.json, NAN, "N_all_trials", keys[k], NULL) / B);
        CHECK(fabs(scale - th_num(c.json, NAN, "scalars", sk, NULL)) < 1e-12, "loss_scale %g", scale);
        size_t n = (size_t)B * T1 * nn[k];
        float *dout = malloc(n * sizeof *dout);
        double pois = 0;
        if (!dout || !CHECK_OK(npred_video_poisson_loss(&pois, dout, e.out, resp, B, T1, nn[k], T, scale))) {
            free(dout);
            goto next;
        }
        const char *names[5] = {"poisson", "core_reg", "readout_reg", "core_reg_spatial", "core_reg_temporal"};
        double vals[5] = {pois, rs + rt, rr, rs, rt};
        for (int q = 0; q < (vc.core2d ? 3 : 5); q++) { /* a 2D core's regularizer is one number */
            snprintf(sk, sizeof sk, "%s/%s", keys[k], names[q]);
            double want = th_num(c.json, NAN, "scalars", sk, NULL);
            CHECK(fabs(vals[q] - want) <= 1e-4 * fabs(want) + 1e-5, "%s %.9g want %.9g", sk, vals[q], want);
        }
        snprintf(sk, sizeof sk, "%s/loss", keys[k]);
        double loss = scale * pois + rs + rt + rr, want = th_num(c.json, NAN, "scalars", sk, NULL);
        CHECK(fabs(loss - want) <= 1e-4 * fabs(want), "%s %.9g want %.9g", sk, loss, want);
        float *dv = calloc((size_t)B * C * T * H * W, sizeof *dv), *dp = calloc((size_t)B * 2 * T, sizeof *dp);
        if (dout && dv && dp && CHECK_OK(npred_video_encoder_backward(&e, dout, dv, dp))) {
            cJSON *g = th_get(c.json, "files", "sessions", keys[k], "grads", NULL), *it;
            int checked = 0;
            cJSON_ArrayForEach(it, g)
            {
                if (!strcmp(it->string, "videos")) {
                    th_compare_dims(&c, "grads", it->valuestring, dv, TH_DIMS(B, C, T, H, W));
                } else if (!strcmp(it->string, "pupil_center")) {
                    th_compare_dims(&c, "grads", it->valuestring, dp, TH_DIMS(B, 2, T));
                } else {
                    int idx = npred_ptable_find(&e.t, it->string);
                    if (!CHECK(idx >= 0, "no table entry %s", it->string)) continue;
                    const float *gp = npred_ptable_gradptr(&e.t, idx);
                    if (!gp) {
                        /* requires_grad=False parameters (the Hermite basis H, rotations Rs): buffers here;
                         * the reference saved zeros */
                        npred_array zs;
                        float *z = th_load_f32(&c, it->valuestring, &zs);
                        int zero = z != NULL;
                        for (size_t i = 0; z && i < zs.count; i++) zero &= z[i] == 0;
                        CHECK(zero && e.t.items[idx].is_buffer, "%s: no gradient here, the reference's is not zero",
                              it->string);
                        free(z);
                    } else {
                        th_compare_dims(&c, "grads", it->valuestring, gp, e.t.items[idx].ndim, e.t.items[idx].shape);
                    }
                }
                checked++;
            }
            CHECK(checked == cJSON_GetArraySize(g) && checked > 2, "%d gradients checked", checked);
            cJSON *ba = th_get(c.json, "files", "sessions", keys[k], "buffers_after", NULL);
            cJSON_ArrayForEach(it, ba)
            {
                int idx = npred_ptable_find(&e.t, it->string);
                if (CHECK(idx >= 0, "no table entry %s", it->string))
                    th_compare_dims(&c, "forward", it->valuestring, npred_ptable_ptr(&e.t, idx), e.t.items[idx].ndim,
                                    e.t.items[idx].shape);
            }
            check_detach_core(&e, k, in[k][0], in[k][1], B, noise, dout);
        }
        free(dv), free(dp), free(dout);
    next:
        free(noise), free(resp);
    }
    for (int k = 0; k < ns; k++) free(in[k][0]), free(in[k][1]);
out:
    npred_video_encoder_free(&e);
    th_case_close(&c);
}

static void test_factorized3d_encoder(void) { run_case("video_factorized3d_encoder"); }
static void test_gru_encoder(void) { run_case("video_gru_encoder"); }
static void test_gru_encoder_stacked2d(void) { run_case("video_gru_encoder_stacked2d"); }
/* the same with every supported eval convolution by FFT (the fixtures' kernels are too
 * small for the default policy): the eval outputs within the fixture's tolerance, the
 * stream bit-identical to them, the training forward and gradients unchanged (direct) */
static void fft_case(const char *name)
{
    npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_ALWAYS);
    run_case(name);
    npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_AUTO);
}
static void test_gru_encoder_fft(void) { fft_case("video_gru_encoder"); }
static void test_gru_encoder_stacked2d_fft(void) { fft_case("video_gru_encoder_stacked2d"); }

/* the kit's config forms: hidden_channels as a list of equal ints builds the same model
 * as the int; mistakes are errors naming the key */
static void expect_config_error(cJSON *mv, const char *needle)
{
    npred_video_encoder_config vc;
    npred_status s = npred_video_encoder_config_from_cjson(&vc, mv, "model.json");
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), needle), "want an error naming '%s', got %d '%s'", needle,
          s, npred_last_error());
}

static void test_config(void)
{
    th_case c;
    if (!th_case_open(&c, "video_factorized3d_encoder")) return;
    cJSON *mv = cJSON_Duplicate(th_get(c.json, "args", "make_video_model", NULL), 1);
    npred_video_encoder_config a, b;
    CHECK_OK(npred_video_encoder_config_from_cjson(&a, mv, "model.json"));
    cJSON *cd = cJSON_GetObjectItem(mv, "core_dict");
    cJSON_ReplaceItemInObject(cd, "hidden_channels", cJSON_CreateIntArray((const int[]){4, 4}, 2));
    CHECK_OK(npred_video_encoder_config_from_cjson(&b, mv, "model.json"));
    CHECK(!memcmp(&a, &b, sizeof a) && a.core.hidden_channels == 4, "a list hidden_channels gives the same config");
    cJSON_ReplaceItemInObject(cd, "hidden_channels", cJSON_CreateIntArray((const int[]){4, 8}, 2));
    expect_config_error(mv, "core_dict.hidden_channels");
    cJSON_ReplaceItemInObject(cd, "hidden_channels", cJSON_CreateNumber(4));
    /* 43faede's Core3d nonlinearities; adaptive_elu only with one layer, its shifts only with it */
    cJSON_DeleteItemFromObject(cd, "hidden_nonlinearities");
    cJSON_AddStringToObject(cd, "hidden_nonlinearities", "softplus");
    CHECK(!npred_video_encoder_config_from_cjson(&b, mv, "model.json") && b.core.act == NPRED_ACT_SOFTPLUS,
          "hidden_nonlinearities softplus");
    cJSON_ReplaceItemInObject(cd, "hidden_nonlinearities", cJSON_CreateString("tanh"));
    expect_config_error(mv, "core_dict.hidden_nonlinearities");
    cJSON_ReplaceItemInObject(cd, "hidden_nonlinearities", cJSON_CreateString("elu"));
    cJSON_DeleteItemFromObject(cd, "x_shift");
    cJSON_AddNumberToObject(cd, "x_shift", 0.5);
    expect_config_error(mv, "core_dict.x_shift");
    cJSON_ReplaceItemInObject(cd, "hidden_nonlinearities", cJSON_CreateString("adaptive_elu"));
    cJSON_DeleteItemFromObject(cd, "layers");
    cJSON_AddNumberToObject(cd, "layers", 2);
    expect_config_error(mv, "core_dict.hidden_nonlinearities");
    cJSON_ReplaceItemInObject(cd, "layers", cJSON_CreateNumber(1));
    CHECK(!npred_video_encoder_config_from_cjson(&b, mv, "model.json") && b.core.act == NPRED_ACT_ADAPTIVE_ELU &&
              b.core.x_shift == 0.5 && b.core.layers == 1,
          "adaptive_elu with x_shift 0.5 and one layer");
    cJSON_ReplaceItemInObject(cd, "hidden_nonlinearities", cJSON_CreateString("elu"));
    cJSON_ReplaceItemInObject(cd, "x_shift", cJSON_CreateNumber(0));
    cJSON_ReplaceItemInObject(cd, "layers", cJSON_CreateNumber(a.core.layers));
    CHECK_OK(npred_video_encoder_config_from_cjson(&b, mv, "model.json"));
    CHECK(!memcmp(&a, &b, sizeof a), "back to the fixture's config");
    cJSON_AddNumberToObject(cd, "hidden_kernel", 3);
    expect_config_error(mv, "core_dict.hidden_kernel");
    cJSON_DeleteItemFromObject(cd, "hidden_kernel");
    cJSON_ReplaceItemInObject(mv, "core_type", cJSON_CreateString("3d"));
    expect_config_error(mv, "core_type");
    cJSON_ReplaceItemInObject(mv, "core_type", cJSON_CreateString("3D_factorised"));
    cJSON_AddBoolToObject(mv, "use_grus", 1);
    expect_config_error(mv, "unknown key 'use_grus'");
    cJSON_DeleteItemFromObject(mv, "use_grus");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(mv, "readout_dict"), "gamma_grid_dispersion", cJSON_CreateNumber(1));
    expect_config_error(mv, "gamma_grid_dispersion");
    cJSON_Delete(mv);
    /* the kit's '3D' core type (Basic3dCore with num_frames) */
    cJSON *m3 = cJSON_Parse("{\"core_type\": \"3D\", \"core_dict\": {\"input_channels\": 3, \"hidden_channels\": [4, 4],"
                            " \"num_frames\": 3, \"input_kernel\": 5, \"hidden_kernel\": 3, \"spatial_input_kernel\": null,"
                            " \"layers\": 2}, \"readout_dict\": {}, \"readout_type\": \"gaussian\", \"use_gru\": false,"
                            " \"gru_dict\": null, \"use_shifter\": false, \"shifter_dict\": null, \"shifter_type\": \"MLP\"}");
    if (CHECK_OK(npred_video_encoder_config_from_cjson(&a, m3, "model.json")))
        CHECK(!a.core.factorized && a.core.in_kt == 3 && a.core.in_kh == 5 && a.core.hid_kt == 3 && a.core.hid_kw == 3,
              "Basic3dCore kernels from num_frames");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(m3, "core_dict"), "spatial_input_kernel", cJSON_CreateNumber(5));
    expect_config_error(m3, "spatial_input_kernel");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(m3, "core_dict"), "spatial_input_kernel", cJSON_CreateNull());
    /* a shifter_dict without sizes: 43faede's MLPShifter defaults (1 layer, 2 hidden channels) */
    cJSON_ReplaceItemInObject(m3, "use_shifter", cJSON_CreateTrue());
    cJSON_ReplaceItemInObject(m3, "shifter_dict", cJSON_CreateObject());
    if (CHECK_OK(npred_video_encoder_config_from_cjson(&a, m3, "model.json")))
        CHECK(a.use_shifter && a.shift_layers == 1 && a.hidden_channels_shifter == 2, "MLPShifter defaults %d, %d",
              a.shift_layers, a.hidden_channels_shifter);
    /* make_video_model builds the encoder with elu_offset 0.0 whatever it is given */
    cJSON_AddNumberToObject(m3, "elu_offset", 0);
    CHECK_OK(npred_video_encoder_config_from_cjson(&a, m3, "model.json"));
    cJSON_ReplaceItemInObject(m3, "elu_offset", cJSON_CreateNumber(0.5));
    expect_config_error(m3, "elu_offset");
    cJSON_Delete(m3);
    th_case_close(&c);
}

/* The kit's '3D' core type (Basic3dCore) with a temporal dilation in its hidden convs
 * (43faede: spatial_dilation on all three axes), a shifter and a cortex grid: random
 * parameters, two sessions, streamed clips equal to the whole clips' eval output. */
static void test_stream_basic3d(void)
{
    cJSON *j = cJSON_Parse(
        "{\"core_type\": \"3D\", \"core_dict\": {\"input_channels\": 2, \"hidden_channels\": 3, \"num_frames\": 3,"
        " \"input_kernel\": 5, \"hidden_kernel\": 3, \"spatial_input_kernel\": null, \"layers\": 3,"
        " \"spatial_dilation\": 2, \"padding\": true}, \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true,"
        " \"init_mu_range\": 0.2, \"init_sigma\": 1.0, \"gamma_readout\": 0.1, \"gauss_type\": \"full\","
        " \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1,"
        " \"hidden_features\": 6, \"final_tanh\": true}}, \"use_gru\": false, \"use_shifter\": true,"
        " \"shifter_type\": \"MLP\", \"shifter_dict\": {\"shift_layers\": 2, \"hidden_channels_shifter\": 4}}");
    npred_video_encoder_config vc;
    npred_video_encoder e;
    int B = 2, C = 2, T = 13, H = 10, W = 12, nn[2] = {7, 5};
    const char *keys[2] = {"a", "b"};
    if (!CHECK(j, "config JSON") || !CHECK_OK(npred_video_encoder_config_from_cjson(&vc, j, "basic3d.json"))) {
        cJSON_Delete(j);
        return;
    }
    cJSON_Delete(j);
    if (!CHECK_OK(npred_video_encoder_create(&e, &vc, C, T, H, W, 2, keys, nn, B))) {
        npred_video_encoder_free(&e);
        return;
    }
    /* warm-up: layer 0 (3 - 1) * 1, layers 1 and 2 (3 - 1) * 2 each */
    CHECK(npred_video_encoder_stream_warmup(&e) == 10 && e.out_t == T - 10, "warm-up %d, T' %d",
          npred_video_encoder_stream_warmup(&e), e.out_t);
    uint64_t rs = 11;
    for (size_t i = 0; i < e.t.n_params; i++) e.t.data[i] = (float)(0.2 * th_rand(&rs)); /* th_rand: [-1, 1) */
    for (int i = 0; i < e.t.n; i++) { /* BatchNorm running stats: a variance > 0 */
        const char *nm = e.t.items[i].name;
        float *v = npred_ptable_ptr(&e.t, i);
        if (strstr(nm, "running_var"))
            for (size_t q = 0; q < e.t.items[i].count; q++) v[q] = (float)(1.0 + 0.5 * th_rand(&rs));
        else if (strstr(nm, "running_mean"))
            for (size_t q = 0; q < e.t.items[i].count; q++) v[q] = (float)(0.1 * th_rand(&rs));
    }
    float *in[2][2], *fulls[2] = {0};
    size_t nv = (size_t)B * C * T * H * W, np = (size_t)B * 2 * T;
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        in[k][0] = malloc(nv * sizeof(float)), in[k][1] = malloc(np * sizeof(float));
        fulls[k] = malloc((size_t)B * e.out_t * nn[k] * sizeof(float));
        ok &= in[k][0] && in[k][1] && fulls[k];
        for (size_t i = 0; ok && i < nv; i++) in[k][0][i] = (float)th_rand(&rs);
        for (size_t i = 0; ok && i < np; i++) in[k][1][i] = (float)(0.5 * th_rand(&rs));
        ok = ok && CHECK_OK(npred_video_encoder_forward(&e, k, in[k][0], in[k][1], B, 0, NULL, NULL, fulls[k]));
        int fine = ok, varies = 0;
        for (size_t i = 0; ok && i < (size_t)B * e.out_t * nn[k]; i++) {
            fine &= isfinite(fulls[k][i]) && fulls[k][i] > 0;
            varies |= fulls[k][i] != fulls[k][0];
        }
        ok = ok && CHECK(fine && varies, "session %d: rates finite, > 0 and not all equal", k);
    }
    if (CHECK(ok, "inputs and eval outputs")) check_stream(&e, 2, in, fulls, B, C, T, H * W, nn);
    for (int k = 0; k < 2; k++) free(in[k][0]), free(in[k][1]), free(fulls[k]);
    npred_video_encoder_free(&e);
}

int main(void)
{
    RUN(test_config);
    RUN(test_factorized3d_encoder);
    RUN(test_gru_encoder);
    RUN(test_gru_encoder_stacked2d);
    RUN(test_gru_encoder_fft);
    RUN(test_gru_encoder_stacked2d_fft);
    RUN(test_stream_basic3d);
    return th_summary();
}
