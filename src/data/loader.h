/* loader: static_loaders configuration, per-session transform pipeline,
 * iterators, LongCycler and the repeats sampler (API in npred/data.h).
 *
 * Per sample, in the reference order: NeuroNormalizer -> AddBehaviorAsChannels
 * -> AddPupilCenterAsChannels -> SelectInputChannel -> ScaleInputs -> Subsample
 * -> float32. npred_loaders_get runs the samples of a batch in parallel
 * (OpenMP over samples; each thread has its own scratch images). */
#ifndef NPRED_DATA_LOADER_H
#define NPRED_DATA_LOADER_H

#include "npred/data.h"
#include "base/json.h"

typedef struct cJSON cJSON;

/* npred_loader_config_parse on a parsed JSON object (keys: static_loaders argument names)
 * (null = None). "paths" is returned through paths/n_paths when non-NULL
 * (malloc'ed strings; free with npred_loader_paths_free), else rejected.
 * Unknown keys, wrong types and the arguments the reference cannot run
 * (include_px_position, image_reshape_list) give NPRED_ERR_CONFIG naming the key; `where`
 * (the file; NULL: "loader config") starts every message. */
npred_status npred_loader_config_set_json(npred_loader_config *c, const cJSON *obj, const char *where,
                                          char ***paths, size_t *n_paths);

/* npred_loaders_open; keep_raw = 1 keeps the raw images and transforms them per
 * batch (what it does anyway when the transformed images would take more memory)
 * instead of keeping them transformed: the batches are bit-identical either way. */
npred_status npred_loaders_open_mode(npred_loaders **out, const char *const *paths, size_t n_paths,
                                     const npred_loader_config *c, int keep_raw);

/* 1 when session s keeps its images transformed (as the batches carry them), 0 raw. */
int npred_loaders_images_ready(const npred_loaders *L, size_t s);

/* A 64-bit fingerprint of what the loaders feed a trainer: per session its
 * data_key, trial count, the images as kept, the raw data of every other field,
 * the tiers and the selected neuron rows. Data-parallel ranks compare theirs
 * before training. */
uint64_t npred_loaders_fingerprint(const npred_loaders *L);

/* ---------------------------------------------------------------- numpy RNG */
/* numpy.random.RandomState (legacy MT19937), for the seeded neuron/image draws
 * of static_loader: seed(s), permutation(n), choice(n, k, replace=False). */
typedef struct { uint32_t mt[624]; int pos; } npred_np_random;
void npred_np_random_seed(npred_np_random *r, uint32_t seed);
uint32_t npred_np_random_u32(npred_np_random *r);
/* permutation of 0..n-1 into out (n,) */
void npred_np_random_permutation(npred_np_random *r, int64_t *out, int64_t n);
/* SampledSubsetRandomSampler(indices, num_samples) (sorted = 0) and
 * SampledSubsetSequentialSampler (sorted = 1): one pass of the sampler, i.e.
 * np.random.choice(indices, num_samples, replace = num_samples > n) on r
 * (RandomState: with replacement randint(0, n) draws, without it the first
 * num_samples of permutation(n)), then np.sort for the sequential one.
 * out: (num_samples,). */
npred_status npred_sampled_subset(int64_t *out, const int64_t *indices, int64_t n, int64_t num_samples,
                                  int sorted, npred_np_random *r);

/* ---------------------------------------------------------------- option readers */
/* The loader configurations' readers of sensorium-style options (shared by the static
 * and the video loader): a list of strings (or one string, *was_string set; null =
 * None); an optional integer / number >= lo (null = None); a flag (null = False). */
void npred_loader_strlist_free(npred_strlist *l);
int npred_loader_read_strlist(npred_json_reader *r, const cJSON *v, npred_strlist *out, int *was_string);
int npred_loader_read_opt_i64(npred_json_reader *r, const cJSON *v, npred_opt_i64 *out);
int npred_loader_read_opt_num(npred_json_reader *r, const cJSON *v, double lo, npred_opt_f64 *out);
int npred_loader_read_flag(npred_json_reader *r, const cJSON *v, int *out);
/* NeuroNormalizer's `k not in exclude` (exclude_is_string: Python's substring test). */
int npred_loader_excluded(const npred_strlist *exclude, int exclude_is_string, const char *field);

#endif
