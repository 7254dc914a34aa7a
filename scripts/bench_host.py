#!/usr/bin/env python
"""Host-side benchmark (before devices): QAT vs float step time, and test accuracy of the paper
configuration (ours, C = 64, q = 4), FDML and centralized on mnist and fashion-mnist.

Figures are computed on this host with Brevitas/torch on the CPU (not on a device).
Writes results/reference/host-benchmark.json and .md. Reproduce with:
    .venv/bin/python scripts/bench_host.py [--fashion-epochs N]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from quant_models.datasets import load_dataset
from quant_models.experiment import load_experiment
from quant_models.model import NodeEncoder
from quant_models.pipeline import get_trained_model
from quant_models.training import train

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["paper-mnist", "paper-mnist-fdml", "paper-mnist-centralized"]


def step_time(bits, fast_qat: bool = True) -> float:
    """Seconds per training step (forward, backward, Adam) of the paper model, batch 64."""
    exp = load_experiment(ROOT / "experiments/paper-mnist.yaml")
    exp = exp.model_copy(update={
        "code": exp.code.model_copy(update={"bits": bits}),
        "training": exp.training.model_copy(update={"epochs": 1, "train_samples": 3200})})
    NodeEncoder.fast_training = fast_qat
    try:
        return train(exp, load_dataset("mnist")).metrics["seconds_per_step"]
    finally:
        NodeEncoder.fast_training = True


def step_times(rounds: int, threads: int) -> dict:
    """Median over interleaved rounds at ``threads`` torch threads: QAT (fast forward), QAT
    (Brevitas modules), float."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    runs: dict[str, list[float]] = {"qat": [], "qat_brevitas": [], "float": []}
    try:
        for _ in range(rounds):
            runs["qat"].append(step_time(4))
            runs["qat_brevitas"].append(step_time(4, fast_qat=False))
            runs["float"].append(step_time("float"))
    finally:
        torch.set_num_threads(previous)
    qat, brevitas, flt = (statistics.median(runs[k]) for k in ("qat", "qat_brevitas", "float"))
    return {"batch": 64, "threads": threads, "rounds": rounds, "qat_seconds_per_step": qat,
            "qat_brevitas_seconds_per_step": brevitas, "float_seconds_per_step": flt,
            "qat_over_float": qat / flt, "qat_brevitas_over_float": brevitas / flt,
            "runs_seconds_per_step": runs,
            "network": "paper encoder x4 (conv 32@5x5, maxpool 2, FC 16) + head FC 1024"}


def step_time_line(steps: dict) -> str:
    qat, brevitas, flt = (steps[k] * 1000 for k in ("qat_seconds_per_step", "qat_brevitas_seconds_per_step",
                                                    "float_seconds_per_step"))
    return (f"- {steps['threads']} thread{'s' if steps['threads'] > 1 else ''}: QAT {qat:.1f} ms vs float "
            f"{flt:.1f} ms, QAT costs {qat / flt:.2f}x (with the Brevitas modules' forward: {brevitas:.1f} ms, "
            f"{brevitas / flt:.2f}x)")


def anchor_lines(rows: list[dict]) -> list[str]:
    """Per dataset: how many accuracy points ours (256 bits) loses against centralized raw pixels."""
    lines = []
    for dataset in sorted({r["dataset"] for r in rows}):
        by_scheme = {r["scheme"]: r for r in rows if r["dataset"] == dataset}
        if {"ours", "centralized"} <= by_scheme.keys():
            gap = 100 * (by_scheme["centralized"]["test_accuracy"] - by_scheme["ours"]["test_accuracy"])
            lines.append(f"- {dataset}: ours loses {gap:.2f} points against centralized "
                         f"({by_scheme['ours']['epochs']} epochs, {by_scheme['ours']['test_samples']} test images).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-epochs", type=int, default=5,
                        help="epochs on fashion-mnist (60k images; 20 epochs take ~20 min per model here)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the step-time runs")
    parser.add_argument("--step-time-only", action="store_true",
                        help="measure the step times again and keep the accuracy rows of the existing record")
    args = parser.parse_args()
    record: dict[str, Any] = {"command": f".venv/bin/python scripts/bench_host.py --fashion-epochs {args.fashion_epochs} "
                         f"--rounds {args.rounds}" + (" --step-time-only" if args.step_time_only else ""),
              "basis": "computed on the host CPU (torch/Brevitas), not on a device",
              "host": {"machine": platform.machine(), "cpus": torch.get_num_threads(),
                       "torch": torch.__version__},
              "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=ROOT).stdout.strip(),
              "step_time": {}, "accuracy": []}
    record["step_time"] = [step_times(args.rounds, threads) for threads in sorted({1, torch.get_num_threads()})]
    if args.step_time_only:
        previous = json.loads((ROOT / "results/reference/host-benchmark.json").read_text())
        record["accuracy"] = previous["accuracy"]
        record["accuracy_from"] = previous.get("accuracy_from", {"command": previous["command"],
                                                                  "git_commit": previous["git_commit"]})
    for dataset in ("mnist", "fashion-mnist") if not args.step_time_only else ():
        for name in VARIANTS:
            exp = load_experiment(ROOT / f"experiments/{name}.yaml")
            update: dict[str, Any] = {"dataset": dataset}
            if dataset != "mnist":
                update["training"] = exp.training.model_copy(update={"epochs": args.fashion_epochs})
            exp = exp.model_copy(update=update)
            started = time.perf_counter()
            m = get_trained_model(exp).cached.metrics
            record["accuracy"].append({
                "dataset": dataset, "experiment": name, "scheme": m["scheme"], "code_bits": m["code_bits"],
                "bits_per_inference": {"ours": 256, "fdml-scores": 160, "centralized": 6272}[m["scheme"]],
                "epochs": m["epochs"], "train_samples": m["train_samples"], "test_samples": m["test_samples"],
                "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
                "wall_seconds": time.perf_counter() - started})
            print(json.dumps(record["accuracy"][-1]), flush=True)
    out = ROOT / "results/reference"
    out.mkdir(parents=True, exist_ok=True)
    (out / "host-benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# Host-side benchmark (before devices)", "",
             f"Reproduce: `{record['command']}` (commit {record['git_commit'][:10]}).",
             *([f"Accuracy rows from `{record['accuracy_from']['command']}` (commit "
                f"{record['accuracy_from']['git_commit'][:10]})."] if "accuracy_from" in record else []),
             f"Basis: {record['basis']}.", "",
             f"Training step (forward, backward, Adam), batch 64, median of {args.rounds} interleaved rounds; "
             "quant_models/fast_qat.py trains the same parameters bit for bit as the Brevitas modules. "
             "A study's Dask workers train with 1 thread each.",
             *(step_time_line(steps) for steps in record["step_time"]), "",
             "| dataset | scheme | bits/inference | epochs | test accuracy |", "|---|---|---|---|---|"]
    for r in record["accuracy"]:
        lines.append(f"| {r['dataset']} | {r['scheme']} | {r['bits_per_inference']} | {r['epochs']} | "
                     f"{r['test_accuracy']:.4f} ({r['test_samples']} images) |")
    lines += ["", "Paper anchor: 256 bits per inference lose ~2.5 points against raw pixels (6272 bits)."]
    lines += anchor_lines(record["accuracy"])
    (out / "host-benchmark.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
