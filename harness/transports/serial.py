"""Frame transport over any pyserial URL: a UART device, QEMU's TCP socket, or RFC 2217.

``socket://127.0.0.1:P`` reaches a QEMU chardev, ``/dev/ttyACM0`` a board's USB serial port,
``rfc2217://host:port`` a port shared over the network (e.g. by labgrid's ser2net), ``loop://``
echoes writes back (for tests).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import serial

from harness.core.errors import DeviceError, ProtocolError
from harness.transports import PROBE_TIMEOUT_SECONDS, TRANSPORTS

DEFAULT_BAUDRATE = 115200
DEFAULT_MAX_FRAME_BYTES = 16 * 1024  # bytes between delimiters; more means a lost delimiter
# pyserial reconfigures the port (tcsetattr, RFC 2217 option negotiation) whenever its timeout
# changes, so reads use one fixed short timeout and loop until the caller's deadline.
READ_POLL_SECONDS = 0.05


@TRANSPORTS.register("serial", "socket", "rfc2217", "loop", "spy", "hwgrep")
class SerialTransport:
    """Writes frames and reads 0x00-delimited frames through ``serial.serial_for_url``."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.max_frame_bytes = max_frame_bytes
        self.bytes_sent = 0
        self.bytes_received = 0
        self._port: serial.SerialBase | None = None
        self._pending = bytearray()

    @staticmethod
    def probe(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        """Is the device there? A device path must exist and be readable and writable;
        ``socket://`` and ``rfc2217://`` need something listening on host:port. DeviceError says
        what is wrong and what to do; other URLs are not checked."""
        if url.startswith("/"):
            _probe_device_node(url)
            return
        parts = urlsplit(url)
        if parts.scheme in ("socket", "rfc2217"):
            _probe_tcp(url, parts.hostname, parts.port, timeout)

    def open(self) -> None:
        try:
            self._port = serial.serial_for_url(
                self.url, baudrate=self.baudrate, timeout=READ_POLL_SECONDS
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            try:  # pyserial's message keeps only the OS's words; say what they mean
                self.probe(self.url)
            except DeviceError as diagnosis:
                raise DeviceError(f"cannot open serial link {self.url}: {diagnosis}") from exc
            raise DeviceError(f"cannot open serial link {self.url}: {exc}") from exc

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def __enter__(self) -> "SerialTransport":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_port(self) -> serial.SerialBase:
        if self._port is None:
            raise DeviceError(f"serial link {self.url} is not open")
        return self._port

    def write_frame(self, wire: bytes) -> None:
        port = self._require_port()
        try:
            port.write(wire)
            port.flush()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"writing to {self.url} failed: {exc}") from exc
        self.bytes_sent += len(wire)

    def read_frame(self, timeout: float) -> bytes | None:
        port = self._require_port()
        deadline = time.monotonic() + timeout
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                # Ask for what is waiting, or block for one byte: pyserial's read(n) waits for
                # all n bytes, and socket:// reports only 0 or 1 byte waiting.
                chunk = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise DeviceError(f"reading from {self.url} failed: {exc}") from exc
            self.bytes_received += len(chunk)
            self._pending += chunk

    def _take_frame(self) -> bytes | None:
        """Pop the next non-empty frame from the receive buffer, if a whole one is there."""
        while True:
            end = self._pending.find(0)
            if end < 0:
                if len(self._pending) > self.max_frame_bytes:
                    size = len(self._pending)
                    self._pending.clear()
                    raise ProtocolError(
                        f"no frame delimiter from {self.url} within {size} bytes; input discarded"
                    )
                return None
            frame = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if frame:
                return frame

    def discard_input(self) -> None:
        self._pending.clear()
        port = self._require_port()
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"flushing input from {self.url} failed: {exc}") from exc


def _probe_device_node(path: str) -> None:
    if not Path(path).exists():
        raise DeviceError(f"{path} does not exist: is the board plugged in and powered? `ls /dev/serial/by-id/` "
                          "lists the serial ports; put the board's in transport.url")
    if not os.access(path, os.R_OK | os.W_OK):
        raise DeviceError(f"no permission to read and write {path}: add your user to its group "
                          f"(`ls -l {path}`, usually dialout) and log in again")


def _probe_tcp(url: str, host: str | None, port: int | None, timeout: float) -> None:
    if not host or port is None:
        raise DeviceError(f"{url} needs a host and a port, e.g. socket://127.0.0.1:4000")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise DeviceError(f"nothing listens on {host}:{port} (connection refused): start the serial server "
                          "(ser2net, labgrid) or correct the port") from None
    except socket.gaierror as exc:
        raise DeviceError(f"cannot resolve host name {host!r} ({exc.strerror}): correct the host") from None
    except TimeoutError:
        raise DeviceError(f"no answer from {host}:{port} within {timeout:g} s: check the host, the port and "
                          "that no firewall is in the way") from None
    except OSError as exc:
        raise DeviceError(f"cannot connect to {host}:{port} ({exc.strerror or exc}): check the host and port") from None
