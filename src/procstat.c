/* procstat.c: see procstat.h. */
#include "procstat.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

long cp_procstat_hz(void)
{
    static long hz;
    if (!hz) {
        hz = sysconf(_SC_CLK_TCK);
        if (hz <= 0) hz = 100;
    }
    return hz;
}

long cp_procstat_pagesize(void)
{
    static long ps;
    if (!ps) {
        ps = sysconf(_SC_PAGESIZE);
        if (ps <= 0) ps = 4096;
    }
    return ps;
}

/* Parse an unsigned decimal at *p, skipping leading spaces; advances *p. */
static int next_ull(const char **p, const char *end, unsigned long long *v)
{
    const char *q = *p;
    while (q < end && *q == ' ') q++;
    if (q >= end || !isdigit((unsigned char)*q)) {
        /* Negative fields (priority, nice) are skipped as words. */
        if (q < end && *q == '-') {
            while (q < end && *q != ' ') q++;
            *p = q;
            *v = 0;
            return 0;
        }
        return -1;
    }
    unsigned long long x = 0;
    while (q < end && isdigit((unsigned char)*q)) x = x * 10 + (unsigned)(*q++ - '0');
    *p = q;
    *v = x;
    return 0;
}

int cp_procstat_parse_stat(const char *text, size_t n, cp_procsample *s)
{
    const char *end = text + n;
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
     * it ends at the LAST ')'. */
    const char *open = memchr(text, '(', n);
    const char *close = NULL;
    for (const char *q = end; q > text; q--)
        if (q[-1] == ')') { close = q - 1; break; }
    if (!open || !close || close < open) return -1;

    const char *p = text;
    unsigned long long v;
    if (next_ull(&p, open, &v)) return -1;
    s->pid = (pid_t)v;
    size_t cl = (size_t)(close - open - 1);
    if (cl > sizeof s->name - 1) cl = sizeof s->name - 1;
    memcpy(s->name, open + 1, cl);
    s->name[cl] = '\0';

    p = close + 1;
    while (p < end && *p == ' ') p++;
    if (p >= end) return -1;
    s->state = *p++;
    /* Fields 4.. after the state; we want 4 ppid, 14 utime, 15 stime,
     * 22 starttime, 23 vsize, 24 rss (pages). */
    unsigned long long f[29] = {0};
    for (int i = 4; i <= 24; i++)
        if (next_ull(&p, end, &f[i])) return -1;
    for (int i = 25; i <= 28; i++) /* optional: older or odd formats stop earlier */
        if (next_ull(&p, end, &f[i])) break;
    s->ppid = (pid_t)f[4];
    s->threads = (long)f[20];
    s->cpu_ticks = f[14] + f[15];
    s->cpu_ns = s->cpu_ticks * (1000000000ull / (unsigned long long)cp_procstat_hz());
    s->start = f[22];
    s->vms = f[23];
    s->rss = f[24] * (unsigned long long)cp_procstat_pagesize();
    s->stack = f[28];
    return 0;
}

int cp_procstat_parse_statm(const char *text, size_t n, unsigned long long *vms,
                            unsigned long long *rss, unsigned long long *code)
{
    const char *p = text, *end = text + n;
    unsigned long long size, res, shared, txt;
    if (next_ull(&p, end, &size) || next_ull(&p, end, &res)) return -1;
    unsigned long long ps = (unsigned long long)cp_procstat_pagesize();
    *vms = size * ps;
    *rss = res * ps;
    if (code) {
        if (next_ull(&p, end, &shared) || next_ull(&p, end, &txt)) return -1;
        *code = txt * ps;
    }
    return 0;
}

/* Value in kB of the line starting with key (key includes the ':'), in bytes;
 * -1 when absent. */
static long long smaps_field(const char *text, size_t n, const char *key)
{
    size_t kl = strlen(key);
    const char *end = text + n;
    const char *p = text;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if ((size_t)(eol - p) > kl && memcmp(p, key, kl) == 0) {
            const char *q = p + kl;
            unsigned long long v;
            if (next_ull(&q, eol, &v)) return -1;
            return (long long)v * 1024;
        }
        p = eol + 1;
    }
    return -1;
}

int cp_procstat_parse_smaps(const char *text, size_t n, cp_procsample *s)
{
    long long pss = smaps_field(text, n, "Pss:");
    if (pss < 0) return -1;
    long long pc = smaps_field(text, n, "Private_Clean:");
    long long pd = smaps_field(text, n, "Private_Dirty:");
    long long ph = smaps_field(text, n, "Private_Hugetlb:");
    s->pss = pss;
    s->uss = (pc > 0 ? pc : 0) + (pd > 0 ? pd : 0) + (ph > 0 ? ph : 0);
    return 0;
}

long cp_procstat_pread(int fd, char *buf, size_t cap)
{
    if (cap < 2) { errno = EINVAL; return -1; }
    /* One read: a /proc seq_file hands over everything it has (up to the
     * buffer's size) in one read, so a short read is the end. Asking again
     * to see EOF is not free: a pread at an offset > 0 makes the kernel
     * format the whole file again to skip to it. A full buffer is a
     * truncation: callers size buffers for the fields they need. */
    ssize_t r;
    do r = pread(fd, buf, cap - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    buf[r] = '\0';
    return (long)r;
}

static long read_path(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    long n = cp_procstat_pread(fd, buf, cap);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

int cp_procstat_read(pid_t pid, cp_procsample *s, int with_smaps)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    long n = read_path(path, buf, sizeof buf);
    if (n < 0) return -1;
    if (n == 0) { errno = ESRCH; return -1; }
    if (cp_procstat_parse_stat(buf, (size_t)n, s)) { errno = EPROTO; return -1; }
    s->pss = s->uss = -1;
    if (with_smaps) {
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
        n = read_path(path, buf, sizeof buf);
        if (n > 0) cp_procstat_parse_smaps(buf, (size_t)n, s);
    }
    return 0;
}

int cp_procstat_exists(pid_t pid)
{
    if (pid <= 0) return 0;
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return stat(path, &st) == 0;
}

int cp_pidvec_push(cp_pidvec *a, pid_t p)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        pid_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) { errno = ENOMEM; return -1; }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = p;
    return 0;
}

int cp_pidvec_has(const cp_pidvec *a, pid_t p)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] == p) return 1;
    return 0;
}

void cp_pidvec_free(cp_pidvec *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

int cp_procstat_parse_children(const char *text, size_t n, pid_t prune, cp_pidvec *out)
{
    const char *p = text, *end = text + n;
    unsigned long long v;
    while (p < end) {
        while (p < end && !isdigit((unsigned char)*p)) p++;
        if (p >= end || next_ull(&p, end, &v)) break;
        if ((pid_t)v != prune && cp_pidvec_push(out, (pid_t)v)) return -1;
    }
    return 0;
}

static int is_pid_name(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

int cp_procstat_have_children_files(void)
{
    static int have = -1;
    if (have < 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
        have = access(path, R_OK) == 0;
    }
    return have;
}

int cp_procstat_task_children(void *ud, pid_t parent, pid_t prune, cp_pidvec *out)
{
    (void)ud;
    char path[96], buf[8192]; /* ~7 bytes per child */
    snprintf(path, sizeof path, "/proc/%d/task", (int)parent);
    DIR *d = opendir(path);
    if (!d) return 0; /* gone */
    struct dirent *e;
    int r = 0;
    while (r == 0 && (e = readdir(d))) {
        if (!is_pid_name(e->d_name)) continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.16s/children", (int)parent, e->d_name);
        long n = read_path(path, buf, sizeof buf);
        if (n > 0) r = cp_procstat_parse_children(buf, (size_t)n, prune, out);
    }
    closedir(d);
    return r;
}

int cp_procstat_ppid_table(cp_ppid_table *t)
{
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    char path[300], buf[512];
    int r = 0;
    while (r == 0 && (e = readdir(d))) {
        if (!is_pid_name(e->d_name)) continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        long n = read_path(path, buf, sizeof buf);
        cp_procsample s;
        if (n <= 0 || cp_procstat_parse_stat(buf, (size_t)n, &s)) continue; /* vanished */
        r = cp_pidvec_push(&t->pid, s.pid) || cp_pidvec_push(&t->ppid, s.ppid) ? -1 : 0;
    }
    closedir(d);
    if (r) cp_procstat_ppid_table_free(t);
    return r;
}

void cp_procstat_ppid_table_free(cp_ppid_table *t)
{
    cp_pidvec_free(&t->pid);
    cp_pidvec_free(&t->ppid);
}

int cp_procstat_table_children(void *ud, pid_t parent, pid_t prune, cp_pidvec *out)
{
    const cp_ppid_table *t = ud;
    for (size_t i = 0; i < t->pid.n; i++)
        if (t->ppid.v[i] == parent && t->pid.v[i] != prune && cp_pidvec_push(out, t->pid.v[i]))
            return -1;
    return 0;
}

long cp_procstat_walk(pid_t root, pid_t prune, cp_children_fn children, void *ud,
                      cp_pidvec *out)
{
    cp_pidvec kids = {0};
    out->n = 0;
    pid_t parent = root;
    /* Breadth first: out doubles as the queue. A process can be listed twice
     * when it is re-parented (to a subreaper inside the tree) between two
     * reads, and pids can be reused: keep the first sighting only. */
    for (size_t qi = 0;; qi++) {
        kids.n = 0;
        if (children(ud, parent, prune, &kids)) goto oom;
        for (size_t k = 0; k < kids.n; k++) {
            pid_t c = kids.v[k];
            if (c == root || c == prune || cp_pidvec_has(out, c)) continue;
            if (cp_pidvec_push(out, c)) goto oom;
        }
        if (qi >= out->n) break;
        parent = out->v[qi];
    }
    cp_pidvec_free(&kids);
    return (long)out->n;
oom:
    cp_pidvec_free(&kids);
    errno = ENOMEM;
    return -1;
}

long cp_procstat_descendants(pid_t root, pid_t prune, cp_pidvec *out)
{
    if (cp_procstat_have_children_files())
        return cp_procstat_walk(root, prune, cp_procstat_task_children, NULL, out);
    cp_ppid_table t = {0};
    if (cp_procstat_ppid_table(&t)) return -1;
    long n = cp_procstat_walk(root, prune, cp_procstat_table_children, &t, out);
    cp_procstat_ppid_table_free(&t);
    return n;
}
