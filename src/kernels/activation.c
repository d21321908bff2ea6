/* Elementwise activations (see activation.h). Each loop is a branch-free select over
 * independent elements. The ELU family computes exp/expm1 inline (below) so its loops
 * vectorise; tanh, sigmoid, softplus and exp call libm (scalar without -ffast-math). */
#include "kernels/activation.h"
#include "kernels/fast_exp.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Below this many elements a loop runs on the calling thread. */
#define PAR_MIN 32768
#define EACH _Pragma("omp parallel for simd schedule(static) if (n >= PAR_MIN)") for (size_t i = 0; i < n; i++)

void npred_elu_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = x[i] > 0 ? x[i] : fast_expm1(x[i]);
}

void npred_elu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    EACH dx[i] += x[i] > 0 ? dy[i] : dy[i] * fast_exp(x[i]);
}

void npred_adaptive_elu_forward(float *y, const float *x, size_t n, float xshift, float yshift)
{
    EACH {
        float t = x[i] - xshift;
        y[i] = (t > 0 ? t : fast_expm1(t)) + yshift;
    }
}

void npred_adaptive_elu_backward(float *dx, const float *dy, const float *x, size_t n, float xshift)
{
    EACH {
        float t = x[i] - xshift;
        dx[i] += t > 0 ? dy[i] : dy[i] * fast_exp(t);
    }
}

void npred_elu1_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = (x[i] > 0 ? x[i] : fast_expm1(x[i])) + 1.0f;
}

void npred_elu1_offset_forward(float *y, float *z, const float *x, float off, size_t n)
{
    EACH {
        const float v = x[i] + off;
        z[i] = v;
        y[i] = v > 0 ? v + 1.0f : fast_exp(v);
    }
}

void npred_elu1_backward(float *dx, const float *dy, const float *x, size_t n)
{
    npred_elu_backward(dx, dy, x, n);
}

void npred_tanh_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = tanhf(x[i]);
}

void npred_tanh_backward(float *dx, const float *dy, const float *y, size_t n)
{
    EACH dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}

void npred_sigmoid_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void npred_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n)
{
    EACH dx[i] += dy[i] * (1.0f - y[i]) * y[i];
}

void npred_relu_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = x[i] < 0 ? 0.0f : x[i]; /* NaN passes through, as in torch */
}

void npred_relu_backward(float *dx, const float *dy, const float *y, size_t n)
{
    EACH dx[i] += y[i] > 0 ? dy[i] : 0.0f;
}

void npred_softplus_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = x[i] > NPRED_SOFTPLUS_THRESHOLD ? x[i] : log1pf(expf(x[i]));
}

void npred_softplus_backward(float *dx, const float *dy, const float *x, size_t n)
{
    EACH {
        float z = expf(x[i]);
        dx[i] += x[i] > NPRED_SOFTPLUS_THRESHOLD ? dy[i] : dy[i] * z / (z + 1.0f);
    }
}

void npred_exp_forward(float *y, const float *x, size_t n)
{
    EACH y[i] = expf(x[i]);
}

void npred_exp_backward(float *dx, const float *dy, const float *y, size_t n)
{
    EACH dx[i] += dy[i] * y[i];
}

const char *npred_act_name(npred_act_kind kind)
{
    switch (kind) {
    case NPRED_ACT_IDENTITY: return "identity";
    case NPRED_ACT_ELU: return "elu";
    case NPRED_ACT_ADAPTIVE_ELU: return "adaptive_elu";
    case NPRED_ACT_ELU1: return "elu1";
    case NPRED_ACT_TANH: return "tanh";
    case NPRED_ACT_SIGMOID: return "sigmoid";
    case NPRED_ACT_RELU: return "relu";
    case NPRED_ACT_SOFTPLUS: return "softplus";
    case NPRED_ACT_EXP: return "exp";
    }
    return NULL;
}

int npred_act_backward_needs_x(npred_act_kind kind)
{
    switch (kind) {
    case NPRED_ACT_ELU:
    case NPRED_ACT_ADAPTIVE_ELU:
    case NPRED_ACT_ELU1:
    case NPRED_ACT_SOFTPLUS: return 1;
    default: return 0;
    }
}

npred_status npred_act_forward(float *y, const float *x, size_t n, const npred_act *act)
{
    if (!act || !npred_act_name(act->kind))
        return npred_errorf(NPRED_ERR_ARG, "npred_act_forward: unknown activation kind %d",
                            act ? (int)act->kind : -1);
    if (n && (!y || !x))
        return npred_errorf(NPRED_ERR_ARG, "npred_act_forward(%s): y and x are required",
                            npred_act_name(act->kind));
    switch (act->kind) {
    case NPRED_ACT_IDENTITY:
        if (y != x) {
            EACH y[i] = x[i];
        }
        break;
    case NPRED_ACT_ELU: npred_elu_forward(y, x, n); break;
    case NPRED_ACT_ADAPTIVE_ELU: npred_adaptive_elu_forward(y, x, n, act->xshift, act->yshift); break;
    case NPRED_ACT_ELU1: npred_elu1_forward(y, x, n); break;
    case NPRED_ACT_TANH: npred_tanh_forward(y, x, n); break;
    case NPRED_ACT_SIGMOID: npred_sigmoid_forward(y, x, n); break;
    case NPRED_ACT_RELU: npred_relu_forward(y, x, n); break;
    case NPRED_ACT_SOFTPLUS: npred_softplus_forward(y, x, n); break;
    case NPRED_ACT_EXP: npred_exp_forward(y, x, n); break;
    }
    return NPRED_OK;
}

npred_status npred_act_backward(float *dx, const float *dy, const float *x, const float *y, size_t n,
                                const npred_act *act)
{
    if (!act || !npred_act_name(act->kind))
        return npred_errorf(NPRED_ERR_ARG, "npred_act_backward: unknown activation kind %d",
                            act ? (int)act->kind : -1);
    const char *name = npred_act_name(act->kind);
    if (n == 0) return NPRED_OK;
    if (!dx || !dy)
        return npred_errorf(NPRED_ERR_ARG, "npred_act_backward(%s): dx and dy are required", name);
    int needs_x = npred_act_backward_needs_x(act->kind);
    if (act->kind != NPRED_ACT_IDENTITY && (needs_x ? !x : !y))
        return npred_errorf(NPRED_ERR_ARG, "npred_act_backward(%s): needs the forward %s", name,
                            needs_x ? "input x" : "output y");
    switch (act->kind) {
    case NPRED_ACT_IDENTITY: {
        EACH dx[i] += dy[i];
        break;
    }
    case NPRED_ACT_ELU: npred_elu_backward(dx, dy, x, n); break;
    case NPRED_ACT_ADAPTIVE_ELU: npred_adaptive_elu_backward(dx, dy, x, n, act->xshift); break;
    case NPRED_ACT_ELU1: npred_elu1_backward(dx, dy, x, n); break;
    case NPRED_ACT_TANH: npred_tanh_backward(dx, dy, y, n); break;
    case NPRED_ACT_SIGMOID: npred_sigmoid_backward(dx, dy, y, n); break;
    case NPRED_ACT_RELU: npred_relu_backward(dx, dy, y, n); break;
    case NPRED_ACT_SOFTPLUS: npred_softplus_backward(dx, dy, x, n); break;
    case NPRED_ACT_EXP: npred_exp_backward(dx, dy, y, n); break;
    }
    return NPRED_OK;
}
