"""The run engine, as steps: plan (validate every profile, radio, gateway, meter and option, before
anything is trained or deployed), prepare (train or load, export: :func:`get_exported`), open or
resume the run in the store, stream the test samples to one target per node in parallel, predict
(the head on the codes the devices produced), summarise.

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
from typing import TYPE_CHECKING, Callable

import numpy as np

from harness.config.profiles import DeviceProfile, get_profile
from harness.core.errors import ConfigError
from harness.core.paths import REPO_ROOT
from harness.measure.meters import METERS
from harness.measure.radio_models import get_radio_profile
from harness.store.results import InferenceRow, ResultsStore, stored_codes
from harness.store.summary import DEFAULT_RADIO, RunSummary, summarize_run
from harness.targets.contract import GATEWAYS, NODE_TARGETS, NodeReply, NodeTarget, open_gateway, open_node_target
from quant_models import golden
from quant_models.datasets import Dataset, load_experiment_dataset
from quant_models.experiment import Experiment
from quant_models.intparams import IntEncoder
from quant_models.partition import Partition, make_partition

if TYPE_CHECKING:
    from quant_models.pipeline import ExportedModel

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

    def run(self, samples: list[int]) -> list[InferenceRow]:
        rows: list[InferenceRow] = []
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


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, validated: the devices of every node and the gateway with their
    profiles, the dataset and its partition into node views, and how many test samples."""

    experiment: Experiment
    node_devices: list[str]
    gateway: str
    profiles: dict[str, DeviceProfile]
    data: Dataset
    partition: Partition
    samples: int


def _check_node_profile(profile: DeviceProfile) -> None:
    if profile.kind not in NODE_TARGETS:
        raise ConfigError(f"{profile.source}: field 'kind': no node target for kind {profile.kind!r}; "
                          f"known: {', '.join(NODE_TARGETS.names())}")
    get_radio_profile(profile.radio or DEFAULT_RADIO)
    if profile.meter is not None:
        try:
            METERS.get(profile.meter)
        except ConfigError as exc:
            raise ConfigError(f"{profile.source}: field 'meter': {exc}") from exc


def _check_gateway_profile(profile: DeviceProfile) -> None:
    if profile.kind not in GATEWAYS:
        raise ConfigError(f"{profile.source}: device {profile.name!r} (kind {profile.kind}) cannot be a gateway; "
                          "use 'host' or a linux device")


def plan_run(exp: Experiment, options: RunOptions) -> RunPlan:
    """Validate the options, every device profile (node targets, radios, meters, the gateway)
    and the dataset; nothing is trained or deployed, so bad input fails in a moment."""
    if options.samples is not None and options.samples < 1:
        raise ConfigError(f"--samples must be at least 1 (got {options.samples})")
    if exp.scheme == "centralized" or not exp.code.quantized:
        raise ConfigError(f"{exp.source}: field 'scheme'/'code.bits': a device run needs quantized node "
                          f"encoders (scheme {exp.scheme!r}, q = {exp.code.bits}); centralized and float "
                          "models are host-only baselines (`hilbench train`)")
    named = exp.devices.nodes if isinstance(exp.devices.nodes, list) else [exp.devices.nodes]
    profiles = {name: get_profile(name) for name in ([options.nodes_device] if options.nodes_device else named)}
    for profile in profiles.values():
        _check_node_profile(profile)
    gateway = options.gateway_device or exp.devices.gateway
    if gateway != "host":
        profiles.setdefault(gateway, get_profile(gateway))
        _check_gateway_profile(profiles[gateway])

    data = load_experiment_dataset(exp)
    partition = make_partition(exp.partition, data.image_shape)
    exp.check_shape(partition.nodes, data.classes)
    if options.nodes_device:
        node_devices = [options.nodes_device] * partition.nodes
    else:
        try:
            node_devices = exp.devices.node_devices(partition.nodes)
        except ValueError as exc:
            raise ConfigError(f"{exp.source}: field 'devices.nodes': {exc}") from exc
    available = len(data.test_y)
    return RunPlan(exp, node_devices, gateway, profiles, data, partition,
                   samples=min(options.samples or available, available))


def prepare(plan: RunPlan, progress: ProgressFactory | None = None) -> ExportedModel:
    """The planned experiment's model, trained or from the cache, and its export."""
    from quant_models.pipeline import get_exported

    return get_exported(plan.experiment, progress=progress, data=plan.data)


def run_key(plan: RunPlan, model: ExportedModel) -> str:
    """What identifies a run: the same key resumes (or returns) the same run."""
    return hashlib.sha256(json.dumps([plan.experiment.content_hash(), model.manifest["model_hash"],
                                      plan.node_devices, plan.gateway, plan.samples,
                                      plan.data.fingerprint]).encode()).hexdigest()


def open_run(plan: RunPlan, model: ExportedModel, store: ResultsStore, new: bool = False) -> tuple[str, RunSummary | None]:
    """The run's id, resuming an unfinished run with the same key; and its summary if a run with
    that key already finished (unless ``new``)."""
    key = run_key(plan, model)
    existing = None if new else store.find_resumable(key)
    if existing is None and not new:
        finished = store.runs()
        finished = finished[(finished.run_key == key) & (finished.status == "complete")]
        if len(finished):
            run_id = str(finished.iloc[-1].run_id)
            return run_id, store.run(run_id)["summary"]
    if existing is not None:
        store.set_status(existing.run_id, "running")
        return existing.run_id, None
    exp = plan.experiment
    return store.create_run(
        experiment=exp.name, experiment_file=exp.source, experiment_hash=exp.content_hash(), run_key=key,
        model_hash=model.manifest["model_hash"], cache_key=model.trained.cached.key, dataset=plan.data.name,
        scheme=exp.scheme, code_bits=str(exp.code.bits), code_values=exp.code.values, nodes=plan.partition.nodes,
        samples=plan.samples, node_device=",".join(sorted(set(plan.node_devices))), gateway_device=plan.gateway,
        emulated=int(any(p.emulated for p in plan.profiles.values())),
        device_profiles={n: p.model_dump(mode="json") for n, p in plan.profiles.items()},
        git_commit=_git_commit(), package_versions=_versions()), None


def stream(plan: RunPlan, model: ExportedModel, store: ResultsStore, run_id: str,
           progress: ProgressFactory | None = None) -> None:
    """Deploy one target per node and stream every sample the run does not hold yet to all nodes
    in parallel, committing rows in batches; Ctrl-C commits what finished and stops."""
    views = plan.partition.views(plan.data.test_x[:plan.samples])
    golden_codes = [golden.encode_packed(enc, v) for enc, v in zip(model.encoders, views)]
    done = store.done_samples(run_id)
    todo = [[s for s in range(plan.samples) if s not in done.get(i, set())] for i in range(plan.partition.nodes)]
    stop = threading.Event()
    with ExitStack() as stack:
        targets = [stack.enter_context(open_node_target(plan.profiles[name], enc, model.directory))
                   for name, enc in zip(plan.node_devices, model.encoders)]
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


def predict(plan: RunPlan, model: ExportedModel, store: ResultsStore, run_id: str) -> None:
    """Run the head on every sample whose codes all nodes delivered (device and golden codes)."""
    encoders: list[IntEncoder] = model.encoders
    inf = store.inferences(run_id)
    have = set(store.predictions(run_id)["sample"])
    complete = inf.groupby("sample")["node"].nunique()
    ready = sorted(s for s in complete[complete == len(encoders)].index if s not in have)
    if not ready:
        return

    def codes_of(column: str) -> np.ndarray:
        return np.concatenate([stored_codes(inf, enc.node, enc.code_len, enc.code_bits, column, ready)
                               for enc in encoders], axis=1)

    labels = plan.data.test_y
    with open_gateway(plan.gateway, model.directory) as gateway:
        pred, gateway_ns = gateway.classify(codes_of("code"))
    with open_gateway("host", model.directory) as reference:  # the golden side always runs on the host
        golden_pred, _ = reference.classify(codes_of("golden_code"))
    store.add_predictions({"run_id": run_id, "sample": s, "label": int(labels[s]), "prediction": int(p),
                           "golden_prediction": int(g), "gateway": gateway.name,
                           "gateway_ns": float(gateway_ns[i]) if gateway_ns is not None else None}
                          for i, (s, p, g) in enumerate(zip(ready, pred, golden_pred)))


def summarise(plan: RunPlan, model: ExportedModel, store: ResultsStore, run_id: str) -> RunSummary:
    """The run summary from the stored rows, with entropy coders fitted on training-split codes."""
    train_views = plan.partition.views(plan.data.train_x[:ENTROPY_TRAIN_SAMPLES])
    train_codes = [golden.encode(enc, v) for enc, v in zip(model.encoders, train_views)]
    return summarize_run(store, run_id, model.manifest, plan.profiles, train_codes)


def run_experiment(exp: Experiment, store: ResultsStore, options: RunOptions | None = None,
                   progress: ProgressFactory | None = None) -> RunSummary:
    """Run ``exp`` end to end; returns the run summary (also stored with the run)."""
    options = options or RunOptions()
    plan = plan_run(exp, options)
    model = prepare(plan, progress)
    run_id, finished = open_run(plan, model, store, new=options.new)
    if finished is not None:
        return finished
    status = "failed"
    try:
        stream(plan, model, store, run_id, progress)
        predict(plan, model, store, run_id)
        summary = summarise(plan, model, store, run_id)
        status = "complete"
        store.set_status(run_id, status, summary)
        return summary
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if status != "complete":
            store.set_status(run_id, status)
