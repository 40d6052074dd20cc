/* test_command.c: spawning and waiting for external programs (src/command.c). */
#include "command.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); failures++; } } while (0)

int main(void)
{
    cp_command c;
    char *ok[] = {"sh", "-c", "exit 7", NULL};
    CHECK(cp_command_spawn(&c, ok) == 0 && c.pid > 0);
    CHECK(cp_command_wait(&c, 30) == 1);
    CHECK(cp_command_exitcode(&c) == 7);
    CHECK(cp_command_wait(&c, 0) == 1); /* idempotent */
    cp_command_release(&c);

    /* Timeout while it runs, then a signal death as 128 + signo. */
    char *slow[] = {"sleep", "30", NULL};
    CHECK(cp_command_spawn(&c, slow) == 0);
    CHECK(cp_command_wait(&c, 0.05) == 0);
    kill(c.pid, SIGTERM);
    CHECK(cp_command_wait(&c, 30) == 1);
    CHECK(cp_command_exitcode(&c) == 128 + SIGTERM);
    cp_command_release(&c);

    /* A missing program is an error at spawn time. */
    char *missing[] = {"/nonexistent/coproc-no-such-program", NULL};
    errno = 0;
    CHECK(cp_command_spawn(&c, missing) == -1 && errno == ENOENT);

    /* Signals ignored here are not ignored in the program. */
    signal(SIGTERM, SIG_IGN);
    char *self_term[] = {"sh", "-c", "kill -TERM $$; exit 0", NULL};
    CHECK(cp_command_spawn(&c, self_term) == 0);
    CHECK(cp_command_wait(&c, 30) == 1);
    CHECK(cp_command_exitcode(&c) == 128 + SIGTERM);
    cp_command_release(&c);

    if (failures) { fprintf(stderr, "%d failure(s)\n", failures); return 1; }
    puts("test_command: ok");
    return 0;
}
