/* `npred simulate --shared-neurons F` and shared readouts against the ground truth.
 *
 * 1. The files: every session records round(F n) shared neurons at random places,
 *    with the same ground truth (RF, weights, bias, gain, noise-free test rates) in
 *    every session; meta/neurons/multi_match_id.npy gives them ids 1..S (first in
 *    np.unique order) and every other neuron an id of its own.
 * 2. A model with share_features and share_grid (neuralpredictors'
 *    MultiReadoutSharedParametersBase: matched by the rank of the ids) trained on two
 *    sessions: the second session's shared neurons, which read the first session's
 *    features and grid, are predicted better than its own neurons (forced onto
 *    unrelated slots by the rank matching, far from their RFs); the shared grid of the
 *    well-predicted shared neurons lies at their true RF, and the second session reads
 *    them at the same place (its mu_transform stays close to the identity). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "npred/npred.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n < 1) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* <tree>/<rel> as a float64 (or int64 -> double) array */
static double *load(const char *tree, const char *rel, int64_t *count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tree, rel);
    npred_array a;
    if (!CHECK_OK(npred_npy_read(path, &a))) return NULL;
    double *v = malloc((a.count ? a.count : 1) * sizeof *v);
    for (size_t i = 0; i < a.count; i++)
        v[i] = a.dtype == NPRED_DT_F64   ? ((double *)a.data)[i]
               : a.dtype == NPRED_DT_I64 ? (double)((int64_t *)a.data)[i]
                                         : (double)((float *)a.data)[i];
    if (count) *count = (int64_t)a.count;
    npred_array_free(&a);
    return v;
}

enum { NS = 2, N = 40 };

static const char *MODEL =
    "{\"hidden_channels\": 16, \"input_kern\": 9, \"hidden_kern\": 7, \"layers\": 3, \"depth_separable\": true,"
    " \"pad_input\": true, \"stack\": -1, \"gamma_input\": 1.0, \"gamma_readout\": 0.0076, \"init_sigma\": 0.1,"
    " \"init_mu_range\": 0.3, \"gauss_type\": \"full\", \"grid_mean_predictor\": null,"
    " \"share_features\": true, \"share_grid\": true}";

static void test_shared_neurons_truth(void)
{
    char dir[] = "/tmp/npred-test-shared-truth-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    npred_sim_params sp = npred_sim_default_params();
    sp.n_sessions = NS;
    sp.n_neurons = N;
    sp.n_trials = 1200;
    sp.n_test_images = 40;
    sp.n_test_repeats = 4;
    sp.height = 72;
    sp.width = 128;
    sp.rate_scale = 8;
    sp.seed = 3;
    sp.shared_neurons = 0.5;
    const int S = 20;
    char trees[NS][1200];
    double *mid[NS] = {0}, *grid[NS] = {0}, *w[NS] = {0}, *b[NS] = {0}, *rates[NS] = {0};
    npred_loaders *L = NULL;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    npred_trainer_config tc;
    npred_trainer_config_init(&tc);
    if (!CHECK_OK(npred_simulate(&sp, dir, NULL, NULL))) goto out;
    /* 1. the files */
    for (int s = 0; s < NS; s++) {
        char name[512];
        npred_sim_tree_name(&sp, s, name, sizeof name);
        snprintf(trees[s], sizeof trees[s], "%s/%s", dir, name);
        int64_t c;
        mid[s] = load(trees[s], "meta/neurons/multi_match_id.npy", &c);
        grid[s] = load(trees[s], "meta/ground_truth/rf_grid.npy", NULL);
        w[s] = load(trees[s], "meta/ground_truth/readout_weights.npy", NULL);
        b[s] = load(trees[s], "meta/ground_truth/gain.npy", NULL);
        rates[s] = load(trees[s], "meta/ground_truth/test_image_rates.npy", NULL);
        if (!mid[s] || !grid[s] || !w[s] || !b[s] || !rates[s] || !CHECK(c == N, "%lld match ids", (long long)c))
            goto out;
        int shared = 0;
        for (int j = 0; j < N; j++) {
            shared += mid[s][j] >= 1 && mid[s][j] <= S;
            for (int i = 0; i < j; i++) CHECK(mid[s][i] != mid[s][j], "session %d: ids unique", s);
            CHECK(mid[s][j] >= 1 && (mid[s][j] <= S || mid[s][j] > 1e6 * (s + 1)), "id %g", mid[s][j]);
        }
        CHECK(shared == S, "session %d: %d shared neurons, want round(0.5 * 40) = %d", s, shared, S);
    }
    int pos[NS][N]; /* pos[s][k]: the neuron of session s with id k + 1 */
    for (int s = 0; s < NS; s++)
        for (int j = 0; j < N; j++)
            if (mid[s][j] <= S) pos[s][(int)mid[s][j] - 1] = j;
    int differ = 0;
    for (int k = 0; k < S; k++) {
        int i = pos[0][k], j = pos[1][k];
        CHECK(grid[0][2 * i] == grid[1][2 * j] && grid[0][2 * i + 1] == grid[1][2 * j + 1] && b[0][i] == b[1][j],
              "shared neuron %d: the same RF and gain in both sessions", k);
        for (int f = 0; f < 32; f++) CHECK(w[0][32 * i + f] == w[1][32 * j + f], "shared %d weight %d", k, f);
        for (int im = 0; im < sp.n_test_images; im++)
            CHECK(rates[0][im * N + i] == rates[1][im * N + j], "shared %d: test image %d rate", k, im);
        differ += i != j;
    }
    CHECK(differ > S / 2, "shared neurons sit at different places in the two sessions (%d of %d moved)", differ, S);
    double own = 0;
    for (int j = 0; j < N; j++)
        if (mid[1][j] > S) own += fabs(grid[1][2 * j] - grid[0][2 * j]);
    CHECK(own > 0, "the other neurons differ between sessions");
    /* 2. train the shared readouts */
    const char *paths[NS] = {trees[0], trees[1]};
    if (!CHECK_OK(npred_loader_config_parse(&lc, "{\"batch_size\": 32, \"scale\": 0.25, \"normalize\": true}", NULL,
                                            NULL)) ||
        !CHECK_OK(npred_loaders_open(&L, paths, NS, &lc)) ||
        !CHECK_OK(npred_trainer_config_parse(&tc, "{\"max_iter\": 10, \"lr_init\": 0.009, \"lr_decay_steps\": 2, "
                                                  "\"avg_loss\": false, \"verbose\": false}", "trainer")) ||
        !CHECK_OK(npred_trainer_model_create(&m, L, MODEL, "model", 3)) ||
        !CHECK_OK(npred_trainer_create(&t, m, L, &tc, 3)))
        goto out;
    npred_trainer_result tr;
    if (!CHECK_OK(npred_trainer_run(t, &tr)) || !CHECK_OK(npred_evaluate(m, L, NPRED_TIER_TEST, &res))) goto out;
    if (!CHECK(res.n_sessions == NS && res.sessions[0].readout_xy && res.sessions[1].readout_xy, "positions")) goto out;
    /* the second session: shared neurons predicted, its own ones (on borrowed slots) not */
    double cs = 0, co = 0;
    for (int j = 0; j < N; j++) {
        if (mid[1][j] <= S) cs += res.sessions[1].corr[j] / S;
        else co += res.sessions[1].corr[j] / (N - S);
    }
    printf("    session 2 test correlation: shared neurons %.3f, its own neurons %.3f (session 1: %.3f)\n", cs, co,
           res.sessions[0].m.single_trial_corr);
    CHECK(cs > 0.3 && cs > co, "session 2: shared neurons %.3f should be predicted better than its own %.3f", cs, co);
    /* positions of the well-predicted shared neurons: truth, and the same in both sessions */
    double e0[N], e1[N], d01[N];
    int nr = 0;
    for (int k = 0; k < S; k++) {
        int i = pos[0][k], j = pos[1][k];
        if (!(res.sessions[0].corr[i] > 0.3 && res.sessions[1].corr[j] > 0.3)) continue;
        const float *p0 = res.sessions[0].readout_xy + 2 * i, *p1 = res.sessions[1].readout_xy + 2 * j;
        e0[nr] = hypot(p0[0] - grid[0][2 * i], p0[1] - grid[0][2 * i + 1]);
        e1[nr] = hypot(p1[0] - grid[0][2 * i], p1[1] - grid[0][2 * i + 1]);
        d01[nr] = hypot(p0[0] - p1[0], p0[1] - p1[1]);
        nr++;
    }
    double m0 = median(e0, nr), m1 = median(e1, nr), m01 = median(d01, nr);
    /* the second session's own neurons sit on slots the rank matching gave them (an
     * unrelated neuron of the first session): far from their own RFs */
    double eo[N];
    int no = 0;
    for (int j = 0; j < N; j++)
        if (mid[1][j] > S) {
            const float *p1 = res.sessions[1].readout_xy + 2 * j;
            eo[no++] = hypot(p1[0] - grid[1][2 * j], p1[1] - grid[1][2 * j + 1]);
        }
    double mo = median(eo, no);
    printf("    session 2's own neurons: median RF error %.3f\n", mo);
    CHECK(mo > 1.5 * m1, "own neurons on borrowed slots: RF error %.3f should exceed 1.5 x the shared ones' %.3f",
          mo, m1);
    printf("    %d well-predicted shared neurons: median RF error %.3f (session 1), %.3f (session 2), "
           "between sessions %.3f grid units\n", nr, m0, m1, m01);
    CHECK(nr >= S / 3, "%d of %d shared neurons predicted well in both sessions", nr, S);
    CHECK(m0 <= 0.15 && m1 <= 0.15 && m01 <= 0.1, "shared grid: median errors %.3f, %.3f, between sessions %.3f", m0,
          m1, m01);
out:
    npred_eval_results_free(&res);
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    for (int s = 0; s < NS; s++) free(mid[s]), free(grid[s]), free(w[s]), free(b[s]), free(rates[s]);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    th_shell(NULL, cmd);
}

static void test_without_option(void)
{
    char dir[] = "/tmp/npred-test-shared-none-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    npred_sim_params sp = npred_sim_default_params();
    sp.n_neurons = 5;
    sp.n_trials = 4;
    sp.n_test_images = 0;
    sp.height = 16;
    sp.width = 16;
    if (CHECK_OK(npred_simulate(&sp, dir, NULL, NULL))) {
        char name[512], path[1200];
        npred_sim_tree_name(&sp, 0, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s/meta/neurons/multi_match_id.npy", dir, name);
        FILE *f = fopen(path, "rb");
        CHECK(f == NULL, "no multi_match_id.npy without --shared-neurons");
        if (f) fclose(f);
    }
    sp.shared_neurons = 1.5;
    CHECK(npred_sim_validate(&sp) == NPRED_ERR_ARG && strstr(npred_last_error(), "shared-neurons"),
          "1.5 is refused naming the option: %s", npred_last_error());
    sp.shared_neurons = NAN;
    CHECK(npred_sim_validate(&sp) == NPRED_ERR_ARG, "NaN is refused");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    th_shell(NULL, cmd);
}

int main(void)
{
    RUN(test_without_option);
    RUN(test_shared_neurons_truth);
    return th_summary();
}
