#include "nn/mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

npred_status npred_mlp_declare(npred_mlp *m, npred_ptable *t, const char *prefix, int n_layers, const int *dims,
                               const npred_act_kind *acts, int bias, int indexed)
{
    memset(m, 0, sizeof *m);
    if (n_layers < 1 || n_layers > NPRED_MLP_MAXLAYERS)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: %d layers (1..%d supported)", prefix, n_layers, NPRED_MLP_MAXLAYERS);
    if (!indexed && n_layers != 1)
        return npred_errorf(NPRED_ERR_ARG, "%s: unindexed names need a single layer", prefix);
    m->n_layers = n_layers;
    for (int i = 0; i <= n_layers; i++) {
        if (dims[i] < 1) return npred_errorf(NPRED_ERR_CONFIG, "%s: layer width %d", prefix, dims[i]);
        m->dims[i] = dims[i];
    }
    for (int i = 0; i < n_layers; i++) {
        m->act[i] = acts[i];
        char name[NPRED_PARAM_NAMELEN];
        int64_t ws[2] = {dims[i + 1], dims[i]}, bs[1] = {dims[i + 1]};
        if (indexed) snprintf(name, sizeof name, "%s%d.weight", prefix, 2 * i);
        else snprintf(name, sizeof name, "%sweight", prefix);
        if ((m->p_w[i] = npred_ptable_add(t, name, 0, NPRED_PT_F32, 2, ws)) < 0) return NPRED_ERR_ARG;
        m->p_b[i] = -1;
        if (bias) {
            if (indexed) snprintf(name, sizeof name, "%s%d.bias", prefix, 2 * i);
            else snprintf(name, sizeof name, "%sbias", prefix);
            if ((m->p_b[i] = npred_ptable_add(t, name, 0, NPRED_PT_F32, 1, bs)) < 0) return NPRED_ERR_ARG;
        }
    }
    return NPRED_OK;
}

npred_status npred_mlp_setup(npred_mlp *m, int max_batch)
{
    int maxw = 0;
    for (int i = 0; i <= m->n_layers; i++)
        if (m->dims[i] > maxw) maxw = m->dims[i];
    m->max_batch = max_batch;
    for (int i = 0; i <= m->n_layers; i++) {
        m->h[i] = calloc((size_t)max_batch * m->dims[i], sizeof(float));
        if (i < m->n_layers) m->z[i] = calloc((size_t)max_batch * m->dims[i + 1], sizeof(float));
        if (!m->h[i] || (i < m->n_layers && !m->z[i])) return npred_errorf(NPRED_ERR_NOMEM, "mlp: out of memory");
    }
    for (int i = 0; i < 2; i++)
        if (!(m->g[i] = calloc((size_t)max_batch * maxw, sizeof(float))))
            return npred_errorf(NPRED_ERR_NOMEM, "mlp: out of memory");
    return NPRED_OK;
}

void npred_mlp_init_default(npred_mlp *m, npred_ptable *t, npred_rng *rng)
{
    for (int i = 0; i < m->n_layers; i++) {
        double bound = 1.0 / sqrt((double)m->dims[i]);
        float *w = npred_ptable_ptr(t, m->p_w[i]);
        for (int j = 0; j < m->dims[i] * m->dims[i + 1]; j++) w[j] = (float)((2 * npred_rng_uniform(rng) - 1) * bound);
        if (m->p_b[i] >= 0) {
            float *b = npred_ptable_ptr(t, m->p_b[i]);
            for (int j = 0; j < m->dims[i + 1]; j++) b[j] = (float)((2 * npred_rng_uniform(rng) - 1) * bound);
        }
    }
}

npred_status npred_mlp_forward(npred_mlp *m, npred_ptable *t, const float *x, int B, float *y)
{
    if (B < 1 || B > m->max_batch) return npred_errorf(NPRED_ERR_ARG, "mlp: batch %d (capacity %d)", B, m->max_batch);
    m->B = B;
    memcpy(m->h[0], x, sizeof(float) * (size_t)B * m->dims[0]);
    for (int i = 0; i < m->n_layers; i++) {
        int in = m->dims[i], out = m->dims[i + 1];
        const float *w = npred_ptable_ptr(t, m->p_w[i]), *b = m->p_b[i] >= 0 ? npred_ptable_ptr(t, m->p_b[i]) : NULL;
        for (int s = 0; s < B; s++)
            for (int o = 0; o < out; o++) {
                double acc = b ? b[o] : 0;
                for (int k = 0; k < in; k++) acc += (double)w[(size_t)o * in + k] * m->h[i][(size_t)s * in + k];
                m->z[i][(size_t)s * out + o] = (float)acc;
            }
        npred_act a = {m->act[i], 0, 0};
        npred_status st = npred_act_forward(m->h[i + 1], m->z[i], (size_t)B * out, &a);
        if (st) return st;
    }
    if (y) memcpy(y, m->h[m->n_layers], sizeof(float) * (size_t)B * m->dims[m->n_layers]);
    return NPRED_OK;
}

void npred_mlp_backward(npred_mlp *m, npred_ptable *t, const float *dy, float *dx)
{
    int B = m->B;
    const float *cur = dy;
    for (int i = m->n_layers - 1; i >= 0; i--) {
        int in = m->dims[i], out = m->dims[i + 1];
        float *dz = m->g[0];
        memset(dz, 0, sizeof(float) * (size_t)B * out);
        npred_act a = {m->act[i], 0, 0};
        npred_act_backward(dz, cur, m->z[i], m->h[i + 1], (size_t)B * out, &a);
        const float *w = npred_ptable_ptr(t, m->p_w[i]);
        float *gw = npred_ptable_gradptr(t, m->p_w[i]), *gb = m->p_b[i] >= 0 ? npred_ptable_gradptr(t, m->p_b[i]) : NULL;
        for (int o = 0; gw && o < out; o++) {
            double sb = 0;
            for (int s = 0; s < B; s++) sb += dz[(size_t)s * out + o];
            if (gb) gb[o] += (float)sb;
            for (int k = 0; k < in; k++) {
                double acc = 0;
                for (int s = 0; s < B; s++) acc += (double)dz[(size_t)s * out + o] * m->h[i][(size_t)s * in + k];
                gw[(size_t)o * in + k] += (float)acc;
            }
        }
        float *dh = (i == 0) ? dx : m->g[1];
        if (!dh) break;
        if (i > 0) memset(dh, 0, sizeof(float) * (size_t)B * in);
        for (int s = 0; s < B; s++)
            for (int k = 0; k < in; k++) {
                double acc = 0;
                for (int o = 0; o < out; o++) acc += (double)dz[(size_t)s * out + o] * w[(size_t)o * in + k];
                dh[(size_t)s * in + k] += (float)acc;
            }
        cur = dh;
    }
}

void npred_mlp_free(npred_mlp *m)
{
    for (int i = 0; i <= NPRED_MLP_MAXLAYERS; i++) {
        free(m->h[i]);
        if (i < NPRED_MLP_MAXLAYERS) free(m->z[i]);
    }
    free(m->g[0]);
    free(m->g[1]);
    memset(m, 0, sizeof *m);
}
