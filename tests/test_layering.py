"""The import arrows between hil's AgileNN layers point down (read from the source with `ast`, so imports inside
functions and under TYPE_CHECKING count as much as those at the top):

    hil.stats, hil.agilenn, hil.datasets        shared below everything: statistics, Quant, the custom Keras
                                                layers, data sets (no training, export, server or accuracy code)
    hil.model                                   the device compiler and reference interpreter
    hil.train                                   training: reads model facts and data, never export or above
    hil.export                                  export (and the fine-tuning that needs the int8 device path):
                                                reads trained runs; never the server or the accuracy job
    hil.server                                  the remote model server: loads exports, never training code
    hil.accuracy                                the accuracy job: exports + server + device, never training code
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HIL = Path(__file__).resolve().parents[1] / "hil"

# package (or module) -> the hil packages it must not import, directly or from any submodule.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "hil.stats": ("hil",),  # numpy only
    "hil.agilenn": ("hil.train", "hil.export", "hil.server", "hil.accuracy", "hil.model", "hil.datasets"),
    "hil.datasets": ("hil.train", "hil.export", "hil.server", "hil.accuracy", "hil.model", "hil.agilenn"),
    "hil.model": ("hil.train", "hil.export", "hil.server", "hil.accuracy"),
    "hil.train": ("hil.export", "hil.server", "hil.accuracy"),
    "hil.export": ("hil.server", "hil.accuracy"),
    "hil.server": ("hil.train", "hil.export", "hil.accuracy"),
    "hil.accuracy": ("hil.train",),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every module `path` imports, relative imports resolved; `from a import b` gives
    a.b (b may be a submodule), and importlib.import_module("...") with a literal counts too."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
            out.append((node.lineno, base))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.lineno, node.args[0].value))
    return out


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path) -> list[str]:
    """'file:line: importer imports imported' for every import FORBIDDEN rules out, under root/hil."""
    found = []
    for path in sorted((root / "hil").rglob("*.py")):
        importer = module_name(path, root)
        rules = [banned for layer, banned in FORBIDDEN.items() if within(importer, layer)]
        for line, imported in imported_modules(path, root):
            for banned in (b for bs in rules for b in bs):
                # hil.stats bans all of "hil" but may of course import itself.
                if within(imported, banned) and not within(imported, importer):
                    found.append(f"{path.relative_to(root)}:{line}: {importer} imports {imported}")
    return sorted(set(found))


def test_every_layer_named_in_the_rules_exists():
    for layer in FORBIDDEN:
        rel = Path(*layer.split("."))
        assert (HIL.parent / rel).is_dir() or (HIL.parent / rel).with_suffix(".py").is_file(), layer


def test_imports_point_down_the_layers():
    assert violations(HIL.parent) == []


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_check_finds_upward_imports_wherever_they_hide(tmp_path):
    for pkg in ("hil", "hil/train", "hil/export", "hil/server", "hil/accuracy", "hil/agilenn"):
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "hil/stats.py", "from hil.export.common import pct\n")
    _write(tmp_path, "hil/train/lazy.py", """\
        def f():
            from hil.export.agilenn import DeviceIO  # hidden in a function
            return DeviceIO
        """)
    _write(tmp_path, "hil/export/typed.py", """\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from hil.accuracy.job import AgileSpec
        """)
    _write(tmp_path, "hil/export/relative.py", "from ..server import client\n")
    _write(tmp_path, "hil/server/plain.py", "import hil.train.layers\nfrom hil import train\n")
    _write(tmp_path, "hil/accuracy/dynamic.py", "import importlib\nimportlib.import_module('hil.train.data')\n")
    _write(tmp_path, "hil/agilenn/up.py", "from hil.train.config import TrainConfig\n")
    # Allowed: downward arrows and imports inside the same layer.
    _write(tmp_path, "hil/accuracy/ok.py", "from hil.export.agilenn import x\nfrom hil.server import client\n")
    _write(tmp_path, "hil/export/ok.py", "from hil.train.layers import x\nfrom . import common\nimport hil.stats\n")
    _write(tmp_path, "hil/server/ok.py", "import hil.agilenn.layers\n")
    found = violations(tmp_path)
    assert found == [
        "hil/accuracy/dynamic.py:2: hil.accuracy.dynamic imports hil.train.data",
        "hil/agilenn/up.py:1: hil.agilenn.up imports hil.train.config",
        "hil/agilenn/up.py:1: hil.agilenn.up imports hil.train.config.TrainConfig",
        "hil/export/relative.py:1: hil.export.relative imports hil.server",
        "hil/export/relative.py:1: hil.export.relative imports hil.server.client",
        "hil/export/typed.py:3: hil.export.typed imports hil.accuracy.job",
        "hil/export/typed.py:3: hil.export.typed imports hil.accuracy.job.AgileSpec",
        "hil/server/plain.py:1: hil.server.plain imports hil.train.layers",
        "hil/server/plain.py:2: hil.server.plain imports hil.train",
        "hil/stats.py:1: hil.stats imports hil.export.common",
        "hil/stats.py:1: hil.stats imports hil.export.common.pct",
        "hil/train/lazy.py:2: hil.train.lazy imports hil.export.agilenn",
        "hil/train/lazy.py:2: hil.train.lazy imports hil.export.agilenn.DeviceIO",
    ]


@pytest.mark.parametrize("module", ["hil.accuracy.job", "hil.export.agilenn", "hil.server", "hil.agilenn.quant"])
def test_the_shared_modules_and_the_exporter_import_without_tensorflow(module):
    """The custom Keras layers (TensorFlow) are imported where a model is loaded, not at import time."""
    code = f"import sys, {module}; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
