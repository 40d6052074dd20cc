/* proctrack.c: see proctrack.h. */
#include "proctrack.h"
#include "forksrv.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void entry_close(cp_proctrack_entry *e)
{
    if (e->statm_fd >= 0) close(e->statm_fd);
    if (e->children_fd >= 0) close(e->children_fd);
    if (e->smaps_fd >= 0) close(e->smaps_fd);
    e->statm_fd = e->children_fd = e->smaps_fd = -1;
}

static long find(const cp_proctrack *t, pid_t pid)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->e[i].pid == pid) return (long)i;
    return -1;
}

static int open_proc(pid_t pid, const char *file)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* Re-read e's stat into s: name (renamed set when it changed), state, ppid.
 * Returns 0, 1 when the process runs a new image (its name or its stack
 * start changed: an exec), or -1 when it is gone (or is another one). */
static int restat(cp_proctrack *t, cp_proctrack_entry *e, cp_procsample *s)
{
    int fd = open_proc(e->pid, "stat");
    if (fd < 0) return -1;
    long n = cp_procstat_pread(fd, t->buf, sizeof t->buf);
    close(fd);
    /* (pid, start) names the process: a reused pid has a later start. */
    if (n <= 0 || cp_procstat_parse_stat(t->buf, (size_t)n, s) || s->start != e->start) return -1;
    /* A fork server found in the instant before it took its name. */
    if (strcmp(s->name, CP_FORKSRV_NAME) == 0) return -1;
    e->threads = s->threads;
    e->state = s->state;
    e->ppid = s->ppid;
    int exec = s->stack != e->stack && s->stack != 0;
    e->stack = s->stack;
    if (strcmp(e->name, s->name) != 0) {
        memcpy(e->name, s->name, sizeof e->name);
        e->renamed = 1;
        exec = 1;
    }
    return exec;
}

/* Read e's smaps_rollup (rss: its RSS now, the base of later estimates).
 * An ESRCH from a live process means the file still points at an address
 * space the process left (an exec we did not see): reopen once. */
static void read_smaps(cp_proctrack *t, cp_proctrack_entry *e, unsigned long long rss)
{
    e->smaps_due = 0;
    if (e->smaps_fd < 0) return;
    cp_procsample m;
    long n = cp_procstat_pread(e->smaps_fd, t->buf, sizeof t->buf);
    t->smaps_reads++;
    if (n < 0 && errno == ESRCH && e->state != 'Z') {
        close(e->smaps_fd);
        e->smaps_fd = open_proc(e->pid, "smaps_rollup");
        if (e->smaps_fd < 0) return; /* exiting: keep the last values */
        n = cp_procstat_pread(e->smaps_fd, t->buf, sizeof t->buf);
        t->smaps_reads++;
    }
    if (n > 0 && cp_procstat_parse_smaps(t->buf, (size_t)n, &m) == 0) {
        e->pss = m.pss;
        e->uss = m.uss;
        e->smaps_rss = rss;
    } else if (e->state == 'Z' || n == 0) {
        e->pss = e->uss = 0; /* a zombie has no memory left */
        e->smaps_rss = rss;
    }
}

/* After an exec: the old smaps_rollup describes the old program. */
static void reopen_smaps(cp_proctrack *t, cp_proctrack_entry *e, unsigned long long rss)
{
    if (e->smaps_fd >= 0) close(e->smaps_fd);
    e->smaps_fd = open_proc(e->pid, "smaps_rollup");
    e->pss = e->uss = -1; /* unknown unless the new program is readable */
    read_smaps(t, e, rss);
}

/* The parent of pid and the parent's children: their sharing changed when
 * pid appeared or exited, so their PSS is re-read at the next sample. */
static void family_due(cp_proctrack *t, pid_t ppid)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->e[i].pid == ppid || t->e[i].ppid == ppid) t->e[i].smaps_due = 1;
}

/* Open and identify pid; appends it. 0 added, 1 gone already, -1 ENOMEM. */
static int add(cp_proctrack *t, pid_t pid)
{
    int fd = open_proc(pid, "stat"); /* for this identification only */
    if (fd < 0) return 1;
    int mfd = open_proc(pid, "statm");
    if (mfd < 0) { close(fd); return 1; }
    /* The clock first, then stat: stat read after it proves the pid was
     * this process's when the clock was made (see proctrack.h). */
    clockid_t clk;
    struct timespec ts;
    int have_clock = clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0;
    cp_procsample s;
    long n = cp_procstat_pread(fd, t->buf, sizeof t->buf);
    close(fd);
    unsigned long long vms, rss, code;
    long nm = n > 0 && cp_procstat_parse_stat(t->buf, (size_t)n, &s) == 0
                  ? cp_procstat_pread(mfd, t->buf, sizeof t->buf) : -1;
    if (nm <= 0 || cp_procstat_parse_statm(t->buf, (size_t)nm, &vms, &rss, &code)) {
        close(mfd);
        return 1;
    }
    /* coproc's own fork server is machinery, not one of the processes
     * (forksrv.h): left out like the monitor itself. */
    if (strcmp(s.name, CP_FORKSRV_NAME) == 0) {
        close(mfd);
        return 1;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        cp_proctrack_entry *e = realloc(t->e, cap * sizeof *e);
        if (!e) { close(mfd); return -1; }
        t->e = e;
        t->cap = cap;
    }
    cp_proctrack_entry *e = &t->e[t->n++];
    memset(e, 0, sizeof *e);
    e->pid = pid;
    e->ppid = s.ppid;
    e->start = s.start;
    e->id = ++t->next_id;
    e->statm_fd = mfd;
    e->threads = s.threads;
    /* Missing without CONFIG_PROC_CHILDREN: rescans then scan all of /proc. */
    char path[64];
    snprintf(path, sizeof path, "task/%d/children", (int)pid);
    e->children_fd = open_proc(pid, path);
    e->have_clock = have_clock;
    e->clock = clk;
    e->code = code;
    size_t len = (size_t)nm < sizeof e->statm ? (size_t)nm : sizeof e->statm;
    memcpy(e->statm, t->buf, len);
    e->statm_len = (unsigned char)len;
    e->stack = s.stack;
    e->state = s.state;
    e->renamed = 1;
    e->pss = e->uss = -1;
    memcpy(e->name, s.name, sizeof e->name);
    /* smaps_rollup needs ptrace-read access; without it PSS/USS stay unknown. */
    e->smaps_fd = open_proc(pid, "smaps_rollup");
    read_smaps(t, e, rss); /* so the next samples have values */
    return 0;
}

static void drop(cp_proctrack *t, size_t i)
{
    pid_t ppid = t->e[i].ppid;
    entry_close(&t->e[i]);
    /* Keep order (root first, then discovery order) for stable output. */
    memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof *t->e);
    t->n--;
    family_due(t, ppid);
}

int cp_proctrack_init(cp_proctrack *t, pid_t root, int include_children, pid_t prune)
{
    memset(t, 0, sizeof *t);
    t->root = root;
    t->prune = prune;
    t->include_children = include_children;
    int r = add(t, root);
    if (r) {
        cp_proctrack_free(t);
        errno = r < 0 ? ENOMEM : ESRCH;
        return -1;
    }
    if (cp_proctrack_rescan(t) < 0) {
        cp_proctrack_free(t);
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

void cp_proctrack_free(cp_proctrack *t)
{
    for (size_t i = 0; i < t->n; i++) entry_close(&t->e[i]);
    free(t->e);
    cp_pidvec_free(&t->scan);
    t->e = NULL;
    t->n = t->cap = 0;
}

/* The walk's source of children: a tracked process with one thread (at its
 * last stat read) through its kept-open children file, the others through
 * every task's children file, or the /proc scan (ud) without them. */
typedef struct { cp_proctrack *t; cp_ppid_table *table; } walk_ctx;

static int track_children(void *ud, pid_t parent, pid_t prune, cp_pidvec *out)
{
    walk_ctx *w = ud;
    if (w->table) return cp_procstat_table_children(w->table, parent, prune, out);
    long i = find(w->t, parent);
    if (i >= 0 && w->t->e[i].children_fd >= 0 && w->t->e[i].threads == 1) {
        char buf[8192];
        long n = cp_procstat_pread(w->t->e[i].children_fd, buf, sizeof buf);
        return n > 0 ? cp_procstat_parse_children(buf, (size_t)n, prune, out) : 0;
    }
    return cp_procstat_task_children(NULL, parent, prune, out);
}

long cp_proctrack_rescan(cp_proctrack *t)
{
    t->scan.n = 0;
    if (t->include_children) {
        cp_ppid_table table = {0};
        walk_ctx w = {t, NULL};
        if (!cp_procstat_have_children_files()) {
            if (cp_procstat_ppid_table(&table)) return -1;
            w.table = &table;
        }
        long m = cp_procstat_walk(t->root, t->prune, track_children, &w, &t->scan);
        cp_procstat_ppid_table_free(&table);
        if (m < 0) return -1;
    }
    /* Drop the tracked processes that left the tree (exited, or re-parented
     * away); the root stays until it is gone. */
    for (size_t i = 0; i < t->n;) {
        int keep = t->e[i].pid == t->root || cp_pidvec_has(&t->scan, t->e[i].pid);
        cp_procsample s;
        if (keep && restat(t, &t->e[i], &s) >= 0) i++; /* a name follows exec */
        else drop(t, i);
    }
    for (size_t k = 0; k < t->scan.n; k++) {
        if (find(t, t->scan.v[k]) >= 0) continue;
        int r = add(t, t->scan.v[k]);
        if (r < 0) return -1;
        if (r == 0) family_due(t, t->e[t->n - 1].ppid);
    }
    return (long)t->n;
}

/* Mark the round robin's share of this sample as due. */
static void pick_smaps(cp_proctrack *t, double share)
{
    if (t->n == 0) return;
    size_t k;
    if (share >= 1) {
        k = t->n;
    } else {
        t->smaps_credit += (share > 0 ? share : 0) * (double)t->n;
        k = (size_t)floor(t->smaps_credit);
        t->smaps_credit -= (double)k;
        if (k > t->n) k = t->n;
    }
    for (size_t j = 0; j < k; j++) t->e[(t->smaps_cursor + j) % t->n].smaps_due = 1;
    t->smaps_cursor = (t->smaps_cursor + k) % t->n;
}

/* Last PSS (or USS) moved by the RSS change since it was read. */
static long long estimate(long long v, unsigned long long rss, unsigned long long base)
{
    if (v < 0) return -1;
    long long e = v + ((long long)rss - (long long)base);
    return e > 0 ? e : 0;
}

size_t cp_proctrack_sample(cp_proctrack *t, cp_procsample *out, size_t cap,
                           double smaps_share, size_t *vanished)
{
    size_t k = 0, gone = 0;
    pick_smaps(t, smaps_share);
    for (size_t i = 0; i < t->n && k < cap;) {
        cp_proctrack_entry *e = &t->e[i];
        cp_procsample *s = &out[k];
        struct timespec ts;
        int clock_ok = e->have_clock && clock_gettime(e->clock, &ts) == 0;
        long n = cp_procstat_pread(e->statm_fd, t->buf, sizeof t->buf);
        unsigned long long code = 0;
        /* statm after the clock: success proves the clock was this process's. */
        if (n <= 0 || cp_procstat_parse_statm(t->buf, (size_t)n, &s->vms, &s->rss, &code)
            || (e->have_clock && !clock_ok)) {
            drop(t, i);
            gone++;
            continue;
        }
        /* stat only when needed: no clock, no memory (a zombie, or exiting:
         * its state), or memory that moved (maybe an exec: name, stack). */
        size_t len = (size_t)n < sizeof e->statm ? (size_t)n : sizeof e->statm;
        int moved = len != e->statm_len || memcmp(t->buf, e->statm, len) != 0;
        if (moved) {
            memcpy(e->statm, t->buf, len);
            e->statm_len = (unsigned char)len;
        }
        if (!e->have_clock || s->vms == 0 || moved) {
            int r = restat(t, e, s);
            if (r < 0) {
                drop(t, i);
                gone++;
                continue;
            }
            if ((code != e->code || r == 1) && s->vms != 0) reopen_smaps(t, e, s->rss);
            e->code = code;
        }
        if (clock_ok) {
            s->cpu_ns = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
            s->cpu_ticks = s->cpu_ns / (1000000000ull / (unsigned long long)cp_procstat_hz());
        }
        s->pid = e->pid;
        s->ppid = e->ppid;
        s->start = e->start;
        s->state = e->state;
        s->threads = e->threads;
        memcpy(s->name, e->name, sizeof s->name);
        if (e->smaps_due) read_smaps(t, e, s->rss);
        s->pss = estimate(e->pss, s->rss, e->smaps_rss);
        s->uss = estimate(e->uss, s->rss, e->smaps_rss);
        k++;
        i++;
    }
    if (vanished) *vanished = gone;
    return k;
}
