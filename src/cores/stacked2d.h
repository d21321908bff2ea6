/* Stacked2dCore, SE2dCore and RotationEquivariant2dCore (neuralpredictors 0.3.0
 * semantics, spec §1.2, §1.4; docs/cores.md).
 *
 * layer0:  conv(input_kern, pad input_kern//2 if pad_input) -> BN -> AdaptiveELU
 * layer l: conv | DepthSeparableConv2d(1x1 -> kxk depthwise -> 1x1) -> BN -> AdaptiveELU
 *          [-> squeeze-excitation block in the last n_se_blocks layers of an SE2dCore]
 * output:  concatenation of the layers listed in `stack` along channels.
 *
 * Parameters live in the model's table under "<prefix>features.layerK.conv.weight"
 * etc. (prefix "core." inside an encoder, "" for a bare core), buffers too
 * (BN running stats, num_batches_tracked, "_input_weights_regularizer.laplace.filter").
 *
 * Memory for every activation is allocated once by npred_core_setup() for a
 * capacity max_batch; forward/backward never allocate. forward() keeps a pointer
 * to its input for backward(). Threads: inside the kernels (OpenMP / OpenBLAS). */
#ifndef NPRED_CORES_STACKED2D_H
#define NPRED_CORES_STACKED2D_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/activation.h"
#include "kernels/conv2d.h"
#include "nn/params.h"
#include "npred/base.h"

#define NPRED_CORE_MAXLAYERS 16
#define NPRED_MAX_ROTATIONS 64

typedef enum {
    NPRED_INPUT_REG_LAPLACE_L2 = 0,
    NPRED_INPUT_REG_LAPLACE_L2NORM,
    NPRED_INPUT_REG_GAUSSIAN_LAPLACE_L2,
    NPRED_INPUT_REG_LAPLACE_L1       /* LaplaceL1(padding)(W, avg): agg |laplace(W)| */
} npred_input_reg;

typedef struct {
    int se_core;            /* 0: Stacked2dCore, 1: SE2dCore */
    int input_channels;
    int hidden_channels;
    int input_kern;
    int hidden_kern[NPRED_CORE_MAXLAYERS]; /* per hidden layer (layers - 1 entries) */
    int layers;
    double gamma_hidden;
    double gamma_input;
    int skip;
    int stride;
    int final_nonlinearity;
    double elu_xshift, elu_yshift;
    int bias;
    double momentum;
    int pad_input;
    int hidden_padding;     /* -1 = None */
    int batch_norm;
    int batch_norm_scale;
    int independent_bn_bias;
    int hidden_dilation;
    int laplace_padding;    /* -1 = None */
    npred_input_reg input_regularizer;
    int stack[NPRED_CORE_MAXLAYERS]; /* resolved layer indices */
    int n_stack;
    int use_avg_reg;
    int depth_separable;
    int linear;
    int attention_conv;     /* hidden layers are 0.3.0 AttentionConv (self-attention over a k x k window) */
    int n_se_blocks;        /* SE2dCore */
    int se_reduction;
    int head;               /* 1: neuralpredictors HEAD's Stacked2dCore structure (no independent_bn_bias:
                               BN affine = bias and batch_norm_scale; hidden convs always have a bias,
                               layer 0 never; hidden padding per layer); docs/cores.md */
    int rot_eq;             /* 1: RotationEquivariant2dCore (HermiteConv2D layers) */
    int num_rotations;      /* RotationEquivariant2dCore: 8 */
    int upsampling;         /* 2 */
    int rot_eq_batch_norm;  /* 1 */
} npred_core_config;

typedef struct {
    /* geometry */
    int cin, cout, k, pad, dil, stride;
    int hin, win, hout, wout;
    int ds;
    npred_conv2d_params cp[3]; /* plain: [0]; depth-separable: in 1x1, spatial, out 1x1 */
    int nconv;
    /* parameter indices (-1 = absent) */
    int p_w[3], p_b[3];
    int p_gamma, p_beta, p_rmean, p_rvar, p_nbt, p_bias2d, p_scale2d;
    int p_se_w1, p_se_b1, p_se_w2, p_se_b2;
    int se_hidden;
    int has_bn, has_act, has_se;
    int fused;        /* BN + AdaptiveELU in one kernel (no bias/scale layer between): v, u are not stored */
    /* RotationEquivariant2dCore: cout = hidden * rot; BN, Bias2D and Scale2D act on
     * (B * rot, hidden) (statistics shared across rotations); the conv weight is
     * computed from coeffs (ncoef, cin, hidden) and the fixed Hermite basis H and
     * rotation matrices Rs.<r> (buffers) into weff (cout, cin, k, k). */
    int rot;          /* 1 for the other cores */
    int ncoef, hk;    /* k (k + 1) / 2 coefficients; basis size k * upsampling */
    int p_coeffs, p_H, p_Rs0; /* Rs.<r> is entry p_Rs0 + r */
    float *weff, *dweff;      /* (cout, cin, k, k) */
    double *basis;            /* (rot, ncoef, k * k): Rs[r]^T applied to the downsampled basis */
    /* activations, capacity max_batch */
    float *in;        /* layer input (owned only when it is a skip concatenation) */
    int owns_in;
    float *t[2];      /* depth-separable intermediates (B, C, ., .) */
    int t_bf16;       /* the last forward stored them in bf16 (kernels/bf16_block.h: t[0] as bf16 planes,
                         t[1] as bf16 pairs of channels, each image at the start of its fp32 slot) */
    int t0_kept;      /* the last forward recomputed but stored t[0] (the first 1x1's output, fp32):
                         the backward reads it instead of recomputing it */
    float *z;         /* conv output */
    float *v;         /* BN output (before a Bias2D/Scale2D layer), == z without BN */
    float *u;         /* input of the nonlinearity */
    float *a;         /* after the nonlinearity (== u without one) */
    float *out;       /* layer output (after SE; == a without) */
    float *se_pool, *se_h, *se_s; /* (B, C), (B, hid), (B, C) */
    double *mean, *invstd;
    float *dout;      /* (B, C, hout, wout) gradient w.r.t. out; may be layer l + 2's buffer */
    int owns_dout;
    /* AttentionConv (attention_conv): cp/p_w/p_b [0] key, [1] query, [2] value 1x1 convs */
    int att;
    int p_rel_h, p_rel_w;     /* (C/2, 1, 1, k, 1), (C/2, 1, 1, 1, k) */
    float *att_kqv;           /* (3, B, C, h, w) key, query, value maps */
    float *att_d;             /* (3, B, C, h, w) their gradients */
    float *wfft;              /* the conv's FFT weights (kernels/conv2d_fft.h) when it runs by FFT */
    int wfft_ok;              /* wfft holds the transform of the current weights */
} npred_core_layer;

typedef struct {
    npred_core_config cfg;
    char prefix[32];
    npred_core_layer L[NPRED_CORE_MAXLAYERS];
    int p_lapfilter;
    int in_h, in_w;     /* input spatial size the core was set up for */
    int out_c, out_h, out_w;
    int max_batch;
    npred_act act;
    float *output;      /* (B, out_c, out_h, out_w): a layer's out, or the stack concatenation */
    int owns_output;
    float *g[3];        /* backward scratch, each max layer tensor */
    void *ws;           /* conv workspace */
    size_t ws_bytes;
    double *pstats;     /* (B, C, 2) per-plane BN statistics made by the depth-separable block */
    double *bncoef;     /* (C, 4) the fused BN + ELU backward's coefficients */
    const float *x;     /* input of the last forward */
    int B, train;
    int recompute;      /* activation recomputation: NPRED_CORE_RECOMPUTE_* (default auto) */
    int rc;             /* 1: the last forward stored only the BatchNorm inputs (z) and the output */
    int rc_keep_t0;     /* with rc: the training forward stores the first 1x1 outputs too (PARTIAL) */
    int output_in_dy;   /* 1: with recomputation, the output lives in the output-gradient buffer
                           (npred_core_dy_buffer): valid until the next backward (set by a model
                           whose readouts never read it in their backward) */
    int keep_weights;   /* 1: forward reuses the Hermite layers' weff of the previous forward (streaming
                           with unchanged parameters: the same values, without rebuilding them) */
    int fft;            /* 1 (set by the caller): eval forwards run the plain layers' convs that
                           npred_conv2d_fft_use picks by FFT (the video encoders set it) */
    void *fws;          /* their workspace */
    size_t fws_bytes;
    int lean;           /* 1 (set by the caller, e.g. a prediction): an eval forward may keep only what
                           the next layers and the readout read; no backward can follow it */
    int no_backward;    /* the last forward was such a lean one: npred_core_backward refuses */
    void *bf_ws;        /* bf16 precision: per-thread scratch of the bf16 block kernels (kernels/bf16_block.h) */
    size_t bf_ws_per;   /* bytes per thread */
    int bf_ws_threads;  /* threads it has room for */
    int band_rows;      /* rows per band of the depth-separable block's first steps in a training
                           forward (0: auto, by size; < 0: never): npred_core_set_band_rows */
} npred_core;

/* 0.3.0 Stacked2dCore defaults (input_channels etc. must still be set). */
void npred_core_config_default(npred_core_config *c);
/* SE2dCore defaults (bias False, laplace_padding None, LaplaceL2norm, use_avg_reg False). */
void npred_core_config_default_se(npred_core_config *c);
/* RotationEquivariant2dCore defaults (Stacked2dCore's, LaplaceL2norm, num_rotations 8,
 * upsampling 2, rot_eq_batch_norm True). */
void npred_core_config_default_rot(npred_core_config *c);
/* Resolve `stack` given as None (all), an int s (range(layers)[s:]) or a list. */
npred_status npred_core_config_set_stack(npred_core_config *c, const int *list, int n, int is_int, int is_none);

/* Declare parameters for an input of (in_h, in_w); computes the output shape. */
npred_status npred_core_declare(npred_core *core, const npred_core_config *cfg, const char *prefix, int in_h,
                                int in_w, npred_ptable *t);
npred_status npred_core_setup(npred_core *core, const npred_ptable *t, int max_batch);
/* Xavier-normal conv weights, zero conv biases, BN defaults (gamma 1, beta 0, running
 * mean 0, var 1), SE linears with PyTorch's default uniform init; Hermite coeffs
 * N(0, 0.1); the constant buffers. */
void npred_core_init_params(npred_core *core, npred_ptable *t, npred_rng *rng);
/* Fill the constant buffers (Laplace filter; Hermite basis H and rotations Rs of a
 * RotationEquivariant2dCore) without touching parameters. */
void npred_core_init_buffers(npred_core *core, npred_ptable *t);
/* Forward x (B, input_channels, in_h, in_w); returns core->output. train selects
 * BatchNorm batch statistics (and updates the running stats). */
npred_status npred_core_forward(npred_core *core, npred_ptable *t, const float *x, int B, int train);
/* Backward of the last forward: dy (B, out_c, out_h, out_w); accumulates parameter
 * gradients into the table and into dx (B, Cin, H, W) when not NULL. dy may be the
 * buffer of npred_core_dy_buffer (then it is used in place and overwritten). */
npred_status npred_core_backward(npred_core *core, npred_ptable *t, const float *dy, float *dx);
/* The core's own buffer for the output gradient, (max_batch, out_c, out_h, out_w)
 * floats, that a caller may fill and pass to npred_core_backward as dy (one
 * activation-sized buffer and a copy less), or NULL when the core has none (several
 * stacked layers or skip connections). Its contents are the core's between calls. */
float *npred_core_dy_buffer(npred_core *core);
/* gamma_hidden * group_sparsity + gamma_input * input regularizer (SE2dCore: the
 * latter only); gradient times gscale accumulated when gscale != 0. */
double npred_core_regularizer(npred_core *core, npred_ptable *t, double gscale);
/* The reference's repr (torch module tree + the regularizers line). */
void npred_core_repr(const npred_core *core, char *buf, size_t n);
/* One line naming the BatchNorm/bias structure and which neuralpredictors builds it
 * (0.3.0's independent_bn_bias or HEAD's), e.g. for `npred info`. */
void npred_core_bn_convention(const npred_core *core, char *buf, size_t n);
/* the `outchannels` property of 0.3.0 (ignores stack; times num_rotations for
 * RotationEquivariant2dCore) */
int npred_core_outchannels_property(const npred_core *core);
/* bf16 arithmetic (1) or fp32 (0, the default) in every GEMM convolution of the
 * core (forward and backward; weights stay fp32 and are rounded per call; the
 * depthwise convolutions, BatchNorm, nonlinearities stay fp32).
 * NPRED_ERR_UNSUPPORTED for bf16 on a CPU without AVX-512 BF16. */
npred_status npred_core_set_bf16(npred_core *core, int on);
int npred_core_bf16(const npred_core *core);
/* Activation recomputation (gradient checkpointing): a forward that uses it (in
 * training and in eval mode alike) stores only each layer's BatchNorm input (and the
 * core's output); the backward recomputes every other activation (the block inputs
 * and the depth-separable intermediates) image by image with the forward's kernels,
 * so the results are bit-identical to storing them, and forms every output gradient
 * in place in one buffer. Only for cores whose every layer is conv -> fused BatchNorm
 * + ELU with depth-separable hidden layers of equal input and output size, one
 * stacked layer (the last), no skip/SE/attention/Hermite, and batches of at least one
 * image per thread; elsewhere the activations are stored whatever the mode. AUTO (the
 * default) uses it when it saves at least 256 MiB at max_batch and either one image's
 * activation of a layer is at most 1 MiB (recomputing in cache is cheap) or the
 * saved activations exceed a quarter of the physical memory; in the first case
 * PARTIAL (below) unless memory requires ON. The backward reads
 * the BatchNorm parameters again: do not change them between a forward and its
 * backward. */
#define NPRED_CORE_RECOMPUTE_AUTO (-1)
#define NPRED_CORE_RECOMPUTE_OFF 0
#define NPRED_CORE_RECOMPUTE_ON 1
/* PARTIAL: as ON, but a training forward also stores each depth-separable layer's first
 * 1x1 output (t[0]): the backward recomputes the block input and the depthwise output
 * only (one 1x1 convolution per layer less; one activation per hidden layer more). The
 * same bits as ON and OFF. */
#define NPRED_CORE_RECOMPUTE_PARTIAL 2
npred_status npred_core_set_recompute(npred_core *core, int mode);
/* The training forward of a depth-separable block makes its stored input (from the
 * previous layer's BatchNorm input) and the first 1x1 convolution band by band of
 * `rows` image rows, each band still in L2 for the convolution: 0 (the default) where
 * an image's block input exceeds 4 MB (4 rows), < 0 never, > 0 always with that many
 * rows. Per pixel arithmetic: the results do not depend on it (test_core). */
void npred_core_set_band_rows(npred_core *core, int rows);
/* AUTO's choice (NPRED_CORE_RECOMPUTE_OFF, _ON or _PARTIAL) for a core declared with
 * its layer sizes, set up for max_batch, on a machine of phys bytes of memory (where
 * the core allows recomputation at all) */
int npred_core_recompute_auto(const npred_core *core, int max_batch, size_t phys);
void npred_core_free(npred_core *core);

/* RotationEquivariant2dCore helpers (cores/hermite.c).
 * The 2-D Hermite basis of neuralpredictors.layers.hermite.hermite_2d(k, npts,
 * 2 sqrt(k)), unit-norm, (k (k+1) / 2, npts, npts), and the descriptors and mu of
 * each basis function ('z', 'r', 'i'); rotation_matrix(desc, mu, angle) (ncoef, ncoef). */
void npred_hermite_basis(double *H, char *desc, double *mu, int k, int npts);
void npred_hermite_rotation(double *R, const char *desc, const double *mu, int ncoef, double angle);
/* The effective conv weight of one HermiteConv2D layer, (hidden * rot, cin, k, k), from
 * coeffs (ncoef, cin, hidden) and basis (rot, ncoef, k * k) = Rs[r]^T times the
 * up x up-summed H; first: no input-channel roll (layer 0). */
void npred_hermite_weights(float *w, const float *coeffs, const double *basis, int ncoef, int cin, int hidden,
                           int rot, int k, int first);
/* Adjoint: dcoeffs += d(w)/d(coeffs)^T dw. */
void npred_hermite_weights_backward(float *dcoeffs, const float *dw, const double *basis, int ncoef, int cin,
                                    int hidden, int rot, int k, int first);
/* basis (rot, ncoef, k*k) from H (ncoef, k*up, k*up) and Rs (rot pointers to (ncoef, ncoef)). */
void npred_hermite_rotated_basis(double *basis, const float *H, const float *const *Rs, int ncoef, int k, int up,
                                 int rot);

#endif
