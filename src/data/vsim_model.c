/* Movie-scan simulator, ground truth: clips (natural scenes, gratings, white noise),
 * behaviour traces, spatio-temporal Gabor neurons with a static nonlinearity and
 * adaptation. Formulas: docs/simulate-video.md. Every random number comes from an
 * npred_rng seeded by a hash of (seed, purpose, index), so nothing depends on the
 * thread count. */
#include "data/vsim_internal.h"
#include "data/sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ clips */

static int canvas_margin(const npred_vsim_params *p) { return p->height / 2 > 4 ? p->height / 2 : 4; }

size_t vsim_clip_tmp_len(const npred_vsim_params *p)
{
    int M = canvas_margin(p), CH = p->height + 2 * M, CW = p->width + 2 * M;
    return (size_t)CH * CW + sim_gen_tmp_len(CH, CW) + (size_t)p->height * p->width;
}

vsim_clip vsim_clip_info(const npred_vsim_params *p, int64_t id)
{
    npred_rng r;
    rng_for(&r, p->seed, VTAG_CLIP, (uint64_t)id, 0);
    int kinds[3], nk = 0;
    for (int b = 0; b < 3; b++)
        if (p->stimuli & (1u << b)) kinds[nk++] = 1 << b;
    vsim_clip c;
    c.id = id;
    c.kind = kinds[npred_rng_below(&r, (uint64_t)nk)];
    c.length = p->min_frames + (int)npred_rng_below(&r, (uint64_t)(p->frames - p->min_frames + 1));
    return c;
}

static int seg_frames(npred_rng *r, double lo_s, double hi_s, double fps)
{
    int k = (int)floor(unif(r, lo_s, hi_s) * fps + 0.5);
    return k < 1 ? 1 : k;
}

static float to_pixel(double v)
{
    v = floor(v + 0.5);
    return (float)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Store frame f (H, W) as column t of video (H, W, T). */
static void put_frame(float *video, const float *f, int HW, int T, int t)
{
    for (int i = 0; i < HW; i++) video[(size_t)i * T + t] = f[i];
}

void vsim_clip_frames(float *video, const npred_vsim_params *p, const vsim_clip *c, float *tmp)
{
    int H = p->height, W = p->width, T = p->frames, HW = H * W;
    int M = canvas_margin(p), CH = H + 2 * M, CW = W + 2 * M;
    float *canvas = tmp, *gtmp = tmp + (size_t)CH * CW, *frame = gtmp + sim_gen_tmp_len(CH, CW);
    npred_rng r;
    rng_for(&r, p->seed, VTAG_CLIP, (uint64_t)c->id, 1);
    int t = 0, seg = 0;
    while (t < c->length) {
        if (c->kind == NPRED_VSIM_NATURAL) {
            /* a scene (1/f noise with occluders) panned along a straight line */
            int nf = seg_frames(&r, 1.0, 3.0, p->fps);
            sim_gen_image(canvas, CH, CW, hash_mix(hash_mix(p->seed, VTAG_SEGMENT), hash_mix((uint64_t)c->id, (uint64_t)seg)),
                          gtmp);
            double dir = unif(&r, 0, 2 * M_PI), dist = unif(&r, 0, 1.8 * M);
            double vx = dist * cos(dir) / nf, vy = dist * sin(dir) / nf;
            double ox = -0.5 * dist * cos(dir), oy = -0.5 * dist * sin(dir);
            for (int k = 0; k < nf && t < c->length; k++, t++) {
                double sx = M + ox + vx * k, sy = M + oy + vy * k;
                int x0 = (int)floor(sx), y0 = (int)floor(sy);
                double tx = sx - x0, ty = sy - y0;
                for (int y = 0; y < H; y++) {
                    const float *r0 = canvas + (size_t)(y0 + y) * CW + x0, *r1 = r0 + CW;
                    for (int x = 0; x < W; x++) {
                        double v = (1 - ty) * ((1 - tx) * r0[x] + tx * r0[x + 1]) + ty * ((1 - tx) * r1[x] + tx * r1[x + 1]);
                        frame[y * W + x] = to_pixel(v);
                    }
                }
                put_frame(video, frame, HW, T, t);
            }
        } else if (c->kind == NPRED_VSIM_GRATINGS) {
            int nf = seg_frames(&r, 0.5, 2.0, p->fps);
            double th = unif(&r, 0, M_PI), period = H * unif(&r, 0.1, 0.4), tf = unif(&r, 0.5, 4.0);
            double con = unif(&r, 0.2, 1.0), ph = unif(&r, 0, 2 * M_PI);
            double kx = 2 * M_PI * cos(th) / period, ky = 2 * M_PI * sin(th) / period;
            for (int k = 0; k < nf && t < c->length; k++, t++) {
                double w = ph - 2 * M_PI * tf * k / p->fps;
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++) frame[y * W + x] = to_pixel(128.0 + 127.0 * con * sin(kx * x + ky * y + w));
                put_frame(video, frame, HW, T, t);
            }
        } else {
            for (; t < c->length; t++) {
                for (int i = 0; i < HW; i++) frame[i] = (float)npred_rng_below(&r, 256);
                put_frame(video, frame, HW, T, t);
            }
        }
        seg++;
    }
    for (int i = 0; i < HW; i++)
        for (int k = c->length; k < T; k++) video[(size_t)i * T + k] = NAN;
}

/* ------------------------------------------------------------------ behaviour */

static double ou_step(npred_rng *r, double x, double tau_s, double fps)
{
    double rho = exp(-1.0 / (tau_s * fps));
    return rho * x + sqrt(1 - rho * rho) * npred_rng_normal(r);
}

void vsim_behavior(float *beh, float *eye, const npred_vsim_params *p, int length, npred_rng *r)
{
    int T = p->frames;
    double A = npred_rng_normal(r), P = npred_rng_normal(r), S = npred_rng_normal(r);
    double EX = npred_rng_normal(r), EY = npred_rng_normal(r);
    for (int t = 0; t < T; t++) {
        if (t >= length) {
            beh[t] = beh[T + t] = eye[t] = eye[T + t] = NAN;
            continue;
        }
        if (t > 0) {
            A = ou_step(r, A, VSIM_TAU_AROUSAL, p->fps);
            P = ou_step(r, P, VSIM_TAU_PUPIL, p->fps);
            S = ou_step(r, S, VSIM_TAU_RUN, p->fps);
            EX = ou_step(r, EX, VSIM_TAU_EYE, p->fps);
            EY = ou_step(r, EY, VSIM_TAU_EYE, p->fps);
        }
        double pupil = VSIM_PUPIL_MEAN + VSIM_PUPIL_SD * (0.9 * A + 0.3 * P);
        beh[t] = (float)(pupil > 1.0 ? pupil : 1.0);
        double run = 4.0 * (A + 0.8 * S) - 1.0;
        beh[T + t] = (float)(run > 0 ? run : 0.0);
        eye[t] = (float)(VSIM_EYE_X + VSIM_EYE_SDX * EX);
        eye[T + t] = (float)(VSIM_EYE_Y + VSIM_EYE_SDY * EY);
    }
}

/* ------------------------------------------------------------------ neurons */

void vsim_neurons_free(vsim_neurons *nr)
{
    free(nr->unit_ids);
    free(nr->coords);
    free(nr->rf_grid);
    free(nr->rf_pix);
    free(nr->anchor);
    free(nr->gabor);
    free(nr->G);
    free(nr->tpar);
    free(nr->h);
    free(nr->slope);
    free(nr->bias);
    free(nr->gain);
    free(nr->alpha);
    free(nr->kappa);
    memset(nr, 0, sizeof *nr);
}

/* Gabor window of neuron j: g(p) = exp(-|p - c|^2 / (2 sigma^2)) cos(2 pi (p - c).(cos th, sin th) / lambda + phi)
 * over the D x D pixels around the anchor, minus the envelope times (sum g / sum env),
 * scaled to unit L2 norm. */
static void gabor_kernel(vsim_neurons *nr, int j, double *g, double *env)
{
    int R = nr->R, D = nr->D;
    const double *gb = nr->gabor + 4 * j;
    double cx = nr->rf_pix[2 * j], cy = nr->rf_pix[2 * j + 1];
    double ct = cos(gb[0]), st = sin(gb[0]), sg = 0, se = 0, nrm = 0;
    for (int dy = -R; dy <= R; dy++)
        for (int dx = -R; dx <= R; dx++) {
            double px = (double)(nr->anchor[2 * j] + dx) - cx, py = (double)(nr->anchor[2 * j + 1] + dy) - cy;
            double e = exp(-(px * px + py * py) / (2 * gb[2] * gb[2]));
            int q = (dy + R) * D + dx + R;
            env[q] = e;
            g[q] = e * cos(2 * M_PI * (px * ct + py * st) / gb[1] + gb[3]);
            sg += g[q];
            se += e;
        }
    for (int q = 0; q < D * D; q++) {
        g[q] -= env[q] * sg / se;
        nrm += g[q] * g[q];
    }
    nrm = sqrt(nrm);
    for (int q = 0; q < D * D; q++) nr->G[(size_t)j * D * D + q] = (float)(g[q] / nrm);
}

/* h(tau) = (tau/t1)^3 exp(-tau/t1) - beta (tau/t2)^3 exp(-tau/t2) at tau = k / fps,
 * divided by fps * integral |h| (so a slow stimulus meets sum_k h[k] ~ the continuous
 * kernel's area whatever the frame rate). */
static double temporal_raw(double tau, const double *tp)
{
    double a = tau / tp[0], b = tau / tp[1];
    return a * a * a * exp(-a) - tp[2] * b * b * b * exp(-b);
}

static void temporal_kernel(vsim_neurons *nr, int j)
{
    const double *tp = nr->tpar + 3 * j;
    /* integral of |h| on a fine grid over the kernel's support */
    double area = 0, dt = 1e-4;
    for (double tau = 0.5 * dt; tau < VSIM_KERNEL_S; tau += dt) area += fabs(temporal_raw(tau, tp)) * dt;
    for (int k = 0; k < nr->L; k++) nr->h[(size_t)j * nr->L + k] = temporal_raw(k / nr->fps, tp) / (nr->fps * area);
}

size_t vsim_rates_tmp_len(const vsim_neurons *nr, int T_max)
{
    return (size_t)nr->H * nr->W + (size_t)nr->n * T_max;
}

/* u (n, T_max): u_j(t) = sum_{k <= min(t, L-1)} h_j[k] s_j(t - k) with s_j(t) the
 * spatial kernel applied to the standardised, eye-shifted frame t (frames < length). */
static void linear_drive(double *u, const vsim_neurons *nr, const npred_vsim_params *p, const float *video,
                         const float *eye, int length, double *xs)
{
    int H = nr->H, W = nr->W, T = p->frames, R = nr->R, D = nr->D, n = nr->n;
    for (int t = 0; t < length; t++) {
        double dx = 0, dy = 0;
        if (eye) {
            double gx, gy;
            const float e2[2] = {eye[t], eye[T + t]};
            sim_eye_shift(e2, &gx, &gy);
            dx = gx * (W - 1) / 2.0;
            dy = gy * (H - 1) / 2.0;
        }
        /* xs(y, x) = bilinear(x_t, (x + dx, y + dy)), zero outside the frame */
        int x0 = (int)floor(dx), y0 = (int)floor(dy);
        double fx = dx - x0, fy = dy - y0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double v = 0;
                for (int a = 0; a < 2; a++) {
                    int yy = y + y0 + a;
                    double wy = a ? fy : 1 - fy;
                    if (yy < 0 || yy >= H || wy == 0) continue;
                    for (int b = 0; b < 2; b++) {
                        int xx = x + x0 + b;
                        double wx = b ? fx : 1 - fx;
                        if (xx < 0 || xx >= W || wx == 0) continue;
                        v += wy * wx * (video[((size_t)yy * W + xx) * T + t] - 128.0) / 64.0;
                    }
                }
                xs[y * W + x] = v;
            }
        for (int j = 0; j < n; j++) {
            const float *g = nr->G + (size_t)j * D * D;
            int ax = (int)nr->anchor[2 * j], ay = (int)nr->anchor[2 * j + 1];
            double s = 0;
            for (int ddy = -R; ddy <= R; ddy++) {
                int y = ay + ddy;
                if (y < 0 || y >= H) continue;
                for (int ddx = -R; ddx <= R; ddx++) {
                    int x = ax + ddx;
                    if (x < 0 || x >= W) continue;
                    s += (double)g[(ddy + R) * D + ddx + R] * xs[y * W + x];
                }
            }
            u[(size_t)j * T + t] = s;
        }
    }
    /* temporal filter in place, last frame first */
    for (int j = 0; j < n; j++) {
        double *uj = u + (size_t)j * T;
        const double *hj = nr->h + (size_t)j * nr->L;
        for (int t = length - 1; t >= 0; t--) {
            double v = 0;
            for (int k = 0; k < nr->L && k <= t; k++) v += hj[k] * uj[t - k];
            uj[t] = v;
        }
    }
}

static double modulation(double pupil, double run)
{
    return clampd(0.6 * (pupil - VSIM_PUPIL_MEAN) / VSIM_PUPIL_SD + 0.4 * (run / 4.0 - 0.5), -3.0, 3.0);
}

void vsim_rates(float *lam, const vsim_neurons *nr, const npred_vsim_params *p, const float *video,
                const float *beh, const float *eye, int length, double *tmp)
{
    int T = p->frames, n = nr->n;
    double *xs = tmp, *u = tmp + (size_t)nr->H * nr->W;
    linear_drive(u, nr, p, video, p->modulate ? eye : NULL, length, xs);
    double rho = exp(-1.0 / (p->adaptation_tau * p->fps));
    for (int j = 0; j < n; j++) {
        double a = 0, qprev = 0;
        for (int t = 0; t < length; t++) {
            if (t > 0) a = rho * a + (1 - rho) * qprev;
            double q = softplus(nr->slope[j] * u[(size_t)j * T + t] + nr->bias[j]);
            double m = p->modulate && beh ? modulation(beh[t], beh[T + t]) : 0.0;
            lam[(size_t)j * T + t] = (float)(nr->gain[j] * q / (1 + nr->alpha[j] * a) * exp(nr->kappa[j] * m));
            qprev = q;
        }
        for (int t = length; t < T; t++) lam[(size_t)j * T + t] = NAN;
    }
}

npred_status vsim_neurons_make(vsim_neurons *nr, const npred_vsim_params *p, int session)
{
    int n = p->n_neurons, H = p->height, W = p->width;
    memset(nr, 0, sizeof *nr);
    nr->n = n;
    nr->H = H;
    nr->W = W;
    nr->fps = p->fps;
    nr->R = (int)ceil(VSIM_RADIUS * VSIM_SIGMA_HI * H);
    nr->D = 2 * nr->R + 1;
    nr->L = (int)ceil(VSIM_KERNEL_S * p->fps);
    if (nr->L < 2) nr->L = 2;
    size_t DD = (size_t)nr->D * nr->D;
    nr->unit_ids = npred_calloc((size_t)n, sizeof(int64_t));
    nr->coords = npred_calloc((size_t)n * 3, sizeof(double));
    nr->rf_grid = npred_calloc((size_t)n * 2, sizeof(double));
    nr->rf_pix = npred_calloc((size_t)n * 2, sizeof(double));
    nr->anchor = npred_calloc((size_t)n * 2, sizeof(int64_t));
    nr->gabor = npred_calloc((size_t)n * 4, sizeof(double));
    nr->G = npred_calloc((size_t)n * DD, sizeof(float));
    nr->tpar = npred_calloc((size_t)n * 3, sizeof(double));
    nr->h = npred_calloc((size_t)n * nr->L, sizeof(double));
    nr->slope = npred_calloc((size_t)n, sizeof(double));
    nr->bias = npred_calloc((size_t)n, sizeof(double));
    nr->gain = npred_calloc((size_t)n, sizeof(double));
    nr->alpha = npred_calloc((size_t)n, sizeof(double));
    nr->kappa = npred_calloc((size_t)n, sizeof(double));
    double *g = npred_calloc(2 * DD, sizeof(double));
    double *offset = npred_calloc((size_t)n, sizeof(double));
    if (!nr->unit_ids || !nr->coords || !nr->rf_grid || !nr->rf_pix || !nr->anchor || !nr->gabor || !nr->G ||
        !nr->tpar || !nr->h || !nr->slope || !nr->bias || !nr->gain || !nr->alpha || !nr->kappa || !g || !offset) {
        free(g);
        free(offset);
        vsim_neurons_free(nr);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory for %d neurons", n);
    }
    npred_rng r;
    rng_for(&r, p->seed, VTAG_NEURONS, (uint64_t)session, 0);
    sim_retinotopy_draw(&r, nr->retino);
    int64_t id = 0;
    for (int j = 0; j < n; j++) {
        sim_place_neuron(&r, nr->retino, &id, nr->unit_ids + j, nr->coords + 3 * j, nr->rf_grid + 2 * j);
        double px = (nr->rf_grid[2 * j] + 1) / 2 * (W - 1), py = (nr->rf_grid[2 * j + 1] + 1) / 2 * (H - 1);
        nr->rf_pix[2 * j] = px;
        nr->rf_pix[2 * j + 1] = py;
        nr->anchor[2 * j] = (int64_t)floor(px + 0.5);
        nr->anchor[2 * j + 1] = (int64_t)floor(py + 0.5);
        double *gb = nr->gabor + 4 * j;
        gb[2] = H * unif(&r, VSIM_SIGMA_LO, VSIM_SIGMA_HI);
        gb[1] = gb[2] * unif(&r, 2.2, 3.2);
        gb[0] = unif(&r, 0, M_PI);
        gb[3] = unif(&r, 0, 2 * M_PI);
        double *tp = nr->tpar + 3 * j;
        tp[0] = unif(&r, 0.015, 0.030);
        tp[1] = tp[0] * unif(&r, 1.5, 2.0);
        tp[2] = unif(&r, 0.3, 0.7);
        nr->slope[j] = unif(&r, 1.0, 2.0); /* divided by the calibrated std below */
        offset[j] = unif(&r, -2.0, -0.5);
        nr->gain[j] = p->rate_scale * exp(0.4 * npred_rng_normal(&r));
        nr->alpha[j] = p->adaptation * unif(&r, 0.5, 1.5);
        double kap = unif(&r, 0.0, 0.5);
        nr->kappa[j] = p->modulate ? kap : 0.0;
        gabor_kernel(nr, j, g, g + DD);
        temporal_kernel(nr, j);
    }
    free(g);

    /* calibration: mean and std of u_j over natural clips at neutral behaviour;
     * z = slope (u - mean) / std + offset */
    npred_vsim_params cp = *p;
    cp.stimuli = NPRED_VSIM_NATURAL;
    cp.modulate = 0;
    int len = (int)ceil(3.0 * p->fps);
    if (len < nr->L + 10) len = nr->L + 10;
    cp.frames = cp.min_frames = len;
    float *video = npred_calloc((size_t)H * W * len, sizeof(float));
    float *ctmp = npred_calloc(vsim_clip_tmp_len(&cp), sizeof(float));
    double *u = npred_calloc((size_t)n * len + (size_t)H * W, sizeof(double));
    double *sum = npred_calloc((size_t)n * 2, sizeof(double));
    npred_status s = NPRED_OK;
    if (!video || !ctmp || !u || !sum) {
        s = npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory (calibration)");
    } else {
        for (int c = 0; c < VSIM_N_CALIB; c++) {
            vsim_clip clip = {(int64_t)hash_mix(hash_mix(p->seed, VTAG_CALIB), (uint64_t)c) >> 1, NPRED_VSIM_NATURAL, len};
            vsim_clip_frames(video, &cp, &clip, ctmp);
            linear_drive(u + (size_t)H * W, nr, &cp, video, NULL, len, u);
            for (int j = 0; j < n; j++)
                for (int t = 0; t < len; t++) {
                    double v = u[(size_t)H * W + (size_t)j * len + t];
                    sum[2 * j] += v;
                    sum[2 * j + 1] += v * v;
                }
        }
        double cnt = (double)VSIM_N_CALIB * len;
        for (int j = 0; j < n; j++) {
            double mean = sum[2 * j] / cnt, var = sum[2 * j + 1] / cnt - mean * mean;
            double sd = var > 1e-12 ? sqrt(var) : 1.0;
            nr->slope[j] /= sd;
            nr->bias[j] = offset[j] - nr->slope[j] * mean;
        }
    }
    free(video);
    free(ctmp);
    free(u);
    free(sum);
    free(offset);
    if (s) vsim_neurons_free(nr);
    return s;
}
