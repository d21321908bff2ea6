/* Simulator, ground-truth model: Gabor filter bank on the downsampled image,
 * rectified and standardised features, neurons reading them at their receptive
 * fields (with eye-position shifts and behavioural modulation), and the per-thread
 * workspace. */
#include "data/sim_internal.h"
#include "base/threads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void sim_build_filters(gt_model *m)
{
    memset(m->filt, 0, sizeof m->filt);
    for (int s = 0; s < N_SCALE; s++) {
        double lam = LAMBDA0 * (double)(1 << s), sig = 0.5 * lam;
        int r = (int)ceil(2.0 * sig);
        if (r > KPAD) r = KPAD;
        m->lambda[s] = lam;
        m->sigma[s] = sig;
        m->radius[s] = r;
        for (int o = 0; o < N_ORI; o++) {
            double th = M_PI * o / N_ORI, ct = cos(th), st = sin(th);
            for (int ph = 0; ph < 2; ph++) {
                int l = (s * N_ORI + o) * 2 + ph;
                double g[KMAX][KMAX], env[KMAX][KMAX], sg = 0, se = 0;
                for (int y = -r; y <= r; y++)
                    for (int x = -r; x <= r; x++) {
                        double e = exp(-(x * x + y * y) / (2 * sig * sig));
                        double xr = x * ct + y * st;
                        env[y + KPAD][x + KPAD] = e;
                        g[y + KPAD][x + KPAD] = e * cos(2 * M_PI * xr / lam + (ph ? M_PI / 2 : 0));
                        sg += g[y + KPAD][x + KPAD];
                        se += e;
                    }
                double nrm = 0;
                for (int y = -r; y <= r; y++) /* remove the DC component, keep the envelope */
                    for (int x = -r; x <= r; x++) {
                        g[y + KPAD][x + KPAD] -= env[y + KPAD][x + KPAD] * sg / se;
                        nrm += g[y + KPAD][x + KPAD] * g[y + KPAD][x + KPAD];
                    }
                nrm = sqrt(nrm);
                for (int y = -r; y <= r; y++)
                    for (int x = -r; x <= r; x++) m->filt[l][y + KPAD][x + KPAD] = (float)(g[y + KPAD][x + KPAD] / nrm);
            }
        }
    }
}

/* Downsample by f (skimage rescale(1/f), bilinear, grid_mode: output pixel i samples
 * input coordinate (i + 0.5) f - 0.5) and map to x = (v - 128) / 64, into a buffer
 * zero-padded by KPAD on every side. */
static void downsample_pad(float *xp /* (h + 2 KPAD, w + 2 KPAD) */, const float *img /* (H, W) */,
                           const gt_model *m)
{
    int h = m->h, w = m->w, f = m->f, pw = w + 2 * KPAD;
    memset(xp, 0, sizeof(float) * (size_t)(h + 2 * KPAD) * pw);
    for (int i = 0; i < h; i++) {
        double cy = (i + 0.5) * f - 0.5;
        int y0 = (int)floor(cy);
        double ty = cy - y0;
        int y1 = y0 + 1 < m->H ? y0 + 1 : y0;
        for (int j = 0; j < w; j++) {
            double cx = (j + 0.5) * f - 0.5;
            int x0 = (int)floor(cx);
            double tx = cx - x0;
            int x1 = x0 + 1 < m->W ? x0 + 1 : x0;
            const float *r0 = img + (size_t)y0 * m->W, *r1 = img + (size_t)y1 * m->W;
            double v = (1 - ty) * ((1 - tx) * r0[x0] + tx * r0[x1]) + ty * ((1 - tx) * r1[x0] + tx * r1[x1]);
            xp[(size_t)(i + KPAD) * pw + j + KPAD] = (float)((v - IMG_GRAY) / IMG_SCALE);
        }
    }
}

/* Rectified Gabor features, channel-last: F[i, j, 2 l + 0] = relu(y_l), [2 l + 1] = relu(-y_l),
 * with y_l = filter l correlated with the zero-padded x ("same" size). */
static void features(float *F /* (h, w, K) */, const float *xp /* (h + 2 KPAD, w + 2 KPAD) */,
                     float *y /* (w) */, const gt_model *m)
{
    int h = m->h, w = m->w, pw = w + 2 * KPAD;
    for (int l = 0; l < N_LIN; l++) {
        int r = m->radius[l / (2 * N_ORI)];
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) y[j] = 0;
            for (int dy = -r; dy <= r; dy++) {
                const float *src = xp + (size_t)(i + KPAD + dy) * pw + KPAD;
                for (int dx = -r; dx <= r; dx++) {
                    float g = m->filt[l][dy + KPAD][dx + KPAD];
                    const float *s = src + dx;
                    for (int j = 0; j < w; j++) y[j] += g * s[j];
                }
            }
            float *out = F + (size_t)i * w * N_FEAT + 2 * l;
            for (int j = 0; j < w; j++) {
                out[(size_t)j * N_FEAT] = y[j] > 0 ? y[j] : 0.0f;
                out[(size_t)j * N_FEAT + 1] = y[j] < 0 ? -y[j] : 0.0f;
            }
        }
    }
}

void sim_neurons_free(gt_neurons *nr)
{
    free(nr->unit_ids);
    free(nr->coords);
    free(nr->rf_grid);
    free(nr->rf_pix);
    free(nr->weight);
    free(nr->bias);
    free(nr->gain);
    free(nr->kappa);
    free(nr->match_id);
    memset(nr, 0, sizeof *nr);
}

/* Retinotopy of a session: rotation, anisotropic scale, optional mirror, offset,
 * and the centre of the imaged patch. */
void sim_retinotopy_draw(npred_rng *r, double rt[8])
{
    double th = unif(r, 0, 2 * M_PI), sx = unif(r, 0.45, 0.65), sy = unif(r, 0.45, 0.65);
    double flip = npred_rng_below(r, 2) ? -1.0 : 1.0, ox = unif(r, -0.1, 0.1), oy = unif(r, -0.1, 0.1);
    double x0 = unif(r, -500, 500), y0 = unif(r, -500, 500);
    double v[8] = {th, sx, sy, flip, ox, oy, x0, y0};
    memcpy(rt, v, sizeof v);
}

/* One neuron: its unit id (after *id, with gaps), cortical position (µm) and RF
 * centre in grid units through the session's map (docs/simulate.md, Retinotopy). */
void sim_place_neuron(npred_rng *r, const double rt[8], int64_t *id, int64_t *unit_id, double coords[3],
                      double grid[2])
{
    double ct = cos(rt[0]), st = sin(rt[0]);
    *id += 1 + (npred_rng_uniform(r) < 0.08 ? 1 + (int64_t)npred_rng_below(r, 3) : 0);
    *unit_id = *id;
    double cx = unif(r, -1, 1), cy = unif(r, -1, 1);
    coords[0] = rt[6] + CORTEX_HALF * cx;
    coords[1] = rt[7] + CORTEX_HALF * cy;
    coords[2] = 190.0 + 25.0 * (double)npred_rng_below(r, 6) + unif(r, 0, 4);
    double a = rt[1] * cx, b = rt[3] * rt[2] * cy;
    double gx = ct * a - st * b + rt[4] + RF_NONLIN * cx * cy + RF_SCATTER * npred_rng_normal(r);
    double gy = st * a + ct * b + rt[5] + RF_NONLIN * (cx * cx - 1.0 / 3.0) + RF_SCATTER * npred_rng_normal(r);
    grid[0] = clampd(gx, -RF_LIMIT, RF_LIMIT);
    grid[1] = clampd(gy, -RF_LIMIT, RF_LIMIT);
}

static npred_status make_own(gt_neurons *nr, const npred_sim_params *p, const gt_model *m, int session)
{
    int n = p->n_neurons;
    memset(nr, 0, sizeof *nr);
    nr->n = n;
    nr->unit_ids = npred_calloc((size_t)n, sizeof(int64_t));
    nr->coords = npred_calloc((size_t)n * 3, sizeof(double));
    nr->rf_grid = npred_calloc((size_t)n * 2, sizeof(double));
    nr->rf_pix = npred_calloc((size_t)n * 2, sizeof(double));
    nr->weight = npred_calloc((size_t)n * N_FEAT, sizeof(float));
    nr->bias = npred_calloc((size_t)n, sizeof(double));
    nr->gain = npred_calloc((size_t)n, sizeof(double));
    nr->kappa = npred_calloc((size_t)n, sizeof(double));
    if (!nr->unit_ids || !nr->coords || !nr->rf_grid || !nr->rf_pix || !nr->weight || !nr->bias || !nr->gain ||
        !nr->kappa) {
        sim_neurons_free(nr);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %d neurons", n);
    }
    npred_rng r;
    rng_for(&r, p->seed, TAG_NEURONS, (uint64_t)session, 0);
    sim_retinotopy_draw(&r, nr->retino);
    int64_t id = 0;
    for (int j = 0; j < n; j++) {
        sim_place_neuron(&r, nr->retino, &id, nr->unit_ids + j, nr->coords + 3 * j, nr->rf_grid + 2 * j);
        double gx = nr->rf_grid[2 * j], gy = nr->rf_grid[2 * j + 1];
        nr->rf_pix[2 * j] = m->f * (gx + 1) / 2 * (m->w - 1) + (m->f - 1) / 2.0;
        nr->rf_pix[2 * j + 1] = m->f * (gy + 1) / 2 * (m->h - 1) + (m->f - 1) / 2.0;
        /* feature weights: a preferred scale/orientation/phase, partial phase
         * invariance ("complexity"), small weights everywhere; unit norm on the
         * standardised features */
        double wv[N_FEAT], nrm = 0;
        int ps = (int)npred_rng_below(&r, N_SCALE), po = (int)npred_rng_below(&r, N_ORI);
        int pp = (int)npred_rng_below(&r, 4);
        double cplx = npred_rng_uniform(&r);
        for (int k = 0; k < N_FEAT; k++) wv[k] = 0.15 * npred_rng_normal(&r);
        for (int q = 0; q < 4; q++) wv[((ps * N_ORI + po) * 2 + q / 2) * 2 + q % 2] += q == pp ? 1.0 : cplx;
        for (int k = 0; k < N_FEAT; k++) nrm += wv[k] * wv[k];
        nrm = sqrt(nrm);
        double slope = unif(&r, 1.0, 2.0), offset = unif(&r, -2.0, -0.5), bias = offset;
        for (int k = 0; k < N_FEAT; k++) {
            float wk = (float)(slope * wv[k] / nrm / m->feat_std[k]);
            nr->weight[(size_t)j * N_FEAT + k] = wk;
            bias -= (double)wk * m->feat_mean[k];
        }
        nr->bias[j] = bias;
        nr->gain[j] = p->rate_scale * exp(0.4 * npred_rng_normal(&r));
        double kap = unif(&r, 0.0, 0.5);
        nr->kappa[j] = p->modulate ? kap : 0.0;
    }
    return NPRED_OK;
}

/* The S = round(F n) shared neurons sit at S random places of every session (a
 * permutation per session); the k-th is session 0's neuron at its k-th place, copied
 * whole (cortical position, RF, weights, bias, gain, modulation) into the other
 * sessions. multi_match_id: k + 1 for shared neuron k, 1000000 (s + 1) + j + 1 for the
 * others, so the shared neurons come first in np.unique order (rank k in every session). */
static int n_shared(const npred_sim_params *p) { return (int)floor(p->shared_neurons * p->n_neurons + 0.5); }

static npred_status shared_places(int *pos, const npred_sim_params *p, int session)
{
    int n = p->n_neurons;
    int *perm = npred_calloc((size_t)n, sizeof *perm);
    if (!perm) return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory");
    npred_rng r;
    rng_for(&r, p->seed, TAG_SHARED, (uint64_t)session, 0);
    for (int j = 0; j < n; j++) perm[j] = j;
    for (int j = n - 1; j > 0; j--) { /* Fisher-Yates */
        int k = (int)npred_rng_below(&r, (uint64_t)j + 1), t = perm[j];
        perm[j] = perm[k];
        perm[k] = t;
    }
    memcpy(pos, perm, (size_t)n_shared(p) * sizeof *pos);
    free(perm);
    return NPRED_OK;
}

npred_status sim_neurons_make(gt_neurons *nr, const npred_sim_params *p, const gt_model *m, int session)
{
    npred_status s = make_own(nr, p, m, session);
    if (s || !(p->shared_neurons > 0)) return s;
    int n = p->n_neurons, S = n_shared(p);
    nr->match_id = npred_calloc((size_t)n, sizeof(int64_t));
    int *pos = npred_calloc((size_t)n, sizeof *pos), *pos0 = npred_calloc((size_t)n, sizeof *pos0);
    gt_neurons first;
    memset(&first, 0, sizeof first);
    if (!nr->match_id || !pos || !pos0) s = npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory");
    if (!s) s = shared_places(pos, p, session);
    if (!s && session > 0) {
        s = shared_places(pos0, p, 0);
        if (!s) s = make_own(&first, p, m, 0);
    }
    if (!s) {
        for (int j = 0; j < n; j++) nr->match_id[j] = 1000000LL * (session + 1) + j + 1;
        for (int k = 0; k < S; k++) {
            int j = pos[k];
            nr->match_id[j] = k + 1;
            if (session == 0) continue;
            int i = pos0[k];
            memcpy(nr->coords + 3 * j, first.coords + 3 * i, 3 * sizeof(double));
            memcpy(nr->rf_grid + 2 * j, first.rf_grid + 2 * i, 2 * sizeof(double));
            memcpy(nr->rf_pix + 2 * j, first.rf_pix + 2 * i, 2 * sizeof(double));
            memcpy(nr->weight + (size_t)j * N_FEAT, first.weight + (size_t)i * N_FEAT, N_FEAT * sizeof(float));
            nr->bias[j] = first.bias[i];
            nr->gain[j] = first.gain[i];
            nr->kappa[j] = first.kappa[i];
        }
    }
    if (session > 0) sim_neurons_free(&first);
    free(pos);
    free(pos0);
    if (s) sim_neurons_free(nr);
    return s;
}

/* Noise-free rates of all neurons for one feature map. shift: grid units added to
 * every RF position; mod: modulation signal (rate *= exp(kappa mod)). */
void sim_rates(double *lam /* (n) */, const float *F /* (h, w, K) */, const gt_model *m,
               const gt_neurons *nr, double shx, double shy, double mod)
{
    int h = m->h, w = m->w;
    for (int j = 0; j < nr->n; j++) {
        double u = (nr->rf_grid[2 * j] + shx + 1) / 2 * (w - 1);
        double v = (nr->rf_grid[2 * j + 1] + shy + 1) / 2 * (h - 1);
        int x0 = (int)floor(u), y0 = (int)floor(v);
        double tx = u - x0, ty = v - y0, acc[N_FEAT] = {0};
        for (int c = 0; c < 4; c++) {
            int xx = x0 + (c & 1), yy = y0 + (c >> 1);
            if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue; /* zero padding */
            double wt = ((c & 1) ? tx : 1 - tx) * ((c >> 1) ? ty : 1 - ty);
            const float *f = F + ((size_t)yy * w + xx) * N_FEAT;
            for (int k = 0; k < N_FEAT; k++) acc[k] += wt * f[k];
        }
        const float *wj = nr->weight + (size_t)j * N_FEAT;
        double s = nr->bias[j];
        for (int k = 0; k < N_FEAT; k++) s += (double)wj[k] * acc[k];
        lam[j] = nr->gain[j] * softplus(s) * exp(nr->kappa[j] * mod);
    }
}

/* m_t = 0.6 (pupil - 18) / 5 + 0.4 (speed / 4 - 0.5), clipped to [-3, 3]. */
double sim_modulation(const float beh[3])
{
    return clampd(0.6 * (beh[0] - PUPIL_MEAN) / PUPIL_SD + 0.4 * (beh[2] / 4.0 - 0.5), -3.0, 3.0);
}

void sim_eye_shift(const float eye[2], double *sx, double *sy)
{
    *sx = clampd(EYE_SHIFT * (eye[0] - EYE_X) / EYE_SDX, -EYE_SHIFT_MAX, EYE_SHIFT_MAX);
    *sy = clampd(EYE_SHIFT * (eye[1] - EYE_Y) / EYE_SDY, -EYE_SHIFT_MAX, EYE_SHIFT_MAX);
}

void sim_ws_free(workspace *ws)
{
    free(ws->img);
    free(ws->xp);
    free(ws->F);
    free(ws->row);
    free(ws->lam);
    memset(ws, 0, sizeof *ws);
}

size_t sim_ws_row_len(const gt_model *m)
{
    size_t g = sim_gen_tmp_len(m->H, m->W);
    return g > (size_t)m->w ? g : (size_t)m->w;
}

npred_status sim_ws_init(workspace *ws, const gt_model *m, int n)
{
    memset(ws, 0, sizeof *ws);
    ws->threads = 1;
#ifdef _OPENMP
    ws->threads = omp_get_max_threads();
#endif
    size_t T = (size_t)ws->threads;
    ws->img = npred_calloc((size_t)CHUNK * m->H * m->W, sizeof(float));
    ws->xp = npred_calloc(T * (m->h + 2 * KPAD) * (m->w + 2 * KPAD), sizeof(float));
    ws->F = npred_calloc(T * m->h * m->w * N_FEAT, sizeof(float));
    ws->row = npred_calloc(T * sim_ws_row_len(m), sizeof(float));
    ws->lam = npred_calloc(T * (size_t)n, sizeof(double));
    if (!ws->img || !ws->xp || !ws->F || !ws->row || !ws->lam) {
        sim_ws_free(ws);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for the workspace");
    }
    return NPRED_OK;
}

/* Image `img` -> feature map in the calling thread's buffers; returns F. */
float *sim_image_features(workspace *ws, const gt_model *m, const float *img)
{
    int t = npred_thread_id();
    float *xp = ws->xp + (size_t)t * (m->h + 2 * KPAD) * (m->w + 2 * KPAD);
    float *F = ws->F + (size_t)t * m->h * m->w * N_FEAT;
    downsample_pad(xp, img, m);
    features(F, xp, ws->row + (size_t)t * sim_ws_row_len(m), m);
    return F;
}

npred_status sim_calibrate(gt_model *m, workspace *ws, uint64_t seed)
{
    double s[N_FEAT] = {0}, ss[N_FEAT] = {0};
    size_t cnt = 0;
    for (int i = 0; i < N_CALIB; i++) {
        float *img = ws->img; /* serial: slot 0 */
        sim_gen_image(img, m->H, m->W, hash_mix(hash_mix(seed, TAG_CALIB), (uint64_t)i), ws->row);
        const float *F = sim_image_features(ws, m, img);
        for (size_t q = 0; q < (size_t)m->h * m->w; q++)
            for (int k = 0; k < N_FEAT; k++) {
                double v = F[q * N_FEAT + k];
                s[k] += v;
                ss[k] += v * v;
            }
        cnt += (size_t)m->h * m->w;
    }
    for (int k = 0; k < N_FEAT; k++) {
        double mean = s[k] / cnt, var = ss[k] / cnt - mean * mean;
        m->feat_mean[k] = mean;
        m->feat_std[k] = var > 1e-6 ? sqrt(var) : 1e-3;
    }
    return NPRED_OK;
}
