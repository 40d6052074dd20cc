/* messenger_pair.h: two connected messengers of this process, for the C
 * units that drive the messenger (test_messenger.c, test_forward.c,
 * test_bigframe.c). Include after check.h. */
#ifndef CP_TEST_MESSENGER_PAIR_H
#define CP_TEST_MESSENGER_PAIR_H

#include "messenger.h"

#include <sys/socket.h>

static void pair(cp_messenger *a, cp_messenger *b)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    cp_messenger_init(a);
    cp_messenger_init(b);
    CHECK(cp_messenger_open(a, sv[0], 0, NULL) == 0);
    CHECK(cp_messenger_open(b, sv[1], 0, NULL) == 0);
}

#endif
