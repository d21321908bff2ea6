/* Loader benchmark: a SENSORIUM-sized session (6,000 trials, 1x144x256 images,
 * 8,000 neurons, behavior, pupil_center) written as a STORE zip into a temp
 * folder, then opened in place (every trial read; the images kept as the
 * batches carry them) and batched whole, in batches of 128, at scale 1 and 0.25 (normalize, behavior as
 * channels, eye position). Prints trials/s and peak memory. Timings are noisy
 * on a shared 2-core machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "npred/data.h"
#include "bench_check.h"

enum { NT = 6000, C = 1, H = 144, W = 256, NN = 8000, BS = 128 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

/* add one array as a STORE member */
static int add(zip_t *z, const char *name, npred_dtype dt, size_t itemsize, int ndim, const int64_t *shape,
               const void *data)
{
    npred_array a;
    if (npred_array_alloc(&a, dt, itemsize, ndim, shape)) return -1;
    memcpy(a.data, data, a.count * a.itemsize);
    void *buf;
    size_t len;
    npred_status s = npred_npy_serialize(&a, &buf, &len);
    npred_array_free(&a);
    if (s) return -1;
    zip_source_t *src = zip_source_buffer(z, buf, len, 1);
    if (!src) return -1;
    zip_int64_t i = zip_file_add(z, name, src, ZIP_FL_OVERWRITE);
    if (i < 0) return -1;
    return zip_set_file_compression(z, (zip_uint64_t)i, ZIP_CM_STORE, 0);
}

static int write_session(const char *path, const char *top)
{
    int err;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!z) return -1;
    char name[512];
    uint32_t seed = 12345;
    int64_t ish[3] = {C, H, W}, rsh[1] = {NN}, bsh[1] = {3}, esh[1] = {2}, nsh[1] = {NT}, ush[1] = {NN};
    float *img = malloc(sizeof(float) * C * H * W), *r = malloc(sizeof(float) * NN);
    int rc = 0;
    for (int t = 0; t < NT && !rc; t++) {
        for (int p = 0; p < C * H * W; p++) img[p] = (float)(lcg(&seed) >> 24);
        for (int j = 0; j < NN; j++) r[j] = (float)(lcg(&seed) >> 20) * 0.01f;
        float b[3] = {(float)t, 1.0f, 2.0f}, e[2] = {0.5f, -0.5f};
        snprintf(name, sizeof name, "%s/data/images/%d.npy", top, t);
        rc |= add(z, name, NPRED_DT_F32, 4, 3, ish, img);
        snprintf(name, sizeof name, "%s/data/responses/%d.npy", top, t);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, rsh, r);
        snprintf(name, sizeof name, "%s/data/behavior/%d.npy", top, t);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, bsh, b);
        snprintf(name, sizeof name, "%s/data/pupil_center/%d.npy", top, t);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, esh, e);
    }
    free(img);
    /* meta */
    const char *tn[4] = {"train", "validation", "test", "final_test"};
    npred_array tiers;
    BENCH_OK(npred_array_alloc(&tiers, NPRED_DT_STR_U, 40, 1, nsh));
    int64_t *ids = malloc(sizeof(int64_t) * NT);
    for (int t = 0; t < NT; t++) {
        const char *s = tn[t % 10 < 7 ? 0 : t % 10 == 7 ? 1 : 2];
        uint32_t *q = (uint32_t *)((char *)tiers.data + (size_t)t * 40);
        for (int k = 0; s[k]; k++) q[k] = (unsigned char)s[k];
        ids[t] = t;
    }
    snprintf(name, sizeof name, "%s/meta/trials/tiers.npy", top);
    rc |= add(z, name, NPRED_DT_STR_U, 40, 1, nsh, tiers.data);
    npred_array_free(&tiers);
    snprintf(name, sizeof name, "%s/meta/trials/frame_image_id.npy", top);
    rc |= add(z, name, NPRED_DT_I64, 8, 1, nsh, ids);
    snprintf(name, sizeof name, "%s/meta/trials/frame_image_class.npy", top);
    rc |= add(z, name, NPRED_DT_I64, 8, 1, nsh, ids);
    free(ids);
    int64_t *uid = malloc(sizeof(int64_t) * NN);
    for (int j = 0; j < NN; j++) uid[j] = j + 1;
    snprintf(name, sizeof name, "%s/meta/neurons/unit_ids.npy", top);
    rc |= add(z, name, NPRED_DT_I64, 8, 1, ush, uid);
    snprintf(name, sizeof name, "%s/meta/neurons/area.npy", top);
    rc |= add(z, name, NPRED_DT_I64, 8, 1, ush, uid);
    free(uid);
    const char *stats[2] = {"mean", "std"};
    for (int k = 0; k < 2; k++) {
        float v = k ? 73.0f : 127.0f, bv[3] = {1, 1, 1}, ev[2] = {1, 1};
        for (int j = 0; j < NN; j++) r[j] = k ? 1.0f + (float)(j % 7) : 0.5f;
        snprintf(name, sizeof name, "%s/meta/statistics/images/all/%s.npy", top, stats[k]);
        rc |= add(z, name, NPRED_DT_F32, 4, 0, NULL, &v);
        snprintf(name, sizeof name, "%s/meta/statistics/responses/all/%s.npy", top, stats[k]);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, rsh, r);
        snprintf(name, sizeof name, "%s/meta/statistics/behavior/all/%s.npy", top, stats[k]);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, bsh, bv);
        snprintf(name, sizeof name, "%s/meta/statistics/pupil_center/all/%s.npy", top, stats[k]);
        rc |= add(z, name, NPRED_DT_F32, 4, 1, esh, ev);
    }
    free(r);
    if (zip_close(z) != 0) {
        zip_discard(z);
        return -1;
    }
    return rc;
}

static int run_scale(const char *zip, double scale)
{
    npred_loader_config c;
    npred_loader_config_init(&c);
    char json[256];
    snprintf(json, sizeof json,
             "{\"batch_size\": %d, \"scale\": %g, \"include_behavior\": true, \"include_eye_position\": true}", BS, scale);
    npred_loaders *L = NULL;
    double t0 = now();
    npred_status s = npred_loader_config_parse(&c, json, NULL, NULL);
    if (!s) s = npred_loaders_open(&L, &zip, 1, &c);
    npred_loader_config_free(&c);
    if (s) {
        fprintf(stderr, "bench_loader: %s\n", npred_last_error());
        return 1;
    }
    double t_open = now() - t0;
    npred_batch b;
    if (npred_batch_init(&b, L, 0)) {
        npred_loaders_free(L);
        return 1;
    }
    int64_t *all = malloc(sizeof(int64_t) * NT);
    for (int t = 0; t < NT; t++) all[t] = t;
    t0 = now();
    double checksum = 0;
    for (int t = 0; t < NT; t += BS) {
        int n = NT - t < BS ? NT - t : BS;
        if (npred_loaders_get(L, 0, all + t, n, &b)) break;
        checksum += b.images[0] + b.responses[0];
    }
    double t_tf = now() - t0;
    printf("scale %-4g open+cache %6.2f s (%7.0f trials/s) | transform %6.2f s (%7.0f trials/s) | batch (%d,%d,%d,%d) | chk %.3g\n",
           scale, t_open, NT / t_open, t_tf, NT / t_tf, BS, b.c, b.h, b.w, checksum);
    free(all);
    npred_batch_free(&b);
    npred_loaders_free(L);
    return 0;
}

int main(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/npred_bench_loader_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_loader: cannot create a temp folder\n");
        return 1;
    }
    const char *top = "static99999-1-1-GrayImageNet-bench";
    char zip[1024];
    snprintf(zip, sizeof zip, "%s/%s.zip", dir, top);
    double t0 = now();
    if (write_session(zip, top)) {
        fprintf(stderr, "bench_loader: cannot write %s\n", zip);
        return 1;
    }
    printf("bench_loader: %d trials, images %dx%dx%d, %d neurons; zip written in %.1f s (not timed below)\n", NT, C, H, W,
           NN, now() - t0);
    int rc = run_scale(zip, 1.0);
    if (!rc) rc = run_scale(zip, 0.25);
    printf("peak memory (max RSS) %.0f MiB; data kept per session at scale 1 %.0f MiB (at scale 0.25 the images\n"
           "take 1/16 of theirs: the loaders keep the images as the batches carry them)\n",
           peak_mib(), (double)NT * (C * H * W + NN + 5) * 4.0 / (1024.0 * 1024.0));
    unlink(zip);
    rmdir(dir);
    return rc;
}
