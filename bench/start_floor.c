/* start_floor.c: the floor for starting a fresh worker, the yardstick of
 * bench/start_bench.lua: a small C process forks a child that makes a new
 * lua_State (luaL_newstate + luaL_openlibs) and writes one byte on a
 * socketpair; the time is fork to that byte in the parent. Measured one at a
 * time and for N children started at once (all forked, then all read).
 * Children stay alive until the timing is over (their exit is not counted,
 * as in the coproc bench). Also the children's mean PSS (proportional set
 * size: private pages plus a share of those shared) once all n_one are
 * running. Prints `name value unit` lines. Not a test.
 *
 *   start_floor [n_one] [n_many]      (defaults 50 and 256) */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

/* Fork a child that builds a state, says so, and waits for EOF. */
static int spawn(pid_t *pid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) die("fork");
    if (*pid == 0) {
        int fd = sv[1];
        /* Like a coproc worker: only its own end stays open. */
        if (fd > 3) close_range(3, (unsigned)fd - 1, 0);
        close_range((unsigned)fd + 1, ~0U, 0);
        lua_State *L = luaL_newstate();
        if (!L) _exit(1);
        luaL_openlibs(L);
        char c = 'h';
        if (write(fd, &c, 1) != 1) _exit(1);
        while (read(fd, &c, 1) > 0) {}
        _exit(0);
    }
    close(sv[1]);
    return sv[0];
}

static void first_byte(int fd)
{
    char c;
    ssize_t r;
    do r = read(fd, &c, 1); while (r < 0 && errno == EINTR);
    if (r != 1) die("read");
}

static void reap_all(int *fds, pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) close(fds[i]);
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR) {}
    }
}

/* The Pss of pid in KiB (smaps_rollup), -1 when unreadable. */
static long pss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Pss: %ld", &v) == 1) break;
    }
    fclose(f);
    return v;
}

static void bench(const char *name, int n, int at_once, const char *pss_name)
{
    int *fds = malloc(sizeof *fds * (size_t)n);
    pid_t *pids = malloc(sizeof *pids * (size_t)n);
    if (!fds || !pids) die("malloc");
    double t0 = now();
    for (int i = 0; i < n; i++) {
        fds[i] = spawn(&pids[i]);
        if (!at_once) first_byte(fds[i]);
    }
    if (at_once) for (int i = 0; i < n; i++) first_byte(fds[i]);
    double dt = now() - t0;
    long pss = 0;
    for (int i = 0; pss_name && i < n && pss >= 0; i++) {
        long v = pss_kib(pids[i]);
        pss = v < 0 ? -1 : pss + v;
    }
    reap_all(fds, pids, n);
    printf("%s %.1f us\n", name, dt / n * 1e6);
    if (pss_name && pss >= 0) printf("%s %.1f KiB\n", pss_name, (double)pss / n);
    free(fds);
    free(pids);
}

int main(int argc, char **argv)
{
    int one = argc > 1 ? atoi(argv[1]) : 50, many = argc > 2 ? atoi(argv[2]) : 256;
    if (one < 1 || many < 1) {
        fprintf(stderr, "usage: start_floor [n_one] [n_many]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench("floor_one", one, 0, "floor_pss");
    bench("floor_many", many, 1, NULL);
    return 0;
}
