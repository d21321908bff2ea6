/* Raw stimuli for npred predict --raw: an .npy (uint8 or float), PNG files, or a
 * folder of PNGs (sorted by name). */
#include "raw_images.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_model.h"
#include "png_read.h"
#include "npred/npy.h"

void raw_images_free(raw_images *r)
{
    free(r->data);
    for (int i = 0; r->names && i < r->B; i++) free(r->names[i]);
    free(r->names);
    memset(r, 0, sizeof *r);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* one PNG file as (C, H, W) floats 0..255 (png_read.h) */
static npred_status read_png(const char *path, float **out, int *c, int *h, int *w)
{
    void *data = NULL;
    size_t len = 0;
    npred_status st = npred_file_read_all(path, &data, &len);
    if (!st) st = cli_png_decode(data, len, path, out, c, h, w);
    free(data);
    return st;
}

static int is_png(const char *p) { return cli_ends_with(p, ".png") || cli_ends_with(p, ".PNG"); }

npred_status raw_images_read(raw_images *r, const char *const *paths, int n_paths)
{
    memset(r, 0, sizeof *r);
    if (n_paths == 1 && cli_ends_with(paths[0], ".npy")) {
        npred_array a;
        npred_status st = npred_npy_read(paths[0], &a);
        if (st) return st;
        if (a.dtype == NPRED_DT_STR_U || a.dtype == NPRED_DT_STR_S || a.dtype == NPRED_DT_BOOL) {
            npred_array_free(&a);
            return npred_errorf(NPRED_ERR_FORMAT, "%s: images must be numbers (uint8 or float), not text or booleans", paths[0]);
        }
        int64_t B = 1, C = 1, H, W;
        if (a.ndim == 4) B = a.shape[0], C = a.shape[1], H = a.shape[2], W = a.shape[3];
        else if (a.ndim == 3) B = a.shape[0], H = a.shape[1], W = a.shape[2];
        else if (a.ndim == 2) H = a.shape[0], W = a.shape[1];
        else {
            npred_array_free(&a);
            return npred_errorf(NPRED_ERR_SHAPE, "%s: images must be (B, C, H, W), (B, H, W) or (H, W); the array has %d "
                                "dimensions", paths[0], a.ndim);
        }
        if (B < 1 || B > 0x7fffffff || C < 1 || H < 1 || W < 1) {
            npred_array_free(&a);
            return npred_errorf(NPRED_ERR_SHAPE, "%s: no images in the array", paths[0]);
        }
        st = npred_array_to_f32(&a, &r->data);
        npred_array_free(&a);
        if (st) return npred_error_prefix(st, "%s", paths[0]);
        r->B = (int)B, r->c = (int)C, r->h = (int)H, r->w = (int)W;
        r->names = calloc((size_t)B, sizeof *r->names);
        for (int i = 0; r->names && i < r->B; i++)
            if ((r->names[i] = malloc(24))) snprintf(r->names[i], 24, "%d", i);
        return r->names ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    /* PNG files and folders of PNGs */
    char **files = NULL;
    size_t nf = 0, cap = 0;
    npred_status st = NPRED_OK;
    for (int p = 0; p < n_paths && !st; p++) {
        struct stat sb;
        if (stat(paths[p], &sb) != 0) {
            st = npred_errorf(NPRED_ERR_IO, "%s: no such file or folder", paths[p]);
            break;
        }
        size_t first = nf;
        if (S_ISDIR(sb.st_mode)) {
            DIR *d = opendir(paths[p]);
            if (!d) {
                st = npred_errorf(NPRED_ERR_IO, "%s: cannot list the folder", paths[p]);
                break;
            }
            for (struct dirent *e; (e = readdir(d));) {
                if (!is_png(e->d_name)) continue;
                if (nf == cap) {
                    cap = cap ? 2 * cap : 64;
                    char **nb = realloc(files, cap * sizeof *files);
                    if (!nb) break;
                    files = nb;
                }
                size_t len = strlen(paths[p]) + strlen(e->d_name) + 2;
                if ((files[nf] = malloc(len))) snprintf(files[nf++], len, "%s/%s", paths[p], e->d_name);
            }
            closedir(d);
            if (nf == first) st = npred_errorf(NPRED_ERR_IO, "%s: the folder holds no .png file", paths[p]);
            else qsort(files + first, nf - first, sizeof *files, cmp_str);
        } else if (is_png(paths[p])) {
            if (nf == cap) {
                cap = cap ? 2 * cap : 64;
                char **nb = realloc(files, cap * sizeof *files);
                if (!nb) {
                    st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
                    break;
                }
                files = nb;
            }
            if (!(files[nf++] = strdup(paths[p]))) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory");
        } else {
            st = npred_errorf(NPRED_ERR_ARG, "%s: raw images are one .npy, .png files or folders of .png files", paths[p]);
        }
    }
    for (size_t i = 0; i < nf && !st; i++) {
        float *img = NULL;
        int c = 0, h = 0, w = 0;
        if ((st = read_png(files[i], &img, &c, &h, &w))) break;
        if (i == 0) {
            r->c = c, r->h = h, r->w = w;
            r->data = malloc(sizeof(float) * (size_t)c * h * w * nf);
            r->names = calloc(nf, sizeof *r->names);
            if (!r->data || !r->names) st = npred_errorf(NPRED_ERR_NOMEM, "out of memory for %zu images", nf);
        } else if (c != r->c || h != r->h || w != r->w) {
            st = npred_errorf(NPRED_ERR_SHAPE, "%s: %d x %d with %d channel(s), but %s is %d x %d with %d", files[i], h, w, c,
                              files[0], r->h, r->w, r->c);
        }
        if (!st) {
            memcpy(r->data + i * (size_t)c * h * w, img, sizeof(float) * (size_t)c * h * w);
            const char *base = strrchr(files[i], '/');
            r->names[i] = strdup(base ? base + 1 : files[i]);
            r->B = (int)i + 1;
        }
        free(img);
    }
    for (size_t i = 0; i < nf; i++) free(files[i]);
    free(files);
    if (st) raw_images_free(r);
    return st;
}
