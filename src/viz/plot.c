/* Canvas, PNG writing and charts (see plot.h). Single-threaded and deterministic. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "viz/plot.h"

#define MAX_SIDE 16384
#define C_TEXT 0x222222u
#define C_FRAME 0x404040u
#define C_GRID 0xE8E8E8u
#define C_BG 0xFFFFFFu

static int maxi(int a, int b) { return a > b ? a : b; }

/* ---- PNG ---- */

npred_status npred_png_write(const char *path, const uint8_t *rgb, int h, int w)
{
    if (!path || !*path || !rgb) return npred_errorf(NPRED_ERR_ARG, "png write: NULL path or pixels");
    if (h <= 0 || w <= 0 || h > MAX_SIDE || w > MAX_SIDE)
        return npred_errorf(NPRED_ERR_ARG, "%s: image size %dx%d, expected 1..%d pixels per side", path, w, h,
                            MAX_SIDE);
    png_image img = {.version = PNG_IMAGE_VERSION, .width = (png_uint_32)w, .height = (png_uint_32)h,
                     .format = PNG_FORMAT_RGB};
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, rgb, 0, NULL))
        return npred_errorf(NPRED_ERR_IO, "%s: libpng: %s", path, img.message);
    void *mem = malloc(size);
    if (!mem) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    npred_status st = NPRED_OK;
    if (!png_image_write_to_memory(&img, mem, &size, 0, rgb, 0, NULL))
        st = npred_errorf(NPRED_ERR_IO, "%s: libpng: %s", path, img.message);
    png_image_free(&img);
    if (!st) st = npred_write_atomic(path, mem, size);
    free(mem);
    return st;
}

/* ---- canvas ---- */

npred_status npred_canvas_init(npred_canvas *c, int w, int h, uint32_t background)
{
    memset(c, 0, sizeof *c);
    if (w <= 0 || h <= 0 || w > MAX_SIDE || h > MAX_SIDE)
        return npred_errorf(NPRED_ERR_ARG, "canvas %dx%d: expected 1..%d pixels per side", w, h, MAX_SIDE);
    c->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!c->rgb) return npred_errorf(NPRED_ERR_NOMEM, "canvas %dx%d: out of memory", w, h);
    c->w = w, c->h = h;
    npred_canvas_clip(c, 0, 0, w - 1, h - 1);
    npred_canvas_fill(c, background);
    return NPRED_OK;
}

void npred_canvas_free(npred_canvas *c)
{
    free(c->rgb);
    memset(c, 0, sizeof *c);
}

void npred_canvas_fill(npred_canvas *c, uint32_t color)
{
    for (size_t i = 0; i < (size_t)c->w * (size_t)c->h; i++)
        for (int k = 0; k < 3; k++) c->rgb[3 * i + k] = (uint8_t)(color >> (16 - 8 * k));
}

static int clampi(double v, int lo, int hi) { return !(v >= lo) ? lo : v > hi ? hi : (int)v; /* NaN -> lo */ }

void npred_canvas_clip(npred_canvas *c, int x0, int y0, int x1, int y1)
{
    c->cx0 = clampi(x0, 0, c->w - 1), c->cy0 = clampi(y0, 0, c->h - 1);
    c->cx1 = clampi(x1, 0, c->w - 1), c->cy1 = clampi(y1, 0, c->h - 1);
}

void npred_canvas_blend(npred_canvas *c, int x, int y, uint32_t color, double alpha)
{
    if (x < c->cx0 || x > c->cx1 || y < c->cy0 || y > c->cy1 || !(alpha > 0)) return;
    if (alpha > 1) alpha = 1;
    uint8_t *p = c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    for (int k = 0; k < 3; k++) p[k] = (uint8_t)(p[k] + ((int)((color >> (16 - 8 * k)) & 255u) - p[k]) * alpha + 0.5);
}

void npred_canvas_rect(npred_canvas *c, int x0, int y0, int x1, int y1, uint32_t color, int filled)
{
    if (!filled) {
        npred_canvas_rect(c, x0, y0, x1, y0, color, 1), npred_canvas_rect(c, x0, y1, x1, y1, color, 1);
        npred_canvas_rect(c, x0, y0, x0, y1, color, 1), npred_canvas_rect(c, x1, y0, x1, y1, color, 1);
        return;
    }
    for (int y = maxi(y0, c->cy0); y <= y1 && y <= c->cy1; y++)
        for (int x = maxi(x0, c->cx0); x <= x1 && x <= c->cx1; x++) npred_canvas_blend(c, x, y, color, 1);
}

/* Coverage-based anti-aliasing: each pixel near the shape is mixed in with weight
 * clamp(r + 0.5 - distance to the shape, 0, 1). */
void npred_canvas_line(npred_canvas *c, double x0, double y0, double x1, double y1, double width, uint32_t color)
{
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1) || !(width > 0)) return;
    double r = width / 2, dx = x1 - x0, dy = y1 - y0, l2 = dx * dx + dy * dy;
    int xb = clampi(ceil(fmax(x0, x1) + r + 1), c->cx0, c->cx1), yb = clampi(ceil(fmax(y0, y1) + r + 1), c->cy0, c->cy1);
    for (int y = clampi(floor(fmin(y0, y1) - r - 1), c->cy0, c->cy1); y <= yb; y++)
        for (int x = clampi(floor(fmin(x0, x1) - r - 1), c->cx0, c->cx1); x <= xb; x++) {
            double t = l2 > 0 ? fmin(1, fmax(0, ((x - x0) * dx + (y - y0) * dy) / l2)) : 0;
            npred_canvas_blend(c, x, y, color, r + 0.5 - hypot(x0 + t * dx - x, y0 + t * dy - y));
        }
}

void npred_canvas_circle(npred_canvas *c, double cx, double cy, double r, uint32_t color, int filled, double alpha)
{
    if (!isfinite(cx) || !isfinite(cy) || !(r > 0)) return;
    int xb = clampi(ceil(cx + r + 2), c->cx0, c->cx1), yb = clampi(ceil(cy + r + 2), c->cy0, c->cy1);
    for (int y = clampi(floor(cy - r - 2), c->cy0, c->cy1); y <= yb; y++)
        for (int x = clampi(floor(cx - r - 2), c->cx0, c->cx1); x <= xb; x++) {
            double d = hypot(x - cx, y - cy), cov = filled ? r + 0.5 - d : 1.25 - fabs(d - r);
            npred_canvas_blend(c, x, y, color, fmin(cov, 1) * alpha);
        }
}

int npred_text_width(const char *s, int scale)
{
    int n = 0;
    for (; s && *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80; /* one glyph per UTF-8 character */
    return n ? n * NPRED_FONT_W * maxi(scale, 1) - maxi(scale, 1) : 0;
}

int npred_canvas_text(npred_canvas *c, int x, int y, const char *s, int scale, uint32_t color, int vertical)
{
    scale = maxi(scale, 1);
    int len = npred_text_width(s, scale), i = 0;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch & 0xC0) == 0x80) continue;
        const uint8_t *g = npred_font_glyph(ch);
        for (int gy = 0; gy < 9; gy++)
            for (int gx = 0; gx < 5; gx++) {
                if (!((g[gy] >> (4 - gx)) & 1)) continue;
                int px = vertical ? x + gy * scale : x + (i * NPRED_FONT_W + gx) * scale;
                int py = vertical ? y + len - (i * NPRED_FONT_W + gx + 1) * scale : y + gy * scale;
                npred_canvas_rect(c, px, py, px + scale - 1, py + scale - 1, color, 1);
            }
        i++;
    }
    return len;
}

npred_status npred_canvas_write_png(const npred_canvas *c, const char *path)
{
    return npred_png_write(path, c->rgb, c->h, c->w);
}

/* ---- colours and axis mapping ---- */

uint32_t npred_plot_palette(int i)
{
    static const uint32_t P[8] = {0x1F77B4, 0xD62728, 0x2CA02C, 0xFF7F0E, 0x9467BD, 0x8C564B, 0xE377C2, 0x7F7F7F};
    return P[((i % 8) + 8) % 8];
}

uint32_t npred_plot_ramp(double t)
{
    static const double k[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    t = !(t >= 0) ? 0 : t > 1 ? 1 : t;
    double f = t * 4;
    int i = f >= 4 ? 3 : (int)f;
    f -= i;
    uint32_t c = 0;
    for (int ch = 0; ch < 3; ch++) c = (c << 8) | (uint32_t)lround(k[i][ch] + (k[i + 1][ch] - k[i][ch]) * f);
    return c;
}

uint32_t npred_plot_diverging(double v)
{
    if (isnan(v)) return 0x808080;
    uint32_t end = v < 0 ? 0x2166AC : 0xB2182B, out = 0;
    double a = fmin(fabs(v), 1);
    for (int k = 0; k < 3; k++) out = (out << 8) | (uint32_t)(255 + (((end >> (16 - 8 * k)) & 255u) - 255.0) * a + 0.5);
    return out;
}

double npred_plot_px(const npred_plot_axes *a, double x)
{
    return a->left + (x - a->xmin) / (a->xmax - a->xmin) * (a->right - a->left);
}

double npred_plot_py(const npred_plot_axes *a, double y)
{
    double t = a->logy ? (log10(y) - log10(a->ymin)) / (log10(a->ymax) - log10(a->ymin))
                       : (y - a->ymin) / (a->ymax - a->ymin);
    return a->ydown ? a->top + t * (a->bottom - a->top) : a->bottom - t * (a->bottom - a->top);
}

/* ---- ticks ---- */

typedef struct {
    int n;
    double v[64];
    double step; /* linear: tick spacing; log: 0 */
} ticks;

/* Ticks at multiples of a 1-2-5 step, about `target` of them. expand: widen [lo, hi] to
 * the outer ticks; else keep [lo, hi] and list the ticks inside. A constant is padded. */
static void lin_ticks(double *lo, double *hi, int target, int expand, int integer, ticks *t)
{
    double m = fmax(fabs(*lo), fabs(*hi)), p = m == 0 ? 1 : m * 0.1;
    if (!(*hi - *lo > 1e-12 * m)) *lo -= p, *hi += p;
    double raw = (*hi - *lo) / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
    if (integer && step < 1) step = 1;
    double k0 = expand ? floor(*lo / step + 1e-9) : ceil(*lo / step - 1e-9);
    double k1 = expand ? ceil(*hi / step - 1e-9) : floor(*hi / step + 1e-9);
    if (expand) *lo = k0 * step, *hi = k1 * step;
    t->n = 0, t->step = step;
    for (double k = k0; k <= k1 && t->n < 64; k++) t->v[t->n++] = fabs(k * step) < step * 1e-9 ? 0 : k * step;
}

static int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Whole decades covering [lo, hi] (lo > 0), every ds-th labelled so that there are at
 * most ~8; 2x and 5x ticks too when the axis spans <= 2 decades. */
static void log_ticks(double *lo, double *hi, ticks *t)
{
    int e0 = (int)floor(log10(*lo) + 1e-9), e1 = (int)ceil(log10(*hi) - 1e-9);
    if (e1 <= e0) e1 = e0 + 1;
    int ds = (e1 - e0 + 7) / 8;
    e0 = floordiv(e0, ds) * ds, e1 = -floordiv(-e1, ds) * ds;
    *lo = pow(10, e0), *hi = pow(10, e1);
    t->n = 0, t->step = 0;
    for (int e = e0; e <= e1 && t->n < 60; e += ds) {
        t->v[t->n++] = pow(10, e);
        if (e1 - e0 <= 2 && e < e1) t->v[t->n++] = 2 * pow(10, e), t->v[t->n++] = 5 * pow(10, e);
    }
}

/* Tick label: decimals as the step needs; short exponent form ("2e-5", "1.5e6") for tiny
 * steps or big values; log axes "0.001"-style within [1e-3, 1e5). */
static int fmt_tick(char *buf, double v, const ticks *t)
{
    double a = fabs(v), big = 0;
    for (int i = 0; i < t->n; i++) big = fmax(big, fabs(t->v[i]));
    if (t->step == 0) snprintf(buf, 32, a >= 1e-3 && a < 1e5 ? "%g" : "%.0e", v);
    else if (v == 0 && (big >= 1e5 || t->step < 1e-4)) snprintf(buf, 32, "0");
    else if (big >= 1e5 || t->step < 1e-4) {
        int p = (int)(floor(log10(a)) - floor(log10(t->step) + 1e-9));
        snprintf(buf, 32, "%.*e", p < 0 ? 0 : p > 6 ? 6 : p, v);
    } else snprintf(buf, 32, "%.*f", t->step >= 1 ? 0 : (int)ceil(-log10(t->step) - 1e-9), v);
    char *e = strchr(buf, 'e'), mant[32];
    if (e) { /* "1e-05" -> "1e-5", "2.50e+06" -> "2.5e6" */
        int n = (int)(e - buf), ex = atoi(e + 1);
        memcpy(mant, buf, (size_t)n);
        if (memchr(mant, '.', (size_t)n))
            while (mant[n - 1] == '0') n--;
        if (mant[n - 1] == '.') n--;
        snprintf(buf, 32, "%.*se%d", n, mant, ex);
    }
    return npred_text_width(buf, 2);
}

/* ---- chart frame ---- */

enum { LEG_LINE, LEG_DOT, LEG_DASH, LEG_BOX };
typedef struct {
    npred_canvas c;
    npred_plot_axes a;
    ticks xt, yt;
    const char *title, *xlabel, *ylabel;
    struct {
        const char *name;
        uint32_t color;
        int style;
    } leg[16];
    int nleg;
} chart;

/* Lay out a chart around a plot area of aw x ah pixels (ranges and ticks already in
 * ch->a, ch->xt, ch->yt), draw the grid and clip to the plot area. */
static npred_status chart_begin(chart *ch, int aw, int ah)
{
    char buf[32];
    int maxw = 0, lastw = ch->xt.n ? fmt_tick(buf, ch->xt.v[ch->xt.n - 1], &ch->xt) : 0;
    for (int i = 0; i < ch->yt.n; i++) maxw = maxi(maxw, fmt_tick(buf, ch->yt.v[i], &ch->yt));
    int has_t = ch->title && *ch->title, has_x = ch->xlabel && *ch->xlabel, has_y = ch->ylabel && *ch->ylabel;
    int left = 16 + (has_y ? 34 : 0) + maxw + 12, top = 16 + (has_t ? 44 : 8);
    int w = left + aw + maxi(28, lastw / 2 + 14), h = top + ah + 40 + (has_x ? 34 : 0);
    npred_status st = npred_canvas_init(&ch->c, maxi(w, npred_text_width(ch->title, 3) + 32), h, C_BG);
    if (st) return st;
    ch->a.left = left, ch->a.top = top, ch->a.right = left + aw - 1, ch->a.bottom = top + ah - 1;
    for (int i = 0; i < ch->xt.n; i++) {
        int x = (int)lround(npred_plot_px(&ch->a, ch->xt.v[i]));
        npred_canvas_rect(&ch->c, x, top, x, ch->a.bottom, C_GRID, 1);
    }
    for (int i = 0; i < ch->yt.n; i++) {
        int y = (int)lround(npred_plot_py(&ch->a, ch->yt.v[i]));
        npred_canvas_rect(&ch->c, left, y, ch->a.right, y, C_GRID, 1);
    }
    npred_canvas_clip(&ch->c, left, top, ch->a.right, ch->a.bottom);
    return NPRED_OK;
}

static void legend_add(chart *ch, const char *name, uint32_t color, int style)
{
    if (!name || !*name || ch->nleg >= 16) return;
    ch->leg[ch->nleg].name = name, ch->leg[ch->nleg].color = color, ch->leg[ch->nleg++].style = style;
}

static void dashed(npred_canvas *c, double x0, double y0, double x1, double y1, double width, uint32_t color)
{
    double len = hypot(x1 - x0, y1 - y0), ux = (x1 - x0) / len, uy = (y1 - y0) / len;
    for (double s = 0; s < len; s += 12)
        npred_canvas_line(c, x0 + ux * s, y0 + uy * s, x0 + ux * fmin(s + 7, len), y0 + uy * fmin(s + 7, len), width,
                          color);
}

/* Legend in the plot-area corner that hides the fewest drawn pixels. */
static void legend_draw(chart *ch)
{
    npred_canvas *c = &ch->c;
    int tw = 0, best = 0, x0 = 0, y0 = 0;
    long best_n = -1;
    for (int i = 0; i < ch->nleg; i++) tw = maxi(tw, npred_text_width(ch->leg[i].name, 2));
    int bw = 12 + 40 + tw + 12, bh = 8 + 24 * ch->nleg + 4;
    for (int k = 0; k < 5 && ch->nleg; k++) {
        int kk = k < 4 ? k : best; /* the fifth pass places the best corner */
        x0 = kk & 1 ? ch->a.left + 10 : ch->a.right - 10 - bw, y0 = kk & 2 ? ch->a.bottom - 10 - bh : ch->a.top + 10;
        long n = 0;
        for (int y = maxi(y0, 0); k < 4 && y < y0 + bh && y < c->h; y++)
            for (int x = maxi(x0, 0); x < x0 + bw && x < c->w; x++) {
                const uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
                uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
                n += v != C_BG && v != C_GRID;
            }
        if (k < 4 && (best_n < 0 || n < best_n)) best = k, best_n = n;
    }
    if (!ch->nleg) return;
    npred_canvas_rect(c, x0, y0, x0 + bw - 1, y0 + bh - 1, C_BG, 1);
    npred_canvas_rect(c, x0, y0, x0 + bw - 1, y0 + bh - 1, 0xBBBBBB, 0);
    for (int i = 0; i < ch->nleg; i++) {
        int cy = y0 + 18 + 24 * i, sx = x0 + 12;
        uint32_t col = ch->leg[i].color;
        switch (ch->leg[i].style) {
        case LEG_LINE: npred_canvas_line(c, sx, cy, sx + 30, cy, 2.5, col); break;
        case LEG_DOT: npred_canvas_circle(c, sx + 15, cy, 4.5, col, 1, 1); break;
        case LEG_DASH: dashed(c, sx, cy, sx + 30, cy, 2, col); break;
        default:
            npred_canvas_rect(c, sx + 3, cy - 7, sx + 27, cy + 7, col, 1);
            npred_canvas_rect(c, sx + 3, cy - 7, sx + 27, cy + 7, 0x2B5D8A, 0);
        }
        npred_canvas_text(c, sx + 40, cy - 7, ch->leg[i].name, 2, C_TEXT, 0);
    }
}

/* Legend, frame, ticks, labels and title; write the PNG; free the canvas. */
static npred_status chart_end(chart *ch, const char *path, npred_plot_axes *axes)
{
    npred_canvas *c = &ch->c;
    npred_plot_axes *a = &ch->a;
    char buf[32];
    legend_draw(ch);
    npred_canvas_clip(c, 0, 0, c->w - 1, c->h - 1);
    npred_canvas_rect(c, a->left, a->top, a->right, a->bottom, C_FRAME, 0);
    int maxw = 0, stride = 1; /* label every stride-th x tick so that labels keep 16 pixels apart */
    for (int i = 0; i < ch->xt.n; i++) maxw = maxi(maxw, fmt_tick(buf, ch->xt.v[i], &ch->xt));
    if (ch->xt.n > 1)
        while (stride < ch->xt.n && stride * fabs(npred_plot_px(a, ch->xt.v[1]) - npred_plot_px(a, ch->xt.v[0])) < maxw + 16) stride++;
    for (int i = 0; i < ch->xt.n; i++) {
        int x = (int)lround(npred_plot_px(a, ch->xt.v[i]));
        npred_canvas_rect(c, x, a->bottom + 1, x, a->bottom + 5, C_FRAME, 1);
        if (i % stride == 0) npred_canvas_text(c, x - fmt_tick(buf, ch->xt.v[i], &ch->xt) / 2, a->bottom + 10, buf, 2, C_TEXT, 0);
    }
    for (int i = 0; i < ch->yt.n; i++) {
        int y = (int)lround(npred_plot_py(a, ch->yt.v[i]));
        npred_canvas_rect(c, a->left - 5, y, a->left - 1, y, C_FRAME, 1);
        npred_canvas_text(c, a->left - 10 - fmt_tick(buf, ch->yt.v[i], &ch->yt), y - 7, buf, 2, C_TEXT, 0);
    }
    int xc = (a->left + a->right) / 2, yc = (a->top + a->bottom) / 2;
    npred_canvas_text(c, xc - npred_text_width(ch->xlabel, 2) / 2, a->bottom + 40, ch->xlabel, 2, C_TEXT, 0);
    npred_canvas_text(c, 16, yc - npred_text_width(ch->ylabel, 2) / 2, ch->ylabel, 2, C_TEXT, 1);
    npred_canvas_text(c, c->w / 2 - npred_text_width(ch->title, 3) / 2, 16, ch->title, 3, C_TEXT, 0);
    npred_status st = npred_canvas_write_png(c, path);
    if (axes) *axes = *a;
    npred_canvas_free(c);
    return st;
}

/* ---- charts ---- */

static int ok_point(double x, double y, int logy) { return isfinite(x) && isfinite(y) && (!logy || y > 0); }

npred_status npred_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                              const npred_plot_series *series, int n_series, int logy, npred_plot_axes *axes)
{
    if (!path || (!series && n_series > 0) || n_series < 0)
        return npred_errorf(NPRED_ERR_ARG, "plot lines: NULL path or series");
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    int integer_x = 1, total = 0;
    for (int s = 0; s < n_series; s++) {
        const npred_plot_series *S = &series[s];
        if (S->n < 0 || (S->n > 0 && !S->y))
            return npred_errorf(NPRED_ERR_ARG, "%s: series %d has n = %d and %s y", path, s, S->n, S->y ? "a" : "no");
        for (int i = 0; i < S->n; i++) {
            double x = S->x ? S->x[i] : i, y = S->y[i];
            if (!ok_point(x, y, logy)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
            integer_x &= x == floor(x);
            total++;
        }
    }
    if (!total) return npred_errorf(NPRED_ERR_VALUE, "%s: no finite%s point to plot", path, logy ? " positive" : "");
    if (!isfinite(x1 - x0) || !isfinite(y1 - y0)) return npred_errorf(NPRED_ERR_VALUE, "%s: data range too large", path);
    chart ch = {.title = title, .xlabel = xlabel, .ylabel = ylabel};
    lin_ticks(&x0, &x1, 8, 1, integer_x, &ch.xt);
    if (logy) log_ticks(&y0, &y1, &ch.yt);
    else lin_ticks(&y0, &y1, 6, 1, 0, &ch.yt);
    ch.a = (npred_plot_axes){.xmin = x0, .xmax = x1, .ymin = y0, .ymax = y1, .logy = logy};
    npred_status st = chart_begin(&ch, 820, 460);
    if (st) return st;
    for (int s = 0; s < n_series; s++) {
        const npred_plot_series *S = &series[s];
        uint32_t col = S->color == NPRED_COLOR_AUTO ? npred_plot_palette(s) : S->color;
#define XAT(i) (S->x ? S->x[i] : (i))
        for (int i = 0; i < S->n; i++) {
            if (!ok_point(XAT(i), S->y[i], logy)) continue;
            double px = npred_plot_px(&ch.a, XAT(i)), py = npred_plot_py(&ch.a, S->y[i]);
            int prev = i > 0 && ok_point(XAT(i - 1), S->y[i - 1], logy);
            int next = i + 1 < S->n && ok_point(XAT(i + 1), S->y[i + 1], logy);
            if (next)
                npred_canvas_line(&ch.c, px, py, npred_plot_px(&ch.a, XAT(i + 1)), npred_plot_py(&ch.a, S->y[i + 1]),
                                  2.5, col);
            if (S->n <= 40 || (!prev && !next)) npred_canvas_circle(&ch.c, px, py, 3.5, col, 1, 1);
        }
#undef XAT
        legend_add(&ch, S->name, col, LEG_LINE);
    }
    return chart_end(&ch, path, axes);
}

npred_status npred_plot_histogram(const char *path, const char *title, const char *xlabel, const double *values,
                                  int n, int bins, double marker, const char *marker_label, npred_plot_axes *axes)
{
    if (!path || !values || n <= 0 || bins > 1000)
        return npred_errorf(NPRED_ERR_ARG, "plot histogram: NULL path/values, n = %d or bins = %d (expected n > 0, "
                            "bins <= 1000)", n, bins);
    double mn = INFINITY, mx = -INFINITY;
    int cnt = 0, maxc = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(values[i])) mn = fmin(mn, values[i]), mx = fmax(mx, values[i]), cnt++;
    if (!cnt) return npred_errorf(NPRED_ERR_VALUE, "%s: none of the %d values is finite", path, n);
    if (!isfinite(mx - mn)) return npred_errorf(NPRED_ERR_VALUE, "%s: data range too large", path);
    if (bins <= 0) bins = cnt < 25 ? 5 : cnt > 3600 ? 60 : (int)ceil(sqrt(cnt));
    if (mx == mn) mn -= 0.5, mx += 0.5;
    int *count = calloc((size_t)bins, sizeof *count);
    if (!count) return npred_errorf(NPRED_ERR_NOMEM, "%s: out of memory", path);
    double bw = (mx - mn) / bins;
    for (int i = 0; i < n; i++) {
        if (!isfinite(values[i])) continue;
        int b = (int)((values[i] - mn) / bw); /* like numpy: the maximum goes into the last bin */
        b = b < 0 ? 0 : b >= bins ? bins - 1 : b;
        maxc = maxi(maxc, ++count[b]);
    }
    chart ch = {.title = title, .xlabel = xlabel, .ylabel = "count"};
    double x0 = mn, x1 = mx, y0 = 0, y1 = maxc * 1.08;
    if (isfinite(marker)) x0 = fmin(x0, marker), x1 = fmax(x1, marker);
    lin_ticks(&x0, &x1, 8, 1, 0, &ch.xt);
    lin_ticks(&y0, &y1, 6, 1, 1, &ch.yt);
    ch.a = (npred_plot_axes){.xmin = x0, .xmax = x1, .ymin = y0, .ymax = y1};
    npred_status st = chart_begin(&ch, 760, 440);
    for (int b = 0; b < bins && !st; b++) {
        int xa = (int)lround(npred_plot_px(&ch.a, mn + b * bw)), xb = (int)lround(npred_plot_px(&ch.a, mn + (b + 1) * bw));
        int ya = (int)lround(npred_plot_py(&ch.a, count[b]));
        if (!count[b]) continue;
        npred_canvas_rect(&ch.c, xa, ya, xb, ch.a.bottom, 0x7BAFD4, 1);
        npred_canvas_rect(&ch.c, xa, ya, xb, ch.a.bottom, 0x2B5D8A, 0);
    }
    free(count);
    if (st) return st;
    char nlabel[64];
    snprintf(nlabel, sizeof nlabel, cnt < n ? "n = %d (%d not finite)" : "n = %d", cnt, n - cnt);
    legend_add(&ch, nlabel, 0x7BAFD4, LEG_BOX);
    if (isfinite(marker)) {
        double px = npred_plot_px(&ch.a, marker);
        dashed(&ch.c, px, ch.a.top, px, ch.a.bottom, 2.5, 0xD62728);
        legend_add(&ch, marker_label && *marker_label ? marker_label : "marker", 0xD62728, LEG_DASH);
    }
    return chart_end(&ch, path, axes);
}

npred_status npred_plot_scatter(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                const double *x, const double *y, int n, const npred_scatter_opts *opts,
                                npred_plot_axes *axes)
{
    npred_scatter_opts o = {0};
    if (opts) o = *opts;
    if (!path || !x || !y || n <= 0)
        return npred_errorf(NPRED_ERR_ARG, "plot scatter: NULL path/x/y or n = %d (expected > 0)", n);
    int two = o.x2 && o.y2, cnt = 0;
    if (o.fixed_range && !(o.range[1] > o.range[0] && o.range[3] > o.range[2]))
        return npred_errorf(NPRED_ERR_ARG, "%s: fixed range [%g, %g] x [%g, %g] is empty", path, o.range[0],
                            o.range[1], o.range[2], o.range[3]);
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s <= two; s++)
        for (int i = 0; i < n; i++) {
            double u = s ? o.x2[i] : x[i], v = s ? o.y2[i] : y[i];
            if (!ok_point(u, v, 0)) continue;
            x0 = fmin(x0, u), x1 = fmax(x1, u), y0 = fmin(y0, v), y1 = fmax(y1, v);
            cnt++;
        }
    if (!cnt) return npred_errorf(NPRED_ERR_VALUE, "%s: no point with finite coordinates", path);
    if (!isfinite(x1 - x0) || !isfinite(y1 - y0)) return npred_errorf(NPRED_ERR_VALUE, "%s: data range too large", path);
    if (o.fixed_range) x0 = o.range[0], x1 = o.range[1], y0 = o.range[2], y1 = o.range[3];
    chart ch = {.title = title, .xlabel = xlabel, .ylabel = ylabel};
    lin_ticks(&x0, &x1, 6, !o.fixed_range, 0, &ch.xt);
    lin_ticks(&y0, &y1, 6, !o.fixed_range, 0, &ch.yt);
    ch.a = (npred_plot_axes){.xmin = x0, .xmax = x1, .ymin = y0, .ymax = y1, .ydown = o.ydown};
    npred_status st = chart_begin(&ch, 600, 600);
    if (st) return st;
    npred_plot_axes *a = &ch.a;
    double lo = fmin(x0, y0), hi = fmax(x1, y1), r = n > 2000 ? 2 : 3.5;
    if (o.diagonal)
        npred_canvas_line(&ch.c, npred_plot_px(a, lo), npred_plot_py(a, lo), npred_plot_px(a, hi), npred_plot_py(a, hi),
                          1.5, 0xAAAAAA);
    for (int i = 0; two && o.connect && i < n; i++)
        if (ok_point(x[i], y[i], 0) && ok_point(o.x2[i], o.y2[i], 0))
            npred_canvas_line(&ch.c, npred_plot_px(a, x[i]), npred_plot_py(a, y[i]), npred_plot_px(a, o.x2[i]),
                              npred_plot_py(a, o.y2[i]), 1, 0x999999);
    double v0 = INFINITY, v1 = -INFINITY;
    for (int i = 0; o.values && i < n; i++)
        if (isfinite(o.values[i])) v0 = fmin(v0, o.values[i]), v1 = fmax(v1, o.values[i]);
    for (int s = 0; s <= two; s++)
        for (int i = 0; i < n; i++) {
            double u = s ? o.x2[i] : x[i], v = s ? o.y2[i] : y[i];
            uint32_t col = npred_plot_palette(s);
            if (!s && o.values)
                col = !isfinite(o.values[i]) ? 0x999999 : npred_plot_ramp(v1 > v0 ? (o.values[i] - v0) / (v1 - v0) : 0.5);
            if (ok_point(u, v, 0)) npred_canvas_circle(&ch.c, npred_plot_px(a, u), npred_plot_py(a, v), r, col, 1, 0.85);
        }
    legend_add(&ch, o.name ? o.name : two ? "set 1" : NULL, npred_plot_palette(0), LEG_DOT);
    if (two) legend_add(&ch, o.name2 ? o.name2 : "set 2", npred_plot_palette(1), LEG_DOT);
    return chart_end(&ch, path, axes);
}

npred_status npred_plot_filters(const char *path, const char *title, const float *weights, int n, int kh, int kw,
                                int cols, npred_plot_grid *grid)
{
    if (!path || !weights || n <= 0 || kh <= 0 || kw <= 0 || kh > 4096 || kw > 4096)
        return npred_errorf(NPRED_ERR_ARG, "plot filters: NULL path/weights or shape (%d, %d, %d), expected > 0", n,
                            kh, kw);
    int s = maxi(1, 72 / maxi(kh, kw));
    cols = cols <= 0 ? (int)ceil(sqrt((double)n)) : cols > n ? n : cols;
    npred_plot_grid g = {.pitch_x = kw * s + 10, .pitch_y = kh * s + 22, .cols = cols, .scale = s};
    const char *sub = "blue < 0 < red, each filter scaled to its own max |w|";
    int has_t = title && *title, gw = cols * g.pitch_x - 10, rows = (n + cols - 1) / cols;
    int w = maxi(gw, maxi(npred_text_width(title, 3), npred_text_width(sub, 2))) + 40;
    g.top = 16 + (has_t ? 40 : 0) + 34, g.left = (w - gw) / 2;
    if ((double)rows * g.pitch_y + g.top + 8 > MAX_SIDE || w > MAX_SIDE)
        return npred_errorf(NPRED_ERR_ARG, "%s: %d filters of %dx%d make too large a picture", path, n, kh, kw);
    npred_canvas c;
    npred_status st = npred_canvas_init(&c, w, g.top + rows * g.pitch_y + 8, C_BG);
    if (st) return st;
    npred_canvas_text(&c, w / 2 - npred_text_width(title, 3) / 2, 16, title, 3, C_TEXT, 0);
    npred_canvas_text(&c, w / 2 - npred_text_width(sub, 2) / 2, g.top - 30, sub, 2, 0x555555, 0);
    for (int k = 0; k < n; k++) {
        const float *f = weights + (size_t)k * kh * kw;
        double m = 0;
        for (int i = 0; i < kh * kw; i++)
            if (isfinite(f[i])) m = fmax(m, fabs(f[i]));
        int x0 = g.left + (k % cols) * g.pitch_x, y0 = g.top + (k / cols) * g.pitch_y;
        npred_canvas_rect(&c, x0 - 1, y0 - 1, x0 + kw * s, y0 + kh * s, 0x999999, 0);
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                double v = f[i * kw + j];
                uint32_t col = npred_plot_diverging(isnan(v) ? v : m > 0 ? v / m : 0);
                npred_canvas_rect(&c, x0 + j * s, y0 + i * s, x0 + j * s + s - 1, y0 + i * s + s - 1, col, 1);
            }
        char buf[16];
        snprintf(buf, sizeof buf, "%d", k);
        npred_canvas_text(&c, x0 + kw * s / 2 - npred_text_width(buf, 1) / 2, y0 + kh * s + 3, buf, 1, 0x555555, 0);
    }
    st = npred_canvas_write_png(&c, path);
    npred_canvas_free(&c);
    if (grid) *grid = g;
    return st;
}
