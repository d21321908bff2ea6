/* LD_PRELOAD shim for tests/test_faults.c: makes write, fsync or rename fail
 * like a full or failing disk, for files whose path contains a given text.
 *
 *   NPRED_FAULT_OP    write | fsync | rename
 *   NPRED_FAULT_PATH  the call fails only for paths containing this text
 *                     (write/fsync: the path the descriptor is open on)
 *   NPRED_FAULT_NTH   the first failing call is the N-th matching one (default
 *                     1); every later matching call fails too (a full disk
 *                     stays full)
 * write fails with ENOSPC, fsync and rename with EIO. Built as a shared object
 * by the Makefile (build/tests/fault_shim.so); not part of the library. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long n_matching;

static int path_matches(const char *p)
{
    const char *m = getenv("NPRED_FAULT_PATH");
    return m && *m && p && strstr(p, m) != NULL;
}

static int fd_matches(int fd)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    return path_matches(target);
}

/* this op is the one to fail, and its turn has come */
static int due(const char *op)
{
    const char *o = getenv("NPRED_FAULT_OP");
    if (!o || strcmp(o, op)) return 0;
    const char *nth = getenv("NPRED_FAULT_NTH");
    long first = nth ? atol(nth) : 1;
    return __atomic_add_fetch(&n_matching, 1, __ATOMIC_SEQ_CST) >= first;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (fd > 2 && fd_matches(fd) && due("write")) {
        errno = ENOSPC;
        return -1;
    }
    return real(fd, buf, n);
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (fd_matches(fd) && due("fsync")) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int rename(const char *from, const char *to)
{
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    if (path_matches(to) && due("rename")) {
        errno = EIO;
        return -1;
    }
    return real(from, to);
}
