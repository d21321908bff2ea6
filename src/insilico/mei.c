/* Most exciting inputs: sinzlab/mei's gradient ascent (mei.methods.gradient_ascent,
 * mei.optimization.MEI.step, mei.legacy.ops GaussianBlur / ChangeNorm / ClipRange /
 * Jitter, mei.stoppers.NumIterations) for many images at once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "insilico/insilico_internal.h"
#include "npred/insilico.h"

void npred_mei_config_default(npred_mei_config *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 0;
    c->optimizer = NPRED_MEI_SGD;
    c->lr = 1.0;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->blur = 1;
    c->sigma_y = c->sigma_x = 1.0;
    c->truncate = 4.0;
    c->pad_mode = NPRED_PAD_REFLECT;
    c->change_norm = 1;
    c->norm = 10.0;
    c->num_iterations = 1000;
    c->plateau_min_delta = 1e-4;
}

int npred_mei_max_steps(const npred_mei_config *c) { return c->num_iterations + 1; }

/* ---- GaussianBlur (mei.legacy.ops) ---- */

static double step_sigma(const npred_mei_config *c, double s, int iteration)
{
    return c->blur_decay ? s + c->decay_factor * (iteration - 1) : s;
}

/* Python's round() (half to even) of a double, as the reference's int(round(s * truncate)) */
static int halfsize_of(double s, double truncate)
{
    double h = nearbyint(s * truncate); /* default rounding mode: to nearest, ties to even */
    return h < 1 ? 1 : (int)h;
}

/* scipy.signal.gaussian(2h + 1, std=s) cast to float32 */
static void window(float *w, int h, double s)
{
    for (int k = -h; k <= h; k++) w[k + h] = (float)exp(-0.5 * (double)k * k / (s * s));
}

static inline int pad_index(int i, int n, npred_pad_mode mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == NPRED_PAD_CONSTANT) return -1;
    if (mode == NPRED_PAD_REPLICATE) return i < 0 ? 0 : n - 1;
    return i < 0 ? -i : 2 * (n - 1) - i; /* reflect: the edge pixel is not repeated */
}

static npred_status blur_check(const npred_mei_config *c, int H, int W, int iteration)
{
    double sy = step_sigma(c, c->sigma_y, iteration), sx = step_sigma(c, c->sigma_x, iteration);
    if (!(sy > 0) || !(sx > 0))
        return npred_errorf(NPRED_ERR_CONFIG, "GaussianBlur: sigma (%g, %g) at step %d is not positive", sy, sx,
                            iteration);
    int hy = halfsize_of(sy, c->truncate), hx = halfsize_of(sx, c->truncate);
    if (c->pad_mode == NPRED_PAD_REFLECT && (hy >= H || hx >= W))
        return npred_errorf(NPRED_ERR_CONFIG,
                            "GaussianBlur: half size (%d, %d) at step %d needs an image larger than %dx%d for "
                            "reflect padding (lower sigma or truncate)",
                            hy, hx, iteration, H, W);
    return NPRED_OK;
}

npred_status npred_mei_gaussian_blur(float *x, int N, int C, int H, int W, const npred_mei_config *cfg, int iteration)
{
    npred_status st = blur_check(cfg, H, W, iteration);
    if (st) return st;
    double sy = step_sigma(cfg, cfg->sigma_y, iteration), sx = step_sigma(cfg, cfg->sigma_x, iteration);
    int hy = halfsize_of(sy, cfg->truncate), hx = halfsize_of(sx, cfg->truncate);
    float *wy = malloc(sizeof(float) * (size_t)(2 * hy + 1 + 2 * hx + 1)), *wx = wy ? wy + 2 * hy + 1 : NULL;
    if (!wy) return npred_errorf(NPRED_ERR_NOMEM, "GaussianBlur: out of memory");
    window(wy, hy, sy);
    window(wx, hx, sx);
    float sumy = 0, sumx = 0; /* float32 sums, as torch's y_gaussian.sum() */
    for (int k = 0; k < 2 * hy + 1; k++) sumy += wy[k];
    for (int k = 0; k < 2 * hx + 1; k++) sumx += wx[k];
    float den = sumy * sumx;
    size_t plane = (size_t)H * W;
    int fail = 0;
#pragma omp parallel
    {
        double *tmp = malloc(sizeof(double) * plane);
        if (!tmp) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (long p = 0; p < (long)N * C; p++) {
            if (!tmp) continue;
            float *img = x + (size_t)p * plane;
            /* vertical pass (over the padded rows), then horizontal, both valid */
            for (int r = 0; r < H; r++)
                for (int col = 0; col < W; col++) {
                    double acc = 0;
                    for (int k = -hy; k <= hy; k++) {
                        int rr = pad_index(r + k, H, cfg->pad_mode);
                        if (rr >= 0) acc += (double)wy[k + hy] * img[(size_t)rr * W + col];
                    }
                    tmp[(size_t)r * W + col] = acc;
                }
            for (int r = 0; r < H; r++)
                for (int col = 0; col < W; col++) {
                    double acc = 0;
                    for (int k = -hx; k <= hx; k++) {
                        int cc = pad_index(col + k, W, cfg->pad_mode);
                        /* the horizontal pass reads the vertically blurred padded columns: a
                         * padded column is the blur of the padded (reflected) input column */
                        if (cc >= 0) acc += (double)wx[k + hx] * tmp[(size_t)r * W + cc];
                    }
                    img[(size_t)r * W + col] = (float)(acc / den);
                }
        }
        free(tmp);
    }
    free(wy);
    if (fail) return npred_errorf(NPRED_ERR_NOMEM, "GaussianBlur: out of memory");
    return NPRED_OK;
}

/* ---- ChangeNorm / ClipRange ---- */

npred_status npred_mei_change_norm(float *x, int N, size_t per_image, double norm, const float *norms)
{
    for (int i = 0; i < N; i++) {
        float *v = x + (size_t)i * per_image;
        double ss = 0;
        for (size_t k = 0; k < per_image; k++) ss += (double)v[k] * v[k];
        double target = norms ? norms[i] : norm;
        if (!(ss > 0)) return npred_errorf(NPRED_ERR_VALUE, "ChangeNorm: image %d has norm 0 (cannot rescale)", i);
        float f = (float)(target / sqrt(ss));
        for (size_t k = 0; k < per_image; k++) v[k] *= f;
    }
    return NPRED_OK;
}

/* ---- Jitter (reflect padding + crop): out[r][c] = x[refl(r - jy)][refl(c - jx)] ---- */

void npred_mei_jitter_forward(float *out, const float *x, int C, int H, int W, int jy, int jx)
{
    for (int ch = 0; ch < C; ch++)
        for (int r = 0; r < H; r++) {
            int sr = pad_index(r - jy, H, NPRED_PAD_REFLECT);
            for (int c = 0; c < W; c++)
                out[((size_t)ch * H + r) * W + c] =
                    x[((size_t)ch * H + sr) * W + pad_index(c - jx, W, NPRED_PAD_REFLECT)];
        }
}

/* adjoint of jitter_forward: dx (overwritten) from dout */
void npred_mei_jitter_backward(float *dx, const float *dout, int C, int H, int W, int jy, int jx)
{
    memset(dx, 0, sizeof(float) * (size_t)C * H * W);
    for (int ch = 0; ch < C; ch++)
        for (int r = 0; r < H; r++) {
            int sr = pad_index(r - jy, H, NPRED_PAD_REFLECT);
            for (int c = 0; c < W; c++)
                dx[((size_t)ch * H + sr) * W + pad_index(c - jx, W, NPRED_PAD_REFLECT)] +=
                    dout[((size_t)ch * H + r) * W + c];
        }
}

npred_status npred_mei_config_validate(const npred_mei_config *c)
{
    if (!(c->lr > 0) || !isfinite(c->lr)) return npred_errorf(NPRED_ERR_CONFIG, "optimizer: lr = %g must be > 0", c->lr);
    if (c->optimizer == NPRED_MEI_SGD && !(c->momentum >= 0 && c->momentum < 1))
        return npred_errorf(NPRED_ERR_CONFIG, "SGD: momentum = %g must be in [0, 1)", c->momentum);
    if (c->optimizer == NPRED_MEI_ADAM &&
        (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) || !(c->eps > 0)))
        return npred_errorf(NPRED_ERR_CONFIG, "Adam: betas (%g, %g) must be in [0, 1) and eps > 0", c->beta1,
                            c->beta2);
    if (c->blur && !(c->truncate > 0))
        return npred_errorf(NPRED_ERR_CONFIG, "GaussianBlur: truncate = %g must be > 0", c->truncate);
    if (c->jitter_y < 0 || c->jitter_x < 0)
        return npred_errorf(NPRED_ERR_CONFIG, "Jitter: max_jitter (%d, %d) must be >= 0", c->jitter_y, c->jitter_x);
    if (c->change_norm && !(c->norm > 0 && isfinite(c->norm)))
        return npred_errorf(NPRED_ERR_CONFIG, "ChangeNorm: norm = %g must be > 0", c->norm);
    if (c->clip && !(c->x_min < c->x_max))
        return npred_errorf(NPRED_ERR_CONFIG, "ClipRange: x_min = %g must be below x_max = %g", c->x_min, c->x_max);
    if (c->num_iterations < 0 || c->num_iterations > 100000000)
        return npred_errorf(NPRED_ERR_CONFIG, "stopper: num_iterations = %d out of range", c->num_iterations);
    if (c->plateau_patience < 0 || !(c->plateau_min_delta >= 0))
        return npred_errorf(NPRED_ERR_CONFIG, "Plateau stopper: patience %d / min_delta %g must be >= 0",
                            c->plateau_patience, c->plateau_min_delta);
    return NPRED_OK;
}

/* sum_j w[i, j] r[i, j] for each image */
static void objective_values(double *f, const float *w, const float *r, int N, int n)
{
    for (int i = 0; i < N; i++) {
        double acc = 0;
        const float *wi = w + (size_t)i * n, *ri = r + (size_t)i * n;
        for (int j = 0; j < n; j++) acc += (double)wi[j] * ri[j];
        f[i] = acc;
    }
}

npred_status npred_insilico_repeat(const npred_model *m, const float *pupil_center, const float *behavior, int N,
                                   float **pc, float **beh)
{
    *pc = *beh = NULL;
    if (npred_model_has_shifter(m)) {
        if (!pupil_center)
            return npred_errorf(NPRED_ERR_ARG, "the model has a shifter: a pupil center (x, y) is required");
        if (!(*pc = malloc(sizeof(float) * 2 * (size_t)N))) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        for (int i = 0; i < N; i++) memcpy(*pc + 2 * (size_t)i, pupil_center, 2 * sizeof(float));
    }
    int k = npred_model_behavior_channels(m);
    if (k > 0) {
        if (!behavior) {
            free(*pc);
            *pc = NULL;
            return npred_errorf(NPRED_ERR_ARG, "the model has a modulator: %d behavior values are required", k);
        }
        if (!(*beh = malloc(sizeof(float) * k * (size_t)N))) {
            free(*pc);
            *pc = NULL;
            return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        }
        for (int i = 0; i < N; i++) memcpy(*beh + (size_t)k * i, behavior, (size_t)k * sizeof(float));
    }
    return NPRED_OK;
}

/* When every objective row has exactly one nonzero weight: the single-neuron gradient
 * plan (npred_neuron_grad_*) and the weights (N); *plan stays NULL otherwise. */
static npred_status single_neurons(npred_model *m, const char *key, const float *w, int N, int n, const float *pc,
                                   const float *beh, npred_neuron_grad **plan, float **one_w)
{
    int *neuron = malloc(sizeof(int) * (size_t)N);
    float *wt = malloc(sizeof(float) * (size_t)N);
    if (!neuron || !wt) {
        free(neuron);
        free(wt);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    int single = 1;
    for (int i = 0; i < N && single; i++) {
        int nz = 0;
        for (int j = 0; j < n; j++)
            if (w[(size_t)i * n + j] != 0.0f) {
                neuron[i] = j;
                wt[i] = w[(size_t)i * n + j];
                nz++;
            }
        single = nz == 1;
    }
    npred_status st = single ? npred_neuron_grad_create(plan, m, key, neuron, N, pc, beh) : NPRED_OK;
    free(neuron);
    if (single && !st) *one_w = wt;
    else free(wt);
    return st;
}

npred_status npred_mei_optimize(npred_model *m, const char *key, const npred_mei_config *cfg,
                                const float *objective, int N, const float *initial, const float *pupil_center,
                                const float *behavior, float *meis, float *activations, float *trace, int *n_steps,
                                npred_insilico_progress_fn progress, void *user)
{
    if (n_steps) *n_steps = 0;
    if (!m || !cfg || !objective || !meis || N < 1)
        return npred_errorf(NPRED_ERR_ARG, "MEI: model, config, objective, output and N >= 1 are required");
    int si = npred_model_session_index(m, key ? key : "");
    if (si < 0) return npred_model_input_gradient(m, key, NULL, 0, NULL, NULL, NULL, NULL, NULL); /* names the key */
    npred_status st = npred_mei_config_validate(cfg);
    if (st) return st;
    int C, H, W;
    npred_model_input_shape(m, &C, &H, &W);
    int steps = npred_mei_max_steps(cfg);
    if (cfg->blur) {
        if ((st = blur_check(cfg, H, W, 0)) || (st = blur_check(cfg, H, W, steps - 1))) return st;
    }
    if (cfg->jitter_y >= H || cfg->jitter_x >= W)
        return npred_errorf(NPRED_ERR_CONFIG, "Jitter: max_jitter (%d, %d) must be below the image size %dx%d",
                            cfg->jitter_y, cfg->jitter_x, H, W);
    int n = npred_model_session_neurons(m, si);
    size_t per = (size_t)C * H * W, tot = per * N;
    float *pc = NULL, *beh = NULL, *one_w = NULL;
    npred_neuron_grad *plan = NULL;
    if ((st = npred_insilico_repeat(m, pupil_center, behavior, N, &pc, &beh))) return st;
    float *g = malloc(sizeof(float) * tot), *xt = cfg->jitter_y || cfg->jitter_x ? malloc(sizeof(float) * tot) : NULL;
    float *mom = cfg->optimizer == NPRED_MEI_ADAM || cfg->momentum > 0 ? calloc(tot, sizeof(float)) : NULL;
    float *vel = cfg->optimizer == NPRED_MEI_ADAM ? calloc(tot, sizeof(float)) : NULL;
    float *rates = malloc(sizeof(float) * (size_t)N * n);
    double *f = malloc(sizeof(double) * N), *best = malloc(sizeof(double) * N);
    int *since = calloc((size_t)N, sizeof(int)), *active = malloc(sizeof(int) * (size_t)N), *jit = NULL;
    int need_mom = cfg->optimizer == NPRED_MEI_ADAM || cfg->momentum > 0;
    if (!g || ((cfg->jitter_y || cfg->jitter_x) && !xt) || (need_mom && !mom) ||
        (cfg->optimizer == NPRED_MEI_ADAM && !vel) || !rates || !f || !best || !since || !active) {
        st = npred_errorf(NPRED_ERR_NOMEM, "MEI: out of memory for %d images", N);
        goto done;
    }
    if ((st = single_neurons(m, key, objective, N, n, pc, beh, &plan, &one_w))) goto done;
    npred_rng rng;
    npred_rng_seed(&rng, cfg->seed);
    if (initial) memcpy(meis, initial, tot * sizeof(float));
    else
        for (size_t k = 0; k < tot; k++) meis[k] = (float)npred_rng_normal(&rng);
    for (size_t k = 0; k < tot; k++)
        if (!isfinite(meis[k])) {
            st = npred_errorf(NPRED_ERR_VALUE, "MEI: initial image %zu holds a non-finite value", k / per);
            goto done;
        }
    for (int i = 0; i < N; i++) {
        active[i] = 1;
        best[i] = -INFINITY;
    }
    int n_active = N, step;
    for (step = 0; step < steps && n_active > 0; step++) {
        const float *in = meis;
        if (xt) {
            if (!jit && !(jit = malloc(sizeof(int) * 2 * (size_t)N))) {
                st = npred_errorf(NPRED_ERR_NOMEM, "MEI: out of memory");
                goto done;
            }
            for (int i = 0; i < N; i++) {
                jit[2 * i] = (int)npred_rng_below(&rng, 2 * (uint64_t)cfg->jitter_y + 1) - cfg->jitter_y;
                jit[2 * i + 1] = (int)npred_rng_below(&rng, 2 * (uint64_t)cfg->jitter_x + 1) - cfg->jitter_x;
                npred_mei_jitter_forward(xt + per * i, meis + per * i, C, H, W, jit[2 * i], jit[2 * i + 1]);
            }
            in = xt;
        }
        if (plan) { /* one neuron per image: only the part of the model that it sees */
            if ((st = npred_neuron_grad_run(plan, in, g, rates))) goto done;
            for (int i = 0; i < N; i++) {
                f[i] = (double)one_w[i] * rates[i];
                if (one_w[i] != 1.0f)
                    for (size_t k = 0; k < per; k++) g[per * i + k] *= one_w[i];
            }
        } else {
            if ((st = npred_model_input_gradient(m, key, in, N, pc, beh, objective, g, rates))) goto done;
            objective_values(f, objective, rates, N, n);
        }
        if (trace)
            for (int i = 0; i < N; i++) trace[(size_t)step * N + i] = (float)f[i];
        if (xt) {
            for (int i = 0; i < N; i++) {
                memcpy(xt + per * i, g + per * i, per * sizeof(float));
                npred_mei_jitter_backward(g + per * i, xt + per * i, C, H, W, jit[2 * i], jit[2 * i + 1]);
            }
        }
        for (size_t k = 0; k < tot; k++) g[k] = -g[k]; /* gradient of the loss -f */
        if (cfg->blur && (st = npred_mei_gaussian_blur(g, N, C, H, W, cfg, step))) goto done;
        /* optimizer step (torch.optim.SGD / Adam semantics), frozen images untouched */
        double bc1 = 1 - pow(cfg->beta1, step + 1), bc2 = 1 - pow(cfg->beta2, step + 1);
        for (int i = 0; i < N; i++) {
            if (!active[i]) continue;
            float *x = meis + per * i, *gi = g + per * i;
            if (cfg->optimizer == NPRED_MEI_ADAM) {
                float *mi = mom + per * i, *vi = vel + per * i;
                float step_size = (float)(cfg->lr / bc1), sq = (float)sqrt(bc2);
                for (size_t k = 0; k < per; k++) {
                    mi[k] = (float)cfg->beta1 * mi[k] + (float)(1 - cfg->beta1) * gi[k];
                    vi[k] = (float)cfg->beta2 * vi[k] + (float)(1 - cfg->beta2) * gi[k] * gi[k];
                    x[k] -= step_size * mi[k] / (sqrtf(vi[k]) / sq + (float)cfg->eps);
                }
            } else if (cfg->momentum > 0) {
                float *mi = mom + per * i;
                for (size_t k = 0; k < per; k++) {
                    mi[k] = step ? (float)cfg->momentum * mi[k] + gi[k] : gi[k];
                    x[k] -= (float)cfg->lr * mi[k];
                }
            } else {
                for (size_t k = 0; k < per; k++) x[k] -= (float)cfg->lr * gi[k];
            }
            if (cfg->change_norm && (st = npred_mei_change_norm(x, 1, per, cfg->norm, NULL))) {
                npred_error_prefix(st, "MEI of image %d at step %d", i, step);
                goto done;
            }
            if (cfg->clip)
                for (size_t k = 0; k < per; k++)
                    x[k] = x[k] < cfg->x_min ? (float)cfg->x_min : x[k] > cfg->x_max ? (float)cfg->x_max : x[k];
            for (size_t k = 0; k < per; k++)
                if (!isfinite(x[k])) {
                    st = npred_errorf(NPRED_ERR_VALUE, "MEI of image %d became non-finite at step %d (lower lr?)", i,
                                      step);
                    goto done;
                }
            if (cfg->plateau_patience > 0) {
                if (f[i] > best[i] + cfg->plateau_min_delta * fabs(best[i]) || !isfinite(best[i])) {
                    best[i] = f[i];
                    since[i] = 0;
                } else if (++since[i] >= cfg->plateau_patience) {
                    active[i] = 0;
                    n_active--;
                }
            }
        }
        if (progress && progress(user, step + 1, steps)) {
            st = npred_errorf(NPRED_ERR_INTERRUPTED, "MEI: stopped at step %d", step + 1);
            goto done;
        }
    }
    if (n_steps) *n_steps = step;
    if (activations) {
        if ((st = npred_model_predict(m, key, meis, N, pc, beh, rates))) goto done;
        objective_values(f, objective, rates, N, n);
        for (int i = 0; i < N; i++) activations[i] = (float)f[i];
    }
done:
    npred_neuron_grad_free(plan);
    free(one_w);
    free(jit);
    free(pc);
    free(beh);
    free(g);
    free(xt);
    free(mom);
    free(vel);
    free(rates);
    free(f);
    free(best);
    free(since);
    free(active);
    return st;
}
