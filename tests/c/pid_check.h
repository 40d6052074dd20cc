/* pid_check.h: whether a process runs, for the C units that start
 * processes (test_proc.c, test_forksrv.c). */
#ifndef CP_TEST_PID_CHECK_H
#define CP_TEST_PID_CHECK_H

#include "loop.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Alive and not a zombie (/proc/<pid>/stat state). */
static inline int running(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Bounded wait for pid to stop running (it need not be our child). */
static inline int gone_within(pid_t pid, double seconds)
{
    double deadline = cp_now() + seconds;
    while (running(pid)) {
        if (cp_now() > deadline) return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

#endif
