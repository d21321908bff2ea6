/* PNG images as float planes (png_read.h), with libpng's simplified API. */
#include "png_read.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

/* libpng allocates what a chunk's length field claims before it reads the chunk: a
 * 100-byte file claiming a 1.6 GB text chunk asks for 1.6 GB. Every chunk up to IEND
 * must fit in the bytes there are (the rest, a bad signature or CRC, libpng checks). */
static npred_status chunks_fit(const unsigned char *d, size_t len, const char *name)
{
    size_t at = 8; /* after the signature */
    while (at + 8 <= len) {
        size_t n = (size_t)d[at] << 24 | (size_t)d[at + 1] << 16 | (size_t)d[at + 2] << 8 | d[at + 3];
        if (n > len - at - 8 || len - at - 8 - n < 4) /* the data and its 4-byte CRC */
            return npred_errorf(NPRED_ERR_FORMAT, "%s: the PNG chunk at byte %zu claims %zu bytes, more than the %zu "
                                "left in the file", name, at, n, len - at - 8);
        if (!memcmp(d + at + 4, "IEND", 4)) break;
        at += 12 + n;
    }
    return NPRED_OK;
}

npred_status cli_png_decode(const void *data, size_t len, const char *name, float **out, int *c, int *h, int *w)
{
    *out = NULL;
    npred_status fit = chunks_fit(data, len, name);
    if (fit) return fit;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, data, len))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: not a readable PNG (%s)", name, img.message);
    int color = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
    if (img.format & PNG_FORMAT_FLAG_LINEAR) {
        png_image_free(&img);
        return npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: 16-bit PNGs are not supported (8-bit gray or RGB expected)", name);
    }
    if ((long)img.height * img.width > CLI_PNG_MAX_PIXELS) {
        npred_status st = npred_errorf(NPRED_ERR_UNSUPPORTED, "%s: %u x %u pixels: more than the %ld a PNG may have",
                                       name, img.height, img.width, (long)CLI_PNG_MAX_PIXELS);
        png_image_free(&img);
        return st;
    }
    img.format = color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    int C = color ? 3 : 1, H = (int)img.height, W = (int)img.width;
    size_t n = (size_t)C * H * W;
    unsigned char *buf = malloc(n ? n : 1);
    float *f = malloc(sizeof(float) * (n ? n : 1));
    png_color black = {0, 0, 0};
    if (!buf || !f || !png_image_finish_read(&img, &black, buf, 0, NULL)) {
        npred_status st = npred_errorf(buf && f ? NPRED_ERR_FORMAT : NPRED_ERR_NOMEM, "%s: cannot decode the PNG (%s)",
                                       name, img.message);
        png_image_free(&img);
        free(buf);
        free(f);
        return st;
    }
    for (int y = 0; y < H; y++) /* interleaved (H, W, C) -> planes (C, H, W) */
        for (int x = 0; x < W; x++)
            for (int k = 0; k < C; k++) f[((size_t)k * H + y) * W + x] = buf[((size_t)y * W + x) * C + k];
    free(buf);
    *out = f, *c = C, *h = H, *w = W;
    return NPRED_OK;
}
