/* AgileNN offload: the remote-bound channels are mapped to quantizer codes and compressed into a payload
 * (format: device_fw/OFFLOAD.md; reference implementation: hil/offload/codec.py, which produces the same
 * bytes).
 *
 * The compressor is LZW over the code alphabet (2^bits symbols) with a dictionary of at most
 * 2^HIL_OFFLOAD_LZW_MAX_BITS codes held in static arrays (a trie: first child, next sibling, symbol per
 * code), so it never allocates and its memory does not depend on the data; for a model with Huffman code
 * lengths (agilenn.json huffman_code_lengths) also a static canonical Huffman code (format mode 2). It sends
 * the smallest of stored (the bit-packed codes), Huffman and LZW (ties: stored, then Huffman, then LZW). It
 * writes only into the caller's buffer and never past `capacity`: when the smallest does not fit it reports
 * HIL_OFFLOAD_OVERFLOW. A payload is therefore never larger than HIL_OFFLOAD_PAYLOAD_BOUND(n, bits). */
#ifndef HIL_OFFLOAD_H
#define HIL_OFFLOAD_H

#include <stdint.h>

#define HIL_OFFLOAD_FORMAT_VERSION 1u
#define HIL_OFFLOAD_MODE_STORED 0u
#define HIL_OFFLOAD_MODE_LZW 1u
#define HIL_OFFLOAD_MODE_HUFFMAN 2u
/* u8 version, u8 mode, u8 bits, u8 max code bits (LZW: W; Huffman: the longest code length; stored: 0) */
#define HIL_OFFLOAD_HEADER_BYTES 4u
#define HIL_OFFLOAD_HUFFMAN_MAX_LEN 15u /* the longest Huffman code, bits */

/* Largest LZW code width; the dictionary has 2^this codes. 12 (4096 codes, 20 KiB of trie) as in the
 * reference encoder: the format carries it, so a decoder reads any value in range. */
#ifndef HIL_OFFLOAD_LZW_MAX_BITS
#define HIL_OFFLOAD_LZW_MAX_BITS 12
#endif
#if HIL_OFFLOAD_LZW_MAX_BITS < 10 || HIL_OFFLOAD_LZW_MAX_BITS > 16
#error "HIL_OFFLOAD_LZW_MAX_BITS must be within 10..16"
#endif

/* The largest payload for n codes of `bits` bits: the header plus the packed codes. */
#define HIL_OFFLOAD_PAYLOAD_BOUND(n, bits) (HIL_OFFLOAD_HEADER_BYTES + (((uint32_t)(n) * (uint32_t)(bits) + 7u) / 8u))

typedef enum {
    HIL_OFFLOAD_OK = 0,
    HIL_OFFLOAD_OVERFLOW = 1, /* the payload does not fit `capacity`; nothing valid was written */
    HIL_OFFLOAD_BAD_ARGS = 2  /* bits outside 1..8, or Huffman code lengths outside 1..15 or not a prefix code */
} hil_offload_status_t;

/* A model's offload configuration. Generated per model into MODEL_DIR/hil_offload.c by
 * hil/offload/codegen.py from agilenn.json and model.json. */
typedef struct {
    uint8_t model_sha256[32];      /* the model it was generated for (hil_model_info.sha256) */
    uint8_t local_output;          /* index of the local logits in hil_model_info.outputs */
    uint8_t remote_output;         /* index of the remote-bound features in hil_model_info.outputs */
    uint8_t bits;                  /* bits per code, 1..8 */
    uint32_t n_values;             /* values of the remote output: one code each */
    const uint8_t *int8_to_code;   /* 256 entries: the code of int8 value q is int8_to_code[q + 128] */
    uint8_t *payload;              /* static payload buffer */
    uint32_t payload_capacity;     /* its size in bytes */
    const uint16_t *local_ops;     /* operator indices of the Local NN (their cycles are the local stage) */
    uint16_t n_local_ops;
    /* 16x8 models (int16 remote features). value_dtype 0 or HIL_DTYPE_INT8: int8 values, int8_to_code as
     * above. HIL_DTYPE_INT16: value q has the code int16_run_code[i] of the last run i with
     * int16_run_start[i] <= q (ascending starts, the first -32768); the codes go to code_buffer and are
     * compressed through int8_to_code, which is then the identity on 0..2^bits-1. */
    uint8_t value_dtype;
    uint8_t n_int16_runs;
    const int16_t *int16_run_start;
    const uint8_t *int16_run_code;
    int8_t *code_buffer;           /* n_values bytes */
    /* 2^bits canonical Huffman code lengths (1..15) of codes 0..2^bits-1 (agilenn.json huffman_code_lengths),
     * or NULL: the model has none and never sends mode 2. */
    const uint8_t *huffman_lengths;
} hil_offload_config_t;

/* The model's configuration, or NULL when the firmware was built without one (core/src/offload_none.c). */
const hil_offload_config_t *hil_offload_config(void);

/* The codes of n int16 values by the runs described in hil_offload_config_t, one per byte of codes. */
void hil_offload_codes_from_int16(const int16_t *values, uint32_t n, const int16_t *run_start,
                                  const uint8_t *run_code, uint32_t n_runs, int8_t *codes);

/* Maps n int8 values through int8_to_code (masked to `bits` bits) and writes the payload to out, at most
 * capacity bytes; *out_len is its length (0 unless HIL_OFFLOAD_OK). huffman_lengths: 2^bits code lengths
 * (mode 2 is a candidate), or NULL (stored or LZW only, as before mode 2). Not reentrant: the dictionary
 * and the Huffman table are static. */
hil_offload_status_t hil_offload_compress(const int8_t *values, uint32_t n, const uint8_t *int8_to_code,
                                          uint32_t bits, const uint8_t *huffman_lengths, uint8_t *out,
                                          uint32_t capacity, uint32_t *out_len);

#endif
