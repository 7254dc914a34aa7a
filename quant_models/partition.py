"""Node views: how one sample is split into the inputs of N nodes.

A partition is a list of rectangular windows of the image, one per node, in node order
(row-major over the grid). Specs: ``quadrants`` (2x2, the paper's 4 nodes of 14x14),
``grid:RxC`` (1x1 = one node sees everything, 4x4 = 16 nodes of 7x7) and ``strips:N:rows`` /
``strips:N:cols`` (N horizontal or vertical bands).

Time series: ``sites:VAL|SHA+DUB|MAL`` names each node's sites (``|`` between nodes, ``+``
between the sites of one node). A series sample is [sites, W] with its rows in that order
(:mod:`quant_models.series`), so each node's view is a strip of whole rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from harness.core.errors import ConfigError


@dataclass(frozen=True)
class Window:
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Partition:
    spec: str
    image_shape: tuple[int, int]
    windows: tuple[Window, ...]

    @property
    def nodes(self) -> int:
        return len(self.windows)

    def view_shape(self, node: int) -> tuple[int, int]:
        w = self.windows[node]
        return (w.height, w.width)

    def views(self, images: np.ndarray) -> list[np.ndarray]:
        """Per node, the [N, h, w] block of ``images`` [N, H, W] that node sees."""
        if tuple(images.shape[-2:]) != self.image_shape:
            raise ConfigError(
                f"partition {self.spec!r} is for {self.image_shape} images, got {images.shape[-2:]}")
        return [np.ascontiguousarray(images[..., w.top:w.top + w.height, w.left:w.left + w.width])
                for w in self.windows]

    def assemble(self, views: list[np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`views`: put the node blocks back into whole images."""
        out = np.zeros(views[0].shape[:-2] + self.image_shape, dtype=views[0].dtype)
        for w, v in zip(self.windows, views):
            out[..., w.top:w.top + w.height, w.left:w.left + w.width] = v
        return out


def _grid(spec: str, shape: tuple[int, int], rows: int, cols: int) -> Partition:
    h, w = shape
    if rows < 1 or cols < 1 or h % rows or w % cols:
        raise ConfigError(
            f"partition {spec!r}: a {rows}x{cols} grid does not divide {h}x{w} images evenly")
    bh, bw = h // rows, w // cols
    windows = tuple(Window(r * bh, c * bw, bh, bw) for r in range(rows) for c in range(cols))
    return Partition(spec, shape, windows)


_SITE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_site_groups(spec: str) -> list[list[str]] | None:
    """Each node's site names of a ``sites:`` spec, or None for the other specs."""
    if not spec.startswith("sites:"):
        return None
    groups = [[s.strip() for s in node.split("+")] for node in spec[len("sites:"):].split("|")]
    names = [s for g in groups for s in g]
    if not names or not all(_SITE.match(s) for s in names):
        raise ConfigError(f"partition {spec!r}: name each node's sites as sites:A|B+C|... (site names are "
                          "letters, digits, '_', '-', '.'; '|' separates nodes, '+' the sites of one node)")
    if len(set(names)) != len(names):
        raise ConfigError(f"partition {spec!r}: a site may belong to one node only")
    return groups


def _site_rows(spec: str, shape: tuple[int, int], groups: list[list[str]]) -> Partition:
    if sum(map(len, groups)) != shape[0]:
        raise ConfigError(f"partition {spec!r} names {sum(map(len, groups))} sites but the samples have "
                          f"{shape[0]} rows (is the dataset a time series?)")
    windows, top = [], 0
    for g in groups:
        windows.append(Window(top, 0, len(g), shape[1]))
        top += len(g)
    return Partition(spec, shape, tuple(windows))


_GRID = re.compile(r"^grid:(\d+)x(\d+)$")
_STRIPS = re.compile(r"^strips:(\d+):(rows|cols)$")


def make_partition(spec: str, image_shape: tuple[int, int]) -> Partition:
    """Parse a partition spec (see module docstring) for images of ``image_shape``."""
    if spec == "quadrants":
        return _grid(spec, image_shape, 2, 2)
    if (groups := parse_site_groups(spec)) is not None:
        return _site_rows(spec, image_shape, groups)
    if m := _GRID.match(spec):
        return _grid(spec, image_shape, int(m[1]), int(m[2]))
    if m := _STRIPS.match(spec):
        n = int(m[1])
        return _grid(spec, image_shape, n, 1) if m[2] == "rows" else _grid(spec, image_shape, 1, n)
    raise ConfigError(
        f"unknown partition {spec!r}; use 'quadrants', 'grid:RxC' (e.g. grid:4x4), "
        f"'strips:N:rows' / 'strips:N:cols', or for time series 'sites:A|B+C|...'")
