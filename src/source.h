/* source.h: event sources without a file descriptor (MPI), part of the
 * process's loop (loop.h).
 *
 * libev sleeps in epoll until an fd is ready; a source that has no fd can
 * only be asked. While any source is started, every cp_loop_wait polls the
 * started sources, before it lets libev block and after each wake-up, and
 * bounds how long libev may block, so one wait covers sockets and sources
 * alike without spinning a core:
 *
 *   spin     for CP_SOURCE_SPIN seconds after the last progress, the loop
 *            does not block (fds are still looked at, with a zero timeout);
 *   back off then it sleeps between polls, CP_SOURCE_SLEEP_MIN doubling up
 *            to CP_SOURCE_SLEEP_MAX; a sleep shorter than 1 ms (epoll's
 *            granularity) is a plain nanosleep, fds being looked at after
 *            it; from 1 ms on, libev blocks in epoll with a timer, so a
 *            socket wakes the wait at once.
 *
 * Any progress (a source's poll returning > 0), and any send through a
 * source (cp_source_activity), starts the spin again. So a
 * ping-pong never sleeps, and a host that waits seconds for a slow task
 * wakes about a thousand times a second, for a few microseconds each.
 * Sources belong to the process that started them: a forked child never
 * polls its parent's. No Lua here. */
#ifndef CP_SOURCE_H
#define CP_SOURCE_H

#include <sys/types.h>

#define CP_SOURCE_SPIN      50e-6
#define CP_SOURCE_SLEEP_MIN 20e-6
#define CP_SOURCE_SLEEP_MAX 1e-3

typedef struct cp_source {
    /* Make what progress can be made now (run the messengers' callbacks);
     * > 0 when something happened, else 0. */
    int  (*poll)(struct cp_source *s);
    struct cp_source *next;
    pid_t owner;   /* 0 while stopped */
} cp_source;

/* Start / stop polling s (idempotent). */
void cp_source_start(cp_source *s);
void cp_source_stop(cp_source *s);

/* Any source of this process is started. */
int  cp_source_any(void);
/* The longest back-off step (default CP_SOURCE_SLEEP_MAX): a process that
 * only waits for rare work (an idle MPI rank) may wake less often. */
void cp_source_set_max_sleep(double seconds);
/* Poll every source of this process once; > 0 when one made progress
 * (which restarts the spin). */
int  cp_source_poll_all(void);
/* Something was sent through a source: an answer may follow soon, so
 * spin again (a ping-pong whose peer takes longer than the spin to answer
 * would otherwise back off at every message). */
void cp_source_activity(void);
/* Still within CP_SOURCE_SPIN of the last progress. */
int  cp_source_spinning(void);
/* Past the spin: every wait round sleeps (the next back-off step). */
int  cp_source_backing_off(void);
/* How long the next wait may block before the sources are polled again,
 * after a poll that made no progress: 0 (spin), or the next back-off step,
 * which this advances. */
double cp_source_next_sleep(void);

#endif
