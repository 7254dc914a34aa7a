"""Radio profiles: YAML files naming a radio model and its constants, each with its source.

A profile (``devices/radios/<name>.yaml``, a directory in ``$HILBENCH_RADIO_DIRS`` or
``~/.config/hilbench/radios/``) says which cost model it uses (``model: lorawan | ble |
ieee802154 | nbiot``, or one a plug-in registers under the entry-point group
``hilbench.radio_models``) and gives every constant as ``{value: ..., source: "..."}``, so a
result can always say where its numbers came from. Device profiles refer to a radio by name
(``radio: lora-eu868-sf7``).

The models turn a payload size into a :class:`RadioCost` (frames, airtime, TX energy and the
highest sustainable message rate) with the pure functions of :mod:`harness.measure.radio_formulas`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from harness.measure import radio_formulas as radio
from harness.core.datafiles import check_name_matches_file, find_named, load_named, read_mapping, search_path, validate
from harness.core.errors import ConfigError
from harness.core.registry import Registry
from harness.core.paths import SHIPPED_RADIOS, USER_CONFIG

USER_RADIOS = USER_CONFIG / "radios"
ENTRY_POINT_GROUP = "hilbench.radio_models"

T = TypeVar("T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=_Strict)  # a radio model's constants


class Sourced(_Strict, Generic[T]):
    """A constant and where it comes from (datasheet table, standard section, or an assumption
    stated as such)."""

    value: T
    source: str = Field(min_length=3)


@dataclass(frozen=True)
class RadioCost:
    """What sending one payload costs on a radio. ``airtime_s`` is the node's own time on air
    (what its TX energy is charged for); ``frame_bytes`` are the frames as the model counts them
    (LoRa PHY payloads, BLE LL payloads, 802.15.4 MPDUs, NB-IoT IP packets)."""

    radio: str
    model: str
    payload_bytes: int
    frame_bytes: tuple[int, ...]
    airtime_s: float
    energy_j: float
    max_rate_hz: float
    sources: tuple[str, ...]
    notes: tuple[str, ...] = ()
    basis: str = "model"

    @property
    def frames(self) -> int:
        return len(self.frame_bytes)


class RadioModel(ABC, Generic[C]):
    """A radio cost model: constants in, :class:`RadioCost` per payload out."""

    name: ClassVar[str]
    Constants: ClassVar[type[_Strict]]

    def __init__(self, radio_name: str, constants: C) -> None:
        self.radio_name = radio_name
        self.constants = constants

    @abstractmethod
    def cost(self, payload_bytes: int) -> RadioCost:
        """Frames, airtime, energy and rate limit for one message of ``payload_bytes``."""

    def _value(self, field: str) -> Any:
        return getattr(self.constants, field).value

    def sources(self) -> tuple[str, ...]:
        """``"field = value: source"`` for every constant given."""
        out = []
        for field in type(self.constants).model_fields:
            item = getattr(self.constants, field)
            if isinstance(item, Sourced):
                out.append(f"{field} = {item.value}: {item.source}")
        return tuple(out)

    def tx_power_w(self) -> float:
        return self._value("tx_current_ma") * 1e-3 * self._value("supply_v")

    def _make(self, payload_bytes: int, frames: list[int], airtime_s: float, energy_j: float,
              max_rate_hz: float, notes: tuple[str, ...]) -> RadioCost:
        return RadioCost(radio=self.radio_name, model=self.name, payload_bytes=payload_bytes,
                         frame_bytes=tuple(frames), airtime_s=airtime_s, energy_j=energy_j,
                         max_rate_hz=max_rate_hz, sources=self.sources(), notes=notes)


RADIO_MODELS: Registry[type[RadioModel[Any]]] = Registry("radio model", entry_point_group=ENTRY_POINT_GROUP)


class _PoweredConstants(_Strict):
    tx_current_ma: Sourced[float]
    supply_v: Sourced[float]


class LoRaWANConstants(_PoweredConstants):
    spreading_factor: Sourced[int]
    bandwidth_hz: Sourced[int]
    coding_rate: Sourced[int]
    preamble_symbols: Sourced[int]
    explicit_header: Sourced[bool]
    crc: Sourced[bool]
    low_data_rate_optimize: Sourced[bool] | None = None
    lorawan_overhead_bytes: Sourced[int]
    max_app_payload_bytes: Sourced[int]
    fragment_header_bytes: Sourced[int]
    duty_cycle: Sourced[float]


@RADIO_MODELS.register
class LoRaWANModel(RadioModel[LoRaWANConstants]):
    """LoRaWAN uplinks: the payload is split into frames of at most ``max_app_payload_bytes``
    (application-level fragmentation), each frame adds the LoRaWAN overhead and takes its LoRa
    time on air; the duty cycle limits the message rate."""

    name = "lorawan"
    Constants = LoRaWANConstants

    def cost(self, payload_bytes: int) -> RadioCost:
        c = self.constants
        frames = radio.fragment_sizes(payload_bytes, c.max_app_payload_bytes.value, c.fragment_header_bytes.value)
        phy = [f + c.lorawan_overhead_bytes.value for f in frames]
        low_dr = c.low_data_rate_optimize.value if c.low_data_rate_optimize is not None else None
        airtime = sum(radio.lora_time_on_air_s(p, c.spreading_factor.value, c.bandwidth_hz.value,
                                               c.coding_rate.value, c.preamble_symbols.value,
                                               c.explicit_header.value, c.crc.value, low_dr) for p in phy)
        notes = ["airtime: sum of the frames' LoRa time on air (SX1276 4.1.1.6)",
                 f"max rate: duty cycle {c.duty_cycle.value:g} / airtime"]
        if low_dr is None:
            notes.append("low data rate optimisation: on when the symbol time exceeds 16 ms")
        if len(frames) > 1:
            notes.append(f"fragmented into {len(frames)} frames of <= {c.max_app_payload_bytes.value} B "
                         f"with a {c.fragment_header_bytes.value} B fragment header each")
        return self._make(payload_bytes, phy, airtime, radio.tx_energy_j(airtime, self.tx_power_w()),
                          radio.duty_cycle_max_rate_hz(airtime, c.duty_cycle.value), tuple(notes))


class BLEConstants(_PoweredConstants):
    bit_rate_bps: Sourced[float]
    data_length_extension: Sourced[bool]
    encrypted: Sourced[bool]
    connection_interval_s: Sourced[float]


@RADIO_MODELS.register
class BLEModel(RadioModel[BLEConstants]):
    """BLE notifications on LE 1M: the payload is split into notifications (20 B or 244 B of
    user data each), each one LL packet; one inference per connection event at most."""

    name = "ble"
    Constants = BLEConstants

    def cost(self, payload_bytes: int) -> RadioCost:
        c = self.constants
        ll = radio.ble_notification_ll_payloads(payload_bytes, c.data_length_extension.value)
        airtime = sum(radio.ble_packet_time_s(p, c.encrypted.value, c.bit_rate_bps.value) for p in ll)
        exchange = radio.ble_exchange_time_s(ll, c.encrypted.value, c.bit_rate_bps.value)
        rate = 1.0 / max(exchange, c.connection_interval_s.value)
        notes = ("airtime: the node's own LL packets (preamble, access address, header, payload, MIC, CRC)",
                 "max rate: one message per connection event; an event holds the data packets, "
                 "T_IFS and the central's empty packets",
                 "energy: TX only (the central's empty packets are received, not counted)")
        return self._make(payload_bytes, ll, airtime, radio.tx_energy_j(airtime, self.tx_power_w()), rate, notes)


class IEEE802154Constants(_PoweredConstants):
    addressing_bytes: Sourced[int]
    fragment_header_bytes: Sourced[int]


@RADIO_MODELS.register
class IEEE802154Model(RadioModel[IEEE802154Constants]):
    """IEEE 802.15.4 at 2.4 GHz (O-QPSK, 250 kbit/s): MAC frames of at most 127 bytes."""

    name = "ieee802154"
    Constants = IEEE802154Constants

    def cost(self, payload_bytes: int) -> RadioCost:
        c = self.constants
        mpdus = radio.ieee802154_mpdu_sizes(payload_bytes, c.addressing_bytes.value, c.fragment_header_bytes.value)
        airtime = sum(radio.ieee802154_frame_time_s(m) for m in mpdus)
        notes = ("airtime: (SHR 5 + PHR 1 + MPDU) x 32 us per frame",
                 "max rate: 1 / airtime, an upper bound (no CSMA back-off, ACK or interframe spacing)")
        return self._make(payload_bytes, mpdus, airtime, radio.tx_energy_j(airtime, self.tx_power_w()),
                          radio.duty_cycle_max_rate_hz(airtime, 1.0), notes)


class NBIoTConstants(_PoweredConstants):
    fixed_energy_j: Sourced[float]
    uplink_rate_bps: Sourced[float]
    overhead_bytes: Sourced[int]
    node_share_bps: Sourced[float]


@RADIO_MODELS.register
class NBIoTModel(RadioModel[NBIoTConstants]):
    """NB-IoT: energy per message E_fixed + bits / rate x P_TX; the rate limit is the node's
    share of the cell's uplink capacity."""

    name = "nbiot"
    Constants = NBIoTConstants

    def cost(self, payload_bytes: int) -> RadioCost:
        c = self.constants
        overhead = c.overhead_bytes.value
        airtime = radio.nbiot_transfer_time_s(payload_bytes, c.uplink_rate_bps.value, overhead)
        energy = radio.nbiot_energy_j(payload_bytes, c.fixed_energy_j.value, c.uplink_rate_bps.value,
                                      self.tx_power_w(), overhead)
        bits = (payload_bytes + overhead) * 8
        rate = c.node_share_bps.value / bits if bits else math.inf
        notes = ("airtime: payload + IP/UDP overhead at the uplink rate (the fixed connection time is "
                 "in the energy, not here)",
                 "energy: E_fixed + bits / rate x P_TX",
                 "max rate: the node's share of the cell uplink / bits per message")
        return self._make(payload_bytes, [payload_bytes + overhead], airtime, energy, rate, notes)


# ---------------------------------------------------------------- profiles

@dataclass(frozen=True)
class RadioProfile:
    """A validated radio profile: its model instance carries the constants."""

    name: str
    model: RadioModel[Any]
    description: str
    source: str

    def cost(self, payload_bytes: int) -> RadioCost:
        return self.model.cost(payload_bytes)


class _RadioFile(_Strict):
    name: str
    model: str
    description: str = ""
    constants: dict[str, Any]


def parse_radio_profile(data: Any, source: str) -> RadioProfile:
    """Validate a profile mapping; ConfigError naming ``source`` and the field on error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a radio profile must be a YAML mapping of fields")
    top = validate(_RadioFile, data, source)
    try:
        model_cls = RADIO_MODELS.get(top.model)
    except ConfigError as exc:
        raise ConfigError(f"{source}: field 'model': {exc}") from exc
    constants = validate(model_cls.Constants, top.constants, source, "constants")
    return RadioProfile(name=top.name, model=model_cls(top.name, constants),
                        description=top.description, source=source)


def load_radio_profile(path: Path) -> RadioProfile:
    profile = parse_radio_profile(read_mapping(path, "a radio profile"), str(path))
    check_name_matches_file(profile, path)
    return profile


def radio_dirs() -> list[Path]:
    return search_path(SHIPPED_RADIOS, "HILBENCH_RADIO_DIRS", USER_RADIOS)


def load_radio_profiles(dirs: list[Path] | None = None) -> dict[str, RadioProfile]:
    """All usable radio profiles by name (a broken file or a name defined twice is left out)."""
    return load_named(radio_dirs() if dirs is None else dirs, load_radio_profile, "radio")


def get_radio_profile(name: str, dirs: list[Path] | None = None) -> RadioProfile:
    return find_named(name, radio_dirs() if dirs is None else dirs, load_radio_profile, "radio")


def cost_dict(cost: RadioCost) -> dict[str, Any]:
    """A RadioCost as plain JSON-able values (milliseconds and microjoules)."""
    return {
        "radio": cost.radio, "model": cost.model, "payload_bytes": cost.payload_bytes,
        "frames": cost.frames, "frame_bytes": list(cost.frame_bytes),
        "airtime_ms": cost.airtime_s * 1e3, "energy_uj": cost.energy_j * 1e6,
        "max_rate_hz": None if math.isinf(cost.max_rate_hz) else cost.max_rate_hz,
        "basis": cost.basis, "sources": list(cost.sources), "notes": list(cost.notes),
    }


def airtime_report(radio_name: str, payload_bytes: int, dirs: list[Path] | None = None) -> dict[str, Any]:
    """What ``hilbench radio airtime --radio NAME --bytes N`` prints: frames, airtime, energy,
    rate limit, and the source of every constant used."""
    if payload_bytes < 0:
        raise ConfigError(f"--bytes must be >= 0, not {payload_bytes}")
    profile = get_radio_profile(radio_name, dirs)
    return {**cost_dict(profile.cost(payload_bytes)), "description": profile.description,
            "profile": profile.source}
