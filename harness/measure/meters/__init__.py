"""Power meters behind one interface, and the registry that finds them by name.

A meter records a :class:`Trace` (current, voltage, optional logic inputs, sample times) between
:meth:`Meter.start` and :meth:`Meter.stop`; :mod:`harness.measure.meters.windows` cuts the trace into
per-inference windows (by a GPIO marker the firmware raises around each inference, or by
timestamps) and integrates gross and net energy. Drivers are thin: each wraps its vendor
library (Nordic PPK2 through ``ppk2-api``, Joulescope through ``joulescope``, an INA219 on a
Linux device polled over SSH) and imports it only when used, so the libraries stay optional
extras.

A device profile names its meter (``meter: ppk2``); :data:`METERS` resolves the name to a class:
the built-in drivers, classes registered with ``@METERS.register``, and plug-ins published
under the entry-point group ``hilbench.meters``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.core.errors import MeasurementError
from harness.core.registry import Registry

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


class Meter(ABC):
    """A power meter: start recording, stop and get the trace. Use as a context manager to
    release the instrument (``close``) on every path."""

    name: ClassVar[str]
    #: nominal sample rate, None if polled irregularly; decides whether per-inference
    #: distributions are possible for a given inference duration
    nominal_rate_hz: ClassVar[float | None] = None

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
