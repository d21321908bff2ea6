/* Synthetic SENSORIUM-format datasets with a known ground truth.
 *
 * npred_simulate() writes one FileTree per session (spec/sensorium.md §1), as a
 * folder and/or a .zip, named like the real scans:
 *     static<data_key>-GrayImageNet-94c6ff995dac583098847cfecd43e7b6[/|.zip]
 * with data_key "<animal_id>-1-<session+1>" (e.g. 90000-1-1).
 *
 * Ground-truth model (everything it needs is stored in meta/ground_truth/):
 *   image (H, W) 0..255 -> downsample by `downsample` (skimage rescale convention:
 *   bilinear at input coordinate (i + 0.5) f - 0.5) -> x = (v - 128) / 64
 *   -> 16 Gabor filters (2 scales x 4 orientations x even/odd phase), zero padding
 *   -> 32 rectified channels relu(+y), relu(-y)               F (h, w, 32)
 *   -> per neuron: bilinear read at its RF position (grid_sample, align_corners=True,
 *      zero padding), u = W . F(pos) + b
 *   -> rate = gain * softplus(u) [* exp(kappa * m_t) with --modulate]
 *   -> Poisson (or gamma) noise.
 * With modulate, m_t is a fixed function of the trial's behaviour, and the eye
 * position shifts all RF positions of the trial (as a shifter does).
 * See docs/simulate.md for every formula and file. */
#ifndef NPRED_SIMULATE_H
#define NPRED_SIMULATE_H

#include <stdint.h>

#include "npred/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The hash part of the real SENSORIUM 2022 zip names. */
#define NPRED_SIM_NAME_HASH "94c6ff995dac583098847cfecd43e7b6"

typedef enum {
    NPRED_SIM_NOISE_POISSON, /* integer counts, variance = rate */
    NPRED_SIM_NOISE_GAMMA,   /* gamma(shape k, mean rate): variance = rate^2 / k */
    NPRED_SIM_NOISE_NONE     /* responses = noise-free rates */
} npred_sim_noise;

typedef struct {
    int n_sessions;          /* 1 */
    int n_neurons;           /* per session: 1000 */
    int n_trials;            /* train + validation trials per session: 5000 */
    double val_fraction;     /* share of n_trials in the validation tier: 0.1 */
    int n_test_images;       /* 100 (tier "test", shared by all sessions) */
    int n_test_repeats;      /* 10 */
    int n_final_test_images; /* 0 (tier "final_test", same repeats; no ground truth) */
    int height, width;       /* 144 x 256 */
    int downsample;          /* 4: ground-truth feature map is (height/4, width/4) */
    uint64_t seed;           /* 1 */
    int animal_id;           /* 90000 */
    double rate_scale;       /* 2.0: median neuron gain (higher = less noisy) */
    npred_sim_noise noise;   /* POISSON */
    double gamma_shape;      /* 2.0 (NOISE_GAMMA only) */
    int modulate;            /* 0: behaviour gain + eye-position shift off */
    int write_tree;          /* 1: write the folder */
    int write_zip;           /* 0: also write <name>.zip (members stored) */
    int force;               /* 0: refuse a non-empty out_dir */
    double shared_neurons;   /* 0: fraction F of every session's neurons recorded in all sessions
                              * (the same ground-truth neurons; meta/neurons/multi_match_id.npy) */
} npred_sim_params;

/* Progress: called after every chunk of trials; a nonzero return stops the run
 * with NPRED_ERR_INTERRUPTED. `done`/`total` count trials of session `session`. */
typedef int (*npred_sim_progress_fn)(void *user, int session, int64_t done, int64_t total);

NPRED_API npred_sim_params npred_sim_default_params(void);
/* Check every field; NPRED_ERR_ARG with a message naming the bad option. */
NPRED_API npred_status npred_sim_validate(const npred_sim_params *p);
/* "90000-1-3" for session 2 (0-based). */
NPRED_API void npred_sim_data_key(const npred_sim_params *p, int session, char *buf, size_t bufsize);
/* "static90000-1-3-GrayImageNet-<hash>" (no ".zip"). */
NPRED_API void npred_sim_tree_name(const npred_sim_params *p, int session, char *buf, size_t bufsize);

/* Write every session under out_dir (created if missing; must be empty unless
 * p->force, which replaces only the trees/zips this run writes). Deterministic:
 * the same params give byte-identical files for any thread count. Memory: about
 * trials x neurons x 4 bytes (kept for the response statistics) plus
 * test trials x neurons x 4; data files are written trial by trial. */
NPRED_API npred_status npred_simulate(const npred_sim_params *p, const char *out_dir,
                            npred_sim_progress_fn progress, void *user);


/* ---------------------------------------------------------------- movie scans
 * npred_simulate_video() writes one SENSORIUM 2023 movie scan per session (the layout
 * of npred/video.h, readable by npred_video_dataset_open and the kit's
 * mouse_video_loader), named like the real scans:
 *     dynamic<animal_id>-1-<session+1>-Video-<NPRED_VSIM_NAME_HASH>[/|.zip]
 *
 * Ground truth (everything it needs is stored in meta/ground_truth/), per neuron j
 * and frame t of a trial (docs/simulate-video.md has every formula):
 *   frame v_t (H, W) 0..255 -> x_t = (v_t - 128) / 64, shifted by the eye position
 *   -> s_j(t) = Gabor kernel_j . x_t (a window around the RF centre, zero outside)
 *   -> u_j(t) = sum_k h_j[k] s_j(t - k) (biphasic temporal kernel sampled at fps)
 *   -> q_j(t) = softplus(slope_j u_j(t) + bias_j)
 *   -> adaptation a_j(t) = rho a_j(t-1) + (1 - rho) q_j(t-1), rho = exp(-1/(tau fps))
 *   -> rate = gain_j q_j(t) / (1 + alpha_j a_j(t)) [* exp(kappa_j m_t) with modulate]
 *   -> Poisson (or gamma) noise per frame. */

/* The hash part of the simulated movie scan names (32 hex digits). */
#define NPRED_VSIM_NAME_HASH "5eed0f0a11ce0ddba11c0ffee0000001"

/* Stimulus kinds (a bit set): each clip is one kind, drawn from those enabled. */
enum {
    NPRED_VSIM_NATURAL = 1,  /* drifting 1/f-noise scenes with occluders, a new scene every 1-3 s */
    NPRED_VSIM_GRATINGS = 2, /* drifting sinusoidal gratings, a new one every 0.5-2 s */
    NPRED_VSIM_NOISE = 4     /* white noise: every pixel of every frame uniform in 0..255 */
};

typedef struct {
    int n_sessions;        /* 1 */
    int n_neurons;         /* per session: 1000 */
    int n_trials;          /* train trials per session (each a new clip): 200 */
    int n_oracle_clips;    /* 6: tier "oracle" (clips shared by all sessions) */
    int n_test_clips;      /* 6: tiers live_test_main and final_test_main, each */
    int n_repeats;         /* 10: repeats of every oracle / test clip */
    int height, width;     /* 36 x 64 (the 2023 frame size) */
    int frames;            /* 300: frames per file (T_max) */
    int min_frames;        /* 240: clip lengths are uniform in [min_frames, frames]; > 50 */
    double fps;            /* 30 */
    unsigned stimuli;      /* NPRED_VSIM_NATURAL | NPRED_VSIM_GRATINGS */
    uint64_t seed;         /* 1 */
    int animal_id;         /* 90000 */
    double rate_scale;     /* 2.0: median neuron gain (expected counts per frame at q = 1) */
    npred_sim_noise noise; /* POISSON */
    double gamma_shape;    /* 2.0 (NOISE_GAMMA only) */
    int modulate;          /* 0: behaviour gain + eye-position shift off */
    double adaptation;     /* 1.0: scale of the adaptation strengths alpha_j (0: none) */
    double adaptation_tau; /* 1.0 s: time constant of the adaptation state */
    int write_tree;        /* 1: write the folder */
    int write_zip;         /* 0: also write <name>.zip (members stored) */
    int force;             /* 0: refuse a non-empty out_dir */
} npred_vsim_params;

NPRED_API npred_vsim_params npred_vsim_default_params(void);
/* Check every field; NPRED_ERR_ARG with a message naming the bad option. */
NPRED_API npred_status npred_vsim_validate(const npred_vsim_params *p);
/* "dynamic90000-1-3-Video-<hash>" for session 2 (0-based; no ".zip"); also the data key. */
NPRED_API void npred_vsim_tree_name(const npred_vsim_params *p, int session, char *buf, size_t bufsize);
/* Parse a comma-separated list of "natural", "gratings", "noise" into a bit set. */
NPRED_API npred_status npred_vsim_parse_stimuli(const char *list, unsigned *out);

/* Write every session under out_dir (created if missing; must be empty unless
 * p->force, which replaces only the scans this run writes). Each session is built
 * in a hidden folder of out_dir and renamed into place when complete, so a failed
 * or stopped run leaves no partial scan. Deterministic: the same params give
 * byte-identical files for any thread count. progress counts the trials of a
 * session (all tiers). */
NPRED_API npred_status npred_simulate_video(const npred_vsim_params *p, const char *out_dir,
                                            npred_sim_progress_fn progress, void *user);

#ifdef __cplusplus
}
#endif
#endif
