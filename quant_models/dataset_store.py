"""The dataset type every loader returns, and the dataset cache (decoded arrays as ``.npz``)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.core.errors import DatasetError
from harness.core.paths import dataset_cache

SETUP_HINT = "run `scripts/setup.sh` (it installs every dataset package hilbench uses)"


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset split into train and test: uint8 images [N, H, W] (pixels), or int8
    windows [N, sites, W] of a multi-site time series (codes on the 2^-7 input grid)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int
    source: str
    split: str

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def fingerprint(self) -> str:
        """sha256 over all arrays: identifies the exact data a model was trained on."""
        h = hashlib.sha256()
        for a in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


INPUT_EXPONENTS = {np.dtype(np.uint8): -8, np.dtype(np.int8): -7}
"""What an input code is worth, by the samples' dtype: a uint8 pixel p is p x 2^-8 (so 255 is
just under 1), an int8 series code c is c x 2^-7 (see :data:`quant_models.series.SERIES_INPUT_EXPONENT`)."""


def input_exponent(samples: np.ndarray) -> int:
    """The power of two one input code is worth (``value = code x 2^exponent``)."""
    try:
        return INPUT_EXPONENTS[np.asarray(samples).dtype]
    except KeyError:
        raise DatasetError(f"samples must be uint8 pixels or int8 series codes, not {np.asarray(samples).dtype}") from None


def cached_arrays(key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays built once by ``build`` and kept as ``<dataset cache>/<key>.npz`` (written atomically)."""
    path = dataset_cache() / f"{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    # numpy's stub: a **dict of arrays could also fill its `allow_pickle: bool` keyword
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return arrays
