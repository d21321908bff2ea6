/* Injected faults: nothing may be lost, every failure must say what happened.
 *
 *   - a write, fsync or rename that fails (the LD_PRELOAD shim fault_shim.so,
 *     as on a full or failing disk) while `npred train` saves model.safetensors
 *     or state.safetensors: exit code 1, a message naming the file, no
 *     temporary file left, the run folder loadable, and --resume then ends
 *     with a model byte-identical to an uninterrupted run;
 *   - kill -9 of `npred train` at >= 20 random points of a run (a chain of
 *     kills and --resume calls): every --resume starts, and the final model is
 *     byte-identical to an uninterrupted run;
 *   - a learning rate of 1e10 (the loss turns NaN/Inf): exit code 1, a message
 *     saying training diverged, model.safetensors kept (loadable, finite);
 *   - NaN / Inf in a dataset's images or responses: an error naming the file
 *     and the trial;
 *   - two models used from two threads at once predict exactly what they
 *     predict one after the other.
 * The simulated dataset is tiny (one session, 24x40 images) so that a whole
 * run takes about a second. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "npred/data.h"
#include "npred/model.h"
#include "npred/simulate.h"

static char base[256];
static char data_path[800];
static char npred_bin[1024];
static char shim[1100];

static const char *model_cfg =
    "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 4, \"depth_separable\": true,"
    " \"stack\": -1, \"gamma_input\": 0.5, \"gamma_readout\": 0.01, \"init_sigma\": 0.1, \"init_mu_range\": 0.3,"
    " \"gauss_type\": \"full\"}";

/* ---------------------------------------------------------------- helpers */

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0) && ok;
}

static char *read_bytes(const char *path, size_t *n)
{
    void *buf = NULL;
    *n = 0;
    if (npred_file_read_all(path, &buf, n) != NPRED_OK) return NULL;
    return buf;
}

static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
    int same = x && y && na == nb && na > 0 && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int file_has(const char *path, const char *needle)
{
    size_t n = 0;
    char *x = read_bytes(path, &n);
    int has = x && strstr(x, needle) != NULL;
    free(x);
    return has;
}

/* any leftover "*.tmp.*" file of an atomic write in dir */
static int has_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

static int setup(void)
{
    if (data_path[0]) return 1;
    snprintf(base, sizeof base, "/tmp/npred-test-faults-XXXXXX");
    if (!CHECK(mkdtemp(base) != NULL, "mkdtemp %s failed", base)) return 0;
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 1;
    p.n_neurons = 12;
    p.n_trials = 90;
    p.val_fraction = 0.2;
    p.n_test_images = 2;
    p.n_test_repeats = 2;
    p.height = 24;
    p.width = 40;
    p.downsample = 4;
    p.seed = 11;
    p.rate_scale = 6.0;
    char dir[300], name[256], path[400];
    snprintf(dir, sizeof dir, "%s/data", base);
    if (!CHECK_OK(npred_simulate(&p, dir, NULL, NULL))) return 0;
    npred_sim_tree_name(&p, 0, name, sizeof name);
    snprintf(path, sizeof path, "%s/model.json", base);
    int ok = write_text(path, model_cfg);
    snprintf(path, sizeof path, "%s/trainer.json", base);
    ok = ok && write_text(path, "{\"max_iter\": 6, \"patience\": 6, \"lr_init\": 0.01}\n");
    snprintf(path, sizeof path, "%s/diverge.json", base);
    ok = ok && write_text(path, "{\"max_iter\": 6, \"patience\": 6, \"lr_init\": 1e10}\n");
    snprintf(path, sizeof path, "%s/dataset.json", base);
    ok = ok && write_text(path, "{\"batch_size\": 16, \"normalize\": true}\n");
    if (!CHECK(ok, "writing configs in %s", base)) return 0;
    snprintf(data_path, sizeof data_path, "%s/%s", dir, name);
    return 1;
}

/* the `npred train` command line for run folder base/<out> */
static void train_line(char *cmd, size_t n, const char *env, const char *out, const char *trainer, const char *extra,
                       const char *log)
{
    snprintf(cmd, n,
             "%s OMP_NUM_THREADS=1 exec %s train --data %s --model %s/model.json --trainer %s/%s.json "
             "--dataset %s/dataset.json --out %s/%s --threads 1 %s >> %s/%s 2>&1",
             env, npred_bin, data_path, base, base, trainer, base, base, out, extra, base, log);
}

static int train(const char *env, const char *out, const char *trainer, const char *extra, const char *log)
{
    char cmd[8192];
    train_line(cmd, sizeof cmd, env, out, trainer, extra, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + (WIFSIGNALED(rc) ? WTERMSIG(rc) : 0);
}

/* the uninterrupted reference run (once) */
static int reference(char *model, size_t n)
{
    static int done, ok;
    snprintf(model, n, "%s/ref/model.safetensors", base);
    if (done) return ok;
    done = 1;
    int rc = train("", "ref", "trainer", "", "ref.log");
    ok = CHECK(rc == 0, "uninterrupted run: rc %d (see %s/ref.log)", rc, base);
    return ok;
}

/* ---------------------------------------------------------------- write faults */

static void write_fault(const char *op, const char *file, int nth)
{
    char ref[600], out[64], env[1400], log[80], p[800], dir[700];
    if (!reference(ref, sizeof ref)) return;
    snprintf(out, sizeof out, "fault_%s_%c", op, file[0]);
    snprintf(log, sizeof log, "%s.log", out);
    snprintf(env, sizeof env,
             "LD_PRELOAD=%s ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 NPRED_FAULT_OP=%s "
             "NPRED_FAULT_PATH=%s NPRED_FAULT_NTH=%d",
             shim, op, file, nth);
    int rc = train(env, out, "trainer", "", log);
    snprintf(p, sizeof p, "%s/%s", base, log);
    snprintf(dir, sizeof dir, "%s/%s", base, out);
    CHECK(rc == 1, "%s of %s failing: exit %d, want 1 (see %s)", op, file, rc, p);
    CHECK(file_has(p, file), "%s of %s failing: the message does not name the file (see %s)", op, file, p);
    CHECK(!has_temp_files(dir), "%s of %s failing: a temporary file was left in %s", op, file, dir);
    /* what is on disk is whole: the model loads, and --resume finishes the run exactly */
    npred_model *m = NULL;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(npred_model_load(&m, p, 4) == NPRED_OK, "%s of %s failing: %s does not load: %s", op, file, p,
          npred_last_error());
    npred_model_free(m);
    rc = train("", out, "trainer", "--resume", log);
    CHECK(rc == 0, "--resume after the failed %s of %s: exit %d", op, file, rc);
    CHECK(same_file(p, ref), "%s of %s failing, then --resume: the model differs from an uninterrupted run", op, file);
}

static void test_write_faults_model(void)
{
    if (!setup()) return;
    if (!CHECK(access(shim, R_OK) == 0, "the fault shim %s is missing", shim)) return;
    /* the 2nd save of the best model: the first improvement after epoch 1 */
    write_fault("write", "model.safetensors", 2);
    write_fault("fsync", "model.safetensors", 2);
    write_fault("rename", "model.safetensors", 2);
}

static void test_write_faults_state(void)
{
    if (!setup()) return;
    if (!CHECK(access(shim, R_OK) == 0, "the fault shim %s is missing", shim)) return;
    /* the state saved before epoch 3 */
    write_fault("write", "state.safetensors", 3);
    write_fault("fsync", "state.safetensors", 3);
    write_fault("rename", "state.safetensors", 3);
}

/* ---------------------------------------------------------------- kill -9 */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Start `npred train`, SIGKILL it after `delay` seconds. Returns 1 if it was
 * killed while running, 0 if it ended first (*rc = its exit code). */
static int run_and_kill(const char *out, const char *extra, double delay, int *rc)
{
    char cmd[8192];
    train_line(cmd, sizeof cmd, "", out, "trainer", extra, "kill.log");
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    double t0 = now_s();
    int status = 0;
    while (now_s() - t0 < delay) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            *rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
            return 0;
        }
        usleep(2000);
    }
    kill(pid, SIGKILL); /* the shell exec'ed npred: this is npred itself */
    waitpid(pid, &status, 0);
    return 1;
}

static void test_kill_resume(void)
{
    if (!setup()) return;
    char ref[600], p[800];
    double t0 = now_s();
    if (!reference(ref, sizeof ref)) return;
    /* the reference's time, measured again (the first call may have been cached) */
    t0 = now_s();
    int rc = train("", "ref_timing", "trainer", "", "ref_timing.log");
    double T = now_s() - t0;
    if (!CHECK(rc == 0, "timing run: rc %d", rc)) return;
    uint64_t rs = 12345;
    int kills = 0, chains = 0, starts_failed = 0, finished = 0;
    char out[64];
    snprintf(out, sizeof out, "kill%d", chains);
    for (int attempt = 0; attempt < 80 && kills < 20; attempt++) {
        double delay = T * 0.7 * (0.5 * (th_rand(&rs) + 1.0));
        /* every start but a chain's first is a --resume (the first kill may land before anything is saved) */
        int first = attempt == 0 || finished;
        if (finished) {
            snprintf(out, sizeof out, "kill%d", ++chains);
            finished = 0;
        }
        int r = 0;
        int killed = run_and_kill(out, first ? "" : "--resume", delay, &r);
        if (killed == 1) kills++;
        else if (killed == 0) {
            if (r != 0) starts_failed++;
            else {
                /* this chain ran to its end: it must equal the reference; start another */
                snprintf(p, sizeof p, "%s/%s/model.safetensors", base, out);
                CHECK(same_file(p, ref), "chain %s finished with a model unlike the uninterrupted run", out);
                finished = 1;
            }
        }
    }
    CHECK(kills >= 20, "only %d kills landed while npred train ran", kills);
    CHECK(starts_failed == 0, "%d --resume starts failed (see %s/kill.log)", starts_failed, base);
    if (!finished) {
        rc = train("", out, "trainer", "--resume", "kill.log");
        CHECK(rc == 0, "final --resume: rc %d (see %s/kill.log)", rc, base);
        snprintf(p, sizeof p, "%s/%s/model.safetensors", base, out);
        CHECK(same_file(p, ref), "after %d kills and --resume the model differs from the uninterrupted run", kills);
    }
    printf("  %d kill -9 over %d chain(s) of a %.2f s run; every --resume started; final models identical\n", kills,
           chains + 1, T);
}

/* ---------------------------------------------------------------- divergence */

static void test_diverging_loss(void)
{
    if (!setup()) return;
    int rc = train("", "diverge", "diverge", "", "diverge.log");
    char p[800];
    snprintf(p, sizeof p, "%s/diverge.log", base);
    CHECK(rc == 1, "lr 1e10: exit %d, want 1 (see %s)", rc, p);
    CHECK(file_has(p, "training diverged") && file_has(p, "model.safetensors"),
          "lr 1e10: no clear message about the divergence in %s", p);
    npred_model *m = NULL;
    snprintf(p, sizeof p, "%s/diverge/model.safetensors", base);
    if (!CHECK(npred_model_load(&m, p, 8) == NPRED_OK, "the best model was not kept: %s", npred_last_error())) return;
    /* the kept model predicts finite rates */
    npred_dataset *d = NULL;
    if (CHECK_OK(npred_dataset_open(&d, data_path, NULL))) {
        npred_dataset_info di;
        npred_dataset_get_info(d, &di);
        int c, h, w;
        npred_model_input_shape(m, &c, &h, &w);
        float *img = calloc((size_t)(c * h * w), sizeof(float));
        float *out = calloc((size_t)di.n_neurons, sizeof(float));
        if (CHECK(img && out, "out of memory") &&
            CHECK_OK(npred_model_predict(m, npred_model_session_key(m, 0), img, 1, NULL, NULL, out))) {
            int finite = 1;
            for (int64_t j = 0; j < di.n_neurons; j++) finite &= isfinite(out[j]) != 0;
            CHECK(finite, "the kept model predicts non-finite rates");
        }
        free(img);
        free(out);
    }
    npred_dataset_free(d);
    npred_model_free(m);
}

/* ---------------------------------------------------------------- non-finite data */

static void poison(const char *field, int trial, float value, const char *want_kind)
{
    char copy[600], cmd[4096], p[900], want[200];
    snprintf(copy, sizeof copy, "%s/poison_%s", base, field);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp -r '%s' '%s/'", copy, copy, data_path, copy);
    if (!CHECK(system(cmd) == 0, "copying the dataset")) return;
    const char *name = strrchr(data_path, '/') + 1;
    snprintf(copy + strlen(copy), sizeof copy - strlen(copy), "/%s", name);
    snprintf(p, sizeof p, "%s/data/%s/%d.npy", copy, field, trial);
    npred_array a;
    if (!CHECK_OK(npred_npy_read(p, &a))) return;
    int ok = a.dtype == NPRED_DT_F32 || a.dtype == NPRED_DT_F64;
    if (CHECK(ok, "%s: dtype %d", p, (int)a.dtype)) {
        size_t k = a.count / 2;
        if (a.dtype == NPRED_DT_F32) ((float *)a.data)[k] = value;
        else ((double *)a.data)[k] = value;
        CHECK_OK(npred_npy_write(p, &a));
    }
    npred_array_free(&a);
    if (!ok) return;
    npred_dataset *d = NULL;
    npred_status s = npred_dataset_open(&d, copy, NULL);
    snprintf(want, sizeof want, "data/%s/%d.npy: trial %d", field, trial, trial);
    CHECK(s == NPRED_ERR_VALUE && strstr(npred_last_error(), want) && strstr(npred_last_error(), want_kind),
          "%s with a %s in trial %d: status %d, message '%s'", field, want_kind, trial, (int)s, npred_last_error());
    npred_dataset_free(d);
}

static void test_nonfinite_data(void)
{
    if (!setup()) return;
    poison("images", 5, NAN, "NaN");
    poison("responses", 7, INFINITY, "infinite");
    poison("responses", 0, -INFINITY, "infinite");
}

/* ---------------------------------------------------------------- two threads */

typedef struct {
    npred_model *m;
    const float *img;
    int B;
    float *out;
    npred_status st;
} job;

static void *predict_job(void *arg)
{
    job *j = arg;
    for (int r = 0; r < 3 && !j->st; r++)
        j->st = npred_model_predict(j->m, npred_model_session_key(j->m, 0), j->img, j->B, NULL, NULL, j->out);
    return NULL;
}

static void test_two_threads(void)
{
    const int B = 6, H = 24, W = 40, n = 15;
    npred_model_session ses = {"s1", n, NULL, 0, NULL, NULL};
    npred_model *m[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        if (!CHECK_OK(npred_model_create(&m[i], model_cfg, "model.json", 1, H, W, &ses, 1, B, 100 + (uint64_t)i)))
            goto out;
    float *img = malloc(sizeof(float) * (size_t)(2 * B * H * W));
    float *seq = calloc((size_t)(2 * B * n), sizeof(float)), *par = calloc((size_t)(2 * B * n), sizeof(float));
    if (!CHECK(img && seq && par, "out of memory")) goto done;
    uint64_t rs = 7;
    for (int i = 0; i < 2 * B * H * W; i++) img[i] = (float)th_rand(&rs);
    /* one after the other */
    for (int i = 0; i < 2; i++)
        CHECK_OK(npred_model_predict(m[i], "s1", img + (size_t)(i * B * H * W), B, NULL, NULL, seq + i * B * n));
    /* both at once, several times over */
    for (int rep = 0; rep < 5; rep++) {
        job j[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            j[i] = (job){m[i], img + (size_t)(i * B * H * W), B, par + i * B * n, NPRED_OK};
            if (!CHECK(pthread_create(&th[i], NULL, predict_job, &j[i]) == 0, "pthread_create")) goto done;
        }
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 2; i++) CHECK(j[i].st == NPRED_OK, "thread %d: %s", i, npred_status_str(j[i].st));
        CHECK(!memcmp(seq, par, sizeof(float) * (size_t)(2 * B * n)),
              "round %d: predictions from two threads at once differ from one after the other", rep);
    }
    int differ = memcmp(seq, seq + B * n, sizeof(float) * (size_t)(B * n)) != 0;
    CHECK(differ, "the two models (different seeds and images) predict the same: the test would not notice a mix-up");
done:
    free(img);
    free(seq);
    free(par);
out:
    npred_model_free(m[0]);
    npred_model_free(m[1]);
}

static void cleanup(void)
{
    if (!base[0] || getenv("NPRED_TEST_KEEP")) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* npred: NPRED_BIN, else beside this build's tests/; the shim beside this program */
    char self[900];
    snprintf(self, sizeof self, "%s", argv[0]);
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    else snprintf(self, sizeof self, ".");
    const char *nb = getenv("NPRED_BIN");
    if (nb && *nb) snprintf(npred_bin, sizeof npred_bin, "%s", nb);
    else snprintf(npred_bin, sizeof npred_bin, "%s/../npred", self);
    char rel[1100];
    snprintf(rel, sizeof rel, "%s/fault_shim.so", self);
    if (!realpath(rel, shim)) snprintf(shim, sizeof shim, "%s", rel);
    RUN(test_nonfinite_data);
    RUN(test_two_threads);
    RUN(test_diverging_loss);
    RUN(test_write_faults_model);
    RUN(test_write_faults_state);
    RUN(test_kill_resume);
    cleanup();
    return th_summary();
}
