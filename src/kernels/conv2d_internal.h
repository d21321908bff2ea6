/* Shared by conv2d.c and depthwise.c; not part of the kernel API. */
#ifndef NPRED_KERNELS_CONV2D_INTERNAL_H
#define NPRED_KERNELS_CONV2D_INTERNAL_H

#include <stddef.h>
#include "kernels/conv2d.h"

/* Workspace alignment: every per-thread slice starts on a 64-byte boundary. */
#define NPRED_CONV2D_ALIGN 64

static inline size_t npred_conv2d_round_bytes(size_t floats)
{
    size_t b = floats * sizeof(float);
    return (b + NPRED_CONV2D_ALIGN - 1) / NPRED_CONV2D_ALIGN * NPRED_CONV2D_ALIGN;
}

/* db[o] += sum over n, pixels of dy[n, o, :]; OpenMP over o, independent of the
 * thread count. */
void npred_conv2d_bias_grad(float *db,       // (O)
                            const float *dy, // (N, O, P)
                            int n, int o, size_t pixels);
/* npred_conv2d_backward_depthwise with dx written instead of added to
 * (npred_conv2d_backward_set). */
npred_status npred_conv2d_backward_depthwise_set(float *dx, float *dw, float *db, const float *dy, const float *x,
                                                 const float *w, const npred_conv2d_params *p, void *ws,
                                                 size_t ws_bytes);
/* Per-thread bytes of the depthwise kernel (forward + backward). */
size_t npred_conv2d_depthwise_thread_bytes(const npred_conv2d_params *p);
/* Threads to use given the workspace: min(omp_get_max_threads(), limit,
 * ws_bytes / per_thread); 0 if not even one fits. */
int npred_conv2d_threads(size_t per_thread, size_t ws_bytes, int limit);

#endif
