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
    unsigned long long stack;     /* start of the main stack (stat field 28):
                                     moves at every exec under ASLR; 0 when
                                     hidden (another user's process) */
    char state;                   /* 'R', 'S', 'Z', ... */
    char name[17];                /* comm, NUL-terminated */
} cp_procsample;

/* Clock ticks per second and page size (cached sysconf). */
long cp_procstat_hz(void);
long cp_procstat_pagesize(void);

/* Parse the text of /proc/<pid>/stat (n bytes, need not be NUL-terminated)
 * into s (pid, ppid, state, name, threads, cpu_ticks, cpu_ns, start, vms, rss,
 * stack); pss and uss are left alone. Returns 0, or -1 when the text is malformed. */
int cp_procstat_parse_stat(const char *text, size_t n, cp_procsample *s);

/* Parse /proc/<pid>/statm text: size, resident and text (code), in pages,
 * into *vms, *rss and *code (bytes; code may be NULL). The code size changes
 * only when the process execs another program. Returns 0, or -1 when
 * malformed. */
int cp_procstat_parse_statm(const char *text, size_t n, unsigned long long *vms,
                            unsigned long long *rss, unsigned long long *code);

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

/* A growable list of pids. Zero-initialise; cp_pidvec_free releases it. */
typedef struct cp_pidvec {
    pid_t *v;
    size_t n, cap;
} cp_pidvec;

/* Append p. Returns 0, or -1 with errno ENOMEM. */
int  cp_pidvec_push(cp_pidvec *a, pid_t p);
/* 1 if p is in the list. */
int  cp_pidvec_has(const cp_pidvec *a, pid_t p);
void cp_pidvec_free(cp_pidvec *a);

/* Parse the text of a /proc/<pid>/task/<tid>/children file (pids separated
 * by spaces) and append each pid but prune to out. Returns 0, or -1 on
 * ENOMEM. */
int cp_procstat_parse_children(const char *text, size_t n, pid_t prune, cp_pidvec *out);

/* Where a walk gets the children of one process: appends them (all but
 * prune) to out. Returns 0, or -1 on ENOMEM. A process that is gone has no
 * children. */
typedef int (*cp_children_fn)(void *ud, pid_t parent, pid_t prune, cp_pidvec *out);

/* A cp_children_fn reading every /proc/<parent>/task/<tid>/children file
 * (ud unused). Needs CONFIG_PROC_CHILDREN: see cp_procstat_have_children_files. */
int cp_procstat_task_children(void *ud, pid_t parent, pid_t prune, cp_pidvec *out);
/* 1 when the kernel has children files. */
int cp_procstat_have_children_files(void);

/* Every process's parent, from one scan of every /proc/<pid>/stat: the source of
 * children on kernels without children files (cost: the whole system). */
typedef struct cp_ppid_table {
    cp_pidvec pid, ppid; /* pid.v[i]'s parent is ppid.v[i] */
} cp_ppid_table;
/* Fill t (zero-initialised). Returns 0, or -1 with errno set. */
int  cp_procstat_ppid_table(cp_ppid_table *t);
void cp_procstat_ppid_table_free(cp_ppid_table *t);
/* A cp_children_fn over a cp_ppid_table (ud). */
int  cp_procstat_table_children(void *ud, pid_t parent, pid_t prune, cp_pidvec *out);

/* The one walk over a process tree: out (emptied first) gets every
 * descendant of root, breadth first, each at most once, root never; the
 * subtree of prune (> 0) is left out. children() says who the children of a
 * process are. Returns the count, or -1 on ENOMEM. */
long cp_procstat_walk(pid_t root, pid_t prune, cp_children_fn children, void *ud,
                      cp_pidvec *out);

/* The descendants of root from whichever source this kernel has (children
 * files, else a /proc scan). Returns the count, or -1 with errno set. */
long cp_procstat_descendants(pid_t root, pid_t prune, cp_pidvec *out);

#endif
