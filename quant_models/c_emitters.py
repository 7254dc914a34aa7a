"""Small pure C emitters shared by the code generators (:mod:`quant_models.codegen` for CNN
encoders, :mod:`quant_models.codegen_lstm` for LSTM encoders): a constant array, a struct, a
byte initializer, straight-line code packing."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .packing import payload_bytes

VALUES_PER_LINE = 24
WORDS_PER_LINE = 8


def c_array(ctype: str, name: str, values: np.ndarray, fmt: Callable[[int], str] = str,
            per_line: int = VALUES_PER_LINE) -> str:
    """``static const ctype name[N] = {...};`` with a fixed number of values per line."""
    flat = [fmt(int(v)) for v in np.asarray(values).ravel()]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    {body}\n}};\n"


def c_words(name: str, words: np.ndarray) -> str:
    """A uint32 array in hex (int16 pairs read best as two halves)."""
    return c_array("uint32_t", name, words, lambda v: f"0x{v:08x}", WORDS_PER_LINE)


def c_struct(ctype: str, name: str, fields: list[object]) -> str:
    """``static const ctype name = {...};`` from the fields in declaration order."""
    return f"static const {ctype} {name} = {{{', '.join(map(str, fields))}}};\n"


def c_bytes(values: bytes) -> str:
    return "{" + ", ".join(f"0x{b:02x}" for b in values) + "}"


def pack_statements(code_len: int, bits: int, codes: str, out: str, mask: bool) -> list[str]:
    """Straight-line C packing ``code_len`` q-bit codes MSB first (quant_models/packing.py)."""
    statements = []
    for byte in range(payload_bytes(code_len, bits)):
        parts = []
        for j in range(code_len):
            start = j * bits - 8 * byte  # code j's first bit, counted from this byte's MSB
            if start >= 8 or start + bits <= 0:
                continue
            value = f"({codes}[{j}] & 0x{(1 << bits) - 1:x})" if mask else f"{codes}[{j}]"
            shift = 8 - start - bits  # bits shifted above 7 or below 0 belong to the other byte
            parts.append(f"({value} << {shift})" if shift > 0 else f"({value} >> {-shift})" if shift < 0 else value)
        statements.append(f"{out}[{byte}] = (uint8_t)({' | '.join(parts)});")
    return statements
