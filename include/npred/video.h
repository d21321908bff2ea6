/* npred video data: SENSORIUM 2023 movie scans (MovieFileTreeDataset layout) and the
 * 2023 kit's mouse_video_loader (sensorium.datasets.mouse_video_loaders, on
 * neuralpredictors 43faede).
 *
 * Layout of one scan (a folder, or its .zip read in place):
 *   data/videos/<i>.npy        (H, W, T_max) float, NaN after the trial's last frame
 *   data/responses/<i>.npy     (n, T_max)
 *   data/behavior/<i>.npy      (k, T_max)   optional (pupil dilation, running speed)
 *   data/pupil_center/<i>.npy  (2, T_max)   optional
 *   meta/trials/tiers.npy      (N,) strings: train, oracle, live_test_main, final_test_main, ..., none
 *   meta/neurons/<name>.npy    one row per neuron (cell_motor_coordinates (n, 3), unit_ids, ...)
 *   meta/statistics/<field>/all/{mean,std,min,max,median}.npy   the field's per-trial
 *                              shape: statistics per element AND per frame (NaN allowed)
 *
 * Trials are read from the folder/zip when a batch needs them (nothing is cached
 * but trial 0's shape); a trial whose file has another shape is an error naming it.
 * Shapes: B batch, C channels, F frames, H/W frame size, n neurons, k behaviour
 * variables. Every array is float32, C order. One object is used by one thread at
 * a time. Semantics and differences from the kit: docs/video.md. */
#ifndef NPRED_VIDEO_H
#define NPRED_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/data.h"
#include "npred/npy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fields of a movie scan (folders under data/). */
typedef enum {
    NPRED_VFIELD_VIDEOS,
    NPRED_VFIELD_RESPONSES,
    NPRED_VFIELD_BEHAVIOR,
    NPRED_VFIELD_PUPIL_CENTER,
    NPRED_VFIELD_COUNT
} npred_video_field;

/* "videos", "responses", "behavior", "pupil_center" */
NPRED_API const char *npred_video_field_name(npred_video_field f);

typedef struct npred_video_dataset npred_video_dataset;

typedef struct {
    const char *path;          /* as given */
    const char *data_key;      /* the scan folder's name (zip: the file name without .zip) */
    int is_zip;
    int64_t n_trials;          /* N */
    int64_t n_neurons;         /* n */
    int height, width;         /* H, W of data/videos */
    int t_max;                 /* frames per file (T_max, NaN-padded) */
    int has_field[NPRED_VFIELD_COUNT];
    int rows[NPRED_VFIELD_COUNT];   /* values per frame: H*W, n, k, 2 */
    int has_stats[NPRED_VFIELD_COUNT]; /* meta/statistics/<field>/all/mean and std present */
    size_t n_tiers;            /* distinct values of meta/trials/tiers, sorted */
    const char *const *tier_names;
    const int64_t *tier_count; /* (n_tiers,) trials per tier */
} npred_video_dataset_info;

/* 1 when path is a folder or .zip holding data/videos (a movie scan), else 0. */
NPRED_API int npred_video_is_scan(const char *path);

/* Open a folder or a .zip. Checks: data/videos and data/responses exist; every
 * data folder holds the same trials 0..N-1; trial 0 of each field has the shape
 * above with one T_max; meta/trials/tiers.npy is N strings; every meta/neurons
 * array has n rows (cell_motor_coordinates (n, 3) is required, as the kit's
 * loader reads the neuron count from it); statistics have their field's shape.
 * data_key NULL: the folder's name (trailing '/' ignored), or the zip's file name
 * without .zip. */
NPRED_API npred_status npred_video_dataset_open(npred_video_dataset **out, const char *path, const char *data_key);
NPRED_API void npred_video_dataset_free(npred_video_dataset *d);
NPRED_API void npred_video_dataset_get_info(const npred_video_dataset *d, npred_video_dataset_info *out);
/* Tier of each trial as an index into info.tier_names, (N,). */
NPRED_API const int *npred_video_dataset_tiers(const npred_video_dataset *d);
/* meta/neurons/<name>.npy as read (NULL if absent). */
NPRED_API const npred_array *npred_video_dataset_neuron_info(const npred_video_dataset *d, const char *name);
/* Names of the meta/neurons arrays, sorted; *names stays owned by d. */
NPRED_API size_t npred_video_dataset_neuron_info_names(const npred_video_dataset *d, const char *const **names);
/* One statistic (mean, std, min, max, median) of a field, (rows, T_max) float32;
 * NULL when absent. */
NPRED_API const float *npred_video_dataset_stat(const npred_video_dataset *d, npred_video_field f, const char *stat);
/* Read trial i of field f as stored, (rows, T_max) float32 (videos: (H, W, T_max)),
 * into out (rows * T_max floats). */
NPRED_API npred_status npred_video_dataset_read(npred_video_dataset *d, npred_video_field f, int64_t i, float *out);

/* ---------------------------------------------------------------- config */
/* mouse_video_loader arguments by their kit names and defaults (paths aside). */
typedef struct {
    int64_t batch_size;            /* required (> 0); 0 = not set, refused when the loaders open */
    int normalize;                 /* 1: NeuroNormalizer first */
    npred_strlist exclude;         /* fields the normalizer skips (None) */
    int exclude_is_string;         /* exclude was one string: Python `k in "..."` */
    int cuda;                      /* 0; accepted, no effect (CPU) */
    npred_opt_i64 max_frame;       /* None: cut each trial at its first NaN frame */
    int64_t frames;                /* 50: Subsequence length */
    int64_t offset;                /* < 0 (default -1): random offset per sample, else fixed */
    npred_opt_f64 inputs_mean, inputs_std; /* None; inputs_std acts only with inputs_mean (as the kit) */
    int include_behavior;          /* 1: behaviour in the batch and as channels */
    int include_pupil_centers;     /* 1 */
    int include_pupil_centers_as_channels; /* 0 */
    double scale;                  /* 1: ScaleInputs(channel_axis=-1), see docs/video.md */
    int to_cut;                    /* 1: Subsequence(frames, offset); 0: whole trials */
} npred_video_loader_config;

NPRED_API void npred_video_loader_config_init(npred_video_loader_config *c);
NPRED_API void npred_video_loader_config_free(npred_video_loader_config *c);
/* Set options from JSON text holding one object with mouse_video_loader argument
 * names (null = None). "paths" is returned through paths/n_paths when non-NULL
 * (free with npred_loader_paths_free), else rejected. Unknown keys and wrong types
 * are NPRED_ERR_CONFIG naming the key. */
NPRED_API npred_status npred_video_loader_config_parse(npred_video_loader_config *c, const char *json, char ***paths,
                                                       size_t *n_paths);

/* ---------------------------------------------------------------- loaders */
typedef struct npred_video_loaders npred_video_loaders;

typedef struct {
    const char *data_key;
    const npred_video_dataset *dataset;
    int64_t n_neurons;
    int channels;                  /* C of the batch videos (after ScaleInputs) */
    int frames;                    /* F of the videos per sample (after ScaleInputs); 0 when to_cut is
                                      false (whole trials: it varies) */
    int resp_frames;               /* F of responses/behaviour/pupil; 0 when it varies */
    int height, width;             /* of the batch videos */
    int behavior_dim, pupil_dim;   /* 0 when the field is not in the batch */
    size_t n_tiers;                /* the tiers with a loader (every tier but 'none'), sorted */
    const char *const *tier_names;
    const int64_t *tier_n;         /* (n_tiers,) trials */
    const int64_t *const *tier_idx;/* per tier its trials, ascending */
    const float *response_precision; /* (n, T_max) NeuroNormalizer precision, NULL unless normalized */
    const float *behavior_precision; /* (k, T_max) or NULL */
    const float *eye_mean, *eye_std; /* (2, T_max) or NULL */
} npred_video_session_info;

/* mouse_video_loader(paths, ...): one session per path. */
NPRED_API npred_status npred_video_loaders_open(npred_video_loaders **out, const char *const *paths, size_t n_paths,
                                                const npred_video_loader_config *cfg);
NPRED_API void npred_video_loaders_free(npred_video_loaders *L);
NPRED_API size_t npred_video_loaders_count(const npred_video_loaders *L);
NPRED_API void npred_video_loaders_session(const npred_video_loaders *L, size_t s, npred_video_session_info *out);
/* Index of tier `name` among the session's loader tiers, -1 if none. */
NPRED_API int npred_video_loaders_tier(const npred_video_loaders *L, size_t s, const char *name);

typedef struct {
    int session;
    const char *data_key;
    int64_t n, capacity;           /* B, and the most trials it holds */
    int c, f, h, w;                /* videos (B, C, F, H, W) */
    int resp_f;                    /* frames of responses/behavior/pupil_center */
    int64_t n_neurons;
    int behavior_dim, pupil_dim;
    float *videos;                 /* (B, C, F, H, W) */
    float *responses;              /* (B, n, resp_f) */
    float *behavior;               /* (B, k, resp_f) or NULL */
    float *pupil_center;           /* (B, 2, resp_f) or NULL */
    int64_t *trials;               /* (B,) */
    int64_t *offsets;              /* (B,) first frame taken of each trial (0 without to_cut) */
    size_t video_cap, resp_cap, beh_cap, pupil_cap; /* floats allocated */
} npred_video_batch;

/* Allocate a batch for `capacity` trials of any session (0: batch_size), sized for
 * the longest possible sample (T_max frames without to_cut). */
NPRED_API npred_status npred_video_batch_init(npred_video_batch *b, const npred_video_loaders *L, int64_t capacity);
NPRED_API void npred_video_batch_free(npred_video_batch *b);

/* Transform trials of session s into b. offsets: (n,) the Subsequence start of each
 * trial (to_cut); NULL takes the configured fixed offset, or draws random ones from
 * rng (uniform in [0, T - frames), T the trial's frames after CutVideos) when the
 * offset is < 0. Without to_cut offsets must be NULL. The samples of one batch must
 * have equal shapes (whole trials of different lengths need batch_size 1, as
 * PyTorch's collate). */
NPRED_API npred_status npred_video_loaders_get(const npred_video_loaders *L, size_t s, const int64_t *trials,
                                               const int64_t *offsets, int64_t n, npred_rng *rng,
                                               npred_video_batch *b);

/* Iterator over one tier of a session: "train" is shuffled from rng at begin, the
 * other tiers run in ascending order; the last batch may be short. rng is also used
 * for random offsets (it may be NULL only when no draw is needed). */
typedef struct {
    const npred_video_loaders *L;
    size_t session;
    int tier;
    int64_t *order;
    int64_t n, pos;
    npred_rng *rng;
} npred_video_iter;

NPRED_API npred_status npred_video_iter_begin(npred_video_iter *it, const npred_video_loaders *L, size_t s,
                                              const char *tier, npred_rng *rng);
NPRED_API npred_status npred_video_iter_next(npred_video_iter *it, npred_video_batch *b, int *has);
NPRED_API void npred_video_iter_free(npred_video_iter *it);

#ifdef __cplusplus
}
#endif
#endif
