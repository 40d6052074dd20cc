/* test_forksrv.c: fresh workers through the fork server (src/forksrv.c via
 * cp_proc_spawn_fresh): the host is their parent (waitpid, exit status,
 * signals, process group), they die with the host, they get the host's
 * current fds 0-2, working directory, umask, environment and limits and no
 * other fd, the server lives as long as they do, a dead or stuck server is
 * replaced, and a forked child forgets its parent's server. */
#include "check.h"
#include "pid_check.h"
#include "forksrv.h"
#include "loop.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What a worker reports about itself. */
typedef struct info {
    int pid, ppid, pgid, self_ok, nfds, umask, rlim_core, extra_ok;
    char cwd[256], env[64], name[17], out[8];
} info;

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        /* (valgrind keeps fds of its own near the limit, out of our reach) */
        if (e->d_name[0] != '.' && atoi(e->d_name) < 1024) n++;
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w <= 0) _exit(90);
        c += w;
        n -= (size_t)w;
    }
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The worker: report, then wait for one byte and exit with it (data "k":
 * kill itself with SIGKILL instead). */
static void worker_main(int fd, int extra_fd, const char *data, size_t len)
{
    info in;
    memset(&in, 0, sizeof in);
    in.pid = (int)getpid();
    in.ppid = (int)getppid();
    in.pgid = (int)getpgid(0);
    in.self_ok = cp_self_pid() == getpid();
    in.nfds = count_fds();
    mode_t u = umask(0);
    in.umask = (int)u;
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    in.rlim_core = (int)rl.rlim_cur;
    if (!getcwd(in.cwd, sizeof in.cwd)) in.cwd[0] = 0;
    const char *v = getenv("CP_FORKSRV_TEST");
    snprintf(in.env, sizeof in.env, "%s", v ? v : "(unset)");
    prctl(PR_GET_NAME, in.name);
    if (extra_fd >= 0) {
        char b[4] = {0};
        in.extra_ok = pread(extra_fd, b, 3, 0) == 3 && memcmp(b, "xyz", 3) == 0;
    }
    snprintf(in.out, sizeof in.out, "%.*s", (int)(len < 7 ? len : 7), data);
    if (write(1, "o", 1) != 1) _exit(91); /* fd 1 is the host's */
    write_all(fd, &in, sizeof in);
    char c;
    if (read(fd, &c, 1) != 1) _exit(0);
    if (len > 0 && data[0] == 'k') kill(getpid(), SIGKILL);
    _exit(c);
}

static const cp_fresh how = {NULL, NULL, worker_main, NULL, "test", NULL};

typedef struct w {
    cp_proc p;
    int fd;
    info in;
} w;

static int start(w *x, const char *data, int extra_fd)
{
    pid_t pid = cp_proc_spawn_fresh(&x->p, &x->fd, &how, extra_fd, data, strlen(data));
    if (pid <= 0) return -1;
    fcntl(x->fd, F_SETFL, 0);
    return read_all(x->fd, &x->in, sizeof x->in);
}

static void finish(w *x, char code)
{
    CHECK(write(x->fd, &code, 1) == 1);
    CHECK(cp_proc_wait(&x->p, 30) == 1);
    cp_proc_release(&x->p);
    close(x->fd);
}

static void name_of(pid_t pid, char *out, size_t n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    out[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    ssize_t r = read(fd, out, n - 1);
    close(fd);
    if (r > 0) out[r - (out[r - 1] == '\n')] = 0;
}

/* The first fresh worker is forked from here; the next ones come from the
 * server, and are ours all the same. */
static void test_served_workers(void)
{
    w a, b, c;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(cp_forksrv_pid() == 0);              /* a small host forks the first */
    CHECK(start(&b, "b", -1) == 0);
    pid_t srv = cp_forksrv_pid();
    CHECK(srv > 0);
    char name[32];
    name_of(srv, name, sizeof name);
    CHECK(strcmp(name, CP_FORKSRV_NAME) == 0);
    CHECK(start(&c, "k", -1) == 0);
    char me[17] = {0};
    prctl(PR_GET_NAME, me);
    info *all[] = {&a.in, &b.in, &c.in};
    for (int i = 0; i < 3; i++) {
        CHECK(all[i]->ppid == (int)getpid());   /* the host is the parent */
        CHECK(all[i]->pgid == all[i]->pid);     /* its own group */
        CHECK(all[i]->self_ok);                  /* coproc's pid cache is right */
        CHECK(all[i]->nfds == 4);                /* 0-2 and its connection */
        CHECK(strcmp(all[i]->name, me) == 0);    /* the host's name */
    }
    CHECK(strcmp(b.in.out, "b") == 0);
    CHECK(b.p.pgid == b.p.pid);
    int pfd = cp_pidfd_open(getpid()); /* none under valgrind */
    CHECK(b.p.pidfd >= 0 || pfd < 0);
    if (pfd >= 0) close(pfd);
    finish(&b, 7);
    CHECK(cp_proc_exitcode(&b.p) == 7);         /* waitpid by the host */
    finish(&c, 0);
    CHECK(cp_proc_exitcode(&c.p) == -SIGKILL);  /* and the signal */
    CHECK(cp_forksrv_pid() == srv);             /* a still runs */
    finish(&a, 3);
    CHECK(cp_proc_exitcode(&a.p) == 3);
    /* The last fresh worker is gone: so is the server, reaped. */
    CHECK(cp_forksrv_pid() == 0);
    CHECK(waitpid(srv, NULL, WNOHANG) < 0 && errno == ECHILD);
}

/* Pid's parent pid and process group (from /proc/<pid>/stat); -1 when gone. */
static int stat_of(pid_t pid, int *ppid, int *pgid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    char st;
    if (!p || sscanf(p + 1, " %c %d %d", &st, ppid, pgid) != 3) return -1;
    return 0;
}

/* After a served start the server makes CP_FORKSRV_SPARES spares ahead:
 * the host's children, in groups of their own, named like the server (the
 * Monitor leaves them out); the next starts are the spares themselves, a
 * spare that died is reaped and passed over, and the spares go (reaped)
 * with the server when the last fresh worker ends. */
static void test_spares(void)
{
    w a, b;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(start(&b, "b", -1) == 0);
    pid_t srv = cp_forksrv_pid();
    CHECK(srv > 0);
    pid_t sp[CP_FORKSRV_SPARES];
    CHECK(cp_forksrv_spare_pids(sp, CP_FORKSRV_SPARES) == CP_FORKSRV_SPARES);
    for (int i = 0; i < CP_FORKSRV_SPARES; i++) {
        int ppid = 0, pgid = 0;
        CHECK(stat_of(sp[i], &ppid, &pgid) == 0);
        CHECK(ppid == (int)getpid() && pgid == (int)sp[i]);
        char name[32];
        name_of(sp[i], name, sizeof name);
        CHECK(strcmp(name, CP_FORKSRV_NAME) == 0);
        CHECK(sp[i] != srv && sp[i] != a.in.pid && sp[i] != b.in.pid);
    }
    /* The next start is the oldest spare, and another is made. */
    w c;
    CHECK(start(&c, "c", -1) == 0);
    CHECK(c.in.pid == sp[0] && c.in.ppid == (int)getpid() && c.in.pgid == c.in.pid);
    CHECK(strcmp(c.in.out, "c") == 0 && c.in.nfds == 4);
    pid_t sp2[CP_FORKSRV_SPARES];
    CHECK(cp_forksrv_spare_pids(sp2, CP_FORKSRV_SPARES) == CP_FORKSRV_SPARES);
    CHECK(sp2[0] == sp[1] && sp2[1] != sp[0] && sp2[1] != sp[1]);
    /* A spare killed while waiting: reaped, and the start goes on. */
    kill(sp2[0], SIGKILL);
    siginfo_t si;
    CHECK(waitid(P_PID, (id_t)sp2[0], &si, WEXITED | WNOWAIT) == 0);
    w d;
    CHECK(start(&d, "d", -1) == 0);
    CHECK(d.in.pid != sp2[0] && d.in.ppid == (int)getpid());
    CHECK(waitpid(sp2[0], NULL, WNOHANG) < 0 && errno == ECHILD);
    pid_t sp3[CP_FORKSRV_SPARES];
    int n3 = cp_forksrv_spare_pids(sp3, CP_FORKSRV_SPARES);
    CHECK(n3 == CP_FORKSRV_SPARES);
    finish(&d, 0);
    finish(&c, 0);
    finish(&b, 0);
    CHECK(cp_forksrv_spare_pids(sp3, CP_FORKSRV_SPARES) == n3); /* a still runs */
    finish(&a, 0);
    /* No fresh worker left: no server and no spare, all reaped. */
    CHECK(cp_forksrv_pid() == 0);
    CHECK(cp_forksrv_spare_pids(sp, CP_FORKSRV_SPARES) == 0);
    CHECK(waitpid(srv, NULL, WNOHANG) < 0 && errno == ECHILD);
    for (int i = 0; i < n3; i++) CHECK(waitpid(sp3[i], NULL, WNOHANG) < 0 && errno == ECHILD);
    CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD); /* no child at all */
}

/* The last fresh worker ends while the server is still cloning the spares
 * it was asked for: each of them is reaped all the same (no child is left,
 * not even a zombie). */
static void test_stop_while_cloning(void)
{
    for (int i = 0; i < 20; i++) {
        w a, b;
        CHECK(start(&a, "a", -1) == 0);
        CHECK(start(&b, "b", -1) == 0); /* served: spares asked for, not waited for */
        finish(&b, 0);
        finish(&a, 0);
        CHECK(cp_forksrv_pid() == 0);
        CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
    }
}

/* What changed in the host after the server started reaches the next
 * worker: cwd, umask, environment, limits, fd 1; an extra fd is passed. */
static void test_host_state(void)
{
    w a, b;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(start(&b, "b", -1) == 0);             /* the server runs */
    CHECK(cp_forksrv_pid() > 0);
    char dir[] = "/tmp/cp_forksrv_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char old[256];
    CHECK(getcwd(old, sizeof old) != NULL);
    CHECK(chdir(dir) == 0);
    mode_t u = umask(027);
    setenv("CP_FORKSRV_TEST", "changed", 1);
    struct rlimit rl, saved;
    getrlimit(RLIMIT_CORE, &saved);
    rl = saved;
    rl.rlim_cur = 4096;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 4096) rl.rlim_cur = rl.rlim_max;
    CHECK(setrlimit(RLIMIT_CORE, &rl) == 0);
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    int out = dup(1);
    dup2(pfd[1], 1);
    char tmpl[] = "/tmp/cp_forksrv_extra_XXXXXX";
    int extra = mkstemp(tmpl);
    CHECK(extra >= 0 && write(extra, "xyz", 3) == 3);
    unlink(tmpl);

    w c;
    CHECK(start(&c, "c", extra) == 0);
    dup2(out, 1);
    close(out);
    char o = 0;
    CHECK(read(pfd[0], &o, 1) == 1 && o == 'o'); /* it wrote on our new fd 1 */
    CHECK(strcmp(c.in.cwd, dir) == 0);
    CHECK(c.in.umask == 027);
    CHECK(strcmp(c.in.env, "changed") == 0);
    CHECK(c.in.rlim_core == (int)rl.rlim_cur);
    CHECK(c.in.extra_ok);
    CHECK(c.in.nfds == 5);                       /* and the extra fd */

    CHECK(chdir(old) == 0);
    rmdir(dir);
    umask(u);
    unsetenv("CP_FORKSRV_TEST");
    setrlimit(RLIMIT_CORE, &saved);
    close(extra);
    close(pfd[0]);
    close(pfd[1]);
    finish(&c, 0);
    finish(&b, 0);
    finish(&a, 0);
}

/* A server that died is replaced; one that is stopped (SIGSTOP) is used
 * for the spares it made, then killed and replaced without waiting for the
 * timeout; a worker is started either way. */
static void test_server_failures(void)
{
    w a, b, c, e;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(start(&b, "b", -1) == 0);
    pid_t s1 = cp_forksrv_pid();
    CHECK(s1 > 0);
    pid_t spares1[CP_FORKSRV_SPARES];
    int n1 = cp_forksrv_spare_pids(spares1, CP_FORKSRV_SPARES);
    CHECK(n1 == CP_FORKSRV_SPARES || !cp_forksrv_pid()); /* (none when clone(CLONE_PARENT) is refused: valgrind) */
    kill(s1, SIGKILL);
    siginfo_t si;
    CHECK(waitid(P_PID, (id_t)s1, &si, WEXITED | WNOWAIT) == 0); /* dead, not reaped */
    CHECK(start(&c, "c", -1) == 0);
    pid_t s2 = cp_forksrv_pid();
    CHECK(s2 > 0 && s2 != s1);
    CHECK(c.in.ppid == (int)getpid());
    for (int i = 0; i < n1; i++) {
        CHECK(c.in.pid != spares1[i]);                                  /* its spares went with it ... */
        CHECK(waitpid(spares1[i], NULL, WNOHANG) < 0 && errno == ECHILD); /* ... reaped */
    }
    /* A stopped server: the spares it made serve the next starts (d), then
     * e, which would wait for a spare it never clones, comes from a new
     * server at once (well within the timeout). */
    pid_t spares2[CP_FORKSRV_SPARES];
    int n2 = cp_forksrv_spare_pids(spares2, CP_FORKSRV_SPARES);
    kill(s2, SIGSTOP);
    cp_forksrv_set_timeout(4.0);
    w ds[CP_FORKSRV_SPARES];
    for (int i = 0; i < n2; i++) {
        CHECK(start(&ds[i], "d", -1) == 0);
        CHECK(ds[i].in.pid == spares2[i]);
    }
    double t0 = cp_now();
    CHECK(start(&e, "e", -1) == 0);
    double dt = cp_now() - t0;
    CHECK(dt < 2.0);
    cp_forksrv_set_timeout(0);
    CHECK(waitpid(s2, NULL, WNOHANG) < 0 && errno == ECHILD); /* killed and reaped */
    CHECK(e.in.ppid == (int)getpid());
    /* (e came from a new server, or from here if that one was slower than
     * the short timeout: valgrind) */
    pid_t s3 = cp_forksrv_pid();
    CHECK(s3 > 0 && s3 != s2);
    finish(&e, 0);
    for (int i = 0; i < n2; i++) finish(&ds[i], 0);
    finish(&c, 0);
    finish(&b, 0);
    finish(&a, 0);
    CHECK(cp_forksrv_pid() == 0);
}

/* A host that dies takes its served workers (and its server) with it. */
static void test_die_with_host(void)
{
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t host = fork();
    if (host == 0) {
        close(pfd[0]);
        w a, b;
        if (start(&a, "a", -1) || start(&b, "b", -1)) _exit(1);
        pid_t sp[CP_FORKSRV_SPARES];
        int n = cp_forksrv_spare_pids(sp, CP_FORKSRV_SPARES);
        int pids[3 + CP_FORKSRV_SPARES] = {a.in.pid, b.in.pid, (int)cp_forksrv_pid()};
        for (int i = 0; i < n; i++) pids[3 + i] = (int)sp[i];
        write_all(pfd[1], pids, sizeof pids);
        pause();
        _exit(0);
    }
    close(pfd[1]);
    int pids[3 + CP_FORKSRV_SPARES] = {0};
    CHECK(read_all(pfd[0], pids, sizeof pids) == 0);
    close(pfd[0]);
    CHECK(pids[2] > 0 && pids[3] > 0);
    kill(host, SIGKILL);
    waitpid(host, NULL, 0);
    for (int i = 0; i < 3 + CP_FORKSRV_SPARES; i++) CHECK(pids[i] > 0 && gone_within(pids[i], 10));
}

/* A child forked from a host with a server forgets it: no server there,
 * and its own fresh workers work. */
static void test_forked_child_forgets(void)
{
    w a, b;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(start(&b, "b", -1) == 0);
    pid_t srv = cp_forksrv_pid();
    CHECK(srv > 0);
    cp_proc p;
    int fd = -1;
    pid_t pid = cp_proc_spawn(&p, &fd, 0);
    if (pid == 0) {
        pid_t sp[CP_FORKSRV_SPARES];
        int ok = cp_forksrv_pid() == 0 && cp_forksrv_spare_pids(sp, CP_FORKSRV_SPARES) == 0;
        w x, y;
        ok = ok && start(&x, "x", -1) == 0 && start(&y, "y", -1) == 0;
        ok = ok && cp_forksrv_pid() > 0 && cp_forksrv_pid() != srv && y.in.ppid == (int)getpid();
        write_all(fd, &ok, sizeof ok);
        _exit(0);
    }
    fcntl(fd, F_SETFL, 0);
    int ok = 0;
    CHECK(read_all(fd, &ok, sizeof ok) == 0 && ok == 1);
    CHECK(cp_proc_wait(&p, 30) == 1);
    cp_proc_release(&p);
    close(fd);
    CHECK(cp_forksrv_pid() == srv);              /* ours is untouched */
    finish(&b, 0);
    finish(&a, 0);
}

/* Turned off, every fresh worker is forked from here. */
static void test_disabled(void)
{
    cp_forksrv_enable(0);
    w a, b;
    CHECK(start(&a, "a", -1) == 0);
    CHECK(start(&b, "b", -1) == 0);
    CHECK(cp_forksrv_pid() == 0);
    CHECK(b.in.ppid == (int)getpid() && b.in.nfds == 4);
    finish(&b, 0);
    finish(&a, 0);
    cp_forksrv_enable(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_served_workers();
    test_spares();
    test_stop_while_cloning();
    test_host_state();
    test_server_failures();
    test_die_with_host();
    test_forked_child_forgets();
    test_disabled();
    return check_report("test_forksrv");
}
