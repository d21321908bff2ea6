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

/* The loader arguments of --loader (batch_size 1 when it sets none; its paths are not
 * used), or the kit's defaults when text is NULL; cfg is freed on failure. */
static int loader_config(const import_video_args *a, const char *text, npred_video_loader_config *lc)
{
    npred_video_loader_config_init(lc);
    cJSON *o = cJSON_Parse(text ? text : "{}");
    if (cJSON_IsObject(o) && !cJSON_GetObjectItemCaseSensitive(o, "batch_size")) cJSON_AddNumberToObject(o, "batch_size", 1);
    char *s = cJSON_IsObject(o) ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    char **paths = NULL;
    size_t n_paths = 0;
    npred_status st = npred_video_loader_config_parse(lc, s ? s : text, &paths, &n_paths);
    free(s);
    for (size_t i = 0; i < n_paths; i++) free(paths[i]);
    free(paths);
    if (!st) return 0;
    npred_video_loader_config_free(lc);
    return cli_fail(npred_error_prefix(st, "%s", a->loader ? a->loader : "loader"), "import");
}

static void print_summary(npred_video_model *m, const import_video_args *a, int from_scans)
{
    char *d = npred_video_model_describe(m);
    printf("imported %s -> %s/model.safetensors\n\n%s\n", a->src, a->out, d ? d : "");
    free(d);
    int c, h, w;
    npred_video_model_input_shape(m, &c, &h, &w);
    printf("sessions:       %d%s\n", npred_video_model_n_sessions(m), from_scans ? " (checked against --data)" : "");
    for (int i = 0; i < npred_video_model_n_sessions(m); i++)
        printf("  %s: %d neurons\n", npred_video_model_session_key(m, i), npred_video_model_session_neurons(m, i));
    printf("input:          %d channels, %d x %d frames%s\n", c, h, w,
           from_scans ? " (from --data)" : a->height ? "" : " (the 2023 frame size; --height/--width or --data set it)");
}

int import_video(const import_video_args *a)
{
    if ((a->height || a->width) && a->n_data)
        return cli_usage_error("import", "give --data or --height/--width, not both (the scans give the frame size)");
    char target[4096];
    snprintf(target, sizeof target, "%s/model.safetensors", a->out);
    struct stat sb;
    if (!a->force && stat(target, &sb) == 0) {
        fprintf(stderr, "npred import: %s exists (use --force to overwrite)\n", target);
        return 1;
    }
    char *loader_text = NULL;
    if (a->loader && !(loader_text = cli_read_text(a->loader))) return cli_fail(NPRED_ERR_IO, "import");
    npred_video_loaders *L = NULL;
    npred_video_model *m = NULL;
    const char *keys[64];
    int nn[64], n = 0, H = a->height, W = a->width, C = 0, rc = 0;
    npred_video_loader_config lc;
    if (a->n_data > 64) rc = cli_usage_error("import", "--data: at most 64 scans");
    if (!rc && (a->n_data || loader_text) && !(rc = loader_config(a, loader_text, &lc))) {
        npred_status so = a->n_data ? npred_video_loaders_open(&L, a->data, a->n_data, &lc) : NPRED_OK;
        npred_video_loader_config_free(&lc);
        if (so) rc = cli_fail(so, "import --data");
    }
    for (size_t i = 0; !rc && i < a->n_data; i++) {
        npred_video_session_info si;
        npred_video_loaders_session(L, i, &si);
        keys[n] = si.data_key, nn[n] = (int)si.n_neurons, n++;
        if (i && (si.channels != C || si.height != H || si.width != W)) {
            fprintf(stderr, "npred import: --data: %s gives videos of %d channels, %d x %d; %s gives %d, %d x %d "
                    "(a model takes one size)\n", a->data[i], si.channels, si.height, si.width, a->data[0], C, H, W);
            rc = 1;
        }
        C = si.channels, H = si.height, W = si.width;
    }
    npred_status st = NPRED_OK;
    if (!rc) st = npred_video_model_import_pth(&m, a->src, a->config_text, a->config, H, W, keys, nn, n, 1);
    if (!rc && st) rc = cli_fail(st, "import");
    if (!rc && a->n_data) {
        int mc, mh, mw;
        npred_video_model_input_shape(m, &mc, &mh, &mw);
        if (mc != C) {
            fprintf(stderr, "npred import: the model takes %d input channels (%s: core_dict.input_channels); the loader "
                    "gives %d (include_behavior, include_pupil_centers_as_channels of --loader)\n", mc, a->config, C);
            rc = 1;
        }
    }
    if (!rc && loader_text && (st = npred_video_model_set_loader_json(m, loader_text)))
        rc = cli_fail(npred_error_prefix(st, "%s", a->loader), "import");
    if (!rc && (st = cli_mkdirs(a->out))) rc = cli_fail(st, "import");
    if (!rc && (st = npred_video_model_save(m, a->out))) rc = cli_fail(st, "import");
    if (!rc && !a->quiet) print_summary(m, a, a->n_data > 0);
    npred_video_model_free(m);
    npred_video_loaders_free(L);
    free(loader_text);
    return rc;
}
