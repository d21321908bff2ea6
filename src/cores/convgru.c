/* ConvGRU (see convgru.h). */
#include "cores/convgru.h"

#include "kernels/conv2d_fft.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const gate_names[3] = {"update", "reset", "out"};

static int add_entry(npred_ptable *t, const char *prefix, const char *gate, const char *kind, const char *what, int ndim,
                     const int64_t *shape)
{
    char name[NPRED_PARAM_NAMELEN];
    int n = snprintf(name, sizeof name, "%sgru.%s_gate_%s.%s", prefix, gate, kind, what);
    if (n < 0 || (size_t)n >= sizeof name) {
        npred_errorf(NPRED_ERR_ARG, "parameter name too long (prefix '%s')", prefix);
        return -1;
    }
    return npred_ptable_add(t, name, 0, NPRED_PT_F32, ndim, shape);
}

npred_status npred_convgru_declare(npred_convgru *g, const npred_convgru_config *cfg, const char *prefix, int h, int w,
                                   npred_ptable *t)
{
    memset(g, 0, sizeof *g);
    g->cfg = *cfg;
    snprintf(g->prefix, sizeof g->prefix, "%s", prefix ? prefix : "");
    int C = cfg->input_channels, R = cfg->rec_channels, ki = cfg->input_kern, kr = cfg->rec_kern;
    if (C < 1 || R < 1 || ki < 1 || kr < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "ConvGRU: channels and kernel sizes must be >= 1");
    if (kr % 2 == 0)
        return npred_errorf(NPRED_ERR_CONFIG, "ConvGRU: rec_kern %d must be odd (padding rec_kern // 2 keeps the state "
                            "size)", kr);
    if (cfg->pad_input && ki % 2 == 0)
        return npred_errorf(NPRED_ERR_CONFIG, "ConvGRU: input_kern %d must be odd with pad_input", ki);
    g->h = h, g->w = w;
    g->cpi = npred_conv2d_params_square(1, C, h, w, R, ki, 1, cfg->pad_input ? ki / 2 : 0, 1, 1);
    npred_status s = npred_conv2d_output_size(&g->cpi, &g->ho, &g->wo);
    if (s) return npred_error_prefix(s, "ConvGRU input convs");
    if (g->ho < 1 || g->wo < 1)
        return npred_errorf(NPRED_ERR_SHAPE, "ConvGRU: frames %dx%d smaller than input_kern %d", h, w, ki);
    g->cph = npred_conv2d_params_square(1, R, g->ho, g->wo, R, kr, 1, kr / 2, 1, 1);
    /* state_dict order: reset, update, out; each input then hidden */
    const int order[3] = {NPRED_GRU_RESET, NPRED_GRU_UPDATE, NPRED_GRU_OUT};
    for (int k = 0; k < 3; k++) {
        int q = order[k];
        g->p_wi[q] = add_entry(t, g->prefix, gate_names[q], "input", "weight", 4, (const int64_t[]){R, C, ki, ki});
        g->p_bi[q] = add_entry(t, g->prefix, gate_names[q], "input", "bias", 1, (const int64_t[]){R});
        g->p_wh[q] = add_entry(t, g->prefix, gate_names[q], "hidden", "weight", 4, (const int64_t[]){R, R, kr, kr});
        g->p_bh[q] = add_entry(t, g->prefix, gate_names[q], "hidden", "bias", 1, (const int64_t[]){R});
        if (g->p_wi[q] < 0 || g->p_bi[q] < 0 || g->p_wh[q] < 0 || g->p_bh[q] < 0)
            return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: cannot declare its parameters");
    }
    return NPRED_OK;
}

npred_status npred_convgru_setup(npred_convgru *g, int max_batch, int max_frames)
{
    if (max_batch < 1 || max_frames < 1) return npred_errorf(NPRED_ERR_ARG, "ConvGRU: capacity %dx%d", max_batch, max_frames);
    g->max_batch = max_batch, g->max_frames = max_frames;
    size_t BT = (size_t)max_batch * max_frames;
    size_t xin = (size_t)g->cfg.input_channels * g->h * g->w, st = (size_t)g->cfg.rec_channels * g->ho * g->wo;
    g->xs = malloc(BT * xin * sizeof(float));
    g->dxs = malloc(BT * xin * sizeof(float));
    for (int k = 0; k < 3; k++) g->a[k] = malloc(BT * st * sizeof(float));
    g->hs = malloc((BT + (size_t)max_batch) * st * sizeof(float));
    g->u = malloc(BT * st * sizeof(float));
    g->r = malloc(BT * st * sizeof(float));
    g->c = malloc(BT * st * sizeof(float));
    g->hr = malloc(BT * st * sizeof(float));
    g->out = malloc(BT * st * sizeof(float));
    g->tmp = malloc((size_t)max_batch * st * sizeof(float));
    g->dh = malloc((size_t)max_batch * st * sizeof(float));
    g->dh2 = malloc((size_t)max_batch * st * sizeof(float));
    g->dhr = malloc((size_t)max_batch * st * sizeof(float));
    if (!g->xs || !g->dxs || !g->a[0] || !g->a[1] || !g->a[2] || !g->hs || !g->u || !g->r || !g->c || !g->hr ||
        !g->out || !g->tmp || !g->dh || !g->dh2 || !g->dhr)
        return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: out of memory for %d x %d frames", max_batch, max_frames);
    int R = g->cfg.rec_channels, C = g->cfg.input_channels;
    size_t ki2 = (size_t)g->cfg.input_kern * g->cfg.input_kern, kr2 = (size_t)g->cfg.rec_kern * g->cfg.rec_kern;
    g->chunk = BT < 8 ? (int)BT : 8;
    g->wi3 = malloc(3 * (size_t)R * C * ki2 * sizeof(float));
    g->bi3 = malloc(3 * (size_t)R * sizeof(float));
    g->wh2 = malloc(2 * (size_t)R * R * kr2 * sizeof(float));
    g->bh2 = malloc(2 * (size_t)R * sizeof(float));
    g->gi = malloc((size_t)g->chunk * 3 * st * sizeof(float));
    g->gh = malloc((size_t)max_batch * 2 * st * sizeof(float));
    if (!g->wi3 || !g->bi3 || !g->wh2 || !g->bh2 || !g->gi || !g->gh)
        return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: out of memory for %d x %d frames", max_batch, max_frames);
    g->dwi3 = malloc(3 * (size_t)R * C * ki2 * sizeof(float));
    g->dbi3 = malloc(3 * (size_t)R * sizeof(float));
    g->dwh2 = malloc(2 * (size_t)R * R * kr2 * sizeof(float));
    g->dbh2 = malloc(2 * (size_t)R * sizeof(float));
    if (!g->dwi3 || !g->dbi3 || !g->dwh2 || !g->dbh2)
        return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: out of memory for %d x %d frames", max_batch, max_frames);
    /* the calls: the fused input convs on chunks of frames (3R outputs), the fused
     * update/reset hidden convs (2R) and the out gate's (R) on the batch */
    npred_conv2d_params cp[3] = {g->cpi, g->cph, g->cph};
    cp[0].n = g->chunk, cp[0].o = 3 * R;
    cp[1].n = max_batch, cp[1].o = 2 * R;
    cp[2].n = max_batch;
    g->ws_bytes = 0;
    for (int q = 0; q < 3; q++) {
        size_t a = npred_conv2d_workspace_size(&cp[q], NPRED_CONV2D_ALGO_AUTO);
        if (a > g->ws_bytes) g->ws_bytes = a;
    }
    if (g->ws_bytes && !(g->ws = malloc(g->ws_bytes))) return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: out of memory");
    return NPRED_OK;
}

static float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

/* wi3/bi3: the update, reset and out input convs stacked along the outputs; wh2/bh2:
 * the update and reset hidden convs */
static void fuse_weights(npred_convgru *g, const npred_ptable *t)
{
    int R = g->cfg.rec_channels;
    size_t nwi = (size_t)R * g->cfg.input_channels * g->cfg.input_kern * g->cfg.input_kern,
           nwh = (size_t)R * R * g->cfg.rec_kern * g->cfg.rec_kern;
    for (int q = 0; q < 3; q++) {
        memcpy(g->wi3 + q * nwi, npred_ptable_ptr(t, g->p_wi[q]), nwi * sizeof(float));
        memcpy(g->bi3 + (size_t)q * R, npred_ptable_ptr(t, g->p_bi[q]), (size_t)R * sizeof(float));
    }
    for (int q = 0; q < 2; q++) { /* NPRED_GRU_UPDATE, NPRED_GRU_RESET */
        memcpy(g->wh2 + q * nwh, npred_ptable_ptr(t, g->p_wh[q]), nwh * sizeof(float));
        memcpy(g->bh2 + (size_t)q * R, npred_ptable_ptr(t, g->p_bh[q]), (size_t)R * sizeof(float));
    }
}

/* does this conv run by FFT (an eval forward and the policy picks it)? */
static int by_fft(const npred_convgru *g, const npred_conv2d_params *p) { return g->fft && npred_conv2d_fft_use(p); }

/* the transformed weights of the convs that run by FFT (once per weight set) and a
 * workspace for them */
static npred_status fft_prepare(npred_convgru *g, const npred_ptable *t, const npred_conv2d_params *const cps[3])
{
    const float *w[3] = {g->wi3, g->wh2, npred_ptable_ptr(t, g->p_wh[NPRED_GRU_OUT])};
    for (int q = 0; q < 3; q++) {
        if (!by_fft(g, cps[q])) continue;
        npred_status s = npred_conv2d_fft_reserve(&g->fws, &g->fws_bytes, cps[q]);
        if (s) return npred_error_prefix(s, "ConvGRU");
        if (g->wf_ok >> q & 1) continue;
        if (!g->wf[q] && !(g->wf[q] = malloc(npred_conv2d_fft_weights_floats(cps[q]) * sizeof(float))))
            return npred_errorf(NPRED_ERR_NOMEM, "ConvGRU: out of memory for the FFT weights");
        if ((s = npred_conv2d_fft_weights(g->wf[q], w[q], cps[q]))) return s;
        g->wf_ok |= 1 << q;
    }
    return NPRED_OK;
}

static npred_status gate_conv(npred_convgru *g, int q, float *y, const float *x, const float *w, const float *b,
                              const npred_conv2d_params *p)
{
    if (by_fft(g, p)) return npred_conv2d_fft_forward(y, x, g->wf[q], b, p, g->fws, g->fws_bytes);
    return npred_conv2d_forward(y, x, w, b, p, g->ws, g->ws_bytes);
}

npred_status npred_convgru_forward(npred_convgru *g, const npred_ptable *t, const float *x, int B, int T,
                                   const float **out)
{
    return npred_convgru_forward_from(g, t, x, NULL, B, T, out);
}

npred_status npred_convgru_forward_from(npred_convgru *g, const npred_ptable *t, const float *x, const float *h0, int B,
                                        int T, const float **out)
{
    if (B < 1 || B > g->max_batch || T < 1 || T > g->max_frames)
        return npred_errorf(NPRED_ERR_ARG, "ConvGRU: %d x %d frames for a capacity of %d x %d", B, T, g->max_batch,
                            g->max_frames);
    int C = g->cfg.input_channels, R = g->cfg.rec_channels;
    size_t HW = (size_t)g->h * g->w, st = (size_t)R * g->ho * g->wo, sHW = (size_t)g->ho * g->wo;
    /* frames: xs[t, b, c] = x[b, c, t] */
    for (int tt = 0; tt < T; tt++)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                memcpy(g->xs + (((size_t)tt * B + b) * C + c) * HW, x + (((size_t)b * C + c) * T + tt) * HW,
                       HW * sizeof(float));
    npred_status s;
    if (!g->keep_weights) fuse_weights(g, t), g->wf_ok = 0;
    /* the three input convs as one: (chunk, 3R, H', W') per call, split into a[q] */
    npred_conv2d_params pi = g->cpi, ph = g->cph;
    pi.o = 3 * R;
    ph.o = 2 * R;
    ph.n = B;
    npred_conv2d_params po = g->cph; /* the out gate's hidden conv */
    po.n = B;
    const npred_conv2d_params *cps[3] = {&pi, &ph, &po};
    if ((s = fft_prepare(g, t, cps))) return s;
    for (int i0 = 0; i0 < B * T; i0 += g->chunk) {
        int ni = B * T - i0 < g->chunk ? B * T - i0 : g->chunk;
        pi.n = ni;
        if ((s = gate_conv(g, 0, g->gi, g->xs + (size_t)i0 * C * HW, g->wi3, g->bi3, &pi)))
            return s;
        for (int i = 0; i < ni; i++)
            for (int q = 0; q < 3; q++)
                memcpy(g->a[q] + (size_t)(i0 + i) * st, g->gi + ((size_t)i * 3 + q) * st, st * sizeof(float));
    }
    size_t n = (size_t)B * st;
    if (h0) memcpy(g->hs, h0, n * sizeof(float));
    else memset(g->hs, 0, n * sizeof(float));
    for (int tt = 0; tt < T; tt++) {
        const float *h = g->hs + (size_t)tt * n;
        float *hn = g->hs + (size_t)(tt + 1) * n;
        float *u = g->u + (size_t)tt * n, *r = g->r + (size_t)tt * n, *c = g->c + (size_t)tt * n,
              *hr = g->hr + (size_t)tt * n;
        const float *au = g->a[NPRED_GRU_UPDATE] + (size_t)tt * n, *ar = g->a[NPRED_GRU_RESET] + (size_t)tt * n,
                    *ao = g->a[NPRED_GRU_OUT] + (size_t)tt * n;
        /* update and reset hidden convs as one: gh (B, 2R, H', W') */
        if ((s = gate_conv(g, 1, g->gh, h, g->wh2, g->bh2, &ph))) return s;
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (size_t i = 0; i < st; i++) {
                const float *hu = g->gh + (size_t)b * 2 * st, *hrs = hu + st;
                size_t o = (size_t)b * st;
                u[o + i] = sigmoidf_(au[o + i] + hu[i]);
                r[o + i] = sigmoidf_(ar[o + i] + hrs[i]);
                hr[o + i] = h[o + i] * r[o + i];
            }
        if ((s = gate_conv(g, 2, g->tmp, hr, npred_ptable_ptr(t, g->p_wh[NPRED_GRU_OUT]),
                           npred_ptable_ptr(t, g->p_bh[NPRED_GRU_OUT]), &po)))
            return s;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            c[i] = tanhf(ao[i] + g->tmp[i]);
            float keep = h[i] * (1.0f - u[i]), add = c[i] * u[i];
            hn[i] = keep + add;
        }
        /* out[b, :, t] = h_{t+1}[b] */
        for (int b = 0; b < B; b++)
            for (int k = 0; k < R; k++)
                memcpy(g->out + (((size_t)b * R + k) * T + tt) * sHW, hn + ((size_t)b * R + k) * sHW, sHW * sizeof(float));
    }
    g->B = B, g->T = T;
    *out = g->out;
    return NPRED_OK;
}

/* d[i] += e[i] for the parameter gradient of entry `idx` from the fused gradient e */
static void add_grad(const npred_ptable *t, int idx, const float *e)
{
    float *d = npred_ptable_gradptr(t, idx);
    size_t n = t->items[idx].count;
    for (size_t i = 0; i < n; i++) d[i] += e[i];
}

npred_status npred_convgru_backward(npred_convgru *g, const npred_ptable *t, const float *dy, float *dx)
{
    int B = g->B, T = g->T, C = g->cfg.input_channels, R = g->cfg.rec_channels;
    size_t sHW = (size_t)g->ho * g->wo, n = (size_t)B * R * sHW, HW = (size_t)g->h * g->w, st = (size_t)R * sHW;
    size_t nwi = (size_t)R * C * g->cfg.input_kern * g->cfg.input_kern, nwh = (size_t)R * R * g->cfg.rec_kern * g->cfg.rec_kern;
    /* as in the forward, the update and reset hidden convs run as one (2R outputs on h)
     * and the three input convs as one (3R outputs): one im2col and one dX product
     * each; their weight and bias gradients are summed in dwh2/dbh2 and dwi3/dbi3 and
     * added to the parameters' at the end */
    npred_conv2d_params pi = g->cpi, ph = g->cph, p2 = g->cph;
    pi.o = 3 * R;
    ph.n = B;
    p2.n = B, p2.o = 2 * R;
    memset(g->dwi3, 0, 3 * nwi * sizeof(float));
    memset(g->dbi3, 0, 3 * (size_t)R * sizeof(float));
    memset(g->dwh2, 0, 2 * nwh * sizeof(float));
    memset(g->dbh2, 0, 2 * (size_t)R * sizeof(float));
    npred_status s;
    float *dh = g->dh; /* gradient reaching h_{t+1} */
    memset(dh, 0, n * sizeof(float));
    for (int tt = T - 1; tt >= 0; tt--) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < R; k++) {
                float *d = dh + ((size_t)b * R + k) * sHW;
                const float *e = dy + (((size_t)b * R + k) * T + tt) * sHW;
                for (size_t i = 0; i < sHW; i++) d[i] += e[i];
            }
        const float *h = g->hs + (size_t)tt * n, *u = g->u + (size_t)tt * n, *r = g->r + (size_t)tt * n,
                    *c = g->c + (size_t)tt * n, *hr = g->hr + (size_t)tt * n;
        float *gu = g->a[NPRED_GRU_UPDATE] + (size_t)tt * n, *gr = g->a[NPRED_GRU_RESET] + (size_t)tt * n,
              *go = g->a[NPRED_GRU_OUT] + (size_t)tt * n;
        float *dprev = g->dh2;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float d = dh[i];
            go[i] = d * u[i] * (1.0f - c[i] * c[i]);
            gu[i] = d * (c[i] - h[i]) * u[i] * (1.0f - u[i]);
            dprev[i] = d * (1.0f - u[i]);
        }
        /* out gate hidden conv on h*r */
        memset(g->dhr, 0, n * sizeof(float));
        if ((s = npred_conv2d_backward(g->dhr, npred_ptable_gradptr(t, g->p_wh[NPRED_GRU_OUT]),
                                       npred_ptable_gradptr(t, g->p_bh[NPRED_GRU_OUT]), go, hr,
                                       npred_ptable_ptr(t, g->p_wh[NPRED_GRU_OUT]), &ph, g->ws, g->ws_bytes)))
            return s;
        /* gr, and gh (B, 2R, H', W') = [gu; gr] per image for the fused hidden convs */
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            size_t o = (size_t)b * st;
            float *ghu = g->gh + (size_t)b * 2 * st, *ghr = ghu + st;
            for (size_t i = 0; i < st; i++) {
                float dr = g->dhr[o + i];
                gr[o + i] = dr * h[o + i] * r[o + i] * (1.0f - r[o + i]);
                dprev[o + i] += dr * r[o + i];
                ghu[i] = gu[o + i];
                ghr[i] = gr[o + i];
            }
        }
        if ((s = npred_conv2d_backward(dprev, g->dwh2, g->dbh2, g->gh, h, g->wh2, &p2, g->ws, g->ws_bytes))) return s;
        g->dh2 = dh;
        dh = dprev;
    }
    g->dh = dh;
    for (int q = 0; q < 2; q++) { /* NPRED_GRU_UPDATE, NPRED_GRU_RESET */
        add_grad(t, g->p_wh[q], g->dwh2 + q * nwh);
        add_grad(t, g->p_bh[q], g->dbh2 + (size_t)q * R);
    }
    /* the input convs on chunks of frames; a[] now holds the gate gradients,
     * gathered per frame into gi (chunk, 3R, H', W') */
    if (dx) memset(g->dxs, 0, (size_t)B * T * C * HW * sizeof(float));
    for (int i0 = 0; i0 < B * T; i0 += g->chunk) {
        int ni = B * T - i0 < g->chunk ? B * T - i0 : g->chunk;
        pi.n = ni;
        for (int i = 0; i < ni; i++)
            for (int q = 0; q < 3; q++)
                memcpy(g->gi + ((size_t)i * 3 + q) * st, g->a[q] + (size_t)(i0 + i) * st, st * sizeof(float));
        if ((s = npred_conv2d_backward(dx ? g->dxs + (size_t)i0 * C * HW : NULL, g->dwi3, g->dbi3, g->gi,
                                       g->xs + (size_t)i0 * C * HW, g->wi3, &pi, g->ws, g->ws_bytes)))
            return s;
    }
    for (int q = 0; q < 3; q++) {
        add_grad(t, g->p_wi[q], g->dwi3 + q * nwi);
        add_grad(t, g->p_bi[q], g->dbi3 + (size_t)q * R);
    }
    if (dx)
        for (int tt = 0; tt < T; tt++)
            for (int b = 0; b < B; b++)
                for (int c = 0; c < C; c++) {
                    float *d = dx + (((size_t)b * C + c) * T + tt) * HW;
                    const float *e = g->dxs + (((size_t)tt * B + b) * C + c) * HW;
                    for (size_t i = 0; i < HW; i++) d[i] += e[i];
                }
    return NPRED_OK;
}

/* gamma/3 * mean|v| and its gradient gamma/3 * sign(v)/n * gscale */
static double mean_abs(const float *v, float *dv, size_t n, double scale)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)v[i]);
    if (dv && scale != 0)
        for (size_t i = 0; i < n; i++) dv[i] += (float)(scale * (double)((v[i] > 0) - (v[i] < 0)) / (double)n);
    return s / (double)n;
}

double npred_convgru_regularizer(const npred_convgru *g, const npred_ptable *t, double gscale)
{
    double k = g->cfg.gamma_rec / 3.0, sc = k * gscale;
    int e[3] = {g->p_bh[NPRED_GRU_RESET], g->p_wh[NPRED_GRU_UPDATE], g->p_bh[NPRED_GRU_OUT]};
    double v = 0;
    for (int i = 0; i < 3; i++)
        v += mean_abs(npred_ptable_ptr(t, e[i]), gscale != 0 ? npred_ptable_gradptr(t, e[i]) : NULL, t->items[e[i]].count,
                      sc);
    return k * v;
}

void npred_convgru_free(npred_convgru *g)
{
    free(g->xs);
    free(g->dxs);
    for (int k = 0; k < 3; k++) free(g->a[k]);
    free(g->hs);
    free(g->u);
    free(g->r);
    free(g->c);
    free(g->hr);
    free(g->out);
    free(g->tmp);
    free(g->dh);
    free(g->dh2);
    free(g->dhr);
    free(g->ws);
    free(g->wi3), free(g->bi3), free(g->wh2), free(g->bh2), free(g->gi), free(g->gh);
    for (int q = 0; q < 3; q++) free(g->wf[q]);
    free(g->fws);
    free(g->dwi3), free(g->dbi3), free(g->dwh2), free(g->dbh2);
    memset(g, 0, sizeof *g);
}
