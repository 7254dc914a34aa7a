"""A study end to end on a real Dask LocalCluster (two worker processes) and real emulated
boards: device points bit-exact, a host-only point labelled so, a failing point recorded with its
reason, and a second run that trains and runs nothing."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config.studies import load_study
from harness.store.results import ResultsStore
from harness.study import run_study

REPO = Path(__file__).resolve().parents[2]
COLUMNS = {"label", "status", "reason", "accuracy", "golden_accuracy", "golden_accuracy_full", "bitexact_rate",
           "bits_per_inference", "coded_bits_per_inference", "entropy_bits_per_inference",
           "node_instructions_per_inference", "flash_bytes", "ram_bytes", "compute_energy_uj", "radio_energy_uj",
           "basis", "device_samples", "wall_s"}

STUDY = """
name: test-study
base: {base}
matrix:
  zip:
    code.bits: [2, 4, float, 4]
    # the last point: an untrained encoder whose FC (16 x 14 x 14 -> 400 per node) cannot fit
    # the STM32F405's 1 MiB of flash
    code.values: [64, 64, 64, 1600]
    encoder.layers: [null, null, null, [{{conv: {{channels: 16}}}}]]
    training.epochs: [1, 1, 1, 0]
run:
  nodes_device: stm32f405-qemu
  samples: 30
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(STUDY.format(base=REPO / "experiments" / "smoke.yaml"))
    return path


def test_a_study_runs_its_points_on_a_local_cluster_and_resumes_without_work(study_file, tmp_path):
    study = load_study(study_file)
    # `encoder.layers: null` keeps the base's layers
    assert [len(p.experiment.encoder.layers) for p in study.points] == [2, 2, 2, 1]
    store = ResultsStore(tmp_path / "study.sqlite")
    table = run_study(study, store, workers=2)
    assert COLUMNS <= set(table.columns)
    by = {row.label: row for row in table.itertuples()}
    device = [r for r in table.itertuples() if r.status == "complete" and r.device_samples == r.device_samples]
    assert len(device) == 2
    for row in device:
        assert row.bitexact_rate == 1.0 and row.accuracy == row.golden_accuracy and row.device_samples == 30
        assert "counted on emulator" in row.basis and row.node_instructions_per_inference > 0
        assert row.flash_bytes > 0 and row.radio_energy_uj > 0
    host = by["code.bits=float,code.values=64,training.epochs=1"]
    assert host.status == "complete" and host.basis.startswith("host:") and host.accuracy == host.golden_accuracy_full
    assert host.bits_per_inference == 64 * 32
    failed = [r for r in table.itertuples() if r.status == "failed"]
    assert len(failed) == 1 and "FLASH" in failed[0].reason and "overflowed" in failed[0].reason
    runs_before = len(store.runs())

    again = run_study(study, store, workers=2)
    assert len(store.runs()) == runs_before
    assert again[["label", "status", "accuracy"]].equals(table[["label", "status", "accuracy"]])


def test_study_cli_json_show_and_export(study_file, tmp_path):
    db = tmp_path / "cli.sqlite"
    cli = [sys.executable, "-m", "harness.cli", "study"]
    run = subprocess.run([*cli, str(study_file), "--db", str(db), "--json", "--workers", "2"],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert run.returncode == 1, run.stderr  # one point failed, by design
    rows = json.loads(run.stdout.splitlines()[-1])
    assert [r["status"] for r in rows] == ["complete", "complete", "complete", "failed"]
    csv = tmp_path / "table.csv"
    export = subprocess.run([*cli, "export", str(study_file), "--db", str(db), "--csv", str(csv)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert export.returncode == 0, export.stderr
    header = csv.read_text().splitlines()[0].split(",")
    assert {"label", "code.bits", "code.values", "status", "accuracy"} <= set(header)
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--study", str(study_file), "--db", str(db),
                             "--out", str(tmp_path / "report")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<figure>") == 3 and "Figure 3)" in page and "FLASH" in page


def test_ctrl_c_stops_a_study_at_once_and_a_rerun_finishes_it(study_file, tmp_path):
    """Ctrl-C in a terminal signals the whole process group (the CLI and its Dask workers)."""
    db = tmp_path / "interrupted.sqlite"
    args = [sys.executable, "-m", "harness.cli", "study", str(study_file), "--db", str(db), "--workers", "2"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and _finished_points(db) < 1:
        time.sleep(0.5)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    signalled = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "finished results are kept" in stderr, stderr[-2000:]
    assert time.monotonic() - signalled < 60
    kept = _finished_points(db)
    assert kept >= 1

    rerun = subprocess.run([*args, "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 1, rerun.stderr[-2000:]  # the flash-overflow point fails by design
    rows = json.loads(rerun.stdout.splitlines()[-1])
    assert [r["status"] for r in rows] == ["complete", "complete", "complete", "failed"]
    with sqlite3.connect(db) as con:
        duplicated = con.execute("SELECT COUNT(*) FROM (SELECT run_id, node, sample FROM inferences "
                                 "GROUP BY run_id, node, sample HAVING COUNT(*) > 1)").fetchone()[0]
    assert duplicated == 0


def _finished_points(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM study_points WHERE status IN ('complete', 'failed')").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
