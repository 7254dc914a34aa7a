"""The training forward of quantized LSTM encoders, without Brevitas' per-step overhead.

Brevitas' QuantLSTM loops over time steps in Python and calls eleven quantizer proxies per step,
each a chain of small modules that recomputes its scale: ~1.9 s per training step for 4 paper
encoders (LSTM 40 -> 9, W = 50, batch 64, one thread). Here the same forward runs from the same
parameters: weights and scales once per forward, the input half of every step's gate
accumulators in one matmul, and per step one batched matmul over all nodes plus one fused cell
op (:class:`_CellStep`, with a hand-written backward): ~0.2 s per step for the same model.

Forward values are identical to Brevitas' (tests/models/test_lstm.py checks every step's hidden
state and the codes bit for bit): every product and sum is on a power-of-two grid and below
2^24 units, so float32 computes it exactly in any order, and the nonlinearities are the same
torch functions on the same float32 inputs. Gradients follow Brevitas' rules (round
straight-through; act quantizers pass no gradient where they clamp, weight quantizers pass it
through; scales get d(round(x/s) s)/ds; power-of-two scales through Brevitas' own ceil/clamp
STE ops) but are summed in another order (all steps and nodes at once), so they equal Brevitas'
to float rounding, not bit for bit: the tests bound the difference, and parameters after three
Adam steps agree to 1e-5. The integer export does not depend on this: it is exact for whatever
parameters training produced.

A quantizer this module does not recognise makes :func:`build_plan` return None, and the
encoder keeps the Brevitas forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from brevitas.core.scaling.standalone import ConstScaling, ParameterScaling
from brevitas.ops.autograd_ste_ops import ceil_ste_impl, scalar_clamp_min_ste_impl

from .intlstm import IO_EXPONENT, SIGMOID_EXPONENT, TANH_EXPONENT


class _NotReproduced(Exception):
    pass


def _require(ok: bool) -> None:
    if not ok:
        raise _NotReproduced


class _FakeQuant(torch.autograd.Function):
    """clamp(round(x / s), lo, hi) * s; no gradient to x where clamped (TensorClamp), and
    d/ds = clamped code - (x / s where kept), summed to the shape of ``s``."""

    @staticmethod
    def forward(ctx, x, s, lo: float, hi: float):
        t = x / s
        r = torch.round(t)
        keep = (r >= lo) & (r <= hi)
        r.clamp_(lo, hi)
        ctx.save_for_backward(t, r, keep, s)
        return r * s

    @staticmethod
    def backward(ctx, g):
        t, r, keep, s = ctx.saved_tensors
        g_kept = torch.where(keep, g, 0.0)
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad_s = (g * r - g_kept * t).sum_to_size(s.shape)
        return g_kept, grad_s, None, None


class _WeightQuant(torch.autograd.Function):
    """clamp(round(w / s), lo, hi) * s with a straight-through clamp (TensorClampSte)."""

    @staticmethod
    def forward(ctx, w, s, lo: float, hi: float):
        t = w / s
        r = torch.round(t).clamp_(lo, hi)
        ctx.save_for_backward(t, r)
        return r * s

    @staticmethod
    def backward(ctx, g):
        t, r = ctx.saved_tensors
        return g, (g * r - g * t).sum().reshape(()), None, None


class _LearnedScale:
    """A power-of-two act scale from a ParameterScaling: clamp_min(2^ceil(value)) / threshold."""

    def __init__(self, proxy: Any):
        tq = proxy.fused_activation_quant_proxy.tensor_quant
        scaling = tq.scaling_impl
        _require(type(scaling) is ParameterScaling)
        _require(type(tq.int_quant.tensor_clamp_impl).__name__ == "TensorClamp")
        _require(type(tq.int_quant.float_to_int_impl).__name__ == "RoundSte")
        bits = tq.msb_clamp_bit_width_impl()
        self.lo, self.hi = float(tq.int_quant.min_int(bits)), float(tq.int_quant.max_int(bits))
        self.scaling = scaling
        self.scale_min = scaling.restrict_clamp_scaling.clamp_ste.min_val
        with torch.no_grad():
            self.threshold = scaling.restrict_clamp_threshold(
                scaling.restrict_threshold_pre(tq.int_scaling_impl(bits))).clone()
            _require(torch.equal(self.scale().detach(), proxy.scale().detach()))

    def scale(self) -> torch.Tensor:
        return scalar_clamp_min_ste_impl(2.0 ** ceil_ste_impl(self.scaling.value), self.scale_min) / self.threshold


def _const_exponent(proxy: Any, exponent: int, lo: float, hi: float) -> None:
    tq = proxy.fused_activation_quant_proxy.tensor_quant
    _require(type(tq.scaling_impl) is ConstScaling)
    bits = tq.msb_clamp_bit_width_impl()
    _require((float(tq.int_quant.min_int(bits)), float(tq.int_quant.max_int(bits))) == (lo, hi))
    _require(float(proxy.scale()) == 2.0 ** exponent)


class _GateWeights:
    """One gate's input and hidden weights and their shared Int8WeightPerTensorFixedPoint quantizer."""

    def __init__(self, gate: Any):
        self.wx, self.wh = gate.input_weight.weight, gate.hidden_weight.weight
        self.bias = gate.bias
        tq = gate.input_weight.weight_quant.tensor_quant
        _require(type(tq.int_quant.tensor_clamp_impl).__name__ == "TensorClampSte")
        stats_scaling = tq.scaling_impl.stats_scaling_impl
        self.stats_min = stats_scaling.clamp_scaling.clamp_min_ste.min_val
        self.scale_min = stats_scaling.restrict_clamp_scaling.clamp_ste.min_val
        bits = tq.msb_clamp_bit_width_impl()
        self.lo, self.hi = float(tq.int_quant.min_int(bits)), float(tq.int_quant.max_int(bits))
        with torch.no_grad():
            self.threshold = stats_scaling.restrict_clamp_threshold(
                stats_scaling.restrict_threshold_pre(tq.int_scaling_impl(bits))).clone()
            _require(torch.equal(self.scale().detach(), gate.input_weight.quant_weight().scale.detach().reshape(())))

    def scale(self) -> torch.Tensor:
        m = torch.max(torch.abs(torch.cat([self.wx.reshape(-1), self.wh.reshape(-1)])))
        s = torch.log2(scalar_clamp_min_ste_impl(m, self.stats_min))
        return (scalar_clamp_min_ste_impl(2.0 ** ceil_ste_impl(s), self.scale_min) / self.threshold).reshape(())

    def quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.scale()
        wx = _WeightQuant.apply(self.wx, s, self.lo, self.hi)
        wh = _WeightQuant.apply(self.wh, s, self.lo, self.hi)
        b_scale = s * 2.0 ** IO_EXPONENT
        b = _FakeQuant.apply(self.bias, b_scale, -(2.0 ** 31), 2.0 ** 31 - 1)
        return wx, wh, b


@dataclass(frozen=True)
class LayerPlan:
    gates: tuple[_GateWeights, ...]  # i, f, g, o
    acc: tuple[_LearnedScale, ...]
    cell: _LearnedScale
    hidden: int


@dataclass(frozen=True)
class LstmPlan:
    layers: tuple[LayerPlan, ...]
    code: _LearnedScale


def _layer_plan(module: Any) -> LayerPlan:
    layer = module.layers[0][0]
    cell = layer.cell
    _require(not layer.cifg and not layer.reverse_input and cell.batch_first)
    _const_exponent(cell.output_quant, IO_EXPONENT, -128.0, 127.0)
    for proxy in (cell.input_sigmoid_quant, cell.forget_sigmoid_quant, cell.output_sigmoid_quant):
        _const_exponent(proxy, SIGMOID_EXPONENT, 0.0, 255.0)
    for proxy in (cell.cell_tanh_quant, cell.hidden_state_tanh_quant):
        _const_exponent(proxy, TANH_EXPONENT, -128.0, 127.0)
    gates = tuple(_GateWeights(g) for g in (layer.input_gate_params, layer.forget_gate_params,
                                            layer.cell_gate_params, layer.output_gate_params))
    acc = tuple(_LearnedScale(q) for q in (cell.input_acc_quant, cell.forget_acc_quant,
                                            cell.cell_acc_quant, cell.output_acc_quant))
    return LayerPlan(gates, acc, _LearnedScale(cell.cell_state_quant), layer.hidden_size)


def build_plan(lstms: Any, code_quant: Any) -> LstmPlan | None:
    """The fast forward of an :class:`~quant_models.lstm.LstmEncoder`'s modules, or None."""
    try:
        return LstmPlan(tuple(_layer_plan(m) for m in lstms), _LearnedScale(code_quant.act_quant))
    except (_NotReproduced, AttributeError):
        return None


def _fq(x: torch.Tensor, s: torch.Tensor | float, lo: float, hi: float):
    """Forward of a fake quantizer: (y, t = x / s, clamped code, keep mask)."""
    t = x / s
    r = torch.round(t)
    keep = (r >= lo) & (r <= hi)
    r.clamp_(lo, hi)
    return r * s, t, r, keep


_SIG, _TANH = 2.0 ** SIGMOID_EXPONENT, 2.0 ** TANH_EXPONENT
_IO = 2.0 ** IO_EXPONENT


class _CellStep(torch.autograd.Function):
    """One LSTM step after the gate accumulators, as Brevitas' cell computes it: gate
    pre-activation quantizers, sigmoid/tanh and their fixed-grid quantizers, the three cell-state
    quantizations, tanh(c) and h. One autograd node instead of ~25; the backward applies the
    same rules as the separate ops (see the module docstring)."""

    @staticmethod
    def forward(ctx, acc, c_prev, acc_scale, s_cell, hsz: int):
        a, ta, ra, ka = _fq(acc, acc_scale, -128.0, 127.0)
        u = torch.sigmoid(a)  # i, f and o use it (g's part is unused)
        ug = torch.tanh(a[..., 2 * hsz:3 * hsz])
        qs, _, _, ks = _fq(u, _SIG, 0.0, 255.0)
        qg, _, _, kg = _fq(ug, _TANH, -128.0, 127.0)
        i, f, o = qs[..., :hsz], qs[..., hsz:2 * hsz], qs[..., 3 * hsz:]
        fc, t1, r1, k1 = _fq(f * c_prev, s_cell, -128.0, 127.0)
        ig, t2, r2, k2 = _fq(i * qg, s_cell, -128.0, 127.0)
        c, t3, r3, k3 = _fq(fc + ig, s_cell, -128.0, 127.0)
        v = torch.tanh(c)
        th, _, _, kv = _fq(v, _TANH, -128.0, 127.0)
        h, _, _, k4 = _fq(o * th, _IO, -128.0, 127.0)
        ctx.save_for_backward(c_prev, ta, ra, ka, u, ug, qs, ks, qg, kg, t1, r1, k1, t2, r2, k2, t3, r3, k3,
                              v, th, kv, k4, acc_scale, s_cell)
        ctx.hsz = hsz
        return h, c

    @staticmethod
    def backward(ctx, gh, gc):
        (c_prev, ta, ra, ka, u, ug, qs, ks, qg, kg, t1, r1, k1, t2, r2, k2, t3, r3, k3,
         v, th, kv, k4, acc_scale, s_cell) = ctx.saved_tensors
        hsz = ctx.hsz
        i, f, o = qs[..., :hsz], qs[..., hsz:2 * hsz], qs[..., 3 * hsz:]
        zero = torch.zeros((), dtype=gh.dtype)
        gp4 = torch.where(k4, gh, zero)
        g_o = gp4 * th
        g_th = torch.where(kv, gp4 * o, zero)
        gc_total = g_th * (1 - v * v) if gc is None else gc + g_th * (1 - v * v)
        gp3 = torch.where(k3, gc_total, zero)
        g_sc = (gc_total * r3 - gp3 * t3).sum_to_size(s_cell.shape)
        gp2 = torch.where(k2, gp3, zero)
        g_sc = g_sc + (gp3 * r2 - gp2 * t2).sum_to_size(s_cell.shape)
        gp1 = torch.where(k1, gp3, zero)
        g_sc = g_sc + (gp3 * r1 - gp1 * t1).sum_to_size(s_cell.shape)
        g_i, g_qg = gp2 * qg, gp2 * i
        g_f, g_cprev = gp1 * c_prev, gp1 * f
        g_qs = torch.cat([g_i, g_f, torch.zeros_like(g_i), g_o], dim=-1)
        g_a = torch.where(ks, g_qs, zero) * (u * (1 - u))
        g_a[..., 2 * hsz:3 * hsz] = torch.where(kg, g_qg, zero) * (1 - ug * ug)
        g_acc = torch.where(ka, g_a, zero)
        g_sa = (g_a * ra - g_acc * ta).sum_to_size(acc_scale.shape)
        return g_acc, g_cprev, g_sa, g_sc, None


def layer_forward(plans: list[LayerPlan], xs: list[torch.Tensor]) -> torch.Tensor:
    """Hidden states [N, B, T, H] of the same layer of N encoders (one per node, same hidden
    size) over their inputs xs[n] [B, T, I_n] (values on the 2^-7 grid): the nodes' steps run as
    one batched matmul and one cell step."""
    hsz = plans[0].hidden
    x_acc, whs, acc_scales, cell_scales = [], [], [], []
    for plan, x in zip(plans, xs):
        x = _FakeQuant.apply(x, torch.tensor(_IO), -128.0, 127.0)  # the layer's io_quant on its input
        parts = [g.quantized() for g in plan.gates]
        wx = torch.cat([p[0] for p in parts])  # [4H, I]
        bias = torch.cat([p[2] for p in parts])  # [4H]
        x_acc.append(F.linear(x, wx, bias))  # [B, T, 4H]: exact, so the bias may join here
        whs.append(torch.cat([p[1] for p in parts]).t())  # [H, 4H]
        acc_scales.append(torch.cat([a.scale().reshape(1).expand(hsz) for a in plan.acc]).reshape(1, 4 * hsz))
        cell_scales.append(plan.cell.scale().reshape(1, 1))
    acc_all = torch.stack(x_acc)  # [N, B, T, 4H]
    wh = torch.stack(whs)  # [N, H, 4H]
    acc_scale, s_cell = torch.stack(acc_scales), torch.stack(cell_scales)  # [N, 1, 4H], [N, 1, 1]
    nodes, batch, steps = acc_all.shape[0], acc_all.shape[1], acc_all.shape[2]
    h = acc_all.new_zeros(nodes, batch, hsz)
    c = acc_all.new_zeros(nodes, batch, hsz)
    out = []
    for t in range(steps):
        h, c = _CellStep.apply(acc_all[:, :, t] + torch.bmm(h, wh), c, acc_scale, s_cell, hsz)
        out.append(h)
    return torch.stack(out, dim=2)


def hidden_states(plans: list[LstmPlan], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, the hidden states [N, B, T, H] of N encoders of the same sizes."""
    out: list[torch.Tensor] = []
    for k in range(len(plans[0].layers)):
        layer = layer_forward([p.layers[k] for p in plans], xs if not out else list(out[-1].unbind(0)))
        out.append(layer)
    return out


def training_forward(plans: list[LstmPlan], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per encoder, its code values for sequences xs[n] [B, T, rows_n], as Brevitas gives them."""
    h_last = hidden_states(plans, xs)[-1][:, :, -1]
    return [_FakeQuant.apply(h, p.code.scale(), p.code.lo, p.code.hi) for p, h in zip(plans, h_last.unbind(0))]


def same_shape(plans: list[LstmPlan]) -> bool:
    """Whether these encoders' recurrences can run batched (equal layer sizes)."""
    return len({tuple(layer.hidden for layer in p.layers) for p in plans}) == 1
