"""The run engine's plan step: every option, profile, radio, meter and gateway is checked before
anything is trained or deployed, and nothing heavy is imported to do it."""
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.run import RunOptions, plan_run
from quant_models.experiment import load_experiment, parse_experiment

REPO = Path(__file__).resolve().parents[2]
SMOKE = load_experiment(REPO / "experiments" / "smoke.yaml")
MCU = "name: {name}\nkind: mcu\nemulated: true\nboard: netduinoplus2\ndeploy: {{method: qemu}}\n"


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HILBENCH_PROFILE_DIRS", str(tmp_path))
    return tmp_path


def test_a_good_plan_names_every_node_device_and_the_samples():
    plan = plan_run(SMOKE, RunOptions(samples=50, gateway_device="pi-loopback"))
    assert plan.node_devices == ["stm32f405-qemu"] * 4 and plan.gateway == "pi-loopback"
    assert plan.samples == 50 and plan.partition.nodes == 4
    assert set(plan.profiles) == {"stm32f405-qemu", "pi-loopback"}
    assert plan_run(SMOKE, RunOptions(samples=10**9)).samples == len(plan.data.test_y)


@pytest.mark.parametrize("options, message", [
    (RunOptions(samples=0), r"--samples must be at least 1 \(got 0\)"),
    (RunOptions(samples=-3), r"--samples must be at least 1"),
    (RunOptions(nodes_device="nosuch"), r"unknown device 'nosuch'; known: .*stm32f405-qemu"),
    (RunOptions(gateway_device="nosuch"), r"unknown device 'nosuch'"),
    (RunOptions(gateway_device="stm32f405-qemu"), r"'stm32f405-qemu' \(kind mcu\) cannot be a gateway"),
])
def test_bad_options_fail_in_the_plan(options, message):
    with pytest.raises(ConfigError, match=message):
        plan_run(SMOKE, options)


def test_host_only_models_and_node_counts_are_refused():
    floats = SMOKE.model_copy(update={"code": SMOKE.code.model_copy(update={"bits": "float"})})
    with pytest.raises(ConfigError, match="a device run needs quantized node encoders"):
        plan_run(floats, RunOptions())
    three = parse_experiment({"name": "x", "dataset": "mnist", "code": {"values": 64, "bits": 4},
                              "devices": {"nodes": ["stm32f405-qemu"] * 3}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: field 'devices.nodes': devices.nodes lists 3 devices for 4 nodes"):
        plan_run(three, RunOptions())


def test_a_profile_naming_an_unknown_radio_or_meter_fails_in_the_plan(profile_dir):
    (profile_dir / "no-radio.yaml").write_text(MCU.format(name="no-radio") + "radio: carrier-pigeon\n")
    (profile_dir / "no-meter.yaml").write_text(MCU.format(name="no-meter") + "meter: otii\n")
    with pytest.raises(ConfigError, match="unknown radio 'carrier-pigeon'"):
        plan_run(SMOKE, RunOptions(nodes_device="no-radio"))
    with pytest.raises(ConfigError, match=r"no-meter.yaml: field 'meter': unknown meter 'otii'; known: .*ppk2"):
        plan_run(SMOKE, RunOptions(nodes_device="no-meter"))


def test_a_broken_profile_file_breaks_only_itself(profile_dir):
    (profile_dir / "broken.yaml").write_text("name: broken\nkind: [\n")
    assert plan_run(SMOKE, RunOptions(samples=5)).node_devices[0] == "stm32f405-qemu"
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line 3"):
        plan_run(SMOKE, RunOptions(nodes_device="broken"))


def test_planning_imports_no_training_or_inference_library():
    code = ("import sys; from harness.run import RunOptions, plan_run; "
            "from quant_models.experiment import load_experiment; "
            "plan_run(load_experiment('experiments/paper-mnist.yaml'), RunOptions(gateway_device='pi-loopback')); "
            "print(sorted(m for m in ('torch', 'brevitas', 'onnxruntime', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
