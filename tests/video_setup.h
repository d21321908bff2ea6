/* The small SENSORIUM 2023 training set-up of the video trainer tests
 * (test_video_trainer.c, test_video_dist.c): the mini_movie_tree scan (and copies
 * of it as more sessions), a factorised 3D model with shifter and cortex grid
 * predictor, and a test-local initialisation. */
#ifndef NPRED_TESTS_VIDEO_SETUP_H
#define NPRED_TESTS_VIDEO_SETUP_H

#include <math.h>
#include <string.h>

#include <cJSON.h>

#include "harness.h"
#include "model/video_encoder.h"
#include "npred/video.h"

#define SCAN "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef"

static const char *MODEL_JSON =
    "{\"seed\": 7, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": 3, \"hidden_channels\": 4,"
    " \"spatial_input_kernel\": [5, 5], \"temporal_input_kernel\": 3, \"spatial_hidden_kernel\": [3, 3],"
    " \"temporal_hidden_kernel\": 3, \"stride\": 1, \"layers\": 2, \"gamma_input_spatial\": 1.0,"
    " \"gamma_input_temporal\": 0.5, \"bias\": true, \"hidden_nonlinearities\": \"elu\", \"x_shift\": 0,"
    " \"y_shift\": 0, \"batch_norm\": true, \"laplace_padding\": null, \"input_regularizer\": \"LaplaceL2norm\","
    " \"padding\": false, \"final_nonlin\": true, \"momentum\": 0.7},"
    " \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2, \"init_sigma\": 1.0, \"gamma_readout\": 0.1,"
    " \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
    " \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}, \"share_features\": false,"
    " \"share_grid\": false, \"shared_match_ids\": null, \"gamma_grid_dispersion\": 0.0},"
    " \"readout_type\": \"gaussian\", \"use_gru\": false, \"gru_dict\": null, \"use_shifter\": true,"
    " \"shifter_dict\": {\"gamma_shifter\": 0, \"shift_layers\": 3, \"input_channels_shifter\": 2,"
    " \"hidden_channels_shifter\": 5}, \"shifter_type\": \"MLP\", \"elu_offset\": 0.0}";

typedef struct {
    npred_video_loaders *L;
    npred_video_encoder e;
    int ok;
} setup;

/* A test-local initialisation (the model's own init is the public model's job): readouts
 * as neuralpredictors (npred_readout_init_params), source grids from the neurons'
 * cell_motor_coordinates, BatchNorm weight 1 / bias 0, every other tensor uniform in
 * +-1/sqrt(fan_in), all from one seeded rng. */
static void init_model(npred_video_encoder *e, const npred_video_loaders *L, uint64_t seed)
{
    npred_rng rng;
    npred_rng_seed(&rng, seed);
    npred_ptable *t = &e->t;
    for (int i = 0; i < t->n; i++) {
        const npred_param *p = &t->items[i];
        if (p->is_buffer || !strncmp(p->name, "readout.", 8)) continue;
        float *x = npred_ptable_ptr(t, i);
        size_t len = strlen(p->name);
        int norm = strstr(p->name, ".norm.") != NULL;
        double fan = p->ndim > 1 ? (double)p->count / (double)p->shape[0] : 4.0, a = 1.0 / sqrt(fan);
        for (size_t k = 0; k < p->count; k++)
            x[k] = norm ? (strcmp(p->name + len - 6, "weight") ? 0.0f : 1.0f)
                        : (float)(a * (2.0 * npred_rng_uniform(&rng) - 1.0));
    }
    for (int s = 0; s < e->n_sessions; s++) {
        npred_readout_init_params(&e->s[s].ro, t, &rng, NULL);
        npred_video_session_info si;
        npred_video_loaders_session(L, (size_t)s, &si);
        const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
        double g[64];
        for (int j = 0; j < e->s[s].n && j < 32; j++)
            for (int d = 0; d < 2; d++) g[2 * j + d] = ((const double *)cm->data)[3 * j + d] / 100.0;
        npred_readout_set_source_grid(&e->s[s].ro, t, g);
    }
}

static int make_setup_paths(setup *S, const char *loader_json, const char *const *paths, int two, uint64_t seed)
{
    memset(S, 0, sizeof *S);
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    int ok = CHECK_OK(npred_video_loader_config_parse(&lc, loader_json, NULL, NULL));
    int max_batch = (int)lc.batch_size;
    if (ok) ok = CHECK_OK(npred_video_loaders_open(&S->L, paths, two ? 2 : 1, &lc));
    npred_video_loader_config_free(&lc);
    if (!ok) return 0;
    cJSON *mj = cJSON_Parse(MODEL_JSON);
    npred_video_encoder_config vc;
    ok = CHECK(mj != NULL, "model json") && CHECK_OK(npred_video_encoder_config_from_cjson(&vc, mj, "model"));
    cJSON_Delete(mj);
    if (!ok) return 0;
    const char *keys[2];
    int nn[2];
    npred_video_session_info si;
    for (int s = 0; s < (two ? 2 : 1); s++) {
        npred_video_loaders_session(S->L, (size_t)s, &si);
        keys[s] = si.data_key;
        nn[s] = (int)si.n_neurons;
    }
    if (!CHECK_OK(npred_video_encoder_create(&S->e, &vc, si.channels, si.frames, si.height, si.width, two ? 2 : 1,
                                             keys, nn, max_batch)))
        return 0;
    init_model(&S->e, S->L, seed);
    S->ok = 1;
    return 1;
}

static void free_setup(setup *S)
{
    if (S->ok) npred_video_encoder_free(&S->e);
    npred_video_loaders_free(S->L);
}

#endif
