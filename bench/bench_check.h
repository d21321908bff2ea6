/* Every bench checks every status it gets: a failing call ends the bench with
 * the library's message and exit code 1, before any speed is printed. */
#ifndef NPRED_BENCH_CHECK_H
#define NPRED_BENCH_CHECK_H
#include <stdio.h>
#include <stdlib.h>

#include "npred/base.h"

#define BENCH_OK(call)                                                                                                 \
    do {                                                                                                               \
        npred_status bench_st_ = (call);                                                                               \
        if (bench_st_ != NPRED_OK) {                                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call, npred_last_error(),             \
                    npred_status_str(bench_st_));                                                                      \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
#endif
