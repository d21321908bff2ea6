#include "cli_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "npred/npy.h"
#include "npred/report.h"

/* read an npy member of a dataset (folder or zip) as doubles; NULL if absent */
static double *read_gt(const char *path, const char *rel, npred_array *shape)
{
    npred_array a;
    double *out = NULL;
    memset(shape, 0, sizeof *shape);
    if (!npred_dataset_read_npy(path, rel, &a)) {
        if (npred_array_to_f64(&a, &out)) out = NULL;
        *shape = a;
        shape->data = NULL;
        npred_array_free(&a);
    }
    npred_clear_error();
    return out;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double corr(const double *a, const double *b, int n)
{
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    for (int i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

static void report(int *fails, npred_status st, const char *dir, const char *what)
{
    if (st) {
        fprintf(stderr, "npred: picture %s: %s\n", what, npred_last_error());
        (*fails)++;
    } else {
        printf("picture: %s/%s\n", dir, what);
    }
}

int cli_write_pictures(const char *dir, npred_model *m, const npred_loaders *L, const char *const *paths,
                       const npred_eval_results *r, cli_gt_summary *gt)
{
    int fails = 0;
    if (gt) memset(gt, 0, sizeof *gt);
    char log[4096];
    struct stat sb;
    snprintf(log, sizeof log, "%s/log.csv", dir);
    if (stat(log, &sb) == 0) /* a run's training log (npred report of a bare model has none) */
        report(&fails, npred_report_curves(dir), dir, "training_loss.png, validation_objective.png, learning_rate.png");
    report(&fails, npred_report_filters(dir, m), dir, "filters.png");
    if (r) report(&fails, npred_report_correlations(dir, r), dir, "test_correlations.png");
    int in_c, in_h, in_w, oc, oh, ow;
    npred_model_input_shape(m, &in_c, &in_h, &in_w);
    npred_model_core_output_shape(m, &oc, &oh, &ow);
    /* pooled ground-truth comparison */
    int cap = 0, n = 0;
    for (size_t s = 0; s < npred_loaders_count(L); s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        cap += (int)si.n_neurons;
    }
    double *lx = malloc(sizeof(double) * (cap + 1)), *ly = malloc(sizeof(double) * (cap + 1));
    double *tx = malloc(sizeof(double) * (cap + 1)), *ty = malloc(sizeof(double) * (cap + 1));
    double *dist = malloc(sizeof(double) * (cap + 1)), orate = 0, ojack = 0;
    if (!lx || !ly || !tx || !ty || !dist) {
        fprintf(stderr, "npred: pictures: out of memory\n");
        free(lx), free(ly), free(tx), free(ty), free(dist);
        return fails + 1;
    }
    for (size_t s = 0; s < npred_loaders_count(L); s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        int mi = npred_model_session_index(m, si.data_key);
        if (mi < 0) continue;
        int nn = (int)si.n_neurons;
        npred_array sh;
        double *raw = paths ? read_gt(paths[s], "meta/ground_truth/rf_grid.npy", &sh) : NULL;
        double *g = NULL;
        int64_t max_row = -1; /* the ground truth must cover every selected neuron */
        for (int j = 0; j < nn; j++) {
            int64_t row = si.neuron_idx ? si.neuron_idx[j] : j;
            if (row > max_row) max_row = row;
        }
        if (raw && sh.ndim == 2 && sh.shape[1] == 2 && sh.shape[0] > max_row) {
            /* simulator grid on a same-size map of the input -> the core's output grid
             * (a core without input padding crops (in - out) / 2 pixels per side) */
            g = malloc(sizeof(double) * 2 * (size_t)nn);
            if (!g) {
                free(raw);
                continue;
            }
            double mx = (in_w - ow) / 2.0, my = (in_h - oh) / 2.0;
            for (int j = 0; j < nn; j++) {
                int64_t row = si.neuron_idx ? si.neuron_idx[j] : j;
                double u = (raw[2 * row] + 1) / 2 * (in_w - 1), v = (raw[2 * row + 1] + 1) / 2 * (in_h - 1);
                g[2 * j] = ow > 1 ? (u - mx) / (ow - 1) * 2 - 1 : 0;
                g[2 * j + 1] = oh > 1 ? (v - my) / (oh - 1) * 2 - 1 : 0;
            }
            npred_array o1, o2;
            double *rate = read_gt(paths[s], "meta/ground_truth/oracle_corr_rate.npy", &o1);
            double *jack = read_gt(paths[s], "meta/ground_truth/oracle_corr_jackknife.npy", &o2);
            if (rate && (int64_t)o1.count <= max_row) free(rate), rate = NULL;
            if (jack && (int64_t)o2.count <= max_row) free(jack), jack = NULL;
            float *xy = malloc(sizeof(float) * 2 * (size_t)nn);
            if (xy && !npred_model_readout_positions(m, mi, xy)) {
                for (int j = 0; j < nn; j++) {
                    int64_t row = si.neuron_idx ? si.neuron_idx[j] : j;
                    lx[n] = xy[2 * j], ly[n] = xy[2 * j + 1], tx[n] = g[2 * j], ty[n] = g[2 * j + 1];
                    double dx = (lx[n] - tx[n]) / 2 * (ow - 1), dy = (ly[n] - ty[n]) / 2 * (oh - 1);
                    dist[n] = sqrt(dx * dx + dy * dy);
                    if (rate) orate += rate[row];
                    if (jack) ojack += jack[row];
                    n++;
                }
            }
            free(xy), free(rate), free(jack);
        }
        char what[128];
        snprintf(what, sizeof what, "positions_%s.png", si.data_key);
        npred_status st = npred_report_positions(dir, m, mi, g);
        if (st != NPRED_ERR_UNSUPPORTED) report(&fails, st, dir, what);
        else npred_clear_error();
        free(raw);
        free(g);
    }
    if (gt && n > 1) {
        gt->have = 1;
        gt->n = n;
        gt->corr_x = corr(lx, tx, n);
        gt->corr_y = corr(ly, ty, n);
        qsort(dist, (size_t)n, sizeof *dist, cmp_double);
        gt->median_px = n % 2 ? dist[n / 2] : 0.5 * (dist[n / 2 - 1] + dist[n / 2]);
        gt->oracle_rate = orate / n;
        gt->oracle_jackknife = ojack / n;
    }
    free(lx), free(ly), free(tx), free(ty), free(dist);
    return fails;
}

int cli_write_result_pictures(const char *dir, npred_model *m, const npred_loaders *L, const npred_eval_results *r)
{
    int fails = 0;
    report(&fails, npred_report_correlation_vs_oracle(dir, r), dir, "correlation_vs_oracle.png");
    report(&fails, npred_report_session_correlations(dir, r), dir, "correlations_<session>.png");
    for (size_t s = 0; s < npred_loaders_count(L); s++) {
        npred_session_info si;
        npred_loaders_session(L, s, &si);
        int mi = npred_model_session_index(m, si.data_key);
        if (mi < 0 || !si.cell_motor_coordinates) continue;
        char what[160];
        snprintf(what, sizeof what, "retinotopy_%s_x.png, retinotopy_%s_y.png", si.data_key, si.data_key);
        npred_status st = npred_report_retinotopy(dir, m, mi, si.cell_motor_coordinates, 3);
        if (st != NPRED_ERR_UNSUPPORTED) report(&fails, st, dir, what);
        else npred_clear_error(); /* a readout without positions */
    }
    return fails;
}
