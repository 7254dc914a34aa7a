"""SSH to Linux devices with asyncssh, behind a small synchronous facade.

* Key authentication only (a profile's key file, or the agent / ``~/.ssh`` keys when none is
  given). No ``~/.ssh/config`` is read: the profile says everything, so runs are reproducible.
* Host keys are verified: against a known_hosts file (default ``~/.ssh/known_hosts``) or a key
  pinned in the profile. Turning verification off is an explicit option and logged as a warning
  on every connection.
* Remote commands are argv lists joined with :func:`shlex.join`: SSH always hands a command line
  to the remote login shell, so quoting every word is what makes paths with spaces or quotes
  arrive as one argument each, and makes user strings unable to inject shell syntax.
* Every failure to connect is a :class:`DeviceError` naming the device and ``host:port`` and
  saying what to check (refused, timed out, unknown host, authentication, host key).

asyncssh is asynchronous; the harness is not. Each :class:`SshConnection` owns a private event
loop running in a daemon thread, and its methods submit coroutines to it. A
:class:`RemoteProcess` is one long-lived remote command (the device runner) whose binary stdin
and stdout carry length-prefixed frames for as many requests as needed, so an inference never
pays for a new SSH command.
"""
from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from harness.core.errors import DeviceError

log = logging.getLogger("hilbench.ssh")

T = TypeVar("T")
DEFAULT_COMMAND_TIMEOUT_S = 120.0
DEFAULT_TRANSFER_TIMEOUT_S = 600.0
STDERR_KEEP_BYTES = 64 * 1024
_FRAME_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024


def command_line(argv: Sequence[str]) -> str:
    """The remote command line for ``argv``: each word quoted for the remote POSIX shell."""
    if not argv:
        raise ValueError("empty command")
    return shlex.join(str(a) for a in argv)


@dataclass(frozen=True)
class SshEndpoint:
    """Where and how to log in: address, user, key, and how the host key is verified.

    ``known_hosts``: file to verify against (None: ``~/.ssh/known_hosts``); ``host_key``: a
    pinned public key ("ssh-ed25519 AAAA..."), used instead of the file;
    ``verify_host_key=False``: accept any host key (logged loudly)."""

    device: str
    host: str
    port: int
    user: str
    key: Path | None = None
    known_hosts: Path | None = None
    host_key: str | None = None
    verify_host_key: bool = True
    connect_timeout_s: float = 10.0
    via: tuple[str, int] | None = None  # connect here (a fault proxy); verify the key as host:port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def where(self) -> str:
        """``device NAME (user@host:port)``, the prefix of every error about this endpoint."""
        return f"device {self.device} ({self.user}@{self.address})"

    def known_hosts_path(self) -> Path:
        return (self.known_hosts or Path("~/.ssh/known_hosts")).expanduser()


@dataclass(frozen=True)
class CommandResult:
    """A finished remote command."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str


class _LoopThread:
    """A private asyncio event loop in a daemon thread; ``run`` blocks until a coroutine is done."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class SshConnection:
    """One SSH connection to a device: commands, SFTP uploads, long-lived processes."""

    def __init__(self, endpoint: SshEndpoint) -> None:
        self.endpoint = endpoint
        self._loop: _LoopThread | None = None
        self._conn: asyncssh.SSHClientConnection | None = None

    # -- connection --------------------------------------------------------------------------

    def connect(self) -> None:
        """Log in; DeviceError with the cause and what to check if that fails."""
        options = self._options()
        self._loop = _LoopThread(f"ssh-{self.endpoint.device}")
        try:
            self._conn = self._loop.run(self._connect(options))
        except BaseException:
            self._loop.stop()
            self._loop = None
            raise

    def _options(self) -> dict[str, Any]:
        ep = self.endpoint
        options: dict[str, Any] = {"username": ep.user, "connect_timeout": ep.connect_timeout_s, "config": []}
        if ep.key is not None:
            key = ep.key.expanduser()
            if not key.is_file():
                raise DeviceError(f"{ep.where}: private key {key} does not exist "
                                  "(profile field 'ssh.key'); create one with ssh-keygen -t ed25519")
            options |= {"client_keys": [str(key)], "agent_path": None}
        return options | {"known_hosts": self._known_hosts_option()}

    def _known_hosts_option(self) -> Any:
        ep = self.endpoint
        if not ep.verify_host_key:
            log.warning("%s: HOST KEY VERIFICATION IS OFF (verify_host_key: false): any machine "
                        "answering at %s is trusted, including an impostor", ep.where, ep.address)
            return None
        if ep.host_key:
            try:
                key = asyncssh.import_public_key(ep.host_key)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise DeviceError(f"{ep.where}: the pinned host key (profile field 'ssh.host_key') "
                                  f"is not a public key: {exc}") from exc
            return ([key], [], [])
        path = ep.known_hosts_path()
        if not path.is_file():
            raise DeviceError(f"{ep.where}: known_hosts file {path} does not exist, so the device's "
                              "host key cannot be verified; add the key after checking its "
                              f"fingerprint (ssh-keyscan -p {ep.port} {ep.host} >> {path}), or pin it "
                              "in the profile's 'ssh.host_key'")
        if ep.via is not None:  # the keys known_hosts lists for the device, not for the proxy
            trusted, ca_keys, revoked, *_ = asyncssh.match_known_hosts(str(path), ep.host, ep.host, ep.port)
            return (trusted, ca_keys, revoked)
        return str(path)

    async def _connect(self, options: dict[str, Any]) -> asyncssh.SSHClientConnection:
        ep = self.endpoint
        try:
            host, port = ep.via or (ep.host, ep.port)
            return await asyncssh.connect(host, port, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            presented = await self._presented_key_fingerprint()
            trusted = ("the key pinned in the profile ('ssh.host_key')" if ep.host_key
                       else f"known_hosts file {ep.known_hosts_path()}")
            raise DeviceError(
                f"{ep.where}: host key verification failed: the key the host presented"
                f"{f' ({presented})' if presented else ''} is not the one {trusted} lists for "
                f"{ep.address}. Refusing to connect: another machine may be answering, or the "
                "device was reinstalled; check the fingerprint on the device "
                "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before updating the file") from exc
        except asyncssh.PermissionDenied as exc:
            key = ep.key or "the agent / ~/.ssh keys"
            raise DeviceError(f"{ep.where}: authentication failed with {key}: is its public key "
                              f"in ~{ep.user}/.ssh/authorized_keys on the device?") from exc
        except ConnectionRefusedError as exc:
            raise DeviceError(f"{ep.where}: connection refused: nothing listens on port {ep.port} "
                              "(is sshd running, and is the port right?)") from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise DeviceError(f"{ep.where}: timed out after {ep.connect_timeout_s:g} s connecting or "
                              "waiting for the SSH handshake (device off, wrong address, a firewall, "
                              "or something other than sshd on that port?)") from exc
        except socket.gaierror as exc:
            raise DeviceError(f"{ep.where}: cannot resolve host name {ep.host!r}: {exc.strerror}") from exc
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise DeviceError(f"{ep.where}: cannot use private key {ep.key}: {exc}") from exc
        except asyncssh.Error as exc:
            raise DeviceError(f"{ep.where}: SSH failed: {exc.reason}") from exc
        except OSError as exc:
            raise DeviceError(f"{ep.where}: cannot connect: {exc.strerror or exc}") from exc

    async def _presented_key_fingerprint(self) -> str | None:
        """SHA256 fingerprint of the host key the server presents, for the error message."""
        ep = self.endpoint
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(ep.host, ep.port, config=[]),
                                         ep.connect_timeout_s)
        except (OSError, asyncssh.Error, asyncio.TimeoutError):
            return None
        return key.get_fingerprint() if key is not None else None

    def close(self) -> None:
        if self._loop is None:
            return
        if self._conn is not None:
            conn, self._conn = self._conn, None

            async def _close() -> None:
                conn.close()
                try:
                    await asyncio.wait_for(conn.wait_closed(), 5)
                except (asyncio.TimeoutError, OSError, asyncssh.Error):
                    pass
            self._loop.run(_close())
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> "SshConnection":
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require(self) -> tuple[_LoopThread, asyncssh.SSHClientConnection]:
        if self._loop is None or self._conn is None:
            raise DeviceError(f"{self.endpoint.where}: not connected")
        return self._loop, self._conn

    # -- commands and files -------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT_S,
            check: bool = True) -> CommandResult:
        """Run ``argv`` on the device and wait; ``check``: DeviceError on a non-zero exit."""
        loop, conn = self._require()
        line = command_line(argv)

        async def _run() -> CommandResult:
            try:
                done = await conn.run(line, check=False, timeout=timeout, encoding="utf-8", errors="replace")
            except asyncssh.TimeoutError as exc:
                stderr = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode(errors="replace")
                raise DeviceError(f"{self.endpoint.where}: command timed out after {timeout:g} s: {line}\n"
                                  f"{stderr.strip()}") from exc
            except (asyncssh.Error, OSError) as exc:
                raise DeviceError(f"{self.endpoint.where}: connection lost running {line}: {exc}") from exc
            status = done.exit_status if done.exit_status is not None else -1
            return CommandResult(tuple(map(str, argv)), status, str(done.stdout or ""), str(done.stderr or ""))

        result = loop.run(_run())
        if check and result.exit_status != 0:
            raise DeviceError(f"{self.endpoint.where}: command failed (exit status {result.exit_status}): "
                              f"{line}\n{(result.stderr or result.stdout).strip()}")
        return result

    def upload(self, local: Path, remote: str, *, timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> None:
        """Copy ``local`` to ``remote`` with SFTP, creating the remote directory first; atomic.
        Relative remote paths are relative to the login user's home."""
        loop, conn = self._require()
        parent = remote.rsplit("/", 1)[0] if "/" in remote else ""

        # Written under a temporary name and renamed, so a reader (another target deploying the
        # same runner on the same device) never sees a half-written file.
        partial = f"{remote}.part-{uuid.uuid4().hex[:12]}"

        async def _put() -> None:
            async with conn.start_sftp_client() as sftp:
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                await sftp.put(str(local), partial)
                await sftp.posix_rename(partial, remote)

        async def _guarded() -> None:
            try:
                await asyncio.wait_for(_put(), timeout)
            except (asyncio.TimeoutError, TimeoutError) as exc:
                raise DeviceError(f"{self.endpoint.where}: uploading {local} to {remote} took over {timeout:g} s") from exc
            except (asyncssh.Error, OSError) as exc:
                raise DeviceError(f"{self.endpoint.where}: uploading {local} to {remote} failed: {exc}") from exc

        loop.run(_guarded())

    def exists(self, remote: str) -> bool:
        """Whether ``remote`` exists on the device (SFTP stat: no remote shell is started)."""
        loop, conn = self._require()

        async def _stat() -> bool:
            async with conn.start_sftp_client() as sftp:
                return await sftp.exists(remote)

        async def _exists() -> bool:
            try:
                return await asyncio.wait_for(_stat(), DEFAULT_COMMAND_TIMEOUT_S)
            except (asyncio.TimeoutError, TimeoutError, asyncssh.Error, OSError) as exc:
                raise DeviceError(f"{self.endpoint.where}: cannot check {remote}: {exc}") from exc

        return loop.run(_exists())

    def start_process(self, argv: Sequence[str]) -> "RemoteProcess":
        """Start ``argv`` on the device with binary stdin/stdout; it lives until closed."""
        loop, conn = self._require()
        line = command_line(argv)

        async def _start() -> asyncssh.SSHClientProcess:
            try:
                return await conn.create_process(line, encoding=None)
            except (asyncssh.Error, OSError) as exc:
                raise DeviceError(f"{self.endpoint.where}: cannot start {line}: {exc}") from exc

        process = loop.run(_start())
        return RemoteProcess(self, process, line)

    def submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this connection's event loop and return its result."""
        loop, _ = self._require()
        return loop.run(coro)


class RemoteProcess:
    """A long-lived remote command exchanging length-prefixed frames on stdin/stdout.

    A frame is a u32 big-endian length and that many bytes. Stderr is drained in the background
    (so the remote process never blocks on a full pipe) and the last 64 KiB are kept, to explain
    a crash."""

    def __init__(self, connection: SshConnection, process: asyncssh.SSHClientProcess, line: str) -> None:
        self.connection = connection
        self.command = line
        self._process = process
        self._stderr = bytearray()
        self._stderr_task = connection.submit(self._start_stderr_drain())

    async def _start_stderr_drain(self) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        try:
            while chunk := await self._process.stderr.read(4096):
                self._stderr += chunk
                if len(self._stderr) > STDERR_KEEP_BYTES:
                    del self._stderr[:-STDERR_KEEP_BYTES]
        except (asyncssh.Error, OSError):
            pass

    @property
    def stderr_text(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def read_frame(self, timeout: float) -> bytes:
        """The next frame's body; DeviceError if the process ends or nothing comes in time."""
        return self.connection.submit(self._guarded(self._read_frame(), timeout, "a reply"))

    def send(self, frame: bytes, timeout: float) -> None:
        """Send ``frame`` (already length-prefixed) without waiting for a reply."""
        self.connection.submit(self._guarded(self._send(frame), timeout, "a reply"))

    async def _send(self, frame: bytes) -> bytes:
        self._process.stdin.write(frame)
        await self._process.stdin.drain()
        return b""

    def exchange(self, frame: bytes, timeout: float) -> bytes:
        """Send ``frame`` (already length-prefixed) and return the body of the next frame."""
        return self.connection.submit(self._guarded(self._exchange(frame), timeout, "a reply"))

    async def _exchange(self, frame: bytes) -> bytes:
        self._process.stdin.write(frame)
        await self._process.stdin.drain()
        return await self._read_frame()

    def stream(self, frames: Iterable[bytes], in_flight: int, timeout: float) -> list[tuple[bytes, float]]:
        """Send ``frames`` (each already length-prefixed, taken from the iterable as they are
        sent) keeping ``in_flight`` of them ahead of their replies, and return every reply's body
        with its round trip (seconds from sending its frame), in order. The whole exchange is
        one hop to the event loop, not one per frame: each hop costs the host a thread wake-up
        and GIL hand-offs, which on a busy machine cost more CPU than the frames' own packets.
        ``timeout`` applies to each reply."""
        return self.connection.submit(self._stream(iter(frames), in_flight, timeout))

    async def _stream(self, frames: Iterator[bytes], in_flight: int, timeout: float) -> list[tuple[bytes, float]]:
        sent_at: deque[float] = deque()

        def send_next() -> None:
            frame = next(frames, None)
            if frame is None:
                return
            sent_at.append(time.perf_counter())
            try:  # unawaited: at most in_flight frames wait in the channel's buffer
                self._process.stdin.write(frame)
            except (BrokenPipeError, ConnectionError, asyncssh.Error):
                pass  # the channel has closed: the next read says how the command ended

        for _ in range(max(1, in_flight)):
            send_next()
        replies = []
        while sent_at:
            body = await self._guarded(self._read_frame(), timeout, "a reply")
            replies.append((body, time.perf_counter() - sent_at.popleft()))
            send_next()
        return replies

    async def _read_frame(self) -> bytes:
        header = await self._process.stdout.readexactly(4)
        (length,) = _FRAME_LENGTH.unpack(header)
        if length > MAX_FRAME_BYTES:
            raise DeviceError(f"{self.connection.endpoint.where}: {self.command} announced a "
                              f"{length}-byte frame: its output is not the expected protocol")
        return await self._process.stdout.readexactly(length)

    async def _guarded(self, coro: Coroutine[Any, Any, bytes], timeout: float, what: str) -> bytes:
        where = self.connection.endpoint.where
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, no task per call
                return await coro
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise DeviceError(f"{where}: no {what} from {self.command} within {timeout:g} s; its "
                              f"stderr so far:\n{self.stderr_text.strip() or '(empty)'}") from exc
        except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionError, asyncssh.Error) as exc:
            # Output ended or the channel closed under a write: the remote command has ended.
            ending = await self._describe_exit()
            raise DeviceError(f"{where}: {self.command} {ending} instead of sending {what}; its stderr:\n"
                              f"{self.stderr_text.strip() or '(empty)'}") from exc

    async def _describe_exit(self, wait: float = 5.0) -> str:
        """How the remote command ended: "exited (status N)" or "was killed (signal S)"."""
        try:
            await asyncio.wait_for(self._process.wait_closed(), wait)
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        except (asyncio.TimeoutError, asyncssh.Error, OSError):
            return "stopped answering (its channel is closed)"
        signal = self._process.exit_signal
        if signal is not None:
            return f"was killed (signal {signal[0]})"
        return f"exited (status {self._process.exit_status})"

    def close(self, frame: bytes | None = None, timeout: float = 5.0) -> int | None:
        """Send ``frame`` (a polite goodbye) if given, close stdin, and wait for the exit status;
        a process that does not exit in ``timeout`` s is killed (its channel closed)."""

        async def _close() -> int | None:
            try:
                if frame is not None:
                    self._process.stdin.write(frame)
                self._process.stdin.write_eof()
            except (asyncssh.Error, OSError, BrokenPipeError):
                pass
            try:
                await asyncio.wait_for(self._process.wait_closed(), timeout)
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
            except asyncio.TimeoutError:
                self._process.close()  # closes the channel: sshd hangs up the remote command
            return self._process.exit_status

        return self.connection.submit(_close())
