/* npred train on SENSORIUM 2023 movie scans (cli/train_video.c), called by cmd_train
 * when the data are movie scans: the same command line and run folder as the static
 * `npred train`, with the kit's make_video_model, mouse_video_loader and video
 * standard_trainer configurations. */
#ifndef NPRED_CLI_TRAIN_VIDEO_H
#define NPRED_CLI_TRAIN_VIDEO_H

#include <cJSON.h>
#include <stddef.h>

#include "npred/train.h"

typedef struct {
    const char *const *data;          /* scan folders or zips, one session each (may be empty: the loader config's paths) */
    size_t n_data;
    const cJSON *model, *trainer, *dataset; /* make_video_model, standard_trainer, mouse_video_loader arguments */
    const char *where_model, *where_trainer, *where_dataset;
    const char *out;                  /* run folder */
    long long seed, max_iter;         /* -1: not given */
    int resume, sync_bn;
    npred_trainer_callbacks cb;       /* progress printing and the interrupt flag */
    void (*print_section)(const char *title, const cJSON *j);
} train_video_args;

/* Returns the exit code (0, 1 for errors, 2 for usage errors, 130 when interrupted). */
int train_video(const train_video_args *a);

#endif
