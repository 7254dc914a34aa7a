"""Radio cost models as pure functions: time on air, framing, duty-cycle limits, energy.

Every function here is arithmetic on published formulas, so each can be checked by hand or
against a published test vector (``tests/unit/test_radio.py``). Constants that belong to a
particular radio (spreading factor, TX current, ...) are not defined here but in the radio
profiles (``devices/radios/*.yaml``), each with its source; see :mod:`harness.measure.radio_models`.

Sources of the formulas:
- LoRa: Semtech SX1276/77/78/79 datasheet rev. 7, section 4.1.1.6 ("Time on air"), and
  Semtech AN1200.13 ("LoRa Modem Designer's Guide").
- LoRaWAN framing: LoRaWAN 1.0.3 specification, section 4 (MHDR 1 + FHDR 7 + FPort 1 + MIC 4).
  EU868 maximum payloads: LoRaWAN Regional Parameters (RP002-1.0.x), EU863-870.
- BLE: Bluetooth Core Specification 5.x, Vol 6 Part B section 2.1 (LE 1M packet format),
  section 4.1 (T_IFS = 150 us); Vol 3 Part A 3.1 (L2CAP basic header, 4 bytes) and Part F
  3.4.7.1 (ATT Handle Value Notification: opcode 1 + handle 2).
- IEEE 802.15.4-2020: O-QPSK PHY at 2450 MHz (250 kbit/s, 32 us per octet, SHR 5 + PHR 1,
  aMaxPhyPacketSize 127) and the MAC frame format (frame control 2, sequence number 1,
  addressing 0-20, FCS 2).
"""
from __future__ import annotations

import math

from harness.core.errors import ConfigError

# ---------------------------------------------------------------- LoRa / LoRaWAN

LORAWAN_OVERHEAD_BYTES = 13
"""MHDR 1 + FHDR 7 (no FOpts) + FPort 1 + MIC 4 (LoRaWAN 1.0.3, section 4)."""

EU868_DATA_RATES: dict[int, tuple[int, int]] = {
    0: (12, 125_000), 1: (11, 125_000), 2: (10, 125_000), 3: (9, 125_000),
    4: (8, 125_000), 5: (7, 125_000), 6: (7, 250_000),
}
"""EU868 LoRa data rates: DR -> (spreading factor, bandwidth in Hz) (RP002-1.0.x, EU863-870)."""

_EU868_MAX_APP_PAYLOAD = {0: 51, 1: 51, 2: 51, 3: 115, 4: 222, 5: 222, 6: 222}
_EU868_MAX_APP_PAYLOAD_NO_REPEATER = {0: 51, 1: 51, 2: 51, 3: 115, 4: 242, 5: 242, 6: 242}


def lora_symbol_time_s(sf: int, bw_hz: float) -> float:
    """Tsym = 2^SF / BW."""
    return (1 << sf) / bw_hz


def lora_low_data_rate_optimize(sf: int, bw_hz: float) -> bool:
    """Whether low data rate optimisation is mandated: symbol time above 16 ms (SX1276 4.1.1.6).

    At 125 kHz this is SF11 (16.384 ms) and SF12 (32.768 ms)."""
    return lora_symbol_time_s(sf, bw_hz) > 0.016


def lora_payload_symbols(payload_bytes: int, sf: int, cr: int = 1, explicit_header: bool = True,
                         crc: bool = True, low_dr_opt: bool = False) -> int:
    """Number of payload symbols:
    8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)."""
    ih = 0 if explicit_header else 1
    de = 1 if low_dr_opt else 0
    numerator = 8 * payload_bytes - 4 * sf + 28 + 16 * int(crc) - 20 * ih
    return 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * (cr + 4), 0)


def lora_time_on_air_s(payload_bytes: int, sf: int, bw_hz: float, cr: int = 1, preamble: int = 8,
                       explicit_header: bool = True, crc: bool = True,
                       low_dr_opt: bool | None = None) -> float:
    """Time on air of one LoRa packet with a PHY payload of ``payload_bytes``.

    ``cr`` is 1..4 for coding rates 4/5..4/8; ``low_dr_opt=None`` applies the rule of
    :func:`lora_low_data_rate_optimize`. ToA = (Npre + 4.25) Tsym + Npay Tsym.
    Published vectors: SF7/125 kHz/10 B -> 41.216 ms; SF11/10 B -> 577.536 ms;
    SF9/13 B -> 164.864 ms (all CR 4/5, 8-symbol preamble, explicit header, CRC on)."""
    if not 6 <= sf <= 12:
        raise ConfigError(f"LoRa spreading factor must be 6..12, not {sf}")
    if not 1 <= cr <= 4:
        raise ConfigError(f"LoRa coding rate index must be 1..4 (4/5..4/8), not {cr}")
    if not 0 <= payload_bytes <= 255:
        raise ConfigError(f"a LoRa PHY payload holds 0..255 bytes, not {payload_bytes}")
    if low_dr_opt is None:
        low_dr_opt = lora_low_data_rate_optimize(sf, bw_hz)
    t_sym = lora_symbol_time_s(sf, bw_hz)
    symbols = lora_payload_symbols(payload_bytes, sf, cr, explicit_header, crc, low_dr_opt)
    return (preamble + 4.25) * t_sym + symbols * t_sym


def eu868_max_app_payload(dr: int, repeater_compatible: bool = True) -> int:
    """Maximum application payload (FRMPayload, bytes) at EU868 data rate ``dr``."""
    table = _EU868_MAX_APP_PAYLOAD if repeater_compatible else _EU868_MAX_APP_PAYLOAD_NO_REPEATER
    if dr not in table:
        raise ConfigError(f"unknown EU868 data rate DR{dr}; known: DR0..DR6")
    return table[dr]


def fragment_sizes(payload_bytes: int, max_frame_payload: int, header_bytes: int = 0) -> list[int]:
    """Split a payload into frames whose payload is at most ``max_frame_payload`` bytes.

    A payload that fits is sent as one frame without a fragment header. When it does not fit,
    each frame carries ``header_bytes`` of fragment header (e.g. a fragment index) plus up to
    ``max_frame_payload - header_bytes`` bytes of the payload. Returns the frame payload sizes
    (header included) in order; an empty payload is one empty frame."""
    if payload_bytes < 0:
        raise ConfigError(f"payload size must be >= 0, not {payload_bytes}")
    if payload_bytes <= max_frame_payload:
        return [payload_bytes]
    chunk = max_frame_payload - header_bytes
    if chunk <= 0:
        raise ConfigError(f"a fragment header of {header_bytes} B leaves no room in a "
                          f"{max_frame_payload} B frame")
    full, rest = divmod(payload_bytes, chunk)
    return [max_frame_payload] * full + ([rest + header_bytes] if rest else [])


def duty_cycle_max_rate_hz(airtime_s: float, duty_cycle: float) -> float:
    """Highest message rate a transmitter may sustain under a duty-cycle limit.

    A 1 % duty cycle means each transmission of ToA is followed by an off time of 99 x ToA,
    so the period is ToA / duty_cycle. With ``duty_cycle = 1`` this is the channel-occupancy
    bound 1 / airtime (no regulatory limit)."""
    if not 0 < duty_cycle <= 1:
        raise ConfigError(f"duty cycle must be in (0, 1], not {duty_cycle}")
    if airtime_s <= 0:
        return math.inf
    return duty_cycle / airtime_s


def duty_cycle_off_time_s(airtime_s: float, duty_cycle: float) -> float:
    """Mandatory silence after a transmission: ToA x (1 / duty_cycle - 1) (99 x ToA at 1 %)."""
    if not 0 < duty_cycle <= 1:
        raise ConfigError(f"duty cycle must be in (0, 1], not {duty_cycle}")
    return airtime_s * (1.0 / duty_cycle - 1.0)


# ---------------------------------------------------------------- BLE (LE 1M)

BLE_PREAMBLE_BYTES = 1
BLE_ACCESS_ADDRESS_BYTES = 4
BLE_HEADER_BYTES = 2
BLE_MIC_BYTES = 4
BLE_CRC_BYTES = 3
BLE_T_IFS_S = 150e-6
BLE_MAX_LL_PAYLOAD = 27
BLE_MAX_LL_PAYLOAD_DLE = 251
BLE_ATT_NOTIFICATION_OVERHEAD = 7
"""L2CAP basic header 4 + ATT opcode 1 + attribute handle 2: user data = LL payload - 7."""


def ble_packet_bytes(ll_payload_bytes: int, encrypted: bool = False) -> int:
    """Bytes on air of one LE 1M link-layer packet: preamble 1 + access address 4 + header 2 +
    payload + MIC 4 (if encrypted) + CRC 3."""
    return (BLE_PREAMBLE_BYTES + BLE_ACCESS_ADDRESS_BYTES + BLE_HEADER_BYTES + ll_payload_bytes
            + (BLE_MIC_BYTES if encrypted else 0) + BLE_CRC_BYTES)


def ble_packet_time_s(ll_payload_bytes: int, encrypted: bool = False, bit_rate_bps: float = 1e6) -> float:
    """Time on air of one packet: 8 bits per byte at 1 us per bit on LE 1M."""
    return ble_packet_bytes(ll_payload_bytes, encrypted) * 8 / bit_rate_bps


def ble_max_ll_payload(data_length_extension: bool) -> int:
    """27 bytes, or 251 with LE Data Length Extension (Core 4.2+)."""
    return BLE_MAX_LL_PAYLOAD_DLE if data_length_extension else BLE_MAX_LL_PAYLOAD


def ble_notification_ll_payloads(user_bytes: int, data_length_extension: bool) -> list[int]:
    """LL payload sizes of the notifications that carry ``user_bytes`` of application data.

    Each notification carries up to LL max - 7 bytes (20 B, or 244 B with DLE) plus the 7 bytes
    of L2CAP and ATT headers; a larger payload is split over several notifications."""
    per_packet = ble_max_ll_payload(data_length_extension) - BLE_ATT_NOTIFICATION_OVERHEAD
    return [size + BLE_ATT_NOTIFICATION_OVERHEAD for size in fragment_sizes(user_bytes, per_packet)]


def ble_empty_packet_time_s(bit_rate_bps: float = 1e6) -> float:
    """An empty LL packet (the peer's acknowledgement in a connection event): 10 bytes, 80 us on
    LE 1M. It has no MIC even on an encrypted link (Core Vol 6 Part B 2.4: no MIC on an empty PDU)."""
    return ble_packet_time_s(0, False, bit_rate_bps)


def ble_exchange_time_s(ll_payloads: list[int], encrypted: bool = False, bit_rate_bps: float = 1e6) -> float:
    """Channel time of sending the packets in a connection event: each data packet, T_IFS, the
    central's empty packet and T_IFS again. Used for the channel-limited rate, not for energy
    (the node's TX energy counts only its own packets)."""
    empty = ble_empty_packet_time_s(bit_rate_bps)
    return sum(ble_packet_time_s(p, encrypted, bit_rate_bps) + 2 * BLE_T_IFS_S + empty for p in ll_payloads)


# ---------------------------------------------------------------- IEEE 802.15.4 (2.4 GHz O-QPSK)

IEEE802154_US_PER_BYTE = 32.0
IEEE802154_SHR_BYTES = 5
IEEE802154_PHR_BYTES = 1
IEEE802154_MAX_PSDU = 127
IEEE802154_FRAME_CONTROL_BYTES = 2
IEEE802154_SEQUENCE_BYTES = 1
IEEE802154_FCS_BYTES = 2


def ieee802154_mac_overhead_bytes(addressing_bytes: int) -> int:
    """MAC header + footer: frame control 2 + sequence 1 + addressing (0..20) + FCS 2."""
    if not 0 <= addressing_bytes <= 20:
        raise ConfigError(f"802.15.4 addressing fields take 0..20 bytes, not {addressing_bytes}")
    return IEEE802154_FRAME_CONTROL_BYTES + IEEE802154_SEQUENCE_BYTES + addressing_bytes + IEEE802154_FCS_BYTES


def ieee802154_max_mac_payload(addressing_bytes: int) -> int:
    """Largest MAC payload in one frame: 127 - MAC overhead."""
    return IEEE802154_MAX_PSDU - ieee802154_mac_overhead_bytes(addressing_bytes)


def ieee802154_mpdu_sizes(payload_bytes: int, addressing_bytes: int, fragment_header_bytes: int = 0) -> list[int]:
    """MPDU sizes (MAC header + payload + FCS) of the frames carrying ``payload_bytes``."""
    overhead = ieee802154_mac_overhead_bytes(addressing_bytes)
    chunks = fragment_sizes(payload_bytes, ieee802154_max_mac_payload(addressing_bytes), fragment_header_bytes)
    return [c + overhead for c in chunks]


def ieee802154_frame_time_s(mpdu_bytes: int) -> float:
    """Time on air of one PPDU: (SHR 5 + PHR 1 + MPDU) x 32 us."""
    if not 0 <= mpdu_bytes <= IEEE802154_MAX_PSDU:
        raise ConfigError(f"an 802.15.4 MPDU holds at most {IEEE802154_MAX_PSDU} bytes, not {mpdu_bytes}")
    return (IEEE802154_SHR_BYTES + IEEE802154_PHR_BYTES + mpdu_bytes) * IEEE802154_US_PER_BYTE * 1e-6


# ---------------------------------------------------------------- NB-IoT

def nbiot_transfer_time_s(payload_bytes: int, uplink_rate_bps: float, overhead_bytes: int = 0) -> float:
    """Time to push the payload (plus per-message protocol overhead) at the uplink rate."""
    if uplink_rate_bps <= 0:
        raise ConfigError(f"uplink rate must be > 0, not {uplink_rate_bps}")
    return (payload_bytes + overhead_bytes) * 8 / uplink_rate_bps


def nbiot_energy_j(payload_bytes: int, fixed_energy_j: float, uplink_rate_bps: float, tx_power_w: float,
                   overhead_bytes: int = 0) -> float:
    """Energy per NB-IoT message: E_fixed + bits / rate x P_TX.

    E_fixed (connection set-up, connected-mode time, release) dominates for small payloads;
    the payload term is the TX time at the uplink rate times the TX power."""
    return fixed_energy_j + nbiot_transfer_time_s(payload_bytes, uplink_rate_bps, overhead_bytes) * tx_power_w


def tx_energy_j(airtime_s: float, tx_power_w: float) -> float:
    """Radio TX energy: airtime x TX power (supply current x supply voltage while transmitting)."""
    return airtime_s * tx_power_w
