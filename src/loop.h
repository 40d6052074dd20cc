/* loop.h: the per-process libev loop all messengers of a process share, and
 * the interrupt flag that makes blocking waits give up (Ctrl-C). */
#ifndef CP_LOOP_H
#define CP_LOOP_H

#include <ev.h>
#include <signal.h>
#include <sys/types.h>

/* The loop of the calling process; made on first use, and made anew in a
 * forked child (the parent's epoll set is never touched by the child). */
struct ev_loop *cp_loop(void);

/* In a freshly forked child, before any fd is closed or reused: drop the
 * inherited loop (closing our copy of its epoll fd while that fd number is
 * still the loop's). */
void cp_loop_after_fork(void);

/* This process's pid without a system call (kept up to date across fork by
 * an atfork handler): the "is this object mine?" checks run on hot paths. */
pid_t cp_self_pid(void);

/* Monotonic time in seconds. */
double cp_now(void);

/* Async-signal-safe: the next (or current) blocking wait returns early. */
void cp_loop_interrupt(void);
/* 1 if an interrupt is pending (consuming the flag): cp_loop_interrupt was
 * called, or the interrupt check (below) says so. */
int  cp_loop_take_interrupt(void);

/* A second source of interrupts, for interpreters whose SIGINT handler
 * cannot call cp_loop_interrupt (a stock lua5.4 only sets a Lua hook). A
 * signal makes epoll/poll return EINTR; after every such wake-up the wait
 * asks changed(), and a true answer ends it as interrupted. mark() is told
 * when a blocking wait begins (cp_loop_mark), so changed() can compare with
 * how things were then. Either may be NULL. */
void cp_loop_set_interrupt_check(void (*mark)(void), int (*changed)(void));
/* A blocking wait begins (cp_loop_wait calls it; so should any other wait
 * that takes interrupts, e.g. a process wait). */
void cp_loop_mark(void);

/* The fd watchers a transport keeps active in the loop, as they start
 * (delta > 0) and stop: a wait that polls fd-less sources (source.h) asks
 * epoll about fds only while there are some. */
void cp_loop_count_fds(int delta);

/* fn runs once, when a wait of this process is next about to block (its
 * next idle moment; a fresh worker's first, prefault.h); NULL: none. */
void cp_loop_at_idle(void (*fn)(void));

/* Run the loop until ready(ud) is true, timeout seconds pass (< 0: no
 * limit), or an interrupt arrives. Returns 1 ready, 0 timed out, -1
 * interrupted. ready() is checked before blocking. Fd-less event sources
 * (source.h) are polled in the same wait. */
int cp_loop_wait(int (*ready)(void *ud), void *ud, double timeout);

#endif
