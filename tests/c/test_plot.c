/* test_plot.c: units, device choice, errors, and real PNG/SVG files from
 * src/plot.c. Set CP_PLOT_KEEP=dir to keep the files for a look. */
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

#define N 400
static double t[N], a[N], b[N], tot[N];

static void test_draw(const char *dir)
{
    for (int i = 0; i < N; i++) {
        t[i] = i * 0.05;
        a[i] = 30e6 + 20e6 * sin(i / 40.0);
        b[i] = 10e6 + (i % 100) * 1e6;   /* grows, then dumps */
        tot[i] = a[i] + b[i];
    }
    cp_plot_line lines[] = {
        {"total (2 processes)", t, tot, N, 1},
        {"worker (101)", t, a, N, 0},
        {"lua5.4 (#100)", t, b, N, 0},  /* '#' must come out literally */
    };
    cp_plot_note notes[] = {
        {2.0, tot[40], "starting workers"},
        {10.0, tot[200], "emptying list: dumping all memory"},
        {19.0, tot[380], "done"},
    };
    cp_plot_spec s = {0};
    s.title = "Memory of pid 100 and its children";
    s.metric = "RSS";
    s.lines = lines;
    s.nlines = 3;
    s.notes = notes;
    s.nnotes = 3;
    char path[512], err[256] = "";

    snprintf(path, sizeof path, "%s/plot.png", dir);
    s.path = path;
    CHECK(cp_plot_memory(&s, err, sizeof err) == 0);
    if (err[0]) fprintf(stderr, "err: %s\n", err);
    CHECK(starts_with(path, "\x89PNG\r\n\x1a\n", 8));
    CHECK(file_size(path) > 20000);

    /* Again in the same process (PLplot state must be reset), as SVG. */
    snprintf(path, sizeof path, "%s/plot.svg", dir);
    s.path = path;
    s.font_size = 8;
    CHECK(cp_plot_memory(&s, err, sizeof err) == 0);
    CHECK(starts_with(path, "<?xml", 5));
    CHECK(file_size(path) > 10000);

    /* A single sample and no notes still draws. */
    cp_plot_line one = {"total", t, tot, 1, 1};
    s.lines = &one;
    s.nlines = 1;
    s.nnotes = 0;
    snprintf(path, sizeof path, "%s/one.png", dir);
    s.path = path;
    CHECK(cp_plot_memory(&s, err, sizeof err) == 0);
    CHECK(starts_with(path, "\x89PNG", 4));

    /* Errors come back as messages, never as PLplot's exit(). */
    s.path = "/nonexistent-dir/x.png";
    err[0] = '\0';
    CHECK(cp_plot_memory(&s, err, sizeof err) == -1);
    CHECK(strstr(err, "cannot write plot file") != NULL);
    s.path = "x.pdf";
    CHECK(cp_plot_memory(&s, err, sizeof err) == -1);
    CHECK(strstr(err, ".png or .svg") != NULL);
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
        const char *names[] = {"plot.png", "plot.svg", "one.png"};
        for (int i = 0; i < 3; i++) { snprintf(p, sizeof p, "%s/%s", dir, names[i]); unlink(p); }
        rmdir(dir);
    }
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    puts("test_plot: ok");
    return 0;
}
