/* lprocess.h: the coproc.Process userdata (a child coproc started), shared
 * by the Process type (l_process.c) and core.spawn (l_spawn.c). */
#ifndef CP_LPROCESS_H
#define CP_LPROCESS_H

#include <lua.h>
#include "lbatch.h"
#include "proc.h"

#define CP_PROCESS_MT "coproc.Process"

typedef struct l_process {
    cp_proc    p;
    int        started;  /* a child exists (or existed): p is valid */
    int        closed;   /* close() ran: reaped and released */
    cp_status *status;   /* page shared with the worker (spawn option status), or NULL */
    int        status_fd; /* its memfd until the worker is started, else -1 */
} l_process;

/* [-0, +1, m] Push a new Process, not started yet (safe to collect). */
l_process *cp_l_process_push(lua_State *L);
/* Give lp a status page shared with the child it is about to start: a
 * memfd, mapped here and handed to the child (lp->status_fd). Returns 0, or
 * -1 with errno set and *call naming the failed call. */
int cp_l_process_add_status(l_process *lp, const char **call);
/* The start is over (done or failed): close lp->status_fd. */
void cp_l_process_spawned(l_process *lp);

#endif
