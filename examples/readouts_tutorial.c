/* The neuralpredictors readouts tutorial, in C.
 *
 * A Stacked2dCore (input_kern 9, hidden_kern 7, 64 channels, 4 depth-separable
 * layers, stack -1, gamma_input 6.3831, other 0.3.0 defaults) on 1 x 144 x 256
 * images, then two multi-session readouts over its (64, 144, 256) output for the
 * sessions 21067-10-18 (8372 neurons) and 22846-10-16 (7344 neurons):
 * FullFactorized2d (a full spatial mask per neuron: 36929 parameters per neuron)
 * and Gaussian2d (one position per neuron: 69). It prints the reprs and parameter
 * counts as the tutorial does and runs a forward pass of a batch of 32 images
 * through the core and the first session's readouts (output 32 x 8372).
 *
 * Only the public API is used (include/npred/). The parameter counts and reprs
 * come from npred_model_plan, which builds a model's structure without its
 * parameter memory: the factorized readouts alone hold 309M parameters per
 * session (1.2 GB, plus as much again for the gradient buffer), which is the
 * tutorial's point. The forward pass allocates one model per readout type with
 * the first session only and runs it in eval mode (firing rates, ELU + 1).
 *
 * Build against an installed npred:
 *   cc -std=c11 -O2 examples/readouts_tutorial.c $(pkg-config --cflags --libs npred) -lm \
 *      -o readouts_tutorial
 * (`make` builds it as build/examples/readouts_tutorial; tests/test_example_tutorial.c
 * runs the same code with a batch of 2.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <npred/model.h>

#define TUTORIAL_SESSIONS 2
static const char *const TUTORIAL_KEYS[TUTORIAL_SESSIONS] = {"21067-10-18", "22846-10-16"};
static const int TUTORIAL_NEURONS[TUTORIAL_SESSIONS] = {8372, 7344};

typedef struct {
    int batch;     /* images in the forward pass (the tutorial: 32) */
    int chunk;     /* images per core forward (bounds activation memory) */
    uint64_t seed;
    FILE *log;     /* reprs and counts are printed here; NULL: silent */
} tutorial_opts;

typedef struct {
    int core_out[3];                        /* (c, h, w) of the core output */
    size_t core_params;                     /* trainable */
    size_t factorized_params[TUTORIAL_SESSIONS], gaussian_params[TUTORIAL_SESSIONS];
    size_t factorized_per_neuron, gaussian_per_neuron; /* first session */
    char factorized_repr[256], gaussian_repr[256];     /* first session */
    int out_rows, out_cols;                 /* forward output (B, n) of each readout */
    int all_finite;                         /* every output value finite */
} tutorial_result;

/* core = Stacked2dCore(input_channels=1, hidden_channels=64, input_kern=9, hidden_kern=7,
 *                      layers=4, depth_separable=True, stack=-1, gamma_input=6.3831)
 * readout = MultiReadoutBase(in_shape, loaders, base_readout=<type>, bias=True) */
static char *tutorial_config(const char *readout_type)
{
    static const char *fmt =
        "{\"core\": {\"type\": \"Stacked2dCore\", \"hidden_channels\": 64, \"input_kern\": 9, "
        "\"hidden_kern\": 7, \"layers\": 4, \"depth_separable\": true, \"stack\": -1, \"gamma_input\": 6.3831},"
        " \"readout\": {\"type\": \"%s\", \"multi\": true, \"bias\": true}}";
    size_t n = strlen(fmt) + strlen(readout_type) + 1;
    char *c = malloc(n);
    if (c) snprintf(c, n, fmt, readout_type);
    return c;
}

static void tutorial_log_count(FILE *f, const char *what, size_t n, size_t per_neuron)
{
    if (!f) return;
    if (per_neuron) fprintf(f, "%s: %.3fM parameters (%zu), %zu per neuron\n", what, (double)n / 1e6, n, per_neuron);
    else fprintf(f, "%s: %.3fM parameters (%zu)\n", what, (double)n / 1e6, n);
}

static const char *const TUTORIAL_TYPES[2] = {"FullFactorized2d", "Gaussian2d"};

static npred_status tutorial_run(const tutorial_opts *o, tutorial_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->batch < 1 || o->chunk < 1) return npred_errorf(NPRED_ERR_ARG, "tutorial: batch and chunk must be >= 1");
    const int H = 144, W = 256;
    npred_model_session ses[TUTORIAL_SESSIONS];
    for (int s = 0; s < TUTORIAL_SESSIONS; s++)
        ses[s] = (npred_model_session){TUTORIAL_KEYS[s], TUTORIAL_NEURONS[s], NULL, 0, NULL, NULL};
    npred_status st = NPRED_OK;
    float *img = NULL, *y = NULL;
    npred_model *m = NULL;
    char *cfg = NULL;

    /* the structure of both multi-readout models: counts and reprs */
    for (int k = 0; k < 2 && !st; k++) {
        free(cfg);
        if (!(cfg = tutorial_config(TUTORIAL_TYPES[k]))) {
            st = npred_errorf(NPRED_ERR_NOMEM, "tutorial: out of memory");
            break;
        }
        if ((st = npred_model_plan(&m, cfg, TUTORIAL_TYPES[k], 1, H, W, ses, TUTORIAL_SESSIONS))) break;
        if (k == 0) {
            npred_model_core_output_shape(m, &res->core_out[0], &res->core_out[1], &res->core_out[2]);
            res->core_params = npred_model_param_count(m, "core.");
            if (o->log) {
                char *d = npred_model_describe(m);
                /* the core's repr: the description up to its "core:" summary line */
                char *end = d ? strstr(d, "\ncore: ") : NULL;
                if (end) fprintf(o->log, "%.*s\n", (int)(end - d), d);
                free(d);
                tutorial_log_count(o->log, "core", res->core_params, 0);
                fprintf(o->log, "core output: (B, %d, %d, %d)\n\n", res->core_out[0], res->core_out[1],
                        res->core_out[2]);
            }
        }
        size_t total = 0;
        for (int s = 0; s < TUTORIAL_SESSIONS && !st; s++) {
            char prefix[96];
            snprintf(prefix, sizeof prefix, "readout.%s.", TUTORIAL_KEYS[s]);
            size_t n = npred_model_param_count(m, prefix);
            total += n;
            (k == 0 ? res->factorized_params : res->gaussian_params)[s] = n;
            char *repr = npred_model_readout_repr(m, s);
            if (!repr) {
                st = NPRED_ERR_NOMEM;
                break;
            }
            if (s == 0) {
                snprintf(k == 0 ? res->factorized_repr : res->gaussian_repr, sizeof res->factorized_repr, "%s", repr);
                *(k == 0 ? &res->factorized_per_neuron : &res->gaussian_per_neuron) = n / (size_t)TUTORIAL_NEURONS[s];
            }
            if (o->log) {
                fprintf(o->log, "(%s): %s\n", TUTORIAL_KEYS[s], repr);
                tutorial_log_count(o->log, "  readout", n, n / (size_t)TUTORIAL_NEURONS[s]);
            }
            free(repr);
        }
        if (o->log && !st) {
            tutorial_log_count(o->log, k == 0 ? "FullFactorized2d multi-readout" : "Gaussian2d multi-readout", total, 0);
            fprintf(o->log, "\n");
        }
        npred_model_free(m);
        m = NULL;
    }
    if (st) goto out;

    /* forward pass (eval): images -> core -> the first session's readout -> rates */
    int n = TUTORIAL_NEURONS[0];
    size_t isz = (size_t)H * W;
    img = malloc(sizeof(float) * isz * o->batch);
    y = malloc(sizeof(float) * (size_t)n * o->batch);
    if (!img || !y) {
        st = npred_errorf(NPRED_ERR_NOMEM, "tutorial: out of memory");
        goto out;
    }
    npred_rng rng;
    npred_rng_seed(&rng, o->seed);
    for (size_t i = 0; i < isz * o->batch; i++) img[i] = (float)npred_rng_normal(&rng);
    res->all_finite = 1;
    for (int k = 0; k < 2 && !st; k++) {
        free(cfg);
        if (!(cfg = tutorial_config(TUTORIAL_TYPES[k]))) {
            st = npred_errorf(NPRED_ERR_NOMEM, "tutorial: out of memory");
            break;
        }
        /* max_batch = chunk: predict runs the images in chunks of that size */
        if ((st = npred_model_create(&m, cfg, TUTORIAL_TYPES[k], 1, H, W, ses, 1, o->chunk, o->seed))) break;
        st = npred_model_predict(m, TUTORIAL_KEYS[0], img, o->batch, NULL, NULL, y);
        for (size_t i = 0; !st && i < (size_t)n * o->batch; i++) res->all_finite &= isfinite(y[i]) != 0;
        npred_model_free(m);
        m = NULL;
    }
    if (st) goto out;
    res->out_rows = o->batch;
    res->out_cols = n;
    if (o->log)
        fprintf(o->log, "forward (eval) of %d images, session %s: FullFactorized2d output (%d, %d), "
                        "Gaussian2d output (%d, %d)\n", o->batch, TUTORIAL_KEYS[0], o->batch, n, o->batch, n);
out:
    npred_model_free(m);
    free(cfg);
    free(img);
    free(y);
    return st;
}

#ifndef NPRED_TUTORIAL_NO_MAIN
int main(void)
{
    tutorial_opts o = {32, 4, 42, stdout};
    tutorial_result r;
    npred_status st = tutorial_run(&o, &r);
    if (st) {
        fprintf(stderr, "readouts_tutorial: %s (%s)\n", npred_last_error(), npred_status_str(st));
        return 1;
    }
    return 0;
}
#endif
