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
