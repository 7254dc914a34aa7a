"""Byte links to devices that move whole frames, chosen by URL scheme.

A transport knows only the frame delimiter (0x00): it writes encoded frames and hands back the
bytes between delimiters. What a frame means is :mod:`harness.targets.mcu.protocol`'s business, and
retrying is the target's. Transports count every byte they move, framing included, so the
harness can report wire bytes per inference.
"""
from __future__ import annotations

from typing import Callable, Protocol
from urllib.parse import urlsplit

from harness.core.errors import ConfigError
from harness.core.registry import Registry


class Transport(Protocol):
    """A frame link to one device."""

    url: str
    bytes_sent: int
    bytes_received: int

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write_frame(self, wire: bytes) -> None:
        """Send one encoded frame (delimiter included)."""

    def read_frame(self, timeout: float) -> bytes | None:
        """The next non-empty frame's bytes without the delimiter, or None after ``timeout`` s."""

    def discard_input(self) -> None:
        """Drop buffered and pending received bytes (to resynchronise after trouble)."""


TransportFactory = Callable[..., Transport]

PROBE_TIMEOUT_SECONDS = 3.0

# Device paths such as /dev/ttyACM0 or COM3 have no scheme; they are filed under "serial".
PLAIN_PATH_SCHEME = "serial"


class TransportRegistry(Registry[TransportFactory]):
    """Transport classes by URL scheme (``@TRANSPORTS.register("socket", ...)``)."""

    def __init__(self) -> None:
        super().__init__("transport scheme", entry_point_group="hilbench.transports",
                         builtin_modules=("harness.transports.serial",))

    def scheme_of(self, url: str) -> str:
        scheme = urlsplit(url).scheme
        # A one-letter "scheme" is a Windows drive letter, i.e. a plain path.
        return scheme if len(scheme) > 1 else PLAIN_PATH_SCHEME

    def factory_for(self, url: str) -> TransportFactory:
        """The transport class for ``url``; ConfigError if no transport handles its scheme."""
        scheme = self.scheme_of(url)
        if scheme not in self:
            raise ConfigError(f"no transport for URL {url!r} (scheme {scheme!r}); known schemes: "
                              f"{', '.join(self.names())}")
        return self.get(scheme)

    def create(self, url: str, **options: object) -> Transport:
        """An unopened transport for ``url``; ConfigError if no transport handles its scheme."""
        return self.factory_for(url)(url, **options)


TRANSPORTS = TransportRegistry()


def probe_transport(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Check quickly, without opening the link, that the device behind ``url`` is there (e.g. a
    device node exists, something listens on a TCP port): DeviceError saying what is wrong and
    what to do. A transport class offers the check as ``probe(url, timeout)``; one without it is
    not checked."""
    probe = getattr(TRANSPORTS.factory_for(url), "probe", None)
    if probe is not None:
        probe(url, timeout)


def open_transport(url: str, **options: object) -> Transport:
    """Create and open the transport for ``url``."""
    transport = TRANSPORTS.create(url, **options)
    transport.open()
    return transport
