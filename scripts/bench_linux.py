#!/usr/bin/env python
"""Linux-target benchmark: QCDQ vs float encoder latency in onnxruntime, batched inference over
SSH vs local onnxruntime, and the emulated arm64 Raspberry Pi stand-in.

1. Per-inference latency of a node encoder (paper shape: conv 32@5x5, maxpool 2, FC 16), q = 4
   and float, in onnxruntime on this host: one sample per session.run, one intra-op thread (what
   the device runner does), time.perf_counter_ns around each run. The q = 4 figure is the
   configuration the runner's self-check chooses (exact on every CPU); every configuration the
   runner knows, and onnxruntime's default fused int8 one, is also timed and checked against the
   golden codes, so the choice shows its cost. Runs are interleaved (A B A B ...) so machine
   noise hits all configurations alike.
2. Throughput of the q = 4 encoder through the device runner over SSH to `pi-loopback` (a real
   sshd on 127.0.0.1, so the same CPU) at several batch sizes, three batches in flight, vs the
   runner's own inference loop called in process (the same code without SSH), both over the same
   stream of views: the ratio is what the link and protocol cost.
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
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python scripts/bench_linux.py"
LOCAL_BASIS = "measured on this host (onnxruntime, 1 intra-op thread, time.perf_counter_ns per session.run)"
SSH_BATCHES = (1, 32, 256)
MAX_BATCHES_PER_PASS = 200  # a pass streams at most this many batches (batch 1: 200 round trips)


def percentiles(ns: np.ndarray) -> dict:
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean()), "n": int(us.size)}


def interleaved_latency(sessions: dict, views: np.ndarray, repeats: int) -> dict[str, np.ndarray]:
    """ns per single-sample inference of each session, ``repeats`` passes over ``views`` after a
    warm-up pass; each view goes through every session in turn, the order rotating from view to
    view so that no session always runs first (cold) or last."""
    x = (views.astype(np.float32) / np.float32(256.0))[:, None]
    keys = list(sessions)
    names = {key: sessions[key].get_inputs()[0].name for key in keys}
    timings = {key: np.zeros((repeats, len(x)), dtype=np.int64) for key in keys}
    clock = time.perf_counter_ns
    for rep in range(-1, repeats):
        for i in range(len(x)):
            sample = x[i:i + 1]
            for k in range(len(keys)):
                key = keys[(i + k) % len(keys)]
                started = clock()
                sessions[key].run(None, {names[key]: sample})
                if rep >= 0:
                    timings[key][rep, i] = clock() - started
    return {key: t.ravel() for key, t in timings.items()}


def configurations(files, code_exponent: int, views: np.ndarray, golden_codes: np.ndarray) -> dict:
    """A runner Model per configuration (the runner's own and onnxruntime's default), each with
    the number of views whose codes differ from golden on this CPU."""
    from devices.runner.hil_runner import NODE_CONFIGURATIONS, ORT_DEFAULT_FUSED, Model

    out = {}
    for configuration in (*NODE_CONFIGURATIONS, ORT_DEFAULT_FUSED):
        model = Model(str(files.onnx), "node", code_exponent, threads=1, exact_path=str(files.exact_onnx),
                      configurations=(configuration,))
        codes, _ = model.infer(views)
        out[configuration.name] = (model, int((codes != golden_codes).any(axis=1).sum()))
    return out


def cpu_description() -> dict:
    from devices.runner.hil_runner import CPUINFO_PATH, cpu_flags, cpu_model

    return {"model": cpu_model(Path(CPUINFO_PATH).read_text()), "int8_flags": cpu_flags()}


def export(bits):
    from quant_models.experiment import load_experiment
    from quant_models.pipeline import get_exported

    exp = load_experiment(ROOT / "experiments/smoke.yaml")
    exp = exp.model_copy(update={"code": exp.code.model_copy(update={"bits": bits})})
    return get_exported(exp)


def runner_model_float(path: Path):
    """The float encoder's session, with the options the runner gives a model (one thread)."""
    import onnxruntime as ort

    from devices.runner.hil_runner import GATEWAY_CONFIGURATION, session_options

    return ort.InferenceSession(str(path), sess_options=session_options(GATEWAY_CONFIGURATION, threads=1),
                                providers=["CPUExecutionProvider"])


def runner_model(files, code_exponent: int):
    """The runner's Model as a device builds it: self-checked configuration, one thread."""
    from devices.runner.hil_runner import Model, load_check

    return Model(str(files.onnx), "node", code_exponent, threads=1, exact_path=str(files.exact_onnx),
                 check=load_check(str(files.check_vectors)))


def runner_throughput_local(files, code_exponent: int, views: np.ndarray, repeats: int) -> dict:
    """Views per second through the runner's own inference loop, in process (no SSH): median,
    min and max over ``repeats`` passes."""
    model = runner_model(files, code_exponent)
    return _spread([_local_rate(model, views) for _ in range(repeats)])


def _local_rate(model, views: np.ndarray) -> float:
    """Views per second of one pass of ``views`` through ``model.infer`` in this process."""
    started = time.perf_counter()
    model.infer(views)
    return len(views) / (time.perf_counter() - started)


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def over_ssh(device: str, files, code_exponent: int, views: np.ndarray, batches, repeats: int,
             local=None) -> dict:
    """Throughput over SSH per batch size; with ``local`` (a runner Model on this host), each SSH
    pass is paired with a pass of the same views in process (before it in even passes, after it
    in odd ones), and the pairs' ratios are kept: on a shared VM the machine's speed drifts
    between passes, so a ratio of neighbours is the trustworthy figure."""
    from harness.targets.linux.deploy import deploy_linux_target, linux_device
    from harness.config.profiles import get_profile

    profile = get_profile(device)
    record: dict = {"device": device, "batches": []}
    with linux_device(profile) as access:
        for batch in batches:
            stream = views[:min(len(views), MAX_BATCHES_PER_PASS * batch)]
            with deploy_linux_target(profile, files.onnx, "node", code_exponent=code_exponent, batch_size=batch,
                                     exact_model_path=files.exact_onnx, check_path=files.check_vectors,
                                     access=access) as target:
                target.encode(stream[:batch])  # warm-up: first round trip
                rates, device_ns, rtts, ratios = [], [], [], []
                for rep in range(repeats):
                    local_first = rep % 2 == 0  # alternate, so neither side always runs second
                    if local is not None and local_first:
                        local_rate = _local_rate(local, stream)
                    started = time.perf_counter()
                    result = target.encode(stream)
                    rates.append(len(stream) / (time.perf_counter() - started))
                    if local is not None:
                        if not local_first:
                            local_rate = _local_rate(local, stream)
                        ratios.append(rates[-1] / local_rate)
                    device_ns.append(result.device_ns)
                    rtts.append(result.round_trip_s)
                info = target.info()
                configuration = target.configuration
            rtt = np.concatenate(rtts)
            record["batches"].append({
                "batch_size": batch, "views": int(len(stream)), "repeats": repeats,
                "views_per_second": float(np.median(rates)),
                "views_per_second_range": [float(min(rates)), float(max(rates))],
                **({"over_local_paired": _spread(ratios)} if ratios else {}),
                "device_latency": percentiles(np.concatenate(device_ns)),
                "round_trip_ms_per_batch": {"p50": float(np.percentile(rtt, 50) * 1000),
                                            "p90": float(np.percentile(rtt, 90) * 1000)}})
        record["device_info"] = {"cpu_model": info.cpu_model, "machine": info.machine, "governor": info.governor,
                                 "peak_rss_bytes": info.peak_rss_bytes, "python": info.python,
                                 "onnxruntime": info.onnxruntime, "timing_basis": info.timing_basis,
                                 "emulated": info.emulated, **configuration}
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
    parser.add_argument("--views", type=int, default=2000, help="test views per latency pass on the host")
    parser.add_argument("--stream", type=int, default=10000,
                        help="views per throughput pass (the test views repeated): long enough that filling and "
                             "draining the three-batch pipeline is a small part of it")
    parser.add_argument("--qemu-views", type=int, default=200, help="test views per pass on rpi4-qemu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ssh-repeats", type=int, default=20,
                        help="SSH passes per batch size, each paired with a local pass")
    args = parser.parse_args()
    import onnxruntime as ort

    from quant_models import golden
    from quant_models.manifest import node_files

    qcdq, flt = export(4), export("float")
    trained = qcdq.trained
    node = 0
    views = trained.cached.partition.views(trained.data.test_x[:args.views])[node]
    exponent = qcdq.manifest["nodes"][node]["code_exponent"]
    files = node_files(qcdq.directory, node)
    golden_codes = golden.encode(qcdq.encoders[node], views)

    chosen = runner_model(files, exponent).describe()
    candidates = configurations(files, exponent, views, golden_codes)
    float_model = flt.directory / f"node{node}.onnx"
    float_session = runner_model_float(float_model)
    sessions = {name: model.session for name, (model, _) in candidates.items()} | {"float": float_session}
    ns = interleaved_latency(sessions, views, args.repeats)
    stats = {name: percentiles(t) for name, t in ns.items()}
    chosen_name = chosen["configuration"]["name"]
    q_stats, f_stats = stats[chosen_name], stats["float"]
    stream = np.resize(views, (args.stream, *views.shape[1:]))  # the test views, repeated
    local_rate = runner_throughput_local(files, exponent, stream, args.repeats)
    loopback = over_ssh("pi-loopback", files, exponent, stream, SSH_BATCHES, args.ssh_repeats,
                        local=runner_model(files, exponent))
    for b in loopback["batches"]:
        b["over_local"] = b["over_local_paired"]["median"]
    why_not = qemu_available()
    qemu = None
    if why_not is None:
        qemu_views = views[:args.qemu_views]
        qemu = over_ssh("rpi4-qemu", files, exponent, qemu_views, (50,), args.repeats)
        qemu["local_host_views_per_second"] = runner_throughput_local(files, exponent, qemu_views, args.repeats)
        qemu["emulated_over_host_p50"] = qemu["batches"][0]["device_latency"]["p50_us"] / q_stats["p50_us"]

    record = {
        "command": COMMAND,
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
                 "python": platform.python_version(), "cpu": cpu_description()},
        "model": "experiments/smoke.yaml node 0 (14x14 view, conv 32@5x5, maxpool 2, FC 16), q = 4 vs float",
        "encoder_latency_local": {
            "basis": LOCAL_BASIS, "runner_choice": chosen, "qcdq": q_stats, "float": f_stats,
            "qcdq_over_float_p50": q_stats["p50_us"] / f_stats["p50_us"],
            "qcdq_over_float_paired_median": float(np.median(ns[chosen_name] / ns["float"])),
            "configurations": {name: {"views_differing_from_golden": bad, "views": int(len(views)),
                                      "description": model.configuration.description, **stats[name],
                                      "over_float_p50": stats[name]["p50_us"] / f_stats["p50_us"]}
                               for name, (model, bad) in candidates.items()}},
        "ssh_vs_local": {"basis": "pi-loopback: a real sshd on 127.0.0.1, so the device is this host's CPU; "
                                  "throughput = views / host wall time of encode() (all round trips included; "
                                  "three batches in flight); local and SSH over the same stream of "
                                  f"{args.stream} views (the {args.views} test views repeated)",
                         "stream_views": args.stream, "local_runner_views_per_second": local_rate, **loopback},
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
             f"{r['host']['cpus']} CPUs, onnxruntime {r['host']['onnxruntime']}; CPU {r['host']['cpu']['model']}, "
             f"int8-relevant flags: {' '.join(r['host']['cpu']['int8_flags']) or 'none'}.",
             f"Model: {r['model']}.", "",
             "## q = 4 vs float encoder, per inference, onnxruntime on this host", "",
             f"Basis: {lat['basis']}. Each configuration's codes are compared with the golden integer model's "
             "on every view (a configuration that differs is not exact on this CPU).", "",
             "| configuration | views differing from golden | p50 | p90 | p99 | vs float (p50) |",
             "|---|---|---|---|---|---|"]
    chosen = lat["runner_choice"]["configuration"]["name"]
    for name, c in lat["configurations"].items():
        mark = " (the runner's choice)" if name == chosen else ""
        lines.append(f"| {name}{mark}: {c['description']} | {c['views_differing_from_golden']} of {c['views']} | "
                     f"{c['p50_us']:.1f} us | {c['p90_us']:.1f} us | {c['p99_us']:.1f} us | {c['over_float_p50']:.2f}x |")
    f = lat["float"]
    lines += [f"| float encoder (no quantization) | - | {f['p50_us']:.1f} us | {f['p90_us']:.1f} us | "
              f"{f['p99_us']:.1f} us | 1.00x |", "",
              f"The runner's exact configuration / float (p50): **{lat['qcdq_over_float_p50']:.2f}x** (median of "
              f"the per-inference ratios, same view and round: {lat['qcdq_over_float_paired_median']:.2f}x). "
              f"Self-check at load: {lat['runner_choice']['self_check']}.", "",
              "## Batched inference over SSH (pi-loopback) vs local onnxruntime", "",
              f"Basis: {r['ssh_vs_local']['basis']}. Local: the runner's inference loop in process, "
              f"{local['median']:.0f} views/s (median of {r['ssh_vs_local']['batches'][0]['repeats']} passes; "
              f"range {local['min']:.0f}-{local['max']:.0f}).", "",
              "SSH / local: the median (and range) over passes of the ratio of an SSH pass to the local pass "
              "run next to it (before it in even passes, after it in odd ones).", "",
              "| batch | views/s over SSH (range) | SSH / local, paired (range) | device p50 per inference | "
              "round trip p50 per batch |",
              "|---|---|---|---|---|"]
    for b in r["ssh_vs_local"]["batches"]:
        lo, hi = b["views_per_second_range"]
        lines.append(f"| {b['batch_size']} | {b['views_per_second']:.0f} ({lo:.0f}-{hi:.0f}) | {b['over_local']:.2f}x ({b['over_local_paired']['min']:.2f}-{b['over_local_paired']['max']:.2f}) | "
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
