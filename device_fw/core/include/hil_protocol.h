/* Framing of the HIL serial protocol (device_fw/PROTOCOL.md): a receiver that turns a byte stream into
 * frames with one fixed buffer, and a reply writer that streams a frame out piece by piece. */
#ifndef HIL_PROTOCOL_H
#define HIL_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define HIL_PROTOCOL_VERSION 1u

#define HIL_MAGIC0 0xA5u
#define HIL_MAGIC1 0x5Au
#define HIL_HEADER_SIZE 7u /* magic(2) type seq length(2) header-check */
#define HIL_CRC_SIZE 4u
#define HIL_FRAME_OVERHEAD (HIL_HEADER_SIZE + HIL_CRC_SIZE)
#define HIL_MAX_PAYLOAD 0xFFFFu /* length is a u16 */

/* Largest request payload accepted (reported as rx_max in INFO). The RX buffer is this plus the overhead.
 * 32 KB takes a 96x96x3 int8 image (27,648 bytes) in one INFER_DIGEST request, so a checked inference costs
 * one round trip and input + 50 bytes on the wire (PROTOCOL.md "INFER_DIGEST"); a port short of RAM may
 * build with less (at least 64): the host then sends the input in LOAD_INPUT chunks of rx_max - 5 bytes. */
#ifndef HIL_RX_MAX
#define HIL_RX_MAX 32768u
#endif
#if HIL_RX_MAX < 64 || HIL_RX_MAX > HIL_MAX_PAYLOAD
#error "HIL_RX_MAX must be within 64..65535"
#endif

/* Silence on the line, in microseconds, after which an incomplete frame is dropped (PROTOCOL.md "Receiving and
 * resynchronizing"): the bytes of one frame must follow each other with no longer gap. 100 ms is over 1000 byte
 * times at the slowest supported rate (115200 baud: 87 us a byte) and well above what USB-serial bridges and a
 * busy host add, yet short against the host's reply timeout, so the next request after a dead host's partial
 * frame is answered on its first attempt. */
#ifndef HIL_RX_GAP_US
#define HIL_RX_GAP_US 100000u
#endif

/* Request types; a reply is the request type with bit 7 set. */
#define HIL_T_HELLO 0x01u
#define HIL_T_ECHO 0x02u
#define HIL_T_LOAD_INPUT 0x03u
#define HIL_T_INFER 0x04u
#define HIL_T_READ_OUTPUT 0x05u
#define HIL_T_INFER_OFFLOAD 0x06u
#define HIL_T_INFER_DIGEST 0x08u
#define HIL_T_ERROR 0x7Fu
#define HIL_REPLY_BIT 0x80u

/* Error codes carried by an ERROR reply. */
#define HIL_E_BAD_CRC 1u
#define HIL_E_OVERSIZE 2u
#define HIL_E_UNKNOWN_TYPE 3u
#define HIL_E_BAD_REQUEST 4u
#define HIL_E_INFER_FAILED 5u
#define HIL_E_UNSUPPORTED 6u

typedef struct {
    uint8_t type;
    uint8_t seq;
    uint16_t length;
    const uint8_t *payload; /* points into the receiver's buffer; valid until the next hil_rx_next() */
} hil_frame_t;

typedef enum {
    HIL_RX_NEED_MORE = 0, /* no complete decision possible yet: read more bytes */
    HIL_RX_FRAME,         /* a good frame */
    HIL_RX_BAD_CRC,       /* header valid, payload CRC wrong: type/seq/length are set, payload is not */
    HIL_RX_OVERSIZE       /* header valid, length above HIL_RX_MAX: type/seq/length are set */
} hil_rx_event_t;

typedef struct {
    /* Holds at most one whole frame; bytes [head, tail) are received but not yet consumed. */
    uint8_t buf[HIL_HEADER_SIZE + HIL_RX_MAX + HIL_CRC_SIZE];
    size_t head;
    size_t tail;
    size_t pending_drop; /* bytes of the last returned frame, dropped on the next hil_rx_next() */
} hil_rx_t;

void hil_rx_init(hil_rx_t *rx);

/* Where the next read may store bytes, and how many (always at least 1). */
uint8_t *hil_rx_space(hil_rx_t *rx, size_t *room);

/* Declares that n bytes were stored at hil_rx_space(). */
void hil_rx_commit(hil_rx_t *rx, size_t n);

/* Scans the buffered bytes and returns the next event; call until it returns HIL_RX_NEED_MORE. */
hil_rx_event_t hil_rx_next(hil_rx_t *rx, hil_frame_t *frame);

/* After HIL_RX_NEED_MORE: the bytes held by an incomplete candidate frame (0 when the receiver is between
 * frames, waiting for a magic). While it is not 0, the caller reads with a timeout of HIL_RX_GAP_US. */
size_t hil_rx_partial(const hil_rx_t *rx);

/* The line was silent for HIL_RX_GAP_US with a candidate frame incomplete: it will never complete. Drops its
 * first byte, so that the next hil_rx_next() rescans the bytes after it (they may hold a whole frame, e.g. a
 * request the host sent right after the cut). Call again while hil_rx_partial() is not 0 after draining the
 * events: every byte held was received before the silence. */
void hil_rx_expire(hil_rx_t *rx);

/* Reply writer: begin with the payload length, write exactly that many bytes in any number of pieces, end.
 * Small pieces are gathered in a small staging buffer; large ones go straight to hil_port_write(). The
 * CRC-32 is updated as the bytes go, so no buffer ever holds a whole frame. */
#ifndef HIL_TX_STAGE
#define HIL_TX_STAGE 128u
#endif

typedef struct {
    uint32_t crc;
    uint32_t remaining; /* payload bytes still owed */
    size_t staged;
    uint8_t stage[HIL_TX_STAGE];
} hil_tx_t;

void hil_tx_begin(hil_tx_t *tx, uint8_t type, uint8_t seq, uint16_t length);
/* Bytes beyond the declared length are dropped, so a frame on the wire is always well formed. */
void hil_tx_write(hil_tx_t *tx, const void *data, size_t n);
void hil_tx_u8(hil_tx_t *tx, uint8_t v);
void hil_tx_u16(hil_tx_t *tx, uint16_t v);
void hil_tx_u32(hil_tx_t *tx, uint32_t v);
void hil_tx_u64(hil_tx_t *tx, uint64_t v);
/* Writes s padded with NULs (or cut) to exactly width bytes. */
void hil_tx_str(hil_tx_t *tx, const char *s, size_t width);
/* Pads with zeros if fewer bytes than declared were written, then sends the CRC. Does not flush the port. */
void hil_tx_end(hil_tx_t *tx);

/* A whole ERROR reply: u8 code, u8 request type, ASCII message. */
void hil_send_error(uint8_t seq, uint8_t code, uint8_t request_type, const char *message);

#endif
