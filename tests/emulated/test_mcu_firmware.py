"""The node firmware on emulated Cortex-M boards: real arm-none-eabi-gcc, real qemu-system-arm.

A deterministic fixture model (tests/fixtures/firmware/strided_sum_model.c) is built into the
firmware; its Python reference here must agree with the device bit for bit. A small TCP proxy
between host and QEMU damages chosen frames to show that corruption is detected and retried.
"""
from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from harness.config.boards import BOARDS
from harness.emulators.qemu import ICOUNT_SHIFT, QemuNode, QemuNodeSpec, qemu_nodes
from harness.core.errors import ConfigError, DeviceError
from harness.targets.mcu.firmware import FirmwareImage, build_firmware
from harness.targets.mcu.protocol import PROTOCOL_VERSION, TimerKind, encode_uleb128
from harness.targets.mcu.driver import EMULATED_LABEL, DeviceWork, McuTarget
from harness.transports.faults import LinkFaults, SerialFaultProxy, faulty_url


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "firmware"
MODEL_SOURCE = FIXTURES / "strided_sum_model.c"
OVERSIZED_MODEL_SOURCE = FIXTURES / "oversized_model.c"
MODEL_HASH = hashlib.sha256(b"hilbench test fixture: strided weighted sums, 14x14 -> 21 x 3 bits").digest()[:8]
INPUT_H = INPUT_W = 14
CODE_LEN, CODE_BITS = 21, 3
EMULATED_BOARDS = ["netduinoplus2", "mps2-an386"]


def reference_encode(pixels: bytes) -> bytes:
    """Python twin of strided_sum_model.c, packed like numpy.packbits of the low q bits."""
    x = np.frombuffer(pixels, dtype=np.uint8).astype(np.int64)
    j = np.arange(INPUT_H * INPUT_W)
    weighted = x * (1 + j % 7)
    codes = []
    for i in range(CODE_LEN):
        acc = int(weighted[i::CODE_LEN].sum())
        codes.append((acc ^ (acc >> 5) ^ (acc >> 9)) & ((1 << CODE_BITS) - 1))
    bits = np.unpackbits(np.array(codes, dtype=np.uint8)[:, None], axis=1)[:, -CODE_BITS:]
    return np.packbits(bits.ravel()).tobytes()


def random_inputs(count: int, seed: int) -> list[bytes]:
    """Random images plus the extremes; sparse ones exercise the model's zero-skipping branch."""
    rng = np.random.default_rng(seed)
    images = [bytes(INPUT_H * INPUT_W), bytes([255]) * (INPUT_H * INPUT_W)]
    for index in range(count - len(images)):
        image = rng.integers(0, 256, INPUT_H * INPUT_W, dtype=np.uint8)
        image[rng.random(image.size) < (index % 5) / 5] = 0
        images.append(image.tobytes())
    return images


# ---------------------------------------------------------------------------------------------
# Fixtures: builds are shared by the module, every test boots its own QEMU.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firmware")


@pytest.fixture(scope="module")
def images(build_root: Path) -> dict[str, FirmwareImage]:
    return {
        board: build_firmware(board, [MODEL_SOURCE], build_root / board) for board in EMULATED_BOARDS
    }


@pytest.fixture(scope="module", autouse=True)
def no_qemu_left_behind(build_root: Path) -> Iterator[None]:
    """After the module, no qemu-system-arm may still run one of this module's ELF files."""
    yield
    assert qemu_processes_using(build_root) == []


def qemu_processes_using(directory: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue  # exited meanwhile
        if any(arg.endswith(b"qemu-system-arm") for arg in cmdline) and str(directory).encode() in b" ".join(cmdline):
            pids.append(int(proc.name))
    return pids


def boot(image: FirmwareImage) -> QemuNode:
    return QemuNode(QemuNodeSpec(BOARDS.get(image.board).qemu_machine or "", image.elf, name=image.board))


def target_for(url: str, **options: object) -> McuTarget:
    return McuTarget(url, expected_model_hash=MODEL_HASH, icount_shift=ICOUNT_SHIFT, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# HELLO, PING, INFER
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("board", EMULATED_BOARDS)
def test_hello_describes_board_model_and_build(board: str, images: dict[str, FirmwareImage]) -> None:
    image, description = images[board], BOARDS.get(board)
    with boot(image) as node, target_for(node.url, name=board) as target:
        hello = target.hello
        assert target.ping() < 1.0
    assert hello.protocol_version == PROTOCOL_VERSION == 2
    assert hello.board == board
    assert hello.node_id == 0
    assert hello.model_hash == MODEL_HASH
    assert (hello.input_h, hello.input_w) == (INPUT_H, INPUT_W)
    assert (hello.code_len, hello.code_bits, hello.code_bytes) == (CODE_LEN, CODE_BITS, 8)
    assert hello.macs == INPUT_H * INPUT_W
    assert (hello.clock_hz, hello.timer_hz) == (description.clock_hz, description.timer_hz)
    assert hello.timer_kind is TimerKind.SYSTICK
    assert (hello.flash_used, hello.ram_used) == (image.flash_bytes, image.ram_bytes)
    assert hello.stack_size == image.stack_reserved_bytes == 8192
    assert hello.max_input_bytes == 4096
    assert 0 < image.max_stack_bytes < image.stack_reserved_bytes


@pytest.mark.parametrize("board", EMULATED_BOARDS)
def test_infer_matches_reference(board: str, images: dict[str, FirmwareImage]) -> None:
    inputs = random_inputs(300, seed=7)
    with boot(images[board]) as node, target_for(node.url, name=board) as target:
        results = [target.infer(pixels) for pixels in inputs]
        stats = target.stats
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    # a clean link: nothing damaged; a retry can only follow a reply slower than the timeout (a
    # busy host), and its late reply is still taken
    assert stats.bad_frames == stats.damaged_requests == 0 and stats.retries == stats.timeouts
    # 196 input bytes + type, seq and CRC (7) + COBS code byte + delimiter; a count byte, the
    # ticks (LEB128), 8 code bytes, + 7, + 2.
    assert all((r.wire_bytes_sent, r.wire_bytes_received) == (205, 1 + len(encode_uleb128(r.ticks)) + 8 + 7 + 2)
               for r in results if r.attempts == 1)
    # Zero pixels are skipped, so the work depends on the input.
    assert len({r.ticks for r in results}) > 3


@pytest.mark.parametrize("board", EMULATED_BOARDS)
def test_a_batch_times_and_encodes_every_sample_as_single_requests_do(
    board: str, images: dict[str, FirmwareImage]
) -> None:
    inputs = random_inputs(100, seed=9)
    with boot(images[board]) as node, target_for(node.url, name=board) as target:
        single = [target.infer(pixels) for pixels in inputs[:20]]
        assert target.batch_size == 16  # the firmware's default HIL_MAX_BATCH; 16 inputs fit its buffer
        batched = target.infer_batch(inputs)
        stats = target.stats
    assert [r.code for r in batched] == [reference_encode(pixels) for pixels in inputs]
    assert [r.ticks for r in batched[:20]] == [r.ticks for r in single]
    assert stats.batches == 20 + 7  # 100 samples in frames of 16
    # Framing, CRC and the reply's header are paid once a frame: per sample, the link carries the
    # 196 input and 8 code bytes, its ticks, and a share of ~20 bytes per frame.
    wire = sum(r.wire_bytes_sent + r.wire_bytes_received for r in batched)
    assert wire / (len(inputs) * (196 + 8)) < 1.03
    assert {r.attempts for r in batched} == {1}


def test_a_failed_batch_is_split_and_the_batch_grows_back(images: dict[str, FirmwareImage]) -> None:
    inputs = random_inputs(16 * 12, seed=10)
    with boot(images["netduinoplus2"]) as node, TamperingProxy(node.port) as proxy:
        # 2 s: long enough for an 8-sample frame on a loaded machine, so only the damaged frame times out
        with target_for(proxy.url, reply_timeout=2.0) as target:
            connect_sent, connect_received = target.stats.bytes_sent, target.stats.bytes_received
            proxy.tamper_next("to_device", flip_middle_byte)
            first = target.infer_batch(inputs[:16])
            assert target._batch == 8  # the size that worked; it doubles after GROW_BATCH_AFTER clean frames
            rest = target.infer_batch(inputs[16:])
            stats = target.stats
    results = first + rest
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    assert stats.batch_splits == 1 and stats.damaged_requests == 1
    assert [r.attempts for r in first] == [2] * 16  # the damaged frame, then its half
    assert target._batch == 16
    # every byte is charged to a sample: the failed frame's to the samples it carried
    assert sum(r.wire_bytes_sent for r in results) == stats.bytes_sent - connect_sent
    assert sum(r.wire_bytes_received for r in results) == stats.bytes_received - connect_received


def test_ticks_are_identical_in_fresh_runs_and_count_the_same_instructions_on_both_boards(
    images: dict[str, FirmwareImage],
) -> None:
    inputs = random_inputs(20, seed=11)

    def run(board: str) -> tuple[list[int], list[DeviceWork]]:
        with boot(images[board]) as node, target_for(node.url) as target:
            ticks = [target.infer(pixels).ticks for pixels in inputs]
            work = [target.work(t) for t in ticks]
        assert {w.label for w in work} == {EMULATED_LABEL}
        return ticks, work

    first_ticks, netduino_work = run("netduinoplus2")
    second_ticks, _ = run("netduinoplus2")
    assert first_ticks == second_ticks
    # The same Thumb-2 code on both boards: instruction counts agree to within the timers'
    # quantisation (1/1.6 instruction per tick at 25 MHz, 1/10.75 at 168 MHz with shift 6),
    # counted once for where the count starts and once for where it is read.
    _, an386_work = run("mps2-an386")
    tolerance = 2 * (netduino_work[0].resolution + an386_work[0].resolution)
    assert np.allclose([w.count for w in netduino_work], [w.count for w in an386_work], atol=tolerance)
    assert 2000 < netduino_work[0].count < 4000  # ~13 instructions per pixel, 196 pixels


# ---------------------------------------------------------------------------------------------
# Damaged links
# ---------------------------------------------------------------------------------------------


class TamperingProxy:
    """TCP proxy that forwards whole 0x00-delimited frames and can damage chosen ones.

    ``tamper_next(direction, damage)`` applies ``damage`` to the next frame travelling
    ``"to_host"`` or ``"to_device"``; ``tamper_all`` to every one from then on.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._damage: dict[str, tuple[Callable[[bytes], bytes], bool]] = {}
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def tamper_next(self, direction: str, damage: Callable[[bytes], bytes]) -> None:
        with self._lock:
            self._damage[direction] = (damage, False)

    def tamper_all(self, direction: str, damage: Callable[[bytes], bytes]) -> None:
        with self._lock:
            self._damage[direction] = (damage, True)

    def _accept(self) -> None:
        host_side, _ = self._listener.accept()
        device_side = socket.create_connection(("127.0.0.1", self.upstream_port))
        for sock in (host_side, device_side):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets += [host_side, device_side]
        for source, sink, direction in ((host_side, device_side, "to_device"), (device_side, host_side, "to_host")):
            thread = threading.Thread(target=self._pump, args=(source, sink, direction), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        pending = bytearray()
        try:
            while chunk := source.recv(4096):
                pending += chunk
                while (end := pending.find(0)) >= 0:
                    frame = bytes(pending[: end + 1])
                    del pending[: end + 1]
                    sink.sendall(self._apply(direction, frame))
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _apply(self, direction: str, frame: bytes) -> bytes:
        if frame == b"\x00":
            return frame  # resync delimiters are not frames
        with self._lock:
            entry = self._damage.get(direction)
            if entry is None:
                return frame
            damage, keep = entry
            if not keep:
                del self._damage[direction]
        return damage(frame)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> "TamperingProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def flip_middle_byte(frame: bytes) -> bytes:
    damaged = bytearray(frame)
    middle = len(frame) // 2
    damaged[middle] ^= 0x20 if damaged[middle] != 0x20 else 0x40  # never create a delimiter
    return bytes(damaged)


def truncate(frame: bytes) -> bytes:
    return frame[: len(frame) // 2] + b"\x00"


def drop(frame: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    "direction, damage, counter",
    [
        ("to_host", flip_middle_byte, "bad_frames"),
        ("to_device", flip_middle_byte, "damaged_requests"),
        ("to_host", truncate, "bad_frames"),
        ("to_device", drop, "timeouts"),
    ],
    ids=["reply-bit-flip", "request-bit-flip", "reply-truncated", "request-lost"],
)
def test_damaged_frame_is_detected_and_retried(
    direction: str, damage: Callable[[bytes], bytes], counter: str, images: dict[str, FirmwareImage]
) -> None:
    inputs = random_inputs(6, seed=3)
    with boot(images["netduinoplus2"]) as node, TamperingProxy(node.port) as proxy:
        with target_for(proxy.url, reply_timeout=0.5) as target:
            results = [target.infer(inputs[0])]
            proxy.tamper_next(direction, damage)
            results += [target.infer(pixels) for pixels in inputs[1:]]
            stats = target.stats
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    assert [r.attempts for r in results] == [1, 2, 1, 1, 1, 1]
    assert getattr(stats, counter) == 1
    assert stats.retries == 1


def lose_tail(frame: bytes) -> bytes:
    return frame[:-2]  # the last byte and the delimiter: the device keeps a fragment, waiting for more


def test_a_retry_is_not_spoiled_by_the_fragment_an_attempt_left(images: dict[str, FirmwareImage]) -> None:
    """A request whose end is lost leaves a fragment in the device's buffer; the retry's leading
    delimiter ends it (the device reports a frame it cannot decode), so the retry goes through."""
    inputs = random_inputs(4, seed=5)
    with boot(images["netduinoplus2"]) as node, TamperingProxy(node.port) as proxy:
        with target_for(proxy.url, reply_timeout=0.5) as target:
            results = [target.infer(inputs[0])]
            proxy.tamper_next("to_device", lose_tail)
            results += [target.infer(pixels) for pixels in inputs[1:]]
            stats = target.stats
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    assert [r.attempts for r in results] == [1, 2, 1, 1]
    assert stats.timeouts == 1 and stats.damaged_requests == 1  # the fragment, reported once


def held_back(seconds: float) -> Callable[[bytes], bytes]:
    def hold(frame: bytes) -> bytes:
        time.sleep(seconds)
        return frame
    return hold


def test_a_late_reply_to_an_earlier_attempt_is_accepted(images: dict[str, FirmwareImage]) -> None:
    inputs = random_inputs(3, seed=6)
    with boot(images["netduinoplus2"]) as node, TamperingProxy(node.port) as proxy:
        with target_for(proxy.url, reply_timeout=0.4) as target:
            results = [target.infer(inputs[0])]
            proxy.tamper_next("to_host", held_back(0.7))
            results += [target.infer(pixels) for pixels in inputs[1:]]
            stats = target.stats
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    assert results[1].attempts == 2 and stats.late_replies == 1 and stats.timeouts == 1
    assert stats.stale_replies == 1  # the second attempt's own reply, skipped with the next request


def test_faults_on_a_serial_line_are_recovered_through_a_pseudo_terminal(images: dict[str, FirmwareImage]) -> None:
    """The serial fault proxy: the harness opens a pty as its port; the proxy relays to the board's
    link (here QEMU's socket, through pyserial as for /dev/tty or rfc2217) and damages bytes."""
    faults = LinkFaults(flip=5e-4, drop=2e-4, garbage=1e-4, seed=4)
    inputs = random_inputs(64, seed=12)
    with boot(images["netduinoplus2"]) as node, closing(SerialFaultProxy(node.url, faults)) as proxy:
        assert proxy.url.startswith("/dev/pts/")
        with target_for(proxy.url, reply_timeout=0.5) as target:
            results = target.infer_batch(inputs)
            stats = target.stats
        injected = proxy.counts().injected()
    assert [r.code for r in results] == [reference_encode(pixels) for pixels in inputs]
    assert injected["flip"] + injected["drop"] + injected["garbage"] > 0
    assert stats.retries + stats.batch_splits > 0


def test_a_serial_line_has_no_connection_to_reset(images: dict[str, FirmwareImage]) -> None:
    with boot(images["netduinoplus2"]) as node:
        with pytest.raises(ConfigError, match=r"reset=4000 .*serial line .*socket://"):
            with faulty_url(node.url.replace("socket://", "rfc2217://"), LinkFaults(reset=4000)):
                pass


def test_persistent_damage_ends_in_device_error(images: dict[str, FirmwareImage]) -> None:
    with boot(images["netduinoplus2"]) as node, TamperingProxy(node.port) as proxy:
        with target_for(proxy.url, name="node-x", reply_timeout=0.3, max_retries=2) as target:
            proxy.tamper_all("to_host", flip_middle_byte)
            with pytest.raises(DeviceError, match=r"node-x .*no valid reply to INFER after 3 attempts .*bad frames 3"):
                target.infer(random_inputs(1, seed=0)[0])


def test_connect_to_a_board_that_booted_long_ago(images: dict[str, FirmwareImage]) -> None:
    """A real board's banner went out before the host connected: HELLO must still work."""
    with boot(images["netduinoplus2"]) as node:
        with socket.create_connection(("127.0.0.1", node.port)) as early_listener:
            early_listener.settimeout(5)
            assert early_listener.recv(1)  # the banner starts; the rest is lost with this link
        with target_for(node.url, banner_timeout=0.3) as target:
            assert target.hello.model_hash == MODEL_HASH
            pixels = random_inputs(1, seed=1)[0]
            assert target.infer(pixels).code == reference_encode(pixels)


# ---------------------------------------------------------------------------------------------
# Wrong firmware, oversized model, real-board build
# ---------------------------------------------------------------------------------------------


def test_firmware_for_another_model_is_refused(images: dict[str, FirmwareImage]) -> None:
    expected = bytes.fromhex("0123456789abcdef")
    with boot(images["netduinoplus2"]) as node:
        target = McuTarget(node.url, name="node-7", expected_model_hash=expected, icount_shift=ICOUNT_SHIFT)
        with pytest.raises(DeviceError) as error:
            target.connect()
    message = str(error.value)
    assert "node-7" in message and "netduinoplus2" in message
    assert f"expected {expected.hex()}" in message and MODEL_HASH.hex() in message


def test_firmware_whose_buffer_cannot_hold_the_input_is_refused(build_root: Path) -> None:
    image = build_firmware("netduinoplus2", [MODEL_SOURCE], build_root / "small-buffer", max_input_bytes=100)
    with boot(image) as node:
        with pytest.raises(DeviceError, match=r"takes 196 input bytes .* holds 100.*max_input_bytes=196"):
            target_for(node.url).connect()


def test_oversized_model_fails_at_link_time_with_a_clear_error(build_root: Path) -> None:
    with pytest.raises(DeviceError) as error:
        build_firmware("netduinoplus2", [OVERSIZED_MODEL_SOURCE], build_root / "oversized")
    message = str(error.value)
    assert "board netduinoplus2 does not fit" in message
    assert "region FLASH (1024 KiB) overflowed by" in message
    excess = int(message.split("overflowed by ")[1].split()[0])
    assert 1024 * 1024 < excess < 1024 * 1024 + 64 * 1024  # 2 MiB of weights in 1 MiB, plus code
    assert "oversized_model.c" in message


def test_real_board_firmware_builds_with_dwt_timer(build_root: Path) -> None:
    image = build_firmware("nucleo-f446re", [MODEL_SOURCE], build_root / "nucleo-f446re")
    assert image.timer_kind is TimerKind.DWT
    assert image.flash_capacity == 512 * 1024 and 0 < image.flash_bytes < image.flash_capacity
    symbols = subprocess.run(
        ["arm-none-eabi-nm", str(image.elf)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "systick_wraps" not in symbols  # the SysTick timer code is not in a DWT build


# ---------------------------------------------------------------------------------------------
# Several nodes, process hygiene
# ---------------------------------------------------------------------------------------------


def test_four_nodes_in_parallel_all_answer(build_root: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        node_images = list(
            pool.map(
                lambda node_id: build_firmware(
                    "netduinoplus2", [MODEL_SOURCE], build_root / f"node{node_id}", node_id=node_id
                ),
                range(4),
            )
        )
    inputs = random_inputs(10, seed=5)
    specs = [QemuNodeSpec("netduinoplus2", image.elf, name=f"node{image.node_id}") for image in node_images]
    with qemu_nodes(specs) as nodes:
        assert len({node.port for node in nodes}) == 4

        def serve(node: QemuNode) -> tuple[int, list[bytes]]:
            with target_for(node.url, name=node.spec.name) as target:
                return target.hello.node_id, [target.infer(pixels).code for pixels in inputs]

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(serve, nodes))
        pids = [node.pid for node in nodes]
    assert [node_id for node_id, _ in answers] == [0, 1, 2, 3]
    expected = [reference_encode(pixels) for pixels in inputs]
    assert all(codes == expected for _, codes in answers)
    assert not any(node.is_running() for node in nodes)
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_node_is_reaped_when_the_body_raises(images: dict[str, FirmwareImage]) -> None:
    with pytest.raises(RuntimeError, match="test body failed"):
        with boot(images["mps2-an386"]) as node:
            pid = node.pid
            raise RuntimeError("test body failed")
    assert not node.is_running()
    assert not Path(f"/proc/{pid}").exists()


def test_qemu_error_is_reported_with_its_stderr(images: dict[str, FirmwareImage]) -> None:
    node = QemuNode(QemuNodeSpec("no-such-machine", images["netduinoplus2"].elf, name="broken"))
    with pytest.raises(DeviceError, match=r"broken .*exited with status 1.*unsupported machine type"):
        with node:
            pass
    assert not node.is_running()
