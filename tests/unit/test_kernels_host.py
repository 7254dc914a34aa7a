"""Generated C for random and extreme layer shapes, compiled for the host on both kernel paths
(portable kernels; DSP kernels with their instructions emulated in C), bit-exact with the golden
model. The DSP path with the real instructions runs in tests/emulated/test_kernels_dsp.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quant_models import golden
from quant_models.dsp_layout import DspUnsupported, plan_dsp
from quant_models.intparams import FcOp, IntEncoder, Requant
from tests.codegen_cases import (KERNEL_PATHS, build_encoder, build_host_models, random_encoder, random_views,
                                 run_host_model, write_models)

RANDOM_MODELS = 24
VIEWS = 24
# (input shape, layers, code values, q): the corners the random draw may miss.
EXTREMES = [
    ((14, 14), [("conv", 32, 5, 2), ("pool", 2)], 16, 4),  # the paper's node encoder
    ((9, 7), [("conv", 64, 7, 6)], 5, 1),  # widest kernel, most padding, 64 channels
    ((9, 11), [("conv", 3, 7, 3), ("pool", 3), ("conv", 64, 1, 0)], 40, 8),  # pool of 3: 3 groups per window
    ((7, 7), [("conv", 1, 1, 0), ("conv", 64, 7, 3), ("pool", 2)], 17, 3),  # a 1-channel conv output (stride 2)
    ((16, 16), [("pool", 2), ("conv", 5, 4, 1), ("fc", 33)], 9, 2),  # input pool, even kernel, hidden fc
    ((3, 3), [("conv", 64, 3, 1), ("conv", 64, 3, 1)], 3, 4),  # 64 -> 64 channels
    ((5, 16), [("conv", 7, 6, 5), ("pool", 1)], 1, 8),  # a pool of 1, one code
    ((11, 3), [("fc", 7)], 13, 3),  # no convolution
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[IntEncoder], list[Path], Path]:
    rng = np.random.default_rng(20261130)
    encoders = [build_encoder(rng, shape, layers, values, bits, node=i)
                for i, (shape, layers, values, bits) in enumerate(EXTREMES)]
    encoders += [random_encoder(rng, node=len(encoders) + i) for i in range(RANDOM_MODELS)]
    out = tmp_path_factory.mktemp("kernels")
    return encoders, write_models(encoders, out), out


@pytest.mark.parametrize("kernels", sorted(KERNEL_PATHS))
def test_random_shapes_are_bit_exact(cases, kernels: str) -> None:
    encoders, sources, out = cases
    lib = build_host_models(sources, out / kernels, KERNEL_PATHS[kernels])
    rng = np.random.default_rng(1)
    wrong = []
    for i, encoder in enumerate(encoders):
        views = random_views(rng, encoder, VIEWS)
        got = run_host_model(lib, encoder, views, i)
        bad = int((got != golden.encode_packed(encoder, views)).any(axis=1).sum())
        if bad:
            wrong.append(f"model {i} ({[op.name for op in encoder.ops]}, input {encoder.input_shape}): "
                         f"{bad} of {VIEWS} views")
    assert not wrong, "\n".join(wrong)


def test_the_dsp_path_covers_the_cases(cases) -> None:
    encoders, sources, _ = cases
    portable_only = [i for i, source in enumerate(sources) if "Portable kernels only" in source.read_text()]
    assert not set(portable_only) & set(range(len(EXTREMES)))
    assert len(portable_only) <= len(encoders) // 10, portable_only


def test_a_model_the_dsp_kernels_cannot_run_exactly_gets_the_portable_kernels(tmp_path: Path) -> None:
    """Biases near the int32 limit: golden is fine on these inputs, but the rounding constant
    could overflow for others, so the generator refuses the DSP path and both builds are exact."""
    rng = np.random.default_rng(3)
    weight = -rng.integers(0, 3, (4, 12)).astype(np.int8)
    encoder = IntEncoder(0, (3, 4), -8, (FcOp(weight, np.full(4, (1 << 31) - 2000, np.int32), Requant(28, 0, 15)),),
                         4, -4)
    with pytest.raises(DspUnsupported, match="beyond int32"):
        plan_dsp(encoder)
    [source] = write_models([encoder], tmp_path)
    assert "Portable kernels only" in source.read_text()
    views = random_views(rng, encoder, 8)
    for kernels, defines in KERNEL_PATHS.items():
        lib = build_host_models([source], tmp_path / kernels, defines)
        assert (run_host_model(lib, encoder, views, 0) == golden.encode_packed(encoder, views)).all(), kernels
