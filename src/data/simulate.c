/* Synthetic SENSORIUM-format datasets with a known ground truth (see simulate.h
 * and docs/simulate.md).
 *
 * Legend: H, W = image size; f = downsample factor; h = H/f, w = W/f (ground-truth
 * feature map); K = 32 feature channels; L = 16 linear filters; n = neurons;
 * N = trials of a session.
 *
 * Determinism: every random number comes from an npred_rng seeded by a hash of
 * (seed, purpose, index): an image from its image id, a trial (behaviour, noise)
 * from (session, trial file index), a session's neurons from the session. So the
 * output does not depend on the thread count or on the chunking.
 * Threads: OpenMP over the trials of a chunk (one level; no BLAS here). */
#include "npred/simulate.h"

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

#include "npred/npy.h"
#include "data/zipfs.h"
#include "npred/data.h"

#define N_ORI 4
#define N_SCALE 2
#define N_LIN (N_SCALE * N_ORI * 2) /* even and odd phase */
#define N_FEAT (N_LIN * 2)          /* relu(+y), relu(-y) */
#define KMAX 17                     /* stored filter size (largest scale) */
#define KPAD 8                      /* KMAX / 2 */
#define CHUNK 32                    /* trials generated in parallel before writing */
#define N_CALIB 16                  /* images used to standardise the features */

/* Gabor wavelength (feature-map pixels) of scale s is LAMBDA0 * 2^s, sigma = lambda / 2,
 * radius = 2 sigma (9x9 and 17x17). */
#define LAMBDA0 4.0

/* generator constants (also written to params.json) */
#define IMG_GRAY 128.0   /* x = (v - IMG_GRAY) / IMG_SCALE before filtering */
#define IMG_SCALE 64.0
#define PUPIL_MEAN 18.0
#define PUPIL_SD 5.0
#define EYE_X 120.0
#define EYE_Y 80.0
#define EYE_SDX 6.0
#define EYE_SDY 4.0
#define EYE_SHIFT 0.04   /* grid units per standard deviation of eye position */
#define EYE_SHIFT_MAX 0.15
#define RF_LIMIT 0.95
#define RF_SCATTER 0.02
#define RF_NONLIN 0.1
#define CORTEX_HALF 300.0 /* µm: half width of the imaged patch */

enum { TAG_IMAGE = 1, TAG_TRIAL, TAG_NEURONS, TAG_LAYOUT, TAG_CALIB };

/* ---------------------------------------------------------------- small helpers */

static uint64_t hash_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static void rng_for(npred_rng *r, uint64_t seed, uint64_t tag, uint64_t a, uint64_t b)
{
    npred_rng_seed(r, hash_mix(hash_mix(hash_mix(seed, tag), a), b));
}

static double unif(npred_rng *r, double lo, double hi) { return lo + (hi - lo) * npred_rng_uniform(r); }

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

static double softplus(double u) { return u > 30.0 ? u : log1p(exp(u)); }

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Poisson(lam): Knuth's product method on pieces of at most 20 (sum of Poissons). */
static double draw_poisson(npred_rng *r, double lam)
{
    double k = 0;
    while (lam > 0) {
        double l = lam > 20.0 ? 20.0 : lam;
        lam -= l;
        double lim = exp(-l), p = 1.0;
        int c = -1;
        do {
            c++;
            p *= npred_rng_uniform(r);
        } while (p > lim);
        k += c;
    }
    return k;
}

/* Gamma(shape k, scale 1): Marsaglia & Tsang (2000), with the k < 1 boost. */
static double draw_gamma(npred_rng *r, double k)
{
    double boost = 1.0;
    if (k < 1.0) {
        double u;
        do u = npred_rng_uniform(r); while (u <= 0.0);
        boost = pow(u, 1.0 / k);
        k += 1.0;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = npred_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = npred_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return boost * d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return boost * d * v;
    }
}

/* ---------------------------------------------------------------- files */

/* a + "/" + b into buf; NPRED_ERR_ARG if it does not fit. */
static npred_status join(char *buf, size_t n, const char *a, const char *b)
{
    int k = snprintf(buf, n, "%s/%s", a, b);
    if (k < 0 || (size_t)k >= n) return npred_errorf(NPRED_ERR_ARG, "%s/%s: path too long", a, b);
    return NPRED_OK;
}

static npred_status mkdir_p(const char *path)
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

static int dir_is_empty(const char *path)
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
static npred_status rm_tree(const char *path)
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
static npred_status put_npy(const char *root, const char *rel, npred_dtype dt, size_t itemsize, int ndim,
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

static npred_status put_1d(const char *root, const char *rel, npred_dtype dt, int64_t n, const void *data)
{
    return put_npy(root, rel, dt, 0, 1, &n, data);
}

static npred_status put_2d(const char *root, const char *rel, npred_dtype dt, int64_t a, int64_t b,
                           const void *data)
{
    int64_t sh[2] = {a, b};
    return put_npy(root, rel, dt, 0, 2, sh, data);
}

/* 1-D '<U<width>' array; strs[i] ASCII, at most `width` characters. */
static npred_status put_str(const char *root, const char *rel, const char *const *strs, int64_t n,
                            size_t width)
{
    uint32_t *u = npred_calloc((size_t)(n > 0 ? n : 1) * width, sizeof *u);
    if (!u) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", rel);
    for (int64_t i = 0; i < n; i++)
        for (size_t c = 0; c < width && strs[i][c]; c++) u[(size_t)i * width + c] = (unsigned char)strs[i][c];
    npred_status s = put_npy(root, rel, NPRED_DT_STR_U, 4 * width, 1, &n, u);
    free(u);
    return s;
}

/* ---------------------------------------------------------------- ground-truth model */

typedef struct {
    int H, W, f, h, w;
    float filt[N_LIN][KMAX][KMAX]; /* centred in KMAX x KMAX, zero outside the radius */
    int radius[N_SCALE];
    double lambda[N_SCALE], sigma[N_SCALE];
    double feat_mean[N_FEAT], feat_std[N_FEAT]; /* calibration of the rectified features */
} gt_model;

static void build_filters(gt_model *m)
{
    memset(m->filt, 0, sizeof m->filt);
    for (int s = 0; s < N_SCALE; s++) {
        double lam = LAMBDA0 * (double)(1 << s), sig = 0.5 * lam;
        int r = (int)ceil(2.0 * sig);
        if (r > KPAD) r = KPAD;
        m->lambda[s] = lam;
        m->sigma[s] = sig;
        m->radius[s] = r;
        for (int o = 0; o < N_ORI; o++) {
            double th = M_PI * o / N_ORI, ct = cos(th), st = sin(th);
            for (int ph = 0; ph < 2; ph++) {
                int l = (s * N_ORI + o) * 2 + ph;
                double g[KMAX][KMAX], env[KMAX][KMAX], sg = 0, se = 0;
                for (int y = -r; y <= r; y++)
                    for (int x = -r; x <= r; x++) {
                        double e = exp(-(x * x + y * y) / (2 * sig * sig));
                        double xr = x * ct + y * st;
                        env[y + KPAD][x + KPAD] = e;
                        g[y + KPAD][x + KPAD] = e * cos(2 * M_PI * xr / lam + (ph ? M_PI / 2 : 0));
                        sg += g[y + KPAD][x + KPAD];
                        se += e;
                    }
                double nrm = 0;
                for (int y = -r; y <= r; y++) /* remove the DC component, keep the envelope */
                    for (int x = -r; x <= r; x++) {
                        g[y + KPAD][x + KPAD] -= env[y + KPAD][x + KPAD] * sg / se;
                        nrm += g[y + KPAD][x + KPAD] * g[y + KPAD][x + KPAD];
                    }
                nrm = sqrt(nrm);
                for (int y = -r; y <= r; y++)
                    for (int x = -r; x <= r; x++) m->filt[l][y + KPAD][x + KPAD] = (float)(g[y + KPAD][x + KPAD] / nrm);
            }
        }
    }
}

/* Scratch floats gen_image needs: column tables + the finest noise lattice. */
static size_t gen_tmp_len(int H, int W) { return (size_t)2 * W + (size_t)(H / 2 + 3) * (W / 2 + 3); }

/* One naturalistic image, values integers 0..255 stored as float.
 * 1/f noise: octaves of smoothly interpolated lattice noise with equal variance
 * per octave (power ~ 1/f^2), then 1-4 soft occluding shapes (edges, ellipses,
 * bars). */
static void gen_image(float *img /* (H, W) */, int H, int W, uint64_t seed, float *tmp /* gen_tmp_len(H, W) */)
{
    npred_rng r;
    npred_rng_seed(&r, seed);
    int *ix = (int *)tmp;                /* W ints */
    float *tx = tmp + W;                 /* W */
    for (int i = 0; i < H * W; i++) img[i] = 0;
    int big = H > W ? H : W;
    double var = 0;
    for (int cell = 2; cell <= 2 * big; cell *= 2) {
        float amp = (float)pow(cell, 0.4); /* a bit steeper than 1/f: fine scales are weaker */
        var += 0.45 * amp * amp;
        int gh = H / cell + 3, gw = W / cell + 3;
        double oy = unif(&r, 0, cell), ox = unif(&r, 0, cell);
        float *lat = tmp + 2 * W;
        for (int i = 0; i < gh * gw; i++) lat[i] = (float)npred_rng_normal(&r);
        for (int x = 0; x < W; x++) {
            double fx = (x + ox) / cell;
            int i0 = (int)fx;
            double t = fx - i0;
            ix[x] = i0;
            tx[x] = (float)(t * t * (3 - 2 * t));
        }
        for (int y = 0; y < H; y++) {
            double fy = (y + oy) / cell;
            int j0 = (int)fy;
            double t = fy - j0;
            float ty = (float)(t * t * (3 - 2 * t));
            const float *r0 = lat + (size_t)j0 * gw, *r1 = r0 + gw;
            float *row = img + (size_t)y * W;
            for (int x = 0; x < W; x++) {
                int i0 = ix[x];
                float a = r0[i0] + tx[x] * (r0[i0 + 1] - r0[i0]);
                float b = r1[i0] + tx[x] * (r1[i0 + 1] - r1[i0]);
                row[x] += amp * (a + ty * (b - a));
            }
        }
    }
    float nz = (float)(1.0 / sqrt(var));
    for (int i = 0; i < H * W; i++) img[i] *= nz;

    int n_shapes = 1 + (int)npred_rng_below(&r, 4);
    double scale = H < W ? H : W;
    for (int k = 0; k < n_shapes; k++) {
        int type = (int)npred_rng_below(&r, 3);
        double cx = unif(&r, 0, W), cy = unif(&r, 0, H), th = unif(&r, 0, M_PI);
        double soft = unif(&r, 0.7, 3.0), op = unif(&r, 0.5, 1.0), val = 1.2 * npred_rng_normal(&r);
        double a = unif(&r, 0.08, 0.35) * scale, b = unif(&r, 0.08, 0.35) * scale;
        double len = unif(&r, 0.3, 1.0) * scale, thick = unif(&r, 0.03, 0.1) * scale;
        double ct = cos(th), st = sin(th);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double dx = x - cx, dy = y - cy, t = dx * ct + dy * st, nn = -dx * st + dy * ct, al;
                if (type == 0) al = sigmoid(t / soft);
                else if (type == 1) al = sigmoid((1.0 - sqrt((t / a) * (t / a) + (nn / b) * (nn / b))) * (a < b ? a : b) / soft);
                else al = sigmoid((0.5 * thick - fabs(nn)) / soft) * sigmoid((0.5 * len - fabs(t)) / soft);
                al *= op;
                float *p = img + (size_t)y * W + x;
                *p = (float)((1.0 - al) * *p + al * (val + 0.3 * *p));
            }
    }
    double mean = 120.0 + 12.0 * npred_rng_normal(&r), contrast = unif(&r, 0.6, 1.3);
    for (int i = 0; i < H * W; i++) {
        double v = floor(mean + 45.0 * contrast * img[i] + 0.5);
        img[i] = (float)clampd(v, 0.0, 255.0);
    }
}

/* Downsample by f (skimage rescale(1/f), bilinear, grid_mode: output pixel i samples
 * input coordinate (i + 0.5) f - 0.5) and map to x = (v - 128) / 64, into a buffer
 * zero-padded by KPAD on every side. */
static void downsample_pad(float *xp /* (h + 2 KPAD, w + 2 KPAD) */, const float *img /* (H, W) */,
                           const gt_model *m)
{
    int h = m->h, w = m->w, f = m->f, pw = w + 2 * KPAD;
    memset(xp, 0, sizeof(float) * (size_t)(h + 2 * KPAD) * pw);
    for (int i = 0; i < h; i++) {
        double cy = (i + 0.5) * f - 0.5;
        int y0 = (int)floor(cy);
        double ty = cy - y0;
        int y1 = y0 + 1 < m->H ? y0 + 1 : y0;
        for (int j = 0; j < w; j++) {
            double cx = (j + 0.5) * f - 0.5;
            int x0 = (int)floor(cx);
            double tx = cx - x0;
            int x1 = x0 + 1 < m->W ? x0 + 1 : x0;
            const float *r0 = img + (size_t)y0 * m->W, *r1 = img + (size_t)y1 * m->W;
            double v = (1 - ty) * ((1 - tx) * r0[x0] + tx * r0[x1]) + ty * ((1 - tx) * r1[x0] + tx * r1[x1]);
            xp[(size_t)(i + KPAD) * pw + j + KPAD] = (float)((v - IMG_GRAY) / IMG_SCALE);
        }
    }
}

/* Rectified Gabor features, channel-last: F[i, j, 2 l + 0] = relu(y_l), [2 l + 1] = relu(-y_l),
 * with y_l = filter l correlated with the zero-padded x ("same" size). */
static void features(float *F /* (h, w, K) */, const float *xp /* (h + 2 KPAD, w + 2 KPAD) */,
                     float *y /* (w) */, const gt_model *m)
{
    int h = m->h, w = m->w, pw = w + 2 * KPAD;
    for (int l = 0; l < N_LIN; l++) {
        int r = m->radius[l / (2 * N_ORI)];
        for (int i = 0; i < h; i++) {
            for (int j = 0; j < w; j++) y[j] = 0;
            for (int dy = -r; dy <= r; dy++) {
                const float *src = xp + (size_t)(i + KPAD + dy) * pw + KPAD;
                for (int dx = -r; dx <= r; dx++) {
                    float g = m->filt[l][dy + KPAD][dx + KPAD];
                    const float *s = src + dx;
                    for (int j = 0; j < w; j++) y[j] += g * s[j];
                }
            }
            float *out = F + (size_t)i * w * N_FEAT + 2 * l;
            for (int j = 0; j < w; j++) {
                out[(size_t)j * N_FEAT] = y[j] > 0 ? y[j] : 0.0f;
                out[(size_t)j * N_FEAT + 1] = y[j] < 0 ? -y[j] : 0.0f;
            }
        }
    }
}

typedef struct {
    int n;
    int64_t *unit_ids;    /* (n) */
    double *coords;       /* (n, 3) µm */
    double *rf_grid;      /* (n, 2) x, y in [-1, 1] */
    double *rf_pix;       /* (n, 2) x, y in full-resolution pixels */
    float *weight;        /* (n, K) */
    double *bias;         /* (n) */
    double *gain;         /* (n) */
    double *kappa;        /* (n) modulation strength (0 unless modulate) */
    double retino[8];     /* rotation, scale x, scale y, flip, offset x, offset y, centre x, centre y */
} gt_neurons;

static void neurons_free(gt_neurons *nr)
{
    free(nr->unit_ids);
    free(nr->coords);
    free(nr->rf_grid);
    free(nr->rf_pix);
    free(nr->weight);
    free(nr->bias);
    free(nr->gain);
    free(nr->kappa);
    memset(nr, 0, sizeof *nr);
}

static npred_status neurons_make(gt_neurons *nr, const npred_sim_params *p, const gt_model *m, int session)
{
    int n = p->n_neurons;
    memset(nr, 0, sizeof *nr);
    nr->n = n;
    nr->unit_ids = npred_calloc((size_t)n, sizeof(int64_t));
    nr->coords = npred_calloc((size_t)n * 3, sizeof(double));
    nr->rf_grid = npred_calloc((size_t)n * 2, sizeof(double));
    nr->rf_pix = npred_calloc((size_t)n * 2, sizeof(double));
    nr->weight = npred_calloc((size_t)n * N_FEAT, sizeof(float));
    nr->bias = npred_calloc((size_t)n, sizeof(double));
    nr->gain = npred_calloc((size_t)n, sizeof(double));
    nr->kappa = npred_calloc((size_t)n, sizeof(double));
    if (!nr->unit_ids || !nr->coords || !nr->rf_grid || !nr->rf_pix || !nr->weight || !nr->bias || !nr->gain ||
        !nr->kappa) {
        neurons_free(nr);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %d neurons", n);
    }
    npred_rng r;
    rng_for(&r, p->seed, TAG_NEURONS, (uint64_t)session, 0);
    /* retinotopy of this session: rotation, anisotropic scale, optional mirror, offset */
    double th = unif(&r, 0, 2 * M_PI), sx = unif(&r, 0.45, 0.65), sy = unif(&r, 0.45, 0.65);
    double flip = npred_rng_below(&r, 2) ? -1.0 : 1.0, ox = unif(&r, -0.1, 0.1), oy = unif(&r, -0.1, 0.1);
    double x0 = unif(&r, -500, 500), y0 = unif(&r, -500, 500);
    double rt[8] = {th, sx, sy, flip, ox, oy, x0, y0};
    memcpy(nr->retino, rt, sizeof rt);
    double ct = cos(th), st = sin(th);
    int64_t id = 0;
    for (int j = 0; j < n; j++) {
        id += 1 + (npred_rng_uniform(&r) < 0.08 ? 1 + (int64_t)npred_rng_below(&r, 3) : 0);
        nr->unit_ids[j] = id;
        double cx = unif(&r, -1, 1), cy = unif(&r, -1, 1);
        nr->coords[3 * j + 0] = x0 + CORTEX_HALF * cx;
        nr->coords[3 * j + 1] = y0 + CORTEX_HALF * cy;
        nr->coords[3 * j + 2] = 190.0 + 25.0 * (double)npred_rng_below(&r, 6) + unif(&r, 0, 4);
        double a = sx * cx, b = flip * sy * cy;
        double gx = ct * a - st * b + ox + RF_NONLIN * cx * cy + RF_SCATTER * npred_rng_normal(&r);
        double gy = st * a + ct * b + oy + RF_NONLIN * (cx * cx - 1.0 / 3.0) + RF_SCATTER * npred_rng_normal(&r);
        gx = clampd(gx, -RF_LIMIT, RF_LIMIT);
        gy = clampd(gy, -RF_LIMIT, RF_LIMIT);
        nr->rf_grid[2 * j] = gx;
        nr->rf_grid[2 * j + 1] = gy;
        nr->rf_pix[2 * j] = m->f * (gx + 1) / 2 * (m->w - 1) + (m->f - 1) / 2.0;
        nr->rf_pix[2 * j + 1] = m->f * (gy + 1) / 2 * (m->h - 1) + (m->f - 1) / 2.0;
        /* feature weights: a preferred scale/orientation/phase, partial phase
         * invariance ("complexity"), small weights everywhere; unit norm on the
         * standardised features */
        double wv[N_FEAT], nrm = 0;
        int ps = (int)npred_rng_below(&r, N_SCALE), po = (int)npred_rng_below(&r, N_ORI);
        int pp = (int)npred_rng_below(&r, 4);
        double cplx = npred_rng_uniform(&r);
        for (int k = 0; k < N_FEAT; k++) wv[k] = 0.15 * npred_rng_normal(&r);
        for (int q = 0; q < 4; q++) wv[((ps * N_ORI + po) * 2 + q / 2) * 2 + q % 2] += q == pp ? 1.0 : cplx;
        for (int k = 0; k < N_FEAT; k++) nrm += wv[k] * wv[k];
        nrm = sqrt(nrm);
        double slope = unif(&r, 1.0, 2.0), offset = unif(&r, -2.0, -0.5), bias = offset;
        for (int k = 0; k < N_FEAT; k++) {
            float wk = (float)(slope * wv[k] / nrm / m->feat_std[k]);
            nr->weight[(size_t)j * N_FEAT + k] = wk;
            bias -= (double)wk * m->feat_mean[k];
        }
        nr->bias[j] = bias;
        nr->gain[j] = p->rate_scale * exp(0.4 * npred_rng_normal(&r));
        double kap = unif(&r, 0.0, 0.5);
        nr->kappa[j] = p->modulate ? kap : 0.0;
    }
    return NPRED_OK;
}

/* Noise-free rates of all neurons for one feature map. shift: grid units added to
 * every RF position; mod: modulation signal (rate *= exp(kappa mod)). */
static void rates(double *lam /* (n) */, const float *F /* (h, w, K) */, const gt_model *m,
                  const gt_neurons *nr, double shx, double shy, double mod)
{
    int h = m->h, w = m->w;
    for (int j = 0; j < nr->n; j++) {
        double u = (nr->rf_grid[2 * j] + shx + 1) / 2 * (w - 1);
        double v = (nr->rf_grid[2 * j + 1] + shy + 1) / 2 * (h - 1);
        int x0 = (int)floor(u), y0 = (int)floor(v);
        double tx = u - x0, ty = v - y0, acc[N_FEAT] = {0};
        for (int c = 0; c < 4; c++) {
            int xx = x0 + (c & 1), yy = y0 + (c >> 1);
            if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue; /* zero padding */
            double wt = ((c & 1) ? tx : 1 - tx) * ((c >> 1) ? ty : 1 - ty);
            const float *f = F + ((size_t)yy * w + xx) * N_FEAT;
            for (int k = 0; k < N_FEAT; k++) acc[k] += wt * f[k];
        }
        const float *wj = nr->weight + (size_t)j * N_FEAT;
        double s = nr->bias[j];
        for (int k = 0; k < N_FEAT; k++) s += (double)wj[k] * acc[k];
        lam[j] = nr->gain[j] * softplus(s) * exp(nr->kappa[j] * mod);
    }
}

/* Behaviour (pupil dilation, its derivative, running speed) and eye position of a
 * trial, driven by one latent arousal variable. */
static void gen_behavior(npred_rng *r, float beh[3], float eye[2])
{
    double a = npred_rng_normal(r);
    double pupil = PUPIL_MEAN + PUPIL_SD * (0.9 * a + 0.3 * npred_rng_normal(r));
    double dpupil = 0.3 * a + 0.8 * npred_rng_normal(r);
    double run = 4.0 * (a + 0.8 * npred_rng_normal(r)) - 1.0;
    beh[0] = (float)(pupil < 3.0 ? 3.0 : pupil);
    beh[1] = (float)dpupil;
    beh[2] = (float)(run < 0 ? 0.0 : run);
    eye[0] = (float)(EYE_X + EYE_SDX * npred_rng_normal(r));
    eye[1] = (float)(EYE_Y + EYE_SDY * npred_rng_normal(r));
}

/* m_t = 0.6 (pupil - 18) / 5 + 0.4 (speed / 4 - 0.5), clipped to [-3, 3]. */
static double modulation(const float beh[3])
{
    return clampd(0.6 * (beh[0] - PUPIL_MEAN) / PUPIL_SD + 0.4 * (beh[2] / 4.0 - 0.5), -3.0, 3.0);
}

static void eye_shift(const float eye[2], double *sx, double *sy)
{
    *sx = clampd(EYE_SHIFT * (eye[0] - EYE_X) / EYE_SDX, -EYE_SHIFT_MAX, EYE_SHIFT_MAX);
    *sy = clampd(EYE_SHIFT * (eye[1] - EYE_Y) / EYE_SDY, -EYE_SHIFT_MAX, EYE_SHIFT_MAX);
}

/* ---------------------------------------------------------------- statistics */

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
static double median_of(double *v, size_t n)
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
    out[4] = median_of(scratch, rows);
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
        s = put_npy(root, rel, NPRED_DT_F32, 0, ncol ? 1 : 0, &ncol, v);
    }
    free(v);
    return s;
}

static npred_status matrix_stats(const char *root, const char *field, const float *a, size_t rows, size_t cols)
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
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
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
static npred_status image_stats(const char *root, const uint64_t hist[256])
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

/* ---------------------------------------------------------------- oracles */

/* NP measures.oracle_corr_jackknife: every repeat against the mean of the other
 * repeats of its image, correlated over all test trials (std ddof 0, +1e-8). */
static void oracle_jackknife(double *out /* (n) */, const float *resp /* (N, n) */, int n,
                             const int64_t *groups /* (n_img, reps) file indices */, int n_img, int reps)
{
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        size_t T = (size_t)n_img * reps;
        double sx = 0, so = 0, sxx = 0, soo = 0, sxo = 0;
        for (int i = 0; i < n_img; i++) {
            double tot = 0;
            for (int q = 0; q < reps; q++) tot += resp[(size_t)groups[(size_t)i * reps + q] * n + j];
            for (int q = 0; q < reps; q++) {
                double x = resp[(size_t)groups[(size_t)i * reps + q] * n + j], o = (tot - x) / (reps - 1);
                sx += x;
                so += o;
            }
        }
        double mx = sx / T, mo = so / T;
        for (int i = 0; i < n_img; i++) {
            double tot = 0;
            for (int q = 0; q < reps; q++) tot += resp[(size_t)groups[(size_t)i * reps + q] * n + j];
            for (int q = 0; q < reps; q++) {
                double x = resp[(size_t)groups[(size_t)i * reps + q] * n + j], o = (tot - x) / (reps - 1);
                sxx += (x - mx) * (x - mx);
                soo += (o - mo) * (o - mo);
                sxo += (x - mx) * (o - mo);
            }
        }
        double dx = sqrt(sxx / T) + 1e-8, d_o = sqrt(soo / T) + 1e-8;
        out[j] = T ? (sxo / T) / (dx * d_o) : 0.0;
    }
}

/* Expected correlation of one noisy trial with its noise-free rate, over the test
 * trials: sqrt(Var(lam) / (Var(lam) + E[noise variance])). */
static void oracle_rate(double *out /* (n) */, const float *lam /* (T, n) */, size_t T, int n,
                        const npred_sim_params *p)
{
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        double s = 0, nv = 0, ss = 0;
        for (size_t t = 0; t < T; t++) s += lam[t * n + j];
        double mean = T ? s / T : 0;
        for (size_t t = 0; t < T; t++) {
            double l = lam[t * n + j];
            ss += (l - mean) * (l - mean);
            nv += p->noise == NPRED_SIM_NOISE_POISSON ? l : p->noise == NPRED_SIM_NOISE_GAMMA ? l * l / p->gamma_shape : 0;
        }
        double var = T ? ss / T : 0;
        nv = T ? nv / T : 0;
        out[j] = var > 0 ? sqrt(var / (var + nv)) : 0.0;
    }
}

/* ---------------------------------------------------------------- params */

npred_sim_params npred_sim_default_params(void)
{
    npred_sim_params p;
    memset(&p, 0, sizeof p);
    p.n_sessions = 1;
    p.n_neurons = 1000;
    p.n_trials = 5000;
    p.val_fraction = 0.1;
    p.n_test_images = 100;
    p.n_test_repeats = 10;
    p.n_final_test_images = 0;
    p.height = 144;
    p.width = 256;
    p.downsample = 4;
    p.seed = 1;
    p.animal_id = 90000;
    p.rate_scale = 2.0;
    p.noise = NPRED_SIM_NOISE_POISSON;
    p.gamma_shape = 2.0;
    p.modulate = 0;
    p.write_tree = 1;
    p.write_zip = 0;
    p.force = 0;
    return p;
}

npred_status npred_sim_validate(const npred_sim_params *p)
{
    if (!p) return npred_errorf(NPRED_ERR_ARG, "simulate: params is NULL");
    if (p->n_sessions < 1 || p->n_sessions > 999)
        return npred_errorf(NPRED_ERR_ARG, "sessions: %d is not in 1..999", p->n_sessions);
    if (p->n_neurons < 1)
        return npred_errorf(NPRED_ERR_ARG, "neurons: %d; a session needs at least 1 neuron", p->n_neurons);
    if (p->n_trials < 0 || p->n_trials >= 1000000)
        return npred_errorf(NPRED_ERR_ARG, "trials: %d is not in 0..999999", p->n_trials);
    if (!(p->val_fraction >= 0 && p->val_fraction <= 1))
        return npred_errorf(NPRED_ERR_ARG, "val-fraction: %g is not in [0, 1]", p->val_fraction);
    if (p->n_test_images < 0 || p->n_test_images >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "test-images: %d is not in 0..99999", p->n_test_images);
    if (p->n_final_test_images < 0 || p->n_final_test_images >= 100000)
        return npred_errorf(NPRED_ERR_ARG, "final-test-images: %d is not in 0..99999", p->n_final_test_images);
    if ((p->n_test_images > 0 || p->n_final_test_images > 0) && (p->n_test_repeats < 2 || p->n_test_repeats > 1000))
        return npred_errorf(NPRED_ERR_ARG, "test-repeats: %d is not in 2..1000 (the oracle needs repeats)",
                            p->n_test_repeats);
    int64_t total = (int64_t)p->n_trials + (int64_t)(p->n_test_images + p->n_final_test_images) *
                                               (p->n_test_images + p->n_final_test_images ? p->n_test_repeats : 0);
    if (total < 1) return npred_errorf(NPRED_ERR_ARG, "trials: a session needs at least 1 trial in total");
    if (p->downsample < 1 || p->downsample > 16)
        return npred_errorf(NPRED_ERR_ARG, "downsample: %d is not in 1..16", p->downsample);
    if (p->height < 8 || p->width < 8 || p->height > 4096 || p->width > 4096)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d: height and width must be in 8..4096", p->height,
                            p->width);
    if (p->height % p->downsample || p->width % p->downsample)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d is not divisible by downsample %d", p->height,
                            p->width, p->downsample);
    if (p->height / p->downsample < 2 || p->width / p->downsample < 2)
        return npred_errorf(NPRED_ERR_ARG, "image size %dx%d / downsample %d leaves a feature map under 2x2",
                            p->height, p->width, p->downsample);
    if (p->animal_id < 0) return npred_errorf(NPRED_ERR_ARG, "animal-id: %d is negative", p->animal_id);
    if (!(p->rate_scale > 0 && isfinite(p->rate_scale)))
        return npred_errorf(NPRED_ERR_ARG, "rate-scale: %g must be positive", p->rate_scale);
    if (p->noise != NPRED_SIM_NOISE_POISSON && p->noise != NPRED_SIM_NOISE_GAMMA && p->noise != NPRED_SIM_NOISE_NONE)
        return npred_errorf(NPRED_ERR_ARG, "noise: unknown kind %d", (int)p->noise);
    if (!(p->gamma_shape > 0 && isfinite(p->gamma_shape)))
        return npred_errorf(NPRED_ERR_ARG, "gamma-shape: %g must be positive", p->gamma_shape);
    if (!p->write_tree && !p->write_zip)
        return npred_errorf(NPRED_ERR_ARG, "simulate: nothing to write (neither folder nor zip)");
    return NPRED_OK;
}

void npred_sim_data_key(const npred_sim_params *p, int session, char *buf, size_t bufsize)
{
    snprintf(buf, bufsize, "%d-1-%d", p->animal_id, session + 1);
}

void npred_sim_tree_name(const npred_sim_params *p, int session, char *buf, size_t bufsize)
{
    char key[64];
    npred_sim_data_key(p, session, key, sizeof key);
    snprintf(buf, bufsize, "static%s-GrayImageNet-%s", key, NPRED_SIM_NAME_HASH);
}

/* ---------------------------------------------------------------- workspace */

typedef struct {
    float *img;  /* (CHUNK, H, W) images of the chunk */
    float *xp;   /* (threads, h + 2 KPAD, w + 2 KPAD) */
    float *F;    /* (threads, h, w, K) */
    float *row;  /* (threads, max(w, gen_tmp_len)) scratch */
    double *lam; /* (threads, n) */
    int threads;
} workspace;

static void ws_free(workspace *ws)
{
    free(ws->img);
    free(ws->xp);
    free(ws->F);
    free(ws->row);
    free(ws->lam);
    memset(ws, 0, sizeof *ws);
}

static size_t ws_row_len(const gt_model *m)
{
    size_t g = gen_tmp_len(m->H, m->W);
    return g > (size_t)m->w ? g : (size_t)m->w;
}

static npred_status ws_init(workspace *ws, const gt_model *m, int n)
{
    memset(ws, 0, sizeof *ws);
    ws->threads = 1;
#ifdef _OPENMP
    ws->threads = omp_get_max_threads();
#endif
    size_t T = (size_t)ws->threads;
    ws->img = npred_calloc((size_t)CHUNK * m->H * m->W, sizeof(float));
    ws->xp = npred_calloc(T * (m->h + 2 * KPAD) * (m->w + 2 * KPAD), sizeof(float));
    ws->F = npred_calloc(T * m->h * m->w * N_FEAT, sizeof(float));
    ws->row = npred_calloc(T * ws_row_len(m), sizeof(float));
    ws->lam = npred_calloc(T * (size_t)n, sizeof(double));
    if (!ws->img || !ws->xp || !ws->F || !ws->row || !ws->lam) {
        ws_free(ws);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for the workspace");
    }
    return NPRED_OK;
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Image `img` -> feature map in the calling thread's buffers; returns F. */
static float *image_features(workspace *ws, const gt_model *m, const float *img)
{
    int t = thread_id();
    float *xp = ws->xp + (size_t)t * (m->h + 2 * KPAD) * (m->w + 2 * KPAD);
    float *F = ws->F + (size_t)t * m->h * m->w * N_FEAT;
    downsample_pad(xp, img, m);
    features(F, xp, ws->row + (size_t)t * ws_row_len(m), m);
    return F;
}

static npred_status calibrate(gt_model *m, workspace *ws, uint64_t seed)
{
    double s[N_FEAT] = {0}, ss[N_FEAT] = {0};
    size_t cnt = 0;
    for (int i = 0; i < N_CALIB; i++) {
        float *img = ws->img; /* serial: slot 0 */
        gen_image(img, m->H, m->W, hash_mix(hash_mix(seed, TAG_CALIB), (uint64_t)i), ws->row);
        const float *F = image_features(ws, m, img);
        for (size_t q = 0; q < (size_t)m->h * m->w; q++)
            for (int k = 0; k < N_FEAT; k++) {
                double v = F[q * N_FEAT + k];
                s[k] += v;
                ss[k] += v * v;
            }
        cnt += (size_t)m->h * m->w;
    }
    for (int k = 0; k < N_FEAT; k++) {
        double mean = s[k] / cnt, var = ss[k] / cnt - mean * mean;
        m->feat_mean[k] = mean;
        m->feat_std[k] = var > 1e-6 ? sqrt(var) : 1e-3;
    }
    return NPRED_OK;
}

/* ---------------------------------------------------------------- params.json */

static npred_status put_json(const char *root, const npred_sim_params *p, const gt_model *m,
                             const gt_neurons *nr, int session, const char *key)
{
    cJSON *j = cJSON_CreateObject();
    if (!j) return npred_errorf(NPRED_ERR_NOMEM, "params.json: out of memory");
    cJSON_AddStringToObject(j, "generator", "npred simulate 1");
    cJSON_AddStringToObject(j, "data_key", key);
    cJSON_AddNumberToObject(j, "session", session);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->seed);
    cJSON_AddStringToObject(j, "seed", seed);
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
    cJSON_AddStringToObject(o, "noise", p->noise == NPRED_SIM_NOISE_POISSON ? "poisson"
                                        : p->noise == NPRED_SIM_NOISE_GAMMA ? "gamma" : "none");
    cJSON_AddNumberToObject(o, "gamma_shape", p->gamma_shape);
    cJSON_AddBoolToObject(o, "modulate", p->modulate);

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
    char *txt = cJSON_Print(j);
    cJSON_Delete(j);
    if (!txt) return npred_errorf(NPRED_ERR_NOMEM, "params.json: out of memory");
    char path[4096];
    npred_status s = join(path, sizeof path, root, "meta/ground_truth/params.json");
    if (!s) s = write_file(path, txt, strlen(txt));
    free(txt);
    return s;
}

/* ---------------------------------------------------------------- one session */

typedef struct {
    int64_t N;           /* trials */
    int64_t *image_id;   /* (N) */
    int *tier;           /* (N) 0 train, 1 validation, 2 test, 3 final_test */
    int64_t *trial_idx;  /* (N) */
    int64_t *test_row;   /* (N) row in the test arrays or -1 */
    int64_t n_test;      /* test trials */
} layout;

static const char *const TIERS[4] = {"train", "validation", "test", "final_test"};

static void layout_free(layout *L)
{
    free(L->image_id);
    free(L->tier);
    free(L->trial_idx);
    free(L->test_row);
    memset(L, 0, sizeof *L);
}

static npred_status layout_make(layout *L, const npred_sim_params *p, int session)
{
    memset(L, 0, sizeof *L);
    int reps = p->n_test_repeats;
    int64_t n_val = (int64_t)floor(p->val_fraction * p->n_trials + 0.5);
    int64_t n_test = (int64_t)p->n_test_images * reps, n_fin = (int64_t)p->n_final_test_images * reps;
    int64_t N = p->n_trials + n_test + n_fin;
    L->N = N;
    L->n_test = n_test;
    L->image_id = npred_calloc((size_t)N, sizeof(int64_t));
    L->tier = npred_calloc((size_t)N, sizeof(int));
    L->trial_idx = npred_calloc((size_t)N, sizeof(int64_t));
    L->test_row = npred_calloc((size_t)N, sizeof(int64_t));
    int64_t *perm = npred_calloc((size_t)N, sizeof(int64_t));
    if (!L->image_id || !L->tier || !L->trial_idx || !L->test_row || !perm) {
        free(perm);
        layout_free(L);
        return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %lld trials", (long long)N);
    }
    npred_rng r;
    rng_for(&r, p->seed, TAG_LAYOUT, (uint64_t)session, 0);
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    npred_rng_shuffle(&r, perm, (size_t)N); /* canonical trial q goes to file perm[q] */
    for (int64_t q = 0; q < N; q++) {
        int64_t t = perm[q];
        if (q < p->n_trials) {
            L->tier[t] = q < p->n_trials - n_val ? 0 : 1;
            L->image_id[t] = 1000000LL * (session + 1) + q;
        } else if (q < p->n_trials + n_test) {
            L->tier[t] = 2;
            L->image_id[t] = 100000 + (q - p->n_trials) / reps;
        } else {
            L->tier[t] = 3;
            L->image_id[t] = 200000 + (q - p->n_trials - n_test) / reps;
        }
    }
    for (int64_t i = 0; i < N; i++) L->trial_idx[i] = i;
    npred_rng_shuffle(&r, L->trial_idx, (size_t)N); /* recording order */
    int64_t row = 0;
    for (int64_t t = 0; t < N; t++) L->test_row[t] = L->tier[t] == 2 ? row++ : -1;
    free(perm);
    return NPRED_OK;
}

static npred_status make_dirs(const char *root)
{
    static const char *const sub[] = {"data/images", "data/responses", "data/behavior", "data/pupil_center",
                                      "meta/neurons", "meta/trials", "meta/ground_truth",
                                      "meta/statistics/images/all", "meta/statistics/responses/all",
                                      "meta/statistics/behavior/all", "meta/statistics/pupil_center/all"};
    char path[4096];
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        npred_status s = join(path, sizeof path, root, sub[i]);
        if (!s) s = mkdir_p(path);
        if (s) return s;
    }
    return NPRED_OK;
}

static npred_status write_meta(const char *root, const npred_sim_params *p, const gt_neurons *nr,
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
    s = put_1d(root, "meta/neurons/unit_ids.npy", NPRED_DT_I64, n, nr->unit_ids);
    if (!s) s = put_2d(root, "meta/neurons/cell_motor_coordinates.npy", NPRED_DT_F64, n, 3, nr->coords);
    for (int64_t j = 0; j < n; j++) tmp[j] = p->animal_id;
    if (!s) s = put_1d(root, "meta/neurons/animal_ids.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) tmp[j] = 1;
    if (!s) s = put_1d(root, "meta/neurons/sessions.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) tmp[j] = session + 1;
    if (!s) s = put_1d(root, "meta/neurons/scan_idx.npy", NPRED_DT_I64, n, tmp);
    for (int64_t j = 0; j < n; j++) strs[j] = "V1";
    if (!s) s = put_str(root, "meta/neurons/area.npy", strs, n, 2);
    for (int64_t j = 0; j < n; j++) strs[j] = "L2/3";
    if (!s) s = put_str(root, "meta/neurons/layer.npy", strs, n, 4);
    /* trials */
    for (int64_t t = 0; t < N; t++) strs[t] = TIERS[L->tier[t]];
    if (!s) s = put_str(root, "meta/trials/tiers.npy", strs, N, 10);
    for (int64_t t = 0; t < N; t++) strs[t] = "imagenet";
    if (!s) s = put_str(root, "meta/trials/frame_image_class.npy", strs, N, 8);
    if (!s) s = put_1d(root, "meta/trials/frame_image_id.npy", NPRED_DT_I64, N, L->image_id);
    if (!s) s = put_1d(root, "meta/trials/trial_idx.npy", NPRED_DT_I64, N, L->trial_idx);
    free(tmp);
    free(strs);
    return s;
}

static npred_status simulate_session(const npred_sim_params *p, const gt_model *m, workspace *ws,
                                     const char *out_dir, int session, npred_sim_progress_fn progress,
                                     void *user)
{
    char key[64], name[256], root[4096];
    npred_sim_data_key(p, session, key, sizeof key);
    npred_sim_tree_name(p, session, name, sizeof name);
    snprintf(root, sizeof root, "%s/%s", out_dir, name);
    if (p->force) {
        char zp[4200];
        snprintf(zp, sizeof zp, "%s.zip", root);
        npred_status s = rm_tree(root);
        if (!s) s = rm_tree(zp);
        if (s) return s;
    }
    npred_status s = make_dirs(root);
    if (s) return s;

    gt_neurons nr;
    layout L;
    s = neurons_make(&nr, p, m, session);
    if (s) return s;
    s = layout_make(&L, p, session);
    if (s) {
        neurons_free(&nr);
        return s;
    }
    int n = p->n_neurons, reps = p->n_test_repeats, n_img = p->n_test_images;
    int64_t N = L.N, T = L.n_test;
    float *resp = npred_calloc((size_t)N * n, sizeof(float));
    float *beh = npred_calloc((size_t)N * 3, sizeof(float));
    float *eye = npred_calloc((size_t)N * 2, sizeof(float));
    float *trial_rates = npred_calloc((size_t)(T ? T : 1) * n, sizeof(float));
    float *image_rates = npred_calloc((size_t)(n_img ? n_img : 1) * n, sizeof(float));
    int64_t *test_trials = npred_calloc((size_t)(T ? T : 1), sizeof(int64_t));
    int64_t *groups = npred_calloc((size_t)(T ? T : 1), sizeof(int64_t));
    int64_t *test_ids = npred_calloc((size_t)(n_img ? n_img : 1), sizeof(int64_t));
    double *orc_j = npred_calloc((size_t)n, sizeof(double));
    double *orc_r = npred_calloc((size_t)n, sizeof(double));
    uint64_t hist[256] = {0};
    if (!resp || !beh || !eye || !trial_rates || !image_rates || !test_trials || !groups || !test_ids || !orc_j ||
        !orc_r) {
        s = npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory for %lld trials x %d neurons", (long long)N, n);
        goto done;
    }
    s = write_meta(root, p, &nr, &L, session);
    if (s) goto done;

    /* noise-free rates of the test images at neutral behaviour (no shift, m = 0) */
    for (int i = 0; i < n_img; i++) test_ids[i] = 100000 + i;
    for (int64_t c0 = 0; c0 < n_img; c0 += CHUNK) {
        int cn = (int)(n_img - c0 < CHUNK ? n_img - c0 : CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int q = 0; q < cn; q++) {
            int t = thread_id();
            float *img = ws->img + (size_t)q * m->H * m->W;
            gen_image(img, m->H, m->W, hash_mix(hash_mix(p->seed, TAG_IMAGE), (uint64_t)test_ids[c0 + q]),
                      ws->row + (size_t)t * ws_row_len(m));
            const float *F = image_features(ws, m, img);
            double *lam = ws->lam + (size_t)t * n;
            rates(lam, F, m, &nr, 0.0, 0.0, 0.0);
            for (int j = 0; j < n; j++) image_rates[(size_t)(c0 + q) * n + j] = (float)lam[j];
        }
    }

    /* all trials, chunk by chunk: generate in parallel, write in order */
    for (int64_t c0 = 0; c0 < N && !s; c0 += CHUNK) {
        int cn = (int)(N - c0 < CHUNK ? N - c0 : CHUNK);
#pragma omp parallel for schedule(dynamic, 1)
        for (int q = 0; q < cn; q++) {
            int64_t tr = c0 + q;
            int t = thread_id();
            float *img = ws->img + (size_t)q * m->H * m->W;
            gen_image(img, m->H, m->W, hash_mix(hash_mix(p->seed, TAG_IMAGE), (uint64_t)L.image_id[tr]),
                      ws->row + (size_t)t * ws_row_len(m));
            const float *F = image_features(ws, m, img);
            npred_rng r;
            rng_for(&r, p->seed, TAG_TRIAL, (uint64_t)session, (uint64_t)tr);
            gen_behavior(&r, beh + 3 * tr, eye + 2 * tr);
            double shx = 0, shy = 0, mod = 0;
            if (p->modulate) {
                eye_shift(eye + 2 * tr, &shx, &shy);
                mod = modulation(beh + 3 * tr);
            }
            double *lam = ws->lam + (size_t)t * n;
            rates(lam, F, m, &nr, shx, shy, mod);
            float *y = resp + (size_t)tr * n;
            for (int j = 0; j < n; j++) {
                double l = lam[j];
                y[j] = (float)(p->noise == NPRED_SIM_NOISE_POISSON ? draw_poisson(&r, l)
                               : p->noise == NPRED_SIM_NOISE_GAMMA ? l / p->gamma_shape * draw_gamma(&r, p->gamma_shape)
                                                                   : l);
            }
            if (L.test_row[tr] >= 0)
                for (int j = 0; j < n; j++) trial_rates[(size_t)L.test_row[tr] * n + j] = (float)lam[j];
        }
        for (int q = 0; q < cn && !s; q++) {
            int64_t tr = c0 + q;
            const float *img = ws->img + (size_t)q * m->H * m->W;
            for (int i = 0; i < m->H * m->W; i++) hist[(int)img[i]]++;
            char rel[128];
            int64_t ish[3] = {1, m->H, m->W};
            snprintf(rel, sizeof rel, "data/images/%lld.npy", (long long)tr);
            s = put_npy(root, rel, NPRED_DT_F32, 0, 3, ish, img);
            snprintf(rel, sizeof rel, "data/responses/%lld.npy", (long long)tr);
            if (!s) s = put_1d(root, rel, NPRED_DT_F32, n, resp + (size_t)tr * n);
            snprintf(rel, sizeof rel, "data/behavior/%lld.npy", (long long)tr);
            if (!s) s = put_1d(root, rel, NPRED_DT_F32, 3, beh + 3 * tr);
            snprintf(rel, sizeof rel, "data/pupil_center/%lld.npy", (long long)tr);
            if (!s) s = put_1d(root, rel, NPRED_DT_F32, 2, eye + 2 * tr);
        }
        if (!s && progress && progress(user, session, c0 + cn, N))
            s = npred_errorf(NPRED_ERR_INTERRUPTED, "simulate: stopped in session %s", key);
    }
    if (s) goto done;

    /* statistics over all trials (numpy conventions: std ddof 0, median) */
    s = image_stats(root, hist);
    if (!s) s = matrix_stats(root, "responses", resp, (size_t)N, (size_t)n);
    if (!s) s = matrix_stats(root, "behavior", beh, (size_t)N, 3);
    if (!s) s = matrix_stats(root, "pupil_center", eye, (size_t)N, 2);
    if (s) goto done;

    /* ground truth */
    {
        int64_t k = 0;
        for (int64_t t = 0; t < N; t++)
            if (L.test_row[t] >= 0) test_trials[k++] = t;
        for (int i = 0; i < n_img; i++) { /* repeats of image i, ascending file index */
            int q = 0;
            for (int64_t t = 0; t < N && q < reps; t++)
                if (L.tier[t] == 2 && L.image_id[t] == test_ids[i]) groups[(size_t)i * reps + q++] = t;
        }
        if (T) {
            oracle_jackknife(orc_j, resp, n, groups, n_img, reps);
            oracle_rate(orc_r, trial_rates, (size_t)T, n, p);
        }
        const char *g = "meta/ground_truth/";
        char rel[256];
#define GT(file) (snprintf(rel, sizeof rel, "%s%s", g, file), rel)
        s = put_2d(root, GT("rf_grid.npy"), NPRED_DT_F64, n, 2, nr.rf_grid);
        if (!s) s = put_2d(root, GT("rf_pixel.npy"), NPRED_DT_F64, n, 2, nr.rf_pix);
        if (!s) s = put_2d(root, GT("readout_weights.npy"), NPRED_DT_F32, n, N_FEAT, nr.weight);
        if (!s) s = put_1d(root, GT("readout_bias.npy"), NPRED_DT_F64, n, nr.bias);
        if (!s) s = put_1d(root, GT("gain.npy"), NPRED_DT_F64, n, nr.gain);
        if (!s) s = put_1d(root, GT("modulation.npy"), NPRED_DT_F64, n, nr.kappa);
        int64_t fsh[3] = {N_LIN, KMAX, KMAX};
        if (!s) s = put_npy(root, GT("filters.npy"), NPRED_DT_F32, 0, 3, fsh, m->filt);
        if (!s) s = put_1d(root, GT("test_image_ids.npy"), NPRED_DT_I64, n_img, test_ids);
        if (!s) s = put_2d(root, GT("test_image_rates.npy"), NPRED_DT_F32, n_img, n, image_rates);
        if (!s) s = put_1d(root, GT("test_trials.npy"), NPRED_DT_I64, T, test_trials);
        if (!s) s = put_2d(root, GT("test_trial_rates.npy"), NPRED_DT_F32, T, n, trial_rates);
        if (!s) s = put_1d(root, GT("oracle_corr_rate.npy"), NPRED_DT_F64, n, orc_r);
        if (!s) s = put_1d(root, GT("oracle_corr_jackknife.npy"), NPRED_DT_F64, n, orc_j);
#undef GT
        if (!s) s = put_json(root, p, m, &nr, session, key);
    }
    if (!s && p->write_zip) s = npred_tree_write_zip(out_dir, name);
    if (!s && !p->write_tree) s = rm_tree(root);

done:
    free(resp);
    free(beh);
    free(eye);
    free(trial_rates);
    free(image_rates);
    free(test_trials);
    free(groups);
    free(test_ids);
    free(orc_j);
    free(orc_r);
    layout_free(&L);
    neurons_free(&nr);
    return s;
}

npred_status npred_simulate(const npred_sim_params *p, const char *out_dir, npred_sim_progress_fn progress,
                            void *user)
{
    npred_status s = npred_sim_validate(p);
    if (s) return s;
    if (!out_dir || !*out_dir) return npred_errorf(NPRED_ERR_ARG, "simulate: no output directory given");
    if (strlen(out_dir) > 3000) return npred_errorf(NPRED_ERR_ARG, "simulate: output directory name too long");
    struct stat st;
    if (stat(out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return npred_errorf(NPRED_ERR_IO, "%s: exists and is not a directory", out_dir);
        if (!p->force && !dir_is_empty(out_dir))
            return npred_errorf(NPRED_ERR_ARG, "%s: directory is not empty (use --force to replace the sessions in it)",
                                out_dir);
    }
    s = mkdir_p(out_dir);
    if (s) return s;

    gt_model *m = calloc(1, sizeof *m);
    if (!m) return npred_errorf(NPRED_ERR_NOMEM, "simulate: out of memory");
    m->H = p->height;
    m->W = p->width;
    m->f = p->downsample;
    m->h = p->height / p->downsample;
    m->w = p->width / p->downsample;
    build_filters(m);
    workspace ws;
    s = ws_init(&ws, m, p->n_neurons);
    if (!s) s = calibrate(m, &ws, p->seed);
    for (int session = 0; session < p->n_sessions && !s; session++)
        s = simulate_session(p, m, &ws, out_dir, session, progress, user);
    ws_free(&ws);
    free(m);
    return s;
}

/* ---------------------------------------------------------------- convert */

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
            if (!(s = mkdir_p(out))) s = copy_tree(fs, sub, root);
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
    if (!s) s = mkdir_p(built);
    if (!s) s = copy_tree(fs, "", built);
    npred_zipfs_free(fs);
    if (!s && to_zip) {
        s = npred_tree_write_zip(tmp, name);
        if (!s) snprintf(built + strlen(built), sizeof built - strlen(built), ".zip");
    }
    if (!s && rename(built, final_path) != 0)
        s = npred_errorf(NPRED_ERR_IO, "%s: cannot move the converted dataset into place: %s", final_path,
                         strerror(errno));
    npred_status r = rm_tree(tmp);
    return s ? s : r;
}
