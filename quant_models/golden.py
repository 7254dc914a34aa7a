"""The golden model: integer-only node encoder inference in numpy.

int32 accumulation, arithmetic shifts with round-half-to-even (what torch.round and ONNX
QuantizeLinear do; half-up rounding gets thousands of intermediate codes wrong because ties are
common right after the conv ReLU), clip, max-pool on codes. Every lowering (ONNX, generated C,
firmware) is compared with this, bit for bit.
"""
from __future__ import annotations

from functools import singledispatch

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from harness.core.errors import ModelError

from .intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp, Requant
from .packing import pack_codes

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def rne_shift(acc: np.ndarray, shift: int) -> np.ndarray:
    """acc * 2^-shift rounded half to even (shift > 0), or acc << -shift (shift <= 0)."""
    acc = np.asarray(acc, dtype=np.int64)
    if shift <= 0:
        return acc << -shift
    floor = acc >> shift  # arithmetic: rounds toward -inf
    rem = acc - (floor << shift)
    half = 1 << (shift - 1)
    round_up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + round_up


def requantize(acc: np.ndarray, rq: Requant) -> np.ndarray:
    return np.clip(rne_shift(acc, rq.shift), rq.clip_min, rq.clip_max)


def _check_int32(acc: np.ndarray, what: str) -> np.ndarray:
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ModelError(f"{what}: accumulator leaves int32 ({acc.min()}..{acc.max()})")
    return acc


@singledispatch
def apply_op(op, x: np.ndarray) -> np.ndarray:
    raise ModelError(f"the golden model has no rule for {type(op).__name__}")


@apply_op.register
def _conv(op: ConvOp, x: np.ndarray) -> np.ndarray:
    """x: int codes [B, C, H, W] -> [B, O, H', W']."""
    p, k = op.padding, op.weight.shape[-1]
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)))
    patches = sliding_window_view(padded, (k, k), axis=(2, 3))  # [B, C, H', W', k, k]
    acc = np.einsum("bchwij,ocij->bohw", patches, op.weight.astype(np.int64), optimize=True)
    acc = _check_int32(acc + op.bias.astype(np.int64)[None, :, None, None], "conv")
    return requantize(acc, op.requant)


@apply_op.register
def _maxpool(op: MaxPoolOp, x: np.ndarray) -> np.ndarray:
    b, c, h, w = x.shape
    s = op.size
    x = x[:, :, :h // s * s, :w // s * s].reshape(b, c, h // s, s, w // s, s)
    return x.max(axis=(3, 5))


@apply_op.register
def _fc(op: FcOp, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1).astype(np.int64)
    acc = _check_int32(flat @ op.weight.astype(np.int64).T + op.bias.astype(np.int64), "fc")
    return requantize(acc, op.requant)


def encode(encoder: IntEncoder, pixels: np.ndarray) -> np.ndarray:
    """Codes uint8 [B, k] of uint8 views [B, h, w] (the input code is the pixel itself)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or tuple(pixels.shape[1:]) != tuple(encoder.input_shape):
        raise ModelError(f"node {encoder.node} expects uint8 views {tuple(encoder.input_shape)}, "
                         f"got {pixels.dtype} {tuple(pixels.shape[1:])}")
    x = pixels[:, None].astype(np.int64)
    for op in encoder.ops:
        x = apply_op(op, x)
    return x.astype(np.uint8)


def encode_packed(encoder: IntEncoder, pixels: np.ndarray) -> np.ndarray:
    """The exact bytes node ``encoder.node`` transmits for each view: uint8 [B, payload]."""
    return pack_codes(encode(encoder, pixels), encoder.code_bits)
