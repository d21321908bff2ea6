/* Model configuration: JSON <-> npred_model_config (see config.h). */
#include "model/config.h"

#include "base/json.h"
#include "nn/mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANY NPRED_JSON_ANY

static int read_hidden_kern(npred_json_reader *r, const cJSON *it, npred_core_config *c)
{
    if (cJSON_IsNumber(it)) {
        int k;
        /* the same bound as a list's entries, so a saved config reads back */
        if (!npred_json_int(r, it, -1e9, 1e9, &k)) return 0;
        for (int i = 0; i < NPRED_CORE_MAXLAYERS; i++) c->hidden_kern[i] = k;
        return 1;
    }
    /* an empty list is what a saved one-layer core holds (no hidden layers) */
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) > NPRED_CORE_MAXLAYERS)
        return npred_json_fail(r, it, "an integer or a list of integers");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it)
    {
        if (!npred_json_is_integer(e) || fabs(e->valuedouble) > 1e9)
            return npred_json_fail(r, it, "an integer or a list of integers");
        c->hidden_kern[i++] = (int)e->valuedouble;
    }
    for (; i < NPRED_CORE_MAXLAYERS; i++) c->hidden_kern[i] = -1; /* must not be used */
    return 1;
}

static int read_stack(npred_json_reader *r, const cJSON *it, npred_model_config *m)
{
    m->core_stack_is_none = m->core_stack_is_int = 0;
    if (cJSON_IsNull(it)) {
        m->core_stack_is_none = 1;
        return 1;
    }
    if (cJSON_IsNumber(it)) {
        if (!npred_json_int(r, it, -ANY, ANY, &m->core_stack_int)) return 0;
        m->core_stack_is_int = 1;
        return 1;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) < 1 || cJSON_GetArraySize(it) > NPRED_CORE_MAXLAYERS)
        return npred_json_fail(r, it, "null, an integer or a list of layer indices");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it)
    {
        if (!npred_json_is_integer(e) || fabs(e->valuedouble) > 1e9)
            return npred_json_fail(r, it, "null, an integer or a list of layer indices");
        m->core.stack[i++] = (int)e->valuedouble;
    }
    m->core.n_stack = i;
    return 1;
}

static const char *const input_reg_names[] = {"LaplaceL2", "LaplaceL2norm", "GaussianLaplaceL2", "LaplaceL1"};
static const char *const gauss_type_names[] = {"full", "uncorrelated", "isotropic"};

static int read_gmp(npred_json_reader *r, const cJSON *it, npred_readout_config *c)
{
    if (cJSON_IsNull(it)) {
        c->predicted_grid = 0;
        return 1;
    }
    if (!cJSON_IsObject(it)) return npred_json_fail(r, it, "null or an object {type, input_dimensions, hidden_layers, ...}");
    c->predicted_grid = 1;
    c->gmp_input_dimensions = 2;
    c->gmp_hidden_layers = 0;
    c->gmp_hidden_features = 20;
    c->gmp_final_tanh = 0;
    npred_json_reader sub = {r->where, "grid_mean_predictor.", NPRED_OK};
    const cJSON *e;
    int have_type = 0;
    cJSON_ArrayForEach(e, it)
    {
        if (!strcmp(e->string, "type")) {
            const char *s = cJSON_GetStringValue(e);
            if (!s || strcmp(s, "cortex")) npred_json_fail(&sub, e, "\"cortex\" (the only grid mean predictor of 0.3.0)");
            have_type = 1;
        } else if (!strcmp(e->string, "input_dimensions")) npred_json_int(&sub, e, -ANY, ANY, &c->gmp_input_dimensions);
        else if (!strcmp(e->string, "hidden_layers")) npred_json_int(&sub, e, -ANY, ANY, &c->gmp_hidden_layers);
        else if (!strcmp(e->string, "hidden_features")) npred_json_int(&sub, e, -ANY, ANY, &c->gmp_hidden_features);
        else if (!strcmp(e->string, "final_tanh")) npred_json_bool(&sub, e, &c->gmp_final_tanh);
        else npred_json_unknown(&sub, e, NULL);
        if (sub.st) break;
    }
    if (!sub.st && !have_type)
        sub.st = npred_errorf(NPRED_ERR_CONFIG, "%s: grid_mean_predictor needs \"type\": \"cortex\"", r->where);
    if (!sub.st && (c->gmp_input_dimensions < 1 || c->gmp_hidden_layers < 0 || c->gmp_hidden_features < 1))
        sub.st = npred_errorf(NPRED_ERR_CONFIG, "%s: grid_mean_predictor sizes must be positive", r->where);
    if (sub.st) {
        r->st = sub.st;
        return 0;
    }
    return 1;
}

static int readout_type_from(const char *s, npred_readout_type *t)
{
    if (!s) return 0;
    if (!strcmp(s, "FullGaussian2d")) *t = NPRED_READOUT_FULL_GAUSSIAN2D;
    else if (!strcmp(s, "Gaussian2d")) *t = NPRED_READOUT_GAUSSIAN2D;
    else if (!strcmp(s, "FullFactorized2d") || !strcmp(s, "SpatialXFeatureLinear") || !strcmp(s, "FullSXF"))
        *t = NPRED_READOUT_FACTORIZED;
    else if (!strcmp(s, "PointPooled2d")) *t = NPRED_READOUT_POINT_POOLED;
    else if (!strcmp(s, "AttentionReadout")) *t = NPRED_READOUT_ATTENTION;
    else if (!strcmp(s, "PointPyramid2d")) *t = NPRED_READOUT_POINT_PYRAMID;
    else return 0;
    return 1;
}

/* neuralpredictors 0.3.0 readouts that do not work in the reference itself
 * (docs/readouts.md): a message saying why; 0 for other names */
static int unsupported_readout(const char *s, const char *where, const char *key)
{
    const char *why = NULL;
    if (s && !strcmp(s, "DeterministicGaussian2d"))
        why = "its forward clamps the mu Parameter in place, which PyTorch refuses while training "
              "(0.3.0 cannot train it)";
    else if (s && !strcmp(s, "RemappedGaussian2d"))
        why = "its forward has no return statement and outputs None in 0.3.0";
    if (!why) return 0;
    npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: key '%s': %s is not supported: %s (docs/readouts.md)", where, key, s,
                 why);
    return 1;
}

static const char *readout_type_name(npred_readout_type t)
{
    switch (t) {
    case NPRED_READOUT_FULL_GAUSSIAN2D: return "FullGaussian2d";
    case NPRED_READOUT_GAUSSIAN2D: return "Gaussian2d";
    case NPRED_READOUT_FACTORIZED: return "FullFactorized2d";
    case NPRED_READOUT_POINT_POOLED: return "PointPooled2d";
    case NPRED_READOUT_ATTENTION: return "AttentionReadout";
    case NPRED_READOUT_POINT_PYRAMID: return "PointPyramid2d";
    }
    return "?";
}

static void readout_reset_type(npred_readout_config *c, npred_readout_type t)
{
    double frw = c->feature_reg_weight;
    int bias = c->bias;
    npred_readout_config_default(c, t, 0, 0, 0, 0);
    c->feature_reg_weight = frw;
    c->bias = bias;
}

/* The readout classes that take key k as an argument (a bit per
 * npred_readout_type); 0 for the keys every readout takes. The saved form
 * (npred_model_config_to_json) writes exactly these keys per readout. */
static unsigned readout_key_types(const char *k)
{
#define T(x) (1u << NPRED_READOUT_##x)
    static const struct {
        const char *key;
        unsigned types;
    } own[] = {
        {"init_mu_range", T(FULL_GAUSSIAN2D) | T(GAUSSIAN2D)},
        {"init_sigma", T(FULL_GAUSSIAN2D)},
        {"gauss_type", T(FULL_GAUSSIAN2D)},
        {"grid_mean_predictor", T(FULL_GAUSSIAN2D)},
        {"init_sigma_range", T(GAUSSIAN2D)},
        {"fixed_sigma", T(GAUSSIAN2D)},
        {"batch_sample", T(FULL_GAUSSIAN2D) | T(GAUSSIAN2D)},
        {"align_corners", T(FULL_GAUSSIAN2D) | T(GAUSSIAN2D) | T(POINT_POOLED) | T(POINT_PYRAMID)},
        {"normalize", T(FACTORIZED)},
        {"constrain_pos", T(FACTORIZED)},
        {"positive_weights", T(FACTORIZED)},
        {"init_noise", T(FACTORIZED) | T(ATTENTION)},
        {"pool_steps", T(POINT_POOLED)},
        {"pool_kern", T(POINT_POOLED)},
        {"init_range", T(POINT_POOLED) | T(POINT_PYRAMID)},
        {"attention_kernel", T(ATTENTION)},
        {"attention_layers", T(ATTENTION)},
        {"scale_n", T(POINT_PYRAMID)},
        {"pyramid_type", T(POINT_PYRAMID)},
        {"downsample", T(POINT_PYRAMID)},
        {"positive", T(POINT_PYRAMID)},
    };
#undef T
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (!strcmp(k, own[i].key)) return own[i].types;
    return 0;
}


/* readout keys shared by both spellings; returns 1 if the key was a readout key.
 * An argument of another readout class would not act: an error naming the key,
 * this readout and the classes that take it (null stays "not given"). */
static int readout_key(npred_json_reader *r, const cJSON *e, npred_readout_config *c, int *gamma_set, double *gamma)
{
    const char *k = e->string;
    unsigned types = readout_key_types(k);
    if (types && !(types & (1u << c->type))) {
        if (!cJSON_IsNull(e) && !r->st) {
            char owners[128] = "";
            for (int t = 0; t <= NPRED_READOUT_POINT_PYRAMID; t++)
                if (types & (1u << t))
                    snprintf(owners + strlen(owners), sizeof owners - strlen(owners), "%s%s", owners[0] ? ", " : "",
                             readout_type_name((npred_readout_type)t));
            r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: key '%s%s' does not apply to a %s readout (an argument of %s)",
                                 r->where, r->section, k, readout_type_name(c->type), owners);
        }
        return 1;
    }
    if (!strcmp(k, "init_mu_range")) npred_json_num(r, e, -ANY, ANY, &c->init_mu_range);
    else if (!strcmp(k, "init_sigma")) npred_json_num(r, e, -ANY, ANY, &c->init_sigma);
    else if (!strcmp(k, "gamma_readout")) {
        if (cJSON_IsNull(e)) return 1;
        *gamma_set = npred_json_num(r, e, -ANY, ANY, gamma);
    } else if (!strcmp(k, "feature_reg_weight") || !strcmp(k, "spatial_and_feature_reg_weight")) {
        if (!cJSON_IsNull(e)) npred_json_num(r, e, -ANY, ANY, &c->feature_reg_weight);
    } else if (!strcmp(k, "gauss_type")) {
        int t;
        if (npred_json_choice(r, e, gauss_type_names, 3, &t)) c->gauss_type = (npred_gauss_type)t;
    }
    else if (!strcmp(k, "grid_mean_predictor")) read_gmp(r, e, c);
    else if (!strcmp(k, "normalize")) npred_json_bool(r, e, &c->normalize);
    else if (!strcmp(k, "init_noise")) npred_json_num(r, e, -ANY, ANY, &c->init_noise);
    else if (!strcmp(k, "constrain_pos")) npred_json_bool(r, e, &c->constrain_pos);
    else if (!strcmp(k, "positive_weights")) {
        /* 0.3.0 clamps the features only in FullFactorized2d's `weight` property, which its
         * forward, regularizer and trainer never read: true would change nothing there */
        if (npred_json_bool(r, e, &c->positive_weights) && c->positive_weights)
            npred_json_fail(r, e, "false (true has no effect in neuralpredictors 0.3.0: only the unused `weight` "
                            "property clamps the features; use constrain_pos for non-negative weights)");
    }
    else if (!strcmp(k, "init_sigma_range")) npred_json_num(r, e, -ANY, ANY, &c->init_sigma_range);
    else if (!strcmp(k, "fixed_sigma")) npred_json_bool(r, e, &c->fixed_sigma);
    else if (!strcmp(k, "batch_sample")) npred_json_bool(r, e, &c->batch_sample);
    else if (!strcmp(k, "align_corners")) npred_json_bool(r, e, &c->align_corners);
    else if (!strcmp(k, "pool_steps")) npred_json_int(r, e, -ANY, ANY, &c->pool_steps);
    else if (!strcmp(k, "pool_kern")) npred_json_int(r, e, -ANY, ANY, &c->pool_kern);
    else if (!strcmp(k, "init_range")) npred_json_num(r, e, -ANY, ANY, &c->init_range);
    else if (!strcmp(k, "attention_kernel")) npred_json_int(r, e, -ANY, ANY, &c->attention_kernel);
    else if (!strcmp(k, "attention_layers")) npred_json_int(r, e, -ANY, ANY, &c->attention_layers);
    else if (!strcmp(k, "scale_n")) npred_json_int(r, e, -ANY, ANY, &c->scale_n);
    else if (!strcmp(k, "downsample")) npred_json_bool(r, e, &c->downsample);
    else if (!strcmp(k, "positive")) npred_json_bool(r, e, &c->positive);
    else if (!strcmp(k, "pyramid_type")) { /* PointPyramid2d's `type` (readout.type names the class) */
        static const char *const names[] = {"gauss5x5", "gauss3x3", "laplace5x5"};
        static const npred_pyramid_type types[] = {NPRED_PYRAMID_GAUSS5X5, NPRED_PYRAMID_GAUSS3X3,
                                                   NPRED_PYRAMID_LAPLACE5X5};
        int i;
        if (npred_json_choice(r, e, names, 3, &i)) c->pyramid_type = types[i];
    }
    else return 0;
    return 1;
}

/* core keys shared by both spellings (the builder's core_bias is handled by the caller) */
static int core_key(npred_json_reader *r, const cJSON *e, npred_model_config *m)
{
    npred_core_config *c = &m->core;
    const char *k = e->string;
    if (!strcmp(k, "hidden_channels")) npred_json_int(r, e, -ANY, ANY, &c->hidden_channels);
    else if (!strcmp(k, "input_kern")) npred_json_int(r, e, -ANY, ANY, &c->input_kern);
    else if (!strcmp(k, "hidden_kern")) read_hidden_kern(r, e, c);
    else if (!strcmp(k, "layers")) npred_json_int(r, e, -ANY, ANY, &c->layers);
    else if (!strcmp(k, "gamma_input")) npred_json_num(r, e, -ANY, ANY, &c->gamma_input);
    else if (!strcmp(k, "gamma_hidden")) npred_json_num(r, e, -ANY, ANY, &c->gamma_hidden);
    else if (!strcmp(k, "skip")) npred_json_int(r, e, -ANY, ANY, &c->skip);
    else if (!strcmp(k, "stride")) npred_json_int(r, e, -ANY, ANY, &c->stride);
    else if (!strcmp(k, "final_nonlinearity")) npred_json_bool(r, e, &c->final_nonlinearity);
    else if (!strcmp(k, "elu_shift")) {
        double xy[2]; /* [xshift, yshift] */
        if (npred_json_pair(r, e, 0, 0, -ANY, ANY, xy)) {
            c->elu_xshift = xy[0];
            c->elu_yshift = xy[1];
        }
    } else if (!strcmp(k, "momentum")) npred_json_num(r, e, -ANY, ANY, &c->momentum);
    else if (!strcmp(k, "pad_input")) npred_json_bool(r, e, &c->pad_input);
    else if (!strcmp(k, "hidden_padding")) {
        if (npred_json_int_or_null(r, e, 0, ANY, &c->hidden_padding) == 2) c->hidden_padding = -1;
    }
    else if (!strcmp(k, "batch_norm")) npred_json_bool(r, e, &c->batch_norm);
    else if (!strcmp(k, "batch_norm_scale")) npred_json_bool(r, e, &c->batch_norm_scale);
    else if (!strcmp(k, "independent_bn_bias")) {
        npred_json_bool(r, e, &c->independent_bn_bias);
        m->core_ibb_given = 1;
    } else if (!strcmp(k, "neuralpredictors")) { /* whose Stacked2dCore structure: docs/cores.md */
        static const char *const versions[] = {"0.3.0", "head"};
        npred_json_choice(r, e, versions, 2, &c->head);
    }
    else if (!strcmp(k, "hidden_dilation")) npred_json_int(r, e, -ANY, ANY, &c->hidden_dilation);
    else if (!strcmp(k, "laplace_padding")) {
        if (npred_json_int_or_null(r, e, 0, ANY, &c->laplace_padding) == 2) c->laplace_padding = -1;
    }
    else if (!strcmp(k, "input_regularizer")) {
        int t;
        if (npred_json_choice(r, e, input_reg_names, 4, &t)) c->input_regularizer = (npred_input_reg)t;
    }
    else if (!strcmp(k, "stack")) read_stack(r, e, m);
    else if (!strcmp(k, "use_avg_reg")) npred_json_bool(r, e, &c->use_avg_reg);
    else if (!strcmp(k, "depth_separable")) npred_json_bool(r, e, &c->depth_separable);
    else if (!strcmp(k, "linear")) npred_json_bool(r, e, &c->linear);
    else if (!strcmp(k, "n_se_blocks") || !strcmp(k, "se_reduction")) {
        /* SE2dCore arguments (Stacked2dCore takes neither): they would not act on another core */
        if (!c->se_core) return npred_json_fail(r, e, "absent: it is an argument of SE2dCore only") || 1;
        if (!strcmp(k, "n_se_blocks")) npred_json_int(r, e, -ANY, ANY, &c->n_se_blocks);
        else npred_json_int(r, e, 1, ANY, &c->se_reduction); /* hidden_channels // se_reduction units */
    }
    else if (!strcmp(k, "num_rotations") || !strcmp(k, "upsampling") || !strcmp(k, "rot_eq_batch_norm")) {
        /* RotationEquivariant2dCore arguments; the core type is known before the keys are read */
        if (!c->rot_eq)
            return npred_json_fail(r, e, "absent: it is an argument of RotationEquivariant2dCore only") || 1;
        if (!strcmp(k, "num_rotations")) npred_json_int(r, e, -ANY, ANY, &c->num_rotations);
        else if (!strcmp(k, "upsampling")) npred_json_int(r, e, -ANY, ANY, &c->upsampling);
        else npred_json_bool(r, e, &c->rot_eq_batch_norm);
    }
    else if (!strcmp(k, "attention_conv")) npred_json_bool(r, e, &c->attention_conv);
    else return 0;
    return 1;
}

static int shifter_type_from(npred_json_reader *r, const cJSON *e, npred_shifter_type *t)
{
    static const char *const names[] = {"MLP", "StaticAffine", "StaticAffine2d"};
    int i = 0;
    if (!npred_json_choice(r, e, names, 3, &i)) return 0;
    *t = i == 0 ? NPRED_SHIFTER_MLP : NPRED_SHIFTER_STATIC_AFFINE;
    return 1;
}

static void defaults_common(npred_model_config *m)
{
    npred_encoder_config_default(&m->encoder, NPRED_ENC_FIRING_RATE);
    memset(m, 0, sizeof *m);
    npred_core_config_default(&m->core);
    m->core_stack_is_none = 1;
    npred_readout_config_default(&m->readout, NPRED_READOUT_FULL_GAUSSIAN2D, 0, 0, 0, 0);
    m->multi_readout = 1;
    m->shifter = NPRED_SHIFTER_NONE;
    m->shifter_input_channels = 2;
    m->shifter_hidden_channels = 5;
    m->shift_layers = 3;
    m->shifter_bias = 1;
    m->modulator_input_channels = 3;
    m->modulator_hidden_channels = 5;
    m->modulator_layers = 2;
    m->modulator_bias = 1;
    m->seed = 42;
}

static npred_status finish(npred_model_config *m, const char *where, int gamma_set, double gamma)
{
    if (gamma_set) m->readout.feature_reg_weight = gamma; /* 0.3.0: gamma_readout wins */
    npred_core_config *c = &m->core;
    if (c->head) {
        if (m->core_ibb_given)
            return npred_errorf(NPRED_ERR_CONFIG,
                                "%s: key 'independent_bn_bias': neuralpredictors HEAD removed it (\"neuralpredictors\": "
                                "\"head\" means independent_bn_bias=false; see docs/cores.md)", where);
        c->independent_bn_bias = 0;
    }
    if (c->layers < 1 || c->layers > NPRED_CORE_MAXLAYERS)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'layers': %d is out of range 1..%d", where, c->layers,
                            NPRED_CORE_MAXLAYERS);
    if (c->hidden_channels < 1 || c->input_kern < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: keys 'hidden_channels' and 'input_kern' must be at least 1 (got %d, %d)",
                            where, c->hidden_channels, c->input_kern);
    for (int l = 1; l < c->layers; l++)
        if (c->hidden_kern[l - 1] < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'hidden_kern': needs %d kernel sizes for %d layers", where,
                                c->layers - 1, c->layers);
    npred_status s;
    if (m->core_stack_is_none) s = npred_core_config_set_stack(c, NULL, 0, 0, 1);
    else if (m->core_stack_is_int) s = npred_core_config_set_stack(c, &m->core_stack_int, 1, 1, 0);
    else {
        int tmp[NPRED_CORE_MAXLAYERS];
        memcpy(tmp, c->stack, sizeof tmp);
        s = npred_core_config_set_stack(c, tmp, c->n_stack, 0, 0);
    }
    if (s) return npred_error_prefix(s, "%s: key 'stack'", where);
    const npred_readout_config *rc = &m->readout;
    if (m->share_grid && rc->predicted_grid)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: share_grid and grid_mean_predictor cannot be combined", where);
    if ((m->share_features || m->share_grid) && rc->type != NPRED_READOUT_FULL_GAUSSIAN2D &&
        !(m->share_features && rc->type == NPRED_READOUT_FACTORIZED))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: feature/grid sharing needs a FullGaussian2d readout", where);
    if ((rc->type == NPRED_READOUT_FULL_GAUSSIAN2D || rc->type == NPRED_READOUT_GAUSSIAN2D) &&
        !(rc->init_mu_range > 0 && rc->init_mu_range <= 1))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'init_mu_range': %g is not in (0, 1]", where, rc->init_mu_range);
    if (rc->type == NPRED_READOUT_FULL_GAUSSIAN2D && !(rc->init_sigma > 0))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'init_sigma': %g must be > 0", where, rc->init_sigma);
    if (m->shifter != NPRED_SHIFTER_NONE) {
        if (m->shifter_input_channels < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'input_channels_shifter' (shifter.input_channels): %d, "
                                "expected at least 1", where, m->shifter_input_channels);
        if (m->shift_layers < 1 || (m->shifter == NPRED_SHIFTER_MLP && m->shift_layers > NPRED_MLP_MAXLAYERS))
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'shift_layers': %d is out of range 1..%d", where,
                                m->shift_layers, NPRED_MLP_MAXLAYERS);
        if (m->shifter == NPRED_SHIFTER_MLP && m->shift_layers > 1 && m->shifter_hidden_channels < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'hidden_channels_shifter': %d, expected at least 1 (the "
                                "MLP shifter's %d layers use it)", where, m->shifter_hidden_channels, m->shift_layers);
    }
    if (m->modulator) {
        if (m->modulator_input_channels < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'input_channels_modulator' (modulator.input_channels): %d, "
                                "expected at least 1", where, m->modulator_input_channels);
        if (m->modulator_layers < 1 || m->modulator_layers > NPRED_MLP_MAXLAYERS)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'modulator_layers' (modulator.layers): %d is out of range "
                                "1..%d", where, m->modulator_layers, NPRED_MLP_MAXLAYERS);
        if (m->modulator_layers > 1 && m->modulator_hidden_channels < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'hidden_channels_modulator' (modulator.hidden_channels): "
                                "%d, expected at least 1 (the modulator's %d layers use it)", where,
                                m->modulator_hidden_channels, m->modulator_layers);
    }
    if (m->encoder.type != NPRED_ENC_FIRING_RATE) {
        const char *en = npred_encoder_name(m->encoder.type);
        if (rc->type != NPRED_READOUT_FULL_GAUSSIAN2D)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: %s needs a FullGaussian2d readout (it becomes the reference's "
                                "GeneralizedFullGaussianReadout2d)", where, en);
        if (m->share_features)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: share_features with %s is not supported", where, en);
        if (m->modulator)
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: a modulator with %s is not supported (npred's modulator "
                                "scales a firing rate)", where, en);
        if (m->elu_offset != 0)
            return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'encoder.elu_offset' belongs to FiringRateEncoder, not %s",
                                where, en);
        npred_status es = npred_encoder_check(&m->encoder, where);
        if (es) return es;
    }
    return NPRED_OK;
}

/* the "encoder" object: type (FiringRateEncoder default), elu_offset, the encoder's keys */
static void parse_encoder(npred_json_reader *r, const cJSON *en, npred_model_config *m)
{
    static const char *const types[] = {"FiringRateEncoder", "ZIGEncoder", "ZILEncoder", "GammaEncoder",
                                        "GaussianEncoder"};
    const char *saved = r->section;
    r->section = "encoder.";
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(en, "type");
    int e = 0;
    if (ty && npred_json_choice(r, ty, types, 5, &e)) npred_encoder_config_default(&m->encoder, (npred_encoder_type)e);
    const cJSON *it;
    cJSON_ArrayForEach(it, en)
    {
        if (r->st) break;
        if (!strcmp(it->string, "type")) continue;
        if (!strcmp(it->string, "elu_offset")) npred_json_num(r, it, -ANY, ANY, &m->elu_offset);
        else if (!npred_encoder_key(r, it, &m->encoder))
            npred_json_unknown(r, it, m->encoder.type == NPRED_ENC_FIRING_RATE ? "FiringRateEncoder takes elu_offset"
                                                                               : "not an argument of this encoder");
    }
    r->section = saved;
}

/* flat sensorium builder arguments */
static npred_status parse_builder(npred_model_config *m, const cJSON *root, const char *where)
{
    defaults_common(m);
    npred_core_config *c = &m->core;
    /* stacked_core_full_gauss_readout defaults */
    c->hidden_channels = 32;
    c->input_kern = 13;
    for (int i = 0; i < NPRED_CORE_MAXLAYERS; i++) c->hidden_kern[i] = 3;
    c->layers = 3;
    c->gamma_input = 15.5;
    c->momentum = 0.9;
    c->pad_input = 0;
    c->laplace_padding = -1;
    c->input_regularizer = NPRED_INPUT_REG_LAPLACE_L2NORM;
    c->use_avg_reg = 0;
    c->bias = 0; /* core_bias: False in the 2022 kit (the published checkpoints) */
    npred_readout_config *ro = &m->readout;
    ro->init_mu_range = 0.2;
    ro->init_sigma = 1.0;
    ro->bias = 1;
    int gamma_set = 1;
    double gamma = 4;
    int shifter_on = 0;
    npred_json_reader r = {where, "", NPRED_OK};
    const cJSON *e;
    /* readout_type first: it sets the readout defaults the other keys refine */
    const cJSON *ctype = cJSON_GetObjectItemCaseSensitive(root, "core_type");
    if (ctype && cJSON_GetStringValue(ctype) && !strcmp(cJSON_GetStringValue(ctype), "RotationEquivariant2dCore")) {
        c->rot_eq = 1; /* the builder's other defaults stay */
        c->num_rotations = 8;
        c->upsampling = 2;
        c->rot_eq_batch_norm = 1;
    } else if (ctype && cJSON_GetStringValue(ctype) && !strcmp(cJSON_GetStringValue(ctype), "SE2dCore")) {
        c->se_core = 1; /* before the keys: n_se_blocks and se_reduction belong to it */
    }
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(root, "readout_type");
    if (rt) {
        npred_readout_type t;
        if (!readout_type_from(cJSON_GetStringValue(rt), &t))
            return unsupported_readout(cJSON_GetStringValue(rt), where, "readout_type") ? NPRED_ERR_UNSUPPORTED :
                   npred_errorf(NPRED_ERR_CONFIG,
                                "%s: key 'readout_type': expected FullGaussian2d, Gaussian2d, FullFactorized2d, "
                                "PointPooled2d, AttentionReadout or PointPyramid2d", where);
        readout_reset_type(ro, t);
    }
    cJSON_ArrayForEach(e, root)
    {
        const char *k = e->string;
        if (core_key(&r, e, m)) {
        } else if (readout_key(&r, e, ro, &gamma_set, &gamma)) {
        } else if (!strcmp(k, "readout_type")) {
        } else if (!strcmp(k, "core_type")) {
            const char *s = cJSON_GetStringValue(e);
            if (!s || (strcmp(s, "Stacked2dCore") && strcmp(s, "SE2dCore") && strcmp(s, "RotationEquivariant2dCore")))
                npred_json_fail(&r, e, "\"Stacked2dCore\", \"SE2dCore\" or \"RotationEquivariant2dCore\"");
        } else if (!strcmp(k, "share_features")) npred_json_bool(&r, e, &m->share_features);
        else if (!strcmp(k, "share_grid")) npred_json_bool(&r, e, &m->share_grid);
        else if (!strcmp(k, "core_bias")) npred_json_bool(&r, e, &c->bias);
        else if (!strcmp(k, "readout_bias")) npred_json_bool(&r, e, &ro->bias);
        else if (!strcmp(k, "elu_offset")) npred_json_num(&r, e, -ANY, ANY, &m->elu_offset);
        else if (!strcmp(k, "encoder")) {
            if (!cJSON_IsObject(e)) npred_json_fail(&r, e, "an object");
            else parse_encoder(&r, e, m);
        } else if (!strcmp(k, "shifter")) {
            if (!cJSON_IsNull(e)) npred_json_bool(&r, e, &shifter_on);
        } else if (!strcmp(k, "shifter_type")) {
            npred_shifter_type t = NPRED_SHIFTER_NONE;
            if (shifter_type_from(&r, e, &t)) m->shifter = t; /* applied below if shifter is on */
        } else if (!strcmp(k, "input_channels_shifter")) npred_json_int(&r, e, -ANY, ANY, &m->shifter_input_channels);
        else if (!strcmp(k, "hidden_channels_shifter")) npred_json_int(&r, e, -ANY, ANY, &m->shifter_hidden_channels);
        else if (!strcmp(k, "shift_layers")) npred_json_int(&r, e, -ANY, ANY, &m->shift_layers);
        else if (!strcmp(k, "gamma_shifter")) npred_json_num(&r, e, -ANY, ANY, &m->gamma_shifter);
        else if (!strcmp(k, "shifter_bias")) npred_json_bool(&r, e, &m->shifter_bias);
        else if (!strcmp(k, "modulator")) {
            if (!cJSON_IsNull(e)) npred_json_bool(&r, e, &m->modulator);
        } else if (!strcmp(k, "input_channels_modulator")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_input_channels);
        else if (!strcmp(k, "hidden_channels_modulator")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_hidden_channels);
        else if (!strcmp(k, "modulator_layers")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_layers);
        else if (!strcmp(k, "gamma_modulator")) npred_json_num(&r, e, -ANY, ANY, &m->gamma_modulator);
        else if (!strcmp(k, "seed")) {
            int64_t v;
            if (npred_json_i64(&r, e, -ANY, ANY, &v)) m->seed = v;
        } else npred_json_unknown(&r, e, NULL);
        if (r.st) return r.st;
    }
    if (shifter_on) {
        if (m->shifter == NPRED_SHIFTER_NONE) m->shifter = NPRED_SHIFTER_MLP;
    } else {
        m->shifter = NPRED_SHIFTER_NONE;
    }
    return finish(m, where, gamma_set, gamma);
}

static npred_status parse_section(const cJSON *obj, const char *name, const char *where, npred_json_reader *r)
{
    if (obj && !cJSON_IsObject(obj) && !cJSON_IsNull(obj))
        return r->st = npred_errorf(NPRED_ERR_CONFIG, "%s: key '%s': expected an object", where, name);
    return NPRED_OK;
}

/* structured {"core", "readout", "shifter", "modulator", "encoder"} */
static npred_status parse_structured(npred_model_config *m, const cJSON *root, const char *where)
{
    defaults_common(m);
    npred_core_config *c = &m->core;
    npred_readout_config *ro = &m->readout;
    npred_json_reader r = {where, "", NPRED_OK};
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (strcmp(e->string, "core") && strcmp(e->string, "readout") && strcmp(e->string, "shifter") &&
            strcmp(e->string, "modulator") && strcmp(e->string, "encoder") && strcmp(e->string, "seed") &&
            strcmp(e->string, "model"))
            return npred_json_unknown(&r, e, NULL), r.st;
        if (!strcmp(e->string, "seed")) {
            int64_t v;
            if (!npred_json_i64(&r, e, -ANY, ANY, &v)) return r.st;
            m->seed = v;
        }
        const char *name;
        if (!strcmp(e->string, "model") && !npred_json_str(&r, e, &name)) return r.st;
    }
    const cJSON *core = cJSON_GetObjectItemCaseSensitive(root, "core");
    const cJSON *rdo = cJSON_GetObjectItemCaseSensitive(root, "readout");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(root, "shifter");
    const cJSON *mo = cJSON_GetObjectItemCaseSensitive(root, "modulator");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(root, "encoder");
    if (parse_section(core, "core", where, &r) || parse_section(rdo, "readout", where, &r) ||
        parse_section(sh, "shifter", where, &r) || parse_section(mo, "modulator", where, &r) ||
        parse_section(en, "encoder", where, &r))
        return r.st;
    if (!cJSON_IsObject(core)) return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'core' is required", where);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(core, "type");
    if (ct && cJSON_GetStringValue(ct) && !strcmp(cJSON_GetStringValue(ct), "SE2dCore")) {
        npred_core_config_default_se(c);
    } else if (ct && cJSON_GetStringValue(ct) && !strcmp(cJSON_GetStringValue(ct), "RotationEquivariant2dCore")) {
        npred_core_config_default_rot(c);
    } else if (ct && (!cJSON_GetStringValue(ct) || strcmp(cJSON_GetStringValue(ct), "Stacked2dCore"))) {
        return npred_errorf(NPRED_ERR_CONFIG,
                            "%s: key 'core.type': expected \"Stacked2dCore\", \"SE2dCore\" or "
                            "\"RotationEquivariant2dCore\"", where);
    }
    c->hidden_channels = 0;
    c->input_kern = 0;
    for (int i = 0; i < NPRED_CORE_MAXLAYERS; i++) c->hidden_kern[i] = 0;
    r.section = "core.";
    cJSON_ArrayForEach(e, core)
    {
        if (core_key(&r, e, m)) {
        } else if (!strcmp(e->string, "type")) {
        } else if (!strcmp(e->string, "bias")) npred_json_bool(&r, e, &c->bias);
        else if (!strcmp(e->string, "input_channels")) npred_json_int(&r, e, -ANY, ANY, &c->input_channels);
        else npred_json_unknown(&r, e, NULL);
        if (r.st) return r.st;
    }
    if (c->hidden_channels < 1 || c->input_kern < 1 || (c->layers > 1 && c->hidden_kern[0] < 1))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: core needs hidden_channels, input_kern and hidden_kern", where);
    int gamma_set = 0;
    double gamma = 0;
    if (cJSON_IsObject(rdo)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rdo, "type");
        npred_readout_type rt = NPRED_READOUT_FULL_GAUSSIAN2D;
        if (t && !readout_type_from(cJSON_GetStringValue(t), &rt))
            return unsupported_readout(cJSON_GetStringValue(t), where, "readout.type") ? NPRED_ERR_UNSUPPORTED :
                   npred_errorf(NPRED_ERR_CONFIG,
                                "%s: key 'readout.type': expected FullGaussian2d, Gaussian2d, FullFactorized2d, "
                                "PointPooled2d, AttentionReadout or PointPyramid2d", where);
        readout_reset_type(ro, rt);
        ro->bias = 1;
        ro->feature_reg_weight = 1.0;
        r.section = "readout.";
        cJSON_ArrayForEach(e, rdo)
        {
            const char *k = e->string;
            if (readout_key(&r, e, ro, &gamma_set, &gamma)) {
            } else if (!strcmp(k, "type") || !strcmp(k, "in_shape") || !strcmp(k, "outdims")) {
                /* in_shape and outdims follow from the core and the data */
            } else if (!strcmp(k, "bias")) npred_json_bool(&r, e, &ro->bias);
            else if (!strcmp(k, "multi")) npred_json_bool(&r, e, &m->multi_readout);
            else if (!strcmp(k, "share_features")) npred_json_bool(&r, e, &m->share_features);
            else if (!strcmp(k, "share_grid")) npred_json_bool(&r, e, &m->share_grid);
            else npred_json_unknown(&r, e, NULL);
            if (r.st) return r.st;
        }
    }
    if (cJSON_IsObject(sh)) {
        m->shifter = NPRED_SHIFTER_MLP;
        m->shifter_hidden_channels = 2; /* MLPShifter defaults */
        m->shift_layers = 1;
        r.section = "shifter.";
        cJSON_ArrayForEach(e, sh)
        {
            const char *k = e->string;
            if (!strcmp(k, "type")) {
                npred_shifter_type tt = NPRED_SHIFTER_NONE;
                if (shifter_type_from(&r, e, &tt)) m->shifter = tt;
            } else if (!strcmp(k, "input_channels")) npred_json_int(&r, e, -ANY, ANY, &m->shifter_input_channels);
            else if (!strcmp(k, "hidden_channels_shifter")) npred_json_int(&r, e, -ANY, ANY, &m->shifter_hidden_channels);
            else if (!strcmp(k, "shift_layers")) npred_json_int(&r, e, -ANY, ANY, &m->shift_layers);
            else if (!strcmp(k, "gamma_shifter")) npred_json_num(&r, e, -ANY, ANY, &m->gamma_shifter);
            else if (!strcmp(k, "bias")) npred_json_bool(&r, e, &m->shifter_bias);
            else npred_json_unknown(&r, e, NULL);
            if (r.st) return r.st;
        }
    }
    if (cJSON_IsObject(mo)) {
        m->modulator = 1;
        r.section = "modulator.";
        cJSON_ArrayForEach(e, mo)
        {
            const char *k = e->string;
            if (!strcmp(k, "type")) {
                const char *s = cJSON_GetStringValue(e);
                if (!s || strcmp(s, "MLP")) npred_json_fail(&r, e, "\"MLP\"");
            } else if (!strcmp(k, "input_channels")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_input_channels);
            else if (!strcmp(k, "hidden_channels")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_hidden_channels);
            else if (!strcmp(k, "layers")) npred_json_int(&r, e, -ANY, ANY, &m->modulator_layers);
            else if (!strcmp(k, "gamma_modulator")) npred_json_num(&r, e, -ANY, ANY, &m->gamma_modulator);
            else if (!strcmp(k, "bias")) npred_json_bool(&r, e, &m->modulator_bias);
            else npred_json_unknown(&r, e, NULL);
            if (r.st) return r.st;
        }
    }
    if (cJSON_IsObject(en)) {
        parse_encoder(&r, en, m);
        if (r.st) return r.st;
    }
    return finish(m, where, gamma_set, gamma);
}

npred_status npred_model_config_from_cjson(npred_model_config *cfg, const cJSON *root, const char *where)
{
    if (!cJSON_IsObject(root)) return npred_errorf(NPRED_ERR_CONFIG, "%s: the model config must be a JSON object", where);
    npred_json_reader r = {where, "", NPRED_OK};
    if (!npred_json_unique_keys(&r, root)) return r.st;
    if (cJSON_GetObjectItemCaseSensitive(root, "core")) return parse_structured(cfg, root, where);
    return parse_builder(cfg, root, where);
}

npred_status npred_model_config_parse(npred_model_config *cfg, const char *json, const char *where)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        long off = end ? (long)(end - json) : 0;
        return npred_errorf(NPRED_ERR_CONFIG, "%s: invalid JSON near byte %ld", where, off);
    }
    npred_status s = npred_model_config_from_cjson(cfg, root, where);
    cJSON_Delete(root);
    return s;
}

static const char *reg_name(npred_input_reg r)
{
    return (unsigned)r < 4 ? input_reg_names[r] : "?";
}

static void add_int_or_null(cJSON *o, const char *k, int v)
{
    if (v < 0) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

cJSON *npred_model_config_to_json(const npred_model_config *m)
{
    const npred_core_config *c = &m->core;
    const npred_readout_config *ro = &m->readout;
    cJSON *root = cJSON_CreateObject();
    cJSON *core = cJSON_AddObjectToObject(root, "core");
    cJSON_AddStringToObject(core, "type", c->rot_eq ? "RotationEquivariant2dCore" : c->se_core ? "SE2dCore" : "Stacked2dCore");
    cJSON_AddNumberToObject(core, "input_channels", c->input_channels);
    cJSON_AddNumberToObject(core, "hidden_channels", c->hidden_channels);
    cJSON_AddNumberToObject(core, "input_kern", c->input_kern);
    cJSON *hk = cJSON_AddArrayToObject(core, "hidden_kern");
    for (int l = 1; l < c->layers; l++) cJSON_AddItemToArray(hk, cJSON_CreateNumber(c->hidden_kern[l - 1]));
    cJSON_AddNumberToObject(core, "layers", c->layers);
    cJSON_AddNumberToObject(core, "gamma_hidden", c->gamma_hidden);
    cJSON_AddNumberToObject(core, "gamma_input", c->gamma_input);
    cJSON_AddNumberToObject(core, "skip", c->skip);
    cJSON_AddNumberToObject(core, "stride", c->stride);
    cJSON_AddBoolToObject(core, "final_nonlinearity", c->final_nonlinearity);
    cJSON *es = cJSON_AddArrayToObject(core, "elu_shift");
    cJSON_AddItemToArray(es, cJSON_CreateNumber(c->elu_xshift));
    cJSON_AddItemToArray(es, cJSON_CreateNumber(c->elu_yshift));
    cJSON_AddBoolToObject(core, "bias", c->bias);
    cJSON_AddNumberToObject(core, "momentum", c->momentum);
    cJSON_AddBoolToObject(core, "pad_input", c->pad_input);
    add_int_or_null(core, "hidden_padding", c->hidden_padding);
    cJSON_AddBoolToObject(core, "batch_norm", c->batch_norm);
    cJSON_AddBoolToObject(core, "batch_norm_scale", c->batch_norm_scale);
    if (c->head) cJSON_AddStringToObject(core, "neuralpredictors", "head");
    else cJSON_AddBoolToObject(core, "independent_bn_bias", c->independent_bn_bias);
    cJSON_AddNumberToObject(core, "hidden_dilation", c->hidden_dilation);
    add_int_or_null(core, "laplace_padding", c->laplace_padding);
    cJSON_AddStringToObject(core, "input_regularizer", reg_name(c->input_regularizer));
    if (c->n_stack < 0) { /* stack=None (all layers), kept as null so it reads back */
        cJSON_AddNullToObject(core, "stack");
    } else {
        cJSON *st = cJSON_AddArrayToObject(core, "stack");
        for (int i = 0; i < c->n_stack; i++) cJSON_AddItemToArray(st, cJSON_CreateNumber(c->stack[i]));
    }
    cJSON_AddBoolToObject(core, "use_avg_reg", c->use_avg_reg);
    cJSON_AddBoolToObject(core, "depth_separable", c->depth_separable);
    cJSON_AddBoolToObject(core, "linear", c->linear);
    if (c->attention_conv) cJSON_AddBoolToObject(core, "attention_conv", 1);
    if (c->rot_eq) {
        cJSON_AddNumberToObject(core, "num_rotations", c->num_rotations);
        cJSON_AddNumberToObject(core, "upsampling", c->upsampling);
        cJSON_AddBoolToObject(core, "rot_eq_batch_norm", c->rot_eq_batch_norm);
    }
    if (c->se_core) {
        cJSON_AddNumberToObject(core, "n_se_blocks", c->n_se_blocks);
        cJSON_AddNumberToObject(core, "se_reduction", c->se_reduction);
    }
    cJSON *r = cJSON_AddObjectToObject(root, "readout");
    cJSON_AddStringToObject(r, "type", readout_type_name(ro->type));
    cJSON_AddBoolToObject(r, "multi", m->multi_readout);
    if (m->share_features) cJSON_AddBoolToObject(r, "share_features", 1);
    if (m->share_grid) cJSON_AddBoolToObject(r, "share_grid", 1);
    cJSON_AddBoolToObject(r, "bias", ro->bias);
    cJSON_AddNumberToObject(r, "feature_reg_weight", ro->feature_reg_weight);
    switch (ro->type) {
    case NPRED_READOUT_FULL_GAUSSIAN2D:
    case NPRED_READOUT_GAUSSIAN2D:
        cJSON_AddNumberToObject(r, "init_mu_range", ro->init_mu_range);
        if (ro->type == NPRED_READOUT_FULL_GAUSSIAN2D) {
            cJSON_AddNumberToObject(r, "init_sigma", ro->init_sigma);
            cJSON_AddStringToObject(r, "gauss_type", ro->gauss_type == NPRED_GAUSS_FULL           ? "full"
                                                     : ro->gauss_type == NPRED_GAUSS_UNCORRELATED ? "uncorrelated"
                                                                                                  : "isotropic");
            if (ro->predicted_grid) {
                cJSON *g = cJSON_AddObjectToObject(r, "grid_mean_predictor");
                cJSON_AddStringToObject(g, "type", "cortex");
                cJSON_AddNumberToObject(g, "input_dimensions", ro->gmp_input_dimensions);
                cJSON_AddNumberToObject(g, "hidden_layers", ro->gmp_hidden_layers);
                cJSON_AddNumberToObject(g, "hidden_features", ro->gmp_hidden_features);
                cJSON_AddBoolToObject(g, "final_tanh", ro->gmp_final_tanh);
            } else {
                cJSON_AddNullToObject(r, "grid_mean_predictor");
            }
        } else {
            cJSON_AddNumberToObject(r, "init_sigma_range", ro->init_sigma_range);
            cJSON_AddBoolToObject(r, "fixed_sigma", ro->fixed_sigma);
        }
        cJSON_AddBoolToObject(r, "batch_sample", ro->batch_sample);
        cJSON_AddBoolToObject(r, "align_corners", ro->align_corners);
        break;
    case NPRED_READOUT_FACTORIZED:
        cJSON_AddBoolToObject(r, "normalize", ro->normalize);
        cJSON_AddNumberToObject(r, "init_noise", ro->init_noise);
        cJSON_AddBoolToObject(r, "constrain_pos", ro->constrain_pos);
        cJSON_AddBoolToObject(r, "positive_weights", ro->positive_weights);
        break;
    case NPRED_READOUT_POINT_POOLED:
        cJSON_AddNumberToObject(r, "pool_steps", ro->pool_steps);
        cJSON_AddNumberToObject(r, "pool_kern", ro->pool_kern);
        cJSON_AddNumberToObject(r, "init_range", ro->init_range);
        cJSON_AddBoolToObject(r, "align_corners", ro->align_corners);
        break;
    case NPRED_READOUT_ATTENTION:
        cJSON_AddNumberToObject(r, "init_noise", ro->init_noise);
        cJSON_AddNumberToObject(r, "attention_kernel", ro->attention_kernel);
        cJSON_AddNumberToObject(r, "attention_layers", ro->attention_layers);
        break;
    case NPRED_READOUT_POINT_PYRAMID:
        cJSON_AddNumberToObject(r, "scale_n", ro->scale_n);
        cJSON_AddStringToObject(r, "pyramid_type", ro->pyramid_type == NPRED_PYRAMID_GAUSS3X3     ? "gauss3x3"
                                                   : ro->pyramid_type == NPRED_PYRAMID_LAPLACE5X5 ? "laplace5x5"
                                                                                                  : "gauss5x5");
        cJSON_AddBoolToObject(r, "downsample", ro->downsample);
        cJSON_AddBoolToObject(r, "positive", ro->positive);
        cJSON_AddNumberToObject(r, "init_range", ro->init_range);
        cJSON_AddBoolToObject(r, "align_corners", ro->align_corners);
        break;
    }
    if (m->shifter != NPRED_SHIFTER_NONE) {
        cJSON *s = cJSON_AddObjectToObject(root, "shifter");
        cJSON_AddStringToObject(s, "type", m->shifter == NPRED_SHIFTER_MLP ? "MLP" : "StaticAffine");
        cJSON_AddNumberToObject(s, "input_channels", m->shifter_input_channels);
        if (m->shifter == NPRED_SHIFTER_MLP) {
            cJSON_AddNumberToObject(s, "hidden_channels_shifter", m->shifter_hidden_channels);
            cJSON_AddNumberToObject(s, "shift_layers", m->shift_layers);
        }
        cJSON_AddNumberToObject(s, "gamma_shifter", m->gamma_shifter);
        cJSON_AddBoolToObject(s, "bias", m->shifter_bias);
    } else {
        cJSON_AddNullToObject(root, "shifter");
    }
    if (m->modulator) {
        cJSON *s = cJSON_AddObjectToObject(root, "modulator");
        cJSON_AddStringToObject(s, "type", "MLP");
        cJSON_AddNumberToObject(s, "input_channels", m->modulator_input_channels);
        cJSON_AddNumberToObject(s, "hidden_channels", m->modulator_hidden_channels);
        cJSON_AddNumberToObject(s, "layers", m->modulator_layers);
        cJSON_AddNumberToObject(s, "gamma_modulator", m->gamma_modulator);
        cJSON_AddBoolToObject(s, "bias", m->modulator_bias);
    } else {
        cJSON_AddNullToObject(root, "modulator");
    }
    cJSON *en = cJSON_AddObjectToObject(root, "encoder");
    if (m->encoder.type == NPRED_ENC_FIRING_RATE) cJSON_AddNumberToObject(en, "elu_offset", m->elu_offset);
    npred_encoder_to_json(en, &m->encoder);
    cJSON_AddNumberToObject(root, "seed", (double)m->seed);
    return root;
}
