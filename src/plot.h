/* plot.h: memory and CPU over time, drawn with PLplot's cairo drivers (PNG
 * or SVG, by the file extension), in the shape psrecord users know: memory
 * on top, CPU (percent of one core) below on the same time axis, the total
 * as a thick black line, one line per process, notes as labels on the total
 * curve. No Lua here.
 *
 * Two steps. cp_plot_compute_layout() is pure geometry (no PLplot): where the
 * panels, the legend and every note label go, in image pixels (origin at
 * the top left, y down), with text widths estimated from the font size.
 * The legend goes where the curves leave room inside the memory panel, or
 * below the panels; note labels never overlap each other, the legend or the
 * total curve and never leave the panel (placed, then nudged, with a leader
 * line when they end up away from their point; a note with no room left is
 * drawn as a dot only and counted). cp_plot_draw() draws a layout.
 *
 * PLplot keeps global state, so one process draws one plot at a time; the
 * drawing is not reentrant. Every failure PLplot would turn into exit()
 * (unwritable file, missing driver) is checked first and returned. */
#ifndef CP_PLOT_H
#define CP_PLOT_H

#include <stddef.h>

typedef struct cp_rect { double x0, y0, x1, y1; } cp_rect; /* pixels, y down */

typedef struct cp_plot_series {
    const char *label;   /* legend text; NULL: unnamed (grey, one of "+k more") */
    const double *x;     /* seconds since the start */
    const double *mem;   /* bytes; NaN is a gap */
    const double *cpu;   /* percent of one core, or NULL */
    size_t n;
    int total;           /* the total: thick, black, first in the legend */
} cp_plot_series;

typedef struct cp_plot_note {
    double x;            /* seconds: labels the total curve at that time */
    const char *text;
} cp_plot_note;

typedef struct cp_plot_spec {
    const char *path;      /* output file: *.png or *.svg (draw only) */
    const char *title;     /* may be NULL */
    const char *mem_label; /* what memory is, e.g. "PSS": axis "PSS (MiB)" */
    double font_size;      /* points; <= 0: 11 */
    int width, height;     /* pixels; <= 0: 1200 x 720 */
    int include_cpu;       /* the CPU panel */
    const cp_plot_series *series;
    size_t nseries;
    const cp_plot_note *notes;
    size_t nnotes;
} cp_plot_spec;

enum { CP_LEGEND_NONE, CP_LEGEND_TOP_LEFT, CP_LEGEND_TOP_RIGHT, CP_LEGEND_TOP_CENTER,
       CP_LEGEND_BELOW };

/* Colour map 0 of a plot: entries before CP_PLOT_COL_LINE are fixed. */
enum { CP_PLOT_COL_BG, CP_PLOT_COL_INK, CP_PLOT_COL_GRID, CP_PLOT_COL_UNNAMED,
       CP_PLOT_COL_NOTE, CP_PLOT_COL_LEADER, CP_PLOT_COL_LINE };
#define CP_PLOT_LINE_COLOURS 12 /* distinct colours for named lines */

typedef struct cp_plot_axis {
    double max;          /* top (or right) end in data units (bytes, s, %) */
    double step;         /* tick step in display units */
    double div;          /* display unit = data / div */
    const char *unit;    /* "MiB", "min", "%" */
} cp_plot_axis;

typedef struct cp_plot_label {
    cp_rect box;         /* the label's box (text plus padding) */
    double ax, ay;       /* the point on the curve it belongs to */
    int placed;          /* 0: no room, drawn as a dot only */
    int leader;          /* a line joins the point and the box */
} cp_plot_label;

typedef struct cp_plot_layout {
    int width, height;
    double em;              /* text size in pixels */
    cp_rect title;
    cp_rect mem, cpu;       /* the panels (cpu is empty without one) */
    cp_plot_axis time, memory, cpu_axis;
    double headroom;        /* memory axis top / peak */
    int legend_where;       /* CP_LEGEND_* */
    cp_rect legend;
    size_t legend_rows, legend_cols, legend_entries;
    size_t legend_more;     /* unnamed processes: the "+k more" entry */
    int *colour;            /* per series: its cmap0 index */
    cp_plot_label *labels;  /* per note, in the order given */
    size_t nlabels, unplaced;
    cp_rect unplaced_box;   /* "k notes not labelled", when unplaced > 0 */
} cp_plot_layout;

/* Compute the layout of s into l. Returns 0, -1 with a message (out of
 * memory), or -2 with one (the image is too small for its text). Free it
 * with cp_plot_layout_free. */
int  cp_plot_compute_layout(const cp_plot_spec *s, cp_plot_layout *l, char *err, size_t errlen);
void cp_plot_layout_free(cp_plot_layout *l);

/* Estimated width in pixels of UTF-8 text at text size em pixels (the
 * cairo drivers' sans font; slightly generous). */
double cp_plot_text_width(const char *text, double em);
/* A tick step of 1, 2, 2.5 or 5 times a power of ten giving about n ticks
 * over range. */
double cp_plot_nice_step(double range, int n);
/* Decimals the labels of ticks step apart need (0.25 -> 2). */
int cp_plot_tick_decimals(double step);
/* Units: the divisor and name for values up to max_bytes ("B", "KiB",
 * "MiB", "GiB", "TiB"), and for a span in seconds ("s", "min", "h"). */
double cp_plot_mem_unit(double max_bytes, const char **name);
double cp_plot_time_unit(double span_s, const char **name);

/* The PLplot device for path by extension ("pngcairo", "svgcairo"), or NULL. */
const char *cp_plot_device(const char *path);

/* Draw s with layout l into s->path. Returns 0, or -1 with a message in
 * err and *errnum set to the errno of a file that cannot be written (0 for
 * other failures). */
int cp_plot_draw(const cp_plot_spec *s, const cp_plot_layout *l, char *err, size_t errlen,
                 int *errnum);

#endif
