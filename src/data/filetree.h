/* filetree: the SENSORIUM FileTree layout (npred_dataset in npred/data.h). */
#ifndef NPRED_DATA_FILETREE_H
#define NPRED_DATA_FILETREE_H

#include <stddef.h>

#include "npred/npy.h"
#include "data/zipfs.h"

/* data_key from a dataset path as sensorium.static_loader derives it:
 * "preproc" names: text after the last "static" up to the first '.', with
 * "preproc" and "_nobehavior" removed; "ColorImageNet"/"GrayImageNet" names:
 * text after the last "static" up to "-ColorImageNet"/"-GrayImageNet".
 * Returns 1 and writes buf, or 0 when the name carries no key (the caller then
 * uses animal_ids[0]-sessions[0]-scan_idx[0]). */
int npred_filetree_key_from_path(const char *path, char *buf, size_t bufsize);

/* Helpers of the file tree, shared with the movie scans (data/video.c):
 * read member rel of fs as an .npy (errors name the member); a NumPy-style shape
 * "(3, 4)" / "(5,)"; 1 if s ends with suf. */
npred_status npred_filetree_read_npy(npred_zipfs *fs, const char *rel, npred_array *a);
void npred_filetree_shape_str(const npred_array *a, char *buf, size_t n);
int npred_filetree_has_suffix(const char *s, const char *suf);

#endif
