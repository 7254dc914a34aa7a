"""Radio cost models against published vectors and hand computations; radio profiles."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.core.registry import Registry

from harness.measure import radio_formulas as radio
from harness.core.errors import ConfigError
from harness.measure.radio_models import (RADIO_MODELS, LoRaWANModel, airtime_report,
                                    get_radio_profile, load_radio_profile, load_radio_profiles)


# ---- LoRa: the published test vectors (reference-figures.md; SX1276 4.1.1.6 / AN1200.13)

@pytest.mark.parametrize("payload, sf, expected_ms", [
    (10, 7, 41.216),    # SF7/125 kHz, DE = 0
    (10, 11, 577.536),  # SF11/125 kHz, DE = 1 (symbol time 16.384 ms > 16 ms)
    (13, 9, 164.864),   # SF9/125 kHz
])
def test_lora_time_on_air_published_vectors(payload, sf, expected_ms):
    assert radio.lora_time_on_air_s(payload, sf, 125_000) * 1e3 == pytest.approx(expected_ms, abs=1e-9)


def test_lora_low_data_rate_rule():
    assert not radio.lora_low_data_rate_optimize(10, 125_000)   # 8.192 ms
    assert radio.lora_low_data_rate_optimize(11, 125_000)       # 16.384 ms
    assert not radio.lora_low_data_rate_optimize(11, 250_000)   # 8.192 ms
    # forcing DE off at SF11 changes the vector: Npay = 8 + ceil(80/44)*5 = 18 -> 200.704 + 294.912
    assert radio.lora_time_on_air_s(10, 11, 125_000, low_dr_opt=False) * 1e3 == pytest.approx(495.616)


def test_lora_header_crc_and_coding_rate_by_hand():
    # SF7, 10 B, implicit header, no CRC: ceil((80 - 28 + 28 + 0 - 20) / 28) = 3 -> 8 + 15 = 23
    assert radio.lora_payload_symbols(10, 7, explicit_header=False, crc=False) == 23
    # CR 4/8 at SF7, 10 B: ceil(96 / 28) * 8 = 32 -> 40 symbols -> 12.544 + 40.96 ms
    assert radio.lora_time_on_air_s(10, 7, 125_000, cr=4) * 1e3 == pytest.approx(53.504)
    # the max(.., 0) clause: a 0-byte implicit-header packet at SF12 still has 8 payload symbols
    assert radio.lora_payload_symbols(0, 12, explicit_header=False, crc=False) == 8


def test_lora_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="spreading factor"):
        radio.lora_time_on_air_s(10, 13, 125_000)
    with pytest.raises(ConfigError, match="0..255"):
        radio.lora_time_on_air_s(256, 7, 125_000)


def test_lorawan_overhead_and_eu868_payloads():
    assert radio.LORAWAN_OVERHEAD_BYTES == 1 + 7 + 1 + 4
    assert [radio.eu868_max_app_payload(dr) for dr in range(7)] == [51, 51, 51, 115, 222, 222, 222]
    assert radio.eu868_max_app_payload(5, repeater_compatible=False) == 242
    assert radio.EU868_DATA_RATES[0] == (12, 125_000) and radio.EU868_DATA_RATES[5] == (7, 125_000)
    with pytest.raises(ConfigError, match="DR9"):
        radio.eu868_max_app_payload(9)


def test_fragmentation():
    assert radio.fragment_sizes(32, 51) == [32]               # fits: no fragment header
    assert radio.fragment_sizes(196, 51, header_bytes=1) == [51, 51, 51, 47]  # 50 + 50 + 50 + 46 (+1 each)
    assert radio.fragment_sizes(100, 50) == [50, 50]
    assert radio.fragment_sizes(0, 51) == [0]
    with pytest.raises(ConfigError, match="no room"):
        radio.fragment_sizes(10, 2, header_bytes=2)


def test_duty_cycle():
    toa = 0.041216
    assert radio.duty_cycle_off_time_s(toa, 0.01) == pytest.approx(99 * toa)
    assert radio.duty_cycle_max_rate_hz(toa, 0.01) == pytest.approx(0.01 / toa)  # 0.2426 Hz
    assert radio.duty_cycle_max_rate_hz(0.001, 1.0) == pytest.approx(1000.0)
    with pytest.raises(ConfigError):
        radio.duty_cycle_max_rate_hz(toa, 0.0)


# ---- BLE LE 1M by hand: bytes x 8 us

def test_ble_packets_by_hand():
    assert radio.ble_packet_bytes(27) == 1 + 4 + 2 + 27 + 3 == 37
    assert radio.ble_packet_time_s(27) == pytest.approx(296e-6)
    assert radio.ble_packet_time_s(27, encrypted=True) == pytest.approx(328e-6)   # + MIC 4
    assert radio.ble_packet_time_s(251) == pytest.approx((1 + 4 + 2 + 251 + 3) * 8e-6)  # 2088 us
    assert radio.ble_empty_packet_time_s() == pytest.approx(80e-6)


def test_ble_notifications_split_user_data():
    assert radio.ble_notification_ll_payloads(20, False) == [27]          # 20 user + 7 headers
    assert radio.ble_notification_ll_payloads(32, False) == [27, 19]      # 20 + 12
    assert radio.ble_notification_ll_payloads(244, True) == [251]
    assert radio.ble_notification_ll_payloads(245, True) == [251, 8]
    # one packet + T_IFS + empty packet + T_IFS = 296 + 150 + 80 + 150 us
    assert radio.ble_exchange_time_s([27]) == pytest.approx(676e-6)


# ---- IEEE 802.15.4 by hand: (5 + 1 + MPDU) x 32 us

def test_ieee802154_by_hand():
    assert radio.ieee802154_mac_overhead_bytes(6) == 2 + 1 + 6 + 2 == 11
    assert radio.ieee802154_max_mac_payload(6) == 116
    assert radio.ieee802154_mpdu_sizes(32, 6) == [43]
    assert radio.ieee802154_frame_time_s(43) == pytest.approx(49 * 32e-6)    # 1.568 ms
    assert radio.ieee802154_frame_time_s(127) == pytest.approx(133 * 32e-6)  # 4.256 ms, the longest frame
    assert radio.ieee802154_mpdu_sizes(196, 6, fragment_header_bytes=1) == [127, 93]  # 115 + 81 payload
    with pytest.raises(ConfigError):
        radio.ieee802154_frame_time_s(128)


def test_nbiot_energy_by_hand():
    # 32 B + 28 B IPv4/UDP = 480 bits at 62.5 kbit/s = 7.68 ms; 220 mA x 3.6 V = 0.792 W
    assert radio.nbiot_transfer_time_s(32, 62_500, 28) == pytest.approx(7.68e-3)
    assert radio.nbiot_energy_j(32, 1.0, 62_500, 0.792, 28) == pytest.approx(1.0 + 7.68e-3 * 0.792)
    assert radio.nbiot_energy_j(0, 0.5, 62_500, 0.792) == pytest.approx(0.5)


# ---- profiles

def test_shipped_profiles_load_with_a_source_on_every_constant():
    profiles = load_radio_profiles()
    assert {"lora-eu868-sf7", "lora-eu868-sf12", "ble-1m", "ieee802154-2450", "nbiot"} <= set(profiles)
    for profile in profiles.values():
        sources = profile.model.sources()
        assert sources and all(": " in s and len(s.split(": ", 1)[1]) >= 3 for s in sources)
        assert len(sources) == len([f for f in type(profile.model.constants).model_fields
                                    if getattr(profile.model.constants, f) is not None])


def test_lora_sf7_profile_by_hand():
    cost = get_radio_profile("lora-eu868-sf7").cost(32)
    assert cost.frame_bytes == (45,)                          # 32 + 13
    # PL 45 at SF7: ceil((360 - 28 + 44) / 28) = 14 -> 8 + 70 = 78 symbols -> 12.544 + 79.872 ms
    assert cost.airtime_s == pytest.approx(92.416e-3)
    assert cost.energy_j == pytest.approx(92.416e-3 * 0.029 * 3.3)
    assert cost.max_rate_hz == pytest.approx(0.01 / 92.416e-3)


def test_lora_sf12_profile_fragments_a_raw_view():
    cost = get_radio_profile("lora-eu868-sf12").cost(196)
    assert cost.frame_bytes == (64, 64, 64, 60)
    # SF12, DE = 1, Tsym 32.768 ms: PL 64 -> 8 + ceil(508/40)*5 = 73 symbols, PL 60 -> 8 + 12*5 = 68
    pre = 12.25 * 32.768
    expected_ms = 3 * (pre + 73 * 32.768) + (pre + 68 * 32.768)
    assert cost.airtime_s * 1e3 == pytest.approx(expected_ms)   # 11010.048 ms
    assert any("fragmented into 4 frames" in n for n in cost.notes)


def test_ble_and_802154_and_nbiot_profiles_by_hand():
    ble = get_radio_profile("ble-1m").cost(32)
    assert ble.frame_bytes == (27, 19) and ble.airtime_s == pytest.approx(528e-6)
    assert ble.energy_j == pytest.approx(528e-6 * 4.8e-3 * 3.0)
    assert ble.max_rate_hz == pytest.approx(1 / 7.5e-3)        # connection interval dominates
    zb = get_radio_profile("ieee802154-2450").cost(32)
    assert zb.frame_bytes == (43,) and zb.energy_j == pytest.approx(1.568e-3 * 17.4e-3 * 3.3)
    nb = get_radio_profile("nbiot").cost(32)
    assert nb.energy_j == pytest.approx(1.0 + 7.68e-3 * 0.792)
    assert nb.max_rate_hz == pytest.approx(10.0 / 480)


def test_airtime_report_is_plain_json(tmp_path):
    import json

    report = airtime_report("lora-eu868-sf7", 10)
    json.dumps(report)
    assert report["airtime_ms"] == pytest.approx(get_radio_profile("lora-eu868-sf7").cost(10).airtime_s * 1e3)
    assert report["basis"] == "model" and report["sources"] and report["frames"] == 1
    with pytest.raises(ConfigError, match="unknown radio 'nope'"):
        airtime_report("nope", 10)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_profile_errors_name_file_and_field(tmp_path):
    good = (Path(__file__).parents[2] / "devices" / "radios" / "lora-eu868-sf7.yaml").read_text()
    bad = _write(tmp_path / "lora-eu868-sf7.yaml", good.replace("tx_current_ma: {value: 29.0, source:", "tx_current_ma: {value: 29.0, sauce:"))
    with pytest.raises(ConfigError, match=r"lora-eu868-sf7.yaml: field 'constants.tx_current_ma.source'"):
        load_radio_profile(bad)
    missing = _write(tmp_path / "x.yaml", "name: x\nmodel: ble\nconstants: {}\n")
    with pytest.raises(ConfigError, match=r"x.yaml: field 'constants.bit_rate_bps'"):
        load_radio_profile(missing)
    unknown = _write(tmp_path / "y.yaml", "name: y\nmodel: smoke-signals\nconstants: {}\n")
    with pytest.raises(ConfigError, match=r"y.yaml: field 'model': unknown radio model 'smoke-signals'"):
        load_radio_profile(unknown)
    renamed = _write(tmp_path / "z.yaml", good)
    with pytest.raises(ConfigError, match="must match the file name"):
        load_radio_profile(renamed)
    broken = _write(tmp_path / "w.yaml", "name: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_radio_profile(broken)


def test_duplicate_profiles_and_registrations_are_refused(tmp_path):
    src = Path(__file__).parents[2] / "devices" / "radios" / "ble-1m.yaml"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ble-1m.yaml").write_text(src.read_text())
    assert "ble-1m" not in load_radio_profiles([src.parent, tmp_path / "a"])
    with pytest.raises(ConfigError, match="defined twice"):
        get_radio_profile("ble-1m", [src.parent, tmp_path / "a"])
    class Impostor(LoRaWANModel):
        name = "lorawan"

    with pytest.raises(ConfigError, match="already registered"):
        RADIO_MODELS.register(Impostor)
    registry = Registry("radio model")
    assert registry.register(LoRaWANModel) is LoRaWANModel
    assert math.isfinite(get_radio_profile("nbiot").cost(0).max_rate_hz)
