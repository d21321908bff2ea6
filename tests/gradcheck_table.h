/* Finite-difference check of every gradient of a parameter table (tests of the video
 * cores): central differences of a double-precision reference loss on up to `per`
 * evenly spread elements of each trainable entry (double copies p[entry]) and of the
 * input x (nx doubles, analytic gradient dx); an element passes when
 * |analytic - fd| <= 2e-3 |fd| + 2e-5 max|all analytic parameter gradients|. */
#ifndef NPRED_TEST_GRADCHECK_TABLE_H
#define NPRED_TEST_GRADCHECK_TABLE_H

#include <math.h>

#include "gradcheck.h"
#include "nn/params.h"

static inline void gc_check_table(const npred_ptable *t, double **p, double *x, size_t nx, const float *dx, size_t per,
                                  gc_loss_fn loss, void *ctx)
{
    double gmax = 0;
    for (size_t i = 0; i < t->n_params; i++) gmax = fmax(gmax, fabs(t->grad[i]));
    for (int e = -1; e < t->n; e++) {
        const npred_param *pa = e >= 0 ? &t->items[e] : NULL;
        if (pa && pa->is_buffer) continue;
        size_t n = pa ? pa->count : nx;
        double *v = pa ? p[e] : x;
        const float *g = pa ? npred_ptable_gradptr(t, e) : dx;
        size_t step = n > per ? n / per : 1;
        int bad = 0;
        for (size_t i = 0; i < n; i += step) {
            double fd;
            gc_fd(&fd, v + i, 1, 1e-5, loss, ctx);
            int ok = fabs(g[i] - fd) <= 2e-3 * fabs(fd) + 2e-5 * gmax;
            if (!ok && !bad++)
                CHECK(0, "%s[%zu]: analytic %.8g, finite differences %.8g", pa ? pa->name : "input", i, g[i], fd);
        }
        CHECK(bad == 0, "%s: %d of the checked elements differ from finite differences", pa ? pa->name : "input", bad);
    }
}

#endif
