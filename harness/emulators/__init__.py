"""Emulated stand-ins the harness launches and stops itself (QEMU boards, sshd, arm64 rootfs)."""
from __future__ import annotations

from typing import TypeVar

S = TypeVar("S", bound="Launched")


class Launched:
    """Context-manager lifecycle of a launched stand-in: ``start`` on enter (and ``stop`` again
    if starting fails half-way, so nothing is left running), ``stop`` on exit. ``stop`` must be
    safe to call more than once."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
