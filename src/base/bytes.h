/* Byte order helpers shared by the file formats (npy, safetensors, .pth). */
#ifndef NPRED_BASE_BYTES_H
#define NPRED_BASE_BYTES_H

#include <stddef.h>

/* Reverse the bytes of each of n elements of size `size` in place (1 = no-op). */
void npred_bswap_elems(void *data, size_t n, size_t size);
/* 1 on a little-endian host. */
int npred_host_is_le(void);

#endif
