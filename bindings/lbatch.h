/* lbatch.h: the pool worker's batch loop (l_batch.c) and the status slot a
 * worker shares with its host (allocated by core.spawn, l_process.c). */
#ifndef CP_LBATCH_H
#define CP_LBATCH_H

#include <stdatomic.h>
#include <stdint.h>

#define CP_TICKETS 64 /* batches of a worker whose tails can be taken back */

/* A page shared by a worker and its host (MAP_SHARED, made before fork).
 *
 * Tickets: a batch sent with ticket t (1..CP_TICKETS; 0 = none) has the word
 * ticket[t] = claimed << 32 | limit, set by the host to (0, n) before it
 * sends the batch. The worker claims item j by moving claimed from j-1 to j,
 * and only while claimed < limit; the host takes back the tail of a batch
 * by lowering limit, but never below claimed. Both are compare-and-swaps on
 * the one word, so every item is either run by the worker or given back to
 * the host, never both, never neither. */
typedef struct cp_status {
    /* Written by the worker, read by the host (also after the worker died):
     * which batch and which item of it is running. */
    _Atomic int64_t bid;   /* 0 while idle */
    _Atomic int64_t item;  /* 1-based item of the batch being run, 0 before the first */
    _Atomic uint64_t ticket[CP_TICKETS + 1];
} cp_status;

/* In a worker: the slot to write (NULL: none). */
void cp_l_batch_set_slot(cp_status *slot);

#endif
