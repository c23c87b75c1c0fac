"""The comparison baselines end to end on tiny synthetic data: config, codecs, resumable training, export to a
model directory with a checked card, the int8 device part bit-exact through the C core against TFLM, the
card's accuracy reproducible from the exported files alone, and payload_bits as designed."""

import json
import math
import zlib

import numpy as np
import pytest

from hil.datasets import synthetic_dataset
from hil.export.cards import load_card, sha256_file
from hil.train.baseline_config import KINDS, BaselineConfig
from hil.train.config import ConfigError, TrainConfig

COMPILER_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "ADD",
    "STRIDED_SLICE", "PAD", "RESHAPE", "MUL",
}  # fmt: skip
N_TRAIN, N_TEST = 64, 24


def tiny_config(kind, dataset, **overrides):
    """The default extractor (so payloads are the real design's), a much smaller Remote NN, a few steps."""
    params = dict(
        dataset=str(dataset),
        batch_size=16,
        epochs=2,
        steps_per_epoch=2,
        remote_width=0.25,
        remote_blocks=((1, 16, 1, 1), (6, 24, 1, 2)),
        remote_head=64,
        eval_batch_size=32,
    )
    return BaselineConfig.cpu(kind, **(params | overrides))


# ---------------------------------------------------------------------------------------------------------
# config and codecs (no TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def test_config_round_trip_and_presets(tmp_path):
    for kind in KINDS:
        cfg = BaselineConfig.cpu(kind, notes="x")
        assert BaselineConfig.from_json(cfg.to_json()) == cfg
        cfg.to_json(tmp_path / "c.json")
        assert BaselineConfig.from_json(tmp_path / "c.json") == cfg
        gpu = BaselineConfig.gpu(kind)
        assert gpu.epochs > cfg.epochs and (gpu.extractor, gpu.remote_blocks) == (cfg.extractor, cfg.remote_blocks)
    with pytest.raises(ConfigError, match="kind"):
        BaselineConfig.cpu("mcunet")
    with pytest.raises(ConfigError, match="unknown"):
        BaselineConfig.from_dict(BaselineConfig.cpu("encoder").to_dict() | {"joint_epochs": 3})


def test_design_payloads_of_the_default_backbone():
    """Same extractor as AgileNN (8x8x24): partition sends it as int8, the encoder as 3-bit codes."""
    assert BaselineConfig.cpu("full_local").payload_bits == 0
    assert BaselineConfig.cpu("edge_only").payload_bits is None  # measured at export
    assert BaselineConfig.cpu("partition").payload_bits == 8 * 8 * 24 * 8
    assert BaselineConfig.cpu("encoder").payload_bits == 8 * 8 * 24 * 3
    agilenn = TrainConfig.cpu()
    # on AgileNN's own backbone (16x16x16) the encoder sends all 16 channels, AgileNN only the 13 remote ones
    encoder = BaselineConfig.from_agilenn("encoder", agilenn)
    assert encoder.payload_bits == 16 * 16 * 16 * 3 > agilenn.payload_bits == 16 * 16 * 13 * 3


def test_from_agilenn_copies_the_backbone_and_data():
    agilenn = TrainConfig.cpu(remote_width=0.75, dataset="x.npz", lr=0.05, extractor=(("conv", 16, 3, 2),))
    cfg = BaselineConfig.from_agilenn("partition", agilenn)
    assert (cfg.remote_width, cfg.dataset, cfg.lr, cfg.extractor) == (0.75, "x.npz", 0.05, (("conv", 16, 3, 2),))
    assert cfg.epochs == BaselineConfig.cpu("partition").epochs
    recipe = TrainConfig.cpu(remote_plain_depth=2, remote_dtype="mixed_bfloat16")
    plain = BaselineConfig.from_agilenn("full_local", recipe)
    assert (plain.remote_kind, plain.remote_plain_widths, plain.remote_plain_depth, plain.remote_dtype) == (
        "plain", (64, 128, 256), 2, "mixed_bfloat16")
    with pytest.raises(ConfigError, match="remote_dtype"):
        BaselineConfig.cpu("partition", remote_dtype="mixed_bfloat16")
    assert BaselineConfig.from_agilenn("encoder", TrainConfig.gpu()).preset == "gpu"


def test_lzw_matches_the_textbook_example():
    from hil.export.baselines import lzw_compress, lzw_decompress

    text = b"TOBEORNOTTOBEORTOBEORNOT"
    codes = [84, 79, 66, 69, 79, 82, 78, 79, 84, 256, 258, 260, 265, 259, 261, 263]
    blob, bits = lzw_compress(text)
    # The first code can only be a literal (8 bits); afterwards at most 256 + 15 entries exist: 9 bits.
    widths = [8] + [9] * (len(codes) - 1)
    assert bits == sum(widths) and len(blob) == math.ceil(bits / 8)
    stream = int.from_bytes(blob, "big") >> (8 * len(blob) - bits)
    ends = np.cumsum(widths)
    got = [(stream >> (bits - int(end))) & ((1 << w) - 1) for end, w in zip(ends, widths, strict=True)]
    assert got == codes
    assert bytes(lzw_decompress(blob, len(text))) == text


@pytest.mark.parametrize(("alphabet", "max_bits", "n"), [(256, 12, 3072), (8, 12, 1536), (4, 5, 600), (256, 9, 2000)])
def test_lzw_round_trips_including_a_full_dictionary(alphabet, max_bits, n):
    from hil.export.baselines import lzw_compress, lzw_decompress

    rng = np.random.default_rng(alphabet + max_bits)
    # Runs of repeated symbols (compressible) mixed with noise; small max_bits fills the dictionary.
    data = np.repeat(rng.integers(0, alphabet, n), rng.integers(1, 6, n))[:n]
    blob, bits = lzw_compress(data.tolist(), alphabet, max_bits)
    assert lzw_decompress(blob, n, alphabet, max_bits) == data.tolist()
    assert len(blob) == math.ceil(bits / 8)
    with pytest.raises(ValueError):
        lzw_compress([alphabet], alphabet, max_bits)


def test_compressed_sizes_are_lossless_codecs_and_ordered_sensibly():
    from hil.export.baselines import compressed_sizes, deflate, lzma2

    flat = bytes(3072)
    noise = np.random.default_rng(0).integers(0, 256, 3072, dtype=np.uint8).tobytes()
    sizes = compressed_sizes([flat, noise])
    assert sizes["raw"].tolist() == [3072, 3072]
    assert all(sizes[c][0] < 100 for c in ("deflate", "lzma", "lzw"))  # a constant image is nearly free
    assert sizes["lzw"][1] > 3072  # LZW expands incompressible bytes (9..12-bit codes for ~1 byte each)
    assert zlib.decompress(deflate(noise), -15) == noise
    import lzma

    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}]
    assert lzma.decompress(lzma2(noise), format=lzma.FORMAT_RAW, filters=filters) == noise


def test_cli_parses_train_and_export(tmp_path):
    import argparse

    from hil.cli_baseline import add_baseline_parser, baseline_config

    parser = argparse.ArgumentParser(prog="hil")
    add_baseline_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["baseline", "train", "--kind", "encoder", "--run-dir", str(tmp_path), "--preset", "cpu",
                              "--set", "epochs=3", "--set", "centroids=16", "--data", "d.npz"])  # fmt: skip
    cfg = baseline_config(args)
    assert (cfg.kind, cfg.epochs, cfg.centroids, cfg.dataset, cfg.bits_per_value) == ("encoder", 3, 16, "d.npz", 4)
    cfg.to_json(tmp_path / "config.json")
    resumed = parser.parse_args(["baseline", "train", "--run-dir", str(tmp_path)])
    assert baseline_config(resumed) == cfg  # resumes exactly what was started
    wrong = parser.parse_args(["baseline", "train", "--run-dir", str(tmp_path), "--kind", "partition"])
    with pytest.raises(ValueError, match="encoder run"):
        baseline_config(wrong)
    args = parser.parse_args(["baseline", "export", "--run-dir", "r", "--out", "o", "--codec", "lzw"])
    assert (args.baseline_command, args.codec, args.test_limit) == ("export", "lzw", None)


# ---------------------------------------------------------------------------------------------------------
# training and export (TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def write_npz(directory):
    data = synthetic_dataset(N_TRAIN, N_TEST, seed=3)
    path = directory / "data.npz"
    np.savez_compressed(
        path,
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        exact_test=(np.arange(N_TEST) < 10).astype(np.uint8),
    )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every kind trained (2 epochs of 2 steps) and exported; the encoder in three resumable calls."""
    pytest.importorskip("tensorflow")
    from hil.export.baselines import export_baseline
    from hil.train.baselines import train_baseline

    root = tmp_path_factory.mktemp("baselines")
    dataset = write_npz(root)
    out = {}
    for kind in KINDS:
        # full_local on the CPU recipe's plain Remote NN, trained in bfloat16: its float32 copy converts to int8
        # and runs on the C core (the global max-pool as MAX_POOL_2D + RESHAPE)
        plain = {"remote_kind": "plain", "remote_plain_widths": (8, 16, 16), "remote_plain_depth": 2,
                 "remote_dtype": "mixed_bfloat16"}
        cfg = tiny_config(kind, dataset, **(plain if kind == "full_local" else {}))
        run = root / f"run-{kind}"
        calls = []
        if kind == "encoder":
            calls.append(train_baseline(kind, cfg, run, progress=False, stop_after_epochs=1))
            calls.append(train_baseline(kind, cfg, run, progress=False, stop_after_epochs=0))
        calls.append(train_baseline(kind, cfg, run, progress=False))
        card = export_baseline(run, root / f"model-{kind}", f"baseline-{kind}", calibration_count=32)
        out[kind] = {"cfg": cfg, "run": run, "dir": root / f"model-{kind}", "card": card, "calls": calls}
    return out


@pytest.mark.tf
@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_training_resumes_and_refuses_another_config(exported):
    from hil.train.baselines import train_baseline
    from hil.train.trainer import RunDirError

    enc = exported["encoder"]
    first, paused, final = enc["calls"]
    assert not first.complete and not paused.complete and final.complete
    # Call 2 only restored call 1's checkpoint: the same weights, centroids included.
    for a, b in zip(first.model.trainable_variables(), paused.model.trainable_variables(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert first.model.centroid_values() == paused.model.centroid_values()
    records = [json.loads(line) for line in (enc["run"] / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r.get("epoch")) for r in records] == [("train", 1), ("train", 2), ("final", None)]
    assert all(r["sec_per_step"] > 0 and np.isfinite(r["train_loss"]) for r in records[:2])
    sessions = json.loads((enc["run"] / "hardware.json").read_text())
    assert [s["resumed_from"] for s in sessions] == [None, "train epoch 1", "train epoch 1"]
    assert sessions[0]["hardware"]["accelerator"]
    again = train_baseline("encoder", enc["cfg"], enc["run"], progress=False)
    assert again.complete and len((enc["run"] / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(RunDirError, match="centroids"):
        train_baseline("encoder", BaselineConfig.from_dict(enc["cfg"].to_dict() | {"centroids": 4}), enc["run"],
                       progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="partition"):
        train_baseline("partition", enc["cfg"], enc["run"], progress=False)


@pytest.mark.tf
@pytest.mark.parametrize("kind", KINDS)
def test_card_has_the_required_keys_and_matching_hashes(exported, kind):
    e = exported[kind]
    card, directory = e["card"], e["dir"]
    assert card == load_card(directory)  # the shared checker: keys, hashes, no unlisted files, C from this tflite
    for key in ("name", "kind", "dataset", "artifacts", "accuracy", "payload_bits", "device", "training"):
        assert key in card, key
    assert card["kind"] == kind and card["name"] == f"baseline-{kind}"
    for file, digest in card["artifacts"].items():
        assert sha256_file(directory / file) == digest
    files = {p.name for p in directory.iterdir()}
    has_device, has_server = kind != "edge_only", kind != "full_local"
    assert ({"model.tflite", "hil_model.c", "model.json"} <= files) == has_device
    assert bool({"model.tflite", "hil_model.c", "model.json"} & files) == has_device
    assert ("server.keras" in files) == has_server
    assert {"card.json", "README.md", "baseline.json"} <= files
    acc = card["accuracy"]
    top1 = "top1_int8" if has_device else "top1"
    assert 0.0 <= acc[top1] <= 1.0 and 0.0 <= acc["top1_float"] <= 1.0 and acc["samples"] == N_TEST
    assert ("top1_int8" in acc) == has_device
    dev = card["device"]
    if has_device:
        summary = json.loads((directory / "model.json").read_text())
        assert (dev["weights_bytes"], dev["arena_bytes"], dev["macs"]) == (
            summary["weights_bytes"], summary["arena_bytes"], summary["macs"])  # fmt: skip
        assert dev["macs"] > 0 and dev["fits_sram"] and dev["arena_bytes"] <= 512 * 1024
        assert {op["op"] for op in summary["ops"]} <= COMPILER_OPS
    else:
        assert (dev["weights_bytes"], dev["arena_bytes"], dev["macs"]) == (0, 0, 0) and "edge-only" in dev["note"]
    tr = card["training"]
    assert tr["epochs"] == 2 and tr["hardware"] and tr["compute_seconds"] > 0 and tr["median_sec_per_step"] > 0
    readme = (directory / "README.md").read_text()
    assert readme.startswith(f"# baseline-{kind}") and str(card["payload_bits"]) in readme


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["full_local", "partition", "encoder"])
def test_device_part_is_bit_exact_through_the_c_core(exported, kind, tmp_path_factory):
    """The generated C (hil_model.c + the kernel core, host gcc) against TFLM on real test images."""
    from hil.datasets import load_dataset
    from hil.model.hostrun import build_host_runner, run_host_many
    from hil.model.reference import TflmReference

    e = exported[kind]
    directory = e["dir"]
    binary = build_host_runner(directory, tmp_path_factory.getbasetemp() / "host-build")  # kernels built once
    ref = TflmReference((directory / "model.tflite").read_bytes())
    assert (ref.inputs[0].scale, ref.inputs[0].zero_point) == (pytest.approx(1 / 255), -128)
    images = load_dataset(e["cfg"].dataset).x_test[:4]
    inputs = [[(img.astype(np.int16) - 128).astype(np.int8)[None]] for img in images]  # uint8 - 128
    host = run_host_many(binary, inputs)
    for x, got in zip(inputs, host, strict=True):
        want = ref.run(x)
        assert len(got) == len(want) == 1
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.tf
@pytest.mark.parametrize("kind", KINDS)
def test_accuracy_is_reproducible_from_the_exported_files(exported, kind):
    """The card's top-1 from model.tflite (TFLM) -> dequantize (baseline.json) -> server.keras, nothing else."""
    import keras

    from hil.datasets import load_dataset
    from hil.model.reference import TflmReference

    e = exported[kind]
    directory, card = e["dir"], e["card"]
    data = load_dataset(e["cfg"].dataset)
    meta = json.loads((directory / "baseline.json").read_text())
    if kind == "edge_only":
        server = keras.models.load_model(directory / "server.keras")
        logits = server.predict(data.x_test.astype(np.float32) / 255.0, verbose=0)
        assert np.mean(np.argmax(logits, -1) == data.y_test) == pytest.approx(card["accuracy"]["top1"])
        return
    ref = TflmReference((directory / "model.tflite").read_bytes())
    q = np.stack([ref.run([(img.astype(np.int16) - 128).astype(np.int8)[None]])[0][0] for img in data.x_test])
    out = meta["outputs"][0]
    values = np.float32(out["scale"]) * (q.astype(np.int32) - out["zero_point"]).astype(np.float32)
    if kind == "full_local":
        logits = values
    else:
        logits = keras.models.load_model(directory / "server.keras").predict(values, verbose=0)
    assert np.mean(np.argmax(logits, -1) == data.y_test) == pytest.approx(card["accuracy"]["top1_int8"])
    if kind == "encoder":  # the device's code table agrees with the server's hard quantizer on every int8 value
        table = np.asarray(meta["int8_to_code"])
        centroids = np.asarray(meta["centroids"], np.float32)
        grid = np.float32(out["scale"]) * (np.arange(-128, 128) - out["zero_point"]).astype(np.float32)
        assert table.shape == (256,) and table.max() < len(centroids) == 8
        np.testing.assert_array_equal(table, np.argmin((grid[:, None] - centroids[None]) ** 2, axis=1))


@pytest.mark.tf
@pytest.mark.parametrize("kind", KINDS)
def test_payload_bits_are_what_the_design_says(exported, kind):
    from hil.datasets import load_dataset

    e = exported[kind]
    card = e["card"]
    bits = card["payload_bits"]
    if kind == "full_local":
        assert bits == 0
    elif kind == "edge_only":
        images = load_dataset(e["cfg"].dataset).x_test
        sizes = []
        for img in images:  # raw DEFLATE, level 9, computed here independently of the exporter
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            sizes.append(len(c.compress(img.tobytes()) + c.flush()))
        assert bits == round(8 * np.mean(sizes))
        pay = card["payload"]
        assert pay["codec"] == "deflate" and pay["compressed"]["raw"]["mean_bytes"] == 32 * 32 * 3
        assert set(pay["compressed"]) == {"raw", "deflate", "lzma", "lzw"}
        assert pay["compressed_byte_exact_images"] is not None  # the npz marks its byte-exact test images
    else:
        shape = json.loads((e["dir"] / "model.json").read_text())["outputs"][0]["shape"]
        per_value = 8 if kind == "partition" else 3
        assert tuple(shape) == (1, 8, 8, 24)
        assert bits == math.prod(shape) * per_value == e["cfg"].payload_bits
        assert 0 <= card["payload"]["entropy_bytes"] <= bits / 8
