"""A meter around a run: the meters of a run's nodes, started before streaming and stopped after,
their traces cut into inference windows, integrated, and stored with the raw samples.

Plan time (:func:`check_meters`): every node profile's ``meter`` section is checked against its
kind's driver (fields, marker input, sample rate, the library it needs) and against the node
(a marker needs a board with a marker pin; a real meter measures one board, so two nodes cannot
share one); nothing is opened.

Run time (:class:`RunMetering`, a context manager around :func:`harness.run.stream`): entering
opens and starts every node's meter; the engine reports each finished batch of a node
(:meth:`RunMetering.batch`: its rows and the host's request/reply times) and asks between events
whether a meter was lost (:meth:`RunMetering.check`, a MeasurementError that stops the run after
committing what finished). Leaving stops the meters and, per node, stores a *session*: the raw
samples (compressed, ``meter/<run_id>/`` next to the database), the windows (by the marker
input, or by host timestamps with the measured clock offset and the window's uncertainty), each
window's gross and net energy, and the session's idle power and method. A resumed run adds a
session; :func:`node_meter_energy` combines a node's sessions for the run summary.

A simulated meter (``simulated: true``, emulated boards only) is fed, batch by batch, the current
:mod:`harness.measure.meters.synth` draws from the node's inference windows, and goes through
the same driver, windows and store; its basis starts with "simulated meter".
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.config.boards import MARKER_GAP_US
from harness.config.profiles import DeviceProfile, MeterSpec
from harness.core.errors import ConfigError, HilbenchError, MeasurementError
from harness.measure.meters import METERS, Meter, Trace, build_meter, save_trace
from harness.measure.meters.synth import SynthesisSpec, batch_trace, idle_trace
from harness.measure.meters.windows import (MeterEnergy, integrate_j, marker_windows, meter_energy, span_energy,
                                            window_duration_s)

if TYPE_CHECKING:
    from harness.store.results import ResultsStore

SIMULATED_LABEL = "simulated meter"
MEASURED_LABEL = "measured"
_LIBRARIES = {"ppk2": ("ppk2_api", "ppk2-api"), "joulescope": ("joulescope", "joulescope")}
_TIME_UNITS = {"us": 1e-6, "ns": 1e-9, "ms": 1e-3, "s": 1.0}


# -- plan time ---------------------------------------------------------------------------------

def _field_error(profile: DeviceProfile, field_name: str, message: str) -> ConfigError:
    return ConfigError(f"{profile.source}: field 'meter.{field_name}': device {profile.name!r}: {message}")


def check_meter(profile: DeviceProfile) -> None:
    """Everything about one profile's meter that can be checked without opening it."""
    spec = profile.meter
    if spec is None:
        return
    try:
        cls = METERS.get(spec.kind)
    except ConfigError as exc:  # named at 'meter': the section may be the shorthand "meter: KIND"
        raise ConfigError(f"{profile.source}: field 'meter': {exc}") from exc
    errors = cls.spec_errors(spec, profile)
    if errors:
        raise ConfigError("; ".join(f"{profile.source}: field 'meter.{f}': device {profile.name!r}: {m}"
                                    for f, m in errors))
    if not spec.simulated:
        try:
            inspect.signature(cls).bind_partial(**spec.options)
        except TypeError as exc:
            raise _field_error(profile, "options", f"meter kind {spec.kind!r}: {exc}") from exc
    if spec.windows == "marker":
        board = profile.board_description if profile.kind == "mcu" else None
        if profile.kind != "mcu":
            raise _field_error(profile, "windows", f"a {profile.kind} node drives no marker pin; use windows: timestamps")
        if board is None or board.marker is None:
            raise _field_error(profile, "windows", f"board {profile.board!r} lists no marker pin "
                                                   "(harness/config/boards.py); use windows: timestamps")
    if spec.simulated:
        if spec.windows != "marker":
            raise _field_error(profile, "windows", "a simulated meter draws the marker into its trace: use windows: marker")
        if profile.clock_hz is None:
            raise ConfigError(f"{profile.source}: field 'clock_hz': device {profile.name!r}: a simulated meter turns "
                              "instruction counts into window lengths at the profile's clock; give clock_hz")
    library = _LIBRARIES.get(spec.kind)
    if library is not None and find_spec(library[0]) is None:
        raise _field_error(profile, "kind", f"meter kind {spec.kind!r} needs the {library[1]!r} package: "
                                            "pip install 'hilbench[meters]'")


def check_meters(profiles: Mapping[str, DeviceProfile], node_devices: Sequence[str]) -> None:
    """Check the meter of every node profile; a real meter measures one board, so a profile
    with one may serve one node only."""
    for name in dict.fromkeys(node_devices):
        check_meter(profiles[name])
    for name in dict.fromkeys(node_devices):
        profile = profiles[name]
        nodes = [i for i, device in enumerate(node_devices) if device == name]
        if profile.meter is not None and not profile.meter.simulated and len(nodes) > 1:
            raise _field_error(profile, "kind", f"a meter measures one board, but nodes {nodes} all use this "
                                                "profile; give each node its own profile and meter "
                                                "(devices.nodes: [profile-a, profile-b, ...])")


def meter_spec_key(profiles: Mapping[str, DeviceProfile], node_devices: Sequence[str]) -> list[Any] | None:
    """The meter sections of a run's nodes (part of its run key: adding a meter is another run),
    or None when no node has one."""
    specs = [spec.model_dump(mode="json") if (spec := profiles[d].meter) is not None else None for d in node_devices]
    return specs if any(s is not None for s in specs) else None


# -- run time ----------------------------------------------------------------------------------

def compute_seconds(row: Mapping[str, Any], clock_hz: float | None) -> float:
    """One inference's compute time from its stored row: a real timer's time, or an emulator's
    instruction count at ``clock_hz`` (one instruction per cycle, as the energy model assumes)."""
    unit = row["latency_unit"]
    if unit == "instructions":
        if not clock_hz:
            raise MeasurementError("an instruction count needs the profile's clock_hz to become a time")
        return float(row["latency"]) / clock_hz
    if unit not in _TIME_UNITS:
        raise MeasurementError(f"unknown latency unit {unit!r}")
    return float(row["latency"]) * _TIME_UNITS[unit]


@dataclass
class _Batch:
    samples: list[int]
    compute_s: list[float]
    t0: float  # host monotonic: request written
    t1: float  # host monotonic: reply read


@dataclass
class NodeMeter:
    """One node's meter over one session: what it is, how its windows are found, what the run
    told it (batches), and for a simulated meter how its trace is drawn."""

    node: int
    profile: DeviceProfile
    meter: Meter
    basis: str
    synthesis: SynthesisSpec | None = None
    batches: list[_Batch] = field(default_factory=list)
    started_at: float = 0.0
    feed_error: str | None = None

    @property
    def spec(self) -> MeterSpec:
        assert self.profile.meter is not None
        return self.profile.meter

    @property
    def inferences(self) -> int:
        return sum(len(b.samples) for b in self.batches)

    def start(self) -> None:
        self.started_at = time.time()
        self.meter.start()
        if self.synthesis is not None:
            self._feed(*idle_trace(self.synthesis, self.synthesis.edge_idle_s))

    def _feed(self, *arrays: np.ndarray) -> None:
        if not arrays:
            return
        feed = getattr(self.meter, "feed")
        try:
            feed(*arrays)
        except HilbenchError as exc:  # reported by check() / stop(); the run's rows come first
            self.feed_error = str(exc)

    def batch(self, rows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> None:
        """Note a finished batch (and feed a simulated meter its trace); never raises, so the
        engine always commits the batch's rows first: a problem shows in check() and stop()."""
        try:
            compute = [compute_seconds(r, self.profile.clock_hz) for r in rows]
        except MeasurementError as exc:
            self.feed_error = f"node {self.node}: {exc}"
            compute = [float("nan")] * len(rows)
        self.batches.append(_Batch([int(r["sample"]) for r in rows], compute, t0, t1))
        if self.synthesis is not None and self.feed_error is None:
            self._feed(*batch_trace(self.synthesis, compute, idle_before_s=t1 - t0))

    def check(self) -> None:
        self.meter.check()
        if self.feed_error is not None:
            raise MeasurementError(f"metering the node failed: {self.feed_error}")

    def stop(self) -> Trace:
        if self.synthesis is not None:
            self._feed(*idle_trace(self.synthesis, self.synthesis.edge_idle_s))
        self.check()
        return self.meter.stop()


def _basis(meter: Meter, profile: DeviceProfile, synthesis: SynthesisSpec | None) -> str:
    spec = profile.meter
    assert spec is not None
    if spec.windows == "marker":
        board = profile.board_description
        assert board is not None and board.marker is not None and spec.marker_input is not None
        windows = f"marker {board.marker.pin} on {meter.input_name.format(spec.marker_input)}"
    else:
        windows = "windows from host timestamps (clock offset measured, uncertainty stated)"
    if meter.simulated:
        assert synthesis is not None
        return f"{meter.describe()}, {windows}; {synthesis.describe()}"
    return f"{MEASURED_LABEL}: {meter.describe()}, {windows}"


def open_node_meter(node: int, profile: DeviceProfile) -> NodeMeter:
    """The node's meter, built from its profile's section (not started)."""
    spec = profile.meter
    assert spec is not None
    synthesis = None
    meter: Meter
    if spec.simulated:
        from harness.measure.meters.ppk2_sim import SimulatedPPK2Meter

        assert profile.power is not None and spec.voltage_mv is not None and spec.marker_input is not None
        volts = spec.voltage_mv / 1000.0
        synthesis = SynthesisSpec(rate_hz=SimulatedPPK2Meter.nominal_rate_hz, active_a=profile.power.active_mw / 1e3 / volts,
                                  idle_a=profile.power.idle_mw / 1e3 / volts, marker_bit=spec.marker_input,
                                  gap_s=MARKER_GAP_US * 1e-6)
        meter = SimulatedPPK2Meter(spec.voltage_mv, max_current_a=synthesis.active_a, mode=spec.mode or "source",
                                   synthesis=f"{synthesis.describe()}; power figures: {profile.power.source.strip()}")
    else:
        meter = build_meter(METERS.get(spec.kind), spec, profile)
    return NodeMeter(node, profile, meter, _basis(meter, profile, synthesis), synthesis)


class RunMetering:
    """The meters of a run's nodes, as a context manager around streaming (see the module's
    docstring). ``meters`` maps node index to its meter; nodes without one are absent."""

    def __init__(self, store: ResultsStore, run_id: str, meters: dict[int, NodeMeter]) -> None:
        self.store, self.run_id, self.meters = store, run_id, meters
        self.sessions: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "RunMetering":
        started: list[NodeMeter] = []
        try:
            for m in self.meters.values():
                m.start()
                started.append(m)
        except BaseException:
            for m in self.meters.values():
                m.meter.close()
            raise
        return self

    def batch(self, node: int, rows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> None:
        """A node finished a batch: its rows (in sample order) and the request's host times."""
        m = self.meters.get(node)
        if m is not None:
            m.batch(rows, t0, t1)

    def check(self) -> None:
        """MeasurementError naming the node if one of the meters was lost."""
        for node, m in self.meters.items():
            try:
                m.check()
            except MeasurementError as exc:
                raise MeasurementError(
                    f"node {node} ({m.profile.name}, {m.profile.source}): its meter was lost mid-run: {exc}. "
                    f"Basis: {m.basis}. The run stops; every inference that finished is kept (rerun the same "
                    "command to resume: energy is then measured for the inferences the resumed run makes)") from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        errors = self.finish()
        if exc is None and errors:
            raise MeasurementError("; ".join(errors))

    def finish(self) -> list[str]:
        """Stop every meter and store its session; the errors met (each session is stored, as
        failed if its meter could not be read)."""
        errors = []
        for node, m in self.meters.items():
            try:
                row, windows = self._session(m)
            except Exception as exc:  # a meter that cannot even be stopped: say so, keep going
                errors.append(f"node {node}: {exc}")
                continue
            finally:
                try:
                    m.meter.close()
                except Exception as exc:
                    errors.append(f"node {node}: closing its meter failed: {exc}")
            if m.inferences or row["status"] != "complete":
                self.store.add_meter_session(row, windows)
                self.sessions[node] = row
            if row["status"] != "complete":
                errors.append(f"node {node} ({m.profile.name}): {row['error']}")
        return errors

    def _session(self, m: NodeMeter) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The session's row and window rows; status "failed" with the error if the meter could not
        be read or its trace cut (the inferences of a run stopped by Ctrl-C or a failing node are
        windows like any others)."""
        spec = m.spec
        session = self.store.next_meter_session(self.run_id, m.node)
        row: dict[str, Any] = {
            "run_id": self.run_id, "node": m.node, "session": session, "device": m.profile.name,
            "meter": spec.kind, "basis": m.basis, "simulated": int(m.meter.simulated), "windows_by": spec.windows,
            "rate_hz": None, "trace_samples": None, "windows": None, "inferences": m.inferences, "gross_j": None,
            "net_j": None, "idle_w": None, "idle_source": None, "window_s": None, "method": None,
            "clock_offset_s": None, "uncertainty_s": None, "raw_path": None, "status": "failed", "error": None,
            "sources": "[]", "started_at": m.started_at, "stopped_at": None}
        try:
            trace = m.stop()
        except HilbenchError as exc:
            row.update(error=f"the meter could not be read: {exc}", stopped_at=time.time())
            return row, []
        row.update(stopped_at=time.time(), rate_hz=trace.rate_hz, trace_samples=len(trace),
                   clock_offset_s=trace.meta.get("host_minus_meter_s"), status="complete")
        if not m.inferences:  # the node had nothing to run (resumed) or never got its turn: nothing to keep
            return row, []
        raw = Path("meter") / self.run_id / f"node{m.node}-session{session}.npz"
        save_trace(trace, self.store.path.parent / raw)
        row["raw_path"] = str(raw)
        try:
            energy, windows = session_energy(trace, spec, m.batches)
        except MeasurementError as exc:
            row.update(status="failed", error=str(exc))
            return row, []
        row.update(windows=len(windows), gross_j=energy.gross_j, net_j=energy.net_j,
                   idle_w=energy.idle_power_w, idle_source=energy.idle_source, window_s=energy.window_s,
                   method=energy.method, uncertainty_s=energy.uncertainty_s, sources=json.dumps(list(energy.sources)))
        return row, [{"run_id": self.run_id, "node": m.node, "session": session, **w} for w in windows]


def session_energy(trace: Trace, spec: MeterSpec, batches: Sequence[_Batch]) -> tuple[MeterEnergy, list[dict[str, Any]]]:
    """Energy of one session's trace and its per-window rows (window, sample, start_s,
    duration_s, gross_j, net_j). Marker windows pair with the session's inferences in order
    when there are as many; otherwise (a retried request ran again on the device) they are
    kept unpaired and the method says so."""
    samples = [s for b in batches for s in b.samples]
    if spec.windows == "timestamps":
        energy = span_energy(trace, [(b.t0, b.t1) for b in batches], [b.compute_s for b in batches])
        assert energy.per_inference_gross_j is not None and energy.per_inference_net_j is not None
        offset = float(trace.meta.get("host_minus_meter_s") or 0.0)
        starts = [b.t0 - offset for b in batches for _ in b.samples]
        durations = [t for b in batches for t in b.compute_s]
        return energy, [{"window": i, "sample": s, "start_s": starts[i], "duration_s": durations[i],
                         "gross_j": float(energy.per_inference_gross_j[i]), "net_j": float(energy.per_inference_net_j[i])}
                        for i, s in enumerate(samples)]
    if trace.logic is None:
        raise MeasurementError(f"{trace.meter}: the trace has no logic inputs to find the marker in")
    assert spec.marker_input is not None
    windows = marker_windows(trace.logic, spec.marker_input)
    energy = meter_energy(trace, windows)
    paired = len(windows) == len(samples)
    if not paired:
        energy = _with_method(energy, f"{energy.method}; {len(windows)} marker windows for {len(samples)} inferences "
                                      "(a retried request ran again on the device): windows not paired with samples")
    rows = []
    for i, w in enumerate(windows):
        gross = integrate_j(trace, w)
        duration = window_duration_s(trace, w)
        rows.append({"window": i, "sample": samples[i] if paired else None, "start_s": float(trace.t_s[w[0]]),
                     "duration_s": duration, "gross_j": gross, "net_j": gross - energy.idle_power_w * duration})
    return energy, rows


def _with_method(energy: MeterEnergy, method: str) -> MeterEnergy:
    from dataclasses import replace

    return replace(energy, method=method)


def open_metering(store: ResultsStore, run_id: str, profiles: Mapping[str, DeviceProfile], node_devices: Sequence[str],
                  nodes: Sequence[int] | None = None) -> RunMetering:
    """The run's metering: one meter per node whose profile has one (``nodes``: only these)."""
    wanted = range(len(node_devices)) if nodes is None else nodes
    meters: dict[int, NodeMeter] = {}
    try:
        for i in wanted:
            profile = profiles[node_devices[i]]
            if profile.meter is not None:
                meters[i] = open_node_meter(i, profile)
    except BaseException:
        for m in meters.values():
            m.meter.close()
        raise
    return RunMetering(store, run_id, meters)


# -- the summary -------------------------------------------------------------------------------

def _spread(values: np.ndarray) -> dict[str, float]:
    p10, p25, p50, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90), "iqr": float(p75 - p25),
            "mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


def node_meter_energy(sessions: pd.DataFrame, windows: pd.DataFrame,
                      node: int) -> tuple[MeterEnergy | None, dict[str, Any]] | None:
    """A node's energy over its complete meter sessions, as a MeterEnergy (means per inference,
    for the run's totals) and the node's ``meter`` block of the run summary (median and spread
    per inference, in microjoules; windows and inferences; basis; raw files; failed sessions).
    None if no meter ever recorded the node; (None, block) if every session failed (the block
    says why; the totals then use the model)."""
    mine = sessions[(sessions.node == node) & (sessions.status == "complete") & (sessions.inferences > 0)]
    failed = sessions[(sessions.node == node) & (sessions.status != "complete")]
    failures = [{"session": int(s), "error": e} for s, e in zip(failed.session, failed.error)]
    if mine.empty:
        if failed.empty:
            return None
        simulated = bool(failed.simulated.astype(bool).all())
        return None, {"basis": str(failed.basis.iloc[-1]), "label": SIMULATED_LABEL if simulated else MEASURED_LABEL,
                      "windows": 0, "inferences": 0, "sessions": 0, "failed_sessions": failures,
                      "meaning": "no meter session of this node could be read: its energy is the model's"}
    w = windows[(windows.node == node) & windows.session.isin(mine.session)]
    inferences = int(mine.inferences.sum())
    weights = mine.inferences.to_numpy(dtype=float)
    gross = float(np.average(mine.gross_j.to_numpy(dtype=float), weights=weights))
    net = float(np.average(mine.net_j.to_numpy(dtype=float), weights=weights))
    idle = float(np.average(mine.idle_w.to_numpy(dtype=float), weights=weights))
    window_s = float(np.average(mine.window_s.to_numpy(dtype=float), weights=weights))
    per_inference = all(str(m).startswith(("per-inference", "timestamps")) for m in mine.method)
    simulated = bool(mine.simulated.astype(bool).all())
    bases = list(dict.fromkeys(mine.basis))
    sources: list[str] = list(dict.fromkeys(s for text in mine.sources for s in json.loads(text or "[]")))
    uncertainty = mine.uncertainty_s.dropna()
    energy = MeterEnergy(
        meter=str(mine.meter.iloc[0]), inferences=inferences, gross_j=gross, net_j=net, idle_power_w=idle,
        idle_source="; ".join(dict.fromkeys(mine.idle_source)), method="; ".join(dict.fromkeys(mine.method)),
        per_inference_gross_j=w.gross_j.to_numpy(dtype=float) if per_inference else None,
        per_inference_net_j=w.net_j.to_numpy(dtype=float) if per_inference else None,
        sources=tuple(dict.fromkeys([*bases, *sources])), basis=SIMULATED_LABEL if simulated else "meter",
        window_s=window_s, uncertainty_s=float(uncertainty.max()) if len(uncertainty) else None)
    block: dict[str, Any] = {
        "basis": bases[0] if len(bases) == 1 else bases, "label": SIMULATED_LABEL if simulated else MEASURED_LABEL,
        "windows": int(mine.windows.sum()), "inferences": inferences, "sessions": int(len(mine)),
        "failed_sessions": failures,
        "windows_by": "; ".join(dict.fromkeys(mine.windows_by)),
        "gross_uj": {**(_spread(w.gross_j.to_numpy(dtype=float) * 1e6) if per_inference and len(w) else {}),
                     "mean": gross * 1e6},
        "net_uj": {**(_spread(w.net_j.to_numpy(dtype=float) * 1e6) if per_inference and len(w) else {}),
                   "mean": net * 1e6},
        "idle_mw": idle * 1e3, "window_ms": window_s * 1e3, "method": energy.method,
        "uncertainty_ms": None if energy.uncertainty_s is None else energy.uncertainty_s * 1e3,
        "raw_samples": [p for p in mine.raw_path if p],
        "meaning": "per inference: gross = the meter's energy inside the inference's window; net = gross - idle power "
                   "x window time; median and spread over the windows, mean over the inferences",
    }
    return energy, block
