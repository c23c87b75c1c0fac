"""What a run ran on: git revision of the code under test, tool and package versions, the host machine.

Each probe has a short timeout and a missing tool is recorded as missing, never as an error: a run record must
be made even on a machine without git or QEMU.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("hil", "numpy", "pytest", "pyserial", "esptool", "pyvisa", "pyvisa-py", "tflite-micro",
            "ai-edge-litert", "tensorflow-cpu", "tensorflow", "pytest-xdist", "pytest-timeout", "prometheus-client",
            "matplotlib")
TOOLS = {  # tool -> its version flag; the first line of the answer is kept
    "qemu-system-xtensa": "--version",
    "xtensa-lx106-elf-gcc": "--version",
    "cc": "--version",
    "make": "--version",
    "idf.py": "--version",
}
PROBE_TIMEOUT_S = 5.0


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(path: Path | str) -> dict[str, Any]:
    """Revision, dirty flag and branch of the git work tree holding `path`; {"revision": None} outside one."""
    path = Path(path)
    if shutil.which("git") is None:
        return {"revision": None, "dirty": None, "note": "git not installed"}
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=path)
    if top is None:
        return {"revision": None, "dirty": None, "note": f"{path} is not in a git work tree"}
    revision = _run(["git", "rev-parse", "HEAD"], cwd=path)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path)
    branch = _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=path)
    return {"revision": revision, "dirty": None if status is None else bool(status), "branch": branch,
            "work_tree": top}


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for tool, flag in TOOLS.items():
        if shutil.which(tool) is None:
            versions[tool] = None
            continue
        out = _run([tool, flag])
        versions[tool] = out.splitlines()[0] if out else "present (no version answer)"
    return versions


def host_facts() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "ci": bool(os.environ.get("CI")),
    }


def environment(code_dir: Path | str) -> dict[str, Any]:
    """Everything above, for a run_start record: git of `code_dir` and of the hil package itself."""
    from hil import paths

    hil_git = git_state(paths.PROJECT_ROOT) if (paths.PROJECT_ROOT / ".git").exists() else None
    return {
        "git": git_state(code_dir),
        "hil_git": hil_git,
        "packages": package_versions(),
        "tools": tool_versions(),
        "host": host_facts(),
    }
