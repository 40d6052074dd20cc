/* floor.h: what the C floors of bench/ share (raw_baseline.c, pool_floor.c,
 * start_floor.c): a monotonic clock, a fatal error, and whole reads and
 * writes over a socket. Header-only: each floor is one program. */
#ifndef CP_BENCH_FLOOR_H
#define CP_BENCH_FLOOR_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void die(const char *what)
{
    perror(what);
    exit(1);
}

static inline void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write");
        c += w;
        n -= (size_t)w;
    }
}

/* 0 at EOF before the first byte, 1 when n bytes were read; a message cut
 * short is fatal. */
static inline int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read");
        if (r == 0) {
            if (got == 0) return 0;
            fprintf(stderr, "truncated message\n");
            exit(1);
        }
        got += (size_t)r;
    }
    return 1;
}

#endif
