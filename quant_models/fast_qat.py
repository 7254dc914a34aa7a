"""The training forward of a quantized node encoder, without Brevitas' per-op overhead.

Brevitas builds each quantizer from dozens of small modules and wraps every tensor in a
QuantTensor; a QAT step of the paper encoder runs ~3,000 small ops, and the activation quantizer
of the first convolution alone makes ~20 memory passes over a 400k-element tensor (bool compares
and ``torch.where`` are slow on CPU).

Here the same forward is computed from the same parameters by one autograd node per layer
quantizer (weights and bias together; an activation with its scale and the max-pool after it)
with hand-written backward formulas, so training gives the same parameters and gradients bit for
bit as the Brevitas modules (tests/models/test_fast_qat.py checks them after every step, the
integer export, tied weight maxima, and graphs kept alive across steps). Only training uses it;
evaluation, export and ``to_integer()`` use Brevitas.

Why the backward formulas are exact (every scale is a power of two, every zero point 0):
- constant terms (the 2^bits threshold, the fixed pixel scale) are computed once through the
  Brevitas modules themselves;
- ``ScalarClampMinSteFn`` and ``CeilSteFn`` pass the gradient through unchanged; ``2 ** c``,
  ``log2``, ``/ threshold``, ``max`` and ``abs`` are differentiated with autograd's formulas in
  its float32 operation order (scalars in numpy float32, which rounds the same);
- ``IntQuant`` computes ``round(x / s) * s``: autograd gives grad_x = (g * s) / s = g and
  grad_s = sum(g * y) - sum(g_kept * x / s^2), equal to the formulas below whenever g * s and
  x / s^2 are normal fp32 numbers; each sum runs over a tensor of the same layout as autograd's;
- a scale used by several consumers gets their gradients added in autograd's order for the
  Brevitas graph: the later layer's bias scale first, then the quantizer's own two terms;
- a clamp's gradient mask (with ReLU's) is one ``hardtanh_backward`` on the unrounded x / s,
  with the float32 bounds between which round (half to even) stays inside [lo, hi];
- a max-pool after a quantizer pools the integer codes in channels_last layout (that CPU kernel
  is ~10x faster than the NCHW one here) and scales the result: the same values and the same
  first-maximum indices as pooling the scaled codes, since scaling by s > 0 is exact and monotone.

A quantizer this module does not recognise (another Brevitas version, another quantizer
recipe) makes :func:`build_plan` return None, and the encoder keeps the Brevitas forward.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from brevitas.core.function_wrapper.clamp import TensorClamp
from brevitas.core.function_wrapper.misc import Identity, LogTwo
from brevitas.core.function_wrapper.ops_ste import (CeilSte, RoundSte, ScalarSignedClampMinSte,
                                                    TensorClampSte)
from brevitas.core.restrict_val import PowerOfTwoRestrictValue
from brevitas.core.scaling.runtime import StatsFromParameterScaling
from brevitas.core.scaling.standalone import ConstScaling, ParameterScaling
from brevitas.core.stats.stats_op import AbsMax
from brevitas.core.zero_point import ZeroZeroPoint

_hardtanh_backward = torch.ops.aten.hardtanh_backward
_hardtanh_backward_out = torch.ops.aten.hardtanh_backward.grad_input
_max_pool2d_backward = torch.ops.aten.max_pool2d_with_indices_backward
LN2 = math.log(2.0)  # what autograd multiplies by for d(2^c)/dc and divides by for d log2(x)/dx
LN2_F32 = np.float32(LN2)  # the same, as torch's float32 kernels use it
_ONE = torch.ones(())


class _NotReproduced(Exception):
    """A quantizer whose recipe this module does not reproduce."""


def _require(condition: bool) -> None:
    if not condition:
        raise _NotReproduced


def _is(obj: object, cls: type) -> bool:
    return type(obj) is cls


def round_keep_bounds(lo: float, hi: float) -> tuple[float, float]:
    """Float32 (a, b) such that a < t < b exactly when lo <= round(t) <= hi (half to even):
    a clamp's gradient mask as one exclusive-bounds compare on the unrounded t."""
    f32 = np.float32
    up, down = f32(np.inf), f32(-np.inf)
    x = f32(hi) + f32(0.5)
    above = min(c for c in (np.nextafter(x, down), x, np.nextafter(x, up)) if np.rint(c) > hi)
    x = f32(lo) - f32(0.5)
    below = max(c for c in (np.nextafter(x, down), x, np.nextafter(x, up)) if np.rint(c) < lo)
    return float(below), float(above)


def _f32(t: torch.Tensor) -> np.float32:
    """A one-element float32 tensor as a numpy float32: the scalar tail of a backward formula is
    computed in numpy, whose float32 ops round as torch's do, at a fraction of the cost."""
    return np.float32(t.item())


def _sum32(t: torch.Tensor) -> np.float32:
    return np.float32(t.sum().item())


def _channels_last_strides(shape: torch.Size) -> tuple[int, ...]:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


class _Buffers:
    """The big scratch tensors of one quantizer (x / s, the codes, one more), reused from step
    to step: a set handed to a forward comes back only when autograd frees the node that saved
    it, so no graph that could still run backward sees it overwritten. Fresh 1.6 MB tensors
    each step made glibc grow and trim the heap every step (~1,000 page faults per step)."""

    KEEP = 4  # free sets kept (batch shapes differ at an epoch's end)
    MIN_NUMEL = 1 << 16  # smaller tensors come from the heap's free lists anyway

    def __init__(self) -> None:
        self.free: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def take(self, ctx: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for i, bufs in enumerate(self.free):
            if bufs[0].shape == like.shape and bufs[0].dtype == like.dtype:
                del self.free[i]
                break
        else:
            bufs = (torch.empty_like(like), torch.empty_like(like), torch.empty(like.numel(), dtype=like.dtype))
        weakref.finalize(ctx, self._give_back, bufs)
        return bufs

    def _give_back(self, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        if len(self.free) < self.KEEP:
            self.free.append(bufs)


# ---- autograd functions: one node per quantizer ------------------------------------------

class _ActQuantFn(torch.autograd.Function):
    """ReLU (or identity), round(x / s) clamped to [lo, hi] (TensorClamp: no gradient where
    clamped), times s, with s = clamp_min(2^ceil(value), min) / threshold; optionally followed by
    a k x k max-pool. Returns (output, s): s is an output so that the next layer's bias scale
    adds its gradient first, as in the Brevitas graph."""

    @staticmethod
    def forward(ctx, x, value, quant: _ActQuantizer, pool: int):
        if value is None:  # a constant scale
            assert quant.const_scale is not None
            power, s = None, quant.const_scale.clone()
            ctx.mark_non_differentiable(s)
        else:
            power = 2.0 ** torch.ceil(value)
            s = torch.clamp_min(power, quant.scale_min) / quant.threshold
        if x.numel() >= _Buffers.MIN_NUMEL and x.is_contiguous():
            q, y, scratch = quant.buffers.take(ctx, x)
            torch.div(x, s, out=q)
        else:
            q, y, scratch = x / s, None, None
        if quant.relu:  # == relu(x) / s + 0 (also where x < 0: clamp_min gives +0)
            q.clamp_min_(0.0)
        else:
            q.add_(quant.zero_point)
        y = torch.round(q, out=y).clamp_(quant.lo, quant.hi)
        if pool:
            y_cl = y.contiguous(memory_format=torch.channels_last) if scratch is None else \
                scratch.as_strided(y.shape, _channels_last_strides(y.shape)).copy_(y)
            codes, idx = F.max_pool2d(y_cl, pool, return_indices=True)
            out = torch.mul(codes, s, out=codes.new_empty(codes.shape))  # NCHW, as Brevitas pools
            ctx.save_for_backward(q, y, power, idx)
        else:
            out = y * s
            ctx.save_for_backward(q, y, power)
        # scratch: contents never read back, so no saved-tensor version check (a backward run
        # twice with retain_graph reuses it)
        ctx.quant, ctx.pool, ctx.scratch = quant, pool, scratch
        ctx.set_materialize_grads(False)
        return out, s

    @staticmethod
    def backward(ctx, g_out, g_s):
        saved = ctx.saved_tensors
        q, y, power = saved[:3]
        quant, pool, scratch = ctx.quant, ctx.pool, ctx.scratch
        if g_out is None:
            g_out = torch.zeros(saved[3].shape if pool else q.shape)
        if pool:  # a fresh NCHW tensor, ours to mask in place below
            k = [pool, pool]
            g = _max_pool2d_backward(g_out, y, k, k, [0, 0], [1, 1], False, saved[3])
        else:
            g = g_out
        if power is None:  # a constant scale: only x has a gradient
            return _hardtanh_backward(g, q, quant.keep_lo, quant.keep_hi), None, None, None
        # each product is summed in the memory order autograd gives it (that of g * y)
        prod = g * y if scratch is None or not g.is_contiguous() else torch.mul(g, y, out=scratch.view(y.shape))
        s_mul = _sum32(prod)
        g_x = _hardtanh_backward_out(g, q, quant.keep_lo, quant.keep_hi, grad_input=g) if pool else \
            _hardtanh_backward(g, q, quant.keep_lo, quant.keep_hi)
        prod = torch.mul(g_x, q, out=prod) if g_x.stride() == prod.stride() else g_x * q
        g_scale = (s_mul if g_s is None else _f32(g_s) + s_mul) + -_sum32(prod)
        g_value = (g_scale / quant.threshold_f32) * (_f32(power) * LN2_F32)
        return g_x, torch.tensor(g_value).reshape(power.shape), None, None


class _AffineQuantFn(torch.autograd.Function):
    """Weights: round(w / s) clamped straight-through (TensorClampSte), times s, with
    s = clamp_min(2^ceil(log2(clamp_min(max|w|, m))), m') / threshold. Bias: int32 TensorClamp
    at the scale s * in_scale."""

    @staticmethod
    def forward(ctx, w, b, in_scale, quant: _AffineQuantizer):
        magnitude = torch.abs(w.reshape(-1))
        absmax = torch.max(magnitude)
        clamped = torch.clamp_min(absmax, quant.stats_min)
        power = 2.0 ** torch.ceil(torch.log2(clamped))
        s = torch.clamp_min(power, quant.scale_min) / quant.w_threshold
        t_w = (w / s).add_(quant.zero_point)
        y_w = torch.round(t_w).clamp_(quant.w_lo, quant.w_hi)
        shape = quant.channel_shape
        ctx.in_scale_shape = in_scale.shape
        in_scale = in_scale.view(shape)
        bias_scale = (s.view(shape) * in_scale).view(-1)
        t_b = (b / bias_scale).add_(quant.zero_point)
        y_b = torch.round(t_b).clamp_(quant.b_lo, quant.b_hi)
        ctx.save_for_backward(w, magnitude, t_w, y_w, t_b, y_b)
        ctx.quant, ctx.absmax = quant, absmax  # absmax: for the NaN/inf case only
        ctx.scalars = [np.float32(t.item()) for t in (absmax, clamped, power, s, in_scale)]
        return y_w * s, y_b * bias_scale

    @staticmethod
    def backward(ctx, g_w, g_b):
        w, magnitude, t_w, y_w, t_b, y_b = ctx.saved_tensors
        quant = ctx.quant
        top, clamped, power, s, in_scale = ctx.scalars
        # bias quantizer: its scale's two terms, then the product s * in_scale
        g_b_kept = _hardtanh_backward(g_b, t_b, quant.b_keep_lo, quant.b_keep_hi)
        g_bias_scale = _sum32(g_b * y_b) + -_sum32(g_b_kept * t_b)
        g_in_scale = torch.tensor(g_bias_scale * s).reshape(ctx.in_scale_shape) \
            if ctx.needs_input_grad[2] else None
        # weight scale: the bias path first, then the weight quantizer's Mul and Div terms
        g_s = (g_bias_scale * in_scale + _sum32(g_w * y_w)) + -_sum32(g_w * t_w)
        g_absmax = ((g_s / quant.w_threshold_f32) * (power * LN2_F32)) / (clamped * LN2_F32)
        # max|w|: autograd's MaxBackward1 (the gradient split evenly over the tied maxima, +0
        # elsewhere) then AbsBackward0 (times sgn w); the slice w[:] adds it to the STE gradient
        if np.isfinite(top):  # maxima: |w| > the float below max|w|, as one float compare
            below = float(np.nextafter(top, np.float32(-np.inf)))
            count = _hardtanh_backward(_ONE, magnitude, below, math.inf).sum()
            g_magnitude = _hardtanh_backward(torch.tensor(g_absmax / np.float32(count.item())), magnitude,
                                             below, math.inf)
        else:
            at_max = magnitude.isnan() if np.isnan(top) else magnitude == ctx.absmax
            g_magnitude = torch.where(at_max, torch.tensor(g_absmax) / at_max.sum(), 0.0)
        return g_w + (g_magnitude * torch.sgn(w.reshape(-1))).view(w.shape), g_b_kept, g_in_scale, None


# ---- quantizers read off the Brevitas modules ----------------------------------------------

class _ActQuantizer:
    """A QuantReLU or QuantIdentity with power-of-two parameter (or constant) scaling."""

    def __init__(self, act_quant_proxy: Any):  # Brevitas' modules are reached by attribute
        fused = act_quant_proxy.fused_activation_quant_proxy
        tensor_quant = fused.tensor_quant
        activation = type(fused.activation_impl).__name__
        _require(activation in ("ReLU", "Identity"))
        self.relu = activation == "ReLU"
        int_quant = tensor_quant.int_quant
        _require(_is(int_quant.float_to_int_impl, RoundSte) and _is(int_quant.tensor_clamp_impl, TensorClamp))
        _require(_is(int_quant.input_view_impl, Identity))
        _require(type(int_quant.delay_wrapper.delay_impl).__name__ == "_NoDelay")
        _require(_is(tensor_quant.zero_point_impl, ZeroZeroPoint))
        bit_width = tensor_quant.msb_clamp_bit_width_impl()
        self.lo, self.hi = float(int_quant.min_int(bit_width)), float(int_quant.max_int(bit_width))
        _require(abs(self.lo) < 2 ** 22 and abs(self.hi) < 2 ** 22)
        _require(not self.relu or self.lo <= 0.0)
        self.keep_lo, self.keep_hi = round_keep_bounds(self.lo, self.hi)
        if self.relu:  # relu's own mask: gradient only where x > 0, i.e. x / s > 0
            self.keep_lo = max(self.keep_lo, 0.0)
        self.zero_point = torch.zeros(())
        self.buffers = _Buffers()
        self.scaling = scaling = tensor_quant.scaling_impl
        with torch.no_grad():
            int_threshold = tensor_quant.int_scaling_impl(bit_width)
            if _is(scaling, ParameterScaling):
                for restrict in (scaling.restrict_clamp_scaling, scaling.restrict_clamp_threshold):
                    _require(_is(restrict.restrict_value_impl, PowerOfTwoRestrictValue))
                    _require(_is(restrict.restrict_value_impl.float_to_int_impl, CeilSte))
                _require(_is(scaling.restrict_threshold_pre, LogTwo))
                _require(_is(scaling.restrict_clamp_threshold.clamp_ste, Identity))
                _require(_is(scaling.restrict_clamp_scale_threshold.restrict_value_impl, Identity))
                _require(_is(scaling.restrict_clamp_scale_threshold.clamp_ste, Identity))
                _require(_is(scaling.restrict_clamp_scaling.clamp_ste, ScalarSignedClampMinSte))
                self.scale_min = scaling.restrict_clamp_scaling.clamp_ste.min_val
                self.threshold = scaling.restrict_clamp_threshold(
                    scaling.restrict_threshold_pre(int_threshold)).clone()
                self.threshold_f32 = np.float32(self.threshold.item())
                self.const_scale: torch.Tensor | None = None
            else:
                _require(_is(scaling, ConstScaling))
                self.const_scale = scaling(torch.zeros(1), int_threshold).clone()

    def __call__(self, x: torch.Tensor, pool: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The quantized activation (max-pooled by ``pool`` if not 0) and its scale."""
        if self.const_scale is None or x.requires_grad:
            return _ActQuantFn.apply(x, None if self.const_scale is not None else self.scaling.value, self, pool)
        s = self.const_scale  # the input quantizer: no gradient to compute
        if self.relu:
            x = torch.relu(x)
        out = torch.round((x / s).add_(self.zero_point)).clamp_(self.lo, self.hi) * s
        return (F.max_pool2d(out, pool) if pool else out), s


class _AffineQuantizer:
    """A QuantConv2d or QuantLinear: Int8WeightPerTensorFixedPoint weights, Int32Bias."""

    def __init__(self, layer: Any, conv: bool):
        self.layer, self.conv = layer, conv
        tensor_quant = layer.weight_quant.tensor_quant
        int_quant = tensor_quant.int_quant
        _require(_is(int_quant.float_to_int_impl, RoundSte) and _is(int_quant.tensor_clamp_impl, TensorClampSte))
        _require(_is(tensor_quant.zero_point_impl, ZeroZeroPoint))
        _require(_is(tensor_quant.scaling_impl, StatsFromParameterScaling))
        stats = tensor_quant.scaling_impl.parameter_list_stats.stats.stats_impl
        _require(_is(stats, AbsMax) and stats.stats_reduce_dim is None)
        stats_scaling = tensor_quant.scaling_impl.stats_scaling_impl
        restrict = stats_scaling.restrict_clamp_scaling
        _require(_is(stats_scaling.affine_rescaling, Identity) and _is(stats_scaling.restrict_scaling_pre, LogTwo))
        _require(_is(restrict.restrict_value_impl, PowerOfTwoRestrictValue))
        _require(_is(restrict.restrict_value_impl.float_to_int_impl, CeilSte))
        _require(_is(stats_scaling.clamp_scaling.clamp_min_ste, ScalarSignedClampMinSte))
        _require(_is(restrict.clamp_ste, ScalarSignedClampMinSte))
        self.stats_min = stats_scaling.clamp_scaling.clamp_min_ste.min_val
        self.scale_min = restrict.clamp_ste.min_val
        bit_width = tensor_quant.msb_clamp_bit_width_impl()
        self.w_lo, self.w_hi = float(int_quant.min_int(bit_width)), float(int_quant.max_int(bit_width))
        with torch.no_grad():
            self.w_threshold = stats_scaling.restrict_clamp_threshold(
                stats_scaling.restrict_threshold_pre(tensor_quant.int_scaling_impl(bit_width))).clone()
        self.w_threshold_f32 = np.float32(self.w_threshold.item())
        bias_quant = layer.bias_quant.tensor_quant
        _require(type(bias_quant).__name__ == "PrescaledRestrictIntQuant")
        _require(_is(bias_quant.int_quant.float_to_int_impl, RoundSte))
        _require(_is(bias_quant.int_quant.tensor_clamp_impl, TensorClamp))
        _require(float(bias_quant.zero_point()) == 0.0)
        bias_bits = bias_quant.msb_clamp_bit_width_impl()
        # Brevitas compares with fp32 bounds (2^31 - 1 rounds to 2^31): the same floats here
        self.b_lo = float(bias_quant.int_quant.min_int(bias_bits).float())
        self.b_hi = float(bias_quant.int_quant.max_int(bias_bits).float())
        self.b_keep_lo, self.b_keep_hi = round_keep_bounds(self.b_lo, self.b_hi)
        self.zero_point = torch.zeros(())
        self.channel_shape = (1, -1, 1, 1) if conv else (1, -1)

    def __call__(self, x: torch.Tensor, in_scale: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        w_q, b_q = _AffineQuantFn.apply(layer.weight, layer.bias, in_scale, self)
        return layer._conv_forward(x, w_q, b_q) if self.conv else F.linear(x, w_q, b_q)


# ---- the plan of one encoder ---------------------------------------------------------------

StageKind = Literal["conv", "pool", "fc"]


@dataclass(frozen=True)
class Stage:
    """One encoder stage as the model describes it: a conv or FC layer and its activation
    quantizer proxy, or a max-pool size."""
    kind: StageKind
    layer: Any = None
    act_quant: Any = None
    pool: int = 0


@dataclass(frozen=True)
class _Step:
    kind: StageKind
    affine: _AffineQuantizer | None
    act: _ActQuantizer | None
    pool: int  # the pool size of a pool step, or of the pool fused after a conv's quantizer


@dataclass(frozen=True)
class FastPlan:
    input: _ActQuantizer
    steps: tuple[_Step, ...]
    clip_to_first_level: bool


def build_plan(input_act_quant: Any, stages: Sequence[Stage], clip_to_first_level: bool) -> FastPlan | None:
    """The fast forward of an encoder, or None when one of its quantizers is not reproduced."""
    try:
        steps: list[_Step] = []
        for stage in stages:
            if stage.kind == "pool":
                if steps and steps[-1].kind == "conv" and not steps[-1].pool:
                    steps[-1] = _Step("conv", steps[-1].affine, steps[-1].act, stage.pool)
                else:
                    steps.append(_Step("pool", None, None, stage.pool))
            else:
                assert stage.layer is not None and stage.act_quant is not None
                steps.append(_Step(stage.kind, _AffineQuantizer(stage.layer, stage.kind == "conv"),
                                   _ActQuantizer(stage.act_quant), 0))
        return FastPlan(_ActQuantizer(input_act_quant), tuple(steps), clip_to_first_level)
    except (_NotReproduced, AttributeError):
        return None


def training_forward(plan: FastPlan, x: torch.Tensor) -> torch.Tensor:
    """The code values of the encoder for a batch of views, as its Brevitas forward gives them."""
    x, s = plan.input(x)
    for step in plan.steps:
        if step.kind == "pool":
            x = F.max_pool2d(x, step.pool)
            continue
        assert step.affine is not None and step.act is not None
        if step.kind == "fc":
            x = x.flatten(1)
        x, s = step.act(step.affine(x, s), step.pool)
    if plan.clip_to_first_level:
        x = torch.minimum(x, s)
    return x
