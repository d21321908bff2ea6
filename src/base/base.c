/* Status messages and the explicit-state RNG. */
#include "npred/base.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERRBUF 1024
static _Thread_local char errbuf[ERRBUF];

npred_status npred_errorf(npred_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return s;
}

npred_status npred_error_prefix(npred_status s, const char *fmt, ...)
{
    char prefix[512], old[ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    size_t pl = strnlen(prefix, sizeof errbuf - 3);
    memcpy(errbuf, prefix, pl);
    memcpy(errbuf + pl, ": ", 2);
    size_t room = sizeof errbuf - pl - 3;
    size_t ol = strnlen(old, room);
    memcpy(errbuf + pl + 2, old, ol);
    errbuf[pl + 2 + ol] = 0;
    return s;
}

const char *npred_last_error(void) { return errbuf; }
void npred_clear_error(void) { errbuf[0] = 0; }

const char *npred_status_str(npred_status s)
{
    switch (s) {
    case NPRED_OK: return "ok";
    case NPRED_ERR_IO: return "i/o error";
    case NPRED_ERR_FORMAT: return "format error";
    case NPRED_ERR_SHAPE: return "shape error";
    case NPRED_ERR_CONFIG: return "configuration error";
    case NPRED_ERR_VALUE: return "invalid value";
    case NPRED_ERR_ARG: return "invalid argument";
    case NPRED_ERR_NOMEM: return "out of memory";
    case NPRED_ERR_UNSUPPORTED: return "unsupported";
    case NPRED_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}

/* splitmix64 expands the seed into the xoshiro state */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void npred_rng_seed(npred_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->has_spare = 0;
    r->spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t npred_rng_u64(npred_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double npred_rng_uniform(npred_rng *r)
{
    return (double)(npred_rng_u64(r) >> 11) * 0x1.0p-53;
}

uint64_t npred_rng_below(npred_rng *r, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = npred_rng_u64(r); while (x >= lim);
    return x % n;
}

double npred_rng_normal(npred_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1, u2;
    do u1 = npred_rng_uniform(r); while (u1 <= 0.0);
    u2 = npred_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double th = 2.0 * M_PI * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

void npred_rng_shuffle(npred_rng *r, int64_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)npred_rng_below(r, i);
        int64_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

void *npred_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0) return calloc(1, 1);
    if (n > SIZE_MAX / size) return NULL;
    return calloc(n, size);
}
