"""Current traces synthesised from a board's own inference windows, for a simulated meter.

An emulated board draws no current. So that a run on one still goes through a meter's whole code
path (driver, library, windows, integration, store, report), a simulated meter streams a trace
built here from what the run observed, labelled "simulated meter" wherever it shows:

- each batch of inferences is preceded by idle current for the batch's host round trip (the
  link time, while the board waits for and answers the request), at most ``max_idle_s`` so a
  long run's trace stays small;
- each inference is a window of its modelled compute time (the emulator's instruction count at
  the profile's clock, one instruction per cycle: the same time the energy model uses) at active
  current, with the marker bit high;
- two inferences of a batch are ``gap_s`` apart at idle current (the firmware's marker gap);
- ``edge_idle_s`` of idle current before the first batch and after the last.

Currents are the profile's active and idle power over the meter's voltage. A window's length is
rounded to whole samples (at least one), so the integrated energy differs from the model's by at
most half a sample per window: that difference, and the ADC's step, are what the comparison of
the simulated meter with the model can show; the model's constants are not tested by it.
Pure functions; nothing here knows about any instrument.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.core.errors import ConfigError


@dataclass(frozen=True)
class SynthesisSpec:
    """How a simulated trace is drawn: sample rate, the two current levels, the marker bit, and
    the idle stretches."""

    rate_hz: float
    active_a: float
    idle_a: float
    marker_bit: int
    gap_s: float
    max_idle_s: float = 0.005
    edge_idle_s: float = 0.002

    def __post_init__(self) -> None:
        if self.rate_hz <= 0 or self.active_a <= 0 or self.idle_a < 0 or self.idle_a > self.active_a:
            raise ConfigError(f"trace synthesis needs rate > 0 and 0 <= idle <= active current, not "
                              f"{self.rate_hz} Hz, {self.idle_a} A / {self.active_a} A")
        if not 0 <= self.marker_bit <= 7:
            raise ConfigError(f"marker bit must be 0..7, not {self.marker_bit}")

    def samples(self, seconds: float) -> int:
        """Whole samples for a duration, at least one."""
        return max(1, int(round(seconds * self.rate_hz)))

    def describe(self) -> str:
        return (f"current synthesised from the board's inference windows: {self.active_a * 1e3:.4g} mA while "
                f"inferring (marker bit {self.marker_bit} high), {self.idle_a * 1e3:.4g} mA idle; batches preceded "
                f"by their host round trip at idle (at most {self.max_idle_s * 1e3:g} ms), inferences of a batch "
                f"{self.gap_s * 1e6:g} us apart")


def idle_trace(spec: SynthesisSpec, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(current A, logic) of idle samples for ``seconds`` (at least one sample)."""
    n = spec.samples(seconds)
    return np.full(n, spec.idle_a), np.zeros(n, dtype=np.uint8)


def batch_trace(spec: SynthesisSpec, compute_s: Sequence[float], idle_before_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(current A, logic) of one batch: idle for ``idle_before_s`` (capped), then one window per
    compute time, ``gap_s`` apart."""
    if any(t < 0 for t in compute_s):
        raise ConfigError(f"compute times must be >= 0: {list(compute_s)}")
    currents, logics = [], []
    current, logic = idle_trace(spec, min(max(idle_before_s, 0.0), spec.max_idle_s))
    currents.append(current)
    logics.append(logic)
    for i, t in enumerate(compute_s):
        if i:
            current, logic = idle_trace(spec, spec.gap_s)
            currents.append(current)
            logics.append(logic)
        n = spec.samples(t)
        currents.append(np.full(n, spec.active_a))
        logics.append(np.full(n, 1 << spec.marker_bit, dtype=np.uint8))
    return np.concatenate(currents), np.concatenate(logics)
