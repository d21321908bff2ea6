/* npred import of the SENSORIUM 2023 kit's video models (cli/import_video.c), called by
 * cmd_import when --config holds make_video_model arguments (a "core_dict"). */
#ifndef NPRED_CLI_IMPORT_VIDEO_H
#define NPRED_CLI_IMPORT_VIDEO_H

#include <stddef.h>

typedef struct {
    const char *src, *out;         /* the .pth, the model folder */
    const char *config, *config_text; /* --config's path and its text */
    const char *dataset;           /* --dataset FILE (mouse_video_loader arguments) or NULL */
    const char *const *data;       /* --data scans (may be empty: --dataset's "paths", or none) */
    size_t n_data;
    int height, width;             /* 0: not given */
    int force, quiet;
} import_video_args;

/* Returns the exit code (0, 1 for errors, 2 for usage errors). */
int import_video(const import_video_args *a);

#endif
