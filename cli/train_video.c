/* npred train on SENSORIUM 2023 movie scans (see train_video.h). */
#include "train_video.h"

#include <errno.h>
#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_model.h"
#include "npred/dist.h"
#include "npred/video.h"
#include "npred/video_model.h"
#include "npred/video_train.h"

#define DEFAULT_SEED 42

static char *json_text(const cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    if (!s) npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    return s;
}

int train_video(const train_video_args *a)
{
    int rc = 0;
    npred_status st;
    const int nranks = npred_dist_size(), rank = npred_dist_rank();
    /* settings first, so bad keys fail at once */
    npred_video_trainer_config tc;
    npred_video_trainer_config_init(&tc);
    char *txt = json_text(a->trainer);
    st = txt ? npred_video_trainer_config_parse(&tc, txt, a->where_trainer) : NPRED_ERR_NOMEM;
    free(txt);
    if (st) return cli_fail(st, "trainer config");
    if (!a->dataset) return cli_usage_error("train", "--dataset LOADER.json (mouse_video_loader arguments, batch_size "
                                            "and frames at least) is required for movie scans");
    cJSON *model = cJSON_Duplicate(a->model, 1);
    if (!model) return cli_fail(NPRED_ERR_NOMEM, "model config");
    /* one seed, as the kit passes one to make_video_model and the trainer: --seed, else the
     * trainer's, else the model config's, else 42 */
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(model, "seed");
    long long seed = a->seed >= 0                         ? a->seed
                     : tc.base.seed_set                   ? (long long)tc.base.seed
                     : cJSON_IsNumber(ms) && ms->valuedouble >= 0 ? (long long)ms->valuedouble
                                                          : DEFAULT_SEED;
    if (!cJSON_IsNumber(ms)) {
        cJSON_DeleteItemFromObjectCaseSensitive(model, "seed");
        cJSON_AddNumberToObject(model, "seed", (double)seed);
    } else if (ms->valuedouble != (double)seed) {
        cJSON_ReplaceItemInObjectCaseSensitive(model, "seed", cJSON_CreateNumber((double)seed)); /* in place */
    }
    if (!tc.base.seed_set || a->seed >= 0) tc.base.seed_set = 1, tc.base.seed = seed;
    if (a->max_iter >= 0) tc.base.max_iter = a->max_iter;
    npred_video_loader_config lc;
    npred_video_loader_config_init(&lc);
    char **cfg_paths = NULL;
    size_t n_cfg = 0;
    char *model_txt = json_text(model), *dataset_txt = json_text(a->dataset), *run_cfg = NULL;
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    npred_video_trainer *t = NULL;
    cJSON *rc_json = NULL;
    if (!model_txt || !dataset_txt) {
        rc = cli_fail(NPRED_ERR_NOMEM, "configs");
        goto done;
    }
    if ((st = npred_video_loader_config_parse(&lc, dataset_txt, &cfg_paths, &n_cfg))) {
        rc = cli_fail(st, a->where_dataset ? a->where_dataset : "dataset config");
        goto done;
    }
    const char *const *data = NULL;
    size_t n_data = 0;
    if ((rc = cli_dataset_paths("train", a->where_dataset ? a->where_dataset : "the dataset config",
                                (const char *const *)cfg_paths, n_cfg, a->data, a->n_data, &data, &n_data)))
        goto done;
    printf("npred train (video): %zu session(s), %d thread(s)%s, seed %lld -> %s\n", n_data, omp_get_max_threads(),
           nranks > 1 ? " per rank" : "", seed, a->out);
    if (nranks > 1)
        printf("data parallel: %d MPI ranks, batches split across ranks, BatchNorm statistics %s\n", nranks,
               a->sync_bn ? "synchronised across ranks" : "per rank");
    for (size_t i = 0; i < n_data; i++) printf("  data %s\n", data[i]);
    fflush(stdout);
    if ((st = npred_video_loaders_open(&L, data, n_data, &lc))) {
        rc = cli_fail(st, "loading data");
        goto done;
    }
    if ((st = npred_video_trainer_model_create(&m, L, model_txt, a->where_model))) {
        rc = cli_fail(st, "model");
        goto done;
    }
    if ((st = npred_video_model_set_loader_json(m, dataset_txt))) {
        rc = cli_fail(st, "model");
        goto done;
    }
    for (size_t s = 0; s < npred_video_loaders_count(L); s++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, s, &si);
        int tr = npred_video_loaders_tier(L, s, "train"), va = npred_video_loaders_tier(L, s, "oracle");
        printf("session %s: %lld neurons, clips (%d, %d, %d, %d), train %lld / oracle %lld trials\n", si.data_key,
               (long long)si.n_neurons, si.channels, si.frames, si.height, si.width,
               (long long)(tr >= 0 ? si.tier_n[tr] : 0), (long long)(va >= 0 ? si.tier_n[va] : 0));
    }
    /* the model config as given (seed resolved): a resume rebuilds the same model file */
    char *tj = npred_video_trainer_config_json(&tc);
    cJSON *jm = cJSON_Duplicate(model, 1), *jt = tj ? cJSON_Parse(tj) : NULL, *jd = cJSON_Duplicate(a->dataset, 1);
    free(tj);
    if (!jm || !jt || !jd) {
        cJSON_Delete(jm), cJSON_Delete(jt), cJSON_Delete(jd);
        rc = cli_fail(NPRED_ERR_NOMEM, "configs");
        goto done;
    }
    a->print_section("model", jm);
    printf("  %-26s %zu\n", "trainable parameters", npred_video_model_param_count(m, NULL));
    a->print_section("dataset", jd);
    a->print_section("trainer", jt);
    fflush(stdout);
    rc_json = cJSON_CreateObject();
    cJSON *jdata = cJSON_CreateArray();
    for (size_t i = 0; i < n_data; i++) cJSON_AddItemToArray(jdata, cJSON_CreateString(data[i]));
    cJSON_AddStringToObject(rc_json, "kind", "video");
    cJSON_AddItemToObject(rc_json, "data", jdata);
    cJSON_AddNumberToObject(rc_json, "seed", (double)seed);
    cJSON_AddNumberToObject(rc_json, "threads", omp_get_max_threads());
    cJSON_AddItemToObject(rc_json, "model", jm);
    cJSON_AddItemToObject(rc_json, "dataset", jd);
    cJSON_AddItemToObject(rc_json, "trainer", jt);
    run_cfg = cJSON_Print(rc_json);
    if (!run_cfg) {
        rc = cli_fail(NPRED_ERR_NOMEM, "configs");
        goto done;
    }
    if ((st = npred_video_trainer_create(&t, m, L, &tc, (uint64_t)seed))) {
        rc = cli_fail(st, "trainer");
        goto done;
    }
    if ((st = npred_video_trainer_set_dist(t, a->sync_bn))) {
        rc = cli_fail(st, "data parallel setup");
        goto done;
    }
    if ((st = npred_video_trainer_set_run_dir(t, a->out, run_cfg))) {
        rc = cli_fail(st, "run folder");
        goto done;
    }
    if (a->resume) {
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/state.safetensors", a->out);
        if (access(sp, F_OK) != 0 && errno == ENOENT) {
            if (rank == 0) printf("no state saved in %s yet: starting from the beginning\n", a->out);
        } else if ((st = npred_video_trainer_resume(t, sp))) {
            rc = cli_fail(st, "resume");
            goto done;
        } else {
            printf("resuming from %s\n", sp);
        }
    }
    npred_video_trainer_set_callbacks(t, &a->cb);
    npred_trainer_result res;
    st = npred_video_trainer_run(t, &res);
    if (st == NPRED_ERR_INTERRUPTED) {
        if (rank == 0)
            fprintf(stderr, "npred train: interrupted; continue with: %snpred train --out %s --resume\n",
                    nranks > 1 ? "mpirun -np K " : "", a->out);
        rc = 130;
        goto done;
    }
    if (st) {
        if (nranks > 1) fprintf(stderr, "npred train: rank %d of %d: ", rank, nranks);
        rc = cli_fail(st, "training");
        fprintf(stderr, "npred train: the run folder keeps the last finished epoch: continue with --resume\n");
        goto done;
    }
    static const char *const why[] = {"running", "patience exhausted", "max_iter reached", "objective not finite"};
    printf("done after %" PRId64 " epochs (%s): best validation correlation %.6f, final %.6f\n", res.epochs,
           (unsigned)res.stop < 4 ? why[res.stop] : "?", res.best, res.score);
    printf("model: %s/model.safetensors\n", a->out);
    if (res.stop == NPRED_ES_STOP_NONFINITE) {
        if (rank == 0)
            fprintf(stderr, "npred train: training diverged: the validation correlation became NaN or infinite; "
                            "stopped, the best model so far (%.6f) is in %s/model.safetensors\n", res.best, a->out);
        rc = 1;
    }
done:
    npred_video_trainer_free(t);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    cJSON_Delete(rc_json);
    free(run_cfg), free(model_txt), free(dataset_txt);
    cJSON_Delete(model);
    npred_video_loader_config_free(&lc);
    npred_loader_paths_free(cfg_paths, n_cfg);
    return rc;
}
