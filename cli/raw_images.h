/* Raw stimuli for npred predict --raw (cli/raw_images.c). */
#ifndef NPRED_CLI_RAW_IMAGES_H
#define NPRED_CLI_RAW_IMAGES_H

#include "npred/base.h"

typedef struct {
    int B, c, h, w;
    float *data;   /* (B, c, h, w) pixel values as stored (uint8 as 0..255) */
    char **names;  /* (B,) the PNG file names, or the index in the .npy */
} raw_images;

/* One .npy ((B, C, H, W), (B, H, W) or (H, W); uint8 or float), or PNG files and
 * folders of PNGs (8-bit gray: 1 channel; colour: 3), all of one size. */
npred_status raw_images_read(raw_images *r, const char *const *paths, int n_paths);
void raw_images_free(raw_images *r);

#endif
