import pytest

from harness.measure.pareto import pareto_front


def test_front_of_hand_picked_points():
    costs = [256, 64, 6272, 128, 64, 512]
    values = [0.97, 0.90, 0.98, 0.89, 0.93, 0.96]
    # 64 bits: 0.93 beats 0.90; 128 bits (0.89) and 512 bits (0.96) are beaten by cheaper points
    assert pareto_front(costs, values) == [4, 0, 2]


def test_ties_keep_the_first_and_empty_input():
    assert pareto_front([1, 1, 2], [0.5, 0.5, 0.5]) == [0]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError):
        pareto_front([1], [])
