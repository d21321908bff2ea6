/* Distribution encoders (see encoder.h). Slots: ZIG (theta, k, loc, q), ZIL (mu, sigma2,
 * loc, q), Gamma (concentration, rate), Gaussian (mean, variance). */
#include "model/encoder.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { S_LOC = 2, S_Q = 3 };

static const char *const enc_names[] = {"FiringRateEncoder", "ZIGEncoder", "ZILEncoder", "GammaEncoder",
                                        "GaussianEncoder"};

const char *npred_encoder_name(npred_encoder_type type)
{
    return (unsigned)type < 5 ? enc_names[type] : "?";
}

void npred_encoder_config_default(npred_encoder_config *c, npred_encoder_type type)
{
    memset(c, 0, sizeof *c);
    c->type = type;
    for (int s = 0; s < NPRED_ENC_MAXK; s++) c->dep[s] = 1;
    if (type == NPRED_ENC_ZIG || type == NPRED_ENC_ZIL) c->dep[S_LOC] = 0; /* loc_image_dependent=False */
    c->offset = type == NPRED_ENC_ZIL ? 1e-12 : 1e-6;
}

/* the JSON name of the image-dependence flag of slot s, or NULL */
static const char *dep_key(npred_encoder_type type, int s)
{
    static const char *const zig[] = {"theta_image_dependent", "k_image_dependent", "loc_image_dependent",
                                      "q_image_dependent"};
    static const char *const zil[] = {"mu_image_dependent", "sigma2_image_dependent", "loc_image_dependent",
                                      "q_image_dependent"};
    static const char *const gam[] = {"concentration_image_dependent", "rate_image_dependent", NULL, NULL};
    if (s < 0 || s >= NPRED_ENC_MAXK) return NULL;
    switch (type) {
    case NPRED_ENC_ZIG: return zig[s];
    case NPRED_ENC_ZIL: return zil[s];
    case NPRED_ENC_GAMMA: return gam[s];
    default: return NULL;
    }
}

int npred_encoder_key(npred_json_reader *r, const cJSON *e, npred_encoder_config *c)
{
    const char *k = e->string;
    const int zi = c->type == NPRED_ENC_ZIG || c->type == NPRED_ENC_ZIL;
    for (int s = 0; s < NPRED_ENC_MAXK; s++) {
        const char *dk = dep_key(c->type, s);
        if (dk && !strcmp(k, dk)) return npred_json_bool(r, e, &c->dep[s]), 1;
    }
    if (zi && !strcmp(k, "offset")) return npred_json_num(r, e, 0, NPRED_JSON_ANY, &c->offset), 1;
    if (!zi && c->type != NPRED_ENC_FIRING_RATE && !strcmp(k, "eps"))
        return npred_json_num(r, e, 0, NPRED_JSON_ANY, &c->offset), 1;
    if (zi && !strcmp(k, "zero_thresholds")) {
        if (cJSON_IsObject(e)) {
            npred_json_fail(r, e, "one number for every session or null (per-session thresholds are not supported)");
            return 1;
        }
        int got = npred_json_num_or_null(r, e, 0, NPRED_JSON_ANY, &c->zero_threshold);
        if (got == 1 && !(c->zero_threshold > 0)) npred_json_fail(r, e, "a threshold > 0 or null");
        c->has_zero_threshold = got == 1;
        return 1;
    }
    if (c->type == NPRED_ENC_ZIG && !strcmp(k, "init_ks")) {
        if (cJSON_IsObject(e)) {
            npred_json_fail(r, e, "one number for every session or null (per-session values are not supported)");
            return 1;
        }
        c->has_init_k = npred_json_num_or_null(r, e, -NPRED_JSON_ANY, NPRED_JSON_ANY, &c->init_k) == 1;
        return 1;
    }
    if (c->type == NPRED_ENC_GAMMA && !strcmp(k, "max_concentration")) {
        c->has_max_concentration =
            npred_json_num_or_null(r, e, -NPRED_JSON_ANY, NPRED_JSON_ANY, &c->max_concentration) == 1;
        return 1;
    }
    if (c->type == NPRED_ENC_GAMMA && !strcmp(k, "min_rate")) {
        c->has_min_rate = npred_json_num_or_null(r, e, -NPRED_JSON_ANY, NPRED_JSON_ANY, &c->min_rate) == 1;
        return 1;
    }
    return 0;
}

void npred_encoder_to_json(cJSON *en, const npred_encoder_config *c)
{
    cJSON_AddStringToObject(en, "type", npred_encoder_name(c->type));
    if (c->type == NPRED_ENC_FIRING_RATE) return;
    for (int s = 0; s < NPRED_ENC_MAXK; s++) {
        const char *dk = dep_key(c->type, s);
        if (dk) cJSON_AddBoolToObject(en, dk, c->dep[s]);
    }
    const int zi = c->type == NPRED_ENC_ZIG || c->type == NPRED_ENC_ZIL;
    cJSON_AddNumberToObject(en, zi ? "offset" : "eps", c->offset);
    if (zi) {
        if (c->has_zero_threshold) cJSON_AddNumberToObject(en, "zero_thresholds", c->zero_threshold);
        else cJSON_AddNullToObject(en, "zero_thresholds");
    }
    if (c->type == NPRED_ENC_ZIG) {
        if (c->has_init_k) cJSON_AddNumberToObject(en, "init_ks", c->init_k);
        else cJSON_AddNullToObject(en, "init_ks");
    }
    if (c->type == NPRED_ENC_GAMMA) {
        if (c->has_max_concentration) cJSON_AddNumberToObject(en, "max_concentration", c->max_concentration);
        else cJSON_AddNullToObject(en, "max_concentration");
        if (c->has_min_rate) cJSON_AddNumberToObject(en, "min_rate", c->min_rate);
        else cJSON_AddNullToObject(en, "min_rate");
    }
}

npred_status npred_encoder_check(const npred_encoder_config *c, const char *where)
{
    if (c->type != NPRED_ENC_ZIG && c->type != NPRED_ENC_ZIL) return NPRED_OK;
    if (npred_encoder_readout_params(c) < 1)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'encoder': %s needs at least one image-dependent parameter "
                            "(every *_image_dependent is false)", where, npred_encoder_name(c->type));
    if (c->dep[S_LOC] && c->has_zero_threshold)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'encoder.zero_thresholds': ignored by the reference when "
                            "loc_image_dependent is true; give null", where);
    if (c->type == NPRED_ENC_ZIG && c->dep[1] && c->has_init_k)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: key 'encoder.init_ks': ignored by the reference when "
                            "k_image_dependent is true; give null", where);
    return NPRED_OK;
}

int npred_encoder_outputs(const npred_encoder_config *c)
{
    switch (c->type) {
    case NPRED_ENC_ZIG:
    case NPRED_ENC_ZIL: return 4;
    case NPRED_ENC_GAMMA:
    case NPRED_ENC_GAUSSIAN: return 2;
    default: return 1;
    }
}

/* slot of the i-th readout output: ZIG loc, q, theta, k; ZIL loc, q, sigma2, mu */
static const int zig_order[4] = {S_LOC, S_Q, 0, 1}, zil_order[4] = {S_LOC, S_Q, 1, 0};

static const int *readout_order(const npred_encoder_config *c)
{
    return c->type == NPRED_ENC_ZIL ? zil_order : zig_order;
}

int npred_encoder_readout_params(const npred_encoder_config *c)
{
    if (c->type == NPRED_ENC_FIRING_RATE) return 0;
    if (c->type == NPRED_ENC_GAMMA || c->type == NPRED_ENC_GAUSSIAN) return 2;
    int P = 0;
    for (int s = 0; s < 4; s++) P += c->dep[s] != 0;
    return P;
}

const char *npred_encoder_output_name(const npred_encoder_config *c, int s)
{
    static const char *const zig[] = {"theta", "k", "loc", "q"}, *const zil[] = {"mu", "sigma2", "loc", "q"};
    static const char *const gam[] = {"concentration", "rate"}, *const gau[] = {"mean", "variance"};
    if (s < 0 || s >= npred_encoder_outputs(c)) return "?";
    switch (c->type) {
    case NPRED_ENC_ZIG: return zig[s];
    case NPRED_ENC_ZIL: return zil[s];
    case NPRED_ENC_GAMMA: return gam[s];
    case NPRED_ENC_GAUSSIAN: return gau[s];
    default: return "rate";
    }
}

/* the parameter name of slot s (before the nonlinearity) */
static const char *param_name(npred_encoder_type type, int s)
{
    static const char *const zig[] = {"logtheta", "logk", "logloc", "q"}, *const zil[] = {"mu", "logsigma2", "logloc",
                                                                                            "q"};
    static const char *const gam[] = {"concentration_before_nonlinearity", "rate_before_nonlinearity"};
    return type == NPRED_ENC_ZIG ? zig[s] : type == NPRED_ENC_ZIL ? zil[s] : gam[s];
}

npred_status npred_encoder_declare(const npred_encoder_config *c, npred_ptable *t, const char *key, int n,
                                   int p[NPRED_ENC_MAXK])
{
    for (int s = 0; s < NPRED_ENC_MAXK; s++) p[s] = -1;
    if (c->type == NPRED_ENC_FIRING_RATE || c->type == NPRED_ENC_GAUSSIAN) return NPRED_OK;
    int K = npred_encoder_outputs(c);
    for (int s = 0; s < K; s++) {
        if (c->dep[s]) continue;
        char name[NPRED_PARAM_NAMELEN];
        snprintf(name, sizeof name, "%s%s%s", param_name(c->type, s), key && key[0] ? "." : "", key ? key : "");
        int64_t shape[2] = {1, n};
        int fixed = s == S_LOC && c->has_zero_threshold && c->type != NPRED_ENC_GAMMA;
        if ((p[s] = npred_ptable_add(t, name, fixed, NPRED_PT_F32, 2, shape)) < 0) return NPRED_ERR_ARG;
    }
    return NPRED_OK;
}

void npred_encoder_init(const npred_encoder_config *c, npred_ptable *t, const int p[NPRED_ENC_MAXK], int n,
                        npred_rng *rng)
{
    for (int s = 0; s < npred_encoder_outputs(c); s++) {
        if (p[s] < 0) continue;
        float *v = npred_ptable_ptr(t, p[s]);
        for (int j = 0; j < n; j++) {
            float x = 0.0f; /* logtheta, mu, logsigma2, Gamma's: zeros */
            if (c->type == NPRED_ENC_GAMMA) x = 0.0f;
            else if (s == S_LOC)
                x = c->has_zero_threshold ? (float)log(c->zero_threshold)
                                          : (float)((npred_rng_uniform(rng) + 1.0) * log(0.1));
            else if (s == S_Q) x = (float)(npred_rng_uniform(rng) * 2.0 - 1.0);
            else if (c->type == NPRED_ENC_ZIG && s == 1) x = c->has_init_k ? (float)c->init_k : 0.0f;
            v[j] = x;
        }
    }
}

static float elu(float x) { return x > 0 ? x : expm1f(x); }
static float delu(float x) { return x > 0 ? 1.0f : expf(x); }
static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* raw (K, B, n): each slot's pre-nonlinearity value, from the readout or the parameter */
static void gather_raw(const npred_encoder_config *c, const npred_ptable *t, const int p[NPRED_ENC_MAXK],
                       const float *y, int B, int n, float *raw)
{
    size_t bn = (size_t)B * n;
    int K = npred_encoder_outputs(c);
    if (c->type == NPRED_ENC_GAMMA || c->type == NPRED_ENC_GAUSSIAN) {
        memcpy(raw, y, 2 * bn * sizeof(float));
    } else {
        const int *ord = readout_order(c);
        int i = 0;
        for (int r = 0; r < 4; r++)
            if (c->dep[ord[r]]) memcpy(raw + (size_t)ord[r] * bn, y + (size_t)(i++) * bn, bn * sizeof(float));
    }
    for (int s = 0; s < K; s++) {
        if (p[s] < 0) continue;
        const float *v = npred_ptable_ptr(t, p[s]);
        for (int b = 0; b < B; b++) memcpy(raw + (size_t)s * bn + (size_t)b * n, v, (size_t)n * sizeof(float));
    }
}

void npred_encoder_forward(const npred_encoder_config *c, const npred_ptable *t, const int p[NPRED_ENC_MAXK],
                           const float *y, int B, int n, float *raw, float *dist, float *mean)
{
    size_t bn = (size_t)B * n;
    gather_raw(c, t, p, y, B, n, raw);
    const float off = (float)c->offset;
    for (size_t i = 0; i < bn; i++) {
        const float *r = raw + i;
        float *d = dist + i;
        switch (c->type) {
        case NPRED_ENC_ZIG:
            d[0] = elu(r[0]) + 1.0f + off;
            d[bn] = c->has_zero_threshold ? elu(r[bn]) + 1.0f + off : elu(r[bn]) + 1.0f + 1.1f + off;
            d[2 * bn] = expf(r[2 * bn]);
            d[3 * bn] = sigm(r[3 * bn]) * 0.99999f + off;
            break;
        case NPRED_ENC_ZIL:
            d[0] = r[0];
            d[bn] = elu(r[bn]) + 1.0f + off;
            d[2 * bn] = expf(r[2 * bn]);
            d[3 * bn] = sigm(r[3 * bn]) * 0.99999f + off;
            break;
        case NPRED_ENC_GAMMA: {
            float a = elu(r[0]) + 1.0f + off, b = elu(r[bn]) + 1.0f + off;
            if (c->has_min_rate && b < (float)c->min_rate) b = (float)c->min_rate;
            if (c->has_max_concentration && a > (float)c->max_concentration) a = (float)c->max_concentration;
            d[0] = a;
            d[bn] = b;
            break;
        }
        case NPRED_ENC_GAUSSIAN:
            d[0] = r[0];
            d[bn] = elu(r[bn]) + 1.0f + off;
            break;
        default: d[0] = r[0]; break;
        }
    }
    if (mean) npred_encoder_fitted(c, dist, (int64_t)bn, mean, NULL);
}

void npred_encoder_backward(const npred_encoder_config *c, npred_ptable *t, const int p[NPRED_ENC_MAXK],
                            const float *ddist, int B, int n, const float *raw, const float *dist, float *dy)
{
    size_t bn = (size_t)B * n;
    int K = npred_encoder_outputs(c);
    /* per slot: ddist * d dist / d raw into the slot's readout output (dy), or summed
     * over the batch into its per-neuron parameter */
    const int *ord = readout_order(c);
    int slot_to_readout[NPRED_ENC_MAXK] = {-1, -1, -1, -1};
    if (c->type == NPRED_ENC_GAMMA || c->type == NPRED_ENC_GAUSSIAN) {
        slot_to_readout[0] = 0;
        slot_to_readout[1] = 1;
    } else {
        int i = 0;
        for (int r = 0; r < 4; r++)
            if (c->dep[ord[r]]) slot_to_readout[ord[r]] = i++;
    }
    int P = npred_encoder_readout_params(c);
    memset(dy, 0, (size_t)P * bn * sizeof(float));
    for (int s = 0; s < K; s++) {
        float *gp = p[s] >= 0 ? npred_ptable_gradptr(t, p[s]) : NULL;
        float *out = c->dep[s] || c->type == NPRED_ENC_GAUSSIAN ? dy + (size_t)slot_to_readout[s] * bn : NULL;
        const float *rs = raw + (size_t)s * bn, *ds = dist + (size_t)s * bn, *gs = ddist + (size_t)s * bn;
        for (int j = 0; j < n && (out || gp); j++) {
            double acc = 0;
            for (int b = 0; b < B; b++) {
                size_t i = (size_t)b * n + j;
                float g = gs[i], x = rs[i], d;
                switch (c->type) {
                case NPRED_ENC_ZIG:
                case NPRED_ENC_ZIL:
                    if (s == S_LOC) d = ds[i]; /* exp: its (possibly clamped) output */
                    else if (s == S_Q) {
                        float q = sigm(x);
                        d = q * (1.0f - q) * 0.99999f;
                    } else if (c->type == NPRED_ENC_ZIL && s == 0) d = 1.0f;
                    else d = delu(x);
                    break;
                case NPRED_ENC_GAMMA: {
                    float v = elu(x) + 1.0f + (float)c->offset;
                    int pass = s == 0 ? !(c->has_max_concentration && v > (float)c->max_concentration)
                                      : !(c->has_min_rate && v < (float)c->min_rate);
                    d = pass ? delu(x) : 0.0f;
                    break;
                }
                case NPRED_ENC_GAUSSIAN: d = s == 0 ? 1.0f : delu(x); break;
                default: d = 1.0f; break;
                }
                float v = g * d;
                if (gp) acc += v;
                else if (out) out[i] = v;
            }
            if (gp) gp[j] += (float)acc;
        }
    }
}

void npred_zi_fitted(float *mean, float *variance, npred_zi_slab slab, const float *p1, const float *p2,
                     const float *loc, const float *q, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        double l = loc[i], qq = q[i], spike_var = (1.0 - qq) * l * l / 12.0;
        double smean, svar; /* the slab's mean (above 0) and variance */
        if (slab == NPRED_ZI_GAMMA) {
            smean = (double)p2[i] * p1[i] + l;
            svar = (double)p2[i] * p1[i] * p1[i];
        } else {
            smean = exp((double)p1[i] + 0.5 * p2[i]) + l;
            svar = (exp((double)p2[i]) - 1.0) * exp(2.0 * p1[i] + p2[i]);
        }
        if (mean) mean[i] = (float)((1.0 - qq) * 0.5 * l + qq * smean);
        if (variance)
            variance[i] = (float)(qq * svar + spike_var + qq * (1.0 - qq) * (smean - 0.5 * l) * (smean - 0.5 * l));
    }
}

void npred_encoder_fitted(const npred_encoder_config *c, const float *dist, int64_t count, float *mean,
                          float *variance)
{
    const float *a = dist, *b = dist + count;
    switch (c->type) {
    case NPRED_ENC_ZIG:
    case NPRED_ENC_ZIL:
        npred_zi_fitted(mean, variance, c->type == NPRED_ENC_ZIG ? NPRED_ZI_GAMMA : NPRED_ZI_LOGNORMAL, a, b,
                        dist + 2 * count, dist + 3 * count, count);
        return;
    case NPRED_ENC_GAMMA:
        for (int64_t i = 0; i < count; i++) {
            if (mean) mean[i] = a[i] / b[i];
            if (variance) variance[i] = a[i] / (b[i] * b[i]);
        }
        return;
    case NPRED_ENC_GAUSSIAN:
        if (mean) memcpy(mean, a, (size_t)count * sizeof(float));
        if (variance) memcpy(variance, b, (size_t)count * sizeof(float));
        return;
    default:
        if (mean) memcpy(mean, a, (size_t)count * sizeof(float));
        if (variance) memset(variance, 0, (size_t)count * sizeof(float));
        return;
    }
}

void npred_encoder_mean_backward(const npred_encoder_config *c, const float *dist, const float *dmean,
                                 int64_t count, float *ddist)
{
    int K = npred_encoder_outputs(c);
    memset(ddist, 0, (size_t)K * count * sizeof(float));
    for (int64_t i = 0; i < count; i++) {
        double g = dmean[i], a = dist[i], b = dist[count + i];
        switch (c->type) {
        case NPRED_ENC_ZIG: { /* (1-q) loc/2 + q (k theta + loc) */
            double l = dist[2 * count + i], q = dist[3 * count + i];
            ddist[i] = (float)(g * q * b);
            ddist[count + i] = (float)(g * q * a);
            ddist[2 * count + i] = (float)(g * (0.5 * (1.0 - q) + q));
            ddist[3 * count + i] = (float)(g * (a * b + l - 0.5 * l));
            break;
        }
        case NPRED_ENC_ZIL: { /* (1-q) loc/2 + q (exp(mu + s2/2) + loc) */
            double l = dist[2 * count + i], q = dist[3 * count + i], e = exp(a + 0.5 * b);
            ddist[i] = (float)(g * q * e);
            ddist[count + i] = (float)(g * q * e * 0.5);
            ddist[2 * count + i] = (float)(g * (0.5 * (1.0 - q) + q));
            ddist[3 * count + i] = (float)(g * (e + l - 0.5 * l));
            break;
        }
        case NPRED_ENC_GAMMA:
            ddist[i] = (float)(g / b);
            ddist[count + i] = (float)(-g * a / (b * b));
            break;
        default: ddist[i] = (float)g; break;
        }
    }
}
