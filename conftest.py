"""Project-wide pytest configuration.

The `hil` plugin itself is loaded through its `pytest11` entry point (pyproject.toml), as it is in any other
repository that installs this package; here we only add pytest's own `pytester` for the plugin's tests.
"""

pytest_plugins = ("pytester",)
