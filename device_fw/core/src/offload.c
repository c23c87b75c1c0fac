/* Quantize + compress of the AgileNN remote-bound channels (hil_offload.h, device_fw/OFFLOAD.md).
 *
 * LZW over the code alphabet, as hil/offload/codec.py's lzw_encode(): codes 0..A-1 are the symbols
 * (A = 2^bits), A is CLEAR, A+1 is END, dictionary codes start at A+2; every code is written LSB-first
 * with width min(MAX_BITS, bit_length(next code the decoder assigns)); once the encoder has assigned the
 * last code it writes CLEAR and starts over.
 *
 * The dictionary is a trie in three static arrays indexed by code: first_child, next_sibling and symbol.
 * Finding the child of a prefix for a symbol walks at most A siblings, so the work per input value is
 * bounded (8 comparisons at 3 bits) whatever the data; a reset clears the A root entries only.
 *
 * Static canonical Huffman (mode 2, models with code lengths), as codec.py's huffman_encode(): the canonical
 * codes (DEFLATE's assignment in (length, symbol) order) are built from the lengths into a static table of
 * A entries, stored bit-reversed so that the LSB-first writer sends each code most significant bit first;
 * the payload's size is known from one pass (the sum of the lengths), so the encoder can pick the smallest
 * mode before writing it. */
#include "hil_offload.h"

#include <stddef.h>

#define DICT_SIZE (1u << HIL_OFFLOAD_LZW_MAX_BITS)
#define NO_CHILD 0u /* code 0 is a symbol, never anyone's child */

static uint16_t first_child[DICT_SIZE];
static uint16_t next_sibling[DICT_SIZE];
static uint8_t node_symbol[DICT_SIZE];

static uint16_t huff_code[256]; /* canonical code of each symbol, bit-reversed (its first bit in bit 0) */
static uint8_t huff_len[256];

/* ---- LSB-first bit writer into a bounded buffer ---- */

typedef struct {
    uint8_t *out;
    uint32_t capacity;
    uint32_t len;
    uint32_t acc;  /* pending bits, the oldest in bit 0 */
    uint32_t nacc; /* number of pending bits, < 8 between calls */
    int full;      /* a byte did not fit: the output is incomplete */
} bit_writer_t;

static void bw_init(bit_writer_t *w, uint8_t *out, uint32_t capacity)
{
    w->out = out;
    w->capacity = capacity;
    w->len = 0;
    w->acc = 0;
    w->nacc = 0;
    w->full = 0;
}

static void bw_byte(bit_writer_t *w, uint8_t b)
{
    if (w->len < w->capacity) {
        w->out[w->len++] = b;
    } else {
        w->full = 1;
    }
}

/* width <= 16, so acc never holds more than 7 + 16 bits. */
static void bw_put(bit_writer_t *w, uint32_t code, uint32_t width)
{
    w->acc |= code << w->nacc;
    w->nacc += width;
    while (w->nacc >= 8u) {
        bw_byte(w, (uint8_t)(w->acc & 0xFFu));
        w->acc >>= 8;
        w->nacc -= 8u;
    }
}

static void bw_finish(bit_writer_t *w)
{
    if (w->nacc > 0u) {
        bw_byte(w, (uint8_t)(w->acc & 0xFFu));
        w->acc = 0;
        w->nacc = 0;
    }
}

static void write_header(bit_writer_t *w, uint32_t mode, uint32_t bits, uint32_t max_code_bits)
{
    bw_byte(w, (uint8_t)HIL_OFFLOAD_FORMAT_VERSION);
    bw_byte(w, (uint8_t)mode);
    bw_byte(w, (uint8_t)bits);
    bw_byte(w, (uint8_t)max_code_bits);
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

/* ---- LZW ---- */

typedef struct {
    bit_writer_t *w;
    uint32_t decoder_next; /* the code the decoder assigns next: it runs one entry behind the encoder */
    uint32_t width;        /* min(MAX_BITS, bit_length(decoder_next)) */
    int started;           /* a data code was written since the last reset */
} lzw_out_t;

static void lzw_reset_out(lzw_out_t *o, uint32_t first)
{
    o->decoder_next = first;
    o->width = bit_length(first);
    o->started = 0;
}

static void lzw_emit_data(lzw_out_t *o, uint32_t code)
{
    bw_put(o->w, code, o->width);
    if (o->started && o->decoder_next < DICT_SIZE) {
        o->decoder_next++;
        if ((o->decoder_next & (o->decoder_next - 1u)) == 0u && o->width < HIL_OFFLOAD_LZW_MAX_BITS) {
            o->width++; /* decoder_next reached a power of two: one more bit from the next code on */
        }
    }
    o->started = 1;
}

static void dict_reset(uint32_t alphabet)
{
    uint32_t i;

    for (i = 0; i < alphabet; i++) {
        first_child[i] = NO_CHILD;
    }
}

/* Writes the LZW body; returns early (w->full set) as soon as the output no longer fits. */
static void lzw_body(bit_writer_t *w, const int8_t *values, uint32_t n, const uint8_t *lut, uint32_t bits)
{
    const uint32_t alphabet = 1u << bits;
    const uint32_t mask = alphabet - 1u;
    const uint32_t clear = alphabet;
    const uint32_t end = alphabet + 1u;
    const uint32_t first = alphabet + 2u;
    uint32_t next_code = first;
    uint32_t prefix;
    uint32_t i;
    lzw_out_t o;

    o.w = w;
    lzw_reset_out(&o, first);
    dict_reset(alphabet);
    if (n > 0u) {
        prefix = lut[(uint8_t)(values[0] + 128)] & mask;
        for (i = 1; i < n; i++) {
            const uint32_t s = lut[(uint8_t)(values[i] + 128)] & mask;
            uint32_t c = first_child[prefix];

            while (c != NO_CHILD && node_symbol[c] != s) {
                c = next_sibling[c];
            }
            if (c != NO_CHILD) {
                prefix = c;
                continue;
            }
            lzw_emit_data(&o, prefix);
            if (w->full) {
                return;
            }
            first_child[next_code] = NO_CHILD;
            node_symbol[next_code] = (uint8_t)s;
            next_sibling[next_code] = first_child[prefix];
            first_child[prefix] = (uint16_t)next_code;
            next_code++;
            if (next_code == DICT_SIZE) {
                bw_put(w, clear, o.width);
                next_code = first;
                lzw_reset_out(&o, first);
                dict_reset(alphabet);
            }
            prefix = s;
        }
        lzw_emit_data(&o, prefix);
    }
    bw_put(w, end, o.width);
    bw_finish(w);
}

/* ---- stored: the codes bit-packed ---- */

static void stored_body(bit_writer_t *w, const int8_t *values, uint32_t n, const uint8_t *lut, uint32_t bits)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t i;

    for (i = 0; i < n && !w->full; i++) {
        bw_put(w, lut[(uint8_t)(values[i] + 128)] & mask, bits);
    }
    bw_finish(w);
}

/* ---- static canonical Huffman ---- */

/* Fills huff_code / huff_len for A = 2^bits symbols; 0 when a length is outside 1..15 or the lengths are
 * oversubscribed (Kraft sum > 1: not a prefix code). Work: A + 15 steps. */
static int huffman_table(const uint8_t *lengths, uint32_t bits, uint32_t *max_len)
{
    const uint32_t alphabet = 1u << bits;
    uint32_t bl_count[HIL_OFFLOAD_HUFFMAN_MAX_LEN + 1u] = {0};
    uint32_t next_code[HIL_OFFLOAD_HUFFMAN_MAX_LEN + 1u];
    uint32_t s, len, code = 0, left = 1, top = 0;

    for (s = 0; s < alphabet; s++) {
        if (lengths[s] < 1u || lengths[s] > HIL_OFFLOAD_HUFFMAN_MAX_LEN) {
            return 0;
        }
        bl_count[lengths[s]]++;
        top = lengths[s] > top ? lengths[s] : top;
    }
    for (len = 1; len <= HIL_OFFLOAD_HUFFMAN_MAX_LEN; len++) {
        left <<= 1; /* codes of this length still free; at most 2^15 */
        if (bl_count[len] > left) {
            return 0;
        }
        left -= bl_count[len];
        code = (code + bl_count[len - 1u]) << 1;
        next_code[len] = code;
    }
    for (s = 0; s < alphabet; s++) {
        uint32_t c = next_code[lengths[s]]++;
        uint32_t rev = 0;

        for (len = 0; len < lengths[s]; len++) {
            rev = (rev << 1) | ((c >> len) & 1u);
        }
        huff_code[s] = (uint16_t)rev;
        huff_len[s] = lengths[s];
    }
    *max_len = top;
    return 1;
}

static uint64_t huffman_bits(const int8_t *values, uint32_t n, const uint8_t *lut, uint32_t bits)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint64_t total = 0;
    uint32_t i;

    for (i = 0; i < n; i++) {
        total += huff_len[lut[(uint8_t)(values[i] + 128)] & mask];
    }
    return total;
}

static void huffman_body(bit_writer_t *w, const int8_t *values, uint32_t n, const uint8_t *lut, uint32_t bits)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t i;

    for (i = 0; i < n && !w->full; i++) {
        const uint32_t s = lut[(uint8_t)(values[i] + 128)] & mask;
        bw_put(w, huff_code[s], huff_len[s]);
    }
    bw_finish(w);
}

hil_offload_status_t hil_offload_compress(const int8_t *values, uint32_t n, const uint8_t *int8_to_code,
                                          uint32_t bits, const uint8_t *huffman_lengths, uint8_t *out,
                                          uint32_t capacity, uint32_t *out_len)
{
    const uint64_t stored_bytes = HIL_OFFLOAD_HEADER_BYTES + (((uint64_t)n * bits + 7u) >> 3);
    uint64_t best_bytes = stored_bytes; /* the smallest of stored and Huffman (stored on a tie) */
    uint32_t best_mode = HIL_OFFLOAD_MODE_STORED;
    uint32_t huff_max_len = 0;
    bit_writer_t w;
    uint32_t lzw_capacity;

    *out_len = 0;
    if (bits < 1u || bits > 8u) {
        return HIL_OFFLOAD_BAD_ARGS;
    }
    if (huffman_lengths != NULL) {
        uint64_t huff_bytes;

        if (!huffman_table(huffman_lengths, bits, &huff_max_len)) {
            return HIL_OFFLOAD_BAD_ARGS;
        }
        huff_bytes = HIL_OFFLOAD_HEADER_BYTES + ((huffman_bits(values, n, int8_to_code, bits) + 7u) >> 3);
        if (huff_bytes < best_bytes) {
            best_bytes = huff_bytes;
            best_mode = HIL_OFFLOAD_MODE_HUFFMAN;
        }
    }
    /* LZW only when strictly smaller than the others: give it one byte less than the best, at most capacity. */
    lzw_capacity = best_bytes - 1u < capacity ? (uint32_t)(best_bytes - 1u) : capacity;
    bw_init(&w, out, lzw_capacity);
    write_header(&w, HIL_OFFLOAD_MODE_LZW, bits, HIL_OFFLOAD_LZW_MAX_BITS);
    if (!w.full) {
        lzw_body(&w, values, n, int8_to_code, bits);
    }
    if (!w.full) {
        *out_len = w.len;
        return HIL_OFFLOAD_OK;
    }
    if (best_bytes > capacity) {
        return HIL_OFFLOAD_OVERFLOW;
    }
    bw_init(&w, out, capacity);
    if (best_mode == HIL_OFFLOAD_MODE_HUFFMAN) {
        write_header(&w, HIL_OFFLOAD_MODE_HUFFMAN, bits, huff_max_len);
        huffman_body(&w, values, n, int8_to_code, bits);
    } else {
        write_header(&w, HIL_OFFLOAD_MODE_STORED, bits, 0u);
        stored_body(&w, values, n, int8_to_code, bits);
    }
    *out_len = w.len;
    return HIL_OFFLOAD_OK;
}

void hil_offload_codes_from_int16(const int16_t *values, uint32_t n, const int16_t *run_start,
                                  const uint8_t *run_code, uint32_t n_runs, int8_t *codes)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint32_t j = n_runs - 1u; /* at most 2^bits runs: a linear scan from the top is cheap */
        while (j > 0u && values[i] < run_start[j]) {
            j--;
        }
        codes[i] = (int8_t)run_code[j];
    }
}
