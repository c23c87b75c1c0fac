"""pytest plugin (entry point `pytest11: hil`): options and the fixture chain model -> firmware -> target -> dut.

    pytest --hil-target qemu                       # the emulated default: CI, no board needed
    pytest --hil-target esp32s3 --hil-port /dev/ttyUSB0 --hil-baud 2000000 --hil-fw device_fw/ports/esp32s3/build
    pytest --hil-bench fixtures/benches/esp32s3-n6705c.yaml    # the same from a bench file

Explicit options win over the bench file, which wins over the defaults. Every option has an ini equivalent
(`hil_target = qemu` in pytest.ini / [tool.pytest.ini_options]). The `dut` fixture is session-scoped: a board
is flashed and reset once per session, not once per test. Each test that uses the device gets its own log file
with the protocol traffic under <report dir>/logs/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hil import paths
from hil.bench import Bench, BenchError, load_bench
from hil.dut import TARGETS, Dut, DutOptions, open_dut
from hil.model.artifacts import DeviceModel, resolve_model
from hil.plugin.options import _BENCH_KEY, _FLAGS, _OPTIONS, _get, _int_option, faults, flash_settings
from hil.targets.registry import SERIAL_TARGETS

if TYPE_CHECKING:  # the power analyzer section at the end imports these lazily
    from hil.accuracy.subset import ImageSet  # the accuracy section
    from hil.firmware.flashimage.flasher import Flasher  # the flashing section
    from hil.measure.run import AnalyzerHandle
    from hil.server.client import ModelInfo, RemoteClient, RemoteResult  # the remote model server section
    from hil.server.service import RemoteServer

# The plugin's other modules: the run record (journal, results, report files) and its hil_results fixture;
# the unattended-run hooks (per-test timeout, device loss and restart).
pytest_plugins = ("hil.plugin.runs", "hil.plugin.device_health")

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    for flag, ini, help_text, _default in _OPTIONS:
        group.addoption(flag, dest=ini, default=None, help=help_text)
        parser.addini(ini, help_text, default=None)
    group.addoption("--hil-no-flash", dest="hil_no_flash", action="store_true", default=False,
                    help="esp32s3: use the firmware already on the board (still checked by model sha256)")


def pytest_configure(config: pytest.Config) -> None:
    bench_file = _get(config, "hil_bench")
    if bench_file:
        try:
            config.stash[_BENCH_KEY] = load_bench(bench_file)
        except BenchError as exc:
            raise pytest.UsageError(f"--hil-bench: {exc}") from None
    target = _get(config, "hil_target")
    if target not in TARGETS:
        raise pytest.UsageError(f"--hil-target: unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    if target in SERIAL_TARGETS and not _get(config, "hil_port"):
        raise pytest.UsageError(f"--hil-target {target} needs --hil-port (e.g. /dev/ttyUSB0 or rfc2217://host:4000)")
    _int_option(config, "hil_baud")  # hil_images ("all" or N) is checked in the accuracy section below
    faults(config)  # a malformed --hil-faults spec is a usage error before any test runs


@pytest.fixture(scope="session")
def hil_options(pytestconfig: pytest.Config, hil_run_dir: Path) -> DutOptions:
    fw = _get(pytestconfig, "hil_fw")
    return DutOptions(
        target=_get(pytestconfig, "hil_target"),
        port=_get(pytestconfig, "hil_port"),
        baud=_int_option(pytestconfig, "hil_baud"),
        firmware=Path(fw) if fw else None,
        flash=not pytestconfig.getoption("hil_no_flash") and _bench_flash(pytestconfig),
        log_dir=hil_run_dir / "logs",
        timeout_s=float(_get(pytestconfig, "hil_timeout")),
        flash_image=Path(image) if (image := _get(pytestconfig, "hil_flash_image")) else None,
        flash_settings=flash_settings(pytestconfig),
        faults=faults(pytestconfig),
    )


def _bench_flash(config: pytest.Config) -> bool:
    bench = config.stash.get(_BENCH_KEY, None)
    return bench.flash if bench is not None else True


@pytest.fixture(scope="session")
def hil_bench(pytestconfig: pytest.Config) -> Bench | None:
    """The bench description given with --hil-bench (resources such as the power analyzer), or None."""
    return pytestconfig.stash.get(_BENCH_KEY, None)


@pytest.fixture(scope="session")
def hil_images(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> int:
    if _images_setting(pytestconfig) == "all":  # as many as the whole test set has (accuracy section below)
        return len(request.getfixturevalue("hil_dataset"))
    return _int_option(pytestconfig, "hil_images")


@pytest.fixture(scope="session")
def hil_model(pytestconfig: pytest.Config) -> DeviceModel:
    """The device model: a model directory (model.tflite + generated hil_model.c) or a .tflite."""
    raw = _get(pytestconfig, "hil_model")
    return resolve_model(Path(raw) if raw else paths.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def hil_reference(hil_model: DeviceModel):
    """TensorFlow Lite Micro running the same .tflite: the golden int8 outputs."""
    from hil.model.reference import TflmReference

    return TflmReference(hil_model.tflite_bytes)


@pytest.fixture(scope="session")
def dut(request: pytest.FixtureRequest, hil_model: DeviceModel, hil_options: DutOptions) -> Iterator[Dut]:
    """The device under test, started once per session and checked to run `hil_model`. When it dies or stops
    answering, the test in progress fails and the same Dut is restarted in place before the next test that uses
    it (hil/plugin/device_health.py)."""
    from hil.plugin.device_health import register_dut, unregister_dut

    device = open_dut(hil_model, hil_options)
    register_dut(request.config, device)
    try:
        yield device
    finally:
        unregister_dut(request.config, device)
        device.close()


# ---------------------------------------------------------------------------------------------------------------
# Power analyzer and measurement results (hil.instruments, hil.measure)
# ---------------------------------------------------------------------------------------------------------------

def _analyzer_setting(config: pytest.Config, ini: str) -> str | None:
    """--hil-visa / --hil-analyzer, else the ini key, else the bench's power_analyzer entry."""
    value = _get(config, ini)
    bench = config.stash.get(_BENCH_KEY, None)
    if value is None and bench is not None and bench.power_analyzer is not None:
        value = bench.power_analyzer.visa if ini == "hil_visa" else bench.power_analyzer.model
    return value


@pytest.fixture(scope="session")
def power_analyzer(pytestconfig: pytest.Config) -> Iterator[AnalyzerHandle]:
    """The power analyzer powering the DUT (an `hil.measure.run.AnalyzerHandle`): the VISA instrument named by
    --hil-visa or the bench file, else the simulated N6705C on a loopback port, which synthesizes its traces from
    the inferences the test reports to `handle.activity` (hil.measure.run.measure does that)."""
    from hil.measure.run import open_power_analyzer

    bench = pytestconfig.stash.get(_BENCH_KEY, None)
    channel = bench.power_analyzer.channel if bench is not None and bench.power_analyzer is not None else 1
    handle = open_power_analyzer(
        _analyzer_setting(pytestconfig, "hil_visa"), _analyzer_setting(pytestconfig, "hil_analyzer"),
        channel=channel, timeout_s=float(_get(pytestconfig, "hil_timeout")),
    )
    try:
        yield handle
    finally:
        handle.close()


# ---------------------------------------------------------------------------------------------------------------
# Remote model server (hil.server): --hil-server and the `remote_model` fixture
# ---------------------------------------------------------------------------------------------------------------
# Hook implementations under their own names (specname), so this section adds to the plugin's options and
# configure checks without touching the ones above.

_SERVER_HELP = ("remote model server as host:port (hil serve); default: start one in-process for the model "
                "directory of --hil-model")


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_remote_server(parser: pytest.Parser) -> None:
    parser.getgroup("hil", "hardware-in-the-loop").addoption(
        "--hil-server", dest="hil_server", default=None, metavar="HOST:PORT", help=_SERVER_HELP)
    parser.addini("hil_server", _SERVER_HELP, default=None)


def _server_address(config: pytest.Config) -> tuple[str, int] | None:
    from hil.server.client import parse_address

    raw = config.getoption("hil_server") or config.getini("hil_server")
    if not raw:
        return None
    try:
        return parse_address(str(raw))
    except ValueError as exc:
        raise pytest.UsageError(f"--hil-server: {exc}") from None


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_remote_server(config: pytest.Config) -> None:
    _server_address(config)  # a malformed host:port is a usage error at start, not a fixture error later


@dataclass
class RemoteModelHandle:
    """What `remote_model` yields: a client of the server, its address, and the served entry of the session's
    device model (the server keys models by the sha256 of model.tflite, so this is the Remote NN trained with
    the device part under test)."""

    client: RemoteClient
    address: tuple[str, int]
    model: ModelInfo
    server: RemoteServer | None  # the in-process server, None when --hil-server named a running one

    @property
    def url(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def infer(self, payload: bytes, n_values: int | None = None, bits: int | None = None) -> RemoteResult:
        """Remote logits of one compressed payload for the session's model (n_values and bits: the model's)."""
        return self.client.infer(self.model.sha256, payload,
                                 self.model.n_values if n_values is None else n_values,
                                 self.model.bits if bits is None else bits)


@pytest.fixture(scope="session")
def remote_model(pytestconfig: pytest.Config, hil_model: DeviceModel) -> Iterator[RemoteModelHandle]:
    """The Remote NN of the session's model behind a real TCP server: the server given by --hil-server, else one
    started in this process on 127.0.0.1 (any free port) for the model directory of `hil_model`. Skips when
    that directory has no remote model (agilenn.json + remote.keras), as the synthetic stand-in."""
    from hil.errors import ServerError
    from hil.server.client import RemoteClient
    from hil.server.remote_model import RemoteModel, missing_files
    from hil.server.service import RemoteServer, ServerConfig

    timeout_s = float(_get(pytestconfig, "hil_timeout"))
    address = _server_address(pytestconfig)
    server: RemoteServer | None = None
    if address is None:
        model_dir = hil_model.tflite_path.parent
        missing = missing_files(model_dir)
        if missing:
            pytest.skip(f"model '{hil_model.name}' ({model_dir}) has no remote model (lacks {', '.join(missing)}); "
                        "use --hil-model with an AgileNN export, or --hil-server HOST:PORT")
        server = RemoteServer([RemoteModel.load(model_dir)], ServerConfig(host="127.0.0.1", port=0)).start()
        address = server.address
    client = RemoteClient(*address, timeout=timeout_s)
    try:
        try:
            info = client.info()
        except ServerError as exc:  # names the server: unreachable, dropped, timed out, or an error reply
            pytest.fail(str(exc), pytrace=False)
        model = info.model(hil_model.sha256)
        if model is None:
            served = ", ".join(f"{m.name} ({m.sha256[:16]})" for m in info.models) or "nothing"
            pytest.fail(f"remote model server {address[0]}:{address[1]} does not serve {hil_model.name} "
                        f"(model.tflite sha256 {hil_model.sha256[:16]}); it serves {served}", pytrace=False)
        yield RemoteModelHandle(client, address, model, server)
    finally:
        client.close()
        if server is not None:
            server.close()


# ---------------------------------------------------------------------------------------------------------------
# Accuracy checks (hil.accuracy): --hil-images all, --hil-data and the `hil_dataset` fixture
# ---------------------------------------------------------------------------------------------------------------

_DATA_HELP = ("data set of --hil-images all (or N beyond the committed subset): a .npz with x_test/y_test or an "
              "image folder (default: ../shared/datasets/cifar10/cifar10.npz)")


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_accuracy(parser: pytest.Parser) -> None:
    parser.getgroup("hil", "hardware-in-the-loop").addoption(
        "--hil-data", dest="hil_data", default=None, metavar="PATH", help=_DATA_HELP)
    parser.addini("hil_data", _DATA_HELP, default=None)


def _images_setting(config: pytest.Config) -> int | str | None:
    """--hil-images as given: "all", a whole number >= 1, or None when neither the option nor the ini key is set
    (then the bit-exact tests use the default 200 and `hil_dataset` the whole committed subset)."""
    raw = config.getoption("hil_images") or config.getini("hil_images")
    if raw is None or str(raw).strip() == "":
        return None
    text = str(raw).strip()
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"hil-images: '{raw}' is not a whole number or 'all'") from None
    if value < 1:
        raise pytest.UsageError(f"hil-images: {value} is not at least 1")
    return value


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_accuracy(config: pytest.Config) -> None:
    _images_setting(config)  # a malformed --hil-images is a usage error at start


@pytest.fixture(scope="session")
def hil_dataset(pytestconfig: pytest.Config) -> ImageSet:
    """Labelled test images (`hil.accuracy.subset.ImageSet`: uint8 x, labels, test-set indices, source) for the
    accuracy checks: by default the committed 500-image CIFAR-10 subset (fixtures/cifar10/, 50 byte-exact images
    per class); --hil-images N: its first N (class-balanced for multiples of 10; beyond 500, the first N of the
    data set's test set); --hil-images all: the whole test set of --hil-data."""
    from hil.accuracy.subset import SubsetError, select_images

    data = pytestconfig.getoption("hil_data") or pytestconfig.getini("hil_data") or None
    try:
        return select_images(_images_setting(pytestconfig), Path(data) if data else None)
    except SubsetError as exc:
        pytest.fail(f"hil_dataset: {exc}", pytrace=False)


# ---------------------------------------------------------------------------------------------------------------
# Flashing (hil.firmware.flashimage.flasher): --hil-reflash, --hil-erase-all and the `flasher` fixture; the other
# flash options (--hil-flash-baud, --hil-before, --hil-after, --hil-flash-image) are rows of _OPTIONS
# ---------------------------------------------------------------------------------------------------------------


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_flashing(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    for flag, ini, help_text in _FLAGS:
        group.addoption(flag, dest=ini, action="store_true", default=False, help=help_text)
        parser.addini(ini, help_text, type="bool", default=False)


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_flashing(config: pytest.Config) -> None:
    flash_settings(config)  # a malformed --hil-flash-baud/--hil-before/--hil-after is a usage error at start


@pytest.fixture(scope="session")
def flasher(hil_model: DeviceModel, hil_options: DutOptions) -> Flasher:
    """Flashes builds to the session's target with esptool (`write-flash --skip-flashed` at --hil-flash-baud, with
    --hil-reflash, --hil-erase-all, --hil-before/--hil-after): a board on --hil-port, or an emulated target's flash
    image (--hil-flash-image, else <build cache>/flash/<target>-flash.bin) through the emulated ROM loader.
    `flasher.flash(build=None)` flashes --hil-fw (a build directory), else the emulated build of the session's
    model, writes the merged image and returns a FlashResult (time, regions written and skipped, merged sha256)."""
    from hil.firmware.flashimage.flasher import Flasher, FlashSettings

    return Flasher(hil_options.target, hil_options.flash_settings or FlashSettings(), port=hil_options.port,
                   flash_image=hil_options.flash_image, model_dir=hil_model.c_dir, build=hil_options.firmware)
