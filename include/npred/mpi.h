/* libnpred_mpi: Open MPI data-parallel training for npred (docs/distributed.md).
 *
 * Link with -lnpred_mpi -lnpred (pkg-config: npred_mpi) and call npred_mpi_enable()
 * once, before npred_dist_init and npred_trainer_set_dist; then `mpirun -np K prog`
 * trains on K ranks. libnpred alone is single-rank and never loads libmpi. */
#ifndef NPRED_MPI_H
#define NPRED_MPI_H

#include "npred/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Install the Open MPI backend into npred_dist_* (idempotent; one thread). */
NPRED_API void npred_mpi_enable(void);

#ifdef __cplusplus
}
#endif
#endif
