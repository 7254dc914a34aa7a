import numpy as np

from quant_models.golden import apply_op, requantize, rne_shift
from quant_models.intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp, Requant


def test_round_half_to_even_by_hand():
    # x / 2: -1.5 -> -2, -1 -> -1, -0.5 -> 0, 0.5 -> 0, 1 -> 1, 1.5 -> 2, 2.5 -> 2, 3 -> 3, 3.5 -> 4
    acc = np.array([-3, -2, -1, 1, 2, 3, 5, 6, 7])
    assert rne_shift(acc, 1).tolist() == [-2, -1, 0, 0, 1, 2, 2, 3, 4]
    # x / 4: 1.5 -> 2, 2.5 -> 2, 3.5 -> 4, -1.5 -> -2, -2.5 -> -2, 1.25 -> 1, 1.75 -> 2
    assert rne_shift(np.array([6, 10, 14, -6, -10, 5, 7]), 2).tolist() == [2, 2, 4, -2, -2, 1, 2]


def test_left_shift_and_clip():
    assert rne_shift(np.array([3, -3]), -2).tolist() == [12, -12]
    assert requantize(np.array([-40, 7, 200]), Requant(2, 0, 15)).tolist() == [0, 2, 15]


def test_conv_pool_fc_by_hand():
    x = np.arange(16, dtype=np.int64).reshape(1, 1, 4, 4)
    conv = ConvOp(np.ones((1, 1, 3, 3), np.int8), np.array([1], np.int32), 1, Requant(0, 0, 255))
    y = apply_op(conv, x)
    assert y[0, 0, 0, 0] == 0 + 1 + 4 + 5 + 1  # corner: 4 pixels + bias
    assert y[0, 0, 1, 1] == sum(range(0, 3)) + sum(range(4, 7)) + sum(range(8, 11)) + 1
    pooled = apply_op(MaxPoolOp(2), y)
    assert pooled.shape == (1, 1, 2, 2) and pooled[0, 0, 0, 0] == y[0, 0, :2, :2].max()
    fc = FcOp(np.array([[1, -1, 0, 2]], np.int8), np.array([0], np.int32), Requant(1, 0, 15))
    flat = pooled.reshape(1, -1)
    expected = min(15, max(0, int(rne_shift(flat @ np.array([1, -1, 0, 2]), 1)[0])))
    assert apply_op(fc, pooled).tolist() == [[expected]]


def test_int_encoder_json_round_trip_and_hash(tmp_path):
    enc = IntEncoder(2, (4, 4), -8, (
        ConvOp(np.arange(9, dtype=np.int8).reshape(1, 1, 3, 3), np.array([-5], np.int32), 1, Requant(3, 0, 255)),
        MaxPoolOp(2),
        FcOp(np.arange(-8, 0, dtype=np.int8).reshape(2, 4), np.array([1, 2], np.int32), Requant(4, 0, 1)),
    ), code_bits=1, code_exponent=-1)
    enc.save(tmp_path / "e.json")
    back = IntEncoder.load(tmp_path / "e.json")
    assert back.sha256() == enc.sha256()
    assert back.code_len == 2 and back.macs == 16 * 9 + 8
    other = IntEncoder(2, (4, 4), -8, back.ops[:2] + (FcOp(back.ops[2].weight, np.array([1, 3], np.int32),
                                                          back.ops[2].requant),), 1, -1)
    assert other.sha256() != enc.sha256()
