/* npred predict: eval-mode firing rates of a model for images in an .npy file. */
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "npred/npy.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred predict --model MODEL --images IMAGES.npy --session KEY --out PRED.npy [options]\n\n"
            "Eval-mode firing rates (B, n) float32 of session KEY's neurons for images (B, C, H, W)\n"
            "(or (B, H, W) for one channel) of any numeric dtype, with the model's input size.\n"
            "Images must be preprocessed as in training (normalized, scaled). PRED.npy is written\n"
            "atomically.\n\n"
            "options:\n"
            "  --model MODEL         run directory, .safetensors, or .pth (imported on the fly)\n"
            "  --images FILE         images (B, C, H, W) or (B, H, W)\n"
            "  --session KEY         data_key of the readout (optional for a one-session model)\n"
            "  --pupil-center FILE   (B, 2) eye positions, required by models with a shifter\n"
            "  --behavior FILE       (B, k) behavior, required by models with a modulator\n"
            "  --out FILE            output .npy (B, n) float32\n"
            "  --batch N             images per forward pass [64]\n"
            "  -h, --help            this help\n");
}

/* Read an .npy as float32, check finiteness; NULL with an error set and *st the status. */
static float *read_f32(const char *path, npred_array *a, const char *what, npred_status *st)
{
    if ((*st = npred_npy_read(path, a))) return NULL;
    float *v = NULL;
    if ((*st = npred_array_to_f32(a, &v))) {
        npred_error_prefix(*st, "%s (%s)", path, what);
        return NULL;
    }
    for (size_t i = 0; i < a->count; i++)
        if (!isfinite(v[i])) {
            *st = npred_errorf(NPRED_ERR_VALUE, "%s: %s hold a non-finite value (NaN or Inf) at element %zu", path,
                               what, i);
            free(v);
            return NULL;
        }
    return v;
}

static void shape_str(const npred_array *a, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < a->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)a->shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

int cmd_predict(int argc, char **argv)
{
    const char *model = NULL, *images = NULL, *key = NULL, *pupil = NULL, *behav = NULL, *out = NULL;
    int batch = 64;
    const cli_opt opts[] = {{"model", CLI_STR, &model, 0, 0},       {"images", CLI_STR, &images, 0, 0},
                            {"session", CLI_STR, &key, 0, 0},       {"pupil-center", CLI_STR, &pupil, 0, 0},
                            {"behavior", CLI_STR, &behav, 0, 0},    {"out", CLI_STR, &out, 0, 0},
                            {"batch", CLI_INT, &batch, 1, INT_MAX}, {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"predict", help, opts, NULL};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (!model) return cli_usage_error("predict", "missing --model");
    if (!images) return cli_usage_error("predict", "missing --images");
    if (!out) return cli_usage_error("predict", "missing --out");

    npred_model *m = NULL;
    npred_array ia = {0}, pa = {0}, ba = {0}, oa = {0};
    float *img = NULL, *pc = NULL, *beh = NULL;
    int rc = 1;
    npred_status st = npred_model_open(&m, model, 0, 0, batch);
    if (st) {
        cli_fail(st, "predict");
        goto done;
    }
    if (!key) {
        if (npred_model_n_sessions(m) != 1) {
            fprintf(stderr, "npred predict: the model has %d sessions; choose one with --session (", npred_model_n_sessions(m));
            for (int i = 0; i < npred_model_n_sessions(m); i++) fprintf(stderr, "%s%s", i ? ", " : "", npred_model_session_key(m, i));
            fprintf(stderr, ")\n");
            rc = 2;
            goto done;
        }
        key = npred_model_session_key(m, 0);
    }
    int si = npred_model_session_index(m, key);
    if (si < 0) {
        fprintf(stderr, "npred predict: unknown session '%s'; the model has: ", key);
        for (int i = 0; i < npred_model_n_sessions(m); i++) fprintf(stderr, "%s%s", i ? ", " : "", npred_model_session_key(m, i));
        fprintf(stderr, "\n");
        goto done;
    }
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    npred_status rst = NPRED_OK;
    if (!(img = read_f32(images, &ia, "images", &rst))) {
        cli_fail(rst, "predict");
        goto done;
    }
    char got[128];
    shape_str(&ia, got, sizeof got);
    int ok = (ia.ndim == 4 && ia.shape[1] == c && ia.shape[2] == h && ia.shape[3] == w) ||
             (ia.ndim == 3 && c == 1 && ia.shape[1] == h && ia.shape[2] == w);
    if (!ok || ia.shape[0] < 1 || ia.shape[0] > 0x7fffffff) {
        fprintf(stderr, "npred predict: %s: images have shape %s; the model expects (B, %d, %d, %d)%s\n", images, got, c,
                h, w, c == 1 ? " or (B, H, W)" : "");
        goto done;
    }
    int B = (int)ia.shape[0];
    if (npred_model_has_shifter(m)) {
        if (!pupil) {
            fprintf(stderr, "npred predict: the model has a shifter: pass --pupil-center FILE (B, 2)\n");
            rc = 2;
            goto done;
        }
        if (!(pc = read_f32(pupil, &pa, "pupil centers", &rst))) {
            cli_fail(rst, "predict");
            goto done;
        }
        if (pa.ndim != 2 || pa.shape[0] != B || pa.shape[1] != 2) {
            shape_str(&pa, got, sizeof got);
            fprintf(stderr, "npred predict: %s: pupil centers have shape %s; expected (%d, 2)\n", pupil, got, B);
            goto done;
        }
    } else if (pupil) {
        fprintf(stderr, "npred predict: note: the model has no shifter; --pupil-center is ignored\n");
    }
    int bc = npred_model_behavior_channels(m);
    if (bc > 0) {
        if (!behav) {
            fprintf(stderr, "npred predict: the model has a modulator: pass --behavior FILE (B, %d)\n", bc);
            rc = 2;
            goto done;
        }
        if (!(beh = read_f32(behav, &ba, "behavior", &rst))) {
            cli_fail(rst, "predict");
            goto done;
        }
        if (ba.ndim != 2 || ba.shape[0] != B || ba.shape[1] != bc) {
            shape_str(&ba, got, sizeof got);
            fprintf(stderr, "npred predict: %s: behavior has shape %s; expected (%d, %d)\n", behav, got, B, bc);
            goto done;
        }
    } else if (behav) {
        fprintf(stderr, "npred predict: note: the model has no modulator; --behavior is ignored\n");
    }
    int n = npred_model_session_neurons(m, si);
    int64_t os[2] = {B, n};
    if ((st = npred_array_alloc(&oa, NPRED_DT_F32, 4, 2, os))) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((st = npred_model_predict(m, key, img, B, pc, beh, oa.data))) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((st = npred_npy_write(out, &oa))) {
        cli_fail(st, "predict");
        goto done;
    }
    rc = 0;
done:
    free(img);
    free(pc);
    free(beh);
    npred_array_free(&ia);
    npred_array_free(&pa);
    npred_array_free(&ba);
    npred_array_free(&oa);
    npred_model_free(m);
    return rc;
}
