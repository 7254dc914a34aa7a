"""A generated corpus of good and damaged frames through the host decoder and through the
firmware's receiver (devices/firmware/src/protocol.c built for the host with AddressSanitizer and
UBSan, tests/fixtures/firmware/fuzz_protocol.c), in one process: no sanitizer finding, every
result equal to the host decoder's, no damaged frame accepted. The recorded run of >= 10^5
inputs is scripts/fuzz_parsers.py."""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from harness.targets.mcu.protocol import Frame, encode_frame
from tests.parser_fuzz import (
    BAD_FRAME,
    FIRMWARE_ACCEPTED,
    FIRMWARE_BAD,
    FIRMWARE_RECEIVED,
    FIRMWARE_TOO_LONG,
    FRAME_TOO_LONG,
    FrameInput,
    RX_CAPACITY_14X14,
    RX_CAPACITY_DEFAULT_FIRMWARE,
    build_frame_harness,
    firmware_tally,
    frame_corpus,
    host_decode_tally,
    run_frame_harness,
)

CORPORA = [pytest.param(RX_CAPACITY_14X14, 20_000, id="rx-205"),
           pytest.param(RX_CAPACITY_DEFAULT_FIRMWARE, 3_000, id="rx-4121")]


@lru_cache
def corpus(capacity: int, inputs: int) -> list[FrameInput]:
    return frame_corpus(seed=capacity, count=inputs, capacity=capacity)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_frame_harness(tmp_path_factory.mktemp("fuzz-protocol"))


def test_the_sanitizers_are_on(harness: Path) -> None:
    """A receive buffer one byte short of the capacity it is announced with: ASan must stop the
    write past its end (else a clean run below would prove nothing)."""
    wire = encode_frame(Frame(0x02, 7, b"ping"))
    run = run_frame_harness(harness, wire, len(wire) - 1, "overflow-self-test")
    assert run.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr


def test_capacity_boundary_and_resynchronisation(harness: Path) -> None:
    fits = encode_frame(Frame(0x03, 1, bytes(range(1, 40))))
    capacity = len(fits) - 1  # COBS bytes, without the delimiter
    longer = encode_frame(Frame(0x03, 2, bytes(range(1, 41))))
    run = run_frame_harness(harness, b"\x00\x00" + fits + longer + b"\x01\x02\x00" + fits, capacity)
    assert run.returncode == 0, run.stderr
    assert run.results == [Frame(0x03, 1, bytes(range(1, 40))), FRAME_TOO_LONG, BAD_FRAME,
                           Frame(0x03, 1, bytes(range(1, 40)))]


@pytest.mark.parametrize("capacity, inputs", CORPORA)
def test_firmware_receiver_agrees_with_the_host_decoder(harness: Path, capacity: int, inputs: int) -> None:
    tally = firmware_tally(harness, corpus(capacity, inputs), capacity)
    assert tally.findings == {}
    assert all(tally.counts[outcome] > 0 for outcome in tally.outcomes), tally.counts
    received = sum(len(item.pieces()) for item in corpus(capacity, inputs))
    assert tally.counts[FIRMWARE_RECEIVED] == received
    assert tally.counts[FIRMWARE_ACCEPTED] + tally.counts[FIRMWARE_BAD] + tally.counts[FIRMWARE_TOO_LONG] == received


@pytest.mark.parametrize("capacity, inputs", CORPORA)
def test_host_decoder_accepts_only_the_frames_sent(capacity: int, inputs: int) -> None:
    kinds = Counter(item.kind for item in corpus(capacity, inputs))
    assert set(kinds) >= {"valid", "resync", "flip", "drop", "insert", "truncate", "duplicate", "splice",
                          "overlong", "random", "short", "non-minimal-cobs"}
    tally = host_decode_tally(corpus(capacity, inputs))
    assert tally.findings == {}
    assert all(tally.counts[outcome] > 0 for outcome in tally.outcomes), tally.counts
