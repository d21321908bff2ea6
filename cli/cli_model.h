/* Helpers shared by the model commands (import, info, predict, eval). */
#ifndef NPRED_CLI_MODEL_H
#define NPRED_CLI_MODEL_H

#include "npred/data.h"
#include "npred/model.h"
#include "npred/npy.h"

/* Open a model given as a run directory, a .safetensors file or a PyTorch .pth
 * (imported on the fly, architecture inferred; in_h/in_w 0 = 36x64). */
/* 1 if path ends with suffix */
int cli_ends_with(const char *path, const char *suffix);
/* Read a whole text file (malloc'ed, NUL-terminated); NULL with an error set. */
char *cli_read_text(const char *path);
/* The scans of a command: --data (n_data paths) and the "paths" of the --dataset JSON
 * file (n_json; dataset names the file in messages). Either serves alone; given both,
 * they must name the same scans in the same order (the same files, compared by inode,
 * else by name), else an argument error naming both; neither is an error too. On
 * success *paths / *n_paths point at the list to open (not copied) and 0 is returned;
 * else the exit code after printing why. */
int cli_dataset_paths(const char *cmd, const char *dataset, const char *const *json_paths, size_t n_json,
                      const char *const *data, size_t n_data, const char *const **paths, size_t *n_paths);
/* Open the loaders for evaluating / predicting with model m, as sensorium's
 * static_loaders does (normalize true), cfg initialised here (free it with
 * npred_loader_config_free, also after a failure): the static_loaders arguments of
 * the JSON file `dataset` (may be NULL; its "paths" serve when n_data is 0), then
 * what the model implies where the file leaves it unset (include_eye_position for a
 * shifter, include_behavior for 4 input channels or a modulator, and a scale that
 * maps the scans' images to the model's input size). batch is the batch size when
 * the file sets none. Prints what it did unless quiet; on failure prints the error
 * and returns the exit code (non-zero). */
int cli_open_loaders(const char *cmd, npred_model *m, const char *dataset, const char *const *data, size_t n_data,
                     int batch, int quiet, npred_loader_config *cfg, npred_loaders **L);
/* Write text to path atomically, or to standard output when path is "-". */
npred_status cli_write_output(const char *path, const char *text, size_t len);
/* Read an .npy as float32 (a receives the array and its shape; free a with npred_array_free and the
 * result with free), every value finite; NULL with an error set (naming path and
 * what) and *st the status. */
float *cli_read_npy_f32(const char *path, npred_array *a, const char *what, npred_status *st);
/* The session a command works on: *key when given (else the model's only session,
 * stored in *key); its index, or -1 after printing why to stderr (*key stays NULL
 * when the model has several sessions and none was chosen). */
int cli_pick_session(const char *cmd, const npred_model *m, const char **key);
/* Write a per-neuron CSV (taken: freed here; NULL = out of memory) to path or "-";
 * says where unless quiet. Returns 0, or 1 after printing the error. */
int cli_write_per_neuron(const char *cmd, const char *path, char *csv, int quiet);
/* mkdir -p */
npred_status cli_mkdirs(const char *dir);

#endif
