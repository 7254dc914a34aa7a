"""`pi-loopback`: a real OpenSSH server on 127.0.0.1, started and stopped by the harness.

The fast stand-in for a Raspberry Pi (the CI default): everything a real device goes through
(key login, host-key verification, SFTP, a long-lived remote runner) happens over real SSH, but
the "device" is this machine, so its figures are this machine's, never a Pi's.

Per instance, in a private temporary directory: a host key, a client key, ``authorized_keys``
with the client's public key, a ``known_hosts`` line for ``[127.0.0.1]:PORT``, and an
``sshd_config``. Then ``/usr/sbin/sshd -D -e -f ABSOLUTE_PATH`` (a relative ``-f`` makes every
connection fail with "kex_exchange_identification: Connection reset by peer": sshd re-executes
itself per connection) with ``UsePAM no`` (no PAM stack needed) and ``StrictModes no`` (the temp
directory's modes are not a home's). As root, sshd needs its privilege-separation directory
``/run/sshd``. The login user is the user running the harness.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.core.errors import DeviceError
from harness.transports.ssh import SshEndpoint
from harness.emulators import Launched, StderrLog, spawn

SSHD_BINARY = "/usr/sbin/sshd"
READY_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
PORT_ATTEMPTS = 3
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (sshd binds it a moment later; see PORT_ATTEMPTS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def generate_key(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` / ``path.pub`` (no passphrase); returns the public key line."""
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise DeviceError("ssh-keygen not found; install openssh-client (apt-get install openssh-server)") from exc
    except subprocess.CalledProcessError as exc:
        raise DeviceError(f"ssh-keygen failed for {path}: {exc.stderr.strip()}") from exc
    return path.with_name(path.name + ".pub").read_text().strip()


def sshd_config(*, port: int, host_key: Path, authorized_keys: Path, pid_file: Path, user: str) -> str:
    """The loopback sshd's configuration: keys only, one user, SFTP, no PAM."""
    return "\n".join([
        f"Port {port}",
        f"ListenAddress {HOST}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        "",
    ])


class LoopbackSshd(Launched):
    """A private sshd on 127.0.0.1 with keys made for it; a context manager that always stops it.

    ``endpoint`` is what a client needs: host, port, user, client key, known_hosts."""

    def __init__(self, *, device: str = "pi-loopback", sshd_binary: str = SSHD_BINARY,
                 ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.device = device
        self.sshd_binary = sshd_binary
        self.ready_timeout = ready_timeout
        self.user = getpass.getuser()
        self.directory: Path | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: StderrLog | None = None
        self._host_key_line = ""
        self._endpoint: SshEndpoint | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not os.path.isabs(self.sshd_binary) or not os.access(self.sshd_binary, os.X_OK):
            raise DeviceError(f"{self.device}: {self.sshd_binary} not found (sshd must be started by its "
                              "absolute path); install it with apt-get install openssh-server")
        self.directory = Path(tempfile.mkdtemp(prefix=f"hilbench-{self.device}-"))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation dir
        d = self.directory
        self._host_key_line = generate_key(d / "host_ed25519", f"hilbench {self.device} host key")
        client_pub = generate_key(d / "client_ed25519", f"hilbench {self.device} client key")
        (d / "authorized_keys").write_text(client_pub + "\n")
        (d / "workdir").mkdir()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            self._launch(port)
            if self._wait_ready():
                self.port = port
                break
            log = self.log_text()
            self._reap()
            if "Address already in use" not in log or attempt == PORT_ATTEMPTS:
                raise DeviceError(f"{self.device}: sshd did not start on {HOST}:{port}; its log:\n"
                                  f"{log.strip() or '(empty)'}")
        assert self.port is not None  # set by the loop above, which raises if no port worked
        key_type, key_data = self._host_key_line.split()[:2]
        (d / "known_hosts").write_text(f"[{HOST}]:{self.port} {key_type} {key_data}\n")
        self._endpoint = SshEndpoint(device=self.device, host=HOST, port=self.port, user=self.user,
                                     key=d / "client_ed25519", known_hosts=d / "known_hosts")

    def _launch(self, port: int) -> None:
        assert self.directory is not None
        d = self.directory
        config = d / "sshd_config"
        config.write_text(sshd_config(port=port, host_key=d / "host_ed25519", authorized_keys=d / "authorized_keys",
                                      pid_file=d / "sshd.pid", user=self.user))
        command = [self.sshd_binary, "-D", "-e", "-f", str(config.resolve())]
        self._process, self._log = spawn(command, name=f"sshd-log-{self.device}", start_new_session=True)

    def _wait_ready(self) -> bool:
        """True once the server sends its SSH banner; False if sshd exited or never did."""
        assert self._process is not None
        port = int(self._port_in_config())
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, port), timeout=1.0) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _port_in_config(self) -> str:
        assert self.directory is not None
        for line in (self.directory / "sshd_config").read_text().splitlines():
            if line.startswith("Port "):
                return line.split()[1]
        raise DeviceError(f"{self.device}: no Port in the generated sshd_config")

    def _reap(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            # sshd's per-connection children share its process group (sessions start their own)
            try:
                os.killpg(process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        if self._log is not None:
            self._log.join(STOP_TIMEOUT_SECONDS)
        if process.stderr is not None:
            process.stderr.close()
        self._process = None

    def stop(self) -> None:
        """Stop and reap sshd and remove its directory; safe to call more than once."""
        self._reap()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # -- state -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> SshEndpoint:
        if self._endpoint is None:
            raise DeviceError(f"{self.device}: sshd is not started")
        return self._endpoint

    @property
    def workdir(self) -> Path:
        """A directory for the device side's files, removed with the server."""
        if self.directory is None:
            raise DeviceError(f"{self.device}: sshd is not started")
        return self.directory / "workdir"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """sshd's log so far (it logs to stderr with -e)."""
        return self._log.text() if self._log is not None else ""


@contextmanager
def loopback_sshd(device: str = "pi-loopback") -> Iterator[LoopbackSshd]:
    """A started :class:`LoopbackSshd`; ``.endpoint`` has host, port, user, key and known_hosts."""
    with LoopbackSshd(device=device) as server:
        yield server
