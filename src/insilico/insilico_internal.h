/* Helpers shared by the in-silico modules (public API: include/npred/insilico.h). */
#ifndef NPRED_INSILICO_INTERNAL_H
#define NPRED_INSILICO_INTERNAL_H

#include "npred/model.h"

/* pupil_center (2) and behavior (k) repeated for N images (*pc / *beh NULL when the
 * model does not take them); an error naming the missing input otherwise. */
npred_status npred_insilico_repeat(const npred_model *m, const float *pupil_center, const float *behavior, int N,
                                   float **pc, float **beh);

/* Jitter (mei.legacy.ops.Jitter) of one image (C, H, W) by (jy, jx) with reflect
 * padding: out[r][c] = x[refl(r - jy)][refl(c - jx)]; and its adjoint (dx overwritten). */
void npred_mei_jitter_forward(float *out, const float *x, int C, int H, int W, int jy, int jx);
void npred_mei_jitter_backward(float *dx, const float *dout, int C, int H, int W, int jy, int jx);

#endif
