/* MPI wrapper or single-rank stub: see dist.h. */
#include "dist/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef NPRED_HAVE_MPI
#include <mpi.h>
#endif

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

static uint64_t bytes_moved;
uint64_t npred_dist_bytes(void) { return bytes_moved; }

#ifdef NPRED_HAVE_MPI

static MPI_Comm comm = MPI_COMM_NULL;
static int my_rank, my_size = 1, initialised_here;

int npred_dist_compiled(void) { return 1; }

static npred_status mpi_fail(int rc, const char *op)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return npred_errorf(NPRED_ERR_IO, "MPI %s failed on rank %d of %d: %s (another rank has probably died)", op,
                        my_rank, my_size, msg);
}

npred_status npred_dist_init(int *argc, char ***argv)
{
    if (comm != MPI_COMM_NULL) return NPRED_OK;
    int flag = 0, provided = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return npred_errorf(NPRED_ERR_IO, "MPI_Init_thread failed");
        initialised_here = 1;
    }
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "Comm_dup");
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm, &my_rank);
    MPI_Comm_size(comm, &my_size);
    bytes_moved = 0;
    return NPRED_OK;
}

void npred_dist_finalize(void)
{
    if (comm == MPI_COMM_NULL) return;
    MPI_Comm_free(&comm);
    comm = MPI_COMM_NULL;
    int fin = 0;
    MPI_Finalized(&fin);
    if (initialised_here && !fin) MPI_Finalize();
    initialised_here = 0;
    my_rank = 0;
    my_size = 1;
}

int npred_dist_active(void) { return comm != MPI_COMM_NULL; }
int npred_dist_rank(void) { return comm != MPI_COMM_NULL ? my_rank : 0; }
int npred_dist_size(void) { return comm != MPI_COMM_NULL ? my_size : 1; }

static npred_status allreduce(void *x, size_t n, size_t elem, MPI_Datatype dt)
{
    if (comm == MPI_COMM_NULL || my_size == 1 || n == 0) return NPRED_OK;
    char *p = x;
    while (n) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Allreduce(MPI_IN_PLACE, p, k, dt, MPI_SUM, comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "Allreduce");
        bytes_moved += (uint64_t)k * elem;
        p += (size_t)k * elem;
        n -= (size_t)k;
    }
    return NPRED_OK;
}

npred_status npred_dist_allreduce_f32(float *x, size_t n) { return allreduce(x, n, sizeof(float), MPI_FLOAT); }
npred_status npred_dist_allreduce_f64(double *x, size_t n) { return allreduce(x, n, sizeof(double), MPI_DOUBLE); }

npred_status npred_dist_bcast(void *buf, size_t bytes, int root)
{
    if (comm == MPI_COMM_NULL || my_size == 1 || bytes == 0) return NPRED_OK;
    if (root < 0 || root >= my_size) return npred_errorf(NPRED_ERR_ARG, "MPI Bcast: root %d of %d ranks", root, my_size);
    char *p = buf;
    while (bytes) {
        int k = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        int rc = MPI_Bcast(p, k, MPI_BYTE, root, comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "Bcast");
        bytes_moved += (uint64_t)k;
        p += k;
        bytes -= (size_t)k;
    }
    return NPRED_OK;
}

npred_status npred_dist_barrier(void)
{
    if (comm == MPI_COMM_NULL || my_size == 1) return NPRED_OK;
    int rc = MPI_Barrier(comm);
    return rc == MPI_SUCCESS ? NPRED_OK : mpi_fail(rc, "Barrier");
}

void npred_dist_abort(int code)
{
    if (comm != MPI_COMM_NULL) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* single-rank stub */

static int active;

int npred_dist_compiled(void) { return 0; }

npred_status npred_dist_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    active = 1;
    return NPRED_OK;
}

void npred_dist_finalize(void) { active = 0; }
int npred_dist_active(void) { return active; }
int npred_dist_rank(void) { return 0; }
int npred_dist_size(void) { return 1; }
npred_status npred_dist_allreduce_f32(float *x, size_t n)
{
    (void)x;
    (void)n;
    return NPRED_OK;
}
npred_status npred_dist_allreduce_f64(double *x, size_t n)
{
    (void)x;
    (void)n;
    return NPRED_OK;
}
npred_status npred_dist_bcast(void *buf, size_t bytes, int root)
{
    (void)buf;
    (void)bytes;
    if (root != 0) return npred_errorf(NPRED_ERR_ARG, "broadcast: root %d of 1 rank", root);
    return NPRED_OK;
}
npred_status npred_dist_barrier(void) { return NPRED_OK; }
void npred_dist_abort(int code) { (void)code; }

#endif
