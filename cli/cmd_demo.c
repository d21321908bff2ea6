/* npred demo: simulate a two-session dataset with a known ground truth, train the
 * SENSORIUM baseline on it, evaluate, write the pictures, and report how close the
 * result is to the ground truth. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "cli_report.h"
#include "npred/simulate.h"
#include "npred/data.h"
#include "npred/eval.h"
#include "npred/train.h"

/* configs/sensorium_sota.json (the notebook's CNN baseline) */
static const char *MODEL_CFG =
    "{\"layers\": 4, \"input_kern\": 9, \"hidden_kern\": 7, \"hidden_channels\": 64, \"depth_separable\": true,"
    " \"stack\": -1, \"pad_input\": false, \"linear\": false, \"core_bias\": false, \"gamma_input\": 6.3831,"
    " \"gamma_readout\": 0.0076, \"init_sigma\": 0.1, \"init_mu_range\": 0.3, \"gauss_type\": \"full\","
    " \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2, \"hidden_layers\": 1,"
    " \"hidden_features\": 30, \"final_tanh\": true}, \"shifter\": false}";

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred demo [options]\n\n"
            "The main job, end to end, in a few minutes on 2 cores:\n"
            "  1. simulate a two-session SENSORIUM dataset with a known ground truth (npred simulate),\n"
            "  2. train the SENSORIUM CNN baseline on it (configs/sensorium_sota.json, standard_trainer),\n"
            "  3. evaluate it on the test tier (correlations, FEVE, oracle),\n"
            "  4. write the pictures into the run folder,\n"
            "  5. compare with the ground truth: test correlation against the oracle (the expected\n"
            "     correlation of a single trial with the noise-free rate) and the recovered receptive\n"
            "     field positions.\n\n"
            "options:\n"
            "  --out DIR        working folder (data/ and run/ inside) [npred-demo]\n"
            "  --sessions N     sessions [2]\n"
            "  --neurons N      neurons per session [300]\n"
            "  --trials N       train + validation trials per session [1500]\n"
            "  --epochs N       maximum epochs (max_iter) [20]\n"
            "  --rate-scale F   median neuron gain of the simulation; higher = less noisy [4]\n"
            "  --batch N        batch size [32]\n"
            "  --test-images N  test images shared by the sessions [100]\n"
            "  --test-repeats N repeats of every test image [10]\n"
            "  --seed N         seed of the simulation and the training [1]\n"
            "  --threads N      OpenMP threads [all cores]\n"
            "  -h, --help       this help\n");
}

static void on_epoch(void *u, const npred_trainer_epoch_info *e)
{
    (void)u;
    if (e->epoch == 0) printf("  epoch %3lld  validation correlation %.4f\n", (long long)e->epoch, e->objective);
    else
        printf("  epoch %3lld  lr %-9.3g loss %-12.6g validation correlation %.4f  %6.1f s%s\n", (long long)e->epoch,
               e->lr, e->train_loss, e->objective, e->seconds, e->improved ? "  *best" : "");
    fflush(stdout);
}

static void on_message(void *u, const char *msg)
{
    (void)u;
    printf("  %s\n", msg);
}

static volatile sig_atomic_t stop_flag;
static void on_sigint(int sig)
{
    (void)sig;
    stop_flag = 1;
    signal(SIGINT, SIG_DFL);
}

static int sim_progress(void *u, int session, int64_t done, int64_t total)
{
    (void)u;
    (void)session;
    (void)done;
    (void)total;
    return stop_flag;
}

int cmd_demo(int argc, char **argv)
{
    const char *out = "npred-demo";
    int sessions = 2, neurons = 300, trials = 1500, epochs = 20, batch = 32, seed = 1, threads = 0;
    double rate_scale = 4;
    int test_images = 100, test_repeats = 10;
    const cli_opt opts[] = {{"out", CLI_STR, &out, 0, 0},
                            {"sessions", CLI_INT, &sessions, 1, 64},
                            {"neurons", CLI_INT, &neurons, 2, 100000},
                            {"trials", CLI_INT, &trials, 20, 1000000},
                            {"epochs", CLI_INT, &epochs, 1, 100000},
                            {"batch", CLI_INT, &batch, 2, 4096},
                            {"test-images", CLI_INT, &test_images, 2, 100000},
                            {"test-repeats", CLI_INT, &test_repeats, 2, 1000},
                            {"rate-scale", CLI_NUM, &rate_scale, 0, 1e4},
                            {"seed", CLI_INT, &seed, 0, 2147483647},
                            {"threads", CLI_INT, &threads, 1, 1024},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"demo", help, opts, NULL};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (!(rate_scale > 0)) return cli_usage_error("demo", "--rate-scale expects a positive number, got %g", rate_scale);
    if (threads > 0) omp_set_num_threads((int)threads);
    time_t t0 = time(NULL);
    char data_dir[4096], run_dir[4096];
    snprintf(data_dir, sizeof data_dir, "%s/data", out);
    snprintf(run_dir, sizeof run_dir, "%s/run", out);
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "npred demo: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    signal(SIGINT, on_sigint);

    /* 1. simulate */
    npred_sim_params sp = npred_sim_default_params();
    sp.n_sessions = sessions;
    sp.n_neurons = neurons;
    sp.n_trials = trials;
    sp.seed = (uint64_t)seed;
    sp.n_test_images = (int)test_images;
    sp.rate_scale = rate_scale;
    sp.n_test_repeats = (int)test_repeats;
    sp.write_tree = 0;
    sp.write_zip = 1;
    sp.force = 1;
    printf("1. simulating %d sessions x %d neurons, %d train+validation trials and %d x %d test trials, "
           "%d x %d images -> %s\n",
           sessions, neurons, trials, sp.n_test_images, sp.n_test_repeats, sp.height, sp.width, data_dir);
    fflush(stdout);
    npred_status st = npred_simulate(&sp, data_dir, sim_progress, NULL);
    if (st) return cli_fail(st, "simulate");
    char **paths = calloc((size_t)sessions, sizeof *paths);
    if (!paths) return cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "demo");
    for (long s = 0; s < sessions; s++) {
        char name[512];
        npred_sim_tree_name(&sp, (int)s, name, sizeof name);
        size_t len = strlen(data_dir) + strlen(name) + 6;
        paths[s] = malloc(len);
        if (!paths[s]) {
            for (long k = 0; k < s; k++) free(paths[k]);
            free(paths);
            return cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "demo");
        }
        snprintf(paths[s], len, "%s/%s.zip", data_dir, name);
    }

    /* 2. train */
    int rc = 0;
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    char ds_json[256];
    snprintf(ds_json, sizeof ds_json, "{\"batch_size\": %d, \"scale\": 0.25, \"normalize\": true}", batch);
    char tr_json[256];
    snprintf(tr_json, sizeof tr_json,
             "{\"max_iter\": %d, \"lr_init\": 0.009, \"lr_decay_steps\": 4, \"avg_loss\": false, \"verbose\": false}",
             epochs);
    npred_loaders *L = NULL;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    npred_trainer_config tc;
    npred_trainer_config_init(&tc);
    if ((st = npred_loader_config_parse(&lc, ds_json, NULL, NULL))) {
        rc = cli_fail(st, "dataset config");
        goto done;
    }
    if ((st = npred_loaders_open(&L, (const char *const *)paths, (size_t)sessions, &lc))) {
        rc = cli_fail(st, "loading the simulated data");
        goto done;
    }
    if ((st = npred_trainer_config_parse(&tc, tr_json, "demo trainer"))) {
        rc = cli_fail(st, "trainer config");
        goto done;
    }
    if ((st = npred_trainer_model_create(&m, L, MODEL_CFG, "configs/sensorium_sota.json", (uint64_t)seed))) {
        rc = cli_fail(st, "model");
        goto done;
    }
    if ((st = npred_trainer_create(&t, m, L, &tc, (uint64_t)seed))) {
        rc = cli_fail(st, "trainer");
        goto done;
    }
    {
        char run_cfg[4096];
        snprintf(run_cfg, sizeof run_cfg, "{\"model\": %s, \"dataset\": %s, \"trainer\": %s, \"seed\": %d}\n",
                 MODEL_CFG, ds_json, tr_json, seed);
        if ((st = npred_trainer_set_run_dir(t, run_dir, run_cfg))) {
            rc = cli_fail(st, "run folder");
            goto done;
        }
    }
    printf("2. training the SENSORIUM CNN baseline (configs/sensorium_sota.json; batch %d, at most %d epochs, "
           "%d threads) -> %s\n",
           batch, epochs, omp_get_max_threads(), run_dir);
    fflush(stdout);
    npred_trainer_callbacks cb = {NULL, on_epoch, on_message, NULL, &stop_flag};
    npred_trainer_set_callbacks(t, &cb);
    npred_trainer_result tr;
    st = npred_trainer_run(t, &tr);
    if (st == NPRED_ERR_INTERRUPTED) {
        fprintf(stderr, "npred demo: interrupted\n");
        rc = 130;
        goto done;
    }
    if (st) {
        rc = cli_fail(st, "training");
        goto done;
    }

    /* 3. evaluate */
    printf("3. evaluating on the test tier (%d images x %d repeats per session)\n", sp.n_test_images,
           sp.n_test_repeats);
    if ((st = npred_evaluate(m, L, NPRED_TIER_TEST, &res))) {
        rc = cli_fail(st, "evaluation");
        goto done;
    }
    printf("   %-14s %8s %12s %12s %10s %10s\n", "session", "neurons", "single-trial", "corr-to-avg", "FEVE",
           "oracle");
    for (int s = 0; s < res.n_sessions; s++) {
        const npred_eval_metrics *e = &res.sessions[s].m;
        printf("   %-14s %8lld %12.4f %12.4f %10.4f %10.4f\n", res.sessions[s].data_key, (long long)e->n_neurons,
               e->single_trial_corr, e->corr_to_average, e->feve, e->oracle);
    }

    /* 4. pictures, 5. ground truth */
    printf("4. pictures\n");
    cli_gt_summary gt;
    cli_write_pictures(run_dir, m, L, (const char *const *)paths, &res, &gt);
    printf("5. compared with the ground truth\n");
    double corr = res.overall.single_trial_corr;
    if (gt.have) {
        double frac = corr / gt.oracle_rate;
        printf("   test correlation %.4f = %.1f%% of the oracle %.4f (the expected correlation of a single trial with "
               "the noise-free rate)\n",
               corr, 100 * frac, gt.oracle_rate);
        printf("   jackknife oracle from the repeats %.4f; correlation to the average over repeats %.4f (FEVE %.4f)\n",
               gt.oracle_jackknife, res.overall.corr_to_average, res.overall.feve);
        int oc, oh, ow;
        npred_model_core_output_shape(m, &oc, &oh, &ow);
        printf("   receptive fields: learned vs true position correlation x %.3f, y %.3f; median error %.2f pixels "
               "of the %dx%d core output (%d neurons)\n",
               gt.corr_x, gt.corr_y, gt.median_px, oh, ow, gt.n);
        printf("   %s\n", frac >= 0.9 ? "the trained model reaches >= 90% of the oracle"
                                      : "below 90% of the oracle: more trials or epochs (--trials, --epochs) close the gap");
    }
    printf("done in %ld s; model, log and pictures in %s\n", (long)(time(NULL) - t0), run_dir);

done:
    signal(SIGINT, SIG_DFL);
    npred_eval_results_free(&res);
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    for (long s = 0; s < sessions; s++) free(paths[s]);
    free(paths);
    return rc;
}
