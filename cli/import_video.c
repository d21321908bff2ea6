/* npred import MODEL.pth --config make_video_model.json --out DIR: the SENSORIUM 2023
 * kit's trained video model (a PyTorch state_dict) into an npred video model folder
 * (docs/video.md#importing-the-kits-pth-checkpoints). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_model.h"
#include "import_video.h"
#include "npred/video.h"
#include "npred/video_model.h"

/* The mouse_video_loader arguments of --dataset (batch_size 1 when it sets none) and
 * their "paths", or the kit's defaults when text is NULL; lc is freed on failure. */
static int loader_config(const import_video_args *a, const char *text, npred_video_loader_config *lc, char ***paths,
                         size_t *n_paths)
{
    npred_video_loader_config_init(lc);
    cJSON *o = cJSON_Parse(text ? text : "{}");
    if (cJSON_IsObject(o) && !cJSON_GetObjectItemCaseSensitive(o, "batch_size")) cJSON_AddNumberToObject(o, "batch_size", 1);
    char *s = cJSON_IsObject(o) ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    npred_status st = npred_video_loader_config_parse(lc, s ? s : text, paths, n_paths);
    free(s);
    if (!st) return 0;
    npred_video_loader_config_free(lc);
    return cli_fail(npred_error_prefix(st, "%s", a->dataset ? a->dataset : "loader"), "import");
}

static void print_summary(npred_video_model *m, const import_video_args *a, int from_scans)
{
    char *d = npred_video_model_describe(m);
    printf("imported %s -> %s/model.safetensors\n\n%s\n", a->src, a->out, d ? d : "");
    free(d);
    int c, h, w;
    npred_video_model_input_shape(m, &c, &h, &w);
    printf("sessions:       %d%s\n", npred_video_model_n_sessions(m), from_scans ? " (checked against the scans)" : "");
    for (int i = 0; i < npred_video_model_n_sessions(m); i++)
        printf("  %s: %d neurons\n", npred_video_model_session_key(m, i), npred_video_model_session_neurons(m, i));
    printf("input:          %d channels, %d x %d frames%s\n", c, h, w,
           from_scans ? " (from the scans)" : a->height ? "" : " (the 2023 frame size; --height/--width or --data set it)");
}

/* the scans (--data, or --dataset's "paths") opened with the loader arguments; *n 0
 * when there are none */
static int open_scans(const import_video_args *a, const char *text, npred_video_loaders **L, size_t *n)
{
    *n = 0;
    if (!a->n_data && !text) return 0;
    npred_video_loader_config lc;
    char **jp = NULL;
    size_t nj = 0;
    int rc = loader_config(a, text, &lc, &jp, &nj);
    if (rc) return rc;
    const char *const *scans = NULL;
    if (a->n_data || nj)
        rc = cli_dataset_paths("import", a->dataset, (const char *const *)jp, nj, a->data, a->n_data, &scans, n);
    if (!rc && *n > 64) rc = cli_usage_error("import", "at most 64 scans");
    if (!rc && (a->height || a->width) && *n)
        rc = cli_usage_error("import", "give scans (--data or \"paths\" in --dataset) or --height/--width, not both "
                             "(the scans give the frame size)");
    npred_status st = rc || !*n ? NPRED_OK : npred_video_loaders_open(L, scans, *n, &lc);
    if (st) rc = cli_fail(st, "import");
    for (size_t i = 0; i < nj; i++) free(jp[i]);
    free(jp);
    npred_video_loader_config_free(&lc);
    return rc;
}

int import_video(const import_video_args *a)
{
    char target[4096];
    snprintf(target, sizeof target, "%s/model.safetensors", a->out);
    struct stat sb;
    if (!a->force && stat(target, &sb) == 0) {
        fprintf(stderr, "npred import: %s exists (use --force to overwrite)\n", target);
        return 1;
    }
    char *text = NULL;
    if (a->dataset && !(text = cli_read_text(a->dataset))) return cli_fail(NPRED_ERR_IO, "import");
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    const char *keys[64];
    int nn[64], H = a->height, W = a->width, C = 0;
    size_t n = 0;
    int rc = open_scans(a, text, &L, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, i, &si);
        keys[i] = si.data_key, nn[i] = (int)si.n_neurons;
        if (i && (si.channels != C || si.height != H || si.width != W)) {
            fprintf(stderr, "npred import: the scan %s gives videos of %d channels, %d x %d; %s gives %d, %d x %d "
                    "(a model takes one size)\n", keys[i], si.channels, si.height, si.width, keys[0], C, H, W);
            rc = 1;
        }
        C = si.channels, H = si.height, W = si.width;
    }
    npred_status st = NPRED_OK;
    if (!rc && (st = npred_video_model_import_pth(&m, a->src, a->config_text, a->config, H, W, keys, nn, (int)n, 1)))
        rc = cli_fail(st, "import");
    if (!rc && n) {
        int mc, mh, mw;
        npred_video_model_input_shape(m, &mc, &mh, &mw);
        if (mc != C) {
            fprintf(stderr, "npred import: the model takes %d input channels (%s: core_dict.input_channels); the loader "
                    "gives %d (include_behavior, include_pupil_centers_as_channels of --dataset)\n", mc, a->config, C);
            rc = 1;
        }
    }
    if (!rc && text && (st = npred_video_model_set_loader_json(m, text)))
        rc = cli_fail(npred_error_prefix(st, "%s", a->dataset), "import");
    if (!rc && (st = cli_mkdirs(a->out))) rc = cli_fail(st, "import");
    if (!rc && (st = npred_video_model_save(m, a->out))) rc = cli_fail(st, "import");
    if (!rc && !a->quiet) print_summary(m, a, n > 0);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    free(text);
    return rc;
}
