"""AgileNN offload: the payload format of the remote-bound channels (codec) and its per-model device config.

- `hil.offload.codec`: `encode_payload`, `decode_payload`, `pack_bits`, `unpack_bits`, `PayloadError`: the
  reference implementation of device_fw/OFFLOAD.md (the server decodes with it); `huffman_code_lengths`
  builds a model's static Huffman code (format mode 2) from its training code counts, `huffman_lengths_of`
  reads it back from agilenn.json (`huffman_code_lengths`);
- `hil.offload.codegen`: `write_offload_c(agilenn_json, model_summary, out_dir)` writes the model directory's
  `hil_offload.c` (lookup table, output indices, Local NN ops, Huffman code lengths, payload buffer) for the
  firmware.
"""

from hil.offload.codec import (
    PayloadError,
    decode_payload,
    encode_payload,
    huffman_code_lengths,
    huffman_lengths_of,
    pack_bits,
    unpack_bits,
)

__all__ = [
    "PayloadError",
    "decode_payload",
    "encode_payload",
    "huffman_code_lengths",
    "huffman_lengths_of",
    "pack_bits",
    "unpack_bits",
]
