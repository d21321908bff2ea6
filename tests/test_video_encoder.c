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
#include "model/config.h"
#include "model/video_encoder.h"

static int ival(cJSON *o, const char *key, int idx)
{
    cJSON *v = cJSON_GetObjectItem(o, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, idx);
    return v ? (int)v->valuedouble : -1;
}

/* the kit's '2D' / '2D_equivariant' core_dict through the model config reader (0.3.0
 * names; 43faede's final_batchnorm_scale True is 0.3.0's behaviour and is dropped) */
static int core2d_config(th_case *c, cJSON *cd, const char *type, npred_core_config *out)
{
    cJSON *root = cJSON_CreateObject(), *args = cJSON_Duplicate(cd, 1);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(args, "final_batchnorm_scale")), "final_batchnorm_scale is True");
    cJSON_DeleteItemFromObject(args, "final_batchnorm_scale");
    if (!strcmp(type, "2D_equivariant")) cJSON_AddStringToObject(args, "type", "RotationEquivariant2dCore");
    cJSON_AddItemToObject(root, "core", args);
    npred_model_config m;
    int ok = CHECK_OK(npred_model_config_from_cjson(&m, root, c->name));
    cJSON_Delete(root);
    *out = m.core;
    return ok;
}

static int config_from_case(th_case *c, npred_video_encoder_config *vc)
{
    memset(vc, 0, sizeof *vc);
    cJSON *mv = th_get(c->json, "args", "make_video_model", NULL);
    cJSON *cd = th_get(mv, "core_dict", NULL), *rd = th_get(mv, "readout_dict", NULL), *sd = th_get(mv, "shifter_dict", NULL);
    const char *type = cJSON_GetStringValue(th_get(mv, "core_type", NULL));
    if (!CHECK(type != NULL, "core_type")) return 0;
    if (cJSON_IsTrue(th_get(mv, "use_gru", NULL))) {
        cJSON *gd = th_get(mv, "gru_dict", NULL);
        vc->use_gru = 1;
        vc->gru = (npred_convgru_config){.input_channels = ival(gd, "input_channels", 0),
                                         .rec_channels = ival(gd, "rec_channels", 0),
                                         .input_kern = ival(gd, "input_kern", 0), .rec_kern = ival(gd, "rec_kern", 0),
                                         .pad_input = 1, .gamma_rec = th_num(gd, NAN, "gamma_rec", NULL)};
    }
    if (strcmp(type, "3D_factorised")) {
        vc->core2d = 1;
        if (!core2d_config(c, cd, type, &vc->core2d_cfg)) return 0;
    }
    npred_core3d_config *cc = &vc->core;
    npred_core3d_config_default(cc, 1);
    cc->input_channels = ival(cd, "input_channels", 0);
    cc->hidden_channels = ival(cd, "hidden_channels", 0);
    cc->layers = ival(cd, "layers", 0);
    cc->stride = ival(cd, "stride", 0);
    cc->in_kt = ival(cd, "temporal_input_kernel", 0);
    cc->in_kh = ival(cd, "spatial_input_kernel", 0), cc->in_kw = ival(cd, "spatial_input_kernel", 1);
    cc->hid_kt = ival(cd, "temporal_hidden_kernel", 0);
    cc->hid_kh = ival(cd, "spatial_hidden_kernel", 0), cc->hid_kw = ival(cd, "spatial_hidden_kernel", 1);
    cc->gamma_input_spatial = th_num(cd, NAN, "gamma_input_spatial", NULL);
    cc->gamma_input_temporal = th_num(cd, NAN, "gamma_input_temporal", NULL);
    cc->bias = cJSON_IsTrue(th_get(cd, "bias", NULL));
    cc->batch_norm = cJSON_IsTrue(th_get(cd, "batch_norm", NULL));
    cc->padding = cJSON_IsTrue(th_get(cd, "padding", NULL));
    cc->final_nonlin = cJSON_IsTrue(th_get(cd, "final_nonlin", NULL));
    cc->momentum = th_num(cd, NAN, "momentum", NULL);
    vc->use_shifter = cJSON_IsTrue(th_get(mv, "use_shifter", NULL));
    vc->shift_layers = ival(sd, "shift_layers", 0);
    vc->hidden_channels_shifter = ival(sd, "hidden_channels_shifter", 0);
    vc->init_mu_range = th_num(rd, NAN, "init_mu_range", NULL);
    vc->init_sigma = th_num(rd, NAN, "init_sigma", NULL);
    vc->gamma_readout = th_num(rd, NAN, "gamma_readout", NULL);
    cJSON *gmp = th_get(rd, "grid_mean_predictor", NULL);
    vc->gmp_hidden_layers = ival(gmp, "hidden_layers", 0);
    vc->gmp_hidden_features = ival(gmp, "hidden_features", 0);
    vc->gmp_final_tanh = cJSON_IsTrue(th_get(gmp, "final_tanh", NULL));
    vc->elu_offset = th_num(mv, NAN, "elu_offset", NULL);
    return 1;
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
    int B = ival(th_get(c.json, "args", NULL), "batch_size", 0);
    B = cJSON_GetArrayItem(shape, 0)->valueint;
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
    /* eval on the initial state, both sessions first */
    for (int k = 0; k < ns; k++) {
        if (!in[k][0] || !in[k][1]) continue;
        if (CHECK_OK(npred_video_encoder_forward(&e, k, in[k][0], in[k][1], B, 0, NULL, NULL, NULL)))
            compare_sess(&c, keys[k], "output_eval", NULL, "forward", e.out, TH_DIMS(B, T1, nn[k]));
    }
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
         * target = the last T' response frames (B, T', n) */
        char sk[160];
        snprintf(sk, sizeof sk, "%s/loss_scale", keys[k]);
        double scale = sqrt(th_num(c.json, NAN, "N_all_trials", keys[k], NULL) / B);
        CHECK(fabs(scale - th_num(c.json, NAN, "scalars", sk, NULL)) < 1e-12, "loss_scale %g", scale);
        size_t n = (size_t)B * T1 * nn[k];
        float *dout = malloc(n * sizeof *dout);
        double pois = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T1; t++)
                for (int j = 0; j < nn[k]; j++) {
                    size_t i = ((size_t)b * T1 + t) * nn[k] + j;
                    double y = resp[((size_t)b * nn[k] + j) * T + (T - T1 + t)], o = e.out[i];
                    pois += o - y * log(o + 1e-8);
                    dout[i] = (float)(scale * (1 - y / (o + 1e-8)));
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

int main(void)
{
    RUN(test_factorized3d_encoder);
    RUN(test_gru_encoder);
    RUN(test_gru_encoder_stacked2d);
    return th_summary();
}
