/* npy reader/writer: round trips of every dtype, byte orders, versions, strings,
 * reading fixture files, and a corpus of malformed files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "npred/npy.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
    if (tmpdir[0]) return;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/npred-test-npy-XXXXXX");
    if (!CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp %s failed", tmpdir)) tmpdir[0] = 0;
}

static void fill_pattern(npred_array *a)
{
    unsigned char *p = a->data;
    size_t n = a->count * a->itemsize;
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 37 + 11);
    if (a->dtype == NPRED_DT_BOOL)
        for (size_t i = 0; i < a->count; i++) p[i] &= 1;
    if (a->dtype == NPRED_DT_F16) /* keep halves finite: clear exponent top bit */
        for (size_t i = 0; i < a->count; i++) ((uint16_t *)a->data)[i] &= 0xbfff;
    if (a->dtype == NPRED_DT_STR_U) /* valid code points */
        for (size_t i = 0; i < a->count * a->itemsize / 4; i++) ((uint32_t *)a->data)[i] = 0x41 + (uint32_t)(i % 900);
}

static void test_roundtrip_all_dtypes(void)
{
    make_tmpdir();
    const npred_dtype dts[] = {NPRED_DT_BOOL, NPRED_DT_I8, NPRED_DT_I16, NPRED_DT_I32, NPRED_DT_I64,
                               NPRED_DT_U8, NPRED_DT_U16, NPRED_DT_U32, NPRED_DT_U64, NPRED_DT_F16,
                               NPRED_DT_F32, NPRED_DT_F64, NPRED_DT_STR_U, NPRED_DT_STR_S};
    const int64_t shapes[][3] = {{0, 0, 0}, {7, 0, 0}, {3, 5, 0}, {2, 3, 4}, {0, 4, 0}};
    const int ndims[] = {0, 1, 2, 3, 2};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
        for (size_t s = 0; s < 5; s++) {
            npred_array a, b;
            size_t isz = dts[d] == NPRED_DT_STR_U ? 4 * 6 : dts[d] == NPRED_DT_STR_S ? 5 : 0;
            if (!CHECK_OK(npred_array_alloc(&a, dts[d], isz, ndims[s], shapes[s]))) continue;
            fill_pattern(&a);
            char path[512], descr[32];
            npred_dtype_descr(dts[d], a.itemsize, descr, sizeof descr);
            snprintf(path, sizeof path, "%s/rt_%zu_%zu.npy", tmpdir, d, s);
            CHECK_OK(npred_npy_write(path, &a));
            if (CHECK_OK(npred_npy_read(path, &b))) {
                CHECK(b.dtype == a.dtype && b.ndim == a.ndim && b.itemsize == a.itemsize && b.count == a.count,
                      "%s shape %zu: header differs after round trip", descr, s);
                for (int i = 0; i < a.ndim && i < b.ndim; i++) CHECK(a.shape[i] == b.shape[i], "dim %d", i);
                CHECK(b.count == a.count && !memcmp(a.data, b.data, a.count * a.itemsize), "%s: data differs", descr);
                npred_array_free(&b);
            }
            /* the header is padded to a multiple of 64 bytes and ends with '\n' */
            void *buf;
            size_t len;
            if (CHECK_OK(npred_npy_serialize(&a, &buf, &len))) {
                size_t hl = ((unsigned char *)buf)[8] | (((unsigned char *)buf)[9] << 8);
                CHECK((10 + hl) % 64 == 0, "header length %zu not aligned", hl);
                CHECK(((char *)buf)[10 + hl - 1] == '\n', "header does not end in newline");
                free(buf);
            }
            npred_array_free(&a);
        }
}

/* write raw bytes to a temp file and return its path */
static const char *raw_file(const char *name, const void *data, size_t len)
{
    static char path[512];
    make_tmpdir();
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fwrite(data, 1, len, f);
    fclose(f);
    return path;
}

/* build an npy image with an arbitrary header, version and payload */
static size_t build(unsigned char *out, int version, const char *header, const void *payload, size_t plen)
{
    size_t pre = version == 1 ? 10 : 12, hl = strlen(header);
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)version;
    out[7] = 0;
    out[8] = hl & 0xff;
    out[9] = (hl >> 8) & 0xff;
    if (version != 1) {
        out[10] = (hl >> 16) & 0xff;
        out[11] = (hl >> 24) & 0xff;
    }
    memcpy(out + pre, header, hl);
    memcpy(out + pre + hl, payload, plen);
    return pre + hl + plen;
}

static void test_big_endian_and_versions(void)
{
    unsigned char buf[512];
    /* big-endian float32 1.5, -2.0 ; int16 0x0102 */
    const unsigned char be_f4[] = {0x3f, 0xc0, 0, 0, 0xc0, 0, 0, 0};
    for (int v = 1; v <= 3; v++) {
        size_t n = build(buf, v, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n", be_f4, 8);
        npred_array a;
        if (CHECK_OK(npred_npy_parse(buf, n, "be.npy", &a))) {
            float *f = a.data;
            CHECK(a.dtype == NPRED_DT_F32 && f[0] == 1.5f && f[1] == -2.0f, "v%d: big-endian f4 read %g %g", v,
                  f[0], f[1]);
            npred_array_free(&a);
        }
    }
    const unsigned char be_i2[] = {0x01, 0x02, 0xff, 0xfe};
    size_t n = build(buf, 1, "{'descr': '>i2', 'fortran_order': False, 'shape': (2,), }\n", be_i2, 4);
    npred_array a;
    if (CHECK_OK(npred_npy_parse(buf, n, "bei2.npy", &a))) {
        int16_t *p = a.data;
        CHECK(p[0] == 0x0102 && p[1] == -2, "big-endian i2 read %d %d", p[0], p[1]);
        npred_array_free(&a);
    }
    /* big-endian unicode: 'ab' in >U2 */
    const unsigned char be_u[] = {0, 0, 0, 'a', 0, 0, 0, 'b', 0, 0, 0, 'c', 0, 0, 0, 0};
    n = build(buf, 1, "{'descr': '>U2', 'fortran_order': False, 'shape': (2,), }\n", be_u, 16);
    if (CHECK_OK(npred_npy_parse(buf, n, "beu.npy", &a))) {
        char s[16];
        CHECK_OK(npred_array_get_str(&a, 0, s, sizeof s));
        CHECK(!strcmp(s, "ab"), "got '%s'", s);
        CHECK_OK(npred_array_get_str(&a, 1, s, sizeof s));
        CHECK(!strcmp(s, "c"), "trailing NULs stripped: got '%s'", s);
        npred_array_free(&a);
    }
    /* key order and spacing as other writers produce; Fortran order on 1-d is harmless */
    const float one = 1.0f;
    n = build(buf, 1, "{\"shape\":(1,),\"fortran_order\":True,\"descr\":\"<f4\"}", &one, 4);
    if (CHECK_OK(npred_npy_parse(buf, n, "order.npy", &a))) {
        CHECK(((float *)a.data)[0] == 1.0f, "value");
        npred_array_free(&a);
    }
    /* 0-d */
    const double pi = 3.25;
    n = build(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &pi, 8);
    if (CHECK_OK(npred_npy_parse(buf, n, "scalar.npy", &a))) {
        CHECK(a.ndim == 0 && a.count == 1 && ((double *)a.data)[0] == 3.25, "0-d read");
        npred_array_free(&a);
    }
}

static void expect_error(const char *what, const unsigned char *buf, size_t n, const char *needle)
{
    npred_array a;
    const char *path = raw_file("bad.npy", buf, n);
    npred_status s = npred_npy_read(path, &a);
    if (!CHECK(s != NPRED_OK, "%s: accepted a malformed file", what)) {
        npred_array_free(&a);
        return;
    }
    CHECK(strstr(npred_last_error(), "bad.npy") != NULL, "%s: error does not name the file: %s", what,
          npred_last_error());
    CHECK(strstr(npred_last_error(), needle) != NULL, "%s: error '%s' lacks '%s'", what, npred_last_error(),
          needle);
}

static void test_malformed_corpus(void)
{
    unsigned char buf[1024] = {0};
    const float data[4] = {1, 2, 3, 4};
    size_t n;
    expect_error("empty", buf, 0, "magic");
    expect_error("text", (const unsigned char *)"hello world, not numpy", 22, "magic");
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    expect_error("truncated data", buf, n - 3, "truncated");
    expect_error("truncated header", buf, 20, "truncated");
    n = build(buf, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    expect_error("object", buf, n, "object");
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", data, 16);
    expect_error("fortran", buf, n, "Fortran");
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,, }\n", data, 16);
    expect_error("bad shape", buf, n, "shape");
    n = build(buf, 1, "{'descr': '<f4', 'shape': (4,), }\n", data, 16);
    expect_error("missing key", buf, n, "fortran_order");
    n = build(buf, 1, "{'descr': '<f3', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    expect_error("bad dtype", buf, n, "dtype");
    n = build(buf, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", data, 16);
    expect_error("complex", buf, n, "complex");
    n = build(buf, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    expect_error("structured", buf, n, "structured");
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }\n",
              data, 16);
    expect_error("huge shape", buf, n, "large");
    n = build(buf, 7, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    expect_error("version", buf, n, "version");
    /* header length pointing past the end */
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    buf[8] = 0xff;
    buf[9] = 0x7f;
    expect_error("header length", buf, n, "truncated");
    npred_array a;
    CHECK(npred_npy_read("/nonexistent/dir/x.npy", &a) == NPRED_ERR_IO, "missing file is an I/O error");
    CHECK(strstr(npred_last_error(), "/nonexistent/dir/x.npy") != NULL, "missing file named: %s",
          npred_last_error());
    /* every truncation of a valid file is rejected cleanly */
    n = build(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", data, 16);
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut++) {
        if (npred_npy_parse(buf, cut, "cut.npy", &a) == NPRED_OK) {
            accepted++;
            npred_array_free(&a);
        }
    }
    CHECK(accepted == 0, "%d truncated images accepted", accepted);
}

static void test_conversions_and_fixtures(void)
{
    th_case c;
    if (!th_case_open(&c, "mini_tree")) return;
    npred_array a;
    int64_t *ids = th_load_i64(&c, "static00000-1-1-GrayImageNet-test/meta/neurons/unit_ids.npy", &a);
    CHECK(ids && a.ndim == 1 && a.count > 0, "unit_ids read");
    free(ids);
    char path[600];
    snprintf(path, sizeof path, "%s/static00000-1-1-GrayImageNet-test/meta/trials/tiers.npy", c.dir);
    if (CHECK_OK(npred_npy_read(path, &a))) {
        CHECK(a.dtype == NPRED_DT_STR_U, "tiers are unicode strings");
        int known = 0;
        for (size_t i = 0; i < a.count; i++) {
            char s[64];
            CHECK_OK(npred_array_get_str(&a, i, s, sizeof s));
            known += !strcmp(s, "train") || !strcmp(s, "validation") || !strcmp(s, "test") ||
                     !strcmp(s, "final_test");
        }
        CHECK((size_t)known == a.count, "%d of %zu tiers recognised", known, a.count);
        float *f;
        CHECK(npred_array_to_f32(&a, &f) == NPRED_ERR_SHAPE, "strings do not convert to float");
        npred_array_free(&a);
    }
    th_case_close(&c);
    /* numeric conversions */
    int64_t sh[1] = {3};
    if (CHECK_OK(npred_array_alloc(&a, NPRED_DT_F16, 0, 1, sh))) {
        uint16_t *h = a.data;
        h[0] = 0x3c00; /* 1.0 */
        h[1] = 0xc000; /* -2.0 */
        h[2] = 0x0001; /* smallest subnormal */
        float *f;
        if (CHECK_OK(npred_array_to_f32(&a, &f))) {
            CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == ldexpf(1.0f, -24), "f16 conversion %g %g %g", f[0],
                  f[1], f[2]);
            free(f);
        }
        npred_array_free(&a);
    }
    if (CHECK_OK(npred_array_alloc(&a, NPRED_DT_F64, 0, 1, sh))) {
        double *d = a.data;
        d[0] = 1;
        d[1] = 2.5;
        d[2] = 3;
        int64_t *i64;
        CHECK(npred_array_to_i64(&a, &i64) == NPRED_ERR_VALUE, "2.5 is not an integer");
        npred_array_free(&a);
    }
}

int main(void)
{
    RUN(test_roundtrip_all_dtypes);
    RUN(test_big_endian_and_versions);
    RUN(test_malformed_corpus);
    RUN(test_conversions_and_fixtures);
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return th_summary();
}
