"""C code generation: an integer node encoder as a C translation unit for the firmware.

The generated file implements ``devices/firmware/include/hil_model.h`` twice; the compiler keeps
one (``HIL_KERNELS_DSP``, from ``devices/firmware/kernels/hil_dsp.h``):

- on cores with the DSP extension (Cortex-M4/M7/M33), specialised kernels: the header's
  SIMD kernels called with ``static const`` layer descriptions (loop bounds, shifts and clips
  are compile-time constants), weights in the order the kernels read them and im2col tables,
  all laid out by :mod:`quant_models.dsp_layout`; each layer is its own function (one symbol
  per layer in a profile); the codes are packed by straight-line code;
- elsewhere (Cortex-M0/M3, a host build, or ``-DHIL_KERNELS_PORTABLE``), the portable kernels of
  ``devices/firmware/kernels/hil_kernels.c``: int8 weights in flash, activations in two static
  ping-pong buffers sized for the largest intermediate tensor.

An encoder the DSP kernels cannot run exactly (see :func:`quant_models.dsp_layout.plan_dsp`)
gets only the portable version, and the file says why. Small pure emitters (an array, a struct:
:mod:`quant_models.c_emitters`; one kernel call per op) assembled by templates. LSTM encoders:
:mod:`quant_models.codegen_lstm` (:func:`generate_model_c` and :func:`model_stages` dispatch on
the model's type).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from string import Template

import numpy as np

from harness.core.errors import ModelError

from .c_emitters import c_array, c_struct, c_words, model_translation_unit, pack_statements
from .codegen_lstm import generate_lstm_model_c, lstm_stage_macs
from .dsp_layout import ConvStage, DspPlan, DspUnsupported, FcStage, Frame, PoolStage, plan_dsp
from .intlstm import IntLstmEncoder
from .intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp
from .manifest import NodeModel

# ---------------------------------------------------------------------------------------------
# Portable kernels (hil_kernels.c)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmittedOp:
    declarations: str  # constant arrays
    call: str  # the kernel call, reading `src` and writing `dst`


@singledispatch
def emit_op(op, index: int, shape: tuple[int, ...], src: str, dst: str) -> EmittedOp:
    raise NotImplementedError(f"no C emitter for {type(op).__name__}")


@emit_op.register
def _(op: ConvOp, index: int, shape: tuple[int, ...], src: str, dst: str) -> EmittedOp:
    c, h, w = shape
    out_ch, _, k, _ = op.weight.shape
    rq = op.requant
    decl = c_array("int8_t", f"w{index}", op.weight) + c_array("int32_t", f"b{index}", op.bias)
    call = (f"hil_conv2d_u8({src}, {c}, {h}, {w}, w{index}, b{index}, {out_ch}, {k}, {op.padding}, "
            f"{rq.shift}, {rq.clip_min}, {rq.clip_max}, {dst});")
    return EmittedOp(decl, call)


@emit_op.register
def _(op: MaxPoolOp, index: int, shape: tuple[int, ...], src: str, dst: str) -> EmittedOp:
    c, h, w = shape
    return EmittedOp("", f"hil_maxpool_u8({src}, {c}, {h}, {w}, {op.size}, {dst});")


@emit_op.register
def _(op: FcOp, index: int, shape: tuple[int, ...], src: str, dst: str) -> EmittedOp:
    out_len, in_len = op.weight.shape
    rq = op.requant
    decl = c_array("int8_t", f"w{index}", op.weight) + c_array("int32_t", f"b{index}", op.bias)
    call = (f"hil_fc_u8({src}, {in_len}, w{index}, b{index}, {out_len}, "
            f"{rq.shift}, {rq.clip_min}, {rq.clip_max}, {dst});")
    return EmittedOp(decl, call)


PORTABLE_TEMPLATE = Template("""\
$declarations
$buffers
const uint8_t hil_model_dsp_kernels = 0;

int hil_model_encode(const uint8_t *input, uint8_t *packed_code)
{
$calls
    hil_pack_codes($codes, $code_len, $code_bits, packed_code);
    return 0;
}

int hil_model_encode_marked(const uint8_t *input, uint8_t *packed_code, hil_mark_t mark)
{
$marked_calls
    hil_pack_codes($codes, $code_len, $code_bits, packed_code);
    mark();
    return 0;
}
""")


def portable_source(encoder: IntEncoder) -> str:
    """hil_model_encode on the portable kernels."""
    shapes = encoder.shapes()
    buffers = ("act_a", "act_b")
    declarations, calls = [], []
    src = "input"
    for i, (op, shape) in enumerate(zip(encoder.ops, shapes)):
        dst = buffers[i % 2]
        emitted = emit_op(op, i, shape, src, dst)
        declarations.append(emitted.declarations)
        calls.append(f"    {emitted.call}")
        src = dst
    size = max(int(np.prod(s)) for s in shapes[1:])
    used = buffers[:min(len(encoder.ops), 2)]
    return PORTABLE_TEMPLATE.substitute(
        declarations="".join(declarations), buffers="".join(f"static uint8_t {b}[{size}];\n" for b in used),
        calls="\n".join(calls), marked_calls="\n".join(f"{c}\n    mark();" for c in calls), codes=src,
        code_len=encoder.code_len, code_bits=encoder.code_bits)


# ---------------------------------------------------------------------------------------------
# DSP kernels (hil_dsp.h)
# ---------------------------------------------------------------------------------------------


def frame_name(frame: Frame) -> str:
    return f"hil_t{frame.tensor}"


def describe_frame(frame: Frame) -> str:
    border = f", border {frame.pad}" if frame.pad else ""
    return f"frame {frame.tensor} ({frame.height}x{frame.width}x{frame.channels}, stride {frame.stride}{border})"


@dataclass(frozen=True)
class EmittedStage:
    declarations: str  # arrays, the layer description and the layer function
    function: str  # the layer function's name


def _layer_function(name: str, comment: str, body: str) -> str:
    return f"/* {comment} */\nstatic __attribute__((noinline)) void {name}(void)\n{{\n    {body}\n}}\n"


@singledispatch
def emit_stage(stage) -> EmittedStage:
    raise NotImplementedError(f"no C emitter for {type(stage).__name__}")


@emit_stage.register
def _(stage: ConvStage) -> EmittedStage:
    i, rq, k = stage.op_index, stage.requant, stage.k
    pool = f", max-pool {stage.pool} fused" if stage.pool > 1 else ""
    comment = (f"op {i}: conv {stage.target.channels}@{k}x{k} on {describe_frame(stage.source)}{pool} -> "
               f"{describe_frame(stage.target)}; {stage.tap_pairs} tap pairs, {stage.windows} x "
               f"{stage.window_groups} groups of 4 pixels, {stage.channel_pairs} channel pairs")
    fields: list[object] = [f"hil_w{i}", f"hil_org{i}", f"hil_dst{i}", stage.windows, stage.window_groups,
                            int(stage.pool > 1), stage.k, stage.run, stage.source.row, stage.tap_pairs,
                            stage.channel_pairs, rq.shift, rq.clip_min, rq.clip_max]
    decl = (c_words(f"hil_w{i}", stage.weights) + c_array("uint32_t", f"hil_org{i}", stage.origins)
            + c_array("uint32_t", f"hil_dst{i}", stage.dests) + c_struct("hil_dsp_conv_t", f"hil_conv{i}", fields))
    name = f"hil_layer{i}"
    body = f"hil_dsp_conv(&hil_conv{i}, {frame_name(stage.source)}, {frame_name(stage.target)}, hil_col);"
    return EmittedStage(decl + _layer_function(name, comment, body), name)


@emit_stage.register
def _(stage: PoolStage) -> EmittedStage:
    src, dst = stage.source, stage.target
    comment = f"op {stage.op_index}: max-pool {stage.size} on {describe_frame(src)} -> {describe_frame(dst)}"
    name = f"hil_layer{stage.op_index}"
    body = (f"hil_dsp_maxpool({frame_name(src)}, {frame_name(dst)}, {dst.height}, {dst.width}, {src.stride}, "
            f"{src.row}, {dst.row}, {dst.offset(0, 0)}, {stage.size});")
    return EmittedStage(_layer_function(name, comment, body), name)


@emit_stage.register
def _(stage: FcStage) -> EmittedStage:
    i, rq = stage.op_index, stage.requant
    target = "the codes" if stage.target is None else describe_frame(stage.target)
    comment = (f"op {i}: fc on {describe_frame(stage.source)} -> {target}; {stage.blocks} blocks of 4 outputs x "
               f"{stage.steps} steps of 8 inputs")
    fields: list[object] = [f"hil_w{i}", stage.blocks, stage.steps, int(stage.target is None), rq.shift,
                            rq.clip_min, rq.clip_max]
    decl = c_words(f"hil_w{i}", stage.weights) + c_struct("hil_dsp_fc_t", f"hil_fc{i}", fields)
    name = f"hil_layer{i}"
    out = "hil_codes" if stage.target is None else frame_name(stage.target)
    body = f"hil_dsp_fc(&hil_fc{i}, {frame_name(stage.source)}, {out});"
    return EmittedStage(decl + _layer_function(name, comment, body), name)


DSP_TEMPLATE = Template("""\
$frames
$declarations
/* frame 0: the input pixels; the border stays zero (never written) */
static __attribute__((noinline)) void hil_layer_input(const uint8_t *input)
{
    hil_dsp_load_input(input, $input_frame, $input_h, $input_w, $input_pad);
}

/* the codes, packed MSB first */
static __attribute__((noinline)) void hil_layer_pack(uint8_t *packed_code)
{
$pack
}

const uint8_t hil_model_dsp_kernels = 1;

int hil_model_encode(const uint8_t *input, uint8_t *packed_code)
{
    hil_layer_input(input);
$calls
    hil_layer_pack(packed_code);
    return 0;
}

int hil_model_encode_marked(const uint8_t *input, uint8_t *packed_code, hil_mark_t mark)
{
    hil_layer_input(input);
    mark();
$marked_calls
    hil_layer_pack(packed_code);
    mark();
    return 0;
}
""")


def dsp_source(encoder: IntEncoder, plan: DspPlan) -> str:
    """hil_model_encode on the DSP kernels, as laid out by ``plan``."""
    frames = [f"static int16_t {frame_name(f)}[{f.elements}] __attribute__((aligned(4)));  /* {describe_frame(f)} */"
              for f in plan.frames]
    if plan.col_words:
        frames.append(f"static uint32_t hil_col[{plan.col_words}];  /* im2col: words [tap pair][pixel] */")
    frames.append(f"static uint8_t hil_codes[{plan.code_slots}];")
    emitted = [emit_stage(stage) for stage in plan.stages]
    codes = plan.stages[-1]
    assert isinstance(codes, FcStage)
    mask = codes.requant.clip_min < 0 or codes.requant.clip_max >= 1 << encoder.code_bits
    pack = pack_statements(encoder.code_len, encoder.code_bits, "hil_codes", "packed_code", mask)
    return DSP_TEMPLATE.substitute(
        frames="\n".join(frames), declarations="\n".join(e.declarations for e in emitted),
        input_frame=frame_name(plan.input), input_h=plan.input.height, input_w=plan.input.width,
        input_pad=plan.input.pad, pack="\n".join(f"    {s}" for s in pack),
        calls="\n".join(f"    {e.function}();" for e in emitted),
        marked_calls="\n".join(f"    {e.function}();\n    mark();" for e in emitted))


# ---------------------------------------------------------------------------------------------
# The model file
# ---------------------------------------------------------------------------------------------

@singledispatch
def generate_model_c(model: NodeModel) -> str:
    """The C source of a node's integer model implementing hil_model.h: a CNN encoder here, an
    LSTM encoder in :mod:`quant_models.codegen_lstm`."""
    raise ModelError(f"no C code generator for {type(model).__name__}")


@generate_model_c.register
def _(model: IntLstmEncoder) -> str:
    return generate_lstm_model_c(model)


@generate_model_c.register
def generate_cnn_model_c(encoder: IntEncoder) -> str:
    """The C source of a CNN ``encoder`` implementing hil_model.h."""
    portable = portable_source(encoder)
    try:
        plan = plan_dsp(encoder)
    except DspUnsupported as exc:
        kernels = f"Portable kernels only: the DSP kernels cannot run this model exactly ({exc})."
        body = portable
    else:
        kernels = ("Kernels chosen at compile time: DSP (hil_dsp.h) where the core has the DSP extension, "
                   "else portable (hil_kernels.c).")
        body = (f"#if HIL_KERNELS_DSP\n\n{dsp_source(encoder, plan)}\n"
                f"#else /* portable kernels */\n\n{portable}\n#endif\n")
    return model_translation_unit(encoder, generator="quant_models/codegen.py", what="integer parameters",
                                  kernel_header="hil_kernels.h", kernels=kernels, body=body)


@dataclass(frozen=True)
class ModelStage:
    """One stage of a generated encoder as the per-layer profile sees it (one mark each)."""

    name: str
    macs: int


@singledispatch
def model_stages(model: NodeModel, dsp: bool) -> list[ModelStage]:
    """The stages ``hil_model_encode_marked`` marks, in order, for the DSP or the portable build
    of a node's generated C (the per-layer profile)."""
    raise ModelError(f"no C code generator for {type(model).__name__}")


@model_stages.register
def _(model: IntLstmEncoder, dsp: bool) -> list[ModelStage]:
    """One stage per LSTM layer, then the codes; the same on both kernel paths."""
    return [ModelStage(name, macs) for name, macs in lstm_stage_macs(model)]


@model_stages.register
def cnn_model_stages(encoder: IntEncoder, dsp: bool) -> list[ModelStage]:
    """The stages ``hil_model_encode_marked`` marks, in order, for the DSP or the portable build:
    the DSP build loads the input into its padded frame first, may fuse a max-pool into the
    convolution before it, and packs the codes last; the portable build runs one kernel per op
    and packs the codes last."""
    shapes = encoder.shapes()
    macs = [op.macs(shape) for op, shape in zip(encoder.ops, shapes)]
    plan = None
    if dsp:
        try:
            plan = plan_dsp(encoder)
        except DspUnsupported:
            plan = None
    if plan is None:
        stages = [ModelStage(f"{op.name}{i}", m) for i, (op, m) in enumerate(zip(encoder.ops, macs))]
        return stages + [ModelStage("pack", 0)]
    stages = [ModelStage("input", 0)]
    for stage in plan.stages:
        i = stage.op_index
        name = f"{encoder.ops[i].name}{i}"
        if isinstance(stage, ConvStage) and stage.pool > 1:
            name += f"+{encoder.ops[i + 1].name}{i + 1}"
        stages.append(ModelStage(name, macs[i]))
    return stages + [ModelStage("pack", 0)]


def write_model_c(encoder: NodeModel, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate_model_c(encoder))
    return path
