"""AgileNN offload: the payload format of the remote-bound channels (codec) and its per-model device config.

- `hil.offload.codec`: `encode_payload`, `decode_payload`, `pack_bits`, `unpack_bits`, `PayloadError`: the
  reference implementation of device_fw/OFFLOAD.md (the server decodes with it);
- `hil.offload.codegen`: `write_offload_c(agilenn_json, model_summary, out_dir)` writes the model directory's
  `hil_offload.c` (lookup table, output indices, Local NN ops, payload buffer) for the firmware.
"""

from hil.offload.codec import PayloadError, decode_payload, encode_payload, pack_bits, unpack_bits

__all__ = ["PayloadError", "decode_payload", "encode_payload", "pack_bits", "unpack_bits"]
