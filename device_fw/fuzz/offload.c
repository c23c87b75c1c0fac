/* Fuzz target "offload": the device's offload encoder (core/src/offload.c: hil_offload_compress,
 * hil_offload_codes_from_int16) on fuzzed codes, with its output decoded by fuzz_support's own decoder
 * (written from OFFLOAD.md) and compared with the input: a round trip, not only "no crash".
 *
 * Input: byte 0 the bits per code (bit 6 clear: 1 + (byte & 7); set: byte & 15 as it is, 0 and 9..15 being
 * invalid), byte 1 flags (bit 0: Huffman code lengths follow; bit 1: use them as given, else repaired into a
 * prefix code; bit 2: a 256-byte lookup table follows, else the identity; bit 3: int16 values through runs;
 * bit 4: a u16 payload capacity follows), then those fields in that order: u16 capacity, 2^bits lengths,
 * 256 table bytes; in int16 mode u8 runs and (runs - 1) u16 run starts and runs codes; the rest are the values
 * (int8, or int16 little-endian).
 *
 * Properties:
 * - HIL_OFFLOAD_BAD_ARGS exactly when bits is outside 1..8 or the lengths are outside 1..15 or oversubscribed
 *   (checked here independently), and then no payload;
 * - with room for the worst case (HIL_OFFLOAD_PAYLOAD_BOUND, in a buffer of exactly that size so that ASan sees
 *   any byte past it) the encoder succeeds, the payload decodes to exactly the codes (table[q + 128] masked to
 *   bits), and its mode and size follow OFFLOAD.md "Which mode": stored when no smaller Huffman body exists,
 *   Huffman only strictly below stored, LZW only strictly below both;
 * - with the fuzzed capacity (a buffer of exactly that size): OVERFLOW and no payload exactly when that payload
 *   is larger than the capacity, else the very same bytes (the static dictionary keeps no state between calls);
 * - int16 mode: each value gets the code of the last run whose start is <= the value.
 *
 * -DFUZZ_PLANTED_BUG=1 plants an off-by-one in this harness (capacity + 1 passed for the fuzzed buffer), =2 a
 * corrupt payload (its last byte flipped before decoding): tests/test_fuzz.py shows the harness then fails. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "hil_offload.h"

#ifndef FUZZ_PLANTED_BUG
#define FUZZ_PLANTED_BUG 0
#endif

/* Lengthens the shortest codes until the Kraft sum is at most 1 (all 15 bits always fits 256 symbols). */
static void repair_lengths(uint8_t *lengths, uint32_t alphabet)
{
    uint32_t s;

    for (s = 0; s < alphabet; s++) {
        lengths[s] = (uint8_t)(1u + lengths[s] % 15u);
    }
    for (;;) {
        uint32_t kraft = 0, shortest = 0;
        for (s = 0; s < alphabet; s++) {
            kraft += 1u << (15u - lengths[s]);
            if (lengths[s] < lengths[shortest]) {
                shortest = s;
            }
        }
        if (kraft <= (1u << 15)) {
            return;
        }
        lengths[shortest]++;
    }
}

static void check_int16(fz_reader_t *r, uint32_t bits, int8_t **values_out, uint32_t *n_out)
{
    const uint32_t alphabet = 1u << bits;
    int16_t starts[256];
    uint8_t run_codes[256];
    uint32_t n_runs = 1u + fz_rd_u8(r) % alphabet;
    uint32_t i, j, n;
    int16_t *values;
    int8_t *codes;

    /* Ascending starts, the first -32768, as hil.offload.codegen writes them. */
    starts[0] = INT16_MIN;
    for (i = 1; i < n_runs; i++) {
        int16_t s = (int16_t)fz_rd_u16(r);
        starts[i] = s;
    }
    for (i = 1; i < n_runs; i++) { /* insertion sort of starts[1..] */
        for (j = i; j > 1u && starts[j - 1u] > starts[j]; j--) {
            int16_t t = starts[j];
            starts[j] = starts[j - 1u];
            starts[j - 1u] = t;
        }
    }
    for (i = 1, j = 1; i < n_runs; i++) { /* strictly ascending: drop repeats and further -32768s */
        if (starts[i] > starts[j - 1u]) {
            starts[j++] = starts[i];
        }
    }
    n_runs = j;
    for (i = 0; i < n_runs; i++) {
        run_codes[i] = (uint8_t)(fz_rd_u8(r) & (alphabet - 1u));
    }
    n = (uint32_t)((r->n - r->pos) / 2u);
    values = malloc((size_t)n * sizeof *values + 1u);
    codes = malloc((size_t)n + 1u);
    FZ_CHECK(values != NULL && codes != NULL, "out of memory");
    for (i = 0; i < n; i++) {
        values[i] = (int16_t)fz_rd_u16(r);
    }
    hil_offload_codes_from_int16(values, n, starts, run_codes, n_runs, codes);
    for (i = 0; i < n; i++) {
        uint32_t want = 0;
        for (j = 0; j < n_runs; j++) {
            if (starts[j] <= values[i]) {
                want = run_codes[j];
            }
        }
        FZ_CHECK((uint8_t)codes[i] == want, "int16 value %d got code %u, run code %u expected", values[i],
                 (uint8_t)codes[i], want);
    }
    free(values);
    *values_out = codes; /* the codes are the compressor's values now, through the identity table */
    *n_out = n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r;
    uint8_t b0, flags;
    uint32_t bits, alphabet, mask, n, i, capacity = 0, bound, len = 0, len2 = 0, mode = 99;
    int bits_ok, args_ok, have_capacity;
    uint8_t lengths[256];
    uint8_t lut[256];
    const uint8_t *lengths_arg = NULL;
    int8_t *values;
    uint8_t *codes, *decoded, *payload, *payload2;
    hil_offload_status_t st;
    const char *why = "";

    r.p = data;
    r.n = size;
    r.pos = 0;
    b0 = fz_rd_u8(&r);
    flags = fz_rd_u8(&r);
    bits = (b0 & 0x40u) ? (b0 & 0x0Fu) : 1u + (b0 & 7u);
    bits_ok = bits >= 1u && bits <= 8u;
    alphabet = bits_ok ? 1u << bits : 1u;
    mask = alphabet - 1u;
    have_capacity = (flags & 0x10u) != 0u;
    if (have_capacity) {
        capacity = fz_rd_u16(&r);
    }
    args_ok = bits_ok;
    if ((flags & 1u) && bits_ok) {
        for (i = 0; i < alphabet; i++) {
            lengths[i] = fz_rd_u8(&r);
        }
        if (!(flags & 2u)) {
            repair_lengths(lengths, alphabet);
        }
        lengths_arg = lengths;
        args_ok = fz_huffman_lengths_valid(lengths, bits);
    }
    for (i = 0; i < 256u; i++) { /* identity on the codes: value q has code q, as codegen's int16 table */
        lut[i] = (uint8_t)(i - 128u);
    }
    if (flags & 4u) {
        for (i = 0; i < 256u; i++) {
            lut[i] = fz_rd_u8(&r);
        }
    }
    if ((flags & 8u) && bits_ok) {
        check_int16(&r, bits, &values, &n);
    } else {
        n = (uint32_t)(r.n - r.pos);
        values = malloc((size_t)n + 1u);
        FZ_CHECK(values != NULL, "out of memory");
        memcpy(values, r.p + r.pos, n);
    }

    codes = malloc((size_t)n + 1u);
    decoded = malloc((size_t)n + 1u);
    FZ_CHECK(codes != NULL && decoded != NULL, "out of memory");
    for (i = 0; i < n; i++) {
        codes[i] = (uint8_t)(lut[(uint8_t)(values[i] + 128)] & mask);
    }

    /* Room for the worst case, in a buffer of exactly that size. */
    bound = (uint32_t)fz_stored_size(n, bits_ok ? bits : 8u);
    FZ_CHECK(!bits_ok || bound == HIL_OFFLOAD_PAYLOAD_BOUND(n, bits), "payload bound");
    payload = malloc(bound);
    FZ_CHECK(payload != NULL, "out of memory");
    len = 12345u;
    st = hil_offload_compress(values, n, lut, bits, lengths_arg, payload, bound, &len);
    if (!args_ok) {
        FZ_CHECK(st == HIL_OFFLOAD_BAD_ARGS && len == 0u, "bits %u or lengths invalid: status %d, %u bytes", bits,
                 (int)st, len);
    } else {
        uint64_t stored = fz_stored_size(n, bits), best = stored;

        FZ_CHECK(st == HIL_OFFLOAD_OK, "status %d with room for the worst case", (int)st);
        FZ_CHECK(len >= 4u && len <= bound, "payload of %u bytes, bound %u", len, bound);
#if FUZZ_PLANTED_BUG == 2
        payload[len - 1u] ^= 0x01u;
#endif
        FZ_CHECK(fz_offload_decode(payload, len, n, bits, lengths_arg, decoded, &mode, &why) == 0,
                 "payload of %u bytes (mode %u, %u codes of %u bits) does not decode: %s", len, payload[1], n, bits,
                 why);
        FZ_CHECK(memcmp(decoded, codes, n) == 0, "payload decodes to other codes");
        if (lengths_arg != NULL) {
            uint64_t h = fz_huffman_size(codes, n, lengths_arg);
            best = h < best ? h : best;
        }
        if (mode == 0u) {
            FZ_CHECK(len == stored && best == stored, "stored payload of %u bytes, a smaller Huffman one has %llu",
                     len, (unsigned long long)best);
        } else if (mode == 2u) {
            FZ_CHECK(len == best && best < stored, "Huffman payload of %u bytes, best %llu, stored %llu", len,
                     (unsigned long long)best, (unsigned long long)stored);
        } else {
            FZ_CHECK(mode == 1u && len < best, "LZW payload of %u bytes, not below %llu", len,
                     (unsigned long long)best);
        }
    }

    if (have_capacity) {
        payload2 = malloc(capacity); /* exactly capacity bytes: ASan reports any byte written past them */
        FZ_CHECK(payload2 != NULL || capacity == 0u, "out of memory");
        len2 = 12345u;
        st = hil_offload_compress(values, n, lut, bits, lengths_arg, payload2,
                                  FUZZ_PLANTED_BUG == 1 ? capacity + 1u : capacity, &len2);
        if (!args_ok) {
            FZ_CHECK(st == HIL_OFFLOAD_BAD_ARGS && len2 == 0u, "invalid arguments: status %d", (int)st);
        } else if (len <= capacity) {
            FZ_CHECK(st == HIL_OFFLOAD_OK && len2 == len && memcmp(payload2, payload, len) == 0,
                     "capacity %u for a %u-byte payload: status %d, %u other bytes", capacity, len, (int)st, len2);
        } else {
            FZ_CHECK(st == HIL_OFFLOAD_OVERFLOW && len2 == 0u, "capacity %u below the %u-byte payload: status %d, "
                     "%u bytes", capacity, len, (int)st, len2);
        }
        free(payload2);
    }
    free(payload);
    free(values);
    free(codes);
    free(decoded);
    return 0;
}
