/* One `npred train` epoch at SENSORIUM scale, run as the user runs it: two
 * simulated sessions of 7,776 neurons (2,500 train + validation trials each,
 * 10 % validation, plus 100 test images x 10 repeats), 1x144x256 images in
 * STORE zips, loaded at scale 0.25 (36x64), batch 128, the sota model
 * (configs/sensorium_sota.json), configs/trainer.json with --max-iter 1.
 *
 *   - the data is written once into <dir>/epoch_data (npred_simulate; reused
 *     while its parameters are unchanged: ~1.3 GB, ~20 s to write);
 *   - `npred train` runs as a child process (its output in <dir>/epoch_run.log);
 *     the epoch's seconds (training + validation, as log.csv counts them) come
 *     from its log.csv (its initial evaluation's row, one validation pass, is printed
 *     too: the rest of the epoch is its training steps), its peak memory from the
 *     child's getrusage ru_maxrss
 *     (the whole run: loading, training, the final test evaluation);
 *   - in this process: where the epoch's time goes on the data side (opening
 *     the loaders, and every batch of one epoch without any model work).
 *
 * Records epoch_s_2x7776 and epoch_peak_rss_mb (MiB). The npred binary is
 * $NPRED_BIN, else build/npred. */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "npred/data.h"
#include "npred/simulate.h"
#include "bench_check.h"
#include "bench_report.h"

enum { SESSIONS = 2, NEURONS = 7776, TRIALS = 2500 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / 1024.0;
}

static npred_sim_params params(void)
{
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = SESSIONS;
    p.n_neurons = NEURONS;
    p.n_trials = TRIALS;
    p.write_tree = 0;
    p.write_zip = 1;
    p.force = 1;
    return p;
}

/* the data, written unless the stamp says it is there with these parameters */
static int ensure_data(const char *dir, char paths[SESSIONS][1400])
{
    npred_sim_params p = params();
    char stamp[1100], want[256], have[256] = "";
    snprintf(stamp, sizeof stamp, "%s/params.txt", dir);
    snprintf(want, sizeof want, "sessions=%d neurons=%d trials=%d val=%g test=%dx%d size=%dx%d seed=%llu\n",
             p.n_sessions, p.n_neurons, p.n_trials, p.val_fraction, p.n_test_images, p.n_test_repeats, p.height,
             p.width, (unsigned long long)p.seed);
    int fresh = 1;
    for (int s = 0; s < SESSIONS; s++) {
        char name[256];
        npred_sim_tree_name(&p, s, name, sizeof name);
        snprintf(paths[s], 1400, "%s/%s.zip", dir, name);
        if (access(paths[s], R_OK)) fresh = 0;
    }
    FILE *f = fopen(stamp, "r");
    if (f) {
        if (!fgets(have, sizeof have, f)) have[0] = '\0';
        fclose(f);
    }
    if (fresh && !strcmp(have, want)) return 0;
    printf("writing the data (%d sessions x %d neurons, %d trials + %d test trials each, %dx%d) into %s ...\n",
           SESSIONS, NEURONS, TRIALS, p.n_test_images * p.n_test_repeats, p.height, p.width, dir);
    fflush(stdout);
    unlink(stamp);
    mkdir(dir, 0755);
    double t0 = now();
    BENCH_OK(npred_simulate(&p, dir, NULL, NULL));
    BENCH_OK(npred_write_atomic(stamp, want, strlen(want)));
    printf("  written in %.1f s\n", now() - t0);
    return 0;
}

/* seconds of epoch `want` in log.csv (columns epoch,lr,train_loss,objective,seconds); the
 * row of epoch 0 is the initial evaluation (one validation pass), epoch 1's the training
 * steps and the validation after them */
static double epoch_seconds(const char *log, long want)
{
    FILE *f = fopen(log, "r");
    if (!f) return -1;
    char line[1024];
    double sec = -1;
    while (fgets(line, sizeof line, f)) {
        long ep;
        double lr, loss, obj, s;
        if (sscanf(line, "%ld,%lf,%lf,%lf,%lf", &ep, &lr, &loss, &obj, &s) == 5 && ep == want) sec = s;
    }
    fclose(f);
    return sec;
}

int main(void)
{
    bench_report_init("epoch");
    const char *bin = getenv("NPRED_BIN") && *getenv("NPRED_BIN") ? getenv("NPRED_BIN") : "build/npred";
    const char *bdir = bench_report_dir();
    char dir[1024], run[1100], logp[1200], out[1200];
    snprintf(dir, sizeof dir, "%s/epoch_data", bdir);
    snprintf(run, sizeof run, "%s/epoch_run", bdir);
    snprintf(logp, sizeof logp, "%s/log.csv", run);
    snprintf(out, sizeof out, "%s/epoch_run.log", bdir);
    if (access(bin, X_OK)) {
        fprintf(stderr, "bench_epoch: %s: not an executable (build it, or set NPRED_BIN)\n", bin);
        bench_note("epoch_s_2x7776", "bench_epoch: the npred binary was not found");
        bench_note("epoch_peak_rss_mb", "bench_epoch: the npred binary was not found");
        return 1;
    }
    char paths[SESSIONS][1400];
    ensure_data(dir, paths);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run);
    if (system(cmd) != 0) fprintf(stderr, "bench_epoch: could not remove %s\n", run);

    /* the training, as a child */
    int threads = omp_get_max_threads();
    printf("npred train: 2 sessions, batch 128, scale 0.25, sota model, 1 epoch, %d threads (output: %s)\n", threads,
           out);
    fflush(stdout);
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench_epoch: fork");
        return 1;
    }
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "train", "--data", paths[0], paths[1], "--model", "configs/sensorium_sota.json", "--trainer",
              "configs/trainer.json", "--dataset", "configs/dataset_sensorium.json", "--out", run, "--max-iter", "1",
              (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("bench_epoch: wait4");
        return 1;
    }
    double wall = now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_epoch: npred train failed (status %d); see %s\n", status, out);
        bench_note("epoch_s_2x7776", "bench_epoch: npred train failed (see build/bench/epoch_run.log)");
        bench_note("epoch_peak_rss_mb", "bench_epoch: npred train failed (see build/bench/epoch_run.log)");
        return 1;
    }
    double sec = epoch_seconds(logp, 1), val = epoch_seconds(logp, 0), rss = (double)ru.ru_maxrss / 1024.0;
    if (sec < 0) {
        fprintf(stderr, "bench_epoch: %s has no row for epoch 1\n", logp);
        return 1;
    }

    /* the data side of one epoch, in this process */
    npred_loader_config c;
    npred_loader_config_init(&c);
    BENCH_OK(npred_loader_config_parse(&c, "{\"batch_size\": 128, \"scale\": 0.25, \"normalize\": true}", NULL, NULL));
    const char *pp[SESSIONS] = {paths[0], paths[1]};
    npred_loaders *L = NULL;
    double before = rss_mib(), a = now();
    BENCH_OK(npred_loaders_open(&L, pp, SESSIONS, &c));
    double t_open = now() - a, mem = rss_mib() - before;
    npred_loader_config_free(&c);
    int64_t n_train = 0, n_val = 0;
    for (size_t s = 0; s < SESSIONS; s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        n_train += si.tier_n[NPRED_TIER_TRAIN];
        n_val += si.tier_n[NPRED_TIER_VALIDATION];
    }
    npred_batch b;
    BENCH_OK(npred_batch_init(&b, L, 0));
    npred_rng rng;
    npred_rng_seed(&rng, 1);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        a = now();
        npred_cycler cy;
        BENCH_OK(npred_cycler_begin(&cy, L, NPRED_TIER_TRAIN, &rng));
        int has = 1;
        while (has) BENCH_OK(npred_cycler_next(&cy, &b, &has));
        npred_cycler_free(&cy);
        for (size_t s = 0; s < SESSIONS; s++) {
            npred_loader_iter it;
            BENCH_OK(npred_loader_iter_begin(&it, L, s, NPRED_TIER_VALIDATION, NULL));
            for (has = 1; has;) BENCH_OK(npred_loader_iter_next(&it, &b, &has));
            npred_loader_iter_free(&it);
        }
        double dt = now() - a;
        if (dt < best) best = dt;
    }
    npred_batch_free(&b);
    npred_loaders_free(L);

    /* FLOPs of the epoch: train steps (2.87 x the core forward) and validation forwards */
    double flop = (double)n_train * 2.87 * 122.8e6 + (double)n_val * 122.8e6;
    printf("  epoch (train %lld + validation %lld images): %.2f s  (PyTorch 1.13: 132.9 s; goal <= 6 s)\n",
           (long long)n_train, (long long)n_val, sec);
    if (val >= 0 && val < sec)
        printf("  of which validation %.2f s (the initial evaluation's row), so the %lld training images took about "
               "%.2f s = %.0f img/s with their loss, Adam steps and batches\n",
               val, (long long)n_train, sec - val, (double)n_train / (sec - val));
    printf("  peak RSS of the run: %.0f MiB  (PyTorch: 3,975 MiB; goal <= 800)   whole run %.1f s\n", rss, wall);
    printf("  data side: loaders open %.2f s, their memory %.0f MiB; the batches of one epoch (train + validation)\n"
           "  without the model: %.3f s = %.1f %% of the epoch\n",
           t_open, mem, best, 100.0 * best / sec);
    bench_record_flop("epoch_s_2x7776", sec, threads, flop);
    bench_record("epoch_peak_rss_mb", rss, threads);
    bench_record("epoch_data_s", best, threads);
    if (val >= 0) bench_record("epoch_validation_s", val, threads);
    bench_record("epoch_loaders_mib", mem, threads);
    return 0;
}
