/* Whole-file helpers shared by the file formats (npy, safetensors, .pth). */
#ifndef NPRED_BASE_FILEIO_H
#define NPRED_BASE_FILEIO_H

#include <stddef.h>

#include "npred/base.h"

/* Finish a serializer's work: st is its status; on success buf (malloc'ed, freed
 * here in every case) is written atomically to path. Errors are prefixed by path. */
npred_status npred_write_serialized(const char *path, npred_status st, void *buf, size_t len);

/* A file written in pieces and put in place atomically (what npred_write_atomic does
 * for one buffer): open creates a temporary file beside path (path must outlive f),
 * write appends, commit fsyncs, renames it into place and frees f; abort (after any
 * error, or to give up) removes it. Errors are prefixed by path. */
typedef struct {
    int fd;
    char *tmp;
    const char *path;
} npred_atomic_file;
npred_status npred_atomic_file_open(npred_atomic_file *f, const char *path);
npred_status npred_atomic_file_write(npred_atomic_file *f, const void *buf, size_t len);
npred_status npred_atomic_file_commit(npred_atomic_file *f);
void npred_atomic_file_abort(npred_atomic_file *f);

#endif
