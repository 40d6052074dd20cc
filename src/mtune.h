/* mtune.h: make malloc keep large blocks.
 *
 * glibc maps every block above its mmap threshold (at most 32 MiB) on its
 * own and unmaps it when freed, and gives the top of its heap back to the
 * system past the trim threshold: every large message then lands in fresh
 * pages, and touching a fresh page costs 15-18 us on some VMs (a 64 MiB
 * malloc + memcpy at 0.2 GB/s instead of 15 GB/s into reused memory).
 * cp_malloc_keep turns both off (M_MMAP_MAX 0, M_TRIM_THRESHOLD
 * CP_MALLOC_TRIM): freed blocks stay in the heap, already paged in, for the
 * next large message; and large blocks are advised to use transparent huge
 * pages (cp_malloc_huge). The price: memory once used stays with the
 * process (up to CP_MALLOC_TRIM at the top of the heap; freed holes below
 * it for ever).
 *
 * Who applies it (docs/api.md, "Memory"): coproc-lua and coproc's workers
 * by default, a host that loads coproc into another interpreter only when
 * asked (COPROC_MALLOC=keep, coproc.tune_malloc()). COPROC_MALLOC=off keeps
 * malloc as it is everywhere. No Lua here. */
#ifndef CP_MTUNE_H
#define CP_MTUNE_H

#include <stddef.h>

#define CP_MALLOC_TRIM (1 << 30) /* free bytes the top of the heap keeps */

/* What COPROC_MALLOC asks for. */
enum cp_malloc_mode {
    CP_MALLOC_UNSET = 0, /* unset or empty: the default of the caller */
    CP_MALLOC_KEEP,      /* "keep" */
    CP_MALLOC_OFF,       /* "off" */
    CP_MALLOC_BAD        /* anything else: treated as unset */
};
enum cp_malloc_mode cp_malloc_env(const char **value);

/* Apply the settings above. Returns 1 when applied (now or before), 0 when
 * this C library has no such settings. */
int cp_malloc_keep(void);
/* cp_malloc_keep applied in this process (or the one it was forked from). */
int cp_malloc_kept(void);
/* Unless COPROC_MALLOC=off: cp_malloc_keep (coproc-lua and workers). */
void cp_malloc_default_keep(void);

/* Once cp_malloc_keep applied: ask for transparent huge pages for the
 * whole 2 MiB pages inside the block p[0..n) when n >= CP_HUGE_MIN (a large
 * frame's block, a large Lua string). Touching a fresh 2 MiB huge page
 * costs about as much as one 4 KiB page does on such a VM, and copies
 * through huge pages miss the TLB less. Harmless where THP is off. */
#define CP_HUGE_MIN (4u << 20)
void cp_malloc_huge(void *p, size_t n);
/* A lua_Alloc (realloc and free, as luaL_newstate's) that calls
 * cp_malloc_huge on large blocks: coproc-lua and fresh workers install it
 * with lua_setallocf (compatible with blocks allocated before). */
void *cp_malloc_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* For tests: would a block of n bytes be mapped on its own (and unmapped
 * when freed)? 1 yes, 0 no, -1 cannot tell (no glibc, or another malloc
 * in charge: a sanitizer's, valgrind's). */
int cp_malloc_maps(size_t n);

#endif
