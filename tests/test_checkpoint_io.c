/* Checkpoint I/O: the four real SENSORIUM .pth checkpoints, hand-built .pth
 * archives (views, shared storages, byte order, nesting), safetensors round trips,
 * and a corpus of malformed/hostile files built at run time in a temp folder. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "harness.h"
#include "io/pickle.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include "io/tensorfile.h"

#define CKPT_DIR "../shared/checkpoints"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    if (!tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/npred-test-ckpt-XXXXXX", t && *t ? t : "/tmp");
        if (!CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp %s failed", tmpdir)) tmpdir[0] = 0;
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void remove_tmpdir(void)
{
    if (!tmpdir[0]) return;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(tmpdir);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n;
}

/* CHECK that a call failed with status `want` and a message containing `needle`. */
#define CHECK_FAILS(call, want, needle)                                                            \
    do {                                                                                           \
        npred_clear_error();                                                                       \
        npred_status s_ = (call);                                                                  \
        CHECK(s_ == (want), "%s -> %s (%s), expected %s", #call, npred_status_str(s_),             \
              npred_last_error(), npred_status_str(want));                                         \
        CHECK(strstr(npred_last_error(), (needle)) != NULL, "%s: message '%s' lacks '%s'", #call, \
              npred_last_error(), (needle));                                                       \
    } while (0)

/* ---------------------------------------------------------------------------
 * The real SENSORIUM checkpoints */

typedef struct {
    const char *file, *key;
    int n, layers, cin, nkeys, shifter;
    int64_t nbt; /* num_batches_tracked of every BN layer */
} ckpt_info;

/* from ../shared/spec/sensorium.md section 7 */
static const ckpt_info ckpts[] = {
    {"sensorium_sota_model.pth", "26872-17-20", 7776, 4, 1, 39, 0, 1470},
    {"sensorium_ln_model.pth", "26872-17-20", 7776, 3, 1, 31, 0, 1855},
    {"sensorium_p_sota_model.pth", "27204-5-13", 7538, 4, 4, 45, 1, 2765},
    {"sensorium_p_ln_model.pth", "27204-5-13", 7538, 3, 4, 37, 1, 2835},
};

static int have_checkpoints(void)
{
    struct stat st;
    if (stat(CKPT_DIR, &st) == 0 && S_ISDIR(st.st_mode)) return 1;
    th_skip(CKPT_DIR " is absent (real checkpoints are not part of the repository)");
    return 0;
}

static void expect(const npred_tensor_list *l, const char *name, npred_tensor_dtype dt, int ndim,
                   int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    const npred_tensor *t = npred_tensor_list_find(l, name);
    if (!CHECK(t != NULL, "missing key '%s'", name)) return;
    const int64_t want[4] = {d0, d1, d2, d3};
    int ok = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    CHECK(ok, "'%s': dtype %s ndim %d shape (%lld, %lld, %lld, %lld), expected %s ndim %d "
          "(%lld, %lld, %lld, %lld)", name, npred_tensor_dtype_name(t->dtype), t->ndim,
          (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
          (long long)(t->ndim > 2 ? t->shape[2] : 0), (long long)(t->ndim > 3 ? t->shape[3] : 0),
          npred_tensor_dtype_name(dt), ndim, (long long)d0, (long long)d1, (long long)d2,
          (long long)d3);
}

static double fsum(const npred_tensor_list *l, const char *name)
{
    const npred_tensor *t = npred_tensor_list_find(l, name);
    if (!t || t->dtype != NPRED_TENSOR_F32) return NAN;
    double s = 0;
    for (size_t i = 0; i < t->nbytes / 4; i++) s += ((const float *)t->data)[i];
    return s;
}

static void test_sensorium_checkpoints(void)
{
    if (!have_checkpoints()) return;
    for (size_t c = 0; c < sizeof ckpts / sizeof *ckpts; c++) {
        const ckpt_info *ci = &ckpts[c];
        char path[512], k[256];
        snprintf(path, sizeof path, CKPT_DIR "/%s", ci->file);
        npred_tensor_list l;
        if (!CHECK_OK(npred_pth_read(path, &l))) continue;
        CHECK(l.n == (size_t)ci->nkeys, "%s: %zu keys, expected %d", ci->file, l.n, ci->nkeys);
        CHECK(l.n && strcmp(l.items[0].name, "core._input_weights_regularizer.laplace.filter") == 0,
              "%s: first key is '%s' (state_dict order not kept?)", ci->file, l.n ? l.items[0].name : "");
        expect(&l, "core._input_weights_regularizer.laplace.filter", NPRED_TENSOR_F32, 4, 1, 1, 3, 3);
        const npred_tensor *lap = npred_tensor_list_find(&l, "core._input_weights_regularizer.laplace.filter");
        if (lap && lap->nbytes == 36) {
            const float L[9] = {0, -1, 0, -1, 4, -1, 0, -1, 0};
            CHECK(memcmp(lap->data, L, 36) == 0, "%s: Laplace filter values", ci->file);
        }
        expect(&l, "core.features.layer0.conv.weight", NPRED_TENSOR_F32, 4, 64, ci->cin, 9, 9);
        for (int layer = 0; layer < ci->layers; layer++) {
            static const char *const bn[] = {"weight", "bias", "running_mean", "running_var"};
            for (int b = 0; b < 4; b++) {
                snprintf(k, sizeof k, "core.features.layer%d.norm.%s", layer, bn[b]);
                expect(&l, k, NPRED_TENSOR_F32, 1, 64, 0, 0, 0);
            }
            snprintf(k, sizeof k, "core.features.layer%d.norm.num_batches_tracked", layer);
            expect(&l, k, NPRED_TENSOR_I64, 0, 0, 0, 0, 0);
            const npred_tensor *t = npred_tensor_list_find(&l, k);
            if (t && t->nbytes == 8)
                CHECK(*(const int64_t *)t->data == ci->nbt, "%s: %s = %lld, expected %lld", ci->file,
                      k, (long long)*(const int64_t *)t->data, (long long)ci->nbt);
            if (layer == 0) continue;
            snprintf(k, sizeof k, "core.features.layer%d.ds_conv.in_depth_conv.weight", layer);
            expect(&l, k, NPRED_TENSOR_F32, 4, 64, 64, 1, 1);
            snprintf(k, sizeof k, "core.features.layer%d.ds_conv.spatial_conv.weight", layer);
            expect(&l, k, NPRED_TENSOR_F32, 4, 64, 1, 7, 7);
            snprintf(k, sizeof k, "core.features.layer%d.ds_conv.out_depth_conv.weight", layer);
            expect(&l, k, NPRED_TENSOR_F32, 4, 64, 64, 1, 1);
        }
        snprintf(k, sizeof k, "core.features.layer%d.norm.weight", ci->layers);
        CHECK(!npred_tensor_list_find(&l, k), "%s: unexpected layer %d", ci->file, ci->layers);
        const int64_t n = ci->n;
#define RK(suffix) (snprintf(k, sizeof k, "readout.%s.%s", ci->key, suffix), k)
        expect(&l, RK("sigma"), NPRED_TENSOR_F32, 4, 1, n, 2, 2);
        expect(&l, RK("_features"), NPRED_TENSOR_F32, 4, 1, 64, 1, n);
        expect(&l, RK("bias"), NPRED_TENSOR_F32, 1, n, 0, 0, 0);
        expect(&l, RK("source_grid"), NPRED_TENSOR_F32, 2, n, 2, 0, 0);
        expect(&l, RK("mu_transform.0.weight"), NPRED_TENSOR_F32, 2, 30, 2, 0, 0);
        expect(&l, RK("mu_transform.0.bias"), NPRED_TENSOR_F32, 1, 30, 0, 0, 0);
        expect(&l, RK("mu_transform.2.weight"), NPRED_TENSOR_F32, 2, 2, 30, 0, 0);
        expect(&l, RK("mu_transform.2.bias"), NPRED_TENSOR_F32, 1, 2, 0, 0, 0);
        CHECK(!npred_tensor_list_find(&l, RK("_mu")), "%s: a predicted grid has no _mu", ci->file);
        if (ci->shifter) {
            static const int64_t sh[6][2] = {{5, 2}, {5, 0}, {5, 5}, {5, 0}, {2, 5}, {2, 0}};
            for (int m = 0; m < 6; m++) {
                snprintf(k, sizeof k, "shifter.%s.mlp.%d.%s", ci->key, 2 * (m / 2),
                         m % 2 ? "bias" : "weight");
                expect(&l, k, NPRED_TENSOR_F32, m % 2 ? 1 : 2, sh[m][0], sh[m][1], 0, 0);
            }
        }
        /* every float is finite; every tensor but num_batches_tracked is float32 */
        for (size_t i = 0; i < l.n; i++) {
            const npred_tensor *t = &l.items[i];
            if (strstr(t->name, "num_batches_tracked")) continue;
            CHECK(t->dtype == NPRED_TENSOR_F32, "%s: '%s' is %s", ci->file, t->name,
                  npred_tensor_dtype_name(t->dtype));
            int finite = 1;
            for (size_t j = 0; t->dtype == NPRED_TENSOR_F32 && j < t->nbytes / 4; j++)
                finite &= isfinite(((const float *)t->data)[j]);
            CHECK(finite, "%s: '%s' holds NaN/Inf", ci->file, t->name);
        }
        if (c == 0) { /* sanity sums of an independent parse (spec/sensorium.md section 7) */
            double s0 = fsum(&l, "core.features.layer0.conv.weight");
            double sf = fsum(&l, RK("_features"));
            double sb = fsum(&l, RK("bias"));
            CHECK(fabs(s0 - -25.2327) < 1e-3, "layer0 weight sum %.6f", s0);
            CHECK(fabs(sf - -43484.1) < 0.2, "_features sum %.3f", sf);
            CHECK(fabs(sb - -2359.05) < 0.02, "readout bias sum %.4f", sb);
            const npred_tensor *b2 = npred_tensor_list_find(&l, RK("mu_transform.2.bias"));
            if (b2 && b2->nbytes == 8) {
                const float *v = b2->data;
                CHECK(fabsf(v[0] - 0.085738f) < 1e-6f && fabsf(v[1] - -0.084541f) < 1e-6f,
                      "mu_transform.2.bias = [%.6f, %.6f]", v[0], v[1]);
            }
            const npred_tensor *g = npred_tensor_list_find(&l, RK("source_grid"));
            if (g && g->nbytes == (size_t)n * 8) {
                float lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
                for (int64_t i = 0; i < n; i++)
                    for (int d = 0; d < 2; d++) {
                        float x = ((const float *)g->data)[2 * i + d];
                        lo[d] = fminf(lo[d], x);
                        hi[d] = fmaxf(hi[d], x);
                    }
                CHECK(fabsf(lo[0] - -0.972f) < 1e-3f && fabsf(hi[0] - 1.0f) < 1e-3f &&
                      fabsf(lo[1] - -0.981f) < 1e-3f && fabsf(hi[1] - 0.991f) < 1e-3f,
                      "source_grid range x [%f, %f] y [%f, %f]", lo[0], hi[0], lo[1], hi[1]);
            }
        }
        if (c == 2) {
            snprintf(k, sizeof k, "shifter.%s.mlp.4.bias", ci->key);
            const npred_tensor *b4 = npred_tensor_list_find(&l, k);
            if (CHECK(b4 && b4->nbytes == 8, "%s missing", k)) {
                const float *v = b4->data;
                CHECK(fabsf(v[0] - -0.408662f) < 1e-6f && fabsf(v[1] - 0.098520f) < 1e-6f,
                      "shifter mlp.4.bias = [%.6f, %.6f]", v[0], v[1]);
            }
        }
#undef RK
        npred_tensor_list_free(&l);
    }
}

/* The fixture checkpoint_sota_formula holds no raw parameters, but its
 * readout_mu is mu_transform(source_grid) of the real checkpoint: recompute it
 * in double from the loaded tensors (Linear(2,30) -> ELU -> Linear(30,2) -> tanh). */
static void test_fixture_readout_mu(void)
{
    th_case c;
    if (!th_case_open(&c, "checkpoint_sota_formula")) return;
    npred_array shape;
    float *ref = th_load_f32(&c, "readout_mu.npy", &shape);
    if (!have_checkpoints() || !ref) {
        free(ref);
        th_case_close(&c);
        return;
    }
    const char *key = cJSON_GetStringValue(th_get(c.json, "data_key", NULL));
    char path[512], k[4][256];
    snprintf(path, sizeof path, CKPT_DIR "/sensorium_sota_model.pth");
    npred_tensor_list l;
    if (CHECK(key != NULL, "case.json lacks data_key") && CHECK_OK(npred_pth_read(path, &l))) {
        static const char *const sfx[4] = {"source_grid", "mu_transform.0.weight",
                                           "mu_transform.0.bias", "mu_transform.2.weight"};
        const npred_tensor *t[5];
        for (int i = 0; i < 4; i++) {
            snprintf(k[i], sizeof k[i], "readout.%s.%s", key, sfx[i]);
            t[i] = npred_tensor_list_find(&l, k[i]);
        }
        char kb[256];
        snprintf(kb, sizeof kb, "readout.%s.mu_transform.2.bias", key);
        t[4] = npred_tensor_list_find(&l, kb);
        int ok = CHECK(t[0] && t[1] && t[2] && t[3] && t[4], "mu_transform tensors missing");
        int64_t n = ok ? t[0]->shape[0] : 0;
        ok = ok && CHECK(shape.ndim == 2 && shape.shape[0] == n && shape.shape[1] == 2,
                         "fixture readout_mu has %d dims, checkpoint n=%lld", shape.ndim, (long long)n);
        if (ok) {
            const float *g = t[0]->data, *w0 = t[1]->data, *b0 = t[2]->data, *w2 = t[3]->data,
                        *b2 = t[4]->data;
            float *mu = malloc((size_t)n * 2 * sizeof *mu);
            for (int64_t i = 0; i < n; i++) {
                double h[30];
                for (int j = 0; j < 30; j++) {
                    double z = b0[j] + (double)w0[2 * j] * g[2 * i] + (double)w0[2 * j + 1] * g[2 * i + 1];
                    h[j] = z > 0 ? z : expm1(z);
                }
                for (int o = 0; o < 2; o++) {
                    double z = b2[o];
                    for (int j = 0; j < 30; j++) z += (double)w2[30 * o + j] * h[j];
                    mu[2 * i + o] = (float)tanh(z);
                }
            }
            th_compare_dims(&c, "forward", "readout_mu.npy", mu, TH_DIMS(n, 2));
            free(mu);
        }
        npred_tensor_list_free(&l);
    }
    free(ref);
    th_case_close(&c);
}

/* ---------------------------------------------------------------------------
 * A tiny pickle writer, to build .pth archives the way torch.save does */

typedef struct {
    unsigned char b[8192];
    size_t n;
} pk;

static void pk_raw(pk *p, const void *d, size_t n)
{
    if (p->n + n > sizeof p->b) abort(); /* test bug */
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static void pk_op(pk *p, unsigned op)
{
    unsigned char c = (unsigned char)op;
    pk_raw(p, &c, 1);
}
static void pk_str(pk *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    unsigned char h[5] = {'X', (unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    pk_raw(p, h, 5);
    pk_raw(p, s, n);
}
static void pk_int(pk *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    unsigned char h[5] = {'J', (unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                          (unsigned char)(u >> 24)};
    pk_raw(p, h, 5);
}
static void pk_global(pk *p, const char *mod, const char *name)
{
    pk_op(p, 'c');
    pk_raw(p, mod, strlen(mod));
    pk_op(p, '\n');
    pk_raw(p, name, strlen(name));
    pk_op(p, '\n');
}
static void pk_ints(pk *p, int n, const int64_t *v)
{
    pk_op(p, '(');
    for (int i = 0; i < n; i++) pk_int(p, (int32_t)v[i]);
    pk_op(p, 't');
}
/* _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), off, shape, stride, False, OrderedDict()) */
static void pk_tensor_v(pk *p, const char *stype, const char *key, int numel, int off, int nd,
                        const int64_t *shape, int nds, const int64_t *stride)
{
    pk_global(p, "torch._utils", "_rebuild_tensor_v2");
    pk_op(p, '(');
    pk_op(p, '(');
    pk_str(p, "storage");
    pk_global(p, "torch", stype);
    pk_str(p, key);
    pk_str(p, "cpu");
    pk_int(p, numel);
    pk_op(p, 't');
    pk_op(p, 'Q');
    pk_int(p, off);
    pk_ints(p, nd, shape);
    pk_ints(p, nds, stride);
    pk_op(p, 0x89);
    pk_global(p, "collections", "OrderedDict");
    pk_op(p, ')');
    pk_op(p, 'R');
    pk_op(p, 't');
    pk_op(p, 'R');
}
static void pk_tensor(pk *p, const char *stype, const char *key, int numel, int off, int nd,
                      const int64_t *shape, const int64_t *stride)
{
    pk_tensor_v(p, stype, key, numel, off, nd, shape, nd, stride);
}
static void pk_begin_odict(pk *p)
{
    p->n = 0;
    pk_op(p, 0x80);
    pk_op(p, 2);
    pk_global(p, "collections", "OrderedDict");
    pk_op(p, 'q');
    pk_op(p, 0);
    pk_op(p, ')');
    pk_op(p, 'R');
}

typedef struct {
    const char *name;
    const void *data;
    size_t n;
} member;

/* Write a zip holding the given members (stored uncompressed, as torch does). */
static int write_zip(const char *path, const member *m, int nm)
{
    int err = 0;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!z) return 0;
    for (int i = 0; i < nm; i++) {
        zip_source_t *s = zip_source_buffer(z, m[i].data, m[i].n, 0);
        zip_int64_t idx = s ? zip_file_add(z, m[i].name, s, ZIP_FL_OVERWRITE) : -1;
        if (idx < 0) {
            zip_source_free(s);
            zip_discard(z);
            return 0;
        }
        zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
    }
    return zip_close(z) == 0;
}

/* A checkpoint with the tricky cases torch can write: a transposed view, a
 * storage offset, two tensors sharing one storage, a 0-d int64, a parameter,
 * the _metadata attribute, and (optionally) big-endian storages. */
static float st_a[12];  /* storage "0": 12 floats */
static int64_t st_b[1]; /* storage "1" */
static void build_views_pickle(pk *p, int nested)
{
    p->n = 0;
    pk_op(p, 0x80);
    pk_op(p, 2);
    if (nested) { /* {"epoch": 3, "model": state_dict} */
        pk_op(p, '}');
        pk_op(p, '(');
        pk_str(p, "epoch");
        pk_int(p, 3);
        pk_str(p, "model");
    }
    pk_global(p, "collections", "OrderedDict");
    pk_op(p, 'q');
    pk_op(p, 0);
    pk_op(p, ')');
    pk_op(p, 'R');
    pk_op(p, '(');
    /* "full": (3, 4) contiguous */
    pk_str(p, "full");
    pk_tensor(p, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){4, 1});
    /* "t": the transpose (4, 3) of the same storage */
    pk_str(p, "t");
    pk_tensor(p, "FloatStorage", "0", 12, 0, 2, (int64_t[]){4, 3}, (int64_t[]){1, 4});
    /* "row2": elements 8..11 via an offset */
    pk_str(p, "row2");
    pk_tensor(p, "FloatStorage", "0", 12, 8, 1, (int64_t[]){4}, (int64_t[]){1});
    /* "col1": every 4th element from 1 */
    pk_str(p, "col1");
    pk_tensor(p, "FloatStorage", "0", 12, 1, 1, (int64_t[]){3}, (int64_t[]){4});
    /* "count": 0-d int64 */
    pk_str(p, "count");
    pk_tensor(p, "LongStorage", "1", 1, 0, 0, NULL, NULL);
    /* "param": _rebuild_parameter(tensor, True, OrderedDict()) */
    pk_str(p, "param");
    pk_global(p, "torch._utils", "_rebuild_parameter");
    pk_op(p, '(');
    pk_tensor(p, "FloatStorage", "0", 12, 4, 1, (int64_t[]){2}, (int64_t[]){1});
    pk_op(p, 0x88);
    pk_global(p, "collections", "OrderedDict");
    pk_op(p, ')');
    pk_op(p, 'R');
    pk_op(p, 't');
    pk_op(p, 'R');
    /* "empty": (0, 5) */
    pk_str(p, "empty");
    pk_tensor(p, "FloatStorage", "0", 12, 0, 2, (int64_t[]){0, 5}, (int64_t[]){5, 1});
    pk_op(p, 'u');
    /* BUILD with {'_metadata': OrderedDict([('', {'version': 1})])} */
    pk_op(p, '}');
    pk_str(p, "_metadata");
    pk_op(p, 'h');
    pk_op(p, 0);
    pk_op(p, ')');
    pk_op(p, 'R');
    pk_str(p, "");
    pk_op(p, '}');
    pk_str(p, "version");
    pk_op(p, 'K');
    pk_op(p, 1);
    pk_op(p, 's');
    pk_op(p, 's');
    pk_op(p, 's');
    pk_op(p, 'b');
    if (nested) {
        pk_op(p, 'u');
    }
    pk_op(p, '.');
}

static int write_pth(const char *path, const pk *p, const void *a, size_t na, const void *b,
                     size_t nb, const char *byteorder)
{
    member m[5] = {{"arch/data.pkl", p->b, p->n}, {"arch/version", "3\n", 2}};
    int k = 2;
    if (a) m[k++] = (member){"arch/data/0", a, na};
    if (b) m[k++] = (member){"arch/data/1", b, nb};
    if (byteorder) m[k++] = (member){"arch/byteorder", byteorder, strlen(byteorder)};
    return write_zip(path, m, k);
}

static void check_views(const npred_tensor_list *l)
{
    static const char *const names[] = {"full", "t", "row2", "col1", "count", "param", "empty"};
    if (!CHECK(l->n == 7, "%zu tensors, expected 7", l->n)) return;
    for (int i = 0; i < 7; i++)
        CHECK(strcmp(l->items[i].name, names[i]) == 0, "tensor %d is '%s', expected '%s'", i,
              l->items[i].name, names[i]);
    const float *full = l->items[0].data, *t = l->items[1].data, *row2 = l->items[2].data,
                *col1 = l->items[3].data, *param = l->items[5].data;
    int ok = 1;
    for (int i = 0; i < 12; i++) ok &= full[i] == st_a[i];
    CHECK(ok, "full differs");
    ok = 1;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++) ok &= t[r * 3 + c] == st_a[c * 4 + r];
    CHECK(ok && l->items[1].shape[0] == 4 && l->items[1].shape[1] == 3, "transpose differs");
    ok = 1;
    for (int i = 0; i < 4; i++) ok &= row2[i] == st_a[8 + i];
    CHECK(ok, "offset view differs");
    ok = 1;
    for (int i = 0; i < 3; i++) ok &= col1[i] == st_a[1 + 4 * i];
    CHECK(ok, "strided view differs");
    CHECK(l->items[4].dtype == NPRED_TENSOR_I64 && l->items[4].ndim == 0 && l->items[4].nbytes == 8 &&
          *(const int64_t *)l->items[4].data == st_b[0], "0-d int64 differs");
    CHECK(param[0] == st_a[4] && param[1] == st_a[5], "parameter differs");
    CHECK(l->items[6].nbytes == 0 && l->items[6].ndim == 2 && l->items[6].shape[1] == 5,
          "empty tensor");
}

static void test_pth_views(void)
{
    for (int i = 0; i < 12; i++) st_a[i] = 0.5f * (float)i - 1.25f;
    st_b[0] = -1234567890123LL;
    pk p;
    const char *path = tmp_path("views.pth");
    npred_tensor_list l;
    build_views_pickle(&p, 0);
    if (CHECK(write_pth(path, &p, st_a, sizeof st_a, st_b, sizeof st_b, "little"), "write zip") &&
        CHECK_OK(npred_pth_read(path, &l))) {
        check_views(&l);
        npred_tensor_list_free(&l);
    }
    /* nested {"epoch": 3, "model": state_dict}, no byteorder member */
    build_views_pickle(&p, 1);
    if (CHECK(write_pth(path, &p, st_a, sizeof st_a, st_b, sizeof st_b, NULL), "write zip") &&
        CHECK_OK(npred_pth_read(path, &l))) {
        check_views(&l);
        npred_tensor_list_free(&l);
    }
    /* big-endian storages are converted */
    float be_a[12];
    int64_t be_b[1];
    memcpy(be_a, st_a, sizeof be_a);
    memcpy(be_b, st_b, sizeof be_b);
    npred_bswap_elems(be_a, 12, 4);
    npred_bswap_elems(be_b, 1, 8);
    build_views_pickle(&p, 0);
    if (CHECK(write_pth(path, &p, be_a, sizeof be_a, be_b, sizeof be_b, "big"), "write zip") &&
        CHECK_OK(npred_pth_read(path, &l))) {
        check_views(&l);
        npred_tensor_list_free(&l);
    }
}

/* ---------------------------------------------------------------------------
 * Hostile pickles and .pth archives */

static npred_status load_pickle(const pk *p)
{
    npred_pickle *x = NULL;
    npred_status s = npred_pickle_load(p->b, p->n, "test.pkl", &x);
    npred_pickle_free(x);
    return s;
}

static void test_pickle_hostile(void)
{
    pk p;
    /* disallowed globals */
    static const char *const bad[][2] = {{"os", "system"}, {"posix", "system"}, {"builtins", "eval"},
                                         {"torch.storage", "_load_from_bytes"},
                                         {"collections", "OrderedDictX"}};
    for (int i = 0; i < 5; i++) {
        char want[128];
        p.n = 0;
        pk_op(&p, 0x80);
        pk_op(&p, 2);
        pk_global(&p, bad[i][0], bad[i][1]);
        pk_str(&p, "echo pwned");
        pk_op(&p, 0x85);
        pk_op(&p, 'R');
        pk_op(&p, '.');
        snprintf(want, sizeof want, "global '%s.%s' is not allowed", bad[i][0], bad[i][1]);
        CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, want);
    }
    /* STACK_GLOBAL is checked the same way */
    p.n = 0;
    pk_op(&p, 0x80);
    pk_op(&p, 4);
    pk_str(&p, "builtins");
    pk_str(&p, "exec");
    pk_op(&p, 0x93);
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "global 'builtins.exec' is not allowed");
    /* opcodes outside the whitelist, named in the message */
    static const struct {
        unsigned char op;
        const char *name;
    } ops[] = {{'i', "INST"}, {'o', "OBJ"}, {0x81, "NEWOBJ"}, {'P', "PERSID"}, {'S', "STRING"},
               {0x82, "EXT1"}, {0xff, "0xff"}};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        p.n = 0;
        pk_op(&p, 0x80);
        pk_op(&p, 2);
        pk_op(&p, ops[i].op);
        pk_op(&p, '.');
        CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, ops[i].name);
        CHECK(strstr(npred_last_error(), "test.pkl: byte 2"), "offset missing: %s", npred_last_error());
    }
    /* truncations of a valid pickle at every length never crash, always fail */
    build_views_pickle(&p, 0);
    CHECK_OK(load_pickle(&p));
    pk q;
    int all = 1;
    for (size_t n = 0; n < p.n; n++) {
        memcpy(q.b, p.b, n);
        q.n = n;
        npred_clear_error();
        if (load_pickle(&q) != NPRED_ERR_FORMAT || !strstr(npred_last_error(), "truncated")) {
            /* a cut that lands right before STOP leaves a complete expression
             * but no STOP: that must still say truncated */
            all = 0;
            CHECK(0, "truncated at %zu: %s", n, npred_last_error());
            break;
        }
    }
    CHECK(all, "truncations");
    /* other malformations */
    p.n = 0;
    pk_op(&p, 'h');
    pk_op(&p, 7);
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "memo index 7 was never stored");
    p.n = 0;
    pk_op(&p, ')');
    pk_raw(&p, "r\xff\xff\xff\xff", 5);
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "memo index 4294967295 out of range");
    p.n = 0;
    pk_op(&p, 'R');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "stack underflow");
    p.n = 0;
    pk_op(&p, ')');
    pk_op(&p, ')');
    pk_op(&p, 'R');
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "cannot call a tuple");
    p.n = 0;
    pk_global(&p, "torch", "FloatStorage");
    pk_op(&p, ')');
    pk_op(&p, 'R');
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "torch.FloatStorage cannot be called");
    p.n = 0;
    pk_raw(&p, "\x8a\x09", 2);
    pk_raw(&p, "123456789", 9);
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_UNSUPPORTED, "too large");
    p.n = 0;
    pk_raw(&p, "X\xff\xff\xff\x7f" "abc", 8);
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "truncated pickle");
    p.n = 0;
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, 'u'); /* SETITEMS without a MARK */
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "no MARK");
    /* a tensor whose size and stride tuples differ in length */
    p.n = 0;
    pk_tensor_v(&p, "FloatStorage", "0", 4, 0, 2, (int64_t[]){2, 2}, 1, (int64_t[]){1});
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "size has 2 dims, stride 1");
    /* a storage persistent id of the wrong shape */
    p.n = 0;
    pk_op(&p, '(');
    pk_str(&p, "storage");
    pk_op(&p, 't');
    pk_op(&p, 'Q');
    pk_op(&p, '.');
    CHECK_FAILS(load_pickle(&p), NPRED_ERR_FORMAT, "persistent id is a tuple of 1 items");
}

static void test_pth_hostile(void)
{
    pk p;
    npred_tensor_list l;
    char want[600];
    const char *path = tmp_path("bad.pth");
    float a[12] = {0};
    int64_t b[1] = {0};

    /* not a zip */
    const char *txt = "this is not a zip archive, just text\n";
    write_file(path, txt, strlen(txt));
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "not a zip archive");
    CHECK(strstr(npred_last_error(), path) != NULL, "message lacks the file name: %s", npred_last_error());
    npred_tensor_list_free(&l);
    /* empty file, missing file */
    write_file(path, "", 0);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, path);
    CHECK_FAILS(npred_pth_read(tmp_path("nonexistent.pth"), &l), NPRED_ERR_IO, "cannot open");
    /* a legacy bare-pickle checkpoint */
    build_views_pickle(&p, 0);
    write_file(path, p.b, p.n);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_UNSUPPORTED, "legacy");
    /* a zip without data.pkl */
    member m1[1] = {{"arch/version", "3\n", 2}};
    write_zip(path, m1, 1);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "data.pkl");
    /* missing storage member */
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "storage member 'arch/data/1' of tensor 'count' is missing");
    /* a storage shorter than its header says */
    write_pth(path, &p, a, sizeof a - 4, b, sizeof b, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "holds 44 bytes, expected 48");
    CHECK(strstr(npred_last_error(), "tensor 'full'"), "no tensor name: %s", npred_last_error());
    /* bad byteorder */
    write_pth(path, &p, a, sizeof a, b, sizeof b, "middle");
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "neither 'little' nor 'big'");
    /* a view past the end of its storage */
    pk_begin_odict(&p);
    pk_str(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 12, 10, 1, (int64_t[]){3}, (int64_t[]){1});
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "reaches past the end of its storage");
    /* huge strides do not overflow the range check */
    pk_begin_odict(&p);
    pk_str(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 12, 0, 3, (int64_t[]){3, 3, 3},
              (int64_t[]){2147483647, 2147483647, 2147483647});
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "reaches past the end");
    /* an expanded (stride 0) view overlaps */
    pk_begin_odict(&p);
    pk_str(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){0, 1});
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "overlapping elements");
    /* rows overlapping by one element */
    pk_begin_odict(&p);
    pk_str(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 12, 0, 2, (int64_t[]){3, 4}, (int64_t[]){3, 1});
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "overlapping elements");
    /* a disallowed global inside the archive: the message names file and global */
    p.n = 0;
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_global(&p, "posix", "system");
    pk_str(&p, "rm -rf /");
    pk_op(&p, 0x85);
    pk_op(&p, 'R');
    pk_op(&p, '.');
    write_pth(path, &p, NULL, 0, NULL, 0, NULL);
    snprintf(want, sizeof want, "%s:arch/data.pkl: byte 2, opcode GLOBAL: global 'posix.system' is not allowed", path);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, want);
    /* not a state_dict */
    p.n = 0;
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, ']');
    pk_op(&p, '.');
    write_pth(path, &p, NULL, 0, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "holds a list, expected a state_dict");
    pk_begin_odict(&p);
    pk_str(&p, "lr");
    pk_raw(&p, "G\x3f\x50\x62\x4d\xd2\xf1\xa9\xfc", 9);
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, NULL, 0, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "key 'lr' holds a float, not a tensor");
    /* duplicate names */
    pk_begin_odict(&p);
    for (int i = 0; i < 2; i++) {
        pk_str(&p, "w");
        pk_tensor(&p, "FloatStorage", "0", 12, 0, 1, (int64_t[]){2}, (int64_t[]){1});
        pk_op(&p, 's');
    }
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "duplicate tensor name 'w'");
    /* one storage used with two dtypes */
    pk_begin_odict(&p);
    pk_str(&p, "w");
    pk_tensor(&p, "FloatStorage", "0", 12, 0, 1, (int64_t[]){2}, (int64_t[]){1});
    pk_op(&p, 's');
    pk_str(&p, "v");
    pk_tensor(&p, "IntStorage", "0", 12, 0, 1, (int64_t[]){2}, (int64_t[]){1});
    pk_op(&p, 's');
    pk_op(&p, '.');
    write_pth(path, &p, a, sizeof a, NULL, 0, NULL);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "storage '0' is used as both");
    /* a corrupted zip (flipped bytes inside the stored storage data) */
    build_views_pickle(&p, 0);
    write_pth(path, &p, st_a, sizeof st_a, st_b, sizeof st_b, NULL);
    FILE *f = fopen(path, "rb");
    unsigned char img[16384];
    size_t n = f ? fread(img, 1, sizeof img, f) : 0;
    if (f) fclose(f);
    int corrupted = 0;
    for (size_t i = 0; i + sizeof st_a <= n; i++)
        if (memcmp(img + i, st_a, sizeof st_a) == 0) {
            img[i + 5] ^= 0x40;
            corrupted = 1;
            break;
        }
    CHECK(corrupted, "storage bytes not found in the zip");
    write_file(path, img, n);
    CHECK_FAILS(npred_pth_read(path, &l), NPRED_ERR_FORMAT, "arch/data/0");
    /* every truncation of a valid archive fails cleanly */
    write_pth(path, &p, st_a, sizeof st_a, st_b, sizeof st_b, NULL);
    f = fopen(path, "rb");
    n = f ? fread(img, 1, sizeof img, f) : 0;
    if (f) fclose(f);
    int bad = 0;
    for (size_t k = 0; k < n; k += 7) {
        if (npred_pth_parse(img, k, "cut.pth", &l) == NPRED_OK) bad++;
        npred_tensor_list_free(&l);
    }
    CHECK(bad == 0, "%d truncated archives were accepted", bad);
    CHECK_OK(npred_pth_parse(img, n, "whole.pth", &l));
    npred_tensor_list_free(&l);
}

/* ---------------------------------------------------------------------------
 * safetensors */

static void fill(npred_tensor *t, unsigned seed)
{
    unsigned char *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++) p[i] = (unsigned char)(i * 29 + seed * 7 + 3);
    if (t->dtype == NPRED_TENSOR_BOOL)
        for (size_t i = 0; i < t->nbytes; i++) p[i] &= 1;
}

static void test_safetensors_roundtrip(void)
{
    npred_tensor_list l, r;
    npred_tensor_list_init(&l);
    unsigned seed = 0;
    for (int dt = 0; dt < NPRED_TENSOR_NDTYPE; dt++) {
        static const struct {
            int nd;
            int64_t sh[3];
        } shapes[] = {{0, {0}}, {1, {7}}, {3, {2, 3, 5}}, {2, {0, 4}}, {1, {0}}};
        for (int s = 0; s < 5; s++) {
            char name[64];
            npred_tensor *t;
            snprintf(name, sizeof name, "%s.shape%d", npred_tensor_dtype_name((npred_tensor_dtype)dt), s);
            if (!CHECK_OK(npred_tensor_list_add(&l, name, (npred_tensor_dtype)dt, shapes[s].nd,
                                                shapes[s].sh, NULL, &t)))
                continue;
            fill(t, seed++);
        }
    }
    const float one = 1.5f;
    CHECK_OK(npred_tensor_list_add(&l, "odd \"name\"\\ with\ttab and \xc3\xa9", NPRED_TENSOR_F32, 0,
                                   NULL, &one, NULL));
    const char *config = "{\"core\": {\"layers\": 4, \"name\": \"a \\\"b\\\"\"},\n\t\"x\": [1, 2]}";
    CHECK_OK(npred_tensor_list_set_meta(&l, "npred_config", config));
    CHECK_OK(npred_tensor_list_set_meta(&l, "format", "pt"));
    CHECK_OK(npred_tensor_list_set_meta(&l, "format", "npred")); /* replaced */
    const char *path = tmp_path("model.safetensors");
    write_file(path, "old contents", 12); /* replaced atomically */
    if (CHECK_OK(npred_safetensors_write(path, &l)) && CHECK_OK(npred_safetensors_read(path, &r))) {
        CHECK(r.n == l.n, "%zu tensors read, %zu written", r.n, l.n);
        for (size_t i = 0; i < l.n && i < r.n; i++) {
            const npred_tensor *a = &l.items[i], *b = &r.items[i];
            int ok = strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->ndim == b->ndim &&
                     a->nbytes == b->nbytes && (!a->nbytes || memcmp(a->data, b->data, a->nbytes) == 0);
            for (int d = 0; ok && d < a->ndim; d++) ok = a->shape[d] == b->shape[d];
            CHECK(ok, "tensor %zu ('%s') differs after the round trip", i, a->name);
        }
        const char *cfg = npred_tensor_list_get_meta(&r, "npred_config");
        CHECK(cfg && strcmp(cfg, config) == 0, "npred_config metadata: '%s'", cfg ? cfg : "(none)");
        const char *fmt = npred_tensor_list_get_meta(&r, "format");
        CHECK(fmt && strcmp(fmt, "npred") == 0 && r.n_meta == 2, "format metadata");
        npred_tensor_list_free(&r);
    }
    /* header padded so the buffer is 8-byte aligned; no temp files left */
    void *img;
    size_t n;
    if (CHECK_OK(npred_safetensors_serialize(&l, &img, &n))) {
        uint64_t h = 0;
        for (int k = 7; k >= 0; k--) h = (h << 8) | ((unsigned char *)img)[k];
        CHECK(h % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)h);
        free(img);
    }
    DIR *d = opendir(tmpdir);
    int stray = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) stray++;
    if (d) closedir(d);
    CHECK(stray == 0, "%d temporary files left behind", stray);
    /* an empty list */
    npred_tensor_list e;
    npred_tensor_list_init(&e);
    if (CHECK_OK(npred_safetensors_write(path, &e)) && CHECK_OK(npred_safetensors_read(path, &r))) {
        CHECK(r.n == 0 && r.n_meta == 0, "empty list round trip");
        npred_tensor_list_free(&r);
    }
    /* the writer rejects what it could not read back */
    npred_tensor_list_add(&e, "a", NPRED_TENSOR_F32, 0, NULL, &one, NULL);
    npred_tensor_list_add(&e, "a", NPRED_TENSOR_F32, 0, NULL, &one, NULL);
    CHECK_FAILS(npred_safetensors_write(path, &e), NPRED_ERR_FORMAT, "duplicate tensor name 'a'");
    npred_tensor_list_free(&e);
    npred_tensor_list_add(&e, "__metadata__", NPRED_TENSOR_F32, 0, NULL, &one, NULL);
    CHECK_FAILS(npred_safetensors_write(path, &e), NPRED_ERR_ARG, "invalid name");
    npred_tensor_list_free(&e);
    CHECK_FAILS(npred_safetensors_write(tmp_path("no/such/dir/x.safetensors"), &l), NPRED_ERR_IO,
                "temporary file");
    npred_tensor_list_free(&l);
}

/* a safetensors file with the given header text and `ndata` data bytes */
static const char *mk_st(const char *name, const char *header, size_t ndata)
{
    const char *path = tmp_path(name);
    size_t h = strlen(header);
    unsigned char *b = calloc(1, 8 + h + ndata);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)h >> (8 * k));
    memcpy(b + 8, header, h);
    write_file(path, b, 8 + h + ndata);
    free(b);
    return path;
}

static void test_safetensors_hostile(void)
{
    npred_tensor_list l;
    const char *p;
    /* a valid hand-written file, as other writers produce it */
    p = mk_st("ok.st", "{\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"__metadata__\":{\"k\":\"v\"}}   ", 16);
    if (CHECK_OK(npred_safetensors_read(p, &l))) {
        CHECK(l.n == 2 && strcmp(l.items[0].name, "b") == 0 && l.items[0].ndim == 0, "header order");
        npred_tensor_list_free(&l);
    }
    /* truncations of a real file at every length */
    npred_tensor_list src;
    npred_tensor_list_init(&src);
    const int64_t sh[2] = {3, 2};
    const double dd[6] = {1, 2, 3, 4, 5, 6};
    npred_tensor_list_add(&src, "w", NPRED_TENSOR_F64, 2, sh, dd, NULL);
    npred_tensor_list_set_meta(&src, "npred_config", "{}");
    void *img;
    size_t n;
    if (CHECK_OK(npred_safetensors_serialize(&src, &img, &n))) {
        int bad = 0;
        for (size_t k = 0; k < n; k++) {
            npred_status s = npred_safetensors_parse(img, k, "cut.safetensors", &l);
            if (s != NPRED_ERR_FORMAT || !strstr(npred_last_error(), "cut.safetensors")) bad++;
            npred_tensor_list_free(&l);
        }
        CHECK(bad == 0, "%d truncations not rejected with a format error", bad);
        write_file(tmp_path("trunc.st"), img, n - 3);
        CHECK_FAILS(npred_safetensors_read(tmp_path("trunc.st"), &l), NPRED_ERR_FORMAT,
                    "outside the 45-byte data buffer");
        free(img);
    }
    npred_tensor_list_free(&src);
    write_file(tmp_path("short.st"), "\x10\0\0", 3);
    CHECK_FAILS(npred_safetensors_read(tmp_path("short.st"), &l), NPRED_ERR_FORMAT, "too short");
    /* header length beyond the file */
    p = tmp_path("hlen.st");
    write_file(p, "\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "exceeds the file size");
    CHECK(strstr(npred_last_error(), p) != NULL, "message lacks the path: %s", npred_last_error());
    /* overlapping offsets */
    p = mk_st("overlap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "tensors 'a' and 'b' overlap");
    /* a gap, uncovered trailing bytes */
    p = mk_st("gap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "bytes 0..4 of the data buffer belong to no tensor");
    p = mk_st("tail.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "cover only 4");
    /* bad dtypes */
    p = mk_st("dtype.st", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "unknown dtype 'F33'");
    CHECK(strstr(npred_last_error(), "tensor 'a'"), "no tensor name: %s", npred_last_error());
    p = mk_st("u16.st", "{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_UNSUPPORTED, "dtype 'U16' is not supported");
    p = mk_st("dtype2.st", "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "non-string \"dtype\"");
    /* bytes that do not match dtype x shape */
    p = mk_st("size.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "need 8");
    p = mk_st("huge.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],"
              "\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "need more than");
    p = mk_st("neg.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "shape[0] is not a non-negative integer");
    p = mk_st("frac.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "shape[0]");
    p = mk_st("rev.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "outside the 4-byte data buffer");
    p = mk_st("off3.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "data_offsets");
    p = mk_st("dims.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_UNSUPPORTED, "9 dimensions");
    /* bad JSON, wrong structure */
    p = mk_st("json.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "not valid JSON");
    p = mk_st("json2.st", "{\"a\": nul}", 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "not valid JSON");
    p = mk_st("trail.st", "{}xx", 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "unexpected bytes after the JSON header");
    p = mk_st("arr.st", "[1, 2]", 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "does not start with '{'");
    p = mk_st("entry.st", "{\"a\": 5}", 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "header entry 'a' is not an object");
    p = mk_st("meta.st", "{\"__metadata__\":{\"k\":3}}", 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "metadata 'k' is not a string");
    p = mk_st("dup.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "duplicate tensor name 'a'");
    char deep[3000];
    memset(deep, '[', sizeof deep - 1);
    deep[0] = '{';
    deep[1] = '"';
    deep[2] = 'a';
    deep[3] = '"';
    deep[4] = ':';
    deep[sizeof deep - 1] = 0;
    p = mk_st("deep.st", deep, 0);
    CHECK_FAILS(npred_safetensors_read(p, &l), NPRED_ERR_FORMAT, "not valid JSON");
    CHECK_FAILS(npred_safetensors_read(tmp_path("missing.st"), &l), NPRED_ERR_IO, "cannot open");
}

int main(void)
{
    RUN(test_sensorium_checkpoints);
    RUN(test_fixture_readout_mu);
    RUN(test_pth_views);
    RUN(test_pickle_hostile);
    RUN(test_pth_hostile);
    RUN(test_safetensors_roundtrip);
    RUN(test_safetensors_hostile);
    remove_tmpdir();
    return th_summary();
}
