"""The run summary (what ``hilbench run --json`` prints), computed from the results store.

Keys (all per run): run_id, experiment, status, samples, accuracy, golden_accuracy,
bitexact_rate, bits_per_inference, payload_bytes_per_inference, raw_bits_per_inference,
wire_bytes_per_inference, emulated, gateway, nodes [{node, device, emulated, latency {p50, p90,
p99, mean, unit, basis}, host_round_trip_ms {p50, p90, p99}, instructions_per_inference,
cycles_per_inference, macs_per_inference, flash_bytes, ram_bytes, stack_bytes, retries, layers,
model_costs (LSTM encoders), meter (where a meter measured the node: basis, windows, inferences,
gross_uj and net_uj per inference with median and spread, idle power, raw-sample files; see
harness.measure.metering.node_meter_energy), info}]; with profiles also energy, radio and bits
(harness.measure.run_costs), whose compute energy is the meter's where one measured the node.
Computed from stored rows, so a resumed run summarises everything it holds.
"""
from __future__ import annotations

import json
from typing import Any, NotRequired, Sequence, TypedDict

import numpy as np
import pandas as pd

from harness.measure.energy import ComputeTime
from harness.measure.metering import node_meter_energy
from harness.measure.meters.windows import MeterEnergy
from harness.core.errors import MeasurementError
from harness.config.profiles import DeviceProfile, calibrated_model
from harness.store.results import ResultsStore, stored_codes
from harness.measure.run_costs import energy_report
from harness.measure.stats import distribution
from quant_models.manifest import Manifest

DEFAULT_RADIO = "lora-eu868-sf7"


class LatencySummary(TypedDict):
    p50: float
    p90: float
    p99: float
    mean: float
    unit: str
    basis: str


class RoundTripSummary(TypedDict):
    p50: float
    p90: float
    p99: float
    basis: str


class NodeSummary(TypedDict):
    node: int
    device: str
    emulated: bool
    board: str | None
    samples: int
    latency: LatencySummary
    host_round_trip_ms: RoundTripSummary
    instructions_per_inference: float | None
    cycles_per_inference: float | None
    macs_per_inference: int | None
    flash_bytes: int | None
    ram_bytes: int | None
    stack_bytes: int | None
    retries: int
    layers: list[dict[str, Any]] | None
    model_costs: dict[str, int] | None  # LSTM encoders: MACs, multiplies, table lookups, bytes (intlstm.LstmCosts)
    meter: dict[str, Any] | None  # measured (or simulated-meter) energy per inference, where a meter was
    info: dict[str, Any]


class RunSummary(TypedDict):
    """What ``hilbench run --json`` prints and the store keeps with a complete run."""

    run_id: str
    experiment: str
    status: str
    samples: int
    accuracy: float
    golden_accuracy: float
    bitexact_rate: float
    bits_per_inference: int
    payload_bytes_per_inference: int
    raw_bits_per_inference: int
    wire_bytes_per_inference: float
    useful_link_bytes_per_inference: int
    emulated: bool
    gateway: str
    model_hash: str
    dataset: str
    scheme: str
    code_bits: str
    nodes: list[NodeSummary]
    # the cost blocks (harness.measure.run_costs), present when the profiles were given
    energy: NotRequired[dict[str, Any]]
    radio: NotRequired[dict[str, Any]]
    entropy_bits_per_inference: NotRequired[float | None]
    coded_bits_per_inference: NotRequired[float | None]
    bits: NotRequired[dict[str, Any]]
    link: NotRequired[dict[str, Any]]


def link_totals(nodes: Sequence[NodeSummary], expected_rows: int, rows: int, rows_not_bitexact: int) -> dict[str, Any]:
    """The run's link health: retries, device resets, reconnects and (with --link-faults) the
    faults injected by kind; with the row counts that show nothing was lost or taken wrong."""
    faults: dict[str, int] = {}
    spec = None
    for node in nodes:
        link = node["info"].get("link") or {}
        spec = link.get("link_faults", spec)
        for kind, count in (link.get("faults_injected") or {}).items():
            faults[kind] = faults.get(kind, 0) + int(count)
    return {
        "link_faults": spec, "faults_injected": faults,
        "retries": sum(node["retries"] for node in nodes),
        "resets": sum(len(node["info"].get("resets") or []) for node in nodes),
        "reconnects": sum(int(((node["info"].get("link") or {}).get("counters") or {}).get("reconnects", 0))
                          for node in nodes),
        "rows": rows, "expected_rows": expected_rows, "rows_not_bitexact": rows_not_bitexact,
    }


def _mean_of_unit(rows, unit: str) -> float | None:
    picked = rows[rows.device_unit == unit]["device_count"]
    return float(picked.mean()) if len(picked) else None


def node_compute_time(node: NodeSummary, profile: DeviceProfile) -> ComputeTime:
    """Per-inference compute time of a node and its basis: a real timer's mean is measured; an
    emulator's instruction count becomes a modelled time at the profile's clock (one cycle per
    instruction), or for a stand-in of a calibrated device (``calibrated_by``) at that device's
    clock and measured cycles per instruction."""
    lat = node["latency"]
    model = calibrated_model(profile)
    if lat["unit"] == "instructions" and model is not profile:
        cal = model.calibration
        assert cal is not None and cal.cycles_per_instruction is not None and model.clock_hz is not None
        return ComputeTime.from_instructions(
            lat["mean"], model.clock_hz, cal.cycles_per_instruction,
            origin=f"{lat['basis']} on {node['device']}; cycles per instruction {cal.label} on {model.name} "
                   f"({cal.measured_at}, against {cal.against}, workload {cal.workload})")
    if lat["unit"] == "instructions":
        clock = profile.clock_hz or node["info"].get("clock_hz")
        if clock is None:
            raise MeasurementError(f"{profile.source}: field 'clock_hz': device {profile.name!r} reports no clock "
                                   "rate, so its instruction count cannot be turned into a compute time")
        return ComputeTime.from_instructions(lat["mean"], clock, origin=f"{lat['basis']} on {node['device']}")
    return ComputeTime.measured(lat["mean"] / 1e6, lat["basis"])


def cost_blocks(summary: RunSummary, inf: pd.DataFrame, manifest: Manifest, profiles: dict[str, DeviceProfile],
                train_codes: Sequence[np.ndarray] | None, meters: Sequence[MeterEnergy | None] | None = None) -> dict:
    """The energy, radio and bits blocks (see harness.measure.run_costs) for a summarised run."""
    nodes = summary["nodes"]
    node_profiles = [profiles[n["device"]] for n in nodes]
    times = [node_compute_time(n, p) for n, p in zip(nodes, node_profiles)]
    radios = {p.radio or DEFAULT_RADIO for p in node_profiles}
    if len(radios) != 1:
        raise MeasurementError(f"nodes use different radios {sorted(radios)}; one radio per run is supported")
    codes = [stored_codes(inf, m["node"], m["code_len"], int(m["code_bits"])) for m in manifest["nodes"]]
    return energy_report(
        radio=radios.pop(), payload_bytes=[m["payload_bytes"] for m in manifest["nodes"]],
        raw_bytes=[m["view_shape"][0] * m["view_shape"][1] for m in manifest["nodes"]],
        compute_time_s=[t.seconds for t in times], time_basis=[t.basis for t in times],
        time_assumption=[t.assumption for t in times], power=[calibrated_model(p).power for p in node_profiles],
        meter=list(meters) if meters is not None else None, codes=codes, train_codes=train_codes, bits=int(manifest["nodes"][0]["code_bits"]))


def summarize_run(store: ResultsStore, run_id: str, manifest: Manifest,
                  profiles: dict[str, DeviceProfile] | None = None,
                  train_codes: Sequence[np.ndarray] | None = None) -> RunSummary:
    """The run summary; with ``profiles`` also its energy, radio and bits blocks."""
    run = store.run(run_id)
    inf, pred, nodes = store.inferences(run_id), store.predictions(run_id), store.nodes(run_id)
    if pred.empty:
        raise MeasurementError(f"run {run_id} has no predictions yet")
    samples = len(pred)
    sessions, windows = store.meter_sessions(run_id), store.energy_windows(run_id)
    metered = {int(node): node_meter_energy(sessions, windows, int(node)) for node in nodes.node}
    node_rows: list[NodeSummary] = []
    for _, n in nodes.iterrows():
        rows = inf[inf.node == n.node]
        info = json.loads(n["info"]) if n["info"] else {}
        layers = info.pop("layers", None)
        lat = distribution(rows["latency"].tolist())
        rtt = distribution((rows["host_rtt_s"] * 1000).tolist())
        node_rows.append({
            "node": int(n.node), "device": n.device, "emulated": bool(n.emulated), "board": n.board,
            "samples": int(len(rows)),
            "latency": {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "mean": lat.mean,
                        "unit": rows["latency_unit"].iloc[0], "basis": rows["latency_basis"].iloc[0]},
            "host_round_trip_ms": {"p50": rtt.p50, "p90": rtt.p90, "p99": rtt.p99,
                                   "basis": "measured on host (wall clock, request to reply)"},
            "instructions_per_inference": _mean_of_unit(rows, "instructions"),
            "cycles_per_inference": _mean_of_unit(rows, "cycles"),
            "macs_per_inference": int(n.macs) if n.macs is not None else None,
            "flash_bytes": None if n.flash_bytes is None else int(n.flash_bytes),
            "ram_bytes": None if n.ram_bytes is None else int(n.ram_bytes),
            "stack_bytes": None if n.stack_bytes is None else int(n.stack_bytes),
            "retries": int((rows["attempts"].fillna(1) - 1).sum()),
            "layers": layers,  # per stage: MACs, instructions or cycles, per MAC (microcontrollers)
            "model_costs": manifest["nodes"][int(n.node)].get("costs"),
            "meter": None if (m := metered[int(n.node)]) is None else m[1],
            "info": info,
        })
    wire = (inf["wire_bytes_sent"].fillna(0) + inf["wire_bytes_received"].fillna(0)).sum()
    useful_per_node = [m["view_shape"][0] * m["view_shape"][1] + m["payload_bytes"] for m in manifest["nodes"]]
    summary: RunSummary = {
        "run_id": run_id, "experiment": run["experiment"], "status": "complete", "samples": samples,
        "accuracy": float((pred.prediction == pred.label).mean()),
        "golden_accuracy": float((pred.golden_prediction == pred.label).mean()),
        "bitexact_rate": float(inf.bitexact.mean()),
        "bits_per_inference": manifest["bits_per_inference"],
        "payload_bytes_per_inference": manifest["payload_bytes_per_inference"],
        "raw_bits_per_inference": manifest["raw_bits_per_inference"],
        "wire_bytes_per_inference": float(wire / samples),
        "useful_link_bytes_per_inference": sum(useful_per_node),
        "emulated": bool(run["emulated"]), "gateway": run["gateway_device"],
        "model_hash": run["model_hash"], "dataset": run["dataset"], "scheme": run["scheme"],
        "code_bits": run["code_bits"],
        "nodes": node_rows,
    }
    summary["link"] = link_totals(node_rows, expected_rows=samples * len(node_rows),
                                  rows=len(inf), rows_not_bitexact=int((inf.bitexact == 0).sum()))
    if profiles is not None:
        meters = [None if (m := metered[node["node"]]) is None else m[0] for node in node_rows]  # None: the model
        blocks = cost_blocks(summary, inf, manifest, profiles, train_codes, meters)
        summary["energy"], summary["radio"], summary["bits"] = blocks["energy"], blocks["radio"], blocks["bits"]
        summary["entropy_bits_per_inference"] = blocks["entropy_bits_per_inference"]
        summary["coded_bits_per_inference"] = blocks["coded_bits_per_inference"]
    return summary
