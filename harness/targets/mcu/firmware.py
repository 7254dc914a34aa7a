"""Build the node firmware ELF for one board from the portable sources plus a model's C files.

The build compiles each source separately (so GCC writes one stack-usage and call-graph file
per object), links with the board's linker script, and reads the image's flash and RAM use back
with ``arm-none-eabi-size``. The linker scripts carry the real parts' memory sizes, so a model
that does not fit fails at link time; that failure becomes a BuildError naming the board, the
overflowing region and by how much.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.config.boards import BOARDS, BoardDescription
from harness.core.paths import FIRMWARE_INCLUDE, FIRMWARE_SRC, FIRMWARE_STARTUP
from harness.core.errors import BuildError
from harness.targets.mcu.protocol import TimerKind
from harness.targets.mcu.stack_usage import StackEstimate, estimate_stack, load_callgraph

TOOLCHAIN_PREFIX = "arm-none-eabi-"
DEFAULT_STACK_BYTES = 8 * 1024
DEFAULT_MAX_INPUT_BYTES = 4096  # receive buffer for INFER inputs (HIL_MAX_INPUT_BYTES)
DEFAULT_MAX_CODE_BYTES = 256  # one sample's packed code (HIL_MAX_CODE_BYTES)
DEFAULT_MAX_BATCH = 16  # samples per INFER frame (HIL_MAX_BATCH)

COMPILE_FLAGS = (
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-ffunction-sections",
    "-fdata-sections",
    "-fstack-usage",
    "-fcallgraph-info=su",
)
LINK_FLAGS = (
    "--specs=nano.specs",
    "--specs=nosys.specs",
    "-nostartfiles",
    "-Wl,--gc-sections",
    "-Wl,--print-memory-usage",
)
TIMER_DEFINES = {TimerKind.SYSTICK: "-DHIL_TIMER_SYSTICK", TimerKind.DWT: "-DHIL_TIMER_DWT"}

_REGION_OVERFLOW = re.compile(r"region `(?P<region>\w+)' overflowed by (?P<bytes>\d+) bytes")
_SECTION_NO_FIT = re.compile(r"section `(?P<section>[^']+)' will not fit in region `(?P<region>\w+)'")


@dataclass(frozen=True)
class FirmwareImage:
    """A built firmware and its footprint, as measured from the build outputs."""

    board: str
    elf: Path
    map_file: Path
    node_id: int
    timer_kind: TimerKind
    flash_bytes: int  # text + rodata + the .data load image
    ram_bytes: int  # data + bss + reserved stack
    flash_capacity: int
    ram_capacity: int
    stack_reserved_bytes: int
    stack: StackEstimate  # worst-case stack from the call graph

    @property
    def max_stack_bytes(self) -> int:
        return self.stack.max_bytes


def firmware_sources(board: BoardDescription) -> list[Path]:
    """The portable firmware's C files plus the board's own."""
    common = sorted(FIRMWARE_SRC.rglob("*.c"))
    return common + sorted(board.source_dir.glob("*.c"))


def _tool(name: str) -> str:
    path = shutil.which(TOOLCHAIN_PREFIX + name)
    if path is None:
        raise BuildError(
            f"{TOOLCHAIN_PREFIX}{name} not found on PATH; install gcc-arm-none-eabi and "
            "libnewlib-arm-none-eabi to build MCU firmware"
        )
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _link_error(board: BoardDescription, output: str, model_sources: Sequence[Path]) -> BuildError:
    """Turn the linker's output into the clearest error we can give."""
    overflows = [(m["region"], int(m["bytes"])) for m in _REGION_OVERFLOW.finditer(output)]
    models = ", ".join(p.name for p in model_sources)
    if overflows:
        capacities = {"FLASH": board.flash.size, "RAM": board.ram.size}
        parts = [
            f"region {region} ({capacities.get(region, 0) // 1024} KiB) overflowed by {excess} bytes"
            for region, excess in overflows
        ]
        sections = sorted({f"{m['section']}->{m['region']}" for m in _SECTION_NO_FIT.finditer(output)})
        where = f" (sections {', '.join(sections)})" if sections else ""
        return BuildError(
            f"firmware for board {board.name} does not fit: {'; '.join(parts)}{where}; "
            f"model sources: {models}"
        )
    return BuildError(f"linking firmware for board {board.name} failed (model sources: {models}):\n{output.strip()}")


def _section_sizes(elf: Path) -> tuple[int, int]:
    """(flash bytes, RAM bytes) from arm-none-eabi-size's Berkeley totals.

    text counts code and read-only data, data the initialised RAM (whose load image also sits
    in flash), bss the zeroed RAM including the NOLOAD stack reservation.
    """
    result = subprocess.run([_tool("size"), str(elf)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"arm-none-eabi-size failed on {elf}: {result.stderr.strip()}")
    text, data, bss = (int(v) for v in result.stdout.splitlines()[1].split()[:3])
    return text + data, data + bss


def build_firmware(
    board: str | BoardDescription,
    model_sources: Sequence[Path],
    out_dir: Path,
    *,
    node_id: int = 0,
    stack_bytes: int = DEFAULT_STACK_BYTES,
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    timer_kind: TimerKind | None = None,
    model_include_dirs: Sequence[Path] = (),
    extra_cflags: Sequence[str] = (),
) -> FirmwareImage:
    """Compile and link ``fw.elf`` for ``board`` with the given model C file(s) into ``out_dir``.

    ``max_input_bytes`` sizes the firmware's receive buffer (the model's input_h * input_w must
    fit; a batch of inputs must fit to travel in one frame), ``max_code_bytes`` one sample's code
    and ``max_batch`` the samples one INFER frame may carry (the reply buffer holds that many
    codes). ``timer_kind`` overrides the board's timer (e.g. DWT on real hardware that is normally
    emulated). Raises BuildError if the toolchain is missing, a source does not compile, or the
    image does not fit the board's flash or RAM.
    """
    board = BOARDS.get(board) if isinstance(board, str) else board
    timer = board.timer_kind if timer_kind is None else timer_kind
    if not 0 <= node_id <= 0xFF:
        raise BuildError(f"node id {node_id} does not fit the HELLO message's byte")
    if not 1 <= max_batch <= 0xFF:
        raise BuildError(f"max_batch {max_batch} is not 1..255 (the HELLO message's byte)")
    model_sources = [Path(p).resolve() for p in model_sources]
    for source in model_sources:
        if not source.is_file():
            raise BuildError(f"model source {source} does not exist")

    out_dir = Path(out_dir)
    obj_dir = out_dir / "obj"
    shutil.rmtree(obj_dir, ignore_errors=True)  # stale .ci files would distort the stack estimate
    obj_dir.mkdir(parents=True)
    gcc = _tool("gcc")
    cflags = [
        *board.cpu_flags,
        *COMPILE_FLAGS,
        TIMER_DEFINES[timer],
        f"-DHIL_NODE_ID={node_id}",
        f"-DHIL_MAX_INPUT_BYTES={max_input_bytes}",
        f"-DHIL_MAX_CODE_BYTES={max_code_bytes}",
        f"-DHIL_MAX_BATCH={max_batch}",
        f"-I{FIRMWARE_INCLUDE}",
        f"-I{FIRMWARE_SRC}",
        *(f"-I{Path(d).resolve()}" for d in model_include_dirs),
        *extra_cflags,
    ]

    sources = firmware_sources(board) + model_sources
    # Prefix with the index: a model file may share a stem with a firmware file.
    objects = [obj_dir / f"{index:02d}_{source.stem}.o" for index, source in enumerate(sources)]

    def compile_one(source: Path, obj: Path) -> subprocess.CompletedProcess[str]:
        return _run([gcc, *cflags, "-c", str(source), "-o", str(obj)], obj_dir)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(compile_one, sources, objects))
    for source, result in zip(sources, results):
        if result.returncode != 0:
            raise BuildError(f"compiling {source} for board {board.name} failed:\n{result.stderr.strip()}")

    elf = out_dir / "fw.elf"
    map_file = out_dir / "fw.map"
    link = _run(
        [
            gcc,
            *board.cpu_flags,
            *LINK_FLAGS,
            f"-Wl,--defsym=__stack_size={stack_bytes}",
            f"-L{FIRMWARE_STARTUP}",
            f"-T{board.source_dir / 'board.ld'}",
            f"-Wl,-Map={map_file}",
            *map(str, objects),
            "-o",
            str(elf),
        ],
        out_dir,
    )
    if link.returncode != 0:
        raise _link_error(board, link.stdout + link.stderr, model_sources)
    (out_dir / "memory-usage.txt").write_text(link.stdout)

    flash_bytes, ram_bytes = _section_sizes(elf)
    stack = estimate_stack(load_callgraph(sorted(obj_dir.glob("*.ci"))), fpu=board.has_fpu)
    return FirmwareImage(
        board=board.name,
        elf=elf,
        map_file=map_file,
        node_id=node_id,
        timer_kind=timer,
        flash_bytes=flash_bytes,
        ram_bytes=ram_bytes,
        flash_capacity=board.flash.size,
        ram_capacity=board.ram.size,
        stack_reserved_bytes=stack_bytes,
        stack=stack,
    )
