/* npred simulate: write a synthetic SENSORIUM-format dataset with a known ground truth. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "npred/simulate.h"

static void help(FILE *f)
{
    npred_sim_params d = npred_sim_default_params();
    fprintf(f,
            "usage: npred simulate --out DIR [options]\n\n"
            "Write a synthetic SENSORIUM 2022-format dataset (one FileTree per session,\n"
            "static<key>-GrayImageNet-%s) whose responses come from a known\n"
            "ground-truth model: Gabor filter bank -> rectification -> per-neuron readout at a\n"
            "retinotopic RF position -> softplus -> Poisson noise. The ground truth (RF positions,\n"
            "readout weights, noise-free test rates, oracle correlations, params.json) is in\n"
            "meta/ground_truth/ of every session. See docs/simulate.md.\n\n"
            "options:\n"
            "  --out DIR              output directory (created; must be empty unless --force)\n"
            "  --sessions N           sessions (scans) [%d]\n"
            "  --neurons N            neurons per session [%d]\n"
            "  --trials N             train + validation trials per session [%d]\n"
            "  --val-fraction F       share of --trials in the validation tier [%g]\n"
            "  --test-images N        test-tier images, shared by all sessions [%d]\n"
            "  --test-repeats N       repeats of every test image [%d]\n"
            "  --final-test-images N  final_test-tier images (same repeats) [%d]\n"
            "  --height N, --width N  image size [%d x %d]\n"
            "  --downsample N         ground-truth feature map = image / N (4 matches scale 0.25) [%d]\n"
            "  --seed N               random seed; same seed => byte-identical files [%" PRIu64 "]\n"
            "  --animal-id N          data keys are <animal-id>-1-<session> [%d]\n"
            "  --rate-scale F         median neuron gain; higher = less noisy [%g]\n"
            "  --noise KIND           poisson | gamma | none [poisson]\n"
            "  --gamma-shape F        shape k of the gamma noise (variance rate^2/k) [%g]\n"
            "  --modulate             behaviour scales the rates and eye position shifts the RFs\n"
            "  --shared-neurons F     fraction of every session's neurons recorded in all sessions (the\n"
            "                         same ground truth; meta/neurons/multi_match_id.npy) [0]\n"
            "  --zip                  also write <tree>.zip (members stored)\n"
            "  --zip-only             write only the .zip files\n"
            "  --force                replace existing sessions in a non-empty --out\n"
            "  --video                write SENSORIUM 2023 movie scans instead (npred simulate --video --help)\n"
            "  --quiet                no progress on stderr\n"
            "  -h, --help             this help\n\n"
            "example: npred simulate --out sim --sessions 2 --neurons 200 --trials 1000 --zip\n",
            NPRED_SIM_NAME_HASH, d.n_sessions, d.n_neurons, d.n_trials, d.val_fraction, d.n_test_images,
            d.n_test_repeats, d.n_final_test_images, d.height, d.width, d.downsample, d.seed, d.animal_id,
            d.rate_scale, d.gamma_shape);
}

typedef struct {
    int quiet;
    int last_pct;
    int sessions;
    const npred_sim_params *p;
} progress_state;

static int on_progress(void *user, int session, int64_t done, int64_t total)
{
    progress_state *ps = user;
    if (ps->quiet) return 0;
    int pct = (int)(100 * done / (total ? total : 1));
    if (done == total || pct / 10 != ps->last_pct / 10) {
        char key[64];
        npred_sim_data_key(ps->p, session, key, sizeof key);
        fprintf(stderr, "session %d/%d (%s): %" PRId64 "/%" PRId64 " trials\n", session + 1, ps->sessions, key,
                done, total);
    }
    ps->last_pct = done == total ? -10 : pct;
    return 0;
}

static void help_video(FILE *f)
{
    npred_vsim_params d = npred_vsim_default_params();
    fprintf(f,
            "usage: npred simulate --video --out DIR [options]\n\n"
            "Write a synthetic SENSORIUM 2023 movie scan per session (dynamic<key>-Video-%s,\n"
            "the layout of the 2023 data: per trial videos (H, W, T), responses (n, T), behaviour\n"
            "and pupil centre (2, T), NaN after the clip's last frame; tiers train, oracle,\n"
            "live_test_main, final_test_main; statistics per element and frame). Ground truth:\n"
            "spatio-temporal Gabor neurons (biphasic temporal kernel), softplus, adaptation,\n"
            "behaviour gain and eye-position shifts, Poisson noise per frame; it is stored in\n"
            "meta/ground_truth/ (kernels, RF centres, noise-free rates of the repeated clips,\n"
            "oracle correlations). See docs/simulate-video.md.\n\n"
            "options:\n"
            "  --out DIR              output directory (created; must be empty unless --force)\n"
            "  --sessions N           sessions (scans) [%d]\n"
            "  --neurons N            neurons per session [%d]\n"
            "  --trials N             train trials per session, each a new clip [%d]\n"
            "  --oracle-clips N       clips of the oracle tier, shared by all sessions [%d]\n"
            "  --test-clips N         clips of live_test_main and of final_test_main [%d]\n"
            "  --repeats N            repeats of every oracle / test clip [%d]\n"
            "  --height N, --width N  frame size [%d x %d]\n"
            "  --frames N             frames per file (T_max) [%d]\n"
            "  --min-frames N         clip lengths are uniform in [min-frames, frames] (> 50) [%d]\n"
            "  --fps F                frame rate (Hz) of the recording [%g]\n"
            "  --stimuli LIST         comma-separated kinds: natural, gratings, noise [natural,gratings]\n"
            "  --seed N               random seed; same seed => byte-identical files [%" PRIu64 "]\n"
            "  --animal-id N          scan names are dynamic<animal-id>-1-<session>-Video-... [%d]\n"
            "  --rate-scale F         median neuron gain (counts per frame); higher = less noisy [%g]\n"
            "  --noise KIND           poisson | gamma | none [poisson]\n"
            "  --gamma-shape F        shape k of the gamma noise (variance rate^2/k) [%g]\n"
            "  --modulate             behaviour scales the rates and the eye position shifts the RFs\n"
            "  --adaptation F         scale of the adaptation strengths; 0 turns adaptation off [%g]\n"
            "  --adaptation-tau S     time constant of the adaptation state, seconds [%g]\n"
            "  --zip                  also write <scan>.zip (members stored)\n"
            "  --zip-only             write only the .zip files\n"
            "  --force                replace existing scans in a non-empty --out\n"
            "  --quiet                no progress on stderr\n"
            "  -h, --help             this help\n\n"
            "example: npred simulate --video --out movies --neurons 500 --trials 100 --modulate\n",
            NPRED_VSIM_NAME_HASH, d.n_sessions, d.n_neurons, d.n_trials, d.n_oracle_clips, d.n_test_clips,
            d.n_repeats, d.height, d.width, d.frames, d.min_frames, d.fps, d.seed, d.animal_id, d.rate_scale,
            d.gamma_shape, d.adaptation, d.adaptation_tau);
}

static int on_progress_video(void *user, int session, int64_t done, int64_t total)
{
    progress_state *ps = user;
    if (ps->quiet) return 0;
    int pct = (int)(100 * done / (total ? total : 1));
    if (done == total || pct / 10 != ps->last_pct / 10)
        fprintf(stderr, "session %d/%d: %" PRId64 "/%" PRId64 " trials\n", session + 1, ps->sessions, done, total);
    ps->last_pct = done == total ? -10 : pct;
    return 0;
}

static int parse_noise(const char *noise, npred_sim_noise *out)
{
    if (!strcmp(noise, "poisson")) *out = NPRED_SIM_NOISE_POISSON;
    else if (!strcmp(noise, "gamma")) *out = NPRED_SIM_NOISE_GAMMA;
    else if (!strcmp(noise, "none")) *out = NPRED_SIM_NOISE_NONE;
    else return cli_usage_error("simulate", "--noise: '%s' is not poisson, gamma or none", noise);
    return 0;
}

static const char *noise_name(npred_sim_noise n)
{
    return n == NPRED_SIM_NOISE_POISSON ? "poisson" : n == NPRED_SIM_NOISE_GAMMA ? "gamma" : "none";
}

/* npred simulate --video: the movie scans (npred_simulate_video). */
static int cmd_simulate_video(int argc, char **argv)
{
    npred_vsim_params p = npred_vsim_default_params();
    const char *out = NULL, *noise = NULL, *stimuli = NULL;
    int quiet = 0, zip = 0, zip_only = 0, video = 0;
    const cli_opt opts[] = {{"video", CLI_FLAG, &video, 0, 0},
                            {"out", CLI_STR, &out, 0, 0},
                            {"sessions", CLI_INT, &p.n_sessions, INT_MIN, INT_MAX},
                            {"neurons", CLI_INT, &p.n_neurons, INT_MIN, INT_MAX},
                            {"trials", CLI_INT, &p.n_trials, INT_MIN, INT_MAX},
                            {"oracle-clips", CLI_INT, &p.n_oracle_clips, INT_MIN, INT_MAX},
                            {"test-clips", CLI_INT, &p.n_test_clips, INT_MIN, INT_MAX},
                            {"repeats", CLI_INT, &p.n_repeats, INT_MIN, INT_MAX},
                            {"height", CLI_INT, &p.height, INT_MIN, INT_MAX},
                            {"width", CLI_INT, &p.width, INT_MIN, INT_MAX},
                            {"frames", CLI_INT, &p.frames, INT_MIN, INT_MAX},
                            {"min-frames", CLI_INT, &p.min_frames, INT_MIN, INT_MAX},
                            {"fps", CLI_NUM, &p.fps, -1e300, 1e300},
                            {"stimuli", CLI_STR, &stimuli, 0, 0},
                            {"seed", CLI_U64, &p.seed, 0, 0},
                            {"animal-id", CLI_INT, &p.animal_id, INT_MIN, INT_MAX},
                            {"rate-scale", CLI_NUM, &p.rate_scale, -1e300, 1e300},
                            {"noise", CLI_STR, &noise, 0, 0},
                            {"gamma-shape", CLI_NUM, &p.gamma_shape, -1e300, 1e300},
                            {"modulate", CLI_FLAG, &p.modulate, 0, 0},
                            {"adaptation", CLI_NUM, &p.adaptation, -1e300, 1e300},
                            {"adaptation-tau", CLI_NUM, &p.adaptation_tau, -1e300, 1e300},
                            {"zip", CLI_FLAG, &zip, 0, 0},
                            {"zip-only", CLI_FLAG, &zip_only, 0, 0},
                            {"force", CLI_FLAG, &p.force, 0, 0},
                            {"quiet", CLI_FLAG, &quiet, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"simulate", help_video, opts, NULL};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (zip || zip_only) p.write_zip = 1;
    if (zip_only) p.write_tree = 0;
    if (noise && (rc = parse_noise(noise, &p.noise))) return rc;
    if (stimuli && npred_vsim_parse_stimuli(stimuli, &p.stimuli))
        return cli_usage_error("simulate", "--%s", npred_last_error());
    if (!out) return cli_usage_error("simulate", "--out DIR is required");
    npred_status s = npred_vsim_validate(&p);
    if (s) return cli_usage_error("simulate", "--%s", npred_last_error());
    if (!quiet)
        fprintf(stderr,
                "npred simulate --video: out=%s sessions=%d neurons=%d trials=%d oracle-clips=%d test-clips=%d "
                "repeats=%d height=%d width=%d frames=%d min-frames=%d fps=%g stimuli=%s%s%s seed=%" PRIu64
                " animal-id=%d rate-scale=%g noise=%s gamma-shape=%g modulate=%d adaptation=%g adaptation-tau=%g "
                "folder=%d zip=%d force=%d\n",
                out, p.n_sessions, p.n_neurons, p.n_trials, p.n_oracle_clips, p.n_test_clips, p.n_repeats, p.height,
                p.width, p.frames, p.min_frames, p.fps, p.stimuli & NPRED_VSIM_NATURAL ? "natural," : "",
                p.stimuli & NPRED_VSIM_GRATINGS ? "gratings," : "", p.stimuli & NPRED_VSIM_NOISE ? "noise," : "",
                p.seed, p.animal_id, p.rate_scale, noise_name(p.noise), p.gamma_shape, p.modulate, p.adaptation,
                p.adaptation_tau, p.write_tree, p.write_zip, p.force);
    progress_state ps = {quiet, -10, p.n_sessions, NULL};
    s = npred_simulate_video(&p, out, on_progress_video, &ps);
    if (s) return cli_fail(s, "simulate");
    if (!quiet)
        for (int i = 0; i < p.n_sessions; i++) {
            char name[256];
            npred_vsim_tree_name(&p, i, name, sizeof name);
            fprintf(stderr, "wrote %s/%s%s\n", out, name,
                    p.write_tree && p.write_zip ? " (+ .zip)" : p.write_zip ? ".zip" : "");
        }
    return 0;
}

int cmd_simulate(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--video")) return cmd_simulate_video(argc, argv);
    npred_sim_params p = npred_sim_default_params();
    const char *out = NULL, *noise = NULL;
    int quiet = 0, zip = 0, zip_only = 0;
    const cli_opt opts[] = {{"out", CLI_STR, &out, 0, 0},
                            {"sessions", CLI_INT, &p.n_sessions, INT_MIN, INT_MAX},
                            {"neurons", CLI_INT, &p.n_neurons, INT_MIN, INT_MAX},
                            {"trials", CLI_INT, &p.n_trials, INT_MIN, INT_MAX},
                            {"val-fraction", CLI_NUM, &p.val_fraction, 0, 0},
                            {"test-images", CLI_INT, &p.n_test_images, INT_MIN, INT_MAX},
                            {"test-repeats", CLI_INT, &p.n_test_repeats, INT_MIN, INT_MAX},
                            {"final-test-images", CLI_INT, &p.n_final_test_images, INT_MIN, INT_MAX},
                            {"height", CLI_INT, &p.height, INT_MIN, INT_MAX},
                            {"width", CLI_INT, &p.width, INT_MIN, INT_MAX},
                            {"downsample", CLI_INT, &p.downsample, INT_MIN, INT_MAX},
                            {"seed", CLI_U64, &p.seed, 0, 0},
                            {"animal-id", CLI_INT, &p.animal_id, INT_MIN, INT_MAX},
                            {"rate-scale", CLI_NUM, &p.rate_scale, 0, 0},
                            {"noise", CLI_STR, &noise, 0, 0},
                            {"gamma-shape", CLI_NUM, &p.gamma_shape, 0, 0},
                            {"modulate", CLI_FLAG, &p.modulate, 0, 0},
                            {"shared-neurons", CLI_NUM, &p.shared_neurons, 0, 0},
                            {"zip", CLI_FLAG, &zip, 0, 0},
                            {"zip-only", CLI_FLAG, &zip_only, 0, 0},
                            {"force", CLI_FLAG, &p.force, 0, 0},
                            {"quiet", CLI_FLAG, &quiet, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"simulate", help, opts, NULL};
    int rc = cli_parse(&spec, argc, argv);
    if (rc != CLI_CONTINUE) return rc;
    if (zip || zip_only) p.write_zip = 1;
    if (zip_only) p.write_tree = 0;
    if (noise && (rc = parse_noise(noise, &p.noise))) return rc;
    if (!out) return cli_usage_error("simulate", "--out DIR is required");
    npred_status s = npred_sim_validate(&p);
    if (s) return cli_usage_error("simulate", "%s", npred_last_error());

    if (!quiet) {
        fprintf(stderr,
                "npred simulate: out=%s sessions=%d neurons=%d trials=%d val-fraction=%g test-images=%d "
                "test-repeats=%d final-test-images=%d height=%d width=%d downsample=%d seed=%" PRIu64
                " animal-id=%d rate-scale=%g noise=%s gamma-shape=%g modulate=%d shared-neurons=%g folder=%d zip=%d force=%d\n",
                out, p.n_sessions, p.n_neurons, p.n_trials, p.val_fraction, p.n_test_images, p.n_test_repeats,
                p.n_final_test_images, p.height, p.width, p.downsample, p.seed, p.animal_id, p.rate_scale,
                noise_name(p.noise), p.gamma_shape, p.modulate, p.shared_neurons, p.write_tree, p.write_zip, p.force);
    }
    progress_state ps = {quiet, -10, p.n_sessions, &p};
    s = npred_simulate(&p, out, on_progress, &ps);
    if (s) return cli_fail(s, "simulate");
    if (!quiet) {
        for (int i = 0; i < p.n_sessions; i++) {
            char name[256];
            npred_sim_tree_name(&p, i, name, sizeof name);
            fprintf(stderr, "wrote %s/%s%s\n", out, name,
                    p.write_tree && p.write_zip ? " (+ .zip)" : p.write_zip ? ".zip" : "");
        }
    }
    return 0;
}
