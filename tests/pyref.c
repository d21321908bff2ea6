/* The C side of the Python package's bit-for-bit tests (tests/python/): runs the
 * same public npred_* calls the package makes and writes what they return as .npy
 * files, which the Python tests compare with the package's arrays exactly.
 *
 *   pyref sizes                                    sizes of the structs the package mirrors
 *   pyref batches OUT iter|cycle TIER SEED JSON PATH...   every batch of a loader
 *   pyref eval OUT MODEL TIER JSON PATH...          npred_evaluate per-neuron values
 *   pyref video OUT TIER PATH...                    the mini video model (tests/video_mini_model.h)
 *                                                   saved in OUT/model, and per trial of TIER of
 *                                                   each movie scan its whole-trial outputs for the
 *                                                   frames from 50 on: OUT/<k>_pred.npy (n, frames),
 *                                                   OUT/<k>_meta.npy [session, trial], OUT/<s>_ids.npy
 *   pyref video-predict OUT MODEL KEY VIDEOS [PUPIL] npred_video_model_predict -> OUT/rates.npy
 *
 * JSON is the static_loaders config. Not a test program itself (no summary line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npred/data.h"
#include "npred/model.h"
#include "npred/npy.h"
#include "npred/results.h"
#include "npred/eval.h"
#include "npred/train.h"
#include "npred/video_eval.h"
#include "npred/video_model.h"
#include "video_mini_model.h"

static int fail(const char *what)
{
    fprintf(stderr, "pyref: %s: %s\n", what, npred_last_error());
    return 1;
}

static int save(const char *dir, const char *name, npred_dtype dt, size_t itemsize, const void *data, int ndim,
                const int64_t *shape)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    npred_array a;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.ndim = ndim;
    a.itemsize = itemsize;
    a.count = 1;
    for (int i = 0; i < ndim; i++) {
        a.shape[i] = shape[i];
        a.count *= (size_t)shape[i];
    }
    a.data = (void *)data;
    return npred_npy_write(path, &a) ? fail(path) : 0;
}

static int sizes(void)
{
    printf("npred_rng %zu\n", sizeof(npred_rng));
    printf("npred_array %zu\n", sizeof(npred_array));
    printf("npred_dataset_info %zu\n", sizeof(npred_dataset_info));
    printf("npred_dataset_stats %zu\n", sizeof(npred_dataset_stats));
    printf("npred_session_info %zu\n", sizeof(npred_session_info));
    printf("npred_normalizer_info %zu\n", sizeof(npred_normalizer_info));
    printf("npred_batch %zu\n", sizeof(npred_batch));
    printf("npred_loader_config %zu\n", sizeof(npred_loader_config));
    printf("npred_loader_iter %zu\n", sizeof(npred_loader_iter));
    printf("npred_cycler %zu\n", sizeof(npred_cycler));
    printf("npred_model_session %zu\n", sizeof(npred_model_session));
    printf("npred_video_model_session %zu\n", sizeof(npred_video_model_session));
    printf("npred_video_eval_session %zu\n", sizeof(npred_video_eval_session));
    printf("npred_video_eval_results %zu\n", sizeof(npred_video_eval_results));
    printf("npred_video_loader_config %zu\n", sizeof(npred_video_loader_config));
    printf("npred_trainer_config %zu\n", sizeof(npred_trainer_config));
    printf("npred_trainer_batch_info %zu\n", sizeof(npred_trainer_batch_info));
    printf("npred_trainer_epoch_info %zu\n", sizeof(npred_trainer_epoch_info));
    printf("npred_trainer_callbacks %zu\n", sizeof(npred_trainer_callbacks));
    printf("npred_trainer_result %zu\n", sizeof(npred_trainer_result));
    printf("npred_eval_metrics %zu\n", sizeof(npred_eval_metrics));
    printf("npred_eval_session %zu\n", sizeof(npred_eval_session));
    printf("npred_eval_results %zu\n", sizeof(npred_eval_results));
    printf("npred_score %zu\n", sizeof(npred_score));
    return 0;
}

static int open_loaders(npred_loaders **L, npred_loader_config *cfg, const char *json, char **paths, int n)
{
    npred_loader_config_init(cfg);
    if (npred_loader_config_parse(cfg, json, NULL, NULL)) return fail("config");
    if (npred_loaders_open(L, (const char *const *)paths, (size_t)n, cfg)) return fail("loaders");
    return 0;
}

static int write_batch(const char *out, int k, const npred_batch *b, FILE *keys)
{
    char name[64];
    int64_t sh[4] = {b->n, b->c, b->h, b->w};
    int rc = 0;
    snprintf(name, sizeof name, "%d_images", k);
    rc |= save(out, name, NPRED_DT_F32, 4, b->images, 4, sh);
    sh[1] = b->n_neurons;
    snprintf(name, sizeof name, "%d_responses", k);
    rc |= save(out, name, NPRED_DT_F32, 4, b->responses, 2, sh);
    if (b->behavior) {
        sh[1] = b->behavior_dim;
        snprintf(name, sizeof name, "%d_behavior", k);
        rc |= save(out, name, NPRED_DT_F32, 4, b->behavior, 2, sh);
    }
    if (b->pupil_center) {
        sh[1] = b->pupil_dim;
        snprintf(name, sizeof name, "%d_pupil_center", k);
        rc |= save(out, name, NPRED_DT_F32, 4, b->pupil_center, 2, sh);
    }
    snprintf(name, sizeof name, "%d_trials", k);
    rc |= save(out, name, NPRED_DT_I64, 8, b->trials, 1, sh);
    fprintf(keys, "%s\n", b->data_key);
    return rc;
}

static int batches(const char *out, const char *mode, const char *tier_name, const char *seed, const char *json,
                   char **paths, int n)
{
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier)) return fail("tier");
    npred_loaders *L = NULL;
    npred_loader_config cfg;
    npred_batch b;
    memset(&b, 0, sizeof b);
    int rc = open_loaders(&L, &cfg, json, paths, n);
    if (!rc && npred_batch_init(&b, L, 0)) rc = fail("batch");
    char kp[4096];
    snprintf(kp, sizeof kp, "%s/keys.txt", out);
    FILE *keys = rc ? NULL : fopen(kp, "w");
    if (!rc && !keys) rc = fail(kp);
    npred_rng rng;
    npred_rng_seed(&rng, strtoull(seed, NULL, 10));
    int has = 1, k = 0;
    if (!rc && !strcmp(mode, "iter")) {
        npred_loader_iter it;
        if (npred_loader_iter_begin(&it, L, 0, tier, &rng)) rc = fail("iter");
        else {
            while (!rc && !(rc = npred_loader_iter_next(&it, &b, &has) ? fail("next") : 0) && has)
                rc = write_batch(out, k++, &b, keys);
            npred_loader_iter_free(&it);
        }
    } else if (!rc) {
        npred_cycler c;
        if (npred_cycler_begin(&c, L, tier, &rng)) rc = fail("cycler");
        else {
            while (!rc && !(rc = npred_cycler_next(&c, &b, &has) ? fail("next") : 0) && has)
                rc = write_batch(out, k++, &b, keys);
            npred_cycler_free(&c);
        }
    }
    if (keys) fclose(keys);
    npred_batch_free(&b);
    npred_loaders_free(L);
    npred_loader_config_free(&cfg);
    return rc;
}

static int eval(const char *out, const char *model, const char *tier_name, const char *json, char **paths, int n)
{
    npred_tier tier;
    if (npred_tier_parse(tier_name, &tier)) return fail("tier");
    npred_loaders *L = NULL;
    npred_loader_config cfg;
    npred_model *m = NULL;
    npred_eval_results res;
    memset(&res, 0, sizeof res);
    int rc = open_loaders(&L, &cfg, json, paths, n);
    if (!rc && npred_model_open(&m, model, 0, 0, 64)) rc = fail(model);
    if (!rc && npred_evaluate(m, L, tier, &res)) rc = fail("evaluate");
    for (int s = 0; !rc && s < res.n_sessions; s++) {
        const npred_eval_session *es = &res.sessions[s];
        int64_t sh[1] = {es->m.n_neurons};
        const double *v[5] = {es->corr, es->corr_avg, es->fev, es->feve, es->oracle};
        const char *names[5] = {"corr", "corr_avg", "fev", "feve", "oracle"};
        for (int i = 0; i < 5 && !rc; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s_%s", es->data_key, names[i]);
            rc = save(out, name, NPRED_DT_F64, 8, v[i], 1, sh);
        }
    }
    if (!rc) {
        const npred_eval_metrics *o = &res.overall;
        double vals[5] = {o->single_trial_corr, o->corr_to_average, o->feve, o->oracle, o->fraction_oracle};
        int64_t sh[1] = {5};
        rc = save(out, "overall", NPRED_DT_F64, 8, vals, 1, sh);
    }
    npred_eval_results_free(&res);
    npred_model_free(m);
    npred_loaders_free(L);
    npred_loader_config_free(&cfg);
    return rc;
}

static int video(const char *out, const char *tier, char **paths, int n)
{
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_batch b;
    memset(&b, 0, sizeof b);
    npred_video_loader_config c;
    npred_video_loader_config_init(&c);
    float *rates = NULL, *pred = NULL;
    int64_t *ids = NULL;
    int rc = 0, k = 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", out);
    if (npred_video_loader_config_parse(&c, "{\"batch_size\": 1, \"to_cut\": false}", NULL, NULL) ||
        npred_video_loaders_open(&L, (const char *const *)paths, (size_t)n, &c) || npred_video_batch_init(&b, L, 1))
        rc = fail("loaders");
    if (!rc && (video_mini_model(&m, L) || npred_video_model_save(m, dir))) rc = fail("video model");
    for (size_t s = 0; !rc && s < npred_video_loaders_count(L); s++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, s, &si);
        int ti = npred_video_loaders_tier(L, s, tier);
        const npred_array *u = npred_video_dataset_neuron_info(si.dataset, "unit_ids");
        if (ti < 0 || !u || npred_array_to_i64(u, &ids)) {
            rc = fail("tier / unit_ids");
            break;
        }
        char name[64];
        int64_t nsh[1] = {si.n_neurons};
        snprintf(name, sizeof name, "%zu_ids", s);
        rc = save(out, name, NPRED_DT_I64, 8, ids, 1, nsh);
        free(ids);
        ids = NULL;
        size_t nn = (size_t)si.n_neurons;
        rates = realloc(rates, sizeof(float) * 64 * nn); /* the scan's T_max is 60 */
        pred = realloc(pred, sizeof(float) * 64 * nn);
        for (int64_t i = 0; !rc && i < si.tier_n[ti]; i++, k++) {
            int64_t trial = si.tier_idx[ti][i];
            if (!rates || !pred || npred_video_loaders_get(L, s, &trial, NULL, 1, NULL, &b) ||
                npred_video_model_predict(m, si.data_key, b.videos, 1, b.c, b.f, b.h, b.w, b.pupil_center, rates)) {
                rc = fail("predict");
                break;
            }
            int T1 = npred_video_model_output_frames(m, b.f), keep = b.resp_f - 50;
            for (int t = 0; t < keep; t++)
                for (size_t j = 0; j < nn; j++) pred[j * (size_t)keep + (size_t)t] = rates[(size_t)(T1 - keep + t) * nn + j];
            int64_t sh[2] = {si.n_neurons, keep}, msh[1] = {2}, meta[2] = {(int64_t)s, trial};
            snprintf(name, sizeof name, "%d_pred", k);
            rc = save(out, name, NPRED_DT_F32, 4, pred, 2, sh);
            snprintf(name, sizeof name, "%d_meta", k);
            if (!rc) rc = save(out, name, NPRED_DT_I64, 8, meta, 1, msh);
        }
    }
    free(rates), free(pred), free(ids);
    npred_video_batch_free(&b);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    npred_video_loader_config_free(&c);
    return rc;
}

/* rates (B, T', n) of a video model for videos (B, C, T, H, W) [and pupil (B, 2, T)] */
static int video_predict(const char *out, const char *model, const char *key, const char *videos, const char *pupil)
{
    npred_video_model *m = NULL;
    npred_array v = {0}, p = {0};
    float *x = NULL, *pc = NULL, *r = NULL;
    int rc = 1;
    if (npred_video_model_load(&m, model, 2) || npred_npy_read(videos, &v) || npred_array_to_f32(&v, &x) ||
        (pupil && (npred_npy_read(pupil, &p) || npred_array_to_f32(&p, &pc)))) {
        rc = fail("video-predict");
        goto done;
    }
    if (v.ndim != 5) {
        fprintf(stderr, "pyref: %s: expected (B, C, T, H, W)\n", videos);
        goto done;
    }
    int B = (int)v.shape[0], C = (int)v.shape[1], T = (int)v.shape[2], H = (int)v.shape[3], W = (int)v.shape[4];
    int si = npred_video_model_session_index(m, key), T1 = npred_video_model_output_frames(m, T);
    int n = npred_video_model_session_neurons(m, si);
    if (!(r = malloc(sizeof(float) * (size_t)B * (T1 ? T1 : 1) * (n ? n : 1))) ||
        npred_video_model_predict(m, key, x, B, C, T, H, W, pc, r)) {
        rc = fail("video-predict");
        goto done;
    }
    rc = save(out, "rates", NPRED_DT_F32, 4, r, 3, (const int64_t[]){B, T1, n});
done:
    npred_array_free(&v);
    npred_array_free(&p);
    free(x), free(pc), free(r);
    npred_video_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "sizes")) return sizes();
    if (argc >= 8 && !strcmp(argv[1], "batches")) return batches(argv[2], argv[3], argv[4], argv[5], argv[6], argv + 7,
                                                                 argc - 7);
    if ((argc == 6 || argc == 7) && !strcmp(argv[1], "video-predict"))
        return video_predict(argv[2], argv[3], argv[4], argv[5], argc == 7 ? argv[6] : NULL);
    if (argc >= 7 && !strcmp(argv[1], "eval")) return eval(argv[2], argv[3], argv[4], argv[5], argv + 6, argc - 6);
    if (argc >= 5 && !strcmp(argv[1], "video")) return video(argv[2], argv[3], argv + 4, argc - 4);
    fprintf(stderr, "usage: pyref sizes | batches OUT iter|cycle TIER SEED JSON PATH... | "
                    "eval OUT MODEL TIER JSON PATH... | video OUT TIER PATH... | "
                    "video-predict OUT MODEL KEY VIDEOS [PUPIL]\n");
    return 2;
}
