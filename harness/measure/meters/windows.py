"""Cutting a meter trace into per-inference windows and integrating their energy.

Two ways to find the windows:
- a GPIO marker: the firmware raises a pin for the duration of each inference and the meter
  samples that pin with the current (PPK2 logic inputs D0-D7, Joulescope GPI); each run of high
  samples is one inference;
- timestamps: the harness knows when each request went out and its reply came back on its own
  clock, and the driver measured the offset to the meter's clock (:func:`span_energy`): each
  span, widened by the offset's uncertainty, holds the device's inferences and some link time;
  the span's energy minus idle power for the time that is not compute is the compute energy,
  split among the span's inferences by their device times.

Energy of a window: each sample's power held for the time it stands for (zero-order hold): 1/rate
for a fixed-rate meter (the sum of P / rate, as MLPerf Tiny's energy runner sums its samples), the
time to the next reading for a polled meter. Gross energy is that integral; net energy subtracts the
idle power times the window's duration. Idle power is given, or the mean power outside all
windows (a guard of a few samples around each window is excluded).

A per-inference distribution needs enough samples per window; below ``min_samples`` the
windows are too short for the meter's rate and only the aggregate is reported: the energy
between the first window's start and the last window's end divided by the number of
inferences (the MLPerf Tiny method), with the idle time between windows charged at idle power.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.core.errors import MeasurementError
from harness.measure.meters import Trace

Window = tuple[int, int]
"""Sample indices [start, end) of one inference in a trace."""


def marker_windows(logic: np.ndarray, pin: int, active_high: bool = True) -> list[Window]:
    """Runs of samples where bit ``pin`` of ``logic`` is active. A run still open at the end of
    the trace, or already open at its start, is dropped (it is not a whole inference)."""
    if not 0 <= pin <= 31:
        raise MeasurementError(f"marker pin must be 0..31, not {pin}")
    level = ((np.asarray(logic).astype(np.int64) >> pin) & 1).astype(bool)
    if not active_high:
        level = ~level
    edges = np.diff(level.astype(np.int8))
    starts = list(np.flatnonzero(edges == 1) + 1)
    ends = list(np.flatnonzero(edges == -1) + 1)
    if level.size and level[0]:
        ends = ends[1:]  # the first high run began before the recording
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def time_windows(t_s: np.ndarray, spans_s: list[tuple[float, float]]) -> list[Window]:
    """Sample windows for inference spans given as (start, end) times on the trace's clock: the
    samples with start <= t < end."""
    t = np.asarray(t_s, dtype=np.float64)
    if t.size and np.any(np.diff(t) < 0):
        raise MeasurementError("trace timestamps are not monotonic")
    out = []
    for start, end in spans_s:
        if end < start:
            raise MeasurementError(f"inference span ends before it starts: ({start}, {end})")
        if start < t[0] or end > t[-1]:
            raise MeasurementError(f"inference span ({start:.6f}, {end:.6f}) s lies outside the recording "
                                   f"({t[0]:.6f}..{t[-1]:.6f} s)")
        out.append((int(np.searchsorted(t, start, "left")), int(np.searchsorted(t, end, "left"))))
    return out


def _hold_intervals(trace: Trace, start: int, end: int) -> np.ndarray:
    """Seconds each sample of [start, end) stands for: 1/rate, or for a polled meter the time
    to the next reading (the last reading of the trace holds for the median interval)."""
    if trace.rate_hz is not None:
        return np.full(end - start, 1.0 / trace.rate_hz)
    t = np.asarray(trace.t_s, dtype=np.float64)
    nxt = np.diff(t[start:min(end + 1, len(t))])
    if len(nxt) < end - start:  # the window reaches the end of the trace
        median = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        nxt = np.append(nxt, median)
    return nxt


def integrate_j(trace: Trace, window: Window) -> float:
    """Energy (J) over samples [start, end): each sample's power held for its interval."""
    start, end = window
    if not 0 <= start <= end <= len(trace):
        raise MeasurementError(f"window {window} outside a trace of {len(trace)} samples")
    return float(np.sum(trace.power_w[start:end] * _hold_intervals(trace, start, end)))


def window_duration_s(trace: Trace, window: Window) -> float:
    start, end = window
    return float(np.sum(_hold_intervals(trace, start, end)))


def idle_power_w(trace: Trace, windows: list[Window], guard: int = 2) -> float:
    """Mean power of the samples outside every window (``guard`` samples either side excluded)."""
    outside = np.ones(len(trace), dtype=bool)
    for start, end in windows:
        outside[max(0, start - guard):min(len(trace), end + guard)] = False
    if not outside.any():
        raise MeasurementError("no samples outside the inference windows to estimate idle power from; "
                               "record some idle time before and after, or give idle power")
    return float(trace.power_w[outside].mean())


@dataclass(frozen=True)
class MeterEnergy:
    """Energy per inference from a meter: means, and the per-inference values when the meter's
    rate resolves each window (``per_inference_gross_j`` is None otherwise). ``basis`` is
    "meter", or "simulated meter" for a simulator's trace; ``window_s`` is the mean window
    duration (the time the gross energy was drawn in); ``uncertainty_s`` how far a window's
    edges may be off (timestamps; None for a marker)."""

    meter: str
    inferences: int
    gross_j: float
    net_j: float
    idle_power_w: float
    idle_source: str
    method: str
    per_inference_gross_j: np.ndarray | None
    per_inference_net_j: np.ndarray | None
    sources: tuple[str, ...]
    basis: str = "meter"
    window_s: float | None = None
    uncertainty_s: float | None = None

    @property
    def active_power_w(self) -> float | None:
        """Mean power while inferring: gross energy over the window time."""
        return self.gross_j / self.window_s if self.window_s else None

    def distribution(self) -> dict[str, float] | None:
        """p50/p90/p99 of per-inference gross energy (J), when available."""
        if self.per_inference_gross_j is None:
            return None
        p = np.percentile(self.per_inference_gross_j, [50, 90, 99])
        return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}


def meter_energy(trace: Trace, windows: list[Window], idle_w: float | None = None, min_samples: int = 10,
                 guard: int = 2) -> MeterEnergy:
    """Gross and net energy per inference over the given windows of a trace."""
    if not windows:
        raise MeasurementError(f"{trace.meter}: no inference windows found in the trace "
                               "(is the marker pin wired and raised by the firmware?)")
    if idle_w is None:
        idle = idle_power_w(trace, windows, guard)
        idle_source = "mean power outside the inference windows"
    else:
        idle, idle_source = float(idle_w), "given"
    n = len(windows)
    sources = (*trace.sources, f"idle power {idle * 1e3:.4g} mW: {idle_source}")
    durations = np.array([window_duration_s(trace, w) for w in windows])
    basis = "simulated meter" if trace.meta.get("simulated") else "meter"
    if all(end - start >= min_samples for start, end in windows):
        gross = np.array([integrate_j(trace, w) for w in windows])
        net = gross - idle * durations
        return MeterEnergy(trace.meter, n, float(gross.mean()), float(net.mean()), idle, idle_source,
                           "per-inference windows", gross, net, sources, basis, float(durations.mean()))
    span = (windows[0][0], windows[-1][1])
    gross_all = integrate_j(trace, span)
    net_all = gross_all - idle * window_duration_s(trace, span)
    return MeterEnergy(trace.meter, n, gross_all / n, net_all / n, idle, idle_source,
                       f"aggregate: first window start to last window end / {n} (windows shorter than "
                       f"{min_samples} samples)", None, None, sources, basis, window_duration_s(trace, span) / n)


def host_to_meter_spans(spans_host_s: list[tuple[float, float]], trace: Trace) -> list[tuple[float, float]]:
    """Map (start, end) spans on the host's monotonic clock to the meter's clock, with the
    offset the driver estimated (``trace.meta['host_minus_meter_s']``)."""
    offset = trace.meta.get("host_minus_meter_s")
    if offset is None:
        raise MeasurementError(f"{trace.meter}: the trace has no host clock offset; align by a marker instead")
    return [(start - offset, end - offset) for start, end in spans_host_s]


def clock_offset(trace: Trace) -> tuple[float, float]:
    """(host - meter offset, its uncertainty) in seconds, as the driver measured them."""
    offset = trace.meta.get("host_minus_meter_s")
    if offset is None:
        raise MeasurementError(f"{trace.meter}: the trace has no host clock offset; align by a marker instead")
    return float(offset), float(trace.meta.get("clock_offset_uncertainty_s") or 0.0)


def span_energy(trace: Trace, spans_host_s: Sequence[tuple[float, float]], compute_s: Sequence[Sequence[float]],
                idle_w: float | None = None, guard: int = 2) -> MeterEnergy:
    """Per-inference energy from host timestamps. ``spans_host_s[k]`` is when request k went out
    and its reply came back (host monotonic clock); ``compute_s[k]`` the device's compute time
    of each inference it carried. Each span is mapped to the meter's clock and widened by the
    offset's uncertainty u on both sides; its compute energy is

        E_k = integral of P over the span - P_idle x (span duration - sum of compute times),

    (the time that is not compute charged at idle power: link activity above idle is counted as
    compute, which the method states), split among its inferences in proportion to their compute
    times; net = gross - P_idle x compute time. Idle power is the mean outside every span, unless
    given."""
    if len(spans_host_s) != len(compute_s):
        raise MeasurementError(f"{len(spans_host_s)} spans but {len(compute_s)} lists of compute times")
    if not spans_host_s:
        raise MeasurementError(f"{trace.meter}: no request spans to cut the trace at")
    offset, u = clock_offset(trace)
    spans = [(start - offset - u, end - offset + u) for start, end in spans_host_s]
    windows = time_windows(trace.t_s, spans)
    if idle_w is None:
        idle = idle_power_w(trace, windows, guard)
        idle_source = "mean power outside the request spans"
    else:
        idle, idle_source = float(idle_w), "given"
    gross_list: list[float] = []
    net_list: list[float] = []
    times: list[float] = []
    for window, ts in zip(windows, compute_s):
        ts = [float(t) for t in ts]
        total = sum(ts)
        if total <= 0:
            raise MeasurementError(f"{trace.meter}: a request span carries no compute time ({ts})")
        span_j = integrate_j(trace, window)
        compute_j = span_j - idle * (window_duration_s(trace, window) - total)
        for t in ts:
            share = compute_j * t / total
            gross_list.append(share)
            net_list.append(share - idle * t)
            times.append(t)
    gross, net = np.array(gross_list), np.array(net_list)
    method = (f"timestamps: host request/reply spans on the meter's clock (offset {offset:.6f} s, uncertainty "
              f"{u * 1e3:.3g} ms; each span widened by it), the span's time that is not compute charged at idle "
              "power (link activity above idle counts as compute), its compute energy split by device time")
    sources = (*trace.sources, f"idle power {idle * 1e3:.4g} mW: {idle_source}")
    basis = "simulated meter" if trace.meta.get("simulated") else "meter"
    return MeterEnergy(trace.meter, len(gross), float(gross.mean()), float(net.mean()), idle, idle_source, method,
                       gross, net, sources, basis, float(np.mean(times)), u)
