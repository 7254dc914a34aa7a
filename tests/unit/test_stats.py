import pytest

from harness.core.errors import MeasurementError
from harness.measure.stats import distribution, percentile


def test_five_numbers_by_hand():
    d = distribution([1, 2, 3, 4, 10])
    assert d.count == 5 and d.mean == 4.0 and d.minimum == 1 and d.maximum == 10
    assert d.p50 == 3.0
    assert d.p90 == pytest.approx(7.6)  # rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (10 - 4)
    assert d.p99 == pytest.approx(9.76)  # rank 3.96 -> 4 + 0.96 * 6
    assert d.stdev == pytest.approx((((1 - 4) ** 2 + 4 + 1 + 0 + 36) / 4) ** 0.5)


def test_single_value_and_empty():
    assert distribution([7]).stdev == 0.0 and percentile([7], 99) == 7
    with pytest.raises(MeasurementError):
        distribution([])
