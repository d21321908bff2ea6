/* Every bench checks every status it gets: a failing call ends the bench with
 * the library's message and exit code 1, before any speed is printed. Also the
 * benches' uniform test data (bench_rnd). */
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

/* n floats uniform in [-0.5, 0.5) from a fixed linear congruential sequence of seed
 * (the same data on every run); out of memory ends the bench */
static inline float *bench_rnd(size_t n, unsigned seed)
{
    float *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "bench: out of memory for %zu floats of test data\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = (float)((seed >> 8) * (1.0 / 16777216.0)) - 0.5f;
    }
    return a;
}
#endif
