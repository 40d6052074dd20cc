/* lbatch.h: the pool worker's batch loop (l_batch.c) and the status slot a
 * worker shares with its host (allocated by core.spawn, l_process.c). */
#ifndef CP_LBATCH_H
#define CP_LBATCH_H

#include <stdatomic.h>
#include <stdint.h>

#define CP_TICKETS 64 /* batches of a worker that can be taken back at once */

/* Ticket states: a batch sent with ticket t is run only if the worker moves
 * ticket[t] from FREE to CLAIMED before starting it; the host takes a batch
 * back by moving it from FREE to REVOKED first. One compare-and-swap each,
 * so a batch is either run or given back, never both. */
enum { CP_TICKET_FREE = 0, CP_TICKET_CLAIMED = 1, CP_TICKET_REVOKED = 2, CP_TICKET_SKIPPED = 3 };

/* A page shared by a worker and its host (MAP_SHARED, made before fork). */
typedef struct cp_status {
    /* Written by the worker, read by the host (also after the worker died):
     * which batch and which item of it is running. */
    _Atomic int64_t bid;   /* 0 while idle */
    _Atomic int64_t item;  /* 1-based item of the batch being run, 0 before the first */
    _Atomic int32_t ticket[CP_TICKETS + 1]; /* [0] unused: ticket 0 means "none" */
} cp_status;

/* In a worker: the slot to write (NULL: none). */
void cp_l_batch_set_slot(cp_status *slot);

#endif
