"""The PPK2 driver through ppk2-api's real code, on a pseudo-terminal that speaks the PPK2's
serial protocol (harness.measure.meters.ppk2_sim)."""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("CI") == "true":
    import ppk2_api  # noqa: F401  CI installs the 'meters' extra: missing, these tests must fail, not skip
else:
    pytest.importorskip("ppk2_api", reason="needs the 'meters' extra (ppk2-api)")

from harness.core.errors import ConfigError, DeviceError  # noqa: E402
from harness.measure.meters import METERS  # noqa: E402
from harness.measure.meters.ppk2 import PPK2_SAMPLE_RATE_HZ, PPK2Meter  # noqa: E402
from harness.measure.meters.ppk2_sim import PPK2Simulator, current_lsb_a, encode_samples  # noqa: E402
from harness.measure.meters.windows import marker_windows, meter_energy, time_windows  # noqa: E402

MARKER_PIN = 3
IDLE_A, ACTIVE_A, VOLTS = 0.005, 0.040, 3.0
STARTS = [1000 + i * 1800 for i in range(10)]
ACTIVE_SAMPLES = 500   # 5 ms at 100 kS/s


def _recording(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    current = np.full(n, IDLE_A)
    logic = np.zeros(n, dtype=np.uint8)
    for s in STARTS:
        current[s:s + ACTIVE_SAMPLES] = ACTIVE_A
        logic[s:s + ACTIVE_SAMPLES] = 1 << MARKER_PIN
    return current, logic


def _record(samples: bytes, **meter_kwargs):
    with PPK2Simulator(samples) as sim:
        meter = PPK2Meter(sim.port, voltage_mv=int(VOLTS * 1000), **meter_kwargs)
        with meter:
            meter.start()
            assert sim.wait_sent(20)
            trace = meter.stop()
        return trace, list(sim.commands)


def test_ppk2_stream_through_ppk2_api():
    current, logic = _recording()
    trace, commands = _record(encode_samples(current, logic, current_range=2))
    # the driver's handshake as ppk2-api writes it: metadata, source mode, 3000 mV, power on, start, stop
    assert [c.hex() for c in commands[:6]] == ["19", "1102", "0d0bb8", "0c01", "06", "07"]
    assert len(trace) == len(current) and trace.rate_hz == PPK2_SAMPLE_RATE_HZ
    np.testing.assert_allclose(trace.current_a, current, atol=current_lsb_a(2))   # one ADC step
    np.testing.assert_array_equal(trace.logic, logic)
    np.testing.assert_allclose(trace.voltage_v, VOLTS)
    assert trace.meta["modifiers"]["R"]["2"] == pytest.approx(10.15)              # parsed from metadata


def test_ppk2_marker_windows_gross_and_net_by_hand():
    current, logic = _recording()
    trace, _ = _record(encode_samples(current, logic, current_range=2))
    windows = marker_windows(trace.logic, MARKER_PIN)
    assert windows == [(s, s + ACTIVE_SAMPLES) for s in STARTS]
    e = meter_energy(trace, windows)
    duration = ACTIVE_SAMPLES / PPK2_SAMPLE_RATE_HZ                          # 5 ms
    assert e.gross_j == pytest.approx(ACTIVE_A * VOLTS * duration, rel=1e-3)             # 600 uJ
    assert e.net_j == pytest.approx((ACTIVE_A - IDLE_A) * VOLTS * duration, rel=1e-3)    # 525 uJ
    assert e.idle_power_w == pytest.approx(IDLE_A * VOLTS, rel=1e-3)
    assert e.per_inference_gross_j is not None and len(e.per_inference_gross_j) == 10


def test_ppk2_timestamp_windows_match_marker_windows():
    current, logic = _recording()
    trace, _ = _record(encode_samples(current, logic, current_range=2))
    spans = [(s / PPK2_SAMPLE_RATE_HZ, (s + ACTIVE_SAMPLES) / PPK2_SAMPLE_RATE_HZ) for s in STARTS]
    by_time = meter_energy(trace, time_windows(trace.t_s, spans))
    by_marker = meter_energy(trace, marker_windows(trace.logic, MARKER_PIN))
    assert by_time.gross_j == pytest.approx(by_marker.gross_j, rel=2e-3)


def test_ppk2_auto_ranging_goes_through_the_spike_filter():
    # With auto-ranging every edge switches the current range, and ppk2-api replaces the first
    # samples after a switch by its rolling averages (as the nRF Connect app does): the energy
    # moves a little, the windows do not.
    current, logic = _recording()
    trace, _ = _record(encode_samples(current, logic))
    e = meter_energy(trace, marker_windows(trace.logic, MARKER_PIN))
    assert e.gross_j == pytest.approx(ACTIVE_A * VOLTS * 5e-3, rel=0.02)


def test_ppk2_errors():
    with pytest.raises(DeviceError, match="cannot open"):
        PPK2Meter("/dev/does-not-exist").start()
    with pytest.raises(ConfigError, match="800..5000"):
        PPK2Meter("/dev/null", voltage_mv=6000)
    master, slave = os.openpty()   # a serial port that never answers the metadata request
    try:
        with pytest.raises(DeviceError, match="no calibration metadata"):
            PPK2Meter(os.ttyname(slave)).start()
    finally:
        os.close(master)
        os.close(slave)
    assert METERS.get("ppk2") is PPK2Meter
