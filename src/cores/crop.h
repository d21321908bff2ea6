/* A core evaluated on a crop of its input (in-silico experiments on one neuron).
 *
 * A point readout (FullGaussian2d, Gaussian2d) reads the core output at one position
 * (2x2 bilinear taps); in eval mode (BatchNorm an affine map per channel) that value
 * depends only on the input pixels within the core's receptive field of the taps.
 * Running the same core (same parameters, same table indices) on a crop that holds
 * this field gives the same output at the taps: a conv that is zero-padded at a crop
 * border away from the image border changes only outputs within its radius of that
 * border, and the crop keeps the taps a whole receptive-field radius inside.
 *
 * The property needs every layer to be a local map with stride 1: plain or
 * depth-separable convs (any padding and dilation), BatchNorm, the nonlinearity.
 * Squeeze-excitation blocks (a global pooling), attention convs and the
 * rotation-equivariant (Hermite) core are refused. */
#ifndef NPRED_CORES_CROP_H
#define NPRED_CORES_CROP_H

#include "cores/stacked2d.h"

/* The receptive field of one core output row (column): output index o depends on
 * input indices [o - *lo, o + *hi] only. NPRED_ERR_UNSUPPORTED (naming why) for a
 * core without the property above. */
npred_status npred_core_receptive_field(const npred_core *core, int *lo, int *hi);

/* dst = src's structure (configuration and parameter indices, so it reads the same
 * table) for inputs of (in_h, in_w), with its own activations for max_batch
 * images (npred_core_setup). Free it with npred_core_free. Only for cores that
 * npred_core_receptive_field accepts. */
npred_status npred_core_resized(npred_core *dst, const npred_core *src, const npred_ptable *t, int in_h, int in_w,
                                int max_batch);

#endif
