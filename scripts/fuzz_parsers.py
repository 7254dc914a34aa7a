#!/usr/bin/env python
"""Parser fuzz record: the host frame decoder, the firmware's frame receiver and the Linux
runner's request parser, each on N generated inputs (tests/parser_fuzz.py makes them from a seed).

The firmware's receiver (devices/firmware/src/protocol.c) is built for the host with
AddressSanitizer and UBSan and fed the same inputs as the host decoder, in one process; each
frame it returns must equal the host decoder's result. Outcomes are counts, not timings.
Writes results/reference/parser-fuzz.md; exits 1 if any parser had a finding. Reproduce with:
    .venv/bin/python scripts/fuzz_parsers.py [--inputs 100000] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the corpus generators live with the tests that run them in CI

from devices.runner.hil_runner import cpu_model  # noqa: E402
from tests.parser_fuzz import (  # noqa: E402
    RX_CAPACITY_DEFAULT_FIRMWARE,
    Tally,
    build_frame_harness,
    firmware_tally,
    frame_corpus,
    host_decode_tally,
    runner_corpus,
    runner_tally,
)


def machine() -> str:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        cpu = cpu_model(f.read())
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, {gcc}; load average at start {load}")


def by_kind(corpus: list) -> str:
    return ", ".join(f"{kind} {count:,}" for kind, count in sorted(Counter(item.kind for item in corpus).items()))


def table(name: str, tally: Tally, seconds: float) -> list[str]:
    lines = [f"### {name}", "", f"{tally.inputs:,} inputs, {seconds:.1f} s wall.", "", "| outcome | count |", "|---|---|"]
    lines += [f"| {outcome}{' (must be 0)' if outcome in tally.must_be_zero else ''} | {count:,} |"
              for outcome, count in tally.counts.items()]
    for outcome, examples in tally.findings.items():
        lines += ["", f"Finding, {outcome} ({tally.counts[outcome]:,}); first examples:", ""]
        lines += [f"- `` {example} ``" for example in examples]
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="generated inputs per parser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=RX_CAPACITY_DEFAULT_FIRMWARE,
                        help="the firmware receive buffer in bytes (default: main.c's for HIL_MAX_INPUT_BYTES 4096)")
    parser.add_argument("--out", type=Path, default=ROOT / "results/reference/parser-fuzz.md")
    args = parser.parse_args()
    command = f".venv/bin/python scripts/fuzz_parsers.py --inputs {args.inputs} --seed {args.seed}" + (
        f" --capacity {args.capacity}" if args.capacity != RX_CAPACITY_DEFAULT_FIRMWARE else "")
    about = machine()
    started = time.monotonic()

    frames = frame_corpus(args.seed, args.inputs, args.capacity)
    generated = time.monotonic()
    host = host_decode_tally(frames)
    host_done = time.monotonic()
    with tempfile.TemporaryDirectory() as build:
        firmware = firmware_tally(build_frame_harness(Path(build)), frames, args.capacity)
    firmware_done = time.monotonic()
    requests = runner_corpus(args.seed, args.inputs)
    runner_generated = time.monotonic()
    runner = runner_tally(requests)
    finished = time.monotonic()

    stream_bytes = sum(len(item.stream) for item in frames)
    lines = [
        "# Parser fuzz: host frame decoder, firmware frame receiver (ASan + UBSan), Linux runner requests", "",
        f"Reproduce: `{command}` ({finished - started:.0f} s wall in all, of which generating the inputs "
        f"{generated - started + runner_generated - firmware_done:.0f} s).",
        f"Machine: {about}.", "",
        "Inputs come from `tests/parser_fuzz.py` and the seed. MCU frames (host and firmware get the same "
        f"{args.inputs:,} inputs, {stream_bytes:,} bytes): host-encoded frames of every message type and "
        "unknown types, intact, after garbage and a delimiter, with 1-3 flipped bits, a dropped, inserted or "
        "duplicated byte run, truncated, two frames with the delimiter between them lost, longer than the "
        f"firmware's {args.capacity}-byte receive buffer, random bytes, short COBS, and the firmware encoder's "
        "non-minimal COBS. A receiver splits each input at 0x00 into pieces and decodes each; a piece it "
        "accepts must be one of the frames encoded into that input.",
        "Runner requests: 1-3 frames (INFER with arrays of every dtype, crafted array headers, INFO, QUIT, "
        "unknown types), intact or mutated the same ways, random bytes, absurd length headers; each input "
        "through `read_frame` and `decode_array` (as `serve` parses), then through `serve` itself with a "
        "stand-in model.", "",
        f"MCU frame inputs by kind: {by_kind(frames)}.", "",
        f"Runner inputs by kind: {by_kind(requests)}.", "",
        "Must be 0: crashes (an exception other than ProtocolError / RunnerError), damaged frames accepted, "
        "firmware results that differ from the host decoder's, sanitizer or invariant findings. The runner's "
        "format has no CRC (SSH carries integrity), so an altered request is accepted by design; counted. "
        "A finding names its input by index: `tests.parser_fuzz.frame_corpus(SEED, N, CAPACITY)[index]` or "
        "`runner_corpus(SEED, N)[index]` regenerates it.", "",
        "In CI, the same generators at smaller sizes: `tests/unit/test_frame_parser_fuzz.py` (host decoder and "
        "sanitized firmware receiver) and `tests/unit/test_parser_properties.py` (hypothesis properties of "
        "the host codec, the serial transport's frame splitting and the runner's parser).", "",
    ]
    lines += table("Host: `harness.targets.mcu.protocol.decode_message`", host, host_done - generated)
    lines += table(f"Firmware: `hil_receive_frame` (protocol.c, gcc -fsanitize=address,undefined, "
                   f"{args.capacity}-byte buffer)", firmware, firmware_done - host_done)
    lines += table("Runner: `hil_runner.read_frame` + `decode_array`, and `serve`", runner, finished - runner_generated)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if host.findings or firmware.findings or runner.findings else 0


if __name__ == "__main__":
    sys.exit(main())
