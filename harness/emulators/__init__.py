"""Emulated stand-ins the harness launches and stops itself (QEMU boards, sshd, arm64 rootfs)."""
from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Callable, TypeVar

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


class StderrLog:
    """A child's stderr, collected line by line by a daemon thread; ``on_line`` sees each line,
    ``on_eof`` runs when the stream ends (the child exited)."""

    def __init__(self, process: subprocess.Popen, name: str, on_line: Callable[[str], None] | None = None,
                 on_eof: Callable[[], None] | None = None):
        self.lines: list[str] = []
        self._process, self._on_line, self._on_eof = process, on_line, on_eof
        self._thread = threading.Thread(target=self._collect, name=name, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        assert self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)
        if self._on_eof is not None:
            self._on_eof()

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)


def spawn(command: list[str], *, name: str, on_line: Callable[[str], None] | None = None,
          on_eof: Callable[[], None] | None = None, **popen_kwargs) -> tuple[subprocess.Popen, StderrLog]:
    """Start a stand-in process with stdin and stdout on /dev/null and its stderr collected.

    Where util-linux ``setpriv`` exists the child gets a parent-death signal, so a killed
    harness leaves nothing running. Linux sends it when the *thread* that forked exits, so
    launch from a thread that outlives the child (the caller's, not a pool worker).
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        command = [setpriv, "--pdeathsig", "TERM", *command]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, **popen_kwargs)
    return process, StderrLog(process, name, on_line, on_eof)
