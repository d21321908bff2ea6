/* Helpers shared by the model commands. */
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_model.h"
#include "npred/data.h"
#include "npred/npy.h"

#include <cJSON.h>

int cli_ends_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && !strcmp(path + n - k, suffix);
}


/* the same file or folder: by device and inode when both exist, else by name */
static int same_path(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    return strcmp(a, b) == 0;
}

int cli_dataset_paths(const char *cmd, const char *dataset, const char *const *json_paths, size_t n_json,
                      const char *const *data, size_t n_data, const char *const **paths, size_t *n_paths)
{
    if (n_data && n_json) {
        int same = n_data == n_json;
        for (size_t i = 0; same && i < n_data; i++) same = same_path(data[i], json_paths[i]);
        if (!same) {
            char a[1024] = "", b[1024] = "";
            for (size_t i = 0; i < n_data; i++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%s", i ? ", " : "", data[i]);
            for (size_t i = 0; i < n_json; i++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%s", i ? ", " : "", json_paths[i]);
            return cli_usage_error(cmd, "--data (%s) and the \"paths\" of %s (%s) name different scans: give the "
                                   "scans once (--data, or \"paths\" in --dataset), or the same ones in the same "
                                   "order", a, dataset, b);
        }
    }
    *paths = n_data ? data : json_paths;
    *n_paths = n_data ? n_data : n_json;
    if (!*n_paths) return cli_usage_error(cmd, "no scans: give --data SCAN... or \"paths\" in --dataset");
    return 0;
}

char *cli_read_text(const char *path)
{
    void *buf;
    size_t len;
    if (npred_file_read_all(path, &buf, &len)) return NULL;
    char *txt = realloc(buf, len + 1);
    if (!txt) {
        free(buf);
        npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    txt[len] = 0;
    return txt;
}

npred_status cli_write_output(const char *path, const char *text, size_t len)
{
    if (strcmp(path, "-")) return npred_write_atomic(path, text, len);
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout))
        return npred_errorf(NPRED_ERR_IO, "standard output: write failed: %s", strerror(errno));
    return NPRED_OK;
}

int cli_write_per_neuron(const char *cmd, const char *path, char *csv, int quiet)
{
    npred_status st = csv ? cli_write_output(path, csv, strlen(csv)) : NPRED_ERR_NOMEM;
    free(csv);
    if (st) return cli_fail(st, cmd);
    if (!quiet) printf("per-neuron table: %s\n", path);
    return 0;
}

npred_status cli_mkdirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return npred_errorf(NPRED_ERR_ARG, "%s: path too long", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        struct stat sb;
        if (stat(p, &sb) != 0) {
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return npred_errorf(NPRED_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
        } else if (!S_ISDIR(sb.st_mode)) {
            return npred_errorf(NPRED_ERR_IO, "%s: exists and is not a directory", p);
        }
        *s = c;
        if (!c) break;
    }
    return NPRED_OK;
}

/* the options the model implies, where the dataset config left them unset */
static void model_defaults(npred_loader_config *cfg, const cJSON *given, const npred_model *m)
{
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    int bc = npred_model_behavior_channels(m);
    if (!cJSON_HasObjectItem(given, "include_eye_position") && npred_model_has_shifter(m)) cfg->include_eye_position = 1;
    if (!cJSON_HasObjectItem(given, "include_behavior") && (c == 4 || bc > 0)) cfg->include_behavior = 1;
    if (!cJSON_HasObjectItem(given, "add_behavior_as_channels") && bc > 0 && c != 4) cfg->add_behavior_as_channels = 0;
}

int cli_open_loaders(const char *cmd, npred_model *m, const char *dataset, const char *const *data, size_t n_data,
                     int batch, int quiet, npred_loader_config *cfg, npred_loaders **L)
{
    *L = NULL;
    npred_loader_config_init(cfg);
    cfg->batch_size = batch;
    char **jpaths = NULL, *text = NULL;
    size_t n_jpaths = 0;
    cJSON *given = NULL;
    int rc = 1;
    npred_status st;
    if (dataset) {
        if (!(text = cli_read_text(dataset))) {
            cli_fail(NPRED_ERR_IO, cmd);
            goto done;
        }
        given = cJSON_Parse(text);
        if ((st = npred_loader_config_parse(cfg, text, &jpaths, &n_jpaths))) {
            cli_fail(npred_error_prefix(st, "%s", dataset), cmd);
            goto done;
        }
    }
    const char *const *paths = n_data ? data : (const char *const *)jpaths;
    size_t n_paths = n_data ? n_data : n_jpaths;
    if (!n_paths) {
        rc = cli_usage_error(cmd, "no scans: give --data SCAN or \"paths\" in --dataset");
        goto done;
    }
    model_defaults(cfg, given, m);
    if ((st = npred_loaders_open(L, paths, n_paths, cfg))) {
        cli_fail(st, cmd);
        goto done;
    }
    /* scale the images to the model's input size unless the config chose a scale */
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    npred_session_info si;
    npred_loaders_session(*L, 0, &si);
    if (!cfg->scale.set && (si.img_h != h || si.img_w != w)) {
        double scale = (double)h / si.img_h;
        for (size_t s = 0; s < npred_loaders_count(*L); s++) {
            npred_loaders_session(*L, s, &si);
            if (npred_rescale_size(si.img_h, scale) != h || npred_rescale_size(si.img_w, scale) != w) {
                fprintf(stderr,
                        "npred %s: %s: images are %d x %d; no scale maps them to the model's %d x %d "
                        "(set \"scale\" in --dataset)\n",
                        cmd, paths[s], si.img_h, si.img_w, h, w);
                goto done;
            }
        }
        cfg->scale.set = 1;
        cfg->scale.v = scale;
        npred_loaders_free(*L);
        *L = NULL;
        if ((st = npred_loaders_open(L, paths, n_paths, cfg))) {
            cli_fail(st, cmd);
            goto done;
        }
        if (!quiet) fprintf(stderr, "npred %s: images scaled by %g to the model's %d x %d\n", cmd, scale, h, w);
    }
    rc = 0;
done:
    if (rc) {
        npred_loaders_free(*L);
        *L = NULL;
    }
    npred_loader_paths_free(jpaths, n_jpaths);
    cJSON_Delete(given);
    free(text);
    return rc;
}

float *cli_read_npy_f32(const char *path, npred_array *a, const char *what, npred_status *st)
{
    if ((*st = npred_npy_read(path, a))) return NULL;
    float *v = NULL;
    if ((*st = npred_array_to_f32(a, &v))) {
        npred_error_prefix(*st, "%s (%s)", path, what);
        return NULL;
    }
    for (size_t i = 0; i < a->count; i++)
        if (!isfinite(v[i])) {
            *st = npred_errorf(NPRED_ERR_VALUE, "%s: %s hold a non-finite value (NaN or Inf) at element %zu", path,
                               what, i);
            free(v);
            return NULL;
        }
    return v;
}

int cli_pick_session(const char *cmd, const npred_model *m, const char **key)
{
    int n = npred_model_n_sessions(m);
    if (!*key) {
        if (n != 1) {
            fprintf(stderr, "npred %s: the model has %d sessions; choose one with --session (", cmd, n);
            for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", i ? ", " : "", npred_model_session_key(m, i));
            fprintf(stderr, ")\n");
            return -1;
        }
        *key = npred_model_session_key(m, 0);
    }
    int si = npred_model_session_index(m, *key);
    if (si < 0) {
        fprintf(stderr, "npred %s: unknown session '%s'; the model has: ", cmd, *key);
        for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", i ? ", " : "", npred_model_session_key(m, i));
        fprintf(stderr, "\n");
    }
    return si;
}
