"""Energy arithmetic against hand-computed values."""
from __future__ import annotations

import pytest

from harness.measure import energy as en
from harness.core.errors import ConfigError, MeasurementError

POWER = en.PowerFigures(active_mw=132.0, idle_mw=10.0, source="test figures")


def test_compute_time_from_instructions_states_its_assumption():
    t = en.ComputeTime.from_instructions(1_680_000, 168e6)
    assert t.seconds == pytest.approx(0.01) and t.basis == "modelled"
    assert "1 cycle(s) per instruction at 168 MHz" in t.assumption and "instruction count" in t.assumption
    assert en.ComputeTime.from_instructions(1_000, 1e6, cycles_per_instruction=1.5).seconds == pytest.approx(1.5e-3)
    m = en.ComputeTime.measured(0.002, "DWT cycle counter at 16 MHz")
    assert m.basis == "measured" and m.assumption.startswith("measured: DWT")
    with pytest.raises(ConfigError):
        en.ComputeTime(0.1, "guessed", "")  # type: ignore[arg-type]
    with pytest.raises(MeasurementError):
        en.ComputeTime(-1.0, "measured", "")


def test_compute_energy_gross_and_net_by_hand():
    e = en.compute_energy_model(en.ComputeTime.from_instructions(1_680_000, 168e6), POWER)
    assert e.gross.joules == pytest.approx(0.01 * 0.132)     # 1.32 mJ
    assert e.net.joules == pytest.approx(0.01 * 0.122)       # 1.22 mJ
    assert e.gross.microjoules == pytest.approx(1320.0)
    assert e.gross.basis == e.net.basis == "model"
    assert any("test figures" in s for s in e.gross.sources) and any("modelled" in s for s in e.gross.sources)


def test_power_figures_validation_and_from_spec():
    assert en.PowerFigures.from_spec({"active_mw": 5, "idle_mw": 1, "source": "x"}) == en.PowerFigures(5.0, 1.0, "x")

    class Spec:  # a profile's PowerSpec has attributes, not keys
        active_mw, idle_mw, source = 5.0, 1.0, "attr"

    assert en.PowerFigures.from_spec(Spec()).source == "attr"
    with pytest.raises(ConfigError, match="exceeds"):
        en.PowerFigures(1.0, 2.0, "bad")
    with pytest.raises(ConfigError):
        en.PowerFigures.from_spec({"active_mw": 5})


def test_radio_energy_and_basis_arithmetic():
    r = en.radio_energy(0.1, 0.0957, ("SX1276",))
    assert r.joules == pytest.approx(9.57e-3) and r.basis == "model"
    meter = en.Energy(1e-3, "meter", ("ppk2",))
    total = meter + r
    assert total.joules == pytest.approx(1.057e-2)
    assert total.basis == "meter+model" and total.sources == ("ppk2", "SX1276")
    assert en.combine_basis("model", "model") == "model"
    assert en.combine_basis("meter+model", "meter") == "meter+model"
    with pytest.raises(MeasurementError):
        en.combine_basis("guess")


def test_summary_saving_and_ratio_by_hand():
    compute = en.compute_energy_model(en.ComputeTime(0.01, "modelled", "m"), POWER)   # 1.32 mJ gross
    nodes = [en.NodeEnergy(i, compute, en.Energy(5e-3, "model"), en.Energy(30e-3, "model")) for i in range(4)]
    s = en.summarize(nodes)
    assert s.compute.joules == pytest.approx(4 * 1.32e-3)
    assert s.compute_net.joules == pytest.approx(4 * 1.22e-3)
    assert s.radio.joules == pytest.approx(20e-3)
    assert s.total.joules == pytest.approx(20e-3 + 5.28e-3)
    assert s.raw_baseline.joules == pytest.approx(120e-3)
    assert s.saving.joules == pytest.approx(120e-3 - 25.28e-3)
    assert s.saving_ratio == pytest.approx(120 / 25.28)
    assert s.total.basis == "model"


def test_summary_without_compute_energy_keeps_radio():
    nodes = [en.NodeEnergy(0, None, en.Energy(5e-3, "model"), en.Energy(30e-3, "model"))]
    s = en.summarize(nodes)
    assert s.compute is None and s.total is None and s.saving is None and s.saving_ratio is None
    assert s.radio.joules == pytest.approx(5e-3)


def test_break_even_compute_time_by_hand():
    # raw 31.8734592 mJ vs encoded 5.4143232 mJ radio at 132 mW active: t* = 26.459136 mJ / 0.132 W
    assert en.break_even_compute_time_s(31.8734592e-3, 5.4143232e-3, 0.132) == pytest.approx(0.200448)
    assert en.break_even_compute_time_s(1e-3, 2e-3, 0.132) is None


def test_break_even_raw_bytes_by_hand():
    # a step radio: 1 uJ per started 10-byte block; encoding costs 3 uJ compute + 1 uJ (8 B)
    def step(b: int) -> float:
        return 1e-6 * -(-b // 10)

    # needs E(B) > 4 uJ -> 5 blocks -> B = 41
    assert en.break_even_raw_bytes(step, 3e-6, 8) == 41
    assert en.break_even_raw_bytes(step, 1.0, 8, max_bytes=1000) is None
    assert en.break_even_raw_bytes(lambda b: 1.0, 0.0, 8) is None      # a flat radio never pays off
    assert en.break_even_raw_bytes(lambda b: 1.0 + b, 0.0, 8) == 9      # free compute: any larger view
    with pytest.raises(MeasurementError):
        en.break_even_raw_bytes(step, -1.0, 8)
