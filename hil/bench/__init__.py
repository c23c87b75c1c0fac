"""`hil bench`: benchmarks of the device and the AgileNN comparison; plus bench descriptions (bench YAML files)."""

# hil/bench.py (bench descriptions, used by the plugin and bench files) lives on as hil/bench/descriptions.py: a
# package named hil.bench shadows a module of the same name, so its public names are re-exported here.
from hil.bench.descriptions import (  # noqa: F401
    KNOWN_TARGETS,
    SERIAL_TARGETS,
    Bench,
    BenchError,
    MarkerResource,
    PowerAnalyzerResource,
    SerialResource,
    load_bench,
)
