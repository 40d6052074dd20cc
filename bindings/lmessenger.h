/* lmessenger.h: the coproc.Messenger userdata, shared with the process
 * binding (which makes messengers for new workers). */
#ifndef CP_LMESSENGER_H
#define CP_LMESSENGER_H

#include <lua.h>
#include "messenger.h"

#define CP_MESSENGER_MT "coproc.Messenger"

typedef struct l_messenger {
    cp_messenger m;   /* first member: a cp_messenger * of the binding is its l_messenger */
    int trust;        /* cp_trust (codec.h) of every decode of a received payload */
} l_messenger;

/* [-0, +1, m] Push a new, closed messenger userdata. */
l_messenger *cp_l_messenger_push(lua_State *L);
/* Flush m, waiting at most timeout seconds (worker exit path). */
void cp_l_messenger_drain(l_messenger *lm, double timeout);
/* The messenger at index i, closed or not (an argument error otherwise). */
l_messenger *cp_l_messenger_at(lua_State *L, int i);
/* The channel record of m for the channel value at index i (an argument
 * error for a bad channel); created when create is set. */
cp_chan *cp_l_messenger_chan(lua_State *L, cp_messenger *m, int i, int create);

#endif
