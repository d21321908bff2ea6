/* Central finite differences on a double-precision reference loss, for gradient tests.
 *
 *   double loss(void *ctx);                      // reads the double arrays in ctx
 *   gc_fd(g, p, n, 1e-6, loss, ctx);             // g[i] = dloss/dp[i], p is a ctx array
 *   gc_check("dx", dx_float, g, n, rtol, atol);  // CHECKs |a - g| <= atol + rtol*|g|
 */
#ifndef NPRED_TEST_GRADCHECK_H
#define NPRED_TEST_GRADCHECK_H

#include <stdlib.h>
#include "harness.h"

typedef double (*gc_loss_fn)(void *ctx);

/* g[i] = (loss(p + h e_i) - loss(p - h e_i)) / 2h; p is restored. */
static inline void gc_fd(double *g, double *p, size_t n, double h, gc_loss_fn loss, void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + h;
        double lp = loss(ctx);
        p[i] = keep - h;
        double lm = loss(ctx);
        p[i] = keep;
        g[i] = (lp - lm) / (2 * h);
    }
}

/* Compare a float analytic gradient with a double numeric one. */
static inline int gc_check(const char *what, const float *analytic, const double *numeric, size_t n,
                           double rtol, double atol)
{
    double *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = analytic[i];
    int ok = th_close_f64(what, a, numeric, n, rtol, atol);
    free(a);
    return ok;
}

/* Fill with uniform values in [lo, hi) from the harness generator. */
static inline void gc_fill(float *v, size_t n, double lo, double hi, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * 0.5 * (th_rand(state) + 1.0));
}

static inline double *gc_to_f64(const float *v, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

#endif
