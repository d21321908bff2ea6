/* Minimal test harness shared by all test programs.
 *
 *   static void test_something(void) { CHECK(x == 1, "x is %d", x); }
 *   int main(void) { RUN(test_something); return th_summary(); }
 *
 * A test passes when none of its CHECKs failed. th_summary() prints the closing
 * line "N passed, N failed[, N skipped]" and returns the exit code.
 * Fixtures live in tests/fixtures/<case>/ (copied from the PyTorch reference);
 * a missing fixture is a failure, never a skip. */
#ifndef NPRED_TEST_HARNESS_H
#define NPRED_TEST_HARNESS_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <cJSON.h>
#include "npred/npy.h"

int th_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) th_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* CHECK that a library call returned NPRED_OK; prints npred_last_error() if not. */
#define CHECK_OK(call) th_check_ok((call), #call, __FILE__, __LINE__)
int th_check_ok(npred_status s, const char *expr, const char *file, int line);

void th_run(const char *name, void (*fn)(void));
#define RUN(fn) th_run(#fn, fn)
/* Mark the running test skipped (only for absent ../shared/checkpoints). */
void th_skip(const char *reason);
int th_summary(void);
/* Everything readable from f (a file or a popen pipe) as a NUL-terminated string
 * (malloc'ed), or NULL when out of memory. */
char *th_read_stream(FILE *f);

/* A running maximum of errors that keeps NaN: fmax(worst, NaN) is worst, so a
 * NaN error would vanish; th_worst returns NaN once either is NaN, and the
 * final `worst <= tol` check then fails. */
static inline double th_worst(double worst, double e) { return isnan(worst) || isnan(e) ? NAN : e > worst ? e : worst; }

/* x rounded to bfloat16 (round to nearest even), as a double: the tests' own
 * rounding for the bf16 kernels' references (no NaN or subnormal inputs) */
static inline double th_bf16(float x)
{
    union { float f; uint32_t u; } v = {x};
    v.u = (v.u + 0x7FFFu + ((v.u >> 16) & 1u)) & 0xFFFF0000u;
    return v.f;
}

/* Elementwise |got - ref| <= atol + rtol*|ref|; reports the worst mismatches. */
int th_close_f32(const char *what, const float *got, const float *ref, size_t n,
                 double rtol, double atol);
int th_close_f64(const char *what, const double *got, const double *ref, size_t n,
                 double rtol, double atol);

/* ---- fixtures ---- */
typedef struct {
    char name[128];
    char dir[512];
    cJSON *json; /* case.json */
} th_case;

/* Open tests/fixtures/<name>/case.json; a failed CHECK (and 0) if missing. */
int th_case_open(th_case *c, const char *name);
void th_case_close(th_case *c);
/* Load <case>/<rel> (an .npy) converted to float32; NULL + failed CHECK if
 * missing. If shape is given it receives the array header (data NULL). */
float *th_load_f32(const th_case *c, const char *rel, npred_array *shape);
double *th_load_f64(const th_case *c, const char *rel, npred_array *shape);
int64_t *th_load_i64(const th_case *c, const char *rel, npred_array *shape);
/* Tolerance for a file: tolerance.per_file[rel] if present, else tolerance[kind]
 * (kind "forward" or "grads"), else the README defaults. */
void th_tol(const th_case *c, const char *kind, const char *rel, double *rtol, double *atol);
/* Compare a float32 result against fixture file rel with the case tolerance,
 * checking first that the fixture's shape is exactly dims[0..ndim) (a 0-d
 * fixture matches ndim 0), so that a wrongly shaped result of the right size
 * fails; TH_DIMS(B, C, H, W) spells ndim and dims. */
int th_compare_dims(const th_case *c, const char *kind, const char *rel, const float *got, int ndim,
                    const int64_t *dims);
#define TH_DIMS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}
/* cJSON lookup by a path of object keys, e.g. th_get(c->json, "args", "stride", NULL). */
cJSON *th_get(cJSON *root, ...);
double th_num(cJSON *root, double dflt, ...);

/* ---- fixtures <-> parameter table (src/nn/params.h) ---- */
struct npred_ptable_s;
/* Copy every file of files.<group> (an object key -> path) into the table entry
 * named prefix+key, whose shape it must have (keys listed in `skip`,
 * NULL-terminated, are ignored).
 * Returns the number of entries loaded; failed CHECKs for missing entries. */
int th_load_table(const th_case *c, void *table, const char *group, const char *prefix, const char *const *skip);
/* Compare every file of files.<group> with the table: values (kind "forward")
 * or, for group "grads", the gradient buffer (kind "grads"). */
int th_compare_table(const th_case *c, void *table, const char *group, const char *kind, const char *prefix,
                     const char *const *skip);

/* uniform in [-1, 1) from a tiny deterministic generator */
double th_rand(uint64_t *state);

/* Run a shell command line (stderr folded into stdout). Returns its exit code, or
 * -1 when it died from a signal; *out (may be NULL) gets the output (malloc'ed). */
int th_shell(char **out, const char *cmd);
/* The npred binary: $NPRED_BIN, else ./build/npred. */
const char *th_npred_bin(void);
/* Run `npred <args>` (printf-style) as th_shell does; -1 when the line is too long. */
int th_npred(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
