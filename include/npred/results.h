/* SENSORIUM submission and ground-truth files, and the kit's leaderboard metrics
 * computed from the files alone (sensorium.utility.submission / eval / metrics).
 *
 * A file is CSV with a header and one row per trial of a tier, in ascending trial
 * order (file index i of data/<field>/<i>.npy):
 *
 *   trial_indices,image_ids,prediction,neuron_ids          (submission)
 *   trial_indices,image_ids,responses,neuron_ids           (ground truth)
 *
 * trial_indices is meta/trials/trial_idx (an integer, or the 32-hex hash of the
 * competition scans), image_ids is frame_image_id, the third column is the list
 * of the trial's predictions (model output) or normalized responses, one per
 * neuron, and neuron_ids the list of unit_ids, written as pandas writes Python
 * lists: "[0.22635304927825928, 0.4477862715721130, ...]" (repr of each float32 as
 * a Python float, quoted because it holds commas). */
#ifndef NPRED_RESULTS_H
#define NPRED_RESULTS_H

#include <stdint.h>

#include "npred/base.h"
#include "npred/data.h"
#include "npred/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The submission file of loader session s for `tier` (the CSV text, malloc'ed,
 * caller frees), exactly as generate_submission_file writes it: predictions of
 * model m (eval mode) for every trial of the tier. With m NULL, the ground-truth
 * file of generate_ground_truth_file instead (the loader's responses, normalized
 * when the loader normalizes, as in the kit). The tier must be loaded and hold
 * at least one trial; meta/trials/trial_idx must exist. */
NPRED_API npred_status npred_submission_csv(char **csv, npred_model *m, const npred_loaders *L, size_t s, npred_tier tier);

/* The kit's evaluate(submission, ground_truth): both files are read, trials are
 * matched by trial_indices and neurons by neuron_ids (any order in either file,
 * as the kit sorts both), then, in ascending trial / neuron id order: */
typedef struct {
    int64_t n_trials, n_neurons, n_images;
    int64_t n_fev_kept;             /* neurons with FEV >= 0.15 */
    double single_trial_corr;       /* "Single Trial Correlation" (mean over neurons) */
    double corr_to_average;         /* "Correlation to Average" */
    double feve;                    /* "FEVE" (mean over the kept neurons) */
} npred_score;

/* Errors name the file and the row (1-based line number) and what was expected:
 * a wrong header, a row with the wrong number of fields or values, a value that
 * is not a finite number (NaN, inf), rows whose neuron_ids differ, a duplicated
 * trial, missing or extra trials or neurons, or a trial whose image id differs
 * between the files. Values are held as float32 (the precision the kit's files
 * carry). */
NPRED_API npred_status npred_submission_score(const char *submission_path, const char *truth_path, npred_score *out);
/* The same from the two files' texts in memory (lengths in bytes; a NUL byte in a text
 * is an error); the names stand for the files in messages. */
NPRED_API npred_status npred_submission_score_text(const char *submission, size_t submission_len,
                                                   const char *submission_name, const char *truth, size_t truth_len,
                                                   const char *truth_name, npred_score *out);

/* ---- SENSORIUM 2023 (movies): the submission file of the kit's generate_submission
 * (sensorium/utility/submission.py of ecker-lab/sensorium_2023), what pandas'
 * to_parquet(compression='brotli', engine='pyarrow', index=False) writes: Parquet, one
 * row per trial of a tier, columns
 *
 *   mouse          string               the session (data key)
 *   trial_indices  int64                the trial's file index (data/<field>/<i>.npy)
 *   prediction     list<list<double>>   (neurons, frames): the model's outputs for the
 *                                       trial's frames from 50 on, each float32 exact
 *   neuron_ids     list<uint32>         the unit_ids, in the order of prediction's rows
 *
 * written with BROTLI pages, to a temporary file beside path that close puts in place
 * (docs/results.md says where the file differs from pyarrow's, and why readers accept it). */
typedef struct npred_video_submission npred_video_submission;

typedef struct {
    int brotli_quality;     /* 0..11; default 5 (Arrow uses 8: 6x slower, files within 1%; docs/results.md) */
    size_t page_bytes;      /* a data page is closed at the first row boundary past it; default 1 MiB */
    size_t row_group_bytes; /* a row group likewise (the memory held while writing: its pages are then
                               compressed in parallel); default 256 MiB */
} npred_video_submission_options;

NPRED_API void npred_video_submission_options_default(npred_video_submission_options *o);
/* opt NULL: the defaults. The temporary file is created now (an error naming path). */
NPRED_API npred_status npred_video_submission_open(npred_video_submission **s, const char *path,
                                                   const npred_video_submission_options *opt);
/* One row: prediction is (n_neurons, n_frames) row-major (neuron i's frames at
 * i * n_frames); neuron_ids (n_neurons,). mouse is a non-empty UTF-8 string. */
NPRED_API npred_status npred_video_submission_add(npred_video_submission *s, const char *mouse, int64_t trial_index,
                                                  const float *prediction, int64_t n_neurons, int64_t n_frames,
                                                  const uint32_t *neuron_ids);
/* Write the footer and put the file in place; frees s in every case (after an error
 * nothing is written). */
NPRED_API npred_status npred_video_submission_close(npred_video_submission *s);
/* Give up: no file is written; frees s (NULL is fine). */
NPRED_API void npred_video_submission_abort(npred_video_submission *s);

#ifdef __cplusplus
}
#endif
#endif
