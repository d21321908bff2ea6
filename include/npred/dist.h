/* Data-parallel communication: one process group behind a small backend table.
 *
 * libnpred itself is single-rank and does not link MPI: a program that only
 * predicts never needs libmpi. The Open MPI backend lives in its own library,
 * libnpred_mpi (include/npred/mpi.h): a program that wants `mpirun` data-parallel
 * training links it and calls npred_mpi_enable() once before npred_dist_init.
 *
 * With the MPI backend:
 *
 * One process group (MPI_COMM_WORLD, duplicated, with MPI_ERRORS_RETURN so that a
 * failed call comes back as a status instead of killing the process silently).
 * Every function is collective where MPI's is: all ranks call it in the same
 * order with the same sizes. Call them from one thread (MPI_THREAD_FUNNELED).
 *
 * The library never prints: errors come back as NPRED_ERR_IO with a message that
 * names the operation, the rank and MPI's error string. */
#ifndef NPRED_DIST_H
#define NPRED_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A communication backend: what npred_dist_* forward to once it is installed. */
typedef struct {
    const char *name;   /* "Open MPI" */
    npred_status (*init)(int *argc, char ***argv);
    void (*finalize)(void);
    int (*active)(void);
    int (*rank)(void);
    int (*size)(void);
    npred_status (*allreduce_f32)(float *x, size_t n);
    npred_status (*allreduce_f64)(double *x, size_t n);
    npred_status (*bcast)(void *buf, size_t bytes, int root);
    npred_status (*barrier)(void);
    void (*abort)(int code);
} npred_dist_backend;

/* Install a backend (NULL: back to the single-rank one). Call before
 * npred_dist_init, from one thread; the table must outlive its use. */
NPRED_API void npred_dist_set_backend(const npred_dist_backend *b);


/* 1 when an MPI backend is installed (npred_mpi_enable). */
NPRED_API int npred_dist_compiled(void);
/* The rank count a launcher announces in the environment: OMPI_COMM_WORLD_SIZE
 * (Open MPI mpirun), PMI_SIZE (MPICH hydra, srun --mpi=pmi2); -1 when only
 * PMIX_RANK is set (srun --mpi=pmix: launched, size unknown); 0 when the process
 * was not started by a launcher. Works without MPI support, so a build without
 * it can say so instead of running K independent copies. */
NPRED_API int npred_dist_launched_size(void);
/* The rank the launcher announces (0 when not launched). */
NPRED_API int npred_dist_launched_rank(void);

/* MPI_Init_thread(FUNNELED) (once; later calls return NPRED_OK). Without a
 * backend: NPRED_OK as a one-rank group. */
NPRED_API npred_status npred_dist_init(int *argc, char ***argv);
/* MPI_Finalize (no-op when not initialised). */
NPRED_API void npred_dist_finalize(void);
/* 1 between init and finalize. */
NPRED_API int npred_dist_active(void);
/* Rank and group size (0 and 1 when not initialised). */
NPRED_API int npred_dist_rank(void);
NPRED_API int npred_dist_size(void);

/* In-place sums over all ranks: x (n,) on every rank becomes sum_r x_r.
 * One collective (chunked only beyond INT_MAX elements). */
NPRED_API npred_status npred_dist_allreduce_f32(float *x, size_t n);
NPRED_API npred_status npred_dist_allreduce_f64(double *x, size_t n);
/* In-place broadcast of `bytes` bytes from `root`. */
NPRED_API npred_status npred_dist_bcast(void *buf, size_t bytes, int root);
NPRED_API npred_status npred_dist_barrier(void);
/* MPI_Abort(code): ends every rank of the job (the caller prints first). Returns
 * only when not initialised. */
NPRED_API void npred_dist_abort(int code);

/* Payload bytes this rank passed to allreduce/bcast since init (for benchmarks). */
NPRED_API uint64_t npred_dist_bytes(void);

#ifdef __cplusplus
}
#endif
#endif
