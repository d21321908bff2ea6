/* Byte order helpers (see bytes.h). */
#include "base/bytes.h"

#include <stdint.h>
#include <string.h>

void npred_bswap_elems(void *data, size_t n, size_t size)
{
    if (size < 2) return;
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

int npred_host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}
