"""The simulated N6705C: SCPI parsing and state without a socket, then the real driver over a loopback socket
(pyvisa-py, TCPIP SOCKET): triggered captures, the data logger, errors, timeouts, determinism, clean shutdown."""

import socket
import threading
import time

import numpy as np
import pytest

from hil.instruments import CaptureConfig, InstrumentError, InstrumentTimeout, open_analyzer
from hil.instruments.simulated import DutActivity, SimulatedN6705C, start_simulated_analyzer
from hil.instruments.simulated.power_model import ESP32S3_240MHZ, ESP32S3_240MHZ_PERIPH_ON
from hil.instruments.simulated.scpi_server import MAX_LINE, compile_header, parse_channels, split_top
from hil.measure.energy import analyze

QEMU_CYCLES, QEMU_CLOCK = 390_592, 40_000_000  # one synthetic-extractor inference on qemu, as INFO/INFER report
INFERENCE_S = QEMU_CYCLES / QEMU_CLOCK


def errors(inst: SimulatedN6705C) -> list[str]:
    found = []
    while (reply := inst.execute_line("SYST:ERR?")[0].decode()) != '+0,"No error"':
        found.append(reply)
    return found


# ---- SCPI without a socket ----


def test_headers_accept_short_and_long_forms_and_optional_nodes():
    pattern = compile_header("SENSe:CURRent[:DC]:RANGe[:UPPer]")
    for header in ("SENS:CURR:RANG", "sense:current:dc:range:upper", ":SENS:CURR:DC:RANG", "Sens:Curr:Rang:Upp"):
        assert pattern.match(header), header
    for header in ("SEN:CURR:RANG", "SENS:CURR:RANGE:AUTO", "SENS:CURRE:RANG"):
        assert not pattern.match(header), header
    assert compile_header("DIGital:PIN#:FUNCtion").match("DIG:PIN7:FUNC").groups() == ("7",)
    assert split_top('A 1,(@1,2),"x,y"', ",") == ["A 1", "(@1,2)", '"x,y"']
    assert parse_channels("(@1:3)") == [1, 2, 3] and parse_channels("(@2,4)") == [2, 4]


def test_state_queries_errors_and_relative_paths():
    inst = SimulatedN6705C()
    assert inst.execute_line("*IDN?") == [b"Keysight Technologies,N6705C,SIM0000001,D.03.05-hil-sim"]
    # two commands on one line, the second relative to the first's path
    assert inst.execute_line("SENS:SWE:TINT 1e-4,(@1);POIN 100,(@1);:SENS:SWE:POIN? (@1)") == [b"+100"]
    assert inst.execute_line("SENSe:SWEep:TINTerval? (@1)") == [b"+1.024000E-04"]
    inst.execute_line("SENS:SWE:TINT 7e-6,(@1)")  # both functions on: at least two grid steps
    assert float(inst.execute_line("SENS:SWE:TINT? (@1)")[0]) == pytest.approx(10.24e-6)
    inst.execute_line("SENS:CURR:RANG 0.05,(@1)")  # the lowest range that holds 50 mA
    assert float(inst.execute_line("SENS:CURR:RANG? (@1)")[0]) == pytest.approx(0.1)
    assert errors(inst) == []
    inst.execute_line("SENS:SWE:POIN 600000,(@1)")
    inst.execute_line("BOGUS:CMD 1")
    inst.execute_line("*TRG")  # nothing armed
    inst.execute_line("SENS:SWE:TINT abc,(@1)")
    inst.execute_line("FETC:ARR:CURR? (@5)")
    assert errors(inst) == ['-222,"Data out of range"', '-113,"Undefined header"', '-211,"Trigger ignored"',
                            '-104,"Data type error"', '-222,"Data out of range; no channel 5"']
    for _ in range(40):  # bounded queue
        inst.execute_line("NOPE")
    queue = errors(inst)
    assert len(queue) == 30 and queue[-1] == '-350,"Queue overflow"'
    inst.execute_line("NOPE;*CLS")
    assert errors(inst) == []


def test_trigger_pin_must_be_a_trigger_input():
    inst = SimulatedN6705C()
    inst.execute_line("TRIG:ACQ:SOUR PIN3,(@1);:INIT:ACQ (@1)")
    assert errors(inst) == ['-221,"Settings conflict; digital pin 3 is not a trigger input"']
    inst.execute_line("DIG:PIN3:FUNC TINP;:INIT:ACQ (@1);:INIT:ACQ (@1)")
    assert errors(inst) == ['-213,"Init ignored; acquisition already initiated"']


def test_activity_time_line_from_cycle_counts():
    fixed = DutActivity()
    first = fixed.inference(QEMU_CYCLES, QEMU_CLOCK, host_round_trip_s=0.5)  # host timing ignored
    assert (first.start_s, first.duration_s) == (pytest.approx(0.002), pytest.approx(INFERENCE_S))
    following = DutActivity(gap_s=1e-3, follow_host=True)
    a = following.inference(QEMU_CYCLES, QEMU_CLOCK, host_round_trip_s=0.015)
    b = following.inference(QEMU_CYCLES, QEMU_CLOCK, host_round_trip_s=0.0)
    assert a.start_s == pytest.approx(0.015 - INFERENCE_S) and b.start_s == pytest.approx(a.end_s + 1e-3)
    assert following.first_rise_at_or_after(a.start_s + 1e-9) == b.start_s
    assert following.first_rise_at_or_after(b.end_s) is None
    duty = following.duty(a.start_s - 1e-3, 1e-3, 4)  # sample k covers [t_k - dt/2, t_k + dt/2)
    np.testing.assert_allclose(duty, [0.0, 0.5, 1.0, 1.0], atol=1e-9)
    with pytest.raises(ValueError):
        DutActivity(gap_s=0)


# ---- the real driver over the loopback socket ----


@pytest.fixture
def simulated():
    with start_simulated_analyzer(seed=3) as sim:
        yield sim


@pytest.fixture
def analyzer(simulated):
    with open_analyzer(simulated.resource_name, timeout_s=2.0) as pa:
        yield pa


def test_opened_through_pyvisa_py_as_a_socket_resource(simulated, analyzer):
    assert simulated.resource_name.startswith("TCPIP0::127.0.0.1::") and simulated.resource_name.endswith("::SOCKET")
    assert analyzer.driver_name == "N6705C" and analyzer.module == "N6781A"
    assert "hil-sim" in analyzer.identity.firmware


def test_marker_triggered_capture_has_the_known_windows_and_energy(simulated, analyzer):
    config = analyzer.configure(CaptureConfig(sample_interval_s=20.48e-6, points=20_000, pretrigger_points=100,
                                              trigger="external"))
    analyzer.arm()
    simulated.activity.idle(0.01)
    truth = [simulated.activity.inference(QEMU_CYCLES, QEMU_CLOCK, host_round_trip_s=0.012) for _ in range(10)]
    trace = analyzer.fetch()
    assert trace.n == config.points and trace.t0 == pytest.approx(-100 * config.sample_interval_s)
    analysis = analyze(trace)
    assert analysis.count == 10
    trigger_at = truth[0].start_s  # the first marker edge after INIT is time zero of the trace
    for found, true in zip(analysis.windows, truth, strict=True):
        assert found.window.start_s == pytest.approx(true.start_s - trigger_at, abs=config.sample_interval_s / 2)
        assert found.window.duration_s == pytest.approx(INFERENCE_S, abs=config.sample_interval_s / 2)
        assert found.energy_j == pytest.approx(ESP32S3_240MHZ.energy_j(INFERENCE_S), rel=0.01)
    assert analysis.idle_current_a == pytest.approx(ESP32S3_240MHZ.idle_a, rel=0.01)
    assert np.mean(trace.voltage) == pytest.approx(3.3, abs=1e-3)


def test_bus_trigger_starts_at_star_trg_and_fetch_waits_for_the_capture(simulated, analyzer):
    analyzer.configure(CaptureConfig(sample_interval_s=102.4e-6, points=2000))
    analyzer.arm()
    simulated.activity.idle(0.005)
    analyzer.trigger()  # time zero: now
    simulated.activity.idle(0.02)
    simulated.activity.inference(QEMU_CYCLES, QEMU_CLOCK)  # after the 2 ms gap: 0.027 s .. 0.0368 s
    trace = analyzer.fetch()
    # the capture (2000 x 102.4 us) outlasts the activity: the DUT idled while the host waited for FETC
    assert simulated.activity.now() == pytest.approx(0.005 + 0.2048, abs=1e-9)
    analysis = analyze(trace)
    assert analysis.count == 1
    assert analysis.windows[0].window.start_s == pytest.approx(0.022, abs=102.4e-6)


def test_ascii_and_binary_transfers_carry_the_same_samples(simulated, analyzer):
    analyzer.configure(CaptureConfig(sample_interval_s=20.48e-6, points=500))
    analyzer.arm()
    analyzer.trigger()
    simulated.activity.inference(QEMU_CYCLES // 100, QEMU_CLOCK)
    binary = analyzer.fetch()
    analyzer.session.write("FORM ASC")
    ascii_values = analyzer.session.query_ascii_floats("FETC:ARR:CURR? (@1)")
    np.testing.assert_allclose(ascii_values, binary.current, rtol=1e-5)  # 6 significant digits in ASCII
    analyzer.session.write("FORM REAL;:FORM:BORD SWAP")
    swapped = analyzer.session.query_binary_floats("FETC:ARR:CURR? (@1)", big_endian=False)
    np.testing.assert_array_equal(swapped, binary.current)


def test_never_triggered_capture_times_out_and_says_why(analyzer):
    analyzer.configure(CaptureConfig(points=100, trigger="external"))
    analyzer.arm()
    with pytest.raises(InstrumentTimeout, match=r"FETC:ARR:CURR.*no reply within 0.5 s.*-230.*never triggered"):
        analyzer.fetch(timeout_s=0.5)
    # the instrument, and the session, carry on
    analyzer.session.write("ABOR:ACQ (@1)")
    analyzer.configure(CaptureConfig(points=100))
    analyzer.arm()
    analyzer.trigger()
    assert analyzer.fetch().n == 100


def test_instrument_errors_surface_from_the_driver(analyzer):
    with pytest.raises(InstrumentError, match=r"'SENS:CURR:RANG 5,\(@1\)'.*-222"):
        analyzer.configure(CaptureConfig(points=10, current_range_a=5.0))
    assert analyzer.config is None  # the failed configure() left nothing half-set to arm
    with pytest.raises(InstrumentError, match=r"'INIT:ACQ': configure\(\) the acquisition first"):
        analyzer.arm()


def test_data_logger_start_stop_matches_the_known_energy(simulated, analyzer):
    analyzer.start()
    for _ in range(5):
        simulated.activity.inference(QEMU_CYCLES, QEMU_CLOCK, host_round_trip_s=0.015)
    simulated.activity.idle(0.004)
    reading = analyzer.stop()
    active = 5 * INFERENCE_S
    idle = 5 * 0.002 + 0.004  # the fixed 2 ms gap before each inference (host timing is not followed)
    expected = ESP32S3_240MHZ.energy_j(active) + ESP32S3_240MHZ.idle_power_w * idle
    assert reading["duration_s"] == pytest.approx(active + idle, abs=102.4e-6)
    assert reading["energy_J"] == pytest.approx(expected, rel=0.01)
    stats = analyzer.get_statistics()
    assert stats["energy_J"] == reading["energy_J"] and stats["charge_C"] == reading["charge_C"]
    assert stats["current"]["max"] == pytest.approx(ESP32S3_240MHZ.active_a, rel=0.02)
    assert stats["current"]["min"] == pytest.approx(ESP32S3_240MHZ.idle_a, rel=0.02)
    assert set(stats) >= {"current", "voltage", "power", "charge_C", "energy_J"}


def test_same_seed_same_trace_other_seed_other_noise():
    def capture(seed: int) -> np.ndarray:
        activity = DutActivity()
        with start_simulated_analyzer(activity, seed=seed) as sim, open_analyzer(sim.resource_name) as pa:
            pa.configure(CaptureConfig(points=1000, pretrigger_points=10, trigger="external"))
            pa.arm()
            activity.inference(QEMU_CYCLES // 10, QEMU_CLOCK)
            return pa.fetch().current

    a, b, c = capture(7), capture(7), capture(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - c).max() < 10 * ESP32S3_240MHZ.current_noise_a  # same signal, different noise


def test_power_model_is_the_datasheet_table():
    assert (ESP32S3_240MHZ.idle_a, ESP32S3_240MHZ.active_a) == (32.9e-3, 72.4e-3)
    assert (ESP32S3_240MHZ_PERIPH_ON.idle_a, ESP32S3_240MHZ_PERIPH_ON.active_a) == (47.6e-3, 87.9e-3)
    assert ESP32S3_240MHZ.supply_v == 3.3 and "Table 5-9" in ESP32S3_240MHZ.citation
    assert "modelled" in ESP32S3_240MHZ.describe()


def test_a_fixed_low_range_saturates():
    activity = DutActivity()
    with start_simulated_analyzer(activity) as sim, open_analyzer(sim.resource_name) as pa:
        pa.configure(CaptureConfig(points=200, current_range_a=1e-3))
        pa.arm()
        pa.trigger()
        assert pa.fetch().current.max() <= 1.02e-3


def test_server_is_bounded_and_stops_cleanly():
    threads_before = threading.active_count()
    sim = start_simulated_analyzer()
    host, port = sim.server.address
    clients = [socket.create_connection((host, port), timeout=2.0) for _ in range(4)]
    try:
        extra = socket.create_connection((host, port), timeout=2.0)  # a fifth client is refused
        extra.settimeout(2.0)
        assert extra.recv(10) == b""
        extra.close()
        s = clients[0]
        s.settimeout(2.0)
        s.sendall(b"X" * (MAX_LINE + 10) + b"\n*IDN?\nSYST:ERR?\n")  # an over-long line is dropped, not kept
        reply = b""
        while reply.count(b"\n") < 2:
            reply += s.recv(4096)
        assert reply.split(b"\n")[:2] == [b"Keysight Technologies,N6705C,SIM0000001,D.03.05-hil-sim",
                                          b'-223,"Too much data"']
    finally:
        for c in clients:
            c.close()
        start = time.monotonic()
        sim.close()
    assert time.monotonic() - start < 3.0
    assert not sim.server.clients
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1.0)
    deadline = time.monotonic() + 3.0
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before


# ---- IEEE 488.2 program messages: compound queries, mixed units, header paths, trailing junk ----

IDN = b"Keysight Technologies,N6705C,SIM0000001,D.03.05-hil-sim"


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def test_compound_queries_get_one_response_message_over_the_socket(simulated):
    """488.2 8.4.1: the answers of one program message form one response message, `;`-separated, with one
    terminator. A client that reads one reply per message must stay in step."""
    sock = socket.create_connection(simulated.server.address, timeout=2.0)
    buffer = bytearray()
    try:
        sock.sendall(b"*IDN?;*OPC?\n")
        assert read_line(sock, buffer) == IDN + b";1"
        sock.sendall(b"SENS:SWE:POIN? (@1);TINT? (@1)\n")
        assert read_line(sock, buffer) == b"+1024;+2.048000E-05"
        sock.sendall(b"SYST:VERS?\n")  # in step: the next reply belongs to the next message
        assert read_line(sock, buffer) == b"1999.0"
        sock.sendall(b"*IDN? junk\n*WAI;*OPC\nSYST:ERR?\n")  # junk and plain commands: no response at all
        assert read_line(sock, buffer) == b'-108,"Parameter not allowed"'
    finally:
        sock.close()


@pytest.mark.parametrize("message, response", [
    ("*IDN?;*OPC?", [IDN, b"1"]),
    ("SENS:SWE:POIN? (@1);SENS:SWE:TINT? (@1)", []),  # relative: SENS:SWE:SENS:SWE:TINT, -113 (and POIN answers)
    ("SENS:SWE:POIN? (@1);:SENS:SWE:TINT? (@1)", [b"+1024", b"+2.048000E-05"]),
    ("SENS:SWE:POIN 2048,(@1);POIN? (@1)", [b"+2048"]),  # command then query, in order
    ("SENS:SWE:POIN 2048,(@1);:SENS:SWE:POIN? (@1);POIN 100,(@1);POIN? (@1)", [b"+2048", b"+100"]),
    ("sense:sweep:points 512,(@1);*OPC;OFFSet:POINts -5,(@1);:SENSE:SWEEP:OFFSET:POINTS? (@1)", [b"-5"]),
    ("FORM:DATA REAL;BORD SWAP;:FORM?;FORM:BORD?", [b"REAL,32", b"SWAP"]),
    ("DIG:PIN2:FUNC TINP;POL NEG;FUNC?;POL?", [b"TINP", b"NEG"]),
])
def test_program_messages_run_in_order_with_488_2_header_paths(message, response):
    inst = SimulatedN6705C()
    got = inst.execute_line(message)
    if message.startswith("SENS:SWE:POIN? (@1);SENS:SWE:TINT?"):
        assert got == [b"+1024"] and errors(inst) == ['-113,"Undefined header"']
        return
    assert got == response
    assert errors(inst) == []
    assert inst.respond(message) == (b";".join(response) + b"\n" if response else None)


@pytest.mark.parametrize("message, code", [
    ("*IDN? junk", '-108,"Parameter not allowed"'),  # *IDN? takes no parameter
    ("SYST:ERR? 1", '-108,"Parameter not allowed"'),
    ("MEAS:CURR? (@1),extra", '-108,"Parameter not allowed"'),  # one parameter: the channel list
    ("SENS:SWE:POIN? 5,(@1)", '-108,"Parameter not allowed"'),  # MIN|MAX queries are not modelled
    ("SENS:SWE:POIN 5,(@1),7", '-108,"Parameter not allowed"'),
    ("MEAS:CURR? (@1) extra", '-103,"Invalid separator"'),  # a second token without a comma
    ("SENS:SWE:TINT? (@1) (@2)", '-103,"Invalid separator"'),
    ("*IDN?junk", '-113,"Undefined header"'),  # no white space: part of the header
    ("FORM REAL;BORD NORM", '-113,"Undefined header"'),  # FORM is a leaf at the root: BORD is a root header
])
def test_trailing_junk_is_a_command_error_and_gets_no_response(message, code):
    inst = SimulatedN6705C()
    assert inst.respond(message) is None
    assert errors(inst) == [code]


def test_n6705c_command_forms_from_the_programming_guide():
    inst = SimulatedN6705C()
    run = inst.execute_line
    assert run("SENS:SWE:TINT:RES? (@1)") == [b"RES20"]
    run("SENS:SWE:TINT:RES RES40,(@1)")
    assert run("sens:swe:tint:res? (@1);:SENSe:SWEep:TINTerval:RESolution? (@1)") == [b"RES40", b"RES40"]
    # the guide's rounding: 10.24 us steps up to 20.48 us, then 20.48 us (RES20) or 40.96 us (RES40) steps
    for res, wanted, actual in [("RES40", 1e-4, 81.92e-6), ("RES20", 1e-4, 102.4e-6), ("RES20", 15e-6, 10.24e-6),
                                ("RES40", 30e-6, 20.48e-6)]:
        run(f"SENS:SWE:TINT:RES {res},(@1);:SENS:SWE:TINT {wanted},(@1)")
        assert float(run("SENS:SWE:TINT? (@1)")[0]) == pytest.approx(actual)
    for form, short in [("CURR1", "CURR1"), ("current2", "CURR2"), ("VOLT1", "VOLT1"), ("TRANsient3", "TRAN3"),
                        ("BUS", "BUS"), ("EXTernal", "EXT"), ("pin4", "PIN4")]:
        run(f"TRIG:ACQ:SOUR {form},(@1)")
        assert run("TRIGger:ACQuire:SOURce? (@1)") == [short.encode()]
    assert errors(inst) == []
    run("TRIG:ACQ:SOUR CURR1,(@1);:INIT:ACQ (@1)")  # level triggers are accepted but not simulated
    run("TRIG:ACQ:SOUR CURR5,(@1);:SENS:SWE:TINT:RES RES10,(@1)")
    assert errors(inst) == ['-221,"Settings conflict; trigger source CURR1 is not simulated (sim)"',
                            '-224,"Illegal parameter value"', '-224,"Illegal parameter value"']
