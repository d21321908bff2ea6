/* Synthetic SENSORIUM-format datasets with a known ground truth (see simulate.h
 * and docs/simulate.md).
 *
 * Legend: H, W = image size; f = downsample factor; h = H/f, w = W/f (ground-truth
 * feature map); K = 32 feature channels; L = 16 linear filters; n = neurons;
 * N = trials of a session.
 *
 * Determinism: every random number comes from an npred_rng seeded by a hash of
 * (seed, purpose, index): an image from its image id, a trial (behaviour, noise)
 * from (session, trial file index), a session's neurons from the session. So the
 * output does not depend on the thread count or on the chunking.
 * Threads: OpenMP over the trials of a chunk (one level; no BLAS here).
 *
 * Files: sim_stimuli.c (images, behaviour, trial layout), sim_truth.c (the
 * ground-truth model), sim_noise.c (noise and oracles), sim_writer.c (the tree,
 * params.json, zip); this file checks the parameters and runs the sessions. */
#include "npred/simulate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/threads.h"
#include "data/sim_internal.h"

npred_sim_params npred_sim_default_params(void)
{
    npred_sim_params p;
    memset(&p, 0, sizeof p);
    p.n_sessions = 1;
    p.n_neurons = 1000;
    p.n_trials = 5000;
    p.val_fraction = 0.1;
    p.n_test_images = 100;
    p.n_test_repeats = 10;
    p.n_final_test_images = 0;
    p.height = 144;
    p.width = 256;
    p.downsample = 4;
    p.seed = 1;
    p.animal_id = 90000;
    p.rate_scale = 2.0;
    p.noise = NPRED_SIM_NOISE_POISSON;
    p.gamma_shape = 2.0;
    p.modulate = 0;
    p.write_tree = 1;
    p.write_zip = 0;
    p.force = 0;
    return p;
}

npred_status sim_validate_common(int sessions, int neurons, int animal_id, double rate_scale, npred_sim_noise noise,
                                 double gamma_shape, int write_tree, int write_zip)
{
    if (sessions < 1 || sessions > 999) return npred_errorf(NPRED_ERR_ARG, "sessions: %d is not in 1..999", sessions);
    if (neurons < 1) return npred_errorf(NPRED_ERR_ARG, "neurons: %d; a session needs at least 1 neuron", neurons);
    if (animal_id < 0) return npred_errorf(NPRED_ERR_ARG, "animal-id: %d is negative", animal_id);
    if (!(rate_scale > 0 && isfinite(rate_scale)))
        return npred_errorf(NPRED_ERR_ARG, "rate-scale: %g must be positive", rate_scale);
    if (noise != NPRED_SIM_NOISE_POISSON && noise != NPRED_SIM_NOISE_GAMMA && noise != NPRED_SIM_NOISE_NONE)
        return npred_errorf(NPRED_ERR_ARG, "noise: unknown kind %d", (int)noise);
    if (!(gamma_shape > 0 && isfinite(gamma_shape)))
        return npred_errorf(NPRED_ERR_ARG, "gamma-shape: %g must be positive", gamma_shape);
    if (!write_tree && !write_zip)
        return npred_errorf(NPRED_ERR_ARG, "simulate: nothing to write (neither folder nor zip)");
    return NPRED_OK;
}

npred_status sim_prepare_out(const char *out_dir, int force, const char *what)
{
    if (!out_dir || !*out_dir) return npred_errorf(NPRED_ERR_ARG, "simulate: no output directory given");
    if (strlen(out_dir) > 3000) return npred_errorf(NPRED_ERR_ARG, "simulate: output directory name too long");
    struct stat st;
    if (stat(out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return npred_errorf(NPRED_ERR_IO, "%s: exists and is not a directory", out_dir);
        if (!force && !sim_dir_is_empty(out_dir))
            return npred_errorf(NPRED_ERR_ARG, "%s: directory is not empty (use --force to replace the %s in it)",
                                out_dir, what);
    }
    return sim_mkdir_p(out_dir);
}

npred_status npred_sim_validate(const npred_sim_params *p)
{
    if (!p) return npred_errorf(NPRED_ERR_ARG, "simulate: params is NULL");
    npred_status s = sim_validate_common(p->n_sessions, p->n_neurons, p->animal_id, p->rate_scale, p->noise,
                                         p->gamma_shape, p->write_tree, p->write_zip);
    if (s) return s;
    if (p->n_trials < 0 || p->n_trials >= 1000000)
        return npred_errorf(NPRED_ERR_ARG, "trials: %d is not in 0..999999", p->n_trials);
    if (!(p->val_fraction >= 0 && p->val_fraction <= 1))
        return npred_errorf(NPRED_ERR_ARG, "val-fraction: %g is not in [0, 1]", p->val_fraction);
    if (p->n_test_images < 0 || p->n_test_images >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "test-images: %d is not in 0..99999", p->n_test_images);
    if (p->n_final_test_images < 0 || p->n_final_test_images >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "final-test-images: %d is not in 0..99999", p->n_final_test_images);
    if ((p->n_test_images > 0 || p->n_final_test_images > 0) && (p->n_test_repeats < 2 || p->n_test_repeats > 1000))
        return npred_errorf(NPRED_ERR_ARG, "test-repeats: %d is not in 2..1000 (the oracle needs repeats)",
                            p->n_test_repeats);
    int64_t total = (int64_t)p->n_trials + (int64_t)(p->n_test_images + p->n_final_test_images) *
                                               (p->n_test_images + p->n_final_test_images ? p->n_test_repeats : 0);
    if (total < 1) return npred_errorf(NPRED_ERR_ARG, "trials: a session needs at least 1 trial in total");
    if (p->downsample < 1 || p->downsample > 16)
        return npred_errorf(NPRED_ERR_ARG, "downsample: %d is not in 1..16", p->downsample);
    if (p->height < 8 || p->width < 8 || p->height > 4096 || p->width > 4096)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d: height and width must be in 8..4096", p->height,
                            p->width);
    if (p->height % p->downsample || p->width % p->downsample)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d is not divisible by downsample %d", p->height,
                            p->width, p->downsample);
    if (p->height / p->downsample < 2 || p->width / p->downsample < 2)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d / downsample %d leaves a feature map under 2x2",
                            p->height, p->width, p->downsample);
    if (!(p->shared_neurons >= 0 && p->shared_neurons <= 1))
        return npred_errorf(NPRED_ERR_ARG, "shared-neurons: %g is not a fraction in [0, 1]", p->shared_neurons);
    return NPRED_OK;
}

void npred_sim_data_key(const npred_sim_params *p, int session, char *buf, size_t bufsize)
{
    snprintf(buf, bufsize, "%d-1-%d", p->animal_id, session + 1);
}

void npred_sim_tree_name(const npred_sim_params *p, int session, char *buf, size_t bufsize)
{
    char key[64];
    npred_sim_data_key(p, session, key, sizeof key);
    snprintf(buf, bufsize, "static%s-GrayImageNet-%s", key, NPRED_SIM_NAME_HASH);
}

static npred_status simulate_session(const npred_sim_params *p, const gt_model *m, workspace *ws,
                                     const char *out_dir, int session, npred_sim_progress_fn progress,
                                     void *user)
{
    char key[64], name[256], root[4096];
    npred_sim_data_key(p, session, key, sizeof key);
    npred_sim_tree_name(p, session, name, sizeof name);
    snprintf(root, sizeof root, "%s/%s", out_dir, name);
    if (p->force) {
        char zp[4200];
        snprintf(zp, sizeof zp, "%s.zip", root);
        npred_status s = sim_rm_tree(root);
        if (!s) s = sim_rm_tree(zp);
        if (s) return s;
    }
    npred_status s = sim_make_dirs(root);
    if (s) return s;

    gt_neurons nr;
    layout L;
    s = sim_neurons_make(&nr, p, m, session);
    if (s) return s;
    s = sim_layout_make(&L, p, session);
    if (s) {
        sim_neurons_free(&nr);
        return s;
    }
    int n = p->n_neurons, reps = p->n_test_repeats, n_img = p->n_test_images;
    int64_t N = L.N, T = L.n_test;
    float *resp = npred_calloc((size_t)N * n, sizeof(float));
    float *beh = npred_calloc((size_t)N * 3, sizeof(float));
    float *eye = npred_calloc((size_t)N * 2, sizeof(float));
    float *trial_rates = npred_calloc((size_t)(T ? T : 1) * n, sizeof(float));
    float *image_rates = npred_calloc((size_t)(n_img ? n_img : 1) * n, sizeof(float));
    int64_t *test_trials = npred_calloc((size_t)(T ? T : 1), sizeof(int64_t));
    int64_t *groups = npred_calloc((size_t)(T ? T : 1), sizeof(int64_t));
    int64_t *test_ids = npred_calloc((size_t)(n_img ? n_img : 1), sizeof(int64_t));
    double *orc_j = npred_calloc((size_t)n, sizeof(double));
    double *orc_r = npred_calloc((size_t)n, sizeof(double));
    uint64_t hist[256] = {0};
    if (!resp || !beh || !eye || !trial_rates || !image_rates || !test_trials || !groups || !test_ids || !orc_j ||
        !orc_r) {
        s = npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %lld trials x %d neurons", (long long)N, n);
        goto done;
    }
    s = sim_write_meta(root, p, &nr, &L, session);
    if (s) goto done;

    /* noise-free rates of the test images at neutral behaviour (no shift, m = 0) */
    for (int i = 0; i < n_img; i++) test_ids[i] = 100000 + i;
    for (int64_t c0 = 0; c0 < n_img; c0 += CHUNK) {
        int cn = (int)(n_img - c0 < CHUNK ? n_img - c0 : CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int q = 0; q < cn; q++) {
            int t = npred_thread_id();
            float *img = ws->img + (size_t)q * m->H * m->W;
            sim_gen_image(img, m->H, m->W, hash_mix(hash_mix(p->seed, TAG_IMAGE), (uint64_t)test_ids[c0 + q]),
                      ws->row + (size_t)t * sim_ws_row_len(m));
            const float *F = sim_image_features(ws, m, img);
            double *lam = ws->lam + (size_t)t * n;
            sim_rates(lam, F, m, &nr, 0.0, 0.0, 0.0);
            for (int j = 0; j < n; j++) image_rates[(size_t)(c0 + q) * n + j] = (float)lam[j];
        }
    }

    /* all trials, chunk by chunk: generate in parallel, write in order */
    for (int64_t c0 = 0; c0 < N && !s; c0 += CHUNK) {
        int cn = (int)(N - c0 < CHUNK ? N - c0 : CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int q = 0; q < cn; q++) {
            int64_t tr = c0 + q;
            int t = npred_thread_id();
            float *img = ws->img + (size_t)q * m->H * m->W;
            sim_gen_image(img, m->H, m->W, hash_mix(hash_mix(p->seed, TAG_IMAGE), (uint64_t)L.image_id[tr]),
                      ws->row + (size_t)t * sim_ws_row_len(m));
            const float *F = sim_image_features(ws, m, img);
            npred_rng r;
            rng_for(&r, p->seed, TAG_TRIAL, (uint64_t)session, (uint64_t)tr);
            sim_gen_behavior(&r, beh + 3 * tr, eye + 2 * tr);
            double shx = 0, shy = 0, mod = 0;
            if (p->modulate) {
                sim_eye_shift(eye + 2 * tr, &shx, &shy);
                mod = sim_modulation(beh + 3 * tr);
            }
            double *lam = ws->lam + (size_t)t * n;
            sim_rates(lam, F, m, &nr, shx, shy, mod);
            float *y = resp + (size_t)tr * n;
            for (int j = 0; j < n; j++) {
                double l = lam[j];
                y[j] = (float)(p->noise == NPRED_SIM_NOISE_POISSON ? sim_draw_poisson(&r, l)
                               : p->noise == NPRED_SIM_NOISE_GAMMA ? l / p->gamma_shape * sim_draw_gamma(&r, p->gamma_shape)
                                                                   : l);
            }
            if (L.test_row[tr] >= 0)
                for (int j = 0; j < n; j++) trial_rates[(size_t)L.test_row[tr] * n + j] = (float)lam[j];
        }
        for (int q = 0; q < cn && !s; q++) {
            int64_t tr = c0 + q;
            const float *img = ws->img + (size_t)q * m->H * m->W;
            for (int i = 0; i < m->H * m->W; i++) hist[(int)img[i]]++;
            char rel[128];
            int64_t ish[3] = {1, m->H, m->W};
            snprintf(rel, sizeof rel, "data/images/%lld.npy", (long long)tr);
            s = sim_put_npy(root, rel, NPRED_DT_F32, 0, 3, ish, img);
            snprintf(rel, sizeof rel, "data/responses/%lld.npy", (long long)tr);
            if (!s) s = sim_put_1d(root, rel, NPRED_DT_F32, n, resp + (size_t)tr * n);
            snprintf(rel, sizeof rel, "data/behavior/%lld.npy", (long long)tr);
            if (!s) s = sim_put_1d(root, rel, NPRED_DT_F32, 3, beh + 3 * tr);
            snprintf(rel, sizeof rel, "data/pupil_center/%lld.npy", (long long)tr);
            if (!s) s = sim_put_1d(root, rel, NPRED_DT_F32, 2, eye + 2 * tr);
        }
        if (!s && progress && progress(user, session, c0 + cn, N))
            s = npred_errorf(NPRED_ERR_INTERRUPTED, "simulate: stopped in session %s", key);
    }
    if (s) goto done;

    /* statistics over all trials (numpy conventions: std ddof 0, median) */
    s = sim_image_stats(root, hist);
    if (!s) s = sim_matrix_stats(root, "responses", resp, (size_t)N, (size_t)n);
    if (!s) s = sim_matrix_stats(root, "behavior", beh, (size_t)N, 3);
    if (!s) s = sim_matrix_stats(root, "pupil_center", eye, (size_t)N, 2);
    if (s) goto done;

    /* ground truth */
    {
        int64_t k = 0;
        for (int64_t t = 0; t < N; t++)
            if (L.test_row[t] >= 0) test_trials[k++] = t;
        for (int i = 0; i < n_img; i++) { /* repeats of image i, ascending file index */
            int q = 0;
            for (int64_t t = 0; t < N && q < reps; t++)
                if (L.tier[t] == 2 && L.image_id[t] == test_ids[i]) groups[(size_t)i * reps + q++] = t;
        }
        if (T) {
            sim_oracle_jackknife(orc_j, resp, n, groups, n_img, reps);
            sim_oracle_rate(orc_r, trial_rates, (size_t)T, n, p);
        }
        const char *g = "meta/ground_truth/";
        char rel[256];
#define GT(file) (snprintf(rel, sizeof rel, "%s%s", g, file), rel)
        s = sim_put_2d(root, GT("rf_grid.npy"), NPRED_DT_F64, n, 2, nr.rf_grid);
        if (!s) s = sim_put_2d(root, GT("rf_pixel.npy"), NPRED_DT_F64, n, 2, nr.rf_pix);
        if (!s) s = sim_put_2d(root, GT("readout_weights.npy"), NPRED_DT_F32, n, N_FEAT, nr.weight);
        if (!s) s = sim_put_1d(root, GT("readout_bias.npy"), NPRED_DT_F64, n, nr.bias);
        if (!s) s = sim_put_1d(root, GT("gain.npy"), NPRED_DT_F64, n, nr.gain);
        if (!s) s = sim_put_1d(root, GT("modulation.npy"), NPRED_DT_F64, n, nr.kappa);
        int64_t fsh[3] = {N_LIN, KMAX, KMAX};
        if (!s) s = sim_put_npy(root, GT("filters.npy"), NPRED_DT_F32, 0, 3, fsh, m->filt);
        if (!s) s = sim_put_1d(root, GT("test_image_ids.npy"), NPRED_DT_I64, n_img, test_ids);
        if (!s) s = sim_put_2d(root, GT("test_image_rates.npy"), NPRED_DT_F32, n_img, n, image_rates);
        if (!s) s = sim_put_1d(root, GT("test_trials.npy"), NPRED_DT_I64, T, test_trials);
        if (!s) s = sim_put_2d(root, GT("test_trial_rates.npy"), NPRED_DT_F32, T, n, trial_rates);
        if (!s) s = sim_put_1d(root, GT("oracle_corr_rate.npy"), NPRED_DT_F64, n, orc_r);
        if (!s) s = sim_put_1d(root, GT("oracle_corr_jackknife.npy"), NPRED_DT_F64, n, orc_j);
#undef GT
        if (!s) s = sim_put_json(root, p, m, &nr, session, key);
    }
    if (!s && p->write_zip) s = npred_tree_write_zip(out_dir, name);
    if (!s && !p->write_tree) s = sim_rm_tree(root);

done:
    free(resp);
    free(beh);
    free(eye);
    free(trial_rates);
    free(image_rates);
    free(test_trials);
    free(groups);
    free(test_ids);
    free(orc_j);
    free(orc_r);
    sim_layout_free(&L);
    sim_neurons_free(&nr);
    return s;
}

npred_status npred_simulate(const npred_sim_params *p, const char *out_dir, npred_sim_progress_fn progress,
                            void *user)
{
    npred_status s = npred_sim_validate(p);
    if (s || (s = sim_prepare_out(out_dir, p->force, "sessions"))) return s;

    gt_model *m = calloc(1, sizeof *m);
    if (!m) return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory");
    m->H = p->height;
    m->W = p->width;
    m->f = p->downsample;
    m->h = p->height / p->downsample;
    m->w = p->width / p->downsample;
    sim_build_filters(m);
    workspace ws;
    s = sim_ws_init(&ws, m, p->n_neurons);
    if (!s) s = sim_calibrate(m, &ws, p->seed);
    for (int session = 0; session < p->n_sessions && !s; session++)
        s = simulate_session(p, m, &ws, out_dir, session, progress, user);
    sim_ws_free(&ws);
    free(m);
    return s;
}
