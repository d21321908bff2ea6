/* npred train: the SENSORIUM standard_trainer on datasets, with a run folder. */
#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "cli_report.h"
#include "npred/dist.h"
#ifdef NPRED_HAVE_MPI
#include "npred/mpi.h"
#endif
#include "npred/eval.h"
#include "npred/data.h"
#include "npred/model.h"
#include "npred/train.h"
#include "npred/video.h"
#include "train_video.h"

#define DEFAULT_SEED 42

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred train --data A.zip [B.zip ...] --model MODEL.json --trainer TRAINER.json\n"
            "                   [--dataset DATASET.json] --out RUN/ [options]\n\n"
            "Train a model as the SENSORIUM 2022 starter kit does (sensorium standard_trainer,\n"
            "neuralpredictors 0.3.0): Poisson loss scaled by sqrt(trials / batch) plus the core and\n"
            "readout regularizers, gradients accumulated over one batch per session, Adam,\n"
            "ReduceLROnPlateau and early stopping on the validation correlation, restoring the\n"
            "best model at the end.\n\n"
            "options:\n"
            "  --data PATH...      SENSORIUM datasets (folders or .zip), one session each\n"
            "  --model FILE        model config (sensorium builder arguments; e.g. configs/sensorium_sota.json)\n"
            "  --trainer FILE      trainer config (standard_trainer arguments; e.g. configs/trainer.json)\n"
            "  --dataset FILE      loader config (static_loaders arguments; e.g. configs/dataset_sensorium.json)\n"
            "                      [batch_size 128, scale 0.25, normalize true]\n"
            "  --out DIR           run folder: model.safetensors (best model), config.json, log.csv,\n"
            "                      state.safetensors (for --resume)\n"
            "  --seed N            seed of the model initialisation and of training [%d, or the trainer's \"seed\"]\n"
            "  --threads N         OpenMP threads [all cores]; same seed + threads => identical results\n"
            "  --precision P       fp32 (default, exact) or bf16: the core's GEMM convolutions (forward and\n"
            "                      backward) in bfloat16 with fp32 accumulation, weights kept in fp32\n"
            "                      (AVX-512 BF16 CPUs; docs/precision.md); recorded in config.json\n"
            "  --recompute M       auto (default), on, partial or off: the core stores only its BatchNorm\n"
            "                      inputs in training and recomputes the rest in the backward (less memory,\n"
            "                      some more time, identical results); partial also stores each hidden\n"
            "                      layer's first 1x1 output (recomputes less); auto: partial where it saves\n"
            "                      >= 256 MiB and is cheap, on where memory needs it; docs/performance.md)\n"
            "  --resume            continue the run in --out from its state.safetensors (settings not given\n"
            "                      on the command line are read from its config.json)\n"
            "  --max-iter N        override the trainer's max_iter\n"
            "  --init-core MODEL   start from the core of a trained or imported model (run folder,\n"
            "                      .safetensors or PyTorch .pth); with the trainer's \"detach_core\": true\n"
            "                      only the readouts (and shifters) are trained on the frozen core\n"
            "  --sync-bn           data-parallel runs: BatchNorm statistics of the global batch (synchronised\n"
            "                      across ranks) instead of per-rank statistics\n"
            "  -h, --help          this help\n\n"
            "Ctrl-C stops after the current batch; the run folder keeps everything up to the last\n"
            "finished epoch, and --resume gives the same result as an uninterrupted run.\n\n"
            "example: npred train --data static26872-17-20-GrayImageNet-94c6ff995dac583098847cfecd43e7b6.zip \\\n"
            "           --model configs/sensorium_sota.json --trainer configs/trainer.json \\\n"
            "           --dataset configs/dataset_sensorium.json --out runs/sota\n\n"
            "Data-parallel (a build with MPI): mpirun -np K npred train ... (same flags) splits every batch\n"
            "across K ranks and sums the gradients; rank 0 writes the run folder. See docs/distributed.md.\n\n"
            "SENSORIUM 2023 movie scans (--data folders or .zip with data/videos): the 2023 kit's video\n"
            "training instead (docs/video.md): --model holds make_video_model arguments, --dataset the\n"
            "mouse_video_loader arguments (required: batch_size, frames), --trainer the kit's video\n"
            "standard_trainer arguments (AdamW, validation correlation on the 'oracle' tier); the same\n"
            "run folder, --resume, --seed, --threads, --max-iter and --sync-bn (not --init-core).\n",
            DEFAULT_SEED);
}

/* ---- SIGINT ---- */
static volatile sig_atomic_t stop_flag;
static void on_sigint(int sig)
{
    (void)sig;
    stop_flag = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process at once */
}

/* Under mpirun a failed rank makes the launcher terminate the others: say why. */
static void on_sigterm(int sig)
{
    static const char msg[] = "npred train: this rank was stopped by the MPI launcher (another rank failed or the job "
                              "was cancelled); the run folder keeps the last finished epoch: continue with --resume\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(128 + sig);
}

/* Test hook: NPRED_TEST_KILL_RANK="R:E" kills rank R (SIGKILL) when epoch E ends (rank 0
 * is the only process of a run without MPI). */
static int kill_rank = -1;
static long long kill_epoch = -1;

/* ---- progress ---- */
typedef struct {
    int tty;
    int objective_is_corr;
} progress;

static void on_batch(void *u, const npred_trainer_batch_info *b)
{
    progress *p = u;
    if (!p->tty) return;
    int width = 30, fill = (int)(width * b->batch / (b->n_batches ? b->n_batches : 1));
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\repoch %3" PRId64 " [%s] %4" PRId64 "/%-4" PRId64 " loss %10.4g  lr %.3g  ", b->epoch, bar,
            b->batch, b->n_batches, b->loss, b->lr);
    fflush(stderr);
}

static void on_epoch(void *u, const npred_trainer_epoch_info *e)
{
    progress *p = u;
    if (kill_rank == npred_dist_rank() && kill_epoch == e->epoch) {
        fflush(stdout);
        raise(SIGKILL);
    }
    if (p->tty) fprintf(stderr, "\r%*s\r", 90, "");
    printf("epoch %3" PRId64 "  lr %-9.3g  train_loss %-12.6g  %s %.6f  %7.2f s%s\n", e->epoch, e->lr, e->train_loss,
           p->objective_is_corr ? "val_corr" : "val_loss", e->objective, e->seconds, e->improved ? "  *best" : "");
    fflush(stdout);
}

static void on_message(void *u, const char *msg)
{
    progress *p = u;
    if (p->tty) fprintf(stderr, "\r%*s\r", 90, "");
    printf("  %s\n", msg);
    fflush(stdout);
}

/* ---- files ---- */
/* make room for n paths in the (empty) list */
static int grow_paths(const char ***data, size_t *cap, size_t n)
{
    if (n + 1 <= *cap) return 1;
    const char **d = realloc(*data, (n + 1) * sizeof *d);
    if (!d) return 0;
    *data = d;
    *cap = n + 1;
    return 1;
}

static int read_json_file(const char *path, cJSON **out)
{
    char *txt = cli_read_text(path);
    if (!txt) return cli_fail(NPRED_ERR_IO, path);
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(txt, &end, 1);
    if (!*out) {
        long off = end ? (long)(end - txt) : 0;
        free(txt);
        fprintf(stderr, "npred train: %s: invalid JSON near byte %ld\n", path, off);
        return 1;
    }
    free(txt);
    return 0;
}

/* A configuration from its file when one is given, else the one under key in the saved
 * run (saved, read from saved_path) when resuming. *where names where it came from.
 * Returns 0 (read), -1 (neither given) or the exit code of a reported error. */
static int config_from(const char *path, const cJSON *saved, const char *key, const char *saved_path, cJSON **out,
                       const char **where)
{
    *where = path;
    if (path) return read_json_file(path, out);
    const cJSON *s = saved ? cJSON_GetObjectItem(saved, key) : NULL;
    if (!s) return -1;
    *where = saved_path;
    if (!(*out = cJSON_Duplicate(s, 1))) return cli_fail(NPRED_ERR_NOMEM, saved_path);
    return 0;
}

static void print_section(const char *title, const cJSON *j)
{
    printf("%s:\n", title);
    for (const cJSON *e = j->child; e; e = e->next) {
        char *v = cJSON_PrintUnformatted(e);
        printf("  %-26s %s\n", e->string, v ? v : "?");
        free(v);
    }
}

int cmd_train(int argc, char **argv)
{
    cli_list paths = {0};
    const char *model_path = NULL, *trainer_path = NULL, *dataset_path = NULL, *out = NULL, *init_core = NULL;
    const char *precision_name = NULL, *recompute_name = NULL;
    npred_precision precision = NPRED_PRECISION_FP32;
    npred_recompute recompute = NPRED_RECOMPUTE_AUTO;
    long long seed = -1, threads = 0, max_iter = -1;
    int resume = 0, rc = 0, sync_bn = 0;
    const cli_opt opts[] = {{"data", CLI_LIST, &paths, 0, 0},
                            {"model", CLI_STR, &model_path, 0, 0},
                            {"trainer", CLI_STR, &trainer_path, 0, 0},
                            {"dataset", CLI_STR, &dataset_path, 0, 0},
                            {"out", CLI_STR, &out, 0, 0},
                            {"init-core", CLI_STR, &init_core, 0, 0},
                            {"seed", CLI_LONG, &seed, 0, 9007199254740992.0},
                            {"threads", CLI_LONG, &threads, 1, 4096},
                            {"max-iter", CLI_LONG, &max_iter, 0, 9007199254740992.0},
                            {"resume", CLI_FLAG, &resume, 0, 0},
                            {"sync-bn", CLI_FLAG, &sync_bn, 0, 0},
                            {"precision", CLI_STR, &precision_name, 0, 0},
                            {"recompute", CLI_STR, &recompute_name, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"train", help, opts, NULL};
    if ((rc = cli_parse(&spec, argc, argv)) != CLI_CONTINUE) return rc;
    rc = 0;
    if (precision_name && npred_precision_parse(precision_name, &precision)) {
        free(paths.v);
        return cli_usage_error("train", "--precision %s: expected fp32 or bf16", precision_name);
    }
    if (recompute_name && npred_recompute_parse(recompute_name, &recompute)) {
        free(paths.v);
        return cli_usage_error("train", "--recompute %s: expected auto, on, partial or off", recompute_name);
    }
    /* the list of datasets: from --data, else (with --resume) from the run's config.json */
    size_t n_data = (size_t)paths.n, data_cap = (size_t)paths.n + 1;
    const char **data = paths.v ? paths.v : calloc(data_cap, sizeof *data);
    if (!data) return cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "train");
    if (!out) {
        free(data);
        return cli_usage_error("train", "--out RUN/ is required");
    }
    if (threads > 0) omp_set_num_threads((int)threads);

    /* started by mpirun/srun? then train data-parallel, or say why not */
#ifdef NPRED_HAVE_MPI
    npred_mpi_enable();
#endif
    int launched = npred_dist_launched_size();
    if (launched != 0 && launched != 1 && !npred_dist_compiled()) {
        if (npred_dist_launched_rank() == 0) {
            char nr[32];
            if (launched > 0) snprintf(nr, sizeof nr, "%d", launched);
            else snprintf(nr, sizeof nr, "several");
            fprintf(stderr,
                    "npred train: started by an MPI launcher (%s ranks), but this npred was built without MPI "
                    "support.\n  Install Open MPI (apt-get install libopenmpi-dev openmpi-bin), rebuild (make clean; "
                    "make), or run npred train without mpirun.\n",
                    nr);
        }
        free(data);
        return 1;
    }
    if (launched != 0 && npred_dist_compiled()) {
        npred_status ds = npred_dist_init(NULL, NULL);
        if (ds) {
            free(data);
            return cli_fail(ds, "MPI");
        }
        if (npred_dist_size() > 1) signal(SIGTERM, on_sigterm);
        /* rank 0 alone reports progress */
        if (npred_dist_rank() != 0 && !freopen("/dev/null", "w", stdout)) {
            fprintf(stderr, "npred train: rank %d: cannot silence stdout\n", npred_dist_rank());
        }
    }
    const int nranks = npred_dist_size(), rank = npred_dist_rank();
    const char *kr = getenv("NPRED_TEST_KILL_RANK"); /* test hook, also for single-process runs (rank 0) */
    if (kr && sscanf(kr, "%d:%lld", &kill_rank, &kill_epoch) != 2) kill_rank = -1;

    /* settings: command line, else (with --resume) the run's config.json */
    cJSON *saved = NULL, *jmodel = NULL, *jtrainer = NULL, *jdataset = NULL;
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", out);
    if (resume && access(cfg_path, R_OK) != 0 && model_path && trainer_path && n_data) {
        /* the run stopped before it saved anything: with every setting given, start it over */
        fprintf(stderr, "npred train: --resume: %s holds no saved run yet: starting from the beginning\n", out);
        resume = 0;
    }
    if (resume) {
        if (access(cfg_path, R_OK) != 0) {
            fprintf(stderr, "npred train: --resume: %s not found (no run to resume in %s)\n", cfg_path, out);
            free(data);
            return 1;
        }
        if ((rc = read_json_file(cfg_path, &saved))) goto out;
    }
    const char *cfg_where_model, *cfg_where_trainer, *cfg_where_dataset;
    if ((rc = config_from(model_path, saved, "model", cfg_path, &jmodel, &cfg_where_model)) < 0)
        rc = cli_usage_error("train", "--model MODEL.json is required");
    if (rc) goto out;
    if ((rc = config_from(trainer_path, saved, "trainer", cfg_path, &jtrainer, &cfg_where_trainer)) < 0)
        rc = cli_usage_error("train", "--trainer TRAINER.json is required");
    if (rc) goto out;
    if ((rc = config_from(dataset_path, saved, "dataset", cfg_path, &jdataset, &cfg_where_dataset)) < 0) {
        rc = 0;
        jdataset = cJSON_Parse("{\"batch_size\": 128, \"scale\": 0.25, \"normalize\": true}");
    }
    if (rc) goto out;
    if (!n_data && saved) {
        cJSON *d = cJSON_GetObjectItem(saved, "data");
        cJSON *e;
        if (!grow_paths(&data, &data_cap, (size_t)cJSON_GetArraySize(d))) {
            free(data);
            return cli_fail(NPRED_ERR_NOMEM, "resume");
        }
        cJSON_ArrayForEach(e, d) if (cJSON_IsString(e)) data[n_data++] = e->valuestring;
        if (seed < 0 && cJSON_IsNumber(cJSON_GetObjectItem(saved, "seed")))
            seed = (long long)cJSON_GetObjectItem(saved, "seed")->valuedouble;
    }
    if (saved && !precision_name) { /* --resume: the run's precision */
        const cJSON *jp = cJSON_GetObjectItem(saved, "precision");
        if (jp && (!cJSON_IsString(jp) || npred_precision_parse(jp->valuestring, &precision))) {
            fprintf(stderr, "npred train: %s: \"precision\" must be \"fp32\" or \"bf16\"\n", cfg_path);
            rc = 1;
            goto out;
        }
    }

    /* SENSORIUM 2023 movie scans: the kit's video training (cli/train_video.c) */
    const cJSON *kind = saved ? cJSON_GetObjectItem(saved, "kind") : NULL;
    int video = n_data ? npred_video_is_scan(data[0]) : cJSON_IsString(kind) && !strcmp(kind->valuestring, "video");
    for (size_t i = 1; video && i < n_data; i++)
        if (!npred_video_is_scan(data[i])) {
            rc = cli_usage_error("train", "%s is not a movie scan but %s is: one run trains on one kind of data",
                                 data[i], data[0]);
            goto out;
        }
    if (video) {
        if (init_core) {
            rc = cli_usage_error("train", "--init-core is for static (image) models, not for movie scans");
            goto out;
        }
        if (precision != NPRED_PRECISION_FP32) {
            rc = cli_usage_error("train", "--precision bf16 is for static (image) models; video training runs in fp32");
            goto out;
        }
        if (recompute_name) {
            rc = cli_usage_error("train", "--recompute is for static (image) models, not for movie scans");
            goto out;
        }
        progress vp = {rank == 0 && isatty(STDERR_FILENO), 1};
        train_video_args va = {data, n_data, jmodel, jtrainer, cfg_where_dataset ? jdataset : NULL, cfg_where_model,
                               cfg_where_trainer, cfg_where_dataset, out, seed, max_iter, resume, sync_bn,
                               {on_batch, on_epoch, on_message, &vp, &stop_flag}, print_section};
        stop_flag = 0;
        signal(SIGINT, on_sigint);
        rc = train_video(&va);
        signal(SIGINT, SIG_DFL);
        if (vp.tty) fprintf(stderr, "\r%*s\r", 90, "");
        goto out;
    }

    /* parse everything before the slow parts, so bad keys fail at once */
    npred_trainer_config tc;
    npred_trainer_config_init(&tc);
    char *trainer_txt = cJSON_PrintUnformatted(jtrainer);
    npred_status st = trainer_txt ? npred_trainer_config_parse(&tc, trainer_txt, cfg_where_trainer)
                                  : npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    free(trainer_txt);
    if (st) {
        rc = cli_fail(st, "trainer config");
        goto out;
    }
    if (max_iter >= 0) tc.max_iter = max_iter;
    if (seed >= 0) {
        tc.seed_set = 1;
        tc.seed = seed;
    } else if (!tc.seed_set) {
        tc.seed_set = 1;
        tc.seed = DEFAULT_SEED;
    }
    char *model_txt = cJSON_PrintUnformatted(jmodel);
    st = npred_model_config_check(model_txt, cfg_where_model);
    if (st) {
        free(model_txt);
        rc = cli_fail(st, "model config");
        goto out;
    }
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    char **cfg_paths = NULL;
    size_t n_cfg_paths = 0;
    char *dataset_txt = cJSON_PrintUnformatted(jdataset);
    st = dataset_txt ? npred_loader_config_parse(&lc, dataset_txt, &cfg_paths, &n_cfg_paths)
                     : npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    free(dataset_txt);
    if (st) {
        free(model_txt);
        npred_loader_config_free(&lc);
        rc = cli_fail(st, cfg_where_dataset ? cfg_where_dataset : "dataset config");
        goto out;
    }
    if (!n_data && grow_paths(&data, &data_cap, n_cfg_paths))
        for (size_t i = 0; i < n_cfg_paths; i++) data[n_data++] = cfg_paths[i];
    if (!n_data) {
        free(model_txt);
        npred_loader_config_free(&lc);
        npred_loader_paths_free(cfg_paths, n_cfg_paths);
        rc = cli_usage_error("train", "--data PATH... is required");
        goto out;
    }

    printf("npred train: %zu session(s), %d thread(s)%s, seed %lld -> %s\n", n_data, omp_get_max_threads(),
           nranks > 1 ? " per rank" : "", (long long)tc.seed, out);
    if (precision != NPRED_PRECISION_FP32)
        printf("precision %s: the core's GEMM convolutions in bfloat16, fp32 accumulation\n",
               npred_precision_name(precision));
    if (nranks > 1)
        printf("data parallel: %d MPI ranks, batches split across ranks, BatchNorm statistics %s\n", nranks,
               sync_bn ? "synchronised across ranks" : "per rank");
    for (size_t i = 0; i < n_data; i++) printf("  data %s\n", data[i]);
    fflush(stdout);

    npred_loaders *L = NULL;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    char *run_cfg = NULL;
    st = npred_loaders_open(&L, data, n_data, &lc);
    if (st) {
        rc = cli_fail(st, "loading data");
        goto done;
    }
    if ((st = npred_trainer_model_create(&m, L, model_txt, cfg_where_model, (uint64_t)tc.seed))) {
        rc = cli_fail(st, "model");
        goto done;
    }
    if ((st = npred_model_set_precision(m, precision))) {
        rc = cli_fail(st, "--precision");
        goto done;
    }
    if ((st = npred_model_set_recompute(m, recompute))) {
        rc = cli_fail(st, "--recompute");
        goto done;
    }
    if (init_core && !resume) {
        int ic, ih, iw, nc = 0;
        npred_model_input_shape(m, &ic, &ih, &iw);
        npred_model *src = NULL;
        st = npred_model_open(&src, init_core, ih, iw, 1);
        if (!st) st = npred_model_copy_parameters(m, src, "core.", &nc);
        npred_model_free(src);
        if (st) {
            rc = cli_fail(st, init_core);
            goto done;
        }
        if (nc == 0) {
            fprintf(stderr, "npred train: %s has no core tensor that this model has\n", init_core);
            rc = 1;
            goto done;
        }
        printf("core initialised from %s (%d tensors)%s\n", init_core, nc,
               tc.detach_core ? "; detach_core: the core stays frozen" : "");
    }
    /* resolved settings */
    char *mj = npred_model_config_json(m);
    cJSON *jm = cJSON_Parse(mj);
    free(mj);
    char *tj = npred_trainer_config_json(&tc);
    char *dj = npred_loader_config_json(&lc);
    cJSON *jd = dj ? cJSON_Parse(dj) : NULL, *jt = tj ? cJSON_Parse(tj) : NULL;
    free(dj);
    free(tj);
    for (size_t s = 0; s < npred_loaders_count(L); s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        printf("session %s: %lld neurons, images (%d, %d, %d), train %lld / validation %lld trials%s%s\n",
               si.data_key, (long long)si.n_neurons, si.img_c, si.img_h, si.img_w,
               (long long)si.tier_n[NPRED_TIER_TRAIN], (long long)si.tier_n[NPRED_TIER_VALIDATION],
               si.behavior_dim ? ", behavior" : "", si.pupil_dim ? ", pupil_center" : "");
    }
    print_section("model", jm);
    printf("  %-26s %zu\n", "trainable parameters", npred_model_param_count(m, NULL));
    print_section("dataset", jd);
    print_section("trainer", jt);
    fflush(stdout);
    cJSON *rc_json = cJSON_CreateObject();
    cJSON *jdata = cJSON_CreateArray();
    for (size_t i = 0; i < n_data; i++) cJSON_AddItemToArray(jdata, cJSON_CreateString(data[i]));
    cJSON_AddItemToObject(rc_json, "data", jdata);
    cJSON_AddNumberToObject(rc_json, "seed", (double)tc.seed);
    cJSON_AddNumberToObject(rc_json, "threads", omp_get_max_threads());
    cJSON_AddStringToObject(rc_json, "precision", npred_precision_name(precision));
    cJSON_AddItemToObject(rc_json, "model", jm);
    cJSON_AddItemToObject(rc_json, "dataset", jd);
    cJSON_AddItemToObject(rc_json, "trainer", jt);
    run_cfg = cJSON_Print(rc_json);
    cJSON_Delete(rc_json);
    size_t len = strlen(run_cfg);
    char *run_cfg_nl = realloc(run_cfg, len + 2);
    if (run_cfg_nl) {
        run_cfg = run_cfg_nl;
        run_cfg[len] = '\n';
        run_cfg[len + 1] = 0;
    }

    if ((st = npred_trainer_create(&t, m, L, &tc, (uint64_t)tc.seed))) {
        rc = cli_fail(st, "trainer");
        goto done;
    }
    if ((st = npred_trainer_set_dist(t, sync_bn))) {
        rc = cli_fail(st, "data parallel setup");
        goto done;
    }
    if ((st = npred_trainer_set_run_dir(t, out, run_cfg))) {
        rc = cli_fail(st, "run folder");
        goto done;
    }
    if (resume) {
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/state.safetensors", out);
        if (access(sp, F_OK) != 0 && errno == ENOENT) {
            /* stopped after writing config.json, before the first epoch's state: nothing to resume */
            if (rank == 0) printf("no state saved in %s yet: starting from the beginning\n", out);
        } else if ((st = npred_trainer_resume(t, sp))) {
            rc = cli_fail(st, "resume");
            goto done;
        } else {
            printf("resuming from %s\n", sp);
        }
    }
    progress pg = {rank == 0 && isatty(STDERR_FILENO), tc.stop_function == NPRED_TRAIN_STOP_CORRELATIONS};
    npred_trainer_callbacks cb = {on_batch, on_epoch, on_message, &pg, &stop_flag};
    npred_trainer_set_callbacks(t, &cb);
    stop_flag = 0;
    signal(SIGINT, on_sigint);
    npred_trainer_result res;
    st = npred_trainer_run(t, &res);
    signal(SIGINT, SIG_DFL);
    if (pg.tty) fprintf(stderr, "\r%*s\r", 90, "");
    if (st == NPRED_ERR_INTERRUPTED) {
        if (rank == 0)
            fprintf(stderr, "npred train: interrupted; continue with: %snpred train --out %s --resume\n",
                    nranks > 1 ? "mpirun -np K " : "", out);
        rc = 130;
        goto done;
    }
    if (st) {
        if (nranks > 1) fprintf(stderr, "npred train: rank %d of %d: ", rank, nranks);
        rc = cli_fail(st, "training");
        if (nranks > 1)
            fprintf(stderr, "npred train: the run folder keeps the last finished epoch: continue with --resume\n");
        goto done;
    }
    static const char *const why[] = {"running", "patience exhausted", "max_iter reached", "objective not finite"};
    printf("done after %" PRId64 " epochs (%s): best %s %.6f, final %.6f\n", res.epochs,
           (unsigned)res.stop < 4 ? why[res.stop] : "?", pg.objective_is_corr ? "validation correlation" : "objective",
           res.best, res.score);
    printf("model: %s/model.safetensors\n", out);
    if (res.stop == NPRED_ES_STOP_NONFINITE) {
        /* the run failed, though the best model so far is kept */
        if (rank == 0)
            fprintf(stderr, "npred train: training diverged: the validation objective became NaN or infinite; "
                            "stopped, the best model so far (objective %.6f) is in %s/model.safetensors\n",
                    res.best, out);
        rc = 1;
        goto done;
    }
    if (rank == 0) {
        /* pictures (rank 0 alone); the test-correlation histogram when every session has a test tier */
        int have_test = 1;
        for (size_t s = 0; s < npred_loaders_count(L); s++) {
            npred_session_info si;
            npred_loaders_session(L, s, &si);
            have_test &= si.tier_enabled[NPRED_TIER_TEST] && si.tier_n[NPRED_TIER_TEST] >= 2;
        }
        npred_eval_results er;
        memset(&er, 0, sizeof er);
        int evaluated = have_test && npred_evaluate(m, L, NPRED_TIER_TEST, &er) == NPRED_OK;
        if (evaluated)
            printf("test: single-trial correlation %.4f, correlation to average %.4f, FEVE %.4f\n",
                   er.overall.single_trial_corr, er.overall.corr_to_average, er.overall.feve);
        cli_gt_summary gt;
        cli_write_pictures(out, m, L, (const char *const *)data, evaluated ? &er : NULL, &gt);
        if (gt.have)
            printf("ground truth: receptive-field positions correlate %.3f (x) and %.3f (y) with the truth, median "
                   "error %.2f pixels; oracle (single trial vs noise-free rate) %.4f\n",
                   gt.corr_x, gt.corr_y, gt.median_px, gt.oracle_rate);
        npred_eval_results_free(&er);
    }
done:
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
    free(run_cfg);
    free(model_txt);
    npred_loader_config_free(&lc);
    npred_loader_paths_free(cfg_paths, n_cfg_paths);
out:
    if (npred_dist_active()) {
        fflush(stdout);
        /* a failed rank ends the whole job at once, instead of leaving the others waiting */
        if (rc && rc != 130 && nranks > 1) npred_dist_abort(rc);
        npred_dist_finalize();
    }
    cJSON_Delete(saved);
    cJSON_Delete(jmodel);
    cJSON_Delete(jtrainer);
    cJSON_Delete(jdataset);
    free(data);
    return rc;
}
