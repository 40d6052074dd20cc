/* loop.c: see loop.h. */
#include "loop.h"
#include "source.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

static struct ev_loop *g_loop;
static pid_t g_loop_pid;
static volatile sig_atomic_t g_interrupt;
static ev_async g_wake;  /* lets a signal handler wake a blocked loop */
static ev_timer g_tick;  /* bounds a block while fd-less sources are started */
static int g_fds;        /* fd watchers of transports (cp_loop_count_fds) */

void cp_loop_count_fds(int delta) { g_fds += delta; }

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w; (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

static void on_wake_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents; /* being due ends the blocking round */
}

static pid_t g_self;

static void after_fork_child(void) { g_self = getpid(); }

pid_t cp_self_pid(void)
{
    if (!g_self) {
        g_self = getpid();
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    return g_self;
}

struct ev_loop *cp_loop(void)
{
    pid_t me = cp_self_pid();
    if (g_loop && g_loop_pid == me) return g_loop;
    /* A forked child starts over (cp_loop_after_fork dropped the inherited
     * loop; if nobody called it, the old loop is left alone: destroying it
     * now could close an fd number that has been reused since). */
    g_loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    g_loop_pid = me;
    g_fds = 0;
    ev_async_init(&g_wake, on_wake);
    ev_async_start(g_loop, &g_wake);
    ev_unref(g_loop); /* the wake-up watcher alone keeps nothing running */
    ev_timer_init(&g_tick, on_wake_timer, 0., 0.);
    return g_loop;
}

void cp_loop_after_fork(void)
{
    if (g_loop && g_loop_pid != cp_self_pid()) ev_loop_destroy(g_loop);
    g_loop = NULL;
}

double cp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cp_loop_interrupt(void)
{
    g_interrupt = 1;
    /* A flag alone can be missed by a wait that is just entering epoll;
     * ev_async_send is async-signal-safe and makes that wait return. */
    if (g_loop && g_loop_pid == cp_self_pid()) ev_async_send(g_loop, &g_wake);
}

static void (*g_check_mark)(void);
static int (*g_check_changed)(void);

void cp_loop_set_interrupt_check(void (*mark)(void), int (*changed)(void))
{
    g_check_mark = mark;
    g_check_changed = changed;
}

void cp_loop_mark(void)
{
    if (g_check_mark) g_check_mark();
}

int cp_loop_take_interrupt(void)
{
    if (g_interrupt) {
        g_interrupt = 0;
        return 1;
    }
    return g_check_changed && g_check_changed();
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    *(int *)w->data = 1;
    ev_break(loop, EVBREAK_ONE);
}

/* One round of a wait while fd-less sources are started (source.h): poll
 * them, then let libev look at the fds for as long as the back-off allows.
 * Asking libev costs a system call (several microseconds on a VM, more than
 * a message over shared memory): while the sources make progress or spin,
 * it is asked every few rounds only, and not at all while no transport
 * watches an fd (the caller checks its deadline itself, so the wait's own
 * timer needs no libev round). */
static void run_with_sources(struct ev_loop *loop)
{
    static unsigned rounds; /* since libev last looked at the fds */
    int fds = g_fds > 0;
    if (cp_source_poll_all()) {
        if (++rounds < 16 || !fds) return;
    } else if (!cp_source_backing_off() && (++rounds < 64 || !fds)) {
        /* spinning; the clock is read every 16th round */
        if ((rounds & 15) || cp_source_spinning()) return;
    }
    rounds = 0;
    double d = cp_source_next_sleep();
    if (d >= 1e-3) {
        ev_timer_set(&g_tick, d, 0.);
        ev_timer_start(loop, &g_tick);
        ev_run(loop, EVRUN_ONCE);
        ev_timer_stop(loop, &g_tick);
    } else {
        if (d > 0) {
            /* Shorter than epoll's millisecond: a plain sleep (a signal cuts
             * it short), the fds looked at right after. */
            struct timespec ts = {0, (long)(d * 1e9)};
            nanosleep(&ts, NULL);
        }
        if (fds) ev_run(loop, EVRUN_NOWAIT);
    }
    cp_source_poll_all();
}

static void (*g_at_idle)(void);

void cp_loop_at_idle(void (*fn)(void)) { g_at_idle = fn; }

int cp_loop_wait(int (*ready)(void *ud), void *ud, double timeout)
{
    if (ready(ud)) return 1;
    if (g_at_idle && timeout != 0) {
        void (*fn)(void) = g_at_idle;
        g_at_idle = NULL;
        fn();
        if (ready(ud)) return 1;
    }
    struct ev_loop *loop = cp_loop();
    cp_loop_mark();
    if (timeout == 0) {
        /* A zero timeout still takes in whatever has already arrived. */
        if (cp_source_any()) cp_source_poll_all();
        ev_run(loop, EVRUN_NOWAIT);
        return ready(ud) ? 1 : 0;
    }
    int expired = 0;
    ev_timer timer;
    if (timeout > 0) {
        ev_now_update(loop);
        ev_timer_init(&timer, on_timeout, timeout, 0.);
        timer.data = &expired;
        ev_timer_start(loop, &timer);
    }
    double deadline = timeout > 0 ? cp_now() + timeout : -1;
    int rc;
    for (;;) {
        if (cp_loop_take_interrupt()) { rc = -1; break; }
        if (cp_source_any()) {
            run_with_sources(loop);
            if (ready(ud)) { rc = 1; break; }
            /* (libev may not have run: the deadline is looked at here) */
            if (expired || (deadline > 0 && cp_now() >= deadline)) { rc = 0; break; }
            continue;
        }
        ev_run(loop, EVRUN_ONCE);
        if (ready(ud)) { rc = 1; break; }
        if (expired) { rc = 0; break; }
    }
    if (timeout > 0) ev_timer_stop(loop, &timer);
    return rc;
}
