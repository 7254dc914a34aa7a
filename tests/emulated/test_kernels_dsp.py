"""Generated C for random and extreme layer shapes in firmware on emulated boards, bit-exact with
the golden model: on a Cortex-M4 (the DSP kernels, with the real SMLAD/SMUAD/LDRD/LDM
instructions the host build emulates in C) and on a Cortex-M3 (the portable kernels). The larger
random sweep runs on the host (tests/unit/test_kernels_host.py)."""
from __future__ import annotations

import numpy as np
import pytest

from harness.config.profiles import get_profile
from harness.targets.mcu.deploy import deploy_mcu_node
from quant_models import golden
from quant_models.intparams import IntEncoder
from tests.codegen_cases import build_encoder, firmware_runs_dsp_kernels, random_encoder, random_views
from tests.unit.test_kernels_host import EXTREMES

VIEWS = 20
CASES = {  # device: (random encoders, their largest MAC count, the extremes too)
    "stm32f405-qemu": (8, 300_000, True),
    "mps2-an385-qemu": (4, 40_000, False),
}


def cases(device: str) -> list[IntEncoder]:
    count, max_macs, extremes = CASES[device]
    rng = np.random.default_rng(sum(map(ord, device)))
    encoders = [build_encoder(rng, shape, layers, values, bits) for shape, layers, values, bits in EXTREMES] \
        if extremes else []
    return encoders + [random_encoder(rng, max_macs=max_macs) for _ in range(count)]


@pytest.mark.parametrize("device", sorted(CASES))
def test_random_shapes_in_firmware_are_bit_exact(device: str) -> None:
    profile = get_profile(device)
    dsp = device != "mps2-an385-qemu"
    rng = np.random.default_rng(7)
    wrong = []
    for i, encoder in enumerate(cases(device)):
        views = random_views(rng, encoder, VIEWS)
        with deploy_mcu_node(profile, encoder) as node:
            assert firmware_runs_dsp_kernels(node.firmware.elf) == dsp
            got = np.array([np.frombuffer(node.target.infer(v.tobytes()).code, np.uint8) for v in views])
        bad = int((got != golden.encode_packed(encoder, views)).any(axis=1).sum())
        if bad:
            wrong.append(f"case {i} ({[op.name for op in encoder.ops]}, input {encoder.input_shape}): "
                         f"{bad} of {VIEWS} views")
    assert not wrong, f"{device}:\n" + "\n".join(wrong)
