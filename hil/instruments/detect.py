"""Picking the driver: from a name (`--hil-analyzer n6705c`) or from the instrument's *IDN? reply."""

from __future__ import annotations

import logging

from hil.instruments.base import Identity, InstrumentError, PowerAnalyzer, UnsupportedInstrument
from hil.instruments.k2280s import K2280S
from hil.instruments.n6705c import N6705C
from hil.instruments.ngm202 import NGM202
from hil.instruments.open import open_resource
from hil.instruments.scpi import ScpiSession

log = logging.getLogger("hil.instruments")

DRIVERS: dict[str, type[PowerAnalyzer]] = {"n6705c": N6705C, "ngm202": NGM202, "k2280s": K2280S}
ALIASES = {
    "n6705": "n6705c", "n6705a": "n6705c", "n6705b": "n6705c", "keysight": "n6705c",
    "ngm": "ngm202", "ngm201": "ngm202", "rohde": "ngm202", "rs": "ngm202",
    "2280s": "k2280s", "2281s": "k2280s", "keithley": "k2280s",
}


def driver_by_name(name: str) -> type[PowerAnalyzer]:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DRIVERS:
        raise UnsupportedInstrument(name, "--hil-analyzer", f"unknown analyzer driver; choose one of "
                                                            f"{', '.join(DRIVERS)}")
    return DRIVERS[key]


def driver_for_idn(identity: Identity | str) -> type[PowerAnalyzer]:
    if isinstance(identity, str):
        identity = Identity.from_idn(identity)
    for driver in DRIVERS.values():
        if driver.handles(identity):
            return driver
    raise UnsupportedInstrument(str(identity), "*IDN?", f"no driver for model {identity.model!r}; name one with "
                                                        f"--hil-analyzer ({', '.join(DRIVERS)})")


def open_analyzer(
    resource_name: str,
    driver: str | None = None,
    *,
    backend: str | None = None,
    timeout_s: float = 5.0,
    channel: int = 1,
) -> PowerAnalyzer:
    """Opens `resource_name`, asks *IDN? and returns the named driver, or the one that recognizes the reply."""
    session = ScpiSession(open_resource(resource_name, backend=backend, timeout_s=timeout_s), timeout_s=timeout_s)
    try:
        identity = session.identify()
        if driver and driver.lower() != "auto":
            cls = driver_by_name(driver)
            if not cls.handles(identity):
                log.warning("%s answers *IDN? with %s; using the %s driver as asked", resource_name, identity,
                            cls.driver_name)
        else:
            cls = driver_for_idn(identity)
        analyzer = cls(session, identity, channel)
    except BaseException:
        session.close()
        raise
    log.info("power analyzer %s: %s", analyzer.name, identity)
    return analyzer


__all__ = ["DRIVERS", "InstrumentError", "driver_by_name", "driver_for_idn", "open_analyzer"]
