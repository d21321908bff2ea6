/* filetree: the SENSORIUM FileTree layout (npred_dataset in npred/data.h). */
#ifndef NPRED_DATA_FILETREE_H
#define NPRED_DATA_FILETREE_H

#include <stddef.h>

/* data_key from a dataset path as sensorium.static_loader derives it:
 * "preproc" names: text after the last "static" up to the first '.', with
 * "preproc" and "_nobehavior" removed; "ColorImageNet"/"GrayImageNet" names:
 * text after the last "static" up to "-ColorImageNet"/"-GrayImageNet".
 * Returns 1 and writes buf, or 0 when the name carries no key (the caller then
 * uses animal_ids[0]-sessions[0]-scan_idx[0]). */
int npred_filetree_key_from_path(const char *path, char *buf, size_t bufsize);

#endif
