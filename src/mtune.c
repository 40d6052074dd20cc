/* mtune.c: see mtune.h. */
#include "mtune.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static int g_kept;

enum cp_malloc_mode cp_malloc_env(const char **value)
{
    const char *v = getenv("COPROC_MALLOC");
    if (value) *value = v;
    if (!v || !*v) return CP_MALLOC_UNSET;
    if (strcmp(v, "keep") == 0) return CP_MALLOC_KEEP;
    if (strcmp(v, "off") == 0) return CP_MALLOC_OFF;
    return CP_MALLOC_BAD;
}

int cp_malloc_keep(void)
{
#ifdef __GLIBC__
    if (g_kept) return 1;
    /* No block gets a mapping of its own (above 32 MiB no threshold can
     * keep it in the heap); the top of the heap is kept up to
     * CP_MALLOC_TRIM. */
    if (!mallopt(M_MMAP_MAX, 0)) return 0;
    mallopt(M_TRIM_THRESHOLD, CP_MALLOC_TRIM);
    g_kept = 1;
    return 1;
#else
    return 0;
#endif
}

int cp_malloc_kept(void) { return g_kept; }

void cp_malloc_default_keep(void)
{
    if (cp_malloc_env(NULL) != CP_MALLOC_OFF) cp_malloc_keep();
}

void cp_malloc_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    if (!g_kept || n < CP_HUGE_MIN) return;
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + n) & ~(huge - 1);
    if (e > a) madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p; (void)n;
#endif
}

void *cp_malloc_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud; (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p && nsize >= CP_HUGE_MIN) cp_malloc_huge(p, nsize);
    return p;
}

int cp_malloc_maps(size_t n)
{
#ifdef __GLIBC__
    struct mallinfo2 before = mallinfo2();
    char *p = malloc(n);
    if (!p) return -1;
    struct mallinfo2 after = mallinfo2();
    free(p);
    if (!after.arena && !after.hblkhd) return -1; /* glibc's malloc is not in use */
    return after.hblkhd > before.hblkhd;
#else
    (void)n;
    return -1;
#endif
}
