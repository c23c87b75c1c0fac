"""index.html of a run directory: one self-contained page (no network, no external files) that a person opens
from disk to see what a run found.

Top to bottom: the verdict, the tests, the metrics (each with its provenance badge), the plots (inline SVG,
hil/report/plots.py), the comparison with the reference run and the history when given, and the run's facts
(instruments, tool versions, host, options, artifacts). Every string that comes from the results is escaped.
"""

from __future__ import annotations

import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hil.report import plots
from hil.report.plots import Plot, provenance_text

PAGE_NAME = "index.html"
STANDARD_FILES = (("results.json", "the run's results"), ("journal.jsonl", "journal: every record of the run"),
                  ("junit.xml", "JUnit XML"), ("metrics.txt", "metrics, Prometheus text format"))
FAILING = ("failed", "error")
LOG_LINES = 60  # lines of each log kept in a failing test's excerpt
MAX_LISTED_LOGS = 100

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 0 auto; max-width: 1200px; padding: 0 16px 32px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font: 12px/1.4 ui-monospace, monospace; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; padding: 6px; margin: 4px 0; }
.verdict { color: #fff; padding: 16px 20px; margin: 16px 0; border-radius: 6px; }
.verdict .word { font-size: 40px; font-weight: 800; letter-spacing: 2px; margin: 0; }
.verdict dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0 0; }
.verdict dt { font-weight: 600; } .verdict dd { margin: 0; }
.v-pass { background: #1a7f37; } .v-fail { background: #cf222e; }
.v-incomplete { background: #9a6700; } .v-empty, .v-unknown { background: #57606a; }
tr.bad td { background: #ffebe9; } tr.good td { background: #dafbe1; } tr.flag td { background: #fff8c5; }
tr.running td { background: #fff8c5; }
.prov { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 12px; font-weight: 600;
        border: 1px solid; white-space: nowrap; }
.prov-measured { color: #1a7f37; border-color: #1a7f37; }
.prov-emulated { color: #9a6700; border-color: #9a6700; border-style: dashed; background: #fff8c5; }
.prov-modelled { color: #8250df; border-color: #8250df; border-style: dotted; background: #fbefff; }
.prov-unknown { color: #57606a; border-color: #57606a; border-style: dashed; }
.ok { color: #1a7f37; font-weight: 600; } .no { color: #cf222e; font-weight: 700; }
figure.plot { margin: 16px 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; break-inside: avoid; }
figure.plot h3 { margin: 0 0 4px; font-size: 15px; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
figure.plot figcaption { font-size: 12px; color: #57606a; }
figure.missing { border-style: dashed; color: #57606a; }
.note { color: #57606a; font-size: 12px; }
@media print { body { max-width: none; } .verdict { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
               tr, figure { break-inside: avoid; } }
"""
SCRIPT = """
window.addEventListener("beforeprint", () => document.querySelectorAll("details").forEach(d => { d.open = true; }));
window.addEventListener("load", () => { document.body.dataset.ready = "1"; });
"""


def _e(value: Any) -> str:
    """Escaped text of a value from the results; an em dash for None."""
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return escape(json.dumps(value, sort_keys=True, default=str))
    return escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    return "NaN" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def _short(digest: Any, n: int = 12) -> str:
    return f'<code title="{_e(digest)}">{_e(str(digest)[:n])}</code>' if digest else "—"


def _badge(provenance: Any) -> str:
    kind = provenance if provenance in plots.PROVENANCE_TEXT else "unknown"
    return (f'<span class="prov prov-{kind}" title="{_e(provenance_text(provenance))}">'
            f"{_e(provenance or 'unknown')}</span>")


def _regressions(comparison: dict[str, Any]) -> str:
    n = comparison.get("regressions", 0)
    return f"{_e(n)} regression{'' if n == 1 else 's'}"


def _table(head: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A table of already-escaped cells; each row carries its class ("" for none)."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(f'<tr class="{cls}">' + "".join(cells) + "</tr>" for cls, cells in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _td(html: str, cls: str = "") -> str:
    return f'<td class="{cls}">{html}</td>' if cls else f"<td>{html}</td>"


def _verdict(results: dict[str, Any], comparison: dict[str, Any] | None) -> str:
    verdict = str(results.get("verdict") or "unknown")
    cls = verdict if verdict in ("pass", "fail", "incomplete", "empty") else "unknown"
    target, model = results.get("target") or {}, results.get("model") or {}
    git, fw = results.get("git") or {}, results.get("firmware") or {}
    counts = ", ".join(f"{_e(n)} {_e(k)}" for k, n in (results.get("counts") or {}).items()) or "no tests"
    revision = _short(git.get("revision")) + (" <strong>dirty</strong>" if git.get("dirty") else "")
    if git.get("branch"):
        revision += f" ({_e(git['branch'])})"
    facts = [("run", f"<code>{_e(results.get('run_id'))}</code>"),
             ("target", f"{_e(target.get('name'))}: {_e(target.get('provenance') or 'provenance not recorded')}"),
             ("model", f"{_e(model.get('name'))} sha256 {_short(model.get('sha256'))}"),
             ("time", f"{_e(results.get('started'))} to {_e(results.get('ended'))}"),
             ("git", revision),
             ("firmware", (f"build {_e(fw.get('build_id'))}" + (f", version {_e(fw['firmware_version'])}"
                                                                  if fw.get("firmware_version") else ""))
              if fw else "no device reported its firmware"),
             ("tests", counts)]
    lines = []
    incomplete = results.get("incomplete")
    if verdict == "incomplete" or incomplete:
        inc = incomplete or {}
        running = ", ".join(f"<code>{_e(t)}</code>" for t in inc.get("running_tests") or []) or "none"
        lines.append(f"<p>The run did not finish: {_e(inc.get('reason'))}. Running when it stopped: {running}; "
                     f"last record at {_e(inc.get('last_record'))}; {_e(inc.get('torn_lines', 0))} torn lines.</p>")
    if results.get("out_of_limits"):
        keys = ", ".join(f"<code>{_e(k)}</code>" for k in results["out_of_limits"])
        lines.append(f"<p>Out of limits: {keys}</p>")
    if comparison:
        ref = (comparison.get("reference") or {}).get("run_id")
        lines.append(f"<p>Against reference <code>{_e(ref)}</code>: {_e(comparison.get('verdict'))}, "
                     f"{_regressions(comparison)}.</p>")
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (f'<header id="verdict" class="verdict v-{cls}" data-verdict="{_e(verdict)}">'
            f'<p class="word">{_e(verdict.upper())}</p>{"".join(lines)}<dl>{dl}</dl></header>')


def _log_excerpt(logs: list[dict[str, Any]]) -> str:
    by_source: dict[str, list[str]] = {}
    for entry in logs:
        by_source.setdefault(str(entry.get("source") or "log"), []).extend(str(entry.get("text", "")).splitlines())
    parts = []
    for source, lines in by_source.items():
        cut = f" (last {LOG_LINES} of {len(lines)} lines)" if len(lines) > LOG_LINES else ""
        parts.append(f"<details><summary>{_e(source)} log{cut}</summary>"
                     f"<pre>{_e(chr(10).join(lines[-LOG_LINES:]))}</pre></details>")
    return "".join(parts)


def _tests(results: dict[str, Any]) -> str:
    tests = results.get("tests") or []
    if not tests:
        return '<section id="tests"><h2>Tests</h2><p>No test ran.</p></section>'
    rows = []
    for t in tests:
        outcome = str(t.get("outcome"))
        cls = "bad" if outcome in FAILING else "running" if outcome == "running" else ""
        message = str(t.get("message") or "")
        first, _, rest = message.partition("\n")
        msg = _e(first) + (f"<details><summary>full message</summary><pre>{_e(message)}</pre></details>"
                           if rest.strip() else "")
        if cls:
            msg += _log_excerpt(t.get("logs") or [])
        duration = t.get("duration_s")
        rows.append((cls, [_td(f"<code>{_e(t.get('id'))}</code>"), _td(f"<strong>{_e(outcome)}</strong>"),
                           _td(f"{duration:.2f} s" if isinstance(duration, int | float) else "—", "num"),
                           _td(msg)]))
    return f'<section id="tests"><h2>Tests</h2>{_table(["test", "outcome", "duration", "message"], rows)}</section>'


def _limits(m: dict[str, Any]) -> str:
    low, high = m.get("low"), m.get("high")
    if low is not None and high is not None:
        return f"{_num(low)} ≤ x ≤ {_num(high)}"
    return f"≥ {_num(low)}" if low is not None else f"≤ {_num(high)}" if high is not None else ""


def _metrics(results: dict[str, Any]) -> str:
    metrics = results.get("metrics") or []
    if not metrics:
        return '<section id="metrics"><h2>Metrics</h2><p>No metric was recorded.</p></section>'
    rows = []
    for m in metrics:
        passed = m.get("passed")
        verdict = '<span class="ok">pass</span>' if passed is True else (
            '<span class="no">FAIL</span>' if passed is False else "—")
        n = len(m.get("values") or [])
        value = _num(m.get("value")) + (f' <span class="note">(n={n})</span>' if n else "")
        rows.append(("bad" if passed is False else "",
                     [_td(f"<code>{_e(m.get('key'))}</code>"), _td(value, "num"), _td(_e(m.get("unit"))),
                      _td(_limits(m)), _td(verdict), _td(_badge(m.get("provenance"))), _td(_e(m.get("detail")))]))
    legend = " ".join(f"{_badge(k)} {escape(v)}." for k, v in plots.PROVENANCE_TEXT.items())
    table = _table(["metric", "value", "unit", "limits", "pass/fail", "provenance", "detail"], rows)
    return f'<section id="metrics"><h2>Metrics</h2><p class="note">{legend}</p>{table}</section>'


def _figure(plot: Plot) -> str:
    name, title = _e(plot.name), _e(plot.title)
    if plot.svg is None:
        return (f'<figure class="plot missing" data-plot="{name}"><h3>{title}</h3>'
                f"<figcaption>{_e(plot.caption)}</figcaption></figure>")
    # The SVG is matplotlib's output: its text is XML-escaped there.
    return (f'<figure class="plot" data-plot="{name}"><h3>{title}</h3>{plot.svg}'
            f"<figcaption>{_e(plot.caption)}</figcaption></figure>")


def _comparison_table(run_dir: Path, comparison: dict[str, Any]) -> str:
    ref, now = comparison.get("reference") or {}, comparison.get("now") or {}
    cls_of = {"regressed": "bad", "improved": "good", "new": "flag", "missing": "flag", "changed": "flag",
              "incomparable": "flag"}
    rows = []
    for r in comparison.get("rows") or []:
        verdict = str(r.get("verdict"))
        rel = r.get("delta_rel")
        delta = _num(r.get("delta")) + (f" ({100 * rel:+.1f}%)" if isinstance(rel, int | float) else "")
        rows.append((cls_of.get(verdict, ""), [
            _td(f"<code>{_e(r.get('key'))}</code>"), _td(_num(r.get("reference")), "num"),
            _td(_num(r.get("now")), "num"), _td(delta, "num"), _td(_e(r.get("unit"))), _td(_e(r.get("tolerance"))),
            _td(f"<strong>{_e(verdict)}</strong>"), _td(_badge(r.get("provenance")))]))
    where = _e(ref.get("path"))
    page = Path(str(ref.get("path") or "")) / PAGE_NAME
    if ref.get("path") and page.is_file():
        where = f'<a href="{escape(quote(Path(os.path.relpath(page, run_dir)).as_posix()))}">{where}</a>'
    head = (f"<p>Reference <code>{_e(ref.get('run_id'))}</code> ({_e(ref.get('target'))}, {_e(ref.get('model'))}; "
            f"{where}) against this run <code>{_e(now.get('run_id'))}</code>: "
            f"<strong>{_e(comparison.get('verdict'))}</strong>, "
            f"{_regressions(comparison)}.</p>")
    table = _table(["metric", "reference", "now", "delta", "unit", "tolerance", "verdict", "provenance"], rows)
    return head + table


def _dl_table(mapping: dict[str, Any]) -> str:
    return _table(["name", "value"], [("", [_td(_e(k)), _td(_e(v))]) for k, v in sorted(mapping.items())])


def _href(run_dir: Path, path: str) -> str | None:
    """A link relative to the run directory, or None for a path outside it."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(run_dir.resolve())
        except ValueError:
            return None
    return None if ".." in p.parts else quote(p.as_posix())


def _artifacts(run_dir: Path, results: dict[str, Any]) -> str:
    listed: dict[str, str] = {}
    for name, what in STANDARD_FILES:
        if (run_dir / name).is_file():
            listed[name] = what
    for a in results.get("artifacts") or []:
        if a.get("path"):
            listed.setdefault(str(a["path"]), str(a.get("what") or ""))
    logs = run_dir / "logs"
    if logs.is_dir():
        for f in sorted(p for p in logs.rglob("*") if p.is_file())[:MAX_LISTED_LOGS]:
            listed.setdefault(f.relative_to(run_dir).as_posix(), "log")
    items = []
    for path, what in listed.items():
        href = _href(run_dir, path)
        link = f'<a href="{escape(href)}">{_e(path)}</a>' if href else f"<code>{_e(path)}</code>"
        items.append(f"<li>{link}{': ' + _e(what) if what else ''}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p>None recorded.</p>"


def _facts(run_dir: Path, results: dict[str, Any]) -> str:
    instruments = [("flag" if i.get("simulated") else "", [
        _td(_e(i.get("idn"))), _td(_e(i.get("driver"))), _td(_e(i.get("resource"))),
        _td(_badge("emulated") + " simulated" if i.get("simulated") else "real instrument")])
        for i in results.get("instruments") or []]
    tools = results.get("tools") or {}
    fw = results.get("firmware") or {}
    parts = ['<section id="facts"><h2>Run facts</h2>',
             f"<p>Command <code>{_e(results.get('command'))}</code>, exit status {_e(results.get('exit_status'))}, "
             f"schema {_e(results.get('schema'))}.</p>",
             "<h3>Instruments</h3>",
             _table(["identity", "driver", "resource", "kind"], instruments) if instruments else "<p>None.</p>",
             "<h3>Firmware</h3>", _dl_table(fw) if fw else "<p>No device reported its firmware.</p>",
             "<h3>Tool versions</h3>",
             f"<details><summary>{len(tools.get('packages') or {})} Python packages</summary>"
             f"{_dl_table(tools.get('packages') or {})}</details>",
             _dl_table(tools.get("tools") or {}),
             "<h3>Host</h3>", _dl_table(results.get("host") or {}),
             "<h3>Options</h3>", _dl_table(results.get("options") or {}),
             "<h3>Artifacts</h3>", _artifacts(run_dir, results), "</section>"]
    return "".join(parts)


def render_page(run_dir: Path, results: dict[str, Any], comparison: dict[str, Any] | None = None,
                history: dict[str, Any] | None = None) -> str:
    """The page's HTML text (write_page writes it)."""
    figures = {p.name: _figure(p) for p in plots.all_plots(results, comparison, history)}
    plots_html = "".join(html for name, html in figures.items() if name not in ("comparison", "history"))
    comp_html = _comparison_table(Path(run_dir), comparison) if comparison else ""
    title = f"{results.get('run_id') or 'run'}: {str(results.get('verdict') or 'unknown').upper()}"
    body = [_verdict(results, comparison), _tests(results), _metrics(results),
            f'<section id="plots"><h2>Plots</h2>{plots_html}</section>',
            f'<section id="comparison"><h2>Comparison with the reference run</h2>{comp_html}'
            f'{figures["comparison"]}</section>',
            f'<section id="history"><h2>History</h2>{figures["history"]}</section>',
            _facts(Path(run_dir), results)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>hil {_e(title)}</title><style>{CSS}</style></head>\n'
            f'<body data-verdict="{_e(results.get("verdict"))}">\n' + "\n".join(body) +
            f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_page(run_dir: Path, results: dict[str, Any], comparison: dict[str, Any] | None = None,
               history: dict[str, Any] | None = None) -> Path:
    """Writes <run_dir>/index.html (atomically) and returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / PAGE_NAME
    tmp = path.with_name(f".{PAGE_NAME}.{os.getpid()}.tmp")
    tmp.write_text(render_page(run_dir, results, comparison, history), encoding="utf-8")
    os.replace(tmp, path)
    return path
