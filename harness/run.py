"""The run engine, as steps: plan (validate every profile, radio, gateway, meter and option, before
anything is trained or deployed), prepare (train or load, export: :func:`get_exported`), open or
resume the run in the store, stream the test samples to one target per node in parallel (inside
the nodes' power meters, where profiles have them: :mod:`harness.measure.metering`), predict
(the head on the codes the devices produced), summarise.

Results go to the SQLite store in committed batches. A run is identified by its *run key*
(experiment content, model hash, devices, sample count): running the same thing again resumes
the unfinished run, or returns the finished one, instead of repeating or duplicating rows.
Ctrl-C stops the workers after their current inference; what finished is committed.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.config.profiles import DeviceProfile, calibrated_model, get_profile, preflight
from harness.core.errors import BuildError, ConfigError, DeviceError
from harness.core.paths import REPO_ROOT, device_code_digest
from harness.measure.metering import RunMetering, check_meters, meter_spec_key, open_metering
from harness.measure.radio_models import get_radio_profile
from harness.store.results import InferenceRow, ResultsStore, stored_codes
from harness.store.summary import DEFAULT_RADIO, RunSummary, summarize_run
from harness.transports.faults import LinkFaults, injecting
from harness.targets.contract import GATEWAYS, NODE_TARGETS, NodeReply, NodeTarget, open_gateway, open_node_target
from quant_models import golden
from quant_models.datasets import Dataset, load_experiment_dataset
from quant_models.experiment import Experiment
from quant_models.manifest import NodeModel
from quant_models.partition import Partition

if TYPE_CHECKING:
    from quant_models.pipeline import ExportedModel

BATCH = 25  # rows per node in a committed batch
COMMIT_SECONDS = 1.0  # rows wait at most about this long to be committed
MAX_NODE_RESETS = 3  # resets of one node in a row, without a finished inference, before it fails
EMULATED_NODES_PER_CORE = 2
DEVICE_SLOTS_ENV = "HILBENCH_DEVICE_SLOTS"
ENTROPY_TRAIN_SAMPLES = 2000  # training-split codes the entropy coders are fitted on
PACKAGES = ("hilbench", "torch", "brevitas", "onnx", "onnxruntime", "numpy", "pyserial", "asyncssh")

ProgressFactory = Callable[[int, str], Callable[[int], None]]


@dataclass
class RunOptions:
    nodes_device: str | None = None
    gateway_device: str | None = None
    samples: int | None = None
    new: bool = False  # start a fresh run even if an identical one exists
    device_slots: int | None = None  # node targets open at once (default: see device_slots())
    link_faults: LinkFaults | None = None  # a fault-injecting proxy on every node's link


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


class NodeFailed(DeviceError):
    """A node's device failed for good (after its resets); other nodes' rows are kept."""


@dataclass
class _Event:
    kind: str  # "opened" (target), "batch" (rows, span), "closing" (target, link), "reset" (error)
    node: int
    target: NodeTarget | None = None
    rows: list[InferenceRow] | None = None
    span: tuple[float, float] | None = None  # host monotonic: the batch's request written, reply read
    error: BaseException | None = None
    link: dict[str, Any] | None = None


def _link_report(target: NodeTarget) -> dict[str, Any] | None:
    """The target's link counters (retries, timeouts, faults injected...), if it keeps any."""
    report = getattr(target, "link_report", None)
    return report() if callable(report) else None


def _add_counts(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Counters summed key by key, nested dicts too (one node's link over its resets)."""
    for key, value in more.items():
        if isinstance(value, dict):
            total[key] = _add_counts(dict(total.get(key) or {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        else:
            total[key] = value
    return total


class _NodeRunner:
    """Runs one node's samples on its own target, in the target's batches, resetting the target
    (relaunching an emulator, redeploying a board, reopening a session) when it fails, and
    resuming from the first sample not finished. Reports to the engine's thread through ``events``; stops between batches when asked."""

    def __init__(self, plan: RunPlan, model: ExportedModel, node: int, views: np.ndarray,
                 golden_codes: np.ndarray, samples: list[int], run_id: str,
                 events: queue.Queue[_Event], stop: threading.Event, link_faults: LinkFaults | None = None):
        self.plan, self.model, self.node = plan, model, node
        self.link_faults = link_faults
        self.profile = plan.profiles[plan.node_devices[node]]
        self.views, self.golden_codes, self.samples = views, golden_codes, samples
        self.run_id, self.events, self.stop = run_id, events, stop

    def run(self) -> None:
        pending = list(self.samples)
        resets = 0
        while pending and not self.stop.is_set():
            try:
                with injecting(self.link_faults), \
                        open_node_target(self.profile, self.model.node_models[self.node], self.model.directory) as target:
                    prepare = getattr(target, "prepare", None)  # optional (see NodeTarget)
                    if prepare is not None:
                        prepare(self.views[pending[0]])  # before t0 of any batch: outside every timed span
                    self.events.put(_Event("opened", self.node, target=target))
                    try:
                        while pending and not self.stop.is_set():
                            batch = pending[:max(1, target.batch_size)]
                            t0 = time.monotonic()
                            replies = target.infer_batch(self.views[batch])
                            t1 = time.monotonic()
                            self.events.put(_Event("batch", self.node, span=(t0, t1),
                                                   rows=[self._row(s, reply) for s, reply in zip(batch, replies)]))
                            del pending[:len(batch)]
                            resets = 0
                    finally:
                        self.events.put(_Event("closing", self.node, target=target, link=_link_report(target)))
            except BuildError:
                raise  # deterministic: another deployment would fail the same way
            except DeviceError as exc:  # as a ConfigError (a wrong profile or model), never retried
                resets += 1
                if resets > MAX_NODE_RESETS:
                    raise NodeFailed(
                        f"node {self.node} on device {self.profile.name} ({self.profile.source}) failed "
                        f"{resets} times in a row without finishing an inference; last error: {exc}. "
                        f"The {len(self.samples) - len(pending)} inferences it finished are kept: rerun "
                        "the same command to resume; check the board (cable, power, --device-slots for "
                        "emulators on a busy machine)") from exc
                self.events.put(_Event("reset", self.node, error=exc))

    def _row(self, s: int, reply: NodeReply) -> InferenceRow:
        golden_code = self.golden_codes[s].tobytes()
        return {"run_id": self.run_id, "node": self.node, "sample": s,
                "device": self.profile.name, "ticks": reply.ticks,
                "device_count": reply.device_count, "device_unit": reply.device_unit,
                "latency": reply.latency, "latency_unit": reply.latency_unit,
                "latency_basis": reply.latency_basis, "host_rtt_s": reply.host_rtt_s,
                "code": reply.code, "golden_code": golden_code, "bitexact": int(reply.code == golden_code),
                "attempts": reply.attempts, "wire_bytes_sent": reply.wire_bytes_sent,
                "wire_bytes_received": reply.wire_bytes_received}


def device_slots(emulated_nodes: int, real_nodes: int, cores: int, override: int | None = None) -> int:
    """How many node targets a run keeps open at once. Real devices each serve their own node;
    emulators share the host's cores, ``EMULATED_NODES_PER_CORE`` each unless overridden
    (``--device-slots``, ``$HILBENCH_DEVICE_SLOTS``). Nodes beyond the slots run in turn."""
    nodes = emulated_nodes + real_nodes
    if override is not None:
        return max(1, min(override, nodes))
    if emulated_nodes == 0:
        return max(1, nodes)
    return max(1, min(nodes, real_nodes + EMULATED_NODES_PER_CORE * max(1, cores)))


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
    link_faults: LinkFaults | None = None  # injected on every node's link (--link-faults)


def _check_node_profile(profile: DeviceProfile) -> None:
    if profile.kind not in NODE_TARGETS:
        raise ConfigError(f"{profile.source}: field 'kind': no node target for kind {profile.kind!r}; "
                          f"known: {', '.join(NODE_TARGETS.names())}")
    try:
        get_radio_profile(profile.radio or DEFAULT_RADIO)
    except ConfigError as exc:
        raise ConfigError(f"{profile.source}: field 'radio': {exc}") from exc
    calibrated_model(profile)


def _check_gateway_profile(profile: DeviceProfile) -> None:
    if profile.kind not in GATEWAYS:
        raise ConfigError(f"{profile.source}: device {profile.name!r} (kind {profile.kind}) cannot be a gateway; "
                          "use 'host' or a linux device")


def plan_run(exp: Experiment, options: RunOptions) -> RunPlan:
    """Validate the options, every device profile (node targets, radios, meters, the gateway)
    and the dataset; nothing is trained or deployed, so bad input fails in a moment."""
    if options.samples is not None and options.samples < 1:
        raise ConfigError(f"--samples must be at least 1 (got {options.samples})")
    if options.device_slots is not None and options.device_slots < 1:
        raise ConfigError(f"--device-slots must be at least 1 (got {options.device_slots})")
    if exp.scheme == "centralized" or not exp.code.quantized:
        raise ConfigError(f"{exp.source}: field 'scheme'/'code.bits': a device run needs quantized node "
                          f"encoders (scheme {exp.scheme!r}, q = {exp.code.bits}); centralized and float "
                          "models are host-only baselines (`hilbench train`)")
    named = exp.devices.nodes if isinstance(exp.devices.nodes, list) else [exp.devices.nodes]
    nodes_from = "--nodes-device" if options.nodes_device else f"{exp.source}: field 'devices.nodes'"
    profiles = {name: get_profile(name, named_by=nodes_from)
                for name in ([options.nodes_device] if options.nodes_device else named)}
    for profile in profiles.values():
        _check_node_profile(profile)
    gateway = options.gateway_device or exp.devices.gateway
    if gateway != "host":
        gateway_from = "--gateway-device" if options.gateway_device else f"{exp.source}: field 'devices.gateway'"
        profiles.setdefault(gateway, get_profile(gateway, named_by=gateway_from))
        _check_gateway_profile(profiles[gateway])
    for profile in profiles.values():
        preflight(profile)

    data = load_experiment_dataset(exp)
    partition = exp.partition_for(data.image_shape, data.classes)
    if options.nodes_device:
        node_devices = [options.nodes_device] * partition.nodes
    else:
        try:
            node_devices = exp.devices.node_devices(partition.nodes)
        except ValueError as exc:
            raise ConfigError(f"{exp.source}: field 'devices.nodes': {exc}") from exc
    check_meters(profiles, node_devices)
    available = len(data.test_y)
    faults = options.link_faults if options.link_faults is not None and options.link_faults.active else None
    return RunPlan(exp, node_devices, gateway, profiles, data, partition,
                   samples=min(options.samples or available, available), link_faults=faults)


def prepare(plan: RunPlan, progress: ProgressFactory | None = None) -> ExportedModel:
    """The planned experiment's model, trained or from the cache, and its export."""
    from quant_models.pipeline import get_exported

    return get_exported(plan.experiment, progress=progress, data=plan.data)


def run_key(plan: RunPlan, model: ExportedModel) -> str:
    """What identifies a run: the same key resumes (or returns) the same run."""
    key = [plan.experiment.content_hash(), model.manifest["model_hash"], plan.node_devices, plan.gateway,
           plan.samples, plan.data.fingerprint, device_code_digest()]
    if plan.link_faults is not None:  # a fault-injection run is its own run
        key.append(plan.link_faults.spec())
    meters = meter_spec_key(plan.profiles, plan.node_devices)
    if meters is not None:  # a metered run is its own run (keys of runs without a meter are unchanged)
        key.append(meters)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


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


def _slots_for(plan: RunPlan, override: int | None) -> int:
    if override is None and os.environ.get(DEVICE_SLOTS_ENV):
        try:
            override = int(os.environ[DEVICE_SLOTS_ENV])
        except ValueError:
            raise ConfigError(f"${DEVICE_SLOTS_ENV} must be a whole number (got "
                              f"{os.environ[DEVICE_SLOTS_ENV]!r})") from None
    emulated = sum(plan.profiles[name].emulated for name in plan.node_devices)
    return device_slots(emulated, len(plan.node_devices) - emulated, len(os.sched_getaffinity(0)), override)


def stream(plan: RunPlan, model: ExportedModel, store: ResultsStore, run_id: str,
           progress: ProgressFactory | None = None, slots: int | None = None,
           metering: RunMetering | None = None) -> None:
    """Deploy one target per node and stream every sample the run does not hold yet, at most
    ``slots`` nodes at once (see :func:`device_slots`), committing rows as they finish. A node
    whose device fails is reset and resumed; if it fails for good, the other nodes finish and
    every finished row is committed before the error is raised. Ctrl-C commits what finished.
    ``metering`` (started by the caller) hears of every finished batch; a meter lost mid-run
    stops the run like a failure: what finished is committed, then its error is raised."""
    views = plan.partition.views(plan.data.test_x[:plan.samples])
    golden_codes = [golden.encode_packed(enc, v) for enc, v in zip(model.node_models, views)]
    done = store.done_samples(run_id)
    todo = [[s for s in range(plan.samples) if s not in done.get(i, set())] for i in range(plan.partition.nodes)]
    nodes = [i for i in range(plan.partition.nodes) if todo[i]]
    if not nodes:
        return
    stop = threading.Event()
    events: queue.Queue[_Event] = queue.Queue()
    runners = [_NodeRunner(plan, model, i, views[i], golden_codes[i], todo[i], run_id, events, stop, plan.link_faults)
               for i in nodes]
    total = sum(len(todo[i]) for i in nodes)
    advance = progress(total, f"inference on {len(nodes)} nodes") if progress else (lambda n: None)
    resets: dict[int, list[str]] = {}
    links: dict[int, dict[str, Any]] = {}
    rows: list[InferenceRow] = []

    def commit() -> None:
        if rows:
            store.add_inferences(rows)
            advance(len(rows))
            rows.clear()

    def handle(event: _Event) -> None:
        if event.kind == "batch":
            assert event.rows is not None and event.span is not None
            rows.extend(event.rows)
            if metering is not None:
                metering.batch(event.node, event.rows, *event.span)
            if len(rows) >= BATCH * len(nodes):
                commit()
        elif event.kind in ("opened", "closing"):
            target = event.target
            assert target is not None
            if event.link is not None:
                links[event.node] = _add_counts(links.get(event.node, {}), event.link)
            store.put_node(run_id, event.node, device=target.profile.name,
                           emulated=int(target.profile.emulated), board=target.info.board,
                           flash_bytes=target.info.flash_bytes, ram_bytes=target.info.ram_bytes,
                           stack_bytes=target.info.stack_bytes, macs=target.encoder.macs,
                           model_hash=target.encoder.sha256(),
                           info={**target.info.extra, "resets": resets.get(event.node, []),
                                 **({"link": links[event.node]} if event.node in links else {})})
        elif event.kind == "reset":
            resets.setdefault(event.node, []).append(str(event.error))

    pool = ThreadPoolExecutor(_slots_for(plan, slots), thread_name_prefix="node")
    futures = {pool.submit(r.run): r for r in runners}
    try:
        while not all(f.done() for f in futures) or not events.empty():
            try:
                handle(events.get(timeout=COMMIT_SECONDS))
            except queue.Empty:
                commit()
            if metering is not None:
                metering.check()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True)
        while not events.empty():
            handle(events.get())
        commit()
        raise
    pool.shutdown(wait=True)
    commit()
    failures: dict[str, BaseException] = {}
    for future in futures:
        exc = future.exception()
        if exc is not None:
            failures.setdefault(str(exc), exc)  # nodes on one board often fail alike: say it once
    if len(failures) == 1:
        raise next(iter(failures.values()))
    if failures:
        raise DeviceError(f"{len(failures)} nodes failed:\n" + "\n".join(f"- {text}" for text in failures))


def predict(plan: RunPlan, model: ExportedModel, store: ResultsStore, run_id: str) -> None:
    """Run the head on every sample whose codes all nodes delivered (device and golden codes)."""
    encoders: list[NodeModel] = model.node_models
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
    train_codes = [golden.encode(enc, v) for enc, v in zip(model.node_models, train_views)]
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
        with open_metering(store, run_id, plan.profiles, plan.node_devices) as metering:
            stream(plan, model, store, run_id, progress, slots=options.device_slots, metering=metering)
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
