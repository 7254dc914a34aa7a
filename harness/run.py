"""The run engine: train or load, export, deploy one target per node, stream the test samples
to all nodes in parallel, run the head on the codes the devices produced, store and summarise.

Results go to the SQLite store in committed batches. A run is identified by its *run key*
(experiment content, model hash, devices, sample count): running the same thing again resumes
the unfinished run, or returns the finished one, instead of repeating or duplicating rows.
Ctrl-C stops the workers after their current inference; what finished is committed.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np

from harness.errors import ConfigError, HilbenchError
from harness.node_targets import NodeReply, NodeTarget, open_gateway, open_node_target
from harness.paths import REPO_ROOT, cache_root
from harness.profiles import get_profile
from harness.results import ResultsStore, stored_codes
from harness.summary import summarize_run
from quant_models import golden
from quant_models.experiment import Experiment
from quant_models.export import MANIFEST, load_int_encoders
from quant_models.pipeline import export_trained, get_trained_model

BATCH = 25  # samples per committed batch and per progress step
ENTROPY_TRAIN_SAMPLES = 2000  # training-split codes the entropy coders are fitted on
PACKAGES = ("hilbench", "torch", "brevitas", "onnx", "onnxruntime", "numpy", "pyserial", "asyncssh")

ProgressFactory = Callable[[int, str], Callable[[int], None]]


@dataclass
class RunOptions:
    nodes_device: str | None = None
    gateway_device: str | None = None
    samples: int | None = None
    new: bool = False  # start a fresh run even if an identical one exists


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


class _NodeWorker:
    """Runs one node's samples; stops between inferences when asked."""

    def __init__(self, target: NodeTarget, views: np.ndarray, golden_codes: np.ndarray, run_id: str, stop: threading.Event):
        self.target, self.views, self.golden_codes = target, views, golden_codes
        self.run_id, self.stop = run_id, stop

    def run(self, samples: list[int]) -> list[dict]:
        rows = []
        for s in samples:
            if self.stop.is_set():
                break
            reply: NodeReply = self.target.infer(self.views[s])
            golden_code = self.golden_codes[s].tobytes()
            rows.append({"run_id": self.run_id, "node": self.target.encoder.node, "sample": s,
                         "device": self.target.profile.name, "ticks": reply.ticks,
                         "device_count": reply.device_count, "device_unit": reply.device_unit,
                         "latency": reply.latency, "latency_unit": reply.latency_unit,
                         "latency_basis": reply.latency_basis, "host_rtt_s": reply.host_rtt_s,
                         "code": reply.code, "golden_code": golden_code, "bitexact": int(reply.code == golden_code),
                         "attempts": reply.attempts, "wire_bytes_sent": reply.wire_bytes_sent,
                         "wire_bytes_received": reply.wire_bytes_received})
        return rows


def export_dir_for(cache_key: str) -> Path:
    return cache_root() / "exports" / cache_key[:24]


def run_experiment(exp: Experiment, store: ResultsStore, options: RunOptions | None = None,
                   progress: ProgressFactory | None = None) -> dict:
    """Run ``exp`` end to end; returns the run summary (also stored with the run)."""
    options = options or RunOptions()
    if exp.scheme == "centralized" or not exp.code.quantized:
        raise ConfigError(f"{exp.source}: field 'scheme'/'code.bits': a device run needs quantized node "
                          f"encoders (scheme {exp.scheme!r}, q = {exp.code.bits}); centralized and float "
                          "models are host-only baselines (`hilbench train`)")
    trained = get_trained_model(exp, progress=progress)
    cached, data = trained.cached, trained.data
    partition = cached.partition
    export_dir = export_dir_for(cached.key)
    if not (export_dir / MANIFEST).exists():
        export_trained(exp, trained, export_dir)
    manifest = json.loads((export_dir / MANIFEST).read_text())
    encoders = load_int_encoders(export_dir)

    node_names = [options.nodes_device] * partition.nodes if options.nodes_device else None
    try:
        node_names = node_names or exp.devices.node_devices(partition.nodes)
    except ValueError as exc:
        raise ConfigError(f"{exp.source}: field 'devices.nodes': {exc}") from exc
    gateway_name = options.gateway_device or exp.devices.gateway
    profiles = {name: get_profile(name) for name in set(node_names)}
    if gateway_name != "host":
        profiles[gateway_name] = get_profile(gateway_name)
    available = len(data.test_y)
    samples = min(options.samples or available, available)
    if options.samples is not None and options.samples < 1:
        raise ConfigError("--samples must be at least 1")

    run_key = hashlib.sha256(json.dumps([exp.content_hash(), manifest["model_hash"], node_names, gateway_name,
                                         samples, data.fingerprint]).encode()).hexdigest()
    existing = None if options.new else store.find_resumable(run_key)
    if existing is None and not options.new:
        finished = store.runs()
        finished = finished[(finished.run_key == run_key) & (finished.status == "complete")]
        if len(finished):
            return store.run(finished.iloc[-1].run_id)["summary"]
    emulated = any(p.emulated for p in profiles.values())
    run_id = existing.run_id if existing else store.create_run(
        experiment=exp.name, experiment_file=exp.source, experiment_hash=exp.content_hash(), run_key=run_key,
        model_hash=manifest["model_hash"], cache_key=cached.key, dataset=data.name, scheme=exp.scheme,
        code_bits=str(exp.code.bits), code_values=exp.code.values, nodes=partition.nodes, samples=samples,
        node_device=",".join(sorted(set(node_names))), gateway_device=gateway_name, emulated=int(emulated),
        device_profiles={n: p.model_dump(mode="json") for n, p in profiles.items()},
        git_commit=_git_commit(), package_versions=_versions())
    if existing:
        store.set_status(run_id, "running")

    images, labels = data.test_x[:samples], data.test_y[:samples]
    views = partition.views(images)
    golden_codes = [golden.encode_packed(enc, v) for enc, v in zip(encoders, views)]
    done = store.done_samples(run_id)
    todo = [[s for s in range(samples) if s not in done.get(i, set())] for i in range(partition.nodes)]
    stop = threading.Event()
    status = "failed"
    try:
        with ExitStack() as stack:
            targets = [stack.enter_context(open_node_target(profiles[name], enc, export_dir))
                       for name, enc in zip(node_names, encoders)]
            for target in targets:
                store.put_node(run_id, target.encoder.node, device=target.profile.name,
                               emulated=int(target.profile.emulated), board=target.info.board,
                               flash_bytes=target.info.flash_bytes, ram_bytes=target.info.ram_bytes,
                               stack_bytes=target.info.stack_bytes, macs=target.encoder.macs,
                               model_hash=target.encoder.sha256(), info=target.info.extra)
            workers = [_NodeWorker(t, v, g, run_id, stop) for t, v, g in zip(targets, views, golden_codes)]
            total = sum(len(t) for t in todo)
            advance = progress(total, f"inference on {len(targets)} nodes") if progress else (lambda n: None)
            with ThreadPoolExecutor(len(workers)) as pool:
                for start in range(0, max((len(t) for t in todo), default=0), BATCH):
                    futures = [pool.submit(w.run, t[start:start + BATCH]) for w, t in zip(workers, todo)]
                    try:
                        batches = [f.result() for f in futures]
                    except KeyboardInterrupt:
                        stop.set()
                        batches = [f.result() for f in futures]
                        store.add_inferences(row for rows in batches for row in rows)
                        raise
                    store.add_inferences(row for rows in batches for row in rows)
                    advance(sum(len(rows) for rows in batches))
            _predict(store, run_id, exp, encoders, labels, gateway_name, export_dir)
        train_views = partition.views(data.train_x[:ENTROPY_TRAIN_SAMPLES])
        train_codes = [golden.encode(enc, v) for enc, v in zip(encoders, train_views)]
        summary = summarize_run(store, run_id, manifest, profiles, train_codes)
        status = "complete"
        store.set_status(run_id, status, summary)
        return summary
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if status != "complete":
            store.set_status(run_id, status)


def _predict(store: ResultsStore, run_id: str, exp: Experiment, encoders, labels: np.ndarray,
             gateway_name: str, export_dir: Path) -> None:
    """Run the head on every sample whose codes all nodes delivered (device and golden codes)."""
    inf = store.inferences(run_id)
    have = set(store.predictions(run_id)["sample"])
    complete = inf.groupby("sample")["node"].nunique()
    ready = sorted(s for s in complete[complete == len(encoders)].index if s not in have)
    if not ready:
        return

    def codes_of(column: str) -> np.ndarray:
        return np.concatenate([stored_codes(inf, enc.node, enc.code_len, enc.code_bits, column, ready)
                               for enc in encoders], axis=1)

    with open_gateway(gateway_name, export_dir) as gateway:
        pred, gateway_ns = gateway.classify(codes_of("code"))
    with open_gateway("host", export_dir) as reference:  # the golden side always runs on the host
        golden_pred, _ = reference.classify(codes_of("golden_code"))
    store.add_predictions({"run_id": run_id, "sample": s, "label": int(labels[s]), "prediction": int(p),
                           "golden_prediction": int(g), "gateway": gateway.name,
                           "gateway_ns": float(gateway_ns[i]) if gateway_ns is not None else None}
                          for i, (s, p, g) in enumerate(zip(ready, pred, golden_pred)))
