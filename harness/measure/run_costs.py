"""The run JSON's energy, radio and bits blocks, computed from plain per-node inputs.

The run engine calls :func:`energy_report` once per run with what it measured; everything here
is arithmetic over :mod:`harness.measure.energy`, :mod:`harness.measure.radio_models` and :mod:`harness.measure.bits`,
so the blocks of a stored run can be recomputed from its inputs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.measure import energy as en
from harness.measure.bits import BitsReport, bits_report
from harness.core.errors import ConfigError
from harness.measure.meters.windows import MeterEnergy
from harness.measure.radio_models import RadioCost, RadioProfile, get_radio_profile



def _per_node(value: Any, n: int, name: str) -> list[Any]:
    """A list, tuple or array is one entry per node; anything else (a str too) applies to every
    node."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        return [value] * n
    items = list(value)
    if len(items) != n:
        raise ConfigError(f"energy_report: {name} has {len(items)} entries for {n} nodes")
    return items


def _uj(e: en.Energy | None) -> float | None:
    return None if e is None else e.microjoules


def _rate(x: float) -> float | None:
    return None if math.isinf(x) else x


def energy_report(*, radio: str | RadioProfile, payload_bytes: Sequence[int], raw_bytes: int | Sequence[int],
                  compute_time_s: float | Sequence[float | None] | None = None,
                  time_basis: str | Sequence[str] = "modelled", time_assumption: str | Sequence[str] = "",
                  power: Any = None,
                  meter: Sequence[MeterEnergy | None] | None = None,
                  codes: Sequence[np.ndarray] | None = None, train_codes: Sequence[np.ndarray] | None = None,
                  bits: int | None = None, radio_dirs: list[Path] | None = None) -> dict[str, Any]:
    """The ``energy``, ``radio``, ``entropy_bits_per_inference``, ``coded_bits_per_inference``
    and ``bits`` blocks of a run JSON.

    Inputs, one entry per node unless a single value is given for all nodes:
    - ``radio``: a radio profile name (``devices/radios/NAME.yaml``) or a loaded profile.
    - ``payload_bytes``: the packed code bytes each node sends per inference (one per node; its
      length is the number of nodes).
    - ``raw_bytes``: the raw view each node would send instead (196 for a 14x14 uint8 patch).
    - ``compute_time_s``: seconds per inference on each node (mean or median of the run), with
      ``time_basis`` "measured" (a real board's timer) or "modelled" (e.g. instructions / clock
      from an emulator) and ``time_assumption`` saying how it was obtained (for "modelled":
      e.g. "1 instruction per cycle at 168 MHz; emulator instruction count"). Use
      :meth:`harness.measure.energy.ComputeTime.from_instructions` to build both from a count.
    - ``power``: the device profile's ``power`` section (a PowerSpec, or a mapping with
      active_mw, idle_mw, source) or None
      when the profile has none (compute energy is then reported as missing, radio still is).
    - ``meter``: per-node :class:`~harness.measure.meters.windows.MeterEnergy` where a meter measured
      the node; it replaces the model for that node's compute energy (so in the totals, the
      saving and the break-even, whose active power is then the meter's mean power inside the
      windows), and the model's figure stays beside it (``compute_model_uj``, ``meter_over_model``).
    - ``codes`` / ``train_codes``: per node [samples, k] integer codes of the test run and of
      the training split (the coders' models are fitted on the latter); ``bits`` is q.
    Energies are per inference, in microjoules; every energy carries its basis and sources.
    """
    n = len(payload_bytes)
    if n == 0:
        raise ConfigError("energy_report: no nodes (payload_bytes is empty)")
    profile = radio if isinstance(radio, RadioProfile) else get_radio_profile(radio, radio_dirs)
    raws = _per_node(raw_bytes, n, "raw_bytes")
    times = _per_node(compute_time_s, n, "compute_time_s")
    bases = _per_node(time_basis, n, "time_basis")
    assumptions = _per_node(time_assumption, n, "time_assumption")
    powers = _per_node(power, n, "power")
    meters = _per_node(meter, n, "meter")

    enc_costs: list[RadioCost] = [profile.cost(int(b)) for b in payload_bytes]
    raw_costs: list[RadioCost] = [profile.cost(int(b)) for b in raws]
    missing: list[str] = []
    nodes: list[en.NodeEnergy] = []
    per_node: list[dict[str, Any]] = []
    for i in range(n):
        pw = en.PowerFigures.from_spec(powers[i]) if powers[i] is not None else None
        time_i = (en.ComputeTime(float(times[i]), bases[i], assumptions[i] or bases[i])
                  if times[i] is not None else None)
        modelled = en.compute_energy_model(time_i, pw) if pw is not None and time_i is not None else None
        m = meters[i]
        if m is not None:
            compute = en.compute_energy_from_meter(m.gross_j, m.net_j, (*m.sources, f"method: {m.method}"), time_i,
                                                   basis=m.basis)
        elif modelled is not None:
            compute = modelled
        else:
            compute = None
            missing.append(f"node {i}: compute energy needs a meter, or power figures and a compute time "
                           f"({'no power figures' if pw is None else 'no compute time'})")
        radio_e = en.Energy(enc_costs[i].energy_j, "model", enc_costs[i].sources)
        raw_e = en.Energy(raw_costs[i].energy_j, "model", raw_costs[i].sources)
        node = en.NodeEnergy(i, compute, radio_e, raw_e)
        nodes.append(node)

        # Active power for the break-even time: measured where a meter was (its mean power inside
        # the windows), else the profile's figure.
        active_w = m.active_power_w if m is not None else None
        if active_w is None and pw is not None:
            active_w = pw.active_mw * 1e-3
        if active_w is None and compute is not None and time_i is not None and time_i.seconds > 0:
            active_w = compute.gross.joules / time_i.seconds
        t_star = (en.break_even_compute_time_s(raw_costs[i].energy_j, enc_costs[i].energy_j, active_w)
                  if active_w else None)
        b_star = (en.break_even_raw_bytes(lambda b: profile.cost(b).energy_j, compute.gross.joules,
                                          int(payload_bytes[i]), max_bytes=1 << 16)
                  if compute is not None else None)
        per_node.append({
            "node": i, "payload_bytes": int(payload_bytes[i]), "raw_bytes": int(raws[i]),
            "compute_time_s": None if time_i is None else time_i.seconds,
            "compute_time_basis": None if time_i is None else time_i.basis,
            "compute_uj": _uj(compute.gross if compute else None),
            "compute_net_uj": _uj(compute.net if compute else None),
            "radio_uj": radio_e.microjoules, "raw_radio_uj": raw_e.microjoules,
            "total_uj": _uj(node.total), "airtime_ms": enc_costs[i].airtime_s * 1e3,
            "raw_airtime_ms": raw_costs[i].airtime_s * 1e3,
            "basis": {"compute": compute.gross.basis if compute else None, "radio": "model"},
            "break_even_compute_time_s": t_star, "break_even_raw_bytes": b_star,
            "break_even_active_power_w": active_w,
            # the model's figures beside a meter's, so the model's distance from the measurement shows
            "compute_model_uj": _uj(modelled.gross if modelled else None),
            "compute_model_net_uj": _uj(modelled.net if modelled else None),
            "meter_over_model": (compute.gross.joules / modelled.gross.joules
                                 if m is not None and compute is not None and modelled is not None
                                 and modelled.gross.joules > 0 else None),
        })

    summary = en.summarize(nodes)
    sources_compute: tuple[str, ...] = ()
    for node in nodes:
        if node.compute is not None:
            sources_compute = (*sources_compute, *(s for s in node.compute.gross.sources if s not in sources_compute))
    energy_block = {
        "compute_uj": _uj(summary.compute), "compute_net_uj": _uj(summary.compute_net),
        "radio_uj": summary.radio.microjoules, "total_uj": _uj(summary.total), "total_net_uj": _uj(summary.total_net),
        "raw_baseline_uj": summary.raw_baseline.microjoules,
        "saving_uj": _uj(summary.saving), "saving_ratio": summary.saving_ratio,
        "break_even": {
            "compute_time_s_per_node": [p["break_even_compute_time_s"] for p in per_node],
            "raw_bytes_per_node": [p["break_even_raw_bytes"] for p in per_node],
            "meaning": "encoding pays off while a node's compute time stays below compute_time_s, "
                       "and for raw views of at least raw_bytes (None: never, within 64 KiB)",
        },
        "basis": {
            "compute": None if summary.compute is None else summary.compute.basis,
            "radio": summary.radio.basis, "raw_baseline": summary.raw_baseline.basis,
            "total": None if summary.total is None else summary.total.basis,
        },
        "sources": {"compute": list(sources_compute), "radio": list(enc_costs[0].sources)},
        "assumptions": sorted({a for node in nodes if node.compute for a in node.compute.assumptions}
                              | {"raw baseline: the same radio sends the raw view; no compute; sensing excluded "
                                 "from both", "radio energy: TX airtime x TX power"}),
        "per_node": per_node,
        "missing": missing,
    }
    radio_block = {
        "name": profile.name, "model": profile.model.name,
        "airtime_ms": max(c.airtime_s for c in enc_costs) * 1e3,
        "airtime_total_ms": sum(c.airtime_s for c in enc_costs) * 1e3,
        "max_rate_hz": _rate(min(c.max_rate_hz for c in enc_costs)),
        "frames_per_node": [c.frames for c in enc_costs],
        "raw": {"airtime_ms": max(c.airtime_s for c in raw_costs) * 1e3,
                "max_rate_hz": _rate(min(c.max_rate_hz for c in raw_costs)),
                "frames_per_node": [c.frames for c in raw_costs]},
        "basis": "model", "sources": list(enc_costs[0].sources), "notes": list(enc_costs[0].notes),
        "meaning": "airtime_ms: the slowest node's time on air per inference; max_rate_hz: inferences per "
                   "second the slowest node's radio allows",
    }
    report: BitsReport | None = None
    if codes is not None:
        if bits is None:
            raise ConfigError("energy_report: codes given without bits (q)")
        report = bits_report(list(codes), bits, None if train_codes is None else list(train_codes))
    return {
        "energy": energy_block,
        "radio": radio_block,
        "entropy_bits_per_inference": None if report is None else report.entropy_bits_per_inference,
        "coded_bits_per_inference": None if report is None else report.coded_bits_per_inference,
        "bits": bits_block(report, payload_bytes),
    }


def bits_block(report: BitsReport | None, payload_bytes: Sequence[int]) -> dict[str, Any]:
    """The ``bits`` detail block: nominal, payload, entropies per node, coded sizes per coder."""
    block: dict[str, Any] = {"payload_bytes": int(sum(payload_bytes)), "basis": "empirical (codes of this run)"}
    if report is None:
        return {**block, "missing": ["no codes given: entropy and coded sizes not computed"]}
    return {
        **block,
        "nominal_bits": report.nominal_bits,
        "packed_payload_bytes": report.payload_bytes,
        "entropy_estimate": report.entropy_estimate,
        "coded": report.coded,
        "coded_headline": "huffman: per-position Huffman codes fitted on the training split, each inference's "
                          "message coded alone, exact bits (constriction)",
        "per_node": [{
            "node": nb.node, "code_len": nb.code_len, "q": nb.bits, "nominal_bits": nb.nominal_bits,
            "payload_bytes": nb.payload_bytes, "samples": nb.entropy.samples,
            "entropy_per_position_bits": nb.entropy.per_position, "entropy_pooled_bits": nb.entropy.pooled,
            "entropy_joint_bits": nb.entropy.joint, "joint_at_sample_limit": nb.entropy.joint_at_sample_limit,
            "cross_entropy_bits": nb.cross_entropy_bits,
            "coded": {c.coder: {"bits_per_inference": c.bits_per_inference, "per_message": c.per_message,
                                "fitted_on": c.fitted_on} for c in nb.coded},
        } for nb in report.nodes],
    }
