/* A small video model for the movie scans of tests/fixtures/mini_movie_tree (used by
 * test_video_eval and by pyref for the Python tests): the kit's factorised 3D core
 * (2 layers, temporal kernels 3: a cut-off of 4 frames), a Gaussian readout with the
 * cortex grid predictor and an MLP shifter, seed 42, one session per scan of L, the
 * readout bias 0. Header-only (static) so each program gets its own copy. */
#ifndef NPRED_TESTS_VIDEO_MINI_MODEL_H
#define NPRED_TESTS_VIDEO_MINI_MODEL_H

#include <stdio.h>
#include <stdlib.h>

#include "npred/npy.h"
#include "npred/video.h"
#include "npred/video_model.h"

#define MINI_MOVIE_SCAN "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef"

static npred_status video_mini_model(npred_video_model **m, const npred_video_loaders *L)
{
    *m = NULL;
    size_t ns = npred_video_loaders_count(L);
    npred_video_model_session s[4];
    double *xy[4] = {0};
    npred_video_session_info si;
    npred_status st = ns >= 1 && ns <= 4 ? NPRED_OK : npred_errorf(NPRED_ERR_ARG, "1 to 4 sessions");
    for (size_t i = 0; !st && i < ns; i++) {
        npred_video_loaders_session(L, i, &si);
        const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
        st = cm ? npred_array_to_f64(cm, &xy[i]) : npred_errorf(NPRED_ERR_FORMAT, "no cell_motor_coordinates");
        if (!st) s[i] = (npred_video_model_session){si.data_key, (int)si.n_neurons, xy[i], (int)cm->shape[1], NULL};
    }
    if (!st) {
        char cfg[2048];
        snprintf(cfg, sizeof cfg,
                 "{\"seed\": 42, \"core_type\": \"3D_factorised\", \"core_dict\": {\"input_channels\": %d,"
                 " \"hidden_channels\": 4, \"spatial_input_kernel\": [5, 5], \"temporal_input_kernel\": 3,"
                 " \"spatial_hidden_kernel\": [3, 3], \"temporal_hidden_kernel\": 3, \"layers\": 2, \"padding\": true},"
                 " \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2,"
                 " \"init_sigma\": 1.0, \"gamma_readout\": 0.1, \"gauss_type\": \"full\", \"grid_mean_predictor\":"
                 " {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1, \"hidden_features\": 30,"
                 " \"final_tanh\": true}}, \"use_gru\": false, \"use_shifter\": true, \"shifter_type\": \"MLP\","
                 " \"shifter_dict\": {\"shift_layers\": 3, \"hidden_channels_shifter\": 5}}",
                 si.channels);
        st = npred_video_model_create(m, cfg, "mini video model", si.channels, si.height, si.width, s, (int)ns, 1);
    }
    for (size_t i = 0; i < ns && i < 4; i++) free(xy[i]);
    return st;
}

#endif
