"""Library entry points behind ``hilbench train``, ``hilbench export`` and every user of an
experiment's deployable model (the run engine, the pytest plugin, ``devices check``, the
benchmark scripts): :func:`get_exported`."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.core import paths

from .cache import CachedModel, load_cached, modules_digest, store
from .datasets import Dataset, load_experiment_dataset
from .experiment import Experiment
from .export import ExportResult, export_model
from .intparams import IntEncoder
from .manifest import FORMAT, Manifest, has_manifest, load_int_encoders, load_manifest
from .partition import make_partition
from .training import ProgressFactory, train


@dataclass
class TrainedModel:
    cached: CachedModel
    data: Dataset
    trained_now: bool


@dataclass
class ExportedModel:
    """An experiment's trained model, exported into the shared export cache."""

    trained: TrainedModel
    directory: Path
    manifest: Manifest
    encoders: list[IntEncoder]


def get_trained_model(exp: Experiment, *, retrain: bool = False, progress: ProgressFactory | None = None,
                      cache_root: Path | None = None, data: Dataset | None = None) -> TrainedModel:
    """Load ``exp``'s model from the cache, or train and cache it (``data``: its dataset, if
    already loaded)."""
    data = data if data is not None else load_experiment_dataset(exp)
    exp.check_shape(make_partition(exp.partition, data.image_shape).nodes, data.classes)
    if not retrain and (hit := load_cached(exp, data, cache_root)) is not None:
        return TrainedModel(hit, data, trained_now=False)
    result = train(exp, data, progress)
    entry = store(exp, data, result.model, result.partition, result.metrics, result.log, cache_root)
    return TrainedModel(entry, data, trained_now=True)


def export_trained(exp: Experiment, trained: TrainedModel, out: Path) -> ExportResult:
    c = trained.cached
    return export_model(c.model, c.partition, out, experiment=exp.name, scheme=exp.scheme,
                        bits=exp.code.bits if exp.scheme != "centralized" else 8)


def export_dir_for(cache_key: str) -> Path:
    """Where the export of the trained model with this cache key lives (shared by all runs);
    a change to the export code (export and what it imports) makes a new one."""
    key = hashlib.sha256(f"{cache_key}\n{modules_digest('export')}".encode()).hexdigest()
    return paths.cache_root() / "exports" / FORMAT.replace("/", "-") / key[:24]


def get_exported(exp: Experiment, *, progress: ProgressFactory | None = None,
                 data: Dataset | None = None) -> ExportedModel:
    """``exp``'s model trained (or from the cache) and exported (or from the export cache)."""
    trained = get_trained_model(exp, progress=progress, data=data)
    directory = export_dir_for(trained.cached.key)
    if not has_manifest(directory):
        export_trained(exp, trained, directory)
    return ExportedModel(trained, directory, load_manifest(directory), load_int_encoders(directory))
