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

#ifdef __cplusplus
}
#endif
#endif
