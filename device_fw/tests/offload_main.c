/* Host-side harness for the offload compressor (core/src/offload.c), used by tests/test_offload_codec.py to
 * check that the C encoder writes exactly the bytes of the reference encoder (hil/offload/codec.py).
 *
 * Reads cases from stdin until it ends, each: u8 bits, u32 n, u32 capacity (little-endian), then, when bit 7
 * of the bits byte is set, 2^bits Huffman code lengths (one byte each; bits = the low 7 bits), then n codes
 * (one byte each, < 2^bits). The codes go through the compressor as int8 values code - 128 with an identity
 * lookup table. Writes per case: u8 status (hil_offload_status_t), u32 payload length, the payload.
 * Exit status 0 at a clean end of input, 1 on a truncated case or a case beyond the harness's buffers. */
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "hil_offload.h"

#define MAX_VALUES (4u << 20)
#define MAX_PAYLOAD (HIL_OFFLOAD_HEADER_BYTES + MAX_VALUES + 1u)

static int8_t values[MAX_VALUES];
static uint8_t payload[MAX_PAYLOAD + 64u]; /* + a guard that must stay untouched */

static int read_exact(void *dst, size_t n)
{
    return fread(dst, 1, n, stdin) == n;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int main(void)
{
    uint8_t lut[256];
    uint8_t lengths[256];
    uint32_t i;

    for (i = 0; i < 256u; i++) {
        lut[i] = (uint8_t)i; /* value code - 128 -> code */
    }
    for (;;) {
        uint8_t head[9];
        uint8_t out_head[5];
        uint32_t n, capacity, len = 0, bits;
        int huffman;
        hil_offload_status_t st;
        size_t got = fread(head, 1, 1, stdin);

        if (got == 0) {
            return 0;
        }
        if (!read_exact(head + 1, 8)) {
            return 1;
        }
        n = le32(head + 1);
        capacity = le32(head + 5);
        huffman = (head[0] & 0x80u) != 0u;
        bits = head[0] & 0x7Fu;
        if (huffman && (bits < 1u || bits > 8u || !read_exact(lengths, (size_t)1u << bits))) {
            return 1;
        }
        if (n > MAX_VALUES || capacity > MAX_PAYLOAD || !read_exact(values, n)) {
            return 1;
        }
        for (i = 0; i < n; i++) {
            values[i] = (int8_t)((int)(uint8_t)values[i] - 128);
        }
        for (i = capacity; i < capacity + 64u; i++) {
            payload[i] = 0xA5u;
        }
        st = hil_offload_compress(values, n, lut, bits, huffman ? lengths : NULL, payload, capacity, &len);
        for (i = capacity; i < capacity + 64u; i++) {
            if (payload[i] != 0xA5u) {
                fprintf(stderr, "offload_main: byte %u written past the capacity %u\n", (unsigned)i,
                        (unsigned)capacity);
                return 2;
            }
        }
        out_head[0] = (uint8_t)st;
        for (i = 0; i < 4u; i++) {
            out_head[1 + i] = (uint8_t)(len >> (8u * i));
        }
        fwrite(out_head, 1, sizeof out_head, stdout);
        fwrite(payload, 1, len, stdout);
        fflush(stdout);
    }
}
