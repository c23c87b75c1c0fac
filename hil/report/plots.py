"""The plots of the run page (hil/report/page.py), as small inline SVGs drawn with matplotlib's Agg backend.

Every function returns a Plot: its SVG, or no SVG and a sentence that says what run would produce it. Each
caption states the provenance of what is drawn, and a figure of emulated or modelled data says so inside the
drawing too, so that a screenshot of it cannot pass for a hardware measurement.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PROVENANCE_TEXT = {
    "measured": "measured on hardware",
    "emulated": "emulated: not an ESP32-S3 measurement",
    "modelled": "modelled: computed from a model, not measured",
}
STAMP = {"emulated": "EMULATED, not hardware", "modelled": "MODELLED, not measured"}
MAX_POINTS = 1500  # a longer trace is drawn as its min/max envelope over this many buckets
MAX_ROWS = 40  # bars of the comparison plot
MAX_HISTORY = 24  # small multiples of the history plot
RC = {"svg.fonttype": "none", "svg.hashsalt": None, "font.size": 8, "text.parse_math": False,
      "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 8, "legend.fontsize": 7,
      "legend.frameon": False}
COLOURS = {"device": "#0969da", "other": "#bf8700", "bad": "#cf222e", "good": "#1a7f37", "flag": "#9a6700",
           "neutral": "#6e7781", "shade": "#54aeff"}


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    svg: str | None  # None: the data is absent and `caption` says what run would produce it
    caption: str


def provenance_text(provenance: str | None) -> str:
    return PROVENANCE_TEXT.get(provenance or "", f"provenance {provenance or 'not recorded'}")


def metrics_by_name(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's metrics by name (the last one recorded wins when two tests record the same name)."""
    return {m.get("name") or m.get("key", ""): m for m in results.get("metrics") or []}


def last_data(results: dict[str, Any], name: str) -> tuple[Any, dict[str, Any]]:
    """The value and meta of the last `data` record called `name`, or (None, {})."""
    entries = (results.get("data") or {}).get(name) or []
    return (entries[-1].get("value"), entries[-1].get("meta") or {}) if entries else (None, {})


def _finite(values: Iterable[Any] | None) -> list[float]:
    out = []
    for v in values or ():
        if isinstance(v, int | float) and math.isfinite(v):
            out.append(float(v))
    return out


def _array(values: Any) -> np.ndarray:
    if not isinstance(values, list | tuple):
        return np.zeros(0)
    try:
        return np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)


def _render(draw: Callable[[Figure], None], size: tuple[float, float], provenance: str | None) -> str:
    """Draws a figure, stamps a non-hardware provenance into it, and returns it as an inline <svg> element."""
    with plt.rc_context(RC):
        fig = plt.figure(figsize=size)
        try:
            draw(fig)
            top = 1.0
            if provenance in STAMP:
                fig.text(0.995, 0.995, STAMP[provenance], ha="right", va="top", fontsize=7, fontweight="bold",
                         color=COLOURS["flag"])
                top = 1.0 - 0.16 / size[1]  # room for the stamp above the axes' titles
            fig.tight_layout(rect=(0.0, 0.0, 1.0, top))
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        finally:
            plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):].replace("<svg ", '<svg role="img" ', 1)


def _plot(name: str, title: str, draw: Callable[[Figure], None], caption: str, provenance: str | None,
          size: tuple[float, float] = (6.0, 2.8)) -> Plot:
    return Plot(name, title, _render(draw, size, provenance), caption)


def _caption(metric: dict[str, Any], what: str) -> str:
    detail = (metric.get("detail") or "").strip()
    text = f"{provenance_text(metric.get('provenance'))}. {what}"
    return f"{text}. {detail}" if detail else text


def _histogram(ax: Axes, series: Sequence[tuple[str, list[float], str]], unit: str) -> None:
    everything = [v for _, vals, _ in series for v in vals]
    lo, hi = min(everything), max(everything)
    log = lo > 0 and hi / lo > 20
    bins = min(40, max(5, int(math.sqrt(len(everything)))))
    edges = np.geomspace(lo, hi, bins + 1) if log else np.histogram_bin_edges(everything, bins=bins)
    for label, vals, colour in series:
        ax.hist(vals, bins=edges, alpha=0.6, color=colour, label=f"{label} (n={len(vals)})")
        ax.axvline(float(np.median(vals)), color=colour, linewidth=1, linestyle="--")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("count")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.93))


def latency(results: dict[str, Any]) -> Plot:
    by_name = metrics_by_name(results)
    device = by_name.get("latency_device") or {}
    vals = _finite(device.get("values"))
    title = "Latency per inference"
    if not vals:
        return Plot("latency", title, None, "no latency histogram: this run had no latency test "
                    "(hil measure, or hil/suite/test_measure.py) with per-inference latency_device values")
    unit = device.get("unit") or ""
    series = [("device", vals, COLOURS["device"])]
    rt = by_name.get("latency_host_round_trip") or {}
    if _finite(rt.get("values")) and (rt.get("unit") or "") == unit:
        series.append(("host round trip", _finite(rt.get("values")), COLOURS["other"]))
    what = "Histogram of latency_device" + (", host round trip overlaid" if len(series) > 1 else "")
    return _plot("latency", title, lambda fig: _histogram(fig.add_subplot(), series, unit),
                 _caption(device, what + "; dashed lines: medians"), device.get("provenance"))


def stages(results: dict[str, Any]) -> Plot:
    pattern = re.compile(r"^cycles_(.+)_median$")
    found = []
    for m in results.get("metrics") or []:
        match = pattern.match(m.get("name") or "")
        if match and isinstance(m.get("value"), int | float):
            found.append((match.group(1), m))
    title = "Latency per stage"
    if not found:
        return Plot("stages", title, None, "no per-stage latency: this run had no AgileNN accuracy test "
                    "(hil/suite/test_accuracy.py) recording cycles_<stage>_median")
    unit = found[0][1].get("unit") or ""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(found))[::-1]
        medians = [float(m["value"]) for _, m in found]
        ax.barh(y, medians, color=COLOURS["device"], alpha=0.7, height=0.6)
        for yi, (_, m) in zip(y, found, strict=True):
            vals = _finite(m.get("values"))
            if vals:
                p5, p95 = np.percentile(vals, [5, 95])
                ax.plot([p5, p95], [yi, yi], color="black", linewidth=1)
                ax.plot([p5, p95], [yi, yi], "|", color="black", markersize=8)
        ax.set_yticks(y, [stage for stage, _ in found])
        ax.set_xlabel(f"{unit} (bar: median; whisker: p5 to p95)")

    return _plot("stages", title, draw, _caption(found[0][1], "Median per stage, whiskers p5 to p95 of the "
                 "per-image values"), found[0][1].get("provenance"), (6.0, 0.9 + 0.35 * len(found)))


def _envelope(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 * MAX_POINTS points: the min and the max of each bucket, so that no peak is lost."""
    if len(t) <= 2 * MAX_POINTS:
        return t, y
    edges = np.linspace(0, len(t), MAX_POINTS + 1).astype(int)
    lo, hi = np.minimum.reduceat(y, edges[:-1]), np.maximum.reduceat(y, edges[:-1])
    tt = np.repeat(t[edges[:-1]], 2)
    return tt, np.column_stack([lo, hi]).ravel()


def _windows(raw: Any) -> list[tuple[float, float]]:
    out = []
    for w in raw or []:
        pair = (w.get("start_s"), w.get("end_s")) if isinstance(w, dict) else tuple(w)[:2]
        if len(pair) == 2 and all(isinstance(v, int | float) for v in pair):
            out.append((float(pair[0]), float(pair[1])))
    return out


def power(results: dict[str, Any]) -> Plot:
    trace, meta = last_data(results, "power_trace")
    title = "Power trace"
    trace = trace if isinstance(trace, dict) else {}
    t, i = _array(trace.get("t_s")), _array(trace.get("current_a"))
    if len(t) < 2 or len(t) != len(i):
        return Plot("power", title, None, "no power trace: this run had no power-analyzer test "
                    "(hil measure, or hil/suite/test_measure.py with an analyzer)")
    by_name = metrics_by_name(results)
    source = next((by_name[k] for k in ("energy_per_inference", "average_power", "peak_current") if k in by_name), {})
    provenance = meta.get("provenance") or source.get("provenance")
    windows, voltage = _windows(trace.get("windows")), trace.get("voltage_v")
    volts = _array(voltage) if isinstance(voltage, list) else None
    if volts is not None and len(volts) and float(np.ptp(volts)) < 0.02 * abs(float(np.mean(volts))):
        voltage, volts = float(np.mean(volts)), None  # a regulated supply's ripple: a number, not a second trace

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for t0, t1 in windows[:500]:
            ax.axvspan(t0, t1, color=COLOURS["shade"], alpha=0.25, linewidth=0)
        ax.plot(*_envelope(t, i * 1e3), color=COLOURS["device"], linewidth=0.6)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("current (mA)")
        if volts is not None and len(volts) == len(t):
            ax2 = ax.twinx()
            ax2.plot(*_envelope(t, volts), color=COLOURS["other"], linewidth=0.6)
            ax2.set_ylabel("voltage (V)", color=COLOURS["other"])

    how = f"{len(t)} samples" + (f", drawn as a min/max envelope of {MAX_POINTS} buckets"
                                 if len(t) > 2 * MAX_POINTS else "")
    supply = f" at {voltage:.4g} V" if isinstance(voltage, int | float) else ""
    what = f"Supply current{supply}, {how}; shaded: {len(windows)} inference windows"
    caption = _caption({"provenance": provenance, "detail": source.get("detail") or meta.get("detail")}, what)
    return _plot("power", title, draw, caption, provenance)


def energy(results: dict[str, Any]) -> Plot:
    m = metrics_by_name(results).get("energy_per_inference")
    title = "Energy per inference"
    if not m:
        return Plot("energy", title, None, "no energy per inference: this run had no power-analyzer test")
    vals, unit = _finite(m.get("values")), m.get("unit") or ""
    if not vals:
        value = m.get("value")
        figure = f" ({value:g} {unit})" if isinstance(value, int | float) else ""
        return Plot("energy", title, None, f"no per-inference energies: energy_per_inference{figure} is one figure "
                    "for all inferences (a span-mode measurement); a window-mode run records one per inference")

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if len(vals) > 60:
            _histogram(ax, [("energy", vals, COLOURS["device"])], unit)
            return
        jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(vals))
        ax.scatter(vals, jitter, s=12, color=COLOURS["device"], alpha=0.7)
        ax.axvline(float(np.median(vals)), color="black", linestyle="--", linewidth=1, label="median")
        ax.set_ylim(-0.6, 0.6)
        ax.set_yticks([])
        ax.set_xlabel(unit)
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.93))

    return _plot("energy", title, draw, _caption(m, f"{len(vals)} per-inference values"), m.get("provenance"),
                 (6.0, 2.4 if len(vals) > 60 else 1.6))


def accuracy(results: dict[str, Any]) -> Plot:
    by_name = metrics_by_name(results)
    title = "Accuracy"
    rows = []
    top1 = by_name.get("accuracy_top1")
    if top1 and isinstance(top1.get("value"), int | float):
        lo, hi = (by_name.get(f"accuracy_top1_ci95_{s}", {}).get("value") for s in ("low", "high"))
        rows.append(("top-1 (95% CI)", float(top1["value"]), lo, hi))
    agree = by_name.get("agreement_with_float")
    if agree and isinstance(agree.get("value"), int | float):
        rows.append(("agreement with float", float(agree["value"]), None, None))
    if not rows:
        return Plot("accuracy", title, None, "no accuracy figures: this run had no accuracy test "
                    "(hil accuracy, or hil/suite/test_accuracy.py)")
    source = top1 or agree or {}

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for y, (_label, value, lo, hi) in enumerate(rows[::-1]):
            err = None
            if isinstance(lo, int | float) and isinstance(hi, int | float):
                err = [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]
            ax.errorbar([value], [y], xerr=err, fmt="o", color=COLOURS["device"], capsize=4)
            ax.annotate(f"{value:.4f}", (value, y), textcoords="offset points", xytext=(0, 6), ha="center")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows[::-1]])
        ax.set_ylim(-0.6, len(rows) - 0.3)
        ax.set_xlabel(source.get("unit") or "fraction")

    what = "Top-1 accuracy with its Wilson 95% interval" + (", agreement with the float pipeline" if agree else "")
    return _plot("accuracy", title, draw, _caption(source, what), source.get("provenance"),
                 (6.0, 0.9 + 0.45 * len(rows)))


def confusion(results: dict[str, Any]) -> Plot:
    value, meta = last_data(results, "confusion_matrix")
    title = "Confusion matrix"
    value = value if isinstance(value, dict) else {}
    matrix, labels = value.get("matrix"), [str(label) for label in value.get("labels") or []]
    try:
        counts = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        counts = np.zeros((0, 0))
    if counts.ndim != 2 or not counts.size or counts.shape[0] != counts.shape[1]:
        return Plot("confusion", title, None, "no confusion matrix: this run had no accuracy test that recorded one "
                    "(hil/suite/test_accuracy.py)")
    n = counts.shape[0]
    labels = labels if len(labels) == n else [str(k) for k in range(n)]
    source = metrics_by_name(results).get("accuracy_top1") or {}
    provenance = meta.get("provenance") or source.get("provenance")

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.imshow(counts, cmap="Blues")
        if n <= 20:
            for r in range(n):
                for c in range(n):
                    dark = counts[r, c] > counts.max() / 2
                    ax.text(c, r, f"{int(counts[r, c])}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")

    side = min(6.0, 2.0 + 0.35 * n)
    what = f"Counts over {int(counts.sum())} images, rows true class, columns predicted"
    return _plot("confusion", title, draw, _caption({"provenance": provenance, "detail": meta.get("detail")}, what),
                 provenance, (side, side))


def payload(results: dict[str, Any]) -> Plot:
    m = metrics_by_name(results).get("payload_bytes_mean") or {}
    vals = _finite(m.get("values"))
    title = "Offload payload per image"
    if not vals:
        return Plot("payload", title, None, "no payload sizes: this run had no AgileNN accuracy test "
                    "(hil/suite/test_accuracy.py) recording payload_bytes_mean per image")
    return _plot("payload", title, lambda fig: _histogram(fig.add_subplot(), [("payload", vals, COLOURS["device"])],
                                                          m.get("unit") or "bytes"),
                 _caption(m, "Histogram of the compressed payload of each image"), m.get("provenance"), (6.0, 2.4))


def _tolerance_rel(row: dict[str, Any]) -> float | None:
    """The relative half-width of a row's tolerance text ("±5% (measured)", "±0.2 ms"), when it has one."""
    match = re.search(r"±\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", row.get("tolerance") or "")
    if not match:
        return None
    width = float(match.group(1))
    if match.group(2):
        return width / 100
    ref = row.get("reference")
    return width / abs(ref) if isinstance(ref, int | float) and ref else None


def comparison(comp: dict[str, Any] | None) -> Plot:
    title = "Change against the reference run"
    if not comp:
        return Plot("comparison", title, None, "no comparison: this run was not compared with a reference run")
    order = {"regressed": 0, "improved": 1, "changed": 2, "ok": 3}
    rows = [r for r in comp.get("rows") or [] if isinstance(r.get("delta_rel"), int | float)
            and math.isfinite(r["delta_rel"])]
    rows = sorted(rows, key=lambda r: order.get(r.get("verdict"), 4))[:MAX_ROWS]
    if not rows:
        return Plot("comparison", title, None, "no relative changes: no metric has a non-zero value in both "
                    "this run and the reference run")
    colour = {"regressed": COLOURS["bad"], "improved": COLOURS["good"]}
    tols = [_tolerance_rel(r) for r in rows]
    biggest = max(abs(r["delta_rel"]) for r in rows)
    lim = 100 * max(max((t for t in tols if t), default=0.0) * 1.5, min(biggest * 1.1, 2.0), 0.01)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for yi, row, tol in zip(y, rows, tols, strict=True):
            if tol:
                ax.fill_betweenx([yi - 0.4, yi + 0.4], -100 * tol, 100 * tol, color=COLOURS["neutral"], alpha=0.2,
                                 linewidth=0)
            d = 100 * row["delta_rel"]
            ax.barh(yi, max(-lim, min(lim, d)), color=colour.get(row.get("verdict"), COLOURS["neutral"]), height=0.6)
            if abs(d) > lim:
                ax.text(math.copysign(lim, d), yi, f" {d:+.0f}% ", ha="right" if d > 0 else "left", va="center",
                        fontsize=6, color="white")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_yticks(y, [str(r.get("key")) for r in rows])
        ax.set_xlabel("change relative to the reference (%); grey band: tolerance")

    kinds = sorted({str(r.get("provenance")) for r in rows})
    caption = (f"Relative change per metric, now vs reference; provenance of the figures: {', '.join(kinds)} "
               "(see the table: a change is judged only between figures of the same provenance)")
    worst = next((p for p in ("emulated", "modelled") if any(p in k for k in kinds)), None)
    return _plot("comparison", title, draw, caption, worst, (6.5, 1.0 + 0.28 * len(rows)))


def history(hist: dict[str, Any] | None, results: dict[str, Any]) -> Plot:
    title = "History"
    runs, metrics = (hist or {}).get("runs") or [], (hist or {}).get("metrics") or {}
    series = [(k, v) for k, v in metrics.items() if _finite(v.get("values"))][:MAX_HISTORY]
    if not runs or not series:
        return Plot("history", title, None, "no history: there are no earlier runs of this target and model to "
                    "plot")
    here = {m.get("key"): m.get("provenance") for m in results.get("metrics") or []}
    cols = min(4, len(series))
    rows = math.ceil(len(series) / cols)
    verdict_colour = {"pass": COLOURS["good"], "fail": COLOURS["bad"]}
    dots = [verdict_colour.get(r.get("verdict"), COLOURS["neutral"]) for r in runs]

    def draw(fig: Figure) -> None:
        for n, (key, entry) in enumerate(series):
            ax = fig.add_subplot(rows, cols, n + 1)
            vals = [v if isinstance(v, int | float) else np.nan for v in entry.get("values") or []][:len(runs)]
            x = np.arange(len(vals))
            ax.plot(x, vals, color=COLOURS["neutral"], linewidth=0.8)
            ax.scatter(x, vals, c=dots[:len(vals)], s=10, zorder=3)
            tag = f" [{here[key]}]" if here.get(key) else ""
            ax.set_title(f"{key} ({entry.get('unit') or ''}){tag}", fontsize=7)
            ax.set_xticks([])
            ax.tick_params(labelsize=6)

    kinds = sorted({str(here[k]) for k, _ in series if here.get(k)}) or ["not recorded"]
    caption = (f"The last {len(runs)} runs, oldest on the left (dot colour: run verdict); provenance of these "
               f"metrics in this run: {', '.join(kinds)}")
    worst = next((p for p in ("emulated", "modelled") if p in kinds), None)
    return _plot("history", title, draw, caption, worst, (2.4 * cols, 0.4 + 1.5 * rows))


def all_plots(results: dict[str, Any], comp: dict[str, Any] | None, hist: dict[str, Any] | None) -> list[Plot]:
    return [latency(results), stages(results), power(results), energy(results), accuracy(results),
            confusion(results), payload(results), comparison(comp), history(hist, results)]
