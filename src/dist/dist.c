/* The process group of data-parallel training (see npred/dist.h): launcher
 * detection, the payload counter, and the forwarding to an installed backend
 * (libnpred_mpi); without one, a single-rank group. No MPI here. */
#include "npred/dist.h"

#include <limits.h>
#include <stdlib.h>

static const npred_dist_backend *backend;
static int stub_active;
static uint64_t bytes_moved;

void npred_dist_set_backend(const npred_dist_backend *b) { backend = b; }

int npred_dist_compiled(void) { return backend != NULL; }

static int env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > INT_MAX) return 0;
    *out = (int)x;
    return 1;
}

int npred_dist_launched_size(void)
{
    int n;
    if (env_int("OMPI_COMM_WORLD_SIZE", &n) || env_int("PMI_SIZE", &n)) return n;
    if (env_int("PMIX_RANK", &n)) return -1;
    return 0;
}

int npred_dist_launched_rank(void)
{
    int r;
    if (env_int("OMPI_COMM_WORLD_RANK", &r) || env_int("PMI_RANK", &r) || env_int("PMIX_RANK", &r)) return r;
    return 0;
}

uint64_t npred_dist_bytes(void) { return bytes_moved; }

npred_status npred_dist_init(int *argc, char ***argv)
{
    if (!backend) {
        stub_active = 1;
        return NPRED_OK;
    }
    int was = backend->active();
    npred_status s = backend->init(argc, argv);
    if (!s && !was) bytes_moved = 0;
    return s;
}

void npred_dist_finalize(void)
{
    if (backend) backend->finalize();
    stub_active = 0;
}

int npred_dist_active(void) { return backend ? backend->active() : stub_active; }
int npred_dist_rank(void) { return backend ? backend->rank() : 0; }
int npred_dist_size(void) { return backend ? backend->size() : 1; }

/* A collective moves data only in a group of more than one rank. */
static int moving(size_t n) { return backend && n && backend->active() && backend->size() > 1; }

npred_status npred_dist_allreduce_f32(float *x, size_t n)
{
    if (!moving(n)) return NPRED_OK;
    npred_status s = backend->allreduce_f32(x, n);
    if (!s) bytes_moved += (uint64_t)n * sizeof(float);
    return s;
}

npred_status npred_dist_allreduce_f64(double *x, size_t n)
{
    if (!moving(n)) return NPRED_OK;
    npred_status s = backend->allreduce_f64(x, n);
    if (!s) bytes_moved += (uint64_t)n * sizeof(double);
    return s;
}

npred_status npred_dist_bcast(void *buf, size_t bytes, int root)
{
    int size = npred_dist_size();
    if (root < 0 || root >= size) return npred_errorf(NPRED_ERR_ARG, "broadcast: root %d of %d rank(s)", root, size);
    if (!moving(bytes)) return NPRED_OK;
    npred_status s = backend->bcast(buf, bytes, root);
    if (!s) bytes_moved += (uint64_t)bytes;
    return s;
}

npred_status npred_dist_barrier(void) { return backend && backend->active() ? backend->barrier() : NPRED_OK; }

void npred_dist_abort(int code)
{
    if (backend) backend->abort(code);
}
