/* "--neurons" selections: ranges and comma lists of neuron indices, or "all". */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "npred/insilico.h"

static int parse_index(const char **p, long *v)
{
    if (!isdigit((unsigned char)**p)) return -1;
    char *end;
    errno = 0;
    *v = strtol(*p, &end, 10);
    if (errno || *v > 2000000000L) return -1;
    *p = end;
    return 0;
}

npred_status npred_parse_neurons(const char *spec, int n_neurons, int **idx, int *count)
{
    *idx = NULL;
    *count = 0;
    if (!spec || !*spec) return npred_errorf(NPRED_ERR_ARG, "neurons: empty selection (use e.g. 0-19, 3,7,12 or all)");
    if (n_neurons < 1) return npred_errorf(NPRED_ERR_ARG, "neurons: the session has no neurons");
    unsigned char *seen = calloc((size_t)n_neurons, 1);
    int *out = malloc(sizeof(int) * (size_t)n_neurons);
    if (!seen || !out) {
        free(seen);
        free(out);
        return npred_errorf(NPRED_ERR_NOMEM, "neurons: out of memory");
    }
    int k = 0;
    npred_status st = NPRED_OK;
    if (!strcmp(spec, "all")) {
        for (int i = 0; i < n_neurons; i++) out[i] = i;
        k = n_neurons;
    } else {
        const char *p = spec;
        while (!st) {
            const char *part = p;
            long a, b;
            if (parse_index(&p, &a)) {
                st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': expected an index at '%s'", spec, part);
                break;
            }
            b = a;
            if (*p == '-') {
                p++;
                if (parse_index(&p, &b)) {
                    st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': expected the end of the range at '%s'", spec, part);
                    break;
                }
                if (b < a) {
                    st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': range %ld-%ld runs backwards", spec, a, b);
                    break;
                }
            }
            if (b >= n_neurons) {
                st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': index %ld is out of range (the session has %d neurons, 0-%d)",
                                  spec, b, n_neurons, n_neurons - 1);
                break;
            }
            for (long i = a; i <= b; i++) {
                if (seen[i]) {
                    st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': neuron %ld is listed twice", spec, i);
                    break;
                }
                seen[i] = 1;
                out[k++] = (int)i;
            }
            if (st || !*p) break;
            if (*p != ',') {
                st = npred_errorf(NPRED_ERR_ARG, "neurons '%s': unexpected '%c' (use ranges a-b and commas)", spec, *p);
                break;
            }
            p++;
        }
    }
    free(seen);
    if (st) {
        free(out);
        return st;
    }
    *idx = out;
    *count = k;
    return NPRED_OK;
}
