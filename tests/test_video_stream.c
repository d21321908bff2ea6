/* The public streaming API (npred/video_stream.h) on the three encoder fixtures' models
 * (RotationEquivariant2dCore + ConvGRU, Stacked2dCore + ConvGRU, Factorized3dCore),
 * built with npred_video_model_create and given the fixtures' weights: every clip pushed
 * frame by frame equals npred_video_model_predict of that clip bit for bit (no rates
 * during a 3D core's warm-up), two streams on one model at once, resets; behaviour and
 * pupil planes written by push; bad input is a clear error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/conv2d_fft.h"
#include "model/video_model.h"
#include "npred/video_stream.h"

typedef struct {
    th_case c;
    npred_video_model *m;
    int ns, B, C, T, H, W, T1;
    const char *keys[4];
    int nn[4];
    double *coords[4];
    float *vid[4], *pup[4];
} fx;

static void fx_close(fx *f)
{
    npred_video_model_free(f->m);
    for (int i = 0; i < 4; i++) free(f->coords[i]), free(f->vid[i]), free(f->pup[i]);
    th_case_close(&f->c);
}

/* the fixture's model through the public API, its weights from the fixture */
static int fx_open(fx *f, const char *name)
{
    memset(f, 0, sizeof *f);
    if (!th_case_open(&f->c, name)) return 0;
    char *config = cJSON_PrintUnformatted(th_get(f->c.json, "args", "make_video_model", NULL));
    cJSON *keys = th_get(f->c.json, "data_keys", NULL);
    f->ns = cJSON_GetArraySize(keys);
    npred_video_model_session s[4];
    int ok = CHECK(config && f->ns >= 1 && f->ns <= 4, "%s: config and sessions", name);
    for (int i = 0; ok && i < f->ns; i++) {
        f->keys[i] = cJSON_GetArrayItem(keys, i)->valuestring;
        f->nn[i] = (int)th_num(f->c.json, -1, "args", "n_neurons", f->keys[i], NULL);
        cJSON *cf = th_get(f->c.json, "files", "sessions", f->keys[i], "cell_motor_coordinates", NULL);
        cJSON *vf = th_get(f->c.json, "files", "sessions", f->keys[i], "inputs", "videos", NULL);
        cJSON *pf = th_get(f->c.json, "files", "sessions", f->keys[i], "inputs", "pupil_center", NULL);
        npred_array sh;
        ok = CHECK(cJSON_IsString(cf) && cJSON_IsString(vf) && cJSON_IsString(pf), "%s: files of %s", name, f->keys[i]) &&
             (f->coords[i] = th_load_f64(&f->c, cf->valuestring, &sh)) && (f->vid[i] = th_load_f32(&f->c, vf->valuestring, NULL)) &&
             (f->pup[i] = th_load_f32(&f->c, pf->valuestring, NULL));
        if (ok) s[i] = (npred_video_model_session){f->keys[i], f->nn[i], f->coords[i], (int)sh.shape[1], NULL};
    }
    if (ok) {
        cJSON *shape = th_get(f->c.json, "args", "input_shape", f->keys[0], NULL);
        f->B = cJSON_GetArrayItem(shape, 0)->valueint, f->C = cJSON_GetArrayItem(shape, 1)->valueint;
        f->T = cJSON_GetArrayItem(shape, 2)->valueint, f->H = cJSON_GetArrayItem(shape, 3)->valueint;
        f->W = cJSON_GetArrayItem(shape, 4)->valueint;
        ok = CHECK_OK(npred_video_model_create(&f->m, config, name, f->C, f->H, f->W, s, f->ns, f->B)) &&
             CHECK(th_load_table(&f->c, &f->m->e->t, "params", "", NULL) == f->m->e->t.n, "every table entry loaded");
        f->T1 = npred_video_model_output_frames(f->m, f->T);
    }
    free(config);
    return ok;
}

/* frame t of clip b of session k: (C, H, W) and its pupil centre (2) */
static void slice(const fx *f, int k, int b, int t, float *frame, float *pc)
{
    size_t HW = (size_t)f->H * f->W;
    for (int c = 0; c < f->C; c++)
        memcpy(frame + c * HW, f->vid[k] + (((size_t)b * f->C + c) * f->T + t) * HW, HW * sizeof *frame);
    for (int j = 0; j < 2; j++) pc[j] = f->pup[k][((size_t)b * 2 + j) * f->T + t];
}

/* Push clip b of session k into s (reset first); 1 when every push matched want (T', n). */
static int push_clip(const fx *f, npred_stream *s, int k, int b, const float *want)
{
    int n = f->nn[k], W = npred_stream_warmup_frames(s), same = 1;
    float *frame = malloc((size_t)f->C * f->H * f->W * sizeof *frame), *rates = malloc((size_t)n * sizeof *rates), pc[2];
    if (!CHECK(frame && rates, "alloc")) same = 0;
    npred_stream_reset(s);
    for (int t = 0; same && t < f->T; t++) {
        slice(f, k, b, t, frame, pc);
        for (int i = 0; i < n; i++) rates[i] = -1;
        int got = npred_stream_push(s, frame, f->C, f->H, f->W, NULL, pc, rates);
        if (t < W) {
            int untouched = got == 0;
            for (int i = 0; i < n; i++) untouched &= rates[i] == -1;
            same &= CHECK(untouched, "%s: push %d of the warm-up (%d) gave %d or wrote rates", f->c.name, t, W, got);
        } else {
            same &= CHECK(got == 1, "%s: push %d gave %d (%s)", f->c.name, t, got, got < 0 ? npred_last_error() : "");
            same &= !memcmp(rates, want + (size_t)(t - W) * n, (size_t)n * sizeof *rates);
        }
    }
    same &= npred_stream_frames_pushed(s) == f->T;
    free(frame), free(rates);
    return same;
}

static void run_fixture(const char *name)
{
    fx f;
    float *want[4][2] = {{0}};
    npred_stream *s1 = NULL, *s2 = NULL;
    if (!fx_open(&f, name)) goto out;
    size_t HW = (size_t)f.H * f.W, clip = (size_t)f.C * f.T * HW;
    for (int k = 0; k < f.ns; k++)
        for (int b = 0; b < f.B && b < 2; b++) { /* predict of each clip alone */
            want[k][b] = malloc((size_t)f.T1 * f.nn[k] * sizeof(float));
            if (!CHECK(want[k][b], "alloc") ||
                !CHECK_OK(npred_video_model_predict(f.m, f.keys[k], f.vid[k] + b * clip, 1, f.C, f.T, f.H, f.W,
                                                    f.pup[k] + (size_t)b * 2 * f.T, want[k][b])))
                goto out;
        }
    for (int k = 0; k < f.ns; k++) {
        if (!CHECK_OK(npred_stream_open(&s1, f.m, f.keys[k]))) goto out;
        CHECK(npred_stream_neurons(s1) == f.nn[k] && npred_stream_warmup_frames(s1) == f.T - f.T1 &&
                  npred_stream_needs_pupil(s1) == npred_video_model_has_shifter(f.m) && npred_stream_behavior_channels(s1) == 0,
              "%s %s: getters", name, f.keys[k]);
        int c, h, w;
        npred_stream_frame_shape(s1, &c, &h, &w);
        CHECK(c == f.C && h == f.H && w == f.W, "frame shape");
        for (int b = 0; b < f.B && b < 2; b++)
            CHECK(push_clip(&f, s1, k, b, want[k][b]), "%s %s clip %d: streamed rates differ from predict", name,
                  f.keys[k], b);
        /* a second stream on the same model, interleaved with the first: independent */
        if (CHECK_OK(npred_stream_open(&s2, f.m, f.keys[k])) && f.B >= 2) {
            float *fr = malloc(clip / f.T * sizeof *fr), *r1 = malloc(f.nn[k] * sizeof *r1),
                  *r2 = malloc(f.nn[k] * sizeof *r2), p1[2], p2[2];
            int same = fr && r1 && r2, Wu = npred_stream_warmup_frames(s1);
            npred_stream_reset(s1);
            for (int t = 0; same && t < f.T; t++) {
                slice(&f, k, 0, t, fr, p1);
                int g1 = npred_stream_push(s1, fr, f.C, f.H, f.W, NULL, p1, r1);
                slice(&f, k, 1, t, fr, p2);
                int g2 = npred_stream_push(s2, fr, f.C, f.H, f.W, NULL, p2, r2);
                same &= g1 == (t >= Wu) && g2 == (t >= Wu);
                if (t >= Wu)
                    same &= !memcmp(r1, want[k][0] + (size_t)(t - Wu) * f.nn[k], f.nn[k] * sizeof *r1) &&
                            !memcmp(r2, want[k][1] + (size_t)(t - Wu) * f.nn[k], f.nn[k] * sizeof *r2);
            }
            CHECK(same, "%s %s: two interleaved streams on one model", name, f.keys[k]);
            free(fr), free(r1), free(r2);
        }
        npred_stream_free(s1), npred_stream_free(s2);
        s1 = s2 = NULL;
    }
out:
    npred_stream_free(s1), npred_stream_free(s2);
    for (int k = 0; k < 4; k++) free(want[k][0]), free(want[k][1]);
    fx_close(&f);
}

static void test_gru(void) { run_fixture("video_gru_encoder"); }
static void test_gru_stacked2d(void) { run_fixture("video_gru_encoder_stacked2d"); }
static void test_factorized3d(void) { run_fixture("video_factorized3d_encoder"); }
/* every supported eval convolution by FFT (the default policy leaves the fixtures'
 * small kernels direct): the stream still equals predict bit for bit */
static void fft_fixture(const char *name)
{
    npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_ALWAYS);
    run_fixture(name);
    npred_conv2d_fft_set_mode(NPRED_CONV2D_FFT_AUTO);
}
static void test_gru_fft(void) { fft_fixture("video_gru_encoder"); }
static void test_gru_stacked2d_fft(void) { fft_fixture("video_gru_encoder_stacked2d"); }

/* behaviour and pupil planes from the loader record: push writes them */
static void test_planes(void)
{
    fx f;
    npred_stream *s = NULL, *ref = NULL;
    if (!fx_open(&f, "video_gru_encoder_stacked2d")) goto out;
    size_t HW = (size_t)f.H * f.W, nf = (size_t)f.C * HW;
    int n = f.nn[0];
    float *fr = malloc(nf * sizeof *fr), *fr2 = malloc(nf * sizeof *fr2), *a = malloc(n * sizeof *a),
          *b = malloc(n * sizeof *b), pc[2];
    if (!CHECK(fr && fr2 && a && b && f.C == 3, "alloc, 3 channels (video + 2 planes)")) goto done;
    const char *recs[2] = {"{\"batch_size\": 4, \"include_behavior\": true}",
                           "{\"batch_size\": 4, \"include_behavior\": false, \"include_pupil_centers_as_channels\": true}"};
    for (int r = 0; r < 2; r++) {
        if (!CHECK_OK(npred_video_model_set_loader_json(f.m, recs[r])) || !CHECK_OK(npred_stream_open(&s, f.m, f.keys[0])) ||
            !CHECK_OK(npred_stream_open(&ref, f.m, f.keys[0])))
            goto done;
        CHECK(npred_stream_behavior_channels(s) == (r ? 0 : 2), "record %d: %d behaviour planes", r,
              npred_stream_behavior_channels(s));
        int same = 1;
        for (int t = 0; t < f.T; t++) {
            slice(&f, 0, 0, t, fr, pc);
            const float beh[2] = {0.25f * t, -0.5f + 0.1f * t};
            /* the reference frame: the planes filled by hand; the pushed one: garbage there */
            memcpy(fr2, fr, nf * sizeof *fr);
            for (int c = 1; c < 3; c++)
                for (size_t i = 0; i < HW; i++) {
                    fr[c * HW + i] = r ? pc[c - 1] : beh[c - 1];
                    fr2[c * HW + i] = 1e3f;
                }
            int g1 = npred_stream_push(ref, fr, f.C, f.H, f.W, NULL, pc, a);
            int g2 = npred_stream_push(s, fr2, f.C, f.H, f.W, r ? NULL : beh, pc, b);
            same &= g1 == 1 && g2 == 1 && !memcmp(a, b, n * sizeof *a);
        }
        CHECK(same, "record %d: the planes written by push", r);
        if (r) { /* no behaviour planes: behaviour is an error */
            const float beh[2] = {0, 0};
            CHECK(npred_stream_push(s, fr, f.C, f.H, f.W, beh, pc, b) == -1 && strstr(npred_last_error(), "behaviour"),
                  "behaviour without planes: %s", npred_last_error());
        }
        npred_stream_free(s), npred_stream_free(ref);
        s = ref = NULL;
    }
done:
    free(fr), free(fr2), free(a), free(b);
out:
    npred_stream_free(s), npred_stream_free(ref);
    fx_close(&f);
}

static void test_errors(void)
{
    fx f;
    npred_stream *s = NULL;
    if (!fx_open(&f, "video_factorized3d_encoder")) goto out;
    CHECK(npred_stream_open(&s, f.m, "nope") == NPRED_ERR_ARG && strstr(npred_last_error(), "nope") && !s,
          "unknown session: %s", npred_last_error());
    if (!CHECK_OK(npred_stream_open(&s, f.m, f.keys[0]))) goto out;
    size_t nf = (size_t)f.C * f.H * f.W;
    float *fr = calloc(nf, sizeof *fr), *r = malloc(f.nn[0] * sizeof *r), pc[2] = {0, 0};
    if (fr && r) {
        CHECK(npred_stream_push(s, fr, f.C, f.H + 1, f.W, NULL, pc, r) == -1 && strstr(npred_last_error(), "frame"),
              "wrong frame size: %s", npred_last_error());
        CHECK(npred_stream_push(s, fr, f.C - 1, f.H, f.W, NULL, pc, r) == -1, "wrong channels");
        CHECK(npred_stream_push(s, fr, f.C, f.H, f.W, NULL, NULL, r) == -1 && strstr(npred_last_error(), "pupil_center"),
              "no pupil with a shifter: %s", npred_last_error());
        CHECK(npred_stream_push(s, NULL, f.C, f.H, f.W, NULL, pc, r) == -1, "no frame");
        CHECK(npred_stream_frames_pushed(s) == 0, "refused pushes are not counted");
        CHECK(npred_stream_push(s, fr, f.C, f.H, f.W, NULL, pc, r) == 0, "a good push after the errors");
    }
    free(fr), free(r);
out:
    npred_stream_free(s);
    fx_close(&f);
}

/* examples/stream_closed_loop.c (its built-in model): runs, warm-up free, every frame */
static void test_example(void)
{
    const char *b = getenv("NPRED_BUILD");
    char cmd[512], *out = NULL;
    snprintf(cmd, sizeof cmd, "./%s/examples/stream_closed_loop 2>&1", b && *b ? b : "build");
    int rc = th_shell(&out, cmd);
    CHECK(rc == 0 && out && strstr(out, "50 neurons") && strstr(out, "frame  39: contrast") && !strstr(out, "warm-up ("),
          "the example ran (%d):\n%s", rc, out ? out : "");
    free(out);
}

int main(void)
{
    RUN(test_gru);
    RUN(test_gru_stacked2d);
    RUN(test_gru_fft);
    RUN(test_gru_stacked2d_fft);
    RUN(test_factorized3d);
    RUN(test_planes);
    RUN(test_errors);
    RUN(test_example);
    return th_summary();
}
