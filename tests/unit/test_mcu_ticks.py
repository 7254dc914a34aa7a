"""Converting device ticks: instructions under QEMU -icount, cycles and time on real boards."""
from __future__ import annotations

import pytest

from harness.targets.mcu.protocol import TimerKind
from harness.targets.mcu.driver import EMULATED_LABEL, ticks_to_work


def test_emulated_ticks_are_instructions() -> None:
    # 25 MHz timer, shift 6: 64 ns per instruction = 1.6 ticks per instruction.
    work = ticks_to_work(16_000, timer_hz=25_000_000, clock_hz=25_000_000,
                         timer_kind=TimerKind.SYSTICK, icount_shift=6)
    assert work.count == 10_000
    assert work.unit == "instructions" and work.label == EMULATED_LABEL
    assert work.emulated and work.microseconds is None
    assert work.resolution == 0.625


def test_emulated_conversion_is_exact_for_168_mhz() -> None:
    # 168 MHz * 64 ns = 10.752 ticks per instruction.
    work = ticks_to_work(10_752_000, timer_hz=168_000_000, clock_hz=168_000_000,
                         timer_kind=TimerKind.SYSTICK, icount_shift=6)
    assert work.count == 1_000_000
    assert work.resolution == pytest.approx(1 / 10.752)


def test_dwt_ticks_are_cycles_and_time() -> None:
    work = ticks_to_work(16_000, timer_hz=16_000_000, clock_hz=16_000_000,
                         timer_kind=TimerKind.DWT, icount_shift=None)
    assert work.count == 16_000 and work.unit == "cycles"
    assert work.label == "cycles (DWT CYCCNT)"
    assert work.microseconds == pytest.approx(1000.0)
    assert not work.emulated


def test_slower_timer_on_real_board_scales_to_cycles() -> None:
    work = ticks_to_work(1_000, timer_hz=21_000_000, clock_hz=168_000_000,
                         timer_kind=TimerKind.SYSTICK, icount_shift=None)
    assert work.count == 8_000
