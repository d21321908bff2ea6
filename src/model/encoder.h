/* Distribution encoders of neuralpredictors' git head (layers/encoders/
 * zero_inflation_encoders.py, distribution_encoders.py): the head that turns the
 * outputs of a GeneralizedFullGaussianReadout2d (P per neuron, readout cfg.params_n)
 * and per-neuron parameters into the parameters of a response distribution.
 *
 * Outputs (K slots, each (B, n)), in the order the reference returns them:
 *   ZIGEncoder      K 4: theta = elu(logtheta) + 1 + offset,
 *                        k     = elu(logk) + 1 (+ 1.1 without zero_thresholds) + offset,
 *                        loc   = exp(logloc),  q = sigmoid(q) * 0.99999 + offset
 *   ZILEncoder      K 4: mu = mu, sigma2 = elu(logsigma2) + 1 + offset, loc, q as ZIG
 *   GammaEncoder    K 2: concentration = elu(x0) + 1 + eps (<= max_concentration),
 *                        rate = elu(x1) + 1 + eps (>= min_rate)
 *   GaussianEncoder K 2: mean = x0, variance = elu(x1) + 1 + eps
 * A value is "image dependent" when it comes from the readout; otherwise it is a
 * parameter "<name>.<data_key>" of shape (1, n) repeated over the batch (ZIG/ZIL:
 * logloc, q, logtheta, logk, mu, logsigma2; Gamma: concentration_before_nonlinearity,
 * rate_before_nonlinearity). ZIG/ZIL readouts give, in this order, the image-dependent
 * ones of logloc, q, then logtheta, logk (ZIG) or logsigma2, mu (ZIL); Gamma and
 * Gaussian readouts always give two values (Gamma ignores a readout value whose
 * parameter replaces it, as the reference does). A fixed zero threshold makes logloc a
 * buffer (the reference's requires_grad=False parameter). */
#ifndef NPRED_MODEL_ENCODER_H
#define NPRED_MODEL_ENCODER_H

#include <cJSON.h>
#include <stdint.h>

#include "base/json.h"
#include "nn/params.h"

typedef enum {
    NPRED_ENC_FIRING_RATE = 0, /* FiringRateEncoder: ELU(x + elu_offset) + 1 */
    NPRED_ENC_ZIG,
    NPRED_ENC_ZIL,
    NPRED_ENC_GAMMA,
    NPRED_ENC_GAUSSIAN
} npred_encoder_type;

#define NPRED_ENC_MAXK 4

typedef struct {
    npred_encoder_type type;
    int dep[NPRED_ENC_MAXK];  /* per output slot: from the readout (1) or a parameter (0) */
    double offset;            /* ZIG/ZIL `offset`, Gamma/Gaussian `eps` */
    int has_zero_threshold;   /* zero_thresholds: one number for every session, or null */
    double zero_threshold;
    int has_init_k;           /* init_ks: one number for every session, or null (0) */
    double init_k;
    int has_max_concentration, has_min_rate;
    double max_concentration, min_rate;
} npred_encoder_config;

/* The slab of a zero-inflated distribution (ZIG: theta, k; ZIL: mean, variance of log(y - loc)) */
typedef enum { NPRED_ZI_GAMMA, NPRED_ZI_LOGNORMAL } npred_zi_slab;

void npred_encoder_config_default(npred_encoder_config *c, npred_encoder_type type);
const char *npred_encoder_name(npred_encoder_type type);
/* Reads one key of the "encoder" section other than elu_offset and type; 1 if it was
 * one of this encoder's keys (errors in r->st), 0 if unknown. */
int npred_encoder_key(npred_json_reader *r, const cJSON *e, npred_encoder_config *c);
/* Adds type and this encoder's keys to the resolved "encoder" object. */
void npred_encoder_to_json(cJSON *en, const npred_encoder_config *c);
npred_status npred_encoder_check(const npred_encoder_config *c, const char *where);

int npred_encoder_outputs(const npred_encoder_config *c);        /* K (1 for FiringRateEncoder) */
int npred_encoder_readout_params(const npred_encoder_config *c); /* P, 0 for FiringRateEncoder */
/* name of output slot s ("theta", "k", "loc", "q", "mu", "sigma2", ...) */
const char *npred_encoder_output_name(const npred_encoder_config *c, int s);

/* Declare the per-neuron parameters of one session (key "" = no ".<key>" suffix). */
npred_status npred_encoder_declare(const npred_encoder_config *c, npred_ptable *t, const char *key, int n,
                                   int p[NPRED_ENC_MAXK]);
void npred_encoder_init(const npred_encoder_config *c, npred_ptable *t, const int p[NPRED_ENC_MAXK], int n,
                        npred_rng *rng);
/* raw, dist (K, B, n): the values before and after the output nonlinearities; y (P, B, n)
 * the readout's outputs; mean (B, n) the fitted mean (may be NULL). */
void npred_encoder_forward(const npred_encoder_config *c, const npred_ptable *t, const int p[NPRED_ENC_MAXK],
                           const float *y, int B, int n, float *raw, float *dist, float *mean);
/* ddist (K, B, n) -> dy (P, B, n) (overwritten) and the per-neuron parameters' gradients.
 * The derivative of loc = exp(logloc) is the loc in dist (so a loss that clamps loc in
 * dist, as the reference does through .data, gets the reference's gradient). */
void npred_encoder_backward(const npred_encoder_config *c, npred_ptable *t, const int p[NPRED_ENC_MAXK],
                            const float *ddist, int B, int n, const float *raw, const float *dist, float *dy);
/* mean / variance (count) of the distribution (HEAD predict_mean / predict_variance,
 * ZIL with the documented formula, see docs/encoders.md); either may be NULL. */
void npred_encoder_fitted(const npred_encoder_config *c, const float *dist, int64_t count, float *mean,
                          float *variance);
/* ddist (K, count) = dmean * d mean / d dist (overwritten) */
void npred_encoder_mean_backward(const npred_encoder_config *c, const float *dist, const float *dmean,
                                 int64_t count, float *ddist);
/* ZIG/ZIL fitted mean and variance from slab parameters p1, p2, loc and q (count). */
void npred_zi_fitted(float *mean, float *variance, npred_zi_slab slab, const float *p1, const float *p2,
                     const float *loc, const float *q, int64_t count);

#endif
