/* Linear layer through OpenBLAS (see linear.h). Row-major throughout. */
#include "kernels/linear.h"

#include <cblas.h>
#include <stddef.h>

static npred_status check_dims(const char *fn, int B, int n_in, int n_out)
{
    if (B <= 0 || n_in <= 0 || n_out <= 0)
        return npred_errorf(NPRED_ERR_ARG, "%s: dims (B, in, out) = (%d, %d, %d) must be positive", fn,
                            B, n_in, n_out);
    return NPRED_OK;
}

npred_status npred_linear_forward(float *y, const float *x, const float *w, const float *b, int B,
                                  int n_in, int n_out)
{
    const char *fn = "npred_linear_forward";
    npred_status s = check_dims(fn, B, n_in, n_out);
    if (s) return s;
    if (!y || !x || !w) return npred_errorf(NPRED_ERR_ARG, "%s: y, x and w are required", fn);
    if (b)
        for (int r = 0; r < B; r++)
            for (int o = 0; o < n_out; o++) y[(size_t)r * n_out + o] = b[o];
    /* y (B, O) = x (B, I) * w^T (I, O) [+ y] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, 1.0f, x, n_in, w, n_in,
                b ? 1.0f : 0.0f, y, n_out);
    return NPRED_OK;
}

npred_status npred_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *w, int B, int n_in, int n_out)
{
    const char *fn = "npred_linear_backward";
    npred_status s = check_dims(fn, B, n_in, n_out);
    if (s) return s;
    if (!dy) return npred_errorf(NPRED_ERR_ARG, "%s: dy is required", fn);
    if (dx && !w) return npred_errorf(NPRED_ERR_ARG, "%s: dx needs w", fn);
    if (dw && !x) return npred_errorf(NPRED_ERR_ARG, "%s: dw needs x", fn);
    /* dx (B, I) += dy (B, O) * w (O, I) */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0f, dy, n_out, w, n_in,
                    1.0f, dx, n_in);
    /* dw (O, I) += dy^T (O, B) * x (B, I) */
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, 1.0f, dy, n_out, x, n_in,
                    1.0f, dw, n_in);
    if (db)
        for (int o = 0; o < n_out; o++) {
            double acc = 0;
            for (int r = 0; r < B; r++) acc += dy[(size_t)r * n_out + o];
            db[o] += (float)acc;
        }
    return NPRED_OK;
}
