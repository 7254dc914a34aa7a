"""Multi-site sensor time series as datasets of windows: each node sees W samples of its sites.

Sources (registry ``SERIES``): ``irish-wind`` (the daily wind speeds of 12 Irish stations,
1961-1978, 6,574 days, Haslett & Raftery 1989; ``wind.rda`` from Debian's r-cran-gstat, which
``scripts/setup.sh`` extracts without installing R, read with the pure-Python ``rdata`` package
and cached as ``.npz``) and ``csv:PATH`` (a header row, a time column first, then one numeric
column per site, rows in time order).

A sample is an int8 array [sites, W]: row r is one site's window, its rows ordered node by node
as the experiment's ``partition: sites:A|B+C|...`` names them, so node views are row strips and
the image pipeline (partition windows, views, export, run engine) carries them unchanged. The
task: the value ``horizon`` samples after the window's last, at the target site, binned into K
classes by training-split quantiles. The split is chronological: training samples lie wholly
(window and target) before the split time, test windows start at or after it, so no value is
in both (the windows that would straddle it, W + horizon - 1 of them, are dropped).

Inputs reach a node as int8 codes on the LSTM's input grid (see :func:`quantize_series`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from harness.core.errors import DatasetError
from harness.core.paths import cache_root
from harness.core.registry import Registry

from .dataset_store import SETUP_HINT, Dataset, cached_arrays
from .partition import parse_site_groups

SERIES_INPUT_EXPONENT = -7
"""Input grid of series nodes: int8 codes x 2^-7, i.e. [-1, 127/128], the grid of the LSTM's
hidden state (tanh x sigmoid), which shares the LSTM's input quantizer."""


@dataclass(frozen=True)
class SiteSeries:
    """Raw readings: ``values`` float64 [T, sites] in time order, one column per site."""

    name: str
    times: np.ndarray  # [T] labels of the time steps (ISO dates or the file's own strings)
    sites: tuple[str, ...]
    values: np.ndarray
    source: str

    def columns(self, names: list[str], what: str) -> np.ndarray:
        """Indices of ``names`` among the sites; errors list the sites there are."""
        missing = [n for n in names if n not in self.sites]
        if missing:
            raise DatasetError(f"{what}: no site {', '.join(map(repr, missing))} in {self.name}; "
                               f"its sites: {', '.join(self.sites)}")
        return np.asarray([self.sites.index(n) for n in names], dtype=np.int64)


SeriesLoader = Callable[[], SiteSeries]
SERIES: Registry[SeriesLoader] = Registry("time-series dataset", entry_point_group="hilbench.series")
register_series = SERIES.register


def is_series_dataset(name: str) -> bool:
    return name.startswith("csv:") or name in SERIES


def series_names() -> list[str]:
    return SERIES.names() + ["csv:PATH"]


def load_series(name: str) -> SiteSeries:
    if name.startswith("csv:"):
        return read_csv_series(Path(name[4:]).expanduser())
    if name not in SERIES:
        raise DatasetError(f"unknown time-series dataset {name!r}; known: {', '.join(series_names())}")
    return SERIES.get(name)()


# ---- pure functions: input codes, split, classes ------------------------------------------

def quantize_series(values: np.ndarray, mean: np.ndarray, std: np.ndarray, range_stds: float,
                    exponent: int = SERIES_INPUT_EXPONENT) -> np.ndarray:
    """int8 input codes of raw readings: ``z = (value - mean) / (range_stds * std)`` with the
    training split's per-site statistics (broadcast against ``values`` [..., sites]; a constant
    site, std 0, divides by 1), then ``code = clip(round_half_even(z / 2^exponent), -128, 127)``.
    With the default exponent -7, ``range_stds`` standard deviations either side of the mean fill
    the int8 range; rarer readings saturate. Pure: a node applies the same two constants."""
    std = np.where(np.asarray(std, dtype=np.float64) > 0, std, 1.0)
    z = (np.asarray(values, dtype=np.float64) - mean) / (range_stds * std)
    return np.clip(np.rint(z * 2.0 ** -exponent), -128, 127).astype(np.int8)


def quantile_edges(train_targets: np.ndarray, classes: int) -> np.ndarray:
    """K - 1 bin edges: the training targets' k/K quantiles (numpy's linear interpolation)."""
    return np.quantile(np.asarray(train_targets, dtype=np.float64), np.arange(1, classes) / classes)


def bin_targets(targets: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class of each target: the number of edges <= it (so class k holds [edge k-1, edge k))."""
    return np.searchsorted(edges, np.asarray(targets, dtype=np.float64), side="right").astype(np.int64)


@dataclass(frozen=True)
class WindowSplit:
    """Window start indices of the training and test samples (see :func:`chronological_split`)."""

    train_starts: np.ndarray
    test_starts: np.ndarray
    split_index: int  # the first time step of the test period


def chronological_split(steps: int, window: int, horizon: int, test_fraction: float) -> WindowSplit:
    """Windows of ``window`` steps whose target lies ``horizon`` steps after their last.

    The first ``round(steps * (1 - test_fraction))`` steps are the training period: a training
    sample's window and target lie inside it; a test window starts at or after it. So no reading
    is in both splits and the ``window + horizon - 1`` windows across the boundary are dropped."""
    split = int(round(steps * (1.0 - test_fraction)))
    last_start = steps - window - horizon  # target index start + window - 1 + horizon < steps
    train = np.arange(0, max(0, split - window - horizon + 1), dtype=np.int64)
    test = np.arange(split, last_start + 1, dtype=np.int64)
    return WindowSplit(train, test, split)


def windows(values: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """[len(starts), sites, width] windows of ``values`` [T, sites]."""
    idx = starts[:, None] + np.arange(width)[None, :]
    return np.ascontiguousarray(np.transpose(values[idx], (0, 2, 1)))


# ---- the windowed dataset an experiment trains on -----------------------------------------

def node_sites(series: SiteSeries, partition: str, what: str) -> list[list[str]]:
    """The sites of each node: as the ``sites:`` partition names them, else all sites in file
    order (and the image partitions, e.g. ``strips:4:rows``, then split those rows)."""
    groups = parse_site_groups(partition)
    if groups is None:
        return [list(series.sites)]
    series.columns([s for g in groups for s in g], what)
    return groups


class WindowSpec(Protocol):
    """What windowing needs (an experiment's ``series`` settings,
    :class:`quant_models.experiment.SeriesSpec`)."""

    @property
    def window(self) -> int: ...
    @property
    def horizon(self) -> int: ...
    @property
    def target(self) -> str | None: ...
    @property
    def classes(self) -> int: ...
    @property
    def test_fraction(self) -> float: ...
    @property
    def input_range_stds(self) -> float: ...


def windowed_dataset(series: SiteSeries, spec: WindowSpec, partition: str, source: str = "<memory>") -> Dataset:
    """The dataset of ``series`` for an experiment's ``series`` settings and partition."""
    groups = node_sites(series, partition, f"{source}: field 'partition'")
    rows = [s for g in groups for s in g]
    target = spec.target or rows[0]
    target_col = int(series.columns([target], f"{source}: field 'series.target'")[0])
    steps = len(series.values)
    split = chronological_split(steps, spec.window, spec.horizon, spec.test_fraction)
    if len(split.train_starts) < spec.classes or len(split.test_starts) < 1:
        raise DatasetError(
            f"{source}: {series.name} has {steps} time steps: too few for windows of {spec.window} "
            f"(field 'series.window') and a {spec.test_fraction:.0%} test period with {spec.classes} classes")
    cols = series.columns(rows, f"{source}: field 'partition'")
    train_period = series.values[:split.split_index]
    mean, std = train_period.mean(axis=0), train_period.std(axis=0)
    codes = quantize_series(series.values, mean, std, spec.input_range_stds)[:, cols]

    def targets(starts: np.ndarray) -> np.ndarray:
        return series.values[starts + spec.window - 1 + spec.horizon, target_col]

    edges = quantile_edges(targets(split.train_starts), spec.classes)
    train_y, test_y = bin_targets(targets(split.train_starts), edges), bin_targets(targets(split.test_starts), edges)
    times = series.times
    return Dataset(
        series.name, windows(codes, split.train_starts, spec.window), train_y,
        windows(codes, split.test_starts, spec.window), test_y, spec.classes,
        source=f"{series.source}; rows {', '.join(rows)}; target {target} at +{spec.horizon} "
               f"binned into {spec.classes} training-quantile classes",
        split=f"chronological: train windows and targets in {times[0]}..{times[split.split_index - 1]}, "
              f"test windows from {times[split.split_index]} on; {len(split.train_starts)}/{len(split.test_starts)} "
              f"windows of {spec.window}; inputs int8 = (x - train mean) / ({spec.input_range_stds:g} train std) "
              f"x 2^{-SERIES_INPUT_EXPONENT}")


# ---- sources --------------------------------------------------------------------------------

GSTAT_DEB = "r-cran-gstat"
WIND_RDA_IN_DEB = "./usr/lib/R/site-library/gstat/data/wind.rda"


def wind_rda_path() -> Path:
    """Where ``scripts/setup.sh`` puts wind.rda (``$HILBENCH_WIND_RDA`` overrides)."""
    env = os.environ.get("HILBENCH_WIND_RDA")
    return Path(env) if env else cache_root() / "debian" / GSTAT_DEB / "wind.rda"


def read_wind_rda(path: Path) -> dict[str, np.ndarray]:
    """The ``wind`` data frame of gstat's wind.rda: dates and the 12 stations' daily speeds (knots)."""
    import warnings

    import rdata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about files it then fails to read
            frame = rdata.read_rda(str(path))["wind"]
    except Exception as exc:  # rdata raises assorted types on a bad file
        raise DatasetError(f"{path}: cannot read the gstat wind data ({type(exc).__name__}: {exc}); {SETUP_HINT}") from exc
    sites = [c for c in frame.columns if c not in ("year", "month", "day")]
    dates = np.array([f"{1900 + int(y)}-{int(m):02d}-{int(d):02d}"
                      for y, m, d in zip(frame["year"], frame["month"], frame["day"])], dtype="datetime64[D]")
    values = frame[sites].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise DatasetError(f"{path}: the wind data has missing readings")
    return {"dates": dates.astype(np.int64), "sites": np.array(sites), "values": values}


@register_series("irish-wind")
def load_irish_wind() -> SiteSeries:
    path = wind_rda_path()
    if not path.is_file():
        raise DatasetError(
            f"dataset 'irish-wind' needs wind.rda from the Debian package {GSTAT_DEB} at {path}; {SETUP_HINT}, "
            f"or `apt-get download {GSTAT_DEB} && dpkg-deb --fsys-tarfile {GSTAT_DEB}_*.deb | tar xO "
            f"{WIND_RDA_IN_DEB} > {path}` (no need to install R)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    a = cached_arrays(f"irish-wind-{digest}", lambda: read_wind_rda(path))
    dates = a["dates"].astype("datetime64[D]").astype(str)
    return SiteSeries("irish-wind", dates, tuple(str(s) for s in a["sites"]), a["values"],
                      source=f"Irish daily wind speeds 1961-1978 (Haslett & Raftery 1989), Debian {GSTAT_DEB} ({path})")


def read_csv_series(path: Path) -> SiteSeries:
    """A user's series: header row, time column first, one numeric column per site, no gaps."""
    import pandas as pd

    if not path.is_file():
        raise DatasetError(f"csv dataset: {path} is not a file (expected a header row, a time column, "
                           "then one column per site)")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path}: cannot read as CSV ({exc})") from exc
    if frame.shape[1] < 2 or len(frame) < 2:
        raise DatasetError(f"{path}: needs a time column and at least one site column, and at least 2 rows")
    sites = [str(c) for c in frame.columns[1:]]
    if len(set(sites)) != len(sites):
        raise DatasetError(f"{path}: site columns must have distinct names (got {sites})")
    body = frame.iloc[:, 1:]
    numeric = body.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & ~body.isna() | body.isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise DatasetError(f"{path}: row {row + 2}, column {sites[col]!r}: {body.iat[row, col]!r} is not a number "
                           "(every site needs a reading at every time step)")
    return SiteSeries(f"csv:{path}", frame.iloc[:, 0].astype(str).to_numpy(), tuple(sites),
                      numeric.to_numpy(dtype=np.float64), source=f"CSV file {path}")
