"""Descriptions of the Cortex-M boards the node firmware is built for, kept in a registry.

A board description is data: compiler flags, clock and timer, memory regions, the GPIO the
firmware raises around each inference (the energy-window marker a power meter records) and, for
boards QEMU can emulate, the machine name. The C side of each board lives in
``devices/firmware/boards/<name>/`` (``board.c`` for UART and clock, ``board.ld`` for the memory
map); the memory sizes here must equal that linker script's (a unit test checks it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.registry import Registry
from harness.core.paths import FIRMWARE_BOARDS
from harness.targets.mcu.protocol import TimerKind

MARKER_GAP_US = 50
"""Least time the marker stays low between two inferences of a batch (main.c's HIL_MARKER_GAP_US
default): 5 samples of a PPK2 at 100 kS/s, so consecutive windows never merge."""

CORTEX_M4F_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
CORTEX_M4_SOFT_FLOAT_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft")
CORTEX_M3_FLAGS = ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft")


@dataclass(frozen=True)
class MemoryRegion:
    """A linker memory region: start address and size in bytes."""

    origin: int
    size: int


@dataclass(frozen=True)
class MarkerPin:
    """The GPIO output the firmware drives high while each INFER sample is encoded and timed
    (``board_marker`` in ``boards/<name>/board.c``; ``MARKER_PIN`` there is ``bit``)."""

    pin: str  # the part's name for it, e.g. "PA8"
    bit: int  # bit number within its port
    wiring: str  # where to connect the meter's logic input on the board


@dataclass(frozen=True)
class BoardDescription:
    """What the firmware builder, the emulator launcher and the MCU target need about a board."""

    name: str
    cpu_flags: tuple[str, ...]
    clock_hz: int
    timer_kind: TimerKind
    timer_hz: int
    flash: MemoryRegion
    ram: MemoryRegion
    qemu_machine: str | None = None  # None: a real board only, no emulated stand-in
    summary: str = ""
    marker: MarkerPin | None = None  # None: no marker; a meter then aligns windows by timestamps

    @property
    def emulated(self) -> bool:
        """True if this description is an emulated stand-in booted in QEMU."""
        return self.qemu_machine is not None

    @property
    def source_dir(self) -> Path:
        """``devices/firmware/boards/<name>``: board.c and board.ld."""
        return FIRMWARE_BOARDS / self.name

    @property
    def has_fpu(self) -> bool:
        return "-mfloat-abi=hard" in self.cpu_flags


BOARDS: Registry[BoardDescription] = Registry("board")

# Emulated stand-ins: QEMU implements no DWT, so they time with SysTick on the core clock,
# which under -icount counts executed instructions at a fixed rate.
BOARDS.register(
    BoardDescription(
        name="netduinoplus2",
        cpu_flags=CORTEX_M4F_FLAGS,
        clock_hz=168_000_000,  # QEMU's fixed STM32F405 SYSCLK
        timer_kind=TimerKind.SYSTICK,
        timer_hz=168_000_000,
        flash=MemoryRegion(0x0800_0000, 1024 * 1024),
        ram=MemoryRegion(0x2000_0000, 128 * 1024),
        qemu_machine="netduinoplus2",
        summary="STM32F405 (Cortex-M4F), USART1; QEMU netduinoplus2",
        marker=MarkerPin("PA8", 8, "GPIO PA8 (QEMU: GPIOA is an unimplemented device; the writes show with -d unimp)"),
    )
)
BOARDS.register(
    BoardDescription(
        name="mps2-an386",
        # QEMU's cortex-m4 has an FPU, but the AN386 is listed as a plain Cortex-M4: build
        # soft-float so the image never depends on an FPU (the models are integer-only anyway).
        cpu_flags=CORTEX_M4_SOFT_FLOAT_FLAGS,
        clock_hz=25_000_000,
        timer_kind=TimerKind.SYSTICK,
        timer_hz=25_000_000,
        flash=MemoryRegion(0x0000_0000, 4 * 1024 * 1024),
        ram=MemoryRegion(0x2000_0000, 4 * 1024 * 1024),
        qemu_machine="mps2-an386",
        summary="Arm MPS2+ AN386 (Cortex-M4), CMSDK UART0; QEMU mps2-an386",
        marker=MarkerPin("GPIO0[0]", 0, "CMSDK AHB GPIO0 bit 0 @0x40010000 (QEMU: an unimplemented device)"),
    )
)
BOARDS.register(
    BoardDescription(
        name="mps2-an385",
        # No DSP extension: the generated model compiles to the portable kernels (hil_dsp.h
        # selects them from __ARM_FEATURE_DSP), so this board runs that path on a target.
        cpu_flags=CORTEX_M3_FLAGS,
        clock_hz=25_000_000,
        timer_kind=TimerKind.SYSTICK,
        timer_hz=25_000_000,
        flash=MemoryRegion(0x0000_0000, 4 * 1024 * 1024),
        ram=MemoryRegion(0x2000_0000, 4 * 1024 * 1024),
        qemu_machine="mps2-an385",
        summary="Arm MPS2+ AN385 (Cortex-M3, no DSP extension: portable kernels), CMSDK UART0; QEMU mps2-an385",
        marker=MarkerPin("GPIO0[0]", 0, "CMSDK AHB GPIO0 bit 0 @0x40010000 (QEMU: an unimplemented device)"),
    )
)
# A real board: same firmware code paths, DWT cycle counter, reset-default 16 MHz HSI clock.
BOARDS.register(
    BoardDescription(
        name="nucleo-f446re",
        cpu_flags=CORTEX_M4F_FLAGS,
        clock_hz=16_000_000,
        timer_kind=TimerKind.DWT,
        timer_hz=16_000_000,
        flash=MemoryRegion(0x0800_0000, 512 * 1024),
        ram=MemoryRegion(0x2000_0000, 128 * 1024),
        summary="STM32F446RE (Cortex-M4F) at HSI 16 MHz, USART2 on the ST-LINK VCP; real board",
        marker=MarkerPin("PA8", 8, "PA8 = Arduino D7 (CN9 pin 8; morpho CN10 pin 23); the meter's GND to the board's GND"),
    )
)
