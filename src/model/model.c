/* FiringRateEncoder: core + per-session readout (+ shifter, modulator), ELU(x + offset) + 1. */
#include "model/model.h"

#include "kernels/activation.h"

#include <cJSON.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void session_free(npred_session *s)
{
    npred_readout_free(&s->ro);
    if (s->has_shifter) npred_mlp_free(&s->shifter);
    if (s->has_modulator) npred_mlp_free(&s->modulator);
    free(s->y);
    free(s->z);
    free(s->out);
    free(s->shift);
    free(s->dshift);
    free(s->dy);
    free(s->raw);
    free(s->dist);
    free(s->ddist);
}

void npred_model_free(npred_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_sessions; i++) session_free(&m->s[i]);
    free(m->s);
    npred_core_free(&m->core);
    npred_ptable_free(&m->t);
    if (m->owns_dcore) free(m->dcore);
    free(m->ro_nhwc);
    free(m->preprocessing);
    if (m->pre_free) m->pre_free(m->pre);
    free(m);
}

const char *npred_model_preprocessing_json(const npred_model *m) { return m->preprocessing; }

npred_status npred_model_set_preprocessing_json(npred_model *m, const char *json)
{
    char *copy = NULL;
    if (json) {
        cJSON *o = cJSON_Parse(json);
        int ok = cJSON_IsObject(o);
        cJSON_Delete(o);
        if (!ok) return npred_errorf(NPRED_ERR_FORMAT, "preprocessing record: not a JSON object");
        if (!(copy = strdup(json))) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    free(m->preprocessing);
    m->preprocessing = copy;
    if (m->pre_free) m->pre_free(m->pre);
    m->pre = NULL;
    m->pre_free = NULL;
    return NPRED_OK;
}

static npred_status declare_session(npred_model *m, int i, const npred_model_session *info)
{
    npred_session *s = &m->s[i];
    const npred_model_config *c = &m->cfg;
    if (!info->key || (!info->key[0] && c->multi_readout) || strlen(info->key) >= sizeof s->key)
        return npred_errorf(NPRED_ERR_ARG, "session %d: missing or too long data_key", i);
    if (info->n_neurons < 1) return npred_errorf(NPRED_ERR_ARG, "session %s: %d neurons", info->key, info->n_neurons);
    for (int j = 0; j < i; j++)
        if (!strcmp(m->s[j].key, info->key)) return npred_errorf(NPRED_ERR_ARG, "duplicate session %s", info->key);
    snprintf(s->key, sizeof s->key, "%s", info->key);
    s->n = info->n_neurons;
    npred_readout_config rc = c->readout;
    rc.c = m->core.out_c;
    rc.h = m->core.out_h;
    rc.w = m->core.out_w;
    rc.n = s->n;
    rc.params_n = npred_encoder_readout_params(&c->encoder);
    if (c->share_features || c->share_grid) {
        if (!info->match_ids)
            return npred_errorf(NPRED_ERR_ARG, "session %s: share_features/share_grid need match ids", info->key);
        rc.match_ids = info->match_ids;
        rc.shared_features = c->share_features;
        rc.shared_grid = c->share_grid;
        rc.features_from = c->share_features && i > 0 ? &m->s[0].ro : NULL;
        rc.grid_from = c->share_grid && i > 0 ? &m->s[0].ro : NULL;
    }
    char prefix[128];
    if (c->multi_readout) snprintf(prefix, sizeof prefix, "readout.%s.", s->key);
    else snprintf(prefix, sizeof prefix, "readout.");
    npred_status st = npred_readout_declare(&s->ro, &rc, prefix, &m->t);
    if (st) return st;
    if (c->shifter != NPRED_SHIFTER_NONE) {
        s->has_shifter = 1;
        int dims[NPRED_MLP_MAXLAYERS + 1];
        npred_act_kind acts[NPRED_MLP_MAXLAYERS];
        int L = c->shifter == NPRED_SHIFTER_MLP ? c->shift_layers : 1;
        if (L > NPRED_MLP_MAXLAYERS) return npred_errorf(NPRED_ERR_CONFIG, "shift_layers = %d is too many", L);
        dims[0] = c->shifter_input_channels;
        for (int l = 1; l < L; l++) dims[l] = c->shifter_hidden_channels;
        dims[L] = 2;
        for (int l = 0; l < L; l++) acts[l] = NPRED_ACT_TANH;
        if (c->shifter == NPRED_SHIFTER_MLP) snprintf(prefix, sizeof prefix, "shifter.%s.mlp.", s->key);
        else snprintf(prefix, sizeof prefix, "shifter.%s.", s->key);
        st = npred_mlp_declare(&s->shifter, &m->t, prefix, L, dims, acts, c->shifter_bias,
                               c->shifter == NPRED_SHIFTER_MLP);
        if (st) return st;
    }
    if (c->modulator) {
        s->has_modulator = 1;
        int L = c->modulator_layers;
        if (L < 1 || L > NPRED_MLP_MAXLAYERS) return npred_errorf(NPRED_ERR_CONFIG, "modulator layers = %d", L);
        int dims[NPRED_MLP_MAXLAYERS + 1];
        npred_act_kind acts[NPRED_MLP_MAXLAYERS];
        dims[0] = c->modulator_input_channels;
        for (int l = 1; l < L; l++) dims[l] = c->modulator_hidden_channels;
        dims[L] = s->n;
        for (int l = 0; l < L; l++) acts[l] = NPRED_ACT_RELU;
        snprintf(prefix, sizeof prefix, "modulator.%s.modulator_networks.0.", s->key);
        st = npred_mlp_declare(&s->modulator, &m->t, prefix, L, dims, acts, c->modulator_bias, 1);
        if (st) return st;
    }
    return npred_encoder_declare(&c->encoder, &m->t, c->multi_readout ? s->key : "", s->n, s->p_enc);
}

static npred_status setup(npred_model *m)
{
    npred_status st = npred_core_setup(&m->core, &m->t, m->max_batch);
    if (st) return st;
    size_t B = (size_t)m->max_batch;
    /* the readout writes the core's output gradient where the core's backward reads it */
    m->dcore = npred_core_dy_buffer(&m->core);
    if (!m->dcore) {
        m->dcore = calloc(B * m->core.out_c * m->core.out_h * m->core.out_w, sizeof(float));
        if (!m->dcore) return npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
        m->owns_dcore = 1;
    }
    /* one channels-last copy of the core output (and its gradient) and one set of
     * sampled positions for all Gaussian readouts: a backward is of the last forward,
     * whichever session that was */
    size_t nhwc = 0;
    int users = 0;
    for (int i = 0; i < m->n_sessions; i++) {
        size_t f = npred_readout_nhwc_floats(&m->s[i].ro, m->max_batch);
        if (f > nhwc) nhwc = f;
        users += f > 0;
    }
    /* Gaussian readouts read their channels-last copy, never the core output, in their
     * backward: a recomputing core may keep its output in the gradient buffer */
    m->core.output_in_dy = users == m->n_sessions && m->dcore == npred_core_dy_buffer(&m->core);
    if (users > 1) {
        m->ro_nhwc = calloc(nhwc, sizeof(float)); /* pages committed when first used */
        if (!m->ro_nhwc) return npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
        for (int i = 0; i < m->n_sessions; i++)
            if (npred_readout_nhwc_floats(&m->s[i].ro, m->max_batch)) {
                m->s[i].ro.nhwc = m->ro_nhwc;
                m->s[i].ro.nhwc_floats = nhwc;
            }
    }
    for (int i = 0; i < m->n_sessions; i++) {
        npred_session *s = &m->s[i];
        if ((st = npred_readout_setup(&s->ro, &m->t, m->max_batch))) return st;
        if (s->has_shifter && (st = npred_mlp_setup(&s->shifter, m->max_batch))) return st;
        if (s->has_modulator && (st = npred_mlp_setup(&s->modulator, m->max_batch))) return st;
        size_t P = m->cfg.encoder.type == NPRED_ENC_FIRING_RATE ? 1 : (size_t)npred_encoder_readout_params(&m->cfg.encoder);
        size_t K = (size_t)npred_encoder_outputs(&m->cfg.encoder);
        s->y = calloc(P * B * s->n, sizeof(float));
        s->z = calloc(B * s->n, sizeof(float));
        s->out = calloc(B * s->n, sizeof(float));
        s->dy = calloc(P * B * s->n, sizeof(float));
        if (m->cfg.encoder.type != NPRED_ENC_FIRING_RATE) {
            s->raw = calloc(K * B * s->n, sizeof(float));
            s->dist = calloc(K * B * s->n, sizeof(float));
            s->ddist = calloc(K * B * s->n, sizeof(float));
            if (!s->raw || !s->dist || !s->ddist) return npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
        }
        s->shift = calloc(B * 2, sizeof(float));
        s->dshift = calloc(B * 2, sizeof(float));
        if (!s->y || !s->z || !s->out || !s->dy || !s->shift || !s->dshift)
            return npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
    }
    return NPRED_OK;
}

/* Declare every part; with alloc, also allocate the parameters and set up the
 * workspaces (a plan has max_batch 0 and no parameter memory). */
static npred_status build(npred_model **out, const npred_model_config *cfg, int in_c, int in_h, int in_w,
                          const npred_model_session *sessions, int n_sessions, int max_batch, int alloc)
{
    *out = NULL;
    if (n_sessions < 1) return npred_errorf(NPRED_ERR_ARG, "model: no sessions");
    if (!sessions) return npred_errorf(NPRED_ERR_ARG, "model: sessions is NULL");
    if (alloc && max_batch < 1) return npred_errorf(NPRED_ERR_ARG, "model: max_batch %d", max_batch);
    if (in_c < 1 || in_h < 1 || in_w < 1)
        return npred_errorf(NPRED_ERR_ARG, "model: input shape (%d, %d, %d)", in_c, in_h, in_w);
    if (!cfg->multi_readout && n_sessions != 1)
        return npred_errorf(NPRED_ERR_CONFIG, "model: a single (non-multi) readout needs exactly one session");
    npred_model *m = calloc(1, sizeof *m);
    if (!m) return npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->cfg.core.input_channels = in_c;
    m->in_c = in_c;
    m->in_h = in_h;
    m->in_w = in_w;
    m->max_batch = max_batch;
    m->last = -1;
    npred_ptable_init(&m->t);
    npred_status st = npred_core_declare(&m->core, &m->cfg.core, "core.", in_h, in_w, &m->t);
    if (!st) {
        m->s = calloc((size_t)n_sessions, sizeof *m->s);
        if (!m->s) st = npred_errorf(NPRED_ERR_NOMEM, "model: out of memory");
    }
    for (int i = 0; !st && i < n_sessions; i++) {
        m->n_sessions = i + 1;
        st = declare_session(m, i, &sessions[i]);
    }
    if (!st && alloc) st = npred_ptable_alloc(&m->t);
    if (!st && alloc) st = setup(m);
    if (!st && alloc) npred_core_init_buffers(&m->core, &m->t);
    if (st) {
        npred_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

npred_status npred_model_build(npred_model **out, const npred_model_config *cfg, int in_c, int in_h, int in_w,
                               const npred_model_session *sessions, int n_sessions, int max_batch)
{
    return build(out, cfg, in_c, in_h, in_w, sessions, n_sessions, max_batch, 1);
}

npred_status npred_model_plan(npred_model **out, const char *config_json, const char *config_name, int in_channels,
                              int in_h, int in_w, const npred_model_session *sessions, int n_sessions)
{
    *out = NULL;
    npred_model_config cfg;
    npred_status st = npred_model_config_parse(&cfg, config_json, config_name ? config_name : "model config");
    if (st) return st;
    return build(out, &cfg, in_channels, in_h, in_w, sessions, n_sessions, 0, 0);
}

npred_status npred_model_check_allocated(const npred_model *m, const char *what)
{
    if (m->max_batch > 0) return NPRED_OK;
    return npred_errorf(NPRED_ERR_ARG, "%s: this model is a plan (npred_model_plan) without parameters; "
                                       "create or open a model", what);
}

npred_status npred_model_config_check(const char *config_json, const char *where)
{
    npred_model_config cfg;
    return npred_model_config_parse(&cfg, config_json ? config_json : "", where ? where : "model config");
}

size_t npred_model_param_count(const npred_model *m, const char *prefix)
{
    return npred_ptable_count(&m->t, prefix && *prefix ? prefix : NULL);
}

size_t npred_model_readout_param_count(const npred_model *m, int i)
{
    return i >= 0 && i < m->n_sessions ? npred_ptable_count(&m->t, m->s[i].ro.prefix) : 0;
}

size_t npred_model_buffer_count(const npred_model *m) { return m->t.n_buffers; }

int npred_model_pupil_channels(const npred_model *m)
{
    return m->cfg.shifter != NPRED_SHIFTER_NONE ? m->cfg.shifter_input_channels : 0;
}

char *npred_model_readout_repr(const npred_model *m, int i)
{
    if (i < 0 || i >= m->n_sessions) {
        npred_errorf(NPRED_ERR_ARG, "session index %d (the model has %d)", i, m->n_sessions);
        return NULL;
    }
    char *buf = malloc(4096);
    if (!buf) {
        npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        return NULL;
    }
    npred_readout_repr(&m->s[i].ro, buf, 4096);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n') buf[--n] = 0;
    return buf;
}

npred_status npred_model_create(npred_model **out, const char *config_json, const char *config_name,
                                int in_channels, int in_h, int in_w, const npred_model_session *sessions,
                                int n_sessions, int max_batch, uint64_t seed)
{
    *out = NULL;
    npred_model_config cfg;
    npred_status st = npred_model_config_parse(&cfg, config_json, config_name ? config_name : "model config");
    if (st) return st;
    npred_model *m;
    if ((st = npred_model_build(&m, &cfg, in_channels, in_h, in_w, sessions, n_sessions, max_batch))) return st;
    m->cfg.seed = (long long)seed;
    npred_rng rng;
    npred_rng_seed(&rng, seed);
    npred_core_init_params(&m->core, &m->t, &rng);
    for (int i = 0; i < m->n_sessions && !st; i++) {
        npred_session *s = &m->s[i];
        npred_readout_init_params(&s->ro, &m->t, &rng, sessions[i].mean_activity);
        if (m->cfg.readout.predicted_grid) {
            if (!sessions[i].coords || sessions[i].coord_dims < m->cfg.readout.gmp_input_dimensions) {
                st = npred_errorf(NPRED_ERR_ARG,
                                  "session %s: grid_mean_predictor needs %d-d cell_motor_coordinates of every neuron",
                                  s->key, m->cfg.readout.gmp_input_dimensions);
                break;
            }
            int d = m->cfg.readout.gmp_input_dimensions;
            double *g = malloc(sizeof(double) * (size_t)s->n * d);
            if (!g) {
                st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
                break;
            }
            for (int k = 0; k < s->n; k++)
                for (int j = 0; j < d; j++) g[(size_t)k * d + j] = sessions[i].coords[(size_t)k * sessions[i].coord_dims + j];
            st = npred_readout_set_source_grid(&s->ro, &m->t, g);
            free(g);
            if (st) st = npred_error_prefix(st, "session %s", s->key);
        }
        if (s->has_shifter) npred_mlp_init_default(&s->shifter, &m->t, &rng);
        if (s->has_modulator) npred_mlp_init_default(&s->modulator, &m->t, &rng);
        npred_encoder_init(&m->cfg.encoder, &m->t, s->p_enc, s->n, &rng);
    }
    if (st) {
        npred_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

npred_ptable *npred_model_table(npred_model *m) { return &m->t; }

/* Multiply-adds of one image: the core's convolutions and a point readout's
 * four taps per neuron and channel (the largest readout of the model). */
static double work_per_image(const npred_model *m)
{
    double w = 0;
    for (int l = 0; l < m->core.cfg.layers && l < NPRED_CORE_MAXLAYERS; l++)
        for (int i = 0; i < m->core.L[l].nconv && i < 3; i++) {
            const npred_conv2d_params *p = &m->core.L[l].cp[i];
            int oh = 0, ow = 0;
            if (npred_conv2d_output_size(p, &oh, &ow) != NPRED_OK) {
                npred_clear_error();
                continue;
            }
            w += (double)p->o * oh * ow * (p->c / (p->groups > 0 ? p->groups : 1)) * p->kh * p->kw;
        }
    int n = 0;
    for (int i = 0; i < m->n_sessions; i++)
        if (m->s[i].n > n) n = m->s[i].n;
    return w + 4.0 * n * m->core.out_c;
}

/* A forward or backward of fewer multiply-adds than this runs on the calling
 * thread. One 36x64 image of the SENSORIUM model is ~63 M: split over two
 * threads it needs ~20 fork/joins of ~50-150 us of work each, and on this
 * shared 2-core machine the second thread was always slower than none (best
 * 1.9 ms against 1.6 ms with passive waits; a median of 30-300 ms with
 * spinning waits while other processes ran). */
#define NPRED_MODEL_SERIAL_WORK 100e6

/* Enter / leave the serial mode of small batches: the OpenMP thread count of
 * the calling thread (which OpenBLAS follows too) is 1 in between. */
static int serial_begin(const npred_model *m, int B)
{
    int T = omp_get_max_threads();
    if (T > 1 && (double)B * work_per_image(m) < NPRED_MODEL_SERIAL_WORK) {
        omp_set_num_threads(1);
        return T;
    }
    return 0;
}

static void serial_end(int T)
{
    if (T) omp_set_num_threads(T);
}

static npred_status model_forward(npred_model *m, int si, const float *images, const float *pupil_center,
                                  const float *behavior, int B, int train, npred_rng *rng, const float *noise,
                                  float *out);

npred_status npred_model_forward(npred_model *m, int si, const float *images, const float *pupil_center,
                                 const float *behavior, int B, int train, npred_rng *rng, const float *noise,
                                 float *out)
{
    int T = serial_begin(m, B);
    npred_status st = model_forward(m, si, images, pupil_center, behavior, B, train, rng, noise, out);
    serial_end(T);
    return st;
}

/* The model's elementwise passes over the B x n outputs (the encoder's ELU + 1 and its
 * gradient) run on the threads from this many values: serial, they were about 1 % of
 * a SENSORIUM training step on one thread, during which the other threads wait
 * (docs/performance.md, round 6). Each value is computed as before: the same bits for
 * every thread count. */
#define MODEL_PAR_MIN 65536

static npred_status model_forward(npred_model *m, int si, const float *images, const float *pupil_center,
                                  const float *behavior, int B, int train, npred_rng *rng, const float *noise,
                                  float *out)
{
    if (si < 0 || si >= m->n_sessions) return npred_errorf(NPRED_ERR_ARG, "model: session index %d", si);
    if (B < 1 || B > m->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "model: batch of %d (capacity %d)", B, m->max_batch);
    npred_session *s = &m->s[si];
    npred_status st = npred_core_forward(&m->core, &m->t, images, B, train);
    if (st) return st;
    const float *shift = NULL;
    if (s->has_shifter) {
        if (!pupil_center)
            return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a shifter: pupil_center is required",
                                s->key);
        if ((st = npred_mlp_forward(&s->shifter, &m->t, pupil_center, B, s->shift))) return st;
        shift = s->shift;
    }
    if ((st = npred_readout_forward(&s->ro, &m->t, s->y, m->core.output, shift, B, train, rng, noise))) return st;
    size_t n = (size_t)B * s->n;
    if (m->cfg.encoder.type != NPRED_ENC_FIRING_RATE) {
        npred_encoder_forward(&m->cfg.encoder, &m->t, s->p_enc, s->y, B, s->n, s->raw, s->dist, s->out);
        if (out) memcpy(out, s->out, n * sizeof *out);
        m->last = si;
        m->B = B;
        m->train = train;
        return NPRED_OK;
    }
    if (s->has_modulator) {
        if (!behavior)
            return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a modulator: behavior is required", s->key);
        if ((st = npred_mlp_forward(&s->modulator, &m->t, behavior, B, NULL))) return st;
    }
    const float *g = s->has_modulator ? s->modulator.h[s->modulator.n_layers] : NULL;
    const float off = (float)m->cfg.elu_offset;
    float *z = s->z, *o = s->out;
    const float *y = s->y;
    if (!g && npred_core_bf16(&m->core)) { /* bf16: exp by a vectorised polynomial (docs/precision.md) */
        npred_elu1_offset_forward(o, z, y, off, n);
        if (out) memcpy(out, o, n * sizeof *out);
    } else {
#pragma omp parallel for schedule(static) if (n >= MODEL_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            z[i] = g ? y[i] * (npred_elu1(g[i])) + off : y[i] + off;
            o[i] = npred_elu1(z[i]);
            if (out) out[i] = o[i];
        }
    }
    m->last = si;
    m->B = B;
    m->train = train;
    return NPRED_OK;
}

static npred_status model_backward(npred_model *m, const float *dout, int detach_core, float *dimages,
                                   float *dpupil);

float *npred_model_dist(npred_model *m, int *K)
{
    *K = npred_encoder_outputs(&m->cfg.encoder);
    if (m->last < 0 || m->cfg.encoder.type == NPRED_ENC_FIRING_RATE) return NULL;
    return m->s[m->last].dist;
}

/* readout (dy already set), shifter and core backward */
static npred_status backward_readout(npred_model *m, npred_session *s, int detach_core, float *dimages, float *dpupil)
{
    int B = m->B;
    if (s->has_shifter) memset(s->dshift, 0, sizeof(float) * 2 * (size_t)B);
    /* the only writer of the core's output gradient: written, not zeroed and added to */
    npred_readout_backward_set(&s->ro, &m->t, s->dy, detach_core ? NULL : m->dcore,
                               s->has_shifter ? s->dshift : NULL);
    if (s->has_shifter) npred_mlp_backward(&s->shifter, &m->t, s->dshift, dpupil);
    if (!detach_core) return npred_core_backward(&m->core, &m->t, m->dcore, dimages);
    return NPRED_OK;
}

/* the distribution encoder's head, then the readout, shifter and core */
static npred_status backward_dist(npred_model *m, const float *ddist, int detach_core, float *dimages, float *dpupil)
{
    npred_session *s = &m->s[m->last];
    npred_encoder_backward(&m->cfg.encoder, &m->t, s->p_enc, ddist, m->B, s->n, s->raw, s->dist, s->dy);
    return backward_readout(m, s, detach_core, dimages, dpupil);
}

/* a prediction's forward keeps only what the next layer reads (npred_core.lean) */
static npred_status after_predict(void)
{
    return npred_errorf(NPRED_ERR_ARG, "model: backward after npred_model_predict, which keeps no activations "
                                       "(run npred_model_forward first)");
}

npred_status npred_model_backward_dist(npred_model *m, const float *ddist, int detach_core, float *dimages,
                                       float *dpupil)
{
    if (m->last < 0) return npred_errorf(NPRED_ERR_ARG, "model: backward without a forward");
    if (!detach_core && m->core.no_backward) return after_predict();
    if (m->cfg.encoder.type == NPRED_ENC_FIRING_RATE)
        return npred_errorf(NPRED_ERR_ARG, "model: a FiringRateEncoder has no distribution outputs");
    int T = serial_begin(m, m->B);
    npred_status st = backward_dist(m, ddist, detach_core, dimages, dpupil);
    serial_end(T);
    return st;
}

npred_status npred_model_backward(npred_model *m, const float *dout, int detach_core, float *dimages, float *dpupil)
{
    if (m->last < 0) return npred_errorf(NPRED_ERR_ARG, "model: backward without a forward");
    if (!detach_core && m->core.no_backward) return after_predict();
    int T = serial_begin(m, m->B);
    npred_status st = model_backward(m, dout, detach_core, dimages, dpupil);
    serial_end(T);
    return st;
}

static npred_status model_backward(npred_model *m, const float *dout, int detach_core, float *dimages,
                                   float *dpupil)
{
    npred_session *s = &m->s[m->last];
    int B = m->B;
    size_t n = (size_t)B * s->n;
    if (m->cfg.encoder.type != NPRED_ENC_FIRING_RATE) { /* through the fitted mean */
        npred_encoder_mean_backward(&m->cfg.encoder, s->dist, dout, (int64_t)n, s->ddist);
        return backward_dist(m, s->ddist, detach_core, dimages, dpupil);
    }
    /* d/dz [ELU(z) + 1] = 1 for z > 0, exp(z) = out otherwise */
    float *dy = s->dy, *z = s->z;
    const float *o = s->out, *y = s->y;
    const float *g = s->has_modulator ? s->modulator.h[s->modulator.n_layers] : NULL;
    /* with a modulator, dg (the gradient of its gain) goes into z: no longer needed */
#pragma omp parallel for schedule(static) if (n >= MODEL_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float d = dout[i] * (z[i] > 0 ? 1.0f : o[i]);
        if (g) {
            float gain = npred_elu1(g[i]);
            z[i] = d * y[i] * (g[i] > 0 ? 1.0f : gain);
            d *= gain;
        }
        dy[i] = d;
    }
    if (s->has_modulator) npred_mlp_backward(&s->modulator, &m->t, z, NULL);
    return backward_readout(m, s, detach_core, dimages, dpupil);
}

static double mlp_last_l1_mean(npred_mlp *mlp, npred_ptable *t, double gscale)
{
    int l = mlp->n_layers - 1;
    const npred_param *p = &t->items[mlp->p_w[l]];
    const float *w = npred_ptable_ptr(t, mlp->p_w[l]);
    float *g = npred_ptable_gradptr(t, mlp->p_w[l]);
    double acc = 0;
    for (size_t i = 0; i < p->count; i++) acc += fabs(w[i]);
    if (gscale != 0)
        for (size_t i = 0; i < p->count; i++) g[i] += (float)(gscale * ((w[i] > 0) - (w[i] < 0)) / (double)p->count);
    return acc / (double)p->count;
}

static double mlp_first_l2_mean(npred_mlp *mlp, npred_ptable *t, double gscale)
{
    const npred_param *p = &t->items[mlp->p_w[0]];
    const float *w = npred_ptable_ptr(t, mlp->p_w[0]);
    float *g = npred_ptable_gradptr(t, mlp->p_w[0]);
    double acc = 0;
    for (size_t i = 0; i < p->count; i++) acc += (double)w[i] * w[i];
    if (gscale != 0)
        for (size_t i = 0; i < p->count; i++) g[i] += (float)(gscale * 2.0 * w[i] / (double)p->count);
    return acc / (double)p->count;
}

double npred_model_regularizer(npred_model *m, int si, double gscale, int detach_core)
{
    npred_session *s = &m->s[si];
    double r = npred_core_regularizer(&m->core, &m->t, detach_core ? 0 : gscale);
    r += npred_readout_regularizer(&s->ro, &m->t, gscale);
    if (s->has_shifter && m->cfg.shifter == NPRED_SHIFTER_STATIC_AFFINE)
        r += m->cfg.gamma_shifter * mlp_first_l2_mean(&s->shifter, &m->t, gscale * m->cfg.gamma_shifter);
    if (s->has_modulator)
        r += m->cfg.gamma_modulator * mlp_last_l1_mean(&s->modulator, &m->t, gscale * m->cfg.gamma_modulator);
    return r;
}

void npred_model_regularizer_parts(npred_model *m, int si, double *core, double *readout)
{
    *core = npred_core_regularizer(&m->core, &m->t, 0);
    *readout = npred_readout_regularizer(&m->s[si].ro, &m->t, 0);
}

/* ---- public API ---- */

int npred_model_n_sessions(const npred_model *m) { return m->n_sessions; }
const char *npred_model_session_key(const npred_model *m, int i)
{
    return i >= 0 && i < m->n_sessions ? m->s[i].key : NULL;
}
int npred_model_session_neurons(const npred_model *m, int i) { return i >= 0 && i < m->n_sessions ? m->s[i].n : 0; }
int npred_model_session_index(const npred_model *m, const char *key)
{
    for (int i = 0; i < m->n_sessions; i++)
        if (!strcmp(m->s[i].key, key)) return i;
    if (!m->cfg.multi_readout && m->n_sessions == 1 && (!key || !key[0])) return 0;
    return -1;
}
void npred_model_input_shape(const npred_model *m, int *c, int *h, int *w)
{
    *c = m->in_c;
    *h = m->in_h;
    *w = m->in_w;
}
void npred_model_core_output_shape(const npred_model *m, int *c, int *h, int *w)
{
    *c = m->core.out_c;
    *h = m->core.out_h;
    *w = m->core.out_w;
}
npred_status npred_model_set_precision(npred_model *m, npred_precision p)
{
    if (!m) return npred_errorf(NPRED_ERR_ARG, "npred_model_set_precision: no model");
    if (p != NPRED_PRECISION_FP32 && p != NPRED_PRECISION_BF16)
        return npred_errorf(NPRED_ERR_ARG, "npred_model_set_precision: unknown precision %d (fp32 0, bf16 1)", (int)p);
    const int on = p == NPRED_PRECISION_BF16;
    npred_status st = npred_core_set_bf16(&m->core, on);
    for (int i = 0; !st && i < m->n_sessions; i++) st = npred_readout_set_bf16(&m->s[i].ro, on);
    if (st) { /* all fp32 again (never fails) */
        npred_core_set_bf16(&m->core, 0);
        for (int i = 0; i < m->n_sessions; i++) npred_readout_set_bf16(&m->s[i].ro, 0);
    }
    return st;
}

npred_precision npred_model_precision(const npred_model *m)
{
    return npred_core_bf16(&m->core) ? NPRED_PRECISION_BF16 : NPRED_PRECISION_FP32;
}

/* madvise(DONTNEED) the whole pages inside [p, p + n floats) */
static void release_pages(float *p, size_t n)
{
#ifdef MADV_DONTNEED
    long pg = sysconf(_SC_PAGESIZE);
    if (!p || pg <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg,
              b = ((uintptr_t)(p + n)) / (uintptr_t)pg * (uintptr_t)pg;
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
#else
    (void)p, (void)n;
#endif
}

void npred_model_release_backward_scratch(npred_model *m)
{
    if (!m || !m->max_batch) return;
    size_t nc = (size_t)m->max_batch * m->core.out_c * m->core.out_h * m->core.out_w;
    if (m->owns_dcore) release_pages(m->dcore, nc);
    if (m->ro_nhwc) { /* each Gaussian readout's block: xt, then dxt (gaussian.c views) */
        size_t a16 = (nc + 15) / 16 * 16;
        release_pages(m->ro_nhwc + a16, a16);
    }
}

_Static_assert((int)NPRED_RECOMPUTE_AUTO == NPRED_CORE_RECOMPUTE_AUTO && (int)NPRED_RECOMPUTE_OFF == NPRED_CORE_RECOMPUTE_OFF &&
                   (int)NPRED_RECOMPUTE_ON == NPRED_CORE_RECOMPUTE_ON &&
                   (int)NPRED_RECOMPUTE_PARTIAL == NPRED_CORE_RECOMPUTE_PARTIAL,
               "the model's recompute modes are the core's");

npred_status npred_model_set_recompute(npred_model *m, npred_recompute mode)
{
    if (!m) return npred_errorf(NPRED_ERR_ARG, "npred_model_set_recompute: no model");
    return npred_core_set_recompute(&m->core, (int)mode);
}

int npred_model_recomputes(const npred_model *m) { return m && m->core.rc; }

npred_status npred_recompute_parse(const char *name, npred_recompute *out)
{
    if (name && !strcmp(name, "auto")) *out = NPRED_RECOMPUTE_AUTO;
    else if (name && !strcmp(name, "on")) *out = NPRED_RECOMPUTE_ON;
    else if (name && !strcmp(name, "off")) *out = NPRED_RECOMPUTE_OFF;
    else if (name && !strcmp(name, "partial")) *out = NPRED_RECOMPUTE_PARTIAL;
    else return npred_errorf(NPRED_ERR_ARG, "recompute '%s': expected auto, on, off or partial", name ? name : "(null)");
    return NPRED_OK;
}

npred_status npred_precision_parse(const char *name, npred_precision *out)
{
    if (name && !strcmp(name, "fp32")) *out = NPRED_PRECISION_FP32;
    else if (name && !strcmp(name, "bf16")) *out = NPRED_PRECISION_BF16;
    else return npred_errorf(NPRED_ERR_ARG, "precision '%s': expected fp32 or bf16", name ? name : "(null)");
    return NPRED_OK;
}

const char *npred_precision_name(npred_precision p) { return p == NPRED_PRECISION_BF16 ? "bf16" : "fp32"; }

int npred_model_has_shifter(const npred_model *m) { return m->cfg.shifter != NPRED_SHIFTER_NONE; }
int npred_model_behavior_channels(const npred_model *m) { return m->cfg.modulator ? m->cfg.modulator_input_channels : 0; }

static npred_status find_session(const npred_model *m, const char *key, int *si)
{
    *si = npred_model_session_index(m, key ? key : "");
    if (*si >= 0) return NPRED_OK;
    char known[512] = "";
    size_t k = 0;
    for (int i = 0; i < m->n_sessions && k + 70 < sizeof known; i++)
        k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", m->s[i].key);
    return npred_errorf(NPRED_ERR_ARG, "unknown session '%s' (this model has: %s)", key ? key : "", known);
}

npred_status npred_model_input_gradient(npred_model *m, const char *key, const float *images, int B,
                                        const float *pupil_center, const float *behavior, const float *weights,
                                        float *grad_out, float *rates_out)
{
    int si;
    npred_status st = find_session(m, key, &si);
    if (st) return st;
    if (B < 0) return npred_errorf(NPRED_ERR_ARG, "negative batch");
    if (B > 0 && (!images || !weights || !grad_out))
        return npred_errorf(NPRED_ERR_ARG, "input gradient: images, weights and grad_out are required");
    size_t img = (size_t)m->in_c * m->in_h * m->in_w;
    int n = m->s[si].n, bc = m->cfg.modulator ? m->cfg.modulator_input_channels : 0;
    for (int b0 = 0; b0 < B; b0 += m->max_batch) {
        int nb = B - b0 < m->max_batch ? B - b0 : m->max_batch;
        st = npred_model_forward(m, si, images + (size_t)b0 * img, pupil_center ? pupil_center + (size_t)b0 * 2 : NULL,
                                 behavior ? behavior + (size_t)b0 * bc : NULL, nb, 0, NULL, NULL,
                                 rates_out ? rates_out + (size_t)b0 * n : NULL);
        if (st) return st;
        float *g = grad_out + (size_t)b0 * img;
        memset(g, 0, (size_t)nb * img * sizeof *g);
        m->t.grads_off = 1;
        st = npred_model_backward(m, weights + (size_t)b0 * n, 0, g, NULL);
        m->t.grads_off = 0;
        if (st) return st;
    }
    return NPRED_OK;
}

npred_status npred_model_predict(npred_model *m, const char *key, const float *images, int B,
                                 const float *pupil_center, const float *behavior, float *out)
{
    int si;
    npred_status st = find_session(m, key, &si);
    if (st) return st;
    if (B < 0) return npred_errorf(NPRED_ERR_ARG, "negative batch");
    npred_status cs = npred_model_check_allocated(m, "predict");
    if (cs) return cs;
    size_t img = (size_t)m->in_c * m->in_h * m->in_w;
    int n = m->s[si].n, bc = m->cfg.modulator ? m->cfg.modulator_input_channels : 0;
    m->core.lean = 1; /* no backward follows: the core keeps only the layer outputs */
    for (int b0 = 0; b0 < B; b0 += m->max_batch) {
        int nb = B - b0 < m->max_batch ? B - b0 : m->max_batch;
        st = npred_model_forward(m, si, images + (size_t)b0 * img, pupil_center ? pupil_center + (size_t)b0 * 2 : NULL,
                                 behavior ? behavior + (size_t)b0 * bc : NULL, nb, 0, NULL, NULL, out + (size_t)b0 * n);
        if (st) break;
    }
    m->core.lean = 0;
    return st;
}

char *npred_model_config_json(const npred_model *m)
{
    cJSON *j = npred_model_config_to_json(&m->cfg);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}
