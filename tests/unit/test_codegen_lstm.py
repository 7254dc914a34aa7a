"""Generated C for LSTM encoders (quant_models/codegen_lstm.py) compiled for the host on both
kernel paths (the portable kernel; the DSP kernel with its instructions emulated in C), bit-exact
with the golden model on random shapes, extreme windows and extreme shifts. Encoders with q = 8
and code exponent -7 send the last hidden state itself (code = h + 128), so a wrong h cannot hide
behind the code quantizer; their prefixes (the first k layers) expose every layer's final h.
The same C with the real DSP instructions runs in tests/emulated/test_lstm_firmware.py."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from quant_models import golden
from quant_models.codegen import generate_model_c, model_stages
from quant_models.codegen_lstm import (SHIFT_MAX, SHIFT_MIN, dsp_weight_words, kernel_shift, layer_macs,
                                       portable_weights, unit_biases)
from quant_models.intlstm import IntLstmEncoder, IntLstmLayer
from quant_models.packing import payload_bytes
from tests.codegen_cases import KERNEL_PATHS, build_host_models, write_models
from tests.unit.test_intlstm import random_encoder

RANDOM_MODELS = 20
WINDOWS = 24
CORNERS = [  # (rows, hidden sizes, steps W, q)
    (4, [48, 48, 48], 1, 2),  # widest, one step
    (1, [1], 60, 8),  # one unit, longest window
    (4, [1, 48], 60, 5),  # a one-unit layer feeding a wide one
    (2, [47], 17, 3),  # odd [x; h]: the padded element
]


class ModelInfo(ctypes.Structure):
    """hil_model_info_t (devices/firmware/include/hil_model.h)."""

    _fields_ = [("hash", ctypes.c_uint8 * 8), ("input_h", ctypes.c_uint16), ("input_w", ctypes.c_uint16),
                ("code_len", ctypes.c_uint16), ("code_bits", ctypes.c_uint8), ("code_bytes", ctypes.c_uint16),
                ("macs", ctypes.c_uint32)]


MARK = ctypes.CFUNCTYPE(None)


def transparent(enc: IntLstmEncoder, layers: int | None = None) -> IntLstmEncoder:
    """``enc`` (or its first ``layers`` layers) with 8-bit codes on h's own grid: code = h + 128."""
    kept = enc.layers[:layers]
    return IntLstmEncoder(enc.node, enc.input_shape, kept, 8, -7)


def random_lstm(rng: np.random.Generator, node: int) -> IntLstmEncoder:
    """1 to 3 layers, 1 to 4 rows, 1 to 60 steps, 1 to 48 units, q 2..8; weights full-range,
    realistic or tiny (which makes ties and small accumulators common)."""
    rows, steps, bits = int(rng.integers(1, 5)), int(rng.integers(1, 61)), int(rng.integers(2, 9))
    sizes = [int(rng.choice([1, 2, 3, int(rng.integers(1, 49))])) for _ in range(int(rng.integers(1, 4)))]
    return random_encoder(rng, rows, sizes, steps, bits, node=node, weight_scale=int(rng.choice([2, 40, 127])))


def extreme_shifts(rng: np.random.Generator, node: int) -> list[IntLstmEncoder]:
    """Shifts the kernels clamp (below -8, above 30), zero and negative gate and cell shifts,
    saturating biases, code shifts -9 and 37 (-> -8, 30)."""
    def layer(n_in: int, hidden: int, weight_exponents, gate_exponents, cell_exponent: int, bias: int) -> IntLstmLayer:
        return IntLstmLayer(rng.integers(-127, 128, (4, hidden, n_in)).astype(np.int8),
                            rng.integers(-127, 128, (4, hidden, hidden)).astype(np.int8),
                            rng.integers(-bias, bias + 1, (4, hidden)).astype(np.int32),
                            weight_exponents, gate_exponents, cell_exponent)

    # gate shifts -10 (-> -8), 0, -1, -4, cell product shift -1; biases beyond 2^23 (x 2^8 leaves int32)
    left = layer(2, 5, (12, 0, 1, 5), (-5, -7, -7, -6), -16, 12_000_000)
    wide = layer(5, 7, (-30, -2, -24, -8), (-2, -3, 0, -4), -5, 3_000_000)  # 35 (-> 30), 6, 31 (-> 30), 11
    right = layer(7, 3, (-8, -8, -8, -8), (-4, -4, -3, -4), 20, 5000)  # cell product shift 35 (-> 30)
    return [IntLstmEncoder(node, (2, 9), (left, wide, right), 4, -16),  # code shift -9 (-> -8)
            IntLstmEncoder(node + 1, (2, 9), (left, wide), 3, 30),  # code shift 37 (-> 30)
            IntLstmEncoder(node + 2, (2, 9), (left,), 8, -7)]


def probe_windows(rng: np.random.Generator, enc: IntLstmEncoder, count: int) -> np.ndarray:
    """All 0, all -128, all 127, then full-range, low-amplitude and step windows."""
    shape = (count, *enc.input_shape)
    w = rng.integers(-128, 128, shape).astype(np.int8)
    w[0], w[1], w[2] = 0, -128, 127
    w[3::3] //= 16
    for i in range(4, count, 3):
        w[i, :, : enc.steps // 2] = -128
    return w


def run(lib: ctypes.CDLL, enc: IntLstmEncoder, index: int, windows: np.ndarray) -> np.ndarray:
    encode = getattr(lib, f"hil_model_encode_{index}")
    out = (ctypes.c_uint8 * payload_bytes(enc.code_len, enc.code_bits))()
    got = []
    for window in windows:
        assert encode(np.ascontiguousarray(window).tobytes(), out) == 0
        got.append(bytes(out))
    return np.array([np.frombuffer(g, np.uint8) for g in got])


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[IntLstmEncoder], list[Path], Path]:
    rng = np.random.default_rng(20260405)
    encoders = [random_encoder(rng, rows, sizes, steps, bits, node=i)
                for i, (rows, sizes, steps, bits) in enumerate(CORNERS)]
    encoders += [random_lstm(rng, len(encoders) + i) for i in range(RANDOM_MODELS)]
    deep = next(e for e in encoders if len(e.layers) == 3)
    encoders += [transparent(deep, k) for k in (1, 2, 3)]
    encoders += [transparent(e) for e in encoders[len(CORNERS):len(CORNERS) + 4]]
    encoders += extreme_shifts(rng, len(encoders))
    out = tmp_path_factory.mktemp("lstm")
    return encoders, write_models(encoders, out), out


@pytest.fixture(scope="module", params=sorted(KERNEL_PATHS))
def library(request: pytest.FixtureRequest, cases) -> tuple[str, ctypes.CDLL]:
    _, sources, out = cases
    return request.param, build_host_models(sources, out / request.param, KERNEL_PATHS[request.param])


def test_random_shapes_and_extremes_are_bit_exact(cases, library) -> None:
    encoders, _, _ = cases
    kernels, lib = library
    rng = np.random.default_rng(11)
    wrong = []
    for i, enc in enumerate(encoders):
        windows = probe_windows(rng, enc, WINDOWS)
        bad = np.flatnonzero((run(lib, enc, i, windows) != golden.encode_packed(enc, windows)).any(axis=1))
        if bad.size:
            wrong.append(f"model {i} (rows {enc.input_shape[0]}, W {enc.steps}, "
                         f"{[layer.hidden_size for layer in enc.layers]}, q {enc.code_bits}): windows {bad.tolist()}")
    assert not wrong, f"{kernels}:\n" + "\n".join(wrong)


def test_the_cases_cover_the_corners(cases) -> None:
    encoders, sources, _ = cases
    assert {len(e.layers) for e in encoders} == {1, 2, 3} and {e.input_shape[0] for e in encoders} == {1, 2, 3, 4}
    assert {1, 60} <= {e.steps for e in encoders} and {e.code_bits for e in encoders} == set(range(2, 9))
    assert {1, 48} <= {layer.hidden_size for e in encoders for layer in e.layers}
    shifts = [s for e in encoders for layer in e.layers for s in (*layer.gate_shifts, layer.cell_product_shift)]
    assert min(shifts) < SHIFT_MIN + 8 and 0 in shifts and max(shifts) > SHIFT_MAX
    assert all("Portable kernels only" not in s.read_text() for s in sources)


def test_info_stages_and_marks(cases, library) -> None:
    """hil_model_info as the host reads it, and hil_model_encode_marked: one mark per stage of
    model_stages (the same on both paths), the same codes as hil_model_encode."""
    encoders, _, _ = cases
    kernels, lib = library
    assert ctypes.c_uint8.in_dll(lib, "hil_model_dsp_kernels_0").value == (kernels == "dsp")
    rng = np.random.default_rng(5)
    for i, enc in enumerate(encoders):
        info = ModelInfo.in_dll(lib, f"hil_model_info_{i}")
        assert bytes(info.hash) == bytes.fromhex(enc.sha256())[:8]
        assert (info.input_h, info.input_w) == enc.input_shape
        assert (info.code_len, info.code_bits) == (enc.code_len, enc.code_bits)
        assert (info.code_bytes, info.macs) == (payload_bytes(enc.code_len, enc.code_bits), enc.macs)
        stages = model_stages(enc, kernels == "dsp")
        assert [s.name for s in stages] == [f"lstm{k}" for k in range(len(enc.layers))] + ["pack"]
        assert sum(s.macs for s in stages) == enc.macs and stages[-1].macs == 0
        marks = []
        window = probe_windows(rng, enc, 4)[3]
        out = (ctypes.c_uint8 * info.code_bytes)()
        assert getattr(lib, f"hil_model_encode_marked_{i}")(window.tobytes(), out, MARK(lambda: marks.append(1))) == 0
        assert len(marks) == len(stages)
        assert bytes(out) == golden.encode_packed(enc, window[None])[0].tobytes()


def test_layer_macs_by_hand() -> None:
    enc = random_encoder(np.random.default_rng(0), 3, [4, 2], 5, 4)
    assert layer_macs(enc) == [4 * 4 * (3 + 4) * 5, 4 * 2 * (4 + 2) * 5]
    assert [s.macs for s in model_stages(enc, True)] == [*layer_macs(enc), 0]


def test_weight_layouts_by_hand() -> None:
    """One input, one unit: [x; h] is one word. Portable: [unit][input][gate]; DSP stream: the
    4 bias words (with 2^(s-1) - 1 for s = 4, 5, 6, 7), then the word of each gate."""
    wx = np.array([1, 2, 3, 4], np.int8).reshape(4, 1, 1)
    wh = np.array([-1, -2, -3, -128], np.int8).reshape(4, 1, 1)
    layer = IntLstmLayer(wx, wh, np.array([[10], [-10], [0], [1]], np.int32), (-8,) * 4, (-11, -10, -9, -8), -5)
    assert layer.gate_shifts == (4, 5, 6, 7)
    assert unit_biases(layer).tolist() == [[10 + 7, -10 + 15, 0 + 31, 1 + 63]]
    assert portable_weights(layer).tolist() == [[[1, 2, 3, 4], [-1, -2, -3, -128]]]
    words = dsp_weight_words(layer)
    assert words.dtype == np.uint32
    assert words.tolist() == [17, 5, 31, 64, 0xFFFF0001, 0xFFFE0002, 0xFFFD0003, 0xFF800004]


def test_kernel_shifts_are_clamped() -> None:
    assert [kernel_shift(s) for s in (-40, -8, 0, 11, 30, 31, 99)] == [-8, -8, 0, 11, 30, 30, 30]


def test_generated_c_is_an_lstm_model_with_both_paths() -> None:
    enc = random_encoder(np.random.default_rng(2), 1, [6, 3], 10, 4, node=3)
    source = generate_model_c(enc)
    assert "codegen_lstm.py" in source and enc.sha256() in source
    assert "#if HIL_KERNELS_DSP" in source and "hil_lstm_layer_dsp(&hil_lstm1, x)" in source
    assert "hil_lstm_layer(&hil_lstm1, x)" in source
    assert generate_model_c(enc) == source


def test_a_model_too_large_for_the_dsp_layout_gets_the_portable_kernel() -> None:
    enc = random_encoder(np.random.default_rng(4), 1, [190], 2, 4, weight_scale=60)
    source = generate_model_c(enc)
    assert "Portable kernels only: its int16 weight words take" in source
    assert "#if HIL_KERNELS_DSP" not in source and "hil_lstm_layer_dsp" not in source
