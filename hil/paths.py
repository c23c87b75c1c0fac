"""Where the project's files are. The plugin also works from other repositories, which pass paths explicitly."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEVICE_FW = PROJECT_ROOT / "device_fw"
MODELS = PROJECT_ROOT / "models"
FIXTURES = PROJECT_ROOT / "fixtures"
REPORTS = PROJECT_ROOT / "reports"
BUILD = DEVICE_FW / "build"

# The device model that `hil check` and the plugin use unless told otherwise. A random-weights stand-in with
# the AgileNN extractor's shape until the trained model is exported.
DEFAULT_MODEL = MODELS / "synthetic-extractor"
