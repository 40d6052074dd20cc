/* plot_layout.c: the geometry of a plot (see plot.h); no PLplot here. */
#include "plot.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Text sizes relative to the base size (em). */
#define TITLE_SCALE 1.15
#define TICK_SCALE 0.9
#define LEGEND_SCALE 0.9
#define NOTE_SCALE 0.85
#define PX_PER_PT 1.25 /* the drivers run at 90 dpi */


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

double cp_plot_nice_step(double range, int n)
{
    if (!(range > 0) || n < 1) return 1;
    double raw = range / n;
    double p = pow(10, floor(log10(raw)));
    double m = raw / p;
    double f = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
    return f * p;
}

/* Advance widths of the sans font (DejaVu Sans) in em, by character class. */
static double char_em(unsigned char c)
{
    if (c == ' ') return 0.32;
    if (strchr("il.,:;'|!", c)) return 0.28;
    if (strchr("fjtr()[]-", c)) return 0.40;
    if (c == 'm' || c == 'w') return 0.95;
    if (c == 'M' || c == 'W') return 0.99;
    if (c >= '0' && c <= '9') return 0.64;
    if (c >= 'a' && c <= 'z') return 0.61;
    if (c >= 'A' && c <= 'Z') return 0.74;
    return 0.70;
}

double cp_plot_text_width(const char *text, double em)
{
    double w = 0;
    for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++) {
        if (*p >= 0x80) {
            if ((*p & 0xC0) == 0x80) continue; /* continuation byte */
            w += 0.9;                          /* a non-ASCII character */
        } else {
            w += char_em(*p);
        }
    }
    return w * em * 1.04;
}

/* ---- the curves as pixel-column envelopes ----------------------------- */

typedef struct {
    double *top, *bot; /* per column: highest and lowest pixel a curve covers */
    int w;
} envelope;

static int env_new(envelope *e, int w)
{
    e->w = w;
    e->top = malloc((size_t)w * sizeof *e->top);
    e->bot = malloc((size_t)w * sizeof *e->bot);
    if (!e->top || !e->bot) return -1;
    for (int i = 0; i < w; i++) { e->top[i] = INFINITY; e->bot[i] = -INFINITY; }
    return 0;
}

static void env_free(envelope *e)
{
    free(e->top);
    free(e->bot);
    e->top = e->bot = NULL;
}

static void env_cover(envelope *e, int c, double ya, double yb, double halfw)
{
    if (c < 0 || c >= e->w) return;
    double lo = fmin(ya, yb) - halfw, hi = fmax(ya, yb) + halfw;
    if (lo < e->top[c]) e->top[c] = lo;
    if (hi > e->bot[c]) e->bot[c] = hi;
}

/* Pixel position of a data point in a panel. */
typedef struct { cp_rect r; double xmax, ymax; } mapping;

static double map_x(const mapping *m, double x) { return m->r.x0 + x / m->xmax * (m->r.x1 - m->r.x0); }
static double map_y(const mapping *m, double y) { return m->r.y1 - y / m->ymax * (m->r.y1 - m->r.y0); }

static void env_add(envelope *e, const mapping *m, const double *x, const double *y, size_t n, double halfw)
{
    for (size_t k = 0; k < n; k++) {
        if (!isfinite(x[k]) || !isfinite(y[k])) continue;
        double xa = map_x(m, x[k]), ya = map_y(m, y[k]);
        if (k + 1 < n && isfinite(x[k + 1]) && isfinite(y[k + 1])) {
            double xb = map_x(m, x[k + 1]), yb = map_y(m, y[k + 1]);
            int c0 = (int)floor(fmin(xa, xb) - halfw), c1 = (int)floor(fmax(xa, xb) + halfw);
            for (int c = c0; c <= c1; c++) {
                /* The segment's y over this column (clamped to the segment). */
                double u0 = xb != xa ? ((double)c - xa) / (xb - xa) : 0;
                double u1 = xb != xa ? ((double)c + 1 - xa) / (xb - xa) : 1;
                u0 = fmin(fmax(u0, 0), 1);
                u1 = fmin(fmax(u1, 0), 1);
                env_cover(e, c, ya + (yb - ya) * u0, ya + (yb - ya) * u1, halfw);
            }
        } else {
            for (int c = (int)floor(xa - halfw - 2); c <= (int)floor(xa + halfw + 2); c++)
                env_cover(e, c, ya - 2, ya + 2, halfw); /* a lone point: its dot */
        }
    }
}

/* Does the rectangle touch any curve of the envelope? */
static int env_hits(const envelope *e, cp_rect r)
{
    int c0 = (int)floor(r.x0), c1 = (int)floor(r.x1);
    for (int c = c0 < 0 ? 0 : c0; c <= c1 && c < e->w; c++)
        if (e->top[c] <= r.y1 && e->bot[c] >= r.y0) return 1;
    return 0;
}

/* Highest pixel (smallest y) the curves reach over [x0, x1]; +inf if none. */
static double env_top(const envelope *e, double x0, double x1)
{
    double t = INFINITY;
    for (int c = (int)floor(x0) < 0 ? 0 : (int)floor(x0); c <= (int)floor(x1) && c < e->w; c++)
        if (e->top[c] < t) t = e->top[c];
    return t;
}

static double env_bottom(const envelope *e, double x0, double x1)
{
    double b = -INFINITY;
    for (int c = (int)floor(x0) < 0 ? 0 : (int)floor(x0); c <= (int)floor(x1) && c < e->w; c++)
        if (e->bot[c] > b) b = e->bot[c];
    return b;
}

static int overlap(cp_rect a, cp_rect b, double m)
{
    return a.x0 < b.x1 + m && b.x0 < a.x1 + m && a.y0 < b.y1 + m && b.y0 < a.y1 + m;
}

static int inside(cp_rect in, cp_rect out, double m)
{
    return in.x0 >= out.x0 + m && in.x1 <= out.x1 - m && in.y0 >= out.y0 + m && in.y1 <= out.y1 - m;
}

/* Does the segment (ax, ay)-(bx, by) cross r? Sampled: leaders are short. */
static int segment_hits(double ax, double ay, double bx, double by, cp_rect r)
{
    for (int i = 0; i <= 16; i++) {
        double u = i / 16.0, x = ax + (bx - ax) * u, y = ay + (by - ay) * u;
        if (x > r.x0 && x < r.x1 && y > r.y0 && y < r.y1) return 1;
    }
    return 0;
}

/* ---- axes ------------------------------------------------------------- */

/* Decimals a tick step needs: 0.25 -> 2, 0.5 -> 1, 20 -> 0. */
int cp_plot_tick_decimals(double step)
{
    int dec = 0;
    while (dec < 6 && fabs(step * pow(10, dec) - round(step * pow(10, dec))) > 1e-6 * step * pow(10, dec))
        dec++;
    return dec;
}

static void fmt_tick(char *buf, size_t n, double v, double step)
{
    snprintf(buf, n, "%.*f", cp_plot_tick_decimals(step), v);
}

/* Widest tick label of an axis from 0 to max (display units) by step. */
static double ticks_width(double max, double step, double em)
{
    char buf[64];
    double w = 0;
    for (double v = 0; v <= max + step * 1e-6; v += step) {
        fmt_tick(buf, sizeof buf, v, step);
        double tw = cp_plot_text_width(buf, em);
        if (tw > w) w = tw;
    }
    return w;
}

/* Axis from 0 to about peak * headroom, ending on a tick. */
static void memory_axis(cp_plot_axis *a, double peak, double headroom)
{
    if (!(peak > 0)) peak = 1024;
    a->div = cp_plot_mem_unit(peak * headroom, &a->unit);
    double top = peak * headroom / a->div;
    a->step = cp_plot_nice_step(top, 5);
    a->max = ceil(top / a->step - 1e-9) * a->step * a->div;
}

/* ---- placing ---------------------------------------------------------- */

typedef struct {
    const cp_plot_spec *s;
    cp_plot_layout *l;
    envelope total, all;    /* memory panel: the total curve; every curve */
    double peak;
} ctx;

static void legend_size(ctx *c, double *w, double *h, size_t cols)
{
    const cp_plot_spec *s = c->s;
    cp_plot_layout *l = c->l;
    double em = l->em * LEGEND_SCALE, textw = 0;
    for (size_t i = 0; i < s->nseries; i++) {
        if (!s->series[i].label || l->colour[i] == CP_PLOT_COL_UNNAMED) continue;
        double tw = cp_plot_text_width(s->series[i].label, em);
        if (tw > textw) textw = tw;
    }
    if (l->legend_more) {
        char buf[48];
        snprintf(buf, sizeof buf, "+%zu more", l->legend_more);
        double tw = cp_plot_text_width(buf, em);
        if (tw > textw) textw = tw;
    }
    double entry_w = 2.4 * em + 0.5 * em + textw;
    size_t rows = (l->legend_entries + cols - 1) / cols;
    l->legend_rows = rows;
    l->legend_cols = cols;
    *w = cols * entry_w + (cols - 1) * 1.2 * em + 1.2 * em;
    *h = rows * 1.4 * em + 0.8 * em;
}

/* The panels for a given reserved height below them. */
static void panels(ctx *c, double below)
{
    cp_plot_layout *l = c->l;
    double em = l->em;
    double W = l->width, H = l->height;
    double tick_em = em * TICK_SCALE;
    /* The widest label of any memory axis we might pick. */
    cp_plot_axis probe;
    memory_axis(&probe, c->peak, 2.4);
    double ytw = ticks_width(probe.max / probe.div, probe.step / 2, tick_em);
    double cpu_tw = cp_plot_text_width("1000", tick_em);
    if (cpu_tw > ytw) ytw = cpu_tw;
    double left = 0.8 * em + 1.3 * em + 0.6 * em + ytw + 0.5 * em;
    double right = 2.0 * em;
    double top = (c->s->title ? 2.0 * em * TITLE_SCALE : 1.0 * em);
    double bottom = 0.5 * em + 1.5 * tick_em + 1.5 * em + 0.4 * em + below;
    l->title = (cp_rect){left, 0.4 * em, W - right, 0.4 * em + 1.4 * em * TITLE_SCALE};
    double y0 = top, y1 = H - bottom;
    if (y1 - y0 < 4 * em) y1 = y0 + 4 * em; /* tiny images: still something */
    if (c->s->include_cpu) {
        double gap = 0.9 * em, h = y1 - y0 - gap;
        l->mem = (cp_rect){left, y0, W - right, y0 + h * 0.68};
        l->cpu = (cp_rect){left, l->mem.y1 + gap, W - right, y1};
    } else {
        l->mem = (cp_rect){left, y0, W - right, y1};
        l->cpu = (cp_rect){0, 0, 0, 0};
    }
}

static int build_envelopes(ctx *c)
{
    const cp_plot_spec *s = c->s;
    cp_plot_layout *l = c->l;
    env_free(&c->total);
    env_free(&c->all);
    if (env_new(&c->total, l->width) || env_new(&c->all, l->width)) return -1;
    mapping m = {l->mem, l->time.max, l->memory.max};
    for (size_t i = 0; i < s->nseries; i++) {
        const cp_plot_series *se = &s->series[i];
        env_add(&c->all, &m, se->x, se->mem, se->n, se->total ? 2.0 : 1.2);
        if (se->total) env_add(&c->total, &m, se->x, se->mem, se->n, 2.0);
    }
    return 0;
}

/* Try the legend inside the memory panel; 1 when it fits. */
static int legend_inside(ctx *c)
{
    cp_plot_layout *l = c->l;
    double w, h, m = 0.6 * l->em;
    legend_size(c, &w, &h, 1);
    if (h > 0.6 * (l->mem.y1 - l->mem.y0) || w > 0.45 * (l->mem.x1 - l->mem.x0)) return 0;
    const int where[] = {CP_LEGEND_TOP_LEFT, CP_LEGEND_TOP_RIGHT, CP_LEGEND_TOP_CENTER};
    for (int k = 0; k < 3; k++) {
        double x0 = where[k] == CP_LEGEND_TOP_LEFT ? l->mem.x0 + m
                  : where[k] == CP_LEGEND_TOP_RIGHT ? l->mem.x1 - m - w
                  : (l->mem.x0 + l->mem.x1 - w) / 2;
        cp_rect r = {x0, l->mem.y0 + m, x0 + w, l->mem.y0 + m + h};
        cp_rect probe = {r.x0 - 3, r.y0, r.x1 + 3, r.y1 + 3};
        if (!env_hits(&c->all, probe)) {
            l->legend = r;
            l->legend_where = where[k];
            return 1;
        }
    }
    return 0;
}

/* The total curve's y (pixels) at time x, by interpolation. */
static double total_y_at(ctx *c, double x, double *ax)
{
    const cp_plot_spec *s = c->s;
    cp_plot_layout *l = c->l;
    mapping m = {l->mem, l->time.max, l->memory.max};
    *ax = map_x(&m, x);
    for (size_t i = 0; i < s->nseries; i++) {
        const cp_plot_series *se = &s->series[i];
        if (!se->total || se->n == 0) continue;
        size_t k = 0;
        while (k + 1 < se->n && se->x[k + 1] < x) k++;
        double y = se->mem[k];
        if (k + 1 < se->n && se->x[k + 1] > se->x[k] && x > se->x[k]) {
            double u = (x - se->x[k]) / (se->x[k + 1] - se->x[k]);
            if (u > 1) u = 1;
            y = se->mem[k] + (se->mem[k + 1] - se->mem[k]) * u;
        }
        if (!isfinite(y)) y = 0;
        return map_y(&m, y);
    }
    return map_y(&m, 0);
}

/* The point of box r nearest to (ax, ay): where a leader line ends. */
static void leader_end(cp_rect r, double ax, double ay, double *x, double *y)
{
    *x = fmin(fmax(ax, r.x0), r.x1);
    *y = fmin(fmax(ay, r.y0), r.y1);
}

/* Is r a good box for the label of note `self` at point (ax, ay)? Checked
 * against the labels placed so far (placed is cleared before a round). */
static int label_ok(ctx *c, cp_rect r, size_t self, double ax, double ay)
{
    cp_plot_layout *l = c->l;
    if (!inside(r, l->mem, 2)) return 0;
    if (l->legend_where != CP_LEGEND_BELOW && l->legend_where != CP_LEGEND_NONE && overlap(r, l->legend, 3))
        return 0;
    if (env_hits(&c->total, (cp_rect){r.x0 - 2, r.y0 - 2, r.x1 + 2, r.y1 + 2})) return 0;
    double ex, ey;
    leader_end(r, ax, ay, &ex, &ey);
    if (hypot(ex - ax, ey - ay) > 10 * l->em) return 0; /* too far from its point */
    for (size_t j = 0; j < l->nlabels; j++) {
        const cp_plot_label *o = &l->labels[j];
        if (j == self || !o->placed) continue;
        if (overlap(r, o->box, 3)) return 0;
        /* Neither leader may run through the other's box, nor a box over
         * the other's point. */
        if (segment_hits(ax, ay, ex, ey, o->box)) return 0;
        double ox, oy;
        leader_end(o->box, o->ax, o->ay, &ox, &oy);
        if (segment_hits(o->ax, o->ay, ox, oy, r)) return 0;
        if (o->ax > r.x0 - 3 && o->ax < r.x1 + 3 && o->ay > r.y0 - 3 && o->ay < r.y1 + 3) return 0;
    }
    return 1;
}

/* Place every note label; returns how many found no room. */
static size_t place_notes(ctx *c)
{
    const cp_plot_spec *s = c->s;
    cp_plot_layout *l = c->l;
    double em = l->em * NOTE_SCALE, pad = 0.35 * em, gap = 0.5 * em;
    size_t unplaced = 0;
    /* Left to right, so nudges go the same way. */
    size_t *order = malloc((s->nnotes ? s->nnotes : 1) * sizeof *order);
    if (!order) return s->nnotes;
    for (size_t i = 0; i < s->nnotes; i++) order[i] = i;
    for (size_t i = 1; i < s->nnotes; i++)
        for (size_t j = i; j > 0 && s->notes[order[j - 1]].x > s->notes[order[j]].x; j--) {
            size_t t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    for (size_t i = 0; i < l->nlabels; i++) l->labels[i].placed = 0;
    for (size_t oi = 0; oi < s->nnotes; oi++) {
        size_t i = order[oi];
        cp_plot_label *lb = &l->labels[i];
        double ax, ay = total_y_at(c, s->notes[i].x, &ax);
        lb->ax = ax;
        lb->ay = ay;
        double w = cp_plot_text_width(s->notes[i].text, em) + 2 * pad, h = 1.25 * em + 2 * pad;
        /* Horizontal offsets of the box centre from the point, nearest first. */
        const double offs[] = {0, 0.5, -0.5, 1, -1, 1.5, -1.5, 2.5, -2.5, 4, -4};
        double best = INFINITY;
        cp_rect best_r = {0, 0, 0, 0};
        for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
            double x0 = ax - w / 2 + offs[k] * w;
            if (x0 < l->mem.x0 + 3) x0 = l->mem.x0 + 3;
            if (x0 + w > l->mem.x1 - 3) x0 = l->mem.x1 - 3 - w;
            /* Above the curve, stepping up level by level... */
            double clear = env_top(&c->total, x0 - 2, x0 + w + 2);
            if (!isfinite(clear)) clear = l->mem.y1;
            for (double y1 = clear - gap; y1 - h >= l->mem.y0 + 2; y1 -= h * 0.5) {
                cp_rect r = {x0, y1 - h, x0 + w, y1};
                double cost = fabs((r.x0 + r.x1) / 2 - ax) + fabs(ay - r.y1) * 1.5;
                if (cost >= best) break;
                if (label_ok(c, r, i, ax, ay)) { best = cost; best_r = r; break; }
            }
            /* ...or below it (over the process lines, so it costs more). */
            double floor_y = env_bottom(&c->total, x0 - 2, x0 + w + 2);
            if (isfinite(floor_y)) {
                for (double y0 = floor_y + gap; y0 + h <= l->mem.y1 - 2; y0 += h * 0.5) {
                    cp_rect r = {x0, y0, x0 + w, y0 + h};
                    double cost = fabs((r.x0 + r.x1) / 2 - ax) + fabs(r.y0 - ay) * 1.5 + 4 * em;
                    if (cost >= best) break;
                    if (label_ok(c, r, i, ax, ay)) { best = cost; best_r = r; break; }
                }
            }
        }
        if (isfinite(best)) {
            lb->box = best_r;
            lb->placed = 1;
            double cx, cy;
            leader_end(best_r, ax, ay, &cx, &cy);
            lb->leader = hypot(cx - ax, cy - ay) > 0.9 * em;
        } else {
            lb->placed = 0;
            lb->leader = 0;
            unplaced++;
        }
    }
    free(order);
    return unplaced;
}

int cp_plot_compute_layout(const cp_plot_spec *s, cp_plot_layout *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->width = s->width > 0 ? s->width : 1200;
    l->height = s->height > 0 ? s->height : 720;
    l->em = (s->font_size > 0 ? s->font_size : 11) * PX_PER_PT;
    l->colour = calloc(s->nseries ? s->nseries : 1, sizeof *l->colour);
    l->labels = calloc(s->nnotes ? s->nnotes : 1, sizeof *l->labels);
    l->nlabels = s->nnotes;
    ctx c = {s, l, {0}, {0}, 0};
    if (!l->colour || !l->labels) goto oom;

    /* Colours: the total black, named lines distinct, the rest grey. */
    int next = 0;
    double tmax = 0, cmax = 0;
    for (size_t i = 0; i < s->nseries; i++) {
        const cp_plot_series *se = &s->series[i];
        if (se->total) l->colour[i] = CP_PLOT_COL_INK;
        else if (se->label && next < CP_PLOT_LINE_COLOURS) l->colour[i] = CP_PLOT_COL_LINE + next++;
        else { l->colour[i] = CP_PLOT_COL_UNNAMED; l->legend_more++; }
        if (se->label && l->colour[i] != CP_PLOT_COL_UNNAMED) l->legend_entries++;
        for (size_t k = 0; k < se->n; k++) {
            if (isfinite(se->x[k]) && se->x[k] > tmax) tmax = se->x[k];
            if (isfinite(se->mem[k]) && se->mem[k] > c.peak) c.peak = se->mem[k];
            if (se->cpu && isfinite(se->cpu[k]) && se->cpu[k] > cmax) cmax = se->cpu[k];
        }
    }
    if (l->legend_more) l->legend_entries++;
    if (!(tmax > 0)) tmax = 1;

    /* Time: whole display units; CPU: percent, at least 0..10. */
    l->time.div = cp_plot_time_unit(tmax, &l->time.unit);
    l->time.step = cp_plot_nice_step(tmax / l->time.div, 8);
    /* End on a tick when the data ends just short of one. */
    double tend = ceil(tmax / l->time.div / l->time.step - 1e-9) * l->time.step * l->time.div;
    l->time.max = tend - tmax < 0.02 * tmax ? tend : tmax;
    l->cpu_axis.div = 1;
    l->cpu_axis.unit = "%";
    double ctop = cmax * 1.1 > 10 ? cmax * 1.1 : 10;
    l->cpu_axis.step = cp_plot_nice_step(ctop, 4);
    l->cpu_axis.max = ceil(ctop / l->cpu_axis.step - 1e-9) * l->cpu_axis.step;

    /* The legend inside the memory panel with as little headroom as
     * possible, else below the panels. Then the notes, adding headroom
     * until they all fit (or the most do). */
    static const double headrooms[] = {1.08, 1.2, 1.35, 1.55, 1.8, 2.1, 2.4};
    const size_t nh = sizeof headrooms / sizeof headrooms[0];
    size_t h0 = 0;
    l->legend_where = l->legend_entries ? CP_LEGEND_BELOW : CP_LEGEND_NONE;
    panels(&c, 0);
    if (l->legend_entries) {
        for (h0 = 0; h0 < 3; h0++) {
            memory_axis(&l->memory, c.peak, headrooms[h0]);
            if (build_envelopes(&c)) goto oom;
            if (legend_inside(&c)) break;
        }
        if (h0 == 3) {
            h0 = 0;
            l->legend_where = CP_LEGEND_BELOW;
            double em = l->em * LEGEND_SCALE, w, h;
            size_t cols = 1;
            double avail = l->width - 2 * em;
            for (cols = l->legend_entries; cols > 1; cols--) {
                legend_size(&c, &w, &h, cols);
                if (w <= avail) break;
            }
            legend_size(&c, &w, &h, cols);
            panels(&c, h + 0.4 * l->em);
            double y0 = l->height - h - 0.5 * l->em;
            double x0 = (l->mem.x0 + l->mem.x1 - w) / 2;
            if (x0 < 0.5 * l->em) x0 = 0.5 * l->em;
            l->legend = (cp_rect){x0, y0, x0 + w, y0 + h};
        }
    }
    /* Too small for its text (a tiny image, a huge font): the panels would
     * leave the image, and PLplot refuses such a viewport. */
    cp_rect last = s->include_cpu ? l->cpu : l->mem;
    if (l->mem.x1 - l->mem.x0 < 3 * l->em || l->mem.y1 - l->mem.y0 < 2 * l->em || last.y1 > l->height) {
        env_free(&c.total);
        env_free(&c.all);
        if (err && errlen)
            snprintf(err, errlen, "a %dx%d plot is too small for its text at %g pt (a larger width and height, "
                     "or a smaller font_size)", l->width, l->height, l->em / PX_PER_PT);
        cp_plot_layout_free(l);
        return -2;
    }
    size_t best_h = h0, best_unplaced = (size_t)-1;
    for (size_t hi = h0; hi < nh; hi++) {
        memory_axis(&l->memory, c.peak, headrooms[hi]);
        if (build_envelopes(&c)) goto oom;
        if (l->legend_where != CP_LEGEND_BELOW && l->legend_where != CP_LEGEND_NONE && !legend_inside(&c))
            continue;
        size_t u = place_notes(&c);
        if (u < best_unplaced) { best_unplaced = u; best_h = hi; }
        if (u == 0 || s->nnotes == 0) break;
    }
    memory_axis(&l->memory, c.peak, headrooms[best_h]);
    l->headroom = headrooms[best_h];
    if (build_envelopes(&c)) goto oom;
    if (l->legend_where != CP_LEGEND_BELOW && l->legend_where != CP_LEGEND_NONE) legend_inside(&c);
    l->unplaced = place_notes(&c);
    if (l->unplaced) {
        char buf[64];
        snprintf(buf, sizeof buf, "%zu notes not labelled", l->unplaced);
        double em = l->em * NOTE_SCALE, w = cp_plot_text_width(buf, em);
        l->unplaced_box = (cp_rect){l->mem.x1 - w, l->mem.y0 - 1.5 * em, l->mem.x1, l->mem.y0 - 0.2 * em};
    }
    env_free(&c.total);
    env_free(&c.all);
    return 0;
oom:
    env_free(&c.total);
    env_free(&c.all);
    cp_plot_layout_free(l);
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return -1;
}

void cp_plot_layout_free(cp_plot_layout *l)
{
    free(l->colour);
    free(l->labels);
    l->colour = NULL;
    l->labels = NULL;
    l->nlabels = 0;
}
