/* npred mei / rf / tuning: in-silico experiments on a trained or imported model
 * (docs/insilico.md). A client of include/npred/insilico.h only. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "npred/data.h"
#include "npred/insilico.h"
#include "npred/npy.h"

typedef enum { CMD_MEI, CMD_RF, CMD_TUNING } which;
static const char *const NAMES[] = {"mei", "rf", "tuning"};

typedef struct {
    which cmd;
    const char *model, *key, *neurons, *out, *config, *initial, *minus, *weights, *data;
    const char *pupil, *behavior;
    int population, json, quiet, threads, batch, iterations, has_seed, has_gray, has_contrast;
    long long seed;
    double gray, contrast, sf_min, sf_max;
    int n_ori, n_sf, n_phase, has_sf_min, has_sf_max;
} opts;

static void help(which w, FILE *f)
{
    if (w == CMD_MEI)
        fprintf(f,
                "usage: npred mei --model MODEL --session KEY --neurons LIST --out DIR [options]\n\n"
                "Most exciting inputs by gradient ascent (sinzlab/mei semantics): one image per listed neuron,\n"
                "all optimised together in one batch; or one image for a population (--population) or the\n"
                "most discriminative stimulus --neurons A minus --minus B.\n"
                "Writes DIR/meis.npy (N, C, H, W) float32 in the model's input space, DIR/activations.npy (N)\n"
                "(objective of each returned image), DIR/trace.npy (steps, N) (objective before each step),\n"
                "DIR/meis.png.\n\n"
                "options:\n"
                "  --model MODEL         run folder, .safetensors or .pth (imported, architecture inferred)\n"
                "  --session KEY         data_key of the readout (optional for a one-session model)\n"
                "  --neurons LIST        0-19, 3,7,12, all (indices in the session's neuron order)\n"
                "  --config FILE         sinzlab/mei-style JSON (initial, optimizer, precondition, transform,\n"
                "                        postprocessing, stopper; see docs/insilico.md) [npred defaults:\n"
                "                        SGD lr 1, GaussianBlur sigma 1, ChangeNorm 10, 1000 iterations]\n"
                "  --iterations N        override the stopper's number of iterations (N + 1 steps)\n"
                "  --seed N              override the seed of the random initial image and jitter\n"
                "  --initial FILE.npy    start images (N, C, H, W), or (C, H, W) for every image\n"
                "  --population          one image maximising the mean rate of the listed neurons\n"
                "  --weights FILE.npy    with --population: weights (n) of all the session's neurons instead\n"
                "  --minus LIST          one image maximising mean(--neurons) - mean(--minus)\n"
                "%s",
                "");
    else if (w == CMD_RF)
        fprintf(f, "usage: npred rf --model MODEL --session KEY [--neurons LIST] --out DIR [options]\n\n"
                   "Gradient receptive fields: d rate / d image at a uniform gray image, per neuron.\n"
                   "Writes DIR/rf.npy (N, C, H, W), DIR/rf.json (per neuron: neuron, unit_id, x, y, size in\n"
                   "pixels of the model input; x = column, y = row) and DIR/rf.png.\n\n"
                   "options:\n"
                   "  --model, --session, --neurons (default all) as for npred mei\n"
                   "  --gray V              value of the uniform image [0: the mean of normalised images]\n");
    else
        fprintf(f, "usage: npred tuning --model MODEL --session KEY [--neurons LIST] --out DIR [options]\n\n"
                   "Full-field sinusoidal gratings over orientation, spatial frequency and phase.\n"
                   "Writes DIR/tuning.json (per neuron: neuron, unit_id, orientation (radians in [0, pi), the\n"
                   "wave-vector direction, x = column, y = row, from +x toward +y), spatial_frequency (cycles\n"
                   "per pixel), osi, f1_f0, peak_rate), DIR/tuning_responses.npy (orientations, SFs, phases, N)\n"
                   "and DIR/tuning.png.\n\n"
                   "options:\n"
                   "  --model, --session, --neurons (default all) as for npred mei\n"
                   "  --orientations N      [12]     --sfs N  [8]     --phases N  [8]\n"
                   "  --sf-min F, --sf-max F  spatial frequency range, cycles/pixel [1/64, 1/4]\n"
                   "  --contrast A          grating amplitude [1]    --gray V  mean [0]\n");
    fprintf(f, "\ncommon options:\n"
               "  --out DIR             output folder (created; files written atomically)\n"
               "  --data PATH           the session's dataset (folder or .zip) for unit ids [from RUN/config.json]\n"
               "  --pupil-center X,Y    eye position for a model with a shifter [0,0: the mean position of\n"
               "                        normalised pupil centers]\n"
               "  --behavior V1,..,Vk   behaviour for a model with a modulator (required there)\n"
               "  --batch N             images per forward pass [64]\n"
               "  --threads N           OpenMP threads [all cores]\n"
               "  --json                print the results as JSON on stdout\n"
               "  --quiet               no progress on stderr\n"
               "  -h, --help            this help\n");
}

/* "a,b,c" -> floats; count must be want */
static int parse_floats(const char *cmd, const char *opt, const char *s, float *v, int want)
{
    const char *p = s;
    for (int i = 0; i < want; i++) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (errno || end == p || !isfinite(d)) break;
        v[i] = (float)d;
        p = end;
        if (i + 1 == want) {
            if (*p == 0) return 0;
            break;
        }
        if (*p != ',') break;
        p++;
    }
    return cli_usage_error(cmd, "--%s: '%s' is not %d comma-separated numbers", opt, s, want);
}

static void help_mei(FILE *f) { help(CMD_MEI, f); }
static void help_rf(FILE *f) { help(CMD_RF, f); }
static void help_tuning(FILE *f) { help(CMD_TUNING, f); }

/* Each command takes the common options and its own; any other is an unknown option. */
static int parse_args(opts *o, int argc, char **argv)
{
    const char *cmd = NAMES[o->cmd];
    double seed = -1, iterations = -1, gray = NAN, contrast = NAN, sf_min = NAN, sf_max = NAN;
    cli_opt all[32];
    int k = 0;
#define OPT(name, kind, dst, lo, hi) all[k++] = (cli_opt){name, kind, dst, lo, hi}
    OPT("model", CLI_STR, &o->model, 0, 0);
    OPT("session", CLI_STR, &o->key, 0, 0);
    OPT("neurons", CLI_STR, &o->neurons, 0, 0);
    OPT("out", CLI_STR, &o->out, 0, 0);
    OPT("data", CLI_STR, &o->data, 0, 0);
    OPT("pupil-center", CLI_STR, &o->pupil, 0, 0);
    OPT("behavior", CLI_STR, &o->behavior, 0, 0);
    OPT("batch", CLI_INT, &o->batch, 1, 1 << 20);
    OPT("threads", CLI_INT, &o->threads, 1, 4096);
    OPT("json", CLI_FLAG, &o->json, 0, 0);
    OPT("quiet", CLI_FLAG, &o->quiet, 0, 0);
    if (o->cmd == CMD_MEI) {
        OPT("config", CLI_STR, &o->config, 0, 0);
        OPT("initial", CLI_STR, &o->initial, 0, 0);
        OPT("minus", CLI_STR, &o->minus, 0, 0);
        OPT("weights", CLI_STR, &o->weights, 0, 0);
        OPT("population", CLI_FLAG, &o->population, 0, 0);
        OPT("iterations", CLI_NUM, &iterations, 0, 1e8);
        OPT("seed", CLI_NUM, &seed, 0, 9e15);
    } else {
        OPT("gray", CLI_NUM, &gray, -1e30, 1e30);
    }
    if (o->cmd == CMD_TUNING) {
        OPT("contrast", CLI_NUM, &contrast, 0, 1e30);
        OPT("orientations", CLI_INT, &o->n_ori, 1, 360);
        OPT("sfs", CLI_INT, &o->n_sf, 1, 100);
        OPT("phases", CLI_INT, &o->n_phase, 1, 360);
        OPT("sf-min", CLI_NUM, &sf_min, 0, 0.5);
        OPT("sf-max", CLI_NUM, &sf_max, 0, 0.5);
    }
    OPT(NULL, 0, NULL, 0, 0);
#undef OPT
    void (*const helps[])(FILE *) = {help_mei, help_rf, help_tuning};
    const cli_spec spec = {cmd, helps[o->cmd], all, NULL};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (iterations >= 0) {
        if (iterations != floor(iterations)) return cli_usage_error(cmd, "--iterations: %g is not a count", iterations);
        o->iterations = (int)iterations;
    }
    if (seed >= 0) {
        if (seed != floor(seed)) return cli_usage_error(cmd, "--seed: %g is not an integer", seed);
        o->seed = (long long)seed;
        o->has_seed = 1;
    }
    if ((o->has_gray = !isnan(gray))) o->gray = gray;
    if ((o->has_contrast = !isnan(contrast))) o->contrast = contrast;
    if ((o->has_sf_min = !isnan(sf_min))) o->sf_min = sf_min;
    if ((o->has_sf_max = !isnan(sf_max))) o->sf_max = sf_max;
    if (!o->model) return cli_usage_error(cmd, "missing --model");
    if (!o->out) return cli_usage_error(cmd, "missing --out DIR");
    if (o->cmd == CMD_MEI && !o->neurons && !o->weights) return cli_usage_error(cmd, "missing --neurons");
    if (o->weights && !o->population) return cli_usage_error(cmd, "--weights needs --population");
    if (o->weights && (o->neurons || o->minus)) return cli_usage_error(cmd, "--weights replaces --neurons and --minus");
    if (o->population && o->minus) return cli_usage_error(cmd, "--population and --minus exclude each other");
    return CLI_CONTINUE;
}

/* ---- progress ---- */
typedef struct {
    const char *what;
    int quiet, tty, last;
} progress;

static int on_progress(void *user, int done, int total)
{
    progress *p = user;
    if (p->quiet) return 0;
    int pct = (int)(100.0 * done / (total > 0 ? total : 1));
    if (pct == p->last && done != total) return 0;
    if (p->tty) {
        char bar[31];
        int k = pct * 30 / 100;
        for (int i = 0; i < 30; i++) bar[i] = i < k ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %d/%d ", p->what, bar, done, total);
        if (done == total) fprintf(stderr, "\n");
    } else if (pct / 10 != p->last / 10 || done == total) {
        fprintf(stderr, "%s: %d/%d\n", p->what, done, total);
    }
    p->last = pct;
    return 0;
}

/* ---- unit ids: --data, or the run folder's config.json "data" list ---- */
static int64_t *unit_ids_from(const char *path, const char *key, int n)
{
    char p[4096];
    struct stat sb;
    int64_t *ids = NULL;
    if (stat(path, &sb) != 0) return NULL;
    npred_array a = {0};
    if (S_ISDIR(sb.st_mode)) {
        snprintf(p, sizeof p, "%s/meta/neurons/unit_ids.npy", path);
        if (npred_npy_read(p, &a)) return NULL;
        if (a.count == (size_t)n && (ids = malloc(sizeof *ids * (size_t)n))) {
            for (int i = 0; i < n; i++)
                ids[i] = a.dtype == NPRED_DT_I64 ? ((int64_t *)a.data)[i]
                         : a.dtype == NPRED_DT_I32 ? ((int32_t *)a.data)[i]
                                                   : (int64_t)-1;
        }
        npred_array_free(&a);
        return ids;
    }
    npred_dataset *d = NULL;
    if (npred_dataset_open(&d, path, key)) return NULL;
    const npred_array *u = npred_dataset_neuron_info(d, "unit_ids");
    if (u && u->count == (size_t)n && u->dtype == NPRED_DT_I64 && (ids = malloc(sizeof *ids * (size_t)n)))
        memcpy(ids, u->data, sizeof *ids * (size_t)n);
    npred_dataset_free(d);
    return ids;
}

static int64_t *find_unit_ids(const opts *o, const char *key, int n, int *said)
{
    if (o->data) {
        int64_t *ids = unit_ids_from(o->data, key, n);
        if (!ids) {
            fprintf(stderr, "npred %s: %s: no unit_ids for %d neurons (meta/neurons/unit_ids.npy)\n", NAMES[o->cmd],
                    o->data, n);
            *said = -1;
        }
        return ids;
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", o->model);
    struct stat sb;
    if (stat(o->model, &sb) != 0 || !S_ISDIR(sb.st_mode) || stat(p, &sb) != 0) return NULL;
    char *txt = cli_read_text(p);
    cJSON *j = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    int64_t *ids = NULL;
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data"), *it;
    cJSON_ArrayForEach(it, data)
    {
        const char *path = cJSON_GetStringValue(it);
        if (!path || !strstr(path, key)) continue;
        if ((ids = unit_ids_from(path, key, n))) {
            *said = 1;
            break;
        }
    }
    cJSON_Delete(j);
    return ids;
}

static npred_status write_npy(const char *dir, const char *name, const float *v, int ndim, const int64_t *shape)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    npred_array a = {0};
    npred_status st = npred_array_alloc(&a, NPRED_DT_F32, 4, ndim, shape);
    if (st) return st;
    memcpy(a.data, v, a.count * sizeof(float));
    st = npred_npy_write(p, &a);
    npred_array_free(&a);
    return st;
}

static npred_status write_json(const char *dir, const char *name, cJSON *j)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *txt = cJSON_Print(j);
    if (!txt) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", p);
    size_t len = strlen(txt);
    txt[len] = '\n'; /* cJSON_Print's buffer has the terminator: replace it by a newline */
    npred_status st = npred_write_atomic(p, txt, len + 1);
    free(txt);
    return st;
}


static void add_common(cJSON *e, int neuron, const int64_t *ids)
{
    cJSON_AddNumberToObject(e, "neuron", neuron);
    if (ids) cJSON_AddNumberToObject(e, "unit_id", (double)ids[neuron]);
    else cJSON_AddNullToObject(e, "unit_id");
}

static int run(which w, int argc, char **argv)
{
    opts o = {0};
    o.cmd = w;
    o.batch = 64;
    o.iterations = -1;
    const char *cmd = NAMES[w];
    int r = parse_args(&o, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (o.threads > 0) npred_set_threads(o.threads);
    npred_model *m = NULL;
    int rc = 1, *idx = NULL, *idx2 = NULL, count = 0, count2 = 0;
    float *objective = NULL, *initial = NULL, *meis = NULL, *act = NULL, *trace = NULL, *maps = NULL, *ctr = NULL,
          *size = NULL, *resp = NULL, *wts = NULL;
    int64_t *ids = NULL;
    npred_tuning_result *tr = NULL;
    char **labels = NULL;
    cJSON *res = NULL;
    npred_array ia = {0}, wa = {0};
    float pupil[2] = {0, 0}, *behavior = NULL;
    npred_status st = npred_model_open(&m, o.model, 0, 0, o.batch);
    if (st) {
        cli_fail(st, cmd);
        goto done;
    }
    const char *key = o.key;
    int si = cli_pick_session(cmd, m, &key);
    if (si < 0) {
        rc = 2;
        goto done;
    }
    int n = npred_model_session_neurons(m, si), C, H, W;
    npred_model_input_shape(m, &C, &H, &W);
    size_t per = (size_t)C * H * W;
    /* model inputs besides the image */
    if (npred_model_has_shifter(m)) {
        if (o.pupil) {
            if ((r = parse_floats(cmd, "pupil-center", o.pupil, pupil, 2))) {
                rc = r;
                goto done;
            }
        } else {
            fprintf(stderr, "npred %s: note: the model has a shifter; using the mean pupil position (0, 0) of the "
                            "normalised pupil centers (set --pupil-center X,Y)\n", cmd);
        }
    } else if (o.pupil) {
        rc = cli_usage_error(cmd, "--pupil-center given but the model has no shifter");
        goto done;
    }
    int k = npred_model_behavior_channels(m);
    if (k > 0) {
        if (!o.behavior) {
            rc = cli_usage_error(cmd, "the model has a modulator: pass --behavior with %d comma-separated values", k);
            goto done;
        }
        behavior = malloc(sizeof(float) * k);
        if (!behavior || (r = parse_floats(cmd, "behavior", o.behavior, behavior, k))) {
            rc = behavior ? r : 1;
            goto done;
        }
    } else if (o.behavior) {
        rc = cli_usage_error(cmd, "--behavior given but the model has no modulator");
        goto done;
    }
    /* neurons */
    if (o.weights) {
        if (!(wts = cli_read_npy_f32(o.weights, &wa, "weights", &st))) {
            cli_fail(st, cmd);
            goto done;
        }
        if (wa.count != (size_t)n) {
            fprintf(stderr, "npred %s: %s: %zu weights; session %s has %d neurons\n", cmd, o.weights, wa.count, key, n);
            goto done;
        }
    } else {
        const char *spec = o.neurons ? o.neurons : "all";
        if ((st = npred_parse_neurons(spec, n, &idx, &count)) ||
            (o.minus && (st = npred_parse_neurons(o.minus, n, &idx2, &count2)))) {
            fprintf(stderr, "npred %s: --%s: %s\n", cmd, idx ? "minus" : "neurons", npred_last_error());
            rc = 2;
            goto done;
        }
        for (int i = 0; i < count2; i++)
            for (int j = 0; j < count; j++)
                if (idx2[i] == idx[j]) {
                    rc = cli_usage_error(cmd, "neuron %d is in both --neurons and --minus", idx[j]);
                    goto done;
                }
    }
    if ((st = cli_mkdirs(o.out))) {
        cli_fail(st, cmd);
        goto done;
    }
    int said = 0;
    ids = find_unit_ids(&o, key, n, &said);
    if (said < 0) goto done;
    if (!ids && !o.quiet)
        fprintf(stderr, "npred %s: note: unit ids unknown (pass --data with the session's dataset); unit_id is null\n",
                cmd);
    progress pg = {cmd, o.quiet, isatty(STDERR_FILENO), -1};
    res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "session", key);
    if (npred_model_has_shifter(m)) {
        cJSON *pcj = cJSON_AddArrayToObject(res, "pupil_center");
        cJSON_AddItemToArray(pcj, cJSON_CreateNumber(pupil[0]));
        cJSON_AddItemToArray(pcj, cJSON_CreateNumber(pupil[1]));
    }
    cJSON *arr = cJSON_AddArrayToObject(res, "neurons");
    if (w == CMD_MEI) {
        npred_mei_config cfg;
        if (o.config) {
            char *txt = cli_read_text(o.config);
            st = txt ? npred_mei_config_parse(&cfg, txt, o.config) : NPRED_ERR_IO;
            free(txt);
            if (st) {
                cli_fail(st, cmd);
                goto done;
            }
        } else {
            npred_mei_config_default(&cfg);
        }
        if (o.iterations >= 0) cfg.num_iterations = o.iterations;
        if (o.has_seed) cfg.seed = (uint64_t)o.seed;
        int N = o.population || o.minus ? 1 : count;
        objective = calloc((size_t)N * n, sizeof(float));
        meis = malloc(sizeof(float) * per * N);
        act = malloc(sizeof(float) * N);
        trace = malloc(sizeof(float) * (size_t)npred_mei_max_steps(&cfg) * N);
        ctr = malloc(sizeof(float) * 2 * N);
        size = malloc(sizeof(float) * N);
        labels = calloc((size_t)N, sizeof *labels);
        if (!objective || !meis || !act || !trace || !ctr || !size || !labels) {
            fprintf(stderr, "npred %s: out of memory for %d images\n", cmd, N);
            goto done;
        }
        if (wts) memcpy(objective, wts, sizeof(float) * n);
        else if (o.population || o.minus) {
            for (int i = 0; i < count; i++) objective[idx[i]] = 1.0f / count;
            for (int i = 0; i < count2; i++) objective[idx2[i]] = -1.0f / count2;
        } else {
            for (int i = 0; i < count; i++) objective[(size_t)i * n + idx[i]] = 1.0f;
        }
        if (o.initial) {
            if (!(initial = cli_read_npy_f32(o.initial, &ia, "initial images", &st))) {
                cli_fail(st, cmd);
                goto done;
            }
            if (ia.count == per && N > 1) { /* one image for all */
                float *rep = realloc(initial, sizeof(float) * per * N);
                if (!rep) goto done;
                initial = rep;
                for (int i = 1; i < N; i++) memcpy(initial + per * i, initial, per * sizeof(float));
            } else if (!(ia.ndim == 4 && ia.shape[0] == N && ia.shape[1] == C && ia.shape[2] == H && ia.shape[3] == W) &&
                       !(ia.count == per && N == 1)) {
                fprintf(stderr, "npred %s: %s: initial images must be (%d, %d, %d, %d) or (%d, %d, %d)\n", cmd,
                        o.initial, N, C, H, W, C, H, W);
                goto done;
            }
        }
        int steps = 0;
        pg.what = "mei steps";
        st = npred_mei_optimize(m, key, &cfg, objective, N, initial, npred_model_has_shifter(m) ? pupil : NULL,
                                behavior, meis, act, trace, &steps, on_progress, &pg);
        if (st) {
            cli_fail(st, cmd);
            goto done;
        }
        float gray = 0;
        float *dev = malloc(sizeof(float) * per * N);
        if (dev) {
            for (size_t i = 0; i < per * N; i++) dev[i] = meis[i] - gray;
            npred_rf_stats(dev, N, C, H, W, ctr, size);
            free(dev);
        }
        int64_t s4[4] = {N, C, H, W}, s1[1] = {N}, s2[2] = {steps, N};
        if ((st = write_npy(o.out, "meis.npy", meis, 4, s4)) || (st = write_npy(o.out, "activations.npy", act, 1, s1)) ||
            (st = write_npy(o.out, "trace.npy", trace, 2, s2))) {
            cli_fail(st, cmd);
            goto done;
        }
        for (int i = 0; i < N; i++) {
            cJSON *e = cJSON_CreateObject();
            char lb[64];
            if (N == count && !o.population && !o.minus) {
                add_common(e, idx[i], ids);
                snprintf(lb, sizeof lb, "%d: %.3g", ids ? (int)ids[idx[i]] : idx[i], act[i]);
            } else {
                cJSON_AddStringToObject(e, "objective", o.weights ? "weights" : o.minus ? "difference" : "population");
                snprintf(lb, sizeof lb, "%s: %.3g", o.minus ? "a-b" : "population", act[i]);
            }
            labels[i] = strdup(lb);
            cJSON_AddNumberToObject(e, "activation", act[i]);
            cJSON_AddNumberToObject(e, "x", ctr[2 * i]);
            cJSON_AddNumberToObject(e, "y", ctr[2 * i + 1]);
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddNumberToObject(res, "steps", steps);
        char png[4096];
        snprintf(png, sizeof png, "%s/meis.png", o.out);
        if ((st = npred_insilico_png_grid(png, "MEIs (label: neuron or unit id: objective)", meis, N, C, H, W, gray,
                                          (const char *const *)labels, ctr))) {
            cli_fail(st, cmd);
            goto done;
        }
    } else if (w == CMD_RF) {
        maps = malloc(sizeof(float) * per * count);
        ctr = malloc(sizeof(float) * 2 * count);
        size = malloc(sizeof(float) * count);
        labels = calloc((size_t)count, sizeof *labels);
        if (!maps || !ctr || !size || !labels) {
            fprintf(stderr, "npred %s: out of memory\n", cmd);
            goto done;
        }
        pg.what = "rf neurons";
        st = npred_rf_gradient(m, key, idx, count, (float)o.gray, npred_model_has_shifter(m) ? pupil : NULL, behavior,
                               maps, on_progress, &pg);
        if (st) {
            cli_fail(st, cmd);
            goto done;
        }
        npred_rf_stats(maps, count, C, H, W, ctr, size);
        int64_t s4[4] = {count, C, H, W};
        if ((st = write_npy(o.out, "rf.npy", maps, 4, s4))) {
            cli_fail(st, cmd);
            goto done;
        }
        for (int i = 0; i < count; i++) {
            cJSON *e = cJSON_CreateObject();
            add_common(e, idx[i], ids);
            cJSON_AddNumberToObject(e, "x", ctr[2 * i]);
            cJSON_AddNumberToObject(e, "y", ctr[2 * i + 1]);
            cJSON_AddNumberToObject(e, "size", size[i]);
            cJSON_AddItemToArray(arr, e);
            char lb[32];
            snprintf(lb, sizeof lb, "%d", ids ? (int)ids[idx[i]] : idx[i]);
            labels[i] = strdup(lb);
        }
        char png[4096];
        snprintf(png, sizeof png, "%s/rf.png", o.out);
        if ((st = write_json(o.out, "rf.json", res)) ||
            (st = npred_insilico_png_grid(png, "gradient RFs at gray (label: neuron or unit id; circle: centre)", maps,
                                          count, C, H, W, 0.0f, (const char *const *)labels, ctr))) {
            cli_fail(st, cmd);
            goto done;
        }
    } else {
        npred_tuning_config cfg;
        npred_tuning_config_default(&cfg);
        if (o.n_ori) cfg.n_ori = o.n_ori;
        if (o.n_sf) cfg.n_sf = o.n_sf;
        if (o.n_phase) cfg.n_phase = o.n_phase;
        if (o.has_sf_min) cfg.sf_min = o.sf_min;
        if (o.has_sf_max) cfg.sf_max = o.sf_max;
        if (o.has_contrast) cfg.contrast = (float)o.contrast;
        if (o.has_gray) cfg.gray = (float)o.gray;
        int G = cfg.n_ori * cfg.n_sf * cfg.n_phase;
        tr = malloc(sizeof *tr * count);
        resp = malloc(sizeof(float) * (size_t)G * count);
        labels = calloc((size_t)count, sizeof *labels);
        if (!tr || !resp || !labels) {
            fprintf(stderr, "npred %s: out of memory\n", cmd);
            goto done;
        }
        pg.what = "gratings";
        st = npred_tuning_run(m, key, &cfg, idx, count, npred_model_has_shifter(m) ? pupil : NULL, behavior, tr, resp,
                              on_progress, &pg);
        if (st) {
            cli_fail(st, cmd);
            goto done;
        }
        for (int i = 0; i < count; i++) {
            cJSON *e = cJSON_CreateObject();
            add_common(e, idx[i], ids);
            cJSON_AddNumberToObject(e, "orientation", tr[i].orientation);
            cJSON_AddNumberToObject(e, "spatial_frequency", tr[i].spatial_frequency);
            cJSON_AddNumberToObject(e, "osi", tr[i].osi);
            cJSON_AddNumberToObject(e, "f1_f0", tr[i].f1_f0);
            cJSON_AddNumberToObject(e, "peak_rate", tr[i].peak_rate);
            cJSON_AddItemToArray(arr, e);
            char lb[32];
            snprintf(lb, sizeof lb, "%s %d", ids ? "unit" : "neuron", ids ? (int)ids[idx[i]] : idx[i]);
            labels[i] = strdup(lb);
        }
        cJSON *g = cJSON_AddObjectToObject(res, "gratings");
        cJSON_AddNumberToObject(g, "orientations", cfg.n_ori);
        cJSON_AddNumberToObject(g, "spatial_frequencies", cfg.n_sf);
        cJSON_AddNumberToObject(g, "phases", cfg.n_phase);
        cJSON_AddNumberToObject(g, "sf_min", cfg.sf_min);
        cJSON_AddNumberToObject(g, "sf_max", cfg.sf_max);
        cJSON_AddNumberToObject(g, "contrast", cfg.contrast);
        cJSON_AddNumberToObject(g, "gray", cfg.gray);
        /* responses (G, count) -> (n_ori, n_sf, n_phase, count) is the same memory */
        int64_t s4[4] = {cfg.n_ori, cfg.n_sf, cfg.n_phase, count};
        char png[4096];
        snprintf(png, sizeof png, "%s/tuning.png", o.out);
        if ((st = write_json(o.out, "tuning.json", res)) || (st = write_npy(o.out, "tuning_responses.npy", resp, 4, s4)) ||
            (st = npred_tuning_png(png, &cfg, resp, count, tr, (const char *const *)labels))) {
            cli_fail(st, cmd);
            goto done;
        }
    }
    if (o.json) {
        char *txt = cJSON_Print(res);
        if (txt) printf("%s\n", txt);
        free(txt);
    } else if (!o.quiet) {
        fprintf(stderr, "npred %s: wrote %s\n", cmd, o.out);
    }
    rc = 0;
done:
    if (labels) {
        int nl = w == CMD_MEI ? (o.population || o.minus ? 1 : count) : count;
        for (int i = 0; i < nl; i++) free(labels[i]);
    }
    free(labels);
    cJSON_Delete(res);
    free(idx);
    free(idx2);
    free(objective);
    free(initial);
    free(meis);
    free(act);
    free(trace);
    free(maps);
    free(ctr);
    free(size);
    free(resp);
    free(wts);
    free(ids);
    free(tr);
    free(behavior);
    npred_array_free(&ia);
    npred_array_free(&wa);
    npred_model_free(m);
    return rc;
}

int cmd_mei(int argc, char **argv) { return run(CMD_MEI, argc, argv); }
int cmd_rf(int argc, char **argv) { return run(CMD_RF, argc, argv); }
int cmd_tuning(int argc, char **argv) { return run(CMD_TUNING, argc, argv); }
