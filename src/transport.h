/* transport.h: how a messenger's bytes travel.
 *
 * The messenger (messenger.h) owns everything above the byte stream: the
 * outbound buffer and the cork policy, frame parsing, the queues, counting,
 * limits and back-pressure. A transport only moves bytes, in order, both
 * ways, without blocking:
 *
 *   socket (transport_socket.c)  an AF_UNIX socketpair watched by libev
 *   MPI    (transport_mpi.c)     point-to-point messages between ranks, in
 *                                the coproc.mpi_core module
 *
 * A transport tells its messenger about progress by calling
 * cp_messenger_pump (bytes can be read) and cp_messenger_flush_nb (room to
 * write) while it is asked to watch for them (watch below), from the
 * process's loop (loop.h). No Lua here. */
#ifndef CP_TRANSPORT_H
#define CP_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>

struct cp_messenger;

typedef struct cp_transport {
    const char *name;
    /* Read up to n bytes: the count (> 0), 0 at end of stream, or -1 with
     * errno (EAGAIN: nothing now; EINTR: try again; else the stream broke). */
    ssize_t (*read)(struct cp_messenger *m, char *buf, size_t n);
    /* Write up to n bytes: the count taken (> 0), or -1 with errno (EAGAIN:
     * no room now; EINTR: try again; else the peer is gone). Bytes taken
     * reach the peer in order even if the messenger is closed meanwhile. */
    ssize_t (*write)(struct cp_messenger *m, const char *buf, size_t n);
    /* What the messenger wants to hear about from now on: readable (call
     * cp_messenger_pump) and room to write (call cp_messenger_flush_nb). */
    void    (*watch)(struct cp_messenger *m, int readable, int writable);
    /* Wait up to timeout seconds (< 0: no limit) for bytes to read: 1 or 0. */
    int     (*poll)(struct cp_messenger *m, double timeout);
    /* Release the connection. owner is 0 in a forked child: then free only
     * this process's memory and fds, never act on the peer or the loop. */
    void    (*close)(struct cp_messenger *m, int owner);
    /* How error messages name the peer of a host-side end ("rank 3"), or
     * NULL (the socket transport names workers by their pid). May be NULL. */
    const char *(*label)(const struct cp_messenger *m);
} cp_transport;

/* The socketpair transport: the messenger's fd and its rw/ww watchers,
 * which setup prepares for fd (made non-blocking by the caller). */
extern const cp_transport cp_transport_socket;
void cp_transport_socket_setup(struct cp_messenger *m, int fd);

#endif
