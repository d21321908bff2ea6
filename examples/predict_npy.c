/* Embedding npred for prediction: open a model, predict firing rates for the
 * images in an .npy file, write them to another .npy. Uses only the installed
 * public API, so it builds against an installed npred with
 *
 *   cc predict_npy.c $(pkg-config --cflags --libs npred) -o predict_npy
 *
 * and needs neither the npred sources nor Open MPI at run time.
 *
 *   predict_npy MODEL IMAGES.npy OUT.npy [SESSION]
 *
 * MODEL: a run folder, a .safetensors file or a PyTorch .pth; IMAGES.npy:
 * (B, C, H, W) of the model's input shape (any numeric dtype); SESSION: the
 * data_key (default: the model's first session). OUT.npy: (B, n) float32.
 * Models with a shifter or modulator need eye positions / behaviour, which this
 * example does not take (`npred predict` does). */
#include <stdio.h>
#include <stdlib.h>

#include <npred/model.h>
#include <npred/npy.h>

static int fail(const char *what)
{
    fprintf(stderr, "predict_npy: %s: %s\n", what, npred_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: predict_npy MODEL IMAGES.npy OUT.npy [SESSION]\n");
        return 2;
    }
    npred_model *m = NULL;
    if (npred_model_open(&m, argv[1], 0, 0, 64)) return fail(argv[1]);
    const char *key = argc == 5 ? argv[4] : npred_model_session_key(m, 0);
    int si = npred_model_session_index(m, key);
    if (si < 0) {
        fprintf(stderr, "predict_npy: %s: no session '%s'\n", argv[1], key);
        npred_model_free(m);
        return 1;
    }
    if (npred_model_has_shifter(m) || npred_model_behavior_channels(m) > 0) {
        fprintf(stderr, "predict_npy: %s needs eye positions or behaviour; use `npred predict`\n", argv[1]);
        npred_model_free(m);
        return 1;
    }
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);

    npred_array img;
    if (npred_npy_read(argv[2], &img)) {
        npred_model_free(m);
        return fail(argv[2]);
    }
    if (img.ndim != 4 || img.shape[1] != c || img.shape[2] != h || img.shape[3] != w || img.shape[0] < 1) {
        fprintf(stderr, "predict_npy: %s: expected images (B, %d, %d, %d)\n", argv[2], c, h, w);
        npred_array_free(&img);
        npred_model_free(m);
        return 1;
    }
    float *x = NULL;
    if (npred_array_to_f32(&img, &x)) {
        npred_array_free(&img);
        npred_model_free(m);
        return fail(argv[2]);
    }
    int B = (int)img.shape[0], n = npred_model_session_neurons(m, si);
    npred_array out = {0};
    int64_t shape[2] = {B, n};
    int rc = 0;
    if (npred_array_alloc(&out, NPRED_DT_F32, sizeof(float), 2, shape)) rc = fail("output");
    else if (npred_model_predict(m, key, x, B, NULL, NULL, out.data)) rc = fail("predict");
    else if (npred_npy_write(argv[3], &out)) rc = fail(argv[3]);
    else printf("%s: %d images -> %d x %d rates of session %s\n", argv[3], B, B, n, key);
    npred_array_free(&out);
    free(x);
    npred_array_free(&img);
    npred_model_free(m);
    return rc;
}
