/* Whole-file helpers shared by the file formats (npy, safetensors, .pth). */
#ifndef NPRED_BASE_FILEIO_H
#define NPRED_BASE_FILEIO_H

#include <stddef.h>

#include "npred/base.h"

/* Finish a serializer's work: st is its status; on success buf (malloc'ed, freed
 * here in every case) is written atomically to path. Errors are prefixed by path. */
npred_status npred_write_serialized(const char *path, npred_status st, void *buf, size_t len);

#endif
