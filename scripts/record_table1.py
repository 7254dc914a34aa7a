#!/usr/bin/env python
"""The paper's Table I analogue from a finished study: results/reference/table1-wind.{csv,md}.

Reads the study table of experiments/studies/table1-wind.yaml from a results database, writes
every point as CSV and a Markdown page with one row per configuration (mean and standard
deviation of accuracy over the seeds; quantized rows from device codes), the paper's numbers
beside ours, and what our data does and does not reproduce. Reproduce (after
`hilbench study experiments/studies/table1-wind.yaml --db DB`):
    .venv/bin/python scripts/record_table1.py --db DB [--wall-s SECONDS] [--note TEXT]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from harness.config.studies import load_study
from harness.store.results import ResultsStore
from harness.study import study_table

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "experiments/studies/table1-wind.yaml"
OUT = ROOT / "results/reference"
# Table I of the paper (4 lake sensors, LSTM node encoders, 20 classes, mean of 10 trials).
PAPER = {"centralized": 0.867, "distributed float": 0.857, "q = 2": 0.840, "q = 3": 0.845, "q = 4": 0.848}
ORDER = list(PAPER)


def configuration(row: pd.Series) -> str:
    if row["scheme"] == "centralized":
        return "centralized"
    bits = str(row["code_bits"])
    return "distributed float" if bits == "float" else f"q = {bits}"


def point_accuracy(row: pd.Series) -> float:
    """Device accuracy where the point ran on devices (all test windows), else the host's."""
    device = row.get("accuracy")
    return float(device) if pd.notna(device) else float(row["golden_accuracy_full"])


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: seeds, accuracy mean and sample standard deviation, bits."""
    done = table[table.status == "complete"].copy()
    done["configuration"] = done.apply(configuration, axis=1)
    done["acc"] = done.apply(point_accuracy, axis=1)
    rows = []
    for name in ORDER:
        group = done[done.configuration == name]
        if group.empty:
            continue
        device = group[group["device_samples"].notna()] if "device_samples" in group else group.iloc[0:0]
        rows.append({
            "configuration": name, "seeds": len(group),
            "accuracy_mean": group.acc.mean(), "accuracy_std": group.acc.std(ddof=1) if len(group) > 1 else float("nan"),
            "accuracy_min": group.acc.min(), "accuracy_max": group.acc.max(), "paper": PAPER[name],
            "bits_per_inference": int(group["bits_per_inference"].iloc[0]),
            "from_device_codes": len(device),
            "bitexact": bool((device["bitexact_rate"] == 1.0).all()) if len(device) else None,
            "device_equals_golden": bool((device["accuracy"] == device["golden_accuracy"]).all()) if len(device) else None,
            "node_instructions_per_inference": device["node_instructions_per_inference"].mean() if len(device) else None,
            "flash_bytes": device["flash_bytes"].max() if len(device) else None,
            "ram_bytes": device["ram_bytes"].max() if len(device) else None,
        })
    return pd.DataFrame(rows)


def _pct(v: float) -> str:
    return "n/a" if pd.isna(v) else f"{v:.3f}"


def markdown_table(summary: pd.DataFrame) -> list[str]:
    lines = ["| configuration | bits per inference | seeds | accuracy, mean ± std (min-max) | paper (10 trials) "
             "| from device codes | bit-exact |", "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        exact = "n/a (host)" if r.from_device_codes == 0 else ("yes" if r.bitexact and r.device_equals_golden else "NO")
        lines.append(f"| {r.configuration} | {r.bits_per_inference} | {r.seeds} | {_pct(r.accuracy_mean)} ± "
                     f"{_pct(r.accuracy_std)} ({_pct(r.accuracy_min)}-{_pct(r.accuracy_max)}) | {r.paper:.3f} | "
                     f"{r.from_device_codes} of {r.seeds} | {exact} |")
    return lines


def findings(summary: pd.DataFrame, classes: int) -> list[str]:
    by = {r.configuration: r for _, r in summary.iterrows()}
    lines = []
    if "centralized" in by and "distributed float" in by:
        gap = by["centralized"].accuracy_mean - by["distributed float"].accuracy_mean
        lines.append(f"- Centralized minus distributed float: {gap * 100:+.1f} points (paper: +1.0).")
    for q in ("q = 2", "q = 3", "q = 4"):
        if q in by and "distributed float" in by:
            gap = by["distributed float"].accuracy_mean - by[q].accuracy_mean
            spread = by[q].accuracy_std
            lines.append(f"- Distributed float minus {q}: {gap * 100:+.1f} points (seed std of {q}: "
                         f"{spread * 100:.1f} points; paper: {(PAPER['distributed float'] - PAPER[q]) * 100:+.1f}).")
    for name, r in by.items():
        if r.from_device_codes and pd.notna(r.node_instructions_per_inference):
            lines.append(f"- {name} on the emulated boards: {r.node_instructions_per_inference:,.0f} instructions per "
                         f"node inference (QEMU -icount, not cycles), flash {int(r.flash_bytes):,} B, RAM "
                         f"{int(r.ram_bytes):,} B per node.")
    lines.append(f"- Chance level is {1 / classes:.3f} ({classes} quantile classes, so the classes are equally "
                 "frequent in the training split).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--wall-s", type=float, default=None, help="the study's wall time, to record")
    parser.add_argument("--note", default="", help="sentences on the machine, its load, what was seen")
    args = parser.parse_args()
    study = load_study(STUDY)
    table = study_table(ResultsStore(args.db), study)
    OUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT / "table1-wind.csv", index=False)
    summary = summarise(table)
    classes = study.points[0].experiment.series.classes if study.points[0].experiment.series else 20
    complete = int((table.status == "complete").sum())
    lines = ["# The paper's Table I on the Irish wind data, from device codes", "",
             "Reproduce: `hilbench study experiments/studies/table1-wind.yaml --db DB` then "
             f"`.venv/bin/python scripts/record_table1.py --db DB`. {len(table)} points, {complete} complete; "
             "every point is in table1-wind.csv.",
             "Setup: irish-wind, nodes VAL | SHA | DUB | MAL (one station each), windows of 50 days, task: "
             f"tomorrow's mean wind at Valentia in {classes} training-quantile classes; chronological split "
             "(train 1961-1975, test 1975-1978, 1,265 test windows). Node encoder LSTM 40 -> LSTM 9 -> q-bit "
             "codes (9 values per node); base station FC 20 -> softmax. Centralized: the 4 raw windows "
             "(int8) into one LSTM 40 -> 9 at the base station. Quantized rows: the accuracy of the head on "
             "the codes the emulated STM32F405 boards produced for every test window; float and centralized "
             "rows are host-only.",
             f"Wall time: {args.wall_s / 60:.0f} min. {args.note}" if args.wall_s else args.note, "",
             *markdown_table(summary), "",
             "## What our data reproduces and what it does not", "", *findings(summary, classes), ""]
    (OUT / "table1-wind.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
