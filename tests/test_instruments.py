"""Each driver's command sequence against its pyvisa-sim instrument (fixtures/instruments/*.yaml), driver
selection, and the timeout and error paths. pyvisa-sim answers only the exact strings in the fixture and puts
any other command into the error queue, so a driver that sends a wrong command fails its SYST:ERR? check."""

import time

import numpy as np
import pytest

from hil import paths
from hil.instruments import CaptureConfig, InstrumentError, InstrumentTimeout, open_analyzer
from hil.instruments.base import Identity, UnsupportedInstrument
from hil.instruments.detect import driver_by_name, driver_for_idn
from hil.instruments.k2280s import K2280S
from hil.instruments.n6705c import N6705C
from hil.instruments.ngm202 import NGM202, fastlog_rate_for
from hil.instruments.open import default_backend, open_resource
from hil.instruments.scpi import ScpiSession, parse_error

FIXTURES = paths.FIXTURES / "instruments"
N6705C_OK, N6705C_RANGE_ERROR, N6705C_STUCK = (f"TCPIP0::192.0.2.{n}::inst0::INSTR" for n in (10, 11, 12))
NGM_OK, NGM_NO_DATA = "TCPIP0::192.0.2.20::inst0::INSTR", "TCPIP0::192.0.2.21::inst0::INSTR"
K2280S_OK = "TCPIP0::192.0.2.30::inst0::INSTR"
A_LOW, A_HIGH, VOLTS = 0.04987744987010956, 0.05110293999314308, 3.2832109928131104  # the fixtures' floats


def sim(name: str) -> str:
    return f"{FIXTURES / name}.yaml@sim"


def commands(analyzer) -> list[str]:
    """What the driver sent, without the SYST:ERR? after each write."""
    return [c for c in analyzer.session.history if c != "SYST:ERR?"]


@pytest.mark.parametrize("idn, driver", [
    ("Keysight Technologies,N6705C,MY56001234,D.03.05.3", N6705C),
    ("Agilent Technologies,N6705B,MY50001234,D.01.09", N6705C),
    ("Rohde&Schwarz,NGM202,3638.4472k02/101234,03.034", NGM202),
    ("Rohde&Schwarz,NGU401,3639.3763k04/100123,01.200", NGM202),
    ("KEITHLEY INSTRUMENTS,MODEL 2280S-32-6,4400001,1.02.10b", K2280S),
])
def test_driver_is_picked_from_idn(idn, driver):
    assert driver_for_idn(idn) is driver


def test_unknown_instrument_and_driver_names_are_clear_errors():
    with pytest.raises(UnsupportedInstrument, match="no driver for model 'DP832'.*--hil-analyzer"):
        driver_for_idn("RIGOL TECHNOLOGIES,DP832,DP8C1234,00.01.14")
    with pytest.raises(UnsupportedInstrument, match="unknown analyzer driver"):
        driver_by_name("joulescope")
    assert driver_by_name("Keithley") is K2280S and driver_by_name("N6705B") is N6705C


def test_n6705c_digitizer_sequence_with_external_trigger():
    analyzer = open_analyzer(N6705C_OK, backend=sim("n6705c"))
    assert isinstance(analyzer, N6705C) and analyzer.module == "N6781A"
    assert analyzer.name == f"N6705C MY56001234 at {N6705C_OK}"
    config = analyzer.configure(CaptureConfig(sample_interval_s=20.48e-6, points=4, pretrigger_points=1,
                                              trigger="external", trigger_pin=1))
    analyzer.arm()
    trace = analyzer.fetch(timeout_s=2.0)
    assert commands(analyzer) == [
        "*IDN?", "SYST:CHAN:MOD? (@1)", "*CLS",
        "SENS:FUNC:CURR ON,(@1)", "SENS:FUNC:VOLT ON,(@1)", "SENS:CURR:RANG:AUTO ON,(@1)",
        "SENS:SWE:TINT 2.048E-05,(@1)", "SENS:SWE:POIN 4,(@1)", "SENS:SWE:OFFS:POIN -1,(@1)",
        "DIG:PIN1:FUNC TINP", "DIG:PIN1:POL POS", "TRIG:ACQ:SOUR PIN1,(@1)", "FORM REAL", "FORM:BORD NORM",
        "SENS:SWE:TINT? (@1);:SENS:SWE:POIN? (@1);:SENS:SWE:OFFS:POIN? (@1)",  # one message, one reply
        "INIT:ACQ (@1)", "FETC:ARR:CURR? (@1)", "FETC:ARR:VOLT? (@1)",
    ]
    # every write was followed by an error check
    history = list(analyzer.session.history)
    assert all(history[i + 1] == "SYST:ERR?" for i, c in enumerate(history) if c.startswith(("SENS:FUNC", "DIG")))
    assert config.pretrigger_points == 1 and config.sample_interval_s == pytest.approx(20.48e-6)
    np.testing.assert_allclose(trace.current, [A_LOW, A_LOW, A_HIGH, A_HIGH])  # big-endian float32 block
    np.testing.assert_allclose(trace.voltage, [VOLTS] * 4)
    assert trace.t0 == pytest.approx(-20.48e-6) and trace.dt == pytest.approx(20.48e-6)
    analyzer.close()


def test_n6705c_software_trigger_and_fixed_range():
    with open_analyzer(N6705C_OK, "n6705c", backend=sim("n6705c")) as analyzer:
        trace = analyzer.capture(CaptureConfig(sample_interval_s=20.48e-6, points=4, current_range_a=0.1))
        sent = commands(analyzer)
        assert "SENS:CURR:RANG 0.1,(@1)" in sent and "TRIG:ACQ:SOUR BUS,(@1)" in sent
        assert sent[-4:] == ["INIT:ACQ (@1)", "*TRG", "FETC:ARR:CURR? (@1)", "FETC:ARR:VOLT? (@1)"]
        assert trace.n == 4


def test_n6705c_instrument_error_names_instrument_and_command():
    with open_analyzer(N6705C_RANGE_ERROR, backend=sim("n6705c")) as analyzer, \
            pytest.raises(InstrumentError) as err:
        analyzer.configure(CaptureConfig(points=4, current_range_a=10.0))
    message = str(err.value)
    assert err.value.command == "SENS:CURR:RANG 10,(@1)"
    assert f"N6705C MY56001234 at {N6705C_RANGE_ERROR}" in message and '-222,"Data out of range"' in message


def test_n6705c_fetch_that_never_completes_times_out_clearly():
    with open_analyzer(N6705C_STUCK, backend=sim("n6705c")) as analyzer:
        analyzer.configure(CaptureConfig(sample_interval_s=20.48e-6, points=4, pretrigger_points=1,
                                         trigger="external"))
        analyzer.arm()
        start = time.monotonic()
        with pytest.raises(InstrumentTimeout, match=r"'FETC:ARR:CURR\? \(@1\)': no reply within 0.3 s"):
            analyzer.fetch(timeout_s=0.3)
        assert time.monotonic() - start < 3.0
        # the session is still usable afterwards: one stuck query does not poison the rest of the suite
        assert analyzer.session.identify().model == "N6705C"


def test_driver_refuses_more_points_than_the_instrument_holds():
    with open_analyzer(N6705C_OK, backend=sim("n6705c")) as analyzer, \
            pytest.raises(InstrumentError, match="exceed the 524288"):
        analyzer.configure(CaptureConfig(points=600_000))


def test_ngm202_fastlog_sequence_and_little_endian_pairs():
    with open_analyzer(NGM_OK, backend=sim("ngm202")) as analyzer:
        assert isinstance(analyzer, NGM202)
        config = analyzer.configure(CaptureConfig(sample_interval_s=2e-6, points=4))
        analyzer.arm()
        analyzer.trigger()
        trace = analyzer.fetch(timeout_s=2.0)
        assert commands(analyzer) == ["*IDN?", "*CLS", "INST:NSEL 1", "SENS:CURR:RANG:AUTO 1", "FLOG:SRAT S500K",
                                      "FLOG:TARG SCPI", "FLOG:STAT 1", "FLOG:DATA?", "FLOG:DATA?", "FLOG:STAT 0"]
    assert config.sample_interval_s == pytest.approx(2e-6)
    np.testing.assert_allclose(trace.voltage, [VOLTS] * 4)
    np.testing.assert_allclose(trace.current, [A_LOW, A_HIGH, A_LOW, A_HIGH])


def test_ngm202_rates_external_trigger_and_empty_fastlog():
    assert fastlog_rate_for(2e-6) == ("S500K", 500e3)
    assert fastlog_rate_for(15e-6) == ("S250K", 250e3)  # 66.7 kS/s asked: the next faster rate
    assert fastlog_rate_for(1.0) == ("S100", 100.0)
    with open_analyzer(NGM_NO_DATA, backend=sim("ngm202")) as analyzer:
        with pytest.raises(NotImplementedError, match="external trigger"):
            analyzer.configure(CaptureConfig(points=4, trigger="external"))
        analyzer.configure(CaptureConfig(sample_interval_s=2e-6, points=4))
        analyzer.arm()
        with pytest.raises(InstrumentTimeout, match="0 of 4 samples"):
            analyzer.fetch(timeout_s=0.2)
        assert commands(analyzer)[-1] == "FLOG:STAT 0"  # logging is switched off even when the fetch fails
        analyzer.start()
        with pytest.raises(InstrumentError, match="fewer than two samples"):
            analyzer.stop()


def test_k2280s_trace_buffer_sequence_and_time_stamps():
    with open_analyzer(K2280S_OK, backend=sim("k2280s")) as analyzer:
        assert isinstance(analyzer, K2280S)
        trace = analyzer.capture(CaptureConfig(sample_interval_s=2e-4, points=4), timeout_s=2.0)
        assert commands(analyzer) == [
            "*IDN?", "*CLS", ":SYST:LFR?", ':SENS:FUNC "CONC"', ":SENS:CURR:RANG:AUTO ON", ":SENS:CONC:NPLC 0.01",
            ":TRAC:CLE", ":TRAC:POIN 4", ":TRAC:FEED SENS", ":TRIG:SAMP:COUN 4", ":TRIG:SOUR IMM", ":INIT",
            "*OPC?", ':TRAC:DATA? "READ,SOUR,REL"',
        ]
    np.testing.assert_allclose(trace.current, [0.0329, 0.0724, 0.0724, 0.0329])
    np.testing.assert_allclose(trace.voltage, [3.2998, 3.2996, 3.2996, 3.2998])
    assert trace.dt == pytest.approx(2e-4)  # from the REL time stamps


def test_k2280s_errors_and_limits():
    with open_analyzer(K2280S_OK, backend=sim("k2280s")) as analyzer:
        with pytest.raises(InstrumentError, match="2500"):
            analyzer.configure(CaptureConfig(points=3000))
        with pytest.raises(InstrumentError, match=r"':SENS:CURR:RANG 10'.*-222"):
            analyzer.configure(CaptureConfig(points=4, current_range_a=10.0))
        with pytest.raises(NotImplementedError, match="2500 readings"):
            analyzer.start()
        analyzer.configure(CaptureConfig(sample_interval_s=2e-4, points=4, trigger="external"))
        assert ":TRIG:SOUR EXT" in commands(analyzer)


def test_scpi_error_queue_parsing_and_a_queue_that_never_empties():
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert parse_error('+0,"No error"') == (0, "No error")
    assert parse_error("garbage")[0] == -1

    class Stuck:  # an instrument whose error queue never empties must not hang the run
        resource_name = "FAKE::1"
        timeout = 1000

        def query(self, command):
            return '-100,"Command error"'

        def write(self, command):
            return len(command)

    session = ScpiSession(Stuck(), name="fake")
    with pytest.raises(InstrumentError, match="not empty after 32 reads"):
        session.write("FOO")


def test_opening_bad_resources_fails_with_the_resource_name(monkeypatch):
    with pytest.raises(InstrumentError, match="NOT-A-RESOURCE: 'open': cannot open"):
        open_resource("NOT-A-RESOURCE", backend="@py")
    # pyvisa-py connects a raw socket lazily: the refusal shows at the first query, still naming the resource
    with pytest.raises(InstrumentError, match=r"TCPIP0::127.0.0.1::1::SOCKET: '\*IDN\?': .*refused"):
        open_analyzer("TCPIP0::127.0.0.1::1::SOCKET", timeout_s=1.0)
    monkeypatch.setenv("HIL_VISA_BACKEND", "@py")
    assert default_backend() == "@py"
    monkeypatch.delenv("HIL_VISA_BACKEND")
    assert default_backend() in ("@py", "@ivi")


def test_identity_parsing():
    identity = Identity.from_idn("Keysight Technologies,N6705C,MY1,D.03.05,extra")
    assert (identity.manufacturer, identity.model, identity.serial, identity.firmware) == (
        "Keysight Technologies", "N6705C", "MY1", "D.03.05,extra")
    assert Identity.from_idn("ACME").model == ""


def test_compound_query_reads_one_response_message():
    class Instrument:  # answers a compound query with one `;`-separated response message, as 488.2 says
        resource_name = "FAKE::2"
        timeout = 1000
        replies = {"*IDN?;:SYST:ERR?;*OPC?": 'ACME,X1,1,1.0;+0,"No error; really";1',
                   "A?;:B?": "1", "SYST:ERR?": '-113,"Undefined header"'}

        def query(self, command):
            return self.replies[command] + "\n"

    session = ScpiSession(Instrument(), name="fake")
    assert session.query_compound(["*IDN?", ":SYST:ERR?", "*OPC?"]) == ["ACME,X1,1,1.0", '+0,"No error; really"', "1"]
    with pytest.raises(InstrumentError, match=r"'A\?;:B\?': expected 2 answers, got 1.*-113"):
        session.query_compound(["A?", "B?"])
