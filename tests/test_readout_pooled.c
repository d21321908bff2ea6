/* PointPooled2d against the 0.3.0 fixture and finite differences; AttentionReadout
 * (no fixture: 0.3.0's bool padding fails in torch 1.13) by finite differences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "readouts/readout.h"


static void test_fixture_point_pooled(void)
{
    th_case c;
    if (!th_case_open(&c, "point_pooled")) return;
    cJSON *a = th_get(c.json, "args", NULL), *shape = th_get(a, "in_shape", NULL);
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_POOLED, cJSON_GetArrayItem(shape, 0)->valueint,
                                 cJSON_GetArrayItem(shape, 1)->valueint, cJSON_GetArrayItem(shape, 2)->valueint,
                                 (int)th_num(a, 0, "outdims", NULL));
    cfg.bias = (int)th_num(a, 1, "bias", NULL);
    cfg.pool_steps = (int)th_num(a, 1, "pool_steps", NULL);
    cfg.pool_kern = (int)th_num(a, 2, "pool_kern", NULL);
    cfg.init_range = th_num(a, 0.1, "init_range", NULL);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs), *up = th_load_f32(&c, "upstream.npy", NULL);
    int B = x ? (int)xs.shape[0] : 0;
    if (x && up && CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B)) && CHECK(th_load_table(&c, &t, "params", "", NULL) == t.n, "every table entry comes from the fixture (%d)", t.n)) {
        char repr[512];
        npred_readout_repr(&r, repr, sizeof repr);
        cJSON *want = th_get(c.json, "repr", NULL);
        CHECK(want && !strcmp(repr, want->valuestring), "repr '%s' want '%s'", repr, want ? want->valuestring : "");
        float *y = calloc((size_t)B * cfg.n, sizeof *y), *dx = calloc(xs.count, sizeof *dx);
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, B, 0, NULL, NULL));
        th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, cfg.n));
        npred_ptable_zero_grad(&t);
        npred_readout_backward(&r, &t, up, dx, NULL);
        double reg = npred_readout_regularizer(&r, &t, 1.0), loss = reg;
        double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
        CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-5, "regularizer %.8g want %.8g", reg, want_reg);
        for (size_t i = 0; i < (size_t)B * cfg.n; i++) loss += (double)y[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-5, "loss %.8g want %.8g", loss, want_loss);
        th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
        const char *keys[] = {"grid", "features", "bias"};
        for (int k = 0; k < 3; k++) {
            char rel[64];
            snprintf(rel, sizeof rel, "grads/%s.npy", keys[k]);
            int idx = npred_ptable_find(&t, keys[k]);
            if (CHECK(idx >= 0, "no table entry %s", keys[k]))
                th_compare_dims(&c, "grads", rel, npred_ptable_gradptr(&t, idx), t.items[idx].ndim, t.items[idx].shape);
        }
        free(y), free(dx);
    }
    free(x), free(up);
    npred_readout_free(&r);
    npred_ptable_free(&t);
    th_case_close(&c);
}

/* ------------------------------------------------ double references --- */

typedef struct {
    const npred_readout *r;
    const npred_ptable *t;
    const double *x, *shift, *up;
    int B;
} fd_ctx;

static const double *par(const fd_ctx *k, const double *P, int idx) { return P + k->t->items[idx].offset; }

static double bilinear(const double *x, int H, int W, double gx, double gy)
{
    double px = (gx + 1) / 2 * (W - 1), py = (gy + 1) / 2 * (H - 1);
    double x0 = floor(px), y0 = floor(py), fx = px - x0, fy = py - y0, v = 0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int xi = (int)x0 + dx, yi = (int)y0 + dy;
            if (xi < 0 || xi >= W || yi < 0 || yi >= H) continue;
            v += x[yi * W + xi] * (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
        }
    return v;
}

static double pooled_loss(const fd_ctx *k, const double *P)
{
    const npred_readout_config *c = &k->r->cfg;
    int n = c->n, C = c->c, K = c->pool_kern, m = C * (c->pool_steps + 1);
    const double *g = par(k, P, k->r->p_grid), *f = par(k, P, k->r->p_features), *bias = par(k, P, k->r->p_bias);
    double loss = 0;
    for (int b = 0; b < k->B; b++) {
        int H = c->h, W = c->w;
        double *lev = malloc(sizeof(double) * C * H * W);
        memcpy(lev, k->x + (size_t)b * C * H * W, sizeof(double) * C * H * W);
        double *y = calloc(n, sizeof *y);
        for (int l = 0; l <= c->pool_steps; l++) {
            if (l) {
                int h2 = H / K, w2 = W / K;
                double *nl = calloc((size_t)C * h2 * w2, sizeof *nl);
                for (int ch = 0; ch < C; ch++)
                    for (int i = 0; i < h2; i++)
                        for (int j = 0; j < w2; j++) {
                            double s = 0;
                            for (int di = 0; di < K; di++)
                                for (int dj = 0; dj < K; dj++) s += lev[(ch * H + i * K + di) * W + j * K + dj];
                            nl[(ch * h2 + i) * w2 + j] = s / (K * K);
                        }
                free(lev);
                lev = nl, H = h2, W = w2;
            }
            for (int o = 0; o < n; o++)
                for (int ch = 0; ch < C; ch++)
                    y[o] += f[(l * C + ch) * n + o] * bilinear(lev + (size_t)ch * H * W, H, W,
                                                                 g[2 * o] + k->shift[2 * b], g[2 * o + 1] + k->shift[2 * b + 1]);
        }
        for (int o = 0; o < n; o++) loss += (y[o] + bias[o]) * k->up[b * n + o];
        free(lev), free(y);
    }
    for (int i = 0; i < m * n; i++) loss += c->feature_reg_weight * fabs(f[i]);
    return loss;
}

static double attention_loss(const fd_ctx *k, const double *P)
{
    const npred_readout_config *c = &k->r->cfg;
    int n = c->n, C = c->c, H = c->h, W = c->w, hw = H * W, K = c->attention_kernel, pad = K > 1;
    const double *Wc = par(k, P, k->r->p_att_w), *cb = par(k, P, k->r->p_att_b), *f = par(k, P, k->r->p_features);
    const double *bias = par(k, P, k->r->p_bias);
    double loss = 0, *a = malloc(sizeof(double) * hw);
    for (int b = 0; b < k->B; b++) {
        const double *xb = k->x + (size_t)b * C * hw;
        for (int o = 0; o < n; o++) {
            double mx = -1e300, s = 0;
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double v = cb[o];
                    for (int ch = 0; ch < C; ch++)
                        for (int di = 0; di < K; di++)
                            for (int dj = 0; dj < K; dj++) {
                                int si = i + di - pad, sj = j + dj - pad;
                                if (si >= 0 && si < H && sj >= 0 && sj < W)
                                    v += Wc[((o * C + ch) * K + di) * K + dj] * xb[(ch * H + si) * W + sj];
                            }
                    a[i * W + j] = v;
                    mx = v > mx ? v : mx;
                }
            for (int i = 0; i < hw; i++) s += (a[i] = exp(a[i] - mx));
            double y = bias[o];
            for (int ch = 0; ch < C; ch++) {
                double tt = 0;
                for (int i = 0; i < hw; i++) tt += a[i] / s * xb[ch * hw + i];
                y += tt * f[o * C + ch];
            }
            loss += y * k->up[b * n + o];
        }
    }
    for (int i = 0; i < n * C; i++) loss += c->feature_reg_weight * fabs(f[i]);
    free(a);
    return loss;
}

static void fd_check(const char *what, npred_readout *r, npred_ptable *t, int B, int use_shift, uint64_t seed,
                     double (*ref)(const fd_ctx *, const double *))
{
    const npred_readout_config *c = &r->cfg;
    size_t nx = (size_t)B * c->c * c->h * c->w;
    float *xf = malloc(nx * sizeof *xf), *sf = malloc(2 * B * sizeof *sf), *y = malloc((size_t)B * c->n * sizeof *y);
    float *upf = malloc((size_t)B * c->n * sizeof *upf), *dx = calloc(nx, sizeof *dx), *ds = calloc(2 * B, sizeof *ds);
    double *x = malloc(nx * sizeof *x), *sh = calloc(2 * B, sizeof *sh), *up = malloc((size_t)B * c->n * sizeof *up);
    for (size_t i = 0; i < nx; i++) x[i] = xf[i] = (float)th_rand(&seed);
    for (int i = 0; i < 2 * B; i++) sf[i] = (float)(0.2 * th_rand(&seed)), sh[i] = use_shift ? sf[i] : 0;
    for (int i = 0; i < B * c->n; i++) up[i] = upf[i] = (float)th_rand(&seed);
    double *P = malloc(t->n_params * sizeof *P);
    for (size_t i = 0; i < t->n_params; i++) P[i] = t->data[i];
    npred_ptable_zero_grad(t);
    CHECK_OK(npred_readout_forward(r, t, y, xf, use_shift ? sf : NULL, B, 1, NULL, NULL));
    npred_readout_backward(r, t, upf, dx, use_shift ? ds : NULL);
    npred_readout_regularizer(r, t, 1.0);
    fd_ctx k = {r, t, x, sh, up, B};
    const double h = 1e-5;
    for (int e = 0; e < t->n; e++) {
        const npred_param *p = &t->items[e];
        if (p->is_buffer) continue;
        double *num = malloc(p->count * sizeof *num), *ana = malloc(p->count * sizeof *ana);
        for (size_t i = 0; i < p->count; i++) {
            double keep = P[p->offset + i];
            P[p->offset + i] = keep + h;
            double lp = ref(&k, P);
            P[p->offset + i] = keep - h;
            double lm = ref(&k, P);
            P[p->offset + i] = keep;
            num[i] = (lp - lm) / (2 * h);
            ana[i] = t->grad[p->offset + i];
        }
        char w[256];
        snprintf(w, sizeof w, "fd %s: %s", what, p->name);
        th_close_f64(w, ana, num, p->count, 2e-3, 2e-4);
        free(num), free(ana);
    }
    struct { double *v; size_t n; const float *g; const char *name; } in[2] = {{x, nx, dx, "input"},
                                                                              {sh, (size_t)2 * B, ds, "shift"}};
    for (int gi = 0; gi < (use_shift ? 2 : 1); gi++) {
        double *num = malloc(in[gi].n * sizeof *num), *ana = malloc(in[gi].n * sizeof *ana);
        for (size_t i = 0; i < in[gi].n; i++) {
            double keep = in[gi].v[i];
            in[gi].v[i] = keep + h;
            double lp = ref(&k, P);
            in[gi].v[i] = keep - h;
            double lm = ref(&k, P);
            in[gi].v[i] = keep;
            num[i] = (lp - lm) / (2 * h);
            ana[i] = in[gi].g[i];
        }
        char w[256];
        snprintf(w, sizeof w, "fd %s: %s", what, in[gi].name);
        th_close_f64(w, ana, num, in[gi].n, 2e-3, 2e-4);
        free(num), free(ana);
    }
    free(xf), free(sf), free(y), free(upf), free(dx), free(ds), free(x), free(sh), free(up), free(P);
}

static void fd_pooled(int steps, int kern, int h, int w)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_POOLED, 3, h, w, 4);
    cfg.pool_steps = steps;
    cfg.pool_kern = kern;
    cfg.feature_reg_weight = 0.6;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    uint64_t seed = 500 + (uint64_t)steps;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.p.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, 2))) {
        for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)th_rand(&seed);
        float *g = npred_ptable_ptr(&t, r.p_grid);
        for (int i = 0; i < 8; i++) g[i] *= 0.7f;
        char what[64];
        snprintf(what, sizeof what, "PointPooled2d steps %d kern %d", steps, kern);
        fd_check(what, &r, &t, 2, 1, seed, pooled_loss);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_fd_pooled_2x2(void) { fd_pooled(2, 2, 9, 11); }
static void test_fd_pooled_3x3(void) { fd_pooled(1, 3, 7, 10); }
static void test_fd_pooled_none(void) { fd_pooled(0, 2, 5, 6); }

static void fd_attention(int kern)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, 3, 5, 6, 4);
    cfg.attention_kernel = kern;
    cfg.feature_reg_weight = 0.5;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    uint64_t seed = 900 + (uint64_t)kern;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.q.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, 3))) {
        char name[64];
        snprintf(name, sizeof name, "readout.q.attention.conv1.weight");
        CHECK(npred_ptable_find(&t, name) >= 0 && npred_ptable_find(&t, "readout.q.features") >= 0, "names");
        char repr[128];
        npred_readout_repr(&r, repr, sizeof repr);
        CHECK(!strcmp(repr, "AttentionReadout (3 x 5 x 6 -> 4)"), "repr %s", repr);
        npred_rng rng;
        npred_rng_seed(&rng, 1);
        npred_readout_init_params(&r, &t, &rng, NULL);
        CHECK(npred_ptable_ptr(&t, r.p_att_b)[0] == 0 && fabsf(npred_ptable_ptr(&t, r.p_features)[0]) < 0.01f,
              "init");
        for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)th_rand(&seed);
        char what[64];
        snprintf(what, sizeof what, "AttentionReadout k%d", kern);
        fd_check(what, &r, &t, 3, 0, seed, attention_loss);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_fd_attention_k1(void) { fd_attention(1); }
static void test_fd_attention_k3(void) { fd_attention(3); }

static void test_bad_config(void)
{
    npred_readout_config cfg;
    npred_ptable t;
    npred_readout r;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_POOLED, 4, 6, 8, 5);
    cfg.init_range = 1.5;
    npred_ptable_init(&t);
    CHECK(npred_readout_declare(&r, &cfg, "x.", &t) == NPRED_ERR_CONFIG, "init_range rejected");
    CHECK(strstr(npred_last_error(), "init_range") != NULL, "message: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
    cfg.init_range = 0.5;
    cfg.pool_steps = 3; /* 6x8 -> 3x4 -> 1x2 -> 0x1 */
    npred_ptable_init(&t);
    CHECK(npred_readout_declare(&r, &cfg, "x.", &t) == NPRED_ERR_CONFIG, "over-pooling rejected");
    CHECK(strstr(npred_last_error(), "pool_steps") != NULL, "message: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, 4, 6, 8, 5);
    cfg.attention_kernel = 5;
    npred_ptable_init(&t);
    CHECK(npred_readout_declare(&r, &cfg, "x.", &t) == NPRED_ERR_CONFIG, "kernel 5 rejected");
    CHECK(strstr(npred_last_error(), "attention_kernel") != NULL, "message: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

int main(void)
{
    RUN(test_fixture_point_pooled);
    RUN(test_fd_pooled_2x2);
    RUN(test_fd_pooled_3x3);
    RUN(test_fd_pooled_none);
    RUN(test_fd_attention_k1);
    RUN(test_fd_attention_k3);
    RUN(test_bad_config);
    return th_summary();
}
