/* npred simulate: determinism, file format (shapes, dtypes, tiers, statistics),
 * ground-truth consistency (rates recomputed from the stored model, oracles
 * recomputed from the stored repeats), zip output, bad options. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "npred/simulate.h"
#include "harness.h"
#include "npred/npy.h"

static char base[256];

static void make_base(void)
{
    if (base[0]) return;
    snprintf(base, sizeof base, "/tmp/npred-test-sim-XXXXXX");
    if (!CHECK(mkdtemp(base) != NULL, "mkdtemp %s failed", base)) base[0] = 0;
}

static npred_sim_params small_params(void)
{
    npred_sim_params p = npred_sim_default_params();
    p.n_sessions = 2;
    p.n_neurons = 40;
    p.n_trials = 120;
    p.n_test_images = 30;
    p.n_test_repeats = 6;
    p.height = 48;
    p.width = 80;
    p.downsample = 4;
    p.seed = 7;
    p.rate_scale = 8.0;
    return p;
}

/* out = base/name, simulated with p (once per name). */
static const char *sim_dir(const char *name, const npred_sim_params *p)
{
    static char dirs[16][512];
    static int n_dirs;
    make_base();
    char d[512];
    snprintf(d, sizeof d, "%s/%s", base, name);
    for (int i = 0; i < n_dirs; i++)
        if (!strcmp(dirs[i], d)) return dirs[i];
    if (!CHECK_OK(npred_simulate(p, d, NULL, NULL))) return NULL;
    snprintf(dirs[n_dirs], sizeof dirs[0], "%s", d);
    return dirs[n_dirs++];
}

static void session_root(char *buf, size_t n, const char *dir, const npred_sim_params *p, int s)
{
    char name[256];
    npred_sim_tree_name(p, s, name, sizeof name);
    if (snprintf(buf, n, "%s/%s", dir, name) >= (int)n) buf[0] = 0;
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

/* recursive file listing relative to dir, sorted */
typedef struct {
    char **v;
    int n;
} flist;

static void list_rec(const char *dir, const char *rel, flist *out)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[1024], full[1200];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", dir, sub);
        struct stat st;
        stat(full, &st);
        if (S_ISDIR(st.st_mode)) {
            list_rec(dir, sub, out);
        } else {
            out->v = realloc(out->v, sizeof(char *) * (size_t)(out->n + 1));
            out->v[out->n++] = strdup(sub);
        }
    }
    closedir(d);
}

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static flist list_files(const char *dir)
{
    flist l = {0};
    list_rec(dir, "", &l);
    if (l.n) qsort(l.v, (size_t)l.n, sizeof *l.v, cmpstr);
    return l;
}

static void flist_free(flist *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b)
{
    size_t la, lb;
    unsigned char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

/* 1 if both files are readable and their bytes differ (a missing file is not
 * "different": a check built on !same_file would pass when nothing was written) */
static int files_differ(const char *a, const char *b)
{
    size_t la, lb;
    unsigned char *x = slurp(a, &la), *y = slurp(b, &lb);
    int differ = x && y && (la != lb || memcmp(x, y, la));
    CHECK(x && y, "cannot read %s", !x ? a : b);
    free(x);
    free(y);
    return differ;
}

/* ------------------------------------------------------------------ tests */

static void test_determinism(void)
{
    npred_sim_params p = small_params();
    p.write_zip = 1;
    const char *a = sim_dir("detA", &p), *b = sim_dir("detB", &p);
    npred_sim_params q = p;
    q.seed = 8;
    const char *c = sim_dir("detC", &q);
    if (!a || !b || !c) return;
    flist la = list_files(a), lb = list_files(b);
    CHECK(la.n == lb.n && la.n > 0, "file counts %d vs %d", la.n, lb.n);
    int diff = 0;
    for (int i = 0; i < la.n && i < lb.n; i++) {
        char fa[1200], fb[1200];
        snprintf(fa, sizeof fa, "%s/%s", a, la.v[i]);
        snprintf(fb, sizeof fb, "%s/%s", b, lb.v[i]);
        if (strcmp(la.v[i], lb.v[i]) || !same_file(fa, fb)) {
            if (diff++ < 3) CHECK(0, "same seed, different file %s", la.v[i]);
        }
    }
    CHECK(diff == 0, "%d files differ for the same seed", diff);
    /* a different seed changes images, responses and ground truth */
    const char *rels[] = {"data/images/0.npy", "data/responses/0.npy", "meta/ground_truth/rf_grid.npy"};
    char ra[600], rc[600];
    session_root(ra, sizeof ra, a, &p, 0);
    session_root(rc, sizeof rc, c, &q, 0);
    for (int i = 0; i < 3; i++) {
        char fa[1200], fc[1200];
        snprintf(fa, sizeof fa, "%s/%s", ra, rels[i]);
        snprintf(fc, sizeof fc, "%s/%s", rc, rels[i]);
        CHECK(files_differ(fa, fc), "%s identical for seeds 7 and 8", rels[i]);
    }
    /* sessions differ from each other */
    char r1[600], f0[1200], f1[1200];
    session_root(r1, sizeof r1, a, &p, 1);
    snprintf(f0, sizeof f0, "%s/meta/ground_truth/rf_grid.npy", ra);
    snprintf(f1, sizeof f1, "%s/meta/ground_truth/rf_grid.npy", r1);
    CHECK(files_differ(f0, f1), "sessions 0 and 1 have the same RFs");
    flist_free(&la);
    flist_free(&lb);
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void check_stats(const char *root, const char *field, const double *data /* (N, c) */, int N, int c)
{
    const char *names[5] = {"mean", "std", "min", "max", "median"};
    double *col = malloc(sizeof(double) * (size_t)N);
    for (int q = 0; q < 5; q++) {
        char rel[256];
        snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", field, names[q]);
        npred_array h;
        double *st = load_f64(root, rel, &h);
        if (!st) continue;
        CHECK(h.dtype == NPRED_DT_F32, "%s: dtype", rel);
        CHECK(c == 0 ? h.ndim == 0 : (h.ndim == 1 && h.shape[0] == c), "%s: shape", rel);
        int nc = c ? c : 1;
        for (int k = 0; k < nc; k++) {
            double s = 0, mn = INFINITY, mx = -INFINITY;
            int rows = c ? N : N; /* c == 0: data is a flat array of N values */
            for (int i = 0; i < rows; i++) {
                double v = data[(size_t)i * nc + k];
                col[i] = v;
                s += v;
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            double mean = s / rows, ss = 0;
            for (int i = 0; i < rows; i++) ss += (col[i] - mean) * (col[i] - mean);
            double ref = q == 0 ? mean : q == 1 ? sqrt(ss / rows) : q == 2 ? mn : q == 3 ? mx : NAN;
            if (q == 4) {
                /* median by counting: smallest v with #(<= v) >= (rows+1)/2 etc. */
                double lo = NAN, hi = NAN;
                for (int i = 0; i < rows; i++) {
                    int le = 0, lt = 0;
                    for (int j = 0; j < rows; j++) {
                        le += col[j] <= col[i];
                        lt += col[j] < col[i];
                    }
                    if (lt <= (rows - 1) / 2 && le > (rows - 1) / 2) lo = col[i];
                    if (lt <= rows / 2 && le > rows / 2) hi = col[i];
                }
                ref = 0.5 * (lo + hi);
            }
            CHECK(fabs(st[k] - ref) <= 1e-5 * fabs(ref) + 1e-5, "%s[%d]: stored %g, data gives %g", rel, k, st[k], ref);
        }
        free(st);
    }
    free(col);
}

static void test_format(void)
{
    npred_sim_params p = small_params();
    const char *dir = sim_dir("detA", &p);
    if (!dir) return;
    for (int s = 0; s < p.n_sessions; s++) {
        char root[600], sub[700];
        session_root(root, sizeof root, dir, &p, s);
        int N = p.n_trials + p.n_test_images * p.n_test_repeats, n = p.n_neurons;
        const char *fields[4] = {"images", "responses", "behavior", "pupil_center"};
        for (int f = 0; f < 4; f++) {
            snprintf(sub, sizeof sub, "%s/data/%s", root, fields[f]);
            CHECK(count_dir(sub) == N, "%s: %d files, expected %d", sub, count_dir(sub), N);
        }
        /* per-trial arrays */
        double *resp = malloc(sizeof(double) * (size_t)N * n), *beh = malloc(sizeof(double) * N * 3),
               *eye = malloc(sizeof(double) * N * 2);
        double *pix_hist = calloc(256, sizeof(double));
        for (int t = 0; t < N; t++) {
            char rel[128];
            npred_array a;
            snprintf(rel, sizeof rel, "data/images/%d.npy", t);
            if (load(&a, root, rel)) {
                CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 3 && a.shape[0] == 1 && a.shape[1] == p.height &&
                          a.shape[2] == p.width, "%s: shape/dtype", rel);
                const float *v = a.data;
                int bad = 0;
                for (size_t i = 0; i < a.count; i++) {
                    if (!(v[i] >= 0 && v[i] <= 255 && v[i] == floorf(v[i]))) bad++;
                    else pix_hist[(int)v[i]]++;
                }
                CHECK(bad == 0, "%s: %d pixels not integers in 0..255", rel, bad);
                npred_array_free(&a);
            }
            snprintf(rel, sizeof rel, "data/responses/%d.npy", t);
            if (load(&a, root, rel)) {
                CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 1 && a.shape[0] == n, "%s: shape/dtype", rel);
                for (int j = 0; j < n && j < (int)a.count; j++) {
                    resp[(size_t)t * n + j] = ((float *)a.data)[j];
                    CHECK(((float *)a.data)[j] >= 0, "%s: negative response", rel);
                }
                npred_array_free(&a);
            }
            snprintf(rel, sizeof rel, "data/behavior/%d.npy", t);
            if (load(&a, root, rel)) {
                CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 1 && a.shape[0] == 3, "%s: shape", rel);
                for (int j = 0; j < 3; j++) beh[t * 3 + j] = ((float *)a.data)[j];
                npred_array_free(&a);
            }
            snprintf(rel, sizeof rel, "data/pupil_center/%d.npy", t);
            if (load(&a, root, rel)) {
                CHECK(a.dtype == NPRED_DT_F32 && a.ndim == 1 && a.shape[0] == 2, "%s: shape", rel);
                for (int j = 0; j < 2; j++) eye[t * 2 + j] = ((float *)a.data)[j];
                npred_array_free(&a);
            }
        }
        check_stats(root, "responses", resp, N, n);
        check_stats(root, "behavior", beh, N, 3);
        check_stats(root, "pupil_center", eye, N, 2);
        /* image statistics from the histogram */
        {
            double tot = 0, sum = 0, ss = 0;
            int mn = -1, mx = 0;
            for (int v = 0; v < 256; v++)
                if (pix_hist[v]) {
                    if (mn < 0) mn = v;
                    mx = v;
                    tot += pix_hist[v];
                    sum += v * pix_hist[v];
                }
            double mean = sum / tot;
            for (int v = 0; v < 256; v++) ss += pix_hist[v] * (v - mean) * (v - mean);
            double cum = 0, m1 = -1, m2 = -1;
            for (int v = 0; v < 256; v++) {
                cum += pix_hist[v];
                if (m1 < 0 && cum > floor((tot - 1) / 2)) m1 = v;
                if (m2 < 0 && cum > floor(tot / 2)) m2 = v;
            }
            double ref[5] = {mean, sqrt(ss / tot), mn, mx, 0.5 * (m1 + m2)};
            const char *names[5] = {"mean", "std", "min", "max", "median"};
            for (int q = 0; q < 5; q++) {
                char rel[128];
                snprintf(rel, sizeof rel, "meta/statistics/images/all/%s.npy", names[q]);
                npred_array h;
                double *v = load_f64(root, rel, &h);
                if (!v) continue;
                CHECK(h.ndim == 0 && h.dtype == NPRED_DT_F32, "%s: expected a 0-d float32", rel);
                CHECK(fabs(v[0] - ref[q]) <= 1e-4 * fabs(ref[q]) + 1e-4, "%s: %g vs %g", rel, v[0], ref[q]);
                free(v);
            }
            CHECK(mean > 60 && mean < 190 && sqrt(ss / tot) > 25, "image mean %g std %g not naturalistic", mean,
                  sqrt(ss / tot));
        }
        free(pix_hist);
        free(resp);
        free(beh);
        free(eye);

        /* trials */
        npred_array tiers, ids, tidx, cls;
        if (load(&tiers, root, "meta/trials/tiers.npy") && load(&ids, root, "meta/trials/frame_image_id.npy") &&
            load(&tidx, root, "meta/trials/trial_idx.npy") && load(&cls, root, "meta/trials/frame_image_class.npy")) {
            CHECK(tiers.dtype == NPRED_DT_STR_U && tiers.itemsize == 40 && tiers.ndim == 1 && tiers.shape[0] == N,
                  "tiers: expected <U10 (%d)", N);
            CHECK(cls.dtype == NPRED_DT_STR_U && cls.shape[0] == N, "frame_image_class");
            CHECK(ids.dtype == NPRED_DT_I64 && tidx.dtype == NPRED_DT_I64, "ids dtype");
            int cnt[4] = {0};
            char buf[32];
            int *seen = calloc((size_t)N, sizeof(int));
            for (int t = 0; t < N; t++) {
                npred_array_get_str(&tiers, (size_t)t, buf, sizeof buf);
                int k = !strcmp(buf, "train") ? 0 : !strcmp(buf, "validation") ? 1 : !strcmp(buf, "test") ? 2 : 3;
                cnt[k]++;
                int64_t ti = ((int64_t *)tidx.data)[t];
                if (ti >= 0 && ti < N) seen[ti]++;
                npred_array_get_str(&cls, (size_t)t, buf, sizeof buf);
                CHECK(!strcmp(buf, "imagenet"), "frame_image_class %s", buf);
            }
            int perm = 1;
            for (int t = 0; t < N; t++) perm &= seen[t] == 1;
            CHECK(perm, "trial_idx is not a permutation of 0..N-1");
            free(seen);
            int n_val = (int)floor(0.1 * p.n_trials + 0.5);
            CHECK(cnt[0] == p.n_trials - n_val && cnt[1] == n_val && cnt[2] == p.n_test_images * p.n_test_repeats &&
                      cnt[3] == 0, "tier counts %d %d %d %d", cnt[0], cnt[1], cnt[2], cnt[3]);
            /* every test image appears exactly n_test_repeats times; train images are unique */
            for (int t = 0; t < N; t++) {
                int64_t id = ((int64_t *)ids.data)[t];
                int c = 0;
                for (int u = 0; u < N; u++) c += ((int64_t *)ids.data)[u] == id;
                npred_array_get_str(&tiers, (size_t)t, buf, sizeof buf);
                int want = !strcmp(buf, "test") ? p.n_test_repeats : 1;
                if (c != want) {
                    CHECK(0, "image %lld appears %d times in tier %s", (long long)id, c, buf);
                    break;
                }
            }
            npred_array_free(&tiers);
            npred_array_free(&ids);
            npred_array_free(&tidx);
            npred_array_free(&cls);
        }
        /* neurons */
        npred_array a;
        if (load(&a, root, "meta/neurons/unit_ids.npy")) {
            CHECK(a.dtype == NPRED_DT_I64 && a.shape[0] == n, "unit_ids");
            const int64_t *u = a.data;
            int ok = u[0] >= 1;
            for (int j = 1; j < n; j++) ok &= u[j] > u[j - 1];
            CHECK(ok, "unit_ids must start at 1 or more and increase");
            npred_array_free(&a);
        }
        if (load(&a, root, "meta/neurons/cell_motor_coordinates.npy")) {
            CHECK(a.dtype == NPRED_DT_F64 && a.ndim == 2 && a.shape[0] == n && a.shape[1] == 3, "coordinates");
            npred_array_free(&a);
        }
        const char *sn[2][3] = {{"meta/neurons/area.npy", "V1", "8"}, {"meta/neurons/layer.npy", "L2/3", "16"}};
        for (int k = 0; k < 2; k++)
            if (load(&a, root, sn[k][0])) {
                char buf[16];
                CHECK(a.dtype == NPRED_DT_STR_U && a.itemsize == (size_t)atoi(sn[k][2]) && a.shape[0] == n, "%s",
                      sn[k][0]);
                npred_array_get_str(&a, 0, buf, sizeof buf);
                CHECK(!strcmp(buf, sn[k][1]), "%s: %s", sn[k][0], buf);
                npred_array_free(&a);
            }
        const char *ints[3] = {"meta/neurons/animal_ids.npy", "meta/neurons/sessions.npy", "meta/neurons/scan_idx.npy"};
        const int64_t want[3] = {p.animal_id, 1, s + 1};
        for (int k = 0; k < 3; k++)
            if (load(&a, root, ints[k])) {
                CHECK(a.dtype == NPRED_DT_I64 && a.shape[0] == n && ((int64_t *)a.data)[n - 1] == want[k], "%s",
                      ints[k]);
                npred_array_free(&a);
            }
    }
}

/* ---- independent re-computation of the ground-truth rate of one trial ---- */

static double ref_rate_all(double *lam, const float *img, int H, int W, int f, const float *filt /* (16,17,17) */,
                           const double *grid, const float *wts, const double *bias, const double *gain,
                           const double *kappa, int n, double shx, double shy, double mod)
{
    int h = H / f, w = W / f;
    double *x = calloc((size_t)h * w, sizeof(double)), *F = calloc((size_t)h * w * 32, sizeof(double));
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            double cy = (i + 0.5) * f - 0.5, cx = (j + 0.5) * f - 0.5;
            int y0 = (int)floor(cy), x0 = (int)floor(cx);
            double ty = cy - y0, tx = cx - x0, v = 0;
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    int yy = y0 + a < H ? y0 + a : H - 1, xx = x0 + b < W ? x0 + b : W - 1;
                    v += (a ? ty : 1 - ty) * (b ? tx : 1 - tx) * img[yy * W + xx];
                }
            x[i * w + j] = (v - 128.0) / 64.0;
        }
    for (int l = 0; l < 16; l++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                double y = 0;
                for (int dy = -8; dy <= 8; dy++)
                    for (int dx = -8; dx <= 8; dx++) {
                        int yy = i + dy, xx = j + dx;
                        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                        y += filt[(l * 17 + dy + 8) * 17 + dx + 8] * x[yy * w + xx];
                    }
                F[(i * w + j) * 32 + 2 * l] = y > 0 ? y : 0;
                F[(i * w + j) * 32 + 2 * l + 1] = y < 0 ? -y : 0;
            }
    for (int k = 0; k < n; k++) {
        double u = (grid[2 * k] + shx + 1) / 2 * (w - 1), v = (grid[2 * k + 1] + shy + 1) / 2 * (h - 1);
        int x0 = (int)floor(u), y0 = (int)floor(v);
        double s = bias[k];
        for (int c = 0; c < 4; c++) {
            int xx = x0 + (c & 1), yy = y0 + (c >> 1);
            if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue;
            double wt = ((c & 1) ? u - x0 : 1 - (u - x0)) * ((c >> 1) ? v - y0 : 1 - (v - y0));
            for (int q = 0; q < 32; q++) s += wt * wts[k * 32 + q] * F[(yy * w + xx) * 32 + q];
        }
        lam[k] = gain[k] * log1p(exp(s)) * exp(kappa[k] * mod);
    }
    free(x);
    free(F);
    return 0;
}

static double corr_np(const double *a, const double *b, int T)
{
    double ma = 0, mb = 0, sa = 0, sb = 0, sab = 0;
    for (int t = 0; t < T; t++) {
        ma += a[t];
        mb += b[t];
    }
    ma /= T;
    mb /= T;
    for (int t = 0; t < T; t++) {
        sa += (a[t] - ma) * (a[t] - ma);
        sb += (b[t] - mb) * (b[t] - mb);
        sab += (a[t] - ma) * (b[t] - mb);
    }
    return (sab / T) / ((sqrt(sa / T) + 1e-8) * (sqrt(sb / T) + 1e-8));
}

static void check_ground_truth(const char *dir, const npred_sim_params *p, int s)
{
    char root[600];
    session_root(root, sizeof root, dir, p, s);
    int n = p->n_neurons, T = p->n_test_images * p->n_test_repeats, f = p->downsample;
    int h = p->height / f, w = p->width / f;
    npred_array hg, ht;
    double *grid = load_f64(root, "meta/ground_truth/rf_grid.npy", &hg);
    double *pix = load_f64(root, "meta/ground_truth/rf_pixel.npy", NULL);
    double *bias = load_f64(root, "meta/ground_truth/readout_bias.npy", NULL);
    double *gain = load_f64(root, "meta/ground_truth/gain.npy", NULL);
    double *kappa = load_f64(root, "meta/ground_truth/modulation.npy", NULL);
    double *orj = load_f64(root, "meta/ground_truth/oracle_corr_jackknife.npy", NULL);
    double *orr = load_f64(root, "meta/ground_truth/oracle_corr_rate.npy", NULL);
    double *trials = load_f64(root, "meta/ground_truth/test_trials.npy", &ht);
    double *trates = load_f64(root, "meta/ground_truth/test_trial_rates.npy", NULL);
    double *irates = load_f64(root, "meta/ground_truth/test_image_rates.npy", NULL);
    double *iids = load_f64(root, "meta/ground_truth/test_image_ids.npy", NULL);
    double *coords = load_f64(root, "meta/neurons/cell_motor_coordinates.npy", NULL);
    double *fid = load_f64(root, "meta/trials/frame_image_id.npy", NULL);
    npred_array wa, fa;
    int have_w = load(&wa, root, "meta/ground_truth/readout_weights.npy");
    int have_f = load(&fa, root, "meta/ground_truth/filters.npy");
    if (!grid || !pix || !bias || !gain || !kappa || !orj || !orr || !trials || !trates || !irates || !iids ||
        !coords || !fid || !have_w || !have_f)
        goto out;
    CHECK(hg.ndim == 2 && hg.shape[0] == n && hg.shape[1] == 2 && hg.dtype == NPRED_DT_F64, "rf_grid shape");
    CHECK(ht.shape[0] == T, "test_trials: %lld, expected %d", (long long)ht.shape[0], T);
    CHECK(wa.dtype == NPRED_DT_F32 && wa.shape[0] == n && wa.shape[1] == 32, "readout_weights shape");
    CHECK(fa.ndim == 3 && fa.shape[0] == 16 && fa.shape[1] == 17 && fa.shape[2] == 17, "filters shape");

    /* pixel <-> grid mapping (align_corners=True on the (h, w) map) */
    double worst = 0;
    for (int j = 0; j < n; j++) {
        double px = f * (grid[2 * j] + 1) / 2 * (w - 1) + (f - 1) / 2.0;
        double py = f * (grid[2 * j + 1] + 1) / 2 * (h - 1) + (f - 1) / 2.0;
        worst = th_worst(th_worst(worst, fabs(px - pix[2 * j])), fabs(py - pix[2 * j + 1]));
        CHECK(fabs(grid[2 * j]) <= 0.95 && fabs(grid[2 * j + 1]) <= 0.95, "rf %d outside +-0.95", j);
    }
    CHECK(worst < 1e-9, "rf_pixel differs from the documented mapping by %g", worst);

    /* retinotopy is smooth: a quadratic fit of the RF on cortex xy explains > 90% */
    {
        double r2[2];
        for (int d = 0; d < 2; d++) {
            /* least squares with basis 1, x, y, x^2, xy, y^2 (normal equations, Gauss-Jordan) */
            double A[6][7] = {{0}};
            double cx = 0, cy = 0;
            for (int j = 0; j < n; j++) {
                cx += coords[3 * j];
                cy += coords[3 * j + 1];
            }
            cx /= n;
            cy /= n;
            for (int j = 0; j < n; j++) {
                double X = (coords[3 * j] - cx) / 300, Y = (coords[3 * j + 1] - cy) / 300;
                double b[6] = {1, X, Y, X * X, X * Y, Y * Y};
                for (int r = 0; r < 6; r++) {
                    for (int c = 0; c < 6; c++) A[r][c] += b[r] * b[c];
                    A[r][6] += b[r] * grid[2 * j + d];
                }
            }
            for (int c = 0; c < 6; c++) {
                for (int r = 0; r < 6; r++) {
                    if (r == c) continue;
                    double fct = A[r][c] / A[c][c];
                    for (int k = c; k < 7; k++) A[r][k] -= fct * A[c][k];
                }
            }
            double ssr = 0, sst = 0, mean = 0;
            for (int j = 0; j < n; j++) mean += grid[2 * j + d] / n;
            for (int j = 0; j < n; j++) {
                double X = (coords[3 * j] - cx) / 300, Y = (coords[3 * j + 1] - cy) / 300;
                double b[6] = {1, X, Y, X * X, X * Y, Y * Y}, pr = 0;
                for (int r = 0; r < 6; r++) pr += b[r] * A[r][6] / A[r][r];
                ssr += (grid[2 * j + d] - pr) * (grid[2 * j + d] - pr);
                sst += (grid[2 * j + d] - mean) * (grid[2 * j + d] - mean);
            }
            r2[d] = 1 - ssr / sst;
        }
        CHECK(r2[0] > 0.9 && r2[1] > 0.9, "retinotopy not smooth: R^2 %g %g", r2[0], r2[1]);
    }

    /* responses of the test trials, and the jackknife oracle recomputed from them */
    double *resp = malloc(sizeof(double) * (size_t)T * n), *beh = malloc(sizeof(double) * T * 3),
           *eye = malloc(sizeof(double) * T * 2);
    for (int t = 0; t < T; t++) {
        char rel[128];
        snprintf(rel, sizeof rel, "data/responses/%d.npy", (int)trials[t]);
        double *r = load_f64(root, rel, NULL);
        if (r) memcpy(resp + (size_t)t * n, r, sizeof(double) * n);
        free(r);
        snprintf(rel, sizeof rel, "data/behavior/%d.npy", (int)trials[t]);
        r = load_f64(root, rel, NULL);
        if (r) memcpy(beh + 3 * t, r, sizeof(double) * 3);
        free(r);
        snprintf(rel, sizeof rel, "data/pupil_center/%d.npy", (int)trials[t]);
        r = load_f64(root, rel, NULL);
        if (r) memcpy(eye + 2 * t, r, sizeof(double) * 2);
        free(r);
    }
    double worst_j = 0, worst_r = 0, mean_c = 0, mean_or = 0, mean_oj = 0;
    double *x = malloc(sizeof(double) * T), *o = malloc(sizeof(double) * T), *lam = malloc(sizeof(double) * T);
    for (int j = 0; j < n; j++) {
        /* leave-one-out means within each image's repeats */
        for (int t = 0; t < T; t++) {
            double tot = 0;
            int r = 0;
            for (int u = 0; u < T; u++)
                if (fid[(int)trials[u]] == fid[(int)trials[t]]) {
                    tot += resp[(size_t)u * n + j];
                    r++;
                }
            x[t] = resp[(size_t)t * n + j];
            o[t] = (tot - x[t]) / (r - 1);
            lam[t] = trates[(size_t)t * n + j];
        }
        worst_j = th_worst(worst_j, fabs(corr_np(x, o, T) - orj[j]));
        double ml = 0, vl = 0, nv = 0;
        for (int t = 0; t < T; t++) ml += lam[t] / T;
        for (int t = 0; t < T; t++) {
            vl += (lam[t] - ml) * (lam[t] - ml) / T;
            nv += (p->noise == NPRED_SIM_NOISE_POISSON ? lam[t] : 0) / T;
        }
        worst_r = th_worst(worst_r, fabs(sqrt(vl / (vl + nv)) - orr[j]));
        mean_c += corr_np(x, lam, T) / n;
        mean_or += orr[j] / n;
        mean_oj += orj[j] / n;
    }
    if (getenv("NPRED_TEST_VERBOSE")) fprintf(stderr, "session %d: mean corr(resp, rate) %.3f, oracle rate %.3f, jackknife %.3f\n", s, mean_c, mean_or, mean_oj);
    CHECK(worst_j < 1e-9, "oracle_corr_jackknife differs from the repeats by %g", worst_j);
    CHECK(worst_r < 1e-9, "oracle_corr_rate differs from the test rates by %g", worst_r);
    CHECK(mean_c > 0.3, "responses barely follow the noise-free rates: mean r = %g", mean_c);
    CHECK(fabs(mean_c - mean_or) < 0.06, "mean corr(response, rate) %g vs expected oracle %g", mean_c, mean_or);
    CHECK(mean_oj > 0.2 && mean_oj <= mean_or + 0.05, "jackknife oracle %g vs rate oracle %g", mean_oj, mean_or);

    /* rates recomputed from the stored model for a few test trials */
    double *ref = malloc(sizeof(double) * n), worst_rate = 0;
    for (int t = 0; t < T; t += T / 4 + 1) {
        char rel[128];
        snprintf(rel, sizeof rel, "data/images/%d.npy", (int)trials[t]);
        npred_array im;
        if (!load(&im, root, rel)) continue;
        double shx = 0, shy = 0, mod = 0;
        if (p->modulate) {
            shx = fmin(0.15, fmax(-0.15, 0.04 * (eye[2 * t] - 120) / 6));
            shy = fmin(0.15, fmax(-0.15, 0.04 * (eye[2 * t + 1] - 80) / 4));
            mod = fmin(3, fmax(-3, 0.6 * (beh[3 * t] - 18) / 5 + 0.4 * (beh[3 * t + 2] / 4 - 0.5)));
        }
        ref_rate_all(ref, im.data, p->height, p->width, f, fa.data, grid, wa.data, bias, gain, kappa, n, shx, shy,
                     mod);
        for (int j = 0; j < n; j++)
            worst_rate = th_worst(worst_rate, fabs(ref[j] - trates[(size_t)t * n + j]) / (1e-3 + fabs(ref[j])));
        /* image rates are the neutral-behaviour rates of the same image */
        int img = -1;
        for (int i = 0; i < p->n_test_images; i++)
            if (iids[i] == fid[(int)trials[t]]) img = i;
        CHECK(img >= 0, "test image id %g missing from test_image_ids", fid[(int)trials[t]]);
        if (img >= 0 && !p->modulate)
            for (int j = 0; j < n; j++)
                CHECK(irates[(size_t)img * n + j] == trates[(size_t)t * n + j], "neutral rate differs");
        npred_array_free(&im);
    }
    CHECK(worst_rate < 1e-4, "stored test rates differ from the model recomputed from the stored files: %g",
          worst_rate);
    double kmax = 0;
    for (int j = 0; j < n; j++) kmax = fmax(kmax, kappa[j]);
    CHECK(p->modulate ? kmax > 0 : kmax == 0, "modulation strengths %g with modulate=%d", kmax, p->modulate);
    free(ref);
    free(x);
    free(o);
    free(lam);
    free(resp);
    free(beh);
    free(eye);
out:
    if (have_w) npred_array_free(&wa);
    if (have_f) npred_array_free(&fa);
    free(grid); free(pix); free(bias); free(gain); free(kappa); free(orj); free(orr);
    free(trials); free(trates); free(irates); free(iids); free(coords); free(fid);
}

static void test_ground_truth(void)
{
    npred_sim_params p = small_params();
    const char *dir = sim_dir("detA", &p);
    if (!dir) return;
    for (int s = 0; s < p.n_sessions; s++) check_ground_truth(dir, &p, s);
}

static void test_ground_truth_modulated(void)
{
    npred_sim_params p = small_params();
    p.n_sessions = 1;
    p.modulate = 1;
    p.seed = 11;
    const char *dir = sim_dir("mod", &p);
    if (dir) check_ground_truth(dir, &p, 0);
}

static void test_noise_kinds(void)
{
    npred_sim_params p = small_params();
    p.n_sessions = 1;
    p.n_trials = 20;
    p.noise = NPRED_SIM_NOISE_NONE;
    const char *dir = sim_dir("none", &p);
    if (!dir) return;
    char root[600];
    session_root(root, sizeof root, dir, &p, 0);
    double *orr = load_f64(root, "meta/ground_truth/oracle_corr_rate.npy", NULL);
    double *orj = load_f64(root, "meta/ground_truth/oracle_corr_jackknife.npy", NULL);
    if (orr && orj)
        for (int j = 0; j < p.n_neurons; j++) {
            CHECK(fabs(orr[j] - 1) < 1e-12, "noise none: oracle_corr_rate %g", orr[j]);
            CHECK(fabs(orj[j] - 1) < 1e-6, "noise none: jackknife oracle %g", orj[j]);
        }
    free(orr);
    free(orj);
    p.noise = NPRED_SIM_NOISE_GAMMA;
    p.gamma_shape = 0.7;
    dir = sim_dir("gamma", &p);
    if (!dir) return;
    session_root(root, sizeof root, dir, &p, 0);
    double *r = load_f64(root, "data/responses/0.npy", NULL);
    int nonint = 0;
    if (r)
        for (int j = 0; j < p.n_neurons; j++) nonint += r[j] != floor(r[j]) && r[j] > 0;
    CHECK(nonint > p.n_neurons / 2, "gamma noise should give continuous responses (%d)", nonint);
    free(r);
}

static void test_zip(void)
{
    npred_sim_params p = small_params();
    p.write_zip = 1;
    const char *dir = sim_dir("detA", &p);
    npred_sim_params q = p;
    q.write_tree = 0;
    const char *only = sim_dir("ziponly", &q);
    if (!dir || !only) return;
    for (int s = 0; s < p.n_sessions; s++) {
        char name[256], zpath[800], root[600];
        npred_sim_tree_name(&p, s, name, sizeof name);
        CHECK(strstr(name, "-GrayImageNet-94c6ff995dac583098847cfecd43e7b6") != NULL, "zip name %s", name);
        snprintf(zpath, sizeof zpath, "%s/%s.zip", dir, name);
        session_root(root, sizeof root, dir, &p, s);
        int err = 0;
        zip_t *za = zip_open(zpath, ZIP_RDONLY, &err);
        if (!CHECK(za != NULL, "%s: cannot open (%d)", zpath, err)) continue;
        flist files = list_files(root);
        zip_int64_t ne = zip_get_num_entries(za, 0);
        int n_files = 0, bad_prefix = 0, not_stored = 0, missing = 0, differs = 0;
        size_t pl = strlen(name);
        for (zip_int64_t i = 0; i < ne; i++) {
            const char *m = zip_get_name(za, (zip_uint64_t)i, 0);
            if (strncmp(m, name, pl) || m[pl] != '/') {
                bad_prefix++;
                continue;
            }
            zip_stat_t st;
            zip_stat_index(za, (zip_uint64_t)i, 0, &st);
            if (st.comp_method != ZIP_CM_STORE) not_stored++;
            if (m[strlen(m) - 1] == '/') continue;
            n_files++;
            const char *rel = m + pl + 1;
            void *key = (void *)&rel;
            if (!bsearch(key, files.v, (size_t)files.n, sizeof(char *), cmpstr)) {
                missing++;
                continue;
            }
            if (i % 7 == 0) { /* content of every 7th member */
                char full[1200];
                snprintf(full, sizeof full, "%s/%s", root, rel);
                size_t len;
                unsigned char *fb = slurp(full, &len), *zb = malloc(st.size + 1);
                zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
                zip_int64_t got = zf ? zip_fread(zf, zb, st.size) : -1;
                if (zf) zip_fclose(zf);
                if (!fb || got != (zip_int64_t)len || memcmp(fb, zb, len)) differs++;
                free(fb);
                free(zb);
            }
        }
        CHECK(n_files == files.n, "zip has %d files, folder %d", n_files, files.n);
        CHECK(bad_prefix == 0, "%d members outside the top folder %s/", bad_prefix, name);
        CHECK(not_stored == 0, "%d members compressed (expected stored)", not_stored);
        CHECK(missing == 0 && differs == 0, "%d members not in the folder, %d differ", missing, differs);
        zip_close(za);
        flist_free(&files);
        /* --zip-only: no folder, the same zip bytes */
        char zonly[800], tonly[800];
        snprintf(zonly, sizeof zonly, "%s/%s.zip", only, name);
        snprintf(tonly, sizeof tonly, "%s/%s", only, name);
        struct stat st;
        CHECK(stat(tonly, &st) != 0, "zip-only left the folder %s", tonly);
        CHECK(same_file(zpath, zonly), "zip-only archive differs from the one written with the folder");
    }
}

static void test_bad_options(void)
{
    make_base();
    npred_sim_params p = small_params();
    char d[512];
    snprintf(d, sizeof d, "%s/bad", base);

    p.n_neurons = 0;
    npred_status s = npred_simulate(&p, d, NULL, NULL);
    CHECK(s == NPRED_ERR_ARG && strstr(npred_last_error(), "neurons"), "zero neurons: %d %s", s, npred_last_error());
    p = small_params();
    p.n_test_repeats = 1;
    s = npred_simulate(&p, d, NULL, NULL);
    CHECK(s == NPRED_ERR_ARG && strstr(npred_last_error(), "test-repeats"), "1 repeat: %s", npred_last_error());
    p = small_params();
    p.height = 50;
    s = npred_simulate(&p, d, NULL, NULL);
    CHECK(s == NPRED_ERR_ARG && strstr(npred_last_error(), "divisible"), "height 50: %s", npred_last_error());
    p = small_params();
    p.rate_scale = -1;
    CHECK(npred_sim_validate(&p) == NPRED_ERR_ARG, "negative rate scale accepted");
    p = small_params();
    p.write_tree = p.write_zip = 0;
    CHECK(npred_sim_validate(&p) == NPRED_ERR_ARG, "nothing to write accepted");
    CHECK(npred_simulate(NULL, d, NULL, NULL) == NPRED_ERR_ARG, "NULL params");
    p = small_params();
    CHECK(npred_simulate(&p, NULL, NULL, NULL) == NPRED_ERR_ARG, "NULL out dir");

    /* unwritable: a directory below a regular file */
    char file[600], under[700];
    snprintf(file, sizeof file, "%s/plainfile", base);
    FILE *fp = fopen(file, "w");
    if (fp) fclose(fp);
    snprintf(under, sizeof under, "%s/sub", file);
    s = npred_simulate(&p, under, NULL, NULL);
    CHECK(s == NPRED_ERR_IO && strstr(npred_last_error(), "plainfile"), "unwritable: %d %s", s, npred_last_error());
    s = npred_simulate(&p, file, NULL, NULL);
    CHECK(s == NPRED_ERR_IO, "out is a file: %d %s", s, npred_last_error());
    if (geteuid() != 0) { /* permissions do not stop root */
        char ro[600], rosub[700];
        snprintf(ro, sizeof ro, "%s/readonly", base);
        mkdir(ro, 0500);
        snprintf(rosub, sizeof rosub, "%s/x", ro);
        s = npred_simulate(&p, rosub, NULL, NULL);
        CHECK(s == NPRED_ERR_IO, "read-only parent: %d %s", s, npred_last_error());
    }

    /* non-empty without force, then force replaces the session (no stale trials) */
    npred_sim_params big = small_params();
    big.n_sessions = 1;
    big.n_trials = 60;
    char fd[600];
    snprintf(fd, sizeof fd, "%s/force", base);
    if (!CHECK_OK(npred_simulate(&big, fd, NULL, NULL))) return;
    npred_sim_params sm = big;
    sm.n_trials = 10;
    s = npred_simulate(&sm, fd, NULL, NULL);
    CHECK(s == NPRED_ERR_ARG && strstr(npred_last_error(), "not empty") && strstr(npred_last_error(), "--force"),
          "non-empty: %d %s", s, npred_last_error());
    sm.force = 1;
    if (CHECK_OK(npred_simulate(&sm, fd, NULL, NULL))) {
        char root[700], im[800];
        session_root(root, sizeof root, fd, &sm, 0);
        snprintf(im, sizeof im, "%s/data/images", root);
        int want = sm.n_trials + sm.n_test_images * sm.n_test_repeats;
        CHECK(count_dir(im) == want, "after --force: %d images, expected %d", count_dir(im), want);
    }
}

static int stop_early(void *user, int session, int64_t done, int64_t total)
{
    (void)session; (void)total;
    return done >= *(int64_t *)user;
}

static void test_progress_interrupt(void)
{
    make_base();
    npred_sim_params p = small_params();
    char d[512];
    snprintf(d, sizeof d, "%s/interrupt", base);
    int64_t lim = 1;
    npred_status s = npred_simulate(&p, d, stop_early, &lim);
    CHECK(s == NPRED_ERR_INTERRUPTED, "progress returning nonzero: %d", s);
}

static void cleanup(void)
{
    if (!base[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", base, base);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", base);
}

int main(void)
{
    RUN(test_determinism);
    RUN(test_format);
    RUN(test_ground_truth);
    RUN(test_ground_truth_modulated);
    RUN(test_noise_kinds);
    RUN(test_zip);
    RUN(test_bad_options);
    RUN(test_progress_interrupt);
    cleanup();
    return th_summary();
}
