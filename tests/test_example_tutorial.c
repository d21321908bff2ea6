/* examples/readouts_tutorial.c (the neuralpredictors readouts tutorial) run with a
 * batch of 2: parameter counts are checks of the architecture (derived here from
 * the layer shapes, and equal to the tutorial's printed 0.040M / 309.170M / 0.578M),
 * reprs in the 0.3.0 words, and the forward output shapes. The counts come from
 * npred_model_plan (nothing allocated); the forward pass creates the one-session
 * factorized model: peak resident memory measured 2.8 GB (its 309M parameters and
 * their gradient buffer). */
#define NPRED_TUTORIAL_NO_MAIN
#include "../examples/readouts_tutorial.c"

#include "harness.h"

static void test_tutorial(void)
{
    tutorial_opts o = {2, 2, 42, NULL};
    tutorial_result r;
    if (!CHECK_OK(tutorial_run(&o, &r))) return;
    CHECK(r.core_out[0] == 64 && r.core_out[1] == 144 && r.core_out[2] == 256, "core output (%d, %d, %d)",
          r.core_out[0], r.core_out[1], r.core_out[2]);
    /* core: conv 9x9 (1 -> 64) without bias (0.3.0 drops it before a BatchNorm), 3 depth-separable
     * layers (1x1, 7x7 depthwise, 1x1, each with a bias), BatchNorm weight + bias in every layer */
    size_t c = 64, core = c * 81 + 3 * ((c * c + c) * 2 + c * 49 + c) + 4 * 2 * c;
    CHECK(r.core_params == core, "core %zu parameters, expected %zu", r.core_params, core);
    char s[32];
    snprintf(s, sizeof s, "%.3fM", (double)r.core_params / 1e6);
    CHECK(!strcmp(s, "0.040M"), "core %s (the tutorial prints 0.040M)", s);
    /* FullFactorized2d: spatial h*w + features c + bias per neuron */
    size_t fz = 144 * 256 + c + 1;
    CHECK(r.factorized_per_neuron == fz && fz == 36929, "factorized %zu per neuron", r.factorized_per_neuron);
    for (int i = 0; i < TUTORIAL_SESSIONS; i++)
        CHECK(r.factorized_params[i] == fz * (size_t)TUTORIAL_NEURONS[i], "factorized %s: %zu", TUTORIAL_KEYS[i],
              r.factorized_params[i]);
    snprintf(s, sizeof s, "%.3fM", (double)r.factorized_params[0] / 1e6);
    CHECK(!strcmp(s, "309.170M"), "factorized %s (the tutorial prints 309.170M)", s);
    /* Gaussian2d: mu 2 + sigma 2 + features c + bias */
    size_t gs = 2 + 2 + c + 1;
    CHECK(r.gaussian_per_neuron == gs && gs == 69, "gaussian %zu per neuron", r.gaussian_per_neuron);
    for (int i = 0; i < TUTORIAL_SESSIONS; i++)
        CHECK(r.gaussian_params[i] == gs * (size_t)TUTORIAL_NEURONS[i], "gaussian %s: %zu", TUTORIAL_KEYS[i],
              r.gaussian_params[i]);
    snprintf(s, sizeof s, "%.3fM", (double)r.gaussian_params[0] / 1e6);
    CHECK(!strcmp(s, "0.578M"), "gaussian %s (the tutorial prints 0.578M)", s);
    CHECK(!strcmp(r.factorized_repr, "FullFactorized2d (64 x 144 x 256 -> 8372) with bias, normalized"), "repr '%s'",
          r.factorized_repr);
    CHECK(!strcmp(r.gaussian_repr, "Gaussian2d (64 x 144 x 256 -> 8372) with bias"), "repr '%s'", r.gaussian_repr);
    CHECK(r.out_rows == 2 && r.out_cols == 8372 && r.all_finite, "forward output (%d, %d), finite %d", r.out_rows,
          r.out_cols, r.all_finite);
}

static void test_tutorial_bad_args(void)
{
    tutorial_opts o = {0, 2, 1, NULL};
    tutorial_result r;
    CHECK(tutorial_run(&o, &r) == NPRED_ERR_ARG && strstr(npred_last_error(), "batch"), "batch 0 rejected");
}

int main(void)
{
    RUN(test_tutorial);
    RUN(test_tutorial_bad_args);
    return th_summary();
}
