#!/usr/bin/env python
"""Linux-target benchmark: QCDQ vs float encoder latency in onnxruntime, batched inference over
SSH vs local onnxruntime, and the emulated arm64 Raspberry Pi stand-in.

1. Per-inference latency of a node encoder (paper shape: conv 32@5x5, maxpool 2, FC 16), q = 4
   and float, in onnxruntime on this host: one sample per session.run, one intra-op thread (what
   the device runner does), time.perf_counter_ns around each run. The q = 4 figure is the
   configuration the runner's self-check chooses (exact on every CPU); every configuration the
   runner knows, and onnxruntime's default fused int8 one, is also timed and checked against the
   golden codes, so the choice shows its cost. All of them run interleaved view by view (A B C
   ...), so machine noise hits every configuration alike; the bar's figure, the runner's choice
   against float, comes from the two alone in alternating blocks of views, each session warm as
   on a device that serves one model (interleaving five sessions leaves each one's caches partly
   cold, which is not what a device sees and moves their ratio by a few percent).
2. Throughput of the q = 4 encoder through the device runner over SSH to `pi-loopback` (a real
   sshd on 127.0.0.1, so the same CPU) at several batch sizes, vs the runner's own inference loop
   called in process on the same batches (the same code without SSH), both over the same stream
   of views: the ratio is what the link and protocol cost. The views are stored on the device
   once (as a node's own measurements would be there) and encoded in ranges of eight batches per
   request, three requests in flight (LinuxTarget.store / encode_stored); each pass also streams
   the views with every batch (LinuxTarget.encode), reported beside it. The runner runs a batch of
   several views in session.run calls of up to 64 views where its self-check allowed that, so a
   device time per inference there is the batch time / views (said per row).
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
QEMU_BATCH = 50
MAX_BATCHES_PER_PASS = 200  # a pass streams at most this many batches (batch 1: 200 round trips)


def percentiles(ns: np.ndarray) -> dict:
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    return {"p50_us": float(np.percentile(us, 50)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean()), "n": int(us.size)}


def _model_inputs(sessions: dict, views: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """The encoders' input for ``views`` (pixel / 256, [B, 1, h, w]) and each session's input name."""
    x = (views.astype(np.float32) / np.float32(256.0))[:, None]
    return x, {key: session.get_inputs()[0].name for key, session in sessions.items()}


def interleaved_latency(sessions: dict, views: np.ndarray, repeats: int) -> dict[str, np.ndarray]:
    """ns per single-sample inference of each session, ``repeats`` passes over ``views`` after a
    warm-up pass; each view goes through every session in turn, the order rotating from view to
    view so that no session always runs first (cold) or last."""
    x, names = _model_inputs(sessions, views)
    keys = list(sessions)
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


def blocked_latency(sessions: dict, views: np.ndarray, repeats: int, block: int = 200) -> dict[str, np.ndarray]:
    """ns per single-sample inference of each session, run a block of ``block`` views at a time
    so each session is warm (as on a device serving one model), the sessions alternating from
    block to block and the order reversing every other block; ``repeats`` passes after a warm-up
    block. Timings are returned view for view, so they can be paired."""
    x, names = _model_inputs(sessions, views)
    keys = list(sessions)
    for key in keys:  # warm-up
        for i in range(min(block, len(x))):
            sessions[key].run(None, {names[key]: x[i:i + 1]})
    timings = {key: np.zeros((repeats, len(x)), dtype=np.int64) for key in keys}
    clock = time.perf_counter_ns
    for rep in range(repeats):
        for n, start in enumerate(range(0, len(x), block)):
            for key in keys if (n + rep) % 2 == 0 else keys[::-1]:
                session, name = sessions[key], names[key]
                for i in range(start, min(start + block, len(x))):
                    sample = x[i:i + 1]
                    started = clock()
                    session.run(None, {name: sample})
                    timings[key][rep, i] = clock() - started
    return {key: t.ravel() for key, t in timings.items()}


def graph_ops(path: Path) -> list[str]:
    """The operator types of the ONNX model at ``path``, in graph order."""
    import onnx

    return [node.op_type for node in onnx.load(str(path)).graph.node]


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


def runner_model_per_view(files, code_exponent: int):
    """The runner's Model in its exact configuration, but without batch calls (no self-check
    allows them): one session.run per view, as the runner worked before batch calls."""
    from devices.runner.hil_runner import NODE_CONFIGURATIONS, Model

    model = Model(str(files.onnx), "node", code_exponent, threads=1, exact_path=str(files.exact_onnx),
                  configurations=(NODE_CONFIGURATIONS[0],))
    assert not model.batched
    return model


def runner_throughput_local(files, code_exponent: int, views: np.ndarray, batch: int, repeats: int) -> dict:
    """Views per second through the runner's own inference loop, in process (no SSH), in batches
    of ``batch``: median, min and max over ``repeats`` passes."""
    model = runner_model(files, code_exponent)
    return _spread([_local_rate(model, views, batch) for _ in range(repeats)])


def local_batch_latency(files, code_exponent: int, views: np.ndarray, batch: int, repeats: int) -> dict:
    """The runner's device time per inference in this process on batches of ``batch`` (as the
    runner reports it: batch time / views where a batch runs in batch calls)."""
    from devices.runner.hil_runner import per_inference_ns

    model = runner_model(files, code_exponent)
    ns = [per_inference_ns(model.infer(views[s:s + batch])[1], len(views[s:s + batch]))[0]
          for _ in range(repeats) for s in range(0, len(views), batch)]
    return percentiles(np.concatenate(ns))


def _local_rate(model, views: np.ndarray, batch: int) -> float:
    """Views per second of one pass of ``views`` through ``model.infer`` in this process, in
    batches of ``batch`` (as the SSH pass sends them)."""
    started = time.perf_counter()
    for start in range(0, len(views), batch):
        model.infer(views[start:start + batch])
    return len(views) / (time.perf_counter() - started)


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process of this machine (its time on a CPU, from /proc/PID/schedstat, in
    ns: the clock-tick counts of /proc/PID/stat are too coarse for a pass); None if it is not one
    of this machine's processes."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _ssh_pass(target, stream: np.ndarray, sshd_pid: int | None, stored: bool) -> dict:
    """One pass of ``stream`` over SSH (``stored``: the views stored on the device, encoded in
    ranges; else sent with each batch): views per second, the result, and the CPU it cost per
    batch on each side (the runner's own count; this process, i.e. the host's asyncssh and
    framing; the device's sshd session where it is a process of this machine)."""
    batches = -(-len(stream) // target.batch_size)
    runner_before, host_before = target.info().cpu_ns, time.process_time()
    sshd_before = _proc_cpu_s(sshd_pid) if sshd_pid else None
    started = time.perf_counter()
    result = target.encode_stored() if stored else target.encode(stream)
    elapsed = time.perf_counter() - started
    host_cpu = time.process_time() - host_before
    sshd_after = _proc_cpu_s(sshd_pid) if sshd_pid else None
    runner_cpu = (target.info().cpu_ns - runner_before) / 1e9
    sshd_cpu = None if sshd_before is None or sshd_after is None else sshd_after - sshd_before
    return {"rate": len(stream) / elapsed, "result": result,
            "cpu_ms": {"runner": runner_cpu / batches * 1e3, "host": host_cpu / batches * 1e3,
                       "sshd": None if sshd_cpu is None else sshd_cpu / batches * 1e3}}


def _local_pass(model, stream: np.ndarray, batch: int) -> dict:
    """One pass of ``stream`` through the runner's Model in this process: views per second and
    CPU per batch."""
    before = time.process_time()
    rate = _local_rate(model, stream, batch)
    return {"rate": rate, "cpu_ms": (time.process_time() - before) / -(-len(stream) // batch) * 1e3}


def _cpu_record(ssh: list[dict], local: list[dict]) -> dict:
    """Median CPU milliseconds per batch: local, and the SSH path's parts."""
    def median(values: list) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.median(kept)) if kept else None

    parts = {key: median([p["cpu_ms"][key] for p in ssh]) for key in ("runner", "sshd", "host")}
    return {"local": median([p["cpu_ms"] for p in local]), **parts}


def over_ssh(device: str, files, code_exponent: int, views: np.ndarray, batches, repeats: int,
             local=None, per_view_local=None, streamed: bool = True) -> dict:
    """Throughput over SSH per batch size, the views stored on the device and encoded in ranges;
    with ``streamed``, each round also sends them with every batch. With ``local`` (a runner
    Model on this host), each round also runs the same views in process on the same batches, the
    order rotating from round to round, and the ratios of each SSH pass to its round's local pass
    are kept: on a shared VM the machine's speed drifts between passes, so a ratio of neighbours
    is the trustworthy figure. Each SSH pass also counts the CPU time it cost per batch on each
    side. With ``per_view_local`` (the runner's Model without batch calls, as runners before them
    worked), each round also gets a pass through it, for comparison with records from then."""
    from harness.targets.linux.deploy import deploy_linux_target, linux_device
    from harness.targets.linux.driver import STORED_REQUEST_BATCHES
    from harness.config.profiles import get_profile

    profile = get_profile(device)
    record: dict = {"device": device, "batches_per_request": STORED_REQUEST_BATCHES, "batches": []}
    with linux_device(profile) as access:
        for batch in batches:
            stream = views[:min(len(views), MAX_BATCHES_PER_PASS * batch)]
            with deploy_linux_target(profile, files.onnx, "node", code_exponent=code_exponent, batch_size=batch,
                                     exact_model_path=files.exact_onnx, check_path=files.check_vectors,
                                     access=access) as target:
                target.store(stream)
                target.encode_stored(0, min(len(stream), batch * STORED_REQUEST_BATCHES))  # warm-up
                target.encode(stream[:batch])
                # the loopback sshd session is a process of this machine: the runner's parent
                sshd_pid = _parent_pid(target.hello["pid"]) if device == "pi-loopback" else None
                kinds = ["stored"] + (["streamed"] if streamed else []) + (["local"] if local is not None else [])
                passes: dict[str, list[dict]] = {kind: [] for kind in kinds}
                per_view_passes = []
                for rep in range(repeats):
                    for kind in kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]:  # rotate the order
                        passes[kind].append(_local_pass(local, stream, batch) if kind == "local"
                                            else _ssh_pass(target, stream, sshd_pid, stored=kind == "stored"))
                    if per_view_local is not None:
                        per_view_passes.append(_local_pass(per_view_local, stream, batch))
                info = target.info()
                configuration = target.configuration
            local_passes = passes.get("local", [])
            entry = {"batch_size": batch, "views": int(len(stream)), "repeats": repeats,
                     **_ssh_record(passes["stored"], local_passes)}
            if streamed:
                entry["streamed"] = _ssh_record(passes["streamed"], local_passes)
            if local_passes:
                entry["local_views_per_second"] = _spread([q["rate"] for q in local_passes])
            if per_view_passes:
                entry["per_view_local_views_per_second"] = _spread([q["rate"] for q in per_view_passes])
                entry["over_per_view_local"] = _spread([p["rate"] / q["rate"]
                                                        for p, q in zip(passes["stored"], per_view_passes)])
            record["batches"].append(entry)
        record["device_info"] = {"cpu_model": info.cpu_model, "machine": info.machine, "governor": info.governor,
                                 "peak_rss_bytes": info.peak_rss_bytes, "python": info.python,
                                 "onnxruntime": info.onnxruntime, "timing_basis": info.timing_basis,
                                 "emulated": info.emulated, **configuration}
    return record


def _ssh_record(ssh_passes: list[dict], local_passes: list[dict]) -> dict:
    """Throughput, paired ratios to the local passes, CPU per batch, device times and round
    trips of one kind of SSH pass."""
    rates = [p["rate"] for p in ssh_passes]
    rtt = np.concatenate([p["result"].round_trip_s for p in ssh_passes])
    ratios = [p["rate"] / q["rate"] for p, q in zip(ssh_passes, local_passes)]
    return {"views_per_second": float(np.median(rates)), "views_per_second_range": [float(min(rates)), float(max(rates))],
            **({"over_local_paired": _spread(ratios)} if ratios else {}),
            "cpu_ms_per_batch": _cpu_record(ssh_passes, local_passes),
            "device_latency": percentiles(np.concatenate([p["result"].device_ns for p in ssh_passes])),
            "device_timing": ssh_passes[-1]["result"].timing,
            "round_trip_ms_per_request": {"p50": float(np.percentile(rtt, 50) * 1000),
                                          "p90": float(np.percentile(rtt, 90) * 1000)}}


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
    parser.add_argument("--stream", type=int, default=MAX_BATCHES_PER_PASS * max(SSH_BATCHES),
                        help="views per throughput pass (the test views repeated; a pass takes at most "
                             f"{MAX_BATCHES_PER_PASS} batches of them): long enough that filling and draining the "
                             "pipeline of requests in flight is a small part of it")
    parser.add_argument("--qemu-views", type=int, default=200, help="test views per pass on rpi4-qemu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ssh-repeats", type=int, default=20,
                        help="SSH passes per batch size, each paired with a local pass")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reference",
                        help="directory for linux-benchmark.json and .md (default: the reference record)")
    args = parser.parse_args()
    import onnxruntime as ort

    from quant_models import golden
    from quant_models.manifest import node_files

    load_before = os.getloadavg()
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
    warm = blocked_latency({chosen_name: sessions[chosen_name], "float": float_session}, views, args.repeats)
    q_stats, f_stats = percentiles(warm[chosen_name]), percentiles(warm["float"])
    stream = np.resize(views, (args.stream, *views.shape[1:]))  # the test views, repeated
    loopback = over_ssh("pi-loopback", files, exponent, stream, SSH_BATCHES, args.ssh_repeats,
                        local=runner_model(files, exponent), per_view_local=runner_model_per_view(files, exponent))
    for b in loopback["batches"]:
        b["over_local"] = b["over_local_paired"]["median"]
    why_not = qemu_available()
    qemu = None
    if why_not is None:
        qemu_views = views[:args.qemu_views]
        qemu = over_ssh("rpi4-qemu", files, exponent, qemu_views, (QEMU_BATCH,), args.repeats, streamed=False)
        qemu["local_host_views_per_second"] = runner_throughput_local(files, exponent, qemu_views, QEMU_BATCH,
                                                                      args.repeats)
        host_batched = local_batch_latency(files, exponent, qemu_views, QEMU_BATCH, args.repeats)
        qemu["host_device_latency_same_batches"] = host_batched
        qemu["emulated_over_host_p50"] = qemu["batches"][0]["device_latency"]["p50_us"] / host_batched["p50_us"]

    record: dict = {
        "command": COMMAND,
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
                 "python": platform.python_version(), "cpu": cpu_description(),
                 "load_average": {"start": list(load_before), "end": list(os.getloadavg()),
                                  "note": "1, 5 and 15 minute load averages; the machine is shared with other jobs"}},
        "model": "experiments/smoke.yaml node 0 (14x14 view, conv 32@5x5, maxpool 2, FC 16), q = 4 vs float",
        "encoder_latency_local": {
            "basis": LOCAL_BASIS, "runner_choice": chosen, "qcdq": q_stats, "float": f_stats,
            "qcdq_over_float_p50": q_stats["p50_us"] / f_stats["p50_us"],
            "qcdq_over_float_paired_median": float(np.median(warm[chosen_name] / warm["float"])),
            "timing": "the runner's choice and float alone, in alternating blocks of 200 views (each warm)",
            "graphs": {"exact": graph_ops(files.exact_onnx), "float": graph_ops(float_model)},
            "interleaved_float": stats["float"],
            "configurations": {name: {"views_differing_from_golden": bad, "views": int(len(views)),
                                      "description": model.configuration.description, **stats[name],
                                      "over_float_p50": stats[name]["p50_us"] / stats["float"]["p50_us"]}
                               for name, (model, bad) in candidates.items()}},
        "ssh_vs_local": {"basis": "pi-loopback: a real sshd on 127.0.0.1, so the device is this host's CPU; "
                                  "throughput = views / host wall time of encode_stored() over views stored on "
                                  "the device once (all round trips included; 8 batches per request, three "
                                  "requests in flight), and beside it of encode() sending the views with every "
                                  "batch (three batches in flight); local: the runner's Model.infer in this "
                                  "process on the same batches; local and SSH over the same views (the "
                                  f"{args.views} test views repeated, at most {MAX_BATCHES_PER_PASS} batches)",
                         "stream_views": args.stream, **loopback},
        "rpi4_qemu": qemu if qemu is not None else {"skipped": why_not},
    }
    record["bars"] = bars(record)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "linux-benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "linux-benchmark.md").write_text(markdown(record))
    print(markdown(record))


def _batching_text(batching: dict) -> str:
    checked = batching["checked_batch"]
    how = (f"batches in session.run calls of up to {batching['views_per_call']} views" if batching["batch_calls"]
           else "one session.run per view")
    return (f"{how} (self-check of the check vectors repeated to {checked['views']} views run that way: "
            f"{checked['mismatched_codes']} codes differ); {batching['timing']}")


def bars(r: dict) -> dict:
    """The issue's two bars, read from a record."""
    at_256 = next(b for b in r["ssh_vs_local"]["batches"] if b["batch_size"] == 256)
    return {"qcdq_over_float_p50 <= 1.0": r["encoder_latency_local"]["qcdq_over_float_p50"] <= 1.0,
            "ssh_over_local_paired_median_at_256 >= 0.95": at_256["over_local"] >= 0.95}


def markdown(r: dict) -> str:
    lat = r["encoder_latency_local"]
    load = r["host"]["load_average"]
    lines = ["# Linux targets benchmark", "",
             f"Reproduce: `{r['command']}` (commit {r['git_commit'][:10]}); host {r['host']['machine']}, "
             f"{r['host']['cpus']} CPUs, onnxruntime {r['host']['onnxruntime']}; CPU {r['host']['cpu']['model']}, "
             f"int8-relevant flags: {' '.join(r['host']['cpu']['int8_flags']) or 'none'}.",
             f"Load average (1, 5, 15 min) at the start: {', '.join(f'{v:.2f}' for v in load['start'])}; at the "
             f"end: {', '.join(f'{v:.2f}' for v in load['end'])} (the machine is shared with other jobs: paired "
             "ratios are the figures to trust).",
             f"Model: {r['model']}.", "",
             "Bars: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in r["bars"].items()) + ".", "",
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
    f = lat["interleaved_float"]
    q, w = lat["qcdq"], lat["float"]
    lines += [f"| float encoder (no quantization) | - | {f['p50_us']:.1f} us | {f['p90_us']:.1f} us | "
              f"{f['p99_us']:.1f} us | 1.00x |", "",
              "The table's sessions run interleaved view by view, which leaves each one's caches partly cold. "
              f"The bar's figure: {lat['timing']}: {q['p50_us']:.2f} us against {w['p50_us']:.2f} us (p50), the "
              f"runner's exact configuration / float: **{lat['qcdq_over_float_p50']:.3f}x** (median of the "
              f"per-inference ratios, same view and pass: {lat['qcdq_over_float_paired_median']:.3f}x)."]
    lines += ["", "The two graphs as exported: exact " + " -> ".join(lat["graphs"]["exact"]) + "; float "
              + " -> ".join(lat["graphs"]["float"]) + "."]
    lines += ["", f"Self-check at load: {lat['runner_choice']['self_check']}.", "",
              "## Batched inference over SSH (pi-loopback) vs local onnxruntime", "",
              f"Basis: {r['ssh_vs_local']['basis']}. Runner batching: "
              f"{_batching_text(r['ssh_vs_local']['device_info']['batching'])}.", "",
              f"SSH / local: the median (and range) over {r['ssh_vs_local']['batches'][0]['repeats']} rounds of the "
              "ratio of an SSH pass to the local pass of the same round, on the same batches (each round runs "
              "the views stored, streamed and local, the order rotating from round to round). Views stored: "
              "the bar's figure, the device encoding views it holds, as a node encodes its own measurements. "
              "Views streamed: the host sends each batch's views with it, so the link also carries the inputs, "
              "which a deployed node never receives.", "",
              "| batch | views stored: views/s over SSH (range) | views/s local (range) | views stored: SSH / local, "
              "paired (range) | views streamed: views/s, SSH / local paired (range) | device p50 per inference | "
              "round trip p50 per request (stored: 8 batches) |",
              "|---|---|---|---|---|---|---|"]
    for b in r["ssh_vs_local"]["batches"]:
        lo, hi = b["views_per_second_range"]
        loc = b["local_views_per_second"]
        st = b["streamed"]
        per = "own call" if b["batch_size"] == 1 else f"batch time / {b['batch_size']}"
        lines.append(f"| {b['batch_size']} | {b['views_per_second']:.0f} ({lo:.0f}-{hi:.0f}) | "
                     f"{loc['median']:.0f} ({loc['min']:.0f}-{loc['max']:.0f}) | **{b['over_local']:.2f}x** "
                     f"({b['over_local_paired']['min']:.2f}-{b['over_local_paired']['max']:.2f}) | "
                     f"{st['views_per_second']:.0f}, {st['over_local_paired']['median']:.2f}x "
                     f"({st['over_local_paired']['min']:.2f}-{st['over_local_paired']['max']:.2f}) | "
                     f"{b['device_latency']['p50_us']:.1f} us ({per}) | "
                     f"{b['round_trip_ms_per_request']['p50']:.2f} ms |")
    lines += ["", "Device time per inference: " + "; ".join(
        f"batch {b['batch_size']}: {b['device_timing']}" for b in r["ssh_vs_local"]["batches"]) + "."]
    lines += ["", "Where the CPU goes, per batch (median over the passes; CPU time, not wall time): the runner "
              "(its own count: session.run, conversions, pipes), the loopback sshd session (decrypting and "
              "encrypting), and this process (asyncssh's packets and ciphers, framing). With a free core for the "
              "link, SSH throughput is bounded by the runner alone; when other jobs keep every core busy, by the "
              "sum of all three against the local pass's CPU.", "",
              "| batch | views | local | runner | sshd | host (asyncssh, framing) | local / (runner + sshd + host) |",
              "|---|---|---|---|---|---|---|"]
    for b in r["ssh_vs_local"]["batches"]:
        for kind, c in (("stored", b["cpu_ms_per_batch"]), ("streamed", b["streamed"]["cpu_ms_per_batch"])):
            sshd = "-" if c["sshd"] is None else f"{c['sshd']:.3f} ms"
            total = c["runner"] + (c["sshd"] or 0.0) + c["host"]
            lines.append(f"| {b['batch_size']} | {kind} | {c['local']:.3f} ms | {c['runner']:.3f} ms | {sshd} | "
                         f"{c['host']:.3f} ms | {c['local'] / total:.2f} |")
    if "over_per_view_local" in r["ssh_vs_local"]["batches"][-1]:
        b = r["ssh_vs_local"]["batches"][-1]
        pv = b["per_view_local_views_per_second"]
        lines += ["", f"Not a bar, for comparison with records made before batch calls (whose local pass ran one "
                  f"session.run per view): that loop in process reached {pv['median']:.0f} views/s in the same "
                  f"passes (range {pv['min']:.0f}-{pv['max']:.0f}); SSH at batch {b['batch_size']} / it: "
                  f"{b['over_per_view_local']['median']:.2f}x."]
    lines += ["", "## rpi4-qemu: emulated arm64 (qemu-user), not a Raspberry Pi's speed", ""]
    q = r["rpi4_qemu"]
    if "skipped" in q:
        lines.append(f"Skipped: {q['skipped']}.")
    else:
        b = q["batches"][0]
        info = q["device_info"]
        lines += [f"Basis: {info['timing_basis']}; per inference: {b['device_timing']}. "
                  f"Device: {info['cpu_model']} ({info['machine']}, python "
                  f"{info['python']}, onnxruntime {info['onnxruntime']}); runner peak RSS "
                  f"{info['peak_rss_bytes'] / 2**20:.0f} MiB under qemu-user.", "",
                  "| batch | views/s over SSH (emulated) | device p50 / p90 per inference (emulated) | "
                  "emulated / host p50 (same batches) |", "|---|---|---|---|",
                  f"| {b['batch_size']} | {b['views_per_second']:.0f} | {b['device_latency']['p50_us']:.0f} / "
                  f"{b['device_latency']['p90_us']:.0f} us | {q['emulated_over_host_p50']:.0f}x |", "",
                  "These are emulation times: they show the aarch64 path runs and gives the same codes, "
                  "not how fast a Raspberry Pi 4 is."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
