/* Adam (double-precision reference of the torch formulas), ReduceLROnPlateau
 * (`reduce_lr_on_plateau` fixture: exact LR sequence) and the early-stopping state
 * machine (`early_stopping`: 42 settings; `early_stopping_scheduler_trace`: the full
 * call/yield/LR trace). P = number of parameters. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "train/adam.h"
#include "train/early_stopping.h"
#include "train/scheduler.h"

/* ---- Adam ---- */

/* gradient of parameter i at step s: mixed signs and scales, one always-zero entry */
static float grad_at(int s, int i)
{
    if (i == 3) return 0.0f;
    double g = sin(0.7 * i + 1.3 * s) * pow(10.0, (i % 4) - 2);
    return (float)g;
}

static void adam_reference(double *p, double *m, double *v, const float *g, int P, int t, double lr,
                           double b1, double b2, double eps, double wd)
{
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (int i = 0; i < P; i++) {
        double gi = g[i] + wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

static void adam_run(double wd)
{
    enum { P = 9, STEPS = 6 };
    npred_adam_params hp = npred_adam_default_params();
    hp.lr = 0.01;
    hp.weight_decay = wd;
    npred_adam opt;
    if (!CHECK_OK(npred_adam_init(&opt, P, &hp))) return;
    float p[P], g[P];
    double rp[P], rm[P] = {0}, rv[P] = {0};
    for (int i = 0; i < P; i++) rp[i] = p[i] = (float)(0.5 - 0.1 * i);
    for (int s = 1; s <= STEPS; s++) {
        double lr = s <= 3 ? 0.01 : 0.003; /* a scheduler changes the LR after step 3 */
        if (s == 4) CHECK_OK(npred_adam_set_lr(&opt, lr));
        for (int i = 0; i < P; i++) g[i] = grad_at(s, i);
        CHECK_OK(npred_adam_step(&opt, p, g));
        adam_reference(rp, rm, rv, g, P, s, lr, 0.9, 0.999, 1e-8, wd);
        for (int i = 0; i < P; i++) {
            CHECK(fabs(p[i] - rp[i]) <= 2e-7 + 1e-6 * fabs(rp[i]), "wd %g step %d param %d: %.9g, reference %.9g",
                  wd, s, i, p[i], rp[i]);
            CHECK(fabs(opt.m[i] - rm[i]) <= 1e-5 * fabs(rm[i]) + 1e-12, "step %d m[%d] %.9g vs %.9g", s, i,
                  opt.m[i], rm[i]);
            CHECK(fabs(opt.v[i] - rv[i]) <= 1e-5 * fabs(rv[i]) + 1e-20, "step %d v[%d] %.9g vs %.9g", s, i,
                  opt.v[i], rv[i]);
        }
        CHECK(g[0] == grad_at(s, 0), "the gradient buffer is not modified");
    }
    CHECK(opt.step == STEPS, "step counter %lld", (long long)opt.step);
    CHECK(p[3] == (float)(0.5 - 0.3) || wd != 0, "a zero gradient leaves the parameter unchanged: %.9g", p[3]);
    npred_adam_free(&opt);
}

static void test_adam_matches_reference(void) { adam_run(0.0); }
static void test_adam_weight_decay(void) { adam_run(0.05); }

/* First step: m_hat = g, v_hat = g^2, so the update is lr * |g| / (|g| + eps) against the sign of g. */
static void test_adam_first_step(void)
{
    npred_adam opt;
    npred_adam_params hp = npred_adam_default_params();
    hp.lr = 0.1;
    if (!CHECK_OK(npred_adam_init(&opt, 3, &hp))) return;
    float p[3] = {1, 1, 1}, g[3] = {2.0f, -0.5f, 1e-9f};
    CHECK_OK(npred_adam_step(&opt, p, g));
    CHECK(fabsf(p[0] - 0.9f) < 1e-6f && fabsf(p[1] - 1.1f) < 1e-6f, "p = %.9g %.9g", p[0], p[1]);
    CHECK(fabs(p[2] - (1 - 0.1 * 1e-9 / (1e-9 + 1e-8))) < 1e-6, "eps damps tiny gradients: %.9g", p[2]);
    npred_adam_reset(&opt);
    CHECK(opt.step == 0 && opt.m[0] == 0 && opt.v[0] == 0, "reset");
    npred_adam_free(&opt);
}

/* ---- the vectorised, threaded step against the scalar formulas ---- */

/* One element as adam.h writes the step, in scalar float32 (the loop the step ran
 * before it was vectorised): the bits the vector lanes must give. */
static void adam_scalar(float *p, float *m, float *v, float g, int t, double lr, double wd, int decoupled)
{
    const double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.999, t);
    const float b1 = 0.9f, c1 = (float)(1.0 - 0.9), b2 = 0.999f, c2 = (float)(1.0 - 0.999);
    const float neg_step = (float)(-(lr / bc1)), bc2_sqrt = (float)sqrt(bc2), eps = 1e-8f;
    if (wd != 0 && decoupled) *p = *p * (float)(1.0 - lr * wd);
    if (wd != 0 && !decoupled) g = g + (float)wd * *p;
    float mi = *m * b1;
    mi = mi + c1 * g;
    float vi = *v * b2;
    vi = vi + (c2 * g) * g;
    *m = mi;
    *v = vi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    *p = *p + (neg_step * mi) / denom;
}

/* gradients of a large model: scales from 1e-6 to 10, zeros, and subnormal-sized values */
static float big_grad(int s, size_t i)
{
    if (i % 97 == 5) return 0.0f;
    if (i % 389 == 7) return (float)(1e-41 * ((i + (size_t)s) % 3));
    return (float)(sin(0.37 * (double)i + 1.1 * s) * pow(10.0, (double)((i + (size_t)s) % 8) - 6));
}

/* P not a multiple of the vector width and more than one parallel piece; every
 * variant (plain, L2 weight decay, decoupled) and both entry points, on 1 and 2
 * threads: bit for bit the scalar formulas, and within float rounding of double
 * precision; the zeroing entry point leaves the gradient zero, the other untouched. */
static void test_adam_vector_bits(void)
{
    enum { P = 70001, STEPS = 5 };
    const int T0 = omp_get_max_threads();
    const double wds[3] = {0.0, 0.05, 0.05};
    const int dec[3] = {0, 0, 1};
    float *p = malloc(P * sizeof *p), *g = malloc(P * sizeof *g), *sp = malloc(P * sizeof *sp);
    float *sm = calloc(P, sizeof *sm), *sv = calloc(P, sizeof *sv);
    double *rp = malloc(P * sizeof *rp), *rm = malloc(P * sizeof *rm), *rv = malloc(P * sizeof *rv);
    if (!CHECK(p && g && sp && sm && sv && rp && rm && rv, "allocation")) goto out;
    for (int var = 0; var < 3; var++)
        for (int zero = 0; zero < 2; zero++)
            for (int threads = 1; threads <= 2; threads++) {
                omp_set_num_threads(threads);
                npred_adam_params hp = npred_adam_default_params();
                hp.lr = 0.01;
                hp.weight_decay = wds[var];
                hp.decoupled = dec[var];
                npred_adam opt;
                if (!CHECK_OK(npred_adam_init(&opt, P, &hp))) goto out;
                for (size_t i = 0; i < P; i++) {
                    sp[i] = p[i] = (float)(0.3 * cos(0.11 * (double)i));
                    sm[i] = sv[i] = 0.0f;
                    rp[i] = p[i], rm[i] = rv[i] = 0.0;
                }
                size_t bad = 0, worst_i = 0, gbad = 0;
                double worst = 0;
                for (int s = 1; s <= STEPS; s++) {
                    double lr = s <= 2 ? 0.01 : 0.002;
                    if (s == 3) CHECK_OK(npred_adam_set_lr(&opt, lr));
                    for (size_t i = 0; i < P; i++) g[i] = big_grad(s, i);
                    for (size_t i = 0; i < P; i++) adam_scalar(sp + i, sm + i, sv + i, g[i], s, lr, wds[var], dec[var]);
                    for (size_t i = 0; i < P; i++) {
                        double gi = g[i] + (dec[var] ? 0.0 : wds[var] * rp[i]);
                        if (dec[var]) rp[i] *= 1.0 - lr * wds[var];
                        rm[i] = 0.9 * rm[i] + 0.1 * gi;
                        rv[i] = 0.999 * rv[i] + 0.001 * gi * gi;
                        rp[i] -= lr / (1 - pow(0.9, s)) * rm[i] / (sqrt(rv[i]) / sqrt(1 - pow(0.999, s)) + 1e-8);
                    }
                    if (zero) CHECK_OK(npred_adam_step_zero_grad(&opt, p, g));
                    else CHECK_OK(npred_adam_step(&opt, p, g));
                    for (size_t i = 0; i < P; i++) {
                        if (memcmp(p + i, sp + i, 4) || memcmp(opt.m + i, sm + i, 4) || memcmp(opt.v + i, sv + i, 4))
                            bad++;
                        if (zero ? g[i] != 0.0f || signbit(g[i]) : g[i] != big_grad(s, i)) gbad++;
                        double e = fabs(p[i] - rp[i]) / (2e-7 + 1e-6 * fabs(rp[i]));
                        if (!(e <= worst)) worst = e, worst_i = i;
                    }
                }
                CHECK(bad == 0, "variant %d zero %d threads %d: %zu values differ from the scalar float32 formulas",
                      var, zero, threads, bad);
                CHECK(gbad == 0, "variant %d zero %d: %zu gradient values %s", var, zero, gbad,
                      zero ? "not zeroed" : "modified");
                CHECK(worst <= 1.0, "variant %d: parameter %zu is %.9g, double precision %.9g (%.2f of the tolerance)",
                      var, worst_i, p[worst_i], rp[worst_i], worst);
                CHECK(opt.step == STEPS, "step counter %lld", (long long)opt.step);
                npred_adam_free(&opt);
            }
out:
    omp_set_num_threads(T0);
    free(p), free(g), free(sp), free(sm), free(sv), free(rp), free(rm), free(rv);
}

/* A masked step over a large buffer: frozen elements keep parameter and moments,
 * the others get the unmasked step's bits. */
static void test_adam_masked_large(void)
{
    enum { P = 40003 };
    float *p = malloc(P * sizeof *p), *q = malloc(P * sizeof *q), *g = malloc(P * sizeof *g);
    unsigned char *fr = malloc(P);
    npred_adam a, b;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    if (!CHECK(p && q && g && fr, "allocation") || !CHECK_OK(npred_adam_init(&a, P, NULL)) ||
        !CHECK_OK(npred_adam_init(&b, P, NULL)))
        goto out;
    for (size_t i = 0; i < P; i++) p[i] = q[i] = (float)(0.1 * sin((double)i)), fr[i] = i % 3 == 1;
    size_t bad = 0;
    for (int s = 1; s <= 3; s++) {
        for (size_t i = 0; i < P; i++) g[i] = big_grad(s, i);
        CHECK_OK(npred_adam_step_masked(&a, p, g, fr));
        CHECK_OK(npred_adam_step(&b, q, g));
        for (size_t i = 0; i < P; i++) {
            if (fr[i]) bad += p[i] != (float)(0.1 * sin((double)i)) || a.m[i] != 0.0f || a.v[i] != 0.0f;
            else bad += memcmp(p + i, q + i, 4) != 0 || memcmp(a.m + i, b.m + i, 4) != 0;
        }
    }
    CHECK(bad == 0, "%zu elements wrong in the masked step", bad);
out:
    npred_adam_free(&a), npred_adam_free(&b);
    free(p), free(q), free(g), free(fr);
}

static void test_adam_bad_input(void)
{
    npred_adam opt;
    npred_adam_params hp = npred_adam_default_params();
    hp.beta1 = 1.0;
    CHECK(npred_adam_init(&opt, 4, &hp) == NPRED_ERR_ARG, "beta1 = 1 is rejected");
    CHECK(strstr(npred_last_error(), "beta1") != NULL, "message names beta1: %s", npred_last_error());
    hp = npred_adam_default_params();
    hp.lr = -1;
    CHECK(npred_adam_init(&opt, 4, &hp) == NPRED_ERR_ARG, "negative lr");
    CHECK(npred_adam_init(&opt, 0, NULL) == NPRED_ERR_ARG, "no parameters");
    CHECK_OK(npred_adam_init(&opt, 4, NULL));
    CHECK(npred_adam_set_lr(&opt, NAN) == NPRED_ERR_ARG, "NaN lr");
    float p[4] = {0};
    CHECK(npred_adam_step(&opt, p, NULL) == NPRED_ERR_ARG, "NULL gradient");
    CHECK(npred_adam_step_zero_grad(&opt, p, NULL) == NPRED_ERR_ARG, "NULL gradient (zeroing step)");
    npred_adam_free(&opt);
    npred_adam_free(&opt); /* freeing twice is harmless */
}

/* ---- ReduceLROnPlateau ---- */

static npred_scheduler_params plateau_from_json(cJSON *a)
{
    npred_scheduler_params p = npred_scheduler_default_params();
    const char *mode = cJSON_GetStringValue(th_get(a, "mode", NULL));
    const char *tm = cJSON_GetStringValue(th_get(a, "threshold_mode", NULL));
    p.mode = (mode && !strcmp(mode, "max")) ? NPRED_SCHEDULER_MODE_MAX : NPRED_SCHEDULER_MODE_MIN;
    p.threshold_mode = (tm && !strcmp(tm, "abs")) ? NPRED_SCHEDULER_THRESHOLD_ABS : NPRED_SCHEDULER_THRESHOLD_REL;
    p.factor = th_num(a, p.factor, "factor", NULL);
    p.patience = (int)th_num(a, p.patience, "patience", NULL);
    p.threshold = th_num(a, p.threshold, "threshold", NULL);
    p.min_lr = th_num(a, p.min_lr, "min_lr", NULL);
    p.cooldown = (int)th_num(a, p.cooldown, "cooldown", NULL);
    p.eps = th_num(a, p.eps, "eps", NULL);
    return p;
}

static void test_plateau_fixture(void)
{
    th_case c;
    if (!th_case_open(&c, "reduce_lr_on_plateau")) return;
    cJSON *args = th_get(c.json, "args", NULL);
    npred_scheduler_params p = plateau_from_json(args);
    npred_scheduler s;
    CHECK_OK(npred_scheduler_init(&s, &p, th_num(args, NAN, "initial_lr", NULL)));
    cJSON *obj = th_get(c.json, "objectives", NULL), *lr = th_get(c.json, "lr_after_step", NULL),
          *bad = th_get(c.json, "num_bad_epochs_after_step", NULL), *best = th_get(c.json, "best_after_step", NULL);
    int n = cJSON_GetArraySize(obj);
    CHECK(n > 40 && n == cJSON_GetArraySize(lr), "%d objectives", n);
    for (int i = 0; i < n; i++) {
        npred_scheduler_step(&s, cJSON_GetArrayItem(obj, i)->valuedouble);
        CHECK(s.lr == cJSON_GetArrayItem(lr, i)->valuedouble, "step %d: lr %.17g, want %.17g", i, s.lr,
              cJSON_GetArrayItem(lr, i)->valuedouble);
        CHECK(s.num_bad_epochs == cJSON_GetArrayItem(bad, i)->valueint, "step %d: %d bad epochs, want %d", i,
              s.num_bad_epochs, cJSON_GetArrayItem(bad, i)->valueint);
        CHECK(s.best == cJSON_GetArrayItem(best, i)->valuedouble, "step %d: best %.17g", i, s.best);
    }
    th_case_close(&c);
}

/* min mode, relative threshold, cooldown (torch semantics worked by hand) */
static void test_plateau_min_rel_cooldown(void)
{
    npred_scheduler_params p = npred_scheduler_default_params(); /* min, rel 1e-4, factor 0.1 */
    p.patience = 1;
    p.cooldown = 2;
    p.min_lr = 0.015;
    npred_scheduler s;
    CHECK_OK(npred_scheduler_init(&s, &p, 1.0));
    /* 10 best; 9.9995 is not < 10*(1-1e-4) = 9.999: bad 1; 11: bad 2 > 1 -> lr 0.1, cooldown 2 */
    const double m[8] = {10, 9.9995, 11, 12, 13, 14, 15, 16};
    const double want[8] = {1, 1, 0.1, 0.1, 0.1, 0.1, 0.015, 0.015};
    for (int i = 0; i < 8; i++) {
        int red = npred_scheduler_step(&s, m[i]);
        CHECK(fabs(s.lr - want[i]) < 1e-15, "step %d: lr %g, want %g", i, s.lr, want[i]);
        CHECK(red == (i == 2 || i == 6), "step %d: reduced flag %d", i, red);
    }
    /* at min_lr a further reduction changes less than eps: not applied */
    for (int i = 0; i < 4; i++) CHECK(npred_scheduler_step(&s, 20) == 0, "no reduction below min_lr");
    CHECK(s.lr == 0.015, "lr stays at min_lr");
    /* NaN is never an improvement */
    npred_scheduler_init(&s, &p, 1.0);
    npred_scheduler_step(&s, 1.0);
    npred_scheduler_step(&s, NAN);
    CHECK(s.num_bad_epochs == 1 && s.best == 1.0, "NaN is a bad epoch");
    p.factor = 1.0;
    CHECK(npred_scheduler_init(&s, &p, 1.0) == NPRED_ERR_ARG, "factor 1 is rejected");
}

/* ---- early stopping ---- */

/* Run the machine against an objective returning values[call] that increments a model
 * counter (saved/restored with the state), as the upstream test does. */
static void es_fixture_run(cJSON *run, cJSON *vals, const npred_es_params *defaults)
{
    npred_es_params p = *defaults;
    p.patience = cJSON_GetObjectItem(run, "patience")->valueint;
    p.interval = cJSON_GetObjectItem(run, "interval")->valueint;
    p.maximize = cJSON_IsTrue(cJSON_GetObjectItem(run, "maximize"));
    npred_es es;
    if (!CHECK_OK(npred_es_begin(&es, &p))) return;
    int counter = 0, saved = -1, calls = 0, nyield = 0, ok = 1, nvals = cJSON_GetArraySize(vals);
    cJSON *yields = cJSON_GetObjectItem(run, "yields");
    char tag[64];
    snprintf(tag, sizeof tag, "patience %d interval %d maximize %d", (int)p.patience, (int)p.interval, p.maximize);
    for (int guard = 0; guard < 10000; guard++) {
        npred_es_action a;
        if (!CHECK_OK(npred_es_next(&es, &a))) return;
        if (a == NPRED_ES_DONE) break;
        switch (a) {
        case NPRED_ES_EVALUATE:
            if (!CHECK(calls < nvals, "%s: more objective calls than values", tag)) return;
            counter++;
            CHECK_OK(npred_es_set_objective(&es, cJSON_GetArrayItem(vals, calls++)->valuedouble));
            break;
        case NPRED_ES_SAVE_BEST: saved = counter; break;
        case NPRED_ES_RESTORE_BEST: counter = saved; break;
        case NPRED_ES_TRAIN_EPOCH: {
            cJSON *y = cJSON_GetArrayItem(yields, nyield++);
            ok &= CHECK(y && es.epoch == cJSON_GetArrayItem(y, 0)->valueint &&
                            es.current == cJSON_GetArrayItem(y, 1)->valuedouble,
                        "%s: yield %d is (%lld, %g)", tag, nyield - 1, (long long)es.epoch, es.current);
            break;
        }
        default: CHECK(0, "%s: unexpected action %s", tag, npred_es_action_str(a));
        }
    }
    CHECK(calls == cJSON_GetObjectItem(run, "objective_calls")->valueint, "%s: %d objective calls, want %d", tag,
          calls, cJSON_GetObjectItem(run, "objective_calls")->valueint);
    CHECK(counter == cJSON_GetObjectItem(run, "model_counter_final")->valueint, "%s: final counter %d", tag,
          counter);
    CHECK(es.epoch == cJSON_GetObjectItem(run, "last_epoch")->valueint, "%s: last epoch %lld", tag,
          (long long)es.epoch);
    CHECK(nyield == cJSON_GetObjectItem(run, "n_yields")->valueint, "%s: %d yields", tag, nyield);
    CHECK(es.n_evaluations == calls && es.stop == NPRED_ES_STOP_PATIENCE, "%s: bookkeeping", tag);
    (void)ok;
}

static void test_early_stopping_fixture(void)
{
    th_case c;
    if (!th_case_open(&c, "early_stopping")) return;
    cJSON *d = th_get(c.json, "args", "defaults", NULL);
    npred_es_params p = npred_es_default_params();
    p.start = (int64_t)th_num(d, 0, "start", NULL);
    p.max_iter = (int64_t)th_num(d, 1000, "max_iter", NULL);
    p.tolerance = th_num(d, 1e-5, "tolerance", NULL);
    p.switch_mode = cJSON_IsTrue(th_get(d, "switch_mode", NULL));
    p.restore_best = cJSON_IsTrue(th_get(d, "restore_best", NULL));
    p.lr_decay_steps = (int64_t)th_num(d, 1, "lr_decay_steps", NULL);
    CHECK(cJSON_IsNull(th_get(d, "scheduler", NULL)), "the fixture runs without a scheduler");
    cJSON *runs = th_get(c.json, "runs", NULL), *vals = th_get(c.json, "args", "objective_values", NULL);
    CHECK(cJSON_GetArraySize(runs) == 42, "42 settings, got %d", cJSON_GetArraySize(runs));
    cJSON *run;
    cJSON_ArrayForEach(run, runs) es_fixture_run(run, vals, &p);
    th_case_close(&c);
}

/* The full trace of early stopping + ReduceLROnPlateau + lr_decay_steps + restores:
 * the model is one parameter p counting trained epochs; the objective logs (p, value). */
static void test_early_stopping_scheduler_trace(void)
{
    th_case c;
    if (!th_case_open(&c, "early_stopping_scheduler_trace")) return;
    cJSON *a = th_get(c.json, "args", NULL);
    npred_es_params p = npred_es_default_params();
    p.interval = (int64_t)th_num(a, 0, "interval", NULL);
    p.patience = (int64_t)th_num(a, 0, "patience", NULL);
    p.start = (int64_t)th_num(a, 0, "start", NULL);
    p.max_iter = (int64_t)th_num(a, 0, "max_iter", NULL);
    p.maximize = cJSON_IsTrue(th_get(a, "maximize", NULL));
    p.tolerance = th_num(a, NAN, "tolerance", NULL);
    p.restore_best = cJSON_IsTrue(th_get(a, "restore_best", NULL));
    p.lr_decay_steps = (int64_t)th_num(a, 0, "lr_decay_steps", NULL);
    p.has_scheduler = 1;
    npred_scheduler_params sp = plateau_from_json(th_get(a, "scheduler", NULL));
    npred_scheduler sched;
    npred_es es;
    if (!CHECK_OK(npred_scheduler_init(&sched, &sp, th_num(a, NAN, "initial_lr", NULL))) ||
        !CHECK_OK(npred_es_begin(&es, &p)))
        goto out;
    cJSON *seq = th_get(c.json, "objective_sequence", NULL), *calls = th_get(c.json, "objective_calls", NULL),
          *yields = th_get(c.json, "yields", NULL);
    double model = 0, best_model = -1;
    int ncall = 0, nyield = 0;
    for (int guard = 0; guard < 10000; guard++) {
        npred_es_action act;
        if (!CHECK_OK(npred_es_next(&es, &act)) || act == NPRED_ES_DONE) break;
        switch (act) {
        case NPRED_ES_EVALUATE: {
            cJSON *want = cJSON_GetArrayItem(calls, ncall);
            double v = cJSON_GetArrayItem(seq, ncall)->valuedouble;
            if (CHECK(want != NULL, "objective call %d is not in the trace", ncall)) {
                CHECK(model == th_num(want, NAN, "p", NULL) && v == th_num(want, NAN, "value", NULL),
                      "call %d: p %g value %g, want p %g value %g", ncall, model, v, th_num(want, NAN, "p", NULL),
                      th_num(want, NAN, "value", NULL));
                CHECK(cJSON_IsFalse(th_get(want, "training", NULL)) && p.switch_mode, "eval mode inside the objective");
            }
            ncall++;
            CHECK_OK(npred_es_set_objective(&es, v));
            break;
        }
        case NPRED_ES_STEP_SCHEDULER:
            CHECK(!es.scheduler_warmup, "no warm-up configured");
            npred_scheduler_step(&sched, es.current);
            break;
        case NPRED_ES_SAVE_BEST: best_model = model; break;
        case NPRED_ES_RESTORE_BEST: model = best_model; break;
        case NPRED_ES_TRAIN_EPOCH: {
            cJSON *want = cJSON_GetArrayItem(yields, nyield);
            if (CHECK(want != NULL, "yield %d is not in the trace", nyield))
                CHECK(es.epoch == th_num(want, NAN, "epoch", NULL) && es.current == th_num(want, NAN, "value", NULL) &&
                          sched.lr == th_num(want, NAN, "lr", NULL) &&
                          model == th_num(want, NAN, "p_before_training", NULL),
                      "yield %d: epoch %lld value %g lr %.17g p %g", nyield, (long long)es.epoch, es.current,
                      sched.lr, model);
            nyield++;
            model += 1; /* one epoch of training */
            break;
        }
        default: break;
        }
    }
    CHECK(ncall == cJSON_GetArraySize(calls), "%d objective calls, trace has %d", ncall, cJSON_GetArraySize(calls));
    CHECK(nyield == cJSON_GetArraySize(yields), "%d yields, trace has %d", nyield, cJSON_GetArraySize(yields));
    CHECK(model == th_num(c.json, NAN, "final_p", NULL), "final p %g", model);
    CHECK(sched.lr == th_num(c.json, NAN, "final_lr", NULL), "final lr %.17g", sched.lr);
out:
    th_case_close(&c);
}

/* Action order for the reference's corner paths, written out by hand. */
static void es_trace(const npred_es_params *p, const double *vals, int nvals, const char *want)
{
    npred_es es;
    char got[512] = "";
    int k = 0;
    if (!CHECK_OK(npred_es_begin(&es, p))) return;
    for (int guard = 0; guard < 200; guard++) {
        npred_es_action a;
        if (!CHECK_OK(npred_es_next(&es, &a))) return;
        const char *s = a == NPRED_ES_EVALUATE ? "E" : a == NPRED_ES_TRAIN_EPOCH ? "T" : a == NPRED_ES_SAVE_BEST ? "S"
                      : a == NPRED_ES_RESTORE_BEST ? "R" : a == NPRED_ES_STEP_SCHEDULER ? (es.scheduler_warmup ? "w" : "s")
                      : "D";
        strncat(got, s, sizeof got - strlen(got) - 1);
        if (a == NPRED_ES_DONE) break;
        if (a == NPRED_ES_EVALUATE) CHECK_OK(npred_es_set_objective(&es, vals[k < nvals ? k++ : nvals - 1]));
    }
    CHECK(!strcmp(got, want), "actions %s, want %s", got, want);
}

static void test_early_stopping_paths(void)
{
    npred_es_params p = npred_es_default_params();
    p.interval = 1;
    p.patience = 1;
    const double flat[1] = {1.0};
    /* patience 1, never improving: E S | T E (bad) | finalize E R E */
    es_trace(&p, flat, 1, "EST" "E" "ERED");
    /* no restore: finalize still evaluates twice */
    p.restore_best = 0;
    es_trace(&p, flat, 1, "ESTE" "EED");
    /* lr_decay_steps 2, restore: decay_lr after each repeat (also the last), then finalize */
    p.restore_best = 1;
    p.lr_decay_steps = 2;
    es_trace(&p, flat, 1, "ESTE" "ERE" "TE" "ERE" "ERED");
    /* max_iter stops the loop and suppresses decay_lr */
    p.max_iter = 1;
    p.patience = 5;
    es_trace(&p, flat, 1, "ESTE" "ERED");
    /* a non-finite objective stops before the epoch is trained */
    p.max_iter = 100;
    const double bad[3] = {0.5, NAN, 0.1};
    es_trace(&p, bad, 3, "ESTE" "ERED");
    /* scheduler with warm-up: warm-up steps while epoch < 2 */
    p.has_scheduler = 1;
    p.number_warmup_epochs = 2;
    p.patience = 2;
    p.lr_decay_steps = 1;
    const double up[6] = {1, 2, 3, 3, 3, 3};
    es_trace(&p, up, 6, "ES" "TEwS" "TEsS" "TEs" "TEs" "ERED");
    /* max_iter with start: no epochs at all */
    p.start = 100;
    es_trace(&p, up, 6, "ES" "ERED");
}

static void test_early_stopping_bad_use(void)
{
    npred_es es;
    npred_es_params p = npred_es_default_params();
    npred_es_action a;
    p.interval = 0;
    CHECK(npred_es_begin(&es, &p) == NPRED_ERR_ARG, "interval 0");
    p = npred_es_default_params();
    CHECK_OK(npred_es_begin(&es, &p));
    CHECK(npred_es_set_objective(&es, 1.0) == NPRED_ERR_ARG, "objective before EVALUATE");
    CHECK_OK(npred_es_next(&es, &a));
    CHECK(a == NPRED_ES_EVALUATE && es.phase == NPRED_ES_PHASE_START, "starts with the initial objective");
    CHECK(npred_es_next(&es, &a) == NPRED_ERR_ARG, "next without the requested objective");
    CHECK(strstr(npred_last_error(), "npred_es_set_objective") != NULL, "message: %s", npred_last_error());
}

int main(void)
{
    RUN(test_adam_matches_reference);
    RUN(test_adam_weight_decay);
    RUN(test_adam_first_step);
    RUN(test_adam_vector_bits);
    RUN(test_adam_masked_large);
    RUN(test_adam_bad_input);
    RUN(test_plateau_fixture);
    RUN(test_plateau_min_rel_cooldown);
    RUN(test_early_stopping_fixture);
    RUN(test_early_stopping_scheduler_trace);
    RUN(test_early_stopping_paths);
    RUN(test_early_stopping_bad_use);
    return th_summary();
}
