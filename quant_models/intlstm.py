"""Integer parameters of an LSTM node encoder (format ``hilbench-int-lstm/1``): what the golden
model (:mod:`quant_models.golden`), a C generator and the firmware run. Plain typed
dataclasses and a portable JSON form; numpy only (no torch).

A node gets its window as int8 codes ``x[t][r]`` (row r = site, t = 0..W-1; value code x 2^-7)
and runs the layers in order over every time step (they may be interleaved per step: layer l
at step t needs only layer l-1's h at step t). Gates are in PyTorch's order i, f, g, o.
Notation: ``rne(v, s)`` = v x 2^-s rounded half to even (s > 0), v << -s (s <= 0);
``sat8`` = clip to [-128, 127]. Per layer, per step, per unit j, starting from h = c = 0:

    acc[g]  = sum_k Wx[g][j][k] x[k] + sum_k Wh[g][j][k] h[k] + bias[g][j]     (int32; the
              accumulator scale is 2^(io_exponent + weight_exponents[g]))
    a[g]    = sat8(rne(acc[g], gate_shifts[g]))        (the pre-activation on the 2^gate_exponents[g] grid)
    i, f, o = sigmoid_table[gate][a + 128]              (uint8, value x 2^-8)
    g       = tanh_table[gate g][a + 128]               (int8, value x 2^-7)
    c       = sat8( sat8(rne(f * c, 8)) + sat8(rne(i * g, cell_product_shift)) )    (int8, 2^cell_exponent)
    h       = sat8(rne(o * cell_tanh_table[c + 128], 8))                        (int8, 2^-7)

The inner saturations matter. The last layer's final h gives the code:
``code = clip(rne(h, code_exponent + 7), -2^(q-1), 2^(q-1) - 1) + code_zero_point`` (offset
binary: unsigned q-bit, value ``(code - 2^(q-1)) x 2^code_exponent``).

Tables: 256 entries indexed by the int8 pre-activation + 128, computed from the exponents alone
(:func:`sigmoid_table`, :func:`tanh_table`, float64 then round half to even, which equals
Brevitas' float32 results; the tests check every exponent in use), so a C generator can embed
them or recompute them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import ModelError

FORMAT = "hilbench-int-lstm/1"
GATES = ("i", "f", "g", "o")
IO_EXPONENT = -7  # x and h: int8 x 2^-7
SIGMOID_EXPONENT = -8  # sigmoid outputs: uint8 x 2^-8
TANH_EXPONENT = -7  # tanh outputs: int8 x 2^-7
TABLE_ENTRIES = 256


# ---- tables (pure) ------------------------------------------------------------------------

def _domain(exponent: int) -> np.ndarray:
    return np.arange(-128, 128, dtype=np.float64) * 2.0 ** exponent


def sigmoid_table(exponent: int) -> np.ndarray:
    """uint8 [256]: entry a + 128 = round_half_even(sigmoid(a x 2^exponent) x 2^8), a in -128..127."""
    v = _domain(exponent)
    return np.clip(np.rint(256.0 / (1.0 + np.exp(-v))), 0, 255).astype(np.uint8)


def tanh_table(exponent: int) -> np.ndarray:
    """int8 [256]: entry a + 128 = clip(round_half_even(tanh(a x 2^exponent) x 2^7), -128, 127)."""
    return np.clip(np.rint(np.tanh(_domain(exponent)) * 128.0), -128, 127).astype(np.int8)


# ---- costs (pure) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LstmCosts:
    """Work and memory of one inference (one window of ``steps`` samples)."""

    macs: int  # multiply-accumulates of the gate matrix-vector products
    elementwise_multiplies: int  # f*c, i*g, o*tanh(c) per unit and step
    table_lookups: int  # 4 gate activations + tanh(c) per unit and step
    weight_bytes: int  # int8 weights + int32 biases
    table_bytes: int  # five 256-entry 8-bit tables per layer
    state_bytes: int  # per layer h, c and the next h (int8), plus one input step

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def lstm_costs(input_size: int, hidden_sizes: list[int] | tuple[int, ...], steps: int) -> LstmCosts:
    """Costs of stacked LSTM layers (``input_size`` -> hidden_sizes[0] -> ...) over ``steps``.
    LSTM(1->40) -> LSTM(40->9) over 50 steps: 416,200 MACs, 7,350 multiplies, 12,250 lookups,
    9,108 weight bytes (8,324 int8 weights, 196 int32 biases)."""
    macs = per_step_mul = lookups = weights = 0
    n_in = input_size
    for h in hidden_sizes:
        macs += 4 * h * (n_in + h)
        per_step_mul += 3 * h
        lookups += 5 * h
        weights += 4 * h * (n_in + h) + 4 * 4 * h
        n_in = h
    return LstmCosts(macs * steps, per_step_mul * steps, lookups * steps, weights,
                     5 * TABLE_ENTRIES * len(hidden_sizes), 3 * sum(hidden_sizes) + input_size)


# ---- the parameters -----------------------------------------------------------------------

@dataclass(frozen=True)
class IntLstmLayer:
    """One LSTM layer's integer parameters; gate axis in the order i, f, g, o."""

    weight_x: np.ndarray  # int8 [4, hidden, input]
    weight_h: np.ndarray  # int8 [4, hidden, hidden]
    bias: np.ndarray  # int32 [4, hidden], at the accumulator scale 2^(io + weight exponent)
    weight_exponents: tuple[int, int, int, int]  # per gate, shared by its input and hidden weights
    gate_exponents: tuple[int, int, int, int]  # per gate: the pre-activation's int8 grid
    cell_exponent: int  # the cell state's int8 grid

    @property
    def input_size(self) -> int:
        return int(self.weight_x.shape[2])

    @property
    def hidden_size(self) -> int:
        return int(self.weight_x.shape[1])

    @property
    def gate_shifts(self) -> tuple[int, ...]:
        """Right shift from each gate's accumulator to its pre-activation grid."""
        return tuple(ge - (IO_EXPONENT + we) for we, ge in zip(self.weight_exponents, self.gate_exponents))

    @property
    def cell_product_shift(self) -> int:
        """Right shift of i x g (scale 2^(-8-7)) onto the cell grid."""
        return self.cell_exponent - (SIGMOID_EXPONENT + TANH_EXPONENT)

    @property
    def forget_product_shift(self) -> int:
        """Right shift of f x c (scale 2^(-8 + cell)) onto the cell grid: always 8."""
        return -SIGMOID_EXPONENT

    @property
    def hidden_shift(self) -> int:
        """Right shift of o x tanh(c) (scale 2^(-8-7)) onto the h grid: always 8."""
        return IO_EXPONENT - (SIGMOID_EXPONENT + TANH_EXPONENT)

    def gate_tables(self) -> list[np.ndarray]:
        """Per gate: sigmoid (i, f, o: uint8) or tanh (g: int8) over its pre-activation domain."""
        return [tanh_table(e) if name == "g" else sigmoid_table(e)
                for name, e in zip(GATES, self.gate_exponents)]

    def cell_tanh_table(self) -> np.ndarray:
        return tanh_table(self.cell_exponent)

    def check(self, where: str) -> None:
        h, i = self.hidden_size, self.input_size
        shapes = {"weight_x": (self.weight_x, (4, h, i), np.int8), "weight_h": (self.weight_h, (4, h, h), np.int8),
                  "bias": (self.bias, (4, h), np.int32)}
        for name, (a, shape, dtype) in shapes.items():
            if a.shape != shape or a.dtype != dtype:
                raise ModelError(f"{where}: {name} must be {np.dtype(dtype).name} {list(shape)}, got {a.dtype} {list(a.shape)}")
        if len(self.weight_exponents) != 4 or len(self.gate_exponents) != 4:
            raise ModelError(f"{where}: one weight and one gate exponent per gate (i, f, g, o)")

    def accumulation_bound(self) -> int:
        """Largest |acc| any int8 input and state can give: must stay below 2^24 for float32
        Brevitas to be exact, below 2^31 for int32."""
        w = np.concatenate([self.weight_x, self.weight_h], axis=2).astype(np.int64)
        return int((np.abs(w).sum(axis=2) * 128 + np.abs(self.bias.astype(np.int64))).max())

    def to_dict(self) -> dict:
        tables = self.gate_tables()
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "weight_x": self.weight_x.astype(int).ravel().tolist(),
                "weight_h": self.weight_h.astype(int).ravel().tolist(),
                "bias": self.bias.astype(int).ravel().tolist(),
                "weight_exponents": list(self.weight_exponents), "gate_exponents": list(self.gate_exponents),
                "cell_exponent": self.cell_exponent,
                "gate_shifts": list(self.gate_shifts), "cell_product_shift": self.cell_product_shift,
                "tables": {**{f"gate_{n}": t.astype(int).tolist() for n, t in zip(GATES, tables)},
                           "cell_tanh": self.cell_tanh_table().astype(int).tolist()}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "<dict>") -> "IntLstmLayer":
        h, i = int(d["hidden_size"]), int(d["input_size"])
        layer = cls(np.asarray(d["weight_x"], dtype=np.int8).reshape(4, h, i),
                    np.asarray(d["weight_h"], dtype=np.int8).reshape(4, h, h),
                    np.asarray(d["bias"], dtype=np.int32).reshape(4, h),
                    tuple(int(e) for e in d["weight_exponents"]),  # type: ignore[arg-type]
                    tuple(int(e) for e in d["gate_exponents"]),  # type: ignore[arg-type]
                    int(d["cell_exponent"]))
        layer.check(where)
        if "tables" in d and d["tables"] != layer.to_dict()["tables"]:
            raise ModelError(f"{where}: its tables differ from the ones its exponents give")
        return layer


@dataclass(frozen=True)
class IntLstmEncoder:
    """One node's LSTM encoder on int8 windows [rows, W] (value code x 2^input_exponent)."""

    node: int
    input_shape: tuple[int, int]  # (rows = sites, W = time steps)
    layers: tuple[IntLstmLayer, ...]
    code_bits: int
    code_exponent: int
    input_exponent: int = IO_EXPONENT

    kind = "lstm"

    @property
    def code_len(self) -> int:
        return self.layers[-1].hidden_size

    @property
    def code_zero_point(self) -> int:
        """Transmitted codes are offset binary: code = signed value + 2^(q-1)."""
        return 1 << (self.code_bits - 1)

    @property
    def steps(self) -> int:
        return int(self.input_shape[1])

    @property
    def code_shift(self) -> int:
        """Right shift of the last h (2^-7) onto the code grid."""
        return self.code_exponent - IO_EXPONENT

    def costs(self) -> LstmCosts:
        return lstm_costs(self.input_shape[0], [layer.hidden_size for layer in self.layers], self.steps)

    @property
    def macs(self) -> int:
        return self.costs().macs

    def check(self, where: str = "<int-lstm>") -> None:
        if self.input_exponent != IO_EXPONENT:
            raise ModelError(f"{where}: inputs must be int8 x 2^{IO_EXPONENT} (got 2^{self.input_exponent})")
        if not 2 <= self.code_bits <= 8:
            raise ModelError(f"{where}: LSTM codes are 2..8 bits (got {self.code_bits})")
        n_in = self.input_shape[0]
        for k, layer in enumerate(self.layers):
            layer.check(f"{where}: layer {k}")
            if layer.input_size != n_in:
                raise ModelError(f"{where}: layer {k} takes {layer.input_size} inputs, the layer before gives {n_in}")
            if layer.accumulation_bound() >= 1 << 24:
                raise ModelError(f"{where}: layer {k}'s accumulator can reach {layer.accumulation_bound()} "
                                 ">= 2^24 units, where float32 QAT is no longer exact")
            n_in = layer.hidden_size

    def to_dict(self) -> dict:
        return {"format": FORMAT, "node": self.node, "input_shape": list(self.input_shape),
                "input_exponent": self.input_exponent, "io_exponent": IO_EXPONENT,
                "sigmoid_exponent": SIGMOID_EXPONENT, "tanh_exponent": TANH_EXPONENT,
                "code_bits": self.code_bits, "code_exponent": self.code_exponent,
                "code_zero_point": self.code_zero_point, "code_shift": self.code_shift,
                "costs": self.costs().as_dict(), "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "IntLstmEncoder":
        if d.get("format") != FORMAT:
            raise ModelError(f"{source}: not a {FORMAT} file (format {d.get('format')!r})")
        layers = tuple(IntLstmLayer.from_dict(layer, f"{source}: layer {k}") for k, layer in enumerate(d["layers"]))
        enc = cls(int(d["node"]), (int(d["input_shape"][0]), int(d["input_shape"][1])), layers,
                  int(d["code_bits"]), int(d["code_exponent"]), int(d["input_exponent"]))
        enc.check(source)
        return enc

    def sha256(self) -> str:
        """The model hash: sha256 of the canonical JSON; its first 8 bytes identify firmware."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> "IntLstmEncoder":
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: cannot read integer LSTM encoder ({exc})") from exc
