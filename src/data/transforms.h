/* transforms: per-sample kernels of the static_loader pipeline (neuralpredictors
 * 0.3.0 data/transforms.py), over raw float pointers.
 *
 * C/H/W = image channels/height/width, Ho/Wo = rescaled height/width. */
#ifndef NPRED_DATA_TRANSFORMS_H
#define NPRED_DATA_TRANSFORMS_H

#include <stddef.h>
#include <stdint.h>
#include "npred/base.h"
#include "npred/data.h"

/* npred_rescale_size (skimage rescale output length) is public: npred/data.h */

/* 1-D plan of linear resampling n_in -> n_out as skimage 0.19 resize does it
 * (scipy.ndimage.zoom, order 1, grid_mode=True, mode "mirror" = skimage
 * "reflect"): output o samples input coordinate c = (o + 0.5) * n_in / n_out - 0.5,
 * mirrored into [0, n_in - 1]; out[o] = (1 - w[o]) * in[i0[o]] + w[o] * in[i1[o]]. */
typedef struct {
    int n_in, n_out;
    int *i0, *i1;   /* (n_out,) */
    double *w;      /* (n_out,) weight of i1 */
} npred_resample_plan;

npred_status npred_resample_plan_init(npred_resample_plan *p, int n_in, int n_out);
void npred_resample_plan_free(npred_resample_plan *p);

/* Bilinear rescale of each channel (the product of the two 1-D plans, in
 * double, rounded to float). ScaleInputs(clip=True) clips to the input range,
 * which a convex combination never leaves, so no clip pass is made.
 * out != in. When both plans are identities this is a copy. */
void npred_rescale_bilinear(float *out,        // (C, Ho, Wo)
                            const float *in,   // (C, H, W)
                            int C, const npred_resample_plan *ph, const npred_resample_plan *pw);

/* x = (x - mean) / std, in float32 as NumPy computes it. */
void npred_tf_zscore(float *x, size_t n, float mean, float std);
/* x[i] = (x[i] - mean[i]) / std[i] */
void npred_tf_zscore_vec(float *x, const float *mean, const float *std, size_t n);
/* x[i] *= p[i] */
void npred_tf_scale_vec(float *x, const float *p, size_t n);

/* Append k constant planes: out (C + k, H, W) = [img; v[j] * ones(H, W)].
 * out may equal img when the channels are laid out in place (out + C*H*W free). */
void npred_tf_add_planes(float *out,        // (C + k, H, W)
                         const float *img,  // (C, H, W)
                         int C, int H, int W, const float *v /* (k,) */, int k);

/* out (n_sel, H, W) = img[sel], a negative index counting from the end of img's
 * C channels as in Python; the caller has checked -C <= sel[j] < C. */
void npred_tf_select_channels(float *out, const float *img /* (C, H, W) */, int C, int HW, const int64_t *sel,
                              int n_sel);

/* out (n_sel,) = x[idx] (np.take along the last axis) */
void npred_tf_take(float *out, const float *x, const int64_t *idx, int64_t n_sel);

/* NeuroNormalizer response precision: with t = 0.01 * mean(std) (float32 as
 * NumPy: the mean is taken in double here, then rounded to float),
 * p[i] = 1/std[i] if std[i] > t else 1/t. Returns t. */
float npred_tf_response_precision(float *p, const float *std, size_t n);

#endif
