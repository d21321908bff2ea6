/* Data-parallel training throughput: 1 process with 2 threads against mpirun
 * with 1 and 2 ranks of 1 thread each (loopback TCP), on a simulated dataset,
 * and the bytes each rank sends into the allreduce per optimizer step.
 *
 * Throughput = training trials per second of training time (batches only, the
 * validation between epochs excluded). Numbers are noisy on a shared 2-core
 * machine. Without an MPI build (or mpirun) only the threaded run is timed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <omp.h>

#include "npred/simulate.h"
#include "npred/dist.h"
#ifdef NPRED_HAVE_MPI
#include "npred/mpi.h"
#endif
#include "model/model.h"
#include "npred/data.h"
#include "npred/model.h"
#include "train/trainer.h"

#define EPOCHS 2
#define MPIRUN "mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo " \
               "--mca oob_tcp_if_include lo"

static const char *model_cfg =
    "{\"layers\": 3, \"input_kern\": 9, \"hidden_kern\": 7, \"hidden_channels\": 16, \"depth_separable\": true,"
    " \"stack\": -1, \"gamma_input\": 6.3831, \"gamma_readout\": 0.0076, \"init_sigma\": 0.1, \"init_mu_range\": 0.3,"
    " \"gauss_type\": \"full\", \"grid_mean_predictor\": {\"type\": \"cortex\", \"input_dimensions\": 2,"
    " \"hidden_layers\": 1, \"hidden_features\": 30, \"final_tanh\": true}}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    double t0, busy;
    int64_t trials, steps_seen;
} timing;

static void on_batch(void *u, const npred_trainer_batch_info *b)
{
    timing *tm = u;
    double t = now_s();
    /* time from the end of the first batch to the end of the last, per epoch */
    if (b->batch == 1) tm->t0 = t;
    else tm->trials += b->size;
    if (b->batch == b->n_batches && b->batch > 1) tm->busy += t - tm->t0;
}

static npred_status grad_count(void *user, float *g, size_t n)
{
    (void)g;
    (void)n;
    ((timing *)user)->steps_seen++;
    return NPRED_OK;
}

typedef struct {
    double tput, bytes;
    size_t params;
    long long steps;
} result;

/* Train EPOCHS epochs: throughput, bytes sent per step, parameters, steps. */
static int run(const char *p0, const char *p1, int dist, result *r)
{
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    npred_loaders *L = NULL;
    npred_model *m = NULL;
    npred_trainer *t = NULL;
    const char *pp[2] = {p0, p1};
    npred_status st = npred_loader_config_parse(&lc, "{\"batch_size\": 64, \"normalize\": true}", NULL, NULL);
    if (!st) st = npred_loaders_open(&L, pp, 2, &lc);
    if (!st) st = npred_trainer_model_create(&m, L, model_cfg, "bench model", 1);
    npred_trainer_config c;
    npred_trainer_config_init(&c);
    c.max_iter = EPOCHS;
    c.patience = 100;
    if (!st) st = npred_trainer_create(&t, m, L, &c, 1);
    if (!st && dist) st = npred_trainer_set_dist(t, 0);
    timing tm = {0};
    if (!st) {
        npred_trainer_callbacks cb = {on_batch, NULL, NULL, &tm, NULL};
        npred_trainer_set_callbacks(t, &cb);
        npred_trainer_set_grad_reduce(t, grad_count, &tm);
        uint64_t b0 = npred_dist_bytes();
        st = npred_trainer_run(t, NULL);
        uint64_t bytes = npred_dist_bytes() - b0;
        r->tput = (double)tm.trials / (tm.busy > 0 ? tm.busy : 1e-9);
        r->bytes = tm.steps_seen ? (double)bytes / (double)tm.steps_seen : 0.0;
        r->params = npred_model_table(m)->n_params;
        r->steps = (long long)tm.steps_seen;
    }
    if (st) fprintf(stderr, "bench_dist: %s\n", npred_last_error());
    npred_trainer_free(t);
    npred_model_free(m);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    return st ? 1 : 0;
}

static int mpi_run(const char *self, int np, const char *p0, const char *p1, double *tput, double *bytes)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "NPRED_BENCH_RANK=1 NPRED_BENCH_P0=%s NPRED_BENCH_P1=%s OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
             "timeout 120 " MPIRUN " -np %d %s",
             p0, p1, np, self);
    FILE *f = popen(cmd, "r");
    if (!f) return 0;
    size_t params = 0;
    long long steps = 0;
    int ok = fscanf(f, "%lf %lf %zu %lld", tput, bytes, &params, &steps) == 4;
    return pclose(f) == 0 && ok;
}

int main(int argc, char **argv)
{
    (void)argc;
#ifdef NPRED_HAVE_MPI
    npred_mpi_enable();
#endif
    if (getenv("NPRED_BENCH_RANK")) {
        if (npred_dist_init(NULL, NULL)) return 1;
        result r = {0};
        int rc = run(getenv("NPRED_BENCH_P0"), getenv("NPRED_BENCH_P1"), 1, &r);
        if (!rc && npred_dist_rank() == 0) printf("%.1f %.0f %zu %lld\n", r.tput, r.bytes, r.params, r.steps);
        npred_dist_finalize();
        return rc;
    }
    char base[] = "/tmp/npred-bench-dist-XXXXXX";
    if (!mkdtemp(base)) return 1;
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 2;
    p.n_neurons = 300;
    p.n_trials = 560;
    p.val_fraction = 0.1;
    p.n_test_images = 4;
    p.n_test_repeats = 2;
    p.height = 36;
    p.width = 64;
    p.seed = 2;
    char dir[300], p0[800], p1[800], name[256];
    snprintf(dir, sizeof dir, "%s/data", base);
    if (npred_simulate(&p, dir, NULL, NULL)) {
        fprintf(stderr, "bench_dist: %s\n", npred_last_error());
        return 1;
    }
    npred_sim_tree_name(&p, 0, name, sizeof name);
    snprintf(p0, sizeof p0, "%s/%s", dir, name);
    npred_sim_tree_name(&p, 1, name, sizeof name);
    snprintf(p1, sizeof p1, "%s/%s", dir, name);
    char self[1024];
    if (!realpath(argv[0], self)) snprintf(self, sizeof self, "%s", argv[0]);

    printf("data-parallel training: 2 sessions x 300 neurons, 504 train trials each, images 36x64, batch 64,\n"
           "3-layer core (16 channels), %d epochs; throughput = train trials / s of batch time\n", EPOCHS);
    /* 1 process, 2 threads */
    fflush(stdout);
    omp_set_num_threads(2);
    result r1 = {0};
    if (run(p0, p1, 0, &r1)) return 1;
    double t_single = r1.tput;
    size_t params = r1.params;
    long long steps = r1.steps;
    printf("  1 process,  2 threads : %8.1f trials/s  (%zu parameters, %lld optimizer steps)\n", t_single, params,
           steps);
    omp_set_num_threads(1);
    result r0 = {0};
    if (run(p0, p1, 0, &r0)) return 1;
    printf("  1 process,  1 thread  : %8.1f trials/s\n", r0.tput);
    if (!npred_dist_compiled() || system("mpirun --version > /dev/null 2>&1") != 0) {
        printf("  (no MPI in this build: the rank runs are skipped)\n");
    } else {
        double t1 = 0, t2 = 0, b1 = 0, b2 = 0;
        if (mpi_run(self, 1, p0, p1, &t1, &b1))
            printf("  mpirun -np 1, 1 thread: %8.1f trials/s\n", t1);
        else
            printf("  mpirun -np 1 failed\n");
        if (mpi_run(self, 2, p0, p1, &t2, &b2)) {
            printf("  mpirun -np 2, 1 thread: %8.1f trials/s  (x%.2f vs 1 rank, x%.2f vs 1 process with 2 threads)\n",
                   t2, t1 > 0 ? t2 / t1 : 0, t2 / t_single);
            printf("  communicated per optimizer step and rank: %.0f bytes (gradient allreduce %zu x 4 = %zu bytes,\n"
                   "  plus the per-epoch broadcast and validation sums spread over the steps); a ring allreduce\n"
                   "  sends 2 (K-1)/K x the gradient per rank: %zu bytes at K = 2\n",
                   b2, params, params * 4, params * 4);
        } else {
            printf("  mpirun -np 2 failed\n");
        }
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
    return 0;
}
