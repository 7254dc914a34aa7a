"""Bits per inference: nominal, packed, entropies on hand-computable codes, real coders' round trips."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.measure import bits as b
from harness.core.errors import MeasurementError

CODES = np.array([[0, 0], [0, 1], [1, 2], [1, 3]])  # q = 2


def test_nominal_and_packed():
    assert b.nominal_bits(16, 4) == 64 and b.packed_payload_bytes(16, 4) == 8
    assert b.nominal_bits(9, 3) == 27 and b.packed_payload_bytes(9, 3) == 4   # ceil(27 / 8)


def test_entropies_by_hand():
    assert b.entropy_of_counts([1, 1]) == pytest.approx(1.0)
    assert b.entropy_of_counts([4, 0, 0]) == pytest.approx(0.0)
    np.testing.assert_allclose(b.entropy_per_position(CODES, 2), [1.0, 2.0])
    # pooled symbols 0,0,0,1,1,2,1,3 -> p = 3/8, 3/8, 1/8, 1/8
    pooled = 2 * (3 / 8) * math.log2(8 / 3) + 2 * (1 / 8) * 3
    assert b.entropy_pooled_per_symbol(CODES, 2) == pytest.approx(pooled)
    assert b.entropy_joint(CODES, 2) == pytest.approx(2.0)                    # 4 distinct vectors
    e = b.node_entropy(CODES, 2)
    assert e.per_position == pytest.approx(3.0) and e.pooled == pytest.approx(2 * pooled)
    assert e.joint_at_sample_limit                                             # log2(4) = 2: saturated
    assert not b.node_entropy(np.array([[0, 0], [0, 0], [1, 1], [1, 2]]), 2).joint_at_sample_limit


def test_bad_codes_are_refused():
    with pytest.raises(MeasurementError, match="out of range"):
        b.entropy_per_position(np.array([[4]]), 2)
    with pytest.raises(MeasurementError, match="non-empty"):
        b.entropy_per_position(np.zeros((0, 3), dtype=int), 2)


def test_fit_position_model_by_hand():
    m = b.fit_position_model(np.array([[0], [0], [0], [1]]), 1)            # (3 + .5, 1 + .5) / 5
    np.testing.assert_allclose(m.probabilities, [[0.7, 0.3]])
    unseen = b.fit_position_model(np.array([[0], [0]]), 2)                 # symbols 1..3 never seen
    assert (unseen.probabilities > 0).all()
    np.testing.assert_allclose(b.cross_entropy_bits(np.array([[1]]), m), [-math.log2(0.3)])


def _dyadic_model() -> b.PositionModel:
    p = np.array([[0.5, 0.25, 0.125, 0.125]] * 4)
    return b.PositionModel(p, bits=2, train_samples=0, smoothing=0.5)


def test_huffman_exact_lengths_and_round_trip():
    model = _dyadic_model()
    coder = b.HuffmanCoder(model)
    words, nbits = coder.encode(np.array([0, 1, 2, 3]))
    assert nbits == 1 + 2 + 3 + 3                                            # dyadic: code length = -log2 p
    np.testing.assert_array_equal(coder.decode(words), [0, 1, 2, 3])
    np.testing.assert_array_equal(b.huffman_bits(np.array([[0, 0, 0, 0], [3, 3, 3, 3]]), model), [4, 12])


def test_range_coder_round_trip_near_cross_entropy():
    rng = np.random.default_rng(0)
    model = _dyadic_model()
    codes = rng.choice(4, size=(500, 4), p=model.probabilities[0])
    words = b.range_encode(codes, model)
    np.testing.assert_array_equal(b.range_decode(words, 500, model), codes)
    ideal = b.cross_entropy_bits(codes, model).sum()
    assert ideal <= b.range_stream_bits(codes, model) <= ideal + 64


def test_zlib_and_lzma_round_trip():
    payloads = np.tile(np.arange(8, dtype=np.uint8), (50, 1))
    with_dict = b.zlib_message_bits(payloads, dictionary=payloads.tobytes())
    without = b.zlib_message_bits(payloads)
    assert (with_dict < without).all() and with_dict.shape == (50,)
    assert 0 < b.lzma_stream_bits(payloads) < payloads.size * 8


def test_bits_report_sums_nodes():
    rng = np.random.default_rng(1)
    p = [0.7, 0.1, 0.1, 0.1]
    train = [rng.choice(4, size=(400, 3), p=p) for _ in range(2)]
    test = [rng.choice(4, size=(100, 3), p=p) for _ in range(2)]
    r = b.bits_report(test, 2, train)
    assert r.nominal_bits == 2 * 6 and r.payload_bytes == 2 * 1
    assert r.entropy_bits_per_inference == pytest.approx(sum(n.entropy.per_position for n in r.nodes))
    assert r.coded_bits_per_inference == pytest.approx(r.coded["huffman"])
    assert set(r.coded) == {"huffman", "range-stream", "zlib", "lzma"}
    # a skewed source: Huffman beats the nominal 6 bits per node and stays within 1 bit/symbol of
    # the model's cross-entropy
    for n in r.nodes:
        assert n.cross_entropy_bits <= n.coded_bits("huffman") <= n.cross_entropy_bits + 3
        assert n.coded_bits("huffman") < n.nominal_bits
    no_train = b.bits_report(test, 2)
    assert no_train.coded_bits_per_inference is None and no_train.coded == {}
    with pytest.raises(MeasurementError, match="training codes"):
        b.bits_report(test, 2, train[:1])
