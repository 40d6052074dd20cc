/* forksrv.h: the fork server that starts fresh workers (proc.c uses it;
 * cp_proc_spawn_fresh in proc.h is the entry point).
 *
 * Why. fork() costs in proportion to the process that forks: its page
 * tables are copied, and every page either side writes afterwards takes a
 * copy-on-write fault (15-20 us each on some VMs); a worker forked from a
 * host with 100 workers alive also inherits their state and must walk it to
 * forget it. A fresh worker needs none of that. So while a fresh worker
 * runs, the next fresh workers are forked from one small process, the fork
 * server, forked from the host when it is first needed: the cost no longer
 * grows with the number of workers, nor with the host's growth after that.
 *
 * Lifetime. The server lives as long as the fresh workers do: a fresh start
 * with none running forks from a small host, and the server is stopped
 * when the last fresh worker is reaped, so a process without workers has no
 * extra child. A hold (cp_proc_hold_fresh: a pool that has replaced a
 * worker, until it ends) keeps it meanwhile; cp_proc_terminate_all (exit,
 * Ctrl-C, a worker's end) stops it whatever the holds.
 *
 * Exec'd. The server is started with posix_spawn (nothing of the host is
 * copied) of an executable that serves (cp_fresh.exec_path: coproc-lua,
 * run with LD_BIND_NOW): a worker cloned from it takes fewer page faults
 * and less private memory than one cloned from a server forked from the
 * host (which inherits the host's libraries, heap and lazy bindings).
 * Without such an executable, a small host forks the server; so it does
 * with COPROC_FORK_SERVER=fork (as valgrind runs need: an exec'd server
 * and its workers would run outside valgrind).
 *
 * Large hosts. A host whose malloc heap (its arena: a Lua state's small
 * objects; big blocks mapped on their own do not count) holds at most
 * CP_FORKSRV_MAX_HOST bytes forks its first worker itself: cheap, and a
 * program with one worker then has no server. Past that size a fork costs
 * more than starting a process afresh (the page tables alone): a larger
 * host takes every fresh worker from the server, the first too (so does
 * any host with COPROC_FORK_SERVER=exec); without an executable to serve
 * it forks them itself.
 *
 * Who is the parent. The server makes each worker with clone(CLONE_PARENT),
 * so the worker's parent is the host, exactly as if the host had forked it:
 * the host waitpid()s it (its exit status and signals), opens its pidfd, sets
 * its process group; PR_SET_PDEATHSIG ties it to the host; the Monitor finds
 * it among the host's children. The server is a child of the host too: it
 * dies with the host (PR_SET_PDEATHSIG, and at EOF of its socket), has no
 * children of its own, and is named CP_FORKSRV_NAME (the Monitor leaves it
 * out). A child made by clone() does not run pthread_atfork handlers, so the
 * server runs coproc's own (cp_forksrv_atfork_child).
 *
 * What a worker takes from the host at each start (sent with the request):
 * fds 0-2, the working directory, umask, environment, resource limits and
 * the process name. What it takes from the host as it was when the server
 * started: user and groups, scheduling (nice, CPU affinity), cgroup and
 * namespaces.
 *
 * The spare. After serving a worker the server clones the next one ahead
 * of time: a spare, set up as far as it can be without knowing what it
 * will run (the host's child, its own group, its connection, what
 * cp_fresh.warm makes), waiting on its connection (where the server
 * writes its pid for the host). The next fresh start hands it the request on that connection (one
 * send, no answer to wait for) and asks the server for another spare
 * without waiting either: the clone and the spare's set-up (most of its
 * copy-on-write faults) happen while the host does other things. A spare
 * is named CP_FORKSRV_NAME until it is taken (the Monitor leaves it out),
 * exists only while the server does (a stop lets the server finish the
 * spares it is cloning, then kills and reaps them; replacing a failed
 * server kills them; a spare ends at EOF of its connection and dies with
 * the host), and a spare that died, or whose server died, is reaped and
 * replaced by a worker served the ordinary way.
 *
 * Page faults. Every spare and served worker first maps in, in a few
 * madvise calls, the pages the server's first workers were seen to touch
 * (prefault.h): on some VMs each fault of a new process costs 25-60 us.
 *
 * Failure. A server that died, or does not answer within CP_FORKSRV_TIMEOUT
 * seconds, is killed, reaped and started again once; a stopped one
 * (SIGSTOP) at once, after its ready spares are used; a stopped spare is
 * killed, reaped and passed over; if it still cannot
 * serve, or the system refuses clone(CLONE_PARENT) (a sandbox, valgrind),
 * the caller forks the worker itself, as without a server. An error of the
 * fork itself (EAGAIN: out of processes) is the caller's error. */
#ifndef CP_FORKSRV_H
#define CP_FORKSRV_H

#include <stddef.h>
#include <sys/types.h>

#define CP_FORKSRV_NAME "coproc-forksrv" /* its comm (/proc/<pid>/stat) */
#define CP_FORKSRV_TIMEOUT 5.0            /* seconds for one answer */
#define CP_FORKSRV_MAX_HOST (256ull << 20) /* no fork of a larger heap */
#define CP_FORKSRV_SPARES 2                /* spares made ahead (see below) */

/* What a fresh worker runs (see cp_proc_spawn_fresh). */
typedef struct cp_fresh {
    /* In a process forked from the host (the server, or a worker forked
     * directly): drop what was inherited (messengers, ...). May be NULL. */
    void (*forget)(void);
    /* In the server, once, before its first worker, with that worker's
     * data: make what every worker would otherwise make for itself (the
     * copy-on-write clone shares it). May be NULL. */
    void (*prepare)(const char *data, size_t len);
    /* The worker's first code: fd is its connection, extra_fd the fd passed
     * with it (-1: none), data/len the request's bytes. Never returns. */
    void (*main)(int fd, int extra_fd, const char *data, size_t len);
    /* For a host too large to fork a server from: an executable that runs
     * as a server when started as
     *     <path> -E -e "require('coproc.core')._forkserver(<host pid>)"
     * (its socket on fd 3, see cp_forksrv_serve); NULL when there is none. */
    const char *(*exec_path)(void);
    /* Names this build (at most 15 bytes): a server answers with its own
     * and is used only when they are equal. */
    const char *version;
    /* In a spare, before it waits for its request: what every worker makes
     * first whatever it runs (its event loop, ...). May be NULL. */
    void (*warm)(void);
} cp_fresh;

/* Start a fresh worker through this process's server (started when
 * needed). alive: fresh workers of this process are running (without any,
 * a host of at most CP_FORKSRV_MAX_HOST bytes forks the worker itself).
 * conn is the worker's end of its connection, extra_fd an fd to hand it
 * (-1: none); the caller keeps and closes its copies. Returns the pid
 * (> 0), 0 when the server cannot or need not serve (the caller forks
 * itself), or -1 with errno set and *call naming what failed. */
pid_t cp_forksrv_spawn(const cp_fresh *how, int alive, int conn, int extra_fd, const char *data, size_t len,
                       const char **call);

/* Start a fresh worker by handing the request to this process's spare
 * (see above), when there is one ready and its server still runs. Returns
 * its pid (> 0) with *conn our end of its connection (the caller's), or 0
 * when there is no spare to take (then cp_forksrv_spawn). alive as for
 * cp_forksrv_spawn. */
pid_t cp_forksrv_take_spare(const cp_fresh *how, int alive, int extra_fd, const char *data, size_t len, int *conn);

/* The pids of this process's spares (at most max), oldest first, waiting
 * for each to say it is ready (bounded by the timeout); returns how many.
 * For tests. */
int   cp_forksrv_spare_pids(pid_t *pids, int max);

/* The loop of a server started by exec (exec_path): serve the host
 * through sock. Never returns. */
void  cp_forksrv_serve(const cp_fresh *how, int sock, pid_t host);

/* The pid of this process's server, 0 when there is none. */
pid_t cp_forksrv_pid(void);
/* 0 turns the server off for this process (fresh workers are forked from
 * it, and a running server is stopped), 1 on again (the default, unless the
 * environment has COPROC_FORK_SERVER=0). */
void  cp_forksrv_enable(int on);
/* Stop this process's server (kill and reap); the next fresh start makes a
 * new one. */
void  cp_forksrv_stop(void);
/* In a forked child: forget the parent's server (close the inherited
 * socket; the server is not ours). Idempotent. */
void  cp_forksrv_forget(void);

/* The bound on one answer of the server (<= 0: CP_FORKSRV_TIMEOUT); for
 * tests. */
void  cp_forksrv_set_timeout(double seconds);

/* Run the pthread_atfork child handlers that coproc's own code registered
 * (the link wraps pthread_atfork: -Wl,--wrap=pthread_atfork), as fork()
 * would have: for a child made by clone(). */
void  cp_forksrv_atfork_child(void);

#endif
