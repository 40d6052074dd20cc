/* fuzz_messenger.c: the messenger's read path (src/messenger.c) on arbitrary
 * bytes arriving from a peer. The input after its first byte is written into
 * one end of a socketpair in chunks, the other end pumping between chunks
 * (so frames arrive split at every place), optionally followed by EOF; then
 * every queue is popped until empty.
 *
 * First byte: bit 0 MultiMessenger (FIFO), bits 1-2 maximum frame size (64,
 * 4096, 64 KiB, 1 MiB; the 512 MiB default is left out: a frame header alone
 * makes the reader allocate that much, see issue #8 item 11), bit 3 close the
 * writing end at the end, bits 4-7 chunk size.
 *
 * Invariants: the queued count equals the messages popped, and equals
 * messages_received; each channel hands out (priority, arrival) in order; a
 * popped message's kind, flags and bytes are in range (every byte is read,
 * so a payload pointing outside its block shows under ASan or valgrind);
 * reply and request counters match the flags popped; after EOF the state is
 * no longer open; a broken connection says why. */
#include "fuzz.h"
#include "messenger.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static size_t pop_all(cp_messenger *m, uint64_t *replies, uint64_t *requests)
{
    size_t popped = 0;
    cp_msg *msg;
    while ((msg = cp_messenger_pop_special(m))) {
        FUZZ_CHECK(msg->kind == CP_KIND_CLOSE || msg->kind == CP_KIND_ERROR);
        popped++;
        cp_msg_free(msg);
    }
    for (int b = 0; b < CP_CHAN_BUCKETS; b++) {
        for (cp_chan *c = m->buckets[b]; c; c = c->next) {
            FUZZ_CHECK(c->keylen >= 1 && c->keylen <= CP_CHANNEL_MAX + 9);
            double last_prio = -INFINITY;
            uint64_t last_seq = 0;
            while ((msg = cp_messenger_pop(m, c))) {
                FUZZ_CHECK(msg->kind == CP_KIND_DATA);
                FUZZ_CHECK(msg->flags <= 0x7f);
                FUZZ_CHECK(msg->len >= 1 && msg->data != NULL);
                FUZZ_CHECK(msg->priority > last_prio || (msg->priority == last_prio && msg->seq > last_seq));
                if (m->arrival_order) FUZZ_CHECK(msg->priority == 0.0);
                last_prio = msg->priority;
                last_seq = msg->seq;
                unsigned sum = 0;
                for (size_t i = 0; i < msg->len; i++) sum += (unsigned char)msg->data[i];
                (void)sum;
                if (msg->flags & CP_FLAG_REPLY) (*replies)++;
                if (msg->flags & CP_FLAG_REQUEST) (*requests)++;
                popped++;
                cp_msg_free(msg);
            }
        }
    }
    return popped;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (256u << 10)) return 0;
    static const size_t maxes[4] = {64, 4096, 1u << 16, 1u << 20};
    static const size_t chunks[16] = {1, 2, 3, 5, 7, 11, 16, 64, 100, 512, 1000, 4096, 9000, 65536, 100000, 1u << 20};
    unsigned opt = data[0];
    const unsigned char *in = data + 1;
    size_t left = size - 1, chunk = chunks[opt >> 4];
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    FUZZ_CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    cp_messenger m;
    cp_messenger_init(&m);
    FUZZ_CHECK(cp_messenger_open(&m, sv[1], opt & 1, NULL) == 0);
    m.max_frame = maxes[(opt >> 1) & 3];
    while (left > 0) {
        size_t n = left < chunk ? left : chunk;
        ssize_t w = send(sv[0], in, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        FUZZ_CHECK(w > 0 || (w < 0 && (errno == EAGAIN || errno == EPIPE || errno == ECONNRESET)));
        if (w < 0 && errno != EAGAIN) break; /* the reader dropped the connection */
        if (w > 0) { in += w; left -= (size_t)w; }
        cp_messenger_pump(&m);
        if (m.state != CP_M_OPEN) break;
    }
    if (opt & 8) close(sv[0]), sv[0] = -1;
    cp_messenger_pump(&m);
    if (opt & 8) FUZZ_CHECK(m.state != CP_M_OPEN);
    if (m.state == CP_M_BROKEN) FUZZ_CHECK(m.error != NULL);

    size_t queued = m.queued;
    FUZZ_CHECK(m.messages_received == queued);
    uint64_t replies = 0, requests = 0;
    FUZZ_CHECK(pop_all(&m, &replies, &requests) == queued);
    FUZZ_CHECK(m.queued == 0);
    uint64_t rr = 0, rq = 0;
    for (int b = 0; b < CP_CHAN_BUCKETS; b++)
        for (cp_chan *c = m.buckets[b]; c; c = c->next) { rr += c->replies_received; rq += c->requests_received; }
    FUZZ_CHECK(rr == replies && rq == requests);
    cp_messenger_close(&m);
    if (sv[0] >= 0) close(sv[0]);
    return 0;
}
