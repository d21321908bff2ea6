/* Whole-file helpers (see fileio.h). */
#include "base/fileio.h"

#include <stdlib.h>

npred_status npred_write_serialized(const char *path, npred_status st, void *buf, size_t len)
{
    if (!st) st = npred_write_atomic(path, buf, len);
    else st = npred_error_prefix(st, "%s", path);
    free(buf);
    return st;
}
