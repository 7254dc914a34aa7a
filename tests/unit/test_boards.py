"""The board registry agrees with the firmware's linker scripts and refuses duplicates."""
from __future__ import annotations

import re

import pytest

from harness.config.boards import BOARDS, BoardDescription, MemoryRegion
from harness.core.errors import ConfigError
from harness.core.registry import Registry
from harness.targets.mcu.protocol import TimerKind

_REGION = re.compile(r"(?P<name>FLASH|RAM)\s*\([a-z]+\)\s*:\s*ORIGIN\s*=\s*(?P<origin>0x[0-9A-Fa-f]+),\s*LENGTH\s*=\s*(?P<kib>\d+)K")


@pytest.mark.parametrize("name", BOARDS.names())
def test_registry_matches_linker_script(name: str) -> None:
    board = BOARDS.get(name)
    regions = {
        m["name"]: MemoryRegion(int(m["origin"], 16), int(m["kib"]) * 1024)
        for m in _REGION.finditer((board.source_dir / "board.ld").read_text())
    }
    assert regions == {"FLASH": board.flash, "RAM": board.ram}
    assert (board.source_dir / "board.c").is_file()


def test_emulated_boards_time_with_systick_and_real_ones_with_dwt() -> None:
    for name in BOARDS.names():
        board = BOARDS.get(name)
        assert board.timer_kind is (TimerKind.SYSTICK if board.emulated else TimerKind.DWT)


def test_unknown_board_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown board 'nope'.*netduinoplus2"):
        BOARDS.get("nope")


def test_duplicate_registration_is_refused() -> None:
    registry = Registry("board")
    board = BOARDS.get("mps2-an386")
    assert registry.register(board) is board
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(BoardDescription(**{**board.__dict__}))
