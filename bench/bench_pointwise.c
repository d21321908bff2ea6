/* The GEMM convolutions of the SENSORIUM baseline core one image at a time, as the
 * depth-separable block runs them (ds_forward / ds_backward in cores/stacked2d.c:
 * one conv2d call per image, batch size 1, one thread), on one thread:
 *
 *   - the 1x1 64->64 convolution on 28x56: forward, and the backward as the block
 *     calls it (input gradient and weight gradient, no bias), split into its two
 *     GEMMs (dW = dY X^T, dX = W^T dY) with the input gradient accumulated into a
 *     zeroed buffer or written;
 *   - layer 0's 9x9 1->64 convolution on 36x64 (output 28x56): forward and the
 *     weight gradient (the core never needs the gradient of its input).
 *
 * Each figure is the thread CPU time per image, the minimum over the repetitions
 * of a pass over NIMG images, in three columns: one image repeated (its operands
 * stay in L2); x of NIMG images with dy and dx always the same (hot, as the block's
 * per-thread scratch, while x is the stored activation of each image); everything
 * of NIMG images (from memory). The machine is shared: quote the load average. */
#include "kernels/conv2d.h"
#include "kernels/gemm.h"
#include "bench_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NIMG 32
#define REPS 9

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
    npred_conv2d_params p; /* n = 1 */
    size_t nx, ny;         /* floats per image */
    float *x, *y, *dy, *dx, *w, *dw;
    void *ws;
    size_t ws_bytes;
} op;

enum { FWD, BWD, BWD_SET, BWD_DW, NT, NN_ACC, NN_SET, FUSED_SET };

/* image i: x (and y) of image i; dy and dx of image i, or (hot) always image 0's,
 * as the block's per-thread scratch */
static void one(op *o, int kind, int i, int hot)
{
    const npred_conv2d_params *p = &o->p;
    const int j = hot ? 0 : i;
    const float *x = o->x + i * o->nx, *dy = o->dy + j * o->ny;
    float *y = o->y + i * o->ny, *dx = o->dx + j * o->nx;
    const int pix = (int)(o->ny / (size_t)p->o), K = p->c * p->kh * p->kw;
    switch (kind) {
    case FWD: BENCH_OK(npred_conv2d_forward(y, x, o->w, NULL, p, o->ws, o->ws_bytes)); break;
    case BWD: /* as ds_backward: the input gradient zeroed, then accumulated into */
        memset(dx, 0, o->nx * sizeof *dx);
        BENCH_OK(npred_conv2d_backward(dx, o->dw, NULL, dy, x, o->w, p, o->ws, o->ws_bytes));
        break;
    case BWD_SET: BENCH_OK(npred_conv2d_backward_set(dx, o->dw, NULL, dy, x, o->w, p, o->ws, o->ws_bytes)); break;
    case BWD_DW: BENCH_OK(npred_conv2d_backward(NULL, o->dw, NULL, dy, x, o->w, p, o->ws, o->ws_bytes)); break;
    case NT: npred_gemm_nt(p->o, K, pix, dy, pix, x, pix, o->dw, K); break;
    case NN_ACC:
        memset(dx, 0, o->nx * sizeof *dx);
        npred_gemm_nn(K, pix, p->o, o->w, 1, K, dy, pix, dx, pix, 1);
        break;
    case NN_SET: npred_gemm_nn(K, pix, p->o, o->w, 1, K, dy, pix, dx, pix, 0); break;
    case FUSED_SET: npred_gemm_pointwise_backward(p->o, K, pix, o->w, dy, x, o->dw, dx, 0); break;
    default: break;
    }
}

/* microseconds per image: minimum over REPS passes of NIMG calls; mode 0: one
 * image repeated, 1: x of NIMG images, dy and dx hot, 2: all of NIMG images */
static double time_kind(op *o, int kind, int mode)
{
    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        double t0 = cpu_now();
        for (int i = 0; i < NIMG; i++) one(o, kind, mode ? i : 0, mode < 2);
        double t = cpu_now() - t0;
        if (t < best) best = t;
    }
    return 1e6 * best / NIMG;
}

static void report(op *o, const char *name, int kind, double flop)
{
    double t[3];
    for (int mode = 0; mode < 3; mode++) t[mode] = time_kind(o, kind, mode);
    printf("  %-38s %7.1f %7.1f %7.1f us | %5.0f %5.0f %5.0f GFLOP/s\n", name, t[0], t[1], t[2], flop / t[0] / 1e3,
           flop / t[1] / 1e3, flop / t[2] / 1e3);
}

static op make(int c, int h, int w, int o_, int k)
{
    op o;
    memset(&o, 0, sizeof o);
    o.p = npred_conv2d_params_square(1, c, h, w, o_, k, 1, 0, 1, 1);
    int oh, ow;
    BENCH_OK(npred_conv2d_output_size(&o.p, &oh, &ow));
    o.nx = (size_t)c * h * w;
    o.ny = (size_t)o_ * oh * ow;
    o.x = bench_rnd(NIMG * o.nx, 1), o.dx = bench_rnd(NIMG * o.nx, 2);
    o.y = bench_rnd(NIMG * o.ny, 3), o.dy = bench_rnd(NIMG * o.ny, 4);
    o.w = bench_rnd((size_t)o_ * c * k * k, 5), o.dw = bench_rnd((size_t)o_ * c * k * k, 6);
    o.ws_bytes = npred_conv2d_workspace_size_threads(&o.p, NPRED_CONV2D_ALGO_GEMM, 1);
    o.ws = malloc(o.ws_bytes ? o.ws_bytes : 1);
    if (!o.ws) {
        fprintf(stderr, "bench_pointwise: out of memory for the workspace\n");
        exit(1);
    }
    return o;
}

static void drop(op *o)
{
    free(o->x), free(o->dx), free(o->y), free(o->dy), free(o->w), free(o->dw), free(o->ws);
}

int main(void)
{
    printf("GEMM convolutions one image per call, 1 thread, thread CPU time per image, min of %d passes of %d "
           "images (AVX-512 kernels: %s)\n",
           REPS, NIMG, npred_gemm_avx512_active() ? "yes" : "no");
    op a = make(64, 28, 56, 64, 1);
    const double f1 = 2.0 * 64 * 64 * 1568;
    printf("1x1 64->64 at 28x56 (%.1f MFLOP per GEMM); columns: cache (one image), x streamed (x of %d images, "
           "dy and dx hot), all streamed\n",
           f1 / 1e6, NIMG);
    report(&a, "forward Y = W X", FWD, f1);
    report(&a, "backward dX += W^T dY (zeroed), dW", BWD, 2 * f1);
    report(&a, "backward dX = W^T dY (written), dW", BWD_SET, 2 * f1);
    report(&a, "  dW = dY X^T (nt)", NT, f1);
    report(&a, "  dX = W^T dY into zeroed dX", NN_ACC, f1);
    report(&a, "  dX = W^T dY written", NN_SET, f1);
    report(&a, "  both in one pass, dX written", FUSED_SET, 2 * f1);
    drop(&a);
    op b = make(1, 36, 64, 64, 9);
    const double f9 = 2.0 * 64 * 81 * 1568;
    printf("9x9 1->64 at 36x64 -> 28x56 (%.1f MFLOP per GEMM)\n", f9 / 1e6);
    report(&b, "forward (im2col, nn k 81)", FWD, f9);
    report(&b, "backward dW only (im2col, nt l 81)", BWD_DW, f9);
    drop(&b);
    return 0;
}
