/* Status messages and the explicit-state RNG. */
#include "npred/base.h"
#include "base/fileio.h"
#include "base/rng.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

uint64_t npred_rng_u64(npred_rng *r) { return npred_rng_next(r->s); }

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

npred_status npred_set_threads(int n)
{
    if (n < 1) return npred_errorf(NPRED_ERR_ARG, "threads: %d is not a positive number", n);
    omp_set_num_threads(n);
    return NPRED_OK;
}

int npred_threads(void) { return omp_get_max_threads(); }

void *npred_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0) return calloc(1, 1);
    if (n > SIZE_MAX / size) return NULL;
    return calloc(n, size);
}

npred_status npred_atomic_file_open(npred_atomic_file *f, const char *path)
{
    f->fd = -1;
    f->path = path;
    size_t pl = strlen(path);
    f->tmp = malloc(pl + 16);
    if (!f->tmp) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    snprintf(f->tmp, pl + 16, "%s.tmp.XXXXXX", path);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0) {
        npred_status s = npred_errorf(NPRED_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                                      strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        return s;
    }
    return NPRED_OK;
}

npred_status npred_atomic_file_write(npred_atomic_file *f, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return npred_errorf(NPRED_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return NPRED_OK;
}

void npred_atomic_file_abort(npred_atomic_file *f)
{
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    f->tmp = NULL;
    f->fd = -1;
}

npred_status npred_atomic_file_commit(npred_atomic_file *f)
{
    const char *path = f->path;
    npred_status s = NPRED_OK;
    if (fchmod(f->fd, 0644) != 0) s = npred_errorf(NPRED_ERR_IO, "%s: chmod failed: %s", path, strerror(errno));
    if (!s && fsync(f->fd) != 0) s = npred_errorf(NPRED_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(f->fd) != 0 && !s) s = npred_errorf(NPRED_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    f->fd = -1;
    if (!s && rename(f->tmp, path) != 0)
        s = npred_errorf(NPRED_ERR_IO, "%s: cannot rename the temporary file into place: %s", path, strerror(errno));
    if (s) {
        npred_atomic_file_abort(f);
        return s;
    }
    /* make the rename durable (some file systems cannot sync folders: ignored) */
    char *slash = strrchr(f->tmp, '/');
    if (slash) slash[slash == f->tmp] = 0;
    int dfd = open(slash ? f->tmp : ".", O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0) { /* best effort */
        }
        close(dfd);
    }
    free(f->tmp);
    f->tmp = NULL;
    return NPRED_OK;
}

npred_status npred_write_atomic(const char *path, const void *buf, size_t len)
{
    npred_atomic_file f;
    npred_status s = npred_atomic_file_open(&f, path);
    if (!s) s = npred_atomic_file_write(&f, buf, len);
    if (!s) return npred_atomic_file_commit(&f);
    npred_atomic_file_abort(&f);
    return s;
}

npred_status npred_file_read_all(const char *path, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return npred_errorf(NPRED_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return npred_errorf(NPRED_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX - 1) {
        fclose(f);
        return npred_errorf(NPRED_ERR_IO, "%s: file too large", path);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(b);
        return npred_errorf(NPRED_ERR_IO, "%s: read error (%zu of %zu bytes)", path, got, n);
    }
    *buf = b;
    *len = n;
    return NPRED_OK;
}
