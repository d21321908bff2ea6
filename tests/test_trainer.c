/* standard_trainer: config parsing, the per-batch loss (k and regularizers) and
 * gradient accumulation, learning on a simulated dataset, determinism, the run
 * folder, interrupt + resume equality, and every file in configs/. */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npred/simulate.h"
#include "harness.h"
#include "model/config.h"
#include "model/model.h"
#include "npred/data.h"
#include "npred/model.h"
#include "train/loss.h"
#include "train/trainer.h"

static char base[256];

static const char *model_cfg =
    "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6, \"depth_separable\": true,"
    " \"stack\": -1, \"gamma_input\": 0.5, \"gamma_readout\": 0.01, \"init_sigma\": 0.1, \"init_mu_range\": 0.3,"
    " \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
    " \"hidden_layers\": 1, \"hidden_features\": 8, \"final_tanh\": true}}";

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* A tiny two-session dataset, simulated once. */
static npred_sim_params sim_params(void)
{
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 2;
    p.n_neurons = 14;
    p.n_trials = 150;
    p.val_fraction = 0.2;
    p.n_test_images = 4;
    p.n_test_repeats = 2;
    p.height = 24;
    p.width = 40;
    p.downsample = 4;
    p.seed = 3;
    p.rate_scale = 6.0;
    return p;
}

static char paths[2][800];

static int dataset(void)
{
    if (paths[0][0]) return 1;
    snprintf(base, sizeof base, "/tmp/npred-test-trainer-XXXXXX");
    if (!CHECK(mkdtemp(base) != NULL, "mkdtemp %s failed", base)) return 0;
    npred_sim_params p = sim_params();
    char dir[300];
    snprintf(dir, sizeof dir, "%s/data", base);
    if (!CHECK_OK(npred_simulate(&p, dir, NULL, NULL))) return 0;
    for (int s = 0; s < 2; s++) {
        char name[256];
        npred_sim_tree_name(&p, s, name, sizeof name);
        snprintf(paths[s], sizeof paths[s], "%s/%s", dir, name);
    }
    return 1;
}

static npred_loaders *open_loaders(int n_sessions, int batch_size)
{
    if (!dataset()) return NULL;
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    char js[128];
    snprintf(js, sizeof js, "{\"batch_size\": %d, \"normalize\": true}", batch_size);
    npred_loaders *L = NULL;
    if (CHECK_OK(npred_loader_config_parse(&lc, js, NULL, NULL))) {
        const char *pp[2] = {paths[0], paths[1]};
        CHECK_OK(npred_loaders_open(&L, pp, (size_t)n_sessions, &lc));
    }
    npred_loader_config_free(&lc);
    return L;
}

static npred_trainer_config small_config(int max_iter)
{
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    c.max_iter = max_iter;
    c.lr_init = 0.01;
    c.patience = 3;
    c.lr_decay_steps = 2;
    return c;
}

/* ---------------------------------------------------------------- config */

static void test_config(void)
{
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    CHECK(!c.avg_loss && c.scale_loss && c.loss_function == NPRED_TRAIN_LOSS_POISSON, "loss defaults");
    CHECK(c.interval == 1 && c.patience == 5 && c.max_iter == 200 && c.lr_decay_steps == 3, "int defaults");
    CHECK(c.lr_init == 0.005 && c.tolerance == 1e-6 && c.lr_decay_factor == 0.3 && c.min_lr == 0.0001, "defaults");
    CHECK(c.maximize && c.restore_best && !c.detach_core && c.loss_accum_batch_n == 0, "flag defaults");
    CHECK_OK(npred_trainer_config_parse(&c,
                                        "{\"max_iter\": 7, \"lr_init\": 0.009, \"loss_accum_batch_n\": 3,"
                                        " \"loss_function\": \"AnscombeMSE\", \"device\": \"cpu\", \"cb\": null,"
                                        " \"verbose\": false, \"seed\": 12}",
                                        "t.json"));
    CHECK(c.max_iter == 7 && c.lr_init == 0.009 && c.loss_accum_batch_n == 3, "parsed values");
    CHECK(c.loss_function == NPRED_TRAIN_LOSS_ANSCOMBE_MSE && c.seed_set && c.seed == 12, "parsed names");
    /* round trip through the resolved form */
    cJSON *j = npred_trainer_config_to_json(&c);
    npred_trainer_config d;
    npred_trainer_config_init(&d);
    CHECK_OK(npred_trainer_config_set_json(&d, j, "resolved"));
    cJSON_Delete(j);
    CHECK(d.max_iter == 7 && d.loss_function == c.loss_function && d.loss_accum_batch_n == 3 && d.seed == 12,
          "round trip");

    npred_status s = npred_trainer_config_parse(&c, "{\"max_iter\": 3, \"learning_rate\": 0.1}", "bad.json");
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), "learning_rate") && strstr(npred_last_error(), "bad.json"),
          "unknown key named: %s", npred_last_error());
    s = npred_trainer_config_parse(&c, "{\"patience\": 1.5}", "t");
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), "patience"), "non-integer: %s", npred_last_error());
    s = npred_trainer_config_parse(&c, "{\"loss_function\": \"L2\"}", "t");
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), "PoissonLoss"), "bad loss: %s", npred_last_error());
    s = npred_trainer_config_parse(&c, "{\"avg_loss\": 1}", "t");
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), "avg_loss"), "bool type: %s", npred_last_error());
    s = npred_trainer_config_parse(&c, "{\"lr_decay_factor\": 1.5}", "t");
    CHECK(s == NPRED_ERR_CONFIG, "factor >= 1");
    s = npred_trainer_config_parse(&c, "[1, 2", "t");
    CHECK(s == NPRED_ERR_CONFIG, "bad JSON");
}

/* Every file in configs/ parses with the parser its name implies. */
static void test_configs_dir(void)
{
    DIR *d = opendir("configs");
    if (!CHECK(d != NULL, "configs/ missing")) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        char path[512];
        snprintf(path, sizeof path, "configs/%s", e->d_name);
        char *txt = read_text(path);
        if (!CHECK(txt != NULL, "%s unreadable", path)) continue;
        npred_status s;
        if (!strncmp(e->d_name, "dataset", 7)) {
            npred_loader_config lc;
            npred_loader_config_init(&lc);
            s = npred_loader_config_parse(&lc, txt, NULL, NULL);
            if (!s) CHECK(lc.batch_size == 128 && lc.scale.set && lc.scale.v == 0.25 && lc.normalize, "%s values", path);
            if (!s && strstr(e->d_name, "plus"))
                CHECK(lc.include_behavior && lc.include_eye_position && lc.add_behavior_as_channels, "%s plus", path);
            npred_loader_config_free(&lc);
        } else if (!strncmp(e->d_name, "trainer", 7)) {
            npred_trainer_config c;
            npred_trainer_config_init(&c);
            s = npred_trainer_config_parse(&c, txt, path);
            if (!s) CHECK(c.max_iter == 200 && c.lr_decay_steps == 4 && !c.avg_loss && c.lr_init == 0.009, "%s", path);
        } else {
            npred_model_config mc;
            s = npred_model_config_parse(&mc, txt, path);
            if (!s) {
                int shifter = strstr(e->d_name, "_p_") != NULL;
                CHECK((mc.shifter != NPRED_SHIFTER_NONE) == shifter, "%s shifter", path);
                CHECK(mc.core.hidden_channels == 64 && mc.core.input_kern == 9 && mc.core.hidden_kern[0] == 7 && mc.core.linear == (strstr(e->d_name, "ln") != NULL),
                      "%s core", path);
                CHECK(mc.core.layers == (strstr(e->d_name, "ln") ? 3 : 4), "%s layers", path);
                if (strstr(e->d_name, "tutorial"))
                    CHECK(mc.readout.type == (strstr(e->d_name, "factorized") ? NPRED_READOUT_FACTORIZED
                                                                            : NPRED_READOUT_GAUSSIAN2D) &&
                              mc.core.pad_input && mc.core.momentum == 0.1 && mc.core.use_avg_reg,
                          "%s: tutorial readout and Stacked2dCore defaults", path);
            }
        }
        CHECK(s == NPRED_OK, "%s: %s", path, npred_last_error());
        free(txt);
        n++;
    }
    closedir(d);
    CHECK(n == 9, "%d config files", n);
}

/* ---------------------------------------------------------------- one batch */

/* One session: the trainer's batch gradient equals k * dPoisson/dtheta + the
 * regularizer gradients, with k = sqrt(trials of the scan / B) computed here; the
 * loss value matches a double-precision recomputation. Then the accumulation. */
static void test_batch_semantics(void)
{
    npred_loaders *L = open_loaders(1, 32);
    if (!L) return;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    if (!CHECK_OK(npred_trainer_model_create(&m, L, model_cfg, "model", 1))) goto out;
    npred_trainer_config c = small_config(1);
    if (!CHECK_OK(npred_trainer_create(&t, m, L, &c, 5))) goto out;
    npred_ptable *tab = npred_model_table(m);
    size_t P = tab->n_params, NB = tab->n_buffers;

    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    npred_dataset_info di;
    npred_dataset_get_info(si.dataset, &di);
    CHECK(di.n_trials == 150 + 8, "all tiers counted: %lld", (long long)di.n_trials);

    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    /* a short batch: k grows */
    int64_t trials[13];
    for (int i = 0; i < 13; i++) trials[i] = si.tier_idx[NPRED_TIER_TRAIN][i];
    CHECK_OK(npred_loaders_get(L, 0, trials, 13, &b));
    double k = sqrt((double)di.n_trials / 13.0);
    CHECK(fabs(npred_trainer_loss_scale(t, 0, 13) - k) < 1e-15, "k = %g", npred_trainer_loss_scale(t, 0, 13));

    float *g1 = malloc(P * sizeof(float)), *g2 = malloc(P * sizeof(float)), *buf0 = malloc(NB * sizeof(float));
    float *yhat = malloc((size_t)13 * si.n_neurons * sizeof(float)), *dy = calloc((size_t)13 * si.n_neurons, sizeof(float));
    memcpy(buf0, tab->bufdata, NB * sizeof(float));
    npred_rng r0 = *npred_trainer_rng(t);
    npred_ptable_zero_grad(tab);
    double loss = 0;
    CHECK_OK(npred_trainer_batch(t, &b, &loss));
    memcpy(g1, tab->grad, P * sizeof(float));

    /* by hand, replaying the same sampling noise */
    *npred_trainer_rng(t) = r0;
    memcpy(tab->bufdata, buf0, NB * sizeof(float));
    npred_ptable_zero_grad(tab);
    npred_rng r = r0;
    CHECK_OK(npred_model_forward(m, 0, b.images, NULL, NULL, 13, 1, &r, NULL, yhat));
    double pois = 0;
    for (int64_t i = 0; i < 13 * si.n_neurons; i++) pois += (double)yhat[i] - b.responses[i] * log((double)yhat[i] + 1e-12);
    CHECK_OK(npred_loss_poisson_backward(dy, &k, yhat, b.responses, 13, si.n_neurons, NPRED_LOSS_SUM, 1e-12));
    CHECK_OK(npred_model_backward(m, dy, 0, NULL, NULL));
    double reg = npred_core_regularizer(&m->core, tab, 1.0) + npred_readout_regularizer(&m->s[0].ro, tab, 1.0);
    memcpy(g2, tab->grad, P * sizeof(float));
    CHECK(memcmp(g1, g2, P * sizeof(float)) == 0, "gradient = k dPoisson + regularizers");
    double want = k * pois + reg;
    CHECK(fabs(loss - want) <= 1e-6 * fabs(want), "loss %.9g vs %.9g", loss, want);
    CHECK(reg > 0, "regularizers included (%g)", reg);
    /* the regularizer really contributes to the gradient */
    double gmax = 0;
    for (size_t i = 0; i < P; i++) gmax = th_worst(gmax, fabs((double)g1[i]));
    CHECK(gmax > 0 && isfinite(gmax), "gradient nonzero");

    /* accumulation: one session -> one step per batch; 3 -> every third */
    npred_ptable_zero_grad(tab);
    npred_trainer_result res;
    CHECK_OK(npred_trainer_run(t, &res));
    int64_t nb = si.tier_batches[NPRED_TIER_TRAIN];
    CHECK(npred_trainer_adam_steps(t) == nb * res.epochs, "steps %lld, batches %lld x %lld epochs",
          (long long)npred_trainer_adam_steps(t), (long long)nb, (long long)res.epochs);
    npred_batch_free(&b);
    free(g1);
    free(g2);
    free(buf0);
    free(yhat);
    free(dy);
out:
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
}

/* loss_function Corr / AvgCorr: the batch loss is k * (-(sum or mean) of the batch
 * correlations, double reference here) + regularizers; AvgCorr with avg_loss is refused */
static double ref_corr_sum(const float *yh, const float *y, int64_t B, int64_t n)
{
    double tot = 0;
    for (int64_t j = 0; j < n; j++) {
        double mo = 0, mt = 0, vo = 0, vt = 0, cv = 0;
        for (int64_t b = 0; b < B; b++) {
            mo += yh[b * n + j] / (double)B;
            mt += y[b * n + j] / (double)B;
        }
        for (int64_t b = 0; b < B; b++) {
            double p = yh[b * n + j] - mo, q = y[b * n + j] - mt;
            vo += p * p / (double)B;
            vt += q * q / (double)B;
            cv += p * q / (double)B;
        }
        tot += cv / sqrt((vo + 1e-12) * (vt + 1e-12));
    }
    return tot;
}

static void test_corr_losses(void)
{
    npred_loaders *L = open_loaders(1, 32);
    if (!L) return;
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    npred_batch b;
    CHECK_OK(npred_batch_init(&b, L, 0));
    int64_t trials[16], n = si.n_neurons;
    for (int i = 0; i < 16; i++) trials[i] = si.tier_idx[NPRED_TIER_TRAIN][i];
    CHECK_OK(npred_loaders_get(L, 0, trials, 16, &b));
    float *yhat = malloc((size_t)(16 * n) * sizeof(float));
    const char *cfgs[3] = {"{\"loss_function\": \"Corr\"}", "{\"loss_function\": \"Corr\", \"avg_loss\": true}",
                           "{\"loss_function\": \"AvgCorr\"}"};
    for (int v = 0; v < 3; v++) {
        npred_model *m = NULL;
        npred_trainer *t = NULL;
        npred_trainer_config c = small_config(1);
        if (!CHECK_OK(npred_trainer_config_parse(&c, cfgs[v], "test")) ||
            !CHECK_OK(npred_trainer_model_create(&m, L, model_cfg, "model", 1)) ||
            !CHECK_OK(npred_trainer_create(&t, m, L, &c, 5))) {
            npred_trainer_free(t);
            npred_model_free(m);
            continue;
        }
        npred_ptable *tab = npred_model_table(m);
        npred_rng r0 = *npred_trainer_rng(t);
        float *buf0 = malloc(tab->n_buffers * sizeof(float));
        memcpy(buf0, tab->bufdata, tab->n_buffers * sizeof(float));
        double loss = 0;
        npred_ptable_zero_grad(tab);
        CHECK_OK(npred_trainer_batch(t, &b, &loss));
        /* replay the forward with the same noise and buffers */
        memcpy(tab->bufdata, buf0, tab->n_buffers * sizeof(float));
        npred_rng r = r0;
        CHECK_OK(npred_model_forward(m, 0, b.images, NULL, NULL, 16, 1, &r, NULL, yhat));
        double k = npred_trainer_loss_scale(t, 0, 16), cs = ref_corr_sum(yhat, b.responses, 16, n);
        double want = k * (v == 0 ? -cs : -cs / (double)n) + npred_core_regularizer(&m->core, tab, 0.0) +
                      npred_readout_regularizer(&m->s[0].ro, tab, 0.0);
        CHECK(fabs(loss - want) <= 1e-6 * (1 + fabs(want)), "%s: loss %.9g vs reference %.9g", cfgs[v], loss, want);
        double g = 0;
        for (size_t i = 0; i < tab->n_params; i++) g = th_worst(g, fabs((double)tab->grad[i]));
        CHECK(g > 0 && isfinite(g), "%s: a gradient", cfgs[v]);
        free(buf0);
        npred_trainer_free(t);
        npred_model_free(m);
    }
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    CHECK(npred_trainer_config_parse(&c, "{\"loss_function\": \"AvgCorr\", \"avg_loss\": true}", "t") ==
              NPRED_ERR_CONFIG && strstr(npred_last_error(), "AvgCorr"),
          "AvgCorr with avg_loss: %s", npred_last_error());
    free(yhat);
    npred_batch_free(&b);
    npred_loaders_free(L);
}

/* track_training: log.csv gains the tracked validation correlation (= the objective under
 * get_correlations) and the summed Poisson loss of each evaluation */
static void test_track_training(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L || !dataset()) return;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/run_tracked", base);
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_trainer_config c = small_config(2);
    CHECK_OK(npred_trainer_config_parse(&c, "{\"track_training\": true}", "test"));
    if (CHECK_OK(npred_trainer_model_create(&m, L, model_cfg, "model", 1)) &&
        CHECK_OK(npred_trainer_create(&t, m, L, &c, 5)) && CHECK_OK(npred_trainer_set_run_dir(t, dir, NULL))) {
        npred_trainer_result res;
        CHECK_OK(npred_trainer_run(t, &res));
        char p[700];
        snprintf(p, sizeof p, "%s/log.csv", dir);
        char *txt = read_text(p);
        CHECK(txt && !strncmp(txt, "epoch,lr,train_loss,validation_correlation,seconds,correlation,poisson_loss\n",
                              76), "header: %.90s", txt ? txt : "(none)");
        int rows = 0;
        for (char *line = txt ? strchr(txt, '\n') : NULL; line && line[1]; line = strchr(line + 1, '\n')) {
            double e, lr, tl, obj, sec, corr, pois;
            int k = sscanf(line + 1, "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &e, &lr, &tl, &obj, &sec, &corr, &pois);
            CHECK(k == 7, "row %d has 7 columns", rows);
            CHECK(fabs(corr - obj) <= 1e-8 * (1 + fabs(obj)), "row %d: tracked correlation %g = objective %g", rows,
                  corr, obj);
            CHECK(pois > 0 && isfinite(pois), "row %d: Poisson loss %g", rows, pois);
            rows++;
        }
        CHECK(rows >= 3, "%d rows", rows);
        free(txt);
    }
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
}

/* share_features / share_grid from the datasets' meta/neurons/multi_match_id: the second
 * session's readout borrows the first's storage (an alias entry in the parameter table) */
static int aliases_for(npred_loaders *L, const char *extra, const char *part, npred_status *st)
{
    char cfg[2048];
    /* the model config without its grid predictor (share_grid excludes one) */
    const char *cut = strstr(model_cfg, ", \"grid_mean_predictor\"");
    snprintf(cfg, sizeof cfg, "%.*s, %s}", (int)(cut - model_cfg), model_cfg, extra);
    npred_model *m = NULL;
    *st = npred_trainer_model_create(&m, L, cfg, "model", 1);
    int k = 0;
    if (!*st) {
        npred_ptable *tab = npred_model_table(m);
        for (int i = 0; i < tab->n; i++)
            if (tab->items[i].alias_of >= 0 && strstr(tab->items[i].name, part)) k++;
    }
    npred_model_free(m);
    return k;
}

static void test_shared_match_ids(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    npred_status st;
    CHECK(aliases_for(L, "\"share_features\": false", "", &st) == 0, "no sharing, no aliases");
    CHECK_OK(st);
    aliases_for(L, "\"share_features\": true", "", &st);
    CHECK(st != NPRED_OK && strstr(npred_last_error(), "multi_match_id"), "no match ids: %s", npred_last_error());
    npred_loaders_free(L);
    /* the same 14 neurons in both sessions, in another order */
    for (int s = 0; s < 2; s++) {
        char p[900];
        snprintf(p, sizeof p, "%s/meta/neurons/multi_match_id.npy", paths[s]);
        npred_array a;
        int64_t n = 14;
        if (!CHECK_OK(npred_array_alloc(&a, NPRED_DT_I64, 8, 1, &n))) return;
        for (int j = 0; j < 14; j++) ((int64_t *)a.data)[j] = 100 + (s ? 13 - j : j);
        CHECK_OK(npred_npy_write(p, &a));
        npred_array_free(&a);
    }
    L = open_loaders(2, 32);
    if (L) {
        int kf = aliases_for(L, "\"share_features\": true", "features", &st);
        CHECK_OK(st);
        CHECK(kf >= 1, "shared features: %d alias entries", kf);
        int kg = aliases_for(L, "\"share_grid\": true", "", &st);
        CHECK_OK(st);
        CHECK(kg >= 1, "shared grid: %d alias entries", kg);
        npred_loaders_free(L);
    }
    for (int s = 0; s < 2; s++) { /* the other tests use the datasets without ids */
        char p[900];
        snprintf(p, sizeof p, "%s/meta/neurons/multi_match_id.npy", paths[s]);
        remove(p);
    }
}

static void test_accumulation(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    int64_t accs[2] = {0, 3};
    for (int a = 0; a < 2; a++) {
        npred_model *m = NULL;
        npred_trainer *t = NULL;
        npred_trainer_config c = small_config(1);
        c.loss_accum_batch_n = accs[a];
        if (CHECK_OK(npred_trainer_model_create(&m, L, model_cfg, "model", 1)) &&
            CHECK_OK(npred_trainer_create(&t, m, L, &c, 5))) {
            npred_trainer_result res;
            CHECK_OK(npred_trainer_run(t, &res));
            npred_session_info s0;
            npred_loaders_session(L, 0, &s0);
            int64_t per_epoch = 2 * s0.tier_batches[NPRED_TIER_TRAIN]; /* LongCycler: sessions x max batches */
            int64_t every = accs[a] ? accs[a] : 2;
            CHECK(res.epochs == 1 && npred_trainer_adam_steps(t) == per_epoch / every,
                  "accum %lld: %lld steps for %lld batches", (long long)every,
                  (long long)npred_trainer_adam_steps(t), (long long)per_epoch);
        }
        npred_trainer_free(t);
        npred_model_free(m);
    }
    npred_loaders_free(L);
}

/* ---------------------------------------------------------------- training */

typedef struct {
    int n_epochs;
    double first_loss, last_loss, first_obj, last_obj;
    int stop_epoch, stop_batch;
    volatile sig_atomic_t flag;
    npred_model *m;       /* set by train() */
    int batches, rc_batches; /* training batches, and those whose forward used activation recomputation */
    int partial_batches;     /* ... partial recomputation (the first 1x1 outputs stored) */
} progress;

/* the core's activation recomputation mode of train() */
static npred_recompute g_recompute = NPRED_RECOMPUTE_AUTO;

static void on_epoch(void *u, const npred_trainer_epoch_info *e)
{
    progress *p = u;
    if (e->epoch == 0) p->first_obj = e->objective;
    if (e->epoch == 1) p->first_loss = e->train_loss;
    p->last_loss = e->train_loss;
    p->last_obj = e->objective;
    p->n_epochs++;
}

static void on_batch(void *u, const npred_trainer_batch_info *b)
{
    progress *p = u;
    p->batches++;
    p->rc_batches += p->m && npred_model_recomputes(p->m);
    p->partial_batches += p->m && p->m->core.rc_keep_t0;
    if (b->epoch == p->stop_epoch && b->batch == p->stop_batch) p->flag = 1;
}

/* Train n epochs into dir (may be NULL); params copied to *out. */
static npred_status train(npred_loaders *L, int max_iter, uint64_t seed, const char *dir, progress *pg,
                          int resume, float **out, size_t *n_out)
{
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_trainer_config c = small_config(max_iter);
    npred_status st = npred_trainer_model_create(&m, L, model_cfg, "model", seed);
    if (!st) st = npred_model_set_recompute(m, g_recompute);
    pg->m = m;
    if (!st) st = npred_trainer_create(&t, m, L, &c, seed);
    if (!st && dir) st = npred_trainer_set_run_dir(t, dir, "{\"test\": true}\n");
    if (!st && resume) {
        char p[600];
        snprintf(p, sizeof p, "%s/state.safetensors", dir);
        st = npred_trainer_resume(t, p);
    }
    if (!st) {
        npred_trainer_callbacks cb = {on_batch, on_epoch, NULL, pg, &pg->flag};
        npred_trainer_set_callbacks(t, &cb);
        npred_trainer_result res;
        st = npred_trainer_run(t, &res);
    }
    if (out) {
        npred_ptable *tab = npred_model_table(m);
        *n_out = tab->n_params + tab->n_buffers;
        *out = malloc(*n_out * sizeof(float));
        memcpy(*out, tab->data, tab->n_params * sizeof(float));
        memcpy(*out + tab->n_params, tab->bufdata, tab->n_buffers * sizeof(float));
    }
    npred_trainer_free(t);
    npred_model_free(m);
    return st;
}

static void test_learns_and_determinism(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    progress p1 = {0}, p2 = {0}, p3 = {0};
    float *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CHECK_OK(train(L, 8, 11, NULL, &p1, 0, &a, &na));
    CHECK(p1.n_epochs == 9, "epochs reported: %d", p1.n_epochs);
    CHECK(p1.last_loss < 0.9 * p1.first_loss, "train loss decreases: %g -> %g", p1.first_loss, p1.last_loss);
    CHECK(p1.last_obj > p1.first_obj + 0.05, "validation correlation increases: %g -> %g", p1.first_obj, p1.last_obj);
    CHECK(p1.last_obj > 0.2, "validation correlation %g", p1.last_obj);
    CHECK_OK(train(L, 8, 11, NULL, &p2, 0, &b, &nb));
    CHECK(na == nb && memcmp(a, b, na * sizeof(float)) == 0, "same seed: bit-identical parameters and buffers");
    CHECK(p1.last_obj == p2.last_obj, "same objective");
    CHECK_OK(train(L, 2, 12, NULL, &p3, 0, &c, &nc));
    CHECK(nc == na && memcmp(a, c, na * sizeof(float)) != 0, "another seed differs");
    free(a);
    free(b);
    free(c);
    npred_loaders_free(L);
}

/* Activation recomputation of the core (on, and partial: the first 1x1 outputs stored)
 * trains to the same bits as storing every activation (off), and the default (auto)
 * does not use it at these sizes */
static void test_recompute_identical(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    progress p[4];
    memset(p, 0, sizeof p);
    float *a[4] = {NULL, NULL, NULL, NULL};
    size_t na[4] = {0, 0, 0, 0};
    const npred_recompute modes[4] = {NPRED_RECOMPUTE_OFF, NPRED_RECOMPUTE_ON, NPRED_RECOMPUTE_AUTO,
                                      NPRED_RECOMPUTE_PARTIAL};
    for (int k = 0; k < 4; k++) {
        g_recompute = modes[k];
        CHECK_OK(train(L, 3, 11, NULL, &p[k], 0, &a[k], &na[k]));
    }
    g_recompute = NPRED_RECOMPUTE_AUTO;
    CHECK(p[0].batches > 10 && p[0].rc_batches == 0, "off: %d of %d batches recomputed", p[0].rc_batches, p[0].batches);
    CHECK(p[1].batches == p[0].batches && p[1].rc_batches == p[1].batches, "on: %d of %d batches recomputed",
          p[1].rc_batches, p[1].batches);
    CHECK(p[2].rc_batches == 0, "auto at batch 32 of 6 channels: %d batches recomputed", p[2].rc_batches);
    CHECK(p[1].partial_batches == 0 && p[3].batches == p[0].batches && p[3].rc_batches == p[3].batches &&
              p[3].partial_batches == p[3].batches,
          "partial: %d of %d batches recomputed, %d partially (on: %d partially)", p[3].rc_batches, p[3].batches,
          p[3].partial_batches, p[1].partial_batches);
    CHECK(p[0].last_obj == p[3].last_obj && p[0].last_loss == p[3].last_loss, "partial: objective, loss");
    for (int k = 1; k < 4; k++)
        CHECK(na[k] == na[0] && a[k] && a[0] && memcmp(a[0], a[k], na[0] * sizeof(float)) == 0,
              "recompute %d: parameters and buffers differ from storing the activations", (int)modes[k]);
    CHECK(p[0].last_obj == p[1].last_obj && p[0].last_loss == p[1].last_loss,
          "objective %.17g / %.17g, loss %.17g / %.17g", p[0].last_obj, p[1].last_obj, p[0].last_loss, p[1].last_loss);
    npred_recompute r = NPRED_RECOMPUTE_ON;
    CHECK(npred_recompute_parse("sometimes", &r) == NPRED_ERR_ARG && strstr(npred_last_error(), "sometimes"),
          "a bad recompute mode accepted");
    CHECK_OK(npred_recompute_parse("off", &r));
    CHECK(r == NPRED_RECOMPUTE_OFF, "off parsed as %d", (int)r);
    CHECK_OK(npred_recompute_parse("partial", &r));
    CHECK(r == NPRED_RECOMPUTE_PARTIAL, "partial parsed as %d", (int)r);
    for (int k = 0; k < 4; k++) free(a[k]);
    npred_loaders_free(L);
}

static int file_exists(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int count_lines(const char *path)
{
    char *s = read_text(path);
    int n = 0;
    for (char *q = s; q && *q; q++) n += *q == '\n';
    free(s);
    return n;
}

/* Interrupt in epoch 3, resume from state.safetensors: the same final state as an
 * uninterrupted run, bit for bit; the run folder holds the expected files. */
static void test_interrupt_resume(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    char d1[400], d2[400];
    snprintf(d1, sizeof d1, "%s/run-full", base);
    snprintf(d2, sizeof d2, "%s/run-interrupted", base);
    progress pf = {0}, pi = {0}, pr = {0};
    pi.stop_epoch = 3;
    pi.stop_batch = 2;
    float *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(train(L, 6, 21, d1, &pf, 0, &a, &na));
    npred_status s = train(L, 6, 21, d2, &pi, 0, NULL, NULL);
    CHECK(s == NPRED_ERR_INTERRUPTED, "interrupted: %s", npred_status_str(s));
    CHECK(pi.n_epochs == 3, "epochs 0..2 completed before the interrupt (%d)", pi.n_epochs);
    CHECK(file_exists(d2, "state.safetensors") && file_exists(d2, "log.csv") && file_exists(d2, "model.safetensors"),
          "run folder after the interrupt");
    CHECK_OK(train(L, 6, 21, d2, &pr, 1, &b, &nb));
    CHECK(na == nb && memcmp(a, b, na * sizeof(float)) == 0, "resumed run = uninterrupted run (bit for bit)");
    CHECK(pr.last_obj == pf.last_obj, "same final objective %g %g", pr.last_obj, pf.last_obj);

    /* files */
    const char *names[] = {"model.safetensors", "config.json", "log.csv", "state.safetensors"};
    for (int i = 0; i < 4; i++) CHECK(file_exists(d1, names[i]), "%s written", names[i]);
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/log.csv", d1);
    snprintf(p2, sizeof p2, "%s/log.csv", d2);
    CHECK(count_lines(p1) == 1 + pf.n_epochs, "log rows %d (epochs %d)", count_lines(p1), pf.n_epochs);
    CHECK(count_lines(p1) == count_lines(p2), "resumed log has every row");
    char *hdr = read_text(p1);
    CHECK(hdr && !strncmp(hdr, "epoch,lr,train_loss,validation_correlation,seconds\n", 51), "log header");
    free(hdr);
    /* no temporary files left */
    DIR *dd = opendir(d1);
    struct dirent *e;
    int tmp = 0;
    while (dd && (e = readdir(dd))) tmp += strstr(e->d_name, ".tmp") != NULL;
    if (dd) closedir(dd);
    CHECK(tmp == 0, "no temporary files");

    /* the saved best model predicts like the trained model (restored best) */
    npred_model *m = NULL;
    char mp[600];
    snprintf(mp, sizeof mp, "%s/model.safetensors", d1);
    if (CHECK_OK(npred_model_load(&m, mp, 32))) {
        npred_ptable *tab = npred_model_table(m);
        CHECK(tab->n_params + tab->n_buffers == na && memcmp(tab->data, a, tab->n_params * sizeof(float)) == 0,
              "model.safetensors holds the final (best) parameters");
        npred_model_free(m);
    }
    /* resuming a finished run does nothing more */
    progress pd = {0};
    float *c = NULL;
    size_t nc = 0;
    CHECK_OK(train(L, 6, 21, d1, &pd, 1, &c, &nc));
    CHECK(pd.n_epochs == 0 && nc == na && memcmp(a, c, na * sizeof(float)) == 0, "finished run stays finished");
    /* a state from another model is refused */
    npred_model *m2 = NULL;
    npred_trainer *t2 = NULL;
    npred_trainer_config cfg = small_config(2);
    const char *other = "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 4,"
                        " \"depth_separable\": true, \"gamma_readout\": 0.01, \"init_mu_range\": 0.3,"
                        " \"init_sigma\": 0.1}";
    if (CHECK_OK(npred_trainer_model_create(&m2, L, other, "other", 1)) &&
        CHECK_OK(npred_trainer_create(&t2, m2, L, &cfg, 1))) {
        snprintf(mp, sizeof mp, "%s/state.safetensors", d1);
        s = npred_trainer_resume(t2, mp);
        CHECK(s == NPRED_ERR_FORMAT && strstr(npred_last_error(), "parameters"), "mismatch: %s", npred_last_error());
    }
    npred_trainer_free(t2);
    npred_model_free(m2);
    free(a);
    free(b);
    free(c);
    npred_loaders_free(L);
}

static void test_bad_setup(void)
{
    npred_loaders *L = open_loaders(2, 32);
    if (!L) return;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_trainer_config c = small_config(1);
    /* a model with a shifter needs pupil_center in the batches */
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%.*s, \"shifter\": true}", (int)strlen(model_cfg) - 1, model_cfg);
    if (CHECK_OK(npred_trainer_model_create(&m, L, cfg, "model", 1))) {
        npred_status s = npred_trainer_create(&t, m, L, &c, 1);
        CHECK(s == NPRED_ERR_ARG && strstr(npred_last_error(), "pupil_center"), "shifter: %s", npred_last_error());
    }
    npred_model_free(m);
    m = NULL;
    npred_status s = npred_trainer_model_create(&m, L, "{\"layers\": 2, \"no_such_key\": 1}", "m.json", 1);
    CHECK(s == NPRED_ERR_CONFIG && strstr(npred_last_error(), "no_such_key"), "model key: %s", npred_last_error());
    npred_loaders_free(L);
}

/* detach_core: the readouts learn on a frozen core taken from another model
 * (npred_model_copy_parameters, what `npred train --init-core` does) */
static void test_detach_core_transfer(void)
{
    npred_loaders *L = open_loaders(2, 16);
    if (!L) return;
    npred_model *src = NULL, *m = NULL;
    npred_trainer *t = NULL;
    npred_trainer_config c = small_config(2);
    c.detach_core = 1;
    if (CHECK_OK(npred_trainer_model_create(&src, L, model_cfg, "model", 11)) &&
        CHECK_OK(npred_trainer_model_create(&m, L, model_cfg, "model", 12))) {
        int nc = 0;
        CHECK_OK(npred_model_copy_parameters(m, src, "core.", &nc));
        npred_ptable *a = npred_model_table(src), *b = npred_model_table(m);
        CHECK(nc > 0, "core tensors copied: %d", nc);
        int ro = npred_ptable_find(b, "readout.90000-1-1._features");
        float *ro0 = NULL;
        if (CHECK(ro >= 0, "readout features")) {
            ro0 = malloc(b->items[ro].count * sizeof *ro0);
            memcpy(ro0, npred_ptable_ptr(b, ro), b->items[ro].count * sizeof *ro0);
        }
        npred_trainer_result res;
        if (CHECK_OK(npred_trainer_create(&t, m, L, &c, 3)) && CHECK_OK(npred_trainer_run(t, &res))) {
            int same = 1, n_core = 0;
            for (int i = 0; i < b->n; i++) {
                const npred_param *p = &b->items[i];
                if (p->is_buffer || strncmp(p->name, "core.", 5)) continue;
                int j = npred_ptable_find(a, p->name);
                same &= j >= 0 && !memcmp(npred_ptable_ptr(a, j), npred_ptable_ptr(b, i), p->count * sizeof(float));
                n_core++;
            }
            CHECK(same && n_core > 0, "the %d core parameters are the source model's, unchanged", n_core);
            CHECK(ro0 && memcmp(ro0, npred_ptable_ptr(b, ro), b->items[ro].count * sizeof *ro0) != 0,
                  "the readout was trained");
        }
        free(ro0);
        /* a mismatching source is refused by name */
        npred_model_session bad = {"x-1-1", 3, NULL, 0, NULL, NULL};
        npred_model *other = NULL;
        if (CHECK_OK(npred_model_create(&other, "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3,"
                                                " \"hidden_channels\": 5, \"grid_mean_predictor\": null}",
                                        "other", 1, 20, 20, &bad, 1, 1, 1)))
            CHECK(npred_model_copy_parameters(m, other, "core.", NULL) == NPRED_ERR_SHAPE &&
                      strstr(npred_last_error(), "core.features.layer0.conv.weight"),
                  "shape mismatch named: %s", npred_last_error());
        npred_model_free(other);
    }
    npred_trainer_free(t);
    npred_model_free(m);
    npred_model_free(src);
    npred_loaders_free(L);
}

static void cleanup(void)
{
    if (!base[0]) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

int main(void)
{
    RUN(test_config);
    RUN(test_configs_dir);
    RUN(test_batch_semantics);
    RUN(test_accumulation);
    RUN(test_corr_losses);
    RUN(test_shared_match_ids);
    RUN(test_track_training);
    RUN(test_learns_and_determinism);
    RUN(test_recompute_identical);
    RUN(test_interrupt_resume);
    RUN(test_bad_setup);
    RUN(test_detach_core_transfer);
    cleanup();
    return th_summary();
}
