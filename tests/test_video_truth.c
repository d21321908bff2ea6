/* End to end on a simulated movie scan (npred simulate --video, white-noise clips),
 * through the public API only: a model initialised as the kit's make_video_model does
 * (npred_video_model_create; readout biases 0, make_video_model's fallback without a
 * mean-activity dict), trained with the kit's video training loop
 * (npred_video_trainer_run); its eval predictions on the oracle tier
 * (npred_video_model_predict) follow the ground truth's noise-free rates
 * (meta/ground_truth/rates) where the untrained model's do not
 * (docs/simulate-video.md, "Training on a simulated scan"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"
#include "npred/npy.h"
#include "npred/simulate.h"
#include "npred/video.h"
#include "npred/video_model.h"
#include "npred/video_train.h"

/* the kit's factorised-3D benchmark structure, smaller (one layer of 16 channels) */
static const char *MODEL_JSON =
    "{\"seed\": 2, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": 3, \"hidden_channels\": 16,"
    " \"spatial_input_kernel\": [7, 7], \"temporal_input_kernel\": 9, \"spatial_hidden_kernel\": [3, 3],"
    " \"temporal_hidden_kernel\": 3, \"stride\": 1, \"layers\": 1, \"gamma_input_spatial\": 0.1,"
    " \"gamma_input_temporal\": 0.01, \"bias\": true, \"hidden_nonlinearities\": \"elu\", \"x_shift\": 0,"
    " \"y_shift\": 0, \"batch_norm\": true, \"laplace_padding\": null, \"input_regularizer\": \"LaplaceL2norm\","
    " \"padding\": false, \"final_nonlin\": true, \"momentum\": 0.7},"
    " \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2, \"init_sigma\": 0.1, \"gamma_readout\": 0.0,"
    " \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
    " \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}, \"share_features\": false,"
    " \"share_grid\": false, \"shared_match_ids\": null, \"gamma_grid_dispersion\": 0.0},"
    " \"readout_type\": \"gaussian\", \"use_gru\": false, \"gru_dict\": null, \"use_shifter\": false,"
    " \"shifter_dict\": null, \"shifter_type\": \"MLP\", \"elu_offset\": 0.0}";

/* Pearson correlation of columns j of x and r, (m, n) row-major, in double; NaN if
 * either is constant (so a constant prediction fails the checks below). */
static double column_corr(const double *x, const double *r, size_t m, int n, int j)
{
    double mx = 0, mr = 0, sxx = 0, srr = 0, sxr = 0;
    for (size_t k = 0; k < m; k++) mx += x[k * n + j], mr += r[k * n + j];
    mx /= (double)m, mr /= (double)m;
    for (size_t k = 0; k < m; k++) {
        double dx = x[k * n + j] - mx, dr = r[k * n + j] - mr;
        sxx += dx * dx, srr += dr * dr, sxr += dx * dr;
    }
    return sxx > 0 && srr > 0 ? sxr / sqrt(sxx * srr) : NAN;
}

/* Mean over neurons of the correlation, over every oracle trial and output frame, of
 * the model's eval output with the noise-free rate in the loader's units (rate x the
 * NeuroNormalizer's precision of that neuron and frame); *noisy: the same for the
 * recorded responses (the ceiling a model can reach on these frames). Clips are the
 * loader's first `frames` frames of each trial (offset 0). */
static int oracle_corr(double *model, double *noisy, npred_video_model *m, const npred_video_loaders *L,
                       const char *root)
{
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    int tier = npred_video_loaders_tier(L, 0, "oracle");
    if (!CHECK(tier >= 0 && si.response_precision, "oracle tier and a normalising loader")) return 0;
    int64_t nt = si.tier_n[tier];
    const int64_t *trials = si.tier_idx[tier];
    npred_video_dataset_info di;
    npred_video_dataset_get_info(si.dataset, &di);
    int n = (int)si.n_neurons, F = si.frames, T1 = npred_video_model_output_frames(m, F), T = (int)di.t_max;
    if (!CHECK(T1 > 0 && nt > 0, "output frames %d, oracle trials %lld", T1, (long long)nt)) return 0;
    npred_video_batch b;
    if (!CHECK_OK(npred_video_batch_init(&b, L, 1))) return 0;
    size_t rows = (size_t)nt * T1;
    double *pm = malloc(sizeof(double) * rows * n), *pr = malloc(sizeof(double) * rows * n),
           *py = malloc(sizeof(double) * rows * n);
    float *out = malloc(sizeof(float) * (size_t)T1 * n);
    int ok = CHECK(pm && pr && py && out, "out of memory");
    for (int64_t q = 0; q < nt && ok; q++) {
        int64_t off = 0;
        ok = CHECK_OK(npred_video_loaders_get(L, 0, &trials[q], &off, 1, NULL, &b)) &&
             CHECK_OK(npred_video_model_predict(m, si.data_key, b.videos, 1, b.c, b.f, b.h, b.w, b.pupil_center, out));
        char rel[1024];
        snprintf(rel, sizeof rel, "%s/meta/ground_truth/rates/%lld.npy", root, (long long)trials[q]);
        npred_array a;
        if (!ok || !CHECK_OK(npred_npy_read(rel, &a))) {
            ok = 0;
            break;
        }
        ok = CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 2 && a.shape[0] == n && a.shape[1] == T, "%s: (n, T_max) f32",
                   rel);
        const float *lam = a.data;
        for (int t = 0; ok && t < T1; t++) {
            int f = F - T1 + t; /* the output frame's place in the clip (= in the trial: offset 0) */
            for (int j = 0; j < n; j++) {
                size_t k = ((size_t)q * T1 + t) * n + j;
                pm[k] = out[(size_t)t * n + j];
                pr[k] = (double)lam[(size_t)j * T + f] * si.response_precision[(size_t)j * T + f];
                py[k] = b.responses[(size_t)j * b.resp_f + f];
            }
        }
        npred_array_free(&a);
    }
    double sum_m = 0, sum_y = 0;
    for (int j = 0; j < n && ok; j++) {
        sum_m += column_corr(pm, pr, rows, n, j);
        sum_y += column_corr(py, pr, rows, n, j);
    }
    if (ok) *model = sum_m / n, *noisy = sum_y / n;
    free(pm);
    free(pr);
    free(py);
    free(out);
    npred_video_batch_free(&b);
    return ok;
}

static void test_train_recovers_rates(void)
{
    char dir[256] = "/tmp/npred-test-vtruth-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    npred_vsim_params p = npred_vsim_default_params();
    p.n_neurons = 30;
    p.n_trials = 48;
    p.n_oracle_clips = 3;
    p.n_test_clips = 0;
    p.n_repeats = 2;
    p.height = 18;
    p.width = 32;
    p.frames = 60;
    p.min_frames = 56;
    p.rate_scale = 4;
    p.seed = 3;
    p.stimuli = NPRED_VSIM_NOISE;
    char out[300], root[600], tree[256];
    snprintf(out, sizeof out, "%s/data", dir);
    npred_vsim_tree_name(&p, 0, tree, sizeof tree);
    snprintf(root, sizeof root, "%s/%s", out, tree);
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_trainer *t = NULL;
    if (!CHECK_OK(npred_simulate_video(&p, out, NULL, NULL))) goto done;
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    lc.batch_size = 4;
    lc.frames = 51;
    const char *paths[1] = {root};
    int ok = CHECK_OK(npred_video_loaders_open(&L, paths, 1, &lc));
    npred_video_loader_config_free(&lc);
    if (!ok) goto done;
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
    if (!CHECK(cm && cm->dtype == NPRED_DT_F64 && cm->ndim == 2 && cm->shape[0] == si.n_neurons,
               "cell_motor_coordinates (n, 3) f64"))
        goto done;
    npred_video_model_session ses = {si.data_key, (int)si.n_neurons, cm->data, (int)cm->shape[1], NULL};
    if (!CHECK_OK(npred_video_model_create(&m, MODEL_JSON, "model", si.channels, si.height, si.width, &ses, 1,
                                           4)))
        goto done;
    double before, ceiling, after, ceiling2;
    if (!oracle_corr(&before, &ceiling, m, L, root)) goto done;
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    if (!CHECK_OK(npred_video_trainer_config_parse(&c,
                                                   "{\"max_iter\": 45, \"lr_init\": 0.01, \"patience\": 100, "
                                                   "\"restore_best\": false, \"seed\": 2, \"save_checkpoints\": false}",
                                                   "trainer")) ||
        !CHECK_OK(npred_video_trainer_create(&t, m, L, &c, 2)))
        goto done;
    npred_trainer_result res;
    if (!CHECK_OK(npred_video_trainer_run(t, &res)) || !oracle_corr(&after, &ceiling2, m, L, root)) goto done;
    fprintf(stderr, "oracle tier, correlation with the true rates: untrained %.3f, trained %.3f (validation %.3f), "
            "noisy responses %.3f\n", before, after, res.score, ceiling);
    CHECK(after >= 0.6 && after - before >= 0.4, "trained model follows the true rates: %g (untrained %g)", after,
          before);
    CHECK(after <= 1 && ceiling > 0.5 && ceiling <= 1 && ceiling2 == ceiling, "ceiling %g (after training %g)",
          ceiling, ceiling2);
    CHECK(res.score > 0 && res.score <= 1, "validation correlation %g", res.score);
done:
    npred_video_trainer_free(t);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", dir);
}

int main(void)
{
#ifdef _OPENMP
    omp_set_num_threads(1); /* one thread: the same bits everywhere, and no spinning on a loaded machine */
#endif
    RUN(test_train_recovers_rates);
    return th_summary();
}
