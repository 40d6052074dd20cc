/* prefault.c: see prefault.h. */
#define _GNU_SOURCE
#include "prefault.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

#define MAX_RANGES 512
#define PM_PRESENT (1ull << 63)
#define PM_EXCLUSIVE (1ull << 56)
#define READ_GAP 8 /* unmarked pages of code mapped too, to save calls */

/* A mapping of the server: its pages are bits first .. first + n - 1. */
typedef struct range {
    uintptr_t lo;
    uint32_t  n, first;
    int       written; /* private and writable: populated for writing */
} range;

/* In the server, inherited (read only) by its children. */
static range g_r[MAX_RANGES];
static int g_nr;
static size_t g_page;

/* Shared with every child of the server. */
typedef struct table {
    int      learners; /* workers that took a turn to mark */
    int      pad;
    long     marks[2]; /* pages marked: [0] code and read-only, [1] written */
    uint64_t bits[];
} table;
static table *g_t;
static size_t g_tsize;

/* The mappings worth watching: private ones with something to read, not
 * the kernel's own ([vdso], [vvar]...); when they hold more than
 * CP_PREFAULT_MAX_PAGES, the largest are left out (a sanitizer's shadow,
 * big anonymous blocks), not the many small ones (libraries, heap, stack). */
static int note_ranges(size_t *pages)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return -1;
    char line[512];
    size_t total = 0;
    g_nr = 0;
    while (fgets(line, sizeof line, f) && g_nr < MAX_RANGES) {
        unsigned long lo, hi;
        char perm[8], path[256] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perm, path) < 3) continue;
        if (perm[3] != 'p' || (perm[0] != 'r' && perm[2] != 'x') || strncmp(path, "[v", 2) == 0) continue;
        size_t n = (hi - lo) / g_page;
        if (n == 0 || n > CP_PREFAULT_MAX_PAGES) continue;
        g_r[g_nr++] = (range){(uintptr_t)lo, (uint32_t)n, 0, perm[1] == 'w'};
        total += n;
    }
    fclose(f);
    while (total > CP_PREFAULT_MAX_PAGES) {
        int big = 0;
        for (int i = 1; i < g_nr; i++) if (g_r[i].n > g_r[big].n) big = i;
        total -= g_r[big].n;
        g_r[big] = g_r[--g_nr];
    }
    total = 0;
    for (int i = 0; i < g_nr; i++) {
        g_r[i].first = (uint32_t)total;
        total += g_r[i].n;
    }
    *pages = total;
    return g_nr > 0 ? 0 : -1;
}

int cp_prefault_init(void)
{
    if (g_t) return 0;
    const char *v = getenv("COPROC_PREFAULT");
    if (v && strcmp(v, "0") == 0) return -1;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages;
    if (note_ranges(&pages)) return -1;
    g_tsize = sizeof(table) + (pages + 63) / 64 * sizeof(uint64_t);
    void *m = mmap(NULL, g_tsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -1;
    g_t = m;
    return 0;
}

static int marked(uint32_t bit)
{
    return (int)(__atomic_load_n(&g_t->bits[bit / 64], __ATOMIC_RELAXED) >> (bit % 64) & 1u);
}

/* Populate pages a .. b - 1 of range r. */
static void populate(const range *r, uint32_t a, uint32_t b)
{
    (void)madvise((void *)(r->lo + (uintptr_t)a * g_page), (size_t)(b - a) * g_page,
                  r->written ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

void cp_prefault_apply(void)
{
    if (!g_t) return;
    int skip[2] = {__atomic_load_n(&g_t->marks[0], __ATOMIC_RELAXED) > CP_PREFAULT_MAX_READ,
                   __atomic_load_n(&g_t->marks[1], __ATOMIC_RELAXED) > CP_PREFAULT_MAX_WRITTEN};
    for (int i = 0; i < g_nr; i++) {
        const range *r = &g_r[i];
        if (skip[r->written]) continue;
        uint32_t gap = r->written ? 0 : READ_GAP;
        uint32_t start = 0, end = 0; /* the run being gathered, empty when equal */
        for (uint32_t p = 0; p < r->n; p++) {
            uint32_t bit = r->first + p;
            if (bit % 64 == 0 && r->n - p >= 64 && !__atomic_load_n(&g_t->bits[bit / 64], __ATOMIC_RELAXED)) {
                p += 63; /* a word of unmarked pages */
                continue;
            }
            if (!marked(bit)) continue;
            if (end > start && p - end > gap) {
                populate(r, start, end);
                start = end;
            }
            if (end == start) start = p;
            end = p + 1;
        }
        if (end > start) populate(r, start, end);
    }
}

int cp_prefault_wants_learners(void)
{
    return g_t && __atomic_load_n(&g_t->learners, __ATOMIC_RELAXED) < CP_PREFAULT_LEARNERS;
}

int cp_prefault_learn(void)
{
    if (!g_t || __atomic_fetch_add(&g_t->learners, 1, __ATOMIC_RELAXED) >= CP_PREFAULT_LEARNERS) return 0;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t e[512];
    for (int i = 0; i < g_nr; i++) {
        const range *r = &g_r[i];
        /* A page of ours: for a private writable mapping, one we wrote (or
         * the server did since: then ours is the only mapping of it); for
         * code and read-only data, one we mapped. */
        uint64_t want = r->written ? PM_PRESENT | PM_EXCLUSIVE : PM_PRESENT;
        for (uint32_t p = 0; p < r->n;) {
            uint32_t k = r->n - p < 512 ? r->n - p : 512;
            off_t at = (off_t)((r->lo / g_page + p) * sizeof *e);
            ssize_t got = pread(fd, e, k * sizeof *e, at);
            if (got <= 0) break;
            k = (uint32_t)((size_t)got / sizeof *e);
            for (uint32_t j = 0; j < k; j++) {
                if ((e[j] & want) != want) continue;
                uint32_t bit = r->first + p + j;
                uint64_t m = 1ull << (bit % 64);
                if (!(__atomic_fetch_or(&g_t->bits[bit / 64], m, __ATOMIC_RELAXED) & m))
                    __atomic_fetch_add(&g_t->marks[r->written], 1, __ATOMIC_RELAXED);
            }
            p += k;
        }
    }
    close(fd);
    return 1;
}

long cp_prefault_marked(void)
{
    if (!g_t) return -1;
    return __atomic_load_n(&g_t->marks[0], __ATOMIC_RELAXED) + __atomic_load_n(&g_t->marks[1], __ATOMIC_RELAXED);
}

int cp_prefault_is_marked(const void *addr)
{
    if (!g_t) return -1;
    uintptr_t a = (uintptr_t)addr;
    for (int i = 0; i < g_nr; i++) {
        if (a >= g_r[i].lo && a < g_r[i].lo + (uintptr_t)g_r[i].n * g_page)
            return marked(g_r[i].first + (uint32_t)((a - g_r[i].lo) / g_page));
    }
    return -1;
}
