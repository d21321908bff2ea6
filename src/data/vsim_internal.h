/* Internal to the movie-scan simulator (src/data/vsim.c, vsim_model.c): the
 * ground-truth neurons, clips, behaviour and the rate computation. Formulas:
 * docs/simulate-video.md. */
#ifndef NPRED_DATA_VSIM_INTERNAL_H
#define NPRED_DATA_VSIM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "npred/base.h"
#include "npred/simulate.h"

/* generator constants (also written to params.json) */
#define VSIM_SKIP 50          /* frames the kit's metric skips; the oracle starts here */
#define VSIM_SIGMA_LO 0.05    /* Gabor envelope sigma, fraction of the frame height */
#define VSIM_SIGMA_HI 0.09
#define VSIM_RADIUS 2.5       /* kernel window radius = ceil(2.5 * largest sigma) */
#define VSIM_KERNEL_S 0.6     /* temporal kernel length (s) */
#define VSIM_PUPIL_MEAN 18.0
#define VSIM_PUPIL_SD 5.0
#define VSIM_EYE_X 120.0
#define VSIM_EYE_Y 80.0
#define VSIM_EYE_SDX 6.0
#define VSIM_EYE_SDY 4.0
#define VSIM_TAU_AROUSAL 5.0  /* s: time constants of the behaviour processes */
#define VSIM_TAU_PUPIL 0.5
#define VSIM_TAU_RUN 1.0
#define VSIM_TAU_EYE 2.0
#define VSIM_N_CALIB 4        /* natural clips that calibrate each neuron's slope and bias */

enum { VTAG_NEURONS = 101, VTAG_CLIP, VTAG_TRIAL, VTAG_LAYOUT, VTAG_CALIB, VTAG_SEGMENT };

typedef struct {
    int n, H, W;
    int R, D;          /* kernel window radius, D = 2R + 1 */
    int L;             /* temporal kernel samples */
    double fps;
    int64_t *unit_ids; /* (n) */
    double *coords;    /* (n, 3) µm */
    double *rf_grid;   /* (n, 2) x, y: align_corners grid units on the (H, W) frame */
    double *rf_pix;    /* (n, 2) x, y in pixels */
    int64_t *anchor;   /* (n, 2) x, y: pixel at the centre of the kernel window */
    double *gabor;     /* (n, 4) orientation (rad), wavelength (px), sigma (px), phase (rad) */
    float *G;          /* (n, D, D) spatial kernels, exactly the values used */
    double *tpar;      /* (n, 3) tau_fast (s), tau_slow (s), rebound beta */
    double *h;         /* (n, L) temporal kernels, h[k] weights frame t - k */
    double *slope, *bias, *gain, *alpha, *kappa; /* (n) */
    double retino[8];
} vsim_neurons;

typedef struct {
    int64_t id;
    int kind;   /* one NPRED_VSIM_* bit */
    int length; /* frames */
} vsim_clip;

/* kind and length of a clip (from its id) */
vsim_clip vsim_clip_info(const npred_vsim_params *p, int64_t id);
/* Frames of the clip into video (H, W, T_max) (element [y][x][t]); frames >= length NaN.
 * tmp: vsim_clip_tmp_len(p) floats. */
size_t vsim_clip_tmp_len(const npred_vsim_params *p);
void vsim_clip_frames(float *video, const npred_vsim_params *p, const vsim_clip *c, float *tmp);
/* Behaviour (2, T_max) (pupil dilation, running speed) and pupil centre (2, T_max)
 * of a trial, NaN from frame `length` on. */
void vsim_behavior(float *beh, float *eye, const npred_vsim_params *p, int length, npred_rng *r);

void vsim_neurons_free(vsim_neurons *nr);
/* Draw the session's neurons and calibrate their slopes and biases. */
npred_status vsim_neurons_make(vsim_neurons *nr, const npred_vsim_params *p, int session);
/* Per-thread scratch doubles for vsim_rates. */
size_t vsim_rates_tmp_len(const vsim_neurons *nr, int T_max);
/* Noise-free rates lam (n, T_max) of one trial (frames >= length NaN). beh/eye may be
 * NULL (neutral behaviour, no shift). */
void vsim_rates(float *lam, const vsim_neurons *nr, const npred_vsim_params *p, const float *video,
                const float *beh, const float *eye, int length, double *tmp);

#endif
