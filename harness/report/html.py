"""Self-contained HTML reports, figures embedded as base64 so the HTML stands alone: one from runs
in the results store (run and node tables, :mod:`harness.report.figures`, the run summaries as
JSON), one from a study's table (its points, :mod:`harness.report.study_figures`)."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from harness.core.errors import HilbenchError
from harness.report.figures import (Figure, accuracy_vs_bits, bits_and_bytes, energy_per_inference,
                                    latency_distributions)
from harness.report.study_figures import accuracy_vs_code_size, energy_vs_accuracy
from harness.report.study_figures import accuracy_vs_bits as study_accuracy_vs_bits
from harness.store.results import ResultsStore


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


def _uj(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _energy_table(summaries: list[dict]) -> str:
    """Compute energy per inference and node: the figure the totals use (a meter's where one
    measured the node, labelled measured or simulated meter) beside the model's, with the
    meter's windows, median and spread, idle power and basis."""
    head = ("run", "node", "device", "compute basis", "windows / inferences", "gross µJ (mean)",
            "gross µJ median [p10, p90]", "net µJ (mean)", "idle mW", "model gross µJ", "model net µJ",
            "meter / model", "meter basis")
    rows = []
    for s in summaries:
        per_node = (s.get("energy") or {}).get("per_node") or []
        for n, e in zip(s["nodes"], per_node):
            m = n.get("meter")
            gross = (m or {}).get("gross_uj") or {}
            spread = (f"{gross['median']:,.2f} [{gross['p10']:,.2f}, {gross['p90']:,.2f}]" if "median" in gross else "")
            ratio = e.get("meter_over_model")
            basis = m["basis"] if m and isinstance(m["basis"], str) else "; ".join(m["basis"]) if m else ""
            rows.append((s["run_id"], n["node"], n["device"], e["basis"]["compute"] or "missing",
                         f"{m['windows']} / {m['inferences']}" if m else "", _uj(e.get("compute_uj")), spread,
                         _uj(e.get("compute_net_uj")), f"{m['idle_mw']:.3f}" if m and "idle_mw" in m else "",
                         _uj(e.get("compute_model_uj")), _uj(e.get("compute_model_net_uj")),
                         "" if ratio is None else f"{ratio:.3f}", basis))
    if not rows:
        return "<p>No run has energy figures.</p>"
    return _html_table(head, rows)


def _layer_table(summaries: list[dict]) -> str:
    """The per-layer profile of every node that has one: each stage's MACs and device count."""
    head = ("run", "node", "device", "stage", "MACs", "count", "unit", "per MAC", "share")
    rows = []
    for s in summaries:
        for n in s["nodes"]:
            layers = n.get("layers") or []
            total = sum(layer["count"] for layer in layers) or 1.0
            for layer in layers:
                per_mac = layer["per_mac"]
                rows.append((s["run_id"], n["node"], n["device"], layer["stage"], layer["macs"],
                             f"{layer['count']:,.0f}", layer["unit"], "" if per_mac is None else f"{per_mac:.3f}",
                             f"{layer['count'] / total:.1%}"))
    return _html_table(head, rows) if rows else "<p>No node reported a per-layer profile.</p>"


def _html_table(head, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, intro: str, sections: list[str], figures: list[Figure]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}figure{margin:2em 0}figcaption{font-size:13px;color:#333}",
             f"</style></head><body><h1>{html.escape(title)}</h1>", intro, *sections]
    for fig in figures:
        data = base64.b64encode(fig.path.read_bytes()).decode()
        parts.append(f"<figure><h2>{html.escape(fig.title)}</h2><img src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_study_report(table: pd.DataFrame, name: str, out: Path) -> Path:
    """Figures and ``report.html`` for a study's table (``harness.study.study_table``)."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [accuracy_vs_code_size(table, out), study_accuracy_vs_bits(table, out), energy_vs_accuracy(table, out)]
    shown = [c for c in STUDY_COLUMNS if c in table.columns]
    rows = [["" if missing_value(v) else f"{v:.4f}" if isinstance(v, float) else v for v in r]
            for r in table[shown].itertuples(index=False)]
    intro = (f"<p>{len(table)} points, {int((table.status == 'complete').sum())} complete, "
             f"{int((table.status == 'failed').sum())} failed.</p>")
    page = _page(f"hilbench study {name}", intro, ["<h2>Points</h2>", _html_table(shown, rows)],
                 [f for f in drawn if f is not None])
    report = out / "report.html"
    report.write_text(page)
    return report


STUDY_COLUMNS = ("label", "status", "accuracy", "golden_accuracy", "golden_accuracy_full", "bitexact_rate",
                 "bits_per_inference", "coded_bits_per_inference", "node_instructions_per_inference",
                 "node_cycles_per_inference", "flash_bytes", "ram_bytes", "compute_energy_uj", "radio_energy_uj",
                 "basis", "reason")


def missing_value(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    drawn = [accuracy_vs_bits(summaries, out), latency_distributions(store, summaries, out),
             bits_and_bytes(summaries, out), energy_per_inference(summaries, out)]
    page = _page("hilbench report", f"<p>Database: {html.escape(str(store.path))}. Runs: {len(summaries)}.</p>",
                 ["<h2>Runs</h2>", _run_table(summaries), "<h2>Nodes</h2>", _node_table(summaries),
                  "<h2>Compute energy per inference: meter beside model</h2><p>Where a meter measured a node, "
                  "its figure (basis 'meter', or 'simulated meter' for a simulator fed a synthesised trace) is "
                  "the one the totals, savings and break-even use; the model's (active power x compute time) "
                  "stays beside it.</p>", _energy_table(summaries),
                  "<h2>Per-layer profile (one inference per node deployment; emulated counts are "
                  "instructions, not cycles)</h2>", _layer_table(summaries),
                  "<h2>Run summaries (JSON)</h2><pre>" + html.escape(json.dumps(summaries, indent=1)) + "</pre>"],
                 [f for f in drawn if f is not None])
    report = out / "report.html"
    report.write_text(page)
    return report
