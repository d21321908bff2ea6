/* Pictures and ground-truth comparison of a run folder, shared by train and demo. */
#ifndef NPRED_CLI_REPORT_H
#define NPRED_CLI_REPORT_H

#include "npred/data.h"
#include "npred/model.h"
#include "npred/eval.h"

typedef struct {
    int have;               /* ground truth found for at least one session */
    double corr_x, corr_y;  /* correlation of learned and true positions (all neurons with ground truth) */
    double median_px;       /* median distance in model-input pixels */
    double oracle_rate;     /* mean expected correlation of a single trial with the noise-free rate */
    double oracle_jackknife;/* mean jackknife oracle stored by the simulator */
    int n;
} cli_gt_summary;

/* Write the run's pictures into dir: curves (from log.csv), filters, positions per
 * session (with the simulator's ground truth when dataset `paths[s]` has
 * meta/ground_truth/), and the test-correlation histogram when r is given.
 * Prints one line per written picture to stdout; failures are reported on stderr
 * and do not stop the others. Returns the number of failures. */
int cli_write_pictures(const char *dir, npred_model *m, const npred_loaders *L, const char *const *paths,
                       const npred_eval_results *r, cli_gt_summary *gt);

/* The pictures of an evaluation beyond the run's: correlation vs oracle, the
 * correlation histogram per session, readout positions coloured by cortical
 * coordinates. Prints one line per written picture; returns the failures. */
int cli_write_result_pictures(const char *dir, npred_model *m, const npred_loaders *L, const npred_eval_results *r);

#endif
