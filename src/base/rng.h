/* The generator's step (xoshiro256**) inline, for loops that draw many numbers:
 * npred_rng_u64 is this function on the state of an npred_rng. */
#ifndef NPRED_BASE_RNG_H
#define NPRED_BASE_RNG_H

#include <stdint.h>

static inline uint64_t npred_rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t npred_rng_next(uint64_t s[4])
{
    uint64_t result = npred_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = npred_rng_rotl(s[3], 45);
    return result;
}

#endif
