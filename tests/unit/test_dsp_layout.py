"""The DSP-kernel layout (quant_models/dsp_layout.py) and the generated code packing: pure checks
against hand-derived layouts and the golden model's arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from quant_models.codegen import pack_statements
from quant_models.dsp_layout import ConvStage, DspUnsupported, FcStage, plan_dsp, rounding_constant
from quant_models.golden import rne_shift
from quant_models.intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp, Requant
from quant_models.packing import pack_codes


@pytest.mark.parametrize("shift", [1, 2, 3, 7, 11, 20])
def test_bias_constant_then_add_bit_and_shift_rounds_half_to_even(shift: int) -> None:
    acc = np.arange(-(5 << shift), 5 << shift, dtype=np.int64)
    v = acc + rounding_constant(shift)
    kernel = (v + ((v >> shift) & 1)) >> shift  # hil_dsp_requant
    assert (kernel == rne_shift(acc, shift)).all()


def paper_like(out_ch: int = 3, code_len: int = 5) -> IntEncoder:
    weight = np.arange(out_ch * 25, dtype=np.int64).reshape(out_ch, 1, 5, 5) % 251 - 125
    conv = ConvOp(weight.astype(np.int8), np.arange(out_ch, dtype=np.int32) - 1, 2, Requant(11, 0, 255))
    fc_weight = (np.arange(code_len * out_ch * 49) % 255 - 127).astype(np.int8).reshape(code_len, out_ch * 49)
    fc = FcOp(fc_weight, np.zeros(code_len, np.int32), Requant(14, 0, 15))
    return IntEncoder(0, (14, 14), -8, (conv, MaxPoolOp(2), fc), 4, -4)


def words(stream: np.ndarray) -> list[tuple[int, int]]:
    """uint32 words as (low, high) int16 halves."""
    return [(int(np.int16(w & 0xFFFF)), int(np.int16(w >> 16))) for w in stream.astype(np.int64)]


def test_a_one_channel_5x5_convolution_reads_13_tap_pairs() -> None:
    enc = paper_like()
    conv = plan_dsp(enc).stages[0]
    assert isinstance(conv, ConvStage)
    w = enc.ops[0].weight[:, 0]
    assert (conv.tap_pairs, conv.channel_pairs, conv.windows, conv.window_groups) == (13, 2, 49, 1)
    record = words(conv.weights[:2 * 13 + 2])  # channels 0 and 1: [tap pair][channel], then the biases
    # rows' runs as pairs (taps 0-1, 2-3 of rows 0..4), then the rows' last taps paired: (0,1), (2,3), (4,-)
    expected = [(w[c, r, 2 * j], w[c, r, 2 * j + 1]) for r in range(5) for j in range(2) for c in (0, 1)]
    expected += [(w[c, r, 4], w[c, r + 1, 4] if r < 4 else 0) for r in (0, 2, 4) for c in (0, 1)]
    assert record[:26] == expected
    bias = [int(np.int32(v)) for v in conv.weights[26:28]]
    assert bias == [int(b) + rounding_constant(11) for b in enc.ops[0].bias[:2]]
    # channel 2's partner is a zero channel; the frames: 18 x 18 x 1 in, 7 x 7 x 4 (even stride) out
    assert all(pair == (0, 0) for pair in words(conv.weights[28 + 13 * 2 - 26:])[1::2][:13])
    assert (conv.source.row, conv.target.stride) == (18, 4)
    assert list(conv.origins[:8]) == [0, 1, 18, 19, 2, 3, 20, 21]  # 2x2 windows of the padded input
    assert list(conv.dests[:2]) == [0, 4]


def test_a_fully_connected_layer_reads_the_frame_order_in_steps_of_8() -> None:
    enc = paper_like(out_ch=3, code_len=5)
    fc = plan_dsp(enc).stages[1]
    assert isinstance(fc, FcStage)
    frame = fc.source  # 7 x 7 pixels x stride 4 (3 channels + a zero one)
    assert (fc.blocks, fc.steps) == (2, -(-7 * 7 * 4 // 8))
    block0 = words(fc.weights[4:4 + fc.steps * 16])
    weight = enc.ops[2].weight
    # step 0, output 0: frame elements 0..7 = pixel 0 channels 0-3, pixel 1 channels 0-3 (3: zero)
    assert block0[:4] == [(weight[0, 0], weight[0, 49]), (weight[0, 98], 0),
                          (weight[0, 1], weight[0, 50]), (weight[0, 99], 0)]
    assert frame.offset(0, 1) == 4
    outputs_5_to_7 = words(fc.weights[4 + fc.steps * 16 + 4:])
    assert all(pair == (0, 0) for s in range(fc.steps) for pair in outputs_5_to_7[s * 16 + 4:s * 16 + 16])


def test_models_the_kernels_cannot_run_exactly_are_refused_with_the_reason() -> None:
    enc = paper_like()
    conv, pool, fc = enc.ops
    huge_bias = FcOp(fc.weight, np.full(5, 2**31 - 10, np.int32), fc.requant)
    with pytest.raises(DspUnsupported, match="op 2 .*beyond int32"):
        plan_dsp(IntEncoder(0, (14, 14), -8, (conv, pool, huge_bias), 4, -4))
    wide = ConvOp(conv.weight, conv.bias, 2, Requant(2, 0, 40000))
    with pytest.raises(DspUnsupported, match="do not fit int16"):
        plan_dsp(IntEncoder(0, (14, 14), -8, (wide, pool, fc), 4, -4))
    with pytest.raises(DspUnsupported, match="does not end with a fully connected"):
        plan_dsp(IntEncoder(0, (14, 14), -8, (conv,), 4, -4))
    big = FcOp(np.ones((200, 3 * 14 * 14), np.int8), np.zeros(200, np.int32), fc.requant)  # 200 x 784 int16
    with pytest.raises(DspUnsupported, match="budget"):
        plan_dsp(IntEncoder(0, (14, 14), -8, (conv, big), 4, -4))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("code_len", [1, 3, 8, 13])
def test_straight_line_packing_equals_pack_codes(bits: int, code_len: int) -> None:
    codes = np.random.default_rng(bits * 100 + code_len).integers(0, 1 << bits, code_len)
    packed = [0] * len(pack_codes(codes, bits))
    for statement in pack_statements(code_len, bits, "codes", "packed", mask=False):
        target, expression = statement.rstrip(";").split(" = ")
        index = int(target[len("packed["):-1])
        packed[index] = eval(expression.replace("(uint8_t)", "0xFF & "), {"codes": [int(c) for c in codes]})
    assert packed == list(pack_codes(codes, bits))
