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

# The device model that `hil check`, `hil measure` and the plugin use unless told otherwise.
DEFAULT_MODEL = SYNTHETIC_MODEL
