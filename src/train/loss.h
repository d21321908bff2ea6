/* Training losses and their gradients with respect to the prediction.
 *
 * Legend: B = batch (trials), n = neurons. Predictions `yhat` and targets `y` are
 * (B, n) row-major float32, as a readout produces them. Sums run in double, in a
 * fixed order (fixed row chunks / per-column row order), so results do not depend on
 * the thread count.
 *
 * Every loss comes as a _forward / _backward pair:
 *   - _forward writes the reduced loss (overwrite) into `loss`, double:
 *     (1,) for NPRED_LOSS_SUM / NPRED_LOSS_MEAN, (n,) for the per-neuron reductions.
 *   - _backward ACCUMULATES dL/dyhat into `dyhat` (+=), given the upstream gradient
 *     `dloss` = dL/dloss of the same shape as `loss` (NULL means all ones). The target
 *     is treated as a constant (it is detached in the reference).
 *   - the elementwise losses the trainer uses (Poisson, exponential, Anscombe MSE) also
 *     come as _value_grad: the SUM or MEAN reduction's loss and dL/dyhat for the
 *     upstream gradient `dloss`, WRITTEN (overwrite) into `dyhat`, in one pass over
 *     the batch: the bits of _forward and of _backward into a zeroed dyhat.
 *
 * Semantics follow neuralpredictors 0.3.0 measures/modules.py (and, for GammaLoss,
 * which 0.3.0 does not have, neuralpredictors HEAD); the module named per function.
 * The reference modules support a subset of the reductions (noted per loss); every
 * loss here accepts all four. */
#ifndef NPRED_TRAIN_LOSS_H
#define NPRED_TRAIN_LOSS_H

#include <stdint.h>
#include "npred/base.h"

typedef enum {
    NPRED_LOSS_SUM,             /* sum over all elements -> (1,)     (avg=False)  */
    NPRED_LOSS_MEAN,            /* mean over all elements -> (1,)    (avg=True)   */
    NPRED_LOSS_PER_NEURON_SUM,  /* sum over the batch axis -> (n,)   (per_neuron=True, avg=False) */
    NPRED_LOSS_PER_NEURON_MEAN  /* mean over the batch axis -> (n,)  (per_neuron=True, avg=True)  */
} npred_loss_reduction;

/* Defaults of the reference modules. */
#define NPRED_POISSON_EPS 1e-12          /* PoissonLoss(bias) in 0.3.0 (HEAD: 1e-8) */
#define NPRED_EXPONENTIAL_BIAS 1e-12     /* ExponentialLoss(bias) */
#define NPRED_EXPONENTIAL_TARGET_BIAS 1e-6 /* ExponentialLoss(target_bias) */
#define NPRED_GAMMA_EPS_SHIFT 1e-10      /* GammaLoss(eps_shift_targets) */
#define NPRED_CORR_EPS 1e-12             /* Corr(eps), AvgCorr(eps) */

/* Number of loss values a reduction produces: 1 or n. */
int64_t npred_loss_size(npred_loss_reduction red, int64_t n);

/* PoissonLoss (0.3.0): l = yhat - y * log(yhat + eps); the trainer uses NPRED_LOSS_SUM
 * (avg=False), the module's default is NPRED_LOSS_MEAN. No finiteness check (0.3.0). */
npred_status npred_loss_poisson_forward(double *loss, const float *yhat, const float *y,
                                        int64_t B, int64_t n, npred_loss_reduction red, double eps);
npred_status npred_loss_poisson_backward(float *dyhat, const double *dloss, const float *yhat,
                                         const float *y, int64_t B, int64_t n,
                                         npred_loss_reduction red, double eps);
npred_status npred_loss_poisson_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                          const float *y, int64_t B, int64_t n, npred_loss_reduction red, double eps);

/* ExponentialLoss: with o = yhat + bias, t = y + target_bias: l = t / o + log(o).
 * Reference reductions: MEAN, PER_NEURON_MEAN. */
npred_status npred_loss_exponential_forward(double *loss, const float *yhat, const float *y,
                                            int64_t B, int64_t n, npred_loss_reduction red,
                                            double bias, double target_bias);
npred_status npred_loss_exponential_backward(float *dyhat, const double *dloss, const float *yhat,
                                             const float *y, int64_t B, int64_t n,
                                             npred_loss_reduction red, double bias,
                                             double target_bias);
npred_status npred_loss_exponential_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                              const float *y, int64_t B, int64_t n, npred_loss_reduction red,
                                              double bias, double target_bias);

/* AnscombeMSE: A(x) = 2 sqrt(x + 3/8); l = (A(y) - (A(yhat) - 1 / (4 sqrt(yhat))))^2.
 * Needs yhat > 0 for a finite value. Reference reductions: MEAN, PER_NEURON_MEAN. */
npred_status npred_loss_anscombe_mse_forward(double *loss, const float *yhat, const float *y,
                                             int64_t B, int64_t n, npred_loss_reduction red);
npred_status npred_loss_anscombe_mse_backward(float *dyhat, const double *dloss, const float *yhat,
                                              const float *y, int64_t B, int64_t n,
                                              npred_loss_reduction red);
npred_status npred_loss_anscombe_mse_value_grad(double *loss, float *dyhat, double dloss, const float *yhat,
                                               const float *y, int64_t B, int64_t n, npred_loss_reduction red);

/* Squared error (torch.nn.MSELoss: reduction "mean" = MEAN, "sum" = SUM):
 * l = (yhat - y)^2. */
npred_status npred_loss_mse_forward(double *loss, const float *yhat, const float *y,
                                    int64_t B, int64_t n, npred_loss_reduction red);
npred_status npred_loss_mse_backward(float *dyhat, const double *dloss, const float *yhat,
                                     const float *y, int64_t B, int64_t n,
                                     npred_loss_reduction red);

/* GammaLoss (HEAD): the model outputs (concentration a, rate b), both (B, n) and > 0;
 * l = -log Gamma(a, b).pdf(y + eps_shift)
 *   = -[a log b + (a - 1) log(y + eps_shift) - b (y + eps_shift) - lgamma(a)].
 * NPRED_ERR_VALUE if a <= 0, b <= 0, y + eps_shift <= 0 (torch's argument validation)
 * or the loss is not finite (HEAD's assert). Either gradient pointer may be NULL. */
npred_status npred_loss_gamma_forward(double *loss, const float *conc, const float *rate,
                                      const float *y, int64_t B, int64_t n,
                                      npred_loss_reduction red, double eps_shift);
npred_status npred_loss_gamma_backward(float *dconc, float *drate, const double *dloss,
                                       const float *conc, const float *rate, const float *y,
                                       int64_t B, int64_t n, npred_loss_reduction red,
                                       double eps_shift);

/* GaussianLoss (HEAD): the model outputs (mean m, variance v > 0), both (B, n);
 * l = -log N(y; m, sqrt(v)) = (y - m)^2 / (2 v) + log(v) / 2 + log(sqrt(2 pi)).
 * NPRED_ERR_VALUE if v <= 0 or a value is not finite, or the loss is not finite. */
npred_status npred_loss_gaussian_forward(double *loss, const float *mean, const float *variance, const float *y,
                                         int64_t B, int64_t n, npred_loss_reduction red);
npred_status npred_loss_gaussian_backward(float *dmean, float *dvariance, const double *dloss, const float *mean,
                                          const float *variance, const float *y, int64_t B, int64_t n,
                                          npred_loss_reduction red);

/* Correlation over the batch axis per neuron, population moments:
 *   c_j = cov(yhat_j, y_j) / sqrt((var(yhat_j) + eps) (var(y_j) + eps)).
 * avg = 0: Corr module, loss (n,) = c (no sign flip);
 * avg = 1: AvgCorr module, loss (1,) = -mean_j c_j (negated for use as a loss). */
npred_status npred_loss_corr_forward(double *loss, const float *yhat, const float *y,
                                     int64_t B, int64_t n, int avg, double eps);
npred_status npred_loss_corr_backward(float *dyhat, const double *dloss, const float *yhat,
                                      const float *y, int64_t B, int64_t n, int avg, double eps);

/* Digamma function psi(x) for x > 0 (used by the Gamma loss gradient). */
double npred_digamma(double x);

/* The shared argument check of the losses: (B, n) with B, n > 0 and a known
 * reduction; messages start with who. */
npred_status npred_loss_check_batch(const char *who, int64_t B, int64_t n, npred_loss_reduction red);

#endif
