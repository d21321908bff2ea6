/* Many standard normals at once, with the bits of as many npred_rng_normal calls
 * (Box-Muller in double precision, rounded to float here) and the generator left in
 * the state those calls leave (its spare included).
 *
 *   npred_normals_draw       serial: the generator's spare; for fewer than 16,384
 *                            pairs or one thread, the uniforms of every pair in the
 *                            generator's order (inlined steps)
 *   npred_normals_transform  on the threads of the enclosing parallel region (an
 *                            orphaned `omp for`, ending with its barrier): otherwise
 *                            first the uniforms, each thread its share of the pairs
 *                            from the generator jumped ahead to them (the same
 *                            numbers); then the transform
 *                            sqrt(-2 log u1) (cos, sin)(2 pi u2)
 *   npred_normals_finish     serial: the generator's state after the draws, and the
 *                            last pair's sin becomes its spare when the count is odd
 *
 * The transform: with AVX-512, eight pairs at a time through polynomial log, sin
 * and cos in double (relative error below 2^-45 against the exact values), and a
 * float result is taken from them only when the whole interval v (1 +- 2^-36),
 * which also holds the value computed with the C library (error < 1 ulp), rounds
 * to one float; otherwise (about one pair in 1,400, and arguments near a multiple
 * of pi / 2) the pair is computed with the C library's log, sin and cos, the
 * generator's own operations. So every float equals (float) of the double that
 * npred_rng_normal returns. Without AVX-512 every pair takes the C library path. */
#ifndef NPRED_READOUTS_NORMALS_H
#define NPRED_READOUTS_NORMALS_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"

typedef struct {
    size_t count;    /* normals wanted */
    size_t first;    /* 1 when the generator's spare was z[0] */
    size_t pairs;    /* pairs drawn: z[first + 2k] = cos, z[first + 2k + 1] = sin */
    uint64_t *u1;    /* (pairs) generator outputs of each pair's u1 and u2: */
    uint64_t *u2;    /*   caller's memory, count / 2 + 1 entries each */
    double spare;    /* the last pair's sin when it lies past count */
    size_t slow;     /* pairs that took the C library path (for tests) */
    uint64_t s[4];   /* the generator's state before the uniforms, then after them */
    uint64_t s_end[4];
    int drawn;       /* the uniforms are in u1, u2 */
    int redraw;      /* a u1 was 0 in a thread's share: drawn again on one thread */
} npred_normals;

/* d->u1, d->u2 must be set; fills z[0] with the generator's spare if it has one */
void npred_normals_draw(npred_normals *d, size_t count, npred_rng *rng, float *z);
void npred_normals_transform(npred_normals *d, float *z);
void npred_normals_finish(const npred_normals *d, npred_rng *rng);

#endif
