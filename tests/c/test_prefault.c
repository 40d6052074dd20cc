/* test_prefault.c: the pages a fork server's children map in at once
 * (prefault.h). A learner child marks the private pages it wrote and the
 * file pages it read, not those it left alone; a later child finds exactly
 * the marked pages mapped before touching anything (written ones as its
 * own copies, the others still shared); only CP_PREFAULT_LEARNERS children
 * mark; a learner that wrote too much is ignored; COPROC_PREFAULT=0 turns
 * it all off. Each case runs in its own process, which plays the server. */
#define _GNU_SOURCE
#include "check.h"
#include "prefault.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PM_PRESENT (1ull << 63)
#define PM_EXCLUSIVE (1ull << 56)

static size_t page;

/* The pagemap entry of addr in this process (0 when unreadable). */
static uint64_t pagemap(const void *addr)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t e = 0;
    if (pread(fd, &e, sizeof e, (off_t)((uintptr_t)addr / page * sizeof e)) != (ssize_t)sizeof e) e = 0;
    close(fd);
    return e;
}

static int own_copy(const void *addr)
{
    uint64_t e = pagemap(addr);
    return (e & PM_PRESENT) && (e & PM_EXCLUSIVE);
}

static int mapped(const void *addr) { return (pagemap(addr) & PM_PRESENT) != 0; }

/* Run fn in a child; its exit code (fn's count of failed checks). */
static int in_child(int (*fn)(void *), void *ud)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        check_failures = 0; /* the child's own */
        _exit(fn(ud));
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

/* The memory a case watches: anonymous pages the "server" wrote (shared
 * with its children until they write) and pages of a file it read. */
typedef struct mem {
    char *anon;          /* 64 pages */
    const char *file;    /* 32 pages of a file */
    size_t anon_pages;
} mem;

static int map_mem(mem *m, size_t anon_pages)
{
    m->anon_pages = anon_pages;
    m->anon = mmap(NULL, anon_pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m->anon == MAP_FAILED) return -1;
    memset(m->anon, 1, anon_pages * page);
    char path[] = "/tmp/test_prefault.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    unlink(path);
    char *buf = calloc(32, page);
    int bad = !buf || write(fd, buf, 32 * page) != (ssize_t)(32 * page);
    free(buf);
    m->file = bad ? MAP_FAILED : mmap(NULL, 32 * page, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    return m->file == MAP_FAILED ? -1 : 0;
}

/* A learner: writes anon pages 5 and 9, reads file page 3, marks. */
static int learner(void *ud)
{
    mem *m = ud;
    m->anon[5 * page] = 2;
    m->anon[9 * page] = 2;
    volatile char c = m->file[3 * page];
    (void)c;
    return cp_prefault_learn() == 1 ? 0 : 1;
}

/* A later child: before touching anything, the marked pages are mapped. */
static int applier(void *ud)
{
    mem *m = ud;
    cp_prefault_apply();
    int bad = 0;
    bad += !own_copy(m->anon + 5 * page);
    bad += !own_copy(m->anon + 9 * page);
    bad += own_copy(m->anon + 7 * page);  /* nobody wrote it: still shared */
    bad += !mapped(m->file + 3 * page);
    bad += mapped(m->file + 20 * page);   /* nobody read it (and no run reaches it) */
    return bad;
}

static int learn_once_more(void *ud)
{
    mem *m = ud;
    m->anon[30 * page] = 2;
    return cp_prefault_learn();
}

static int case_learn_and_apply(void *ud)
{
    (void)ud;
    mem m;
    if (map_mem(&m, 64) || cp_prefault_init() != 0) return 50;
    CHECK(cp_prefault_marked() == 0);
    CHECK(cp_prefault_is_marked(m.anon + 5 * page) == 0);
    CHECK(in_child(learner, &m) == 0);
    CHECK(cp_prefault_is_marked(m.anon + 5 * page) == 1);
    CHECK(cp_prefault_is_marked(m.anon + 9 * page) == 1);
    CHECK(cp_prefault_is_marked(m.anon + 7 * page) == 0);
    CHECK(cp_prefault_is_marked(m.file + 3 * page) == 1);
    CHECK(cp_prefault_is_marked(m.file + 20 * page) == 0);
    CHECK(in_child(applier, &m) == 0);
    /* Three more learners, then no more. */
    for (int i = 1; i < CP_PREFAULT_LEARNERS; i++) CHECK(in_child(learner, &m) == 0);
    CHECK(in_child(learn_once_more, &m) == 0); /* learn returned 0: not taken */
    CHECK(cp_prefault_is_marked(m.anon + 30 * page) == 0);
    CHECK(!cp_prefault_wants_learners());
    return check_failures;
}

/* A learner that writes more pages than CP_PREFAULT_MAX_WRITTEN. */
static int big_learner(void *ud)
{
    mem *m = ud;
    for (size_t p = 0; p < m->anon_pages; p++) m->anon[p * page] = 3;
    return cp_prefault_learn() == 1 ? 0 : 1;
}

static int big_applier(void *ud)
{
    mem *m = ud;
    cp_prefault_apply();
    return own_copy(m->anon + 5 * page) ? 1 : 0; /* too many to copy: none is */
}

static int case_too_many_written(void *ud)
{
    (void)ud;
    mem m;
    if (map_mem(&m, CP_PREFAULT_MAX_WRITTEN + 64) || cp_prefault_init() != 0) return 50;
    CHECK(in_child(big_learner, &m) == 0);
    CHECK(cp_prefault_marked() > CP_PREFAULT_MAX_WRITTEN);
    CHECK(in_child(big_applier, &m) == 0);
    return check_failures;
}

static int case_turned_off(void *ud)
{
    (void)ud;
    setenv("COPROC_PREFAULT", "0", 1);
    CHECK(cp_prefault_init() == -1);
    CHECK(cp_prefault_marked() == -1);
    CHECK(!cp_prefault_wants_learners());
    CHECK(cp_prefault_learn() == 0);
    cp_prefault_apply(); /* does nothing, and does not crash */
    return check_failures;
}

/* Outside a server's children (no init), nothing happens. */
static void test_without_a_server(void)
{
    CHECK(cp_prefault_marked() == -1);
    CHECK(cp_prefault_is_marked(&page) == -1);
    CHECK(cp_prefault_learn() == 0);
    cp_prefault_apply();
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    test_without_a_server();
    /* The kernel must have MADV_POPULATE_* (5.14) and pagemap flags;
     * without them prefaulting is a no-op by design, not a failure. */
    char *probe = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED || madvise(probe, page, 23 /* MADV_POPULATE_WRITE */) != 0 || !mapped(probe)) {
        printf("test_prefault: no MADV_POPULATE_WRITE or pagemap here; skipped\n");
        return check_report("test_prefault");
    }
    CHECK(in_child(case_learn_and_apply, NULL) == 0);
    CHECK(in_child(case_too_many_written, NULL) == 0);
    CHECK(in_child(case_turned_off, NULL) == 0);
    return check_report("test_prefault");
}
