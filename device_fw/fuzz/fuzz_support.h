/* Shared support of the libFuzzer harnesses in device_fw/fuzz/ (README.md "Fuzzing"; scripts/fuzz.py builds
 * them with clang -fsanitize=fuzzer,address,undefined against the firmware core's own sources).
 *
 * - fuzz_port.c: a port (hil_port.h) whose input is the fuzz input and whose output is captured, so
 *   hil_app_run() runs the real main loop: reads are split into chunks and interrupted by silences as the harness
 *   says, and a hook runs before every read (the handler harness checks each reply there, against the state it
 *   was made in). Its cycle counter is deterministic, so a run repeats exactly.
 * - fuzz_support.c: checkers written from the specifications, not from the firmware's code: a strict frame
 *   parser for the replies (PROTOCOL.md "Frame") with its own CRC-8 and CRC-32, and an offload payload decoder
 *   (OFFLOAD.md) for the encoder's round trip.
 * Both are compiled with the sanitizers but without coverage instrumentation (scripts/fuzz.py), so that the
 * fuzzer's guidance comes from the firmware and the harnesses' input parsing only.
 *
 * A violated property prints what was wrong and aborts, which libFuzzer reports as a crash and saves the input
 * under the artifact prefix. */
#ifndef HIL_FUZZ_SUPPORT_H
#define HIL_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* Aborts with a message when cond is false. Not compiled out: the checks are the point of the harness. */
#define FZ_CHECK(cond, ...)                                                                                    \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                                   \
        }                                                                                                      \
    } while (0)

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* ---- the harnesses' input reader: little-endian fields out of the fuzz input, 0 past its end ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
    size_t pos;
} fz_reader_t;

static inline uint8_t fz_rd_u8(fz_reader_t *r)
{
    return r->pos < r->n ? r->p[r->pos++] : 0u;
}

static inline uint16_t fz_rd_u16(fz_reader_t *r)
{
    uint16_t lo = fz_rd_u8(r);
    return (uint16_t)(lo | (fz_rd_u8(r) << 8));
}

static inline uint32_t fz_rd_u32(fz_reader_t *r)
{
    uint32_t lo = fz_rd_u16(r);
    return lo | ((uint32_t)fz_rd_u16(r) << 16);
}

/* ---- the fuzz port ---- */

typedef struct {
    const uint8_t *data; /* the byte stream the device receives */
    size_t n;
    size_t pos;
    uint32_t max_chunk;    /* 0: every read takes all it may; else 1..max_chunk bytes, chosen by rng */
    uint32_t rng;          /* xorshift32 state for the chunk sizes (not 0) */
    const size_t *silences; /* ascending stream positions at which the line goes silent */
    size_t n_silences;
    size_t next_silence;
    size_t reads;       /* statistics of the run */
    size_t silent_reads;
    void (*before_read)(void *ctx); /* called at every read, before any byte is delivered; may be NULL */
    void *ctx;
} fz_input_t;

/* Runs hil_app_run() on `in` with the output captured; returns hil_app_run()'s status. */
int fz_run_app(fz_input_t *in);

/* The bytes the firmware wrote since the last fz_output_take() (or the start of the run). */
const uint8_t *fz_output(size_t *n);
void fz_output_take(size_t n); /* drops the first n bytes of the captured output */
size_t fz_output_total(void);  /* bytes written in the whole run */

/* ---- independent checksums (PROTOCOL.md "Frame") ---- */

uint8_t fz_crc8(const uint8_t *p, size_t n);
uint32_t fz_crc32(const uint8_t *p, size_t n);

/* ---- reply frames ---- */

typedef struct {
    uint8_t type;
    uint8_t seq;
    uint16_t length;
    const uint8_t *payload;
} fz_frame_t;

/* Parses exactly one well-formed frame at the start of buf (magic, header check, CRC-32); returns its size,
 * or 0 with *why set when buf does not start with one. */
size_t fz_parse_frame(const uint8_t *buf, size_t n, fz_frame_t *f, const char **why);

/* Every reply must be a well-formed frame of a reply type (a request type with bit 7 set, or ERROR), and an
 * ERROR reply must carry a known code, the request type and a printable ASCII message. Aborts otherwise. */
void fz_check_reply_shape(const fz_frame_t *f);

/* ---- offload payloads (OFFLOAD.md), decoded independently of core/src/offload.c ---- */

/* Decodes a payload of n_values codes of `bits` bits; lengths: the model's 2^bits Huffman code lengths or NULL.
 * Returns 0 and fills codes (n_values bytes) and *mode, or -1 with *why set. Strict: rejects every payload the
 * format calls invalid (padding, trailing bytes, width rule, header). */
int fz_offload_decode(const uint8_t *p, size_t len, uint32_t n_values, uint32_t bits, const uint8_t *lengths,
                      uint8_t *codes, uint32_t *mode, const char **why);

/* Sizes the encoder must choose between (OFFLOAD.md "Which mode"): header + packed codes, and header + the
 * Huffman body for the given codes (lengths must be valid). */
uint64_t fz_stored_size(uint32_t n_values, uint32_t bits);
uint64_t fz_huffman_size(const uint8_t *codes, uint32_t n_values, const uint8_t *lengths);

/* 1 when lengths (2^bits of them) are all within 1..15 and their Kraft sum is at most 1. */
int fz_huffman_lengths_valid(const uint8_t *lengths, uint32_t bits);

/* ---- deterministic data from a few fuzz bytes ---- */

uint32_t fz_xorshift(uint32_t *state);
/* Fills out[0..n) with a pattern chosen by `kind` (constant, random, runs, ramp, skewed) from seed. */
void fz_pattern(uint8_t *out, size_t n, uint8_t kind, uint32_t seed);

#endif
