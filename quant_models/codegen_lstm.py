"""C code generation for LSTM node encoders (:mod:`quant_models.intlstm`): the model as a C
translation unit implementing ``devices/firmware/include/hil_model.h`` on the recurrent kernels
of ``devices/firmware/kernels/hil_lstm.h`` and ``hil_lstm.c``.

Each layer becomes a ``static const hil_lstm_layer_t`` (sizes, shifts, buffers, its five
activation tables and its weights in the order the kernel reads them) and one function that runs
the layer over every time step (``hil_layer<i>``, one stage of the per-layer profile); layers run
one after the other, a layer's hidden states going to a static int8 sequence buffer the next
layer reads. The last layer keeps only its final h, which the pack stage turns into
offset-binary q-bit codes and packs with straight-line code.

Two kernels, chosen at compile time by ``HIL_KERNELS_DSP`` (``hil_dsp.h``): the portable one
(``hil_lstm_layer``, generic: int8 weights ``[unit][input][gate]``, int32 biases), and the SMLAD
one (``hil_lstm_layer_dsp``, inlined into each layer function so its description is folded into
the code): int16 weight pairs in the fully connected block order of ``hil_dsp.h``, a block being
one unit's four gates. The DSP layout takes about twice the flash, so a model whose words exceed
:data:`quant_models.dsp_layout.FLASH_BUDGET` gets only the portable kernel. Both layouts add the
round-half-to-even constants to the biases (:func:`quant_models.dsp_layout.rounding_constant`).
"""
from __future__ import annotations

from dataclasses import dataclass
from string import Template

import numpy as np

from .c_emitters import c_array, c_struct, c_words, model_translation_unit, pack_statements
from .dsp_layout import FC_STEP, FLASH_BUDGET, rounding_constant
from .intlstm import IntLstmEncoder, IntLstmLayer, lstm_costs

SHIFT_MIN, SHIFT_MAX = -8, 30
"""The shifts the kernels take. Clamping a shift into this range changes no result: a
saturation to at most 8 bits follows every left shift (x 2^8 saturates any nonzero integer), and
every value shifted right is below 2^24 in magnitude (accumulators: IntLstmEncoder.check), so
every shift >= 25 rounds it to 0; with 2^29 as the largest rounding constant no sum leaves int32."""


def kernel_shift(shift: int) -> int:
    """``shift`` clamped into the kernels' range (same results, see :data:`SHIFT_MIN`)."""
    return max(SHIFT_MIN, min(SHIFT_MAX, shift))


# ---- weight layouts (pure) ------------------------------------------------------------------

def unit_weights(layer: IntLstmLayer) -> np.ndarray:
    """int64 [unit][gate][input over the vector [x; h]]."""
    w = np.concatenate([layer.weight_x, layer.weight_h], axis=2).astype(np.int64)
    return w.transpose(1, 0, 2)


def unit_biases(layer: IntLstmLayer) -> np.ndarray:
    """int64 [unit][gate]: the bias plus the rounding constant of the gate's shift."""
    constants = np.array([rounding_constant(kernel_shift(s)) for s in layer.gate_shifts], dtype=np.int64)
    return layer.bias.astype(np.int64).T + constants


def vector_len(layer: IntLstmLayer) -> int:
    """Elements of the kernels' vector [x; h]: rounded up to even (the padding has zero weights)."""
    n = layer.input_size + layer.hidden_size
    return n + n % 2


def padded_unit_weights(layer: IntLstmLayer) -> np.ndarray:
    """:func:`unit_weights` over the padded vector."""
    w = unit_weights(layer)
    return np.pad(w, ((0, 0), (0, 0), (0, vector_len(layer) - w.shape[2])))


def portable_weights(layer: IntLstmLayer) -> np.ndarray:
    """int8 [unit][input][gate]: the portable kernel's four accumulators read one input's four
    weights together."""
    return padded_unit_weights(layer).transpose(0, 2, 1).astype(np.int8)


def int16_words(values: np.ndarray) -> np.ndarray:
    """Consecutive int16 pairs (last axis, even length) as uint32 words, the first in the low half."""
    lo, hi = values[..., 0::2].astype(np.int64), values[..., 1::2].astype(np.int64)
    return ((lo & 0xFFFF) | ((hi & 0xFFFF) << 16)).astype(np.uint32)


def dsp_weight_words(layer: IntLstmLayer) -> np.ndarray:
    """The SMLAD kernel's stream: per unit its 4 bias words (i, f, g, o), then per step of 8
    inputs each gate's 4 words, then per remaining word (2 inputs) the 4 gates' words."""
    units = layer.hidden_size
    words = int16_words(padded_unit_weights(layer))  # [unit][gate][word]
    full = words.shape[2] - words.shape[2] % (FC_STEP // 2)
    steps = words[:, :, :full].reshape(units, 4, -1, FC_STEP // 2).transpose(0, 2, 1, 3)
    tail = words[:, :, full:].transpose(0, 2, 1)
    bias = (unit_biases(layer) & 0xFFFFFFFF).astype(np.uint32)
    return np.concatenate([bias, steps.reshape(units, -1), tail.reshape(units, -1)], axis=1).ravel()


def layer_tables(layer: IntLstmLayer) -> np.ndarray:
    """uint8 [5 x 256]: the gates' tables (i, f, g, o) then tanh of the cell, int8 ones as bytes."""
    return np.concatenate([t.view(np.uint8) for t in [*layer.gate_tables(), layer.cell_tanh_table()]])


def dsp_unsupported(encoder: IntLstmEncoder) -> str | None:
    """Why the DSP layout should not be used, or None."""
    words = sum(dsp_weight_words(layer).size for layer in encoder.layers)
    if 4 * words > FLASH_BUDGET:
        return f"its int16 weight words take {4 * words} bytes of flash, beyond {FLASH_BUDGET}"
    return None


# ---- the per-layer profile -----------------------------------------------------------------

def layer_macs(encoder: IntLstmEncoder) -> list[int]:
    """Each layer's multiply-accumulates over all steps."""
    sizes = [encoder.input_shape[0], *(layer.hidden_size for layer in encoder.layers)]
    return [lstm_costs(n_in, [hidden], encoder.steps).macs for n_in, hidden in zip(sizes, sizes[1:])]


def lstm_stage_macs(encoder: IntLstmEncoder) -> list[tuple[str, int]]:
    """The stages ``hil_model_encode_marked`` marks and their MACs: one per layer (``lstm<i>``),
    then the codes, quantized and packed (``pack``); the same on both kernel paths."""
    return [(f"lstm{i}", m) for i, m in enumerate(layer_macs(encoder))] + [("pack", 0)]


# ---- C emitters ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerIo:
    """Where a layer reads its x and writes its h (C expressions and strides)."""

    x_step: int
    x_row: int
    h_out: str
    h_step: int


def layer_io(encoder: IntLstmEncoder) -> list[LayerIo]:
    """Layer 0 reads the input [rows][W] (x_t is column t), layer l > 0 the sequence buffer of
    layer l - 1 ([W][hidden]); hidden layers write theirs, the last keeps its final h only."""
    out = []
    x_step, x_row = 1, encoder.steps
    for i, layer in enumerate(encoder.layers):
        last = i == len(encoder.layers) - 1
        out.append(LayerIo(x_step, x_row, "hil_h_last" if last else sequence_name(i), 0 if last else layer.hidden_size))
        x_step, x_row = layer.hidden_size, 1
    return out


def sequence_name(layer_index: int) -> str:
    return f"hil_seq{layer_index % 2}"  # layer l writes one, layer l + 1 reads it and writes the other


def layer_input(index: int) -> str:
    return "(const int8_t *)input" if index == 0 else sequence_name(index - 1)


def describe_layer(encoder: IntLstmEncoder, index: int) -> str:
    layer = encoder.layers[index]
    return (f"layer {index}: LSTM({layer.input_size} -> {layer.hidden_size}) over {encoder.steps} steps; "
            f"gate shifts {list(layer.gate_shifts)}, cell product shift {layer.cell_product_shift}")


def layer_struct(encoder: IntLstmEncoder, index: int, weights: str, bias: str) -> str:
    layer, io = encoder.layers[index], layer_io(encoder)[index]
    gate_shifts = "{" + ", ".join(str(kernel_shift(s)) for s in layer.gate_shifts) + "}"
    fields: list[object] = [weights, bias, f"hil_tables{index}", "hil_vectors", "hil_cell", io.h_out,
                            encoder.steps, io.x_step, io.x_row, io.h_step, layer.input_size,
                            layer.hidden_size, vector_len(layer), gate_shifts, kernel_shift(layer.cell_product_shift)]
    return c_struct("hil_lstm_layer_t", f"hil_lstm{index}", fields)


def layer_function(index: int, body: str) -> str:
    return (f"static __attribute__((noinline)) void hil_layer{index}(const int8_t *x)\n"
            f"{{\n    {body}\n}}\n")


def portable_layers(encoder: IntLstmEncoder) -> str:
    parts = []
    for i, layer in enumerate(encoder.layers):
        parts.append(c_array("int8_t", f"hil_w{i}", portable_weights(layer))
                     + c_array("int32_t", f"hil_b{i}", unit_biases(layer))
                     + layer_struct(encoder, i, f"hil_w{i}", f"hil_b{i}")
                     + layer_function(i, f"hil_lstm_layer(&hil_lstm{i}, x);"))
    length = max(vector_len(layer) for layer in encoder.layers)
    vectors = f"static int8_t hil_vectors[{2 * length}];  /* two [x; h] vectors */\n"
    return vectors + "\n".join(parts)


def dsp_layers(encoder: IntLstmEncoder) -> str:
    parts = []
    for i, layer in enumerate(encoder.layers):
        parts.append(c_words(f"hil_w{i}", dsp_weight_words(layer))
                     + layer_struct(encoder, i, f"hil_w{i}", "0")
                     + layer_function(i, f"hil_lstm_layer_dsp(&hil_lstm{i}, x);  /* inlined: its constants folded */"))
    length = max(vector_len(layer) for layer in encoder.layers)
    vectors = f"static int16_t hil_vectors[{2 * length}] __attribute__((aligned(4)));  /* two [x; h] vectors */\n"
    return vectors + "\n".join(parts)


def shared_declarations(encoder: IntLstmEncoder) -> str:
    """Tables (flash) and the state both paths use (RAM)."""
    tables = "".join(f"/* {describe_layer(encoder, i)} */\n" + c_array("uint8_t", f"hil_tables{i}", layer_tables(layer))
                     for i, layer in enumerate(encoder.layers))
    hidden = [layer.hidden_size for layer in encoder.layers]
    ram = [f"static int8_t hil_cell[{max(hidden)}];"]
    for parity in (0, 1):
        sizes = [encoder.steps * h for i, h in enumerate(hidden[:-1]) if i % 2 == parity]
        if sizes:
            ram.append(f"static int8_t {sequence_name(parity)}[{max(sizes)}];  /* h of every step, [W][hidden] */")
    ram += [f"static int8_t hil_h_last[{hidden[-1]}];", f"static uint8_t hil_codes[{encoder.code_len}];"]
    return tables + "\n" + "\n".join(ram) + "\n"


BODY_TEMPLATE = Template("""\
$shared
$layers
/* the codes: offset binary, q bits each, packed MSB first */
static __attribute__((noinline)) void hil_lstm_pack(uint8_t *packed_code)
{
    hil_lstm_codes(hil_h_last, $code_len, $code_shift, $code_bits, hil_codes);
$pack
}

int hil_model_encode(const uint8_t *input, uint8_t *packed_code)
{
$calls
    hil_lstm_pack(packed_code);
    return 0;
}

int hil_model_encode_marked(const uint8_t *input, uint8_t *packed_code, hil_mark_t mark)
{
$marked_calls
    hil_lstm_pack(packed_code);
    mark();
    return 0;
}
""")

PATH_TEMPLATE = Template("""\
$layers
const uint8_t hil_model_dsp_kernels = $dsp;
""")

def kernel_layers(encoder: IntLstmEncoder, reason: str | None) -> tuple[str, str]:
    """(the layer descriptions for one or both kernel paths, what the header says about it)."""
    portable = PATH_TEMPLATE.substitute(layers=portable_layers(encoder), dsp=0)
    if reason is not None:
        return portable, f"Portable kernels only: {reason}."
    dsp = PATH_TEMPLATE.substitute(layers=dsp_layers(encoder), dsp=1)
    return (f"#if HIL_KERNELS_DSP\n\n{dsp}\n#else /* portable kernels */\n\n{portable}\n#endif\n",
            "Kernels chosen at compile time: SMLAD dot products (hil_lstm_layer_dsp) where the core has the "
            "DSP extension, else portable (hil_lstm_layer).")


def generate_lstm_model_c(encoder: IntLstmEncoder) -> str:
    """The C source of ``encoder`` implementing hil_model.h."""
    encoder.check(f"node {encoder.node}")
    layers, kernels = kernel_layers(encoder, dsp_unsupported(encoder))
    calls = [f"    hil_layer{i}({layer_input(i)});" for i in range(len(encoder.layers))]
    pack = pack_statements(encoder.code_len, encoder.code_bits, "hil_codes", "packed_code", mask=False)
    body = BODY_TEMPLATE.substitute(
        shared=shared_declarations(encoder), layers=layers, code_len=encoder.code_len,
        code_shift=kernel_shift(encoder.code_shift), code_bits=encoder.code_bits,
        pack="\n".join(f"    {s}" for s in pack), calls="\n".join(calls),
        marked_calls="\n".join(f"{c}\n    mark();" for c in calls))
    return model_translation_unit(encoder, generator="quant_models/codegen_lstm.py", what="integer LSTM parameters",
                                  kernel_header="hil_lstm.h", kernels=kernels, body=body)
