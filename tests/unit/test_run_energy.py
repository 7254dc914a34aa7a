"""The run JSON's energy/radio/bits blocks: every key present, a basis on each, hand-checked sums."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.measure.energy import ComputeTime
from harness.measure.meters.windows import MeterEnergy
from harness.measure.radio_models import get_radio_profile
from harness.measure.run_costs import energy_report

POWER = {"active_mw": 132.0, "idle_mw": 10.0, "source": "test figures"}
TIME = ComputeTime.from_instructions(1_680_000, 168e6)          # 10 ms, modelled


def _codes(seed: int, n: int):
    rng = np.random.default_rng(seed)
    return [rng.choice(16, size=(n, 16), p=[0.4, 0.2, 0.1, 0.1] + [0.2 / 12] * 12) for _ in range(4)]


def _report(**overrides):
    kwargs = dict(radio="lora-eu868-sf7", payload_bytes=[8] * 4, raw_bytes=196, compute_time_s=TIME.seconds,
                  time_basis=TIME.basis, time_assumption=TIME.assumption, power=POWER,
                  codes=_codes(0, 200), train_codes=_codes(1, 800), bits=4)
    kwargs.update(overrides)
    return energy_report(**kwargs)


def test_every_key_and_a_basis_on_each():
    r = _report()
    json.dumps(r)   # plain JSON
    assert {"energy", "radio", "entropy_bits_per_inference", "coded_bits_per_inference", "bits"} <= set(r)
    e = r["energy"]
    for key in ("compute_uj", "radio_uj", "total_uj", "raw_baseline_uj", "basis", "sources",
                "compute_net_uj", "total_net_uj", "saving_uj", "saving_ratio", "break_even", "per_node"):
        assert key in e, key
    assert e["basis"] == {"compute": "model", "radio": "model", "raw_baseline": "model", "total": "model"}
    assert e["sources"]["compute"] and e["sources"]["radio"]
    assert any("instruction count" in a for a in e["assumptions"])
    for node in e["per_node"]:
        assert node["basis"] == {"compute": "model", "radio": "model"}
    radio = r["radio"]
    for key in ("name", "airtime_ms", "max_rate_hz", "basis", "sources"):
        assert key in radio, key
    assert radio["name"] == "lora-eu868-sf7" and radio["basis"] == "model"
    assert r["bits"]["basis"].startswith("empirical")
    assert r["coded_bits_per_inference"] == pytest.approx(r["bits"]["coded"]["huffman"])
    assert 0 < r["entropy_bits_per_inference"] < r["bits"]["nominal_bits"] == 256


def test_energy_sums_by_hand():
    r = _report()
    e = r["energy"]
    lora = get_radio_profile("lora-eu868-sf7")
    enc, raw = lora.cost(8).energy_j * 1e6, lora.cost(196).energy_j * 1e6
    assert e["compute_uj"] == pytest.approx(4 * 0.01 * 132.0 * 1e3)        # 4 x 1320 uJ
    assert e["compute_net_uj"] == pytest.approx(4 * 0.01 * 122.0 * 1e3)
    assert e["radio_uj"] == pytest.approx(4 * enc)
    assert e["total_uj"] == pytest.approx(e["compute_uj"] + e["radio_uj"])
    assert e["raw_baseline_uj"] == pytest.approx(4 * raw)
    assert e["saving_uj"] == pytest.approx(e["raw_baseline_uj"] - e["total_uj"])
    assert e["break_even"]["compute_time_s_per_node"][0] == pytest.approx((raw - enc) * 1e-6 / 0.132)
    assert r["radio"]["airtime_ms"] == pytest.approx(lora.cost(8).airtime_s * 1e3)
    assert r["radio"]["max_rate_hz"] == pytest.approx(0.01 / lora.cost(8).airtime_s)
    assert r["radio"]["raw"]["airtime_ms"] == pytest.approx(lora.cost(196).airtime_s * 1e3)


def test_meter_node_mixes_bases():
    meter = MeterEnergy("ppk2", 10, gross_j=600e-6, net_j=525e-6, idle_power_w=0.015, idle_source="x",
                        method="per-inference windows", per_inference_gross_j=None, per_inference_net_j=None,
                        sources=("Nordic PPK2 via ppk2-api",))
    r = _report(meter=[meter, None, None, None], codes=None, train_codes=None)
    e = r["energy"]
    assert e["per_node"][0]["compute_uj"] == pytest.approx(600.0)
    assert e["per_node"][0]["basis"]["compute"] == "meter"
    assert e["basis"]["compute"] == "meter+model" and e["basis"]["total"] == "meter+model"
    assert any("PPK2" in s for s in e["sources"]["compute"])
    assert r["entropy_bits_per_inference"] is None and r["bits"]["missing"]


def test_node_without_power_figures_keeps_radio_and_says_why():
    r = _report(power=None, codes=None)
    e = r["energy"]
    assert e["compute_uj"] is None and e["total_uj"] is None and e["saving_uj"] is None
    assert e["basis"]["compute"] is None and e["basis"]["radio"] == "model"
    assert e["radio_uj"] > 0 and len(e["missing"]) == 4 and "no power figures" in e["missing"][0]


def test_per_node_inputs_and_other_radios():
    r = _report(radio="ble-1m", payload_bytes=[8, 8, 16, 16], compute_time_s=[0.01, 0.01, 0.02, 0.02],
                codes=None)
    e = r["energy"]
    assert [p["compute_uj"] for p in e["per_node"]] == pytest.approx([1320.0, 1320.0, 2640.0, 2640.0])
    assert r["radio"]["frames_per_node"] == [1, 1, 1, 1] and r["radio"]["raw"]["frames_per_node"] == [10] * 4
    with pytest.raises(Exception, match="3 entries for 4 nodes"):
        _report(compute_time_s=[0.01] * 3, codes=None)
