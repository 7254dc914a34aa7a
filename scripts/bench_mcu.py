#!/usr/bin/env python
"""MCU benchmark: the paper's node encoder (C = 64, q = 4) on the emulated Cortex-M boards (M4 with
the DSP kernels, M3 with the portable ones).

Records instructions per inference and per MAC (counted on the emulator with QEMU -icount:
instructions, not cycles), flash and RAM use (from the firmware build), and wire bytes per
inference over the host-device links versus the useful bytes (input + code).
Writes results/reference/mcu-benchmark.{json,md}. Reproduce with:
    .venv/bin/python scripts/bench_mcu.py [--samples N]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.store.results import ResultsStore
from harness.run import RunOptions, run_experiment
from quant_models.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("stm32f405-qemu", "mps2-an386-qemu", "mps2-an385-qemu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    exp = load_experiment(ROOT / "experiments/paper-mnist.yaml")
    store = ResultsStore(ROOT / "results/bench-mcu.sqlite")
    record = {"command": f".venv/bin/python scripts/bench_mcu.py --samples {args.samples}",
              "experiment": "experiments/paper-mnist.yaml", "devices": []}
    for device in DEVICES:
        s = run_experiment(exp, store, RunOptions(nodes_device=device, samples=args.samples))
        nodes = s["nodes"]
        instr = [n["instructions_per_inference"] for n in nodes]
        record["devices"].append({
            "device": device, "run_id": s["run_id"], "samples": s["samples"], "accuracy": s["accuracy"],
            "bitexact_rate": s["bitexact_rate"],
            "instructions_per_inference_per_node": instr,
            "macs_per_inference_per_node": nodes[0]["macs_per_inference"],
            "instructions_per_mac": sum(instr) / len(instr) / nodes[0]["macs_per_inference"],
            "latency_basis": nodes[0]["latency"]["basis"],
            "flash_bytes": nodes[0]["flash_bytes"], "ram_bytes": nodes[0]["ram_bytes"],
            "stack_bytes": nodes[0]["stack_bytes"], "flash_capacity": nodes[0]["info"]["flash_capacity"],
            "ram_capacity": nodes[0]["info"]["ram_capacity"],
            "wire_bytes_per_inference": s["wire_bytes_per_inference"],
            "useful_bytes_per_inference": s["useful_link_bytes_per_inference"],
            "host_round_trip_ms_p50": [n["host_round_trip_ms"]["p50"] for n in nodes],
        })
    out = ROOT / "results/reference"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcu-benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# MCU benchmark: the paper's node encoder on emulated Cortex-M4 boards", "",
             f"Reproduce: `{record['command']}`. Model: {record['experiment']} (4 nodes, 14x14 views, C = 64, q = 4).",
             "Instruction counts are counted on the emulator (QEMU -icount), not cycles of a real board;",
             "flash/RAM from the firmware build (arm-none-eabi-size; RAM includes the 8 KiB stack reserve);",
             "wire bytes counted on the host side of the emulated UART links (framing, both directions).", "",
             "| device | instructions/inference (mean over nodes) | MACs | instructions/MAC | flash B | RAM B | "
             "wire B/inference (4 nodes) | useful B/inference | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in record["devices"]:
        mean_instr = sum(d["instructions_per_inference_per_node"]) / 4
        lines.append(f"| {d['device']} | {mean_instr:,.0f} | {d['macs_per_inference_per_node']:,} | "
                     f"{d['instructions_per_mac']:.2f} | {d['flash_bytes']:,} | {d['ram_bytes']:,} | "
                     f"{d['wire_bytes_per_inference']:.0f} | {d['useful_bytes_per_inference']} | {d['bitexact_rate']:.3f} |")
    (out / "mcu-benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
