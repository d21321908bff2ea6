/* zipfs: read-only file access to a folder or a .zip archive (see zipfs.h). */
#include "data/zipfs.h"
#include "npred/data.h"
#include "npred/npy.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zip.h>

#include "data/h5fs.h"

typedef struct {
    char *name;          /* relative to the root, no trailing slash */
    zip_uint64_t index;  /* member index (files only) */
    int is_dir;
} zentry;

struct npred_zipfs {
    int is_zip;
    int is_h5;           /* an HDF5 file seen as the file tree (h5fs.h) */
    npred_h5fs *h5;
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

/* One member (a trailing '/' marks a folder) and its implicit parent folders. */
static npred_status add_member(npred_zipfs *fs, size_t *cap, const char *rel, zip_uint64_t index)
{
    size_t len = strlen(rel);
    int is_dir = len > 0 && rel[len - 1] == '/';
    if (is_dir) len--;
    if (len == 0) return NPRED_OK;
    npred_status s = push_ent(fs, cap, rel, len, index, is_dir);
    if (s) return s;
    /* implicit parent folders (archives need not list them) */
    for (size_t k = 0; k < len; k++)
        if (rel[k] == '/' && (s = push_ent(fs, cap, rel, k, 0, 1))) return s;
    return NPRED_OK;
}

static npred_status sort_ents(npred_zipfs *fs);

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
        npred_status s = add_member(fs, &cap, nm + rl, (zip_uint64_t)i);
        if (s) return s;
    }
    return sort_ents(fs);
}

/* An HDF5 file: its virtual files (h5fs.h), indexed by their h5fs number. */
static npred_status open_h5(npred_zipfs *fs)
{
    npred_status s = npred_h5fs_open(&fs->h5, fs->path);
    if (s) return s;
    fs->root = calloc(1, 1);
    if (!fs->root) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", fs->path);
    size_t cap = 0, n = npred_h5fs_count(fs->h5);
    for (size_t i = 0; i < n && !s; i++) s = add_member(fs, &cap, npred_h5fs_name(fs->h5, i), i);
    return s ? s : sort_ents(fs);
}

/* Sort the entries by name and drop duplicates (implicit folders). */
static npred_status sort_ents(npred_zipfs *fs)
{
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
    } else if (S_ISREG(st.st_mode) && npred_h5fs_is_hdf5(path)) {
        fs->is_h5 = 1;
        s = open_h5(fs);
    } else {
        s = npred_errorf(NPRED_ERR_ARG, "%s: expected a dataset folder, a .zip archive or an HDF5 file", path);
    }
    if (s) { npred_zipfs_free(fs); return s; }
    *out = fs;
    return NPRED_OK;
}

void npred_zipfs_free(npred_zipfs *fs)
{
    if (!fs) return;
    if (fs->za) zip_discard(fs->za);
    npred_h5fs_free(fs->h5);
    for (size_t i = 0; i < fs->n_ents; i++) free(fs->ents[i].name);
    free(fs->ents);
    free(fs->root);
    free(fs->path);
    free(fs);
}

int npred_zipfs_is_zip(const npred_zipfs *fs) { return fs->is_zip; }
int npred_zipfs_is_hdf5(const npred_zipfs *fs) { return fs->is_h5; }

const char *npred_zipfs_display(const npred_zipfs *fs, const char *rel, char *buf, size_t bufsize)
{
    if (fs->is_zip || fs->is_h5) snprintf(buf, bufsize, "%s:%s%s", fs->path, fs->root, rel);
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
    if (fs->is_zip || fs->is_h5) {
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
    if (fs->is_zip || fs->is_h5) {
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
    if (!fs->is_zip && !fs->is_h5) return npred_file_read_all(disp, buf, len);
    const zentry *e = find_ent(fs, rel);
    if (!e || e->is_dir) return npred_errorf(NPRED_ERR_IO, "%s: no such member in the archive", disp);
    if (fs->is_h5) return npred_h5fs_read(fs->h5, (size_t)e->index, buf, len);
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

/* ---------------------------------------------------------------- writing a zip */

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int strlist_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t c = l->cap ? 2 * l->cap : 256;
        char **v = realloc(l->v, c * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = c;
    }
    l->v[l->n] = strdup(s);
    return l->v[l->n++] ? 0 : -1;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}


/* Depth-first listing of base/rel, entries sorted by name; directories end in '/'. */
static npred_status list_tree(const char *base, const char *rel, strlist *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    DIR *d = opendir(path);
    if (!d) return npred_errorf(NPRED_ERR_IO, "%s: cannot list: %s", path, strerror(errno));
    strlist names = {0};
    struct dirent *e;
    int bad = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strlist_push(&names, e->d_name)) bad = 1;
    closedir(d);
    if (bad) {
        strlist_free(&names);
        return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    }
    qsort(names.v, names.n, sizeof *names.v, cmp_str);
    npred_status s = NPRED_OK;
    for (size_t i = 0; i < names.n && !s; i++) {
        char sub[4096], full[4096];
        struct stat st;
        int k1 = snprintf(sub, sizeof sub, "%s/%s", rel, names.v[i]);
        int k2 = snprintf(full, sizeof full, "%s/%s", base, sub);
        if (k1 < 0 || (size_t)k1 >= sizeof sub || k2 < 0 || (size_t)k2 >= sizeof full) {
            s = npred_errorf(NPRED_ERR_ARG, "%s/%s: path too long", rel, names.v[i]);
        } else if (lstat(full, &st) != 0) {
            s = npred_errorf(NPRED_ERR_IO, "%s: %s", full, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            char dn[4100];
            snprintf(dn, sizeof dn, "%s/", sub);
            if (strlist_push(out, dn)) s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
            else s = list_tree(base, sub, out);
        } else if (strlist_push(out, sub)) {
            s = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        }
    }
    strlist_free(&names);
    return s;
}

/* Zip out_dir/name/ into out_dir/name.zip: members "name/...", stored, fixed
 * timestamps, sorted, so the archive is byte-identical for identical trees. */
npred_status npred_tree_write_zip(const char *out_dir, const char *name)
{
    char zpath[4096];
    snprintf(zpath, sizeof zpath, "%s/%s.zip", out_dir, name);
    remove(zpath);
    strlist members = {0};
    char top[300];
    snprintf(top, sizeof top, "%s/", name);
    if (strlist_push(&members, top)) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    npred_status s = list_tree(out_dir, name, &members);
    if (s) {
        strlist_free(&members);
        return s;
    }
    int err = 0;
    zip_t *za = zip_open(zpath, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        s = npred_errorf(NPRED_ERR_IO, "%s: cannot create zip: %s", zpath, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        strlist_free(&members);
        return s;
    }
    const time_t mtime = 1655856000; /* 2022-06-22 00:00 UTC */
    for (size_t i = 0; i < members.n && !s; i++) {
        const char *mname = members.v[i];
        size_t len = strlen(mname);
        zip_int64_t idx;
        if (mname[len - 1] == '/') {
            idx = zip_dir_add(za, mname, ZIP_FL_ENC_UTF_8);
        } else {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", out_dir, mname);
            zip_source_t *src = zip_source_file(za, full, 0, -1);
            if (!src) {
                s = npred_errorf(NPRED_ERR_IO, "%s: %s", full, zip_strerror(za));
                break;
            }
            idx = zip_file_add(za, mname, src, ZIP_FL_ENC_UTF_8);
            if (idx < 0) zip_source_free(src);
        }
        if (idx < 0 || zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0 ||
            zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0) != 0)
            s = npred_errorf(NPRED_ERR_IO, "%s: cannot add %s: %s", zpath, mname, zip_strerror(za));
    }
    strlist_free(&members);
    if (s) {
        zip_discard(za);
        remove(zpath);
        return s;
    }
    if (zip_close(za) != 0) {
        s = npred_errorf(NPRED_ERR_IO, "%s: cannot write zip: %s", zpath, zip_strerror(za));
        zip_discard(za);
        remove(zpath);
    }
    return s;
}

