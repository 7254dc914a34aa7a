"""The pytest plugin, exercised with pytester in a subprocess (real QEMU behind hil_run)."""
import sqlite3
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

EXAMPLE = """
import pytest

@pytest.mark.hil_hardware
def test_on_device(hil_run):
    summary = hil_run()
    assert summary["bitexact_rate"] == 1.0

def test_plain():
    assert True
"""


@pytest.fixture
def example(pytester):
    # the subprocess inherits the session's HILBENCH_CACHE and dataset inputs (see conftest.py)
    pytester.makepyfile(test_example=EXAMPLE)
    return pytester


def test_hardware_tests_are_skipped_without_a_device(example):
    result = example.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*hil_hardware: no device given (use --hil-device NAME)*"])


def test_benchmark_runs_on_the_emulated_device_and_is_recorded(example, tmp_path):
    db = tmp_path / "plugin.sqlite"
    result = example.runpytest_subprocess(
        "--hil-device", "stm32f405-qemu", "--hil-experiment", str(REPO / "experiments/smoke.yaml"),
        "--hil-db", str(db), "--hil-samples", "12", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT experiment, samples, status, node_device FROM runs").fetchall() == [
            ("smoke", 12, "complete", "stm32f405-qemu")]


def test_unknown_device_is_a_clear_error(example):
    result = example.runpytest_subprocess("--hil-device", "no-such-device", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*unknown device 'no-such-device'; known:*"])


def test_plugin_options_are_listed_in_help(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--hil-device=HIL_DEVICE*", "*--hil-experiment=HIL_EXPERIMENT*", "*--hil-db=HIL_DB*"])


def test_a_study_runs_as_one_test_per_point_and_is_recorded(pytester, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"""
name: plugin-study
base: {REPO / "experiments" / "smoke.yaml"}
matrix:
  zip: {{code.bits: [4, float, 4], code.values: [64, 64, 1600], training.epochs: [1, 1, 0],
         encoder.layers: [null, null, [{{conv: {{channels: 16}}}}]]}}
run: {{nodes_device: stm32f405-qemu, samples: 8}}
""")
    db = tmp_path / "plugin.sqlite"
    result = pytester.runpytest_subprocess("--hil-study", str(study), "--hil-db", str(db), "-p", "no:cacheprovider",
                                           "-v", "--junitxml", str(tmp_path / "junit.xml"))
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*plugin-study[[]code.bits=4,code.values=64,training.epochs=1[]] PASSED*",
                                 "*study point code.bits=4,code.values=1600,* FLASH*overflowed*"])
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT label, status FROM study_points ORDER BY position").fetchall()
    assert [status for _, status in rows] == ["complete", "complete", "failed"]
    assert 'name="hil_bitexact_rate" value="1.0"' in (tmp_path / "junit.xml").read_text()
