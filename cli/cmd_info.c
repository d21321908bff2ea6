/* npred info MODEL: the architecture in the reference's words, parameter counts
 * and the input/output shapes of every session. */
#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "npred/video_model.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred info MODEL [--json] [--height H --width W]\n\n"
            "Describe a model: a run directory (holding model.safetensors), a .safetensors file,\n"
            "or a PyTorch .pth checkpoint (imported on the fly, architecture inferred), or a\n"
            "video model (docs/video.md: its parts, temporal cut-off and inputs). Prints\n"
            "the core and readout reprs as neuralpredictors 0.3.0 prints them, parameter counts\n"
            "per part and per neuron, and the input/output shapes of every session.\n\n"
            "options:\n"
            "  --json        one JSON object (counts, shapes, sessions, resolved config)\n"
            "  --height H    image height for a .pth [36]\n"
            "  --width W     image width for a .pth [64]\n"
            "  -h, --help    this help\n");
}

static cJSON *int3(int a, int b, int c)
{
    int v[3] = {a, b, c};
    return cJSON_CreateIntArray(v, 3);
}

static cJSON *info_json(npred_model *m, const char *path)
{
    int c, h, w, oc, oh, ow;
    npred_model_input_shape(m, &c, &h, &w);
    npred_model_core_output_shape(m, &oc, &oh, &ow);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    char *d = npred_model_describe(m);
    cJSON_AddStringToObject(o, "description", d ? d : "");
    free(d);
    cJSON_AddItemToObject(o, "input_shape", int3(c, h, w));
    cJSON_AddItemToObject(o, "core_output_shape", int3(oc, oh, ow));
    cJSON *p = cJSON_AddObjectToObject(o, "parameters");
    cJSON_AddNumberToObject(p, "total", (double)npred_model_param_count(m, NULL));
    cJSON_AddNumberToObject(p, "core", (double)npred_model_param_count(m, "core."));
    cJSON_AddNumberToObject(p, "buffers", (double)npred_model_buffer_count(m));
    int pupil = npred_model_pupil_channels(m), behavior = npred_model_behavior_channels(m);
    cJSON_AddBoolToObject(o, "shifter", npred_model_has_shifter(m));
    cJSON_AddNumberToObject(o, "behavior_channels", behavior);
    cJSON *ss = cJSON_AddArrayToObject(o, "sessions");
    for (int i = 0; i < npred_model_n_sessions(m); i++) {
        const char *key = npred_model_session_key(m, i);
        int n = npred_model_session_neurons(m, i);
        char pre[160];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "data_key", key);
        cJSON_AddNumberToObject(e, "n_neurons", n);
        char *repr = npred_model_readout_repr(m, i);
        cJSON_AddStringToObject(e, "readout", repr ? repr : "");
        free(repr);
        size_t rn = npred_model_readout_param_count(m, i);
        snprintf(pre, sizeof pre, "shifter.%s.", key);
        size_t sn = npred_model_param_count(m, pre);
        snprintf(pre, sizeof pre, "modulator.%s.", key);
        size_t mn = npred_model_param_count(m, pre);
        cJSON_AddNumberToObject(e, "readout_parameters", (double)rn);
        cJSON_AddNumberToObject(e, "readout_parameters_per_neuron", (double)rn / n);
        cJSON_AddNumberToObject(e, "shifter_parameters", (double)sn);
        cJSON_AddNumberToObject(e, "modulator_parameters", (double)mn);
        cJSON *in = cJSON_AddObjectToObject(e, "inputs");
        int sh[4] = {-1, c, h, w};
        cJSON_AddItemToObject(in, "images", cJSON_CreateIntArray(sh, 4));
        if (pupil) {
            int ps[2] = {-1, pupil};
            cJSON_AddItemToObject(in, "pupil_center", cJSON_CreateIntArray(ps, 2));
        }
        if (behavior) {
            int bs[2] = {-1, behavior};
            cJSON_AddItemToObject(in, "behavior", cJSON_CreateIntArray(bs, 2));
        }
        int os[2] = {-1, n};
        cJSON_AddItemToObject(e, "output", cJSON_CreateIntArray(os, 2));
        cJSON_AddItemToArray(ss, e);
    }
    char *cfg = npred_model_config_json(m);
    cJSON *cj = cfg ? cJSON_Parse(cfg) : NULL;
    free(cfg);
    if (cj) cJSON_AddItemToObject(o, "config", cj);
    return o;
}

/* a video model (npred/video_model.h) */
static int video_info(const char *path, int json)
{
    npred_video_model *m = NULL;
    npred_status st = npred_video_model_load(&m, path, 1);
    if (st) return cli_fail(st, "info");
    if (!json) {
        char *d = npred_video_model_describe(m);
        printf("%s\n%s", path, d ? d : "");
        free(d);
        npred_video_model_free(m);
        return 0;
    }
    int c, h, w;
    npred_video_model_input_shape(m, &c, &h, &w);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "kind", "video");
    char *d = npred_video_model_describe(m);
    cJSON_AddStringToObject(o, "description", d ? d : "");
    free(d);
    cJSON_AddStringToObject(o, "core_type", npred_video_model_core_type(m));
    cJSON_AddBoolToObject(o, "gru", npred_video_model_uses_gru(m));
    cJSON_AddBoolToObject(o, "shifter", npred_video_model_has_shifter(m));
    cJSON_AddItemToObject(o, "input_shape", int3(c, h, w));
    cJSON_AddNumberToObject(o, "temporal_cutoff", npred_video_model_temporal_cutoff(m));
    cJSON *p = cJSON_AddObjectToObject(o, "parameters");
    cJSON_AddNumberToObject(p, "total", (double)npred_video_model_param_count(m, NULL));
    cJSON_AddNumberToObject(p, "core", (double)npred_video_model_param_count(m, "core."));
    cJSON_AddNumberToObject(p, "gru", (double)npred_video_model_param_count(m, "gru_module."));
    cJSON *ss = cJSON_AddArrayToObject(o, "sessions");
    for (int i = 0; i < npred_video_model_n_sessions(m); i++) {
        cJSON *e = cJSON_CreateObject();
        const char *key = npred_video_model_session_key(m, i);
        char pre[160];
        cJSON_AddStringToObject(e, "data_key", key);
        cJSON_AddNumberToObject(e, "n_neurons", npred_video_model_session_neurons(m, i));
        snprintf(pre, sizeof pre, "readout.%s.", key);
        cJSON_AddNumberToObject(e, "readout_parameters", (double)npred_video_model_param_count(m, pre));
        snprintf(pre, sizeof pre, "shifter.%s.", key);
        cJSON_AddNumberToObject(e, "shifter_parameters", (double)npred_video_model_param_count(m, pre));
        cJSON_AddItemToArray(ss, e);
    }
    char *cfg = npred_video_model_config_json(m);
    cJSON *cj = cfg ? cJSON_Parse(cfg) : NULL;
    free(cfg);
    if (cj) cJSON_AddItemToObject(o, "config", cj);
    const char *ldr = npred_video_model_loader_json(m);
    cJSON *lj = ldr ? cJSON_Parse(ldr) : NULL;
    cJSON_AddItemToObject(o, "loader", lj ? lj : cJSON_CreateNull());
    char *s = cJSON_Print(o);
    printf("%s\n", s ? s : "{}");
    free(s);
    cJSON_Delete(o);
    npred_video_model_free(m);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    int json = 0, height = 0, width = 0;
    cli_list models = {0};
    const cli_opt opts[] = {{"json", CLI_FLAG, &json, 0, 0},
                            {"height", CLI_INT, &height, 1, INT_MAX},
                            {"width", CLI_INT, &width, 1, INT_MAX},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"info", help, opts, &models};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char *path = NULL;
    if ((r = cli_one_word("info", &models, "MODEL", &path))) return r;
    if ((height > 0) != (width > 0)) return cli_usage_error("info", "give both --height and --width");
    if (npred_video_model_probe(path)) {
        if (height > 0) return cli_usage_error("info", "--height/--width are for .pth checkpoints, not a video model");
        return video_info(path, json);
    }
    npred_model *m = NULL;
    npred_status st = npred_model_open(&m, path, height, width, 1);
    if (st) return cli_fail(st, "info");
    if (json) {
        cJSON *o = info_json(m, path);
        char *s = cJSON_Print(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else {
        char *d = npred_model_describe(m);
        printf("%s\n%s", path, d ? d : "");
        free(d);
    }
    npred_model_free(m);
    return 0;
}
