/* Readouts: per-session maps from core features (B, c, h, w) to neuron outputs (B, n).
 *
 * Semantics of neuralpredictors 0.3.0 (spec §2). Every readout stores its
 * parameters in the model's parameter table under "<prefix><name>" where the
 * prefix is e.g. "readout.21067-10-18." and <name> is the PyTorch attribute
 * ("_features", "spatial", "sigma", "_mu", "mu_transform.0.weight", ...).
 *
 * Life cycle:
 *   npred_readout_config cfg; npred_readout_config_default(&cfg, TYPE, c, h, w, n);
 *   npred_readout_declare(&r, &cfg, "readout.KEY.", &table);  // before npred_ptable_alloc
 *   npred_ptable_alloc(&table);
 *   npred_readout_setup(&r, &table, max_batch);               // workspaces, no malloc later
 *   npred_readout_init_params(&r, &table, &rng, mean_activity);
 *   npred_readout_forward(...); npred_readout_backward(...);
 *
 * forward() keeps a pointer to its input x for backward(); the caller keeps x
 * alive and unchanged until then. backward() accumulates into the table's
 * gradient buffer and into dx / dshift when given (NULL = not needed);
 * backward_set() writes dx instead (for the first or only readout writing a
 * gradient: no zeroing pass before it). */
#ifndef NPRED_READOUTS_READOUT_H
#define NPRED_READOUTS_READOUT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"
#include "npred/base.h"

typedef enum {
    NPRED_READOUT_FULL_GAUSSIAN2D = 0,
    NPRED_READOUT_GAUSSIAN2D,        /* legacy Gaussian2d */
    NPRED_READOUT_FACTORIZED,        /* FullFactorized2d / SpatialXFeatureLinear */
    NPRED_READOUT_POINT_POOLED,      /* PointPooled2d */
    NPRED_READOUT_ATTENTION,         /* AttentionReadout */
    NPRED_READOUT_POINT_PYRAMID      /* PointPyramid2d */
} npred_readout_type;

/* PointPyramid2d's `type`: the Pyramid filter */
typedef enum { NPRED_PYRAMID_GAUSS5X5 = 0, NPRED_PYRAMID_GAUSS3X3, NPRED_PYRAMID_LAPLACE5X5 } npred_pyramid_type;

typedef enum { NPRED_GAUSS_FULL = 0, NPRED_GAUSS_UNCORRELATED, NPRED_GAUSS_ISOTROPIC } npred_gauss_type;

struct npred_readout;

typedef struct {
    npred_readout_type type;
    int c, h, w;  /* in_shape */
    int n;        /* outdims */
    int bias;
    double feature_reg_weight; /* (gamma_readout overrides it in 0.3.0) */
    /* FullFactorized2d */
    int normalize;
    double init_noise;
    int constrain_pos;
    int positive_weights;
    /* Gaussian readouts */
    double init_mu_range;
    double init_sigma;       /* FullGaussian2d */
    double init_sigma_range; /* Gaussian2d */
    int fixed_sigma;         /* Gaussian2d */
    npred_gauss_type gauss_type;
    int batch_sample;
    int align_corners;
    /* grid_mean_predictor (type "cortex") */
    int predicted_grid;
    int gmp_input_dimensions;
    int gmp_hidden_layers;
    int gmp_hidden_features;
    int gmp_final_tanh;
    /* GeneralizedFullGaussianReadout2d (HEAD; FullGaussian2d only): params_n >= 1 outputs
     * per neuron from one shared grid, _features (P, 1, c, 1, n), bias (P, n), y (P, B, n).
     * 0 = plain FullGaussian2d. Set by the model from the encoder (docs/encoders.md). */
    int params_n;
    /* feature / grid sharing (spec §3): shared_features / shared_grid = 1 index the
     * features / grid by match id; match_ids (n) are required then (declare copies
     * them and computes np.unique's inverse index into r->match_idx and n_unique).
     * features_from / grid_from: the first session's readout whose _features / _mu
     * this one borrows (declared before it in the same table); NULL = original. */
    int shared_features;
    int shared_grid;
    int n_unique;
    const int64_t *match_ids;
    const struct npred_readout *features_from;
    const struct npred_readout *grid_from;
    /* PointPooled2d */
    int pool_steps;
    int pool_kern;
    double init_range;
    /* AttentionReadout */
    int attention_kernel;
    int attention_layers;
    /* PointPyramid2d (init_range, align_corners above) */
    int scale_n;
    npred_pyramid_type pyramid_type;
    int downsample;
    int positive;
} npred_readout_config;

typedef struct npred_readout npred_readout;

struct npred_readout {
    npred_readout_config cfg;
    char prefix[96];
    /* parameter table indices (-1 when absent) */
    int p_features, p_scales, p_spatial, p_bias, p_mu, p_sigma, p_grid;
    int p_source_grid;           /* buffer (n, d) */
    int p_mlp_w[4], p_mlp_b[4];  /* grid-mean-predictor linears */
    int n_mlp;
    int mlp_dim[5];              /* widths: d, hidden..., 2 */
    int p_fsi, p_gsi;            /* buffers feature_sharing_index, grid_sharing_index (n) */
    int p_mt_w, p_mt_b;          /* borrowed grid: mu_transform = Linear(2, 2) */
    int p_att_w, p_att_b;        /* AttentionReadout: last conv weight (n, c, k, k), bias (n) */
    int p_filter;                /* PointPyramid2d: buffer gauss_pyramid.filter (k, k) */
    int owns_features, owns_grid; /* 0 when borrowed from another session's readout */
    int64_t *match_idx;          /* (n) sharing index, or NULL */
    int max_batch;
    /* workspace and caches (type-specific use) */
    float *ws;
    size_t ws_size;
    /* Gaussian readouts: when set before npred_readout_setup, the channels-last copy of
     * the input and its gradient and the sampled positions of the last forward (grid,
     * their gradient) live here (npred_readout_nhwc_floats floats, not owned) instead
     * of in ws: a model's sessions share one (a backward is of the last forward) */
    float *nhwc;
    size_t nhwc_floats;
    const float *x; /* cached input of the last forward (B, c, h, w) */
    int B;
    int train;
    int mu_cached;  /* Gaussian: the workspace holds the grid predictor's output for its saved inputs */
    int rows_made;  /* Gaussian: the last forward made the feature rows in the workspace (its backward's) */
    void *impl;     /* type-specific state */
    /* bf16 precision (npred_readout_set_bf16): FullFactorized2d's GEMMs in bf16 with fp32
     * accumulation, their operands packed into bf_a / bf_b (64-byte aligned, bf_words each) */
    int bf16;
    uint32_t *bf_a, *bf_b;
    size_t bf_words[2];
};

void npred_readout_config_default(npred_readout_config *cfg, npred_readout_type type, int c, int h, int w, int n);
npred_status npred_readout_declare(npred_readout *r, const npred_readout_config *cfg, const char *prefix,
                                   npred_ptable *t);
npred_status npred_readout_setup(npred_readout *r, const npred_ptable *t, int max_batch);
/* floats of the input copy, its gradient and the positions that r->nhwc holds for it (0: none) */
size_t npred_readout_nhwc_floats(const npred_readout *r, int max_batch);
/* Initialise parameters as neuralpredictors does (mean_activity (n) or NULL -> bias 0). */
void npred_readout_init_params(npred_readout *r, npred_ptable *t, npred_rng *rng, const float *mean_activity);
/* y (B, n) = readout(x (B, c, h, w)); shift (B, 2) or NULL; train selects sampling
 * (Gaussian readouts draw N(0,1) from rng, or take `noise` (B, n, 2) when given). */
npred_status npred_readout_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                   int B, int train, npred_rng *rng, const float *noise);
void npred_readout_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift);
/* As npred_readout_backward, but dx (B, c, h, w) is written: its contents on entry
 * are ignored, and the result has the bits that npred_readout_backward gives onto a
 * zeroed dx (a -0 sum is stored as +0, as adding it to +0 gave). The Gaussian readouts,
 * PointPooled2d and PointPyramid2d write their transposed or summed gradient straight
 * into dx; FullFactorized2d and AttentionReadout zero dx first and add. */
void npred_readout_backward_set(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift);
/* The readout's regularizer value; when gscale != 0 its gradient times gscale is
 * accumulated into the table. */
double npred_readout_regularizer(npred_readout *r, npred_ptable *t, double gscale);
/* The 0.3.0 repr, child modules included (e.g. "full FullGaussian2d (4 x 6 x 8 -> 5)
 * with bias, with predicted grid  -> Sequential(\n  (0): Linear(...)...)\n"); truncated to n. */
void npred_readout_repr(const npred_readout *r, char *buf, size_t n);
void npred_readout_free(npred_readout *r);
/* bf16 products (1) or fp32 (0, the default) in the readout's GEMMs: FullFactorized2d's
 * three (docs/precision.md); the other readouts stay fp32 and ignore it. Allocates the
 * packing space for the set-up batch (npred_readout_setup keeps it sized); returns
 * NPRED_ERR_UNSUPPORTED without AVX-512 BF16, NPRED_ERR_NOMEM. */
npred_status npred_readout_set_bf16(npred_readout *r, int on);

/* Helpers shared by the readouts (readout.c).
 * feature_l1: feature_reg_weight * sum |features| (the whole `features`/`_features`
 * entry), gradient times gscale accumulated when gscale != 0.
 * bias_grad: bias.grad += sum over the batch of dy (B, n); no-op without a bias.
 * point_grid: the point readouts' in-place clamp of `grid` (1, n, 1, 2) to [-1, 1], then
 * grid_b (B, n, 2) = grid + shift[b] (shift (B, 2) or NULL).
 * point_grid_grad: grid.grad += sum over b of dgrid (B, n, 2); dshift[b] += sum over n.
 * point_features: F (n, m) = features (1, m, 1, n) transposed; point_features_grad the
 * reverse, accumulated into features.grad. */
double npred_readout_feature_l1(npred_readout *r, npred_ptable *t, double gscale);
void npred_readout_bias_grad(npred_readout *r, npred_ptable *t, const float *dy, int B);
void npred_readout_point_grid(npred_readout *r, npred_ptable *t, float *grid, const float *shift, int B);
void npred_readout_point_grid_grad(npred_readout *r, npred_ptable *t, const float *dgrid, float *dshift, int B);
void npred_readout_point_features(const npred_readout *r, const npred_ptable *t, float *F, int m);
void npred_readout_point_features_grad(npred_readout *r, npred_ptable *t, const float *dF, int m);
/* The point readouts' output from L sampled levels lev[l] (B, h[l], w[l], C), channels last:
 * y (B, n) = bias + sum over l of the level sampled at grid (B, n, 2) times F[:, l C : (l + 1) C]
 * (F (n, L C) from point_features). */
void npred_readout_point_sample(const npred_readout *r, const npred_ptable *t, float *y, float *const *lev,
                                const int *h, const int *w, int L, const float *grid, const float *F, int B);

/* helpers shared by the readouts (readout.c), continued */
/* Declare "<prefix><key>" of r (ndim of d0..d3); the entry index, or -1 with an error set. */
int npred_readout_param(npred_ptable *t, const npred_readout *r, const char *key, int is_buffer, npred_ptype dt,
                            int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

/* type-specific implementations (readouts/<type>.c) */
npred_status npred_factorized_declare(npred_readout *r, npred_ptable *t);
size_t npred_factorized_workspace(const npred_readout *r, int max_batch);
void npred_factorized_init(npred_readout *r, npred_ptable *t, npred_rng *rng);
npred_status npred_factorized_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, int B);
void npred_factorized_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx);
double npred_factorized_regularizer(npred_readout *r, npred_ptable *t, double gscale);
/* words of bf16 packing space for each of the two operands at max_batch */
void npred_factorized_bf16_words(const npred_readout *r, int max_batch, size_t words[2]);
void npred_factorized_repr(const npred_readout *r, char *buf, size_t n);

/* FullGaussian2d (gaussian.c): source_grid buffer from raw cortical coordinates g (n, d),
 * d = gmp_input_dimensions: (g - mean over neurons) / max|g - mean| (one scalar), as float32.
 * Call after npred_ptable_alloc; NPRED_ERR_VALUE if all coordinates are equal. */
npred_status npred_readout_set_source_grid(npred_readout *r, npred_ptable *t, const double *g);

npred_status npred_gaussian_declare(npred_readout *r, npred_ptable *t);
size_t npred_gaussian_workspace(const npred_readout *r, int max_batch);
size_t npred_gaussian_nhwc_floats(const npred_readout *r, int max_batch);
void npred_gaussian_init(npred_readout *r, npred_ptable *t, npred_rng *rng);
npred_status npred_gaussian_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                    int B, int train, npred_rng *rng, const float *noise);
/* dx_set: dx written, not added to (npred_readout_backward_set) */
void npred_gaussian_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift,
                             int dx_set);
double npred_gaussian_regularizer(npred_readout *r, npred_ptable *t, double gscale);
void npred_gaussian_repr(const npred_readout *r, char *buf, size_t n);
/* The grid of the last forward after the clamp, before the shift (0.3.0 sample_grid()), (B, n, 2). */
void npred_gaussian_sampled_grid(const npred_readout *r, float *out);
/* The feature row F[o, :] (c floats) that a forward contracts neuron o's sample with
 * (from the parameters: the forward may read them in place). */
void npred_gaussian_feature_row(const npred_readout *r, const npred_ptable *t, int o, float *out);

npred_status npred_point_pooled_declare(npred_readout *r, npred_ptable *t);
size_t npred_point_pooled_workspace(const npred_readout *r, int max_batch);
void npred_point_pooled_init(npred_readout *r, npred_ptable *t, npred_rng *rng);
npred_status npred_point_pooled_forward(npred_readout *r, npred_ptable *t, float *y, const float *x,
                                        const float *shift, int B);
/* dx_set: dx written, not added to (npred_readout_backward_set) */
void npred_point_pooled_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift,
                                 int dx_set);
void npred_point_pooled_repr(const npred_readout *r, char *buf, size_t n);

npred_status npred_attention_declare(npred_readout *r, npred_ptable *t);
size_t npred_attention_workspace(const npred_readout *r, int max_batch);
void npred_attention_init(npred_readout *r, npred_ptable *t, npred_rng *rng);
npred_status npred_attention_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, int B);
void npred_attention_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx);
void npred_attention_repr(const npred_readout *r, char *buf, size_t n);

/* PointPyramid2d (pyramid.c). init also fills the filter buffer; init_buffers fills only it. */
npred_status npred_pyramid_declare(npred_readout *r, npred_ptable *t);
size_t npred_pyramid_workspace(const npred_readout *r, int max_batch);
void npred_pyramid_init(npred_readout *r, npred_ptable *t, npred_rng *rng);
void npred_pyramid_init_buffers(npred_readout *r, npred_ptable *t);
npred_status npred_pyramid_forward(npred_readout *r, npred_ptable *t, float *y, const float *x, const float *shift,
                                   int B);
/* dx_set: dx written, not added to (npred_readout_backward_set) */
void npred_pyramid_backward(npred_readout *r, npred_ptable *t, const float *dy, float *dx, float *dshift,
                            int dx_set);
void npred_pyramid_repr(const npred_readout *r, char *buf, size_t n);

#endif
