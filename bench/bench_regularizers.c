/* Regularizer value + gradient on the shapes the cores use. Serial kernels;
 * numbers on a shared, busy machine are noisy. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/regularizers.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

enum { L2, L2NORM, GAUSS, GROUP };

static void bench(const char *label, int kind, int o, int i, int kh, int kw, int pad, int f)
{
    size_t n = (size_t)o * i * kh * kw;
    float *w = malloc(n * sizeof *w), *dw = calloc(n, sizeof *dw);
    for (size_t k = 0; k < n; k++)
        w[k] = (float)((k * 2654435761u) % 2001) / 1000.0f - 1.0f;
    double v = 0, sink = 0, t0 = now(), t = 0;
    int reps = 0;
    while ((t = now() - t0) < 1.0) {
        npred_status st = NPRED_OK;
        switch (kind) {
        case L2: st = npred_reg_laplace_l2(&v, dw, w, 1.0, o, i, kh, kw, pad, f, true); break;
        case L2NORM: st = npred_reg_laplace_l2norm(&v, dw, w, 1.0, o, i, kh, kw, pad, false); break;
        case GAUSS:
            st = npred_reg_gaussian_laplace_l2(&v, dw, w, 1.0, o, i, kh, kw, pad, 0.0, false);
            break;
        default: st = npred_reg_group_sparsity(&v, dw, w, 1.0, o, i, kh, kw); break;
        }
        if (st != NPRED_OK) {
            fprintf(stderr, "%s: %s\n", label, npred_last_error());
            exit(1);
        }
        sink += v;
        reps++;
    }
    printf("%-44s %9.1f us/call (value + grad, %d calls)\n", label, 1e6 * t / reps, reps);
    free(w);
    free(dw);
    (void)sink;
}

int main(void)
{
    bench("LaplaceL2 3x3 pad 0, W (64,1,9,9)", L2, 64, 1, 9, 9, 0, 3);
    bench("LaplaceL2norm pad 1, W (64,1,9,9)", L2NORM, 64, 1, 9, 9, 1, 3);
    bench("GaussianLaplaceL2 pad 1, W (64,1,9,9)", GAUSS, 64, 1, 9, 9, 1, 3);
    bench("LaplaceL2 7x7 pad 3, W (64,3,13,13)", L2, 64, 3, 13, 13, 3, 7);
    bench("group sparsity, W (64,64,7,7)", GROUP, 64, 64, 7, 7, 0, 0);
    return 0;
}
