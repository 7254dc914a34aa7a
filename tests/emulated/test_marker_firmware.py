"""The energy-window marker on emulated boards: the real firmware, in real QEMU, raises its
marker pin once per INFER sample and lowers it after, and never for PROFILE. QEMU has no GPIO
model on these machines, so the pin's register writes land in an unimplemented-device region;
``-d unimp`` logs each one, which is what this test counts."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from harness.config.boards import BOARDS
from harness.emulators.qemu import ICOUNT_SHIFT, QemuNode, QemuNodeSpec
from harness.targets.mcu.driver import McuTarget
from harness.targets.mcu.firmware import build_firmware

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "firmware" / "strided_sum_model.c"
MODEL_HASH = hashlib.sha256(b"hilbench test fixture: strided weighted sums, 14x14 -> 21 x 3 bits").digest()[:8]
# (log line of a marker write, value that raises it, value that lowers it)
MARKER_WRITES = {
    "netduinoplus2": (r"GPIOA: unimplemented device write \(size 4, offset 0x018, value (0x[0-9a-f]+)\)",
                      0x0000_0100, 0x0100_0000),   # BSRR: set bit 8, reset bit 8 (PA8)
    "mps2-an386": (r"cmsdk-ahb-gpio: unimplemented device write \(size 4, offset 0x404, value (0x[0-9a-f]+)\)",
                   0x1, 0x0),                       # masked low byte, mask bit 0 (GPIO0[0])
}


def _marker_writes(log: str, board: str) -> list[str]:
    pattern, high, low = MARKER_WRITES[board]
    return ["high" if int(v, 16) == high else "low" if int(v, 16) == low else v for v in re.findall(pattern, log)]


@pytest.mark.parametrize("board", sorted(MARKER_WRITES))
def test_marker_rises_and_falls_once_per_inference_and_not_for_profile(board: str, tmp_path: Path) -> None:
    image = build_firmware(board, [FIXTURE], tmp_path / "fw")
    log = tmp_path / "qemu.log"
    wrapper = tmp_path / "qemu-with-unimp-log"
    wrapper.write_text(f'#!/bin/sh\nexec qemu-system-arm "$@" -d unimp -D {log}\n')
    wrapper.chmod(0o755)
    spec = QemuNodeSpec(BOARDS.get(board).qemu_machine or "", image.elf, name=board)
    with QemuNode(spec, qemu_binary=str(wrapper)) as node:
        with McuTarget(node.url, name=board, expected_model_hash=MODEL_HASH, icount_shift=ICOUNT_SHIFT,
                       max_batch=16) as target:
            booted = _marker_writes(log.read_text(), board)
            target.profile(bytes(range(196)))
            after_profile = _marker_writes(log.read_text(), board)
            batch = target.infer_batch([bytes(range(196))] * 5)
            single = target.infer(bytes(range(196)))
    writes = _marker_writes(log.read_text(), board)
    assert booted == ["low"]                       # board_init drives the pin low
    assert after_profile == booted                 # PROFILE is no benchmarked inference
    assert writes == ["low"] + ["high", "low"] * 6   # 5 batched samples and 1 single: one window each
    # the marker and the gap between windows lie outside the timed code: a batched sample counts
    # what a single one does
    assert {r.ticks for r in batch} == {single.ticks}
