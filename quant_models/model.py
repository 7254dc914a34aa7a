"""The split model: one node encoder per node plus a base-station head, and its schemes.

A node encoder maps a view (``pixel / 256``, [B, 1, h, w]) to k code values. Quantized encoders
are Brevitas QAT networks whose every scale is a power of two, so each can be lowered to an
:class:`~quant_models.intparams.IntEncoder` and run bit-exactly with integers only. The head gets
all nodes' code values concatenated in node order, [B, C].

Schemes (registry ``SCHEMES``): ``ours`` (FC hidden -> ReLU -> FC classes: the paper's T(c)),
``fdml`` (as the paper compares against it: the same node encoders at any C, and a base station
that takes one weighted sum of the received values per class, softmax in the loss),
``fdml-scores`` (each node sends class scores, C = nodes x classes, and the base station learns
one weight per node), ``centralized`` (nodes send raw
pixels; the base station runs a conv net of comparable capacity on the whole image) and
``autoencoder`` (nodes' codes are trained to reconstruct their views; the base station
reconstructs and classifies the reconstruction).

Time series (``encoder: {lstm: [...]}``): node encoders are :class:`~quant_models.lstm.LstmEncoder`
(views of int8 codes x 2^-7, signed codes sent offset binary: the head subtracts
:meth:`SplitModel.code_zero_points`); the centralized base station runs one float LSTM stack
of the same sizes over all sites' raw windows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, cast

import torch
from torch import nn
from torch.nn import functional as F

from harness.core.errors import ModelError
from harness.core.registry import Registry

from . import fast_qat, layers
from .experiment import EncoderSpec, Experiment
from .intparams import ConvOp, FcOp, IntEncoder, IntOp, MaxPoolOp, Requant
from .lstm import FloatLstmStack, LstmEncoder, batched_code_values
from .partition import Partition

HIDDEN_ACT_INIT_MAX = 4.0
CODE_INIT_MAX = 2.0
PIXEL_SCALE = 2.0 ** layers.PIXEL_EXPONENT
DECODER_INIT_LOGIT = -2.0


def _exponent(scale: torch.Tensor, what: str) -> int:
    e = math.log2(float(scale.detach()))
    if abs(e - round(e)) > 1e-9:
        raise ModelError(f"{what}: scale {float(scale)} is not a power of two; integer export "
                         "needs power-of-two scales (is the model still in calibration?)")
    return round(e)


# ---- encoder stages: each knows its float forward and its integer lowering ---------------

class ConvStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int, quantized: bool, act_bits: int):
        super().__init__()
        self.padding = padding
        if quantized:
            self.conv = layers.quant_conv(in_ch, out_ch, kernel, padding)
            self.act = layers.quant_relu(act_bits, HIDDEN_ACT_INIT_MAX)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding)
            self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))

    def to_integer(self, in_exp: int, clip_max: int | None = None) -> tuple[ConvOp, int]:
        w_int, w_exp, bias, out_exp, rq = _lower_affine(self.conv, self.act, in_exp, clip_max)
        return ConvOp(w_int, bias, self.padding, rq), out_exp


class PoolStage(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.pool = nn.MaxPool2d(size)

    def forward(self, x):
        return self.pool(x)

    def to_integer(self, in_exp: int) -> tuple[MaxPoolOp, int]:
        return MaxPoolOp(self.size), in_exp


class FcStage(nn.Module):
    """Flatten, FC, ReLU-quantize. The last stage of an encoder produces the codes."""

    def __init__(self, in_f: int, out_f: int, quantized: bool, act_bits: int, init_max: float = HIDDEN_ACT_INIT_MAX,
                 one_level: bool = False):
        super().__init__()
        self.one_level = one_level
        if quantized:
            self.fc = layers.quant_linear(in_f, out_f)
            self.act = layers.quant_relu(act_bits, init_max)
        else:
            self.fc = nn.Linear(in_f, out_f)
            self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x.flatten(1)))

    def to_integer(self, in_exp: int, clip_max: int | None = None) -> tuple[FcOp, int]:
        w_int, w_exp, bias, out_exp, rq = _lower_affine(self.fc, self.act, in_exp, clip_max)
        return FcOp(w_int, bias, rq), out_exp


def _lower_affine(layer, act, in_exp: int, clip_max: int | None):
    qw = layer.quant_weight()
    w_exp = _exponent(qw.scale, f"{layer.__class__.__name__} weight")
    w_int = torch.round(qw.value / qw.scale).detach().to(torch.int64)
    if w_int.abs().max() > 127:
        raise ModelError("weights leave the int8 narrow range")
    acc_exp = in_exp + w_exp
    bias = torch.round(layer.bias.detach() / 2.0 ** acc_exp).clamp(-(2 ** 31), 2 ** 31 - 1).to(torch.int64)
    out_exp = _exponent(act.act_quant.scale(), "activation")
    bits = int(act.act_quant.bit_width())
    top = (1 << bits) - 1 if clip_max is None else clip_max
    rq = Requant(shift=out_exp - acc_exp, clip_min=0, clip_max=top)
    return (w_int.numpy().astype("int8"), w_exp, bias.numpy().astype("int32"), out_exp, rq)


class NodeEncoder(nn.Module):
    """C_i: the encoder one node runs on its view; outputs k code values (float or quantized)."""

    # Training a quantized encoder runs fast_qat's forward (the same values and gradients as the
    # Brevitas modules'); False, on an instance or the class, keeps the Brevitas forward.
    fast_training: bool = True

    def __init__(self, spec: EncoderSpec, view_shape: tuple[int, int], code_len: int,
                 bits: int | Literal["float"]):
        super().__init__()
        self.view_shape = view_shape
        self.quantized = bits != "float"
        self.bits = bits
        self.input = layers.pixel_input() if self.quantized else nn.Identity()
        stages: list[nn.Module] = []
        c, (h, w) = 1, view_shape
        for layer in spec.layers:
            if layer.conv is not None:
                cv = layer.conv
                stages.append(ConvStage(c, cv.channels, cv.kernel, cv.pad, self.quantized, spec.activation_bits))
                c, h, w = cv.channels, h + 2 * cv.pad - cv.kernel + 1, w + 2 * cv.pad - cv.kernel + 1
            elif layer.maxpool is not None:
                stages.append(PoolStage(layer.maxpool))
                h, w = h // layer.maxpool, w // layer.maxpool
            else:
                fc = layer.fc
                assert fc is not None  # LayerSpec validation: exactly one of conv, maxpool, fc
                stages.append(FcStage(c * h * w, fc.units, self.quantized, spec.activation_bits))
                c, h, w = fc.units, 1, 1
            if h < 1 or w < 1:
                raise ModelError(f"encoder layers shrink the {view_shape[0]}x{view_shape[1]} view to nothing; use "
                                 "fewer pooling layers, smaller kernels or more padding (field 'encoder.layers'), "
                                 "or a coarser partition (field 'partition')")
        # 1-bit codes: a 2-bit unsigned quantizer clipped at its first level. Brevitas' QCDQ
        # export refuses 1-bit quantizers, and its bipolar 1-bit quantizer is wrong for 0/1 codes.
        one_level = bits == 1
        code_bits = 2 if one_level else (8 if bits == "float" else int(bits))
        self.code_stage = FcStage(c * h * w, code_len, self.quantized, code_bits, CODE_INIT_MAX, one_level)
        self.stages = nn.ModuleList(stages)
        self.code_len = code_len
        self._fast_plan: fast_qat.FastPlan | None | Literal[False] = False

    def _fast_training_plan(self) -> fast_qat.FastPlan | None:
        if self._fast_plan is False:
            stages = [fast_qat.Stage("pool", pool=s.size) if isinstance(s, PoolStage) else
                      fast_qat.Stage("conv", s.conv, s.act.act_quant) if isinstance(s, ConvStage) else
                      fast_qat.Stage("fc", s.fc, s.act.act_quant)
                      for s in [*self.stages, self.code_stage]]
            self._fast_plan = fast_qat.build_plan(self.input.act_quant, stages, self.code_stage.one_level)
        return self._fast_plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized and self.training and self.fast_training and torch.is_grad_enabled():
            plan = self._fast_training_plan()
            if plan is not None:
                return fast_qat.training_forward(plan, x)
        x = self.input(x)
        for stage in self.stages:
            x = stage(x)
        out = self.code_stage(x)
        if not self.quantized:
            return out
        value = out.value
        if self.code_stage.one_level:
            value = torch.minimum(value, out.scale)
        return value

    def code_scale(self) -> float:
        return float(self.code_stage.act.act_quant.scale().detach()) if self.quantized else 1.0

    def code_zero_point(self) -> int:
        return 0

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (round(value / scale)): QuantTensor.int() breaks on 1-bit tensors."""
        return torch.round(self(x) / self.code_scale()).to(torch.int64)

    def to_integer(self, node: int) -> IntEncoder:
        if not self.quantized:
            raise ModelError("a float encoder has no integer form; use q in {1, 2, 3, 4, 8}")
        exp = layers.PIXEL_EXPONENT
        ops: list[IntOp] = []
        for stage in self.stages:
            if not isinstance(stage, (ConvStage, PoolStage, FcStage)):
                raise ModelError(f"encoder stage {type(stage).__name__} has no integer form")
            op, exp = stage.to_integer(exp)
            ops.append(op)
        code_max = 1 if self.code_stage.one_level else (1 << int(self.bits)) - 1
        op, code_exp = self.code_stage.to_integer(exp, clip_max=code_max)
        ops.append(op)
        h, w = self.view_shape
        return IntEncoder(node, (h, w), layers.PIXEL_EXPONENT, tuple(ops), int(self.bits), code_exp)

    @torch.no_grad()
    def revive(self) -> None:
        """Re-initialise the code layer of a dead encoder (all codes zero) in place."""
        stage = self.code_stage
        stage.fc.reset_parameters()
        stage.fc.bias.fill_(0.05)
        if self.quantized:
            fresh = layers.quant_relu(int(stage.act.act_quant.bit_width()), CODE_INIT_MAX)
            stage.act.load_state_dict(fresh.state_dict())
            self._fast_plan = False


class RawNode(nn.Module):
    """A node that sends its raw view (centralized scheme): codes are the pixels, 8 bits each
    (int8 series codes go offset binary, code + 128, like the LSTM encoders' codes)."""

    def __init__(self, view_shape: tuple[int, int], input_exponent: int = layers.PIXEL_EXPONENT):
        super().__init__()
        self.view_shape = view_shape
        self.code_len = view_shape[0] * view_shape[1]
        self.quantized = True
        self.bits = 8
        self.input_exponent = input_exponent
        self.signed = input_exponent != layers.PIXEL_EXPONENT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def code_scale(self) -> float:
        return 2.0 ** self.input_exponent

    def code_zero_point(self) -> int:
        return 128 if self.signed else 0

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.flatten(1) / self.code_scale()).to(torch.int64) + self.code_zero_point()


Encoder = NodeEncoder | LstmEncoder | RawNode  # what a node runs


# ---- heads -------------------------------------------------------------------------------

def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    mods.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*mods)


class MlpHead(nn.Module):
    """T(c) of the paper: FC 1024 -> ReLU -> FC classes on the concatenated codes."""

    def __init__(self, code_total: int, hidden: list[int], classes: int):
        super().__init__()
        self.net = _mlp([code_total, *hidden, classes])

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(codes)


class LinearHead(nn.Module):
    """FDML's base station: logits = W c + b, one weighted sum of all received values per class."""

    def __init__(self, code_total: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(code_total, classes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.linear(codes)


class WeightedSumHead(nn.Module):
    """FDML: logits = sum_i w_i * s_i + b over the nodes' class-score vectors s_i (softmax in the loss)."""

    def __init__(self, nodes: int, classes: int):
        super().__init__()
        self.nodes, self.classes = nodes, classes
        self.weights = nn.Parameter(torch.full((nodes,), 1.0 / nodes))
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        per_node = codes.view(-1, self.nodes, self.classes)
        return torch.einsum("bnc,n->bc", per_node, self.weights) + self.bias


class ImageClassifier(nn.Module):
    """Conv 32@5x5 -> ReLU -> maxpool 2 -> FC hidden -> ReLU -> FC classes on whole images."""

    def __init__(self, image_shape: tuple[int, int], hidden: list[int], classes: int):
        super().__init__()
        h, w = image_shape
        self.features = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = _mlp([32 * (h // 2) * (w // 2), *hidden, classes])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).flatten(1))


def _assemble(partition: Partition, flat_views: list[torch.Tensor]) -> torch.Tensor:
    batch = flat_views[0].shape[0]
    image = flat_views[0].new_zeros((batch, 1, *partition.image_shape))
    for win, v in zip(partition.windows, flat_views):
        image[:, 0, win.top:win.top + win.height, win.left:win.left + win.width] = v.view(batch, win.height, win.width)
    return image


class CentralizedHead(nn.Module):
    """Base station of the centralized scheme: reassemble raw pixels, classify the image."""

    def __init__(self, partition: Partition, hidden: list[int], classes: int):
        super().__init__()
        self.partition = partition
        self.sizes = [w.height * w.width for w in partition.windows]
        self.classifier = ImageClassifier(partition.image_shape, hidden, classes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.classifier(_assemble(self.partition, list(codes.split(self.sizes, dim=1))))


class SeriesCentralizedHead(nn.Module):
    """Centralized base station for time series: all nodes' raw windows, reassembled into
    [B, sites, W], through one float LSTM stack (the encoders' sizes), then the MLP head."""

    def __init__(self, partition: Partition, sizes: list[int], hidden: list[int], classes: int):
        super().__init__()
        self.partition = partition
        self.sizes = [w.height * w.width for w in partition.windows]
        self.lstm = FloatLstmStack(partition.image_shape[0], sizes)
        self.classifier = _mlp([sizes[-1], *hidden, classes])

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        windows = _assemble(self.partition, list(codes.split(self.sizes, dim=1)))  # [B, 1, sites, W]
        return self.classifier(self.lstm(windows[:, 0].transpose(1, 2)))


def _decoder(code_len: int, pixels: int) -> nn.Sequential:
    """Codes -> one view's pixels in (0, 1)."""
    hidden, out = nn.Linear(code_len, 256), nn.Linear(256, pixels)
    # Start the reconstructions near a typical mean pixel (~0.1), not sigmoid(0) = 0.5: else
    # every sample's error pushes the codes the same way and the code layer saturates.
    with torch.no_grad():
        out.bias.fill_(DECODER_INIT_LOGIT)
        out.weight.mul_(0.1)
    return nn.Sequential(hidden, nn.ReLU(), out, nn.Sigmoid())


class AutoencoderHead(nn.Module):
    """Per-node decoders reconstruct the views from the codes; a classifier reads the image."""

    def __init__(self, partition: Partition, code_len: int, hidden: list[int], classes: int):
        super().__init__()
        self.partition, self.code_len = partition, code_len
        self.decoders = nn.ModuleList(_decoder(code_len, w.height * w.width) for w in partition.windows)
        self.classifier = ImageClassifier(partition.image_shape, hidden, classes)

    def reconstruct(self, codes: torch.Tensor) -> list[torch.Tensor]:
        return [dec(c) for dec, c in zip(self.decoders, codes.split(self.code_len, dim=1))]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.classifier(_assemble(self.partition, self.reconstruct(codes)))


# ---- the split model and its schemes -----------------------------------------------------

class SplitModel(nn.Module):
    def __init__(self, encoders: Sequence[Encoder], head: nn.Module, scheme: str):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.head = head
        self.scheme = scheme

    def node_encoders(self) -> list[Encoder]:
        """The encoders in node order, typed (an nn.ModuleList only knows it holds modules)."""
        return [cast(Encoder, e) for e in self.encoders]  # __init__ takes only Encoders

    def code_values(self, views: list[torch.Tensor]) -> torch.Tensor:
        batched = batched_code_values(self.node_encoders(), views)  # LSTM nodes, training
        if batched is not None:
            return batched
        return torch.cat([enc(v) for enc, v in zip(self.encoders, views)], dim=1)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.code_values(views))

    def code_scales(self) -> torch.Tensor:
        """Per code value, its scale: head input = (integer code - zero point) x scale."""
        return torch.cat([torch.full((e.code_len,), e.code_scale()) for e in self.node_encoders()])

    def code_zero_points(self) -> torch.Tensor:
        """Per code value, the offset of its wire code (2^(q-1) for signed codes, else 0)."""
        return torch.cat([torch.full((e.code_len,), float(e.code_zero_point())) for e in self.node_encoders()])


@dataclass(frozen=True)
class Scheme:
    """How a scheme builds its model and what its training loss is."""

    name: str
    build: Callable[[Experiment, Partition, int], SplitModel]
    loss: Callable[[SplitModel, list[torch.Tensor], torch.Tensor, Experiment], torch.Tensor]


SCHEMES: Registry[Scheme] = Registry("scheme")


def register_scheme(name: str, loss=None):
    def decorate(build):
        SCHEMES.add(name, Scheme(name, build, loss or classification_loss))
        return build
    return decorate


def classification_loss(model: SplitModel, views, labels, exp: Experiment) -> torch.Tensor:
    return F.cross_entropy(model(views), labels)


def _encoders(exp: Experiment, partition: Partition, code_len: int) -> list[NodeEncoder] | list[LstmEncoder]:
    if exp.encoder.lstm is not None:  # check_shape: code_len is the last LSTM size
        return [LstmEncoder(exp.encoder.lstm, partition.view_shape(i), exp.code.bits) for i in range(partition.nodes)]
    return [NodeEncoder(exp.encoder, partition.view_shape(i), code_len, exp.code.bits)
            for i in range(partition.nodes)]


@register_scheme("ours")
def build_ours(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    k = exp.code.values // partition.nodes
    return SplitModel(_encoders(exp, partition, k), MlpHead(exp.code.values, exp.head.hidden, classes), "ours")


@register_scheme("fdml")
def build_fdml(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    k = exp.code.values // partition.nodes
    return SplitModel(_encoders(exp, partition, k), LinearHead(exp.code.values, classes), "fdml")


@register_scheme("fdml-scores")
def build_fdml_scores(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    return SplitModel(_encoders(exp, partition, classes), WeightedSumHead(partition.nodes, classes), "fdml-scores")


@register_scheme("centralized")
def build_centralized(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    if exp.encoder.lstm is not None:
        raw = [RawNode(partition.view_shape(i), layers.LSTM_IO_EXPONENT) for i in range(partition.nodes)]
        return SplitModel(raw, SeriesCentralizedHead(partition, exp.encoder.lstm, exp.head.hidden, classes), "centralized")
    nodes = [RawNode(partition.view_shape(i)) for i in range(partition.nodes)]
    return SplitModel(nodes, CentralizedHead(partition, exp.head.hidden, classes), "centralized")


def autoencoder_loss(model: SplitModel, views, labels, exp: Experiment) -> torch.Tensor:
    """Codes learn only to reconstruct (the classifier sees a detached reconstruction).

    The reconstruction error is summed over a view's pixels (mean over the batch): a per-pixel
    mean gives the encoders gradients so small that most code dimensions never leave zero.
    """
    head = model.head
    if not isinstance(head, AutoencoderHead):
        raise ModelError(f"the autoencoder loss needs an AutoencoderHead, not {type(head).__name__}")
    recon = head.reconstruct(model.code_values(views))
    batch = labels.shape[0]
    mse = sum(F.mse_loss(r, v.flatten(1), reduction="sum") for r, v in zip(recon, views)) / (batch * len(views))
    image = _assemble(head.partition, [r.detach() for r in recon])
    return F.cross_entropy(head.classifier(image), labels) + exp.training.autoencoder_weight * mse


@register_scheme("autoencoder", loss=autoencoder_loss)
def build_autoencoder(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    k = exp.code.values // partition.nodes
    head = AutoencoderHead(partition, k, exp.head.hidden, classes)
    return SplitModel(_encoders(exp, partition, k), head, "autoencoder")


def build_model(exp: Experiment, partition: Partition, classes: int) -> SplitModel:
    exp.check_shape(partition.nodes, classes)
    return SCHEMES.get(exp.scheme).build(exp, partition, classes)
