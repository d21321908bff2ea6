/* Pictures of in-silico experiments: image grids (MEIs, RFs) and tuning curves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "npred/insilico.h"
#include "viz/plot.h"

#define MAX_TILES 100 /* a grid shows at most this many neurons (the title says so) */

static int cols_for(int count) { return count <= 1 ? 1 : (int)ceil(sqrt((double)count * 1.5)); }

npred_status npred_insilico_png_grid(const char *path, const char *title, const float *images, int count, int C,
                                     int H, int W, float center, const char *const *labels, const float *marks)
{
    if (!path || !images || count < 1 || C < 1 || H < 1 || W < 1)
        return npred_errorf(NPRED_ERR_ARG, "picture %s: no images", path ? path : "(null)");
    int shown = count < MAX_TILES ? count : MAX_TILES, cols = cols_for(shown), rows = (shown + cols - 1) / cols;
    int scale = W >= 128 ? 1 : (128 + W - 1) / W, tw = W * scale, th = H * scale, pad = 6, lab = 12, top = 28;
    int cw = cols * (tw + pad) + pad, ch = top + rows * (th + lab + pad) + pad;
    if (cw < 240) cw = 240;
    npred_canvas cv;
    npred_status st = npred_canvas_init(&cv, cw, ch, 0xFFFFFF);
    if (st) return npred_error_prefix(st, "picture %s", path);
    char t[160];
    if (shown < count) snprintf(t, sizeof t, "%s (first %d of %d)", title ? title : "", shown, count);
    else snprintf(t, sizeof t, "%s", title ? title : "");
    npred_canvas_text(&cv, pad, 8, t, 1, 0x000000, 0);
    size_t plane = (size_t)H * W;
    for (int i = 0; i < shown; i++) {
        const float *img = images + (size_t)i * C * plane; /* first channel */
        double mx = 0;
        for (size_t k = 0; k < plane; k++)
            if (fabs(img[k] - center) > mx) mx = fabs(img[k] - center);
        int x0 = pad + (i % cols) * (tw + pad), y0 = top + (i / cols) * (th + lab + pad);
        if (labels && labels[i]) npred_canvas_text(&cv, x0, y0, labels[i], 1, 0x000000, 0);
        y0 += lab;
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                double v = img[(size_t)(y / scale) * W + x / scale] - center;
                npred_canvas_rect(&cv, x0 + x, y0 + y, x0 + x, y0 + y, npred_plot_diverging(mx > 0 ? v / mx : 0), 1);
            }
        npred_canvas_rect(&cv, x0 - 1, y0 - 1, x0 + tw, y0 + th, 0x808080, 0);
        if (marks && isfinite(marks[2 * i]) && isfinite(marks[2 * i + 1]))
            npred_canvas_circle(&cv, x0 + (marks[2 * i] + 0.5) * scale - 0.5, y0 + (marks[2 * i + 1] + 0.5) * scale - 0.5,
                                3, 0x00A000, 0, 1.0);
    }
    st = npred_canvas_write_png(&cv, path);
    npred_canvas_free(&cv);
    return st;
}

npred_status npred_tuning_png(const char *path, const npred_tuning_config *cfg, const float *responses, int count,
                              const npred_tuning_result *res, const char *const *labels)
{
    if (!path || !cfg || !responses || !res || count < 1)
        return npred_errorf(NPRED_ERR_ARG, "picture %s: no tuning data", path ? path : "(null)");
    int shown = count < MAX_TILES ? count : MAX_TILES, cols = cols_for(shown), rows = (shown + cols - 1) / cols;
    int pw = 150, ph = 90, pad = 8, lab = 24, top = 28;
    int cw = cols * (pw + pad) + pad, chh = top + rows * (ph + lab + pad) + pad;
    if (cw < 300) cw = 300;
    npred_canvas cv;
    npred_status st = npred_canvas_init(&cv, cw, chh, 0xFFFFFF);
    if (st) return npred_error_prefix(st, "picture %s", path);
    char t[200];
    snprintf(t, sizeof t, "F0 vs orientation (0-180 deg) at the preferred SF%s; grey: max/min over phase",
             shown < count ? " (first 100 neurons)" : "");
    npred_canvas_text(&cv, pad, 8, t, 1, 0x000000, 0);
    int no = cfg->n_ori, ns = cfg->n_sf, np = cfg->n_phase;
    double *f0 = malloc(sizeof(double) * 3 * (size_t)no);
    if (!f0) {
        npred_canvas_free(&cv);
        return npred_errorf(NPRED_ERR_NOMEM, "picture %s: out of memory", path);
    }
    for (int i = 0; i < shown; i++) {
        int x0 = pad + (i % cols) * (pw + pad), y0 = top + (i / cols) * (ph + lab + pad);
        int bf = 0;
        for (int f = 0; f < ns; f++)
            if (fabs(npred_tuning_sf(cfg, f) - res[i].spatial_frequency) < 1e-12) bf = f;
        double mx = 0;
        for (int t2 = 0; t2 < no; t2++) {
            double s = 0, lo = INFINITY, hi = -INFINITY;
            for (int p = 0; p < np; p++) {
                double r = responses[(size_t)((t2 * ns + bf) * np + p) * count + i];
                s += r;
                lo = r < lo ? r : lo;
                hi = r > hi ? r : hi;
            }
            f0[3 * t2] = s / np;
            f0[3 * t2 + 1] = lo;
            f0[3 * t2 + 2] = hi;
            if (hi > mx) mx = hi;
        }
        char l1[64], l2[64];
        snprintf(l1, sizeof l1, "%s", labels && labels[i] ? labels[i] : "");
        snprintf(l2, sizeof l2, "%.0fd sf%.3f osi%.2f f1/f0 %.2f", res[i].orientation * 180 / M_PI,
                 res[i].spatial_frequency, res[i].osi, res[i].f1_f0);
        npred_canvas_text(&cv, x0, y0, l1, 1, 0x000000, 0);
        npred_canvas_text(&cv, x0, y0 + 11, l2, 1, 0x404040, 0);
        y0 += lab;
        npred_canvas_rect(&cv, x0, y0, x0 + pw - 1, y0 + ph - 1, 0xB0B0B0, 0);
        if (!(mx > 0)) continue;
        for (int k = 0; k < 3; k++)
            for (int t2 = 0; t2 + 1 <= no; t2++) {
                int t3 = (t2 + 1) % no; /* wrap to 180 degrees */
                double xa = x0 + 2 + (pw - 5) * (double)t2 / no, xb = x0 + 2 + (pw - 5) * (double)(t2 + 1) / no;
                double ya = y0 + ph - 3 - (ph - 6) * f0[3 * t2 + k] / mx, yb = y0 + ph - 3 - (ph - 6) * f0[3 * t3 + k] / mx;
                npred_canvas_line(&cv, xa, ya, xb, yb, k ? 1.0 : 2.0, k ? 0xA0A0A0 : 0x1060C0);
            }
        double xo = x0 + 2 + (pw - 5) * res[i].orientation / M_PI;
        npred_canvas_line(&cv, xo, y0 + 2, xo, y0 + ph - 3, 1.0, 0xD02020);
    }
    free(f0);
    st = npred_canvas_write_png(&cv, path);
    npred_canvas_free(&cv);
    return st;
}
