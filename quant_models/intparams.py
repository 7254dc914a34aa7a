"""Integer parameters of a node encoder: what the golden model, the C generator and the
firmware run. Plain typed dataclasses plus a portable JSON form (format ``hilbench-int-encoder/1``).

Semantics of one requantization (after a conv or fc with int32 accumulator ``acc`` at scale
2^(e_in + e_w)): ``out = clip(rne_shift(acc, shift), clip_min, clip_max)`` where ``shift =
e_out - e_in - e_w`` (>0: arithmetic right shift with round-half-to-even; <=0: left shift). The
lower clip of 0 is the ReLU. Codes leave the last op as unsigned integers in [0, 2^q - 1] with
value ``code * 2^code_exponent``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from harness.core.errors import ModelError

FORMAT = "hilbench-int-encoder/1"


@dataclass(frozen=True)
class Requant:
    shift: int
    clip_min: int
    clip_max: int

    def to_dict(self) -> dict:
        return {"shift": self.shift, "clip_min": self.clip_min, "clip_max": self.clip_max}

    @classmethod
    def from_dict(cls, d: dict) -> "Requant":
        return cls(int(d["shift"]), int(d["clip_min"]), int(d["clip_max"]))


def _weights_to_dict(weight: np.ndarray, bias: np.ndarray) -> dict:
    return {"weight_shape": list(weight.shape), "weight": weight.astype(int).ravel().tolist(),
            "bias": bias.astype(int).tolist()}


def _weights_from_dict(d: dict) -> tuple[np.ndarray, np.ndarray]:
    weight = np.asarray(d["weight"], dtype=np.int8).reshape(d["weight_shape"])
    return weight, np.asarray(d["bias"], dtype=np.int32)


@dataclass(frozen=True)
class ConvOp:
    """Conv, stride 1, zero padding, then requantize (ReLU via clip_min 0)."""

    name = "conv"
    weight: np.ndarray  # int8 [out, in, k, k]
    bias: np.ndarray  # int32 [out]
    padding: int
    requant: Requant

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = shape
        k, p = self.weight.shape[-1], self.padding
        return (self.weight.shape[0], h + 2 * p - k + 1, w + 2 * p - k + 1)

    def macs(self, shape: tuple[int, ...]) -> int:
        return int(np.prod(self.output_shape(shape))) * int(np.prod(self.weight.shape[1:]))

    def to_dict(self) -> dict:
        return {"op": self.name, "padding": self.padding, **_weights_to_dict(self.weight, self.bias),
                **self.requant.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ConvOp":
        return cls(*_weights_from_dict(d), int(d["padding"]), Requant.from_dict(d))


@dataclass(frozen=True)
class MaxPoolOp:
    """Max-pool on codes; window == stride; trailing rows/cols dropped (floor mode, as torch)."""

    name = "maxpool"
    size: int

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (c, h // self.size, w // self.size)

    def macs(self, shape: tuple[int, ...]) -> int:
        return 0

    def to_dict(self) -> dict:
        return {"op": self.name, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "MaxPoolOp":
        return cls(int(d["size"]))


@dataclass(frozen=True)
class FcOp:
    """Fully connected on the flattened (channel, row, col) input, then requantize."""

    name = "fc"
    weight: np.ndarray  # int8 [out, in]
    bias: np.ndarray  # int32 [out]
    requant: Requant

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.weight.shape[0],)

    def macs(self, shape: tuple[int, ...]) -> int:
        return int(self.weight.size)

    def to_dict(self) -> dict:
        return {"op": self.name, **_weights_to_dict(self.weight, self.bias), **self.requant.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FcOp":
        return cls(*_weights_from_dict(d), Requant.from_dict(d))


IntOp = Union[ConvOp, MaxPoolOp, FcOp]
OP_TYPES: dict[str, type[ConvOp] | type[MaxPoolOp] | type[FcOp]] = {t.name: t for t in (ConvOp, MaxPoolOp, FcOp)}


@dataclass(frozen=True)
class IntEncoder:
    """One node's encoder as integer-only operations on uint8 pixels [h, w] (scale 2^-8)."""

    node: int
    input_shape: tuple[int, int]
    input_exponent: int
    ops: tuple[IntOp, ...]
    code_bits: int
    code_exponent: int

    @property
    def code_len(self) -> int:
        return self.shapes()[-1][0]

    def shapes(self) -> list[tuple[int, ...]]:
        """Input shape (1, h, w) followed by each op's output shape."""
        shapes: list[tuple[int, ...]] = [(1, *self.input_shape)]
        for op in self.ops:
            shapes.append(op.output_shape(shapes[-1]))
        return shapes

    @property
    def macs(self) -> int:
        shapes = self.shapes()
        return sum(op.macs(s) for op, s in zip(self.ops, shapes))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "node": self.node, "input_shape": list(self.input_shape),
                "input_exponent": self.input_exponent, "code_bits": self.code_bits,
                "code_exponent": self.code_exponent, "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "IntEncoder":
        if d.get("format") != FORMAT:
            raise ModelError(f"{source}: not a {FORMAT} file (format {d.get('format')!r})")
        unknown = {e.get("op") for e in d["ops"]} - OP_TYPES.keys()
        if unknown:
            raise ModelError(f"{source}: unknown integer ops {sorted(map(str, unknown))}")
        ops = tuple(OP_TYPES[e["op"]].from_dict(e) for e in d["ops"])
        return cls(int(d["node"]), tuple(d["input_shape"]), int(d["input_exponent"]), ops,
                   int(d["code_bits"]), int(d["code_exponent"]))

    def sha256(self) -> str:
        """The model hash: sha256 of the canonical JSON; its first 8 bytes identify firmware."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> "IntEncoder":
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: cannot read integer encoder ({exc})") from exc
