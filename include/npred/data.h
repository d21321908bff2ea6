/* npred data: SENSORIUM static datasets (FileTree layout), the static_loader
 * transforms, and batching across sessions.
 *
 * Layout of one scan (a folder, or the SENSORIUM .zip read in place):
 *   data/{images,responses,behavior,pupil_center}/<i>.npy   one file per trial
 *   meta/trials/<name>.npy  1-D, one row per trial (tiers, frame_image_id, ...)
 *   meta/neurons/<name>.npy one row per neuron (unit_ids, area, cell_motor_coordinates, ...)
 *   meta/statistics/<field>/all/{mean,std,min,max,median}.npy
 *
 * Semantics follow sensorium.datasets.static_loaders and neuralpredictors 0.3.0
 * (FileTreeDataset, NeuroNormalizer, AddBehaviorAsChannels, AddPupilCenterAsChannels,
 * SelectInputChannel, ScaleInputs, Subsample, ToTensor, LongCycler,
 * RepeatsBatchSampler); differences are listed in docs/data.md.
 *
 * Shapes: B = batch, C/H/W = image channels/height/width after the transforms,
 * N = trials of a scan, n = selected neurons. Every array is float32, C order.
 * One object is used by one thread at a time; separate objects are independent. */
#ifndef NPRED_DATA_H
#define NPRED_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/npy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- tiers */
typedef enum {
    NPRED_TIER_TRAIN,
    NPRED_TIER_VALIDATION,
    NPRED_TIER_TEST,
    NPRED_TIER_FINAL_TEST,
    NPRED_TIER_COUNT
} npred_tier;

/* "train", "validation", "test", "final_test" */
NPRED_API const char *npred_tier_name(npred_tier t);
/* Parse a tier name; NPRED_ERR_CONFIG naming it if unknown. */
NPRED_API npred_status npred_tier_parse(const char *name, npred_tier *out);

/* ---------------------------------------------------------------- dataset */
/* Read one .npy member of a dataset folder or .zip (e.g.
 * "meta/ground_truth/rf_grid.npy") without opening the dataset; out owns its data
 * (npred_array_free). NPRED_ERR_IO naming the member when it is absent,
 * NPRED_ERR_FORMAT when it is not a valid .npy. */
NPRED_API npred_status npred_dataset_read_npy(const char *path, const char *rel, npred_array *out);

/* One opened scan. All trials of every data/ field present are read at open
 * and kept in memory as float32 (raw, untransformed). */
typedef struct npred_dataset npred_dataset;

/* Data fields (folders under data/). */
typedef enum {
    NPRED_FIELD_IMAGES,
    NPRED_FIELD_RESPONSES,
    NPRED_FIELD_BEHAVIOR,
    NPRED_FIELD_PUPIL_CENTER,
    NPRED_FIELD_COUNT
} npred_field;

NPRED_API const char *npred_field_name(npred_field f);

/* Statistics of one field (meta/statistics/<field>/all/<stat>.npy); NULL
 * pointers where a file is absent. count = elements per statistic (1 for the
 * scalar image statistics). */
typedef struct {
    int present;            /* the folder exists */
    size_t count;
    const float *mean, *std, *min, *max, *median;  /* (count,) each */
} npred_dataset_stats;

typedef struct {
    const char *path;       /* as given to npred_dataset_open */
    const char *data_key;   /* e.g. "21067-10-18" */
    int is_zip;
    int is_hdf5;            /* an HDF5 StaticImageSet file (read as the file tree) */
    int64_t n_trials;       /* N */
    int64_t n_neurons;      /* responses per trial */
    int has_field[NPRED_FIELD_COUNT];
    int64_t field_size[NPRED_FIELD_COUNT];  /* elements per trial of each field */
    int img_c, img_h, img_w;                /* raw image shape (C, H, W) */
    float img_min, img_max;                 /* over all trials */
    int64_t tier_count[NPRED_TIER_COUNT];   /* trials per tier */
} npred_dataset_info;

/* Open a folder or a .zip. data_key NULL derives it from the path as sensorium
 * does ("static<key>-GrayImageNet-..." -> key; ColorImageNet and "preproc"
 * names too; else animal_ids[0]-sessions[0]-scan_idx[0] from meta/neurons).
 * Checks: images and responses present; every data field holds trials 0..N-1
 * with one shape per field; meta/trials arrays are 1-D of length N;
 * tiers/frame_image_id/frame_image_class present and tiers valid; meta/neurons
 * arrays have n_neurons rows and unit_ids/area exist; statistics shapes match
 * their field and hold no NaN. Errors name the file and what was expected. */
NPRED_API npred_status npred_dataset_open(npred_dataset **out, const char *path, const char *data_key);
NPRED_API void npred_dataset_free(npred_dataset *d);
/* Write the scan at src (folder, .zip or HDF5 StaticImageSet file) as the file tree
 * at dst: a folder, or a SENSORIUM .zip (members "<name>/...") when dst ends in
 * .zip. src must open with npred_dataset_open first; dst must not exist. The tree
 * is built in a temporary sibling and moved into place with one rename. For an
 * HDF5 source this is neuralpredictors' convert_static_h5_dataset_to_folder
 * (mapping in docs/data.md). */
NPRED_API npred_status npred_dataset_convert(const char *src, const char *dst);

NPRED_API void npred_dataset_get_info(const npred_dataset *d, npred_dataset_info *out);
/* Raw cached data of a field: (N, field_size) float32, or NULL if absent. The
 * images of a dataset the loaders opened (npred_session_info.dataset) are NULL too:
 * the loaders read them once and keep them as the batches carry them (at the
 * trained scale), not at full resolution; open the path with npred_dataset_open
 * for the raw images. Their responses are NULL too when the loaders keep them as
 * 1- or 2-byte codes (at most 256 / 65,536 distinct values, e.g. spike counts: the
 * batches carry the same float values); npred_dataset_open always gives float32. */
NPRED_API const float *npred_dataset_field(const npred_dataset *d, npred_field f);
NPRED_API void npred_dataset_get_stats(const npred_dataset *d, npred_field f, npred_dataset_stats *out);
/* meta/trials/<name>.npy and meta/neurons/<name>.npy as read (NULL if absent). */
NPRED_API const npred_array *npred_dataset_trial_info(const npred_dataset *d, const char *name);
NPRED_API const npred_array *npred_dataset_neuron_info(const npred_dataset *d, const char *name);
/* Names of the meta/trials and meta/neurons arrays, sorted. */
NPRED_API size_t npred_dataset_trial_info_names(const npred_dataset *d, const char *const **names);
NPRED_API size_t npred_dataset_neuron_info_names(const npred_dataset *d, const char *const **names);
/* Tier of each trial (N,), and frame_image_id as int64 (N,). */
NPRED_API const npred_tier *npred_dataset_tiers(const npred_dataset *d);
NPRED_API const int64_t *npred_dataset_image_ids(const npred_dataset *d);

/* ---------------------------------------------------------------- config */
/* Output length of skimage.transform.rescale along one axis:
 * max(round_half_even(scale * n), 1). */
NPRED_API int npred_rescale_size(int n, double scale);


/* Optional integer/double: `set` says whether the value was given (Python None). */
typedef struct { int set; int64_t v; } npred_opt_i64;
typedef struct { int set; double v; } npred_opt_f64;
/* Optional list of strings / integers; set = 0 is None (an empty list is set). */
typedef struct { int set; char **v; size_t n; } npred_strlist;
typedef struct { int set; int64_t *v; size_t n; } npred_i64list;

/* static_loaders arguments by their sensorium names, with the same defaults.
 * Initialise with npred_loader_config_init, release with _free (the config owns
 * its lists). Per-path lists (neuron_ids, image_ids) hold one entry per path;
 * an entry with set = 0 means None for that path. */
typedef struct {
    int64_t batch_size;              /* required (> 0) */
    npred_opt_i64 seed;              /* static_loaders(seed=): stored for the caller; the loaders
                                        shuffle with the npred_rng passed to them */
    npred_strlist areas, layers;     /* neuron filters on meta/neurons/area, layer */
    char *tier;                      /* NULL: all four tiers */
    npred_i64list *neuron_ids;       /* per path: select by unit id */
    size_t n_neuron_ids;
    npred_opt_i64 neuron_n;
    int64_t exclude_neuron_n;        /* 0 */
    npred_opt_i64 neuron_base_seed;
    npred_i64list *image_ids;        /* per path: train trials by frame_image_id */
    size_t n_image_ids;
    npred_opt_i64 image_n, image_base_seed;
    int cuda;                        /* 1; accepted and ignored (CPU) */
    int normalize;                   /* 1 */
    npred_strlist exclude;           /* fields the normalizer skips */
    int exclude_is_string;           /* exclude was one string: Python `k in "..."` substring test */
    int include_behavior;            /* 0 */
    int add_behavior_as_channels;    /* 1 */
    npred_i64list select_input_channel;  /* None; an int is a one-element list */
    int file_tree;                   /* 1; 0: the paths are HDF5 StaticImageSet files */
    npred_strlist image_condition;   /* filter on frame_image_class */
    npred_opt_f64 inputs_mean, inputs_std;
    npred_opt_f64 scale;             /* None: no ScaleInputs */
    int include_eye_position;        /* 0 (None) */
    int add_eye_pos_as_channels;     /* 0 (None) */
    npred_strlist include_trial_info_keys;
    int overwrite_data_path;         /* 1; accepted (the /data/mouse/toliaslab prefix is never used) */
} npred_loader_config;

NPRED_API void npred_loader_config_init(npred_loader_config *c);
NPRED_API void npred_loader_config_free(npred_loader_config *c);
/* Set options from JSON text holding one object whose keys are static_loaders
 * argument names (null = None). "paths" is returned through paths/n_paths when
 * non-NULL (malloc'ed strings; free with npred_loader_paths_free), else rejected.
 * Unknown keys, wrong types and the arguments the reference cannot run
 * (include_px_position, image_reshape_list) give NPRED_ERR_CONFIG naming the key. */
NPRED_API npred_status npred_loader_config_parse(npred_loader_config *c, const char *json,
                                       char ***paths, size_t *n_paths);
NPRED_API void npred_loader_paths_free(char **paths, size_t n);
/* Every option, resolved, as JSON text by static_loaders names (what `npred train` keeps
 * in a run's config.json; without "paths"; batch_size left out while it is not set):
 * npred_loader_config_parse reads it back to the same options. malloc'ed; free with
 * free(). NULL (NPRED_ERR_NOMEM) when out of memory. */
NPRED_API char *npred_loader_config_json(const npred_loader_config *c);

/* ---------------------------------------------------------------- loaders */
/* static_loaders(paths, ...): one session per path, in order. */
typedef struct npred_loaders npred_loaders;

typedef struct {
    const char *data_key;
    const npred_dataset *dataset;    /* its raw images are not kept (npred_dataset_field) */
    int64_t n_neurons;               /* n after the neuron selection */
    const int64_t *neuron_idx;       /* (n,) rows of meta/neurons selected, in output order */
    const int64_t *unit_ids;         /* (n,) unit ids of the selected neurons */
    const double *cell_motor_coordinates; /* (n, 3) or NULL if absent */
    int img_c, img_h, img_w;         /* image shape after the transforms */
    int behavior_dim, pupil_dim;     /* 0 if the field is not in the batch */
    int tier_enabled[NPRED_TIER_COUNT];
    int64_t tier_n[NPRED_TIER_COUNT];      /* trials of each tier after image selection */
    const int64_t *tier_idx[NPRED_TIER_COUNT]; /* (tier_n,) trial rows, ascending unless drawn */
    int64_t tier_batches[NPRED_TIER_COUNT];    /* ceil(tier_n / batch_size) */
    float response_precision_threshold;    /* 0.01 * mean(std) (normalize only) */
} npred_session_info;

NPRED_API npred_status npred_loaders_open(npred_loaders **out, const char *const *paths, size_t n_paths,
                                const npred_loader_config *cfg);
NPRED_API void npred_loaders_free(npred_loaders *L);
NPRED_API size_t npred_loaders_count(const npred_loaders *L);
NPRED_API void npred_loaders_session(const npred_loaders *L, size_t s, npred_session_info *out);
/* Index of a session by data_key, -1 if none. */
NPRED_API int npred_loaders_find(const npred_loaders *L, const char *data_key);
/* Normalizer constants of a session (NULL where the field is not normalized):
 * response precision (all neurons, before selection), behavior precision,
 * eye mean/std, inputs mean/std. */
typedef struct {
    int active;
    float inputs_mean, inputs_std;
    const float *response_precision;  /* (n_neurons of the scan,) */
    const float *behavior_precision;  /* (behavior_dim,) */
    const float *eye_mean, *eye_std;  /* (pupil_dim,) */
    int images, responses, behavior, pupil_center; /* 1 where the normalizer transforms the field */
} npred_normalizer_info;
NPRED_API void npred_loaders_normalizer(const npred_loaders *L, size_t s, npred_normalizer_info *out);
/* NeuroNormalizer.inv for one field of session s: B trials of `per` values each, back
 * from the loader's units to the dataset's (out may alias x):
 *   images x * std + mean (any per: the image elements of the raw channels);
 *   responses x / precision of each selected neuron (per = the session's n; so model
 *   predictions come back in response units); behavior x / precision (per =
 *   behavior_dim); pupil_center x * std + mean (per = pupil_dim).
 * The identity where the field is not normalized (normalize false, `exclude`).
 * NPRED_ERR_SHAPE when per does not match the field. */
NPRED_API npred_status npred_loaders_inv(const npred_loaders *L, size_t s, npred_field f, const float *x, float *out,
                                         int64_t B, int64_t per);

/* The image pipeline of a session after the normalizer: constant planes appended
 * (behaviour, then pupil centre; the normalized values), channel selection, and the
 * rescale from the raw (raw_h, raw_w) to the batch's size (ScaleInputs). */
typedef struct {
    int raw_c, raw_h, raw_w;     /* data/images of the scan */
    int behavior_planes, pupil_planes;
    int n_select;                /* select_input_channel entries, 0 for none */
    const int64_t *select;       /* (n_select,) as given (negative counts from the end) */
    int scaled;                  /* ScaleInputs present */
    double scale;                /* its scale (when scaled) */
} npred_pipeline_info;
NPRED_API void npred_loaders_pipeline(const npred_loaders *L, size_t s, npred_pipeline_info *out);

/* A batch; buffers are sized once for the largest session (capacity = batch_size
 * or an explicit capacity), so any session fits. */
typedef struct {
    int session;              /* index into the loaders */
    const char *data_key;
    int64_t n;                /* B: rows in this batch */
    int64_t capacity;
    int c, h, w;              /* image shape of this batch */
    int64_t n_neurons;
    float *images;            /* (B, C, H, W) */
    float *responses;         /* (B, n) */
    float *behavior;          /* (B, behavior_dim) or NULL if not included */
    float *pupil_center;      /* (B, pupil_dim) or NULL */
    int behavior_dim, pupil_dim;
    size_t n_info;
    const char *const *info_names;  /* include_trial_info_keys */
    float **info;             /* n_info arrays of (B, 1) */
    int64_t *trials;          /* (B,) trial rows (file index i of data/<field>/<i>.npy) */
} npred_batch;

/* Allocate a batch able to hold `capacity` trials of any session (0: batch_size). */
NPRED_API npred_status npred_batch_init(npred_batch *b, const npred_loaders *L, int64_t capacity);
NPRED_API void npred_batch_free(npred_batch *b);

/* Transform the given trials of session s into b (overwrites b). */
NPRED_API npred_status npred_loaders_get(const npred_loaders *L, size_t s, const int64_t *trials, int64_t n,
                               npred_batch *b);

/* Iterator over one session's tier: train is shuffled from rng at begin (rng may
 * be NULL for the other tiers), other tiers run in ascending trial order; the
 * last batch may be short (no drop_last). */
typedef struct {
    const npred_loaders *L;
    size_t session;
    npred_tier tier;
    int64_t *order;           /* (tier_n,) */
    int64_t n, pos;
} npred_loader_iter;

NPRED_API npred_status npred_loader_iter_begin(npred_loader_iter *it, const npred_loaders *L, size_t s,
                                     npred_tier tier, npred_rng *rng);
/* Next batch into b; *has = 0 at the end of the epoch. */
NPRED_API npred_status npred_loader_iter_next(npred_loader_iter *it, npred_batch *b, int *has);
NPRED_API void npred_loader_iter_free(npred_loader_iter *it);

/* The cyclers of neuralpredictors training/cyclers.py over all sessions of a tier:
 *   LongCycler:  round robin in session order, n_sessions * max_batches steps; a
 *                session that runs out starts a fresh pass (train: a new shuffle
 *                from rng);
 *   ShortCycler: the same with n_sessions * min_batches steps;
 *   Exhauster:   every batch of session 0, then of session 1, ... (sum of the
 *                batches; each session's pass is begun once). */
typedef enum {
    NPRED_CYCLER_LONG = 0,
    NPRED_CYCLER_SHORT,
    NPRED_CYCLER_EXHAUST
} npred_cycler_kind;

typedef struct {
    const npred_loaders *L;
    npred_tier tier;
    npred_rng *rng;
    npred_cycler_kind kind;
    npred_loader_iter *its;   /* one per session */
    int64_t max_batches, min_batches, step, total;
    size_t current;           /* Exhauster: the session being read */
} npred_cycler;

/* LongCycler (npred_cycler_begin_kind with NPRED_CYCLER_LONG). */
NPRED_API npred_status npred_cycler_begin(npred_cycler *c, const npred_loaders *L, npred_tier tier, npred_rng *rng);
NPRED_API npred_status npred_cycler_begin_kind(npred_cycler *c, const npred_loaders *L, npred_tier tier,
                                               npred_rng *rng, npred_cycler_kind kind);
NPRED_API npred_status npred_cycler_next(npred_cycler *c, npred_batch *b, int *has);
NPRED_API int64_t npred_cycler_len(const npred_cycler *c);
/* Data-parallel form of npred_cycler_next: the same global batch of k trials
 * (same order, same reshuffles, so every part must be driven by an identically
 * seeded rng), of which only trials [k*part/parts, k*(part+1)/parts) are loaded
 * into b. b->n may be 0 (b->session and data_key still set); *global_n = k and
 * *offset = the first trial of the part within the global batch. */
NPRED_API npred_status npred_cycler_next_part(npred_cycler *c, npred_batch *b, int *has, int part, int parts,
                                    int64_t *global_n, int64_t *offset);
NPRED_API void npred_cycler_free(npred_cycler *c);

/* RepeatsBatchSampler: trials of a tier grouped by frame_image_id, one group per
 * unique id in ascending id order, trials ascending within a group.
 * *trials (tier_n,) and *offsets (n_groups + 1,) are malloc'ed. */
NPRED_API npred_status npred_loaders_repeats(const npred_loaders *L, size_t s, npred_tier tier,
                                   int64_t **trials, int64_t **offsets, int64_t *n_groups);

#ifdef __cplusplus
}
#endif
#endif
