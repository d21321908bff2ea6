/* npred simulate: write a synthetic SENSORIUM-format dataset with a known ground truth. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            "  --zip                  also write <tree>.zip (members stored)\n"
            "  --zip-only             write only the .zip files\n"
            "  --force                replace existing sessions in a non-empty --out\n"
            "  --quiet                no progress on stderr\n"
            "  -h, --help             this help\n\n"
            "example: npred simulate --out sim --sessions 2 --neurons 200 --trials 1000 --zip\n",
            NPRED_SIM_NAME_HASH, d.n_sessions, d.n_neurons, d.n_trials, d.val_fraction, d.n_test_images,
            d.n_test_repeats, d.n_final_test_images, d.height, d.width, d.downsample, d.seed, d.animal_id,
            d.rate_scale, d.gamma_shape);
}

static int parse_int(const char *opt, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT_MIN || v > INT_MAX)
        return cli_usage_error("simulate", "--%s: '%s' is not an integer", opt, s);
    *out = (int)v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return cli_usage_error("simulate", "--%s: '%s' is not a number", opt, s);
    *out = v;
    return 0;
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

int cmd_simulate(int argc, char **argv)
{
    enum { O_SESS = 256, O_NEUR, O_TRIALS, O_VAL, O_TEST, O_REPS, O_FINAL, O_H, O_W, O_DOWN, O_SEED, O_ANIMAL,
           O_RATE, O_NOISE, O_GSHAPE, O_MOD, O_ZIP, O_ZIPONLY, O_FORCE, O_QUIET, O_OUT };
    static const struct option opts[] = {
        {"out", required_argument, 0, O_OUT}, {"sessions", required_argument, 0, O_SESS},
        {"neurons", required_argument, 0, O_NEUR}, {"trials", required_argument, 0, O_TRIALS},
        {"val-fraction", required_argument, 0, O_VAL}, {"test-images", required_argument, 0, O_TEST},
        {"test-repeats", required_argument, 0, O_REPS}, {"final-test-images", required_argument, 0, O_FINAL},
        {"height", required_argument, 0, O_H}, {"width", required_argument, 0, O_W},
        {"downsample", required_argument, 0, O_DOWN}, {"seed", required_argument, 0, O_SEED},
        {"animal-id", required_argument, 0, O_ANIMAL}, {"rate-scale", required_argument, 0, O_RATE},
        {"noise", required_argument, 0, O_NOISE}, {"gamma-shape", required_argument, 0, O_GSHAPE},
        {"modulate", no_argument, 0, O_MOD}, {"zip", no_argument, 0, O_ZIP},
        {"zip-only", no_argument, 0, O_ZIPONLY}, {"force", no_argument, 0, O_FORCE},
        {"quiet", no_argument, 0, O_QUIET}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    npred_sim_params p = npred_sim_default_params();
    const char *out = NULL;
    int quiet = 0, c, rc = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        const char *name = NULL;
        for (const struct option *o = opts; o->name; o++)
            if (o->val == c) name = o->name;
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_OUT: out = optarg; break;
        case O_SESS: rc = parse_int(name, optarg, &p.n_sessions); break;
        case O_NEUR: rc = parse_int(name, optarg, &p.n_neurons); break;
        case O_TRIALS: rc = parse_int(name, optarg, &p.n_trials); break;
        case O_VAL: rc = parse_double(name, optarg, &p.val_fraction); break;
        case O_TEST: rc = parse_int(name, optarg, &p.n_test_images); break;
        case O_REPS: rc = parse_int(name, optarg, &p.n_test_repeats); break;
        case O_FINAL: rc = parse_int(name, optarg, &p.n_final_test_images); break;
        case O_H: rc = parse_int(name, optarg, &p.height); break;
        case O_W: rc = parse_int(name, optarg, &p.width); break;
        case O_DOWN: rc = parse_int(name, optarg, &p.downsample); break;
        case O_ANIMAL: rc = parse_int(name, optarg, &p.animal_id); break;
        case O_RATE: rc = parse_double(name, optarg, &p.rate_scale); break;
        case O_GSHAPE: rc = parse_double(name, optarg, &p.gamma_shape); break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return cli_usage_error("simulate", "--seed: '%s' is not a non-negative integer", optarg);
            p.seed = v;
            break;
        }
        case O_NOISE:
            if (!strcmp(optarg, "poisson")) p.noise = NPRED_SIM_NOISE_POISSON;
            else if (!strcmp(optarg, "gamma")) p.noise = NPRED_SIM_NOISE_GAMMA;
            else if (!strcmp(optarg, "none")) p.noise = NPRED_SIM_NOISE_NONE;
            else return cli_usage_error("simulate", "--noise: '%s' is not poisson, gamma or none", optarg);
            break;
        case O_MOD: p.modulate = 1; break;
        case O_ZIP: p.write_zip = 1; break;
        case O_ZIPONLY: p.write_zip = 1; p.write_tree = 0; break;
        case O_FORCE: p.force = 1; break;
        case O_QUIET: quiet = 1; break;
        case ':': return cli_usage_error("simulate", "%s needs a value", argv[optind - 1]);
        default: return cli_usage_error("simulate", "unknown option '%s'", argv[optind - 1]);
        }
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("simulate", "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error("simulate", "--out DIR is required");
    npred_status s = npred_sim_validate(&p);
    if (s) return cli_usage_error("simulate", "%s", npred_last_error());

    if (!quiet) {
        fprintf(stderr,
                "npred simulate: out=%s sessions=%d neurons=%d trials=%d val-fraction=%g test-images=%d "
                "test-repeats=%d final-test-images=%d height=%d width=%d downsample=%d seed=%" PRIu64
                " animal-id=%d rate-scale=%g noise=%s gamma-shape=%g modulate=%d folder=%d zip=%d force=%d\n",
                out, p.n_sessions, p.n_neurons, p.n_trials, p.val_fraction, p.n_test_images, p.n_test_repeats,
                p.n_final_test_images, p.height, p.width, p.downsample, p.seed, p.animal_id, p.rate_scale,
                p.noise == NPRED_SIM_NOISE_POISSON ? "poisson" : p.noise == NPRED_SIM_NOISE_GAMMA ? "gamma" : "none",
                p.gamma_shape, p.modulate, p.write_tree, p.write_zip, p.force);
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
