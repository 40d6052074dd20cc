/* proctrack.h: the set of processes a monitor samples: a root pid and
 * (optionally) its descendants, each with its /proc files kept open so a
 * sample costs one pread of statm and one clock_gettime per process and no
 * directory scan. No Lua here.
 *
 * A kept-open /proc/<pid>/... descriptor refers to that process, not to the
 * number: once the process is reaped the read fails with ESRCH, so a reused
 * pid can never be mistaken for the old process. CPU time comes from the
 * process CPU clock (clock_getcpuclockid: every thread, exited ones too, in
 * ns), which is named by pid number; it is read BEFORE statm, so a statm read
 * that succeeds proves the pid still belonged to the same process when the
 * clock was read. /proc/<pid>/stat (3x the cost of statm; opened by path,
 * and the start time in it checked, so it cannot be another process's) is
 * read only to
 * identify a process when it is added, at every rescan (name, state), when
 * its virtual size changes (exec replaces the address space, and the name
 * with it), and when it has no memory left (a zombie: its state).
 * The tree is rescanned only when asked (cp_proctrack_rescan): the caller does
 * it every few samples and whenever a tracked process vanished. A rescan
 * reads the kept-open children file of each single-threaded tracked process
 * (one pread) and walks /proc/<pid>/task/ only for the others and for
 * processes not tracked yet. */
#ifndef CP_PROCTRACK_H
#define CP_PROCTRACK_H

#include "procstat.h"

typedef struct cp_proctrack_entry {
    pid_t pid, ppid;
    unsigned long long start; /* start ticks: identity together with pid */
    unsigned long long id;    /* 1, 2, ...: never reused within one tracker */
    int statm_fd;             /* /proc/<pid>/statm */
    int children_fd;          /* /proc/<pid>/task/<pid>/children, -1 if none */
    long threads;             /* at the last stat read */
    int smaps_fd;             /* /proc/<pid>/smaps_rollup, -1 if unreadable */
    int have_clock;           /* clock is usable; else CPU from stat ticks */
    clockid_t clock;          /* the process CPU clock */
    unsigned long long vms;   /* last virtual size, to notice an exec */
    long long pss, uss;       /* last smaps values, carried between smaps reads */
    int renamed;              /* name is new or changed: set here, cleared by
                                 the caller once it has taken the name */
    char state;
    char name[17];
} cp_proctrack_entry;

typedef struct cp_proctrack {
    pid_t root;
    pid_t prune;            /* subtree left out (the monitor itself), 0: none */
    int include_children;
    cp_proctrack_entry *e;  /* tracked processes, root first when alive */
    size_t n, cap;
    unsigned long long next_id;
    pid_t *scan;            /* scratch for rescans */
    size_t scan_cap;
    char buf[2048];         /* read buffer reused by every sample */
} cp_proctrack;

/* Start tracking root (and its descendants when include_children), leaving
 * out the subtree of prune (> 0). Opens the files and scans once. Returns 0,
 * or -1 with errno ESRCH when root does not exist (ENOMEM on allocation). */
int  cp_proctrack_init(cp_proctrack *t, pid_t root, int include_children, pid_t prune);
void cp_proctrack_free(cp_proctrack *t);

/* Re-read the tree: new descendants are added (their files opened), gone
 * ones closed and dropped, and the name and state of the others re-read.
 * Returns the number tracked, or -1 on ENOMEM. */
long cp_proctrack_rescan(cp_proctrack *t);

/* Sample every tracked process into out (cap entries; pass cap >= t->n).
 * pss/uss are re-read when with_smaps, otherwise the last values are
 * repeated. A process that is gone is dropped and counted in *vanished.
 * Returns the number of samples written; with cap >= t->n, out[k] is the
 * sample of t->e[k]. */
size_t cp_proctrack_sample(cp_proctrack *t, cp_procsample *out, size_t cap,
                           int with_smaps, size_t *vanished);

#endif
