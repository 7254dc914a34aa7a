"""Content-addressed cache of trained models: an unchanged experiment is never retrained.

Key = sha256(experiment content hash, dataset fingerprint, code version), where the code version
hashes the sources of this package (a change to training or model code invalidates the cache).
Each entry holds ``model.pt`` (state dict), ``metrics.json``, ``train.log`` and ``experiment.json``.
"""
from __future__ import annotations

import ast
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


def package_imports(module: str) -> set[str]:
    """``module`` and the quant_models modules it imports, transitively (read from the source:
    ``from . import x``, ``from .x import ...``, ``quant_models.x``), as file stems."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = PACKAGE_DIR / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                elif node.level == 0 and (node.module or "").startswith("quant_models."):
                    todo.append(node.module.split(".")[1])  # type: ignore[union-attr]
                elif node.level == 0 and node.module == "quant_models":
                    todo += [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("quant_models.")]
    return seen


def modules_digest(*roots: str) -> str:
    """A digest of the source of ``roots`` and every quant_models module they import."""
    h = hashlib.sha256()
    for name in sorted(set().union(*(package_imports(root) for root in roots))):
        h.update(name.encode())
        h.update((PACKAGE_DIR / f"{name}.py").read_bytes())
    return h.hexdigest()


def code_version() -> str:
    """What a trained model depends on: the training code and what it imports (model, layers,
    datasets, ...), not the export or code generation, so those can change without retraining."""
    return modules_digest("training", "cache")


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
