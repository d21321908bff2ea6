/* h5fs: an HDF5 static dataset (neuralpredictors StaticImageSet, sensorium
 * static_loader with file_tree=False) seen as the SENSORIUM file tree, so the
 * file-tree reader and `npred convert` share one mapping.
 *
 * The mapping is neuralpredictors' convert_static_h5_dataset_to_folder:
 *   /images, /responses, /behavior, /pupil_center (N, ...)  -> data/<name>/<i>.npy (row i)
 *   /tiers                                                  -> meta/trials/tiers.npy
 *   /item_info/<name>                                       -> meta/trials/<name>.npy
 *   /neurons/<name>                                         -> meta/neurons/<name>.npy
 *   /statistics/<path> (every dataset below it)             -> meta/statistics/<path>.npy,
 *                                         the path lower-cased with '.' replaced by '_'
 * Byte strings (fixed or variable length) become NumPy unicode '<U' arrays, as the
 * converter's astype(str) does; h5py booleans (an enum FALSE/TRUE over int8) become
 * bool. Numbers keep their type.
 *
 * Internal to src/data (zipfs uses it); never prints (the HDF5 error stack is
 * silenced). */
#ifndef NPRED_DATA_H5FS_H
#define NPRED_DATA_H5FS_H

#include <stddef.h>
#include "npred/base.h"

typedef struct npred_h5fs npred_h5fs;

/* 1 if path is an HDF5 file (signature check), else 0. */
int npred_h5fs_is_hdf5(const char *path);
npred_status npred_h5fs_open(npred_h5fs **out, const char *path);
/* The same for a file image in memory (len bytes, copied; name for messages). */
npred_status npred_h5fs_open_image(npred_h5fs **out, const void *data, size_t len, const char *name);
void npred_h5fs_free(npred_h5fs *h);
/* The virtual files, in no particular order: count and relative names. */
size_t npred_h5fs_count(const npred_h5fs *h);
const char *npred_h5fs_name(const npred_h5fs *h, size_t i);
/* File i as .npy bytes (malloc'ed, owned by the caller). */
npred_status npred_h5fs_read(npred_h5fs *h, size_t i, void **buf, size_t *len);

#endif
