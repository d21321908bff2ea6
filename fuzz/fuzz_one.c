/* libFuzzer entry point for one target of targets.c, chosen at build time
 * with -DNPRED_FUZZ_TARGET=\"<name>\" (`make fuzz` builds build-fuzz/fuzz_<name>). */
#include <stdio.h>
#include <stdlib.h>

#include "npred/base.h"
#include "targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const npred_fuzz_target *t;
    if (!t && !(t = npred_fuzz_find(NPRED_FUZZ_TARGET))) abort();
    int line = t->fn(data, size);
    if (line) {
        fprintf(stderr, "fuzz_%s: check at fuzz/targets.c:%d failed (last error: %s)\n", t->name, line,
                npred_last_error());
        abort();
    }
    return 0;
}
