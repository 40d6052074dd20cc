/* proctrack.h: the set of processes a monitor samples: a root pid and
 * (optionally) its descendants, each with its /proc files kept open so a
 * sample costs one pread of statm and one clock_gettime per process and no
 * directory scan. No Lua here.
 *
 * Identity. A kept-open /proc/<pid>/... descriptor refers to that process,
 * not to the number: once the process is reaped the read fails with ESRCH,
 * so a reused pid can never be mistaken for the old process. CPU time comes
 * from the process CPU clock (clock_getcpuclockid: every thread, exited ones
 * too, in ns), which is named by pid number; it is read BEFORE statm, so a
 * statm read that succeeds proves the pid still belonged to the same process
 * when the clock was read. /proc/<pid>/stat (3x the cost of statm; opened by
 * path, and the start time in it checked, so it cannot be another
 * process's) is read only to identify a process when it is added, at every
 * rescan (name, state), when its statm changed (see Exec), and when it has
 * no memory left (a zombie: its state).
 *
 * Exec. statm and children follow the process across exec, smaps_rollup
 * does not: it stays bound to the address space it was opened on (and reads
 * fail with ESRCH once that is gone). Every sample compares the text of
 * statm with the last one (no system call); when it changed, stat is read
 * too, and a new code size, name or stack start (ASLR moves it at every
 * exec) reopens smaps_rollup and re-reads it at once. An exec that changes
 * none of these is caught by the ESRCH of the next smaps read, which reopens
 * too. A process whose memory does not move costs no stat read.
 *
 * PSS/USS. smaps_rollup costs 10-100 us per process, so each sample re-reads
 * it for a share of the processes (round robin, see cp_proctrack_sample),
 * for a new process, after an exec, and for the family (parent and
 * siblings) of a process that appeared or exited, whose sharing changed.
 * In between, a process's PSS and USS are its last values moved by the
 * change of its RSS since that read: new pages are private, so the total
 * follows allocation and release at once instead of in steps.
 *
 * The tree is rescanned only when asked (cp_proctrack_rescan): the caller
 * does it every few samples and whenever a tracked process vanished. A
 * rescan reads the kept-open children file of each single-threaded tracked
 * process (one pread) and every task's children file for the others. */
#ifndef CP_PROCTRACK_H
#define CP_PROCTRACK_H

#include "procstat.h"

#include <time.h>

typedef struct cp_proctrack_entry {
    pid_t pid, ppid;
    unsigned long long start; /* start ticks: identity together with pid */
    unsigned long long id;    /* 1, 2, ...: never reused within one tracker */
    int statm_fd;             /* /proc/<pid>/statm */
    int children_fd;          /* /proc/<pid>/task/<pid>/children, -1 if none */
    int smaps_fd;             /* /proc/<pid>/smaps_rollup, -1 if unreadable */
    long threads;             /* at the last stat read */
    int have_clock;           /* clock is usable; else CPU from stat ticks */
    clockid_t clock;          /* the process CPU clock */
    unsigned long long code;  /* last code (text) size, to notice an exec */
    unsigned long long stack; /* stack start at the last stat read (ditto) */
    char statm[64];           /* the last statm text (first 64 bytes) */
    unsigned char statm_len;
    long long pss, uss;       /* at the last smaps read; -1 unknown */
    unsigned long long smaps_rss; /* RSS at that read (the estimate's base) */
    int smaps_due;            /* re-read smaps at the next sample */
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
    cp_pidvec scan;         /* scratch for rescans */
    size_t smaps_cursor;    /* round robin over e[] for smaps reads */
    double smaps_credit;    /* fractional share carried between samples */
    unsigned long long smaps_reads; /* smaps_rollup reads so far (cost) */
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
 * smaps_share is the fraction of the processes whose smaps_rollup is re-read
 * this sample (round robin; >= 1: all, 0: only those that must be, see the
 * top of this file); the others carry estimates. A process that is gone is
 * dropped and counted in *vanished. Returns the number of samples written;
 * with cap >= t->n, out[k] is the sample of t->e[k]. */
size_t cp_proctrack_sample(cp_proctrack *t, cp_procsample *out, size_t cap,
                           double smaps_share, size_t *vanished);

#endif
