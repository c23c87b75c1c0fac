/* Shared checkers of the libFuzzer harnesses, written from PROTOCOL.md and OFFLOAD.md (see fuzz_support.h).
 * Nothing here calls the firmware's own CRC or codec code, so a bug there cannot hide itself by also being in the
 * checker. The fuzz port is fuzz_port.c. */
#include "fuzz_support.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hil_protocol.h"

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "\n==fuzz== PROPERTY VIOLATED at %s:%d: %s\n==fuzz== ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

uint32_t fz_xorshift(uint32_t *state)
{
    uint32_t x = *state != 0u ? *state : 0x9E3779B9u;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* ---- checksums, bit by bit from their definitions ---- */

uint8_t fz_crc8(const uint8_t *p, size_t n)
{
    uint8_t crc = 0;
    size_t i;
    int b;

    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (b = 0; b < 8; b++) {
            crc = (uint8_t)((crc & 0x80u) ? (crc << 1) ^ 0x07u : crc << 1);
        }
    }
    return crc;
}

/* CRC-32/ISO-HDLC through a table that is computed here, bit by bit, from the polynomial. */
uint32_t fz_crc32(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;

    if (!ready) {
        uint32_t v, b;
        for (v = 0; v < 256u; v++) {
            uint32_t c = v;
            for (b = 0; b < 8u; b++) {
                c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
            }
            table[v] = c;
        }
        ready = 1;
    }
    for (i = 0; i < n; i++) {
        crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ---- reply frames ---- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

size_t fz_parse_frame(const uint8_t *buf, size_t n, fz_frame_t *f, const char **why)
{
    size_t total;

    if (n < HIL_FRAME_OVERHEAD) {
        *why = "shorter than a frame";
        return 0;
    }
    if (buf[0] != 0xA5u || buf[1] != 0x5Au) {
        *why = "no magic";
        return 0;
    }
    if (fz_crc8(buf + 2, 4) != buf[6]) {
        *why = "bad header check";
        return 0;
    }
    f->type = buf[2];
    f->seq = buf[3];
    f->length = (uint16_t)(buf[4] | (buf[5] << 8));
    total = HIL_FRAME_OVERHEAD + f->length;
    if (n < total) {
        *why = "truncated";
        return 0;
    }
    if (fz_crc32(buf + 2, 5u + f->length) != le32(buf + HIL_HEADER_SIZE + f->length)) {
        *why = "bad CRC-32";
        return 0;
    }
    f->payload = buf + HIL_HEADER_SIZE;
    return total;
}

void fz_check_reply_shape(const fz_frame_t *f)
{
    size_t i;

    if (f->type == HIL_T_ERROR) {
        FZ_CHECK(f->length >= 2, "ERROR reply of %u bytes", f->length);
        FZ_CHECK(f->payload[0] >= HIL_E_BAD_CRC && f->payload[0] <= HIL_E_UNSUPPORTED, "ERROR code %u",
                 f->payload[0]);
        FZ_CHECK(f->length - 2 <= 200, "ERROR message of %u bytes", f->length - 2);
        for (i = 2; i < f->length; i++) {
            FZ_CHECK(f->payload[i] >= 0x20u && f->payload[i] < 0x7Fu, "ERROR message byte 0x%02x at %zu",
                     f->payload[i], i);
        }
        return;
    }
    switch (f->type) {
    case HIL_T_HELLO | HIL_REPLY_BIT:
    case HIL_T_ECHO | HIL_REPLY_BIT:
    case HIL_T_LOAD_INPUT | HIL_REPLY_BIT:
    case HIL_T_INFER | HIL_REPLY_BIT:
    case HIL_T_READ_OUTPUT | HIL_REPLY_BIT:
    case HIL_T_INFER_OFFLOAD | HIL_REPLY_BIT:
    case HIL_T_INFER_DIGEST | HIL_REPLY_BIT:
        return;
    default:
        FZ_CHECK(0, "reply of type 0x%02x, which is no reply type", f->type);
    }
}

/* ---- offload payloads ---- */

typedef struct {
    const uint8_t *p;
    size_t n;      /* bytes */
    uint64_t pos;  /* next bit */
} bit_reader_t;

static int br_left(const bit_reader_t *r, uint32_t width)
{
    return r->pos + width <= (uint64_t)r->n * 8u;
}

/* LSB-first: stream bit j is bit j % 8 of byte j / 8; an integer's first bit is its least significant. */
static uint32_t br_read(bit_reader_t *r, uint32_t width)
{
    uint32_t v = 0;
    uint32_t i;

    for (i = 0; i < width; i++, r->pos++) {
        v |= (uint32_t)((r->p[r->pos >> 3] >> (r->pos & 7u)) & 1u) << i;
    }
    return v;
}

/* The padding rule: the stream ends in the byte of its last bit, and the rest of that byte is zero. */
static int br_finish(const bit_reader_t *r, const char **why)
{
    uint64_t used_bytes = (r->pos + 7u) / 8u;

    if (used_bytes != r->n) {
        *why = "bytes after the end of the stream";
        return -1;
    }
    if (r->pos % 8u != 0u && (r->p[r->pos / 8u] >> (r->pos % 8u)) != 0u) {
        *why = "non-zero padding bits";
        return -1;
    }
    return 0;
}

static uint32_t bit_length(uint32_t v)
{
    uint32_t n = 0;

    while (v != 0u) {
        n++;
        v >>= 1;
    }
    return n;
}

static int decode_stored(bit_reader_t *r, uint32_t n_values, uint32_t bits, uint8_t *codes, const char **why)
{
    uint32_t i;

    if ((uint64_t)r->n != ((uint64_t)n_values * bits + 7u) / 8u) {
        *why = "stored body of the wrong size";
        return -1;
    }
    for (i = 0; i < n_values; i++) {
        codes[i] = (uint8_t)br_read(r, bits);
    }
    return br_finish(r, why);
}

#define LZW_LIMIT (1u << 16)
static uint32_t lzw_prefix[LZW_LIMIT];
static uint32_t lzw_len[LZW_LIMIT];
static uint8_t lzw_first[LZW_LIMIT];
static uint8_t lzw_last[LZW_LIMIT];

static int decode_lzw(bit_reader_t *r, uint32_t n_values, uint32_t bits, uint32_t max_bits, uint8_t *codes,
                      const char **why)
{
    const uint32_t alphabet = 1u << bits;
    const uint32_t clear = alphabet, end = alphabet + 1u, first = alphabet + 2u;
    const uint32_t limit = 1u << max_bits;
    uint32_t next = first;
    uint32_t prev = UINT32_MAX; /* none */
    uint32_t out = 0;
    uint32_t c, s;

    if (max_bits < bit_length(first) || max_bits > 16u) {
        *why = "LZW max code bits out of range";
        return -1;
    }
    for (s = 0; s < alphabet; s++) {
        lzw_len[s] = 1;
        lzw_first[s] = (uint8_t)s;
        lzw_last[s] = (uint8_t)s;
    }
    for (;;) {
        uint32_t width = bit_length(next) < max_bits ? bit_length(next) : max_bits;
        uint8_t head;
        uint32_t k, e;

        if (!br_left(r, width)) {
            *why = "LZW stream truncated (no END)";
            return -1;
        }
        c = br_read(r, width);
        if (c == clear) {
            next = first;
            prev = UINT32_MAX;
            continue;
        }
        if (c == end) {
            break;
        }
        if (c < alphabet || (c >= first && c < next)) {
            head = lzw_first[c];
        } else if (c == next && prev != UINT32_MAX) {
            head = lzw_first[prev]; /* the string being defined by this very code */
        } else {
            *why = "invalid LZW code";
            return -1;
        }
        if (prev != UINT32_MAX && next < limit) {
            lzw_prefix[next] = prev;
            lzw_len[next] = lzw_len[prev] + 1u;
            lzw_first[next] = lzw_first[prev];
            lzw_last[next] = head;
            next++;
        }
        if (lzw_len[c] > n_values - out) {
            *why = "LZW stream decodes to more than n_values codes";
            return -1;
        }
        for (k = lzw_len[c], e = c; k > 0; k--) {
            codes[out + k - 1u] = lzw_last[e];
            e = lzw_prefix[e];
        }
        out += lzw_len[c];
        prev = c;
    }
    if (out != n_values) {
        *why = "LZW stream ends before n_values codes";
        return -1;
    }
    return br_finish(r, why);
}

int fz_huffman_lengths_valid(const uint8_t *lengths, uint32_t bits)
{
    uint32_t kraft = 0; /* in units of 2^-15 */
    uint32_t s;

    if (bits < 1u || bits > 8u) {
        return 0;
    }
    for (s = 0; s < (1u << bits); s++) {
        if (lengths[s] < 1u || lengths[s] > 15u) {
            return 0;
        }
        kraft += 1u << (15u - lengths[s]);
    }
    return kraft <= (1u << 15);
}

static int decode_huffman(bit_reader_t *r, uint32_t n_values, uint32_t bits, const uint8_t *lengths,
                          uint32_t header_max, uint8_t *codes, const char **why)
{
    const uint32_t alphabet = 1u << bits;
    uint32_t count[16] = {0};
    uint32_t offset[16];
    uint8_t sorted[256];
    uint32_t s, len, top = 0, i;

    for (s = 0; s < alphabet; s++) {
        count[lengths[s]]++;
        top = lengths[s] > top ? lengths[s] : top;
    }
    if (header_max != top) {
        *why = "Huffman header's longest code is not the model's";
        return -1;
    }
    offset[1] = 0;
    for (len = 1; len < 15u; len++) {
        offset[len + 1u] = offset[len] + count[len];
    }
    for (s = 0; s < alphabet; s++) {
        sorted[offset[lengths[s]]++] = (uint8_t)s; /* (length, symbol) order: canonical */
    }
    for (i = 0; i < n_values; i++) {
        /* Canonical decoding (as zlib's puff): code, first code and index of each length, MSB first. */
        uint32_t code = 0, first_code = 0, index = 0;
        int found = 0;

        for (len = 1; len <= top; len++) {
            if (!br_left(r, 1)) {
                *why = "Huffman stream truncated";
                return -1;
            }
            code |= br_read(r, 1);
            if (code - first_code < count[len]) {
                codes[i] = sorted[index + (code - first_code)];
                found = 1;
                break;
            }
            index += count[len];
            first_code += count[len];
            first_code <<= 1;
            code <<= 1;
        }
        if (!found) {
            *why = "invalid Huffman code";
            return -1;
        }
    }
    return br_finish(r, why);
}

int fz_offload_decode(const uint8_t *p, size_t len, uint32_t n_values, uint32_t bits, const uint8_t *lengths,
                      uint8_t *codes, uint32_t *mode, const char **why)
{
    bit_reader_t r;

    if (len < 4u) {
        *why = "truncated header";
        return -1;
    }
    if (p[0] != 1u) {
        *why = "format version is not 1";
        return -1;
    }
    if (p[2] != bits) {
        *why = "bits per code differ";
        return -1;
    }
    *mode = p[1];
    r.p = p + 4;
    r.n = len - 4u;
    r.pos = 0;
    switch (p[1]) {
    case 0:
        if (p[3] != 0u) {
            *why = "stored payload with non-zero max code bits";
            return -1;
        }
        return decode_stored(&r, n_values, bits, codes, why);
    case 1:
        return decode_lzw(&r, n_values, bits, p[3], codes, why);
    case 2:
        if (lengths == NULL) {
            *why = "Huffman payload for a model without lengths";
            return -1;
        }
        return decode_huffman(&r, n_values, bits, lengths, p[3], codes, why);
    default:
        *why = "unknown mode";
        return -1;
    }
}

uint64_t fz_stored_size(uint32_t n_values, uint32_t bits)
{
    return 4u + ((uint64_t)n_values * bits + 7u) / 8u;
}

uint64_t fz_huffman_size(const uint8_t *codes, uint32_t n_values, const uint8_t *lengths)
{
    uint64_t total = 0;
    uint32_t i;

    for (i = 0; i < n_values; i++) {
        total += lengths[codes[i]];
    }
    return 4u + (total + 7u) / 8u;
}

/* ---- patterns ---- */

void fz_pattern(uint8_t *out, size_t n, uint8_t kind, uint32_t seed)
{
    uint32_t st = seed | 1u;
    size_t i = 0;

    switch (kind % 6u) {
    case 0: /* constant */
        memset(out, (int)(seed & 0xFFu), n);
        break;
    case 1: /* uniform random */
        for (i = 0; i < n; i++) {
            out[i] = (uint8_t)(fz_xorshift(&st) >> 24);
        }
        break;
    case 2: /* runs of random values */
        while (i < n) {
            uint32_t x = fz_xorshift(&st);
            size_t run = 1u + (x & 63u);
            for (; run > 0 && i < n; run--) {
                out[i++] = (uint8_t)(x >> 24);
            }
        }
        break;
    case 3: /* ramp */
        for (i = 0; i < n; i++) {
            out[i] = (uint8_t)(seed + i * ((seed >> 8) | 1u));
        }
        break;
    case 4: { /* skewed towards a few values (geometric) */
        for (i = 0; i < n; i++) {
            uint32_t x = fz_xorshift(&st);
            uint32_t k = 0;
            while (k < 7u && (x & (1u << k)) != 0u) {
                k++;
            }
            out[i] = (uint8_t)(-(int)k); /* 0, -1, -2, ...: code k through identity's output 1 (-input) */
        }
        break;
    }
    default: /* two values alternating */
        for (i = 0; i < n; i++) {
            out[i] = (uint8_t)((i & 1u) ? seed : seed >> 8);
        }
        break;
    }
}
