#include "npred/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "viz/plot.h"

static void path_join(char *buf, size_t n, const char *dir, const char *file)
{
    snprintf(buf, n, "%s/%s", dir, file);
}

npred_status npred_report_curves(const char *dir)
{
    char path[4096];
    path_join(path, sizeof path, dir, "log.csv");
    FILE *f = fopen(path, "r");
    if (!f) return npred_errorf(NPRED_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 64, n = 0;
    double *v = malloc(sizeof(double) * 4 * cap); /* rows of epoch, lr, train loss, objective */
    char line[1024], objective[64] = "validation_correlation";
    npred_status st = v ? NPRED_OK : npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    if (!st && (!fgets(line, sizeof line, f) || sscanf(line, "epoch,lr,train_loss,%63[^,],", objective) != 1))
        st = npred_errorf(NPRED_ERR_FORMAT, "%s: expected the header epoch,lr,train_loss,<objective>,seconds", path);
    while (!st && fgets(line, sizeof line, f)) {
        double e, a, c, sec;
        char lb[64];
        /* epoch,lr,train_loss,objective,seconds (train_loss may be nan) */
        if (sscanf(line, "%lf,%lf,%63[^,],%lf,%lf", &e, &a, lb, &c, &sec) != 5) continue;
        if (n == cap) {
            double *nv = realloc(v, sizeof(double) * 4 * cap * 2);
            if (!nv) {
                st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            v = nv;
            cap *= 2;
        }
        double *r = v + 4 * n++;
        r[0] = e, r[1] = a, r[2] = strtod(lb, NULL), r[3] = c;
    }
    fclose(f);
    if (!st && n == 0) st = npred_errorf(NPRED_ERR_FORMAT, "%s: no epochs", path);
    double *col = st ? NULL : malloc(sizeof(double) * 4 * n);
    if (!st && !col) st = npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < 4; k++) col[k * n + i] = v[4 * i + k];
        const double *ep = col, *lr = col + n, *loss = col + 2 * n, *obj = col + 3 * n;
        int is_corr = strstr(objective, "correlation") != NULL;
        npred_plot_series s1 = {"training loss", ep, loss, (int)n, NPRED_COLOR_AUTO};
        path_join(path, sizeof path, dir, "training_loss.png");
        st = npred_plot_lines(path, "Training loss (mean per batch)", "epoch", "loss", &s1, 1, 0, NULL);
        if (!st) {
            npred_plot_series s2 = {"validation", ep, obj, (int)n, NPRED_COLOR_AUTO};
            path_join(path, sizeof path, dir, "validation_objective.png");
            st = npred_plot_lines(path, is_corr ? "Validation correlation" : "Validation Poisson loss", "epoch",
                                  is_corr ? "mean single-trial correlation" : "mean Poisson loss per trial", &s2, 1,
                                  0, NULL);
        }
        if (!st) {
            npred_plot_series s3 = {"learning rate", ep, lr, (int)n, NPRED_COLOR_AUTO};
            path_join(path, sizeof path, dir, "learning_rate.png");
            st = npred_plot_lines(path, "Learning rate", "epoch", "lr", &s3, 1, 1, NULL);
        }
    }
    free(col);
    free(v);
    return st;
}

npred_status npred_report_correlations(const char *dir, const npred_eval_results *r)
{
    int64_t n = 0;
    for (int s = 0; s < r->n_sessions; s++) n += r->sessions[s].m.n_neurons;
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!v) return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    int64_t k = 0;
    for (int s = 0; s < r->n_sessions; s++)
        for (int64_t j = 0; j < r->sessions[s].m.n_neurons; j++) v[k++] = r->sessions[s].corr[j];
    char path[4096], title[128];
    path_join(path, sizeof path, dir, "test_correlations.png");
    snprintf(title, sizeof title, "Per-neuron %s correlation (%lld neurons)", npred_tier_name(r->tier),
             (long long)n);
    npred_status st = npred_plot_histogram(path, title, "single-trial correlation", v, (int)n, 0,
                                           r->overall.single_trial_corr, "mean", NULL);
    free(v);
    return st;
}

npred_status npred_report_positions(const char *dir, npred_model *m, int i, const double *gt_xy)
{
    int n = npred_model_session_neurons(m, i);
    float *xy = malloc(sizeof(float) * 2 * (size_t)n);
    double *x = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n);
    double *x2 = gt_xy ? malloc(sizeof(double) * (size_t)n) : NULL, *y2 = gt_xy ? malloc(sizeof(double) * (size_t)n) : NULL;
    npred_status st = !xy || !x || !y || (gt_xy && (!x2 || !y2)) ? npred_errorf(NPRED_ERR_NOMEM, "out of memory")
                                                                 : npred_model_readout_positions(m, i, xy);
    if (!st) {
        for (int j = 0; j < n; j++) {
            x[j] = xy[2 * j];
            y[j] = xy[2 * j + 1];
            if (gt_xy) x2[j] = gt_xy[2 * j], y2[j] = gt_xy[2 * j + 1];
        }
        npred_scatter_opts o;
        memset(&o, 0, sizeof o);
        o.name = "learned";
        o.name2 = gt_xy ? "ground truth" : NULL;
        o.x2 = x2;
        o.y2 = y2;
        o.connect = gt_xy != NULL;
        o.fixed_range = 1;
        o.range[0] = -1, o.range[1] = 1, o.range[2] = -1, o.range[3] = 1;
        o.ydown = 1;
        char path[4096], file[160], title[160];
        snprintf(file, sizeof file, "positions_%s.png", npred_model_session_key(m, i));
        snprintf(title, sizeof title, "Readout positions, session %s", npred_model_session_key(m, i));
        path_join(path, sizeof path, dir, file);
        st = npred_plot_scatter(path, title, "x (core output grid)", "y (core output grid)", x, y, n, &o, NULL);
    }
    free(xy), free(x), free(y), free(x2), free(y2);
    return st;
}

npred_status npred_report_filters(const char *dir, const npred_model *m)
{
    const npred_ptable *t = &m->t;
    int idx = npred_ptable_find(t, "core.features.layer0.conv.weight");
    if (idx < 0) return npred_errorf(NPRED_ERR_ARG, "model has no first conv layer");
    const npred_param *p = &t->items[idx];
    char path[4096];
    path_join(path, sizeof path, dir, "filters.png");
    return npred_plot_filters(path, "First-layer filters", npred_ptable_ptr(t, idx),
                              (int)(p->shape[0] * p->shape[1]), (int)p->shape[2], (int)p->shape[3], 0, NULL);
}

npred_status npred_report_correlation_vs_oracle(const char *dir, const npred_eval_results *r)
{
    int64_t n = 0;
    for (int s = 0; s < r->n_sessions; s++) n += r->sessions[s].m.n_neurons;
    double *x = malloc(sizeof(double) * (size_t)(n ? n : 1)), *y = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!x || !y) {
        free(x), free(y);
        return npred_errorf(NPRED_ERR_NOMEM, "out of memory");
    }
    int64_t k = 0;
    for (int s = 0; s < r->n_sessions; s++)
        for (int64_t j = 0; j < r->sessions[s].m.n_neurons; j++, k++) x[k] = r->sessions[s].oracle[j], y[k] = r->sessions[s].corr[j];
    char path[4096], title[160], name[96];
    path_join(path, sizeof path, dir, "correlation_vs_oracle.png");
    snprintf(title, sizeof title, "Correlation vs oracle (%lld neurons)", (long long)n);
    snprintf(name, sizeof name, "neurons; slope %.3f, ratio of means %.3f", r->overall.fraction_oracle_slope,
             r->overall.fraction_oracle);
    npred_scatter_opts o;
    memset(&o, 0, sizeof o);
    o.diagonal = 1;
    o.name = name;
    npred_status st = npred_plot_scatter(path, title, "jackknife oracle correlation", "single-trial correlation", x, y,
                                         (int)n, &o, NULL);
    free(x), free(y);
    return st;
}

npred_status npred_report_session_correlations(const char *dir, const npred_eval_results *r)
{
    for (int s = 0; s < r->n_sessions; s++) {
        const npred_eval_session *e = &r->sessions[s];
        char file[128], path[4096], title[160];
        snprintf(file, sizeof file, "correlations_%s.png", e->data_key);
        path_join(path, sizeof path, dir, file);
        snprintf(title, sizeof title, "Session %s: %s correlation (%lld neurons)", e->data_key, npred_tier_name(r->tier),
                 (long long)e->m.n_neurons);
        npred_status st = npred_plot_histogram(path, title, "single-trial correlation", e->corr, (int)e->m.n_neurons, 0,
                                               e->m.single_trial_corr, "mean", NULL);
        if (st) return st;
    }
    return NPRED_OK;
}

npred_status npred_report_retinotopy(const char *dir, npred_model *m, int i, const double *coords, int coord_dims)
{
    if (!coords || coord_dims < 2)
        return npred_errorf(NPRED_ERR_ARG, "retinotopy: the session has no cortical coordinates (cell_motor_coordinates)");
    int n = npred_model_session_neurons(m, i);
    float *xy = malloc(sizeof(float) * 2 * (size_t)n);
    double *x = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n);
    double *v = malloc(sizeof(double) * (size_t)n);
    npred_status st = !xy || !x || !y || !v ? npred_errorf(NPRED_ERR_NOMEM, "out of memory")
                                            : npred_model_readout_positions(m, i, xy);
    for (int d = 0; !st && d < 2; d++) {
        for (int j = 0; j < n; j++) x[j] = xy[2 * j], y[j] = xy[2 * j + 1], v[j] = coords[(size_t)j * coord_dims + d];
        char file[160], path[4096], title[160], name[96];
        const char *key = npred_model_session_key(m, i);
        snprintf(file, sizeof file, "retinotopy_%s_%c.png", key, "xy"[d]);
        path_join(path, sizeof path, dir, file);
        snprintf(title, sizeof title, "Session %s: readout positions by cortical %c", key, "xy"[d]);
        snprintf(name, sizeof name, "colour: cortical %c (blue low, yellow high)", "xy"[d]);
        npred_scatter_opts o;
        memset(&o, 0, sizeof o);
        o.fixed_range = 1;
        o.range[0] = -1, o.range[1] = 1, o.range[2] = -1, o.range[3] = 1;
        o.ydown = 1;
        o.values = v;
        o.name = name;
        st = npred_plot_scatter(path, title, "x (readout grid)", "y (readout grid)", x, y, n, &o, NULL);
    }
    free(xy), free(x), free(y), free(v);
    return st;
}
