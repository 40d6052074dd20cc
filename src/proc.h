/* proc.h: worker processes: fork with a socketpair, child set-up, pidfd,
 * reaping, termination. No Lua here.
 *
 * coproc reaps only the children it made (waitpid on their pid, woken by a
 * pidfd), so io.popen():close() and os.execute keep their exit status. */
#ifndef CP_PROC_H
#define CP_PROC_H

#include <sys/types.h>

/* The fd number of a worker's end of its connection. */
#define CP_CHILD_FD 3

typedef struct cp_proc {
    pid_t pid;
    int   pidfd;       /* -1 when unavailable or closed */
    int   reaped;      /* waitpid done: status is valid */
    int   status;      /* raw waitpid status */
    pid_t owner;       /* getpid() of the process that forked it */
    struct cp_proc *prev, *next; /* registry of live children of this process */
} cp_proc;

/* fork() a child connected by a socketpair. In the parent: returns the child's
 * pid, *fd_out is the parent's end (non-blocking, close-on-exec) and p is
 * filled and registered. In the child: returns 0, *fd_out is the child's end
 * (moved to fd 3), the child is already set up (PDEATHSIG, signal handlers
 * reset, SIGINT ignored, every other fd >= 4 closed when close_fds). On
 * failure returns -1 with errno set. */
pid_t cp_proc_spawn(cp_proc *p, int *fd_out, int close_fds);

/* Non-blocking reap: 1 when the child has exited (status filled), 0 if it
 * still runs. Safe to call again after reaping. */
int  cp_proc_poll(cp_proc *p);
/* Wait up to timeout seconds (< 0: forever) for exit. 1 exited, 0 timed out. */
int  cp_proc_wait(cp_proc *p, double timeout);
/* Send a signal unless already reaped. */
int  cp_proc_kill(cp_proc *p, int sig);
/* SIGTERM, wait grace seconds, then SIGKILL and reap. Always reaps. */
void cp_proc_terminate(cp_proc *p, double grace);
/* Release the pidfd and unregister (after reaping, or in a child for procs
 * inherited from the parent). */
void cp_proc_release(cp_proc *p);

/* Terminate and reap every live child this process made (Ctrl-C, exit). */
void cp_proc_terminate_all(double grace);
/* In a freshly forked child: forget (without signalling) every proc inherited
 * from the parent, closing their pidfds (but never CP_CHILD_FD, which by then
 * is the child's own connection). */
void cp_proc_forget_all(void);

/* A close-on-exec pidfd for pid, or -1 (ENOSYS is remembered, so old
 * kernels and valgrind are asked once). */
int  cp_pidfd_open(pid_t pid);

/* Exit code (>= 0), or -signal when killed, or INT_MIN while running. */
int  cp_proc_exitcode(const cp_proc *p);

#endif
