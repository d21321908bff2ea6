/* Hermite filters of the RotationEquivariant2dCore (neuralpredictors.layers.hermite, 0.3.0).
 *
 * A HermiteConv2D layer stores coefficients c (ncoef, cin, hidden) over a fixed basis
 * of 2-D Hermite functions H (ncoef, k*up, k*up). Rotation r of the filter bank uses
 * R_r c (R_r the rotation matrix of the basis for angle 2 pi r / rot); the rotations
 * are concatenated along the output channels (channel = r * hidden + o), and the
 * basis is summed over its up x up sub-grids to the k x k kernel. In hidden layers
 * rotation r also rolls the input channels by r * (cin / rot). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cores/stacked2d.h"

/* coefficients of the radial polynomial of the Hermite function (mu, nu):
 * c_j = G(mu+nu+1) G(nu+1) (-2)^(nu-j) / (G(mu+1+j) G(1+j) G(nu+1-j)), j = 0..nu */
static double radial_poly(double mu, int nu, double r2)
{
    double acc = 0, pw = 1;
    for (int j = 0; j <= nu; j++) {
        double num = tgamma(mu + nu + 1) * tgamma(nu + 1.0) * pow(-2.0, nu - j);
        double den = tgamma(mu + 1 + j) * tgamma(1.0 + j) * tgamma(nu + 1.0 - j);
        acc += num / den * pw;
        pw *= r2;
    }
    return acc;
}

void npred_hermite_basis(double *H, char *desc, double *mu, int k, int npts)
{
    int nb = 0;
    int nu[1024];
    for (int rank = 0; rank < k; rank++) {
        /* |m| for m = -rank, -rank+2, ..., rank, sorted ascending */
        int cnt = rank + 1, vals[256];
        for (int i = 0; i < cnt; i++) vals[i] = abs(-rank + 2 * i);
        for (int i = 1; i < cnt; i++)
            for (int j = i; j > 0 && vals[j - 1] > vals[j]; j--) {
                int tmp = vals[j];
                vals[j] = vals[j - 1];
                vals[j - 1] = tmp;
            }
        int d = 0;
        if (rank % 2 == 0) desc[nb + d++] = 'z';
        for (int i = 0; i < (rank + 1) / 2; i++) {
            desc[nb + d++] = 'r';
            desc[nb + d++] = 'i';
        }
        for (int i = 0; i < cnt; i++) {
            mu[nb + i] = vals[i];
            nu[nb + i] = (rank - vals[i]) / 2;
        }
        nb += cnt;
    }
    double xmax = 2.0 * sqrt((double)k) * (1.0 - 1.0 / npts);
    double *x = malloc(sizeof(double) * (size_t)npts);
    for (int i = 0; i < npts; i++) x[i] = npts > 1 ? -xmax + 2.0 * xmax * i / (npts - 1) : -xmax;
    size_t plane = (size_t)npts * npts;
    for (int b = 0; b < nb; b++) {
        double *h = H + (size_t)b * plane, norm = 0;
        for (int i = 0; i < npts; i++)
            for (int j = 0; j < npts; j++) {
                double r2 = x[i] * x[i] + x[j] * x[j];
                double theta = atan2(x[i], x[j]);
                double g = exp(-x[i] * x[i] / 4) * exp(-x[j] * x[j] / 4);
                double amp = g * pow(r2, mu[b] / 2) * radial_poly(mu[b], nu[b], r2);
                double v = desc[b] == 'i' ? amp * sin(mu[b] * theta) : amp * cos(mu[b] * theta);
                h[(size_t)i * npts + j] = v;
                norm += v * v;
            }
        norm = sqrt(norm);
        for (size_t i = 0; i < plane; i++) h[i] /= norm;
    }
    free(x);
}

void npred_hermite_rotation(double *R, const char *desc, const double *mu, int ncoef, double angle)
{
    memset(R, 0, sizeof(double) * (size_t)ncoef * ncoef);
    for (int i = 0; i < ncoef; i++) {
        if (desc[i] == 'z') {
            R[(size_t)i * ncoef + i] = 1;
        } else if (desc[i] == 'r' && i + 1 < ncoef) {
            double c = cos(mu[i] * angle), s = sin(mu[i] * angle);
            R[(size_t)i * ncoef + i] = c;
            R[(size_t)i * ncoef + i + 1] = s;
            R[(size_t)(i + 1) * ncoef + i] = -s;
            R[(size_t)(i + 1) * ncoef + i + 1] = c;
        }
    }
}

void npred_hermite_rotated_basis(double *basis, const float *H, const float *const *Rs, int ncoef, int k, int up,
                                 int rot)
{
    int hk = k * up;
    size_t kk = (size_t)k * k;
    double *hd = calloc((size_t)ncoef * kk, sizeof(double)); /* basis summed over the up x up sub-grids */
    for (int n = 0; n < ncoef; n++)
        for (int p = 0; p < k; p++)
            for (int q = 0; q < k; q++) {
                double acc = 0;
                for (int a = 0; a < up; a++)
                    for (int b = 0; b < up; b++)
                        acc += H[((size_t)n * hk + (size_t)p * up + a) * hk + (size_t)q * up + b];
                hd[(size_t)n * kk + (size_t)p * k + q] = acc;
            }
    for (int r = 0; r < rot; r++)
        for (int m = 0; m < ncoef; m++) {
            double *dst = basis + ((size_t)r * ncoef + m) * kk;
            for (size_t j = 0; j < kk; j++) dst[j] = 0;
            for (int n = 0; n < ncoef; n++) {
                double rv = Rs[r][(size_t)n * ncoef + m];
                if (rv == 0) continue;
                const double *src = hd + (size_t)n * kk;
                for (size_t j = 0; j < kk; j++) dst[j] += rv * src[j];
            }
        }
    free(hd);
}

/* input channel of the unrolled filter that rotation r puts at channel j */
static int src_channel(int j, int r, int cin, int rot, int first)
{
    if (first || r == 0) return j;
    int per = cin / rot;
    int s = j - r * per;
    s %= cin;
    return s < 0 ? s + cin : s;
}

void npred_hermite_weights(float *w, const float *coeffs, const double *basis, int ncoef, int cin, int hidden,
                           int rot, int k, int first)
{
    size_t kk = (size_t)k * k;
    for (int r = 0; r < rot; r++)
        for (int o = 0; o < hidden; o++)
            for (int j = 0; j < cin; j++) {
                int i = src_channel(j, r, cin, rot, first);
                float *dst = w + (((size_t)r * hidden + o) * cin + j) * kk;
                for (size_t pq = 0; pq < kk; pq++) {
                    double acc = 0;
                    for (int m = 0; m < ncoef; m++)
                        acc += basis[((size_t)r * ncoef + m) * kk + pq] * coeffs[((size_t)m * cin + i) * hidden + o];
                    dst[pq] = (float)acc;
                }
            }
}

void npred_hermite_weights_backward(float *dcoeffs, const float *dw, const double *basis, int ncoef, int cin,
                                    int hidden, int rot, int k, int first)
{
    size_t kk = (size_t)k * k;
    for (int m = 0; m < ncoef; m++)
        for (int i = 0; i < cin; i++)
            for (int o = 0; o < hidden; o++) {
                double acc = 0;
                for (int r = 0; r < rot; r++) {
                    /* the output channel j that reads input channel i under rotation r */
                    int j = (first || r == 0) ? i : (i + r * (cin / rot)) % cin;
                    const float *g = dw + (((size_t)r * hidden + o) * cin + j) * kk;
                    const double *bs = basis + ((size_t)r * ncoef + m) * kk;
                    for (size_t pq = 0; pq < kk; pq++) acc += bs[pq] * g[pq];
                }
                dcoeffs[((size_t)m * cin + i) * hidden + o] += (float)acc;
            }
}
