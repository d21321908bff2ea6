/* npred predict --video: eval-mode rates of a video model for whole trials of a
 * SENSORIUM 2023 movie scan (docs/video.md). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "cli_video_eval.h"
#include "npred/npy.h"
#include "npred/video.h"
#include "npred/video_model.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred predict --video --model RUN --data SCAN (--tier TIER | --trials I...) --out OUT\n"
            "                     [--session KEY] [--dataset FILE.json]\n\n"
            "Eval-mode rates of a video model (npred_video_model_save) for whole trials of a\n"
            "SENSORIUM 2023 movie scan (folder or .zip), each trial through the model's data\n"
            "pipeline (the mouse_video_loader arguments recorded in the model, then --dataset's)\n"
            "with whole trials (to_cut false). A trial of T frames gives T' = T - cutoff output frames\n"
            "(npred info RUN); output frame t belongs to the trial's frame t + cutoff. Rates are\n"
            "in the units the model was trained on (normalised responses). Files are written\n"
            "atomically.\n\n"
            "options:\n"
            "  --model RUN       run directory or .safetensors of a video model\n"
            "  --data SCAN       the scan (folder or .zip) [the one of --dataset's \"paths\"]\n"
            "  --tier TIER       every trial of this tier (as in meta/trials/tiers, e.g. oracle,\n"
            "                    live_test_main, final_test_main), ascending\n"
            "  --trials I...     these trials, in this order\n"
            "  --session KEY     the model's session for the scan [the scan's data key]\n"
            "  --dataset FILE    mouse_video_loader arguments as JSON, over the model's record (as\n"
            "                    npred eval); its \"paths\" (one scan) serve when --data is not given\n"
            "                    and must name --data's scan when it is; to_cut is set false and\n"
            "                    batch_size 1\n"
            "  --out OUT.npy     one float32 array (N, T', n) (every trial must give the same T')\n"
            "                    and OUT.trials.npy (N,) int64, the trial of each row\n"
            "  --out DIR/        (a directory, created) DIR/<trial>.npy (T', n) float32 per trial\n"
            "                    and DIR/trials.npy (N,) int64\n"
            "  -h, --help        this help\n");
}

static npred_status write_f32(const char *path, int ndim, const int64_t *shape, const float *v)
{
    npred_array a;
    npred_status st = npred_array_alloc(&a, NPRED_DT_F32, 4, ndim, shape);
    if (st) return st;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    memcpy(a.data, v, n * sizeof(float));
    st = npred_npy_write(path, &a);
    npred_array_free(&a);
    return st;
}

static npred_status write_i64(const char *path, const int64_t *v, int64_t n)
{
    npred_array a;
    npred_status st = npred_array_alloc(&a, NPRED_DT_I64, 8, 1, &n);
    if (st) return st;
    memcpy(a.data, v, (size_t)n * sizeof(int64_t));
    st = npred_npy_write(path, &a);
    npred_array_free(&a);
    return st;
}

/* the trials: --tier's (ascending) or --trials as given */
static int pick_trials(const npred_video_loaders *L, const char *tier, const cli_list *trials, int64_t **out, int64_t *n)
{
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    npred_video_dataset_info di;
    npred_video_dataset_get_info(si.dataset, &di);
    if (tier) {
        int t = npred_video_loaders_tier(L, 0, tier);
        if (t < 0) {
            fprintf(stderr, "npred predict: --tier %s: the scan %s has no such tier (tiers with trials:", tier, di.path);
            for (size_t i = 0; i < si.n_tiers; i++) fprintf(stderr, " %s", si.tier_names[i]);
            fprintf(stderr, ")\n");
            return 2;
        }
        *n = si.tier_n[t];
        *out = malloc(sizeof(int64_t) * (size_t)(*n ? *n : 1));
        if (!*out) return cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "predict");
        memcpy(*out, si.tier_idx[t], sizeof(int64_t) * (size_t)*n);
        return 0;
    }
    *n = trials->n;
    *out = malloc(sizeof(int64_t) * (size_t)(*n ? *n : 1));
    if (!*out) return cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "predict");
    for (int i = 0; i < trials->n; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(trials->v[i], &end, 10);
        if (errno || end == trials->v[i] || *end || v < 0 || v >= di.n_trials) {
            fprintf(stderr, "npred predict: --trials: '%s' is not a trial of %s (0..%lld)\n", trials->v[i], di.path,
                    (long long)di.n_trials - 1);
            return 2;
        }
        (*out)[i] = v;
    }
    return 0;
}

static int run(const char *model, const char *data, const char *tier, const cli_list *trials, const char *key,
               const char *dataset, const char *out)
{
    npred_video_model *m = NULL;
    npred_video_loaders *L = NULL;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    char *scan = NULL;
    int64_t *idx = NULL, n_trials = 0;
    float *rates = NULL, *all = NULL;
    int64_t *frames = NULL;
    int rc = 1, dir = !cli_ends_with(out, ".npy");
    npred_status st = npred_video_model_load(&m, model, 1);
    if (st) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((rc = cli_video_open_loaders("predict", m, dataset, data ? &data : NULL, data ? 1 : 0, 1, &L, &scan)))
        goto done;
    rc = 1;
    data = scan;
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    if (!key) key = si.data_key;
    int s = npred_video_model_session_index(m, key);
    if (s < 0) {
        fprintf(stderr, "npred predict: the model %s has no session '%s' (it has:", model, key);
        for (int i = 0; i < npred_video_model_n_sessions(m); i++)
            fprintf(stderr, " %s", npred_video_model_session_key(m, i));
        fprintf(stderr, "); name it with --session KEY\n");
        rc = 2;
        goto done;
    }
    int C, H, W, n = npred_video_model_session_neurons(m, s);
    npred_video_model_input_shape(m, &C, &H, &W);
    if (si.channels != C || si.height != H || si.width != W) {
        fprintf(stderr, "npred predict: %s through the loader gives videos of %d channels, %dx%d frames; the model takes "
                        "%d channels, %dx%d (check the loader's include_behavior, "
                        "include_pupil_centers_as_channels and scale)\n",
                data, si.channels, si.height, si.width, C, H, W);
        goto done;
    }
    if (si.n_neurons != n) {
        fprintf(stderr, "npred predict: %s has %lld neurons; session %s of the model has %d\n", data,
                (long long)si.n_neurons, key, n);
        goto done;
    }
    if (npred_video_model_has_shifter(m) && si.pupil_dim != 2) {
        fprintf(stderr, "npred predict: the model has a shifter but the loader gives no pupil_center (the scan has "
                        "no data/pupil_center, or include_pupil_centers is false)\n");
        goto done;
    }
    if ((rc = pick_trials(L, tier, trials, &idx, &n_trials))) goto done;
    rc = 1;
    if (n_trials < 1) {
        fprintf(stderr, "npred predict: no trials selected\n");
        goto done;
    }
    if ((st = npred_video_batch_init(&b, L, 1))) {
        cli_fail(st, "predict");
        goto done;
    }
    if (dir && (st = cli_mkdirs(out))) {
        cli_fail(st, "predict");
        goto done;
    }
    frames = calloc((size_t)n_trials, sizeof *frames);
    if (!frames) goto nomem;
    int T1 = 0;
    for (int64_t i = 0; i < n_trials; i++) {
        if ((st = npred_video_loaders_get(L, 0, &idx[i], NULL, 1, NULL, &b))) {
            cli_fail(st, "predict");
            goto done;
        }
        int t1 = npred_video_model_output_frames(m, b.f);
        if (t1 < 1) {
            fprintf(stderr, "npred predict: %s trial %lld: %d frames; the model needs more than %d\n", data,
                    (long long)idx[i], b.f, npred_video_model_temporal_cutoff(m));
            goto done;
        }
        if (!dir && i && t1 != T1) {
            fprintf(stderr, "npred predict: %s: trial %lld gives %d output frames, trial %lld %d: one .npy needs equal "
                            "lengths; write a directory (--out DIR/)\n",
                    data, (long long)idx[0], T1, (long long)idx[i], t1);
            goto done;
        }
        T1 = t1;
        frames[i] = t1;
        float *r = realloc(rates, sizeof(float) * (size_t)t1 * n);
        if (!r) goto nomem;
        rates = r;
        if ((st = npred_video_model_predict(m, key, b.videos, 1, b.c, b.f, b.h, b.w, b.pupil_center, rates))) {
            cli_fail(npred_error_prefix(st, "%s trial %lld", data, (long long)idx[i]), "predict");
            goto done;
        }
        if (dir) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%lld.npy", out, (long long)idx[i]);
            if ((st = write_f32(p, 2, (const int64_t[]){t1, n}, rates))) {
                cli_fail(st, "predict");
                goto done;
            }
        } else {
            if (!all && !(all = malloc(sizeof(float) * (size_t)n_trials * t1 * n))) goto nomem;
            memcpy(all + (size_t)i * t1 * n, rates, sizeof(float) * (size_t)t1 * n);
        }
    }
    char p[4096];
    if (dir) snprintf(p, sizeof p, "%s/trials.npy", out);
    else snprintf(p, sizeof p, "%.*s.trials.npy", (int)(strlen(out) - 4), out);
    if ((!dir && (st = write_f32(out, 3, (const int64_t[]){n_trials, T1, n}, all))) || (st = write_i64(p, idx, n_trials))) {
        cli_fail(st, "predict");
        goto done;
    }
    printf("%lld trials of %s, session %s, %d neurons, cut-off %d frames -> %s\n", (long long)n_trials, data, key, n,
           npred_video_model_temporal_cutoff(m), out);
    rc = 0;
    goto done;
nomem:
    cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "predict");
done:
    npred_video_batch_free(&b);
    npred_video_loaders_free(L);
    free(scan);
    npred_video_model_free(m);
    free(idx), free(rates), free(all), free(frames);
    return rc;
}

int cmd_predict_video(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *tier = NULL, *key = NULL, *dataset = NULL, *loader = NULL, *out = NULL;
    int video = 0;
    cli_list trials = {0};
    const cli_opt opts[] = {{"video", CLI_FLAG, &video, 0, 0},   {"model", CLI_STR, &model, 0, 0},
                            {"data", CLI_STR, &data, 0, 0},      {"tier", CLI_STR, &tier, 0, 0},
                            {"trials", CLI_LIST, &trials, 0, 0}, {"session", CLI_STR, &key, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0}, {"out", CLI_STR, &out, 0, 0},
                            {"loader", CLI_STR, &loader, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"predict", help, opts, NULL};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (loader) r = cli_usage_error("predict", "--video: --loader is now --dataset FILE.json (as npred eval and "
                                    "npred predict --submission take the loader arguments)");
    else if (!model) r = cli_usage_error("predict", "--video: missing --model RUN");
    else if (!data && !dataset) r = cli_usage_error("predict", "--video: missing --data SCAN");
    else if (!out) r = cli_usage_error("predict", "--video: missing --out FILE.npy or DIR/");
    else if (!tier == !trials.n) r = cli_usage_error("predict", "--video: give --tier TIER or --trials I... (one of them)");
    else r = run(model, data, tier, &trials, key, dataset, out);
    free(trials.v);
    return r;
}
