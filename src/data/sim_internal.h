/* Internal to the simulator (src/data/simulate.c and sim_*.c): constants of the
 * generator, the ground-truth model, the workspace and the trial layout. */
#ifndef NPRED_DATA_SIM_INTERNAL_H
#define NPRED_DATA_SIM_INTERNAL_H

#include <cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/simulate.h"

#include "npred/npy.h"
#include "data/zipfs.h"
#include "npred/data.h"

#define N_ORI 4
#define N_SCALE 2
#define N_LIN (N_SCALE * N_ORI * 2) /* even and odd phase */
#define N_FEAT (N_LIN * 2)          /* relu(+y), relu(-y) */
#define KMAX 17                     /* stored filter size (largest scale) */
#define KPAD 8                      /* KMAX / 2 */
#define CHUNK 32                    /* trials generated in parallel before writing */
#define N_CALIB 16                  /* images used to standardise the features */

/* Gabor wavelength (feature-map pixels) of scale s is LAMBDA0 * 2^s, sigma = lambda / 2,
 * radius = 2 sigma (9x9 and 17x17). */
#define LAMBDA0 4.0

/* generator constants (also written to params.json) */
#define IMG_GRAY 128.0   /* x = (v - IMG_GRAY) / IMG_SCALE before filtering */
#define IMG_SCALE 64.0
#define PUPIL_MEAN 18.0
#define PUPIL_SD 5.0
#define EYE_X 120.0
#define EYE_Y 80.0
#define EYE_SDX 6.0
#define EYE_SDY 4.0
#define EYE_SHIFT 0.04   /* grid units per standard deviation of eye position */
#define EYE_SHIFT_MAX 0.15
#define RF_LIMIT 0.95
#define RF_SCATTER 0.02
#define RF_NONLIN 0.1
#define CORTEX_HALF 300.0 /* µm: half width of the imaged patch */

enum { TAG_IMAGE = 1, TAG_TRIAL, TAG_NEURONS, TAG_LAYOUT, TAG_CALIB, TAG_SHARED };

static inline uint64_t hash_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static inline void rng_for(npred_rng *r, uint64_t seed, uint64_t tag, uint64_t a, uint64_t b)
{
    npred_rng_seed(r, hash_mix(hash_mix(hash_mix(seed, tag), a), b));
}

static inline double unif(npred_rng *r, double lo, double hi) { return lo + (hi - lo) * npred_rng_uniform(r); }

static inline double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

static inline double softplus(double u) { return u > 30.0 ? u : log1p(exp(u)); }

static inline double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

typedef struct {
    int H, W, f, h, w;
    float filt[N_LIN][KMAX][KMAX]; /* centred in KMAX x KMAX, zero outside the radius */
    int radius[N_SCALE];
    double lambda[N_SCALE], sigma[N_SCALE];
    double feat_mean[N_FEAT], feat_std[N_FEAT]; /* calibration of the rectified features */
} gt_model;

typedef struct {
    int n;
    int64_t *unit_ids;    /* (n) */
    double *coords;       /* (n, 3) µm */
    double *rf_grid;      /* (n, 2) x, y in [-1, 1] */
    double *rf_pix;       /* (n, 2) x, y in full-resolution pixels */
    float *weight;        /* (n, K) */
    double *bias;         /* (n) */
    double *gain;         /* (n) */
    double *kappa;        /* (n) modulation strength (0 unless modulate) */
    double retino[8];     /* rotation, scale x, scale y, flip, offset x, offset y, centre x, centre y */
    int64_t *match_id;    /* (n) multi_match_id with shared_neurons: 1..S shared, 1000000 (s+1) + j + 1 own */
} gt_neurons;

typedef struct {
    float *img;  /* (CHUNK, H, W) images of the chunk */
    float *xp;   /* (threads, h + 2 KPAD, w + 2 KPAD) */
    float *F;    /* (threads, h, w, K) */
    float *row;  /* (threads, max(w, gen_tmp_len)) scratch */
    double *lam; /* (threads, n) */
    int threads;
} workspace;

typedef struct {
    int64_t N;           /* trials */
    int64_t *image_id;   /* (N) */
    int *tier;           /* (N) 0 train, 1 validation, 2 test, 3 final_test */
    int64_t *trial_idx;  /* (N) */
    int64_t *test_row;   /* (N) row in the test arrays or -1 */
    int64_t n_test;      /* test trials */
} layout;

/* ---- stimuli (sim_stimuli.c) ---- */

/* Scratch floats gen_image needs: column tables + the finest noise lattice. */
size_t sim_gen_tmp_len(int H, int W);
/* One naturalistic image, values integers 0..255 stored as float.
 * 1/f noise: octaves of smoothly interpolated lattice noise with equal variance
 * per octave (power ~ 1/f^2), then 1-4 soft occluding shapes (edges, ellipses,
 * bars). */
void sim_gen_image(float *img /* (H, W) */, int H, int W, uint64_t seed, float *tmp /* sim_gen_tmp_len(H, W) */);
/* Behaviour (pupil dilation, its derivative, running speed) and eye position of a
 * trial, driven by one latent arousal variable. */
void sim_gen_behavior(npred_rng *r, float beh[3], float eye[2]);
void sim_layout_free(layout *L);
npred_status sim_layout_make(layout *L, const npred_sim_params *p, int session);

/* ---- ground-truth model (sim_truth.c) ---- */

void sim_build_filters(gt_model *m);
void sim_neurons_free(gt_neurons *nr);
npred_status sim_neurons_make(gt_neurons *nr, const npred_sim_params *p, const gt_model *m, int session);
/* Noise-free rates of all neurons for one feature map. shift: grid units added to
 * every RF position; mod: modulation signal (rate *= exp(kappa mod)). */
void sim_rates(double *lam /* (n) */, const float *F /* (h, w, K) */, const gt_model *m,
               const gt_neurons *nr, double shx, double shy, double mod);
/* m_t = 0.6 (pupil - 18) / 5 + 0.4 (speed / 4 - 0.5), clipped to [-3, 3]. */
double sim_modulation(const float beh[3]);
void sim_eye_shift(const float eye[2], double *sx, double *sy);
void sim_ws_free(workspace *ws);
size_t sim_ws_row_len(const gt_model *m);
npred_status sim_ws_init(workspace *ws, const gt_model *m, int n);
/* Image `img` -> feature map in the calling thread's buffers; returns F. */
float *sim_image_features(workspace *ws, const gt_model *m, const float *img);
npred_status sim_calibrate(gt_model *m, workspace *ws, uint64_t seed);

/* Retinotopy of a session (rt: rotation, scale x, scale y, flip, offset x, offset y,
 * centre x, centre y) and one neuron placed through it: unit id after *id (with
 * gaps), cortical position (µm), RF centre (grid units). */
void sim_retinotopy_draw(npred_rng *r, double rt[8]);
void sim_place_neuron(npred_rng *r, const double rt[8], int64_t *id, int64_t *unit_id, double coords[3],
                      double grid[2]);

/* ---- noise (sim_noise.c) ---- */

/* Poisson(lam): Knuth's product method on pieces of at most 20 (sum of Poissons). */
double sim_draw_poisson(npred_rng *r, double lam);
/* Gamma(shape k, scale 1): Marsaglia & Tsang (2000), with the k < 1 boost. */
double sim_draw_gamma(npred_rng *r, double k);
/* NP measures.oracle_corr_jackknife: every repeat against the mean of the other
 * repeats of its image, correlated over all test trials (std ddof 0, +1e-8). */
void sim_oracle_jackknife(double *out /* (n) */, const float *resp /* (N, n) */, int n,
                          const int64_t *groups /* (n_img, reps) file indices */, int n_img, int reps);
/* Expected correlation of one noisy trial with its noise-free rate, over the test
 * trials: sqrt(Var(lam) / (Var(lam) + E[noise variance])). */
void sim_oracle_rate(double *out /* (n) */, const float *lam /* (T, n) */, size_t T, int n,
                     const npred_sim_params *p);

/* Checks shared by npred_sim_validate and npred_vsim_validate (simulate.c). */
/* out_dir: created if missing; a non-empty one only with force (`what` names what
 * --force replaces). */
npred_status sim_prepare_out(const char *out_dir, int force, const char *what);
npred_status sim_validate_common(int sessions, int neurons, int animal_id, double rate_scale, npred_sim_noise noise,
                                 double gamma_shape, int write_tree, int write_zip);

/* ---- writer (sim_writer.c) ---- */
const char *sim_noise_name(npred_sim_noise n);
/* params.json: an object with generator, data_key, session and seed (a string); NULL
 * when out of memory. sim_json_write prints it to root/meta/ground_truth/params.json
 * and deletes it. */
cJSON *sim_json_head(const char *generator, const char *key, int session, uint64_t seed);
npred_status sim_json_write(const char *root, cJSON *j);

npred_status sim_mkdir_p(const char *path);
int sim_dir_is_empty(const char *path);
/* Remove a file or a whole tree (no symlinks followed). Missing is fine. */
npred_status sim_rm_tree(const char *path);
/* Serialise with the npy writer and write root/rel (plain write: a fresh tree
 * needs no atomic rename, and tens of thousands of fsyncs would dominate). */
npred_status sim_put_npy(const char *root, const char *rel, npred_dtype dt, size_t itemsize, int ndim,
                         const int64_t *shape, const void *data);
npred_status sim_put_1d(const char *root, const char *rel, npred_dtype dt, int64_t n, const void *data);
npred_status sim_put_2d(const char *root, const char *rel, npred_dtype dt, int64_t a, int64_t b,
                        const void *data);
/* 1-D '<U<width>' array; strs[i] ASCII, at most `width` characters. */
npred_status sim_put_str(const char *root, const char *rel, const char *const *strs, int64_t n, size_t width);
/* NumPy median of v[0..n), n >= 1 (mean of the two middle values for even n); v is reordered. */
double sim_median_of(double *v, size_t n);
npred_status sim_matrix_stats(const char *root, const char *field, const float *a, size_t rows, size_t cols);
/* Image statistics from the histogram of the integer pixel values. */
npred_status sim_image_stats(const char *root, const uint64_t hist[256]);
npred_status sim_put_json(const char *root, const npred_sim_params *p, const gt_model *m,
                          const gt_neurons *nr, int session, const char *key);
npred_status sim_make_dirs(const char *root);
/* meta/neurons: unit_ids, cell_motor_coordinates, animal_ids, sessions (1), scan_idx
 * (session + 1), area (V1), layer (L2/3); tmp (n) and strs (n) are scratch. */
npred_status sim_write_neurons(const char *root, int animal_id, int session, int64_t n, const int64_t *unit_ids,
                               const double *coords, int64_t *tmp, const char **strs);
npred_status sim_write_meta(const char *root, const npred_sim_params *p, const gt_neurons *nr,
                            const layout *L, int session);

#endif
