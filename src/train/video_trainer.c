/* The kit's video standard_trainer (see video_trainer.h): create, the loss of one
 * batch, epochs, validation, the early-stopping loop, data parallelism. The
 * configuration and the run folder are in video_trainer_run.c. */
#include "train/video_trainer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/batchnorm_sync.h"
#include "npred/dist.h"
#include "readouts/readout.h"
#include "train/video_scores.h"

#define VT_SKIP 50         /* the kit's model_predictions skip */
#define VT_POISSON_EPS 1e-8 /* PoissonLoss(bias=1e-08) */

#define message(t, ...) npred_trainer_say(&(t)->cb, __VA_ARGS__)

npred_status npred_video_poisson_loss(double *v, float *dout, const float *out, const float *responses, int B,
                                      int T1, int n, int F, double gscale)
{
    if (T1 > F)
        return npred_errorf(NPRED_ERR_SHAPE, "video loss: the model gives %d frames, the responses have only %d", T1, F);
    const float g = (float)gscale, eps = (float)VT_POISSON_EPS;
    double acc = 0;
    for (int b = 0; b < B; b++)
        for (int tt = 0; tt < T1; tt++) {
            const float *o = out + ((size_t)b * T1 + tt) * n;
            const float *y = responses + (size_t)b * n * F + (F - T1 + tt);
            float *d = dout ? dout + ((size_t)b * T1 + tt) * n : NULL;
            for (int j = 0; j < n; j++) {
                float yj = y[(size_t)j * F], oj = o[j];
                acc += (double)oj - (double)yj * log((double)oj + VT_POISSON_EPS);
                if (d) d[j] = g * (1.0f - yj / (oj + eps));
            }
        }
    *v = acc;
    return NPRED_OK;
}

void npred_video_trainer_free(npred_video_trainer *t)
{
    if (!t) return;
    if (t->its)
        for (int s = 0; s < t->ns; s++) npred_video_iter_free(&t->its[s]);
    free(t->its);
    free(t->enc_index), free(t->n_trials), free(t->train_batches);
    npred_video_batch_free(&t->batch);
    free(t->dout), free(t->noise), free(t->val_resp), free(t->val_pred);
    free((void *)t->rp), free((void *)t->pp), free(t->fr), free(t->pfr), free(t->corr);
    npred_adam_free(&t->adam);
    free(t->best_data), free(t->best_buf);
    free(t->model_meta), free(t->run_dir), free(t->log), free(t->frozen);
    if (t->owns_bn_sync) npred_batchnorm_set_sync(NULL, NULL);
    free(t);
}

static npred_status check_session(npred_video_trainer *t, int s, int *val_n)
{
    npred_video_encoder *e = t->e;
    npred_video_session_info si;
    npred_video_loaders_session(t->L, (size_t)s, &si);
    int ei = npred_video_encoder_find(e, si.data_key);
    if (ei < 0) return npred_errorf(NPRED_ERR_ARG, "video trainer: the model has no readout for session %s", si.data_key);
    if (e->s[ei].n != si.n_neurons)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s has %lld neurons, its readout %d", si.data_key,
                            (long long)si.n_neurons, e->s[ei].n);
    if (!si.frames)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s: whole trials (to_cut false) vary in length; "
                            "training needs clips of `frames` frames (to_cut true)", si.data_key);
    if (si.channels != e->in_c || si.frames != e->in_t || si.height != e->in_h || si.width != e->in_w)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s gives clips (%d, %d, %d, %d), the model takes "
                            "(%d, %d, %d, %d) (C, F, H, W)", si.data_key, si.channels, si.frames, si.height, si.width,
                            e->in_c, e->in_t, e->in_h, e->in_w);
    if (e->s[ei].has_shifter && (si.pupil_dim != 2 || si.resp_frames != si.frames))
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s: the model has a shifter, which needs "
                            "pupil_center with one value per video frame (include_pupil_centers true, scale 1)",
                            si.data_key);
    if (si.resp_frames <= VT_SKIP || e->out_t < si.resp_frames - VT_SKIP)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s: the kit's validation correlation scores the "
                            "response frames after the first %d of each clip: clips of %d frames need more than %d "
                            "(the kit asserts frames > 50) and a model output of at least %d frames (it gives %d)",
                            si.data_key, VT_SKIP, si.resp_frames, VT_SKIP, si.resp_frames - VT_SKIP, e->out_t);
    int tr = npred_video_loaders_tier(t->L, (size_t)s, "train"), va = npred_video_loaders_tier(t->L, (size_t)s, "oracle");
    if (tr < 0 || va < 0 || si.tier_n[tr] < 1 || si.tier_n[va] < 1)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s needs trials in the 'train' and 'oracle' tiers "
                            "(the kit validates on 'oracle')", si.data_key);
    npred_video_dataset_info di;
    npred_video_dataset_get_info(si.dataset, &di);
    t->enc_index[s] = ei;
    t->n_trials[s] = (double)di.n_trials;
    t->train_batches[s] = (si.tier_n[tr] + t->batch_size - 1) / t->batch_size;
    if (s == 0) t->F = si.resp_frames;
    else if (si.resp_frames != t->F)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s has %d response frames per clip, session 0 %d",
                            si.data_key, si.resp_frames, t->F);
    if (si.n_neurons > t->max_n) t->max_n = (int)si.n_neurons;
    *val_n = (int)si.tier_n[va];
    return NPRED_OK;
}

/* detach_core: the kit's model(detach_core=True) detaches the core's output, and its
 * loss adds int(not detach_core) * core.regularizer(): the core's parameters that the
 * regularizer reads get a zero gradient (so AdamW still decays them), the others
 * none (AdamW skips them). t->frozen marks the latter. */
static npred_status freeze_mask(npred_video_trainer *t)
{
    if (!t->c.base.detach_core) return NPRED_OK;
    const npred_ptable *tb = t->t;
    if (!(t->frozen = calloc(tb->n_params ? tb->n_params : 1, 1)))
        return npred_errorf(NPRED_ERR_NOMEM, "video trainer: out of memory");
    for (int i = 0; i < tb->n; i++) {
        const npred_param *p = &tb->items[i];
        if (!p->is_buffer && !strncmp(p->name, "core.", 5)) memset(t->frozen + p->offset, 1, p->count);
    }
    int idx[64], n = npred_video_encoder_core_reg_params(t->e, idx, 64);
    if (n > 64) return npred_errorf(NPRED_ERR_ARG, "video trainer: %d regularized core tensors (at most 64)", n);
    for (int k = 0; k < n; k++) memset(t->frozen + tb->items[idx[k]].offset, 0, tb->items[idx[k]].count);
    return NPRED_OK;
}

npred_status npred_video_trainer_create_encoder(npred_video_trainer **out, npred_video_encoder *e,
                                                const npred_video_loaders *L, const npred_video_trainer_config *c,
                                                uint64_t seed)
{
    *out = NULL;
    npred_video_trainer *t = calloc(1, sizeof *t);
    if (!t) return npred_errorf(NPRED_ERR_NOMEM, "video trainer: out of memory");
    t->e = e, t->t = &e->t, t->L = L, t->c = *c;
    t->ns = (int)npred_video_loaders_count(L);
    t->T1 = e->out_t;
    t->rank = 0, t->nranks = 1;
    npred_status st = NPRED_OK;
    if (t->ns < 1) st = npred_errorf(NPRED_ERR_ARG, "video trainer: no sessions");
    if (!st) st = npred_video_batch_init(&t->batch, L, 0);
    if (!st) {
        t->batch_size = t->batch.capacity;
        if (t->batch_size > e->max_batch)
            st = npred_errorf(NPRED_ERR_ARG, "video trainer: batch_size %lld exceeds the model's capacity %d",
                              (long long)t->batch_size, e->max_batch);
    }
    if (!st) {
        t->enc_index = calloc((size_t)t->ns, sizeof *t->enc_index);
        t->n_trials = calloc((size_t)t->ns, sizeof *t->n_trials);
        t->train_batches = calloc((size_t)t->ns, sizeof *t->train_batches);
        t->its = calloc((size_t)t->ns, sizeof *t->its);
        if (!t->enc_index || !t->n_trials || !t->train_batches || !t->its)
            st = npred_errorf(NPRED_ERR_NOMEM, "video trainer: out of memory");
    }
    for (int s = 0; !st && s < t->ns; s++) {
        int vn = 0;
        st = check_session(t, s, &vn);
        if (vn > t->max_val) t->max_val = vn;
    }
    if (!st) {
        size_t bn = (size_t)t->batch_size * t->T1 * t->max_n, vv = (size_t)t->max_val;
        t->dout = malloc(bn * sizeof(float));
        t->noise = malloc(2 * bn * sizeof(float));
        t->val_resp = malloc(vv * t->max_n * t->F * sizeof(float));
        t->val_pred = malloc(vv * t->T1 * t->max_n * sizeof(float));
        t->rp = malloc(vv * sizeof *t->rp);
        t->pp = malloc(vv * sizeof *t->pp);
        t->fr = malloc(vv * sizeof *t->fr);
        t->pfr = malloc(vv * sizeof *t->pfr);
        t->corr = malloc((size_t)t->max_n * sizeof *t->corr);
        t->best_data = malloc((t->t->n_params ? t->t->n_params : 1) * sizeof(float));
        t->best_buf = malloc((t->t->n_buffers ? t->t->n_buffers : 1) * sizeof(float));
        if (!t->dout || !t->noise || !t->val_resp || !t->val_pred || !t->rp || !t->pp || !t->fr || !t->pfr ||
            !t->corr || !t->best_data || !t->best_buf)
            st = npred_errorf(NPRED_ERR_NOMEM, "video trainer: out of memory");
    }
    if (!st) st = freeze_mask(t);
    t->accum = c->base.loss_accum_batch_n > 0 ? c->base.loss_accum_batch_n : t->ns;
    if (!st) {
        npred_adam_params ap = npred_adam_default_params();
        ap.lr = c->base.lr_init;
        ap.weight_decay = c->weight_decay;
        ap.decoupled = 1;
        st = npred_adam_init(&t->adam, t->t->n_params, &ap);
    }
    if (!st) {
        npred_scheduler_params sp = npred_scheduler_default_params();
        sp.mode = c->base.maximize ? NPRED_SCHEDULER_MODE_MAX : NPRED_SCHEDULER_MODE_MIN;
        sp.factor = c->base.lr_decay_factor;
        sp.patience = (int)c->base.patience;
        sp.threshold = c->base.tolerance;
        sp.threshold_mode = NPRED_SCHEDULER_THRESHOLD_ABS;
        sp.min_lr = c->base.min_lr;
        st = npred_scheduler_init(&t->sched, &sp, c->base.lr_init);
    }
    if (!st) {
        npred_es_params p = npred_es_default_params();
        p.interval = c->base.interval;
        p.patience = c->base.patience;
        p.start = c->base.epoch;
        p.max_iter = c->base.max_iter;
        p.maximize = c->base.maximize;
        p.tolerance = c->base.tolerance;
        p.restore_best = c->base.restore_best;
        p.has_scheduler = 1;
        p.lr_decay_steps = c->base.lr_decay_steps;
        st = npred_es_begin(&t->es, &p);
    }
    if (st) {
        npred_video_trainer_free(t);
        return st;
    }
    t->fingerprint = npred_video_loaders_fingerprint(L);
    npred_rng_seed(&t->rng, c->base.seed_set ? (uint64_t)c->base.seed : seed);
    *out = t;
    return NPRED_OK;
}

void npred_video_trainer_set_callbacks(npred_video_trainer *t, const npred_trainer_callbacks *cb)
{
    if (cb) t->cb = *cb;
    else memset(&t->cb, 0, sizeof t->cb);
}

void npred_video_trainer_set_saver(npred_video_trainer *t, npred_video_model_saver fn, void *user,
                                   const char *model_meta_json)
{
    t->saver = fn;
    t->saver_user = user;
    free(t->model_meta);
    t->model_meta = model_meta_json ? strdup(model_meta_json) : NULL;
}

npred_rng *npred_video_trainer_rng(npred_video_trainer *t) { return &t->rng; }
double npred_video_trainer_lr(const npred_video_trainer *t) { return t->sched.lr; }
int64_t npred_video_trainer_adam_steps(const npred_video_trainer *t) { return t->adam.step; }

/* The global batch's readout draws, in the order one process draws them: (B*T', n, 2)
 * with batch_sample (the kit's default), else (1, n, 2). */
static const float *draw_noise(npred_video_trainer *t, int ei, int64_t Bg)
{
    const npred_readout *ro = &t->e->s[ei].ro;
    size_t rows = ro->cfg.batch_sample ? (size_t)Bg * t->T1 : 1, cnt = rows * (size_t)t->e->s[ei].n * 2;
    for (size_t i = 0; i < cnt; i++) t->noise[i] = (float)npred_rng_normal(&t->rng);
    return t->noise;
}

/* This rank's part of the global batch b: forward, the kit's loss scaled for the whole
 * batch, backward; the regularizers (and their gradients) on rank 0 only. */
static npred_status batch_part(npred_video_trainer *t, const npred_video_batch *b, const float *noise,
                               npred_video_loss_terms *lt)
{
    if (b->session < 0 || b->session >= t->ns)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: batch of session %d", b->session);
    int ei = t->enc_index[b->session];
    npred_video_encoder *e = t->e;
    int64_t Bg = b->n;
    int n = (int)b->n_neurons, T1 = t->T1, F = b->resp_f;
    if (!noise) noise = draw_noise(t, ei, Bg);
    int64_t lo = Bg * t->rank / t->nranks, hi = Bg * (t->rank + 1) / t->nranks, B = hi - lo;
    memset(lt, 0, sizeof *lt);
    lt->scale = t->c.base.scale_loss ? sqrt(t->n_trials[b->session] / (double)Bg) : 1.0;
    npred_status st;
    if (B > 0) {
        size_t vstride = (size_t)b->c * b->f * b->h * b->w;
        const float *pupil = b->pupil_center ? b->pupil_center + (size_t)lo * 2 * F : NULL;
        const float *nz = noise + (e->s[ei].ro.cfg.batch_sample ? (size_t)lo * T1 * n * 2 : 0);
        if ((st = npred_video_encoder_forward(e, ei, b->videos + (size_t)lo * vstride, pupil, (int)B, 1, NULL, nz,
                                              NULL)))
            return st;
        double count = t->c.base.avg_loss ? (double)Bg * T1 * n : 1.0, v = 0;
        if ((st = npred_video_poisson_loss(&v, t->dout, e->out, b->responses + (size_t)lo * n * F, (int)B, T1, n, F,
                                           lt->scale / count)))
            return st;
        lt->poisson = v / count;
        e->detach_core = t->c.base.detach_core;
        st = npred_video_encoder_backward(e, t->dout, NULL, NULL);
        e->detach_core = 0;
        if (st) return st;
    }
    /* detach_core: the kit adds int(not detach_core) * core.regularizer(), i.e. nothing */
    if (t->rank == 0 && t->c.base.detach_core)
        lt->readout = npred_readout_regularizer(&e->s[ei].ro, &e->t, 1.0);
    else if (t->rank == 0 &&
             (st = npred_video_encoder_regularizer(e, ei, 1.0, &lt->core_spatial, &lt->core_temporal, &lt->readout)))
        return st;
    lt->total = lt->scale * lt->poisson + lt->core_spatial + lt->core_temporal + lt->readout;
    return NPRED_OK;
}

npred_status npred_video_trainer_batch(npred_video_trainer *t, const npred_video_batch *b, const float *noise,
                                       npred_video_loss_terms *terms)
{
    if (b->n < 1) return npred_errorf(NPRED_ERR_ARG, "video trainer: empty batch");
    npred_video_loss_terms lt;
    npred_status st = batch_part(t, b, noise, &lt);
    if (!st && terms) *terms = lt;
    return st;
}

npred_status npred_video_trainer_step(npred_video_trainer *t)
{
    npred_status st = NPRED_OK;
    if (t->nranks > 1 && (st = npred_dist_allreduce_f32(t->t->grad, t->t->n_params)))
        st = npred_error_prefix(st, "video trainer: gradient allreduce");
    if (!st) st = npred_adam_step_masked(&t->adam, t->t->data, t->t->grad, t->frozen);
    npred_ptable_zero_grad(t->t);
    return st;
}

/* get_correlations over the oracle tier (eval mode): per session the clips' responses
 * and outputs, correlated per neuron from frame 50 on; the mean over all neurons. */
npred_status npred_video_trainer_evaluate(npred_video_trainer *t, double *objective)
{
    npred_status st = NPRED_OK;
    /* every rank validates the same clips with rank 0's running statistics */
    if (t->nranks > 1 && (st = npred_dist_bcast(t->t->bufdata, t->t->n_buffers * sizeof(float), 0)))
        return npred_error_prefix(st, "video trainer: buffer broadcast");
    double sum = 0;
    int64_t count = 0;
    int T1 = t->T1, F = t->F;
    for (int s = 0; !st && s < t->ns; s++) {
        int ei = t->enc_index[s], n = t->e->s[ei].n;
        npred_video_iter it;
        if ((st = npred_video_iter_begin(&it, t->L, (size_t)s, "oracle", &t->rng))) break;
        int nv = 0, has = 1;
        while (!st) {
            if ((st = npred_video_iter_next(&it, &t->batch, &has)) || !has) break;
            const npred_video_batch *b = &t->batch;
            if (nv + b->n > t->max_val) {
                st = npred_errorf(NPRED_ERR_ARG, "video trainer: more oracle clips than counted");
                break;
            }
            if ((st = npred_video_encoder_forward(t->e, ei, b->videos, b->pupil_center, (int)b->n, 0, NULL, NULL,
                                                  t->val_pred + (size_t)nv * T1 * n)))
                break;
            memcpy(t->val_resp + (size_t)nv * n * F, b->responses, (size_t)b->n * n * F * sizeof(float));
            nv += (int)b->n;
        }
        npred_video_iter_free(&it);
        if (st) break;
        for (int i = 0; i < nv; i++) {
            t->rp[i] = t->val_resp + (size_t)i * n * F;
            t->pp[i] = t->val_pred + (size_t)i * T1 * n;
            t->fr[i] = F;
            t->pfr[i] = T1;
        }
        if ((st = npred_video_correlations(t->corr, t->rp, t->fr, t->pp, t->pfr, nv, n, VT_SKIP))) break;
        for (int j = 0; j < n; j++) sum += t->corr[j];
        count += n;
    }
    if (!st) *objective = count ? sum / (double)count : NAN;
    return st;
}

static int interrupted(const npred_video_trainer *t) { return t->cb.interrupt && *t->cb.interrupt; }

/* next batch of session s in the LongCycler: a finished loader starts over (reshuffled) */
static npred_status cycler_next(npred_video_trainer *t, int s)
{
    int has = 0;
    npred_status st = npred_video_iter_next(&t->its[s], &t->batch, &has);
    if (st || has) return st;
    npred_video_iter_free(&t->its[s]);
    if ((st = npred_video_iter_begin(&t->its[s], t->L, (size_t)s, "train", &t->rng))) return st;
    if ((st = npred_video_iter_next(&t->its[s], &t->batch, &has))) return st;
    return has ? NPRED_OK : npred_errorf(NPRED_ERR_ARG, "video trainer: session %d has no train batch", s);
}

static npred_status train_epoch(npred_video_trainer *t, int64_t epoch)
{
    npred_status st = NPRED_OK;
    int64_t maxb = 0;
    for (int s = 0; s < t->ns; s++) {
        if (t->train_batches[s] > maxb) maxb = t->train_batches[s];
        if (!st) st = npred_video_iter_begin(&t->its[s], t->L, (size_t)s, "train", &t->rng);
    }
    int64_t n_batches = maxb * t->ns;
    npred_ptable_zero_grad(t->t);
    t->epoch_loss = 0;
    t->epoch_batches = 0;
    t->epoch_lr = t->sched.lr;
    for (int64_t i = 0; !st && i < n_batches; i++) {
        if (t->nranks == 1 && interrupted(t)) {
            st = npred_errorf(NPRED_ERR_INTERRUPTED, "training interrupted in epoch %lld", (long long)epoch);
            break;
        }
        int s = (int)(i % t->ns);
        if ((st = cycler_next(t, s))) break;
        npred_video_loss_terms lt;
        if ((st = batch_part(t, &t->batch, NULL, &lt))) break;
        if (!isfinite(lt.total)) {
            st = npred_es_loop_diverged(lt.total, epoch, i + 1, n_batches, t->batch.data_key, t->sched.lr,
                                        t->run_dir);
            break;
        }
        if ((i + 1) % t->accum == 0 && (st = npred_video_trainer_step(t))) break;
        t->epoch_loss += lt.total;
        t->epoch_batches++;
        if (t->cb.on_batch && t->c.base.verbose) {
            npred_trainer_batch_info bi = {epoch, i + 1, n_batches, t->batch.data_key, t->batch.n, lt.total,
                                           t->sched.lr};
            t->cb.on_batch(t->cb.user, &bi);
        }
    }
    for (int s = 0; s < t->ns; s++) npred_video_iter_free(&t->its[s]);
    if (!st && t->nranks > 1) st = npred_dist_allreduce_f64(&t->epoch_loss, 1);
    return st;
}

static npred_status hook_evaluate(void *u, double *v) { return npred_video_trainer_evaluate(u, v); }
static npred_status hook_log_add(void *u, const npred_log_row *r)
{
    npred_status st = vt_log_add(u, r);
    return st ? st : vt_write_log(u);
}
static npred_status hook_save_model(void *u) { return vt_save_model(u, "model.safetensors"); }
static npred_status hook_save_state(void *u) { return vt_save_state(u); }
static npred_status hook_interrupted(void *u, int *stop)
{
    const npred_video_trainer *t = u;
    return npred_es_loop_interrupted(&t->cb, t->nranks, stop);
}
static npred_status hook_train_epoch(void *u, int64_t epoch)
{
    npred_status st = train_epoch(u, epoch);
    return st ? st : vt_checkpoint(u, epoch, 0);
}

npred_es_loop vt_loop(npred_video_trainer *t)
{
    npred_es_loop l = {&t->es,           &t->sched,       &t->adam,         t->t,           t->best_data,
                       t->best_buf,      &t->resumed,     &t->pending_row,  &t->cb,         &t->epoch_t0,
                       &t->epoch_loss,   &t->epoch_lr,    &t->epoch_batches, t,             hook_evaluate,
                       hook_log_add,     hook_save_model, hook_save_state,  hook_interrupted, hook_train_epoch};
    return l;
}

static npred_status final_checkpoint(void *u)
{
    const npred_video_trainer *t = u;
    return vt_checkpoint(t, t->es.epoch, 1);
}

npred_status npred_video_trainer_run(npred_video_trainer *t, npred_trainer_result *res)
{
    npred_es_loop l = vt_loop(t);
    return npred_es_loop_train(&l, &t->done, final_checkpoint, res);
}

static uint64_t fp_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t npred_video_loaders_fingerprint(const npred_video_loaders *L)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t ns = npred_video_loaders_count(L);
    h = fp_bytes(h, &ns, sizeof ns);
    for (size_t s = 0; s < ns; s++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, s, &si);
        npred_video_dataset_info di;
        npred_video_dataset_get_info(si.dataset, &di);
        h = fp_bytes(h, si.data_key, strlen(si.data_key) + 1);
        int64_t dims[10] = {di.n_trials, di.n_neurons, di.height, di.width, di.t_max, si.channels, si.frames,
                            si.resp_frames, si.behavior_dim, si.pupil_dim};
        h = fp_bytes(h, dims, sizeof dims);
        h = fp_bytes(h, npred_video_dataset_tiers(si.dataset), (size_t)di.n_trials * sizeof(int));
        for (size_t k = 0; k < di.n_tiers; k++) h = fp_bytes(h, di.tier_names[k], strlen(di.tier_names[k]) + 1);
        for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
            static const char *const stats[] = {"mean", "std"};
            for (int k = 0; k < 2; k++) {
                const float *x = npred_video_dataset_stat(si.dataset, (npred_video_field)f, stats[k]);
                if (x) h = fp_bytes(h, x, (size_t)di.rows[f] * di.t_max * sizeof(float));
            }
        }
        const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
        if (cm && cm->data) h = fp_bytes(h, cm->data, cm->count * cm->itemsize);
        if (si.response_precision) h = fp_bytes(h, si.response_precision, (size_t)si.n_neurons * di.t_max * sizeof(float));
    }
    return h;
}

static npred_status bn_sync(void *user, double *x, size_t n)
{
    (void)user;
    return npred_dist_allreduce_f64(x, n);
}

npred_status npred_video_trainer_set_dist(npred_video_trainer *t, int sync_bn)
{
    const int K = npred_dist_size(), r = npred_dist_rank();
    if (K <= 1) return NPRED_OK;
    for (int s = 0; sync_bn && s < t->ns; s++) {
        /* every rank needs a non-empty part of every global batch */
        npred_video_session_info si;
        npred_video_loaders_session(t->L, (size_t)s, &si);
        int64_t N = si.tier_n[npred_video_loaders_tier(t->L, (size_t)s, "train")], bs = t->batch_size;
        int64_t last = N % bs, smallest = N < bs ? N : last ? last : bs;
        if (smallest < K)
            return npred_errorf(NPRED_ERR_ARG, "video trainer: synchronised BatchNorm over %d ranks needs at least %d "
                                "clips in every batch; session %s has %lld train clips in batches of %lld (smallest "
                                "%lld)", K, K, si.data_key, (long long)N, (long long)bs, (long long)smallest);
    }
    /* the same data and settings everywhere, checked before anything is trained */
    uint64_t mine[3] = {t->fingerprint, (uint64_t)t->t->n_params, (uint64_t)t->batch_size}, r0[3];
    memcpy(r0, mine, sizeof r0);
    npred_status st = npred_dist_bcast(r0, sizeof r0, 0);
    double differs = memcmp(mine, r0, sizeof r0) != 0;
    if (!st) st = npred_dist_allreduce_f64(&differs, 1);
    if (st) return npred_error_prefix(st, "video trainer: comparing the ranks' datasets");
    if (differs > 0)
        return npred_errorf(NPRED_ERR_ARG,
                            "video trainer: rank %d of %d: the datasets or models differ between ranks (%g rank(s) "
                            "differ from rank 0; fingerprint here %016llx, rank 0 %016llx): every rank must read the "
                            "same scans with the same loader and model configs; nothing was trained",
                            r, K, differs, (unsigned long long)mine[0], (unsigned long long)r0[0]);
    st = npred_dist_bcast(t->t->data, t->t->n_params * sizeof(float), 0);
    if (!st) st = npred_dist_bcast(t->t->bufdata, t->t->n_buffers * sizeof(float), 0);
    if (st) return npred_error_prefix(st, "video trainer: initial broadcast");
    t->rank = r;
    t->nranks = K;
    if (sync_bn) {
        npred_batchnorm_set_sync(bn_sync, NULL);
        t->owns_bn_sync = 1;
    }
    return NPRED_OK;
}
