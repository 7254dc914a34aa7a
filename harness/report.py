"""Figures and a self-contained HTML report from runs in the results store.

Every figure says what its numbers are: measured on a device, counted on an emulator, or
computed on the host. Figures are PNG files (matplotlib, Agg backend) also embedded in
``report.html`` as base64 so the HTML stands alone.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HilbenchError
from harness.results import ResultsStore


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
    names, x = [], 0
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


def _run_table(summaries: list[dict]) -> str:
    head = ("run", "experiment", "samples", "accuracy", "golden accuracy", "bit-exact", "bits/inf", "payload B/inf",
            "raw bits/inf", "link B/inf", "emulated", "gateway")
    rows = [(s["run_id"], s["experiment"], s["samples"], f"{s['accuracy']:.4f}", f"{s['golden_accuracy']:.4f}",
             f"{s['bitexact_rate']:.4f}", s["bits_per_inference"], s["payload_bytes_per_inference"],
             s["raw_bits_per_inference"], f"{s['wire_bytes_per_inference']:.0f}", "yes" if s["emulated"] else "no",
             s["gateway"]) for s in summaries]
    return _html_table(head, rows)


def _node_table(summaries: list[dict]) -> str:
    head = ("run", "node", "device", "latency p50", "p90", "p99", "unit", "basis", "host RTT p50 (ms)",
            "MACs", "flash B", "RAM B", "retries")
    rows = []
    for s in summaries:
        for n in s["nodes"]:
            lat = n["latency"]
            rows.append((s["run_id"], n["node"], n["device"], f"{lat['p50']:,.1f}", f"{lat['p90']:,.1f}",
                         f"{lat['p99']:,.1f}", lat["unit"], lat["basis"], f"{n['host_round_trip_ms']['p50']:.2f}",
                         n["macs_per_inference"], n["flash_bytes"], n["ram_bytes"], n["retries"]))
    return _html_table(head, rows)


def _html_table(head, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def write_report(store: ResultsStore, run_ids: list[str] | None, out: Path) -> Path:
    """Figures and ``report.html`` for the given runs (default: every complete run)."""
    runs = store.runs()
    complete = runs[runs.status == "complete"]
    ids = run_ids or list(complete.run_id)
    if not ids:
        raise HilbenchError(f"{store.path}: no complete runs to report (run `hilbench run EXPERIMENT` first)")
    summaries = []
    for run_id in ids:
        run = store.run(run_id)
        if run["summary"] is None:
            raise HilbenchError(f"run {run_id} is {run['status']}: no summary to report (run it again to resume)")
        summaries.append(run["summary"])
    out.mkdir(parents=True, exist_ok=True)
    figures = [accuracy_vs_bits(summaries, out), latency_distributions(store, summaries, out),
               bits_and_bytes(summaries, out), energy_per_inference(summaries, out)]
    figures = [f for f in figures if f is not None]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hilbench report</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}figure{margin:2em 0}figcaption{font-size:13px;color:#333}",
             "</style></head><body><h1>hilbench report</h1>",
             f"<p>Database: {html.escape(str(store.path))}. Runs: {len(summaries)}.</p>",
             "<h2>Runs</h2>", _run_table(summaries), "<h2>Nodes</h2>", _node_table(summaries)]
    for fig in figures:
        data = base64.b64encode(fig.path.read_bytes()).decode()
        parts.append(f"<figure><h2>{html.escape(fig.title)}</h2><img src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    parts.append("<h2>Run summaries (JSON)</h2><pre>" + html.escape(json.dumps(summaries, indent=1)) + "</pre>")
    parts.append("</body></html>")
    report = out / "report.html"
    report.write_text("\n".join(parts))
    return report
