"""The Pareto front of (cost, value) points: the points no other point beats on both."""
from __future__ import annotations

from typing import Sequence


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices of the points on the front (lower cost and higher value are better), by cost.

    A point is on the front when every point that costs no more is worth less; of points with the
    same cost and value, the first one given is kept."""
    if len(costs) != len(values):
        raise ValueError(f"{len(costs)} costs for {len(values)} values")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -values[i], i))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if values[i] > best:
            front.append(i)
            best = values[i]
    return front
