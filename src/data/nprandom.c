/* numpy.random.RandomState (legacy MT19937) seeding, 32-bit draws and
 * permutation, so that static_loader's seeded neuron_n / image_n draws select
 * the same trials and neurons as NumPy does. */
#include "data/loader.h"

#include <stdlib.h>

void npred_np_random_seed(npred_np_random *r, uint32_t seed)
{
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->pos = 624;
}

uint32_t npred_np_random_u32(npred_np_random *r)
{
    if (r->pos >= 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % 624] & 0x7fffffffu);
            r->mt[i] = r->mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->pos = 0;
    }
    uint32_t y = r->mt[r->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* numpy random_interval: uniform in [0, max] by masked rejection */
static uint64_t interval(npred_np_random *r, uint64_t max)
{
    if (max == 0) return 0;
    uint64_t mask = max, v;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    if (max <= 0xffffffffu) {
        while ((v = (npred_np_random_u32(r) & mask)) > max) {}
    } else {
        do {
            uint64_t hi = npred_np_random_u32(r);
            v = ((hi << 32) | npred_np_random_u32(r)) & mask;
        } while (v > max);
    }
    return v;
}

void npred_np_random_permutation(npred_np_random *r, int64_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i >= 1; i--) {
        int64_t j = (int64_t)interval(r, (uint64_t)i);
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

npred_status npred_sampled_subset(int64_t *out, const int64_t *indices, int64_t n, int64_t num_samples,
                                  int sorted, npred_np_random *r)
{
    if (!out || !indices || !r) return npred_errorf(NPRED_ERR_ARG, "sampled subset sampler: NULL argument");
    if (num_samples < 0) return npred_errorf(NPRED_ERR_ARG, "sampled subset sampler: num_samples %lld < 0", (long long)num_samples);
    if (n <= 0 && num_samples > 0)
        return npred_errorf(NPRED_ERR_VALUE, "sampled subset sampler: cannot draw %lld samples from no indices",
                            (long long)num_samples);
    if (num_samples > n) { /* replace=True: randint(0, n, size) */
        for (int64_t k = 0; k < num_samples; k++) out[k] = indices[interval(r, (uint64_t)(n - 1))];
    } else if (num_samples > 0) { /* replace=False: permutation(n)[:num_samples] */
        int64_t *perm = malloc((size_t)n * sizeof *perm);
        if (!perm) return npred_errorf(NPRED_ERR_NOMEM, "sampled subset sampler: out of memory");
        npred_np_random_permutation(r, perm, n);
        for (int64_t k = 0; k < num_samples; k++) out[k] = indices[perm[k]];
        free(perm);
    }
    if (sorted) qsort(out, (size_t)num_samples, sizeof *out, cmp_i64);
    return NPRED_OK;
}
