/* proc.c: see proc.h. */
#define _GNU_SOURCE /* pipe2 */
#include "proc.h"
#include "forksrv.h"
#include "loop.h"
#include "proc_child.h"

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

/* ---------------------------------------------------------------- registry */

static cp_proc *g_procs;   /* live workers of process g_procs_pid */
static pid_t g_procs_pid;
static int g_nfresh;       /* how many of them are fresh (cp_proc_spawn_fresh) */
static int g_holds;        /* cp_proc_hold_fresh calls not yet undone */

static void reg_add(cp_proc *p)
{
    if (g_procs_pid != cp_self_pid()) { g_procs = NULL; g_nfresh = 0; g_holds = 0; g_procs_pid = cp_self_pid(); }
    if (p->fresh) g_nfresh++;
    p->prev = NULL;
    p->next = g_procs;
    if (g_procs) g_procs->prev = p;
    g_procs = p;
}

/* Safe for a proc that was never registered (a command). */
static void reg_remove(cp_proc *p)
{
    if (g_procs_pid != cp_self_pid()) return;
    int listed = p->prev || g_procs == p;
    if (p->prev) p->prev->next = p->next;
    else if (g_procs == p) g_procs = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
    /* The fork server lives as long as fresh workers do (forksrv.h), or
     * a hold. */
    if (listed && p->fresh && --g_nfresh == 0 && g_holds == 0) cp_forksrv_stop();
}

void cp_proc_hold_fresh(int on)
{
    if (g_procs_pid != cp_self_pid()) { g_procs = NULL; g_nfresh = 0; g_holds = 0; g_procs_pid = cp_self_pid(); }
    if (on) {
        g_holds++;
    } else if (g_holds > 0 && --g_holds == 0 && g_nfresh == 0) {
        cp_forksrv_stop();
    }
}

/* ---------------------------------------------------------------- fds */

int cp_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    static int unsupported; /* old kernels, valgrind: ask once */
    if (unsupported) { errno = ENOSYS; return -1; }
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ENOSYS) unsupported = 1;
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int cp_proc_keep_stdio(void)
{
    int rc = 0;
    /* In order: when fd i is tested, 0..i-1 are open, so open() returns i. */
    for (int i = 0; i <= 2; i++) {
        if (fcntl(i, F_GETFD) >= 0 || errno != EBADF) continue;
        int fd = open("/dev/null", O_RDWR); /* inherited by exec: no O_CLOEXEC */
        if (fd < 0) { rc = -1; continue; }
        if (fd != i) { dup2(fd, i); close(fd); }
    }
    return rc;
}

/* Close fds lo..hi (inclusive). */
static void close_fds_in(unsigned lo, unsigned hi)
{
    if (lo > hi) return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, lo, hi, 0u) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    unsigned lim = max > 0 && max < 65536 ? (unsigned)max : 65536u;
    for (unsigned i = lo; i <= hi && i < lim; i++) close((int)i);
}

/* ---------------------------------------------------------------- children */

void cp_child_reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        sigaction(s, &sa, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void cp_child_close_fds(int keep_a, int keep_b)
{
    if (keep_a > keep_b) { int t = keep_a; keep_a = keep_b; keep_b = t; }
    unsigned lo = 3;
    if (keep_a >= 3) { close_fds_in(lo, (unsigned)keep_a - 1); lo = (unsigned)keep_a + 1; }
    if (keep_b >= 3) { close_fds_in(lo, (unsigned)keep_b - 1); lo = (unsigned)keep_b + 1; }
    close_fds_in(lo, ~0u);
}

/* Everything a new worker needs before running any Lua. Returns the fd of
 * its connection. keep is one more fd to keep open (-1: none). */
static int child_setup(pid_t parent, int fd, int keep, int close_fds)
{
    /* Die with the host; and if the host already went, go now. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    /* Its own group, so terminate() reaches what it starts (see proc.h). */
    setpgid(0, 0);

    cp_child_reset_signals();
    /* Ctrl-C is the host's to handle: it decides what happens to workers. */
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    /* The socket keeps its number: no fd of the host has it. Only lift it
     * off 0-2 (possible when the host's stdio was closed). */
    if (fd <= 2) {
        int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (nfd < 0) _exit(1);
        close(fd);
        fd = nfd;
    }
    if (close_fds) cp_child_close_fds(fd, keep);
    cp_proc_keep_stdio();
    return fd;
}

static int failed(cp_proc *p, const char *call)
{
    p->failed_call = call;
    return -1;
}

static void close_keep_errno(int a, int b)
{
    int e = errno;
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    errno = e;
}

static void reap_now(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

int cp_child_conn_pair(int sv[2])
{
    cp_proc_keep_stdio(); /* the socket must not land on 0-2 */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    int sz = 4 << 20;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    return 0;
}

/* A worker's connection (cp_child_conn_pair), p cleared. */
static int open_pair(cp_proc *p, int sv[2])
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    if (cp_child_conn_pair(sv)) return failed(p, "socketpair");
    return 0;
}

/* In the parent, once child pid exists (whoever forked it): its group, its
 * pidfd, the registry. sv0 is our end of its connection. */
static pid_t adopt(cp_proc *p, pid_t pid, int sv0, int *fd_out)
{
    /* The child does the same: whichever runs first, the group exists
     * before either goes on (fails harmlessly once the child did it). */
    setpgid(pid, pid);
    p->pid = pid;
    p->owner = cp_self_pid();
    p->pgid = pid;
    p->pidfd = cp_pidfd_open(pid);
    if (p->pidfd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM)) {
        /* Out of fds: say so now rather than run a worker whose exit
         * cannot be watched. */
        int e = errno;
        kill(pid, SIGKILL);
        reap_now(pid);
        close(sv0);
        memset(p, 0, sizeof *p);
        p->pidfd = -1;
        errno = e;
        return failed(p, "pidfd_open");
    }
    *fd_out = sv0;
    reg_add(p);
    return pid;
}

pid_t cp_proc_spawn(cp_proc *p, int *fd_out, int close_fds)
{
    int sv[2];
    if (open_pair(p, sv)) return -1;
    fflush(NULL);
    pid_t parent = cp_self_pid();
    pid_t pid = fork();
    if (pid < 0) {
        close_keep_errno(sv[0], sv[1]);
        return failed(p, "fork");
    }
    if (pid == 0) {
        cp_loop_after_fork();
        cp_proc_forget_all();
        close(sv[0]);
        *fd_out = child_setup(parent, sv[1], -1, close_fds);
        return 0;
    }
    close(sv[1]);
    return adopt(p, pid, sv[0], fd_out);
}

pid_t cp_proc_spawn_fresh(cp_proc *p, int *fd_out, const cp_fresh *how, int extra_fd, const char *data, size_t len)
{
    /* From the fork server's spare, from the server, or forked from here
     * (forksrv.h says when). */
    int alive = g_procs_pid == cp_self_pid() && (g_nfresh > 0 || g_holds > 0);
    int conn = -1;
    pid_t pid = cp_forksrv_take_spare(how, alive, extra_fd, data, len, &conn);
    if (pid > 0) {
        memset(p, 0, sizeof *p);
        p->pidfd = -1;
        p->fresh = 1;
        return adopt(p, pid, conn, fd_out);
    }
    int sv[2];
    if (open_pair(p, sv)) return -1;
    const char *call = "fork";
    pid = cp_forksrv_spawn(how, alive, sv[1], extra_fd, data, len, &call);
    if (pid == 0) {
        /* No server to ask: fork from here, as cp_proc_spawn. */
        fflush(NULL);
        pid_t parent = cp_self_pid();
        pid = fork();
        if (pid == 0) {
            cp_loop_after_fork();
            if (how->forget) how->forget();
            cp_proc_forget_all();
            close(sv[0]);
            int fd = child_setup(parent, sv[1], extra_fd, 1);
            how->main(fd, extra_fd, data, len);
            _exit(70);
        }
        call = "fork";
    }
    if (pid < 0) {
        close_keep_errno(sv[0], sv[1]);
        return failed(p, call);
    }
    close(sv[1]);
    p->fresh = 1; /* counted when registered */
    return adopt(p, pid, sv[0], fd_out);
}

int cp_proc_spawn_exec(cp_proc *p, char *const argv[])
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    if (!argv || !argv[0]) { errno = EINVAL; return failed(p, "execvp"); }
    cp_proc_keep_stdio();
    int ep[2]; /* the exec error pipe: closed by a successful exec */
    if (pipe2(ep, O_CLOEXEC)) return failed(p, "pipe2");
    fflush(NULL);
    pid_t parent = cp_self_pid();
    pid_t pid = fork();
    if (pid < 0) {
        close_keep_errno(ep[0], ep[1]);
        return failed(p, "fork");
    }
    if (pid == 0) {
        close(ep[0]);
        /* Exec keeps ignored signals ignored and the mask: reset both. */
        cp_child_reset_signals();
        cp_proc_keep_stdio();
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(ep[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(ep[1]);
    int e = 0;
    ssize_t r;
    do r = read(ep[0], &e, sizeof e); while (r < 0 && errno == EINTR);
    close(ep[0]);
    if (r == (ssize_t)sizeof e) { /* exec failed: reap and report */
        reap_now(pid);
        errno = e;
        return failed(p, "execvp");
    }
    p->pid = pid;
    p->owner = parent;
    p->pidfd = cp_pidfd_open(pid); /* without one, waits poll */
    return 0;
}

/* ---------------------------------------------------------------- waiting */

/* While p is not reaped its pid, and so its group id, cannot be reused. */
static void signal_group(cp_proc *p, int sig)
{
    if (p->pgid > 0 && kill(-p->pgid, sig) == 0) return;
    kill(p->pid, sig);
}

int cp_proc_poll(cp_proc *p)
{
    if (p->reaped) return 1;
    if (p->pid <= 0 || p->owner != cp_self_pid()) return 1;
    if (p->pgid > 0) {
        /* Look without reaping; once it has exited, kill what is left of
         * its group while the group id is still reserved by the zombie. */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r;
        do r = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
        if (r == 0 && si.si_pid == 0) return 0;
        if (r == 0) kill(-p->pgid, SIGKILL);
    }
    int st = 0;
    pid_t r;
    do r = waitpid(p->pid, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    p->reaped = 1;
    p->status = r == p->pid ? st : 0;
    reg_remove(p);
    if (p->pidfd >= 0) { close(p->pidfd); p->pidfd = -1; }
    return 1;
}

enum { INTR_COPROC, INTR_ANY, INTR_NONE };

/* The one wait loop: sleep on the pidfd (readable at exit), else in short
 * naps, until p is reaped or the deadline passes. intr says what a signal
 * handler running meanwhile (EINTR) does. */
static int wait_loop(cp_proc *p, double timeout, int intr)
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
        int r;
        if (p->pidfd >= 0) {
            struct pollfd pfd = {p->pidfd, POLLIN, 0};
            r = poll(&pfd, 1, ms);
        } else {
            /* No pidfd: a short sleep between polls is the best there is. */
            struct timespec ts = {0, (ms >= 0 && ms < 2 ? ms : 2) * 1000000L};
            r = nanosleep(&ts, NULL);
        }
        if (r < 0 && errno == EINTR) {
            if (intr == INTR_ANY) {
                if (cp_proc_poll(p)) return 1;
                errno = EINTR;
                return -1;
            }
            if (intr == INTR_COPROC && cp_loop_take_interrupt()) {
                cp_loop_interrupt(); /* left for the caller */
                return cp_proc_poll(p);
            }
        }
        if (cp_proc_poll(p)) return 1;
    }
}

int cp_proc_wait(cp_proc *p, double timeout) { return wait_loop(p, timeout, INTR_COPROC); }

int cp_proc_wait_intr(cp_proc *p, double timeout) { return wait_loop(p, timeout, INTR_ANY); }

int cp_proc_kill(cp_proc *p, int sig)
{
    if (cp_proc_poll(p)) return -1;
    return kill(p->pid, sig);
}

/* SIGTERM, and SIGCONT so that a stopped worker gets to act on it. */
static void ask_to_stop(cp_proc *p)
{
    signal_group(p, SIGTERM);
    signal_group(p, SIGCONT);
}

void cp_proc_terminate(cp_proc *p, double grace)
{
    if (cp_proc_poll(p)) return;
    ask_to_stop(p);
    /* Bounded by grace: a pending Ctrl-C does not cut it short. */
    if (wait_loop(p, grace, INTR_NONE) == 1) return;
    signal_group(p, SIGKILL);
    wait_loop(p, -1, INTR_NONE);
}

void cp_proc_release(cp_proc *p)
{
    reg_remove(p);
    if (p->pidfd >= 0) { close(p->pidfd); p->pidfd = -1; }
}

void cp_proc_terminate_all(double grace)
{
    if (g_procs_pid != cp_self_pid()) return;
    /* Everyone at once, so they shut down in parallel in one grace period. */
    for (cp_proc *p = g_procs; p; p = p->next) ask_to_stop(p);
    double deadline = cp_now() + grace;
    for (cp_proc *p = g_procs, *next; p; p = next) {
        next = p->next; /* reaping unlinks p */
        double left = deadline - cp_now();
        wait_loop(p, left > 0 ? left : 0, INTR_NONE);
    }
    for (cp_proc *p = g_procs; p; p = p->next) signal_group(p, SIGKILL);
    while (g_procs) {
        cp_proc *p = g_procs;
        wait_loop(p, -1, INTR_NONE);
        if (g_procs == p) reg_remove(p);
    }
    /* And the fork server, even if a pool still holds it. */
    g_holds = 0;
    cp_forksrv_stop();
}

void cp_proc_forget_all(void)
{
    cp_forksrv_forget();
    if (g_procs_pid == cp_self_pid()) return;
    for (cp_proc *p = g_procs, *next; p; p = next) {
        next = p->next;
        if (p->pidfd >= 0) close(p->pidfd);
        p->pidfd = -1;
        p->reaped = 1;          /* not ours to reap or signal */
        p->status = 0;
        p->prev = p->next = NULL;
    }
    g_procs = NULL;
    g_nfresh = 0;
    g_holds = 0;
    g_procs_pid = cp_self_pid();
}

int cp_proc_exitcode(const cp_proc *p)
{
    if (!p->reaped) return INT_MIN;
    if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
    if (WIFSIGNALED(p->status)) return -WTERMSIG(p->status);
    return INT_MIN;
}
