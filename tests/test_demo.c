/* npred demo end to end on a tiny problem: simulate, train, evaluate, pictures,
 * ground-truth comparison. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

static const char *bin(void)
{
    const char *b = getenv("NPRED_BIN");
    return b && *b ? b : "./build/npred";
}

static void test_demo_tiny(void)
{
    char dir[] = "/tmp/npred-test-demo-XXXXXX";
    if (!CHECK(mkdtemp(dir) != NULL, "mkdtemp")) return;
    char cmd[1024], log[600];
    snprintf(log, sizeof log, "%s/log.txt", dir);
    snprintf(cmd, sizeof cmd,
             "%s demo --out %s/d --sessions 2 --neurons 12 --trials 48 --epochs 2 --batch 8 --test-images 6 "
             "--test-repeats 3 --threads 2 > %s 2>&1",
             bin(), dir, log);
    int rc = system(cmd);
    CHECK(rc == 0, "demo exited with %d (log %s)", rc, log);
    FILE *f = fopen(log, "r");
    char *text = calloc(1, 1 << 16);
    if (f && text) {
        size_t n = fread(text, 1, (1 << 16) - 1, f);
        text[n] = 0;
    }
    if (f) fclose(f);
    CHECK(text && strstr(text, "% of the oracle"), "oracle comparison printed:\n%s", text ? text : "");
    CHECK(text && strstr(text, "receptive fields: learned vs true position correlation"), "RF comparison printed");
    const char *files[] = {"model.safetensors", "log.csv", "training_loss.png", "validation_objective.png",
                           "learning_rate.png", "filters.png", "test_correlations.png", "positions_90000-1-1.png",
                           "positions_90000-1-2.png"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[700];
        struct stat sb;
        snprintf(p, sizeof p, "%s/d/run/%s", dir, files[i]);
        CHECK(stat(p, &sb) == 0 && sb.st_size > 0, "%s written", files[i]);
    }
    snprintf(cmd, sizeof cmd, "%s demo --epochs 0 > /dev/null 2>&1", bin());
    CHECK(system(cmd) != 0, "bad option rejected");
    free(text);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK(0, "cleanup");
}

int main(void)
{
    RUN(test_demo_tiny);
    return th_summary();
}
