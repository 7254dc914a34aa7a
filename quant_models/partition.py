"""Node views: how one sample is split into the inputs of N nodes.

A partition is a list of rectangular windows of the image, one per node, in node order
(row-major over the grid). Specs: ``quadrants`` (2x2, the paper's 4 nodes of 14x14),
``grid:RxC`` (1x1 = one node sees everything, 4x4 = 16 nodes of 7x7) and ``strips:N:rows`` /
``strips:N:cols`` (N horizontal or vertical bands).
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


_GRID = re.compile(r"^grid:(\d+)x(\d+)$")
_STRIPS = re.compile(r"^strips:(\d+):(rows|cols)$")


def make_partition(spec: str, image_shape: tuple[int, int]) -> Partition:
    """Parse a partition spec (see module docstring) for images of ``image_shape``."""
    if spec == "quadrants":
        return _grid(spec, image_shape, 2, 2)
    if m := _GRID.match(spec):
        return _grid(spec, image_shape, int(m[1]), int(m[2]))
    if m := _STRIPS.match(spec):
        n = int(m[1])
        return _grid(spec, image_shape, n, 1) if m[2] == "rows" else _grid(spec, image_shape, 1, n)
    raise ConfigError(
        f"unknown partition {spec!r}; use 'quadrants', 'grid:RxC' (e.g. grid:4x4) or "
        f"'strips:N:rows' / 'strips:N:cols'")
