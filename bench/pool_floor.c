/* pool_floor.c: the C floor of Pool(2):map(x + 1) over n integers, the
 * yardstick of bench/pool_host.lua: a host and two forked workers over
 * socketpairs, batches of 8192 int64 items (raw, no encoding), at most 4
 * batches in flight per worker; each worker adds 1 to every item and sends
 * the batch back; the host stores the results in place, in order. Prints
 * `pool_floor <items/s> items/s`. Not a test.
 *
 *   pool_floor [n]     (default 1000000) */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

#define BATCH 8192
#define WINDOW 4
#define WORKERS 2

/* A batch on the wire: its first item's index, its count, the items. */
typedef struct head { int64_t lo, n; } head;

static void worker(int fd)
{
    int64_t *buf = malloc(sizeof *buf * BATCH);
    if (!buf) die("malloc");
    head h;
    while (read_all(fd, &h, sizeof h)) {
        if (h.n < 0 || h.n > BATCH) die("bad batch");
        read_all(fd, buf, sizeof *buf * (size_t)h.n);
        for (int64_t i = 0; i < h.n; i++) buf[i] += 1;
        write_all(fd, &h, sizeof h);
        write_all(fd, buf, sizeof *buf * (size_t)h.n);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    if (n < 1) {
        fprintf(stderr, "usage: pool_floor [n]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int64_t *items = malloc(sizeof *items * (size_t)n), *results = malloc(sizeof *results * (size_t)n);
    if (!items || !results) die("malloc");
    for (long i = 0; i < n; i++) items[i] = i + 1;
    int fds[WORKERS];
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
        int sz = 4 << 20; /* as coproc's: a window of batches fits both ways */
        for (int i = 0; i < 2; i++) {
            setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
            setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        }
        pids[w] = fork();
        if (pids[w] < 0) die("fork");
        if (pids[w] == 0) {
            /* only its own end: the other worker's host end must not be held */
            int fd = sv[1];
            if (fd > 3) close_range(3, (unsigned)fd - 1, 0);
            close_range((unsigned)fd + 1, ~0U, 0);
            worker(fd);
        }
        close(sv[1]);
        fds[w] = sv[0];
    }
    double t0 = now();
    long next = 0, done = 0;
    int inflight[WORKERS] = {0};
    while (done < n) {
        for (int w = 0; w < WORKERS; w++) {
            while (inflight[w] < WINDOW && next < n) {
                head h = {next, n - next < BATCH ? n - next : BATCH};
                write_all(fds[w], &h, sizeof h);
                write_all(fds[w], items + h.lo, sizeof *items * (size_t)h.n);
                next += h.n;
                inflight[w]++;
            }
        }
        struct pollfd p[WORKERS];
        for (int w = 0; w < WORKERS; w++) p[w] = (struct pollfd){fds[w], POLLIN, 0};
        if (poll(p, WORKERS, -1) < 0 && errno != EINTR) die("poll");
        for (int w = 0; w < WORKERS; w++) {
            if (!(p[w].revents & POLLIN)) continue;
            head h;
            if (!read_all(fds[w], &h, sizeof h)) die("worker gone");
            read_all(fds[w], results + h.lo, sizeof *results * (size_t)h.n);
            done += h.n;
            inflight[w]--;
        }
    }
    double dt = now() - t0;
    for (long i = 0; i < n; i++) {
        if (results[i] != items[i] + 1) die("wrong result");
    }
    for (int w = 0; w < WORKERS; w++) {
        close(fds[w]);
        waitpid(pids[w], NULL, 0);
    }
    printf("pool_floor %.0f items/s\n", (double)n / dt);
    return 0;
}
