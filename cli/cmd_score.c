/* npred score: the SENSORIUM leaderboard metrics of a submission file against a
 * ground-truth file (the kit's sensorium.utility.eval.evaluate). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "cli_model.h"
#include "npred/results.h"

static void help(FILE *f)
{
    fprintf(f,
            "usage: npred score --submission SUBMISSION.csv --truth GROUND_TRUTH.csv [--json]\n\n"
            "The SENSORIUM leaderboard metrics from the files alone, as the kit's evaluate():\n"
            "single-trial correlation, correlation to average (over repeats of an image) and\n"
            "FEVE (mean over neurons with FEV >= 0.15). Trials are matched by trial_indices and\n"
            "neurons by neuron_ids; missing or extra trials or neurons, NaN values and wrong\n"
            "headers are errors naming the line. Files: npred predict --submission / --ground-truth\n"
            "or the kit's generate_submission_file / generate_ground_truth_file.\n\n"
            "options:\n"
            "  --submission FILE   trial_indices,image_ids,prediction,neuron_ids\n"
            "  --truth FILE        trial_indices,image_ids,responses,neuron_ids\n"
            "  --json              one JSON object instead of the text\n"
            "  -h, --help          this help\n");
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

int cmd_score(int argc, char **argv)
{
    const char *sub = NULL, *truth = NULL;
    int json = 0;
    const cli_opt opts[] = {{"submission", CLI_STR, &sub, 0, 0}, {"truth", CLI_STR, &truth, 0, 0},
                            {"json", CLI_FLAG, &json, 0, 0},     {NULL, 0, NULL, 0, 0}};
    const cli_spec spec = {"score", help, opts, NULL};
    int pr = cli_parse(&spec, argc, argv);
    if (pr != CLI_CONTINUE) return pr;
    if (!sub) return cli_usage_error("score", "missing --submission");
    if (!truth) return cli_usage_error("score", "missing --truth");
    npred_score r;
    npred_status st = npred_submission_score(sub, truth, &r);
    if (st) return cli_fail(st, "score");
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "submission", sub);
        cJSON_AddStringToObject(o, "truth", truth);
        cJSON_AddNumberToObject(o, "n_trials", (double)r.n_trials);
        cJSON_AddNumberToObject(o, "n_neurons", (double)r.n_neurons);
        cJSON_AddNumberToObject(o, "n_images", (double)r.n_images);
        cJSON_AddItemToObject(o, "single_trial_correlation", num_or_null(r.single_trial_corr));
        cJSON_AddItemToObject(o, "correlation_to_average", num_or_null(r.corr_to_average));
        cJSON_AddItemToObject(o, "feve", num_or_null(r.feve));
        cJSON_AddNumberToObject(o, "feve_neurons", (double)r.n_fev_kept);
        char *s = cJSON_Print(o);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(o);
    } else {
        printf("%lld trials, %lld images, %lld neurons\n", (long long)r.n_trials, (long long)r.n_images,
               (long long)r.n_neurons);
        printf("Single Trial Correlation  %.6f\n", r.single_trial_corr);
        printf("Correlation to Average    %.6f\n", r.corr_to_average);
        printf("FEVE                      %.6f  (%lld neurons with FEV >= 0.15)\n", r.feve, (long long)r.n_fev_kept);
    }
    return 0;
}
