import os
import subprocess
import sys


def hilbench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_is_instant_and_lists_commands():
    proc = hilbench("--help")
    assert proc.returncode == 0
    for command in ("train", "export", "run", "report", "results", "devices"):
        assert command in proc.stdout


def test_heavy_libraries_are_not_imported_for_help():
    code = "import sys; from harness.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'brevitas', 'matplotlib', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_malformed_experiment_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: mnist\ncode: {values: 64, bits: 4\n")
    proc = hilbench("run", str(bad))
    assert proc.returncode == 2 and f"{bad}: malformed YAML at line" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_device_is_named_before_anything_is_trained(tmp_path):
    models = tmp_path / "models"
    proc = hilbench("run", "experiments/paper-mnist.yaml", "--nodes-device", "no-such-board",
                    "--db", str(tmp_path / "r.sqlite"), env={"HILBENCH_MODEL_CACHE": str(models)})
    assert proc.returncode == 2
    assert "unknown device 'no-such-board'; known: " in proc.stderr and "stm32f405-qemu" in proc.stderr
    assert not models.exists() or not any(models.iterdir())


def test_devices_list_shows_a_broken_profile_with_its_error(tmp_path):
    (tmp_path / "half-done.yaml").write_text("name: half-done\nkind: mcu\n")
    proc = hilbench("devices", "list", env={"HILBENCH_PROFILE_DIRS": str(tmp_path), "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "stm32f405-qemu" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if "half-done" in line)
    assert "unusable" in line and "field 'emulated'" in proc.stdout


def test_radio_airtime_json_and_unknown_radio():
    import json

    proc = hilbench("radio", "airtime", "--radio", "lora-eu868-sf7", "--bytes", "10", "--json")
    report = json.loads(proc.stdout)
    assert abs(report["airtime_ms"] - 61.696) < 1e-6  # 23 B on air at SF7/125 kHz, CR 4/5
    assert report["basis"] == "model" and report["sources"]
    bad = hilbench("radio", "airtime", "--radio", "carrier-pigeon", "--bytes", "10")
    assert bad.returncode == 2 and "carrier-pigeon" in bad.stderr
