/* Data-parallel video training (npred_video_trainer_set_dist) over MPI (mpirun on
 * loopback, 1 thread per rank) on tests/fixtures/mini_movie_tree and a renamed copy
 * (two sessions; batches of 5 clips), the small model of video_setup.h:
 *   - the gradient of one batch, 2 ranks with synchronised BatchNorm vs 1 process:
 *     |g2 - g1| <= 1e-5 * max|g1| (float summation order only);
 *   - one rank under mpirun trains the in-process run's bits;
 *   - 2 ranks (per-rank BatchNorm) finish with the same bits on both ranks, rank 0
 *     writing the run folder;
 *   - a rank whose scan differs (one response statistic changed) stops the job before
 *     anything is trained, with a message saying so.
 * This program is itself the rank (NPRED_TEST_VDIST_ROLE). A build without MPI checks
 * only the in-process part (make MPI=0 says so). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "npred/dist.h"
#include "npred/npy.h"
#ifdef NPRED_HAVE_MPI
#include "npred/mpi.h"
#endif
#include "train/video_trainer.h"
#include "video_setup.h"

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo " \
               "--mca oob_tcp_if_include lo"

static char g_dir[512], g_copy[600], g_bad[600], self_bin[1024];
static const char *LOADER5 = "{\"batch_size\": 5, \"frames\": 51}";
static const char *TRAIN = "{\"max_iter\": 2, \"lr_init\": 0.01, \"seed\": 3, \"save_checkpoints\": false}";

static int make_trainer(npred_video_trainer **t, setup *S, const char *json)
{
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    return CHECK_OK(npred_video_trainer_config_parse(&c, json, "trainer.json")) &&
           CHECK_OK(npred_video_trainer_create_encoder(t, &S->e, S->L, &c, 5));
}

/* the gradient of one fixed batch of session 0 (all 5 train clips, fixed offsets and
 * readout noise), summed over the ranks; (n_params) malloc'ed */
static float *batch_gradient(const char *p1, int dist, int sync_bn, size_t *np)
{
    const char *paths[2] = {SCAN, p1};
    setup S;
    npred_video_trainer *t = NULL;
    float *g = NULL;
    npred_video_batch b = {0};
    if (!make_setup_paths(&S, LOADER5, paths, 1, 11) || !make_trainer(&t, &S, TRAIN)) goto out;
    if (dist && !CHECK_OK(npred_video_trainer_set_dist(t, sync_bn))) goto out;
    if (!CHECK_OK(npred_video_batch_init(&b, S.L, 0))) goto out;
    npred_video_session_info si;
    npred_video_loaders_session(S.L, 0, &si);
    int tr = npred_video_loaders_tier(S.L, 0, "train");
    int64_t offs[5] = {0, 1, 2, 3, 1};
    if (!CHECK_OK(npred_video_loaders_get(S.L, 0, si.tier_idx[tr], offs, 5, NULL, &b))) goto out;
    size_t nz = (size_t)5 * S.e.out_t * S.e.s[0].n * 2;
    float *noise = malloc(nz * sizeof *noise);
    uint64_t rs = 3;
    for (size_t i = 0; noise && i < nz; i++) noise[i] = (float)(2 * th_rand(&rs) - 1);
    npred_ptable_zero_grad(&S.e.t);
    if (noise && CHECK_OK(npred_video_trainer_batch(t, &b, noise, NULL)) &&
        (!dist || CHECK_OK(npred_dist_allreduce_f32(S.e.t.grad, S.e.t.n_params)))) {
        *np = S.e.t.n_params;
        g = malloc(*np * sizeof *g);
        if (g) memcpy(g, S.e.t.grad, *np * sizeof *g);
    }
    free(noise);
out:
    npred_video_batch_free(&b);
    npred_video_trainer_free(t);
    free_setup(&S);
    return g;
}

/* a short run; the final parameters (n_params) malloc'ed; run folder dir (may be NULL) */
static float *run_params(const char *p1, int dist, const char *dir, size_t *np, npred_status *stp)
{
    const char *paths[2] = {SCAN, p1};
    setup S;
    npred_video_trainer *t = NULL;
    float *p = NULL;
    *stp = NPRED_ERR_ARG;
    if (!make_setup_paths(&S, LOADER5, paths, 1, 11) || !make_trainer(&t, &S, TRAIN)) goto out;
    if (dist && (*stp = npred_video_trainer_set_dist(t, 0))) goto out;
    if (dir && (*stp = npred_video_trainer_set_run_dir(t, dir, "{}"))) goto out;
    npred_trainer_result r;
    if ((*stp = npred_video_trainer_run(t, &r))) goto out;
    *np = S.e.t.n_params;
    p = malloc(*np * sizeof *p);
    if (p) memcpy(p, S.e.t.data, *np * sizeof *p);
out:
    npred_video_trainer_free(t);
    free_setup(&S);
    return p;
}

static int write_floats(const char *path, const float *x, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(x, sizeof *x, n, f) == n;
    return (fclose(f) == 0) && ok;
}

static float *read_floats(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *x = len > 0 ? malloc((size_t)len) : NULL;
    if (x && fread(x, 1, (size_t)len, f) == (size_t)len) *n = (size_t)len / sizeof *x;
    else free(x), x = NULL;
    fclose(f);
    return x;
}

/* NPRED_TEST_VDIST_ROLE=grad|train: one rank; writes OUT.<rank> */
static int rank_main(const char *role)
{
    if (npred_dist_init(NULL, NULL)) {
        fprintf(stderr, "rank: %s\n", npred_last_error());
        return 1;
    }
    const char *out = getenv("NPRED_TEST_VDIST_OUT"), *p1 = getenv("NPRED_TEST_VDIST_PATH1"),
               *bad = getenv("NPRED_TEST_VDIST_PATH1_RANK1"), *dir = getenv("NPRED_TEST_VDIST_DIR");
    const char *sync = getenv("NPRED_TEST_VDIST_SYNC");
    int r = npred_dist_rank(), rc = 1;
    if (bad && r == 1) p1 = bad;
    size_t n = 0;
    float *x = NULL;
    npred_status st = NPRED_OK;
    if (out && p1) {
        if (!strcmp(role, "grad")) x = batch_gradient(p1, 1, sync && *sync == '1', &n);
        else x = run_params(p1, 1, dir, &n, &st);
    }
    if (!x) fprintf(stderr, "rank %d: %s\n", r, st ? npred_last_error() : "failed");
    char p[800];
    snprintf(p, sizeof p, "%s.%d", out ? out : "", r);
    if (x && write_floats(p, x, n)) rc = 0;
    free(x);
    npred_dist_finalize();
    return rc;
}

static void test_one_process(void)
{
    /* without a launcher set_dist changes nothing */
    size_t n1 = 0, n2 = 0;
    float *g1 = batch_gradient(g_copy, 0, 0, &n1), *g2 = batch_gradient(g_copy, 1, 1, &n2);
    CHECK(g1 && g2 && n1 == n2 && !memcmp(g1, g2, n1 * sizeof *g1), "one-rank set_dist changed the gradient");
    free(g1), free(g2);
}

static int mpi_ready(void)
{
    if (!CHECK(npred_dist_compiled(), "this build lacks MPI: install libopenmpi-dev openmpi-bin and rebuild, or "
                                      "build with make MPI=0 to leave the MPI tests out on purpose"))
        return 0;
    return CHECK(system("mpirun --version > /dev/null 2>&1") == 0, "mpirun is not on PATH (apt-get install openmpi-bin)");
}

static int launch(const char *role, int np, const char *env, const char *out, const char *log)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "NPRED_TEST_VDIST_ROLE=%s NPRED_TEST_VDIST_OUT=%s NPRED_TEST_VDIST_PATH1=%s %s OMP_NUM_THREADS=1 "
             "timeout 120 " MPIRUN " -np %d %s > %s/%s 2>&1",
             role, out, g_copy, env, np, self_bin, g_dir, log);
    return system(cmd);
}

static void test_mpi_gradient(void)
{
    if (!mpi_ready()) return;
    size_t n1 = 0, n2 = 0;
    float *g1 = batch_gradient(g_copy, 0, 0, &n1);
    char out[700], p[760];
    snprintf(out, sizeof out, "%s/grad", g_dir);
    int rc = launch("grad", 2, "NPRED_TEST_VDIST_SYNC=1", out, "grad.log");
    snprintf(p, sizeof p, "%s.0", out);
    float *g2 = read_floats(p, &n2);
    if (CHECK(rc == 0 && g1 && g2 && n1 == n2, "2-rank gradient: rc %d, %zu vs %zu values (see %s/grad.log)", rc, n2,
              n1, g_dir)) {
        double gmax = 0, dmax = 0;
        for (size_t i = 0; i < n1; i++) {
            gmax = th_worst(gmax, fabs(g1[i]));
            dmax = th_worst(dmax, fabs((double)g2[i] - g1[i]));
        }
        CHECK(gmax > 0 && dmax <= 1e-5 * gmax, "2 ranks (sync BN) vs 1 process: max |dg| %.3g, max |g| %.3g", dmax,
              gmax);
        printf("  video batch gradient, 2 ranks vs 1 process: max |dg| / max |g| = %.2e over %zu values\n",
               dmax / gmax, n1);
    }
    free(g1), free(g2);
}

static void test_mpi_train(void)
{
    if (!mpi_ready()) return;
    size_t n1 = 0, na = 0, nb = 0, nc = 0;
    npred_status st;
    float *p1 = run_params(g_copy, 0, NULL, &n1, &st);
    char out[700], p[800], env[800];
    /* one rank under mpirun: the in-process bits */
    snprintf(out, sizeof out, "%s/one", g_dir);
    int rc = launch("train", 1, "", out, "one.log");
    snprintf(p, sizeof p, "%s.0", out);
    float *pa = read_floats(p, &na);
    CHECK(rc == 0 && p1 && pa && na == n1 && !memcmp(p1, pa, n1 * sizeof *p1),
          "mpirun -np 1 differs from the in-process run (rc %d)", rc);
    /* two ranks, per-rank BatchNorm: the same bits on both, rank 0's run folder */
    snprintf(out, sizeof out, "%s/two", g_dir);
    snprintf(env, sizeof env, "NPRED_TEST_VDIST_DIR=%s/run2", g_dir);
    rc = launch("train", 2, env, out, "two.log");
    snprintf(p, sizeof p, "%s.0", out);
    float *pb = read_floats(p, &nb);
    snprintf(p, sizeof p, "%s.1", out);
    float *pc = read_floats(p, &nc);
    int finite = pb != NULL;
    for (size_t i = 0; pb && i < nb; i++) finite &= isfinite(pb[i]);
    CHECK(rc == 0 && pb && pc && nb == n1 && nc == n1 && finite && !memcmp(pb, pc, nb * sizeof *pb),
          "2 ranks: rc %d, parameters equal on both ranks (see %s/two.log)", rc, g_dir);
    CHECK(pb && memcmp(pb, p1, n1 * sizeof *pb), "2 ranks with per-rank BatchNorm differ from one process");
    struct stat sb;
    snprintf(p, sizeof p, "%s/run2/model.safetensors", g_dir);
    int has_model = stat(p, &sb) == 0;
    snprintf(p, sizeof p, "%s/run2/log.csv", g_dir);
    CHECK(has_model && stat(p, &sb) == 0, "rank 0 wrote the run folder");
    free(p1), free(pa), free(pb), free(pc);
}

static int file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char *s = th_read_stream(f);
    fclose(f);
    int ok = s && strstr(s, needle);
    free(s);
    return ok;
}

static void test_mpi_rank_dataset(void)
{
    if (!mpi_ready()) return;
    char out[700], p[800], env[1500];
    snprintf(out, sizeof out, "%s/bad", g_dir);
    snprintf(env, sizeof env, "NPRED_TEST_VDIST_PATH1_RANK1=%s NPRED_TEST_VDIST_DIR=%s/run_bad", g_bad, g_dir);
    int rc = launch("train", 2, env, out, "bad.log");
    snprintf(p, sizeof p, "%s/bad.log", g_dir);
    CHECK(rc != 0 && file_has(p, "datasets or models differ between ranks") && file_has(p, "nothing was trained"),
          "a rank with other data: rc %d, no clear message in %s", rc, p);
    struct stat sb;
    snprintf(p, sizeof p, "%s/run_bad/log.csv", g_dir);
    CHECK(stat(p, &sb) != 0, "a log was written before the dataset check");
}

/* the scan copied to dst; with `alter`, one value of its responses' std statistic changed */
static int copy_scan(const char *dst, int alter)
{
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", SCAN, dst);
    if (system(cmd) != 0) return 0;
    if (!alter) return 1;
    char p[800];
    snprintf(p, sizeof p, "%s/meta/statistics/responses/all/std.npy", dst);
    npred_array a;
    if (npred_npy_read(p, &a)) return 0;
    ((float *)a.data)[3] *= 2.0f;
    void *buf = NULL;
    size_t len = 0;
    int ok = !npred_npy_serialize(&a, &buf, &len) && !npred_write_atomic(p, buf, len);
    free(buf);
    npred_array_free(&a);
    return ok;
}

int main(int argc, char **argv)
{
    (void)argc;
#ifdef NPRED_HAVE_MPI
    npred_mpi_enable();
#endif
    const char *role = getenv("NPRED_TEST_VDIST_ROLE");
    if (role) return rank_main(role);
    if (!realpath(argv[0], self_bin)) snprintf(self_bin, sizeof self_bin, "%s", argv[0]);
    setenv("ASAN_OPTIONS", "detect_leaks=0", 0);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    snprintf(g_dir, sizeof g_dir, "%s/npred_vdist_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot make a temporary folder\n");
        return 1;
    }
    snprintf(g_copy, sizeof g_copy, "%s/dynamic00001-2-2-Video-copy", g_dir);
    snprintf(g_bad, sizeof g_bad, "%s/altered/dynamic00001-2-2-Video-copy", g_dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/altered'", g_dir);
    int ok = system(cmd) == 0 && copy_scan(g_copy, 0) && copy_scan(g_bad, 1);
    if (CHECK(ok, "copying the scan")) {
        RUN(test_one_process);
#ifdef NPRED_MPI_OFF
        printf("MPI tests left out on purpose: this build was made with make MPI=0\n");
#else
        RUN(test_mpi_gradient);
        RUN(test_mpi_train);
        RUN(test_mpi_rank_dataset);
#endif
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!getenv("NPRED_TEST_KEEP") && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return th_summary();
}
