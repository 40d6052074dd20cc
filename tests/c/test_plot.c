/* test_plot.c: units, ticks, text widths, the layout (legend and note
 * labels inside the image, apart from each other and off the total curve,
 * the CPU panel) for 1 to 60 processes and short and long runs, and real
 * PNG/SVG files (src/plot.c, src/plot_layout.c). Set CP_PLOT_KEEP=dir to
 * keep the files for a look. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Under -DCOPROC_SANITIZE: fontconfig and libltdl (loaded by PLplot's cairo
 * driver) keep process-lifetime caches that LeakSanitizer reports; none of
 * it is ours. Unused without ASan. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig\nleak:libltdl\n"; }

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static void test_units(void)
{
    const char *u;
    CHECK(cp_plot_mem_unit(100, &u) == 1 && strcmp(u, "B") == 0);
    CHECK(cp_plot_mem_unit(3000, &u) == 1024 && strcmp(u, "KiB") == 0);
    CHECK(cp_plot_mem_unit(300e6, &u) == 1024.0 * 1024 && strcmp(u, "MiB") == 0);
    CHECK(cp_plot_mem_unit(5e9, &u) == 1024.0 * 1024 * 1024 && strcmp(u, "GiB") == 0);
    CHECK(cp_plot_time_unit(30, &u) == 1 && strcmp(u, "s") == 0);
    CHECK(cp_plot_time_unit(600, &u) == 60 && strcmp(u, "min") == 0);
    CHECK(cp_plot_time_unit(5 * 3600, &u) == 3600 && strcmp(u, "h") == 0);
    CHECK(strcmp(cp_plot_device("a/b.png"), "pngcairo") == 0);
    CHECK(strcmp(cp_plot_device("x.SVG"), "svgcairo") == 0);
    CHECK(cp_plot_device("x.pdf") == NULL && cp_plot_device("noext") == NULL);
    CHECK(cp_plot_nice_step(100, 5) == 20);
    CHECK(cp_plot_nice_step(2, 8) == 0.25);
    CHECK(cp_plot_nice_step(120, 8) == 20);
    CHECK(cp_plot_tick_decimals(0.25) == 2 && cp_plot_tick_decimals(0.5) == 1 && cp_plot_tick_decimals(20) == 0);
    /* Wider text is wider; measured against the real font: 23 characters
     * at 13.75 px came out 169 px wide. */
    double w = cp_plot_text_width("total PSS (5 processes)", 13.75);
    CHECK(w >= 169 && w < 169 * 1.25);
    CHECK(cp_plot_text_width("MMMM", 10) > cp_plot_text_width("iiii", 10));
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static int starts_with(const char *path, const char *magic, size_t n)
{
    char buf[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && memcmp(buf, magic, n) == 0;
}

static int rect_in(cp_rect a, cp_rect b)
{
    return a.x0 >= b.x0 && a.y0 >= b.y0 && a.x1 <= b.x1 && a.y1 <= b.y1 && a.x0 < a.x1 && a.y0 < a.y1;
}

static int rects_meet(cp_rect a, cp_rect b)
{
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

/* A synthetic run: nproc processes over seconds, samples points; process
 * k grows, holds and falls at its own pace; the total is their sum. */
typedef struct {
    size_t n, nproc;
    double *t, *mem, *cpu; /* nproc + 1 series of n: [0] is the total */
    cp_plot_series *series;
    char (*labels)[32];
} run;

static void make_run(run *r, size_t nproc, double seconds, size_t n)
{
    r->n = n;
    r->nproc = nproc;
    r->t = malloc(n * sizeof *r->t);
    r->mem = calloc((nproc + 1) * n, sizeof *r->mem);
    r->cpu = calloc((nproc + 1) * n, sizeof *r->cpu);
    r->series = calloc(nproc + 1, sizeof *r->series);
    r->labels = calloc(nproc + 1, sizeof *r->labels);
    for (size_t i = 0; i < n; i++) r->t[i] = seconds * (double)i / (double)(n - 1);
    for (size_t k = 1; k <= nproc; k++) {
        double size = 20e6 + 150e6 / (double)k, phase = (double)k / (double)(nproc + 1);
        for (size_t i = 0; i < n; i++) {
            double u = (double)i / (double)(n - 1);
            double v = u < phase ? size * u / phase : size * (1.2 - u);
            r->mem[k * n + i] = v > 0 ? v : 0;
            r->cpu[k * n + i] = 50 + 45 * sin(u * 20 + (double)k);
            r->mem[i] += r->mem[k * n + i];
            r->cpu[i] += r->cpu[k * n + i];
        }
    }
    if (nproc == 1)
        for (size_t i = 0; i < n; i++) r->mem[i] = r->mem[n + i], r->cpu[i] = r->cpu[n + i];
    snprintf(r->labels[0], sizeof r->labels[0], "total PSS, %zu processes", nproc);
    r->series[0] = (cp_plot_series){r->labels[0], r->t, r->mem, r->cpu, n, 1};
    for (size_t k = 1; k <= nproc; k++) {
        snprintf(r->labels[k], sizeof r->labels[k], "worker-%zu (%zu)", k, 1000 + k);
        /* The monitor names at most 8 processes; the rest are "+k more". */
        r->series[k] = (cp_plot_series){k <= 8 ? r->labels[k] : NULL, r->t, r->mem + k * n, r->cpu + k * n, n, 0};
    }
}

static void free_run(run *r)
{
    free(r->t);
    free(r->mem);
    free(r->cpu);
    free(r->series);
    free(r->labels);
}

/* Every promise of the layout, checked on its own numbers. */
static void check_layout(const cp_plot_spec *s, const cp_plot_layout *l, const run *r)
{
    cp_rect image = {0, 0, l->width, l->height};
    CHECK(rect_in(l->mem, image));
    if (s->include_cpu) {
        CHECK(rect_in(l->cpu, image));
        CHECK(l->cpu.y0 > l->mem.y1);                          /* below the memory panel */
        CHECK(l->cpu.x0 == l->mem.x0 && l->cpu.x1 == l->mem.x1); /* one time axis */
        CHECK(l->cpu_axis.max >= 10);
    }
    /* The legend: total first, at most 8 named lines and "+k more". */
    size_t named = r->nproc > 1 ? (r->nproc < 8 ? r->nproc : 8) : 0;
    CHECK(l->legend_entries == 1 + named + (l->legend_more ? 1 : 0));
    CHECK(l->legend_more == (r->nproc > 8 ? r->nproc - 8 : 0));
    CHECK(rect_in(l->legend, image));
    if (l->legend_where == CP_LEGEND_BELOW) {
        CHECK(l->legend.y0 > (s->include_cpu ? l->cpu.y1 : l->mem.y1));
    } else {
        CHECK(rect_in(l->legend, l->mem));
    }
    /* Named lines have distinct colours, unnamed ones are grey. */
    for (size_t i = 0; i < s->nseries; i++) {
        if (s->series[i].total) CHECK(l->colour[i] == CP_PLOT_COL_INK);
        else if (!s->series[i].label) CHECK(l->colour[i] == CP_PLOT_COL_UNNAMED);
        for (size_t j = 0; j < i; j++)
            if (s->series[i].label && s->series[j].label) CHECK(l->colour[i] != l->colour[j]);
    }
    /* Labels: inside the memory panel, apart, off the legend and off the
     * total curve (sampled along every segment, in pixels). */
    double xs = (l->mem.x1 - l->mem.x0) / l->time.max, ys = (l->mem.y1 - l->mem.y0) / l->memory.max;
    for (size_t i = 0; i < l->nlabels; i++) {
        const cp_plot_label *a = &l->labels[i];
        if (!a->placed) continue;
        CHECK(rect_in(a->box, l->mem));
        if (l->legend_where != CP_LEGEND_BELOW) CHECK(!rects_meet(a->box, l->legend));
        for (size_t j = 0; j < i; j++)
            if (l->labels[j].placed) CHECK(!rects_meet(a->box, l->labels[j].box));
        int hit = 0;
        for (size_t k = 0; k + 1 < r->n && !hit; k++)
            for (int q = 0; q <= 8; q++) {
                double t = r->t[k] + (r->t[k + 1] - r->t[k]) * q / 8.0;
                double m = r->mem[k] + (r->mem[k + 1] - r->mem[k]) * q / 8.0;
                double x = l->mem.x0 + t * xs, y = l->mem.y1 - m * ys;
                if (x > a->box.x0 && x < a->box.x1 && y > a->box.y0 && y < a->box.y1) hit = 1;
            }
        CHECK(!hit);
        /* The point it labels is on the curve, inside the panel. */
        CHECK(a->ax >= l->mem.x0 && a->ax <= l->mem.x1 && a->ay >= l->mem.y0 && a->ay <= l->mem.y1);
    }
}

static void draw(const char *dir, const char *name, size_t nproc, double seconds, size_t n,
                 int include_cpu, const cp_plot_note *notes, size_t nnotes, size_t *unplaced)
{
    run r;
    make_run(&r, nproc, seconds, n);
    cp_plot_spec s = {0};
    s.title = "Memory and CPU of make (pid 100) and its children";
    s.mem_label = "PSS";
    s.include_cpu = include_cpu;
    s.series = r.series;
    s.nseries = nproc > 1 ? nproc + 1 : 1;
    s.notes = notes;
    s.nnotes = nnotes;
    cp_plot_layout l;
    char path[512], err[256] = "";
    CHECK(cp_plot_compute_layout(&s, &l, err, sizeof err) == 0);
    check_layout(&s, &l, &r);
    if (unplaced) *unplaced = l.unplaced;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    s.path = path;
    int errnum = -1;
    CHECK(cp_plot_draw(&s, &l, err, sizeof err, &errnum) == 0 && errnum == 0);
    if (err[0]) fprintf(stderr, "err: %s\n", err);
    CHECK(file_size(path) > 10000);
    CHECK(starts_with(path, strstr(name, ".svg") ? "<?xml" : "\x89PNG\r\n\x1a\n", 5));
    cp_plot_layout_free(&l);
    free_run(&r);
}

static void test_draw(const char *dir)
{
    cp_plot_note notes[] = {
        {0.0, "starting workers"},
        {1.0, "emptying list: dumping all memory"},
        {2.0, "done"},
    };
    size_t unplaced = 99;
    draw(dir, "p1.png", 1, 2.0, 200, 1, notes, 3, &unplaced);
    CHECK(unplaced == 0);
    draw(dir, "p5.png", 5, 2.0, 200, 1, notes, 3, &unplaced);
    CHECK(unplaced == 0);
    draw(dir, "p20.png", 20, 2.0, 200, 1, notes, 3, NULL);
    draw(dir, "p60.png", 60, 2.0, 200, 1, notes, 3, NULL);
    cp_plot_note long_notes[] = {
        {0.0, "build started"}, {3600.0, "half way: linking"}, {7200.0, "done"},
    };
    draw(dir, "long.png", 5, 7200.0, 3000, 1, long_notes, 3, &unplaced);
    CHECK(unplaced == 0);
    draw(dir, "nocpu.svg", 5, 2.0, 200, 0, notes, 3, NULL);
    /* Many notes crowded together: none overlap; those without room are
     * counted, never drawn over each other. */
    cp_plot_note crowd[40];
    char texts[40][32];
    for (int i = 0; i < 40; i++) {
        snprintf(texts[i], sizeof texts[i], "step %d of the build", i);
        crowd[i] = (cp_plot_note){0.9 + i * 0.005, texts[i]};
    }
    draw(dir, "crowd.png", 5, 2.0, 200, 1, crowd, 40, &unplaced);
    CHECK(unplaced > 0 && unplaced < 40);

    /* A single sample still draws. */
    double t = 0, m = 5e6;
    cp_plot_series one = {"total", &t, &m, NULL, 1, 1};
    cp_plot_spec s = {0};
    s.series = &one;
    s.nseries = 1;
    cp_plot_layout l;
    char path[512], err[256];
    CHECK(cp_plot_compute_layout(&s, &l, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/one.png", dir);
    s.path = path;
    int errnum;
    CHECK(cp_plot_draw(&s, &l, err, sizeof err, &errnum) == 0);
    /* Errors come back as messages, never as PLplot's exit(). */
    s.path = "/nonexistent-dir/x.png";
    err[0] = '\0';
    CHECK(cp_plot_draw(&s, &l, err, sizeof err, &errnum) == -1);
    CHECK(strstr(err, "cannot write plot file") != NULL && errnum == 2 /* ENOENT */);
    s.path = "x.pdf";
    CHECK(cp_plot_draw(&s, &l, err, sizeof err, &errnum) == -1);
    CHECK(strstr(err, ".png or .svg") != NULL);
    cp_plot_layout_free(&l);
}

int main(void)
{
    test_units();
    const char *keep = getenv("CP_PLOT_KEEP");
    char tmpl[] = "/tmp/cp_plot_XXXXXX";
    const char *dir = keep ? keep : mkdtemp(tmpl);
    if (!dir) return 2;
    test_draw(dir);
    if (!keep) {
        char p[600];
        const char *names[] = {"p1.png", "p5.png", "p20.png", "p60.png", "long.png", "nocpu.svg", "crowd.png", "one.png"};
        for (int i = 0; i < 8; i++) { snprintf(p, sizeof p, "%s/%s", dir, names[i]); unlink(p); }
        rmdir(dir);
    }
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    puts("test_plot: ok");
    return 0;
}
