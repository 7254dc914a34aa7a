"""An integer encoder laid out for the DSP-extension kernels (``devices/firmware/kernels/hil_dsp.h``).

The kernels read memory strictly in order, so the order is decided here, offline, per model:

- every activation tensor is an int16 *frame* (rows x columns x channel stride, HWC), the channel
  stride rounded up to even (the extra channel's weights are zero downstream), with a zero
  border as wide as the padding of the convolution that reads it;
- a convolution's output pixels go in groups of 4 *slots* (a 2x2 pool window, ``ceil(s*s/4)``
  groups for a larger window, else 4 pixels in raster order; a short group repeats a pixel);
  ``origins`` gives each slot's receptive field in the input frame and ``dests`` each output's
  place in the output frame. A receptive field is read as *tap pairs* (int16 x 2 words): each
  kernel row's run of ``k x channel stride`` elements as whole words, and with an odd run the
  rows' last elements paired with each other (a 5x5 one-channel kernel: 13 pairs, 1 zero tap).
  The weight stream holds, per pair of output channels, the tap pairs' weight words as
  [tap pair][channel], then the two bias words;
- a fully connected layer's weights are permuted to the input frame's element order and
  stored per block of 4 outputs: the 4 bias words, then per step of 8 inputs the 4 outputs'
  4 words each.

The plan also proves that the kernels' int32 arithmetic is exact for every possible input
(from the weights, the biases and each layer's input value range), or raises
:class:`DspUnsupported` with the reason; the generated model then uses the portable kernels.

Rounding: for a shift s > 0 the golden model rounds ``acc * 2^-s`` half to even. The bias words
carry ``bias + 2^(s-1) - 1``, so the kernel has ``v = acc + 2^(s-1) - 1`` and computes
``(v + ((v >> s) & 1)) >> s``. With ``acc = f 2^s + r`` (0 <= r < 2^s): r < 2^(s-1) keeps
``v >> s = f`` and the added bit (f's parity) cannot carry, giving f; r = 2^(s-1) gives
``v = f 2^s + 2^s - 1``, so f + 1 exactly when f is odd; r > 2^(s-1) carries (``v >> s = f + 1``)
and the added bit cannot carry again, giving f + 1. The bias is added after the max of a pool
window (max commutes with adding a constant), and requantisation is non-decreasing, so pooling
accumulators equals pooling requantised values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp, Requant

INT32_MAX = (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
SLOTS = 4  # output pixels per group: the conv kernel's 2 channels x 4 pixels register block
FC_BLOCK = 4  # outputs per fully connected block
FC_STEP = 8  # inputs per fully connected step (4 words, one LDM)
FLASH_BUDGET = 256 * 1024  # weight streams and tables; beyond, the portable kernels (int8) are smaller
RAM_BUDGET = 64 * 1024  # frames, im2col buffer and codes


class DspUnsupported(Exception):
    """This encoder cannot run on the DSP kernels exactly (or within the budgets); says why."""


@dataclass(frozen=True)
class Frame:
    """An int16 activation tensor in RAM: rows x columns x channel stride, zero border ``pad``."""

    tensor: int  # 0: the model input; i: the output of stage i - 1
    channels: int
    stride: int  # channel stride (elements per pixel)
    height: int
    width: int
    pad: int
    value_range: tuple[int, int]  # every value the tensor can hold

    @property
    def row(self) -> int:
        """Elements per frame row, border included."""
        return (self.width + 2 * self.pad) * self.stride

    def offset(self, y: int, x: int) -> int:
        """Element offset of pixel (y, x) of the interior."""
        return (y + self.pad) * self.row + (x + self.pad) * self.stride

    @property
    def elements(self) -> int:
        """Elements to allocate: the frame rounded up to whole fully connected steps."""
        n = (self.height + 2 * self.pad) * self.row
        return n + (-n) % FC_STEP


@dataclass(frozen=True)
class ConvStage:
    """A convolution, its requantisation and, when ``pool > 1``, the max-pool after it."""

    op_index: int
    source: Frame
    target: Frame
    pool: int
    weights: np.ndarray  # uint32 stream, see the module docstring
    origins: np.ndarray  # uint32, per slot
    dests: np.ndarray  # uint32, per window (pooled) or per slot
    windows: int
    window_groups: int
    k: int
    run: int
    tap_pairs: int
    channel_pairs: int
    requant: Requant

    @property
    def col_words(self) -> int:
        return self.window_groups * SLOTS * self.tap_pairs


@dataclass(frozen=True)
class PoolStage:
    """A max-pool that does not follow a convolution."""

    op_index: int
    source: Frame
    target: Frame
    size: int


@dataclass(frozen=True)
class FcStage:
    """A fully connected layer; ``target`` None: it writes the codes."""

    op_index: int
    source: Frame
    target: Frame | None
    weights: np.ndarray  # uint32 stream
    blocks: int
    steps: int
    requant: Requant


Stage = Union[ConvStage, PoolStage, FcStage]


@dataclass(frozen=True)
class DspPlan:
    input: Frame
    stages: tuple[Stage, ...]
    code_slots: int  # the codes buffer: whole blocks of 4

    @property
    def frames(self) -> tuple[Frame, ...]:
        return (self.input, *(s.target for s in self.stages if s.target is not None))

    @property
    def col_words(self) -> int:
        return max([s.col_words for s in self.stages if isinstance(s, ConvStage)], default=0)

    @property
    def flash_bytes(self) -> int:
        arrays = [a for s in self.stages if isinstance(s, (ConvStage, FcStage)) for a in _arrays(s)]
        return sum(4 * a.size for a in arrays)

    @property
    def ram_bytes(self) -> int:
        return sum(2 * f.elements for f in self.frames) + 4 * self.col_words + self.code_slots


def _arrays(stage: ConvStage | FcStage) -> tuple[np.ndarray, ...]:
    if isinstance(stage, ConvStage):
        return stage.weights, stage.origins, stage.dests
    return (stage.weights,)


def _even(n: int) -> int:
    return n + n % 2


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def rounding_constant(shift: int) -> int:
    """What the bias words add for round-half-to-even (see the module docstring)."""
    return (1 << (shift - 1)) - 1 if shift > 0 else 0


def _words(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """int16 pairs as uint32 words: lo in the low halfword."""
    return ((lo.astype(np.int64) & 0xFFFF) | ((hi.astype(np.int64) & 0xFFFF) << 16)).astype(np.uint32)


def _check_exact(what: str, weight: np.ndarray, bias: np.ndarray, rq: Requant, inputs: tuple[int, int]) -> None:
    """Raise DspUnsupported unless every sum the kernels form fits int32 for every input."""
    if not -31 < rq.shift < 32:
        raise DspUnsupported(f"{what}: shift {rq.shift} is outside the kernels' -30..31")
    if inputs[0] < INT16_MIN or inputs[1] > INT16_MAX:
        raise DspUnsupported(f"{what}: input values {inputs} do not fit int16")
    largest = max(abs(inputs[0]), abs(inputs[1]))
    sums = np.abs(weight.astype(np.int64)).reshape(weight.shape[0], -1).sum(axis=1) * largest
    biased = sums + np.abs(bias.astype(np.int64) + rounding_constant(rq.shift)) + 1
    if rq.shift < 0:
        biased = biased << -rq.shift
    if sums.max(initial=0) > INT32_MAX:  # a pool window's maximum is taken before the bias
        raise DspUnsupported(f"{what}: a sum of products can reach {sums.max()}, beyond int32")
    if biased.max(initial=0) > INT32_MAX:
        raise DspUnsupported(f"{what}: the requantised sum can reach {biased.max()}, beyond int32")


def _conv_stage(index: int, op: ConvOp, pool: int, source: Frame, target: Frame) -> ConvStage:
    out_ch, in_ch, k, _ = op.weight.shape
    assert source.pad == op.padding, "the input frame's border is the convolution's padding"
    _check_exact(f"op {index} (conv)", op.weight, op.bias, op.requant, source.value_range)
    run = k * source.stride
    # Each tap pair: two (kernel row, element of the row's run) or None for a zero tap.
    pairs: list[tuple[tuple[int, int], tuple[int, int] | None]] = [
        ((r, 2 * j), (r, 2 * j + 1)) for r in range(k) for j in range(run // 2)]
    if run % 2:
        pairs += [((r, run - 1), (r + 1, run - 1) if r + 1 < k else None) for r in range(0, k, 2)]
    zero = in_ch * k * k  # index of a zero weight column

    def flat(tap: tuple[int, int] | None) -> int:
        if tap is None:
            return zero
        row, element = tap
        column, channel = divmod(element, source.stride)
        return zero if channel >= in_ch else (channel * k + row) * k + column

    index_table = np.array([[flat(lo), flat(hi)] for lo, hi in pairs], dtype=np.int64)
    channel_pairs = _ceil_div(out_ch, 2)
    weight = np.zeros((2 * channel_pairs, zero + 1), dtype=np.int64)
    weight[:out_ch, :zero] = op.weight.reshape(out_ch, -1)
    halves = weight[:, index_table]  # [channel, tap pair, lo/hi]
    words = _words(halves[..., 0], halves[..., 1])
    bias = np.zeros(2 * channel_pairs, dtype=np.int64)
    bias[:out_ch] = op.bias.astype(np.int64) + rounding_constant(op.requant.shift)
    stream = np.concatenate([
        np.concatenate([words[2 * p:2 * p + 2].T.ravel(), (bias[2 * p:2 * p + 2] & 0xFFFFFFFF).astype(np.uint32)])
        for p in range(channel_pairs)])

    oh, ow = op.output_shape((in_ch, source.height, source.width))[1:]
    if pool > 1:
        cells = [(py, px) for py in range(oh // pool) for px in range(ow // pool)]
        slots = [[(py * pool + dy, px * pool + dx) for dy in range(pool) for dx in range(pool)] for py, px in cells]
        dests = [target.offset(py, px) for py, px in cells]
    else:
        pixels = [(y, x) for y in range(oh) for x in range(ow)]
        slots = [pixels[i:i + SLOTS] for i in range(0, len(pixels), SLOTS)]
        dests = []
    if not slots:
        raise DspUnsupported(f"op {index} (conv): no output pixels")
    window_groups = _ceil_div(len(slots[0]), SLOTS)
    slots = [s + [s[-1 if pool <= 1 else 0]] * (window_groups * SLOTS - len(s)) for s in slots]
    if pool <= 1:
        dests = [target.offset(y, x) for window in slots for y, x in window]
    origins = [y * source.row + x * source.stride for window in slots for y, x in window]
    return ConvStage(index, source, target, pool, stream, np.array(origins, dtype=np.uint32),
                     np.array(dests, dtype=np.uint32), len(slots), window_groups, k, run, len(pairs),
                     channel_pairs, op.requant)


def _fc_stage(index: int, op: FcOp, source: Frame, target: Frame | None) -> FcStage:
    out_len, in_len = op.weight.shape
    _check_exact(f"op {index} (fc)", op.weight, op.bias, op.requant, source.value_range)
    pixels = source.height * source.width
    i = np.arange(in_len)
    positions = (i % pixels) * source.stride + i // pixels  # flatten order (c, y, x) -> frame element
    steps = _ceil_div(pixels * source.stride, FC_STEP)
    blocks = _ceil_div(out_len, FC_BLOCK)
    weight = np.zeros((FC_BLOCK * blocks, FC_STEP * steps), dtype=np.int64)
    weight[:out_len, positions] = op.weight
    words = _words(weight[:, 0::2], weight[:, 1::2])  # [output, word]
    bias = np.zeros(FC_BLOCK * blocks, dtype=np.int64)
    bias[:out_len] = op.bias.astype(np.int64) + rounding_constant(op.requant.shift)
    bias_words = (bias & 0xFFFFFFFF).astype(np.uint32)
    per_step = FC_STEP // 2
    stream = np.concatenate([
        np.concatenate([bias_words[FC_BLOCK * b:FC_BLOCK * (b + 1)],
                        words[FC_BLOCK * b:FC_BLOCK * (b + 1)].reshape(FC_BLOCK, steps, per_step)
                        .transpose(1, 0, 2).ravel()])
        for b in range(blocks)])
    return FcStage(index, source, target, stream, blocks, steps, op.requant)


def _stages(ops: tuple) -> list[tuple[int, ConvOp | MaxPoolOp | FcOp, int, int]]:
    """(first op index, op, pool size fused after it, ops consumed) per kernel call."""
    specs: list[tuple[int, ConvOp | MaxPoolOp | FcOp, int, int]] = []
    i = 0
    while i < len(ops):
        op, nxt = ops[i], ops[i + 1] if i + 1 < len(ops) else None
        if isinstance(op, ConvOp) and isinstance(nxt, MaxPoolOp):
            specs.append((i, op, nxt.size, 2))
        else:
            specs.append((i, op, 1, 1))
        i += specs[-1][3]
    return specs


def _output_range(index: int, rq: Requant, kind: str) -> tuple[int, int]:
    if rq.clip_min < INT16_MIN or rq.clip_max > INT16_MAX:
        raise DspUnsupported(f"op {index} ({kind}): outputs {rq.clip_min}..{rq.clip_max} do not fit int16")
    return rq.clip_min, rq.clip_max


def plan_dsp(encoder: IntEncoder) -> DspPlan:
    """The DSP-kernel layout of ``encoder``; raises DspUnsupported if it cannot be exact."""
    specs = _stages(encoder.ops)
    shapes = encoder.shapes()
    if not isinstance(specs[-1][1], FcOp):
        raise DspUnsupported("the encoder does not end with a fully connected layer")

    def pad_for(n: int) -> int:  # a frame's border: the padding of the convolution that reads it
        reader = specs[n][1] if n < len(specs) else None
        return reader.padding if isinstance(reader, ConvOp) else 0

    source = Frame(0, 1, 1, *encoder.input_shape, pad_for(0), (0, 255))
    stages: list[Stage] = []
    for n, (index, op, pool, consumed) in enumerate(specs):
        shape = shapes[index + consumed]
        if isinstance(op, ConvOp):
            target = Frame(n + 1, shape[0], _even(shape[0]), shape[1], shape[2], pad_for(n + 1),
                           _output_range(index, op.requant, "conv"))
            stages.append(_conv_stage(index, op, pool, source, target))
        elif isinstance(op, MaxPoolOp):
            target = Frame(n + 1, source.channels, source.stride, shape[1], shape[2], pad_for(n + 1),
                           source.value_range)
            stages.append(PoolStage(index, source, target, op.size))
        else:
            if n == len(specs) - 1:
                stages.append(_fc_stage(index, op, source, None))
                break
            target = Frame(n + 1, shape[0], _even(shape[0]), 1, 1, 0, _output_range(index, op.requant, "fc"))
            stages.append(_fc_stage(index, op, source, target))
        source = target
    last = stages[-1]
    assert isinstance(last, FcStage)
    plan = DspPlan(stages[0].source, tuple(stages), FC_BLOCK * last.blocks)
    if plan.flash_bytes > FLASH_BUDGET:
        raise DspUnsupported(f"weights and tables take {plan.flash_bytes} bytes as int16 (budget {FLASH_BUDGET})")
    if plan.ram_bytes > RAM_BUDGET:
        raise DspUnsupported(f"frames and buffers take {plan.ram_bytes} bytes of RAM (budget {RAM_BUDGET})")
    return plan
