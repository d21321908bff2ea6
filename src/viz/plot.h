/* Pictures for a training run: PNG writing, a tiny RGB canvas and four charts (docs/pictures.md).
 *
 * Plain arrays in, PNG files out; no dependency on the model. Every file is written
 * atomically (temp file, fsync, rename) and deterministically (same input, same bytes).
 *
 * Coordinates: pixel (x, y) has its centre at integer (x, y); x grows right, y down.
 * Colours are 0xRRGGBB. Text uses a built-in 5x7 bitmap font (printable ASCII, with
 * descenders) in a 6x10 cell, scaled by an integer factor; other bytes draw as '?'. */
#ifndef NPRED_VIZ_PLOT_H
#define NPRED_VIZ_PLOT_H

#include <stdint.h>

#include "npred/base.h"

#define NPRED_COLOR_AUTO 0xFFFFFFFFu /* series colour: take the next palette colour */
#define NPRED_FONT_W 6               /* cell width in pixels at scale 1 (glyph 5 + gap 1) */
#define NPRED_FONT_H 10              /* cell height: 7 rows above the baseline, 2 below, 1 gap */

/* Write an 8-bit RGB image atomically. Errors: NPRED_ERR_ARG (NULL, h or w <= 0 or
 * > 16384), NPRED_ERR_IO (cannot create/write/rename; the temp file is removed). */
npred_status npred_png_write(const char *path,
                             const uint8_t *rgb, // (h, w, 3)
                             int h, int w);

/* ---- canvas ---- */
typedef struct {
    int w, h;
    uint8_t *rgb;               // (h, w, 3)
    int cx0, cy0, cx1, cy1;     // clip rectangle, inclusive; drawing outside is dropped
} npred_canvas;

npred_status npred_canvas_init(npred_canvas *c, int w, int h, uint32_t background);
void npred_canvas_free(npred_canvas *c);
void npred_canvas_fill(npred_canvas *c, uint32_t color);
/* Restrict drawing to [x0, x1] x [y0, y1] (clamped to the canvas); reset with
 * npred_canvas_clip(c, 0, 0, c->w - 1, c->h - 1). */
void npred_canvas_clip(npred_canvas *c, int x0, int y0, int x1, int y1);
/* Mix color into one pixel with weight alpha in [0, 1]. */
void npred_canvas_blend(npred_canvas *c, int x, int y, uint32_t color, double alpha);
/* Rectangle with corners (x0, y0), (x1, y1) inclusive: filled, or a 1-pixel outline. */
void npred_canvas_rect(npred_canvas *c, int x0, int y0, int x1, int y1, uint32_t color, int filled);
/* Anti-aliased line of the given width (pixels), round caps. */
void npred_canvas_line(npred_canvas *c, double x0, double y0, double x1, double y1, double width,
                       uint32_t color);
/* Anti-aliased disk (filled) or ring of width 1.5 (outline), scaled by alpha. */
void npred_canvas_circle(npred_canvas *c, double cx, double cy, double r, uint32_t color, int filled,
                         double alpha);
/* Text with its cell's top-left at (x, y); vertical != 0 rotates it 90 degrees
 * counter-clockwise (reads bottom to top) with its box's top-left at (x, y).
 * Returns the advance (text length in pixels). */
int npred_canvas_text(npred_canvas *c, int x, int y, const char *s, int scale, uint32_t color,
                      int vertical);
int npred_text_width(const char *s, int scale);
npred_status npred_canvas_write_png(const npred_canvas *c, const char *path);

/* Font rows for byte ch (printable ASCII, else '?'): 9 rows of 5 bits, bit 4 = left column. */
const uint8_t *npred_font_glyph(unsigned char ch);

/* ---- charts ---- */

/* Where a chart put its data: the plot area and the axis mapping. */
typedef struct {
    int left, top, right, bottom;   // plot area, inclusive pixel columns/rows
    double xmin, xmax, ymin, ymax;  // data values at the area's edges (ymin at the bottom,
                                    // or at the top when ydown)
    int logy, ydown;
} npred_plot_axes;

/* Data value -> pixel coordinate (pixel centres at integers; round to get the pixel). */
double npred_plot_px(const npred_plot_axes *a, double x);
double npred_plot_py(const npred_plot_axes *a, double y);

/* Palette colour i (cycles through 8 colours). */
uint32_t npred_plot_palette(int i);
/* Diverging blue-white-red colour map for v in [-1, 1] (clamped; NaN -> grey). */
uint32_t npred_plot_diverging(double v);

typedef struct {
    const char *name;   // legend entry; NULL or "" for none
    const double *x;    // (n) or NULL for x = 0, 1, ..., n-1
    const double *y;    // (n); NaN/Inf points (and y <= 0 with logy) are skipped
    int n;
    uint32_t color;     // 0xRRGGBB or NPRED_COLOR_AUTO
} npred_plot_series;

/* Line chart (training curves). Gaps at skipped points; isolated points and all
 * points of short series (<= 40) get a dot. logy: log10 y axis with decade ticks.
 * Errors: ARG (NULL path/series, n < 0, NULL y), VALUE (no finite point at all).
 * axes (may be NULL) receives the mapping used. */
npred_status npred_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                              const npred_plot_series *series, int n_series, int logy,
                              npred_plot_axes *axes);

/* Histogram of the finite values over `bins` equal bins spanning [min, max] (bins <= 0:
 * automatic). marker: a dashed vertical line at that value with marker_label in the
 * legend (NaN: none). Errors: ARG (NULL, n <= 0, bins > 1000), VALUE (no finite value). */
npred_status npred_plot_histogram(const char *path, const char *title, const char *xlabel,
                                  const double *values, // (n)
                                  int n, int bins, double marker, const char *marker_label,
                                  npred_plot_axes *axes);

typedef struct {
    const char *name, *name2;  // legend entries of set 1 and set 2
    const double *x2, *y2;     // (n) optional second set (same n), or NULL
    int connect;               // draw a segment from point i of set 1 to point i of set 2
    int fixed_range;           // use range[] instead of the data range
    double range[4];           // xmin, xmax, ymin, ymax
    int ydown;                 // y grows downwards (image coordinates)
    int diagonal;              // draw the y = x reference line
    const double *values;      // (n) colour set-1 points by value (blue low .. yellow high, over the finite
                               // range; non-finite: grey), or NULL for the palette colour
} npred_scatter_opts;

/* Colour of t in [0, 1] on a blue - green - yellow ramp (viridis-like). */
uint32_t npred_plot_ramp(double t);

/* Scatter plot with a square plot area. opts NULL: defaults (one set, data range).
 * Points with a non-finite coordinate are skipped (and their segment).
 * Errors: ARG (NULL path/x/y, n <= 0, empty fixed range), VALUE (no finite point). */
npred_status npred_plot_scatter(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                const double *x, const double *y, // (n), (n)
                                int n, const npred_scatter_opts *opts, npred_plot_axes *axes);

/* Where npred_plot_filters put filter k: top-left pixel (left + (k % cols) * pitch_x,
 * top + (k / cols) * pitch_y); weight (i, j) covers scale x scale pixels from there. */
typedef struct {
    int left, top, pitch_x, pitch_y, cols, scale;
} npred_plot_grid;

/* Filters as a grid of small images: each filter is divided by its own max |w| and
 * coloured with npred_plot_diverging, upscaled by nearest neighbour. cols <= 0: about
 * square. Errors: ARG (NULL, n, kh or kw <= 0, too large a picture). */
npred_status npred_plot_filters(const char *path, const char *title,
                                const float *weights, // (n, kh, kw)
                                int n, int kh, int kw, int cols, npred_plot_grid *grid);

#endif
