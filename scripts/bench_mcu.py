#!/usr/bin/env python
"""MCU benchmark: node encoders on the emulated Cortex-M boards, whole and layer by layer.

Two encoders: the paper's (experiments/paper-mnist.yaml: 14x14 views, conv 32@5x5, pool 2,
FC -> 16 codes of q = 4) on the three emulated boards (M4s with the DSP kernels, the M3 with the
portable ones), and a 7x7-view encoder (experiments/load-16-nodes.yaml: 16 nodes, q = 2) on the
M4 board it names. For each: instructions per inference and per MAC (counted on the emulator with
QEMU -icount: instructions, not cycles), the per-layer profile the run records, flash and RAM (from
the firmware build), the node compute energy per inference the run models from those counts, and
wire bytes per inference over the host-device links against the useful bytes (input + code).
Writes results/reference/mcu-benchmark.{json,md}. Reproduce with:
    .venv/bin/python scripts/bench_mcu.py [--samples N]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.run import RunOptions, run_experiment
from harness.store.results import ResultsStore
from quant_models.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent
CASES = (("experiments/paper-mnist.yaml", ("stm32f405-qemu", "mps2-an386-qemu", "mps2-an385-qemu")),
         ("experiments/load-16-nodes.yaml", ("mps2-an386-qemu",)))

# The same command before the DSP kernels (commit aa7c151; portable kernels on every board, one
# sample per INFER frame) and before the batched link (commit 425f11d; DSP kernels).
BEFORE = [
    {"commit": "aa7c151", "experiment": "experiments/paper-mnist.yaml", "device": "stm32f405-qemu",
     "instructions_per_mac": 15.25, "layers": {"conv0 (portable)": 16.39, "fc2 (portable)": 5.04},
     "wire_over_useful": 920 / 816},
    {"commit": "aa7c151", "experiment": "experiments/load-16-nodes.yaml", "device": "mps2-an386-qemu",
     "instructions_per_mac": 15.41, "layers": {}, "wire_over_useful": None},
    {"commit": "425f11d", "experiment": "experiments/paper-mnist.yaml", "device": "stm32f405-qemu",
     "instructions_per_mac": 0.93, "layers": {}, "wire_over_useful": 920 / 816},
]


def node_compute_uj(summary: dict[str, Any]) -> list[float | None]:
    energy = summary.get("energy") or {}
    return [n.get("compute_uj") for n in energy.get("per_node", [])]


def measure(experiment: str, device: str, samples: int, store: ResultsStore) -> dict[str, Any]:
    s = run_experiment(load_experiment(ROOT / experiment), store, RunOptions(nodes_device=device, samples=samples))
    nodes = s["nodes"]
    instr = [n["instructions_per_inference"] for n in nodes]
    macs = nodes[0]["macs_per_inference"]
    return {
        "experiment": experiment, "device": device, "run_id": s["run_id"], "samples": s["samples"],
        "nodes": len(nodes), "accuracy": s["accuracy"], "bitexact_rate": s["bitexact_rate"],
        "kernels": nodes[0]["info"].get("kernels"),
        "instructions_per_inference_per_node": instr, "macs_per_inference_per_node": macs,
        "instructions_per_mac": sum(instr) / len(instr) / macs,
        "max_instructions_per_mac": max(instr) / macs,
        "layers_node0": nodes[0]["layers"],
        "latency_basis": nodes[0]["latency"]["basis"],
        "flash_bytes": nodes[0]["flash_bytes"], "ram_bytes": nodes[0]["ram_bytes"],
        "stack_bytes": nodes[0]["stack_bytes"], "flash_capacity": nodes[0]["info"]["flash_capacity"],
        "ram_capacity": nodes[0]["info"]["ram_capacity"],
        "compute_uj_per_node": node_compute_uj(s),
        "energy_basis": (s.get("energy") or {}).get("basis"),
        "energy_sources": ((s.get("energy") or {}).get("sources") or {}).get("compute"),
        "wire_bytes_per_inference": s["wire_bytes_per_inference"],
        "useful_bytes_per_inference": s["useful_link_bytes_per_inference"],
        "host_round_trip_ms_p50": [n["host_round_trip_ms"]["p50"] for n in nodes],
    }


def markdown(record: dict[str, Any]) -> str:
    lines = ["# MCU benchmark: node encoders on emulated Cortex-M boards", "",
             f"Reproduce: `{record['command']}` (commit {record['commit']}).",
             "Instruction counts are counted on the emulator (QEMU -icount), not cycles of a real board;",
             "flash/RAM from the firmware build (arm-none-eabi-size; RAM includes the 8 KiB stack reserve);",
             "compute energy is modelled from the instruction counts and the profile's datasheet power (see the",
             "run JSON's energy block); wire bytes counted on the host side of the emulated UART links (framing,",
             "both directions, all nodes).", "",
             "| experiment | device | kernels | nodes | instructions/inference (mean over nodes) | MACs/node | "
             "instructions/MAC (mean, max) | flash B | RAM B | compute uJ/inference/node | wire B/inference | "
             "useful B | wire/useful | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in record["devices"]:
        mean_instr = sum(d["instructions_per_inference_per_node"]) / d["nodes"]
        energy = [e for e in d["compute_uj_per_node"] if e is not None]
        uj = f"{sum(energy) / len(energy):.2f}" if energy else "n/a"
        lines.append(f"| {d['experiment'].split('/')[-1]} | {d['device']} | {d['kernels']} | {d['nodes']} | "
                     f"{mean_instr:,.0f} | {d['macs_per_inference_per_node']:,} | "
                     f"{d['instructions_per_mac']:.3f}, {d['max_instructions_per_mac']:.3f} | {d['flash_bytes']:,} | "
                     f"{d['ram_bytes']:,} | {uj} | {d['wire_bytes_per_inference']:.1f} | "
                     f"{d['useful_bytes_per_inference']} | "
                     f"{d['wire_bytes_per_inference'] / d['useful_bytes_per_inference']:.3f} | "
                     f"{d['bitexact_rate']:.3f} |")
    lines += ["", "Per layer, node 0 (one inference timed stage by stage by the firmware at deployment: the run "
              "JSON's `nodes[].layers`, `ResultsStore.layers(run_id)`, the report's per-layer table):", "",
              "| experiment | device | stage | MACs | instructions | instructions/MAC | share |",
              "|---|---|---|---|---|---|---|"]
    for d in record["devices"]:
        total = sum(layer["count"] for layer in d["layers_node0"]) or 1.0
        for layer in d["layers_node0"]:
            per_mac = "" if layer["per_mac"] is None else f"{layer['per_mac']:.3f}"
            lines.append(f"| {d['experiment'].split('/')[-1]} | {d['device']} | {layer['stage']} | {layer['macs']:,} | "
                         f"{layer['count']:,.0f} | {per_mac} | {layer['count'] / total:.1%} |")
    lines += ["", "Before (same command at earlier commits, stm32f405-qemu unless named):", "",
              "| commit | experiment | device | instructions/MAC | per layer (instructions/MAC) | wire/useful |",
              "|---|---|---|---|---|---|"]
    for b in record["before"]:
        layers = ", ".join(f"{k} {v:.2f}" for k, v in b["layers"].items()) or "n/a"
        wire = f"{b['wire_over_useful']:.3f}" if b["wire_over_useful"] else "n/a"
        lines.append(f"| {b['commit']} | {b['experiment'].split('/')[-1]} | {b['device']} | "
                     f"{b['instructions_per_mac']:.2f} | {layers} | {wire} |")
    lines += ["", "The M4 boards run the DSP kernels (devices/firmware/kernels/hil_dsp.h: SMLAD on weights laid "
              "out offline, im2col, pooling and requantization fused); mps2-an385-qemu is a Cortex-M3 without the "
              "DSP extension and runs the portable kernels (devices/firmware/kernels/hil_kernels.c). The link "
              "carries up to 16 samples per INFER frame (protocol version 2), each timed on its own."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    store = ResultsStore(ROOT / "results/bench-mcu.sqlite")
    record: dict[str, Any] = {"command": f".venv/bin/python scripts/bench_mcu.py --samples {args.samples}",
                              "commit": commit, "devices": [], "before": BEFORE}
    for experiment, devices in CASES:
        for device in devices:
            record["devices"].append(measure(experiment, device, args.samples, store))
    out = ROOT / "results/reference"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcu-benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (out / "mcu-benchmark.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
