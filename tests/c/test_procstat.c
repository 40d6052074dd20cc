/* test_procstat.c: /proc parsing, reading, descendant scans and the tracked
 * set (src/procstat.c, src/proctrack.c). */
#include "procstat.h"
#include "proctrack.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static void test_parse_stat(void)
{
    /* comm with spaces and parentheses: the name ends at the last ')'. */
    const char *t = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 120 0 0 0 "
                    "30 12 0 0 20 0 1 0 987654 12345678 300 18446744073709551615 "
                    "1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
    cp_procsample s;
    memset(&s, 0, sizeof s);
    CHECK(cp_procstat_parse_stat(t, strlen(t), &s) == 0);
    CHECK(s.pid == 4242);
    CHECK(strcmp(s.name, "my (odd) name") == 0);
    CHECK(s.state == 'S');
    CHECK(s.ppid == 17);
    CHECK(s.cpu_ticks == 42);
    CHECK(s.start == 987654);
    CHECK(s.vms == 12345678);
    CHECK(s.rss == 300ull * (unsigned long long)cp_procstat_pagesize());
    CHECK(cp_procstat_parse_stat("12 (x) S 1 2", 12, &s) == -1); /* truncated */
    CHECK(cp_procstat_parse_stat("garbage", 7, &s) == -1);
}

static void test_parse_smaps(void)
{
    const char *t = "55f0-7ffc ---p 00000000 00:00 0   [rollup]\n"
                    "Rss:                1692 kB\nPss:                 395 kB\n"
                    "Pss_Dirty:           112 kB\nShared_Clean:       1520 kB\n"
                    "Private_Clean:        60 kB\nPrivate_Dirty:       112 kB\n"
                    "Private_Hugetlb:        0 kB\n";
    cp_procsample s;
    s.pss = s.uss = -1;
    CHECK(cp_procstat_parse_smaps(t, strlen(t), &s) == 0);
    CHECK(s.pss == 395 * 1024);          /* not Pss_Dirty */
    CHECK(s.uss == (60 + 112) * 1024);
    CHECK(cp_procstat_parse_smaps("Rss: 1 kB\n", 10, &s) == -1);
}

static void test_parse_statm(void)
{
    unsigned long long vms = 0, rss = 0, ps = (unsigned long long)cp_procstat_pagesize();
    unsigned long long code = 0;
    CHECK(cp_procstat_parse_statm("2980 345 300 5 0 150 0\n", 23, &vms, &rss, &code) == 0);
    CHECK(vms == 2980 * ps && rss == 345 * ps && code == 5 * ps);
    CHECK(cp_procstat_parse_statm("0 0 0 0 0 0 0\n", 14, &vms, &rss, NULL) == 0 && vms == 0 && rss == 0);
    CHECK(cp_procstat_parse_statm("12", 2, &vms, &rss, NULL) == -1);
    CHECK(cp_procstat_parse_statm("12 3", 4, &vms, &rss, &code) == -1); /* no code field */
}

static void test_children_and_pidvec(void)
{
    cp_pidvec v = {0};
    CHECK(cp_procstat_parse_children("12 345 7 ", 9, 345, &v) == 0);
    CHECK(v.n == 2 && v.v[0] == 12 && v.v[1] == 7);
    CHECK(cp_procstat_parse_children("", 0, 0, &v) == 0 && v.n == 2);
    CHECK(cp_pidvec_has(&v, 7) && !cp_pidvec_has(&v, 345));
    for (int i = 0; i < 1000; i++) CHECK(cp_pidvec_push(&v, i + 100) == 0); /* grows */
    CHECK(v.n == 1002 && v.v[1001] == 1099);
    cp_pidvec_free(&v);
    CHECK(v.v == NULL && v.n == 0);
}

static void test_read_self(void)
{
    cp_procsample s;
    CHECK(cp_procstat_read(getpid(), &s, 1) == 0);
    CHECK(s.pid == getpid());
    CHECK(s.ppid == getppid());
    CHECK(s.rss > 0 && s.vms >= s.rss);
    CHECK(s.pss > 0 && s.uss > 0 && (unsigned long long)s.uss <= s.rss);
    CHECK(strstr(s.name, "test_procstat") == s.name || strlen(s.name) == 15);
    CHECK(cp_procstat_exists(getpid()));
    /* pid_max is at most 2^22, so this pid cannot exist. */
    CHECK(!cp_procstat_exists(1 << 23));
    errno = 0;
    CHECK(cp_procstat_read(1 << 23, &s, 0) == -1 && errno == ENOENT);
}

/* A child that touches mb megabytes, reports, then waits to be killed;
 * with grandchild it first forks one more sleeper under itself. */
static pid_t spawn(int mb, int grandchild, pid_t *gc_out)
{
    int p[2];
    if (pipe(p)) abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        pid_t gc = 0;
        if (grandchild) {
            gc = fork();
            if (gc == 0) { for (;;) pause(); }
        }
        if (mb) {
            char *m = malloc((size_t)mb << 20);
            if (!m) _exit(3);
            volatile char *v = m; /* volatile: the stores must happen */
            for (size_t i = 0; i < ((size_t)mb << 20); i += 4096) v[i] = 1;
        }
        if (write(p[1], &gc, sizeof gc) != sizeof gc) _exit(4);
        for (;;) pause();
    }
    close(p[1]);
    pid_t gc = 0;
    if (read(p[0], &gc, sizeof gc) != sizeof gc) abort();
    close(p[0]);
    if (gc_out) *gc_out = gc;
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_child_memory_and_tree(void)
{
    pid_t gc = 0;
    pid_t a = spawn(48, 1, &gc);
    pid_t b = spawn(0, 0, NULL);
    cp_procsample s;
    CHECK(cp_procstat_read(a, &s, 1) == 0);
    CHECK(s.rss >= 48ull << 20);
    CHECK(s.uss >= 48ll << 20);
    CHECK(s.ppid == getpid());

    /* The one walk, from either source of children, gives the same tree. */
    cp_pidvec out = {0};
    long n = cp_procstat_descendants(getpid(), 0, &out);
    CHECK(n == 3);
    CHECK(cp_pidvec_has(&out, a) && cp_pidvec_has(&out, b) && cp_pidvec_has(&out, gc));
    cp_ppid_table table = {0};
    CHECK(cp_procstat_ppid_table(&table) == 0 && table.pid.n > 3);
    n = cp_procstat_walk(getpid(), 0, cp_procstat_table_children, &table, &out);
    CHECK(n == 3 && cp_pidvec_has(&out, gc));
    /* Pruning a leaves out its grandchild too. */
    n = cp_procstat_walk(getpid(), a, cp_procstat_table_children, &table, &out);
    CHECK(n == 1 && out.v[0] == b);
    cp_procstat_ppid_table_free(&table);
    if (cp_procstat_have_children_files()) {
        n = cp_procstat_walk(getpid(), 0, cp_procstat_task_children, NULL, &out);
        CHECK(n == 3 && cp_pidvec_has(&out, a) && cp_pidvec_has(&out, gc));
        n = cp_procstat_walk(getpid(), a, cp_procstat_task_children, NULL, &out);
        CHECK(n == 1 && out.v[0] == b);
    }
    cp_pidvec_free(&out);

    /* The tracked set: self + 3, then one exits between samples. */
    cp_proctrack t;
    CHECK(cp_proctrack_init(&t, getpid(), 1, 0) == 0);
    CHECK(t.n == 4 && t.e[0].pid == getpid());
    cp_procsample smp[16];
    size_t gone = 99;
    size_t k = cp_proctrack_sample(&t, smp, 16, 1.0, &gone);
    CHECK(k == 4 && gone == 0);
    unsigned long long total = 0;
    for (size_t i = 0; i < k; i++) total += smp[i].rss;
    CHECK(total >= 48ull << 20);
    reap(b);
    k = cp_proctrack_sample(&t, smp, 16, 0.0, &gone);
    CHECK(k == 3 && gone == 1);
    for (size_t i = 0; i < k; i++) CHECK(smp[i].pid != b);
    CHECK(smp[0].pss > 0); /* carried over from the last smaps read */
    /* A new child appears only after a rescan. */
    pid_t c = spawn(0, 0, NULL);
    k = cp_proctrack_sample(&t, smp, 16, 0.0, &gone);
    CHECK(k == 3);
    CHECK(cp_proctrack_rescan(&t) == 4);
    k = cp_proctrack_sample(&t, smp, 16, 0.0, &gone);
    CHECK(k == 4 && smp[3].pid == c);
    /* A zombie is still sampled until reaped; after reaping it is gone. */
    kill(c, SIGKILL);
    siginfo_t si;
    waitid(P_PID, (id_t)c, &si, WEXITED | WNOWAIT);
    k = cp_proctrack_sample(&t, smp, 16, 1.0, &gone);
    CHECK(k == 4 && smp[3].state == 'Z' && smp[3].pss == 0);
    waitpid(c, NULL, 0);
    k = cp_proctrack_sample(&t, smp, 16, 1.0, &gone);
    CHECK(k == 3 && gone == 1);
    cp_proctrack_free(&t);

    /* Without children only the root is tracked. */
    CHECK(cp_proctrack_init(&t, a, 0, 0) == 0);
    CHECK(t.n == 1);
    cp_proctrack_free(&t);
    /* Root with a pruned subtree. */
    CHECK(cp_proctrack_init(&t, getpid(), 1, a) == 0);
    CHECK(t.n == 1);
    cp_proctrack_free(&t);

    kill(gc, SIGKILL); /* a's child: re-parented and reaped by init */
    reap(a);
    errno = 0;
    CHECK(cp_proctrack_init(&t, a, 1, 0) == -1 && errno == ESRCH);
}

/* The tracked set's CPU time is the whole process's, in ns; names follow exec. */
static void test_track_cpu_and_exec(void)
{
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 50000000ul; i++) x += i; /* ~20+ ms of CPU */
    cp_proctrack t;
    CHECK(cp_proctrack_init(&t, getpid(), 0, 0) == 0);
    CHECK(t.n == 1 && t.e[0].id == 1 && t.e[0].renamed == 1);
    cp_procsample smp[4];
    size_t gone;
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    CHECK(cp_proctrack_sample(&t, smp, 4, 0.0, &gone) == 1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    unsigned long long lo = (unsigned long long)a.tv_sec * 1000000000ull + (unsigned long long)a.tv_nsec;
    unsigned long long hi = (unsigned long long)b.tv_sec * 1000000000ull + (unsigned long long)b.tv_nsec;
    CHECK(smp[0].cpu_ns >= lo && smp[0].cpu_ns <= hi);
    CHECK(smp[0].rss > 0 && smp[0].vms >= smp[0].rss && smp[0].pid == getpid());
    cp_proctrack_free(&t);

    /* A child that execs sleep after we started tracking it is renamed. */
    int p[2];
    if (pipe(p)) abort();
    pid_t c = fork();
    if (c == 0) {
        char go;
        close(p[1]);
        if (read(p[0], &go, 1) != 1) _exit(5);
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    CHECK(cp_proctrack_init(&t, c, 0, 0) == 0);
    CHECK(cp_proctrack_sample(&t, smp, 4, 0.0, &gone) == 1);
    char before[17];
    memcpy(before, smp[0].name, sizeof before);
    t.e[0].renamed = 0;
    if (write(p[1], "g", 1) != 1) abort();
    close(p[1]);
    int renamed = 0;
    for (int i = 0; i < 2000 && !renamed; i++) { /* up to ~2 s for the exec */
        CHECK(cp_proctrack_sample(&t, smp, 4, 0.0, &gone) == 1);
        renamed = strcmp(smp[0].name, "sleep") == 0;
        if (!renamed) usleep(1000);
    }
    CHECK(renamed && t.e[0].renamed == 1);
    CHECK(strcmp(before, "sleep") != 0);
    cp_proctrack_free(&t);
    reap(c);
}

/* The tracked set across exec: PSS/USS of the new program, not of the
 * address space smaps_rollup was first opened on; between smaps reads the
 * estimate follows RSS. argv0 is this test's own executable, which execs
 * into "--hog" mode. */
static void test_track_pss_across_exec(const char *self)
{
    int go[2], ready[2];
    if (pipe(go) || pipe(ready)) abort();
    /* 64 MiB the child shares with us until it execs: before, its RSS has
     * them and its PSS half of them; an estimate carried across the exec
     * from the RSS change alone would stay at about half. */
    size_t sz = (size_t)64 << 20;
    char *shared = malloc(sz);
    if (!shared) abort();
    memset(shared, 2, sz);
    pid_t c = fork();
    if (c == 0) {
        char b;
        close(go[1]);
        close(ready[0]);
        if (read(go[0], &b, 1) != 1) _exit(5);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", ready[1]);
        execl(self, self, "--hog", fd, (char *)NULL);
        _exit(127);
    }
    close(go[0]);
    close(ready[1]);
    cp_proctrack t;
    CHECK(cp_proctrack_init(&t, c, 0, 0) == 0);
    cp_procsample smp[4];
    size_t gone;
    CHECK(cp_proctrack_sample(&t, smp, 4, 1.0, &gone) == 1);
    CHECK(smp[0].rss >= (64ull << 20) && smp[0].pss >= 0);
    /* The first smaps_rollup is bound to the pre-exec address space. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)c);
    int before = open(path, O_RDONLY);
    if (write(go[1], "g", 1) != 1) abort();
    char b;
    CHECK(read(ready[0], &b, 1) == 1); /* 64 MiB touched after the exec */
    char buf[2048];
    errno = 0;
    CHECK(before >= 0 && cp_procstat_pread(before, buf, sizeof buf) < 0 && errno == ESRCH);
    close(before);
    /* No smaps share: the exec alone must make the tracker re-read it. */
    CHECK(cp_proctrack_sample(&t, smp, 4, 0.0, &gone) == 1);
    cp_procsample direct;
    CHECK(cp_procstat_read(c, &direct, 1) == 0);
    CHECK(smp[0].pss >= (64ll << 20) && direct.pss >= (64ll << 20));
    CHECK(llabs(smp[0].pss - direct.pss) <= direct.pss / 10);
    CHECK(smp[0].uss >= (64ll << 20));
    cp_proctrack_free(&t);
    close(go[1]);
    close(ready[0]);
    reap(c);
    free(shared);
}

/* --hog fd: touch 64 MiB, tell fd, wait to be killed. */
static int hog(const char *fd)
{
    size_t sz = (size_t)64 << 20;
    char *m = malloc(sz);
    if (!m) return 3;
    memset(m, 1, sz);
    if (write(atoi(fd), "r", 1) != 1) return 4;
    for (;;) pause();
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hog") == 0) return hog(argv[2]);
    test_parse_stat();
    test_parse_smaps();
    test_parse_statm();
    test_children_and_pidvec();
    test_read_self();
    test_child_memory_and_tree();
    test_track_cpu_and_exec();
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(sl > 0);
    if (sl > 0) {
        self[sl] = '\0';
        test_track_pss_across_exec(self);
    }
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    puts("test_procstat: ok");
    return 0;
}
