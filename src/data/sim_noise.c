/* Simulator, noise: Poisson and gamma draws around the noise-free rates, and the
 * oracles the noise implies (jackknife over repeats; expected single-trial
 * correlation with the rate). */
#include "data/sim_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Poisson(lam): Knuth's product method on pieces of at most 20 (sum of Poissons). */
double sim_draw_poisson(npred_rng *r, double lam)
{
    double k = 0;
    while (lam > 0) {
        double l = lam > 20.0 ? 20.0 : lam;
        lam -= l;
        double lim = exp(-l), p = 1.0;
        int c = -1;
        do {
            c++;
            p *= npred_rng_uniform(r);
        } while (p > lim);
        k += c;
    }
    return k;
}

/* Gamma(shape k, scale 1): Marsaglia & Tsang (2000), with the k < 1 boost. */
double sim_draw_gamma(npred_rng *r, double k)
{
    double boost = 1.0;
    if (k < 1.0) {
        double u;
        do u = npred_rng_uniform(r); while (u <= 0.0);
        boost = pow(u, 1.0 / k);
        k += 1.0;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = npred_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = npred_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return boost * d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return boost * d * v;
    }
}

/* NP measures.oracle_corr_jackknife: every repeat against the mean of the other
 * repeats of its image, correlated over all test trials (std ddof 0, +1e-8). */
void sim_oracle_jackknife(double *out /* (n) */, const float *resp /* (N, n) */, int n,
                          const int64_t *groups /* (n_img, reps) file indices */, int n_img, int reps)
{
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        size_t T = (size_t)n_img * reps;
        double sx = 0, so = 0, sxx = 0, soo = 0, sxo = 0;
        for (int i = 0; i < n_img; i++) {
            double tot = 0;
            for (int q = 0; q < reps; q++) tot += resp[(size_t)groups[(size_t)i * reps + q] * n + j];
            for (int q = 0; q < reps; q++) {
                double x = resp[(size_t)groups[(size_t)i * reps + q] * n + j], o = (tot - x) / (reps - 1);
                sx += x;
                so += o;
            }
        }
        double mx = sx / T, mo = so / T;
        for (int i = 0; i < n_img; i++) {
            double tot = 0;
            for (int q = 0; q < reps; q++) tot += resp[(size_t)groups[(size_t)i * reps + q] * n + j];
            for (int q = 0; q < reps; q++) {
                double x = resp[(size_t)groups[(size_t)i * reps + q] * n + j], o = (tot - x) / (reps - 1);
                sxx += (x - mx) * (x - mx);
                soo += (o - mo) * (o - mo);
                sxo += (x - mx) * (o - mo);
            }
        }
        double dx = sqrt(sxx / T) + 1e-8, d_o = sqrt(soo / T) + 1e-8;
        out[j] = T ? (sxo / T) / (dx * d_o) : 0.0;
    }
}

/* Expected correlation of one noisy trial with its noise-free rate, over the test
 * trials: sqrt(Var(lam) / (Var(lam) + E[noise variance])). */
void sim_oracle_rate(double *out /* (n) */, const float *lam /* (T, n) */, size_t T, int n,
                     const npred_sim_params *p)
{
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        double s = 0, nv = 0, ss = 0;
        for (size_t t = 0; t < T; t++) s += lam[t * n + j];
        double mean = T ? s / T : 0;
        for (size_t t = 0; t < T; t++) {
            double l = lam[t * n + j];
            ss += (l - mean) * (l - mean);
            nv += p->noise == NPRED_SIM_NOISE_POISSON ? l : p->noise == NPRED_SIM_NOISE_GAMMA ? l * l / p->gamma_shape : 0;
        }
        double var = T ? ss / T : 0;
        nv = T ? nv / T : 0;
        out[j] = var > 0 ? sqrt(var / (var + nv)) : 0.0;
    }
}
