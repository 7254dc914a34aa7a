"""hilbench device-side integer LSTM: a node's quantized LSTM encoder in numpy.

onnxruntime cannot run Brevitas' QuantLSTM (neither QCDQ nor QONNX carries a quantized LSTM
cell), so a Linux node runs the integer model itself. Deployed next to ``hil_runner.py``, which
imports it for LSTM nodes; it needs only numpy and the standard library, and reads the export's
``nodeI.int.json`` (format ``hilbench-int-lstm/1``) without the harness.

The arithmetic is the format's spec (quant_models/intlstm.py, restated so this file stands
alone). Per layer, step and unit, from h = c = 0, gates in the order i, f, g, o:

    acc[g] = Wx[g] . x + Wh[g] . h + bias[g]                  (integers; |acc| < 2^31)
    a[g]   = sat8(rne(acc[g], gate_shifts[g]))
    i, f, o = sigmoid tables[a + 128] (uint8 x 2^-8);   g = tanh table[a + 128] (int8 x 2^-7)
    c      = sat8(sat8(rne(f * c, 8)) + sat8(rne(i * g, cell_product_shift)))
    h      = sat8(rne(o * cell_tanh[c + 128], 8))
    code   = clip(rne(h_last, code_shift), -2^(q-1), 2^(q-1) - 1) + code_zero_point

``rne(v, s)``: v x 2^-s rounded half to even (s > 0), v << -s (s <= 0); ``sat8``: clip to
[-128, 127]. Tables come from the file (256 entries indexed by the int8 value + 128).

Vectorised over the batch: the matrix products run in float64, which holds every integer below
2^53 exactly, so any summation order gives the int32 accumulator bit for bit; the loader refuses
a model whose accumulator could leave int32.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

FORMAT = "hilbench-int-lstm/1"
FORGET_SHIFT = 8  # f (2^-8) x c (cell grid) back onto the cell grid
HIDDEN_SHIFT = 8  # o (2^-8) x tanh(c) (2^-7) onto h's 2^-7 grid
GATE_TABLES = ("gate_i", "gate_f", "gate_g", "gate_o")
INT32_LIMIT = 1 << 31
DESCRIPTION = "integer LSTM in numpy on the device (onnxruntime cannot run Brevitas' QuantLSTM)"


class IntLstmError(ValueError):
    """A file that is not a usable integer LSTM, or windows of the wrong shape."""


@dataclass(frozen=True)
class Layer:
    """One layer, ready to run: weights as float64 matrices [inputs, 4 x hidden] (gate-major
    columns: i, f, g, o), the four gate tables end to end (int64 [1024]) with each column's
    offset into them, so all gates of a step take one shift and one lookup."""

    hidden: int
    weight_x: np.ndarray
    weight_h: np.ndarray
    bias: np.ndarray  # [4 x hidden]
    gate_shifts: tuple[int, int, int, int]
    cell_product_shift: int
    gate_tables: np.ndarray  # [4 x 256]: gate k's entry for a at k x 256 + a + 128
    cell_tanh: np.ndarray

    @property
    def column_shifts(self) -> np.ndarray:
        return np.repeat(np.asarray(self.gate_shifts, dtype=np.int64), self.hidden)

    @property
    def table_offsets(self) -> np.ndarray:
        return np.repeat(np.arange(4, dtype=np.int64) * 256 + 128, self.hidden)


@dataclass(frozen=True)
class IntLstm:
    """A node's integer LSTM encoder: int8 windows [B, rows, steps] -> uint8 codes [B, code_len]."""

    rows: int
    steps: int
    layers: tuple[Layer, ...]
    code_bits: int
    code_shift: int
    code_zero_point: int

    @property
    def code_len(self) -> int:
        return self.layers[-1].hidden


def _table(values: list, dtype: str, where: str) -> np.ndarray:
    table = np.asarray(values, dtype=np.int64)
    info = np.iinfo(dtype)
    if table.shape != (256,) or table.min() < info.min or table.max() > info.max:
        raise IntLstmError(f"{where}: a table must be 256 {dtype} values")
    return table


def _layer(d: dict, inputs: int, where: str) -> Layer:
    hidden, size = int(d["hidden_size"]), int(d["input_size"])
    if size != inputs:
        raise IntLstmError(f"{where}: takes {size} inputs, the layer before gives {inputs}")
    wx = np.asarray(d["weight_x"], dtype=np.int64)
    wh = np.asarray(d["weight_h"], dtype=np.int64)
    bias = np.asarray(d["bias"], dtype=np.int64)
    if wx.size != 4 * hidden * size or wh.size != 4 * hidden * hidden or bias.size != 4 * hidden:
        raise IntLstmError(f"{where}: weight or bias sizes do not match {hidden} units of {size} inputs")
    if min(wx.min(initial=0), wh.min(initial=0)) < -128 or max(wx.max(initial=0), wh.max(initial=0)) > 127:
        raise IntLstmError(f"{where}: weights must be int8")
    wx, wh = wx.reshape(4 * hidden, size), wh.reshape(4 * hidden, hidden)
    bound = (np.abs(np.concatenate([wx, wh], axis=1)).sum(axis=1) * 128 + np.abs(bias)).max()
    if bound >= INT32_LIMIT:
        raise IntLstmError(f"{where}: its accumulator can reach {bound}, outside int32")
    tables = d["tables"]
    gates = tuple(_table(tables[name], "int8" if name == "gate_g" else "uint8", f"{where}: {name}")
                  for name in GATE_TABLES)
    shifts = tuple(int(s) for s in d["gate_shifts"])
    if len(shifts) != 4:
        raise IntLstmError(f"{where}: one gate shift per gate (i, f, g, o)")
    return Layer(hidden, wx.T.astype(np.float64), wh.T.astype(np.float64), bias.astype(np.float64),
                 shifts, int(d["cell_product_shift"]), np.concatenate(gates),  # type: ignore[arg-type]
                 _table(tables["cell_tanh"], "int8", f"{where}: cell_tanh"))


def parse(d: dict, where: str = "<int-lstm>") -> IntLstm:
    """The encoder described by a ``hilbench-int-lstm/1`` document."""
    if d.get("format") != FORMAT:
        raise IntLstmError(f"{where}: not a {FORMAT} file (format {d.get('format')!r})")
    try:
        rows, steps = (int(v) for v in d["input_shape"])
        layers, inputs = [], rows
        for k, layer in enumerate(d["layers"]):
            layers.append(_layer(layer, inputs, f"{where}: layer {k}"))
            inputs = layers[-1].hidden
        bits = int(d["code_bits"])
        model = IntLstm(rows, steps, tuple(layers), bits, int(d["code_shift"]), int(d["code_zero_point"]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, IntLstmError):
            raise
        raise IntLstmError(f"{where}: malformed integer LSTM ({type(exc).__name__}: {exc})") from exc
    if not layers or not 1 <= bits <= 8 or model.code_zero_point != 1 << (bits - 1):
        raise IntLstmError(f"{where}: needs at least one layer and offset-binary codes of 1..8 bits")
    return model


def load(path: str) -> IntLstm:
    with open(path, encoding="utf-8") as f:
        return parse(json.load(f), path)


def rne(v: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """Integers ``v`` x 2^-shift rounded half to even (shift > 0), or shifted left (shift <= 0);
    ``shift`` may be an array (one per column, all > 0). floor((v + half - 1 + lowest kept bit)
    / 2^shift) rounds a tie up exactly when the kept part is odd."""
    if np.ndim(shift) == 0 and shift <= 0:
        return v << -shift
    return (v + ((1 << (shift - 1)) - 1) + ((v >> shift) & 1)) >> shift


def _gate_values(layer: Layer, acc: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Table outputs [B, 4 x hidden] of one step's accumulators: i, f, o sigmoid, g tanh."""
    if min(layer.gate_shifts) > 0:
        pre = rne(acc, shifts)
    else:  # a gate whose grid is finer than its accumulator's: shifted left, gate by gate
        n = layer.hidden
        pre = np.concatenate([rne(acc[:, k * n:(k + 1) * n], s) for k, s in enumerate(layer.gate_shifts)], axis=1)
    return layer.gate_tables[_sat8(pre) + layer.table_offsets]


def _sat8(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -128, 127)


def run_layer(layer: Layer, x: np.ndarray) -> np.ndarray:
    """Hidden states int64 [B, T, hidden] of one layer over inputs ``x`` [B, T, inputs]."""
    batch, steps, _ = x.shape
    n = layer.hidden
    x_part = x.astype(np.float64) @ layer.weight_x + layer.bias  # every step's input half at once
    h = np.zeros((batch, n), dtype=np.int64)
    c = np.zeros((batch, n), dtype=np.int64)
    out = np.empty((batch, steps, n), dtype=np.int64)
    shifts = layer.column_shifts
    for t in range(steps):
        acc = (x_part[:, t] + h.astype(np.float64) @ layer.weight_h).astype(np.int64)
        gates = _gate_values(layer, acc, shifts)
        i, f, g, o = gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:3 * n], gates[:, 3 * n:]
        c = _sat8(_sat8(rne(f * c, FORGET_SHIFT)) + _sat8(rne(i * g, layer.cell_product_shift)))
        h = _sat8(rne(o * layer.cell_tanh[c + 128], HIDDEN_SHIFT))
        out[:, t] = h
    return out


def encode(model: IntLstm, windows: np.ndarray) -> np.ndarray:
    """uint8 codes [B, code_len] of int8 windows [B, rows, steps] (uint8: their bytes)."""
    windows = np.asarray(windows)
    if windows.dtype == np.uint8:
        windows = windows.view(np.int8)
    if windows.dtype != np.int8 or windows.ndim != 3 or windows.shape[1:] != (model.rows, model.steps):
        raise IntLstmError(f"the encoder takes int8 windows [B, {model.rows}, {model.steps}], "
                           f"got {windows.dtype} {list(windows.shape)}")
    x = np.transpose(windows, (0, 2, 1)).astype(np.int64)  # [B, T, rows]: one input vector per step
    for layer in model.layers:
        x = run_layer(layer, x)
    half = model.code_zero_point
    signed = np.clip(rne(x[:, -1], model.code_shift), -half, half - 1)
    return (signed + half).astype(np.uint8)
