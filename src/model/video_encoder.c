/* The kit's VideoFiringRateEncoder with a 3D core (see video_encoder.h). */
#include "model/video_encoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int npred_video_encoder_find(const npred_video_encoder *e, const char *key)
{
    for (int i = 0; i < e->n_sessions; i++)
        if (!strcmp(e->s[i].key, key)) return i;
    return -1;
}

static npred_status declare_sessions(npred_video_encoder *e, const char *const *keys, const int *n_neurons)
{
    const npred_video_encoder_config *c = &e->cfg;
    npred_status st;
    for (int i = 0; i < e->n_sessions; i++) {
        npred_video_session *s = &e->s[i];
        if (snprintf(s->key, sizeof s->key, "%s", keys[i]) >= (int)sizeof s->key)
            return npred_errorf(NPRED_ERR_ARG, "video encoder: data key '%s' too long", keys[i]);
        s->n = n_neurons[i];
        npred_readout_config rc;
        npred_readout_config_default(&rc, NPRED_READOUT_FULL_GAUSSIAN2D, e->feat_c, e->feat_h, e->feat_w, s->n);
        rc.bias = c->readout_bias;
        rc.init_mu_range = c->init_mu_range;
        rc.init_sigma = c->init_sigma;
        rc.feature_reg_weight = c->gamma_readout;
        rc.gauss_type = c->gauss_type;
        rc.predicted_grid = c->predicted_grid;
        rc.gmp_input_dimensions = c->gmp_input_dimensions;
        rc.gmp_hidden_layers = c->gmp_hidden_layers;
        rc.gmp_hidden_features = c->gmp_hidden_features;
        rc.gmp_final_tanh = c->gmp_final_tanh;
        char prefix[160];
        snprintf(prefix, sizeof prefix, "readout.%s.", s->key);
        if ((st = npred_readout_declare(&s->ro, &rc, prefix, &e->t))) return st;
    }
    if (!c->use_shifter) return NPRED_OK;
    for (int i = 0; i < e->n_sessions; i++) {
        npred_video_session *s = &e->s[i];
        int dims[NPRED_MLP_MAXLAYERS + 1];
        npred_act_kind acts[NPRED_MLP_MAXLAYERS];
        if (c->shift_layers < 1 || c->shift_layers > NPRED_MLP_MAXLAYERS)
            return npred_errorf(NPRED_ERR_CONFIG, "video encoder: shift_layers %d (1..%d)", c->shift_layers,
                                NPRED_MLP_MAXLAYERS);
        for (int l = 0; l <= c->shift_layers; l++)
            dims[l] = l == 0 || l == c->shift_layers ? 2 : c->hidden_channels_shifter;
        for (int l = 0; l < c->shift_layers; l++) acts[l] = NPRED_ACT_TANH;
        char prefix[160];
        snprintf(prefix, sizeof prefix, "shifter.%s.mlp.", s->key);
        if ((st = npred_mlp_declare(&s->shifter, &e->t, prefix, c->shift_layers, dims, acts, 1, 1))) return st;
        s->has_shifter = 1;
    }
    return NPRED_OK;
}

static npred_status encoder_build(npred_video_encoder *e, const npred_video_encoder_config *cfg, int in_c, int in_t,
                                  int in_h, int in_w, int n_sessions, const char *const *keys, const int *n_neurons,
                                  int max_batch)
{
    e->cfg = *cfg;
    e->last = -1;
    npred_ptable_init(&e->t);
    if (n_sessions < 1 || n_sessions > NPRED_VIDEO_MAX_SESSIONS)
        return npred_errorf(NPRED_ERR_ARG, "video encoder: %d sessions (1..%d)", n_sessions, NPRED_VIDEO_MAX_SESSIONS);
    e->n_sessions = n_sessions;
    e->in_c = in_c, e->in_t = in_t, e->in_h = in_h, e->in_w = in_w;
    e->max_batch = max_batch;
    npred_status st;
    int core_c, core_h, core_w;
    if (cfg->core2d) {
        npred_core_config cc = cfg->core2d_cfg;
        if (cc.input_channels != in_c)
            return npred_errorf(NPRED_ERR_CONFIG, "video encoder: the core takes %d channels, the videos have %d",
                                cc.input_channels, in_c);
        if ((st = npred_core_declare(&e->core2d, &cc, "core.", in_h, in_w, &e->t))) return st;
        core_c = e->core2d.out_c, core_h = e->core2d.out_h, core_w = e->core2d.out_w;
        e->out_t = in_t;
    } else {
        npred_core3d_config cc = cfg->core;
        if (cc.input_channels && cc.input_channels != in_c)
            return npred_errorf(NPRED_ERR_CONFIG, "video encoder: the core takes %d channels, the videos have %d",
                                cc.input_channels, in_c);
        cc.input_channels = in_c;
        if ((st = npred_core3d_declare(&e->core, &cc, "core.", in_t, in_h, in_w, &e->t))) return st;
        core_c = e->core.out_c, core_h = e->core.out_h, core_w = e->core.out_w;
        e->out_t = e->core.out_t;
    }
    e->feat_c = core_c, e->feat_h = core_h, e->feat_w = core_w;
    if (cfg->use_gru) {
        npred_convgru_config gc = cfg->gru;
        if (gc.input_channels != e->feat_c)
            return npred_errorf(NPRED_ERR_CONFIG, "video encoder: the GRU takes %d channels, the core gives %d",
                                gc.input_channels, e->feat_c);
        if ((st = npred_convgru_declare(&e->gru, &gc, "gru_module.", e->feat_h, e->feat_w, &e->t))) return st;
        e->feat_c = gc.rec_channels, e->feat_h = e->gru.ho, e->feat_w = e->gru.wo;
    }
    if ((st = declare_sessions(e, keys, n_neurons))) return st;
    if ((st = npred_ptable_alloc(&e->t))) return st;
    if (cfg->core2d) {
        if ((st = npred_core_setup(&e->core2d, &e->t, max_batch * in_t))) return st;
        npred_core_init_buffers(&e->core2d, &e->t);
        size_t nv = (size_t)max_batch * in_t * in_c * in_h * in_w, nk = (size_t)max_batch * in_t * core_c * core_h * core_w;
        e->vframes = malloc(nv * sizeof(float));
        e->dvframes = malloc(nv * sizeof(float));
        e->dcore2d = malloc(nk * sizeof(float));
        e->feat2d = malloc(nk * sizeof(float));
        if (!e->vframes || !e->dvframes || !e->dcore2d || !e->feat2d)
            return npred_errorf(NPRED_ERR_NOMEM, "video encoder: out of memory");
    } else {
        if ((st = npred_core3d_setup(&e->core, &e->t, max_batch))) return st;
        npred_core3d_init_buffers(&e->core, &e->t);
    }
    if (cfg->use_gru && (st = npred_convgru_setup(&e->gru, max_batch, e->out_t))) return st;
    size_t BT = (size_t)max_batch * e->out_t, nmax = 1;
    for (int i = 0; i < n_sessions; i++) {
        npred_video_session *s = &e->s[i];
        if ((st = npred_readout_setup(&s->ro, &e->t, (int)BT))) return st;
        if (s->has_shifter && (st = npred_mlp_setup(&s->shifter, (int)BT))) return st;
        if ((size_t)s->n > nmax) nmax = (size_t)s->n;
    }
    size_t nf = BT * e->feat_c * e->feat_h * e->feat_w;
    size_t ncore = BT * core_c * core_h * core_w; /* the GRU's input gradient reuses dframes */
    e->frames = malloc(nf * sizeof(float));
    e->dframes = malloc((nf > ncore ? nf : ncore) * sizeof(float));
    e->dfeat = malloc(nf * sizeof(float));
    e->pupil = malloc(BT * 2 * sizeof(float));
    e->dpupil = malloc(BT * 2 * sizeof(float));
    e->shift = malloc(BT * 2 * sizeof(float));
    e->dshift = malloc(BT * 2 * sizeof(float));
    e->y = malloc(BT * nmax * sizeof(float));
    e->z = malloc(BT * nmax * sizeof(float));
    e->out = malloc(BT * nmax * sizeof(float));
    e->dy = malloc(BT * nmax * sizeof(float));
    if (cfg->use_gru && !(e->state = malloc((size_t)max_batch * e->feat_c * e->feat_h * e->feat_w * sizeof(float))))
        return npred_errorf(NPRED_ERR_NOMEM, "video encoder: out of memory");
    if (!e->frames || !e->dframes || !e->dfeat || !e->pupil || !e->dpupil || !e->shift || !e->dshift || !e->y ||
        !e->z || !e->out || !e->dy)
        return npred_errorf(NPRED_ERR_NOMEM, "video encoder: out of memory");
    return NPRED_OK;
}

npred_status npred_video_encoder_create(npred_video_encoder *e, const npred_video_encoder_config *cfg, int in_c,
                                        int in_t, int in_h, int in_w, int n_sessions, const char *const *keys,
                                        const int *n_neurons, int max_batch)
{
    memset(e, 0, sizeof *e);
    npred_status st = encoder_build(e, cfg, in_c, in_t, in_h, in_w, n_sessions, keys, n_neurons, max_batch);
    if (st != NPRED_OK) npred_video_encoder_free(e); /* what was built so far; e is zeroed again */
    return st;
}

void npred_video_encoder_free(npred_video_encoder *e)
{
    if (e->cfg.core2d) npred_core_free(&e->core2d);
    else npred_core3d_free(&e->core);
    free(e->vframes), free(e->dvframes), free(e->dcore2d), free(e->feat2d);
    if (e->cfg.use_gru) npred_convgru_free(&e->gru);
    for (int i = 0; i < e->n_sessions; i++) {
        npred_readout_free(&e->s[i].ro);
        if (e->s[i].has_shifter) npred_mlp_free(&e->s[i].shifter);
    }
    free(e->frames), free(e->dframes), free(e->dfeat);
    free(e->pupil), free(e->dpupil), free(e->shift), free(e->dshift);
    free(e->y), free(e->z), free(e->out), free(e->dy), free(e->state);
    npred_ptable_free(&e->t);
    memset(e, 0, sizeof *e);
}

static inline float elu1(float z) { return z > 0 ? z + 1.0f : expf(z); }

npred_status npred_video_encoder_forward(npred_video_encoder *e, int si, const float *videos, const float *pupil_center,
                                         int B, int train, npred_rng *rng, const float *noise, float *out)
{
    if (si < 0 || si >= e->n_sessions) return npred_errorf(NPRED_ERR_ARG, "video encoder: session index %d", si);
    if (B < 1 || B > e->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "video encoder: batch of %d (capacity %d)", B, e->max_batch);
    npred_video_session *s = &e->s[si];
    const float *feat;
    npred_status st;
    int T1 = e->out_t, K = e->feat_c;
    if (e->cfg.core2d) {
        /* (B, C, T, H, W) -> frames (B*T, C, H, W) -> 2D core -> (B*T, Kc, h, w) -> (B, Kc, T, h, w) */
        int C = e->in_c, Kc = e->core2d.out_c;
        size_t HW = (size_t)e->in_h * e->in_w, hw2 = (size_t)e->core2d.out_h * e->core2d.out_w;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                for (int t = 0; t < T1; t++)
                    memcpy(e->vframes + (((size_t)b * T1 + t) * C + c) * HW, videos + (((size_t)b * C + c) * T1 + t) * HW,
                           HW * sizeof(float));
        e->core2d.fft = !train; /* eval: the large convolutions by FFT (as the stream's) */
        if ((st = npred_core_forward(&e->core2d, &e->t, e->vframes, B * T1, train))) return st;
        for (int b = 0; b < B; b++)
            for (int k = 0; k < Kc; k++)
                for (int t = 0; t < T1; t++)
                    memcpy(e->feat2d + (((size_t)b * Kc + k) * T1 + t) * hw2,
                           e->core2d.output + (((size_t)b * T1 + t) * Kc + k) * hw2, hw2 * sizeof(float));
        feat = e->feat2d;
    } else if ((st = npred_core3d_forward(&e->core, &e->t, videos, B, train, &feat))) {
        return st;
    }
    e->core_out = feat;
    e->gru.fft = !train;
    if (e->cfg.use_gru && (st = npred_convgru_forward(&e->gru, &e->t, feat, B, T1, &feat))) return st;
    e->feat = feat;
    size_t hw = (size_t)e->feat_h * e->feat_w;
    /* (B, K, T', h, w) -> (B*T', K, h, w) */
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            for (int t = 0; t < T1; t++)
                memcpy(e->frames + (((size_t)b * T1 + t) * K + k) * hw, feat + (((size_t)b * K + k) * T1 + t) * hw,
                       hw * sizeof(float));
    int BT = B * T1;
    const float *shift = NULL;
    if (s->has_shifter) {
        if (!pupil_center)
            return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a shifter: pupil_center is required", s->key);
        /* the last T' frames of pupil_center (B, 2, T), as (B*T', 2) */
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T1; t++)
                for (int j = 0; j < 2; j++)
                    e->pupil[((size_t)b * T1 + t) * 2 + j] = pupil_center[((size_t)b * 2 + j) * e->in_t + e->in_t - T1 + t];
        if ((st = npred_mlp_forward(&s->shifter, &e->t, e->pupil, BT, e->shift))) return st;
        shift = e->shift;
    }
    if ((st = npred_readout_forward(&s->ro, &e->t, e->y, e->frames, shift, BT, train, rng, noise))) return st;
    size_t n = (size_t)BT * s->n;
    for (size_t i = 0; i < n; i++) {
        e->z[i] = e->y[i] + (float)e->cfg.elu_offset;
        e->out[i] = elu1(e->z[i]);
    }
    if (out) memcpy(out, e->out, n * sizeof *out);
    e->last = si, e->B = B, e->train = train;
    return NPRED_OK;
}

npred_status npred_video_encoder_backward(npred_video_encoder *e, const float *dout, float *dvideos, float *dpupil)
{
    if (e->last < 0) return npred_errorf(NPRED_ERR_ARG, "video encoder: backward without a forward");
    npred_video_session *s = &e->s[e->last];
    int B = e->B, T1 = e->out_t, K = e->feat_c, BT = B * T1;
    size_t n = (size_t)BT * s->n, hw = (size_t)e->feat_h * e->feat_w;
    for (size_t i = 0; i < n; i++) e->dy[i] = dout[i] * (e->z[i] > 0 ? 1.0f : e->out[i]);
    if (s->has_shifter) memset(e->dshift, 0, (size_t)BT * 2 * sizeof(float));
    /* the frames' gradient is the readout's alone: written, not zeroed and added to */
    npred_readout_backward_set(&s->ro, &e->t, e->dy, e->dframes, s->has_shifter ? e->dshift : NULL);
    if (s->has_shifter) {
        memset(e->dpupil, 0, (size_t)BT * 2 * sizeof(float));
        npred_mlp_backward(&s->shifter, &e->t, e->dshift, dpupil ? e->dpupil : NULL);
        if (dpupil)
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T1; t++)
                    for (int j = 0; j < 2; j++)
                        dpupil[((size_t)b * 2 + j) * e->in_t + e->in_t - T1 + t] += e->dpupil[((size_t)b * T1 + t) * 2 + j];
    }
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++)
            for (int t = 0; t < T1; t++)
                memcpy(e->dfeat + (((size_t)b * K + k) * T1 + t) * hw, e->dframes + (((size_t)b * T1 + t) * K + k) * hw,
                       hw * sizeof(float));
    const float *dcore = e->dfeat;
    npred_status st;
    if (e->cfg.use_gru) {
        /* the GRU's input gradient is the core's output gradient */
        size_t nc = (size_t)B * e->gru.cfg.input_channels * T1 * e->gru.h * e->gru.w;
        if (!e->detach_core) memset(e->dframes, 0, nc * sizeof(float));
        if ((st = npred_convgru_backward(&e->gru, &e->t, e->dfeat, e->detach_core ? NULL : e->dframes))) return st;
        dcore = e->dframes;
    }
    if (e->detach_core) return NPRED_OK;
    if (!e->cfg.core2d) return npred_core3d_backward(&e->core, &e->t, dcore, dvideos);
    /* (B, Kc, T, h, w) -> frame-major, through the 2D core, back to (B, C, T, H, W) */
    int C = e->in_c, Kc = e->core2d.out_c;
    size_t HW = (size_t)e->in_h * e->in_w, hw2 = (size_t)e->core2d.out_h * e->core2d.out_w;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < Kc; k++)
            for (int t = 0; t < T1; t++)
                memcpy(e->dcore2d + (((size_t)b * T1 + t) * Kc + k) * hw2, dcore + (((size_t)b * Kc + k) * T1 + t) * hw2,
                       hw2 * sizeof(float));
    if (dvideos) memset(e->dvframes, 0, (size_t)B * T1 * C * HW * sizeof(float));
    if ((st = npred_core_backward(&e->core2d, &e->t, e->dcore2d, dvideos ? e->dvframes : NULL))) return st;
    if (dvideos)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                for (int t = 0; t < T1; t++) {
                    float *d = dvideos + (((size_t)b * C + c) * T1 + t) * HW;
                    const float *g = e->dvframes + (((size_t)b * T1 + t) * C + c) * HW;
                    for (size_t i = 0; i < HW; i++) d[i] += g[i];
                }
    return NPRED_OK;
}

int npred_video_encoder_core_reg_params(const npred_video_encoder *e, int *idx, int max)
{
    int n = 0;
#define PUT(i) do { if (n < max) idx[n] = (i); n++; } while (0)
    if (!e->cfg.core2d) {
        const npred_core3d_layer *L0 = &e->core.L[0];
        PUT(L0->conv[0].p_w);
        if (e->core.cfg.factorized) PUT(L0->conv[1].p_w);
    } else {
        const npred_core *c = &e->core2d;
        const npred_core_config *cc = &c->cfg;
        if (cc->rot_eq) {
            for (int l = 0; l < cc->layers; l++) PUT(c->L[l].p_coeffs);
        } else {
            PUT(c->L[0].p_w[0]);
            if (!cc->depth_separable && !cc->se_core && !cc->attention_conv)
                for (int l = 1; l < cc->layers; l++) PUT(c->L[l].p_w[0]);
        }
    }
#undef PUT
    return n;
}

npred_status npred_video_encoder_regularizer(npred_video_encoder *e, int si, double gscale, double *core_spatial,
                                             double *core_temporal, double *readout)
{
    if (si < 0 || si >= e->n_sessions) return npred_errorf(NPRED_ERR_ARG, "video encoder: session index %d", si);
    if (e->cfg.core2d) {
        *core_spatial = npred_core_regularizer(&e->core2d, &e->t, gscale);
        *core_temporal = 0;
    } else {
        npred_status st = npred_core3d_regularizer(&e->core, &e->t, gscale, core_spatial, core_temporal);
        if (st) return st;
    }
    *readout = npred_readout_regularizer(&e->s[si].ro, &e->t, gscale);
    return NPRED_OK;
}

int npred_video_encoder_stream_warmup(const npred_video_encoder *e)
{
    return e->cfg.core2d ? 0 : npred_core3d_stream_warmup(&e->core);
}

void npred_video_encoder_stream_reset(npred_video_encoder *e)
{
    e->stream_t = e->stream_in = 0;
    if (!e->cfg.core2d) npred_core3d_stream_reset(&e->core);
}

npred_status npred_video_encoder_stream_push(npred_video_encoder *e, int si, const float *frame,
                                             const float *pupil_center, int B, float *rates, int *ready)
{
    if (ready) *ready = 0;
    if (si < 0 || si >= e->n_sessions) return npred_errorf(NPRED_ERR_ARG, "video encoder: session index %d", si);
    if (B < 1 || B > e->max_batch)
        return npred_errorf(NPRED_ERR_ARG, "video encoder: batch of %d (capacity %d)", B, e->max_batch);
    if (e->stream_in && (B != e->stream_B || si != e->stream_s))
        return npred_errorf(NPRED_ERR_ARG, "video encoder: the stream runs %d clips of session %s; reset it before "
                            "pushing %d of session %s", e->stream_B, e->s[e->stream_s].key, B, e->s[si].key);
    npred_video_session *s = &e->s[si];
    if (s->has_shifter && !pupil_center)
        return npred_errorf(NPRED_ERR_ARG, "session %s: this model has a shifter: pupil_center is required", s->key);
    npred_status st;
    const float *feat;
    e->last = -1; /* a backward needs a training forward */
    if (e->cfg.core2d) {
        /* the Hermite weights of a rotation-equivariant core are built by the stream's first push */
        e->core2d.keep_weights = e->stream_in > 0;
        e->core2d.fft = 1;
        st = npred_core_forward(&e->core2d, &e->t, frame, B, 0);
        e->core2d.keep_weights = 0;
        if (st) return st;
        feat = e->core2d.output; /* (B, K, h, w) = (B, K, 1, h, w) */
    } else if ((st = npred_core3d_stream_push(&e->core, &e->t, frame, B, &feat))) {
        return st;
    }
    e->stream_in++, e->stream_B = B, e->stream_s = si;
    if (!feat) return NPRED_OK; /* the 3D core's warm-up: no output frame yet */
    if (e->cfg.use_gru) {
        e->gru.keep_weights = e->stream_t > 0; /* its fused weights are built by the stream's first output */
        e->gru.fft = 1;
        st = npred_convgru_forward_from(&e->gru, &e->t, feat, e->stream_t ? e->state : NULL, B, 1, &feat);
        e->gru.keep_weights = 0;
        if (st) return st;
        memcpy(e->state, feat, (size_t)B * e->feat_c * e->feat_h * e->feat_w * sizeof(float));
    }
    const float *shift = NULL;
    if (s->has_shifter) {
        if ((st = npred_mlp_forward(&s->shifter, &e->t, pupil_center, B, e->shift))) return st;
        shift = e->shift;
    }
    if ((st = npred_readout_forward(&s->ro, &e->t, e->y, feat, shift, B, 0, NULL, NULL))) return st;
    size_t n = (size_t)B * s->n;
    for (size_t i = 0; i < n; i++) rates[i] = elu1(e->y[i] + (float)e->cfg.elu_offset);
    e->stream_t++;
    if (ready) *ready = 1;
    return NPRED_OK;
}
