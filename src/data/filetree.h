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
 * this way and keep the images at the size they are trained at.
 * Its responses (read and checked at open as npred_dataset_open does) are kept as
 * 1- or 2-byte codes into a table of their distinct values when there are at most
 * 256 or 65,536 of them (spike counts): npred_dataset_field(d, NPRED_FIELD_RESPONSES)
 * is then NULL; npred_dataset_take_responses / _read_responses give the values, the
 * same float bits either way. */
npred_status npred_dataset_open_deferred(npred_dataset **out, const char *path, const char *data_key);

/* Trial t's responses of neurons idx[0..n) into out (float32, as read). */
void npred_dataset_take_responses(const npred_dataset *d, int64_t t, const int64_t *idx, int64_t n, float *out);
/* Elements [first, first + count) of the (N, n_neurons) responses into out. */
void npred_dataset_read_responses(const npred_dataset *d, size_t first, size_t count, float *out);
/* Bytes a response takes in memory: 1 or 2 when coded, 4 as float32. */
size_t npred_dataset_response_bytes(const npred_dataset *d);

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
