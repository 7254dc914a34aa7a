"""A node encoder's integer model lowered to float32 ONNX that computes the golden codes exactly,
on any CPU, with onnxruntime's fastest (float) kernels.

Why not the QCDQ export: onnxruntime fuses QuantizeLinear/DequantizeLinear around Conv/Gemm into
u8 x s8 int8 kernels, and on x86 without VNNI those sum pairs of products in saturating int16
(VPMADDUBSW), so codes differ from the integer model on some CPUs and not on others. Here every
layer is a float Conv or Gemm whose weights and bias are the int8/int32 parameters times a power
of two, followed by Clip and Round (half to even, as the golden model's shifts), except a fully
connected layer that provably cannot saturate an int8 kernel (the last point):

* every product is an integer times a power of two, and every partial sum of a layer stays below
  2^24 of its unit (checked here from the weights: :func:`accumulation_bound`), so float32 adds
  them without rounding in any order, with or without FMA;
* requantization ``clip(rne(acc * 2^-shift))`` is exact: scaling by a power of two is exact,
  ``Round`` is half-to-even, and Clip bounds are integers;
* max-pool commutes with Clip and Round (both monotone), so the Round sits after the pool, on a
  quarter of the values; a clip bound the layer provably never crosses (from its weights, bias
  and input range) is left out, so the common case is a ReLU fused into the Conv;
* the last layer's Clip and Round are the reader's, done in bulk on a whole batch of outputs
  (as the runner already turned QCDQ code values into codes): the model ends at the exact value
  ``acc * 2^-shift`` and its metadata carries the code bounds;
* a fully connected layer whose input codes are 0..255 and whose products cannot saturate even
  when int8 kernels add them in pairs in int16 (``2 * largest input * largest |weight| <= 32767``,
  proved from the weights: :func:`int8_fc_safe`) runs as onnxruntime's ``MatMulIntegerToFloat``
  on uint8 codes made by ``QuantizeLinear`` (scale 1: round half to even, as ``Round``): the
  int32 accumulator is exact on every kernel, and a quarter of the weight bytes and a vectorised
  rounding make it faster than ``Round`` and a float ``Gemm``. Such a model is onnxruntime's only
  (``MatMulIntegerToFloat`` is a ``com.microsoft`` operator), and it must run with the QDQ
  transformations off (session config ``session.disable_quant_qdq``), or onnxruntime moves the
  QuantizeLinear above the max-pool, onto four times the values.

Input ``view``: float32 [B, 1, h, w] = pixel / 256 (as the QCDQ model); output ``code_values``:
float32 [B, k], whose ``clip(rint(.), code_min, code_max)`` are the codes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import ModelError

from .intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp

OPSET = 13
INPUT_EXPONENT = -8  # the model takes pixel / 256
FLOAT32_EXACT = 1 << 24  # every integer below this is a float32
CODE_MIN_KEY, CODE_MAX_KEY = "hilbench.code_min", "hilbench.code_max"  # model metadata: the code bounds
INT16_MAX = 32767  # a u8 x s8 kernel's pair sums saturate beyond this (x86 VPMADDUBSW)
CONTRIB_DOMAIN = "com.microsoft"  # onnxruntime's operators: MatMulIntegerToFloat


def accumulation_bound(encoder: IntEncoder) -> int:
    """The largest |partial sum| any layer's accumulator can reach, in its integer unit, over
    every input: sum |w| x the largest input code, plus |bias|, for the worst output."""
    worst = 0
    max_in = 255  # pixels
    for op in encoder.ops:
        if isinstance(op, (ConvOp, FcOp)):
            w = np.abs(op.weight.astype(np.int64)).reshape(op.weight.shape[0], -1).sum(axis=1)
            worst = max(worst, int((w * max_in + np.abs(op.bias.astype(np.int64))).max()))
            max_in = max(abs(op.requant.clip_min), abs(op.requant.clip_max))
    return worst


def output_range(op: ConvOp | FcOp, in_lo: int, in_hi: int) -> tuple[int, int]:
    """The smallest and largest codes ``op`` can produce before its clip, over every input in
    [in_lo, in_hi]: rne(acc * 2^-shift) for the extreme accumulators."""
    w = op.weight.astype(np.int64).reshape(op.weight.shape[0], -1)
    b = op.bias.astype(np.int64)
    acc_hi = np.where(w > 0, w * in_hi, w * in_lo).sum(axis=1) + b
    acc_lo = np.where(w > 0, w * in_lo, w * in_hi).sum(axis=1) + b
    scale = 2.0 ** -op.requant.shift
    return int(np.rint(acc_lo * scale).min()), int(np.rint(acc_hi * scale).max())


def int8_fc_safe(op: FcOp, in_lo: int, in_hi: int) -> bool:
    """Whether ``op`` can run as a u8 x s8 integer matmul on input codes in [in_lo, in_hi] with
    every kernel exact: the codes fit uint8, and no two products summed in int16 can pass it."""
    largest_weight = int(np.abs(op.weight.astype(np.int64)).max(initial=0))
    return 0 <= in_lo and in_hi <= 255 and 2 * in_hi * largest_weight <= INT16_MAX


def exact_in_float32(encoder: IntEncoder) -> bool:
    return accumulation_bound(encoder) < FLOAT32_EXACT


def lower_to_onnx(encoder: IntEncoder):
    """The exact float32 ONNX model (an ``onnx.ModelProto``) of ``encoder``; ModelError if its
    accumulators could leave float32's exact integer range.

    The last layer's requantization is left to whoever reads the output, in bulk: the codes are
    ``clip(rint(output), code_min, code_max)`` with the bounds in the model's metadata
    (:data:`CODE_MIN_KEY`, :data:`CODE_MAX_KEY`); every earlier layer is requantized in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    bound = accumulation_bound(encoder)
    if bound >= FLOAT32_EXACT:
        raise ModelError(f"node {encoder.node}: an accumulator can reach {bound} >= 2^24, beyond float32's "
                         "exact integers; no exact float lowering")
    layers = [i for i, op in enumerate(encoder.ops) if isinstance(op, (ConvOp, FcOp))]
    if not layers:
        raise ModelError(f"node {encoder.node}: no conv or fc layer to lower")
    nodes: list = []
    inits: list = []
    current = "view"
    in_exponent = INPUT_EXPONENT  # the input is pixel * 2^-8: the first layer absorbs 2^8
    in_lo, in_hi = 0, 255  # the range of the layer's input codes: pixels, then the clipped codes
    unrounded = False  # clipped but not yet rounded: max-pool first, on a quarter of the values

    def const(name: str, values: np.ndarray, dtype: type = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def add(op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    contrib = False  # uses onnxruntime's own operators
    for i, op in enumerate(encoder.ops):
        if isinstance(op, MaxPoolOp):
            current = add("MaxPool", [current], f"pool{i}", kernel_shape=[op.size, op.size],
                          strides=[op.size, op.size])
            continue
        if not isinstance(op, (ConvOp, FcOp)):
            raise ModelError(f"no exact ONNX lowering for {type(op).__name__}")
        # acc * 2^-shift, with the input's own scale 2^in_exponent undone: all powers of two
        scale = 2.0 ** -op.requant.shift
        bias = const(f"b{i}", op.bias.astype(np.float64) * scale)
        if isinstance(op, FcOp) and i != layers[0] and int8_fc_safe(op, in_lo, in_hi):
            one, zero = const(f"one{i}", np.array(1.0)), const(f"zero{i}", np.array(0), np.uint8)
            codes = add("QuantizeLinear", [current, one, zero], f"codes{i}")  # scale 1: the pending rounding
            weight = const(f"w{i}", np.ascontiguousarray(op.weight.T), np.int8)
            current = add("Flatten", [codes], f"flat{i}", axis=1)
            current = add("MatMulIntegerToFloat", [current, weight, one, const(f"scale{i}", np.array(scale)),
                                                   zero, "", bias], f"fc{i}", domain=CONTRIB_DOMAIN)
            contrib = True
        else:
            if unrounded:
                current = add("Round", [current], f"round{i}")
            weight = const(f"w{i}", op.weight.astype(np.float64) * 2.0 ** (-op.requant.shift - in_exponent))
            if isinstance(op, ConvOp):
                current = add("Conv", [current, weight, bias], f"conv{i}", kernel_shape=list(op.weight.shape[-2:]),
                              pads=[op.padding] * 4)
            else:
                current = add("Flatten", [current], f"flat{i}", axis=1)
                current = add("Gemm", [current, weight, bias], f"fc{i}", transB=1)
        in_exponent = 0
        rq = op.requant
        lo, hi = output_range(op, in_lo, in_hi)
        in_lo, in_hi = max(lo, rq.clip_min), min(hi, rq.clip_max)
        if i == layers[-1]:
            continue  # the reader requantizes the output (see the docstring)
        unrounded = True
        # A bound the values provably never cross needs no op; ReLU alone fuses into the layer.
        if lo >= rq.clip_min and hi <= rq.clip_max:
            continue
        if rq.clip_min == 0 and hi <= rq.clip_max:
            current = add("Relu", [current], f"relu{i}")
            continue
        current = add("Clip", [current, const(f"lo{i}", np.array(rq.clip_min)),
                               const(f"hi{i}", np.array(rq.clip_max))], f"clip{i}")
    add("Flatten", [current], "code_values", axis=1)
    if isinstance(encoder.ops[-1], FcOp):  # already [B, k]: no Flatten needed
        nodes.pop()
        nodes[-1].output[0] = "code_values"
    h, w = encoder.input_shape
    graph = helper.make_graph(
        nodes, f"hilbench-node{encoder.node}-exact",
        [helper.make_tensor_value_info("view", TensorProto.FLOAT, ["batch", 1, h, w])],
        [helper.make_tensor_value_info("code_values", TensorProto.FLOAT, ["batch", encoder.code_len])], inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(CONTRIB_DOMAIN, 1)] if contrib else [])
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="hilbench", doc_string=__doc__.splitlines()[0])
    model.ir_version = 8
    last = encoder.ops[layers[-1]]
    assert isinstance(last, (ConvOp, FcOp))
    helper.set_model_props(model, {CODE_MIN_KEY: str(last.requant.clip_min), CODE_MAX_KEY: str(last.requant.clip_max)})
    onnx.checker.check_model(model)
    return model


def codes_from_output(values: np.ndarray, code_min: int, code_max: int) -> np.ndarray:
    """The codes an exact model's output stands for (what the device runner computes too)."""
    return np.clip(np.rint(values), code_min, code_max).astype(np.int64)


def write_exact_onnx(encoder: IntEncoder, path: Path) -> Path:
    import onnx

    onnx.save(lower_to_onnx(encoder), str(path))
    return path
