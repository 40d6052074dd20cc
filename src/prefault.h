/* prefault.h: the pages a fork server's children map in at once.
 *
 * Why. On some virtual machines (the CI machine among them) every first
 * touch of a page traps to the hypervisor: 25-60 us in a newly forked
 * process (its first touch of each 2 MiB region costs the most), against
 * 1-8 us a page when one madvise(MADV_POPULATE_*) maps many. A fresh
 * worker touches nearly the same few dozen pages of its server's memory
 * every time (its heap and stack, libraries' data, the code it runs), 50-60
 * faults that were most of the time to its first reply.
 *
 * How. The server notes its own mappings and shares, with every process
 * it clones, a bitmap over their pages (memory mapped MAP_SHARED before
 * the first clone). Its first CP_PREFAULT_LEARNERS workers, at their first
 * idle moment after a message came in, mark the pages they touched
 * (/proc/self/pagemap: the private pages written, which are mapped only by
 * them, and the code and read-only data they mapped). Each later spare or
 * worker maps the marked pages in first, one call per run of pages: the
 * pages it would fault in anyway, so its memory does not grow.
 *
 * Nothing depends on it: where /proc/self/pagemap or MADV_POPULATE_* is
 * missing, or a range changed since, the calls do nothing and the pages
 * fault in as before. COPROC_PREFAULT=0 turns it off. */
#ifndef CP_PREFAULT_H
#define CP_PREFAULT_H

#define CP_PREFAULT_LEARNERS 4          /* workers whose pages are marked */
#define CP_PREFAULT_MAX_PAGES (1 << 16) /* pages watched at most (256 MiB) */
/* Past these many marked pages of a kind, the learners were not typical
 * (a first task that wrote much of a large forked server's heap): a copy of
 * them all in every worker would cost more than it saves, so none is made. */
#define CP_PREFAULT_MAX_WRITTEN 1024    /* private pages written (4 MiB) */
#define CP_PREFAULT_MAX_READ 16384      /* code and read-only pages (64 MiB) */

/* In the server, once its Lua state is prepared and before it clones:
 * note its mappings and map the shared bitmap. 0, or -1 (then the calls
 * below do nothing in it and its children). */
int cp_prefault_init(void);

/* In a newly cloned child of the server, first thing: map in the pages
 * marked so far. */
void cp_prefault_apply(void);

/* 1 in a child of a server whose bitmap still wants learners. */
int cp_prefault_wants_learners(void);

/* In a child of the server: mark the pages it has touched, if fewer than
 * CP_PREFAULT_LEARNERS did. Returns 1 when it did. */
int cp_prefault_learn(void);

/* For tests: pages marked so far, -1 without a bitmap; whether the page at
 * addr is marked (-1: not watched). */
long cp_prefault_marked(void);
int cp_prefault_is_marked(const void *addr);

#endif
