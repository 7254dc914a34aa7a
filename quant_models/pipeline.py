"""Library entry points behind ``hilbench train`` and ``hilbench export``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import CachedModel, load_cached, store
from harness.errors import DatasetError

from .datasets import Dataset, load_dataset
from .experiment import Experiment
from .export import ExportResult, export_model
from .partition import make_partition
from .training import ProgressFactory, train


@dataclass
class TrainedModel:
    cached: CachedModel
    data: Dataset
    trained_now: bool


def get_trained_model(exp: Experiment, *, retrain: bool = False, progress: ProgressFactory | None = None,
                      cache_root: Path | None = None) -> TrainedModel:
    """Load ``exp``'s model from the cache, or train and cache it."""
    try:
        data = load_dataset(exp.dataset)
    except DatasetError as exc:
        raise DatasetError(f"{exp.source}: field 'dataset': {exc}") from exc
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
