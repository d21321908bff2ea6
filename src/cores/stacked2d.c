/* Stacked2dCore / SE2dCore / RotationEquivariant2dCore: declaration, forward,
 * backward, regularizer, repr. */
#include "cores/stacked2d.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/batchnorm.h"
#include "kernels/bf16_block.h"
#include "kernels/batchnorm_sync.h"
#include "kernels/conv2d_fft.h"
#include "kernels/gemm.h"
#include "base/threads.h"
#include "kernels/regularizers.h"
#include "base/pyfmt.h"

void npred_core_config_default(npred_core_config *c)
{
    memset(c, 0, sizeof *c);
    c->layers = 3;
    c->stride = 1;
    c->final_nonlinearity = 1;
    c->bias = 1;
    c->momentum = 0.1;
    c->pad_input = 1;
    c->hidden_padding = -1;
    c->batch_norm = 1;
    c->batch_norm_scale = 1;
    c->independent_bn_bias = 1;
    c->hidden_dilation = 1;
    c->laplace_padding = 0;
    c->input_regularizer = NPRED_INPUT_REG_LAPLACE_L2;
    c->use_avg_reg = 1;
    c->n_stack = -1; /* None: resolved to all layers at declare time */
    c->se_reduction = 32;
}

void npred_core_config_default_se(npred_core_config *c)
{
    npred_core_config_default(c);
    c->se_core = 1;
    c->bias = 0;
    c->laplace_padding = -1;
    c->input_regularizer = NPRED_INPUT_REG_LAPLACE_L2NORM;
    c->use_avg_reg = 0;
}

void npred_core_config_default_rot(npred_core_config *c)
{
    npred_core_config_default(c);
    c->rot_eq = 1;
    c->input_regularizer = NPRED_INPUT_REG_LAPLACE_L2NORM;
    c->num_rotations = 8;
    c->upsampling = 2;
    c->rot_eq_batch_norm = 1;
}

/* skip connections: RotationEquivariant2dCore accepts `skip` but its forward ignores it */
static int uses_skip(const npred_core_config *c) { return c->skip > 1 && !c->rot_eq; }

npred_status npred_core_config_set_stack(npred_core_config *c, const int *list, int n, int is_int, int is_none)
{
    if (is_none) {
        c->n_stack = -1;
        return NPRED_OK;
    }
    if (is_int) {
        /* [*range(layers)[s:]] */
        int s = list[0], L = c->layers;
        int start = s < 0 ? (s + L < 0 ? 0 : s + L) : (s > L ? L : s);
        c->n_stack = 0;
        for (int i = start; i < L; i++) c->stack[c->n_stack++] = i;
        if (c->n_stack == 0) return npred_errorf(NPRED_ERR_CONFIG, "stack=%d selects no layer of %d", s, L);
        return NPRED_OK;
    }
    if (n <= 0 || n > NPRED_CORE_MAXLAYERS) return npred_errorf(NPRED_ERR_CONFIG, "stack: %d entries", n);
    for (int i = 0; i < n; i++) {
        int v = list[i] < 0 ? list[i] + c->layers : list[i];
        if (v < 0 || v >= c->layers)
            return npred_errorf(NPRED_ERR_CONFIG, "stack: layer %d out of range for %d layers", list[i], c->layers);
        c->stack[i] = v;
    }
    c->n_stack = n;
    return NPRED_OK;
}

static int add_param(npred_ptable *t, const char *prefix, int l, const char *rest, int is_buffer, npred_ptype dt,
                     int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    char name[NPRED_PARAM_NAMELEN];
    snprintf(name, sizeof name, "%sfeatures.layer%d.%s", prefix, l, rest);
    int64_t shape[4] = {d0, d1, d2, d3};
    return npred_ptable_add(t, name, is_buffer, dt, ndim, shape);
}

static const char *conv_name(const npred_core_config *c) { return c->depth_separable ? "ds_conv" : "conv"; }

/* BatchNorm (+ Bias2DLayer / Scale2DLayer) of layer l: 0.3.0 add_bn_layer. The
 * rotation-equivariant version wraps a BatchNorm1d as `norm.batch_norm` and its
 * bias/scale parameters have shape (1, 1, hidden, 1, 1). */
static int declare_norm(npred_core *core, int l, npred_ptable *t)
{
    const npred_core_config *c = &core->cfg;
    npred_core_layer *L = &core->L[l];
    const char *prefix = core->prefix;
    int H = c->hidden_channels;
    if (!c->batch_norm) return 0;
    L->has_bn = 1;
    int rq = c->rot_eq && c->rot_eq_batch_norm;
    const char *bn = rq ? "norm.batch_norm" : "norm";
    char rest[64];
    int affine = c->independent_bn_bias ? 1 : (c->bias && c->batch_norm_scale);
    if (affine) {
        snprintf(rest, sizeof rest, "%s.weight", bn);
        if ((L->p_gamma = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0) return -1;
        snprintf(rest, sizeof rest, "%s.bias", bn);
        if ((L->p_beta = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0) return -1;
    }
    snprintf(rest, sizeof rest, "%s.running_mean", bn);
    if ((L->p_rmean = add_param(t, prefix, l, rest, 1, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0) return -1;
    snprintf(rest, sizeof rest, "%s.running_var", bn);
    if ((L->p_rvar = add_param(t, prefix, l, rest, 1, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0) return -1;
    snprintf(rest, sizeof rest, "%s.num_batches_tracked", bn);
    if ((L->p_nbt = add_param(t, prefix, l, rest, 1, NPRED_PT_I64, 0, 0, 0, 0, 0)) < 0) return -1;
    if (!c->independent_bn_bias && c->bias != c->batch_norm_scale) {
        const char *what = c->bias ? "bias.bias" : "scale.scale";
        char name[NPRED_PARAM_NAMELEN];
        snprintf(name, sizeof name, "%sfeatures.layer%d.%s", prefix, l, what);
        int64_t s4[4] = {1, H, 1, 1}, s5[5] = {1, 1, H, 1, 1}; /* (1, 1, hidden, 1, 1) when rotation-equivariant */
        int idx = rq ? npred_ptable_add(t, name, 0, NPRED_PT_F32, 5, s5) : npred_ptable_add(t, name, 0, NPRED_PT_F32, 4, s4);
        if (idx < 0) return -1;
        if (c->bias) L->p_bias2d = idx;
        else L->p_scale2d = idx;
    }
    return 0;
}

/* Hidden layer l as 0.3.0's AttentionConv (Stacked2dCore.AttentionConvWrapper, groups 1):
 * 1x1 key/query/value convs (bias = `bias`), relative position terms rel_h (first C/2
 * channels, by window row) and rel_w (the others, by column). Its unfold/view only works
 * when the window keeps the map size: stride 1 and 2 * padding = kernel - 1; an odd channel
 * count fails in its split. Those cases are errors here too. */
static npred_status declare_attention_layer(npred_core *core, int l, int conv_bias, int h, int w, npred_ptable *t)
{
    const npred_core_config *c = &core->cfg;
    npred_core_layer *L = &core->L[l];
    const char *prefix = core->prefix;
    int H = c->hidden_channels;
    if (L->stride != 1 || 2 * L->pad != L->k - 1)
        return npred_errorf(NPRED_ERR_CONFIG,
                            "core: attention_conv layer %d with kernel %d, padding %d, stride %d: neuralpredictors 0.3.0 "
                            "fails there (its window view needs stride 1 and padding (kernel-1)/2)",
                            l, L->k, L->pad, L->stride);
    if (L->k > 7)
        return npred_errorf(NPRED_ERR_CONFIG, "core: attention_conv windows up to 7x7 are supported (kernel %d)", L->k);
    if (H % 2)
        return npred_errorf(NPRED_ERR_CONFIG,
                            "core: attention_conv needs an even hidden_channels (%d): 0.3.0 splits the keys in halves", H);
    L->att = 1;
    L->nconv = 3;
    L->hout = h;
    L->wout = w;
    const char *sub[3] = {"key_conv", "query_conv", "value_conv"};
    char rest[96];
    int64_t sh[5] = {H / 2, 1, 1, L->k, 1}, sw[5] = {H / 2, 1, 1, 1, L->k};
    char name[NPRED_PARAM_NAMELEN];
    snprintf(name, sizeof name, "%sfeatures.layer%d.attention_conv.rel_h", prefix, l);
    if ((L->p_rel_h = npred_ptable_add(t, name, 0, NPRED_PT_F32, 5, sh)) < 0) return NPRED_ERR_ARG;
    snprintf(name, sizeof name, "%sfeatures.layer%d.attention_conv.rel_w", prefix, l);
    if ((L->p_rel_w = npred_ptable_add(t, name, 0, NPRED_PT_F32, 5, sw)) < 0) return NPRED_ERR_ARG;
    for (int i = 0; i < 3; i++) {
        L->cp[i] = npred_conv2d_params_square(1, L->cin, h, w, H, 1, 1, 0, 1, 1);
        snprintf(rest, sizeof rest, "attention_conv.%s.weight", sub[i]);
        if ((L->p_w[i] = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 4, H, L->cin, 1, 1)) < 0) return NPRED_ERR_ARG;
        if (conv_bias) {
            snprintf(rest, sizeof rest, "attention_conv.%s.bias", sub[i]);
            if ((L->p_b[i] = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0) return NPRED_ERR_ARG;
        }
    }
    return NPRED_OK;
}

/* Layer l of a RotationEquivariant2dCore: HermiteConv2D (no bias; stride in every layer,
 * layer 0 included; hidden padding hidden_kern[0] // 2 computed once, no dilation),
 * then the norm and the nonlinearity. */
static npred_status declare_hermite_layer(npred_core *core, int l, int *hidden_padding, int h, int w,
                                          npred_ptable *t)
{
    const npred_core_config *c = &core->cfg;
    npred_core_layer *L = &core->L[l];
    const char *prefix = core->prefix;
    int H = c->hidden_channels, R = c->num_rotations;
    L->rot = R;
    L->cout = H * R;
    L->cin = l == 0 ? c->input_channels : H * R;
    L->k = l == 0 ? c->input_kern : c->hidden_kern[l - 1];
    if (l == 0) {
        L->pad = c->pad_input ? c->input_kern / 2 : 0;
    } else {
        if (*hidden_padding < 0) *hidden_padding = c->hidden_kern[0] / 2;
        L->pad = *hidden_padding;
    }
    L->dil = 1;
    L->stride = c->stride;
    L->ds = 0;
    L->nconv = 1;
    L->ncoef = L->k * (L->k + 1) / 2;
    L->hk = L->k * c->upsampling;
    L->cp[0] = npred_conv2d_params_square(1, L->cin, h, w, L->cout, L->k, L->stride, L->pad, 1, 1);
    int oh, ow;
    npred_status s = npred_conv2d_output_size(&L->cp[0], &oh, &ow);
    if (s || oh < 1 || ow < 1)
        return npred_errorf(NPRED_ERR_SHAPE, "core: layer %d maps %dx%d to an empty output", l, h, w);
    L->hout = oh;
    L->wout = ow;
    if ((L->p_coeffs = add_param(t, prefix, l, "hermite_conv.coeffs", 0, NPRED_PT_F32, 3, L->ncoef, L->cin, H, 0)) < 0 ||
        (L->p_H = add_param(t, prefix, l, "hermite_conv.rotate_hermite.H", 1, NPRED_PT_F32, 3, L->ncoef, L->hk, L->hk,
                            0)) < 0)
        return NPRED_ERR_ARG;
    for (int r = 0; r < R; r++) {
        char rest[64];
        snprintf(rest, sizeof rest, "hermite_conv.rotate_hermite.Rs.%d", r);
        int idx = add_param(t, prefix, l, rest, 1, NPRED_PT_F32, 2, L->ncoef, L->ncoef, 0, 0);
        if (idx < 0) return NPRED_ERR_ARG;
        if (r == 0) L->p_Rs0 = idx;
        else if (idx != L->p_Rs0 + r) return npred_errorf(NPRED_ERR_ARG, "core: Rs entries not consecutive");
    }
    if (declare_norm(core, l, t)) return NPRED_ERR_ARG;
    L->has_act = !c->linear && (l < c->layers - 1 || c->final_nonlinearity);
    return NPRED_OK;
}

npred_status npred_core_declare(npred_core *core, const npred_core_config *cfg, const char *prefix, int in_h,
                                int in_w, npred_ptable *t)
{
    memset(core, 0, sizeof *core);
    core->recompute = NPRED_CORE_RECOMPUTE_AUTO;
    core->cfg = *cfg;
    npred_core_config *c = &core->cfg;
    snprintf(core->prefix, sizeof core->prefix, "%s", prefix);
    if (c->layers < 1 || c->layers > NPRED_CORE_MAXLAYERS)
        return npred_errorf(NPRED_ERR_CONFIG, "core: layers = %d (1..%d supported)", c->layers, NPRED_CORE_MAXLAYERS);
    if (c->input_channels < 1 || c->hidden_channels < 1 || c->input_kern < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "core: input_channels, hidden_channels and input_kern must be >= 1");
    for (int l = 1; l < c->layers; l++)
        if (c->hidden_kern[l - 1] < 1) return npred_errorf(NPRED_ERR_CONFIG, "core: hidden_kern[%d] < 1", l - 1);
    if (c->stride < 1 || c->hidden_dilation < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "core: stride and hidden_dilation must be >= 1");
    if (c->rot_eq) {
        if (c->num_rotations < 1 || c->num_rotations > NPRED_MAX_ROTATIONS || c->upsampling < 1)
            return npred_errorf(NPRED_ERR_CONFIG, "core: num_rotations must be in 1..%d and upsampling >= 1",
                                NPRED_MAX_ROTATIONS);
        if (c->input_kern > 31)
            return npred_errorf(NPRED_ERR_CONFIG, "core: Hermite filters of size %d (at most 31 supported)",
                                c->input_kern);
        for (int l = 1; l < c->layers; l++)
            if (c->hidden_kern[l - 1] > 31)
                return npred_errorf(NPRED_ERR_CONFIG, "core: Hermite filters of size %d (at most 31 supported)",
                                    c->hidden_kern[l - 1]);
        if (!c->rot_eq_batch_norm && c->batch_norm && c->num_rotations > 1)
            return npred_errorf(NPRED_ERR_CONFIG,
                                "core: rot_eq_batch_norm=false with num_rotations=%d: neuralpredictors 0.3.0 "
                                "builds BatchNorm2d(hidden_channels) for hidden_channels*num_rotations channels "
                                "and fails at the first forward; use rot_eq_batch_norm=true",
                                c->num_rotations);
        if (c->se_core) return npred_errorf(NPRED_ERR_CONFIG, "core: SE blocks in a RotationEquivariant2dCore");
    }
    if (c->attention_conv && c->depth_separable)
        return npred_errorf(NPRED_ERR_CONFIG, "core: depth_separable and attention_conv can not both be true (as in "
                                              "neuralpredictors)");
    if (c->head && (c->rot_eq || c->se_core))
        return npred_errorf(NPRED_ERR_CONFIG, "core: neuralpredictors \"head\" semantics are supported for "
                                              "Stacked2dCore only");
    if (c->head && c->independent_bn_bias)
        return npred_errorf(NPRED_ERR_CONFIG, "core: neuralpredictors HEAD has no independent_bn_bias (it behaves as "
                                              "independent_bn_bias=false)");
    if (c->n_stack < 0) {
        c->n_stack = c->layers;
        for (int i = 0; i < c->layers; i++) c->stack[i] = i;
    }
    for (int i = 0; i < c->n_stack; i++)
        if (c->stack[i] < 0 || c->stack[i] >= c->layers)
            return npred_errorf(NPRED_ERR_CONFIG, "core: stack entry %d out of range", c->stack[i]);
    core->act.kind = NPRED_ACT_ADAPTIVE_ELU;
    core->act.xshift = (float)c->elu_xshift;
    core->act.yshift = (float)c->elu_yshift;
    core->in_h = in_h;
    core->in_w = in_w;
    core->p_lapfilter = -1;
    {
        char name[NPRED_PARAM_NAMELEN];
        snprintf(name, sizeof name, "%s_input_weights_regularizer.laplace.filter", prefix);
        int64_t shape[4] = {1, 1, 3, 3};
        if ((core->p_lapfilter = npred_ptable_add(t, name, 1, NPRED_PT_F32, 4, shape)) < 0) return NPRED_ERR_ARG;
    }
    int H = c->hidden_channels;
    int hidden_padding = c->hidden_padding;
    int h = in_h, w = in_w;
    for (int l = 0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        for (int i = 0; i < 3; i++) L->p_w[i] = L->p_b[i] = -1;
        L->p_gamma = L->p_beta = L->p_rmean = L->p_rvar = L->p_nbt = L->p_bias2d = L->p_scale2d = -1;
        L->p_se_w1 = L->p_se_b1 = L->p_se_w2 = L->p_se_b2 = -1;
        L->hin = h;
        L->win = w;
        L->cout = H;
        L->rot = 1;
        L->p_coeffs = L->p_H = L->p_Rs0 = -1;
        if (c->rot_eq) {
            npred_status s = declare_hermite_layer(core, l, &hidden_padding, h, w, t);
            if (s) return s;
            h = L->hout;
            w = L->wout;
            continue;
        }
        int conv_bias;
        if (l == 0) {
            L->cin = c->input_channels;
            L->k = c->input_kern;
            L->pad = c->pad_input ? c->input_kern / 2 : 0;
            L->dil = 1;
            L->stride = 1;
            L->ds = 0;
            /* HEAD: `bias and not batch_norm` on per-layer lists is always False */
            conv_bias = c->head ? 0 : c->bias && !c->batch_norm;
        } else {
            if (uses_skip(c)) {
                int nsrc = c->skip < l ? c->skip : l;
                L->cin = nsrc * H;
                for (int j = l - nsrc; j < l; j++)
                    if (core->L[j].hout != h || core->L[j].wout != w)
                        return npred_errorf(NPRED_ERR_SHAPE,
                                            "core: skip connection into layer %d joins maps of different sizes "
                                            "(%dx%d vs %dx%d)", l, core->L[j].hout, core->L[j].wout, h, w);
            } else {
                L->cin = H;
            }
            L->k = c->hidden_kern[l - 1];
            if (hidden_padding < 0) /* 0.3.0: computed once, from the first hidden kernel */
                hidden_padding = ((c->hidden_kern[0] - 1) * c->hidden_dilation + 1) / 2;
            L->pad = c->head && c->hidden_padding < 0 ? ((L->k - 1) * c->hidden_dilation + 1) / 2 : hidden_padding;
            L->dil = c->hidden_dilation;
            L->stride = c->stride;
            L->ds = c->depth_separable;
            conv_bias = c->head ? 1 : c->bias; /* HEAD passes the per-layer bias list: always truthy */
        }
        L->p_rel_h = L->p_rel_w = -1;
        if (l > 0 && c->attention_conv && !c->rot_eq) {
            npred_status s = declare_attention_layer(core, l, conv_bias, h, w, t);
            if (s) return s;
        } else if (L->ds) {
            L->nconv = 3;
            L->cp[0] = npred_conv2d_params_square(1, L->cin, h, w, H, 1, 1, 0, 1, 1);
            L->cp[1] = npred_conv2d_params_square(1, H, h, w, H, L->k, L->stride, L->pad, L->dil, H);
            int oh, ow;
            npred_status s = npred_conv2d_output_size(&L->cp[1], &oh, &ow);
            if (s || oh < 1 || ow < 1)
                return npred_errorf(NPRED_ERR_SHAPE, "core: layer %d maps %dx%d to an empty output", l, h, w);
            L->cp[2] = npred_conv2d_params_square(1, H, oh, ow, H, 1, 1, 0, 1, 1);
            L->hout = oh;
            L->wout = ow;
            const char *sub[3] = {"in_depth_conv", "spatial_conv", "out_depth_conv"};
            for (int i = 0; i < 3; i++) {
                char rest[96];
                snprintf(rest, sizeof rest, "ds_conv.%s.weight", sub[i]);
                int kk = i == 1 ? L->k : 1, ci = i == 0 ? L->cin : (i == 1 ? 1 : H);
                if ((L->p_w[i] = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 4, H, ci, kk, kk)) < 0)
                    return NPRED_ERR_ARG;
                if (conv_bias) {
                    snprintf(rest, sizeof rest, "ds_conv.%s.bias", sub[i]);
                    if ((L->p_b[i] = add_param(t, prefix, l, rest, 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0)
                        return NPRED_ERR_ARG;
                }
            }
        } else {
            L->nconv = 1;
            L->cp[0] = npred_conv2d_params_square(1, L->cin, h, w, H, L->k, L->stride, L->pad, L->dil, 1);
            int oh, ow;
            npred_status s = npred_conv2d_output_size(&L->cp[0], &oh, &ow);
            if (s || oh < 1 || ow < 1)
                return npred_errorf(NPRED_ERR_SHAPE, "core: layer %d maps %dx%d to an empty output", l, h, w);
            L->hout = oh;
            L->wout = ow;
            if ((L->p_w[0] = add_param(t, prefix, l, "conv.weight", 0, NPRED_PT_F32, 4, H, L->cin, L->k, L->k)) < 0)
                return NPRED_ERR_ARG;
            if (conv_bias && (L->p_b[0] = add_param(t, prefix, l, "conv.bias", 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0)
                return NPRED_ERR_ARG;
        }
        if (declare_norm(core, l, t)) return NPRED_ERR_ARG;
        L->has_act = !c->linear && (l < c->layers - 1 || c->final_nonlinearity);
        if (c->se_core && l >= 1 && c->layers - l <= c->n_se_blocks) {
            L->has_se = 1;
            L->se_hidden = H / (c->se_reduction > 0 ? c->se_reduction : 1);
            if (L->se_hidden < 1)
                return npred_errorf(NPRED_ERR_CONFIG,
                                    "core: se_reduction %d leaves no hidden unit for %d channels", c->se_reduction, H);
            int hid = L->se_hidden;
            if ((L->p_se_w1 = add_param(t, prefix, l, "seg_ex_block.se.1.weight", 0, NPRED_PT_F32, 2, hid, H, 0, 0)) <
                    0 ||
                (L->p_se_b1 = add_param(t, prefix, l, "seg_ex_block.se.1.bias", 0, NPRED_PT_F32, 1, hid, 0, 0, 0)) < 0 ||
                (L->p_se_w2 = add_param(t, prefix, l, "seg_ex_block.se.3.weight", 0, NPRED_PT_F32, 2, H, hid, 0, 0)) <
                    0 ||
                (L->p_se_b2 = add_param(t, prefix, l, "seg_ex_block.se.3.bias", 0, NPRED_PT_F32, 1, H, 0, 0, 0)) < 0)
                return NPRED_ERR_ARG;
        }
        h = L->hout;
        w = L->wout;
    }
    const npred_core_layer *first = &core->L[c->stack[0]];
    core->out_h = first->hout;
    core->out_w = first->wout;
    core->out_c = 0;
    for (int i = 0; i < c->n_stack; i++) {
        const npred_core_layer *L = &core->L[c->stack[i]];
        if (L->hout != core->out_h || L->wout != core->out_w)
            return npred_errorf(NPRED_ERR_SHAPE,
                                "core: stacked layers have different sizes (%dx%d vs %dx%d); neuralpredictors 0.3.0 "
                                "fails here too (torch.cat)", L->hout, L->wout, core->out_h, core->out_w);
        core->out_c += L->cout;
    }
    return NPRED_OK;
}

/* Bytes of one thread's workspace slice for a layer's convolutions run image by
 * image (the largest one-image workspace of its convolutions). */
static size_t ds_slice_bytes(const npred_core_layer *L)
{
    size_t m = 0;
    for (int i = 0; i < L->nconv; i++) {
        npred_conv2d_params p = L->cp[i];
        p.n = 1;
        /* one image on one thread: the size must not depend on the thread count of the
         * setup, which may be lower than the one the block later runs with */
        size_t b = npred_conv2d_workspace_size_threads(&p, NPRED_CONV2D_ALGO_AUTO, 1);
        if (b > m) m = b;
    }
    return (m + 63) / 64 * 64;
}

/* Floats of one chunk's gradient partials of the depth-separable block: per conv
 * i, the weight gradient then the bias gradient (aligned to 16 floats each). */
static size_t ds_part_floats(const npred_core_layer *L, size_t off[3][2])
{
    size_t o = 0;
    for (int i = 0; i < 3; i++) {
        const npred_conv2d_params *p = &L->cp[i];
        off[i][0] = o;
        o += ((size_t)p->o * (p->c / p->groups) * p->kh * p->kw + 15) / 16 * 16;
        off[i][1] = o;
        o += ((size_t)p->o + 15) / 16 * 16;
    }
    return o;
}

#define DS_CHUNKS 32
/* an image's block input larger than this (an L2 several times) is made and convolved
 * band by band of DS_BAND_ROWS rows (at 144 x 256 x 64 channels: 256 KB a band) */
#define DS_BAND_MIN_BYTES ((size_t)4 << 20)
#define DS_BAND_ROWS 4

/* floats of a scratch buffer of n: rounded to 16, and 16 more of slack */
static size_t f16(size_t n) { return (n + 15) / 16 * 16 + 16; }

/* One thread's part of the image-by-image block: a conv slice, the two
 * intermediate gradients of one image and the gradient of its output (when the
 * block's BatchNorm + ELU backward is applied image by image), and for activation
 * recomputation the image's block input and two intermediates. */
typedef struct {
    void *ws;
    float *dt1, *dzs, *dt0, *ain, *t0, *t1;
} ds_scratch;

static size_t ds_thread_bytes(const npred_core_layer *L)
{
    const size_t n_in = (size_t)L->cin * L->hin * L->win, n_mid = (size_t)L->cout * L->hin * L->win,
                 n_out = (size_t)L->cout * L->hout * L->wout;
    size_t per = (ds_slice_bytes(L) + 63) / 64 * 64 + sizeof(float) * (3 * f16(n_out) + 2 * f16(n_mid) + f16(n_in));
    return (per + 63) / 64 * 64;
}

static ds_scratch ds_thread(const npred_core_layer *L, char *mine)
{
    const size_t n_in = (size_t)L->cin * L->hin * L->win, n_mid = (size_t)L->cout * L->hin * L->win,
                 n_out = (size_t)L->cout * L->hout * L->wout;
    ds_scratch d;
    d.ws = mine;
    float *p = (float *)(mine + (ds_slice_bytes(L) + 63) / 64 * 64);
    d.dt1 = p, p += f16(n_out);
    d.dzs = p, p += f16(n_out);
    d.dt0 = p, p += f16(n_mid);
    d.ain = p, p += f16(n_in);
    d.t0 = p, p += f16(n_mid);
    d.t1 = p;
    return d;
}

/* Workspace bytes of the image-by-image backward: the chunks' partials, then per
 * thread ds_thread_bytes. */
static size_t ds_backward_bytes(const npred_core_layer *L, int threads)
{
    size_t off[3][2];
    return (DS_CHUNKS * ds_part_floats(L, off) * sizeof(float) + 63) / 64 * 64 + (size_t)threads * ds_thread_bytes(L);
}

/* Activation and gradient buffers are not cleared: every one is written before
 * it is read (the backward zeroes what it accumulates into), so the pages of a
 * buffer that a configuration never touches (the gradient scratch g[] of a core
 * whose every layer takes the fused paths, the output gradients at inference)
 * are never committed. */
static float *falloc(size_t n, npred_status *s)
{
    if (*s) return NULL;
    size_t bytes = (n + 16) / 16 * 16 * sizeof(float);
    float *p = aligned_alloc(64, bytes);
    if (!p) *s = npred_errorf(NPRED_ERR_NOMEM, "core: cannot allocate %zu bytes of activations", bytes);
    return p;
}

/* The output gradients of layers l and l + 2 can share a buffer when the only
 * gradient entering the core from outside is the last layer's (one stacked
 * layer, the last, and no skip connections): layer l + 2's gradient is consumed
 * by its backward before layer l + 1's backward writes layer l's. */
static int shares_dout(const npred_core_config *c)
{
    return !uses_skip(c) && c->n_stack == 1 && c->stack[0] == c->layers - 1;
}

npred_status npred_core_setup(npred_core *core, const npred_ptable *t, int max_batch)
{
    (void)t;
    npred_status s = NPRED_OK;
    const npred_core_config *c = &core->cfg;
    size_t B = (size_t)max_batch, gmax = 0, ws = 0;
    core->max_batch = max_batch;
    for (int l = 0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        size_t nin = B * L->cin * L->hin * L->win, nmid = B * L->cout * L->hin * L->win,
               nout = B * L->cout * L->hout * L->wout;
        if (l > 0 && uses_skip(c)) {
            L->in = falloc(nin, &s);
            L->owns_in = 1;
        }
        if (L->ds) {
            L->t[0] = falloc(nmid, &s);
            L->t[1] = falloc(nout, &s);
        }
        L->z = falloc(nout, &s);
        L->fused = L->has_bn && L->has_act && L->p_bias2d < 0 && L->p_scale2d < 0 &&
                   core->act.kind == NPRED_ACT_ADAPTIVE_ELU;
        L->v = L->has_bn && !L->fused ? falloc(nout, &s) : L->z;
        L->u = (L->p_bias2d >= 0 || L->p_scale2d >= 0) ? falloc(nout, &s) : L->v;
        L->a = L->has_act ? falloc(nout, &s) : L->u;
        if (L->has_se) {
            L->out = falloc(nout, &s);
            L->se_pool = falloc(B * L->cout, &s);
            L->se_h = falloc(B * L->se_hidden, &s);
            L->se_s = falloc(B * L->cout, &s);
        } else {
            L->out = L->a;
        }
        if (L->att) {
            L->att_kqv = falloc(3 * nout, &s);
            L->att_d = falloc(3 * nout, &s);
        }
        if (L->p_coeffs >= 0) {
            size_t nw = (size_t)L->cout * L->cin * L->k * L->k;
            L->weff = falloc(nw, &s);
            L->dweff = falloc(nw, &s);
            if (!s && !(L->basis = malloc(sizeof(double) * (size_t)L->rot * L->ncoef * L->k * L->k)))
                s = npred_errorf(NPRED_ERR_NOMEM, "core: out of memory");
        }
        if (!s) {
            L->mean = calloc((size_t)L->cout, sizeof(double));
            L->invstd = calloc((size_t)L->cout, sizeof(double));
            if (!L->mean || !L->invstd) s = npred_errorf(NPRED_ERR_NOMEM, "core: out of memory");
        }
        size_t m = nin > nmid ? nin : nmid;
        if (nout > m) m = nout;
        if (m > gmax) gmax = m;
        for (int i = 0; i < L->nconv; i++) {
            npred_conv2d_params p = L->cp[i];
            p.n = max_batch;
            size_t wsz = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_AUTO);
            if (wsz > ws) ws = wsz;
        }
        if (L->ds && !L->att) { /* the block run image by image: forward and backward */
            size_t wsz = ds_backward_bytes(L, npred_threads());
            if (wsz > ws) ws = wsz;
        }
    }
    for (int l = c->layers - 1; l >= 0; l--) {
        npred_core_layer *L = &core->L[l], *L2 = l + 2 < c->layers ? &core->L[l + 2] : NULL;
        size_t nout = B * L->cout * L->hout * L->wout;
        if (L2 && shares_dout(c) && B * L2->cout * L2->hout * L2->wout >= nout && L2->dout) {
            L->dout = L2->dout;
            L->owns_dout = 0;
        } else {
            L->dout = falloc(nout, &s);
            L->owns_dout = 1;
        }
    }
    for (int i = 0; i < 3; i++) core->g[i] = falloc(gmax, &s);
    size_t planes = 0, cmax = 0;
    for (int l = 0; l < c->layers; l++) {
        if (B * core->L[l].cout > planes) planes = B * core->L[l].cout;
        if ((size_t)core->L[l].cout > cmax) cmax = core->L[l].cout;
    }
    if (!s) {
        core->pstats = malloc(sizeof(double) * 2 * planes);
        core->bncoef = malloc(sizeof(double) * 4 * cmax);
        if (!core->pstats || !core->bncoef) s = npred_errorf(NPRED_ERR_NOMEM, "core: out of memory");
    }
    if (c->n_stack == 1) {
        core->output = core->L[c->stack[0]].out;
    } else {
        core->output = falloc(B * core->out_c * core->out_h * core->out_w, &s);
        core->owns_output = 1;
    }
    if (!s && ws) {
        core->ws = aligned_alloc(64, (ws + 63) / 64 * 64);
        if (!core->ws) s = npred_errorf(NPRED_ERR_NOMEM, "core: cannot allocate %zu bytes of workspace", ws);
        core->ws_bytes = ws;
    }
    return s;
}

static const float LAPLACE3[9] = {0, -1, 0, -1, 4, -1, 0, -1, 0};

void npred_core_init_buffers(npred_core *core, npred_ptable *t)
{
    memcpy(npred_ptable_ptr(t, core->p_lapfilter), LAPLACE3, sizeof LAPLACE3);
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core_layer *L = &core->L[l];
        if (L->p_coeffs < 0) continue;
        size_t plane = (size_t)L->hk * L->hk, nc = (size_t)L->ncoef;
        double *H = malloc(sizeof(double) * nc * (plane + nc + 1));
        char *desc = malloc(nc);
        if (!H || !desc) { /* constants stay zero; the forward then outputs zeros */
            free(H);
            free(desc);
            continue;
        }
        double *mu = H + nc * plane, *Rd = mu + nc;
        npred_hermite_basis(H, desc, mu, L->k, L->hk);
        float *hp = npred_ptable_ptr(t, L->p_H);
        for (size_t i = 0; i < nc * plane; i++) hp[i] = (float)H[i];
        for (int r = 0; r < L->rot; r++) {
            npred_hermite_rotation(Rd, desc, mu, L->ncoef, r * 2 * M_PI / L->rot);
            float *rp = npred_ptable_ptr(t, L->p_Rs0 + r);
            for (size_t i = 0; i < nc * nc; i++) rp[i] = (float)Rd[i];
        }
        free(H);
        free(desc);
    }
}

void npred_core_init_params(npred_core *core, npred_ptable *t, npred_rng *rng)
{
    const npred_core_config *c = &core->cfg;
    npred_core_init_buffers(core, t);
    for (int l = 0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        if (L->att) { /* AttentionConv.reset_parameters: rel N(0, 1); its kaiming init is overwritten by
                         Core.init_conv's xavier_normal below */
            int rp[2] = {L->p_rel_h, L->p_rel_w};
            for (int q = 0; q < 2; q++) {
                float *p = npred_ptable_ptr(t, rp[q]);
                for (size_t j = 0; j < t->items[rp[q]].count; j++) p[j] = (float)npred_rng_normal(rng);
            }
        }
        if (L->p_coeffs >= 0) { /* init_conv_hermite: N(0, 0.1) */
            float *cf = npred_ptable_ptr(t, L->p_coeffs);
            for (size_t j = 0; j < t->items[L->p_coeffs].count; j++) cf[j] = (float)(0.1 * npred_rng_normal(rng));
        }
        for (int i = 0; i < L->nconv && L->p_coeffs < 0; i++) {
            const npred_conv2d_params *p = &L->cp[i];
            double fan_in = (double)(p->c / p->groups) * p->kh * p->kw, fan_out = (double)p->o * p->kh * p->kw;
            double std = sqrt(2.0 / (fan_in + fan_out));
            float *w = npred_ptable_ptr(t, L->p_w[i]);
            for (size_t j = 0; j < t->items[L->p_w[i]].count; j++) w[j] = (float)(std * npred_rng_normal(rng));
            if (L->p_b[i] >= 0) memset(npred_ptable_ptr(t, L->p_b[i]), 0, (size_t)p->o * sizeof(float));
        }
        if (L->has_bn) {
            for (int ch = 0; ch < c->hidden_channels; ch++) {
                if (L->p_gamma >= 0) {
                    npred_ptable_ptr(t, L->p_gamma)[ch] = 1;
                    npred_ptable_ptr(t, L->p_beta)[ch] = 0;
                }
                npred_ptable_ptr(t, L->p_rmean)[ch] = 0;
                npred_ptable_ptr(t, L->p_rvar)[ch] = 1;
            }
            for (int ch = 0; ch < c->hidden_channels; ch++) {
                if (L->p_bias2d >= 0) npred_ptable_ptr(t, L->p_bias2d)[ch] = 0;
                if (L->p_scale2d >= 0) npred_ptable_ptr(t, L->p_scale2d)[ch] = 1;
            }
            npred_ptable_ptr(t, L->p_nbt)[0] = 0;
        }
        if (L->has_se) { /* nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) */
            int ids[4] = {L->p_se_w1, L->p_se_b1, L->p_se_w2, L->p_se_b2};
            int fan[4] = {L->cout, L->cout, L->se_hidden, L->se_hidden};
            for (int k = 0; k < 4; k++) {
                double bound = 1.0 / sqrt((double)fan[k]);
                float *p = npred_ptable_ptr(t, ids[k]);
                for (size_t j = 0; j < t->items[ids[k]].count; j++)
                    p[j] = (float)((2 * npred_rng_uniform(rng) - 1) * bound);
            }
        }
    }
}

static float *pw(npred_ptable *t, int idx) { return idx >= 0 ? npred_ptable_ptr(t, idx) : NULL; }
static float *pg(npred_ptable *t, int idx) { return idx >= 0 ? npred_ptable_gradptr(t, idx) : NULL; }

/* AttentionConv: z[b,c,y,x] = sum_w softmax_w(q * (key_w + rel_w)) value_w over the k x k
 * window w around (y, x); outside the map the key/value are their conv biases (the 1x1
 * convs of the zero padding). */
static float att_rel(const npred_core_layer *L, const float *rh, const float *rw, int ch, int i, int j)
{
    int half = L->cout / 2;
    return ch < half ? rh[ch * L->k + i] : rw[(ch - half) * L->k + j];
}

static void attention_forward(npred_core_layer *L, npred_ptable *t, int B)
{
    int C = L->cout, h = L->hout, w = L->wout, K = L->k, p = L->pad;
    size_t plane = (size_t)h * w, nn = (size_t)B * C * plane;
    const float *kk = L->att_kqv, *qq = kk + nn, *vv = qq + nn;
    const float *kb = pw(t, L->p_b[0]), *vb = pw(t, L->p_b[2]);
    const float *rh = pw(t, L->p_rel_h), *rw = pw(t, L->p_rel_w);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++) {
            double lg[64];
            size_t o = ((size_t)b * C + ch) * plane;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double q = qq[o + (size_t)y * w + x], mx = -INFINITY, sum = 0, acc = 0;
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) {
                            int yy = y + i - p, xx = x + j - p;
                            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
                            double kv = in ? kk[o + (size_t)yy * w + xx] : (kb ? kb[ch] : 0);
                            double v = q * (kv + att_rel(L, rh, rw, ch, i, j));
                            lg[i * K + j] = v;
                            if (v > mx) mx = v;
                        }
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) {
                            int yy = y + i - p, xx = x + j - p;
                            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
                            double e = exp(lg[i * K + j] - mx);
                            sum += e;
                            acc += e * (in ? vv[o + (size_t)yy * w + xx] : (vb ? vb[ch] : 0));
                        }
                    L->z[o + (size_t)y * w + x] = (float)(acc / sum);
                }
        }
}

/* dz (B, C, h, w) -> att_d = d(key), d(query), d(value) maps; the rel terms' and the
 * outside-window bias gradients accumulate into the table. Serial over channels for the
 * shared gradients (deterministic). */
static void attention_backward(npred_core_layer *L, npred_ptable *t, const float *dz, int B)
{
    int C = L->cout, h = L->hout, w = L->wout, K = L->k, p = L->pad, half = C / 2;
    size_t plane = (size_t)h * w, nn = (size_t)B * C * plane;
    const float *kk = L->att_kqv, *qq = kk + nn, *vv = qq + nn;
    float *dk = L->att_d, *dq = dk + nn, *dv = dq + nn;
    memset(L->att_d, 0, 3 * nn * sizeof(float));
    const float *kb = pw(t, L->p_b[0]), *vb = pw(t, L->p_b[2]);
    const float *rh = pw(t, L->p_rel_h), *rw = pw(t, L->p_rel_w);
    float *gkb = pg(t, L->p_b[0]), *gvb = pg(t, L->p_b[2]), *grh = pg(t, L->p_rel_h), *grw = pg(t, L->p_rel_w);
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < C; ch++) {
        double lg[64], a[64], grel[8] = {0}, gk = 0, gv = 0;
        for (int b = 0; b < B; b++) {
            size_t o = ((size_t)b * C + ch) * plane;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double q = qq[o + (size_t)y * w + x], mx = -INFINITY, sum = 0, g = dz[o + (size_t)y * w + x];
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) {
                            int yy = y + i - p, xx = x + j - p;
                            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
                            double kv = in ? kk[o + (size_t)yy * w + xx] : (kb ? kb[ch] : 0);
                            lg[i * K + j] = kv + att_rel(L, rh, rw, ch, i, j); /* the key term, times q below */
                            double v = q * lg[i * K + j];
                            if (v > mx) mx = v;
                        }
                    for (int u = 0; u < K * K; u++) sum += (a[u] = exp(q * lg[u] - mx));
                    double da_dot = 0, dav[64];
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) {
                            int u = i * K + j, yy = y + i - p, xx = x + j - p;
                            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
                            a[u] /= sum;
                            double vval = in ? vv[o + (size_t)yy * w + xx] : (vb ? vb[ch] : 0);
                            dav[u] = g * vval;
                            da_dot += a[u] * dav[u];
                            if (in) dv[o + (size_t)yy * w + xx] += (float)(g * a[u]);
                            else gv += g * a[u];
                        }
                    double dqv = 0;
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < K; j++) {
                            int u = i * K + j, yy = y + i - p, xx = x + j - p;
                            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
                            double dl = a[u] * (dav[u] - da_dot); /* d(logit) */
                            dqv += dl * lg[u];
                            double dkey = dl * q;
                            if (in) dk[o + (size_t)yy * w + xx] += (float)dkey;
                            else gk += dkey;
                            grel[ch < half ? i : j] += dkey;
                        }
                    dq[o + (size_t)y * w + x] += (float)dqv;
                }
        }
        if (gkb) gkb[ch] += (float)gk;
        if (gvb) gvb[ch] += (float)gv;
        for (int u = 0; u < K; u++) {
            if (ch < half) grh[ch * K + u] += (float)grel[u];
            else grw[(ch - half) * K + u] += (float)grel[u];
        }
    }
}

/* weff of a Hermite layer from the current coefficients and constant buffers */
static void hermite_build(npred_core *core, npred_core_layer *L, npred_ptable *t)
{
    const float *Rs[NPRED_MAX_ROTATIONS];
    for (int r = 0; r < L->rot; r++) Rs[r] = npred_ptable_ptr(t, L->p_Rs0 + r);
    npred_hermite_rotated_basis(L->basis, npred_ptable_ptr(t, L->p_H), Rs, L->ncoef, L->k, core->cfg.upsampling,
                                L->rot);
    npred_hermite_weights(L->weff, npred_ptable_ptr(t, L->p_coeffs), L->basis, L->ncoef, L->cin,
                          core->cfg.hidden_channels, L->rot, L->k, L == &core->L[0]);
}

/* coeffs.grad += d(weff)/d(coeffs)^T dweff */
static void hermite_project(npred_core *core, npred_core_layer *L, npred_ptable *t)
{
    npred_hermite_weights_backward(npred_ptable_gradptr(t, L->p_coeffs), L->dweff, L->basis, L->ncoef, L->cin,
                                   core->cfg.hidden_channels, L->rot, L->k, L == &core->L[0]);
}

/* the FFT weights of a plain layer's conv (once per weight set) and the workspace */
static npred_status fft_prepare(npred_core *core, npred_core_layer *L, const npred_conv2d_params *p, const float *w)
{
    if (!L->wfft_ok) {
        if (!L->wfft && !(L->wfft = malloc(npred_conv2d_fft_weights_floats(p) * sizeof(float))))
            return npred_errorf(NPRED_ERR_NOMEM, "core: out of memory for the FFT weights");
        npred_status s = npred_conv2d_fft_weights(L->wfft, w, p);
        if (s) return s;
        L->wfft_ok = 1;
    }
    return npred_conv2d_fft_reserve(&core->fws, &core->fws_bytes, p);
}

static npred_status conv_fwd(npred_core *core, npred_core_layer *L, npred_ptable *t, int i, float *y, const float *x,
                             int B)
{
    npred_conv2d_params p = L->cp[i];
    p.n = B;
    const float *w = L->weff ? L->weff : pw(t, L->p_w[i]);
    if (core->fft && !core->train && !L->ds && !L->att && npred_conv2d_fft_use(&p)) {
        npred_status s = fft_prepare(core, L, &p, w);
        return s ? s : npred_conv2d_fft_forward(y, x, L->wfft, pw(t, L->p_b[i]), &p, core->fws, core->fws_bytes);
    }
    return npred_conv2d_forward(y, x, w, pw(t, L->p_b[i]), &p, core->ws, core->ws_bytes);
}

static npred_status conv_bwd(npred_core *core, npred_core_layer *L, npred_ptable *t, int i, float *dx,
                             const float *dy, const float *x, int B)
{
    npred_conv2d_params p = L->cp[i];
    p.n = B;
    if (L->weff && t->grads_off) /* input gradient only */
        return npred_conv2d_backward(dx, NULL, NULL, dy, x, L->weff, &p, core->ws, core->ws_bytes);
    if (L->weff) { /* Hermite layer: weight gradient into dweff, then back to the coefficients */
        memset(L->dweff, 0, sizeof(float) * (size_t)L->cout * L->cin * L->k * L->k);
        npred_status s = npred_conv2d_backward(dx, L->dweff, NULL, dy, x, L->weff, &p, core->ws, core->ws_bytes);
        if (!s) hermite_project(core, L, t);
        return s;
    }
    return npred_conv2d_backward(dx, pg(t, L->p_w[i]), pg(t, L->p_b[i]), dy, x, pw(t, L->p_w[i]), &p, core->ws,
                                 core->ws_bytes);
}

/* The previous fused layer's BatchNorm input and map, from which the block's input is
 * made image by image: with activation recomputation (store NULL) into scratch, its
 * output not being stored; else (a training forward that stores everything) written
 * to store, the previous layer's output, by the block that reads it (no pass of its
 * own). */
typedef struct {
    const float *z;
    npred_bn_elu_map map;
    float *store;
} ds_prev;

/* The threads' parts of the image-by-image block in the workspace (after the
 * chunks' gradient partials); *T is lowered to the number that fit. */
static char *ds_threads(npred_core *core, const npred_core_layer *L, int *T)
{
    size_t off[3][2];
    char *thr = (char *)core->ws + (DS_CHUNKS * ds_part_floats(L, off) * sizeof(float) + 63) / 64 * 64;
    size_t used = (size_t)(thr - (char *)core->ws), room = core->ws_bytes > used ? core->ws_bytes - used : 0;
    size_t per = ds_thread_bytes(L);
    if ((size_t)*T > room / per) *T = (int)(room / per);
    return thr;
}

/* The block's input of image n recomputed from the previous layer (prev), or in place */
static const float *ds_input(const npred_core_layer *L, const float *in, const ds_prev *prev, int n, float *ain)
{
    const size_t hw = (size_t)L->hin * L->win, n_in = (size_t)L->cin * hw;
    if (!prev) return in + n * n_in;
    float *o = prev->store ? prev->store + n * n_in : ain;
    npred_batchnorm2d_elu_apply(o, prev->z + n * n_in, &prev->map, 1, L->cin, hw);
    return o;
}

/* The depth-separable block (1x1 -> depthwise -> 1x1) image by image in one
 * parallel region: an image's two intermediates are still in L2 when the next
 * convolution reads them, where three batched calls stream each of them through
 * memory twice. Each convolution computes every image exactly as its batched
 * call does (the same kernels, one image per call on one thread), so the result
 * is bit-identical to the three batched calls. With pst, the per-plane BatchNorm
 * statistics of each image's output are computed while it is in cache
 * (npred_batchnorm2d_plane_stats, into pst (B, C, 2)). With prev (activation
 * recomputation, training), the input of each image is made from the previous
 * layer's BatchNorm input and the intermediates stay in per-thread scratch: only z
 * is stored. */
/* With ev (eval mode, a fused BatchNorm + ELU layer), each image's BatchNorm + ELU
 * is applied right after its convolutions, into L->a, with the bits of the batched
 * eval kernel (npred_batchnorm2d_eval_image). The same image-by-image loop runs the
 * single convolution of a plain layer (nconv 1) in eval mode. With lean (and ev),
 * the intermediates and the convolution output of an image go to the thread's slot
 * of the backward scratch g[] (still in cache when the next step reads them) instead
 * of the batch-sized buffers, which a backward would need: only L->a is written. */
typedef struct {
    const float *rmean, *rvar, *gamma, *beta;
    float xshift, yshift;
} blk_eval;

/* the calling thread's part of the bf16 block kernels' scratch */
static char *bf_scratch(const npred_core *core)
{
    return (char *)core->bf_ws + (size_t)npred_thread_id() * core->bf_ws_per;
}

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* one activation of layer L's output as bf16 pairs of channels, in bytes (bf16_chain
 * keeps two per thread) */
static size_t bf16_pairs_bytes(const npred_core_layer *L)
{
    return round64(npred_bf16_block_pair_words(L->cout, L->hout, L->wout) * 4);
}

/* The bf16 block kernels' description of layer L (BatchNorm eval from ev; ev NULL: a
 * training forward), when bf16 is on and they take its geometry; else 0 */
static int bf16_block_of(const npred_core *core, const npred_core_layer *L, npred_ptable *t, const blk_eval *ev,
                         npred_bf16_block *b)
{
    const npred_conv2d_params *p = L->cp;
    for (int i = 0; i < 3; i += 2) /* plain 1x1s */
        if (p[i].kh != 1 || p[i].kw != 1 || p[i].groups != 1 || p[i].stride_h != 1 || p[i].stride_w != 1 ||
            p[i].pad_h || p[i].pad_w)
            return 0;
    if (!core->bf_ws || L->nconv != 3 || !p[0].bf16 || p[2].c != p[2].o || p[0].o != p[1].c ||
        p[1].groups != p[1].c || p[1].c != p[1].o || p[1].kh != p[1].kw || p[1].pad_h != p[1].pad_w ||
        p[1].stride_h != p[1].stride_w || p[1].dil_h != p[1].dil_w ||
        !npred_bf16_block_supported(p[1].kh, p[1].pad_h, p[1].stride_h, p[1].dil_h))
        return 0;
    *b = (npred_bf16_block){p[0].c, p[0].o, p[0].h, p[0].w, p[1].kh, pw(t, L->p_w[0]), pw(t, L->p_b[0]),
                            pw(t, L->p_w[1]), pw(t, L->p_b[1]), pw(t, L->p_w[2]), pw(t, L->p_b[2]),
                            ev ? ev->rmean : NULL, ev ? ev->rvar : NULL, ev ? ev->gamma : NULL,
                            ev ? ev->beta : NULL, 1e-5, ev ? ev->xshift : 0.0f, ev ? ev->yshift : 0.0f};
    return npred_bf16_block_scratch_bytes(b) <= core->bf_ws_per;
}

/* Rows of an image per band of the block's first steps (ds_input_conv0_bands): 0 for
 * none. Auto (band_rows 0): DS_BAND_ROWS where an image's block input exceeds
 * DS_BAND_MIN_BYTES; npred_core_set_band_rows sets any size (tests). */
static int ds_band_rows(const npred_core *core, const npred_core_layer *L)
{
    if (core->band_rows) return core->band_rows > 0 ? core->band_rows : 0;
    return (size_t)L->cin * L->hin * L->win * sizeof(float) > DS_BAND_MIN_BYTES ? DS_BAND_ROWS : 0;
}

void npred_core_set_band_rows(npred_core *core, int rows) { core->band_rows = rows; }

/* The input of image n made from the previous layer's BatchNorm input and stored
 * (prev->store), and the block's first 1x1 convolution, band by band of rows: each
 * band of the input is still in L2 when the convolution reads it (an image's input at
 * 144 x 256 is 9.4 MB, which the whole-image steps wrote to memory and read back).
 * Both are per pixel: the same values as the whole-image calls. */
static void ds_input_conv0_bands(const npred_core_layer *L, const ds_prev *prev, int n, const float *w0,
                                 const float *b0, float *t0, int rows)
{
    const int H = L->hin, W = L->win, C = L->cin;
    const size_t hw = (size_t)H * W, n_in = (size_t)C * hw;
    float *o = prev->store + n * n_in;
    const float *z = prev->z + n * n_in;
    const npred_bn_elu_map *m = &prev->map;
    for (int r0 = 0; r0 < H; r0 += rows) {
        const int r1 = H - r0 < rows ? H : r0 + rows;
        const size_t off = (size_t)r0 * W, bp = (size_t)(r1 - r0) * W;
        for (int c = 0; c < C; c++) {
            npred_bn_elu_map mc = *m; /* channel c's map as a one-channel map */
            mc.mean += c, mc.invstd += c;
            if (mc.gamma) mc.gamma += c;
            if (mc.beta) mc.beta += c;
            npred_batchnorm2d_elu_apply(o + c * hw + off, z + c * hw + off, &mc, 1, 1, bp);
        }
        if (b0) npred_gemm_nn_bias(L->cout, (int)bp, C, w0, C, 1, o + off, (ptrdiff_t)hw, b0, t0 + off, (ptrdiff_t)hw);
        else npred_gemm_nn(L->cout, (int)bp, C, w0, C, 1, o + off, (ptrdiff_t)hw, t0 + off, (ptrdiff_t)hw, 0);
    }
}

static npred_status ds_forward(npred_core *core, npred_core_layer *L, npred_ptable *t, const float *in, int B,
                               double *pst, const blk_eval *ev, int lean, const ds_prev *prev)
{
    npred_conv2d_params p[3];
    const float *w[3], *b[3];
    const int nc = L->nconv;
    for (int i = 0; i < nc; i++) {
        p[i] = L->cp[i];
        p[i].n = 1;
        w[i] = pw(t, L->p_w[i]);
        b[i] = pw(t, L->p_b[i]);
    }
    const size_t slice = ds_slice_bytes(L), per = ds_thread_bytes(L);
    const size_t n_mid = (size_t)L->cout * L->hin * L->win, n_out = (size_t)L->cout * L->hout * L->wout,
                 hw = (size_t)L->hout * L->wout;
    int T = npred_threads();
    if (T > B) T = B;
    char *thr = NULL;
    const int rcm = prev && !prev->store; /* recomputation: the intermediates in scratch too */
    if (rcm) thr = ds_threads(core, L, &T);
    else if (slice && (size_t)T > core->ws_bytes / slice) T = (int)(core->ws_bytes / slice);
    if (T < 1) return npred_errorf(NPRED_ERR_ARG, "core: workspace of %zu bytes too small", core->ws_bytes);
    /* bf16: an eval block without intermediates in memory (its BatchNorm + ELU applied
     * by the second 1x1's kernel) */
    npred_bf16_block bb;
    const int bfb = ev && lean && !pst && !prev && bf16_block_of(core, L, t, ev, &bb);
    /* bf16 training: the same kernels make z and store both intermediates in bf16
     * (L->t_bf16; ds_backward reads them in its bf16 kernels) */
    const int bft = core->train && !ev && !lean && L->has_bn && bf16_block_of(core, L, t, NULL, &bb);
    L->t_bf16 = bft ? (rcm ? 2 : 1) : 0;
    /* recomputing less (PARTIAL): a training forward stores the first 1x1's output */
    const int keep0 = rcm && core->rc_keep_t0 && core->train && !ev && !lean && nc == 3 && !bft;
    L->t0_kept = keep0;
    if ((bfb || bft) && T > core->bf_ws_threads) T = core->bf_ws_threads;
    const size_t n_pairs = (size_t)(L->cout + 1) / 2 * hw;
    /* the input made and stored here, and the first 1x1 convolution, by bands of rows
     * where an image's input is larger than L2 (fp32) */
    const int bands = nc == 3 && prev && prev->store && !lean && !p[0].bf16 ? ds_band_rows(core, L) : 0;
    int failed = 0;
#pragma omp parallel num_threads(T) if (T > 1) reduction(| : failed)
    {
        ds_scratch sc;
        memset(&sc, 0, sizeof sc);
        if (rcm) sc = ds_thread(L, thr + (size_t)npred_thread_id() * per);
        else sc.ws = (char *)core->ws + (size_t)npred_thread_id() * slice;
#pragma omp for schedule(static)
        for (int n = 0; n < B; n++) {
            if (bfb) {
                npred_bf16_block_eval_image(&bb, in + n * n_mid, NULL, L->a + n * n_out, NULL,
                                            bf_scratch(core));
                continue;
            }
            const size_t slot = lean ? (size_t)npred_thread_id() : (size_t)n;
            float *z = (lean ? core->g[2] : L->z) + slot * n_out;
            if (bands) {
                float *t0 = L->t[0] + slot * n_mid, *t1 = L->t[1] + slot * n_out;
                ds_input_conv0_bands(L, prev, n, w[0], b[0], t0, bands);
                failed |= npred_conv2d_forward(t1, t0, w[1], b[1], &p[1], sc.ws, slice) != NPRED_OK ||
                          npred_conv2d_forward(z, t1, w[2], b[2], &p[2], sc.ws, slice) != NPRED_OK;
            } else if (bft) { /* (recomputing: the intermediates into the thread's scratch) */
                const float *xin = ds_input(L, in, prev, n, sc.ain);
                npred_bf16_block_train_image(
                    &bb, xin, z, rcm ? (uint16_t *)(void *)sc.t0 : (uint16_t *)(void *)L->t[0] + n * n_mid,
                    rcm ? (uint32_t *)(void *)sc.t1 : (uint32_t *)(void *)L->t[1] + n * n_pairs,
                    bf_scratch(core));
            } else if (nc == 3) {
                const float *xin = ds_input(L, in, prev, n, sc.ain);
                float *t0 = rcm && !keep0 ? sc.t0 : (lean ? core->g[0] : L->t[0]) + slot * n_mid;
                float *t1 = rcm ? sc.t1 : (lean ? core->g[1] : L->t[1]) + slot * n_out;
                failed |= npred_conv2d_forward(t0, xin, w[0], b[0], &p[0], sc.ws, slice) != NPRED_OK ||
                          npred_conv2d_forward(t1, t0, w[1], b[1], &p[1], sc.ws, slice) != NPRED_OK ||
                          npred_conv2d_forward(z, t1, w[2], b[2], &p[2], sc.ws, slice) != NPRED_OK;
            } else {
                const float *xin = ds_input(L, in, prev, n, sc.ain);
                failed |= npred_conv2d_forward(z, xin, w[0], b[0], &p[0], sc.ws, slice) != NPRED_OK;
            }
            if (pst) npred_batchnorm2d_plane_stats(pst + (size_t)n * L->cout * 2, z, (size_t)L->cout, hw);
            if (ev)
                npred_batchnorm2d_eval_image(L->a + n * n_out, z, ev->rmean, ev->rvar, ev->gamma, ev->beta, L->cout,
                                             hw, 1e-5, 1, ev->xshift, ev->yshift);
        }
    }
    if (failed) return npred_errorf(NPRED_ERR_ARG, "core: a convolution of the depth-separable block failed");
    return NPRED_OK;
}

/* Backward of the depth-separable block image by image: per image dt1 = W2^T dz,
 * dt0 = the depthwise dx of dt1 and din += W0^T dt0, the two intermediates in
 * per-thread scratch that stays in L2 (three batched calls wrote and re-read two
 * batch-sized tensors and zeroed them first). The weight and bias gradients are
 * summed per fixed chunk of images (min(B, 32) chunks, boundaries set by B), the
 * chunks then added in order: the result does not depend on the thread count.
 * With zero_din, each image's din is zeroed first (else it is added to).
 * With bn, dz is not read: each image's dz is formed from the block's fused
 * BatchNorm + ELU backward (bn->dy is the gradient of the ELU output; coefficients
 * from npred_batchnorm2d_elu_backward_coef) into per-thread scratch, with the bits
 * the batched kernel writes. With prev (activation recomputation), each image's
 * block input and both intermediates are recomputed first (the forward's kernels: the
 * same bits). With bn->e_out the image's input gradient is turned into the previous
 * layer's e (the gradient of its ELU's input) while the block input, that layer's ELU
 * output, is in cache, and that layer's per-image backward sums are made from it
 * (npred_batchnorm2d_elu_grad_sums_image, into bn->esums (B, C, 2)). */
typedef struct {
    const double *coef;
    const float *dy, *x, *y; /* y NULL: dy is e, the gradient of the ELU's input */
    int training;
    float yshift;
    int e_out;            /* turn each image's input gradient into the previous layer's e, from the block input */
    double *esums;        /* with e_out: the previous layer's backward sums per image */
    const float *ez;      /* ... from its BatchNorm input */
    const double *emean;  /* ... and its mean */
} ds_bn;

static npred_status ds_backward(npred_core *core, npred_core_layer *L, npred_ptable *t, const float *dz, float *din,
                                const float *in, int B, const ds_bn *bn, int zero_din, const ds_prev *prev)
{
    npred_conv2d_params p[3];
    const float *w[3], *b[3];
    float *gw[3], *gb[3];
    for (int i = 0; i < 3; i++) {
        p[i] = L->cp[i];
        p[i].n = 1;
        w[i] = pw(t, L->p_w[i]);
        b[i] = pw(t, L->p_b[i]);
        gw[i] = pg(t, L->p_w[i]);
        gb[i] = pg(t, L->p_b[i]);
    }
    size_t off[3][2];
    const size_t pf = ds_part_floats(L, off), slice = ds_slice_bytes(L);
    const size_t n_in = (size_t)L->cin * L->hin * L->win, n_mid = (size_t)L->cout * L->hin * L->win,
                 n_out = (size_t)L->cout * L->hout * L->wout, hw = (size_t)L->hout * L->wout;
    const size_t per = ds_thread_bytes(L);
    const int nch = B < DS_CHUNKS ? B : DS_CHUNKS;
    float *parts = core->ws;
    int T = npred_threads();
    if (T > nch) T = nch;
    char *thr = ds_threads(core, L, &T);
    if (T < 1) return npred_errorf(NPRED_ERR_ARG, "core: workspace of %zu bytes too small", core->ws_bytes);
    /* din over dy: each image's input gradient replaces its output gradient once its
     * BatchNorm gradient is formed (the same size: the caller checks) */
    npred_bf16_block bb;
    if (L->t_bf16 == 2 && !bf16_block_of(core, L, t, NULL, &bb))
        return npred_errorf(NPRED_ERR_ARG, "core: the bf16 block of the forward is not available");
    if (L->t_bf16 && T > core->bf_ws_threads) T = core->bf_ws_threads;
    const int in_place = bn && din == bn->dy;
    if (in_place && n_in != n_out) return npred_errorf(NPRED_ERR_ARG, "core: in-place block of unequal sizes");
    int failed = 0;
#pragma omp parallel num_threads(T) if (T > 1) reduction(| : failed)
    {
        ds_scratch sc = ds_thread(L, thr + (size_t)npred_thread_id() * per);
        char *bscr = L->t_bf16 ? bf_scratch(core) : NULL;
#pragma omp for schedule(static)
        for (int ch = 0; ch < nch; ch++) {
            float *part = parts + (size_t)ch * pf;
            memset(part, 0, pf * sizeof *part);
            float *pw_[3], *pb_[3];
            for (int i = 0; i < 3; i++) {
                pw_[i] = gw[i] ? part + off[i][0] : NULL;
                pb_[i] = gb[i] ? part + off[i][1] : NULL;
            }
            const int n0 = (int)((int64_t)ch * B / nch), n1 = (int)((int64_t)(ch + 1) * B / nch);
            for (int n = n0; n < n1; n++) {
                const float *xin = ds_input(L, in, prev, n, sc.ain);
                const float *t0 = prev ? sc.t0 : L->t[0] + n * n_mid, *t1 = prev ? sc.t1 : L->t[1] + n * n_out;
                /* bf16: the intermediates as the forward left them (t0 planes, t1 pairs of channels) */
                const uint16_t *t0b = NULL;
                const uint32_t *t1p = NULL;
                if (L->t_bf16 == 2) { /* recomputed by the forward's bf16 kernels */
                    npred_bf16_block_front_image(&bb, xin, (uint16_t *)(void *)sc.t0, (uint32_t *)(void *)sc.t1,
                                                 bscr);
                    t0b = (const uint16_t *)(const void *)sc.t0, t1p = (const uint32_t *)(const void *)sc.t1;
                } else if (prev && L->t0_kept) { /* the first 1x1's output as the forward stored it */
                    t0 = L->t[0] + n * n_mid;
                    failed |= npred_conv2d_forward(sc.t1, t0, w[1], b[1], &p[1], sc.ws, slice) != NPRED_OK;
                } else if (prev) {
                    failed |= npred_conv2d_forward(sc.t0, xin, w[0], b[0], &p[0], sc.ws, slice) != NPRED_OK ||
                              npred_conv2d_forward(sc.t1, sc.t0, w[1], b[1], &p[1], sc.ws, slice) != NPRED_OK;
                } else if (L->t_bf16) { /* stored in bf16 by the forward */
                    t0b = (const uint16_t *)(const void *)L->t[0] + n * n_mid;
                    t1p = (const uint32_t *)(const void *)L->t[1] + n * ((size_t)(L->cout + 1) / 2 * hw);
                }
                if (bn) {
                    npred_batchnorm2d_elu_backward_image(sc.dzs, bn->dy + n * n_out, bn->x + n * n_out,
                                                         bn->y ? bn->y + n * n_out : NULL, bn->coef, L->cout, hw,
                                                         bn->training, bn->yshift);
                }
                /* dt1, dt0 and (when zeroed, or in place once this image's dy is read) din
                 * are written by their convolution's backward, not zeroed and added to */
                const float *dzn = bn ? sc.dzs : dz + n * n_out;
                if (L->t_bf16) { /* the backward in bf16 kernels (docs/precision.md): dt1 as bf16 planes,
                                    dt0 fp32; the 1x1s' bias gradients as before */
                    uint16_t *dt1b = (uint16_t *)(void *)sc.dt1;
                    failed |= pb_[2] && npred_conv2d_backward_set(NULL, NULL, pb_[2], dzn, NULL, NULL, &p[2], sc.ws,
                                                                  slice) != NPRED_OK;
                    npred_bf16_pw_backward_image(pw_[2], NULL, dt1b, 0, dzn, NULL, t1p, w[2], L->cout, L->cout, hw,
                                                 bscr);
                    npred_bf16_dw_backward_image(sc.dt0, pw_[1], pb_[1], dt1b, t0b, w[1], L->cout, p[1].h, p[1].w,
                                                 p[1].kh, bscr);
                    failed |= pb_[0] && npred_conv2d_backward_set(NULL, NULL, pb_[0], sc.dt0, NULL, NULL, &p[0], sc.ws,
                                                                  slice) != NPRED_OK;
                    npred_bf16_pw_backward_image(pw_[0], din + n * n_in, NULL, !(zero_din || in_place), sc.dt0, xin,
                                                 NULL, w[0], L->cout, L->cin, hw, bscr);
                } else {
                    failed |=
                        npred_conv2d_backward_set(sc.dt1, pw_[2], pb_[2], dzn, t1, w[2], &p[2], sc.ws, slice) !=
                            NPRED_OK ||
                        npred_conv2d_backward_set(sc.dt0, pw_[1], pb_[1], sc.dt1, t0, w[1], &p[1], sc.ws, slice) !=
                            NPRED_OK ||
                        (zero_din || in_place ? npred_conv2d_backward_set : npred_conv2d_backward)(
                            din + n * n_in, pw_[0], pb_[0], sc.dt0, xin, w[0], &p[0], sc.ws, slice) != NPRED_OK;
                }
                if (bn && bn->e_out)
                    npred_batchnorm2d_elu_grad_sums_image(bn->esums + (size_t)n * L->cin * 2, din + n * n_in, xin,
                                                          bn->ez + n * n_in, bn->emean, L->cin,
                                                          (size_t)L->hin * L->win, bn->yshift);
            }
        }
        /* implicit barrier: every chunk's partials are done; add them in chunk order */
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 2; k++) {
                float *g = k ? gb[i] : gw[i];
                if (!g) continue;
                size_t len = k ? (size_t)p[i].o : (size_t)p[i].o * (p[i].c / p[i].groups) * p[i].kh * p[i].kw;
#pragma omp for schedule(static)
                for (size_t j = 0; j < len; j++) {
                    float a = g[j];
                    for (int c = 0; c < nch; c++) a += parts[(size_t)c * pf + off[i][k] + j];
                    g[j] = a;
                }
            }
    }
    if (failed) return npred_errorf(NPRED_ERR_ARG, "core: a convolution of the depth-separable block failed");
    return NPRED_OK;
}

/* copy the last nsrc layer outputs before layer l into L->in (channel concatenation) */
static void gather_skip(npred_core *core, int l, int B)
{
    npred_core_layer *L = &core->L[l];
    int nsrc = core->cfg.skip < l ? core->cfg.skip : l;
    size_t plane = (size_t)L->hin * L->win, per = (size_t)core->cfg.hidden_channels * plane;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsrc; j++) {
            const npred_core_layer *S = &core->L[l - nsrc + j];
            memcpy(L->in + ((size_t)b * nsrc + j) * per, S->out + (size_t)b * per, per * sizeof(float));
        }
}

static void se_forward(npred_core_layer *L, npred_ptable *t, int B)
{
    int C = L->cout, hid = L->se_hidden;
    size_t hw = (size_t)L->hout * L->wout;
    const float *w1 = pw(t, L->p_se_w1), *b1 = pw(t, L->p_se_b1), *w2 = pw(t, L->p_se_w2), *b2 = pw(t, L->p_se_b2);
    for (int b = 0; b < B; b++) {
        float *pool = L->se_pool + (size_t)b * C, *h = L->se_h + (size_t)b * hid, *s = L->se_s + (size_t)b * C;
        for (int c = 0; c < C; c++) {
            const float *a = L->a + ((size_t)b * C + c) * hw;
            double acc = 0;
            for (size_t i = 0; i < hw; i++) acc += a[i];
            pool[c] = (float)(acc / (double)hw);
        }
        for (int j = 0; j < hid; j++) {
            double acc = b1[j];
            for (int c = 0; c < C; c++) acc += (double)w1[(size_t)j * C + c] * pool[c];
            h[j] = acc > 0 ? (float)acc : 0.0f;
        }
        for (int c = 0; c < C; c++) {
            double acc = b2[c];
            for (int j = 0; j < hid; j++) acc += (double)w2[(size_t)c * hid + j] * h[j];
            s[c] = (float)(1.0 / (1.0 + exp(-acc)));
            const float *a = L->a + ((size_t)b * C + c) * hw;
            float *o = L->out + ((size_t)b * C + c) * hw;
            for (size_t i = 0; i < hw; i++) o[i] = a[i] * s[c];
        }
    }
}

/* da = d(out)/d(a) applied to dout; parameter gradients accumulated */
static npred_status se_backward(npred_core_layer *L, npred_ptable *t, const float *dout, float *da, int B)
{
    int C = L->cout, hid = L->se_hidden;
    size_t hw = (size_t)L->hout * L->wout;
    const float *w1 = pw(t, L->p_se_w1), *w2 = pw(t, L->p_se_w2);
    float *gw1 = pg(t, L->p_se_w1), *gb1 = pg(t, L->p_se_b1), *gw2 = pg(t, L->p_se_w2), *gb2 = pg(t, L->p_se_b2);
    double *dq = malloc(sizeof(double) * (size_t)(C + hid));
    if (!dq) return npred_errorf(NPRED_ERR_NOMEM, "squeeze-excitation backward: out of memory");
    double *dh = dq + C;
    for (int b = 0; b < B; b++) {
        const float *pool = L->se_pool + (size_t)b * C, *h = L->se_h + (size_t)b * hid,
                    *s = L->se_s + (size_t)b * C;
        for (int c = 0; c < C; c++) {
            const float *a = L->a + ((size_t)b * C + c) * hw, *d = dout + ((size_t)b * C + c) * hw;
            float *o = da + ((size_t)b * C + c) * hw;
            double ds = 0;
            for (size_t i = 0; i < hw; i++) {
                ds += (double)d[i] * a[i];
                o[i] = d[i] * s[c];
            }
            dq[c] = ds * s[c] * (1.0 - s[c]);
            if (gb2) gb2[c] += (float)dq[c];
            if (gw2)
                for (int j = 0; j < hid; j++) gw2[(size_t)c * hid + j] += (float)(dq[c] * h[j]);
        }
        for (int j = 0; j < hid; j++) {
            double acc = 0;
            for (int c = 0; c < C; c++) acc += dq[c] * w2[(size_t)c * hid + j];
            dh[j] = h[j] > 0 ? acc : 0;
            if (gb1) gb1[j] += (float)dh[j];
            if (gw1)
                for (int c = 0; c < C; c++) gw1[(size_t)j * C + c] += (float)(dh[j] * pool[c]);
        }
        for (int c = 0; c < C; c++) {
            double dp = 0;
            for (int j = 0; j < hid; j++) dp += dh[j] * w1[(size_t)j * C + c];
            float add = (float)(dp / (double)hw);
            float *o = da + ((size_t)b * C + c) * hw;
            for (size_t i = 0; i < hw; i++) o[i] += add;
        }
    }
    free(dq);
    return NPRED_OK;
}

/* Whether a forward of B images can store only each layer's BatchNorm input
 * (activation recomputation, docs/performance.md; in eval mode too, so that a
 * backward can follow and an evaluation does not touch the activations training
 * left unstored): every layer fused
 * BatchNorm + ELU, the hidden layers depth-separable blocks run image by image, one
 * stacked layer (the last), no skip connections, squeeze-excitation, attention,
 * Hermite filters or synchronised statistics. */
static int rc_possible(const npred_core *core, int B, int train)
{
    const npred_core_config *c = &core->cfg;
    if (c->layers < 2 || !shares_dout(c) || c->rot_eq || B < npred_threads() ||
        (train && npred_batchnorm_sync_active()))
        return 0;
    for (int l = 0; l < c->layers; l++) {
        const npred_core_layer *L = &core->L[l];
        if (!L->fused || L->has_se || L->att || L->weff || L->rot != 1 || L->ds != (l > 0)) return 0;
        if (l > 0 && (size_t)L->cin * L->hin * L->win != (size_t)L->cout * L->hout * L->wout)
            return 0; /* the backward writes a block's input gradient over its output gradient */
    }
    return 1;
}

/* Auto (docs/performance.md, "Activation recomputation"): recompute where it saves
 * at least RC_AUTO_BYTES of stored activations at max_batch, and either
 *   - one image's activation of every hidden layer is at most RC_CACHE_BYTES: the
 *     image-by-image block then keeps an image's recomputed input and intermediates
 *     in cache, and the recomputed convolutions cost little beyond what the forward
 *     saves in memory traffic (the SENSORIUM core at 36x64, 0.4 MB per image and
 *     layer: +6 % CPU per batch-128 step with round 6's kernels), or
 *   - the stored activations would take more than 1/RC_PHYS_SHARE of the machine's
 *     physical memory (then memory requires it).
 * In cache it recomputes PARTIALly (the first 1x1 outputs stored: one hidden activation
 * per layer, most of the recompute's time: round 9) unless memory requires ON.
 * Elsewhere (e.g. the readouts-tutorial core at 144x256: 9.4 MB per image and layer,
 * which stream through memory either way) recomputing is a forward's worth of extra
 * work for nothing else: +25 % CPU per batch-32 training step.
 * Auto decides on the capacity (max_batch), not on the batch at hand: the pages a
 * batch writes stay committed, so one smaller batch (an epoch's last) that stored
 * everything would cost most of what the large ones saved. */
#define RC_AUTO_BYTES ((size_t)256 << 20)
#define RC_CACHE_BYTES ((size_t)1 << 20)
#define RC_PHYS_SHARE 4

static size_t phys_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), pg = sysconf(_SC_PAGESIZE);
    return pages > 0 && pg > 0 ? (size_t)pages * (size_t)pg : 0;
}

int npred_core_recompute_auto(const npred_core *core, int max_batch, size_t phys)
{
    size_t saved = 0, image = 0; /* per hidden layer: its input (the previous ELU output) and two intermediates */
    for (int l = 1; l < core->cfg.layers; l++) {
        const npred_core_layer *L = &core->L[l];
        saved += (size_t)max_batch * sizeof(float) *
                 ((size_t)L->cin * L->hin * L->win + (size_t)L->cout * (L->hin * L->win + L->hout * L->wout));
        size_t one = sizeof(float) * (size_t)L->cout * L->hout * L->wout;
        if (one > image) image = one;
    }
    if (saved < RC_AUTO_BYTES) return NPRED_CORE_RECOMPUTE_OFF;
    const int need = phys && saved > phys / RC_PHYS_SHARE; /* memory requires it: store the least */
    if (image <= RC_CACHE_BYTES) return need ? NPRED_CORE_RECOMPUTE_ON : NPRED_CORE_RECOMPUTE_PARTIAL;
    return need ? NPRED_CORE_RECOMPUTE_ON : NPRED_CORE_RECOMPUTE_OFF;
}

/* the mode the next forward uses: OFF, ON or PARTIAL */
static int rc_wanted(const npred_core *core, int B, int train)
{
    if (core->recompute == NPRED_CORE_RECOMPUTE_OFF || !rc_possible(core, B, train)) return NPRED_CORE_RECOMPUTE_OFF;
    if (core->recompute != NPRED_CORE_RECOMPUTE_AUTO) return core->recompute;
    return npred_core_recompute_auto(core, core->max_batch, phys_bytes());
}

/* what recomputes layer L's output from its BatchNorm input */
static npred_bn_elu_map layer_map(const npred_core *core, const npred_core_layer *L, npred_ptable *t)
{
    npred_bn_elu_map m = {L->mean, L->invstd, pw(t, L->p_gamma), pw(t, L->p_beta), core->act.xshift, core->act.yshift};
    return m;
}

npred_status npred_core_set_recompute(npred_core *core, int mode)
{
    if (mode != NPRED_CORE_RECOMPUTE_AUTO && mode != NPRED_CORE_RECOMPUTE_OFF && mode != NPRED_CORE_RECOMPUTE_ON &&
        mode != NPRED_CORE_RECOMPUTE_PARTIAL)
        return npred_errorf(NPRED_ERR_ARG, "core: recompute mode %d (auto -1, off 0, on 1, partial 2)", mode);
    core->recompute = mode;
    return NPRED_OK;
}

/* Whether layer l's training BatchNorm + ELU output is made image by image by the next
 * layer's block while it reads it (ds_prev's store), instead of in a pass of its own:
 * a training forward that stores everything, layer l fused with nothing between its ELU
 * and the next layer, which is a depth-separable block run image by image. */
static int apply_in_next(const npred_core *core, int l, int B, int train)
{
    const npred_core_config *c = &core->cfg;
    if (!train || core->rc || l + 1 >= c->layers || uses_skip(c) || c->rot_eq || npred_batchnorm_sync_active())
        return 0;
    const npred_core_layer *L = &core->L[l], *N = &core->L[l + 1];
    return L->fused && !L->has_se && L->rot == 1 && !L->att && N->ds && !N->att && !N->weff &&
           B >= npred_threads();
}

/* bf16 predictions: layers l0 .. the last (depth-separable in the bf16 block kernels,
 * but for a plain first one; the last one the core's output) image by image, each
 * image through all of them at once: between the layers its activations stay in
 * per-thread scratch (bf16 pairs between block layers: the values the next layer's 1x1
 * rounds them to; the bits of the layer by layer path), only the last layer's output
 * is stored. Returns 0 without running when the layers do not qualify, -1 when a
 * convolution failed. */
static int bf16_chain(npred_core *core, npred_ptable *t, const float *in, int B, int l0)
{
    const npred_core_config *c = &core->cfg;
    npred_bf16_block bb[NPRED_CORE_MAXLAYERS];
    if (uses_skip(c) || c->n_stack != 1 || c->stack[0] != c->layers - 1) return 0;
    /* a plain first layer (convolution + BatchNorm + ELU) runs per image here too, with the
     * kernels and bits of the layer by layer path (ds_forward's eval), its output in the
     * thread's slots of the gradient scratch g[] */
    const npred_core_layer *H = &core->L[l0];
    const int head = !H->ds;
    if (head && (H->nconv != 1 || !H->fused || H->has_se || H->rot != 1 || H->att || H->weff || H->p_rmean < 0 ||
                 H->p_rvar < 0 || core->fft))
        return 0;
    const int d0 = l0 + head; /* the first depth-separable layer */
    if (d0 >= c->layers - 1 + head) return 0;
    size_t pairs = 0, sb = 0;
    for (int l = d0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        const blk_eval ev = {pw(t, L->p_rmean), pw(t, L->p_rvar), pw(t, L->p_gamma), pw(t, L->p_beta),
                             core->act.xshift, core->act.yshift};
        if (!L->ds || !L->fused || L->has_se || L->rot != 1 || L->p_rmean < 0 || L->p_rvar < 0 ||
            !bf16_block_of(core, L, t, &ev, &bb[l]) || (l > l0 && L->cin != core->L[l - 1].cout))
            return 0;
        size_t pw_ = bf16_pairs_bytes(L), s_ = round64(npred_bf16_block_scratch_bytes(&bb[l]));
        pairs = pw_ > pairs ? pw_ : pairs;
        sb = s_ > sb ? s_ : sb;
    }
    if (sb + 2 * pairs > core->bf_ws_per) return 0;
    const npred_core_layer *E = &core->L[c->layers - 1];
    const size_t n_in = (size_t)H->cin * H->hin * H->win, n_out = (size_t)E->cout * E->hout * E->wout;
    const size_t n_h = (size_t)H->cout * H->hout * H->wout, slice = head ? ds_slice_bytes(H) : 0;
    int T = npred_threads() < B ? npred_threads() : B;
    if (T > core->bf_ws_threads) T = core->bf_ws_threads;
    if (slice && (size_t)T > core->ws_bytes / slice) T = (int)(core->ws_bytes / slice);
    if (T < 1) return 0;
    npred_conv2d_params hp = H->cp[0];
    hp.n = 1;
    const float *hw_ = pw(t, H->p_w[0]), *hb = pw(t, H->p_b[0]);
    int failed = 0;
#pragma omp parallel for num_threads(T) if (T > 1) schedule(static) reduction(| : failed)
    for (int n = 0; n < B; n++) {
        const int id = npred_thread_id();
        char *mine = (char *)core->bf_ws + (size_t)id * core->bf_ws_per;
        uint32_t *buf[2] = {(uint32_t *)(void *)(mine + sb), (uint32_t *)(void *)(mine + sb + pairs)};
        const float *x = in + n * n_in;
        if (head) {
            float *z = core->g[2] + (size_t)id * n_h, *a = core->g[0] + (size_t)id * n_h;
            failed |= npred_conv2d_forward(z, x, hw_, hb, &hp, (char *)core->ws + (size_t)id * slice, slice) !=
                      NPRED_OK;
            npred_batchnorm2d_eval_image(a, z, pw(t, H->p_rmean), pw(t, H->p_rvar), pw(t, H->p_gamma),
                                         pw(t, H->p_beta), H->cout, (size_t)H->hout * H->wout, 1e-5, 1,
                                         core->act.xshift, core->act.yshift);
            x = a;
        }
        const uint32_t *xp = NULL;
        for (int l = d0; l < c->layers; l++) {
            const int last = l == c->layers - 1;
            uint32_t *ap = last ? NULL : buf[(l - d0) % 2];
            npred_bf16_block_eval_image(&bb[l], l == d0 ? x : NULL, xp, last ? E->a + n * n_out : NULL, ap, mine);
            xp = ap;
        }
    }
    if (failed) return -1;
    for (int l = l0; l < c->layers; l++) { /* the statistics cache, as the layer by layer path leaves it */
        npred_core_layer *L = &core->L[l];
        npred_batchnorm2d_eval_stats(L->mean, L->invstd, pw(t, L->p_rmean), pw(t, L->p_rvar), L->cout, 1e-5);
    }
    return 1;
}

npred_status npred_core_forward(npred_core *core, npred_ptable *t, const float *x, int B, int train)
{
    const npred_core_config *c = &core->cfg;
    if (B < 1 || B > core->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "core: batch of %d (capacity %d)", B, core->max_batch);
    core->x = x;
    core->B = B;
    core->train = train;
    core->no_backward = !train && core->lean;
    const int rcm = rc_wanted(core, B, train);
    core->rc = rcm != NPRED_CORE_RECOMPUTE_OFF;
    core->rc_keep_t0 = rcm == NPRED_CORE_RECOMPUTE_PARTIAL;
    for (int l = 0; l < c->layers; l++) core->L[l].t0_kept = 0; /* set by the blocks that store it */
    if (!core->owns_output) /* (a recomputing forward may put it in the gradient buffer) */
        core->output = core->L[c->stack[0]].out;
    npred_status s;
    for (int l = 0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        const float *in;
        double *pst = NULL; /* the BN statistics of the image-by-image block */
        if (L->weff && !core->keep_weights) hermite_build(core, L, t);
        if (!core->keep_weights) L->wfft_ok = 0;
        if (l == 0) in = x;
        else if (uses_skip(c)) {
            gather_skip(core, l, B);
            in = L->in;
        } else in = core->L[l - 1].out;
        /* image by image when every thread gets an image (fewer images than threads:
         * the batched calls, which split each image's work): the depth-separable
         * block, and in eval mode any fused layer, whose BatchNorm + ELU is then
         * applied to each image in the loop (bn_in_block); not a plain layer whose
         * convolution the caller wants by FFT (core->fft, conv_fwd); not when recomputing
         * (core->rc), which stores no ELU output but the last (layer_map's eval map) */
        const int eval_fusable = !train && !core->rc && L->fused && L->rot == 1 && !L->att && !L->weff &&
                                 L->p_rmean >= 0 && L->p_rvar >= 0;
        /* bf16 predictions: a depth-separable layer always image by image (the bf16 block
         * kernels, whatever the batch and thread count: the same bits) */
        const int bf_eval = eval_fusable && core->lean && L->ds && core->bf_ws;
        const int bn_in_block = bf_eval || (eval_fusable && B >= npred_threads() && (L->ds || !core->fft));
        /* ... and in training a fused plain layer (the first), so that its BatchNorm
         * statistics are made per image in cache too */
        const int stats_in_block = train && L->fused && L->rot == 1 && !npred_batchnorm_sync_active();
        /* ... and bf16 training of a depth-separable layer (stored intermediates in bf16) */
        const int bf_train = train && L->ds && L->has_bn && core->bf_ws && !L->att && !L->weff;
        L->t_bf16 = 0;
        const int by_image = bf_eval || bf_train ||
                             (!L->att && !L->weff && B >= npred_threads() && (L->ds || bn_in_block || stats_in_block));
        blk_eval ev = {NULL, NULL, NULL, NULL, core->act.xshift, core->act.yshift};
        if (bn_in_block) {
            ev.rmean = pw(t, L->p_rmean), ev.rvar = pw(t, L->p_rvar);
            ev.gamma = pw(t, L->p_gamma), ev.beta = pw(t, L->p_beta);
        }
        if (bf_eval || (eval_fusable && core->lean && core->bf_ws && !L->ds)) {
            const int ran = bf16_chain(core, t, in, B, l);
            if (ran < 0) return npred_errorf(NPRED_ERR_ARG, "core layer %d: a convolution failed", l);
            if (ran) break;
        }
        if (L->att) {
            size_t nn = (size_t)B * L->cout * L->hout * L->wout;
            for (int i = 0; i < 3; i++)
                if ((s = conv_fwd(core, L, t, i, L->att_kqv + i * nn, in, B))) return npred_error_prefix(s, "core layer %d", l);
            attention_forward(L, t, B);
        } else if (by_image) {
            if (train && L->fused && !npred_batchnorm_sync_active()) pst = core->pstats;
            ds_prev prev = {NULL, {NULL, NULL, NULL, NULL, 0, 0}, NULL};
            const int made = l > 0 && apply_in_next(core, l - 1, B, train); /* the previous output made here */
            const int from_z = l > 0 && (core->rc || made);
            if (from_z) prev = (ds_prev){core->L[l - 1].z, layer_map(core, &core->L[l - 1], t), NULL};
            if (made) prev.store = core->L[l - 1].a;
            if ((s = ds_forward(core, L, t, in, B, pst, bn_in_block ? &ev : NULL, bn_in_block && core->lean,
                                from_z ? &prev : NULL)))
                return npred_error_prefix(s, "core layer %d", l);
        } else if (L->ds) {
            if ((s = conv_fwd(core, L, t, 0, L->t[0], in, B)) ||
                       (s = conv_fwd(core, L, t, 1, L->t[1], L->t[0], B)) ||
                       (s = conv_fwd(core, L, t, 2, L->z, L->t[1], B))) {
                return npred_error_prefix(s, "core layer %d", l);
            }
        } else if ((s = conv_fwd(core, L, t, 0, L->z, in, B))) {
            return npred_error_prefix(s, "core layer %d", l);
        }
        size_t hw = (size_t)L->hout * L->wout, n = (size_t)B * L->cout * hw;
        int bnB = B * L->rot, bnC = L->cout / L->rot; /* rotation-equivariant BN: rotations join the batch */
        if (bn_in_block) { /* applied image by image: only the cache the backward reads */
            npred_batchnorm2d_eval_stats(L->mean, L->invstd, ev.rmean, ev.rvar, L->cout, 1e-5);
            if (L->has_se) se_forward(L, t, B);
            continue;
        }
        if (L->fused) {
            float *nbt = npred_ptable_ptr(t, L->p_nbt);
            int64_t count = (int64_t)nbt[0];
            if (core->rc || apply_in_next(core, l, B, train)) {
                /* the statistics; the output is made by the next layer's block (recomputed
                 * there, or stored there), the last layer's here when recomputing */
                s = npred_batchnorm2d_stats(L->mean, L->invstd, pw(t, L->p_rmean), pw(t, L->p_rvar), &count, L->z, pst,
                                            bnB, bnC, L->hout, L->wout, train, c->momentum, 1e-5);
                if (!s && l == c->layers - 1) {
                    const npred_bn_elu_map map = layer_map(core, L, t);
                    const size_t per = (size_t)L->cout * hw;
                    float *o = core->output_in_dy ? L->dout : L->a;
                    core->output = o;
#pragma omp parallel for schedule(static)
                    for (int b = 0; b < B; b++)
                        npred_batchnorm2d_elu_apply(o + b * per, L->z + b * per, &map, 1, L->cout, hw);
                }
            } else if (pst)
                s = npred_batchnorm2d_elu_forward_planes(L->a, L->mean, L->invstd, pw(t, L->p_rmean),
                                                         pw(t, L->p_rvar), &count, L->z, pst, pw(t, L->p_gamma),
                                                         pw(t, L->p_beta), bnB, bnC, L->hout, L->wout, c->momentum,
                                                         1e-5, core->act.xshift, core->act.yshift);
            else
                s = npred_batchnorm2d_elu_forward(L->a, L->mean, L->invstd, pw(t, L->p_rmean), pw(t, L->p_rvar),
                                                  &count, L->z, pw(t, L->p_gamma), pw(t, L->p_beta), bnB, bnC,
                                                  L->hout, L->wout, train, c->momentum, 1e-5, core->act.xshift,
                                                  core->act.yshift);
            if (s) return npred_error_prefix(s, "core layer %d", l);
            if (train) nbt[0] = (float)count; /* eval: read only (concurrent windowed cores) */
            if (L->has_se) se_forward(L, t, B);
            continue;
        }
        if (L->has_bn) {
            float *nbt = npred_ptable_ptr(t, L->p_nbt);
            int64_t count = (int64_t)nbt[0];
            s = npred_batchnorm2d_forward(L->v, L->mean, L->invstd, pw(t, L->p_rmean), pw(t, L->p_rvar), &count, L->z,
                                          pw(t, L->p_gamma), pw(t, L->p_beta), bnB, bnC, L->hout, L->wout, train,
                                          c->momentum, 1e-5);
            if (s) return npred_error_prefix(s, "core layer %d", l);
            if (train) nbt[0] = (float)count; /* eval: read only (concurrent windowed cores) */
        }
        if (L->p_bias2d >= 0 || L->p_scale2d >= 0) {
            const float *bb = pw(t, L->p_bias2d), *sc = pw(t, L->p_scale2d);
            for (int b = 0; b < B; b++)
                for (int ch = 0; ch < L->cout; ch++) {
                    size_t o = ((size_t)b * L->cout + ch) * hw;
                    int f = ch % bnC;
                    for (size_t i = 0; i < hw; i++) L->u[o + i] = bb ? L->v[o + i] + bb[f] : L->v[o + i] * sc[f];
                }
        }
        if (L->has_act && (s = npred_act_forward(L->a, L->u, n, &core->act)))
            return npred_error_prefix(s, "core layer %d", l);
        if (L->has_se) se_forward(L, t, B);
    }
    if (core->owns_output) {
        size_t plane = (size_t)core->out_h * core->out_w;
        for (int b = 0; b < B; b++) {
            size_t off = 0;
            for (int i = 0; i < c->n_stack; i++) {
                const npred_core_layer *L = &core->L[c->stack[i]];
                size_t per = (size_t)L->cout * plane;
                memcpy(core->output + (size_t)b * core->out_c * plane + off, L->out + (size_t)b * per,
                       per * sizeof(float));
                off += per;
            }
        }
    }
    return NPRED_OK;
}

/* A free buffer of n floats for the gradient of layer l's BatchNorm input: the
 * output gradient of a later layer (consumed by now; not one that layer l reads
 * or writes), else g[2], which a core whose layers all take this path then
 * never touches. */
static float *bn_grad_buffer(npred_core *core, int l, size_t n)
{
    const npred_core_layer *L = &core->L[l];
    for (int j = l + 1; j < core->cfg.layers; j++) {
        const npred_core_layer *J = &core->L[j];
        if (J->dout == L->dout || (l > 0 && J->dout == core->L[l - 1].dout)) continue;
        if ((size_t)core->max_batch * J->cout * J->hout * J->wout >= n) return J->dout;
    }
    return core->g[2];
}

/* add the gradient of layer l's skip concatenation (din) to its sources' output gradients */
static void skip_scatter(npred_core *core, int l, const float *din, int B)
{
    const npred_core_config *c = &core->cfg;
    const npred_core_layer *L = &core->L[l];
    int nsrc = c->skip < l ? c->skip : l;
    size_t pl = (size_t)L->hin * L->win, per = (size_t)c->hidden_channels * pl;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsrc; j++) {
            npred_core_layer *S = &core->L[l - nsrc + j];
            const float *src = din + ((size_t)b * nsrc + j) * per;
            float *dst = S->dout + (size_t)b * per;
            for (size_t i = 0; i < per; i++) dst[i] += src[i];
        }
}

/* Whether layer L's fused BatchNorm + ELU backward takes its sums per image (made by the
 * block above it, or by a pass over the last layer's gradient): its output is the ELU
 * output itself (no squeeze-excitation, no rotation-equivariant statistics) and the
 * statistics are this process's own. */
static int bn_sums_ok(const npred_core *core, const npred_core_layer *L)
{
    return L->fused && !L->has_se && L->rot == 1 && !(core->train && npred_batchnorm_sync_active());
}

float *npred_core_dy_buffer(npred_core *core)
{
    return shares_dout(&core->cfg) ? core->L[core->cfg.layers - 1].dout : NULL;
}

npred_status npred_core_backward(npred_core *core, npred_ptable *t, const float *dy, float *dx)
{
    if (core->no_backward)
        return npred_errorf(NPRED_ERR_ARG, "core: backward after a prediction, which keeps no activations "
                                           "(run a forward first)");
    const npred_core_config *c = &core->cfg;
    int B = core->B;
    npred_status s;
    size_t plane = (size_t)core->out_h * core->out_w;
    const int shared = shares_dout(c); /* then each layer's gradient is zeroed right before it is written */
    /* ... and without recomputation the last layer's output gradient is dy itself (the
     * only one entering the core), read in place: no zeroed buffer and no serial pass
     * adding dy into it. With recomputation every layer's output gradient lives in the
     * last layer's buffer: dy is copied there unless it is that buffer already. */
    const int in_place = dy == npred_core_dy_buffer(core);
    const int copy = !shared || (core->rc && !in_place);
    for (int l = shared ? c->layers - 1 : 0; copy && l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        memset(L->dout, 0, sizeof(float) * (size_t)B * L->cout * L->hout * L->wout);
    }
    for (int b = 0; copy && b < B; b++) {
        size_t off = 0;
        for (int i = 0; i < c->n_stack; i++) {
            npred_core_layer *L = &core->L[c->stack[i]];
            size_t per = (size_t)L->cout * plane;
            const float *src = dy + (size_t)b * core->out_c * plane + off;
            float *dst = L->dout + (size_t)b * per;
            for (size_t j = 0; j < per; j++) dst[j] += src[j];
            off += per;
        }
    }
    int sums_ready = 0, e_ready = 0; /* set by a block for the layer below it */
    for (int l = c->layers - 1; l >= 0; l--) {
        npred_core_layer *L = &core->L[l];
        size_t hw = (size_t)L->hout * L->wout, n = (size_t)B * L->cout * hw;
        int bnB = B * L->rot, bnC = L->cout / L->rot;
        /* with recomputation every layer's output gradient is in the last layer's buffer
         * (each block's backward writes its input gradient over its output gradient,
         * image by image: see ds_backward's in_place) */
        float *rcbuf = core->L[c->layers - 1].dout;
        const float *cur = core->rc ? rcbuf : shared && l == c->layers - 1 ? dy : L->dout;
        const int ds_images = L->ds && !L->att && L->has_bn && (B >= npred_threads() || core->rc || L->t_bf16);
        const int ds_fused = L->fused && ds_images && L->rot == 1 && !(core->train && npred_batchnorm_sync_active());
        /* the gradient of layer l - 1's output: zeroed here, or image by image by the
         * fused block (in parallel, right before it is written) */
        if (shared && l > 0 && !ds_fused && !core->rc) {
            const npred_core_layer *P = &core->L[l - 1];
            memset(P->dout, 0, sizeof(float) * (size_t)B * P->cout * P->hout * P->wout);
        }
        if (L->has_se) {
            if ((s = se_backward(L, t, cur, core->g[0], B))) return npred_error_prefix(s, "core layer %d", l);
            cur = core->g[0];
        }
        /* The fused BatchNorm + ELU backward's sums per image (core->pstats): made by the
         * block above while it wrote this layer's gradient (sums_ready), or here for the
         * last layer, in one parallel pass over the images. With recomputation the
         * gradient in rcbuf is turned into e, the gradient of the ELU's input, on the way
         * (formed where the ELU output is at hand: the last layer's here, the others' by
         * the block above, from its recomputed input); e_ready: cur holds e. Without
         * recomputation the last layer's gradient is turned into e too when it is the
         * core's own buffer (dy given in place), so that its backward reads e and x only. */
        const size_t per = (size_t)L->cout * hw;
        if (l == c->layers - 1 && bn_sums_ok(core, L)) {
            const npred_bn_elu_map map = layer_map(core, L, t);
            const int y_stored = !core->rc || !core->output_in_dy;
            float *e = core->rc ? rcbuf : cur == L->dout ? L->dout : NULL;
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                double *ps = core->pstats + (size_t)b * L->cout * 2;
                if (!e)
                    npred_batchnorm2d_elu_backward_plane_sums(ps, cur + b * per, L->z + b * per, L->a + b * per,
                                                              L->mean, L->cout, hw, core->act.yshift);
                else if (y_stored)
                    npred_batchnorm2d_elu_grad_sums_image(ps, e + b * per, L->a + b * per, L->z + b * per, L->mean,
                                                          L->cout, hw, core->act.yshift);
                else
                    npred_batchnorm2d_elu_grad_sums_image_map(ps, e + b * per, L->z + b * per, &map, L->cout, hw);
            }
            sums_ready = 1;
            e_ready = e != NULL;
        }
        if (sums_ready) {
            s = npred_batchnorm2d_elu_backward_coef_sums(core->bncoef, pg(t, L->p_gamma), pg(t, L->p_beta),
                                                         core->pstats, pw(t, L->p_gamma), L->mean, L->invstd, bnB,
                                                         bnC, L->hout, L->wout, core->train);
            if (s) return npred_error_prefix(s, "core layer %d", l);
        }
        const int this_ready = sums_ready, this_e = e_ready;
        sums_ready = e_ready = 0;
        /* the block image by image with its BN + ELU backward applied per image (with
         * recomputation always, whatever the thread count now); the layer below's e and
         * sums made by the block where that layer can use them */
        ds_bn bn = {core->bncoef, cur, L->z, this_e ? NULL : L->a, core->train, core->act.yshift, 0, core->pstats,
                    NULL, NULL};
        if (ds_fused) {
            if (this_ready)
                s = NPRED_OK;
            else
                s = npred_batchnorm2d_elu_backward_coef(core->bncoef, pg(t, L->p_gamma), pg(t, L->p_beta), cur, L->z,
                                                        L->a, pw(t, L->p_gamma), L->mean, L->invstd, bnB, bnC,
                                                        L->hout, L->wout, core->train, core->act.yshift);
            float *din = l == 0 ? dx : uses_skip(c) ? core->g[1] : core->rc ? rcbuf : core->L[l - 1].dout;
            const float *in = l == 0 ? core->x : uses_skip(c) ? L->in : core->L[l - 1].out;
            ds_prev prev = {NULL, {NULL, NULL, NULL, NULL, 0, 0}, NULL};
            if (core->rc) prev = (ds_prev){core->L[l - 1].z, layer_map(core, &core->L[l - 1], t), NULL};
            if (l > 0 && shared && bn_sums_ok(core, &core->L[l - 1])) {
                bn.e_out = 1;
                bn.ez = core->L[l - 1].z;
                bn.emean = core->L[l - 1].mean;
            }
            if (!s && l > 0 && uses_skip(c)) memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
            if (!s) s = ds_backward(core, L, t, NULL, din, in, B, &bn, shared && l > 0, core->rc ? &prev : NULL);
            if (s) return npred_error_prefix(s, "core layer %d", l);
            if (l > 0 && uses_skip(c)) skip_scatter(core, l, din, B);
            sums_ready = e_ready = bn.e_out;
            continue;
        }
        if (L->fused) {
            if (this_ready) { /* each image's gradient written (over e, in place, when cur holds e) */
                float *g = this_e ? (core->rc ? rcbuf : L->dout) : bn_grad_buffer(core, l, n);
#pragma omp parallel for schedule(static)
                for (int b = 0; b < B; b++)
                    npred_batchnorm2d_elu_backward_image(g + b * per, cur + b * per, L->z + b * per,
                                                         this_e ? NULL : L->a + b * per, core->bncoef, L->cout, hw,
                                                         core->train, core->act.yshift);
                cur = g;
            } else {
                float *g = bn_grad_buffer(core, l, n);
                memset(g, 0, n * sizeof(float));
                s = npred_batchnorm2d_elu_backward(g, pg(t, L->p_gamma), pg(t, L->p_beta), cur, L->z, L->a,
                                                   pw(t, L->p_gamma), L->mean, L->invstd, bnB, bnC, L->hout, L->wout,
                                                   core->train, core->act.yshift);
                if (s) return npred_error_prefix(s, "core layer %d", l);
                cur = g;
            }
        }
        if (L->has_act && !L->fused) {
            memset(core->g[1], 0, n * sizeof(float));
            if ((s = npred_act_backward(core->g[1], cur, L->u, L->a, n, &core->act)))
                return npred_error_prefix(s, "core layer %d", l);
            cur = core->g[1];
        }
        if (L->p_bias2d >= 0) {
            float *gb = pg(t, L->p_bias2d);
            for (int b = 0; gb && b < B; b++)
                for (int ch = 0; ch < L->cout; ch++) {
                    double acc = 0;
                    const float *d = cur + ((size_t)b * L->cout + ch) * hw;
                    for (size_t i = 0; i < hw; i++) acc += d[i];
                    gb[ch % bnC] += (float)acc;
                }
        } else if (L->p_scale2d >= 0) {
            float *gs = pg(t, L->p_scale2d);
            const float *sc = pw(t, L->p_scale2d);
            float *dv = core->g[0];
            for (int b = 0; b < B; b++)
                for (int ch = 0; ch < L->cout; ch++) {
                    double acc = 0;
                    size_t o = ((size_t)b * L->cout + ch) * hw;
                    for (size_t i = 0; i < hw; i++) {
                        acc += (double)cur[o + i] * L->v[o + i];
                        dv[o + i] = cur[o + i] * sc[ch % bnC];
                    }
                    if (gs) gs[ch % bnC] += (float)acc;
                }
            cur = dv;
        }
        if (L->has_bn && !L->fused) {
            memset(core->g[2], 0, n * sizeof(float));
            s = npred_batchnorm2d_backward(core->g[2], pg(t, L->p_gamma), pg(t, L->p_beta), cur, L->z,
                                           pw(t, L->p_gamma), L->mean, L->invstd, bnB, bnC, L->hout, L->wout,
                                           core->train);
            if (s) return npred_error_prefix(s, "core layer %d", l);
            cur = core->g[2];
        }
        /* where the input gradient goes */
        float *din;
        int split = 0;
        const float *in;
        if (l == 0) {
            din = dx;
            in = core->x;
        } else if (uses_skip(c)) {
            din = core->g[1]; /* free again: the activation gradient has been consumed */
            memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
            split = 1;
            in = L->in;
        } else {
            din = core->L[l - 1].dout;
            in = core->L[l - 1].out;
        }
        if (L->att) {
            if (split && din == cur) {
                memcpy(core->g[2], cur, n * sizeof(float));
                cur = core->g[2];
                memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
            }
            attention_backward(L, t, cur, B);
            for (int i = 0; i < 3; i++)
                if ((s = conv_bwd(core, L, t, i, din, L->att_d + i * n, in, B)))
                    return npred_error_prefix(s, "core layer %d", l);
        } else if (L->ds && L->has_bn && (B >= npred_threads() || L->t_bf16)) {
            /* image by image (cur is the BN gradient in g[2]; din is never g[2]) */
            if ((s = ds_backward(core, L, t, cur, din, in, B, NULL, 0, NULL)))
                return npred_error_prefix(s, "core layer %d", l);
        } else if (L->ds) {
            size_t n1 = (size_t)B * L->cout * L->hout * L->wout, n0 = (size_t)B * L->cout * L->hin * L->win;
            float *dt1 = core->g[0], *dt0 = split ? core->g[2] : core->g[1];
            /* g[2] holds cur (dz) when BN is on; use the buffers so none is overwritten while read */
            if (L->has_bn) {
                memset(dt1, 0, n1 * sizeof(float));
                if ((s = conv_bwd(core, L, t, 2, dt1, cur, L->t[1], B)))
                    return npred_error_prefix(s, "core layer %d", l);
                /* cur (g[2]) is consumed now */
                dt0 = split ? core->g[2] : core->g[2];
                memset(dt0, 0, n0 * sizeof(float));
                if ((s = conv_bwd(core, L, t, 1, dt0, dt1, L->t[0], B)))
                    return npred_error_prefix(s, "core layer %d", l);
            } else {
                /* cur is one of dout / g[0] / g[1]: copy to g[2] first */
                memcpy(core->g[2], cur, n1 * sizeof(float));
                cur = core->g[2];
                float *a1 = (cur == core->g[0]) ? core->g[1] : core->g[0];
                memset(a1, 0, n1 * sizeof(float));
                if ((s = conv_bwd(core, L, t, 2, a1, cur, L->t[1], B)))
                    return npred_error_prefix(s, "core layer %d", l);
                memset(core->g[2], 0, n0 * sizeof(float));
                if ((s = conv_bwd(core, L, t, 1, core->g[2], a1, L->t[0], B)))
                    return npred_error_prefix(s, "core layer %d", l);
                dt0 = core->g[2];
                if (split) { /* din must not alias dt0 */
                    din = a1;
                    memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
                }
            }
            if (split && din == dt0) {
                din = core->g[1];
                memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
            }
            if ((s = conv_bwd(core, L, t, 0, din, dt0, in, B))) return npred_error_prefix(s, "core layer %d", l);
        } else {
            if (split && din == cur) { /* cur may live in g[1] when there is no BN */
                memcpy(core->g[2], cur, n * sizeof(float));
                cur = core->g[2];
                memset(din, 0, sizeof(float) * (size_t)B * L->cin * L->hin * L->win);
            }
            if ((s = conv_bwd(core, L, t, 0, din, cur, in, B))) return npred_error_prefix(s, "core layer %d", l);
        }
        if (split) skip_scatter(core, l, din, B);
    }
    return NPRED_OK;
}

/* RotationEquivariant2dCore: the regularizers of neuralpredictors HEAD (0.3.0's read
 * features[l].conv, which does not exist, and raise AttributeError), on the effective
 * weights of the current coefficients: gamma_hidden * mean over layers >= 1 of the
 * group sparsity (whatever depth_separable says) + gamma_input * input regularizer. */
static double rot_regularizer(npred_core *core, npred_ptable *t, double gscale)
{
    const npred_core_config *c = &core->cfg;
    double lap = 0, gs = 0;
    for (int l = 0; l < c->layers; l++) {
        npred_core_layer *L = &core->L[l];
        if (l > 0 && c->layers < 2) break;
        hermite_build(core, L, t);
        size_t nw = (size_t)L->cout * L->cin * L->k * L->k;
        float *g = gscale != 0 ? L->dweff : NULL;
        if (g) memset(g, 0, nw * sizeof(float));
        if (l == 0) {
            double sc = gscale * c->gamma_input;
            int pad = c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding;
            switch (c->input_regularizer) {
            case NPRED_INPUT_REG_LAPLACE_L2:
                npred_reg_laplace_l2(&lap, g, L->weff, sc, L->cout, L->cin, L->k, L->k, pad, 3, c->use_avg_reg);
                break;
            case NPRED_INPUT_REG_LAPLACE_L2NORM:
                npred_reg_laplace_l2norm(&lap, g, L->weff, sc, L->cout, L->cin, L->k, L->k, pad, c->use_avg_reg);
                break;
            case NPRED_INPUT_REG_GAUSSIAN_LAPLACE_L2:
                npred_reg_gaussian_laplace_l2(&lap, g, L->weff, sc, L->cout, L->cin, L->k, L->k, pad, -1,
                                              c->use_avg_reg);
                break;
            case NPRED_INPUT_REG_LAPLACE_L1:
                npred_reg_laplace_l1(&lap, g, L->weff, sc, L->cout, L->cin, L->k, L->k, pad, c->use_avg_reg);
                break;
            }
        } else {
            double v = 0, denom = c->layers - 1;
            npred_reg_group_sparsity(&v, g, L->weff, gscale * c->gamma_hidden / denom, L->cout, L->cin, L->k, L->k);
            gs += v / denom;
        }
        if (g) hermite_project(core, L, t);
    }
    return gs * c->gamma_hidden + c->gamma_input * lap;
}

double npred_core_regularizer(npred_core *core, npred_ptable *t, double gscale)
{
    const npred_core_config *c = &core->cfg;
    if (c->rot_eq) return rot_regularizer(core, t, gscale);
    const npred_core_layer *L0 = &core->L[0];
    const float *w0 = pw(t, L0->p_w[0]);
    float *g0 = gscale != 0 ? pg(t, L0->p_w[0]) : NULL;
    double lap = 0, gs = 0;
    double sc = gscale * c->gamma_input;
    switch (c->input_regularizer) {
    case NPRED_INPUT_REG_LAPLACE_L2:
        npred_reg_laplace_l2(&lap, g0, w0, sc, L0->cout, L0->cin, L0->k, L0->k,
                             c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, 3, c->use_avg_reg);
        break;
    case NPRED_INPUT_REG_LAPLACE_L2NORM:
        npred_reg_laplace_l2norm(&lap, g0, w0, sc, L0->cout, L0->cin, L0->k, L0->k,
                                 c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, c->use_avg_reg);
        break;
    case NPRED_INPUT_REG_GAUSSIAN_LAPLACE_L2:
        npred_reg_gaussian_laplace_l2(&lap, g0, w0, sc, L0->cout, L0->cin, L0->k, L0->k,
                                      c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, -1,
                                      c->use_avg_reg);
        break;
    case NPRED_INPUT_REG_LAPLACE_L1:
        npred_reg_laplace_l1(&lap, g0, w0, sc, L0->cout, L0->cin, L0->k, L0->k,
                             c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, c->use_avg_reg);
        break;
    }
    if (!c->depth_separable && !c->se_core && !c->attention_conv && c->layers > 1) {
        double denom = c->layers - 1;
        for (int l = 1; l < c->layers; l++) {
            const npred_core_layer *L = &core->L[l];
            double v = 0;
            npred_reg_group_sparsity(&v, gscale != 0 ? pg(t, L->p_w[0]) : NULL, pw(t, L->p_w[0]),
                                     gscale * c->gamma_hidden / denom, L->cout, L->cin, L->k, L->k);
            gs += v;
        }
        gs /= denom;
    }
    if (c->se_core) return c->gamma_input * lap;
    return gs * c->gamma_hidden + c->gamma_input * lap;
}

void npred_core_bn_convention(const npred_core *core, char *buf, size_t n)
{
    const npred_core_config *c = &core->cfg;
    if (!c->batch_norm)
        snprintf(buf, n, "no BatchNorm; conv biases %s", c->bias ? "on" : "off");
    else if (c->head)
        snprintf(buf, n,
                 "neuralpredictors HEAD (no independent_bn_bias): BatchNorm affine=%s%s, hidden conv biases always; "
                 "0.3.0 cannot build this model",
                 c->bias && c->batch_norm_scale ? "True" : "False",
                 c->bias && !c->batch_norm_scale ? " + Bias2DLayer" : !c->bias && c->batch_norm_scale ? " + Scale2DLayer" : "");
    else if (c->independent_bn_bias && !c->bias)
        snprintf(buf, n,
                 "neuralpredictors 0.3.0, independent_bn_bias=True, bias=False (sensorium core_bias=False, the published "
                 "2022 models): affine BatchNorm, no conv biases; HEAD would build BatchNorm(affine=False) + "
                 "Scale2DLayer instead");
    else if (c->bias && c->batch_norm_scale && !c->rot_eq)
        snprintf(buf, n,
                 "bias=True (sensorium core_bias=True): affine BatchNorm and hidden conv biases, built alike by "
                 "neuralpredictors 0.3.0 and HEAD");
    else
        snprintf(buf, n, "neuralpredictors 0.3.0, independent_bn_bias=%s, bias=%s, batch_norm_scale=%s",
                 c->independent_bn_bias ? "True" : "False", c->bias ? "True" : "False",
                 c->batch_norm_scale ? "True" : "False");
}

int npred_core_outchannels_property(const npred_core *core)
{
    return core->cfg.layers * core->cfg.hidden_channels * (core->cfg.rot_eq ? core->cfg.num_rotations : 1);
}

/* ---- repr ---- */

typedef struct {
    char *buf;
    size_t n, k;
} sbuf;

static void put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *s, const char *fmt, ...)
{
    if (s->k >= s->n) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(s->buf + s->k, s->n - s->k, fmt, ap);
    va_end(ap);
    if (w > 0) s->k += (size_t)w;
    if (s->k >= s->n) s->k = s->n - 1;
}

static void conv_repr(sbuf *s, const npred_conv2d_params *p, int has_bias)
{
    put(s, "Conv2d(%d, %d, kernel_size=(%d, %d), stride=(%d, %d)", p->c, p->o, p->kh, p->kw, p->stride_h,
        p->stride_w);
    if (p->pad_h || p->pad_w) put(s, ", padding=(%d, %d)", p->pad_h, p->pad_w);
    if (p->dil_h != 1 || p->dil_w != 1) put(s, ", dilation=(%d, %d)", p->dil_h, p->dil_w);
    if (p->groups != 1) put(s, ", groups=%d", p->groups);
    if (!has_bias) put(s, ", bias=False");
    put(s, ")");
}

/* a layer of three convolutions (attention or depth-separable): the wrapper's
 * name, then each convolution under its submodule name */
static void three_conv_repr(sbuf *s, const npred_core_layer *L, const char *wrapper, const char *const sub[3])
{
    put(s, "      %s(\n", wrapper);
    for (int i = 0; i < 3; i++) {
        put(s, "        (%s): ", sub[i]);
        conv_repr(s, &L->cp[i], L->p_b[i] >= 0);
        put(s, "\n");
    }
    put(s, "      )\n");
}

/* the norm / bias / scale / nonlinearity lines of one layer */
static void norm_act_repr(sbuf *s, const npred_core *core, const npred_core_layer *L)
{
    const npred_core_config *c = &core->cfg;
    char mom[32];
    npred_pyfloat(mom, sizeof mom, c->momentum);
    int rq = c->rot_eq && c->rot_eq_batch_norm;
    if (L->has_bn && rq)
        put(s,
            "      (norm): RotationEquivariantBatchNorm2D(\n"
            "        (batch_norm): BatchNorm1d(%d, eps=1e-05, momentum=%s, affine=%s, track_running_stats=True)\n"
            "      )\n",
            c->hidden_channels, mom, L->p_gamma >= 0 ? "True" : "False");
    else if (L->has_bn)
        put(s, "      (norm): BatchNorm2d(%d, eps=1e-05, momentum=%s, affine=%s, track_running_stats=True)\n",
            c->hidden_channels, mom, L->p_gamma >= 0 ? "True" : "False");
    if (L->p_bias2d >= 0) put(s, "      (bias): %sBias2DLayer()\n", rq ? "RotationEquivariant" : "");
    if (L->p_scale2d >= 0) put(s, "      (scale): %sScale2DLayer()\n", rq ? "RotationEquivariant" : "");
    if (L->has_act) put(s, "      (nonlin): AdaptiveELU()\n");
}

static void rot_repr(sbuf *s, const npred_core *core)
{
    const npred_core_config *c = &core->cfg;
    for (int l = 0; l < c->layers; l++) {
        const npred_core_layer *L = &core->L[l];
        put(s,
            "    (layer%d): Sequential(\n      (hermite_conv): HermiteConv2D(\n        (rotate_hermite): "
            "RotateHermite(\n          (Rs): ParameterList(\n",
            l);
        for (int r = 0; r < L->rot; r++)
            put(s, "              (%d): Parameter containing: [torch.float32 of size %dx%d]\n", r, L->ncoef,
                L->ncoef);
        put(s, "          )\n        )\n      )\n");
        norm_act_repr(s, core, L);
        put(s, "    )\n");
    }
}

void npred_core_repr(const npred_core *core, char *buf, size_t n)
{
    const npred_core_config *c = &core->cfg;
    sbuf s = {buf, n, 0};
    if (n) buf[0] = 0;
    const char *cls = c->rot_eq ? "RotationEquivariant2dCore" : c->se_core ? "SE2dCore" : "Stacked2dCore";
    const char *reg = c->input_regularizer == NPRED_INPUT_REG_LAPLACE_L2       ? "LaplaceL2"
                      : c->input_regularizer == NPRED_INPUT_REG_LAPLACE_L2NORM ? "LaplaceL2norm"
                      : c->input_regularizer == NPRED_INPUT_REG_LAPLACE_L1     ? "LaplaceL1"
                                                                               : "GaussianLaplaceL2";
    char mom[32], gh[32], gi[32];
    npred_pyfloat(mom, sizeof mom, c->momentum);
    put(&s, "%s(\n  (_input_weights_regularizer): %s(\n    (laplace): Laplace()\n  )\n  (features): Sequential(\n", cls,
        reg);
    for (int l = 0; l < c->layers && !c->rot_eq; l++) {
        const npred_core_layer *L = &core->L[l];
        put(&s, "    (layer%d): Sequential(\n", l);
        if (L->att) {
            static const char *const sub[3] = {"key_conv", "query_conv", "value_conv"};
            three_conv_repr(&s, L, "(attention_conv): AttentionConvWrapper", sub);
        } else if (L->ds) {
            static const char *const sub[3] = {"in_depth_conv", "spatial_conv", "out_depth_conv"};
            three_conv_repr(&s, L, "(ds_conv): DepthSeparableConv2d", sub);
        } else {
            put(&s, "      (%s): ", l == 0 ? "conv" : conv_name(c));
            conv_repr(&s, &L->cp[0], L->p_b[0] >= 0);
            put(&s, "\n");
        }
        norm_act_repr(&s, core, L);
        if (L->has_se)
            put(&s,
                "      (seg_ex_block): SqueezeExcitationBlock(\n        (se): Sequential(\n"
                "          (0): GlobalAvgPool()\n"
                "          (1): Linear(in_features=%d, out_features=%d, bias=True)\n"
                "          (2): ReLU(inplace=True)\n"
                "          (3): Linear(in_features=%d, out_features=%d, bias=True)\n"
                "          (4): Sigmoid()\n        )\n      )\n",
                L->cout, L->se_hidden, L->se_hidden, L->cout);
        put(&s, "    )\n");
    }
    if (c->rot_eq) rot_repr(&s, core);
    npred_pynum(gh, sizeof gh, c->gamma_hidden);
    npred_pyfloat(gi, sizeof gi, c->gamma_input);
    put(&s, "  )\n) [%s regularizers: gamma_hidden = %s|gamma_input = %s|skip = %d]\n", cls, gh, gi, c->skip);
}

void npred_core_free(npred_core *core)
{
    for (int l = 0; l < NPRED_CORE_MAXLAYERS; l++) {
        npred_core_layer *L = &core->L[l];
        if (L->owns_in) free(L->in);
        free(L->t[0]);
        free(L->t[1]);
        if (L->v != L->z) free(L->v);
        if (L->u != L->v) free(L->u);
        if (L->a != L->u) free(L->a);
        if (L->out != L->a) free(L->out);
        free(L->z);
        free(L->se_pool);
        free(L->se_h);
        free(L->se_s);
        if (L->owns_dout) free(L->dout);
        free(L->weff);
        free(L->dweff);
        free(L->wfft);
        free(L->att_kqv);
        free(L->att_d);
        free(L->basis);
        free(L->mean);
        free(L->invstd);
    }
    for (int i = 0; i < 3; i++) free(core->g[i]);
    free(core->pstats);
    free(core->bncoef);
    if (core->owns_output) free(core->output);
    free(core->ws);
    free(core->fws);
    free(core->bf_ws);
    memset(core, 0, sizeof *core);
}

npred_status npred_core_set_bf16(npred_core *core, int on)
{
    if (on && !npred_gemm_bf16_available())
        return npred_errorf(NPRED_ERR_UNSUPPORTED,
                            "bf16 precision needs AVX-512 BF16 (vdpbf16ps), which this CPU lacks (use fp32)");
    for (int l = 0; l < core->cfg.layers; l++)
        for (int i = 0; i < 3; i++) core->L[l].cp[i].bf16 = !!on;
    free(core->bf_ws);
    core->bf_ws = NULL, core->bf_ws_per = 0, core->bf_ws_threads = 0;
    if (!on) return NPRED_OK;
    /* scratch of the bf16 block kernels per thread: the largest layer's, then two
     * activations as bf16 pairs (bf16_chain) */
    size_t per = 0;
    for (int l = 0; l < core->cfg.layers; l++) {
        const npred_core_layer *L = &core->L[l];
        if (!L->ds) continue;
        npred_bf16_block b = {L->cp[0].c, L->cp[0].o, L->cp[0].h, L->cp[0].w, L->cp[1].kh, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
        size_t need = round64(npred_bf16_block_scratch_bytes(&b)) + 2 * bf16_pairs_bytes(L);
        if (need > per) per = need;
        /* ... or the backward's kernels (ds_backward) */
        for (int i = 0; i < 3; i += 2) {
            need = npred_bf16_pw_backward_scratch_bytes(L->cp[i].o, L->cp[i].c);
            if (need > per) per = need;
        }
        need = npred_bf16_dw_backward_scratch_bytes(L->cp[1].h, L->cp[1].w, L->cp[1].kh);
        if (need > per) per = need;
    }
    if (!per) return NPRED_OK;
    per = round64(per);
    const int T = npred_threads() > 0 ? npred_threads() : 1;
    core->bf_ws = aligned_alloc(64, per * (size_t)T);
    if (!core->bf_ws) return npred_errorf(NPRED_ERR_NOMEM, "core: cannot allocate %zu bytes of bf16 scratch", per * T);
    core->bf_ws_per = per, core->bf_ws_threads = T;
    return NPRED_OK;
}

int npred_core_bf16(const npred_core *core) { return core->cfg.layers > 0 && core->L[0].cp[0].bf16; }
