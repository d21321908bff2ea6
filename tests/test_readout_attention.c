/* AttentionReadout with a hidden attention net (attention_layers > 1): parameter
 * names, initialisation order, finite differences through the whole readout in
 * eval mode (running statistics) and train mode (batch statistics) against a
 * double-precision reference, the running-statistics update, repr, bad input,
 * and a whole model built from a config, saved and loaded. (No fixture: 0.3.0's
 * bool padding fails in torch 1.13.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "model/model.h"
#include "npred/model.h"
#include "readouts/readout.h"

/* ------------------------------------------------ double reference --- */

/* table indices of one hidden layer, found by name */
typedef struct {
    int w, b, gamma, beta, rmean, rvar, nbt;
} hid_idx;

typedef struct {
    const npred_readout *r;
    const npred_ptable *t;
    hid_idx h[8];
    int nh;
    const double *x, *up;   /* (B, C, H, W), (B, n) */
    const double *rstat;    /* double copy of t->bufdata (running stats read in eval) */
    double *rstat_out;      /* NULL, or gets the running stats after a train forward */
    int B, train;
} ref_ctx;

static int find(const npred_ptable *t, const char *prefix, const char *fmt, int l)
{
    char rest[96], name[NPRED_PARAM_NAMELEN];
    snprintf(rest, sizeof rest, fmt, l);
    snprintf(name, sizeof name, "%s%s", prefix, rest);
    return npred_ptable_find(t, name);
}

static void find_hidden(ref_ctx *k, const char *prefix)
{
    k->nh = k->r->cfg.attention_layers - 1;
    for (int l = 0; l < k->nh; l++) {
        hid_idx *h = &k->h[l];
        h->w = find(k->t, prefix, "attention.conv%d.weight", l);
        h->b = find(k->t, prefix, "attention.conv%d.bias", l);
        h->gamma = find(k->t, prefix, "attention.norm%d.weight", l);
        h->beta = find(k->t, prefix, "attention.norm%d.bias", l);
        h->rmean = find(k->t, prefix, "attention.norm%d.running_mean", l);
        h->rvar = find(k->t, prefix, "attention.norm%d.running_var", l);
        h->nbt = find(k->t, prefix, "attention.norm%d.num_batches_tracked", l);
    }
}

static const double *par(const ref_ctx *k, const double *P, int idx) { return P + k->t->items[idx].offset; }
static const double *buf(const ref_ctx *k, int idx) { return k->rstat + k->t->items[idx].offset; }

/* y (B, O, H, W) = conv(x (B, Ci, H, W)), k x k, padding int(k > 1) */
static void conv_ref(double *y, const double *x, const double *w, const double *b, int B, int Ci, int O, int H, int W,
                     int K)
{
    int pad = K > 1;
    for (int n = 0; n < B; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double s = b[o];
                    for (int c = 0; c < Ci; c++)
                        for (int di = 0; di < K; di++)
                            for (int dj = 0; dj < K; dj++) {
                                int si = i + di - pad, sj = j + dj - pad;
                                if (si < 0 || si >= H || sj < 0 || sj >= W) continue;
                                s += w[((o * Ci + c) * K + di) * K + dj] * x[((size_t)(n * Ci + c) * H + si) * W + sj];
                            }
                    y[((size_t)(n * O + o) * H + i) * W + j] = s;
                }
}

/* loss = sum y * up + feature_reg_weight * sum |features| */
static double attention_ref(const ref_ctx *k, const double *P, double *yout)
{
    const npred_readout_config *c = &k->r->cfg;
    int B = k->B, C = c->c, H = c->h, W = c->w, hw = H * W, n = c->n, K = c->attention_kernel;
    size_t N = (size_t)B * C * hw;
    double *z = malloc(N * sizeof *z), *cur = malloc(N * sizeof *cur);
    memcpy(cur, k->x, N * sizeof *cur);
    for (int l = 0; l < k->nh; l++) {
        const hid_idx *h = &k->h[l];
        conv_ref(z, cur, par(k, P, h->w), par(k, P, h->b), B, C, C, H, W, K);
        const double *g = par(k, P, h->gamma), *be = par(k, P, h->beta);
        for (int ch = 0; ch < C; ch++) {
            double mean, var, cnt = (double)B * hw, s = 0, ss = 0;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < hw; i++) s += z[((size_t)b * C + ch) * hw + i];
            for (int b = 0; b < B; b++)
                for (int i = 0; i < hw; i++) {
                    double d = z[((size_t)b * C + ch) * hw + i] - s / cnt;
                    ss += d * d;
                }
            if (k->train) {
                mean = s / cnt, var = ss / cnt;
                if (k->rstat_out) {
                    double *rm = k->rstat_out + k->t->items[h->rmean].offset;
                    double *rv = k->rstat_out + k->t->items[h->rvar].offset;
                    rm[ch] = 0.9 * buf(k, h->rmean)[ch] + 0.1 * mean;
                    rv[ch] = 0.9 * buf(k, h->rvar)[ch] + 0.1 * ss / (cnt - 1);
                }
            } else {
                mean = buf(k, h->rmean)[ch], var = buf(k, h->rvar)[ch];
            }
            for (int b = 0; b < B; b++)
                for (int i = 0; i < hw; i++) {
                    size_t q = ((size_t)b * C + ch) * hw + i;
                    double v = g[ch] * (z[q] - mean) / sqrt(var + 1e-5) + be[ch];
                    cur[q] = v > 0 ? v : expm1(v);
                }
        }
    }
    double *a = malloc((size_t)B * n * hw * sizeof *a);
    conv_ref(a, cur, par(k, P, k->r->p_att_w), par(k, P, k->r->p_att_b), B, C, n, H, W, K);
    const double *f = par(k, P, k->r->p_features), *bias = par(k, P, k->r->p_bias);
    double loss = 0;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++) {
            double *ao = a + ((size_t)b * n + o) * hw, mx = ao[0], s = 0, y = bias[o];
            for (int i = 1; i < hw; i++) mx = fmax(mx, ao[i]);
            for (int i = 0; i < hw; i++) s += (ao[i] = exp(ao[i] - mx));
            for (int ch = 0; ch < C; ch++) {
                double tt = 0;
                for (int i = 0; i < hw; i++) tt += ao[i] / s * k->x[((size_t)b * C + ch) * hw + i];
                y += tt * f[o * C + ch];
            }
            if (yout) yout[b * n + o] = y;
            loss += y * k->up[b * n + o];
        }
    for (int i = 0; i < n * C; i++) loss += c->feature_reg_weight * fabs(f[i]);
    free(z), free(cur), free(a);
    return loss;
}

/* ------------------------------------------------------ readout set-up --- */

typedef struct {
    npred_readout r;
    npred_ptable t;
    int ok;
} rig;

static void rig_open(rig *g, int layers, int kern, int C, int H, int W, int n, int max_batch)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, C, H, W, n);
    cfg.attention_layers = layers;
    cfg.attention_kernel = kern;
    cfg.feature_reg_weight = 0.5;
    npred_ptable_init(&g->t);
    g->ok = CHECK_OK(npred_readout_declare(&g->r, &cfg, "readout.q.", &g->t)) && CHECK_OK(npred_ptable_alloc(&g->t)) &&
            CHECK_OK(npred_readout_setup(&g->r, &g->t, max_batch));
}

static void rig_close(rig *g)
{
    npred_readout_free(&g->r);
    npred_ptable_free(&g->t);
}

/* random parameters; running stats (mean ~ U(-.5, .5), var ~ U(.5, 1.5)) */
static void randomize(rig *g, ref_ctx *k, uint64_t *seed)
{
    for (size_t i = 0; i < g->t.n_params; i++) g->t.data[i] = (float)th_rand(seed);
    for (int l = 0; l < k->nh; l++) {
        float *ga = npred_ptable_ptr(&g->t, k->h[l].gamma), *rm = npred_ptable_ptr(&g->t, k->h[l].rmean);
        float *rv = npred_ptable_ptr(&g->t, k->h[l].rvar);
        for (int i = 0; i < g->r.cfg.c; i++) {
            ga[i] = (float)(1 + 0.5 * th_rand(seed));
            rm[i] = (float)(0.5 * th_rand(seed));
            rv[i] = (float)(1 + 0.5 * th_rand(seed));
        }
    }
}

static double *bufs_f64(const npred_ptable *t)
{
    double *d = malloc((t->n_buffers + 1) * sizeof *d);
    for (size_t i = 0; i < t->n_buffers; i++) d[i] = t->bufdata[i];
    return d;
}

/* --------------------------------------------------------------- tests --- */

static void test_names(void)
{
    for (int layers = 1; layers <= 3; layers++) {
        rig g;
        rig_open(&g, layers, 3, 3, 5, 6, 4, 2);
        if (!g.ok) {
            rig_close(&g);
            continue;
        }
        char want[24][96];
        int nw = 0;
        snprintf(want[nw++], 96, "readout.q.features");
        for (int l = 0; l < layers - 1; l++) {
            const char *rest[7] = {"conv%d.weight", "conv%d.bias", "norm%d.weight", "norm%d.bias",
                                   "norm%d.running_mean", "norm%d.running_var", "norm%d.num_batches_tracked"};
            for (int i = 0; i < 7; i++) {
                char r[48];
                snprintf(r, sizeof r, rest[i], l);
                snprintf(want[nw++], 96, "readout.q.attention.%s", r);
            }
        }
        snprintf(want[nw++], 96, "readout.q.attention.conv%d.weight", layers);
        snprintf(want[nw++], 96, "readout.q.attention.conv%d.bias", layers);
        snprintf(want[nw++], 96, "readout.q.bias");
        CHECK(g.t.n == nw, "layers %d: %d entries, want %d", layers, g.t.n, nw);
        for (int i = 0; i < nw && i < g.t.n; i++) {
            const npred_param *p = &g.t.items[i];
            CHECK(!strcmp(p->name, want[i]), "entry %d '%s' want '%s'", i, p->name, want[i]);
            int is_buf = strstr(p->name, "running_") || strstr(p->name, "num_batches");
            CHECK(p->is_buffer == is_buf, "%s is_buffer %d", p->name, p->is_buffer);
            if (strstr(p->name, "num_batches"))
                CHECK(p->dtype == NPRED_PT_I64 && p->ndim == 0 && p->count == 1, "%s: int64 scalar", p->name);
            if (i > 0 && i < nw - 3 && strstr(p->name, ".weight") && strstr(p->name, ".conv"))
                CHECK(p->ndim == 4 && p->shape[0] == 3 && p->shape[1] == 3 && p->shape[2] == 3, "%s shape", p->name);
            if (i == nw - 3) CHECK(p->ndim == 4 && p->shape[0] == 4 && p->shape[1] == 3, "%s shape", p->name);
        }
        /* the for-else names the last conv after the layer count: conv<L-1> is absent */
        if (layers > 1)
            CHECK(find(&g.t, "readout.q.", "attention.conv%d.weight", layers - 1) < 0, "no attention.conv%d",
                  layers - 1);
        char repr[128];
        npred_readout_repr(&g.r, repr, sizeof repr);
        /* 0.3.0 __repr__: class name, in_shape as given (c, h, w), outdims; the net is not shown */
        CHECK(!strcmp(repr, "AttentionReadout (3 x 5 x 6 -> 4)"), "repr %s", repr);
        rig_close(&g);
    }
}

/* init: features N(0, init_noise), then xavier_normal_ on conv0, conv1, ..., conv<L>
 * in that order from one stream; zero conv biases; BatchNorm defaults. */
static void test_init(void)
{
    rig g;
    int C = 3, K = 3, n = 4;
    rig_open(&g, 3, K, C, 5, 6, n, 2);
    if (g.ok) {
        ref_ctx k = {.r = &g.r, .t = &g.t};
        find_hidden(&k, "readout.q.");
        for (size_t i = 0; i < g.t.n_params; i++) g.t.data[i] = 7.0f;
        for (size_t i = 0; i < g.t.n_buffers; i++) g.t.bufdata[i] = 7.0f;
        npred_rng rng, ref;
        npred_rng_seed(&rng, 42);
        npred_rng_seed(&ref, 42);
        npred_readout_init_params(&g.r, &g.t, &rng, NULL);
        int bad = 0;
        const float *f = npred_ptable_ptr(&g.t, g.r.p_features);
        for (int i = 0; i < n * C; i++) bad += f[i] != (float)(g.r.cfg.init_noise * npred_rng_normal(&ref));
        int widx[3] = {k.h[0].w, k.h[1].w, g.r.p_att_w}, outs[3] = {C, C, n};
        for (int l = 0; l < 3; l++) {
            double std = sqrt(2.0 / ((double)C * K * K + (double)outs[l] * K * K));
            const float *w = npred_ptable_ptr(&g.t, widx[l]);
            for (int i = 0; i < outs[l] * C * K * K; i++) bad += w[i] != (float)(std * npred_rng_normal(&ref));
        }
        CHECK(bad == 0, "%d values differ from the expected draw order", bad);
        for (int l = 0; l < 2; l++) {
            const hid_idx *h = &k.h[l];
            for (int i = 0; i < C; i++)
                CHECK(npred_ptable_ptr(&g.t, h->b)[i] == 0 && npred_ptable_ptr(&g.t, h->gamma)[i] == 1 &&
                          npred_ptable_ptr(&g.t, h->beta)[i] == 0 && npred_ptable_ptr(&g.t, h->rmean)[i] == 0 &&
                          npred_ptable_ptr(&g.t, h->rvar)[i] == 1,
                      "layer %d channel %d: BatchNorm/bias defaults", l, i);
            CHECK(npred_ptable_ptr(&g.t, h->nbt)[0] == 0, "num_batches_tracked 0");
        }
        for (int i = 0; i < n; i++)
            CHECK(npred_ptable_ptr(&g.t, g.r.p_att_b)[i] == 0 && npred_ptable_ptr(&g.t, g.r.p_bias)[i] == 0,
                  "last conv bias and readout bias 0");
    }
    rig_close(&g);
}

/* finite differences of the double reference vs the float backward, every
 * parameter and input element; also forward values and buffer handling */
static void fd_attention(int layers, int kern, int train)
{
    rig g;
    int B = 3, C = 3, H = 5, W = 6, n = 4;
    rig_open(&g, layers, kern, C, H, W, n, B);
    if (!g.ok) {
        rig_close(&g);
        return;
    }
    char what[96];
    snprintf(what, sizeof what, "layers %d k%d %s", layers, kern, train ? "train" : "eval");
    uint64_t seed = 1000 + 10 * (uint64_t)layers + (uint64_t)kern + 100 * (uint64_t)train;
    npred_ptable *t = &g.t;
    ref_ctx k = {.r = &g.r, .t = t, .B = B, .train = train};
    find_hidden(&k, "readout.q.");
    randomize(&g, &k, &seed);
    size_t nx = (size_t)B * C * H * W, ny = (size_t)B * n;
    float *xf = malloc(nx * sizeof *xf), *dx = calloc(nx, sizeof *dx), *y = malloc(ny * sizeof *y);
    float *upf = malloc(ny * sizeof *upf), *y2 = malloc(ny * sizeof *y2);
    double *x = malloc(nx * sizeof *x), *up = malloc(ny * sizeof *up), *yref = malloc(ny * sizeof *yref);
    for (size_t i = 0; i < nx; i++) x[i] = xf[i] = (float)th_rand(&seed);
    for (size_t i = 0; i < ny; i++) up[i] = upf[i] = (float)th_rand(&seed);
    double *P = malloc(t->n_params * sizeof *P), *R = bufs_f64(t), *Rout = bufs_f64(t);
    for (size_t i = 0; i < t->n_params; i++) P[i] = t->data[i];
    float *saved = malloc((t->n_buffers + 1) * sizeof *saved);
    memcpy(saved, t->bufdata, t->n_buffers * sizeof *saved);
    k.x = x, k.up = up, k.rstat = R, k.rstat_out = Rout;

    /* forward values and the buffers */
    CHECK_OK(npred_readout_forward(&g.r, t, y, xf, NULL, B, train, NULL, NULL));
    attention_ref(&k, P, yref);
    double *yd = malloc(ny * sizeof *yd);
    for (size_t i = 0; i < ny; i++) yd[i] = y[i];
    char w2[384];
    snprintf(w2, sizeof w2, "%s forward", what);
    th_close_f64(w2, yd, yref, ny, 1e-4, 1e-5);
    for (int l = 0; l < k.nh; l++) {
        const hid_idx *h = &k.h[l];
        float *rm = npred_ptable_ptr(t, h->rmean), *rv = npred_ptable_ptr(t, h->rvar);
        double got[2][8];
        for (int i = 0; i < C; i++) got[0][i] = rm[i], got[1][i] = rv[i];
        snprintf(w2, sizeof w2, "%s running_mean %d", what, l);
        th_close_f64(w2, got[0], (train ? Rout : R) + t->items[h->rmean].offset, C, 1e-5, 1e-6);
        snprintf(w2, sizeof w2, "%s running_var %d", what, l);
        th_close_f64(w2, got[1], (train ? Rout : R) + t->items[h->rvar].offset, C, 1e-5, 1e-6);
        CHECK(npred_ptable_ptr(t, h->nbt)[0] == (train ? 1.0f : 0.0f), "%s: num_batches_tracked %g", what,
              npred_ptable_ptr(t, h->nbt)[0]);
    }
    if (!train) CHECK(!memcmp(saved, t->bufdata, t->n_buffers * sizeof *saved), "%s: eval leaves buffers", what);
    /* restored buffers: the same forward again gives the same output */
    memcpy(t->bufdata, saved, t->n_buffers * sizeof *saved);
    CHECK_OK(npred_readout_forward(&g.r, t, y2, xf, NULL, B, train, NULL, NULL));
    CHECK(!memcmp(y, y2, ny * sizeof *y), "%s: repeatable forward", what);

    /* gradients */
    npred_ptable_zero_grad(t);
    npred_readout_backward(&g.r, t, upf, dx, NULL);
    npred_readout_regularizer(&g.r, t, 1.0);
    const double h = 1e-5;
    k.rstat_out = NULL;
    for (int e = 0; e < t->n; e++) {
        const npred_param *p = &t->items[e];
        if (p->is_buffer) continue;
        double *num = malloc(p->count * sizeof *num), *ana = malloc(p->count * sizeof *ana);
        for (size_t i = 0; i < p->count; i++) {
            double keep = P[p->offset + i];
            P[p->offset + i] = keep + h;
            double lp = attention_ref(&k, P, NULL);
            P[p->offset + i] = keep - h;
            double lm = attention_ref(&k, P, NULL);
            P[p->offset + i] = keep;
            num[i] = (lp - lm) / (2 * h);
            ana[i] = t->grad[p->offset + i];
        }
        snprintf(w2, sizeof w2, "fd %s: %s", what, p->name);
        th_close_f64(w2, ana, num, p->count, 2e-3, 2e-4);
        free(num), free(ana);
    }
    double *num = malloc(nx * sizeof *num), *ana = malloc(nx * sizeof *ana);
    for (size_t i = 0; i < nx; i++) {
        double keep = x[i];
        x[i] = keep + h;
        double lp = attention_ref(&k, P, NULL);
        x[i] = keep - h;
        double lm = attention_ref(&k, P, NULL);
        x[i] = keep;
        num[i] = (lp - lm) / (2 * h);
        ana[i] = dx[i];
    }
    snprintf(w2, sizeof w2, "fd %s: input", what);
    th_close_f64(w2, ana, num, nx, 2e-3, 2e-4);
    /* dx = NULL still gives the same parameter gradients */
    float *g1 = malloc(t->n_params * sizeof *g1);
    memcpy(g1, t->grad, t->n_params * sizeof *g1);
    npred_ptable_zero_grad(t);
    npred_readout_backward(&g.r, t, upf, NULL, NULL);
    npred_readout_regularizer(&g.r, t, 1.0);
    CHECK(!memcmp(g1, t->grad, t->n_params * sizeof *g1), "%s: dx = NULL, same parameter gradients", what);
    free(g1), free(num), free(ana), free(yd);
    free(xf), free(dx), free(y), free(y2), free(upf), free(x), free(up), free(yref), free(P), free(R), free(Rout);
    free(saved);
    rig_close(&g);
}

static void test_fd_l2_k1_eval(void) { fd_attention(2, 1, 0); }
static void test_fd_l2_k3_eval(void) { fd_attention(2, 3, 0); }
static void test_fd_l3_k1_eval(void) { fd_attention(3, 1, 0); }
static void test_fd_l3_k3_eval(void) { fd_attention(3, 3, 0); }
static void test_fd_l2_k1_train(void) { fd_attention(2, 1, 1); }
static void test_fd_l2_k3_train(void) { fd_attention(2, 3, 1); }
static void test_fd_l3_k1_train(void) { fd_attention(3, 1, 1); }
static void test_fd_l3_k3_train(void) { fd_attention(3, 3, 1); }

/* running statistics over several train forwards of different batch sizes follow
 * PyTorch: r <- 0.9 r + 0.1 stat, unbiased variance, num_batches_tracked counts */
static void test_running_stats(void)
{
    rig g;
    int C = 3, H = 4, W = 5, n = 2, maxb = 4;
    rig_open(&g, 2, 3, C, H, W, n, maxb);
    if (g.ok) {
        npred_ptable *t = &g.t;
        ref_ctx k = {.r = &g.r, .t = t, .train = 1};
        find_hidden(&k, "readout.q.");
        npred_rng rng;
        npred_rng_seed(&rng, 3);
        npred_readout_init_params(&g.r, t, &rng, NULL);
        uint64_t seed = 77;
        size_t nx = (size_t)maxb * C * H * W;
        float *xf = malloc(nx * sizeof *xf), y[8];
        double *x = malloc(nx * sizeof *x), up[8] = {0};
        double *P = malloc(t->n_params * sizeof *P);
        for (size_t i = 0; i < t->n_params; i++) P[i] = t->data[i];
        const int batches[3] = {4, 1, 3};
        for (int s = 0; s < 3; s++) {
            for (size_t i = 0; i < nx; i++) x[i] = xf[i] = (float)(2 * th_rand(&seed) + 0.5);
            double *R = bufs_f64(t), *Rout = bufs_f64(t);
            k.B = batches[s], k.x = x, k.up = up, k.rstat = R, k.rstat_out = Rout;
            attention_ref(&k, P, NULL);
            CHECK_OK(npred_readout_forward(&g.r, t, y, xf, NULL, batches[s], 1, NULL, NULL));
            double got[2][3];
            for (int i = 0; i < C; i++)
                got[0][i] = npred_ptable_ptr(t, k.h[0].rmean)[i], got[1][i] = npred_ptable_ptr(t, k.h[0].rvar)[i];
            th_close_f64("running_mean", got[0], Rout + t->items[k.h[0].rmean].offset, C, 1e-5, 1e-6);
            th_close_f64("running_var", got[1], Rout + t->items[k.h[0].rvar].offset, C, 1e-5, 1e-6);
            CHECK(npred_ptable_ptr(t, k.h[0].nbt)[0] == (float)(s + 1), "num_batches_tracked %g after %d",
                  npred_ptable_ptr(t, k.h[0].nbt)[0], s + 1);
            free(R), free(Rout);
        }
        /* an eval forward changes nothing */
        float *keep = malloc(t->n_buffers * sizeof *keep);
        memcpy(keep, t->bufdata, t->n_buffers * sizeof *keep);
        CHECK_OK(npred_readout_forward(&g.r, t, y, xf, NULL, 2, 0, NULL, NULL));
        CHECK(!memcmp(keep, t->bufdata, t->n_buffers * sizeof *keep), "eval leaves the buffers");
        free(keep), free(xf), free(x), free(P);
    }
    rig_close(&g);
}

/* train and eval differ (batch vs running statistics) for the same input */
static void test_train_vs_eval(void)
{
    rig g;
    rig_open(&g, 2, 1, 3, 4, 4, 3, 2);
    if (g.ok) {
        npred_rng rng;
        npred_rng_seed(&rng, 9);
        npred_readout_init_params(&g.r, &g.t, &rng, NULL);
        float x[2 * 3 * 16], ye[6], yt[6];
        uint64_t seed = 4;
        for (int i = 0; i < 96; i++) x[i] = (float)(3 * th_rand(&seed) + 2);
        CHECK_OK(npred_readout_forward(&g.r, &g.t, ye, x, NULL, 2, 0, NULL, NULL));
        CHECK_OK(npred_readout_forward(&g.r, &g.t, yt, x, NULL, 2, 1, NULL, NULL));
        CHECK(memcmp(ye, yt, sizeof ye) != 0, "train (batch stats) differs from eval (running stats)");
    }
    rig_close(&g);
}

static void test_bad_input(void)
{
    npred_readout_config cfg;
    npred_ptable t;
    npred_readout r;
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, 3, 4, 5, 2);
    cfg.attention_layers = 0;
    npred_ptable_init(&t);
    CHECK(npred_readout_declare(&r, &cfg, "x.", &t) == NPRED_ERR_CONFIG &&
              strstr(npred_last_error(), "attention_layers") != NULL,
          "attention_layers 0 rejected: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
    /* one value per channel cannot be batch-normalised in training: an error, not a crash */
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, 3, 1, 1, 2);
    cfg.attention_layers = 2;
    npred_ptable_init(&t);
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "x.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, 2))) {
        npred_rng rng;
        npred_rng_seed(&rng, 1);
        npred_readout_init_params(&r, &t, &rng, NULL);
        float x[6] = {1, 2, 3, 4, 5, 6}, y[4];
        CHECK(npred_readout_forward(&r, &t, y, x, NULL, 1, 1, NULL, NULL) == NPRED_ERR_ARG &&
                  strstr(npred_last_error(), "attention.norm0") != NULL,
              "train with one value per channel: %s", npred_last_error());
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, 1, 0, NULL, NULL));
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, 2, 1, NULL, NULL));
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

/* a model from a structured config: builds, predicts finite values, trains its
 * running statistics, saves and loads identically */
static void test_model_roundtrip(void)
{
    const char *cfg = "{\"core\": {\"type\": \"Stacked2dCore\", \"input_channels\": 1, \"hidden_channels\": 4,"
                      " \"input_kern\": 3, \"hidden_kern\": 3, \"layers\": 2},"
                      " \"readout\": {\"type\": \"AttentionReadout\", \"attention_layers\": 2,"
                      " \"attention_kernel\": 3}}";
    npred_model_session ses[1] = {{"s-1-1", 5, NULL, 0, NULL, NULL}};
    npred_model *m = NULL, *m2 = NULL;
    int B = 3, H = 9, W = 11;
    if (!CHECK_OK(npred_model_create(&m, cfg, "attention config", 1, H, W, ses, 1, B, 7))) return;
    npred_ptable *t = npred_model_table(m);
    CHECK(npred_ptable_find(t, "readout.s-1-1.attention.norm0.running_var") >= 0 &&
              npred_ptable_find(t, "readout.s-1-1.attention.conv2.weight") >= 0,
          "readout entries named as the state_dict");
    float img[3 * 9 * 11], o1[15], o2[15];
    uint64_t seed = 8;
    for (int i = 0; i < B * H * W; i++) img[i] = (float)th_rand(&seed);
    CHECK_OK(npred_model_predict(m, "s-1-1", img, B, NULL, NULL, o1));
    int finite = 1;
    for (int i = 0; i < 15; i++) finite &= isfinite(o1[i]) && o1[i] > 0;
    CHECK(finite, "finite positive rates");
    /* one train forward moves the running statistics */
    npred_rng rng;
    npred_rng_seed(&rng, 2);
    CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, B, 1, &rng, NULL, o2));
    int nbt = npred_ptable_find(t, "readout.s-1-1.attention.norm0.num_batches_tracked");
    CHECK(nbt >= 0 && npred_ptable_ptr(t, nbt)[0] == 1, "num_batches_tracked 1 after a train forward");
    CHECK_OK(npred_model_predict(m, "s-1-1", img, B, NULL, NULL, o1));
    char dir[] = "/tmp/npred-test-attn-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) {
        npred_model_free(m);
        return;
    }
    char sub[300];
    snprintf(sub, sizeof sub, "%s/run", dir);
    CHECK_OK(npred_model_save(m, sub));
    if (CHECK_OK(npred_model_load(&m2, sub, B))) {
        CHECK_OK(npred_model_predict(m2, "s-1-1", img, B, NULL, NULL, o2));
        CHECK(!memcmp(o1, o2, sizeof o1), "loaded model predicts identically");
        npred_ptable *t2 = npred_model_table(m2);
        int same = t->n == t2->n && t->n_params == t2->n_params && t->n_buffers == t2->n_buffers;
        if (same) {
            same = !memcmp(t->data, t2->data, t->n_params * sizeof(float)) &&
                   !memcmp(t->bufdata, t2->bufdata, t->n_buffers * sizeof(float));
            for (int i = 0; i < t->n; i++) same &= !strcmp(t->items[i].name, t2->items[i].name);
        }
        CHECK(same, "loaded table equals the saved one (parameters and buffers)");
        char *d = npred_model_describe(m2);
        CHECK(d && strstr(d, "AttentionReadout (8 x 9 x 11 -> 5)"), "describe:\n%s", d ? d : "");
        free(d);
        npred_model_free(m2);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK(0, "cleanup");
    npred_model_free(m);
}

int main(void)
{
    RUN(test_names);
    RUN(test_init);
    RUN(test_fd_l2_k1_eval);
    RUN(test_fd_l2_k3_eval);
    RUN(test_fd_l3_k1_eval);
    RUN(test_fd_l3_k3_eval);
    RUN(test_fd_l2_k1_train);
    RUN(test_fd_l2_k3_train);
    RUN(test_fd_l3_k1_train);
    RUN(test_fd_l3_k3_train);
    RUN(test_running_stats);
    RUN(test_train_vs_eval);
    RUN(test_bad_input);
    RUN(test_model_roundtrip);
    return th_summary();
}
