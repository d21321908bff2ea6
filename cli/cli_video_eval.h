/* Video models (SENSORIUM 2023) in npred eval and npred predict (cli/cmd_video_eval.c). */
#ifndef NPRED_CLI_VIDEO_EVAL_H
#define NPRED_CLI_VIDEO_EVAL_H

#include <stddef.h>

/* npred eval on a video model: the kit's per-neuron correlation on `tier` (whole
 * trials), a table, --json, --per-neuron FILE|-. Returns the exit code. */
int cli_video_eval(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                   int json, const char *per_neuron);
/* npred predict --submission on a video model: the 2023 Parquet file of `tier`. */
int cli_video_submit(const char *model, const char *dataset, const char *const *data, size_t n_data, const char *tier,
                     const char *out);

#endif
