/* standard_trainer (see trainer.h): create, one batch, the epoch loop. The
 * configuration is in trainer_config.c, the validation objective in
 * trainer_validate.c, the run folder in trainer_run.c. */
#include "train/trainer_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/loader.h"
#include "kernels/batchnorm_sync.h"
#include "npred/dist.h"
#include "npred/preprocess.h"
#include "readouts/readout.h"
#include "train/loss.h"

#define message(t, ...) npred_trainer_say(&(t)->cb, __VA_ARGS__)

void npred_trainer_free(npred_trainer *t)
{
    if (!t) return;
    free(t->model_index);
    free(t->n_trials);
    npred_batch_free(&t->batch);
    free(t->pred);
    free(t->dpred);
    free(t->ddist);
    free(t->loc_mask);
    free(t->val_pred);
    free(t->val_resp);
    free(t->rbuf);
    npred_adam_free(&t->adam);
    free(t->best_data);
    free(t->best_buf);
    free(t->run_dir);
    free(t->noise);
    free(t->dbuf);
    if (t->owns_bn_sync) npred_batchnorm_set_sync(NULL, NULL);
    free(t->log);
    free(t->trk);
    free(t);
}

static npred_es_params es_params(const npred_trainer_config *c)
{
    npred_es_params p = npred_es_default_params();
    p.interval = c->interval;
    p.patience = c->patience;
    p.start = c->epoch;
    p.max_iter = c->max_iter;
    p.maximize = c->maximize;
    p.tolerance = c->tolerance;
    p.restore_best = c->restore_best;
    p.has_scheduler = 1;
    p.lr_decay_steps = c->lr_decay_steps;
    return p;
}

npred_status npred_trainer_create(npred_trainer **out, npred_model *m, const npred_loaders *L,
                                  const npred_trainer_config *c, uint64_t seed)
{
    *out = NULL;
    npred_trainer *t = calloc(1, sizeof *t);
    if (!t) return npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
    t->m = m;
    t->t = npred_model_table(m);
    t->L = L;
    t->c = *c;
    t->n_sessions = npred_loaders_count(L);
    npred_status st = NPRED_OK;
    if (t->n_sessions < 1) st = npred_errorf(NPRED_ERR_ARG, "trainer: no sessions");
    t->model_index = calloc(t->n_sessions ? t->n_sessions : 1, sizeof *t->model_index);
    t->n_trials = calloc(t->n_sessions ? t->n_sessions : 1, sizeof *t->n_trials);
    if (!st && (!t->model_index || !t->n_trials)) st = npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
    if (!st) st = npred_trainer_dist_check(m, c->loss_function);
    for (size_t s = 0; !st && s < t->n_sessions; s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        int mi = npred_model_session_index(m, si.data_key);
        if (mi < 0) {
            st = npred_errorf(NPRED_ERR_ARG, "trainer: the model has no readout for session %s", si.data_key);
            break;
        }
        if (npred_model_session_neurons(m, mi) != si.n_neurons) {
            st = npred_errorf(NPRED_ERR_ARG, "trainer: session %s has %lld neurons, its readout %d", si.data_key,
                              (long long)si.n_neurons, npred_model_session_neurons(m, mi));
            break;
        }
        if (!si.tier_enabled[NPRED_TIER_TRAIN] || !si.tier_enabled[NPRED_TIER_VALIDATION]) {
            st = npred_errorf(NPRED_ERR_ARG, "trainer: session %s: the loaders need the train and validation tiers",
                              si.data_key);
            break;
        }
        int ic, ih, iw;
        npred_model_input_shape(m, &ic, &ih, &iw);
        if (si.img_c != ic || si.img_h != ih || si.img_w != iw) {
            st = npred_errorf(NPRED_ERR_ARG, "trainer: session %s gives images (%d, %d, %d), the model takes (%d, %d, %d)",
                              si.data_key, si.img_c, si.img_h, si.img_w, ic, ih, iw);
            break;
        }
        if (npred_model_has_shifter(m) && si.pupil_dim != 2) {
            st = npred_errorf(NPRED_ERR_ARG,
                              "trainer: session %s: the model has a shifter but the batches carry no pupil_center "
                              "(set include_eye_position in the dataset config)", si.data_key);
            break;
        }
        if (npred_model_behavior_channels(m) && si.behavior_dim != npred_model_behavior_channels(m)) {
            st = npred_errorf(NPRED_ERR_ARG, "trainer: session %s: the model's modulator needs %d behavior values per trial",
                              si.data_key, npred_model_behavior_channels(m));
            break;
        }
        npred_dataset_info di;
        npred_dataset_get_info(si.dataset, &di);
        t->model_index[s] = mi;
        t->n_trials[s] = (double)di.n_trials;
        if (si.n_neurons > t->max_neurons) t->max_neurons = si.n_neurons;
        if (si.tier_n[NPRED_TIER_VALIDATION] > t->max_val) t->max_val = si.tier_n[NPRED_TIER_VALIDATION];
    }
    if (!st) st = npred_batch_init(&t->batch, L, 0);
    if (!st) {
        t->batch_size = t->batch.capacity;
        if (t->batch_size > m->max_batch)
            st = npred_errorf(NPRED_ERR_ARG, "trainer: batch_size %lld exceeds the model's capacity %d",
                              (long long)t->batch_size, m->max_batch);
    }
    if (!st) {
        size_t bn = (size_t)t->batch_size * (size_t)t->max_neurons;
        size_t vn = (size_t)(t->max_val ? t->max_val : 1) * (size_t)t->max_neurons;
        t->pred = malloc(bn * sizeof(float));
        t->dpred = malloc(bn * sizeof(float));
        t->val_pred = malloc(vn * sizeof(float));
        t->val_resp = malloc(vn * sizeof(float));
        t->rbuf = malloc((size_t)t->max_neurons * sizeof(double));
        t->dbuf = malloc((size_t)(6 * t->max_neurons + 1) * sizeof(double));
        t->best_data = malloc((t->t->n_params ? t->t->n_params : 1) * sizeof(float));
        t->best_buf = malloc((t->t->n_buffers ? t->t->n_buffers : 1) * sizeof(float));
        int K = npred_encoder_outputs(&m->cfg.encoder);
        if (m->cfg.encoder.type != NPRED_ENC_FIRING_RATE) {
            t->ddist = malloc((size_t)K * bn * sizeof(float));
            t->loc_mask = malloc(bn * sizeof(float));
            if (!t->ddist || !t->loc_mask) st = npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
        }
        if (!t->pred || !t->dpred || !t->val_pred || !t->val_resp || !t->rbuf || !t->dbuf || !t->best_data || !t->best_buf)
            st = npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
    }
    t->accum = c->loss_accum_batch_n > 0 ? c->loss_accum_batch_n : (int64_t)t->n_sessions;
    if (!st) {
        npred_adam_params ap = npred_adam_default_params();
        ap.lr = c->lr_init;
        st = npred_adam_init(&t->adam, t->t->n_params, &ap);
    }
    if (!st) {
        npred_scheduler_params sp = npred_scheduler_default_params();
        sp.mode = c->maximize ? NPRED_SCHEDULER_MODE_MAX : NPRED_SCHEDULER_MODE_MIN;
        sp.factor = c->lr_decay_factor;
        sp.patience = (int)c->patience;
        sp.threshold = c->tolerance;
        sp.threshold_mode = NPRED_SCHEDULER_THRESHOLD_ABS;
        sp.min_lr = c->min_lr;
        st = npred_scheduler_init(&t->sched, &sp, c->lr_init);
    }
    if (!st) {
        npred_es_params ep = es_params(c);
        st = npred_es_begin(&t->es, &ep);
    }
    if (st) {
        npred_trainer_free(t);
        return st;
    }
    t->nranks = 1;
    npred_rng_seed(&t->rng, c->seed_set ? (uint64_t)c->seed : seed);
    *out = t;
    return NPRED_OK;
}

void npred_trainer_set_callbacks(npred_trainer *t, const npred_trainer_callbacks *cb)
{
    if (cb) t->cb = *cb;
    else memset(&t->cb, 0, sizeof t->cb);
}

void npred_trainer_set_grad_reduce(npred_trainer *t, npred_trainer_grad_reduce_fn fn, void *user)
{
    t->reduce = fn;
    t->reduce_user = user;
}

static npred_status bn_sync(void *user, double *x, size_t n)
{
    (void)user;
    return npred_dist_allreduce_f64(x, n);
}

npred_status npred_trainer_set_dist(npred_trainer *t, int sync_bn)
{
    const int K = npred_dist_size(), r = npred_dist_rank();
    if (K <= 1) return NPRED_OK; /* one rank: exactly the single-process trainer */
    if (t->c.loss_function == NPRED_TRAIN_LOSS_CORR || t->c.loss_function == NPRED_TRAIN_LOSS_AVG_CORR)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "trainer: loss_function %s over %d ranks (a correlation over a "
                            "batch does not split into parts)", npred_train_loss_name(t->c.loss_function), K);
    if (t->c.loss_function == NPRED_TRAIN_LOSS_ZIG || t->c.loss_function == NPRED_TRAIN_LOSS_ZIL)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "trainer: loss_function %s over %d ranks (its loc clamp uses the "
                            "whole batch's responses)", npred_train_loss_name(t->c.loss_function), K);
    if (t->c.track_training)
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "trainer: track_training over %d ranks is not supported", K);
    if (sync_bn) {
        /* every rank needs a non-empty part of every global batch */
        for (size_t s = 0; s < t->n_sessions; s++) {
            npred_session_info si;
            npred_loaders_session(t->L, s, &si);
            int64_t N = si.tier_n[NPRED_TIER_TRAIN], last = N % t->batch_size;
            if ((N >= t->batch_size && t->batch_size < K) || (last && last < K) || (N < t->batch_size && N < K))
                return npred_errorf(NPRED_ERR_ARG,
                                    "trainer: synchronised BatchNorm over %d ranks needs at least %d trials in every "
                                    "batch; session %s has %lld train trials in batches of %lld (last batch %lld)",
                                    K, K, si.data_key, (long long)N, (long long)t->batch_size,
                                    (long long)(last ? last : t->batch_size));
        }
    }
    /* every rank must train on the same data: compare with rank 0 before anything else */
    uint64_t fp = npred_loaders_fingerprint(t->L), fp0 = fp;
    npred_status fst = npred_dist_bcast(&fp0, sizeof fp0, 0);
    double differs = fp != fp0;
    if (!fst) fst = npred_dist_allreduce_f64(&differs, 1);
    if (fst) return npred_error_prefix(fst, "trainer: comparing the ranks' datasets");
    if (differs > 0)
        return npred_errorf(NPRED_ERR_ARG,
                            "trainer: rank %d of %d: the datasets differ between ranks (%g rank(s) read data other "
                            "than rank 0's; fingerprint here %016llx, rank 0 %016llx): every rank must read the same "
                            "files (images, responses, tiers, neuron selection); nothing was trained",
                            r, K, differs, (unsigned long long)fp, (unsigned long long)fp0);
    size_t nz = (size_t)t->batch_size * (size_t)t->max_neurons * 2;
    float *noise = malloc(nz * sizeof(float));
    if (!noise) return npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
    free(t->noise);
    t->noise = noise;
    /* identical start everywhere: rank 0's parameters and buffers */
    npred_status st = npred_dist_bcast(t->t->data, t->t->n_params * sizeof(float), 0);
    if (!st) st = npred_dist_bcast(t->t->bufdata, t->t->n_buffers * sizeof(float), 0);
    if (st) return npred_error_prefix(st, "trainer: initial broadcast");
    t->rank = r;
    t->nranks = K;
    if (sync_bn) {
        npred_batchnorm_set_sync(bn_sync, NULL);
        t->owns_bn_sync = 1;
    }
    return NPRED_OK;
}

int npred_trainer_rank(const npred_trainer *t) { return t->rank; }
int npred_trainer_ranks(const npred_trainer *t) { return t->nranks; }

double npred_trainer_loss_scale(const npred_trainer *t, int session, int64_t B)
{
    if (!t->c.scale_loss || B < 1) return 1.0;
    return sqrt(t->n_trials[session] / (double)B);
}

int64_t npred_trainer_adam_steps(const npred_trainer *t) { return t->adam.step; }
double npred_trainer_lr(const npred_trainer *t) { return t->sched.lr; }

/* The loss and its gradient (written into dyhat): one pass for the elementwise
 * losses, the correlation's forward and backward otherwise (the distribution losses
 * are trainer_dist.c's). */
static npred_status loss_value_grad(const npred_trainer *t, double *v, float *dyhat, double k, const float *yhat,
                                    const float *y, int64_t B, int64_t n)
{
    npred_loss_reduction red = t->c.avg_loss ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM;
    npred_status st;
    switch (t->c.loss_function) {
    case NPRED_TRAIN_LOSS_POISSON:
        return npred_loss_poisson_value_grad(v, dyhat, k, yhat, y, B, n, red, NPRED_POISSON_EPS);
    case NPRED_TRAIN_LOSS_EXPONENTIAL:
        return npred_loss_exponential_value_grad(v, dyhat, k, yhat, y, B, n, red, NPRED_EXPONENTIAL_BIAS,
                                                 NPRED_EXPONENTIAL_TARGET_BIAS);
    case NPRED_TRAIN_LOSS_ANSCOMBE_MSE: return npred_loss_anscombe_mse_value_grad(v, dyhat, k, yhat, y, B, n, red);
    case NPRED_TRAIN_LOSS_CORR: {
        if ((st = npred_loss_corr_forward(t->rbuf, yhat, y, B, n, 0, NPRED_CORR_EPS))) return st;
        double a = 0;
        for (int64_t j = 0; j < n; j++) a -= t->rbuf[j];
        *v = t->c.avg_loss ? a / (double)n : a;
        double g = t->c.avg_loss ? -k / (double)n : -k;
        for (int64_t j = 0; j < n; j++) t->rbuf[j] = g;
        memset(dyhat, 0, sizeof(float) * (size_t)(B * n));
        return npred_loss_corr_backward(dyhat, t->rbuf, yhat, y, B, n, 0, NPRED_CORR_EPS);
    }
    case NPRED_TRAIN_LOSS_AVG_CORR:
        if ((st = npred_loss_corr_forward(v, yhat, y, B, n, 1, NPRED_CORR_EPS))) return st;
        memset(dyhat, 0, sizeof(float) * (size_t)(B * n));
        return npred_loss_corr_backward(dyhat, &k, yhat, y, B, n, 1, NPRED_CORR_EPS);
    default: break;
    }
    return npred_errorf(NPRED_ERR_ARG, "trainer: unknown loss");
}

/* One batch (or this rank's part of a global batch of Bg trials starting at
 * trial `offset`): forward, loss scaled for the global batch, backward, and the
 * regularizer gradients (added by rank 0 only, so the allreduce counts them once). */
static npred_status batch_part(npred_trainer *t, const npred_batch *b, int64_t Bg, int64_t offset, double *loss)
{
    if (b->session < 0 || (size_t)b->session >= t->n_sessions)
        return npred_errorf(NPRED_ERR_ARG, "trainer: batch of session %d", b->session);
    int mi = t->model_index[b->session];
    npred_model *m = t->m;
    int64_t B = b->n, n = b->n_neurons;
    const float *noise = NULL;
    if (t->nranks > 1) {
        /* draw what one process would draw for the whole global batch (the readout's
         * z in (b, o, coordinate) order), so every rank's rng stays in step */
        const npred_readout *ro = &m->s[mi].ro;
        if (ro->cfg.type == NPRED_READOUT_FULL_GAUSSIAN2D || ro->cfg.type == NPRED_READOUT_GAUSSIAN2D) {
            int64_t Bs = ro->cfg.batch_sample ? Bg : 1;
            for (int64_t i = 0; i < Bs * n * 2; i++) t->noise[i] = (float)npred_rng_normal(&t->rng);
            noise = t->noise + (ro->cfg.batch_sample ? (size_t)(offset * n * 2) : 0);
        }
    }
    double k = npred_trainer_loss_scale(t, b->session, Bg), v = 0, reg = 0;
    npred_status st;
    if (B > 0) {
        if ((st = npred_model_forward(m, mi, b->images, b->pupil_center, b->behavior, (int)B, 1, &t->rng, noise,
                                      t->pred)))
            return st;
        double kb = t->c.avg_loss && Bg != B ? k * (double)B / (double)Bg : k;
        if (t->ddist) { /* a distribution encoder: its likelihood loss (trainer_dist.c) */
            if ((st = npred_trainer_dist_loss(t, &v, kb, b->responses, B, n))) return st;
            if ((st = npred_model_backward_dist(m, t->ddist, t->c.detach_core, NULL, NULL))) return st;
        } else {
            if ((st = loss_value_grad(t, &v, t->dpred, kb, t->pred, b->responses, B, n))) return st;
            if ((st = npred_model_backward(m, t->dpred, t->c.detach_core, NULL, NULL))) return st;
        }
        /* a mean over this part becomes its share of the mean over the global batch */
        if (t->c.avg_loss && Bg != B) v *= (double)B / (double)Bg;
    }
    /* regularizers: core (unless detached) + this session's readout, unscaled */
    if (t->rank == 0) {
        if (!t->c.detach_core) reg += npred_core_regularizer(&m->core, t->t, 1.0);
        reg += npred_readout_regularizer(&m->s[mi].ro, t->t, 1.0);
    }
    if (loss) *loss = k * v + reg;
    return NPRED_OK;
}

npred_status npred_trainer_batch(npred_trainer *t, const npred_batch *b, double *loss)
{
    if (b->n < 1) return npred_errorf(NPRED_ERR_ARG, "trainer: empty batch");
    return batch_part(t, b, b->n, 0, loss);
}

/* The one place a data-parallel run communicates per step: sum the gradient over
 * the ranks (one allreduce of the flat buffer), then the caller's hook. */
static npred_status reduce_gradients(npred_trainer *t)
{
    npred_status st = NPRED_OK;
    if (t->nranks > 1 && (st = npred_dist_allreduce_f32(t->t->grad, t->t->n_params)))
        return npred_error_prefix(st, "trainer: gradient allreduce");
    if (!t->reduce) return NPRED_OK;
    st = t->reduce(t->reduce_user, t->t->grad, t->t->n_params);
    return st ? npred_error_prefix(st, "trainer: gradient reduction") : NPRED_OK;
}

/* the update and the gradient's zeroing in one pass over the parameters */
static npred_status optimizer_step(npred_trainer *t)
{
    npred_status st = reduce_gradients(t);
    if (!st) st = npred_adam_step_zero_grad(&t->adam, t->t->data, t->t->grad);
    if (st) npred_ptable_zero_grad(t->t);
    return st;
}

static int interrupted(const npred_trainer *t) { return t->cb.interrupt && *t->cb.interrupt; }

static npred_status train_epoch(npred_trainer *t, int64_t epoch)
{
    npred_cycler cy;
    npred_status st = npred_cycler_begin(&cy, t->L, NPRED_TIER_TRAIN, &t->rng);
    if (st) return st;
    int64_t n_batches = npred_cycler_len(&cy);
    npred_ptable_zero_grad(t->t);
    t->epoch_loss = 0;
    t->epoch_batches = 0;
    t->epoch_lr = t->sched.lr;
    for (int64_t i = 0; i < n_batches; i++) {
        /* a data-parallel run checks the flag between epochs only (all ranks agree there) */
        if (t->nranks == 1 && interrupted(t)) {
            st = npred_errorf(NPRED_ERR_INTERRUPTED, "training interrupted in epoch %lld", (long long)epoch);
            break;
        }
        int has = 0;
        int64_t Bg = 0, offset = 0;
        if (t->nranks == 1) {
            if ((st = npred_cycler_next(&cy, &t->batch, &has))) break;
            Bg = t->batch.n;
        } else if ((st = npred_cycler_next_part(&cy, &t->batch, &has, t->rank, t->nranks, &Bg, &offset))) {
            break;
        }
        if (!has) break;
        double loss = 0;
        if ((st = batch_part(t, &t->batch, Bg, offset, &loss))) break;
        if (!isfinite(loss)) {
            st = npred_es_loop_diverged(loss, epoch, i + 1, n_batches, t->batch.data_key, t->sched.lr, t->run_dir);
            break;
        }
        if ((i + 1) % t->accum == 0 && (st = optimizer_step(t))) break;
        t->epoch_loss += loss;
        t->epoch_batches++;
        if (t->cb.on_batch) {
            npred_trainer_batch_info bi = {epoch, i + 1, n_batches, t->batch.data_key, Bg, loss, t->sched.lr};
            t->cb.on_batch(t->cb.user, &bi);
        }
    }
    npred_cycler_free(&cy);
    /* the epoch's loss of the whole job (each rank holds its parts' share) */
    if (!st && t->nranks > 1) st = npred_dist_allreduce_f64(&t->epoch_loss, 1);
    return st;
}

/* ---- the hooks of the shared loop (es_loop.h) ---- */
static npred_status hook_evaluate(void *u, double *v) { return npred_trainer_evaluate(u, v); }
static npred_status hook_log_add(void *u, const npred_log_row *r)
{
    npred_trainer *t = u;
    npred_status st = trainer_log_add(t, r, t->c.track_training ? t->last_trk : NULL);
    return st ? st : trainer_write_log(t);
}
static npred_status hook_save_model(void *u) { return trainer_save_model(u); }
static npred_status hook_save_state(void *u) { return trainer_save_state(u); }
static npred_status hook_interrupted(void *u, int *stop)
{
    const npred_trainer *t = u;
    return npred_es_loop_interrupted(&t->cb, t->nranks, stop);
}
/* after an epoch's steps come validation and saving: the backward-only scratch goes
 * back to the system meanwhile (the next epoch's first backward takes it again) */
static npred_status hook_train_epoch(void *u, int64_t epoch)
{
    npred_trainer *t = u;
    npred_status st = train_epoch(t, epoch);
    npred_model_release_backward_scratch(t->m);
    return st;
}

npred_es_loop trainer_loop(npred_trainer *t)
{
    npred_es_loop l = {&t->es,           &t->sched,       &t->adam,         t->t,           t->best_data,
                       t->best_buf,      &t->resumed,     &t->pending_row,  &t->cb,         &t->epoch_t0,
                       &t->epoch_loss,   &t->epoch_lr,    &t->epoch_batches, t,             hook_evaluate,
                       hook_log_add,     hook_save_model, hook_save_state,  hook_interrupted, hook_train_epoch};
    return l;
}

npred_status npred_trainer_run(npred_trainer *t, npred_trainer_result *res)
{
    npred_es_loop l = trainer_loop(t);
    return npred_es_loop_train(&l, &t->done, NULL, res);
}

npred_rng *npred_trainer_rng(npred_trainer *t) { return &t->rng; }

npred_status npred_trainer_model_create(npred_model **out, const npred_loaders *L, const char *config_json,
                                        const char *config_name, uint64_t seed)
{
    *out = NULL;
    size_t n = npred_loaders_count(L);
    if (n < 1) return npred_errorf(NPRED_ERR_ARG, "model: no sessions in the loaders");
    npred_model_session *ses = calloc(n, sizeof *ses);
    if (!ses) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    npred_session_info s0;
    npred_loaders_session(L, 0, &s0);
    npred_status st = NPRED_OK;
    for (size_t i = 0; i < n; i++) {
        npred_session_info si;
        npred_loaders_session(L, i, &si);
        if (si.img_c != s0.img_c || si.img_h != s0.img_h || si.img_w != s0.img_w) {
            st = npred_errorf(NPRED_ERR_ARG, "model: session %s gives images (%d, %d, %d), session %s (%d, %d, %d); "
                              "one core needs one input shape", si.data_key, si.img_c, si.img_h, si.img_w,
                              s0.data_key, s0.img_c, s0.img_h, s0.img_w);
            break;
        }
        ses[i].key = si.data_key;
        ses[i].n_neurons = (int)si.n_neurons;
        ses[i].coords = si.cell_motor_coordinates;
        ses[i].coord_dims = si.cell_motor_coordinates ? 3 : 0;
        ses[i].mean_activity = NULL;
        /* meta/neurons/multi_match_id of the selected neurons: the match ids of share_features /
         * share_grid (sensorium passes dat.neurons.multi_match_id as shared_match_ids) */
        const npred_array *mm = npred_dataset_neuron_info(si.dataset, "multi_match_id");
        if (mm) {
            int64_t *all = NULL, *sel = malloc((size_t)si.n_neurons * sizeof *sel);
            if (!sel) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            if (!st && (st = npred_array_to_i64(mm, &all))) {
                char why[512];
                snprintf(why, sizeof why, "%s", npred_last_error());
                npred_errorf(st, "%s: meta/neurons/multi_match_id: %s", si.data_key, why);
            }
            for (int64_t j = 0; !st && j < si.n_neurons; j++) sel[j] = all[si.neuron_idx[j]];
            free(all);
            ses[i].match_ids = sel;
            if (st) break;
        }
    }
    npred_batch b;
    if (!st) st = npred_batch_init(&b, L, 0);
    if (!st) {
        int cap = (int)b.capacity;
        npred_batch_free(&b);
        st = npred_model_create(out, config_json, config_name, s0.img_c, s0.img_h, s0.img_w, ses, (int)n, cap, seed);
        if (st && strstr(npred_last_error(), "need match ids")) {
            char why[512];
            snprintf(why, sizeof why, "%s", npred_last_error());
            npred_errorf(st, "%s (the datasets need meta/neurons/multi_match_id.npy for share_features / share_grid)",
                         why);
        }
    }
    for (size_t i = 0; i < n; i++) free((void *)ses[i].match_ids);
    free(ses);
    /* the loaders' preprocessing goes into the model file (predictions from raw stimuli) */
    if (!st && (st = npred_model_record_preprocessing(*out, L))) {
        npred_model_free(*out);
        *out = NULL;
    }
    return st;
}
