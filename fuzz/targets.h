/* Fuzz targets: one function per parser, shared by the libFuzzer binaries
 * (fuzz/fuzz_one.c, built by `make fuzz`) and by tests/test_fuzz_regressions.c,
 * which replays the saved crash inputs under tests/fuzz-regressions/<target>/.
 *
 * Each target feeds the bytes to one parser and checks what must always hold:
 * a rejected input leaves an error message; an accepted one survives a round
 * trip (serialize + parse gives the same result) where the format has a writer.
 * Returns 0 when all held, else the source line of the check that failed (the
 * fuzzer binaries then abort, so libFuzzer records the input). */
#ifndef NPRED_FUZZ_TARGETS_H
#define NPRED_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef int (*npred_fuzz_fn)(const uint8_t *data, size_t size);

typedef struct {
    const char *name; /* target name: fuzz binary fuzz_<name>, corpus/regression folder <name> */
    npred_fuzz_fn fn;
} npred_fuzz_target;

/* NULL-terminated table of every target. */
extern const npred_fuzz_target npred_fuzz_targets[];

const npred_fuzz_target *npred_fuzz_find(const char *name);

#endif
