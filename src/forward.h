/* forward.h: pass messages from one messenger to another as they are, for a
 * relay that joins two connections (a serving rank between rank 0 and its
 * local worker processes). Kind, channel, priority, flags and payload bytes
 * stay as they came: nothing is decoded, CLOSE and ERROR keep their kind.
 * No Lua here. */
#ifndef CP_FORWARD_H
#define CP_FORWARD_H

#include <stddef.h>
#include "messenger.h"

/* Move queued messages of src into dst's outbound stream: CLOSE/ERROR
 * first, then every channel's queue in its own order (lowest priority,
 * then arrival), channels in no particular order; stop once dst holds
 * max_unsent bytes not yet written (so a relay whose far side is slow
 * leaves the rest queued in src, and back-pressure reaches src's peer).
 * The payload is copied once, into dst's buffer. Returns how many moved,
 * or -1 when dst is down or out of memory (the message in hand is lost
 * with the connection). A message of an arrival-order src (MultiMessenger)
 * goes on with priority 0. */
int cp_messenger_forward(cp_messenger *dst, cp_messenger *src, size_t max_unsent);

#endif
