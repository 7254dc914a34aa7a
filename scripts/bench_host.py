#!/usr/bin/env python
"""Host-side benchmark (before devices): QAT vs float step time, and test accuracy of the paper
configuration (ours, C = 64, q = 4), FDML and centralized on mnist and fashion-mnist.

Figures are computed on this host with Brevitas/torch on the CPU (not on a device).
Writes results/reference/host-benchmark.json and .md. Reproduce with:
    .venv/bin/python scripts/bench_host.py [--fashion-epochs N]

Step time is one training step (forward, backward, Adam; batch 64) of the paper model, timed in
interleaved rounds (QAT, QAT with the Brevitas modules' forward, float, one block of steps each),
so that a machine shared with other jobs slows all of them alike. ``train()``'s own
seconds_per_step is recorded beside it: it also counts the end-of-epoch encoder health check.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # time this checkout's code, not the tree an editable install points at

import quant_models  # noqa: E402
from quant_models import model as model_module  # noqa: E402
from quant_models.datasets import Dataset, load_dataset  # noqa: E402
from quant_models.experiment import Experiment, load_experiment  # noqa: E402
from quant_models.model import SCHEMES, NodeEncoder, build_model  # noqa: E402
from quant_models.partition import make_partition  # noqa: E402
from quant_models.pipeline import get_trained_model  # noqa: E402
from quant_models.training import train, views_as_tensors  # noqa: E402

VARIANTS = ["paper-mnist", "paper-mnist-fdml", "paper-mnist-centralized"]
NETWORK = "paper encoder x4 (conv 32@5x5, maxpool 2, FC 16) + head FC 1024"
WARMUP_STEPS = 5
TRAIN_ROUNDS = 3  # rounds that also run train() (a whole epoch and a test-set evaluation each)


def paper_experiment(bits) -> Experiment:
    """The paper model at ``bits`` (or "float"), one epoch of 3200 samples (50 steps of 64)."""
    exp = load_experiment(ROOT / "experiments/paper-mnist.yaml")
    return exp.model_copy(update={
        "code": exp.code.model_copy(update={"bits": bits}),
        "training": exp.training.model_copy(update={"epochs": 1, "train_samples": 3200})})


def train_seconds_per_step(bits) -> float:
    """``train()``'s seconds_per_step: 50 steps plus one end-of-epoch encoder health check."""
    return train(paper_experiment(bits), load_dataset("mnist")).metrics["seconds_per_step"]


@contextlib.contextmanager
def fast_qat_module(module: ModuleType | None) -> Iterator[None]:
    """Run the encoders' fast QAT forward from ``module`` (another fast_qat.py) inside."""
    if module is None:
        yield
        return
    current = model_module.fast_qat
    model_module.fast_qat = module  # a module of the same interface
    try:
        yield
    finally:
        model_module.fast_qat = current


class StepLoop:
    """One paper model trained step by step as ``train()`` does (its model, loss, Adam, shuffled
    batches of 64), only the steps timed."""

    def __init__(self, bits, data: Dataset, fast: bool = True, module: ModuleType | None = None):
        exp = paper_experiment(bits)
        torch.manual_seed(exp.training.seed)
        self.rng = np.random.default_rng(exp.training.seed)
        partition = make_partition(exp.partition, data.image_shape)
        self.model = build_model(exp, partition, data.classes)
        for enc in self.model.node_encoders():
            if isinstance(enc, NodeEncoder):
                enc.fast_training = fast
        n = exp.training.train_samples
        self.views = views_as_tensors(partition, data.train_x[:n])
        self.labels = torch.from_numpy(data.train_y[:n].astype(np.int64))
        self.loss_fn = SCHEMES.get(exp.scheme).loss
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                          lr=exp.training.learning_rate)
        self.exp, self.batch, self.module = exp, exp.training.batch_size, module
        self.order = torch.empty(0, dtype=torch.int64)
        self.model.train()

    def seconds_per_step(self, steps: int) -> float:
        with fast_qat_module(self.module):
            started = time.perf_counter()
            for _ in range(steps):
                if len(self.order) < self.batch:
                    self.order = torch.from_numpy(self.rng.permutation(len(self.labels)))
                idx, self.order = self.order[:self.batch], self.order[self.batch:]
                loss = self.loss_fn(self.model, [v[idx] for v in self.views], self.labels[idx], self.exp)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            return (time.perf_counter() - started) / steps


def step_times(rounds: int, threads: int, steps: int, other: ModuleType | None = None) -> dict:
    """Seconds per training step at ``threads`` torch threads over interleaved rounds: QAT (fast
    forward), QAT (Brevitas modules), float [, QAT with ``other`` fast_qat], as medians and as
    the fastest round (the least disturbed by other jobs); and ``train()``'s seconds_per_step
    for QAT and float (the first TRAIN_ROUNDS rounds)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    data = load_dataset("mnist")
    loops = {"qat": StepLoop(4, data), "qat_brevitas": StepLoop(4, data, fast=False), "float": StepLoop("float", data)}
    if other is not None:
        loops["qat_other"] = StepLoop(4, data, module=other)
    runs: dict[str, list[float]] = {k: [] for k in loops}
    train_runs: dict[str, list[float]] = {"qat": [], "float": []}
    try:
        for loop in loops.values():
            loop.seconds_per_step(WARMUP_STEPS)
        for r in range(rounds):
            for name, loop in loops.items():
                runs[name].append(loop.seconds_per_step(steps))
            if r < TRAIN_ROUNDS:
                train_runs["qat"].append(train_seconds_per_step(4))
                train_runs["float"].append(train_seconds_per_step("float"))
    finally:
        torch.set_num_threads(previous)
    med = {k: statistics.median(v) for k, v in runs.items()}
    fastest = {k: min(v) for k, v in runs.items()}
    record: dict[str, Any] = {
        "batch": 64, "threads": threads, "rounds": rounds, "steps_per_round": steps,
        "qat_seconds_per_step": med["qat"], "qat_brevitas_seconds_per_step": med["qat_brevitas"],
        "float_seconds_per_step": med["float"], "qat_over_float": med["qat"] / med["float"],
        "qat_brevitas_over_float": med["qat_brevitas"] / med["float"],
        "fastest_round_seconds_per_step": fastest,
        "fastest_round_qat_over_float": fastest["qat"] / fastest["float"],
        "runs_seconds_per_step": runs,
        "train_seconds_per_step": {k: statistics.median(v) for k, v in train_runs.items()}
        | {"qat_over_float": statistics.median(train_runs["qat"]) / statistics.median(train_runs["float"]),
           "runs": train_runs},
        "network": NETWORK}
    if other is not None:
        record["qat_other_seconds_per_step"] = med["qat_other"]
        record["qat_other_over_float"] = med["qat_other"] / med["float"]
    return record


def step_time_line(steps: dict) -> str:
    qat, brevitas, flt = (steps[k] * 1000 for k in ("qat_seconds_per_step", "qat_brevitas_seconds_per_step",
                                                    "float_seconds_per_step"))
    line = (f"- {steps['threads']} thread{'s' if steps['threads'] > 1 else ''}: QAT {qat:.1f} ms vs float "
            f"{flt:.1f} ms, QAT costs {qat / flt:.2f}x (with the Brevitas modules' forward: {brevitas:.1f} ms, "
            f"{brevitas / flt:.2f}x")
    if "qat_other_seconds_per_step" in steps:
        line += f"; with {steps.get('other_fast_qat', 'the other fast_qat')}: " \
                f"{steps['qat_other_seconds_per_step'] * 1000:.1f} ms, {steps['qat_other_over_float']:.2f}x"
    line += ")"
    if "fastest_round_seconds_per_step" in steps:
        fast = steps["fastest_round_seconds_per_step"]
        line += (f"; fastest round: QAT {fast['qat'] * 1000:.1f} ms vs float {fast['float'] * 1000:.1f} ms, "
                 f"{steps['fastest_round_qat_over_float']:.2f}x")
    if "train_seconds_per_step" in steps:
        t = steps["train_seconds_per_step"]
        line += (f"; train()'s seconds_per_step: QAT {t['qat'] * 1000:.1f} ms vs float {t['float'] * 1000:.1f} ms, "
                 f"{t['qat_over_float']:.2f}x")
    return line


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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("fast_qat_other", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--compare-fast-qat: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-epochs", type=int, default=5,
                        help="epochs on fashion-mnist (60k images; 20 epochs take ~20 min per model here)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the step-time runs")
    parser.add_argument("--steps", type=int, default=50, help="training steps per variant and round")
    parser.add_argument("--step-time-only", action="store_true",
                        help="measure the step times again and keep the accuracy rows of the existing record")
    parser.add_argument("--compare-fast-qat", type=Path, metavar="FILE",
                        help="also time QAT with this fast_qat.py (e.g. an earlier version from git show)")
    parser.add_argument("--note", default="", help="a line on the conditions (e.g. what else ran on the machine)")
    args = parser.parse_args()
    command = (f".venv/bin/python scripts/bench_host.py --fashion-epochs {args.fashion_epochs} --rounds {args.rounds}"
               + (f" --steps {args.steps}" if args.steps != 50 else "")
               + (" --step-time-only" if args.step_time_only else "")
               + (f" --compare-fast-qat {args.compare_fast_qat}" if args.compare_fast_qat else ""))
    record: dict[str, Any] = {"command": command,
              "basis": "computed on the host CPU (torch/Brevitas), not on a device",
              "host": {"machine": platform.machine(), "cpu_model": cpu_model(), "cpus": torch.get_num_threads(),
                       "torch": torch.__version__, "load_average_before": list(os.getloadavg())},
              "code": str(Path(quant_models.__file__).parent),
              "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=ROOT).stdout.strip(),
              "step_time": {}, "accuracy": []}
    if args.note:
        record["note"] = args.note
    other = load_module(args.compare_fast_qat) if args.compare_fast_qat else None
    record["step_time"] = [step_times(args.rounds, threads, args.steps, other)
                           for threads in sorted({1, torch.get_num_threads()})]
    record["host"]["load_average_after"] = list(os.getloadavg())
    if other is not None:
        for steps in record["step_time"]:
            steps["other_fast_qat"] = str(args.compare_fast_qat)
    previous = json.loads((ROOT / "results/reference/host-benchmark.json").read_text()) \
        if (ROOT / "results/reference/host-benchmark.json").exists() else None
    if previous is not None:  # before/after: the step times of the record this run replaces
        record["previous_step_time"] = {"command": previous["command"], "git_commit": previous["git_commit"],
                                        "step_time": previous["step_time"]}
    if args.step_time_only:
        if previous is None:
            raise SystemExit("--step-time-only needs an existing results/reference/host-benchmark.json")
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
    (out / "host-benchmark.md").write_text("\n".join(markdown_lines(record)) + "\n")


def markdown_lines(record: dict) -> list[str]:
    host = record["host"]
    steps0 = record["step_time"][0]
    lines = ["# Host-side benchmark (before devices)", "",
             f"Reproduce: `{record['command']}` (commit {record['git_commit'][:10]}).",
             *([f"Accuracy rows from `{record['accuracy_from']['command']}` (commit "
                f"{record['accuracy_from']['git_commit'][:10]})."] if "accuracy_from" in record else []),
             f"Basis: {record['basis']}.",
             f"Host: {host.get('cpu_model', host['machine'])}, {host['cpus']} CPUs, torch {host['torch']}"
             + (f"; load average {host['load_average_before'][0]:.1f} before, {host['load_average_after'][0]:.1f} "
                "after the step-time runs" if "load_average_after" in host else "") + ".",
             *([f"Conditions: {record['note']}"] if record.get("note") else []), "",
             f"Training step (forward, backward, Adam), batch 64: median of {steps0['rounds']} interleaved rounds of "
             f"{steps0.get('steps_per_round', 50)} steps per variant; quant_models/fast_qat.py trains the same "
             "parameters bit for bit as the Brevitas modules. A study's Dask workers train with 1 thread each. "
             f"train()'s seconds_per_step (first {min(TRAIN_ROUNDS, steps0['rounds'])} rounds) also counts its "
             "end-of-epoch encoder health check (an eval forward, through Brevitas for QAT).",
             *(step_time_line(steps) for steps in record["step_time"])]
    if "previous_step_time" in record:
        prev = record["previous_step_time"]
        how = "" if "steps_per_round" in prev["step_time"][0] else \
            ", measured then as train()'s seconds_per_step (health check included), Brevitas' forward also via train()"
        lines += ["", f"Before (the record this one replaced: `{prev['command']}`, commit {prev['git_commit'][:10]}{how}):",
                  *(step_time_line(steps) for steps in prev["step_time"])]
    lines += ["", "| dataset | scheme | bits/inference | epochs | test accuracy |", "|---|---|---|---|---|"]
    for r in record["accuracy"]:
        lines.append(f"| {r['dataset']} | {r['scheme']} | {r['bits_per_inference']} | {r['epochs']} | "
                     f"{r['test_accuracy']:.4f} ({r['test_samples']} images) |")
    lines += ["", "Paper anchor: 256 bits per inference lose ~2.5 points against raw pixels (6272 bits)."]
    lines += anchor_lines(record["accuracy"])
    return lines


if __name__ == "__main__":
    main()
