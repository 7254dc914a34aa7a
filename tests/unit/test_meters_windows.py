"""Window alignment and energy integration on hand-made traces; the meter registry."""
from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import ConfigError, MeasurementError
from harness.core.registry import Registry
from harness.measure.meters import METERS, Meter, Trace
from harness.measure.meters.windows import (host_to_meter_spans, idle_power_w, integrate_j, marker_windows,
                                    meter_energy, time_windows)


def _trace(current, rate=1000.0, logic=None, voltage=2.0, t=None) -> Trace:
    current = np.asarray(current, dtype=float)
    n = len(current)
    return Trace("test", np.arange(n) / rate if t is None else np.asarray(t, dtype=float), current,
                 np.full(n, voltage), rate if t is None else None, None if logic is None else np.asarray(logic),
                 ("hand-made",))


def test_marker_windows():
    logic = np.array([0, 0, 4, 4, 0, 4, 0, 0, 4], dtype=np.uint8)   # pin 2
    assert marker_windows(logic, 2) == [(2, 4), (5, 6)]            # the run open at the end is dropped
    assert marker_windows(np.array([1, 1, 0, 1, 0]), 0) == [(3, 4)]  # the run open at the start is dropped
    assert marker_windows(logic, 2, active_high=False) == [(4, 5), (6, 8)]
    assert marker_windows(logic, 0) == []


def test_time_windows():
    t = np.arange(10) * 0.1
    assert time_windows(t, [(0.2, 0.5)]) == [(2, 5)]
    with pytest.raises(MeasurementError, match="outside the recording"):
        time_windows(t, [(0.5, 1.5)])
    with pytest.raises(MeasurementError, match="ends before"):
        time_windows(t, [(0.5, 0.2)])


def test_integration_by_hand():
    tr = _trace([1, 1, 3, 3, 3, 1], rate=1000.0)          # amperes at 2 V: 2 W idle, 6 W active
    assert integrate_j(tr, (2, 5)) == pytest.approx(3 * 6.0 / 1000)
    polled = _trace([1, 3, 3, 1], t=[0.0, 0.001, 0.003, 0.004])  # each reading held until the next
    assert integrate_j(polled, (1, 3)) == pytest.approx(6.0 * 0.002 + 6.0 * 0.001)
    assert integrate_j(polled, (3, 4)) == pytest.approx(2.0 * 0.001)   # last reading: median interval
    with pytest.raises(MeasurementError):
        integrate_j(tr, (4, 9))


def test_meter_energy_per_inference_and_idle_by_hand():
    current = np.full(100, 0.001)        # 1 mA idle at 2 V = 2 mW
    logic = np.zeros(100, dtype=np.uint8)
    for start in (10, 40, 70):
        current[start:start + 20] = 0.010    # 20 mW for 20 ms
        logic[start:start + 20] = 1
    tr = _trace(current, logic=logic)
    e = meter_energy(tr, marker_windows(tr.logic, 0))
    assert e.inferences == 3 and e.idle_power_w == pytest.approx(2e-3)
    assert e.gross_j == pytest.approx(20e-3 * 0.020)                  # 400 uJ
    assert e.net_j == pytest.approx(18e-3 * 0.020)                    # 360 uJ
    assert e.distribution()["p50"] == pytest.approx(400e-6)
    assert e.basis == "meter" and "hand-made" in e.sources
    given = meter_energy(tr, marker_windows(tr.logic, 0), idle_w=0.0)
    assert given.net_j == pytest.approx(given.gross_j) and given.idle_source == "given"


def test_meter_energy_aggregate_when_windows_are_too_short():
    current = np.full(40, 0.001)
    logic = np.zeros(40, dtype=np.uint8)
    for start in (10, 20, 30):
        current[start:start + 2] = 0.010
        logic[start:start + 2] = 1
    tr = _trace(current, logic=logic)
    e = meter_energy(tr, marker_windows(tr.logic, 0), idle_w=2e-3, min_samples=10)
    assert e.per_inference_gross_j is None and e.distribution() is None and "aggregate" in e.method
    # span 10..32: 6 active samples at 20 mW + 16 idle at 2 mW, 1 ms each, / 3 inferences
    assert e.gross_j == pytest.approx((6 * 20e-3 + 16 * 2e-3) * 1e-3 / 3)
    assert e.net_j == pytest.approx(6 * 18e-3 * 1e-3 / 3)


def test_meter_energy_errors():
    tr = _trace(np.ones(10), logic=np.ones(10, dtype=np.uint8))
    with pytest.raises(MeasurementError, match="no inference windows"):
        meter_energy(tr, [])
    with pytest.raises(MeasurementError, match="outside the inference windows"):
        idle_power_w(tr, [(0, 10)])
    with pytest.raises(MeasurementError, match="no host clock offset"):
        host_to_meter_spans([(0.0, 1.0)], tr)
    with pytest.raises(MeasurementError, match="samples"):
        Trace("bad", np.arange(3), np.ones(2), np.ones(3))


def test_host_to_meter_spans():
    tr = Trace("x", np.arange(3.0), np.ones(3), np.ones(3), meta={"host_minus_meter_s": 100.0})
    assert host_to_meter_spans([(101.0, 102.0)], tr) == [(1.0, 2.0)]


def test_meter_registry():
    assert {"ppk2", "joulescope", "ina219-ssh"} <= set(METERS.names())
    from harness.measure.meters.ppk2 import PPK2Meter

    assert METERS.get("ppk2") is PPK2Meter
    with pytest.raises(ConfigError, match="unknown meter 'otii'"):
        METERS.get("otii")

    class Fake(Meter):
        name = "fake"

        def start(self) -> None: ...

        def stop(self) -> Trace:
            return _trace([0.0])

    registry: Registry[type[Meter]] = Registry("meter")
    assert registry.register(Fake) is Fake and registry.get("fake") is Fake

    class Other(Fake):
        name = "fake"

    with pytest.raises(ConfigError, match="already registered"):
        registry.register(Other)

    class Impostor(Fake):
        name = "ppk2"

    with pytest.raises(ConfigError, match="already registered"):
        METERS.register(Impostor)
