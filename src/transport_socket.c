/* transport_socket.c: the messenger's bytes over a non-blocking AF_UNIX
 * socket, watched by two ev_io watchers in the messenger itself. */
#include "transport.h"
#include "messenger.h"
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    cp_messenger_pump(w->data);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    cp_messenger_flush_nb(w->data);
}

void cp_transport_socket_setup(cp_messenger *m, int fd)
{
    m->tp = &cp_transport_socket;
    m->tctx = NULL;
    m->fd = fd;
    ev_io_init(&m->rw, on_readable, fd, EV_READ);
    ev_io_init(&m->ww, on_writable, fd, EV_WRITE);
    m->rw.data = m->ww.data = m;
}

static ssize_t sock_read(cp_messenger *m, char *buf, size_t n)
{
    return read(m->fd, buf, n);
}

static ssize_t sock_write(cp_messenger *m, const char *buf, size_t n)
{
    return send(m->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void sock_watch(cp_messenger *m, int readable, int writable)
{
    struct ev_loop *loop = cp_loop();
    int before = ev_is_active(&m->rw) + ev_is_active(&m->ww);
    if (readable) ev_io_start(loop, &m->rw); else ev_io_stop(loop, &m->rw);
    if (writable) ev_io_start(loop, &m->ww); else ev_io_stop(loop, &m->ww);
    cp_loop_count_fds(ev_is_active(&m->rw) + ev_is_active(&m->ww) - before);
}

static int sock_poll(cp_messenger *m, double timeout)
{
    struct pollfd pfd = {m->fd, POLLIN, 0};
    return poll(&pfd, 1, timeout < 0 ? -1 : (int)(timeout * 1000)) > 0;
}

static void sock_close(cp_messenger *m, int owner)
{
    (void)owner; /* a forked child closes its copy of the fd too */
    if (m->fd >= 0) close(m->fd);
    m->fd = -1;
}

const cp_transport cp_transport_socket = {
    "socket", sock_read, sock_write, sock_watch, sock_poll, sock_close, NULL
};
