/* proc.c: see proc.h. */
#include "proc.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static cp_proc *g_procs;
static pid_t g_procs_pid;

static void reg_add(cp_proc *p)
{
    if (g_procs_pid != getpid()) { g_procs = NULL; g_procs_pid = getpid(); }
    p->prev = NULL;
    p->next = g_procs;
    if (g_procs) g_procs->prev = p;
    g_procs = p;
}

static void reg_remove(cp_proc *p)
{
    if (g_procs_pid != getpid()) return;
    if (p->prev) p->prev->next = p->next;
    else if (g_procs == p) g_procs = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

int cp_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    static int unsupported; /* old kernels, valgrind: ask once */
    if (unsupported) return -1;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ENOSYS) unsupported = 1;
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/* Everything a new worker needs before running any Lua. */
static void child_setup(pid_t parent, int fd, int close_fds)
{
    /* Die with the host; and if the host already went, go now. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        sigaction(s, &sa, NULL);
    }
    /* Ctrl-C goes to the whole process group; the host decides what
     * happens to its workers, so they ignore it. */
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (fd != CP_CHILD_FD) {
        if (dup2(fd, CP_CHILD_FD) < 0) _exit(1);
        close(fd);
    }
    fcntl(CP_CHILD_FD, F_SETFD, FD_CLOEXEC);
    if (close_fds) {
#ifdef SYS_close_range
        if (syscall(SYS_close_range, CP_CHILD_FD + 1u, ~0u, 0u) != 0)
#endif
        {
            long max = sysconf(_SC_OPEN_MAX);
            for (long i = CP_CHILD_FD + 1; i < (max > 0 && max < 65536 ? max : 65536); i++) close((int)i);
        }
    }
}

pid_t cp_proc_spawn(cp_proc *p, int *fd_out, int close_fds)
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    /* Large socket buffers: fewer wake-ups for big values. */
    int sz = 4 << 20;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        cp_loop_after_fork();
        close(sv[0]);
        child_setup(parent, sv[1], close_fds);
        *fd_out = CP_CHILD_FD;
        return 0;
    }
    close(sv[1]);
    p->pid = pid;
    p->owner = parent;
    p->status = 0;
    p->pidfd = cp_pidfd_open(pid);
    *fd_out = sv[0];
    reg_add(p);
    return pid;
}

int cp_proc_poll(cp_proc *p)
{
    if (p->reaped) return 1;
    if (p->pid <= 0 || p->owner != getpid()) return 1;
    int st;
    pid_t r;
    do r = waitpid(p->pid, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    p->reaped = 1;
    p->status = r == p->pid ? st : 0;
    reg_remove(p);
    if (p->pidfd >= 0) { close(p->pidfd); p->pidfd = -1; }
    return 1;
}

int cp_proc_wait(cp_proc *p, double timeout)
{
    if (cp_proc_poll(p)) return 1;
    double deadline = timeout >= 0 ? cp_now() + timeout : 0;
    cp_loop_mark();
    for (;;) {
        int ms = -1;
        if (timeout >= 0) {
            double left = deadline - cp_now();
            if (left <= 0) return cp_proc_poll(p);
            ms = (int)(left * 1000) + 1;
        }
        if (p->pidfd >= 0) {
            struct pollfd pfd = {p->pidfd, POLLIN, 0};
            int r = poll(&pfd, 1, ms);
            if (r < 0 && errno == EINTR && cp_loop_take_interrupt()) { cp_loop_interrupt(); return cp_proc_poll(p); }
        } else {
            /* No pidfd: a short sleep between polls is the best there is. */
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            if (cp_loop_take_interrupt()) { cp_loop_interrupt(); return cp_proc_poll(p); }
        }
        if (cp_proc_poll(p)) return 1;
    }
}

int cp_proc_kill(cp_proc *p, int sig)
{
    if (cp_proc_poll(p)) return -1;
    return kill(p->pid, sig);
}

void cp_proc_terminate(cp_proc *p, double grace)
{
    if (cp_proc_poll(p)) return;
    kill(p->pid, SIGTERM);
    if (cp_proc_wait(p, grace)) return;
    kill(p->pid, SIGKILL);
    cp_proc_wait(p, -1);
}

void cp_proc_release(cp_proc *p)
{
    reg_remove(p);
    if (p->pidfd >= 0) { close(p->pidfd); p->pidfd = -1; }
}

void cp_proc_terminate_all(double grace)
{
    if (g_procs_pid != getpid()) return;
    /* SIGTERM everyone first so they shut down in parallel. */
    for (cp_proc *p = g_procs; p; p = p->next) kill(p->pid, SIGTERM);
    while (g_procs) cp_proc_terminate(g_procs, grace);
}

void cp_proc_forget_all(void)
{
    if (g_procs_pid == getpid()) return;
    for (cp_proc *p = g_procs, *next; p; p = next) {
        next = p->next;
        if (p->pidfd >= 0 && p->pidfd != CP_CHILD_FD) close(p->pidfd);
        p->pidfd = -1;
        p->reaped = 1;          /* not ours to reap or signal */
        p->status = 0;
        p->prev = p->next = NULL;
    }
    g_procs = NULL;
    g_procs_pid = getpid();
}

int cp_proc_exitcode(const cp_proc *p)
{
    if (!p->reaped) return INT_MIN;
    if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
    if (WIFSIGNALED(p->status)) return -WTERMSIG(p->status);
    return INT_MIN;
}
