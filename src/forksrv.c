/* forksrv.c: see forksrv.h.
 *
 * The protocol, over a stream socketpair (host end non-blocking, server end
 * blocking): the host sends a req_head with the fds attached (SCM_RIGHTS),
 * then the environment block and the caller's data; the server answers
 * with one struct rep. One request at a time. A spare request (kind
 * KIND_SPARE) carries only the spare's connection and has no answer on
 * the server's socket: the server writes the spare's pid (an int32_t) on
 * the spare's connection (so the host learns it even if the spare dies at
 * once), and the spare reads a worker request there (the same head,
 * without a connection). */
#define _GNU_SOURCE
#include "forksrv.h"
#include "loop.h"
#include "proc.h"
#include "proc_child.h"
#include "prefault.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---------------------------------------------------------------- atfork */

#define MAX_ATFORK 8
static void (*g_atfork_child[MAX_ATFORK])(void);
static int g_natfork;

int __real_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/* Every pthread_atfork call of coproc's code lands here (the link wraps the
 * name): the child handlers are kept for cp_forksrv_atfork_child. */
int __wrap_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    if (child && g_natfork < MAX_ATFORK) g_atfork_child[g_natfork++] = child;
    return __real_pthread_atfork(prepare, parent, child);
}

void cp_forksrv_atfork_child(void)
{
    for (int i = 0; i < g_natfork; i++) g_atfork_child[i]();
}

/* ---------------------------------------------------------------- protocol */

#define MAGIC 0x63707372u /* "cpsr" */
#define NLIM 16           /* resource limits sent (RLIMIT_CPU .. RLIMIT_RTTIME) */

/* The fds a request carries, in this order; bit i of req_head.fds says
 * whether kind i is there. */
enum { K_STDIN, K_STDOUT, K_STDERR, K_CONN, K_CWD, K_EXTRA, K_MAX };
enum { KIND_WORKER, KIND_SPARE };

typedef struct req_head {
    uint32_t magic;
    uint32_t fds;       /* kinds attached */
    uint32_t kind;      /* KIND_WORKER or KIND_SPARE */
    uint32_t pad;
    uint64_t envlen;    /* bytes of environment (NUL-terminated strings) after the head */
    uint64_t len;       /* then the caller's data */
    int32_t  host;      /* the worker's parent-to-be */
    uint32_t umask;
    char     comm[16];  /* process name */
    struct rlimit lim[NLIM];
} req_head;

typedef struct rep {
    int32_t pid;        /* > 0: started */
    int32_t err;        /* else the errno ... */
    char    call[16];   /* ... of this call */
} rep;

/* ---------------------------------------------------------------- host side */

static struct {
    pid_t owner;  /* the process this state belongs to */
    pid_t pid;    /* the server, 0: none */
    int   fd;     /* our end of its socket, -1: none */
    int   off;    /* 1: turned off; 2: clone(CLONE_PARENT) refused here */
    int   exec;   /* every worker from an exec'd server, the first too (COPROC_FORK_SERVER=exec) */
    int   fork;   /* a small host forks its server (COPROC_FORK_SERVER=fork) */
    int   env_read;
    double timeout;
    /* The spares asked for, oldest first: our end of each one's
     * connection, and its pid once it said it (0: not yet). */
    struct { int fd; pid_t pid; } sp[CP_FORKSRV_SPARES];
    int   nsp;
} g = {0, 0, -1, 0, 0, 0, 0, CP_FORKSRV_TIMEOUT, {{-1, 0}}, 0};

void cp_forksrv_set_timeout(double seconds)
{
    g.timeout = seconds > 0 ? seconds : CP_FORKSRV_TIMEOUT;
}

/* The state is this process's (a forked child that never called
 * cp_forksrv_forget starts over without touching the inherited fd number). */
static void mine(void)
{
    pid_t me = cp_self_pid();
    if (g.owner == me) return;
    g.owner = me;
    g.pid = 0;
    g.fd = -1;
    g.nsp = 0;
}

void cp_forksrv_forget(void)
{
    if (g.owner == cp_self_pid()) return;
    if (g.fd >= 0) close(g.fd);
    for (int i = 0; i < g.nsp; i++) close(g.sp[i].fd);
    g.owner = cp_self_pid();
    g.pid = 0;
    g.fd = -1;
    g.nsp = 0;
}

pid_t cp_forksrv_pid(void)
{
    mine();
    return g.pid;
}

/* 1 while pid is our child and has not exited (then its number cannot be
 * another process's), 0 once it exited or is not ours. */
static int child_running(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
    return r == 0 && si.si_pid == 0;
}

/* 1 while pid is our child and stopped (SIGSTOP): it serves nothing until
 * continued, so a start passes it over instead of waiting for it. */
static int child_stopped(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    do r = waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
    return r == 0 && si.si_pid == pid && si.si_code == CLD_STOPPED;
}

/* Kill (while it is our unreaped child) and reap pid. */
static void kill_reap(pid_t pid)
{
    if (child_running(pid)) kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

static int wait_fd(int fd, short ev, double deadline);

/* Read the spare's pid, waiting until the deadline: 1 it is there, 0 it
 * never was (its server ended first, or failed to clone it), -1 it is
 * late (errno ETIMEDOUT: its server is stuck). */
static int spare_ready(int i, double deadline)
{
    if (g.sp[i].pid > 0) return 1;
    int32_t pid;
    size_t got = 0;
    while (got < sizeof pid) {
        ssize_t n = recv(g.sp[i].fd, (char *)&pid + got, sizeof pid - got, MSG_DONTWAIT);
        if (n > 0) { got += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (wait_fd(g.sp[i].fd, POLLIN, deadline)) continue;
            if (errno == ETIMEDOUT) return -1;
        }
        return 0;
    }
    if (pid <= 0) return 0;
    g.sp[i].pid = (pid_t)pid;
    setpgid(pid, pid); /* as adopt() does; the spare does it too */
    return 1;
}

/* Take spare 0 off the list. */
static void spare_shift(void)
{
    for (int i = 1; i < g.nsp; i++) g.sp[i - 1] = g.sp[i];
    g.nsp--;
}

/* Close the oldest spare's connection, and kill and reap it. When its pid
 * has not come yet, wait for it until the deadline (it is our child, and
 * must be reaped; once its server is gone, what has not come never will). */
static void spare_drop(double deadline)
{
    if (g.nsp == 0) return;
    if (!g.sp[0].pid) spare_ready(0, deadline);
    close(g.sp[0].fd);
    if (g.sp[0].pid > 0) kill_reap(g.sp[0].pid);
    spare_shift();
}

/* Reap pid once it has exited, waiting until the deadline: 1 reaped (or not
 * ours), 0 still running. */
static int reap_by(pid_t pid, double deadline)
{
    int pfd = cp_pidfd_open(pid);
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r != 0 && !(r < 0 && errno == EINTR)) break;
        double left = deadline - cp_now();
        if (left <= 0) {
            if (pfd >= 0) close(pfd);
            return 0;
        }
        if (pfd >= 0) {
            struct pollfd p = {pfd, POLLIN, 0};
            poll(&p, 1, (int)(left * 1000) + 1);
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    if (pfd >= 0) close(pfd);
    return 1;
}

/* Drop the server, then its spares (killed and reaped). graceful: the
 * server is healthy; closing its socket makes it finish what it was asked
 * (the spares it is still cloning: their pids must reach us, or they could
 * not be reaped) and exit; it is killed only if it takes longer than the
 * timeout. Otherwise (dead, stuck, astray) it is killed at once. */
static void srv_drop_how(int graceful)
{
    if (g.fd >= 0) close(g.fd);
    g.fd = -1;
    if (g.pid > 0 && !(graceful && reap_by(g.pid, cp_now() + g.timeout))) kill_reap(g.pid);
    g.pid = 0;
    while (g.nsp > 0) spare_drop(0); /* the server is gone: every pid that will come is there */
}

static void srv_drop(void)
{
    srv_drop_how(0);
}

void cp_forksrv_stop(void)
{
    mine();
    srv_drop_how(1);
}

void cp_forksrv_enable(int on)
{
    mine();
    g.env_read = 1;
    if (on) {
        if (g.off == 1) g.off = 0;
    } else {
        g.off = 1;
        srv_drop_how(1);
    }
}

static _Noreturn void serve(const cp_fresh *how, int fd, pid_t host);
static int recv_reply(int fd, struct rep *r, double deadline);

/* How large this host is, for the choice between forking and starting
 * afresh: the bytes of malloc's heap (its arena: where a Lua state's many
 * small objects live, the pages a fork must copy and the collector keeps
 * rewriting); big blocks mapped on their own are left out. Without glibc,
 * the resident size. */
static unsigned long long host_bytes(void)
{
#ifdef __GLIBC__
    struct mallinfo2 mi = mallinfo2();
    return (unsigned long long)mi.arena;
#else
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    unsigned long long size = 0, rss = 0;
    if (sscanf(buf, "%llu %llu", &size, &rss) != 2) return 0;
    return rss * (unsigned long long)sysconf(_SC_PAGESIZE);
#endif
}

/* The two ends of a server's socket, ours non-blocking. */
static int srv_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    int fl = fcntl(sv[0], F_GETFL);
    fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
    return 0;
}

static void close_pair_keep_errno(int sv[2])
{
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    errno = e;
}

/* A server forked from this (small) process. */
static int srv_fork(const cp_fresh *how)
{
    int sv[2];
    if (srv_pair(sv)) return -1;
    fflush(NULL);
    pid_t host = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close_pair_keep_errno(sv);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        serve(how, sv[1], host);
    }
    close(sv[1]);
    g.pid = pid;
    g.fd = sv[0];
    return 0;
}

/* A server started fresh by posix_spawn: nothing of this process is copied
 * (the child shares our memory until its exec), whatever our size. */
static int srv_exec(const cp_fresh *how)
{
    const char *exe = how->exec_path ? how->exec_path() : NULL;
    if (!exe) { errno = ENOENT; return -1; }
    int sv[2];
    if (srv_pair(sv)) return -1;
    if (sv[1] == 3) { /* dup2(3, 3) would keep close-on-exec */
        int t = fcntl(3, F_DUPFD_CLOEXEC, 4);
        if (t < 0) { close_pair_keep_errno(sv); return -1; }
        close(3);
        sv[1] = t;
    }
    char code[96];
    snprintf(code, sizeof code, "require('coproc.core')._forkserver(%d)", (int)getpid());
    char *argv[] = {(char *)exe, "-E", "-e", code, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
    posix_spawn_file_actions_adddup2(&fa, 0, 1);
    posix_spawn_file_actions_adddup2(&fa, 0, 2);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    sigset_t def, none;
    sigfillset(&def);
    sigdelset(&def, SIGKILL);
    sigdelset(&def, SIGSTOP);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    /* Its environment, plus LD_BIND_NOW: every symbol is bound once, in
     * the server, not by each worker on its first call (a write to a page
     * it would then have to copy). The workers take the host's environment
     * (the request's). */
    size_t ne = 0;
    while (environ && environ[ne]) ne++;
    char **env = malloc((ne + 2) * sizeof *env);
    if (!env) {
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
        close_pair_keep_errno(sv);
        errno = ENOMEM;
        return -1;
    }
    size_t k = 0;
    env[k++] = "LD_BIND_NOW=1";
    for (size_t i = 0; i < ne; i++) {
        if (strncmp(environ[i], "LD_BIND_NOW=", 12) != 0) env[k++] = environ[i];
    }
    env[k] = NULL;
    pid_t pid;
    int r = posix_spawn(&pid, exe, &fa, &at, argv, env);
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (r) {
        close(sv[0]);
        errno = r;
        return -1;
    }
    g.pid = pid;
    g.fd = sv[0];
    return 0;
}

/* Start a server and wait for its hello: its pid and its build, which
 * must be ours. Exec'd (forksrv.h, "Large hosts"); forked where there is
 * no executable to serve, or when asked, while we are small. */
static int srv_hello(const cp_fresh *how)
{
    rep hello;
    if (recv_reply(g.fd, &hello, cp_now() + g.timeout) || hello.pid != g.pid
        || strncmp(hello.call, how->version ? how->version : "", sizeof hello.call) != 0) {
        srv_drop();
        errno = EPROTO;
        return -1;
    }
    return 0;
}

static int srv_start(const cp_fresh *how)
{
    int small = host_bytes() <= CP_FORKSRV_MAX_HOST;
    if (g.fork && small) return srv_fork(how) ? -1 : srv_hello(how);
    if (srv_exec(how) == 0 && srv_hello(how) == 0) return 0;
    /* No executable to serve, or one of another build: fork it instead,
     * for good (no exec is tried again for each start). */
    if (!small) return -1;
    g.fork = 1;
    return srv_fork(how) ? -1 : srv_hello(how);
}

/* Wait until fd is ready for ev or the deadline passes: 1 ready, 0 timed
 * out (errno ETIMEDOUT). Signals are waited through. */
static int wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        double left = deadline - cp_now();
        if (left <= 0) { errno = ETIMEDOUT; return 0; }
        struct pollfd p = {fd, ev, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return 0;
    }
}

/* Send the iovecs (the first sendmsg carries the fds). 0 sent, -1 errno. */
static int send_request(int fd, struct iovec *iov, int niov, const int *fds, int nfds, double deadline)
{
    union { char buf[CMSG_SPACE(sizeof(int) * K_MAX)]; struct cmsghdr align; } cm;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&cm, 0, sizeof cm);
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)niov;
    mh.msg_control = cm.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    while (mh.msg_iovlen > 0) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN && wait_fd(fd, POLLOUT, deadline)) continue;
            return -1;
        }
        mh.msg_control = NULL; /* the fds went with the first bytes */
        mh.msg_controllen = 0;
        size_t n = (size_t)w;
        while (mh.msg_iovlen > 0 && n >= mh.msg_iov->iov_len) {
            n -= mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen > 0) {
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + n;
            mh.msg_iov->iov_len -= n;
        }
    }
    return 0;
}

static int recv_reply(int fd, struct rep *r, double deadline)
{
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = recv(fd, (char *)r + got, sizeof *r - got, 0);
        if (n > 0) { got += (size_t)n; continue; }
        if (n == 0) { errno = ECONNRESET; return -1; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline)) continue;
        return -1;
    }
    return 0;
}

/* The environment as one block of NUL-terminated strings (malloc'ed). */
static char *env_block(size_t *n)
{
    size_t total = 0;
    for (char **e = environ; e && *e; e++) total += strlen(*e) + 1;
    char *b = malloc(total ? total : 1);
    if (!b) return NULL;
    size_t off = 0;
    for (char **e = environ; e && *e; e++) {
        size_t l = strlen(*e) + 1;
        memcpy(b + off, *e, l);
        off += l;
    }
    *n = total;
    return b;
}

/* A fork error the caller reports (the system is out of something), as
 * opposed to the server being unable to serve. */
static int is_resource_error(int e)
{
    return e == EAGAIN || e == ENOMEM || e == EMFILE || e == ENFILE;
}

/* A worker request as the host makes it: the head, the environment and
 * the fds (conn -1: none, for a spare, which has its own). */
typedef struct req {
    req_head h;
    char *env;
    int cwd;
    int fds[K_MAX], nfds;
} req;

static void req_free(req *q)
{
    int e = errno;
    free(q->env);
    if (q->cwd >= 0) close(q->cwd);
    errno = e;
}

/* 0, or -1 with errno and *call. */
static int req_make(req *q, int conn, int extra_fd, size_t len, const char **call)
{
    memset(q, 0, sizeof *q);
    req_head *h = &q->h;
    h->magic = MAGIC;
    h->kind = KIND_WORKER;
    h->host = (int32_t)getpid();
    mode_t um = umask(0);
    umask(um);
    h->umask = (uint32_t)um;
    prctl(PR_GET_NAME, h->comm);
    for (int r = 0; r < NLIM; r++) {
        if (getrlimit((__rlimit_resource_t)r, &h->lim[r])) h->lim[r].rlim_cur = h->lim[r].rlim_max = RLIM_INFINITY;
    }
    q->cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (q->cwd < 0 && (errno == EMFILE || errno == ENFILE)) {
        *call = "open";
        return -1;
    }
    size_t envlen = 0;
    q->env = env_block(&envlen);
    if (!q->env) {
        req_free(q);
        *call = "malloc";
        errno = ENOMEM;
        return -1;
    }
    h->envlen = envlen;
    h->len = len;
    int have[K_MAX] = {0, 1, 2, conn, q->cwd, extra_fd};
    for (int k = 0; k < K_MAX; k++) {
        if (have[k] < 0) continue;
        h->fds |= 1u << k;
        q->fds[q->nfds++] = have[k];
    }
    return 0;
}

static int req_send(int fd, req *q, const char *data, size_t len, double deadline)
{
    struct iovec iov[3] = {{&q->h, sizeof q->h}, {q->env, (size_t)q->h.envlen}, {(void *)data, len}};
    return send_request(fd, iov, 3, q->fds, q->nfds, deadline);
}

static void read_env(void)
{
    if (g.env_read) return;
    g.env_read = 1;
    const char *v = getenv("COPROC_FORK_SERVER");
    if (v && strcmp(v, "0") == 0) g.off = 1;
    if (v && strcmp(v, "exec") == 0) g.exec = 1;
    if (v && strcmp(v, "fork") == 0) g.fork = 1;
}

/* Ask the server for spares up to CP_FORKSRV_SPARES (no answer to wait
 * for: a spare says its pid on its connection). */
static int spare_request_one(void)
{
    int sv[2];
    if (cp_child_conn_pair(sv)) return -1;
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    req_head h;
    memset(&h, 0, sizeof h);
    h.magic = MAGIC;
    h.kind = KIND_SPARE;
    h.host = (int32_t)getpid();
    h.fds = 1u << K_CONN;
    struct iovec iov = {&h, sizeof h};
    int r = send_request(g.fd, &iov, 1, &sv[1], 1, cp_now() + g.timeout);
    close(sv[1]);
    if (r) {
        close(sv[0]);
        srv_drop();
        return -1;
    }
    g.sp[g.nsp].fd = sv[0];
    g.sp[g.nsp].pid = 0;
    g.nsp++;
    return 0;
}

static void spare_request(void)
{
    while (g.pid && g.fd >= 0 && g.nsp < CP_FORKSRV_SPARES && spare_request_one() == 0) {}
}

pid_t cp_forksrv_take_spare(const cp_fresh *how, int alive, int extra_fd, const char *data, size_t len, int *conn)
{
    (void)how;
    (void)alive;
    mine();
    read_env();
    if (g.off || g.nsp == 0) return 0;
    if (!child_running(g.pid)) { /* a spare lives only as long as its server */
        srv_drop();
        return 0;
    }
    double deadline = cp_now() + g.timeout;
    /* A stopped server (SIGSTOP) clones nothing: the spares it made serve,
     * then a new server does, without waiting for the timeout. */
    if (spare_ready(0, cp_now()) != 1 && child_stopped(g.pid)) {
        srv_drop();
        return 0;
    }
    int ready = spare_ready(0, deadline);
    if (ready < 0) { /* the server does not even clone: a new one */
        srv_drop();
        return 0;
    }
    if (!ready || !child_running(g.sp[0].pid) || child_stopped(g.sp[0].pid)) {
        spare_drop(deadline);
        return 0;
    }
    req q;
    const char *call;
    cp_proc_keep_stdio(); /* 0-2 are sent */
    if (req_make(&q, -1, extra_fd, len, &call)) return 0; /* the ordinary start reports it */
    int r = req_send(g.sp[0].fd, &q, data, len, deadline);
    req_free(&q);
    if (r) {
        spare_drop(deadline);
        return 0;
    }
    pid_t pid = g.sp[0].pid;
    *conn = g.sp[0].fd;
    spare_shift();
    spare_request();
    return pid;
}

int cp_forksrv_spare_pids(pid_t *pids, int max)
{
    mine();
    int n = 0;
    for (int i = 0; i < g.nsp; i++) {
        if (spare_ready(i, cp_now() + g.timeout) != 1) return n;
        if (n < max) pids[n++] = g.sp[i].pid;
    }
    return n;
}

pid_t cp_forksrv_spawn(const cp_fresh *how, int alive, int conn, int extra_fd, const char *data, size_t len,
                       const char **call)
{
    mine();
    read_env();
    if (g.off) return 0;
    /* A small host forks its first worker itself (and so has no server
     * while it has no worker); a large one never forks. */
    if (!g.pid && !alive && !g.exec && host_bytes() <= CP_FORKSRV_MAX_HOST) return 0;

    if (g.pid && child_stopped(g.pid)) srv_drop(); /* it would not answer: a new one */
    req q;
    if (req_make(&q, conn, extra_fd, len, call)) return -1;
    pid_t pid = 0;
    for (int attempt = 0; attempt < 2 && pid == 0; attempt++) {
        if (!g.pid && srv_start(how)) break; /* no server: fork directly */
        double deadline = cp_now() + g.timeout;
        rep r;
        memset(&r, 0, sizeof r);
        if (req_send(g.fd, &q, data, len, deadline) || recv_reply(g.fd, &r, deadline)) {
            srv_drop(); /* dead, or not answering: a new one */
            continue;
        }
        if (r.pid > 0) {
            pid = r.pid;
        } else if (is_resource_error(r.err)) {
            static char failed_call[sizeof r.call + 1];
            memcpy(failed_call, r.call, sizeof r.call);
            failed_call[sizeof r.call] = 0;
            *call = failed_call;
            pid = -1;
            errno = r.err;
        } else {
            /* clone(CLONE_PARENT) refused (a sandbox, valgrind): from now
             * on workers are forked from this process. */
            g.off = 2;
            srv_drop();
            break;
        }
    }
    req_free(&q);
    if (pid > 0) spare_request(); /* the next start takes it */
    return pid;
}

/* ---------------------------------------------------------------- server side */

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r > 0) got += (size_t)r;
        else if (r < 0 && errno == EINTR) continue;
        else return -1;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, (const char *)buf + put, n - put);
        if (w > 0) put += (size_t)w;
        else if (w < 0 && errno == EINTR) continue;
        else return -1;
    }
    return 0;
}

static char **g_env; /* the environment take_env made (kept, not lost, if environ changes) */

/* The environment of the request, unless it is the one we have. */
static void take_env(char *block, size_t n)
{
    if (n == 0 || block[n - 1] != 0) return;
    size_t off = 0, count = 0;
    int same = 1;
    char **e = environ;
    while (off < n) {
        if (same && (!e || !*e || strcmp(*e, block + off) != 0)) same = 0;
        if (same) e++;
        off += strlen(block + off) + 1;
        count++;
    }
    if (same && (!e || !*e)) return;
    char **v = malloc((count + 1) * sizeof *v);
    if (!v) return;
    off = 0;
    for (size_t i = 0; i < count; i++) {
        v[i] = block + off;
        off += strlen(block + off) + 1;
    }
    v[count] = NULL;
    g_env = environ = v;
}

/* In the clone: become the host's child in every way that matters. */
static void become_child(pid_t host)
{
    cp_forksrv_atfork_child();
    /* Die with the host; and if the host already went, go now. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != host) _exit(1);
    setpgid(0, 0);
}

/* Take on the host's state of the request, then run the caller's code.
 * close_all: close every other fd (a spare did, and has made fds since). */
static _Noreturn void run_request(const cp_fresh *how, const req_head *h, const int *fd, char *buf, int close_all)
{
    char comm[sizeof h->comm + 1];
    memcpy(comm, h->comm, sizeof h->comm);
    comm[sizeof h->comm] = 0;
    prctl(PR_SET_NAME, comm);
    /* The received fds are >= 3 (the server's 0-2 are /dev/null). */
    for (int k = K_STDIN; k <= K_STDERR; k++) {
        if (fd[k] >= 0) dup2(fd[k], k);
    }
    if (fd[K_CWD] >= 0 && fchdir(fd[K_CWD]) != 0) _exit(1);
    umask((mode_t)h->umask);
    take_env(buf, (size_t)h->envlen);
    if (close_all) {
        cp_child_close_fds(fd[K_CONN], fd[K_EXTRA]);
    } else {
        for (int k = K_STDIN; k <= K_CWD; k++) {
            if (k != K_CONN && fd[k] >= 0) close(fd[k]);
        }
    }
    cp_proc_keep_stdio();
    how->main(fd[K_CONN], fd[K_EXTRA], buf + h->envlen, (size_t)h->len);
    _exit(70);
}

/* The new worker, in the clone. */
static _Noreturn void child(const cp_fresh *how, const req_head *h, const int *fd, char *buf)
{
    cp_prefault_apply();
    become_child((pid_t)h->host);
    run_request(how, h, fd, buf, 1);
}

static int recv_head(int sock, req_head *h, int *fd);

/* A spare, in the clone: set up, wait for its request on its connection
 * (EOF: not wanted), then run it as child() would. cur are the server's
 * limits (the host's as of the last request): the request's replace those
 * that differ. */
static _Noreturn void spare(const cp_fresh *how, pid_t host, int conn, const struct rlimit *cur)
{
    cp_prefault_apply();
    become_child(host);
    cp_child_close_fds(conn, -1);
    if (how->warm) how->warm();
    req_head h;
    int fd[K_MAX];
    if (recv_head(conn, &h, fd) != 1 || h.kind != KIND_WORKER || fd[K_CONN] >= 0) _exit(0);
    size_t total = (size_t)h.envlen + (size_t)h.len;
    char *buf = malloc(total + 1);
    if (!buf || read_full(conn, buf, total)) _exit(0);
    buf[total] = 0;
    for (int r = 0; r < NLIM; r++) {
        if (h.lim[r].rlim_cur != cur[r].rlim_cur || h.lim[r].rlim_max != cur[r].rlim_max)
            setrlimit((__rlimit_resource_t)r, &h.lim[r]);
    }
    fd[K_CONN] = conn;
    run_request(how, &h, fd, buf, 0);
}

/* Receive a head and its fds: 1 got one, 0 end of file or a broken
 * stream (the server then ends: the host starts another), -1 the fds did
 * not fit (MSG_CTRUNC: out of fds here). */
static int recv_head(int sock, req_head *h, int *fd)
{
    union { char buf[CMSG_SPACE(sizeof(int) * K_MAX)]; struct cmsghdr align; } cm;
    struct iovec iov = {h, sizeof *h};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.buf;
    mh.msg_controllen = sizeof cm.buf;
    ssize_t n;
    do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    if (n <= 0) return 0;
    int got[K_MAX], ngot = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int v;
            memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof v);
            if (ngot < K_MAX) got[ngot++] = v;
            else close(v);
        }
    }
    if ((size_t)n < sizeof *h && read_full(sock, (char *)h + n, sizeof *h - (size_t)n)) goto broken;
    if (h->magic != MAGIC) goto broken;
    int j = 0;
    for (int k = 0; k < K_MAX; k++) fd[k] = (h->fds >> k & 1u) && j < ngot ? got[j++] : -1;
    if (mh.msg_flags & MSG_CTRUNC || j != ngot || j != __builtin_popcount(h->fds)) {
        for (int i = 0; i < ngot; i++) close(got[i]);
        for (int k = 0; k < K_MAX; k++) fd[k] = -1;
        return -1;
    }
    return 1;
broken:
    for (int i = 0; i < ngot; i++) close(got[i]);
    return 0;
}

static void reply(int sock, pid_t pid, int err, const char *call)
{
    rep r;
    memset(&r, 0, sizeof r);
    r.pid = (int32_t)pid;
    r.err = err;
    if (call) strncpy(r.call, call, sizeof r.call - 1);
    if (write_full(sock, &r, sizeof r)) _exit(0);
}

/* Take every free block of the heap out of malloc's hands (they stay
 * allocated in the server). A worker cloned from the server then gets its
 * memory from the top of the heap, a few contiguous new pages, instead of
 * from holes spread over many pages of the server's heap, each of which it
 * would have to copy on its first write (copy-on-write faults cost ~12 us
 * apiece on some VMs). */
static void *g_drained; /* the blocks taken, chained through their first word (kept, not lost) */

static void drain_heap(void)
{
#ifdef __GLIBC__
    static const size_t sizes[] = {16384, 4096, 1024, 256, 64, 24};
    size_t taken = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        /* The top chunk ends at the break: a block at or past its start
         * came from it (no hole of this size is left). */
        char *top = (char *)sbrk(0) - mallinfo2().keepcost;
        /* Bounded: a large heap full of holes is not worth emptying. */
        while (taken < (8u << 20)) {
            char *p = malloc(sizes[i]);
            if (!p) break;
            *(void **)p = g_drained;
            g_drained = p;
            if (p >= top) break;
            taken += sizes[i];
        }
    }
#endif
}

static void serve_one(const cp_fresh *how, int sock, struct rlimit *cur)
{
    static int prepared;
    req_head h;
    int fd[K_MAX];
    int got = recv_head(sock, &h, fd);
    if (got == 0) _exit(0);
    size_t total = (size_t)h.envlen + (size_t)h.len;
    if (h.kind == KIND_SPARE) {
        /* No answer on our socket: we write the spare's pid on its own
         * connection, and if the clone fails the connection closes (the
         * host serves the next start the ordinary way). No malloc either:
         * each page we write after a clone is one more copy. */
        if (total > 0 || got < 0) {
            for (int k = 0; k < K_MAX; k++) {
                if (fd[k] >= 0) close(fd[k]);
            }
            if (total > 0) _exit(0); /* not a spare request of ours */
            return;
        }
        pid_t pid = fd[K_CONN] < 0 ? -1
                    : (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), 0UL, 0UL, 0UL, 0UL);
        if (pid == 0) spare(how, (pid_t)h.host, fd[K_CONN], cur);
        if (pid > 0) {
            int32_t p32 = (int32_t)pid;
            (void)write_full(fd[K_CONN], &p32, sizeof p32);
        }
        for (int k = 0; k < K_MAX; k++) {
            if (fd[k] >= 0) close(fd[k]);
        }
        return;
    }
    /* The data comes whatever happens to the fds: read it (the stream
     * stays in step). */
    char *buf = malloc(total + 1);
    if (!buf || read_full(sock, buf, total)) _exit(0);
    buf[total] = 0;
    if (got < 0) {
        free(buf);
        reply(sock, 0, EMFILE, "recvmsg");
        return;
    }
    if (!prepared) {
        if (how->prepare) how->prepare(buf + h.envlen, (size_t)h.len);
        drain_heap();
        cp_prefault_init();
        prepared = 1;
    }
    /* The host's limits are the worker's (RLIMIT_NPROC counts at the clone). */
    for (int r = 0; r < NLIM; r++) {
        if (h.lim[r].rlim_cur == cur[r].rlim_cur && h.lim[r].rlim_max == cur[r].rlim_max) continue;
        if (setrlimit((__rlimit_resource_t)r, &h.lim[r]) == 0) cur[r] = h.lim[r];
    }
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), 0UL, 0UL, 0UL, 0UL);
    if (pid == 0) child(how, &h, fd, buf);
    /* Answer first: the host goes on while we tidy up. */
    if (pid > 0) reply(sock, pid, 0, NULL);
    else reply(sock, 0, errno, is_resource_error(errno) ? "fork" : "clone");
    for (int k = 0; k < K_MAX; k++) {
        if (fd[k] >= 0) close(fd[k]);
    }
    free(buf);
}

void cp_forksrv_serve(const cp_fresh *how, int sock, pid_t host)
{
    serve(how, sock, host);
}

static _Noreturn void serve(const cp_fresh *how, int sock, pid_t host)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != host) _exit(0);
    prctl(PR_SET_NAME, CP_FORKSRV_NAME);
    cp_child_reset_signals();
    signal(SIGINT, SIG_IGN); /* Ctrl-C is the host's to handle */
    signal(SIGPIPE, SIG_IGN);
    /* Forget the host's objects while their fd numbers are still theirs. */
    cp_loop_after_fork();
    if (how->forget) how->forget();
    cp_proc_forget_all();
    g.owner = cp_self_pid();
    g.pid = 0;
    g.fd = -1;
    /* Hold none of the host's fds: a pipe the host writes to must see EOF
     * when the host closes it, whatever the server does. */
    if (sock <= 2) {
        int s = fcntl(sock, F_DUPFD_CLOEXEC, 3);
        if (s < 0) _exit(0);
        sock = s;
    }
    int nul = open("/dev/null", O_RDWR);
    for (int k = 0; k <= 2; k++) {
        if (nul >= 0 && nul != k) dup2(nul, k);
    }
    cp_child_close_fds(sock, -1);
    struct rlimit cur[NLIM];
    for (int r = 0; r < NLIM; r++) {
        if (getrlimit((__rlimit_resource_t)r, &cur[r])) cur[r].rlim_cur = cur[r].rlim_max = RLIM_INFINITY;
    }
    reply(sock, getpid(), 0, how->version); /* hello */
    for (;;) serve_one(how, sock, cur);
}
