/* test_frame.c: the frame header codec (src/frame.c): round trips, every
 * truncation, oversized and malformed frames. */
#include "check.h"
#include "frame.h"

#include <math.h>
#include <string.h>

/* A frame with a 1-byte msgpack payload (0x2a = 42). */
static size_t make(cp_buf *b, int kind, const char *chan, size_t cl, double prio, unsigned flags)
{
    size_t mark = cp_frame_begin(b, kind, chan, cl, prio, flags);
    CHECK(mark != (size_t)-1);
    cp_buf_append(b, "\x2a", 1);
    CHECK(cp_frame_finish(b, mark, CP_FRAME_MAX_DEFAULT) == 0);
    return b->len - mark;
}

static void test_round_trip(void)
{
    char ch[CP_CHANNEL_MAX + 16];
    struct { size_t n; double prio; } cases[] = {
        {cp_channel_nil(ch), INFINITY}, {0, 0}, {0, -3.5}, {0, 1e300}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cp_buf b = CP_BUF_INIT;
        size_t cl = i == 0 ? cases[0].n : cp_channel_str(ch, "results", 7);
        size_t total = make(&b, CP_KIND_DATA, ch, cl, cases[i].prio, CP_FLAG_REQUEST);
        cp_frame f;
        const char *err = NULL;
        CHECK(cp_frame_parse(b.data, b.len, CP_FRAME_MAX_DEFAULT, &f, &err) == CP_FRAME_OK);
        CHECK(f.total == total);
        CHECK(f.kind == CP_KIND_DATA);
        CHECK(f.flags == CP_FLAG_REQUEST);
        CHECK(f.chan_len == cl && memcmp(f.chan, ch, cl) == 0);
        CHECK(f.priority == cases[i].prio);
        CHECK(f.payload_len == 1 && f.payload[0] == 0x2a);
        /* Every strict prefix is incomplete, never an error. */
        for (size_t n = 0; n < total; n++)
            CHECK(cp_frame_parse(b.data, n, CP_FRAME_MAX_DEFAULT, &f, &err) == CP_FRAME_NEED_MORE);
        cp_buf_free(&b);
    }
}

static void test_channels_canonical(void)
{
    char a[CP_CHANNEL_MAX + 16];
    CHECK(cp_channel_int(a, 5) == 1 && a[0] == 5);
    CHECK(cp_channel_int(a, -1) == 1 && (unsigned char)a[0] == 0xff);
    CHECK(cp_channel_int(a, 1000) == 9 && (unsigned char)a[0] == 0xd3);
    CHECK(cp_channel_bool(a, 1) == 1 && (unsigned char)a[0] == 0xc3);
    CHECK(cp_channel_str(a, "x", 1) == 2 && (unsigned char)a[0] == 0xa1);
    char long_name[300];
    memset(long_name, 'n', sizeof long_name);
    CHECK(cp_channel_str(a, long_name, 100) == 102 && (unsigned char)a[0] == 0xd9);
    CHECK(cp_channel_str(a, long_name, 300) == 0);
    /* A frame parses back each kind of channel. */
    size_t ns[] = {cp_channel_int(a, 1000)};
    cp_buf b = CP_BUF_INIT;
    make(&b, CP_KIND_DATA, a, ns[0], 1, 0);
    cp_frame f;
    const char *err;
    CHECK(cp_frame_parse(b.data, b.len, CP_FRAME_MAX_DEFAULT, &f, &err) == CP_FRAME_OK);
    CHECK(f.chan_len == 9);
    cp_buf_free(&b);
}

static int parse_raw(const char *bytes, size_t n, size_t max, const char **err)
{
    cp_frame f;
    return cp_frame_parse(bytes, n, max, &f, err);
}

static void test_malformed(void)
{
    const char *err = NULL;
    /* length says 1 GiB with a 1 KiB limit: oversized before any payload. */
    CHECK(parse_raw("\x40\x00\x00\x00", 4, 1024, &err) == CP_FRAME_BAD && strstr(err, "maximum"));
    /* too short for a header */
    CHECK(parse_raw("\x00\x00\x00\x02\x95\x00", 6, 1024, &err) == CP_FRAME_BAD);
    /* not an array of 5 */
    CHECK(parse_raw("\x00\x00\x00\x06\x94\x00\xc0\xc0\x00\x2a", 10, 1024, &err) == CP_FRAME_BAD && strstr(err, "5-element"));
    /* unknown kind 9 */
    CHECK(parse_raw("\x00\x00\x00\x06\x95\x09\xc0\xc0\x00\x2a", 10, 1024, &err) == CP_FRAME_BAD && strstr(err, "kind"));
    /* channel is a float */
    CHECK(parse_raw("\x00\x00\x00\x0e\x95\x00\xcb\x00\x00\x00\x00\x00\x00\x00\x00\xc0\x00\x2a", 18, 1024, &err) == CP_FRAME_BAD && strstr(err, "channel"));
    /* priority is a string */
    CHECK(parse_raw("\x00\x00\x00\x07\x95\x00\xc0\xa1x\x00\x2a", 11, 1024, &err) == CP_FRAME_BAD && strstr(err, "priority"));
    /* NaN priority */
    CHECK(parse_raw("\x00\x00\x00\x0e\x95\x00\xc0\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x00\x2a", 18, 1024, &err) == CP_FRAME_BAD);
    /* no payload after the flags */
    CHECK(parse_raw("\x00\x00\x00\x05\x95\x00\xc0\xc0\x00", 9, 1024, &err) == CP_FRAME_BAD);
    /* string channel longer than the frame */
    CHECK(parse_raw("\x00\x00\x00\x06\x95\x00\xbf\xc0\x00\x2a", 10, 1024, &err) == CP_FRAME_BAD);
    /* a valid minimal frame still parses */
    CHECK(parse_raw("\x00\x00\x00\x05\x95\x00\xc0\xc0\x00\x2a", 9, 1024, &err) == CP_FRAME_BAD);
    CHECK(parse_raw("\x00\x00\x00\x06\x95\x00\xc0\xc0\x00\x2a", 10, 1024, &err) == CP_FRAME_OK);
}

static void test_too_big_to_send(void)
{
    cp_buf b = CP_BUF_INIT;
    char ch[16];
    size_t cl = cp_channel_nil(ch);
    size_t mark = cp_frame_begin(&b, CP_KIND_DATA, ch, cl, INFINITY, 0);
    char payload[200];
    memset(payload, 0xc0, sizeof payload);
    cp_buf_append(&b, payload, sizeof payload);
    CHECK(cp_frame_finish(&b, mark, 100) == -1);
    CHECK(b.len == mark); /* nothing left behind */
    cp_buf_free(&b);
}

int main(void)
{
    test_round_trip();
    test_channels_canonical();
    test_malformed();
    test_too_big_to_send();
    return check_report("test_frame");
}
