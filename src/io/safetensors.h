/* safetensors read/write (npred's own model file format).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"key": "string", ...},
 *    "<tensor name>": {"dtype": "F32", "shape": [64, 1, 9, 9], "data_offsets": [b, e]}, ...}
 * (padded with spaces), then the byte buffer; each tensor is buffer[b..e), little-endian,
 * C order. The reader checks everything: header length against the file size,
 * well-formed JSON, known dtypes, dtype size x shape == e - b, offsets that lie in
 * the buffer, do not overlap and leave no gaps, unique names, string metadata.
 * npred keeps its model configuration (JSON) in the metadata entry "npred_config". */
#ifndef NPRED_IO_SAFETENSORS_H
#define NPRED_IO_SAFETENSORS_H

#include <stddef.h>

#include "io/tensorfile.h"

/* Write the list (tensors in list order, plus its metadata) atomically: a temp
 * file in the same directory, fsync, rename over `path`. */
npred_status npred_safetensors_write(const char *path, const npred_tensor_list *l);
/* The same file image in a malloc'ed buffer. */
npred_status npred_safetensors_serialize(const npred_tensor_list *l, void **buf, size_t *len);

/* Read `path` into `out` (initialised here; tensors in header order; free with
 * npred_tensor_list_free, also safe after an error). */
npred_status npred_safetensors_read(const char *path, npred_tensor_list *out);
/* Same from a file image in memory; `name` is used in error messages. */
npred_status npred_safetensors_parse(const void *buf, size_t len, const char *name,
                                     npred_tensor_list *out);

#endif
