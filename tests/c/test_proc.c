/* test_proc.c: child processes (src/proc.c): where a worker's socket lands,
 * fds 0-2 kept open, process groups and what terminate takes with it, the
 * exit-code convention, exec'd commands, the interruptible wait, and
 * terminate_all. */
#include "check.h"
#include "pid_check.h"
#include "loop.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static void write_all(int fd, const void *p, size_t n)
{
    CHECK(write(fd, p, n) == (ssize_t)n);
}

static int read_int(int fd)
{
    int v = -1;
    ssize_t n;
    do n = read(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof v ? v : -1;
}

/* A worker that reports its connection fd, its pgid and whether 0-2 are
 * open, then exits with code. */
static void test_worker_fds(int close_fds)
{
    cp_proc p;
    int fd = -1;
    pid_t pid = cp_proc_spawn(&p, &fd, close_fds);
    if (pid == 0) {
        int info[3] = {fd, (int)getpgid(0), is_open(0) && is_open(1) && is_open(2)};
        write_all(fd, info, sizeof info);
        _exit(7);
    }
    CHECK(pid > 0 && fd > 2);
    CHECK(p.pgid == pid);
    int info[3] = {-1, -1, -1};
    fcntl(fd, F_SETFL, 0);
    CHECK(read(fd, info, sizeof info) == (ssize_t)sizeof info);
    CHECK(info[0] > 2);          /* never on stdio */
    CHECK(info[1] == (int)pid);  /* leads its own group */
    CHECK(info[2] == 1);
    CHECK(cp_proc_wait(&p, 30) == 1);
    CHECK(cp_proc_exitcode(&p) == 7);
    CHECK(cp_proc_wait(&p, 0) == 1); /* idempotent */
    cp_proc_release(&p);
    close(fd);
}

/* fd 3 held by the caller: the worker's socket must not replace it. */
static void test_fd3_kept(void)
{
    int saved = fcntl(3, F_DUPFD_CLOEXEC, 10); /* whatever was on 3 */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    if (pfd[0] != 3) { dup2(pfd[0], 3); close(pfd[0]); }
    cp_proc p;
    int fd = -1;
    pid_t pid = cp_proc_spawn(&p, &fd, 0);
    if (pid == 0) {
        /* fd 3 is still the pipe, not the socket. */
        struct stat st;
        int ok = fd != 3 && fstat(3, &st) == 0 && S_ISFIFO(st.st_mode);
        write_all(pfd[1], &ok, sizeof ok);
        _exit(0);
    }
    CHECK(fd != 3);
    CHECK(read_int(3) == 1);
    CHECK(cp_proc_wait(&p, 30) == 1);
    cp_proc_release(&p);
    close(fd);
    close(3);
    close(pfd[1]);
    if (saved >= 0) { dup2(saved, 3); close(saved); }
}

/* stdin and stdout closed: spawn fills them first, so the socket lands
 * above 2, and so does the child's; cp_proc_keep_stdio fills them. */
static void test_closed_stdio(void)
{
    int s0 = dup(0), s1 = dup(1);
    close(0);
    close(1);
    cp_proc p;
    int fd = -1;
    pid_t pid = cp_proc_spawn(&p, &fd, 1);
    if (pid == 0) {
        int ok = fd > 2 && is_open(0) && is_open(1) && is_open(2);
        write_all(fd, &ok, sizeof ok);
        _exit(0);
    }
    int ok_parent = fd > 2 && is_open(0) && is_open(1);
    fcntl(fd, F_SETFL, 0);
    int ok_child = read_int(fd);
    CHECK(cp_proc_wait(&p, 30) == 1);
    cp_proc_release(&p);
    close(fd);
    dup2(s0, 0);
    dup2(s1, 1);
    close(s0);
    close(s1);
    CHECK(ok_parent);
    CHECK(ok_child == 1);

    /* Directly: a closed fd 1 becomes /dev/null, open ones stay. */
    int s = dup(1);
    close(1);
    CHECK(!is_open(1));
    CHECK(cp_proc_keep_stdio() == 0);
    CHECK(is_open(1));
    char path[64], link[64] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/1");
    CHECK(readlink(path, link, sizeof link - 1) > 0 && strcmp(link, "/dev/null") == 0);
    dup2(s, 1);
    close(s);
}

/* The worker starts a grandchild (its group) and waits; terminate takes
 * both. Then a worker that exits by itself: reaping it kills what is left
 * of its group. */
static void test_group_terminate(void)
{
    for (int round = 0; round < 2; round++) {
        cp_proc p;
        int fd = -1;
        pid_t pid = cp_proc_spawn(&p, &fd, 1);
        if (pid == 0) {
            pid_t g = fork();
            if (g == 0) { /* the grandchild ignores SIGTERM: only SIGKILL ends it */
                signal(SIGTERM, SIG_IGN);
                for (;;) pause();
            }
            int v = (int)g;
            write_all(fd, &v, sizeof v);
            if (round == 1) _exit(0); /* leaves its grandchild behind */
            for (;;) pause();
        }
        fcntl(fd, F_SETFL, 0);
        pid_t g = (pid_t)read_int(fd);
        CHECK(g > 0 && running(g));
        if (round == 0) {
            double t0 = cp_now();
            cp_proc_terminate(&p, 5);
            CHECK(cp_now() - t0 < 4);          /* the worker died of SIGTERM */
            CHECK(cp_proc_exitcode(&p) == -SIGTERM);
        } else {
            CHECK(cp_proc_wait(&p, 30) == 1);
            CHECK(cp_proc_exitcode(&p) == 0);
        }
        CHECK(gone_within(g, 10));
        if (running(g)) kill(g, SIGKILL);
        cp_proc_release(&p);
        close(fd);
    }
}

/* A stopped worker gets SIGCONT with its SIGTERM: one that handles SIGTERM
 * (here: exit 3) runs its handler at once instead of being SIGKILLed after
 * the grace period. */
static void on_term(int sig) { (void)sig; _exit(3); }

static void test_terminate_stopped(void)
{
    cp_proc p;
    int fd = -1;
    pid_t pid = cp_proc_spawn(&p, &fd, 1);
    if (pid == 0) {
        signal(SIGTERM, on_term);
        int v = 1;
        write_all(fd, &v, sizeof v);
        for (;;) pause();
    }
    fcntl(fd, F_SETFL, 0);
    CHECK(read_int(fd) == 1);
    CHECK(kill(pid, SIGSTOP) == 0);
    siginfo_t si;
    CHECK(waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOWAIT) == 0);
    double t0 = cp_now();
    cp_proc_terminate(&p, 20);
    CHECK(cp_now() - t0 < 10);
    CHECK(cp_proc_exitcode(&p) == 3);
    cp_proc_release(&p);
    close(fd);
}

static void on_alarm(int sig) { (void)sig; }

static void test_exec(void)
{
    cp_proc c;
    char *ok[] = {"sh", "-c", "exit 7", NULL};
    CHECK(cp_proc_spawn_exec(&c, ok) == 0 && c.pid > 0 && c.pgid == 0);
    CHECK(cp_proc_wait_intr(&c, 30) == 1);
    CHECK(cp_proc_exitcode(&c) == 7);
    cp_proc_release(&c);

    /* Killed: -signal. Timeout first. */
    char *slow[] = {"sleep", "30", NULL};
    CHECK(cp_proc_spawn_exec(&c, slow) == 0);
    CHECK(getpgid(c.pid) == getpgid(0)); /* commands share our group */
    CHECK(cp_proc_wait_intr(&c, 0.05) == 0);
    CHECK(cp_proc_exitcode(&c) == INT_MIN);
    /* A signal handler that runs ends the interruptible wait. */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, &old);
    /* Repeating: one that lands between two system calls is not seen (a
     * pidfd-less wait, as under valgrind, spends less time asleep). */
    struct itimerval every = {{0, 100000}, {0, 100000}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every, NULL);
    errno = 0;
    CHECK(cp_proc_wait_intr(&c, 30) == -1 && errno == EINTR);
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    cp_proc_terminate(&c, 5);
    CHECK(cp_proc_exitcode(&c) == -SIGTERM);
    cp_proc_release(&c);

    char *missing[] = {"/nonexistent/coproc-no-such-program", NULL};
    errno = 0;
    CHECK(cp_proc_spawn_exec(&c, missing) == -1 && errno == ENOENT);
    CHECK(c.failed_call && strcmp(c.failed_call, "execvp") == 0);
    CHECK(c.pid == 0);
}

/* Every worker, one grace period: the ones that ignore SIGTERM are
 * SIGKILLed at its end, all reaped. */
static void test_terminate_all(void)
{
    enum { N = 4 };
    cp_proc p[N];
    int fds[N];
    for (int i = 0; i < N; i++) {
        pid_t pid = cp_proc_spawn(&p[i], &fds[i], 1);
        if (pid == 0) {
            if (i % 2) signal(SIGTERM, SIG_IGN);
            int v = 1;
            write_all(fds[i], &v, sizeof v);
            for (;;) pause();
        }
        fcntl(fds[i], F_SETFL, 0);
        CHECK(read_int(fds[i]) == 1);
    }
    double t0 = cp_now();
    cp_proc_terminate_all(0.3);
    double dt = cp_now() - t0;
    CHECK(dt < 3); /* one grace for all, not one each */
    for (int i = 0; i < N; i++) {
        CHECK(p[i].reaped);
        CHECK(cp_proc_exitcode(&p[i]) == (i % 2 ? -SIGKILL : -SIGTERM));
        close(fds[i]);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_worker_fds(0);
    test_worker_fds(1);
    test_fd3_kept();
    test_closed_stdio();
    test_group_terminate();
    test_terminate_stopped();
    test_exec();
    test_terminate_all();
    return check_report("test_proc");
}
