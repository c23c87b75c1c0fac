/* Frame receiver and reply writer; the rules are those of PROTOCOL.md, "Receiving and resynchronizing".
 *
 * The receiver never blocks and never allocates: the caller reads bytes into hil_rx_space(), commits them
 * and drains events with hil_rx_next(). Every decision about a candidate frame is taken only once all of
 * its bytes are in the buffer, so the result does not depend on how the stream was split into reads; the one
 * exception is hil_rx_expire(), which the caller applies after HIL_RX_GAP_US of silence. */
#include "hil_protocol.h"

#include <string.h>

#include "hil_crc.h"
#include "hil_port.h"

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void hil_rx_init(hil_rx_t *rx)
{
    rx->head = 0;
    rx->tail = 0;
    rx->pending_drop = 0;
}

static void rx_apply_drop(hil_rx_t *rx)
{
    rx->head += rx->pending_drop;
    rx->pending_drop = 0;
    if (rx->head >= rx->tail) {
        rx->head = 0;
        rx->tail = 0;
    }
}

uint8_t *hil_rx_space(hil_rx_t *rx, size_t *room)
{
    rx_apply_drop(rx);
    /* Move the unconsumed bytes to the front only when the end is reached: a candidate frame that starts
     * at head > 0 and is incomplete then fits, because no frame is longer than the buffer. */
    if (rx->tail == sizeof rx->buf && rx->head > 0) {
        memmove(rx->buf, rx->buf + rx->head, rx->tail - rx->head);
        rx->tail -= rx->head;
        rx->head = 0;
    }
    if (rx->tail == sizeof rx->buf) {
        /* Unreachable: a full buffer starting at a frame start always yields a decision. Discard rather
         * than ever return no room, which would stall the main loop. */
        rx->head = 0;
        rx->tail = 0;
    }
    *room = sizeof rx->buf - rx->tail;
    return rx->buf + rx->tail;
}

void hil_rx_commit(hil_rx_t *rx, size_t n)
{
    size_t room = sizeof rx->buf - rx->tail;

    rx->tail += n < room ? n : room;
}

hil_rx_event_t hil_rx_next(hil_rx_t *rx, hil_frame_t *frame)
{
    rx_apply_drop(rx);
    for (;;) {
        const uint8_t *p = rx->buf + rx->head;
        size_t avail = rx->tail - rx->head;
        size_t total;
        uint32_t crc;

        /* 1. Discard bytes until the magic. */
        if (avail == 0) {
            rx->head = 0;
            rx->tail = 0;
            return HIL_RX_NEED_MORE;
        }
        if (p[0] != HIL_MAGIC0) {
            const uint8_t *m = memchr(p, HIL_MAGIC0, avail);
            if (m == NULL) {
                rx->head = 0;
                rx->tail = 0;
                return HIL_RX_NEED_MORE;
            }
            rx->head += (size_t)(m - p);
            continue;
        }
        if (avail < 2) {
            return HIL_RX_NEED_MORE;
        }
        if (p[1] != HIL_MAGIC1) {
            rx->head += 1;
            continue;
        }

        /* 2. Header check; on failure drop the first byte and rescan what is already buffered. */
        if (avail < HIL_HEADER_SIZE) {
            return HIL_RX_NEED_MORE;
        }
        if (hil_crc8(p + 2, 4) != p[6]) {
            rx->head += 1;
            continue;
        }
        frame->type = p[2];
        frame->seq = p[3];
        frame->length = get_u16(p + 4);
        frame->payload = NULL;

        /* 3. Oversize: report it and resynchronize from the byte after the magic. */
        if (frame->length > HIL_RX_MAX) {
            rx->head += 2;
            return HIL_RX_OVERSIZE;
        }

        /* 4. Payload and CRC; on failure report and rescan the bytes after the magic. */
        total = HIL_FRAME_OVERHEAD + frame->length;
        if (avail < total) {
            return HIL_RX_NEED_MORE;
        }
        crc = hil_crc32_update(0, p + 2, 5u + frame->length);
        if (crc != get_u32(p + HIL_HEADER_SIZE + frame->length)) {
            rx->head += 2;
            return HIL_RX_BAD_CRC;
        }
        frame->payload = p + HIL_HEADER_SIZE;
        rx->pending_drop = total;
        return HIL_RX_FRAME;
    }
}

size_t hil_rx_partial(const hil_rx_t *rx)
{
    size_t head = rx->head + rx->pending_drop;

    return rx->tail > head ? rx->tail - head : 0;
}

void hil_rx_expire(hil_rx_t *rx)
{
    rx_apply_drop(rx);
    if (rx->head < rx->tail) {
        rx->head += 1;
    }
    if (rx->head >= rx->tail) {
        rx->head = 0;
        rx->tail = 0;
    }
}

/* ---- reply writer ---- */

static void tx_flush_stage(hil_tx_t *tx)
{
    if (tx->staged > 0) {
        hil_port_write(tx->stage, tx->staged);
        tx->staged = 0;
    }
}

/* Sends bytes that are already accounted for in the CRC. */
static void tx_emit(hil_tx_t *tx, const uint8_t *p, size_t n)
{
    if (n >= sizeof tx->stage) {
        tx_flush_stage(tx);
        hil_port_write(p, n);
        return;
    }
    if (tx->staged + n > sizeof tx->stage) {
        tx_flush_stage(tx);
    }
    memcpy(tx->stage + tx->staged, p, n);
    tx->staged += n;
}

void hil_tx_begin(hil_tx_t *tx, uint8_t type, uint8_t seq, uint16_t length)
{
    uint8_t h[HIL_HEADER_SIZE];

    h[0] = HIL_MAGIC0;
    h[1] = HIL_MAGIC1;
    h[2] = type;
    h[3] = seq;
    h[4] = (uint8_t)(length & 0xFFu);
    h[5] = (uint8_t)(length >> 8);
    h[6] = hil_crc8(h + 2, 4);
    tx->staged = 0;
    tx->remaining = length;
    tx->crc = hil_crc32_update(0, h + 2, 5);
    tx_emit(tx, h, sizeof h);
}

void hil_tx_write(hil_tx_t *tx, const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;

    if (n > tx->remaining) {
        n = tx->remaining;
    }
    if (n == 0) {
        return;
    }
    tx->crc = hil_crc32_update(tx->crc, p, n);
    tx->remaining -= (uint32_t)n;
    tx_emit(tx, p, n);
}

void hil_tx_u8(hil_tx_t *tx, uint8_t v)
{
    hil_tx_write(tx, &v, 1);
}

void hil_tx_u16(hil_tx_t *tx, uint16_t v)
{
    uint8_t b[2];

    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    hil_tx_write(tx, b, sizeof b);
}

void hil_tx_u32(hil_tx_t *tx, uint32_t v)
{
    uint8_t b[4];
    int i;

    for (i = 0; i < 4; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    hil_tx_write(tx, b, sizeof b);
}

void hil_tx_u64(hil_tx_t *tx, uint64_t v)
{
    hil_tx_u32(tx, (uint32_t)(v & 0xFFFFFFFFu));
    hil_tx_u32(tx, (uint32_t)(v >> 32));
}

void hil_tx_str(hil_tx_t *tx, const char *s, size_t width)
{
    static const uint8_t zeros[16];
    size_t n = 0;

    while (s != NULL && n < width && s[n] != '\0') {
        n++;
    }
    hil_tx_write(tx, s, n);
    width -= n;
    while (width > 0) {
        size_t k = width < sizeof zeros ? width : sizeof zeros;
        hil_tx_write(tx, zeros, k);
        width -= k;
    }
}

void hil_tx_end(hil_tx_t *tx)
{
    static const uint8_t zeros[16];
    uint8_t c[HIL_CRC_SIZE];
    int i;

    while (tx->remaining > 0) {
        hil_tx_write(tx, zeros, tx->remaining < sizeof zeros ? tx->remaining : sizeof zeros);
    }
    for (i = 0; i < 4; i++) {
        c[i] = (uint8_t)(tx->crc >> (8 * i));
    }
    tx_emit(tx, c, sizeof c);
    tx_flush_stage(tx);
}

void hil_send_error(uint8_t seq, uint8_t code, uint8_t request_type, const char *message)
{
    hil_tx_t tx;
    size_t n = 0;

    while (message[n] != '\0' && n < 200) {
        n++;
    }
    hil_tx_begin(&tx, HIL_T_ERROR, seq, (uint16_t)(2 + n));
    hil_tx_u8(&tx, code);
    hil_tx_u8(&tx, request_type);
    hil_tx_write(&tx, message, n);
    hil_tx_end(&tx);
}
