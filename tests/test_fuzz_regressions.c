/* Replays every input under tests/fuzz-regressions/<target>/ (crashes the
 * fuzzers found, kept after the fix) through the same target functions the
 * fuzzers run (fuzz/targets.c): each must be handled (accepted with a clean
 * round trip, or rejected with a message) without a crash; `make sanitize`
 * replays them under ASan/UBSan. Also checks that the regression folders name
 * real targets, so a misnamed folder cannot silently skip its inputs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fuzz/targets.h"
#include "harness.h"
#include "npred/base.h"

#define REG_DIR "tests/fuzz-regressions"

static int replay_dir(const npred_fuzz_target *t, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0; /* no regression inputs for this target (yet) */
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        void *buf = NULL;
        size_t len = 0;
        if (!CHECK_OK(npred_file_read_all(path, &buf, &len))) continue;
        int line = t->fn(buf, len);
        CHECK(line == 0, "%s: target %s failed its check at fuzz/targets.c:%d (%s)", path, t->name, line,
              npred_last_error());
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void test_regression_inputs(void)
{
    int total = 0;
    for (const npred_fuzz_target *t = npred_fuzz_targets; t->name; t++) {
        char dir[512];
        snprintf(dir, sizeof dir, REG_DIR "/%s", t->name);
        total += replay_dir(t, dir);
    }
    printf("  replayed %d regression inputs\n", total);
    /* every folder must belong to a target */
    DIR *d = opendir(REG_DIR);
    if (!CHECK(d != NULL, "%s is missing (run from the repository root)", REG_DIR)) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md")) continue;
        CHECK(npred_fuzz_find(e->d_name) != NULL, "%s/%s names no fuzz target", REG_DIR, e->d_name);
    }
    closedir(d);
}

/* The targets accept valid input and reject junk (so a replay can fail). */
static void test_targets_discriminate(void)
{
    const npred_fuzz_target *npy = npred_fuzz_find("npy");
    if (!CHECK(npy != NULL, "npy target missing")) return;
    static const char junk[] = "\x93NUMPY\x01\x00\x10\x00{'descr': '<f4',";
    CHECK(npy->fn((const uint8_t *)junk, sizeof junk - 1) == 0, "truncated npy: %s", npred_last_error());
    CHECK(strstr(npred_last_error(), "fuzz.npy") != NULL, "error names the input: %s", npred_last_error());
    void *buf = NULL;
    size_t len = 0;
    if (CHECK_OK(npred_file_read_all("tests/fixtures/elu/input.npy", &buf, &len))) {
        npred_clear_error();
        CHECK(npy->fn(buf, len) == 0, "valid npy round trip: %s", npred_last_error());
        CHECK(npred_last_error()[0] == 0, "a valid npy leaves no error: %s", npred_last_error());
    }
    free(buf);
    for (const npred_fuzz_target *t = npred_fuzz_targets; t->name; t++)
        CHECK(t->fn((const uint8_t *)"", 0) == 0, "target %s on empty input", t->name);
    /* a PNG header claiming 10^10 pixels is refused before anything is allocated */
    const npred_fuzz_target *png = npred_fuzz_find("png");
    if (CHECK(png != NULL, "png target") &&
        CHECK_OK(npred_file_read_all(REG_DIR "/png/header-claims-10-gigapixels.png", &buf, &len))) {
        CHECK(png->fn(buf, len) == 0 && strstr(npred_last_error(), "fuzz.png: 100000 x 100000 pixels: more than"),
              "huge PNG refused: %s", npred_last_error());
        free(buf);
    }
}

/* video_pth: a fixture's config + NUL + its torch-written .pth is imported (no error
 * left); the same with the .pth cut short, or another fixture's config, is refused with
 * a message naming the file */
static void test_video_pth_target(void)
{
    const npred_fuzz_target *t = npred_fuzz_find("video_pth");
    th_case c;
    void *pth = NULL;
    size_t len = 0;
    if (!CHECK(t != NULL, "video_pth target") || !th_case_open(&c, "video_factorized3d_encoder")) return;
    char *cfg = cJSON_PrintUnformatted(th_get(c.json, "args", "make_video_model", NULL));
    size_t k = cfg ? strlen(cfg) : 0;
    uint8_t *in = NULL;
    if (CHECK(cfg != NULL, "config") &&
        CHECK_OK(npred_file_read_all("tests/fixtures/video_pth/video_factorized3d_encoder.pth", &pth, &len)) &&
        CHECK((in = malloc(k + 1 + len)) != NULL, "alloc")) {
        memcpy(in, cfg, k + 1), memcpy(in + k + 1, pth, len);
        npred_clear_error();
        CHECK(t->fn(in, k + 1 + len) == 0 && npred_last_error()[0] == 0, "the fixture imports: %s", npred_last_error());
        CHECK(t->fn(in, k + 1 + len / 2) == 0 && strstr(npred_last_error(), "fuzz.pth"), "a cut .pth: %s",
              npred_last_error());
    }
    th_case g;
    char *gcfg = NULL;
    uint8_t *gin = NULL;
    if (in && th_case_open(&g, "video_gru_encoder_stacked2d")) {
        gcfg = cJSON_PrintUnformatted(th_get(g.json, "args", "make_video_model", NULL));
        size_t gk = gcfg ? strlen(gcfg) : 0;
        if (CHECK(gcfg && (gin = malloc(gk + 1 + len)) != NULL, "alloc")) {
            memcpy(gin, gcfg, gk + 1), memcpy(gin + gk + 1, pth, len);
            npred_clear_error();
            CHECK(t->fn(gin, gk + 1 + len) == 0 && strstr(npred_last_error(), "fuzz.pth") &&
                      strstr(npred_last_error(), "has no gru_module.* tensors"),
                  "another model's config: %s", npred_last_error());
        }
        th_case_close(&g);
    }
    free(gin);
    free(gcfg);
    free(in);
    free(pth);
    free(cfg);
    th_case_close(&c);
}

int main(void)
{
    RUN(test_regression_inputs);
    RUN(test_targets_discriminate);
    RUN(test_video_pth_target);
    return th_summary();
}
