/* ConvGRU (GRU_Module of neuralpredictors 43faede) against the conv_gru and
 * conv_gru_nopad fixtures (states, regularizer, loss, every gradient), and the
 * backward through time against central finite differences of a double-precision
 * GRU written here; a random GRU over several chunks of frames, the same on 1 and 2
 * threads. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cores/convgru.h"
#include "gradcheck_table.h"
#include "harness.h"

typedef struct {
    const npred_convgru *g;
    double **p;     /* per table entry, double copy */
    double *x;
    const float *up;
    int B, T;
} ref_ctx;

/* y (B, O, Ho, Wo) = conv2d(x (B, C, H, W), w (O, C, k, k), pad) + b */
static void conv_d(double *y, const double *x, const double *w, const double *b, int B, int C, int H, int W, int O,
                   int k, int pad, int Ho, int Wo)
{
    for (int n = 0; n < B; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double acc = b[o];
                    for (int c = 0; c < C; c++)
                        for (int u = 0; u < k; u++)
                            for (int v = 0; v < k; v++) {
                                int hi = i + u - pad, wi = j + v - pad;
                                if (hi >= 0 && hi < H && wi >= 0 && wi < W)
                                    acc += w[(((size_t)o * C + c) * k + u) * k + v] *
                                           x[(((size_t)n * C + c) * H + hi) * W + wi];
                            }
                    y[(((size_t)n * O + o) * Ho + i) * Wo + j] = acc;
                }
}

static double ref_loss(void *vctx)
{
    ref_ctx *r = vctx;
    const npred_convgru *g = r->g;
    int B = r->B, T = r->T, C = g->cfg.input_channels, R = g->cfg.rec_channels, ki = g->cfg.input_kern,
        kr = g->cfg.rec_kern, pi = g->cfg.pad_input ? ki / 2 : 0;
    size_t HW = (size_t)g->h * g->w, sHW = (size_t)g->ho * g->wo, n = (size_t)B * R * sHW;
    double *xt = malloc((size_t)B * C * HW * sizeof(double)), *h = calloc(n, sizeof(double));
    double *ai = malloc(n * sizeof(double)), *ah = malloc(n * sizeof(double)), *u = malloc(n * sizeof(double)),
           *rr = malloc(n * sizeof(double)), *hr = malloc(n * sizeof(double));
    double loss = 0;
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                memcpy(xt + ((size_t)b * C + c) * HW, r->x + (((size_t)b * C + c) * T + t) * HW, HW * sizeof(double));
        for (int q = 0; q < 2; q++) {
            conv_d(ai, xt, r->p[g->p_wi[q]], r->p[g->p_bi[q]], B, C, g->h, g->w, R, ki, pi, g->ho, g->wo);
            conv_d(ah, h, r->p[g->p_wh[q]], r->p[g->p_bh[q]], B, R, g->ho, g->wo, R, kr, kr / 2, g->ho, g->wo);
            double *dst = q == NPRED_GRU_UPDATE ? u : rr;
            for (size_t i = 0; i < n; i++) dst[i] = 1 / (1 + exp(-(ai[i] + ah[i])));
        }
        for (size_t i = 0; i < n; i++) hr[i] = h[i] * rr[i];
        conv_d(ai, xt, r->p[g->p_wi[2]], r->p[g->p_bi[2]], B, C, g->h, g->w, R, ki, pi, g->ho, g->wo);
        conv_d(ah, hr, r->p[g->p_wh[2]], r->p[g->p_bh[2]], B, R, g->ho, g->wo, R, kr, kr / 2, g->ho, g->wo);
        for (size_t i = 0; i < n; i++) h[i] = h[i] * (1 - u[i]) + tanh(ai[i] + ah[i]) * u[i];
        for (int b = 0; b < B; b++)
            for (int k = 0; k < R; k++)
                for (size_t i = 0; i < sHW; i++)
                    loss += h[((size_t)b * R + k) * sHW + i] * r->up[(((size_t)b * R + k) * T + t) * sHW + i];
    }
    /* regularizer */
    int e[3] = {g->p_bh[NPRED_GRU_RESET], g->p_wh[NPRED_GRU_UPDATE], g->p_bh[NPRED_GRU_OUT]};
    size_t cnt[3] = {(size_t)R, (size_t)R * R * kr * kr, (size_t)R};
    for (int i = 0; i < 3; i++) {
        double s = 0;
        for (size_t j = 0; j < cnt[i]; j++) s += fabs(r->p[e[i]][j]);
        loss += g->cfg.gamma_rec * s / (double)cnt[i] / 3;
    }
    free(xt), free(h), free(ai), free(ah), free(u), free(rr), free(hr);
    return loss;
}

static void run_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    npred_convgru_config cfg = {
        .input_channels = (int)th_num(c.json, -1, "args", "input_channels", NULL),
        .rec_channels = (int)th_num(c.json, -1, "args", "rec_channels", NULL),
        .input_kern = (int)th_num(c.json, -1, "args", "input_kern", NULL),
        .rec_kern = (int)th_num(c.json, -1, "args", "rec_kern", NULL),
        .pad_input = cJSON_IsTrue(th_get(c.json, "args", "pad_input", NULL)),
        .gamma_rec = th_num(c.json, NAN, "args", "gamma_rec", NULL),
    };
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs), *up = th_load_f32(&c, "upstream.npy", NULL), *dx = NULL;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_convgru g;
    memset(&g, 0, sizeof g);
    double **p0 = NULL;
    if (!x || !up || !CHECK(xs.ndim == 5, "5-D input")) goto out;
    int B = (int)xs.shape[0], T = (int)xs.shape[2];
    if (!CHECK_OK(npred_convgru_declare(&g, &cfg, "", (int)xs.shape[3], (int)xs.shape[4], &t)) ||
        !CHECK_OK(npred_ptable_alloc(&t)) || !CHECK_OK(npred_convgru_setup(&g, B, T)))
        goto out;
    CHECK(th_load_table(&c, &t, "params", "", NULL) == 12, "12 parameters");
    const float *y;
    if (!CHECK_OK(npred_convgru_forward(&g, &t, x, B, T, &y))) goto out;
    int R = cfg.rec_channels;
    th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, R, T, g.ho, g.wo));
    npred_ptable_zero_grad(&t);
    double reg = npred_convgru_regularizer(&g, &t, 1.0);
    double want = th_num(c.json, NAN, "scalars", "regularizer", NULL);
    CHECK(fabs(reg - want) <= 1e-5 * fabs(want) + 1e-7, "regularizer %.9g want %.9g", reg, want);
    size_t nout = (size_t)B * R * T * g.ho * g.wo;
    double loss = reg;
    for (size_t i = 0; i < nout; i++) loss += (double)y[i] * up[i];
    want = th_num(c.json, NAN, "scalars", "loss", NULL);
    CHECK(fabs(loss - want) <= 1e-4 * fabs(want) + 1e-4, "loss %.9g want %.9g", loss, want);
    dx = calloc(xs.count, sizeof *dx);
    if (!dx || !CHECK_OK(npred_convgru_backward(&g, &t, up, dx))) goto out;
    th_compare_table(&c, &t, "grads", "grads", "", (const char *const[]){"input", NULL});
    th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
    /* finite differences of the double GRU */
    p0 = calloc((size_t)t.n, sizeof *p0);
    for (int e = 0; p0 && e < t.n; e++) p0[e] = gc_to_f64(npred_ptable_ptr(&t, e), t.items[e].count);
    ref_ctx r = {&g, p0, gc_to_f64(x, xs.count), up, B, T};
    CHECK(fabs(ref_loss(&r) - loss) <= 1e-4 * fabs(loss) + 1e-4, "double reference loss %.9g vs %.9g", ref_loss(&r),
          loss);
    gc_check_table(&t, p0, r.x, xs.count, dx, 16, ref_loss, &r);
    free(r.x);
    /* the same forward on fewer frames is the prefix of the states (causal) */
    if (T > 2 && CHECK_OK(npred_convgru_forward(&g, &t, x, B, T, &y))) {
        float *full = malloc(nout * sizeof *full), *xp = malloc((size_t)B * cfg.input_channels * (T - 2) * g.h * g.w * sizeof *xp);
        size_t HW = (size_t)g.h * g.w, sHW = (size_t)g.ho * g.wo;
        memcpy(full, y, nout * sizeof *full);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < cfg.input_channels; k++)
                memcpy(xp + ((size_t)b * cfg.input_channels + k) * (T - 2) * HW,
                       x + ((size_t)b * cfg.input_channels + k) * T * HW, (size_t)(T - 2) * HW * sizeof *xp);
        int same = 1;
        if (CHECK_OK(npred_convgru_forward(&g, &t, xp, B, T - 2, &y)))
            for (int b = 0; b < B; b++)
                for (int k = 0; k < R; k++)
                    same &= !memcmp(y + ((size_t)b * R + k) * (T - 2) * sHW, full + ((size_t)b * R + k) * T * sHW,
                                    (size_t)(T - 2) * sHW * sizeof(float));
        CHECK(same, "the states of a shorter clip are the prefix of the longer one's");
        free(full);
        free(xp);
    }
out:
    if (p0)
        for (int e = 0; e < t.n; e++) free(p0[e]);
    free(p0);
    free(x);
    free(up);
    free(dx);
    npred_convgru_free(&g);
    npred_ptable_free(&t);
    th_case_close(&c);
}

/* A GRU of several frame chunks (21 frames: the fused input convs run in chunks of
 * 8) with random parameters: every gradient against finite differences of the
 * double GRU, and the backward bit-identical on 1 and 2 threads. */
static void test_chunks_threads(void)
{
    npred_convgru_config cfg = {.input_channels = 3, .rec_channels = 5, .input_kern = 5, .rec_kern = 3,
                                .pad_input = 0, .gamma_rec = 0};
    const int B = 3, T = 7, H = 9, W = 11;
    npred_ptable t;
    npred_ptable_init(&t);
    npred_convgru g;
    memset(&g, 0, sizeof g);
    size_t nx = (size_t)B * cfg.input_channels * T * H * W;
    float *x = malloc(nx * sizeof *x), *dx1 = calloc(nx, sizeof *dx1), *dx2 = calloc(nx, sizeof *dx2), *up = NULL,
          *g1 = NULL;
    double **p0 = NULL;
    uint64_t st = 5;
    if (!CHECK_OK(npred_convgru_declare(&g, &cfg, "", H, W, &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_convgru_setup(&g, B, T)) || !CHECK(x && dx1 && dx2, "out of memory"))
        goto out;
    for (size_t i = 0; i < t.n_params; i++) t.data[i] = (float)(0.3 * th_rand(&st));
    for (size_t i = 0; i < nx; i++) x[i] = (float)th_rand(&st);
    size_t nout = (size_t)B * cfg.rec_channels * T * g.ho * g.wo;
    up = malloc(nout * sizeof *up);
    g1 = malloc(t.n_params * sizeof *g1);
    if (!CHECK(up && g1, "out of memory")) goto out;
    for (size_t i = 0; i < nout; i++) up[i] = (float)th_rand(&st);
    int threads = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run ? 2 : 1);
        const float *y;
        npred_ptable_zero_grad(&t);
        if (!CHECK_OK(npred_convgru_forward(&g, &t, x, B, T, &y)) ||
            !CHECK_OK(npred_convgru_backward(&g, &t, up, run ? dx2 : dx1)))
            break;
        if (!run) memcpy(g1, t.grad, t.n_params * sizeof *g1);
    }
    omp_set_num_threads(threads);
    CHECK(!memcmp(g1, t.grad, t.n_params * sizeof *g1) && !memcmp(dx1, dx2, nx * sizeof *dx1),
          "the gradients on 1 and 2 threads differ");
    p0 = calloc((size_t)t.n, sizeof *p0);
    for (int e = 0; p0 && e < t.n; e++) p0[e] = gc_to_f64(npred_ptable_ptr(&t, e), t.items[e].count);
    ref_ctx r = {&g, p0, gc_to_f64(x, nx), up, B, T};
    gc_check_table(&t, p0, r.x, nx, dx2, 12, ref_loss, &r);
    free(r.x);
out:
    if (p0)
        for (int e = 0; e < t.n; e++) free(p0[e]);
    free(p0), free(x), free(dx1), free(dx2), free(up), free(g1);
    npred_convgru_free(&g);
    npred_ptable_free(&t);
}

static void test_conv_gru(void) { run_case("conv_gru"); }
static void test_conv_gru_nopad(void) { run_case("conv_gru_nopad"); }

static void test_errors(void)
{
    npred_ptable t;
    npred_ptable_init(&t);
    npred_convgru g;
    npred_convgru_config cfg = {.input_channels = 2, .rec_channels = 3, .input_kern = 3, .rec_kern = 2, .pad_input = 1};
    CHECK(npred_convgru_declare(&g, &cfg, "", 8, 8, &t) == NPRED_ERR_CONFIG && strstr(npred_last_error(), "rec_kern 2"),
          "even rec_kern: %s", npred_last_error());
    cfg.rec_kern = 3, cfg.input_kern = 9, cfg.pad_input = 0;
    npred_status s = npred_convgru_declare(&g, &cfg, "", 8, 8, &t);
    CHECK(s != NPRED_OK && strstr(npred_last_error(), "ConvGRU"), "frames smaller than the kernel: %d %s", s,
          npred_last_error());
    npred_ptable_free(&t);
}

int main(void)
{
    RUN(test_conv_gru);
    RUN(test_conv_gru_nopad);
    RUN(test_chunks_threads);
    RUN(test_errors);
    return th_summary();
}
