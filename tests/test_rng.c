/* Bulk normal draws (base/rng.h) against the scalar generator: same values, same
 * final state, for every length and starting state, at any thread count. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "harness.h"

static void fill_case(size_t n, int pre, int threads)
{
    npred_rng a, b;
    npred_rng_seed(&a, 1234 + n);
    for (int k = 0; k < pre; k++) npred_rng_normal(&a); /* pre odd: a spare is pending */
    b = a;
    float *ref = malloc((n + 1) * sizeof *ref), *got = malloc((n + 1) * sizeof *got);
    for (size_t i = 0; i < n; i++) ref[i] = (float)npred_rng_normal(&a);
    omp_set_num_threads(threads);
    npred_rng_normal_fill_f32(&b, got, n);
    CHECK(!memcmp(ref, got, n * sizeof *ref), "n=%zu pre=%d threads=%d: values differ", n, pre, threads);
    CHECK(!memcmp(&a, &b, sizeof a), "n=%zu pre=%d threads=%d: final state differs", n, pre, threads);
    /* and the next draw agrees */
    CHECK(npred_rng_normal(&a) == npred_rng_normal(&b), "n=%zu: next draw differs", n);
    free(ref);
    free(got);
}

static void test_fill_matches_scalar(void)
{
    size_t lens[] = {0, 1, 2, 3, 7, 1000, 8191, 8192, 8193, 20001};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        for (int pre = 0; pre < 2; pre++)
            for (int th = 1; th <= 2; th++) fill_case(lens[i], pre, th);
}

static void test_fill_moments(void)
{
    npred_rng r;
    npred_rng_seed(&r, 5);
    size_t n = 200000;
    float *v = malloc(n * sizeof *v);
    npred_rng_normal_fill_f32(&r, v, n);
    double m = 0, q = 0;
    for (size_t i = 0; i < n; i++) m += v[i], q += (double)v[i] * v[i];
    m /= n;
    q = q / n - m * m;
    CHECK(m > -0.01 && m < 0.01 && q > 0.98 && q < 1.02, "mean %g variance %g", m, q);
    free(v);
}

int main(void)
{
    RUN(test_fill_matches_scalar);
    RUN(test_fill_moments);
    return th_summary();
}
