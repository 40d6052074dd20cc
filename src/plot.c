/* plot.c: see plot.h. */
#include "plot.h"

#include <plplot.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Colour map 0: background, ink, grid, then the process lines (a qualitative
 * palette that stays distinguishable on white). */
enum { COL_BG = 0, COL_INK = 1, COL_GRID = 2, COL_FIRST_LINE = 3 };
static const int PALETTE[][3] = {
    {255, 255, 255}, {0, 0, 0}, {205, 205, 205},
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
    {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};
#define NCOLORS ((int)(sizeof PALETTE / sizeof PALETTE[0]))
#define NLINE_COLORS (NCOLORS - COL_FIRST_LINE)
#define MAX_LEGEND 16

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *cp_plot_device(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot) return NULL;
    if (strcasecmp(dot, ".png") == 0) return "pngcairo";
    if (strcasecmp(dot, ".svg") == 0) return "svgcairo";
    return NULL;
}

double cp_plot_mem_unit(double max_bytes, const char **name)
{
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double div = 1;
    int i = 0;
    /* Switch unit once values pass 2 of the next one, so axes read 2..2000
     * rather than 0.001..0.9. */
    while (i < 4 && max_bytes >= 2 * div * 1024) { div *= 1024; i++; }
    *name = names[i];
    return div;
}

double cp_plot_time_unit(double span_s, const char **name)
{
    if (span_s >= 3 * 3600) { *name = "h"; return 3600; }
    if (span_s >= 180) { *name = "min"; return 60; }
    *name = "s";
    return 1;
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

/* PLplot prints non-fatal problems through the abort handler; keep the last. */
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

static double line_max(const cp_plot_line *l)
{
    double m = 0;
    for (size_t i = 0; i < l->n; i++)
        if (isfinite(l->y[i]) && l->y[i] > m) m = l->y[i];
    return m;
}

static int by_max_desc(const void *a, const void *b, void *ctx)
{
    const cp_plot_line *L = ctx;
    double ma = line_max(&L[*(const size_t *)a]), mb = line_max(&L[*(const size_t *)b]);
    return (ma < mb) - (ma > mb);
}

/* Insertion sort with a context (qsort_r is not C11); legends are short. */
static void sort_idx(size_t *idx, size_t n, const cp_plot_line *L)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && by_max_desc(&idx[j - 1], &idx[j], (void *)L) > 0; j--) {
            size_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
}

int cp_plot_memory(const cp_plot_spec *s, char *err, size_t errlen)
{
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
        seterr(err, errlen, "cannot write plot file '%s': %s", s->path, strerror(errno));
        return -1;
    }
    fclose(f);

    int W = s->width > 0 ? s->width : 1200, H = s->height > 0 ? s->height : 720;
    double fs = s->font_size > 0 ? s->font_size : 11;

    /* Ranges and units. */
    double xmax = 0, ymax = 0;
    size_t maxn = 0;
    for (size_t i = 0; i < s->nlines; i++) {
        const cp_plot_line *l = &s->lines[i];
        if (l->n > maxn) maxn = l->n;
        for (size_t k = 0; k < l->n; k++) {
            if (isfinite(l->x[k]) && l->x[k] > xmax) xmax = l->x[k];
            if (isfinite(l->y[k]) && l->y[k] > ymax) ymax = l->y[k];
        }
    }
    if (xmax <= 0) xmax = 1;
    if (ymax <= 0) ymax = 1024;
    const char *tu, *mu;
    double tdiv = cp_plot_time_unit(xmax, &tu);
    double mdiv = cp_plot_mem_unit(ymax, &mu);
    double X1 = xmax / tdiv, Y1 = ymax / mdiv * (s->nnotes ? 1.35 : 1.08);

    double *bx = malloc((maxn ? maxn : 1) * sizeof *bx);
    double *by = malloc((maxn ? maxn : 1) * sizeof *by);
    size_t *order = malloc((s->nlines ? s->nlines : 1) * sizeof *order);
    if (!bx || !by || !order) {
        free(bx); free(by); free(order);
        seterr(err, errlen, "out of memory");
        return -1;
    }

    int r[NCOLORS], g[NCOLORS], b[NCOLORS];
    for (int i = 0; i < NCOLORS; i++) { r[i] = PALETTE[i][0]; g[i] = PALETTE[i][1]; b[i] = PALETTE[i][2]; }
    plot_abort_msg[0] = '\0';
    plsabort(on_abort);
    plsdev(dev);
    plsfnam(s->path);
    plspage(90, 90, W, H, 0, 0);
    plscmap0(r, g, b, NCOLORS);
    plinit();
    pladv(0);
    /* Character height in mm from points; the viewport leaves the right side
     * for the legend. */
    plschr(fs * 0.3528, 1.0);
    const double vx0 = 0.085, vx1 = 0.76, vy0 = 0.11, vy1 = 0.91;
    plvpor(vx0, vx1, vy0, vy1);
    plwind(0, X1, 0, Y1);

    plcol0(COL_GRID);
    plwidth(0.6);
    plbox("g", 0, 0, "g", 0, 0);
    plcol0(COL_INK);
    plwidth(1.0);
    plbox("bcnst", 0, 0, "bcnstv", 0, 0);
    char xlab[64], ylab[96];
    snprintf(xlab, sizeof xlab, "time (%s)", tu);
    snprintf(ylab, sizeof ylab, "%s (%s)", s->metric ? s->metric : "memory", mu);
    pllab(xlab, ylab, "");
    if (s->title) {
        char *t = escape_text(s->title);
        if (t) plmtex("t", 1.5, 0.5, 0.5, t);
        free(t);
    }

    /* Process lines first, the total on top. */
    size_t nproc = 0;
    for (size_t pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < s->nlines; i++) {
            const cp_plot_line *l = &s->lines[i];
            if (!!l->emphasis != (pass == 1)) continue;
            for (size_t k = 0; k < l->n; k++) { bx[k] = l->x[k] / tdiv; by[k] = l->y[k] / mdiv; }
            plcol0(l->emphasis ? COL_INK : COL_FIRST_LINE + (int)(nproc % NLINE_COLORS));
            plwidth(l->emphasis ? 2.6 : 1.4);
            if (l->n == 1) plpoin(1, bx, by, 17);
            else if (l->n > 1) plline((PLINT)l->n, bx, by);
            if (!l->emphasis) nproc++;
        }
    }

    /* Notes: a dot on the curve and the text going up at 45 degrees on
     * screen (dx, dy are world units of equal physical length). */
    if (s->nnotes) {
        double pw = (vx1 - vx0) * W, ph = (vy1 - vy0) * H;
        double dx = X1 / pw, dy = Y1 / ph;
        plschr(0, 0.85);
        for (size_t i = 0; i < s->nnotes; i++) {
            const cp_plot_note *n = &s->notes[i];
            if (!isfinite(n->x) || !isfinite(n->y)) continue;
            double x = n->x / tdiv, y = n->y / mdiv;
            plcol0(COL_INK);
            plwidth(1.0);
            plpoin(1, &x, &y, 17);
            char *t = escape_text(n->text ? n->text : "");
            if (!t) continue;
            /* Start the text a little up and right of the dot. */
            plcol0(COL_FIRST_LINE + 3); /* red: notes stand out from the lines */
            plptex(x + 6 * dx, y + 6 * dy, dx, dy, 0.0, t);
            free(t);
        }
        plschr(0, 1.0);
    }

    /* Legend: the total, then the largest processes; the rest summarised. */
    size_t nl = 0, ntot = 0;
    for (size_t i = 0; i < s->nlines; i++) if (s->lines[i].emphasis) order[nl++] = i;
    ntot = nl;
    nproc = 0;
    size_t *pidx = order + nl;
    for (size_t i = 0; i < s->nlines; i++) if (!s->lines[i].emphasis) pidx[nproc++] = i;
    /* Colours follow drawing order, so remember each line's colour before sorting. */
    int colour_of[512];
    size_t cmax = s->nlines < 512 ? s->nlines : 512;
    for (size_t k = 0, c = 0; k < cmax; k++)
        colour_of[k] = s->lines[k].emphasis ? COL_INK : COL_FIRST_LINE + (int)(c++ % NLINE_COLORS);
    sort_idx(pidx, nproc, s->lines);
    size_t shown = nproc;
    int more = 0;
    if (ntot + shown > MAX_LEGEND) { shown = MAX_LEGEND - 1 - ntot; more = 1; }
    PLINT nleg = (PLINT)(ntot + shown + (size_t)more);
    PLINT opts[MAX_LEGEND], tcol[MAX_LEGEND], lcol[MAX_LEGEND], lsty[MAX_LEGEND];
    PLFLT lw[MAX_LEGEND];
    const char *texts[MAX_LEGEND];
    char *owned[MAX_LEGEND] = {0};
    char morebuf[48];
    for (PLINT k = 0; k < nleg; k++) {
        opts[k] = PL_LEGEND_LINE;
        tcol[k] = COL_INK;
        lsty[k] = 1;
        if ((size_t)k < ntot + shown) {
            size_t li = order[k];
            lcol[k] = li < cmax ? colour_of[li] : COL_FIRST_LINE;
            lw[k] = s->lines[li].emphasis ? 2.6 : 1.4;
            owned[k] = escape_text(s->lines[li].label ? s->lines[li].label : "?");
            texts[k] = owned[k] ? owned[k] : "?";
        } else {
            snprintf(morebuf, sizeof morebuf, "+ %zu more", nproc - shown);
            opts[k] = PL_LEGEND_NONE;
            lcol[k] = COL_INK;
            lw[k] = 1;
            texts[k] = morebuf;
        }
    }
    if (nleg > 0) {
        PLFLT lwid, lhei;
        pllegend(&lwid, &lhei, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
                 PL_POSITION_RIGHT | PL_POSITION_TOP | PL_POSITION_OUTSIDE,
                 0.015, -0.115, 0.05, COL_BG, COL_INK, 1, 0, 0, nleg, opts,
                 0.8, 0.85, 2.0, 0.0, tcol, texts,
                 NULL, NULL, NULL, NULL, lcol, lsty, lw, NULL, NULL, NULL, NULL);
    }
    for (PLINT k = 0; k < nleg; k++) free(owned[k]);

    plend();
    plsabort(NULL);
    free(bx);
    free(by);
    free(order);
    if (plot_abort_msg[0]) {
        seterr(err, errlen, "PLplot: %s", plot_abort_msg);
        return -1;
    }
    return 0;
}
