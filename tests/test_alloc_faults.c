/* Allocation failures inside the library: this program is linked with
 * -Wl,--wrap=malloc (Makefile), so every malloc of libnpred.a goes through
 * __wrap_malloc below, which can be armed to fail the next allocation of one
 * exact size. A failed allocation must give NPRED_ERR_NOMEM with a message,
 * never a crash or a silent wrong result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);

static size_t fail_size;
static int fail_armed, fail_hit;

void *__wrap_malloc(size_t n)
{
    if (n == fail_size && __atomic_exchange_n(&fail_armed, 0, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&fail_hit, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    return __real_malloc(n);
}

static void arm(size_t n)
{
    fail_size = n;
    fail_hit = 0;
    __atomic_store_n(&fail_armed, 1, __ATOMIC_SEQ_CST);
}

/* The squeeze-excitation block's backward scratch (C + hidden doubles): 37
 * channels and se_reduction 3 give 12 hidden units, 392 bytes, a size no other
 * allocation of the backward pass has. */
static void test_se_backward_scratch(void)
{
    const char *cfg = "{\"core_type\": \"SE2dCore\", \"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3,"
                      " \"hidden_channels\": 37, \"n_se_blocks\": 1, \"se_reduction\": 3, \"grid_mean_predictor\": null}";
    enum { B = 2, H = 10, W = 12, N = 4 };
    npred_model_session ses = {"1-1-1", N, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "se", 1, H, W, &ses, 1, B, 3))) return;
    float img[B * H * W], out[B * N], dout[B * N];
    uint64_t st = 5;
    for (int i = 0; i < B * H * W; i++) img[i] = (float)th_rand(&st);
    for (int i = 0; i < B * N; i++) dout[i] = 1.0f;
    npred_rng rng;
    npred_rng_seed(&rng, 11);
    if (CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, B, 1, &rng, NULL, out))) {
        arm(sizeof(double) * (37 + 12));
        npred_status s = npred_model_backward(m, dout, 0, NULL, NULL);
        __atomic_store_n(&fail_armed, 0, __ATOMIC_SEQ_CST);
        CHECK(fail_hit, "the backward pass made no allocation of %zu bytes", sizeof(double) * 49);
        CHECK(s == NPRED_ERR_NOMEM && strstr(npred_last_error(), "squeeze-excitation"),
              "a failed allocation in the SE backward: status %d, '%s'", (int)s, npred_last_error());
        /* and with memory, the same call works */
        CHECK_OK(npred_model_forward(m, 0, img, NULL, NULL, B, 1, &rng, NULL, out));
        CHECK_OK(npred_model_backward(m, dout, 0, NULL, NULL));
    }
    npred_model_free(m);
}

int main(void)
{
    RUN(test_se_backward_scratch);
    return th_summary();
}
