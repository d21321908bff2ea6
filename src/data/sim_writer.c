/* Simulator, writer: the SENSORIUM file tree (npy files, meta data, statistics),
 * params.json with the ground truth, and the stored .zip of a tree. */
#include "data/sim_internal.h"
#include "base/threads.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "data/zipfs.h"
#include "npred/data.h"
#include "npred/npy.h"

/* a + "/" + b into buf; NPRED_ERR_ARG if it does not fit. */
static npred_status join(char *buf, size_t n, const char *a, const char *b)
{
    int k = snprintf(buf, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n) return npred_errorf(NPRED_ERR_ARG, "%s/%s: path too long", a, b);
    return NPRED_OK;
}

npred_status sim_mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) return npred_errorf(NPRED_ERR_ARG, "%s: bad directory name", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return npred_errorf(NPRED_ERR_IO, "%s: exists and is not a directory", buf);
        buf[i] = c;
    }
    return NPRED_OK;
}

int sim_dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* Remove a file or a whole tree (no symlinks followed). Missing is fine. */
npred_status sim_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return NPRED_OK;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return npred_errorf(NPRED_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return NPRED_OK;
}

static npred_status write_file(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return npred_errorf(NPRED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t w = fwrite(buf, 1, len, fp);
    int bad = w != len;
    if (fclose(fp) != 0) bad = 1;
    if (bad) return npred_errorf(NPRED_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return NPRED_OK;
}

/* Serialise with the npy writer and write root/rel (plain write: a fresh tree
 * needs no atomic rename, and tens of thousands of fsyncs would dominate). */
npred_status sim_put_npy(const char *root, const char *rel, npred_dtype dt, size_t itemsize, int ndim,
                         const int64_t *shape, const void *data)
{
    npred_array a;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.ndim = ndim;
    a.itemsize = itemsize ? itemsize : npred_dtype_size(dt);
    a.count = 1;
    for (int i = 0; i < ndim; i++) {
        a.shape[i] = shape[i];
        a.count *= (size_t)shape[i];
    }
    a.data = (void *)data;
    char path[4096];
    npred_status s = join(path, sizeof path, root, rel);
    if (s) return s;
    void *buf;
    size_t len;
    s = npred_npy_serialize(&a, &buf, &len);
    if (s) return npred_error_prefix(s, "%s", path);
    s = write_file(path, buf, len);
    free(buf);
    return s;
}

npred_status sim_put_1d(const char *root, const char *rel, npred_dtype dt, int64_t n, const void *data)
{
    return sim_put_npy(root, rel, dt, 0, 1, &n, data);
}

npred_status sim_put_2d(const char *root, const char *rel, npred_dtype dt, int64_t a, int64_t b,
                        const void *data)
{
    int64_t sh[2] = {a, b};
    return sim_put_npy(root, rel, dt, 0, 2, sh, data);
}

/* 1-D '<U<width>' array; strs[i] ASCII, at most `width` characters. */
npred_status sim_put_str(const char *root, const char *rel, const char *const *strs, int64_t n,
                            size_t width)
{
    uint32_t *u = npred_calloc((size_t)(n > 0 ? n : 1) * width, sizeof *u);
    if (!u) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", rel);
    for (int64_t i = 0; i < n; i++)
        for (size_t c = 0; c < width && strs[i][c]; c++) u[(size_t)i * width + c] = (unsigned char)strs[i][c];
    npred_status s = sim_put_npy(root, rel, NPRED_DT_STR_U, 4 * width, 1, &n, u);
    free(u);
    return s;
}

static void swapd(double *a, double *b)
{
    double t = *a;
    *a = *b;
    *b = t;
}

/* k-th smallest of v[0..n) (v is reordered: v[k] in place, smaller before, larger after). */
static double select_kth(double *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swapd(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swapd(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swapd(&v[hi], &v[mid]);
        double piv = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < piv) i++;
            while (v[j] > piv) j--;
            if (i <= j) {
                swapd(&v[i], &v[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

/* NumPy median (mean of the two middle values for even n); v is reordered. */
double sim_median_of(double *v, size_t n)
{
    size_t k = n / 2;
    double hi = select_kth(v, n, k);
    if (n % 2) return hi;
    double lo = v[0];
    for (size_t i = 1; i < k; i++)
        if (v[i] > lo) lo = v[i];
    return 0.5 * (lo + hi);
}

/* mean, std (ddof 0), min, max, median of column c of a (rows, stride) float matrix. */
static void column_stats(double out[5], const float *a, size_t rows, size_t stride, size_t c, double *scratch)
{
    double s = 0, mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < rows; i++) {
        double v = a[i * stride + c];
        scratch[i] = v;
        s += v;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    double mean = s / (double)rows, ss = 0;
    for (size_t i = 0; i < rows; i++) ss += (scratch[i] - mean) * (scratch[i] - mean);
    out[0] = mean;
    out[1] = sqrt(ss / (double)rows);
    out[2] = mn;
    out[3] = mx;
    out[4] = sim_median_of(scratch, rows);
}

static const char *const STAT_NAMES[5] = {"mean", "std", "min", "max", "median"};

/* Write meta/statistics/<field>/all/{mean,std,min,max,median}.npy, float32.
 * stats: (5, ncol); ncol == 0 means a 0-d array (images). */
static npred_status put_stats(const char *root, const char *field, const double *stats, int64_t ncol)
{
    char rel[256];
    int64_t cnt = ncol ? ncol : 1;
    float *v = malloc(sizeof(float) * (size_t)cnt);
    if (!v) return npred_errorf(NPRED_ERR_NOMEM, "statistics: out of memory");
    npred_status s = NPRED_OK;
    for (int q = 0; q < 5 && !s; q++) {
        for (int64_t i = 0; i < cnt; i++) v[i] = (float)stats[(size_t)q * cnt + i];
        snprintf(rel, sizeof rel, "meta/statistics/%s/all/%s.npy", field, STAT_NAMES[q]);
        s = sim_put_npy(root, rel, NPRED_DT_F32, 0, ncol ? 1 : 0, &ncol, v);
    }
    free(v);
    return s;
}

npred_status sim_matrix_stats(const char *root, const char *field, const float *a, size_t rows, size_t cols)
{
    double *st = npred_calloc(5 * cols, sizeof(double));
    double *scratch = npred_calloc(rows * (size_t)(
#ifdef _OPENMP
        omp_get_max_threads()
#else
        1
#endif
        ), sizeof(double));
    if (!st || !scratch) {
        free(st);
        free(scratch);
        return npred_errorf(NPRED_ERR_NOMEM, "statistics of %s: out of memory", field);
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t c = 0; c < cols; c++) {
        int t = npred_thread_id();
        double o[5];
        column_stats(o, a, rows, cols, c, scratch + (size_t)t * rows);
        for (int q = 0; q < 5; q++) st[(size_t)q * cols + c] = o[q];
    }
    npred_status s = put_stats(root, field, st, (int64_t)cols);
    free(st);
    free(scratch);
    return s;
}

/* Image statistics from the histogram of the integer pixel values. */
npred_status sim_image_stats(const char *root, const uint64_t hist[256])
{
    uint64_t total = 0;
    double sum = 0;
    int mn = -1, mx = -1;
    for (int v = 0; v < 256; v++) {
        if (!hist[v]) continue;
        if (mn < 0) mn = v;
        mx = v;
        total += hist[v];
        sum += (double)v * (double)hist[v];
    }
    double mean = sum / (double)total, ss = 0;
    for (int v = 0; v < 256; v++) ss += (double)hist[v] * (v - mean) * (v - mean);
    /* sorted positions k1 = (total - 1) / 2 and k2 = total / 2 */
    uint64_t k1 = (total - 1) / 2, k2 = total / 2, cum = 0;
    int m1 = -1, m2 = -1;
    for (int v = 0; v < 256; v++) {
        cum += hist[v];
        if (m1 < 0 && cum > k1) m1 = v;
        if (m2 < 0 && cum > k2) m2 = v;
    }
    double st[5] = {mean, sqrt(ss / (double)total), mn, mx, 0.5 * (m1 + m2)};
    return put_stats(root, "images", st, 0);
}

const char *sim_noise_name(npred_sim_noise n)
{
    return n == NPRED_SIM_NOISE_POISSON ? "poisson" : n == NPRED_SIM_NOISE_GAMMA ? "gamma" : "none";
}

cJSON *sim_json_head(const char *generator, const char *key, int session, uint64_t seed)
{
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "generator", generator);
    cJSON_AddStringToObject(j, "data_key", key);
    cJSON_AddNumberToObject(j, "session", session);
    char txt[32];
    snprintf(txt, sizeof txt, "%llu", (unsigned long long)seed);
    cJSON_AddStringToObject(j, "seed", txt);
    return j;
}

npred_status sim_json_write(const char *root, cJSON *j)
{
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    if (!txt) return npred_errorf(NPRED_ERR_NOMEM, "params.json: out of memory");
    char path[4096];
    npred_status s = join(path, sizeof path, root, "meta/ground_truth/params.json");
    if (!s) s = write_file(path, txt, strlen(txt));
    free(txt);
    return s;
}

npred_status sim_put_json(const char *root, const npred_sim_params *p, const gt_model *m,
                          const gt_neurons *nr, int session, const char *key)
{
    cJSON *j = sim_json_head("npred simulate 1", key, session, p->seed);
    if (!j) return npred_errorf(NPRED_ERR_NOMEM, "params.json: out of memory");
    cJSON *o = cJSON_AddObjectToObject(j, "options");
    cJSON_AddNumberToObject(o, "sessions", p->n_sessions);
    cJSON_AddNumberToObject(o, "neurons", p->n_neurons);
    cJSON_AddNumberToObject(o, "trials", p->n_trials);
    cJSON_AddNumberToObject(o, "val_fraction", p->val_fraction);
    cJSON_AddNumberToObject(o, "test_images", p->n_test_images);
    cJSON_AddNumberToObject(o, "test_repeats", p->n_test_repeats);
    cJSON_AddNumberToObject(o, "final_test_images", p->n_final_test_images);
    cJSON_AddNumberToObject(o, "height", p->height);
    cJSON_AddNumberToObject(o, "width", p->width);
    cJSON_AddNumberToObject(o, "downsample", p->downsample);
    cJSON_AddNumberToObject(o, "animal_id", p->animal_id);
    cJSON_AddNumberToObject(o, "rate_scale", p->rate_scale);
    cJSON_AddStringToObject(o, "noise", sim_noise_name(p->noise));
    cJSON_AddNumberToObject(o, "gamma_shape", p->gamma_shape);
    cJSON_AddBoolToObject(o, "modulate", p->modulate);
    cJSON_AddNumberToObject(o, "shared_neurons", p->shared_neurons);

    cJSON *fm = cJSON_AddObjectToObject(j, "feature_map");
    cJSON_AddNumberToObject(fm, "height", m->h);
    cJSON_AddNumberToObject(fm, "width", m->w);
    cJSON_AddStringToObject(fm, "downsample",
                            "v[i,j] = bilinear(image, y=(i+0.5)*f-0.5, x=(j+0.5)*f-0.5) (skimage rescale 1/f)");
    cJSON_AddStringToObject(fm, "input", "x = (v - 128) / 64");
    cJSON_AddStringToObject(fm, "filters",
                            "filters.npy (16, 17, 17): index l = (scale*4 + orientation)*2 + phase; "
                            "cross-correlation, zero padding, same size");
    cJSON_AddStringToObject(fm, "channels", "F[2l] = relu(y_l), F[2l+1] = relu(-y_l): 32 channels");
    cJSON *lam = cJSON_AddArrayToObject(fm, "wavelength"), *sig = cJSON_AddArrayToObject(fm, "sigma"),
          *rad = cJSON_AddArrayToObject(fm, "radius");
    for (int s = 0; s < N_SCALE; s++) {
        cJSON_AddItemToArray(lam, cJSON_CreateNumber(m->lambda[s]));
        cJSON_AddItemToArray(sig, cJSON_CreateNumber(m->sigma[s]));
        cJSON_AddItemToArray(rad, cJSON_CreateNumber(m->radius[s]));
    }
    cJSON_AddNumberToObject(fm, "orientations", N_ORI);

    cJSON *rd = cJSON_AddObjectToObject(j, "readout");
    cJSON_AddStringToObject(rd, "rate",
                            "gain * softplus(readout_weights . bilinear(F, rf_grid + shift) + readout_bias) "
                            "* exp(modulation * m_t)");
    cJSON_AddStringToObject(rd, "grid",
                            "align_corners=True on the (h, w) feature map: u = (gx+1)/2*(w-1), v = (gy+1)/2*(h-1); "
                            "zero padding outside");
    cJSON_AddStringToObject(rd, "pixels", "px = f*u + (f-1)/2, py = f*v + (f-1)/2 (full-resolution pixel centres)");
    cJSON_AddStringToObject(rd, "m_t", "clip(0.6*(behavior[0]-18)/5 + 0.4*(behavior[2]/4-0.5), -3, 3)");
    cJSON_AddStringToObject(rd, "shift",
                            "clip(0.04*(pupil_center[0]-120)/6, +-0.15), clip(0.04*(pupil_center[1]-80)/4, +-0.15) "
                            "(grid units, added to every rf_grid; only with modulate)");
    cJSON_AddStringToObject(rd, "noise", p->noise == NPRED_SIM_NOISE_POISSON ? "response ~ Poisson(rate)"
                                         : p->noise == NPRED_SIM_NOISE_GAMMA ? "response ~ rate/k * Gamma(k, 1)"
                                                                             : "response = rate");
    cJSON *rt = cJSON_AddObjectToObject(j, "retinotopy");
    cJSON_AddStringToObject(rt, "map",
                            "c = (xy - centre) / 300um; a = (sx*c0, flip*sy*c1); g = R(rotation) a + offset "
                            "+ 0.1*(c0*c1, c0^2 - 1/3) + 0.02*N(0,1); clipped to +-0.95");
    const char *rn[8] = {"rotation", "scale_x", "scale_y", "flip", "offset_x", "offset_y", "centre_x", "centre_y"};
    for (int q = 0; q < 8; q++) cJSON_AddNumberToObject(rt, rn[q], nr->retino[q]);
    cJSON *fs = cJSON_AddArrayToObject(j, "feature_mean"), *fd = cJSON_AddArrayToObject(j, "feature_std");
    for (int k = 0; k < N_FEAT; k++) {
        cJSON_AddItemToArray(fs, cJSON_CreateNumber(m->feat_mean[k]));
        cJSON_AddItemToArray(fd, cJSON_CreateNumber(m->feat_std[k]));
    }
    return sim_json_write(root, j);
}

static const char *const TIERS[4] = {"train", "validation", "test", "final_test"};

npred_status sim_make_dirs(const char *root)
{
    static const char *const sub[] = {"data/images", "data/responses", "data/behavior", "data/pupil_center",
                                      "meta/neurons", "meta/trials", "meta/ground_truth",
                                      "meta/statistics/images/all", "meta/statistics/responses/all",
                                      "meta/statistics/behavior/all", "meta/statistics/pupil_center/all"};
    char path[4096];
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        npred_status s = join(path, sizeof path, root, sub[i]);
        if (!s) s = sim_mkdir_p(path);
        if (s) return s;
    }
    return NPRED_OK;
}

npred_status sim_write_neurons(const char *root, int animal_id, int session, int64_t n, const int64_t *unit_ids,
                               const double *coords, int64_t *tmp, const char **strs)
{
    npred_status s = sim_put_1d(root, "meta/neurons/unit_ids.npy", NPRED_DT_I64, n, unit_ids);
    if (!s) s = sim_put_2d(root, "meta/neurons/cell_motor_coordinates.npy", NPRED_DT_F64, n, 3, coords);
    for (int64_t j = 0; j < n; j++) tmp[j] = animal_id;
    if (!s) s = sim_put_1d(root, "meta/neurons/animal_ids.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) tmp[j] = 1;
    if (!s) s = sim_put_1d(root, "meta/neurons/sessions.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) tmp[j] = session + 1;
    if (!s) s = sim_put_1d(root, "meta/neurons/scan_idx.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) strs[j] = "V1";
    if (!s) s = sim_put_str(root, "meta/neurons/area.npy", strs, n, 2);
    for (int64_t j = 0; j < n; j++) strs[j] = "L2/3";
    if (!s) s = sim_put_str(root, "meta/neurons/layer.npy", strs, n, 4);
    return s;
}

npred_status sim_write_meta(const char *root, const npred_sim_params *p, const gt_neurons *nr,
                            const layout *L, int session)
{
    int64_t n = nr->n, N = L->N;
    npred_status s = NPRED_OK;
    int64_t *tmp = npred_calloc((size_t)(n > N ? n : N), sizeof(int64_t));
    const char **strs = npred_calloc((size_t)(n > N ? n : N), sizeof(char *));
    if (!tmp || !strs) {
        free(tmp);
        free(strs);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory");
    }
    /* neurons */
    s = sim_write_neurons(root, p->animal_id, session, n, nr->unit_ids, nr->coords, tmp, strs);
    if (!s && nr->match_id) s = sim_put_1d(root, "meta/neurons/multi_match_id.npy", NPRED_DT_I64, n, nr->match_id);
    /* trials */
    for (int64_t t = 0; t < N; t++) strs[t] = TIERS[L->tier[t]];
    if (!s) s = sim_put_str(root, "meta/trials/tiers.npy", strs, N, 10);
    for (int64_t t = 0; t < N; t++) strs[t] = "imagenet";
    if (!s) s = sim_put_str(root, "meta/trials/frame_image_class.npy", strs, N, 8);
    if (!s) s = sim_put_1d(root, "meta/trials/frame_image_id.npy", NPRED_DT_I64, N, L->image_id);
    if (!s) s = sim_put_1d(root, "meta/trials/trial_idx.npy", NPRED_DT_I64, N, L->trial_idx);
    free(tmp);
    free(strs);
    return s;
}

/* Copy every file of fs below rel into root/rel (folders created). */
static npred_status copy_tree(npred_zipfs *fs, const char *rel, const char *root)
{
    char **names = NULL;
    size_t n = 0;
    npred_status s = npred_zipfs_list(fs, rel, &names, &n);
    for (size_t i = 0; i < n && !s; i++) {
        char sub[4096], out[4096];
        size_t l = strlen(names[i]);
        int dir = l > 0 && names[i][l - 1] == '/';
        if (dir) names[i][l - 1] = '\0';
        int k = snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        if (k < 0 || (size_t)k >= sizeof sub || (s = join(out, sizeof out, root, sub))) {
            if (!s) s = npred_errorf(NPRED_ERR_ARG, "%s: path too long", names[i]);
            break;
        }
        if (dir) {
            if (!(s = sim_mkdir_p(out))) s = copy_tree(fs, sub, root);
        } else {
            void *buf = NULL;
            size_t len = 0;
            if (!(s = npred_zipfs_read(fs, sub, &buf, &len))) s = write_file(out, buf, len);
            free(buf);
        }
    }
    npred_zipfs_names_free(names, n);
    return s;
}

npred_status npred_dataset_convert(const char *src, const char *dst)
{
    if (!src || !dst || !*dst) return npred_errorf(NPRED_ERR_ARG, "convert: source and destination are required");
    struct stat st;
    if (lstat(dst, &st) == 0) return npred_errorf(NPRED_ERR_IO, "%s: already exists (convert never overwrites)", dst);
    /* the source must open as a dataset: a bad file fails before anything is written */
    npred_dataset *d = NULL;
    npred_status s = npred_dataset_open(&d, src, NULL);
    npred_dataset_free(d);
    if (s) return s;
    npred_zipfs *fs = NULL;
    if ((s = npred_zipfs_open(&fs, src))) return s;
    size_t dl = strlen(dst);
    while (dl > 1 && dst[dl - 1] == '/') dl--;
    int to_zip = dl >= 4 && !strcasecmp(dst + dl - 4, ".zip");
    /* build in a temporary sibling, then one rename: no half-written dataset is ever visible */
    char tmp[4096], name[1024], built[4096], final_path[4096];
    snprintf(final_path, sizeof final_path, "%.*s", (int)dl, dst);
    const char *slash = strrchr(final_path, '/');
    const char *base = slash ? slash + 1 : final_path;
    snprintf(name, sizeof name, "%.*s", (int)(strlen(base) - (to_zip ? 4 : 0)), base);
    int k = snprintf(tmp, sizeof tmp, "%.*s.convert-%ld", (int)(slash ? slash - final_path + 1 : 0), final_path,
                     (long)getpid());
    if (k < 0 || (size_t)k + strlen(name) + 8 >= sizeof tmp) s = npred_errorf(NPRED_ERR_ARG, "%s: path too long", dst);
    if (!s) s = join(built, sizeof built, tmp, name);
    if (!s) s = sim_mkdir_p(built);
    if (!s) s = copy_tree(fs, "", built);
    npred_zipfs_free(fs);
    if (!s && to_zip) {
        s = npred_tree_write_zip(tmp, name);
        if (!s) snprintf(built + strlen(built), sizeof built - strlen(built), ".zip");
    }
    if (!s && rename(built, final_path) != 0)
        s = npred_errorf(NPRED_ERR_IO, "%s: cannot move the converted dataset into place: %s", final_path,
                         strerror(errno));
    npred_status r = sim_rm_tree(tmp);
    return s ? s : r;
}
