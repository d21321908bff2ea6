/* Figures for the `make bench` summary (bench/summary.c; docs/performance.md).
 *
 * A bench records a figure with bench_record("train_img_s_36x64_b32", value,
 * threads): it is merged into the bench's own part file, <dir>/part_<bench>.json
 * (dir: $NPRED_BENCH_DIR, else build/bench), as
 *   {"<key>": {"value": v, "threads": t, "load_1min": l}, ...}
 * with the 1-minute load average at the time it was measured. bench_note(key,
 * text) records a figure that could not be measured (value null, the reason).
 * `make bench` deletes the part files first and runs build/bench/summary last,
 * which merges them into one table and summary.json. A bench run by hand
 * updates its part file the same way. Failures to write are reported on stderr
 * and do not stop the bench. */
#ifndef NPRED_BENCH_REPORT_H
#define NPRED_BENCH_REPORT_H

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npred/base.h"

static const char *bench_report_name_ = "bench";

/* Call once from main: the part file is part_<name>.json. */
static inline void bench_report_init(const char *name) { bench_report_name_ = name; }

static inline const char *bench_report_dir(void)
{
    const char *d = getenv("NPRED_BENCH_DIR");
    return d && *d ? d : "build/bench";
}

static inline double bench_load_1min(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

/* Read-modify-write of the part file: entry (a JSON object) under key. */
static inline void bench_report_put_(const char *key, cJSON *entry)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/part_%s.json", bench_report_dir(), bench_report_name_);
    mkdir(bench_report_dir(), 0755);
    cJSON *root = NULL;
    FILE *f = fopen(path, "rb");
    if (f) {
        char *buf = NULL;
        size_t len = 0;
        if (!fseek(f, 0, SEEK_END)) {
            long n = ftell(f);
            if (n > 0 && n < (1L << 24) && !fseek(f, 0, SEEK_SET) && (buf = malloc((size_t)n + 1))) {
                len = fread(buf, 1, (size_t)n, f);
                buf[len] = '\0';
            }
        }
        fclose(f);
        if (buf) root = cJSON_Parse(buf);
        free(buf);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = cJSON_CreateObject();
    }
    cJSON_DeleteItemFromObject(root, key);
    cJSON_AddItemToObject(root, key, entry);
    char *text = cJSON_Print(root);
    npred_status st = text ? npred_write_atomic(path, text, strlen(text)) : NPRED_ERR_NOMEM;
    if (st) fprintf(stderr, "%s: cannot record %s in %s: %s\n", bench_report_name_, key, path, npred_last_error());
    free(text);
    cJSON_Delete(root);
}

/* flop > 0: the FLOPs the figure stands for (per image for a rate, per run for a
 * time), when the summary's own count does not apply */
static inline void bench_record_flop(const char *key, double value, int threads, double flop)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "value", value);
    cJSON_AddNumberToObject(e, "threads", threads);
    cJSON_AddNumberToObject(e, "load_1min", bench_load_1min());
    if (flop > 0) cJSON_AddNumberToObject(e, "flop", flop);
    bench_report_put_(key, e);
}

static inline void bench_record(const char *key, double value, int threads) { bench_record_flop(key, value, threads, 0); }

static inline void bench_note(const char *key, const char *reason)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNullToObject(e, "value");
    cJSON_AddStringToObject(e, "reason", reason);
    cJSON_AddNumberToObject(e, "load_1min", bench_load_1min());
    bench_report_put_(key, e);
}
#endif
