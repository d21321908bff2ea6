/* The last step of `make bench`: merge the figures the benches recorded
 * (<dir>/part_*.json, see bench_report.h) into one table on stdout and
 * <dir>/summary.json. Each figure of issue 12 is a key of summary.json, whose
 * value is an object: the measured value (null with a reason when it was not
 * measured), its unit, the goal, PyTorch's figure (../shared/spec/bench-torch.md),
 * the FLOPs the figure stands for and the fraction of the measured FMA peak
 * (bench_peak) they reach, the threads and the load average when it was taken.
 *
 *   build/bench/summary [dir]      (dir: $NPRED_BENCH_DIR, else build/bench) */
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npred/base.h"

/* FLOPs of the SENSORIUM baseline core per 36x64 image (pad_input false), of the
 * padded core per 36x64 and per 144x256 image, and a train step's multiple of
 * the forward (bench-torch.md). */
#define CORE_36x64 122.8e6
#define CORE_36x64_PADDED 180.5e6
#define CORE_144x256 2.888e9
#define TRAIN_X 2.87

typedef enum { RATE, TIME_S, TIME_MS, SIZE_MB } kind;

typedef struct {
    const char *key, *label, *unit;
    kind k;
    int more_is_better;
    double goal;       /* NAN: none */
    double pytorch;    /* NAN: none */
    double flop;       /* per image (RATE) or per measured run (TIME_*); 0: no peak fraction */
} figure;

/* FullFactorized2d 8,000 neurons on the padded core at 36x64 (2304 positions,
 * 64 channels), batch 32: three GEMMs of 2*B*c*hw*n each plus the core's step */
#define FACT_STEP (32 * TRAIN_X * CORE_36x64_PADDED + 6.0 * 32 * 64 * 2304 * 8000)

/* One push of the streaming GRU benchmark encoder (bench_video): the convolutions of
 * the RotationEquivariant2dCore (64 x 243 x 1568 x 2 + 3 x 64 x 3136 x 1568 x 2) and of
 * the ConvGRU (6 x 64 x 5184 x 1568 x 2) at 36x64; the readout's ~4 MFLOP not counted */
#define STREAM_GRU_FRAME (48.77e6 + 3 * 629.15e6 + 6 * 1040.45e6)

static const figure FIGS[] = {
    {"train_img_s_36x64_b32", "train step, baseline 36x64, 7,776 neurons, batch 32", "img/s", RATE, 1, 750, 32.3,
     TRAIN_X * CORE_36x64},
    {"train_img_s_36x64_b128", "train step, baseline 36x64, 7,776 neurons, batch 128", "img/s", RATE, 1, 750, NAN,
     TRAIN_X * CORE_36x64},
    {"forward_img_s_36x64_b32", "forward (eval), baseline 36x64, batch 32", "img/s", RATE, 1, 1500, 125, CORE_36x64},
    {"train_img_s_144x256_b32", "train step, tutorial 144x256, Gaussian2d 8,372, batch 32", "img/s", RATE, 1, 30, 4.5,
     TRAIN_X * CORE_144x256},
    {"latency_ms_1thread", "one image, sota checkpoint, 1 thread", "ms", TIME_MS, 0, 1, 5.5, CORE_36x64},
    {"latency_ms_default_threads", "one image, sota checkpoint, default threads", "ms", TIME_MS, 0, 1, 4.7, CORE_36x64},
    {"epoch_s_2x7776", "npred train epoch, 2 x 7,776 neurons, 4,500 train images", "s", TIME_S, 0, 6, 132.9, 0},
    {"epoch_peak_rss_mb", "peak RSS of that training (MiB)", "MiB", SIZE_MB, 0, 800, 3975, 0},
    {"factorized_train_step_s", "FullFactorized2d 8,000, 36x64 (padded core), batch 32, train step", "s", TIME_S, 0,
     0.4, 1.18, FACT_STEP},
    {"train_img_s_36x64_b32_bf16", "bf16 train step, baseline 36x64, batch 32", "img/s", RATE, 1, NAN, NAN,
     TRAIN_X * CORE_36x64},
    {"forward_img_s_36x64_b32_bf16", "bf16 forward, baseline 36x64, batch 32", "img/s", RATE, 1, NAN, NAN, CORE_36x64},
    {"factorized_train_step_s_bf16", "the same FullFactorized2d step in bf16 precision", "s", TIME_S, 0, 0.4, 1.18,
     FACT_STEP},
    {"stream_frames_s_1thread", "stream: GRU benchmark encoder 36x64, 8,000 neurons, pushes/s", "frame/s", RATE, 1, 30,
     NAN, STREAM_GRU_FRAME},
    {"stream_push_ms", "stream: one push of that encoder, median", "ms", TIME_MS, 0, NAN, NAN, STREAM_GRU_FRAME},
    {"stream_push_ms_p99", "stream: one push of that encoder, 99th percentile", "ms", TIME_MS, 0, NAN, NAN,
     STREAM_GRU_FRAME},
    {"video_gru_train_step_s", "video train step, GRU benchmark, 8 x 80 frames 36x64, 8,000 neurons", "s", TIME_S, 0,
     NAN, NAN, 0},
};
enum { NFIGS = sizeof FIGS / sizeof FIGS[0] };

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    cJSON *j = NULL;
    if (!fseek(f, 0, SEEK_END)) {
        long n = ftell(f);
        if (n > 0 && n < (1L << 24) && !fseek(f, 0, SEEK_SET) && (buf = malloc((size_t)n + 1))) {
            size_t got = fread(buf, 1, (size_t)n, f);
            buf[got] = '\0';
            j = cJSON_Parse(buf);
        }
    }
    free(buf);
    fclose(f);
    if (!j) fprintf(stderr, "summary: %s: not a JSON object (ignored)\n", path);
    return j;
}

/* every entry of every part file, by key (a later file wins; there should be one) */
static cJSON *merge_parts(const char *dir)
{
    cJSON *all = cJSON_CreateObject();
    DIR *d = opendir(dir);
    if (!d) return all;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "part_", 5) || l < 10 || strcmp(e->d_name + l - 5, ".json")) continue;
        char **nn = realloc(names, (n + 1) * sizeof *names);
        if (!nn) break;
        names = nn;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) { /* sorted: a fixed order */
        for (size_t j = i + 1; j < n; j++)
            if (names[i] && names[j] && strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    }
    for (size_t i = 0; i < n; i++) {
        if (!names[i]) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        cJSON *p = read_json(path);
        for (cJSON *it = p ? p->child : NULL; it; it = it->next) {
            if (!cJSON_IsObject(it)) continue;
            cJSON_DeleteItemFromObject(all, it->string);
            cJSON *c = cJSON_Duplicate(it, 1);
            cJSON_AddStringToObject(c, "from", names[i]);
            cJSON_AddItemToObject(all, it->string, c);
        }
        cJSON_Delete(p);
        free(names[i]);
    }
    free(names);
    return all;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static void fmt(char *buf, size_t n, double v)
{
    if (!isfinite(v)) snprintf(buf, n, "-");
    else if (fabs(v) >= 100) snprintf(buf, n, "%.0f", v);
    else if (fabs(v) >= 10) snprintf(buf, n, "%.1f", v);
    else snprintf(buf, n, "%.3g", v);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : getenv("NPRED_BENCH_DIR");
    if (!dir || !*dir) dir = "build/bench";
    cJSON *parts = merge_parts(dir);
    const cJSON *p1 = cJSON_GetObjectItemCaseSensitive(parts, "peak_gflops_1thread");
    const cJSON *pd = cJSON_GetObjectItemCaseSensitive(parts, "peak_gflops_default_threads");
    double peak1 = num(p1, "value"), peakd = num(pd, "value");
    int tdef = (int)num(pd, "threads");
    cJSON *out = cJSON_CreateObject();
    char a[32], b[32];
    fmt(a, sizeof a, peak1);
    fmt(b, sizeof b, peakd);
    printf("\n== summary of issue 12's figures\n"
           "FMA peak measured (bench_peak): %s GFLOP/s with 1 thread, %s GFLOP/s with %d threads; %% peak = the FLOPs a\n"
           "figure stands for (docs/performance.md) over that peak at its thread count; load = 1-minute load average\n"
           "when it was measured (the machine is shared: figures taken under load are low).\n\n",
           a, b, tdef > 0 ? tdef : 0);
    printf("%-28s %10s %6s %12s %5s %9s %9s %7s %3s %5s\n", "figure", "npred", "unit", "goal", "met", "PyTorch",
           "x PyTorch", "% peak", "thr", "load");
    int missing = 0;
    for (int i = 0; i < NFIGS; i++) {
        const figure *f = &FIGS[i];
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(parts, f->key);
        double v = num(e, "value"), thr = num(e, "threads"), load = num(e, "load_1min"), flop = num(e, "flop");
        if (!isfinite(flop)) flop = f->flop;
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(e, "reason");
        cJSON *o = cJSON_CreateObject();
        add_num(o, "value", v);
        cJSON_AddStringToObject(o, "unit", f->unit);
        cJSON_AddStringToObject(o, "what", f->label);
        if (!isfinite(v)) {
            char reason[512];
            snprintf(reason, sizeof reason, "%s",
                     cJSON_IsString(why) ? why->valuestring
                     : e ? "recorded without a value"
                     : "not measured: no bench recorded it in this run (see the output above)");
            cJSON_AddStringToObject(o, "reason", reason);
        }
        char goal[48] = "-";
        if (isfinite(f->goal)) snprintf(goal, sizeof goal, "%s %g", f->more_is_better ? ">=" : "<=", f->goal);
        else if (strstr(f->key, "bf16")) snprintf(goal, sizeof goal, ">= 1.7x fp32");
        cJSON_AddStringToObject(o, "goal", goal);
        int met = -1;
        if (isfinite(v) && isfinite(f->goal)) met = f->more_is_better ? v >= f->goal : v <= f->goal;
        if (strstr(f->key, "_bf16")) { /* the speed-up over the fp32 figure of the same run and threads; the
                                          goal: 1.7x, unless the figure has its own (the factorized step's 0.4 s) */
            char k32[64];
            snprintf(k32, sizeof k32, "%.*s", (int)(strstr(f->key, "_bf16") - f->key), f->key);
            const cJSON *e32 = cJSON_GetObjectItemCaseSensitive(parts, k32);
            double v32 = num(e32, "value");
            double x = isfinite(v) && isfinite(v32) && v32 > 0 && v > 0 && num(e32, "threads") == thr
                           ? (f->more_is_better ? v / v32 : v32 / v)
                           : NAN;
            add_num(o, "times_fp32", x);
            if (isfinite(x) && !isfinite(f->goal)) met = x >= 1.7;
        }
        if (met < 0) cJSON_AddNullToObject(o, "goal_met");
        else cJSON_AddBoolToObject(o, "goal_met", met);
        add_num(o, "pytorch", f->pytorch);
        double ratio = NAN;
        if (isfinite(v) && isfinite(f->pytorch) && v > 0) ratio = f->more_is_better ? v / f->pytorch : f->pytorch / v;
        add_num(o, "times_pytorch", ratio);
        /* achieved GFLOP/s and the share of the measured peak at the same thread count */
        double gflops = NAN, peak = NAN;
        if (isfinite(v) && v > 0 && flop > 0) {
            gflops = f->k == RATE ? v * flop * 1e-9 : f->k == TIME_MS ? flop / (v * 1e-3) * 1e-9 : flop / v * 1e-9;
            peak = thr == 1 ? peak1 : (thr == tdef ? peakd : NAN);
        }
        add_num(o, "flop", flop > 0 ? flop : NAN);
        add_num(o, "gflops", gflops);
        add_num(o, "peak_gflops", peak);
        double frac = isfinite(gflops) && isfinite(peak) && peak > 0 ? gflops / peak : NAN;
        add_num(o, "peak_fraction", frac);
        add_num(o, "threads", thr);
        add_num(o, "load_1min", load);
        cJSON_AddItemToObject(out, f->key, o);
        char sv[32], sp[32], sr[32], sf[32], sl[32];
        fmt(sv, sizeof sv, v);
        fmt(sp, sizeof sp, f->pytorch);
        fmt(sr, sizeof sr, ratio);
        if (isfinite(frac)) snprintf(sf, sizeof sf, "%.1f%%", 100 * frac);
        else snprintf(sf, sizeof sf, "-");
        fmt(sl, sizeof sl, load);
        if (!isfinite(v)) missing++;
        printf("%-28s %10s %6s %12s %5s %9s %9s %7s %3s %5s\n", f->key, sv, f->unit, goal,
               met < 0 ? "-" : met ? "yes" : "no", sp, sr, sf, isfinite(thr) ? (thr == 1 ? "1" : "all") : "-", sl);
    }
    if (missing) {
        printf("\nnot measured:\n");
        for (cJSON *o = out->child; o; o = o->next) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "reason");
            if (cJSON_IsString(r)) printf("  %s: %s\n", o->string, r->valuestring);
        }
    }
    char path[2048];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    char *text = cJSON_Print(out);
    npred_status st = text ? npred_write_atomic(path, text, strlen(text)) : NPRED_ERR_NOMEM;
    free(text);
    cJSON_Delete(out);
    cJSON_Delete(parts);
    if (st) {
        fprintf(stderr, "summary: cannot write %s: %s\n", path, npred_last_error());
        return 1;
    }
    printf("\nwrote %s\n", path);
    return 0;
}
