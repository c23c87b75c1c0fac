"""`hil export --from-model DIR --activations int16`: an AgileNN export's device part re-quantized as 16x8.

Why: with int8 activations (ReLU6 at 6/255 per step, seven layers) the device's remote features differ from
the float ones by 0.6 steps (sd), which flips about 0.4% of the quantizer codes and the combined prediction
of about 3% of the images. TFLite's 16x8 scheme keeps int8 weights but int16 activations (zero point 0,
6/32767 per step on the features), which leaves the float network's decisions almost untouched.

The float network is not changed or retrained: the source directory's device_float.keras is converted
again (same calibration images as `hil export`) and remote.keras, centroids and alpha are copied. What
changes is the device part (model.tflite, hil_model.c, model.json, hil_offload.c) and agilenn.json's input,
outputs and code mapping (`int16_code_runs` instead of the 256-entry `int8_to_code`; hil.offload.value_codes).
The card keeps the source's training facts (skewness is a property of the float network) and measures the
accuracy and agreement of the new device part itself, on the data set's test images, with TFLite Micro.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hil.export.agilenn import (
    CALIBRATION_IMAGES,
    EVAL_BATCH,
    OUTPUT_NAMES,
    calibration_images,
    finetune_section,
    limits_section,
    model_input,
    order_outputs_by_shape,
)
from hil.export.common import (
    ExportError,
    Laps,
    byte_exact_accuracy,
    convert_int8,
    display_path,
    exported_at,
    sha256_file,
    tflm_outputs,
    tflm_runtime,
    top1,
    write_card,
)
from hil.stats import hist_entropy_bits, wilson_interval

DEVICE_FILES = ("model.tflite", "hil_model.c", "model.json", "hil_offload.c")
COPIED = ("remote.keras", "device_float.keras")
EXPORT_FILES = (*DEVICE_FILES, *COPIED, "agilenn.json", "README.md", "card.json")
ACTIVATIONS_NOTE = "16x8: int8 weights (per channel), int16 activations (zero point 0), int64 biases"


def _wrapper(device: Any, input_shape: tuple[int, ...]) -> Any:
    import keras

    image = keras.Input(input_shape, batch_size=1, name="image")
    local, remote = device(image)
    return keras.Model(image, dict(zip(OUTPUT_NAMES, (local, remote), strict=True)), name="agilenn_device")


def _io(tflite: bytes) -> list[dict[str, Any]]:
    """(shape, dtype, scale, zero_point) of the input and the two outputs."""
    from hil.model.tflite_reader import read_tflite

    graph = read_tflite(tflite)
    out = []
    for i in (*graph.inputs, *graph.outputs):
        t = graph.tensors[i]
        if t.dtype != "int16" or t.quant is None or t.quant.per_channel or t.quant.zero_point != 0:
            raise ExportError(f"16x8 conversion gave tensor '{t.name}' as {t.dtype}, not per-tensor symmetric int16")
        out.append({"shape": [int(d) for d in t.shape], "dtype": "int16", "scale": float(t.quant.scale),
                    "zero_point": 0})  # fmt: skip
    return out


def export_agilenn_16x8(
    source: Path,
    out_dir: Path,
    dataset: Any,
    *,
    name: str | None = None,
    calibration_count: int | None = None,
    seed: int | None = None,
    test_limit: int | None = None,
    limits: dict[str, Any] | None = None,
    limits_source: str | None = None,
) -> dict[str, Any]:
    """Writes the 16x8 re-export of the AgileNN export `source` into out_dir; returns its card. The card carries
    the source's `server_finetune` (how its float network was made) and `limits` (what kept it from its targets;
    `limits` replaces them, as `hil export --limits` does for a run)."""
    import keras

    # Registers the custom layers device_float.keras holds; imported here, not at the top, because it imports
    # TensorFlow (like keras above), which `hil export --help` and the card readers do without.
    import hil.agilenn.layers  # noqa: F401
    from hil.check import InputSpec, quantize_images
    from hil.model.compiler import compile_tflite
    from hil.offload.codec import encode_payload, huffman_lengths_of
    from hil.offload.codegen import write_offload_c
    from hil.offload.value_codes import ValueCodes

    laps = Laps()
    source, out_dir = Path(source), Path(out_dir)
    meta_path, card_path = source / "agilenn.json", source / "card.json"
    if not meta_path.is_file() or not (source / "device_float.keras").is_file() or not card_path.is_file():
        raise ExportError(f"{source} is not an AgileNN export with device_float.keras (run `hil export` first)")
    meta, src_card = json.loads(meta_path.read_text()), json.loads(card_path.read_text())
    if "int8_to_code" not in meta:
        raise ExportError(f"{source} is not an int8 AgileNN export (agilenn.json has no int8_to_code)")
    if out_dir.resolve() == source.resolve():
        raise ExportError("--out must differ from --from-model")
    name = name or f"{meta['name']}-a16"
    input_shape = tuple(int(d) for d in meta["input"]["shape"][1:])
    src_calibration = src_card.get("export", {}).get("calibration", {})
    count = calibration_count or int(src_calibration.get("images", CALIBRATION_IMAGES))
    if seed is None:
        seed = int(src_calibration.get("seed", 0))
    device = keras.models.load_model(source / "device_float.keras")
    remote_model = keras.models.load_model(source / "remote.keras")
    t = laps.lap("load", laps.started)

    calib_u8, _ = calibration_images(dataset.x_train, count, seed)
    calibration = np.concatenate(list(model_input(calib_u8, input_shape[0])))
    tflite = convert_int8(_wrapper(device, input_shape), calibration, activations="int16")
    classes = int(meta["num_classes"])
    tflite = order_outputs_by_shape(tflite, [(1, classes), tuple(meta["outputs"][1]["shape"])])
    io_in, io_local, io_remote = _io(tflite)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(tflite)
    compiled = compile_tflite(out_dir / "model.tflite", out_dir, name=name)
    for f in COPIED:
        shutil.copyfile(source / f, out_dir / f)
    t = laps.lap("convert_compile", t)

    centroids = [float(c) for c in meta["centroids"]]
    mapping = ValueCodes.int16(centroids, io_remote["scale"])
    agilenn = {k: v for k, v in meta.items() if k != "int8_to_code"}
    agilenn["name"] = name
    agilenn["activations"] = ACTIVATIONS_NOTE
    agilenn["input"] = {**meta["input"], **io_in, "from_uint8": "q = floor(uint8 / 255 / scale + 0.5)"}
    agilenn["outputs"] = [
        {**meta["outputs"][0], **io_local},
        {**meta["outputs"][1], **io_remote,
         "meaning": "remote-bound feature channels (ReLU6 range), NHWC; code by int16_code_runs"},
    ]  # fmt: skip
    assert mapping.run_start is not None and mapping.run_code is not None
    agilenn["int16_code_runs"] = [[int(s), int(c)] for s, c in zip(mapping.run_start, mapping.run_code, strict=True)]
    agilenn["derived_from"] = {"model": meta["name"], "agilenn.json": sha256_file(meta_path)}
    (out_dir / "agilenn.json").write_text(json.dumps(agilenn, indent=2) + "\n")
    write_offload_c(agilenn, compiled.to_json(), out_dir)

    # --- accuracy of this device part against the (unchanged) float pipeline ---
    n_all = len(dataset.x_test)
    n = n_all if test_limit is None else min(test_limit, n_all)
    x_test, y_test = dataset.x_test[:n], np.asarray(dataset.y_test[:n]).reshape(-1)
    spec = InputSpec(tuple(io_in["shape"]), io_in["scale"], 0, np.dtype(np.int16))
    batches = (quantize_images(x_test[s : s + EVAL_BATCH], spec) for s in range(0, n, EVAL_BATCH))
    (local_q, remote_q), seconds = tflm_outputs(tflite, batches, n)
    t = laps.lap("int16_eval", t)
    c = np.asarray(centroids, np.float32)
    alpha = np.float32(meta["alpha"])
    codes = mapping.codes(remote_q)
    local = np.float32(io_local["scale"]) * local_q.astype(np.float32)
    remote = np.asarray(remote_model.predict(c[codes], batch_size=EVAL_BATCH, verbose=0), np.float32)
    combined = alpha * local + (np.float32(1) - alpha) * remote
    fl_local, fl_remote_features = device.predict(
        np.concatenate(list(model_input(x_test, input_shape[0]))), batch_size=EVAL_BATCH, verbose=0
    )
    fl_codes = np.argmin(np.square(fl_remote_features[..., None] - c), axis=-1)
    fl_remote = np.asarray(remote_model.predict(c[fl_codes], batch_size=EVAL_BATCH, verbose=0), np.float32)
    fl_combined = alpha * fl_local + (np.float32(1) - alpha) * fl_remote
    t = laps.lap("float_eval", t)
    correct = int(np.sum(np.argmax(combined, -1) == y_test))
    float_pred = np.argmax(fl_combined, -1)
    accuracy = {
        "combined_int8": correct / n if n else float("nan"),  # the quantized (here 16x8) device part
        "combined_int8_ci95": list(wilson_interval(correct, n)),
        "combined_float": top1(fl_combined, y_test),
        "local_only": top1(fl_local, y_test),
        "local_only_int8": top1(local, y_test),  # the 16x8 device part's own prediction
        "remote_only_int8": top1(remote, y_test),
        "remote_only": top1(fl_remote, y_test),
        "int8_float_agreement": float(np.mean(np.argmax(combined, -1) == float_pred)),
        "code_mismatch": float(np.mean(codes != fl_codes)),
        "samples": n,
        "full_test_set": n == n_all,
        "int8_runtime": tflm_runtime(n / seconds if seconds > 0 else float("inf")),
        "note": "int8 in these keys means the quantized device part, which here is 16x8",
    }
    exact = byte_exact_accuracy(dataset.exact_test, np.argmax(combined, -1), float_pred, y_test)
    if exact is not None:
        accuracy["byte_exact"] = exact
    hist = np.bincount(codes.reshape(-1), minlength=len(centroids))
    # This device part's own codes through the device's encoder (the source's Huffman lengths, if any).
    sizes = np.array([len(encode_payload(cs.reshape(-1), int(meta["bits_per_value"]),
                                         huffman_lengths=huffman_lengths_of(meta))) for cs in codes])
    payload = {
        **src_card.get("payload", {}),
        "code_histogram": hist.tolist(),
        "code_usage": (hist / max(int(hist.sum()), 1)).round(5).tolist(),
        "code_entropy_bits_per_value": hist_entropy_bits(hist),
        "entropy_bits_per_value": hist_entropy_bits(hist),
    }
    if n:
        payload |= {
            "compressed_mean_bytes": float(sizes.mean()),
            "compressed_p90_bytes": float(np.percentile(sizes, 90)),
            "compressed_max_bytes": int(sizes.max()),
            "compressed_measured": f"hil.offload.codec.encode_payload (byte-identical to the device's encoder) "
            f"on the 16x8 device part's codes of {n} test images",
        }
    card: dict[str, Any] = {
        "name": name,
        "kind": "agilenn",
        "format": src_card.get("format"),
        "activations": ACTIVATIONS_NOTE,
        "dataset": src_card["dataset"],
        "dataset_spec": src_card.get("dataset_spec"),
        "derived_from": {"model": display_path(source), "card_accuracy": src_card.get("accuracy", {})},
        "source_run": src_card.get("source_run"),
        "artifacts": {},
        "accuracy": accuracy,
        "skewness": src_card["skewness"],  # the float network's, unchanged by re-quantizing
        "skewness_detail": src_card.get("skewness_detail"),
        "training": src_card.get("training"),
        "payload_bits": src_card["payload_bits"],
        "payload": payload,
        "device": {
            "weights_bytes": compiled.weights_bytes,
            "arena_bytes": compiled.arena_bytes,
            "macs": compiled.macs,
            "tflite_bytes": len(tflite),
            "activations": "int16",
            "input": agilenn["input"],
            "outputs": agilenn["outputs"],
        },
        "export": {"at": exported_at(), "calibration_images": count, "seed": seed, "command": (
            f"hil export --from-model {display_path(source)} --activations int16 --out {display_path(out_dir)}"
            + (f" --limits {limits_source}" if limits_source else ""))},
        "server_finetune": src_card.get("server_finetune"),
    }  # fmt: skip
    limits = limits or src_card.get("limits")
    if limits:
        card["limits"] = limits
    return write_card(out_dir, card, _readme(card, src_card), EXPORT_FILES, laps)


def _readme(card: dict[str, Any], src_card: dict[str, Any]) -> str:
    a, d, s = card["accuracy"], card["device"], src_card.get("accuracy", {})
    nan = float("nan")
    src_dev = src_card.get("device", {})
    lo, hi = a["combined_int8_ci95"]
    ci = f"95% CI {lo:.2%} to {hi:.2%}"
    return f"""# {card['name']}

The device part of `{card['derived_from']['model']}` re-quantized as **16x8** ({ACTIVATIONS_NOTE}) by
`{card['export']['command']}`. The float network (device_float.keras, remote.keras, centroids, alpha) is the
source's, unchanged; only the device part and the code mapping differ (hil/export/agilenn16.py).

| on {a['samples']} test images | int8 source | this 16x8 export |
|---|---|---|
| combined, quantized device part | {s.get('combined_int8', nan):.2%} | {a['combined_int8']:.2%} ({ci}) |
| combined, float pipeline | {s.get('combined_float', nan):.2%} | {a['combined_float']:.2%} |
| agreement with the float pipeline | {s.get('int8_float_agreement', nan):.2%} | {a['int8_float_agreement']:.2%} |
| codes that differ from the float ones | | {a['code_mismatch']:.4%} |

| device part | int8 source | 16x8 |
|---|---|---|
| weights (flash) | {src_dev.get('weights_bytes', 0):,} B | {d['weights_bytes']:,} B |
| peak arena | {src_dev.get('arena_bytes', 0):,} B | {d['arena_bytes']:,} B |
| MACs | {src_dev.get('macs', 0):,} | {d['macs']:,} |

The device input is int16 (scale {card['device']['input']['scale']:.6g}, zero point 0): the host quantizes
each uint8 image as `floor(u / 255 / scale + 0.5)`, and the input is twice the bytes of the int8 model's.
Skewness {card['skewness']:.3f} is the float network's (measured at the source's export). Runtime of the
evaluation: {a['int8_runtime']}.
{finetune_section(card.get("server_finetune"))}{limits_section(card.get("limits"))}"""
