/* zipfs: read-only file access to a folder or a .zip archive (see zipfs.h). */
#include "data/zipfs.h"
#include "npred/data.h"
#include "npred/npy.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zip.h>

typedef struct {
    char *name;          /* relative to the root, no trailing slash */
    zip_uint64_t index;  /* member index (files only) */
    int is_dir;
} zentry;

struct npred_zipfs {
    int is_zip;
    char *path;          /* folder or archive path as given */
    char *root;          /* zip: prefix of every member ("top/" or "") */
    zip_t *za;
    zentry *ents;        /* zip: sorted by name, unique */
    size_t n_ents;
};

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const zentry *)a)->name, ((const zentry *)b)->name);
}

static int ends_with_zip(const char *p)
{
    size_t n = strlen(p);
    return n >= 4 && !strcasecmp(p + n - 4, ".zip");
}

static npred_status push_ent(npred_zipfs *fs, size_t *cap, const char *name, size_t len,
                             zip_uint64_t index, int is_dir)
{
    if (fs->n_ents == *cap) {
        size_t nc = *cap ? 2 * *cap : 256;
        zentry *e = realloc(fs->ents, nc * sizeof *e);
        if (!e) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory listing the archive", fs->path);
        fs->ents = e;
        *cap = nc;
    }
    char *s = malloc(len + 1);
    if (!s) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory listing the archive", fs->path);
    memcpy(s, name, len);
    s[len] = '\0';
    fs->ents[fs->n_ents++] = (zentry){s, index, is_dir};
    return NPRED_OK;
}

static npred_status open_zip(npred_zipfs *fs)
{
    int err = 0;
    fs->za = zip_open(fs->path, ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!fs->za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        npred_status s = npred_errorf(err == ZIP_ER_NOENT || err == ZIP_ER_OPEN ? NPRED_ERR_IO : NPRED_ERR_FORMAT,
                                      "%s: cannot open zip archive: %s", fs->path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return s;
    }
    zip_int64_t n = zip_get_num_entries(fs->za, 0);
    /* root: the single top-level folder every member lies in, if any */
    const char *first = NULL;
    size_t top_len = 0;
    int single_top = n > 0;
    for (zip_int64_t i = 0; i < n && single_top; i++) {
        const char *nm = zip_get_name(fs->za, (zip_uint64_t)i, ZIP_FL_ENC_GUESS);
        if (!nm) return npred_errorf(NPRED_ERR_FORMAT, "%s: member %lld has no name", fs->path, (long long)i);
        const char *sl = strchr(nm, '/');
        if (!sl) { single_top = 0; break; }
        if (!first) { first = nm; top_len = (size_t)(sl - nm) + 1; }
        else if (strncmp(nm, first, top_len)) single_top = 0;
    }
    fs->root = malloc(single_top ? top_len + 1 : 1);
    if (!fs->root) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fs->path);
    if (single_top) memcpy(fs->root, first, top_len);
    fs->root[single_top ? top_len : 0] = '\0';
    size_t rl = strlen(fs->root), cap = 0;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *nm = zip_get_name(fs->za, (zip_uint64_t)i, ZIP_FL_ENC_GUESS);
        if (!nm) return npred_errorf(NPRED_ERR_FORMAT, "%s: member %lld has no name", fs->path, (long long)i);
        const char *rel = nm + rl;
        size_t len = strlen(rel);
        int is_dir = len > 0 && rel[len - 1] == '/';
        if (is_dir) len--;
        if (len == 0) continue;
        npred_status s = push_ent(fs, &cap, rel, len, (zip_uint64_t)i, is_dir);
        if (s) return s;
        /* implicit parent folders (archives need not list them) */
        for (size_t k = 0; k < len; k++)
            if (rel[k] == '/' && (s = push_ent(fs, &cap, rel, k, 0, 1))) return s;
    }
    if (fs->n_ents) qsort(fs->ents, fs->n_ents, sizeof *fs->ents, cmp_ent);
    size_t w = 0;
    for (size_t i = 0; i < fs->n_ents; i++) {
        if (w > 0 && !strcmp(fs->ents[w - 1].name, fs->ents[i].name)) {
            if (!fs->ents[i].is_dir) { /* a file wins over an implicit folder of the same name */
                free(fs->ents[w - 1].name);
                fs->ents[w - 1] = fs->ents[i];
            } else {
                free(fs->ents[i].name);
            }
            continue;
        }
        fs->ents[w++] = fs->ents[i];
    }
    fs->n_ents = w;
    return NPRED_OK;
}

npred_status npred_zipfs_open(npred_zipfs **out, const char *path)
{
    *out = NULL;
    if (!path || !*path) return npred_errorf(NPRED_ERR_ARG, "dataset path is empty");
    struct stat st;
    if (stat(path, &st) != 0) return npred_errorf(NPRED_ERR_IO, "%s: no such file or folder", path);
    npred_zipfs *fs = calloc(1, sizeof *fs);
    if (!fs) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    fs->path = dupstr(path);
    if (!fs->path) { free(fs); return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path); }
    /* strip trailing slashes of a folder path */
    for (size_t n = strlen(fs->path); n > 1 && fs->path[n - 1] == '/'; n--) fs->path[n - 1] = '\0';
    npred_status s = NPRED_OK;
    if (S_ISDIR(st.st_mode)) {
        fs->is_zip = 0;
    } else if (S_ISREG(st.st_mode) && ends_with_zip(path)) {
        fs->is_zip = 1;
        s = open_zip(fs);
    } else {
        s = npred_errorf(NPRED_ERR_ARG, "%s: expected a dataset folder or a .zip archive", path);
    }
    if (s) { npred_zipfs_free(fs); return s; }
    *out = fs;
    return NPRED_OK;
}

void npred_zipfs_free(npred_zipfs *fs)
{
    if (!fs) return;
    if (fs->za) zip_discard(fs->za);
    for (size_t i = 0; i < fs->n_ents; i++) free(fs->ents[i].name);
    free(fs->ents);
    free(fs->root);
    free(fs->path);
    free(fs);
}

int npred_zipfs_is_zip(const npred_zipfs *fs) { return fs->is_zip; }

const char *npred_zipfs_display(const npred_zipfs *fs, const char *rel, char *buf, size_t bufsize)
{
    if (fs->is_zip) snprintf(buf, bufsize, "%s:%s%s", fs->path, fs->root, rel);
    else snprintf(buf, bufsize, "%s%s%s", fs->path, *rel ? "/" : "", rel);
    return buf;
}

static const zentry *find_ent(const npred_zipfs *fs, const char *rel)
{
    size_t lo = 0, hi = fs->n_ents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(fs->ents[mid].name, rel);
        if (c == 0) return &fs->ents[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static void join(const npred_zipfs *fs, const char *rel, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s", fs->path, *rel ? "/" : "", rel);
}

int npred_zipfs_kind(const npred_zipfs *fs, const char *rel)
{
    if (fs->is_zip) {
        if (!*rel) return 2;
        const zentry *e = find_ent(fs, rel);
        return e ? (e->is_dir ? 2 : 1) : 0;
    }
    char p[4096];
    join(fs, rel, p, sizeof p);
    struct stat st;
    if (stat(p, &st) != 0) return 0;
    return S_ISDIR(st.st_mode) ? 2 : S_ISREG(st.st_mode) ? 1 : 0;
}

void npred_zipfs_names_free(char **names, size_t n)
{
    if (!names) return;
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static npred_status push_name(char ***names, size_t *n, size_t *cap, const char *s, size_t len, int dir)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        char **a = realloc(*names, nc * sizeof *a);
        if (!a) return npred_errorf(NPRED_ERR_NOMEM, "out of memory listing a folder");
        *names = a;
        *cap = nc;
    }
    char *d = malloc(len + 2);
    if (!d) return npred_errorf(NPRED_ERR_NOMEM, "out of memory listing a folder");
    memcpy(d, s, len);
    if (dir) d[len++] = '/';
    d[len] = '\0';
    (*names)[(*n)++] = d;
    return NPRED_OK;
}

npred_status npred_zipfs_list(const npred_zipfs *fs, const char *dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    char disp[4096];
    if (npred_zipfs_kind(fs, dir) != 2)
        return npred_errorf(NPRED_ERR_IO, "%s: folder not found", npred_zipfs_display(fs, dir, disp, sizeof disp));
    size_t cap = 0;
    npred_status s = NPRED_OK;
    if (fs->is_zip) {
        size_t dl = strlen(dir);
        for (size_t i = 0; i < fs->n_ents && !s; i++) {
            const char *nm = fs->ents[i].name;
            if (dl) {
                if (strncmp(nm, dir, dl) || nm[dl] != '/') continue;
                nm += dl + 1;
            }
            if (!*nm || strchr(nm, '/')) continue;
            s = push_name(names, n, &cap, nm, strlen(nm), fs->ents[i].is_dir);
        }
    } else {
        char p[4096];
        join(fs, dir, p, sizeof p);
        DIR *d = opendir(p);
        if (!d) return npred_errorf(NPRED_ERR_IO, "%s: cannot list folder", p);
        struct dirent *de;
        while (!s && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char q[4096 + 260];
            snprintf(q, sizeof q, "%s/%s", p, de->d_name);
            struct stat st;
            int is_dir = stat(q, &st) == 0 && S_ISDIR(st.st_mode);
            s = push_name(names, n, &cap, de->d_name, strlen(de->d_name), is_dir);
        }
        closedir(d);
    }
    if (s) {
        npred_zipfs_names_free(*names, *n);
        *names = NULL;
        *n = 0;
        return s;
    }
    if (*n) qsort(*names, *n, sizeof **names, cmp_str);
    return NPRED_OK;
}

npred_status npred_zipfs_read(npred_zipfs *fs, const char *rel, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    char disp[4096];
    npred_zipfs_display(fs, rel, disp, sizeof disp);
    if (!fs->is_zip) return npred_file_read_all(disp, buf, len);
    const zentry *e = find_ent(fs, rel);
    if (!e || e->is_dir) return npred_errorf(NPRED_ERR_IO, "%s: no such member in the archive", disp);
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(fs->za, e->index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot read the member's directory entry", disp);
    size_t n = (size_t)st.size;
    char *b = malloc(n ? n : 1);
    if (!b) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory (%zu bytes)", disp, n);
    zip_file_t *zf = zip_fopen_index(fs->za, e->index, 0);
    if (!zf) {
        free(b);
        return npred_errorf(NPRED_ERR_FORMAT, "%s: cannot open member: %s", disp, zip_strerror(fs->za));
    }
    size_t got = 0;
    while (got < n) {
        zip_int64_t r = zip_fread(zf, b + got, n - got);
        if (r < 0) {
            npred_status s = npred_errorf(NPRED_ERR_FORMAT, "%s: broken member: %s", disp, zip_file_strerror(zf));
            zip_fclose(zf);
            free(b);
            return s;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    /* read past the end once more so libzip verifies the CRC */
    char extra;
    zip_int64_t r = got == n ? zip_fread(zf, &extra, 1) : 0;
    if (r < 0 || got != n) {
        npred_status s = npred_errorf(NPRED_ERR_FORMAT, "%s: broken member: %s (%zu of %zu bytes)", disp,
                                      r < 0 ? zip_file_strerror(zf) : "short read", got, n);
        zip_fclose(zf);
        free(b);
        return s;
    }
    int cerr = zip_fclose(zf);
    if (cerr != 0) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, cerr);
        npred_status s = npred_errorf(NPRED_ERR_FORMAT, "%s: broken member: %s", disp, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        free(b);
        return s;
    }
    *buf = b;
    *len = n;
    return NPRED_OK;
}

npred_status npred_dataset_read_npy(const char *path, const char *rel, npred_array *out)
{
    memset(out, 0, sizeof *out);
    npred_zipfs *fs = NULL;
    npred_status st = npred_zipfs_open(&fs, path);
    if (st) return st;
    char name[1200];
    npred_zipfs_display(fs, rel, name, sizeof name);
    void *buf = NULL;
    size_t len = 0;
    if (npred_zipfs_kind(fs, rel) != 1) st = npred_errorf(NPRED_ERR_IO, "%s: no such file", name);
    else st = npred_zipfs_read(fs, rel, &buf, &len);
    if (!st) st = npred_npy_parse(buf, len, name, out);
    free(buf);
    npred_zipfs_free(fs);
    return st;
}
