/* command.h: compatibility layer for the monitor's binding: external
 * programs are cp_proc children now (proc.h: cp_proc_spawn_exec,
 * cp_proc_wait_intr, cp_proc_exitcode). New code should call those; these
 * wrappers keep the old names and the shell's exit-code convention. */
#ifndef CP_COMMAND_H
#define CP_COMMAND_H

#include "proc.h"

/* Fields used by callers: pid, pidfd, reaped, status. */
typedef cp_proc cp_command;

/* cp_proc_spawn_exec: 0, or -1 with errno (a failed exec included). */
int cp_command_spawn(cp_command *c, char *const argv[]);

/* cp_proc_wait_intr: 1 exited, 0 timed out, -1 with errno (EINTR when a
 * signal handler ran, ECHILD when never started). */
int cp_command_wait(cp_command *c, double timeout);

/* Shell-style exit code: the exit status, or 128 + signal number; -1 while
 * it runs. (cp_proc_exitcode gives -signal instead.) */
int cp_command_exitcode(const cp_command *c);

/* cp_proc_release: close the pidfd (does not kill or reap). */
void cp_command_release(cp_command *c);

#endif
