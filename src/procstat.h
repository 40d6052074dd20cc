/* procstat.h: reading one process's memory and CPU counters, and finding a
 * process's descendants, from /proc. No Lua here.
 *
 * Reads use open/read (or pread on a kept-open descriptor) into a caller
 * buffer, never stdio: the monitor calls these every few milliseconds. */
#ifndef CP_PROCSTAT_H
#define CP_PROCSTAT_H

#include <stddef.h>
#include <sys/types.h>

typedef struct cp_procsample {
    pid_t pid;
    pid_t ppid;
    unsigned long long start;     /* start time in clock ticks after boot:
                                     (pid, start) names a process even when
                                     the pid number is reused */
    unsigned long long cpu_ticks; /* utime + stime, clock ticks */
    unsigned long long cpu_ns;    /* CPU time of all threads, ns (from the
                                     process CPU clock when sampled by
                                     proctrack, else cpu_ticks converted) */
    unsigned long long vms;       /* virtual size, bytes */
    unsigned long long rss;       /* resident set, bytes */
    long long pss;                /* proportional set, bytes; -1 if unknown */
    long long uss;                /* private (unique) set, bytes; -1 if unknown */
    long threads;                 /* number of threads */
    char state;                   /* 'R', 'S', 'Z', ... */
    char name[17];                /* comm, NUL-terminated */
} cp_procsample;

/* Clock ticks per second and page size (cached sysconf). */
long cp_procstat_hz(void);
long cp_procstat_pagesize(void);

/* Parse the text of /proc/<pid>/stat (n bytes, need not be NUL-terminated)
 * into s (pid, ppid, state, name, threads, cpu_ticks, cpu_ns, start, vms, rss); pss and uss are
 * left alone. Returns 0, or -1 when the text is malformed. */
int cp_procstat_parse_stat(const char *text, size_t n, cp_procsample *s);

/* Parse /proc/<pid>/statm text: the first two fields, size and resident,
 * in pages, into *vms and *rss (bytes). Returns 0, or -1 when malformed. */
int cp_procstat_parse_statm(const char *text, size_t n, unsigned long long *vms,
                            unsigned long long *rss);

/* Parse /proc/<pid>/smaps_rollup text: sets pss and uss (Private_Clean +
 * Private_Dirty + Private_Hugetlb). Returns 0, or -1 when Pss is missing. */
int cp_procstat_parse_smaps(const char *text, size_t n, cp_procsample *s);

/* Read the whole of a /proc file from offset 0 of the open descriptor fd into
 * buf (cap bytes, NUL-terminated on success): one pread when the file fits,
 * since a short read of a /proc file is its end. Returns the length, or -1
 * with errno set (ESRCH once the process is gone). */
long cp_procstat_pread(int fd, char *buf, size_t cap);

/* One-shot read of /proc/<pid>/stat, and of smaps_rollup when with_smaps
 * (pss/uss stay -1 when it is unreadable). Returns 0, or -1 with errno set
 * (ENOENT/ESRCH: no such process). */
int cp_procstat_read(pid_t pid, cp_procsample *s, int with_smaps);

/* 1 if /proc/<pid> exists (any state, zombies included), else 0. */
int cp_procstat_exists(pid_t pid);

/* Descendants of root (not root itself), found by scanning the ppid of every
 * /proc/[0-9]* entry. Writes up to cap pids into out and returns how many
 * descendants exist (may exceed cap: call again with a larger array), or -1
 * with errno set if /proc cannot be read. A process that vanishes during the
 * scan is skipped; the subtree of pid `prune` (> 0) is left out. */
long cp_procstat_descendants(pid_t root, pid_t prune, pid_t *out, size_t cap);

/* Same answer, walking /proc/<pid>/task/<tid>/children from root: cost
 * proportional to the tree, not to the whole system. Returns -2 when the
 * kernel has no children files (CONFIG_PROC_CHILDREN), so the caller falls
 * back to cp_procstat_descendants. */
long cp_procstat_descendants_fast(pid_t root, pid_t prune, pid_t *out, size_t cap);

#endif
