/* filetree: the SENSORIUM FileTree layout (npred_dataset in npred/data.h). */
#ifndef NPRED_DATA_FILETREE_H
#define NPRED_DATA_FILETREE_H

#include <stddef.h>

#include "npred/data.h"
#include "npred/npy.h"
#include "data/zipfs.h"

/* A dataset whose data/images are not kept: npred_dataset_open's checks, except
 * that the images are only read (and checked: shape like data/images/0.npy,
 * numbers, finite) by npred_dataset_stream_images. Until then the image range
 * (img_min, img_max) is 0; npred_dataset_field(d, NPRED_FIELD_IMAGES) stays
 * NULL while has_field says the images exist. The loaders open their datasets
 * this way and keep the images at the size they are trained at. */
npred_status npred_dataset_open_deferred(npred_dataset **out, const char *path, const char *data_key);

/* Called with every image in trial order (trial 0..N-1; image: C*H*W float32,
 * valid during the call); a non-OK status stops the stream and is returned. */
typedef npred_status (*npred_image_sink)(void *user, int64_t trial, const float *image);

/* Read the images of a deferred dataset one at a time (one image in memory),
 * checked as npred_dataset_open checks them, and set its image range. */
npred_status npred_dataset_stream_images(npred_dataset *d, npred_image_sink sink, void *user);

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
