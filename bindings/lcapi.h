/* lcapi.h: the functions coproc.core lends to the other C modules of
 * coproc (coproc.mpi_core), published as a light userdata in the registry
 * (like a Python capsule).
 *
 * A process has one loop, one list of messengers and one set of event
 * sources, all static state of the core; a module that linked its own copy
 * of src/ would have a second set that the core's waits never see. So a
 * module links none of src/ but messenger.h's inline functions, and calls
 * the core through this table. Both sides are built from one tree: a module
 * checks version and the sizes below and refuses a table that differs. Not a
 * public C API (docs/design-notes.md). */
#ifndef CP_LCAPI_H
#define CP_LCAPI_H

#include <lua.h>
#include "lmessenger.h"
#include "messenger.h"
#include "source.h"

#define CP_CAPI_KEY "coproc.core_api" /* registry field */
#define CP_CAPI_VERSION 1

typedef struct cp_core_api {
    unsigned version;             /* CP_CAPI_VERSION */
    unsigned size;                /* sizeof(cp_core_api) */
    unsigned messenger_size;      /* sizeof(cp_messenger) */
    const char *build;            /* the project version */
    /* src/ */
    double (*now)(void);
    void   (*interrupt)(void);    /* async-signal-safe */
    int    (*messenger_open_transport)(cp_messenger *m, const cp_transport *tp, void *ctx, int arrival_order);
    void   (*messenger_pump)(cp_messenger *m);
    long   (*messenger_flush_nb)(cp_messenger *m);
    int    (*messenger_drain)(cp_messenger *m, double timeout);
    void   (*source_start)(cp_source *s);
    void   (*source_stop)(cp_source *s);
    void   (*source_activity)(void);
    void   (*source_set_max_sleep)(double seconds);
    int    (*loop_wait)(int (*ready)(void *ud), void *ud, double timeout);
    /* bindings/ */
    l_messenger *(*messenger_push)(lua_State *L);        /* [-0, +1, m] a closed Messenger */
    /* A fresh Lua state with coproc.core loaded, as a "fresh" worker gets:
     * standard libraries, package.path/cpath as given, math.random seeded. */
    lua_State *(*new_state)(const char *path, const char *cpath);
} cp_core_api;

/* [-0, +0, m] (l_capi.c) registry[CP_CAPI_KEY] = the core's table. */
void cp_l_capi_open(lua_State *L);

#endif
