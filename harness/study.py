"""The study engine: every point of a study trained once, exported, run on its devices through the
run engine (or evaluated on the host where no device can run it), one table row per point.

Steps: plan (every point validated, and every device point planned by the run engine, before
anything trains), schedule (points that share a trained model form one task, so a model is
trained once and never by two workers at the same time; finished points are skipped), run the
tasks on Dask distributed (a LocalCluster sized to the machine, or a scheduler's address), and
record each point's row as its task ends. Emulated boards are a worker resource
(:data:`EMULATED_BOARDS`), so a worker never boots more boards than it can serve; a real board is
held with a cluster-wide lock, so it serves one task at a time. A failed point is recorded with its
reason and the study goes on; running the study again runs only the points that have not finished
(and, when asked, the failed ones again).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pandas as pd

from harness.config.profiles import get_profile
from harness.config.studies import Point, Study
from harness.core.errors import ConfigError
from harness.run import RunOptions, plan_run
from harness.store.results import ResultsStore

EMULATED_BOARDS = "emulated_boards"
BOARDS_PER_WORKER = 4  # one 4-node point of emulated boards at a time per worker (2 cores each)
HOST_BASIS = "host: Brevitas on the full test split (no device can run float codes or raw pixels)"


@dataclass(frozen=True)
class PointPlan:
    """A point ready to run: where its device run goes, and what it holds while it runs."""

    study: str
    position: int
    key: str
    label: str
    overrides: dict[str, Any]
    experiment: dict[str, Any]  # the validated experiment as data (it travels to a worker)
    source: str
    model_key: str  # the experiment's content hash: points that share it share a trained model
    on_device: bool
    options: RunOptions | None
    emulated_boards: int = 0
    real_devices: tuple[str, ...] = ()


@dataclass
class StudyTask:
    """The points that share one trained model, run one after the other by one worker."""

    points: list[PointPlan] = field(default_factory=list)

    @property
    def emulated_boards(self) -> int:
        return max((p.emulated_boards for p in self.points), default=0)

    @property
    def real_devices(self) -> tuple[str, ...]:
        return tuple(sorted({d for p in self.points for d in p.real_devices}))


def point_key(point: Point, on_device: bool, options: RunOptions | None) -> str:
    """What identifies a point's result across studies: the model and where it ran."""
    where = None if options is None else [options.nodes_device, options.gateway_device, options.samples]
    return hashlib.sha256(json.dumps([point.experiment.content_hash(), on_device, where,
                                      point.experiment.devices.model_dump(mode="json")]).encode()).hexdigest()[:32]


def plan_study(study: Study) -> list[PointPlan]:
    """Validate every point: device points through the run engine's plan (profiles, radios,
    meters, gateway, dataset and node counts), so a bad device fails before any training."""
    for field, device in (("run.nodes_device", study.run.nodes_device), ("run.gateway", study.run.gateway)):
        if device not in (None, "host"):
            get_profile(device, named_by=f"{study.source}: field {field!r}")
    plans = []
    for position, point in enumerate(study.points):
        exp = point.experiment
        on_device = exp.scheme != "centralized" and exp.code.quantized
        options = None
        boards = 0
        real: tuple[str, ...] = ()
        if on_device:
            options = RunOptions(nodes_device=study.run.nodes_device, gateway_device=study.run.gateway,
                                 samples=study.run.samples)
            try:
                run_plan = plan_run(exp, options)
            except ConfigError as exc:  # an experiment's error names the study and point already
                where = "" if str(exc).startswith(exp.source) else f"{study.source}: point {point.label}: "
                raise ConfigError(f"{where}{exc}") from exc
            profiles = [run_plan.profiles[name] for name in run_plan.node_devices]
            boards = sum(1 for p in profiles if p.emulated and p.kind == "mcu")
            real = tuple(sorted({p.name for p in run_plan.profiles.values() if not p.emulated}))
        # only the fields set: a dump of every field does not parse back where fields exclude
        # each other (an LSTM encoder's 'lstm' and a CNN's default 'layers')
        experiment = exp.model_dump(mode="json", exclude_unset=True)
        plans.append(PointPlan(study.name, position, point_key(point, on_device, options), point.label,
                               point.overrides, experiment, exp.source, exp.content_hash(),
                               on_device, options, boards, real))
    return plans


def schedule(plans: list[PointPlan], done: set[str]) -> list[StudyTask]:
    """Tasks for the points not done, one per trained model."""
    groups: dict[str, StudyTask] = defaultdict(StudyTask)
    for plan in plans:
        if plan.key not in done:
            groups[plan.model_key].points.append(plan)
    return list(groups.values())


# ---- what runs in a worker ------------------------------------------------------------------

def _experiment_of(plan: PointPlan):
    from quant_models.experiment import parse_experiment

    return parse_experiment(dict(plan.experiment), plan.source)


def _node_mean(nodes: list[dict], key: str) -> float | None:
    values = [n[key] for n in nodes if n.get(key) is not None]
    return float(sum(values) / len(values)) if values else None


def _node_max(nodes: list[dict], key: str) -> int | None:
    values = [n[key] for n in nodes if n.get(key) is not None]
    return int(max(values)) if values else None


def point_row(plan: PointPlan, metrics: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Any]:
    """The point's table row from its training metrics and, for a device point, its run summary."""
    exp = _experiment_of(plan)
    row: dict[str, Any] = {
        "scheme": exp.scheme, "code_values": exp.code.values, "code_bits": str(exp.code.bits),
        "dataset": exp.dataset, "partition": exp.partition,
        "golden_accuracy_full": metrics.get("test_accuracy"), "test_samples": metrics.get("test_samples"),
        "bits_per_inference": exp.code.values * exp.code.bits_per_value if exp.scheme != "centralized"
        else metrics.get("raw_bits_per_inference"),
        "epochs": exp.training.epochs,
    }
    if summary is None:
        row |= {"basis": HOST_BASIS, "accuracy": metrics.get("test_accuracy")}
        return row
    nodes = summary["nodes"]
    energy = summary.get("energy") or {}
    row |= {
        "basis": "device codes: " + "; ".join(sorted({n["latency"]["basis"] for n in nodes})),
        "run_id": summary["run_id"], "device_samples": summary["samples"],
        "accuracy": summary["accuracy"], "golden_accuracy": summary["golden_accuracy"],
        "bitexact_rate": summary["bitexact_rate"], "bits_per_inference": summary["bits_per_inference"],
        "entropy_bits_per_inference": summary.get("entropy_bits_per_inference"),
        "coded_bits_per_inference": summary.get("coded_bits_per_inference"),
        "node_instructions_per_inference": _node_mean(nodes, "instructions_per_inference"),
        "node_cycles_per_inference": _node_mean(nodes, "cycles_per_inference"),
        "flash_bytes": _node_max(nodes, "flash_bytes"), "ram_bytes": _node_max(nodes, "ram_bytes"),
        "compute_energy_uj": energy.get("compute_uj"), "radio_energy_uj": energy.get("radio_uj"),
        "energy_basis": json.dumps(energy.get("basis")) if energy.get("basis") is not None else None,
    }
    return row


def run_task(task: StudyTask, db: str) -> list[dict[str, Any]]:
    """Train (or load) the task's model once, then run each point; one result per point, a
    failure recorded with its reason."""
    from contextlib import ExitStack

    from quant_models.pipeline import get_trained_model

    from harness.run import run_experiment

    results = []
    metrics: dict[str, Any] | None = None
    for plan in task.points:
        started = time.monotonic()
        try:
            exp = _experiment_of(plan)
            if metrics is None:
                trained = get_trained_model(exp)
                h, w = trained.data.image_shape
                metrics = dict(trained.cached.metrics) | {"raw_bits_per_inference": 8 * h * w}
            summary = None
            if plan.on_device:
                assert plan.options is not None
                with ExitStack() as stack:
                    for device in plan.real_devices:  # one task at a time on a real board
                        stack.enter_context(_device_lock(device))
                    summary = dict(run_experiment(exp, ResultsStore(db), plan.options))
            results.append({"key": plan.key, "status": "complete", "reason": None,
                            "row": point_row(plan, metrics, summary), "wall_s": time.monotonic() - started})
        except Exception as exc:  # a failed point is recorded and the study goes on
            results.append({"key": plan.key, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                            "row": {}, "wall_s": time.monotonic() - started})
    return results


def _device_lock(device: str) -> Any:
    from distributed import Lock
    from distributed.worker import get_worker

    try:
        get_worker()
    except ValueError:  # not on a Dask worker (run in process): nothing else can hold the board
        from contextlib import nullcontext

        return nullcontext()
    return Lock(f"hilbench-device-{device}")


# ---- the study --------------------------------------------------------------------------------

def open_client(workers: int | None = None, scheduler: str | None = None) -> Any:
    """A Dask client: on ``scheduler`` (``tcp://host:8786``) or on a LocalCluster of ``workers``
    processes (default: one per core), each offering :data:`BOARDS_PER_WORKER` emulated boards."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler)
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           resources={EMULATED_BOARDS: BOARDS_PER_WORKER})
    return Client(cluster)


def run_study(study: Study, store: ResultsStore, *, workers: int | None = None, scheduler: str | None = None,
              retry_failed: bool = False,
              progress: Callable[[int, str], Callable[[int], None]] | None = None) -> pd.DataFrame:
    """Run every point not finished yet (complete, or failed unless ``retry_failed``); the study
    table (one row per point, file order)."""
    plans = plan_study(study)
    store.put_study_points(study.name, [(p.position, p.key, p.label, p.overrides) for p in plans])
    done = store.finished_study_points(study.name, ("complete",) if retry_failed else ("complete", "failed"))
    tasks = schedule(plans, done)
    advance = progress(sum(len(t.points) for t in tasks), f"study {study.name}") if progress and tasks else None
    if tasks:
        for results in _execute(tasks, str(store.path), workers, scheduler):
            for result in results:
                store.set_study_point(study.name, result["key"], result["status"], result["reason"],
                                      result["row"], result["wall_s"])
            if advance:
                advance(len(results))
    return study_table(store, study)


WAIT_SECONDS = 1.0  # the longest the main thread blocks, so Ctrl-C is seen at once


def _execute(tasks: list[StudyTask], db: str, workers: int | None, scheduler: str | None) -> Iterator[list[dict]]:
    from distributed import wait

    with open_client(workers, scheduler) as client:
        cluster = getattr(client, "cluster", None)
        futures = [client.submit(run_task, task, db, key=f"hilbench-study-{task.points[0].key}",
                                 resources={EMULATED_BOARDS: task.emulated_boards} if task.emulated_boards else None,
                                 pure=False)
                   for task in tasks]
        pending = set(futures)
        try:
            while pending:
                # A blocking wait would keep Ctrl-C from the main thread: a signal that lands on
                # one of Dask's threads interrupts nothing until a point finishes.
                try:
                    done, pending = wait(pending, timeout=WAIT_SECONDS, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in futures:
                    if future in done:
                        yield future.result()
        except BaseException:
            client.cancel(list(pending))  # finished points are in the store; the rest rerun next time
            raise
    if cluster is not None:
        cluster.close()


def study_table(store: ResultsStore, study: Study) -> pd.DataFrame:
    """One row per point of ``study``: its varied fields, status, reason and figures."""
    frame = store.study_points(study.name)
    keep = {(p.label) for p in study.points}
    frame = frame[frame.label.isin(keep)].reset_index(drop=True)
    overrides = pd.DataFrame([json.loads(o) for o in frame.overrides], index=frame.index)
    rows = pd.DataFrame([json.loads(r) if isinstance(r, str) and r else {} for r in frame.row], index=frame.index)
    for column in [c for c in rows.columns if c in overrides.columns]:  # a field only some points override
        overrides[column] = overrides[column].where(overrides[column].notna(), rows[column])
        rows = rows.drop(columns=column)
    table = pd.concat([frame[["label"]], overrides, frame[["status", "reason"]], rows, frame[["wall_s"]]], axis=1)
    return table

