"""Link faults as a feature: a seeded, reproducible fault-injecting proxy between the harness
and a device, for testing that a run recovers (``hilbench run ... --link-faults SPEC``).

A spec is ``kind=value`` pairs separated by commas:

- ``flip=RATE``: each byte has one random bit flipped with probability RATE;
- ``drop=RATE``: each byte is lost with probability RATE;
- ``garbage=RATE``: after each byte, a random byte is inserted with probability RATE;
- ``stall=RATE``: each chunk is held back 50-250 ms with probability RATE;
- ``reset=EVERY``: the connection is cut after every EVERY bytes (both directions counted);
- ``seed=N``: the seed (default 0); each proxy mixes in its own stream number.

Faults are applied to bytes in both directions, so every part of the protocol is exercised:
COBS, delimiters, CRCs, sequence numbers, retries, reconnects. Counts by kind are kept per
proxy and reported with the run.

Two proxies: a TCP proxy for ``socket://`` links (emulators, ser2net), and a pseudo-terminal for
serial links (``/dev/ttyACM0``, ``rfc2217://``, any pyserial URL): the harness opens the pty's
path as if it were the port. A serial line cannot be cut and reopened, so ``reset`` needs a
``socket://`` link.
"""
from __future__ import annotations

import os
import random
import select
import socket
from contextvars import ContextVar
import threading
import time
import tty
from dataclasses import dataclass, field, fields
from typing import Any, Iterator
from contextlib import contextmanager

from harness.core.errors import ConfigError, DeviceError

STALL_SECONDS = (0.05, 0.25)
_ACTIVE: ContextVar["LinkFaults | None"] = ContextVar("hilbench_link_faults", default=None)
RATE_KINDS = ("flip", "drop", "garbage", "stall")


@dataclass(frozen=True)
class LinkFaults:
    flip: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    stall: float = 0.0
    reset: int = 0  # 0: never
    seed: int = 0

    @property
    def active(self) -> bool:
        return any(getattr(self, kind) > 0 for kind in (*RATE_KINDS, "reset"))

    def spec(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != f.default)


def parse_link_faults(text: str, where: str = "--link-faults") -> LinkFaults:
    """``flip=5e-4,drop=2e-4,...`` -> LinkFaults; ConfigError naming the bad part."""
    known = {f.name for f in fields(LinkFaults)}
    values: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ConfigError(f"{where}: {part!r} is not KIND=VALUE with KIND one of {', '.join(sorted(known))} "
                              "(e.g. flip=5e-4,drop=2e-4,reset=20000)")
        try:
            number = float(value) if name in RATE_KINDS else int(value)
        except ValueError:
            raise ConfigError(f"{where}: {name} needs a {'rate' if name in RATE_KINDS else 'whole number'}, "
                              f"got {value!r}") from None
        if name in RATE_KINDS and not 0 <= number < 1:
            raise ConfigError(f"{where}: {name}={value} must be a probability in [0, 1)")
        if name == "reset" and number < 0:
            raise ConfigError(f"{where}: reset={value} must be 0 (never) or a byte count")
        values[name] = number
    return LinkFaults(**values)  # type: ignore[arg-type]


@contextmanager
def injecting(faults: LinkFaults | None) -> Iterator[None]:
    """Links opened inside (in this thread) go through a fault proxy: the run engine sets it
    around each node's deployment, and deployers read it with :func:`active_link_faults`."""
    token = _ACTIVE.set(faults)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_link_faults() -> LinkFaults | None:
    return _ACTIVE.get()


@dataclass
class FaultCounts:
    flip: int = 0
    drop: int = 0
    garbage: int = 0
    stall: int = 0
    reset: int = 0
    bytes: int = 0  # bytes that passed through (before faults)

    def injected(self) -> dict[str, int]:
        """Faults by kind (the byte count aside)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "bytes"}

    def add(self, other: "FaultCounts") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class FaultInjector:
    """Applies byte faults to chunks of a stream; deterministic for a seed and chunking."""

    faults: LinkFaults
    stream: int = 0
    counts: FaultCounts = field(default_factory=FaultCounts)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed * 1_000_003 + self.stream)
        self._since_reset = 0

    def damage(self, chunk: bytes) -> bytes:
        """The chunk as it arrives at the far end (flips, drops, garbage applied)."""
        f, rng, counts = self.faults, self._rng, self.counts
        counts.bytes += len(chunk)
        if not (f.flip or f.drop or f.garbage):
            return chunk
        out = bytearray()
        for byte in chunk:
            if f.drop and rng.random() < f.drop:
                counts.drop += 1
                continue
            if f.flip and rng.random() < f.flip:
                byte ^= 1 << rng.randrange(8)
                counts.flip += 1
            out.append(byte)
            if f.garbage and rng.random() < f.garbage:
                out.append(rng.randrange(256))
                counts.garbage += 1
        return bytes(out)

    def stall_seconds(self) -> float:
        if self.faults.stall and self._rng.random() < self.faults.stall:
            self.counts.stall += 1
            return self._rng.uniform(*STALL_SECONDS)
        return 0.0

    def reset_due(self, passed: int) -> bool:
        """Whether the connection is cut now, after ``passed`` more bytes."""
        if not self.faults.reset:
            return False
        self._since_reset += passed
        if self._since_reset < self.faults.reset:
            return False
        self._since_reset = 0
        self.counts.reset += 1
        return True


class LinkFaultProxy:
    """One injector per direction, so faults stay reproducible for a seed, and their counts."""

    @property
    def url(self) -> str:
        """What the harness opens instead of the device's own URL."""
        raise NotImplementedError

    def __init__(self, faults: LinkFaults, stream: int) -> None:
        self.faults = faults
        self.to_device = FaultInjector(faults, 2 * stream)
        self.to_host = FaultInjector(faults, 2 * stream + 1)
        self._lock = threading.Lock()

    def counts(self) -> FaultCounts:
        total = FaultCounts()
        with self._lock:
            total.add(self.to_device.counts)
            total.add(self.to_host.counts)
        return total

    def report(self) -> dict[str, Any]:
        """What a run records of this proxy: the faults asked for, those injected, bytes carried."""
        counts = self.counts()
        return {"link_faults": self.faults.spec(), "faults_injected": counts.injected(), "proxied_bytes": counts.bytes}

    def _inject(self, injector: FaultInjector, chunk: bytes) -> tuple[float, bytes, bool]:
        """(seconds to hold the chunk back, the chunk as damaged, whether to cut the link now)."""
        with self._lock:
            return injector.stall_seconds(), injector.damage(chunk), injector.reset_due(len(chunk))

    def close(self) -> None:
        raise NotImplementedError


class FaultProxy(LinkFaultProxy):
    """A TCP proxy on 127.0.0.1 in front of ``host:port`` that injects :class:`LinkFaults`.

    It accepts a new connection after each reset (the harness reconnects).
    """

    def __init__(self, host: str, port: int, faults: LinkFaults, stream: int = 0) -> None:
        super().__init__(faults, stream)
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._links: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name=f"faults:{port}")
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                host_side, _ = self._listener.accept()
                device_side = socket.create_connection(self.upstream, timeout=10)
                device_side.settimeout(None)
            except OSError:
                return
            for sock in (host_side, device_side):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cut = threading.Event()
            with self._lock:
                self._links += [host_side, device_side]
            for source, sink, injector in ((host_side, device_side, self.to_device),
                                           (device_side, host_side, self.to_host)):
                threading.Thread(target=self._pump, args=(source, sink, injector, cut), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, injector: FaultInjector, cut: threading.Event) -> None:
        try:
            while not cut.is_set() and (chunk := source.recv(4096)):
                pause, damaged, reset = self._inject(injector, chunk)
                if pause:
                    time.sleep(pause)
                if damaged:
                    sink.sendall(damaged)
                if reset:
                    cut.set()
        except OSError:
            pass
        finally:
            cut.set()
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for sock in links:
            try:
                sock.close()
            except OSError:
                pass
        self._acceptor.join(timeout=2)


class SerialFaultProxy(LinkFaultProxy):
    """A pseudo-terminal in front of a serial link (``/dev/ttyACM0``, ``rfc2217://``, any pyserial
    URL) that injects :class:`LinkFaults`; the harness opens :attr:`url`, the pty's path."""

    POLL_SECONDS = 0.05

    def __init__(self, url: str, faults: LinkFaults, stream: int = 0, baudrate: int = 115200) -> None:
        import serial

        if faults.reset:
            raise ConfigError(f"--link-faults: reset={faults.reset} cuts a connection, which a serial line "
                              f"({url}) does not have; use reset only on socket:// links")
        super().__init__(faults, stream)
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=self.POLL_SECONDS)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise DeviceError(f"--link-faults: cannot open the serial link {url}: {exc}") from exc
        # The proxy keeps the slave end open too, so the master never reads EIO while the harness
        # closes and reopens the port.
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._closed = threading.Event()
        self._pumps = [threading.Thread(target=self._pump_to_device, daemon=True, name=f"faults:{url}>"),
                       threading.Thread(target=self._pump_to_host, daemon=True, name=f"faults:{url}<")]
        for pump in self._pumps:
            pump.start()

    @property
    def url(self) -> str:
        return self.path

    def _pump_to_device(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._master], [], [], self.POLL_SECONDS)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                return
            pause, damaged, _ = self._inject(self.to_device, chunk)
            if pause:
                time.sleep(pause)
            if damaged:
                self._port.write(damaged)

    def _pump_to_host(self) -> None:
        while not self._closed.is_set():
            try:
                chunk = self._port.read(max(1, self._port.in_waiting))
            except Exception:  # the port went away (pyserial raises several kinds): the link is dead
                return
            if not chunk:
                continue
            pause, damaged, _ = self._inject(self.to_host, chunk)
            if pause:
                time.sleep(pause)
            view = memoryview(damaged)
            while view:
                try:
                    view = view[os.write(self._master, view):]
                except OSError:
                    return

    def close(self) -> None:
        self._closed.set()
        for pump in self._pumps:
            pump.join(timeout=2)
        self._port.close()
        for fd in (self._master, self._slave):
            os.close(fd)


@contextmanager
def fault_proxy(host: str, port: int, faults: LinkFaults | None, stream: int = 0) -> Iterator[FaultProxy | None]:
    """A fault proxy in front of ``host:port`` while inside, or None when ``faults`` are off."""
    if faults is None or not faults.active:
        yield None
        return
    proxy = FaultProxy(host, port, faults, stream)
    try:
        yield proxy
    finally:
        proxy.close()


@contextmanager
def faulty_url(url: str, faults: LinkFaults | None, stream: int = 0) -> Iterator[tuple[str, LinkFaultProxy | None]]:
    """``url`` behind a fault proxy when ``faults`` are active, else ``url``: a TCP proxy for
    ``socket://`` links, a pseudo-terminal for serial ones."""
    if faults is None or not faults.active:
        yield url, None
        return
    if not url.startswith("socket://"):
        serial_proxy = SerialFaultProxy(url, faults, stream)
        try:
            yield serial_proxy.url, serial_proxy
        finally:
            serial_proxy.close()
        return
    host, _, port = url[len("socket://"):].partition(":")
    with fault_proxy(host, int(port.split("?")[0]), faults, stream) as proxy:
        assert proxy is not None
        yield proxy.url, proxy
