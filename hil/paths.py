"""Where the project's files are. The plugin also works from other repositories, which pass paths explicitly.

Two layouts, found from where this package is:
- a source checkout (also what an editable install runs from): hil/ sits next to pyproject.toml and device_fw/;
  every path is under the repository root (PROJECT_ROOT), as the repository lays it out;
- an installed wheel (no checkout): the firmware sources, the default model and the fixtures are package data
  under hil/_data/ (pyproject.toml maps them there), which then plays the project root's part. Site-packages may
  be read-only, so the writable caches (BUILD: firmware builds, compiled .tflite files) go to a user cache
  directory: $HIL_CACHE_DIR, else $XDG_CACHE_HOME/hil, else ~/.cache/hil; REPORTS is ./reports under the
  working directory (at import).
$HIL_CACHE_DIR, when set, holds the caches in a checkout too. Files are read from the package directory, never
from a zip: make needs real files.
"""

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
IS_CHECKOUT = (_PACKAGE.parent / "pyproject.toml").is_file() and (_PACKAGE.parent / "device_fw").is_dir()
PROJECT_ROOT = _PACKAGE.parent if IS_CHECKOUT else _PACKAGE / "_data"
DEVICE_FW = PROJECT_ROOT / "device_fw"
MODELS = PROJECT_ROOT / "models"
FIXTURES = PROJECT_ROOT / "fixtures"
REPORTS = PROJECT_ROOT / "reports" if IS_CHECKOUT else Path.cwd() / "reports"


def _cache_dir() -> Path:
    if os.environ.get("HIL_CACHE_DIR"):
        return Path(os.environ["HIL_CACHE_DIR"]).resolve()
    if IS_CHECKOUT:
        return DEVICE_FW / "build"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "hil"


# Writable caches: firmware builds (BUILD / "firmware"), .tflite files compiled on demand (BUILD / "models").
BUILD = _cache_dir()
# The HIL suite (hil/suite/test_*.py): ships inside the package, so `hil run` works from any directory.
SUITE = _PACKAGE / "suite"

# A random-weights model with the AgileNN extractor's shape (`hil synth`): the compiler's and kernels' fixed
# test case, independent of training.
SYNTHETIC_MODEL = MODELS / "synthetic-extractor"


def display(path: Path | str, outside: str = "path") -> str:
    """`path` relative to the project root (POSIX) when inside it; outside, the whole path, or only its name
    with outside="name" (what committed files such as model cards carry: no machine paths)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return path.name if outside == "name" else str(path)


# The device model that `hil check`, `hil measure` and the plugin use unless told otherwise.
DEFAULT_MODEL = SYNTHETIC_MODEL
