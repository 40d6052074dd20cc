/* proctrack.c: see proctrack.h. */
#include "proctrack.h"

#include <dirent.h>
#include <errno.h>
#include <time.h>
#include <fcntl.h>
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

/* Re-read e's stat into s: name (renamed set when it changed), state, ppid.
 * Returns 0, or -1 when the process is gone (or is another one). */
static int restat(cp_proctrack *t, cp_proctrack_entry *e, cp_procsample *s)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)e->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    long n = cp_procstat_pread(fd, t->buf, sizeof t->buf);
    close(fd);
    /* (pid, start) names the process: a reused pid has a later start. */
    if (n <= 0 || cp_procstat_parse_stat(t->buf, (size_t)n, s) || s->start != e->start) return -1;
    e->threads = s->threads;
    if (strcmp(e->name, s->name) != 0) {
        memcpy(e->name, s->name, sizeof e->name);
        e->renamed = 1;
    }
    e->state = s->state;
    e->ppid = s->ppid;
    return 0;
}

static void read_smaps(cp_proctrack *t, cp_proctrack_entry *e)
{
    cp_procsample m;
    long n = cp_procstat_pread(e->smaps_fd, t->buf, sizeof t->buf);
    if (n > 0 && cp_procstat_parse_smaps(t->buf, (size_t)n, &m) == 0) {
        e->pss = m.pss;
        e->uss = m.uss;
    } else if (e->state == 'Z' || n == 0) {
        e->pss = e->uss = 0; /* a zombie has no memory left */
    }
}

/* Open and identify pid; appends it. 0 added, 1 gone already, -1 ENOMEM. */
static int add(cp_proctrack *t, pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* for this identification only */
    if (fd < 0) return 1;
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    int mfd = open(path, O_RDONLY | O_CLOEXEC);
    if (mfd < 0) { close(fd); return 1; }
    /* The clock first, then stat: stat read after it proves the pid was
     * this process's when the clock was made (see proctrack.h). */
    clockid_t clk;
    struct timespec ts;
    int have_clock = clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0;
    cp_procsample s;
    long n = cp_procstat_pread(fd, t->buf, sizeof t->buf);
    close(fd);
    if (n <= 0 || cp_procstat_parse_stat(t->buf, (size_t)n, &s)) {
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
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    e->children_fd = open(path, O_RDONLY | O_CLOEXEC);
    e->have_clock = have_clock;
    e->clock = clk;
    e->vms = s.vms;
    e->state = s.state;
    e->renamed = 1;
    e->pss = e->uss = -1;
    memcpy(e->name, s.name, sizeof e->name);
    /* smaps_rollup needs ptrace-read access; without it PSS/USS stay unknown. */
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    e->smaps_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (e->smaps_fd >= 0) read_smaps(t, e); /* so samples before the next smaps round have values */
    return 0;
}

static void drop(cp_proctrack *t, size_t i)
{
    entry_close(&t->e[i]);
    /* Keep order (root first, then discovery order) for stable output. */
    memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof *t->e);
    t->n--;
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
    free(t->scan);
    t->e = NULL;
    t->scan = NULL;
    t->n = t->cap = t->scan_cap = 0;
}

static int scan_push(cp_proctrack *t, size_t *m, pid_t pid)
{
    if (*m == t->scan_cap) {
        size_t cap = t->scan_cap ? t->scan_cap * 2 : 64;
        pid_t *v = realloc(t->scan, cap * sizeof *v);
        if (!v) return -1;
        t->scan = v;
        t->scan_cap = cap;
    }
    t->scan[(*m)++] = pid;
    return 0;
}

/* Append the pids in one children file's text (space-separated). */
static int scan_children(cp_proctrack *t, size_t *m, const char *p, long n)
{
    const char *end = p + (n > 0 ? n : 0);
    while (p < end) {
        while (p < end && (*p < '0' || *p > '9')) p++;
        if (p >= end) break;
        long v = 0;
        while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
        if ((pid_t)v != t->prune && scan_push(t, m, (pid_t)v)) return -1;
    }
    return 0;
}

/* Descendants of the root into t->scan, breadth first. A tracked process
 * with one thread (at its last stat read) is asked through its kept-open
 * children file; the others through every /proc/<pid>/task/<tid>/children.
 * Returns the count, or -1 on ENOMEM. */
static long walk(cp_proctrack *t)
{
    size_t m = 0;
    char path[96], buf[8192]; /* a children file: ~7 bytes per child */
    pid_t parent = t->root;
    for (size_t qi = 0;; qi++) {
        long i = find(t, parent);
        if (i >= 0 && t->e[i].children_fd >= 0 && t->e[i].threads == 1) {
            long n = cp_procstat_pread(t->e[i].children_fd, buf, sizeof buf);
            if (scan_children(t, &m, buf, n)) return -1;
        } else {
            snprintf(path, sizeof path, "/proc/%d/task", (int)parent);
            DIR *d = opendir(path);
            if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
                    snprintf(path, sizeof path, "/proc/%d/task/%.16s/children", (int)parent, de->d_name);
                    int fd = open(path, O_RDONLY | O_CLOEXEC);
                    if (fd < 0) continue;
                    long n = cp_procstat_pread(fd, buf, sizeof buf);
                    close(fd);
                    if (scan_children(t, &m, buf, n)) { closedir(d); return -1; }
                }
                closedir(d);
            }
        }
        if (qi >= m) break;
        parent = t->scan[qi];
    }
    return (long)m;
}

long cp_proctrack_rescan(cp_proctrack *t)
{
    long m = 0;
    if (t->include_children) {
        if (t->n && t->e[0].pid == t->root && t->e[0].children_fd >= 0) {
            m = walk(t);
            if (m < 0) return -1;
        } else {
            for (;;) {
                m = cp_procstat_descendants_fast(t->root, t->prune, t->scan, t->scan_cap);
                if (m == -2) m = cp_procstat_descendants(t->root, t->prune, t->scan, t->scan_cap);
                if (m < 0) return -1;
                if ((size_t)m <= t->scan_cap) break;
                size_t cap = (size_t)m + 16;
                pid_t *s = realloc(t->scan, cap * sizeof *s);
                if (!s) return -1;
                t->scan = s;
                t->scan_cap = cap;
            }
        }
    }
    /* Drop the tracked processes that left the tree (exited, or re-parented
     * away); the root stays until it is gone. */
    for (size_t i = 0; i < t->n;) {
        int keep = t->e[i].pid == t->root;
        for (long k = 0; !keep && k < m; k++) keep = t->scan[k] == t->e[i].pid;
        cp_procsample s;
        if (keep && restat(t, &t->e[i], &s) == 0) i++; /* a name follows exec */
        else drop(t, i);
    }
    for (long k = 0; k < m; k++)
        if (find(t, t->scan[k]) < 0 && add(t, t->scan[k]) < 0) return -1;
    return (long)t->n;
}

size_t cp_proctrack_sample(cp_proctrack *t, cp_procsample *out, size_t cap,
                           int with_smaps, size_t *vanished)
{
    size_t k = 0, gone = 0;
    for (size_t i = 0; i < t->n && k < cap;) {
        cp_proctrack_entry *e = &t->e[i];
        cp_procsample *s = &out[k];
        struct timespec ts;
        int clock_ok = e->have_clock && clock_gettime(e->clock, &ts) == 0;
        long n = cp_procstat_pread(e->statm_fd, t->buf, sizeof t->buf);
        /* statm after the clock: success proves the clock was this process's. */
        if (n <= 0 || cp_procstat_parse_statm(t->buf, (size_t)n, &s->vms, &s->rss)
            || (e->have_clock && !clock_ok)) {
            drop(t, i);
            gone++;
            continue;
        }
        /* stat only when needed: no clock, no memory (a zombie, or exiting:
         * its state), or a new address space (an exec: its name). */
        if (!e->have_clock || s->vms == 0 || s->vms != e->vms) {
            if (restat(t, e, s)) {
                drop(t, i);
                gone++;
                continue;
            }
            e->vms = s->vms;
        }
        if (clock_ok) {
            s->cpu_ns = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
            s->cpu_ticks = s->cpu_ns / (1000000000ull / (unsigned long long)cp_procstat_hz());
        }
        s->pid = e->pid;
        s->ppid = e->ppid;
        s->start = e->start;
        s->state = e->state;
        memcpy(s->name, e->name, sizeof s->name);
        if (with_smaps && e->smaps_fd >= 0) read_smaps(t, e);
        s->pss = e->pss;
        s->uss = e->uss;
        k++;
        i++;
    }
    if (vanished) *vanished = gone;
    return k;
}
