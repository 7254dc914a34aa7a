"""Bits per inference: nominal, packed, empirical entropy, and actually entropy-coded sizes.

For each node with k codes of q bits:
- nominal bits: q x k; packed payload: ceil(q k / 8) bytes (:mod:`quant_models.packing`).
- empirical entropy, plug-in (maximum-likelihood) estimates on the codes at hand:
  * per-position (the headline figure): the sum over the k positions of the entropy of that
    position's symbol distribution. It is what a static coder with one model per position can
    approach, and an upper bound of the joint entropy (it ignores dependence between positions).
  * pooled per symbol: one histogram over all positions, times k (what one shared model can
    approach).
  * joint: the entropy of whole code vectors. With N samples it cannot exceed log2 N, so for
    N << 2^(qk) it is an underestimate; it is reported with that caveat, never as the headline.
- entropy-coded sizes from real coders whose models are fitted on training-split codes
  (add-1/2 smoothing, so a symbol never seen in training still codes), run on the test codes and
  decoded again to prove the size is real:
  * ``huffman`` (headline): one Huffman code per position (``constriction.symbol``), each
    inference's message coded on its own, bit-exact length: what a node would send.
  * ``range-stream``: a range coder (``constriction.stream.queue``) over all test inferences in
    one stream, bits / N: close to the model's cross-entropy, not a per-message size.
  * ``zlib``: raw deflate of each packed message with the training payloads as preset
    dictionary (per message); ``lzma``: all packed test payloads in one xz stream, bits / N.
    Both are general-purpose baselines.
"""
from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass, field

import numpy as np

from harness.core.errors import MeasurementError
from quant_models.packing import pack_codes, payload_bytes


def nominal_bits(code_len: int, bits: int) -> int:
    """q x k: the bits of the codes before packing."""
    return code_len * bits


def packed_payload_bytes(code_len: int, bits: int) -> int:
    """ceil(q k / 8): the bytes a node transmits (the firmware's packing)."""
    return payload_bytes(code_len, bits)


def _check_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise MeasurementError(f"codes must be a non-empty [samples, code_len] array, not shape {codes.shape}")
    if not 1 <= bits <= 8:
        raise MeasurementError(f"q must be 1..8, not {bits}")
    if codes.min() < 0 or codes.max() >= 1 << bits:
        raise MeasurementError(f"codes out of range for q = {bits}: [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64)


def entropy_of_counts(counts: np.ndarray) -> float:
    """Plug-in entropy in bits of a histogram: -sum p log2 p over the non-zero counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise MeasurementError("entropy of an empty histogram")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def position_histograms(codes: np.ndarray, bits: int) -> np.ndarray:
    """Counts [k, 2^q]: how often each symbol occurs at each position."""
    codes = _check_codes(codes, bits)
    k = codes.shape[1]
    flat = codes + (np.arange(k) << bits)[None, :]
    return np.bincount(flat.ravel(), minlength=k << bits).reshape(k, 1 << bits)


def entropy_per_position(codes: np.ndarray, bits: int) -> np.ndarray:
    """Plug-in entropy (bits) of each position's symbol distribution, shape [k]."""
    return np.array([entropy_of_counts(h) for h in position_histograms(codes, bits)])


def entropy_pooled_per_symbol(codes: np.ndarray, bits: int) -> float:
    """Plug-in entropy (bits per symbol) of all positions' symbols in one histogram."""
    codes = _check_codes(codes, bits)
    return entropy_of_counts(np.bincount(codes.ravel(), minlength=1 << bits))


def entropy_joint(codes: np.ndarray, bits: int) -> float:
    """Plug-in entropy (bits) of whole code vectors; at most log2(samples)."""
    codes = _check_codes(codes, bits)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return entropy_of_counts(counts)


@dataclass(frozen=True)
class NodeEntropy:
    """Empirical entropies of one node's codes (bits per inference unless said otherwise)."""

    samples: int
    per_position: float
    pooled: float
    pooled_per_symbol: float
    joint: float
    joint_at_sample_limit: bool  # joint == log2(samples): every vector distinct, estimate saturated


def node_entropy(codes: np.ndarray, bits: int) -> NodeEntropy:
    codes = _check_codes(codes, bits)
    n, k = codes.shape
    pooled_sym = entropy_pooled_per_symbol(codes, bits)
    joint = entropy_joint(codes, bits)
    return NodeEntropy(samples=n, per_position=float(entropy_per_position(codes, bits).sum()),
                       pooled=pooled_sym * k, pooled_per_symbol=pooled_sym, joint=joint,
                       joint_at_sample_limit=bool(np.isclose(joint, np.log2(n))))


# ---------------------------------------------------------------- fitted models and coders

@dataclass(frozen=True)
class PositionModel:
    """Per-position symbol probabilities [k, 2^q] fitted on training codes."""

    probabilities: np.ndarray
    bits: int
    train_samples: int
    smoothing: float

    @property
    def code_len(self) -> int:
        return self.probabilities.shape[0]


def fit_position_model(train_codes: np.ndarray, bits: int, smoothing: float = 0.5) -> PositionModel:
    """(count + smoothing) / (N + smoothing 2^q) per position: add-1/2 (Krichevsky-Trofimov)
    smoothing by default, so no symbol has probability zero."""
    if smoothing <= 0:
        raise MeasurementError(f"smoothing must be > 0 so every symbol stays codable, not {smoothing}")
    hist = position_histograms(train_codes, bits).astype(np.float64) + smoothing
    return PositionModel(hist / hist.sum(axis=1, keepdims=True), bits, int(np.asarray(train_codes).shape[0]), smoothing)


def cross_entropy_bits(codes: np.ndarray, model: PositionModel) -> np.ndarray:
    """-sum_j log2 p_j(code_j) per inference: the ideal code length under the model."""
    codes = _check_codes(codes, model.bits)
    if codes.shape[1] != model.code_len:
        raise MeasurementError(f"codes have {codes.shape[1]} positions, the model {model.code_len}")
    p = model.probabilities[np.arange(model.code_len)[None, :], codes]
    return -np.log2(p).sum(axis=1)


class HuffmanCoder:
    """One Huffman code per position (constriction's Huffman trees and bit-level queue coder)."""

    def __init__(self, model: PositionModel) -> None:
        import constriction  # its submodules are attributes, not importable modules

        self._symbol = constriction.symbol
        self.model = model
        self._enc = [self._symbol.huffman.EncoderHuffmanTree(p) for p in model.probabilities]
        self._dec = [self._symbol.huffman.DecoderHuffmanTree(p) for p in model.probabilities]

    def encode(self, code_row: np.ndarray) -> tuple[np.ndarray, int]:
        """One inference's codes -> (compressed uint32 words, exact length in bits)."""
        enc = self._symbol.QueueEncoder()
        for symbol, tree in zip(np.asarray(code_row).tolist(), self._enc, strict=True):
            enc.encode_symbol(int(symbol), tree)
        words, nbits = enc.get_compressed_and_bitrate()
        return words, int(nbits)

    def decode(self, words: np.ndarray) -> np.ndarray:
        dec = self._symbol.QueueDecoder(words)
        return np.array([dec.decode_symbol(tree) for tree in self._dec], dtype=np.int64)


def huffman_bits(codes: np.ndarray, model: PositionModel) -> np.ndarray:
    """Exact Huffman-coded length (bits) of each inference's message, verified by decoding."""
    codes = _check_codes(codes, model.bits)
    coder = HuffmanCoder(model)
    out = np.empty(codes.shape[0], dtype=np.int64)
    for i, row in enumerate(codes):
        words, nbits = coder.encode(row)
        if not np.array_equal(coder.decode(words), row):
            raise MeasurementError(f"Huffman round trip failed on inference {i}")
        out[i] = nbits
    return out


def range_encode(codes: np.ndarray, model: PositionModel) -> np.ndarray:
    """All inferences' codes in one range-coded stream (constriction RangeEncoder, uint32 words)."""
    import constriction

    codes = _check_codes(codes, model.bits)
    probs = np.tile(model.probabilities, (codes.shape[0], 1))
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(codes.ravel().astype(np.int32), constriction.stream.model.Categorical(perfect=False), probs)
    return enc.get_compressed()


def range_decode(words: np.ndarray, samples: int, model: PositionModel) -> np.ndarray:
    import constriction

    probs = np.tile(model.probabilities, (samples, 1))
    dec = constriction.stream.queue.RangeDecoder(words)
    flat = dec.decode(constriction.stream.model.Categorical(perfect=False), probs)
    return np.asarray(flat, dtype=np.int64).reshape(samples, model.code_len)


def range_stream_bits(codes: np.ndarray, model: PositionModel) -> int:
    """Total bits of the range-coded stream (32 per word), verified by decoding."""
    codes = _check_codes(codes, model.bits)
    words = range_encode(codes, model)
    if not np.array_equal(range_decode(words, codes.shape[0], model), codes):
        raise MeasurementError("range coder round trip failed")
    return int(words.size) * 32


def zlib_message_bits(payloads: np.ndarray, dictionary: bytes = b"") -> np.ndarray:
    """Raw-deflate size (bits) of each packed message, with an optional preset dictionary
    (zlib keeps the last 32 KiB of it), verified by inflating."""
    zdict = dictionary[-32768:]
    out = np.empty(len(payloads), dtype=np.int64)
    for i, msg in enumerate(np.asarray(payloads, dtype=np.uint8)):
        comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, **({"zdict": zdict} if zdict else {}))
        data = comp.compress(msg.tobytes()) + comp.flush()
        decomp = zlib.decompressobj(-15, **({"zdict": zdict} if zdict else {}))
        if decomp.decompress(data) + decomp.flush() != msg.tobytes():
            raise MeasurementError(f"zlib round trip failed on message {i}")
        out[i] = len(data) * 8
    return out


def lzma_stream_bits(payloads: np.ndarray) -> int:
    """Size (bits) of all packed messages in one xz stream, verified by decompressing."""
    raw = np.asarray(payloads, dtype=np.uint8).tobytes()
    data = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
    if lzma.decompress(data) != raw:
        raise MeasurementError("lzma round trip failed")
    return len(data) * 8


@dataclass(frozen=True)
class CodedSize:
    """Mean coded bits per inference of one coder on one node's test codes."""

    coder: str
    bits_per_inference: float
    per_message: bool
    fitted_on: str


@dataclass(frozen=True)
class NodeBits:
    node: int
    code_len: int
    bits: int
    nominal_bits: int
    payload_bytes: int
    entropy: NodeEntropy
    cross_entropy_bits: float | None
    coded: tuple[CodedSize, ...] = ()

    def coded_bits(self, coder: str) -> float | None:
        for c in self.coded:
            if c.coder == coder:
                return c.bits_per_inference
        return None


HEADLINE_CODER = "huffman"


def node_bits(node: int, codes: np.ndarray, bits: int, train_codes: np.ndarray | None = None) -> NodeBits:
    """All bit figures of one node's test codes; coded sizes only when training codes are given."""
    codes = _check_codes(codes, bits)
    n, k = codes.shape
    coded: list[CodedSize] = []
    xent = None
    if train_codes is not None:
        train = _check_codes(train_codes, bits)
        if train.shape[1] != k:
            raise MeasurementError(f"node {node}: training codes have {train.shape[1]} positions, test codes {k}")
        model = fit_position_model(train, bits)
        fitted = f"train split ({train.shape[0]} inferences), add-{model.smoothing:g} smoothing"
        xent = float(cross_entropy_bits(codes, model).mean())
        coded.append(CodedSize("huffman", float(huffman_bits(codes, model).mean()), True, fitted))
        coded.append(CodedSize("range-stream", range_stream_bits(codes, model) / n, False, fitted))
        payloads, train_payloads = pack_codes(codes, bits), pack_codes(train, bits)
        coded.append(CodedSize("zlib", float(zlib_message_bits(payloads, train_payloads.tobytes()).mean()), True,
                               "preset dictionary: last 32 KiB of the packed train payloads"))
        coded.append(CodedSize("lzma", lzma_stream_bits(payloads) / n, False, "none (one stream of test payloads)"))
    return NodeBits(node, k, bits, nominal_bits(k, bits), packed_payload_bytes(k, bits),
                    node_entropy(codes, bits), xent, tuple(coded))


@dataclass(frozen=True)
class BitsReport:
    """Bit figures per inference summed over nodes."""

    nodes: tuple[NodeBits, ...]
    nominal_bits: int
    payload_bytes: int
    entropy_bits_per_inference: float
    coded_bits_per_inference: float | None
    coded: dict[str, float] = field(default_factory=dict)
    entropy_estimate: str = "per-position plug-in entropy, summed over positions and nodes"


def bits_report(codes: list[np.ndarray], bits: int, train_codes: list[np.ndarray] | None = None) -> BitsReport:
    """Per-node figures for every node's [samples, k] test codes (and training codes, for the
    coders), summed into per-inference totals."""
    if train_codes is not None and len(train_codes) != len(codes):
        raise MeasurementError(f"{len(codes)} nodes of test codes but {len(train_codes)} of training codes")
    nodes = tuple(node_bits(i, c, bits, None if train_codes is None else train_codes[i]) for i, c in enumerate(codes))
    coded: dict[str, float] = {}
    for name in (c.coder for c in nodes[0].coded):
        coded[name] = float(sum(n.coded_bits(name) or 0.0 for n in nodes))
    return BitsReport(nodes=nodes, nominal_bits=sum(n.nominal_bits for n in nodes),
                      payload_bytes=sum(n.payload_bytes for n in nodes),
                      entropy_bits_per_inference=float(sum(n.entropy.per_position for n in nodes)),
                      coded_bits_per_inference=coded.get(HEADLINE_CODER), coded=coded)
