"""Content-addressed cache of trained models: an unchanged experiment is never retrained.

Key = sha256(experiment content hash, dataset fingerprint, code version), where the code version
hashes the sources of this package (a change to training or model code invalidates the cache).
Each entry holds ``model.pt`` (state dict), ``metrics.json``, ``train.log`` and ``experiment.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from harness.core.paths import model_cache

from .datasets import Dataset
from .experiment import Experiment
from .model import SplitModel, build_model
from .partition import Partition, make_partition

PACKAGE_DIR = Path(__file__).resolve().parent


def code_version() -> str:
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(exp: Experiment, data: Dataset) -> str:
    parts = [exp.content_hash(), data.fingerprint, code_version()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass
class CachedModel:
    key: str
    directory: Path
    model: SplitModel
    partition: Partition
    metrics: dict


def cache_dir_for(key: str, root: Path | None = None) -> Path:
    return (root or model_cache()) / key[:24]


def load_cached(exp: Experiment, data: Dataset, root: Path | None = None) -> CachedModel | None:
    key = cache_key(exp, data)
    directory = cache_dir_for(key, root)
    if not (directory / "model.pt").exists() or not (directory / "metrics.json").exists():
        return None
    partition = make_partition(exp.partition, data.image_shape)
    model = build_model(exp, partition, data.classes)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    model.eval()
    return CachedModel(key, directory, model, partition, json.loads((directory / "metrics.json").read_text()))


def store(exp: Experiment, data: Dataset, model: SplitModel, partition: Partition, metrics: dict,
          log: list[str], root: Path | None = None) -> CachedModel:
    """Write an entry atomically (temp dir, then rename), so a killed run never leaves half of one."""
    key = cache_key(exp, data)
    directory = cache_dir_for(key, root)
    tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    metrics = {**metrics, "cache_key": key, "code_version": code_version(), "dataset_fingerprint": data.fingerprint}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tmp / "train.log").write_text("\n".join(log) + "\n")
    (tmp / "experiment.yaml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return CachedModel(key, directory, model, partition, metrics)
