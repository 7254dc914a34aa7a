import numpy as np
import pytest

from harness.core.errors import ConfigError
from quant_models.partition import make_partition


def test_quadrants_are_the_papers_four_14x14_views():
    p = make_partition("quadrants", (28, 28))
    img = np.arange(784).reshape(1, 28, 28)
    views = p.views(img)
    assert p.nodes == 4 and all(v.shape == (1, 14, 14) for v in views)
    assert views[1][0, 0, 0] == img[0, 0, 14] and views[2][0, 0, 0] == img[0, 14, 0]
    assert (p.assemble(views) == img).all()


@pytest.mark.parametrize("spec, nodes, shape", [
    ("grid:1x1", 1, (28, 28)), ("grid:4x4", 16, (7, 7)), ("strips:4:rows", 4, (7, 28)),
    ("strips:2:cols", 2, (28, 14)),
])
def test_grids_and_strips(spec, nodes, shape):
    p = make_partition(spec, (28, 28))
    img = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    views = p.views(img)
    assert p.nodes == nodes and views[0].shape[1:] == shape
    assert (p.assemble(views) == img).all()


@pytest.mark.parametrize("spec, message", [
    ("grid:3x3", "does not divide"), ("hexagons", "unknown partition"), ("strips:5:rows", "does not divide"),
])
def test_bad_partitions(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_partition(spec, (28, 28))
