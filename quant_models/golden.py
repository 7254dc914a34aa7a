"""The golden model: integer-only node encoder inference in numpy (CNN and LSTM encoders).

int32 accumulation, arithmetic shifts with round-half-to-even (what torch.round and ONNX
QuantizeLinear do; half-up rounding gets thousands of intermediate codes wrong because ties are
common right after the conv ReLU), clip, max-pool on codes. Every lowering (ONNX, generated C,
firmware) is compared with this, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from harness.core.errors import ModelError

from .intlstm import IntLstmEncoder, IntLstmLayer
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


def encode(encoder: IntEncoder | IntLstmEncoder, pixels: np.ndarray) -> np.ndarray:
    """Codes uint8 [B, k] of uint8 views [B, h, w] (the input code is the pixel itself); an LSTM
    encoder takes int8 windows (:func:`encode_lstm`)."""
    if isinstance(encoder, IntLstmEncoder):
        return encode_lstm(encoder, pixels)
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or tuple(pixels.shape[1:]) != tuple(encoder.input_shape):
        raise ModelError(f"node {encoder.node} expects uint8 views {tuple(encoder.input_shape)}, "
                         f"got {pixels.dtype} {tuple(pixels.shape[1:])}")
    x = pixels[:, None].astype(np.int64)
    for op in encoder.ops:
        x = apply_op(op, x)
    return x.astype(np.uint8)


def encode_packed(encoder: IntEncoder | IntLstmEncoder, pixels: np.ndarray) -> np.ndarray:
    """The exact bytes node ``encoder.node`` transmits for each view: uint8 [B, payload]."""
    return pack_codes(encode(encoder, pixels), encoder.code_bits)


# ---- LSTM encoders (quant_models.intlstm gives the arithmetic) ------------------------------
# Step by step as the spec in quant_models.intlstm: int32 accumulators, shifts with round half to
# even, 256-entry tables, inner saturations. Bit-exact with Brevitas' QuantLSTM on every step's
# hidden state and on the codes (tests/models/test_lstm.py).

def _sat8(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -128, 127)


@dataclass(frozen=True)
class LayerTrace:
    """One layer over a batch of windows: h [B, T, H] of every step, final c [B, H] (int codes)."""

    hidden: np.ndarray
    cell: np.ndarray


def run_layer(layer: IntLstmLayer, x: np.ndarray) -> LayerTrace:
    """Run one layer over int8 inputs ``x`` [B, T, I] (any integer dtype)."""
    x = np.asarray(x, dtype=np.int64)
    batch, steps, _ = x.shape
    hsz = layer.hidden_size
    wx = layer.weight_x.astype(np.int64).reshape(4 * hsz, -1)
    wh = layer.weight_h.astype(np.int64).reshape(4 * hsz, -1)
    bias = layer.bias.astype(np.int64).reshape(4 * hsz)
    tables = [t.astype(np.int64) for t in layer.gate_tables()]
    cell_tanh = layer.cell_tanh_table().astype(np.int64)
    x_acc = x @ wx.T  # [B, T, 4H]: the input half of every step's accumulator at once
    h = np.zeros((batch, hsz), dtype=np.int64)
    c = np.zeros((batch, hsz), dtype=np.int64)
    hidden = np.empty((batch, steps, hsz), dtype=np.int64)
    for t in range(steps):
        acc = x_acc[:, t] + h @ wh.T + bias
        if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
            raise ModelError(f"LSTM step {t}: accumulator leaves int32")
        acc = acc.reshape(batch, 4, hsz)
        i, f, g, o = (tables[k][_sat8(rne_shift(acc[:, k], layer.gate_shifts[k])) + 128] for k in range(4))
        fc = _sat8(rne_shift(f * c, layer.forget_product_shift))
        ig = _sat8(rne_shift(i * g, layer.cell_product_shift))
        c = _sat8(fc + ig)
        h = _sat8(rne_shift(o * cell_tanh[c + 128], layer.hidden_shift))
        hidden[:, t] = h
    return LayerTrace(hidden, c)


def as_sequence(encoder: IntLstmEncoder, windows: np.ndarray) -> np.ndarray:
    """int8 windows [B, rows, W] (or their two's-complement bytes as uint8) -> int64 [B, W, rows]."""
    windows = np.asarray(windows)
    if windows.dtype == np.uint8:
        windows = windows.view(np.int8)
    if windows.dtype != np.int8 or windows.ndim != 3 or tuple(windows.shape[1:]) != tuple(encoder.input_shape):
        raise ModelError(f"node {encoder.node} expects int8 windows {tuple(encoder.input_shape)}, "
                         f"got {windows.dtype} {tuple(windows.shape[1:])}")
    return np.transpose(windows, (0, 2, 1)).astype(np.int64)


def trace(encoder: IntLstmEncoder, windows: np.ndarray) -> list[LayerTrace]:
    """Every layer's per-step hidden states and final cell state for ``windows``."""
    x = as_sequence(encoder, windows)
    out = []
    for layer in encoder.layers:
        out.append(run_layer(layer, x))
        x = out[-1].hidden
    return out


def codes_of_hidden(encoder: IntLstmEncoder, h_last: np.ndarray) -> np.ndarray:
    """Offset-binary q-bit codes of the last layer's final h (int8 codes x 2^-7)."""
    half = encoder.code_zero_point
    signed = np.clip(rne_shift(np.asarray(h_last, dtype=np.int64), encoder.code_shift), -half, half - 1)
    return (signed + half).astype(np.uint8)


def encode_lstm(encoder: IntLstmEncoder, windows: np.ndarray) -> np.ndarray:
    """Codes uint8 [B, k] (offset binary) of int8 windows [B, rows, W]."""
    return codes_of_hidden(encoder, trace(encoder, windows)[-1].hidden[:, -1])
