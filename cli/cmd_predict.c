/* npred predict: eval-mode firing rates of a model for images in an .npy file. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "cli_video_eval.h"
#include "npred/npy.h"
#include "npred/preprocess.h"
#include "npred/results.h"
#include "npred/video_model.h"
#include "raw_images.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred predict --model MODEL --images IMAGES.npy --session KEY --out PRED.npy [options]\n"
            "       npred predict --model MODEL --raw IMAGES... [--session KEY] --out RATES.csv|.npy|-\n"
            "       npred predict --model MODEL --data SCAN --tier test|final_test --submission OUT.csv\n"
            "                     [--ground-truth TRUTH.csv] [--dataset FILE] [--batch N]\n"
            "       npred predict --video --model RUN --data SCAN (--tier T | --trials I...) --out OUT\n"
            "                     (video models; npred predict --video --help)\n\n"
            "Eval-mode firing rates (B, n) float32 of session KEY's neurons for images (B, C, H, W)\n"
            "(or (B, H, W) for one channel) of any numeric dtype, with the model's input size.\n"
            "Images must be preprocessed as in training (normalized, scaled). PRED.npy is written\n"
            "atomically.\n\n"
            "options:\n"
            "  --model MODEL         run directory, .safetensors, or .pth (imported on the fly)\n"
            "  --images FILE         images (B, C, H, W) or (B, H, W)\n"
            "  --session KEY         data_key of the readout (optional for a one-session model)\n"
            "  --pupil-center FILE   (B, 2) eye positions, required by models with a shifter\n"
            "  --behavior FILE       (B, k) behavior, required by models with a modulator\n"
            "  --out FILE            output .npy (B, n) float32\n"
            "  --batch N             images per forward pass [64]\n"
            "  --precision P         fp32 (default, exact) or bf16: the core's GEMM convolutions in\n"
            "                        bfloat16 with fp32 accumulation (AVX-512 BF16 CPUs; docs/precision.md)\n\n"
            "Raw stimuli (docs/results.md): images at the dataset's original resolution, through\n"
            "exactly the loader's transforms (normalisation, behaviour/pupil channels, rescale) as\n"
            "recorded in the model file; rates come out in the data's response units.\n"
            "  --raw IMAGES...       one .npy ((B, C, H, W), (B, H, W) or (H, W); uint8 or float),\n"
            "                        .png files, or folders of .png files (sorted by name)\n"
            "  --behavior, --pupil-center FILE   raw (B, k) / (B, 2) values when the model needs them\n"
            "  --stats SCAN          take the preprocessing from this SENSORIUM scan (for a model\n"
            "                        that records none, e.g. a .pth)\n"
            "  --out FILE            .csv: rows stimulus,unit_id,rate ('-': standard output);\n"
            "                        .npy: (B, n) float32 plus FILE's .unit_ids.npy (n,) int64\n\n"
            "SENSORIUM submissions (as the kit's generate_submission_file; docs/results.md):\n"
            "  --data SCAN           the scan (folder or .zip), loaded as npred eval loads it\n"
            "  --dataset FILE        static_loaders arguments as JSON (as npred eval)\n"
            "  --tier TIER           test (the kit's live_test) or final_test\n"
            "  --submission FILE     columns trial_indices,image_ids,prediction,neuron_ids; '-' for\n"
            "                        standard output\n"
            "  --ground-truth FILE   also the kit's ground-truth file of the tier (normalized responses)\n"
            "  -h, --help            this help\n\n"
            "A video model (SENSORIUM 2023): --data SCAN... (one or more movie scans) --tier TIER\n"
            "(live_test_main, final_test_main, live_test_bonus, final_test_bonus, ...) --submission\n"
            "FILE writes the 2023 kit's Parquet file (brotli): one row per trial of the tier, columns\n"
            "mouse, trial_indices, prediction (neurons x frames from 50 on), neuron_ids; whole\n"
            "trials, the loader arguments the model records or --dataset's (docs/results.md).\n");
}


/* --precision: every mode opens its model through open_model */
static npred_precision g_precision = NPRED_PRECISION_FP32;

static npred_status open_model(npred_model **m, const char *model, int batch)
{
    npred_status st = npred_model_open(m, model, 0, 0, batch);
    if (!st && (st = npred_model_set_precision(*m, g_precision))) {
        npred_model_free(*m);
        *m = NULL;
    }
    return st;
}

static void shape_str(const npred_array *a, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < a->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)a->shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* rates (B, n) of raw stimuli as CSV (stimulus,unit_id,rate) or .npy + .unit_ids.npy */
static npred_status write_rates(const char *out, const raw_images *r, const float *rates, const int64_t *ids, int n)
{
    if (cli_ends_with(out, ".npy")) {
        npred_array a, u;
        int64_t sh[2] = {r->B, n}, su[1] = {n};
        npred_status st = npred_array_alloc(&a, NPRED_DT_F32, 4, 2, sh);
        if (st) return st;
        memcpy(a.data, rates, sizeof(float) * (size_t)r->B * n);
        st = npred_npy_write(out, &a);
        npred_array_free(&a);
        if (st || (st = npred_array_alloc(&u, NPRED_DT_I64, 8, 1, su))) return st;
        memcpy(u.data, ids, sizeof(int64_t) * (size_t)n);
        char p[4096];
        snprintf(p, sizeof p, "%.*s.unit_ids.npy", (int)(strlen(out) - 4), out);
        st = npred_npy_write(p, &u);
        npred_array_free(&u);
        return st;
    }
    size_t cap = 64 + (size_t)r->B * n * 48, k = 0;
    for (int b = 0; b < r->B; b++) cap += strlen(r->names[b]) * (size_t)n;
    char *buf = malloc(cap);
    if (!buf) return npred_errorf(NPRED_ERR_NOMEM, "out of memory for the CSV");
    k += (size_t)snprintf(buf, cap, "stimulus,unit_id,rate\n");
    for (int b = 0; b < r->B; b++)
        for (int j = 0; j < n; j++)
            k += (size_t)snprintf(buf + k, cap - k, "%s,%lld,%.9g\n", r->names[b], (long long)ids[j],
                                  rates[(size_t)b * n + j]);
    npred_status st = cli_write_output(out, buf, k);
    free(buf);
    return st;
}

/* raw (B, k) values of an .npy as float32, checked */
static float *read_side(const char *path, int B, int k, const char *what, npred_status *st)
{
    npred_array a;
    float *v = cli_read_npy_f32(path, &a, what, st);
    if (!v) return NULL;
    if (a.ndim != 2 || a.shape[0] != B || a.shape[1] != k) {
        char got[128];
        shape_str(&a, got, sizeof got);
        *st = npred_errorf(NPRED_ERR_SHAPE, "%s: %s has shape %s; expected (%d, %d)", path, what, got, B, k);
        free(v);
        v = NULL;
    }
    npred_array_free(&a);
    return v;
}

/* The per-image side input of option opt (--behavior, --pupil-center): k values per image,
 * required when the session has k > 0 of them (holds: what they are, e.g. "raw behaviour"),
 * an error when given for a session with none. Returns 0 (*out read, or NULL when k is 0)
 * or the exit code of the error it reported. */
static int side_input(const char *path, const char *opt, const char *what, const char *holds, const char *key, int B,
                      int k, float **out)
{
    npred_status st;
    *out = NULL;
    if (!k) return path ? cli_usage_error("predict", "%s: session %s uses no %s", opt, key, holds) : 0;
    if (!path) {
        fprintf(stderr, "npred predict: session %s needs %s FILE (%d, %d): %s per image\n", key, opt, B, k, holds);
        return 2;
    }
    if (!(*out = read_side(path, B, k, what, &st))) return cli_fail(st, "predict");
    return 0;
}

static int predict_raw(const char *model, const char *key, const char *const *paths, int n_paths, const char *behav,
                       const char *pupil, const char *stats, const char *out, int batch)
{
    npred_model *m = NULL;
    raw_images r;
    memset(&r, 0, sizeof r);
    float *beh = NULL, *pc = NULL, *rates = NULL;
    int rc = 1, c, h, w, bd, pd;
    npred_status st = open_model(&m, model, batch);
    if (st) {
        cli_fail(st, "predict");
        goto done;
    }
    if (stats) {
        npred_loader_config lc;
        npred_loaders *L = NULL;
        const char *sp[1] = {stats};
        rc = cli_open_loaders("predict", m, NULL, sp, 1, batch, 1, &lc, &L);
        if (!rc && (st = npred_model_record_preprocessing(m, L))) rc = cli_fail(st, "predict --stats");
        npred_loaders_free(L);
        npred_loader_config_free(&lc);
        if (rc) goto done;
        rc = 1;
    }
    if (cli_pick_session("predict", m, &key) < 0) {
        if (!key) rc = 2; /* several sessions and none chosen: a usage error */
        goto done;
    }
    if ((st = npred_model_raw_inputs(m, key, &c, &h, &w, &bd, &pd))) {
        cli_fail(st, "predict --raw");
        goto done;
    }
    if ((st = raw_images_read(&r, paths, n_paths))) {
        cli_fail(st, "predict --raw");
        goto done;
    }
    if (r.c != c || r.h != h || r.w != w) {
        fprintf(stderr, "npred predict: %s: the images are %d x %d with %d channel(s); session %s expects raw images of "
                "%d x %d with %d channel(s), the dataset's original resolution (B, %d, %d, %d)\n", paths[0], r.h, r.w,
                r.c, key, h, w, c, c, h, w);
        goto done;
    }
    for (size_t i = 0; i < (size_t)r.B * c * h * w; i++)
        if (!isfinite(r.data[i])) {
            fprintf(stderr, "npred predict: %s: image %s holds a non-finite value\n", paths[0], r.names[i / ((size_t)c * h * w)]);
            goto done;
        }
    if ((rc = side_input(behav, "--behavior", "behavior", "raw behaviour", key, r.B, bd, &beh)) ||
        (rc = side_input(pupil, "--pupil-center", "pupil centers", "raw eye position", key, r.B, pd, &pc))) goto done;
    rc = 1;
    const int64_t *ids;
    int n;
    if ((st = npred_model_unit_ids(m, key, &ids, &n))) {
        cli_fail(st, "predict");
        goto done;
    }
    if (!(rates = malloc(sizeof(float) * (size_t)r.B * n))) {
        cli_fail(npred_errorf(NPRED_ERR_NOMEM, "out of memory"), "predict");
        goto done;
    }
    if ((st = npred_model_predict_raw(m, key, r.data, r.B, beh, pc, rates, NULL)) || (st = write_rates(out, &r, rates, ids, n))) {
        cli_fail(st, "predict --raw");
        goto done;
    }
    rc = 0;
done:
    free(beh), free(pc), free(rates);
    raw_images_free(&r);
    npred_model_free(m);
    return rc;
}

/* The kit's submission (and ground-truth) files of one scan's tier. */
static int submit(const char *model, const char *key, const char *data, const char *dataset, const char *tier_name,
                  const char *submission, const char *truth, int batch)
{
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier) || (tier != NPRED_TIER_TEST && tier != NPRED_TIER_FINAL_TEST))
        return cli_usage_error("predict", "--tier: '%s': a submission is for tier test or final_test", tier_name);
    if (submission && truth && !strcmp(submission, "-") && !strcmp(truth, "-"))
        return cli_usage_error("predict", "--submission and --ground-truth can not both be '-'");
    int quiet = (submission && !strcmp(submission, "-")) || (truth && !strcmp(truth, "-"));
    npred_model *m = NULL;
    npred_loaders *L = NULL;
    npred_loader_config cfg;
    npred_loader_config_init(&cfg);
    char *csv = NULL;
    int rc = 1;
    npred_status st = open_model(&m, model, batch);
    if (st) {
        cli_fail(st, "predict");
        goto done;
    }
    npred_loader_config_free(&cfg);
    const char *paths[1] = {data};
    if ((rc = cli_open_loaders("predict", m, dataset, data ? paths : NULL, data ? 1 : 0, batch, quiet, &cfg, &L)))
        goto done;
    rc = 1;
    if (npred_loaders_count(L) != 1) {
        fprintf(stderr, "npred predict: a submission file is for one scan; the dataset config lists %zu\n",
                npred_loaders_count(L));
        rc = 2;
        goto done;
    }
    npred_session_info si;
    npred_loaders_session(L, 0, &si);
    if (key && strcmp(key, si.data_key)) {
        fprintf(stderr, "npred predict: --session %s, but the scan is session %s\n", key, si.data_key);
        goto done;
    }
    const char *files[2] = {submission, truth};
    for (int k = 0; k < 2; k++) {
        if (!files[k]) continue;
        if ((st = npred_submission_csv(&csv, k ? NULL : m, L, 0, tier)) ||
            (st = cli_write_output(files[k], csv, strlen(csv)))) {
            cli_fail(st, k ? "predict --ground-truth" : "predict --submission");
            goto done;
        }
        free(csv);
        csv = NULL;
        if (!quiet)
            printf("%s: %s, tier %s (%lld trials, %lld neurons)\n", k ? "ground truth" : "submission", files[k],
                   tier == NPRED_TIER_TEST ? "live_test" : "final_test", (long long)si.tier_n[tier],
                   (long long)si.n_neurons);
    }
    rc = 0;
done:
    free(csv);
    npred_loaders_free(L);
    npred_loader_config_free(&cfg);
    npred_model_free(m);
    return rc;
}

static int predict_main(const char *model, const char *images, const char *key, const char *pupil, const char *behav,
                        const char *out, const char *data, const char *dataset, const char *tier, const char *submission,
                        const char *truth, const char **raw, int n_raw, const char *stats, int batch);

/* --submission with a video model: the 2023 Parquet file; the options of the other modes are errors */
static int video_submit(const char *model, const char *key, const char *pupil, const char *behav, const char *out,
                        const char *images, cli_list datas, const char *dataset, const char *tier,
                        const char *submission, const char *truth, const char *stats, int batch)
{
    if (truth) return cli_usage_error("predict", "--ground-truth: the 2023 kit has no ground-truth file");
    if (key || pupil || behav || out || images || stats)
        return cli_usage_error("predict", "a video model's submission takes --data, --dataset, --tier and --submission only");
    if (batch) return cli_usage_error("predict", "--batch: a video model predicts one whole trial at a time");
    if (!submission) return cli_usage_error("predict", "--data/--tier: missing --submission FILE");
    if (!tier) return cli_usage_error("predict", "--submission: missing --tier (e.g. live_test_main)");
    return cli_video_submit(model, dataset, datas.v, (size_t)datas.n, tier, submission);
}

int cmd_predict(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--video")) return cmd_predict_video(argc, argv);
    const char *model = NULL, *images = NULL, *key = NULL, *pupil = NULL, *behav = NULL, *out = NULL;
    const char *dataset = NULL, *tier = NULL, *submission = NULL, *truth = NULL, *stats = NULL, *precision = NULL;
    int batch = 0;
    cli_list raws = {0}, datas = {0};
    const cli_opt opts[] = {{"model", CLI_STR, &model, 0, 0},         {"images", CLI_STR, &images, 0, 0},
                            {"session", CLI_STR, &key, 0, 0},         {"pupil-center", CLI_STR, &pupil, 0, 0},
                            {"behavior", CLI_STR, &behav, 0, 0},      {"out", CLI_STR, &out, 0, 0},
                            {"batch", CLI_INT, &batch, 1, INT_MAX},   {"data", CLI_LIST, &datas, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0},     {"tier", CLI_STR, &tier, 0, 0},
                            {"submission", CLI_STR, &submission, 0, 0}, {"ground-truth", CLI_STR, &truth, 0, 0},
                            {"raw", CLI_LIST, &raws, 0, 0},           {"stats", CLI_STR, &stats, 0, 0},
                            {"precision", CLI_STR, &precision, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"predict", help, opts, NULL};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    if (precision && npred_precision_parse(precision, &g_precision)) {
        free(raws.v), free(datas.v);
        return cli_usage_error("predict", "--precision %s: expected fp32 or bf16", precision);
    }
    if (model && (submission || truth || datas.n || dataset || tier) && !raws.n && npred_video_model_probe(model)) {
        r = precision ? cli_usage_error("predict", "--precision: a video model runs in fp32 only")
                      : video_submit(model, key, pupil, behav, out, images, datas, dataset, tier, submission, truth,
                                     stats, batch);
        free(datas.v), free(raws.v);
        return r;
    }
    if (!batch) batch = 64;
    const char *data = datas.n ? datas.v[0] : NULL;
    int n_datas = datas.n;
    free(datas.v);
    if (n_datas > 1) return free(raws.v), cli_usage_error("predict", "--data: one scan per submission file");
    r = predict_main(model, images, key, pupil, behav, out, data, dataset, tier, submission, truth, raws.v, raws.n, stats,
                     batch);
    free(raws.v);
    return r;
}

static int predict_main(const char *model, const char *images, const char *key, const char *pupil, const char *behav,
                        const char *out, const char *data, const char *dataset, const char *tier, const char *submission,
                        const char *truth, const char **raw, int n_raw, const char *stats, int batch)
{
    if (!model) return cli_usage_error("predict", "missing --model");
    if (n_raw) {
        if (images || submission || truth || data || dataset || tier)
            return cli_usage_error("predict", "--raw does not go with --images, --submission, --ground-truth, --data, "
                                              "--dataset or --tier");
        if (!out) return cli_usage_error("predict", "missing --out FILE (.csv, .npy or -)");
        if (strcmp(out, "-") && !cli_ends_with(out, ".csv") && !cli_ends_with(out, ".npy"))
            return cli_usage_error("predict", "--out %s: write .csv, .npy or - (standard output, CSV)", out);
        return predict_raw(model, key, raw, n_raw, behav, pupil, stats, out, batch);
    }
    if (stats) return cli_usage_error("predict", "--stats goes with --raw");
    if (submission || truth || data || dataset || tier) {
        if (images || out || pupil || behav)
            return cli_usage_error("predict", "--images/--out/--pupil-center/--behavior and --submission/--ground-truth "
                                              "are different modes");
        if (!submission && !truth) return cli_usage_error("predict", "--data/--tier: missing --submission FILE");
        if (!tier) return cli_usage_error("predict", "--submission: missing --tier test|final_test");
        return submit(model, key, data, dataset, tier, submission, truth, batch);
    }
    if (!images) return cli_usage_error("predict", "missing --images");
    if (!out) return cli_usage_error("predict", "missing --out");

    npred_model *m = NULL;
    npred_array ia = {0}, pa = {0}, ba = {0}, oa = {0};
    float *img = NULL, *pc = NULL, *beh = NULL;
    int rc = 1;
    npred_status st = open_model(&m, model, batch);
    if (st) {
        cli_fail(st, "predict");
        goto done;
    }
    int si = cli_pick_session("predict", m, &key);
    if (si < 0) {
        if (!key) rc = 2; /* several sessions and none chosen: a usage error */
        goto done;
    }
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    npred_status rst = NPRED_OK;
    if (!(img = cli_read_npy_f32(images, &ia, "images", &rst))) {
        cli_fail(rst, "predict");
        goto done;
    }
    char got[128];
    shape_str(&ia, got, sizeof got);
    int ok = (ia.ndim == 4 && ia.shape[1] == c && ia.shape[2] == h && ia.shape[3] == w) ||
             (ia.ndim == 3 && c == 1 && ia.shape[1] == h && ia.shape[2] == w);
    if (!ok || ia.shape[0] < 1 || ia.shape[0] > 0x7fffffff) {
        fprintf(stderr, "npred predict: %s: images have shape %s; the model expects (B, %d, %d, %d)%s\n", images, got, c,
                h, w, c == 1 ? " or (B, H, W)" : "");
        goto done;
    }
    int B = (int)ia.shape[0];
    if (npred_model_has_shifter(m)) {
        if (!pupil) {
            fprintf(stderr, "npred predict: the model has a shifter: pass --pupil-center FILE (B, 2)\n");
            rc = 2;
            goto done;
        }
        if (!(pc = cli_read_npy_f32(pupil, &pa, "pupil centers", &rst))) {
            cli_fail(rst, "predict");
            goto done;
        }
        if (pa.ndim != 2 || pa.shape[0] != B || pa.shape[1] != 2) {
            shape_str(&pa, got, sizeof got);
            fprintf(stderr, "npred predict: %s: pupil centers have shape %s; expected (%d, 2)\n", pupil, got, B);
            goto done;
        }
    } else if (pupil) { /* an option that would not act is an error, not a note */
        fprintf(stderr, "npred predict: --pupil-center %s: the model has no shifter, so it takes no pupil centers "
                        "(leave the option out)\n", pupil);
        rc = 2;
        goto done;
    }
    int bc = npred_model_behavior_channels(m);
    if (bc > 0) {
        if (!behav) {
            fprintf(stderr, "npred predict: the model has a modulator: pass --behavior FILE (B, %d)\n", bc);
            rc = 2;
            goto done;
        }
        if (!(beh = cli_read_npy_f32(behav, &ba, "behavior", &rst))) {
            cli_fail(rst, "predict");
            goto done;
        }
        if (ba.ndim != 2 || ba.shape[0] != B || ba.shape[1] != bc) {
            shape_str(&ba, got, sizeof got);
            fprintf(stderr, "npred predict: %s: behavior has shape %s; expected (%d, %d)\n", behav, got, B, bc);
            goto done;
        }
    } else if (behav) {
        fprintf(stderr, "npred predict: --behavior %s: the model has no modulator, so it takes no behavior "
                        "(leave the option out)\n", behav);
        rc = 2;
        goto done;
    }
    int n = npred_model_session_neurons(m, si);
    int64_t os[2] = {B, n};
    if ((st = npred_array_alloc(&oa, NPRED_DT_F32, 4, 2, os))) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((st = npred_model_predict(m, key, img, B, pc, beh, oa.data))) {
        cli_fail(st, "predict");
        goto done;
    }
    if ((st = npred_npy_write(out, &oa))) {
        cli_fail(st, "predict");
        goto done;
    }
    rc = 0;
done:
    free(img);
    free(pc);
    free(beh);
    npred_array_free(&ia);
    npred_array_free(&pa);
    npred_array_free(&ba);
    npred_array_free(&oa);
    npred_model_free(m);
    return rc;
}
