/* The kit's video training loop (src/train/video_trainer.c) on tests/fixtures/mini_movie_tree
 * (two sessions: the scan and a renamed copy) with a small factorised 3D model:
 *   - one batch's loss terms against a double-precision recomputation, and one optimizer
 *     step against an independent double-precision AdamW step (torch 1.13 semantics);
 *   - the training loss decreases; the same seed gives identical bits, another seed not;
 *   - an interrupted run resumed from its state gives the uninterrupted run's bits;
 *   - early stopping stops (patience, max_iter); checkpoints; configuration errors.
 * The loss terms against the fixtures are checked in test_video_encoder.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>

#include "harness.h"
#include "model/video_encoder.h"
#include "npred/video_model.h"
#include "train/video_trainer.h"
#include "video_setup.h"

static char g_dir[512], g_copy[600], g_self[1024];

static const char *LOADER = "{\"batch_size\": 2, \"frames\": 51}";

static int make_setup(setup *S, const char *loader_json, int two, uint64_t seed)
{
    const char *paths[2] = {SCAN, g_copy};
    return make_setup_paths(S, loader_json, paths, two, seed);
}

static int make_trainer(npred_video_trainer **t, setup *S, const char *json)
{
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    if (!CHECK_OK(npred_video_trainer_config_parse(&c, json, "trainer.json"))) return 0;
    return CHECK_OK(npred_video_trainer_create_encoder(t, &S->e, S->L, &c, 5));
}

/* ---------------------------------------------------------------- one step */
static void test_one_step(void)
{
    setup S;
    npred_video_trainer *t = NULL;
    if (!make_setup(&S, LOADER, 0, 11) || !make_trainer(&t, &S, "{\"lr_init\": 0.01}")) goto out;
    npred_video_batch b;
    if (!CHECK_OK(npred_video_batch_init(&b, S.L, 0))) goto out;
    static const int64_t trials[2] = {0, 2}, offs[2] = {1, 3};
    npred_video_session_info si;
    npred_video_loaders_session(S.L, 0, &si);
    int tr = npred_video_loaders_tier(S.L, 0, "train");
    int64_t tri[2] = {si.tier_idx[tr][trials[0]], si.tier_idx[tr][trials[1]]};
    if (!CHECK_OK(npred_video_loaders_get(S.L, 0, tri, offs, 2, NULL, &b))) goto outb;
    npred_video_encoder *e = &S.e;
    int T1 = e->out_t, n = e->s[0].n, F = b.resp_f;
    size_t P = e->t.n_params, nz = (size_t)2 * T1 * n * 2;
    float *noise = malloc(nz * sizeof *noise), *p0 = malloc(P * sizeof *p0), *g = malloc(P * sizeof *g);
    if (!noise || !p0 || !g) goto outm;
    uint64_t rs = 3;
    for (size_t i = 0; i < nz; i++) noise[i] = (float)(2 * th_rand(&rs) - 1);
    memcpy(p0, e->t.data, P * sizeof *p0);
    npred_ptable_zero_grad(&e->t);
    npred_video_loss_terms lt;
    if (!CHECK_OK(npred_video_trainer_batch(t, &b, noise, &lt))) goto outm;
    /* the terms, recomputed in double from the model's output and the responses */
    double pois = 0;
    for (int bb = 0; bb < 2; bb++)
        for (int tt = 0; tt < T1; tt++)
            for (int j = 0; j < n; j++) {
                double o = e->out[((size_t)bb * T1 + tt) * n + j], y = b.responses[((size_t)bb * n + j) * F + F - T1 + tt];
                pois += o - y * log(o + 1e-8);
            }
    npred_video_dataset_info di;
    npred_video_dataset_get_info(si.dataset, &di);
    double k = sqrt((double)di.n_trials / 2.0);
    CHECK(fabs(lt.scale - k) < 1e-15 && di.n_trials == 11, "loss scale %g (11 trials, batch 2)", lt.scale);
    CHECK(fabs(lt.poisson - pois) <= 1e-9 * fabs(pois), "poisson %.12g vs %.12g", lt.poisson, pois);
    double cs, ct, cr;
    CHECK_OK(npred_video_encoder_regularizer(e, 0, 0.0, &cs, &ct, &cr));
    double tot = k * pois + cs + ct + cr;
    CHECK(cs > 0 && ct > 0 && cr > 0 && fabs(lt.total - tot) <= 1e-9 * fabs(tot), "total %.12g vs %.12g", lt.total, tot);
    /* one AdamW step (lr 0.01, betas 0.9/0.999, eps 1e-8, weight decay 0.01), in double */
    memcpy(g, e->t.grad, P * sizeof *g);
    int nonzero = 0;
    for (size_t i = 0; i < P; i++) nonzero += g[i] != 0;
    CHECK(nonzero > (int)P / 2, "%d of %zu gradients non-zero", nonzero, P);
    if (!CHECK_OK(npred_video_trainer_step(t))) goto outm;
    double worst = 0;
    for (size_t i = 0; i < P; i++) {
        double p = (double)p0[i] * (1 - 0.01 * 0.01), gg = g[i];
        double m = 0.1 * gg, v = 0.001 * gg * gg;
        double mh = m / (1 - 0.9), vh = v / (1 - 0.999);
        p -= 0.01 * mh / (sqrt(vh) + 1e-8);
        double err = fabs(e->t.data[i] - p) / (fabs(p) + 1e-3);
        worst = th_worst(worst, err);
    }
    CHECK(worst <= 2e-6, "AdamW step: worst relative error %g", worst);
    int zero = 1;
    for (size_t i = 0; i < P; i++) zero &= e->t.grad[i] == 0;
    CHECK(zero && npred_video_trainer_adam_steps(t) == 1, "gradient zeroed after the step");
outm:
    free(noise), free(p0), free(g);
outb:
    npred_video_batch_free(&b);
out:
    npred_video_trainer_free(t);
    free_setup(&S);
}

/* ---------------------------------------------------------------- detach_core */
/* The kit's detach_core (sensorium_2023 49547d9 on 43faede): the model detaches the
 * core's output and the loss adds int(not detach_core) * core.regularizer(), so the
 * core's layer-0 kernels (what a factorised core's regularizer reads) get a zero
 * gradient, which AdamW still decays, and the rest of the core no gradient at all
 * (AdamW skips it). Two trainers on identically initialised models, with and without
 * detach_core, on the same batch and readout draws. */
static int is_core_reg(const char *name)
{
    return !strcmp(name, "core.features.layer0.conv_spatial.weight") ||
           !strcmp(name, "core.features.layer0.conv_temporal.weight");
}

static void test_detach_core(void)
{
    setup A, D;
    memset(&A, 0, sizeof A), memset(&D, 0, sizeof D);
    npred_video_trainer *ta = NULL, *td = NULL;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    float *noise = NULL, *p0 = NULL, *b0 = NULL;
    const char *keep = "\"lr_init\": 0.01, \"max_iter\": 2, \"patience\": 10, \"restore_best\": false, "
                       "\"save_checkpoints\": false, \"seed\": 4";
    char ja[512], jd[512];
    snprintf(ja, sizeof ja, "{%s}", keep);
    snprintf(jd, sizeof jd, "{%s, \"detach_core\": true}", keep);
    if (!make_setup(&A, LOADER, 0, 11) || !make_setup(&D, LOADER, 0, 11) || !make_trainer(&ta, &A, ja) ||
        !make_trainer(&td, &D, jd) || !CHECK_OK(npred_video_batch_init(&b, A.L, 0)))
        goto out;
    static const int64_t offs[2] = {1, 3};
    npred_video_session_info si;
    npred_video_loaders_session(A.L, 0, &si);
    int tr = npred_video_loaders_tier(A.L, 0, "train");
    int64_t tri[2] = {si.tier_idx[tr][0], si.tier_idx[tr][2]};
    if (!CHECK_OK(npred_video_loaders_get(A.L, 0, tri, offs, 2, NULL, &b))) goto out;
    npred_ptable *Ta = &A.e.t, *Td = &D.e.t;
    size_t P = Td->n_params, nz = (size_t)2 * D.e.out_t * D.e.s[0].n * 2;
    noise = malloc(nz * sizeof *noise), p0 = malloc(P * sizeof *p0), b0 = malloc((Td->n_buffers + 1) * sizeof *b0);
    if (!CHECK(noise && p0 && b0, "out of memory")) goto out;
    uint64_t rs = 5;
    for (size_t i = 0; i < nz; i++) noise[i] = (float)(2 * th_rand(&rs) - 1);
    CHECK(P == Ta->n_params && !memcmp(Ta->data, Td->data, P * sizeof(float)), "identical initial parameters");
    memcpy(p0, Td->data, P * sizeof *p0);
    memcpy(b0, Td->bufdata, Td->n_buffers * sizeof *b0);
    npred_ptable_zero_grad(Ta), npred_ptable_zero_grad(Td);
    npred_video_loss_terms la, ld;
    if (!CHECK_OK(npred_video_trainer_batch(ta, &b, noise, &la)) || !CHECK_OK(npred_video_trainer_batch(td, &b, noise, &ld)))
        goto out;
    /* the loss: the same criterion and readout term, no core term */
    CHECK(la.poisson == ld.poisson && la.scale == ld.scale && la.readout == ld.readout && la.readout > 0,
          "criterion %.17g / %.17g, readout regularizer %.17g / %.17g", la.poisson, ld.poisson, la.readout, ld.readout);
    CHECK(la.core_spatial > 0 && la.core_temporal > 0 && ld.core_spatial == 0 && ld.core_temporal == 0 &&
              ld.total == ld.scale * ld.poisson + ld.readout,
          "core terms %g %g without, %g %g with detach_core", la.core_spatial, la.core_temporal, ld.core_spatial,
          ld.core_temporal);
    /* gradients: the readout's and the shifter's bit for bit as without detach_core, the core's zero;
       the forward (train mode) updates the running statistics alike */
    int n_other = 0, n_core = 0;
    for (int i = 0; i < Td->n; i++) {
        const npred_param *p = &Td->items[i];
        if (p->is_buffer) continue;
        const float *ga = Ta->grad + p->offset, *gd = Td->grad + p->offset;
        if (!strncmp(p->name, "core.", 5)) {
            int zero = 1, any_a = 0;
            for (size_t k = 0; k < p->count; k++) zero &= gd[k] == 0, any_a |= ga[k] != 0;
            CHECK(zero, "%s: gradient with detach_core is not zero", p->name);
            if (strstr(p->name, "weight") && !strstr(p->name, ".norm."))
                CHECK(any_a, "%s: no gradient without detach_core (the comparison would be empty)", p->name);
            n_core++;
        } else {
            int any = 0;
            for (size_t k = 0; k < p->count; k++) any |= ga[k] != 0;
            CHECK(!memcmp(ga, gd, p->count * sizeof(float)) && (any || strstr(p->name, "source_grid")),
                  "%s: gradient differs from the one without detach_core (or is all zero)", p->name);
            n_other++;
        }
    }
    CHECK(n_core >= 6 && n_other >= 8, "%d core and %d other tensors compared", n_core, n_other);
    CHECK(!memcmp(Ta->bufdata, Td->bufdata, Td->n_buffers * sizeof(float)) &&
              memcmp(b0, Td->bufdata, Td->n_buffers * sizeof(float)),
          "running statistics updated by the train-mode forward, as without detach_core");
    /* one step, then two epochs: the core stays bit-identical but for AdamW's decay of
       the regularised kernels; the readout and shifter move */
    npred_ptable_zero_grad(Ta);
    if (!CHECK_OK(npred_video_trainer_step(td))) goto out;
    npred_trainer_result res;
    if (!CHECK_OK(npred_video_trainer_run(td, &res))) goto out;
    int64_t steps = npred_video_trainer_adam_steps(td);
    const float shrink = (float)(1.0 - 0.01 * 0.01);
    CHECK(steps >= 3 && npred_video_trainer_lr(td) == 0.01, "%lld steps at lr %g", (long long)steps,
          npred_video_trainer_lr(td));
    for (int i = 0; i < Td->n; i++) {
        const npred_param *p = &Td->items[i];
        if (p->is_buffer) continue;
        const float *x = Td->data + p->offset, *x0 = p0 + p->offset;
        if (is_core_reg(p->name)) {
            int same = 1;
            for (size_t k = 0; k < p->count; k++) {
                float want = x0[k];
                for (int64_t q = 0; q < steps; q++) want = want * shrink;
                same &= x[k] == want;
            }
            CHECK(same, "%s: not the initial values decayed %lld times by (1 - lr * 0.01)", p->name, (long long)steps);
        } else if (!strncmp(p->name, "core.", 5)) {
            CHECK(!memcmp(x, x0, p->count * sizeof(float)), "%s changed with detach_core", p->name);
        } else if (!strstr(p->name, "source_grid")) {
            CHECK(memcmp(x, x0, p->count * sizeof(float)), "%s did not change", p->name);
        }
    }
    int regs = 0;
    for (int i = 0; i < Td->n; i++) regs += !Td->items[i].is_buffer && is_core_reg(Td->items[i].name);
    CHECK(regs == 2, "the factorised core's two regularised kernels found (%d)", regs);
out:
    free(noise), free(p0), free(b0);
    npred_video_batch_free(&b);
    npred_video_trainer_free(ta);
    npred_video_trainer_free(td);
    free_setup(&A);
    free_setup(&D);
}

/* ---------------------------------------------------------------- runs */
typedef struct {
    double first, last;
    int epochs;
    int64_t batches;
    volatile sig_atomic_t *stop;
    int64_t stop_at;           /* set stop after this many batches (0: never) */
    int64_t kill_at;           /* SIGKILL this process after this many batches (0: never) */
} run_log;

static void on_epoch(void *user, const npred_trainer_epoch_info *ei)
{
    run_log *r = user;
    if (ei->epoch < 1) return;
    if (!r->epochs) r->first = ei->train_loss;
    r->last = ei->train_loss;
    r->epochs++;
}

static void on_batch(void *user, const npred_trainer_batch_info *bi)
{
    run_log *r = user;
    (void)bi;
    if (++r->batches == r->stop_at && r->stop) *r->stop = 1;
    if (r->batches == r->kill_at) raise(SIGKILL);
}

/* train from a fresh model; params (n_params floats) receive the final parameters */
static npred_status train_run(const char *json, uint64_t seed, const char *dir, int resume, run_log *rl,
                              float **params, size_t *np, npred_trainer_result *res)
{
    setup S;
    npred_video_trainer *t = NULL;
    npred_status st = NPRED_ERR_ARG;
    if (!make_setup(&S, LOADER, 1, seed) || !make_trainer(&t, &S, json)) goto out;
    npred_trainer_callbacks cb = {on_batch, on_epoch, NULL, rl, rl->stop};
    npred_video_trainer_set_callbacks(t, &cb);
    if (dir && (st = npred_video_trainer_set_run_dir(t, dir, "{}"))) goto out;
    char p[700];
    snprintf(p, sizeof p, "%s/state.safetensors", dir ? dir : "");
    if (resume && (st = npred_video_trainer_resume(t, p))) goto out;
    st = npred_video_trainer_run(t, res);
    *np = S.e.t.n_params;
    *params = malloc(*np * sizeof(float));
    if (*params) memcpy(*params, S.e.t.data, *np * sizeof(float));
out:
    npred_video_trainer_free(t);
    free_setup(&S);
    return st;
}

static const char *TRAIN = "{\"max_iter\": 6, \"lr_init\": 0.05, \"patience\": 10, \"seed\": 3, \"save_checkpoints\": false}";

static void test_loss_decreases_and_bits(void)
{
    run_log a = {0}, b = {0}, c = {0};
    float *pa = NULL, *pb = NULL, *pc = NULL;
    size_t na = 0, nb = 0, nc = 0;
    npred_trainer_result ra, rb, rc;
    CHECK_OK(train_run(TRAIN, 1, NULL, 0, &a, &pa, &na, &ra));
    CHECK(a.epochs == 6 && ra.stop == NPRED_ES_STOP_MAX_ITER && ra.epochs == 6, "6 epochs (%d), stop %d", a.epochs,
          ra.stop);
    CHECK(a.last < 0.95 * a.first, "training loss %g -> %g decreases", a.first, a.last);
    CHECK(isfinite(ra.score) && ra.score > -1 && ra.score <= 1, "validation correlation %g", ra.score);
    CHECK_OK(train_run(TRAIN, 1, NULL, 0, &b, &pb, &nb, &rb));
    CHECK(pa && pb && na == nb && !memcmp(pa, pb, na * sizeof *pa) && a.last == b.last && ra.score == rb.score,
          "the same seed gives the same bits");
    CHECK_OK(train_run("{\"max_iter\": 6, \"lr_init\": 0.01, \"patience\": 10, \"seed\": 4, \"save_checkpoints\": false}",
                       1, NULL, 0, &c, &pc, &nc, &rc));
    CHECK(pc && na == nc && memcmp(pa, pc, na * sizeof *pa), "another seed gives other parameters");
    free(pa), free(pb), free(pc);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = th_read_stream(f);
    fclose(f);
    return s;
}

/* log.csv without its seconds column */
static void strip_seconds(char *s)
{
    char *w = s;
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n'), *end = nl ? nl : line + strlen(line);
        char *comma = end;
        while (comma > line && *comma != ',') comma--;
        size_t keep = (size_t)(comma > line ? comma - line : end - line);
        memmove(w, line, keep);
        w += keep;
        *w++ = '\n';
        if (!nl) break;
        line = nl + 1;
    }
    *w = 0;
}

static const char *RESUME_JSON;

static void test_resume(void)
{
    char d1[700], d2[700], p[800];
    snprintf(d1, sizeof d1, "%s/full", g_dir);
    snprintf(d2, sizeof d2, "%s/cut", g_dir);
    const char *json = RESUME_JSON;
    run_log a = {0};
    float *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    npred_trainer_result ra, rb;
    CHECK_OK(train_run(json, 1, d1, 0, &a, &pa, &na, &ra));
    /* stopped after 7 batches (in epoch 3: 3 batches per session and epoch, 2 sessions), then resumed twice
     * (the second resume starts from the finished state and changes nothing) */
    volatile sig_atomic_t stop = 0;
    run_log b = {0};
    b.stop = &stop;
    b.stop_at = 7;
    npred_status st = train_run(json, 1, d2, 0, &b, &pb, &nb, &rb);
    CHECK(st == NPRED_ERR_INTERRUPTED, "interrupted (%d: %s)", st, npred_last_error());
    free(pb);
    pb = NULL;
    run_log c = {0};
    /* a different initialisation: the resume must replace every parameter */
    CHECK_OK(train_run(json, 99, d2, 1, &c, &pb, &nb, &rb));
    CHECK(pa && pb && na == nb && !memcmp(pa, pb, na * sizeof *pa) && ra.score == rb.score && ra.epochs == rb.epochs,
          "resumed run = uninterrupted run, bit for bit");
    snprintf(p, sizeof p, "%s/log.csv", d1);
    char *la = slurp(p);
    snprintf(p, sizeof p, "%s/log.csv", d2);
    char *lb = slurp(p);
    if (CHECK(la && lb, "log.csv written")) {
        strip_seconds(la), strip_seconds(lb);
        CHECK(!strcmp(la, lb), "log.csv equal but for the seconds:\n%s---\n%s", la, lb);
        CHECK(!strncmp(la, "epoch,lr,train_loss,validation_correlation\n0,", 45), "log header: %.60s", la);
    }
    free(la), free(lb);
    struct stat sb;
    snprintf(p, sizeof p, "%s/model.safetensors", d1);
    CHECK(stat(p, &sb) == 0 && sb.st_size > 1000, "model.safetensors");
    snprintf(p, sizeof p, "%s/ckpt/final.safetensors", d1);
    CHECK(stat(p, &sb) == 0, "final checkpoint");
    snprintf(p, sizeof p, "%s/ckpt/epoch_2.safetensors", d1);
    CHECK(stat(p, &sb) != 0, "epoch checkpoints removed at the end (as the kit)");
    /* killed (SIGKILL: no clean-up) in epoch 2, resumed and killed again in epoch 5, resumed to the end */
    char d3[700];
    snprintf(d3, sizeof d3, "%s/killed", g_dir);
    static const int64_t kills[2] = {9, 23};
    for (int k = 0; k < 2; k++) {
        /* a fresh process of this program (NPRED_TEST_VTRAIN_KILL: see main) */
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "NPRED_TEST_VTRAIN_KILL=%lld NPRED_TEST_VTRAIN_DIR='%s' NPRED_TEST_VTRAIN_RESUME=%d "
                 "NPRED_TEST_VTRAIN_COPY='%s' '%s' > /dev/null 2>&1", (long long)kills[k], d3, k > 0, g_copy, g_self);
        int ws = system(cmd);
        CHECK(WIFSIGNALED(ws) || (WIFEXITED(ws) && WEXITSTATUS(ws) == 128 + SIGKILL),
              "the training process was killed (status %d)", ws);
    }
    run_log kr = {0};
    float *pk = NULL;
    size_t nk = 0;
    npred_trainer_result rk;
    CHECK_OK(train_run(json, 5, d3, 1, &kr, &pk, &nk, &rk));
    CHECK(pa && pk && na == nk && !memcmp(pa, pk, na * sizeof *pa) && ra.score == rk.score,
          "killed twice and resumed = uninterrupted run, bit for bit");
    free(pk);
    /* the state of another data set is refused */
    setup S;
    npred_video_trainer *t = NULL;
    if (make_setup(&S, LOADER, 0, 1) && make_trainer(&t, &S, json)) {
        snprintf(p, sizeof p, "%s/state.safetensors", d1);
        st = npred_video_trainer_resume(t, p);
        CHECK(st == NPRED_ERR_FORMAT, "resume on other data refused (%d: %s)", st, npred_last_error());
    }
    npred_video_trainer_free(t);
    free_setup(&S);
    free(pa), free(pb);
}

static void test_early_stopping(void)
{
    /* a tolerance no change can beat: patience 2, two lr-decay rounds -> 4 epochs */
    run_log a = {0};
    float *pa = NULL;
    size_t na = 0;
    npred_trainer_result r;
    CHECK_OK(train_run("{\"max_iter\": 50, \"patience\": 2, \"lr_decay_steps\": 2, \"tolerance\": 10,"
                       " \"save_checkpoints\": false}", 1, NULL, 0, &a, &pa, &na, &r));
    CHECK(r.stop == NPRED_ES_STOP_PATIENCE && r.epochs == 4 && a.epochs == 4, "stopped by patience after %lld epochs "
          "(stop %d)", (long long)r.epochs, r.stop);
    free(pa);
    pa = NULL;
    CHECK_OK(train_run("{\"max_iter\": 2, \"save_checkpoints\": false}", 1, NULL, 0, &a, &pa, &na, &r));
    CHECK(r.stop == NPRED_ES_STOP_MAX_ITER && r.epochs == 2, "stopped by max_iter (%lld)", (long long)r.epochs);
    free(pa);
}

/* npred train on a movie scan: the run folder; killed (SIGKILL) at the end of epoch 2 and
 * --resume'd, the same model.safetensors byte for byte as the uninterrupted run; the
 * trained model loads and predicts through the public API */
static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

static int npred_cmd(const char *env, const char *args, const char *log)
{
    const char *bin = getenv("NPRED_BIN") ? getenv("NPRED_BIN") : "./build/npred";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s OMP_NUM_THREADS=1 %s train %s > %s/%s 2>&1", env, bin, args, g_dir, log);
    int ws = system(cmd);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

static void test_cli(void)
{
    char mp[700], tp[700], lp[700], args[4096], p[800];
    snprintf(mp, sizeof mp, "%s/model.json", g_dir);
    snprintf(tp, sizeof tp, "%s/trainer.json", g_dir);
    snprintf(lp, sizeof lp, "%s/loader.json", g_dir);
    if (!CHECK(write_file(mp, MODEL_JSON) && write_file(lp, LOADER) &&
                   write_file(tp, "{\"max_iter\": 4, \"lr_init\": 0.01, \"use_wandb\": false, \"chpt_save_step\": 2}"),
               "config files"))
        return;
    const char *runs[2] = {"cli_a", "cli_b"};
    for (int r = 0; r < 2; r++) {
        snprintf(args, sizeof args, "--data %s %s --model %s --trainer %s --dataset %s --out %s/%s", SCAN, g_copy, mp, tp,
                 lp, g_dir, runs[r]);
        int rc = npred_cmd(r ? "NPRED_TEST_KILL_RANK=0:2" : "", args, r ? "cli_b.log" : "cli_a.log");
        CHECK(r ? rc == 128 + SIGKILL || rc == 137 : rc == 0, "npred train %s: rc %d (see %s/%s.log)", runs[r], rc, g_dir,
              runs[r]);
    }
    snprintf(args, sizeof args, "--out %s/cli_b --resume", g_dir);
    int rc = npred_cmd("", args, "cli_b2.log");
    CHECK(rc == 0, "npred train --resume: rc %d (see %s/cli_b2.log)", rc, g_dir);
    char *ma, *mb;
    snprintf(p, sizeof p, "%s/cli_a/model.safetensors", g_dir);
    ma = slurp(p);
    snprintf(p, sizeof p, "%s/cli_b/model.safetensors", g_dir);
    mb = slurp(p);
    size_t la = 0, lb = 0;
    struct stat sa, sb2;
    snprintf(p, sizeof p, "%s/cli_a/model.safetensors", g_dir);
    if (!stat(p, &sa)) la = (size_t)sa.st_size;
    snprintf(p, sizeof p, "%s/cli_b/model.safetensors", g_dir);
    if (!stat(p, &sb2)) lb = (size_t)sb2.st_size;
    CHECK(ma && mb && la > 1000 && la == lb && !memcmp(ma, mb, la),
          "killed at epoch 2 and resumed: model.safetensors equals the uninterrupted run's (%zu, %zu bytes)", la, lb);
    free(ma), free(mb);
    snprintf(p, sizeof p, "%s/cli_a/local/final.safetensors", g_dir);
    CHECK(stat(p, &sa) == 0, "the kit's final checkpoint");
    /* the model predicts through the public API */
    snprintf(p, sizeof p, "%s/cli_a", g_dir);
    npred_video_model *m = NULL;
    if (CHECK_OK(npred_video_model_load(&m, p, 1))) {
        int T = 10, T1 = npred_video_model_output_frames(m, T), n = npred_video_model_session_neurons(m, 0);
        float *v = calloc((size_t)3 * T * 12 * 16, sizeof *v), *pc = calloc((size_t)2 * T, sizeof *pc),
              *out = malloc((size_t)T1 * n * sizeof *out);
        int ok = v && pc && out && T1 == 6 && n == 10 &&
                 CHECK_OK(npred_video_model_predict(m, npred_video_model_session_key(m, 0), v, 1, 3, T, 12, 16, pc, out));
        for (int i = 0; ok && i < T1 * n; i++) ok &= out[i] > 0 && isfinite(out[i]);
        CHECK(ok, "positive finite rates from the trained model (T' %d, n %d)", T1, n);
        free(v), free(pc), free(out);
    }
    npred_video_model_free(m);
    /* a static option on movie scans is an error */
    snprintf(args, sizeof args, "--data %s --model %s --trainer %s --dataset %s --out %s/cli_c --init-core %s/cli_a", SCAN,
             mp, tp, lp, g_dir, g_dir);
    CHECK(npred_cmd("", args, "cli_c.log") == 2, "--init-core on movie scans is a usage error");
}

static void expect_error(const char *json, const char *needle)
{
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    npred_status st = npred_video_trainer_config_parse(&c, json, "trainer.json");
    CHECK(st == NPRED_ERR_CONFIG && strstr(npred_last_error(), needle), "%s: want an error naming '%s', got %d '%s'",
          json, needle, st, npred_last_error());
}

static void test_config(void)
{
    npred_video_trainer_config c;
    npred_video_trainer_config_init(&c);
    /* the benchmark notebook's trainer_config (dataloaders aside) */
    CHECK_OK(npred_video_trainer_config_parse(&c, "{\"seed\": 111, \"use_wandb\": false, \"verbose\": true,"
                                              " \"lr_decay_steps\": 4, \"lr_init\": 0.005, \"device\": \"cuda\","
                                              " \"detach_core\": false, \"deeplake_ds\": false,"
                                              " \"checkpoint_save_path\": \"benchmarks/\"}", "trainer.json"));
    CHECK(c.base.seed_set && c.base.seed == 111 && c.base.lr_decay_steps == 4 && !strcmp(c.checkpoint_save_path, "benchmarks/") &&
          c.chpt_save_step == 15 && c.save_checkpoints && c.weight_decay == 0.01, "benchmark config read");
    char *js = npred_video_trainer_config_json(&c);
    npred_video_trainer_config d;
    npred_video_trainer_config_init(&d);
    CHECK(js && !npred_video_trainer_config_parse(&d, js, "resolved") && !memcmp(&c, &d, sizeof c),
          "the resolved config reads back to the same settings");
    free(js);
    expect_error("{\"lr_inti\": 0.1}", "lr_inti");
    expect_error("{\"use_wandb\": true}", "use_wandb");
    CHECK_OK(npred_video_trainer_config_parse(&c, "{\"detach_core\": true}", "trainer.json"));
    CHECK(c.base.detach_core, "detach_core true is read");
    expect_error("{\"loss_function\": \"ExponentialLoss\"}", "loss_function");
    expect_error("{\"stop_function\": \"get_poisson_loss\"}", "stop_function");
    expect_error("{\"checkpoint_save_path\": \"../x\"}", "checkpoint_save_path");
    expect_error("{\"lr_decay_factor\": 1.5}", "lr_decay_factor");
    expect_error("{\"max_iter\": \"ten\"}", "max_iter");
    /* whole trials (to_cut false) cannot be trained on */
    setup S;
    npred_video_trainer *t = NULL;
    if (make_setup(&S, LOADER, 0, 1)) {
        npred_video_loaders *L2 = NULL;
        npred_video_loader_config lc;
        npred_video_loader_config_init(&lc);
        const char *path = SCAN;
        if (CHECK_OK(npred_video_loader_config_parse(&lc, "{\"batch_size\": 1, \"frames\": 51, \"to_cut\": false}",
                                                     NULL, NULL)) &&
            CHECK_OK(npred_video_loaders_open(&L2, &path, 1, &lc))) {
            npred_video_trainer_config_init(&c);
            npred_status st = npred_video_trainer_create_encoder(&t, &S.e, L2, &c, 1);
            CHECK(st == NPRED_ERR_ARG && strstr(npred_last_error(), "to_cut"), "whole trials refused: %s",
                  npred_last_error());
        }
        npred_video_loader_config_free(&lc);
        npred_video_loaders_free(L2);
    }
    npred_video_trainer_free(t);
    free_setup(&S);
}

static const char *RESUME_JSON = "{\"max_iter\": 5, \"lr_init\": 0.01, \"patience\": 10, \"seed\": 9, "
                                  "\"chpt_save_step\": 2, \"checkpoint_save_path\": \"ckpt/\"}";

/* NPRED_TEST_VTRAIN_KILL=N: train in NPRED_TEST_VTRAIN_DIR (resuming with _RESUME=1) and
 * SIGKILL this process after N batches */
static int kill_role(const char *n)
{
    const char *dir = getenv("NPRED_TEST_VTRAIN_DIR"), *res = getenv("NPRED_TEST_VTRAIN_RESUME"),
               *copy = getenv("NPRED_TEST_VTRAIN_COPY");
    if (!dir || !copy) return 2;
    snprintf(g_copy, sizeof g_copy, "%s", copy);
    run_log kl = {0};
    kl.kill_at = atoll(n);
    float *pk = NULL;
    size_t nk = 0;
    npred_trainer_result rk;
    train_run(RESUME_JSON, 1, dir, res && *res == '1', &kl, &pk, &nk, &rk);
    free(pk);
    return 3; /* not reached: killed */
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *kill_n = getenv("NPRED_TEST_VTRAIN_KILL");
    if (kill_n) return kill_role(kill_n);
    if (!realpath(argv[0], g_self)) snprintf(g_self, sizeof g_self, "%s", argv[0]);
    snprintf(g_dir, sizeof g_dir, "%s/npred_vtrain_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot make a temporary folder\n");
        return 1;
    }
    /* a second session: the scan copied under another name */
    snprintf(g_copy, sizeof g_copy, "%s/dynamic00001-2-2-Video-copy", g_dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", SCAN, g_copy);
    int cp_ok = system(cmd) == 0;
    RUN(test_config);
    RUN(test_one_step);
    RUN(test_detach_core);
    if (CHECK(cp_ok, "copying the scan")) {
        RUN(test_loss_decreases_and_bits);
        RUN(test_resume);
        RUN(test_early_stopping);
        RUN(test_cli);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return th_summary();
}
