"""Generated encoder C on the host, and random integer encoders of odd shapes to feed it.

The C code generator (quant_models/codegen.py) emits two implementations in one file: the DSP
kernels (devices/firmware/kernels/hil_dsp.h) and the portable ones (hil_kernels.c). On the
host, ``-DHIL_DSP_EMULATE`` compiles the DSP path with its few DSP instructions (SMLAD, SMUAD,
LDRD, LDM) written in C with the instructions' semantics; without it the host gets the portable
path. The emulated-board tests run the same DSP C with the real instructions.

Random encoders (:func:`random_encoder`): an optional max-pool on the input, one or two
convolutions (1 to 64 channels, kernels 1 to 7, any padding that leaves an output, each
optionally followed by a max-pool of 1 to 3), an optional hidden fully connected layer and the
code layer (q in 1, 2, 3, 4, 8), on odd input sizes. Shifts are calibrated on random images so
that outputs spread over the clip range, some layers get small weights and shifts <= 0, and
small shifts make exact rounding ties frequent.

Shared by tests/models/test_codegen.py, tests/unit/test_kernels_host.py,
tests/emulated/test_kernels_dsp.py and tests/emulated/test_node_firmware.py.
"""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.core.paths import KERNEL_INCLUDE_DIRS, KERNEL_SOURCES
from quant_models import golden
from quant_models.codegen import generate_model_c
from quant_models.intparams import ConvOp, FcOp, IntEncoder, IntOp, MaxPoolOp, Requant
from quant_models.packing import payload_bytes

KERNEL_PATHS = {"portable": (), "dsp": ("-DHIL_DSP_EMULATE",)}
"""The host builds of the generated C: compiler defines per kernel path."""

CODE_BITS = (1, 2, 3, 4, 8)
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def build_host_library(model_c: Path, out_dir: Path, defines: Sequence[str] = ()) -> ctypes.CDLL:
    """One generated model compiled with the kernels into a shared library."""
    return build_host_models([model_c], out_dir, defines, rename=False)


def build_host_models(model_sources: Sequence[Path], out_dir: Path, defines: Sequence[str] = (),
                      rename: bool = True) -> ctypes.CDLL:
    """Several generated models in one shared library (one compiler run): model i's symbols are
    ``hil_model_encode_<i>`` and ``hil_model_info_<i>`` when ``rename``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    units = []
    for i, source in enumerate(model_sources):
        if not rename:
            units.append(Path(source))
            continue
        unit = out_dir / f"unit{i}.c"
        renamed = ("hil_model_encode", "hil_model_encode_marked", "hil_model_info", "hil_model_dsp_kernels")
        unit.write_text("".join(f"#define {name} {name}_{i}\n" for name in renamed)
                        + f'#include "{Path(source).resolve()}"\n')
        units.append(unit)
    lib = out_dir / f"libmodels{''.join(d.replace('-D', '_') for d in defines)}.so"
    cmd = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", *defines,
           *[f"-I{d}" for d in KERNEL_INCLUDE_DIRS], *map(str, units), *map(str, KERNEL_SOURCES), "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"host build failed: {' '.join(cmd)}\n{result.stderr}")
    return ctypes.CDLL(str(lib))


def run_host_model(lib: ctypes.CDLL, encoder: IntEncoder, views: np.ndarray, index: int | None = None) -> np.ndarray:
    """The packed codes the library's model (``index`` when several) gives for each view."""
    encode = getattr(lib, "hil_model_encode" if index is None else f"hil_model_encode_{index}")
    nbytes = payload_bytes(encoder.code_len, encoder.code_bits)
    out = (ctypes.c_uint8 * nbytes)()
    got = np.zeros((len(views), nbytes), np.uint8)
    for i, view in enumerate(views):
        assert encode(np.ascontiguousarray(view, dtype=np.uint8).tobytes(), out) == 0
        got[i] = np.frombuffer(out, np.uint8)
    return got


def firmware_runs_dsp_kernels(elf: Path) -> bool:
    """Whether a firmware image holds the DSP path (its per-layer functions) rather than the
    portable kernels (the linker drops whichever the model does not call)."""
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in symbols.splitlines() if line.strip()}
    return "hil_model_encode" in names and any(n.startswith("hil_layer") for n in names) \
        and not names & {"hil_conv2d_u8", "hil_fc_u8", "hil_maxpool_u8"}


def write_models(encoders: Sequence[IntEncoder], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, encoder in enumerate(encoders):
        path = out_dir / f"model{i}.c"
        path.write_text(generate_model_c(encoder))
        paths.append(path)
    return paths


def random_views(rng: np.random.Generator, encoder: IntEncoder, count: int) -> np.ndarray:
    """Black, white, then random images, some sparse (zeros) and some low-contrast."""
    shape = (count, *encoder.input_shape)
    views = rng.integers(0, 256, shape, dtype=np.uint8)
    views[0], views[1] = 0, 255
    for i in range(2, count):
        if i % 3 == 0:
            views[i][rng.random(encoder.input_shape) < 0.6] = 0
        elif i % 3 == 1:
            views[i] = views[i] // 16
    return views


def _requant(rng: np.random.Generator, acc: np.ndarray, lo: int, hi: int) -> Requant:
    """A shift that spreads ``acc`` over [lo, hi], sometimes one off; clip [lo, hi]."""
    spread = float(np.percentile(np.abs(acc), 90)) if acc.size else 1.0
    shift = int(np.ceil(np.log2(max(spread, 1.0) / max(hi, 1)))) + int(rng.integers(-1, 2))
    return Requant(shift, lo, hi)


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    style = rng.integers(0, 4)
    if style == 0:  # small weights: small sums, shifts near or below zero
        return rng.integers(-2, 3, shape).astype(np.int8)
    w = rng.integers(-128, 128, shape)
    if style == 1:
        w[rng.random(shape) < 0.7] = 0
    return w.astype(np.int8)


def _calibrated(rng: np.random.Generator, op: ConvOp | FcOp, x: np.ndarray, lo: int, hi: int) -> ConvOp | FcOp:
    """``op`` with a bias and a requantisation fitted to its accumulators on ``x``."""
    wide = Requant(0, INT32_MIN, INT32_MAX)
    acc = golden.apply_op(op.__class__(**{**op.__dict__, "requant": wide}), x)
    scale = float(np.percentile(np.abs(acc), 50)) if acc.size else 1.0
    bias = rng.integers(-int(scale) - 1, int(scale) + 2, op.bias.shape).astype(np.int32)
    with_bias = op.__class__(**{**op.__dict__, "bias": bias, "requant": wide})
    requant = _requant(rng, golden.apply_op(with_bias, x), lo, hi)
    return op.__class__(**{**op.__dict__, "bias": bias, "requant": requant})


Layer = tuple  # ("conv", out_channels, kernel, padding) | ("pool", size) | ("fc", outputs)


def build_encoder(rng: np.random.Generator, input_shape: tuple[int, int], layers: Sequence[Layer], code_len: int,
                  bits: int, node: int = 0) -> IntEncoder:
    """An encoder of the given layers then the code layer, with random weights and calibrated
    requantisations (hidden layers: unsigned, 2 to 8 bits; codes: q bits)."""
    x = rng.integers(0, 256, (8, 1, *input_shape)).astype(np.int64)  # calibration images
    ops: list[IntOp] = []
    for layer in [*layers, ("fc", code_len)]:
        top = (1 << bits) - 1 if len(ops) == len(layers) else (1 << int(rng.integers(2, 9))) - 1
        op: IntOp
        if layer[0] == "conv":
            _, out_ch, k, padding = layer
            op = _calibrated(rng, ConvOp(_weights(rng, (out_ch, x.shape[1], k, k)), np.zeros(out_ch, np.int32),
                                         padding, Requant(0, 0, 0)), x, 0, top)
        elif layer[0] == "pool":
            op = MaxPoolOp(layer[1])
        else:
            n_in = int(np.prod(x.shape[1:]))
            op = _calibrated(rng, FcOp(_weights(rng, (layer[1], n_in)), np.zeros(layer[1], np.int32),
                                       Requant(0, 0, 0)), x, 0, top)
        ops.append(op)
        x = golden.apply_op(op, x)
    return IntEncoder(node, input_shape, -8, tuple(ops), bits, -bits)


def random_layers(rng: np.random.Generator, input_shape: tuple[int, int]) -> list[Layer]:
    """An optional input max-pool, one or two convolutions each optionally followed by a
    max-pool, an optional hidden fully connected layer."""
    h, w = input_shape
    layers: list[Layer] = []
    if min(h, w) >= 6 and rng.random() < 0.15:
        layers.append(("pool", 2))
        h, w = h // 2, w // 2
    for _ in range(int(rng.choice([1, 1, 2]))):
        k = int(rng.integers(1, 8))
        padding = int(rng.integers(max(0, -(-(k - min(h, w)) // 2)), k))
        layers.append(("conv", int(rng.choice([1, 2, 3, int(rng.integers(1, 65))])), k, padding))
        h, w = h + 2 * padding - k + 1, w + 2 * padding - k + 1
        size = int(rng.choice([0, 1, 2, 2, 3]))
        if size and min(h, w) >= size:
            layers.append(("pool", size))
            h, w = h // size, w // size
    if rng.random() < 0.3:
        layers.append(("fc", int(rng.integers(1, 41))))
    return layers


def random_encoder(rng: np.random.Generator, max_macs: int = 400_000, bits: int | None = None,
                   node: int = 0) -> IntEncoder:
    """A random encoder of at most ``max_macs`` MACs on an input of 3 to 16 rows and columns."""
    while True:
        shape = (int(rng.integers(3, 17)), int(rng.integers(3, 17)))
        encoder = build_encoder(rng, shape, random_layers(rng, shape), int(rng.integers(1, 41)),
                                bits if bits is not None else int(rng.choice(CODE_BITS)), node)
        if encoder.macs <= max_macs:
            return encoder
