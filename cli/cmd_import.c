/* npred import MODEL.pth --out DIR: convert a PyTorch neuralpredictors/sensorium
 * checkpoint into an npred model directory (DIR/model.safetensors); the SENSORIUM
 * 2023 kit's video models go to cli/import_video.c. */
#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "import_video.h"
#include "npred/preprocess.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred import MODEL.pth --out DIR [--config model.json] [--height H --width W]\n"
            "       npred import VIDEO.pth --config make_video_model.json --out DIR\n"
            "                    [--height H --width W | --data SCAN...] [--dataset LOADER.json]\n\n"
            "Read a PyTorch checkpoint (a state_dict saved with torch.save; the pickle is parsed,\n"
            "never executed) and write DIR/model.safetensors. Without --config the architecture\n"
            "is inferred from the tensor names and shapes (sensorium's Stacked2dCore +\n"
            "FullGaussian2d builder: layers, kernels, depth-separable, grid predictor, shifter);\n"
            "settings that the weights do not show (gamma_input, gamma_readout, linear for the\n"
            "3-layer LN model, ...) follow the published SENSORIUM configs.\n\n"
            "A SENSORIUM 2023 video model (the kit's torch.save(model.state_dict(), ...)) needs\n"
            "--config with the make_video_model arguments it was trained with (a JSON object with\n"
            "\"core_dict\"); every tensor of the file must be one of the model's, and the reverse.\n\n"
            "options:\n"
            "  --out DIR          output model directory (created)\n"
            "  --config FILE      model config JSON (sensorium builder arguments or the\n"
            "                     structured form) instead of the inferred one\n"
            "  --height H         input image (video frame) height [36]\n"
            "  --width W          input image (video frame) width [64]\n"
            "  --stats SCAN...    record the preprocessing (image mean/std, scale, response\n"
            "                     normalisation, unit_ids, behaviour/pupil statistics) of these\n"
            "                     SENSORIUM scans, loaded as npred eval loads them, in the model so\n"
            "                     that 'npred predict --raw' works (a .pth carries none)\n"
            "  --data SCAN...     video: SENSORIUM 2023 scans (folders or .zip; else the \"paths\" of\n"
            "                     --dataset): their data keys and neuron counts must be the file's\n"
            "                     sessions, their frames (through the loader) give the frame size\n"
            "  --dataset FILE     video: mouse_video_loader arguments (JSON) the model was trained\n"
            "                     with, recorded in the model (npred predict --video, eval use them)\n"
            "  --force            overwrite an existing DIR/model.safetensors\n"
            "  --quiet            print nothing on success\n"
            "  -h, --help         this help\n\n"
            "example: npred import sensorium_sota_model.pth --out runs/sota\n");
}

/* What the weights told us, in plain words. */
static void print_summary(npred_model *m, const char *src, const char *dir, int inferred)
{
    int c, h, w;
    npred_model_input_shape(m, &c, &h, &w);
    char *d = npred_model_describe(m);
    printf("imported %s -> %s/model.safetensors\n\n%s\n", src, dir, d ? d : "");
    free(d);
    printf("sessions:       %d\n", npred_model_n_sessions(m));
    for (int i = 0; i < npred_model_n_sessions(m); i++)
        printf("  %s: %d neurons\n", npred_model_session_key(m, i), npred_model_session_neurons(m, i));
    if (c == 4)
        printf("input channels: 4 (image + 3 behavior planes: load data with include_behavior=true)\n");
    else
        printf("input channels: %d\n", c);
    printf("input size:     %d x %d\n", h, w);
    printf("shifter:        %s\n", npred_model_has_shifter(m)
                                       ? "yes, from pupil_center (B, 2) (load data with include_eye_position=true)"
                                       : "no");
    if (npred_model_behavior_channels(m))
        printf("modulator:      behavior (B, %d)\n", npred_model_behavior_channels(m));
    if (inferred)
        printf("\nnote: the architecture was inferred from the weights; training settings (gamma_input,\n"
               "gamma_readout, init ranges, linear for the LN model) follow the published SENSORIUM\n"
               "configs. Pass --config to set them explicitly.\n");
}

static int import_one(const char *src, const char *out, const char *config, int height, int width, int force, int quiet,
                      const char **stats, size_t n_stats);

int cmd_import(int argc, char **argv)
{
    const char *out = NULL, *config = NULL, *dataset = NULL;
    int height = 0, width = 0, force = 0, quiet = 0;
    cli_list pths = {0}, stats = {0}, data = {0};
    const cli_opt opts[] = {{"out", CLI_STR, &out, 0, 0},          {"config", CLI_STR, &config, 0, 0},
                            {"stats", CLI_LIST, &stats, 0, 0},     {"data", CLI_LIST, &data, 0, 0},
                            {"dataset", CLI_STR, &dataset, 0, 0},
                            {"height", CLI_INT, &height, 1, INT_MAX}, {"width", CLI_INT, &width, 1, INT_MAX},
                            {"force", CLI_FLAG, &force, 0, 0},     {"quiet", CLI_FLAG, &quiet, 0, 0},
                            {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"import", help, opts, &pths};
    int r = cli_parse(&spec, argc, argv);
    if (r != CLI_CONTINUE) return r;
    const char *src = NULL;
    if ((r = cli_one_word("import", &pths, "MODEL.pth", &src))) goto done;
    char *cfg = NULL;
    if (config && !(cfg = cli_read_text(config))) {
        r = cli_fail(NPRED_ERR_IO, "import");
        goto done;
    }
    cJSON *j = cfg ? cJSON_Parse(cfg) : NULL;
    int video = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "core_dict"));
    cJSON_Delete(j);
    if (video && stats.n)
        r = cli_usage_error("import", "--stats is for image models; a video model takes --data SCAN... and --dataset");
    else if (!video && (data.n || dataset))
        r = cli_usage_error("import", "--data and --dataset are for video models (--config with make_video_model "
                            "arguments, a \"core_dict\")");
    else if (!out)
        r = cli_usage_error("import", "missing --out DIR");
    else if ((height > 0) != (width > 0))
        r = cli_usage_error("import", "give both --height and --width");
    else if (video) {
        import_video_args a = {src, out, config, cfg, dataset, (const char *const *)data.v, (size_t)data.n,
                               height, width, force, quiet};
        r = import_video(&a);
    } else
        r = import_one(src, out, config, height, width, force, quiet, stats.v, (size_t)stats.n);
    free(cfg);
done:
    free(stats.v);
    free(data.v);
    return r;
}

static int import_one(const char *src, const char *out, const char *config, int height, int width, int force, int quiet,
                      const char **stats, size_t n_stats)
{
    char target[4096];
    snprintf(target, sizeof target, "%s/model.safetensors", out);
    struct stat sb;
    if (!force && stat(target, &sb) == 0) {
        fprintf(stderr, "npred import: %s exists (use --force to overwrite)\n", target);
        return 1;
    }
    char *cfg = NULL;
    if (config && !(cfg = cli_read_text(config))) return cli_fail(NPRED_ERR_IO, "import");
    npred_model *m = NULL;
    npred_status st = npred_model_import_pth(&m, src, cfg, height, width, 1);
    free(cfg);
    if (st) return cli_fail(st, "import");
    if (n_stats) {
        npred_loader_config lc;
        npred_loaders *L = NULL;
        int rc = cli_open_loaders("import", m, NULL, stats, n_stats, 64, quiet, &lc, &L);
        if (!rc && (st = npred_model_record_preprocessing(m, L))) rc = cli_fail(st, "import --stats");
        npred_loaders_free(L);
        npred_loader_config_free(&lc);
        if (rc) {
            npred_model_free(m);
            return rc;
        }
    }
    st = cli_mkdirs(out);
    if (!st) st = npred_model_save(m, out);
    if (st) {
        npred_model_free(m);
        return cli_fail(st, "import");
    }
    if (!quiet) print_summary(m, src, out, config == NULL);
    if (!quiet && n_stats) printf("preprocessing: recorded from %zu scan(s) (npred predict --raw works)\n", n_stats);
    npred_model_free(m);
    return 0;
}
