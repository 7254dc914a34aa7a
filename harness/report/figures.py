"""The report's figures from run summaries, as PNG files (matplotlib, Agg backend).

Every figure says what its numbers are: measured on a device, counted on an emulator, or
computed on the host.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.store.results import ResultsStore


@dataclass(frozen=True)
class Figure:
    path: Path
    title: str
    caption: str


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, title: str, caption: str) -> Figure:
    """Write ``fig`` as a PNG, free it, and describe it for the report."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return Figure(path, title, caption)


def accuracy_vs_bits(summaries: list[dict], out: Path) -> Figure:
    """The paper's Fig. 3: accuracy against bits per inference, one line per scheme and q."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups: dict[str, list[tuple[int, float]]] = {}
    for s in summaries:
        groups.setdefault(f"{s['scheme']} q={s['code_bits']}", []).append((s["bits_per_inference"], s["accuracy"]))
    for label, points in sorted(groups.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    coded = [(s["coded_bits_per_inference"], s["accuracy"]) for s in summaries if s.get("coded_bits_per_inference")]
    if coded:
        ax.scatter([c[0] for c in coded], [c[1] for c in coded], marker="x", color="black",
                   label="same runs, entropy-coded bits (coder fitted on training codes)")
    raw = summaries[0]["raw_bits_per_inference"]
    ax.axvline(raw, color="grey", linestyle=":", label=f"raw pixels ({raw} bits)")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(sorted({s["bits_per_inference"] for s in summaries} | {raw}
                         | {round(c[0]) for c in coded}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per inference (all nodes)")
    ax.set_ylabel("end-to-end accuracy (device codes)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "accuracy_vs_bits.png", "Accuracy vs bits per inference",
                  "Accuracy from the codes the devices produced, through the head; bits are nominal "
                  "(q x code length, all nodes). Measured end to end on the run's devices (emulated or real, "
                  "see the run table).")


def latency_distributions(store: ResultsStore, summaries: list[dict], out: Path) -> Figure:
    plt = _plt()
    series, labels, bases = [], [], set()
    for s in summaries:
        inf = store.inferences(s["run_id"])
        for n in s["nodes"]:
            rows = inf[inf.node == n["node"]]
            unit = n["latency"]["unit"]
            scale, shown = (1e-6, "M instructions") if unit == "instructions" else (1e-3, "ms")
            series.append(rows["latency"].to_numpy() * scale)
            labels.append(f"{s['run_id'][-6:]} n{n['node']}\n{n['device']}\n({shown})")
            bases.add(n["latency"]["basis"])
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(series)), 4.2))
    ax.boxplot(series, whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(series) + 1), labels, fontsize=7)
    ax.set_ylabel("per-inference device latency (unit under each box)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out / "latency.png", "Per-inference latency per node and device",
                  "Boxes: quartiles; whiskers: p1-p99. Basis: " + "; ".join(sorted(bases)) +
                  ". Emulator instruction counts are not a board's cycles or time.")


def bits_and_bytes(summaries: list[dict], out: Path) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = [s["run_id"][-6:] + "\n" + s["experiment"] for s in summaries]
    x = range(len(summaries))
    width = 0.27
    ax.bar([i - width for i in x], [s["raw_bits_per_inference"] / 8 for s in summaries], width, label="raw view bytes")
    ax.bar(list(x), [s["payload_bytes_per_inference"] for s in summaries], width, label="coded payload bytes")
    ax.bar([i + width for i in x], [s["wire_bytes_per_inference"] for s in summaries], width,
           label="host-device link bytes (framing, both directions)")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("bytes per inference (all nodes)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    return _save(fig, out / "bytes.png", "Bits and bytes per inference: raw vs coded",
                  "Raw and coded bytes are what a node would radio (computed from the model); link bytes are "
                  "counted on the host-device test link (not a radio).")


def energy_per_inference(summaries: list[dict], out: Path) -> Figure | None:
    """Energy per inference, compute vs radio, encoded vs sending the raw views (all nodes)."""
    rows = [s for s in summaries if s.get("energy")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names: list[str] = []
    x = 0.0
    for s in rows:
        e = s["energy"]
        compute = (e["compute_uj"] or 0) / 1000
        ax.bar(x, compute, color="tab:blue", label="compute" if x == 0 else None)
        ax.bar(x, e["radio_uj"] / 1000, bottom=compute, color="tab:orange", label="radio" if x == 0 else None)
        ax.bar(x + 1, e["raw_baseline_uj"] / 1000, color="tab:grey", label="raw view over the radio" if x == 0 else None)
        names += [f"{s['run_id'][-6:]}\nencoded", f"{s['run_id'][-6:]}\nraw"]
        x += 2.5
    ax.set_xticks([i * 2.5 + d for i in range(len(rows)) for d in (0, 1)], names, fontsize=8)
    ax.set_ylabel("energy per inference, all nodes (mJ)")
    ax.legend(fontsize=8)
    bases = sorted({json.dumps(s["energy"]["basis"]) for s in rows})
    radios = sorted({s["radio"]["name"] for s in rows})
    missing = sorted({m for s in rows for m in s["energy"].get("missing", [])})
    return _save(fig, out / "energy.png", "Energy per inference: compute and radio, encoded vs raw",
                  f"Basis: {'; '.join(bases)}. Radio: {', '.join(radios)} (airtime x TX power from the radio "
                  "profile's datasheet constants). Compute: meter where a node had one, else active power x compute "
                  "time (emulated boards: instruction count at 1 instruction per cycle, a model, not a measurement)."
                  + (f" Missing: {'; '.join(missing)}." if missing else ""))
