/* Video models (SENSORIUM 2023) in npred eval and npred predict (cli/cmd_video_eval.c). */
#ifndef NPRED_CLI_VIDEO_EVAL_H
#define NPRED_CLI_VIDEO_EVAL_H

#include <stddef.h>

#include "npred/video.h"
#include "npred/video_model.h"

/* The loaders of a video model's evaluation, submission or prediction: the
 * mouse_video_loader arguments the model records (if any; their "paths", the scans it
 * was trained on, are not used), then those of the JSON file `dataset` (may be NULL)
 * on top; the scans are data (n_data) or the file's "paths" (cli_dataset_paths: given
 * both, they must agree); whole trials one at a time (to_cut false, batch_size 1: the
 * kit's submission loader) whatever the arguments say; more than max_scans scans (0:
 * any number) is an argument error. first_scan (may be NULL)
 * receives a copy of the first scan's path (free it). Returns 0, or the exit code
 * after printing why. */
int cli_video_open_loaders(const char *cmd, npred_video_model *m, const char *dataset, const char *const *data,
                           size_t n_data, size_t max_scans, npred_video_loaders **L, char **first_scan);

/* npred eval on a video model: the kit's per-neuron correlation on `tier` (whole
 * trials), a table, --json, --per-neuron FILE|-. Returns the exit code. */
int cli_video_eval(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                   int json, const char *per_neuron);
/* npred predict --submission on a video model: the 2023 Parquet file of `tier`. */
int cli_video_submit(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                     const char *out);

#endif
