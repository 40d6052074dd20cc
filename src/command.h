/* command.h: run an external program (fork + execvp) and wait for it through
 * a pidfd, for the monitor's command-line form. No Lua here.
 *
 * Only this child is ever reaped (waitpid on its pid), never another. */
#ifndef CP_COMMAND_H
#define CP_COMMAND_H

#include <sys/types.h>

typedef struct cp_command {
    pid_t pid;
    int   pidfd;   /* -1 when the kernel has no pidfd_open */
    int   reaped;
    int   status;  /* raw waitpid status once reaped */
} cp_command;

/* Start argv[0] (searched in PATH) with argv (NULL-terminated), signal
 * dispositions and mask reset to defaults. Returns 0, or -1 with errno set,
 * including the errno of a failed exec (reported back through a close-on-exec
 * pipe, so "no such command" is an error here, not an exit status). */
int cp_command_spawn(cp_command *c, char *const argv[]);

/* Wait up to timeout seconds (< 0: forever) for the program to exit.
 * Returns 1 when it exited (c->status valid), 0 on timeout, -1 on error.
 * EINTR returns -1 with errno EINTR so the caller can handle signals. */
int cp_command_wait(cp_command *c, double timeout);

/* Shell-style exit code: the exit status, or 128 + signal number. */
int cp_command_exitcode(const cp_command *c);

/* Close the pidfd (does not kill or reap). */
void cp_command_release(cp_command *c);

#endif
