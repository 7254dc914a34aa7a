"""The training forward of a quantized node encoder, without Brevitas' per-op overhead.

Brevitas builds each quantizer from dozens of small modules and wraps every tensor in a
QuantTensor; a QAT step of the paper encoder runs ~3,000 small ops, and the activation quantizer
of the first convolution alone makes ~20 memory passes over a 400k-element tensor (bool compares
and ``torch.where`` are slow on CPU). Profiled on 2 cores, ~47% of a QAT step was that
elementwise quantizer math and ~10% the convolutions.

Here the same forward is computed from the same parameters with a few ops per quantizer and
hand-written backward formulas, so training gives the same parameters bit for bit as the Brevitas
modules (tests/models/test_fast_qat.py checks parameters and gradients after every step, and the
integer export). Only training uses it; evaluation, export and ``to_integer()`` use Brevitas.

Why the backward formulas are exact (every scale is a power of two, every zero point 0):
- constant terms (the 2^bits threshold, the fixed pixel scale) are computed once through the
  Brevitas modules themselves;
- ``ScalarSignedClampMinSte`` on a non-negative value is ``clamp_min`` with identity gradient;
- ``IntQuant`` computes ``round(x / s) * s``: autograd gives grad_x = (g * s) / s = g and
  grad_s = sum(g * y) - sum(g_kept * x / s^2), equal to the formulas below whenever g * s and
  x / s^2 are normal fp32 numbers; the two scale terms are returned through two inputs (the same
  tensor twice) so autograd adds them in Brevitas' order (the Mul node's, then the Div node's).

A quantizer this module does not recognise (another Brevitas version, another quantizer
recipe) makes :func:`build_plan` return None, and the encoder keeps the Brevitas forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

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
from brevitas.ops.autograd_ste_ops import ceil_ste_impl, scalar_clamp_min_ste_impl

_threshold_backward = torch.ops.aten.threshold_backward


class _NotReproduced(Exception):
    """A quantizer whose recipe this module does not reproduce."""


def _require(condition: bool) -> None:
    if not condition:
        raise _NotReproduced


def _is(obj: object, cls: type) -> bool:
    return type(obj) is cls


# ---- autograd functions: one node per quantizer ------------------------------------------

class _ActQuantFn(torch.autograd.Function):
    """round(x / s) clamped to [lo, hi] (TensorClamp: no gradient where clamped), times s."""

    @staticmethod
    def forward(ctx, x, s_mul, s_div, zp, lo: float, hi: float, need_lo: bool):
        t = (x / s_div).add_(zp)
        y = torch.round(t)
        keep_hi = (hi + 0.5) - y  # > 0 <=> y <= hi (y is integral and hi + 0.5 exact)
        keep_lo = y - (lo - 0.5) if need_lo else keep_hi
        y.clamp_(lo, hi)
        ctx.save_for_backward(t, y, keep_hi, keep_lo)
        ctx.s_shape, ctx.need_lo = s_mul.shape, need_lo
        return y * s_mul

    @staticmethod
    def backward(ctx, g):
        t, y, keep_hi, keep_lo = ctx.saved_tensors
        grad_s_mul = (g * y).sum().reshape(ctx.s_shape)
        g_kept = _threshold_backward(g, keep_hi, 0.0)
        if ctx.need_lo:
            g_kept = _threshold_backward(g_kept, keep_lo, 0.0)
        grad_s_div = (g_kept * t).sum().neg().reshape(ctx.s_shape)
        return g_kept, grad_s_mul, grad_s_div, None, None, None, None


class _WeightQuantFn(torch.autograd.Function):
    """round(w / s) clamped straight-through (TensorClampSte), times s."""

    @staticmethod
    def forward(ctx, w, s_mul, s_div, zp, lo: float, hi: float):
        t = (w / s_div).add_(zp)
        y = torch.round(t).clamp_(lo, hi)
        ctx.save_for_backward(t, y)
        ctx.s_shape = s_mul.shape
        return y * s_mul

    @staticmethod
    def backward(ctx, g):
        t, y = ctx.saved_tensors
        return (g, (g * y).sum().reshape(ctx.s_shape), (g * t).sum().neg().reshape(ctx.s_shape),
                None, None, None)


class _BiasQuantFn(torch.autograd.Function):
    """Int32 bias: TensorClamp at the int32 range, compared as Brevitas does (2^31 - 1 is not
    exact in fp32, so the bounds stay tensors and the comparisons stay ``>`` and ``<``)."""

    @staticmethod
    def forward(ctx, b, s_mul, s_div, zp, lo, hi):
        t = (b / s_div).add_(zp)
        y = torch.round(t)
        above = y > hi
        y = torch.where(above, hi.type_as(y), y)
        below = y < lo
        y = torch.where(below, lo.type_as(y), y)
        ctx.save_for_backward(t, y, ~(above | below))
        ctx.s_shape = s_mul.shape
        return y * s_mul

    @staticmethod
    def backward(ctx, g):
        t, y, keep = ctx.saved_tensors
        g_kept = torch.where(keep, g, 0.0)
        return (g_kept, (g * y).sum().reshape(ctx.s_shape), (g_kept * t).sum().neg().reshape(ctx.s_shape),
                None, None, None)


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
        self.zero_point = torch.zeros(())
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
                self.const_scale: torch.Tensor | None = None
            else:
                _require(_is(scaling, ConstScaling))
                self.const_scale = scaling(torch.zeros(1), int_threshold).clone()

    def scale(self) -> torch.Tensor:
        if self.const_scale is not None:
            return self.const_scale
        power = scalar_clamp_min_ste_impl(2.0 ** ceil_ste_impl(self.scaling.value), self.scale_min)
        return power / self.threshold

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.relu:
            x = torch.relu(x)
        s = self.scale()
        if not (x.requires_grad or s.requires_grad):
            return torch.round((x / s).add_(self.zero_point)).clamp_(self.lo, self.hi) * s, s
        need_lo = not (self.relu and self.lo == 0.0)  # after a ReLU, y >= 0 = lo always holds
        return _ActQuantFn.apply(x, s, s, self.zero_point, self.lo, self.hi, need_lo), s


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
        bias_quant = layer.bias_quant.tensor_quant
        _require(type(bias_quant).__name__ == "PrescaledRestrictIntQuant")
        _require(_is(bias_quant.int_quant.float_to_int_impl, RoundSte))
        _require(_is(bias_quant.int_quant.tensor_clamp_impl, TensorClamp))
        _require(float(bias_quant.zero_point()) == 0.0)
        bias_bits = bias_quant.msb_clamp_bit_width_impl()
        self.b_lo = bias_quant.int_quant.min_int(bias_bits).clone()
        self.b_hi = bias_quant.int_quant.max_int(bias_bits).clone()
        self.zero_point = torch.zeros(())
        self.channel_shape = (1, -1, 1, 1) if conv else (1, -1)

    def __call__(self, x: torch.Tensor, in_scale: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        w = layer.weight[:]
        s = torch.max(torch.abs(w.reshape(-1)))
        s = torch.log2(scalar_clamp_min_ste_impl(s, self.stats_min))
        s = scalar_clamp_min_ste_impl(2.0 ** ceil_ste_impl(s), self.scale_min) / self.w_threshold
        w_q = _WeightQuantFn.apply(w, s, s, self.zero_point, self.w_lo, self.w_hi)
        bias_scale = (s.view(self.channel_shape) * in_scale.view(self.channel_shape)).view(-1)
        b_q = _BiasQuantFn.apply(layer.bias, bias_scale, bias_scale, self.zero_point, self.b_lo, self.b_hi)
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
    pool: int


@dataclass(frozen=True)
class FastPlan:
    input: _ActQuantizer
    steps: tuple[_Step, ...]
    clip_to_first_level: bool


def build_plan(input_act_quant: Any, stages: Sequence[Stage], clip_to_first_level: bool) -> FastPlan | None:
    """The fast forward of an encoder, or None when one of its quantizers is not reproduced."""
    try:
        steps = []
        for stage in stages:
            if stage.kind == "pool":
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
        x, s = step.act(step.affine(x, s))
    if plan.clip_to_first_level:
        x = torch.minimum(x, s)
    return x
