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
 * Parameters are counted from the declarations (nothing is allocated for
 * counting). Only the first session's readouts are allocated for the forward pass:
 * the factorized one alone holds 309M parameters (1.2 GB, plus as much again for
 * its gradient buffer and its mask workspace), which is the tutorial's point.
 * Images are processed in chunks to bound the core's activation memory.
 *
 * Build (from the project root, after `make`):
 *   cc -std=c11 -O2 -fopenmp -Iinclude -Isrc -I/usr/include/cjson examples/readouts_tutorial.c \
 *      build/libnpred.a -lopenblas -lzip -lcjson -lpng16 -lz -lm -o build/readouts_tutorial
 * (tests/test_example_tutorial.c runs the same code with a batch of 2.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cores/stacked2d.h"
#include "nn/params.h"
#include "readouts/readout.h"

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

static void tutorial_core_config(npred_core_config *c)
{
    npred_core_config_default(c);
    c->input_channels = 1;
    c->hidden_channels = 64;
    c->input_kern = 9;
    for (int l = 0; l < 3; l++) c->hidden_kern[l] = 7;
    c->layers = 4;
    c->depth_separable = 1;
    c->gamma_input = 6.3831;
    int s = -1;
    npred_core_config_set_stack(c, &s, 1, 1, 0);
}

static void tutorial_log_count(FILE *f, const char *what, size_t n, size_t per_neuron)
{
    if (!f) return;
    if (per_neuron) fprintf(f, "%s: %.3fM parameters (%zu), %zu per neuron\n", what, (double)n / 1e6, n, per_neuron);
    else fprintf(f, "%s: %.3fM parameters (%zu)\n", what, (double)n / 1e6, n);
}

/* Declare one readout of `type` for session s in table t (not allocated). */
static npred_status tutorial_declare_readout(npred_readout *r, npred_ptable *t, npred_readout_type type,
                                             const npred_core *core, int s)
{
    npred_readout_config rc;
    npred_readout_config_default(&rc, type, core->out_c, core->out_h, core->out_w, TUTORIAL_NEURONS[s]);
    rc.bias = 1;
    char prefix[96];
    snprintf(prefix, sizeof prefix, "readout.%s.", TUTORIAL_KEYS[s]);
    memset(r, 0, sizeof *r);
    return npred_readout_declare(r, &rc, prefix, t);
}

static npred_status tutorial_run(const tutorial_opts *o, tutorial_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->batch < 1 || o->chunk < 1) return npred_errorf(NPRED_ERR_ARG, "tutorial: batch and chunk must be >= 1");
    const int H = 144, W = 256;
    npred_rng rng;
    npred_rng_seed(&rng, o->seed);
    npred_core core;
    npred_ptable tc, tf, tg;
    npred_readout rf, rg;
    memset(&core, 0, sizeof core);
    memset(&rf, 0, sizeof rf);
    memset(&rg, 0, sizeof rg);
    npred_ptable_init(&tc);
    npred_ptable_init(&tf);
    npred_ptable_init(&tg);
    float *img = NULL, *yf = NULL, *yg = NULL;

    /* core = Stacked2dCore(input_channels=1, hidden_channels=64, input_kern=9, hidden_kern=7,
     *                      layers=4, depth_separable=True, stack=-1, gamma_input=6.3831) */
    npred_core_config cc;
    tutorial_core_config(&cc);
    npred_status st = npred_core_declare(&core, &cc, "core.", H, W, &tc);
    if (!st) st = npred_ptable_alloc(&tc);
    if (!st) st = npred_core_setup(&core, &tc, o->chunk);
    if (st) goto out;
    npred_core_init_params(&core, &tc, &rng);
    res->core_out[0] = core.out_c;
    res->core_out[1] = core.out_h;
    res->core_out[2] = core.out_w;
    res->core_params = npred_ptable_count(&tc, NULL);
    if (o->log) {
        char *repr = malloc(1 << 16);
        if (repr) {
            npred_core_repr(&core, repr, 1 << 16);
            fprintf(o->log, "%s\n", repr);
            free(repr);
        }
        tutorial_log_count(o->log, "core", res->core_params, 0);
        fprintf(o->log, "core output: (B, %d, %d, %d)\n\n", core.out_c, core.out_h, core.out_w);
    }

    /* the multi-readouts, counted from their declarations */
    const npred_readout_type types[2] = {NPRED_READOUT_FACTORIZED, NPRED_READOUT_GAUSSIAN2D};
    for (int k = 0; k < 2 && !st; k++) {
        size_t total = 0;
        for (int s = 0; s < TUTORIAL_SESSIONS && !st; s++) {
            npred_ptable t;
            npred_readout r;
            npred_ptable_init(&t);
            st = tutorial_declare_readout(&r, &t, types[k], &core, s);
            if (!st) {
                size_t n = npred_ptable_count(&t, NULL);
                total += n;
                (k == 0 ? res->factorized_params : res->gaussian_params)[s] = n;
                char repr[256];
                npred_readout_repr(&r, repr, sizeof repr);
                if (s == 0) {
                    snprintf(k == 0 ? res->factorized_repr : res->gaussian_repr, sizeof res->factorized_repr, "%s", repr);
                    *(k == 0 ? &res->factorized_per_neuron : &res->gaussian_per_neuron) = n / (size_t)TUTORIAL_NEURONS[s];
                }
                if (o->log) {
                    fprintf(o->log, "(%s): %s\n", TUTORIAL_KEYS[s], repr);
                    tutorial_log_count(o->log, "  readout", n, n / (size_t)TUTORIAL_NEURONS[s]);
                }
            }
            npred_readout_free(&r);
            npred_ptable_free(&t);
        }
        if (o->log && !st) tutorial_log_count(o->log, k == 0 ? "FullFactorized2d multi-readout"
                                                              : "Gaussian2d multi-readout", total, 0);
        if (o->log) fprintf(o->log, "\n");
    }
    if (st) goto out;

    /* forward pass: images -> core -> the first session's readouts (eval mode) */
    st = tutorial_declare_readout(&rf, &tf, NPRED_READOUT_FACTORIZED, &core, 0);
    if (!st) st = npred_ptable_alloc(&tf);
    if (!st) st = npred_readout_setup(&rf, &tf, o->chunk);
    if (!st) st = tutorial_declare_readout(&rg, &tg, NPRED_READOUT_GAUSSIAN2D, &core, 0);
    if (!st) st = npred_ptable_alloc(&tg);
    if (!st) st = npred_readout_setup(&rg, &tg, o->chunk);
    if (st) goto out;
    npred_readout_init_params(&rf, &tf, &rng, NULL);
    npred_readout_init_params(&rg, &tg, &rng, NULL);
    int n = TUTORIAL_NEURONS[0];
    size_t isz = (size_t)H * W;
    img = malloc(sizeof(float) * isz * o->batch);
    yf = malloc(sizeof(float) * (size_t)n * o->batch);
    yg = malloc(sizeof(float) * (size_t)n * o->batch);
    if (!img || !yf || !yg) {
        st = npred_errorf(NPRED_ERR_NOMEM, "tutorial: out of memory");
        goto out;
    }
    for (size_t i = 0; i < isz * o->batch; i++) img[i] = (float)npred_rng_normal(&rng);
    for (int b0 = 0; b0 < o->batch && !st; b0 += o->chunk) {
        int nb = o->batch - b0 < o->chunk ? o->batch - b0 : o->chunk;
        st = npred_core_forward(&core, &tc, img + (size_t)b0 * isz, nb, 0);
        if (!st) st = npred_readout_forward(&rf, &tf, yf + (size_t)b0 * n, core.output, NULL, nb, 0, NULL, NULL);
        if (!st) st = npred_readout_forward(&rg, &tg, yg + (size_t)b0 * n, core.output, NULL, nb, 0, NULL, NULL);
    }
    if (st) goto out;
    res->out_rows = o->batch;
    res->out_cols = n;
    res->all_finite = 1;
    for (size_t i = 0; i < (size_t)n * o->batch; i++) res->all_finite &= isfinite(yf[i]) && isfinite(yg[i]);
    if (o->log)
        fprintf(o->log, "forward (eval) of %d images, session %s: FullFactorized2d output (%d, %d), "
                        "Gaussian2d output (%d, %d)\n", o->batch, TUTORIAL_KEYS[0], o->batch, n, o->batch, n);
out:
    free(img);
    free(yf);
    free(yg);
    npred_readout_free(&rf);
    npred_readout_free(&rg);
    npred_core_free(&core);
    npred_ptable_free(&tc);
    npred_ptable_free(&tf);
    npred_ptable_free(&tg);
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
