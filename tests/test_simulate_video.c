/* npred simulate --video: the movie scan opens and loads through the video loaders,
 * shapes, tiers, NaN padding, statistics (recomputed here in double from the trial
 * files), determinism (any thread count), the responses against the documented
 * generative model (recomputed here in double from the stored videos, behaviour and
 * ground truth), the oracle, a spike-triggered average on white noise that finds
 * the RF centres, the retinotopic map, and the command line. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"
#include "npred/npy.h"
#include "npred/simulate.h"
#include "npred/video.h"

static char base[256];

static void make_base(void)
{
    if (base[0]) return;
    snprintf(base, sizeof base, "/tmp/npred-test-vsim-XXXXXX");
    if (!CHECK(mkdtemp(base) != NULL, "mkdtemp %s failed", base)) base[0] = 0;
}

static const char *npred_bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

/* A small scan: every tier, every stimulus kind, modulation and adaptation on. */
static npred_vsim_params small_params(void)
{
    npred_vsim_params p = npred_vsim_default_params();
    p.n_neurons = 24;
    p.n_trials = 12;
    p.n_oracle_clips = 2;
    p.n_test_clips = 1;
    p.n_repeats = 3;
    p.frames = 70;
    p.min_frames = 56;
    p.stimuli = NPRED_VSIM_NATURAL | NPRED_VSIM_GRATINGS | NPRED_VSIM_NOISE;
    p.modulate = 1;
    p.seed = 5;
    return p;
}

/* base/name simulated with p; the scan root of session s into root. */
static int simulate(const char *name, const npred_vsim_params *p, char *root, size_t n)
{
    static char done[16][64];
    static int n_done;
    make_base();
    char dir[512], tree[256];
    snprintf(dir, sizeof dir, "%s/%s", base, name);
    int have = 0;
    for (int i = 0; i < n_done; i++) have |= !strcmp(done[i], name);
    if (!have) {
        if (!CHECK_OK(npred_simulate_video(p, dir, NULL, NULL))) return 0;
        if (n_done < 16) snprintf(done[n_done++], sizeof done[0], "%s", name);
    }
    npred_vsim_tree_name(p, 0, tree, sizeof tree);
    if (root) snprintf(root, n, "%s/%s", dir, tree);
    return 1;
}

static int load(npred_array *a, const char *root, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return CHECK_OK(npred_npy_read(path, a));
}

static double *load_f64(const char *root, const char *rel, npred_array *hdr)
{
    npred_array a;
    double *d = NULL;
    if (!load(&a, root, rel)) return NULL;
    CHECK_OK(npred_array_to_f64(&a, &d));
    if (hdr) {
        *hdr = a;
        hdr->data = NULL;
    }
    npred_array_free(&a);
    return d;
}

/* ------------------------------------------------------------------ layout */

static void test_layout_and_loader(void)
{
    npred_vsim_params p = small_params();
    char root[768];
    if (!simulate("small", &p, root, sizeof root)) return;
    npred_video_dataset *d = NULL;
    if (!CHECK_OK(npred_video_dataset_open(&d, root, NULL))) return;
    npred_video_dataset_info info;
    npred_video_dataset_get_info(d, &info);
    int64_t N = 12 + 3 * (2 + 1 + 1);
    CHECK(info.n_trials == N && info.n_neurons == 24 && info.height == 36 && info.width == 64 && info.t_max == 70,
          "info: %lld trials, %lld neurons, %dx%d, T %d", (long long)info.n_trials, (long long)info.n_neurons,
          info.height, info.width, info.t_max);
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++)
        CHECK(info.has_field[f] && info.has_stats[f], "field %d present with statistics", f);
    CHECK(info.rows[NPRED_VFIELD_BEHAVIOR] == 2 && info.rows[NPRED_VFIELD_PUPIL_CENTER] == 2, "behaviour rows");
    const char *want[4] = {"final_test_main", "live_test_main", "oracle", "train"};
    const int64_t cnt[4] = {3, 3, 6, 12};
    CHECK(info.n_tiers == 4, "%zu tiers", info.n_tiers);
    for (size_t i = 0; i < info.n_tiers && i < 4; i++)
        CHECK(!strcmp(info.tier_names[i], want[i]) && info.tier_count[i] == cnt[i], "tier %zu: %s x %lld", i,
              info.tier_names[i], (long long)info.tier_count[i]);
    const char *nrn[] = {"unit_ids", "cell_motor_coordinates", "animal_ids", "sessions", "scan_idx", "area", "layer"};
    for (size_t i = 0; i < sizeof nrn / sizeof nrn[0]; i++)
        CHECK(npred_video_dataset_neuron_info(d, nrn[i]) != NULL, "meta/neurons/%s", nrn[i]);

    /* NaN padding after each clip's length, values present before it; repeats equal */
    npred_array lens, clips;
    if (!load(&lens, root, "meta/ground_truth/trial_lengths.npy")) goto out;
    if (!load(&clips, root, "meta/ground_truth/trial_clip_ids.npy")) {
        npred_array_free(&lens);
        goto out;
    }
    const int64_t *len = lens.data, *clip = clips.data;
    size_t vn = (size_t)36 * 64 * 70;
    float *v = malloc(vn * sizeof(float)), *v2 = malloc(vn * sizeof(float)), *x = malloc(24 * 70 * sizeof(float));
    int bad_pad = 0, bad_rep = 0, bad_int = 0;
    for (int64_t i = 0; i < N && v && v2 && x; i++) {
        CHECK(len[i] >= 56 && len[i] <= 70, "trial %lld length %lld", (long long)i, (long long)len[i]);
        if (!CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_VIDEOS, i, v))) break;
        for (size_t e = 0; e < (size_t)36 * 64; e++)
            for (int t = 0; t < 70; t++) {
                float a = v[e * 70 + t];
                bad_pad += (t < len[i]) == isnan(a);
                bad_int += t < len[i] && !(a >= 0 && a <= 255 && a == floorf(a));
            }
        for (int f = 1; f < NPRED_VFIELD_COUNT; f++) {
            if (!CHECK_OK(npred_video_dataset_read(d, (npred_video_field)f, i, x))) break;
            int rows = info.rows[f];
            for (int r = 0; r < rows; r++)
                for (int t = 0; t < 70; t++) bad_pad += (t < len[i]) == isnan(x[r * 70 + t]);
        }
        for (int64_t k = 0; k < i; k++)
            if (clip[k] == clip[i]) {
                if (!CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_VIDEOS, k, v2))) break;
                bad_rep += len[k] != len[i] || memcmp(v, v2, vn * sizeof(float)) != 0;
                break;
            }
    }
    CHECK(bad_pad == 0, "%d values break the NaN padding (NaN exactly from the clip's length on)", bad_pad);
    CHECK(bad_int == 0, "%d frame values are not integers in 0..255", bad_int);
    CHECK(bad_rep == 0, "%d repeats differ from their clip's first showing", bad_rep);
    free(v);
    free(v2);
    free(x);
    npred_array_free(&lens);
    npred_array_free(&clips);

    /* the kit-equivalent loader: training batches and whole oracle trials */
    {
        npred_video_loader_config c;
        npred_video_loader_config_init(&c);
        c.batch_size = 4;
        c.frames = 51;
        const char *paths[1] = {root};
        npred_video_loaders *L = NULL;
        if (CHECK_OK(npred_video_loaders_open(&L, paths, 1, &c))) {
            npred_video_session_info si;
            npred_video_loaders_session(L, 0, &si);
            CHECK(si.channels == 3 && si.frames == 51 && si.height == 36 && si.width == 64 && si.n_neurons == 24 &&
                      si.behavior_dim == 2 && si.pupil_dim == 2,
                  "session: C %d F %d %dx%d n %lld", si.channels, si.frames, si.height, si.width,
                  (long long)si.n_neurons);
            npred_rng rng;
            npred_rng_seed(&rng, 3);
            npred_video_batch b;
            if (CHECK_OK(npred_video_batch_init(&b, L, 0))) {
                npred_video_iter it;
                int64_t seen = 0;
                int has = 0, finite = 1;
                if (CHECK_OK(npred_video_iter_begin(&it, L, 0, "train", &rng))) {
                    while (npred_video_iter_next(&it, &b, &has) == NPRED_OK && has) {
                        seen += b.n;
                        size_t nv = (size_t)b.n * b.c * b.f * b.h * b.w, nr = (size_t)b.n * 24 * b.resp_f;
                        for (size_t e = 0; e < nv; e++) finite &= isfinite(b.videos[e]);
                        for (size_t e = 0; e < nr; e++) finite &= isfinite(b.responses[e]);
                    }
                    npred_video_iter_free(&it);
                }
                CHECK(seen == 12 && finite, "train tier: %lld trials, all values finite %d", (long long)seen, finite);
                npred_video_batch_free(&b);
            }
            npred_video_loaders_free(L);
        }
        npred_video_loader_config_free(&c);
    }
out:
    npred_video_dataset_free(d);
}

/* ------------------------------------------------------------------ statistics */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_statistics(void)
{
    npred_vsim_params p = small_params();
    char root[768];
    if (!simulate("small", &p, root, sizeof root)) return;
    npred_video_dataset *d = NULL;
    if (!CHECK_OK(npred_video_dataset_open(&d, root, NULL))) return;
    npred_video_dataset_info info;
    npred_video_dataset_get_info(d, &info);
    const int *tiers = npred_video_dataset_tiers(d);
    int train = -1;
    for (size_t i = 0; i < info.n_tiers; i++)
        if (!strcmp(info.tier_names[i], "train")) train = (int)i;
    int64_t ntr = 0;
    for (int64_t i = 0; i < info.n_trials; i++) ntr += tiers[i] == train;
    static const char *names[5] = {"mean", "std", "min", "max", "median"};
    for (int f = 0; f < NPRED_VFIELD_COUNT; f++) {
        size_t cnt = (size_t)info.rows[f] * info.t_max;
        float *all = malloc(cnt * (size_t)ntr * sizeof(float));
        double *col = malloc((size_t)ntr * sizeof(double));
        if (!CHECK(all && col, "out of memory")) {
            free(all);
            free(col);
            break;
        }
        int64_t k = 0;
        for (int64_t i = 0; i < info.n_trials; i++)
            if (tiers[i] == train && !CHECK_OK(npred_video_dataset_read(d, (npred_video_field)f, i, all + cnt * k++)))
                break;
        double worst[5] = {0};
        int nan_ok = 1;
        for (size_t e = 0; e < cnt; e++) {
            size_t m = 0;
            for (int64_t q = 0; q < ntr; q++)
                if (!isnan(all[cnt * q + e])) col[m++] = all[cnt * q + e];
            double ref[5];
            if (!m) {
                for (int s = 0; s < 5; s++) nan_ok &= isnan(npred_video_dataset_stat(d, (npred_video_field)f, names[s])[e]);
                continue;
            }
            double sum = 0, ss = 0;
            for (size_t q = 0; q < m; q++) sum += col[q];
            ref[0] = sum / m;
            for (size_t q = 0; q < m; q++) ss += (col[q] - ref[0]) * (col[q] - ref[0]);
            ref[1] = sqrt(ss / m);
            qsort(col, m, sizeof(double), cmp_d);
            ref[2] = col[0];
            ref[3] = col[m - 1];
            ref[4] = m % 2 ? col[m / 2] : 0.5 * (col[m / 2 - 1] + col[m / 2]);
            for (int s = 0; s < 5; s++) {
                double got = npred_video_dataset_stat(d, (npred_video_field)f, names[s])[e];
                worst[s] = th_worst(worst[s], fabs(got - ref[s]) / (1e-6 + fabs(ref[s])));
            }
        }
        for (int s = 0; s < 5; s++)
            CHECK(worst[s] <= 1e-6, "%s %s: worst relative error %g against the train tier in double",
                  npred_video_field_name((npred_video_field)f), names[s], worst[s]);
        CHECK(nan_ok, "%s: NaN statistics where no train trial has the frame", npred_video_field_name((npred_video_field)f));
        free(all);
        free(col);
    }
    npred_video_dataset_free(d);
}

/* ------------------------------------------------------------------ determinism */

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

/* Every file under a (recursively) equals its twin under b; counts the files. */
static int trees_equal(const char *a, const char *b, int *files)
{
    DIR *d = opendir(a);
    if (!d) return 0;
    struct dirent *e;
    int eq = 1;
    while (eq && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char pa[2048], pb[2048];
        snprintf(pa, sizeof pa, "%s/%s", a, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, e->d_name);
        struct stat st;
        if (stat(pa, &st) != 0) eq = 0;
        else if (S_ISDIR(st.st_mode)) eq = trees_equal(pa, pb, files);
        else {
            eq = files_equal(pa, pb);
            ++*files;
            if (!eq) fprintf(stderr, "differs: %s\n", pa);
        }
    }
    closedir(d);
    return eq;
}

static void test_determinism(void)
{
    npred_vsim_params p = small_params();
    p.write_zip = 1;
    char r1[768], r2[768], r3[768];
#ifdef _OPENMP
    int th = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    int ok = simulate("det1", &p, r1, sizeof r1);
#ifdef _OPENMP
    omp_set_num_threads(th > 1 ? th : 2);
#endif
    ok = ok && simulate("det2", &p, r2, sizeof r2);
#ifdef _OPENMP
    omp_set_num_threads(th);
#endif
    if (!ok) return;
    int files = 0, same = trees_equal(r1, r2, &files);
    CHECK(same && files == 4 * 24 + 12 + 17 + 7 + 20 + 1, "1 and 2 threads: byte-identical trees (%d files)", files);
    char z1[800], z2[800];
    snprintf(z1, sizeof z1, "%s.zip", r1);
    snprintf(z2, sizeof z2, "%s.zip", r2);
    CHECK(files_equal(z1, z2), "byte-identical zips");
    npred_video_dataset *d = NULL;
    if (CHECK_OK(npred_video_dataset_open(&d, z1, NULL))) {
        npred_video_dataset_info info;
        npred_video_dataset_get_info(d, &info);
        CHECK(info.is_zip && info.n_trials == 24 && !strcmp(info.data_key, "dynamic90000-1-1-Video-" NPRED_VSIM_NAME_HASH),
              "the zip opens as a movie scan: key %s", info.data_key);
        npred_video_dataset_free(d);
    }
    p.seed = 6;
    p.write_zip = 0;
    if (!simulate("det3", &p, r3, sizeof r3)) return;
    char a[900], b[900];
    snprintf(a, sizeof a, "%s/data/responses/0.npy", r1);
    snprintf(b, sizeof b, "%s/data/responses/0.npy", r3);
    CHECK(!files_equal(a, b), "another seed gives other responses");
    /* nothing but the scans is left in the output folder */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/det1", base);
    DIR *dd = opendir(dir);
    int entries = 0, hidden = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            hidden += e->d_name[0] == '.';
        }
    if (dd) closedir(dd);
    CHECK(entries == 2 && hidden == 0, "out holds the scan and its zip only (%d entries, %d hidden)", entries, hidden);
}

/* ------------------------------------------------------------------ generative model */

/* Independent double-precision recomputation of the documented model. */
typedef struct {
    int n, D, R, L, T;
    double *gabor, *pix, *anchor, *G, *tpar, *h, *slope, *bias, *gain, *alpha, *kappa;
} truth;

static void truth_free(truth *t)
{
    free(t->gabor);
    free(t->pix);
    free(t->anchor);
    free(t->G);
    free(t->tpar);
    free(t->h);
    free(t->slope);
    free(t->bias);
    free(t->gain);
    free(t->alpha);
    free(t->kappa);
}

static int truth_load(truth *t, const char *root)
{
    memset(t, 0, sizeof *t);
    npred_array gh, hh;
    t->gabor = load_f64(root, "meta/ground_truth/gabor.npy", NULL);
    t->pix = load_f64(root, "meta/ground_truth/rf_pixel.npy", NULL);
    t->anchor = load_f64(root, "meta/ground_truth/kernel_anchor.npy", NULL);
    t->G = load_f64(root, "meta/ground_truth/spatial_kernels.npy", &gh);
    t->tpar = load_f64(root, "meta/ground_truth/temporal_params.npy", NULL);
    t->h = load_f64(root, "meta/ground_truth/temporal_kernels.npy", &hh);
    t->slope = load_f64(root, "meta/ground_truth/slope.npy", NULL);
    t->bias = load_f64(root, "meta/ground_truth/bias.npy", NULL);
    t->gain = load_f64(root, "meta/ground_truth/gain.npy", NULL);
    t->alpha = load_f64(root, "meta/ground_truth/adaptation.npy", NULL);
    t->kappa = load_f64(root, "meta/ground_truth/modulation.npy", NULL);
    if (!t->gabor || !t->pix || !t->anchor || !t->G || !t->tpar || !t->h || !t->slope || !t->bias || !t->gain ||
        !t->alpha || !t->kappa)
        return 0;
    t->n = (int)gh.shape[0];
    t->D = (int)gh.shape[1];
    t->R = (t->D - 1) / 2;
    t->L = (int)hh.shape[1];
    return CHECK(gh.ndim == 3 && gh.shape[2] == t->D && hh.shape[0] == t->n, "kernel shapes");
}

static double traw(double tau, const double *tp)
{
    double a = tau / tp[0], b = tau / tp[1];
    return pow(a, 3) * exp(-a) - tp[2] * pow(b, 3) * exp(-b);
}

/* The stored kernels are the documented formulas. */
static void check_kernels(const truth *t, double fps)
{
    double worst_g = 0, worst_h = 0;
    int DD = t->D * t->D;
    double *g = malloc(sizeof(double) * DD), *env = malloc(sizeof(double) * DD);
    for (int j = 0; j < t->n && g && env; j++) {
        const double *gb = t->gabor + 4 * j;
        double sg = 0, se = 0, nn = 0;
        for (int q = 0; q < DD; q++) {
            double px = t->anchor[2 * j] + (q % t->D - t->R) - t->pix[2 * j];
            double py = t->anchor[2 * j + 1] + (q / t->D - t->R) - t->pix[2 * j + 1];
            env[q] = exp(-(px * px + py * py) / (2 * gb[2] * gb[2]));
            g[q] = env[q] * cos(2 * M_PI * (px * cos(gb[0]) + py * sin(gb[0])) / gb[1] + gb[3]);
            sg += g[q];
            se += env[q];
        }
        for (int q = 0; q < DD; q++) {
            g[q] -= env[q] * sg / se;
            nn += g[q] * g[q];
        }
        for (int q = 0; q < DD; q++) worst_g = th_worst(worst_g, fabs(g[q] / sqrt(nn) - t->G[(size_t)j * DD + q]));
        /* area by the midpoint rule on 6000 steps of 0.1 ms */
        double area = 0;
        for (int k = 0; k < 6000; k++) area += fabs(traw((k + 0.5) * 1e-4, t->tpar + 3 * j)) * 1e-4;
        for (int k = 0; k < t->L; k++)
            worst_h = th_worst(worst_h, fabs(traw(k / fps, t->tpar + 3 * j) / (fps * area) - t->h[(size_t)j * t->L + k]));
        CHECK(fabs(t->anchor[2 * j] - t->pix[2 * j]) <= 0.5 && fabs(t->anchor[2 * j + 1] - t->pix[2 * j + 1]) <= 0.5,
              "neuron %d: the window is centred on the RF", j);
    }
    free(g);
    free(env);
    CHECK(worst_g <= 1e-6, "spatial kernels: worst error %g against the Gabor formula", worst_g);
    CHECK(worst_h <= 1e-9, "temporal kernels: worst error %g against the biphasic formula", worst_h);
    CHECK(t->L == (int)ceil(0.6 * fps), "temporal kernel samples %d at %g Hz", t->L, fps);
}

/* Noise-free rates (n, T) of one trial from the files, in double. */
static void model_rates(double *lam, const truth *t, const float *video, const float *beh, const float *eye, int H,
                        int W, int T, int len, double fps, double tau_a, int modulate)
{
    double *s = calloc((size_t)t->n * T, sizeof(double)), *xs = calloc((size_t)H * W, sizeof(double));
    if (!s || !xs) {
        free(s);
        free(xs);
        return;
    }
    for (int f = 0; f < len; f++) {
        double gx = 0, gy = 0;
        if (modulate) {
            gx = fmin(0.15, fmax(-0.15, 0.04 * (eye[f] - 120.0) / 6.0));
            gy = fmin(0.15, fmax(-0.15, 0.04 * (eye[T + f] - 80.0) / 4.0));
        }
        double sx = gx * (W - 1) / 2, sy = gy * (H - 1) / 2;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double cx = x + sx, cy = y + sy, v = 0;
                int x0 = (int)floor(cx), y0 = (int)floor(cy);
                for (int yy = y0; yy <= y0 + 1; yy++)
                    for (int xx = x0; xx <= x0 + 1; xx++) {
                        if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                        double w = (1 - fabs(cx - xx)) * (1 - fabs(cy - yy));
                        v += w * (video[((size_t)yy * W + xx) * T + f] - 128.0) / 64.0;
                    }
                xs[y * W + x] = v;
            }
        for (int j = 0; j < t->n; j++) {
            double acc = 0;
            for (int q = 0; q < t->D * t->D; q++) {
                int x = (int)t->anchor[2 * j] + q % t->D - t->R, y = (int)t->anchor[2 * j + 1] + q / t->D - t->R;
                if (x >= 0 && x < W && y >= 0 && y < H) acc += t->G[(size_t)j * t->D * t->D + q] * xs[y * W + x];
            }
            s[(size_t)j * T + f] = acc;
        }
    }
    double rho = exp(-1 / (tau_a * fps));
    for (int j = 0; j < t->n; j++) {
        double a = 0, qp = 0;
        for (int f = 0; f < len; f++) {
            double u = 0;
            for (int k = 0; k < t->L && k <= f; k++) u += t->h[(size_t)j * t->L + k] * s[(size_t)j * T + f - k];
            double z = t->slope[j] * u + t->bias[j];
            double q = z > 30 ? z : log1p(exp(z));
            if (f > 0) a = rho * a + (1 - rho) * qp;
            double m = 0;
            if (modulate) m = fmin(3, fmax(-3, 0.6 * (beh[f] - 18) / 5 + 0.4 * (beh[T + f] / 4 - 0.5)));
            lam[(size_t)j * T + f] = t->gain[j] * q / (1 + t->alpha[j] * a) * exp(t->kappa[j] * m);
            qp = q;
        }
    }
    free(s);
    free(xs);
}

static void test_generative_model(void)
{
    npred_vsim_params p = small_params();
    p.noise = NPRED_SIM_NOISE_NONE;
    p.fps = 24;
    p.adaptation = 2.0;
    p.adaptation_tau = 0.4;
    char root[768];
    if (!simulate("model", &p, root, sizeof root)) return;
    truth t;
    if (!truth_load(&t, root)) {
        truth_free(&t);
        return;
    }
    check_kernels(&t, p.fps);
    npred_video_dataset *d = NULL;
    npred_array lens;
    if (!CHECK_OK(npred_video_dataset_open(&d, root, NULL)) || !load(&lens, root, "meta/ground_truth/trial_lengths.npy")) {
        npred_video_dataset_free(d);
        truth_free(&t);
        return;
    }
    const int64_t *len = lens.data;
    int H = 36, W = 64, T = 70, n = t.n;
    const int *tiers = npred_video_dataset_tiers(d);
    float *v = malloc(sizeof(float) * H * W * T), *r = malloc(sizeof(float) * n * T);
    float *b = malloc(sizeof(float) * 2 * T), *e = malloc(sizeof(float) * 2 * T), *gt = malloc(sizeof(float) * n * T);
    double *lam = malloc(sizeof(double) * n * T);
    double worst = 0, worst_gt = 0, adapt_effect = 0;
    int trials = 0, gt_files = 0;
    for (int64_t i = 0; i < 10 && v && r && b && e && gt && lam; i++) {
        if (!CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_VIDEOS, i, v)) ||
            !CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_RESPONSES, i, r)) ||
            !CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_BEHAVIOR, i, b)) ||
            !CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_PUPIL_CENTER, i, e)))
            break;
        model_rates(lam, &t, v, b, e, H, W, T, (int)len[i], p.fps, p.adaptation_tau, 1);
        for (int j = 0; j < n; j++)
            for (int f = 0; f < len[i]; f++) {
                double ref = lam[(size_t)j * T + f];
                worst = th_worst(worst, fabs(r[(size_t)j * T + f] - ref) / (1e-3 + ref));
            }
        /* adaptation acts: the same model without it differs */
        truth t0 = t;
        double *zero = calloc((size_t)n, sizeof(double));
        t0.alpha = zero;
        double *lam0 = malloc(sizeof(double) * n * T);
        if (zero && lam0) {
            model_rates(lam0, &t0, v, b, e, H, W, T, (int)len[i], p.fps, p.adaptation_tau, 1);
            for (int j = 0; j < n; j++)
                for (int f = 0; f < len[i]; f++)
                    adapt_effect = fmax(adapt_effect, fabs(lam0[(size_t)j * T + f] - lam[(size_t)j * T + f]));
        }
        free(zero);
        free(lam0);
        trials++;
        char rel[128];
        snprintf(rel, sizeof rel, "meta/ground_truth/rates/%lld.npy", (long long)i);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", root, rel);
        npred_video_dataset_info info;
        npred_video_dataset_get_info(d, &info);
        const char *tn = info.tier_names[tiers[i]];
        struct stat st;
        int has = stat(path, &st) == 0;
        CHECK(has == (strcmp(tn, "train") != 0), "trial %lld (%s): ground-truth rates file present %d", (long long)i, tn, has);
        if (has) {
            npred_array a;
            if (load(&a, root, rel)) {
                const float *g = a.data;
                for (int q = 0; q < n * T; q++)
                    worst_gt = th_worst(worst_gt, isnan(r[q]) != isnan(g[q]) ? INFINITY : isnan(r[q]) ? 0 : fabs(g[q] - r[q]));
                gt_files++;
                npred_array_free(&a);
            }
        }
    }
    CHECK(trials == 10 && worst <= 2e-5, "responses (noise none) against the model in double: worst relative error %g", worst);
    CHECK(adapt_effect > 0.01, "adaptation changes the rates (by up to %g)", adapt_effect);
    CHECK(gt_files > 0 && worst_gt == 0, "ground-truth rates equal the noise-free responses (%d files, worst %g)", gt_files,
          worst_gt);
    free(v);
    free(r);
    free(b);
    free(e);
    free(gt);
    free(lam);
    npred_array_free(&lens);
    npred_video_dataset_free(d);
    truth_free(&t);
}

/* ------------------------------------------------------------------ oracle, noise */

static void test_oracle_and_noise(void)
{
    npred_vsim_params p = small_params();
    p.n_oracle_clips = 3;
    char root[768];
    if (!simulate("oracle", &p, root, sizeof root)) return;
    npred_video_dataset *d = NULL;
    npred_array lens;
    double *orc = load_f64(root, "meta/ground_truth/oracle_corr_rate.npy", NULL);
    if (!orc || !CHECK_OK(npred_video_dataset_open(&d, root, NULL)) ||
        !load(&lens, root, "meta/ground_truth/trial_lengths.npy")) {
        free(orc);
        npred_video_dataset_free(d);
        return;
    }
    npred_video_dataset_info info;
    npred_video_dataset_get_info(d, &info);
    const int *tiers = npred_video_dataset_tiers(d);
    const int64_t *len = lens.data;
    int n = (int)info.n_neurons, T = info.t_max;
    double *acc = calloc((size_t)n * 3, sizeof(double));
    float *r = malloc(sizeof(float) * n * T);
    double sum_r = 0, sum_l = 0;
    int nonint = 0, files = 0;
    for (int64_t i = 0; i < info.n_trials && acc && r; i++) {
        const char *tn = info.tier_names[tiers[i]];
        if (!strcmp(tn, "train")) continue;
        char rel[128];
        snprintf(rel, sizeof rel, "meta/ground_truth/rates/%lld.npy", (long long)i);
        npred_array a;
        if (!load(&a, root, rel) || !CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_RESPONSES, i, r))) break;
        files++;
        const float *lam = a.data;
        for (int j = 0; j < n; j++)
            for (int f = 0; f < len[i]; f++) {
                double l = lam[(size_t)j * T + f], y = r[(size_t)j * T + f];
                nonint += !(y >= 0 && y == floor(y));
                sum_r += y;
                sum_l += l;
                if (!strcmp(tn, "oracle") && f >= 50) {
                    acc[3 * j] += l;
                    acc[3 * j + 1] += l * l;
                    acc[3 * j + 2] += 1;
                }
            }
        npred_array_free(&a);
    }
    double worst = 0;
    for (int j = 0; j < n && acc; j++) {
        double m = acc[3 * j] / acc[3 * j + 2], var = acc[3 * j + 1] / acc[3 * j + 2] - m * m;
        worst = th_worst(worst, fabs(sqrt(var / (var + m)) - orc[j]));
    }
    CHECK(files == 15 && worst <= 1e-9, "oracle_corr_rate = sqrt(Var/(Var + E[rate])) over the oracle frames from 50 "
          "(%d files, worst error %g)", files, worst);
    CHECK(nonint == 0, "%d Poisson responses are not non-negative integers", nonint);
    double z = (sum_r - sum_l) / sqrt(sum_l);
    CHECK(sum_l > 1000 && fabs(z) < 5, "total counts %g against total rate %g: z = %g", sum_r, sum_l, z);
    free(acc);
    free(r);
    free(orc);
    npred_array_free(&lens);
    npred_video_dataset_free(d);
}

/* ------------------------------------------------------------------ STA, retinotopy */

/* A spike-triggered average of white-noise trials finds each RF centre. */
static void test_sta_white_noise(void)
{
    npred_vsim_params p = npred_vsim_default_params();
    p.n_neurons = 16;
    p.n_trials = 40;
    p.n_oracle_clips = p.n_test_clips = 0;
    p.frames = 120;
    p.min_frames = 100;
    p.stimuli = NPRED_VSIM_NOISE;
    p.rate_scale = 4;
    p.seed = 11;
    char root[768];
    if (!simulate("sta", &p, root, sizeof root)) return;
    npred_video_dataset *d = NULL;
    double *pix = load_f64(root, "meta/ground_truth/rf_pixel.npy", NULL);
    npred_array hh;
    double *h = load_f64(root, "meta/ground_truth/temporal_kernels.npy", &hh);
    if (!pix || !h || !CHECK_OK(npred_video_dataset_open(&d, root, NULL))) {
        free(pix);
        free(h);
        npred_video_dataset_free(d);
        return;
    }
    int H = 36, W = 64, T = 120, n = 16, L = (int)hh.shape[1], HW = H * W;
    double *sta = calloc((size_t)n * L * HW, sizeof(double)), *tot = calloc((size_t)n, sizeof(double));
    float *v = malloc(sizeof(float) * HW * T), *r = malloc(sizeof(float) * n * T);
    for (int64_t i = 0; i < 40 && sta && tot && v && r; i++) {
        if (!CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_VIDEOS, i, v)) ||
            !CHECK_OK(npred_video_dataset_read(d, NPRED_VFIELD_RESPONSES, i, r)))
            break;
        for (int j = 0; j < n; j++)
            for (int t = 0; t < T; t++) {
                double y = r[(size_t)j * T + t];
                if (isnan(y) || y == 0) continue;
                tot[j] += y;
                for (int k = 0; k < L && k <= t; k++) {
                    double *s = sta + ((size_t)j * L + k) * HW;
                    for (int q = 0; q < HW; q++) s[q] += y * (v[(size_t)q * T + t - k] - 127.5) / 64.0;
                }
            }
    }
    int good = 0;
    double errs[16];
    for (int j = 0; j < n && sta && tot; j++) {
        /* the lag with the most energy, then the energy centroid around its peak pixel */
        int best = 0;
        double be = -1;
        for (int k = 0; k < L; k++) {
            double e = 0;
            for (int q = 0; q < HW; q++) e += sta[((size_t)j * L + k) * HW + q] * sta[((size_t)j * L + k) * HW + q];
            if (e > be) be = e, best = k;
        }
        const double *s = sta + ((size_t)j * L + best) * HW;
        int qm = 0;
        for (int q = 0; q < HW; q++)
            if (fabs(s[q]) > fabs(s[qm])) qm = q;
        double sw = 0, sx = 0, sy = 0;
        for (int y = qm / W - 4; y <= qm / W + 4; y++)
            for (int x = qm % W - 4; x <= qm % W + 4; x++) {
                if (x < 0 || y < 0 || x >= W || y >= H) continue;
                double e = s[y * W + x] * s[y * W + x];
                sw += e, sx += e * x, sy += e * y;
            }
        double ex = sx / sw - pix[2 * j], ey = sy / sw - pix[2 * j + 1];
        errs[j] = sqrt(ex * ex + ey * ey);
        good += errs[j] <= 1.0;
    }
    CHECK(good >= 14, "STA on white noise: %d of 16 RF centres found within 1 pixel (errors %.2f %.2f %.2f %.2f ...)",
          good, errs[0], errs[1], errs[2], errs[3]);
    free(sta);
    free(tot);
    free(v);
    free(r);
    free(pix);
    free(h);
    npred_video_dataset_free(d);
}

/* RF centres follow the cortical positions (what the cortex grid predictor learns):
 * an affine fit from cell_motor_coordinates explains most of their variance. */
static void test_retinotopy(void)
{
    npred_vsim_params p = small_params();
    char root[768];
    if (!simulate("small", &p, root, sizeof root)) return;
    npred_array ch;
    double *c = load_f64(root, "meta/neurons/cell_motor_coordinates.npy", &ch);
    double *g = load_f64(root, "meta/ground_truth/rf_grid.npy", NULL);
    double *px = load_f64(root, "meta/ground_truth/rf_pixel.npy", NULL);
    if (!c || !g || !px) {
        free(c), free(g), free(px);
        return;
    }
    int n = (int)ch.shape[0];
    for (int j = 0; j < n; j++)
        CHECK(fabs(px[2 * j] - (g[2 * j] + 1) / 2 * 63) < 1e-9 && fabs(px[2 * j + 1] - (g[2 * j + 1] + 1) / 2 * 35) < 1e-9,
              "neuron %d: rf_pixel = (rf_grid + 1)/2 (W-1, H-1)", j);
    for (int a = 0; a < 2; a++) {
        /* least squares of g_a on (x, y, 1) by the normal equations (3x3) */
        double M[3][4] = {{0}};
        for (int j = 0; j < n; j++) {
            double f[3] = {c[3 * j] / 300, c[3 * j + 1] / 300, 1};
            for (int r = 0; r < 3; r++) {
                for (int q = 0; q < 3; q++) M[r][q] += f[r] * f[q];
                M[r][3] += f[r] * g[2 * j + a];
            }
        }
        for (int k = 0; k < 3; k++)
            for (int r = k + 1; r < 3; r++) {
                double m = M[r][k] / M[k][k];
                for (int q = k; q < 4; q++) M[r][q] -= m * M[k][q];
            }
        double b[3];
        for (int k = 2; k >= 0; k--) {
            b[k] = M[k][3];
            for (int q = k + 1; q < 3; q++) b[k] -= M[k][q] * b[q];
            b[k] /= M[k][k];
        }
        double mean = 0, ss = 0, res = 0;
        for (int j = 0; j < n; j++) mean += g[2 * j + a] / n;
        for (int j = 0; j < n; j++) {
            double pred = b[0] * c[3 * j] / 300 + b[1] * c[3 * j + 1] / 300 + b[2];
            ss += (g[2 * j + a] - mean) * (g[2 * j + a] - mean);
            res += (g[2 * j + a] - pred) * (g[2 * j + a] - pred);
        }
        CHECK(1 - res / ss > 0.9, "rf_grid[%d] from cortical position: R^2 %g", a, 1 - res / ss);
    }
    free(c);
    free(g);
    free(px);
}

/* ------------------------------------------------------------------ command line */

static int run(char **out, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", npred_bin(), args);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    *out = th_read_stream(f);
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_error(const char *args, const char *want)
{
    char *out = NULL;
    int rc = run(&out, args);
    CHECK((rc == 1 || rc == 2) && out && strstr(out, want), "npred %s: exit %d, wanted 1 or 2 and '%s' in:\n%s", args, rc, want,
          out ? out : "");
    free(out);
}

static void test_cli(void)
{
    make_base();
    char args[1024], *out = NULL;
    snprintf(args, sizeof args,
             "simulate --video --out %s/cli --neurons 5 --trials 3 --oracle-clips 1 --test-clips 0 --repeats 2 "
             "--frames 60 --min-frames 55 --fps 15 --stimuli gratings --zip-only --quiet",
             base);
    int rc = run(&out, args);
    CHECK(rc == 0, "npred %s: exit %d\n%s", args, rc, out ? out : "");
    free(out);
    char zip[800], tree[256], dir[800];
    npred_vsim_params p = npred_vsim_default_params();
    npred_vsim_tree_name(&p, 0, tree, sizeof tree);
    snprintf(zip, sizeof zip, "%s/cli/%s.zip", base, tree);
    snprintf(dir, sizeof dir, "%s/cli/%s", base, tree);
    struct stat st;
    CHECK(stat(zip, &st) == 0 && stat(dir, &st) != 0, "--zip-only: the zip and no folder");
    npred_video_dataset *d = NULL;
    if (CHECK_OK(npred_video_dataset_open(&d, zip, NULL))) {
        npred_video_dataset_info info;
        npred_video_dataset_get_info(d, &info);
        CHECK(info.n_trials == 5 && info.n_neurons == 5 && info.t_max == 60, "cli scan: %lld trials",
              (long long)info.n_trials);
        npred_video_dataset_free(d);
    }
    snprintf(args, sizeof args, "simulate --video --out %s/cli --neurons 5 --quiet", base);
    expect_error(args, "not empty");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --downsample 2", base);
    expect_error(args, "--downsample");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --stimuli natural,movies", base);
    expect_error(args, "'movies' is not natural, gratings or noise");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --min-frames 40", base);
    expect_error(args, "--min-frames: 40");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --fps 0", base);
    expect_error(args, "--fps: 0");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --noise loud", base);
    expect_error(args, "--noise: 'loud'");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --trials 0", base);
    expect_error(args, "--trials: 0");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --adaptation -1", base);
    expect_error(args, "--adaptation: -1");
    snprintf(args, sizeof args, "simulate --video --out %s/cli2 --repeats 1", base);
    expect_error(args, "--repeats: 1");
    expect_error("simulate --video --neurons 3", "--out DIR is required");
    rc = run(&out, "simulate --video --help");
    CHECK(rc == 0 && out && strstr(out, "--adaptation-tau") && strstr(out, "--fps"), "simulate --video --help");
    free(out);
}

int main(void)
{
    RUN(test_layout_and_loader);
    RUN(test_statistics);
    RUN(test_determinism);
    RUN(test_generative_model);
    RUN(test_oracle_and_noise);
    RUN(test_sta_white_noise);
    RUN(test_retinotopy);
    RUN(test_cli);
    if (base[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
        if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", base);
    }
    return th_summary();
}
