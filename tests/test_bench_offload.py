"""`hil bench offload` (hil/bench/offload.py): the cost model checked against its published sources, the rows and
ratios on hand-made rows, and the whole bench on five tiny synthetic systems (one of each kind) on the host and
QEMU targets: every row has every column with its provenance, the ratios come from the rows, the device equals the
host reference on every image, a system that cannot run says why in its row.

The tiny systems are made in a second, without training: the device parts are written directly as int8 .tflite
(hil.model.tflite_builder: a 3x3 stride-4 convolution to 8x8x6 features, AgileNN's split and Local NN, or a
classifier head), compiled by the project's compiler; the server parts are untrained Keras models. Their
accuracies mean nothing; the plumbing is what is checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from hil import paths
from hil.bench import costmodel
from hil.bench.costmodel import VARIANTS, CostModelError, CostTable
from hil.bench.offload import (
    BENCH_KINDS,
    Figure,
    Row,
    add_ratios,
    figure_names,
    ratio_names,
    shared_output_offload_c,
)
from hil.measure.link import LINKS
from hil.measure.measurement import PROVENANCES

pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.timeout(600)]

MEASURING_MD = paths.PROJECT_ROOT.parent / "shared" / "docs" / "measuring.md"
TARGETS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]
IMAGES = 10
C, K = 6, 2  # feature channels of the tiny extractor, AgileNN's local channels


# ---------------------------------------------------------------------------------------------------------
# the cost model against its sources (no device, no TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def test_every_cost_entry_names_a_source_and_the_table_is_sound():
    table = CostTable.load()
    assert table.problems() == []
    raw = yaml.safe_load(costmodel.COSTS_PATH.read_text())
    for name, source in raw["sources"].items():
        assert source.get("title") and source.get("url"), name
    for name, entry in raw["published"].items():
        assert entry["source"] in raw["sources"], name
        assert set(entry["ticks"]) == set(VARIANTS), name
    for name, entry in raw["kernels"].items():
        assert entry["derived_from"] and entry["derivation"], name
        assert all(p in raw["published"] for p in entry["derived_from"]), name
        assert table.source_of(table.kernels[name]).startswith("https://github.com/espressif/esp-nn/"), name
    for name, entry in raw["assumptions"].items():
        assert entry["source"] in (*raw["sources"], "assumption") and entry["what"], name


def _nominal_macs(entry: dict) -> tuple[int, int]:
    """MACs and output elements of a published shape, from its input, filter, pad and stride."""
    h, w, cin = entry["input"]
    pad, stride = entry.get("pad", 0), entry.get("stride", 1)
    if entry["kernel"] == "conv":
        cout, kh, kw, _ = entry["filter"]
        taps = kh * kw * cin
    else:  # depthwise: filter [in channels or 1, kh, kw, ...], depth multiplier
        _, kh, kw, _ = entry["filter"]
        cout, taps = cin * entry["depth_multiplier"], kh * kw
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    assert [oh, ow, cout] == entry["output"]
    return oh * ow * cout * taps, oh * ow * cout


def test_cycles_per_mac_reproduce_the_published_tick_counts():
    """Every derived figure, recomputed here from the published ticks and shapes alone, equals the table's, and
    applied to the published shapes gives the published tick counts back."""
    table = CostTable.load()
    pub = table.published
    for name, entry in pub.items():
        if entry["kernel"] in ("conv", "depthwise"):
            assert (entry["macs"], entry["outputs"]) == _nominal_macs(entry), name
    big, small = pub["conv_1x1_10x10x64_to_64"], pub["conv_1x1_8x8x16_to_16"]
    for v in VARIANTS:
        a = np.array([[big["macs"], big["outputs"]], [small["macs"], small["outputs"]]], float)
        per_mac, per_output = np.linalg.solve(a, [big["ticks"][v], small["ticks"][v]])
        conv1 = table.kernels["conv_1x1"].params[v]
        assert conv1["per_mac"] == pytest.approx(per_mac, rel=1e-6)
        assert conv1["per_output"] == pytest.approx(per_output, rel=1e-6)
        for kernel, figure in (("conv", "conv_3x3_10x10x3_to_64"), ("depthwise_3x3", "depthwise_3x3_18x18x16"),
                               ("depthwise", "depthwise_5x5_12x12x8_mult4"),
                               ("fully_connected", "fully_connected_265x3")):
            p = pub[figure]
            want = (p["ticks"][v] - per_output * p["outputs"]) / p["macs"]
            assert table.kernels[kernel].params[v]["per_mac"] == pytest.approx(want, rel=1e-6), (kernel, v)
        for kernel, figure, key in (("mean", "avg_pool_3x3_16x16x16", "taps"),
                                    ("max_pool", "max_pool_3x3_16x16x16", "taps"),
                                    ("add", "elementwise_add_1615", "elements"),
                                    ("mul", "elementwise_mul_1615", "elements"),
                                    ("elementwise_pass", "relu6_1615", "elements")):
            p = pub[figure]
            unit = table.kernels[kernel].unit
            param = {"tap": "per_tap", "element": "per_element"}[unit]
            assert table.kernels[kernel].params[v][param] == pytest.approx(p["ticks"][v] / p[key], rel=1e-6)
        for kernel in table.kernels.values():
            for point in table.reproduced(kernel, v):
                assert point["relative_error"] < 1e-4, (kernel.name, v, point)
    # the pool's window count: a 3x3 window, pad 1, stride 1 over 16 positions sums 14 * 3 + 2 * 2 taps per axis
    assert pub["avg_pool_3x3_16x16x16"]["taps"] == (14 * 3 + 2 * 2) ** 2 * 16


@pytest.mark.skipif(not MEASURING_MD.is_file(), reason="../shared/docs/measuring.md is not here")
def test_published_ticks_are_the_ones_measuring_md_quotes():
    text = MEASURING_MD.read_text()
    rows = re.findall(r"^\| ([a-z0-9 x]+?) \| ([^|]+?) \| ([\d,]+) \| ([\d,]+) \|", text, flags=re.M)
    quoted = {(int(a.replace(",", "")), int(b.replace(",", ""))) for _k, _s, a, b in rows}
    assert len(quoted) >= 9
    ours = {(p["ticks"]["portable"], p["ticks"]["esp_nn"]) for p in CostTable.load().published.values()}
    assert quoted <= ours  # every figure measuring.md quotes is in the table, with the same two tick counts


def test_a_cost_file_without_sources_or_with_edited_figures_is_refused(tmp_path):
    raw = yaml.safe_load(costmodel.COSTS_PATH.read_text())
    no_source = json.loads(json.dumps(raw))
    no_source["published"]["fully_connected_265x3"]["source"] = "a blog"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(no_source))
    with pytest.raises(CostModelError, match="fully_connected_265x3: source 'a blog'"):
        CostTable.load(tmp_path / "a.yaml")
    edited = json.loads(json.dumps(raw))
    edited["kernels"]["conv_1x1"]["esp_nn"]["per_mac"] = 0.5
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(CostModelError, match="conv_1x1 .esp_nn. gives"):
        CostTable.load(tmp_path / "b.yaml")


def test_model_cost_of_the_committed_models():
    table = CostTable.load()
    summary = json.loads((paths.MODELS / "agilenn-cifar10" / "model.json").read_text())
    cost = table.model_cost(summary)
    assert cost.unknown_ops == [] and len(cost.ops) == len(summary["ops"])
    for v in VARIANTS:
        assert cost.cycles(v) == pytest.approx(sum(o.cycles[v] for o in cost.ops))
    # ESP-NN is faster than the portable kernels on every MAC op, and the modelled times are in a sane range
    assert 5 < cost.seconds("esp_nn") * 1e3 < cost.seconds("portable") * 1e3 < 1000
    full_summary = json.loads((paths.MODELS / "full-local-cifar10" / "model.json").read_text())
    full = table.model_cost(full_summary)
    macs = sum(op["macs"] for op in summary["ops"])
    full_macs = sum(op["macs"] for op in full_summary["ops"])
    assert full.seconds("esp_nn") > 0.5 * full_macs / macs * cost.seconds("esp_nn")  # time follows the MACs
    # a 1x1 convolution's cost is the kernel's per-MAC and per-output figures applied to that op's shapes
    op = next(o for o in summary["ops"] if o["op"] == "CONV_2D" and o["inputs"][1][1:3] == [1, 1])
    conv = next(o for o in cost.ops if o.index == op["index"])
    p = table.kernels["conv_1x1"].params["esp_nn"]
    assert op["macs"] == math.prod(op["outputs"][0]) * op["inputs"][0][-1]
    assert conv.kernel == "conv_1x1" and conv.cycles["esp_nn"] == pytest.approx(
        p["per_mac"] * op["macs"] + p["per_output"] * math.prod(op["outputs"][0]))
    odd = table.model_cost({"ops": [{"index": 0, "op": "SOFTMAX", "inputs": [[1, 10]], "outputs": [[1, 10]]}]})
    assert odd.unknown_ops == ["0 SOFTMAX"] and "lower bound" in odd.notes[0]


# ---------------------------------------------------------------------------------------------------------
# rows and ratios (no device)
# ---------------------------------------------------------------------------------------------------------


def _row(name: str, kind: str, **values: tuple[float, str]) -> Row:
    row = Row(name, kind, f"models/{name}")
    for fig in figure_names(tuple(LINKS)):
        row.figures[fig] = Figure(None, "ms", None, "n/a")
    for fig, (value, prov) in values.items():
        row.figures[fig] = Figure(value, "x", prov)
    return row


def test_ratios_are_computed_from_the_rows_and_accuracy_gaps_are_flagged():
    agile = _row("a", "agilenn", e2e_wifi_6mbps_ms=(20.0, "modelled"), payload_bytes_mean=(160.0, "emulated"),
                 energy_mj=(2.0, "modelled"), accuracy=(0.80, "emulated"), device_total_ms=(10.0, "emulated"))
    close = _row("b", "encoder", e2e_wifi_6mbps_ms=(50.0, "modelled"), payload_bytes_mean=(480.0, "emulated"),
                 energy_mj=(3.0, "modelled"), accuracy=(0.78, "emulated"), device_total_ms=(10.5, "emulated"))
    far = _row("c", "full_local", e2e_wifi_6mbps_ms=(140.0, "emulated"), payload_bytes_mean=(0.0, "emulated"),
               energy_mj=(16.0, "modelled"), accuracy=(0.70, "emulated"), device_total_ms=(140.0, "emulated"))
    failed = Row("d", "partition", "models/d", status="failed", reason="no firmware")
    add_ratios([agile, close, far, failed], agile, tuple(LINKS))
    assert close.ratios["e2e_wifi_6mbps_ms"].value == pytest.approx(2.5)
    assert close.ratios["payload_bytes_mean"].value == pytest.approx(3.0)
    assert close.ratios["payload_bytes_mean"].provenance == "emulated"
    assert far.ratios["e2e_wifi_6mbps_ms"].provenance == "modelled"  # the weaker of emulated and modelled
    assert far.ratios["payload_bytes_mean"].value == 0.0 and far.ratios["energy_mj"].value == pytest.approx(8.0)
    assert agile.ratios["e2e_wifi_6mbps_ms"].value == 1.0
    assert set(close.ratios) == set(ratio_names(tuple(LINKS)))
    assert close.comparable_accuracy and close.accuracy_gap_points == pytest.approx(-2.0) and not close.flags
    assert not far.comparable_accuracy and "10.0 points below a's" in far.flags[0]
    assert failed.ratios["e2e_wifi_6mbps_ms"].value is None and "no firmware" in failed.ratios["energy_mj"].detail
    assert close.paper["system"] == "DeepCOD" and close.paper["e2e_ratio_to_agilenn"] == pytest.approx(54.8 / 21.8,
                                                                                                        abs=1e-3)
    nothing = _row("e", "encoder")
    add_ratios([nothing], None, tuple(LINKS))
    assert "no AgileNN row" in nothing.ratios["e2e_wifi_6mbps_ms"].detail


def test_the_shared_output_offload_config_compresses_output_0():
    summary = {"name": "m", "sha256": "ab" * 32, "ops": [],
               "outputs": [{"name": "features", "shape": [1, 8, 8, 24], "dtype": "int8", "bytes": 1536}]}
    source = shared_output_offload_c(summary, list(range(256)), 8)
    assert ".local_output = 0," in source and ".remote_output = 0," in source and ".bits = 8," in source
    assert ".n_values = 1536," in source and "bench-generated" not in source.split("*/")[1]
    with pytest.raises(ValueError, match="one output"):
        shared_output_offload_c(dict(summary, outputs=summary["outputs"] * 2), list(range(256)), 8)


# ---------------------------------------------------------------------------------------------------------
# five tiny synthetic systems
# ---------------------------------------------------------------------------------------------------------


def _f32(v: float) -> float:
    return float(np.float32(v))


def _device_tflite(kind: str, seed: int) -> tuple[bytes, dict]:
    """int8 image (1/255, -128) -> 3x3 stride-4 conv to 8x8xC (RELU6) -> per kind: AgileNN's split (local: slice
    [0:K] -> mean -> FC 10; remote: slice [K:C]), the features (encoder, partition) or a classifier head."""
    from hil.model.tflite_builder import ACTIVATIONS, PADDINGS, TfliteBuilder, builtin_options

    rng = np.random.default_rng(seed)
    b = TfliteBuilder()
    in_s, f_s = _f32(1 / 255), (10 ** rng.uniform(-2.5, -1.5, C)).astype(np.float32)
    feat_s, feat_zp = _f32(6 / 255), -128
    x = b.tensor([1, 32, 32, 3], scale=in_s, zero_point=-128, name="image")
    w = b.tensor([C, 3, 3, 3], scale=f_s, zero_point=0, data=rng.integers(-127, 128, (C, 3, 3, 3)), axis=0,
                 name="conv_w")
    bias = b.tensor([C], "int32", scale=(np.float32(in_s) * f_s).astype(np.float32), zero_point=0,
                    data=rng.integers(-2000, 2000, C), name="conv_b")
    feat = b.tensor([1, 8, 8, C], scale=feat_s, zero_point=feat_zp, name="features")
    b.op("CONV_2D", [x, w, bias], [feat], builtin_options(
        "Conv2DOptionsT", padding=PADDINGS["SAME"], strideH=4, strideW=4, dilationHFactor=1, dilationWFactor=1,
        fusedActivationFunction=ACTIVATIONS["RELU6"]))
    quant = {"features": (feat_s, feat_zp)}

    def slice_(lo: int, hi: int, name: str) -> int:
        consts = [b.tensor([4], "int32", data=np.array(v, np.int32), name=f"{name}_{n}")
                  for n, v in (("begin", [0, 0, 0, lo]), ("end", [1, 8, 8, hi]), ("strides", [1, 1, 1, 1]))]
        y = b.tensor([1, 8, 8, hi - lo], scale=feat_s, zero_point=feat_zp, name=name)
        b.op("STRIDED_SLICE", [feat, *consts], [y], builtin_options("StridedSliceOptionsT"))
        return y

    def head(src: int, channels: int) -> int:
        axes = b.tensor([2], "int32", data=np.array([1, 2], np.int32), name="axes")
        pooled = b.tensor([1, channels], scale=feat_s, zero_point=feat_zp, name="pooled")
        b.op("MEAN", [src, axes], [pooled], builtin_options("ReducerOptionsT", keepDims=False))
        fw_s = _f32(0.02)
        fw = b.tensor([10, channels], scale=fw_s, zero_point=0, data=rng.integers(-127, 128, (10, channels)),
                      name="fc_w")
        fb = b.tensor([10], "int32", scale=_f32(feat_s * fw_s), zero_point=0, data=rng.integers(-500, 500, 10),
                      name="fc_b")
        out_s, out_zp = _f32(0.05), 0
        logits = b.tensor([1, 10], scale=out_s, zero_point=out_zp, name="logits")
        b.op("FULLY_CONNECTED", [pooled, fw, fb], [logits], builtin_options("FullyConnectedOptionsT"))
        quant["logits"] = (out_s, out_zp)
        return logits

    if kind == "agilenn":
        local = head(slice_(0, K, "local_features"), K)
        remote = slice_(K, C, "remote_features")
        return b.finish([x], [local, remote]), quant
    if kind == "full_local":
        return b.finish([x], [head(feat, C)]), quant
    return b.finish([x], [feat]), quant


def _keras_model(shape: tuple[int, ...], seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))


def _card(out: Path, kind: str, summary: dict | None, payload_bits: int) -> None:
    artifacts = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
                 if p.name not in ("card.json", "README.md")}
    accuracy = {"combined_int8": 0.1} if kind == "agilenn" else \
        {"top1": 0.1} if kind == "edge_only" else {"top1_int8": 0.1}
    device = {k: int(summary[k]) if summary else 0 for k in ("weights_bytes", "arena_bytes", "macs")}
    card = {"name": out.name, "kind": kind, "dataset": "synthetic (tests/test_bench_offload.py)",
            "artifacts": artifacts, "device": device, "accuracy": accuracy,
            "skewness": 0.5 if kind == "agilenn" else None, "payload_bits": payload_bits}
    (out / "card.json").write_text(json.dumps(card, indent=2))


def write_tiny_system(models: Path, kind: str, seed: int = 0) -> Path:
    """One model directory of `kind` as the exporters write it, as far as the bench, the server, the firmware
    and the card checker read it."""
    from hil.agilenn.quant import Quant
    from hil.export.agilenn import centroid_lookup
    from hil.model.compiler import compile_tflite
    from hil.offload.codegen import write_offload_c

    name = f"tiny-{kind.replace('_', '-')}"
    out = models / name
    out.mkdir(parents=True)
    summary = None
    quant: dict = {}
    if kind != "edge_only":
        tflite, quant = _device_tflite(kind, seed)
        (out / "model.tflite").write_bytes(tflite)
        compile_tflite(tflite, out, name=name)
        summary = json.loads((out / "model.json").read_text())
    feat_s, feat_zp = quant.get("features", (_f32(6 / 255), -128))
    lo, hi = (float(v) for v in Quant(feat_s, feat_zp).dequantize(np.array([-128, 127])))
    centroids = [_f32(lo + (hi - lo) * (i + 0.5) / 8) for i in range(8)]
    lut = centroid_lookup(centroids, Quant(feat_s, feat_zp)).tolist()
    image = {"shape": [1, 32, 32, 3], "dtype": "int8", "scale": _f32(1 / 255), "zero_point": -128}
    feature_out = {"index": 0, "name": "features", "shape": [1, 8, 8, C], "dtype": "int8", "scale": feat_s,
                   "zero_point": feat_zp}
    if kind == "agilenn":
        ls, lz = quant["logits"]
        meta = {"name": name, "k": K, "num_classes": 10, "alpha": 0.5, "centroids": centroids, "bits_per_value": 3,
                "int8_to_code": lut, "input": image,
                "outputs": [{"index": 0, "name": "local_logits", "shape": [1, 10], "scale": ls, "zero_point": lz},
                            {"index": 1, "name": "remote_features", "shape": [1, 8, 8, C - K], "scale": feat_s,
                             "zero_point": feat_zp}],
                "remote_model": {"file": "remote.keras", "input": [None, 8, 8, C - K]},
                "payload": {"values": 8 * 8 * (C - K)}}
        (out / "agilenn.json").write_text(json.dumps(meta))
        write_offload_c(meta, summary, out)
        _keras_model((8, 8, C - K), seed).save(out / "remote.keras")
        bits = 8 * 8 * (C - K) * 3
    else:
        meta = {"name": name, "kind": kind, "num_classes": 10, "input": image}
        if kind == "edge_only":
            meta["input"] = {"shape": [1, 32, 32, 3], "dtype": "uint8"}
            meta["payload"] = {"bits": 3072 * 8}
            _keras_model((32, 32, 3), seed).save(out / "server.keras")
        elif kind == "full_local":
            ls, lz = quant["logits"]
            meta["outputs"] = [{"index": 0, "name": "logits", "shape": [1, 10], "scale": ls, "zero_point": lz}]
            meta["payload"] = {"bits": 0}
        else:
            per_value = 3 if kind == "encoder" else 8
            meta["outputs"] = [feature_out]
            meta["payload"] = {"bits": 8 * 8 * C * per_value, "bits_per_value": per_value, "values": 8 * 8 * C}
            if kind == "encoder":
                meta |= {"centroids": centroids, "int8_to_code": lut}
            _keras_model((8, 8, C), seed).save(out / "server.keras")
        (out / "baseline.json").write_text(json.dumps(meta))
        bits = int(meta["payload"]["bits"])
    _card(out, kind, summary, bits)
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("keras")
    models = tmp_path_factory.mktemp("bench-models")
    for i, kind in enumerate(BENCH_KINDS):
        write_tiny_system(models, kind, seed=i)
    return models


def _check_report(data: dict, target: str) -> None:
    links = list(LINKS)
    columns = figure_names(links)
    assert data["format"] == "hil-bench-offload/1" and data["target"] == target
    assert data["columns"] == columns and data["images"]["count"] == IMAGES
    assert sorted(r["kind"] for r in data["rows"]) == sorted(BENCH_KINDS)
    assert [r["kind"] for r in data["rows"]] == list(BENCH_KINDS)  # the paper's order
    assert data["reference"] == "tiny-agilenn"
    rows = {r["kind"]: r for r in data["rows"]}
    emulated = "emulated"
    for kind, r in rows.items():
        assert r["status"] == "ok", (kind, r["reason"])
        assert list(r["figures"]) == columns, kind
        assert set(r["ratios_to_reference"]) == set(data["ratio_columns"]), kind
        for name, fig in r["figures"].items():
            assert set(fig) == {"value", "unit", "provenance", "detail"}, (kind, name)
            if fig["value"] is None:
                assert fig["provenance"] is None and fig["detail"], (kind, name)
            else:
                assert fig["provenance"] in PROVENANCES, (kind, name)
                assert math.isfinite(fig["value"]), (kind, name)
        f = {k: v["value"] for k, v in r["figures"].items()}
        prov = {k: v["provenance"] for k, v in r["figures"].items()}
        assert f["device_equals_host"] == IMAGES, (kind, r["flags"])
        assert prov["device_total_ms"] == emulated and prov["server_ms"] == "measured"
        assert all(prov[f"link_{k.replace('-', '_')}_ms"] == "modelled" for k in links)
        assert all(prov[n] == "modelled" for n in columns if n.startswith("s3_") and f[n] is not None)
        assert prov["energy_mj"] == "modelled" and f["energy_mj"] > 0  # the simulated N6705C
        assert 0 <= f["accuracy_ci95_low"] <= f["accuracy"] <= f["accuracy_ci95_high"] <= 1
        assert f["s3_model_error_pct"] is None  # no board
        assert f["s3_esp_nn_device_ms"] <= f["s3_portable_device_ms"]
        for k in links:
            slug = k.replace("-", "_")
            assert f[f"e2e_{slug}_ms"] == pytest.approx(f["device_total_ms"] + f[f"link_{slug}_ms"] + f["server_ms"])
            assert f[f"s3_esp_nn_e2e_{slug}_ms"] == pytest.approx(
                f["s3_esp_nn_device_ms"] + f[f"link_{slug}_ms"] + f["server_ms"])
        assert r["paper"]["system"] == {"agilenn": "AgileNN", "encoder": "DeepCOD", "partition": "SPINN",
                                        "edge_only": "Edge-only", "full_local": "MCUNet"}[kind]
    ref = rows["agilenn"]["figures"]
    for kind, r in rows.items():  # every ratio is this row's figure over AgileNN's
        for name, ratio in r["ratios_to_reference"].items():
            mine, theirs = r["figures"][name]["value"], ref[name]["value"]
            assert ratio["value"] == pytest.approx(mine / theirs), (kind, name)
        assert (r["comparable_accuracy"] is False) == any("not at comparable accuracy" in fl for fl in r["flags"])
    # per kind: what runs where
    a, enc, part, edge, full = (rows[k]["figures"] for k in BENCH_KINDS)
    assert a["device_local_head_ms"]["value"] > 0 and enc["device_local_head_ms"]["value"] is None
    assert a["payload_bytes_mean"]["value"] <= 4 + math.ceil(8 * 8 * (C - K) * 3 / 8)
    assert enc["payload_bytes_mean"]["value"] <= 4 + math.ceil(8 * 8 * C * 3 / 8)
    assert part["payload_bytes_mean"]["value"] <= 4 + 8 * 8 * C
    assert edge["payload_bytes_mean"]["value"] <= 4 + 3072 and edge["device_extractor_ms"]["value"] is None
    assert edge["flash_bytes"]["value"] == 0 and edge["arena_bytes"]["value"] is None
    assert full["payload_bytes_mean"]["value"] == 0 and full["server_ms"]["value"] == 0
    assert full["device_compress_ms"]["value"] is None and full["offload_ram_bytes"]["value"] == 0
    assert full["e2e_wifi_6mbps_ms"]["provenance"] == emulated  # nothing modelled in a device-only latency
    assert a["e2e_wifi_6mbps_ms"]["provenance"] == "modelled"  # the link is modelled
    assert data["paper"]["systems"]["AgileNN"]["e2e_ms"] == 21.8  # the paper's figures, apart from ours


def _parser() -> argparse.ArgumentParser:
    from hil.bench.offload import add_offload_subparser

    parser = argparse.ArgumentParser(prog="hil")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    add_offload_subparser(bench)
    return parser


@pytest.mark.tf
@pytest.mark.parametrize("target", TARGETS)
def test_bench_of_five_tiny_systems(tiny_models, target, tmp_path, capsys):
    """The command on the five kinds: table on stdout, the JSON (--json and in the run directory), one test per
    system and the ratios in the run's results, every figure with its provenance."""
    from hil.firmware import toolchain_status

    if not toolchain_status(target).ok:
        pytest.skip(f"no {target} toolchain: {toolchain_status(target)}")
    args = _parser().parse_args(["bench", "offload", "--target", target, "--images", str(IMAGES), "--models",
                                 str(tiny_models), "--json", str(tmp_path / "bench.json"), "--report-dir",
                                 str(tmp_path / "reports"), "--quiet"])
    rc = args.func(args)
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert rc == 0, out
    _check_report(data, target)
    assert "| tiny-agilenn (AgileNN)" in out and "PAPER (not ours)" in out and "MODELLED ESP32-S3" in out
    assert out.strip().splitlines()[-1].startswith(f"bench offload: 5/5 systems ran on {target}")
    [run] = list((tmp_path / "reports" / "runs").iterdir())
    assert run.name.endswith(f"-{target}-bench-offload")
    assert json.loads((run / "bench-offload.json").read_text())["rows"] == data["rows"]
    results = json.loads((run / "results.json").read_text())
    tests = {t["id"]: t["outcome"] for t in results["tests"]}
    assert tests == {**{f"hil bench offload: {r['system']}": "passed" for r in data["rows"]},
                     "hil bench offload: ratios to AgileNN": "passed"}
    assert results["verdict"] == "pass" and results["target"]["name"] == target
    metrics = {(m["test"], m["name"]): m for m in results["metrics"]}
    m = metrics[("hil bench offload: tiny-encoder", "e2e_wifi_6mbps_ms")]
    assert m["provenance"] == "modelled" and m["value"] == pytest.approx(
        data["rows"][1]["figures"]["e2e_wifi_6mbps_ms"]["value"])
    assert metrics[("hil bench offload: ratios to AgileNN", "tiny-encoder.ratio.payload_bytes_mean")]["value"] == \
        pytest.approx(data["rows"][1]["ratios_to_reference"]["payload_bytes_mean"]["value"])
    assert (run / "index.html").is_file()


@pytest.mark.tf
def test_a_system_that_cannot_run_says_why_and_the_others_still_run(tiny_models, tmp_path):
    import shutil

    from hil.bench.offload import run_offload_bench

    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny-agilenn", "tiny-partition"):
        shutil.copytree(tiny_models / name, models / name)
    (models / "tiny-partition" / "hil_model.c").write_text("/* edited */\n")  # the card's hash no longer matches
    shutil.copytree(paths.MODELS / "synthetic-extractor", models / "synthetic-extractor")  # not a compared kind
    report = run_offload_bench(models, target="host", images=3, energy=False, work_dir=tmp_path / "work")
    rows = {r.system: r for r in report.rows}
    assert list(rows) == ["tiny-agilenn", "tiny-partition"]
    assert rows["tiny-agilenn"].status == "ok" and rows["tiny-agilenn"].figures["energy_mj"].value is None
    bad = rows["tiny-partition"]
    assert bad.status == "failed" and "hil_model.c" in bad.reason and "sha256" in bad.reason
    assert list(bad.figures) == figure_names(list(LINKS))
    assert all(f.value is None and "not run" in f.detail for f in bad.figures.values())
    assert not report.ok and "FAILED tiny-partition" in report.table()
    assert any("synthetic-extractor: kind 'synthetic'" in n for n in report.notes)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.tf
def test_baseline_server_parts_map_codes_to_what_the_exporter_fed_server_keras(tiny_models):
    """hil/server's read_baseline_spec: partition codes q + 128 -> scale * (q - zero_point), encoder codes ->
    centroids, edge-only bytes u -> u / 255; the served logits equal server.keras on those values."""
    import keras

    from hil.server.remote_model import RemoteModel

    rng = np.random.default_rng(0)
    for kind in ("partition", "encoder", "edge_only"):
        directory = tiny_models / f"tiny-{kind.replace('_', '-')}"
        meta = json.loads((directory / "baseline.json").read_text())
        served = RemoteModel.load(directory)
        spec = served.spec
        assert (spec.kind, spec.model_file) == (kind, "server.keras")
        codes = rng.integers(0, len(spec.centroids), spec.n_values).astype(np.uint8)
        if kind == "partition":
            out = meta["outputs"][0]
            q = codes.astype(np.int32) - 128
            values = np.float32(out["scale"]) * (q - out["zero_point"]).astype(np.float32)
            assert spec.bits == 8 and spec.sha256 == _sha(directory / "model.tflite")
        elif kind == "encoder":
            values = np.asarray(meta["centroids"], np.float32)[codes]
            assert spec.bits == 3
        else:
            values = codes.astype(np.float32) / np.float32(255.0)
            assert spec.bits == 8 and spec.sha256 == _sha(directory / "server.keras")
        server = keras.models.load_model(directory / "server.keras")
        want = server.predict_on_batch(values.reshape(1, *spec.input_shape))
        logits, _ = served.run(codes)
        np.testing.assert_array_equal(logits, np.asarray(want, np.float32).reshape(-1))
    assert RemoteModel.load(tiny_models / "tiny-edge-only", model_id="ab" * 32).spec.sha256 == "ab" * 32


def test_a_board_run_is_measured_and_shows_the_cost_models_error(tmp_path):
    """Target esp32s3 (a SystemRun as a board would give it): device figures are 'measured', and the modelled
    ESP32-S3 latency's error against the board uses the kernel set the board named on its console."""
    from hil.bench.offload import Step, System, SystemRun, build_row, plan_system
    from hil.export.cards import load_card

    d = paths.MODELS / "agilenn-cifar10"
    system = System(d.name, "agilenn", d, load_card(d), json.loads((d / "agilenn.json").read_text()))
    plan = plan_system(system, tmp_path)
    # the STRIDED_SLICE of channels [0, 3), the Local NN's two 3x3 convolutions, MEAN, FULLY_CONNECTED
    assert plan.local_ops == [7, 8, 9, 10, 11]
    clock = 240_000_000
    steps = [Step({"extractor": 2.4e6, "local_head": 1e4, "compress": 4e4, "total": 2.45e6}, bytes(150), 3, 900, [])
             for _ in range(4)]
    for kernels, variant in (("kernels esp-nn 1.1.2", "esp_nn"), ("kernels portable", "portable"), (None, "esp_nn")):
        run = SystemRun(steps, np.array([3, 3, 1, 3]), clock, {"kernels": kernels}, None, 21504, 1.0)
        row = build_row(plan, run, target="esp32s3", links=list(LINKS), cost=CostTable.load(), server_machine="x",
                        power_w=0.239, power_detail="p")
        f = row.figures
        assert f["device_total_ms"].value == pytest.approx(2.45e6 / clock * 1e3)
        assert f["device_total_ms"].provenance == "measured" and f["accuracy"].value == 0.75
        err = f["s3_model_error_pct"]
        modelled = f[f"s3_{variant}_device_ms"].value
        assert err.provenance == "modelled"
        assert err.value == pytest.approx(100 * (modelled - f["device_total_ms"].value) / f["device_total_ms"].value)
        assert f"{variant} because" in err.detail
        assert f["energy_mj"].value is None and "no power analyzer" in f["energy_mj"].detail


def test_usage_errors(tmp_path, capsys):
    parser = _parser()
    for bad in (["--link", "wifi-6mbps,carrier-pigeon"], ["--images", "0"], ["--fw", "nothing"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["bench", "offload", *bad])
        assert exc.value.code == 2, bad
    args = parser.parse_args(["bench", "offload", "--target", "host", "--link", "bt-2mbps", "--link",
                              "wifi-6mbps,bt-270kbps", "--fw", "a=b/c", "--models", str(tmp_path / "none"),
                              "--report-dir", str(tmp_path / "reports")])
    assert args.links == [["bt-2mbps"], ["wifi-6mbps", "bt-270kbps"]] and args.fw == [("a", Path("b/c"))]
    assert args.func(args) == 2
    assert "is not a directory of models" in capsys.readouterr().err
    [run] = list((tmp_path / "reports" / "runs").iterdir())
    assert json.loads((run / "results.json").read_text())["verdict"] == "fail"
