"""A study's figures from its table (harness.study.study_table): the paper's Figure 3 (accuracy
against code size, one line per scheme and q, centralized as a reference), accuracy against bits
per inference with the Pareto front, and node energy against accuracy. Points are labelled by
their configuration; device points' accuracy comes from the codes the devices produced, host
points' from the host, and each figure says which."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.measure.pareto import pareto_front
from harness.report.figures import Figure, _plt, _save


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table.status == "complete") & table.accuracy.notna()]


def accuracy_vs_code_size(table: pd.DataFrame, out: Path) -> Figure | None:
    """Figure 3: accuracy against C (log x), one line per scheme and q; centralized a line across."""
    done = _complete(table)
    split = done[done.scheme != "centralized"]
    if split.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for (scheme, bits), group in sorted(split.groupby(["scheme", "code_bits"]), key=lambda g: (g[0][0], str(g[0][1]))):
        group = group.sort_values("code_values")
        on_device = group.device_samples.notna().any() if "device_samples" in group else False
        ax.plot(group.code_values, group.accuracy, marker="o" if on_device else "s",
                linestyle="-" if on_device else "--", label=f"{scheme} q={bits}" + ("" if on_device else " (host)"))
    for _, row in done[done.scheme == "centralized"].iterrows():
        ax.axhline(row.accuracy, color="grey", linestyle=":", label=f"centralized, raw pixels (host, {row.bits_per_inference:.0f} bits)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("code size C (values per inference, all nodes)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / "study_accuracy_vs_code_size.png", "Accuracy against code size (the paper's Figure 3)",
                 "Solid lines: accuracy from the codes the devices produced (on each point's device samples); dashed: "
                 "float codes, evaluated on the host (no device runs float codes); dotted: centralized on raw pixels "
                 "(host). Every device point is also checked against the golden model (see the table).")


def accuracy_vs_bits(table: pd.DataFrame, out: Path) -> Figure | None:
    """Accuracy against bits per inference, nominal and entropy-coded, with the Pareto front."""
    done = _complete(table).reset_index(drop=True)
    if done.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for scheme, group in done.groupby("scheme"):
        ax.scatter(group.bits_per_inference, group.accuracy, label=f"{scheme} (nominal q x C bits)", s=22)
    if "coded_bits_per_inference" in done:
        coded = done[done.coded_bits_per_inference.notna()]
        ax.scatter(coded.coded_bits_per_inference, coded.accuracy, marker="x", color="black", s=18,
                   label="entropy-coded bits (coder fitted on training codes)")
    front = pareto_front(list(done.bits_per_inference), list(done.accuracy))
    ax.plot(done.bits_per_inference[front], done.accuracy[front], color="red", drawstyle="steps-post",
            label="Pareto front (nominal bits)")
    for i in front:
        ax.annotate(done.label[i], (done.bits_per_inference[i], done.accuracy[i]), fontsize=5)
    ax.set_xscale("log")
    ax.set_xlabel("bits per inference, all nodes")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    return _save(fig, out / "study_accuracy_vs_bits.png", "Accuracy against bits per inference",
                 "Each point is one configuration (its label on the front); accuracy from device codes where the "
                 "point ran on devices, else from the host. The front marks the configurations no other beats on "
                 "both bits and accuracy.")


def energy_vs_accuracy(table: pd.DataFrame, out: Path) -> Figure | None:
    """Node energy per inference (compute + radio, all nodes) against accuracy, device points."""
    done = _complete(table)
    if "compute_energy_uj" not in done:
        return None
    done = done[done.compute_energy_uj.notna() & done.radio_energy_uj.notna()]
    if done.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for scheme, group in done.groupby("scheme"):
        ax.scatter((group.compute_energy_uj + group.radio_energy_uj) / 1000, group.accuracy, label=scheme, s=22)
    ax.set_xscale("log")
    ax.set_xlabel("node energy per inference, all nodes, compute + radio (mJ, modelled)")
    ax.set_ylabel("test accuracy (device codes)")
    ax.legend(fontsize=7)
    basis = "; ".join(sorted(set(done.energy_basis.dropna()))) if "energy_basis" in done else ""
    return _save(fig, out / "study_energy_vs_accuracy.png", "Node energy against accuracy",
                 "Energy per inference over all nodes: compute (meter where a node had one, else the profile's "
                 "active power x compute time; emulated boards: instruction count at 1 instruction per cycle, a model) "
                 f"plus radio (airtime x TX power from the radio profile). Basis: {basis}.")
