/* lbatch.h: the pool worker's batch loop (l_batch.c) and the status slot a
 * worker shares with its host (allocated by core.spawn, l_process.c). */
#ifndef CP_LBATCH_H
#define CP_LBATCH_H

#include <stdint.h>

/* Written by the worker only, read by the host after the worker died (or
 * at any time, as a hint): which batch and which item of it is running. */
typedef struct cp_status {
    int64_t bid;   /* 0 while idle */
    int64_t item;  /* 1-based item of the batch being run, 0 before the first */
} cp_status;

/* In a worker: the slot to write (NULL: none). */
void cp_l_batch_set_slot(volatile cp_status *slot);

#endif
