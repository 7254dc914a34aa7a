"""The bytes a node transmits: q-bit codes packed into a bit stream, and back.

Layout: the node's k codes in order, each as q bits, most significant bit first, in one
continuous big-endian bit stream (code 0 fills the top q bits of byte 0); the last byte is
zero-padded. So a node sends ceil(k*q/8) bytes; for q = 8 the payload is the codes themselves.
This is the layout of ``numpy.packbits`` over the codes' low q bits, and the firmware's.
"""
from __future__ import annotations

import numpy as np

from harness.core.errors import ModelError


def payload_bytes(code_len: int, bits: int) -> int:
    return (code_len * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack codes [..., k] (integers in [0, 2^bits)) into uint8 [..., ceil(k*bits/8)]."""
    codes = np.asarray(codes)
    if not 1 <= bits <= 8:
        raise ModelError(f"cannot pack {bits}-bit codes: q must be 1..8")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise ModelError(f"codes out of range for q = {bits}: [{codes.min()}, {codes.max()}]")
    as_bytes = codes.astype(np.uint8)[..., None]
    bit_planes = np.unpackbits(as_bytes, axis=-1)[..., 8 - bits:]
    stream = bit_planes.reshape(codes.shape[:-1] + (codes.shape[-1] * bits,))
    return np.packbits(stream, axis=-1)


def unpack_codes(payload: np.ndarray, code_len: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 [..., nbytes] -> codes uint8 [..., code_len]."""
    payload = np.asarray(payload, dtype=np.uint8)
    if payload.shape[-1] != payload_bytes(code_len, bits):
        raise ModelError(
            f"payload of {payload.shape[-1]} bytes cannot hold {code_len} {bits}-bit codes "
            f"(needs {payload_bytes(code_len, bits)})")
    stream = np.unpackbits(payload, axis=-1)[..., :code_len * bits]
    groups = stream.reshape(payload.shape[:-1] + (code_len, bits))
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (groups.astype(np.uint16) * weights).sum(axis=-1).astype(np.uint8)
