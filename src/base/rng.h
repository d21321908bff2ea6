/* Bulk random numbers (internal; the scalar API is in include/npred/base.h). */
#ifndef NPRED_BASE_RNG_H
#define NPRED_BASE_RNG_H

#include <stddef.h>

#include "npred/base.h"

/* out[i] = (float)npred_rng_normal(r) for i = 0..n-1, in order: the same values
 * and the same final state as n scalar calls. The uniforms are drawn serially
 * and the Box-Muller transforms run in parallel (OpenMP over blocks), so the
 * result does not depend on the thread count. */
void npred_rng_normal_fill_f32(npred_rng *r, float *out, size_t n);

#endif
