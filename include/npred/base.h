/* npred base: status codes, error messages, explicit-state RNG.
 *
 * The library never prints and never exits. Every fallible function returns an
 * npred_status; on failure a human-readable message naming the file/key and what
 * was expected is available from npred_last_error() (thread-local). */
#ifndef NPRED_BASE_H
#define NPRED_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions of the public API: the shared library is built with
 * -fvisibility=hidden and exports exactly the declarations carrying NPRED_API. */
#if defined(__GNUC__) && !defined(NPRED_STATIC_ONLY)
#define NPRED_API __attribute__((visibility("default")))
#else
#define NPRED_API
#endif

typedef enum {
    NPRED_OK = 0,
    NPRED_ERR_IO,          /* file missing, unreadable, unwritable */
    NPRED_ERR_FORMAT,      /* malformed file contents (npy, zip, json, checkpoint) */
    NPRED_ERR_SHAPE,       /* array shape or dtype not what was expected */
    NPRED_ERR_CONFIG,      /* unknown or invalid configuration key/value */
    NPRED_ERR_VALUE,       /* NaN/Inf or out-of-range value */
    NPRED_ERR_ARG,         /* invalid argument from the caller */
    NPRED_ERR_NOMEM,       /* allocation failed */
    NPRED_ERR_UNSUPPORTED, /* valid input that this build does not handle */
    NPRED_ERR_INTERRUPTED  /* stopped on request (e.g. Ctrl-C) */
} npred_status;

/* Record an error message (printf-style) and return `s` unchanged, so callers
 * can write `return npred_errorf(NPRED_ERR_IO, "%s: cannot open", path);`. */
NPRED_API npred_status npred_errorf(npred_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current error message with "<prefix>: " and return `s`. */
NPRED_API npred_status npred_error_prefix(npred_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Last error message of this thread ("" if none). */
NPRED_API const char *npred_last_error(void);
NPRED_API void npred_clear_error(void);
/* Short name of a status ("io error", "format error", ...). */
NPRED_API const char *npred_status_str(npred_status s);

/* ---- RNG: xoshiro256** with explicit state ---- */
typedef struct {
    uint64_t s[4];
    int has_spare;   /* Box-Muller spare normal */
    double spare;
} npred_rng;

NPRED_API void npred_rng_seed(npred_rng *r, uint64_t seed);
NPRED_API uint64_t npred_rng_u64(npred_rng *r);
/* uniform double in [0, 1) with 53 random bits */
NPRED_API double npred_rng_uniform(npred_rng *r);
/* uniform integer in [0, n) without modulo bias; n > 0 */
NPRED_API uint64_t npred_rng_below(npred_rng *r, uint64_t n);
/* standard normal (Box-Muller, double precision) */
NPRED_API double npred_rng_normal(npred_rng *r);
/* Fisher-Yates shuffle of an index array */
NPRED_API void npred_rng_shuffle(npred_rng *r, int64_t *idx, size_t n);

/* Write len bytes to path atomically: a temporary file beside it, fsync, rename,
 * then (best effort) fsync of the folder. Readers see the old or the new file,
 * never a partial one. Mode 0644. */
NPRED_API npred_status npred_write_atomic(const char *path, const void *buf, size_t len);

/* Read a whole regular file into a malloc'ed buffer (*buf owned by the caller;
 * NPRED_ERR_IO naming the path when it is missing, not a regular file or unreadable). */
NPRED_API npred_status npred_file_read_all(const char *path, void **buf, size_t *len);

/* OpenMP threads that npred calls made from the calling thread use (an OpenMP
 * per-thread setting, like omp_set_num_threads: each caller thread has its own).
 * n >= 1, else NPRED_ERR_ARG. Same seed + same thread count => same results. */
NPRED_API npred_status npred_set_threads(int n);
NPRED_API int npred_threads(void);

/* checked allocation helpers: zeroed memory; return NULL on overflow/failure */
NPRED_API void *npred_calloc(size_t n, size_t size);

#ifdef __cplusplus
}
#endif
#endif
