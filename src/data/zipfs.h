/* zipfs: a small read-only virtual file layer over a folder, a .zip archive or
 * an HDF5 static dataset (data/h5fs.h gives its file-tree mapping).
 *
 * Paths are relative to the root, '/'-separated, without a leading or trailing
 * slash ("meta/trials/tiers.npy"). A .zip is read in place with libzip: members
 * are read into memory, never extracted to disk, and nothing is ever written
 * next to the dataset. Its root is the single top folder the archive holds
 * (SENSORIUM zips hold "static<key>-.../"), or the archive root when it has none.
 *
 * One zipfs is used by one thread at a time (libzip handles are not shared). */
#ifndef NPRED_DATA_ZIPFS_H
#define NPRED_DATA_ZIPFS_H

#include <stddef.h>
#include "npred/base.h"

typedef struct npred_zipfs npred_zipfs;

/* Open a folder, a .zip file (a regular file whose name ends in .zip, any case) or an
 * HDF5 file (recognised by its signature). */
npred_status npred_zipfs_open(npred_zipfs **out, const char *path);
void npred_zipfs_free(npred_zipfs *fs);

/* 1 if this is a zip archive, 0 for a folder or an HDF5 file. */
int npred_zipfs_is_zip(const npred_zipfs *fs);
/* 1 if this is an HDF5 static dataset (StaticImageSet layout) read as the file
 * tree through data/h5fs.h. */
int npred_zipfs_is_hdf5(const npred_zipfs *fs);
/* Display name of a relative path for error messages: "<path>/<rel>" for a
 * folder, "<zip>:<root>/<rel>" for an archive member. Written into buf. */
const char *npred_zipfs_display(const npred_zipfs *fs, const char *rel, char *buf, size_t bufsize);

/* Kind of a path: 0 missing, 1 regular file, 2 directory. */
int npred_zipfs_kind(const npred_zipfs *fs, const char *rel);

/* Immediate children of directory `dir` ("" for the root), sorted by name;
 * directories carry a trailing '/'. *names is one malloc'ed array of
 * malloc'ed strings: free with npred_zipfs_names_free. A missing directory is
 * NPRED_ERR_IO naming it. */
npred_status npred_zipfs_list(const npred_zipfs *fs, const char *dir, char ***names, size_t *n);
void npred_zipfs_names_free(char **names, size_t n);

/* Read a whole file into a malloc'ed buffer (*buf owned by the caller). A
 * missing file is NPRED_ERR_IO; a member that fails to decompress, has a bad
 * CRC or is shorter than its directory entry says is NPRED_ERR_FORMAT. */
npred_status npred_zipfs_read(npred_zipfs *fs, const char *rel, void **buf, size_t *len);

/* Zip the folder out_dir/name into out_dir/name.zip (replaced if present):
 * members "name/...", stored, fixed timestamps, sorted, so the archive is
 * byte-identical for identical trees (the SENSORIUM zip layout). */
npred_status npred_tree_write_zip(const char *out_dir, const char *name);

#endif
