/* fuzz_frame.c: the frame parser (src/frame.c) on arbitrary bytes, as the
 * messenger uses it: frames parsed one after another from the front of a
 * buffer. Invariants: a parsed frame lies inside the bytes given, its parts
 * tile it exactly, its fields are in range; "need more" never claims a size
 * that is already there. The first byte picks the maximum frame size. */
#include "fuzz.h"
#include "frame.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const size_t maxes[4] = {64, 4096, 1u << 20, CP_FRAME_MAX_DEFAULT};
    size_t max_frame = maxes[data[0] & 3];
    const char *buf = (const char *)data + 1;
    size_t avail = size - 1;
    while (avail > 0) {
        cp_frame f;
        const char *err = NULL;
        memset(&f, 0xa5, sizeof f);
        int rc = cp_frame_parse(buf, avail, max_frame, &f, &err);
        if (rc == CP_FRAME_BAD) {
            FUZZ_CHECK(err != NULL && strlen(err) > 0);
            break;
        }
        if (rc == CP_FRAME_NEED_MORE) {
            FUZZ_CHECK(f.total == 0 || f.total > avail);
            FUZZ_CHECK(f.total == 0 || f.total - CP_FRAME_PREFIX <= max_frame);
            break;
        }
        FUZZ_CHECK(rc == CP_FRAME_OK);
        FUZZ_CHECK(f.total >= CP_FRAME_PREFIX + 6 && f.total <= avail);
        FUZZ_CHECK(f.total - CP_FRAME_PREFIX <= max_frame);
        FUZZ_CHECK(f.kind >= 0 && f.kind <= CP_KIND_MAX);
        FUZZ_CHECK(f.flags <= 0x7f);
        FUZZ_CHECK(!isnan(f.priority));
        FUZZ_CHECK(f.chan >= buf + CP_FRAME_PREFIX + 2 && f.chan_len >= 1 && f.chan_len <= CP_CHANNEL_MAX + 9);
        FUZZ_CHECK(f.payload > f.chan + f.chan_len && f.payload_len >= 1);
        FUZZ_CHECK(f.payload + f.payload_len == buf + f.total);
        /* Touch every byte the frame points at. */
        unsigned sum = 0;
        for (size_t i = 0; i < f.chan_len; i++) sum += (unsigned char)f.chan[i];
        for (size_t i = 0; i < f.payload_len; i++) sum += (unsigned char)f.payload[i];
        (void)sum;
        buf += f.total;
        avail -= f.total;
    }
    return 0;
}
