/* Basic3dCore and Factorized3dCore (see core3d.h). */
#include "cores/core3d.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/activation.h"
#include "kernels/batchnorm.h"
#include "kernels/regularizers.h"

void npred_core3d_config_default(npred_core3d_config *c, int factorized)
{
    memset(c, 0, sizeof *c);
    c->factorized = factorized;
    c->layers = 3;
    c->stride = 1;
    c->spatial_dilation = 1;
    c->temporal_dilation = 1;
    c->bias = 1;
    c->batch_norm = 1;
    c->momentum = 0.01;
    c->laplace_padding = -1;
    c->final_nonlin = 1;
    c->act = NPRED_ACT_ELU;
}

static int add_param(npred_ptable *t, const char *prefix, const char *name, int is_buffer, npred_ptype dt, int ndim,
                     const int64_t *shape)
{
    char full[NPRED_PARAM_NAMELEN];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof full) {
        npred_errorf(NPRED_ERR_ARG, "parameter name '%s%s' too long", prefix, name);
        return -1;
    }
    return npred_ptable_add(t, full, is_buffer, dt, ndim, shape);
}

/* Declare one Conv3d "<layer>.<module>" and compute its output shape. */
static npred_status conv_declare(npred_conv3d *cv, npred_ptable *t, const char *prefix, const char *module, int cin,
                                 int cout, int kt, int kh, int kw, int pad, int dt, int dh, int dw, int stride, int bias,
                                 int tin, int hin, int win)
{
    memset(cv, 0, sizeof *cv);
    cv->cin = cin, cv->cout = cout, cv->kt = kt, cv->kh = kh, cv->kw = kw;
    cv->pad_h = pad ? kh / 2 : 0, cv->pad_w = pad ? kw / 2 : 0;
    cv->dil_t = dt, cv->dil_h = dh, cv->dil_w = dw, cv->stride = stride;
    cv->tin = tin, cv->hin = hin, cv->win = win;
    cv->tout = tin - (kt - 1) * dt;
    cv->span = (kt - 1) * dt + 1;
    cv->cp = (npred_conv2d_params){.n = 1, .c = kt * cin, .h = hin, .w = win, .o = cout, .kh = kh, .kw = kw,
                                   .stride_h = stride, .stride_w = stride, .pad_h = cv->pad_h, .pad_w = cv->pad_w,
                                   .dil_h = dh, .dil_w = dw, .groups = 1};
    npred_status s = npred_conv2d_output_size(&cv->cp, &cv->hout, &cv->wout);
    if (s) return npred_error_prefix(s, "%s%s", prefix, module);
    if (cv->tout < 1 || cv->hout < 1 || cv->wout < 1)
        return npred_errorf(NPRED_ERR_SHAPE, "%s%s: input (%d, %d, %d) too small for kernel (%d, %d, %d)", prefix, module,
                            tin, hin, win, kt, kh, kw);
    char name[NPRED_PARAM_NAMELEN];
    snprintf(name, sizeof name, "%s.weight", module);
    cv->p_w = add_param(t, prefix, name, 0, NPRED_PT_F32, 5, (const int64_t[]){cout, cin, kt, kh, kw});
    cv->p_b = -1;
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", module);
        cv->p_b = add_param(t, prefix, name, 0, NPRED_PT_F32, 1, (const int64_t[]){cout});
    }
    if (cv->p_w < 0 || (bias && cv->p_b < 0)) return npred_errorf(NPRED_ERR_NOMEM, "out of memory declaring %s", module);
    return NPRED_OK;
}

npred_status npred_core3d_declare(npred_core3d *core, const npred_core3d_config *cfg, const char *prefix, int in_t,
                                  int in_h, int in_w, npred_ptable *t)
{
    if (cfg->act != NPRED_ACT_ELU && cfg->act != NPRED_ACT_RELU && cfg->act != NPRED_ACT_SOFTPLUS &&
        cfg->act != NPRED_ACT_ADAPTIVE_ELU)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "core3d: nonlinearity %s (43faede's 3D cores take elu, relu, "
                            "softplus, adaptive_elu)", npred_act_name(cfg->act) ? npred_act_name(cfg->act) : "?");
    if (cfg->act == NPRED_ACT_ADAPTIVE_ELU && cfg->layers > 1)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "core3d: adaptive_elu with %d layers (43faede builds the hidden "
                            "layers' AdaptiveELU with x_shift=/y_shift=, which it does not take: only one layer)",
                            cfg->layers);
    if (cfg->act != NPRED_ACT_ADAPTIVE_ELU && (cfg->x_shift != 0 || cfg->y_shift != 0))
        return npred_errorf(NPRED_ERR_ARG, "core3d: x_shift / y_shift act only with adaptive_elu");
    memset(core, 0, sizeof *core);
    core->cfg = *cfg;
    const npred_core3d_config *c = &core->cfg;
    snprintf(core->prefix, sizeof core->prefix, "%s", prefix ? prefix : "");
    const char *name = c->factorized ? "Factorized3dCore" : "Basic3dCore";
    if (c->layers < 1 || c->layers > NPRED_CORE3D_MAXLAYERS)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: layers %d (1..%d)", name, c->layers, NPRED_CORE3D_MAXLAYERS);
    if (c->input_channels < 1 || c->hidden_channels < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: input_channels and hidden_channels must be >= 1", name);
    if (c->in_kt < 1 || c->in_kh < 1 || c->in_kw < 1 || (c->layers > 1 && (c->hid_kt < 1 || c->hid_kh < 1 || c->hid_kw < 1)))
        return npred_errorf(NPRED_ERR_CONFIG, "%s: kernel sizes must be >= 1", name);
    if (c->stride < 1 || c->spatial_dilation < 1 || c->temporal_dilation < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: stride and dilations must be >= 1", name);
    const char *pf = core->prefix;
    core->p_lap2d = add_param(t, pf, "_input_weight_regularizer.laplace.filter", 1, NPRED_PT_F32, 4,
                              (const int64_t[]){1, 1, 3, 3});
    core->p_lap1d = add_param(t, pf, "temporal_regularizer.laplace.filter", 1, NPRED_PT_F32, 3,
                              (const int64_t[]){1, 1, 3});
    if (core->p_lap2d < 0 || core->p_lap1d < 0) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    int T = in_t, H = in_h, W = in_w, C = c->input_channels, hid = c->hidden_channels;
    core->in_t = in_t, core->in_h = in_h, core->in_w = in_w;
    npred_status s;
    for (int l = 0; l < c->layers; l++) {
        npred_core3d_layer *L = &core->L[l];
        char layer[64], mod[96];
        snprintf(layer, sizeof layer, "features.layer%d.", l);
        char lp[160];
        snprintf(lp, sizeof lp, "%s%s", pf, layer);
        int kt = l ? c->hid_kt : c->in_kt, kh = l ? c->hid_kh : c->in_kh, kw = l ? c->hid_kw : c->in_kw;
        if (!c->factorized) {
            /* 43faede: hidden convs get dilation=spatial_dilation on all three axes and a bias */
            int dt = l ? c->spatial_dilation : c->temporal_dilation, dsp = c->spatial_dilation;
            snprintf(mod, sizeof mod, l ? "conv_%d" : "conv", l);
            s = conv_declare(&L->conv[0], t, lp, mod, C, hid, kt, kh, kw, c->padding, dt, dsp, dsp, c->stride,
                             l ? 1 : c->bias, T, H, W);
            L->nconv = 1;
        } else {
            int dsp = l ? 1 : c->spatial_dilation, dt = l ? 1 : c->temporal_dilation;
            snprintf(mod, sizeof mod, l ? "conv_spatial_%d" : "conv_spatial", l);
            s = conv_declare(&L->conv[0], t, lp, mod, C, hid, 1, kh, kw, c->padding, 1, dsp, dsp, c->stride, c->bias, T,
                             H, W);
            if (!s) {
                npred_conv3d *a = &L->conv[0];
                snprintf(mod, sizeof mod, l ? "conv_temporal_%d" : "conv_temporal", l);
                s = conv_declare(&L->conv[1], t, lp, mod, hid, hid, kt, 1, 1, 0, dt, 1, 1, 1, c->bias, a->tout, a->hout,
                                 a->wout);
            }
            L->nconv = 2;
        }
        if (s) return s;
        const npred_conv3d *last = &L->conv[L->nconv - 1];
        L->c = hid, L->t = last->tout, L->h = last->hout, L->w = last->wout;
        L->has_bn = c->batch_norm;
        L->has_act = l > 0 || c->layers > 1 || c->final_nonlin;
        L->p_gamma = L->p_beta = L->p_rmean = L->p_rvar = L->p_nbt = -1;
        if (L->has_bn) {
            const int64_t sh[1] = {hid};
            L->p_gamma = add_param(t, lp, "norm.weight", 0, NPRED_PT_F32, 1, sh);
            L->p_beta = add_param(t, lp, "norm.bias", 0, NPRED_PT_F32, 1, sh);
            L->p_rmean = add_param(t, lp, "norm.running_mean", 1, NPRED_PT_F32, 1, sh);
            L->p_rvar = add_param(t, lp, "norm.running_var", 1, NPRED_PT_F32, 1, sh);
            L->p_nbt = add_param(t, lp, "norm.num_batches_tracked", 1, NPRED_PT_I64, 0, NULL);
            if (L->p_gamma < 0 || L->p_beta < 0 || L->p_rmean < 0 || L->p_rvar < 0 || L->p_nbt < 0)
                return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        }
        C = hid, T = L->t, H = L->h, W = L->w;
    }
    core->out_c = C, core->out_t = T, core->out_h = H, core->out_w = W;
    return NPRED_OK;
}

static size_t conv_in_size(const npred_conv3d *cv) { return (size_t)cv->cin * cv->tin * cv->hin * cv->win; }
static size_t conv_out_size(const npred_conv3d *cv) { return (size_t)cv->cout * cv->tout * cv->hout * cv->wout; }
static size_t conv_xs_size(const npred_conv3d *cv)
{
    return (size_t)cv->tout * cv->kt * cv->cin * cv->hin * cv->win;
}

npred_status npred_core3d_setup(npred_core3d *core, const npred_ptable *t, int max_batch)
{
    (void)t;
    if (max_batch < 1) return npred_errorf(NPRED_ERR_ARG, "core3d: max_batch %d", max_batch);
    core->max_batch = max_batch;
    size_t B = (size_t)max_batch, gmax = 0, xsmax = 0;
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < L->nconv; k++) {
            npred_conv3d *cv = &L->conv[k];
            size_t w2 = (size_t)cv->cout * cv->kt * cv->cin * cv->kh * cv->kw;
            cv->w2 = malloc(w2 * sizeof(float));
            cv->dw2 = malloc(w2 * sizeof(float));
            cv->xs = malloc(B * conv_xs_size(cv) * sizeof(float));
            cv->y2 = malloc(B * conv_out_size(cv) * sizeof(float));
            cv->out = malloc(B * conv_out_size(cv) * sizeof(float));
            if (!cv->w2 || !cv->dw2 || !cv->xs || !cv->y2 || !cv->out)
                return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory for a batch of %d", max_batch);
            if (B * conv_xs_size(cv) > xsmax) xsmax = B * conv_xs_size(cv);
            if (B * conv_in_size(cv) > gmax) gmax = B * conv_in_size(cv);
            if (B * conv_out_size(cv) > gmax) gmax = B * conv_out_size(cv);
            npred_conv2d_params p = cv->cp;
            p.n = max_batch * cv->tout;
            size_t ws = npred_conv2d_workspace_size(&p, NPRED_CONV2D_ALGO_AUTO);
            if (ws > core->ws_bytes) core->ws_bytes = ws;
        }
        size_t n = B * (size_t)L->c * L->t * L->h * L->w;
        L->mean = malloc((size_t)L->c * sizeof(double));
        L->invstd = malloc((size_t)L->c * sizeof(double));
        L->bn = malloc(n * sizeof(float));
        L->out = malloc(n * sizeof(float));
        if (!L->mean || !L->invstd || !L->bn || !L->out) return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory");
    }
    for (int k = 0; k < 2; k++)
        if (!(core->g[k] = malloc(gmax * sizeof(float)))) return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory");
    if (!(core->dxs = malloc(xsmax * sizeof(float)))) return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory");
    if (core->ws_bytes && !(core->ws = malloc(core->ws_bytes)))
        return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory for the conv workspace");
    return NPRED_OK;
}

void npred_core3d_init_buffers(npred_core3d *core, npred_ptable *t)
{
    memcpy(npred_ptable_ptr(t, core->p_lap2d), npred_reg_laplace_filter(3), 9 * sizeof(float));
    const float lap1d[3] = {-1.0f, 4.0f, -1.0f};
    memcpy(npred_ptable_ptr(t, core->p_lap1d), lap1d, sizeof lap1d);
}

/* ------------------------------------------------------------------ Conv3d */

/* w2[o, dt*cin + c] = w[o, c, dt] */
static void conv3d_stack_weight(npred_conv3d *cv, const npred_ptable *t)
{
    const float *w = npred_ptable_ptr(t, cv->p_w);
    size_t khw = (size_t)cv->kh * cv->kw;
    for (int o = 0; o < cv->cout; o++)
        for (int c = 0; c < cv->cin; c++)
            for (int dt = 0; dt < cv->kt; dt++)
                memcpy(cv->w2 + (((size_t)o * cv->kt + dt) * cv->cin + c) * khw,
                       w + (((size_t)o * cv->cin + c) * cv->kt + dt) * khw, khw * sizeof(float));
}

static npred_status conv3d_forward(npred_conv3d *cv, const npred_ptable *t, const float *x, int B, void *ws,
                                   size_t ws_bytes)
{
    const float *b = cv->p_b >= 0 ? npred_ptable_ptr(t, cv->p_b) : NULL;
    size_t HW = (size_t)cv->hin * cv->win;
    conv3d_stack_weight(cv, t);
    /* xs[b*tout + t, dt*cin + c] = x[b, c, t + dt*dil] */
    for (int bb = 0; bb < B; bb++)
        for (int tt = 0; tt < cv->tout; tt++)
            for (int dt = 0; dt < cv->kt; dt++)
                for (int c = 0; c < cv->cin; c++)
                    memcpy(cv->xs + ((((size_t)bb * cv->tout + tt) * cv->kt + dt) * cv->cin + c) * HW,
                           x + (((size_t)bb * cv->cin + c) * cv->tin + tt + (size_t)dt * cv->dil_t) * HW,
                           HW * sizeof(float));
    npred_conv2d_params p = cv->cp;
    p.n = B * cv->tout;
    npred_status s = npred_conv2d_forward(cv->y2, cv->xs, cv->w2, b, &p, ws, ws_bytes);
    if (s) return s;
    size_t oHW = (size_t)cv->hout * cv->wout;
    for (int bb = 0; bb < B; bb++)
        for (int tt = 0; tt < cv->tout; tt++)
            for (int o = 0; o < cv->cout; o++)
                memcpy(cv->out + (((size_t)bb * cv->cout + o) * cv->tout + tt) * oHW,
                       cv->y2 + (((size_t)bb * cv->tout + tt) * cv->cout + o) * oHW, oHW * sizeof(float));
    cv->in = x;
    return NPRED_OK;
}

/* dy (B, cout, tout, hout, wout); dx (B, cin, tin, hin, win) += or NULL; dxs scratch of
 * the stacked input's size. */
static npred_status conv3d_backward(npred_conv3d *cv, const npred_ptable *t, const float *dy, float *dx, int B,
                                    float *dxs, void *ws, size_t ws_bytes)
{
    float *dw = npred_ptable_gradptr(t, cv->p_w);
    float *db = cv->p_b >= 0 ? npred_ptable_gradptr(t, cv->p_b) : NULL;
    size_t oHW = (size_t)cv->hout * cv->wout, HW = (size_t)cv->hin * cv->win, khw = (size_t)cv->kh * cv->kw;
    float *dy2 = cv->y2; /* the forward's y2 is no longer needed */
    for (int bb = 0; bb < B; bb++)
        for (int tt = 0; tt < cv->tout; tt++)
            for (int o = 0; o < cv->cout; o++)
                memcpy(dy2 + (((size_t)bb * cv->tout + tt) * cv->cout + o) * oHW,
                       dy + (((size_t)bb * cv->cout + o) * cv->tout + tt) * oHW, oHW * sizeof(float));
    size_t nw2 = (size_t)cv->cout * cv->kt * cv->cin * khw;
    if (dw) memset(cv->dw2, 0, nw2 * sizeof(float));
    if (dx) memset(dxs, 0, (size_t)B * conv_xs_size(cv) * sizeof(float));
    npred_conv2d_params p = cv->cp;
    p.n = B * cv->tout;
    npred_status s = npred_conv2d_backward(dx ? dxs : NULL, dw ? cv->dw2 : NULL, db, dy2, cv->xs, cv->w2, &p, ws,
                                           ws_bytes);
    if (s) return s;
    if (dw)
        for (int o = 0; o < cv->cout; o++)
            for (int c = 0; c < cv->cin; c++)
                for (int dt = 0; dt < cv->kt; dt++) {
                    float *d = dw + (((size_t)o * cv->cin + c) * cv->kt + dt) * khw;
                    const float *g = cv->dw2 + (((size_t)o * cv->kt + dt) * cv->cin + c) * khw;
                    for (size_t k = 0; k < khw; k++) d[k] += g[k];
                }
    if (dx)
        for (int bb = 0; bb < B; bb++)
            for (int tt = 0; tt < cv->tout; tt++)
                for (int dt = 0; dt < cv->kt; dt++)
                    for (int c = 0; c < cv->cin; c++) {
                        float *d = dx + (((size_t)bb * cv->cin + c) * cv->tin + tt + (size_t)dt * cv->dil_t) * HW;
                        const float *g = dxs + ((((size_t)bb * cv->tout + tt) * cv->kt + dt) * cv->cin + c) * HW;
                        for (size_t k = 0; k < HW; k++) d[k] += g[k];
                    }
    return NPRED_OK;
}

/* ------------------------------------------------------------------ core */

/* the layer nonlinearity of the config */
static npred_act core_act(const npred_core3d *core)
{
    npred_act a = {core->cfg.act, (float)core->cfg.x_shift, (float)core->cfg.y_shift};
    return a;
}

/* A layer's BatchNorm (train: batch statistics) and nonlinearity on *cur (B, c, frames, h, w);
 * *cur becomes the layer's output L->out. Element by element in eval mode, so the
 * frames of a clip and a frame pushed alone give the same values. */
static npred_status layer_norm_act(npred_core3d *core, npred_core3d_layer *L, npred_ptable *t, const float **cur,
                                   int B, int frames, int train)
{
    size_t n = (size_t)B * L->c * frames * L->h * L->w;
    if (L->has_bn) {
        float *nbt = npred_ptable_ptr(t, L->p_nbt);
        int64_t cnt = (int64_t)*nbt;
        npred_status s = npred_batchnorm2d_forward(L->bn, L->mean, L->invstd, npred_ptable_ptr(t, L->p_rmean),
                                                   npred_ptable_ptr(t, L->p_rvar), train ? &cnt : NULL, *cur,
                                                   npred_ptable_ptr(t, L->p_gamma), npred_ptable_ptr(t, L->p_beta), B,
                                                   L->c, frames * L->h, L->w, train, core->cfg.momentum,
                                                   NPRED_BATCHNORM_EPS);
        if (s) return s;
        *nbt = (float)cnt;
        *cur = L->bn;
    }
    if (L->has_act) {
        npred_act a = core_act(core);
        npred_status s = npred_act_forward(L->out, *cur, n, &a);
        if (s) return s;
        *cur = L->out;
    } else if (*cur != L->out) {
        memcpy(L->out, *cur, n * sizeof(float));
        *cur = L->out;
    }
    return NPRED_OK;
}

npred_status npred_core3d_forward(npred_core3d *core, npred_ptable *t, const float *x, int B, int train,
                                  const float **out)
{
    if (B < 1 || B > core->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "core3d: batch %d outside 1..%d", B, core->max_batch);
    const float *cur = x;
    npred_status s;
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < L->nconv; k++) {
            if ((s = conv3d_forward(&L->conv[k], t, cur, B, core->ws, core->ws_bytes))) return s;
            cur = L->conv[k].out;
        }
        if ((s = layer_norm_act(core, L, t, &cur, B, L->t, train))) return s;
    }
    core->B = B;
    core->train = train;
    *out = cur;
    return NPRED_OK;
}

npred_status npred_core3d_backward(npred_core3d *core, npred_ptable *t, const float *dy, float *dx)
{
    int B = core->B;
    /* g[0] and g[1] alternate as the incoming gradient and the next target */
    const float *cur = dy;
    int which = 0;
    npred_status s;
    for (int l = core->cfg.layers - 1; l >= 0; l--) {
        npred_core3d_layer *L = &core->L[l];
        size_t n = (size_t)B * L->c * L->t * L->h * L->w;
        const float *z = L->conv[L->nconv - 1].out;
        if (L->has_act) {
            float *g = core->g[which];
            memset(g, 0, n * sizeof(float));
            npred_act a = core_act(core);
            if ((s = npred_act_backward(g, cur, L->has_bn ? L->bn : z, L->out, n, &a))) return s;
            cur = g;
            which ^= 1;
        }
        if (L->has_bn) {
            float *g = core->g[which];
            memset(g, 0, n * sizeof(float));
            s = npred_batchnorm2d_backward(g, npred_ptable_gradptr(t, L->p_gamma), npred_ptable_gradptr(t, L->p_beta),
                                           cur, z, npred_ptable_ptr(t, L->p_gamma), L->mean, L->invstd, B, L->c,
                                           L->t * L->h, L->w, core->train);
            if (s) return s;
            cur = g;
            which ^= 1;
        }
        for (int k = L->nconv - 1; k >= 0; k--) {
            npred_conv3d *cv = &L->conv[k];
            int first = l == 0 && k == 0;
            float *target = first ? dx : core->g[which];
            if (!first) memset(target, 0, (size_t)B * conv_in_size(cv) * sizeof(float));
            s = conv3d_backward(cv, t, cur, target, B, core->dxs, core->ws, core->ws_bytes);
            if (s) return s;
            cur = target;
            if (!first) which ^= 1;
        }
    }
    return NPRED_OK;
}

/* DepthLaplaceL21d on n rows of length kt (row stride `stride` between elements of a
 * row is `estride`): sum(conv1d(w, f, pad 1)^2) / sum(w^2); gradient times scale added
 * into dw (same addressing) when dw is not NULL. */
static double depth_laplace_1d(const float *w, float *dw, size_t n, int kt, size_t rstride, size_t estride,
                               const float *f, double scale)
{
    double num = 0, den = 0;
    for (size_t r = 0; r < n; r++)
        for (int i = 0; i < kt; i++) {
            double wi = w[r * rstride + (size_t)i * estride];
            den += wi * wi;
            double acc = 0;
            for (int j = -1; j <= 1; j++)
                if (i + j >= 0 && i + j < kt) acc += (double)f[j + 1] * w[r * rstride + (size_t)(i + j) * estride];
            num += acc * acc;
        }
    double val = num / den;
    if (dw && scale != 0)
        for (size_t r = 0; r < n; r++)
            for (int i = 0; i < kt; i++) {
                /* d num / d w_i = sum_k 2 lap_k f[i - k + 1] over outputs k that read w_i */
                double g = 0;
                for (int k = i - 1; k <= i + 1; k++) {
                    if (k < 0 || k >= kt) continue;
                    double acc = 0;
                    for (int j = -1; j <= 1; j++)
                        if (k + j >= 0 && k + j < kt) acc += (double)f[j + 1] * w[r * rstride + (size_t)(k + j) * estride];
                    g += 2 * acc * f[i - k + 1];
                }
                double wi = w[r * rstride + (size_t)i * estride];
                dw[r * rstride + (size_t)i * estride] += (float)(scale * (g / den - num * 2 * wi / (den * den)));
            }
    return val;
}

npred_status npred_core3d_regularizer(npred_core3d *core, npred_ptable *t, double gscale, double *spatial,
                                      double *temporal)
{
    const npred_core3d_config *c = &core->cfg;
    npred_core3d_layer *L0 = &core->L[0];
    const float *f1 = npred_ptable_ptr(t, core->p_lap1d);
    double gs = c->gamma_input_spatial, gt = c->gamma_input_temporal;
    npred_status s;
    *spatial = *temporal = 0;
    if (c->factorized) {
        npred_conv3d *sp = &L0->conv[0], *tp = &L0->conv[1];
        float *dws = gscale != 0 ? npred_ptable_gradptr(t, sp->p_w) : NULL;
        s = npred_reg_laplace_l2norm(spatial, dws, npred_ptable_ptr(t, sp->p_w), gs * gscale, sp->cout, sp->cin, sp->kh,
                                     sp->kw, c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, false);
        if (s) return s;
        *spatial *= gs;
        float *dwt = gscale != 0 ? npred_ptable_gradptr(t, tp->p_w) : NULL;
        *temporal = gt * depth_laplace_1d(npred_ptable_ptr(t, tp->p_w), dwt, (size_t)tp->cout * tp->cin, tp->kt,
                                          (size_t)tp->kt, 1, f1, gt * gscale);
        return NPRED_OK;
    }
    npred_conv3d *cv = &L0->conv[0];
    const float *w = npred_ptable_ptr(t, cv->p_w);
    float *dw = gscale != 0 ? npred_ptable_gradptr(t, cv->p_w) : NULL;
    size_t khw = (size_t)cv->kh * cv->kw, rows = (size_t)cv->cout * cv->cin;
    float *slice = malloc(2 * rows * khw * sizeof(float));
    if (!slice) return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory");
    float *dslice = slice + rows * khw;
    /* spatial: LaplaceL2norm of each temporal slice w[:, :, t] */
    for (int tt = 0; tt < cv->kt; tt++) {
        for (size_t r = 0; r < rows; r++) memcpy(slice + r * khw, w + (r * cv->kt + tt) * khw, khw * sizeof(float));
        memset(dslice, 0, rows * khw * sizeof(float));
        double v;
        s = npred_reg_laplace_l2norm(&v, dw ? dslice : NULL, slice, gs * gscale, cv->cout, cv->cin, cv->kh, cv->kw,
                                     c->laplace_padding < 0 ? NPRED_REG_PAD_DEFAULT : c->laplace_padding, false);
        if (s) {
            free(slice);
            return s;
        }
        *spatial += v;
        if (dw)
            for (size_t r = 0; r < rows; r++)
                for (size_t k = 0; k < khw; k++) dw[(r * cv->kt + tt) * khw + k] += dslice[r * khw + k];
    }
    free(slice);
    *spatial *= gs;
    /* temporal: DepthLaplaceL21d of each spatial position w[:, :, :, h, w] */
    for (size_t p = 0; p < khw; p++)
        *temporal += depth_laplace_1d(w + p, dw ? dw + p : NULL, rows, cv->kt, (size_t)cv->kt * khw, khw, f1, gt * gscale);
    *temporal *= gt;
    return NPRED_OK;
}

/* ------------------------------------------------------------------ streaming */

int npred_core3d_stream_warmup(const npred_core3d *core)
{
    int w = 0;
    for (int l = 0; l < core->cfg.layers; l++)
        for (int k = 0; k < core->L[l].nconv; k++) w += core->L[l].conv[k].span - 1;
    return w;
}

void npred_core3d_stream_reset(npred_core3d *core)
{
    for (int l = 0; l < core->cfg.layers; l++)
        for (int k = 0; k < core->L[l].nconv; k++) core->L[l].conv[k].seen = 0;
    core->stream_B = 0;
}

/* The rings for a batch of B (kept while B fits). */
static npred_status stream_alloc(npred_core3d *core, int B)
{
    if (B <= core->stream_cap) return NPRED_OK;
    for (int l = 0; l < core->cfg.layers; l++)
        for (int k = 0; k < core->L[l].nconv; k++) {
            npred_conv3d *cv = &core->L[l].conv[k];
            free(cv->ring);
            cv->ring = NULL;
            if (cv->span < 2) continue;
            cv->ring = malloc((size_t)cv->span * B * cv->cin * cv->hin * cv->win * sizeof(float));
            if (!cv->ring) {
                core->stream_cap = 0;
                return npred_errorf(NPRED_ERR_NOMEM, "core3d: out of memory for a stream of %d clips", B);
            }
        }
    core->stream_cap = B;
    return NPRED_OK;
}

/* One input frame x (B, cin, hin, win) into conv cv; *ready = 0 while its ring is
 * filling, else cv->y2 holds the output frame (B, cout, hout, wout). The kt frames
 * are stacked as the clip's forward stacks them, for the same 2-D convolution. */
static npred_status conv3d_push(npred_conv3d *cv, const npred_ptable *t, const float *x, int B, void *ws,
                                size_t ws_bytes, int *ready)
{
    size_t HW = (size_t)cv->hin * cv->win, fr = (size_t)cv->cin * HW;
    const float *src = x;
    *ready = 1;
    if (cv->span > 1) {
        memcpy(cv->ring + (size_t)(cv->seen % cv->span) * B * fr, x, B * fr * sizeof(float));
        if (++cv->seen < cv->span) {
            *ready = 0;
            return NPRED_OK;
        }
        /* xs[b, dt*cin + c] = input frame (seen - span + dt*dil)[b, c] */
        for (int bb = 0; bb < B; bb++)
            for (int dt = 0; dt < cv->kt; dt++) {
                int slot = (cv->seen - cv->span + dt * cv->dil_t) % cv->span;
                memcpy(cv->xs + ((size_t)bb * cv->kt + dt) * fr, cv->ring + ((size_t)slot * B + bb) * fr,
                       fr * sizeof(float));
            }
        src = cv->xs;
        if (cv->seen >= 2 * cv->span) cv->seen -= cv->span; /* the same slots, no overflow */
    }
    conv3d_stack_weight(cv, t);
    npred_conv2d_params p = cv->cp;
    p.n = B;
    return npred_conv2d_forward(cv->y2, src, cv->w2, cv->p_b >= 0 ? npred_ptable_ptr(t, cv->p_b) : NULL, &p, ws,
                                ws_bytes);
}

npred_status npred_core3d_stream_push(npred_core3d *core, npred_ptable *t, const float *frame, int B,
                                      const float **out)
{
    *out = NULL;
    if (B < 1 || B > core->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "core3d: batch %d outside 1..%d", B, core->max_batch);
    if (core->stream_B && B != core->stream_B)
        return npred_errorf(NPRED_ERR_ARG, "core3d: the stream runs %d clips; reset it before pushing %d",
                            core->stream_B, B);
    npred_status s;
    if (!core->stream_B) {
        if ((s = stream_alloc(core, B))) return s;
        core->stream_B = B;
    }
    const float *cur = frame;
    for (int l = 0; l < core->cfg.layers; l++) {
        npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < L->nconv; k++) {
            int ready;
            if ((s = conv3d_push(&L->conv[k], t, cur, B, core->ws, core->ws_bytes, &ready))) return s;
            if (!ready) return NPRED_OK;
            cur = L->conv[k].y2;
        }
        if ((s = layer_norm_act(core, L, t, &cur, B, 1, 0))) return s;
    }
    *out = cur;
    return NPRED_OK;
}

void npred_core3d_free(npred_core3d *core)
{
    for (int l = 0; l < NPRED_CORE3D_MAXLAYERS; l++) {
        npred_core3d_layer *L = &core->L[l];
        for (int k = 0; k < 2; k++) {
            npred_conv3d *cv = &L->conv[k];
            free(cv->w2);
            free(cv->dw2);
            free(cv->xs);
            free(cv->y2);
            free(cv->out);
            free(cv->ring);
        }
        free(L->mean);
        free(L->invstd);
        free(L->bn);
        free(L->out);
    }
    free(core->g[0]);
    free(core->g[1]);
    free(core->dxs);
    free(core->ws);
    memset(core, 0, sizeof *core);
}
