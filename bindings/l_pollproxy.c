/* l_pollproxy.c: an epoll fd that stands for one messenger's socket, for
 * event loops that poll fds themselves (coproc.luv).
 *
 *   core._pollproxy(fd) -> pfd        a new epoll fd watching fd for input
 *   core._pollproxy_set(pfd, fd, ev)  ev "r" or "rw": what to watch for
 *   core._pollproxy_close(pfd)
 *
 * Why. libuv turns an error condition on a polled fd (a worker died with
 * data unread: its socket reports ECONNRESET) into UV_EBADF for the poll's
 * callback, and luv prints that on stderr. Polled through an epoll fd of
 * its own, the socket's error is just "ready": the messenger reads it and
 * reports the worker's death as usual. The epoll fd is level-triggered and
 * readable exactly while the socket has what was asked for. Failures raise
 * OSError. */
#define _GNU_SOURCE
#include "lcore.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

static uint32_t events_of(lua_State *L, int i)
{
    const char *ev = luaL_optstring(L, i, "r");
    uint32_t e = 0;
    for (; *ev; ev++) {
        if (*ev == 'r') e |= EPOLLIN;
        else if (*ev == 'w') e |= EPOLLOUT;
        else luaL_argerror(L, i, "\"r\" or \"rw\" expected");
    }
    return e;
}

static int l_pollproxy(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    uint32_t ev = events_of(L, 2);
    int pfd = epoll_create1(EPOLL_CLOEXEC);
    if (pfd < 0) return cp_l_oserror(L, errno, "epoll_create1", "cannot poll fd %d", fd);
    struct epoll_event e = {.events = ev, .data = {.fd = fd}};
    if (epoll_ctl(pfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        int err = errno;
        close(pfd);
        return cp_l_oserror(L, err, "epoll_ctl", "cannot poll fd %d", fd);
    }
    lua_pushinteger(L, pfd);
    return 1;
}

static int l_pollproxy_set(lua_State *L)
{
    int pfd = (int)luaL_checkinteger(L, 1), fd = (int)luaL_checkinteger(L, 2);
    struct epoll_event e = {.events = events_of(L, 3), .data = {.fd = fd}};
    if (epoll_ctl(pfd, EPOLL_CTL_MOD, fd, &e) < 0) return cp_l_oserror(L, errno, "epoll_ctl", "cannot poll fd %d", fd);
    return 0;
}

static int l_pollproxy_close(lua_State *L)
{
    close((int)luaL_checkinteger(L, 1));
    return 0;
}

void cp_l_pollproxy_open(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    static const luaL_Reg fns[] = {
        {"_pollproxy", l_pollproxy},
        {"_pollproxy_set", l_pollproxy_set},
        {"_pollproxy_close", l_pollproxy_close},
        {NULL, NULL},
    };
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, t, f->name);
    }
}
