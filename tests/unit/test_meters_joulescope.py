"""The Joulescope driver's data path through the joulescope package's real StreamBuffer (fed with
messages shaped like pyjoulescope_driver's stream messages), JLS recordings through pyjls, and
joulescope.scan without an instrument."""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("CI") == "true":
    import joulescope  # noqa: F401  CI installs the 'meters' extra: missing, these tests must fail, not skip
else:
    pytest.importorskip("joulescope", reason="needs the 'meters' extra (joulescope)")

import pyjls  # noqa: E402
from joulescope.v1.stream_buffer import StreamBuffer  # noqa: E402

from harness.core.errors import DeviceError, MeasurementError  # noqa: E402
from harness.measure.meters.joulescope import JoulescopeMeter, StreamCollector, read_jls  # noqa: E402
from harness.measure.meters.windows import marker_windows, meter_energy  # noqa: E402

BASE_RATE, RATE = 2_000_000, 1_000_000   # JS220: sample ids at 2 MHz, data decimated by 2 to 1 MS/s
IDLE_A, ACTIVE_A, VOLTS = 0.002, 0.030, 3.3
STARTS, ACTIVE = (1000, 4000, 7000), 300


def _signals(n: int = 10_000):
    current = np.full(n, IDLE_A, dtype=np.float32)
    gpi0 = np.zeros(n, dtype=np.uint8)
    for s in STARTS:
        current[s:s + ACTIVE] = ACTIVE_A
        gpi0[s:s + ACTIVE] = 1
    return current, np.full(n, VOLTS, dtype=np.float32), gpi0


def _driver_messages(offset: int, current, voltage, gpi0):
    """One chunk of every stream the JS220 publishes, in pyjoulescope_driver's message format:
    float32 for i/v/p, u4 current range, u1 GPI packed little-endian."""
    k = len(current)
    common = {"sample_id": offset * (BASE_RATE // RATE), "sample_rate": BASE_RATE,
              "decimate_factor": BASE_RATE // RATE}
    yield {**common, "field_id": 1, "index": 0, "data": current}
    yield {**common, "field_id": 2, "index": 0, "data": voltage}
    yield {**common, "field_id": 3, "index": 0, "data": current * voltage}
    yield {**common, "field_id": 4, "index": 0, "data": np.zeros(k, dtype=np.uint8)}
    yield {**common, "field_id": 5, "index": 0, "data": np.packbits(gpi0, bitorder="little")}
    yield {**common, "field_id": 5, "index": 1, "data": np.packbits(np.zeros(k, np.uint8), bitorder="little")}


def _stream(collector: StreamCollector, buffer_s: float = 1.0, chunk: int = 1000, notify_every: int = 1):
    current, voltage, gpi0 = _signals()
    sb = StreamBuffer(buffer_s, BASE_RATE, None, output_frequency=RATE)
    collector.start(sb)
    for i, off in enumerate(range(0, len(current), chunk)):
        for msg in _driver_messages(off, current[off:off + chunk], voltage[off:off + chunk], gpi0[off:off + chunk]):
            sb.insert("s/i/!data", msg)
        if i % notify_every == 0:
            collector.stream_notify(sb)
    collector.stream_notify(sb)
    return current, gpi0


def test_collector_copies_the_stream_buffer():
    collector = StreamCollector()
    current, gpi0 = _stream(collector)
    trace = collector.trace()
    assert len(trace) == len(current) and trace.rate_hz == RATE
    np.testing.assert_allclose(trace.current_a, current)
    np.testing.assert_allclose(trace.voltage_v, VOLTS, rtol=1e-6)
    np.testing.assert_array_equal(trace.logic, gpi0)         # GPI0 -> bit 0


def test_collector_windows_and_energy_by_hand():
    collector = StreamCollector()
    _stream(collector)
    trace = collector.trace()
    windows = marker_windows(trace.logic, 0)
    assert windows == [(s, s + ACTIVE) for s in STARTS]
    e = meter_energy(trace, windows)
    assert e.gross_j == pytest.approx(ACTIVE_A * VOLTS * ACTIVE / RATE, rel=1e-5)            # 29.7 uJ
    assert e.net_j == pytest.approx((ACTIVE_A - IDLE_A) * VOLTS * ACTIVE / RATE, rel=1e-5)   # 27.72 uJ


def test_collector_reports_buffer_overrun():
    collector = StreamCollector()
    _stream(collector, buffer_s=0.002, notify_every=4)     # 2000-sample buffer, read every 4000
    with pytest.raises(MeasurementError, match="overwritten"):
        collector.trace()


def test_jls_recording_round_trip(tmp_path):
    current, voltage, gpi0 = _signals()
    path = tmp_path / "capture.jls"
    w = pyjls.Writer(str(path))
    w.source_def(source_id=1, name="JS220", vendor="Jetperch", model="JS220", version="1", serial_number="000415")
    w.signal_def(signal_id=1, source_id=1, data_type=pyjls.DataType.F32, sample_rate=RATE, name="current", units="A")
    w.signal_def(signal_id=2, source_id=1, data_type=pyjls.DataType.F32, sample_rate=RATE, name="voltage", units="V")
    w.signal_def(signal_id=3, source_id=1, data_type=pyjls.DataType.U1, sample_rate=RATE, name="gpi[0]", units="")
    w.fsr_f32(1, 0, current)
    w.fsr_f32(2, 0, voltage)
    w.fsr(3, 0, np.packbits(gpi0, bitorder="little"))
    w.close()
    trace = read_jls(path)
    np.testing.assert_allclose(trace.current_a, current)
    np.testing.assert_array_equal(trace.logic, gpi0)
    assert "000415" in trace.sources[0]
    e = meter_energy(trace, marker_windows(trace.logic, 0))
    assert e.gross_j == pytest.approx(ACTIVE_A * VOLTS * ACTIVE / RATE, rel=1e-5)


def test_jls_errors(tmp_path):
    with pytest.raises(MeasurementError, match="no such JLS"):
        read_jls(tmp_path / "missing.jls")
    junk = tmp_path / "junk.jls"
    junk.write_bytes(b"not a jls file" * 10)
    with pytest.raises(MeasurementError, match="not a readable JLS"):
        read_jls(junk)


def test_no_instrument_is_a_device_error():
    import joulescope

    if joulescope.scan():
        pytest.skip("a Joulescope is attached; this test checks the no-instrument path")
    with pytest.raises(DeviceError, match="no Joulescope found"):
        JoulescopeMeter().start()
