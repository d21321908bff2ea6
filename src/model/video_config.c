/* make_video_model arguments -> npred_video_encoder_config (see video_encoder.h). */
#include <cJSON.h>
#include <limits.h>
#include <string.h>

#include "base/json.h"
#include "model/config.h"
#include "model/video_encoder.h"

#define ANY NPRED_JSON_ANY

/* an int, or a list of equal ints (the kit's list form of hidden_channels) */
static int read_uniform_int(npred_json_reader *r, const cJSON *v, int lo, int *out)
{
    if (!cJSON_IsArray(v)) return npred_json_int(r, v, lo, ANY, out);
    int n = cJSON_GetArraySize(v);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!npred_json_is_integer(e) || e->valuedouble < lo || e->valuedouble > INT_MAX)
            return npred_json_fail(r, v, "an integer >= %d or a list of them", lo);
        if (i && (int)e->valuedouble != *out)
            return npred_json_fail(r, v, "equal values (43faede's 3D cores take one hidden_channels for every "
                                         "layer; different ones are not supported)");
        *out = (int)e->valuedouble;
    }
    return n ? 1 : npred_json_fail(r, v, "a non-empty list");
}

/* an int k (k x k) or a list [kh, kw] */
static int read_kernel2(npred_json_reader *r, const cJSON *v, int *kh, int *kw)
{
    if (!cJSON_IsArray(v)) {
        if (!npred_json_int(r, v, 1, ANY, kh)) return 0;
        *kw = *kh;
        return 1;
    }
    const cJSON *a = cJSON_GetArrayItem(v, 0), *b = cJSON_GetArrayItem(v, 1);
    if (cJSON_GetArraySize(v) != 2 || !npred_json_is_integer(a) || !npred_json_is_integer(b) || a->valuedouble < 1 ||
        b->valuedouble < 1 || a->valuedouble > INT_MAX || b->valuedouble > INT_MAX)
        return npred_json_fail(r, v, "an integer >= 1 or a list [kh, kw]");
    *kh = (int)a->valuedouble, *kw = (int)b->valuedouble;
    return 1;
}

static int require_true(npred_json_reader *r, const cJSON *v, const char *why)
{
    int b = 0;
    if (!npred_json_bool(r, v, &b)) return 0;
    return b ? 1 : npred_json_fail(r, v, "true (%s)", why);
}

static int require_zero(npred_json_reader *r, const cJSON *v, const char *why)
{
    double d = 0;
    if (!npred_json_num(r, v, -ANY, ANY, &d)) return 0;
    return d == 0 ? 1 : npred_json_fail(r, v, "0 (%s)", why);
}

static int require_str(npred_json_reader *r, const cJSON *v, const char *want, const char *why)
{
    const char *s = NULL;
    if (!npred_json_str(r, v, &s)) return 0;
    return strcmp(s, want) ? npred_json_fail(r, v, "\"%s\" (%s)", want, why) : 1;
}

/* core_dict of Factorized3dCore ('3D_factorised') or Basic3dCore ('3D', with the kit's
 * num_frames / input_kernel / hidden_kernel rewriting) */
static npred_status read_core3d(npred_core3d_config *c, const cJSON *d, int factorized, const char *where)
{
    npred_json_reader r = {where, "core_dict.", NPRED_OK};
    npred_core3d_config_default(c, factorized);
    int num_frames = 0, have_sik = 0, ik = 0, hk = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, d)
    {
        const char *k = e->string;
        if (!strcmp(k, "input_channels")) npred_json_int(&r, e, 1, ANY, &c->input_channels);
        else if (!strcmp(k, "hidden_channels")) read_uniform_int(&r, e, 1, &c->hidden_channels);
        else if (!strcmp(k, "layers")) npred_json_int(&r, e, 1, NPRED_CORE3D_MAXLAYERS, &c->layers);
        else if (!strcmp(k, "stride")) npred_json_int(&r, e, 1, ANY, &c->stride);
        else if (!strcmp(k, "gamma_input_spatial")) npred_json_num(&r, e, -ANY, ANY, &c->gamma_input_spatial);
        else if (!strcmp(k, "gamma_input_temporal")) npred_json_num(&r, e, -ANY, ANY, &c->gamma_input_temporal);
        else if (!strcmp(k, "hidden_nonlinearities")) {
            const char *s = NULL;
            if (npred_json_str(&r, e, &s)) {
                if (!strcmp(s, "elu")) c->act = NPRED_ACT_ELU;
                else if (!strcmp(s, "relu")) c->act = NPRED_ACT_RELU;
                else if (!strcmp(s, "softplus")) c->act = NPRED_ACT_SOFTPLUS;
                else if (!strcmp(s, "adaptive_elu")) c->act = NPRED_ACT_ADAPTIVE_ELU;
                else npred_json_fail(&r, e, "\"elu\", \"relu\", \"softplus\" or \"adaptive_elu\" (43faede's Core3d "
                                     "nonlinearities)");
            }
        } else if (!strcmp(k, "x_shift")) npred_json_num(&r, e, -ANY, ANY, &c->x_shift);
        else if (!strcmp(k, "y_shift")) npred_json_num(&r, e, -ANY, ANY, &c->y_shift);
        else if (!strcmp(k, "bias")) npred_json_bool(&r, e, &c->bias);
        else if (!strcmp(k, "batch_norm")) npred_json_bool(&r, e, &c->batch_norm);
        else if (!strcmp(k, "padding")) npred_json_bool(&r, e, &c->padding);
        else if (!strcmp(k, "batch_norm_scale")) require_true(&r, e, "Bias3D/Scale3D layers are not built yet");
        else if (!strcmp(k, "independent_bn_bias")) require_true(&r, e, "Bias3D/Scale3D layers are not built yet");
        else if (!strcmp(k, "momentum")) npred_json_num(&r, e, 0, 1, &c->momentum);
        else if (!strcmp(k, "laplace_padding")) {
            if (npred_json_int_or_null(&r, e, 0, ANY, &c->laplace_padding) == 2) c->laplace_padding = -1;
        } else if (!strcmp(k, "input_regularizer")) require_str(&r, e, "LaplaceL2norm", "the only one built so far");
        else if (!strcmp(k, "cuda")) {
            int b;
            npred_json_bool(&r, e, &b); /* the device; npred runs on the CPU */
        } else if (!strcmp(k, "final_nonlin")) npred_json_bool(&r, e, &c->final_nonlin);
        else if (!strcmp(k, "spatial_dilation")) npred_json_int(&r, e, 1, ANY, &c->spatial_dilation);
        else if (!strcmp(k, "temporal_dilation")) npred_json_int(&r, e, 1, ANY, &c->temporal_dilation);
        else if (factorized && !strcmp(k, "spatial_input_kernel")) read_kernel2(&r, e, &c->in_kh, &c->in_kw);
        else if (factorized && !strcmp(k, "temporal_input_kernel")) npred_json_int(&r, e, 1, ANY, &c->in_kt);
        else if (factorized && !strcmp(k, "spatial_hidden_kernel")) read_kernel2(&r, e, &c->hid_kh, &c->hid_kw);
        else if (factorized && !strcmp(k, "temporal_hidden_kernel")) npred_json_int(&r, e, 1, ANY, &c->hid_kt);
        else if (!factorized && !strcmp(k, "num_frames")) npred_json_int(&r, e, 1, ANY, &num_frames);
        else if (!factorized && !strcmp(k, "input_kernel")) npred_json_int(&r, e, 1, ANY, &ik);
        else if (!factorized && !strcmp(k, "hidden_kernel")) npred_json_int(&r, e, 1, ANY, &hk);
        else if (!factorized && !strcmp(k, "spatial_input_kernel")) {
            if (!cJSON_IsNull(e))
                npred_json_fail(&r, e, "null (the kit then reads core_dict['in_channels'] and fails)");
            have_sik = 1;
        } else npred_json_unknown(&r, e, factorized ? "not a Factorized3dCore argument" : "not a Basic3dCore argument");
        if (r.st) return r.st;
    }
    if (!factorized) {
        if (!num_frames || !ik || !hk || !have_sik)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: core_type '3D' needs core_dict num_frames, input_kernel, "
                                "hidden_kernel and spatial_input_kernel (null), as the kit reads them", where);
        c->in_kt = c->hid_kt = num_frames;
        c->in_kh = c->in_kw = ik;
        c->hid_kh = c->hid_kw = hk;
    }
    if (c->hidden_channels < 1 || c->in_kt < 1 || c->in_kh < 1 || (c->layers > 1 && (c->hid_kt < 1 || c->hid_kh < 1)))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: core_dict needs hidden_channels and the kernel sizes", where);
    if (c->act != NPRED_ACT_ADAPTIVE_ELU && (c->x_shift != 0 || c->y_shift != 0))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core_dict.%s': expected 0 (it acts only with "
                            "hidden_nonlinearities \"adaptive_elu\")", where, c->x_shift != 0 ? "x_shift" : "y_shift");
    if (c->act == NPRED_ACT_ADAPTIVE_ELU && c->layers > 1)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core_dict.hidden_nonlinearities': \"adaptive_elu\" needs "
                            "layers 1 (43faede builds the hidden layers' AdaptiveELU with x_shift=/y_shift=, which "
                            "it does not take, and fails)", where);
    return NPRED_OK;
}

/* a 2D core_dict through the model config reader (0.3.0 names); 43faede's
 * final_batchnorm_scale True is 0.3.0's behaviour */
static npred_status read_core2d(npred_core_config *out, const cJSON *d, int equivariant, const char *where)
{
    cJSON *root = cJSON_CreateObject(), *args = cJSON_Duplicate(d, 1);
    npred_status st = NPRED_OK;
    if (!root || !args) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    const cJSON *fbs = args ? cJSON_GetObjectItemCaseSensitive(args, "final_batchnorm_scale") : NULL;
    if (!st && fbs) {
        if (!cJSON_IsTrue(fbs))
            st = npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core_dict.final_batchnorm_scale': expected true (false is "
                              "not built yet)", where);
        cJSON_DeleteItemFromObject(args, "final_batchnorm_scale");
    }
    if (!st && equivariant) cJSON_AddStringToObject(args, "type", "RotationEquivariant2dCore");
    if (!st) {
        cJSON_AddItemToObject(root, "core", args);
        args = NULL;
        npred_model_config m;
        st = npred_model_config_from_cjson(&m, root, where);
        if (!st) *out = m.core;
    }
    cJSON_Delete(args);
    cJSON_Delete(root);
    return st;
}

static npred_status read_readout(npred_video_encoder_config *c, const cJSON *d, const char *where)
{
    npred_json_reader r = {where, "readout_dict.", NPRED_OK};
    const cJSON *e;
    static const char *const gauss[] = {"full", "uncorrelated", "isotropic"};
    cJSON_ArrayForEach(e, d)
    {
        const char *k = e->string;
        if (!strcmp(k, "bias")) npred_json_bool(&r, e, &c->readout_bias);
        else if (!strcmp(k, "init_mu_range")) npred_json_num(&r, e, 0, ANY, &c->init_mu_range);
        else if (!strcmp(k, "init_sigma")) npred_json_num(&r, e, 0, ANY, &c->init_sigma);
        else if (!strcmp(k, "gamma_readout")) npred_json_num(&r, e, -ANY, ANY, &c->gamma_readout);
        else if (!strcmp(k, "gauss_type")) {
            int g;
            if (npred_json_choice(&r, e, gauss, 3, &g)) c->gauss_type = (npred_gauss_type)g;
        } else if (!strcmp(k, "grid_mean_predictor")) {
            if (cJSON_IsNull(e)) {
                c->predicted_grid = 0;
            } else if (!cJSON_IsObject(e)) {
                npred_json_fail(&r, e, "null or an object {type: cortex, ...}");
            } else {
                npred_json_reader g = {where, "readout_dict.grid_mean_predictor.", NPRED_OK};
                const cJSON *f;
                c->predicted_grid = 1;
                cJSON_ArrayForEach(f, e)
                {
                    if (!strcmp(f->string, "type")) require_str(&g, f, "cortex", "the kit's only grid predictor");
                    else if (!strcmp(f->string, "input_dimensions")) npred_json_int(&g, f, 1, ANY, &c->gmp_input_dimensions);
                    else if (!strcmp(f->string, "hidden_layers")) npred_json_int(&g, f, 0, ANY, &c->gmp_hidden_layers);
                    else if (!strcmp(f->string, "hidden_features")) npred_json_int(&g, f, 1, ANY, &c->gmp_hidden_features);
                    else if (!strcmp(f->string, "final_tanh")) npred_json_bool(&g, f, &c->gmp_final_tanh);
                    else npred_json_unknown(&g, f, NULL);
                    if (g.st) return g.st;
                }
            }
        } else if (!strcmp(k, "share_features") || !strcmp(k, "share_grid")) {
            int b;
            if (npred_json_bool(&r, e, &b) && b) npred_json_fail(&r, e, "false (shared video readouts are not built yet)");
        } else if (!strcmp(k, "shared_match_ids")) {
            if (!cJSON_IsNull(e)) npred_json_fail(&r, e, "null (shared video readouts are not built yet)");
        } else if (!strcmp(k, "gamma_grid_dispersion")) require_zero(&r, e, "the kit's readout swallows it unused");
        else npred_json_unknown(&r, e, "not a readout_dict argument");
        if (r.st) return r.st;
    }
    return NPRED_OK;
}

npred_status npred_video_encoder_config_from_cjson(npred_video_encoder_config *c, const cJSON *obj, const char *where)
{
    memset(c, 0, sizeof *c);
    if (!where) where = "video model config";
    if (!cJSON_IsObject(obj)) return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", where);
    npred_json_reader r = {where, "", NPRED_OK};
    if (!npred_json_unique_keys(&r, obj)) return r.st;
    c->readout_bias = 1;
    c->gauss_type = NPRED_GAUSS_FULL;
    c->init_mu_range = 0.1, c->init_sigma = 1.0, c->gamma_readout = 0;
    c->gmp_input_dimensions = 2, c->gmp_hidden_features = 20;
    c->shift_layers = 1, c->hidden_channels_shifter = 2; /* 43faede MLPShifter defaults */
    const cJSON *core_dict = NULL, *readout = NULL, *gru = NULL, *shifter = NULL, *e;
    const char *core_type = NULL;
    int use_gru_set = 0, use_shifter_set = 0;
    cJSON_ArrayForEach(e, obj)
    {
        const char *k = e->string;
        if (!strcmp(k, "seed")) npred_json_i64(&r, e, -ANY, ANY, &c->seed);
        else if (!strcmp(k, "core_dict")) core_dict = cJSON_IsObject(e) ? e : (npred_json_fail(&r, e, "an object"), NULL);
        else if (!strcmp(k, "core_type")) npred_json_str(&r, e, &core_type);
        else if (!strcmp(k, "readout_dict")) readout = cJSON_IsObject(e) ? e : (npred_json_fail(&r, e, "an object"), NULL);
        else if (!strcmp(k, "readout_type")) require_str(&r, e, "gaussian", "the only video readout built so far");
        else if (!strcmp(k, "use_gru")) use_gru_set = npred_json_bool(&r, e, &c->use_gru);
        else if (!strcmp(k, "gru_dict")) gru = cJSON_IsObject(e) ? e : NULL;
        else if (!strcmp(k, "use_shifter")) use_shifter_set = npred_json_bool(&r, e, &c->use_shifter);
        else if (!strcmp(k, "shifter_dict")) shifter = cJSON_IsObject(e) ? e : NULL;
        else if (!strcmp(k, "shifter_type")) require_str(&r, e, "MLP", "the only video shifter built so far");
        else if (!strcmp(k, "elu_offset"))
            require_zero(&r, e, "make_video_model builds VideoFiringRateEncoder with elu_offset=0.0 whatever it is given");
        else if (!strcmp(k, "nonlinearity_type")) require_str(&r, e, "elu", "the only output nonlinearity built so far");
        else if (!strcmp(k, "nonlinearity_config")) {
            if (!cJSON_IsNull(e)) npred_json_fail(&r, e, "null");
        } else if (!strcmp(k, "deeplake_ds")) {
            int b;
            if (npred_json_bool(&r, e, &b) && b) npred_json_fail(&r, e, "false (npred reads the file tree)");
        } else npred_json_unknown(&r, e, "not a make_video_model argument");
        if (r.st) return r.st;
    }
    if (!core_dict || !core_type || !readout || !use_gru_set || !use_shifter_set)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: core_dict, core_type, readout_dict, use_gru and use_shifter are "
                            "required (make_video_model has no defaults for them)", where);
    npred_status st;
    if (!strcmp(core_type, "3D_factorised") || !strcmp(core_type, "3D")) {
        st = read_core3d(&c->core, core_dict, !strcmp(core_type, "3D_factorised"), where);
    } else if (!strcmp(core_type, "2D") || !strcmp(core_type, "2D_equivariant")) {
        c->core2d = 1;
        st = read_core2d(&c->core2d_cfg, core_dict, !strcmp(core_type, "2D_equivariant"), where);
    } else {
        st = npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core_type': expected \"3D_factorised\", \"3D\", \"2D\" or "
                          "\"2D_equivariant\"", where);
    }
    if (st || (st = read_readout(c, readout, where))) return st;
    if (c->use_gru) {
        if (!gru) return npred_errorf(NPRED_ERR_CONFIG, "%s: use_gru needs gru_dict", where);
        npred_json_reader g = {where, "gru_dict.", NPRED_OK};
        c->gru.pad_input = 1;
        cJSON_ArrayForEach(e, gru)
        {
            const char *k = e->string;
            if (!strcmp(k, "input_channels")) npred_json_int(&g, e, 1, ANY, &c->gru.input_channels);
            else if (!strcmp(k, "rec_channels")) npred_json_int(&g, e, 1, ANY, &c->gru.rec_channels);
            else if (!strcmp(k, "input_kern")) npred_json_int(&g, e, 1, ANY, &c->gru.input_kern);
            else if (!strcmp(k, "rec_kern")) npred_json_int(&g, e, 1, ANY, &c->gru.rec_kern);
            else if (!strcmp(k, "gamma_rec")) npred_json_num(&g, e, -ANY, ANY, &c->gru.gamma_rec);
            else if (!strcmp(k, "pad_input")) npred_json_bool(&g, e, &c->gru.pad_input);
            else npred_json_unknown(&g, e, "not a GRU_Module argument");
            if (g.st) return g.st;
        }
    }
    if (c->use_shifter) {
        if (!shifter) return npred_errorf(NPRED_ERR_CONFIG, "%s: use_shifter needs shifter_dict", where);
        npred_json_reader g = {where, "shifter_dict.", NPRED_OK};
        cJSON_ArrayForEach(e, shifter)
        {
            const char *k = e->string;
            if (!strcmp(k, "shift_layers")) npred_json_int(&g, e, 1, NPRED_MLP_MAXLAYERS, &c->shift_layers);
            else if (!strcmp(k, "hidden_channels_shifter")) npred_json_int(&g, e, 1, ANY, &c->hidden_channels_shifter);
            else if (!strcmp(k, "input_channels_shifter")) {
                int v;
                if (npred_json_int(&g, e, -ANY, ANY, &v) && v != 2)
                    npred_json_fail(&g, e, "2 (the kit swallows it; the shifter always takes the 2 pupil coordinates)");
            } else if (!strcmp(k, "gamma_shifter")) require_zero(&g, e, "the kit's trainer never adds the shifter's regularizer");
            else npred_json_unknown(&g, e, "not an MLPShifter argument");
            if (g.st) return g.st;
        }
    }
    return NPRED_OK;
}
