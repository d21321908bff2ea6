/* AttentionReadout against the 0.3.0 reference cases attention_readout (one
 * attention layer, eval) and attention_readout_2layers (conv -> BatchNorm ->
 * ELU -> conv, kernel 3, train mode with running statistics and the eval
 * output after the step): output, regularizer, loss, every gradient with its
 * shape, buffers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "readouts/readout.h"

static void run_case(const char *name)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *a = th_get(c.json, "args", NULL);
    cJSON *shape = th_get(a, "in_shape", NULL);
    npred_array xs;
    float *x = th_load_f32(&c, "input.npy", &xs);
    npred_readout r;
    memset(&r, 0, sizeof r);
    npred_ptable t;
    npred_ptable_init(&t);
    if (!x || !CHECK(cJSON_GetArraySize(shape) == 3 && xs.ndim == 4, "%s: in_shape / input shape", name)) goto out;
    /* in_shape is (c, w, h) by the class's naming; the input tells the map size */
    int B = (int)xs.shape[0], C = (int)xs.shape[1], H = (int)xs.shape[2], W = (int)xs.shape[3];
    int n = (int)th_num(a, 0, "outdims", NULL);
    CHECK(cJSON_GetArrayItem(shape, 0)->valueint == C, "%s: in_shape channels", name);
    npred_readout_config cfg;
    npred_readout_config_default(&cfg, NPRED_READOUT_ATTENTION, C, H, W, n);
    cfg.bias = cJSON_IsTrue(th_get(a, "bias", NULL));
    cfg.attention_layers = (int)th_num(a, 1, "attention_layers", NULL);
    cfg.attention_kernel = (int)th_num(a, 1, "attention_kernel", NULL);
    cfg.feature_reg_weight = th_num(a, 1, "feature_reg_weight", NULL);
    int train = !strcmp(cJSON_GetStringValue(th_get(c.json, "mode", NULL)), "train");
    if (!CHECK_OK(npred_readout_declare(&r, &cfg, "", &t)) || !CHECK_OK(npred_ptable_alloc(&t)) ||
        !CHECK_OK(npred_readout_setup(&r, &t, B)))
        goto out;
    CHECK(th_load_table(&c, &t, "params", "", NULL) == (int)t.n, "%s: not every table entry loaded", name);
    float *y = calloc((size_t)B * n, sizeof *y), *dx = calloc(xs.count, sizeof *dx);
    float *up = th_load_f32(&c, "upstream.npy", NULL);
    if (CHECK(y && dx && up, "out of memory or no upstream") &&
        CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, B, train, NULL, NULL))) {
        th_compare_dims(&c, "forward", "output.npy", y, TH_DIMS(B, n));
        if (train) th_compare_table(&c, &t, "buffers_after", "forward", "", NULL);
        npred_ptable_zero_grad(&t);
        npred_readout_backward(&r, &t, up, dx, NULL);
        double reg = npred_readout_regularizer(&r, &t, 1.0);
        double want_reg = th_num(c.json, NAN, "scalars", "regularizer", NULL);
        CHECK(fabs(reg - want_reg) <= 1e-4 * fabs(want_reg) + 1e-5, "regularizer %.8g want %.8g", reg, want_reg);
        double loss = reg;
        for (size_t i = 0; i < (size_t)B * n; i++) loss += (double)y[i] * up[i];
        double want_loss = th_num(c.json, NAN, "scalars", "loss", NULL);
        CHECK(fabs(loss - want_loss) <= 1e-4 * fabs(want_loss) + 1e-4, "loss %.8g want %.8g", loss, want_loss);
        th_compare_dims(&c, "grads", "grads/input.npy", dx, xs.ndim, xs.shape);
        const char *skip[] = {"input", NULL};
        th_compare_table(&c, &t, "grads", "grads", "", skip);
        if (th_get(c.json, "files", "output_eval", NULL) &&
            CHECK_OK(npred_readout_forward(&r, &t, y, x, NULL, B, 0, NULL, NULL)))
            th_compare_dims(&c, "forward", "output_eval.npy", y, TH_DIMS(B, n));
    }
    free(y);
    free(dx);
    free(up);
out:
    free(x);
    npred_readout_free(&r);
    npred_ptable_free(&t);
    th_case_close(&c);
}

static void test_attention_readout(void) { run_case("attention_readout"); }
static void test_attention_readout_2layers(void) { run_case("attention_readout_2layers"); }

int main(void)
{
    RUN(test_attention_readout);
    RUN(test_attention_readout_2layers);
    return th_summary();
}
