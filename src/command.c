/* command.c: see command.h. */
#include "command.h"

#include <errno.h>
#include <limits.h>

int cp_command_spawn(cp_command *c, char *const argv[])
{
    return cp_proc_spawn_exec(c, argv);
}

int cp_command_wait(cp_command *c, double timeout)
{
    if (!c->reaped && c->pid <= 0) { errno = ECHILD; return -1; }
    return cp_proc_wait_intr(c, timeout);
}

int cp_command_exitcode(const cp_command *c)
{
    int code = cp_proc_exitcode(c);
    if (code == INT_MIN) return -1;
    return code < 0 ? 128 - code : code;
}

void cp_command_release(cp_command *c)
{
    cp_proc_release(c);
}
