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
} l_process;

/* [-0, +1, m] Push a new Process, not started yet (safe to collect). */
l_process *cp_l_process_push(lua_State *L);
/* Give lp a status page shared with the child it is about to fork.
 * Returns 0, or -1 with errno set. */
int cp_l_process_add_status(l_process *lp);

#endif
