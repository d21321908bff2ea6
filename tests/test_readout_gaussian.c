/* FullGaussian2d and Gaussian2d against the 0.3.0 fixtures, finite differences
 * (incl. the grid-mean predictor, shift, and features / grid shared across two
 * readouts) and config errors. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "readouts/normals.h"
#include "readouts/readout.h"


/* compare every table entry listed in files.<group> with its file */
static void compare_group(th_case *c, npred_ptable *t, const char *group, const char *kind, int grads)
{
    cJSON *ps = th_get(c->json, "files", group, NULL);
    if (!CHECK(ps != NULL, "%s: no files.%s", c->name, group)) return;
    cJSON *it;
    int compared = 0;
    cJSON_ArrayForEach(it, ps)
    {
        if (!strcmp(it->string, "input") || !strcmp(it->string, "shift")) continue;
        compared++;
        int idx = npred_ptable_find(t, it->string);
        if (!CHECK(idx >= 0, "%s: no entry %s", c->name, it->string)) continue;
        const float *p = grads ? npred_ptable_gradptr(t, idx) : npred_ptable_ptr(t, idx);
        if (!CHECK(p != NULL, "%s: %s has no gradient", c->name, it->string)) continue;
        th_compare_dims(c, kind, it->valuestring, p, t->items[idx].ndim, t->items[idx].shape);
    }
    CHECK(compared > 0, "%s: files.%s lists no table entry", c->name, group);
}

static void run_case(const char *name, npred_readout_type type)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *a = th_get(c.json, "args", NULL);
    cJSON *shape = th_get(a, "in_shape", NULL);
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, type, cJSON_GetArrayItem(shape, 0)->valueint,
                                 cJSON_GetArrayItem(shape, 1)->valueint, cJSON_GetArrayItem(shape, 2)->valueint,
                                 (int)th_num(a, 0, "outdims", NULL));
    cfg.bias = (int)th_num(a, 1, "bias", NULL);
    cfg.init_mu_range = th_num(a, cfg.init_mu_range, "init_mu_range", NULL);
    cfg.init_sigma = th_num(a, cfg.init_sigma, "init_sigma", NULL);
    cfg.init_sigma_range = th_num(a, cfg.init_sigma_range, "init_sigma_range", NULL);
    cfg.feature_reg_weight = th_num(a, th_num(a, 1, "feature_reg_weight", NULL), "gamma_readout", NULL);
    cJSON *gt = th_get(a, "gauss_type", NULL);
    if (gt) cfg.gauss_type = !strcmp(gt->valuestring, "full") ? NPRED_GAUSS_FULL
                             : !strcmp(gt->valuestring, "uncorrelated") ? NPRED_GAUSS_UNCORRELATED
                                                                         : NPRED_GAUSS_ISOTROPIC;
    cJSON *gmp = th_get(a, "grid_mean_predictor", NULL);
    if (gmp) {
        cfg.predicted_grid = 1;
        cfg.gmp_hidden_layers = (int)th_num(gmp, 0, "hidden_layers", NULL);
        cfg.gmp_hidden_features = (int)th_num(gmp, 20, "hidden_features", NULL);
        cfg.gmp_final_tanh = (int)th_num(gmp, 0, "final_tanh", NULL);
    }
    int train = !strcmp(th_get(c.json, "mode", NULL)->valuestring, "train");
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    npred_array xs, ss;
    float *x = th_load_f32(&c, "input.npy", &xs);
    float *shift = th_get(c.json, "files", "inputs", "shift", NULL) ? th_load_f32(&c, "shift.npy", &ss) : NULL;
    float *noise = th_get(c.json, "files", "noise", NULL) ? th_load_f32(&c, "noise.npy", NULL) : NULL;
    int B = x ? (int)xs.shape[0] : 0;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B)) && th_load_table(&c, &t, "params", "", NULL) == cJSON_GetArraySize(th_get(c.json, "files", "params", NULL)) && x) {
        char repr[1024];
        npred_readout_repr(&r, repr, sizeof repr);
        cJSON *want = th_get(c.json, "repr", NULL);
        CHECK(want && !strcmp(repr, want->valuestring), "repr '%s' want '%s'", repr, want ? want->valuestring : "");
        if (gmp) { /* the buffer recomputed from the raw coordinates */
            npred_array gs;
            double *raw = th_load_f64(&c, "source_grid_raw.npy", &gs);
            int is = npred_ptable_find(&t, "source_grid");
            if (raw && CHECK(is >= 0, "no source_grid entry") && CHECK(gs.count == (size_t)cfg.n * 2, "source_grid_raw has %zu values", gs.count) &&
                CHECK_OK(npred_readout_set_source_grid(&r, &t, raw)))
                th_compare_dims(&c, "forward", "params/source_grid.npy", npred_ptable_ptr(&t, is), t.items[is].ndim,
                                t.items[is].shape);
            free(raw);
        }
        float *y = calloc((size_t)B * cfg.n, sizeof *y);
        CHECK_OK(npred_readout_forward(&r, &t, y, x, shift, B, train, NULL, noise));
        th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, cfg.n));
        if (th_get(c.json, "files", "grid_sampled", NULL)) {
            float *g = calloc((size_t)B * cfg.n * 2, sizeof *g);
            npred_gaussian_sampled_grid(&r, g);
            th_compare_dims(&c, "forward", "grid_sampled.npy", g, TH_DIMS(B, cfg.n, 1, 2));
            free(g);
        }
        if (th_get(c.json, "files", "params_after", NULL)) compare_group(&c, &t, "params_after", "forward", 0);
        if (th_get(c.json, "files", "buffers_after", NULL)) compare_group(&c, &t, "buffers_after", "forward", 0);
        float *up = th_load_f32(&c, "upstream.npy", NULL);
        float *dx = calloc(xs.count, sizeof *dx), *dshift = calloc((size_t)B * 2, sizeof *dshift);
        npred_ptable_zero_grad(&t);
        if (up) {
            npred_readout_backward(&r, &t, up, dx, shift ? dshift : NULL);
            double reg = npred_readout_regularizer(&r, &t, 1.0);
            double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
            CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-5, "regularizer %.8g want %.8g", reg, want_reg);
            double loss = reg;
            for (size_t i = 0; i < (size_t)B * cfg.n; i++) loss += (double)y[i] * up[i];
            double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
            CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-5, "loss %.8g want %.8g", loss, want_loss);
            th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
            if (shift) th_compare_dims(&c, "grads", "grads/shift.npy", dshift, TH_DIMS(B, 2));
            compare_group(&c, &t, "grads", "grads", 1);
        }
        free(y), free(up), free(dx), free(dshift);
    }
    free(x), free(shift), free(noise);
    npred_readout_free(&r);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_fixture_full_eval(void) { run_case("gaussian_full_eval", NPRED_READOUT_FULL_GAUSSIAN2D); }
static void test_fixture_full_train(void) { run_case("gaussian_full_train", NPRED_READOUT_FULL_GAUSSIAN2D); }
static void test_fixture_isotropic_train(void) { run_case("gaussian_isotropic_train", NPRED_READOUT_FULL_GAUSSIAN2D); }
static void test_fixture_uncorrelated_train(void)
{
    run_case("gaussian_uncorrelated_train", NPRED_READOUT_FULL_GAUSSIAN2D);
}
static void test_fixture_shift_eval(void) { run_case("gaussian_shift_eval", NPRED_READOUT_FULL_GAUSSIAN2D); }
static void test_fixture_predicted_eval(void)
{
    run_case("gaussian_predicted_grid_eval", NPRED_READOUT_FULL_GAUSSIAN2D);
}
static void test_fixture_predicted_train(void)
{
    run_case("gaussian_predicted_grid_train", NPRED_READOUT_FULL_GAUSSIAN2D);
}
static void test_fixture_legacy(void) { run_case("gaussian2d_legacy", NPRED_READOUT_GAUSSIAN2D); }

/* ------------------------------------------------ finite differences --- */

/* Double-precision reference of a FullGaussian2d/Gaussian2d readout that reads its
 * parameters from P (a double shadow of the table's data) and its buffers from t. */
typedef struct {
    const npred_readout *r;
    const npred_ptable *t;
    const double *x;     /* (B, c, h, w) */
    const double *shift; /* (B, 2) or NULL */
    const double *z;     /* (B, n, 2) or NULL (eval) */
    const double *up;    /* (B, n) */
    int B;
} fd_readout;

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

static const double *par(const fd_readout *k, const double *P, int idx) { return P + k->t->items[idx].offset; }

static double ref_loss(const fd_readout *k, const double *P)
{
    const npred_readout *r = k->r;
    const npred_readout_config *c = &r->cfg;
    int n = c->n, C = c->c, H = c->h, W = c->w;
    int legacy = c->type == NPRED_READOUT_GAUSSIAN2D;
    double *mu = malloc(sizeof(double) * 2 * n), *F = malloc(sizeof(double) * n * C);
    for (int o = 0; o < n; o++) {
        if (r->n_mlp) {
            double a[64], b2[64];
            const float *sg = npred_ptable_ptr(k->t, r->p_source_grid);
            int d = r->mlp_dim[0];
            for (int j = 0; j < d; j++) a[j] = sg[o * d + j];
            for (int i = 0; i < r->n_mlp; i++) {
                const double *Wt = par(k, P, r->p_mlp_w[i]), *bb = par(k, P, r->p_mlp_b[i]);
                int di = r->mlp_dim[i], dout = r->mlp_dim[i + 1];
                for (int j = 0; j < dout; j++) {
                    double s = bb[j];
                    for (int q = 0; q < di; q++) s += Wt[j * di + q] * a[q];
                    b2[j] = i < r->n_mlp - 1 ? (s > 0 ? s : expm1(s)) : c->gmp_final_tanh ? tanh(s) : s;
                }
                memcpy(a, b2, sizeof(double) * dout);
            }
            mu[2 * o] = a[0], mu[2 * o + 1] = a[1];
        } else {
            const double *m = par(k, P, r->p_mu);
            int u = c->shared_grid ? (int)r->match_idx[o] : o;
            if (r->p_mt_w >= 0) {
                const double *Wt = par(k, P, r->p_mt_w), *bb = par(k, P, r->p_mt_b);
                for (int q = 0; q < 2; q++) mu[2 * o + q] = bb[q] + Wt[2 * q] * m[2 * u] + Wt[2 * q + 1] * m[2 * u + 1];
            } else {
                mu[2 * o] = m[2 * u], mu[2 * o + 1] = m[2 * u + 1];
            }
        }
        const double *f = par(k, P, r->p_features);
        for (int ch = 0; ch < C; ch++)
            F[o * C + ch] = c->shared_features ? par(k, P, r->p_scales)[o] * f[ch * c->n_unique + r->match_idx[o]]
                                               : f[ch * n + o];
    }
    const double *sig = par(k, P, r->p_sigma), *bias = r->p_bias >= 0 ? par(k, P, r->p_bias) : NULL;
    npred_gauss_type gt = legacy ? NPRED_GAUSS_UNCORRELATED : c->gauss_type;
    double loss = 0;
    for (int b = 0; b < k->B; b++)
        for (int o = 0; o < n; o++) {
            int bz = c->batch_sample ? b : 0; /* batch_sample=0: one draw for the whole batch */
            double z0 = k->z ? k->z[(bz * n + o) * 2] : 0, z1 = k->z ? k->z[(bz * n + o) * 2 + 1] : 0, g[2];
            if (gt == NPRED_GAUSS_FULL) {
                g[0] = mu[2 * o] + sig[4 * o] * z0 + sig[4 * o + 1] * z1;
                g[1] = mu[2 * o + 1] + sig[4 * o + 2] * z0 + sig[4 * o + 3] * z1;
            } else if (gt == NPRED_GAUSS_UNCORRELATED) {
                g[0] = mu[2 * o] + sig[2 * o] * z0;
                g[1] = mu[2 * o + 1] + sig[2 * o + 1] * z1;
            } else {
                g[0] = mu[2 * o] + sig[o] * z0;
                g[1] = mu[2 * o + 1] + sig[o] * z1;
            }
            for (int q = 0; q < 2; q++) {
                g[q] = g[q] < -1 ? -1 : g[q] > 1 ? 1 : g[q];
                if (k->shift) g[q] += k->shift[2 * b + q];
            }
            double y = bias ? bias[o] : 0;
            for (int ch = 0; ch < C; ch++)
                y += F[o * C + ch] * bilinear(k->x + ((size_t)b * C + ch) * H * W, H, W, g[0], g[1]);
            loss += y * k->up[b * n + o];
        }
    if (r->owns_features)
        for (int i = 0; i < n * C; i++) loss += c->feature_reg_weight * fabs(F[i]);
    free(mu), free(F);
    return loss;
}

/* Checks d(sum_k loss_k)/d(every table parameter, x, shift) for readouts rs[0..nr) sharing one table. */
static void fd_check(const char *what, npred_readout *rs, int nr, npred_ptable *t, int B, int train, int use_shift,
                     uint64_t seed)
{
    const npred_readout_config *c0 = &rs[0].cfg;
    size_t nx = (size_t)B * c0->c * c0->h * c0->w;
    float *xf = malloc(nx * sizeof *xf), *sf = malloc(2 * B * sizeof *sf);
    double *x = malloc(nx * sizeof *x), *sh = malloc(2 * B * sizeof *sh);
    for (size_t i = 0; i < nx; i++) x[i] = xf[i] = (float)th_rand(&seed);
    for (int i = 0; i < 2 * B; i++) sh[i] = sf[i] = (float)(0.2 * th_rand(&seed));
    double *P = malloc(t->n_params * sizeof *P);
    for (size_t i = 0; i < t->n_params; i++) P[i] = t->data[i];
    fd_readout k[4];
    float *dx = calloc(nx, sizeof *dx), *ds = calloc(2 * B, sizeof *ds);
    npred_ptable_zero_grad(t);
    double *zs[4] = {0};
    for (int q = 0; q < nr; q++) {
        int n = rs[q].cfg.n;
        float *zf = malloc((size_t)B * n * 2 * sizeof *zf), *y = malloc((size_t)B * n * sizeof *y),
              *upf = malloc((size_t)B * n * sizeof *upf);
        double *up = malloc((size_t)B * n * sizeof *up);
        zs[q] = malloc((size_t)B * n * 2 * sizeof(double));
        for (int i = 0; i < B * n * 2; i++) zs[q][i] = zf[i] = (float)(1.5 * th_rand(&seed));
        for (int i = 0; i < B * n; i++) up[i] = upf[i] = (float)th_rand(&seed);
        CHECK_OK(npred_readout_forward(&rs[q], t, y, xf, use_shift ? sf : NULL, B, train, NULL, zf));
        npred_readout_backward(&rs[q], t, upf, dx, use_shift ? ds : NULL);
        npred_readout_regularizer(&rs[q], t, 1.0);
        k[q] = (fd_readout){&rs[q], t, x, use_shift ? sh : NULL, train ? zs[q] : NULL, up, B};
        free(zf), free(y), free(upf);
    }
    const double h = 1e-5;
#define TOTAL(acc)                                                                                                    \
    do {                                                                                                              \
        acc = 0;                                                                                                      \
        for (int q = 0; q < nr; q++) acc += ref_loss(&k[q], P);                                                       \
    } while (0)
    for (int e = 0; e < t->n; e++) {
        const npred_param *p = &t->items[e];
        if (p->is_buffer || p->alias_of >= 0) continue;
        double *num = malloc(p->count * sizeof *num), *ana = malloc(p->count * sizeof *ana);
        for (size_t i = 0; i < p->count; i++) {
            double keep = P[p->offset + i], lp, lm;
            P[p->offset + i] = keep + h;
            TOTAL(lp);
            P[p->offset + i] = keep - h;
            TOTAL(lm);
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
            double keep = in[gi].v[i], lp, lm;
            in[gi].v[i] = keep + h;
            TOTAL(lp);
            in[gi].v[i] = keep - h;
            TOTAL(lm);
            in[gi].v[i] = keep;
            num[i] = (lp - lm) / (2 * h);
            ana[i] = in[gi].g[i];
        }
        char w[256];
        snprintf(w, sizeof w, "fd %s: %s", what, in[gi].name);
        th_close_f64(w, ana, num, in[gi].n, 2e-3, 2e-4);
        free(num), free(ana);
    }
#undef TOTAL
    for (int q = 0; q < nr; q++) free((void *)k[q].up), free(zs[q]);
    free(xf), free(sf), free(x), free(sh), free(P), free(dx), free(ds);
}

/* random parameters: positions well inside (-1, 1), everything else in [-1, 1) */
static void randomize(npred_ptable *t, npred_readout *rs, int nr, uint64_t *seed)
{
    for (size_t i = 0; i < t->n_params; i++) t->data[i] = (float)th_rand(seed);
    for (int q = 0; q < nr; q++) {
        if (rs[q].p_mu >= 0 && rs[q].owns_grid) {
            float *m = npred_ptable_ptr(t, rs[q].p_mu);
            for (size_t i = 0; i < t->items[rs[q].p_mu].count; i++) m[i] *= 0.6f;
        }
        if (rs[q].p_sigma >= 0) {
            float *s = npred_ptable_ptr(t, rs[q].p_sigma);
            for (size_t i = 0; i < t->items[rs[q].p_sigma].count; i++) /* Gaussian2d clamps sigma >= 0 in place */
                s[i] = rs[q].cfg.type == NPRED_READOUT_GAUSSIAN2D ? 0.25f * fabsf(s[i]) : 0.25f * s[i];
        }
        if (rs[q].p_mt_w >= 0) { /* a transform near the identity keeps positions inside */
            float *w = npred_ptable_ptr(t, rs[q].p_mt_w), *b = npred_ptable_ptr(t, rs[q].p_mt_b);
            w[0] = 0.9f, w[1] = 0.15f, w[2] = -0.1f, w[3] = 0.8f, b[0] = 0.05f, b[1] = -0.1f;
        }
    }
}

/* One readout of n neurons (3 channels, 5 x 7) checked on B images; predicted: 1 a grid
 * predictor of two hidden layers of the given width (its weights scaled by wscale), 2
 * one draw per batch. The forward makes the feature rows from 4 images on, and the
 * backward reuses them. */
static void fd_run(const char *what, npred_readout_type type, npred_gauss_type gt, int train, int use_shift,
                   int predicted, int n, int B, int hidden, float wscale, uint64_t seed)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, type, 3, 5, 7, n);
    cfg.batch_sample = predicted != 2;
    cfg.gauss_type = gt;
    cfg.feature_reg_weight = 0.7;
    if (predicted == 1) {
        cfg.predicted_grid = 1;
        cfg.gmp_input_dimensions = 3;
        cfg.gmp_hidden_layers = 2;
        cfg.gmp_hidden_features = hidden;
        cfg.gmp_final_tanh = 1;
    }
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.a.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        randomize(&t, &r, 1, &seed);
        if (predicted == 1) {
            for (int i = 0; i < r.n_mlp; i++) {
                float *w = npred_ptable_ptr(&t, r.p_mlp_w[i]);
                for (size_t e = 0; e < t.items[r.p_mlp_w[i]].count; e++) w[e] *= wscale;
            }
            double *g = malloc(sizeof(double) * 3 * (size_t)n);
            for (int i = 0; i < 3 * n; i++) g[i] = 100 * th_rand(&seed);
            CHECK_OK(npred_readout_set_source_grid(&r, &t, g));
            free(g);
        }
        fd_check(what, &r, 1, &t, B, train, use_shift, seed);
        CHECK(r.rows_made == (B >= 4), "%s: feature rows made %d on %d images", what, r.rows_made, B);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void fd_single(const char *what, npred_readout_type type, npred_gauss_type gt, int train, int use_shift,
                      int predicted)
{
    uint64_t seed = 1234 + (uint64_t)gt * 7 + (uint64_t)train * 3 + (uint64_t)predicted;
    fd_run(what, type, gt, train, use_shift, predicted, 4, 3, 5, 1.0f, seed);
}

static void test_fd_full_train_shift(void) { fd_single("full", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_FULL, 1, 1, 0); }
static void test_fd_uncorrelated_train(void)
{
    fd_single("uncorrelated", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_UNCORRELATED, 1, 0, 0);
}
static void test_fd_isotropic_train(void)
{
    fd_single("isotropic", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_ISOTROPIC, 1, 1, 0);
}
static void test_fd_full_eval(void) { fd_single("full eval", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_FULL, 0, 1, 0); }
static void test_fd_predicted_train(void)
{
    fd_single("predicted", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_FULL, 1, 1, 1);
}
static void test_fd_one_draw_per_batch(void)
{
    fd_single("batch_sample=0", NPRED_READOUT_FULL_GAUSSIAN2D, NPRED_GAUSS_FULL, 1, 1, 2);
}
/* A batch of 5 (from 4 images on the forward makes the feature rows and the backward
 * reuses them), 11 neurons (the positions: a vector of eight neurons and three after
 * it; the sigma / mu sums: two vectors of four and three after them) and a grid predictor of two 64-wide hidden layers (its 64 x 64 weight
 * gradient in tiles of 41 outputs and 48 inputs), every gauss_type, on 1 and 2 threads:
 * gradients against finite differences of the double-precision reference. */
static void test_fd_batch_rows(void)
{
    static const npred_gauss_type gts[3] = {NPRED_GAUSS_FULL, NPRED_GAUSS_UNCORRELATED, NPRED_GAUSS_ISOTROPIC};
    const int keep = omp_get_max_threads();
    for (int g = 0; g < 3; g++)
        for (int T = 1; T <= 2; T++) {
            omp_set_num_threads(T);
            char what[64];
            snprintf(what, sizeof what, "batch 5, gauss_type %d, %d threads", g, T);
            /* small predictor weights keep the 64-wide layers' outputs inside the map */
            fd_run(what, NPRED_READOUT_FULL_GAUSSIAN2D, gts[g], 1, 1, 1, 11, 5, 64, 0.15f, 4321 + (uint64_t)g);
        }
    omp_set_num_threads(keep);
}

/* The full Gaussian's positions before the clamp (eight neurons at a time where
 * AVX-512 is built, the rest one by one), through npred_gaussian_sampled_grid, bit
 * for bit against the float definition (s0 z0 + s1 z1) + mu0, (s2 z0 + s3 z1) + mu1:
 * 21 neurons, 3 images, positions inside, beyond both borders, on them, -0 and NaN.
 * (The clamped and shifted positions the sampler reads: test_fd_batch_rows.) */
static void test_positions_bits(void)
{
    const int n = 21, B = 3;
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, 3, 5, 7, n);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    uint64_t seed = 99;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.a.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        float *mu = npred_ptable_ptr(&t, r.p_mu), *sig = npred_ptable_ptr(&t, r.p_sigma);
        for (int i = 0; i < 2 * n; i++) mu[i] = (float)(0.9 * th_rand(&seed));
        for (int i = 0; i < 4 * n; i++) sig[i] = (float)(1.5 * th_rand(&seed));
        float z[2 * 21 * 3], x[3 * 3 * 5 * 7], y[3 * 21], sh[2 * 3] = {0.25f, -0.5f, 0, 0, -0.0f, 1e-3f};
        for (int i = 0; i < 2 * n * B; i++) z[i] = (float)th_rand(&seed);
        for (int i = 0; i < 3 * 3 * 5 * 7; i++) x[i] = (float)th_rand(&seed);
        for (int k = 0; k < 4; k++) sig[4 * 2 + k] = sig[4 * 12 + k] = 0.0f; /* g = mu: -0, exactly +-1 */
        mu[2 * 2] = -0.0f, mu[2 * 2 + 1] = 1.0f, mu[2 * 12] = -1.0f, mu[2 * 12 + 1] = -0.0f;
        sig[4 * 5 + 1] = NAN, sig[4 * 17 + 2] = NAN;
        for (int with_shift = 0; with_shift < 2; with_shift++) {
            if (!CHECK_OK(npred_readout_forward(&r, &t, y, x, with_shift ? sh : NULL, B, 1, NULL, z))) break;
            float g[2 * 21 * 3];
            npred_gaussian_sampled_grid(&r, g);
            int bad = 0;
            for (int b = 0; b < B; b++)
                for (int o = 0; o < n; o++) {
                    const float *s = sig + 4 * o, *zz = z + 2 * ((size_t)b * n + o);
                    const float w[2] = {(s[0] * zz[0] + s[1] * zz[1]) + mu[2 * o],
                                        (s[2] * zz[0] + s[3] * zz[1]) + mu[2 * o + 1]};
                    for (int k = 0; k < 2; k++) {
                        const float c = w[k] < -1.0f ? -1.0f : w[k] > 1.0f ? 1.0f : w[k];
                        const float got = g[2 * ((size_t)b * n + o) + k];
                        if (isnan(c) ? !isnan(got) : memcmp(&c, &got, sizeof c)) bad++;
                    }
                }
            CHECK(bad == 0, "shift %d: %d sampled positions differ from the float definition", with_shift, bad);
        }
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_fd_legacy(void) { fd_single("Gaussian2d", NPRED_READOUT_GAUSSIAN2D, NPRED_GAUSS_FULL, 1, 1, 0); }

/* two sessions: the second borrows the first's features and grid through match ids */
static void test_fd_shared(void)
{
    int64_t ids_a[5] = {7, 3, 9, 3, 1}, ids_b[6] = {9, 1, 1, 3, 7, 9};
    npred_readout_config ca, cb;
    npred_readout_config_default(&ca, NPRED_READOUT_FULL_GAUSSIAN2D, 3, 5, 7, 5);
    npred_readout_config_default(&cb, NPRED_READOUT_FULL_GAUSSIAN2D, 3, 5, 7, 6);
    ca.shared_features = ca.shared_grid = cb.shared_features = cb.shared_grid = 1;
    ca.match_ids = ids_a;
    cb.match_ids = ids_b;
    ca.feature_reg_weight = cb.feature_reg_weight = 0.4;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout rs[2];
    uint64_t seed = 99;
    if (!CHECK_OK(npred_readout_declare(&rs[0], &ca, "readout.a.", &t))) goto out;
    cb.features_from = cb.grid_from = &rs[0];
    if (CHECK_OK(npred_readout_declare(&rs[1], &cb, "readout.b.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&rs[0], &t, 2)) && CHECK_OK(npred_readout_setup(&rs[1], &t, 2))) {
        CHECK(rs[0].cfg.n_unique == 4 && rs[1].cfg.n_unique == 4, "unique ids %d %d", rs[0].cfg.n_unique,
              rs[1].cfg.n_unique);
        CHECK(rs[1].match_idx[0] == 3 && rs[1].match_idx[1] == 0 && rs[1].match_idx[3] == 1, "inverse index");
        int fa = npred_ptable_find(&t, "readout.a._features"), fb = npred_ptable_find(&t, "readout.b._features");
        int ma = npred_ptable_find(&t, "readout.a._mu"), mb = npred_ptable_find(&t, "readout.b._mu");
        CHECK(fa >= 0 && fb >= 0 && t.items[fb].alias_of == fa, "features alias");
        CHECK(ma >= 0 && mb >= 0 && t.items[mb].alias_of == ma, "grid alias");
        CHECK(npred_ptable_find(&t, "readout.b.mu_transform.weight") >= 0 &&
                  npred_ptable_find(&t, "readout.b.feature_sharing_index") >= 0 &&
                  npred_ptable_find(&t, "readout.b.grid_sharing_index") >= 0 &&
                  npred_ptable_find(&t, "readout.a.mu_transform.weight") < 0,
              "sharing entries");
        char repr[512];
        npred_readout_repr(&rs[0], repr, sizeof repr);
        CHECK(!strcmp(repr, "full FullGaussian2d (3 x 5 x 7 -> 5) with bias, with original features, with original "
                             "grid"),
              "repr a: %s", repr);
        npred_readout_repr(&rs[1], repr, sizeof repr);
        CHECK(!strcmp(repr, "full FullGaussian2d (3 x 5 x 7 -> 6) with bias, with shared features, with shared grid"
                             "  -> Linear(in_features=2, out_features=2, bias=True)\n"),
              "repr b: %s", repr);
        npred_rng rng;
        npred_rng_seed(&rng, 5);
        npred_readout_init_params(&rs[0], &t, &rng, NULL);
        npred_readout_init_params(&rs[1], &t, &rng, NULL);
        const float *w = npred_ptable_ptr(&t, npred_ptable_find(&t, "readout.b.mu_transform.weight"));
        CHECK(w[0] == 1 && w[1] == 0 && w[2] == 0 && w[3] == 1, "identity transform");
        const float *fsi = npred_ptable_ptr(&t, npred_ptable_find(&t, "readout.b.feature_sharing_index"));
        CHECK(fsi[0] == 3 && fsi[5] == 3 && fsi[1] == 0, "feature_sharing_index buffer");
        CHECK(npred_readout_regularizer(&rs[1], &t, 0) == 0, "borrowed features: regularizer 0");
        randomize(&t, rs, 2, &seed);
        fd_check("shared", rs, 2, &t, 2, 1, 1, seed);
    }
    npred_readout_free(&rs[1]);
out:
    npred_readout_free(&rs[0]);
    npred_ptable_free(&t);
}

/* training forward without noise draws from the rng: same seed, same output */
static void test_rng_sampling(void)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, 3, 5, 7, 6);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, 2))) {
        npred_rng rng;
        npred_rng_seed(&rng, 11);
        npred_readout_init_params(&r, &t, &rng, NULL);
        const float *mu = npred_ptable_ptr(&t, r.p_mu), *sig = npred_ptable_ptr(&t, r.p_sigma);
        int ok = 1;
        for (int i = 0; i < 12; i++) ok &= fabsf(mu[i]) <= 0.1f;
        for (int i = 0; i < 24; i++) ok &= fabsf(sig[i]) <= 1.0f;
        CHECK(ok, "init ranges");
        CHECK(npred_ptable_ptr(&t, r.p_features)[0] == 1.0f / 3, "features 1/c");
        float x[2 * 3 * 35], y1[12], y2[12], ye[12];
        uint64_t s = 3;
        for (int i = 0; i < 210; i++) x[i] = (float)th_rand(&s);
        npred_rng_seed(&rng, 77);
        CHECK_OK(npred_readout_forward(&r, &t, y1, x, NULL, 2, 1, &rng, NULL));
        npred_rng_seed(&rng, 77);
        CHECK_OK(npred_readout_forward(&r, &t, y2, x, NULL, 2, 1, &rng, NULL));
        CHECK(!memcmp(y1, y2, sizeof y1), "same seed, same output");
        CHECK_OK(npred_readout_forward(&r, &t, ye, x, NULL, 2, 0, NULL, NULL));
        CHECK(memcmp(y1, ye, sizeof y1) != 0, "training samples differ from the mean");
        CHECK(npred_readout_forward(&r, &t, y1, x, NULL, 2, 1, NULL, NULL) == NPRED_ERR_ARG, "train needs rng");
        CHECK(npred_readout_forward(&r, &t, y1, x, NULL, 3, 0, NULL, NULL) == NPRED_ERR_ARG, "batch over capacity");
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

/* The training draws (uniforms drawn in order, the Box-Muller transform on the
 * threads) are the normals of npred_rng_normal one by one: the output equals a
 * forward given those normals as noise, bit for bit, and the generator is left in
 * the same state (its spare included), with 1 and 2 threads, with a spare at entry
 * or not, one draw per image or one for the batch; large enough to run in parallel. */
static void draws_case(int threads, int spare_first, int batch_sample)
{
    enum { C = 2, H = 4, W = 5, N = 9001, B = 16 };
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, C, H, W, N);
    cfg.batch_sample = batch_sample;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    float *x = malloc(sizeof(float) * B * C * H * W), *y1 = malloc(sizeof(float) * B * N);
    float *y2 = malloc(sizeof(float) * B * N), *noise = malloc(sizeof(float) * B * N * 2);
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        npred_rng rng, ref;
        npred_rng_seed(&rng, 5);
        npred_readout_init_params(&r, &t, &rng, NULL);
        uint64_t s = 9;
        for (int i = 0; i < B * C * H * W; i++) x[i] = (float)th_rand(&s);
        npred_rng_seed(&rng, 1234);
        npred_rng_seed(&ref, 1234);
        if (spare_first) npred_rng_normal(&rng), npred_rng_normal(&ref);
        const int nz = (batch_sample ? B : 1) * N * 2;
        for (int i = 0; i < nz; i++) noise[i] = (float)npred_rng_normal(&ref);
        int nt = omp_get_max_threads();
        omp_set_num_threads(threads);
        CHECK_OK(npred_readout_forward(&r, &t, y1, x, NULL, B, 1, &rng, NULL));
        CHECK_OK(npred_readout_forward(&r, &t, y2, x, NULL, B, 1, NULL, noise));
        omp_set_num_threads(nt);
        CHECK(!memcmp(y1, y2, sizeof(float) * B * N),
              "%d threads, spare %d, batch_sample %d: the drawn output differs from the one given its normals", threads,
              spare_first, batch_sample);
        double a = npred_rng_normal(&rng), b = npred_rng_normal(&ref), a2 = npred_rng_normal(&rng),
               b2 = npred_rng_normal(&ref);
        CHECK(!memcmp(&a, &b, sizeof a) && !memcmp(&a2, &b2, sizeof a2) && rng.has_spare == ref.has_spare,
              "%d threads, spare %d: the generator's state after the draws differs", threads, spare_first);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
    free(x), free(y1), free(y2), free(noise);
}

static void test_rng_draws_parallel(void)
{
    for (int th = 1; th <= 2; th++)
        for (int sp = 0; sp < 2; sp++) draws_case(th, sp, 1);
    draws_case(2, 1, 0);
}

/* The feature regularizer on the parameter in place, for a readout large enough to
 * run on the threads (1 and 2): the value is the double sum of |features| in the
 * order of the (n, c) rows (neuron, channel), bit for bit, and the gradient adds
 * exactly weight * sign(feature) (0 for a zero feature) to what it held. */
static void test_regularizer_bits(void)
{
    enum { C = 24, H = 3, W = 4, N = 5003 };
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, C, H, W, N);
    cfg.feature_reg_weight = 0.0076;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, 2))) {
        float *f = npred_ptable_ptr(&t, r.p_features), *gf = npred_ptable_gradptr(&t, r.p_features);
        const size_t nf = (size_t)C * N;
        float *g0 = malloc(nf * sizeof *g0);
        uint64_t s = 3;
        for (size_t i = 0; i < nf; i++) {
            f[i] = i % 11 == 0 ? 0.0f : (float)(th_rand(&s) * pow(10.0, (double)(i % 5) - 3));
            g0[i] = (float)th_rand(&s);
        }
        double want = 0;
        for (int o = 0; o < N; o++)
            for (int k = 0; k < C; k++) want += fabs(f[(size_t)k * N + o]);
        want *= cfg.feature_reg_weight;
        const float g = (float)(1.5 * cfg.feature_reg_weight);
        const int nt = omp_get_max_threads();
        for (int th = 1; th <= 2; th++) {
            memcpy(gf, g0, nf * sizeof *gf);
            omp_set_num_threads(th);
            double v = npred_readout_regularizer(&r, &t, 1.5);
            omp_set_num_threads(nt);
            CHECK(!memcmp(&v, &want, sizeof v), "%d threads: regularizer %.17g, the rows' sum %.17g", th, v, want);
            size_t bad = 0;
            for (size_t i = 0; i < nf; i++) {
                float e = g0[i] + (f[i] > 0 ? g : f[i] < 0 ? -g : 0.0f);
                bad += memcmp(&e, gf + i, sizeof e) != 0;
            }
            CHECK(bad == 0, "%d threads: %zu feature gradients differ from weight * sign", th, bad);
        }
        CHECK(npred_readout_regularizer(&r, &t, 0) == want, "without a gradient: the same value");
        free(g0);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

/* The bulk normals directly: every float equals (float) npred_rng_normal() and the
 * generator ends in the same state, for counts around the vector blocks, with and
 * without a spare at entry, on 1 and 2 threads; 2^21 draws take the C library path
 * for some pairs (intervals that straddle a float, arguments near a multiple of
 * pi / 2) and the polynomial one for most; a generator whose next output is 0
 * (u1 = 0, drawn again) gives the same sequence too, also when the threads draw
 * the uniforms of their pairs from the generator jumped ahead (2 and 3 threads). */
static void normals_case(size_t count, int spare_first, int threads, uint64_t zero_s1, size_t *slow)
{
    npred_rng rng, ref;
    npred_rng_seed(&rng, 99 + count);
    if (zero_s1) rng.s[1] = 0; /* the next output is 0: u1 = 0 is rejected */
    if (spare_first) npred_rng_normal(&rng);
    ref = rng;
    float *z = malloc(sizeof(float) * (count + 1));
    uint64_t *u = malloc(sizeof(uint64_t) * (count + 2));
    if (!CHECK(z && u, "alloc")) {
        free(z), free(u);
        return;
    }
    npred_normals d;
    d.u1 = u, d.u2 = u + count / 2 + 1;
    int nt = omp_get_max_threads();
    omp_set_num_threads(threads);
    npred_normals_draw(&d, count, &rng, z);
#pragma omp parallel if (count > 1000)
    npred_normals_transform(&d, z);
    npred_normals_finish(&d, &rng);
    omp_set_num_threads(nt);
    size_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        float e = (float)npred_rng_normal(&ref);
        if (memcmp(&e, &z[i], sizeof e) && !bad++)
            CHECK(0, "count %zu, spare %d: normal %zu is %.9g, npred_rng_normal gives %.9g", count, spare_first, i,
                  z[i], e);
    }
    CHECK(!bad, "count %zu, spare %d, %d threads: %zu normals differ", count, spare_first, threads, bad);
    double a = npred_rng_normal(&rng), b = npred_rng_normal(&ref);
    CHECK(!memcmp(&a, &b, sizeof a) && !memcmp(rng.s, ref.s, sizeof rng.s) && rng.has_spare == ref.has_spare,
          "count %zu, spare %d: the generator's state after the draws differs", count, spare_first);
    if (zero_s1 && threads > 1 && count > 100000)
        CHECK(d.redraw, "count %zu, %d threads: the u1 drawn again was not noticed", count, threads);
    *slow = d.slow;
    free(z), free(u);
}

static void test_normals_bulk(void)
{
    size_t slow;
    static const size_t counts[] = {0, 1, 2, 3, 15, 16, 17, 18, 33, 1001};
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
        for (int sp = 0; sp < 2; sp++) normals_case(counts[i], sp, 1, 0, &slow);
    normals_case(40, 0, 1, 1, &slow);
    normals_case(41, 1, 2, 1, &slow);
    /* enough pairs for the threads' own uniforms (the generator jumped ahead): with a
     * u1 drawn again in the first thread's share, all are drawn again on one thread */
    normals_case(100001, 0, 2, 1, &slow);
    normals_case(100002, 1, 3, 0, &slow);
    for (int th = 1; th <= 2; th++) {
        const size_t n = ((size_t)1 << 21) + th;
        normals_case(n, th - 1, th, 0, &slow);
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
        CHECK(slow > 0 && slow < n / 200, "%zu of %zu pairs took the C library path", slow, n / 2);
#else
        CHECK(slow == (n - (size_t)(th - 1)) / 2, "without AVX-512 every pair takes the C library path");
#endif
    }
}

static void expect_config_error(npred_readout_config *cfg, const char *word)
{
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    CHECK(npred_readout_declare(&r, cfg, "readout.x.", &t) == NPRED_ERR_CONFIG, "%s rejected", word);
    CHECK(strstr(npred_last_error(), word) != NULL, "message names %s: %s", word, npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_bad_config(void)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, 4, 6, 8, 5);
    cfg.init_mu_range = 1.5;
    expect_config_error(&cfg, "init_mu_range");
    cfg.init_mu_range = 0;
    expect_config_error(&cfg, "init_mu_range");
    cfg.init_mu_range = 0.1;
    cfg.init_sigma = 0;
    expect_config_error(&cfg, "init_sigma");
    cfg.init_sigma = 1;
    cfg.gauss_type = (npred_gauss_type)7;
    expect_config_error(&cfg, "gauss_type");
    cfg.gauss_type = NPRED_GAUSS_FULL;
    cfg.predicted_grid = cfg.shared_grid = 1;
    int64_t ids[5] = {1, 2, 3, 4, 5};
    cfg.match_ids = ids;
    expect_config_error(&cfg, "shared_grid");
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, 4, 6, 8, 5);
    cfg.shared_features = 1;
    expect_config_error(&cfg, "match_ids");
    npred_readout_config_default(&cfg, NPRED_READOUT_GAUSSIAN2D, 4, 6, 8, 5);
    cfg.init_sigma_range = -1;
    expect_config_error(&cfg, "init_sigma_range");
}

/* The grid-mean predictor's output is kept between eval forwards while its inputs
 * (source_grid, weights, biases) are unchanged: a change of any of them must give
 * the bits a fresh readout computes. */
static void fresh_forward(const npred_readout_config *cfg, const npred_ptable *src, const float *x, int B, float *y)
{
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    if (CHECK_OK(npred_readout_declare(&r, cfg, "readout.a.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B)) && CHECK(t.n_params == src->n_params, "same table")) {
        memcpy(t.data, src->data, t.n_params * sizeof(float));
        memcpy(t.bufdata, src->bufdata, t.n_buffers * sizeof(float));
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, B, 0, NULL, NULL));
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_predictor_cache(void)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_FULL_GAUSSIAN2D, 5, 6, 9, 40);
    cfg.predicted_grid = 1;
    cfg.gmp_input_dimensions = 2;
    cfg.gmp_hidden_layers = 1;
    cfg.gmp_hidden_features = 7;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    uint64_t seed = 77;
    enum { B = 2 };
    float x[B * 5 * 6 * 9], y[3][B * 40], ref[B * 40];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)th_rand(&seed);
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.a.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        randomize(&t, &r, 1, &seed);
        double g[40 * 2];
        for (int i = 0; i < 80; i++) g[i] = 10 * th_rand(&seed);
        CHECK_OK(npred_readout_set_source_grid(&r, &t, g));
        CHECK_OK(npred_readout_forward(&r, &t, y[0], x, NULL, B, 0, NULL, NULL));
        CHECK_OK(npred_readout_forward(&r, &t, y[1], x, NULL, B, 0, NULL, NULL));
        CHECK(!memcmp(y[0], y[1], sizeof y[0]), "a repeated eval forward gives the same bits");
        fresh_forward(&cfg, &t, x, B, ref);
        CHECK(!memcmp(y[0], ref, sizeof ref), "first forward: a fresh readout's bits");
        /* one weight, one bias, one source_grid entry: each changes the output */
        int idx[3] = {r.p_mlp_w[1], r.p_mlp_b[0], r.p_source_grid};
        const char *what[3] = {"weight", "bias", "source_grid"};
        for (int k = 0; k < 3; k++) {
            npred_ptable_ptr(&t, idx[k])[1] += 0.25f;
            CHECK_OK(npred_readout_forward(&r, &t, y[2], x, NULL, B, 0, NULL, NULL));
            fresh_forward(&cfg, &t, x, B, ref);
            CHECK(!memcmp(y[2], ref, sizeof ref), "after a change of a %s: a fresh readout's bits", what[k]);
            CHECK(memcmp(y[2], y[1], sizeof ref), "a change of a %s changes the output", what[k]);
            memcpy(y[1], y[2], sizeof ref);
        }
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

int main(void)
{
    RUN(test_fixture_full_eval);
    RUN(test_fixture_full_train);
    RUN(test_fixture_isotropic_train);
    RUN(test_fixture_uncorrelated_train);
    RUN(test_fixture_shift_eval);
    RUN(test_fixture_predicted_eval);
    RUN(test_fixture_predicted_train);
    RUN(test_fixture_legacy);
    RUN(test_fd_full_train_shift);
    RUN(test_fd_uncorrelated_train);
    RUN(test_fd_isotropic_train);
    RUN(test_fd_full_eval);
    RUN(test_fd_predicted_train);
    RUN(test_fd_legacy);
    RUN(test_fd_one_draw_per_batch);
    RUN(test_fd_batch_rows);
    RUN(test_positions_bits);
    RUN(test_fd_shared);
    RUN(test_predictor_cache);
    RUN(test_rng_sampling);
    RUN(test_rng_draws_parallel);
    RUN(test_normals_bulk);
    RUN(test_regularizer_bits);
    RUN(test_bad_config);
    return th_summary();
}
