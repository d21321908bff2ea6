/* The public video model (include/npred/video_model.h): build, initialise and run the kit's VideoFiringRateEncoder through the internal encoder. */
#include "model/video_model.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* the core's temporal cut-off: a 3D core declared (not allocated) for a long clip */
static npred_status temporal_cutoff(const npred_video_encoder_config *cfg, int in_c, int in_h, int in_w, int *cut)
{
    *cut = 0;
    if (cfg->core2d) return NPRED_OK;
    enum { PROBE_T = 1 << 20 };
    npred_core3d core;
    npred_ptable t;
    npred_ptable_init(&t);
    memset(&core, 0, sizeof core);
    npred_core3d_config cc = cfg->core;
    cc.input_channels = in_c;
    npred_status st = npred_core3d_declare(&core, &cc, "core.", PROBE_T, in_h, in_w, &t);
    if (!st) *cut = PROBE_T - core.out_t;
    npred_core3d_free(&core);
    npred_ptable_free(&t);
    return st;
}

void npred_video_model_free(npred_video_model *m)
{
    if (!m) return;
    if (m->e) {
        npred_video_encoder_free(m->e);
        free(m->e);
    }
    free(m->config_json);
    free(m->loader_json);
    free(m->keys);
    free(m->n_neurons);
    free(m);
}

/* a new encoder for T frames and max_batch clips */
static npred_status new_encoder(const npred_video_model *m, int T, int max_batch, npred_video_encoder **out)
{
    *out = NULL;
    npred_video_encoder *e = calloc(1, sizeof *e);
    const char **keys = calloc((size_t)m->n_sessions, sizeof *keys);
    npred_status st = e && keys ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "video model: out of memory");
    for (int i = 0; !st && i < m->n_sessions; i++) keys[i] = m->keys[i];
    if (!st) {
        st = npred_video_encoder_create(e, &m->cfg, m->in_c, T, m->in_h, m->in_w, m->n_sessions, keys, m->n_neurons,
                                        max_batch);
        if (st) npred_video_encoder_free(e);
    }
    free(keys);
    if (st) {
        free(e);
        return st;
    }
    *out = e;
    return NPRED_OK;
}

npred_status npred_video_model_reserve(npred_video_model *m, int T, int max_batch)
{
    if (max_batch < 1) max_batch = m->max_batch;
    if (T <= m->cutoff)
        return npred_errorf(NPRED_ERR_ARG, "video model: clips of %d frames give no output (the core needs more than %d)",
                            T, m->cutoff);
    if (m->e && m->e->in_t == T && m->e->max_batch >= max_batch) return NPRED_OK;
    npred_video_encoder *e;
    npred_status st = new_encoder(m, T, max_batch, &e);
    if (st) return st;
    if (m->e) {
        const npred_ptable *a = &m->e->t;
        npred_ptable *b = &e->t;
        if (a->n != b->n || a->n_params != b->n_params || a->n_buffers != b->n_buffers) {
            npred_video_encoder_free(e);
            free(e);
            return npred_errorf(NPRED_ERR_UNSUPPORTED, "video model: the parameter table changed with the clip length");
        }
        memcpy(b->data, a->data, a->n_params * sizeof(float));
        memcpy(b->bufdata, a->bufdata, a->n_buffers * sizeof(float));
        npred_video_encoder_free(m->e);
        free(m->e);
    }
    m->e = e;
    return NPRED_OK;
}

npred_status npred_video_model_build(npred_video_model **out, const char *config_json, const char *where, int in_c,
                                     int in_h, int in_w, const char *const *keys, const int *n_neurons, int n_sessions,
                                     int max_batch, cJSON **parsed)
{
    *out = NULL;
    if (!where) where = "video model config";
    if (n_sessions < 1 || n_sessions > NPRED_VIDEO_MAX_SESSIONS)
        return npred_errorf(NPRED_ERR_ARG, "video model: %d sessions (1..%d)", n_sessions, NPRED_VIDEO_MAX_SESSIONS);
    if (max_batch < 1) return npred_errorf(NPRED_ERR_ARG, "video model: max_batch %d", max_batch);
    if (in_c < 1 || in_h < 1 || in_w < 1)
        return npred_errorf(NPRED_ERR_ARG, "video model: input shape (%d, %d, %d)", in_c, in_h, in_w);
    if (!config_json) return npred_errorf(NPRED_ERR_ARG, "%s: no config", where);
    cJSON *j = cJSON_Parse(config_json);
    if (!j) return npred_errorf(NPRED_ERR_CONFIG, "%s: not valid JSON", where);
    npred_video_model *m = calloc(1, sizeof *m);
    npred_status st = m ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "video model: out of memory");
    if (!st) st = npred_video_encoder_config_from_cjson(&m->cfg, j, where);
    const char *ct = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "core_type"));
    if (!st) {
        snprintf(m->core_type, sizeof m->core_type, "%s", ct ? ct : "");
        m->config_json = cJSON_PrintUnformatted(j);
        m->keys = calloc((size_t)n_sessions, sizeof *m->keys);
        m->n_neurons = calloc((size_t)n_sessions, sizeof *m->n_neurons);
        if (!m->config_json || !m->keys || !m->n_neurons) st = npred_errorf(NPRED_ERR_NOMEM, "video model: out of memory");
    }
    if (!st) {
        m->in_c = in_c, m->in_h = in_h, m->in_w = in_w;
        m->max_batch = max_batch;
        m->n_sessions = n_sessions;
    }
    for (int i = 0; !st && i < n_sessions; i++) {
        if (!keys[i] || !keys[i][0] || strlen(keys[i]) >= sizeof m->keys[i])
            st = npred_errorf(NPRED_ERR_ARG, "video model: session %d: missing or too long data key", i);
        else if (n_neurons[i] < 1)
            st = npred_errorf(NPRED_ERR_ARG, "video model: session %s: %d neurons", keys[i], n_neurons[i]);
        for (int k = 0; !st && k < i; k++)
            if (!strcmp(keys[k], keys[i])) st = npred_errorf(NPRED_ERR_ARG, "video model: duplicate session %s", keys[i]);
        if (!st) {
            snprintf(m->keys[i], sizeof m->keys[i], "%s", keys[i]);
            m->n_neurons[i] = n_neurons[i];
        }
    }
    if (!st) st = temporal_cutoff(&m->cfg, in_c, in_h, in_w, &m->cutoff);
    if (!st) st = npred_video_model_reserve(m, m->cutoff + 1, max_batch);
    if (st) {
        if (st != NPRED_ERR_NOMEM && strncmp(npred_last_error(), where, strlen(where)))
            st = npred_error_prefix(st, "%s", where);
        npred_video_model_free(m);
        cJSON_Delete(j);
        return st;
    }
    if (parsed) *parsed = j;
    else cJSON_Delete(j);
    *out = m;
    return NPRED_OK;
}

npred_status npred_video_model_create(npred_video_model **out, const char *config_json, const char *where,
                                      int in_channels, int in_h, int in_w, const npred_video_model_session *sessions,
                                      int n_sessions, int max_batch)
{
    *out = NULL;
    if (!sessions || n_sessions < 1) return npred_errorf(NPRED_ERR_ARG, "video model: no sessions");
    if (n_sessions > NPRED_VIDEO_MAX_SESSIONS)
        return npred_errorf(NPRED_ERR_ARG, "video model: %d sessions (at most %d)", n_sessions, NPRED_VIDEO_MAX_SESSIONS);
    const char *keys[NPRED_VIDEO_MAX_SESSIONS];
    int nn[NPRED_VIDEO_MAX_SESSIONS];
    for (int i = 0; i < n_sessions; i++) keys[i] = sessions[i].key, nn[i] = sessions[i].n_neurons;
    npred_video_model *m;
    cJSON *j = NULL;
    npred_status st = npred_video_model_build(&m, config_json, where, in_channels, in_h, in_w, keys, nn, n_sessions, max_batch, &j);
    if (st) return st;
    if (!cJSON_GetObjectItemCaseSensitive(j, "seed"))
        st = npred_errorf(NPRED_ERR_CONFIG, "%s: key 'seed' is required (make_video_model has no default)",
                          where ? where : "video model config");
    cJSON_Delete(j);
    npred_rng rng;
    npred_rng_seed(&rng, (uint64_t)m->cfg.seed);
    if (!st) st = npred_video_encoder_init_params(m->e, sessions, &rng);
    if (st) {
        npred_video_model_free(m);
        return st;
    }
    *out = m;
    return NPRED_OK;
}

/* ---- running ---- */

static npred_status find_session(const npred_video_model *m, const char *key, int *si)
{
    *si = key ? npred_video_model_session_index(m, key) : -1;
    if (*si >= 0) return NPRED_OK;
    char known[512] = "";
    size_t k = 0;
    for (int i = 0; i < m->n_sessions && k + 100 < sizeof known; i++)
        k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", m->keys[i]);
    return npred_errorf(NPRED_ERR_ARG, "unknown session '%s' (this model has: %s)", key ? key : "(null)", known);
}

npred_status npred_video_model_predict(npred_video_model *m, const char *key, const float *videos, int B, int C,
                                       int T, int H, int W, const float *pupil_center, float *rates_out)
{
    int si;
    npred_status st = find_session(m, key, &si);
    if (st) return st;
    if (C != m->in_c || H != m->in_h || W != m->in_w)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s: videos of %d channels, %dx%d frames; the model takes %d "
                            "channels, %dx%d frames", key, C, H, W, m->in_c, m->in_h, m->in_w);
    if (B < 0) return npred_errorf(NPRED_ERR_ARG, "negative batch");
    if (B == 0) return NPRED_OK;
    if (!videos || !rates_out) return npred_errorf(NPRED_ERR_ARG, "video model predict: videos and rates_out are required");
    if (!pupil_center && m->cfg.use_shifter)
        return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a shifter: pupil_center (B, 2, T) is required", key);
    if (T <= m->cutoff)
        return npred_errorf(NPRED_ERR_SHAPE, "session %s: clips of %d frames; the model's core needs at least %d", key, T,
                            m->cutoff + 1);
    int chunk = B < m->max_batch ? B : m->max_batch;
    if ((st = npred_video_model_reserve(m, T, chunk))) return st;
    size_t clip = (size_t)C * T * H * W, out = (size_t)(T - m->cutoff) * m->n_neurons[si];
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int nb = B - b0 < chunk ? B - b0 : chunk;
        st = npred_video_encoder_forward(m->e, si, videos + (size_t)b0 * clip,
                                         m->cfg.use_shifter ? pupil_center + (size_t)b0 * 2 * T : NULL, nb, 0, NULL,
                                         NULL, rates_out + (size_t)b0 * out);
        if (st) return st;
    }
    return NPRED_OK;
}

/* ---- introspection ---- */

int npred_video_model_n_sessions(const npred_video_model *m) { return m->n_sessions; }
const char *npred_video_model_session_key(const npred_video_model *m, int i)
{
    return i >= 0 && i < m->n_sessions ? m->keys[i] : NULL;
}
int npred_video_model_session_neurons(const npred_video_model *m, int i)
{
    return i >= 0 && i < m->n_sessions ? m->n_neurons[i] : 0;
}
int npred_video_model_session_index(const npred_video_model *m, const char *key)
{
    for (int i = 0; key && i < m->n_sessions; i++)
        if (!strcmp(m->keys[i], key)) return i;
    return -1;
}
void npred_video_model_input_shape(const npred_video_model *m, int *c, int *h, int *w)
{
    *c = m->in_c, *h = m->in_h, *w = m->in_w;
}
int npred_video_model_temporal_cutoff(const npred_video_model *m) { return m->cutoff; }
int npred_video_model_output_frames(const npred_video_model *m, int T) { return T > m->cutoff ? T - m->cutoff : 0; }
int npred_video_model_has_shifter(const npred_video_model *m) { return m->cfg.use_shifter; }
const char *npred_video_model_core_type(const npred_video_model *m) { return m->core_type; }
int npred_video_model_uses_gru(const npred_video_model *m) { return m->cfg.use_gru; }
size_t npred_video_model_param_count(const npred_video_model *m, const char *prefix)
{
    return npred_ptable_count(&m->e->t, prefix && *prefix ? prefix : NULL);
}

char *npred_video_model_config_json(const npred_video_model *m)
{
    char *s = strdup(m->config_json);
    if (!s) npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    return s;
}

const char *npred_video_model_loader_json(const npred_video_model *m) { return m->loader_json; }

npred_status npred_video_model_set_loader_json(npred_video_model *m, const char *json)
{
    char *copy = NULL;
    if (json) {
        cJSON *o = cJSON_Parse(json);
        int ok = cJSON_IsObject(o);
        if (ok) copy = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!ok) return npred_errorf(NPRED_ERR_FORMAT, "video loader record: not a JSON object");
        if (!copy) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    free(m->loader_json);
    m->loader_json = copy;
    return NPRED_OK;
}

typedef struct {
    char *buf;
    size_t n, k;
    int fail;
} textbuf;

static void put(textbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(textbuf *s, const char *fmt, ...)
{
    while (!s->fail) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(s->buf + s->k, s->n - s->k, fmt, ap);
        va_end(ap);
        if (w < 0) {
            s->fail = 1;
            return;
        }
        if ((size_t)w < s->n - s->k) {
            s->k += (size_t)w;
            return;
        }
        size_t nn = 2 * s->n + (size_t)w;
        char *b = realloc(s->buf, nn);
        if (!b) s->fail = 1;
        else s->buf = b, s->n = nn;
    }
}

char *npred_video_model_describe(const npred_video_model *m)
{
    textbuf s = {malloc(1024), 1024, 0, 0};
    if (!s.buf) return NULL;
    s.buf[0] = 0;
    const npred_video_encoder *e = m->e;
    const npred_video_encoder_config *c = &m->cfg;
    put(&s, "video model (SENSORIUM 2023 VideoFiringRateEncoder), core_type %s%s%s\n", m->core_type,
        c->use_gru ? " + ConvGRU" : "", c->use_shifter ? " + MLP shifter" : "");
    put(&s, "input: videos (B, %d, T, %d, %d)%s\n", m->in_c, m->in_h, m->in_w,
        c->use_shifter ? ", pupil_center (B, 2, T)" : "");
    put(&s, "temporal cut-off: %d frames (a clip of T frames gives T - %d output frames)\n", m->cutoff, m->cutoff);
    put(&s, "core: %zu parameters; output %d channels, %dx%d\n", npred_ptable_count(&e->t, "core."),
        c->core2d ? e->core2d.out_c : e->core.out_c, c->core2d ? e->core2d.out_h : e->core.out_h,
        c->core2d ? e->core2d.out_w : e->core.out_w);
    if (c->use_gru)
        put(&s, "gru: %zu parameters; %d -> %d channels, input kernel %d, recurrent kernel %d; output %dx%d\n",
            npred_ptable_count(&e->t, "gru_module."), c->gru.input_channels, c->gru.rec_channels, c->gru.input_kern,
            c->gru.rec_kern, e->feat_h, e->feat_w);
    for (int i = 0; i < m->n_sessions; i++) {
        char pre[160];
        snprintf(pre, sizeof pre, "readout.%s.", m->keys[i]);
        put(&s, "session %s: %d neurons; readout FullGaussian2d%s, %zu parameters", m->keys[i], m->n_neurons[i],
            c->predicted_grid ? " (cortex grid predictor)" : "", npred_ptable_count(&e->t, pre));
        if (c->use_shifter) {
            snprintf(pre, sizeof pre, "shifter.%s.", m->keys[i]);
            put(&s, "; shifter %zu parameters", npred_ptable_count(&e->t, pre));
        }
        put(&s, "; rates (B, T', %d)\n", m->n_neurons[i]);
    }
    put(&s, "loader record: %s\n", m->loader_json ? m->loader_json : "none");
    put(&s, "total: %zu parameters\n", npred_ptable_count(&e->t, NULL));
    if (s.fail) {
        free(s.buf);
        npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return s.buf;
}
