/* PointPyramid2d against the 0.3.0 fixtures (point_pyramid, point_pyramid_train) and
 * finite differences on an independent double-precision reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/config.h"
#include "readouts/readout.h"

static int pyramid_type_of(const char *s)
{
    if (s && !strcmp(s, "gauss3x3")) return NPRED_PYRAMID_GAUSS3X3;
    if (s && !strcmp(s, "laplace5x5")) return NPRED_PYRAMID_LAPLACE5X5;
    return NPRED_PYRAMID_GAUSS5X5;
}

static void run_fixture(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *a = th_get(c.json, "args", NULL), *shape = th_get(a, "in_shape", NULL);
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_PYRAMID, cJSON_GetArrayItem(shape, 0)->valueint,
                                 cJSON_GetArrayItem(shape, 1)->valueint, cJSON_GetArrayItem(shape, 2)->valueint,
                                 (int)th_num(a, 0, "outdims", NULL));
    cfg.bias = cJSON_IsTrue(th_get(a, "bias", NULL));
    cfg.scale_n = (int)th_num(a, -1, "scale_n", NULL);
    cfg.positive = cJSON_IsTrue(th_get(a, "positive", NULL));
    cfg.downsample = cJSON_IsTrue(th_get(a, "downsample", NULL));
    cfg.init_range = th_num(a, -1, "init_range", NULL);
    cfg.pyramid_type = pyramid_type_of(cJSON_GetStringValue(th_get(a, "type", NULL)));
    cfg.feature_reg_weight = th_num(a, NAN, "feature_reg_weight", NULL);
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    memset(&r, 0, sizeof r);
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs), *up = th_load_f32(&c, "upstream.npy", NULL);
    float *shift = th_get(c.json, "files", "inputs", "shift", NULL) ? th_load_f32(&c, "shift.npy", NULL) : NULL;
    int B = x ? (int)xs.shape[0] : 0;
    if (x && up && CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        /* the filter npred builds equals the reference's buffer */
        npred_pyramid_init_buffers(&r, &t);
        npred_array fs;
        float *fref = th_load_f32(&c, "params/gauss_pyramid.filter.npy", &fs);
        int fi = npred_ptable_find(&t, "gauss_pyramid.filter");
        if (fref && CHECK(fi >= 0, "filter buffer declared") &&
            th_compare_dims(&c, "forward", "params/gauss_pyramid.filter.npy", npred_ptable_ptr(&t, fi), t.items[fi].ndim,
                            t.items[fi].shape)) /* and bit for bit: */
            th_close_f32("filter", npred_ptable_ptr(&t, fi), fref, t.items[fi].count, 0, 0);
        free(fref);
        CHECK(th_load_table(&c, &t, "params", "", NULL) == t.n, "all entries loaded");
        char repr[512];
        npred_readout_repr(&r, repr, sizeof repr);
        cJSON *want = th_get(c.json, "repr", NULL);
        CHECK(want && !strcmp(repr, want->valuestring), "repr '%s' want '%s'", repr, want ? want->valuestring : "");
        float *y = calloc((size_t)B * cfg.n, sizeof *y), *dx = calloc(xs.count, sizeof *dx),
              *ds = calloc((size_t)2 * B, sizeof *ds);
        CHECK_OK(npred_readout_forward(&r, &t, y, x, shift, B, !strcmp(cJSON_GetStringValue(th_get(c.json, "mode", NULL)), "train"),
                                       NULL, NULL));
        th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, cfg.n));
        th_compare_table(&c, &t, "params_after", "forward", "", NULL);
        if (th_get(c.json, "files", "buffers_after", NULL))
            th_compare_table(&c, &t, "buffers_after", "forward", "", NULL);
        npred_ptable_zero_grad(&t);
        npred_readout_backward(&r, &t, up, dx, shift ? ds : NULL);
        double reg = npred_readout_regularizer(&r, &t, 1.0), loss = reg;
        double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
        CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-5, "regularizer %.8g want %.8g", reg, want_reg);
        for (size_t i = 0; i < (size_t)B * cfg.n; i++) loss += (double)y[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-5, "loss %.8g want %.8g", loss, want_loss);
        th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
        if (shift) th_compare_dims(&c, "grads", "grads/shift.npy", ds, TH_DIMS(B, 2));
        const char *skip[] = {"input", "shift", NULL};
        th_compare_table(&c, &t, "grads", "grads", "", skip);
        free(y), free(dx), free(ds);
    }
    free(x), free(up), free(shift);
    npred_readout_free(&r);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_fixture_point_pyramid(void) { run_fixture("point_pyramid"); }
static void test_fixture_point_pyramid_train(void) { run_fixture("point_pyramid_train"); }

/* ------------------------------------------------ double reference --- *
 * Written from the definition, one image plane at a time: smooth = f (*) img with
 * zero padding; with downsampling lo = smooth at even rows/columns and
 * lo2 = 4 * the transposed convolution (scatter form: lo[i, j] spreads f around
 * (2i, 2j)); hi = img - lo2. */

typedef struct {
    const npred_readout *r;
    const npred_ptable *t;
    const double *x, *shift, *up, *filt;
    int B, k;
} fd_ctx;

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

static double pyramid_loss(const fd_ctx *k, const double *P)
{
    const npred_readout_config *c = &k->r->cfg;
    int n = c->n, C = c->c, S = c->scale_n, K = k->k, pad = K / 2, m = C * (S + 1);
    const double *g = P + k->t->items[k->r->p_grid].offset, *f = P + k->t->items[k->r->p_features].offset;
    const double *bias = P + k->t->items[k->r->p_bias].offset;
    double loss = 0;
    for (int b = 0; b < k->B; b++)
        for (int ch = 0; ch < C; ch++) {
            int H = c->h, W = c->w;
            double *img = malloc(sizeof(double) * H * W);
            memcpy(img, k->x + ((size_t)b * C + ch) * H * W, sizeof(double) * H * W);
            for (int l = 0; l <= S; l++) {
                double *level = img, *next = NULL;
                int h2 = H, w2 = W;
                if (l < S) {
                    double *sm = calloc((size_t)H * W, sizeof *sm), *lo2 = calloc((size_t)H * W, sizeof *lo2);
                    for (int y = 0; y < H; y++)
                        for (int xx = 0; xx < W; xx++)
                            for (int a = 0; a < K; a++)
                                for (int bb = 0; bb < K; bb++) {
                                    int yy = y + a - pad, xq = xx + bb - pad;
                                    if (yy >= 0 && yy < H && xq >= 0 && xq < W)
                                        sm[y * W + xx] += k->filt[a * K + bb] * img[yy * W + xq];
                                }
                    if (c->downsample) {
                        h2 = (H + 1) / 2, w2 = (W + 1) / 2;
                        next = malloc(sizeof(double) * h2 * w2);
                        for (int i = 0; i < h2; i++)
                            for (int j = 0; j < w2; j++) next[i * w2 + j] = sm[(2 * i) * W + 2 * j];
                        for (int i = 0; i < h2; i++)
                            for (int j = 0; j < w2; j++)
                                for (int a = 0; a < K; a++)
                                    for (int bb = 0; bb < K; bb++) {
                                        int yy = 2 * i - pad + a, xq = 2 * j - pad + bb;
                                        if (yy >= 0 && yy < H && xq >= 0 && xq < W)
                                            lo2[yy * W + xq] += 4 * k->filt[a * K + bb] * next[i * w2 + j];
                                    }
                    } else {
                        next = malloc(sizeof(double) * H * W);
                        memcpy(next, sm, sizeof(double) * H * W);
                        memcpy(lo2, sm, sizeof(double) * H * W);
                    }
                    level = malloc(sizeof(double) * H * W);
                    for (int i = 0; i < H * W; i++) level[i] = img[i] - lo2[i];
                    free(sm), free(lo2);
                }
                for (int o = 0; o < n; o++) {
                    double gx = fmin(fmax(g[2 * o], -1), 1) + k->shift[2 * b];
                    double gy = fmin(fmax(g[2 * o + 1], -1), 1) + k->shift[2 * b + 1];
                    double fv = f[(size_t)(l * C + ch) * n + o];
                    if (c->positive && fv < 0) fv = 0;
                    loss += fv * bilinear(level, H, W, gx, gy) * k->up[b * n + o];
                }
                if (level != img) free(level);
                if (l < S) {
                    free(img);
                    img = next, H = h2, W = w2;
                }
            }
            free(img);
        }
    for (int b = 0; b < k->B; b++)
        for (int o = 0; o < n; o++) loss += bias[o] * k->up[b * n + o];
    for (int i = 0; i < m * n; i++) loss += c->feature_reg_weight * fabs(f[i]);
    return loss;
}

static void fd_pyramid(int S, npred_pyramid_type type, int down, int h, int w, int positive)
{
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_PYRAMID, 2, h, w, 3);
    cfg.scale_n = S;
    cfg.pyramid_type = type;
    cfg.downsample = down;
    cfg.positive = positive;
    cfg.feature_reg_weight = 0.4;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r;
    memset(&r, 0, sizeof r);
    int B = 2;
    uint64_t seed = 700 + (uint64_t)(S * 10 + type * 3 + down);
    if (CHECK_OK(npred_readout_declare(&r, &cfg, "readout.p.", &t)) && CHECK_OK(npred_ptable_alloc(&t)) &&
        CHECK_OK(npred_readout_setup(&r, &t, B))) {
        npred_rng rng;
        npred_rng_seed(&rng, 3);
        npred_readout_init_params(&r, &t, &rng, NULL);
        for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)th_rand(&seed);
        float *g = npred_ptable_ptr(&t, r.p_grid);
        for (int i = 0; i < 2 * cfg.n; i++) g[i] *= 0.8f; /* inside [-1, 1]: the clamp is inactive */
        if (positive) { /* positive=True clamps in the forward; compare at clamped values */
            float *f = npred_ptable_ptr(&t, r.p_features);
            for (size_t i = 0; i < t.items[r.p_features].count; i++) f[i] = fabsf(f[i]) + 0.05f;
        }
        int K = type == NPRED_PYRAMID_GAUSS3X3 ? 3 : 5;
        size_t nx = (size_t)B * cfg.c * h * w;
        float *xf = malloc(nx * sizeof *xf), *sf = malloc(2 * B * sizeof *sf), *y = malloc((size_t)B * cfg.n * sizeof *y);
        float *upf = malloc((size_t)B * cfg.n * sizeof *upf), *dx = calloc(nx, sizeof *dx), *ds = calloc(2 * B, sizeof *ds);
        double *x = malloc(nx * sizeof *x), *sh = malloc(2 * B * sizeof *sh), *up = malloc((size_t)B * cfg.n * sizeof *up);
        double filt[25];
        const float *ff = npred_ptable_ptr(&t, r.p_filter);
        for (int i = 0; i < K * K; i++) filt[i] = ff[i];
        for (size_t i = 0; i < nx; i++) x[i] = xf[i] = (float)th_rand(&seed);
        for (int i = 0; i < 2 * B; i++) sh[i] = sf[i] = (float)(0.15 * th_rand(&seed));
        for (int i = 0; i < B * cfg.n; i++) up[i] = upf[i] = (float)th_rand(&seed);
        double *P = malloc(t.n_params * sizeof *P);
        for (size_t i = 0; i < t.n_params; i++) P[i] = t.data[i];
        npred_ptable_zero_grad(&t);
        CHECK_OK(npred_readout_forward(&r, &t, y, xf, sf, B, 1, NULL, NULL));
        npred_readout_backward(&r, &t, upf, dx, ds);
        double reg = npred_readout_regularizer(&r, &t, 1.0);
        fd_ctx k = {&r, &t, x, sh, up, filt, B, K};
        double lref = pyramid_loss(&k, P), lgot = reg;
        for (int i = 0; i < B * cfg.n; i++) lgot += (double)y[i] * up[i];
        CHECK(fabs(lgot - lref) <= 1e-5 * fabs(lref) + 1e-5, "S=%d type=%d down=%d: loss %.9g reference %.9g", S,
              (int)type, down, lgot, lref);
        const double h0 = 1e-5;
        for (int e = 0; e < t.n; e++) {
            const npred_param *p = &t.items[e];
            if (p->is_buffer) continue;
            double *num = malloc(p->count * sizeof *num), *ana = malloc(p->count * sizeof *ana);
            for (size_t i = 0; i < p->count; i++) {
                double keep = P[p->offset + i];
                P[p->offset + i] = keep + h0;
                double lp = pyramid_loss(&k, P);
                P[p->offset + i] = keep - h0;
                double lm = pyramid_loss(&k, P);
                P[p->offset + i] = keep;
                num[i] = (lp - lm) / (2 * h0);
                ana[i] = t.grad[p->offset + i];
            }
            char wh[256];
            snprintf(wh, sizeof wh, "fd S=%d type=%d down=%d: %s", S, (int)type, down, p->name);
            th_close_f64(wh, ana, num, p->count, 2e-3, 2e-4);
            free(num), free(ana);
        }
        struct {
            double *v;
            size_t n;
            const float *g;
            const char *name;
        } in[2] = {{x, nx, dx, "input"}, {sh, (size_t)2 * B, ds, "shift"}};
        for (int gi = 0; gi < 2; gi++) {
            double *num = malloc(in[gi].n * sizeof *num), *ana = malloc(in[gi].n * sizeof *ana);
            for (size_t i = 0; i < in[gi].n; i++) {
                double keep = in[gi].v[i];
                in[gi].v[i] = keep + h0;
                double lp = pyramid_loss(&k, P);
                in[gi].v[i] = keep - h0;
                double lm = pyramid_loss(&k, P);
                in[gi].v[i] = keep;
                num[i] = (lp - lm) / (2 * h0);
                ana[i] = in[gi].g[i];
            }
            char wh[256];
            snprintf(wh, sizeof wh, "fd S=%d type=%d down=%d: %s", S, (int)type, down, in[gi].name);
            th_close_f64(wh, ana, num, in[gi].n, 2e-3, 2e-4);
            free(num), free(ana);
        }
        free(xf), free(sf), free(y), free(upf), free(dx), free(ds), free(x), free(sh), free(up), free(P);
    }
    npred_readout_free(&r);
    npred_ptable_free(&t);
}

static void test_fd_gauss5_downsample(void) { fd_pyramid(2, NPRED_PYRAMID_GAUSS5X5, 1, 9, 12, 0); }
static void test_fd_laplace5_downsample_even(void) { fd_pyramid(3, NPRED_PYRAMID_LAPLACE5X5, 1, 10, 8, 1); }
static void test_fd_gauss3_no_downsample(void) { fd_pyramid(1, NPRED_PYRAMID_GAUSS3X3, 0, 7, 6, 0); }
static void test_fd_no_levels(void) { fd_pyramid(0, NPRED_PYRAMID_GAUSS3X3, 1, 5, 6, 0); }

static void test_bad_config(void)
{
    npred_readout_config cfg;
    npred_ptable t;
    npred_readout r;
    npred_readout_config_default(&cfg, NPRED_READOUT_POINT_PYRAMID, 4, 6, 8, 5);
    cfg.scale_n = 40;
    npred_ptable_init(&t);
    CHECK(npred_readout_declare(&r, &cfg, "x.", &t) == NPRED_ERR_CONFIG, "scale_n 40 rejected");
    CHECK(strstr(npred_last_error(), "scale_n") != NULL, "message: %s", npred_last_error());
    npred_readout_free(&r);
    npred_ptable_free(&t);
    /* the two 0.3.0 readouts that do not run in the reference: rejected with the reason */
    npred_model_config m;
    CHECK(npred_model_config_parse(&m, "{\"readout_type\": \"RemappedGaussian2d\"}", "a.json") ==
              NPRED_ERR_UNSUPPORTED && strstr(npred_last_error(), "None"),
          "%s", npred_last_error());
    CHECK(npred_model_config_parse(&m, "{\"core\": {\"hidden_channels\": 2, \"input_kern\": 3, \"hidden_kern\": 3},"
                                       " \"readout\": {\"type\": \"DeterministicGaussian2d\"}}", "b.json") ==
              NPRED_ERR_UNSUPPORTED && strstr(npred_last_error(), "readout.type"),
          "%s", npred_last_error());
    /* PointPyramid2d keys in both spellings, saved form read back */
    if (CHECK_OK(npred_model_config_parse(&m, "{\"readout_type\": \"PointPyramid2d\", \"scale_n\": 3,"
                                              " \"pyramid_type\": \"laplace5x5\", \"downsample\": false,"
                                              " \"positive\": true, \"init_range\": 0.2}", "flat.json"))) {
        cJSON *j = npred_model_config_to_json(&m);
        npred_model_config back;
        if (CHECK_OK(npred_model_config_from_cjson(&back, j, "saved")))
            CHECK(back.readout.type == NPRED_READOUT_POINT_PYRAMID && back.readout.scale_n == 3 &&
                      back.readout.pyramid_type == NPRED_PYRAMID_LAPLACE5X5 && !back.readout.downsample &&
                      back.readout.positive && back.readout.init_range == 0.2,
                  "round trip");
        cJSON_Delete(j);
    }
    CHECK(npred_model_config_parse(&m, "{\"readout_type\": \"PointPyramid2d\", \"pyramid_type\": \"box\"}",
                                   "c.json") == NPRED_ERR_CONFIG && strstr(npred_last_error(), "pyramid_type"),
          "%s", npred_last_error());
}

/* A readout argument of another readout class does not act: an error naming
 * the key and the readout, in both spellings; null stays "not given"; the
 * keys of the class itself and the saved form of every readout are read. */
static void test_keys_of_other_readouts(void)
{
    static const struct {
        const char *json, *key, *type;
    } bad[] = {
        {"{\"pool_steps\": 2}", "pool_steps", "FullGaussian2d"},
        {"{\"readout_type\": \"Gaussian2d\", \"init_sigma\": 0.1}", "init_sigma", "Gaussian2d"},
        {"{\"readout_type\": \"FullFactorized2d\", \"init_mu_range\": 0.3}", "init_mu_range", "FullFactorized2d"},
        {"{\"readout_type\": \"PointPooled2d\", \"scale_n\": 2}", "scale_n", "PointPooled2d"},
        {"{\"readout_type\": \"AttentionReadout\", \"align_corners\": true}", "align_corners", "AttentionReadout"},
        {"{\"readout_type\": \"PointPyramid2d\", \"gauss_type\": \"full\"}", "gauss_type", "PointPyramid2d"},
        {"{\"core\": {\"hidden_channels\": 2, \"input_kern\": 3, \"hidden_kern\": 3},"
         " \"readout\": {\"type\": \"FullGaussian2d\", \"normalize\": true}}",
         "readout.normalize", "FullGaussian2d"},
        {"{\"core\": {\"hidden_channels\": 2, \"input_kern\": 3, \"hidden_kern\": 3},"
         " \"readout\": {\"type\": \"PointPyramid2d\", \"pool_kern\": 2}}",
         "readout.pool_kern", "PointPyramid2d"},
    };
    npred_model_config m;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        npred_status s = npred_model_config_parse(&m, bad[i].json, "r.json");
        const char *msg = npred_last_error();
        char want[96];
        snprintf(want, sizeof want, "'%s'", bad[i].key);
        CHECK(s == NPRED_ERR_CONFIG && strstr(msg, "r.json") && strstr(msg, want) && strstr(msg, bad[i].type),
              "%s: status %d, '%s'", bad[i].json, (int)s, msg);
    }
    CHECK_OK(npred_model_config_parse(&m, "{\"readout_type\": \"PointPooled2d\", \"grid_mean_predictor\": null,"
                                          " \"pool_steps\": 1, \"pool_kern\": 2, \"init_range\": 0.2,"
                                          " \"align_corners\": false}", "ok.json"));
    /* every readout's saved form (its own keys only) is read back */
    const char *types[] = {"FullGaussian2d", "Gaussian2d", "FullFactorized2d", "PointPooled2d", "AttentionReadout",
                           "PointPyramid2d"};
    for (int i = 0; i < 6; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"readout_type\": \"%s\"}", types[i]);
        if (!CHECK_OK(npred_model_config_parse(&m, json, "t.json"))) continue;
        cJSON *j = npred_model_config_to_json(&m);
        npred_model_config back;
        CHECK(npred_model_config_from_cjson(&back, j, "saved") == NPRED_OK, "%s: saved form not read back: %s",
              types[i], npred_last_error());
        cJSON_Delete(j);
    }
}

int main(void)
{
    RUN(test_keys_of_other_readouts);
    RUN(test_fixture_point_pyramid);
    RUN(test_fixture_point_pyramid_train);
    RUN(test_fd_gauss5_downsample);
    RUN(test_fd_laplace5_downsample_even);
    RUN(test_fd_gauss3_no_downsample);
    RUN(test_fd_no_levels);
    RUN(test_bad_config);
    return th_summary();
}
