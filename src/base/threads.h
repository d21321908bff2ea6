/* The OpenMP thread index, 0 without OpenMP (for per-thread scratch buffers). */
#ifndef NPRED_BASE_THREADS_H
#define NPRED_BASE_THREADS_H

#ifdef _OPENMP
#include <omp.h>
#endif

static inline int npred_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif
