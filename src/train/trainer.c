/* standard_trainer: see trainer.h. */
#include "train/trainer.h"
#include "npred/preprocess.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/json.h"
#include "model/model.h"
#include "io/safetensors.h"
#include "train/adam.h"
#include "train/loss.h"
#include "npred/metrics.h"
#include "train/scheduler.h"
#include "npred/dist.h"
#include "data/loader.h"
#include "kernels/batchnorm_sync.h"
#include "readouts/readout.h"

/* ------------------------------------------------------------------ config */

void npred_trainer_config_init(npred_trainer_config *c)
{
    memset(c, 0, sizeof *c);
    c->avg_loss = 0;
    c->scale_loss = 1;
    c->loss_function = NPRED_TRAIN_LOSS_POISSON;
    c->stop_function = NPRED_TRAIN_STOP_CORRELATIONS;
    c->loss_accum_batch_n = 0;
    c->interval = 1;
    c->patience = 5;
    c->epoch = 0;
    c->lr_init = 0.005;
    c->max_iter = 200;
    c->maximize = 1;
    c->tolerance = 1e-6;
    c->restore_best = 1;
    c->lr_decay_steps = 3;
    c->lr_decay_factor = 0.3;
    c->min_lr = 0.0001;
    c->detach_core = 0;
    c->verbose = 1;
    c->track_training = 0;
    snprintf(c->device, sizeof c->device, "cuda");
}

static const char *const loss_names[] = {"PoissonLoss", "ExponentialLoss", "AnscombeMSE", "Corr", "AvgCorr"};
static const char *const stop_names[] = {"get_correlations", "get_poisson_loss"};

const char *npred_train_loss_name(npred_train_loss l) { return (unsigned)l < 5 ? loss_names[l] : "?"; }
const char *npred_train_stop_name(npred_train_stop s) { return (unsigned)s < 2 ? stop_names[s] : "?"; }

#define ANY NPRED_JSON_ANY

npred_status npred_trainer_config_set_json(npred_trainer_config *c, const cJSON *obj, const char *where)
{
    npred_json_reader r = {where ? where : "trainer config", "", NPRED_OK};
    if (!cJSON_IsObject(obj)) return npred_errorf(NPRED_ERR_CONFIG, "%s: expected a JSON object", r.where);
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *k = v->string, *device;
        int e;
        if (!strcmp(k, "avg_loss")) npred_json_bool(&r, v, &c->avg_loss);
        else if (!strcmp(k, "scale_loss")) npred_json_bool(&r, v, &c->scale_loss);
        else if (!strcmp(k, "loss_function")) {
            if (npred_json_choice(&r, v, loss_names, 5, &e)) c->loss_function = (npred_train_loss)e;
        } else if (!strcmp(k, "stop_function")) {
            if (npred_json_choice(&r, v, stop_names, 2, &e)) c->stop_function = (npred_train_stop)e;
        } else if (!strcmp(k, "loss_accum_batch_n")) {
            if (npred_json_i64_or_null(&r, v, 1, ANY, &c->loss_accum_batch_n) == 2) c->loss_accum_batch_n = 0;
        } else if (!strcmp(k, "interval")) npred_json_i64(&r, v, 1, ANY, &c->interval);
        else if (!strcmp(k, "patience")) npred_json_i64(&r, v, 0, ANY, &c->patience);
        else if (!strcmp(k, "epoch")) npred_json_i64(&r, v, 0, ANY, &c->epoch);
        else if (!strcmp(k, "lr_init")) npred_json_num(&r, v, 0, ANY, &c->lr_init);
        else if (!strcmp(k, "max_iter")) npred_json_i64(&r, v, 0, ANY, &c->max_iter);
        else if (!strcmp(k, "maximize")) npred_json_bool(&r, v, &c->maximize);
        else if (!strcmp(k, "tolerance")) npred_json_num(&r, v, -ANY, ANY, &c->tolerance);
        else if (!strcmp(k, "restore_best")) npred_json_bool(&r, v, &c->restore_best);
        else if (!strcmp(k, "lr_decay_steps")) npred_json_i64(&r, v, 0, ANY, &c->lr_decay_steps);
        else if (!strcmp(k, "lr_decay_factor")) {
            if (npred_json_num(&r, v, -ANY, ANY, &c->lr_decay_factor) && !(c->lr_decay_factor < 1.0))
                npred_json_fail(&r, v, "a number < 1");
        } else if (!strcmp(k, "min_lr")) npred_json_num(&r, v, 0, ANY, &c->min_lr);
        else if (!strcmp(k, "detach_core")) npred_json_bool(&r, v, &c->detach_core);
        else if (!strcmp(k, "seed")) {
            int got = npred_json_i64_or_null(&r, v, 0, ANY, &c->seed);
            if (got) c->seed_set = got == 1;
        } else if (!strcmp(k, "verbose")) npred_json_bool(&r, v, &c->verbose);
        else if (!strcmp(k, "track_training")) npred_json_bool(&r, v, &c->track_training);
        else if (!strcmp(k, "device")) {
            if (npred_json_str(&r, v, &device)) snprintf(c->device, sizeof c->device, "%s", device);
        } else if (!strcmp(k, "cb")) {
            if (!cJSON_IsNull(v)) npred_json_fail(&r, v, "null (progress goes to the trainer callbacks)");
        } else {
            npred_json_unknown(&r, v, "not a standard_trainer argument");
        }
        if (r.st) return r.st;
    }
    if (c->loss_function == NPRED_TRAIN_LOSS_AVG_CORR && c->avg_loss)
        return npred_errorf(NPRED_ERR_CONFIG, "%s: 'avg_loss' true with 'AvgCorr' (AvgCorr already averages over the "
                            "neurons; use \"Corr\" with avg_loss true for the same loss)", r.where);
    return NPRED_OK;
}

npred_status npred_trainer_config_parse(npred_trainer_config *c, const char *json, const char *where)
{
    if (!where) where = "trainer config";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return npred_errorf(NPRED_ERR_CONFIG, "%s: invalid JSON near '%.20s'", where, end ? end : "");
    npred_status s = npred_trainer_config_set_json(c, root, where);
    cJSON_Delete(root);
    return s;
}

cJSON *npred_trainer_config_to_json(const npred_trainer_config *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "avg_loss", c->avg_loss);
    cJSON_AddBoolToObject(o, "scale_loss", c->scale_loss);
    cJSON_AddStringToObject(o, "loss_function", npred_train_loss_name(c->loss_function));
    cJSON_AddStringToObject(o, "stop_function", npred_train_stop_name(c->stop_function));
    if (c->loss_accum_batch_n) cJSON_AddNumberToObject(o, "loss_accum_batch_n", (double)c->loss_accum_batch_n);
    else cJSON_AddNullToObject(o, "loss_accum_batch_n");
    cJSON_AddStringToObject(o, "device", c->device);
    cJSON_AddBoolToObject(o, "verbose", c->verbose);
    cJSON_AddNumberToObject(o, "interval", (double)c->interval);
    cJSON_AddNumberToObject(o, "patience", (double)c->patience);
    cJSON_AddNumberToObject(o, "epoch", (double)c->epoch);
    cJSON_AddNumberToObject(o, "lr_init", c->lr_init);
    cJSON_AddNumberToObject(o, "max_iter", (double)c->max_iter);
    cJSON_AddBoolToObject(o, "maximize", c->maximize);
    cJSON_AddNumberToObject(o, "tolerance", c->tolerance);
    cJSON_AddBoolToObject(o, "restore_best", c->restore_best);
    cJSON_AddNumberToObject(o, "lr_decay_steps", (double)c->lr_decay_steps);
    cJSON_AddNumberToObject(o, "lr_decay_factor", c->lr_decay_factor);
    cJSON_AddNumberToObject(o, "min_lr", c->min_lr);
    cJSON_AddNullToObject(o, "cb");
    cJSON_AddBoolToObject(o, "track_training", c->track_training);
    cJSON_AddBoolToObject(o, "detach_core", c->detach_core);
    if (c->seed_set) cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    else cJSON_AddNullToObject(o, "seed");
    return o;
}

char *npred_trainer_config_json(const npred_trainer_config *c)
{
    cJSON *o = npred_trainer_config_to_json(c);
    char *txt = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!txt) npred_errorf(NPRED_ERR_NOMEM, "trainer config: out of memory");
    return txt;
}

/* ------------------------------------------------------------------ trainer */

typedef struct {
    double epoch, lr, train_loss, objective, seconds;
} log_row;

struct npred_trainer {
    npred_model *m;
    npred_ptable *t;
    const npred_loaders *L;
    npred_trainer_config c;
    size_t n_sessions;
    int *model_index;        /* (n_sessions,) model session of each loader session */
    double *n_trials;        /* (n_sessions,) trials of each scan (all tiers) */
    int64_t max_neurons, batch_size;
    int64_t accum;           /* batches per optimizer step */
    npred_batch batch;
    float *pred, *dpred;     /* (batch_size, max_neurons) */
    float *val_pred, *val_resp; /* (max validation trials, max_neurons) */
    int64_t max_val;
    double *rbuf;            /* (max_neurons,) per-neuron results */
    npred_adam adam;
    npred_scheduler sched;
    npred_es es;
    npred_rng rng;
    float *best_data, *best_buf;
    npred_trainer_callbacks cb;
    npred_trainer_grad_reduce_fn reduce;
    void *reduce_user;
    char *run_dir;
    int resumed;             /* es has a pending TRAIN_EPOCH from the state file */
    int done;
    log_row *log;
    double *trk;             /* (n_log, 2): tracked validation correlation and Poisson loss (track_training) */
    size_t n_log, cap_log;
    double last_trk[2];      /* the tracked values of the last evaluation */
    /* epoch in progress */
    double epoch_loss, epoch_t0, epoch_lr;
    int64_t epoch_batches;
    int pending_row;         /* a trained epoch waits for its evaluation */
    /* data parallel (npred_trainer_set_dist): rank of nranks; 1 rank = the plain trainer */
    int rank, nranks;
    int owns_bn_sync;        /* this trainer installed the BatchNorm sync hook */
    float *noise;            /* (batch_size, max_neurons, 2) Gaussian readout draws of the global batch */
    double *dbuf;            /* (5 * max_neurons,) validation sums */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void message(npred_trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void message(npred_trainer *t, const char *fmt, ...)
{
    if (!t->cb.on_message) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t->cb.on_message(t->cb.user, buf);
}

void npred_trainer_free(npred_trainer *t)
{
    if (!t) return;
    free(t->model_index);
    free(t->n_trials);
    npred_batch_free(&t->batch);
    free(t->pred);
    free(t->dpred);
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
        t->best_data = malloc((t->t->n_params ? t->t->n_params : 1) * sizeof(float));
        t->best_buf = malloc((t->t->n_buffers ? t->t->n_buffers : 1) * sizeof(float));
        if (!t->pred || !t->dpred || !t->val_pred || !t->val_resp || !t->rbuf || !t->best_data || !t->best_buf)
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
    double *dbuf = malloc((size_t)(5 * t->max_neurons + 1) * sizeof(double));
    if (!noise || !dbuf) {
        free(noise);
        free(dbuf);
        return npred_errorf(NPRED_ERR_NOMEM, "trainer: out of memory");
    }
    free(t->noise);
    free(t->dbuf);
    t->noise = noise;
    t->dbuf = dbuf;
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

/* ---- one batch ---- */

static npred_status loss_forward(const npred_trainer *t, double *v, const float *yhat, const float *y, int64_t B,
                                 int64_t n)
{
    npred_loss_reduction red = t->c.avg_loss ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM;
    switch (t->c.loss_function) {
    case NPRED_TRAIN_LOSS_POISSON: return npred_loss_poisson_forward(v, yhat, y, B, n, red, NPRED_POISSON_EPS);
    case NPRED_TRAIN_LOSS_EXPONENTIAL:
        return npred_loss_exponential_forward(v, yhat, y, B, n, red, NPRED_EXPONENTIAL_BIAS,
                                              NPRED_EXPONENTIAL_TARGET_BIAS);
    case NPRED_TRAIN_LOSS_ANSCOMBE_MSE: return npred_loss_anscombe_mse_forward(v, yhat, y, B, n, red);
    case NPRED_TRAIN_LOSS_CORR: {
        npred_status st = npred_loss_corr_forward(t->rbuf, yhat, y, B, n, 0, NPRED_CORR_EPS);
        if (st) return st;
        double a = 0;
        for (int64_t j = 0; j < n; j++) a -= t->rbuf[j];
        *v = t->c.avg_loss ? a / (double)n : a;
        return NPRED_OK;
    }
    case NPRED_TRAIN_LOSS_AVG_CORR: return npred_loss_corr_forward(v, yhat, y, B, n, 1, NPRED_CORR_EPS);
    }
    return npred_errorf(NPRED_ERR_ARG, "trainer: unknown loss");
}

static npred_status loss_backward(const npred_trainer *t, float *dyhat, double k, const float *yhat, const float *y,
                                  int64_t B, int64_t n)
{
    npred_loss_reduction red = t->c.avg_loss ? NPRED_LOSS_MEAN : NPRED_LOSS_SUM;
    switch (t->c.loss_function) {
    case NPRED_TRAIN_LOSS_POISSON:
        return npred_loss_poisson_backward(dyhat, &k, yhat, y, B, n, red, NPRED_POISSON_EPS);
    case NPRED_TRAIN_LOSS_EXPONENTIAL:
        return npred_loss_exponential_backward(dyhat, &k, yhat, y, B, n, red, NPRED_EXPONENTIAL_BIAS,
                                               NPRED_EXPONENTIAL_TARGET_BIAS);
    case NPRED_TRAIN_LOSS_ANSCOMBE_MSE: return npred_loss_anscombe_mse_backward(dyhat, &k, yhat, y, B, n, red);
    case NPRED_TRAIN_LOSS_CORR: {
        double g = t->c.avg_loss ? -k / (double)n : -k;
        for (int64_t j = 0; j < n; j++) t->rbuf[j] = g;
        return npred_loss_corr_backward(dyhat, t->rbuf, yhat, y, B, n, 0, NPRED_CORR_EPS);
    }
    case NPRED_TRAIN_LOSS_AVG_CORR: return npred_loss_corr_backward(dyhat, &k, yhat, y, B, n, 1, NPRED_CORR_EPS);
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
        if ((st = loss_forward(t, &v, t->pred, b->responses, B, n))) return st;
        /* a mean over this part becomes its share of the mean over the global batch */
        if (t->c.avg_loss && Bg != B) v *= (double)B / (double)Bg;
        double kb = t->c.avg_loss && Bg != B ? k * (double)B / (double)Bg : k;
        memset(t->dpred, 0, sizeof(float) * (size_t)(B * n));
        if ((st = loss_backward(t, t->dpred, kb, t->pred, b->responses, B, n))) return st;
        if ((st = npred_model_backward(m, t->dpred, t->c.detach_core, NULL, NULL))) return st;
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

static npred_status optimizer_step(npred_trainer *t)
{
    npred_status st = reduce_gradients(t);
    if (!st) st = npred_adam_step(&t->adam, t->t->data, t->t->grad);
    npred_ptable_zero_grad(t->t);
    return st;
}

static int interrupted(const npred_trainer *t) { return t->cb.interrupt && *t->cb.interrupt; }

/* Every rank stops together: the flag of any rank stops all (one tiny allreduce). */
static npred_status interrupted_all(const npred_trainer *t, int *stop)
{
    *stop = interrupted(t);
    if (t->nranks == 1) return NPRED_OK;
    double f = *stop;
    npred_status st = npred_dist_allreduce_f64(&f, 1);
    *stop = f > 0;
    return st;
}

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
            /* diverged: stop before the update spreads it; model.safetensors keeps the best so far */
            st = npred_errorf(NPRED_ERR_VALUE,
                              "training diverged: the loss is %s in epoch %lld, batch %lld of %lld (session %s) at "
                              "learning rate %g (lr_init too large?); stopped%s%s%s",
                              isnan(loss) ? "NaN" : "infinite", (long long)epoch, (long long)(i + 1),
                              (long long)n_batches, t->batch.data_key, t->sched.lr,
                              t->run_dir ? "; the best model so far (objective before this epoch) is in " : "",
                              t->run_dir ? t->run_dir : "", t->run_dir ? "/model.safetensors" : "");
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

/* ---- objective ---- */

/* Data-parallel validation: rank r evaluates trials [T*r/K, T*(r+1)/K) of each
 * session's validation tier (the eval-mode running statistics are rank 0's,
 * broadcast first); per-neuron sums are reduced, in two passes for the
 * correlation (means, then centred moments) as np_functions.corr computes it. */
static npred_status evaluate_dist(npred_trainer *t, double *objective)
{
    npred_status st = npred_dist_bcast(t->t->bufdata, t->t->n_buffers * sizeof(float), 0);
    if (st) return npred_error_prefix(st, "trainer: buffer broadcast");
    double acc = 0;
    int64_t total_neurons = 0;
    for (size_t s = 0; s < t->n_sessions && !st; s++) {
        npred_session_info si;
        npred_loaders_session(t->L, s, &si);
        const int64_t Tg = si.tier_n[NPRED_TIER_VALIDATION];
        const int64_t lo = Tg * t->rank / t->nranks, hi = Tg * (t->rank + 1) / t->nranks;
        const int mi = t->model_index[s];
        const int64_t n = npred_model_session_neurons(t->m, mi), bs = t->batch_size;
        int64_t T = 0;
        for (int64_t p = lo; p < hi && !st; p += bs) {
            int64_t B = hi - p < bs ? hi - p : bs;
            if ((st = npred_loaders_get(t->L, s, si.tier_idx[NPRED_TIER_VALIDATION] + p, B, &t->batch))) break;
            st = npred_model_forward(t->m, mi, t->batch.images, t->batch.pupil_center, t->batch.behavior, (int)B, 0,
                                     NULL, NULL, t->val_pred + (size_t)(T * n));
            if (st) break;
            memcpy(t->val_resp + (size_t)(T * n), t->batch.responses, sizeof(float) * (size_t)(B * n));
            T += B;
        }
        if (st) break;
        double *d = t->dbuf;
        if (t->c.stop_function == NPRED_TRAIN_STOP_CORRELATIONS) {
            /* pass 1: sums of responses (d[0..n)) and predictions (d[n..2n)) */
            memset(d, 0, sizeof(double) * (size_t)(2 * n));
            for (int64_t r = 0; r < T; r++)
                for (int64_t j = 0; j < n; j++) {
                    d[j] += t->val_resp[r * n + j];
                    d[n + j] += t->val_pred[r * n + j];
                }
            if ((st = npred_dist_allreduce_f64(d, (size_t)(2 * n)))) break;
            for (int64_t j = 0; j < 2 * n; j++) d[j] /= (double)(Tg > 0 ? Tg : 1);
            /* pass 2: centred moments q = [var sums of responses | of predictions | cross] */
            double *q = d + 2 * n;
            memset(q, 0, sizeof(double) * (size_t)(3 * n));
            for (int64_t r = 0; r < T; r++)
                for (int64_t j = 0; j < n; j++) {
                    double a = t->val_resp[r * n + j] - d[j], b = t->val_pred[r * n + j] - d[n + j];
                    q[j] += a * a;
                    q[n + j] += b * b;
                    q[2 * n + j] += a * b;
                }
            if ((st = npred_dist_allreduce_f64(q, (size_t)(3 * n)))) break;
            for (int64_t j = 0; j < n; j++) {
                double r = 0;
                if (Tg > 0) {
                    double da = sqrt(q[j] / (double)Tg) + NPRED_METRICS_CORR_EPS;
                    double db = sqrt(q[n + j] / (double)Tg) + NPRED_METRICS_CORR_EPS;
                    r = q[2 * n + j] / (double)Tg / (da * db);
                }
                t->rbuf[j] = isnan(r) ? 0.0 : r;
            }
        } else {
            memset(d, 0, sizeof(double) * (size_t)n);
            for (int64_t j = 0; j < n; j++)
                for (int64_t r = 0; r < T; r++) {
                    double o = t->val_pred[r * n + j], y = t->val_resp[r * n + j];
                    d[j] += o - y * log(o + 1e-12);
                }
            if ((st = npred_dist_allreduce_f64(d, (size_t)n))) break;
            for (int64_t j = 0; j < n; j++) t->rbuf[j] = Tg > 0 ? d[j] / (double)Tg : NAN;
        }
        for (int64_t j = 0; j < n; j++) acc += t->rbuf[j];
        total_neurons += n;
    }
    if (st) return st;
    *objective = total_neurons ? acc / (double)total_neurons : NAN;
    return NPRED_OK;
}

npred_status npred_trainer_evaluate(npred_trainer *t, double *objective)
{
    t->last_trk[0] = t->last_trk[1] = NAN;
    if (t->nranks > 1) return evaluate_dist(t, objective);
    double acc = 0, trk_corr = 0, trk_poisson = 0;
    int64_t total_neurons = 0;
    npred_status st = NPRED_OK;
    for (size_t s = 0; s < t->n_sessions && !st; s++) {
        npred_loader_iter it;
        if ((st = npred_loader_iter_begin(&it, t->L, s, NPRED_TIER_VALIDATION, NULL))) break;
        int mi = t->model_index[s];
        int64_t n = npred_model_session_neurons(t->m, mi), T = 0;
        for (;;) {
            int has = 0;
            if ((st = npred_loader_iter_next(&it, &t->batch, &has)) || !has) break;
            int64_t B = t->batch.n;
            if (T + B > t->max_val) {
                st = npred_errorf(NPRED_ERR_ARG, "trainer: validation tier larger than expected");
                break;
            }
            st = npred_model_forward(t->m, mi, t->batch.images, t->batch.pupil_center, t->batch.behavior, (int)B, 0,
                                     NULL, NULL, t->val_pred + (size_t)(T * n));
            if (st) break;
            memcpy(t->val_resp + (size_t)(T * n), t->batch.responses, sizeof(float) * (size_t)(B * n));
            T += B;
        }
        npred_loader_iter_free(&it);
        if (st) break;
        if (t->c.track_training) {
            /* sensorium's tracker: get_correlations(per_neuron=False), get_poisson_loss(avg=False,
             * per_neuron=False): the mean correlation and the summed loss over every neuron */
            if (T > 0) {
                if ((st = npred_metrics_corr(t->rbuf, t->val_resp, t->val_pred, T, n, NPRED_METRICS_CORR_EPS, 1)))
                    break;
                for (int64_t j = 0; j < n; j++) trk_corr += t->rbuf[j];
            }
            for (int64_t i = 0; i < T * n; i++)
                trk_poisson += t->val_pred[i] - t->val_resp[i] * log((double)t->val_pred[i] + 1e-12);
        }
        if (t->c.stop_function == NPRED_TRAIN_STOP_CORRELATIONS) {
            if (T > 0) {
                if ((st = npred_metrics_corr(t->rbuf, t->val_resp, t->val_pred, T, n, NPRED_METRICS_CORR_EPS, 1)))
                    break;
            } else {
                for (int64_t j = 0; j < n; j++) t->rbuf[j] = 0; /* corr of nothing: NaN -> 0 */
            }
        } else {
            /* get_poisson_loss(avg=True): per neuron mean over trials of o - y log(o + eps) */
            for (int64_t j = 0; j < n; j++) {
                double a = 0;
                for (int64_t r = 0; r < T; r++) {
                    double o = t->val_pred[r * n + j], y = t->val_resp[r * n + j];
                    a += o - y * log(o + 1e-12);
                }
                t->rbuf[j] = T > 0 ? a / (double)T : NAN;
            }
        }
        for (int64_t j = 0; j < n; j++) acc += t->rbuf[j];
        total_neurons += n;
    }
    if (st) return st;
    *objective = total_neurons ? acc / (double)total_neurons : NAN;
    if (t->c.track_training) {
        t->last_trk[0] = total_neurons ? trk_corr / (double)total_neurons : NAN;
        t->last_trk[1] = trk_poisson;
    }
    return NPRED_OK;
}

/* ---- files ---- */


static void run_path(const npred_trainer *t, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", t->run_dir, name);
}

npred_status npred_trainer_set_run_dir(npred_trainer *t, const char *dir, const char *config_json)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return npred_errorf(NPRED_ERR_IO, "%s: not a directory", dir);
    free(t->run_dir);
    t->run_dir = strdup(dir);
    if (!t->run_dir) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    if (config_json && npred_dist_rank() == 0) {
        char p[4096];
        run_path(t, "config.json", p, sizeof p);
        return npred_write_atomic(p, config_json, strlen(config_json));
    }
    return NPRED_OK;
}

static npred_status log_add(npred_trainer *t, const log_row *r, const double *trk)
{
    if (t->n_log == t->cap_log) {
        size_t cap = t->cap_log ? 2 * t->cap_log : 64;
        log_row *nl = realloc(t->log, cap * sizeof *nl);
        if (!nl) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        t->log = nl;
        double *nt = realloc(t->trk, cap * 2 * sizeof *nt);
        if (!nt) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        t->trk = nt;
        t->cap_log = cap;
    }
    t->trk[2 * t->n_log] = trk ? trk[0] : NAN;
    t->trk[2 * t->n_log + 1] = trk ? trk[1] : NAN;
    t->log[t->n_log++] = *r;
    return NPRED_OK;
}

static npred_status write_log(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    size_t cap = 160 + t->n_log * 192;
    char *buf = malloc(cap);
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    const char *obj = t->c.stop_function == NPRED_TRAIN_STOP_CORRELATIONS ? "validation_correlation"
                                                                          : "validation_poisson_loss";
    const int trk = t->c.track_training;
    size_t k = (size_t)snprintf(buf, cap, "epoch,lr,train_loss,%s,seconds%s\n", obj,
                                trk ? ",correlation,poisson_loss" : "");
    for (size_t i = 0; i < t->n_log; i++) {
        const log_row *r = &t->log[i];
        k += (size_t)snprintf(buf + k, cap - k, "%lld,%.9g,%.9g,%.9g,%.3f", (long long)r->epoch, r->lr,
                              r->train_loss, r->objective, r->seconds);
        if (trk) k += (size_t)snprintf(buf + k, cap - k, ",%.9g,%.9g", t->trk[2 * i], t->trk[2 * i + 1]);
        k += (size_t)snprintf(buf + k, cap - k, "\n");
    }
    char p[4096];
    run_path(t, "log.csv", p, sizeof p);
    npred_status st = npred_write_atomic(p, buf, k);
    free(buf);
    return st;
}

static npred_status save_model(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    char p[4096];
    run_path(t, "model.safetensors", p, sizeof p);
    return npred_model_save_file(t->m, p);
}

/* state.safetensors: named flat tensors (see save_state) */
enum { ES_I_N = 10, ES_F_N = 3 };

static npred_status add_f32(npred_tensor_list *l, const char *name, const float *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_F32, 1, sh, x, NULL);
}
static npred_status add_f64(npred_tensor_list *l, const char *name, const double *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_F64, 1, sh, x, NULL);
}
static npred_status add_i64(npred_tensor_list *l, const char *name, const int64_t *x, size_t n)
{
    int64_t sh[1] = {(int64_t)n};
    return npred_tensor_list_add(l, name, NPRED_TENSOR_I64, 1, sh, x, NULL);
}

static npred_status save_state(const npred_trainer *t)
{
    if (!t->run_dir || t->rank) return NPRED_OK; /* rank 0 alone writes */
    const npred_es *e = &t->es;
    int64_t es_i[ES_I_N] = {e->epoch, e->patience_counter, e->repeat, e->n_evaluations, e->scheduler_warmup,
                            (int64_t)e->phase, (int64_t)e->stop, e->state, e->k, e->awaiting};
    double es_f[ES_F_N] = {e->current, e->best, e->value};
    int64_t sc_i[3] = {t->sched.num_bad_epochs, t->sched.cooldown_counter, t->sched.last_epoch};
    double sc_f[2] = {t->sched.lr, t->sched.best};
    int64_t rng_i[6] = {(int64_t)t->rng.s[0], (int64_t)t->rng.s[1], (int64_t)t->rng.s[2], (int64_t)t->rng.s[3],
                        t->rng.has_spare, t->done};
    double rng_f[2] = {t->rng.spare, t->adam.p.lr};
    int64_t sizes[3] = {(int64_t)t->t->n_params, (int64_t)t->t->n_buffers, t->adam.step};
    npred_tensor_list l;
    npred_tensor_list_init(&l);
    npred_status st = add_f32(&l, "model.params", t->t->data, t->t->n_params);
    if (!st) st = add_f32(&l, "model.buffers", t->t->bufdata, t->t->n_buffers);
    if (!st) st = add_f32(&l, "best.params", t->best_data, t->t->n_params);
    if (!st) st = add_f32(&l, "best.buffers", t->best_buf, t->t->n_buffers);
    if (!st) st = add_f32(&l, "adam.m", t->adam.m, t->t->n_params);
    if (!st) st = add_f32(&l, "adam.v", t->adam.v, t->t->n_params);
    if (!st) st = add_i64(&l, "sizes", sizes, 3);
    if (!st) st = add_i64(&l, "early_stopping.i", es_i, ES_I_N);
    if (!st) st = add_f64(&l, "early_stopping.f", es_f, ES_F_N);
    if (!st) st = add_i64(&l, "scheduler.i", sc_i, 3);
    if (!st) st = add_f64(&l, "scheduler.f", sc_f, 2);
    if (!st) st = add_i64(&l, "rng.i", rng_i, 6);
    if (!st) st = add_f64(&l, "rng.f", rng_f, 2);
    if (!st) st = add_f64(&l, "log", (const double *)t->log, t->n_log * 5);
    if (!st) st = add_f64(&l, "log_tracked", t->trk, t->n_log * 2);
    if (!st)
        st = npred_tensor_list_set_meta(&l, "npred_state",
                                        "sizes = [n_params, n_buffers, adam step]; early_stopping.i = [epoch, "
                                        "patience_counter, repeat, n_evaluations, scheduler_warmup, phase, stop, "
                                        "state, k, awaiting]; early_stopping.f = [current, best, value]; "
                                        "scheduler.i = [num_bad_epochs, cooldown_counter, last_epoch]; "
                                        "scheduler.f = [lr, best]; rng.i = [s0..s3, has_spare, done]; "
                                        "rng.f = [spare, adam lr]; log = rows of [epoch, lr, train_loss, "
                                        "objective, seconds]");
    if (!st) {
        char p[4096];
        run_path(t, "state.safetensors", p, sizeof p);
        st = npred_safetensors_write(p, &l);
    }
    npred_tensor_list_free(&l);
    return st;
}

static npred_status get_tensor(const npred_tensor_list *l, const char *path, const char *name,
                               npred_tensor_dtype dt, size_t n, void *dst)
{
    const npred_tensor *x = npred_tensor_list_find(l, name);
    if (!x) return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' missing (not an npred training state)", path, name);
    if (x->dtype != dt || x->nbytes != n * npred_tensor_dtype_size(dt))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: tensor '%s' has %zu bytes of %s, expected %zu of %s "
                            "(the model or configuration differs from the saved run)",
                            path, name, x->nbytes, npred_tensor_dtype_name(x->dtype),
                            n * npred_tensor_dtype_size(dt), npred_tensor_dtype_name(dt));
    if (n) memcpy(dst, x->data, x->nbytes);
    return NPRED_OK;
}

npred_status npred_trainer_resume(npred_trainer *t, const char *path)
{
    npred_tensor_list l;
    npred_status st = npred_safetensors_read(path, &l);
    if (st) {
        npred_tensor_list_free(&l);
        return st;
    }
    int64_t sizes[3], es_i[ES_I_N], sc_i[3], rng_i[6];
    double es_f[ES_F_N], sc_f[2], rng_f[2];
    st = get_tensor(&l, path, "sizes", NPRED_TENSOR_I64, 3, sizes);
    if (!st && (sizes[0] != (int64_t)t->t->n_params || sizes[1] != (int64_t)t->t->n_buffers))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: saved run has %lld parameters and %lld buffer values, this model %zu "
                          "and %zu (different model config or data?)", path, (long long)sizes[0],
                          (long long)sizes[1], t->t->n_params, t->t->n_buffers);
    if (!st) st = get_tensor(&l, path, "model.params", NPRED_TENSOR_F32, t->t->n_params, t->t->data);
    if (!st) st = get_tensor(&l, path, "model.buffers", NPRED_TENSOR_F32, t->t->n_buffers, t->t->bufdata);
    if (!st) st = get_tensor(&l, path, "best.params", NPRED_TENSOR_F32, t->t->n_params, t->best_data);
    if (!st) st = get_tensor(&l, path, "best.buffers", NPRED_TENSOR_F32, t->t->n_buffers, t->best_buf);
    if (!st) st = get_tensor(&l, path, "adam.m", NPRED_TENSOR_F32, t->t->n_params, t->adam.m);
    if (!st) st = get_tensor(&l, path, "adam.v", NPRED_TENSOR_F32, t->t->n_params, t->adam.v);
    if (!st) st = get_tensor(&l, path, "early_stopping.i", NPRED_TENSOR_I64, ES_I_N, es_i);
    if (!st) st = get_tensor(&l, path, "early_stopping.f", NPRED_TENSOR_F64, ES_F_N, es_f);
    if (!st) st = get_tensor(&l, path, "scheduler.i", NPRED_TENSOR_I64, 3, sc_i);
    if (!st) st = get_tensor(&l, path, "scheduler.f", NPRED_TENSOR_F64, 2, sc_f);
    if (!st) st = get_tensor(&l, path, "rng.i", NPRED_TENSOR_I64, 6, rng_i);
    if (!st) st = get_tensor(&l, path, "rng.f", NPRED_TENSOR_F64, 2, rng_f);
    const npred_tensor *lg = st ? NULL : npred_tensor_list_find(&l, "log");
    if (!st && (!lg || lg->dtype != NPRED_TENSOR_F64 || lg->nbytes % (5 * sizeof(double))))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: tensor 'log' missing or malformed", path);
    if (!st) {
        size_t rows = lg->nbytes / (5 * sizeof(double));
        t->n_log = 0;
        /* log_tracked (rows of 2) is absent in states written before track_training acted */
        const npred_tensor *tk = npred_tensor_list_find(&l, "log_tracked");
        if (tk && (tk->dtype != NPRED_TENSOR_F64 || tk->nbytes != rows * 2 * sizeof(double)))
            st = npred_errorf(NPRED_ERR_FORMAT, "%s: tensor 'log_tracked' malformed", path);
        for (size_t i = 0; i < rows && !st; i++) {
            log_row r;
            double tr[2];
            memcpy(&r, (const char *)lg->data + i * sizeof r, sizeof r);
            if (tk) memcpy(tr, (const char *)tk->data + i * sizeof tr, sizeof tr);
            st = log_add(t, &r, tk ? tr : NULL);
        }
    }
    if (!st) {
        npred_es *e = &t->es;
        e->epoch = es_i[0];
        e->patience_counter = es_i[1];
        e->repeat = es_i[2];
        e->n_evaluations = es_i[3];
        e->scheduler_warmup = (int)es_i[4];
        e->phase = (npred_es_phase)es_i[5];
        e->stop = (npred_es_stop)es_i[6];
        e->state = (int)es_i[7];
        e->k = es_i[8];
        e->awaiting = (int)es_i[9];
        e->current = es_f[0];
        e->best = es_f[1];
        e->value = es_f[2];
        t->sched.num_bad_epochs = (int)sc_i[0];
        t->sched.cooldown_counter = (int)sc_i[1];
        t->sched.last_epoch = sc_i[2];
        t->sched.lr = sc_f[0];
        t->sched.best = sc_f[1];
        for (int i = 0; i < 4; i++) t->rng.s[i] = (uint64_t)rng_i[i];
        t->rng.has_spare = (int)rng_i[4];
        t->done = (int)rng_i[5];
        t->rng.spare = rng_f[0];
        t->adam.step = sizes[2];
        st = npred_adam_set_lr(&t->adam, rng_f[1]);
        t->resumed = !t->done;
    }
    npred_tensor_list_free(&l);
    return st;
}

/* ---- the loop ---- */

static npred_status finish_row(npred_trainer *t, double objective)
{
    log_row r = {(double)t->es.epoch, t->epoch_lr, t->epoch_loss / (double)(t->epoch_batches ? t->epoch_batches : 1),
                 objective, now_s() - t->epoch_t0};
    if (!t->pending_row) {
        r.epoch = (double)t->es.epoch;
        r.lr = t->sched.lr;
        r.train_loss = NAN;
    }
    t->pending_row = 0;
    npred_status st = log_add(t, &r, t->c.track_training ? t->last_trk : NULL);
    if (!st) st = write_log(t);
    return st;
}

static void emit_epoch(npred_trainer *t, int improved)
{
    if (!t->cb.on_epoch || !t->n_log) return;
    const log_row *r = &t->log[t->n_log - 1];
    npred_trainer_epoch_info ei = {(int64_t)r->epoch, r->lr, r->train_loss, r->objective, r->seconds, improved,
                                   t->adam.step};
    t->cb.on_epoch(t->cb.user, &ei);
}

npred_status npred_trainer_run(npred_trainer *t, npred_trainer_result *res)
{
    npred_status st = NPRED_OK;
    int row_open = 0; /* a log row waits for the improvement flag (SAVE_BEST follows the evaluation) */
    if (t->done) goto finished;
    t->epoch_t0 = now_s();
    while (!st) {
        npred_es_action a;
        if (t->resumed) {
            a = NPRED_ES_TRAIN_EPOCH; /* the epoch the saved state was about to train */
            t->resumed = 0;
        } else if ((st = npred_es_next(&t->es, &a))) {
            break;
        }
        if (row_open && a != NPRED_ES_SAVE_BEST && a != NPRED_ES_STEP_SCHEDULER) {
            emit_epoch(t, 0);
            row_open = 0;
        }
        switch (a) {
        case NPRED_ES_EVALUATE: {
            double v = 0;
            if ((st = npred_trainer_evaluate(t, &v))) break;
            if ((st = npred_es_set_objective(&t->es, v))) break;
            if (t->es.phase == NPRED_ES_PHASE_START || (t->es.phase == NPRED_ES_PHASE_TRAIN && t->pending_row)) {
                if ((st = finish_row(t, v))) break;
                row_open = 1;
            }
            break;
        }
        case NPRED_ES_SAVE_BEST:
            memcpy(t->best_data, t->t->data, t->t->n_params * sizeof(float));
            memcpy(t->best_buf, t->t->bufdata, t->t->n_buffers * sizeof(float));
            st = save_model(t);
            if (row_open) {
                emit_epoch(t, 1);
                row_open = 0;
            }
            break;
        case NPRED_ES_RESTORE_BEST:
            memcpy(t->t->data, t->best_data, t->t->n_params * sizeof(float));
            memcpy(t->t->bufdata, t->best_buf, t->t->n_buffers * sizeof(float));
            message(t, "restoring best model (objective %.6f)", t->es.best);
            break;
        case NPRED_ES_STEP_SCHEDULER:
            if (npred_scheduler_step(&t->sched, t->es.current)) {
                st = npred_adam_set_lr(&t->adam, t->sched.lr);
                message(t, "learning rate reduced to %.6g", t->sched.lr);
            }
            break;
        case NPRED_ES_TRAIN_EPOCH:
            /* the resume point: everything up to this epoch is on disk */
            if ((st = save_state(t))) break;
            int stop = 0;
            if ((st = interrupted_all(t, &stop))) break;
            if (stop) {
                st = npred_errorf(NPRED_ERR_INTERRUPTED, "training interrupted before epoch %lld",
                                  (long long)t->es.epoch);
                break;
            }
            t->epoch_t0 = now_s();
            st = train_epoch(t, t->es.epoch);
            t->pending_row = 1;
            break;
        case NPRED_ES_DONE: goto done;
        }
    }
    return st;
done:
    t->done = 1;
    if (t->es.stop == NPRED_ES_STOP_NONFINITE) message(t, "stopped: the objective is not finite");
    if ((st = save_model(t))) return st;
    if ((st = save_state(t))) return st;
finished:
    if (res) {
        res->score = t->es.value;
        res->epochs = t->es.epoch;
        res->best = t->es.best;
        res->stop = t->es.stop;
    }
    return NPRED_OK;
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
