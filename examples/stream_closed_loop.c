/* A closed loop with the streaming digital twin (npred/video_stream.h): each frame's
 * stimulus depends on the model's response to the frames before it. A drifting grating
 * is shown; after every frame its contrast is raised when the chosen neuron fires below
 * a target rate and lowered when above (a simple controller, as an experiment would run
 * it against a recording). Uses only the public API:
 *
 *   cc stream_closed_loop.c $(pkg-config --cflags --libs npred) -o stream_closed_loop
 *
 *   stream_closed_loop [MODEL [FRAMES]]
 *
 * MODEL: an npred video model (a folder holding model.safetensors, or the file); without
 * one, a small GRU model (Stacked2dCore + ConvGRU, random initialisation from its seed)
 * is built here. Prints per frame the contrast, the neuron's rate and the push time. */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <npred/video_model.h>
#include <npred/video_stream.h>

static const char *small_gru =
    "{\"seed\": 7, \"core_type\": \"2D\", \"core_dict\": {\"input_channels\": 1, \"hidden_channels\": 8,"
    " \"input_kern\": 7, \"hidden_kern\": 5, \"layers\": 2, \"gamma_input\": 0.1, \"skip\": 0,"
    " \"final_nonlinearity\": true, \"bias\": false, \"momentum\": 0.9, \"pad_input\": false, \"batch_norm\": true,"
    " \"hidden_dilation\": 1, \"laplace_padding\": null, \"input_regularizer\": \"LaplaceL2norm\", \"stack\": -1,"
    " \"depth_separable\": true, \"linear\": false, \"attention_conv\": false, \"hidden_padding\": null,"
    " \"use_avg_reg\": false}, \"readout_type\": \"gaussian\", \"readout_dict\": {\"bias\": true, \"init_mu_range\": 0.2,"
    " \"init_sigma\": 1.0, \"gamma_readout\": 0.0, \"gauss_type\": \"full\", \"grid_mean_predictor\": null},"
    " \"use_gru\": true, \"gru_dict\": {\"input_channels\": 8, \"rec_channels\": 8, \"input_kern\": 5, \"rec_kern\": 5,"
    " \"gamma_rec\": 0}, \"use_shifter\": false}";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int fail(const char *what)
{
    fprintf(stderr, "stream_closed_loop: %s: %s\n", what, npred_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    int frames = argc > 2 ? atoi(argv[2]) : 40;
    npred_video_model *m = NULL;
    if (argc > 1) {
        if (npred_video_model_load(&m, argv[1], 1)) return fail(argv[1]);
    } else {
        const npred_video_model_session sess = {"demo", 50, NULL, 0, NULL};
        if (npred_video_model_create(&m, small_gru, "built-in config", 1, 36, 64, &sess, 1, 1)) return fail("create");
    }
    const char *key = npred_video_model_session_key(m, 0);
    npred_stream *s;
    if (npred_stream_open(&s, m, key)) {
        npred_video_model_free(m);
        return fail("open");
    }
    int C, H, W, n = npred_stream_neurons(s);
    npred_stream_frame_shape(s, &C, &H, &W);
    float *frame = malloc(sizeof(float) * (size_t)C * H * W), *rates = malloc(sizeof(float) * (size_t)n);
    float *beh = calloc((size_t)npred_stream_behavior_channels(s) + 1, sizeof(float)), pupil[2] = {0, 0};
    if (!frame || !rates || !beh) return 1;
    printf("session %s: %d neurons, frames %dx%dx%d, %d warm-up frames\n", key, n, C, H, W,
           npred_stream_warmup_frames(s));
    const int target_neuron = 0;
    double contrast = 0.5, target = -1;
    for (int t = 0; t < frames; t++) {
        /* the stimulus: a grating drifting by one pixel per frame, in every channel */
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    frame[((size_t)c * H + y) * W + x] = (float)(contrast * sin(2 * M_PI * (x + t) / 16.0));
        double t0 = now_ms();
        int got = npred_stream_push(s, frame, C, H, W, npred_stream_behavior_channels(s) ? beh : NULL,
                                    npred_stream_needs_pupil(s) ? pupil : NULL, rates);
        double dt = now_ms() - t0;
        if (got < 0) break;
        if (!got) {
            printf("frame %3d: warm-up (%.2f ms)\n", t, dt);
            continue;
        }
        double r = rates[target_neuron];
        if (target < 0) target = 1.2 * r; /* ask for 20 % more than the first response */
        contrast *= r < target ? 1.1 : 0.95; /* the closed loop: the next frame depends on this rate */
        if (contrast > 4) contrast = 4;
        printf("frame %3d: contrast %.3f  rate %.4f (target %.4f)  push %.2f ms\n", t, contrast, r, target, dt);
    }
    int ok = npred_stream_frames_pushed(s) == frames;
    if (!ok) fprintf(stderr, "stream_closed_loop: %s\n", npred_last_error());
    free(frame), free(rates), free(beh);
    npred_stream_free(s);
    npred_video_model_free(m);
    return ok ? 0 : 1;
}
