"""Library entry points behind ``hilbench train``, ``hilbench export`` and every user of an
experiment's deployable model (the run engine, the pytest plugin, ``devices check``, the
benchmark scripts): :func:`get_exported`."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.core import paths

from . import golden
from .cache import CachedModel, load_cached, modules_digest, store
from .datasets import Dataset, load_experiment_dataset
from .experiment import Experiment
from .export import ExportResult, export_model
from .intparams import IntEncoder
from .lstm import LstmEncoder
from .model import SplitModel
from .manifest import FORMAT, Manifest, NodeModel, has_manifest, load_int_encoders, load_manifest, load_node_models
from .partition import Partition, make_partition
from .training import ProgressFactory, one_thread, train, views_as_tensors


BREVITAS_CHECK_SAMPLES = 256


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
    encoders: list[IntEncoder]  # the integer CNN encoders
    node_models: list[NodeModel]  # every quantized node's integer model, CNN or LSTM, in node order


def get_trained_model(exp: Experiment, *, retrain: bool = False, progress: ProgressFactory | None = None,
                      cache_root: Path | None = None, data: Dataset | None = None) -> TrainedModel:
    """Load ``exp``'s model from the cache, or train and cache it (``data``: its dataset, if
    already loaded)."""
    data = data if data is not None else load_experiment_dataset(exp)
    exp.check_shape(make_partition(exp.partition, data.image_shape).nodes, data.classes)
    if not retrain and (hit := load_cached(exp, data, cache_root)) is not None:
        return TrainedModel(hit, data, trained_now=False)
    result = train(exp, data, progress)
    metrics = {**result.metrics, **golden_metrics(result.model, result.partition, data.test_x, data.test_y)}
    entry = store(exp, data, result.model, result.partition, metrics, result.log, cache_root)
    return TrainedModel(entry, data, trained_now=True)


@torch.no_grad()
def golden_metrics(model: SplitModel, partition: Partition, samples: np.ndarray, labels: np.ndarray) -> dict:
    """For quantized LSTM encoders: accuracy from the integer golden model's codes (the head on
    ``(code - zero point) x scale``) and the fraction of its codes equal to Brevitas' codes on
    the first ``BREVITAS_CHECK_SAMPLES`` samples (Brevitas' QuantLSTM loops over time steps in
    Python: all 1,265 wind test windows cost ~45 s per model). Empty for other encoders (their
    golden side is checked by the run engine and tests). Kept out of training, so a change to
    the golden model retrains nothing."""
    encoders = model.node_encoders()
    if not all(isinstance(e, LstmEncoder) and e.quantized for e in encoders):
        return {}
    model.eval()
    views, tensors = partition.views(samples), views_as_tensors(partition, samples)
    ints = [e.to_integer(i) for i, e in enumerate(encoders) if isinstance(e, LstmEncoder)]
    codes = np.concatenate([golden.encode(ie, v) for ie, v in zip(ints, views)], axis=1).astype(np.int64)
    checked = slice(0, BREVITAS_CHECK_SAMPLES)
    with one_thread():  # Brevitas' QuantLSTM: small ops, see training.train
        reference = torch.cat([e.codes(t[checked]) for e, t in zip(encoders, tensors)], dim=1).numpy()
    values = (torch.from_numpy(codes).float() - model.code_zero_points()) * model.code_scales()
    pred = model.head(values).argmax(dim=1).numpy()
    return {"golden_test_accuracy": float((pred == labels).mean()),
            "golden_code_match": float((codes[checked] == reference).mean()),
            "golden_code_match_samples": int(len(reference)),
            "node_costs": [ie.costs().as_dict() for ie in ints]}


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
    return ExportedModel(trained, directory, load_manifest(directory), load_int_encoders(directory),
                         load_node_models(directory))
