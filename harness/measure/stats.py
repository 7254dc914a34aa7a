"""Distribution statistics for per-inference figures (pure; no I/O)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.core.errors import MeasurementError


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float
    stdev: float
    minimum: float
    p50: float
    p90: float
    p99: float
    maximum: float


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """Linear-interpolation percentile (numpy's default, the "type 7" estimator)."""
    if len(values) == 0:
        raise MeasurementError("no values to take a percentile of")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def distribution(values: Sequence[float]) -> Distribution:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise MeasurementError("no values to summarise")
    return Distribution(count=int(arr.size), mean=float(arr.mean()),
                        stdev=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
                        minimum=float(arr.min()), p50=percentile(arr, 50), p90=percentile(arr, 90),
                        p99=percentile(arr, 99), maximum=float(arr.max()))


def rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
