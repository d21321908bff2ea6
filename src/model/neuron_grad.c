/* Input gradients of single neurons (npred_neuron_grad_*, include/npred/model.h).
 *
 * Local path (a point readout on a core with a local receptive field, cores/crop.h):
 * neuron j of a FullGaussian2d / Gaussian2d readout in eval mode is
 *     r = ELU(gain * (bias_j + sum_c F[j, c] bilinear(core(x)[c], grid_j)) + offset) + 1
 * (gain: the modulator's ELU(g) + 1, else 1; grid_j = clamp(mu_j) + shift). Its 2x2
 * taps see only the input pixels within the core's receptive field, so each image is
 * cut to a fixed-size window around its neuron's taps and a second core (the same
 * parameters, sized for the window) runs forward and input-backward on the windows;
 * the window's gradient is pasted into a zero image. Everything that does not depend
 * on the image (grid, features, bias, gain) is taken from one full forward when the
 * plan is made.
 *
 * Fallback: npred_model_input_gradient with one-hot weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/threads.h"
#include "cores/crop.h"
#include "kernels/grid_sample_cell.h"
#include "model/model.h"

/* one thread's window core and buffers: the window (in_c, wh, ww), its gradient, the
 * gradient of the window's core output (out_c, oh, ow) */
typedef struct {
    npred_core core;      /* window core (when there is no cone) */
    npred_core_cone *cone;
    float *win, *dwin, *dout;
} nw_worker;

struct npred_neuron_grad {
    npred_model *m;
    int si, B, n;
    int *neuron;          /* (B) */
    float *pc, *beh;      /* copies of the plan's pupil centres (B, 2) and behaviour (B, k), or NULL */
    int local;
    /* local path */
    npred_core crop;      /* the core sized for the window (worker 0's) */
    int wh, ww;           /* window (input pixels) */
    int nw;               /* workers: images run in parallel, one per thread, each on its own core */
    nw_worker *w;
    int lv;               /* cone: region starts per image and axis (0 without a cone) */
    int *coy, *cox;       /* (B, lv) */
    int oh, ow;           /* the core output that the taps index: the cone's last region or the window core's */
    int *ay, *ax;         /* (B) window origin in the image */
    float *wt;            /* (B, 4) tap weights nw, ne, sw, se (0 for a tap outside the core output) */
    int *tap;             /* (B, 4) tap offset row * ow + col in the window's core output */
    float *F;             /* (B, out_c) feature rows */
    float *bias, *gain;   /* (B) */
    /* fallback */
    float *w1, *rates;    /* (max_batch, n) one-hot weights, rates */
};

void npred_neuron_grad_free(npred_neuron_grad *g)
{
    if (!g) return;
    for (int i = 0; g->w && i < g->nw; i++) {
        npred_core_free(&g->w[i].core);
        npred_core_cone_free(g->w[i].cone);
        free(g->w[i].win);
        free(g->w[i].dwin);
        free(g->w[i].dout);
    }
    free(g->w);
    free(g->neuron);
    free(g->pc);
    free(g->beh);
    free(g->ay);
    free(g->ax);
    free(g->coy);
    free(g->cox);
    free(g->wt);
    free(g->tap);
    free(g->F);
    free(g->bias);
    free(g->gain);
    free(g->w1);
    free(g->rates);
    free(g);
}

static int clampi(double v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* The window of image b and its taps, from the grid position (gx, gy) of its neuron
 * on the full core output (H0, W0). lo: the receptive field's reach before an output
 * index (cores/crop.h). */
static npred_status place(npred_neuron_grad *g, int b, float gx, float gy, int lo)
{
    const npred_model *m = g->m;
    int H0 = m->core.out_h, W0 = m->core.out_w, ac = m->s[g->si].ro.cfg.align_corners;
    npred_gs_cell cell;
    float px = npred_gs_unnormalize(gx, npred_gs_scale(W0, ac), ac);
    float py = npred_gs_unnormalize(gy, npred_gs_scale(H0, ac), ac);
    npred_gs_cell_at(&cell, px, py, H0, W0);
    /* taps x0, x0 + 1 (y0, y0 + 1) read input columns x0 - lo .. x0 + 1 + hi; ax, ay: where the
     * window core's output starts, or the cone's last region */
    double x0 = floor((double)px), y0 = floor((double)py);
    int ax = clampi(x0 - lo, 0, m->in_w - g->ww), ay = clampi(y0 - lo, 0, m->in_h - g->wh);
    if (g->lv) { /* the cone's last region starts where the taps do */
        int *oy = g->coy + (size_t)g->lv * b, *ox = g->cox + (size_t)g->lv * b;
        npred_core_cone_place(g->w[0].cone, clampi(y0, -(1 << 20), 1 << 20), clampi(x0, -(1 << 20), 1 << 20), oy, ox);
        ay = oy[g->lv - 1];
        ax = ox[g->lv - 1];
    }
    g->ax[b] = ax;
    g->ay[b] = ay;
    int ow = g->ow;
    for (int k = 0; k < 4; k++) {
        g->wt[4 * b + k] = cell.in[k] ? cell.wt[k] : 0.0f;
        g->tap[4 * b + k] = 0;
        if (!cell.in[k]) continue;
        /* a tap inside the core output: its row and column in the window's output */
        int row = (int)(cell.off[k] / (size_t)W0) - ay, col = (int)(cell.off[k] % (size_t)W0) - ax;
        if (row < 0 || row >= g->oh || col < 0 || col >= ow)
            return npred_errorf(NPRED_ERR_VALUE, "neuron gradient: image %d: tap (%d, %d) outside the %dx%d region",
                                b, row, col, g->oh, ow);
        g->tap[4 * b + k] = row * ow + col;
    }
    return NPRED_OK;
}

/* grid, features, bias, shift and gain of every image's neuron from full forwards */
static npred_status plan_local(npred_neuron_grad *g, int lo)
{
    npred_model *m = g->m;
    npred_session *s = &m->s[g->si];
    int C = m->core.out_c, n = g->n, B = g->B;
    size_t img = (size_t)m->in_c * m->in_h * m->in_w;
    int bc = m->cfg.modulator ? m->cfg.modulator_input_channels : 0;
    /* the grid depends on the image only through the shifter, the gain through the modulator */
    int per_image = s->has_shifter || s->has_modulator;
    int mb = per_image ? (B < m->max_batch ? B : m->max_batch) : 1;
    float *zeros = calloc((size_t)mb * img, sizeof(float)), *grid = malloc(sizeof(float) * 2 * (size_t)mb * n);
    float *out = malloc(sizeof(float) * (size_t)mb * n);
    npred_status st = zeros && grid && out ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    const float *bias = s->ro.p_bias >= 0 ? npred_ptable_ptr(&m->t, s->ro.p_bias) : NULL;
    for (int b0 = 0; b0 < B && !st; b0 += mb) {
        int nb = per_image ? (B - b0 < mb ? B - b0 : mb) : 1;
        st = npred_model_forward(m, g->si, zeros, g->pc ? g->pc + 2 * (size_t)b0 : NULL,
                                 g->beh ? g->beh + (size_t)bc * b0 : NULL, nb, 0, NULL, NULL, out);
        if (st) break;
        npred_gaussian_sampled_grid(&s->ro, grid);
        const float *gm = s->has_modulator ? s->modulator.h[s->modulator.n_layers] : NULL;
        for (int b = b0; b < (per_image ? b0 + nb : B); b++) {
            int j = g->neuron[b], r = per_image ? b - b0 : 0;
            float gx = grid[((size_t)r * n + j) * 2], gy = grid[((size_t)r * n + j) * 2 + 1];
            if (s->has_shifter) { /* as the readout: clamp(g) + shift */
                gx += s->shift[2 * r];
                gy += s->shift[2 * r + 1];
            }
            if ((st = place(g, b, gx, gy, lo))) break;
            npred_gaussian_feature_row(&s->ro, &m->t, j, g->F + (size_t)b * C);
            g->bias[b] = bias ? bias[j] : 0.0f;
            g->gain[b] = gm ? npred_elu1(gm[(size_t)r * n + j]) : 1.0f;
        }
        if (!per_image) break;
    }
    free(zeros);
    free(grid);
    free(out);
    return st;
}

npred_status npred_neuron_grad_create(npred_neuron_grad **out, npred_model *m, const char *key, const int *neurons,
                                      int B, const float *pupil_center, const float *behavior)
{
    *out = NULL;
    int si = npred_model_session_index(m, key ? key : "");
    if (si < 0) return npred_model_input_gradient(m, key, NULL, 0, NULL, NULL, NULL, NULL, NULL); /* names the key */
    npred_status st = npred_model_check_allocated(m, "neuron gradient");
    if (st) return st;
    if (B < 1 || !neurons) return npred_errorf(NPRED_ERR_ARG, "neuron gradient: B >= 1 neurons are required");
    npred_session *s = &m->s[si];
    for (int b = 0; b < B; b++)
        if (neurons[b] < 0 || neurons[b] >= s->n)
            return npred_errorf(NPRED_ERR_ARG, "neuron gradient: neuron %d of image %d is out of range (session %s "
                                               "has %d)", neurons[b], b, s->key, s->n);
    if (s->has_shifter && !pupil_center)
        return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a shifter: pupil_center is required", s->key);
    if (s->has_modulator && !behavior)
        return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a modulator: behavior is required", s->key);
    npred_neuron_grad *g = calloc(1, sizeof *g);
    if (!g) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    g->m = m;
    g->si = si;
    g->B = B;
    g->n = s->n;
    int bc = s->has_modulator ? m->cfg.modulator_input_channels : 0;
    g->neuron = malloc(sizeof(int) * (size_t)B);
    if (s->has_shifter) g->pc = malloc(sizeof(float) * 2 * (size_t)B);
    if (bc) g->beh = malloc(sizeof(float) * (size_t)bc * B);
    if (!g->neuron || (s->has_shifter && !g->pc) || (bc && !g->beh)) {
        npred_neuron_grad_free(g);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    memcpy(g->neuron, neurons, sizeof(int) * (size_t)B);
    if (g->pc) memcpy(g->pc, pupil_center, sizeof(float) * 2 * (size_t)B);
    if (g->beh) memcpy(g->beh, behavior, sizeof(float) * (size_t)bc * B);
    int lo, hi;
    /* (the local formula is the FiringRateEncoder's; a distribution encoder's mean takes the fallback) */
    int point = (s->ro.cfg.type == NPRED_READOUT_FULL_GAUSSIAN2D || s->ro.cfg.type == NPRED_READOUT_GAUSSIAN2D) &&
                m->cfg.encoder.type == NPRED_ENC_FIRING_RATE;
    if (point && !npred_core_receptive_field(&m->core, &lo, &hi)) {
        /* the window holds the 2 taps and the receptive field around them */
        int side = 2 + lo + hi;
        g->wh = side < m->in_h ? side : m->in_h;
        g->ww = side < m->in_w ? side : m->in_w;
        int nt = npred_threads();
        g->nw = nt < B ? nt : B;
        g->w = calloc((size_t)g->nw, sizeof *g->w);
        if (!g->w) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        int C = m->core.out_c;
        npred_core_cone *probe = NULL;
        int use_cone = !npred_core_cone_create(&probe, &m->core);
        npred_core_cone_free(probe);
        npred_clear_error();
        for (int i = 0; i < g->nw && !st; i++) {
            nw_worker *w = &g->w[i];
            if (use_cone) {
                if ((st = npred_core_cone_create(&w->cone, &m->core))) break;
                npred_core_cone_output_size(w->cone, &g->oh, &g->ow);
                g->lv = npred_core_cone_levels(w->cone);
            } else {
                if ((st = npred_core_resized(&w->core, &m->core, &m->t, g->wh, g->ww, 1))) break;
                g->oh = w->core.out_h;
                g->ow = w->core.out_w;
            }
            size_t wi = (size_t)m->in_c * g->wh * g->ww, wo = (size_t)C * g->oh * g->ow;
            w->win = malloc(sizeof(float) * wi);
            w->dwin = malloc(sizeof(float) * wi);
            w->dout = calloc(wo, sizeof(float));
            if (!w->win || !w->dwin || !w->dout) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        }
        if (!st) {
            g->local = g->lv ? 2 : 1;
            g->ay = malloc(sizeof(int) * (size_t)B);
            g->ax = malloc(sizeof(int) * (size_t)B);
            g->wt = malloc(sizeof(float) * 4 * (size_t)B);
            g->tap = malloc(sizeof(int) * 4 * (size_t)B);
            g->F = malloc(sizeof(float) * (size_t)C * B);
            g->bias = malloc(sizeof(float) * (size_t)B);
            g->gain = malloc(sizeof(float) * (size_t)B);
            if (g->lv) {
                g->coy = malloc(sizeof(int) * (size_t)g->lv * B);
                g->cox = malloc(sizeof(int) * (size_t)g->lv * B);
            }
            if (!g->ay || !g->ax || !g->wt || !g->tap || !g->F || !g->bias || !g->gain || (g->lv && (!g->coy || !g->cox)))
                st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            if (!st) st = plan_local(g, lo);
        }
    } else {
        npred_clear_error();
        g->w1 = calloc((size_t)m->max_batch * g->n, sizeof(float));
        g->rates = malloc(sizeof(float) * (size_t)m->max_batch * g->n);
        if (!g->w1 || !g->rates) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    if (st) {
        npred_neuron_grad_free(g);
        return st;
    }
    *out = g;
    return NPRED_OK;
}

int npred_neuron_grad_is_local(const npred_neuron_grad *g, int *window_h, int *window_w)
{
    if (window_h) *window_h = g->local ? g->wh : 0;
    if (window_w) *window_w = g->local ? g->ww : 0;
    return g->local;
}

static npred_status run_fallback(npred_neuron_grad *g, const float *images, float *grad_out, float *rates_out)
{
    npred_model *m = g->m;
    size_t img = (size_t)m->in_c * m->in_h * m->in_w;
    int n = g->n, bc = m->cfg.modulator ? m->cfg.modulator_input_channels : 0;
    for (int b0 = 0; b0 < g->B; b0 += m->max_batch) {
        int nb = g->B - b0 < m->max_batch ? g->B - b0 : m->max_batch;
        for (int b = 0; b < nb; b++) g->w1[(size_t)b * n + g->neuron[b0 + b]] = 1.0f;
        npred_status st = npred_model_input_gradient(m, m->s[g->si].key, images + img * b0, nb,
                                                     g->pc ? g->pc + 2 * (size_t)b0 : NULL,
                                                     g->beh ? g->beh + (size_t)bc * b0 : NULL, g->w1,
                                                     grad_out + img * b0, g->rates);
        for (int b = 0; b < nb; b++) g->w1[(size_t)b * n + g->neuron[b0 + b]] = 0.0f;
        if (st) return st;
        if (rates_out)
            for (int b = 0; b < nb; b++) rates_out[b0 + b] = g->rates[(size_t)b * n + g->neuron[b0 + b]];
    }
    return NPRED_OK;
}

/* image i on worker w: window, forward, rate, backward, gradient pasted into grad_out */
static npred_status run_one(npred_neuron_grad *g, nw_worker *w, int i, const float *images, float *grad_out,
                            float *rates_out)
{
    npred_model *m = g->m;
    int ci = m->in_c, H = m->in_h, W = m->in_w, C = m->core.out_c;
    size_t img = (size_t)ci * H * W, wimg = (size_t)ci * g->wh * g->ww, oplane = (size_t)g->oh * g->ow;
    const float *out;
    npred_status st;
    if (g->lv) {
        st = npred_core_cone_forward(w->cone, &m->t, images + img * i, g->coy + (size_t)g->lv * i,
                                     g->cox + (size_t)g->lv * i, &out);
    } else {
        for (int c = 0; c < ci; c++)
            for (int y = 0; y < g->wh; y++)
                memcpy(w->win + ((size_t)c * g->wh + y) * g->ww,
                       images + img * i + ((size_t)c * H + g->ay[i] + y) * W + g->ax[i], sizeof(float) * (size_t)g->ww);
        st = npred_core_forward(&w->core, &m->t, w->win, 1, 0);
        out = w->core.output;
    }
    if (st) return st;
    const float *wt = g->wt + 4 * (size_t)i, *F = g->F + (size_t)C * i;
    const int *tap = g->tap + 4 * (size_t)i;
    double acc = 0;
    for (int c = 0; c < C; c++) {
        const float *oc = out + (size_t)c * oplane;
        float mix = wt[0] * oc[tap[0]] + wt[1] * oc[tap[1]] + wt[2] * oc[tap[2]] + wt[3] * oc[tap[3]];
        acc += (double)F[c] * mix;
    }
    float z = g->gain[i] * (g->bias[i] + (float)acc) + (float)m->cfg.elu_offset, r = npred_elu1(z);
    if (rates_out) rates_out[i] = r;
    float dy = (z > 0 ? 1.0f : r) * g->gain[i];
    for (int c = 0; c < C; c++)
        for (int k = 0; k < 4; k++) w->dout[(size_t)c * oplane + tap[k]] += dy * wt[k] * F[c];
    float *gi = grad_out + img * i;
    memset(gi, 0, sizeof(float) * img);
    if (g->lv) {
        st = npred_core_cone_backward(w->cone, &m->t, w->dout, gi);
    } else {
        memset(w->dwin, 0, sizeof(float) * wimg);
        st = npred_core_backward(&w->core, &m->t, w->dout, w->dwin);
        for (int c = 0; !st && c < ci; c++)
            for (int y = 0; y < g->wh; y++)
                memcpy(gi + ((size_t)c * H + g->ay[i] + y) * W + g->ax[i], w->dwin + ((size_t)c * g->wh + y) * g->ww,
                       sizeof(float) * (size_t)g->ww);
    }
    for (int c = 0; c < C; c++) /* the taps were the only nonzero entries */
        for (int k = 0; k < 4; k++) w->dout[(size_t)c * oplane + tap[k]] = 0.0f;
    return st;
}

npred_status npred_neuron_grad_run(npred_neuron_grad *g, const float *images, float *grad_out, float *rates_out)
{
    if (!images || !grad_out) return npred_errorf(NPRED_ERR_ARG, "neuron gradient: images and grad_out are required");
    if (!g->local) return run_fallback(g, images, grad_out, rates_out);
    npred_ptable *t = &g->m->t;
    t->grads_off = 1; /* input gradients only */
    npred_status st = NPRED_OK;
    if (g->nw == 1) { /* one image or one thread: single-threaded kernels (one window is too little work to share) */
        int threads = npred_threads();
        npred_set_threads(1);
        for (int i = 0; i < g->B && !st; i++) st = run_one(g, &g->w[0], i, images, grad_out, rates_out);
        npred_set_threads(threads);
    } else {
        /* one image per thread, each on its own window core; the kernels run single-threaded
         * inside (OpenMP does not nest by default, OpenBLAS's OpenMP build stays on the
         * calling thread); the table is only read (eval mode) */
        int failed = 0;
#pragma omp parallel num_threads(g->nw)
        {
            nw_worker *w = &g->w[npred_thread_id()];
#pragma omp for schedule(dynamic, 1)
            for (int i = 0; i < g->B; i++) {
                int bad;
#pragma omp atomic read
                bad = failed;
                if (bad) continue;
                if (run_one(g, w, i, images, grad_out, rates_out)) {
#pragma omp atomic write
                    failed = 1;
                }
            }
        }
        if (failed) /* the worker's message stays on its thread */
            st = npred_errorf(NPRED_ERR_VALUE, "neuron gradient: a windowed pass failed");
    }
    t->grads_off = 0;
    return st;
}
