/* Fuzz target "receiver": the firmware's frame receiver (core/src/protocol.c) and main loop (core/src/app.c)
 * fed arbitrary byte streams: garbage, console text, truncated frames, bad header checks, bad CRCs, oversize
 * lengths, frames split across reads at any point and cut by silences on the line.
 *
 * Input: byte 0 chooses how reads are split (bits 0-5: 0, each read takes all the firmware has room for; n,
 * reads of 1..n bytes, sizes from a PRNG) and whether the harness repairs checksums first (bit 6: every header
 * check after a magic, bit 7: every CRC-32 of such a header whose frame is complete, so that the fuzzer reaches
 * the length and payload rules without solving CRCs), byte 1 where the line goes silent for HIL_RX_GAP_US (0:
 * never; p < 128: after every p bytes; p >= 128: after every (p - 127) * 64 bytes), the rest is the byte stream.
 *
 * Properties, checked on every run:
 * - everything the firmware writes is a sequence of well-formed reply frames (fz_check_reply_shape), nothing
 *   else (this build writes no console text);
 * - the replies are exactly those a reference receiver written from PROTOCOL.md "Receiving and
 *   resynchronizing" (ref_scan below, over the whole stream with the same silences) calls for: one per frame,
 *   bad CRC and oversize header, in order, with the frame's seq; BAD_CRC and OVERSIZE as ERRORs with the
 *   frame's type (and the oversize length in the message), a good frame answered with its reply type or an
 *   ERROR naming its type, an unknown type with UNKNOWN_TYPE, an ECHO with its own payload;
 * - the stream is also run again with whole reads and no silence, against the reference on that: so the
 *   outcome does not depend on how the stream was split into reads, only on the silences;
 * - ASan/UBSan: no out-of-bounds access, no undefined behaviour anywhere on the way.
 *
 * Built twice: "receiver" with the default HIL_RX_MAX (32768) and "receiver_rx64" with -DHIL_RX_MAX=64, whose
 * small buffer fills and wraps with inputs of a few hundred bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "hil_model.h"
#include "hil_protocol.h"

enum { EV_FRAME, EV_BAD_CRC, EV_OVERSIZE };

typedef struct {
    int kind;
    uint8_t type;
    uint8_t seq;
    uint16_t length;
    size_t pos; /* where the frame starts in the stream */
} ref_event_t;

static ref_event_t *events;
static size_t n_events;
static size_t cap_events;

static void add_event(int kind, const uint8_t *p, size_t pos)
{
    ref_event_t *e;

    if (n_events == cap_events) {
        cap_events = cap_events != 0u ? 2u * cap_events : 256u;
        events = realloc(events, cap_events * sizeof *events);
        FZ_CHECK(events != NULL, "out of memory");
    }
    e = &events[n_events++];
    e->kind = kind;
    e->type = p[pos + 2];
    e->seq = p[pos + 3];
    e->length = (uint16_t)(p[pos + 4] | (p[pos + 5] << 8));
    e->pos = pos;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The rules of PROTOCOL.md over the bytes [pos, lim), all of which have arrived: records the events and returns
 * where an incomplete candidate frame starts, or lim when none is left (waiting for a magic). */
static size_t ref_scan(const uint8_t *p, size_t pos, size_t lim)
{
    for (;;) {
        size_t len, total;

        if (pos >= lim) {
            return lim;
        }
        if (p[pos] != HIL_MAGIC0) { /* 1. discard bytes until the magic */
            pos++;
            continue;
        }
        if (lim - pos < 2u) {
            return pos;
        }
        if (p[pos + 1] != HIL_MAGIC1) {
            pos++;
            continue;
        }
        if (lim - pos < HIL_HEADER_SIZE) {
            return pos;
        }
        if (fz_crc8(p + pos + 2, 4) != p[pos + 6]) { /* 2. drop the first byte, rescan */
            pos++;
            continue;
        }
        len = (size_t)p[pos + 4] | ((size_t)p[pos + 5] << 8);
        if (len > HIL_RX_MAX) { /* 3. oversize: report, resynchronize after the magic */
            add_event(EV_OVERSIZE, p, pos);
            pos += 2u;
            continue;
        }
        total = HIL_FRAME_OVERHEAD + len;
        if (lim - pos < total) {
            return pos;
        }
        if (fz_crc32(p + pos + 2, 5u + len) != rd32(p + pos + HIL_HEADER_SIZE + len)) { /* 4. bad CRC */
            add_event(EV_BAD_CRC, p, pos);
            pos += 2u;
            continue;
        }
        add_event(EV_FRAME, p, pos);
        pos += total;
    }
}

/* The whole stream, with silences after the given positions (5.: an incomplete candidate loses its first byte
 * and the rest is rescanned, until no candidate is left; every byte held arrived before the silence). */
static void ref_receive(const uint8_t *p, size_t n, const size_t *silences, size_t n_silences)
{
    size_t pos = 0;
    size_t i;

    n_events = 0;
    for (i = 0; i < n_silences; i++) {
        size_t s = silences[i];

        pos = ref_scan(p, pos, s);
        while (pos < s) {
            pos = ref_scan(p, pos + 1u, s);
        }
    }
    ref_scan(p, pos, n);
}

static int is_request_type(uint8_t t)
{
    return t == HIL_T_HELLO || t == HIL_T_ECHO || t == HIL_T_LOAD_INPUT || t == HIL_T_INFER ||
           t == HIL_T_READ_OUTPUT || t == HIL_T_INFER_OFFLOAD || t == HIL_T_INFER_DIGEST;
}

static void check_replies(const uint8_t *stream, const char *run)
{
    size_t n_out;
    const uint8_t *out = fz_output(&n_out);
    size_t off = 0;
    size_t i;
    char want[64];

    for (i = 0; off < n_out; i++) {
        fz_frame_t r;
        const char *why = "";
        size_t k = fz_parse_frame(out + off, n_out - off, &r, &why);
        const ref_event_t *e;

        FZ_CHECK(k != 0, "%s: output byte %zu does not start a well-formed frame (%s)", run, off, why);
        fz_check_reply_shape(&r);
        FZ_CHECK(i < n_events, "%s: reply %zu (type 0x%02x seq %u) but the reference has only %zu events", run, i,
                 r.type, r.seq, n_events);
        e = &events[i];
        FZ_CHECK(r.seq == e->seq, "%s: reply %zu has seq %u, its event (at stream byte %zu) %u", run, i, r.seq,
                 e->pos, e->seq);
        if (e->kind == EV_BAD_CRC || e->kind == EV_OVERSIZE) {
            uint8_t code = e->kind == EV_BAD_CRC ? HIL_E_BAD_CRC : HIL_E_OVERSIZE;
            FZ_CHECK(r.type == HIL_T_ERROR && r.payload[0] == code && r.payload[1] == e->type,
                     "%s: event %zu (%s at stream byte %zu) answered with type 0x%02x", run, i,
                     code == HIL_E_BAD_CRC ? "bad CRC" : "oversize", e->pos, r.type);
            if (e->kind == EV_OVERSIZE) {
                snprintf(want, sizeof want, "length %u above rx_max %u", (unsigned)e->length, (unsigned)HIL_RX_MAX);
                FZ_CHECK(r.length == 2u + strlen(want) && memcmp(r.payload + 2, want, strlen(want)) == 0,
                         "%s: oversize message is not '%s'", run, want);
            }
        } else if (!is_request_type(e->type)) {
            FZ_CHECK(r.type == HIL_T_ERROR && r.payload[0] == HIL_E_UNKNOWN_TYPE && r.payload[1] == e->type,
                     "%s: frame of unknown type 0x%02x answered with 0x%02x", run, e->type, r.type);
        } else if (r.type == HIL_T_ERROR) {
            FZ_CHECK(r.payload[0] >= HIL_E_UNKNOWN_TYPE && r.payload[1] == e->type,
                     "%s: frame of type 0x%02x answered with ERROR %u for type 0x%02x", run, e->type, r.payload[0],
                     r.payload[1]);
            FZ_CHECK(e->type != HIL_T_ECHO && !(e->type == HIL_T_HELLO && e->length == 0u),
                     "%s: a valid request of type 0x%02x refused with ERROR %u", run, e->type, r.payload[0]);
        } else {
            FZ_CHECK(r.type == (e->type | HIL_REPLY_BIT), "%s: frame of type 0x%02x answered with type 0x%02x",
                     run, e->type, r.type);
            if (e->type == HIL_T_ECHO) {
                FZ_CHECK(r.length == e->length && memcmp(r.payload, stream + e->pos + HIL_HEADER_SIZE, e->length) == 0,
                         "%s: ECHO of %u bytes answered with %u other bytes", run, e->length, r.length);
            }
        }
        off += k;
    }
    FZ_CHECK(i == n_events, "%s: %zu replies, the reference expects %zu", run, i, n_events);
}

static void run_once(const uint8_t *stream, size_t n, uint32_t max_chunk, uint32_t seed, const size_t *silences,
                     size_t n_silences, const char *run)
{
    fz_input_t in;
    int rc;

    memset(&in, 0, sizeof in);
    in.data = stream;
    in.n = n;
    in.max_chunk = max_chunk;
    in.rng = seed;
    in.silences = silences;
    in.n_silences = n_silences;
    /* Same start for every run: the handlers' state (outputs valid, input bytes) does not leak between runs. */
    memset(hil_model_arena(), 0, hil_model_info.arena_bytes);
    rc = fz_run_app(&in);
    FZ_CHECK(rc == 0, "%s: hil_app_run() returned %d at the end of input", run, rc);
    FZ_CHECK(in.pos == n, "%s: the firmware stopped reading at byte %zu of %zu", run, in.pos, n);
    ref_receive(stream, n, silences, n_silences);
    check_replies(stream, run);
}

/* Makes the header check (and the CRC-32, when the frame is complete) right for every magic, left to right. */
static void repair_checks(uint8_t *p, size_t n, int header, int crc)
{
    size_t i;

    for (i = 0; header && i + HIL_HEADER_SIZE <= n; i++) {
        size_t len;
        uint32_t c;
        int k;

        if (p[i] != HIL_MAGIC0 || p[i + 1] != HIL_MAGIC1) {
            continue;
        }
        p[i + 6] = fz_crc8(p + i + 2, 4);
        len = (size_t)p[i + 4] | ((size_t)p[i + 5] << 8);
        if (!crc || len > n - i - HIL_HEADER_SIZE || HIL_CRC_SIZE > n - i - HIL_HEADER_SIZE - len) {
            continue;
        }
        c = fz_crc32(p + i + 2, 5u + len);
        for (k = 0; k < 4; k++) {
            p[i + HIL_HEADER_SIZE + len + (size_t)k] = (uint8_t)(c >> (8 * k));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static size_t *silences;
    static size_t cap_silences;
    static uint8_t *copy;
    static size_t cap_stream;
    const uint8_t *stream;
    size_t n, n_silences = 0, period = 0;
    uint32_t max_chunk;

    if (size < 2u) {
        return 0;
    }
    max_chunk = data[0] & 0x3Fu;
    if (data[1] != 0u) {
        period = data[1] < 128u ? data[1] : (size_t)(data[1] - 127u) * 64u;
    }
    n = size - 2u;
    if (n > cap_stream) {
        cap_stream = n;
        copy = realloc(copy, cap_stream);
        FZ_CHECK(copy != NULL, "out of memory");
    }
    if (n > 0u) {
        memcpy(copy, data + 2, n);
    }
    repair_checks(copy, n, (data[0] & 0x40u) != 0u, (data[0] & 0x80u) != 0u);
    stream = copy;
    if (period != 0u) {
        size_t s;
        if (n / period + 1u > cap_silences) {
            cap_silences = n / period + 1u;
            silences = realloc(silences, cap_silences * sizeof *silences);
            FZ_CHECK(silences != NULL, "out of memory");
        }
        for (s = period; s <= n; s += period) {
            silences[n_silences++] = s;
        }
    }
    run_once(stream, n, max_chunk, 0x9E3779B9u ^ ((uint32_t)data[0] << 8 | data[1]), silences, n_silences,
             "split run");
    if (max_chunk != 0u || n_silences != 0u) {
        run_once(stream, n, 0, 1, NULL, 0, "whole run");
    }
    return 0;
}
