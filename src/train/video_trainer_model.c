/* The public video trainer on the public video model (npred/video_train.h): the model
 * built for the loaders' sessions as the kit's make_video_model, and the trainer on the
 * model's encoder with the model's own file writer. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "model/video_model.h"
#include "train/video_trainer_internal.h"

static npred_status save_model(void *user, const char *path) { return npred_video_model_save_file(user, path); }

static npred_status batch_capacity(const npred_video_loaders *L, int64_t *cap)
{
    npred_video_batch b;
    npred_status st = npred_video_batch_init(&b, L, 0);
    if (!st) *cap = b.capacity;
    npred_video_batch_free(&b);
    return st;
}

npred_status npred_video_trainer_create(npred_video_trainer **out, npred_video_model *m, const npred_video_loaders *L,
                                        const npred_video_trainer_config *c, uint64_t seed)
{
    *out = NULL;
    if (!m || !L || npred_video_loaders_count(L) < 1)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: a model and loaders with at least one session are needed");
    npred_video_session_info si;
    npred_video_loaders_session(L, 0, &si);
    if (!si.frames)
        return npred_errorf(NPRED_ERR_ARG, "video trainer: session %s: whole trials (to_cut false) vary in length; "
                            "training needs clips of `frames` frames (to_cut true)", si.data_key);
    int64_t cap = 0;
    npred_status st = batch_capacity(L, &cap);
    if (!st) st = npred_video_model_reserve(m, si.frames, (int)cap);
    if (!st) st = npred_video_trainer_create_encoder(out, m->e, L, c, seed);
    if (!st) npred_video_trainer_set_saver(*out, save_model, m, NULL);
    return st;
}

/* the mean over clips and frames of the first training batch's responses, (n) */
static npred_status mean_activity(const npred_video_loaders *L, size_t s, npred_rng *rng, npred_video_batch *b,
                                  float *mean)
{
    npred_video_iter it;
    npred_status st = npred_video_iter_begin(&it, L, s, "train", rng);
    int has = 0;
    if (!st) st = npred_video_iter_next(&it, b, &has);
    npred_video_iter_free(&it);
    if (st) return st;
    if (!has) return npred_errorf(NPRED_ERR_ARG, "video model: session %s has no training clip", b->data_key);
    int64_t n = b->n_neurons, F = b->resp_f;
    for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t k = 0; k < b->n; k++)
            for (int64_t f = 0; f < F; f++) acc += b->responses[(k * n + j) * F + f];
        mean[j] = (float)(acc / (double)(b->n * F));
    }
    return NPRED_OK;
}

npred_status npred_video_trainer_model_create(npred_video_model **out, const npred_video_loaders *L,
                                              const char *config_json, const char *where)
{
    *out = NULL;
    size_t ns = npred_video_loaders_count(L);
    if (ns < 1) return npred_errorf(NPRED_ERR_ARG, "video model: no sessions in the loaders");
    if (ns > NPRED_VIDEO_MAX_SESSIONS)
        return npred_errorf(NPRED_ERR_ARG, "video model: %zu sessions (at most %d)", ns, NPRED_VIDEO_MAX_SESSIONS);
    cJSON *j = config_json ? cJSON_Parse(config_json) : NULL;
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(j, "seed");
    uint64_t seed = cJSON_IsNumber(sj) && sj->valuedouble >= 0 ? (uint64_t)sj->valuedouble : 0;
    cJSON_Delete(j);
    npred_video_model_session ses[NPRED_VIDEO_MAX_SESSIONS];
    double *coords[NPRED_VIDEO_MAX_SESSIONS] = {0};
    float *means[NPRED_VIDEO_MAX_SESSIONS] = {0};
    memset(ses, 0, sizeof ses);
    npred_video_session_info s0;
    npred_video_loaders_session(L, 0, &s0);
    npred_video_batch b;
    int64_t cap = 0;
    npred_status st = npred_video_batch_init(&b, L, 0);
    if (!st) cap = b.capacity;
    npred_rng rng;
    npred_rng_seed(&rng, seed);
    for (size_t s = 0; !st && s < ns; s++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, s, &si);
        if (si.channels != s0.channels || si.height != s0.height || si.width != s0.width) {
            st = npred_errorf(NPRED_ERR_ARG, "video model: session %s gives clips of (%d, %d, %d), session %s of "
                              "(%d, %d, %d) (C, H, W); one core needs one input shape", si.data_key, si.channels,
                              si.height, si.width, s0.data_key, s0.channels, s0.height, s0.width);
            break;
        }
        ses[s].key = si.data_key;
        ses[s].n_neurons = (int)si.n_neurons;
        const npred_array *cm = npred_video_dataset_neuron_info(si.dataset, "cell_motor_coordinates");
        if (cm && cm->ndim == 2 && cm->shape[0] == si.n_neurons && (cm->dtype == NPRED_DT_F64 || cm->dtype == NPRED_DT_F32)) {
            coords[s] = malloc(cm->count * sizeof(double));
            if (!coords[s]) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            for (size_t i = 0; coords[s] && i < cm->count; i++)
                coords[s][i] = cm->dtype == NPRED_DT_F64 ? ((const double *)cm->data)[i] : ((const float *)cm->data)[i];
            ses[s].coords = coords[s];
            ses[s].coord_dims = (int)cm->shape[1];
        }
        means[s] = malloc((size_t)si.n_neurons * sizeof(float));
        if (!st && !means[s]) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        if (!st) st = mean_activity(L, s, &rng, &b, means[s]);
        ses[s].mean_activity = means[s];
    }
    npred_video_batch_free(&b);
    if (!st)
        st = npred_video_model_create(out, config_json, where, s0.channels, s0.height, s0.width, ses, (int)ns,
                                      (int)cap);
    for (size_t s = 0; s < ns; s++) free(coords[s]), free(means[s]);
    return st;
}
