/* libnpred_mpi: the Open MPI backend of npred/dist.h. The only file that
 * includes <mpi.h>; built into its own library so that libnpred never needs
 * libmpi (npred/mpi.h). */
#include "npred/mpi.h"

#include <limits.h>
#include <stdio.h>

#include <mpi.h>

#include "npred/dist.h"

static MPI_Comm comm = MPI_COMM_NULL;
static int my_rank, my_size = 1, initialised_here;

static npred_status mpi_fail(int rc, const char *op)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    return npred_errorf(NPRED_ERR_IO, "MPI %s failed on rank %d of %d: %s (another rank has probably died)", op,
                        my_rank, my_size, msg);
}

static npred_status mpi_init(int *argc, char ***argv)
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
    return NPRED_OK;
}

static void mpi_finalize(void)
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

static int mpi_active(void) { return comm != MPI_COMM_NULL; }
static int mpi_rank(void) { return comm != MPI_COMM_NULL ? my_rank : 0; }
static int mpi_size(void) { return comm != MPI_COMM_NULL ? my_size : 1; }

/* In chunks of at most INT_MAX elements (MPI counts are int). */
static npred_status allreduce(void *x, size_t n, size_t elem, MPI_Datatype dt)
{
    char *p = x;
    while (n) {
        int k = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Allreduce(MPI_IN_PLACE, p, k, dt, MPI_SUM, comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "Allreduce");
        p += (size_t)k * elem;
        n -= (size_t)k;
    }
    return NPRED_OK;
}

static npred_status mpi_allreduce_f32(float *x, size_t n) { return allreduce(x, n, sizeof(float), MPI_FLOAT); }
static npred_status mpi_allreduce_f64(double *x, size_t n) { return allreduce(x, n, sizeof(double), MPI_DOUBLE); }

static npred_status mpi_bcast(void *buf, size_t bytes, int root)
{
    char *p = buf;
    while (bytes) {
        int k = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        int rc = MPI_Bcast(p, k, MPI_BYTE, root, comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "Bcast");
        p += k;
        bytes -= (size_t)k;
    }
    return NPRED_OK;
}

static npred_status mpi_barrier(void)
{
    if (my_size == 1) return NPRED_OK;
    int rc = MPI_Barrier(comm);
    return rc == MPI_SUCCESS ? NPRED_OK : mpi_fail(rc, "Barrier");
}

static void mpi_abort(int code)
{
    if (comm != MPI_COMM_NULL) MPI_Abort(MPI_COMM_WORLD, code);
}

static const npred_dist_backend mpi_backend = {
    "Open MPI", mpi_init, mpi_finalize, mpi_active, mpi_rank, mpi_size,
    mpi_allreduce_f32, mpi_allreduce_f64, mpi_bcast, mpi_barrier, mpi_abort,
};

void npred_mpi_enable(void) { npred_dist_set_backend(&mpi_backend); }
