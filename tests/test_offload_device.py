"""INFER_OFFLOAD on the firmware (host build and QEMU Xtensa build of the same C core): the synthetic extractor
with a synthetic AgileNN offload config (k = 5, 19 remote channels, 8 centroids spread over the remote output's
range). Local logits and codes are checked against TensorFlow Lite Micro, the payload bytes against the
reference encoder; an undersized payload buffer is reported, not overrun; a firmware without a config answers
UNSUPPORTED. The hand-written identity model (output 1 = -input) carries adversarial code patterns through the
device compressor. Plus the config generator (hil.offload.codegen) on its own."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hil import paths
from hil.agilenn.quant import Quant
from hil.export.agilenn import centroid_lookup
from hil.firmware import build_firmware, toolchain_status
from hil.model.reference import TflmReference
from hil.model.synthetic import random_images
from hil.offload.codec import (
    MODE_HUFFMAN,
    MODE_LZW,
    MODE_STORED,
    decode_payload,
    encode_payload,
    payload_bound,
)
from hil.offload.codegen import OffloadConfigError, local_head_ops, offload_c_source, write_offload_c
from hil.targets import get_target
from hil.transport.client import DeviceClient, DeviceErrorReply
from hil.transport.frame import OFFLOAD_STAGES

pytestmark = pytest.mark.timeout(120)

PORTS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]
IDENTITY = paths.DEVICE_FW / "tests" / "models" / "identity"
IDENTITY_SUMMARY = {  # model.json as the compiler would write it for the hand-written identity model
    "name": "identity",
    "sha256": bytes(range(32)).hex(),
    "ops": [],
    "outputs": [
        {"name": "copy", "shape": [1, 1000], "dtype": "int8", "bytes": 1000},
        {"name": "negated", "shape": [1, 10, 100], "dtype": "int8", "bytes": 1000},
    ],
}
TINY_CAPACITY = 64


def synthetic_agilenn(summary: dict) -> dict:
    """agilenn.json for the synthetic extractor: 8 centroids evenly spread over the remote output's range."""
    remote = summary["outputs"][1]
    q = Quant(remote["scale"], remote["zero_point"])
    lo, hi = (float(v) for v in q.dequantize(np.array([-128, 127])))
    centroids = [lo + (hi - lo) * (i + 0.5) / 8 for i in range(8)]
    return {
        "k": 5,
        "bits_per_value": 3,
        "centroids": centroids,
        "int8_to_code": centroid_lookup(centroids, q).tolist(),
        "outputs": [
            {"index": 0, "name": "local_logits", "shape": [1, 10]},
            {"index": 1, "name": "remote_features", "shape": [1, 32, 32, 19]},
        ],
    }


def model_copy(root: Path, name: str, src: Path, files: tuple[str, ...]) -> Path:
    out = root / name / src.name  # the directory name names the build
    out.mkdir(parents=True)
    for f in files:
        shutil.copy(src / f, out / f)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("offload-models")
    files = ("model.tflite", "hil_model.c", "model.json")
    full = model_copy(root, "full", paths.SYNTHETIC_MODEL, files)
    summary = json.loads((full / "model.json").read_text())
    agilenn = synthetic_agilenn(summary)
    write_offload_c(agilenn, summary, full)
    tiny = model_copy(root, "tiny", paths.SYNTHETIC_MODEL, files)
    write_offload_c(agilenn, summary, tiny, payload_capacity=TINY_CAPACITY)
    identity = model_copy(root, "identity", IDENTITY, ("hil_model.c",))
    # identity's output 1 is -input; code = value & 7, so input -c gives code c for c in 0..7
    write_offload_c({"k": 0, "bits_per_value": 3, "int8_to_code": [i & 7 for i in range(256)]}, IDENTITY_SUMMARY,
                    identity)  # fmt: skip
    return SimpleNamespace(
        full=full,
        tiny=tiny,
        identity=identity,
        summary=summary,
        lut=np.asarray(agilenn["int8_to_code"], np.uint8),
        reference=TflmReference(full / "model.tflite"),
    )


@pytest.fixture(scope="module", params=PORTS)
def port(request: pytest.FixtureRequest) -> str:
    status = toolchain_status(request.param)
    if not status.ok:
        pytest.skip(f"cannot build/run the {request.param} firmware: {status}")
    return request.param


@contextmanager
def running(port: str, model_dir: Path, log_dir: Path, kernels: bool = True) -> Iterator[DeviceClient]:
    firmware = build_firmware(port, model_dir, kernels=kernels)
    with get_target(port, firmware=firmware, log_dir=log_dir) as target:
        client = target.open_client(timeout=10.0)
        try:
            client.hello()
            yield client
        finally:
            client.close()


@pytest.fixture(scope="module")
def device(port: str, models: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceClient]:
    with running(port, models.full, tmp_path_factory.mktemp(f"{port}-offload-logs")) as client:
        yield client


def synthetic_inputs(reference: TflmReference) -> list[np.ndarray]:
    d = reference.inputs[0]
    images = random_images(7, 3)
    quantized = [np.clip(np.round(im / d.scale) + d.zero_point, -128, 127).astype(np.int8)[None] for im in images]
    return [*quantized, np.random.default_rng(3).integers(-128, 128, d.shape, dtype=np.int8)]


def assert_stages(cycles: dict[str, int], local_nn: bool = True) -> None:
    assert set(cycles) == set(OFFLOAD_STAGES)
    assert cycles["extractor"] + cycles["local_nn"] + cycles["compress"] == cycles["total"]
    assert cycles["extractor"] > 0 and cycles["compress"] > 0
    if local_nn:
        assert 0 < cycles["local_nn"] < cycles["extractor"]


# ---- the device ----


def test_offload_matches_tflm_and_the_reference_encoder(device: DeviceClient, models: SimpleNamespace) -> None:
    n_values = 32 * 32 * 19
    for x in synthetic_inputs(models.reference):
        local, remote = models.reference.run([x])
        result = device.infer_offload([x])
        assert np.array_equal(result.local_logits, local)
        codes = models.lut[remote.reshape(-1).astype(np.int16) + 128]
        assert (result.n_values, result.bits, result.overflow) == (n_values, 3, False)
        got = decode_payload(result.payload, result.n_values, result.bits, max_output=n_values)
        assert np.array_equal(got, codes)
        assert result.payload == encode_payload(codes)  # the C encoder writes the reference's bytes
        assert result.payload[1] == MODE_LZW and len(result.payload) < payload_bound(n_values) / 2
        assert result.payload_capacity == payload_bound(n_values)
        assert_stages(result.cycles)
        assert result.latency_s > 0


def test_offload_leaves_outputs_readable_and_infer_agrees(device: DeviceClient, models: SimpleNamespace) -> None:
    x = synthetic_inputs(models.reference)[0]
    offload = device.infer_offload([x])
    plain = device.infer()  # the same loaded input
    assert np.array_equal(plain.outputs[0], offload.local_logits)
    model_cycles = offload.cycles["extractor"] + offload.cycles["local_nn"]
    if device.info is not None and device.info.cycles_deterministic:
        # QEMU's counter is exact: the model part of the offload step costs what INFER costs.
        assert abs(model_cycles - plain.cycles) <= plain.cycles // 100


def test_undersized_payload_buffer_is_reported_not_overrun(
    port: str, models: SimpleNamespace, tmp_path: Path
) -> None:
    x = synthetic_inputs(models.reference)[1]
    local, _ = models.reference.run([x])
    with running(port, models.tiny, tmp_path) as client:
        result = client.infer_offload([x])
        assert result.overflow and result.payload == b"" and result.payload_capacity == TINY_CAPACITY
        assert np.array_equal(result.local_logits, local)
        assert_stages(result.cycles)
        assert client.echo(b"still alive") == b"still alive"
        assert np.array_equal(client.infer([x]).outputs[0], local)


def test_firmware_without_offload_config_is_unsupported(port: str, tmp_path: Path) -> None:
    assert not (paths.SYNTHETIC_MODEL / "hil_offload.c").exists()
    with running(port, paths.SYNTHETIC_MODEL, tmp_path) as client:
        with pytest.raises(DeviceErrorReply) as excinfo:
            client.infer_offload()
        assert excinfo.value.name == "UNSUPPORTED"
        assert excinfo.value.message == "this firmware's model has no AgileNN offload config"
        assert client.echo(b"ok") == b"ok"


def test_adversarial_patterns_through_the_device_compressor(
    port: str, models: SimpleNamespace, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    patterns = {
        "all-same 0": np.zeros(1000, np.int64),
        "all-same 7": np.full(1000, 7),
        "alternating": np.tile([0, 7], 500),
        "ramp": np.arange(1000) % 8,
        "max-entropy": rng.integers(0, 8, 1000),
    }
    with running(port, models.identity, tmp_path, kernels=False) as client:
        for name, codes in patterns.items():
            result = client.infer_offload([(-codes).astype(np.int8).reshape(1, 1000)])
            assert result.payload == encode_payload(codes), name
            assert np.array_equal(decode_payload(result.payload, 1000, 3, max_output=1000), codes), name
            assert result.cycles["local_nn"] == 0  # no Local NN ops in this model
            assert result.cycles["compress"] > 0
        assert result.payload[1] == MODE_STORED and len(result.payload) == payload_bound(1000)


HUFFMAN_LENGTHS = [2, 2, 2, 3, 4, 5, 6, 6]  # OFFLOAD.md's example code


def test_huffman_config_through_the_device_compressor(port: str, tmp_path: Path) -> None:
    """A model with huffman_code_lengths: its hil_offload.c carries them and the device picks the smallest of
    stored / Huffman / LZW with the reference's bytes (mode 2 for skewed codes)."""
    rng = np.random.default_rng(12)
    identity = model_copy(tmp_path, "identity-huffman", IDENTITY, ("hil_model.c",))
    meta = {"k": 0, "bits_per_value": 3, "int8_to_code": [i & 7 for i in range(256)],
            "huffman_code_lengths": HUFFMAN_LENGTHS}
    write_offload_c(meta, IDENTITY_SUMMARY, identity)
    assert "static const uint8_t huffman_lengths[8] = {2, 2, 2, 3, 4, 5, 6, 6};" in (
        identity / "hil_offload.c").read_text()
    patterns = {
        "skewed": rng.choice(8, 1000, p=[0.37, 0.2, 0.19, 0.13, 0.06, 0.03, 0.015, 0.005]),
        "all-same 0": np.zeros(1000, np.int64),
        "max-entropy": rng.integers(0, 8, 1000),
    }
    modes = []
    with running(port, identity, tmp_path, kernels=False) as client:
        for name, codes in patterns.items():
            result = client.infer_offload([(-codes).astype(np.int8).reshape(1, 1000)])
            assert result.payload == encode_payload(codes, huffman_lengths=HUFFMAN_LENGTHS), name
            got = decode_payload(result.payload, 1000, 3, max_output=1000, huffman_lengths=HUFFMAN_LENGTHS)
            assert np.array_equal(got, codes), name
            modes.append(result.payload[1])
    assert modes == [MODE_HUFFMAN, MODE_LZW, MODE_STORED]


def test_config_of_another_model_is_refused(models: SimpleNamespace, tmp_path: Path) -> None:
    if not toolchain_status("host").ok:
        pytest.skip("no host toolchain")
    other = model_copy(tmp_path, "other", IDENTITY, ("hil_model.c",))
    summary = dict(IDENTITY_SUMMARY, sha256="ab" * 32)
    write_offload_c({"k": 0, "bits_per_value": 3, "int8_to_code": [0] * 256}, summary, other)
    with running("host", other, tmp_path, kernels=False) as client, pytest.raises(DeviceErrorReply) as excinfo:
        client.infer_offload()
    assert excinfo.value.name == "UNSUPPORTED" and "generated for another model" in excinfo.value.message


# ---- the config generator ----


def test_local_head_ops_of_the_synthetic_model(models: SimpleNamespace) -> None:
    assert local_head_ops(models.summary, 5, 0) == [4, 5, 6]  # STRIDED_SLICE [0:5], MEAN, FULLY_CONNECTED
    assert local_head_ops(models.summary, 4, 0) == []  # no slice of channels [0, 4)
    source = (models.full / "hil_offload.c").read_text()
    assert "ops 4 STRIDED_SLICE, 5 MEAN, 6 FULLY_CONNECTED" in source
    assert f"static uint8_t payload[{payload_bound(19456)}];" in source


def test_generator_refuses_inconsistent_configs(models: SimpleNamespace) -> None:
    agilenn = synthetic_agilenn(models.summary)
    with pytest.raises(OffloadConfigError, match="outside 0..7"):
        offload_c_source(agilenn | {"int8_to_code": [8] * 256}, models.summary)
    with pytest.raises(OffloadConfigError, match="256"):
        offload_c_source(agilenn | {"int8_to_code": [0] * 255}, models.summary)
    with pytest.raises(OffloadConfigError, match="shape"):
        wrong = [{"index": 1, "name": "remote_features", "shape": [1, 8, 8, 19]}]
        offload_c_source(agilenn | {"outputs": wrong}, models.summary)
    with pytest.raises(OffloadConfigError, match="remote features are int8 but agilenn.json maps int16"):
        runs = [[-32768, 0], [100, 1]]
        offload_c_source({k: v for k, v in agilenn.items() if k != "int8_to_code"} | {"int16_code_runs": runs},
                         models.summary)
    with pytest.raises(OffloadConfigError, match="ascend from -32768"):
        offload_c_source(agilenn | {"int16_code_runs": [[0, 1]]}, models.summary)
    huge = json.loads(json.dumps(models.summary))
    huge["outputs"][1].update(shape=[1, 128, 128, 19], bytes=128 * 128 * 19)
    with pytest.raises(OffloadConfigError, match="does not fit one frame"):
        offload_c_source(agilenn | {"outputs": []}, huge)
    with pytest.raises(OffloadConfigError, match="huffman_code_lengths: .*oversubscribed"):
        offload_c_source(agilenn | {"huffman_code_lengths": [1] * 8}, models.summary)
    with pytest.raises(OffloadConfigError, match="huffman_code_lengths: 4 Huffman code lengths"):
        offload_c_source(agilenn | {"huffman_code_lengths": [1, 2, 3, 3]}, models.summary)


def test_generator_writes_huffman_lengths_only_when_the_model_has_them(models: SimpleNamespace) -> None:
    agilenn = synthetic_agilenn(models.summary)
    plain = offload_c_source(agilenn, models.summary)
    assert "huffman" not in plain.lower()  # as before mode 2: the device never sends mode 2
    with_lengths = offload_c_source(agilenn | {"huffman_code_lengths": HUFFMAN_LENGTHS}, models.summary)
    assert "static const uint8_t huffman_lengths[8] = {2, 2, 2, 3, 4, 5, 6, 6};" in with_lengths
    assert "    .huffman_lengths = huffman_lengths,\n" in with_lengths


def test_committed_model_offload_c_is_unchanged() -> None:
    """Regenerating the committed AgileNN export's hil_offload.c gives the same file, its static Huffman code
    (payload mode 2) included."""
    d = paths.MODELS / "agilenn-cifar10"
    meta = json.loads((d / "agilenn.json").read_text())
    summary = json.loads((d / "model.json").read_text())
    lengths = meta["huffman_code_lengths"]
    assert len(lengths) == 2 ** meta["bits_per_value"] and sum(2.0 ** -n for n in lengths) == 1.0  # complete code
    source = offload_c_source(meta, summary)
    assert source == (d / "hil_offload.c").read_text()
    assert f"huffman_lengths[{len(lengths)}] = {{{', '.join(map(str, lengths))}}};" in source
