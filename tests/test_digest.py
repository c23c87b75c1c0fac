"""The digest mode of the bit-exact check (INFER_DIGEST, device_fw/PROTOCOL.md): a CRC-32 per output instead of the
outputs, the input inside the request, the reference running while the device computes; outputs read back only
when a digest differs. On the real firmware (host and QEMU builds) with the synthetic model and the trained
16x8 AgileNN.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest

from hil import paths
from hil.check import InputSpec, random_inputs, run_check
from hil.cli import main
from hil.dut import Dut, DutOptions, open_dut
from hil.firmware import toolchain_status
from hil.model.artifacts import resolve_model
from hil.model.reference import TflmReference
from hil.transport.client import DeviceErrorReply, DigestUnsupported
from hil.transport.frame import (
    INFO_FLAG_DIGEST,
    OVERHEAD,
    DeviceInfo,
    DigestReply,
    FrameType,
    ProtocolError,
    TensorSpec,
    encode_digest_reply,
    encode_frame,
    encode_info,
    parse_digest_reply,
    parse_info,
    tensor_digest,
)

pytestmark = pytest.mark.timeout(120)

A16 = paths.MODELS / "agilenn-cifar10"  # its device part is 16x8
DEVICES = [
    ("host", paths.SYNTHETIC_MODEL),
    ("host", A16),
    pytest.param(("qemu", paths.SYNTHETIC_MODEL), marks=pytest.mark.qemu),
    pytest.param(("qemu", A16), marks=pytest.mark.qemu),
]
IMAGES = 20
BUDGET = 64  # bytes on the wire per checked inference beyond the input, both directions, frames included


def _id(param) -> str:
    target, model = param
    return f"{target}-{model.name}"


@pytest.fixture(scope="module", params=DEVICES, ids=_id)
def device(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dut, object]]:
    """A running device and TFLite Micro on the same model."""
    target, model_dir = request.param
    status = toolchain_status(target)
    if not status.ok:
        pytest.skip(f"cannot build/run the {target} firmware: {status}")
    model = resolve_model(model_dir)
    reference = TflmReference(model.tflite_bytes)
    with open_dut(model, DutOptions(target=target, log_dir=tmp_path_factory.mktemp(f"{target}-logs"))) as dut:
        yield dut, reference


def _specs(dut: Dut) -> list[InputSpec]:
    return [InputSpec(tuple(t.shape), t.scale, t.zero_point, np.dtype(t.dtype)) for t in dut.info.inputs]


class _FlippingReference:
    """TFLite Micro with one output value of one image changed (low bit flipped): what a device bug looks like
    from the host's side, without building a broken firmware."""

    def __init__(self, reference, image: int, output: int, index: int) -> None:
        self.reference, self.image, self.output, self.index = reference, image, output, index
        self.calls = 0
        self.true_value = self.flipped_value = 0

    def run(self, tensors):
        outputs = self.reference.run(tensors)
        if self.calls == self.image:
            flipped = outputs[self.output].copy()
            self.true_value = int(flipped.flat[self.index])
            flipped.flat[self.index] ^= 1
            self.flipped_value = int(flipped.flat[self.index])
            outputs[self.output] = flipped
        self.calls += 1
        return outputs


# ---- on the firmware ----


def test_digest_check_is_bit_exact_within_the_byte_budget(device):
    dut, reference = device
    info = dut.info
    assert info.supports_digest
    assert info.input_bytes <= info.rx_max  # the input travels inside INFER_DIGEST
    requests = dut.client.requests
    result = run_check(dut, reference, random_inputs(_specs(dut), IMAGES, seed=21), IMAGES)
    assert (result.mode, result.fallback, result.readbacks) == ("digest", "", 0)
    assert result.mismatches == []
    assert result.summary_line() == f"bit-exact {IMAGES}/{IMAGES} on {dut.name}"
    assert dut.client.requests - requests == IMAGES  # one round trip per checked inference
    # request: header + input; reply: header + 20 fixed bytes + a CRC per output
    exact = OVERHEAD + info.input_bytes + OVERHEAD + 20 + 4 * len(info.outputs)
    assert result.wire_bytes == IMAGES * exact
    assert result.wire_bytes_per_image <= info.input_bytes + BUDGET


def test_digests_are_the_crc32_of_the_outputs_read_back(device):
    dut, reference = device
    client = dut.client
    x = next(random_inputs(_specs(dut), 1, seed=5))
    digest = client.infer_digest(x)
    outputs = client.read_outputs()
    assert digest.cycles > 0 and digest.clock_hz == dut.info.clock_hz
    assert digest.digests == [zlib.crc32(outputs[i].astype(spec.dtype).tobytes())
                              for i, spec in enumerate(dut.info.outputs)]
    full = client.infer(x)  # INFER on the same input gives the same bytes
    assert [tensor_digest(o, s) for o, s in zip(full.outputs, dut.info.outputs, strict=True)] == digest.digests
    assert [tensor_digest(o, s) for o, s in zip(reference.run(x), dut.info.outputs, strict=True)] == digest.digests


def test_a_differing_digest_reads_the_outputs_back_and_reports_the_values(device):
    dut, reference = device
    info = dut.info
    last = len(info.outputs) - 1
    index = info.outputs[last].size // info.outputs[last].dtype.itemsize - 1
    flipping = _FlippingReference(reference, image=1, output=last, index=index)
    before = dut.client.link.wire_bytes
    result = run_check(dut, flipping, random_inputs(_specs(dut), 3, seed=8), 3)
    assert (result.mode, result.matched, result.readbacks) == ("digest", 2, 1)
    [m] = result.mismatches
    assert (m.image, m.output, m.differing_values, m.max_abs_diff) == (1, last, 1, 1)
    assert m.examples == [[index, flipping.true_value, flipping.flipped_value]]  # [index, device, reference]
    # the two matching images cost their digest round trip only; the third also its outputs' READ_OUTPUT
    readback = OVERHEAD + 7 + OVERHEAD + 5 + info.outputs[last].size
    digest_trip = 2 * OVERHEAD + info.input_bytes + 20 + 4 * len(info.outputs)
    assert result.wire_bytes == dut.client.link.wire_bytes - before == 3 * digest_trip + readback


def test_full_outputs_mode_on_request(device):
    dut, reference = device
    result = run_check(dut, reference, random_inputs(_specs(dut), 3, seed=2), 3, full_outputs=True)
    assert (result.mode, result.fallback, result.matched) == ("full", "", 3)
    assert result.wire_bytes_per_image > dut.info.input_bytes + sum(t.size for t in dut.info.outputs)


def test_infer_digest_with_a_wrong_payload_length_is_a_bad_request(device):
    dut, _reference = device
    with pytest.raises(DeviceErrorReply) as excinfo:
        dut.client.request(FrameType.INFER_DIGEST, bytes(dut.info.input_bytes - 1))
    assert excinfo.value.name == "BAD_REQUEST"
    assert f"no payload or all {dut.info.input_bytes} input bytes" in excinfo.value.message
    assert dut.client.echo(b"still alive") == b"still alive"


@pytest.fixture
def host_dut(tmp_path) -> Iterator[tuple[Dut, object]]:
    model = resolve_model(paths.SYNTHETIC_MODEL)
    with open_dut(model, DutOptions(target="host", log_dir=tmp_path)) as dut:
        yield dut, TflmReference(model.tflite_bytes)


def test_firmware_without_the_digest_falls_back_to_full_outputs(host_dut):
    """What the host does with firmware from before INFER_DIGEST: its INFO lacks flag bit 1 (simulated here by
    clearing the bit in the INFO this client received). The client refuses to send INFER_DIGEST; the check says
    why and reads every output back."""
    dut, reference = host_dut
    client = dut.client
    client.info = dataclasses.replace(client.info, flags=client.info.flags & ~INFO_FLAG_DIGEST)
    sent = client.link.tx_bytes
    with pytest.raises(DigestUnsupported, match=r"does not answer INFER_DIGEST \(INFO flag bit 1 clear\)"):
        client.infer_digest(next(random_inputs(_specs(dut), 1)))
    assert client.link.tx_bytes == sent  # nothing went out
    result = run_check(dut, reference, random_inputs(_specs(dut), 4, seed=3), 4)
    assert (result.mode, result.matched, result.readbacks) == ("full", 4, 0)
    assert "does not answer INFER_DIGEST" in result.fallback
    outputs = sum(t.size for t in dut.info.outputs)
    assert result.wire_bytes_per_image > dut.info.input_bytes + outputs  # every output came back


def test_pipelined_load_input_then_empty_infer_digest(host_dut):
    """Inputs bigger than rx_max go with LOAD_INPUT first (here forced with 1,000-byte chunks), two on the wire
    at a time; a chunk the device received with a bad CRC is resent while the next one's reply is kept."""
    dut, reference = host_dut
    client = dut.client
    x = next(random_inputs(_specs(dut), 1, seed=13))
    want = [tensor_digest(o, s) for o, s in zip(reference.run(x), dut.info.outputs, strict=True)]
    chunks = -(-dut.info.input_bytes // 1000)

    write, damaged = client.link.write, []

    def damage_the_third_load_once(raw: bytes) -> None:
        if raw[2] == FrameType.LOAD_INPUT and struct.unpack_from("<I", raw, 8)[0] == 2000 and not damaged:
            damaged.append(raw[3])
            raw = raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:]
        write(raw)

    client.link.write = damage_the_third_load_once
    try:
        requests, resends = client.requests, client.resends
        got = client.start_infer_digest(x, max_chunk=1000, window=2).wait()
    finally:
        client.link.write = write
    assert got.digests == want
    assert damaged and client.resends - resends == 1
    assert client.requests - requests == chunks + 1  # the LOAD_INPUT chunks, then an empty INFER_DIGEST
    # stop-and-wait gives the same
    client.load_input(0, x[0], max_chunk=1000, window=1)
    assert client.infer_digest().digests == want


def test_hil_check_defaults_to_the_digest_and_has_full_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    assert main(["check", "--target", "host", "--model", str(paths.SYNTHETIC_MODEL), "--images", "5", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == "bit-exact 5/5 on host"
    assert "digest mode: 27,698 bytes on the wire per inference (inputs 27,648)" in captured.err
    assert main(["check", "--target", "host", "--model", str(paths.SYNTHETIC_MODEL), "--images", "5", "--quiet",
                 "--full-outputs"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == "bit-exact 5/5 on host"
    assert "full mode: " in captured.err


def test_bench_harness_reports_both_paths():
    from hil.bench.harness import bench_harness

    out = bench_harness("host", paths.SYNTHETIC_MODEL, images=4, rounds=1)
    assert out["input_bytes"] == 27_648
    assert out["old"]["bytes_per_inference"] == 47_416  # the figure: 8 round trips, every output back
    assert out["old"]["requests_per_inference"] == 8
    assert out["new"]["bytes_per_inference"] == 27_648 + 50
    assert out["new"]["requests_per_inference"] == 1
    assert out["old"]["matched"] == out["new"]["matched"] == 4
    assert out["ratio"]["throughput"] > 0


# ---- the payloads and the documentation ----


def test_digest_reply_round_trip_and_wrong_lengths():
    reply = DigestReply(status=0, flags=0, cycles=123, time_us=4, digests=[0xDEADBEEF, 7])
    raw = encode_digest_reply(reply)
    assert len(raw) == 20 + 8
    assert parse_digest_reply(raw) == reply
    for bad in (raw[:-1], raw + b"\0", raw[:19]):
        with pytest.raises(ProtocolError):
            parse_digest_reply(bad)


def test_tensor_digest_is_zlib_crc32_of_the_little_endian_bytes():
    values = np.array([[1, -2, 300]], np.int16)
    assert tensor_digest(values) == zlib.crc32(struct.pack("<3h", 1, -2, 300))
    assert tensor_digest(np.array([-1, 5], np.int8)) == zlib.crc32(b"\xff\x05")
    assert tensor_digest(b"") == 0


def test_info_flag_bit_1_says_whether_the_firmware_has_the_digest():
    i8 = np.dtype(np.int8)
    old = DeviceInfo(  # flags = 1: deterministic cycles only, as firmware from before INFER_DIGEST sends
        protocol_version=1, flags=1, firmware_version="0.1.0", build_id="src-0123 gcc-12", port="qemu",
        model_name="m", model_sha256=bytes(range(32)).hex(), arena_bytes=1234, clock_hz=40_000_000, rx_max=4096,
        inputs=[TensorSpec(i8, (1, 8), 0, 0.5, 8)], outputs=[TensorSpec(i8, (1, 2), 0, 0.5, 2)],
    )
    assert not parse_info(encode_info(old)).supports_digest
    new = dataclasses.replace(old, flags=old.flags | INFO_FLAG_DIGEST)
    assert parse_info(encode_info(new)).supports_digest
    assert encode_frame(FrameType.INFER_DIGEST, 1)[2] == 0x08


def test_protocol_md_documents_infer_digest():
    doc = (paths.DEVICE_FW / "PROTOCOL.md").read_text()
    assert "| 0x08 | INFER_DIGEST |" in doc
    assert "### INFER_DIGEST result" in doc
    assert "bit 1: the firmware answers INFER_DIGEST" in doc
    assert "zlib.crc32(data)" in doc and "hil_crc32_update(0, data, n)" in doc
    assert "**Firmware without the extension**" in doc and "DigestUnsupported" in doc
    assert "### Pipelining" in doc
