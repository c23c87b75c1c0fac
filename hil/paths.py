"""Where the project's files are. The plugin also works from other repositories, which pass paths explicitly."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEVICE_FW = PROJECT_ROOT / "device_fw"
MODELS = PROJECT_ROOT / "models"
FIXTURES = PROJECT_ROOT / "fixtures"
REPORTS = PROJECT_ROOT / "reports"
BUILD = DEVICE_FW / "build"

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
