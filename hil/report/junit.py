"""junit.xml for CI dashboards, rebuilt from the run's summary: one <testcase> per test, every metric a
<property> of the test that recorded it (value, unit, provenance, limits), the device log excerpts as
<system-out>."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# XML 1.0 allows tab, newline, carriage return and these ranges; a device's log can hold anything (ANSI colour
# escapes, NULs, boot-ROM noise at the wrong baud rate), shown as \xNN instead.
_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: object) -> str:
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if text is None else str(text))


_OUTCOME_TAG = {"failed": "failure", "error": "error", "running": "error", "skipped": "skipped",
                "xfailed": "skipped"}


def _classname_and_name(nodeid: str) -> tuple[str, str]:
    path, _, name = nodeid.rpartition("::")
    return (path.replace("/", ".").removesuffix(".py") or "hil", name or nodeid)


def _metric_text(m: dict[str, Any]) -> str:
    value = "null" if m.get("value") is None else f"{m['value']:.6g}"
    limits = ""
    if m.get("low") is not None or m.get("high") is not None:
        low = "-inf" if m.get("low") is None else f"{m['low']:g}"
        high = "inf" if m.get("high") is None else f"{m['high']:g}"
        limits = f" limits [{low}, {high}] {'PASS' if m.get('passed') else 'FAIL'}"
    return f"{value} {m.get('unit', '')} ({m.get('provenance')}){limits}"


def write_junit(results: dict[str, Any], path: Path) -> Path:
    tests = results.get("tests", [])
    metrics_by_test: dict[str | None, list[dict[str, Any]]] = {}
    for m in results.get("metrics", []):
        metrics_by_test.setdefault(m.get("test"), []).append(m)
    counts = {"tests": len(tests), "failures": 0, "errors": 0, "skipped": 0}
    suite = ET.Element("testsuite", name=xml_text(f"hil {results.get('run_id')}"),
                       timestamp=results.get("started") or "", hostname=xml_text((results.get("host") or {}).get(
                           "hostname", "")))
    props = ET.SubElement(suite, "properties")
    for key, value in (("run_id", results.get("run_id")), ("verdict", results.get("verdict")),
                       ("target", (results.get("target") or {}).get("name")),
                       ("target_provenance", (results.get("target") or {}).get("provenance")),
                       ("model", (results.get("model") or {}).get("name")),
                       ("model_sha256", (results.get("model") or {}).get("sha256")),
                       ("git_revision", (results.get("git") or {}).get("revision")),
                       ("git_dirty", (results.get("git") or {}).get("dirty")),
                       ("firmware_build_id", (results.get("firmware") or {}).get("build_id"))):
        ET.SubElement(props, "property", name=key, value=xml_text(value))
    total_time = 0.0
    for t in tests:
        classname, name = _classname_and_name(t["id"])
        duration = float(t.get("duration_s") or 0.0)
        total_time += duration
        case = ET.SubElement(suite, "testcase", classname=xml_text(classname), name=xml_text(name),
                             time=f"{duration:.3f}")
        metrics = metrics_by_test.get(t["id"], [])
        if metrics:
            case_props = ET.SubElement(case, "properties")
            for m in metrics:
                ET.SubElement(case_props, "property", name=xml_text(m["key"]), value=xml_text(_metric_text(m)))
        tag = _OUTCOME_TAG.get(t.get("outcome", ""))
        if tag is not None:
            message = t.get("message") or ("never finished: the run ended while it was running"
                                            if t.get("outcome") == "running" else "")
            el = ET.SubElement(case, tag, message=xml_text(message.splitlines()[0][:300] if message else ""))
            el.text = xml_text(message)
            counts["skipped" if tag == "skipped" else "failures" if tag == "failure" else "errors"] += 1
        logs = t.get("logs") or []
        if logs:
            out = ET.SubElement(case, "system-out")
            out.text = xml_text("\n\n".join(f"--- {log.get('source')} ---\n{log.get('text', '')}" for log in logs))
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
    return path
