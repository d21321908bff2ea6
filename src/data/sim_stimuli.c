/* Simulator, stimuli: what each trial shows (naturalistic images from their ids,
 * behaviour and eye position) and the trial layout of a session (tiers, image ids,
 * recording order). */
#include "data/sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scratch floats gen_image needs: column tables + the finest noise lattice. */
size_t sim_gen_tmp_len(int H, int W) { return (size_t)2 * W + (size_t)(H / 2 + 3) * (W / 2 + 3); }

/* One naturalistic image, values integers 0..255 stored as float.
 * 1/f noise: octaves of smoothly interpolated lattice noise with equal variance
 * per octave (power ~ 1/f^2), then 1-4 soft occluding shapes (edges, ellipses,
 * bars). */
void sim_gen_image(float *img /* (H, W) */, int H, int W, uint64_t seed, float *tmp /* sim_gen_tmp_len(H, W) */)
{
    npred_rng r;
    npred_rng_seed(&r, seed);
    int *ix = (int *)tmp;                /* W ints */
    float *tx = tmp + W;                 /* W */
    for (int i = 0; i < H * W; i++) img[i] = 0;
    int big = H > W ? H : W;
    double var = 0;
    for (int cell = 2; cell <= 2 * big; cell *= 2) {
        float amp = (float)pow(cell, 0.4); /* a bit steeper than 1/f: fine scales are weaker */
        var += 0.45 * amp * amp;
        int gh = H / cell + 3, gw = W / cell + 3;
        double oy = unif(&r, 0, cell), ox = unif(&r, 0, cell);
        float *lat = tmp + 2 * W;
        for (int i = 0; i < gh * gw; i++) lat[i] = (float)npred_rng_normal(&r);
        for (int x = 0; x < W; x++) {
            double fx = (x + ox) / cell;
            int i0 = (int)fx;
            double t = fx - i0;
            ix[x] = i0;
            tx[x] = (float)(t * t * (3 - 2 * t));
        }
        for (int y = 0; y < H; y++) {
            double fy = (y + oy) / cell;
            int j0 = (int)fy;
            double t = fy - j0;
            float ty = (float)(t * t * (3 - 2 * t));
            const float *r0 = lat + (size_t)j0 * gw, *r1 = r0 + gw;
            float *row = img + (size_t)y * W;
            for (int x = 0; x < W; x++) {
                int i0 = ix[x];
                float a = r0[i0] + tx[x] * (r0[i0 + 1] - r0[i0]);
                float b = r1[i0] + tx[x] * (r1[i0 + 1] - r1[i0]);
                row[x] += amp * (a + ty * (b - a));
            }
        }
    }
    float nz = (float)(1.0 / sqrt(var));
    for (int i = 0; i < H * W; i++) img[i] *= nz;

    int n_shapes = 1 + (int)npred_rng_below(&r, 4);
    double scale = H < W ? H : W;
    for (int k = 0; k < n_shapes; k++) {
        int type = (int)npred_rng_below(&r, 3);
        double cx = unif(&r, 0, W), cy = unif(&r, 0, H), th = unif(&r, 0, M_PI);
        double soft = unif(&r, 0.7, 3.0), op = unif(&r, 0.5, 1.0), val = 1.2 * npred_rng_normal(&r);
        double a = unif(&r, 0.08, 0.35) * scale, b = unif(&r, 0.08, 0.35) * scale;
        double len = unif(&r, 0.3, 1.0) * scale, thick = unif(&r, 0.03, 0.1) * scale;
        double ct = cos(th), st = sin(th);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double dx = x - cx, dy = y - cy, t = dx * ct + dy * st, nn = -dx * st + dy * ct, al;
                if (type == 0) al = sigmoid(t / soft);
                else if (type == 1) al = sigmoid((1.0 - sqrt((t / a) * (t / a) + (nn / b) * (nn / b))) * (a < b ? a : b) / soft);
                else al = sigmoid((0.5 * thick - fabs(nn)) / soft) * sigmoid((0.5 * len - fabs(t)) / soft);
                al *= op;
                float *p = img + (size_t)y * W + x;
                *p = (float)((1.0 - al) * *p + al * (val + 0.3 * *p));
            }
    }
    double mean = 120.0 + 12.0 * npred_rng_normal(&r), contrast = unif(&r, 0.6, 1.3);
    for (int i = 0; i < H * W; i++) {
        double v = floor(mean + 45.0 * contrast * img[i] + 0.5);
        img[i] = (float)clampd(v, 0.0, 255.0);
    }
}

/* Behaviour (pupil dilation, its derivative, running speed) and eye position of a
 * trial, driven by one latent arousal variable. */
void sim_gen_behavior(npred_rng *r, float beh[3], float eye[2])
{
    double a = npred_rng_normal(r);
    double pupil = PUPIL_MEAN + PUPIL_SD * (0.9 * a + 0.3 * npred_rng_normal(r));
    double dpupil = 0.3 * a + 0.8 * npred_rng_normal(r);
    double run = 4.0 * (a + 0.8 * npred_rng_normal(r)) - 1.0;
    beh[0] = (float)(pupil < 3.0 ? 3.0 : pupil);
    beh[1] = (float)dpupil;
    beh[2] = (float)(run < 0 ? 0.0 : run);
    eye[0] = (float)(EYE_X + EYE_SDX * npred_rng_normal(r));
    eye[1] = (float)(EYE_Y + EYE_SDY * npred_rng_normal(r));
}

void sim_layout_free(layout *L)
{
    free(L->image_id);
    free(L->tier);
    free(L->trial_idx);
    free(L->test_row);
    memset(L, 0, sizeof *L);
}

npred_status sim_layout_make(layout *L, const npred_sim_params *p, int session)
{
    memset(L, 0, sizeof *L);
    int reps = p->n_test_repeats;
    int64_t n_val = (int64_t)floor(p->val_fraction * p->n_trials + 0.5);
    int64_t n_test = (int64_t)p->n_test_images * reps, n_fin = (int64_t)p->n_final_test_images * reps;
    int64_t N = p->n_trials + n_test + n_fin;
    L->N = N;
    L->n_test = n_test;
    L->image_id = npred_calloc((size_t)N, sizeof(int64_t));
    L->tier = npred_calloc((size_t)N, sizeof(int));
    L->trial_idx = npred_calloc((size_t)N, sizeof(int64_t));
    L->test_row = npred_calloc((size_t)N, sizeof(int64_t));
    int64_t *perm = npred_calloc((size_t)N, sizeof(int64_t));
    if (!L->image_id || !L->tier || !L->trial_idx || !L->test_row || !perm) {
        free(perm);
        sim_layout_free(L);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %lld trials", (long long)N);
    }
    npred_rng r;
    rng_for(&r, p->seed, TAG_LAYOUT, (uint64_t)session, 0);
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    npred_rng_shuffle(&r, perm, (size_t)N); /* canonical trial q goes to file perm[q] */
    for (int64_t q = 0; q < N; q++) {
        int64_t t = perm[q];
        if (q < p->n_trials) {
            L->tier[t] = q < p->n_trials - n_val ? 0 : 1;
            L->image_id[t] = 1000000LL * (session + 1) + q;
        } else if (q < p->n_trials + n_test) {
            L->tier[t] = 2;
            L->image_id[t] = 100000 + (q - p->n_trials) / reps;
        } else {
            L->tier[t] = 3;
            L->image_id[t] = 200000 + (q - p->n_trials - n_test) / reps;
        }
    }
    for (int64_t i = 0; i < N; i++) L->trial_idx[i] = i;
    npred_rng_shuffle(&r, L->trial_idx, (size_t)N); /* recording order */
    int64_t row = 0;
    for (int64_t t = 0; t < N; t++) L->test_row[t] = L->tier[t] == 2 ? row++ : -1;
    free(perm);
    return NPRED_OK;
}
