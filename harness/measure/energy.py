"""Energy per inference: compute, radio, the raw-transmission baseline, saving and break-even.

Pure arithmetic on plain figures. Every figure is an :class:`Energy` that carries its
``basis`` ("meter": integrated from a power meter's samples; "simulated meter": the same from a
simulated meter's synthesised trace; "model": power figures times a time) and the ``sources`` of
its constants, so a report never shows a number without saying where it came from.

Compute energy from a model is gross = t x P_active and net = t x (P_active - P_idle): gross is
what the node draws while it infers (MLPerf Tiny reports this), net is what inferring costs on
top of the node idling for the same time. The time ``t`` has its own basis (:class:`ComputeTime`):
measured by a real board's timer, or modelled, e.g. from an emulator's instruction count, which
is not any board's time and says so in its ``assumption``.

The raw baseline is the same node sending its raw view (e.g. 196 bytes for a 14x14 uint8 patch)
over the same radio without computing anything; sensing costs the same in both cases and is
left out of both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from harness.core.errors import ConfigError, MeasurementError

Basis = Literal["meter", "simulated meter", "model"]
CombinedBasis = str  # a Basis, or several joined by "+" in BASES order (e.g. "meter+model")
BASES: tuple[str, ...] = ("meter", "simulated meter", "model")
TimeBasis = Literal["measured", "modelled"]


@dataclass(frozen=True)
class Energy:
    """One energy figure in joules, with how it was obtained and from which constants."""

    joules: float
    basis: Basis | CombinedBasis
    sources: tuple[str, ...] = ()

    @property
    def microjoules(self) -> float:
        return self.joules * 1e6

    def __add__(self, other: "Energy") -> "Energy":
        return Energy(self.joules + other.joules, combine_basis(self.basis, other.basis),
                      _merge(self.sources, other.sources))


def _merge(*groups: tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return tuple(seen)


def combine_basis(*bases: str) -> CombinedBasis:
    """The basis of a sum: the parts' common basis, or theirs joined by "+" ("meter+model")."""
    parts: set[str] = set()
    for b in bases:
        parts.update(b.split("+"))
    if not parts or not parts <= set(BASES):
        raise MeasurementError(f"unknown energy basis in {bases!r}")
    return "+".join(b for b in BASES if b in parts)


def sum_energies(items: list[Energy]) -> Energy:
    if not items:
        raise MeasurementError("cannot sum an empty list of energies")
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


@dataclass(frozen=True)
class PowerFigures:
    """A device's active and idle power (mW) and where the numbers come from."""

    active_mw: float
    idle_mw: float
    source: str

    def __post_init__(self) -> None:
        if self.active_mw <= 0 or self.idle_mw < 0:
            raise ConfigError(f"power figures need active_mw > 0 and idle_mw >= 0, not "
                              f"{self.active_mw} / {self.idle_mw}")
        if self.idle_mw > self.active_mw:
            raise ConfigError(f"idle power {self.idle_mw} mW exceeds active power {self.active_mw} mW")

    @classmethod
    def from_spec(cls, spec: "Mapping[str, object] | object") -> "PowerFigures":
        """From a profile's ``power`` section (a PowerSpec or a mapping with active_mw, idle_mw,
        source)."""
        get: Callable[[str], Any] = spec.get if isinstance(spec, Mapping) else (lambda k: getattr(spec, k, None))
        try:
            return cls(float(get("active_mw")), float(get("idle_mw")), str(get("source")))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"power figures need active_mw, idle_mw and source: {spec!r}") from exc


@dataclass(frozen=True)
class ComputeTime:
    """Time of one inference on a node, and what kind of time it is."""

    seconds: float
    basis: TimeBasis
    assumption: str

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise MeasurementError(f"compute time must be >= 0, not {self.seconds}")
        if self.basis not in ("measured", "modelled"):
            raise ConfigError(f"compute time basis must be 'measured' or 'modelled', not {self.basis!r}")

    @classmethod
    def measured(cls, seconds: float, how: str) -> "ComputeTime":
        """A real board's own timer (e.g. "DWT cycle counter at 16 MHz")."""
        return cls(seconds, "measured", f"measured: {how}")

    @classmethod
    def from_instructions(cls, instructions: float, clock_hz: float, cycles_per_instruction: float = 1.0,
                          origin: str = "emulator instruction count") -> "ComputeTime":
        """Modelled time instructions x CPI / clock: an emulator counts instructions, not cycles,
        so this is an assumption about the real part (CPI 1 ignores wait states and
        multi-cycle instructions)."""
        if clock_hz <= 0 or cycles_per_instruction <= 0:
            raise ConfigError(f"clock ({clock_hz} Hz) and cycles per instruction ({cycles_per_instruction}) must be > 0")
        return cls(instructions * cycles_per_instruction / clock_hz, "modelled",
                   f"modelled: {cycles_per_instruction:g} cycle(s) per instruction at {clock_hz / 1e6:g} MHz; "
                   f"{origin}")


@dataclass(frozen=True)
class ComputeEnergy:
    """Compute energy of one inference on one node: gross and net."""

    gross: Energy
    net: Energy
    time: ComputeTime | None
    assumptions: tuple[str, ...] = ()


def compute_energy_model(time: ComputeTime, power: PowerFigures) -> ComputeEnergy:
    """gross = t x P_active, net = t x (P_active - P_idle) (basis "model")."""
    sources = (f"power: active {power.active_mw:g} mW, idle {power.idle_mw:g} mW: {power.source}",
               f"time: {time.seconds:.6g} s ({time.assumption})")
    gross = time.seconds * power.active_mw * 1e-3
    net = time.seconds * (power.active_mw - power.idle_mw) * 1e-3
    return ComputeEnergy(Energy(gross, "model", sources), Energy(net, "model", sources), time,
                         (time.assumption,))


def compute_energy_from_meter(gross_j: float, net_j: float, sources: tuple[str, ...],
                              time: ComputeTime | None = None, basis: Basis = "meter") -> ComputeEnergy:
    """Compute energy integrated from a meter's samples (basis "meter", or "simulated meter")."""
    if basis == "model":
        raise MeasurementError("energy from a meter cannot have basis 'model'")
    return ComputeEnergy(Energy(gross_j, basis, sources), Energy(net_j, basis, sources), time)


def radio_energy(airtime_s: float, tx_power_w: float, sources: tuple[str, ...] = ()) -> Energy:
    """Radio TX energy: airtime x TX power (basis "model")."""
    if airtime_s < 0 or tx_power_w < 0:
        raise MeasurementError(f"airtime ({airtime_s}) and TX power ({tx_power_w}) must be >= 0")
    return Energy(airtime_s * tx_power_w, "model", sources)


@dataclass(frozen=True)
class NodeEnergy:
    """One node, one inference: compute and radio for the encoded payload, radio for the raw
    view. ``compute`` is None when the node has no power figures and no meter."""

    node: int
    compute: ComputeEnergy | None
    radio: Energy
    raw_radio: Energy

    @property
    def total(self) -> Energy | None:
        return None if self.compute is None else self.compute.gross + self.radio

    @property
    def total_net(self) -> Energy | None:
        return None if self.compute is None else self.compute.net + self.radio


@dataclass(frozen=True)
class EnergySummary:
    """All nodes of one inference: totals, raw baseline, saving."""

    nodes: tuple[NodeEnergy, ...]
    compute: Energy | None
    compute_net: Energy | None
    radio: Energy
    raw_baseline: Energy
    total: Energy | None
    total_net: Energy | None

    @property
    def saving(self) -> Energy | None:
        """raw baseline - encoded total (gross); positive means encoding saves energy."""
        if self.total is None:
            return None
        return Energy(self.raw_baseline.joules - self.total.joules,
                      combine_basis(self.raw_baseline.basis, self.total.basis),
                      _merge(self.raw_baseline.sources, self.total.sources))

    @property
    def saving_ratio(self) -> float | None:
        """raw baseline / encoded total: 10 means encoding costs a tenth of sending raw."""
        if self.total is None or self.total.joules == 0:
            return None
        return self.raw_baseline.joules / self.total.joules


def summarize(nodes: list[NodeEnergy]) -> EnergySummary:
    """Sum per-node figures; compute totals are None if any node lacks compute energy."""
    if not nodes:
        raise MeasurementError("no nodes to summarize")
    have_compute = all(n.compute is not None for n in nodes)
    compute = sum_energies([n.compute.gross for n in nodes]) if have_compute else None  # type: ignore[union-attr]
    compute_net = sum_energies([n.compute.net for n in nodes]) if have_compute else None  # type: ignore[union-attr]
    radio = sum_energies([n.radio for n in nodes])
    raw = sum_energies([n.raw_radio for n in nodes])
    return EnergySummary(tuple(nodes), compute, compute_net, radio, raw,
                         None if compute is None else compute + radio,
                         None if compute_net is None else compute_net + radio)


def break_even_compute_time_s(raw_radio_j: float, encoded_radio_j: float, active_power_w: float) -> float | None:
    """Compute time per inference at which encoding stops paying off:
    t* = (E_radio,raw - E_radio,encoded) / P_active. Below t* encoding saves energy; None if the
    encoded payload costs at least as much radio energy as the raw view (it never pays off)."""
    if active_power_w <= 0:
        raise ConfigError(f"active power must be > 0, not {active_power_w}")
    margin = raw_radio_j - encoded_radio_j
    return margin / active_power_w if margin > 0 else None


def break_even_raw_bytes(radio_energy_j: Callable[[int], float], compute_j: float, encoded_payload_bytes: int,
                         max_bytes: int = 1 << 16) -> int | None:
    """Smallest raw-view size (bytes) at which encoding pays off: the first B with
    E_radio(B) > compute_j + E_radio(encoded payload). Radio energy never decreases with payload
    size, so this is a binary search; None if no B <= ``max_bytes`` qualifies."""
    if compute_j < 0:
        raise MeasurementError(f"compute energy must be >= 0, not {compute_j}")
    target = compute_j + radio_energy_j(encoded_payload_bytes)
    if radio_energy_j(max_bytes) <= target:
        return None
    lo, hi = encoded_payload_bytes, max_bytes  # E(lo) <= target < E(hi): radio energy never decreases
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if radio_energy_j(mid) > target:
            hi = mid
        else:
            lo = mid
    return hi
