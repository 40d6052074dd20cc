/* plot.h: memory-over-time plots drawn with PLplot's cairo drivers (PNG or
 * SVG, chosen by the file extension). No Lua here.
 *
 * PLplot keeps global state, so one process draws one plot at a time; these
 * functions are not reentrant. Every failure PLplot would turn into exit()
 * (unwritable file, missing driver) is checked first and returned as an
 * error message instead. */
#ifndef CP_PLOT_H
#define CP_PLOT_H

#include <stddef.h>

typedef struct cp_plot_line {
    const char *label;   /* legend text, e.g. "lua5.4 (1234)" */
    const double *x;     /* seconds since the start */
    const double *y;     /* bytes */
    size_t n;
    int emphasis;        /* the total: drawn thick, in black, legend first */
} cp_plot_line;

typedef struct cp_plot_note {
    double x, y;         /* seconds, bytes: the point on the curve it labels */
    const char *text;
} cp_plot_note;

typedef struct cp_plot_spec {
    const char *path;    /* output file: *.png or *.svg */
    const char *title;   /* may be NULL */
    const char *metric;  /* what y is, e.g. "RSS"; axis reads "RSS (MiB)" */
    double font_size;    /* text height in points; <= 0: 11 */
    int width, height;   /* pixels (PNG) or points (SVG); <= 0: 1200 x 720 */
    const cp_plot_line *lines;
    size_t nlines;
    const cp_plot_note *notes;
    size_t nnotes;
} cp_plot_spec;

/* The PLplot device for path by extension ("pngcairo", "svgcairo"), or NULL. */
const char *cp_plot_device(const char *path);

/* Pick a readable unit for values up to max_bytes: returns the divisor and
 * sets *name ("B", "KiB", "MiB", "GiB", "TiB"). */
double cp_plot_mem_unit(double max_bytes, const char **name);
/* Pick the time unit for a span in seconds: divisor 1 ("s"), 60 ("min") or
 * 3600 ("h"). */
double cp_plot_time_unit(double span_s, const char **name);

/* Draw the plot into s->path. Returns 0, or -1 with a message in err. */
int cp_plot_memory(const cp_plot_spec *s, char *err, size_t errlen);

#endif
