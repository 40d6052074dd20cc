/* raw_baseline.c: what plain C over an AF_UNIX socketpair achieves, the
 * yardstick for bench/core_bench.lua. A parent and a forked child exchange
 * length-prefixed messages (4-byte length + payload) with blocking I/O.
 * Prints one `name value unit` line per measurement. Not a test. */
#define _GNU_SOURCE
#include <errno.h>
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

#define SMALL 40                 /* bytes per small message, prefix included */
#define RTT_WARMUP 2000
#define RTT_ITERS 20000
#define STREAM_EACH 1000000      /* messages, one write() each */
#define STREAM_BATCHED 10000000  /* messages, packed into 64 KiB writes */
#define BATCH (64 * 1024)
#define BIG (1024 * 1024)      /* the 1 MiB round trip; 16 and 64 MiB too */
#define BIG_MAX (64 * BIG)
#define FORKS 100

/* Writes a 4-byte length and then len payload bytes into out. */
static void frame(char *out, const char *payload, uint32_t len)
{
    memcpy(out, &len, 4);
    memcpy(out + 4, payload, len);
}

/* Forks a child running fn on its end of a socketpair; returns the parent's end. */
static int spawn(void (*fn)(int fd), pid_t *pid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) die("fork");
    if (*pid == 0) {
        /* Like a coproc worker: keep only its own end, so other children's
         * parent ends are not held open here. */
        int fd = sv[1];
        if (fd > 3) close_range(3, (unsigned)fd - 1, 0);
        close_range((unsigned)fd + 1, ~0U, 0);
        fn(fd);
        _exit(0);
    }
    close(sv[1]);
    return sv[0];
}

static void reap(int fd, pid_t pid)
{
    close(fd); /* the child sees EOF and leaves */
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "raw_baseline: child failed\n");
        exit(1);
    }
}

/* ---- children */

/* Echoes whole frames until EOF, into one buffer it keeps (grown when a
 * frame needs more, as a careful C program would: no fresh pages per frame). */
static void echo_child(int fd)
{
    size_t cap = 0;
    char *buf = NULL;
    uint32_t len;
    while (read_all(fd, &len, 4)) {
        if (len > BIG_MAX) die("frame too large");
        if (len + 4 > cap) {
            free(buf);
            cap = len + 4;
            buf = malloc(cap);
            if (!buf) die("malloc");
        }
        read_all(fd, buf + 4, len);
        memcpy(buf, &len, 4);
        write_all(fd, buf, len + 4);
    }
    free(buf);
}

/* Reads a stream of frames in big chunks, parsing each length prefix; a
 * frame whose payload starts with '!' is the end marker, answered with the
 * count of frames before it. */
static void sink_child(int fd)
{
    char *buf = malloc(BATCH * 2);
    if (!buf) die("malloc");
    size_t have = 0;
    uint64_t count = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, BATCH * 2 - have);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read");
        if (r == 0) break;
        have += (size_t)r;
        size_t pos = 0;
        while (have - pos >= 4) {
            uint32_t len;
            memcpy(&len, buf + pos, 4);
            if (have - pos < 4 + (size_t)len) break;
            if (len > 0 && buf[pos + 4] == '!') {
                char reply[12];
                frame(reply, (const char *)&count, 8);
                write_all(fd, reply, sizeof reply);
                count = 0;
            } else {
                count++;
            }
            pos += 4 + len;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
    free(buf);
}

/* Replies once, then waits for EOF (the parent closes it after timing). */
static void hello_child(int fd)
{
    char msg[SMALL];
    memset(msg, 'h', sizeof msg);
    frame(msg, msg + 4, SMALL - 4);
    write_all(fd, msg, SMALL);
    char c;
    while (read(fd, &c, 1) > 0) {}
}

/* ---- measurements */

static void bench_rtt(void)
{
    pid_t pid;
    int fd = spawn(echo_child, &pid);
    char msg[SMALL], in[SMALL];
    char payload[SMALL - 4];
    memset(payload, 'a', sizeof payload);
    frame(msg, payload, SMALL - 4);
    double t0 = 0;
    for (int i = 0; i < RTT_WARMUP + RTT_ITERS; i++) {
        if (i == RTT_WARMUP) t0 = now();
        write_all(fd, msg, SMALL);
        read_all(fd, in, SMALL);
    }
    double dt = now() - t0;
    printf("rtt_small %.2f us\n", dt / RTT_ITERS * 1e6);
    reap(fd, pid);
}

static uint64_t stream_end(int fd)
{
    char end[SMALL], reply[12];
    char payload[SMALL - 4];
    memset(payload, '!', sizeof payload);
    frame(end, payload, SMALL - 4);
    write_all(fd, end, SMALL);
    read_all(fd, reply, sizeof reply);
    uint64_t n;
    memcpy(&n, reply + 4, 8);
    return n;
}

/* n small frames, one write() each (batched == 0) or packed into 64 KiB
 * writes, then the end marker and its reply. */
static void bench_stream(const char *name, long n, int batched)
{
    pid_t pid;
    int fd = spawn(sink_child, &pid);
    char payload[SMALL - 4];
    memset(payload, 's', sizeof payload);
    char *buf = malloc(BATCH);
    if (!buf) die("malloc");
    /* warm-up round */
    for (int i = 0; i < 1000; i++) {
        frame(buf, payload, SMALL - 4);
        write_all(fd, buf, SMALL);
    }
    stream_end(fd);
    double t0 = now();
    size_t used = 0;
    for (long i = 0; i < n; i++) {
        if (batched) {
            if (used + SMALL > BATCH) {
                write_all(fd, buf, used);
                used = 0;
            }
            frame(buf + used, payload, SMALL - 4);
            used += SMALL;
        } else {
            frame(buf, payload, SMALL - 4);
            write_all(fd, buf, SMALL);
        }
    }
    if (used) write_all(fd, buf, used);
    uint64_t got = stream_end(fd);
    double dt = now() - t0;
    if (got != (uint64_t)n) {
        fprintf(stderr, "raw_baseline: sink counted %llu of %ld\n", (unsigned long long)got, n);
        exit(1);
    }
    printf("%s %.0f msgs/s\n", name, (double)n / dt);
    free(buf);
    reap(fd, pid);
}

/* Round trips of size bytes through the echo child, both buffers reused. */
static void bench_big(const char *name, size_t size, int warmup, int iters)
{
    pid_t pid;
    int fd = spawn(echo_child, &pid);
    char *out = malloc(size + 4), *in = malloc(size + 4);
    if (!out || !in) die("malloc");
    memset(out + 4, 'b', size);
    uint32_t len = (uint32_t)size;
    memcpy(out, &len, 4);
    double t0 = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup) t0 = now();
        write_all(fd, out, size + 4);
        read_all(fd, in, size + 4);
    }
    double dt = now() - t0;
    if (memcmp(in, out, size + 4) != 0) {
        fprintf(stderr, "raw_baseline: %s echo differs\n", name);
        exit(1);
    }
    printf("%s %.2f GB/s\n", name, 2.0 * (double)size * iters / dt / 1e9);
    free(out);
    free(in);
    reap(fd, pid);
}

/* Fork to first reply: the children stay alive until timing is over, so
 * their exit and reaping are not counted (the coproc bench does the same). */
static void bench_fork(void)
{
    pid_t pids[FORKS];
    int fds[FORKS];
    char in[SMALL];
    double t0 = now();
    for (int i = 0; i < FORKS; i++) {
        fds[i] = spawn(hello_child, &pids[i]);
        read_all(fds[i], in, SMALL);
    }
    double dt = now() - t0;
    for (int i = 0; i < FORKS; i++) reap(fds[i], pids[i]);
    printf("start_first_reply %.1f us\n", dt / FORKS * 1e6);
}

/* No arguments: every group; else only the groups named (rtt, stream,
 * big, start), so large round trips can be interleaved with core_bench.lua. */
static int wanted(int argc, char **argv, const char *group)
{
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], group) == 0) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (wanted(argc, argv, "rtt")) bench_rtt();
    if (wanted(argc, argv, "stream")) {
        bench_stream("stream_small_write", STREAM_EACH, 0);
        bench_stream("stream_small_batched", STREAM_BATCHED, 1);
    }
    if (wanted(argc, argv, "big")) {
        bench_big("roundtrip_1mib", BIG, 10, 300);
        bench_big("roundtrip_16mib", 16 * BIG, 8, 30);
        bench_big("roundtrip_64mib", 64 * BIG, 6, 10);
    }
    if (wanted(argc, argv, "start")) bench_fork();
    return 0;
}
