/* PyTorch checkpoint (.pth, torch.save zip format) reader.
 *
 * The file is a zip archive (read in memory with libzip, never extracted):
 *   <archive>/data.pkl      pickle of the saved object (see pickle.h)
 *   <archive>/data/<key>    one raw storage per key, in the byte order named by
 *   <archive>/byteorder     ("little" or "big"; absent = little)
 *   <archive>/version       format version (not needed to read)
 * The saved object must be a state_dict: a (Ordered)Dict of str -> tensor. A
 * dict that holds a state_dict one level down ({"model": state_dict, "epoch": 3})
 * is accepted too: the value under "state_dict", "model_state_dict", "model" or
 * "net", else the only value that is a non-empty state_dict.
 *
 * Tensors come out contiguous in C order and native byte order, in the dict's
 * order, with their storage offset and strides applied. Views that run past their
 * storage, or whose elements overlap (e.g. expanded, stride 0), are errors.
 * Legacy (pre-1.6, non-zip) checkpoints are not supported. */
#ifndef NPRED_IO_PTH_H
#define NPRED_IO_PTH_H

#include <stddef.h>

#include "io/tensorfile.h"

/* Read `path` into `out` (initialised here; free with npred_tensor_list_free,
 * which is also safe after an error). */
npred_status npred_pth_read(const char *path, npred_tensor_list *out);
/* Same from a file image in memory; `name` is used in error messages. */
npred_status npred_pth_parse(const void *buf, size_t len, const char *name, npred_tensor_list *out);

#endif
