/* The pictures of a run folder: training curves from log.csv, the histogram of
 * per-neuron test correlations, readout positions (with the ground truth when the
 * data has it) and the first-layer filters. PNG files, written atomically. */
#ifndef NPRED_REPORT_H
#define NPRED_REPORT_H

#include "npred/model.h"
#include "npred/eval.h"

#ifdef __cplusplus
extern "C" {
#endif

/* training_loss.png, validation_objective.png (correlation or Poisson loss, as log.csv says),
 * learning_rate.png from dir/log.csv */
NPRED_API npred_status npred_report_curves(const char *dir);
/* test_correlations.png: per-neuron single-trial correlations of all sessions */
NPRED_API npred_status npred_report_correlations(const char *dir, const npred_eval_results *r);
/* positions_<key>.png: the readout positions of session i in core-output grid
 * coordinates; gt_xy (n, 2) in the same coordinates, or NULL. */
NPRED_API npred_status npred_report_positions(const char *dir, npred_model *m, int i, const double *gt_xy);
/* filters.png: the first conv layer's weights */
NPRED_API npred_status npred_report_filters(const char *dir, const npred_model *m);
/* correlation_vs_oracle.png: per-neuron single-trial correlation against the jackknife
 * oracle, all sessions, with the y = x line */
NPRED_API npred_status npred_report_correlation_vs_oracle(const char *dir, const npred_eval_results *r);
/* correlations_<key>.png: the single-trial correlation histogram of each session */
NPRED_API npred_status npred_report_session_correlations(const char *dir, const npred_eval_results *r);
/* retinotopy_<key>_x.png and _y.png: the readout positions of session i coloured by the
 * neurons' cortical x / y (coords (n, coord_dims), cell_motor_coordinates) */
NPRED_API npred_status npred_report_retinotopy(const char *dir, npred_model *m, int i, const double *coords,
                                               int coord_dims);

#ifdef __cplusplus
}
#endif
#endif
