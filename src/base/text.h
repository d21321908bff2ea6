/* A growable text buffer for the CSV / JSON / HTML writers. Appends never fail
 * loudly: an allocation failure sets `failed` and later appends do nothing, so a
 * writer checks once at the end (npred_text_take). */
#ifndef NPRED_BASE_TEXT_H
#define NPRED_BASE_TEXT_H

#include <stddef.h>

#include "npred/base.h"

typedef struct {
    char *buf;   /* NUL-terminated */
    size_t len, cap;
    int failed;
} npred_text;

void npred_text_init(npred_text *t);
void npred_text_free(npred_text *t);
void npred_text_printf(npred_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void npred_text_put(npred_text *t, const char *s, size_t n);
/* Python repr(float(v)): shortest round-trip digits ("0.1", "2.0", "1e-05", "nan"). */
void npred_text_pyfloat(npred_text *t, double v);
/* The text (caller frees), or NULL with NPRED_ERR_NOMEM set naming `what`. The
 * buffer is left empty either way. */
char *npred_text_take(npred_text *t, const char *what);

#endif
