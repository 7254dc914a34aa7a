"""Power meters behind one interface, and the registry that finds them by name.

A meter records a :class:`Trace` (current, voltage, optional logic inputs, sample times) between
:meth:`Meter.start` and :meth:`Meter.stop`; :mod:`harness.measure.meters.windows` cuts the trace into
per-inference windows (by a GPIO marker the firmware raises around each inference, or by
timestamps) and integrates gross and net energy. Drivers are thin: each wraps its vendor
library (Nordic PPK2 through ``ppk2-api``, Joulescope through ``joulescope``, an INA219 on a
Linux device polled over SSH) and imports it only when used, so the libraries stay optional
extras.

A device profile describes its meter in a ``meter:`` section (:class:`~harness.config.profiles.MeterSpec`:
kind, connection, voltage, sample rate, how windows are marked); :data:`METERS` resolves the kind to
a class: the built-in drivers, classes registered with ``@METERS.register``, and plug-ins published
under the entry-point group ``hilbench.meters``. A class checks a section (:meth:`Meter.spec_errors`)
and builds itself from it (:meth:`Meter.from_spec`); :mod:`harness.measure.metering` runs the
meters of a run's nodes around the streaming.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from harness.core.errors import ConfigError, MeasurementError
from harness.core.registry import Registry

if TYPE_CHECKING:
    from harness.config.profiles import DeviceProfile, MeterSpec

@dataclass(frozen=True)
class Trace:
    """Samples of one recording.

    ``t_s`` are sample times in seconds on the meter's clock (for a fixed-rate meter
    ``index / rate_hz``); ``current_a`` and ``voltage_v`` are per sample; ``logic`` holds the
    digital inputs (bit i = input i) when the meter has them. ``rate_hz`` is None for meters
    polled at an irregular rate (integration then uses the timestamps)."""

    meter: str
    t_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    rate_hz: float | None = None
    logic: np.ndarray | None = None
    sources: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.t_s)
        for name in ("current_a", "voltage_v") + (("logic",) if self.logic is not None else ()):
            if len(getattr(self, name)) != n:
                raise MeasurementError(f"{self.meter} trace: {name} has {len(getattr(self, name))} samples, "
                                       f"t_s has {n}")

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def power_w(self) -> np.ndarray:
        return np.asarray(self.current_a, dtype=np.float64) * np.asarray(self.voltage_v, dtype=np.float64)


SpecError = tuple[str, str]
"""A problem with a profile's ``meter`` section: (field within the section, what is wrong)."""


def save_trace(trace: Trace, path: Path) -> Path:
    """Write ``trace`` as a compressed ``.npz``: current as float32 (ample for a 14-bit ADC),
    voltage as one value when constant, logic bits, timestamps only for polled meters, and the
    meter, rate, sources and meta as JSON; :func:`load_trace` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    voltage = np.asarray(trace.voltage_v, dtype=np.float64)
    constant = voltage.size > 0 and bool(np.all(voltage == voltage[0]))
    arrays: dict[str, np.ndarray] = {
        "current_a": np.asarray(trace.current_a, dtype=np.float32),
        "voltage_v": voltage[:1] if constant else voltage.astype(np.float32),
    }
    if trace.logic is not None:
        arrays["logic"] = np.asarray(trace.logic, dtype=np.uint8)
    if trace.rate_hz is None:
        arrays["t_s"] = np.asarray(trace.t_s, dtype=np.float64)
    header = {"meter": trace.meter, "rate_hz": trace.rate_hz, "samples": len(trace), "sources": list(trace.sources),
              "meta": trace.meta, "voltage_constant": constant}
    arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle's
    return path


def load_trace(path: Path) -> Trace:
    """A trace written by :func:`save_trace` (current as stored: float32 precision)."""
    try:
        with np.load(Path(path)) as data:
            header = json.loads(bytes(data["header"]).decode())
            n = int(header["samples"])
            rate = header["rate_hz"]
            voltage = data["voltage_v"].astype(np.float64)
            return Trace(meter=header["meter"], t_s=data["t_s"] if rate is None else np.arange(n) / rate,
                         current_a=data["current_a"].astype(np.float64),
                         voltage_v=np.full(n, voltage[0]) if header["voltage_constant"] else voltage,
                         rate_hz=rate, logic=data["logic"] if "logic" in data else None,
                         sources=tuple(header["sources"]), meta=header["meta"])
    except (OSError, KeyError, ValueError) as exc:
        raise MeasurementError(f"{path}: not a trace written by hilbench ({exc})") from exc


class Meter(ABC):
    """A power meter: start recording, stop and get the trace. Use as a context manager to
    release the instrument (``close``) on every path."""

    name: ClassVar[str]
    #: nominal sample rate, None if polled irregularly; decides whether per-inference
    #: distributions are possible for a given inference duration
    nominal_rate_hz: ClassVar[float | None] = None
    #: digital inputs recorded with every sample (bit i of ``Trace.logic`` = input i): where a
    #: board's marker pin is wired for ``windows: marker``
    logic_inputs: ClassVar[int] = 0
    #: how the instrument names logic input i (``input_name.format(i)``): "D{}" on a PPK2
    input_name: ClassVar[str] = "input {}"
    #: the fields of a ``meter`` section this kind uses (besides kind, windows, marker_input, options)
    spec_fields: ClassVar[frozenset[str]] = frozenset()
    #: True for a simulator standing in for the instrument: every figure says "simulated meter"
    simulated: bool = False

    @classmethod
    def spec_errors(cls, spec: "MeterSpec", profile: "DeviceProfile") -> list[SpecError]:
        """What is wrong with ``spec`` for this kind, before anything is opened: fields the kind
        does not use, a marker input it does not have. Kinds add their own rules."""
        errors: list[SpecError] = []
        for field_name in ("port", "serial_number", "via", "mode", "voltage_mv", "sample_rate_hz"):
            if getattr(spec, field_name) is not None and field_name not in cls.spec_fields:
                errors.append((field_name, f"meter kind {cls.name!r} does not use {field_name!r}"))
        if spec.simulated:
            errors.append(("simulated", f"meter kind {cls.name!r} has no simulator (only ppk2 does)"))
        if spec.windows == "marker" and spec.marker_input is None:
            errors.append(("marker_input", "windows 'marker' needs marker_input: the meter's logic input the board's "
                                           f"marker pin is wired to ({cls.name}: {cls.input_name.format(0)} = 0, ...), "
                                           "or use windows: timestamps"))
        if spec.windows == "timestamps" and spec.marker_input is not None:
            errors.append(("marker_input", "windows 'timestamps' uses no marker input; remove marker_input or use "
                                           "windows: marker"))
        if spec.windows == "marker" and spec.marker_input is not None and spec.marker_input >= cls.logic_inputs:
            errors.append(("marker_input", f"meter kind {cls.name!r} records {cls.logic_inputs} logic input(s)"
                                           f"{'' if cls.logic_inputs else ': align by timestamps'}; "
                                           f"marker_input {spec.marker_input} does not exist"))
        return errors

    @classmethod
    def from_spec(cls, spec: "MeterSpec", profile: "DeviceProfile") -> "Meter":
        """The meter a profile's section describes (a plug-in's default: ``cls(**options)``)."""
        return cls(**spec.options)

    def describe(self) -> str:
        """What recorded the samples, for the basis of every figure: instrument, supply, rate."""
        return self.name

    def check(self) -> None:
        """Raise MeasurementError if the instrument was lost since :meth:`start` (unplugged,
        stopped streaming); called by the run engine between batches."""

    @abstractmethod
    def start(self) -> None:
        """Begin recording (opens the instrument on first use)."""

    @abstractmethod
    def stop(self) -> Trace:
        """End recording and return everything recorded since :meth:`start`."""

    def close(self) -> None:
        """Release the instrument."""

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


METERS: Registry[type[Meter]] = Registry(
    "meter", entry_point_group="hilbench.meters",
    builtin_modules=("harness.measure.meters.ppk2", "harness.measure.meters.joulescope",
                     "harness.measure.meters.ina219"))


def build_meter(cls: type[Meter], spec: "MeterSpec", profile: "DeviceProfile") -> Meter:
    """``cls.from_spec`` with a constructor's TypeError (an unknown option) turned into a
    ConfigError naming the profile's field."""
    try:
        return cls.from_spec(spec, profile)
    except TypeError as exc:
        raise ConfigError(f"{profile.source}: field 'meter.options': meter kind {spec.kind!r}: {exc}") from exc
