"""The serial transport's framing and byte counting, over pyserial's loop:// URL."""
from __future__ import annotations

import pytest

from harness.core.errors import ConfigError, ProtocolError
from harness.targets.mcu.protocol import Ping, decode_message, encode_message
from harness.transports import TRANSPORTS, open_transport
from harness.transports.serial import SerialTransport


def test_frames_and_byte_counts_over_loopback() -> None:
    transport = open_transport("loop://")
    try:
        first, second = encode_message(Ping(b"a\x00b"), 1), encode_message(Ping(b""), 2)
        transport.write_frame(b"\x00" + first + second)  # a leading empty frame is skipped
        assert decode_message(transport.read_frame(1.0)) == (1, Ping(b"a\x00b"))
        assert decode_message(transport.read_frame(1.0)) == (2, Ping(b""))
        assert transport.read_frame(0.05) is None
        assert transport.bytes_sent == transport.bytes_received == 1 + len(first) + len(second)
    finally:
        transport.close()


def test_missing_delimiter_is_a_protocol_error() -> None:
    transport = SerialTransport("loop://", max_frame_bytes=64)
    transport.open()
    try:
        transport.write_frame(b"\x01" * 100)
        with pytest.raises(ProtocolError, match="no frame delimiter"):
            transport.read_frame(1.0)
    finally:
        transport.close()


def test_scheme_lookup() -> None:
    assert TRANSPORTS.scheme_of("/dev/ttyACM0") == "serial"
    assert TRANSPORTS.scheme_of("socket://127.0.0.1:5000") == "socket"
    assert isinstance(TRANSPORTS.create("rfc2217://lab:4000"), SerialTransport)
    with pytest.raises(ConfigError, match="no transport for URL 'ssh://pi'"):
        TRANSPORTS.create("ssh://pi")
    with pytest.raises(ConfigError, match="already registered"):
        TRANSPORTS.register("socket")(SerialTransport)
