/* Synthetic SENSORIUM 2023 movie scans with a known ground truth (see simulate.h and
 * docs/simulate-video.md): options, the trial layout, the writer (trial files, meta,
 * per-element-and-frame statistics of the train tier, the ground truth), and the
 * atomic move into place.
 *
 * Legend: H, W = frame size; T = frames per file (T_max); n = neurons; N = trials.
 * Threads: OpenMP over the trials of a chunk, and over the elements of a statistic. */
#include "npred/simulate.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/threads.h"
#include "data/sim_internal.h"
#include "data/vsim_internal.h"
#include "data/zipfs.h"

#define VCHUNK 8 /* trials generated in parallel before writing */

npred_vsim_params npred_vsim_default_params(void)
{
    npred_vsim_params p;
    memset(&p, 0, sizeof p);
    p.n_sessions = 1;
    p.n_neurons = 1000;
    p.n_trials = 200;
    p.n_oracle_clips = 6;
    p.n_test_clips = 6;
    p.n_repeats = 10;
    p.height = 36;
    p.width = 64;
    p.frames = 300;
    p.min_frames = 240;
    p.fps = 30.0;
    p.stimuli = NPRED_VSIM_NATURAL | NPRED_VSIM_GRATINGS;
    p.seed = 1;
    p.animal_id = 90000;
    p.rate_scale = 2.0;
    p.noise = NPRED_SIM_NOISE_POISSON;
    p.gamma_shape = 2.0;
    p.modulate = 0;
    p.adaptation = 1.0;
    p.adaptation_tau = 1.0;
    p.write_tree = 1;
    p.write_zip = 0;
    p.force = 0;
    return p;
}

npred_status npred_vsim_validate(const npred_vsim_params *p)
{
    if (!p) return npred_errorf(NPRED_ERR_ARG, "simulate --video: params is NULL");
    npred_status s = sim_validate_common(p->n_sessions, p->n_neurons, p->animal_id, p->rate_scale, p->noise,
                                         p->gamma_shape, p->write_tree, p->write_zip);
    if (s) return s;
    if (p->n_trials < 1 || p->n_trials >= 100000)
        return npred_errorf(NPRED_ERR_ARG,
                            "trials: %d is not in 1..99999 (the statistics are computed over the train tier)",
                            p->n_trials);
    if (p->n_oracle_clips < 0 || p->n_oracle_clips >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "oracle-clips: %d is not in 0..99999", p->n_oracle_clips);
    if (p->n_test_clips < 0 || p->n_test_clips >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "test-clips: %d is not in 0..99999", p->n_test_clips);
    if ((p->n_oracle_clips > 0 || p->n_test_clips > 0) && (p->n_repeats < 2 || p->n_repeats > 1000))
        return npred_errorf(NPRED_ERR_ARG, "repeats: %d is not in 2..1000 (the oracle needs repeats)", p->n_repeats);
    if (p->height < 8 || p->width < 8 || p->height > 1024 || p->width > 1024)
        return npred_errorf(NPRED_ERR_ARG, "frame size %dx%d: height and width must be in 8..1024", p->height,
                            p->width);
    if (p->frames < VSIM_SKIP + 1 || p->frames > 100000)
        return npred_errorf(NPRED_ERR_ARG, "frames: %d is not in %d..100000", p->frames, VSIM_SKIP + 1);
    if (p->min_frames <= VSIM_SKIP || p->min_frames > p->frames)
        return npred_errorf(NPRED_ERR_ARG,
                            "min-frames: %d is not in %d..frames (%d): the kit's loader needs clips of more than "
                            "%d frames and its metric skips the first %d",
                            p->min_frames, VSIM_SKIP + 1, p->frames, VSIM_SKIP, VSIM_SKIP);
    if (!(p->fps >= 1 && p->fps <= 1000))
        return npred_errorf(NPRED_ERR_ARG, "fps: %g is not in [1, 1000]", p->fps);
    if (!p->stimuli || (p->stimuli & ~7u))
        return npred_errorf(NPRED_ERR_ARG, "stimuli: no stimulus kind (natural, gratings, noise) chosen");
    if (!(p->adaptation >= 0 && p->adaptation <= 100))
        return npred_errorf(NPRED_ERR_ARG, "adaptation: %g is not in [0, 100]", p->adaptation);
    if (!(p->adaptation_tau > 0 && p->adaptation_tau <= 1e4))
        return npred_errorf(NPRED_ERR_ARG, "adaptation-tau: %g s is not in (0, 10000]", p->adaptation_tau);
    return NPRED_OK;
}

void npred_vsim_tree_name(const npred_vsim_params *p, int session, char *buf, size_t bufsize)
{
    snprintf(buf, bufsize, "dynamic%d-1-%d-Video-%s", p->animal_id, session + 1, NPRED_VSIM_NAME_HASH);
}

npred_status npred_vsim_parse_stimuli(const char *list, unsigned *out)
{
    static const char *const names[3] = {"natural", "gratings", "noise"};
    unsigned bits = 0;
    const char *s = list ? list : "";
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (strlen(names[i]) == len && !strncmp(s, names[i], len)) k = i;
        if (k < 0)
            return npred_errorf(NPRED_ERR_ARG, "stimuli: '%.*s' is not natural, gratings or noise", (int)len, s);
        bits |= 1u << k;
        s += len + (e ? 1 : 0);
        if (e && !*s) break;
    }
    if (!bits) return npred_errorf(NPRED_ERR_ARG, "stimuli: '%s' names no kind (natural, gratings, noise)", list ? list : "");
    *out = bits;
    return NPRED_OK;
}

/* ------------------------------------------------------------------ layout */

static const char *const VTIERS[4] = {"train", "oracle", "live_test_main", "final_test_main"};

typedef struct {
    int64_t N;
    int64_t *clip;  /* (N) clip id */
    int *tier;      /* (N) index into VTIERS */
    vsim_clip *info;/* (N) */
} vlayout;

static void vlayout_free(vlayout *L)
{
    free(L->clip);
    free(L->tier);
    free(L->info);
    memset(L, 0, sizeof *L);
}

/* Train clip j of session s: 1000000 (s + 1) + j; oracle clip i: 100000 + i; test clips
 * 200000 + i (live_test_main) and 300000 + i (final_test_main); the repeated clips are
 * the same in every session. Trials in a random order. */
static npred_status vlayout_make(vlayout *L, const npred_vsim_params *p, int session)
{
    int64_t reps = p->n_oracle_clips + p->n_test_clips ? p->n_repeats : 0;
    int64_t N = p->n_trials + reps * ((int64_t)p->n_oracle_clips + 2 * (int64_t)p->n_test_clips);
    memset(L, 0, sizeof *L);
    L->N = N;
    L->clip = npred_calloc((size_t)N, sizeof(int64_t));
    L->tier = npred_calloc((size_t)N, sizeof(int));
    L->info = npred_calloc((size_t)N, sizeof(vsim_clip));
    int64_t *perm = npred_calloc((size_t)N, sizeof(int64_t));
    if (!L->clip || !L->tier || !L->info || !perm) {
        free(perm);
        vlayout_free(L);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory for %lld trials", (long long)N);
    }
    int64_t k = 0;
    int64_t *cl = npred_calloc((size_t)N, sizeof(int64_t));
    int *ti = npred_calloc((size_t)N, sizeof(int));
    if (!cl || !ti) {
        free(perm);
        free(cl);
        free(ti);
        vlayout_free(L);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory");
    }
    for (int j = 0; j < p->n_trials; j++, k++) {
        cl[k] = 1000000LL * (session + 1) + j;
        ti[k] = 0;
    }
    for (int tier = 1; tier < 4; tier++) {
        int nc = tier == 1 ? p->n_oracle_clips : p->n_test_clips;
        for (int i = 0; i < nc; i++)
            for (int64_t q = 0; q < reps; q++, k++) {
                cl[k] = 100000LL * tier + i;
                ti[k] = tier;
            }
    }
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    npred_rng r;
    rng_for(&r, p->seed, VTAG_LAYOUT, (uint64_t)session, 0);
    npred_rng_shuffle(&r, perm, (size_t)N);
    for (int64_t i = 0; i < N; i++) {
        L->clip[i] = cl[perm[i]];
        L->tier[i] = ti[perm[i]];
        L->info[i] = vsim_clip_info(p, L->clip[i]);
    }
    free(perm);
    free(cl);
    free(ti);
    return NPRED_OK;
}

/* ------------------------------------------------------------------ statistics */

typedef struct {
    void *map;
    size_t len;
    const float *data;
} mapped;

/* Map root/data/<field>/<i>.npy and check it holds `count` float32 values. */
static npred_status map_trial(mapped *m, const char *root, const char *field, int64_t i, size_t count)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data/%s/%lld.npy", root, field, (long long)i);
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return npred_errorf(NPRED_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 12) {
        close(fd);
        return npred_errorf(NPRED_ERR_IO, "%s: cannot read", path);
    }
    m->len = (size_t)st.st_size;
    m->map = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        return npred_errorf(NPRED_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    }
    const unsigned char *b = m->map;
    size_t off = b[6] == 1 ? 10 + (size_t)(b[8] | b[9] << 8)
                           : 12 + (size_t)(b[8] | b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24);
    if (off + count * sizeof(float) != m->len)
        return npred_errorf(NPRED_ERR_IO, "%s: not %zu float32 values", path, count);
    m->data = (const float *)(const void *)(b + off);
    return NPRED_OK;
}

static const char *const STATS[5] = {"mean", "std", "min", "max", "median"};

/* Per element (every value of the per-trial array, i.e. per element AND frame) over
 * the train trials: NumPy's nanmean, nanstd (ddof 0), nanmin, nanmax, nanmedian, in
 * double; NaN where no train trial has a value. Written as float32 of the field's
 * shape. */
static npred_status field_stats(const char *root, const char *field, int ndim, const int64_t *shape,
                                const vlayout *L)
{
    size_t count = 1;
    for (int d = 0; d < ndim; d++) count *= (size_t)shape[d];
    int64_t ntr = 0;
    for (int64_t i = 0; i < L->N; i++) ntr += L->tier[i] == 0;
    mapped *maps = npred_calloc((size_t)ntr, sizeof(mapped));
    float *out = npred_calloc(5 * count, sizeof(float));
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double *scratch = npred_calloc((size_t)ntr * threads, sizeof(double));
    npred_status s = NPRED_OK;
    if (!maps || !out || !scratch) s = npred_errorf(NPRED_ERR_NOMEM, "statistics of %s: out of memory", field);
    int64_t k = 0;
    for (int64_t i = 0; i < L->N && !s; i++)
        if (L->tier[i] == 0) s = map_trial(&maps[k++], root, field, i, count);
    if (!s) {
#pragma omp parallel for schedule(static)
        for (size_t e = 0; e < count; e++) {
            double *v = scratch + (size_t)npred_thread_id() * ntr;
            size_t m = 0;
            double sum = 0, mn = INFINITY, mx = -INFINITY;
            for (int64_t q = 0; q < ntr; q++) {
                double x = maps[q].data[e];
                if (isnan(x)) continue;
                v[m++] = x;
                sum += x;
                if (x < mn) mn = x;
                if (x > mx) mx = x;
            }
            if (!m) {
                for (int st = 0; st < 5; st++) out[st * count + e] = NAN;
                continue;
            }
            double mean = sum / (double)m, ss = 0;
            for (size_t q = 0; q < m; q++) ss += (v[q] - mean) * (v[q] - mean);
            out[e] = (float)mean;
            out[count + e] = (float)sqrt(ss / (double)m);
            out[2 * count + e] = (float)mn;
            out[3 * count + e] = (float)mx;
            out[4 * count + e] = (float)sim_median_of(v, m);
        }
    }
    for (int64_t q = 0; q < k; q++)
        if (maps[q].map) munmap(maps[q].map, maps[q].len);
    for (int st = 0; st < 5 && !s; st++) {
        char rel[256];
        snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", field, STATS[st]);
        s = sim_put_npy(root, rel, NPRED_DT_F32, 0, ndim, shape, out + st * count);
    }
    free(maps);
    free(out);
    free(scratch);
    return s;
}

/* ------------------------------------------------------------------ writer */

static npred_status make_dirs(const char *root)
{
    static const char *const sub[] = {"data/videos", "data/responses", "data/behavior", "data/pupil_center",
                                      "meta/neurons", "meta/trials", "meta/ground_truth/rates",
                                      "meta/statistics/videos/all", "meta/statistics/responses/all",
                                      "meta/statistics/behavior/all", "meta/statistics/pupil_center/all"};
    char path[4400];
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, sub[i]);
        npred_status s = sim_mkdir_p(path);
        if (s) return s;
    }
    return NPRED_OK;
}

static npred_status write_meta(const char *root, const npred_vsim_params *p, const vsim_neurons *nr,
                               const vlayout *L, int session)
{
    int64_t n = nr->n, N = L->N;
    int64_t *tmp = npred_calloc((size_t)(n > N ? n : N), sizeof(int64_t));
    const char **strs = npred_calloc((size_t)(n > N ? n : N), sizeof(char *));
    if (!tmp || !strs) {
        free(tmp);
        free(strs);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory");
    }
    npred_status s = sim_write_neurons(root, p->animal_id, session, n, nr->unit_ids, nr->coords, tmp, strs);
    for (int64_t t = 0; t < N; t++) strs[t] = VTIERS[L->tier[t]];
    if (!s) s = sim_put_str(root, "meta/trials/tiers.npy", strs, N, 15);
    static const char *const kinds[5] = {"", "natural", "gratings", "", "noise"};
    for (int64_t t = 0; t < N; t++) strs[t] = kinds[L->info[t].kind];
    if (!s) s = sim_put_str(root, "meta/ground_truth/trial_stimulus.npy", strs, N, 8);
    if (!s) s = sim_put_1d(root, "meta/ground_truth/trial_clip_ids.npy", NPRED_DT_I64, N, L->clip);
    for (int64_t t = 0; t < N; t++) tmp[t] = L->info[t].length;
    if (!s) s = sim_put_1d(root, "meta/ground_truth/trial_lengths.npy", NPRED_DT_I64, N, tmp);
    free(tmp);
    free(strs);
    return s;
}

static npred_status write_truth(const char *root, const npred_vsim_params *p, const vsim_neurons *nr,
                                const double *oracle, const char *name, int session)
{
    int64_t n = nr->n;
    const char *g = "meta/ground_truth/";
    char rel[256];
#define GT(file) (snprintf(rel, sizeof rel, "%s%s", g, file), rel)
    npred_status s = sim_put_2d(root, GT("rf_grid.npy"), NPRED_DT_F64, n, 2, nr->rf_grid);
    if (!s) s = sim_put_2d(root, GT("rf_pixel.npy"), NPRED_DT_F64, n, 2, nr->rf_pix);
    if (!s) s = sim_put_2d(root, GT("kernel_anchor.npy"), NPRED_DT_I64, n, 2, nr->anchor);
    if (!s) s = sim_put_2d(root, GT("gabor.npy"), NPRED_DT_F64, n, 4, nr->gabor);
    int64_t gsh[3] = {n, nr->D, nr->D};
    if (!s) s = sim_put_npy(root, GT("spatial_kernels.npy"), NPRED_DT_F32, 0, 3, gsh, nr->G);
    if (!s) s = sim_put_2d(root, GT("temporal_params.npy"), NPRED_DT_F64, n, 3, nr->tpar);
    if (!s) s = sim_put_2d(root, GT("temporal_kernels.npy"), NPRED_DT_F64, n, nr->L, nr->h);
    if (!s) s = sim_put_1d(root, GT("slope.npy"), NPRED_DT_F64, n, nr->slope);
    if (!s) s = sim_put_1d(root, GT("bias.npy"), NPRED_DT_F64, n, nr->bias);
    if (!s) s = sim_put_1d(root, GT("gain.npy"), NPRED_DT_F64, n, nr->gain);
    if (!s) s = sim_put_1d(root, GT("adaptation.npy"), NPRED_DT_F64, n, nr->alpha);
    if (!s) s = sim_put_1d(root, GT("modulation.npy"), NPRED_DT_F64, n, nr->kappa);
    if (!s) s = sim_put_1d(root, GT("oracle_corr_rate.npy"), NPRED_DT_F64, n, oracle);
#undef GT
    if (s) return s;

    cJSON *j = sim_json_head("npred simulate --video 1", name, session, p->seed);
    if (!j) return npred_errorf(NPRED_ERR_NOMEM, "params.json: out of memory");
    cJSON *o = cJSON_AddObjectToObject(j, "options");
    cJSON_AddNumberToObject(o, "sessions", p->n_sessions);
    cJSON_AddNumberToObject(o, "neurons", p->n_neurons);
    cJSON_AddNumberToObject(o, "trials", p->n_trials);
    cJSON_AddNumberToObject(o, "oracle_clips", p->n_oracle_clips);
    cJSON_AddNumberToObject(o, "test_clips", p->n_test_clips);
    cJSON_AddNumberToObject(o, "repeats", p->n_repeats);
    cJSON_AddNumberToObject(o, "height", p->height);
    cJSON_AddNumberToObject(o, "width", p->width);
    cJSON_AddNumberToObject(o, "frames", p->frames);
    cJSON_AddNumberToObject(o, "min_frames", p->min_frames);
    cJSON_AddNumberToObject(o, "fps", p->fps);
    cJSON *st = cJSON_AddArrayToObject(o, "stimuli");
    static const char *const kn[3] = {"natural", "gratings", "noise"};
    for (int b = 0; b < 3; b++)
        if (p->stimuli & (1u << b)) cJSON_AddItemToArray(st, cJSON_CreateString(kn[b]));
    cJSON_AddNumberToObject(o, "animal_id", p->animal_id);
    cJSON_AddNumberToObject(o, "rate_scale", p->rate_scale);
    cJSON_AddStringToObject(o, "noise", sim_noise_name(p->noise));
    cJSON_AddNumberToObject(o, "gamma_shape", p->gamma_shape);
    cJSON_AddBoolToObject(o, "modulate", p->modulate);
    cJSON_AddNumberToObject(o, "adaptation", p->adaptation);
    cJSON_AddNumberToObject(o, "adaptation_tau", p->adaptation_tau);
    cJSON *m = cJSON_AddObjectToObject(j, "model");
    cJSON_AddStringToObject(m, "frame", "x_t = (video[:, :, t] - 128) / 64");
    cJSON_AddStringToObject(m, "eye_shift",
                            "with modulate: gx = clip(0.04*(pupil_center[0,t]-120)/6, +-0.15), gy = "
                            "clip(0.04*(pupil_center[1,t]-80)/4, +-0.15) grid units; xs(y,x) = bilinear(x_t, "
                            "(x + gx*(W-1)/2, y + gy*(H-1)/2)), zero outside; else xs = x_t");
    cJSON_AddStringToObject(m, "spatial",
                            "s_j(t) = sum over the window (kernel_anchor +- R) inside the frame of "
                            "spatial_kernels[j] * xs; kernel = Gabor(gabor[j] = orientation, wavelength, sigma, "
                            "phase; centred at rf_pixel[j]) minus envelope * sum(g)/sum(envelope), unit L2 norm");
    cJSON_AddStringToObject(m, "temporal",
                            "u_j(t) = sum_{k=0}^{min(t,L-1)} temporal_kernels[j,k] s_j(t-k); kernel = "
                            "(tau/t1)^3 exp(-tau/t1) - beta (tau/t2)^3 exp(-tau/t2) at tau = k/fps, divided by "
                            "fps * integral_0^0.6s |h|; temporal_params[j] = t1, t2, beta (s, s, 1)");
    cJSON_AddStringToObject(m, "nonlinearity", "q_j(t) = softplus(slope[j] u_j(t) + bias[j])");
    cJSON_AddStringToObject(m, "adaptation",
                            "a_j(0) = 0, a_j(t) = rho a_j(t-1) + (1-rho) q_j(t-1), rho = exp(-1/(adaptation_tau*fps))");
    cJSON_AddStringToObject(m, "rate",
                            "lambda_j(t) = gain[j] q_j(t) / (1 + adaptation[j] a_j(t)) * exp(modulation[j] m_t)");
    cJSON_AddStringToObject(m, "m_t", "clip(0.6*(behavior[0,t]-18)/5 + 0.4*(behavior[1,t]/4-0.5), -3, 3) "
                                      "(0 without modulate)");
    cJSON_AddStringToObject(m, "noise", p->noise == NPRED_SIM_NOISE_POISSON ? "response ~ Poisson(rate) per frame"
                                        : p->noise == NPRED_SIM_NOISE_GAMMA ? "response ~ rate/k * Gamma(k, 1)"
                                                                            : "response = rate");
    cJSON_AddNumberToObject(m, "kernel_radius", nr->R);
    cJSON_AddNumberToObject(m, "kernel_samples", nr->L);
    cJSON_AddNumberToObject(m, "oracle_skip", VSIM_SKIP);
    cJSON *rt = cJSON_AddObjectToObject(j, "retinotopy");
    cJSON_AddStringToObject(rt, "map", "as npred simulate (docs/simulate.md, Retinotopy); rf_pixel = "
                                       "(rf_grid + 1)/2 * (W-1, H-1)");
    const char *rn[8] = {"rotation", "scale_x", "scale_y", "flip", "offset_x", "offset_y", "centre_x", "centre_y"};
    for (int q = 0; q < 8; q++) cJSON_AddNumberToObject(rt, rn[q], nr->retino[q]);
    return sim_json_write(root, j);
}

typedef struct {
    float *video, *resp, *lam, *beh, *eye; /* per chunk slot */
} vslot;

/* Build session `session` in tmp_dir/name (and name.zip). */
static npred_status build_session(const npred_vsim_params *p, const char *tmp_dir, const char *name, int session,
                                  npred_sim_progress_fn progress, void *user)
{
    char root[4200];
    snprintf(root, sizeof root, "%s/%s", tmp_dir, name);
    npred_status s = make_dirs(root);
    if (s) return s;
    vsim_neurons nr;
    vlayout L;
    if ((s = vsim_neurons_make(&nr, p, session))) return s;
    if ((s = vlayout_make(&L, p, session))) {
        vsim_neurons_free(&nr);
        return s;
    }
    int n = p->n_neurons, H = p->height, W = p->width, T = p->frames;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    size_t HWT = (size_t)H * W * T, nT = (size_t)n * T;
    float *buf = npred_calloc((size_t)VCHUNK * (HWT + 2 * nT + 4 * (size_t)T), sizeof(float));
    size_t ctl = vsim_clip_tmp_len(p), rtl = vsim_rates_tmp_len(&nr, T);
    float *ctmp = npred_calloc(ctl * threads, sizeof(float));
    double *rtmp = npred_calloc(rtl * threads, sizeof(double));
    double *acc = npred_calloc((size_t)n * 4, sizeof(double)); /* oracle: sum lam, sum lam^2, sum noise var, count */
    double *oracle = npred_calloc((size_t)n, sizeof(double));
    if (!buf || !ctmp || !rtmp || !acc || !oracle) {
        s = npred_errorf(NPRED_ERR_NOMEM, "simulate --video: out of memory for %d neurons x %d frames", n, T);
        goto done;
    }
    vslot slot[VCHUNK];
    for (int q = 0; q < VCHUNK; q++) {
        float *b = buf + (size_t)q * (HWT + 2 * nT + 4 * (size_t)T);
        slot[q].video = b;
        slot[q].resp = b + HWT;
        slot[q].lam = b + HWT + nT;
        slot[q].beh = b + HWT + 2 * nT;
        slot[q].eye = slot[q].beh + 2 * T;
    }
    if ((s = write_meta(root, p, &nr, &L, session))) goto done;

    for (int64_t c0 = 0; c0 < L.N && !s; c0 += VCHUNK) {
        int cn = (int)(L.N - c0 < VCHUNK ? L.N - c0 : VCHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int q = 0; q < cn; q++) {
            int64_t tr = c0 + q;
            int th = npred_thread_id();
            const vsim_clip *c = &L.info[tr];
            vsim_clip_frames(slot[q].video, p, c, ctmp + (size_t)th * ctl);
            npred_rng r;
            rng_for(&r, p->seed, VTAG_TRIAL, (uint64_t)session, (uint64_t)tr);
            vsim_behavior(slot[q].beh, slot[q].eye, p, c->length, &r);
            vsim_rates(slot[q].lam, &nr, p, slot[q].video, slot[q].beh, slot[q].eye, c->length,
                       rtmp + (size_t)th * rtl);
            for (size_t e = 0; e < nT; e++) {
                double l = slot[q].lam[e];
                slot[q].resp[e] = isnan(l) ? NAN
                                  : (float)(p->noise == NPRED_SIM_NOISE_POISSON ? sim_draw_poisson(&r, l)
                                            : p->noise == NPRED_SIM_NOISE_GAMMA
                                                ? l / p->gamma_shape * sim_draw_gamma(&r, p->gamma_shape)
                                                : l);
            }
        }
        for (int q = 0; q < cn && !s; q++) {
            int64_t tr = c0 + q;
            char rel[160];
            int64_t vsh[3] = {H, W, T};
            snprintf(rel, sizeof rel, "data/videos/%lld.npy", (long long)tr);
            s = sim_put_npy(root, rel, NPRED_DT_F32, 0, 3, vsh, slot[q].video);
            snprintf(rel, sizeof rel, "data/responses/%lld.npy", (long long)tr);
            if (!s) s = sim_put_2d(root, rel, NPRED_DT_F32, n, T, slot[q].resp);
            snprintf(rel, sizeof rel, "data/behavior/%lld.npy", (long long)tr);
            if (!s) s = sim_put_2d(root, rel, NPRED_DT_F32, 2, T, slot[q].beh);
            snprintf(rel, sizeof rel, "data/pupil_center/%lld.npy", (long long)tr);
            if (!s) s = sim_put_2d(root, rel, NPRED_DT_F32, 2, T, slot[q].eye);
            if (!s && L.tier[tr] != 0) {
                snprintf(rel, sizeof rel, "meta/ground_truth/rates/%lld.npy", (long long)tr);
                s = sim_put_2d(root, rel, NPRED_DT_F32, n, T, slot[q].lam);
            }
            if (L.tier[tr] == 1) /* oracle tier, scored frames */
                for (int j = 0; j < n; j++)
                    for (int t = VSIM_SKIP; t < L.info[tr].length; t++) {
                        double l = slot[q].lam[(size_t)j * T + t];
                        acc[4 * j] += l;
                        acc[4 * j + 1] += l * l;
                        acc[4 * j + 2] += p->noise == NPRED_SIM_NOISE_POISSON ? l
                                          : p->noise == NPRED_SIM_NOISE_GAMMA ? l * l / p->gamma_shape : 0.0;
                        acc[4 * j + 3] += 1;
                    }
        }
        if (!s && progress && progress(user, session, c0 + cn, L.N))
            s = npred_errorf(NPRED_ERR_INTERRUPTED, "simulate --video: stopped in session %d", session + 1);
    }
    if (s) goto done;
    for (int j = 0; j < n; j++) {
        double cnt = acc[4 * j + 3];
        if (cnt <= 0) continue;
        double mean = acc[4 * j] / cnt, var = acc[4 * j + 1] / cnt - mean * mean, nv = acc[4 * j + 2] / cnt;
        oracle[j] = var > 0 ? sqrt(var / (var + nv)) : 0.0;
    }
    {
        int64_t vsh[3] = {H, W, T}, rsh[2] = {n, T}, bsh[2] = {2, T};
        s = field_stats(root, "videos", 3, vsh, &L);
        if (!s) s = field_stats(root, "responses", 2, rsh, &L);
        if (!s) s = field_stats(root, "behavior", 2, bsh, &L);
        if (!s) s = field_stats(root, "pupil_center", 2, bsh, &L);
    }
    if (!s) s = write_truth(root, p, &nr, oracle, name, session);
    if (!s && p->write_zip) s = npred_tree_write_zip(tmp_dir, name);
done:
    free(buf);
    free(ctmp);
    free(rtmp);
    free(acc);
    free(oracle);
    vlayout_free(&L);
    vsim_neurons_free(&nr);
    return s;
}

/* Move tmp_dir/<name>[.zip] to out_dir/<name>[.zip] (the old ones removed first). */
static npred_status move_into_place(const npred_vsim_params *p, const char *tmp_dir, const char *out_dir,
                                    const char *name)
{
    for (int z = 0; z < 2; z++) {
        if (z ? !p->write_zip : !p->write_tree) continue;
        char from[4400], to[4400];
        snprintf(from, sizeof from, "%s/%s%s", tmp_dir, name, z ? ".zip" : "");
        snprintf(to, sizeof to, "%s/%s%s", out_dir, name, z ? ".zip" : "");
        npred_status s = sim_rm_tree(to);
        if (s) return s;
        if (rename(from, to) != 0)
            return npred_errorf(NPRED_ERR_IO, "%s: cannot move the scan into place: %s", to, strerror(errno));
    }
    return NPRED_OK;
}

npred_status npred_simulate_video(const npred_vsim_params *p, const char *out_dir, npred_sim_progress_fn progress,
                                  void *user)
{
    npred_status s = npred_vsim_validate(p);
    if (s || (s = sim_prepare_out(out_dir, p->force, "scans"))) return s;
    char tmp_dir[3200];
    snprintf(tmp_dir, sizeof tmp_dir, "%s/.npred-simulate-video-%ld", out_dir, (long)getpid());
    if ((s = sim_rm_tree(tmp_dir)) || (s = sim_mkdir_p(tmp_dir))) return s;
    for (int session = 0; session < p->n_sessions && !s; session++) {
        char name[256];
        npred_vsim_tree_name(p, session, name, sizeof name);
        s = build_session(p, tmp_dir, name, session, progress, user);
        if (!s) s = move_into_place(p, tmp_dir, out_dir, name);
        if (!s) {
            char built[4400];
            snprintf(built, sizeof built, "%s/%s", tmp_dir, name);
            s = sim_rm_tree(built); /* the folder of a zip-only run */
        }
    }
    npred_status r = sim_rm_tree(tmp_dir);
    return s ? s : r;
}
