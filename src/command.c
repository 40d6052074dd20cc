/* command.c: see command.h. */
#define _GNU_SOURCE /* pipe2 */
#include "command.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int cp_command_spawn(cp_command *c, char *const argv[])
{
    memset(c, 0, sizeof *c);
    c->pidfd = -1;
    if (!argv || !argv[0]) { errno = EINVAL; return -1; }
    int p[2];
    if (pipe2(p, O_CLOEXEC)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        /* Exec keeps ignored signals ignored and the mask: reset both. */
        for (int s = 1; s < NSIG; s++)
            if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(p[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(p[1]);
    int e = 0;
    ssize_t r;
    do r = read(p[0], &e, sizeof e); while (r < 0 && errno == EINTR);
    close(p[0]);
    c->pid = pid;
    if (r == (ssize_t)sizeof e) { /* exec failed: reap and report */
        waitpid(pid, NULL, 0);
        c->pid = 0;
        errno = e;
        return -1;
    }
    c->pidfd = cp_pidfd_open(pid);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cp_command_wait(cp_command *c, double timeout)
{
    if (c->reaped) return 1;
    if (c->pid <= 0) { errno = ECHILD; return -1; }
    double deadline = timeout >= 0 ? now() + timeout : 0;
    for (;;) {
        pid_t r = waitpid(c->pid, &c->status, WNOHANG);
        if (r == c->pid) { c->reaped = 1; return 1; }
        if (r < 0 && errno != EINTR) return -1;
        double left = timeout >= 0 ? deadline - now() : -1;
        if (timeout >= 0 && left <= 0) return 0;
        if (c->pidfd >= 0) {
            /* The pidfd turns readable when the program exits. */
            struct pollfd pf = {c->pidfd, POLLIN, 0};
            int ms = left < 0 ? -1 : (int)(left * 1000) + 1;
            if (poll(&pf, 1, ms) < 0 && errno == EINTR) return -1;
        } else {
            struct timespec ts = {0, 10 * 1000 * 1000};
            if (nanosleep(&ts, NULL) < 0 && errno == EINTR) return -1;
        }
    }
}

int cp_command_exitcode(const cp_command *c)
{
    if (!c->reaped) return -1;
    if (WIFEXITED(c->status)) return WEXITSTATUS(c->status);
    if (WIFSIGNALED(c->status)) return 128 + WTERMSIG(c->status);
    return -1;
}

void cp_command_release(cp_command *c)
{
    if (c->pidfd >= 0) close(c->pidfd);
    c->pidfd = -1;
}
