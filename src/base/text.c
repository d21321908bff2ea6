/* Growable text buffer (text.h). */
#include "base/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pyfmt.h"

void npred_text_init(npred_text *t) { memset(t, 0, sizeof *t); }

void npred_text_free(npred_text *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

static int reserve(npred_text *t, size_t extra)
{
    if (t->failed) return 0;
    if (t->len + extra + 1 <= t->cap) return 1;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + extra + 1) cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->failed = 1;
        return 0;
    }
    t->buf = b;
    t->cap = cap;
    return 1;
}

void npred_text_put(npred_text *t, const char *s, size_t n)
{
    if (!reserve(t, n)) return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

void npred_text_printf(npred_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(t, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void npred_text_pyfloat(npred_text *t, double v)
{
    char b[40];
    npred_pyfloat(b, sizeof b, v);
    npred_text_put(t, b, strlen(b));
}

char *npred_text_take(npred_text *t, const char *what)
{
    if (t->failed || !reserve(t, 0)) {
        npred_text_free(t);
        npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", what);
        return NULL;
    }
    char *s = t->buf;
    memset(t, 0, sizeof *t);
    return s;
}
