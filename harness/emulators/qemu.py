"""Boot node firmware in qemu-system-arm, one process per node, with its UART on a TCP socket.

Each node runs::

    qemu-system-arm -M <machine> -kernel fw.elf -icount shift=S -nographic -monitor none
        -chardev socket,id=s0,host=127.0.0.1,port=0,server=on,wait=on,nodelay=on
        -serial chardev:s0

* ``port=0`` lets the kernel pick a free port while QEMU binds it, so no other process can take
  the port between choosing and binding; QEMU prints the port it got on stderr
  ("QEMU waiting for connection on: ...tcp:127.0.0.1:P..."), which is also the readiness signal.
* ``wait=on`` holds the guest until the host connects, so the boot banner is never lost;
  ``nodelay=on`` avoids ~47 ms Nagle/delayed-ACK stalls per round trip.
* ``-icount shift=S`` makes virtual time advance 2**S ns per executed instruction, so the
  firmware's SysTick counts instructions, identically in every run.

Processes are stopped on context exit (terminate, then kill), and where util-linux ``setpriv``
exists they also get a parent-death signal, so even a killed harness leaves no QEMU behind.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from harness.core.errors import DeviceError
from harness.emulators import Launched, StderrLog, spawn

QEMU_BINARY = "qemu-system-arm"

# 2**6 = 64 ns of virtual time per instruction. Both emulated SysTick rates then tick at least
# once per instruction (168 MHz: 10.75 ticks, 25 MHz: 1.6 ticks), so instruction counts resolve
# to better than one instruction, while the 24-bit SysTick still wraps only every ~1.5 M
# instructions (the firmware extends it with a wrap interrupt). shift=auto is not reproducible.
ICOUNT_SHIFT = 6

READY_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0

_LISTENING = re.compile(r"waiting for connection on: disconnected:tcp:(?P<host>[\d.]+):(?P<port>\d+)")


@dataclass(frozen=True)
class QemuNodeSpec:
    """What to boot: QEMU machine, firmware ELF, a name for messages, the icount shift."""

    machine: str
    elf: Path
    name: str = "node"
    icount_shift: int = ICOUNT_SHIFT


def qemu_command(spec: QemuNodeSpec, qemu_binary: str = QEMU_BINARY) -> list[str]:
    """The qemu-system-arm command line for ``spec`` (port chosen by the kernel)."""
    return [
        qemu_binary,
        "-M", spec.machine,
        "-kernel", str(spec.elf),
        "-icount", f"shift={spec.icount_shift}",
        "-nographic",
        "-monitor", "none",
        "-chardev", "socket,id=s0,host=127.0.0.1,port=0,server=on,wait=on,nodelay=on",
        "-serial", "chardev:s0",
    ]


class QemuNode(Launched):
    """One running qemu-system-arm; a context manager that always stops and reaps it."""

    def __init__(
        self,
        spec: QemuNodeSpec,
        *,
        qemu_binary: str = QEMU_BINARY,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self.spec = spec
        self.qemu_binary = qemu_binary
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: StderrLog | None = None
        self._ready = threading.Event()
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start QEMU without waiting for it to listen (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise DeviceError(f"QEMU node {self.spec.name} is already started")
        if not Path(self.spec.elf).is_file():
            raise DeviceError(f"QEMU node {self.spec.name}: firmware {self.spec.elf} does not exist")
        binary = shutil.which(self.qemu_binary)
        if binary is None:
            raise DeviceError(f"{self.qemu_binary} not found on PATH; install qemu-system-arm")
        # qemu_nodes launches from the caller's thread, which outlives the nodes (see spawn).
        # At EOF (QEMU exited) "ready" is set too: wait_ready then sees no port and says why.
        self._process, self._stderr = spawn(qemu_command(self.spec, binary), name=f"qemu-stderr-{self.spec.name}",
                                            on_line=self._on_stderr_line, on_eof=self._ready.set)

    def _on_stderr_line(self, line: str) -> None:
        match = _LISTENING.search(line)
        if match and not self._ready.is_set():
            self._port = int(match["port"])
            self._ready.set()

    def wait_ready(self) -> None:
        """Block until QEMU listens on its port; DeviceError with QEMU's stderr if it does not."""
        if self._process is None:
            raise DeviceError(f"QEMU node {self.spec.name} was never launched")
        if not self._ready.wait(self.ready_timeout):
            raise DeviceError(
                f"QEMU node {self.spec.name} ({self.spec.machine}) did not listen within "
                f"{self.ready_timeout:.0f} s; stderr: {self.stderr_text() or '(empty)'}"
            )
        if self._port is None:
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            raise DeviceError(
                f"QEMU node {self.spec.name} ({self.spec.machine}) exited with status "
                f"{self._process.returncode} before listening; stderr: {self.stderr_text() or '(empty)'}"
            )

    def start(self) -> None:
        """Launch and wait until ready."""
        self.launch()
        self.wait_ready()

    def stop(self) -> None:
        """Terminate (then kill) QEMU and reap it; safe to call more than once."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.join(STOP_TIMEOUT_SECONDS)
        if process.stderr is not None:
            process.stderr.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise DeviceError(f"QEMU node {self.spec.name} is not listening yet")
        return self._port

    @property
    def url(self) -> str:
        """pyserial URL of the node's UART."""
        return f"socket://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status once it has ended (negative: killed by that signal), else None."""
        return self._process.poll() if self._process is not None else None

    def exited_within(self, seconds: float) -> bool:
        """Whether QEMU has ended, waiting up to ``seconds`` for it (a link reset by a dying
        emulator arrives a moment before its exit)."""
        if self._process is None:
            return False
        try:
            self._process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stderr_text(self) -> str:
        """What QEMU has written to stderr so far (its error messages)."""
        return self._stderr.text() if self._stderr is not None else ""

    def check_alive(self) -> None:
        """DeviceError with QEMU's exit status and stderr if the process has ended."""
        if self._process is not None and self._process.poll() is not None:
            raise DeviceError(
                f"QEMU node {self.spec.name} exited with status {self._process.returncode}; "
                f"stderr: {self.stderr_text() or '(empty)'}"
            )


@contextlib.contextmanager
def qemu_nodes(
    specs: Iterable[QemuNodeSpec],
    *,
    qemu_binary: str = QEMU_BINARY,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> Iterator[list[QemuNode]]:
    """Boot several nodes in parallel; yields the list of ready :class:`QemuNode` objects.

    All processes are launched first and awaited afterwards, so boot times overlap. On exit,
    or if any node fails to start, every node is stopped and reaped.
    """
    nodes = [QemuNode(spec, qemu_binary=qemu_binary, ready_timeout=ready_timeout) for spec in specs]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
