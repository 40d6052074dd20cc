/* plot.c: drawing a laid-out plot with PLplot (see plot.h). Everything but
 * the curves is drawn in a page-wide pixel frame, so it lands exactly where
 * cp_plot_compute_layout() put it. */
#include "plot.h"

#include <plplot.h>

#define _USE_MATH_DEFINES
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PX_PER_MM (90.0 / 25.4)

static const int PALETTE[][3] = {
    {255, 255, 255}, {0, 0, 0}, {222, 222, 222}, {185, 185, 185}, {40, 40, 40}, {120, 120, 120},
    /* named lines: distinct on white */
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75},
    {227, 119, 194}, {188, 189, 34}, {23, 190, 207}, {57, 59, 121}, {99, 121, 57}, {132, 60, 57},
};
#define NCOLOURS ((int)(sizeof PALETTE / sizeof PALETTE[0]))

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int have_device(const char *dev)
{
    int n = 64;
    const char *menu_v[64], *names_v[64];
    const char **menu = menu_v, **names = names_v; /* plgDevs fills caller arrays */
    plgDevs(&menu, &names, &n);
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], dev) == 0) return 1;
    return 0;
}

/* PLplot reports non-fatal problems through the abort handler; keep the last. */
static char plot_abort_msg[256];
static void on_abort(PLCHAR_VECTOR msg)
{
    snprintf(plot_abort_msg, sizeof plot_abort_msg, "%s", msg ? msg : "");
}

/* PLplot text treats '#' as an escape: double it. Caller frees. */
static char *escape_text(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++) n += *p == '#' ? 2 : 1;
    char *o = malloc(n + 1), *q = o;
    if (!o) return NULL;
    for (const char *p = s; *p; p++) {
        *q++ = *p;
        if (*p == '#') *q++ = '#';
    }
    *q = '\0';
    return o;
}

/* ---- the page frame: pixels, y down as in the layout ------------------- */

static double g_W, g_H, g_em;

static void page_frame(void)
{
    plvpor(0, 1, 0, 1);
    plwind(0, g_W, 0, g_H);
}

static void text_size(double scale) { plschr(g_em / PX_PER_MM, scale); }

/* Text whose reference point (just: 0 left, 0.5 centre, 1 right; half the
 * capital height above the baseline) is at pixel (x, y). */
static void text_at(double x, double y, double just, const char *s, int vertical)
{
    char *t = escape_text(s);
    if (!t) return;
    plptex(x, g_H - y, vertical ? 0 : 1, vertical ? 1 : 0, just, t);
    free(t);
}

static void rect_fill(cp_rect r, int col)
{
    PLFLT xs[4] = {r.x0, r.x1, r.x1, r.x0}, ys[4] = {g_H - r.y0, g_H - r.y0, g_H - r.y1, g_H - r.y1};
    plcol0(col);
    plfill(4, xs, ys);
}

static void rect_line(cp_rect r, int col, double width)
{
    PLFLT xs[5] = {r.x0, r.x1, r.x1, r.x0, r.x0};
    PLFLT ys[5] = {g_H - r.y0, g_H - r.y0, g_H - r.y1, g_H - r.y1, g_H - r.y0};
    plcol0(col);
    plwidth(width);
    plline(5, xs, ys);
}

static void seg(double x0, double y0, double x1, double y1, int col, double width)
{
    PLFLT xs[2] = {x0, x1}, ys[2] = {g_H - y0, g_H - y1};
    plcol0(col);
    plwidth(width);
    plline(2, xs, ys);
}

/* ---- panels ------------------------------------------------------------ */

static void fmt_tick(char *buf, size_t n, double v, double step)
{
    snprintf(buf, n, "%.*f", cp_plot_tick_decimals(step), v);
}

/* A filled dot of radius rad pixels. */
static void dot(double x, double y, double rad, int col)
{
    PLFLT xs[12], ys[12];
    for (int i = 0; i < 12; i++) {
        xs[i] = x + rad * cos(i * M_PI / 6);
        ys[i] = g_H - y + rad * sin(i * M_PI / 6);
    }
    plcol0(col);
    plfill(12, xs, ys);
}

/* Grid, frame, ticks and tick labels of a panel with x from 0 to tx (data
 * units, shown divided by tdiv) and y from 0 to ymax. */
static void panel_frame(cp_rect r, const cp_plot_axis *tx, const cp_plot_axis *ty, int xlabels)
{
    double xspan = tx->max / tx->div, yspan = ty->max / ty->div;
    double tick = 0.35 * g_em;
    text_size(0.9);
    for (double v = 0; v <= xspan * (1 + 1e-9); v += tx->step) {
        double x = r.x0 + v / xspan * (r.x1 - r.x0);
        if (v > 0 && x < r.x1 - 1) seg(x, r.y0, x, r.y1, CP_PLOT_COL_GRID, 0.6);
        seg(x, r.y1, x, r.y1 - tick, CP_PLOT_COL_INK, 0.8);
        seg(x, r.y0, x, r.y0 + tick, CP_PLOT_COL_INK, 0.8);
        if (xlabels) {
            char buf[32];
            fmt_tick(buf, sizeof buf, v, tx->step);
            plcol0(CP_PLOT_COL_INK);
            text_at(x, r.y1 + 0.5 * g_em + 0.45 * g_em, 0.5, buf, 0);
        }
    }
    for (double v = 0; v <= yspan * (1 + 1e-9); v += ty->step) {
        double y = r.y1 - v / yspan * (r.y1 - r.y0);
        if (v > 0 && y > r.y0 + 1) seg(r.x0, y, r.x1, y, CP_PLOT_COL_GRID, 0.6);
        seg(r.x0, y, r.x0 + tick, y, CP_PLOT_COL_INK, 0.8);
        seg(r.x1, y, r.x1 - tick, y, CP_PLOT_COL_INK, 0.8);
        char buf[32];
        fmt_tick(buf, sizeof buf, v, ty->step);
        plcol0(CP_PLOT_COL_INK);
        text_at(r.x0 - 0.5 * g_em, y, 1.0, buf, 0);
    }
    rect_line(r, CP_PLOT_COL_INK, 1.0);
}

/* A series in a panel (world: 0..xmax, 0..ymax), split at NaN gaps. */
static void series_line(cp_rect r, double xmax, double ymax, const double *x, const double *y,
                        size_t n, int col, double width, double *bx, double *by)
{
    plvpor(r.x0 / g_W, r.x1 / g_W, 1 - r.y1 / g_H, 1 - r.y0 / g_H);
    plwind(0, xmax, 0, ymax);
    plcol0(col);
    plwidth(width);
    size_t run = 0;
    for (size_t k = 0; k <= n; k++) {
        int ok = k < n && isfinite(x[k]) && isfinite(y[k]);
        if (ok) { bx[run] = x[k]; by[run] = fmin(y[k], ymax); run++; }
        if (!ok || k == n) {
            if (run == 1) plpoin(1, bx, by, 17);
            else if (run > 1) plline((PLINT)run, bx, by);
            run = 0;
        }
    }
    page_frame();
}

static void draw_panel(const cp_plot_spec *s, const cp_plot_layout *l, int cpu, double *bx, double *by)
{
    cp_rect r = cpu ? l->cpu : l->mem;
    const cp_plot_axis *ya = cpu ? &l->cpu_axis : &l->memory;
    panel_frame(r, &l->time, ya, cpu || !s->include_cpu);
    /* Unnamed lines first, then named ones, the total on top. */
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < s->nseries; i++) {
            const cp_plot_series *se = &s->series[i];
            const double *y = cpu ? se->cpu : se->mem;
            int col = l->colour[i];
            int p = se->total ? 2 : col == CP_PLOT_COL_UNNAMED ? 0 : 1;
            if (p != pass || !y) continue;
            series_line(r, l->time.max, ya->max, se->x, y, se->n, col, se->total ? 2.4 : p ? 1.3 : 0.9,
                        bx, by);
        }
    }
    char lab[96];
    if (cpu) snprintf(lab, sizeof lab, "CPU (%% of a core)");
    else snprintf(lab, sizeof lab, "%s (%s)", s->mem_label ? s->mem_label : "memory", l->memory.unit);
    text_size(1.0);
    plcol0(CP_PLOT_COL_INK);
    text_at(1.45 * g_em, (r.y0 + r.y1) / 2, 0.5, lab, 1);
}

static void draw_legend(const cp_plot_spec *s, const cp_plot_layout *l)
{
    if (l->legend_where == CP_LEGEND_NONE || !l->legend_entries) return;
    cp_rect b = l->legend;
    rect_fill(b, CP_PLOT_COL_BG);
    rect_line(b, CP_PLOT_COL_LEADER, 0.6);
    double em = g_em * 0.9;
    double colw = (b.x1 - b.x0 - 1.2 * em - (double)(l->legend_cols - 1) * 1.2 * em) / (double)l->legend_cols;
    text_size(0.9);
    size_t k = 0;
    for (size_t pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < s->nseries; i++) {
            const cp_plot_series *se = &s->series[i];
            if (!se->label || l->colour[i] == CP_PLOT_COL_UNNAMED || !!se->total != (pass == 0)) continue;
            size_t row = k % l->legend_rows, col = k / l->legend_rows;
            double x = b.x0 + 0.6 * em + (double)col * (colw + 1.2 * em);
            double y = b.y0 + 0.4 * em + ((double)row + 0.5) * 1.4 * em;
            seg(x, y, x + 2.4 * em, y, l->colour[i], se->total ? 2.4 : 1.6);
            plcol0(CP_PLOT_COL_INK);
            text_at(x + 2.9 * em, y, 0, se->label, 0);
            k++;
        }
    }
    if (l->legend_more) {
        size_t row = k % l->legend_rows, col = k / l->legend_rows;
        double x = b.x0 + 0.6 * em + (double)col * (colw + 1.2 * em);
        double y = b.y0 + 0.4 * em + ((double)row + 0.5) * 1.4 * em;
        char buf[48];
        snprintf(buf, sizeof buf, "+%zu more", l->legend_more);
        seg(x, y, x + 2.4 * em, y, CP_PLOT_COL_UNNAMED, 1.0);
        plcol0(CP_PLOT_COL_INK);
        text_at(x + 2.9 * em, y, 0, buf, 0);
    }
}

static void draw_notes(const cp_plot_spec *s, const cp_plot_layout *l)
{
    text_size(0.85);
    for (size_t i = 0; i < l->nlabels; i++) {
        const cp_plot_label *lb = &l->labels[i];
        if (lb->placed && lb->leader) {
            double cx = fmin(fmax(lb->ax, lb->box.x0), lb->box.x1);
            double cy = fmin(fmax(lb->ay, lb->box.y0), lb->box.y1);
            seg(lb->ax, lb->ay, cx, cy, CP_PLOT_COL_LEADER, 0.7);
        }
    }
    for (size_t i = 0; i < l->nlabels; i++) {
        const cp_plot_label *lb = &l->labels[i];
        dot(lb->ax, lb->ay, 0.28 * g_em, CP_PLOT_COL_INK);
        if (!lb->placed) continue;
        rect_fill(lb->box, CP_PLOT_COL_BG);
        rect_line(lb->box, CP_PLOT_COL_GRID, 0.6);
        plcol0(CP_PLOT_COL_NOTE);
        text_at(lb->box.x0 + 0.35 * g_em * 0.85, (lb->box.y0 + lb->box.y1) / 2, 0,
                s->notes[i].text ? s->notes[i].text : "", 0);
    }
    if (l->unplaced) {
        char buf[64];
        snprintf(buf, sizeof buf, "%zu notes not labelled", l->unplaced);
        plcol0(CP_PLOT_COL_LEADER);
        text_at(l->unplaced_box.x1, (l->unplaced_box.y0 + l->unplaced_box.y1) / 2, 1.0, buf, 0);
    }
}

int cp_plot_draw(const cp_plot_spec *s, const cp_plot_layout *l, char *err, size_t errlen,
                 int *errnum)
{
    if (errnum) *errnum = 0;
    const char *dev = cp_plot_device(s->path);
    if (!dev) {
        seterr(err, errlen, "plot path '%s' must end in .png or .svg", s->path ? s->path : "(null)");
        return -1;
    }
    if (!have_device(dev)) {
        seterr(err, errlen, "PLplot has no '%s' driver (install plplot-driver-cairo)", dev);
        return -1;
    }
    /* PLplot exit()s when it cannot open the file: find out first. */
    FILE *f = fopen(s->path, "ab");
    if (!f) {
        if (errnum) *errnum = errno;
        seterr(err, errlen, "cannot write plot file '%s': %s", s->path, strerror(errno));
        return -1;
    }
    fclose(f);
    size_t maxn = 1;
    for (size_t i = 0; i < s->nseries; i++) if (s->series[i].n > maxn) maxn = s->series[i].n;
    double *bx = malloc(maxn * sizeof *bx), *by = malloc(maxn * sizeof *by);
    if (!bx || !by) {
        free(bx);
        free(by);
        seterr(err, errlen, "out of memory");
        return -1;
    }
    g_W = l->width;
    g_H = l->height;
    g_em = l->em;
    int r[NCOLOURS], g[NCOLOURS], b[NCOLOURS];
    for (int i = 0; i < NCOLOURS; i++) { r[i] = PALETTE[i][0]; g[i] = PALETTE[i][1]; b[i] = PALETTE[i][2]; }
    plot_abort_msg[0] = '\0';
    plsabort(on_abort);
    /* With an error code and message to set, PLplot reports a problem
     * there instead of printing it on stderr. */
    PLINT plerr = 0;
    char plmsg[320] = "";
    plsError(&plerr, plmsg);
    plsdev(dev);
    plsfnam(s->path);
    plspage(90, 90, l->width, l->height, 0, 0);
    plscmap0(r, g, b, NCOLOURS);
    plinit();
    pladv(0);
    page_frame();

    if (s->title) {
        text_size(1.15);
        plcol0(CP_PLOT_COL_INK);
        text_at((l->title.x0 + l->title.x1) / 2, (l->title.y0 + l->title.y1) / 2, 0.5, s->title, 0);
    }
    draw_panel(s, l, 0, bx, by);
    if (s->include_cpu) draw_panel(s, l, 1, bx, by);
    cp_rect bottom = s->include_cpu ? l->cpu : l->mem;
    char xlab[48];
    snprintf(xlab, sizeof xlab, "time (%s)", l->time.unit);
    text_size(1.0);
    plcol0(CP_PLOT_COL_INK);
    text_at((bottom.x0 + bottom.x1) / 2, bottom.y1 + 0.5 * g_em + 1.5 * 0.9 * g_em + 0.75 * g_em, 0.5, xlab, 0);
    draw_legend(s, l);
    draw_notes(s, l);

    plend();
    plsabort(NULL);
    if (plerr && !plot_abort_msg[0]) snprintf(plot_abort_msg, sizeof plot_abort_msg, "%s", plmsg);
    free(bx);
    free(by);
    if (plot_abort_msg[0]) {
        seterr(err, errlen, "PLplot: %s", plot_abort_msg);
        return -1;
    }
    return 0;
}
