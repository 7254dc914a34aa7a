"""`rpi4-qemu`: an arm64 Debian root filesystem under qemu-user, with its own sshd in a
network namespace. The faithful Raspberry Pi stand-in: real aarch64 python, numpy and
onnxruntime, real SSH to a separate network address.

The root filesystem is built once by ``scripts/build-arm64-rootfs.sh`` into a cache directory
outside the repository (:func:`rootfs_dir`). Each launch, as root:

* binfmt_misc runs arm64 binaries through ``qemu-aarch64-static`` (registered if needed);
* a network namespace with a veth pair: the host end gets ``10.213.N.1/30`` in this machine's
  namespace, the device end ``10.213.N.2/30`` inside the new one, so traffic stays between this
  machine's own namespaces;
* inside the namespace and a private mount namespace: ``/proc`` and ``/dev`` are mounted into
  the root filesystem and a Pi-like ``/proc/cpuinfo`` is bind-mounted over the real one
  (qemu-user shows the host's x86 cpuinfo, on which onnxruntime's CPU detection crashes), and
  ``/sys`` holds just the 4-CPU lists a Pi 4 has;
* the whole sshd is chrooted (sshd's own ChrootDirectory refuses a root filesystem whose
  parents are not root-owned and unwritable by others), started under ``env -i`` (host
  ``PIP_*`` and friends must not leak in) with ``QEMU_CPU=cortex-a72`` (a Pi 4's core; the
  default ``max`` makes onnxruntime pick slow SVE kernels); its config's ``SetEnv`` keeps
  ``QEMU_CPU`` in login sessions.

Figures from this device are emulation times: 100-300x a host's and operator-dependent. They
prove the aarch64 path works; they are never a Raspberry Pi's speed.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.emulators.sshd import generate_key
from harness.core.errors import DeviceError
from harness.core.paths import EMULATOR_ASSETS, REPO_ROOT, cache_root
from harness.transports.ssh import SshEndpoint
from harness.emulators import Launched, StderrLog, spawn

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-arm64-rootfs.sh"
PI_CPUINFO = EMULATOR_ASSETS / "rpi4-cpuinfo.txt"
READY_STAMP = ".hilbench-ready"
QEMU_CPU = "cortex-a72"
USER = "pi"
VENV_PYTHON = "/opt/hilbench/venv/bin/python"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
SUBNET_PREFIX = "10.213"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
EMULATION_LABEL = "emulated arm64 (qemu-user, QEMU_CPU=cortex-a72), not a Raspberry Pi's speed"
SYSTEM_PACKAGES = ("qemu-user-static", "binfmt-support", "debootstrap", "iproute2")

# Mounts what the chrooted sshd needs, in the private mount namespace it was started in (they
# disappear with its last process), then becomes sshd. Arguments: rootfs, cpuinfo, QEMU_CPU,
# sshd_config path inside the rootfs. /sys is a small tmpfs holding only a Pi 4's CPU lists
# (onnxruntime's cpuinfo library reads them; without them it gives up on CPU detection); no
# cpufreq files, so the runner honestly reports the governor as unknown.
_LAUNCH_SCRIPT = r"""
set -e
mount -t proc proc "$1/proc"
mount --bind "$2" "$1/proc/cpuinfo"
mount --rbind /dev "$1/dev"
mount -t tmpfs -o size=1m hilbench-sys "$1/sys"
mkdir -p "$1/sys/devices/system/cpu"
for f in possible present online; do echo 0-3 > "$1/sys/devices/system/cpu/$f"; done
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 QEMU_CPU="$3" chroot "$1" /usr/sbin/sshd -D -e -f "$4"
"""


def rootfs_dir() -> Path:
    """``$HILBENCH_ARM64_ROOTFS`` or ``<cache>/arm64-rootfs`` (the build script's default too)."""
    env = os.environ.get("HILBENCH_ARM64_ROOTFS")
    return Path(env).expanduser() if env else cache_root() / "arm64-rootfs"


def rootfs_ready(rootfs: Path | None = None) -> bool:
    return ((rootfs or rootfs_dir()) / READY_STAMP).is_file()


def build_rootfs(timeout_s: float = 3600.0) -> Path:
    """Run the build script (quick when the root filesystem is already built)."""
    env = dict(os.environ)
    env.setdefault("HILBENCH_ARM64_ROOTFS", str(rootfs_dir()))
    try:
        result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"{BUILD_SCRIPT} did not finish within {timeout_s:g} s") from exc
    if result.returncode != 0:
        raise DeviceError(f"{BUILD_SCRIPT} failed (exit status {result.returncode}):\n{result.stderr.strip()[-3000:]}")
    return rootfs_dir()


def ensure_binfmt() -> None:
    """Make the kernel run arm64 ELF files with qemu-aarch64-static."""
    entry = BINFMT_DIR / "qemu-aarch64"
    if entry.exists():
        lines = entry.read_text().splitlines()
        flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
        if "F" not in flags:  # the interpreter must be opened at registration to work in a chroot
            raise DeviceError("qemu-aarch64 is registered with binfmt_misc without the F (fix binary) flag, "
                              "so it cannot run inside the arm64 chroot; install qemu-user-static "
                              "(not qemu-user-binfmt)")
        if lines and lines[0] == "enabled":
            return
    if shutil.which("update-binfmts") is None or shutil.which("qemu-aarch64-static") is None:
        raise DeviceError("rpi4-qemu needs qemu-user-static and binfmt-support: "
                          f"apt-get install --no-install-recommends {' '.join(SYSTEM_PACKAGES)}")
    if not (BINFMT_DIR / "status").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc")
    _run(["update-binfmts", "--enable", "qemu-aarch64"], "enabling qemu-aarch64 in binfmt_misc")


def _run(argv: list[str], what: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise DeviceError(f"{what}: {argv[0]} not found; apt-get install {' '.join(SYSTEM_PACKAGES)}") from exc
    if result.returncode != 0:
        raise DeviceError(f"{what} failed: {' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _free_subnet() -> int:
    """N such that 10.213.N.0/30 is on no interface of this machine (nor of our other launches)."""
    used = _run(["ip", "-o", "-4", "addr", "show"], "listing addresses")
    start = os.getpid() % 250
    for i in range(250):
        n = (start + i) % 250 + 1
        if f" {SUBNET_PREFIX}.{n}." not in used:
            return n
    raise DeviceError(f"no free {SUBNET_PREFIX}.N.0/30 subnet for a network namespace")


class Arm64Device(Launched):
    """An arm64 sshd under qemu-user in its own network namespace; a context manager that
    always tears down the processes, namespace, mounts and files it made."""

    _launches = 0
    _launch_lock = threading.Lock()

    def __init__(self, *, device: str = "rpi4-qemu", rootfs: Path | None = None, qemu_cpu: str = QEMU_CPU,
                 ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.device = device
        self.rootfs = (rootfs or rootfs_dir()).resolve()
        self.qemu_cpu = qemu_cpu
        self.ready_timeout = ready_timeout
        self.netns: str | None = None
        self.host_ifname: str | None = None
        self.address: str | None = None
        self.directory: Path | None = None  # host temp dir: client key, known_hosts
        self._instance_dir: Path | None = None  # inside the rootfs: sshd_config, authorized_keys
        self._process: subprocess.Popen[bytes] | None = None
        self._log: StderrLog | None = None
        self._endpoint: SshEndpoint | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() != 0:
            raise DeviceError(f"{self.device}: needs root (network namespace, chroot, mounts)")
        if not rootfs_ready(self.rootfs):
            raise DeviceError(f"{self.device}: no arm64 root filesystem at {self.rootfs}; build it once "
                              f"with {BUILD_SCRIPT} (about 10 minutes)")
        ensure_binfmt()
        with Arm64Device._launch_lock:
            Arm64Device._launches += 1
            tag = f"{os.getpid() % 100000}x{Arm64Device._launches}"
            n = _free_subnet()
            self.netns = f"hilbench-{tag}"
            self.host_ifname = f"hb{tag}"[:15]
            self._make_network(n)
        self.address = f"{SUBNET_PREFIX}.{n}.2"
        self.directory = Path(tempfile.mkdtemp(prefix=f"hilbench-{self.device}-"))
        client_pub = generate_key(self.directory / "client_ed25519", f"hilbench {self.device} client key")
        self._instance_dir = self.rootfs / "run" / "hilbench" / self.netns
        self._instance_dir.mkdir(parents=True, exist_ok=True)
        (self.rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)
        (self._instance_dir / "authorized_keys").write_text(client_pub + "\n")
        inside = f"/run/hilbench/{self.netns}"
        (self._instance_dir / "sshd_config").write_text(self._sshd_config(inside))
        host_pub = (self.rootfs / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
        (self.directory / "known_hosts").write_text(f"{self.address} {host_pub[0]} {host_pub[1]}\n")
        self._launch(f"{inside}/sshd_config")
        self._wait_ready()
        self._endpoint = SshEndpoint(device=self.device, host=self.address, port=22, user=USER,
                                     key=self.directory / "client_ed25519",
                                     known_hosts=self.directory / "known_hosts", connect_timeout_s=60.0)

    def _make_network(self, n: int) -> None:
        ns, host_if, dev_if = self.netns, self.host_ifname, f"{self.host_ifname}d"[:15]
        assert ns is not None and host_if is not None
        _run(["ip", "netns", "add", ns], "creating a network namespace")
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", dev_if], "creating a veth pair")
        _run(["ip", "link", "set", dev_if, "netns", ns], "moving the veth end into the namespace")
        _run(["ip", "addr", "add", f"{SUBNET_PREFIX}.{n}.1/30", "dev", host_if], "addressing the host end")
        _run(["ip", "link", "set", host_if, "up"], "bringing the host end up")
        in_ns = ["ip", "netns", "exec", ns]
        _run([*in_ns, "ip", "addr", "add", f"{SUBNET_PREFIX}.{n}.2/30", "dev", dev_if], "addressing the device end")
        _run([*in_ns, "ip", "link", "set", dev_if, "up"], "bringing the device end up")
        _run([*in_ns, "ip", "link", "set", "lo", "up"], "bringing the namespace's loopback up")

    def _sshd_config(self, inside: str) -> str:
        return "\n".join([
            f"ListenAddress {self.address}",
            "Port 22",
            "HostKey /etc/ssh/ssh_host_ed25519_key",
            f"PidFile {inside}/sshd.pid",
            f"AuthorizedKeysFile {inside}/authorized_keys",
            f"AllowUsers {USER}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            f"SetEnv QEMU_CPU={self.qemu_cpu}",
            "LogLevel VERBOSE",
            "",
        ])

    def _launch(self, config_inside: str) -> None:
        assert self.netns is not None
        command = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                   "sh", "-c", _LAUNCH_SCRIPT, "sh", str(self.rootfs), str(PI_CPUINFO), self.qemu_cpu, config_inside]
        self._process, self._log = spawn(command, name=f"sshd-log-{self.device}",
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def _wait_ready(self) -> None:
        assert self._process is not None and self.address is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DeviceError(f"{self.device}: the arm64 sshd exited with status {self._process.returncode}; "
                                  f"its log:\n{self.log_text().strip() or '(empty)'}")
            try:
                with socket.create_connection((self.address, 22), timeout=2.0) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DeviceError(f"{self.device}: the arm64 sshd did not answer on {self.address}:22 within "
                          f"{self.ready_timeout:g} s; its log:\n{self.log_text().strip() or '(empty)'}")

    def stop(self) -> None:
        """Stop every process in the namespace, delete it and the files; safe to call twice."""
        if self.netns is not None:
            self._kill_namespace_processes(self.netns)
        if self._process is not None:
            try:
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._log is not None:
                self._log.join(STOP_TIMEOUT_SECONDS)
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self.netns is not None:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
            self.netns = None
        if self.host_ifname is not None:  # normally gone with the namespace's end of the pair
            subprocess.run(["ip", "link", "del", self.host_ifname], capture_output=True, timeout=30)
            self.host_ifname = None
        for path in (self._instance_dir, self.directory):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self._instance_dir = self.directory = None

    def _kill_namespace_processes(self, netns: str) -> None:
        """Every process in our namespace is one this launcher started (sshd, its sessions,
        runners): SIGTERM them by pid, then SIGKILL what is left."""
        for sig, wait in ((15, STOP_TIMEOUT_SECONDS), (9, 2.0)):
            pids = _namespace_pids(netns)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                if self._process is not None:
                    self._process.poll()  # reap our direct child
                pids = _namespace_pids(netns)
                time.sleep(0.05)
            if not pids:
                return

    # -- state -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> SshEndpoint:
        if self._endpoint is None:
            raise DeviceError(f"{self.device}: not started")
        return self._endpoint

    def log_text(self) -> str:
        return self._log.text() if self._log is not None else ""


@contextmanager
def arm64_device(device: str = "rpi4-qemu") -> Iterator[Arm64Device]:
    """A started :class:`Arm64Device`; ``.endpoint`` has address, user, key and known_hosts."""
    with Arm64Device(device=device) as emulator:
        yield emulator


def _namespace_pids(netns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30)
    return [int(p) for p in result.stdout.split() if p.isdigit()]
