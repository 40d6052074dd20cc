/* test_source.c: fd-less event sources in the loop (source.h): a wait ends
 * as soon as a source makes progress, an idle source costs little CPU and
 * is still polled often enough, a socket wakes a wait that is backing off,
 * a zero timeout never sleeps, interrupts still end waits, and a forked
 * child never polls its parent's sources. */
#include "check.h"
#include "loop.h"
#include "messenger.h"
#include "source.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* A source that "receives" something once cp_now() passes at, or after
 * polls_left polls; it counts its polls. */
typedef struct fake {
    cp_source s;
    long polls, polls_left;
    double at;
    int got, busy; /* busy: every poll makes progress until got */
} fake;

static int fake_poll(cp_source *s)
{
    fake *f = (fake *)s;
    f->polls++;
    if (f->got) return 0;
    if (f->busy && --f->polls_left > 0) return 1;
    if (f->busy) { f->got = 1; return 1; }
    if ((f->polls_left > 0 && --f->polls_left == 0) || (f->at > 0 && cp_now() >= f->at)) {
        f->got = 1;
        return 1;
    }
    return 0;
}

static void fake_init(fake *f)
{
    memset(f, 0, sizeof *f);
    f->s.poll = fake_poll;
}

static int got(void *ud) { return ((fake *)ud)->got; }
static int never(void *ud) { (void)ud; return 0; }

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void test_progress_ends_the_wait(void)
{
    fake f;
    fake_init(&f);
    f.polls_left = 1000;
    f.busy = 1;
    cp_source_start(&f.s);
    CHECK(cp_source_any());
    double t0 = cp_now();
    CHECK(cp_loop_wait(got, &f, 5.0) == 1);
    /* A thousand polls that each made progress: no sleeping in between. */
    CHECK(f.polls == 1000);
    CHECK(cp_now() - t0 < 0.5);
    cp_source_stop(&f.s);
    CHECK(!cp_source_any());
}

static void test_idle_is_cheap_but_polled(void)
{
    fake f;
    fake_init(&f);
    cp_source_start(&f.s);
    double c0 = cpu_seconds(), t0 = cp_now();
    CHECK(cp_loop_wait(never, NULL, 0.5) == 0);
    double wall = cp_now() - t0, cpu = cpu_seconds() - c0;
    printf("idle source, 0.5 s wait: %.1f ms CPU, %ld polls\n", cpu * 1e3, f.polls);
    CHECK(wall >= 0.5 && wall < 2.0);
    CHECK(cpu < 0.1);                      /* not a spinning core */
    CHECK(f.polls >= 100);                 /* still polled: at least every few ms */
    CHECK(f.polls < 100000);
    /* Then something arrives: seen within a few back-off steps. */
    f.at = cp_now() + 0.05;
    CHECK(cp_loop_wait(got, &f, 5.0) == 1);
    double late = cp_now() - f.at;
    printf("noticed %.2f ms after it arrived\n", late * 1e3);
    CHECK(late < 0.05);
    cp_source_stop(&f.s);
}

static void test_zero_timeout_does_not_sleep(void)
{
    fake f;
    fake_init(&f);
    cp_source_start(&f.s);
    CHECK(cp_loop_wait(never, NULL, 0.2) == 0);   /* now deep in the back-off */
    double t0 = cp_now();
    for (int i = 0; i < 100; i++) CHECK(cp_loop_wait(never, NULL, 0) == 0);
    CHECK(cp_now() - t0 < 0.05);
    CHECK(f.polls > 0);
    cp_source_stop(&f.s);
}

struct until { cp_messenger *m; };
static int has_msg(void *ud) { return cp_messenger_queued(((struct until *)ud)->m) > 0; }

/* A socket wakes a wait whose source is backing off (1 ms steps): the
 * child writes a frame carrying the time it wrote it. */
static void test_socket_wakes_backoff(void)
{
    fake f;
    fake_init(&f);
    cp_source_start(&f.s);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        CHECK(!cp_source_any());          /* the parent's source is not ours */
        close(sv[0]);
        usleep(200000);
        double t = cp_now();
        unsigned char fr[4 + 4 + 1 + 9 + 1];
        /* [0, nil, nil, 0, float64 t] */
        unsigned char body[] = {0x95, 0, 0xc0, 0xc0, 0, 0xcb};
        uint64_t bits;
        memcpy(&bits, &t, 8);
        size_t n = 0;
        uint32_t len = sizeof body + 8;
        fr[n++] = 0; fr[n++] = 0; fr[n++] = 0; fr[n++] = (unsigned char)len;
        memcpy(fr + n, body, sizeof body); n += sizeof body;
        for (int i = 0; i < 8; i++) fr[n++] = (unsigned char)(bits >> (56 - 8 * i));
        _exit(write(sv[1], fr, n) == (ssize_t)n ? 0 : 1);
    }
    close(sv[1]);
    cp_messenger m;
    cp_messenger_init(&m);
    CHECK(cp_messenger_open(&m, sv[0], 0, NULL) == 0);
    struct until u = {&m};
    CHECK(cp_loop_wait(has_msg, &u, 5.0) == 1);
    double now = cp_now();
    char ch[16];
    cp_chan *c = cp_messenger_chan(&m, ch, cp_channel_nil(ch), 1);
    cp_msg *msg = cp_messenger_pop(&m, c);
    CHECK(msg && msg->len == 9);
    if (msg && msg->len == 9) {
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits = bits << 8 | (unsigned char)msg->data[1 + i];
        double sent;
        memcpy(&sent, &bits, 8);
        printf("socket seen %.2f ms after the write, source backing off\n", (now - sent) * 1e3);
        CHECK(now - sent < 0.05);
    }
    cp_msg_free(msg);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cp_messenger_close(&m);
    cp_source_stop(&f.s);
}

static void on_alarm(int sig) { (void)sig; cp_loop_interrupt(); }

static void test_interrupt(void)
{
    fake f;
    fake_init(&f);
    cp_source_start(&f.s);
    signal(SIGALRM, on_alarm);
    alarm(1);
    double t0 = cp_now();
    CHECK(cp_loop_wait(never, NULL, 10.0) == -1);
    CHECK(cp_now() - t0 < 5.0);
    signal(SIGALRM, SIG_DFL);
    cp_source_stop(&f.s);
}

int main(void)
{
    test_progress_ends_the_wait();
    test_idle_is_cheap_but_polled();
    test_zero_timeout_does_not_sleep();
    test_socket_wakes_backoff();
    test_interrupt();
    return check_report("test_source");
}
