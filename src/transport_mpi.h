/* transport_mpi.h: a messenger's bytes as MPI point-to-point messages
 * (Open MPI). Built into the coproc.mpi_core module only: nothing else of
 * coproc links MPI.
 *
 * A *link* joins a messenger on one rank to one on another rank: the pair
 * (peer rank, tag) in a communicator of coproc's own (a dup of
 * MPI_COMM_WORLD). The byte stream goes out as messages of at most
 * CP_MPI_MSG_MAX bytes, each copied out of the messenger's buffer and sent
 * with MPI_Isend (small ones eagerly: no handshake); MPI keeps their order
 * (same source, tag, communicator).
 *
 * Flow control by credit: a sender keeps at most CP_MPI_WINDOW bytes and
 * CP_MPI_WINDOW_MSGS messages that the peer has not confirmed; the peer
 * confirms what it has received (cumulative counts, on tag + 1) each time
 * a quarter of either has come in. A peer that stops reading (its queues
 * over max_queued) stops confirming, and so stops its sender as a full
 * socket does; MPI never buffers more than a window per link on the
 * receiving side. (MPI_Issend would do the same with a handshake per
 * message, several times the latency of an eager send.)
 *
 * Receiving: MPI_Improbe on (peer, tag) matches the next message; a small
 * one is received straight into the messenger's buffer (MPI_Mrecv, the
 * bytes are already there), a larger one with MPI_Imrecv into the link's
 * own block, handed out as it completes, so a reader never blocks on a
 * sender that is busy elsewhere.
 *
 * End of stream: closing a messenger sends a zero-length message; the peer
 * reads it as EOF and answers with its own (its later writes fail with
 * EPIPE, as on a socket whose peer closed). A closed link stays behind as a
 * *tombstone* until its sends are complete and the peer's EOF came, taking
 * in and dropping whatever still arrives, so that a large (rendezvous)
 * send of the peer never waits forever.
 *
 * Progress: MPI has no descriptor to wait on, so the module is an event
 * source of the loop (source.h): each poll asks MPI once whether anything
 * arrived at all (MPI_Iprobe on any source and tag), then pumps the links
 * that read, completes sends and flushes the links that wait for room.
 *
 * Notices: a rank about to end (os.exit in a serving rank) tells rank 0
 * which exit status and which batch item, on tag CP_MPI_NOTICE_TAG; rank 0
 * keeps the last notice of each rank (cp_mpi_notice), and the link's label
 * mentions it. No Lua here. */
#ifndef CP_TRANSPORT_MPI_H
#define CP_TRANSPORT_MPI_H

#include <stdint.h>
#include <mpi.h>

#include "messenger.h"
#include "source.h"
#include "transport.h"

#define CP_MPI_MSG_MAX  (256u << 10) /* bytes per MPI message */
#define CP_MPI_SENDS    16          /* MPI send requests in progress per link */
#define CP_MPI_WINDOW   (512u << 10) /* bytes sent and not confirmed, per link */
#define CP_MPI_WINDOW_MSGS 256      /* messages sent and not confirmed, per link */
#define CP_MPI_SMALL    4096        /* received with MPI_Mrecv straight into place */
#define CP_MPI_EAGER_POLLS 32       /* polls after a send or a message made without yielding */
#define CP_MPI_NOTICE_TAG 0         /* link tags are even and above it */
#define CP_MPI_CREDIT_TAG(t) ((t) + 1) /* a link's confirmations */

/* The messenger functions the transport calls back (the core's, reached
 * through its function table: lcapi.h). */
typedef struct cp_mpi_hooks {
    void   (*pump)(cp_messenger *m);
    long   (*flush_nb)(cp_messenger *m);
    void   (*source_start)(cp_source *s);
    void   (*source_stop)(cp_source *s);
    double (*now)(void);
    void   (*tick)(void);    /* called at every poll (may be NULL) */
    void   (*activity)(void); /* something was sent (cp_source_activity; may be NULL) */
} cp_mpi_hooks;

/* After MPI_Init: the communicator of every link (a dup, freed by
 * cp_mpi_shutdown) and the hooks. 0, or an MPI error code. */
int  cp_mpi_setup(const cp_mpi_hooks *h, MPI_Comm world);
MPI_Comm cp_mpi_comm(void);
int  cp_mpi_rank(void);
int  cp_mpi_size(void);

/* The transport state of a new link to rank peer on tag (even, > the
 * notice tag; tag + 1 carries its confirmations), for
 * cp_messenger_open_transport with cp_transport_mpi. host_side:
 * this end started the worker at the other end (error messages name it
 * "rank <peer>"). NULL on out of memory. */
void *cp_mpi_link_new(int peer, int tag, int host_side);
extern const cp_transport cp_transport_mpi;
/* The peer rank and tag of a messenger on this transport (-1 otherwise). */
int  cp_mpi_link_peer(const cp_messenger *m, int *tag);

/* Links still alive: open ones and tombstones. */
int  cp_mpi_links(void);

/* Whether coproc's polls turn Open MPI's yielding off for a moment (1:
 * the job yields when idle, job_default set; now is the setting as it is
 * at this moment, outside a poll), else 0. */
int  cp_mpi_yield_state(int *job_default, int *now);
/* Poll until only open links are left (every tombstone is retired) or
 * timeout seconds pass: 1 when none is left, 0 on timeout. */
int  cp_mpi_quiesce(double timeout);
/* Before MPI_Finalize: cancel and release what is still in flight (after
 * a quiesce that timed out), free the communicator. */
void cp_mpi_shutdown(void);

/* A notice: what a rank tells rank 0 before it ends. */
typedef struct cp_mpi_notice_t {
    int64_t code;    /* exit status */
    int64_t bid;     /* pool batch running, 0 if none */
    int64_t item;    /* its item (1-based), 0 if none */
    int64_t pid;
} cp_mpi_notice_t;
/* Send n to rank 0 and wait until it has it, at most timeout seconds (a
 * rank 0 that is busy takes it at its next wait). 1 delivered, 0 not. */
int  cp_mpi_send_notice(const cp_mpi_notice_t *n, double timeout);
/* The last notice from rank r: 1 and *n filled, 0 if none came. */
int  cp_mpi_notice(int r, cp_mpi_notice_t *n);

#endif
