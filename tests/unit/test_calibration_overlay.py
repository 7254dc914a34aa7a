"""Profile overlays (what `hilbench devices calibrate` writes) and emulated stand-ins of a
calibrated device: the overlay's figures replace the profile's, bad overlays are named, and an
emulated profile with calibrated_by models its compute time and energy on the calibrated device."""
from __future__ import annotations

import pytest
import yaml

from harness.config.profiles import calibrated_model, get_profile
from harness.core.errors import ConfigError
from harness.measure.calibration import Calibration, write_overlay
from harness.store.summary import node_compute_time

REAL = """name: my-nucleo
kind: mcu
emulated: false
board: nucleo-f446re
cpu: Cortex-M4F
clock_hz: 16000000
transport: {url: /dev/ttyACM0}
deploy: {method: none}
"""
STAND_IN = """name: my-nucleo-emu
kind: mcu
emulated: true
board: netduinoplus2
cpu: Cortex-M4F
clock_hz: 168000000
deploy: {method: qemu}
calibrated_by: my-nucleo
"""


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HILBENCH_PROFILE_DIRS", str(tmp_path))
    (tmp_path / "my-nucleo.yaml").write_text(REAL)
    (tmp_path / "my-nucleo-emu.yaml").write_text(STAND_IN)
    return tmp_path


def _calibration(**changes) -> Calibration:
    fields = dict(profile="my-nucleo", active_mw=12.5, idle_mw=3.25, cycles_per_instruction=1.25,
                  against="stm32f405-qemu", workload="smoke node 0, test samples 0..199", samples=200, windows=200,
                  meter="measured: Nordic PPK2 ampere meter 3.3 V, 100 kS/s, marker PA8 on D0", label="measured",
                  measured_at="2026-01-02 03:04:05 +0000", device_count_unit="cycles",
                  device_count_per_inference=210_000.0, emulated_instructions_per_inference=168_000.0)
    return Calibration(**{**fields, **changes})


def test_overlay_replaces_power_and_adds_the_calibration(profile_dir):
    assert get_profile("my-nucleo").power is None
    path = write_overlay(_calibration(), profile_dir)
    assert path == profile_dir / "overlays" / "my-nucleo.yaml"
    profile = get_profile("my-nucleo")
    assert (profile.power.active_mw, profile.power.idle_mw) == (12.5, 3.25)
    assert profile.power.source.startswith("measured by `hilbench devices calibrate my-nucleo`")
    assert profile.calibration.cycles_per_instruction == 1.25 and profile.calibration.against == "stm32f405-qemu"
    simulated = _calibration(label="simulated meter").overlay()
    assert simulated["power"]["source"].startswith("simulated meter (not a measurement)")


def test_bad_overlays_are_named(profile_dir):
    (profile_dir / "overlays").mkdir()
    bad = profile_dir / "overlays" / "my-nucleo.yaml"
    bad.write_text("clock_hz: 1\n")
    with pytest.raises(ConfigError, match=r"overlays/my-nucleo.yaml: field 'clock_hz': a profile overlay sets only "
                                          r"power, calibration"):
        get_profile("my-nucleo")
    bad.write_text(yaml.safe_dump({"power": {"active_mw": -1, "idle_mw": 0, "source": "x y z"}}))
    with pytest.raises(ConfigError, match=r"overlays/my-nucleo.yaml: field 'power.active_mw'"):
        get_profile("my-nucleo")


def test_a_stand_in_models_time_and_power_on_the_calibrated_device(profile_dir):
    stand_in = get_profile("my-nucleo-emu")
    with pytest.raises(ConfigError, match=r"field 'calibrated_by'.*run `hilbench devices calibrate my-nucleo`"):
        calibrated_model(stand_in)
    write_overlay(_calibration(), profile_dir)
    assert calibrated_model(stand_in).name == "my-nucleo"
    node = {"device": "my-nucleo-emu", "info": {},
            "latency": {"mean": 168_000.0, "unit": "instructions", "basis": "counted on emulator"}}
    t = node_compute_time(node, stand_in)  # type: ignore[arg-type]
    assert t.seconds == pytest.approx(168_000 * 1.25 / 16e6)          # 13.125 ms at the nucleo's 16 MHz
    assert t.basis == "modelled" and "cycles per instruction measured on my-nucleo" in t.assumption
    with pytest.raises(ConfigError, match="only an emulated profile stands in"):
        (profile_dir / "bad.yaml").write_text(REAL.replace("my-nucleo", "bad") + "calibrated_by: my-nucleo\n")
        get_profile("bad")
