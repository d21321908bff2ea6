/* Data-parallel training (src/dist, npred_trainer_set_dist, synchronised BatchNorm,
 * npred_cycler_next_part) and `mpirun npred train`.
 *
 * In-process: launcher detection from the environment, the rank split of the
 * cycler (the parts of every global batch concatenate to the single-process
 * batch, reshuffles included), synchronised BatchNorm against plain BatchNorm on
 * the concatenated batch (with a sync function that stands in for two identical
 * ranks), and one-rank set_dist being the plain trainer.
 *
 * Over MPI (a build with MPI: mpirun on loopback, 2 ranks, 1 thread each):
 *   - gradient of the first optimizer step, 2 ranks (sync BN) vs 1 process:
 *     |g2 - g1| <= 1e-5 * max|g1| elementwise (float summation order only);
 *     this program itself is the rank (NPRED_TEST_DIST_ROLE=grad);
 *   - `mpirun -np 1 npred train` writes a model byte-identical to `npred train`;
 *   - `mpirun -np 2 npred train --sync-bn`: validation correlation of every epoch
 *     within 2e-3 (absolute) of the single-process run; per-rank BatchNorm runs
 *     and learns;
 *   - a rank killed after epoch 2 stops the job with a clear message, and
 *     --resume finishes with a model byte-identical to an uninterrupted run;
 *   - a rank whose dataset differs (one response changed) stops the job before
 *     the first epoch with a message saying so.
 * A build lacking MPI fails these tests with a message; `make MPI=0` leaves
 * them out on purpose (and says so).
 * A build without MPI instead checks that `npred train` under a launcher's
 * environment refuses with a clear message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "npred/simulate.h"
#include "npred/dist.h"
#ifdef NPRED_HAVE_MPI
#include "npred/mpi.h"
#endif
#include "harness.h"
#include "kernels/batchnorm.h"
#include "kernels/batchnorm_sync.h"
#include "model/model.h"
#include "npred/data.h"
#include "npred/model.h"
#include "train/trainer.h"

static char base[256];
static char paths[2][800];
static char npred_bin[1024];
static char self_bin[1024];

static const char *model_cfg =
    "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6, \"depth_separable\": true,"
    " \"stack\": -1, \"gamma_input\": 0.5, \"gamma_readout\": 0.01, \"init_sigma\": 0.1, \"init_mu_range\": 0.3,"
    " \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
    " \"hidden_layers\": 1, \"hidden_features\": 8, \"final_tanh\": true}}";

/* The MPI launch line: loopback TCP only, root allowed, more ranks than cores. */
#define MPIRUN "mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo " \
               "--mca oob_tcp_if_include lo"

/* ---------------------------------------------------------------- data */

static int dataset_in(const char *root)
{
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 2;
    p.n_neurons = 20;
    p.n_trials = 170;
    p.val_fraction = 0.2;
    p.n_test_images = 4;
    p.n_test_repeats = 2;
    p.height = 24;
    p.width = 40;
    p.downsample = 4;
    p.seed = 5;
    p.rate_scale = 6.0;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/data", root);
    if (!CHECK_OK(npred_simulate(&p, dir, NULL, NULL))) return 0;
    for (int s = 0; s < 2; s++) {
        char name[256];
        npred_sim_tree_name(&p, s, name, sizeof name);
        snprintf(paths[s], sizeof paths[s], "%s/%s", dir, name);
    }
    return 1;
}

static int dataset(void)
{
    if (paths[0][0]) return 1;
    snprintf(base, sizeof base, "/tmp/npred-test-dist-XXXXXX");
    if (!CHECK(mkdtemp(base) != NULL, "mkdtemp %s failed", base)) return 0;
    return dataset_in(base);
}

static npred_loaders *open_loaders(int batch_size)
{
    if (!dataset()) return NULL;
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    char js[128];
    snprintf(js, sizeof js, "{\"batch_size\": %d, \"normalize\": true}", batch_size);
    npred_loaders *L = NULL;
    if (CHECK_OK(npred_loader_config_parse(&lc, js, NULL, NULL))) {
        const char *pp[2] = {paths[0], paths[1]};
        CHECK_OK(npred_loaders_open(&L, pp, 2, &lc));
    }
    npred_loader_config_free(&lc);
    return L;
}

/* ---------------------------------------------------------------- launcher detection */

static void test_launch_env(void)
{
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"};
    char *saved[5];
    for (int i = 0; i < 5; i++) {
        const char *v = getenv(vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(vars[i]);
    }
    CHECK(npred_dist_launched_size() == 0, "no launcher: %d", npred_dist_launched_size());
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    CHECK(npred_dist_launched_size() == 4 && npred_dist_launched_rank() == 3, "Open MPI: %d %d",
          npred_dist_launched_size(), npred_dist_launched_rank());
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_RANK");
    setenv("PMI_SIZE", "2", 1);
    setenv("PMI_RANK", "1", 1);
    CHECK(npred_dist_launched_size() == 2 && npred_dist_launched_rank() == 1, "PMI: %d", npred_dist_launched_size());
    unsetenv("PMI_SIZE");
    unsetenv("PMI_RANK");
    setenv("PMIX_RANK", "0", 1);
    CHECK(npred_dist_launched_size() == -1, "PMIx only: %d", npred_dist_launched_size());
    setenv("PMIX_RANK", "x", 1);
    CHECK(npred_dist_launched_size() == 0, "garbage is no launcher");
    unsetenv("PMIX_RANK");
    for (int i = 0; i < 5; i++)
        if (saved[i]) {
            setenv(vars[i], saved[i], 1);
            free(saved[i]);
        }
    /* not initialised: one rank, and every collective is the identity */
    CHECK(!npred_dist_active() && npred_dist_size() == 1 && npred_dist_rank() == 0, "uninitialised group");
    float x[3] = {1, 2, 3};
    double y[2] = {4, 5};
    CHECK_OK(npred_dist_allreduce_f32(x, 3));
    CHECK_OK(npred_dist_allreduce_f64(y, 2));
    CHECK_OK(npred_dist_bcast(x, sizeof x, 0));
    CHECK(x[2] == 3 && y[1] == 5, "identity collectives");
}

/* ---------------------------------------------------------------- cycler parts */

static void test_cycler_parts(void)
{
    npred_loaders *L = open_loaders(16);
    if (!L) return;
    for (int K = 1; K <= 3; K++) {
        npred_rng r1, r2[3];
        npred_rng_seed(&r1, 77);
        for (int k = 0; k < K; k++) npred_rng_seed(&r2[k], 77);
        npred_cycler c1, c2[3];
        CHECK_OK(npred_cycler_begin(&c1, L, NPRED_TIER_TRAIN, &r1));
        for (int k = 0; k < K; k++) CHECK_OK(npred_cycler_begin(&c2[k], L, NPRED_TIER_TRAIN, &r2[k]));
        npred_batch b1, b2;
        CHECK_OK(npred_batch_init(&b1, L, 0));
        CHECK_OK(npred_batch_init(&b2, L, 0));
        int bad = 0, steps = 0, empty = 0;
        for (;;) {
            int has1 = 0;
            CHECK_OK(npred_cycler_next(&c1, &b1, &has1));
            int64_t got = 0;
            for (int k = 0; k < K; k++) {
                int has2 = 0;
                int64_t gn = -1, off = -1;
                CHECK_OK(npred_cycler_next_part(&c2[k], &b2, &has2, k, K, &gn, &off));
                if (has2 != has1) bad++;
                if (!has1) continue;
                if (gn != b1.n || off != got || b2.session != b1.session) bad++;
                if (b2.n == 0) empty++;
                for (int64_t i = 0; i < b2.n && off + i < b1.n; i++) {
                    if (b2.trials[i] != b1.trials[off + i]) bad++;
                    if (memcmp(b2.responses + i * b2.n_neurons, b1.responses + (off + i) * b1.n_neurons,
                               sizeof(float) * (size_t)b1.n_neurons))
                        bad++;
                }
                got += b2.n;
            }
            if (!has1) break;
            if (got != b1.n) bad++;
            steps++;
        }
        CHECK(bad == 0 && steps == npred_cycler_len(&c1), "K=%d: %d mismatches over %d steps", K, bad, steps);
        CHECK(empty == 0, "K=%d: %d empty parts", K, empty);
        int has = 0;
        int64_t gn, off;
        CHECK(npred_cycler_next_part(&c2[0], &b2, &has, K, K, &gn, &off) == NPRED_ERR_ARG, "part out of range");
        npred_batch_free(&b1);
        npred_batch_free(&b2);
        npred_cycler_free(&c1);
        for (int k = 0; k < K; k++) npred_cycler_free(&c2[k]);
    }
    npred_loaders_free(L);
}

/* ---------------------------------------------------------------- synchronised BatchNorm */

/* Two identical ranks: the sum over ranks is twice the local value. */
static npred_status twice(void *user, double *x, size_t n)
{
    int *calls = user;
    ++*calls;
    for (size_t i = 0; i < n; i++) x[i] *= 2;
    return NPRED_OK;
}

static npred_status failing(void *user, double *x, size_t n)
{
    (void)user;
    (void)x;
    (void)n;
    return npred_errorf(NPRED_ERR_IO, "MPI Allreduce failed (test)");
}

static void test_sync_batchnorm(void)
{
    enum { B = 3, C = 4, H = 3, W = 5 };
    const size_t n1 = (size_t)B * C * H * W, n2 = 2 * n1;
    float *x = malloc(n2 * sizeof(float)), *dy = malloc(n2 * sizeof(float)), *y2 = malloc(n2 * sizeof(float));
    float *dx2 = calloc(n2, sizeof(float)), *y1 = malloc(n1 * sizeof(float)), *dx1 = calloc(n1, sizeof(float));
    uint64_t s = 9;
    for (size_t i = 0; i < n1; i++) {
        x[i] = (float)(3.0 + 2.0 * th_rand(&s));
        dy[i] = (float)(th_rand(&s) - 0.5);
    }
    memcpy(x + n1, x, n1 * sizeof(float)); /* the second "rank" holds the same batch */
    memcpy(dy + n1, dy, n1 * sizeof(float));
    float gamma[C] = {1.5f, -0.5f, 0.75f, 2.0f}, beta[C] = {0.1f, 0.2f, -0.3f, 0.0f};
    float rm2[C] = {0}, rv2[C] = {1, 1, 1, 1}, rm1[C] = {0}, rv1[C] = {1, 1, 1, 1};
    float dg2[C] = {0}, db2[C] = {0}, dg1[C] = {0}, db1[C] = {0};
    double m2[C], is2[C], m1[C], is1[C];
    int64_t nb2 = 0, nb1 = 0;
    /* reference: plain BatchNorm on the concatenated batch (2B) */
    CHECK_OK(npred_batchnorm2d_forward(y2, m2, is2, rm2, rv2, &nb2, x, gamma, beta, 2 * B, C, H, W, 1, 0.1, 1e-5));
    CHECK_OK(npred_batchnorm2d_backward(dx2, dg2, db2, dy, x, gamma, m2, is2, 2 * B, C, H, W, 1));
    int calls = 0;
    npred_batchnorm_set_sync(twice, &calls);
    CHECK(npred_batchnorm_sync_active(), "hook installed");
    CHECK_OK(npred_batchnorm2d_forward(y1, m1, is1, rm1, rv1, &nb1, x, gamma, beta, B, C, H, W, 1, 0.1, 1e-5));
    CHECK_OK(npred_batchnorm2d_backward(dx1, dg1, db1, dy, x, gamma, m1, is1, B, C, H, W, 1));
    CHECK(calls == 3, "forward 2 + backward 1 reductions, got %d", calls);
    th_close_f32("sync forward = global forward", y1, y2, n1, 1e-6, 1e-6);
    th_close_f64("sync mean", m1, m2, C, 1e-12, 1e-12);
    th_close_f64("sync invstd", is1, is2, C, 1e-10, 0);
    th_close_f32("running mean (global)", rm1, rm2, C, 1e-6, 1e-7);
    th_close_f32("running var (unbiased over N = 2n)", rv1, rv2, C, 1e-6, 1e-7);
    CHECK(nb1 == 1, "num_batches_tracked %lld", (long long)nb1);
    th_close_f32("sync dx = global dx", dx1, dx2, n1, 1e-5, 1e-6);
    /* parameter gradients are this rank's share: half of the global batch's */
    for (int c = 0; c < C; c++) {
        dg1[c] *= 2;
        db1[c] *= 2;
    }
    th_close_f32("dgamma (local share)", dg1, dg2, C, 1e-5, 1e-6);
    th_close_f32("dbeta (local share)", db1, db2, C, 1e-5, 1e-6);
    /* eval mode never synchronises */
    calls = 0;
    CHECK_OK(npred_batchnorm2d_forward(y1, m1, is1, rm1, rv1, NULL, x, gamma, beta, B, C, H, W, 0, 0.1, 1e-5));
    CHECK(calls == 0, "eval mode called the sync function");
    /* a failing reduction is an error naming it, not a crash */
    npred_batchnorm_set_sync(failing, NULL);
    npred_status st = npred_batchnorm2d_forward(y1, m1, is1, rm1, rv1, NULL, x, gamma, beta, B, C, H, W, 1, 0.1, 1e-5);
    CHECK(st == NPRED_ERR_IO && strstr(npred_last_error(), "statistics reduction"), "failing sync: %d %s", st,
          npred_last_error());
    npred_batchnorm_set_sync(NULL, NULL);
    CHECK(!npred_batchnorm_sync_active(), "hook removed");
    free(x);
    free(dy);
    free(y2);
    free(dx2);
    free(y1);
    free(dx1);
}

/* ---------------------------------------------------------------- gradients of one step */

typedef struct {
    float *g;
    size_t n;
} grab;

static npred_status grab_first(void *user, float *grad, size_t n)
{
    grab *c = user;
    c->g = malloc(n * sizeof(float));
    if (!c->g) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    memcpy(c->g, grad, n * sizeof(float));
    c->n = n;
    return npred_errorf(NPRED_ERR_INTERRUPTED, "first step captured");
}

/* The global gradient of the first Adam step (caller frees); dist: set_dist first. */
static float *first_gradient(npred_loaders *L, int dist, int sync_bn, size_t *n)
{
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    c.max_iter = 1;
    grab gr = {NULL, 0};
    npred_status st = npred_trainer_model_create(&m, L, model_cfg, "model", 11);
    if (!st) st = npred_trainer_create(&t, m, L, &c, 11);
    if (!st && dist) st = npred_trainer_set_dist(t, sync_bn);
    if (!st) {
        npred_trainer_set_grad_reduce(t, grab_first, &gr);
        st = npred_trainer_run(t, NULL);
    }
    if (st != NPRED_ERR_INTERRUPTED || !gr.g) {
        fprintf(stderr, "first_gradient: status %d: %s\n", st, npred_last_error());
        free(gr.g);
        gr.g = NULL;
    }
    *n = gr.n;
    npred_trainer_free(t);
    npred_model_free(m);
    return gr.g;
}

/* NPRED_TEST_DIST_ROLE=grad: one rank of the gradient test; rank 0 writes the file. */
static int rank_main(const char *out_path, const char *p0, const char *p1, int sync_bn)
{
    if (npred_dist_init(NULL, NULL)) {
        fprintf(stderr, "rank: %s\n", npred_last_error());
        return 1;
    }
    int rc = 1;
    if (!out_path || !p0 || !p1) {
        fprintf(stderr, "rank: NPRED_TEST_DIST_OUT/PATH0/PATH1 not set\n");
        npred_dist_finalize();
        return 1;
    }
    snprintf(paths[0], sizeof paths[0], "%s", p0);
    snprintf(paths[1], sizeof paths[1], "%s", p1);
    npred_loaders *L = open_loaders(32);
    size_t n = 0;
    float *g = L ? first_gradient(L, 1, sync_bn, &n) : NULL;
    if (g && npred_dist_rank() == 0) {
        FILE *f = fopen(out_path, "wb");
        if (f && fwrite(g, sizeof(float), n, f) == n) rc = 0;
        if (f) fclose(f);
    } else if (g) {
        rc = 0;
    }
    free(g);
    npred_loaders_free(L);
    npred_dist_finalize();
    return rc;
}

static int have_mpirun(void) { return system("mpirun --version > /dev/null 2>&1") == 0; }

/* The MPI tests must run: a build that lacks MPI (without asking for that with
 * make MPI=0, which leaves these tests out) or a missing mpirun fails them. */
static int mpi_ready(void)
{
    if (!CHECK(npred_dist_compiled(), "this build lacks MPI (mpicc was not found when it was built): install "
                                      "libopenmpi-dev openmpi-bin and rebuild, or build with make MPI=0 to leave "
                                      "the MPI tests out on purpose"))
        return 0;
    return CHECK(have_mpirun(), "this build has MPI but mpirun is not on PATH (apt-get install openmpi-bin)");
}

/* Whole file, NUL-terminated; *n = its size in bytes. */
static char *read_bytes(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *x = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (x && fread(x, 1, (size_t)len, f) == (size_t)len) {
        x[len] = 0;
        *n = (size_t)len;
    } else {
        free(x);
        x = NULL;
    }
    fclose(f);
    return x;
}

static float *read_floats(const char *path, size_t *n)
{
    float *x = (float *)read_bytes(path, n);
    *n /= sizeof(float);
    return x;
}

static void test_one_rank_is_plain(void)
{
    /* without a launcher set_dist is a no-op: bit-identical gradients */
    npred_loaders *L = open_loaders(32);
    if (!L) return;
    size_t n1 = 0, n2 = 0;
    float *g1 = first_gradient(L, 0, 0, &n1), *g2 = first_gradient(L, 1, 1, &n2);
    CHECK(g1 && g2 && n1 == n2 && !memcmp(g1, g2, n1 * sizeof(float)), "one-rank set_dist changed the gradient");
    CHECK(!npred_batchnorm_sync_active(), "one rank installed the BatchNorm sync hook");
    free(g1);
    free(g2);
    npred_loaders_free(L);
}

static void test_mpi_gradient(void)
{
    if (!mpi_ready()) return;
    npred_loaders *L = open_loaders(32);
    if (!L) return;
    size_t n1 = 0;
    float *g1 = first_gradient(L, 0, 0, &n1);
    char out[400], cmd[8192];
    snprintf(out, sizeof out, "%s/grad2.bin", base);
    snprintf(cmd, sizeof cmd,
             "NPRED_TEST_DIST_ROLE=grad NPRED_TEST_DIST_OUT=%s NPRED_TEST_DIST_PATH0=%s NPRED_TEST_DIST_PATH1=%s NPRED_TEST_DIST_SYNC=1 "
             "OMP_NUM_THREADS=1 timeout 60 " MPIRUN " -np 2 %s > %s/grad.log 2>&1",
             out, paths[0], paths[1], self_bin, base);
    int rc = system(cmd);
    size_t n2 = 0;
    float *g2 = read_floats(out, &n2);
    if (CHECK(rc == 0 && g1 && g2 && n2 == n1, "2-rank gradient run: rc %d, %zu vs %zu values (see %s/grad.log)", rc,
              n2, n1, base)) {
        double gmax = 0, dmax = 0;
        for (size_t i = 0; i < n1; i++) {
            gmax = th_worst(gmax, fabs(g1[i]));
            dmax = th_worst(dmax, fabs((double)g2[i] - g1[i]));
        }
        CHECK(gmax > 0, "zero gradient");
        CHECK(dmax <= 1e-5 * gmax, "2 ranks (sync BN) vs 1 process: max |dg| %.3g, max |g| %.3g (tolerance 1e-5 rel)",
              dmax, gmax);
        printf("  gradient of step 1, 2 ranks vs 1 process: max |dg| / max |g| = %.2e over %zu values\n", dmax / gmax,
               n1);
    }
    /* per-rank BatchNorm: a different (but finite, close) gradient */
    snprintf(cmd, sizeof cmd,
             "NPRED_TEST_DIST_ROLE=grad NPRED_TEST_DIST_OUT=%s NPRED_TEST_DIST_PATH0=%s NPRED_TEST_DIST_PATH1=%s NPRED_TEST_DIST_SYNC=0 "
             "OMP_NUM_THREADS=1 timeout 60 " MPIRUN " -np 2 %s > %s/grad.log 2>&1",
             out, paths[0], paths[1], self_bin, base);
    rc = system(cmd);
    size_t n3 = 0;
    float *g3 = read_floats(out, &n3);
    if (CHECK(rc == 0 && g3 && n3 == n1, "2-rank per-rank-BN run: rc %d", rc)) {
        double dmax = 0, gmax = 0;
        int finite = 1;
        for (size_t i = 0; i < n1; i++) {
            finite &= isfinite(g3[i]);
            gmax = th_worst(gmax, fabs(g1[i]));
            dmax = th_worst(dmax, fabs((double)g3[i] - g1[i]));
        }
        CHECK(finite && dmax > 1e-5 * gmax, "per-rank BN should differ from global statistics (%.3g)", dmax / gmax);
    }
    free(g1);
    free(g2);
    free(g3);
    npred_loaders_free(L);
}

/* ---------------------------------------------------------------- npred train under mpirun */

static int write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(s, f);
    return fclose(f) == 0;
}

/* validation objective of every epoch from log.csv; returns the row count */
static int read_log(const char *dir, double *obj, int cap)
{
    char p[600], line[512];
    snprintf(p, sizeof p, "%s/log.csv", dir);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        double e, lr, tl, o;
        if (sscanf(line, "%lf,%lf,%lf,%lf", &e, &lr, &tl, &o) == 4) obj[n++] = o;
    }
    fclose(f);
    return n;
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

static int train_cmd(const char *launch, const char *out, const char *extra, const char *log)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s %s train --data %s %s --model %s/model.json --trainer %s/trainer.json --dataset %s/dataset.json "
             "--out %s/%s --threads 1 %s > %s/%s 2>&1",
             launch, npred_bin, paths[0], paths[1], base, base, base, base, out, extra, base, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static int setup_configs(void)
{
    if (!dataset()) return 0;
    char p[400];
    snprintf(p, sizeof p, "%s/model.json", base);
    int ok = write_text(p, model_cfg);
    snprintf(p, sizeof p, "%s/trainer.json", base);
    ok = ok && write_text(p, "{\"max_iter\": 4, \"patience\": 5, \"lr_init\": 0.005}\n");
    snprintf(p, sizeof p, "%s/dataset.json", base);
    ok = ok && write_text(p, "{\"batch_size\": 32, \"normalize\": true}\n");
    return CHECK(ok, "writing configs in %s", base);
}

static int file_has(const char *path, const char *needle)
{
    size_t n = 0;
    char *x = read_bytes(path, &n);
    if (!x) return 0;
    int has = strstr(x, needle) != NULL;
    free(x);
    return has;
}

static void test_mpi_train(void)
{
    if (!mpi_ready()) return;
    if (!setup_configs()) return;
    char a[600], b[600];
    int rc = train_cmd("OMP_NUM_THREADS=1", "single", "", "single.log");
    CHECK(rc == 0, "single-process training: rc %d (see %s/single.log)", rc, base);
    rc = train_cmd("timeout 60 " MPIRUN " -np 1", "one", "", "one.log");
    CHECK(rc == 0, "mpirun -np 1: rc %d", rc);
    snprintf(a, sizeof a, "%s/single/model.safetensors", base);
    snprintf(b, sizeof b, "%s/one/model.safetensors", base);
    CHECK(same_file(a, b), "one rank under mpirun differs from the single-process trainer");

    rc = train_cmd("timeout 60 " MPIRUN " -np 2", "two", "--sync-bn", "two.log");
    CHECK(rc == 0, "mpirun -np 2 --sync-bn: rc %d (see %s/two.log)", rc, base);
    double o1[16], o2[16];
    snprintf(a, sizeof a, "%s/single", base);
    snprintf(b, sizeof b, "%s/two", base);
    int n1 = read_log(a, o1, 16), n2 = read_log(b, o2, 16);
    if (CHECK(n1 == 5 && n2 == n1, "log rows: %d vs %d", n1, n2)) {
        double dmax = 0;
        for (int i = 0; i < n1; i++) dmax = th_worst(dmax, fabs(o1[i] - o2[i]));
        CHECK(dmax <= 2e-3, "validation correlation, 2 ranks (sync BN) vs 1 process: max diff %.3g > 2e-3", dmax);
        CHECK(o1[n1 - 1] > o1[0] + 0.02, "training did not learn (%.4f -> %.4f)", o1[0], o1[n1 - 1]);
        printf("  validation correlation after %d epochs: 1 process %.6f, 2 ranks %.6f (max diff %.2e)\n", n1 - 1,
               o1[n1 - 1], o2[n2 - 1], dmax);
    }
    snprintf(a, sizeof a, "%s/two.log", base);
    CHECK(file_has(a, "2 MPI ranks"), "the 2-rank run does not announce its ranks");

    rc = train_cmd("timeout 60 " MPIRUN " -np 2", "twopr", "", "twopr.log");
    snprintf(b, sizeof b, "%s/twopr", base);
    double o3[16];
    int n3 = read_log(b, o3, 16);
    CHECK(rc == 0 && n3 == 5 && o3[n3 - 1] > o3[0] + 0.02, "per-rank BN 2-rank run: rc %d, %d rows", rc, n3);
}

static void test_mpi_rank_failure(void)
{
    if (!mpi_ready()) return;
    if (!setup_configs()) return;
    /* rank 1 dies (SIGKILL) when epoch 2 ends */
    int rc = train_cmd("NPRED_TEST_KILL_RANK=1:2 timeout 90 " MPIRUN " -np 2", "crash", "--sync-bn", "crash.log");
    char p[600], a[600], b[600];
    snprintf(p, sizeof p, "%s/crash.log", base);
    CHECK(rc != 0 && rc != 124, "the job should fail (not hang) when a rank dies: rc %d", rc);
    CHECK(file_has(p, "signal 9") || file_has(p, "stopped by the MPI launcher"),
          "no clear message about the dead rank in %s", p);
    snprintf(a, sizeof a, "%s/crash/state.safetensors", base);
    struct stat sb;
    CHECK(stat(a, &sb) == 0, "no state.safetensors after the failure");
    double o[16];
    snprintf(a, sizeof a, "%s/crash", base);
    int rows = read_log(a, o, 16);
    CHECK(rows >= 2 && rows < 5, "log rows after the failure: %d", rows);
    /* resume on 2 ranks: the same model as an uninterrupted run */
    rc = train_cmd("timeout 90 " MPIRUN " -np 2", "crash", "--resume --sync-bn", "resume.log");
    snprintf(p, sizeof p, "%s/resume.log", base);
    CHECK(rc == 0 && file_has(p, "resuming from"), "--resume after the failure: rc %d", rc);
    snprintf(a, sizeof a, "%s/crash/model.safetensors", base);
    snprintf(b, sizeof b, "%s/two/model.safetensors", base);
    CHECK(same_file(a, b), "resumed 2-rank run differs from the uninterrupted 2-rank run");
}

/* A rank whose copy of a dataset differs (one response changed) stops the job
 * before the first epoch, every rank saying why. */
static void test_mpi_rank_dataset(void)
{
    if (!mpi_ready()) return;
    if (!setup_configs()) return;
    char other[700], cmd[16384], p[800];
    const char *name = strrchr(paths[0], '/') + 1;
    snprintf(other, sizeof other, "%s/other/%s", base, name);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/other' && cp -r '%s' '%s/other/'", base, paths[0], base);
    if (!CHECK(system(cmd) == 0, "copying %s", paths[0])) return;
    snprintf(p, sizeof p, "%s/data/responses/3.npy", other);
    npred_array a;
    if (!CHECK_OK(npred_npy_read(p, &a))) return;
    if (a.dtype == NPRED_DT_F32) ((float *)a.data)[0] += 1.0f;
    else if (a.dtype == NPRED_DT_F64) ((double *)a.data)[0] += 1.0;
    int changed = a.dtype == NPRED_DT_F32 || a.dtype == NPRED_DT_F64;
    CHECK(changed, "responses of dtype %d", (int)a.dtype);
    if (changed) CHECK_OK(npred_npy_write(p, &a));
    npred_array_free(&a);
    if (!changed) return;
    const char *common = "--model %s/model.json --trainer %s/trainer.json --dataset %s/dataset.json --out %s/mismatch "
                         "--threads 1";
    char tail[2000];
    snprintf(tail, sizeof tail, common, base, base, base, base);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 timeout 60 " MPIRUN " -np 1 %s train --data %s %s %s : -np 1 %s train --data %s %s %s "
             "> %s/mismatch.log 2>&1",
             npred_bin, paths[0], paths[1], tail, npred_bin, other, paths[1], tail, base);
    int rc = system(cmd);
    rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
    snprintf(p, sizeof p, "%s/mismatch.log", base);
    CHECK(rc != 0 && rc != 124, "a rank with other data must stop the job: rc %d", rc);
    CHECK(file_has(p, "the datasets differ between ranks") && file_has(p, "nothing was trained"),
          "no clear message about the differing dataset in %s", p);
    double o[16];
    snprintf(p, sizeof p, "%s/mismatch", base);
    int rows = read_log(p, o, 16);
    CHECK(rows == 0, "%d epochs were logged before the dataset check", rows);
}

static void test_no_mpi_message(void)
{
    if (npred_dist_compiled()) return;
    if (!setup_configs()) return;
    int rc = train_cmd("OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0", "nompi", "", "nompi.log");
    char p[600];
    snprintf(p, sizeof p, "%s/nompi.log", base);
    CHECK(rc == 1 && file_has(p, "built without MPI support"), "launcher without MPI support: rc %d", rc);
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
#ifdef NPRED_HAVE_MPI
    npred_mpi_enable();
#endif
    const char *role = getenv("NPRED_TEST_DIST_ROLE");
    if (role && !strcmp(role, "grad")) {
        const char *sync = getenv("NPRED_TEST_DIST_SYNC");
        return rank_main(getenv("NPRED_TEST_DIST_OUT"), getenv("NPRED_TEST_DIST_PATH0"), getenv("NPRED_TEST_DIST_PATH1"),
                         sync && *sync == '1');
    }
    /* the binaries under test: NPRED_BIN, else npred beside this build's tests/ */
    const char *nb = getenv("NPRED_BIN");
    if (nb) snprintf(npred_bin, sizeof npred_bin, "%s", nb);
    else {
        snprintf(npred_bin, sizeof npred_bin, "%s", argv[0]);
        char *slash = strrchr(npred_bin, '/');
        if (slash) {
            *slash = 0;
            slash = strrchr(npred_bin, '/');
        }
        if (slash) snprintf(slash, sizeof npred_bin - (size_t)(slash - npred_bin), "/npred");
        else snprintf(npred_bin, sizeof npred_bin, "./build/npred");
    }
    if (!realpath(argv[0], self_bin)) snprintf(self_bin, sizeof self_bin, "%s", argv[0]);
    /* Open MPI's own allocations are not ours to report under the sanitizers */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 0);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    RUN(test_launch_env);
    RUN(test_cycler_parts);
    RUN(test_sync_batchnorm);
    RUN(test_one_rank_is_plain);
#ifdef NPRED_MPI_OFF
    printf("MPI tests left out on purpose: this build was made with make MPI=0\n");
#else
    RUN(test_mpi_gradient);
    RUN(test_mpi_train);
    RUN(test_mpi_rank_failure);
    RUN(test_mpi_rank_dataset);
#endif
    RUN(test_no_mpi_message);
    cleanup();
    return th_summary();
}
