"""The main job end to end on 4 emulated STM32F405 nodes (real QEMU, real firmware, real data)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import matplotlib.image
import pytest


SUMMARY_KEYS = {"run_id", "experiment", "samples", "accuracy", "golden_accuracy", "bitexact_rate",
                "bits_per_inference", "payload_bytes_per_inference", "raw_bits_per_inference",
                "wire_bytes_per_inference", "nodes"}
NODE_KEYS = {"node", "device", "emulated", "latency", "instructions_per_inference", "macs_per_inference",
             "flash_bytes", "ram_bytes"}


def hilbench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("run") / "results.sqlite"
    proc = hilbench("run", "experiments/smoke.yaml", "--samples", "60", "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return db, json.loads(proc.stdout.strip().splitlines()[-1])


def test_smoke_run_is_bit_exact_and_reports_every_key(smoke_run):
    _, summary = smoke_run
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["samples"] == 60
    assert summary["bitexact_rate"] == 1.0
    assert summary["accuracy"] == summary["golden_accuracy"]
    assert summary["bits_per_inference"] == 256 and summary["payload_bytes_per_inference"] == 32
    assert summary["raw_bits_per_inference"] == 6272
    # inputs + codes + framing, in frames of several samples (issue 13's bar: <= 1.05x useful)
    assert summary["useful_link_bytes_per_inference"] == 4 * (196 + 8)
    assert 1.0 < summary["wire_bytes_per_inference"] / summary["useful_link_bytes_per_inference"] <= 1.05
    assert len(summary["nodes"]) == 4
    for node in summary["nodes"]:
        assert NODE_KEYS <= node.keys()
        assert node["device"] == "stm32f405-qemu" and node["emulated"] is True
        lat = node["latency"]
        assert {"p50", "p90", "p99", "unit", "basis"} <= lat.keys()
        assert lat["unit"] == "instructions" and "emulator" in lat["basis"] and "not cycles" in lat["basis"]
        assert lat["p50"] <= lat["p90"] <= lat["p99"]
        assert 0 < node["instructions_per_inference"] <= node["macs_per_inference"] == 181888  # DSP kernels
        assert 0 < node["flash_bytes"] < 1024 * 1024 and 0 < node["ram_bytes"] < 128 * 1024
        assert node["info"]["kernels"] == "dsp"


def test_each_node_reports_its_per_layer_profile(smoke_run):
    db, summary = smoke_run
    for node in summary["nodes"]:
        layers = node["layers"]
        assert [layer["stage"] for layer in layers] == ["input", "conv0+maxpool1", "fc2", "pack"]
        assert [layer["macs"] for layer in layers] == [0, 14 * 14 * 32 * 25, 7 * 7 * 32 * 16, 0]
        assert {layer["unit"] for layer in layers} == {"instructions"}
        conv = layers[1]
        assert conv["per_mac"] == pytest.approx(conv["count"] / conv["macs"]) and 0.5 < conv["per_mac"] < 1.0
        # The stages add up to the whole inference (plus a few instructions per mark).
        total = sum(layer["count"] for layer in layers)
        assert node["instructions_per_inference"] < total < node["instructions_per_inference"] + 40 * len(layers)
    from harness.store.results import ResultsStore
    frame = ResultsStore(db).layers(summary["run_id"])
    assert len(frame) == 4 * 4 and set(frame.node) == {0, 1, 2, 3} and frame.per_mac.notna().sum() == 8


def test_run_json_has_energy_radio_and_bits_with_a_basis_on_each(smoke_run):
    _, summary = smoke_run
    energy, radio = summary["energy"], summary["radio"]
    for key in ("compute_uj", "radio_uj", "total_uj", "raw_baseline_uj", "basis"):
        assert key in energy
    assert energy["basis"] == {"compute": "model", "radio": "model", "raw_baseline": "model", "total": "model"}
    assert energy["total_uj"] == pytest.approx(energy["compute_uj"] + energy["radio_uj"])
    assert energy["raw_baseline_uj"] > energy["radio_uj"] > 0
    assert any("DS8626" in src for src in energy["sources"]["compute"])
    assert any("instruction" in a and "modelled" in a for a in energy["assumptions"])
    assert {"name", "airtime_ms", "max_rate_hz", "basis"} <= radio.keys() and radio["name"] == "lora-eu868-sf7"
    assert radio["airtime_ms"] == pytest.approx(56.576)  # 8 B + 13 B LoRaWAN at SF7/125 kHz
    assert 0 < summary["entropy_bits_per_inference"] <= summary["bits_per_inference"]
    assert summary["coded_bits_per_inference"] > 0


def test_same_run_again_returns_it_instead_of_repeating(smoke_run):
    db, summary = smoke_run
    proc = hilbench("run", "experiments/smoke.yaml", "--samples", "60", "--db", str(db), "--json")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["run_id"] == summary["run_id"]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0] == 4 * 60


def test_report_writes_html_and_nonempty_figures(smoke_run, tmp_path):
    db, summary = smoke_run
    proc = hilbench("report", "--db", str(db), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "report.html").read_text()
    assert summary["run_id"] in html and "data:image/png;base64," in html
    assert "counted on emulator" in html
    assert "Per-layer profile" in html and "conv0+maxpool1" in html
    for name in ("accuracy_vs_bits.png", "latency.png", "bytes.png", "energy.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01


def test_results_cli_lists_shows_and_exports(smoke_run, tmp_path):
    db, summary = smoke_run
    assert summary["run_id"] in hilbench("results", "list", "--db", str(db)).stdout
    shown = hilbench("results", "show", summary["run_id"], "--db", str(db), "--json")
    assert json.loads(shown.stdout)["accuracy"] == summary["accuracy"]
    assert hilbench("results", "export", "--csv", str(tmp_path), "--db", str(db)).returncode == 0
    import pandas as pd
    inf = pd.read_csv(tmp_path / "inferences.csv")
    assert len(inf) == 240 and set(inf.node) == {0, 1, 2, 3}


def test_killed_run_resumes_with_exactly_one_row_per_node_and_sample(tmp_path):
    db = tmp_path / "killed.sqlite"
    args = [sys.executable, "-m", "harness.cli", "run", "experiments/smoke.yaml", "--samples", "150", "--db", str(db)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rows = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    rows = con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if rows >= 100:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as con:
        kept = con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0]
        (run_id, status), = con.execute("SELECT run_id, status FROM runs").fetchall()
    assert 100 <= kept < 600 and status == "running"
    resumed = hilbench("run", "experiments/smoke.yaml", "--samples", "150", "--db", str(db), "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["run_id"] == run_id and summary["samples"] == 150 and summary["bitexact_rate"] == 1.0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT node || '/' || sample) FROM inferences").fetchone() == (600, 600)
        assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 150
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "complete"


def test_ctrl_c_keeps_finished_rows_and_marks_the_run_interrupted(tmp_path):
    db = tmp_path / "interrupted.sqlite"
    args = [sys.executable, "-m", "harness.cli", "run", "experiments/smoke.yaml", "--samples", "1000", "--db", str(db)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with sqlite3.connect(db) as con:
                if con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0] >= 100:
                    break
        except sqlite3.OperationalError:
            continue
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)  # the nodes finish their current inference and stop
    assert proc.returncode == 130 and "finished results are kept" in stderr
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        kept = con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0]
    assert kept >= 100


def test_mcu_nodes_report_to_a_pi_loopback_gateway(tmp_path):
    """The realistic pipeline: 4 emulated Cortex-M nodes, the head on a Linux gateway over SSH."""
    db = tmp_path / "gateway.sqlite"
    proc = hilbench("run", "experiments/smoke.yaml", "--samples", "30", "--gateway-device", "pi-loopback",
                    "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["gateway"] == "pi-loopback" and summary["bitexact_rate"] == 1.0
    assert summary["accuracy"] == summary["golden_accuracy"]
    with sqlite3.connect(db) as con:
        gateways = con.execute("SELECT DISTINCT gateway, gateway_ns IS NOT NULL FROM predictions").fetchall()
    assert gateways == [("pi-loopback", 1)]  # the device timed each head inference


def _rows(db) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM inferences").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_board_whose_emulator_dies_is_relaunched_and_the_run_completes(tmp_path):
    db = tmp_path / "dies.sqlite"
    args = [sys.executable, "-m", "harness.cli", "run", "experiments/smoke.yaml", "--samples", "80", "--db", str(db),
            "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if _rows(db) >= 40:
            found = subprocess.run(["pgrep", "-P", str(proc.pid), "qemu-system-arm"], capture_output=True, text=True)
            if found.stdout.split():
                killed = int(found.stdout.split()[0])
                os.kill(killed, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "no emulator was killed: the run ended first"
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["bitexact_rate"] == 1.0 and summary["samples"] == 80
    assert summary["link"]["rows"] == summary["link"]["expected_rows"] == 320
    assert summary["link"]["resets"] == 1
    reset = next(n for n in summary["nodes"] if n["info"]["resets"])["info"]["resets"][0]
    assert "the emulator exited (status -9)" in reset


def test_faults_on_every_link_are_recovered_in_one_invocation(tmp_path):
    proc = hilbench("run", "experiments/smoke.yaml", "--samples", "50", "--db", str(tmp_path / "faults.sqlite"),
                    "--link-faults", "flip=5e-4,drop=2e-4,garbage=1e-4,seed=3", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    link = summary["link"]
    assert summary["bitexact_rate"] == 1.0 and link["rows_not_bitexact"] == 0
    assert link["rows"] == link["expected_rows"] == 200
    assert sum(link["faults_injected"].values()) > 0 and link["retries"] > 0
    assert link["link_faults"] == "flip=0.0005,drop=0.0002,garbage=0.0001,seed=3"


def test_the_layer_profile_runs_before_any_timed_batch(tmp_path, monkeypatch):
    """Meters without a marker pin cut their windows at the engine's request spans: the per-layer
    profile inference each MCU node runs once must end before its node's first span starts."""
    from harness.measure.metering import RunMetering
    from harness.run import RunOptions, open_run, plan_run, prepare, stream
    from harness.store.results import ResultsStore
    from harness.targets.mcu.node import McuNodeTarget
    from quant_models.experiment import load_experiment

    profiled: dict[int, list[tuple[float, float]]] = {}
    layer_profile = McuNodeTarget.layer_profile

    def timed_layer_profile(self, view):
        started = time.monotonic()
        layers = layer_profile(self, view)
        profiled.setdefault(self.encoder.node, []).append((started, time.monotonic()))
        return layers

    class Spans(RunMetering):
        def batch(self, node, rows, t0, t1):
            spans.setdefault(node, []).append((t0, t1))

    spans: dict[int, list[tuple[float, float]]] = {}
    monkeypatch.setattr(McuNodeTarget, "layer_profile", timed_layer_profile)
    plan = plan_run(load_experiment("experiments/smoke.yaml"), RunOptions(samples=40))
    model = prepare(plan)
    store = ResultsStore(tmp_path / "results.sqlite")
    run_id, _ = open_run(plan, model, store)
    with Spans(store, run_id, {}) as metering:
        stream(plan, model, store, run_id, metering=metering)
    assert sorted(profiled) == sorted(spans) == list(range(4))
    for node, runs in profiled.items():
        assert len(runs) == 1, f"node {node} profiled {len(runs)} times"
        assert runs[0][1] <= min(t0 for t0, _ in spans[node]), f"node {node}: the profile ran inside a timed span"
    infos = [json.loads(info) for info in store.nodes(run_id)["info"]]
    assert all(info["layers"] and all(layer["count"] > 0 for layer in info["layers"]) for info in infos)
