"""LSTM node encoders in firmware on emulated Cortex-M boards, deployed as a run deploys a node
(open_node_target, profile kind mcu), against the golden model bit for bit: an encoder of the
paper's size (1 row x 50 steps, LSTM 40 -> 9, q = 4) on the Cortex-M4 (the SMLAD kernel, real
DSP instructions) and the Cortex-M3 (the portable kernel). Its integer parameters are random with
the statistics of trained encoders (tests/models/test_lstm.py's exports): weights on 2^-8 with a
spread of ~55 units, gate pre-activations on 2^-4 or 2^-3, cells on 2^-5 or 2^-4, biases of
~7000 units; 4-bit codes on 2^-5, the grid a trained code quantizer picks for the final h these
parameters give (|h| < 0.31). The host-built sweep of shapes is tests/unit/test_codegen_lstm.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.config.boards import BOARDS
from harness.config.profiles import get_profile
from harness.core.paths import KERNEL_INCLUDE_DIRS, KERNEL_SOURCES
from harness.targets.contract import open_node_target
from harness.targets.mcu.firmware import build_firmware
from quant_models import golden
from quant_models.codegen import generate_model_c
from quant_models.export import check_windows
from quant_models.intlstm import IntLstmEncoder, IntLstmLayer
from tests.codegen_cases import build_encoder

DEVICES = {"stm32f405-qemu": "dsp", "mps2-an385-qemu": "portable"}
RANDOM_WINDOWS = 50
MAX_DSP_INSTRUCTIONS_PER_MAC = 1.25  # measured 1.08 (QEMU -icount instructions, not cycles)


def paper_encoder(seed: int = 2026) -> IntLstmEncoder:
    rng = np.random.default_rng(seed)

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return np.clip(np.rint(rng.normal(0, 55, shape)), -128, 127).astype(np.int8)

    layers, n_in = [], 1
    for hidden in (40, 9):
        layers.append(IntLstmLayer(weights((4, hidden, n_in)), weights((4, hidden, hidden)),
                                   np.rint(rng.normal(0, 7000, (4, hidden))).astype(np.int32), (-8, -8, -8, -8),
                                   tuple(int(e) for e in rng.choice([-4, -3], 4)),  # type: ignore[arg-type]
                                   int(rng.choice([-5, -4]))))
        n_in = hidden
    encoder = IntLstmEncoder(0, (1, 50), tuple(layers), 4, -5)
    encoder.check()
    return encoder


@pytest.fixture(scope="module")
def encoder() -> IntLstmEncoder:
    return paper_encoder()


@pytest.fixture(scope="module")
def windows(encoder: IntLstmEncoder) -> np.ndarray:
    """The export's 16 check windows (zeros, saturating, random), then random ones."""
    rng = np.random.default_rng(99)
    return np.concatenate([check_windows(encoder),
                           rng.integers(-128, 128, (RANDOM_WINDOWS, *encoder.input_shape), dtype=np.int8)])


def test_the_encoder_is_the_papers_and_its_codes_vary(encoder: IntLstmEncoder, windows: np.ndarray) -> None:
    costs = encoder.costs()
    assert (costs.macs, costs.table_lookups, encoder.code_len) == (416_200, 12_250, 9)
    codes = golden.encode(encoder, windows)
    assert len({c.tobytes() for c in codes}) > 0.9 * len(windows) and codes.min() < 2 and codes.max() > 13


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_paper_lstm_in_firmware_is_bit_exact_and_profiled(device: str, encoder: IntLstmEncoder,
                                                          windows: np.ndarray, tmp_path: Path) -> None:
    with open_node_target(get_profile(device), encoder, tmp_path) as node:
        hello = node.deployed.target.hello  # type: ignore[attr-defined]
        replies = node.infer_batch(windows)
        info = node.info
    got = np.array([np.frombuffer(r.code, np.uint8) for r in replies])
    bad = np.flatnonzero((got != golden.encode_packed(encoder, windows)).any(axis=1))
    assert bad.size == 0, f"{device}: windows {bad.tolist()} of {len(windows)} differ"

    assert (hello.input_h, hello.input_w, hello.code_len, hello.code_bits, hello.code_bytes) == (1, 50, 9, 4, 5)
    assert hello.macs == encoder.macs and hello.model_hash == bytes.fromhex(encoder.sha256())[:8]
    assert info.extra["kernels"] == DEVICES[device]
    layers = info.extra["layers"]
    assert [(s["stage"], s["macs"]) for s in layers] == [("lstm0", 328_000), ("lstm1", 88_200), ("pack", 0)]
    assert all(s["unit"] == "instructions" and s["count"] > 0 for s in layers)
    counts = [r.device_count for r in replies]
    assert max(counts) - min(counts) < 100  # the work does not depend on the data (but clipping the codes)
    per_mac = replies[0].device_count / encoder.macs
    if DEVICES[device] == "dsp":
        assert per_mac < MAX_DSP_INSTRUCTIONS_PER_MAC, f"{per_mac:.3f} instructions per MAC"
    else:
        assert per_mac > 1.0
    # the two layers and the packing are nearly the whole inference
    assert 0.95 < sum(s["count"] for s in layers) / replies[0].device_count < 1.05

    assert info.flash_bytes is not None and info.ram_bytes is not None
    assert info.flash_bytes < info.extra["flash_capacity"] and info.ram_bytes < info.extra["ram_capacity"]
    assert info.flash_bytes > encoder.costs().weight_bytes + encoder.costs().table_bytes


def symbols(elf: Path) -> set[str]:
    listing = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listing.splitlines() if line.strip()}


@pytest.mark.parametrize("board", ["netduinoplus2", "mps2-an385"])
def test_cnn_firmware_carries_no_lstm_code(board: str, tmp_path: Path) -> None:
    """hil_lstm.c is compiled into every firmware; the linker drops it from a CNN's."""
    cnn = build_encoder(np.random.default_rng(1), (14, 14), [("conv", 32, 5, 2), ("pool", 2)], 16, 4)
    (tmp_path / "model.c").write_text(generate_model_c(cnn))
    images = {}
    without = [source for source in KERNEL_SOURCES if source.name != "hil_lstm.c"]
    for name, kernels in {"with": list(KERNEL_SOURCES), "without": without}.items():
        images[name] = build_firmware(BOARDS.get(board), [tmp_path / "model.c", *kernels], tmp_path / name,
                                      model_include_dirs=list(KERNEL_INCLUDE_DIRS))
    assert [o.name for o in (tmp_path / "with" / "obj").glob("*.o") if "hil_lstm" in o.name]  # it was compiled
    assert not {s for s in symbols(images["with"].elf) if s.startswith("hil_lstm")}
    assert images["with"].flash_bytes == images["without"].flash_bytes
    assert images["with"].ram_bytes == images["without"].ram_bytes
