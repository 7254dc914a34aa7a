"""A meter around a run: meter sections checked at plan time, the simulated PPK2 fed a trace drawn
from inference windows and read back through ppk2-api (window counts, alignment and the energy
arithmetic against hand-computed figures), a meter lost mid-run, the stored sessions and raw
samples, and the run JSON's energy with a meter beside the model."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI") == "true":
    import ppk2_api  # noqa: F401  CI installs the 'meters' extra: missing, these tests must fail, not skip
else:
    pytest.importorskip("ppk2_api", reason="needs the 'meters' extra (ppk2-api)")

from harness.config.profiles import DeviceProfile, get_profile  # noqa: E402
from harness.core.datafiles import validate  # noqa: E402
from harness.core.errors import ConfigError, MeasurementError  # noqa: E402
from harness.measure.metering import (check_meter, check_meters, compute_seconds, node_meter_energy,  # noqa: E402
                                      open_metering)
from harness.measure.meters import Trace, load_trace, save_trace  # noqa: E402
from harness.measure.meters.synth import SynthesisSpec, batch_trace, idle_trace  # noqa: E402
from harness.measure.meters.windows import (MeterEnergy, marker_windows, meter_energy,  # noqa: E402
                                            span_energy)
from harness.measure.radio_models import get_radio_profile  # noqa: E402
from harness.measure.run_costs import energy_report  # noqa: E402
from harness.store.results import ResultsStore  # noqa: E402

SIM = "stm32f405-qemu-ppk2sim"
VOLTS, ACTIVE_A, IDLE_A, RATE = 3.3, 0.040, 0.012, 100_000.0   # 132 mW and 39.6 mW at 3.3 V
ADC_STEP = 2e-4   # one ADC step (4.33 uA in range 2) of 40 mA, and a little


def _rows(samples: list[int], instructions: list[int]) -> list[dict]:
    return [{"sample": s, "latency": n, "latency_unit": "instructions"} for s, n in zip(samples, instructions)]


# -- synthesis (pure) --------------------------------------------------------------------------

def test_batch_trace_by_hand():
    spec = SynthesisSpec(rate_hz=RATE, active_a=ACTIVE_A, idle_a=IDLE_A, marker_bit=3, gap_s=50e-6,
                         max_idle_s=0.005)
    current, logic = batch_trace(spec, [1e-3, 0.5e-3], idle_before_s=0.0012)
    # 120 idle, 100 active, 5 idle (the firmware's gap), 50 active
    assert len(current) == len(logic) == 275
    assert np.all(current[:120] == IDLE_A) and np.all(logic[:120] == 0)
    assert np.all(current[120:220] == ACTIVE_A) and np.all(logic[120:220] == 8)
    assert np.all(current[220:225] == IDLE_A) and np.all(logic[220:225] == 0)
    assert np.all(logic[225:] == 8)
    assert marker_windows(np.append(logic, 0), 3) == [(120, 220), (225, 275)]   # a window open at the end is no window
    capped, _ = batch_trace(spec, [1e-3], idle_before_s=0.5)      # a long round trip: idle capped at 5 ms
    assert len(capped) == 500 + 100
    assert len(idle_trace(spec, 0.0)[0]) == 1                      # every stretch is at least one sample
    with pytest.raises(ConfigError):
        SynthesisSpec(rate_hz=RATE, active_a=IDLE_A, idle_a=ACTIVE_A, marker_bit=0, gap_s=0)


def test_compute_seconds():
    assert compute_seconds({"latency": 168_000, "latency_unit": "instructions"}, 168e6) == pytest.approx(1e-3)
    assert compute_seconds({"latency": 250.0, "latency_unit": "us"}, None) == pytest.approx(250e-6)
    with pytest.raises(MeasurementError, match="clock_hz"):
        compute_seconds({"latency": 1, "latency_unit": "instructions"}, None)


# -- the simulated PPK2 through ppk2-api, around a "run" -----------------------------------------

def test_simulated_meter_windows_alignment_and_energy_by_hand(tmp_path: Path):
    store = ResultsStore(tmp_path / "r.sqlite")
    profile = get_profile(SIM)
    metering = open_metering(store, "run-1", {SIM: profile}, [SIM])
    with metering:
        # batch 1: 1.0 ms round trip, inferences of 168000 and 84000 instructions (1 ms, 0.5 ms at 168 MHz)
        metering.batch(0, _rows([7, 8], [168_000, 84_000]), 10.0, 10.001)
        # batch 2: a 10 ms round trip (idle capped at 5 ms), one inference of 2 ms
        metering.batch(0, _rows([9], [336_000]), 10.001, 10.011)
        metering.check()
    sessions, windows = store.meter_sessions("run-1"), store.energy_windows("run-1")
    assert len(sessions) == 1
    s = sessions.iloc[0]
    assert s.status == "complete" and s.simulated == 1 and s.windows == 3 and s.inferences == 3
    assert s.basis.startswith("simulated meter: PPK2 protocol simulator") and "marker PA8 on D0" in s.basis
    # trace: 200 edge idle | 100 idle | 100 active | 5 gap | 50 active | 500 idle | 200 active | 200 edge idle
    assert s.trace_samples == 1355 and s.rate_hz == RATE
    assert list(windows["sample"]) == [7, 8, 9]
    assert list(windows.start_s) == pytest.approx([300 / RATE, 405 / RATE, 955 / RATE])
    assert list(windows.duration_s) == pytest.approx([1e-3, 0.5e-3, 2e-3])
    # gross = I x V x t; net = gross - 12 mA x 3.3 V x t
    assert list(windows.gross_j * 1e6) == pytest.approx([132.0, 66.0, 264.0], rel=ADC_STEP)
    assert list(windows.net_j * 1e6) == pytest.approx([92.4, 46.2, 184.8], rel=ADC_STEP * 4)
    assert s.idle_w == pytest.approx(IDLE_A * VOLTS, rel=ADC_STEP * 2)
    assert s.gross_j == pytest.approx(154e-6, rel=ADC_STEP)              # (132 + 66 + 264) / 3
    # the raw samples next to the database give the same energy again
    trace = load_trace(store.path.parent / s.raw_path)
    again = meter_energy(trace, marker_windows(trace.logic, 0))
    assert again.gross_j == pytest.approx(s.gross_j, rel=1e-6) and again.basis == "simulated meter"
    energy, block = node_meter_energy(sessions, windows, 0)
    assert energy is not None and block["label"] == "simulated meter" and block["windows"] == block["inferences"] == 3
    assert block["gross_uj"]["median"] == pytest.approx(132.0, rel=ADC_STEP)
    assert energy.basis == "simulated meter" and energy.window_s == pytest.approx(3.5e-3 / 3)
    assert energy.active_power_w == pytest.approx(ACTIVE_A * VOLTS, rel=ADC_STEP)


def test_meter_lost_mid_run_is_a_clear_error_and_stored_as_failed(tmp_path: Path):
    store = ResultsStore(tmp_path / "r.sqlite")
    metering = open_metering(store, "run-2", {SIM: get_profile(SIM)}, [SIM])
    with pytest.raises(MeasurementError, match=r"node 0 \(stm32f405-qemu-ppk2sim.*meter was lost mid-run.*"
                                               r"Input/output error.*every inference that finished is kept"):
        with metering:
            metering.batch(0, _rows([0], [168_000]), 1.0, 1.001)
            metering.meters[0].meter.simulator.close()      # the instrument goes away: its port hangs up
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                metering.check()
                time.sleep(0.01)
    sessions = store.meter_sessions("run-2")
    assert list(sessions.status) == ["failed"] and "could not be read" in sessions.error.iloc[0]
    assert store.energy_windows("run-2").empty
    energy, block = node_meter_energy(sessions, store.energy_windows("run-2"), 0)
    assert energy is None and block["windows"] == 0 and "lost" in block["failed_sessions"][0]["error"]


def test_sessions_combine_into_median_spread_and_weighted_means(tmp_path: Path):
    store = ResultsStore(tmp_path / "r.sqlite")
    base = {"run_id": "r", "node": 0, "device": "d", "meter": "ppk2", "basis": "measured: PPK2", "simulated": 0,
            "windows_by": "marker", "rate_hz": RATE, "trace_samples": 1000, "idle_w": 0.01, "idle_source": "x",
            "method": "per-inference windows", "clock_offset_s": None, "uncertainty_s": None, "raw_path": None,
            "status": "complete", "error": None, "sources": "[]", "started_at": 0.0, "stopped_at": 1.0}
    gross = [[1.0, 2.0, 3.0], [5.0]]    # uJ per window, two sessions (a resumed run)
    for k, values in enumerate(gross):
        store.add_meter_session({**base, "session": k, "windows": len(values), "inferences": len(values),
                                 "gross_j": np.mean(values) * 1e-6, "net_j": np.mean(values) * 0.5e-6,
                                 "window_s": 1e-3},
                                [{"run_id": "r", "node": 0, "session": k, "window": i, "sample": i, "start_s": 0.0,
                                  "duration_s": 1e-3, "gross_j": v * 1e-6, "net_j": v * 0.5e-6}
                                 for i, v in enumerate(values)])
    energy, block = node_meter_energy(store.meter_sessions("r"), store.energy_windows("r"), 0)
    assert energy is not None and block["windows"] == block["inferences"] == 4 and block["sessions"] == 2
    assert energy.gross_j == pytest.approx(11e-6 / 4)                   # (1 + 2 + 3 + 5) / 4 inferences
    assert block["gross_uj"]["median"] == pytest.approx(2.5) and block["gross_uj"]["iqr"] == pytest.approx(3.5 - 1.75)
    assert block["label"] == "measured" and energy.basis == "meter"


def test_trace_files_round_trip(tmp_path: Path):
    n = 50
    polled = Trace("ina219-ssh", np.cumsum(np.full(n, 0.001)), np.linspace(0, 1, n), np.linspace(4.9, 5.1, n),
                   None, np.arange(n) % 2, ("src",), {"host_minus_meter_s": 1.5})
    back = load_trace(save_trace(polled, tmp_path / "t.npz"))
    np.testing.assert_allclose(back.current_a, polled.current_a, rtol=1e-7)
    np.testing.assert_allclose(back.voltage_v, polled.voltage_v, rtol=1e-7)
    np.testing.assert_array_equal(back.t_s, polled.t_s)
    assert back.meta == polled.meta and back.sources == ("src",) and back.rate_hz is None
    with pytest.raises(MeasurementError, match="not a trace"):
        load_trace(tmp_path / "missing.npz")


# -- timestamps ----------------------------------------------------------------------------------

def test_span_energy_by_hand():
    # 1 kS/s meter, 2 V; idle 1 mA; offset host - meter = 100 s, uncertainty 2 ms.
    current = np.full(200, 0.001)
    current[50:60] = 0.011     # request 1: two inferences of 4 and 6 ms (10 ms at 11 mA)
    current[120:125] = 0.021   # request 2: one inference of 5 ms at 21 mA
    trace = Trace("t", np.arange(200) / 1000, current, np.full(200, 2.0), 1000.0, None, ("hand",),
                  {"host_minus_meter_s": 100.0, "clock_offset_uncertainty_s": 0.002})
    e = span_energy(trace, [(100.045, 100.065), (100.115, 100.130)], [[0.004, 0.006], [0.005]])
    # span 1: [43, 67) ms = 24 samples: 10 at 22 mW + 14 at 2 mW = 248 uJ; minus idle 2 mW x (24 - 10) ms = 28 uJ
    #   -> 220 uJ of compute, split 4:6 -> 88, 132 uJ; net = gross - 2 mW x t -> 80, 120 uJ
    # span 2: [113, 132) ms = 19 samples: 5 at 42 mW + 14 at 2 mW = 238 uJ; minus 2 mW x 14 ms -> 210 uJ; net 200 uJ
    assert e.idle_power_w == pytest.approx(2e-3)
    assert list(e.per_inference_gross_j * 1e6) == pytest.approx([88.0, 132.0, 210.0])
    assert list(e.per_inference_net_j * 1e6) == pytest.approx([80.0, 120.0, 200.0])
    assert e.uncertainty_s == pytest.approx(0.002) and "timestamps" in e.method and e.inferences == 3
    with pytest.raises(MeasurementError, match="outside the recording"):
        span_energy(trace, [(100.19, 100.25)], [[0.001]])


# -- plan-time checks ----------------------------------------------------------------------------

def _profile(base: str, **changes) -> DeviceProfile:
    data = get_profile(base).model_dump(mode="json", exclude_none=True)
    data.update(changes)
    return validate(DeviceProfile, {**data, "name": "p", "source": "p.yaml"}, "p.yaml")


REAL_PPK2 = {"kind": "ppk2", "port": "/dev/ttyACM1", "voltage_mv": 3300, "marker_input": 0}


@pytest.mark.parametrize("meter, message", [
    ({"kind": "otii", "marker_input": 0}, r"field 'meter': .*unknown meter 'otii'; known: ina219-ssh, joulescope, ppk2"),
    ({**REAL_PPK2, "port": None}, r"field 'meter.port'.*serial port"),
    ({**REAL_PPK2, "voltage_mv": None}, r"field 'meter.voltage_mv'.*supply voltage"),
    ({**REAL_PPK2, "voltage_mv": 6000}, r"800..5000"),
    ({**REAL_PPK2, "sample_rate_hz": 50_000}, r"field 'meter.sample_rate_hz'.*fixed 100000"),
    ({**REAL_PPK2, "marker_input": 8}, r"field 'meter.marker_input'.*8 logic input"),
    ({**REAL_PPK2, "serial_number": "x"}, r"field 'meter.serial_number'.*does not use"),
    ({**REAL_PPK2, "options": {"volume": 11}}, r"field 'meter.options'.*volume"),
    ({"kind": "joulescope", "marker_input": 2}, r"field 'meter.marker_input'.*2 logic input"),
    ({"kind": "joulescope", "marker_input": 0, "sample_rate_hz": 3}, r"one of \[1000000"),
    ({"kind": "ina219-ssh", "windows": "timestamps"}, r"field 'meter.via'"),
])
def test_meter_sections_are_checked_at_plan_time(meter, message):
    with pytest.raises(ConfigError, match=message):
        check_meter(_profile("nucleo-f446re", meter={k: v for k, v in meter.items() if v is not None}))


def test_meter_section_rules():
    with pytest.raises(ConfigError, match=r"field 'meter.marker_input'.*needs marker_input.*ppk2: D0 = 0"):
        check_meter(_profile("nucleo-f446re", meter={"kind": "ppk2", "port": "/dev/x", "voltage_mv": 3300}))
    with pytest.raises(ConfigError, match=r"field 'meter.marker_input'.*timestamps' uses no marker input"):
        check_meter(_profile("nucleo-f446re", meter={**REAL_PPK2, "windows": "timestamps"}))
    with pytest.raises(ConfigError, match=r"field 'meter.simulated'.*emulated device"):
        _profile("nucleo-f446re", meter={**REAL_PPK2, "port": None, "simulated": True})
    linux = _profile("pi-loopback", meter={"kind": "ina219-ssh", "via": "local", "marker_input": 0,
                                           "options": {"marker_path": "/sys/class/gpio/gpio17/value"}})
    with pytest.raises(ConfigError, match=r"field 'meter.windows'.*drives no marker pin.*timestamps"):
        check_meter(linux)
    check_meter(_profile("pi-loopback", meter={"kind": "ina219-ssh", "via": "local", "windows": "timestamps"}))
    real = _profile("nucleo-f446re", meter=REAL_PPK2)
    check_meter(real)
    with pytest.raises(ConfigError, match=r"a meter measures one board, but nodes \[0, 1\]"):
        check_meters({"p": real}, ["p", "p"])
    sim = get_profile(SIM)
    check_meters({SIM: sim}, [SIM] * 4)   # a simulator per node
    with pytest.raises(ConfigError, match=r"field 'meter.simulated'.*no simulator"):
        check_meter(_profile("stm32f405-qemu", meter={"kind": "joulescope", "simulated": True, "marker_input": 0}))


# -- the run JSON's energy with a meter ----------------------------------------------------------

def test_energy_report_uses_the_meter_and_keeps_the_model_beside_it():
    power = {"active_mw": 132.0, "idle_mw": 39.6, "source": "datasheet"}
    per = np.array([120e-6, 130e-6, 140e-6])
    metered = MeterEnergy("ppk2", 3, 130e-6, 90e-6, 0.04, "mean outside", "per-inference windows", per, per - 40e-6,
                          ("measured: PPK2",), "meter", window_s=1e-3)
    r = energy_report(radio="lora-eu868-sf7", payload_bytes=[8, 8], raw_bytes=196, compute_time_s=1e-3,
                      time_basis="modelled", time_assumption="1 instruction per cycle", power=power,
                      meter=[metered, None])
    e = r["energy"]
    n0, n1 = e["per_node"]
    assert n0["basis"]["compute"] == "meter" and n1["basis"]["compute"] == "model"
    assert n0["compute_uj"] == pytest.approx(130.0) and n0["compute_model_uj"] == pytest.approx(132.0)
    assert n0["meter_over_model"] == pytest.approx(130 / 132) and n1["meter_over_model"] is None
    assert e["compute_uj"] == pytest.approx(130.0 + 132.0) and e["basis"]["compute"] == "meter+model"
    lora = get_radio_profile("lora-eu868-sf7")
    margin = lora.cost(196).energy_j - lora.cost(8).energy_j
    assert n0["break_even_compute_time_s"] == pytest.approx(margin / 0.130)   # the meter's 130 mW while inferring
    assert n1["break_even_compute_time_s"] == pytest.approx(margin / 0.132)   # the profile's 132 mW
    assert e["saving_uj"] == pytest.approx(e["raw_baseline_uj"] - e["total_uj"])
    simulated = MeterEnergy("ppk2", 3, 130e-6, 90e-6, 0.04, "x", "y", None, None, ("simulated meter: x",),
                            "simulated meter", window_s=1e-3)
    r = energy_report(radio="lora-eu868-sf7", payload_bytes=[8], raw_bytes=196, compute_time_s=1e-3,
                      power=power, meter=[simulated])
    assert r["energy"]["basis"]["compute"] == "simulated meter"
    assert r["energy"]["basis"]["total"] == "simulated meter+model"
