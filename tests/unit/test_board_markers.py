"""Every board lists the marker pin its board.c drives, and the Python side knows the firmware's
marker gap (the simulated meter draws it into its traces)."""
from __future__ import annotations

import re

import pytest

from harness.config.boards import BOARDS, MARKER_GAP_US
from harness.core.paths import FIRMWARE_SRC


def _board_source(name: str) -> str:
    """board.c, followed through a board that includes another's (mps2-an385 -> mps2-an386)."""
    board = BOARDS.get(name)
    text = (board.source_dir / "board.c").read_text()
    included = re.search(r'#include "\.\./([\w-]+)/board\.c"', text)
    return text + (_board_source(included[1]) if included else "")


@pytest.mark.parametrize("name", BOARDS.names())
def test_board_lists_the_marker_its_firmware_drives(name: str) -> None:
    board = BOARDS.get(name)
    source = _board_source(name)
    assert board.marker is not None, f"{name}: no marker pin listed"
    assert "void board_marker(int high)" in source
    assert int(re.search(r"#define MARKER_PIN\s+(\d+)u", source)[1]) == board.marker.bit
    if board.marker.pin.startswith("P"):   # an STM32 port pin: PA8 = GPIOA (port index 0), bit 8
        port = ord(board.marker.pin[1]) - ord("A")
        assert int(re.search(r"#define MARKER_PORT\s+(\d+)u", source)[1]) == port
        assert board.marker.pin == f"P{chr(ord('A') + port)}{board.marker.bit}"


def test_marker_gap_matches_the_firmware() -> None:
    main = (FIRMWARE_SRC / "main.c").read_text()
    assert int(re.search(r"#define HIL_MARKER_GAP_US (\d+)u", main)[1]) == MARKER_GAP_US
    # the marker is raised before the timer starts and lowered after it stops: the ticks never include it
    infer = main[main.index("static void handle_infer"):main.index("static void mark(void)")]
    order = [infer.index(s) for s in ("board_marker(1)", "board_timer_start()", "hil_model_encode(",
                                      "board_timer_read()", "board_timer_stop()", "board_marker(0)")]
    assert order == sorted(order)
    profile = main[main.index("static void handle_profile"):main.index("int main(void)")]
    assert "board_marker" not in profile   # a PROFILE request is no benchmarked inference: no window
