/* Shared readouts across sessions (neuralpredictors 0.3.0 MultiReadoutSharedParametersBase
 * with FullGaussian2d, via sensorium's MultipleFullGaussian2d): the fixtures
 * shared_features_gaussian (share_features: the first session owns _features, every
 * session has its own scales) and shared_grid_gaussian (share_grid: the first session
 * owns _mu, the second maps it through its own mu_transform Linear(2, 2)). Matching is by
 * the rank of each session's match ids. Per session, on the same readouts, from zeroed
 * gradients: outputs (eval on the initial state, then train with the captured noise),
 * regularizer, loss, the gradients of the input and of every parameter under every
 * state_dict key, buffers and repr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "readouts/readout.h"

#define NS 2

static void run_case(const char *name, int share_features, int share_grid)
{
    th_case c;
    if (!th_case_open(&c, name)) return;
    cJSON *keys = th_get(c.json, "data_keys", NULL);
    if (!CHECK(cJSON_GetArraySize(keys) == NS, "%s: two sessions", name)) goto out0;
    const char *key[NS];
    int64_t ids[NS][16];
    int n[NS];
    npred_ptable t;
    npred_ptable_init(&t);
    npred_readout r[NS];
    memset(r, 0, sizeof r);
    int declared = 0;
    for (int s = 0; s < NS; s++) {
        key[s] = cJSON_GetArrayItem(keys, s)->valuestring;
        cJSON *shape = th_get(c.json, "args", "in_shape_dict", key[s], NULL);
        cJSON *mid = th_get(c.json, "shared_match_ids", key[s], NULL);
        n[s] = (int)th_num(c.json, 0, "args", "n_neurons_dict", key[s], NULL);
        if (!CHECK(shape && mid && n[s] > 0 && n[s] <= 16 && cJSON_GetArraySize(mid) == n[s], "%s: args", key[s]))
            goto out;
        for (int j = 0; j < n[s]; j++) ids[s][j] = (int64_t)cJSON_GetArrayItem(mid, j)->valuedouble;
        npred_readout_config rc;
        npred_readout_config_default(&rc, NPRED_READOUT_FULL_GAUSSIAN2D, cJSON_GetArrayItem(shape, 0)->valueint,
                                     cJSON_GetArrayItem(shape, 1)->valueint, cJSON_GetArrayItem(shape, 2)->valueint,
                                     n[s]);
        rc.bias = 1;
        rc.init_mu_range = th_num(c.json, 0, "args", "init_mu_range", NULL);
        rc.init_sigma = th_num(c.json, 0, "args", "init_sigma", NULL);
        rc.feature_reg_weight = th_num(c.json, 0, "args", "gamma_readout", NULL);
        rc.gauss_type = NPRED_GAUSS_FULL;
        rc.match_ids = ids[s];
        rc.shared_features = share_features;
        rc.shared_grid = share_grid;
        rc.features_from = share_features && s ? &r[0] : NULL;
        rc.grid_from = share_grid && s ? &r[0] : NULL;
        char prefix[96];
        snprintf(prefix, sizeof prefix, "%s.", key[s]);
        if (!CHECK_OK(npred_readout_declare(&r[s], &rc, prefix, &t))) goto out;
        declared = s + 1;
    }
    if (!CHECK_OK(npred_ptable_alloc(&t))) goto out;
    int maxb = 0;
    for (int s = 0; s < NS; s++) {
        char rel[256];
        npred_array sh;
        snprintf(rel, sizeof rel, "%s/input.npy", key[s]);
        float *x = th_load_f32(&c, rel, &sh);
        free(x);
        if (x && sh.shape[0] > maxb) maxb = (int)sh.shape[0];
    }
    for (int s = 0; s < NS; s++) CHECK_OK(npred_readout_setup(&r[s], &t, maxb));
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    for (int s = 0; s < NS; s++) npred_readout_init_params(&r[s], &t, &rng, NULL);
    /* the same state_dict: every fixture key (parameters, sharing buffers), nothing else */
    int loaded = th_load_table(&c, &t, "params", "", NULL);
    CHECK(loaded == t.n, "%s: %d fixture entries, the readouts have %d", name, loaded, t.n);
    /* the sharing buffers the readouts computed from the match ids (init) are the fixture's */
    for (int s = 0; s < NS; s++) {
        char k[128];
        snprintf(k, sizeof k, "%s.%s", key[s], share_features ? "feature_sharing_index" : "grid_sharing_index");
        int idx = npred_ptable_find(&t, k);
        if (CHECK(idx >= 0, "no %s", k))
            for (int j = 0; j < n[s]; j++)
                CHECK(r[s].match_idx[j] == (int64_t)npred_ptable_ptr(&t, idx)[j], "%s[%d]: rank %lld, fixture %g", k,
                      j, (long long)r[s].match_idx[j], npred_ptable_ptr(&t, idx)[j]);
    }
    /* repr */
    char rp[NS][1024], all[2300];
    for (int s = 0; s < NS; s++) {
        npred_readout_repr(&r[s], rp[s], sizeof rp[s]);
        size_t l = strlen(rp[s]);
        while (l && rp[s][l - 1] == '\n') rp[s][--l] = 0;
    }
    snprintf(all, sizeof all, "MultipleFullGaussian2d(\n  (%s): %s\n  (%s): %s\n)", key[0], rp[0], key[1], rp[1]);
    cJSON *want_repr = th_get(c.json, "repr", NULL);
    /* the reference's repr of a child module with children ends with "\n" + two spaces */
    char want[2300];
    snprintf(want, sizeof want, "%s", want_repr ? want_repr->valuestring : "");
    for (char *p = strstr(want, "\n  \n"); p; p = strstr(want, "\n  \n")) memmove(p, p + 3, strlen(p + 3) + 1);
    CHECK(!strcmp(all, want), "repr:\n%s\nwant:\n%s", all, want);
    /* eval on the initial state, both sessions first */
    float y[64], up[64], dx[4096], x[4096], noise[64];
    for (int s = 0; s < NS; s++) {
        char rel[256];
        npred_array sh;
        snprintf(rel, sizeof rel, "%s/input.npy", key[s]);
        float *xx = th_load_f32(&c, rel, &sh);
        if (!xx || !CHECK(sh.count <= 4096 && sh.shape[0] * n[s] <= 64, "input size")) {
            free(xx);
            continue;
        }
        int B = (int)sh.shape[0];
        if (CHECK_OK(npred_readout_forward(&r[s], &t, y, xx, NULL, B, 0, NULL, NULL))) {
            snprintf(rel, sizeof rel, "%s/output_eval.npy", key[s]);
            th_compare_dims(&c, "forward", rel, y, TH_DIMS(B, n[s]));
        }
        free(xx);
    }
    /* train step per session from zeroed gradients: loss = sum(out * up) + regularizer */
    for (int s = 0; s < NS; s++) {
        char rel[256], sk[128];
        npred_array sh;
        snprintf(rel, sizeof rel, "%s/input.npy", key[s]);
        float *xx = th_load_f32(&c, rel, &sh);
        snprintf(rel, sizeof rel, "%s/noise.npy", key[s]);
        float *nz = th_load_f32(&c, rel, NULL);
        snprintf(rel, sizeof rel, "%s/upstream.npy", key[s]);
        float *uu = th_load_f32(&c, rel, NULL);
        int B = xx ? (int)sh.shape[0] : 0;
        if (xx && nz && uu && CHECK(sh.count <= 4096 && B * n[s] <= 64, "sizes")) {
            memcpy(x, xx, sh.count * sizeof *x);
            memcpy(noise, nz, (size_t)B * n[s] * 2 * sizeof *noise);
            memcpy(up, uu, (size_t)B * n[s] * sizeof *up);
            npred_ptable_zero_grad(&t);
            if (CHECK_OK(npred_readout_forward(&r[s], &t, y, x, NULL, B, 1, NULL, noise))) {
                snprintf(rel, sizeof rel, "%s/output.npy", key[s]);
                th_compare_dims(&c, "forward", rel, y, TH_DIMS(B, n[s]));
                memset(dx, 0, sh.count * sizeof *dx);
                npred_readout_backward(&r[s], &t, up, dx, NULL);
                double reg = npred_readout_regularizer(&r[s], &t, 1.0), loss = reg;
                for (int i = 0; i < B * n[s]; i++) loss += (double)y[i] * up[i];
                snprintf(sk, sizeof sk, "%s/regularizer", key[s]);
                double wr = th_num(c.json, NAN, "scalars", sk, NULL);
                CHECK(fabs(reg - wr) <= 1e-5 + 1e-4 * fabs(wr), "%s regularizer %.8g want %.8g", key[s], reg, wr);
                snprintf(sk, sizeof sk, "%s/loss", key[s]);
                double wl = th_num(c.json, NAN, "scalars", sk, NULL);
                CHECK(fabs(loss - wl) <= 1e-5 + 1e-4 * fabs(wl), "%s loss %.8g want %.8g", key[s], loss, wl);
                cJSON *g = th_get(c.json, "files", "sessions", key[s], "grads", NULL), *it;
                int ng = 0;
                CHECK(g != NULL, "%s: no grads", key[s]);
                if (g) cJSON_ArrayForEach(it, g)
                {
                    if (!strcmp(it->string, "input")) {
                        th_compare_dims(&c, "grads", it->valuestring, dx, sh.ndim, sh.shape);
                        continue;
                    }
                    int idx = npred_ptable_find(&t, it->string);
                    if (!CHECK(idx >= 0, "no entry %s", it->string)) continue;
                    th_compare_dims(&c, "grads", it->valuestring, npred_ptable_gradptr(&t, idx), t.items[idx].ndim,
                                    t.items[idx].shape);
                    ng++;
                }
                int np = 0;
                for (int i = 0; i < t.n; i++) np += !t.items[i].is_buffer;
                CHECK(ng == np, "%s: %d gradients compared, %d parameters", key[s], ng, np);
                cJSON *ba = th_get(c.json, "files", "sessions", key[s], "buffers_after", NULL);
                if (ba) cJSON_ArrayForEach(it, ba)
                {
                    int idx = npred_ptable_find(&t, it->string);
                    if (CHECK(idx >= 0, "no entry %s", it->string))
                        th_compare_dims(&c, "forward", it->valuestring, npred_ptable_ptr(&t, idx), t.items[idx].ndim,
                                        t.items[idx].shape);
                }
            }
        }
        free(xx), free(nz), free(uu);
    }
out:
    for (int s = 0; s < declared; s++) npred_readout_free(&r[s]);
    npred_ptable_free(&t);
out0:
    th_case_close(&c);
}

static void test_shared_features_gaussian(void) { run_case("shared_features_gaussian", 1, 0); }
static void test_shared_grid_gaussian(void) { run_case("shared_grid_gaussian", 0, 1); }

int main(void)
{
    RUN(test_shared_features_gaussian);
    RUN(test_shared_grid_gaussian);
    return th_summary();
}
