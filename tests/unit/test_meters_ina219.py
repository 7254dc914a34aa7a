"""The INA219-over-SSH meter: parsing and integration of the poller's output (recorded text),
the host side streamed through a real subprocess, and the real poller failing without a sensor."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from harness.core.errors import MeasurementError
from harness.measure.meters.ina219 import (HEADER, POLLER, INA219Meter, LocalCommandRunner, parse_poller_output,
                                   trace_from_poller)
from harness.measure.meters.windows import host_to_meter_spans, marker_windows, meter_energy, time_windows

VOLTS, IDLE_MA, ACTIVE_MA = 5.0, 100.0, 300.0
T0_NS = 5_000_000_000


def _recording(jitter: bool = False, marker: bool = True) -> list[str]:
    """What the poller prints: ~1 ms between readings, three inferences of 20 readings."""
    rng = np.random.default_rng(0)
    lines = [f"{HEADER} t_ns,bus_v,current_ma" + (",marker" if marker else "")]
    t = T0_NS
    for k in range(300):
        active = any(s <= k < s + 20 for s in (50, 150, 250))
        row = f"{t},{VOLTS:.4f},{ACTIVE_MA if active else IDLE_MA:.5f}"
        lines.append(row + (f",{int(active)}" if marker else ""))
        t += 1_000_000 + (int(rng.integers(-200_000, 200_000)) if jitter else 0)
    return lines


def test_parse_recorded_output():
    samples = parse_poller_output(["# pi connected", "", *_recording()])
    assert len(samples.t_s) == 300 and samples.t_s[0] == pytest.approx(5.0)
    assert samples.current_a[50] == pytest.approx(0.3) and samples.voltage_v[0] == pytest.approx(5.0)
    assert samples.marker is not None and samples.marker[50:70].all() and not samples.marker[70]
    assert parse_poller_output(_recording(marker=False)).marker is None


def test_parse_errors_name_the_line():
    rec = _recording()
    with pytest.raises(MeasurementError, match="line 1: expected the header"):
        parse_poller_output(rec[1:3])
    with pytest.raises(MeasurementError, match="no header line"):
        parse_poller_output(["# ssh banner", ""])
    with pytest.raises(MeasurementError, match="line 3: expected 4 fields"):
        parse_poller_output([rec[0], rec[1], "123,4.0"])
    with pytest.raises(MeasurementError, match="line 2: not a reading"):
        parse_poller_output([rec[0], "12x,5.0,1.0,0"])
    with pytest.raises(MeasurementError, match="do not increase"):
        parse_poller_output([rec[0], rec[2], rec[1]])


def test_marker_windows_energy_by_hand():
    trace = trace_from_poller(parse_poller_output(_recording()))
    assert trace.rate_hz is None                            # polled: integrate over timestamps
    windows = marker_windows(trace.logic, 0)
    assert windows == [(50, 70), (150, 170), (250, 270)]
    e = meter_energy(trace, windows)
    # 20 readings of 1.5 W, each held 1 ms = 30 mJ gross; idle 0.5 W -> net 20 mJ
    assert e.gross_j == pytest.approx(1.5 * 0.020)
    assert e.net_j == pytest.approx(1.0 * 0.020)
    assert e.idle_power_w == pytest.approx(0.5)


def test_jittered_timestamps_integrate_each_interval():
    trace = trace_from_poller(parse_poller_output(_recording(jitter=True)))
    windows = marker_windows(trace.logic, 0)
    e = meter_energy(trace, windows, idle_w=0.5)
    held = [trace.t_s[end] - trace.t_s[start] for start, end in windows]   # each reading until the next
    assert e.gross_j == pytest.approx(1.5 * np.mean(held))
    assert e.net_j == pytest.approx(1.0 * np.mean(held))


def test_timestamp_windows_with_host_clock_offset():
    trace = trace_from_poller(parse_poller_output(_recording()), host_minus_meter_s=100.0)
    # the harness saw inference 1 from host time 105.05 s to 105.07 s: device time 5.05..5.07 s
    spans = host_to_meter_spans([(105.05, 105.07)], trace)
    (window,) = time_windows(trace.t_s, spans)
    assert window == (50, 70)


class ReplayRunner:
    """Plays a recorded poller output through a real subprocess (``cat``) instead of SSH."""

    def __init__(self, path) -> None:
        self.path = path
        self.argv: list[str] | None = None

    def start(self, argv):
        self.argv = argv
        return LocalCommandRunner().start(["cat", str(self.path)])


def test_meter_streams_a_recording_through_a_subprocess(tmp_path):
    path = tmp_path / "ina219.txt"
    path.write_text("\n".join(_recording()) + "\n")
    runner = ReplayRunner(path)
    meter = INA219Meter(runner, shunt_ohms=0.1, marker_path="/sys/class/gpio/gpio17/value")
    meter.start()
    meter._thread.join(5)  # cat ends by itself; a live poller runs until stop()
    trace = meter.stop()
    assert runner.argv[:4] == ["python3", "-u", "-c", POLLER]
    assert runner.argv[4:] == ["0.1", "auto", "0x40", "auto", "0.0", "/sys/class/gpio/gpio17/value"]
    assert len(trace) == 300 and "host_minus_meter_s" in trace.meta
    assert meter_energy(trace, marker_windows(trace.logic, 0)).gross_j == pytest.approx(0.030)


def test_poller_without_a_sensor_fails_with_the_device_error():
    compile(POLLER, "<ina219 poller>", "exec")
    # Here there is no INA219 (and maybe no pi-ina219): the real poller exits with a traceback,
    # which the meter reports with the device's stderr.
    meter = INA219Meter(LocalCommandRunner(), python=sys.executable)
    meter.start()
    meter._thread.join(30)
    with pytest.raises(MeasurementError, match=r"(?is)no header line.*device stderr: .*(ina219|i2c)"):
        meter.stop()
