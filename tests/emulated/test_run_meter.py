"""Energy measured in the run, without an instrument: 4 emulated STM32F405 nodes (real QEMU, real
firmware) each with a simulated PPK2 (the PPK2 protocol simulator on a pseudo-terminal, read
through ppk2-api) fed a trace drawn from the node's own inference windows. Checks the issue's bar
(every node's energy has a simulated-meter basis and as many windows as samples), the store, the
raw samples and the report; and that a meter lost mid-run is a clear error that loses no row."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("ppk2_api", reason="needs the 'meters' extra (ppk2-api)")

from harness.core.errors import MeasurementError  # noqa: E402
from harness.measure.metering import RunMetering, open_metering  # noqa: E402
from harness.measure.meters import load_trace  # noqa: E402
from harness.measure.meters.windows import marker_windows, meter_energy  # noqa: E402
from harness.run import RunOptions, open_run, plan_run, prepare, run_experiment, stream  # noqa: E402
from harness.store.results import ResultsStore  # noqa: E402
from quant_models.experiment import load_experiment  # noqa: E402

PROFILE = "stm32f405-qemu-ppk2sim"
SAMPLES = 50


def hilbench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def metered_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("metered") / "results.sqlite"
    proc = hilbench("run", "experiments/smoke.yaml", "--samples", str(SAMPLES), "--nodes-device", PROFILE,
                    "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return db, json.loads(proc.stdout.strip().splitlines()[-1]), " ".join(proc.stderr.split())


def test_every_node_has_simulated_meter_energy_with_a_window_per_sample(metered_run):
    _, summary, console = metered_run
    assert summary["samples"] == SAMPLES and summary["bitexact_rate"] == 1.0
    energy = summary["energy"]
    assert energy["basis"]["compute"] == "simulated meter" and energy["basis"]["total"] == "simulated meter+model"
    for node, e in zip(summary["nodes"], energy["per_node"]):
        meter = node["meter"]
        assert meter["label"] == "simulated meter" and meter["basis"].startswith("simulated meter: PPK2 protocol simulator")
        assert "marker PA8 on D0" in meter["basis"]
        assert meter["windows"] == meter["inferences"] == node["samples"] == SAMPLES
        assert e["basis"]["compute"] == "simulated meter"
        # the trace was drawn from the model's own figures: the meter agrees with the model up to
        # whole samples per window (1 ms = 100 samples: < 1%) and the ADC's step
        assert e["meter_over_model"] == pytest.approx(1.0, abs=0.01)
        assert e["compute_uj"] == pytest.approx(meter["gross_uj"]["mean"])
        assert meter["gross_uj"]["p10"] <= meter["gross_uj"]["median"] <= meter["gross_uj"]["p90"]
        assert meter["net_uj"]["mean"] == pytest.approx(e["compute_net_uj"])
        assert meter["idle_mw"] == pytest.approx(39.6, rel=1e-3)   # the profile's idle figure, through the ADC
        assert e["break_even_active_power_w"] == pytest.approx(0.132, rel=1e-3)
    assert energy["total_uj"] == pytest.approx(energy["compute_uj"] + energy["radio_uj"])
    assert "node 3 energy (simulated meter): gross" in console   # the human summary says it too


def test_windows_are_stored_paired_with_samples_and_raw_samples_recompute(metered_run):
    db, summary, _ = metered_run
    store = ResultsStore(db)
    sessions, windows = store.meter_sessions(summary["run_id"]), store.energy_windows(summary["run_id"])
    assert list(sessions.node) == [0, 1, 2, 3] and set(sessions.status) == {"complete"}
    for node in range(4):
        w = windows[windows.node == node]
        assert sorted(w["sample"]) == list(range(SAMPLES))     # one window per sample, each paired
        assert (w.start_s.diff().dropna() > 0).all()            # in time order
        session = sessions[sessions.node == node].iloc[0]
        trace = load_trace(db.parent / session.raw_path)
        assert len(trace) == session.trace_samples and trace.meta["simulated"] is True
        again = meter_energy(trace, marker_windows(trace.logic, 0))
        assert again.inferences == SAMPLES and again.gross_j == pytest.approx(session.gross_j, rel=1e-6)


def test_report_shows_meter_beside_model(metered_run, tmp_path):
    db, summary, _ = metered_run
    proc = hilbench("report", "--db", str(db), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "report.html").read_text()
    assert "meter beside model" in html and "simulated meter: PPK2 protocol simulator" in html
    assert f"{SAMPLES} / {SAMPLES}" in html


class UnplugAfterFirstBatch(RunMetering):
    """The run's metering, whose node 0 PPK2 goes away (its pseudo-terminal hangs up, as a PPK2's
    port does when unplugged) right after the engine reports node 0's first batch."""

    unplugged = False

    def batch(self, node, rows, t0, t1):
        super().batch(node, rows, t0, t1)
        meter = self.meters[0].meter
        if node == 0 and not self.unplugged:
            self.unplugged = True
            meter.simulator.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:   # until the driver's reader has hit the hang-up
                try:
                    meter.check()
                except MeasurementError:
                    return
                time.sleep(0.005)


def test_a_meter_lost_mid_run_is_a_clear_error_that_loses_no_rows(tmp_path):
    exp = load_experiment("experiments/smoke.yaml")
    store = ResultsStore(tmp_path / "results.sqlite")
    options = RunOptions(nodes_device=PROFILE, samples=64, device_slots=1)   # nodes in turn: node 0 first
    plan = plan_run(exp, options)
    model = prepare(plan)
    run_id, finished = open_run(plan, model, store)
    assert finished is None
    metering = UnplugAfterFirstBatch(store, run_id, open_metering(store, run_id, plan.profiles, plan.node_devices).meters)
    with pytest.raises(MeasurementError, match=r"node 0 \(stm32f405-qemu-ppk2sim.*its meter was lost mid-run.*"
                                               r"every inference that finished is kept"):
        with metering:
            stream(plan, model, store, run_id, slots=1, metering=metering)
    rows = store.inferences(run_id)
    # every inference that finished is stored once and bit-exact; node 0 stopped after the batch
    # the engine had when it noticed (and any its worker finished meanwhile), the nodes after it
    # never started
    assert not rows.duplicated(["node", "sample"]).any() and rows.bitexact.all()
    assert set(rows.node) == {0}
    kept0 = len(rows)
    assert 16 <= kept0 < 64 and kept0 % 16 == 0
    sessions = store.meter_sessions(run_id)
    lost = sessions[sessions.node == 0].iloc[0]
    assert lost.status == "failed" and "Input/output error" in lost.error
    # rerunning resumes: the rows are completed, and node 0's energy covers what the new session measured
    summary = run_experiment(exp, store, options)
    assert summary["run_id"] == run_id and summary["samples"] == 64
    assert len(store.inferences(run_id)) == 4 * 64
    meter0 = summary["nodes"][0]["meter"]
    assert meter0["windows"] == meter0["inferences"] == 64 - kept0
    assert meter0["failed_sessions"] and "lost" in meter0["failed_sessions"][0]["error"]
    for node in summary["nodes"][1:]:   # the others' sessions add up to every sample
        assert node["meter"]["windows"] == node["meter"]["inferences"] == 64


def test_calibrate_writes_an_overlay_from_the_meter(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    proc = hilbench("devices", "calibrate", PROFILE, "--samples", "24", "--profile-dir", str(profiles),
                    "--db", str(tmp_path / "results.sqlite"), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    overlay = json.loads(proc.stdout.strip().splitlines()[-1])
    assert overlay["overlay"] == str(profiles / "overlays" / f"{PROFILE}.yaml")
    cal = overlay["calibration"]
    assert cal["label"] == "simulated meter" and cal["windows"] == cal["samples"] == 24
    # the simulated trace was drawn from the profile's own figures, so it finds them again
    assert overlay["power"]["active_mw"] == pytest.approx(132.0, rel=1e-3)
    assert overlay["power"]["idle_mw"] == pytest.approx(39.6, rel=1e-3)
    assert overlay["power"]["source"].startswith("simulated meter (not a measurement)")
    assert cal["cycles_per_instruction"] == 1.0 and cal["against"] == PROFILE   # instructions / instructions
    monkeypatch.setenv("HILBENCH_PROFILE_DIRS", str(profiles))
    from harness.config.profiles import get_profile

    profile = get_profile(PROFILE)
    assert profile.calibration is not None and profile.calibration.windows == 24
    assert profile.power is not None and profile.power.source.startswith("simulated meter")
    # the calibration's meter session and raw samples are kept next to its database
    raw = list((tmp_path / "meter").glob(f"calibrate-{PROFILE}-*/node0-session0.npz"))
    assert len(raw) == 1 and load_trace(raw[0]).meta["simulated"] is True
