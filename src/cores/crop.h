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



/* ---- the cone: each layer computed only where the last layer's taps need it ----
 * Around a 2x2 tap region of the core output, layer l is computed on the region the
 * layers above read (2 + the sum of the later layers' reach per axis, clamped into
 * the map), each conv run without padding on its input region zero-filled where the
 * region leaves the map. For the SENSORIUM baseline that is 20, 14, 8, 2 rows and
 * columns for the four layers instead of a 20x20 window at every layer. Eval mode only
 * (BatchNorm with running statistics). Supported: layer 0 and hidden layers plain or
 * depth-separable, no skip connections, the last layer alone in `stack`, no Bias2D /
 * Scale2D layer (independent_bn_bias or plain BatchNorm), besides what
 * npred_core_receptive_field needs. One cone serves one image at a time. */
typedef struct npred_core_cone npred_core_cone;

/* NPRED_ERR_UNSUPPORTED for a core outside the cases above. */
npred_status npred_core_cone_create(npred_core_cone **out, const npred_core *core);
void npred_core_cone_free(npred_core_cone *c);
/* Number of region starts per axis that npred_core_cone_place writes (layers + 1). */
int npred_core_cone_levels(const npred_core_cone *c);
/* The regions of every layer for taps whose first row / column on the core output is
 * ty / tx (ty + 1, tx + 1 the second; either may lie outside the map): starts oy, ox
 * (levels each). The last level's region holds the taps: out_h x out_w of
 * npred_core_cone_output_size, starting at oy[levels - 1], ox[levels - 1]. */
void npred_core_cone_place(const npred_core_cone *c, int ty, int tx, int *oy, int *ox);
void npred_core_cone_output_size(const npred_core_cone *c, int *h, int *w);
/* Forward of one image (in_c, H, W) for the regions oy, ox: returns the last layer's
 * region (out_c, out_h, out_w), valid until the next call. */
npred_status npred_core_cone_forward(npred_core_cone *c, const npred_ptable *t, const float *image, const int *oy,
                                     const int *ox, const float **out);
/* Backward of the last forward: dout (out_c, out_h, out_w) -> dimage (in_c, H, W) +=
 * (only the first layer's input region is touched). */
npred_status npred_core_cone_backward(npred_core_cone *c, const npred_ptable *t, const float *dout, float *dimage);
#endif
