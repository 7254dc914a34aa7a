"""Brevitas quantizer choices that make integer-only inference exact.

Every scale is a power of two, so requantization is an arithmetic shift: int8 narrow-range
weights (Int8WeightPerTensorFixedPoint), int32 biases at the accumulator scale (Int32Bias),
unsigned activations with a learned power-of-two scale initialised from a fixed max
(Uint8ActPerTensorFixedPointMaxInit: no statistics-collection phase, whose non-power-of-two
scales and collapses the notes warn about) and pixels fed as ``pixel / 256`` through a constant
2^-8 input quantizer, so the input code is the raw uint8 pixel.
"""
from __future__ import annotations

import brevitas.nn as qnn
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPointMaxInit
from brevitas.quant.fixed_point import Int8ActPerTensorFixedPointMinMaxInit

PIXEL_EXPONENT = -8  # input scale 2^-8: code == raw pixel
MIN_ACT_SCALE = 2.0 ** -16  # floor on learned activation scales, so none can collapse


class PixelQuant(Uint8ActPerTensorFixedPointMaxInit):
    """Constant scale 2^-8 = (255/256) / 255: the input code is the raw uint8 pixel."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 255 / 256
    max_val = 255 / 256


class ActQuant(Uint8ActPerTensorFixedPointMaxInit):
    scaling_min_val = MIN_ACT_SCALE


def pixel_input() -> qnn.QuantIdentity:
    return qnn.QuantIdentity(act_quant=PixelQuant, return_quant_tensor=True)


def quant_conv(in_ch: int, out_ch: int, kernel: int, padding: int) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(in_ch, out_ch, kernel, padding=padding, bias=True,
                           weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias,
                           return_quant_tensor=True)


def quant_linear(in_f: int, out_f: int) -> qnn.QuantLinear:
    return qnn.QuantLinear(in_f, out_f, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                           bias_quant=Int32Bias, return_quant_tensor=True)


def quant_relu(bits: int, max_val: float) -> qnn.QuantReLU:
    return qnn.QuantReLU(act_quant=ActQuant, bit_width=bits, max_val=max_val,
                         return_quant_tensor=True)


# ---- LSTM encoders (time series) ------------------------------------------------------------
# brevitas.nn.QuantLSTM with every scale a power of two (see quant_models.lstm): int8 x/h on a
# constant 2^-7 grid (the series input codes, and tanh x sigmoid in (-1, 1)); each gate's
# pre-activation int8 on a learned grid initialised to +-8 (2^-4); sigmoid outputs uint8 fixed at
# 2^-8 and tanh outputs int8 fixed at 2^-7 (learned output scales drift and lose levels); the
# cell state int8 on a learned grid initialised to +-4 (2^-5). Scales start from these known
# ranges: runtime statistics count one call per time step, see tiny early h values and pick
# ranges so small that training stalls.

LSTM_IO_EXPONENT = -7
SIGMOID_EXPONENT = -8
TANH_EXPONENT = -7
GATE_INIT_EXPONENT = -4
CELL_INIT_EXPONENT = -5


class LstmIoQuant(Int8ActPerTensorFixedPointMinMaxInit):
    """Constant 2^-7 = (127/128) / 127: int8 codes x 2^-7, in [-1, 127/128]."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 127 / 128
    min_val = -1.0
    max_val = 127 / 128


class SigmoidOutQuant(Uint8ActPerTensorFixedPointMaxInit):
    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 255 / 256
    max_val = 255 / 256


class TanhOutQuant(LstmIoQuant):
    pass


class LearnedSignedQuant(Int8ActPerTensorFixedPointMinMaxInit):
    scaling_min_val = MIN_ACT_SCALE


def _signed_max(exponent: int, bits: int = 8) -> float:
    """The max_val whose initial power-of-two scale is exactly 2^exponent (max / (2^(b-1) - 1))."""
    return 2.0 ** exponent * ((1 << (bits - 1)) - 1)


def quant_lstm(input_size: int, hidden_size: int) -> qnn.QuantLSTM:
    """One QuantLSTM layer (batch first) with the quantizers above."""
    gate_max, cell_max = _signed_max(GATE_INIT_EXPONENT), _signed_max(CELL_INIT_EXPONENT)
    return qnn.QuantLSTM(
        input_size, hidden_size, batch_first=True, weight_quant=Int8WeightPerTensorFixedPoint,
        bias_quant=Int32Bias, io_quant=LstmIoQuant, gate_acc_quant=LearnedSignedQuant,
        sigmoid_quant=SigmoidOutQuant, tanh_quant=TanhOutQuant, cell_state_quant=LearnedSignedQuant,
        gate_acc_min_val=-gate_max - 2.0 ** GATE_INIT_EXPONENT, gate_acc_max_val=gate_max,
        cell_state_min_val=-cell_max - 2.0 ** CELL_INIT_EXPONENT, cell_state_max_val=cell_max)


def code_quant(bits: int) -> qnn.QuantIdentity:
    """Signed q-bit codes of the final hidden state, learned power-of-two scale starting at
    2^-(q-1) (so the q-bit range covers [-1, 1))."""
    return qnn.QuantIdentity(act_quant=LearnedSignedQuant, bit_width=bits, min_val=-1.0,
                             max_val=_signed_max(-(bits - 1), bits), return_quant_tensor=True)
