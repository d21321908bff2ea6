/* Plotting: PNG writing (atomic, deterministic), canvas primitives, the font, and each
 * chart read back with libpng: size, not blank, data pixels where the exposed axis
 * mapping says, nice tick ranges, error statuses. NPRED_TEST_KEEP=1 keeps the pictures. */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "viz/plot.h"

static char DIR_[256];

static const char *out(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", DIR_, name);
    return buf[k];
}

/* Read a PNG as 8-bit RGB (malloc'ed; NULL + failed CHECK on error). */
static uint8_t *read_png(const char *name, int *w, int *h)
{
    png_image img = {.version = PNG_IMAGE_VERSION};
    uint8_t *buf = NULL;
    if (png_image_begin_read_from_file(&img, out(name))) {
        img.format = PNG_FORMAT_RGB;
        buf = malloc(PNG_IMAGE_SIZE(img));
        if (buf && !png_image_finish_read(&img, NULL, buf, 0, NULL)) free(buf), buf = NULL;
    }
    png_image_free(&img);
    *w = (int)img.width, *h = (int)img.height;
    CHECK(buf != NULL, "cannot read back %s", name);
    return buf;
}

static uint32_t pix(const uint8_t *im, int w, double x, double y)
{
    const uint8_t *p = im + ((size_t)lround(y) * w + lround(x)) * 3;
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

/* Fraction of pixels that are not white. */
static double ink(const uint8_t *im, int w, int h)
{
    size_t n = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) n += pix(im, w, i % w, i / w) != 0xFFFFFF;
    return (double)n / ((double)w * h);
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(out(a), "rb"), *fb = fopen(out(b), "rb");
    int same = fa && fb, ca, cb;
    while (same) {
        ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        else if (ca == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Number of entries in the test folder; *tmp receives how many look like temp files. */
static int count_dir(int *tmp)
{
    DIR *d = opendir(DIR_);
    struct dirent *e;
    int n = 0;
    *tmp = 0;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++, *tmp += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_png(void)
{
    uint8_t rgb[5 * 7 * 3];
    for (int i = 0; i < 5 * 7 * 3; i++) rgb[i] = (uint8_t)(i * 7);
    CHECK_OK(npred_png_write(out("small.png"), rgb, 5, 7));
    CHECK_OK(npred_png_write(out("small2.png"), rgb, 5, 7));
    CHECK(same_file("small.png", "small2.png"), "same image, different bytes");
    int w, h, tmp;
    uint8_t *im = read_png("small.png", &w, &h);
    CHECK(im && w == 7 && h == 5 && !memcmp(im, rgb, sizeof rgb), "round trip %dx%d", w, h);
    free(im);
    int n0 = count_dir(&tmp);
    CHECK(npred_png_write(NULL, rgb, 2, 2) == NPRED_ERR_ARG, "NULL path");
    CHECK(npred_png_write(out("z.png"), rgb, 0, 2) == NPRED_ERR_ARG, "h = 0");
    CHECK(npred_png_write(out("z.png"), rgb, 2, -1) == NPRED_ERR_ARG, "w < 0");
    CHECK(npred_png_write(out("no/such/dir/x.png"), rgb, 2, 2) == NPRED_ERR_IO, "missing folder");
    CHECK(strstr(npred_last_error(), "no/such/dir/x.png") != NULL, "message names the path: %s", npred_last_error());
    /* renaming onto a folder fails after the temp file was written: it must be removed */
    CHECK(npred_png_write(DIR_, rgb, 2, 2) == NPRED_ERR_IO, "path is a folder");
    int n1 = count_dir(&tmp);
    CHECK(n1 == n0 && tmp == 0, "failed writes left files: %d -> %d entries, %d temp", n0, n1, tmp);
}

static void test_font_and_canvas(void)
{
    for (int a = 33; a < 127; a++)
        for (int b = 32; b < a; b++)
            CHECK(memcmp(npred_font_glyph((unsigned char)a), npred_font_glyph((unsigned char)b), 9) != 0,
                  "glyphs '%c' and '%c' are equal", a, b);
    CHECK(npred_font_glyph(200) == npred_font_glyph('?'), "non-ASCII draws as '?'");
    npred_canvas c;
    CHECK(npred_canvas_init(&c, 0, 5, 0) == NPRED_ERR_ARG, "zero width");
    CHECK_OK(npred_canvas_init(&c, 600, 110, 0xFFFFFF));
    npred_canvas_rect(&c, 2, 3, 5, 4, 0x123456, 1);
    CHECK(pix(c.rgb, c.w, 2, 3) == 0x123456 && pix(c.rgb, c.w, 5, 4) == 0x123456, "filled rect corners");
    CHECK(pix(c.rgb, c.w, 6, 4) == 0xFFFFFF && pix(c.rgb, c.w, 2, 5) == 0xFFFFFF, "rect overdraws");
    npred_canvas_line(&c, 10, 20, 30, 20, 1, 0xFF0000);
    CHECK(pix(c.rgb, c.w, 20, 20) == 0xFF0000 && pix(c.rgb, c.w, 20, 21) == 0xFFFFFF, "1-pixel horizontal line");
    npred_canvas_clip(&c, 0, 0, 9, 29);
    npred_canvas_rect(&c, 0, 25, 39, 25, 0x00FF00, 1);
    CHECK(pix(c.rgb, c.w, 9, 25) == 0x00FF00 && pix(c.rgb, c.w, 10, 25) == 0xFFFFFF, "clip rectangle");
    npred_canvas_clip(&c, 0, 0, c.w - 1, c.h - 1);
    CHECK(npred_text_width("ab", 2) == 22 && npred_text_width("", 3) == 0, "text width");
    npred_canvas_fill(&c, 0xFFFFFF);
    /* 'T' at scale 2: full top row, then the middle column only */
    CHECK(npred_canvas_text(&c, 1, 1, "T", 2, 0, 0) == 10, "advance");
    CHECK(pix(c.rgb, c.w, 1, 1) == 0 && pix(c.rgb, c.w, 10, 2) == 0 && pix(c.rgb, c.w, 5, 13) == 0 &&
              pix(c.rgb, c.w, 1, 13) == 0xFFFFFF, "glyph T pixels");
    npred_canvas_fill(&c, 0xFFFFFF);
    npred_canvas_text(&c, 0, 0, "T", 1, 0, 1); /* vertical: the bar of T is the left column */
    CHECK(pix(c.rgb, c.w, 0, 0) == 0 && pix(c.rgb, c.w, 0, 4) == 0 && pix(c.rgb, c.w, 6, 2) == 0 &&
              pix(c.rgb, c.w, 6, 0) == 0xFFFFFF, "vertical T pixels");
    /* a font sheet to look at */
    npred_canvas_fill(&c, 0xFFFFFF);
    char line[33];
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < 32; i++) line[i] = (char)(32 + 32 * r + i < 127 ? 32 + 32 * r + i : 0);
        line[32] = 0;
        npred_canvas_text(&c, 8, 8 + 22 * r, line, 2, 0, 0);
    }
    npred_canvas_text(&c, 8, 76, "Validation correlation 0.123 (-4e-5) gjpqy", 1, 0, 0);
    CHECK_OK(npred_canvas_write_png(&c, out("font.png")));
    npred_canvas_free(&c);
}

#define AT(x, y) pix(im, w, npred_plot_px(&a, x), npred_plot_py(&a, y)) /* colour at a data point */
#define NE 38
static void test_lines(void)
{
    double loss[NE], corr[NE], lr[NE], one = 0.25, one_x = 17;
    for (int i = 0; i < NE; i++) {
        loss[i] = 0.9 * exp(-i / 9.0) + 0.1;
        corr[i] = i == 10 ? NAN : 0.3 * (1 - exp(-i / 6.0));
        lr[i] = i < 15 ? 5e-3 : i < 30 ? 1.5e-3 : 4.5e-4;
    }
    npred_plot_series s[3] = {{"train loss", NULL, loss, NE, 0xFF7F0E},
                              {"validation correlation", NULL, corr, NE, NPRED_COLOR_AUTO},
                              {"single", &one_x, &one, 1, 0x2CA02C}};
    npred_plot_axes a;
    CHECK_OK(npred_plot_lines(out("lines.png"), "Training", "epoch", "value", s, 3, 0, &a));
    CHECK(a.xmin == 0 && a.xmax == 40 && a.ymin == 0 && a.ymax == 1, "nice ranges x [%g, %g] y [%g, %g]", a.xmin,
          a.xmax, a.ymin, a.ymax);
    int w, h;
    uint8_t *im = read_png("lines.png", &w, &h);
    if (!im) return;
    CHECK(a.left > 40 && a.right < w - 10 && a.top > 30 && a.bottom < h - 40, "plot area %d..%d x %d..%d in %dx%d",
          a.left, a.right, a.top, a.bottom, w, h);
    double f = ink(im, w, h);
    CHECK(f > 0.02 && f < 0.5, "ink fraction %.3f", f);
    CHECK(AT(5, loss[5]) == 0xFF7F0E, "loss at epoch 5");
    CHECK(AT(30, corr[30]) == npred_plot_palette(1), "corr at 30");
    CHECK(AT(one_x, one) == 0x2CA02C, "single point drawn");
    /* the NaN at epoch 10 leaves a gap between epochs 9 and 11 */
    double gx = npred_plot_px(&a, 10), gy = 0.5 * (npred_plot_py(&a, corr[9]) + npred_plot_py(&a, corr[11]));
    CHECK(pix(im, w, gx, gy) != npred_plot_palette(1), "no line across the NaN");
    free(im);
    CHECK_OK(npred_plot_lines(out("lines2.png"), "Training", "epoch", "value", s, 3, 0, NULL));
    CHECK(same_file("lines.png", "lines2.png"), "lines chart not deterministic");

    npred_plot_series sl = {"learning rate", NULL, lr, NE, 0x9467BD};
    CHECK_OK(npred_plot_lines(out("lr.png"), "Learning rate", "epoch", "lr", &sl, 1, 1, &a));
    CHECK(fabs(a.ymin - 1e-4) < 1e-18 && fabs(a.ymax - 1e-2) < 1e-16 && a.logy, "log range [%g, %g]", a.ymin, a.ymax);
    /* log mapping: 1e-3 is halfway between the decades 1e-4 and 1e-2 */
    CHECK(fabs(npred_plot_py(&a, 1e-3) - 0.5 * (a.top + a.bottom)) < 1e-9, "log mapping");
    if ((im = read_png("lr.png", &w, &h)))
        CHECK(AT(20, lr[20]) == 0x9467BD, "lr at epoch 20");
    free(im);

    /* a lone point: a padded range around it and a dot at its pixel */
    npred_plot_series lone = {NULL, &one_x, &one, 1, 0x2CA02C};
    CHECK_OK(npred_plot_lines(out("lone.png"), "One epoch", "epoch", "loss", &lone, 1, 0, &a));
    CHECK(a.xmin < one_x && a.xmax > one_x && a.ymin < one && a.ymax > one, "range around a lone point");
    if ((im = read_png("lone.png", &w, &h)))
        CHECK(AT(one_x, one) == 0x2CA02C, "lone point drawn");
    free(im);
}

static void test_histogram(void)
{
    double v[11] = {0, 0.5, 0.5, 1.5, 2.5, 2.5, 2.5, 2.5, 3.5, 4, NAN};
    npred_plot_axes a;
    CHECK_OK(npred_plot_histogram(out("hist.png"), "Test correlation per neuron", "correlation", v, 11, 4, 1.95,
                                  "mean = 1.95", &a));
    CHECK(a.xmin == 0 && a.xmax == 4 && a.ymin == 0 && a.ymax == 5, "ranges x [%g, %g] y [%g, %g]", a.xmin, a.xmax,
          a.ymin, a.ymax);
    int w, h;
    uint8_t *im = read_png("hist.png", &w, &h);
    if (!im) return;
    /* bins of width 1: counts 3, 1, 4, 2 (the maximum 4 goes into the last bin) */
    const double inside[][2] = {{0.5, 2.5}, {1.5, 0.5}, {2.5, 3.5}, {3.5, 1.5}}, above[][2] = {{1.5, 1.5}, {2.5, 4.4}, {3.5, 2.5}};
    for (int i = 0; i < 4; i++)
        CHECK(AT(inside[i][0], inside[i][1]) == 0x7BAFD4, "in bar %d", i);
    for (int i = 0; i < 3; i++)
        CHECK(AT(above[i][0], above[i][1]) != 0x7BAFD4, "above bar %d", i);
    CHECK(pix(im, w, npred_plot_px(&a, 1.95), a.top + 3) == 0xD62728, "marker line");
    free(im);
    double big[2000], c1 = 0.7;
    uint64_t st = 7;
    for (int i = 0; i < 2000; i++) big[i] = 0.35 + 0.12 * (th_rand(&st) + th_rand(&st) + th_rand(&st));
    for (int k = 0; k < 2; k++)
        CHECK_OK(npred_plot_histogram(out(k ? "hist_big2.png" : "hist_big.png"), "Test correlation", "correlation", big,
                                      2000, 0, 0.35, "mean", NULL));
    CHECK(same_file("hist_big.png", "hist_big2.png"), "histogram not deterministic");
    CHECK_OK(npred_plot_histogram(out("hist_one.png"), "One value", NULL, &c1, 1, 0, NAN, NULL, &a));
    CHECK(a.xmin <= 0.2 && a.xmax >= 1.2, "one value gets a unit-wide bin range [%g, %g]", a.xmin, a.xmax);
}

static int dominant(uint32_t c) /* 0 = red, 2 = blue, 3 = neither */
{
    int r = c >> 16, g = (c >> 8) & 255, b = c & 255;
    return r > g + 60 && r > b + 60 ? 0 : b > r + 60 && b > g + 30 ? 2 : 3;
}

static void test_scatter(void)
{
    enum { N = 40 };
    double x[N], y[N], x2[N], y2[N];
    uint64_t st = 11;
    for (int i = 0; i < N; i++) {
        x2[i] = 0.8 * th_rand(&st), y2[i] = 0.8 * th_rand(&st);
        x[i] = x2[i] + 0.08 * th_rand(&st), y[i] = y2[i] + 0.08 * th_rand(&st);
    }
    x[0] = 0.3, y[0] = 0.6, x2[0] = 0.7, y2[0] = 0.6; /* a horizontal segment of length 0.4 */
    x[1] = NAN;
    npred_scatter_opts o = {.name = "learned", .name2 = "ground truth", .x2 = x2, .y2 = y2, .connect = 1,
                            .fixed_range = 1, .range = {-1, 1, -1, 1}, .ydown = 1};
    npred_plot_axes a;
    CHECK_OK(npred_plot_scatter(out("scatter.png"), "Readout positions", "x", "y", x, y, N, &o, &a));
    CHECK(a.xmin == -1 && a.xmax == 1 && a.ymin == -1 && a.ymax == 1 && a.ydown, "fixed range");
    CHECK(a.right - a.left == a.bottom - a.top, "square plot area");
    CHECK(npred_plot_py(&a, 0.6) > 0.5 * (a.top + a.bottom), "y down: 0.6 is in the lower half");
    int w, h;
    uint8_t *im = read_png("scatter.png", &w, &h);
    if (!im) return;
    CHECK(dominant(AT(0.3, 0.6)) == 2, "set 1 point is blue");
    CHECK(dominant(AT(0.7, 0.6)) == 0, "set 2 point is red");
    CHECK(AT(0.3, -0.6) == 0xFFFFFF, "nothing at the mirrored point");
    uint32_t m = AT(0.5, 0.6);
    CHECK((m >> 16) == (m & 255) && (m & 255) < 235, "grey segment between the pair: %06X", m);
    free(im);
    CHECK_OK(npred_plot_scatter(out("scatter2.png"), "Readout positions", "x", "y", x, y, N, &o, NULL));
    CHECK(same_file("scatter.png", "scatter2.png"), "scatter not deterministic");
    npred_scatter_opts d = {.diagonal = 1};
    CHECK_OK(npred_plot_scatter(out("scatter_auto.png"), "Predicted vs true", "true", "predicted", x2, y, N, &d, &a));
    CHECK(a.xmin <= -0.8 && a.xmax >= 0.8 && !a.ydown, "auto range [%g, %g]", a.xmin, a.xmax);
}

static void test_filters(void)
{
    enum { N = 10, K = 5 };
    float wt[N * K * K];
    uint64_t st = 3;
    for (int i = 0; i < N * K * K; i++) wt[i] = i < 2 * K * K ? 0 : (float)th_rand(&st);
    wt[0] = 2, wt[1] = -2, wt[2] = 1; /* filter 0: max |w| = 2; filter 1: all zero */
    wt[2 * K * K + 7] = NAN;
    npred_plot_grid g;
    CHECK_OK(npred_plot_filters(out("filters.png"), "First-layer filters", wt, N, K, K, 5, &g));
    CHECK(g.scale == 14 && g.cols == 5, "scale %d cols %d", g.scale, g.cols);
    int w, h;
    uint8_t *im = read_png("filters.png", &w, &h);
    if (!im) return;
    int s = g.scale, x0 = g.left, y0 = g.top;
    CHECK(pix(im, w, x0, y0) == 0xB2182B && pix(im, w, x0 + s - 1, y0 + s - 1) == 0xB2182B, "+max is red");
    CHECK(pix(im, w, x0 + s, y0) == 0x2166AC, "-max is blue");
    CHECK(pix(im, w, x0 + 2 * s, y0) == npred_plot_diverging(0.5), "half");
    CHECK(pix(im, w, x0 + 3 * s, y0 + 2 * s) == 0xFFFFFF, "zero is white");
    CHECK(pix(im, w, x0 + g.pitch_x + 2 * s, y0 + s) == 0xFFFFFF, "all-zero filter is white");
    CHECK(pix(im, w, x0 + 2 * g.pitch_x + 2 * s, y0 + 1 * s) == 0x808080, "NaN weight is grey");
    /* filter 7 sits at row 1, column 2; its pixel (i, j) is wt[7] scaled by its own max |w| */
    const float *f7 = wt + 7 * K * K;
    double m = 0;
    for (int i = 0; i < K * K; i++) m = fmax(m, fabs(f7[i]));
    CHECK(pix(im, w, x0 + 2 * g.pitch_x + 4 * s + 3, y0 + g.pitch_y + 3 * s + 5) ==
              npred_plot_diverging(f7[3 * K + 4] / m), "filter 7 pixel (3, 4)");
    free(im);
    CHECK_OK(npred_plot_filters(out("filters2.png"), "First-layer filters", wt, N, K, K, 5, NULL));
    CHECK(same_file("filters.png", "filters2.png"), "filters not deterministic");
    CHECK(npred_plot_diverging(-1) == 0x2166AC && npred_plot_diverging(0) == 0xFFFFFF &&
              npred_plot_diverging(7) == 0xB2182B, "colour map ends");
}

static void test_chart_errors(void)
{
    double nan3[3] = {NAN, NAN, INFINITY}, neg[3] = {-1, 0, -2}, ok[3] = {1, 2, 3};
    npred_plot_series s = {"a", NULL, nan3, 3, NPRED_COLOR_AUTO};
    CHECK(npred_plot_lines(out("e.png"), "t", "x", "y", &s, 1, 0, NULL) == NPRED_ERR_VALUE, "all-NaN lines");
    CHECK(npred_plot_lines(out("e.png"), "t", "x", "y", &s, 0, 0, NULL) == NPRED_ERR_VALUE, "no series");
    s.y = neg;
    CHECK(npred_plot_lines(out("e.png"), "t", "x", "y", &s, 1, 1, NULL) == NPRED_ERR_VALUE, "log of <= 0");
    s.y = NULL;
    CHECK(npred_plot_lines(out("e.png"), "t", "x", "y", &s, 1, 0, NULL) == NPRED_ERR_ARG, "NULL y");
    s.y = ok;
    CHECK(npred_plot_lines(out("no/dir/e.png"), "t", "x", "y", &s, 1, 0, NULL) == NPRED_ERR_IO, "unwritable");
    CHECK(npred_plot_histogram(out("e.png"), "t", "x", ok, 0, 0, NAN, NULL, NULL) == NPRED_ERR_ARG, "n = 0");
    CHECK(npred_plot_histogram(out("e.png"), "t", "x", nan3, 3, 0, NAN, NULL, NULL) == NPRED_ERR_VALUE, "all NaN");
    CHECK(strstr(npred_last_error(), "finite") != NULL, "message: %s", npred_last_error());
    CHECK(npred_plot_scatter(out("e.png"), "t", "x", "y", nan3, ok, 3, NULL, NULL) == NPRED_ERR_VALUE, "NaN scatter");
    npred_scatter_opts o = {.fixed_range = 1, .range = {1, 1, 0, 1}};
    CHECK(npred_plot_scatter(out("e.png"), "t", "x", "y", ok, ok, 3, &o, NULL) == NPRED_ERR_ARG, "empty range");
    float f[4] = {0};
    CHECK(npred_plot_filters(out("e.png"), "t", f, 1, 0, 2, 0, NULL) == NPRED_ERR_ARG, "kh = 0");
    CHECK(npred_plot_filters(out("e.png"), "t", f, 100000, 64, 64, 0, NULL) == NPRED_ERR_ARG, "too large");
    CHECK(access(out("e.png"), F_OK) != 0, "no file written on error");
    int tmp, n = count_dir(&tmp);
    CHECK(n > 10 && tmp == 0, "%d files, %d temp files left", n, tmp);
}

int main(void)
{
    const char *t = getenv("TMPDIR"), *keep = getenv("NPRED_TEST_KEEP");
    snprintf(DIR_, sizeof DIR_, "%s/npred_plot_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(DIR_)) {
        CHECK(0, "cannot create a temp folder");
        return th_summary();
    }
    RUN(test_png);
    RUN(test_font_and_canvas);
    RUN(test_lines);
    RUN(test_histogram);
    RUN(test_scatter);
    RUN(test_filters);
    RUN(test_chart_errors);
    if (keep && *keep == '1') {
        printf("pictures kept in %s\n", DIR_);
    } else {
        DIR *d = opendir(DIR_);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.') unlink(out(e->d_name));
        if (d) closedir(d);
        rmdir(DIR_);
    }
    return th_summary();
}
