/* proc.h: child processes, one type for both kinds coproc makes:
 *
 *   workers   fork + socketpair (cp_proc_spawn), each in its own process
 *             group, registered so that exit and Ctrl-C terminate them;
 *             fresh workers (cp_proc_spawn_fresh) are forked by the fork
 *             server (forksrv.h) but are this process's children all the
 *             same;
 *   commands  fork + execvp (cp_proc_spawn_exec), the monitor's CLI; they
 *             stay in the caller's process group and are not registered.
 *
 * One wait loop (a pidfd polled, else short sleeps), one exit-code
 * convention, one clock (cp_now). No Lua here.
 *
 * coproc reaps only the children it made (waitpid on their pid), so
 * io.popen():close() and os.execute keep their exit status.
 *
 * File descriptors. fds 0-2 are kept open (/dev/null where closed) in the
 * caller before every spawn and in every child, so a socket or a pidfd never
 * takes the place of stdin/stdout/stderr. A worker's end of its connection
 * keeps the number socketpair gave it (>= 3): nothing is dup2'ed onto a fixed
 * number, so no fd the host holds (a log file on fd 3 that an "inherit"
 * worker writes to) is ever replaced.
 *
 * Process groups. A worker leads its own group (setpgid in the child and in
 * the parent, so there is no window); what it starts itself (io.popen,
 * os.execute("... &")) joins that group. Terminating signals the group, and
 * whenever a worker is reaped, whatever is left of its group is killed first
 * (SIGKILL while the worker is still an unreaped zombie, so the group id
 * cannot have been reused). Workers started by a worker lead their own groups
 * and die with their parent (PR_SET_PDEATHSIG). */
#ifndef CP_PROC_H
#define CP_PROC_H

#include <stddef.h>
#include <sys/types.h>

#include "forksrv.h"

typedef struct cp_proc {
    pid_t pid;
    int   pidfd;       /* -1 when unavailable or closed */
    int   reaped;      /* waitpid done: status is valid */
    int   status;      /* raw waitpid status */
    pid_t owner;       /* pid of the process that forked it */
    pid_t pgid;        /* a worker's own process group; 0 for commands */
    int   fresh;       /* started by cp_proc_spawn_fresh */
    const char *failed_call; /* after a failed spawn: "socketpair", "fork", ... */
    struct cp_proc *prev, *next; /* registry of live workers of this process */
} cp_proc;

/* fork() a worker connected by a socketpair. In the parent: returns the
 * child's pid, *fd_out is the parent's end (non-blocking, close-on-exec), p
 * is filled and registered. In the child: returns 0, *fd_out is the child's
 * end (close-on-exec, >= 3), the child leads its own process group and is
 * set up (PDEATHSIG, signal handlers and mask reset, SIGINT and SIGPIPE
 * ignored, inherited workers forgotten, fds 0-2 open, every other fd closed
 * when close_fds). A caller that closes more inherited fds in the child
 * should call cp_proc_keep_stdio() again afterwards (one may have sat on
 * 0-2). On failure returns -1 with errno set and p->failed_call naming the
 * system call. */
pid_t cp_proc_spawn(cp_proc *p, int *fd_out, int close_fds);

/* Start a fresh worker: one that runs how->main(fd, extra_fd, data, len)
 * in a process that inherits nothing of this one but fds 0-2 and extra_fd
 * (and the attributes forksrv.h lists). It is made by the fork server, else
 * forked from here; either way it is this process's child, set up as
 * cp_proc_spawn's children (close_fds on, extra_fd kept), and p, *fd_out
 * and the return value are as there. Never returns in the child. On failure
 * -1 with errno and p->failed_call ("fork" when out of processes). */
pid_t cp_proc_spawn_fresh(cp_proc *p, int *fd_out, const cp_fresh *how, int extra_fd, const char *data,
                          size_t len);

/* fork() and execvp(argv[0], argv) (argv NULL-terminated) with signal
 * dispositions and mask reset. Returns 0, or -1 with errno set and
 * p->failed_call, including the errno of a failed exec (reported back
 * through a close-on-exec pipe, so "no such command" fails here, not as an
 * exit status). The command shares the caller's process group (it gets the
 * terminal's Ctrl-C) and is not registered. */
int   cp_proc_spawn_exec(cp_proc *p, char *const argv[]);

/* Non-blocking reap: 1 when the child has exited (status filled), 0 if it
 * still runs. Safe to call again after reaping. */
int  cp_proc_poll(cp_proc *p);
/* Wait up to timeout seconds (< 0: forever) for the child to exit, and reap
 * it. 1 exited, 0 timed out or interrupted by cp_loop_interrupt() (which is
 * left pending for the caller to take); other signals are waited through. */
int  cp_proc_wait(cp_proc *p, double timeout);
/* The same, but any signal handler that runs ends the wait: 1 exited, 0
 * timed out, -1 interrupted (errno EINTR). */
int  cp_proc_wait_intr(cp_proc *p, double timeout);
/* Send a signal to the child itself unless already reaped. */
int  cp_proc_kill(cp_proc *p, int sig);
/* SIGTERM and SIGCONT (a stopped worker then acts on the SIGTERM) to the
 * worker's group, wait grace seconds, then SIGKILL to the group and reap.
 * Always reaps. */
void cp_proc_terminate(cp_proc *p, double grace);
/* Release the pidfd and unregister (after reaping, or in a child for procs
 * inherited from the parent). Does not signal or reap. */
void cp_proc_release(cp_proc *p);

/* A hold keeps the fork server (and has fresh starts use it) while no
 * fresh worker runs: a pool takes one once it has replaced a worker, so
 * that a pool of one does not lose its server with each death. on: take
 * one; 0: give one back (the last, with no fresh worker, stops the
 * server). */
void cp_proc_hold_fresh(int on);

/* Terminate and reap every live worker this process made (Ctrl-C, exit):
 * every group gets SIGTERM at once, then one grace period for all; then
 * the fork server and its spares, holds or not. */
void cp_proc_terminate_all(double grace);
/* In a freshly forked child: forget (without signalling) every worker
 * inherited from the parent, closing its pidfd. Idempotent. */
void cp_proc_forget_all(void);

/* Open /dev/null on each of fds 0, 1, 2 that is closed. Returns 0, or -1
 * when one could not be opened. Cheap (three fcntl calls when all is well). */
int  cp_proc_keep_stdio(void);

/* A close-on-exec pidfd for pid, or -1 with errno (ENOSYS is remembered, so
 * old kernels and valgrind are asked once). */
int  cp_pidfd_open(pid_t pid);

/* The exit code convention of coproc: the exit status (0..255), or -signal
 * when a signal killed the child, or INT_MIN while it runs. */
int  cp_proc_exitcode(const cp_proc *p);

#endif
