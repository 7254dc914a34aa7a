#!/usr/bin/env python
"""Linux-target benchmark: QCDQ vs float encoder latency in onnxruntime, batched inference over
SSH vs local onnxruntime, and the emulated arm64 Raspberry Pi stand-in.

1. Per-inference latency of a node encoder (paper shape: conv 32@5x5, maxpool 2, FC 16), QCDQ
   (q = 4) and float, in onnxruntime on this host: one sample per session.run, one intra-op
   thread (what the device runner does), time.perf_counter_ns around each run.
2. Throughput of the QCDQ encoder through the device runner over SSH to `pi-loopback` (a real
   sshd on 127.0.0.1, so the same CPU) at several batch sizes, vs the runner's own inference loop
   called in process (the same code without SSH): the ratio is what the link and protocol cost.
3. The same encoder on `rpi4-qemu` (arm64 Debian under qemu-user): these figures are emulation
   times, labelled as such, never a Raspberry Pi's speed. Skipped (and said so) without root or
   without the root filesystem (scripts/build-arm64-rootfs.sh).

Models: experiments/smoke.yaml (paper shape, trained in seconds; latency depends on the shape,
not on the training) at q = 4 and as float, from the model cache. Writes
results/reference/linux-benchmark.json and .md. Reproduce with:
    .venv/bin/python scripts/bench_linux.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python scripts/bench_linux.py"
LOCAL_BASIS = "measured on this host (onnxruntime, 1 intra-op thread, time.perf_counter_ns per session.run)"
SSH_BATCHES = (1, 32, 256)


def percentiles(ns: np.ndarray) -> dict:
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean()), "n": int(us.size)}


def local_latency(onnx_path: Path, views: np.ndarray, repeats: int) -> np.ndarray:
    """ns per single-sample inference, ``repeats`` passes over ``views`` after a warm-up pass."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = (views.astype(np.float32) / np.float32(256.0))[:, None]
    timings = []
    for rep in range(repeats + 1):
        for i in range(len(x)):
            sample = x[i:i + 1]
            started = time.perf_counter_ns()
            session.run(None, {name: sample})
            if rep:
                timings.append(time.perf_counter_ns() - started)
    return np.asarray(timings, dtype=np.int64)


def export(bits):
    from quant_models.experiment import load_experiment
    from quant_models.pipeline import get_exported

    exp = load_experiment(ROOT / "experiments/smoke.yaml")
    exp = exp.model_copy(update={"code": exp.code.model_copy(update={"bits": bits})})
    return get_exported(exp)


def runner_throughput_local(onnx_path: Path, code_exponent: int, views: np.ndarray, repeats: int) -> dict:
    """Views per second through the runner's own inference loop, in process (no SSH): median,
    min and max over ``repeats`` passes."""
    from devices.runner.hil_runner import Model

    model = Model(str(onnx_path), "node", code_exponent, threads=1)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.infer(views)
        rates.append(len(views) / (time.perf_counter() - started))
    return {"median": float(np.median(rates)), "min": float(min(rates)), "max": float(max(rates))}


def over_ssh(device: str, onnx_path: Path, code_exponent: int, views: np.ndarray, batches, repeats: int) -> dict:
    from harness.targets.linux.deploy import deploy_linux_target, linux_device
    from harness.config.profiles import get_profile

    profile = get_profile(device)
    record: dict = {"device": device, "batches": []}
    with linux_device(profile) as access:
        for batch in batches:
            with deploy_linux_target(profile, onnx_path, "node", code_exponent=code_exponent, batch_size=batch,
                                     access=access) as target:
                target.encode(views[:min(len(views), batch)])  # warm-up: first round trip
                rates, device_ns, rtts = [], [], []
                for _ in range(repeats):
                    started = time.perf_counter()
                    result = target.encode(views)
                    rates.append(len(views) / (time.perf_counter() - started))
                    device_ns.append(result.device_ns)
                    rtts.append(result.round_trip_s)
                info = target.info()
            rtt = np.concatenate(rtts)
            record["batches"].append({
                "batch_size": batch, "views": int(len(views)), "repeats": repeats,
                "views_per_second": float(np.median(rates)),
                "views_per_second_range": [float(min(rates)), float(max(rates))],
                "device_latency": percentiles(np.concatenate(device_ns)),
                "round_trip_ms_per_batch": {"p50": float(np.percentile(rtt, 50) * 1000),
                                            "p90": float(np.percentile(rtt, 90) * 1000)}})
        record["device_info"] = {"cpu_model": info.cpu_model, "machine": info.machine, "governor": info.governor,
                                 "peak_rss_bytes": info.peak_rss_bytes, "python": info.python,
                                 "onnxruntime": info.onnxruntime, "timing_basis": info.timing_basis,
                                 "emulated": info.emulated}
    return record


def qemu_available() -> str | None:
    """None if rpi4-qemu can run here, else why not."""
    from harness.emulators.arm64 import rootfs_dir, rootfs_ready

    if os.geteuid() != 0:
        return "needs root"
    if not rootfs_ready():
        return f"no root filesystem at {rootfs_dir()} (run scripts/build-arm64-rootfs.sh)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=2000, help="test views per pass (host and pi-loopback)")
    parser.add_argument("--qemu-views", type=int, default=200, help="test views per pass on rpi4-qemu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hilbench-bench-linux-") as tmp:
        qcdq, flt = export(4), export("float")
        trained = qcdq.trained
        node = 0
        views = trained.cached.partition.views(trained.data.test_x[:args.views])[node]
        exponent = qcdq.manifest["nodes"][node]["code_exponent"]
        q_onnx, f_onnx = qcdq.directory / f"node{node}.onnx", flt.directory / f"node{node}.onnx"

        q_ns, f_ns = local_latency(q_onnx, views, args.repeats), local_latency(f_onnx, views, args.repeats)
        q_stats, f_stats = percentiles(q_ns), percentiles(f_ns)
        local_rate = runner_throughput_local(q_onnx, exponent, views, args.repeats)
        loopback = over_ssh("pi-loopback", q_onnx, exponent, views, SSH_BATCHES, args.repeats)
        for b in loopback["batches"]:
            b["over_local"] = b["views_per_second"] / local_rate["median"]
        why_not = qemu_available()
        qemu = None
        if why_not is None:
            qemu_views = views[:args.qemu_views]
            qemu = over_ssh("rpi4-qemu", q_onnx, exponent, qemu_views, (50,), args.repeats)
            qemu["local_host_views_per_second"] = runner_throughput_local(q_onnx, exponent, qemu_views, args.repeats)
            qemu["emulated_over_host_p50"] = qemu["batches"][0]["device_latency"]["p50_us"] / q_stats["p50_us"]

    record = {
        "command": COMMAND,
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
                 "python": platform.python_version()},
        "model": "experiments/smoke.yaml node 0 (14x14 view, conv 32@5x5, maxpool 2, FC 16), q = 4 QCDQ vs float",
        "encoder_latency_local": {"basis": LOCAL_BASIS, "qcdq": q_stats, "float": f_stats,
                                  "qcdq_over_float_p50": q_stats["p50_us"] / f_stats["p50_us"]},
        "ssh_vs_local": {"basis": "pi-loopback: a real sshd on 127.0.0.1, so the device is this host's CPU; "
                                  "throughput = views / host wall time of encode() (all round trips included)",
                         "local_runner_views_per_second": local_rate, **loopback},
        "rpi4_qemu": qemu if qemu is not None else {"skipped": why_not},
    }
    out = ROOT / "results" / "reference"
    out.mkdir(parents=True, exist_ok=True)
    (out / "linux-benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "linux-benchmark.md").write_text(markdown(record))
    print(markdown(record))


def markdown(r: dict) -> str:
    lat = r["encoder_latency_local"]
    local = r["ssh_vs_local"]["local_runner_views_per_second"]
    lines = ["# Linux targets benchmark", "",
             f"Reproduce: `{r['command']}` (commit {r['git_commit'][:10]}); host {r['host']['machine']}, "
             f"{r['host']['cpus']} CPUs, onnxruntime {r['host']['onnxruntime']}.",
             f"Model: {r['model']}.", "",
             "## QCDQ vs float encoder, per inference, onnxruntime on this host", "",
             f"Basis: {lat['basis']}.", "",
             "| encoder | p50 | p90 | p99 | mean | inferences |", "|---|---|---|---|---|---|"]
    for name in ("qcdq", "float"):
        s = lat[name]
        lines.append(f"| {name} | {s['p50_us']:.1f} us | {s['p90_us']:.1f} us | {s['p99_us']:.1f} us | "
                     f"{s['mean_us']:.1f} us | {s['n']} |")
    lines += ["", f"QCDQ / float (p50): **{lat['qcdq_over_float_p50']:.2f}x**.", "",
              "## Batched inference over SSH (pi-loopback) vs local onnxruntime", "",
              f"Basis: {r['ssh_vs_local']['basis']}. Local: the runner's inference loop in process, "
              f"{local['median']:.0f} views/s (median of {r['ssh_vs_local']['batches'][0]['repeats']} passes; "
              f"range {local['min']:.0f}-{local['max']:.0f}).", "",
              "| batch | views/s over SSH (range) | SSH / local | device p50 per inference | round trip p50 per batch |",
              "|---|---|---|---|---|"]
    for b in r["ssh_vs_local"]["batches"]:
        lo, hi = b["views_per_second_range"]
        lines.append(f"| {b['batch_size']} | {b['views_per_second']:.0f} ({lo:.0f}-{hi:.0f}) | {b['over_local']:.2f}x | "
                     f"{b['device_latency']['p50_us']:.1f} us | {b['round_trip_ms_per_batch']['p50']:.2f} ms |")
    lines += ["", "## rpi4-qemu: emulated arm64 (qemu-user), not a Raspberry Pi's speed", ""]
    q = r["rpi4_qemu"]
    if "skipped" in q:
        lines.append(f"Skipped: {q['skipped']}.")
    else:
        b = q["batches"][0]
        info = q["device_info"]
        lines += [f"Basis: {info['timing_basis']}. Device: {info['cpu_model']} ({info['machine']}, python "
                  f"{info['python']}, onnxruntime {info['onnxruntime']}); runner peak RSS "
                  f"{info['peak_rss_bytes'] / 2**20:.0f} MiB under qemu-user.", "",
                  "| batch | views/s over SSH (emulated) | device p50 / p90 per inference (emulated) | "
                  "emulated / host p50 |", "|---|---|---|---|",
                  f"| {b['batch_size']} | {b['views_per_second']:.0f} | {b['device_latency']['p50_us']:.0f} / "
                  f"{b['device_latency']['p90_us']:.0f} us | {q['emulated_over_host_p50']:.0f}x |", "",
                  "These are emulation times: they show the aarch64 path runs and gives the same codes, "
                  "not how fast a Raspberry Pi 4 is."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
