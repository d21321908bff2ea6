/* PNG images as float planes, for npred predict --raw (cli/raw_images.c) and the
 * png fuzz target (fuzz/targets.c). */
#ifndef NPRED_CLI_PNG_READ_H
#define NPRED_CLI_PNG_READ_H

#include <stddef.h>

#include "npred/base.h"

/* The most pixels (height x width) a PNG may have: 2^25, e.g. 8192 x 4096. A PNG
 * header can claim a million by a million in a few bytes; this bounds what is
 * allocated before the pixels are decoded. */
#define CLI_PNG_MAX_PIXELS (1L << 25)

/* The PNG in data (len bytes; name for messages) as (C, H, W) floats 0..255:
 * 8-bit gray -> 1 channel, colour -> 3 (alpha composited on black); 16-bit PNGs
 * and images beyond CLI_PNG_MAX_PIXELS are errors. *out is malloc'ed. */
npred_status cli_png_decode(const void *data, size_t len, const char *name, float **out, int *c, int *h, int *w);

#endif
