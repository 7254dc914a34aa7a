"""LSTM node encoders for time series: stacked LSTMs over a node's window, the last layer's
final hidden state quantized to q-bit codes (the paper's LSTM 40 -> LSTM 9 -> q bits).

Input: a node's view [B, 1, rows, W] of values ``code x 2^-7`` (int8 series codes); the LSTM
reads W steps of ``rows`` features (one per site). Quantized encoders are stacks of one-layer
``brevitas.nn.QuantLSTM`` modules with power-of-two quantizers (:mod:`quant_models.layers`),
lowered by :meth:`LstmEncoder.to_integer` to :class:`~quant_models.intlstm.IntLstmEncoder`,
which :mod:`quant_models.golden` runs bit-exactly. Codes are signed q-bit values sent as
offset binary (code + 2^(q-1)), so every code on the wire is an unsigned q-bit number.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn

from harness.core.errors import ModelError

from . import fast_lstm, layers
from .intlstm import IO_EXPONENT, SIGMOID_EXPONENT, TANH_EXPONENT, IntLstmEncoder, IntLstmLayer


def _exponent(scale: torch.Tensor | float, what: str) -> int:
    e = math.log2(float(scale))
    if abs(e - round(e)) > 1e-9:
        raise ModelError(f"{what}: scale {float(scale)} is not a power of two; integer export needs power-of-two scales")
    return round(e)


def sequence(views: torch.Tensor) -> torch.Tensor:
    """[B, 1, rows, W] views -> [B, W, rows] LSTM input (batch first, one feature per site)."""
    return views[:, 0].transpose(1, 2).contiguous()


def _gate_params(layer) -> list:
    return [layer.input_gate_params, layer.forget_gate_params, layer.cell_gate_params, layer.output_gate_params]


def _gate_acc_quants(layer) -> list:
    cell = layer.cell
    return [cell.input_acc_quant, cell.forget_acc_quant, cell.cell_acc_quant, cell.output_acc_quant]


def lower_quant_lstm(module, where: str) -> IntLstmLayer:
    """The integer parameters of a one-layer ``QuantLSTM`` built by :func:`layers.quant_lstm`."""
    layer = module.layers[0][0]
    cell = layer.cell
    for proxy, want, what in ((cell.output_quant, IO_EXPONENT, "x/h"), (cell.input_sigmoid_quant, SIGMOID_EXPONENT, "sigmoid"),
                              (cell.cell_tanh_quant, TANH_EXPONENT, "tanh")):
        got = _exponent(proxy.scale().detach(), f"{where}: {what}")
        if got != want:
            raise ModelError(f"{where}: the {what} grid is 2^{got}, the integer LSTM needs 2^{want}")
    wx, wh, bias, w_exps = [], [], [], []
    with torch.no_grad():
        for gate in _gate_params(layer):
            qx, qh = gate.input_weight.quant_weight(), gate.hidden_weight.quant_weight()
            if float(qx.scale) != float(qh.scale):
                raise ModelError(f"{where}: input and hidden weights of a gate have different scales")
            w_exp = _exponent(qx.scale, f"{where}: weight")
            ix, ih = torch.round(qx.value / qx.scale), torch.round(qh.value / qh.scale)
            if max(ix.abs().max(), ih.abs().max()) > 127:
                raise ModelError(f"{where}: weights leave the int8 range")
            wx.append(ix)
            wh.append(ih)
            acc_scale = 2.0 ** (IO_EXPONENT + w_exp)
            bias.append(torch.round(gate.bias / acc_scale).clamp(-(2 ** 31), 2 ** 31 - 1))
            w_exps.append(w_exp)
        g_exps = [_exponent(q.scale().detach(), f"{where}: gate pre-activation") for q in _gate_acc_quants(layer)]
        c_exp = _exponent(cell.cell_state_quant.scale().detach(), f"{where}: cell state")
    return IntLstmLayer(torch.stack(wx).numpy().astype("int8"), torch.stack(wh).numpy().astype("int8"),
                        torch.stack(bias).to(torch.int64).numpy().astype("int32"),
                        tuple(w_exps), tuple(g_exps), c_exp)  # type: ignore[arg-type]


class LstmEncoder(nn.Module):
    """C_i for a time series: stacked LSTMs (``sizes``), then the q-bit code quantizer on the
    last layer's final hidden state (float: that hidden state itself)."""

    # Training a quantized encoder runs fast_lstm's forward (Brevitas' values, see that module);
    # False, on an instance or the class, keeps the Brevitas forward.
    fast_training: bool = True

    def __init__(self, sizes: list[int], view_shape: tuple[int, int], bits: int | Literal["float"]):
        super().__init__()
        self.view_shape = view_shape
        self.sizes = list(sizes)
        self.quantized = bits != "float"
        self.bits = bits
        self.code_len = sizes[-1]
        ins = [view_shape[0], *sizes[:-1]]
        if self.quantized:
            self.lstms = nn.ModuleList(layers.quant_lstm(i, h) for i, h in zip(ins, sizes))
            self.code = layers.code_quant(int(bits))
        else:
            self.lstms = nn.ModuleList(nn.LSTM(i, h, batch_first=True) for i, h in zip(ins, sizes))
        self._fast_plan: fast_lstm.LstmPlan | None | Literal[False] = False

    def fast_plan(self) -> fast_lstm.LstmPlan | None:
        if self._fast_plan is False:
            self._fast_plan = fast_lstm.build_plan(self.lstms, self.code)
        return self._fast_plan

    def _fast(self) -> fast_lstm.LstmPlan | None:
        if self.quantized and self.training and self.fast_training and torch.is_grad_enabled():
            return self.fast_plan()
        return None

    def hidden_states(self, views: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's hidden state at every step, [B, W, H] each."""
        x, out = sequence(views), []
        if (plan := self._fast()) is not None:
            return [h[0] for h in fast_lstm.hidden_states([plan], [x])]
        for lstm in self.lstms:
            x, _ = lstm(x)
            out.append(x)
        return out

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if (plan := self._fast()) is not None:
            return fast_lstm.training_forward([plan], [sequence(views)])[0]
        h_last = self.hidden_states(views)[-1][:, -1]
        return self.code(h_last).value if self.quantized else h_last

    def code_scale(self) -> float:
        return float(self.code.act_quant.scale().detach()) if self.quantized else 1.0

    def code_zero_point(self) -> int:
        return 1 << (int(self.bits) - 1) if self.quantized else 0

    def codes(self, views: torch.Tensor) -> torch.Tensor:
        """Offset-binary integer codes (value / scale + 2^(q-1)), as the node transmits them."""
        return torch.round(self(views) / self.code_scale()).to(torch.int64) + self.code_zero_point()

    def to_integer(self, node: int) -> IntLstmEncoder:
        if not self.quantized:
            raise ModelError("a float LSTM encoder has no integer form; use q in {2, 3, 4, 8}")
        int_layers = tuple(lower_quant_lstm(m, f"node {node} LSTM layer {k}") for k, m in enumerate(self.lstms))
        code_exp = _exponent(self.code.act_quant.scale().detach(), f"node {node} codes")
        enc = IntLstmEncoder(node, (int(self.view_shape[0]), int(self.view_shape[1])), int_layers,
                             int(self.bits), code_exp)
        enc.check(f"node {node}")
        return enc

    @torch.no_grad()
    def revive(self) -> None:
        """Constant codes: reset the code quantizer to its initial scale 2^-(q-1), undoing a
        collapsed or overgrown learned scale. The LSTM itself is left alone: with its codes
        inside the range, straight-through gradients still reach it (shrinking the scale
        instead pushes the codes into the clamp, where no gradient passes, and kills the node)."""
        if self.quantized:
            self.code.load_state_dict(layers.code_quant(int(self.bits)).state_dict())


class FloatLstmStack(nn.Module):
    """Float stacked LSTMs over [B, W, features]; returns the last layer's final hidden state."""

    def __init__(self, features: int, sizes: list[int]):
        super().__init__()
        ins = [features, *sizes[:-1]]
        self.lstms = nn.ModuleList(nn.LSTM(i, h, batch_first=True) for i, h in zip(ins, sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lstm in self.lstms:
            x, _ = lstm(x)
        return x[:, -1]


def batched_code_values(encoders: Sequence[nn.Module], views: list[torch.Tensor]) -> torch.Tensor | None:
    """All nodes' code values [B, C] in one batched fast forward (training), when every node
    runs a quantized LSTM encoder of the same sizes; None otherwise. The values equal each
    encoder's own forward (and Brevitas'): the batching only shares the per-step ops."""
    if not encoders or not all(isinstance(e, LstmEncoder) for e in encoders):
        return None
    plans = [p for p in (e._fast() for e in encoders if isinstance(e, LstmEncoder)) if p is not None]
    if len(plans) != len(encoders) or not fast_lstm.same_shape(plans):
        return None
    return torch.cat(fast_lstm.training_forward(plans, [sequence(v) for v in views]), dim=1)
