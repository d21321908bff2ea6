/* The npred binary run as a user runs it: the argument rules shared by every
 * command, and the model commands (import, info, predict, eval), run as a
 * user runs them, checked against the library in-process; bad inputs give a
 * non-zero exit and a message naming the problem, never a crash.
 * The binary is $NPRED_BIN, else ./build/npred (tests run from the project root). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "model/model.h"
#include "npred/data.h"
#include "npred/model.h"
#include "npred/npy.h"
#include "npred/eval.h"
#include "npred/metrics.h"
#include "npred/version.h"

#define MINI_ZIP "tests/fixtures/mini_tree/static00000-1-1-GrayImageNet-test.zip"
#define CKPT_DIR "../shared/checkpoints"

static char tmpdir[256];

static const char *npred_bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

/* Run `npred <args>` (stderr folded into stdout); returns the exit code, or
 * -1 when the process died from a signal. *out (may be NULL) gets the output. */
static int run_npred(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_npred(char **out, const char *fmt, ...)
{
    char args[4096], cmd[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s", npred_bin(), args);
    return th_shell(out, cmd);
}

/* a bad input: exit code 1 or 2 (not a crash, not a sanitizer report) and the
 * message contains `want` */
static void expect_failure(const char *what, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_failure(const char *what, const char *want, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *out = NULL;
    int rc = run_npred(&out, "%s", args);
    CHECK((rc == 1 || rc == 2) && out && strstr(out, want) && strstr(out, "npred"),
          "%s: exit %d, wanted 1 or 2 and a message naming '%s'; got:\n%s", what, rc, want, out ? out : "");
    free(out);
}

static int write_f32(const char *path, const float *v, int ndim, const int64_t *shape)
{
    npred_array a;
    if (npred_array_alloc(&a, NPRED_DT_F32, 4, ndim, shape)) return 0;
    memcpy(a.data, v, a.count * sizeof(float));
    int ok = npred_npy_write(path, &a) == NPRED_OK;
    npred_array_free(&a);
    return ok;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

static int have_checkpoints(void)
{
    struct stat sb;
    return stat(CKPT_DIR "/sensorium_sota_model.pth", &sb) == 0;
}

/* A small two-session model with a shifter (input 1 x 18 x 22), saved to tmpdir/small. */
static const char *SMALL_CFG = "{\"layers\": 2, \"input_kern\": 5, \"hidden_kern\": 3, \"hidden_channels\": 6,"
                               " \"depth_separable\": true, \"stack\": -1, \"shifter\": true,"
                               " \"grid_mean_predictor\": null}";

static npred_model *small_model(void)
{
    npred_model_session ses[2] = {{"1-2-3", 5, NULL, 0, NULL, NULL}, {"4-5-6", 4, NULL, 0, NULL, NULL}};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, SMALL_CFG, "small", 1, 18, 22, ses, 2, 3, 7))) return NULL;
    return m;
}

static void test_help_and_usage(void)
{
    const char *cmds[8] = {"import", "info", "predict", "eval", "train", "dataset", "demo", "simulate"};
    for (int i = 0; i < 8; i++) {
        char *out = NULL;
        int rc = run_npred(&out, "%s --help", cmds[i]);
        CHECK(rc == 0 && out && strstr(out, "usage: npred") && strstr(out, cmds[i]), "%s --help: exit %d\n%s", cmds[i],
              rc, out ? out : "");
        free(out);
        expect_failure(cmds[i], "--bogus", "%s --bogus", cmds[i]);
    }
    char *out = NULL;
    CHECK(run_npred(&out, "--help") == 0 && out && strstr(out, "predict") && strstr(out, "eval"), "npred --help lists "
          "the commands");
    free(out);
}

static void test_import_checkpoints(void)
{
    if (!have_checkpoints()) {
        th_skip(CKPT_DIR " absent");
        return;
    }
    const char *names[4] = {"sensorium_sota_model", "sensorium_ln_model", "sensorium_p_sota_model",
                            "sensorium_p_ln_model"};
    const char *keys[4] = {"26872-17-20", "26872-17-20", "27204-5-13", "27204-5-13"};
    const int chans[4] = {1, 1, 4, 4}, shifter[4] = {0, 0, 1, 1};
    for (int i = 0; i < 4; i++) {
        char *out = NULL, dir[512], pth[512];
        snprintf(dir, sizeof dir, "%s/%s", tmpdir, names[i]);
        snprintf(pth, sizeof pth, CKPT_DIR "/%s.pth", names[i]);
        int rc = run_npred(&out, "import %s --out %s", pth, dir);
        if (!CHECK(rc == 0 && out, "import %s: exit %d\n%s", names[i], rc, out ? out : "")) {
            free(out);
            continue;
        }
        char want[128];
        snprintf(want, sizeof want, "input channels: %d", chans[i]);
        CHECK(strstr(out, keys[i]) && strstr(out, want) && strstr(out, "Stacked2dCore(") &&
                  strstr(out, "full FullGaussian2d (64 x 28 x 56 -> ") && strstr(out, "published SENSORIUM") &&
                  strstr(out, shifter[i] ? "shifter:        yes" : "shifter:        no"),
              "import %s summary:\n%s", names[i], out);
        free(out);
        /* a second import into the same place needs --force */
        expect_failure("import over an existing model", "--force", "import %s --out %s", pth, dir);
        /* the saved model predicts exactly what the in-process import predicts */
        npred_model *a = NULL, *b = NULL;
        if (CHECK_OK(npred_model_import_pth(&a, pth, NULL, 36, 64, 2)) && CHECK_OK(npred_model_load(&b, dir, 2))) {
            int c = chans[i], n = npred_model_session_neurons(a, 0);
            float *img = malloc(sizeof(float) * 2 * c * 36 * 64), pc[4] = {0.3f, -0.2f, 0.1f, 0.5f};
            float *o1 = malloc(sizeof(float) * 2 * n), *o2 = malloc(sizeof(float) * 2 * n);
            for (int k = 0; k < 2 * c * 36 * 64; k++) img[k] = (float)sin(0.05 * k);
            if (CHECK_OK(npred_model_predict(a, keys[i], img, 2, pc, NULL, o1)) &&
                CHECK_OK(npred_model_predict(b, keys[i], img, 2, pc, NULL, o2)))
                CHECK(!memcmp(o1, o2, sizeof(float) * 2 * n), "%s: imported model predicts identically", names[i]);
            free(img), free(o1), free(o2);
        }
        npred_model_free(a);
        npred_model_free(b);
    }
    /* info straight from a .pth */
    char *out = NULL;
    int rc = run_npred(&out, "info " CKPT_DIR "/sensorium_p_sota_model.pth");
    CHECK(rc == 0 && out && strstr(out, "shifter 27204-5-13: MLP, 57 parameters") && strstr(out, "total: 575563"),
          "info on a .pth: exit %d\n%s", rc, out ? out : "");
    free(out);
}

static void test_info(void)
{
    npred_model *m = small_model();
    if (!m) return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/small", tmpdir);
    if (!CHECK_OK(npred_model_save(m, dir))) goto out;
    char *out = NULL;
    int rc = run_npred(&out, "info %s", dir);
    CHECK(rc == 0 && out && strstr(out, "Stacked2dCore(") &&
              strstr(out, "session 1-2-3: images (B, 1, 18, 22), pupil_center (B, 2) -> rates (B, 5)") &&
              strstr(out, "session 4-5-6: images (B, 1, 18, 22), pupil_center (B, 2) -> rates (B, 4)"),
          "info text: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = run_npred(&out, "info %s/model.safetensors --json", dir);
    cJSON *j = rc == 0 && out ? cJSON_Parse(out) : NULL;
    if (CHECK(j != NULL, "info --json: exit %d, parseable JSON\n%s", rc, out ? out : "")) {
        npred_ptable *t = npred_model_table(m);
        CHECK(th_num(j, -1, "parameters", "total", NULL) == (double)npred_ptable_count(t, NULL) &&
                  th_num(j, -1, "parameters", "core", NULL) == (double)npred_ptable_count(t, "core."),
              "parameter counts");
        cJSON *s1 = cJSON_GetArrayItem(th_get(j, "sessions", NULL), 1);
        CHECK(s1 && th_num(s1, -1, "n_neurons", NULL) == 4 &&
                  th_num(s1, -1, "readout_parameters", NULL) == (double)npred_ptable_count(t, "readout.4-5-6.") &&
                  th_num(s1, -1, "shifter_parameters", NULL) == (double)npred_ptable_count(t, "shifter.4-5-6."),
              "session 4-5-6 counts");
        CHECK(cJSON_IsTrue(th_get(j, "shifter", NULL)) && th_get(j, "config", "core", NULL), "shifter and config");
    }
    cJSON_Delete(j);
    free(out);
out:
    npred_model_free(m);
}

/* predict through the binary == npred_model_predict in-process; dtype and 3-d input conversions */
static void test_predict_roundtrip(void)
{
    npred_model *m = small_model();
    if (!m) return;
    char dir[512], img[512], pc[512], pred[512];
    snprintf(dir, sizeof dir, "%s/small_p", tmpdir);
    snprintf(img, sizeof img, "%s/images.npy", tmpdir);
    snprintf(pc, sizeof pc, "%s/pupil.npy", tmpdir);
    snprintf(pred, sizeof pred, "%s/pred.npy", tmpdir);
    enum { B = 7, H = 18, W = 22 };
    float x[B * H * W], p[B * 2], want[B * 5];
    uint64_t seed = 3;
    for (int i = 0; i < B * H * W; i++) x[i] = (float)(int)(th_rand(&seed) * 100); /* integers: exact in any dtype */
    for (int i = 0; i < B * 2; i++) p[i] = (float)th_rand(&seed);
    int64_t s4[4] = {B, 1, H, W}, sp[2] = {B, 2};
    if (!CHECK_OK(npred_model_save(m, dir)) || !CHECK(write_f32(img, x, 4, s4) && write_f32(pc, p, 2, sp), "write"))
        goto out;
    CHECK_OK(npred_model_predict(m, "1-2-3", x, B, p, NULL, want));
    char *out = NULL;
    int rc = run_npred(&out, "predict --model %s --images %s --session 1-2-3 --pupil-center %s --out %s --batch 2",
                       dir, img, pc, pred);
    CHECK(rc == 0, "predict: exit %d\n%s", rc, out ? out : "");
    free(out);
    npred_array a;
    if (rc == 0 && CHECK_OK(npred_npy_read(pred, &a))) {
        CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 2 && a.shape[0] == B && a.shape[1] == 5, "output (7, 5) float32");
        if (a.count == B * 5) th_close_f32("predict vs in-process", a.data, want, B * 5, 1e-6, 1e-7);
        npred_array_free(&a);
    }
    /* (B, H, W) int16 images give the same rates */
    npred_array i16;
    int64_t s3[3] = {B, H, W};
    if (CHECK_OK(npred_array_alloc(&i16, NPRED_DT_I16, 2, 3, s3))) {
        for (int i = 0; i < B * H * W; i++) ((int16_t *)i16.data)[i] = (int16_t)x[i];
        CHECK_OK(npred_npy_write(img, &i16));
        npred_array_free(&i16);
    }
    rc = run_npred(&out, "predict --model %s --images %s --session 1-2-3 --pupil-center %s --out %s", dir, img, pc,
                   pred);
    CHECK(rc == 0, "predict int16 (B, H, W): exit %d\n%s", rc, out ? out : "");
    free(out);
    if (rc == 0 && CHECK_OK(npred_npy_read(pred, &a))) {
        if (CHECK(a.count == B * 5, "count")) th_close_f32("int16 input", a.data, want, B * 5, 1e-6, 1e-7);
        npred_array_free(&a);
    }
out:
    npred_model_free(m);
}

static void test_bad_inputs(void)
{
    npred_model *m = small_model();
    if (!m) return;
    char dir[512], img[512], pc[512], bad[512], nan[512], wrong[512], pred[512], fake[512];
    snprintf(dir, sizeof dir, "%s/small_b", tmpdir);
    snprintf(img, sizeof img, "%s/b_images.npy", tmpdir);
    snprintf(pc, sizeof pc, "%s/b_pupil.npy", tmpdir);
    snprintf(bad, sizeof bad, "%s/corrupt.npy", tmpdir);
    snprintf(nan, sizeof nan, "%s/nan.npy", tmpdir);
    snprintf(wrong, sizeof wrong, "%s/wrong.npy", tmpdir);
    snprintf(pred, sizeof pred, "%s/b_pred.npy", tmpdir);
    snprintf(fake, sizeof fake, "%s/notes.pth", tmpdir);
    float x[2 * 18 * 22] = {0}, p[4] = {0}, y[2 * 20 * 22] = {0};
    int64_t s4[4] = {2, 1, 18, 22}, sp[2] = {2, 2}, sw[4] = {2, 1, 20, 22};
    CHECK_OK(npred_model_save(m, dir));
    CHECK(write_f32(img, x, 4, s4) && write_f32(pc, p, 2, sp) && write_f32(wrong, y, 4, sw), "write inputs");
    x[17] = NAN;
    CHECK(write_f32(nan, x, 4, s4), "write nan");
    CHECK(write_text(bad, "\x93NUMPY garbage") && write_text(fake, "this is not a checkpoint\n"), "write junk");

    expect_failure("missing model", "no-such-model", "predict --model %s/no-such-model --images %s --session 1-2-3 "
                   "--pupil-center %s --out %s", tmpdir, img, pc, pred);
    expect_failure("missing images", "no-such.npy", "predict --model %s --images %s/no-such.npy --session 1-2-3 "
                   "--pupil-center %s --out %s", dir, tmpdir, pc, pred);
    expect_failure("corrupt npy", "corrupt.npy", "predict --model %s --images %s --session 1-2-3 --pupil-center %s "
                   "--out %s", dir, bad, pc, pred);
    expect_failure("wrong image shape", "(B, 1, 18, 22)", "predict --model %s --images %s --session 1-2-3 "
                   "--pupil-center %s --out %s", dir, wrong, pc, pred);
    expect_failure("NaN in images", "non-finite", "predict --model %s --images %s --session 1-2-3 --pupil-center %s "
                   "--out %s", dir, nan, pc, pred);
    expect_failure("unknown session", "9-9-9", "predict --model %s --images %s --session 9-9-9 --pupil-center %s "
                   "--out %s", dir, img, pc, pred);
    expect_failure("missing pupil center", "--pupil-center", "predict --model %s --images %s --session 1-2-3 --out %s",
                   dir, img, pred);
    expect_failure("wrong pupil shape", "pupil", "predict --model %s --images %s --session 1-2-3 --pupil-center %s "
                   "--out %s", dir, img, img, pred);
    expect_failure("session needed", "--session", "predict --model %s --images %s --pupil-center %s --out %s", dir,
                   img, pc, pred);
    /* an input the model does not take is an error naming the option, not a note */
    expect_failure("--behavior without a modulator", "--behavior", "predict --model %s --images %s --session 1-2-3 "
                   "--pupil-center %s --behavior %s --out %s", dir, img, pc, pc, pred);
    {
        const char *cfg = "{\"layers\": 1, \"input_kern\": 5, \"hidden_channels\": 4, \"grid_mean_predictor\": null}";
        npred_model_session ses = {"1-2-3", 5, NULL, 0, NULL, NULL};
        npred_model *plain = NULL;
        char pdir[512];
        snprintf(pdir, sizeof pdir, "%s/plain", tmpdir);
        if (CHECK_OK(npred_model_create(&plain, cfg, "plain", 1, 18, 22, &ses, 1, 2, 7)) &&
            CHECK_OK(npred_model_save(plain, pdir))) {
            expect_failure("--pupil-center without a shifter", "--pupil-center", "predict --model %s --images %s "
                           "--pupil-center %s --out %s", pdir, img, pc, pred);
            char *o = NULL;
            int rc = run_npred(&o, "predict --model %s --images %s --out %s/plain_pred.npy", pdir, img, tmpdir);
            CHECK(rc == 0, "the same model without --pupil-center predicts: exit %d\n%s", rc, o ? o : "");
            free(o);
        }
        npred_model_free(plain);
    }
    expect_failure("missing --out", "--out", "predict --model %s --images %s --session 1-2-3", dir, img);
    expect_failure("bad --batch", "--batch", "predict --model %s --images %s --out %s --batch 0", dir, img, pred);
    expect_failure("non-checkpoint .pth", "notes.pth", "import %s --out %s/imp", fake, tmpdir);
    expect_failure("missing .pth", "absent.pth", "import %s/absent.pth --out %s/imp", tmpdir, tmpdir);
    expect_failure("import without --out", "--out", "import %s", fake);
    expect_failure("info on a missing model", "nothing-here", "info %s/nothing-here", tmpdir);
    expect_failure("info on an npy", "b_images.npy", "info %s", img);
    expect_failure("eval unknown tier", "nonsense", "eval --model %s --data " MINI_ZIP " --tier nonsense", dir);
    expect_failure("eval missing data", "no-scan.zip", "eval --model %s --data %s/no-scan.zip", dir, tmpdir);
    expect_failure("eval session missing from the model", "00000-1-1", "eval --model %s --data " MINI_ZIP, dir);
    struct stat sb;
    CHECK(stat(pred, &sb) != 0, "no output written by failed predictions");
    npred_model_free(m);
}

/* 1 if the two files have the same bytes */
static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* one parser for every command: --opt=value works in train as in eval; a missing value is
 * reported as such; --version everywhere */
static void test_argument_rules(void)
{
    char model[512], trainer[512], run[3][512], path[3][600];
    snprintf(model, sizeof model, "%s/args_model.json", tmpdir);
    snprintf(trainer, sizeof trainer, "%s/args_trainer.json", tmpdir);
    CHECK(write_text(model, "{\"layers\": 1, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 2,"
                            " \"grid_mean_predictor\": null}") &&
              write_text(trainer, "{\"max_iter\": 1}"),
          "write configs");
    const char *seed_arg[3] = {"--seed=5", "--seed 5", "--seed=6"};
    for (int i = 0; i < 3; i++) {
        snprintf(run[i], sizeof run[i], "%s/args_run%d", tmpdir, i);
        snprintf(path[i], sizeof path[i], "%s/model.safetensors", run[i]);
        char *out = NULL;
        int rc = run_npred(&out, "train --data " MINI_ZIP " --model %s --trainer=%s --out %s --threads=1 %s", model,
                           trainer, run[i], seed_arg[i]);
        char want[64];
        snprintf(want, sizeof want, "seed %c ->", seed_arg[i][7]);
        CHECK(rc == 0 && out && strstr(out, want), "train %s: exit %d, wanted 0 and '%s'; got:\n%s", seed_arg[i], rc,
              want, out ? out : "");
        free(out);
    }
    CHECK(same_file(path[0], path[1]), "train --seed=5 and --seed 5 give the same model");
    CHECK(access(path[0], R_OK) == 0 && access(path[2], R_OK) == 0 && !same_file(path[0], path[2]),
          "train --seed=6 gives another model than --seed=5");
    expect_failure("train --seed=x", "--seed", "train --seed=x --out %s/args_bad", tmpdir);

    char *out = NULL;
    int rc = run_npred(&out, "demo --out");
    CHECK(rc == 2 && out && strstr(out, "--out needs a value") && !strstr(out, "unknown option"),
          "demo --out: exit %d, wanted 2 and '--out needs a value'; got:\n%s", rc, out ? out : "");
    free(out);
    expect_failure("value of an option is another option", "--out needs a value", "simulate --out --quiet");
    expect_failure("a switch with a value", "--json takes no value", "dataset --json=1 " MINI_ZIP);
    expect_failure("unknown option with a value", "unknown option '--nope'", "eval --nope=3");

    char want[64], parts[64];
    snprintf(want, sizeof want, "npred %s\n", NPRED_VERSION);
    snprintf(parts, sizeof parts, "%d.%d.%d", NPRED_VERSION_MAJOR, NPRED_VERSION_MINOR, NPRED_VERSION_PATCH);
    CHECK(!strcmp(parts, NPRED_VERSION) && !strcmp(npred_version(), NPRED_VERSION),
          "NPRED_VERSION '%s', its parts '%s', npred_version() '%s' agree", NPRED_VERSION, parts, npred_version());
    const char *cmds[9] = {"", "import", "info", "predict", "eval", "train", "dataset", "demo", "simulate"};
    for (int i = 0; i < 9; i++) {
        out = NULL;
        rc = run_npred(&out, "%s --version", cmds[i]);
        CHECK(rc == 0 && out && !strcmp(out, want), "npred %s --version: exit %d, wanted '%s'; got '%s'", cmds[i], rc,
              want, out ? out : "");
        free(out);
    }
}

/* per-neuron Pearson correlation with population std (+1e-8), in double */
static double ref_corr(const float *a, const float *b, int64_t T, int64_t N, int64_t j)
{
    double ma = 0, mb = 0, va = 0, vb = 0, c = 0;
    for (int64_t t = 0; t < T; t++) ma += a[t * N + j], mb += b[t * N + j];
    ma /= T, mb /= T;
    for (int64_t t = 0; t < T; t++) {
        double x = a[t * N + j] - ma, y = b[t * N + j] - mb;
        va += x * x, vb += y * y, c += x * y;
    }
    return c / T / ((sqrt(va / T) + 1e-8) * (sqrt(vb / T) + 1e-8));
}

/* npred eval on the mini_tree zip with a fresh model (input 8 x 16: scale 0.5 is chosen),
 * against npred_evaluate in-process and a direct computation of the single-trial
 * correlation and FEVE from the test tier's predictions. */
/* npred convert: the mini_tree zip to a folder (the HDF5 path is tests/test_hdf5.c),
 * then npred dataset on the result; usage errors */
static void test_convert(void)
{
    char dst[512], *out = NULL;
    /* the data_key comes from the name, as sensorium derives it */
    snprintf(dst, sizeof dst, "%s/static00000-1-1-GrayImageNet-copy", tmpdir);
    int rc = run_npred(&out, "convert %s %s", MINI_ZIP, dst);
    CHECK(rc == 0 && out && strstr(out, "00000-1-1"), "convert: rc %d: %s", rc, out ? out : "");
    free(out);
    out = NULL;
    rc = run_npred(&out, "dataset %s --json", dst);
    CHECK(rc == 0 && out && strstr(out, "\"hdf5\":\tfalse") && strstr(out, "00000-1-1"), "dataset on the copy: %s",
          out ? out : "");
    free(out);
    expect_failure("convert onto an existing folder", "already exists", "convert %s %s", MINI_ZIP, dst);
    expect_failure("convert without DST", "expected SRC and DST", "convert %s", MINI_ZIP);
    expect_failure("convert of a missing file", "no such file", "convert %s/none.h5 %s/x", tmpdir, tmpdir);
}

/* npred dataset on a SENSORIUM 2023 movie scan (folder and zip) */
static void test_dataset_video(void)
{
    const char *tree = "tests/fixtures/mini_movie_tree/dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef";
    char *out = NULL;
    int rc = run_npred(&out, "dataset %s/ %s.zip", tree, tree);
    CHECK(rc == 0 && out && strstr(out, "movie scan, folder") && strstr(out, "movie scan, zip") &&
              strstr(out, "oracle 3 train 5") && strstr(out, "12 x 16, 60 frames"),
          "dataset on a movie scan: exit %d\n%s", rc, out ? out : "");
    free(out);
    out = NULL;
    rc = run_npred(&out, "dataset --json --key mouse1 %s", tree);
    CHECK(rc == 0 && out && strstr(out, "\"layout\":\t\"video\"") && strstr(out, "\"data_key\":\t\"mouse1\"") &&
              strstr(out, "\"neurons\":\t10"),
          "dataset --json on a movie scan: exit %d\n%s", rc, out ? out : "");
    free(out);
}

static void test_eval_mini_tree(void)
{
    const char *cfg = "{\"layers\": 2, \"input_kern\": 3, \"hidden_kern\": 3, \"hidden_channels\": 4,"
                      " \"stack\": -1, \"grid_mean_predictor\": null, \"init_mu_range\": 0.5}";
    npred_model_session ses = {"00000-1-1", 10, NULL, 0, NULL, NULL};
    npred_model *m = NULL;
    if (!CHECK_OK(npred_model_create(&m, cfg, "eval model", 1, 8, 16, &ses, 1, 4, 21))) return;
    char dir[512], dsj[512];
    snprintf(dir, sizeof dir, "%s/mini_model", tmpdir);
    snprintf(dsj, sizeof dsj, "%s/dataset.json", tmpdir);
    CHECK_OK(npred_model_save(m, dir));
    char *out = NULL;
    int rc = run_npred(&out, "eval --model %s --data " MINI_ZIP " --json", dir);
    cJSON *j = rc == 0 && out ? cJSON_Parse(out) : NULL;
    CHECK(j != NULL, "eval --json: exit %d\n%s", rc, out ? out : "");
    free(out);
    /* in-process: the same loaders (normalize, scale 0.5) */
    npred_loader_config lc;
    npred_loader_config_init(&lc);
    lc.batch_size = 4;
    lc.scale.set = 1;
    lc.scale.v = 0.5;
    const char *paths[1] = {MINI_ZIP};
    npred_loaders *L = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    if (CHECK_OK(npred_loaders_open(&L, paths, 1, &lc)) && CHECK_OK(npred_evaluate(m, L, NPRED_TIER_TEST, &res))) {
        const npred_eval_metrics *e = &res.sessions[0].m;
        CHECK(e->n_neurons == 10 && e->n_trials == 10 && e->n_images == 5, "test tier: 10 neurons, 10 trials, 5 images");
        CHECK(isfinite(e->single_trial_corr) && isfinite(e->corr_to_average) && isfinite(e->oracle),
              "finite metrics");
        cJSON *s0 = cJSON_GetArrayItem(th_get(j, "sessions", NULL), 0);
        double got = th_num(s0, NAN, "single_trial_correlation", NULL);
        CHECK(fabs(got - e->single_trial_corr) < 1e-12, "binary %.15g vs library %.15g", got, e->single_trial_corr);
        got = th_num(s0, NAN, "correlation_to_average", NULL);
        CHECK(fabs(got - e->corr_to_average) < 1e-12, "corr to average %.15g vs %.15g", got, e->corr_to_average);
        got = th_num(s0, NAN, "oracle", NULL);
        CHECK(fabs(got - e->oracle) < 1e-12, "oracle %.15g vs %.15g", got, e->oracle);
        CHECK(fabs(th_num(j, NAN, "scale", NULL) - 0.5) < 1e-15, "scale 0.5 chosen for the 8 x 16 model");
        CHECK(fabs(th_num(j, NAN, "overall", "single_trial_correlation", NULL) - e->single_trial_corr) < 1e-12,
              "one session: overall == session");
        /* direct computation from the test tier */
        npred_session_info si;
        npred_loaders_session(L, 0, &si);
        int64_t T = si.tier_n[NPRED_TIER_TEST], N = 10;
        float *resp = malloc(sizeof(float) * T * N), *pred = malloc(sizeof(float) * T * N);
        int64_t *ids = malloc(sizeof(int64_t) * T);
        npred_batch b;
        npred_loader_iter it;
        int has = 1;
        int64_t k = 0;
        CHECK_OK(npred_batch_init(&b, L, 0));
        CHECK_OK(npred_loader_iter_begin(&it, L, 0, NPRED_TIER_TEST, NULL));
        while (npred_loader_iter_next(&it, &b, &has) == NPRED_OK && has && k + b.n <= T) {
            CHECK_OK(npred_model_predict(m, "00000-1-1", b.images, (int)b.n, NULL, NULL, pred + k * N));
            memcpy(resp + k * N, b.responses, sizeof(float) * b.n * N);
            for (int64_t i = 0; i < b.n; i++) ids[k + i] = npred_dataset_image_ids(si.dataset)[b.trials[i]];
            k += b.n;
        }
        npred_loader_iter_free(&it);
        npred_batch_free(&b);
        CHECK(k == T, "collected %lld of %lld", (long long)k, (long long)T);
        double mean = 0, feve_sum = 0;
        int kept = 0;
        for (int64_t jn = 0; jn < N; jn++) {
            double r = ref_corr(resp, pred, T, N, jn);
            mean += r / N;
            CHECK(fabs(r - res.sessions[0].corr[jn]) < 1e-9, "neuron %lld corr %.12g vs %.12g", (long long)jn, r,
                  res.sessions[0].corr[jn]);
            /* FEV / FEVE with repeats grouped by image id (ddof 1) */
            double mu = 0, tot = 0, noise = 0, mse = 0;
            for (int64_t t = 0; t < T; t++) mu += resp[t * N + jn] / T;
            for (int64_t t = 0; t < T; t++) tot += (resp[t * N + jn] - mu) * (resp[t * N + jn] - mu) / (T - 1);
            int groups = 0;
            for (int64_t t = 0; t < T; t++) {
                int first = 1;
                for (int64_t u = 0; u < t; u++) first &= ids[u] != ids[t];
                if (!first) continue;
                double gm = 0, gv = 0;
                int gn = 0;
                for (int64_t u = 0; u < T; u++)
                    if (ids[u] == ids[t]) gm += resp[u * N + jn], gn++;
                gm /= gn;
                for (int64_t u = 0; u < T; u++)
                    if (ids[u] == ids[t]) gv += (resp[u * N + jn] - gm) * (resp[u * N + jn] - gm);
                noise += gv / (gn - 1);
                groups++;
            }
            noise /= groups;
            for (int64_t t = 0; t < T; t++) mse += (resp[t * N + jn] - pred[t * N + jn]) * (resp[t * N + jn] - pred[t * N + jn]) / T;
            double fev = (tot - noise) / tot, feve = 1 - (mse - noise) / (tot - noise);
            if (fev >= NPRED_METRICS_FEV_THRESHOLD) feve_sum += feve, kept++;
        }
        CHECK(fabs(mean - e->single_trial_corr) < 1e-9, "mean corr %.12g vs %.12g", mean, e->single_trial_corr);
        CHECK(kept == e->n_fev_kept, "FEV kept %d vs %lld", kept, (long long)e->n_fev_kept);
        if (kept) CHECK(fabs(feve_sum / kept - e->feve) < 1e-9 + 1e-7 * fabs(e->feve), "FEVE %.12g vs %.12g", feve_sum / kept, e->feve);
        CHECK(fabs(e->fraction_oracle - e->single_trial_corr / e->oracle) < 1e-12, "fraction of oracle");
        free(resp), free(pred), free(ids);
    }
    /* the same through a dataset config (other batch size, explicit scale, paths) */
    char text[1024];
    snprintf(text, sizeof text, "{\"paths\": [\"%s\"], \"batch_size\": 3, \"scale\": 0.5, \"seed\": 1}", MINI_ZIP);
    CHECK(write_text(dsj, text), "write dataset.json");
    rc = run_npred(&out, "eval --model %s --dataset %s --json", dir, dsj);
    cJSON *j2 = rc == 0 && out ? cJSON_Parse(out) : NULL;
    if (CHECK(j2 != NULL, "eval --dataset: exit %d\n%s", rc, out ? out : "") && res.n_sessions == 1)
        CHECK(fabs(th_num(j2, NAN, "overall", "correlation_to_average", NULL) - res.overall.corr_to_average) < 1e-9,
              "batch size does not change the metrics");
    free(out);
    cJSON_Delete(j2);
    /* text table */
    rc = run_npred(&out, "eval --model %s --data " MINI_ZIP, dir);
    CHECK(rc == 0 && out && strstr(out, "00000-1-1") && strstr(out, "single-trial"), "eval text: exit %d\n%s", rc,
          out ? out : "");
    free(out);
    /* an empty tier and a size no scale reaches are errors */
    expect_failure("empty tier", "final_test", "eval --model %s --data " MINI_ZIP " --tier final_test", dir);
    snprintf(text, sizeof text, "{\"batch_size\": 3, \"scale\": 0.25}");
    CHECK(write_text(dsj, text), "write dataset.json");
    expect_failure("wrong scale", "(B, 1, 8, 16)", "eval --model %s --dataset %s --data " MINI_ZIP, dir, dsj);
    snprintf(text, sizeof text, "{\"batch_size\": 3, \"no_such_option\": 1}");
    CHECK(write_text(dsj, text), "write dataset.json");
    expect_failure("unknown dataset key", "no_such_option", "eval --model %s --dataset %s --data " MINI_ZIP, dir, dsj);
    cJSON_Delete(j);
    npred_eval_results_free(&res);
    npred_loaders_free(L);
    npred_loader_config_free(&lc);
    npred_model_free(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npred-test-cli-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    struct stat sb;
    if (stat(npred_bin(), &sb) != 0) {
        fprintf(stderr, "FAIL: %s not found (build it first, or set NPRED_BIN)\n", npred_bin());
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_help_and_usage);
    RUN(test_import_checkpoints);
    RUN(test_info);
    RUN(test_predict_roundtrip);
    RUN(test_bad_inputs);
    RUN(test_argument_rules);
    RUN(test_eval_mini_tree);
    RUN(test_convert);
    RUN(test_dataset_video);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return th_summary();
}
